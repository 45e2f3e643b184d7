// A Bulk Data "server" that answers what the sandbox never does, for the export client's tests.
// Test-only. The client gets its token from the sandbox (token_url) and sends it here; this
// server ignores it. Each scenario is a FHIR base of its own: http://127.0.0.1:PORT/SCENARIO/fhir
//   nolocation   kick-off answers 202 without Content-Location
//   fatal        status polls answer 500 with a fatal OperationOutcome ("disk full")
//   transient    status polls answer 500 transient twice, then 202 with an HTTP-date
//                Retry-After, then a manifest
//   paged        a manifest in two pages (link next), relative file URLs, no
//                requiresAccessToken member
//   badlines     a Patient file with a wrong resourceType, broken JSON, an empty line, CRLF,
//                a BOM and a count that does not match, served the same way every time
//   mismatch     a clean Patient file of 3 lines whose manifest count says 5
//   notoken      requiresAccessToken false: the files must be fetched without the token
// Hostile servers (bounded work, issue 11):
//   rafzero      status polls answer 202 with "Retry-After: 0" and the same X-Progress for ever
//   raepoch      Retry-After as an absolute epoch: in seconds (now + 2 s), then in milliseconds
//                (now + 1.5 s), then the manifest
//   cutsame      two files; Patient ignores Range and is cut at the same byte every time (a
//                Content-Length of the whole, then the connection closes); Observation is fine
//   trickle      the Patient file comes one byte a second (Range ignored); Observation is fine
//   hugeheader   the kick-off answer carries a 1 MiB header line
//   manyheaders  status polls answer 202 with 100,000 headers
//   bigprogress  status polls answer 202 with a 90 KB X-Progress
//   otherorigin  the status URL (Content-Location) is on another origin (localhost, not 127.0.0.1)
//   toomany      kick-off answers 429 with an HTML "Too Many Requests" page
// GET /requests lists what was asked (method, path, authorization present, time in ms) as JSON.
// usage: node bulk_fake_server.mjs READY_FILE   (listens on 127.0.0.1, a free port)
import fs from 'node:fs';
import http from 'node:http';

const ready = process.argv[2];
const requests = [];
const polls = {};
const patient = (id) => JSON.stringify({ resourceType: 'Patient', id, active: true });
const outcome = (severity, code, diagnostics) =>
  JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity, code, diagnostics }] });

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  requests.push({ method: req.method, path: url.pathname, bearer: !!req.headers.authorization,
    t: Date.now(), range: req.headers.range || null });
  // raw answers for what Node's own response writer would refuse or reshape
  const raw = (head, body = '') => {
    req.socket.write(head + '\r\n' + body);
    req.socket.end();
  };
  const send = (status, type, body, headers = {}) => {
    res.writeHead(status, { 'Content-Type': type, ...headers });
    res.end(body);
  };
  if (url.pathname === '/requests') return send(200, 'application/json', JSON.stringify(requests));
  const m = url.pathname.match(/^\/([a-z]+)\/fhir\/(.*)$/);
  if (!m) return send(404, 'application/fhir+json', outcome('error', 'not-found', 'no route'));
  const [, scenario, rest] = m;
  const origin = `http://127.0.0.1:${server.address().port}`;
  const base = `${origin}/${scenario}/fhir`;
  if (rest === '$export') {
    if (scenario === 'nolocation') return send(202, 'application/fhir+json', '');
    if (scenario === 'hugeheader')
      return raw(`HTTP/1.1 202 Accepted\r\nContent-Location: ${base}/status/1\r\n` +
        `X-Padding: ${'a'.repeat(1024 * 1024)}\r\nContent-Length: 0\r\nConnection: close\r\n`);
    if (scenario === 'otherorigin')
      return send(202, 'application/fhir+json', '', {
        'Content-Location': `http://localhost:${server.address().port}/${scenario}/fhir/status/1` });
    if (scenario === 'toomany')
      return send(429, 'text/html', '<!DOCTYPE html><html><head><title>429 Too Many Requests' +
        '</title></head><body><h1>Too Many Requests</h1></body></html>');
    return send(202, 'application/fhir+json', '', { 'Content-Location': `${base}/status/1` });
  }
  if (rest === 'status/1' && req.method === 'DELETE') return send(202, 'application/json', '');
  if (rest === 'status/1') {
    const n = (polls[scenario] = (polls[scenario] || 0) + 1);
    if (scenario === 'fatal')
      return send(500, 'application/fhir+json', outcome('fatal', 'exception', 'disk full on the export volume'));
    if (scenario === 'transient' && n <= 2)
      return send(500, 'application/fhir+json', outcome('error', 'transient', 'busy, try later'));
    if (scenario === 'rafzero')
      return send(202, 'application/json', '', { 'Retry-After': '0', 'X-Progress': 'busy' });
    if (scenario === 'raepoch' && n === 1)
      return send(202, 'application/json', '', {
        'Retry-After': String(Math.floor(Date.now() / 1000) + 3), 'X-Progress': 'epoch s' });
    if (scenario === 'raepoch' && n === 2)
      return send(202, 'application/json', '', {
        'Retry-After': String(Date.now() + 1500), 'X-Progress': 'epoch ms' });
    if (scenario === 'manyheaders') {
      let head = 'HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 0\r\n';
      for (let i = 0; i < 100000; i++) head += `X-H${i}: v\r\n`;
      return raw(head);
    }
    if (scenario === 'bigprogress')
      return raw('HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 0\r\n' +
        `X-Progress: ${'p'.repeat(90 * 1024)}\r\n`);
    if (scenario === 'transient' && n === 3)
      return send(202, 'application/json', '', {
        'Retry-After': new Date(Date.now() + 1000).toUTCString(), 'X-Progress': 'almost there' });
    const manifest = {
      transactionTime: '2024-05-01T10:00:00Z', request: `${base}/$export`,
      requiresAccessToken: scenario !== 'notoken',
      output: [{ type: 'Patient', url: `${base}/files/patients`, count: 3 }], error: [],
    };
    if (scenario === 'badlines') manifest.output[0].count = 5;
    if (scenario === 'mismatch') manifest.output[0].count = 5;
    if (scenario === 'cutsame' || scenario === 'trickle')
      manifest.output.push({ type: 'Observation', url: `${base}/files/obs`, count: 2 });
    if (scenario === 'paged') {
      delete manifest.requiresAccessToken;
      manifest.output[0].url = '../files/patients'; // relative to this page's URL
      manifest.link = [{ relation: 'next', url: '1/page2' }];
    }
    return send(200, 'application/json', JSON.stringify(manifest));
  }
  if (rest === 'status/1/page2') {
    return send(200, 'application/json', JSON.stringify({
      transactionTime: '2024-05-01T10:00:00Z', request: `${base}/$export`,
      output: [{ type: 'Patient', url: `${base}/files/more`, count: 2 }],
      error: [{ type: 'OperationOutcome', url: `${base}/files/errors` }],
    }));
  }
  if (rest === 'files/patients' && scenario === 'badlines') {
    const body = '\ufeff' + patient('a') + '\r\n' +
      JSON.stringify({ resourceType: 'Observation', id: 'x' }) + '\n' +
      '\n' +
      '{"resourceType":"Patient","id":"broken",\n' +
      patient('b') + '\n' +
      patient('c');
    return send(200, 'application/fhir+ndjson', body);
  }
  if (rest === 'files/patients' && scenario === 'cutsame') {
    // the whole file announced, half of it sent, the connection closed: same place every time
    const body = [patient('a'), patient('b'), patient('c')].join('\n') + '\n';
    res.writeHead(200, { 'Content-Type': 'application/fhir+ndjson',
      'Content-Length': Buffer.byteLength(body) });
    res.write(body.slice(0, 60));
    return setTimeout(() => req.socket.destroy(), 50);
  }
  if (rest === 'files/patients' && scenario === 'trickle') {
    const body = [patient('a'), patient('b'), patient('c')].join('\n') + '\n';
    res.writeHead(200, { 'Content-Type': 'application/fhir+ndjson',
      'Content-Length': Buffer.byteLength(body) });
    let i = 0;
    const timer = setInterval(() => {
      if (res.destroyed || i >= body.length) { clearInterval(timer); return res.end(); }
      res.write(body[i++]);
    }, 1000);
    res.on('close', () => clearInterval(timer));
    return;
  }
  if (rest === 'files/obs')
    return send(200, 'application/fhir+ndjson',
      JSON.stringify({ resourceType: 'Observation', id: 'o1', status: 'final' }) + '\n' +
      JSON.stringify({ resourceType: 'Observation', id: 'o2', status: 'final' }) + '\n');
  if (rest === 'files/patients')
    return send(200, 'application/fhir+ndjson', [patient('a'), patient('b'), patient('c')].join('\n') + '\n');
  if (rest === 'files/more')
    return send(200, 'application/fhir+ndjson', [patient('d'), patient('e')].join('\n') + '\n');
  if (rest === 'files/errors')
    return send(200, 'application/fhir+ndjson', outcome('error', 'processing', 'Patient/zz could not be exported') + '\n');
  send(404, 'application/fhir+json', outcome('error', 'not-found', `no ${url.pathname}`));
});
server.keepAliveTimeout = 1000;
server.listen(0, '127.0.0.1', () => {
  fs.writeFileSync(ready, JSON.stringify({ origin: `http://127.0.0.1:${server.address().port}` }));
});
