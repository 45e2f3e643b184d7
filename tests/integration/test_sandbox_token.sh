#!/usr/bin/env bash
# test_sandbox_token.sh: the sandbox's token endpoint against assertions signed by npm jose
# (sandbox_token_cases.mjs: one accepted and one rejected case per check), then the same
# server in --rs384-only mode refusing ES384.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

if [ ! -d "$FHIRSYNC_SOURCE_DIR/tests/interop/node_modules/jose" ]; then
    (cd "$FHIRSYNC_SOURCE_DIR/tests/interop" && npm ci --no-audit --no-fund >/dev/null)
fi

start_sandbox --patients 5
node "$FHIRSYNC_SOURCE_DIR/tests/integration/sandbox_token_cases.mjs" "$SANDBOX_DIR/ready.json" normal || fail "token cases"
stop_sandbox

start_sandbox --patients 5 --rs384-only
node "$FHIRSYNC_SOURCE_DIR/tests/integration/sandbox_token_cases.mjs" "$SANDBOX_DIR/ready.json" rs384only || fail "rs384-only cases"
stop_sandbox
finish
