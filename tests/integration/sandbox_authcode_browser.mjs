// sandbox_authcode_browser.mjs: plays the browser of a SMART standalone launch against the
// sandbox: GET /auth/authorize, fill the login form and the consent page by their documented
// field names (docs/sandbox.md "Login and consent pages"), and report where the last answer
// redirects (the Location header; nothing listens on the redirect_uri). It makes the PKCE pair
// unless told otherwise. Prints one JSON object:
//   {"step": "authorize"|"login"|"consent", "status": N, "location": URL|null,
//    "params": {query of the Location}, "verifier": "...", "html": first 400 chars when no redirect}
//
// usage: node sandbox_authcode_browser.mjs READY_FILE CLIENT_ID REDIRECT_URI SCOPE [OPTIONS_JSON]
// options: aud (default the base URL), state (default random), method (default S256),
//   challenge, verifier, decision ("allow" | "deny"), patient, untick ([scopes to leave out]),
//   username, password (default the documented test user), omit ([authorize parameter names]),
//   extra ({name: value} added to the authorize URL)
import { readFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';

const [readyFile, clientId, redirectUri, scope, optText] = process.argv.slice(2);
const ready = JSON.parse(readFileSync(readyFile, 'utf8'));
const opt = optText ? JSON.parse(optText) : {};
const origin = new URL(ready.base_url).origin;
const b64url = (buf) => buf.toString('base64url');
const verifier = opt.verifier || b64url(randomBytes(32));
const challenge = opt.challenge || b64url(createHash('sha256').update(verifier).digest());

function field(html, name) {
    const m = html.match(new RegExp(`name="${name}" value="([^"]*)"`));
    return m ? m[1] : null;
}

function done(step, res, html) {
    const location = res.headers.get('location');
    const params = location ? Object.fromEntries(new URL(location).searchParams) : {};
    console.log(JSON.stringify({ step, status: res.status, location, params, verifier,
                                 html: location ? undefined : html.slice(0, 400) }));
    process.exit(0);
}

async function post(path, fields) {
    const body = new URLSearchParams(fields);
    const res = await fetch(origin + path, {
        method: 'POST', redirect: 'manual', body: body.toString(),
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' } });
    return { res, html: await res.text() };
}

const q = {
    response_type: 'code', client_id: clientId, redirect_uri: redirectUri, scope,
    state: opt.state || b64url(randomBytes(16)), aud: opt.aud || ready.base_url,
    code_challenge: challenge, code_challenge_method: opt.method || 'S256',
    ...(opt.extra || {}) };
for (const name of opt.omit || []) delete q[name];
const url = ready.authorize_url + '?' + new URLSearchParams(q).toString();
let res = await fetch(url, { redirect: 'manual' });
let html = await res.text();
if (res.status !== 200 || !/id="login-form"/.test(html)) done('authorize', res, html);

({ res, html } = await post('/auth/login', {
    session: field(html, 'session'), username: opt.username || 'clinician',
    password: opt.password || 'sandbox-login' }));
if (res.status !== 200 || !/id="consent-form"/.test(html)) done('login', res, html);

const fields = [['session', field(html, 'session')], ['decision', opt.decision || 'allow']];
for (const m of html.matchAll(/<input type="checkbox" id="scope-\d+" name="scope" value="([^"]*)" checked>/g))
    if (!(opt.untick || []).includes(m[1])) fields.push(['scope', m[1]]);
const picked = html.match(/<option value="([^"]*)" selected>/);
if (opt.patient !== undefined) fields.push(['patient', opt.patient]);
else if (picked) fields.push(['patient', picked[1]]);
({ res, html } = await post('/auth/consent', fields));
done('consent', res, html);
