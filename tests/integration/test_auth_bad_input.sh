#!/usr/bin/env bash
# integration/test_auth_bad_input.sh: bad input on the authentication path gives a clear one-line
# error and the documented exit code, never a crash: malformed and truncated PEM, a key of the
# wrong type, a world-readable key, a missing client id, plain http off loopback, and a broken
# server (discovery answering HTML, 500, a redirect loop, a 10 MB body; a token response without
# access_token; a redirected token endpoint).
source "$(dirname "$0")/lib.sh"
F=$FHIRSYNC_BIN
cd "$TMP"

node "$FHIRSYNC_SOURCE_DIR/tests/integration/bad_server.mjs" ready.json 2>bad.log &
PIDS+=($!)
wait_for_file ready.json
PORT=$(json_get ready.json j.port)
B=http://127.0.0.1:$PORT

"$F" keygen --alg RS384 --out keys --name rs >/dev/null
"$F" keygen --alg ES384 --out keys --name ec >/dev/null 2>&1 || "$F" keygen --alg ES384 --out keys-ec --name ec >/dev/null
EC=keys/ec.key.pem
[ -f "$EC" ] || EC=keys-ec/ec.key.pem

# one_line_error: stderr holds exactly one "fhirsync: ..." error line (hint lines aside)
one_line_error() {
    local n
    n=$(printf '%s\n' "$ERR" | grep -c . || true)
    local hints
    hints=$(printf '%s\n' "$ERR" | grep -c "^fhirsync: run 'fhirsync doctor'" || true)
    [ $((n - hints)) -eq 1 ] && ok "$1: one-line error" || not_ok "$1: $n lines: $ERR"
}

run() { # EXIT DESCRIPTION PATTERN -- args...
    local want=$1 what=$2 pattern=$3
    shift 4
    expect_exit "$want" "$what" -- "$F" "$@"
    expect_match "$ERR" "$pattern" "$what: message says why"
    one_line_error "$what"
}

good=(--base-url "$B/notoken" --client-id c1)

# --- keys --------------------------------------------------------------------------------------
begin="-----BEGIN PRIV""ATE KEY-----"
printf '%s\nthis is not base64 at all\n' "$begin" >bad.pem
chmod 600 bad.pem
run 4 "malformed PEM" "PEM|key" -- token "${good[@]}" --key bad.pem
head -c 300 keys/rs.key.pem >trunc.pem
chmod 600 trunc.pem
run 4 "truncated PEM" "PEM|key|truncated" -- token "${good[@]}" --key trunc.pem
printf 'not a key at all' >junk.pem
chmod 600 junk.pem
run 4 "a file that is not a key" "key" -- token "${good[@]}" --key junk.pem
run 4 "EC key with alg RS384" "RS384" -- token "${good[@]}" --key "$EC" --alg RS384
cp keys/rs.key.pem open.pem
chmod 644 open.pem
run 4 "world-readable key file" "chmod 600" -- token "${good[@]}" --key open.pem
run 13 "missing key file" "open.missing.*No such file" -- token "${good[@]}" --key open.missing

# --- configuration -----------------------------------------------------------------------------
run 3 "missing client id" "client_id" -- token --base-url "$B/notoken" --key keys/rs.key.pem
run 3 "missing base URL" "base_url|base URL" -- token --client-id c1 --key keys/rs.key.pem
run 3 "plain http to a non-loopback host" "plain http" -- token --base-url http://ehr.example.org/fhir \
    --client-id c1 --key keys/rs.key.pem
run 2 "unknown flag" "unknown|unrecognized" -- token --no-such-flag

# --- a broken server ---------------------------------------------------------------------------
run 8 "discovery answers HTML" "HTML" -- token --base-url "$B/html" --client-id c1 \
    --key keys/rs.key.pem
run 7 "discovery answers 500" "500" -- token --base-url "$B/e500" --client-id c1 \
    --key keys/rs.key.pem
run 8 "discovery redirects in a loop" "redirect" -- token --base-url "$B/loop" --client-id c1 \
    --key keys/rs.key.pem
run 8 "discovery answers a 10 MB body" "larger than|limit" -- token --base-url "$B/big" \
    --client-id c1 --key keys/rs.key.pem
run 8 "token response without access_token" "access_token" -- token --base-url "$B/notoken" \
    --client-id c1 --key keys/rs.key.pem
run 8 "token endpoint answers a redirect" "redirect" -- token --base-url "$B/redirtok" \
    --client-id c1 --key keys/rs.key.pem
run 9 "nothing listening" "network|connect|Connection refused" -- token \
    --base-url http://127.0.0.1:9/fhir --client-id c1 --key keys/rs.key.pem

# --- doctor explains the same failures --------------------------------------------------------
expect_exit 8 "doctor on an HTML discovery" -- "$F" doctor --base-url "$B/html" --client-id c1 \
    --key keys/rs.key.pem
expect_match "$OUT" "\[FAIL\] discovery" "doctor marks discovery as failed"
expect_match "$OUT" "HTML page usually means" "doctor explains the HTML answer"
expect_exit 4 "doctor with an RS256 key for eClinicalWorks" -- "$F" doctor \
    --base-url "$B/notoken" --vendor eclinicalworks --client-id c1 --key keys/rs.key.pem --alg RS256
expect_match "$OUT" "RS384 only" "doctor names eClinicalWorks' RS384 requirement"
expect_exit 3 "doctor on the patient-facing healow host" -- "$F" doctor \
    --base-url https://fhir4.healow.com/fhir/r4/ABCDEF --client-id c1 --key keys/rs.key.pem
expect_match "$OUT" "patient-facing" "doctor explains the healow host"
finish
