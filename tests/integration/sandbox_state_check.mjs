// sandbox_state_check.mjs: checks the sandbox's state dump (GET /admin/state) against its own
// summary (?summary=1: per type the count and the combined hash, recomputed here from the rows as
// docs/sandbox.md defines it) and, when a manifest is given, against an export: every exported
// line's SHA-256 (of the line's bytes, without the newline) must be the dump's hash of that
// resource. Prints a JSON summary for the calling test to assert on.
//
// usage: node sandbox_state_check.mjs STATE_NDJSON SUMMARY_JSON [MANIFEST_FILE TOKEN]
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

const sha256 = (b) => createHash('sha256').update(b).digest('hex');

function fail(msg) {
    console.error('state check: ' + msg);
    process.exit(1);
}

const rows = readFileSync(process.argv[2], 'utf8').split('\n').filter((l) => l.length)
    .map((l) => JSON.parse(l));
const summary = JSON.parse(readFileSync(process.argv[3], 'utf8'));

const state = new Map(); // "Type/id" -> row
const byType = {};
let previous = null;
for (const r of rows) {
    for (const k of ['resourceType', 'id', 'versionId', 'lastUpdated', 'sha256'])
        if (typeof r[k] !== 'string')
            fail('row without ' + k + ': ' + JSON.stringify(r));
    const key = r.resourceType + '/' + r.id;
    if (previous) {
        const [pt, pid] = previous;
        if (pt > r.resourceType || (pt === r.resourceType && Buffer.compare(Buffer.from(pid),
                                                                             Buffer.from(r.id)) >= 0))
            fail(`rows not sorted by type then id: ${pt}/${pid} before ${key}`);
    }
    previous = [r.resourceType, r.id];
    state.set(key, r);
    (byType[r.resourceType] = byType[r.resourceType] || []).push(r);
}

// the summary: counts and combined hashes over "id versionId sha\n" in id order
let summaryOk = true;
const summaryProblems = [];
for (const [type, s] of Object.entries(summary.types)) {
    const list = byType[type] || [];
    const combined = sha256(list.map((r) => `${r.id} ${r.versionId} ${r.sha256}\n`).join(''));
    if (s.count !== list.length || s.hash !== combined) {
        summaryOk = false;
        summaryProblems.push(`${type}: summary ${s.count}/${s.hash}, rows ${list.length}/${combined}`);
    }
}
for (const type of Object.keys(byType))
    if (!(type in summary.types)) {
        summaryOk = false;
        summaryProblems.push(`${type} missing from the summary`);
    }

const out = {
    stateCount: rows.length, types: Object.fromEntries(Object.entries(byType).map(([t, l]) => [t, l.length])),
    summaryOk, summaryProblems,
};

async function download(url, token) {
    const res = await fetch(url, { headers: { Authorization: 'Bearer ' + token,
                                              Accept: 'application/fhir+ndjson' } });
    if (res.status !== 200)
        fail(`GET ${url}: ${res.status}`);
    const buf = Buffer.from(await res.arrayBuffer());
    const lines = [];
    let start = 0;
    for (let i = 0; i < buf.length; i++)
        if (buf[i] === 0x0a) {
            lines.push(buf.subarray(start, i));
            start = i + 1;
        }
    if (start !== buf.length)
        fail(`${url} does not end with a newline`);
    return lines;
}

async function main() {
    if (process.argv[4]) {
        const manifest = JSON.parse(readFileSync(process.argv[4], 'utf8'));
        const token = process.argv[5];
        const exp = { lines: 0, matched: 0, shaMismatch: [], notInState: [], exportedIds: {},
                      stateNotExported: {} };
        const seen = new Set();
        for (const item of manifest.output) {
            for (const line of await download(item.url, token)) {
                exp.lines++;
                const r = JSON.parse(line.toString('utf8'));
                const key = r.resourceType + '/' + r.id;
                seen.add(key);
                (exp.exportedIds[r.resourceType] = exp.exportedIds[r.resourceType] || []).push(r.id);
                const row = state.get(key);
                if (!row)
                    exp.notInState.push(key);
                else if (row.sha256 !== sha256(line) || row.versionId !== r.meta.versionId ||
                         row.lastUpdated !== r.meta.lastUpdated)
                    exp.shaMismatch.push(key);
                else
                    exp.matched++;
            }
        }
        for (const type of Object.keys(exp.exportedIds))
            exp.stateNotExported[type] = (byType[type] || [])
                .filter((r) => !seen.has(type + '/' + r.id)).map((r) => r.id);
        out.export = exp;
    }
    console.log(JSON.stringify(out));
}

main().catch((e) => fail(e && e.stack || String(e)));
