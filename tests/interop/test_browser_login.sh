#!/usr/bin/env bash
# interop/test_browser_login.sh: the login a clinic does once, end to end, with a real headless
# browser (Debian's chromium driven by puppeteer-core, tests/interop/browser_login.mjs) against the
# sandbox's SMART App Launch pages: `fhirsync login` prints the authorization URL and listens on
# 127.0.0.1 -> the browser signs in and consents -> the redirect reaches fhirsync's listener ->
# the tokens are stored (0600) -> `fhirsync sync` runs unattended in crawl mode, renewing its
# short-lived access tokens with the refresh token, which rotates on every renewal -> a refresh
# token the server revoked ends the next run with exit 5 and the way out ("fhirsync login
# again"). Also: a consent denied, a wrong password then the right one, and a redirect URI the
# app did not register. Screenshots of every page go to $FHIRSYNC_ARTIFACTS_DIR (default
# build/artifacts/browser-login).
source "$(dirname "$0")/../integration/lib.sh"
ensure_npm_peers
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
[ -x "$CHROMIUM" ] || die "$CHROMIUM is missing (scripts/install-deps.sh installs Debian's chromium)"
export CHROMIUM
DRIVER=$FHIRSYNC_SOURCE_DIR/tests/interop/browser_login.mjs
SHOTS=${FHIRSYNC_ARTIFACTS_DIR:-${FHIRSYNC_BUILD_DIR:-$TMP}/artifacts}/browser-login
rm -rf "$SHOTS"
mkdir -p "$SHOTS"

# The app registered a loopback redirect URI without a port: fhirsync listens on a free port of
# 127.0.0.1 and the sandbox accepts any port there (RFC 8252 section 7.3).
REDIRECT=http://127.0.0.1/callback

start_sandbox --patients 8
printf '{"client_id":"clinic-app","redirect_uris":["%s"],"token_endpoint_auth_method":"none"}' \
    "$REDIRECT" |
    curl -sS --fail-with-body -X POST -H 'Content-Type: application/json' --data-binary @- \
        "$REGISTER_URL" >/dev/null || die "registering the app with the sandbox"
admin() { curl -sS --fail-with-body -X POST -H 'Content-Type: application/json' --data "$2" \
    "$ADMIN_URL/$1"; }

CRED=$TMP/state/clinic.credentials
cat >"$TMP/fhirsync.ini" <<INI
[endpoint clinic]
base_url         = $BASE_URL
client_id        = clinic-app
auth             = login
credentials_file = $CRED
store            = $TMP/clinic.db
INI
export FHIRSYNC_CONFIG=$TMP/fhirsync.ini

# login ENDPOINT-ARGS... with the browser driver's arguments after --: both run, the login's
# status in LOGIN_RC, its stderr in $TMP/login.err, the driver's JSON line in $TMP/driver.out
login_with_browser() {
    local driver_args=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do shift; done
    shift
    driver_args=("$@")
    rm -f "$TMP/url"
    FHIRSYNC_LOGIN_URL_FILE=$TMP/url "$FHIRSYNC_BIN" login --endpoint clinic --no-browser \
        --timeout 90 </dev/null >"$TMP/login.out" 2>"$TMP/login.err" &
    local login_pid=$!
    DRIVER_RC=0
    node "$DRIVER" --url-file "$TMP/url" --shots "$SHOTS/$ROUND" --timeout 60 "${driver_args[@]}" \
        >"$TMP/driver.out" 2>"$TMP/driver.err" || DRIVER_RC=$?
    LOGIN_RC=0
    wait "$login_pid" || LOGIN_RC=$?
}
refresh_token_of() { node -e 'console.log(require("crypto").createHash("sha256")
    .update(JSON.parse(require("fs").readFileSync(process.argv[1])).refresh_token||"").digest("hex"))' "$1"; }

ROUND=denied
login_with_browser -- --deny
[ "$DRIVER_RC" -eq 0 ] && ok "the browser signed in and denied consent" ||
    not_ok "the browser driver failed: $(cat "$TMP/driver.err")"
[ "$LOGIN_RC" -eq 5 ] && grep -q "access_denied" "$TMP/login.err" &&
    ok "a denied consent ends login with exit 5 naming access_denied" ||
    not_ok "denied: exit $LOGIN_RC: $(tail -3 "$TMP/login.err")"
[ ! -e "$CRED" ] && ok "nothing is written after a denied consent" || not_ok "$CRED was written"
grep -q "authorize: http" "$TMP/login.err" && ok "login prints the authorization URL" ||
    not_ok "no 'authorize:' line"
grep -q "aud=$(node -p 'encodeURIComponent(process.argv[1])' "$BASE_URL")" "$TMP/url" &&
    grep -q "code_challenge_method=S256" "$TMP/url" &&
    ok "the authorization URL carries aud = the FHIR base URL and an S256 PKCE challenge" ||
    not_ok "authorization URL: $(cat "$TMP/url")"

ROUND=granted
login_with_browser -- --wrong-password --patient pat-2
[ "$DRIVER_RC" -eq 0 ] && ok "the browser signed in (after a wrong password) and consented" ||
    not_ok "the browser driver failed: $(cat "$TMP/driver.err")"
grep -qE '"landed":"http://127\.0\.0\.1:[0-9]+/callback\?' "$TMP/driver.out" &&
    ok "the browser was redirected to fhirsync's loopback listener" ||
    not_ok "landed elsewhere: $(cat "$TMP/driver.out")"
[ "$LOGIN_RC" -eq 0 ] && ok "fhirsync login succeeded" ||
    not_ok "login exit $LOGIN_RC: $(tail -5 "$TMP/login.err")"
[ -f "$CRED" ] && [ "$(stat -c %a "$CRED")" = 600 ] && ok "credentials stored with mode 0600" ||
    not_ok "credentials file: $(ls -l "$CRED" 2>&1)"
[ "$(json_get "$CRED" 'j.patient')" = pat-2 ] && ok "the patient picked in the browser is the context" ||
    not_ok "patient: $(json_get "$CRED" 'j.patient')"
grep -q offline_access <<<"$(json_get "$CRED" 'j.scope')" && [ -n "$(json_get "$CRED" 'j.refresh_token')" ] &&
    ok "offline_access granted: a refresh token is stored" || not_ok "no refresh token stored"
token=$(json_get "$CRED" 'j.refresh_token')
! grep -qF "$token" "$TMP/login.out" "$TMP/login.err" && ok "the refresh token is not printed" ||
    not_ok "the refresh token appears in login's output"
ls "$SHOTS/granted"/*-consent.png >/dev/null 2>&1 && ok "screenshots saved in $SHOTS" ||
    not_ok "no screenshots in $SHOTS/granted"

rc=0
"$FHIRSYNC_BIN" doctor --endpoint clinic >"$TMP/doctor.out" 2>&1 || rc=$?
[ "$rc" -eq 0 ] && grep -qi "credentials" "$TMP/doctor.out" && grep -q "offline_access" "$TMP/doctor.out" &&
    ok "doctor passes for the login and reports its credentials" ||
    not_ok "doctor after login: exit $rc: $(tail -8 "$TMP/doctor.out")"

# The access token expires while the sync runs (the sandbox's expire-token fault, on the sync's
# first search): the 401 makes fhirsync get a new one with the refresh token, which rotates.
admin faults '{"fault": "expire-token", "on": "search", "client_id": "clinic-app", "count": 1}' \
    >/dev/null
before=$(refresh_token_of "$CRED")
if "$FHIRSYNC_BIN" sync --endpoint clinic -v >"$TMP/sync.out" 2>"$TMP/sync.err"; then
    ok "fhirsync sync ran unattended with the login's refresh token (crawl mode)"
else
    not_ok "sync failed: $(tail -5 "$TMP/sync.err")"
fi
hits=$(curl -sS "$ADMIN_URL/faults" | node -e 'let t="";process.stdin.on("data",d=>t+=d).on("end",()=>
    console.log(JSON.parse(t).faults.find(f=>f.fault==="expire-token").hits))')
[ "$hits" = 1 ] && ok "the access token expired in the middle of the sync" ||
    not_ok "the expire-token fault fired $hits times"
patients=$(sqlite3 "$TMP/clinic.db" 'SELECT count(*) FROM "Patient"' 2>/dev/null || echo 0)
obs=$(sqlite3 "$TMP/clinic.db" 'SELECT count(*) FROM "Observation"' 2>/dev/null || echo 0)
[ "$patients" = 1 ] && [ "$obs" -gt 0 ] &&
    ok "the store holds the one patient of the login and its records ($obs observations)" ||
    not_ok "store: $patients patients, $obs observations"
after=$(refresh_token_of "$CRED")
grants=$(curl -sS "$ADMIN_URL/grants?client_id=clinic-app")
rotations=$(node -e 'const g=JSON.parse(process.argv[1]).grants.find(g=>!g.revoked);console.log(g?g.rotations:0)' "$grants")
[ "$before" != "$after" ] && [ "$rotations" -ge 2 ] &&
    ok "the refresh token rotated ($rotations times) and the newest is on disk" ||
    not_ok "rotation: file changed=$([ "$before" != "$after" ] && echo yes || echo no), rotations=$rotations"
"$FHIRSYNC_BIN" token --endpoint clinic >"$TMP/token.out" 2>"$TMP/token.err" &&
    [ "$(refresh_token_of "$CRED")" != "$after" ] &&
    ok "fhirsync token renews with the rotated refresh token and stores the next one" ||
    not_ok "token after rotation: $(tail -3 "$TMP/token.err")"

admin revoke '{"client_id": "clinic-app"}' >/dev/null
rc=0
"$FHIRSYNC_BIN" sync --endpoint clinic >"$TMP/sync2.out" 2>"$TMP/sync2.err" || rc=$?
[ "$rc" -eq 5 ] && grep -q "fhirsync login" "$TMP/sync2.err" &&
    ok "a revoked refresh token: exit 5, and the message says to run fhirsync login again" ||
    not_ok "after revocation: exit $rc: $(tail -3 "$TMP/sync2.err")"

# A redirect URI the app did not register: the sandbox answers an HTML error page and never
# redirects, so the browser stays there and login times out, writing nothing.
rm -f "$CRED"
echo "redirect_uri     = http://127.0.0.1/elsewhere" >>"$TMP/fhirsync.ini"
ROUND=unregistered
rm -f "$TMP/url"
FHIRSYNC_LOGIN_URL_FILE=$TMP/url "$FHIRSYNC_BIN" login --endpoint clinic --no-browser --timeout 5 \
    </dev/null >"$TMP/login.out" 2>"$TMP/login.err" &
login_pid=$!
node "$DRIVER" --url-file "$TMP/url" --shots "$SHOTS/$ROUND" --timeout 30 --expect-error \
    >"$TMP/unreg.out" 2>"$TMP/unreg.err" || true
LOGIN_RC=0
wait "$login_pid" || LOGIN_RC=$?
[ "$(json_get "$TMP/unreg.out" j.status)" = 400 ] &&
    grep -q "not registered" <<<"$(json_get "$TMP/unreg.out" j.description)" &&
    [ "${LANDED:=$(json_get "$TMP/unreg.out" j.landed)}" = "$(cat "$TMP/url")" ] &&
    ok "an unregistered redirect URI: the sandbox shows an error page and does not redirect" ||
    not_ok "unregistered redirect: $(cat "$TMP/unreg.out" "$TMP/unreg.err")"
[ "$LOGIN_RC" -ne 0 ] && [ ! -e "$CRED" ] && ok "login gives up (exit $LOGIN_RC) and writes nothing" ||
    not_ok "login exit $LOGIN_RC, credentials $(ls "$CRED" 2>&1)"

stop_sandbox
finish
