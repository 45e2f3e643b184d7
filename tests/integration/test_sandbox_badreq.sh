#!/usr/bin/env bash
# test_sandbox_badreq.sh: bad requests never crash the sandbox: malformed JSON bodies
# (registration, POST $export, admin), bodies over 1 MiB (413 OperationOutcome, with and without
# Content-Length), oversized headers, malformed encodings, path traversal in bulk file names
# (plain, %2F, %2e%2e, on both listeners), wrong methods, malformed Range and credentials, raw
# socket abuse (sandbox_raw_requests.mjs). Each gets a 4xx; the sandbox answers afterwards and
# stops cleanly (under ASan: without leaks).
set -euo pipefail

source "$(dirname "$0")/lib.sh"

# usage errors exit 2 without starting
rc=0; "$FHIRSYNC_SANDBOX_BIN" --port nope >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "--port nope exited $rc"
rc=0; "$FHIRSYNC_SANDBOX_BIN" --fault '{"fault":"nope"}' >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "--fault with an unknown fault exited $rc"
rc=0; "$FHIRSYNC_SANDBOX_BIN" --tls-cert /nonexistent >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "--tls-cert without --tls-key exited $rc"
"$FHIRSYNC_SANDBOX_BIN" --help | grep -c -- '--resources-per-file' >/dev/null || fail "--help"
ok

cat >"$TMP/clients.json" <<'EOF'
{"clients": [{"client_id": "bad-a", "token_endpoint_auth_method": "client_secret_basic",
              "client_secret": "secret-a", "scope": "system/*.read"}]}
EOF
start_sandbox --patients 3 --clients "$TMP/clients.json"
BASE=$(jget .base_url <"$SANDBOX_DIR/ready.json")
TOKEN_URL=$(jget .token_url <"$SANDBOX_DIR/ready.json")
ADMIN=$(jget .admin_url <"$SANDBOX_DIR/ready.json")
STORAGE=$(jget .storage_base_url <"$SANDBOX_DIR/ready.json")
REGISTER=$(jget .register_url <"$SANDBOX_DIR/ready.json")
TOKEN=$(curl -sS -u bad-a:secret-a --data grant_type=client_credentials "$TOKEN_URL" | jget .access_token)

req() { curl -sS -o "$TMP/body" -w '%{http_code}' "$@"; }
expect_outcome() { # status want
    [ "$1" = "$2" ] || fail "status $1, want $2: $(head -c 300 "$TMP/body")"
    [ "$(jget .resourceType <"$TMP/body")" = OperationOutcome ] || fail "not an OperationOutcome: $(head -c 300 "$TMP/body")"
}
expect_oauth() { # status want error
    [ "$1" = "$2" ] && [ "$(jget .error <"$TMP/body")" = "$3" ] || fail "status $1, want $2 $3: $(head -c 300 "$TMP/body")"
}

# ---- malformed JSON bodies
st=$(req -H 'Content-Type: application/json' --data '{"jwks": {' "$REGISTER"); expect_oauth "$st" 400 invalid_client_metadata
st=$(req -H 'Content-Type: application/json' --data '[1,2]' "$REGISTER"); expect_oauth "$st" 400 invalid_client_metadata
st=$(req -H 'Content-Type: application/json' --data '<html>' "$REGISTER"); expect_oauth "$st" 400 invalid_client_metadata
st=$(req -H 'Content-Type: text/plain' --data '{}' "$REGISTER"); expect_oauth "$st" 400 invalid_client_metadata
st=$(req -H 'Content-Type: application/json' --data '{"jwks":{"keys":[{"kty":"RSA","kid":"k","n":"AQAB","e":"AQAB"}]}}' "$REGISTER")
expect_oauth "$st" 400 invalid_client_metadata
st=$(req -H 'Content-Type: application/json' --data '{"jwks":{"keys":[{"kty":"EC","kid":"k","crv":"P-384","x":"AA","y":"AA","d":"AA"}]}}' "$REGISTER")
expect_oauth "$st" 400 invalid_client_metadata
st=$(req -H 'Content-Type: application/json' --data '{"client_secret":"x","scope":"patient/*.read"}' "$REGISTER")
expect_oauth "$st" 400 invalid_client_metadata
for body in '{bad' '{"resourceType":"Patient"}' '{"resourceType":"Parameters","parameter":{}}' \
            '{"resourceType":"Parameters","parameter":[{"valueString":"x"}]}' \
            '{"resourceType":"Parameters","parameter":[{"name":"_type"}]}'; do
    st=$(req -X POST -H "Authorization: Bearer $TOKEN" -H 'Accept: application/fhir+json' \
        -H 'Prefer: respond-async' -H 'Content-Type: application/fhir+json' --data "$body" "$BASE/\$export")
    expect_outcome "$st" 400
done
st=$(req -X POST -H 'Content-Type: application/json' --data '{' "$ADMIN/faults"); expect_outcome "$st" 400
st=$(req -X POST -H 'Content-Type: application/json' --data '[' "$ADMIN/mutate"); expect_outcome "$st" 400
st=$(req -X POST -H 'Content-Type: application/json' --data '{"update":7}' "$ADMIN/mutate"); expect_outcome "$st" 400
ok

# ---- token endpoint bodies
st=$(req -H 'Content-Type: application/x-www-form-urlencoded' --data 'grant_type=%zz' "$TOKEN_URL")
expect_oauth "$st" 400 invalid_request
st=$(req -u bad-a:secret-a --data 'grant_type=client_credentials&grant_type=client_credentials' "$TOKEN_URL")
expect_oauth "$st" 400 invalid_request
st=$(req -H 'Authorization: Basic !!!' --data 'grant_type=client_credentials' "$TOKEN_URL")
expect_oauth "$st" 401 invalid_client
st=$(req -H 'Authorization: Bearer x' --data 'grant_type=client_credentials' "$TOKEN_URL")
expect_oauth "$st" 401 invalid_client
st=$(req --data 'grant_type=client_credentials' "$TOKEN_URL"); expect_oauth "$st" 401 invalid_client
st=$(req -X GET "$TOKEN_URL"); expect_outcome "$st" 405
ok

# ---- sizes: bodies over 1 MiB (with and without Content-Length), oversized headers
head -c 2000000 /dev/zero | tr '\0' x >"$TMP/big"
st=$(req -H 'Content-Type: application/json' --data-binary @"$TMP/big" "$REGISTER"); expect_outcome "$st" 413
st=$(req -H 'Content-Type: application/json' -H 'Transfer-Encoding: chunked' --data-binary @"$TMP/big" "$REGISTER")
expect_outcome "$st" 413
st=$(req -H 'Content-Type: application/x-www-form-urlencoded' --data-binary @"$TMP/big" "$TOKEN_URL")
expect_outcome "$st" 413
st=$(req -H "X-Padding: $(head -c 100000 /dev/zero | tr '\0' a)" "$BASE/metadata")
[ "$st" -ge 400 ] && [ "$st" -lt 500 ] || fail "oversized header: $st"
ok

# ---- an export to aim path traversal at
curl -sS -o /dev/null -D "$TMP/headers" -H "Authorization: Bearer $TOKEN" -H 'Accept: application/fhir+json' \
    -H 'Prefer: respond-async' "$BASE/\$export?_type=Patient"
STATUS=$(tr -d '\r' <"$TMP/headers" | sed -n 's/^content-location: //Ip')
for _ in $(seq 1 400); do
    st=$(req -H "Authorization: Bearer $TOKEN" "$STATUS"); [ "$st" = 200 ] && break; sleep 0.05
done
[ "$st" = 200 ] || fail "export did not finish"
FILE=$(jget '=>d.output[0].url' <"$TMP/body")
JOB=$(basename "$(dirname "$FILE")")
auth=(-H "Authorization: Bearer $TOKEN")
for path in "$JOB/..%2F..%2F..%2Fetc%2Fpasswd" "$JOB/%2e%2e%2f%2e%2e%2fetc%2fpasswd" "$JOB/%2e%2e" \
            "$JOB/Patient.1.ndjson%00" "..%2F$JOB/Patient.1.ndjson" "$JOB/.%2FPatient.1.ndjson" \
            "$JOB/Patient.1.ndjson%2F..%2FPatient.1.ndjson"; do
    st=$(req "${auth[@]}" "$BASE/bulkfiles/$path")
    [ "$st" = 404 ] || [ "$st" = 400 ] || fail "traversal $path: $st"
    [ "$(jget .resourceType <"$TMP/body")" = OperationOutcome ] || fail "traversal $path: not an OperationOutcome"
    st=$(req "$STORAGE/bulkfiles/$path")
    [ "$st" = 404 ] || [ "$st" = 400 ] || fail "storage traversal $path: $st"
done
st=$(req --path-as-is "${auth[@]}" "$BASE/bulkfiles/$JOB/../../../../etc/passwd"); expect_outcome "$st" 404
st=$(req --path-as-is "$STORAGE/bulkfiles/$JOB/../../../etc/passwd"); expect_outcome "$st" 404
grep -q root: "$TMP/body" && fail "served /etc/passwd"
st=$(req "${auth[@]}" -H 'Range: bytes=abc' "$FILE"); [ "$st" = 200 ] || fail "malformed Range: $st"
st=$(req "${auth[@]}" -H 'Range: bytes=5-2' "$FILE"); [ "$st" = 200 ] || fail "inverted Range: $st"
st=$(req "${auth[@]}" -H 'Range: bytes=0-1,5-6' "$FILE"); [ "$st" = 200 ] || fail "multi Range: $st"
ok

# ---- methods, unknown endpoints, encodings, odd parameters
st=$(req -X PUT "${auth[@]}" "$BASE/Patient/pat-0"); expect_outcome "$st" 405
st=$(req -X DELETE "$BASE/metadata"); expect_outcome "$st" 405
st=$(req "$BASE/no/such/endpoint/at/all"); expect_outcome "$st" 404
st=$(req "http://127.0.0.1:$(jget .port <"$SANDBOX_DIR/ready.json")/"); expect_outcome "$st" 404
st=$(req "${auth[@]}" "$BASE/Patient%zz"); expect_outcome "$st" 400
st=$(req "${auth[@]}" "$BASE/Patient?_lastUpdated=xx2020"); expect_outcome "$st" 400
st=$(req "${auth[@]}" "$BASE/Patient?_count=-1"); expect_outcome "$st" 400
st=$(req "${auth[@]}" "$BASE/Patient?_count=99999999999999999999"); expect_outcome "$st" 400
st=$(req "${auth[@]}" "$BASE/Patient?_page_token=%FF%FE"); expect_outcome "$st" 400
st=$(req "${auth[@]}" -H 'Accept: application/fhir+xml' "$BASE/Patient"); expect_outcome "$st" 406
st=$(req "${auth[@]}" "$BASE/Observation?patient=Observation/x"); expect_outcome "$st" 400
st=$(req "${auth[@]}" -H 'Prefer: handling=strict' "$BASE/Organization?patient=pat-0"); expect_outcome "$st" 400
st=$(req -H 'Authorization: Bearer' "$BASE/Patient"); expect_outcome "$st" 401
st=$(req -H "Authorization: Bearer $(head -c 5000 /dev/zero | tr '\0' t)" "$BASE/Patient"); expect_outcome "$st" 401
ok

# ---- raw sockets
node "$FHIRSYNC_SOURCE_DIR/tests/integration/sandbox_raw_requests.mjs" "$SANDBOX_DIR/ready.json" || fail "raw requests"
ok

# ---- still alive, and stops cleanly
st=$(req "$BASE/metadata"); [ "$st" = 200 ] || fail "the sandbox stopped answering"
stop_sandbox
finish
