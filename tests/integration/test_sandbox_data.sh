#!/usr/bin/env bash
# test_sandbox_data.sh: --data DIR serves an existing bulk export folder instead of generated
# data. The test writes a tiny export itself (two Observation files, a Group, a line that is
# not JSON, a resource whose patient is unknown) and checks read, search (filters and paging)
# and export (system, Group, _since) over it.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

# ---- the export folder
D="$TMP/export"
mkdir -p "$D"
pat() { printf '{"resourceType":"Patient","id":"%s","meta":{"versionId":"1","lastUpdated":"%s"},"name":[{"family":"%s"}]}\n' "$1" "$2" "$3"; }
obs() { printf '{"resourceType":"Observation","id":"%s","meta":{"lastUpdated":"%s"},"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"%s"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"%s"}]},"subject":{"reference":"Patient/%s"}}\n' "$1" "$2" "$3" "$4" "$5"; }
{
    pat p1 2024-01-01T00:00:00Z Alpha
    pat p2 2024-03-01T00:00:00Z Beta
    echo
    pat p3 2024-06-01T00:00:00Z Gamma
} >"$D/1.Patient.ndjson"
{
    obs o1 2024-01-02T00:00:00Z laboratory 718-7 p1
    obs o2 2024-02-02T00:00:00Z vital-signs 8867-4 p1
    echo 'this line is not JSON'
    obs o3 2024-03-02T00:00:00Z laboratory 718-7 p2
    obs o4 2024-07-02T00:00:00Z vital-signs 8867-4 p3
} >"$D/1.Observation.ndjson"
{
    obs o5 2024-08-02T00:00:00Z laboratory 2345-7 p1
    obs o6 2024-09-02T00:00:00Z laboratory 2345-7 nobody
} >"$D/2.Observation.ndjson"
printf '{"resourceType":"Organization","id":"org1","name":"Clinic"}\n' >"$D/Organization.ndjson"
printf '{"resourceType":"Group","id":"g1","type":"person","actual":true,"member":[{"entity":{"reference":"Patient/p1"}},{"entity":{"reference":"Patient/p3"}}]}\n' >"$D/Group.ndjson"
printf '{"transactionTime":"2024-10-01T00:00:00Z","output":[]}\n' >"$D/manifest.json"

# a folder that does not exist, or holds no NDJSON, is refused at start-up
rc=0; "$FHIRSYNC_SANDBOX_BIN" --data "$TMP/nope" >/dev/null 2>&1 || rc=$?
[ "$rc" != 0 ] || fail "--data with a missing folder started"
mkdir "$TMP/empty"
rc=0; "$FHIRSYNC_SANDBOX_BIN" --data "$TMP/empty" >/dev/null 2>&1 || rc=$?
[ "$rc" != 0 ] || fail "--data with an empty folder started"
ok

cat >"$TMP/clients.json" <<'EOF'
{"clients": [{"client_id": "data-a", "token_endpoint_auth_method": "client_secret_basic",
              "client_secret": "secret-a", "scope": "system/*.read"}]}
EOF
start_sandbox --data "$D" --clients "$TMP/clients.json" --resources-per-file 2
grep -q 'not a resource' "$SANDBOX_DIR/sandbox.err" || fail "the bad line was not reported"
BASE=$(jget .base_url <"$SANDBOX_DIR/ready.json")
TOKEN_URL=$(jget .token_url <"$SANDBOX_DIR/ready.json")
ADMIN=$(jget .admin_url <"$SANDBOX_DIR/ready.json")
TOKEN=$(curl -sS -u data-a:secret-a --data grant_type=client_credentials "$TOKEN_URL" | jget .access_token)
get() { curl -sS -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$@"; }

# ---- read: the stored line, byte for byte
st=$(get "$BASE/Patient/p2"); [ "$st" = 200 ] || fail "read p2: $st"
cmp -s "$TMP/body" <(sed -n 2p "$D/1.Patient.ndjson" | tr -d '\n') || fail "read p2 is not the stored line"
st=$(get "$BASE/Observation/o5"); [ "$st" = 200 ] && [ "$(jget .id <"$TMP/body")" = o5 ] || fail "read o5 (second file)"
st=$(get "$BASE/Observation/o6"); [ "$st" = 200 ] || fail "read o6 (unknown patient)"
st=$(get "$BASE/Observation/nope"); [ "$st" = 404 ] || fail "unknown id: $st"
st=$(get "$BASE/Encounter"); [ "$st" = 404 ] || fail "a type the folder lacks: $st"
ok

# ---- search
total() { get "$BASE/$1${2:+?$2}" >/dev/null; jget '=>(d.entry||[]).length' <"$TMP/body"; }
[ "$(total Observation _count=100)" = 6 ] || fail "Observation count"
[ "$(total Patient)" = 3 ] || fail "Patient count"
[ "$(total Observation patient=p1)" = 3 ] || fail "patient=p1"
[ "$(total Observation patient=Patient/p3)" = 1 ] || fail "patient=p3"
[ "$(total Observation category=vital-signs)" = 2 ] || fail "category"
[ "$(total Observation code=http://loinc.org%7C2345-7)" = 2 ] || fail "code system|code"
[ "$(total Observation status=final)" = 6 ] || fail "status"
[ "$(total Observation _lastUpdated=ge2024-07-01)" = 3 ] || fail "_lastUpdated ge"
[ "$(total Observation _lastUpdated=lt2024-03)" = 2 ] || fail "_lastUpdated lt month"
[ "$(total Patient _since=2024-02-01T00:00:00Z)" = 2 ] || fail "_since"
[ "$(total Observation _id=o2,o4)" = 2 ] || fail "_id"
url="$BASE/Observation?_count=2"; pages=0; seen=""
while [ -n "$url" ] && [ "$pages" -lt 10 ]; do
    pages=$((pages + 1))
    get "$url" >/dev/null
    seen="$seen $(jget '=>d.entry.map(e=>e.resource.id).join(" ")' <"$TMP/body")"
    url=$(jget '=>((d.link||[]).find(l=>l.relation==="next")||{}).url||""' <"$TMP/body")
done
[ "$pages" = 3 ] || fail "paging took $pages pages"
[ "$(echo $seen | tr ' ' '\n' | sort | tr '\n' ' ')" = "o1 o2 o3 o4 o5 o6 " ] || fail "paging saw:$seen"
ok

# ---- export
kick() {
    curl -sS -o /dev/null -D "$TMP/headers" -H "Authorization: Bearer $TOKEN" -H 'Accept: application/fhir+json' \
        -H 'Prefer: respond-async' "$1"
    local status
    status=$(tr -d '\r' <"$TMP/headers" | sed -n 's/^content-location: //Ip')
    [ -n "$status" ] || fail "kick-off $1"
    for _ in $(seq 1 400); do
        st=$(curl -sS -o "$TMP/manifest.json" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$status")
        [ "$st" = 200 ] && break
        sleep 0.05
    done
    [ "$st" = 200 ] || fail "export $1 did not finish"
    node "$FHIRSYNC_SOURCE_DIR/tests/integration/sandbox_bulk_check.mjs" "$TMP/manifest.json" "$TOKEN" >"$TMP/summary.json" ||
        fail "manifest of $1"
}
kick "$BASE/\$export"
[ "$(jget '=>[d.output.Group,d.output.Observation,d.output.Organization,d.output.Patient].join()' <"$TMP/summary.json")" = "1,6,1,3" ] ||
    fail "system export: $(jget .output <"$TMP/summary.json")"
[ "$(jget .files.Observation <"$TMP/summary.json")" = 3 ] || fail "--resources-per-file 2 over 6 observations"
kick "$BASE/Group/g1/\$export"
[ "$(jget .patients <"$TMP/summary.json")" = '["p1","p3"]' ] || fail "Group g1 patients"
[ "$(jget .output.Observation <"$TMP/summary.json")" = 4 ] || fail "Group g1 observations"
kick "$BASE/Patient/\$export?_since=2024-06-15T00:00:00Z"
[ "$(jget '=>[d.output.Observation,d.output.Patient||0].join()' <"$TMP/summary.json")" = "3,0" ] ||
    fail "_since export: $(jget .output <"$TMP/summary.json")"
ok

# ---- mutations need generated data
st=$(curl -sS -o "$TMP/body" -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data '{}' "$ADMIN/mutate")
[ "$st" = 409 ] || fail "mutate over --data: $st"
ok

stop_sandbox
finish
