// integration/prom_check.mjs: a strict reader of the Prometheus text exposition format 0.0.4, to
// check what `fhirsync sync --metrics` serves. Usage: node prom_check.mjs FILE. Prints the parsed
// families as JSON ({"name": {"type", "help", "samples": [{"labels": {...}, "value": n}]}}) and
// exits 0, or prints every violation on stderr and exits 1. What it enforces:
//   - every line is "# HELP name text", "# TYPE name type", another "# " comment, or a sample;
//     the text ends with a line feed; no blank lines, no carriage returns;
//   - metric names [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* (not "__..."),
//     label values in double quotes with only \\, \" and \n escaped, no label twice in a sample;
//   - values are Go floats (NaN, +Inf, -Inf, decimal or exponent forms), an optional integer
//     timestamp after them;
//   - HELP and TYPE at most once per family, TYPE before its first sample, the type one of
//     counter, gauge, histogram, summary, untyped, and a family's samples contiguous;
//   - counters named ..._total with values >= 0; no series (name and labels) twice;
//   - HELP and TYPE are given for every family (fhirsync's own rule: every family is documented).
import { readFileSync } from "node:fs";

const text = readFileSync(process.argv[2], "utf8");
const errors = [];
const families = {};
const seriesSeen = new Set();
let current = null; // the family whose samples are being read
const finished = new Set(); // families whose samples are over
const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const FLOAT = /^(?:[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|NaN|[+-]?Inf)$/;

if (!text.endsWith("\n")) errors.push("the text does not end with a line feed");
if (text.includes("\r")) errors.push("carriage return in the text");
const lines = text.split("\n");
lines.pop(); // after the final line feed

function family(name) {
  return (families[name] ??= { type: null, help: null, samples: [] });
}

// The family a sample name belongs to: itself, or a histogram/summary's base name.
function familyOf(name) {
  for (const suffix of ["_bucket", "_count", "_sum"]) {
    const base = name.slice(0, -suffix.length);
    if (name.endsWith(suffix) && families[base] && ["histogram", "summary"].includes(families[base].type))
      return base;
  }
  return name;
}

function parseLabels(s, where) {
  // s starts after "{"; returns [labels, rest after "}"]
  const labels = {};
  let i = 0;
  for (;;) {
    if (s[i] === "}") return [labels, s.slice(i + 1)];
    const m = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(s.slice(i));
    if (!m) throw new Error(`${where}: bad label at "${s.slice(i, i + 30)}"`);
    const lname = m[1];
    if (lname.startsWith("__")) throw new Error(`${where}: reserved label name ${lname}`);
    if (lname in labels) throw new Error(`${where}: label ${lname} twice`);
    i += m[0].length;
    let value = "";
    for (;;) {
      if (i >= s.length) throw new Error(`${where}: unterminated label value`);
      const c = s[i];
      if (c === "\\") {
        const e = s[i + 1];
        if (e === "\\") value += "\\";
        else if (e === '"') value += '"';
        else if (e === "n") value += "\n";
        else throw new Error(`${where}: bad escape \\${e} in a label value`);
        i += 2;
      } else if (c === '"') {
        i++;
        break;
      } else if (c === "\n") {
        throw new Error(`${where}: raw line feed in a label value`);
      } else {
        value += c;
        i++;
      }
    }
    labels[lname] = value;
    if (s[i] === ",") {
      i++;
      if (s[i] === "}") return [labels, s.slice(i + 1)]; // a trailing comma is allowed
    } else if (s[i] !== "}") {
      throw new Error(`${where}: expected , or } after a label value`);
    }
  }
}

lines.forEach((line, n) => {
  const where = `line ${n + 1}`;
  try {
    if (line === "") throw new Error(`${where}: empty line`);
    if (line.startsWith("#")) {
      const m = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(line);
      if (!m) {
        if (!line.startsWith("# ")) throw new Error(`${where}: a comment is "# text"`);
        return;
      }
      const [, kind, name, rest = ""] = m;
      if (!NAME.test(name)) throw new Error(`${where}: bad metric name ${name}`);
      const f = family(name);
      if (finished.has(name) || (current && current !== name && f.samples.length))
        throw new Error(`${where}: ${kind} of ${name} after its samples`);
      if (kind === "HELP") {
        if (f.help !== null) throw new Error(`${where}: second HELP for ${name}`);
        if (/\\[^\\n]/.test(rest.replace(/\\\\/g, ""))) throw new Error(`${where}: bad escape in HELP`);
        f.help = rest.replace(/\\n/g, "\n").replace(/\\\\/g, "\\");
      } else {
        if (f.type !== null) throw new Error(`${where}: second TYPE for ${name}`);
        if (f.samples.length) throw new Error(`${where}: TYPE of ${name} after a sample`);
        if (!["counter", "gauge", "histogram", "summary", "untyped"].includes(rest))
          throw new Error(`${where}: bad type "${rest}"`);
        f.type = rest;
      }
      if (current && current !== name) finished.add(current);
      current = name;
      return;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(.*)$/.exec(line);
    if (!m) throw new Error(`${where}: not a sample`);
    const name = m[1];
    let rest = m[2];
    let labels = {};
    if (rest.startsWith("{")) [labels, rest] = parseLabels(rest.slice(1), where);
    const v = /^ (\S+)(?: (-?\d+))?$/.exec(rest);
    if (!v) throw new Error(`${where}: expected " value [timestamp]" after ${name}`);
    if (!FLOAT.test(v[1])) throw new Error(`${where}: bad value ${v[1]}`);
    const value = Number(v[1].replace(/^([+-]?)Inf$/, "$1Infinity"));
    const fname = familyOf(name);
    if (finished.has(fname)) throw new Error(`${where}: samples of ${fname} are not contiguous`);
    if (current && current !== fname) finished.add(current);
    current = fname;
    const f = family(fname);
    if (f.type === "counter") {
      if (!fname.endsWith("_total")) throw new Error(`${where}: counter ${fname} does not end in _total`);
      if (!(value >= 0)) throw new Error(`${where}: counter ${fname} is ${v[1]}`);
    }
    const key = name + JSON.stringify(Object.entries(labels).sort());
    if (seriesSeen.has(key)) throw new Error(`${where}: series ${name}${JSON.stringify(labels)} twice`);
    seriesSeen.add(key);
    f.samples.push({ name, labels, value });
  } catch (e) {
    errors.push(e.message);
  }
});
for (const [name, f] of Object.entries(families)) {
  if (f.type === null) errors.push(`${name}: no TYPE`);
  if (f.help === null) errors.push(`${name}: no HELP`);
}
if (errors.length) {
  for (const e of errors) console.error(e);
  process.exit(1);
}
console.log(JSON.stringify(families));
