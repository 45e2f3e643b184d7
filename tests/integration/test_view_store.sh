#!/usr/bin/env bash
# integration/test_view_store.sh: SQL on FHIR views kept as tables of the store, through the CLI:
# the sync registers the profile's `views` (default: the shipped US Core views) and keeps them
# current across a mutation and its deletions (each table equal to its view over the stored
# resources); `view add` of files and directories, unchanged on a second add; `view list`,
# `refresh`, `remove`; `view run` over the store equals the table; a view some resources cannot
# satisfy quarantines them with the view's name and the sync still succeeds; `views = none`; and
# bad input: an invalid view in `view add` (exit 3, naming the element) and in the profile (the
# sync stops before fetching anything), a view named like an internal table, an unknown view to
# remove (exit 2).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/sync_lib.sh"
cd "$TMP"
start_sandbox --profile clinic --patients 12
DB=$TMP/clinic.db
SHIPPED=9

# ---- the sync registers the shipped views and keeps them current ---------------------------------
expect_exit 0 "first sync (the default views = shipped)" -- "$F" sync --store "$DB"
expect_exit 0 "view list" -- "$F" view list --store "$DB"
[ "$(grep -c '20[0-9][0-9]-' <<<"$OUT")" = "$SHIPPED" ] && ok "$SHIPPED views listed" ||
    not_ok "view list: $OUT"
expect_match "$OUT" "patient_demographics +Patient +12 " "patient_demographics has the 12 patients"
store_equals_server "$DB" "after the first sync"
mutate 0.2 0.05 >/dev/null
expect_exit 0 "incremental sync after a mutation" -- "$F" sync --store "$DB"
store_equals_server "$DB" "after the incremental sync (changes and deletions)"
expect_exit 0 "a full sync that reconciles" -- "$F" sync --store "$DB" --full
store_equals_server "$DB" "after a reconciling full sync"

# view run over the store gives the table's rows
expect_exit 0 "view run over the store" -- "$F" view run "$FHIRSYNC_SOURCE_DIR/views/vital_signs.json" \
    --store "$DB" --format csv
RUN_ROWS=$(($(printf '%s\n' "$OUT" | wc -l) - 1))
TABLE_ROWS=$(sql "$DB" "SELECT count(*) FROM vital_signs")
[ "$RUN_ROWS" = "$TABLE_ROWS" ] && [ "$RUN_ROWS" -gt 0 ] &&
    ok "view run over the store: $RUN_ROWS rows, as the table" || not_ok "run $RUN_ROWS, table $TABLE_ROWS"

# ---- view add: a file and a directory; unchanged the second time ---------------------------------
mkdir -p myviews
cat >myviews/given_names.json <<'JSON'
{"resourceType":"ViewDefinition","name":"given_names","resource":"Patient","select":[
 {"column":[{"name":"id","path":"getResourceKey()","type":"string"}]},
 {"forEach":"name.given","column":[{"name":"given","path":"$this","type":"string"}]}]}
JSON
# `collection: false` over every given name: patients with two given names cannot be evaluated
cat >myviews/strict_given.json <<'JSON'
{"resourceType":"ViewDefinition","name":"strict_given","resource":"Patient","select":[
 {"column":[{"name":"id","path":"getResourceKey()","type":"string"},
            {"name":"given","path":"name.given","type":"string"}]}]}
JSON
expect_exit 0 "view add DIRECTORY" -- "$F" view add myviews --store "$DB"
expect_match "$OUT" "given_names.json: added, [0-9]+ rows from 12 resources" "a directory's views are added"
expect_match "$OUT" "strict_given.json: added, .*could not be evaluated" "the failures are announced"
expect_exit 0 "view add the same again" -- "$F" view add myviews/given_names.json --store "$DB"
expect_match "$OUT" "given_names.json: unchanged" "the same definition: unchanged"
STRICT=$(sql "$DB" "SELECT count(*) FROM strict_given")
FAILED=$(sql "$DB" "SELECT count(*) FROM quarantine WHERE source = 'view:strict_given'")
[ "$FAILED" -gt 0 ] && [ $((STRICT + FAILED)) = 12 ] &&
    ok "strict_given: $STRICT rows, $FAILED patients quarantined with the view's name" ||
    not_ok "strict_given: $STRICT rows, $FAILED quarantined"
expect_exit 0 "query quarantine" -- "$F" query quarantine --store "$DB" --format tsv
expect_match "$OUT" "view strict_given: resource .*: .*given" "the reason names the view and the column"

# a sync with these views: the resources are stored, the sync succeeds (exit 0, not partial)
cat >>"$FHIRSYNC_CONFIG" <<INI
views = shipped, $TMP/myviews
INI
mutate 0.5 0 >/dev/null
expect_exit 0 "sync with a view some resources fail" -- "$F" sync --store "$DB"
store_equals_server "$DB" "with the strict view"

# ---- refresh and remove ---------------------------------------------------------------------------
sql "$DB" "SELECT count(*) FROM given_names" >/dev/null
"$FHIRSYNC_BUILD_DIR/tests/test_store_views" --check "$DB" >/dev/null && ok "check before tampering" ||
    not_ok "check before tampering"
if command -v sqlite3 >/dev/null; then
    sqlite3 "$DB" "DELETE FROM given_names" && ok "a table emptied behind the store's back"
    expect_exit 0 "view refresh given_names" -- "$F" view refresh given_names --store "$DB"
    expect_match "$OUT" "refreshed: 1 view, [1-9][0-9]* rows from 12 resources" "rebuilt from the stored resources"
fi
views_equal_store "$DB" "after the refresh"
expect_exit 0 "view remove strict_given" -- "$F" view remove strict_given --store "$DB"
expect_exit 2 "view remove an unknown view" -- "$F" view remove strict_given --store "$DB"
expect_match "$ERR" "no view named 'strict_given'" "the error names the view"

# ---- bad input ------------------------------------------------------------------------------------
printf '{"resourceType":"ViewDefinition","name":"bad","resource":"Patient","select":[{"column":[{"name":"a b","path":"id"}]}]}' >bad.json
expect_exit 3 "view add of an invalid view" -- "$F" view add bad.json --store "$DB"
expect_match "$ERR" "bad.json: select\[0\]\.column\[0\]: 'a b'" "the error names the file and the element"
printf '{"resourceType":"ViewDefinition","name":"sync_runs","resource":"Patient","select":[{"column":[{"name":"id","path":"id"}]}]}' >internal.json
expect_exit 3 "a view named like an internal table" -- "$F" view add internal.json --store "$DB"
expect_match "$ERR" "internal table" "refused, saying why"
printf 'not json' >notjson.json
expect_exit 3 "a view that is not JSON" -- "$F" view add notjson.json --store "$DB"
expect_exit 13 "a view file that does not exist" -- "$F" view add missing.json --store "$DB"
expect_match "$ERR" "missing.json" "the error names the file"
BEFORE=$(sql "$DB" "SELECT count(*) FROM sync_runs")
clear_requests
expect_exit 3 "sync with an invalid view in the profile" -- "$F" sync --store "$DB" --views "$TMP/bad.json"
expect_match "$ERR" "bad.json" "the sync names the bad view"
[ "$(sql "$DB" "SELECT count(*) FROM sync_runs")" = "$BEFORE" ] && [ -z "$(requests)" ] &&
    ok "nothing was fetched nor run" || not_ok "the sync went on with a bad view"

# ---- views = none: no table --------------------------------------------------------------------------
expect_exit 0 "a sync into a new store with views = none" -- "$F" sync --store "$TMP/none.db" --views none
expect_exit 0 "view list" -- "$F" view list --store "$TMP/none.db"
expect_match "$OUT" "no views" "no view registered"
finish
