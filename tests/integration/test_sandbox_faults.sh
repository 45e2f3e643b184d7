#!/usr/bin/env bash
# test_sandbox_faults.sh: every fault rule of the sandbox fires, does what docs/sandbox.md says,
# is counted in GET /admin/faults and is visible in the request log (memory and --request-log
# file). The redirect fault: curl following the 307 without the token reaches the storage
# listener, and the request log proves that storage got bearer=false.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

cat >"$TMP/clients.json" <<'EOF'
{"clients": [
  {"client_id": "fault-a", "token_endpoint_auth_method": "client_secret_basic",
   "client_secret": "secret-a", "scope": "system/*.read"},
  {"client_id": "fault-b", "token_endpoint_auth_method": "client_secret_basic",
   "client_secret": "secret-b", "scope": "system/*.read"}
]}
EOF

start_sandbox --patients 4 --clients "$TMP/clients.json" --request-log "$TMP/requests.ndjson" \
    --fault '{"fault":"503","on":"metadata","retry_after":9}'
BASE=$(jget .base_url <"$SANDBOX_DIR/ready.json")
TOKEN_URL=$(jget .token_url <"$SANDBOX_DIR/ready.json")
ADMIN=$(jget .admin_url <"$SANDBOX_DIR/ready.json")
STORAGE=$(jget .storage_base_url <"$SANDBOX_DIR/ready.json")

token() { curl -sS -u "$1:$2" --data 'grant_type=client_credentials' "$TOKEN_URL" | jget .access_token; }
TOKEN=$(token fault-a secret-a)

add_fault() {
    local st
    st=$(curl -sS -o "$TMP/fault" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        --data "$1" "$ADMIN/faults")
    [ "$st" = 201 ] || fail "adding fault $1: $st $(cat "$TMP/fault")"
}
clear_faults() { curl -sS -o /dev/null -X DELETE "$ADMIN/faults"; }
# req ARGS...: status into stdout, body into $TMP/body, headers into $TMP/headers
req() { curl -sS -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' "$@"; }
header() { tr -d '\r' <"$TMP/headers" | sed -n "s/^$1: //Ip" | head -1; }

# ---- 503 from the command line (count 1: once, then normal)
st=$(req "$BASE/metadata")
[ "$st" = 503 ] && [ "$(header Retry-After)" = 9 ] || fail "--fault 503: $st"
[ "$(jget '=>d.issue[0].code' <"$TMP/body")" = transient ] || fail "503 body"
st=$(req "$BASE/metadata"); [ "$st" = 200 ] || fail "503 fired twice"
ok

# ---- 429 with delta-seconds and with an HTTP-date
add_fault '{"fault":"429","on":"search","retry_after":7}'
st=$(req -H "Authorization: Bearer $TOKEN" "$BASE/Patient")
[ "$st" = 429 ] && [ "$(header Retry-After)" = 7 ] || fail "429: $st"
[ "$(jget '=>d.issue[0].code' <"$TMP/body")" = throttled ] || fail "429 body"
st=$(req -H "Authorization: Bearer $TOKEN" "$BASE/Patient"); [ "$st" = 200 ] || fail "429 count"
add_fault '{"fault":"429","on":"search","retry_after":30,"retry_after_date":true}'
st=$(req -H "Authorization: Bearer $TOKEN" "$BASE/Patient")
ra=$(header Retry-After)
[ "$st" = 429 ] || fail "429 date: $st"
node -e 'const t = Date.parse(process.argv[1]) - Date.now();
         process.exit(/GMT$/.test(process.argv[1]) && t > 20000 && t <= 31000 ? 0 : 1)' "$ra" ||
    fail "Retry-After '$ra' is not an HTTP-date 30 s ahead"
ok

# ---- the faults on token requests: html with a status, 429 for one client only
add_fault '{"fault":"html","on":"token","status":502}'
st=$(req -u fault-a:secret-a --data grant_type=client_credentials "$TOKEN_URL")
[ "$st" = 502 ] && header Content-Type | grep -c text/html >/dev/null && grep -q '<!DOCTYPE html>' "$TMP/body" ||
    fail "html fault: $st"
add_fault '{"fault":"429","on":"token","client_id":"fault-b"}'
st=$(req -u fault-a:secret-a --data grant_type=client_credentials "$TOKEN_URL")
[ "$st" = 200 ] || fail "client-scoped fault hit another client: $st"
st=$(req -u fault-b:secret-b --data grant_type=client_credentials "$TOKEN_URL")
[ "$st" = 429 ] || fail "client-scoped fault: $st"
clear_faults
ok

# ---- 500-transient on status polls (needs an export)
curl -sS -o /dev/null -D "$TMP/headers" -H "Authorization: Bearer $TOKEN" -H 'Accept: application/fhir+json' \
    -H 'Prefer: respond-async' "$BASE/\$export?_type=Patient,Observation"
STATUS=$(header Content-Location)
[ -n "$STATUS" ] || fail "no export"
add_fault '{"fault":"500-transient","on":"status"}'
st=$(req -H "Authorization: Bearer $TOKEN" "$STATUS")
[ "$st" = 500 ] && [ "$(jget '=>d.issue[0].code' <"$TMP/body")" = transient ] || fail "500-transient: $st"
for _ in $(seq 1 400); do
    st=$(req -H "Authorization: Bearer $TOKEN" "$STATUS")
    [ "$st" = 200 ] && break
    [ "$st" = 202 ] || fail "status: $st"
    sleep 0.05
done
[ "$st" = 200 ] || fail "export did not finish"
cp "$TMP/body" "$TMP/manifest.json"
FILE=$(jget '=>d.output.find(o=>o.type==="Observation").url' <"$TMP/manifest.json")
curl -sS -o "$TMP/full.ndjson" -H "Authorization: Bearer $TOKEN" "$FILE"
ok

# ---- truncate: the last line cut in half
add_fault '{"fault":"truncate","on":"download"}'
st=$(req -H "Authorization: Bearer $TOKEN" "$FILE")
[ "$st" = 200 ] || fail "truncate: $st"
[ "$(wc -c <"$TMP/body")" -lt "$(wc -c <"$TMP/full.ndjson")" ] || fail "truncate did not shorten"
lines=$(wc -l <"$TMP/full.ndjson")
head -n $((lines - 1)) "$TMP/full.ndjson" | cmp -s - <(head -n $((lines - 1)) "$TMP/body") || fail "truncate changed early lines"
tail -n 1 "$TMP/body" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{JSON.parse(s);process.exit(1)}catch{process.exit(0)}})' ||
    fail "the last line still parses"
ok

# ---- reset: the connection is cut after N bytes
add_fault '{"fault":"reset","on":"read","after_bytes":10}'
rc=0
curl -sS -o "$TMP/body" -H "Authorization: Bearer $TOKEN" "$BASE/Patient/pat-0" 2>/dev/null || rc=$?
[ "$rc" = 18 ] && [ "$(wc -c <"$TMP/body")" = 10 ] || fail "reset: curl rc $rc, $(wc -c <"$TMP/body") bytes"
add_fault '{"fault":"reset","on":"download","after_bytes":100}'
rc=0
curl -sS -o "$TMP/body" -H "Authorization: Bearer $TOKEN" "$FILE" 2>/dev/null || rc=$?
[ "$rc" = 18 ] && [ "$(wc -c <"$TMP/body")" = 100 ] || fail "reset download: curl rc $rc"
st=$(req -H "Authorization: Bearer $TOKEN" "$BASE/Patient/pat-0"); [ "$st" = 200 ] || fail "after reset: $st"
ok

# ---- slow
add_fault '{"fault":"slow","on":"metadata","delay_ms":400}'
t=$(curl -sS -o /dev/null -w '%{time_total}' "$BASE/metadata")
node -e 'process.exit(parseFloat(process.argv[1]) >= 0.39 ? 0 : 1)' "$t" || fail "slow took only $t s"
ok

# ---- wrong-content-type
add_fault '{"fault":"wrong-content-type","on":"search"}'
st=$(req -H "Authorization: Bearer $TOKEN" "$BASE/Patient")
[ "$st" = 200 ] && header Content-Type | grep -c '^text/plain' >/dev/null || fail "wrong-content-type"
ok

# ---- expire-token: the client's tokens expire at once
T2=$(token fault-a secret-a)
add_fault '{"fault":"expire-token","on":"read","client_id":"fault-a"}'
st=$(req -H "Authorization: Bearer $T2" "$BASE/Patient/pat-1")
[ "$st" = 401 ] && grep -q expired "$TMP/body" || fail "expire-token: $st"
st=$(req -H "Authorization: Bearer $TOKEN" "$BASE/Patient/pat-1")
[ "$st" = 401 ] || fail "older token of the client still valid: $st"
TOKEN=$(token fault-a secret-a)
st=$(req -H "Authorization: Bearer $TOKEN" "$BASE/Patient/pat-1"); [ "$st" = 200 ] || fail "new token: $st"
ok

# ---- redirect: 307 to the storage origin, which needs no token
add_fault '{"fault":"redirect","on":"download"}'
st=$(req -H "Authorization: Bearer $TOKEN" "$FILE")
loc=$(header Location)
[ "$st" = 307 ] && case "$loc" in "$STORAGE"/bulkfiles/*) true;; *) false;; esac || fail "redirect: $st $loc"
curl -sS -o /dev/null -X DELETE "$ADMIN/requests"
add_fault '{"fault":"redirect","on":"download"}'
curl -sS -L -o "$TMP/redirected" -H "Authorization: Bearer $TOKEN" "$FILE" || fail "curl -L"
cmp -s "$TMP/redirected" "$TMP/full.ndjson" || fail "the storage copy differs"
curl -sS "$ADMIN/requests" >"$TMP/log"
grep '"listener":"main"' "$TMP/log" | grep '"status":307' | grep -c '"fault":"redirect"' >/dev/null || fail "main 307 not logged"
grep '"listener":"storage"' "$TMP/log" | grep '"status":200' | grep -c '"bearer":false' >/dev/null ||
    fail "storage did not log bearer=false: $(cat "$TMP/log")"
# the log tells the difference: a client that leaks the token shows bearer=true at storage
curl -sS -o /dev/null -H "Authorization: Bearer $TOKEN" "$loc"
curl -sS "$ADMIN/requests" | grep '"listener":"storage"' | grep -c '"bearer":true' >/dev/null || fail "storage bearer=true not logged"
ok

# ---- next-other-origin, next-loop, malformed-bundle
add_fault '{"fault":"next-other-origin","on":"search"}'
st=$(req -H "Authorization: Bearer $TOKEN" "$BASE/Observation?_count=2")
next=$(jget '=>d.link.find(l=>l.relation==="next").url' <"$TMP/body")
case "$next" in "$STORAGE"/fhir/Observation\?*) ;; *) fail "next-other-origin: $next";; esac
st=$(req "$next")
[ "$st" = 200 ] && [ "$(jget '=>d.entry.length' <"$TMP/body")" = 2 ] || fail "storage page: $st"
add_fault '{"fault":"next-loop","on":"search"}'
st=$(req -H "Authorization: Bearer $TOKEN" "$BASE/Observation?_count=2")
[ "$(jget '=>d.link.find(l=>l.relation==="next").url===d.link.find(l=>l.relation==="self").url' <"$TMP/body")" = true ] ||
    fail "next-loop"
add_fault '{"fault":"malformed-bundle","on":"search"}'
st=$(req -H "Authorization: Bearer $TOKEN" "$BASE/Observation?_count=2")
[ "$st" = 200 ] && [ "$(jget '=>Array.isArray(d.entry)' <"$TMP/body")" = false ] || fail "malformed-bundle entry"
add_fault '{"fault":"malformed-bundle","on":"search","variant":"no-resource-type"}'
st=$(req -H "Authorization: Bearer $TOKEN" "$BASE/Observation?_count=2")
[ "$(jget '=>"resourceType" in d.entry[0].resource' <"$TMP/body")" = false ] || fail "malformed-bundle resourceType"
ok

# ---- rate-limit: 3 a minute for one client (8 quick requests cross at most one minute edge)
add_fault '{"fault":"rate-limit","on":"read","client_id":"fault-a","per_minute":3}'
codes=""
for _ in $(seq 1 8); do codes="$codes $(req -H "Authorization: Bearer $TOKEN" "$BASE/Patient/pat-2")"; done
case "$codes" in " 200 200 200"*429*) ;; *) fail "rate-limit codes:$codes";; esac
ra=$(header Retry-After)
st=$(req -H "Authorization: Bearer $TOKEN" "$BASE/Patient/pat-2")
if [ "$st" = 429 ]; then
    ra=$(header Retry-After)
    [ "$ra" -ge 1 ] && [ "$ra" -le 60 ] || fail "rate-limit Retry-After $ra"
fi
ok

# ---- hit counts and the request log
curl -sS "$ADMIN/faults" >"$TMP/faults.json"
[ "$(jget '=>d.faults.find(f=>f.fault==="rate-limit").hits>=1' <"$TMP/faults.json")" = true ] || fail "hits"
[ "$(jget '=>d.faults.find(f=>f.fault==="next-loop").hits' <"$TMP/faults.json")" = 1 ] || fail "next-loop hits"
[ "$(jget '=>d.faults.find(f=>f.fault==="next-loop").remaining' <"$TMP/faults.json")" = 0 ] || fail "remaining"
for f in 503 429 html 500-transient truncate reset slow wrong-content-type expire-token redirect \
         next-other-origin next-loop malformed-bundle rate-limit; do
    grep -q "\"fault\":\"$f\"" "$TMP/requests.ndjson" || fail "fault $f not in the --request-log file"
done
curl -sS "$ADMIN/requests" | grep -c '"fault":"rate-limit"' >/dev/null || fail "rate-limit not in /admin/requests"
last=$(curl -sS "$ADMIN/requests" | tail -n 1 | jget .seq)
curl -sS -o /dev/null "$BASE/metadata"
[ "$(curl -sS "$ADMIN/requests?since=$last" | wc -l)" = 1 ] || fail "/admin/requests?since"
[ "$(curl -sS "$ADMIN/requests?since=$last" | jget .seq)" = $((last + 1)) ] || fail "since seq"
grep -q 'secret' "$TMP/requests.ndjson" && fail "a secret reached the request log"
st=$(req -X POST -H 'Content-Type: application/json' --data '{"fault":"teapot"}' "$ADMIN/faults")
[ "$st" = 400 ] || fail "unknown fault accepted"
st=$(req -X POST -H 'Content-Type: application/json' --data '{"fault":"truncate","on":"token"}' "$ADMIN/faults")
[ "$st" = 400 ] || fail "truncate on token accepted"
clear_faults
[ "$(curl -sS "$ADMIN/faults" | jget '=>d.faults.length')" = 0 ] || fail "faults not cleared"
curl -sS -X DELETE "$ADMIN/requests" | grep -c cleared >/dev/null || fail "DELETE /admin/requests"
[ -z "$(curl -sS "$ADMIN/requests")" ] || fail "the request log is not empty after DELETE"
ok

stop_sandbox
finish
