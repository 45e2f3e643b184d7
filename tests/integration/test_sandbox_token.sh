#!/usr/bin/env bash
# test_sandbox_token.sh: the sandbox's token endpoint against assertions signed by npm jose
# (sandbox_token_cases.mjs: one accepted and one rejected case per check), then the same
# server in --rs384-only mode refusing ES384.
set -euo pipefail

: "${FHIRSYNC_SANDBOX_BIN:?FHIRSYNC_SANDBOX_BIN must point at fhirsync-sandbox}"
SRC="${FHIRSYNC_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
export FHIRSYNC_SOURCE_DIR="$SRC"
TMP_ROOT="${FHIRSYNC_TEST_TMP:-${TMPDIR:-/tmp}}"
mkdir -p "$TMP_ROOT"
WORK=$(mktemp -d "$TMP_ROOT/sandbox-token.XXXXXX")
SB_PID=""

fail() { echo "FAIL: $*" >&2; [ -f "$WORK/sandbox.err" ] && tail -20 "$WORK/sandbox.err" >&2; exit 1; }
cleanup() {
    if [ -n "$SB_PID" ]; then kill -TERM "$SB_PID" 2>/dev/null || true; wait "$SB_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ ! -d "$SRC/tests/interop/node_modules/jose" ]; then
    (cd "$SRC/tests/interop" && npm ci --no-audit --no-fund >/dev/null)
fi

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

stop_sandbox() {
    kill -TERM "$SB_PID"
    local rc=0
    wait "$SB_PID" || rc=$?
    SB_PID=""
    [ "$rc" -eq 0 ] || fail "the sandbox exited with $rc on SIGTERM"
    [ ! -e "$WORK/ready.json" ] || fail "the ready file was left behind"
}

start_sandbox --patients 5
node "$SRC/tests/integration/sandbox_token_cases.mjs" "$WORK/ready.json" normal || fail "token cases"
stop_sandbox

start_sandbox --patients 5 --rs384-only
node "$SRC/tests/integration/sandbox_token_cases.mjs" "$WORK/ready.json" rs384only || fail "rs384-only cases"
stop_sandbox
echo "PASS test_sandbox_token"
