#!/usr/bin/env bash
# integration/test_sync_workers.sh: three `fhirsync sync --worker` processes share one export of
# many files through a real PostgreSQL server (the work queue: SKIP LOCKED claims with leases).
# One worker is killed with SIGKILL while it holds a file; the others take its file over once
# the lease expires and finish; the database then equals that of a single-process sync of the
# same sandbox state (the first full load appends). Then an increment (with deletions) through two
# workers, a full load over the stored data (its appends conflict and are merged), and a plain
# sync refused while workers load an export. Each worker has its own work folder, as on separate
# machines. Then reconciliation through workers against a server that never lists deletions
# (quirk no-deleted): the first run is a full export, an increment misses the deletions, the next
# run is a full export (reconcile_every 2) that finds them (store = server, reason 'full-export'),
# and the share guard refuses a --reconcile run that would delete most of a type (the run ends
# partial) until --full --allow-mass-delete. Last, downloads cut short: the cut lines are
# quarantined with the strict NDJSON checker's reason, as in bulk mode.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/sync_lib.sh"
start_pg workers
PG=$PG_URL
ok "PostgreSQL started"
cd "$TMP"
start_sandbox --profile practice --patients 60 --resources-per-file 25
q() { sql "$PG" "$1"; }

# worker ID [sync options...]: start a worker in the background (lease 3 s), its pid in WPID
worker() {
    local id=$1
    shift
    "$F" sync --worker --once --store "$PG" --worker-id "$id" --lease 3 --work-dir "$TMP/$id" \
        --no-progress "$@" >"$TMP/$id.out" 2>"$TMP/$id.err" &
    WPID=$!
    PIDS+=("$WPID")
}
# last_run COLUMN: that column of the workers' latest run (modes bulk-worker, bulk-worker-full)
last_run() { q "SELECT $1 FROM sync_runs WHERE mode LIKE 'bulk-worker%' ORDER BY id DESC LIMIT 1"; }
# wait_exit PID SECONDS: wait for a process, at most SECONDS; its exit code in WCODE
wait_exit() {
    local i=0
    while kill -0 "$1" 2>/dev/null; do
        i=$((i + 1))
        [ "$i" -le $(($2 * 10)) ] || { kill -9 "$1"; WCODE=124; return; }
        sleep 0.1
    done
    WCODE=0
    wait "$1" || WCODE=$?
}

expect_exit 0 "queue a sync of the endpoint" -- "$F" sync --enqueue --store "$PG"
expect_match "$OUT" 'queued a sync of practice' "the item is queued"
expect_exit 0 "queueing it again does not duplicate it" -- "$F" sync --enqueue --store "$PG"
expect_match "$(q "SELECT count(*) FROM work_items WHERE kind = 'endpoint-sync'")" '^1$' \
    "one endpoint-sync item"

worker w1; W1=$WPID
worker w2; W2=$WPID
worker w3; W3=$WPID
# the victim: w2, killed while it holds a file-load item, after some files are done
victim_busy() {
    [ "$(q "SELECT count(*) FROM work_items WHERE state = 'done' AND kind = 'file-load'")" -ge 10 ] &&
        [ "$(q "SELECT count(*) FROM work_items WHERE state = 'claimed' AND claimed_by = 'w2' AND kind = 'file-load'")" -ge 1 ]
}
# Freeze it (SIGSTOP) before looking at what it holds: it cannot finish the item between the
# look and the kill, which a loaded machine made happen.
HELD=
for _ in 1 2 3 4 5; do
    wait_for victim_busy || break
    kill -STOP "$W2"
    HELD=$(q "SELECT id FROM work_items WHERE state = 'claimed' AND claimed_by = 'w2' LIMIT 1")
    [ -n "$HELD" ] && break
    kill -CONT "$W2"
done
if [ -n "$HELD" ]; then
    kill -9 "$W2"
    wait "$W2" 2>/dev/null || true
    # what it held when it died: still claimed by it, with a lease that will expire
    ok "worker w2 killed with SIGKILL while holding item $HELD"
else
    not_ok "worker w2 never held a file while files were being loaded"
fi
HELD=${HELD:-0}
wait_exit "$W1" 180
expect_match "$WCODE" '^0$' "worker w1 finished the queue (exit $WCODE)"
wait_exit "$W3" 180
expect_match "$WCODE" '^0$' "worker w3 finished the queue (exit $WCODE)"

FILES=$(q "SELECT count(*) FROM work_items WHERE kind = 'file-load'")
[ "$FILES" -gt 50 ] && ok "the export was shared as $FILES work items" || not_ok "only $FILES items"
expect_match "$(q "SELECT count(*) FROM work_items WHERE state <> 'done'")" '^0$' \
    "every item is done, none failed"
TAKEN=$(q "SELECT claimed_by || ' ' || attempts FROM work_items WHERE id = $HELD")
expect_match "$TAKEN" '^w[13] [2-9]' "the killed worker's item was taken over after its lease ($TAKEN)"
BY=$(q "SELECT claimed_by, count(*) FROM work_items WHERE state = 'done' AND kind = 'file-load' GROUP BY 1 ORDER BY 1")
N1=$(awk '$1 == "w1" {print $2}' <<<"$BY")
N3=$(awk '$1 == "w3" {print $2}' <<<"$BY")
[ "${N1:-0}" -gt 0 ] && [ "${N3:-0}" -gt 0 ] && ok "both surviving workers loaded files (w1 ${N1}, w3 ${N3})" ||
    not_ok "the work was not shared: $BY"
expect_match "$(last_run "mode || ' ' || status")" '^bulk-worker-full ok$' \
    "the first run is a full export, finalised ok"
WM=$(q "SELECT watermark FROM sync_state WHERE endpoint = 'practice'")
TT=$(last_run transaction_time)
expect_bulk_watermark "$WM" "$TT" "the watermark moved to the export's kick-off minus the margin"
RES=$(last_run resources)
expect_exit 0 "a single-process sync of the same sandbox state" -- \
    "$F" sync --store "$TMP/single.db" --no-progress
same_dump "$PG" "$TMP/single.db" "three workers (one killed) == a single-process sync"
ROWS=$(dump "$PG" | grep -vc '^deleted')
[ "$RES" = "$ROWS" ] && ok "the run counts the $RES resources stored" || not_ok "run says $RES, rows $ROWS"

# ---- an increment through two workers ----------------------------------------------------------------
mutate 0.1 0.05 >/dev/null
expect_exit 0 "queue the next sync (a new watermark: a new item)" -- "$F" sync --enqueue --store "$PG"
worker w4; W4=$WPID
worker w5; W5=$WPID
wait_exit "$W4" 180
expect_match "$WCODE" '^0$' "worker w4 done"
wait_exit "$W5" 180
expect_match "$WCODE" '^0$' "worker w5 done"
expect_match "$(last_run mode)" '^bulk-worker$' "the increment is not a full export"
DELS=$(last_run deletions)
[ "${DELS:-0}" -gt 0 ] && ok "the increment applied $DELS deletions" || not_ok "no deletions applied"
expect_exit 0 "a fresh single-process sync" -- "$F" sync --store "$TMP/single2.db" --no-progress
same_dump "$PG" "$TMP/single2.db" "the incremental worker sync == a fresh full sync"

# ---- a full load over stored data -----------------------------------------------------------------
# A first full load's files are appended (COPY straight into the tables) at their first claim.
# With the watermark lost, the next worker sync is such a load over stored data: each file meets
# stored ids, is given back at once and merged at its next claim; the data stays the same.
expect_match "$(cd / && psql -qAt "$PG" -c \
    "WITH d AS (DELETE FROM sync_state RETURNING 1) SELECT count(*) FROM d")" '^1$' \
    "the watermark is lost"
expect_exit 0 "queue a full sync" -- "$F" sync --enqueue --store "$PG" --slot relearn
worker w6; W6=$WPID
wait_exit "$W6" 180
expect_match "$WCODE" '^0$' "worker w6 done"
expect_match "$(cat "$TMP/w6.err")" 'SQLSTATE 23505.*loading it again as merges' \
    "appends met the stored ids and were merged"
expect_match "$(last_run "mode || ' ' || status")" '^bulk-worker-full ok$' \
    "the run is a full export, ok"
expect_match "$(q "SELECT count(*) FROM deletions WHERE reason = 'full-export'")" '^0$' \
    "it found nothing gone (the store held what the server holds)"
expect_match "$(q "SELECT count(*) FROM work_items WHERE state <> 'done'")" '^0$' "no item failed"
same_dump "$PG" "$TMP/single2.db" "the same data as before"

# ---- a plain sync while workers load an export ------------------------------------------------------
# It would mark the workers' run interrupted and their watermark move would be lost: refused (11).
mutate 0.05 0.01 >/dev/null
expect_exit 0 "queue another sync" -- "$F" sync --enqueue --store "$PG"
worker w7; W7=$WPID
files_pending() {
    [ "$(q "SELECT count(*) FROM work_items WHERE kind = 'file-load' AND state IN ('pending', 'claimed')")" -gt 0 ]
}
if wait_for files_pending; then
    kill -STOP "$W7"
    expect_exit 11 "a plain sync while the workers' files load is refused" -- \
        "$F" sync --store "$PG" --no-progress
    expect_match "$ERR" "endpoint 'practice' is being synced by workers: [0-9]+ file\\(s\\) of their run" \
        "it says why"
    kill -CONT "$W7"
else
    not_ok "the workers' files were never pending"
fi
wait_exit "$W7" 180
expect_match "$WCODE" '^0$' "worker w7 done"
expect_match "$(last_run status)" '^ok$' "the workers' run ended ok"
WM=$(q "SELECT watermark FROM sync_state WHERE endpoint = 'practice'")
TT=$(last_run transaction_time)
expect_bulk_watermark "$WM" "$TT" "and moved the watermark"

# ---- a server that never lists deletions: workers reconcile ---------------------------------------
stop_sandbox
start_sandbox --profile nodel --patients 16 --resources-per-file 40 --quirk no-deleted
(cd / && psql -q "$PG_URL" -c "CREATE DATABASE nodel" >/dev/null)
PG=$(printf '%s' "$PG_URL" | sed "s|/fhirsync_test|/nodel|")
# round SLOT WORKERS [sync options...]: queue a sync, run that many workers with the options, wait
round() {
    local slot=$1 n=$2 pids=() i
    shift 2
    expect_exit 0 "queue sync $slot" -- "$F" sync --enqueue --store "$PG" --slot "$slot"
    for i in $(seq "$n"); do
        worker "$slot-$i" "$@"
        pids+=("$WPID")
    done
    for i in "${pids[@]}"; do
        wait_exit "$i" 60
        expect_match "$WCODE" '^0$' "$slot: a worker finished (exit $WCODE)"
    done
}
# stale_rows: rows of the store that the server no longer holds (compared as store_equals_server)
stale_rows() {
    dump "$PG" | grep -v '^deleted' | grep -Ev "$OUT_OF_COMPARTMENT" | LC_ALL=C sort >"$TMP/stale.store"
    server_state | grep -Ev "$OUT_OF_COMPARTMENT" >"$TMP/stale.server"
    LC_ALL=C comm -23 "$TMP/stale.store" "$TMP/stale.server" | wc -l
}

round nodel-full 2
expect_match "$(last_run "mode || ' ' || status")" '^bulk-worker-full ok$' \
    "no-deleted: the first run is a full export"
store_equals_server "$PG" "no-deleted: the full load through workers"
mutate 0.05 0.1 >/dev/null
round nodel-inc 2
expect_match "$(last_run "mode || ' ' || status || ' ' || deletions")" '^bulk-worker ok 0$' \
    "no-deleted: the increment lists no deletion"
STALE=$(stale_rows)
[ "$STALE" -gt 0 ] && ok "no-deleted: the increment left $STALE deleted resource(s) in the store" ||
    not_ok "no-deleted: the increment left nothing stale (the test proves nothing)"
# reconcile_every 2: one incremental run since the last full export, so this one is full
round nodel-reconcile 2 --reconcile-every 2
expect_match "$(last_run "mode || ' ' || status")" '^bulk-worker-full ok$' \
    "no-deleted: every 2nd run (--reconcile-every 2) the workers' run is a full export, ok"
store_equals_server "$PG" "no-deleted: after the workers' reconciliation"
expect_match "$(q "SELECT count(*) FROM deletions WHERE reason = 'full-export'")" "^$STALE\$" \
    "no-deleted: the $STALE resources gone are recorded with reason 'full-export'"
expect_match "$(last_run deletions)" "^$STALE\$" "no-deleted: the run counts them as deletions"
expect_match "$(cat "$TMP"/nodel-reconcile-*.err)" "likely leaves .deleted. empty" \
    "no-deleted: the finalising worker says the server does not list deletions"

# the share guard: a full export (--reconcile) that would delete 70% of a type is refused, the run
# ends partial
OBS=$(q 'SELECT count(*) FROM "Observation"')
mutate 0 0.7 >/dev/null
round nodel-guard 1 --reconcile
expect_match "$(last_run "mode || ' ' || status")" '^bulk-worker-full partial$' \
    "share guard: the run ends partial"
expect_match "$(last_run error)" 'reconciliation of Observation refused' "share guard: it says why"
expect_match "$(cat "$TMP"/nodel-guard-1.err)" 'reconciliation of Observation refused.*--allow-mass-delete' \
    "share guard: the worker names the refused type and the fix"
expect_match "$(q 'SELECT count(*) FROM "Observation"')" "^$OBS\$" \
    "share guard: nothing of Observation was deleted"
round nodel-forced 1 --full --allow-mass-delete
expect_match "$(last_run status)" '^ok$' "--allow-mass-delete: the run is ok"
store_equals_server "$PG" "--allow-mass-delete: after the forced reconciliation"

# ---- bad lines: the workers' stream goes through the strict NDJSON checker ------------------------
# Every download is cut in the middle of its last line: as in bulk mode, the checker's verdict
# quarantines the cut line with its reason (not the store's field scanner), and the run is partial.
mutate 0.2 0 >/dev/null
add_fault '{"fault":"truncate","on":"download","count":0}'
round cut 1
clear_faults
expect_match "$(last_run "mode || ' ' || status")" '^bulk-worker partial$' \
    "cut downloads: the workers' run ends partial"
CUT=$(last_run id)
expect_match "$(q "SELECT count(*) > 0 FROM quarantine WHERE run_id = $CUT")" '^t$' \
    "cut downloads: the cut lines are quarantined with the run's id"
expect_match "$(q "SELECT DISTINCT reason FROM quarantine WHERE run_id = $CUT")" \
    '^truncated last line: the JSON object is incomplete \([0-9]+ bytes\)$' \
    "cut downloads: each with the strict checker's reason, as in bulk mode"
finish
