#!/usr/bin/env bash
# test_sandbox_bulk.sh: Bulk Data v2 export against the sandbox: system, Patient and Group
# kick-off with GET and POST, status polling to completion (202 + X-Progress + Retry-After), the
# manifest (counts equal lines, checked by sandbox_bulk_check.mjs), downloads with the token,
# Range requests, ownership, DELETE, _since after /admin/mutate (only changed resources plus
# deleted Bundles), _type and _typeFilter, and the 400s for missing Prefer/Accept.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

cat >"$TMP/clients.json" <<'EOF'
{"clients": [
  {"client_id": "bulk-a", "token_endpoint_auth_method": "client_secret_basic",
   "client_secret": "secret-a", "scope": "system/*.read"},
  {"client_id": "bulk-b", "token_endpoint_auth_method": "client_secret_basic",
   "client_secret": "secret-b", "scope": "system/*.rs"},
  {"client_id": "bulk-narrow", "token_endpoint_auth_method": "client_secret_basic",
   "client_secret": "secret-n", "scope": "system/Patient.read"}
]}
EOF

start_sandbox --patients 20 --seed 3 --resources-per-file 100 --export-delay-ms 200 \
    --clients "$TMP/clients.json"
BASE=$(jget .base_url <"$SANDBOX_DIR/ready.json")
TOKEN_URL=$(jget .token_url <"$SANDBOX_DIR/ready.json")
ADMIN=$(jget .admin_url <"$SANDBOX_DIR/ready.json")

token() {
    curl -sS -u "$1:$2" --data 'grant_type=client_credentials' "$TOKEN_URL" | jget .access_token
}
TOKEN=$(token bulk-a secret-a)
OTHER=$(token bulk-b secret-b)
NARROW=$(token bulk-narrow secret-n)

# kickoff METHOD URL [BODY]: prints the status URL; fails unless 202 + absolute Content-Location
kickoff() {
    local method=$1 url=$2 body=${3:-}
    local args=(-sS -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' -X "$method"
                -H "Authorization: Bearer $TOKEN" -H 'Accept: application/fhir+json'
                -H 'Prefer: respond-async')
    [ -n "$body" ] && args+=(-H 'Content-Type: application/fhir+json' --data "$body")
    local st
    st=$(curl "${args[@]}" "$url")
    [ "$st" = 202 ] || fail "kick-off $method $url: $st $(cat "$TMP/body")"
    local loc
    loc=$(tr -d '\r' <"$TMP/headers" | sed -n 's/^[Cc]ontent-[Ll]ocation: //p')
    case "$loc" in "$BASE"/bulkstatus/*) ;; *) fail "Content-Location '$loc' is not absolute";; esac
    echo "$loc"
}

# wait_done STATUS_URL: polls until 200; the manifest ends in $TMP/manifest.json
wait_done() {
    local url=$1 st polls=0 saw202=0
    while :; do
        polls=$((polls + 1))
        [ "$polls" -le 1200 ] || fail "export did not finish"
        st=$(curl -sS -o "$TMP/manifest.json" -D "$TMP/headers" -w '%{http_code}' \
            -H "Authorization: Bearer $TOKEN" "$url")
        if [ "$st" = 202 ]; then
            saw202=1
            grep -Eqi '^x-progress: [0-9]+% complete' "$TMP/headers" || fail "202 without X-Progress"
            grep -Eqi '^retry-after: [0-9]+' "$TMP/headers" || fail "202 without Retry-After"
            sleep 0.05
            continue
        fi
        [ "$st" = 200 ] || fail "status $url: $st $(cat "$TMP/manifest.json")"
        break
    done
    echo "$saw202" >"$TMP/saw202"
}

check_manifest() { # -> $TMP/summary.json
    node "$FHIRSYNC_SOURCE_DIR/tests/integration/sandbox_bulk_check.mjs" "$TMP/manifest.json" "$TOKEN" >"$TMP/summary.json" ||
        fail "manifest check"
}

count_of() { # TYPE [extra query] -> REST total
    curl -sS -H "Authorization: Bearer $TOKEN" "$BASE/$1?_summary=count${2:+&$2}" | jget .total
}

# ---- the 400s and 401 of kick-off
st=$(curl -sS -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
    -H 'Accept: application/fhir+json' "$BASE/\$export")
[ "$st" = 400 ] && grep -q respond-async "$TMP/body" || fail "kick-off without Prefer: $st"
st=$(curl -sS -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
    -H 'Prefer: respond-async' "$BASE/\$export")
[ "$st" = 400 ] && grep -q Accept "$TMP/body" || fail "kick-off without Accept: $st"
st=$(curl -sS -o "$TMP/body" -w '%{http_code}' -H 'Accept: application/fhir+json' \
    -H 'Prefer: respond-async' "$BASE/\$export")
[ "$st" = 401 ] || fail "kick-off without token: $st"
st=$(curl -sS -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
    -H 'Accept: application/fhir+json' -H 'Prefer: respond-async' "$BASE/\$export?_outputFormat=text/csv")
[ "$st" = 400 ] || fail "_outputFormat text/csv: $st"
st=$(curl -sS -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer $NARROW" \
    -H 'Accept: application/fhir+json' -H 'Prefer: respond-async' "$BASE/\$export?_type=Observation")
[ "$st" = 403 ] || fail "_type beyond the token's scopes: $st"
st=$(curl -sS -o "$TMP/body" -w '%{http_code}' -X POST -H "Authorization: Bearer $TOKEN" \
    -H 'Accept: application/fhir+json' -H 'Prefer: respond-async' \
    -H 'Content-Type: application/fhir+json' --data '{"resourceType":"Parameters","parameter":[' "$BASE/\$export")
[ "$st" = 400 ] || fail "malformed Parameters body: $st"
ok

# ---- system export, GET
STATUS=$(kickoff GET "$BASE/\$export")
wait_done "$STATUS"
[ "$(cat "$TMP/saw202")" = 1 ] || fail "never saw a 202 while the export ran"
check_manifest
[ "$(jget .request <"$TMP/summary.json")" = "$BASE/\$export" ] || fail "manifest request"
[ "$(jget .requiresAccessToken <"$TMP/summary.json")" = true ] || fail "requiresAccessToken"
T0=$(jget .transactionTime <"$TMP/summary.json")
for t in Patient Observation Condition Organization Practitioner Group Encounter; do
    got=$(jget ".output.$t" <"$TMP/summary.json")
    want=$(count_of "$t")
    [ "$got" = "$want" ] || fail "system export has $got $t, the server has $want"
done
[ "$(jget .files.Observation <"$TMP/summary.json")" -ge 2 ] || fail "Observation not split at 100 per file"
[ "$(jget '=>d.deleted' <"$TMP/summary.json")" = 0 ] || fail "deleted without _since"
ok

# ---- downloads: token, ownership, Range
FILE=$(jget '=>d.output.find(o=>o.type==="Observation").url' <"$TMP/manifest.json")
st=$(curl -sS -o /dev/null -w '%{http_code}' "$FILE")
[ "$st" = 401 ] || fail "download without token: $st"
st=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $OTHER" "$FILE")
[ "$st" = 403 ] || fail "download by another client: $st"
st=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $OTHER" "$STATUS")
[ "$st" = 403 ] || fail "status by another client: $st"
curl -sS -o "$TMP/full" -H "Authorization: Bearer $TOKEN" "$FILE"
st=$(curl -sS -o "$TMP/part" -D "$TMP/headers" -w '%{http_code}' -r 10-109 \
    -H "Authorization: Bearer $TOKEN" "$FILE")
[ "$st" = 206 ] || fail "Range: $st"
SIZE=$(wc -c <"$TMP/full")
grep -qi "^content-range: bytes 10-109/$SIZE" "$TMP/headers" || fail "Content-Range"
grep -qi '^accept-ranges: bytes' "$TMP/headers" || fail "Accept-Ranges"
cmp -s "$TMP/part" <(tail -c +11 "$TMP/full" | head -c 100) || fail "Range bytes differ"
st=$(curl -sS -o "$TMP/part" -w '%{http_code}' -r -50 -H "Authorization: Bearer $TOKEN" "$FILE")
[ "$st" = 206 ] && cmp -s "$TMP/part" <(tail -c 50 "$TMP/full") || fail "suffix Range"
st=$(curl -sS -o /dev/null -D "$TMP/headers" -w '%{http_code}' -r "$((SIZE + 10))-" \
    -H "Authorization: Bearer $TOKEN" "$FILE")
[ "$st" = 416 ] && grep -qi "^content-range: bytes \*/$SIZE" "$TMP/headers" || fail "unsatisfiable Range: $st"
st=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -H 'Accept: text/html' "$FILE")
[ "$st" = 406 ] || fail "download with Accept text/html: $st"
ok

# ---- Patient-level export with _type
STATUS2=$(kickoff GET "$BASE/Patient/\$export?_type=Patient,Observation&_outputFormat=application/fhir%2Bndjson")
wait_done "$STATUS2"
check_manifest
[ "$(jget '=>Object.keys(d.output).sort().join(",")' <"$TMP/summary.json")" = "Observation,Patient" ] ||
    fail "_type Patient,Observation gave $(jget .output <"$TMP/summary.json")"
STATUS3=$(kickoff GET "$BASE/Patient/\$export")
wait_done "$STATUS3"
check_manifest
[ "$(jget '=>"Organization" in d.output || "Group" in d.output' <"$TMP/summary.json")" = false ] ||
    fail "Patient-level export has non-compartment types"
ok

# ---- Group-level export, GET and POST with a patient
STATUS4=$(kickoff GET "$BASE/Group/all/\$export?_type=Condition")
wait_done "$STATUS4"
check_manifest
[ "$(jget .output.Condition <"$TMP/summary.json")" = "$(count_of Condition)" ] || fail "Group/all Condition count"
STATUS5=$(kickoff POST "$BASE/Group/all/\$export" \
    '{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"Patient,Condition"},{"name":"patient","valueReference":{"reference":"Patient/pat-2"}}]}')
wait_done "$STATUS5"
check_manifest
[ "$(jget .patients <"$TMP/summary.json")" = '["pat-2"]' ] || fail "POST patient limits: $(jget .patients <"$TMP/summary.json")"
[ "$(jget .output.Patient <"$TMP/summary.json")" = 1 ] || fail "POST patient: one Patient"
st=$(curl -sS -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
    -H 'Accept: application/fhir+json' -H 'Prefer: respond-async' "$BASE/Group/no-such-group/\$export")
[ "$st" = 404 ] || fail "unknown group: $st"
ok

# ---- system POST with _type and _typeFilter
STATUS6=$(kickoff POST "$BASE/\$export" \
    '{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"Observation,Condition"},{"name":"_typeFilter","valueString":"Observation?category=laboratory"}]}')
wait_done "$STATUS6"
check_manifest
[ "$(jget .observationCategories <"$TMP/summary.json")" = '["laboratory"]' ] || fail "_typeFilter category"
labs=$(jget .output.Observation <"$TMP/summary.json")
[ "$labs" = "$(count_of Observation category=laboratory)" ] && [ "$labs" -lt "$(count_of Observation)" ] ||
    fail "_typeFilter count $labs"
[ "$(jget .output.Condition <"$TMP/summary.json")" = "$(count_of Condition)" ] || fail "_typeFilter touched Condition"
STATUS7=$(kickoff GET "$BASE/\$export?_type=Observation&_typeFilter=Observation%3Fstatus%3Dfinal%26category%3Dvital-signs,Observation%3Fcategory%3Dlaboratory")
wait_done "$STATUS7"
check_manifest
[ "$(jget .observationCategories <"$TMP/summary.json")" = '["laboratory","vital-signs"]' ] || fail "two _typeFilters are OR-ed"
ok

# ---- unknown parameters: lenient (a warning in the error file) and strict (400)
STATUS8=$(kickoff GET "$BASE/\$export?_type=Patient&_elements=id")
wait_done "$STATUS8"
check_manifest
jget .errors <"$TMP/summary.json" | grep -c _elements >/dev/null || fail "lenient: no warning about _elements"
st=$(curl -sS -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
    -H 'Accept: application/fhir+json' -H 'Prefer: respond-async, handling=strict' "$BASE/\$export?_elements=id")
[ "$st" = 400 ] || fail "strict: unknown parameter $st"
ok

# ---- DELETE
st=$(curl -sS -o /dev/null -w '%{http_code}' -X DELETE -H "Authorization: Bearer $TOKEN" "$STATUS2")
[ "$st" = 202 ] || fail "DELETE: $st"
st=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$STATUS2")
[ "$st" = 404 ] || fail "status after DELETE: $st"
st=$(curl -sS -o /dev/null -w '%{http_code}' -X DELETE -H "Authorization: Bearer $TOKEN" "$BASE/bulkstatus/nope")
[ "$st" = 404 ] || fail "DELETE unknown job: $st"
ok

# ---- incremental: _since after a mutation
MUT=$(curl -sS -X POST -H 'Content-Type: application/json' --data '{"update":0.2,"delete":0.05}' "$ADMIN/mutate")
[ "$(echo "$MUT" | jget .epoch)" = 1 ] || fail "mutate: $MUT"
STATUS9=$(kickoff GET "$BASE/\$export?_since=$T0")
wait_done "$STATUS9"
check_manifest
min=$(jget .minLastUpdated <"$TMP/summary.json")
node -e 'process.exit(Date.parse(process.argv[1]) > Date.parse(process.argv[2]) ? 0 : 1)' "$min" "$T0" ||
    fail "_since export holds a resource last updated $min, not after $T0"
for t in Observation Condition Patient; do
    got=$(jget "=>d.output.$t||0" <"$TMP/summary.json")
    want=$(count_of "$t" "_since=$T0")
    [ "$got" = "$want" ] || fail "_since export has $got $t, REST _since says $want"
done
[ "$(jget .output.Observation <"$TMP/summary.json")" -lt "$(count_of Observation)" ] || fail "_since exported everything"
ndel=$(jget .deleted <"$TMP/summary.json")
[ "$ndel" -gt 0 ] || fail "no deleted Bundles after deleting 5%"
gone=$(jget '=>d.deletedIds[0]' <"$TMP/summary.json")
st=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$BASE/$gone")
[ "$st" = 410 ] || fail "deleted $gone reads $st"
# nothing deleted before T0 is reported, and nothing changed since appears twice
[ "$(jget '=>new Set(d.deletedIds).size===d.deletedIds.length' <"$TMP/summary.json")" = true ] || fail "duplicate deletions"
ok

stop_sandbox
finish
