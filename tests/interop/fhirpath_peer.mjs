// tests/interop/fhirpath_peer.mjs: the npm `fhirpath` side of the FHIRPath differential test
// (test_fhirpath_differential.sh; fhirpath_eval.c is fhirsync's side). Usage: node
// fhirpath_peer.mjs EXPRESSIONS NDJSON. Same input and output as fhirpath_eval: for each resource
// line whose resourceType is the expression's, "LINE<TAB>INDEX<TAB>RESULT" with RESULT the JSON
// array the HL7 engine returns (model r4), or "error: MESSAGE".
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const fhirpath = require('fhirpath');
const r4 = require('fhirpath/fhir-context/r4');

const [listPath, dataPath] = process.argv.slice(2);
const exprs = readFileSync(listPath, 'utf8')
  .split('\n')
  .map((l) => l.replace(/\r$/, ''))
  .filter((l) => l && !l.startsWith('#') && l.includes('\t'))
  .map((l) => {
    const tab = l.indexOf('\t');
    const type = l.slice(0, tab), path = l.slice(tab + 1);
    return { type, path, compiled: fhirpath.compile(path, r4) };
  });
const out = [];
readFileSync(dataPath, 'utf8').split('\n').forEach((text, i) => {
  if (!text.trim()) return;
  const resource = JSON.parse(text);
  exprs.forEach((e, index) => {
    if (resource.resourceType !== e.type) return;
    let result;
    try {
      // resolveInternalTypes turns FHIRPath-typed values (dates, quantities) into plain JSON
      result = JSON.stringify(fhirpath.resolveInternalTypes(e.compiled(resource)));
    } catch (err) {
      result = 'error: ' + String(err.message).split('\n')[0];
    }
    out.push(`${i + 1}\t${index}\t${result}`);
  });
});
process.stdout.write(out.join('\n') + (out.length ? '\n' : ''));
