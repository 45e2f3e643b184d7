#!/usr/bin/env bash
# integration/test_sandbox_practices.sh: the sandbox's several practices on one port (--practices
# N, docs/sandbox.md "Several practices"). Usage errors; the ready file's list and templates; each
# practice's own data (sizes from the documented split, practice i = the single base with seed
# S + i and its size, so no two practices serve the same data), discovery pointing at its own
# token endpoint, clients registered per practice (--clients "practice", the register endpoint)
# whose tokens work at their practice only; a per-practice rate limit (429 + Retry-After at that
# practice only, the others unaffected) and its counters in /admin/practices; quirks per practice
# (--practice-quirk and POST /practice/{i}/admin/quirks); the request log per practice; a real
# `fhirsync sync` of two practices into a store each, equal to its practice before and after a
# change to one of them; 500 practices start quickly and small; a clean stop.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/sync_lib.sh"
cd "$TMP"

# http_code METHOD URL [curl args...]: the status only
http_code() {
    local method=$1 url=$2
    shift 2
    curl -sS -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' -X "$method" "$@" "$url"
}
# token URL ID SECRET: an access token by client_secret_basic ("" when refused)
token() {
    curl -sS -u "$2:$3" --data grant_type=client_credentials "$1" |
        jget '=>d.access_token || ""'
}
admin_post() { # URL JSON
    curl -sS --fail-with-body -X POST -H 'Content-Type: application/json' --data "$2" "$1"
}

# ---- usage errors (exit 2) -----------------------------------------------------------------------
for args in "--rate-limit 10" "--practice-quirk 1:no-deleted" "--practices 0" "--practices 10001" \
    "--practices 5 --patients 3" "--practices 2 --practice-skew -1" "--practices 2 --practice-skew x" \
    "--practices 2 --data $TMP" "--practices 2 --practice-quirk 3:no-deleted" \
    "--practices 2 --practice-quirk no-deleted" "--practices 2 --practice-quirk 1:no-such-quirk"; do
    # shellcheck disable=SC2086
    expect_exit 2 "fhirsync-sandbox $args is a usage error" -- "$FHIRSYNC_SANDBOX_BIN" $args
done
expect_match "$ERR" 'unknown quirk' "--practice-quirk checks the quirk's name"
"$FHIRSYNC_SANDBOX_BIN" --help >"$TMP/help"
for opt in --practices --practice-skew --rate-limit --practice-quirk; do
    grep -q -- "$opt" "$TMP/help" && ok || not_ok "--help does not mention $opt"
done

# ---- practice i serves what a single base with seed S + i and its size serves -------------------
start_sandbox --seed 9 --patients 14
SINGLE_SUMMARY=$(curl -sS --fail-with-body "$ADMIN_URL/state?summary=1")
stop_sandbox

# ---- four practices ------------------------------------------------------------------------------
mkdir -p "$TMP/keys"
"$FHIRSYNC_BIN" keygen --alg RS384 --out "$TMP/keys" --name sync >/dev/null
cat >"$TMP/clients.json" <<'EOF'
{"clients": [
  {"client_id": "c3", "client_secret": "secret-3", "practice": 3},
  {"client_id": "c12", "client_secret": "secret-12", "practice": [1, 2]},
  {"client_id": "everywhere", "client_secret": "secret-all"}
]}
EOF
start_sandbox --practices 4 --patients 60 --seed 7 --clients "$TMP/clients.json" \
    --practice-quirk 2:capability-fewer-types --work-dir "$TMP/work"
READY=$SANDBOX_DIR/ready.json
ROOT_ADMIN=$(json_get "$READY" j.admin_url)
ORIGIN=${ROOT_ADMIN%/admin}
expect_match "$(json_get "$READY" j.practice_count)" '^4$' "the ready file counts the practices"
expect_match "$(json_get "$READY" j.base_url_template)" "^$ORIGIN/practice/\\{i\\}/fhir\$" \
    "the ready file has the base URL template"
expect_match "$(json_get "$READY" 'j.practices.map((p, k) => p.practice === k + 1 &&
        p.base_url === j.base_url_template.replace("{i}", p.practice) &&
        p.token_url === j.token_url_template.replace("{i}", p.practice) &&
        p.admin_url === j.admin_url_template.replace("{i}", p.practice)).every(Boolean)')" '^true$' \
    "each practice's URLs in the ready file follow the templates"
json_get "$READY" 'j.base_url === undefined' | grep -q true && ok "no single base_url in practice mode" ||
    not_ok "the ready file names a single base_url"
base() { json_get "$READY" "j.practices[$1 - 1].base_url"; }
tokurl() { json_get "$READY" "j.practices[$1 - 1].token_url"; }
padmin() { json_get "$READY" "j.practices[$1 - 1].admin_url"; }

# sizes: the split of gen.h (60 patients, skew 1): 1 + 56 * (1, 1/2, 1/3, 1/4) / 2.083 -> 28, 14, 10, 8
PRACTICES=$(curl -sS --fail-with-body "$ROOT_ADMIN/practices")
expect_match "$(jget '=>d.practices.map(p => p.patients).join(",")' <<<"$PRACTICES")" '^28,14,10,8$' \
    "patients split as documented (a few large, many small)"
expect_match "$(jget '=>d.practices.map(p => p.seed).join(",")' <<<"$PRACTICES")" '^8,9,10,11$' \
    "practice i's seed is the --seed plus i"
expect_match "$(jget '=>[d.count, d.patients, d.skew].join(",")' <<<"$PRACTICES")" '^4,60,1$' \
    "the summary names the count, the total and the skew"
expect_match "$(jget '=>d.totals.resources === d.practices.reduce((s, p) => s + p.resources, 0) &&
        d.practices[0].resources > d.practices[3].resources' <<<"$PRACTICES")" '^true$' \
    "resources per practice and their total"
expect_match "$(json_get "$READY" 'j.practices.map(p => p.patients).join(",")')" '^28,14,10,8$' \
    "the ready file lists the sizes too"

# ---- isolation of the data -------------------------------------------------------------------------
S1=$(curl -sS --fail-with-body "$(padmin 1)/state?summary=1")
S2=$(curl -sS --fail-with-body "$(padmin 2)/state?summary=1")
[ "$S2" = "$SINGLE_SUMMARY" ] && ok "practice 2 serves what --seed 9 --patients 14 serves" ||
    not_ok "practice 2 differs from the single base with its seed and size"
[ "$S1" != "$S2" ] && ok "practice 1's data differs from practice 2's" || not_ok "practices 1 and 2 serve the same data"
expect_match "$(jget '=>d.types.Patient.count' <<<"$S1"),$(jget '=>d.types.Patient.count' <<<"$S2")" \
    '^28,14$' "each practice serves its own number of patients"

# ---- discovery points at the practice's own endpoints ---------------------------------------------
CONF=$(curl -sS --fail-with-body "$(base 3)/.well-known/smart-configuration")
expect_match "$(jget .token_endpoint <<<"$CONF")" "^$(tokurl 3)\$" "practice 3's discovery names its token endpoint"
expect_match "$(jget .issuer <<<"$CONF")" "^$ORIGIN/practice/3\$" "practice 3's issuer is its own"
expect_match "$(jget .registration_endpoint <<<"$CONF")" "^$ORIGIN/practice/3/auth/register\$" \
    "practice 3's registration endpoint is its own"
META=$(curl -sS --fail-with-body "$(base 4)/metadata")
expect_match "$META" "\"valueUri\":\"$(tokurl 4)\"" "practice 4's CapabilityStatement names its token endpoint"
expect_match "$(curl -sS "$(base 1)/Patient" -o /dev/null -w '%{http_code}')" '^401$' \
    "a practice's data needs a token"
expect_match "$(http_code GET "$ORIGIN/fhir/metadata")" '^404$' "no single base in practice mode"
expect_match "$(cat "$TMP/body")" 'practices 1\.\.4' "the root's 404 says where the practices are"
expect_match "$(http_code GET "$ORIGIN/practice/5/fhir/metadata")" '^404$' "practice 5 does not exist"
expect_match "$(http_code GET "$ORIGIN/practice/01/fhir/metadata")" '^404$' "practice numbers are canonical"

# ---- clients and tokens belong to a practice ------------------------------------------------------
T3=$(token "$(tokurl 3)" c3 secret-3)
[ -n "$T3" ] && ok "c3 gets a token at practice 3" || not_ok "c3 got no token at practice 3"
expect_match "$(http_code POST "$(tokurl 4)" -u c3:secret-3 --data grant_type=client_credentials)" '^401$' \
    "c3 (registered with practice 3) is unknown at practice 4"
expect_match "$(cat "$TMP/body")" 'unknown client_id c3' "practice 4 says why"
expect_match "$(http_code GET "$(base 3)/Patient?_count=1" -H "Authorization: Bearer $T3")" '^200$' \
    "practice 3's token reads practice 3"
expect_match "$(http_code GET "$(base 4)/Patient?_count=1" -H "Authorization: Bearer $T3")" '^401$' \
    "practice 3's token is refused by practice 4"
T1=$(token "$(tokurl 1)" c12 secret-12)
T2=$(token "$(tokurl 2)" c12 secret-12)
[ -n "$T1" ] && [ -n "$T2" ] && ok "a client listed for practices 1 and 2 gets tokens at both" ||
    not_ok "c12 tokens: '$T1' '$T2'"
expect_match "$(http_code POST "$(tokurl 3)" -u c12:secret-12 --data grant_type=client_credentials)" \
    '^401$' "...and none at practice 3"
expect_match "$(http_code GET "$(base 2)/Patient?_count=1" -H "Authorization: Bearer $T1")" '^401$' \
    "the same client's practice 1 token is refused by practice 2"
T4=$(token "$(tokurl 4)" everywhere secret-all)
[ -n "$T4" ] && [ -n "$(token "$(tokurl 1)" everywhere secret-all)" ] &&
    ok "a client without \"practice\" is registered with every practice" || not_ok "everywhere: no token"
# the register endpoint of one practice registers there only
REG=$(printf '{"client_id":"sync-test","scope":"system/*.read","jwks":%s}' "$(cat "$TMP/keys/jwks.json")")
for i in 1 2; do
    expect_match "$(http_code POST "$ORIGIN/practice/$i/auth/register" -H 'Content-Type: application/json' \
        --data "$REG")" '^201$' "sync-test registers with practice $i"
done
CLIENTS=$(curl -sS "$ROOT_ADMIN/practices" | jget '=>d.practices.map(p => p.clients).join(",")')
expect_match "$CLIENTS" '^3,3,2,1$' "registered clients per practice (c12 + everywhere + sync-test; c3 + everywhere; everywhere)"
TOKENS=$(curl -sS "$ROOT_ADMIN/practices" | jget '=>d.practices.map(p => p.tokens_issued + "/" + p.token_requests).join(",")')
expect_match "$TOKENS" '^2/2,1/1,1/2,1/2$' "tokens issued / token requests per practice"

# ---- the rate limit of one practice ---------------------------------------------------------------
curl -sS -X DELETE "$ROOT_ADMIN/practices" >/dev/null
expect_match "$(http_code POST "$ROOT_ADMIN/practices/3" -H 'Content-Type: application/json' \
    --data '{"rate_limit": -1}')" '^400$' "a negative rate limit is refused"
expect_match "$(admin_post "$ROOT_ADMIN/practices/3" '{"rate_limit": 5}' | jget .rate_limit)" '^5$' \
    "practice 3's limit set to 5 requests a minute"
# The limit counts per wall-clock minute: the next checks take well under a second, so they start
# in a minute's first 50 seconds to see one window only (this waits at most 10 s, not for an event).
while [ "$(date +%S | sed 's/^0//')" -ge 50 ]; do sleep 1; done
CODES=""
for _ in $(seq 6); do
    CODES+="$(http_code GET "$(base 3)/Patient?_count=1" -H "Authorization: Bearer $T3") "
done
expect_match "$CODES" '^(200 ){5}429 $' "practice 3 answers 429 beyond its limit of 5"
RA=$(tr -d '\r' <"$TMP/headers" | sed -n 's/^[Rr]etry-[Aa]fter: //p')
[ -n "$RA" ] && [ "$RA" -ge 1 ] && [ "$RA" -le 60 ] && ok "with Retry-After $RA (to the next minute)" ||
    not_ok "Retry-After '$RA'"
expect_match "$(cat "$TMP/body")" '"code":"throttled".*practice 3 allows 5 requests per minute' \
    "the 429 is an OperationOutcome naming the limit"
expect_match "$(http_code POST "$(tokurl 3)" -u c3:secret-3 --data grant_type=client_credentials)" '^429$' \
    "the token endpoint is within the limit too"
expect_match "$(cat "$TMP/body")" '"error":"temporarily_unavailable"' "...answered as an OAuth error"
OTHER=""
for _ in $(seq 8); do
    OTHER+="$(http_code GET "$(base 4)/Patient?_count=1" -H "Authorization: Bearer $T4") "
done
expect_no_match "$OTHER" '429' "practice 4 is not throttled by practice 3's limit"
# html-429 on practice 3 only: its throttled answers become HTML
admin_post "$(padmin 3)/quirks" '{"quirk":"html-429"}' >/dev/null
expect_match "$(http_code GET "$(base 3)/Patient?_count=1" -H "Authorization: Bearer $T3")" '^429$' \
    "still throttled"
expect_match "$(cat "$TMP/body")" '<title>429 Too Many Requests</title>' "practice 3's html-429 quirk applies to its limit"
P=$(curl -sS "$ROOT_ADMIN/practices/3")
expect_match "$(jget '=>[d.requests, d.token_requests, d.status_429, d.rate_limited, d.max_requests_per_60s].join(",")' <<<"$P")" \
    '^8,1,3,3,8$' \
    "practice 3's counters: requests, token requests, 429s, refused by the limit, busiest 60 s"
expect_match "$(jget '=>d.max_requests_per_minute > d.rate_limit' <<<"$P")" '^true$' \
    "the busiest minute shows the client went over the limit"
P4=$(curl -sS "$ROOT_ADMIN/practices/4")
expect_match "$(jget '=>[d.requests, d.status_429, d.rate_limit].join(",")' <<<"$P4")" '^8,0,0$' \
    "practice 4's counters are its own"
grep -o '"practice":[0-9]*' <<<"$(curl -sS "$(padmin 3)/requests")" | sort -u | tr '\n' ' ' >"$TMP/pl"
expect_match "$(cat "$TMP/pl")" '^"practice":3 $' "practice 3's request log holds its requests only"
expect_match "$(curl -sS "$ROOT_ADMIN/requests?practice=3" | tail -1)" '"fault":"practice-rate-limit".*"practice":3' \
    "the log marks a refusal by the limit"
admin_post "$ROOT_ADMIN/practices/3" '{"rate_limit": 0}' >/dev/null
curl -sS -X DELETE "$(padmin 3)/quirks" >/dev/null
expect_match "$(curl -sS -X DELETE "$ROOT_ADMIN/practices/3" | jget .reset)" '^1$' "one practice's counters reset"
expect_match "$(curl -sS "$ROOT_ADMIN/practices/3" | jget .requests)" '^0$' "...to zero"
expect_match "$(admin_post "$ROOT_ADMIN/practices" '{"rate_limit": 1000}' | jget .updated)" '^4$' \
    "one limit for every practice"
admin_post "$ROOT_ADMIN/practices" '{"rate_limit": 0}' >/dev/null

# ---- quirks per practice ------------------------------------------------------------------------------
C1=$(curl -sS "$(base 1)/metadata")
C2=$(curl -sS "$(base 2)/metadata")
expect_match "$C1" '"type":"Immunization"' "practice 1's CapabilityStatement lists Immunization"
expect_no_match "$C2" '"type":"Immunization"' "practice 2's (--practice-quirk 2:capability-fewer-types) does not"
expect_match "$(curl -sS "$(padmin 2)/quirks" | jget '=>d.quirks.map(q => q.quirk).join(",")')" \
    '^capability-fewer-types$' "practice 2 lists its quirk"
expect_match "$(curl -sS "$(padmin 1)/quirks" | jget '=>d.quirks.length')" '^0$' "practice 1 has none"
admin_post "$(padmin 4)/quirks" '{"quirk":"echo-token-in-errors"}' >/dev/null
expect_match "$(curl -sS -H "Authorization: Bearer $T4" "$(base 4)/Patient/no-such")" "token $T4 was rejected" \
    "a quirk added at practice 4's admin API applies there"
expect_no_match "$(curl -sS -H "Authorization: Bearer $T1" "$(base 1)/Patient/no-such")" 'was rejected' \
    "...and not at practice 1"

# ---- fhirsync sync: two practices, a store each --------------------------------------------------------
{
    for i in 1 2; do
        printf '[endpoint practice-%s]\nbase_url  = %s\nclient_id = sync-test\nkey_file  = %s\nalg       = RS384\nstore     = %s\n\n' \
            "$i" "$(base "$i")" "$TMP/keys/sync.key.pem" "$TMP/practice-$i.db"
    done
} >"$TMP/fhirsync.ini"
export FHIRSYNC_CONFIG=$TMP/fhirsync.ini
curl -sS -X DELETE "$ROOT_ADMIN/practices" >/dev/null
expect_exit 0 "fhirsync sync of practices 1 and 2" -- "$F" sync --no-progress
ADMIN_URL=$(padmin 1) store_equals_server "$TMP/practice-1.db" "practice 1's store equals practice 1"
ADMIN_URL=$(padmin 2) store_equals_server "$TMP/practice-2.db" "practice 2's store equals practice 2"
P=$(curl -sS "$ROOT_ADMIN/practices")
expect_match "$(jget '=>d.practices.map(p => p.tokens_issued).join(",")' <<<"$P")" '^1,1,0,0$' \
    "one token per synced practice, none elsewhere"
expect_match "$(jget '=>d.practices.map(p => p.requests > 0).join(",")' <<<"$P")" '^true,true,false,false$' \
    "only the synced practices were asked"
# a change at practice 1 only: the increment brings it, practice 2's store stays equal
admin_post "$(padmin 1)/mutate" '{"update":0.1,"delete":0.05}' >/dev/null
expect_match "$(curl -sS "$(padmin 2)/mutate" | jget .epoch)" '^0$' "a mutation at practice 1 leaves practice 2 alone"
expect_exit 0 "incremental sync" -- "$F" sync --no-progress
ADMIN_URL=$(padmin 1) store_equals_server "$TMP/practice-1.db" "practice 1's store follows its change"
ADMIN_URL=$(padmin 2) store_equals_server "$TMP/practice-2.db" "practice 2's store still equals practice 2"
unset FHIRSYNC_CONFIG

stop_sandbox
[ -z "$(ls -A "$TMP/work")" ] && ok "the practices' export folders are removed at the stop" ||
    not_ok "left in the work dir: $(ls "$TMP/work" | head -5)"

# ---- 500 practices start quickly and small ---------------------------------------------------------------
START=$(date +%s%N)
start_sandbox --practices 500 --patients 10000
READY_MS=$((($(date +%s%N) - START) / 1000000))
RSS_KB=$(awk '/^VmRSS/ {print $2}' "/proc/$SANDBOX_PID/status")
echo "# 500 practices, 10,000 patients: ready in $READY_MS ms, RSS $((RSS_KB / 1024)) MB"
[ "$RSS_KB" -lt $((256 * 1024)) ] && ok "500 practices fit in $((RSS_KB / 1024)) MB" ||
    not_ok "500 practices take $((RSS_KB / 1024)) MB"
P=$(curl -sS "$(json_get "$SANDBOX_DIR/ready.json" j.admin_url)/practices")
expect_match "$(jget '=>[d.count, d.practices.reduce((s, p) => s + p.patients, 0), d.practices[0].patients > 1000,
        d.practices[499].patients < 10].join(",")' <<<"$P")" '^500,10000,true,true$' \
    "500 practices share 10,000 patients, the first large and the last small"
LAST=$(json_get "$SANDBOX_DIR/ready.json" j.practices[499].base_url)
expect_match "$(curl -sS "$LAST/metadata" | jget .resourceType)" '^CapabilityStatement$' "practice 500 answers"
stop_sandbox
finish
