#!/usr/bin/env bash
# integration/test_view_run.sh: `fhirsync view run` over NDJSON files: CSV (header row, RFC 4180
# quoting, null versus the empty string) and NDJSON rows for a few resources, a file of another
# resource type (no rows), --out (mode 0600, replaced whole), a line the view cannot evaluate and
# a line that is not JSON (skipped with a warning naming the file and line, exit 10, the other
# rows written), an invalid view (exit 3, the element named) and usage errors (exit 2). Needs
# FHIRSYNC_BIN and node. Uses the one harness (tests/integration/lib.sh).
source "$(dirname "$0")/lib.sh"

bin=$FHIRSYNC_BIN
cd "$TMP" || die "cannot enter $TMP"

cat >view.json <<'JSON'
{"resourceType": "ViewDefinition", "name": "patient_list", "status": "active",
 "resource": "Patient",
 "select": [
   {"column": [{"name": "id", "path": "getResourceKey()"},
               {"name": "family", "path": "name.family.first()"},
               {"name": "given", "path": "name.given", "collection": true},
               {"name": "active", "path": "active"}]},
   {"forEachOrNull": "address", "column": [{"name": "city", "path": "city"}]}]}
JSON
cat >patients.ndjson <<'NDJSON'
{"resourceType":"Patient","id":"p1","name":[{"family":"O'Hara, \"Jr\"","given":["Ann","B"]}],"active":true,"address":[{"city":"Boston"},{"city":"Salem"}]}

{"resourceType":"Patient","id":"p2","name":[{"family":""}]}
NDJSON
printf '{"resourceType":"Observation","id":"o1","status":"final"}\n' >obs.ndjson

expect_same() { # DESCRIPTION EXPECTED ACTUAL
    if [ "$2" == "$3" ]; then ok "$1"; else not_ok "$1: expected [$2], got [$3]"; fi
}
check() { # DESCRIPTION COMMAND...: ok when the command succeeds
    local what=$1
    shift
    if "$@"; then ok "$what"; else not_ok "$what"; fi
}

rc=0
out=$("$bin" view run view.json --ndjson patients.ndjson --ndjson obs.ndjson 2>err.txt) || rc=$?
expect_same "CSV run exits 0" 0 "$rc"
expected=$(printf '%s\r\n' 'id,family,given,active,city' \
    'p1,"O'"'"'Hara, ""Jr""","[""Ann"",""B""]",true,Boston' \
    'p1,"O'"'"'Hara, ""Jr""","[""Ann"",""B""]",true,Salem' \
    'p2,"",[],,')
if [ "$out" == "$expected" ]; then
    ok "CSV rows: header, quoting, one row per address, null vs empty string"
else
    not_ok "CSV rows differ:"
    printf '%s\n' "$out" | cat -A | sed 's/^/      /'
fi
check "no warning on good lines" test ! -s err.txt

rc=0
out=$("$bin" view run view.json --ndjson patients.ndjson --format ndjson) || rc=$?
expect_same "NDJSON run exits 0" 0 "$rc"
lines=$(printf '%s\n' "$out" | node -e '
  const rows = require("fs").readFileSync(0, "utf8").trim().split("\n").map((l) => JSON.parse(l));
  console.log(rows.map((r) => [r.id, r.family, JSON.stringify(r.given), r.active, r.city].join("|")).join(";"));' 2>&1)
expect_same "NDJSON rows are JSON objects keyed by column" \
    "p1|O'Hara, \"Jr\"|[\"Ann\",\"B\"]|true|Boston;p1|O'Hara, \"Jr\"|[\"Ann\",\"B\"]|true|Salem;p2||[]||" "$lines"

# an aligned table for a terminal: the header, a rule, rows; nulls shown as NULL
rc=0
out=$("$bin" view run view.json --ndjson patients.ndjson --format table) || rc=$?
expect_same "--format table exits 0" 0 "$rc"
expect_same "the table's header" "id  family" "$(head -n 1 <<<"$out" | cut -c1-10)"
check "a rule under the header" grep -q '^--  ' <<<"$out"
expect_same "one line a row after the header and the rule" 5 "$(wc -l <<<"$out")"
check "a null is NULL" grep -q 'NULL' <<<"$out"
rc=0
"$bin" view run view.json --ndjson patients.ndjson --format table --out t.txt 2>/dev/null || rc=$?
expect_same "--format table with --out: a usage error" 2 "$rc"

umask 022
printf 'old\n' >rows.csv
check "--out exits 0" "$bin" view run view.json --ndjson patients.ndjson --out rows.csv
expect_same "--out is mode 0600" 600 "$(stat -c %a rows.csv)"
expect_same "--out replaced the old file" "id,family,given,active,city" "$(head -n 1 rows.csv | tr -d '\r')"
check "no temporary file left" test -z "$(ls rows.csv.tmp-* 2>/dev/null)"

# a bad line: several family names under collection: false, then a line that is not JSON
cat >bad.ndjson <<'NDJSON'
{"resourceType":"Patient","id":"b1","name":[{"family":"A"}]}
{"resourceType":"Patient","id":"b2","name":[{"family":"A"},{"family":"B"}]}
not json
{"resourceType":"Patient","id":"b4"}
NDJSON
cat >strict.json <<'JSON'
{"resourceType": "ViewDefinition", "name": "strict_names", "status": "active",
 "resource": "Patient",
 "select": [{"column": [{"name": "id", "path": "id"}, {"name": "family", "path": "name.family"}]}]}
JSON
rc=0
out=$("$bin" view run strict.json --ndjson bad.ndjson --format ndjson 2>err.txt) || rc=$?
expect_same "bad lines: exit 10 (partial)" 10 "$rc"
expect_same "bad lines: the other rows are written" '{"id":"b1","family":"A"}
{"id":"b4","family":null}' "$out"
check "warning names the view, file and line 2" grep -q 'view strict_names: bad.ndjson:2: ' err.txt
check "warning for the line that is not JSON" grep -q 'bad.ndjson:3: .*JSON' err.txt

# an invalid view: two columns with the same name
cat >invalid.json <<'JSON'
{"resourceType": "ViewDefinition", "status": "active", "resource": "Patient",
 "select": [{"column": [{"name": "id", "path": "id"}, {"name": "id", "path": "gender"}]}]}
JSON
rc=0
"$bin" view run invalid.json --ndjson patients.ndjson >out.txt 2>err.txt || rc=$?
expect_same "invalid view: exit 3" 3 "$rc"
check "invalid view: the message names the element" grep -q 'column\[1\]' err.txt
check "invalid view: no output" test ! -s out.txt
rc=0
printf 'not json' >notjson.json
"$bin" view run notjson.json --ndjson patients.ndjson >/dev/null 2>&1 || rc=$?
expect_same "a view that is not JSON: exit 3" 3 "$rc"

rc=0
"$bin" view run view.json --store "$PWD/nostore.db" >/dev/null 2>err.txt || rc=$?
expect_same "without --ndjson, the store is read: none there, exit 13" 13 "$rc"
check "the error says there is no store" grep -q 'no store at' err.txt
check "and none is created" test ! -e nostore.db

for args in "view.json --ndjson patients.ndjson --format xml" \
    "view.json --ndjson patients.ndjson extra" "--ndjson patients.ndjson" "view.json --bogus"; do
    rc=0
    # shellcheck disable=SC2086 # the words are the arguments
    "$bin" view run $args >/dev/null 2>&1 || rc=$?
    expect_same "usage error ($args): exit 2" 2 "$rc"
done
rc=0
"$bin" view run strict.json --ndjson - <bad.ndjson >/dev/null 2>err.txt || rc=$?
expect_same "--ndjson - reads stdin (bad lines: exit 10)" 10 "$rc"
check "stdin is named in the warnings" grep -q 'view strict_names: stdin:2: ' err.txt
rc=0
"$bin" view run view.json --ndjson missing.ndjson >/dev/null 2>&1 || rc=$?
expect_same "a missing input file: exit 13" 13 "$rc"
"$bin" view run --help >help.txt
check "--help" grep -q 'usage: fhirsync view run' help.txt
finish
