#!/usr/bin/env bash
# test_sandbox_token.sh: the sandbox's token endpoint against assertions signed by npm jose
# (sandbox_token_cases.mjs: one accepted and one rejected case per check), then the same
# server in --rs384-only mode refusing ES384.
set -euo pipefail

source "$(dirname "$0")/sandbox_lib.sh" token

if [ ! -d "$SRC/tests/interop/node_modules/jose" ]; then
    (cd "$SRC/tests/interop" && npm ci --no-audit --no-fund >/dev/null)
fi

start_sandbox --patients 5
node "$SRC/tests/integration/sandbox_token_cases.mjs" "$WORK/ready.json" normal || fail "token cases"
stop_sandbox

start_sandbox --patients 5 --rs384-only
node "$SRC/tests/integration/sandbox_token_cases.mjs" "$WORK/ready.json" rs384only || fail "rs384-only cases"
stop_sandbox
echo "PASS test_sandbox_token"
