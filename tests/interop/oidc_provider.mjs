// A real OAuth 2.0 authorization server for interop tests: the npm oidc-provider package,
// configured for client_credentials with private_key_jwt, with clients whose JWKS are the ones
// fhirsync printed. Test-only peer, never shipped.
//
// usage: node oidc_provider.mjs --ready FILE --client ID:ALG:JWKS_FILE [--client ...]
//                               [--clock-offset SECONDS]
// Listens on 127.0.0.1, a free port; writes {"issuer","token_url","port"} to the ready file.
import fs from 'node:fs';
import http from 'node:http';
import Provider from 'oidc-provider';

const args = process.argv.slice(2);
let ready = null;
let clockOffset = 0;
const clients = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--ready') ready = args[++i];
  else if (args[i] === '--clock-offset') clockOffset = Number(args[++i]);
  else if (args[i] === '--client') {
    const [id, alg, file] = args[++i].split(':');
    clients.push({ id, alg, jwks: JSON.parse(fs.readFileSync(file, 'utf8')) });
  } else {
    console.error(`oidc_provider: unknown argument ${args[i]}`);
    process.exit(2);
  }
}
if (!ready || clients.length === 0) {
  console.error('oidc_provider: --ready and at least one --client are required');
  process.exit(2);
}
if (clockOffset) {
  // Shift this server's clock so that a fresh assertion looks expired (or from the future).
  const realNow = Date.now;
  Date.now = () => realNow() + clockOffset * 1000;
}

const scopes = ['system/*.read', 'system/Patient.read', 'system/Observation.read'];
const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const port = server.address().port;
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: clients.map((c) => ({
      client_id: c.id,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: c.alg,
      jwks: c.jwks,
      scope: scopes.join(' '),
    })),
    clientAuthMethods: ['private_key_jwt'],
    enabledJWA: {
      clientAuthSigningAlgValues: ['RS256', 'RS384', 'RS512', 'PS384', 'ES256', 'ES384'],
    },
    features: { clientCredentials: { enabled: true }, devInteractions: { enabled: false } },
    scopes,
    clockTolerance: 5,
  });
  provider.on('server_error', (ctx, err) => console.error('oidc_provider: server_error', err));
  // The detail of a refusal stays in the server's log, as with a real EHR.
  provider.on('grant.error', (ctx, err) =>
    console.error(`oidc_provider: refused: ${err.error} (${err.error_detail || err.message})`));
  server.on('request', provider.callback());
  const tmp = `${ready}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify({ issuer, token_url: `${issuer}/token`, port }));
  fs.renameSync(tmp, ready);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
