// tests/interop/fhirpath_compare.mjs: compares the outputs of fhirpath_eval (fhirsync) and
// fhirpath_peer.mjs (the npm `fhirpath` engine) for the FHIRPath differential test. Usage: node
// fhirpath_compare.mjs EXPRESSIONS FHIRSYNC_OUT PEER_OUT. Prints one line per disagreement (the
// line, the expression, both results), then "agree N disagree M"; exits 1 on any disagreement.
// Only the differences the FHIRPath specification allows are normalised, each said below;
// anything else is a disagreement.
import { readFileSync } from 'node:fs';

const [listPath, oursPath, peerPath] = process.argv.slice(2);
const exprs = readFileSync(listPath, 'utf8').split('\n')
  .filter((l) => l && !l.startsWith('#') && l.includes('\t'));

function load(path) {
  const map = new Map();
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (!line) continue;
    const [lineNo, index, ...rest] = line.split('\t');
    map.set(`${lineNo}\t${index}`, rest.join('\t'));
  }
  return map;
}

// Two results agree when, after normalisation, they are the same JSON.
function normalise(text) {
  // Both refuse the expression on this resource (a singleton function on several items, say):
  // the messages differ by engine, the outcome does not.
  if (text.startsWith('error:')) return 'error';
  return JSON.parse(text);
}

function same(a, b) {
  if (typeof a === 'number' && typeof b === 'number') {
    // Decimal representation: fhirsync keeps a decimal's precision as the resource wrote it or
    // as FHIRPath's rules compute it ("403.70", "0.0") while the peer computes in binary
    // floating point (16.880000000000003): the spec lets an implementation choose its decimal
    // representation, so numbers agree when equal to 12 significant digits.
    return a === b || Math.abs(a - b) <= 1e-12 * Math.max(Math.abs(a), Math.abs(b));
  }
  if (Array.isArray(a) && Array.isArray(b))
    // Order is kept: every path here is ordered in both engines (no set operation).
    return a.length === b.length && a.every((x, i) => same(x, b[i]));
  if (a && b && typeof a === 'object' && typeof b === 'object') {
    const ka = Object.keys(a).sort(), kb = Object.keys(b).sort();
    return same(ka, kb) && ka.every((k) => same(a[k], b[k]));
  }
  return a === b;
}

const ours = load(oursPath), peer = load(peerPath);
let agree = 0, disagree = 0;
for (const key of new Set([...ours.keys(), ...peer.keys()])) {
  const a = ours.get(key), b = peer.get(key);
  const [lineNo, index] = key.split('\t');
  // join() of an empty collection: the SQL on FHIR v2 suite requires '' (fhirpath.json,
  // "string join", a shareable test) where FHIRPath, and the peer, give an empty collection.
  const joinOfEmpty = /\.join\([^()]*\)$/.test(exprs[index].split('\t')[1] ?? '') &&
                      a === '[""]' && b === '[]';
  if (joinOfEmpty || (a !== undefined && b !== undefined && same(normalise(a), normalise(b)))) {
    agree++;
    continue;
  }
  disagree++;
  console.log(`line ${lineNo} ${exprs[index]}\n  fhirsync: ${a ?? '(none)'}\n  fhirpath: ${b ?? '(none)'}`);
}
console.log(`agree ${agree} disagree ${disagree}`);
process.exit(disagree ? 1 : 0);
