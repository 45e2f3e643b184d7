#!/usr/bin/env bash
# test_sandbox_quirks.sh: the sandbox's quirk modes, its state dump and the mutation armed for the
# next export. For each quirk the sandbox is asked the same thing with the quirk off and on (most
# quirks per client through POST /admin/quirks, so the other client shows the normal answer), and
# the deviation is checked: late transactionTime (a change made during the export is in neither
# that export nor the next _since), no deleted files, extra types, an ignored POST body, Range
# ignored, downloads cut at the same byte, trickled downloads that do not block other requests,
# Retry-After 0 and absolute epochs, kick-off needing a write scope, the token echoed in errors,
# wrong manifest counts, a CapabilityStatement with fewer types, HTML 429s, bare status polls and
# a manifest request without its query. GET /admin/state is checked against its own summary, an
# export's bytes (SHA-256 of each line) and a REST read, before and after mutations.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

# --- usage errors: unknown quirk names list the known ones (exit 2) ----------------------------
rc=0
"$FHIRSYNC_SANDBOX_BIN" --quirk no-such-quirk >"$TMP/u.out" 2>"$TMP/u.err" || rc=$?
[ "$rc" = 2 ] || fail "--quirk no-such-quirk: exit $rc, expected 2"
grep -q 'unknown quirk "no-such-quirk"' "$TMP/u.err" || fail "no message for an unknown quirk"
grep -q 'late-transaction-time' "$TMP/u.err" && grep -q 'echo-token-in-errors' "$TMP/u.err" ||
    fail "the unknown-quirk message does not list the known quirks"; ok
rc=0
"$FHIRSYNC_SANDBOX_BIN" --quirk no-deleted=3 >/dev/null 2>"$TMP/u.err" || rc=$?
[ "$rc" = 2 ] && grep -q 'takes no parameter' "$TMP/u.err" || fail "a parameter to no-deleted: $rc"
rc=0
"$FHIRSYNC_SANDBOX_BIN" --quirk trickle=0 >/dev/null 2>"$TMP/u.err" || rc=$?
[ "$rc" = 2 ] || fail "trickle=0: exit $rc"; ok
"$FHIRSYNC_SANDBOX_BIN" --help | grep -q 'truncate-same-place' || fail "--help does not list quirks"; ok

cat >"$TMP/clients.json" <<'EOF'
{"clients": [
  {"client_id": "q-a", "client_secret": "secret-a", "scope": "system/*.read"},
  {"client_id": "q-b", "client_secret": "secret-b", "scope": "system/*.read"},
  {"client_id": "q-w", "client_secret": "secret-w", "scope": "system/*.read system/*.*"}
]}
EOF

# a global quirk from the command line: the manifest's request loses its query
start_sandbox --patients 20 --seed 5 --resources-per-file 200 --export-delay-ms 250 \
    --clients "$TMP/clients.json" --quirk request-without-query
BASE=$(jget .base_url <"$SANDBOX_DIR/ready.json")
TOKEN_URL=$(jget .token_url <"$SANDBOX_DIR/ready.json")
ADMIN=$(jget .admin_url <"$SANDBOX_DIR/ready.json")
REGISTER=$(jget .register_url <"$SANDBOX_DIR/ready.json")

token() { # CLIENT SECRET [SCOPE]
    curl -sS -u "$1:$2" --data "grant_type=client_credentials${3:+&scope=$3}" "$TOKEN_URL" |
        jget .access_token
}
TA=$(token q-a secret-a)
TB=$(token q-b secret-b)

quirk() { # JSON -> prints the entry id
    local st
    st=$(curl -sS -o "$TMP/q.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        --data "$1" "$ADMIN/quirks")
    [ "$st" = 201 ] || fail "POST /admin/quirks $1: $st $(cat "$TMP/q.json")"
    jget .id <"$TMP/q.json"
}
unquirk() { curl -sS -X DELETE "$ADMIN/quirks${1:+?$1}" >/dev/null; }

# kickoff TOKEN METHOD URL [BODY]: prints the status URL (fails unless 202)
kickoff() {
    local tok=$1 method=$2 url=$3 body=${4:-}
    local args=(-sS -o "$TMP/kbody" -D "$TMP/kheaders" -w '%{http_code}' -X "$method"
                -H "Authorization: Bearer $tok" -H 'Accept: application/fhir+json'
                -H 'Prefer: respond-async')
    [ -n "$body" ] && args+=(-H 'Content-Type: application/fhir+json' --data "$body")
    local st
    st=$(curl "${args[@]}" "$url")
    [ "$st" = 202 ] || fail "kick-off $method $url: $st $(cat "$TMP/kbody")"
    tr -d '\r' <"$TMP/kheaders" | sed -n 's/^[Cc]ontent-[Ll]ocation: //p'
}

# wait_done TOKEN STATUS_URL OUT: polls (bounded) until 200; the manifest goes to OUT
wait_done() {
    local tok=$1 url=$2 out=$3 st polls=0
    while :; do
        polls=$((polls + 1))
        [ "$polls" -le 400 ] || fail "export $url did not finish"
        st=$(curl -sS -o "$out" -D "$TMP/sheaders" -w '%{http_code}' \
            -H "Authorization: Bearer $tok" "$url")
        [ "$st" = 202 ] && { sleep 0.05; continue; }
        [ "$st" = 200 ] || fail "status $url: $st $(cat "$out")"
        return 0
    done
}

export_to() { # TOKEN METHOD URL OUT [BODY]
    local loc
    loc=$(kickoff "$1" "$2" "$3" "${5:-}")
    wait_done "$1" "$loc" "$4"
}

state() { # OUT_PREFIX: the dump and its summary
    curl -sS -f "$ADMIN/state" >"$1.ndjson" || fail "GET /admin/state"
    curl -sS -f "$ADMIN/state?summary=1" >"$1.summary.json" || fail "GET /admin/state?summary=1"
}

check_state() { # PREFIX [MANIFEST TOKEN] -> JSON on stdout
    node "$FHIRSYNC_SOURCE_DIR/tests/integration/sandbox_state_check.mjs" "$1.ndjson" "$1.summary.json" ${2:+"$2"} \
        ${3:+"$3"} || fail "state check $*"
}

# --- the state dump: its summary, a full export's bytes and a REST read -------------------------
state "$TMP/s0"
check_state "$TMP/s0" >"$TMP/c0.json"
[ "$(jget .summaryOk <"$TMP/c0.json")" = true ] || fail "summary: $(jget .summaryProblems <"$TMP/c0.json")"
[ "$(jget .stateCount <"$TMP/c0.json")" -gt 1000 ] || fail "the dump is too small"
for t in Patient Observation Practitioner; do
    rest=$(curl -sS -H "Authorization: Bearer $TA" "$BASE/$t?_summary=count" | jget .total)
    [ "$rest" = "$(jget ".types.$t" <"$TMP/c0.json")" ] || fail "$t: REST total $rest differs from the dump"
done; ok
curl -sS -f "$ADMIN/state?type=Patient" >"$TMP/patients.ndjson"
[ "$(wc -l <"$TMP/patients.ndjson")" = 20 ] && ! grep -qv '"resourceType":"Patient"' "$TMP/patients.ndjson" ||
    fail "?type=Patient"
st=$(curl -sS -o /dev/null -w '%{http_code}' "$ADMIN/state?type=NoSuchType")
[ "$st" = 404 ] || fail "?type=NoSuchType: $st"; ok
read_sha=$(curl -sS -H "Authorization: Bearer $TA" "$BASE/Patient/pat-3" | sha256sum | cut -c1-64)
grep -q "\"id\":\"pat-3\".*\"sha256\":\"$read_sha\"" "$TMP/patients.ndjson" ||
    fail "a REST read's bytes do not hash to the dump's sha256"; ok
export_to "$TA" GET "$BASE/\$export" "$TMP/m0.json"
check_state "$TMP/s0" "$TMP/m0.json" "$TA" >"$TMP/c0.json"
node -e '
    const c = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const e = c.export;
    if (e.shaMismatch.length || e.notInState.length) throw new Error("mismatch " + JSON.stringify(e).slice(0, 400));
    if (e.matched !== c.stateCount) throw new Error(`matched ${e.matched} of ${c.stateCount}`);
' "$TMP/c0.json" || fail "a full export does not equal the state dump"; ok
# request-without-query (global, from --quirk)
[ "$(jget .request <"$TMP/m0.json")" = "$BASE/\$export" ] || fail "request-without-query: $(jget .request <"$TMP/m0.json")"
export_to "$TA" GET "$BASE/\$export?_type=Patient" "$TMP/m.json"
case "$(jget .request <"$TMP/m.json")" in *\?*) fail "request-without-query kept the query";; esac; ok
unquirk "quirk=request-without-query"
export_to "$TA" GET "$BASE/\$export?_type=Patient" "$TMP/m.json"
[ "$(jget .request <"$TMP/m.json")" = "$BASE/\$export?_type=Patient" ] || fail "the query is missing without the quirk"; ok

# --- mutations now: the dump follows them -----------------------------------------------------------
curl -sS -f -X POST -H 'Content-Type: application/json' --data '{"update":0.1,"delete":0.05}' \
    "$ADMIN/mutate" >"$TMP/mut.json"
MUT_TIME=$(jget .time <"$TMP/mut.json")
state "$TMP/s1"
check_state "$TMP/s1" >"$TMP/c1.json"
[ "$(jget .summaryOk <"$TMP/c1.json")" = true ] || fail "summary after a mutation"
[ "$(jget .epoch <"$TMP/s1.summary.json")" = 1 ] || fail "the summary's epoch is not 1"
node -e '
    const fs = require("fs");
    const rows = (f) => new Map(fs.readFileSync(f, "utf8").split("\n").filter(Boolean).map(JSON.parse)
        .map((r) => [r.resourceType + "/" + r.id, r]));
    const a = rows(process.argv[1]), b = rows(process.argv[2]);
    const when = Date.parse(process.argv[3]);
    let gone = 0, changed = 0;
    for (const [k, r] of a) {
        const n = b.get(k);
        if (!n) { gone++; continue; }
        if (n.versionId !== r.versionId) {
            changed++;
            if (n.sha256 === r.sha256 || Date.parse(n.lastUpdated) !== when || +n.versionId !== +r.versionId + 1)
                throw new Error("changed row " + k + " " + JSON.stringify(n));
        } else if (n.sha256 !== r.sha256) throw new Error("same version, other bytes: " + k);
    }
    for (const k of b.keys()) if (!a.has(k)) throw new Error("new row " + k);
    if (!gone || !changed) throw new Error(`gone ${gone}, changed ${changed}`);
' "$TMP/s0.ndjson" "$TMP/s1.ndjson" "$MUT_TIME" || fail "the dump does not reflect the mutation"; ok

# --- the armed mutation fires during the next export -----------------------------------------------
st=$(curl -sS -o "$TMP/arm.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    --data '{"update":0.2,"delete":0.1,"when":"export-running","client_id":"q-a"}' "$ADMIN/mutate")
[ "$st" = 202 ] || fail "arming: $st $(cat "$TMP/arm.json")"
ARMED=$(jget .armed <"$TMP/arm.json")
[ "$(curl -sS "$ADMIN/mutate" | jget '.armed.length')" = 1 ] || fail "GET /admin/mutate: not armed"
# another client's export does not fire it
export_to "$TB" GET "$BASE/\$export?_type=Patient" "$TMP/m.json"
[ "$(curl -sS "$ADMIN/mutate" | jget '.fired.length')" = 0 ] || fail "q-b's export fired q-a's mutation"
export_to "$TA" GET "$BASE/\$export" "$TMP/m2.json"
curl -sS "$ADMIN/mutate" >"$TMP/fired.json"
node -e '
    const m = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const f = m.fired[0];
    if (m.armed.length || m.fired.length !== 1 || f.id !== +process.argv[2] || f.epoch !== 2 || m.epoch !== 2)
        throw new Error(JSON.stringify(m));
    const url = JSON.parse(require("fs").readFileSync(process.argv[3], "utf8")).output[0].url;
    if (!url.includes("/" + f.job + "/")) throw new Error("fired for job " + f.job + ", not " + url);
' "$TMP/fired.json" "$ARMED" "$TMP/m2.json" || fail "the armed mutation did not fire in that export"
FIRED_TIME=$(jget '.fired[0].time' <"$TMP/fired.json")
TT2=$(jget .transactionTime <"$TMP/m2.json")
state "$TMP/s2"
check_state "$TMP/s2" "$TMP/m2.json" "$TA" >"$TMP/c2.json"
node -e '
    const fs = require("fs");
    const c = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
    const when = Date.parse(process.argv[2]), tt = Date.parse(process.argv[3]);
    if (!(when > tt)) throw new Error(`mutation ${process.argv[2]} not after transactionTime ${process.argv[3]}`);
    const rows = fs.readFileSync(process.argv[4], "utf8").split("\n").filter(Boolean).map(JSON.parse);
    const changed = new Set(rows.filter((r) => Date.parse(r.lastUpdated) === when).map((r) => r.resourceType + "/" + r.id));
    const e = c.export;
    // the export holds the kick-off snapshot: nothing changed during it, every other row byte for byte
    if (e.shaMismatch.length || e.notInState.length) throw new Error("export vs dump " + JSON.stringify(e).slice(0, 300));
    const missing = [];
    for (const [t, ids] of Object.entries(e.stateNotExported)) for (const id of ids) missing.push(t + "/" + id);
    if (!changed.size || missing.length !== changed.size || missing.some((k) => !changed.has(k)))
        throw new Error(`dump rows not exported ${missing.length}, changed during the export ${changed.size}`);
    fs.writeFileSync(process.argv[5], JSON.stringify([...changed]));
' "$TMP/c2.json" "$FIRED_TIME" "$TT2" "$TMP/s2.ndjson" "$TMP/changed2.json" ||
    fail "the export is not the kick-off snapshot"; ok
# a spec-following transactionTime: the next _since export has every change made during the export
export_to "$TA" GET "$BASE/\$export?_since=$TT2" "$TMP/m3.json"
node "$FHIRSYNC_SOURCE_DIR/tests/integration/sandbox_bulk_check.mjs" "$TMP/m3.json" "$TA" >"$TMP/b3.json" || fail "bulk check m3"
node -e '
    const fs = require("fs");
    const b = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
    const changed = new Set(JSON.parse(fs.readFileSync(process.argv[2], "utf8")));
    const got = new Set(Object.entries(b.ids).flatMap(([t, ids]) => ids.map((i) => t + "/" + i)));
    for (const k of changed) if (!got.has(k)) throw new Error("the _since export lacks " + k);
    if (b.deleted === 0) throw new Error("no deletions listed");
' "$TMP/b3.json" "$TMP/changed2.json" || fail "the _since export after the armed mutation"; ok

# --- late-transaction-time: the change made during the export is in neither export ---------------
quirk '{"quirk":"late-transaction-time","client_id":"q-a"}' >/dev/null
curl -sS -f -X POST -H 'Content-Type: application/json' \
    --data '{"update":0.2,"delete":0,"when":"export-running"}' "$ADMIN/mutate" >/dev/null
export_to "$TA" GET "$BASE/\$export?_type=Observation" "$TMP/m4.json"
FIRED_TIME=$(curl -sS "$ADMIN/mutate" | jget '.fired[1].time')
TT4=$(jget .transactionTime <"$TMP/m4.json")
node -e 'if (!(Date.parse(process.argv[2]) >= Date.parse(process.argv[1]))) process.exit(1)' "$FIRED_TIME" "$TT4" ||
    fail "late-transaction-time: $TT4 is before the mutation at $FIRED_TIME"
node "$FHIRSYNC_SOURCE_DIR/tests/integration/sandbox_bulk_check.mjs" "$TMP/m4.json" "$TA" >"$TMP/b4.json" || fail "bulk check m4"
export_to "$TA" GET "$BASE/\$export?_type=Observation&_since=$TT4" "$TMP/m5.json"
node "$FHIRSYNC_SOURCE_DIR/tests/integration/sandbox_bulk_check.mjs" "$TMP/m5.json" "$TA" >"$TMP/b5.json" || fail "bulk check m5"
curl -sS -f "$ADMIN/state?type=Observation" >"$TMP/s5.ndjson"
node -e '
    const fs = require("fs");
    const when = Date.parse(process.argv[1]);
    const changed = fs.readFileSync(process.argv[2], "utf8").split("\n").filter(Boolean).map(JSON.parse)
        .filter((r) => Date.parse(r.lastUpdated) === when).map((r) => r.id);
    const ids = (f) => new Set(JSON.parse(fs.readFileSync(f, "utf8")).ids.Observation || []);
    const first = ids(process.argv[3]), next = ids(process.argv[4]);
    if (!changed.length) throw new Error("nothing changed");
    for (const id of changed) if (first.has(id) || next.has(id)) throw new Error(id + " was exported");
' "$FIRED_TIME" "$TMP/s5.ndjson" "$TMP/b4.json" "$TMP/b5.json" ||
    fail "late-transaction-time: a change made during the export was not lost"
unquirk; ok

# --- no-deleted ----------------------------------------------------------------------------------------
export_to "$TB" GET "$BASE/\$export?_since=2025-06-01T00:00:00Z" "$TMP/m.json"
[ "$(jget '.deleted.length' <"$TMP/m.json")" -gt 0 ] || fail "no deleted files without the quirk"
quirk '{"quirk":"no-deleted","client_id":"q-b"}' >/dev/null
export_to "$TB" GET "$BASE/\$export?_since=2025-06-01T00:00:00Z" "$TMP/m.json"
[ "$(jget '.deleted.length' <"$TMP/m.json")" = 0 ] || fail "no-deleted listed deleted files"
[ "$(jget '.output.length' <"$TMP/m.json")" -gt 0 ] || fail "no-deleted: no output"
unquirk; ok

types_of() { jget '=>[...new Set(d.output.map((o) => o.type))].sort().join(",")' <"$1"; }

# --- extra-types ---------------------------------------------------------------------------------------
export_to "$TA" GET "$BASE/Group/all/\$export?_type=Encounter" "$TMP/m.json"
[ "$(types_of "$TMP/m.json")" = Encounter ] || fail "Group export _type=Encounter: $(types_of "$TMP/m.json")"
quirk '{"quirk":"extra-types"}' >/dev/null
export_to "$TA" GET "$BASE/Group/all/\$export?_type=Encounter" "$TMP/m.json"
[ "$(types_of "$TMP/m.json")" = "Encounter,Organization,Practitioner" ] ||
    fail "extra-types at Group level: $(types_of "$TMP/m.json")"
node "$FHIRSYNC_SOURCE_DIR/tests/integration/sandbox_bulk_check.mjs" "$TMP/m.json" "$TA" >"$TMP/b.json" || fail "bulk check"
[ "$(jget .output.Practitioner <"$TMP/b.json")" = 3 ] || fail "extra-types: not every Practitioner"
export_to "$TA" GET "$BASE/\$export?_type=Patient" "$TMP/m.json"
[ "$(types_of "$TMP/m.json")" = "Organization,Patient,Practitioner" ] ||
    fail "extra-types at system level: $(types_of "$TMP/m.json")"
unquirk; ok

# --- ignore-post-body ----------------------------------------------------------------------------------
BODY='{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"Patient"}]}'
export_to "$TA" POST "$BASE/\$export" "$TMP/m.json" "$BODY"
[ "$(types_of "$TMP/m.json")" = Patient ] || fail "POST _type=Patient: $(types_of "$TMP/m.json")"
quirk '{"quirk":"ignore-post-body","client_id":"q-a"}' >/dev/null
export_to "$TA" POST "$BASE/\$export" "$TMP/m.json" "$BODY"
[ "$(jget '.output.length' <"$TMP/m.json")" -gt 5 ] && [ "$(types_of "$TMP/m.json")" != Patient ] ||
    fail "ignore-post-body: $(types_of "$TMP/m.json")"
export_to "$TB" POST "$BASE/\$export" "$TMP/m.json" "$BODY"
[ "$(types_of "$TMP/m.json")" = Patient ] || fail "ignore-post-body applied to q-b"
unquirk; ok

# --- downloads: ignore-range, truncate-same-place, trickle ---------------------------------------
export_to "$TA" GET "$BASE/\$export?_type=Observation" "$TMP/mo.json"
FILE_URL=$(jget '.output[0].url' <"$TMP/mo.json")
curl -sS -f -o "$TMP/full.ndjson" -H "Authorization: Bearer $TA" "$FILE_URL"
SIZE=$(wc -c <"$TMP/full.ndjson")
[ "$SIZE" -gt 3000 ] || fail "the file is too small for the download checks"
export_to "$TB" GET "$BASE/\$export?_type=Observation" "$TMP/mob.json"
FILE_URL_B=$(jget '.output[0].url' <"$TMP/mob.json")
dl() { # TOKEN OUT [RANGE] -> "status bytes exit", of q-a's file (q-b's own file for q-b's token)
    local rc=0 st url=$FILE_URL
    [ "$1" = "$TB" ] && url=$FILE_URL_B
    rm -f "$2" # curl creates its output file only when bytes arrive
    st=$(curl -sS -o "$2" -w '%{http_code}' -H "Authorization: Bearer $1" ${3:+-H "Range: bytes=$3"} \
        "$url" 2>/dev/null) || rc=$?
    [ -f "$2" ] || : >"$2"
    echo "$st $(wc -c <"$2") $rc"
}
[ "$(dl "$TA" "$TMP/part" 0-9)" = "206 10 0" ] || fail "Range without the quirk"
quirk '{"quirk":"ignore-range","client_id":"q-a"}' >/dev/null
[ "$(dl "$TA" "$TMP/part" 0-9)" = "200 $SIZE 0" ] || fail "ignore-range: $(dl "$TA" "$TMP/part" 0-9)"
cmp -s "$TMP/part" "$TMP/full.ndjson" || fail "ignore-range: not the whole file"
[ "$(dl "$TB" "$TMP/part" 0-9)" = "206 10 0" ] || fail "ignore-range applied to q-b"
unquirk; ok

quirk '{"quirk":"truncate-same-place","param":1000,"client_id":"q-a"}' >/dev/null
for attempt in 1 2; do
    [ "$(dl "$TA" "$TMP/part")" = "200 1000 18" ] || fail "truncate-same-place attempt $attempt: $(dl "$TA" "$TMP/part")"
done
cmp -s "$TMP/part" <(head -c 1000 "$TMP/full.ndjson") || fail "truncate-same-place: wrong bytes"
[ "$(dl "$TA" "$TMP/part" 400-)" = "206 600 18" ] || fail "truncate-same-place: a resumed range is not cut at the same byte"
[ "$(dl "$TA" "$TMP/part" 1000-)" = "206 0 18" ] || fail "truncate-same-place: the rest past the cut was served: $(dl "$TA" "$TMP/part" 1000-)"
[ "$(dl "$TA" "$TMP/part" 0-99)" = "206 100 0" ] || fail "truncate-same-place: a range before the cut failed"
[ "$(dl "$TB" "$TMP/part")" = "200 $SIZE 0" ] || fail "truncate-same-place applied to q-b"
cmp -s "$TMP/part" "$TMP/full.ndjson" || fail "q-b's file differs from q-a's"
unquirk
quirk '{"quirk":"truncate-same-place","client_id":"q-a"}' >/dev/null
[ "$(dl "$TA" "$TMP/part")" = "200 $((SIZE / 2)) 18" ] || fail "truncate-same-place default: $(dl "$TA" "$TMP/part")"
unquirk; ok

quirk '{"quirk":"trickle=500","client_id":"q-a"}' >/dev/null
curl -sS -o "$TMP/slow" -w '%{time_total}' -H "Authorization: Bearer $TA" -H 'Range: bytes=0-499' \
    "$FILE_URL" >"$TMP/slow.time" &
SLOW=$!
# while it trickles, the server answers others at once
curl -sS -f -o /dev/null "$BASE/metadata" || fail "metadata during a trickle"
kill -0 "$SLOW" 2>/dev/null || fail "the trickled download ended before another request was answered"
wait "$SLOW" || fail "the trickled download failed"
cmp -s "$TMP/slow" <(head -c 500 "$TMP/full.ndjson") || fail "trickle: wrong bytes"
node -e 'if (+process.argv[1] < 0.7) process.exit(1)' "$(cat "$TMP/slow.time")" ||
    fail "trickle: 500 bytes at 500 B/s took $(cat "$TMP/slow.time") s"
unquirk; ok

# --- status polls: retry-after-zero, retry-after-epoch, no-progress-headers ----------------------
loc=$(kickoff "$TA" GET "$BASE/\$export?_type=Patient")
wait_done "$TA" "$loc" "$TMP/m.json"
quirk '{"quirk":"retry-after-zero","client_id":"q-a","param":3}' >/dev/null
for i in 1 2 3; do
    st=$(curl -sS -o /dev/null -D "$TMP/h" -w '%{http_code}' -H "Authorization: Bearer $TA" "$loc")
    [ "$st" = 202 ] && grep -qi '^retry-after: 0' "$TMP/h" || fail "retry-after-zero poll $i: $st"
done
st=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TA" "$loc")
[ "$st" = 200 ] || fail "retry-after-zero=3: poll 4 got $st"
unquirk
quirk '{"quirk":"retry-after-zero"}' >/dev/null
for i in 1 2 3 4 5 6; do
    st=$(curl -sS -o /dev/null -D "$TMP/h" -w '%{http_code}' -H "Authorization: Bearer $TA" "$loc")
    [ "$st" = 202 ] && grep -qi '^retry-after: 0' "$TMP/h" || fail "retry-after-zero for ever, poll $i: $st"
done
unquirk; ok

quirk '{"quirk":"retry-after-epoch","client_id":"q-a"}' >/dev/null
curl -sS -f -X POST -H 'Content-Type: application/json' \
    --data '{"fault":"429","on":"status","client_id":"q-a","count":2,"retry_after":30}' "$ADMIN/faults" >/dev/null
now=$(date -u +%s)
ras=()
for i in 1 2; do
    st=$(curl -sS -o /dev/null -D "$TMP/h" -w '%{http_code}' -H "Authorization: Bearer $TA" "$loc")
    [ "$st" = 429 ] || fail "retry-after-epoch: poll $i got $st"
    ras+=("$(tr -d '\r' <"$TMP/h" | sed -n 's/^[Rr]etry-[Aa]fter: //p')")
done
node -e '
    const [now, ms, s] = process.argv.slice(1).map(Number);
    if (!(ms >= (now + 25) * 1000 && ms <= (now + 40) * 1000)) throw new Error("first not epoch ms: " + ms);
    if (!(s >= now + 25 && s <= now + 40)) throw new Error("second not epoch s: " + s);
' "$now" "${ras[0]}" "${ras[1]}" || fail "retry-after-epoch: ${ras[*]}"
loc2=$(kickoff "$TA" GET "$BASE/\$export?_type=Patient")
st=$(curl -sS -o /dev/null -D "$TMP/h" -w '%{http_code}' -H "Authorization: Bearer $TA" "$loc2")
ra=$(tr -d '\r' <"$TMP/h" | sed -n 's/^[Rr]etry-[Aa]fter: //p')
[ "$st" = 202 ] && [ "$ra" -ge "$now" ] && [ "$ra" -lt $((now + 100)) ] ||
    fail "retry-after-epoch on a running export: $st $ra"
wait_done "$TA" "$loc2" "$TMP/m.json"
curl -sS -X DELETE "$ADMIN/faults" >/dev/null
unquirk; ok

quirk '{"quirk":"no-progress-headers","client_id":"q-a"}' >/dev/null
loc2=$(kickoff "$TA" GET "$BASE/\$export?_type=Patient")
st=$(curl -sS -o /dev/null -D "$TMP/h" -w '%{http_code}' -H "Authorization: Bearer $TA" "$loc2")
[ "$st" = 202 ] || fail "no-progress-headers: the export was not running ($st)"
! grep -Eqi '^(x-progress|retry-after):' "$TMP/h" || fail "no-progress-headers: $(cat "$TMP/h")"
wait_done "$TA" "$loc2" "$TMP/m.json"
unquirk; ok

# --- export-needs-write-scope, echo-token-in-errors ------------------------------------------------
quirk '{"quirk":"export-needs-write-scope"}' >/dev/null
st=$(curl -sS -o "$TMP/k.json" -w '%{http_code}' -H "Authorization: Bearer $TA" \
    -H 'Accept: application/fhir+json' -H 'Prefer: respond-async' "$BASE/\$export")
[ "$st" = 403 ] && [ "$(jget .resourceType <"$TMP/k.json")" = OperationOutcome ] ||
    fail "export-needs-write-scope: a read token got $st"
grep -q 'write' "$TMP/k.json" || fail "the 403 does not name the write scope"
# a client registered (or configured) with a wildcard write scope can export
st=$(curl -sS -o "$TMP/reg.json" -w '%{http_code}' -H 'Content-Type: application/json' \
    --data '{"client_id":"q-reg","client_secret":"secret-r","scope":"system/*.cruds"}' "$REGISTER")
[ "$st" = 201 ] || fail "registering a system/*.cruds client: $st $(cat "$TMP/reg.json")"
TR=$(token q-reg secret-r 'system/*.cruds')
export_to "$TR" GET "$BASE/\$export?_type=Patient" "$TMP/m.json"
TW=$(token q-w secret-w 'system/*.*')
export_to "$TW" GET "$BASE/\$export?_type=Patient" "$TMP/m.json"
TWR=$(token q-w secret-w 'system/*.read')
st=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TWR" \
    -H 'Accept: application/fhir+json' -H 'Prefer: respond-async' "$BASE/\$export")
[ "$st" = 403 ] || fail "export-needs-write-scope: a read-only token of q-w got $st"; ok

st=$(curl -sS -o "$TMP/e.json" -w '%{http_code}' -H "Authorization: Bearer $TA" "$BASE/Patient/no-such")
[ "$st" = 404 ] && ! grep -qF "$TA" "$TMP/e.json" || fail "a 404 echoed the token without the quirk"
quirk '{"quirk":"echo-token-in-errors","client_id":"q-a"}' >/dev/null
st=$(curl -sS -o "$TMP/e.json" -w '%{http_code}' -H "Authorization: Bearer $TA" "$BASE/Patient/no-such")
[ "$st" = 404 ] && [ "$(jget '.issue[0].diagnostics' <"$TMP/e.json")" = \
    "token $TA was rejected: Patient/no-such is not known" ] || fail "echo-token-in-errors on a 404: $(cat "$TMP/e.json")"
st=$(curl -sS -o "$TMP/e.json" -w '%{http_code}' -H "Authorization: Bearer $TA" \
    -H 'Accept: application/fhir+json' -H 'Prefer: respond-async' "$BASE/\$export")
[ "$st" = 403 ] && grep -qF "token $TA was rejected" "$TMP/e.json" ||
    fail "echo-token-in-errors on a refused kick-off: $st $(cat "$TMP/e.json")"
st=$(curl -sS -o "$TMP/e.json" -w '%{http_code}' -H "Authorization: Bearer $TB" "$BASE/Patient/no-such")
! grep -qF "$TB" "$TMP/e.json" || fail "echo-token-in-errors applied to q-b"
unquirk; ok

# --- count-mismatch, capability-fewer-types, html-429 ----------------------------------------------
quirk '{"quirk":"count-mismatch","client_id":"q-a"}' >/dev/null
export_to "$TA" GET "$BASE/\$export?_type=Patient" "$TMP/m.json"
url=$(jget '.output[0].url' <"$TMP/m.json")
lines=$(curl -sS -H "Authorization: Bearer $TA" "$url" | wc -l)
[ "$lines" = 20 ] && [ "$(jget '.output[0].count' <"$TMP/m.json")" = 21 ] ||
    fail "count-mismatch: $lines lines, count $(jget '.output[0].count' <"$TMP/m.json")"
unquirk; ok

has_types() { curl -sS "$BASE/metadata" | jget '=>d.rest[0].resource.map((r) => r.type).filter((t) => t === "Immunization" || t === "Practitioner").length'; }
[ "$(has_types)" = 2 ] || fail "the CapabilityStatement lacks types without the quirk"
quirk '{"quirk":"capability-fewer-types"}' >/dev/null
[ "$(has_types)" = 0 ] || fail "capability-fewer-types: Immunization or Practitioner still listed"
export_to "$TA" GET "$BASE/\$export?_type=Immunization" "$TMP/m.json"
[ "$(types_of "$TMP/m.json")" = Immunization ] || fail "capability-fewer-types: the export lost Immunization"
unquirk; ok

curl -sS -f -X POST -H 'Content-Type: application/json' \
    --data '{"fault":"429","on":"kickoff","count":2,"retry_after":7}' "$ADMIN/faults" >/dev/null
quirk '{"quirk":"html-429","client_id":"q-a"}' >/dev/null
st=$(curl -sS -o "$TMP/e.html" -D "$TMP/h" -w '%{http_code}|%{content_type}' -H "Authorization: Bearer $TA" \
    -H 'Accept: application/fhir+json' -H 'Prefer: respond-async' "$BASE/\$export")
case "$st" in 429\|text/html*) ;; *) fail "html-429: $st";; esac
grep -q 'Too Many Requests' "$TMP/e.html" && grep -qi '^retry-after: 7' "$TMP/h" ||
    fail "html-429: body or Retry-After"
st=$(curl -sS -o "$TMP/e.json" -w '%{http_code}|%{content_type}' -H "Authorization: Bearer $TB" \
    -H 'Accept: application/fhir+json' -H 'Prefer: respond-async' "$BASE/\$export")
case "$st" in 429\|application/fhir+json*) ;; *) fail "html-429 applied to q-b: $st";; esac
curl -sS -X DELETE "$ADMIN/faults" >/dev/null
unquirk; ok

# --- the admin API: list, hits, selective removal, errors ----------------------------------------
quirk '{"quirk":"ignore-range","client_id":"q-a"}' >/dev/null
quirk '{"quirk":"trickle","param":50000000}' >/dev/null
dl "$TA" "$TMP/part" 0-9 >/dev/null
curl -sS "$ADMIN/quirks" >"$TMP/ql.json"
node -e '
    const q = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const r = q.quirks.find((e) => e.quirk === "ignore-range"), t = q.quirks.find((e) => e.quirk === "trickle");
    if (q.quirks.length !== 2 || r.client_id !== "q-a" || r.hits < 1 || t.param !== 50000000 || "client_id" in t)
        throw new Error(JSON.stringify(q));
    if (!q.known.includes("late-transaction-time") || q.known.length < 14) throw new Error("known " + q.known);
' "$TMP/ql.json" || fail "GET /admin/quirks"
[ "$(curl -sS -X DELETE "$ADMIN/quirks?quirk=trickle" | jget .removed)" = 1 ] || fail "DELETE ?quirk=trickle"
[ "$(curl -sS "$ADMIN/quirks" | jget '.quirks.length')" = 1 ] || fail "the other quirk was removed too"
st=$(curl -sS -o "$TMP/e.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    --data '{"quirk":"bogus"}' "$ADMIN/quirks")
[ "$st" = 400 ] && grep -q 'no-deleted' "$TMP/e.json" || fail "an unknown quirk via the admin API: $st"
st=$(curl -sS -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    --data '{"when":"tomorrow"}' "$ADMIN/mutate")
[ "$st" = 400 ] || fail "mutate with a bad when: $st"
unquirk; ok

stop_sandbox
finish
