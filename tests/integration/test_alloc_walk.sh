#!/usr/bin/env bash
# integration/test_alloc_walk.sh: the allocation-failure walk over a whole token flow (discovery
# skipped via token_url; assertion, request, response, cache) against a real OAuth server (npm
# oidc-provider), one injected failure per run: every failure must end in a clean error.
source "$(dirname "$0")/lib.sh"
ensure_npm_peers
cd "$TMP"
"$FHIRSYNC_BIN" keygen --alg ES384 --out keys --name walk >/dev/null
node "$FHIRSYNC_SOURCE_DIR/tests/interop/oidc_provider.mjs" --ready ready.json \
    --client walk-client:ES384:keys/jwks.json 2>provider.log &
PIDS+=($!)
wait_for_file ready.json
export FHIRSYNC_WALK_TOKEN_URL=$(json_get ready.json j.token_url)
export FHIRSYNC_WALK_BASE_URL=http://127.0.0.1:9/fhir
export FHIRSYNC_WALK_CLIENT_ID=walk-client
export FHIRSYNC_WALK_KEY=$TMP/keys/walk.key.pem
if "$FHIRSYNC_BUILD_DIR/tests/test_alloc_walk"; then ok "token-flow allocation walk"; else
    not_ok "token-flow allocation walk"; fi
finish
