// A deliberately broken "EHR" for bad-input tests of discovery and token requests. Test-only.
// Each path prefix is one misbehaviour:
//   /html      discovery and metadata answer an HTML login page
//   /e500      everything answers 500
//   /loop      discovery redirects in a circle
//   /big       discovery answers a 10 MB JSON body
//   /notoken   discovery is fine; the token endpoint answers 200 without access_token
//   /redirtok  the token endpoint answers a 302 to another URL
// usage: node bad_server.mjs READY_FILE   (listens on 127.0.0.1, a free port)
import fs from 'node:fs';
import http from 'node:http';

const ready = process.argv[2];
const server = http.createServer((req, res) => {
  const base = `http://127.0.0.1:${server.address().port}`;
  const [, prefix, ...rest] = req.url.split('/');
  const path = '/' + rest.join('/');
  const json = (status, body) => {
    res.writeHead(status, { 'Content-Type': 'application/json' });
    res.end(typeof body === 'string' ? body : JSON.stringify(body));
  };
  const smart = (p) => ({
    token_endpoint: `${base}/${p}/token`,
    grant_types_supported: ['client_credentials'],
    token_endpoint_auth_methods_supported: ['private_key_jwt'],
    capabilities: ['client-confidential-asymmetric', 'permission-v1'],
  });
  switch (prefix) {
    case 'html':
      res.writeHead(200, { 'Content-Type': 'text/html' });
      return res.end('<!DOCTYPE html><html><body><form>Sign in</form></body></html>');
    case 'e500':
      return json(500, '{"error":"internal"}');
    case 'loop':
      res.writeHead(302, { Location: path.endsWith('a') ? `/loop/b` : `/loop/a` });
      return res.end();
    case 'big': {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.write('{"token_endpoint":"x","pad":"');
      const chunk = 'x'.repeat(65536);
      for (let i = 0; i < 160; i++) res.write(chunk);
      return res.end('"}');
    }
    case 'notoken':
      if (path === '/token') return json(200, { token_type: 'bearer', expires_in: 300 });
      return json(200, smart('notoken'));
    case 'redirtok':
      if (path === '/token') {
        res.writeHead(302, { Location: `${base}/elsewhere/token` });
        return res.end();
      }
      return json(200, smart('redirtok'));
    default:
      return json(404, { error: 'not found' });
  }
});
server.listen(0, '127.0.0.1', () => {
  fs.writeFileSync(`${ready}.tmp`, JSON.stringify({ port: server.address().port }));
  fs.renameSync(`${ready}.tmp`, ready);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
