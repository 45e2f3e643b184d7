#!/usr/bin/env bash
# integration/test_store_postgresql.sh: the store on a real PostgreSQL server, never a mock. Starts
# a throwaway cluster (scripts/pg-test-server.sh: unix socket in a private directory, fsync off),
# runs the store's unit tests against it (test_store with FHIRSYNC_TEST_PG: schema, migrations,
# exact bytes, the upsert rule on the row and COPY paths, deletions, quarantine, runs and an atomic
# watermark, advisory locks held by other sessions and by killed processes, SKIP LOCKED claims,
# lease takeover, three worker processes), then `fhirsync query` on it (and on an SQLite file for
# comparison), small runs of bench/store_bench (the synthetic pair, --write and --compare: smoke
# only, no test fails on a timing), and checks that a password in the URL never shows.
# The cluster is stopped and removed at the end, whatever happens.
source "$(dirname "$0")/lib.sh"
: "${FHIRSYNC_BUILD_DIR:?FHIRSYNC_BUILD_DIR must point at the build directory}"

TEST_STORE="$FHIRSYNC_BUILD_DIR/tests/test_store"
[ -x "$TEST_STORE" ] || { echo "FAIL - $TEST_STORE is not built"; exit 1; }
# the loader of NDJSON files (store_bench --load), also used by bench/sync_bench.sh
STORE_BENCH="$FHIRSYNC_BUILD_DIR/bench/store_bench"
[ -x "$STORE_BENCH" ] || { echo "FAIL - $STORE_BENCH is not built (FHIRSYNC_BENCH=ON)"; exit 1; }
start_pg store
URL=$PG_URL
ok "PostgreSQL started: $URL"
# idempotent: a second start reuses the running cluster
AGAIN=$("$PG_SCRIPT" start "$PG_DIR")
[ "$AGAIN" = "$URL" ] && ok "a second start prints the same URL" ||
    not_ok "a second start printed '$AGAIN'"

# ---- the unit tests of the store, on PostgreSQL ----------------------------------------------
if FHIRSYNC_TEST_PG="$URL" "$TEST_STORE" >"$TMP/unit.log" 2>&1; then
    ok "test_store on PostgreSQL: $(grep -c '\[       OK \]' "$TMP/unit.log") tests passed"
else
    not_ok "test_store on PostgreSQL"
    tail -60 "$TMP/unit.log"
fi

TEST_STORE_VIEWS="$FHIRSYNC_BUILD_DIR/tests/test_store_views"
if FHIRSYNC_TEST_PG="$URL" "$TEST_STORE_VIEWS" >"$TMP/views.log" 2>&1; then
    ok "test_store_views on PostgreSQL: $(grep -c '\[       OK \]' "$TMP/views.log") tests passed"
else
    not_ok "test_store_views on PostgreSQL"
    tail -60 "$TMP/views.log"
fi

# ---- fhirsync query on a PostgreSQL store ----------------------------------------------------
cat >"$TMP/resources.ndjson" <<'EOF'
{"resourceType":"Patient","id":"q1","meta":{"versionId":"1","lastUpdated":"2024-03-01T12:00:00Z"},"name":[{"family":"Lindgren","given":["Claudia","Maria"]}],"gender":"female","birthDate":"2006-01-17"}
{"resourceType":"Observation","id":"qo1","subject":{"reference":"Patient/q1"},"code":{"coding":[{"system":"http://loinc.org","code":"8302-2","display":"Body Height"}]},"valueQuantity":{"value":1.50,"unit":"m"}}
{"resourceType":"Observation","id":"qo2","subject":{"reference":"Patient/q1"},"valueQuantity":{"value":6.0E-3,"unit":"g"}}
not json at all
EOF
expect_exit 1 "loading 3 good lines and 1 bad one" -- \
    "$STORE_BENCH" --load "$URL" "$TMP/resources.ndjson"
expect_match "$OUT" "total 3 stored, 1 rejected" "the loader stored 3 and refused 1"

expect_exit 0 "query counts" -- "$FHIRSYNC_BIN" query counts --store "$URL" --format tsv
expect_match "$OUT" "Observation	2" "two Observations"
expect_match "$OUT" "Patient	1" "one Patient"
expect_no_match "$OUT" "Condition" "empty types are left out without --all"

expect_exit 0 "query patient q1 as NDJSON" -- \
    "$FHIRSYNC_BIN" query patient q1 --store "$URL" --format ndjson
expect_match "$OUT" '"value":6.0E-3,' "the raw JSON comes back byte for byte (6.0E-3)"
expect_match "$(printf '%s\n' "$OUT" | head -1)" '"resourceType":"Patient"' "the Patient first"
[ "$(printf '%s\n' "$OUT" | wc -l)" -eq 3 ] && ok "three resources in q1's record" ||
    not_ok "q1's record has $(printf '%s\n' "$OUT" | wc -l) lines"

# a view kept as a table (docs/views.md): PostgreSQL's numeric keeps the decimal's scale
cat >"$TMP/people.json" <<'EOF'
{"resourceType":"ViewDefinition","name":"people","resource":"Patient","select":[{"column":[
 {"name":"id","path":"getResourceKey()","type":"string"},
 {"name":"family","path":"name.family.first()","type":"string"},
 {"name":"given","path":"name.given.join(' ')","type":"string"},
 {"name":"birth_date","path":"birthDate","type":"date"}]}]}
EOF
cat >"$TMP/quantities.json" <<'EOF'
{"resourceType":"ViewDefinition","name":"quantities","resource":"Observation","select":[{"column":[
 {"name":"id","path":"getResourceKey()","type":"string"},
 {"name":"value","path":"value.ofType(Quantity).value","type":"decimal"},
 {"name":"unit","path":"value.ofType(Quantity).unit","type":"string"}]}]}
EOF
expect_exit 0 "view add on PostgreSQL" -- "$FHIRSYNC_BIN" view add "$TMP/people.json" \
    "$TMP/quantities.json" --store "$URL"
expect_match "$OUT" "people.json: added, 1 row from 1 resource" "the view is built from the store"
expect_exit 0 "query sql on the view" -- "$FHIRSYNC_BIN" query sql \
    "SELECT family, given, birth_date FROM people" --store "$URL" --format ndjson
expect_match "$OUT" '"family":"Lindgren","given":"Claudia Maria","birth_date":"2006-01-17"' \
    "the view's columns"
expect_exit 0 "a decimal column keeps its scale" -- "$FHIRSYNC_BIN" query sql \
    "SELECT value FROM quantities WHERE id = 'qo1'" --store "$URL" --format tsv
expect_match "$OUT" "^value
1.50$" "value 1.50 (numeric keeps the scale)"

expect_exit 2 "query sql refuses a write" -- "$FHIRSYNC_BIN" query sql \
    "DELETE FROM \"Patient\"" --store "$URL"
expect_match "$ERR" "read-only" "the refusal says why"
expect_exit 0 "the Patient is still there" -- "$FHIRSYNC_BIN" query sql \
    "SELECT count(*) FROM \"Patient\"" --store "$URL" --format tsv
expect_match "$OUT" "^count
1$" "one Patient after the refused DELETE"

expect_exit 0 "query runs on an empty audit" -- "$FHIRSYNC_BIN" query runs --store "$URL"
expect_exit 0 "query quarantine" -- "$FHIRSYNC_BIN" query quarantine --store "$URL"

# the same command on the default engine (SQLite): same answers
expect_exit 1 "loading the same lines into SQLite" -- \
    "$STORE_BENCH" --load "$TMP/store.db" "$TMP/resources.ndjson"
expect_exit 0 "query patient q1 on SQLite" -- \
    "$FHIRSYNC_BIN" query patient q1 --store "$TMP/store.db" --format ndjson
expect_match "$OUT" '"value":6.0E-3,' "SQLite gives the same bytes back"
expect_exit 0 "view add on SQLite" -- "$FHIRSYNC_BIN" view add "$TMP/quantities.json" \
    --store "$TMP/store.db"
expect_exit 0 "the view on SQLite" -- "$FHIRSYNC_BIN" query sql \
    "SELECT value FROM quantities ORDER BY id" --store "$TMP/store.db" --format tsv
expect_match "$OUT" "^value
1.5
0.006$" "SQLite's decimal columns are numbers (NUMERIC: no exact decimal type)"
[ "$(stat -c %a "$TMP/store.db")" = 600 ] && ok "the SQLite file is 0600" ||
    not_ok "the SQLite file has mode $(stat -c %a "$TMP/store.db")"
expect_exit 13 "a missing SQLite store" -- "$FHIRSYNC_BIN" query counts --store "$TMP/none.db"
expect_match "$ERR" "no store at" "the error says there is no store"
[ ! -e "$TMP/none.db" ] && ok "querying does not create a store" || not_ok "none.db was created"

# ---- secrets ----------------------------------------------------------------------------------
expect_exit 13 "an unreachable server with a password in the URL" -- "$FHIRSYNC_BIN" query \
    counts --store "postgresql://alice:Pa55word-never-shown@127.0.0.1:1/db"
expect_no_match "$ERR$OUT" "Pa55word-never-shown" "the password is not shown"
expect_match "$ERR" "alice@127.0.0.1" "the error names user and host"

# ---- the benchmark still runs (smoke: 3,000 resources; no timing is checked) ------------------
expect_exit 0 "bench/store_bench 3000 with PostgreSQL" -- env FHIRSYNC_BENCH_BATCH=1000 \
    "$STORE_BENCH" 3000 "$URL"
expect_match "$OUT" "PostgreSQL: bulk batch" "the PostgreSQL line is printed"
expect_match "$OUT" "ratio fhirsync / bare inserts" "the ratio line is printed"
expect_match "$OUT" "BENCH \\| SQLite: fhirsync_store_put vs bare INSERT loop" \
    "the summary line for bench/run.sh is printed"
mkdir -p "$TMP/synthetic"
expect_exit 0 "store_bench --write: the synthetic rows as files" -- \
    "$STORE_BENCH" --write "$TMP/synthetic" 2000
expect_exit 0 "store_bench --compare on them, one round" -- env FHIRSYNC_TEST_TMP="$TMP" \
    "$STORE_BENCH" --compare --rounds 1 "$TMP"/synthetic/*.ndjson
expect_match "$OUT" "store load beside bare loops: 2000 lines" "every line counted"
expect_match "$OUT" "ratio store load / bare loop into the store's tables" \
    "the ratio to the loop into the store's tables is printed"
expect_match "$OUT" "ratio store load / bare loop into one column" \
    "the ratio to the one-column loop is printed"
expect_no_match "$OUT" "FAILED" "no run of --compare failed"

"$PG_SCRIPT" stop "$PG_DIR"
[ ! -e "$PG_DIR" ] && ok "stop removes the cluster" || not_ok "$PG_DIR is still there"
"$PG_SCRIPT" stop "$PG_DIR" && ok "a second stop succeeds" || not_ok "a second stop failed"
finish
