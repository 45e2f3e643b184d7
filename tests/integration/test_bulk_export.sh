#!/usr/bin/env bash
# tests/integration/test_bulk_export.sh: `fhirsync export` (the Bulk Data client) against the
# sandbox EHR: system, Patient and Group levels with GET and POST; every fault the sandbox injects
# on kick-off, status polls and downloads (429 with Retry-After in seconds and as an HTTP-date,
# 503, 500 transient, HTML error pages, connection resets mid-file, truncated last lines, wrong
# content types, tokens expiring mid-export, redirects of files to another origin); kill -9 in the
# middle of the downloads, then resume: the same resources as an uninterrupted export, none
# duplicated; _since after /admin/mutate (deleted outputs); DELETE of the job and --keep-job; the
# folder rules (resume, a different request refused). A small fake server (bulk_fake_server.mjs)
# covers what the sandbox never does: a 202 without Content-Location, a fatal OperationOutcome,
# manifest paging with relative URLs, wrong resourceTypes, broken lines and count mismatches.
source "$(dirname "$0")/lib.sh"

: "${FHIRSYNC_SANDBOX_BIN:?FHIRSYNC_SANDBOX_BIN must point at fhirsync-sandbox}"
FS=$FHIRSYNC_BIN
HERE="$FHIRSYNC_SOURCE_DIR/tests/integration"
cd "$TMP"
clean_fhirsync_env

# ---- the sandbox and a registered client ----------------------------------------------------
"$FHIRSYNC_SANDBOX_BIN" --port 0 --ready-file "$TMP/ready.json" --patients 40 --seed 3 \
    --resources-per-file 400 --retry-after 0 >"$TMP/sandbox.log" 2>&1 &
PIDS+=($!)
wait_for_file "$TMP/ready.json"
BASE=$(json_get "$TMP/ready.json" j.base_url)
TOKEN_URL=$(json_get "$TMP/ready.json" j.token_url)
ADMIN=$(json_get "$TMP/ready.json" j.admin_url)
REGISTER=$(json_get "$TMP/ready.json" j.register_url)

"$FS" keygen --out "$TMP/keys" >/dev/null
KEY=$(ls "$TMP"/keys/*.key.pem)
node -e 'const fs=require("fs"); console.log(JSON.stringify({jwks: JSON.parse(
         fs.readFileSync(process.argv[1], "utf8")), scope: "system/*.read"}))' \
    "$TMP/keys/jwks.json" >"$TMP/register.json"
curl -sf -X POST -H 'Content-Type: application/json' --data @"$TMP/register.json" "$REGISTER" \
    >"$TMP/client.json"
CLIENT_ID=$(json_get "$TMP/client.json" j.client_id)
export FHIRSYNC_BASE_URL=$BASE FHIRSYNC_CLIENT_ID=$CLIENT_ID FHIRSYNC_KEY_FILE=$KEY
export FHIRSYNC_RETRY_CAP=2 # keep backoffs short

fault() { curl -sf -X POST -H 'Content-Type: application/json' -d "$1" "$ADMIN/faults" >/dev/null; }
clear_faults() { curl -sf -X DELETE "$ADMIN/faults" >/dev/null; }
clear_log() { curl -sf -X DELETE "$ADMIN/requests" >/dev/null; }
# logged FILTER: how many logged requests satisfy a JS expression on `r`
logged() {
    curl -sf "$ADMIN/requests" | node -e '
        let s = ""; process.stdin.on("data", (d) => s += d).on("end", () => {
            const f = eval("(r) => " + process.argv[1]);
            console.log(s.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l))
                         .filter(f).length);
        });' "$1"
}
# ids DIR [SUBDIR]: sorted "Type/id" of every resource in the folder's NDJSON files, one a line;
# prints "BAD ..." for a line that is not a resource or a file without a final newline
ids() {
    node -e '
        const fs = require("fs"), path = require("path");
        const dir = path.join(process.argv[1], process.argv[2] || "");
        const out = [];
        for (const f of fs.readdirSync(dir).filter((f) => f.endsWith(".ndjson")).sort()) {
            if (f === "log.ndjson") out.push("BAD the log is a *.ndjson");
            const text = fs.readFileSync(path.join(dir, f), "utf8");
            if (text.length && !text.endsWith("\n")) out.push("BAD no final newline in " + f);
            for (const l of text.split("\n").filter((l) => l.length)) {
                try { const r = JSON.parse(l); out.push(r.resourceType + "/" + r.id); }
                catch (e) { out.push("BAD " + f); }
            }
        }
        console.log(out.sort().join("\n"));' "$1" "${2:-}"
}
dups() { sort | uniq -d | wc -l | tr -d ' '; }
# same_ids DIR DESCRIPTION: the folder holds exactly the baseline's resources, none twice
same_ids() {
    ids "$1" >"$TMP/ids.now"
    if cmp -s "$TMP/ids.now" "$TMP/ids.base"; then ok "$2: same resources as the baseline"; else
        not_ok "$2: resources differ from the baseline: $(diff "$TMP/ids.base" "$TMP/ids.now" | head -5)"; fi
    local d
    d=$(dups <"$TMP/ids.now")
    [ "$d" = 0 ] && ok "$2: no resource twice" || not_ok "$2: $d duplicated resources"
}
events() { grep -c "\"event\":\"$2\"" "$1/export-log.jsonl" || true; }
export_ok() { # DIR DESCRIPTION [flags...]: an export that must succeed with the baseline's data
    local dir=$1 what=$2
    shift 2
    expect_exit 0 "$what" -- "$FS" export --out "$dir" --level system --no-progress "$@"
    same_ids "$dir" "$what"
    clear_faults
}

# ---- baseline: system level, GET ------------------------------------------------------------
clear_log
expect_exit 0 "system-level export" -- "$FS" export --out base --level system --no-progress
ids base >"$TMP/ids.base"
N=$(wc -l <"$TMP/ids.base" | tr -d ' ')
[ "$N" -gt 2000 ] && ok "baseline has $N resources" || not_ok "baseline has only $N resources"
expect_no_match "$(cat "$TMP/ids.base")" '^BAD' "every baseline line is a resource"
[ "$(dups <"$TMP/ids.base")" = 0 ] && ok "baseline: no duplicates" || not_ok "baseline duplicates"
expect_match "$OUT" 'export complete: base' "the summary names the folder"
expect_match "$OUT" 'Observation +[0-9]+' "the summary counts resources per type"
expect_match "$OUT" 'job: +deleted on the server' "the summary says the job was deleted"
FILES=$(ls base/*.ndjson | wc -l)
[ "$FILES" -gt 13 ] && ok "several files per type ($FILES)" || not_ok "only $FILES files"
[ "$(stat -c %a base)" = 700 ] && ok "folder is 0700" || not_ok "folder mode $(stat -c %a base)"
[ -z "$(find base -type f ! -perm 600)" ] && ok "every file is 0600" || not_ok "files not 0600: $(find base -type f ! -perm 600)"
[ ! -e base/.partial ] && ok "no partial files left" || not_ok ".partial left behind"
[ -s base/manifest.json ] && ok "manifest.json saved" || not_ok "no manifest.json"
[ "$(json_get base/state.json j.complete)" = true ] && ok "state.json says complete" || not_ok "state not complete"
for ev in kick-off manifest file-done done job-deleted; do
    [ "$(events base $ev)" -ge 1 ] && ok "the log has $ev" || not_ok "the log lacks $ev"
done
[ "$(logged 'r.method==="DELETE" && r.path.includes("/bulkstatus/")')" = 1 ] &&
    ok "the job was DELETEd on the server" || not_ok "no DELETE of the job"
[ "$(logged 'r.path.includes("/bulkfiles/") && !r.bearer')" = 0 ] &&
    ok "file downloads carried the token (requiresAccessToken true)" || not_ok "a download without the token"
TT=$(json_get base/state.json j.transaction_time)

# ---- folder rules ---------------------------------------------------------------------------
expect_exit 0 "the same command on a finished folder" -- "$FS" export --out base --level system --no-progress
expect_match "$ERR" 'done by an earlier run' "nothing is downloaded again"
expect_exit 2 "a different request into the same folder" -- "$FS" export --out base --type Patient
expect_match "$ERR" 'another request.*--resume' "the refusal says what to do"
mkdir junk && echo x >junk/file
expect_exit 2 "a non-empty folder without an export" -- "$FS" export --out junk
expect_match "$ERR" 'not empty and holds no fhirsync export' "the refusal says why"
expect_exit 2 "export without --out" -- "$FS" export
expect_exit 2 "--patient without --post" -- "$FS" export --out p0 --level patient --patient pat-1
expect_exit 2 "a group export without a group id" -- "$FS" export --out g0 --level group
expect_exit 0 "export --help" -- "$FS" export --help
expect_match "$OUT" 'resume' "the help explains resuming"

# ---- --keep-job -----------------------------------------------------------------------------
clear_log
expect_exit 0 "--keep-job" -- "$FS" export --out keep --keep-job --type Patient --no-progress
expect_match "$OUT" 'kept on the server: http' "the summary shows the kept job's status URL"
[ "$(logged 'r.method==="DELETE"')" = 0 ] && ok "--keep-job sent no DELETE" || not_ok "--keep-job deleted the job"

# ---- levels, GET and POST -------------------------------------------------------------------
expect_exit 0 "Patient level, GET, two types" -- "$FS" export --out pat --level patient --type Patient,Condition --no-progress
T=$(ls pat | grep -E '^[A-Za-z]+\.[0-9]+\.ndjson$' | cut -d. -f1 | sort -u | tr '\n' ' ')
[ "$T" = "Condition Patient " ] && ok "only the requested types" || not_ok "types: $T"
[ "$(ids pat | grep -c '^Patient/')" = "$(grep -c '^Patient/' "$TMP/ids.base")" ] &&
    ok "every patient exported" || not_ok "patients missing at Patient level"
GROUP=$(node -e 'const l=require("fs").readFileSync("base/Group.1.ndjson","utf8").split("\n")[0];
                 console.log(JSON.parse(l).id)')
expect_exit 0 "Group level, GET" -- "$FS" export --out grp --group "$GROUP" --type Patient --no-progress
GN=$(ids grp | grep -c '^Patient/' || true)
[ "$GN" -gt 0 ] && [ "$GN" -le 40 ] && ok "group export has the group's $GN patients" || not_ok "group export has $GN patients"
expect_exit 0 "Group level, POST" -- "$FS" export --out grp-post --group "$GROUP" --type Patient --post --no-progress
[ "$(ids grp-post)" = "$(ids grp)" ] && ok "POST gives what GET gives" || not_ok "POST and GET differ"
# the default level is sync's rule (fhirsync_export_level_chain): Group with group_id, else Patient
clear_log
expect_exit 0 "group_id in the profile, no --level" -- env FHIRSYNC_GROUP_ID="$GROUP" "$FS" export --out grp-profile --type Patient --no-progress
KICK=$(curl -sf "$ADMIN/requests" | grep -F '$export' | head -1)
[[ "$KICK" == *"/Group/$GROUP/\$export"* ]] &&
    ok "export with group_id set kicks off at Group level, as sync does" || not_ok "kick-off: $KICK"
[ "$(ids grp-profile)" = "$(ids grp)" ] && ok "the profile's group gives the --group export" || not_ok "group_id export differs"
clear_log
expect_exit 0 "no group_id, no --level" -- "$FS" export --out pat-default --type Patient --no-progress
KICK=$(curl -sf "$ADMIN/requests" | grep -F '$export' | head -1)
[[ "$KICK" == *"/Patient/\$export"* ]] &&
    ok "export without group_id kicks off at Patient level, as sync does" || not_ok "kick-off: $KICK"
expect_match "$("$FS" export --help)" 'group when the profile sets group_id' "--help states the default level"
FIRST=$(ids grp | head -1 | cut -d/ -f2)
expect_exit 0 "Patient level, POST with a patient" -- "$FS" export --out one --level patient --post --patient "$FIRST" --type Patient --no-progress
[ "$(ids one)" = "Patient/$FIRST" ] && ok "the patient parameter limits the export" || not_ok "patient parameter: $(ids one | head -3)"
expect_exit 0 "system level, POST, lenient, custom parameter" -- "$FS" export --out post --level system --post --lenient --param _foo=bar --type Patient --no-progress
[ "$(ids post | wc -l)" = 40 ] && ok "POST system export" || not_ok "POST system export: $(ids post | wc -l)"

# ---- kick-off faults ------------------------------------------------------------------------
fault '{"fault":"429","on":"kickoff","count":1,"retry_after":1}'
expect_exit 0 "429 at kick-off once, retried" -- "$FS" export --out k429 --type Patient --no-progress
clear_faults
fault '{"fault":"429","on":"kickoff","count":0,"retry_after":1}'
expect_exit 7 "429 at kick-off every time" -- "$FS" export --out k429b --type Patient --max-retries 1 --no-progress
expect_match "$ERR" 'refused the kick-off as rate limited \(HTTP 429\).*too many requests' "429 at kick-off is explained with what the server said"
expect_no_match "$ERR" 'already running' "a throttling 429 is not called a running export"
clear_faults
fault '{"fault":"503","on":"kickoff","count":1,"retry_after":1}'
expect_exit 0 "503 at kick-off once" -- "$FS" export --out k503 --type Patient --no-progress
clear_faults
fault '{"fault":"html","on":"kickoff","count":0,"status":500}'
expect_exit 7 "an HTML error page at kick-off" -- "$FS" export --out khtml --type Patient --max-retries 0 --no-progress
expect_match "$ERR" 'HTML' "the HTML page is named, not printed"
clear_faults

# ---- status faults --------------------------------------------------------------------------
fault '{"fault":"429","on":"status","count":2,"retry_after":1}'
export_ok s429 "429 on status polls (Retry-After seconds)"
expect_match "$ERR" 'retry: status poll: HTTP 429' "the retry is reported"
fault '{"fault":"503","on":"status","count":1,"retry_after":1,"retry_after_date":true}'
export_ok s503 "503 on a status poll (Retry-After HTTP-date)"
fault '{"fault":"500-transient","on":"status","count":3}'
export_ok stransient "500 transient OperationOutcomes on status polls"
expect_match "$ERR" 'transient' "transient outcomes keep the polling going"
fault '{"fault":"html","on":"status","count":1,"status":502}'
export_ok shtml "an HTML 502 page on a status poll"

# ---- download faults ------------------------------------------------------------------------
fault '{"fault":"reset","on":"download","count":3,"after_bytes":30000}'
export_ok dreset "connections reset mid-file (resumed with Range)"
[ "$(grep -c 'resuming at byte' dreset/export-log.jsonl)" -ge 1 ] && ok "downloads resumed where they stopped" ||
    not_ok "no Range resume in the log"
fault '{"fault":"truncate","on":"download","count":1}'
export_ok dtrunc "a truncated last line once (downloaded again)"
expect_match "$ERR" 'truncated last line.*downloading the file again' "the truncated line is reported"
fault '{"fault":"429","on":"download","count":2,"retry_after":1}'
export_ok d429 "429 on downloads"
fault '{"fault":"503","on":"download","count":2,"retry_after":1,"retry_after_date":true}'
export_ok d503 "503 with an HTTP-date on downloads"
fault '{"fault":"500-transient","on":"download","count":2}'
export_ok d500 "500 transient on downloads"
fault '{"fault":"html","on":"download","count":1,"status":500}'
export_ok dhtml "an HTML error page instead of a file"
fault '{"fault":"wrong-content-type","on":"download","count":1}'
export_ok dctype "a wrong Content-Type on a file"
expect_match "$ERR" 'Content-Type is "text/plain' "the wrong content type is reported"
fault '{"fault":"slow","on":"download","count":2,"delay_ms":300}'
export_ok dslow "slow file downloads"
fault '{"fault":"expire-token","on":"download","count":1}'
export_ok dexpire "the token expires during the downloads"
[ "$(events dexpire token-renewed)" -ge 1 ] && ok "the token was renewed" || not_ok "no token-renewed event"

# a truncated file every time: the good lines are kept, the bad one quarantined, exit 10
fault '{"fault":"truncate","on":"download","count":0}'
expect_exit 10 "a file truncated every time" -- "$FS" export --out dtrunc2 --type Patient --no-progress
clear_faults
Q=$(cat dtrunc2/quarantine/*.ndjson 2>/dev/null | wc -l)
[ "$Q" -ge 1 ] && ok "the truncated line is in quarantine/ ($Q)" || not_ok "nothing quarantined"
expect_match "$(cat dtrunc2/quarantine/*.ndjson)" '"reason":"truncated last line' "the quarantine says why"
expect_match "$(cat dtrunc2/quarantine/*.ndjson)" '"line":[0-9]+' "the quarantine names the line"
[ "$(ids dtrunc2 | grep -c BAD || true)" = 0 ] && ok "no bad line kept in the data files" || not_ok "a bad line was kept"
[ "$(ids dtrunc2 | wc -l)" = $((40 - Q)) ] && ok "the good lines are kept" || not_ok "kept $(ids dtrunc2 | wc -l) lines"
expect_match "$OUT" 'quarantined: +[0-9]+' "the summary counts quarantined lines"

# redirects of files to another origin: followed without the token
clear_log
fault '{"fault":"redirect","on":"download","count":0}'
export_ok dredirect "files redirected to a storage origin"
S=$(logged 'r.listener==="storage" && r.path.includes("/bulkfiles/")')
SB=$(logged 'r.listener==="storage" && r.bearer')
M=$(logged 'r.listener==="main" && r.path.includes("/bulkfiles/") && r.bearer && r.status===307')
[ "$S" -ge 13 ] && ok "downloads went to the storage listener ($S)" || not_ok "only $S storage downloads"
[ "$SB" = 0 ] && ok "no bearer token reached the storage origin" || not_ok "$SB storage requests carried a token"
[ "$M" -ge 13 ] && ok "FHIR-origin requests carried the token ($M)" || not_ok "$M main-listener requests with token"

# ---- kill -9 in the middle of the downloads, then resume ------------------------------------
# kill9_resume DIR DESCRIPTION FAULT WAIT: start with the fault, wait until the shell condition
# WAIT holds (a finished file, or a partial file with bytes), kill -9, then resume without faults
done_files() { node -e 'try { console.log(JSON.parse(require("fs").readFileSync(process.argv[1],
    "utf8")).files.length) } catch (e) { console.log(0) }' "$1/state.json"; }
partial_bytes() { cat "$1"/.partial/*.ndjson 2>/dev/null | wc -c; }
kill9_resume() {
    local dir=$1 what=$2
    fault "$3"
    "$FS" export --out "$dir" --level system --parallel 2 --no-progress >"$TMP/k.out" 2>"$TMP/k.err" &
    local pid=$! i=0
    while [ "$i" -lt 600 ] && ! eval "$4"; do
        i=$((i + 1))
        sleep 0.05
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    clear_faults
    eval "$4" && [ "$(json_get "$dir/state.json" j.complete)" = false ] &&
        ok "$what: killed in the middle ($(done_files "$dir") file(s) done, $(partial_bytes "$dir") partial bytes)" ||
        not_ok "$what: the kill came too late or too early"
    expect_exit 0 "$what: resumed" -- "$FS" export --out "$dir" --level system --no-progress
    same_ids "$dir" "$what"
}
kill9_resume k9slow "kill -9 during slow downloads" '{"fault":"slow","on":"download","count":0,"delay_ms":400}' \
    '[ "$(done_files k9slow)" -ge 2 ]'
[ "$(grep -c 'done by an earlier run' "$TMP/err")" -ge 2 ] && ok "finished files were not fetched again" ||
    not_ok "no file kept from the killed run"
kill9_resume k9reset "kill -9 with partial files" '{"fault":"reset","on":"download","count":0,"after_bytes":20000}' \
    '[ "$(partial_bytes k9reset)" -ge 60000 ]'
expect_match "$(cat k9reset/export-log.jsonl)" 'resuming at byte' "the partial files were resumed with Range requests"

# --resume DIR after Ctrl-C
fault '{"fault":"slow","on":"download","count":0,"delay_ms":300}'
"$FS" export --out sigint --level system --parallel 1 --no-progress >"$TMP/s.out" 2>"$TMP/s.err" &
SPID=$!
for _ in $(seq 1 200); do [ -s sigint/state.json ] && grep -q '"name"' sigint/state.json && break; sleep 0.05; done
kill -INT "$SPID"
set +e
wait "$SPID"
SRC=$?
set -e
clear_faults
[ "$SRC" = 12 ] && ok "Ctrl-C ends with exit 12" || not_ok "Ctrl-C exit $SRC: $(cat "$TMP/s.err" | tail -3)"
expect_match "$(cat "$TMP/s.err")" 'resume with: fhirsync export --resume sigint' "Ctrl-C says how to resume"
expect_exit 0 "--resume after Ctrl-C" -- "$FS" export --resume sigint --no-progress
same_ids sigint "--resume after Ctrl-C"

# ---- _since after a mutation: deleted outputs ------------------------------------------------
sleep 1.1 # the mutation must land after the baseline's transactionTime
curl -sf -X POST -H 'Content-Type: application/json' -d '{"update":0.1,"delete":0.05}' "$ADMIN/mutate" >/dev/null
expect_exit 0 "_since export after a mutation" -- "$FS" export --out since --level system --since "$TT" --no-progress
DEL=$(ids since deleted | grep -c '^Bundle/' || true)
[ "$DEL" -ge 1 ] && ok "deleted outputs saved in deleted/ ($DEL Bundles)" || not_ok "no deleted output"
expect_match "$OUT" 'deleted: +[1-9]' "the summary counts deleted entries"
CH=$(ids since | wc -l)
[ "$CH" -gt 0 ] && [ "$CH" -lt "$N" ] && ok "_since exported only changes ($CH)" || not_ok "_since exported $CH of $N"

# ---- what only a fake server does -----------------------------------------------------------
node "$HERE/bulk_fake_server.mjs" "$TMP/fake.json" 2>"$TMP/fake.log" &
PIDS+=($!)
wait_for_file "$TMP/fake.json"
FAKE=$(json_get "$TMP/fake.json" j.origin)
fake() { # SCENARIO EXIT DESCRIPTION [flags]
    local s=$1 want=$2 what=$3
    shift 3
    expect_exit "$want" "$what" -- "$FS" export --level system --base-url "$FAKE/$s/fhir" --token-url "$TOKEN_URL" \
        --out "fake-$s" --no-progress "$@"
}
fake nolocation 8 "202 without Content-Location"
expect_match "$ERR" 'without a Content-Location' "the missing status URL is explained"
fake fatal 7 "a fatal OperationOutcome on a status poll"
expect_match "$ERR" 'disk full on the export volume' "the diagnostics are shown"
fake transient 0 "transient outcomes, then an HTTP-date Retry-After"
expect_match "$ERR" 'almost there' "X-Progress is shown"
fake paged 0 "a paged manifest with relative URLs"
[ "$(ids fake-paged | tr '\n' ' ')" = "Patient/a Patient/b Patient/c Patient/d Patient/e " ] &&
    ok "both manifest pages were downloaded" || not_ok "paged: $(ids fake-paged | tr '\n' ' ')"
[ -s fake-paged/error/OperationOutcome.1.ndjson ] && ok "error outputs saved in error/" || not_ok "no error/ file"
expect_match "$ERR" 'Patient/zz could not be exported' "error OperationOutcomes are summarised"
expect_match "$ERR" 'no requiresAccessToken' "a missing requiresAccessToken is reported"
fake notoken 0 "requiresAccessToken false"
NT=$(curl -sf "$FAKE/requests" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{
     const r=JSON.parse(s).filter(x=>x.path.startsWith("/notoken/fhir/files/"));
     console.log(r.length, r.filter(x=>x.bearer).length)})')
[ "$NT" = "1 0" ] && ok "no token on files that do not require it" || not_ok "notoken downloads: $NT"
fake badlines 10 "wrong resourceType, broken JSON, empty line, BOM, CRLF"
[ "$(ids fake-badlines | tr '\n' ' ')" = "Patient/a Patient/b Patient/c " ] &&
    ok "only the good lines are kept" || not_ok "badlines kept: $(ids fake-badlines | tr '\n' ' ')"
QB=$(cat fake-badlines/quarantine/Patient.1.ndjson)
expect_match "$QB" '"line":2,"reason":"resourceType \\"Observation\\" where the manifest entry says \\"Patient\\""' "the wrong type is quarantined with its line"
expect_match "$QB" '"line":4,"reason":"incomplete line' "the broken line is quarantined with its line"
expect_match "$ERR" 'byte order mark' "the BOM is reported"
expect_match "$ERR" 'empty line' "the empty line is reported"
BADGETS=$(curl -sf "$FAKE/requests" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{
     console.log(JSON.parse(s).filter(x=>x.path==="/badlines/fhir/files/patients").length)})')
[ "$BADGETS" = 2 ] && ok "the bad file was downloaded a second time before quarantining" || not_ok "bad file fetched $BADGETS times"
fake mismatch 10 "a count that does not match the manifest"
expect_match "$(cat fake-mismatch/quarantine/Patient.1.ndjson)" 'count mismatch: the manifest says 5, the file has 3' "the count mismatch is recorded"
expect_match "$ERR" 'manifest says 5' "the count mismatch is reported"

finish
