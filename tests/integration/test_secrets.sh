#!/usr/bin/env bash
# tests/integration/test_secrets.sh: secrets and honest messages against a server that misbehaves
# (secret_echo_server.mjs, issue #11 points 9 and 10):
#   - a server echoing the live access token in its error bodies (OperationOutcome diagnostics,
#     in prose no pattern catches): the token never shows on stderr (even at -vv), in export-log.jsonl,
#     in the store (sync_runs.error), in `query` output, or in any file the runs write; nor does
#     any client assertion the server received;
#   - core dumps: the process is started with `ulimit -c unlimited` and killed with SIGSEGV while
#     it holds a token (its request hangs): its limits say "Max core file size 0" and no core file
#     is written. A control run with FHIRSYNC_ALLOW_CORE_DUMPS=1 writes one (and it holds the
#     token), when the kernel's core_pattern writes plain files: that shows the check can fail;
#   - doctor: its own hints are never masked ("register the JWKS"), a client_id shaped like a JWT
#     is shown, a "no key matches the kid" answer names the key and the kid, --probe-export finds
#     a kick-off refused with 403 (exit 5);
#   - get answered by an HTML page with 200 is exit 8; expires_in 0 / -5 are named (exit 8).
# The export probe also runs against the sandbox (202, then DELETE). Each command is bounded by the fake server answering at once; the crash test waits for an event
# (the server's hang marker), at most 30 s.
source "$(dirname "$0")/lib.sh"
FS=$FHIRSYNC_BIN
HERE="$FHIRSYNC_SOURCE_DIR/tests/integration"
cd "$TMP"
KEEP='^FHIRSYNC_(BIN|SANDBOX_BIN|SOURCE_DIR|BUILD_DIR|TEST_TMP)$'
for v in $(env | grep -o '^FHIRSYNC_[A-Z_]*' | grep -vE "$KEEP"); do
    unset "$v"
done

mkdir -p srv runs
node "$HERE/secret_echo_server.mjs" srv/ready.json srv/assertions.txt srv/hang >srv/log 2>&1 &
PIDS+=($!)
wait_for_file srv/ready.json
BASE=$(json_get srv/ready.json j.base_url)
TOKEN_URL=$(json_get srv/ready.json j.token_url)
TOKEN=$(json_get srv/ready.json j.token)
"$FS" keygen --out srv/keys >/dev/null
KEY=$(ls "$TMP"/srv/keys/*.key.pem)
export FHIRSYNC_BASE_URL=$BASE FHIRSYNC_CLIENT_ID=secret-test FHIRSYNC_KEY_FILE=$KEY
cd runs

# no_secret FILE... DESCRIPTION: neither the token nor any assertion the server received is in
# the files (binary files included)
no_secret() {
    local what=${*: -1} files=("${@:1:$#-1}") leaked=""
    grep -aqF -- "$TOKEN" "${files[@]}" 2>/dev/null && leaked="the access token"
    if [ -s "$TMP/srv/assertions.txt" ]; then
        while read -r a; do
            grep -aqF -- "$a" "${files[@]}" 2>/dev/null && leaked="$leaked an assertion"
        done <"$TMP/srv/assertions.txt"
    fi
    [ -z "$leaked" ] && ok "$what" || not_ok "$what: $leaked found"
}

# ---- a server echoing the token ------------------------------------------------------------
expect_exit 7 "get: the server answers 400 echoing the token" -- "$FS" get Patient/1 -vv
cp "$TMP/err" get.err
expect_match "$ERR" 'access token \*\*\* is not valid' "the echo is shown, masked"
no_secret get.err "get -vv: the token is not on stderr"

expect_exit 5 "export: kick-off refused with 403 echoing the token" -- \
    "$FS" export --out exp --level system --no-progress -vv
cp "$TMP/err" export.err
expect_match "$(cat exp/export-log.jsonl)" 'refused for \*\*\*' "export-log.jsonl records the masked echo"
no_secret export.err exp/export-log.jsonl "export: the token is in neither stderr nor export-log.jsonl"

set +e
"$FS" sync --store sync.db --json -vv >sync.out 2>sync.err
SYNC_RC=$?
set -e
[ "$SYNC_RC" -ne 0 ] && ok "sync fails against the refusing server (exit $SYNC_RC)" ||
    not_ok "sync succeeded"
RUN_ERR=$(sqlite3 sync.db "SELECT error FROM sync_runs ORDER BY id DESC LIMIT 1")
expect_match "$RUN_ERR" '\*\*\*' "sync_runs.error keeps the server's words, masked"
"$FS" query runs --store sync.db >query.out 2>&1 || true
no_secret sync.out sync.err query.out "sync: the token is not in its output or in query output"
mapfile -t WRITTEN < <(find . -type f)
no_secret "${WRITTEN[@]}" "no file the runs wrote holds the token or an assertion (${#WRITTEN[@]} files)"
[ -s "$TMP/srv/assertions.txt" ] && ok "the server did receive assertions (the check had something to find)" ||
    not_ok "no assertion was received"

# ---- core dumps --------------------------------------------------------------------------------
# crash DIR [env...]: start `get Patient/hang` with unlimited core size, wait until its request
# is in flight (it holds the token), record its limits, SIGSEGV it; sets CRASH_RC and LIMITS
crash() {
    local dir=$1
    shift
    mkdir -p "$dir"
    rm -f "$TMP/srv/hang"
    (cd "$dir" && ulimit -c unlimited && exec env "$@" "$FS" get Patient/hang) \
        >"$dir/out" 2>"$dir/err" &
    local pid=$!
    PIDS+=("$pid")
    wait_for_file "$TMP/srv/hang"
    LIMITS=$(grep 'Max core file size' "/proc/$pid/limits")
    kill -SEGV "$pid"
    set +e
    wait "$pid"
    CRASH_RC=$?
    set -e
}
crash crash-default FHIRSYNC_NOTHING=1
[ "$CRASH_RC" -ne 0 ] && ok "the crashed process ended (status $CRASH_RC)" || not_ok "no crash"
expect_match "$LIMITS" 'Max core file size +0 +0 ' "fhirsync set its core size limit to 0 (both limits)"
CORES=$(find crash-default -name 'core*' | wc -l)
[ "$CORES" = 0 ] && ok "no core file written after SIGSEGV with ulimit -c unlimited" ||
    not_ok "core file(s) written: $(ls crash-default)"

PATTERN=$(cat /proc/sys/kernel/core_pattern)
crash crash-allowed FHIRSYNC_ALLOW_CORE_DUMPS=1
# the hard limit: a sanitizer runtime lowers the soft one on its own
expect_match "$LIMITS" 'Max core file size +[0-9a-z]+ +unlimited' \
    "FHIRSYNC_ALLOW_CORE_DUMPS=1 leaves the limits alone"
CORE=$(find crash-allowed -name 'core*' | head -1)
if [ -n "$CORE" ]; then
    ok "control: with FHIRSYNC_ALLOW_CORE_DUMPS=1 a core file is written ($CORE)"
    grep -aqF "$TOKEN" "$CORE" && ok "control: that core holds the token (what the default prevents)" ||
        ok "control: the token was not found in the core (already wiped)"
    rm -f "$CORE"
else
    echo "# control skipped: no core file even when allowed (core_pattern '$PATTERN', or a" \
        "sanitizer build that turns core dumps off)"
fi

# ---- doctor ------------------------------------------------------------------------------------
echo '{"keys":[]}' >empty-jwks.json
expect_exit 5 "doctor with a registered JWKS that lacks the key" -- \
    "$FS" doctor --registered-jwks empty-jwks.json
expect_match "$OUT" 'your assertion: register the JWKS of this key' \
    "doctor's own hint is not masked ('register' stays)"
expect_no_match "$OUT" 'assertion: \*\*\*' "no pattern ate the hint"

JWT_ID='eyJhbGciOiJub25lIn0.eyJhcHAiOiJ0ZXN0In0.c2ln'
expect_exit 0 "doctor with a client_id shaped like a JWT" -- "$FS" doctor --client-id "$JWT_ID"
expect_match "$OUT" "iss: $JWT_ID" "the client_id is shown as iss"
expect_match "$OUT" "aud: $TOKEN_URL" "aud is shown"
expect_match "$OUT" 'exp: [0-9]+ \(20[0-9-]+T' "exp is shown"
expect_match "$OUT" 'jti: [A-Za-z0-9_-]{43}' "jti is shown"
no_secret "$TMP/out" "doctor shows no token"

KID=$("$FS" doctor | sed -n 's/.*kid \([A-Za-z0-9_-]*\) (RFC 7638.*/\1/p' | head -1)
expect_exit 5 "doctor: the server has no key for the kid" -- \
    "$FS" doctor --token-url "$TOKEN_URL?fail=kid"
expect_match "$OUT" "no key with kid $KID for this client: the key in $KEY" \
    "the hint names the key file and the kid"
expect_no_match "$OUT" 'clock skew|scopes are not' "the hint does not blame claims or scopes"

expect_exit 5 "doctor --probe-export: the kick-off is refused (403)" -- "$FS" doctor --probe-export
expect_match "$OUT" 'FAIL\] export permission' "the probe is the failing step"
expect_match "$OUT" 'system/\*\.\*' "the hint names the scope some servers want"
no_secret "$TMP/out" "the probe's output holds no token"

# the probe against the sandbox: kick-off accepted (202), then the job is DELETEd at once
: "${FHIRSYNC_SANDBOX_BIN:?FHIRSYNC_SANDBOX_BIN must point at fhirsync-sandbox}"
mkdir -p "$TMP/sb"
"$FHIRSYNC_SANDBOX_BIN" --port 0 --ready-file "$TMP/sb/ready.json" --patients 3 >"$TMP/sb/log" 2>&1 &
PIDS+=($!)
wait_for_file "$TMP/sb/ready.json"
SB_ADMIN=$(json_get "$TMP/sb/ready.json" j.admin_url)
printf '{"client_id":"probe-test","scope":"system/*.read","jwks":%s}' "$(cat "$TMP/srv/keys/jwks.json")" |
    curl -sf -X POST -H 'Content-Type: application/json' --data-binary @- \
        "$(json_get "$TMP/sb/ready.json" j.register_url)" >/dev/null
expect_exit 0 "doctor --probe-export against the sandbox" -- env \
    FHIRSYNC_BASE_URL="$(json_get "$TMP/sb/ready.json" j.base_url)" FHIRSYNC_CLIENT_ID=probe-test \
    "$FS" doctor --probe-export
expect_match "$OUT" 'ok  \] export permission' "the probe passes"
expect_match "$OUT" 'Patient/\$export\?_type=Patient .*HTTP 202' "a Patient-level kick-off was accepted"
expect_match "$OUT" 'job cancelled: DELETE .*HTTP 202' "the job was cancelled at once"
SB_LOG=$(curl -sf "$SB_ADMIN/requests")
[ "$(grep -c '"method":"DELETE"' <<<"$SB_LOG")" = 1 ] && ok "the sandbox logged one DELETE" ||
    not_ok "sandbox requests: $(grep -o '"method":"[A-Z]*","[a-z]*":"[^"]*' <<<"$SB_LOG" | tail -5)"

# ---- codes and messages ------------------------------------------------------------------------
expect_exit 8 "get answered by an HTML page with 200" -- "$FS" get Patient/html
expect_match "$ERR" 'HTML page .*where FHIR JSON was expected' "the message names the HTML"
expect_no_match "$OUT" 'session expired' "the HTML is not printed"
expect_exit 8 "HTML labelled application/fhir+json" -- "$FS" get Patient/html-as-json
for v in 0 -5; do
    expect_exit 8 "expires_in $v" -- "$FS" token --token-url "$TOKEN_URL?expires_in=$v"
    expect_match "$ERR" "expires_in $v is not a usable lifetime" "expires_in $v is named as such"
    expect_no_match "$ERR" 'has no expires_in' "expires_in $v is not called missing"
done
finish
