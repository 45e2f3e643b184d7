// sandbox_bulk_check.mjs: downloads every file of a Bulk Data manifest (with the bearer token, as
// requiresAccessToken demands) and checks it: Content-Type application/fhir+ndjson, one JSON
// resource per line, the manifest count equal to the number of lines, each output line of the
// file's type, deleted files holding transaction Bundles of DELETE entries, error files holding
// OperationOutcomes. Prints a JSON summary for the calling test to assert on.
//
// usage: node sandbox_bulk_check.mjs MANIFEST_FILE TOKEN
import { readFileSync } from 'node:fs';

const manifest = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const token = process.argv[3];

function fail(msg) {
    console.error('bulk check: ' + msg);
    process.exit(1);
}

async function download(url) {
    const res = await fetch(url, { headers: { Authorization: 'Bearer ' + token,
                                              Accept: 'application/fhir+ndjson' } });
    if (res.status !== 200)
        fail(`GET ${url}: ${res.status}`);
    const type = res.headers.get('content-type') || '';
    if (!type.startsWith('application/fhir+ndjson'))
        fail(`GET ${url}: Content-Type ${type}`);
    const text = await res.text();
    if (text.length && !text.endsWith('\n'))
        fail(`${url} does not end with a newline`);
    return text.split('\n').filter((l) => l.length).map((l, i) => {
        try {
            return JSON.parse(l);
        } catch {
            fail(`${url} line ${i + 1} is not JSON`);
        }
    });
}

const summary = {
    transactionTime: manifest.transactionTime,
    request: manifest.request,
    requiresAccessToken: manifest.requiresAccessToken,
    output: {},
    files: {},
    ids: {},
    minLastUpdated: null,
    observationCategories: [],
    patients: [],
    deleted: 0,
    deletedIds: [],
    errors: [],
};

async function main() {
    for (const key of ['transactionTime', 'request', 'requiresAccessToken', 'output', 'error'])
        if (!(key in manifest))
            fail('manifest lacks ' + key);
    const categories = new Set(), patients = new Set();
    for (const item of manifest.output) {
        const lines = await download(item.url);
        if (lines.length !== item.count)
            fail(`${item.url}: manifest count ${item.count}, ${lines.length} lines`);
        summary.output[item.type] = (summary.output[item.type] || 0) + lines.length;
        summary.files[item.type] = (summary.files[item.type] || 0) + 1;
        summary.ids[item.type] = summary.ids[item.type] || [];
        for (const r of lines) {
            if (r.resourceType !== item.type)
                fail(`${item.url} holds a ${r.resourceType}`);
            summary.ids[item.type].push(r.id);
            const lu = r.meta && r.meta.lastUpdated;
            if (lu && (!summary.minLastUpdated || Date.parse(lu) < Date.parse(summary.minLastUpdated)))
                summary.minLastUpdated = lu;
            if (r.resourceType === 'Observation')
                for (const c of r.category || [])
                    for (const cd of c.coding || [])
                        categories.add(cd.code);
            const ref = (r.subject || r.patient || {}).reference;
            if (r.resourceType === 'Patient')
                patients.add(r.id);
            else if (ref && ref.startsWith('Patient/'))
                patients.add(ref.slice(8));
        }
    }
    for (const item of manifest.deleted || []) {
        if (item.type !== 'Bundle')
            fail('deleted item of type ' + item.type);
        const lines = await download(item.url);
        if (lines.length !== item.count)
            fail(`${item.url}: manifest count ${item.count}, ${lines.length} lines`);
        for (const b of lines) {
            if (b.resourceType !== 'Bundle' || b.type !== 'transaction' || !Array.isArray(b.entry))
                fail('deleted line is not a transaction Bundle');
            for (const e of b.entry) {
                if (!e.request || e.request.method !== 'DELETE' || !/^[A-Za-z]+\/[^/]+$/.test(e.request.url))
                    fail('deleted entry is not a DELETE of Type/id');
                summary.deleted++;
                summary.deletedIds.push(e.request.url);
            }
        }
    }
    for (const item of manifest.error || []) {
        const lines = await download(item.url);
        if (lines.length !== item.count)
            fail(`${item.url}: manifest count ${item.count}, ${lines.length} lines`);
        for (const o of lines) {
            if (o.resourceType !== 'OperationOutcome')
                fail('error line is not an OperationOutcome');
            summary.errors.push(o.issue[0].diagnostics);
        }
    }
    summary.observationCategories = [...categories].sort();
    summary.patients = [...patients].sort();
    console.log(JSON.stringify(summary));
}

main().catch((e) => fail(e && e.stack || String(e)));
