// sandbox_token_cases.mjs: drives the sandbox's token endpoint with client assertions made by an
// independent JOSE implementation (npm jose). Keys are generated at run time and registered
// through POST /auth/register (by value, and one by URL from a loopback JWKS server). For every
// check the token endpoint makes there is one accepted case and one rejected case, asserting the
// HTTP status, the OAuth error code and that error_description names the check.
//
// usage: node sandbox_token_cases.mjs READY_FILE [normal|rs384only]
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import http from 'node:http';

const src = process.env.FHIRSYNC_SOURCE_DIR;
const require = createRequire(src + '/tests/interop/package.json');
const jose = require('jose');

const ready = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const mode = process.argv[3] || 'normal';
const TOKEN = ready.token_url;
const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

let passed = 0;
const failures = [];
function check(name, cond, detail) {
    if (cond) {
        passed++;
    } else {
        failures.push(name + (detail ? ': ' + detail : ''));
        console.error('FAIL ' + name + (detail ? ': ' + detail : ''));
    }
}

async function post(url, body, headers) {
    const res = await fetch(url, { method: 'POST', body, headers });
    const text = await res.text();
    let json = null;
    try { json = JSON.parse(text); } catch { /* not JSON */ }
    return { status: res.status, json, text, headers: res.headers };
}

async function register(desc) {
    const r = await post(ready.register_url, JSON.stringify(desc),
                         { 'Content-Type': 'application/json' });
    if (r.status !== 201)
        throw new Error('registration failed: ' + r.status + ' ' + r.text);
    return r.json;
}

const now = () => Math.floor(Date.now() / 1000);

function claimsFor(clientId, over = {}) {
    const c = { iss: clientId, sub: clientId, aud: TOKEN, exp: now() + 240, iat: now(),
                jti: randomUUID() };
    for (const [k, v] of Object.entries(over)) {
        if (v === undefined) delete c[k]; else c[k] = v;
    }
    return c;
}

async function sign(key, header, claims) {
    return new jose.CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
        .setProtectedHeader(header).sign(key);
}

function form(fields) {
    return new URLSearchParams(fields).toString();
}

async function tokenRequest(assertion, extra = {}, headers = {}) {
    const fields = { grant_type: 'client_credentials', client_assertion_type: JWT_BEARER,
                     client_assertion: assertion, ...extra };
    for (const [k, v] of Object.entries(fields)) if (v === undefined) delete fields[k];
    return post(TOKEN, form(fields),
                { 'Content-Type': 'application/x-www-form-urlencoded', ...headers });
}

function expectOk(name, r) {
    check(name + ' accepted', r.status === 200 && r.json && typeof r.json.access_token === 'string',
          r.status + ' ' + r.text);
}

function expectError(name, r, status, code, words) {
    const desc = (r.json && r.json.error_description) || '';
    check(name + ' rejected', r.status === status && r.json && r.json.error === code &&
          words.every((w) => desc.includes(w)),
          `got ${r.status} ${r.text}, want ${status} ${code} naming ${words.join(',')}`);
}

// raw R||S (JWA) to DER, to prove the server refuses DER-encoded ECDSA signatures
function rawToDer(raw) {
    const half = raw.length / 2;
    const int = (b) => {
        let i = 0;
        while (i < b.length - 1 && b[i] === 0) i++;
        b = b.subarray(i);
        if (b[0] & 0x80) b = Buffer.concat([Buffer.from([0]), b]);
        return Buffer.concat([Buffer.from([0x02, b.length]), b]);
    };
    const body = Buffer.concat([int(raw.subarray(0, half)), int(raw.subarray(half))]);
    const len = body.length < 128 ? Buffer.from([body.length]) : Buffer.from([0x81, body.length]);
    return Buffer.concat([Buffer.from([0x30]), len, body]);
}

async function main() {
    const rsa = await jose.generateKeyPair('RS384', { modulusLength: 2048 });
    const rsaOther = await jose.generateKeyPair('RS384', { modulusLength: 2048 });
    const ec = await jose.generateKeyPair('ES384');
    const pub = async (k, kid) => ({ ...(await jose.exportJWK(k.publicKey)), kid, use: 'sig' });

    const id = 'tok-' + randomUUID().slice(0, 8);
    const main = await register({
        client_id: id,
        jwks: { keys: [await pub(rsa, 'rsa-1'), await pub(ec, 'ec-1'),
                       await pub(rsaOther, 'dup'), await pub(rsa, 'dup')] },
        scope: 'system/*.read system/Group.read',
        algs: ['RS384', 'ES384'],
    });
    check('registration echoes the client', main.client_id === id &&
          main.token_endpoint_auth_method === 'private_key_jwt' && !('client_secret' in main));

    const rsHeader = { alg: 'RS384', kid: 'rsa-1', typ: 'JWT' };
    const esHeader = { alg: 'ES384', kid: 'ec-1', typ: 'JWT' };
    const good = async (over = {}) => sign(rsa.privateKey, rsHeader, claimsFor(id, over));

    if (mode === 'rs384only') {
        expectOk('rs384-only: RS384', await tokenRequest(await good()));
        expectError('rs384-only: ES384', await tokenRequest(
            await sign(ec.privateKey, esHeader, claimsFor(id))), 401, 'invalid_client', ['alg']);
        const conf = await (await fetch(ready.base_url + '/.well-known/smart-configuration')).json();
        check('rs384-only: discovery lists RS384 only',
              JSON.stringify(conf.token_endpoint_auth_signing_alg_values_supported) === '["RS384"]');
        return;
    }

    // 1. Content-Type
    expectOk('content-type form', await tokenRequest(await good()));
    {
        const r = await post(TOKEN, JSON.stringify({ grant_type: 'client_credentials',
                                                     client_assertion: await good() }),
                             { 'Content-Type': 'application/json' });
        expectError('content-type json', r, 400, 'invalid_request', ['Content-Type']);
    }
    // 2. two client authentication methods
    expectOk('one authentication method', await tokenRequest(await good()));
    expectError('two authentication methods',
                await tokenRequest(await good(), {}, { Authorization: 'Basic ' +
                    Buffer.from(id + ':secret').toString('base64') }),
                401, 'invalid_client', ['two client authentication methods']);
    // 3. grant_type
    expectOk('grant_type client_credentials', await tokenRequest(await good()));
    expectError('grant_type password',
                await tokenRequest(await good(), { grant_type: 'password' }),
                400, 'unsupported_grant_type', ['grant_type']);
    // a backend service (no redirect_uris) may not use the App Launch grants
    expectError('grant_type authorization_code for a backend service',
                await tokenRequest(await good(), { grant_type: 'authorization_code' }),
                400, 'unauthorized_client', ['backend service']);
    // 4. client_assertion_type
    expectOk('client_assertion_type jwt-bearer', await tokenRequest(await good()));
    expectError('client_assertion_type saml',
                await tokenRequest(await good(), { client_assertion_type:
                    'urn:ietf:params:oauth:client-assertion-type:saml2-bearer' }),
                400, 'invalid_request', ['client_assertion_type']);
    // 5. the assertion decodes
    expectOk('assertion decodes', await tokenRequest(await good()));
    expectError('assertion garbage', await tokenRequest('not.a-jwt.at-all'), 401,
                'invalid_client', ['decode']);
    // 6. iss present and known
    expectOk('iss known', await tokenRequest(await good()));
    expectError('iss unknown', await tokenRequest(await sign(rsa.privateKey, rsHeader,
                claimsFor('nobody-' + id, { sub: 'nobody-' + id }))), 401, 'invalid_client',
                ['unknown client_id']);
    expectError('iss missing', await tokenRequest(await good({ iss: undefined })), 401,
                'invalid_client', ['iss']);
    // 7. alg on the client's allow list
    const rsOnly = await register({ jwks: { keys: [await pub(ec, 'ec-1'), await pub(rsa, 'rsa-1')] },
                                    scope: 'system/*.read', algs: ['RS384'] });
    expectOk('alg ES384 allowed', await tokenRequest(
        await sign(ec.privateKey, esHeader, claimsFor(id))));
    expectError('alg ES384 not allowed', await tokenRequest(
        await sign(ec.privateKey, esHeader, claimsFor(rsOnly.client_id))), 401, 'invalid_client',
        ['alg']);
    expectError('alg RS256', await tokenRequest(await sign(rsa.privateKey,
                { ...rsHeader, alg: 'RS256' }, claimsFor(id))), 401, 'invalid_client', ['alg']);
    // 8. kid: exactly one key with it
    expectOk('kid found once', await tokenRequest(await good()));
    expectError('kid not found', await tokenRequest(await sign(rsa.privateKey,
                { ...rsHeader, kid: 'nope' }, claimsFor(id))), 401, 'invalid_client',
                ['kid nope not found in the registered JWKS']);
    expectError('kid duplicated', await tokenRequest(await sign(rsa.privateKey,
                { ...rsHeader, kid: 'dup' }, claimsFor(id))), 401, 'invalid_client',
                ['kid dup', 'duplicated']);
    expectError('kid missing', await tokenRequest(await sign(rsa.privateKey,
                { alg: 'RS384', typ: 'JWT' }, claimsFor(id))), 401, 'invalid_client', ['kid']);
    // 9. signature
    expectOk('signature RS384', await tokenRequest(await good()));
    expectOk('signature ES384 raw R||S', await tokenRequest(
        await sign(ec.privateKey, esHeader, claimsFor(id))));
    expectError('signature by another key', await tokenRequest(await sign(rsaOther.privateKey,
                rsHeader, claimsFor(id))), 401, 'invalid_client', ['signature']);
    {
        const jws = await sign(ec.privateKey, esHeader, claimsFor(id));
        const [h, p, s] = jws.split('.');
        const der = rawToDer(Buffer.from(s, 'base64url')).toString('base64url');
        expectError('signature ES384 in DER', await tokenRequest(`${h}.${p}.${der}`), 401,
                    'invalid_client', ['signature']);
    }
    // 10. iss == sub == client_id
    expectOk('sub equals iss', await tokenRequest(await good()));
    expectError('sub differs', await tokenRequest(await good({ sub: 'someone-else' })), 401,
                'invalid_client', ['sub']);
    // 11. aud is the token URL exactly
    expectOk('aud token URL', await tokenRequest(await good()));
    expectError('aud FHIR base', await tokenRequest(await good({ aud: ready.base_url })), 401,
                'invalid_client', ['aud']);
    expectError('aud trailing slash', await tokenRequest(await good({ aud: TOKEN + '/' })), 401,
                'invalid_client', ['aud']);
    // 12. exp present, not expired, at most 300 s ahead
    expectOk('exp 290 s ahead', await tokenRequest(await good({ exp: now() + 290 })));
    expectOk('exp 30 s ago (leeway)', await tokenRequest(await good({ exp: now() - 30 })));
    expectError('exp missing', await tokenRequest(await good({ exp: undefined })), 401,
                'invalid_client', ['exp']);
    expectError('exp expired', await tokenRequest(await good({ exp: now() - 120 })), 401,
                'invalid_client', ['exp']);
    expectError('exp too far', await tokenRequest(await good({ exp: now() + 600 })), 401,
                'invalid_client', ['exp']);
    // 13. iat / nbf not in the future
    expectOk('iat now, nbf past', await tokenRequest(await good({ nbf: now() - 10 })));
    expectError('iat in the future', await tokenRequest(await good({ iat: now() + 120 })), 401,
                'invalid_client', ['iat']);
    expectError('nbf in the future', await tokenRequest(await good({ nbf: now() + 120 })), 401,
                'invalid_client', ['nbf']);
    // 14. jti present, at most 255 chars, never seen
    expectOk('jti of 255 chars', await tokenRequest(await good({ jti: 'j'.repeat(255) })));
    expectError('jti missing', await tokenRequest(await good({ jti: undefined })), 401,
                'invalid_client', ['jti']);
    expectError('jti of 256 chars', await tokenRequest(await good({ jti: 'k'.repeat(256) })), 401,
                'invalid_client', ['jti']);
    {
        const once = await good();
        expectOk('jti first use', await tokenRequest(once));
        expectError('jti replayed', await tokenRequest(once), 401, 'invalid_client', ['jti']);
    }
    // 15. scopes
    {
        const r = await tokenRequest(await good(), { scope: 'system/Patient.read' });
        expectOk('scope v1 within', r);
        check('scope granted as asked', r.json && r.json.scope === 'system/Patient.read', r.text);
        const r2 = await tokenRequest(await good(), { scope: 'system/Observation.rs' });
        expectOk('scope v2 within v1', r2);
        const r3 = await tokenRequest(await good());
        expectOk('scope missing', r3);
        check('missing scope grants the client scopes',
              r3.json && r3.json.scope === 'system/*.read system/Group.read', r3.text);
        check('token response shape', r3.json && r3.json.token_type === 'bearer' &&
              r3.json.expires_in === 300 && r3.headers.get('cache-control') === 'no-store',
              r3.text);
        expectError('scope beyond the client', await tokenRequest(await good(),
                    { scope: 'system/Patient.read system/*.cruds' }), 400, 'invalid_scope',
                    ['system/*.cruds']);
        expectError('scope patient/', await tokenRequest(await good(),
                    { scope: 'patient/*.read' }), 400, 'invalid_scope', ['patient/*.read']);
        // the token works on the FHIR API
        const fhir = await fetch(ready.base_url + '/Patient?_count=1',
                                 { headers: { Authorization: 'Bearer ' + r3.json.access_token } });
        check('token accepted by the FHIR API', fhir.status === 200, String(fhir.status));
        const narrow = await fetch(ready.base_url + '/Observation?_count=1',
                                   { headers: { Authorization: 'Bearer ' + r.json.access_token } });
        check('narrow token refused for another type', narrow.status === 403,
              String(narrow.status));
    }
    // 16. client_secret_basic
    {
        const secret = randomUUID();
        const sym = await register({ token_endpoint_auth_method: 'client_secret_basic',
                                     client_secret: secret, scope: 'system/Patient.rs' });
        check('symmetric registration hides the secret', !('client_secret' in sym));
        const basic = (s) => 'Basic ' + Buffer.from(sym.client_id + ':' + s).toString('base64');
        const ok = await post(TOKEN, form({ grant_type: 'client_credentials' }),
                              { 'Content-Type': 'application/x-www-form-urlencoded',
                                Authorization: basic(secret) });
        expectOk('client_secret_basic', ok);
        const bad = await post(TOKEN, form({ grant_type: 'client_credentials' }),
                               { 'Content-Type': 'application/x-www-form-urlencoded',
                                 Authorization: basic(secret + 'x') });
        expectError('client_secret_basic wrong secret', bad, 401, 'invalid_client', ['secret']);
        expectError('assertion for a symmetric client', await tokenRequest(
            await sign(rsa.privateKey, rsHeader, claimsFor(sym.client_id))), 401, 'invalid_client',
            ['client_secret_basic']);
    }
    // 17. JWKS registered by URL (a loopback server), with the jku header
    {
        const jwks = JSON.stringify({ keys: [await pub(ec, 'uri-ec')] });
        const server = http.createServer((req, res) => {
            res.writeHead(200, { 'Content-Type': 'application/json' });
            res.end(jwks);
        });
        await new Promise((r) => server.listen(0, '127.0.0.1', r));
        const jwksUri = `http://127.0.0.1:${server.address().port}/jwks.json`;
        try {
            const byUrl = await register({ jwks_uri: jwksUri, scope: 'system/*.rs' });
            const h = { alg: 'ES384', kid: 'uri-ec', typ: 'JWT', jku: jwksUri };
            expectOk('jwks_uri + jku', await tokenRequest(
                await sign(ec.privateKey, h, claimsFor(byUrl.client_id))));
            expectError('jku differs', await tokenRequest(await sign(ec.privateKey,
                        { ...h, jku: jwksUri + '?x' }, claimsFor(byUrl.client_id))), 401,
                        'invalid_client', ['jku']);
        } finally {
            server.close();
        }
    }
    // registration errors
    {
        const r = await post(ready.register_url, '{"jwks": ', { 'Content-Type': 'application/json' });
        check('malformed registration JSON', r.status === 400 && r.json &&
              r.json.error === 'invalid_client_metadata', r.text);
        const r2 = await post(ready.register_url, JSON.stringify({ client_id: id,
                              jwks: { keys: [await pub(rsa, 'x')] } }),
                              { 'Content-Type': 'application/json' });
        check('duplicate client_id refused', r2.status === 400, r2.text);
    }
}

main().then(() => {
    console.log(`${passed} checks passed, ${failures.length} failed`);
    process.exit(failures.length ? 1 : 0);
}, (e) => {
    console.error('error: ' + (e && e.stack || e));
    process.exit(1);
});
