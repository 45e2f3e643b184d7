#!/usr/bin/env bash
# tests/integration/test_rest_client.sh: the FHIR REST client (`fhirsync get` and the library
# under it) against the sandbox EHR: reads and searches, paging through 20,000 results with
# memory that does not grow with the number of pages, exact resource bytes, --out/--limit, and
# every fault the client must survive or report clearly: 429 with Retry-After in seconds and as
# an HTTP-date, 503, a connection reset, a token expiring mid-search, a slow server hitting the
# timeout, a next link to another origin and a redirect to another origin (the sandbox's request
# log proves no token went there), malformed Bundles, a next-link loop, HTML error pages, and
# (from a small fake server) non-JSON bodies. Also runs examples/list_patients.
source "$(dirname "$0")/lib.sh"

: "${FHIRSYNC_SANDBOX_BIN:?FHIRSYNC_SANDBOX_BIN must point at fhirsync-sandbox}"
: "${FHIRSYNC_BUILD_DIR:?}"
FS=$FHIRSYNC_BIN
HERE="$FHIRSYNC_SOURCE_DIR/tests/integration"
cd "$TMP"
# nothing from the caller's environment or a fhirsync.ini may leak into the profile
KEEP='^FHIRSYNC_(BIN|SANDBOX_BIN|SOURCE_DIR|BUILD_DIR|TEST_TMP)$'
for v in $(env | grep -o '^FHIRSYNC_[A-Z_]*' | grep -vE "$KEEP"); do
    unset "$v"
done

# ---- the sandbox and a registered client ----------------------------------------------------
PATIENTS=420 # about 53 Observations each: more than 20,000 in all
"$FHIRSYNC_SANDBOX_BIN" --port 0 --ready-file "$TMP/ready.json" --patients $PATIENTS \
    >"$TMP/sandbox.log" 2>&1 &
PIDS+=($!)
wait_for_file "$TMP/ready.json"
BASE=$(json_get "$TMP/ready.json" j.base_url)
TOKEN_URL=$(json_get "$TMP/ready.json" j.token_url)
ADMIN=$(json_get "$TMP/ready.json" j.admin_url)
REGISTER=$(json_get "$TMP/ready.json" j.register_url)
STORAGE=$(json_get "$TMP/ready.json" j.storage_base_url)

"$FS" keygen --out "$TMP/keys" >/dev/null
KEY=$(ls "$TMP"/keys/*.key.pem)
# register KEYS_JWKS SCOPE: prints the client_id
register() {
    node -e 'const fs=require("fs"); console.log(JSON.stringify({jwks: JSON.parse(
             fs.readFileSync(process.argv[1], "utf8")), scope: process.argv[2]}))' "$1" "$2" \
        >"$TMP/register.json"
    curl -sf -X POST -H 'Content-Type: application/json' --data @"$TMP/register.json" \
        "$REGISTER" >"$TMP/client.json"
    json_get "$TMP/client.json" j.client_id
}
CLIENT_ID=$(register "$TMP/keys/jwks.json" 'system/*.read')
PATIENT_ONLY_ID=$(register "$TMP/keys/jwks.json" 'system/Patient.read')
export FHIRSYNC_BASE_URL=$BASE FHIRSYNC_CLIENT_ID=$CLIENT_ID FHIRSYNC_KEY_FILE=$KEY

fault() { curl -sf -X POST -H 'Content-Type: application/json' -d "$1" "$ADMIN/faults" >/dev/null; }
clear_faults() { curl -sf -X DELETE "$ADMIN/faults" >/dev/null; }
clear_log() { curl -sf -X DELETE "$ADMIN/requests" >/dev/null; }
# logged REQUEST-FILTER: how many logged requests satisfy a JS expression on `r`
logged() {
    curl -sf "$ADMIN/requests" | node -e '
        let s = ""; process.stdin.on("data", (d) => s += d).on("end", () => {
            const f = eval("(r) => " + process.argv[1]);
            console.log(s.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l))
                         .filter(f).length);
        });' "$1"
}
# ndjson_check FILE: "<lines> <distinct ids> <lines that are JSON objects with resourceType>"
ndjson_check() {
    node -e '
        const lines = require("fs").readFileSync(process.argv[1], "utf8").split("\n");
        if (lines.pop() !== "") { console.log("no final newline"); process.exit(); }
        const ids = new Set(); let good = 0;
        for (const l of lines) {
            try { const r = JSON.parse(l); ids.add(r.resourceType + "/" + r.id);
                  if (r.resourceType) good++; } catch (e) {}
        }
        console.log(lines.length, ids.size, good);' "$1"
}
lines() { wc -l <"$1" | tr -d ' '; }
out_lines() { printf '%s\n' "$OUT" | wc -l | tr -d ' '; }

# ---- reads and searches ---------------------------------------------------------------------
expect_exit 0 "read Patient/pat-1" -- "$FS" get Patient/pat-1
expect_match "$OUT" '^\{"resourceType":"Patient","id":"pat-1"' "the read prints the resource"
expect_exit 6 "read of an unknown id" -- "$FS" get Patient/no-such-patient
WANT='HTTP 404 from http://127\.0\.0\.1:[0-9]+/fhir/Patient/no-such-patient: '
WANT+='error not-found: .*no-such-patient'
expect_match "$ERR" "$WANT" \
    "a 404 shows the OperationOutcome diagnostics"
expect_exit 0 "a search prints the first page" -- "$FS" get 'Patient?_count=5'
expect_match "$OUT" '"resourceType":"Bundle"' "the search answer is the Bundle as received"
expect_exit 0 "an absolute URL on the server's origin" -- "$FS" get "$BASE/Patient/pat-2"
expect_match "$OUT" '"id":"pat-2"' "absolute same-origin URL read"
expect_exit 2 "an absolute URL on another origin is refused" -- "$FS" get "$STORAGE/fhir/Patient"
expect_match "$ERR" \
    'not on the FHIR server.s origin.*bearer token is sent only to the FHIR server' \
    "the refusal says why"
expect_exit 5 "a search outside the token's scopes" -- \
    "$FS" get --client-id "$PATIENT_ONLY_ID" --scope system/Patient.read 'Observation?_count=1'
expect_match "$ERR" 'forbidden.*HTTP 403' "403 is reported as forbidden"
expect_exit 2 "get without a path" -- "$FS" get
expect_exit 2 "--limit needs a number" -- "$FS" get --limit ten Patient

# ---- paging: 20,000 results, flat memory, exact bytes ---------------------------------------
rss() { # rss N: peak RSS in KB of fetching N Observations, 50 per page
    # under AddressSanitizer freed memory waits in a 256 MB quarantine and counts as resident:
    # a small quarantine lets the measurement see the program's own use
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=1" \
        /usr/bin/time -f %M -o "$TMP/rss" "$FS" get --limit "$1" 'Observation?_count=50' \
        >"$TMP/obs-$1.ndjson" 2>"$TMP/err-$1"
    cat "$TMP/rss"
}
if [ -x /usr/bin/time ]; then
    SMALL=$(rss 2000)
    LARGE=$(rss 20000)
    if [ "$LARGE" -lt $((SMALL * 3 / 2)) ]; then
        ok "peak memory is flat: 400 pages ${LARGE} KB vs 40 pages ${SMALL} KB"
    else
        not_ok "memory grows with pages: 400 pages ${LARGE} KB vs 40 pages ${SMALL} KB"
    fi
else
    echo "skip - no /usr/bin/time: peak memory not measured"
    "$FS" get --limit 2000 'Observation?_count=50' >"$TMP/obs-2000.ndjson"
    "$FS" get --limit 20000 'Observation?_count=50' >"$TMP/obs-20000.ndjson"
fi
expect_match "$(ndjson_check "$TMP/obs-20000.ndjson")" '^20000 20000 20000$' \
    "20,000 distinct Observations over 400 pages, one JSON object per line"
expect_match "$(ndjson_check "$TMP/obs-2000.ndjson")" '^2000 2000 2000$' "2,000 Observations"
# the line is the server's bytes: identical to the same resource read on its own
sed -n 12345p "$TMP/obs-20000.ndjson" >"$TMP/line.json"
OBS_ID=$(json_get "$TMP/line.json" j.id)
"$FS" get "Observation/$OBS_ID" >"$TMP/read.json"
if cmp -s "$TMP/line.json" "$TMP/read.json"; then ok "resource bytes are exactly the server's"
else not_ok "resource $OBS_ID differs between the search and a read"; fi

expect_exit 0 "--limit stops after N resources" -- "$FS" get --limit 7 'Observation?_count=5'
expect_match "$(out_lines)" '^7$' "--limit 7 gives 7 lines"

# ---- --out ----------------------------------------------------------------------------------
expect_exit 0 "--all --out FILE" -- \
    "$FS" get --all --out "$TMP/patients.ndjson" 'Patient?_count=100'
expect_match "$(stat -c %a "$TMP/patients.ndjson")" '^600$' "--out file has mode 0600"
expect_match "$(lines "$TMP/patients.ndjson")" "^$PATIENTS\$" "--out file has every patient"
expect_match "$ERR" "wrote $PATIENTS resources \(5 pages\)" "--out reports what it wrote"
expect_exit 13 "--out refuses an existing file" -- \
    "$FS" get --all --out "$TMP/patients.ndjson" Patient
expect_match "$ERR" 'exists; use --force' "the refusal names --force"
expect_match "$(lines "$TMP/patients.ndjson")" "^$PATIENTS\$" "the existing file is untouched"
expect_exit 0 "--force replaces it" -- \
    "$FS" get --force --limit 5 --out "$TMP/patients.ndjson" Patient
expect_match "$(lines "$TMP/patients.ndjson")" '^5$' "the replaced file holds the new data"
fault '{"fault":"next-loop","on":"search","count":0}'
expect_exit 8 "a failure with --out" -- \
    "$FS" get --all --out "$TMP/failed.ndjson" 'Patient?_count=100'
clear_faults
if [ ! -e "$TMP/failed.ndjson" ] && ! ls "$TMP"/failed.ndjson.partial-* >/dev/null 2>&1; then
    ok "a failed --out leaves no file, partial or final"
else
    not_ok "a failed --out left files: $(ls "$TMP"/failed.ndjson*)"
fi
expect_match "$ERR" \
    '100 resources had been received before the error; the partial output was removed' \
    "the failure says how much had arrived"

# ---- retries: 429 (seconds and HTTP-date), 503, reset ---------------------------------------
clear_log
fault '{"fault":"429","on":"search","retry_after":1,"count":1}'
expect_exit 0 "429 with Retry-After seconds" -- "$FS" get --all 'Patient?_count=100'
expect_match "$(out_lines)" "^$PATIENTS\$" "all patients after the 429"
expect_match "$ERR" 'HTTP 429 with Retry-After 1; retry 1 of 5 in 1\.0 s' \
    "the retry is logged with its delay"
expect_match "$(logged 'r.status === 429')" '^1$' "the sandbox answered one 429"

fault '{"fault":"429","on":"search","retry_after":2,"retry_after_date":true,"count":1}'
expect_exit 0 "429 with Retry-After as an HTTP-date" -- "$FS" get --all 'Patient?_count=100'
expect_match "$(out_lines)" "^$PATIENTS\$" "all patients after the dated 429"
WANT='HTTP 429 with Retry-After [A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9:]{8} GMT; '
WANT+='retry 1 of 5 in [12]\.0 s'
expect_match "$ERR" "$WANT" \
    "the HTTP-date is honoured"

fault '{"fault":"503","on":"search","count":1}'
expect_exit 0 "503" -- "$FS" get --all 'Patient?_count=100'
expect_match "$ERR" 'HTTP 503 .*retry 1 of 5' "the 503 is retried"

fault '{"fault":"reset","on":"search","count":1}'
expect_exit 0 "a connection reset mid-body" -- "$FS" get --all 'Patient?_count=100'
expect_match "$(out_lines)" "^$PATIENTS\$" "all patients after the reset"
expect_match "$ERR" 'network error.*retry 1 of 5' "the reset is retried"

fault '{"fault":"500-transient","on":"search","count":1}'
expect_exit 0 "500 with a transient OperationOutcome" -- "$FS" get --all 'Patient?_count=100'
expect_match "$ERR" 'HTTP 500; retry 1 of 5' "the 500 is retried"

fault '{"fault":"wrong-content-type","on":"search","count":1}'
expect_exit 0 "a Bundle sent as text/plain" -- "$FS" get --all 'Patient?_count=100'
expect_match "$(out_lines)" "^$PATIENTS\$" "every patient despite the content type"
expect_match "$ERR" "answered Content-Type 'text/plain; charset=utf-8', not FHIR JSON" \
    "the odd content type is reported"

fault '{"fault":"html","on":"search","status":502,"count":0}'
expect_exit 7 "an HTML error page, every time" -- \
    "$FS" get --all --max-retries 1 --retry-cap 1 'Patient?_count=100'
clear_faults
expect_match "$ERR" 'HTTP 502 from .*: an HTML page \(not a FHIR response\)' \
    "HTML is named, not dumped"
expect_no_match "$ERR" '<|DOCTYPE|gateway could not' "no markup in the message"
fault '{"fault":"html","on":"read","status":404,"count":1}'
expect_exit 6 "an HTML 404" -- "$FS" get Patient/pat-1

# ---- tokens ---------------------------------------------------------------------------------
# the third search request of the run finds its token expired: renewed, and the search completes
clear_log
fault '{"fault":"slow","on":"search","delay_ms":0,"count":2}'
fault '{"fault":"expire-token","on":"search","count":1}'
expect_exit 0 "a token expiring mid-search" -- "$FS" get -v --limit 500 'Observation?_count=50'
expect_match "$(out_lines)" '^500$' "the search completes with every result"
expect_match "$ERR" 'HTTP 401 .*getting a new token and trying once more' "the renewal is logged"
expect_match "$(logged 'r.method === "POST" && r.path === "/auth/token"')" '^2$' \
    "the request log shows a second token request"
expect_match "$(logged 'r.status === 401 && r.bearer')" '^1$' "exactly one 401"
clear_log
fault '{"fault":"expire-token","on":"read","count":0}'
expect_exit 5 "a token refused even after renewal" -- "$FS" get Patient/pat-1
clear_faults
expect_match "$ERR" 'unauthorized even with a new token: HTTP 401' "a second 401 is final"
expect_match "$(logged 'r.method === "POST" && r.path === "/auth/token"')" '^2$' "one renewal only"

# ---- timeouts -------------------------------------------------------------------------------
fault '{"fault":"slow","on":"read","delay_ms":3000,"count":0}'
expect_exit 9 "a slow server hitting --timeout 1" -- \
    "$FS" get --timeout 1 --max-retries 1 --retry-cap 1 Patient/pat-1
clear_faults
expect_match "$ERR" 'timed out talking to http://127\.0\.0\.1:[0-9]+/fhir/Patient/pat-1' \
    "the timeout is named"

# ---- the token stays on the FHIR server's origin -------------------------------------------
clear_log
fault '{"fault":"next-other-origin","on":"search","count":1}'
expect_exit 8 "a next link to another origin" -- "$FS" get --all 'Patient?_count=100'
WANT='next link http://localhost:[0-9]+/storage/fhir/Patient.* points to another origin; '
WANT+='not followed \(the bearer token is sent only to the FHIR server'
expect_match "$ERR" "$WANT" \
    "the foreign next link is refused"
expect_match "$(out_lines)" '^100$' "the first page was delivered"
expect_match "$(logged 'r.listener === "storage"')" '^0$' \
    "the request log: nothing reached the other origin"

# a redirect to storage, from a bulk file download (the sandbox's redirect fault)
( umask 077; printf 'Authorization: Bearer %s\n' "$("$FS" token --print-token | tail -n 1)" \
    >"$TMP/auth.hdr" )
curl -s -o /dev/null -D "$TMP/kickoff.hdr" -H @"$TMP/auth.hdr" -H 'Accept: application/fhir+json' \
    -H 'Prefer: respond-async' "$BASE/\$export?_type=Patient"
STATUS_URL=$(grep -i '^content-location:' "$TMP/kickoff.hdr" | cut -d' ' -f2 | tr -d '\r')
for _ in $(seq 1 150); do
    code=$(curl -s -o "$TMP/manifest.json" -w '%{http_code}' -H @"$TMP/auth.hdr" "$STATUS_URL")
    [ "$code" = 200 ] && break
    sleep 0.2
done
FILE_URL=$(json_get "$TMP/manifest.json" 'j.output[0].url')
clear_log
fault '{"fault":"redirect","on":"download","count":1}'
expect_exit 8 "a redirect to another origin" -- \
    "$FS" get --header 'Accept: application/fhir+ndjson' "$FILE_URL"
clear_faults
expect_match "$ERR" \
    'refused to follow a redirect from .* to another origin \(http://localhost:[0-9]+/storage/' \
    "the cross-origin redirect is refused"
expect_match "$(logged 'r.status === 307 && r.bearer && r.listener === "main"')" '^1$' \
    "the sandbox redirected the authenticated request"
expect_match "$(logged 'r.listener === "storage"')" '^0$' \
    "the request log: no token (no request) at the other origin"
rm -f "$TMP/auth.hdr"

# ---- broken paging --------------------------------------------------------------------------
fault '{"fault":"malformed-bundle","on":"search","count":1}'
expect_exit 8 "entry not an array" -- "$FS" get --all 'Patient?_count=100'
expect_match "$ERR" 'malformed search page from .*: Bundle.entry is not an array' "named clearly"
fault '{"fault":"malformed-bundle","on":"search","variant":"no-resource-type","count":1}'
expect_exit 8 "a resource without resourceType" -- "$FS" get --all 'Patient?_count=100'
expect_match "$ERR" 'Bundle.entry\[0\].resource has no resourceType' "named clearly"
fault '{"fault":"next-loop","on":"search","count":0}'
expect_exit 8 "a next link that loops" -- "$FS" get --all 'Patient?_count=100'
clear_faults
expect_match "$ERR" 'leads to a page already fetched in this search: the server.s paging loops' \
    "the loop is detected"

# ---- bodies the sandbox never sends (a small fake server) ----------------------------------
node "$HERE/rest_fake_server.mjs" "$TMP/fake.json" &
PIDS+=($!)
wait_for_file "$TMP/fake.json"
FAKE=$(json_get "$TMP/fake.json" j.base_url)
expect_exit 8 "a search page that is not JSON" -- \
    "$FS" get --base-url "$FAKE" --token-url "$TOKEN_URL" --all 'Patient?bad=text'
expect_match "$ERR" 'is not a FHIR Bundle: "Service unavailable; try later"' \
    "the start of the body is quoted"
expect_exit 8 "a truncated page" -- \
    "$FS" get --base-url "$FAKE" --token-url "$TOKEN_URL" --all 'Patient?bad=truncated'
expect_match "$ERR" 'is not a FHIR Bundle' "named clearly"
expect_exit 7 "a plain-text 502" -- \
    "$FS" get --base-url "$FAKE" --token-url "$TOKEN_URL" --max-retries 0 Plain502
expect_match "$ERR" 'HTTP 502 from .*/Plain502: "upstream connect error' "the text is quoted"
expect_exit 0 "pretty-printed pages with relative next links" -- \
    "$FS" get --base-url "$FAKE" --token-url "$TOKEN_URL" --all Observation
printf '%s\n' "$OUT" >"$TMP/fake.ndjson"
expect_match "$(ndjson_check "$TMP/fake.ndjson")" '^6 6 6$' "three pages, one line per resource"
expect_match "$(grep -c '"value": 1\.50[^0-9]' "$TMP/fake.ndjson")" '^3$' \
    "decimals keep their digits (1.50)"
expect_match "$(grep -c '"value": 0\.000120[^0-9]' "$TMP/fake.ndjson")" '^3$' \
    "decimals keep their digits (0.000120)"
# the scanner is the only check a page gets: it must refuse what a strict JSON parser refuses
expect_exit 8 "a Bundle with a repeated member name" -- \
    "$FS" get --base-url "$FAKE" --token-url "$TOKEN_URL" --all 'Patient?bad=duplicate'
expect_match "$ERR" 'malformed search page from .*: duplicate member "entry" in the Bundle' \
    "the repeated name is named"
expect_exit 8 "a Bundle that is not UTF-8" -- \
    "$FS" get --base-url "$FAKE" --token-url "$TOKEN_URL" --all 'Patient?bad=utf8'
expect_match "$ERR" 'not valid JSON: invalid UTF-8 in a string at byte 78' "where, and why"
expect_exit 0 "escaped next links; repeated names inside resources" -- \
    "$FS" get --base-url "$FAKE" --token-url "$TOKEN_URL" --all Encounter
printf '%s\n' "$OUT" >"$TMP/enc.ndjson"
expect_match "$(lines "$TMP/enc.ndjson")" '^4$' "two pages followed through an escaped next link"
WANT='"status":"planned","status":"finished","text":{"div":"<div>caf\\u00e9 \\/ \\"x\\"<\\/div>"}}$'
expect_match "$(grep -c "$WANT" "$TMP/enc.ndjson")" '^4$' \
    "resources are passed on as received, repeated names and escapes too"

# ---- the client-side rate limiter counts token requests too --------------------------------
# (reads of Patient/pat-1 slowed down by the timeout test may still be logged meanwhile: only the
# token and search requests of this run are looked at)
clear_log
expect_exit 0 "--rate-limit 30 (one request per 2 s)" -- \
    "$FS" get -v --rate-limit 30 --all 'Patient?_count=250'
expect_match "$(printf '%s\n' "$ERR" | grep -c 'rate limit: waiting')" '^2$' \
    "the token request, then two pages: two waits"
curl -sf "$ADMIN/requests" >"$TMP/requests.ndjson"
GAPS=$(node -e '
    const rs = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter((l) => l)
        .map((l) => JSON.parse(l)).filter((r) => r.path.startsWith("/auth/token") ||
                                                 r.path.startsWith("/fhir/Patient?"));
    const t = rs.map((r) => Date.parse(r.time));
    for (const r of rs) console.error(r.time, r.method, r.path, r.status);
    // The log stamps a request when it is answered, so one gap can shrink by the time the
    // server took to answer the earlier request; the limiter sends the third request at least
    // 4 s after the first, so first-to-last is at least 4 s minus the token answer time.
    console.log(rs.length, t[t.length - 1] - t[0] >= 3000);' \
    "$TMP/requests.ndjson" 2>"$TMP/gaps")
expect_match "$GAPS" '^3 true$' "token and two page requests spread over at least 4 s"
[[ "$GAPS" == "3 true" ]] || cat "$TMP/gaps"

# ---- the example ----------------------------------------------------------------------------
expect_exit 0 "examples/list_patients" -- "$FHIRSYNC_BUILD_DIR/example_list_patients" 3
expect_match "$OUT" '^pat-0 ' "the first patient is listed"
expect_match "$(printf '%s\n' "$OUT" | grep -cE 'latest observation: [0-9]{4}-')" '^3$' \
    "each patient has a latest observation"
"$FS" get --all 'Observation?patient=pat-0' >"$TMP/pat0.ndjson"
LATEST=$(node -e '
    const d = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter((l) => l)
        .map((l) => JSON.parse(l).effectiveDateTime).filter((x) => x).sort();
    console.log(d[d.length - 1]);' "$TMP/pat0.ndjson")
if printf '%s\n' "$OUT" | sed -n 2p | grep -cF "latest observation: $LATEST " >/dev/null; then
    ok "the latest observation is the one with the latest effectiveDateTime ($LATEST)"
else
    not_ok "the example's latest observation of pat-0 is not $LATEST: $(sed -n 2p <<<"$OUT")"
fi

finish
