#!/usr/bin/env bash
# integration/test_sync_sqlite.sh: `fhirsync sync` in bulk mode into SQLite against the sandbox:
# a full sync (exact bytes, file mode, counts), an incremental one after the sandbox changed
# (only the changes are loaded: the run's counts equal the changed resources, the kick-off carries
# _since = the previous watermark; deletions applied with records), the same data as a fresh full
# sync, Group level and the fallback when the server refuses a level, bad lines quarantined
# (exit 10, run "partial"), two syncs of one endpoint at once (exit 11 naming the holder, --wait),
# endpoints of two FHIR servers refused in one store (ids would collide), JSON output and exit codes.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/sync_lib.sh"
cd "$TMP"
start_sandbox --profile clinic --patients 30 --resources-per-file 300
DB=$TMP/clinic.db

# ---- a full sync ---------------------------------------------------------------------------------
expect_exit 0 "first sync (full)" -- "$F" sync --store "$DB" --json
RUN1=$(printf '%s' "$OUT" | tail -1)
expect_match "$(json_field "$RUN1" j.status)" '^ok$' "first run is ok"
expect_match "$(json_field "$RUN1" j.since)" '^null$' "first run is a full sync"
expect_match "$(json_field "$RUN1" j.level)" '^patient$' "no group_id: Patient-level export"
TOTAL1=$(json_field "$RUN1" j.resources)
STORED=$(sql "$DB" "SELECT sum(resources) FROM sync_runs WHERE id = $(json_field "$RUN1" j.run_id)")
[ "$TOTAL1" -gt 1000 ] && [ "$TOTAL1" = "$STORED" ] && ok "the run stored $TOTAL1 resources" ||
    not_ok "resources: run says $TOTAL1, audit row $STORED"
ROWS=$(dump "$DB" | grep -vc '^deleted')
[ "$ROWS" = "$TOTAL1" ] && ok "every resource is a row ($ROWS)" || not_ok "rows $ROWS != $TOTAL1"
expect_match "$(stat -c %a "$DB")" '^600$' "the database is created 0600"
[ ! -e "$DB.work/clinic" ] && ok "the work folder is removed after success" ||
    not_ok "work folder left: $(ls -R "$DB.work" | head)"
# exact bytes: a Patient as the server sends it
PID1=$(sql "$DB" 'SELECT id FROM "Patient" ORDER BY id LIMIT 1')
SERVER=$("$F" get "Patient/$PID1")
LOCAL=$(sql "$DB" "SELECT raw FROM \"Patient\" WHERE id = '$PID1'")
[ "$SERVER" = "$LOCAL" ] && ok "a resource is stored byte for byte" || not_ok "bytes differ"
WM1=$(sql "$DB" "SELECT watermark FROM sync_state WHERE endpoint = 'clinic'")
expect_bulk_watermark "$WM1" "$(json_field "$RUN1" j.transaction_time)" \
    "the watermark is the kick-off (server clock) minus the margin, before the transactionTime"

# ---- nothing changed: an empty increment -----------------------------------------------------------
clear_requests
expect_exit 0 "second sync (nothing changed)" -- "$F" sync --store "$DB" --json
expect_match "$(json_field "$(tail -1 <<<"$OUT")" j.resources)" '^0$' "nothing to load"
KICKOFF=$(requests | grep '\$export' | head -1)
expect_match "$KICKOFF" "_since=${WM1//:/%3A}|_since=$WM1" "the kick-off carries _since = the watermark"

# ---- the sandbox changes: only the changes are loaded, deletions applied ---------------------------
WM2=$(sql "$DB" "SELECT watermark FROM sync_state WHERE endpoint = 'clinic'")
MUTATED=$(mutate 0.1 0.05)
expect_exit 0 "incremental sync after a mutation" -- "$F" sync --store "$DB" --json
RUN3=$(tail -1 <<<"$OUT")
LOADED=$(json_field "$RUN3" j.resources)
DELETED=$(json_field "$RUN3" j.deleted)
CHANGED=0
for t in $(dump "$DB" | grep -v '^deleted' | cut -f1 | sort -u); do
    n=$(sql "$DB" "SELECT count(*) FROM \"$t\" WHERE last_updated >= '${MUTATED%Z}'" 2>/dev/null || echo 0)
    CHANGED=$((CHANGED + n))
done
[ "$LOADED" -gt 0 ] && [ "$LOADED" -lt $((TOTAL1 / 4)) ] &&
    ok "the increment loaded $LOADED of $TOTAL1 resources" || not_ok "increment loaded $LOADED"
[ "$LOADED" = "$CHANGED" ] && ok "exactly the changed resources ($CHANGED) were loaded" ||
    not_ok "loaded $LOADED, changed since the mutation $CHANGED"
[ "$DELETED" -gt 0 ] && ok "$DELETED deletions applied" || not_ok "no deletion applied"
RECORDS=$(sql "$DB" "SELECT count(*) FROM deletions WHERE run_id = $(json_field "$RUN3" j.run_id)")
[ "$RECORDS" = "$DELETED" ] && ok "each deletion left a record" ||
    not_ok "deletion records $RECORDS != $DELETED"
GONE=$(sql "$DB" "SELECT resource_type, id FROM deletions LIMIT 1")
GONE_TYPE=${GONE%%$'\t'*}
GONE_ID=${GONE#*$'\t'}
expect_match "$(sql "$DB" "SELECT count(*) FROM \"$GONE_TYPE\" WHERE id = '$GONE_ID'")" '^0$' \
    "a deleted resource is gone from its table"
expect_match "$(json_field "$RUN3" j.since)" "^$WM2\$" "the increment used the last watermark"

# ---- the same data as a fresh full sync -------------------------------------------------------------
expect_exit 0 "a fresh full sync for comparison" -- "$F" sync --store "$TMP/fresh.db" --no-progress
same_dump "$DB" "$TMP/fresh.db" "full + incremental == a fresh full sync"

# ---- Group level, and the fallback when a level is refused --------------------------------------------
expect_exit 0 "Group-level sync (group_id = all)" -- "$F" sync --store "$TMP/group.db" --group-id all --json
expect_match "$(json_field "$(tail -1 <<<"$OUT")" j.level)" '^group$' "group_id: Group-level export"
same_dump "$TMP/group.db" "$TMP/fresh.db" "the Group 'all' export holds the same data"
expect_exit 0 "a group the server does not know" -- "$F" sync --store "$TMP/fallback.db" \
    --group-id no-such-group --json
expect_match "$ERR" "refused a group-level export.*falling back to patient level" \
    "the refusal and the fallback are logged"
expect_match "$(json_field "$(tail -1 <<<"$OUT")" j.level)" '^patient$' "fell back to Patient level"

# ---- bad lines: quarantined, the run is partial, exit 10 ----------------------------------------------
add_fault '{"fault":"truncate","on":"download","count":0}'
expect_exit 10 "a sync whose files arrive truncated ends partial" -- \
    "$F" sync --store "$TMP/bad.db" --json
clear_faults
RUNQ=$(tail -1 <<<"$OUT")
expect_match "$(json_field "$RUNQ" j.status)" '^partial$' "the run's status is partial"
QN=$(sql "$TMP/bad.db" "SELECT count(*) FROM quarantine WHERE run_id = $(json_field "$RUNQ" j.run_id)")
[ "$QN" -gt 0 ] && [ "$QN" = "$(json_field "$RUNQ" j.quarantined)" ] &&
    ok "$QN truncated lines are in the quarantine with the run's id" || not_ok "quarantine rows: $QN"
expect_match "$(sql "$TMP/bad.db" "SELECT reason FROM quarantine LIMIT 1")" 'truncated' \
    "the quarantine says why"
expect_match "$(sql "$TMP/bad.db" "SELECT status FROM sync_runs ORDER BY id DESC LIMIT 1")" \
    '^partial$' "the audit row says partial"
expect_exit 0 "after a --full sync the quarantined resources are there" -- \
    "$F" sync --store "$TMP/bad.db" --full --no-progress
same_dump "$TMP/bad.db" "$TMP/fresh.db" "--full repairs what was quarantined"

# ---- two syncs of one endpoint: a lock ------------------------------------------------------------------
start_sandbox --profile slow --patients 5 --export-delay-ms 3000
"$F" sync --store "$TMP/lock.db" --no-progress >"$TMP/a.out" 2>"$TMP/a.err" &
A=$!
PIDS+=("$A")
wait_for test -s "$TMP/lock.db" && wait_for sql "$TMP/lock.db" \
    "SELECT 1 FROM sync_locks WHERE endpoint = 'slow'" >/dev/null 2>&1
has_lock() { [ -n "$(sql "$TMP/lock.db" "SELECT pid FROM sync_locks WHERE endpoint = 'slow'" 2>/dev/null)" ]; }
wait_for has_lock
expect_exit 11 "a second sync of the same endpoint is refused" -- \
    "$F" sync --store "$TMP/lock.db" --no-progress
expect_match "$ERR" "being synced by pid $A" "it names the process holding the lock"
expect_exit 0 "--wait waits for the lock, then syncs" -- \
    "$F" sync --store "$TMP/lock.db" --no-progress --wait 60
wait "$A" && ok "the first sync finished (exit 0)" || not_ok "the first sync failed: $(cat "$TMP/a.err")"

# ---- one store, one FHIR server ------------------------------------------------------------------------
# endpoints of two base URLs (here the sandbox as 127.0.0.1 and as localhost: to fhirsync, two
# servers) never share a store: their ids would collide. The same server under another endpoint
# name (or with a trailing slash) may; shared_store = yes says two URLs are one server.
LOCAL=$(sed 's|//127.0.0.1:|//localhost:|' <<<"$BASE_URL")
cat >"$TMP/two.ini" <<INI
[defaults]
client_id = sync-test
key_file  = $TMP/keys/sync.key.pem
alg       = RS384
[endpoint first]
base_url  = $BASE_URL
[endpoint same]
base_url  = $BASE_URL/
[endpoint other]
base_url  = $LOCAL
INI
expect_exit 0 "endpoint 'first' into shared.db" -- env FHIRSYNC_CONFIG="$TMP/two.ini" \
    "$F" sync --endpoint first --store "$TMP/shared.db" --no-progress
expect_exit 0 "the same server as endpoint 'same' into shared.db" -- \
    env FHIRSYNC_CONFIG="$TMP/two.ini" "$F" sync --endpoint same --store "$TMP/shared.db" --no-progress
expect_exit 3 "another base URL into the same store is refused" -- \
    env FHIRSYNC_CONFIG="$TMP/two.ini" "$F" sync --endpoint other --store "$TMP/shared.db" --no-progress
expect_match "$ERR" "holds the data of endpoint first .*another FHIR server than http://localhost" \
    "the refusal names the other endpoint and says why"
expect_match "$(sql "$TMP/shared.db" "SELECT count(*) FROM sync_runs WHERE endpoint = 'other'")" '^0$' \
    "no run was started for it"
expect_exit 0 "in its own store it syncs" -- env FHIRSYNC_CONFIG="$TMP/two.ini" \
    "$F" sync --endpoint other --store "$TMP/other.db" --no-progress --types Patient --mode crawl \
    --per-patient no
expect_match "$(sql "$TMP/shared.db" "SELECT group_concat(name, ',') FROM (SELECT name FROM endpoints ORDER BY name)")" \
    '^first,same$' "the store records the endpoints and their server"
set +e
env FHIRSYNC_CONFIG="$TMP/two.ini" "$F" sync --endpoint other --store "$TMP/shared.db" \
    --shared-store yes --no-progress >/dev/null 2>"$TMP/shared.err"
set -e
expect_no_match "$(cat "$TMP/shared.err")" "holds the data" "shared_store = yes: not refused"
expect_match "$(sql "$TMP/shared.db" "SELECT count(*) FROM sync_runs WHERE endpoint = 'other'")" '^1$' \
    "shared_store = yes: the run started"

# ---- exit codes --------------------------------------------------------------------------------------
expect_exit 3 "no base_url: configuration error" -- env FHIRSYNC_CONFIG=/dev/null \
    "$F" sync --store "$TMP/x.db" --client-id c --key "$TMP/keys/sync.key.pem"
expect_exit 2 "a bad flag is a usage error" -- "$F" sync --jobs 0
expect_match "$("$F" --help)" '^  sync ' "fhirsync --help lists sync"
finish
