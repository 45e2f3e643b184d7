#!/usr/bin/env bash
# interop/test_oidc_login.sh: `fhirsync login` (auth = login: SMART App Launch, authorization code
# with PKCE, refresh tokens) against a real OAuth 2.0 server, the npm oidc-provider package
# (oidc_login_provider.mjs), with oidc_login_driver.mjs playing the browser. A public client logs
# in through the loopback listener and a private_key_jwt client by pasting the redirect URL on
# stdin (--no-browser); `fhirsync token` then renews with the refresh grant, the rotated refresh
# token is on disk, and a revoked one gives exit 5 and the re-login message. Bad input: a forged
# state, a replayed redirect, access_denied, no refresh token (a warning), a 0644 credentials
# file, an interrupted login (nothing written), and no secret in a debug log.
source "$(dirname "$0")/../integration/lib.sh"
ensure_npm_peers
F=$FHIRSYNC_BIN
D="$FHIRSYNC_SOURCE_DIR/tests/interop"
cd "$TMP"
clean_fhirsync_env 2>/dev/null || true
unset DISPLAY WAYLAND_DISPLAY

"$F" keygen --alg ES384 --out keys --name app >/dev/null
node "$D/oidc_login_provider.mjs" --ready ready.json --jwt-client jwt-app:ES384:keys/jwks.json \
    2>provider.log &
PIDS+=($!)
wait_for_file ready.json || die "the oidc-provider peer did not start"
BASE=$(json_get ready.json j.base_url)
PORT=$(json_get ready.json j.port)
cat >fhirsync.ini <<INI
[defaults]
base_url = $BASE
auth = login

[endpoint pub]
client_id = public-app
credentials_file = $TMP/pub.credentials

[endpoint jwt]
client_id = jwt-app
auth_method = private_key_jwt
key_file = $TMP/keys/app.key.pem
credentials_file = $TMP/jwt.credentials

[endpoint norefresh]
client_id = norefresh-app
credentials_file = $TMP/norefresh.credentials
INI
export FHIRSYNC_CONFIG=$TMP/fhirsync.ini
refresh_of() { json_get "$1" j.refresh_token; }

# start_login NAME [login options]: `fhirsync login` in the background, stdin from the fifo
# NAME.in (held open on fd 3 for the paste), the authorization URL in NAME.url
start_login() {
    local name=$1
    shift
    rm -f "$name.url" "$name.in"
    mkfifo "$name.in"
    FHIRSYNC_LOGIN_URL_FILE=$TMP/$name.url "$F" login --endpoint "$name" --timeout 60 "$@" \
        <"$name.in" >"$name.out" 2>"$name.err" &
    LOGIN_PID=$!
    PIDS+=("$LOGIN_PID")
    exec 3>"$name.in"
    wait_for_file "$name.url" 20 || not_ok "login $name printed no URL: $(cat "$name.err")"
}
# end_login: close the paste and collect the exit status in LOGIN_RC
end_login() {
    exec 3>&-
    set +e
    wait "$LOGIN_PID"
    LOGIN_RC=$?
    set -e
}

# --- a public client through the loopback listener ----------------------------------------------
start_login pub --no-browser
grep -qE "^authorize: http://127\.0\.0\.1:$PORT/auth\?" pub.err && ok "the URL on its own line" ||
    not_ok "no 'authorize: URL' line: $(cat pub.err)"
url=$(cat pub.url)
for p in response_type=code client_id=public-app "redirect_uri=http%3A%2F%2F127.0.0.1%3A[0-9]+%2Fcallback" \
    "aud=http%3A%2F%2F127.0.0.1%3A$PORT%2Ffhir(&|$)" code_challenge_method=S256 \
    "code_challenge=[A-Za-z0-9_-]{43}(&|$)" "state=[A-Za-z0-9_-]{43}" \
    "scope=openid%20fhirUser%20offline_access%20launch%2Fpatient%20patient%2F%2A.read"; do
    expect_match "$url" "$p" "authorization URL has $p"
done
node "$D/oidc_login_driver.mjs" "$url" --deliver >pub.redirect 2>pub.driver ||
    not_ok "driver failed: $(cat pub.driver)"
expect_match "$(cat pub.driver)" "delivered, HTTP 200" "the listener answered the browser with 200"
end_login
[ "$LOGIN_RC" -eq 0 ] && ok "login through the listener (exit 0)" ||
    not_ok "login exit $LOGIN_RC: $(cat pub.err)"
expect_match "$(cat pub.out)" "patient: +pat-1" "summary shows the patient"
expect_match "$(cat pub.out)" "fhirUser: +http://127.0.0.1:$PORT/fhir/Practitioner/clinician-1" \
    "summary shows fhirUser from the id_token"
expect_match "$(cat pub.out)" "refresh token: +yes" "summary says a refresh token came"
expect_match "$(cat pub.err)" "not granted: offline_access" "scopes narrower than asked: warned"
[ "$(stat -c %a pub.credentials)" = 600 ] && ok "credentials file mode 0600" ||
    not_ok "credentials mode $(stat -c %a pub.credentials)"
rt0=$(refresh_of pub.credentials)
[ ${#rt0} -ge 20 ] && ok "a refresh token stored" || not_ok "no refresh token in the file"
expect_no_match "$(cat pub.out pub.err)" "$rt0" "the refresh token is not printed"

# --- refresh, rotation, revocation --------------------------------------------------------------
expect_exit 0 "token via the refresh grant" -- "$F" token --endpoint pub -vv
expect_match "$ERR" "refresh_token" "the refresh grant was used"
expect_no_match "$ERR" "$rt0" "the old refresh token is not in the debug log"
rt1=$(refresh_of pub.credentials)
[ -n "$rt1" ] && [ "$rt1" != "$rt0" ] && ok "rotation: the file holds the new refresh token" ||
    not_ok "refresh token not rotated on disk"
expect_no_match "$ERR" "$rt1" "the new refresh token is not in the debug log"
expect_exit 0 "a second refresh with the rotated token" -- "$F" token --endpoint pub
rt2=$(refresh_of pub.credentials)
[ "$rt2" != "$rt1" ] && ok "rotated again" || not_ok "not rotated the second time"
curl -fsS "http://127.0.0.1:$PORT/admin/revoke?token=$rt2" >/dev/null || not_ok "revoke failed"
expect_exit 5 "a revoked refresh token" -- "$F" token --endpoint pub
expect_match "$ERR" "run 'fhirsync login --endpoint pub' again" "revoked: the re-login message"
expect_match "$ERR" "invalid_grant" "revoked: the server's error quoted"

# --- a private_key_jwt client, the redirect pasted ----------------------------------------------
start_login jwt --no-browser
node "$D/oidc_login_driver.mjs" "$(cat jwt.url)" >jwt.redirect 2>jwt.driver ||
    not_ok "driver failed: $(cat jwt.driver)"
printf '  %s  \n' "$(cat jwt.redirect)" >&3
end_login
[ "$LOGIN_RC" -eq 0 ] && ok "login with a pasted redirect, private_key_jwt (exit 0)" ||
    not_ok "login exit $LOGIN_RC: $(cat jwt.err)"
jrt0=$(refresh_of jwt.credentials)
expect_exit 0 "token via refresh, private_key_jwt" -- "$F" token --endpoint jwt
[ "$(refresh_of jwt.credentials)" != "$jrt0" ] && ok "private_key_jwt: rotation on disk" ||
    not_ok "private_key_jwt: not rotated"

# --- bad input ---------------------------------------------------------------------------------
cp jwt.credentials jwt.before
start_login jwt --no-browser
node "$D/oidc_login_driver.mjs" "$(cat jwt.url)" >forged.redirect 2>/dev/null
sed -E 's/state=[^&]+/state=forged-state-value/' forged.redirect >&3
end_login
[ "$LOGIN_RC" -eq 5 ] && ok "forged state refused (exit 5)" || not_ok "forged state: exit $LOGIN_RC"
expect_match "$(cat jwt.err)" "state does not match" "forged state: the message says so"
cmp -s jwt.before jwt.credentials && ok "forged state: nothing written" ||
    not_ok "forged state changed the credentials file"

start_login jwt --no-browser
cat jwt.redirect >&3 # the first login's redirect again: its code is spent, its state is not ours
end_login
[ "$LOGIN_RC" -eq 5 ] && ok "replayed redirect refused (exit 5)" || not_ok "replay: exit $LOGIN_RC"
cmp -s jwt.before jwt.credentials && ok "replayed redirect: nothing written" ||
    not_ok "replay changed the credentials file"

start_login jwt --no-browser
node "$D/oidc_login_driver.mjs" "$(cat jwt.url)" --deny >denied.redirect 2>/dev/null
expect_match "$(cat denied.redirect)" "error=access_denied" "the driver got access_denied"
cat denied.redirect >&3
end_login
[ "$LOGIN_RC" -eq 5 ] && ok "access_denied (exit 5)" || not_ok "access_denied: exit $LOGIN_RC"
expect_match "$(cat jwt.err)" "access_denied \(the user declined the request\)" \
    "access_denied: error and description quoted"
cmp -s jwt.before jwt.credentials && ok "access_denied: nothing written" ||
    not_ok "access_denied changed the credentials file"

start_login norefresh --no-browser
node "$D/oidc_login_driver.mjs" "$(cat norefresh.url)" --deliver >/dev/null 2>&1
end_login
[ "$LOGIN_RC" -eq 0 ] && ok "login without a refresh token (exit 0)" ||
    not_ok "no refresh: exit $LOGIN_RC: $(cat norefresh.err)"
expect_match "$(cat norefresh.err)" "no refresh token .*unattended sync cannot run" \
    "no refresh token: warned"
expect_exit 0 "token from the stored access token (no refresh token)" -- \
    "$F" token --endpoint norefresh

set +e
"$F" doctor --endpoint jwt >doctor.out 2>&1
set -e
expect_match "$(cat doctor.out)" "PKCE methods: S256" "doctor: the login's server side"
expect_match "$(cat doctor.out)" "refresh token: present" "doctor: the credentials file"
expect_match "$(cat doctor.out)" "not granted: offline_access" "doctor: narrower scopes"
set +e
"$F" doctor --endpoint norefresh >doctor.out 2>&1
set -e
expect_match "$(cat doctor.out)" "no refresh token: offline_access was not granted" \
    "doctor: no refresh token"

chmod 644 jwt.credentials
expect_exit 4 "a 0644 credentials file is refused" -- "$F" token --endpoint jwt
expect_match "$ERR" "readable by group or others \(mode 0644\): run chmod 600" \
    "0644: the key files' message"
chmod 600 jwt.credentials

rm -f pub.credentials
start_login pub --no-browser
kill -INT "$LOGIN_PID"
end_login
[ "$LOGIN_RC" -eq 12 ] && ok "interrupted login (exit 12)" || not_ok "interrupted: exit $LOGIN_RC"
[ ! -e pub.credentials ] && ok "interrupted: nothing written" || not_ok "interrupted: file written"
expect_exit 5 "no credentials file" -- "$F" token --endpoint pub
expect_match "$ERR" "run 'fhirsync login --endpoint pub'" "no credentials: names fhirsync login"
finish
