#!/usr/bin/env bash
# test_sandbox_https.sh: the sandbox over HTTPS (--tls-cert/--tls-key) with a throwaway
# self-signed certificate made at run time (never committed): the URLs in the ready file are
# https, curl --cacert verifies both listeners (127.0.0.1 and the storage origin "localhost"),
# and the token endpoint's aud is the https token URL.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

command -v openssl >/dev/null || { echo "SKIP: no openssl"; exit 0; }
(umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null) || fail "openssl req"

cat >"$TMP/clients.json" <<'EOF'
{"clients": [{"client_id": "tls-a", "token_endpoint_auth_method": "client_secret_basic",
              "client_secret": "secret-a", "scope": "system/*.read"}]}
EOF
start_sandbox --patients 3 --clients "$TMP/clients.json" --tls-cert "$TMP/cert.pem" \
    --tls-key "$TMP/key.pem"

BASE=$(jget .base_url <"$SANDBOX_DIR/ready.json")
TOKEN_URL=$(jget .token_url <"$SANDBOX_DIR/ready.json")
STORAGE=$(jget .storage_base_url <"$SANDBOX_DIR/ready.json")
PORT=$(jget .port <"$SANDBOX_DIR/ready.json")
case "$BASE" in https://127.0.0.1:*/fhir) ;; *) fail "base URL $BASE is not https";; esac
case "$STORAGE" in https://localhost:*/storage) ;; *) fail "storage URL $STORAGE is not https";; esac
grep -q "https://127.0.0.1:$PORT/fhir" "$SANDBOX_DIR/sandbox.out" || fail "stdout lacks the https base URL"
ok

C=(curl -sS --cacert "$TMP/cert.pem")
st=$("${C[@]}" -o "$TMP/body" -w '%{http_code}' "$BASE/.well-known/smart-configuration")
[ "$st" = 200 ] && [ "$(jget .token_endpoint <"$TMP/body")" = "$TOKEN_URL" ] || fail "discovery over https: $st"
rc=0; curl -sS -o /dev/null "$BASE/metadata" 2>/dev/null || rc=$?
[ "$rc" = 60 ] || fail "an unknown CA was not refused (curl rc $rc)"
rc=0; curl -sS -o /dev/null --max-time 5 "http://127.0.0.1:$PORT/fhir/metadata" 2>/dev/null || rc=$?
[ "$rc" != 0 ] || fail "plain http answered on the TLS port"
ok

TOKEN=$("${C[@]}" -u tls-a:secret-a --data grant_type=client_credentials "$TOKEN_URL" | jget .access_token)
[ ${#TOKEN} -ge 40 ] || fail "no token over https"
st=$("${C[@]}" -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$BASE/Patient?_count=2")
[ "$st" = 200 ] || fail "search over https: $st"
next=$(jget '=>d.link.find(l=>l.relation==="next").url' <"$TMP/body")
case "$next" in https://127.0.0.1:*) ;; *) fail "next link $next is not https";; esac
ok

# a bulk file through the storage origin (https://localhost) after a redirect
curl -sS -o /dev/null -X POST -H 'Content-Type: application/json' --cacert "$TMP/cert.pem" \
    --data '{"fault":"redirect","on":"download"}' "https://127.0.0.1:$PORT/admin/faults"
"${C[@]}" -o /dev/null -D "$TMP/headers" -H "Authorization: Bearer $TOKEN" -H 'Accept: application/fhir+json' \
    -H 'Prefer: respond-async' "$BASE/\$export?_type=Patient"
STATUS=$(tr -d '\r' <"$TMP/headers" | sed -n 's/^content-location: //Ip')
case "$STATUS" in https://127.0.0.1:*) ;; *) fail "Content-Location $STATUS is not https";; esac
for _ in $(seq 1 400); do
    st=$("${C[@]}" -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$STATUS")
    [ "$st" = 200 ] && break
    sleep 0.05
done
[ "$st" = 200 ] || fail "export over https did not finish"
FILE=$(jget '=>d.output[0].url' <"$TMP/body")
"${C[@]}" -L -o "$TMP/patients.ndjson" -H "Authorization: Bearer $TOKEN" "$FILE" || fail "download via storage"
[ "$(wc -l <"$TMP/patients.ndjson")" = 3 ] || fail "storage copy over https"
ok

stop_sandbox
finish
