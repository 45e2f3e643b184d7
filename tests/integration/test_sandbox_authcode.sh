#!/usr/bin/env bash
# test_sandbox_authcode.sh: the sandbox's SMART App Launch (standalone, authorization code with
# PKCE, refresh tokens), driven with curl and sandbox_authcode_browser.mjs as the browser (it
# fills the documented form fields and reads the Location header: nothing listens on the
# loopback redirect_uri). Success, the refused inputs (HTML error vs error redirect), code
# replay and expiry (the admin API shortens the code lifetime: no sleeping), refresh rotation,
# reuse, revocation and expiry, the patient compartment, client authentication per
# registration (public, client_secret_basic/_post, private_key_jwt), and the App Launch quirks.
set -euo pipefail

source "$(dirname "$0")/lib.sh"
ensure_npm_peers

BROWSER="node $FHIRSYNC_SOURCE_DIR/tests/integration/sandbox_authcode_browser.mjs"
CB=http://127.0.0.1:9/callback # registered; nothing listens there
SCOPE="launch/patient openid fhirUser offline_access patient/*.rs"

start_sandbox --patients 8
READY=$SANDBOX_DIR/ready.json
ADMIN=$ADMIN_URL

register() { # JSON -> prints the HTTP status
    curl -sS -o "$TMP/reg.json" -w '%{http_code}' -H 'Content-Type: application/json' --data "$1" "$REGISTER_URL"
}
# browse CLIENT SCOPE [OPTIONS_JSON] [REDIRECT_URI] -> $TMP/flow.json
browse() { $BROWSER "$READY" "$1" "${4:-$CB}" "$2" "${3:-}" >"$TMP/flow.json"; }
flow() { jget "$1" <"$TMP/flow.json"; }
# token FIELDS... -> "status" and the body in $TMP/tok.json
token() {
    local args=()
    for f in "$@"; do args+=(--data-urlencode "$f"); done
    curl -sS -o "$TMP/tok.json" -w '%{http_code}' "${args[@]}" "$TOKEN_URL"
}
tok() { jget "$1" <"$TMP/tok.json"; }
exchange() { # CLIENT [extra token fields...]: the code of $TMP/flow.json
    local client=$1
    shift
    token grant_type=authorization_code "client_id=$client" "code=$(flow .params.code)" \
        "redirect_uri=$CB" "code_verifier=$(flow .verifier)" "$@"
}

[ "$(register '{"client_id":"app-pub","redirect_uris":["'$CB'"]}')" = 201 ] || die "register app-pub: $(cat "$TMP/reg.json")"
[ "$(jget .token_endpoint_auth_method <"$TMP/reg.json")" = none ] || fail "a client with only redirect_uris is public"

# --- discovery -------------------------------------------------------------------------------------
curl -sS "$BASE_URL/.well-known/smart-configuration" >"$TMP/conf.json"
node -e '
    const c = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const need = (list, ...items) => { for (const i of items) if (!(list || []).includes(i)) throw new Error("missing " + i); };
    if (!c.authorization_endpoint.endsWith("/auth/authorize") || !c.jwks_uri) throw new Error("endpoints");
    need(c.code_challenge_methods_supported, "S256");
    if (c.code_challenge_methods_supported.includes("plain")) throw new Error("plain listed");
    need(c.grant_types_supported, "client_credentials", "authorization_code", "refresh_token");
    need(c.response_types_supported, "code");
    need(c.scopes_supported, "openid", "fhirUser", "offline_access", "launch/patient", "system/*.read");
    need(c.capabilities, "launch-standalone", "client-public", "client-confidential-symmetric",
         "client-confidential-asymmetric", "context-standalone-patient", "permission-offline",
         "permission-patient", "permission-user", "permission-v1", "permission-v2");
' "$TMP/conf.json" && ok "discovery lists the App Launch endpoints and capabilities" || fail "discovery: $(cat "$TMP/conf.json")"

# --- success with PKCE -----------------------------------------------------------------------------
browse app-pub "$SCOPE" '{"state":"st-forged-or-not"}'
[ "$(flow .step)" = consent ] && [ "$(flow .status)" = 302 ] && [ -n "$(flow .params.code)" ] ||
    fail "Allow did not redirect with a code: $(cat "$TMP/flow.json")"
[ "$(flow .params.state)" = st-forged-or-not ] && ok "the state is echoed as sent" || fail "state: $(flow .params.state)"
[[ "$(flow .location)" == "$CB?"* ]] || fail "the redirect does not go to the registered URI: $(flow .location)"
cp "$TMP/flow.json" "$TMP/flow1.json"
[ "$(exchange app-pub)" = 200 ] || fail "code exchange: $(cat "$TMP/tok.json")"
[ "$(tok .token_type)" = Bearer ] && [ "$(tok .expires_in)" = 300 ] && [ "$(tok .patient)" = pat-0 ] &&
    [ "$(tok .scope)" = "$SCOPE" ] && [ -n "$(tok .refresh_token)" ] && [ "$(tok .need_patient_banner)" = true ] &&
    ok "token response: Bearer, expires_in, scope, refresh_token, patient" || fail "token response: $(cat "$TMP/tok.json")"
AT=$(tok .access_token) RT1=$(tok .refresh_token)
# the id_token: RS256 with the key at jwks_uri, checked by npm jose
node --input-type=module -e '
    import { createRequire } from "node:module";
    const require = createRequire(process.env.FHIRSYNC_SOURCE_DIR + "/tests/interop/package.json");
    const jose = require("jose");
    const [idToken, jwksUri, issuer, base] = process.argv.slice(1);
    const { payload, protectedHeader } = await jose.jwtVerify(idToken, jose.createRemoteJWKSet(new URL(jwksUri)),
        { issuer, audience: "app-pub", algorithms: ["RS256"] });
    if (payload.sub !== "clinician" || payload.fhirUser !== base + "/Practitioner/prac-0" || !payload.exp || !payload.iat)
        throw new Error(JSON.stringify(payload));
' "$(tok .id_token)" "$(jget .jwks_uri <"$TMP/conf.json")" "$(jget .issuer <"$TMP/conf.json")" "$BASE_URL" &&
    ok "id_token verifies (RS256, jwks_uri) with iss, sub, aud, fhirUser" || fail "id_token"

# --- the access token on the FHIR API: the patient's compartment ---------------------------------
st=$(curl -sS -o "$TMP/b.json" -w '%{http_code}' -H "Authorization: Bearer $AT" "$BASE_URL/Observation?_count=1000")
[ "$st" = 200 ] && [ "$(jget '=>d.entry.every((e) => e.resource.subject.reference === "Patient/pat-0") && d.entry.length > 0' <"$TMP/b.json")" = true ] &&
    ok "a patient/ search sees the chosen patient only" || fail "compartment search: $st"
st=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $AT" "$BASE_URL/Patient/pat-1")
[ "$st" = 403 ] && ok "another patient's record is refused" || fail "Patient/pat-1 with pat-0's token: $st"
st=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $AT" "$BASE_URL/Patient/pat-0")
[ "$st" = 200 ] || fail "Patient/pat-0: $st"
st=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $AT" "$BASE_URL/Observation?patient=pat-2")
[ "$st" = 403 ] || fail "a search naming another patient: $st"
st=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $AT" -H 'Accept: application/fhir+json' \
    -H 'Prefer: respond-async' "$BASE_URL/\$export")
[ "$st" = 403 ] || fail "a patient-bound token started an export: $st"

# --- code replayed, wrong verifier, wrong redirect_uri, expired ----------------------------------
cp "$TMP/flow1.json" "$TMP/flow.json"
[ "$(exchange app-pub)" = 400 ] && [ "$(tok .error)" = invalid_grant ] && grep -q 'already used' "$TMP/tok.json" &&
    ok "a replayed code is invalid_grant" || fail "replayed code: $(cat "$TMP/tok.json")"
[ "$(token grant_type=refresh_token client_id=app-pub "refresh_token=$RT1")" = 400 ] && grep -q revoked "$TMP/tok.json" &&
    ok "the replay revoked what the code gave" || fail "refresh after a code replay: $(cat "$TMP/tok.json")"

browse app-pub "$SCOPE"
[ "$(token grant_type=authorization_code client_id=app-pub "code=$(flow .params.code)" "redirect_uri=$CB" \
    "code_verifier=$(node -e 'console.log("x".repeat(43))')")" = 400 ] && [ "$(tok .error)" = invalid_grant ] &&
    grep -q code_verifier "$TMP/tok.json" && ok "a wrong code_verifier is invalid_grant" || fail "wrong verifier: $(cat "$TMP/tok.json")"
browse app-pub "$SCOPE"
[ "$(token grant_type=authorization_code client_id=app-pub "code=$(flow .params.code)" "redirect_uri=$CB/other" \
    "code_verifier=$(flow .verifier)")" = 400 ] && grep -q redirect_uri "$TMP/tok.json" || fail "another redirect_uri: $(cat "$TMP/tok.json")"
browse app-pub "$SCOPE"
[ "$(token grant_type=authorization_code client_id=app-pub "code=$(flow .params.code)" "redirect_uri=$CB")" = 400 ] &&
    [ "$(tok .error)" = invalid_request ] || fail "no code_verifier: $(cat "$TMP/tok.json")"

curl -sS -f -X POST -H 'Content-Type: application/json' --data '{"code_lifetime":0}' "$ADMIN/launch" >/dev/null
browse app-pub "$SCOPE"
[ "$(exchange app-pub)" = 400 ] && grep -q 'code expired' "$TMP/tok.json" && ok "an expired code is invalid_grant" ||
    fail "expired code: $(cat "$TMP/tok.json")"
curl -sS -f -X POST -H 'Content-Type: application/json' --data '{"code_lifetime":60}' "$ADMIN/launch" >/dev/null
browse app-pub "$SCOPE"
[ "$(exchange app-pub)" = 200 ] || fail "a code after restoring the lifetime: $(cat "$TMP/tok.json")"
RT=$(tok .refresh_token)

# --- errors at /authorize: an HTML page (never a redirect), or a redirect with error and state ---
browse app-pub "$SCOPE" '{}' http://127.0.0.1:9/not-registered
[ "$(flow .step)" = authorize ] && [ "$(flow .status)" = 400 ] && [ "$(flow .location)" = null ] &&
    grep -q 'not registered' "$TMP/flow.json" && ok "an unregistered redirect_uri gets an HTML error, no redirect" ||
    fail "unregistered redirect_uri: $(cat "$TMP/flow.json")"
# RFC 8252 7.3: a registered loopback IP redirect URI matches with any port (the app's listener
# picks one at run time); the redirect-exact-port quirk makes the port count, as some EHRs do.
browse app-pub "$SCOPE" '{}' http://127.0.0.1:4321/callback
[ "$(flow .step)" = consent ] && [[ "$(flow .location)" == http://127.0.0.1:4321/callback\?* ]] &&
    ok "a loopback redirect_uri on another port is accepted and used (RFC 8252)" ||
    fail "loopback port: $(cat "$TMP/flow.json")"
browse app-pub "$SCOPE" '{}' http://127.0.0.1:4321/other
[ "$(flow .status)" = 400 ] && [ "$(flow .location)" = null ] &&
    ok "a loopback redirect_uri with another path is still refused" ||
    fail "loopback path: $(cat "$TMP/flow.json")"
curl -sS -f -X POST -H 'Content-Type: application/json' \
    --data '{"quirk":"redirect-exact-port","client_id":"app-pub"}' "$ADMIN/quirks" >/dev/null
browse app-pub "$SCOPE" '{}' http://127.0.0.1:4321/callback
[ "$(flow .status)" = 400 ] && grep -q 'not registered' "$TMP/flow.json" &&
    ok "quirk redirect-exact-port: the port must be the registered one" ||
    fail "redirect-exact-port: $(cat "$TMP/flow.json")"
curl -sS -f -X DELETE "$ADMIN/quirks" >/dev/null
browse no-such-client "$SCOPE"
[ "$(flow .status)" = 400 ] && [ "$(flow .location)" = null ] && ok "an unknown client_id gets an HTML error" ||
    fail "unknown client: $(cat "$TMP/flow.json")"
err_redirect() { # DESCRIPTION ERROR WORD OPTIONS_JSON [SCOPE]
    browse app-pub "${5:-$SCOPE}" "$4"
    if [ "$(flow .step)" = authorize ] && [ "$(flow .status)" = 302 ] && [ "$(flow .params.error)" = "$2" ] &&
        grep -q -- "$3" <<<"$(flow .params.error_description)" && [[ "$(flow .location)" == "$CB?"* ]] &&
        { [ "$2" = invalid_request ] && [ "$3" = state ] || [ "$(flow .params.state)" = st-1 ]; }; then
        ok "$1"
    else
        fail "$1: $(cat "$TMP/flow.json")"
    fi
}
err_redirect "aud wrong -> invalid_request naming aud" invalid_request aud '{"state":"st-1","aud":"'"${BASE_URL%/fhir}"'"}'
err_redirect "aud missing -> invalid_request" invalid_request aud '{"state":"st-1","omit":["aud"]}'
err_redirect "plain PKCE refused" invalid_request S256 '{"state":"st-1","method":"plain"}'
err_redirect "no code_challenge refused" invalid_request code_challenge '{"state":"st-1","omit":["code_challenge"]}'
err_redirect "state missing" invalid_request state '{"omit":["state"]}'
err_redirect "a scope the client may not have" invalid_scope 'system/' '{"state":"st-1"}' "openid system/*.read"
err_redirect "response_type token" unsupported_response_type code '{"state":"st-1","extra":{"response_type":"token"}}'

# --- Deny, no offline_access, narrower consent ---------------------------------------------------
browse app-pub "$SCOPE" '{"state":"st-d","decision":"deny"}'
[ "$(flow .params.error)" = access_denied ] && [ "$(flow .params.state)" = st-d ] && [ "$(flow .params.code)" = undefined ] &&
    ok "Deny redirects with access_denied and the state" || fail "deny: $(cat "$TMP/flow.json")"
browse app-pub "$SCOPE" '{"untick":["offline_access"]}'
[ "$(exchange app-pub)" = 200 ] && [ "$(tok .refresh_token)" = undefined ] && [ "$(tok .scope)" = "launch/patient openid fhirUser patient/*.rs" ] &&
    ok "without offline_access granted: no refresh_token, the narrower scope" || fail "unticked offline_access: $(cat "$TMP/tok.json")"
browse app-pub "$SCOPE" '{"patient":"pat-3"}'
[ "$(exchange app-pub)" = 200 ] && [ "$(tok .patient)" = pat-3 ] || fail "the picked patient: $(cat "$TMP/tok.json")"
browse app-pub "$SCOPE" '{"password":"wrong"}'
[ "$(flow .step)" = login ] && [ "$(flow .status)" = 200 ] && grep -q 'wrong user or password' "$TMP/flow.json" ||
    fail "a wrong password: $(cat "$TMP/flow.json")"
browse app-pub "user/*.rs openid fhirUser"
[ "$(exchange app-pub)" = 200 ] && [ "$(tok .patient)" = undefined ] || fail "user/ scopes: $(cat "$TMP/tok.json")"
st=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(tok .access_token)" "$BASE_URL/Patient/pat-5")
[ "$st" = 200 ] && ok "a user/ token reads any patient" || fail "user/ token: $st"

# --- refresh: rotation, reuse, narrowing, revocation, expiry ------------------------------------
[ "$(token grant_type=refresh_token client_id=app-pub "refresh_token=$RT")" = 200 ] || fail "refresh: $(cat "$TMP/tok.json")"
RT2=$(tok .refresh_token)
[ -n "$RT2" ] && [ "$RT2" != "$RT" ] && [ "$(tok .patient)" = pat-0 ] && ok "refresh rotates the refresh token" || fail "rotation: $RT2"
st=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(tok .access_token)" "$BASE_URL/Patient/pat-0")
[ "$st" = 200 ] || fail "the refreshed access token: $st"
[ "$(token grant_type=refresh_token client_id=app-pub "refresh_token=$RT")" = 400 ] && [ "$(tok .error)" = invalid_grant ] &&
    grep -q rotation "$TMP/tok.json" && ok "a rotated refresh token is invalid_grant" || fail "reuse: $(cat "$TMP/tok.json")"
[ "$(token grant_type=refresh_token client_id=app-pub "refresh_token=$RT2" "scope=patient/Observation.rs")" = 200 ] &&
    [ "$(tok .scope)" = patient/Observation.rs ] && ok "refresh narrows the scope" || fail "narrowing: $(cat "$TMP/tok.json")"
RT3=$(tok .refresh_token)
[ "$(token grant_type=refresh_token client_id=app-pub "refresh_token=$RT3" "scope=user/*.rs")" = 400 ] &&
    [ "$(tok .error)" = invalid_scope ] || fail "widening on refresh: $(cat "$TMP/tok.json")"
[ "$(token grant_type=refresh_token client_id=app-pub "refresh_token=nonsense")" = 400 ] && grep -q unknown "$TMP/tok.json" ||
    fail "unknown refresh token: $(cat "$TMP/tok.json")"
curl -sS "$ADMIN/grants?client_id=app-pub" >"$TMP/g.json"
! grep -qF "$RT3" "$TMP/g.json" && ! grep -qF "$AT" "$TMP/g.json" || fail "GET /admin/grants shows token values"
node -e '
    const g = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).grants;
    const mine = g.find((x) => x.refresh_tokens.length === 3);
    if (!mine || mine.rotations !== 2 || mine.patient !== "pat-0" || mine.revoked ||
        mine.refresh_tokens.map((t) => t.state).join() !== "rotated,rotated,current") throw new Error(JSON.stringify(g));
' "$TMP/g.json" && ok "GET /admin/grants shows rotations and states" || fail "grants: $(cat "$TMP/g.json")"
[ "$(curl -sS -X POST -H 'Content-Type: application/json' --data '{"refresh_token":"'"$RT3"'"}' "$ADMIN/revoke" | jget .revoked)" = 1 ] ||
    fail "POST /admin/revoke"
[ "$(token grant_type=refresh_token client_id=app-pub "refresh_token=$RT3")" = 400 ] && grep -q revoked "$TMP/tok.json" &&
    ok "a revoked refresh token is invalid_grant" || fail "revoked: $(cat "$TMP/tok.json")"
curl -sS -f -X POST -H 'Content-Type: application/json' --data '{"refresh_token_lifetime":0}' "$ADMIN/launch" >/dev/null
browse app-pub "$SCOPE"
exchange app-pub >/dev/null
[ "$(token grant_type=refresh_token client_id=app-pub "refresh_token=$(tok .refresh_token)")" = 400 ] &&
    grep -q expired "$TMP/tok.json" && ok "an expired refresh token is invalid_grant" || fail "expired refresh: $(cat "$TMP/tok.json")"
curl -sS -f -X POST -H 'Content-Type: application/json' --data '{"refresh_token_lifetime":3600,"access_token_lifetime":120}' "$ADMIN/launch" >/dev/null
browse app-pub "$SCOPE"
exchange app-pub >/dev/null
[ "$(tok .expires_in)" = 120 ] || fail "access_token_lifetime: $(cat "$TMP/tok.json")"
RTC=$(tok .refresh_token)
[ "$(curl -sS -X POST -H 'Content-Type: application/json' --data '{"client_id":"app-pub"}' "$ADMIN/revoke" | jget .revoked)" -ge 1 ] ||
    fail "revoke by client"
[ "$(token grant_type=refresh_token client_id=app-pub "refresh_token=$RTC")" = 400 ] || fail "after revoking the client's grants"

# --- confidential clients: client_secret_basic, client_secret_post, private_key_jwt ---------------
[ "$(register '{"client_id":"app-basic","client_secret":"s3cret","redirect_uris":["'$CB'"]}')" = 201 ] || fail "register app-basic"
[ "$(register '{"client_id":"app-post","client_secret":"p0st","token_endpoint_auth_method":"client_secret_post","redirect_uris":["'$CB'"]}')" = 201 ] ||
    fail "register app-post: $(cat "$TMP/reg.json")"
[ "$(register '{"client_id":"bad","token_endpoint_auth_method":"none"}')" = 400 ] || fail "a public client without redirect_uris was accepted"
[ "$(register '{"client_id":"bad2","redirect_uris":["'$CB'#frag"]}')" = 400 ] || fail "a redirect_uri with a fragment was accepted"
browse app-basic "$SCOPE"
[ "$(exchange app-basic)" = 401 ] && [ "$(tok .error)" = invalid_client ] || fail "app-basic without its secret: $(cat "$TMP/tok.json")"
browse app-basic "$SCOPE"
st=$(curl -sS -o "$TMP/tok.json" -w '%{http_code}' -u app-basic:s3cret --data-urlencode grant_type=authorization_code \
    --data-urlencode "code=$(flow .params.code)" --data-urlencode "redirect_uri=$CB" --data-urlencode "code_verifier=$(flow .verifier)" "$TOKEN_URL")
[ "$st" = 200 ] && ok "client_secret_basic on the code grant" || fail "app-basic: $st $(cat "$TMP/tok.json")"
st=$(curl -sS -o "$TMP/tok2.json" -w '%{http_code}' -u app-basic:wrong --data-urlencode grant_type=refresh_token \
    --data-urlencode "refresh_token=$(tok .refresh_token)" "$TOKEN_URL")
[ "$st" = 401 ] || fail "a wrong secret on refresh: $st"
browse app-post "$SCOPE"
[ "$(exchange app-post client_secret=p0st)" = 200 ] && ok "client_secret_post on the code grant" || fail "app-post: $(cat "$TMP/tok.json")"
[ "$(token grant_type=refresh_token client_id=app-post client_secret=p0st "refresh_token=$(tok .refresh_token)")" = 200 ] ||
    fail "client_secret_post on refresh: $(cat "$TMP/tok.json")"
st=$(curl -sS -o /dev/null -w '%{http_code}' -u app-post:p0st --data-urlencode grant_type=refresh_token \
    --data-urlencode "refresh_token=$(tok .refresh_token)" "$TOKEN_URL")
[ "$st" = 401 ] || fail "a client_secret_post client used Basic: $st"
[ "$(token grant_type=client_credentials client_id=app-post client_secret=p0st)" = 401 ] || fail "client_credentials for an app"

"$FHIRSYNC_BIN" keygen --alg RS384 --out "$TMP/keys" --name app >/dev/null
[ "$(register '{"client_id":"app-jwt","redirect_uris":["'$CB'"],"jwks":'"$(cat "$TMP/keys/jwks.json")"'}')" = 201 ] ||
    fail "register app-jwt: $(cat "$TMP/reg.json")"
assertion() { # a client assertion for app-jwt signed by npm jose
    node --input-type=module -e '
        import { createRequire } from "node:module";
        import { readFileSync } from "node:fs";
        import { randomUUID } from "node:crypto";
        const require = createRequire(process.env.FHIRSYNC_SOURCE_DIR + "/tests/interop/package.json");
        const jose = require("jose");
        const jwks = JSON.parse(readFileSync(process.argv[2], "utf8"));
        const key = await jose.importPKCS8(readFileSync(process.argv[1], "utf8"), "RS384");
        const now = Math.floor(Date.now() / 1000);
        console.log(await new jose.SignJWT({ jti: randomUUID() }).setProtectedHeader({ alg: "RS384", kid: jwks.keys[0].kid, typ: "JWT" })
            .setIssuer("app-jwt").setSubject("app-jwt").setAudience(process.argv[3]).setIssuedAt(now).setExpirationTime(now + 120).sign(key));
    ' "$TMP/keys/app.key.pem" "$TMP/keys/jwks.json" "$TOKEN_URL"
}
JWT_TYPE=urn:ietf:params:oauth:client-assertion-type:jwt-bearer
browse app-jwt "$SCOPE"
[ "$(exchange app-jwt "client_assertion_type=$JWT_TYPE" "client_assertion=$(assertion)")" = 200 ] &&
    ok "private_key_jwt on the code grant" || fail "app-jwt code: $(cat "$TMP/tok.json")"
[ "$(token grant_type=refresh_token "client_assertion_type=$JWT_TYPE" "client_assertion=$(assertion)" "refresh_token=$(tok .refresh_token)")" = 200 ] &&
    ok "private_key_jwt on the refresh grant" || fail "app-jwt refresh: $(cat "$TMP/tok.json")"
[ "$(token grant_type=refresh_token client_id=app-jwt "refresh_token=$(tok .refresh_token)")" = 401 ] || fail "app-jwt without an assertion"
[ "$(token grant_type=refresh_token client_id=app-basic "refresh_token=$(tok .refresh_token)")" = 401 ] || fail "another client's refresh token"

# --- quirks: refresh-no-rotate, aud-other-url, refresh-no-context -------------------------------
quirk() { curl -sS -f -X POST -H 'Content-Type: application/json' --data "$1" "$ADMIN/quirks" >/dev/null; }
unquirk() { curl -sS -f -X DELETE "$ADMIN/quirks" >/dev/null; }
browse app-pub "$SCOPE"
exchange app-pub >/dev/null
RQ=$(tok .refresh_token)
quirk '{"quirk":"refresh-no-rotate","client_id":"app-pub"}'
for i in 1 2; do
    [ "$(token grant_type=refresh_token client_id=app-pub "refresh_token=$RQ")" = 200 ] && [ "$(tok .refresh_token)" = "$RQ" ] ||
        fail "refresh-no-rotate, refresh $i: $(cat "$TMP/tok.json")"
done
ok "refresh-no-rotate: the same refresh token, still valid"
unquirk
[ "$(token grant_type=refresh_token client_id=app-pub "refresh_token=$RQ")" = 200 ] && [ "$(tok .refresh_token)" != "$RQ" ] &&
    [ "$(tok .patient)" = pat-0 ] || fail "rotation back without the quirk: $(cat "$TMP/tok.json")"
quirk '{"quirk":"refresh-no-context"}'
[ "$(token grant_type=refresh_token client_id=app-pub "refresh_token=$(tok .refresh_token)")" = 200 ] && [ "$(tok .patient)" = undefined ] &&
    ok "refresh-no-context: no patient in the refresh answer" || fail "refresh-no-context: $(cat "$TMP/tok.json")"
st=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(tok .access_token)" "$BASE_URL/Patient/pat-1")
[ "$st" = 403 ] || fail "refresh-no-context: the token lost its compartment: $st"
unquirk

ORIGIN=${BASE_URL%/fhir}
quirk '{"quirk":"aud-other-url","client_id":"app-pub"}'
err_redirect "aud-other-url: the FHIR base is refused" invalid_request "$ORIGIN" '{"state":"st-1"}'
browse app-pub "$SCOPE" '{"aud":"'"$ORIGIN"'"}'
[ "$(flow .step)" = consent ] && [ -n "$(flow .params.code)" ] && ok "aud-other-url: the origin is accepted" ||
    fail "aud-other-url default: $(cat "$TMP/flow.json")"
browse app-basic "$SCOPE"
[ -n "$(flow .params.code)" ] || fail "aud-other-url applied to another client"
unquirk
quirk '{"quirk":"aud-other-url","param":"https://fhir.example.org/r4/PRACTICE"}'
browse app-pub "$SCOPE" '{"aud":"https://fhir.example.org/r4/PRACTICE"}'
[ -n "$(flow .params.code)" ] && ok "aud-other-url=URL: that URL is the aud" || fail "aud-other-url=URL: $(cat "$TMP/flow.json")"
curl -sS "$ADMIN/quirks" | grep -q '"param":"https://fhir.example.org/r4/PRACTICE"' || fail "GET /admin/quirks lacks the URL"
unquirk
browse app-pub "$SCOPE" '{"aud":"'"$ORIGIN"'"}'
[ "$(flow .params.error)" = invalid_request ] || fail "aud-other-url still on after removal"

# --- admin API errors; backend services unchanged ------------------------------------------------
st=$(curl -sS -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data '{"code_lifetime":-1}' "$ADMIN/launch")
[ "$st" = 400 ] || fail "a negative lifetime: $st"
st=$(curl -sS -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data '{}' "$ADMIN/revoke")
[ "$st" = 400 ] || fail "revoke without a selector: $st"
[ "$(register '{"client_id":"svc","client_secret":"svc-secret"}')" = 201 ] || fail "register svc"
st=$(curl -sS -o "$TMP/tok.json" -w '%{http_code}' -u svc:svc-secret -d grant_type=client_credentials "$TOKEN_URL")
[ "$st" = 200 ] && [ "$(tok .token_type)" = bearer ] && [ "$(tok .refresh_token)" = undefined ] ||
    fail "client_credentials for a backend service: $st $(cat "$TMP/tok.json")"
browse svc "system/*.read"
[ "$(flow .status)" = 400 ] && [ "$(flow .location)" = null ] || fail "a backend service at /authorize: $(cat "$TMP/flow.json")"

stop_sandbox
finish
