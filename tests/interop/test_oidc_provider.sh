#!/usr/bin/env bash
# interop/test_oidc_provider.sh: `fhirsync token` against a real OAuth 2.0 server, the npm
# oidc-provider package, with clients registered for client_credentials + private_key_jwt using
# the JWKS that `fhirsync keygen` printed. Positive cases for RS384, ES384 and PS384 keys; negative
# cases (unknown kid, expired assertion, wrong aud, wrong algorithm) must fail with exit code 5 and
# quote the server. A debug-logged flow must not leak any secret into the log.
source "$(dirname "$0")/../integration/lib.sh"
ensure_npm_peers
F=$FHIRSYNC_BIN
cd "$TMP"

"$F" keygen --alg RS384 --out keys-rs --name rs >/dev/null
"$F" keygen --alg ES384 --out keys-ec --name ec >/dev/null
"$F" keygen --alg PS384 --out keys-ps --name ps >/dev/null

start_provider() { # READY_FILE [extra args]
    local ready=$1
    shift
    node "$FHIRSYNC_SOURCE_DIR/tests/interop/oidc_provider.mjs" --ready "$ready" \
        --client rs-client:RS384:keys-rs/jwks.json --client ec-client:ES384:keys-ec/jwks.json \
        --client ps-client:PS384:keys-ps/jwks.json "$@" 2>"$ready.log" &
    PIDS+=($!)
    wait_for_file "$ready"
}
start_provider ready.json
start_provider ready-future.json --clock-offset 3600
TOKEN_URL=$(json_get ready.json j.token_url)
FUTURE_TOKEN_URL=$(json_get ready-future.json j.token_url)
common=(--base-url http://127.0.0.1:9/fhir --token-url "$TOKEN_URL" --scope system/Patient.read)

# --- accepted -----------------------------------------------------------------------------------
for c in rs:RS384 ec:ES384 ps:PS384; do
    name=${c%%:*}
    expect_exit 0 "token with a $name key (${c#*:})" -- \
        "$F" token "${common[@]}" --client-id "$name-client" --key "keys-$name/$name.key.pem" \
        --alg "${c#*:}"
    expect_match "$OUT" "granted scope: +system/Patient.read" "granted scope shown ($name)"
    expect_no_match "$OUT" "eyJ" "no token printed without --print-token ($name)"
done
expect_exit 0 "token --json --print-token" -- "$F" token "${common[@]}" --client-id rs-client \
    --key keys-rs/rs.key.pem --json --print-token
expect_match "$OUT" '"access_token":"[A-Za-z0-9_-]+' "--print-token prints the token"

# --- refused: each a clear one-line error quoting the server, exit 5 ------------------------------
expect_exit 5 "unknown kid" -- "$F" token "${common[@]}" --client-id rs-client \
    --key keys-rs/rs.key.pem --kid not-a-registered-kid
expect_match "$ERR" "invalid_client" "unknown kid: the server's error is quoted"
expect_exit 5 "expired assertion (server clock an hour ahead)" -- "$F" token --base-url \
    http://127.0.0.1:9/fhir --token-url "$FUTURE_TOKEN_URL" --client-id rs-client \
    --key keys-rs/rs.key.pem
expect_match "$ERR" "invalid_client" "expired assertion: the server's error is quoted"
expect_exit 5 "wrong aud (token URL differs from the endpoint the server knows)" -- "$F" token \
    --base-url http://127.0.0.1:9/fhir --token-url "$TOKEN_URL?wrong-audience" \
    --client-id rs-client --key keys-rs/rs.key.pem
expect_match "$ERR" "HTTP 401 .*invalid_client" "wrong aud: status and error quoted"
expect_exit 5 "wrong algorithm (RS256 for a client registered with RS384)" -- "$F" token \
    "${common[@]}" --client-id rs-client --key keys-rs/rs.key.pem --alg RS256
expect_match "$ERR" "invalid_client" "wrong algorithm: the server's error is quoted"
expect_exit 5 "unknown client_id" -- "$F" token "${common[@]}" --client-id nobody \
    --key keys-rs/rs.key.pem
for e in "$ERR"; do
    lines=$(printf '%s\n' "$e" | grep -vc "^fhirsync: run 'fhirsync doctor'" || true)
    [ "$lines" -eq 1 ] && ok "the error is one line" || not_ok "error has $lines lines: $e"
done

# --- no secret in a debug log ------------------------------------------------------------------
expect_exit 0 "debug-logged token flow" -- "$F" token "${common[@]}" --client-id rs-client \
    --key keys-rs/rs.key.pem -vv --print-token
token=$(printf '%s\n' "$OUT" | tail -n 1)
[ ${#token} -ge 20 ] && ok "token captured for the leak check" || not_ok "no token captured"
expect_match "$ERR" "http > POST" "the debug log shows the request line"
expect_no_match "$ERR" "$token" "the access token is not in the log"
expect_no_match "$ERR" "eyJ[A-Za-z0-9_-]{10,}" "no JWT (assertion) in the log"
expect_no_match "$ERR" "client_assertion=[^*&]" "the client_assertion value is masked"
key_line=$(sed -n 2p keys-rs/rs.key.pem)
expect_no_match "$ERR" "${key_line:0:40}" "no key material in the log"
expect_no_match "$ERR" "PRIVATE KEY" "no PEM in the log"
finish
