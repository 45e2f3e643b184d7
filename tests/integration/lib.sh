# tests/integration/lib.sh: helpers for the script tests: a temp dir removed at exit, starting a
# server that writes a ready file, reading JSON fields with node, and assertions that print what
# failed. Sourced, not run.
set -euo pipefail

: "${FHIRSYNC_BIN:?FHIRSYNC_BIN must point at the fhirsync binary}"
: "${FHIRSYNC_SOURCE_DIR:?}"
TMP=$(mktemp -d "${FHIRSYNC_TEST_TMP:-/tmp}/fhirsync-test.XXXXXX" 2>/dev/null || mktemp -d)
PIDS=()
PASS=0
FAIL=0

cleanup() {
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

# start_pg NAME: a throwaway PostgreSQL cluster (scripts/pg-test-server.sh) in a fresh directory,
# stopped and removed at exit; its URL in PG_URL. Not under $TMP or $FHIRSYNC_TEST_TMP: those may
# be private (0700), and as root the cluster runs as the postgres user, who must reach it.
start_pg() {
    PG_SCRIPT="$FHIRSYNC_SOURCE_DIR/scripts/pg-test-server.sh"
    PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/fhirsync-pg-$1.XXXXXX")
    trap stop_pg EXIT
    PG_URL=$(cd / && "$PG_SCRIPT" start "$PG_DIR")
}
stop_pg() {
    "$PG_SCRIPT" stop "$PG_DIR" >/dev/null 2>&1 || true
    cleanup
}

ensure_npm_peers() {
    if [ ! -d "$FHIRSYNC_SOURCE_DIR/tests/interop/node_modules" ]; then
        (cd "$FHIRSYNC_SOURCE_DIR/tests/interop" && npm ci --no-audit --no-fund --loglevel=error)
    fi
    export NODE_PATH="$FHIRSYNC_SOURCE_DIR/tests/interop/node_modules"
}

# wait_for_file FILE [SECONDS]: bounded wait for a server's ready file
wait_for_file() {
    local file=$1 limit=${2:-30} i=0
    while [ ! -s "$file" ]; do
        i=$((i + 1))
        [ "$i" -le $((limit * 10)) ] || { echo "timed out waiting for $file"; return 1; }
        sleep 0.1
    done
}

# json_get FILE EXPR: print a field of a JSON file (EXPR is a JS expression on `j`)
json_get() {
    node -e "const j=JSON.parse(require('fs').readFileSync(process.argv[1],'utf8')); \
             const v=($2); console.log(typeof v==='string'?v:JSON.stringify(v))" "$1"
}

ok() { PASS=$((PASS + 1)); echo "ok   - $*"; }
not_ok() { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }

# expect_exit CODE DESCRIPTION -- command...: run, capture stdout/stderr into $OUT/$ERR
expect_exit() {
    local want=$1 what=$2
    shift 3
    set +e
    "$@" >"$TMP/out" 2>"$TMP/err"
    local got=$?
    set -e
    OUT=$(cat "$TMP/out")
    ERR=$(cat "$TMP/err")
    if [ "$got" -eq "$want" ]; then
        ok "$what (exit $got)"
    else
        not_ok "$what: exit $got, wanted $want"
        echo "  stdout: $(head -c 2000 "$TMP/out")"
        echo "  stderr: $(head -c 2000 "$TMP/err")"
    fi
}

# expect_match TEXT PATTERN DESCRIPTION (grep -E). The text goes in as a here-string, not through
# a pipe: with pipefail, `printf | grep -q` fails at random when grep exits before printf is done.
expect_match() {
    if grep -qE -- "$2" <<<"$1"; then ok "$3"; else
        not_ok "$3: no match for /$2/ in: $(printf '%s' "$1" | head -c 1500)"; fi
}
expect_no_match() {
    if grep -qE -- "$2" <<<"$1"; then
        not_ok "$3: unexpected /$2/ in: $(printf '%s' "$1" | head -c 1500)"; else ok "$3"; fi
}

# one_line TEXT DESCRIPTION: an error is a single line (plus optional hint lines starting "fhirsync:")
finish() {
    echo "$PASS passed, $FAIL failed"
    [ "$FAIL" -eq 0 ]
}

# clean_fhirsync_env: unset the caller's FHIRSYNC_* settings (not the harness's own), so that a
# developer's environment cannot change what a test sees
clean_fhirsync_env() {
    local v
    for v in $(env | grep -o '^FHIRSYNC_[A-Z_]*' |
        grep -vE '^FHIRSYNC_(BIN|SANDBOX_BIN|SOURCE_DIR|BUILD_DIR|TEST_TMP)$'); do
        unset "$v"
    done
}
