# tests/integration/sandbox_lib.sh: the start-up that the test_sandbox_*.sh scripts share,
# sourced with the script's short name (`source "$(dirname "$0")/sandbox_lib.sh" rest`). It sets
# SRC (exported as FHIRSYNC_SOURCE_DIR), WORK (a fresh folder, removed at exit with the sandbox
# stopped), SB_PID and CHECKS, and defines fail, ok, jget, start_sandbox and stop_sandbox.
# Sourced, not run.

: "${FHIRSYNC_SANDBOX_BIN:?FHIRSYNC_SANDBOX_BIN must point at fhirsync-sandbox}"
SRC="${FHIRSYNC_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
export FHIRSYNC_SOURCE_DIR="$SRC"
TMP_ROOT="${FHIRSYNC_TEST_TMP:-${TMPDIR:-/tmp}}"
mkdir -p "$TMP_ROOT"
WORK=$(mktemp -d "$TMP_ROOT/sandbox-${1:-test}.XXXXXX")
SB_PID=""
CHECKS=0

fail() { echo "FAIL: $*" >&2; [ -f "$WORK/sandbox.err" ] && tail -20 "$WORK/sandbox.err" >&2; exit 1; }
ok() { CHECKS=$((CHECKS + 1)); }
cleanup() {
    if [ -n "$SB_PID" ]; then kill -TERM "$SB_PID" 2>/dev/null || true; wait "$SB_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# jget EXPR: evaluate a JavaScript accessor on the JSON read from stdin (".a.b", "=>d.x.length")
jget() {
    node -e '
        let s = ""; process.stdin.on("data", (d) => s += d).on("end", () => {
            const e = process.argv[1];
            const f = e.startsWith("=>") ? eval("(d) " + e) : eval("(d) => d" + e);
            const v = f(JSON.parse(s));
            console.log(typeof v === "object" ? JSON.stringify(v) : String(v));
        });' "$1"
}

# start_sandbox ARGS...: start fhirsync-sandbox with ARGS, wait for $WORK/ready.json
start_sandbox() {
    rm -f "$WORK/ready.json"
    "$FHIRSYNC_SANDBOX_BIN" --ready-file "$WORK/ready.json" "$@" >"$WORK/sandbox.out" 2>"$WORK/sandbox.err" &
    SB_PID=$!
    for _ in $(seq 1 200); do
        [ -s "$WORK/ready.json" ] && return 0
        kill -0 "$SB_PID" 2>/dev/null || fail "the sandbox exited during start-up"
        sleep 0.05
    done
    fail "the sandbox did not become ready"
}

# stop_sandbox: SIGTERM, which must end it with 0 and remove its ready file
stop_sandbox() {
    kill -TERM "$SB_PID"
    local rc=0
    wait "$SB_PID" || rc=$?
    SB_PID=""
    [ "$rc" -eq 0 ] || fail "the sandbox exited with $rc on SIGTERM"
    [ ! -e "$WORK/ready.json" ] || fail "the ready file was left behind"
}
