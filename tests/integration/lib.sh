# tests/integration/lib.sh: the one harness of the script tests (integration and interop),
# sourced first by each of them. It gives a temp dir ($TMP, removed at exit with every process in
# PIDS stopped), checks that record and go on (ok, not_ok/fail, expect_*; `finish` prints the
# summary and sets the exit status; a script that ends with failures recorded exits 1 even
# without `finish`), `die` for a set-up failure after which nothing can be checked, the sandbox
# (start_sandbox/stop_sandbox), a PostgreSQL cluster (start_pg), bounded waits and JSON readers.
# Sourced, not run.
set -euo pipefail

: "${FHIRSYNC_BIN:?FHIRSYNC_BIN must point at the fhirsync binary}"
: "${FHIRSYNC_SOURCE_DIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
export FHIRSYNC_SOURCE_DIR
mkdir -p "${FHIRSYNC_TEST_TMP:-/tmp}"
TMP=$(mktemp -d "${FHIRSYNC_TEST_TMP:-/tmp}/fhirsync-$(basename "$0" .sh).XXXXXX")
PIDS=()
AT_EXIT=() # commands run at exit, before the processes are stopped and $TMP removed
PASS=0
FAIL=0
: >"$TMP/.failures"

# ok [DESCRIPTION]: a check passed (printed when described)
ok() {
    PASS=$((PASS + 1))
    [ $# -eq 0 ] || echo "ok   - $*"
}
# not_ok DESCRIPTION (or fail DESCRIPTION): a check failed; recorded, and the script goes on.
# Recorded in a file too, so a failure inside $(...) or a pipeline counts (and goes to stderr
# there, not into the captured output). The first failure also shows the tail of the running
# sandbox's stderr.
not_ok() {
    FAIL=$((FAIL + 1))
    echo "$*" >>"$TMP/.failures"
    if [ "$BASH_SUBSHELL" -gt 0 ]; then
        echo "FAIL - $*" >&2
        return 0
    fi
    echo "FAIL - $*"
    if [ "$FAIL" -eq 1 ] && [ -n "${SANDBOX_DIR:-}" ] && [ -s "$SANDBOX_DIR/sandbox.err" ]; then
        echo "  sandbox stderr (last lines):"
        tail -n 15 "$SANDBOX_DIR/sandbox.err" | sed 's/^/    /'
    fi
}
fail() { not_ok "$@"; }
# die DESCRIPTION: set-up failed and nothing after it can be checked: record, summarise, exit 1
die() {
    not_ok "$* (cannot go on)"
    finish || true
    exit 1
}
# finish: the summary; its status is the script's result (call it last)
finish() {
    FAIL=$(wc -l <"$TMP/.failures")
    echo "$PASS passed, $FAIL failed"
    [ "$FAIL" -eq 0 ]
}

on_exit() {
    local rc=$? cmd pid
    FAIL=$(wc -l <"$TMP/.failures" 2>/dev/null || echo "$FAIL")
    for cmd in "${AT_EXIT[@]:-}"; do
        [ -z "$cmd" ] || eval "$cmd" || true
    done
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
    # failures recorded but the script ended with 0 (no finish, or exit 0 after them): fail it
    if [ "$rc" -eq 0 ] && [ "$FAIL" -gt 0 ]; then
        echo "$PASS passed, $FAIL failed"
        rc=1
    fi
    exit "$rc"
}
trap on_exit EXIT
# a command that stops the script under set -e says where (not under a script's own set +e)
trap '_lib_rc=$?; [[ $- != *e* ]] || echo "FAIL - line $LINENO: a command failed (exit $_lib_rc)" >&2' ERR

# start_pg NAME: a throwaway PostgreSQL cluster (scripts/pg-test-server.sh) in a fresh directory,
# stopped and removed at exit; its URL in PG_URL. Not under $TMP or $FHIRSYNC_TEST_TMP: those may
# be private (0700), and as root the cluster runs as the postgres user, who must reach it.
start_pg() {
    PG_SCRIPT="$FHIRSYNC_SOURCE_DIR/scripts/pg-test-server.sh"
    PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/fhirsync-pg-$1.XXXXXX")
    AT_EXIT+=(stop_pg)
    PG_URL=$(cd / && "$PG_SCRIPT" start "$PG_DIR")
}
stop_pg() {
    "$PG_SCRIPT" stop "$PG_DIR" >/dev/null 2>&1 || true
}

ensure_npm_peers() {
    if [ ! -d "$FHIRSYNC_SOURCE_DIR/tests/interop/node_modules" ]; then
        (cd "$FHIRSYNC_SOURCE_DIR/tests/interop" && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
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

# jget EXPR: print a field of the JSON read from stdin: an accessor (".a.b", "[0].id") or, after
# "=>", a JS expression on `d` ("=>d.entry.length"); strings bare, other values as JSON
jget() {
    node -e '
        let s = ""; process.stdin.on("data", (d) => s += d).on("end", () => {
            const e = process.argv[1];
            const f = e.startsWith("=>") ? eval("(d) " + e) : eval("(d) => d" + e);
            const v = f(JSON.parse(s));
            console.log(typeof v === "object" ? JSON.stringify(v) : String(v));
        });' "$1"
}
# json_get FILE EXPR: the same of a file, EXPR a JS expression on `j` ("j.base_url")
json_get() {
    jget "=>{ const j = d; return ($2); }" <"$1"
}

# start_sandbox [--profile NAME] [SANDBOX OPTIONS...]: start fhirsync-sandbox with the options,
# in SANDBOX_DIR ($TMP/NAME, or $TMP/sandbox) with its ready file, stdout and stderr there
# (ready.json, sandbox.out, sandbox.err); a bounded wait for the ready file; `die` when it exits
# or does not become ready. Sets SANDBOX_PID, SANDBOX_DIR, BASE_URL, TOKEN_URL, ADMIN_URL and
# REGISTER_URL. With --profile NAME it also registers client "sync-test" with an RS384 key
# ($TMP/keys/sync.key.pem, made once; scope $SANDBOX_SCOPE, default system/*.read) and writes
# $SANDBOX_DIR/fhirsync.ini with [endpoint NAME] for it, exported as FHIRSYNC_CONFIG.
start_sandbox() {
    : "${FHIRSYNC_SANDBOX_BIN:?FHIRSYNC_SANDBOX_BIN must point at fhirsync-sandbox}"
    local profile=""
    if [ "${1:-}" = --profile ]; then
        profile=$2
        shift 2
    fi
    SANDBOX_DIR=$TMP/${profile:-sandbox}
    mkdir -p "$SANDBOX_DIR"
    rm -f "$SANDBOX_DIR/ready.json"
    "$FHIRSYNC_SANDBOX_BIN" --ready-file "$SANDBOX_DIR/ready.json" "$@" \
        >"$SANDBOX_DIR/sandbox.out" 2>"$SANDBOX_DIR/sandbox.err" &
    SANDBOX_PID=$!
    PIDS+=("$SANDBOX_PID")
    local i
    for i in $(seq 1 300); do
        [ -s "$SANDBOX_DIR/ready.json" ] && break
        kill -0 "$SANDBOX_PID" 2>/dev/null || die "the sandbox exited during start-up"
        [ "$i" -lt 300 ] || die "the sandbox did not become ready in 30 s"
        sleep 0.1
    done
    BASE_URL=$(json_get "$SANDBOX_DIR/ready.json" j.base_url)
    TOKEN_URL=$(json_get "$SANDBOX_DIR/ready.json" j.token_url)
    ADMIN_URL=$(json_get "$SANDBOX_DIR/ready.json" j.admin_url)
    REGISTER_URL=$(json_get "$SANDBOX_DIR/ready.json" j.register_url)
    [ -n "$profile" ] || return 0
    [ -f "$TMP/keys/sync.key.pem" ] ||
        "$FHIRSYNC_BIN" keygen --alg RS384 --out "$TMP/keys" --name sync >/dev/null
    printf '{"client_id":"sync-test","scope":"%s","jwks":%s}' "${SANDBOX_SCOPE:-system/*.read}" \
        "$(cat "$TMP/keys/jwks.json")" |
        curl -sS --fail-with-body -X POST -H 'Content-Type: application/json' --data-binary @- \
            "$REGISTER_URL" >/dev/null || die "registering the client with the sandbox"
    cat >"$SANDBOX_DIR/fhirsync.ini" <<INI
[endpoint $profile]
base_url  = $BASE_URL
client_id = sync-test
key_file  = $TMP/keys/sync.key.pem
alg       = RS384
INI
    [ -z "${SANDBOX_SCOPE:-}" ] || echo "scope     = $SANDBOX_SCOPE" >>"$SANDBOX_DIR/fhirsync.ini"
    export FHIRSYNC_CONFIG=$SANDBOX_DIR/fhirsync.ini
}

# stop_sandbox: SIGTERM to the sandbox started last, which must end it with status 0 and remove
# its ready file (a failed check otherwise)
stop_sandbox() {
    local rc=0
    kill -TERM "$SANDBOX_PID" 2>/dev/null || true
    wait "$SANDBOX_PID" 2>/dev/null || rc=$?
    if [ "$rc" -eq 0 ] && [ ! -e "$SANDBOX_DIR/ready.json" ]; then
        ok
    else
        not_ok "the sandbox exited with $rc on SIGTERM$([ ! -e "$SANDBOX_DIR/ready.json" ] ||
            echo ', leaving its ready file')"
    fi
}

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


# clean_fhirsync_env: unset the caller's FHIRSYNC_* settings (not the harness's own), so that a
# developer's environment cannot change what a test sees
clean_fhirsync_env() {
    local v
    for v in $(env | grep -o '^FHIRSYNC_[A-Z_]*' |
        grep -vE '^FHIRSYNC_(BIN|SANDBOX_BIN|SOURCE_DIR|BUILD_DIR|TEST_TMP)$'); do
        unset "$v"
    done
}
