// bench/scale_lib.mjs: the arithmetic and the checks of bench/scale_bench.sh, in node because
// they read JSON: the sandbox's client registrations for N practices, the figures of one round
// (lags from the time-stamped `sync --json` lines, peak memory, the sandbox's per-practice
// counters), and the check that every practice's store holds exactly what the practice serves.
//
//   node scale_lib.mjs clients N JWKS_FILE OTHER_JWKS_FILE REKEYED > clients.json
//   node scale_lib.mjs round DIR                (DIR/round.json says what the round was)
//   node scale_lib.mjs verify DUMP_BIN URL_TEMPLATE ADMIN_TEMPLATE FIRST LAST
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';

const pad = (i) => String(i).padStart(4, '0');
const fix = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '-');
const median = (a) => {
    if (!a.length) return NaN;
    const s = [...a].sort((x, y) => x - y);
    return s[s.length >> 1];
};
const commas = (n) => Math.round(n).toLocaleString('en-US');

// clients: practice i's client scale-NNNN with our key; practice REKEYED also has a client
// scale-NNNN-rekeyed whose registration holds another key (the faults round's "revoked key")
function clients(n, jwksFile, otherFile, rekeyed) {
    const jwks = JSON.parse(fs.readFileSync(jwksFile, 'utf8'));
    const other = JSON.parse(fs.readFileSync(otherFile, 'utf8'));
    const list = [];
    for (let i = 1; i <= n; i++)
        list.push({ client_id: `scale-${pad(i)}`, scope: 'system/*.read', jwks, practice: i });
    if (rekeyed > 0)
        list.push({ client_id: `scale-${pad(rekeyed)}-rekeyed`, scope: 'system/*.read',
                    jwks: other, practice: rekeyed });
    process.stdout.write(JSON.stringify({ clients: list }) + '\n');
}

// round: the figures of one round. DIR/round.json: {label, procs, jobs, t0, t1, practices,
// faulty: [i...], lifetime, rate_limit, baseline_rate}; DIR/pK.out (lines "STAMP JSON"), DIR/pK.rss
// (/usr/bin/time -f %M, KB, last line), DIR/admin.json (GET /admin/practices after the round).
// Prints one table row and writes DIR/summary.json.
function round(dir) {
    const r = JSON.parse(fs.readFileSync(`${dir}/round.json`, 'utf8'));
    const faulty = new Set((r.faulty || []).map((i) => `practice-${pad(i)}`));
    const runs = new Map();
    const rss = [];
    for (let k = 1; k <= r.procs; k++) {
        const out = fs.existsSync(`${dir}/p${k}.out`) ? fs.readFileSync(`${dir}/p${k}.out`, 'utf8') : '';
        for (const line of out.split('\n')) {
            const sp = line.indexOf(' ');
            if (sp < 0 || line[sp + 1] !== '{') continue;
            const j = JSON.parse(line.slice(sp + 1));
            if (!j.endpoint) continue;
            j.lag = Number(line.slice(0, sp)) - r.t0;
            // a rerun (after a kill) gives the lag and the status; the resources add up
            const before = runs.get(j.endpoint);
            if (before) j.resources += before.resources;
            runs.set(j.endpoint, j);
        }
        const m = fs.existsSync(`${dir}/p${k}.rss`)
            ? fs.readFileSync(`${dir}/p${k}.rss`, 'utf8').trim().split('\n').pop() : '';
        rss.push(/^\d+$/.test(m) ? Number(m) / 1024 : NaN);
    }
    const healthy = [...runs.values()].filter((j) => !faulty.has(j.endpoint));
    const count = (s) => healthy.filter((j) => j.status === s).length;
    const resources = healthy.reduce((a, j) => a + j.resources, 0);
    const lags = healthy.map((j) => j.lag);
    const slowest = healthy.reduce((a, j) => (!a || j.lag > a.lag ? j : a), null);
    const wall = r.t1 - r.t0;
    const admin = JSON.parse(fs.readFileSync(`${dir}/admin.json`, 'utf8'));
    let tokMax = 0, tokOver = 0, perMin = 0, per60 = 0, s429 = 0, limited = 0, tokens = 0;
    let busiest = '';
    for (const p of admin.practices) {
        if (faulty.has(`practice-${pad(p.practice)}`)) continue;
        tokens += p.token_requests;
        tokMax = Math.max(tokMax, p.token_requests);
        // one token per lifetime: the practice's requests spanned this long
        const span = p.first_request
            ? (Date.parse(p.last_request) - Date.parse(p.first_request)) / 1000 + 1 : 0;
        if (p.token_requests > Math.max(1, Math.ceil(span / r.lifetime))) tokOver++;
        if (p.max_requests_per_minute > perMin) {
            perMin = p.max_requests_per_minute;
            busiest = `practice ${p.practice}`;
        }
        per60 = Math.max(per60, p.max_requests_per_60s);
        s429 += p.status_429;
        limited += p.rate_limited;
    }
    const rate = wall > 0 ? resources / wall : 0;
    const s = {
        label: r.label, procs: r.procs, jobs: r.jobs, wall, resources, rate,
        ok: count('ok'), partial: count('partial'), failed: healthy.length - count('ok') - count('partial'),
        reported: healthy.length, expected: r.practices - faulty.size,
        lag_max: slowest ? slowest.lag : NaN, lag_slowest: slowest ? slowest.endpoint : '-',
        lag_median: median(lags), lag_p90: lags.length ? [...lags].sort((a, b) => a - b)[Math.floor(lags.length * 0.9)] : NaN,
        lags: Object.fromEntries(healthy.map((j) => [j.endpoint, j.lag])),
        resources_by: Object.fromEntries(healthy.map((j) => [j.endpoint, j.resources])),
        rss, tokens, tok_max: tokMax, tok_over: tokOver, per_min: perMin, per_60s: per60,
        busiest, s429, rate_limited: limited, rate_limit: r.rate_limit,
        faulty: [...runs.values()].filter((j) => faulty.has(j.endpoint))
            .map((j) => ({ endpoint: j.endpoint, status: j.status, lag: j.lag, error: j.error })),
    };
    fs.writeFileSync(`${dir}/summary.json`, JSON.stringify(s, null, 1));
    const x = r.baseline_rate > 0 ? `${fix(rate / r.baseline_rate, 2)}x` : '-';
    console.log(`| ${r.label} | ${r.procs} x ${r.jobs} | ${s.ok}/${s.partial}/${s.failed}` +
        `${s.reported < s.expected ? ` (${s.expected - s.reported} unreported)` : ''} | ` +
        `${commas(resources)} | ${fix(wall)} | ${commas(rate)} | ${x} | ` +
        `${fix(s.lag_max)} (${s.lag_slowest}) | ${fix(s.lag_median)} | ` +
        `${rss.map((m) => fix(m)).join(', ')} | ${tokMax}${tokOver ? ` (${tokOver} over)` : ''} | ` +
        `${perMin} / ${per60} (${r.rate_limit}) | ${s429}${limited ? ` (${limited} by the limit)` : ''} |`);
}

// verify: for practices FIRST..LAST, the store (URL_TEMPLATE with {i} = NNNN) holds exactly the
// practice's resources (type, id, versionId, SHA-256 of the bytes), of the Patient compartment
// (a Patient-level export's mirror). One line per practice that differs; a summary.
async function verify(dumpBin, urlTemplate, adminTemplate, first, last) {
    const skip = /^(Group|Organization|Practitioner|PractitionerRole|Location|Medication|HealthcareService|Endpoint)\b/;
    let equal = 0, differ = 0, rows = 0;
    for (let i = first; i <= last; i++) {
        const url = urlTemplate.replaceAll('{i}', pad(i));
        const stored = execFileSync(dumpBin, ['--dump', url], { maxBuffer: 1 << 30, encoding: 'utf8' })
            .split('\n').filter((l) => l && !l.startsWith('deleted') && !skip.test(l)).sort();
        const res = await fetch(`${adminTemplate.replaceAll('{i}', String(i))}/state`);
        const served = (await res.text()).split('\n').filter((l) => l.trim()).map((l) => {
            const j = JSON.parse(l);
            return [j.resourceType, j.id, j.versionId ?? '-', j.sha256].join('\t');
        }).filter((l) => !skip.test(l)).sort();
        const same = stored.length === served.length && stored.every((l, k) => l === served[k]);
        if (same && served.length) {
            equal++;
            rows += served.length;
        } else {
            differ++;
            console.log(`practice ${i}: the store differs (${stored.length} stored, ${served.length} served)`);
        }
    }
    console.log(`stores equal to their practice: ${equal} of ${last - first + 1} (${commas(rows)} resources)` +
        (differ ? `; ${differ} DIFFER` : ''));
    process.exitCode = differ ? 1 : 0;
}

const [cmd, ...args] = process.argv.slice(2);
if (cmd === 'clients') clients(Number(args[0]), args[1], args[2], Number(args[3] || 0));
else if (cmd === 'round') round(args[0]);
else if (cmd === 'verify') await verify(args[0], args[1], args[2], Number(args[3]), Number(args[4]));
else {
    console.error('usage: scale_lib.mjs clients|round|verify ...');
    process.exit(2);
}
