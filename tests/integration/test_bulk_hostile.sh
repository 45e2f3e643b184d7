#!/usr/bin/env bash
# tests/integration/test_bulk_hostile.sh: `fhirsync export` against hostile Bulk Data servers
# (bulk_fake_server.mjs): every case must end, within a bounded time, with its documented exit
# code and a message naming the real cause. Status polls answered "Retry-After: 0" for ever end by
# the --deadline after a bounded number of polls, with the progress reported once, not per poll;
# Retry-After as an absolute epoch (seconds, milliseconds) is waited for, not capped; a file cut at
# the same place with Range ignored, and a 1-byte/s trickle (the stall rule, set low), are given
# up by name while the other file is stored; a 1 MiB header line, 100,000 headers and a 90 KB
# X-Progress blame the header caps (exit 8); a status URL on another origin is exit 8; a 429 "Too
# Many Requests" page at kick-off says so; a manifest count that disagrees ends naming that cause;
# the run's log is export-log.jsonl (no *.ndjson glob picks it up) and an old log.ndjson moves.
# The sandbox only issues the tokens.
source "$(dirname "$0")/lib.sh"

: "${FHIRSYNC_SANDBOX_BIN:?FHIRSYNC_SANDBOX_BIN must point at fhirsync-sandbox}"
FS=$FHIRSYNC_BIN
HERE="$FHIRSYNC_SOURCE_DIR/tests/integration"
cd "$TMP"
clean_fhirsync_env

"$FHIRSYNC_SANDBOX_BIN" --port 0 --ready-file "$TMP/ready.json" --patients 2 --seed 3 \
    >"$TMP/sandbox.log" 2>&1 &
PIDS+=($!)
wait_for_file "$TMP/ready.json"
TOKEN_URL=$(json_get "$TMP/ready.json" j.token_url)
REGISTER=$(json_get "$TMP/ready.json" j.register_url)
"$FS" keygen --out "$TMP/keys" >/dev/null
KEY=$(ls "$TMP"/keys/*.key.pem)
node -e 'const fs=require("fs"); console.log(JSON.stringify({jwks: JSON.parse(
         fs.readFileSync(process.argv[1], "utf8")), scope: "system/*.read"}))' \
    "$TMP/keys/jwks.json" >"$TMP/register.json"
curl -sf -X POST -H 'Content-Type: application/json' --data @"$TMP/register.json" "$REGISTER" \
    >"$TMP/client.json"
export FHIRSYNC_CLIENT_ID=$(json_get "$TMP/client.json" j.client_id) FHIRSYNC_KEY_FILE=$KEY
export FHIRSYNC_RETRY_CAP=2 FHIRSYNC_MAX_RETRIES=2

node "$HERE/bulk_fake_server.mjs" "$TMP/fake.json" 2>"$TMP/fake.log" &
PIDS+=($!)
wait_for_file "$TMP/fake.json"
FAKE=$(json_get "$TMP/fake.json" j.origin)

# hostile SCENARIO EXIT LIMIT_S DESCRIPTION [flags]: the export ends with EXIT within LIMIT_S
# seconds (timeout(1) kills it otherwise, and the exit is then 124)
hostile() {
    local s=$1 want=$2 limit=$3 what=$4
    shift 4
    local t0=$SECONDS
    expect_exit "$want" "$what" -- timeout -k 5 "$limit" "$FS" export \
        --base-url "$FAKE/$s/fhir" --token-url "$TOKEN_URL" --out "x-$s" --level system \
        --no-progress "$@"
    ELAPSED=$((SECONDS - t0))
}
# requests_to PATH_REGEX: how many requests the fake server saw on matching paths
requests_to() {
    curl -sf "$FAKE/requests" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{
        const re=new RegExp(process.argv[1]);
        console.log(JSON.parse(s).filter(x=>re.test(x.path)&&x.method==="GET").length)})' "$1"
}

# ---- Retry-After: 0 for ever: the deadline ends it, polls at least 1 s apart --------------------
hostile rafzero 9 30 "Retry-After 0 for ever ends by the deadline" --deadline 5s
POLLS=$(requests_to '^/rafzero/fhir/status/1$')
[ "$POLLS" -ge 3 ] && [ "$POLLS" -le 7 ] && ok "a bounded number of polls in 5 s ($POLLS)" ||
    not_ok "$POLLS status polls in a 5 s deadline (wanted 3..7)"
[ "$ELAPSED" -le 12 ] && ok "ended soon after its deadline (${ELAPSED} s)" || not_ok "took ${ELAPSED} s"
expect_match "$ERR" "deadline of 5 s passed while waiting for the server" "the deadline is the reason given"
expect_match "$ERR" "resumable" "the message says the folder is resumable"
PROG=$(grep -c '"event":"progress"' x-rafzero/export-log.jsonl || true)
[ "$PROG" = 1 ] && ok "the unchanged progress is logged once, not per poll" ||
    not_ok "$PROG progress records in the log for $POLLS polls"
PLINES=$(grep -c 'export in progress' <<<"$ERR" || true)
[ "$PLINES" = 1 ] && ok "one progress line on stderr" || not_ok "$PLINES progress lines on stderr"
[ ! -e x-rafzero/log.ndjson ] && [ -s x-rafzero/export-log.jsonl ] &&
    ok "the run's log is export-log.jsonl, not a *.ndjson" || not_ok "log files: $(ls x-rafzero)"
[ "$(node -e 'console.log(JSON.parse(require("fs").readFileSync("x-rafzero/state.json","utf8")).status_url ? 1 : 0)')" = 1 ] &&
    ok "the job is kept for a resume" || not_ok "no status URL in state.json"
# an older folder's log.ndjson is moved out of the way of data globs on resume
echo '{"event":"old"}' >x-rafzero/log.ndjson
mv x-rafzero/export-log.jsonl x-rafzero/keep.jsonl
expect_exit 9 "a resume with a short deadline" -- timeout -k 5 30 "$FS" export \
    --base-url "$FAKE/rafzero/fhir" --token-url "$TOKEN_URL" --resume x-rafzero --no-progress \
    --deadline 2s
[ ! -e x-rafzero/log.ndjson ] && grep -q '"event":"old"' x-rafzero/export-log.jsonl &&
    ok "an old log.ndjson becomes export-log.jsonl" || not_ok "after resume: $(ls x-rafzero)"

# ---- Retry-After as an absolute epoch --------------------------------------------------------
hostile raepoch 0 30 "Retry-After as epoch seconds, then epoch milliseconds"
TIMES=$(curl -sf "$FAKE/requests" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{
    const t=JSON.parse(s).filter(x=>x.path==="/raepoch/fhir/status/1"&&x.method==="GET").map(x=>x.t);
    console.log(t.length, t[1]-t[0] >= 1500 ? "waited1" : "nowait1", t[2]-t[1] >= 1000 ? "waited2" : "nowait2",
                t[t.length-1]-t[0] < 10000 ? "notcapped" : "capped")})')
[ "$TIMES" = "3 waited1 waited2 notcapped" ] && ok "both epochs were waited for, not capped or skipped" ||
    not_ok "raepoch polls: $TIMES"
expect_match "$(cat x-raepoch/export-log.jsonl)" 'epoch s' "the progress of the epoch answers is logged"

# ---- a file cut at the same place, Range ignored ----------------------------------------------
hostile cutsame 9 60 "a file cut at the same place ends" --parallel 2
expect_match "$ERR" 'Patient\.1\.ndjson could not be downloaded' "the failed file is named"
expect_match "$ERR" '1 of 2 file\(s\) could not be downloaded' "the end says how many failed"
[ -s x-cutsame/Observation.1.ndjson ] && ok "the other file was stored" || not_ok "Observation file missing"
GETS=$(requests_to '^/cutsame/fhir/files/patients$')
[ "$GETS" = 3 ] && ok "the cut file was tried 1 + max_retries times ($GETS)" || not_ok "cut file fetched $GETS times"
expect_no_match "$ERR" 'retry 1 of 2.*retry 1 of 2.*retry 1 of 2' "the retry count does not start over"

# ---- a 1-byte/s trickle: the stall rule ---------------------------------------------------------
hostile trickle 9 60 "a 1 byte/s trickle ends by the stall rule" --stall-speed 100 --stall-time 2
expect_match "$ERR" 'stalled: less than 100 bytes/s for 2 s' "the stall rule is the reason given"
expect_match "$ERR" 'Patient\.1\.ndjson could not be downloaded' "the trickling file is named"
[ -s x-trickle/Observation.1.ndjson ] && ok "the other file was stored" || not_ok "Observation file missing"

# ---- header caps, origins, 429 ----------------------------------------------------------------
hostile hugeheader 8 30 "a 1 MiB response header line is a protocol error"
expect_match "$ERR" 'header line cap' "the header line cap is blamed"
expect_no_match "$ERR" '^fhirsync: out of memory' "not reported as out of memory"
hostile manyheaders 8 30 "100,000 response headers are a protocol error"
expect_match "$ERR" 'header cap' "the header cap is blamed (100k headers)"
expect_no_match "$ERR" 'larger than the [0-9]+-byte limit' "not the body cap (100k headers)"
hostile bigprogress 8 30 "a 90 KB X-Progress is a protocol error"
expect_match "$ERR" 'header cap' "the header cap is blamed (X-Progress)"
hostile otherorigin 8 30 "a status URL on another origin is a protocol error"
expect_match "$ERR" 'not on the FHIR server.s origin' "the origin is the reason given"
hostile toomany 7 30 "429 Too Many Requests at kick-off"
expect_no_match "$ERR" 'already running' "a rate limit is not called a running export"
expect_match "$ERR" 'rate limited \(HTTP 429\)' "the rate limit is what is reported"

# ---- a manifest count that disagrees -----------------------------------------------------------
hostile mismatch 10 30 "a count that disagrees with the file"
expect_match "$ERR" 'different number of lines than the manifest says \(Patient\.1\.ndjson: 3 line\(s\), the manifest says 5\)' "the ending names the count mismatch"
expect_no_match "$ERR" '0 line\(s\) failed the checks' "no 'zero lines quarantined' ending"

finish
