// A SMART server that misbehaves around secrets and answers, for the tests of redaction, doctor
// and point 10 of issue #11. Test-only. It is its own token endpoint and hands out one known
// access token (written to the ready file) so that a test can grep every output for it.
//   /fhir/.well-known/smart-configuration   discovery (token endpoint below)
//   /fhir/metadata                          a minimal CapabilityStatement
//   POST /token                             {access_token: TOKEN, expires_in: 300}; the
//                                           assertion received is appended to ASSERTIONS_FILE;
//                                           ?expires_in=X answers with that expires_in as given
//                                           (e.g. 0, -5, "0"); ?fail=kid answers 400
//                                           invalid_client "no key in the JWKS matches kid K"
//   GET /fhir/Patient/1                     400, an OperationOutcome whose diagnostics echo the
//                                           bearer token in prose (and a 401 for Patient/401)
//   GET /fhir/Patient/html                  200 text/html "session expired" page
//   GET /fhir/Patient/html-as-json          200 application/fhir+json, but the body is HTML
//   GET /fhir/Patient/hang                  writes HANG_FILE, then never answers
//   GET /fhir/Patient/$export, /fhir/$export, /fhir/Group/X/$export
//                                           403, an OperationOutcome echoing the token
//   every other path                        404 OperationOutcome
// usage: node secret_echo_server.mjs READY_FILE ASSERTIONS_FILE HANG_FILE
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';

const [ready, assertionsFile, hangFile] = process.argv.slice(2);
// no pattern could find it: no "eyJ", no "token=" in front when echoed
const TOKEN = 'tok' + crypto.randomBytes(24).toString('hex');

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const base = `http://127.0.0.1:${server.address().port}`;
  const send = (status, type, body) => {
    res.writeHead(status, { 'Content-Type': type });
    res.end(typeof body === 'string' ? body : JSON.stringify(body));
  };
  const outcome = (status, text) => send(status, 'application/fhir+json', {
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'error', code: 'security', diagnostics: text }],
  });
  const bearer = (req.headers.authorization || '').replace(/^Bearer /, '');
  let body = '';
  req.on('data', (d) => { body += d; });
  req.on('end', () => {
    const p = url.pathname;
    if (p === '/fhir/.well-known/smart-configuration')
      return send(200, 'application/json', {
        token_endpoint: `${base}/token`,
        grant_types_supported: ['client_credentials'],
        token_endpoint_auth_methods_supported: ['private_key_jwt'],
        token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'],
        capabilities: ['client-confidential-asymmetric'],
      });
    if (p === '/fhir/metadata')
      return send(200, 'application/fhir+json', { resourceType: 'CapabilityStatement', fhirVersion: '4.0.1' });
    if (p === '/token' && req.method === 'POST') {
      const form = new URLSearchParams(body);
      const assertion = form.get('client_assertion');
      if (assertion) fs.appendFileSync(assertionsFile, assertion + '\n');
      if (url.searchParams.get('fail') === 'kid') {
        const kid = JSON.parse(Buffer.from((assertion || '').split('.')[0], 'base64url') || '{}').kid;
        return send(400, 'application/json', {
          error: 'invalid_client',
          error_description: `no key in the JWKS matches kid ${kid}`,
        });
      }
      const answer = { access_token: TOKEN, token_type: 'bearer', scope: form.get('scope') };
      const ei = url.searchParams.get('expires_in');
      answer.expires_in = ei === null ? 300 : (/^-?\d+$/.test(ei) ? Number(ei) : ei);
      return send(200, 'application/json', answer);
    }
    if (p === '/fhir/Patient/1')
      return outcome(400, `access token ${bearer} is not valid for this tenant`);
    if (p === '/fhir/Patient/html')
      return send(200, 'text/html; charset=utf-8',
        '<!DOCTYPE html><html><body>Your session expired. Please log in.</body></html>');
    if (p === '/fhir/Patient/html-as-json')
      return send(200, 'application/fhir+json', '<html><body>Session expired</body></html>');
    if (p === '/fhir/Patient/hang') {
      fs.writeFileSync(hangFile, String(Date.now()));
      return; // never answers; the client is killed by the test
    }
    if (p.endsWith('/$export'))
      return outcome(403, `export refused for ${bearer}: this client needs system/*.* to export`);
    outcome(404, `no ${p}`);
  });
});
server.listen(0, '127.0.0.1', () => {
  fs.writeFileSync(ready, JSON.stringify({
    base_url: `http://127.0.0.1:${server.address().port}/fhir`,
    token_url: `http://127.0.0.1:${server.address().port}/token`,
    token: TOKEN,
  }));
});
