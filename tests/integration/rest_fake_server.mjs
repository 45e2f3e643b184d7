// A FHIR "server" that answers what the sandbox never does, for the REST client's bad-input
// tests: 200 search pages that are not JSON, plain-text gateway errors, and pages whose next link
// is relative or pretty-printed. Test-only. The client gets its token from the sandbox (token_url)
// and sends it here, the FHIR base; this server ignores it.
//   /fhir/Patient?bad=text      200 application/fhir+json, body "Service unavailable; try later"
//   /fhir/Patient?bad=truncated 200, a Bundle cut in the middle
//   /fhir/Plain502              502 text/plain
//   /fhir/Observation?page=N    pretty-printed Bundles with a relative next link (3 pages)
//   /fhir/Patient?bad=duplicate 200, a Bundle with two "entry" members
//   /fhir/Patient?bad=utf8      200, a Bundle with a byte that is not UTF-8 in a string
//   /fhir/Encounter?page=N      compact Bundles (2 pages) whose next link is written with JSON
//                               escapes, each resource holding a repeated member name (passed on
//                               as received) and escapes of its own
// usage: node rest_fake_server.mjs READY_FILE   (listens on 127.0.0.1, a free port)
import fs from 'node:fs';
import http from 'node:http';

const ready = process.argv[2];
const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const send = (status, type, body) => {
    res.writeHead(status, { 'Content-Type': type });
    res.end(body);
  };
  if (url.pathname === '/fhir/Patient' && url.searchParams.get('bad') === 'text')
    return send(200, 'application/fhir+json', 'Service unavailable; try later');
  if (url.pathname === '/fhir/Patient' && url.searchParams.get('bad') === 'truncated')
    return send(200, 'application/fhir+json', '{"resourceType":"Bundle","entry":[{"resource":{"resou');
  if (url.pathname === '/fhir/Patient' && url.searchParams.get('bad') === 'duplicate')
    return send(200, 'application/fhir+json',
      '{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient","id":"a"}}],"entry":[]}');
  if (url.pathname === '/fhir/Patient' && url.searchParams.get('bad') === 'utf8')
    return send(200, 'application/fhir+json', Buffer.concat([
      Buffer.from('{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient","id":"'),
      Buffer.from([0xc3, 0x28]), Buffer.from('"}}]}')]));
  if (url.pathname === '/fhir/Encounter') {
    // written by hand: JSON.stringify would neither repeat a name nor escape the slashes
    const page = Number(url.searchParams.get('page') || '1');
    const entry = [1, 2].map((i) => `{"resource":{"resourceType":"Encounter","id":"e${page}-${i}",` +
      `"status":"planned","status":"finished","text":{"div":"<div>caf\\u00e9 \\/ \\"x\\"<\\/div>"}}}`);
    const next = page < 2 ? `,"link":[{"relation":"ne\\u0078t","url":"Encounter?page\\u003d${page + 1}"}]` : '';
    return send(200, 'application/fhir+json',
      `{"resourceType":"Bundle","type":"searchset"${next},"entry":[${entry.join(',')}]}`);
  }
  if (url.pathname === '/fhir/Plain502')
    return send(502, 'text/plain', 'upstream connect error or disconnect/reset before headers');
  if (url.pathname === '/fhir/Observation') {
    // decimals whose spelling matters (FHIR keeps precision), pretty-printed over several lines
    const page = Number(url.searchParams.get('page') || '1');
    const entry = [1, 2].map((i) => ({
      resource: { resourceType: 'Observation', id: `p${page}-${i}`, valueQuantity: { value: 'DEC' } },
    }));
    const bundle = { resourceType: 'Bundle', type: 'searchset', total: 6, link: [], entry };
    if (page < 3) bundle.link.push({ relation: 'next', url: `Observation?page=${page + 1}` });
    const text = JSON.stringify(bundle, null, 2).replaceAll('"DEC"', '1.50').replace('1.50', '0.000120');
    return send(200, 'application/fhir+json', text);
  }
  send(404, 'application/fhir+json',
    JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found', diagnostics: `no ${url.pathname}` }] }));
});
server.listen(0, '127.0.0.1', () => {
  fs.writeFileSync(ready, JSON.stringify({ base_url: `http://127.0.0.1:${server.address().port}/fhir` }));
});
