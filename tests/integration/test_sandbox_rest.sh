#!/usr/bin/env bash
# test_sandbox_rest.sh: the sandbox's FHIR REST API with curl: read, search paging through every
# page of a type, _id, _lastUpdated, _since, patient filters, _count limits, POST _search, the
# 401/403/404 answers, and unknown parameters under lenient and strict handling.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

cat >"$TMP/clients.json" <<'EOF'
{"clients": [
  {"client_id": "rest-all", "token_endpoint_auth_method": "client_secret_basic",
   "client_secret": "s3cret-all", "scope": "system/*.read"},
  {"client_id": "rest-patient", "token_endpoint_auth_method": "client_secret_basic",
   "client_secret": "s3cret-patient", "scope": "system/Patient.rs"}
]}
EOF

# a pool of epoll threads here (the other tests use a thread per connection)
start_sandbox --patients 30 --seed 7 --threads 3 --clients "$TMP/clients.json"
BASE=$(jget .base_url <"$SANDBOX_DIR/ready.json")
TOKEN_URL=$(jget .token_url <"$SANDBOX_DIR/ready.json")
ADMIN=$(jget .admin_url <"$SANDBOX_DIR/ready.json")

token() {
    curl -sS -u "$1:$2" -H 'Content-Type: application/x-www-form-urlencoded' \
        --data 'grant_type=client_credentials' "$TOKEN_URL" | jget .access_token
}
TOKEN=$(token rest-all s3cret-all)
NARROW=$(token rest-patient s3cret-patient)
[ ${#TOKEN} -ge 40 ] || fail "no token"

# get URL -> body in $TMP/body, status echoed, headers in $TMP/headers
get() {
    curl -sS -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$@"
}
expect_outcome() { # status want
    [ "$1" = "$2" ] || fail "status $1, want $2: $(cat "$TMP/body")"
    [ "$(jget .resourceType <"$TMP/body")" = OperationOutcome ] || fail "not an OperationOutcome"
}

# ---- read
st=$(get "$BASE/Patient/pat-0")
[ "$st" = 200 ] || fail "read Patient/pat-0: $st"
[ "$(jget .id <"$TMP/body")" = pat-0 ] && [ "$(jget .resourceType <"$TMP/body")" = Patient ] || fail "read body"
grep -qi '^content-type: application/fhir+json' "$TMP/headers" || fail "read content type"
grep -qi '^etag: W/"' "$TMP/headers" || fail "read ETag"
ok
st=$(get "$BASE/Patient/pat-999999"); expect_outcome "$st" 404; ok
st=$(get "$BASE/NoSuchType/x"); expect_outcome "$st" 404; ok
st=$(get "$BASE/NoSuchType"); expect_outcome "$st" 404; ok
st=$(curl -sS -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' "$BASE/Patient/pat-0")
expect_outcome "$st" 401
grep -qi '^www-authenticate: Bearer' "$TMP/headers" || fail "401 without WWW-Authenticate"
ok
st=$(curl -sS -o "$TMP/body" -w '%{http_code}' -H 'Authorization: Bearer not-a-token' "$BASE/Patient")
expect_outcome "$st" 401; ok
st=$(curl -sS -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer $NARROW" "$BASE/Observation")
expect_outcome "$st" 403; ok
st=$(curl -sS -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer $NARROW" "$BASE/Observation/obs-0-0")
expect_outcome "$st" 403; ok
st=$(curl -sS -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer $NARROW" "$BASE/Patient/pat-1")
[ "$st" = 200 ] || fail "narrow token reading Patient: $st"; ok

# ---- paging through every page of Condition
st=$(get "$BASE/Condition?_summary=count")
[ "$st" = 200 ] || fail "summary count: $st"
TOTAL=$(jget .total <"$TMP/body")
[ "$TOTAL" -gt 20 ] || fail "too few conditions: $TOTAL"
url="$BASE/Condition?_count=7&_total=accurate"
pages=0
: >"$TMP/ids"
while [ -n "$url" ]; do
    pages=$((pages + 1))
    [ "$pages" -le 500 ] || fail "paging does not end"
    st=$(get "$url"); [ "$st" = 200 ] || fail "page $pages: $st"
    # one node per page: append "id fullUrl" lines, check the page, print the next link
    url=$(node -e '
        const fs = require("fs");
        const d = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
        if (d.resourceType !== "Bundle" || d.type !== "searchset") throw new Error("not a searchset");
        const entries = d.entry || [];
        if (entries.length > 7) throw new Error("page larger than _count");
        if (String(d.total) !== process.argv[3]) throw new Error("total " + d.total);
        fs.appendFileSync(process.argv[2], entries.map((e) => e.resource.id + " " + e.fullUrl + "\n").join(""));
        console.log(((d.link || []).find((l) => l.relation === "next") || {}).url || "");
    ' "$TMP/body" "$TMP/ids" "$TOTAL") || fail "page $pages is malformed"
    case "$url" in ""|"$BASE"/Condition\?*) ;; *) fail "next link $url is not absolute on the base";; esac
done
COUNT=$(wc -l <"$TMP/ids")
[ "$COUNT" = "$TOTAL" ] || fail "paged $COUNT conditions, total says $TOTAL"
[ "$(cut -d' ' -f1 "$TMP/ids" | sort -u | wc -l)" = "$TOTAL" ] || fail "duplicate ids across pages"
awk '{ n = split($2, p, "/"); if (p[n] != $1 || index($2, "'"$BASE"'/Condition/") != 1) exit 1 }' "$TMP/ids" || fail "fullUrl"
[ "$pages" -ge 3 ] || fail "expected several pages"
st=$(get "$BASE/Observation?_summary=count")
TOTAL=$(jget .total <"$TMP/body")
ok

# ---- _id
st=$(get "$BASE/Patient?_id=pat-1,pat-2,pat-nope")
[ "$(jget '=>d.entry.map(e=>e.resource.id).sort().join(",")' <"$TMP/body")" = "pat-1,pat-2" ] || fail "_id"
ok

# ---- patient / subject
for p in "patient=Patient/pat-3" "patient=pat-3" "subject=Patient/pat-3"; do
    st=$(get "$BASE/Observation?$p&_count=1000")
    [ "$st" = 200 ] || fail "$p: $st"
    subjects=$(jget '=>[...new Set((d.entry||[]).map(e=>e.resource.subject.reference))].join(",")' <"$TMP/body")
    [ "$subjects" = "Patient/pat-3" ] || fail "$p gave subjects '$subjects'"
done
n3=$(jget '=>d.entry.length' <"$TMP/body")
st=$(get "$BASE/Observation?patient=pat-3,pat-4&_count=1000&_total=accurate")
n34=$(jget '=>d.entry.length' <"$TMP/body")
[ "$n34" -gt "$n3" ] && [ "$(jget .total <"$TMP/body")" = "$n34" ] || fail "patient OR list"
st=$(get "$BASE/Observation?patient=Patient/pat-unknown")
[ "$(jget '=>(d.entry||[]).length' <"$TMP/body")" = 0 ] || fail "unknown patient"
ok

# ---- _lastUpdated and _since
st=$(get "$BASE/Observation?_lastUpdated=gt2100-01-01&_total=accurate")
[ "$(jget .total <"$TMP/body")" = 0 ] || fail "_lastUpdated gt future"
st=$(get "$BASE/Observation?_lastUpdated=ge2000-01-01T00:00:00Z&_total=accurate")
[ "$(jget .total <"$TMP/body")" = "$TOTAL" ] || fail "_lastUpdated ge past"
st=$(get "$BASE/Observation?_lastUpdated=lt2000&_total=accurate")
[ "$(jget .total <"$TMP/body")" = 0 ] || fail "_lastUpdated lt past"
st=$(get "$BASE/Observation?_lastUpdated=2000-13-01"); expect_outcome "$st" 400
MUT=$(curl -sS -X POST -H 'Content-Type: application/json' --data '{"update":0.3,"delete":0.05}' "$ADMIN/mutate")
[ "$(echo "$MUT" | jget .epoch)" = 1 ] || fail "mutate: $MUT"
MUT_TIME=$(echo "$MUT" | jget .time)
SINCE=$(node -e 'console.log(new Date(Date.parse(process.argv[1]) - 1000).toISOString().replace(/\.\d+Z$/, "Z"))' "$MUT_TIME")
st=$(get "$BASE/Observation?_since=$SINCE&_count=1000&_total=accurate")
changed=$(jget .total <"$TMP/body")
[ "$changed" -gt 0 ] && [ "$changed" -lt "$TOTAL" ] || fail "_since after mutate gave $changed of $TOTAL"
[ "$(jget "=>d.entry.every(e=>e.resource.meta.lastUpdated>='$MUT_TIME'.slice(0,19))" <"$TMP/body")" = true ] || fail "_since entries too old"
st=$(get "$BASE/Observation?_lastUpdated=gt$SINCE&_total=accurate")
[ "$(jget .total <"$TMP/body")" = "$changed" ] || fail "_lastUpdated=gt equals _since"
st=$(get "$BASE/Observation?_summary=count")
after=$(jget .total <"$TMP/body")
[ "$after" -lt "$TOTAL" ] || fail "deleted resources still counted ($after of $TOTAL)"
ok

# ---- _count limits, cursors, POST _search
st=$(get "$BASE/Observation?_count=5000")
[ "$st" = 200 ] && [ "$(jget '=>d.entry.length' <"$TMP/body")" -le 1000 ] || fail "_count cap"
st=$(get "$BASE/Observation?_count=abc"); expect_outcome "$st" 400
st=$(get "$BASE/Observation?_page_token=bm9wZQ"); expect_outcome "$st" 400
st=$(curl -sS -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/x-www-form-urlencoded' --data '_id=pat-5' "$BASE/Patient/_search")
[ "$st" = 200 ] && [ "$(jget '=>d.entry[0].resource.id' <"$TMP/body")" = pat-5 ] || fail "POST _search"
ok

# ---- unknown parameters: lenient by default, 400 with handling=strict
st=$(get "$BASE/Patient?_count=2&frobnicate=yes")
[ "$st" = 200 ] || fail "lenient unknown parameter: $st"
self=$(jget '=>d.link.find(l=>l.relation==="self").url' <"$TMP/body")
case "$self" in *frobnicate*) fail "self link lists the ignored parameter";; esac
st=$(get -H 'Prefer: handling=strict' "$BASE/Patient?_count=2&frobnicate=yes")
expect_outcome "$st" 400
grep -q frobnicate "$TMP/body" || fail "strict outcome does not name the parameter"
st=$(get -H 'Prefer: handling=strict' "$BASE/Patient?_count=2")
[ "$st" = 200 ] || fail "strict with known parameters: $st"
ok

# ---- the request log saw the client
curl -sS "$ADMIN/requests" >"$TMP/log"
grep -q '"client_id":"rest-all"' "$TMP/log" || fail "request log lacks the client"
grep -q '"status":403' "$TMP/log" || fail "request log lacks the 403"
ok

stop_sandbox
finish
