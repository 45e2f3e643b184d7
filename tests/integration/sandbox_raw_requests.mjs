// sandbox_raw_requests.mjs: sends the sandbox requests that curl will not make (a garbage request
// line, a truncated request, a huge request target, a header without a colon, a body shorter than
// its Content-Length, many connections at once) over raw sockets, and checks that each gets a
// 4xx answer or a closed connection, never a hang, and that the server keeps answering.
//
// usage: node sandbox_raw_requests.mjs READY_FILE
import net from 'node:net';
import { readFileSync } from 'node:fs';

const ready = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const port = ready.port;
let failures = 0, passed = 0;

function raw(payload, { endAfter = true, timeoutMs = 5000 } = {}) {
    return new Promise((resolve) => {
        const sock = net.connect(port, '127.0.0.1');
        let data = '';
        const timer = setTimeout(() => { sock.destroy(); resolve({ data, timedOut: true }); }, timeoutMs);
        sock.on('connect', () => {
            sock.write(payload);
            if (endAfter)
                sock.end();
        });
        sock.on('data', (d) => { data += d.toString('latin1'); });
        sock.on('error', () => {});
        sock.on('close', () => { clearTimeout(timer); resolve({ data, timedOut: false }); });
    });
}

function status(r) {
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(r.data);
    return m ? Number(m[1]) : 0;
}

function check(name, cond, detail) {
    if (cond) {
        passed++;
    } else {
        failures++;
        console.error('FAIL ' + name + (detail ? ': ' + detail : ''));
    }
}

async function alive() {
    const r = await fetch(ready.base_url + '/metadata');
    return r.status === 200;
}

async function main() {
    let r = await raw('GARBAGE\r\n\r\n');
    check('garbage request line', !r.timedOut && (status(r) === 0 || (status(r) >= 400 && status(r) < 500)),
          r.data.slice(0, 80));
    r = await raw('GET /fhir/metadata HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n');
    check('header without a colon', !r.timedOut && (status(r) === 0 || status(r) < 500), r.data.slice(0, 80));
    r = await raw('GET /fhir/' + 'a'.repeat(300000) + ' HTTP/1.1\r\nHost: x\r\n\r\n');
    check('huge request target', !r.timedOut && (status(r) === 0 || (status(r) >= 400 && status(r) < 500)),
          r.data.slice(0, 80));
    r = await raw('POST /auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
                  'Content-Length: 100\r\n\r\n{"client_id":', { timeoutMs: 3000 });
    check('body shorter than Content-Length', status(r) === 0 || status(r) >= 400, r.data.slice(0, 80));
    r = await raw('GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n', { timeoutMs: 3000 });
    check('truncated request', status(r) === 0, r.data.slice(0, 80));
    r = await raw('POST /auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n' +
                  'Content-Length: 99999999999999999999\r\n\r\n');
    check('absurd Content-Length', !r.timedOut && (status(r) === 0 || status(r) >= 400), r.data.slice(0, 80));
    r = await raw('GET /fhir/metadata?%%%% HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    check('malformed query string', status(r) === 400, r.data.slice(0, 80));
    r = await raw('GET /fhir/Patient/a%00b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    check('NUL in the path', status(r) === 400, r.data.slice(0, 80));
    r = await raw('GET /' + 'a/'.repeat(40) + ' HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    check('too many path segments', status(r) === 400, r.data.slice(0, 80));

    // many connections at once, each a keep-alive pair of requests
    const many = [];
    for (let i = 0; i < 64; i++)
        many.push(raw('GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n\r\n' +
                      'GET /fhir/.well-known/smart-configuration HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
                      { endAfter: false, timeoutMs: 15000 }));
    const results = await Promise.all(many);
    check('64 keep-alive connections', results.every((x) => (x.data.match(/HTTP\/1\.1 200/g) || []).length === 2),
          results.map((x) => x.data.length).join(','));

    check('still alive', await alive());
    console.log(`${passed} raw checks passed, ${failures} failed`);
    process.exit(failures ? 1 : 0);
}

main().catch((e) => { console.error(e); process.exit(1); });
