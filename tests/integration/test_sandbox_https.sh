#!/usr/bin/env bash
# test_sandbox_https.sh: the sandbox over HTTPS (--tls-cert/--tls-key) with a throwaway
# self-signed certificate made at run time (never committed): the URLs in the ready file are
# https, curl --cacert verifies both listeners (127.0.0.1 and the storage origin "localhost"),
# and the token endpoint's aud is the https token URL.
set -euo pipefail

: "${FHIRSYNC_SANDBOX_BIN:?FHIRSYNC_SANDBOX_BIN must point at fhirsync-sandbox}"
SRC="${FHIRSYNC_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
export FHIRSYNC_SOURCE_DIR="$SRC"
TMP_ROOT="${FHIRSYNC_TEST_TMP:-${TMPDIR:-/tmp}}"
mkdir -p "$TMP_ROOT"
WORK=$(mktemp -d "$TMP_ROOT/sandbox-https.XXXXXX")
SB_PID=""
CHECKS=0

fail() { echo "FAIL: $*" >&2; [ -f "$WORK/sandbox.err" ] && tail -20 "$WORK/sandbox.err" >&2; exit 1; }
ok() { CHECKS=$((CHECKS + 1)); }
cleanup() {
    if [ -n "$SB_PID" ]; then kill -TERM "$SB_PID" 2>/dev/null || true; wait "$SB_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

jget() {
    node -e '
        let s = ""; process.stdin.on("data", (d) => s += d).on("end", () => {
            const e = process.argv[1];
            const f = e.startsWith("=>") ? eval("(d) " + e) : eval("(d) => d" + e);
            const v = f(JSON.parse(s));
            console.log(typeof v === "object" ? JSON.stringify(v) : String(v));
        });' "$1"
}

command -v openssl >/dev/null || { echo "SKIP: no openssl"; exit 0; }
(umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null) || fail "openssl req"

cat >"$WORK/clients.json" <<'EOF'
{"clients": [{"client_id": "tls-a", "token_endpoint_auth_method": "client_secret_basic",
              "client_secret": "secret-a", "scope": "system/*.read"}]}
EOF
"$FHIRSYNC_SANDBOX_BIN" --ready-file "$WORK/ready.json" --patients 3 --clients "$WORK/clients.json" \
    --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem" >"$WORK/sandbox.out" 2>"$WORK/sandbox.err" &
SB_PID=$!
for _ in $(seq 1 200); do
    [ -s "$WORK/ready.json" ] && break
    kill -0 "$SB_PID" 2>/dev/null || fail "the sandbox exited during start-up"
    sleep 0.05
done
[ -s "$WORK/ready.json" ] || fail "the sandbox did not become ready"

BASE=$(jget .base_url <"$WORK/ready.json")
TOKEN_URL=$(jget .token_url <"$WORK/ready.json")
STORAGE=$(jget .storage_base_url <"$WORK/ready.json")
PORT=$(jget .port <"$WORK/ready.json")
case "$BASE" in https://127.0.0.1:*/fhir) ;; *) fail "base URL $BASE is not https";; esac
case "$STORAGE" in https://localhost:*/storage) ;; *) fail "storage URL $STORAGE is not https";; esac
grep -q "https://127.0.0.1:$PORT/fhir" "$WORK/sandbox.out" || fail "stdout lacks the https base URL"
ok

C=(curl -sS --cacert "$WORK/cert.pem")
st=$("${C[@]}" -o "$WORK/body" -w '%{http_code}' "$BASE/.well-known/smart-configuration")
[ "$st" = 200 ] && [ "$(jget .token_endpoint <"$WORK/body")" = "$TOKEN_URL" ] || fail "discovery over https: $st"
rc=0; curl -sS -o /dev/null "$BASE/metadata" 2>/dev/null || rc=$?
[ "$rc" = 60 ] || fail "an unknown CA was not refused (curl rc $rc)"
rc=0; curl -sS -o /dev/null --max-time 5 "http://127.0.0.1:$PORT/fhir/metadata" 2>/dev/null || rc=$?
[ "$rc" != 0 ] || fail "plain http answered on the TLS port"
ok

TOKEN=$("${C[@]}" -u tls-a:secret-a --data grant_type=client_credentials "$TOKEN_URL" | jget .access_token)
[ ${#TOKEN} -ge 40 ] || fail "no token over https"
st=$("${C[@]}" -o "$WORK/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$BASE/Patient?_count=2")
[ "$st" = 200 ] || fail "search over https: $st"
next=$(jget '=>d.link.find(l=>l.relation==="next").url' <"$WORK/body")
case "$next" in https://127.0.0.1:*) ;; *) fail "next link $next is not https";; esac
ok

# a bulk file through the storage origin (https://localhost) after a redirect
curl -sS -o /dev/null -X POST -H 'Content-Type: application/json' --cacert "$WORK/cert.pem" \
    --data '{"fault":"redirect","on":"download"}' "https://127.0.0.1:$PORT/admin/faults"
"${C[@]}" -o /dev/null -D "$WORK/headers" -H "Authorization: Bearer $TOKEN" -H 'Accept: application/fhir+json' \
    -H 'Prefer: respond-async' "$BASE/\$export?_type=Patient"
STATUS=$(tr -d '\r' <"$WORK/headers" | sed -n 's/^content-location: //Ip')
case "$STATUS" in https://127.0.0.1:*) ;; *) fail "Content-Location $STATUS is not https";; esac
for _ in $(seq 1 400); do
    st=$("${C[@]}" -o "$WORK/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$STATUS")
    [ "$st" = 200 ] && break
    sleep 0.05
done
[ "$st" = 200 ] || fail "export over https did not finish"
FILE=$(jget '=>d.output[0].url' <"$WORK/body")
"${C[@]}" -L -o "$WORK/patients.ndjson" -H "Authorization: Bearer $TOKEN" "$FILE" || fail "download via storage"
[ "$(wc -l <"$WORK/patients.ndjson")" = 3 ] || fail "storage copy over https"
ok

kill -TERM "$SB_PID"
rc=0; wait "$SB_PID" || rc=$?
SB_PID=""
[ "$rc" = 0 ] || fail "the sandbox exited with $rc on SIGTERM"
echo "PASS test_sandbox_https ($CHECKS checks)"
