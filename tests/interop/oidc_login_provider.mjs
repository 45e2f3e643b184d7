// A real OAuth 2.0 authorization server for the interop tests of `fhirsync login`: the npm
// oidc-provider package with the authorization code flow, PKCE, refresh tokens rotated on every
// use, and an interaction that logs a test account in and consents at once (so that
// oidc_login_driver.mjs can complete a login by following redirects). It also serves a SMART
// configuration at /fhir/.well-known/smart-configuration and adds `patient` to token responses.
// Test-only peer, never shipped.
//
// usage: node oidc_login_provider.mjs --ready FILE [--jwt-client ID:ALG:JWKS_FILE]
// Clients: public-app (none, refresh), norefresh-app (none, no refresh_token grant), and each
// --jwt-client (private_key_jwt, refresh). Redirect URIs: http://127.0.0.1/callback, any port
// (native apps, RFC 8252). Admin: GET /admin/revoke?token=REFRESH_TOKEN destroys it.
// The interaction URL with ?deny=1 ends the login with access_denied.
import fs from 'node:fs';
import http from 'node:http';
import Provider from 'oidc-provider';

const args = process.argv.slice(2);
let ready = null;
const jwtClients = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--ready') ready = args[++i];
  else if (args[i] === '--jwt-client') {
    const [id, alg, file] = args[++i].split(':');
    jwtClients.push({ id, alg, jwks: JSON.parse(fs.readFileSync(file, 'utf8')) });
  } else {
    console.error(`oidc_login_provider: unknown argument ${args[i]}`);
    process.exit(2);
  }
}
if (!ready) {
  console.error('oidc_login_provider: --ready is required');
  process.exit(2);
}

const scopes = ['openid', 'offline_access', 'fhirUser', 'launch/patient', 'patient/*.read',
  'patient/*.rs'];
const native = {
  application_type: 'native',
  redirect_uris: ['http://127.0.0.1/callback'],
  response_types: ['code'],
  scope: scopes.join(' '),
};
const clients = [
  { ...native, client_id: 'public-app', token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token'] },
  { ...native, client_id: 'norefresh-app', token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code'] },
  ...jwtClients.map((c) => ({
    ...native, client_id: c.id, token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: c.alg, jwks: c.jwks,
    grant_types: ['authorization_code', 'refresh_token'],
  })),
];

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const port = server.address().port;
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients,
    clientAuthMethods: ['none', 'private_key_jwt'],
    enabledJWA: { clientAuthSigningAlgValues: ['RS256', 'RS384', 'PS384', 'ES256', 'ES384'] },
    features: { devInteractions: { enabled: false }, revocation: { enabled: true } },
    scopes,
    claims: { openid: ['sub'], fhirUser: ['fhirUser'] },
    conformIdTokenClaims: false,
    // oidc-provider drops offline_access unless prompt=consent (OIDC Core): SMART apps ask
    // without it, so refresh tokens go to every client allowed the grant
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: () => true,
    pkce: { required: () => true, methods: ['S256'] },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    findAccount: async (ctx, sub) => ({
      accountId: sub,
      claims: async () => ({ sub, fhirUser: `${issuer}/fhir/Practitioner/${sub}` }),
    }),
    clockTolerance: 5,
  });
  // SMART launch context: the patient the "picker" chose, beside the token
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.path === '/token' && ctx.status === 200 && ctx.body && ctx.body.access_token)
      ctx.body = { ...ctx.body, patient: 'pat-1' };
  });
  provider.on('server_error', (ctx, err) => console.error('oidc_login_provider: server_error', err));
  provider.on('grant.error', (ctx, err) =>
    console.error(`oidc_login_provider: refused: ${err.error} (${err.error_detail || err.message})`));

  server.on('request', async (req, res) => {
    const url = new URL(req.url, issuer);
    try {
      if (url.pathname === '/fhir/.well-known/smart-configuration') {
        res.setHeader('Content-Type', 'application/json');
        res.end(JSON.stringify({
          issuer,
          authorization_endpoint: `${issuer}/auth`,
          token_endpoint: `${issuer}/token`,
          revocation_endpoint: `${issuer}/token/revocation`,
          code_challenge_methods_supported: ['S256'],
          grant_types_supported: ['authorization_code', 'refresh_token'],
          token_endpoint_auth_methods_supported: ['none', 'private_key_jwt'],
          scopes_supported: scopes,
          capabilities: ['launch-standalone', 'client-public', 'client-confidential-asymmetric',
            'context-standalone-patient', 'permission-offline', 'permission-v1', 'sso-openid-connect'],
        }));
        return;
      }
      if (url.pathname === '/admin/revoke') {
        const token = await provider.RefreshToken.find(url.searchParams.get('token'));
        if (token) await token.destroy();
        res.end(token ? 'revoked\n' : 'unknown\n');
        return;
      }
      if (url.pathname.startsWith('/interaction/')) {
        const details = await provider.interactionDetails(req, res);
        const accountId = 'clinician-1';
        let result;
        if (url.searchParams.get('deny') === '1') {
          result = { error: 'access_denied', error_description: 'the user declined the request' };
        } else if (details.prompt.name === 'login') {
          result = { login: { accountId } };
        } else {
          const grant = details.grantId ? await provider.Grant.find(details.grantId)
            : new provider.Grant({ accountId, clientId: details.params.client_id });
          const d = details.prompt.details;
          if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
          if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
          for (const [indicator, s] of Object.entries(d.missingResourceScopes || {}))
            grant.addResourceScope(indicator, s.join(' '));
          result = { consent: { grantId: await grant.save() } };
        }
        await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
        return;
      }
    } catch (e) {
      console.error('oidc_login_provider:', e);
      res.statusCode = 500;
      res.end('error\n');
      return;
    }
    provider.callback()(req, res);
  });
  const tmp = `${ready}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify({ issuer, base_url: `${issuer}/fhir`, port }));
  fs.renameSync(tmp, ready);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
