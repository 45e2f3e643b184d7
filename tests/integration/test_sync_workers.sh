#!/usr/bin/env bash
# integration/test_sync_workers.sh: three `fhirsync sync --worker` processes share one export of
# many files through a real PostgreSQL server (the work queue: SKIP LOCKED claims with leases).
# One worker is killed with SIGKILL while it holds a file; the others take its file over once
# the lease expires and finish; the database then equals that of a single-process sync of the
# same sandbox state (the first full load appends). Then an increment (with deletions) through two
# workers, a full load over the stored data (its appends conflict and are merged), and a plain
# sync refused while workers load an export. Each worker has its own work folder, as on separate
# machines.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/sync_lib.sh"
start_pg workers
PG=$PG_URL
ok "PostgreSQL started"
cd "$TMP"
start_sandbox practice --patients 60 --resources-per-file 25
q() { sql "$PG" "$1"; }

# worker ID: start a worker in the background (lease 3 s), its pid in WPID
worker() {
    "$F" sync --worker --once --store "$PG" --worker-id "$1" --lease 3 --work-dir "$TMP/$1" \
        --no-progress >"$TMP/$1.out" 2>"$TMP/$1.err" &
    WPID=$!
    PIDS+=("$WPID")
}
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
expect_match "$(q "SELECT status FROM sync_runs WHERE mode = 'bulk-worker' ORDER BY id DESC LIMIT 1")" \
    '^ok$' "the run is finalised ok"
WM=$(q "SELECT watermark FROM sync_state WHERE endpoint = 'practice'")
TT=$(q "SELECT transaction_time FROM sync_runs WHERE mode = 'bulk-worker' ORDER BY id DESC LIMIT 1")
expect_bulk_watermark "$WM" "$TT" "the watermark moved to the export's kick-off minus the margin"
RES=$(q "SELECT resources FROM sync_runs WHERE mode = 'bulk-worker' ORDER BY id DESC LIMIT 1")
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
DELS=$(q "SELECT deletions FROM sync_runs WHERE mode = 'bulk-worker' ORDER BY id DESC LIMIT 1")
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
expect_match "$(q "SELECT status FROM sync_runs WHERE mode = 'bulk-worker' ORDER BY id DESC LIMIT 1")" \
    '^ok$' "the run is ok"
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
expect_match "$(q "SELECT status FROM sync_runs WHERE mode = 'bulk-worker' ORDER BY id DESC LIMIT 1")" \
    '^ok$' "the workers' run ended ok"
WM=$(q "SELECT watermark FROM sync_state WHERE endpoint = 'practice'")
TT=$(q "SELECT transaction_time FROM sync_runs WHERE mode = 'bulk-worker' ORDER BY id DESC LIMIT 1")
expect_bulk_watermark "$WM" "$TT" "and moved the watermark"
finish
