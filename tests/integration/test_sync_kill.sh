#!/usr/bin/env bash
# integration/test_sync_kill.sh: kill -9 at random points of `fhirsync sync` (SQLite, bulk mode),
# at least 20 times, then uninterrupted runs: the database must hold exactly what a clean
# uninterrupted sync into a fresh database holds (same ids, versions and bytes per type; nothing
# lost, nothing duplicated; no deleted resource back). The sandbox changes now and then between
# the kills so that later runs are increments with deletions, not just resumptions.
#
# Random but reproducible: the seed is printed; FHIRSYNC_KILL_SEED=N replays a run. Rounds go on
# until FHIRSYNC_KILLS (default 20) runs were killed mid-way (at most three times as many rounds);
# delays are 50-1500 ms. The sandbox keeps each new export "in progress" for 700 ms, so kills land
# in the kick-off and polling as well as in downloading, loading and the final commit.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/sync_lib.sh"
cd "$TMP"
SEED=${FHIRSYNC_KILL_SEED:-$(($(date +%s) % 100000))}
KILLS=${FHIRSYNC_KILLS:-20}
echo "# kill -9 test: seed $SEED (replay with FHIRSYNC_KILL_SEED=$SEED), $KILLS kills"
RANDOM=$SEED
start_sandbox --profile kill --patients 100 --resources-per-file 80 --export-delay-ms 700
DB=$TMP/killed.db
killed=0 finished=0 resumed=0 round=0
while [ "$killed" -lt "$KILLS" ] && [ "$round" -lt $((KILLS * 3)) ]; do
    round=$((round + 1))
    # every 4th round the EHR changes: the next runs are increments with deletions
    if [ $((round % 4)) -eq 0 ]; then
        mutate 0.1 0.03 >/dev/null
    fi
    delay=$((50 + RANDOM % 1451))
    "$F" sync --store "$DB" --json --no-progress >"$TMP/run.$round.out" 2>"$TMP/run.$round.err" &
    pid=$!
    sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
    if kill -9 "$pid" 2>/dev/null; then
        killed=$((killed + 1))
        wait "$pid" 2>/dev/null || true
        echo "#   round $round: killed after $delay ms"
    else
        code=0
        wait "$pid" || code=$?
        finished=$((finished + 1))
        echo "#   round $round: finished (exit $code) before $delay ms"
        [ "$code" -eq 0 ] || { echo "#   $(head -c 600 "$TMP/run.$round.err")"; }
    fi
    grep -q '"resumed":true' "$TMP/run.$round.out" 2>/dev/null && resumed=$((resumed + 1))
done
[ "$killed" -ge "$KILLS" ] && ok "$killed of $round runs killed with SIGKILL mid-way" ||
    not_ok "only $killed runs were killed mid-way (want >= $KILLS; seed $SEED)"

# The first uninterrupted run completes the interrupted export, whose data is as of its
# transactionTime: if the sandbox changed after that export began, one more (incremental) run
# brings the store up to the sandbox's present state, as it would an uninterrupted one.
expect_exit 0 "a final uninterrupted run" -- "$F" sync --store "$DB" --json --no-progress
FINAL=$(tail -1 <<<"$OUT")
grep -q '"resumed":true' <<<"$FINAL" && resumed=$((resumed + 1))
expect_exit 0 "and the next (catching up with changes made since that export began)" -- \
    "$F" sync --store "$DB" --no-progress
[ "$resumed" -ge 1 ] && ok "$resumed run(s) resumed the export of a killed one" ||
    not_ok "no run resumed an interrupted export (seed $SEED)"
expect_exit 0 "a clean sync into a fresh database (same sandbox state)" -- \
    "$F" sync --store "$TMP/clean.db" --no-progress
same_dump "$DB" "$TMP/clean.db" "after $killed kills the data equals an uninterrupted sync's"
expect_match "$(sql "$DB" 'SELECT count(*) FROM quarantine')" '^0$' "nothing was quarantined"
FAILED=$(sql "$DB" "SELECT count(*) FROM sync_runs WHERE status = 'failed' AND error LIKE 'interrupted%'")
[ "$FAILED" -ge 1 ] && ok "the audit shows $FAILED interrupted run(s)" ||
    not_ok "no interrupted run in the audit"
expect_match "$(sql "$DB" "SELECT count(*) FROM sync_runs WHERE status = 'running'")" '^0$' \
    "no run is left 'running'"
# nothing deleted on the server is back: every deletion record's resource is absent
BACK=0
while IFS=$'\t' read -r _ type id; do
    [ -n "$id" ] || continue
    n=$(sql "$DB" "SELECT count(*) FROM \"$type\" WHERE id = '$id' AND last_updated_ms <= (SELECT max(CAST(strftime('%s', deleted_at) AS INTEGER) * 1000) FROM deletions WHERE resource_type = '$type' AND id = '$id')")
    BACK=$((BACK + n))
done < <(dump "$DB" | grep '^deleted')
[ "$BACK" = 0 ] && ok "no deleted resource came back" || not_ok "$BACK deleted resources are back"
[ ! -e "$DB.work/kill" ] && ok "the work folder is gone after the final run" ||
    not_ok "work folder left behind"
echo "# seed $SEED: $killed killed, $finished finished on their own, $resumed resumed"
stop_sandbox

# ---- kill -9 during full syncs that reconcile, against a server that never lists deletions and
# stamps transactionTime late: the last uninterrupted --full run leaves the store equal to the
# server (its reconciliation counts the rows loaded by killed runs of the same export as returned)
start_sandbox --profile killq --patients 40 --resources-per-file 60 --export-delay-ms 500 \
    --quirk no-deleted --quirk late-transaction-time
DBQ=$TMP/killed-quirks.db
QKILLS=${FHIRSYNC_QUIRK_KILLS:-8}
killed=0 round=0
while [ "$killed" -lt "$QKILLS" ] && [ "$round" -lt $((QKILLS * 3)) ]; do
    round=$((round + 1))
    [ $((round % 3)) -ne 0 ] || mutate 0.1 0.05 >/dev/null
    delay=$((50 + RANDOM % 1451))
    "$F" sync --store "$DBQ" --full --no-progress >/dev/null 2>"$TMP/q.$round.err" &
    pid=$!
    sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
    if kill -9 "$pid" 2>/dev/null; then
        killed=$((killed + 1))
        wait "$pid" 2>/dev/null || true
        echo "#   quirks round $round: killed after $delay ms"
    else
        code=0
        wait "$pid" || code=$?
        echo "#   quirks round $round: finished (exit $code) before $delay ms"
        [ "$code" -eq 0 ] || echo "#   $(head -c 600 "$TMP/q.$round.err")"
    fi
done
[ "$killed" -ge "$QKILLS" ] && ok "$killed full syncs killed mid-way (no-deleted, late transactionTime)" ||
    not_ok "only $killed full syncs were killed (seed $SEED)"
expect_exit 0 "an uninterrupted full sync" -- "$F" sync --store "$DBQ" --full --no-progress
expect_exit 0 "and another (the first may have completed an export older than the last change)" -- \
    "$F" sync --store "$DBQ" --full --no-progress
store_equals_server "$DBQ" "after $killed kills of reconciling syncs"
expect_match "$(sql "$DBQ" "SELECT count(*) FROM sync_runs WHERE status = 'running'")" '^0$' \
    "no run is left 'running'"
finish
