#!/usr/bin/env bash
# interop/test_fhirpath_differential.sh: fhirsync's FHIRPath evaluator against an independent
# one, the npm `fhirpath` package (the HL7 JavaScript engine, model r4). The paths of
# fhirpath_expressions.tsv (the shapes the shipped views use, plus the functions and operators of
# the shareable subset) run over every resource of data/synthea-sample.ndjson (a few hundred
# lines of synthetic Synthea R4 data) in both engines: fhirpath_eval (the public view API, one
# `collection: true` column per path) and fhirpath_peer.mjs; fhirpath_compare.mjs reports every
# disagreement, normalising only the differences the specifications allow (decimal
# representation; join() of nothing, which SQL on FHIR makes ''). Any other difference, or a path
# fhirsync refuses, fails. Needs FHIRSYNC_BUILD_DIR (set by ctest) and node. Uses the one harness
# (tests/integration/lib.sh).
source "$(dirname "$0")/../integration/lib.sh"

here=$(cd "$(dirname "$0")" && pwd)
build=${FHIRSYNC_BUILD_DIR:?FHIRSYNC_BUILD_DIR must point at the build directory}
tool=$build/tests/fhirpath_eval
list=$here/fhirpath_expressions.tsv
data=$here/data/synthea-sample.ndjson

[ -x "$tool" ] || die "$tool is missing (build the fhirpath_eval target)"
command -v node >/dev/null || die "node is not installed (scripts/install-deps.sh installs it)"
ensure_npm_peers
[ -d "$here/node_modules/fhirpath" ] ||
    die "the fhirpath peer is missing: run 'npm ci' in tests/interop"

if "$tool" "$list" "$data" >"$TMP/fhirsync.out" 2>"$TMP/fhirsync.err"; then
    ok "fhirsync evaluated $(grep -vc '^#' "$list") paths over $(wc -l <"$data") resources"
else
    die "fhirpath_eval failed: $(cat "$TMP/fhirsync.err")"
fi
refused=$(grep -c '^0	' "$TMP/fhirsync.out" || true)
if [ "$refused" -eq 0 ]; then
    ok "fhirsync accepts every path"
else
    not_ok "fhirsync refuses $refused paths"
    grep '^0	' "$TMP/fhirsync.out" | sed 's/^/      /'
fi
node "$here/fhirpath_peer.mjs" "$list" "$data" >"$TMP/peer.out" 2>"$TMP/peer.err" ||
    die "fhirpath_peer.mjs failed: $(cat "$TMP/peer.err")"
ok "the npm fhirpath engine evaluated the same paths"
if node "$here/fhirpath_compare.mjs" "$list" "$TMP/fhirsync.out" "$TMP/peer.out" \
    >"$TMP/compare.out"; then
    ok "both engines agree: $(tail -n 1 "$TMP/compare.out")"
else
    not_ok "the engines disagree: $(tail -n 1 "$TMP/compare.out")"
    head -n 60 "$TMP/compare.out" | sed 's/^/      /'
fi
finish
