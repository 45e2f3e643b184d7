#!/usr/bin/env bash
# integration/test_sync_postgresql.sh: `fhirsync sync` into a real PostgreSQL server (a throwaway
# cluster from scripts/pg-test-server.sh, stopped and removed at the end): bulk full and
# incremental syncs hold the same data as SQLite ones from the same sandbox state, deletions
# leave records, several loaders and appends (with their fallback to merges) give the same data,
# bad lines are quarantined (exit 10), a crawl gives the same data, and kill -9 at
# random points (fewer rounds than the SQLite test; seeded, the seed printed) ends with the data
# of an uninterrupted sync.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/sync_lib.sh"
start_pg sync
URL=$PG_URL
ok "PostgreSQL started"
cd "$TMP"
# db NAME: a fresh database on the cluster, as a URL
db() {
    (cd / && psql -q "$URL" -c "CREATE DATABASE $1" >/dev/null)
    printf '%s' "$URL" | sed "s|/fhirsync_test|/$1|"
}

start_sandbox --profile pgclinic --patients 30 --resources-per-file 250
PG=$(db sync_main)
expect_exit 0 "full sync into PostgreSQL" -- "$F" sync --store "$PG" --json
RUN1=$(tail -1 <<<"$OUT")
expect_match "$(json_field "$RUN1" j.status)" '^ok$' "the run is ok"
expect_exit 0 "the same into SQLite" -- "$F" sync --store "$TMP/ref1.db" --no-progress
same_dump "$PG" "$TMP/ref1.db" "PostgreSQL and SQLite hold the same resources"
expect_match "$(sql "$PG" "SELECT jsonb_typeof(resource) FROM \"Patient\" LIMIT 1")" '^object$' \
    "resources are also jsonb"
expect_bulk_watermark "$(sql "$PG" "SELECT watermark FROM sync_state")" \
    "$(json_field "$RUN1" j.transaction_time)" "the watermark is the kick-off minus the margin"

# ---- loaders and appends ---------------------------------------------------------------------------
# a first full sync appends (COPY straight into the tables) with 2 loaders by default; the same
# with one loader after the download, and a run without a watermark over stored data (its
# appends conflict: the files are merged instead) all end with the same resources
PGA=$(db sync_append)
expect_exit 0 "one loader, after the download" -- "$F" sync --store "$PGA" --loaders 1 \
    --load after --no-progress -v
expect_match "$ERR" 'files are stored over 1 PostgreSQL session, as appends' "one loader, appends"
same_dump "$PGA" "$TMP/ref1.db" "one loader == SQLite"
expect_match "$(cd / && psql -qAt "$PGA" -c \
    "WITH d AS (DELETE FROM sync_state RETURNING 1) SELECT count(*) FROM d")" '^1$' \
    "forget the watermark"
expect_exit 0 "a full sync over the stored data, appending" -- "$F" sync --store "$PGA" \
    --loaders 3 --no-progress -v
expect_match "$ERR" 'files are stored over 3 PostgreSQL sessions, as appends' "three loaders"
expect_match "$ERR" 'SQLSTATE 23505.*loading it again as merges' "an append met stored ids"
expect_match "$ERR" 'the files left are merged, not appended' "the rest of the run merged"
same_dump "$PGA" "$TMP/ref1.db" "after the conflicts, the same resources"
expect_match "$(sql "$PGA" "SELECT count(*) FROM sync_runs WHERE status = 'ok'")" '^2$' \
    "both runs ok"

mutate 0.1 0.05 >/dev/null
expect_exit 0 "incremental sync into PostgreSQL" -- "$F" sync --store "$PG" --json
RUN2=$(tail -1 <<<"$OUT")
[ "$(json_field "$RUN2" j.deleted)" -gt 0 ] && [ "$(json_field "$RUN2" j.resources)" -gt 0 ] &&
    ok "the increment loaded $(json_field "$RUN2" j.resources) resources and applied $(json_field "$RUN2" j.deleted) deletions" ||
    not_ok "increment: $RUN2"
RECORDS=$(sql "$PG" "SELECT count(*) FROM deletions WHERE run_id = $(json_field "$RUN2" j.run_id)")
[ "$RECORDS" = "$(json_field "$RUN2" j.deleted)" ] && ok "each deletion left a record" ||
    not_ok "deletion records: $RECORDS"
expect_exit 0 "a fresh full sync into SQLite" -- "$F" sync --store "$TMP/ref2.db" --no-progress
same_dump "$PG" "$TMP/ref2.db" "full + incremental on PostgreSQL == a fresh full sync"

# ---- quarantine -----------------------------------------------------------------------------------
PGQ=$(db sync_bad)
add_fault '{"fault":"truncate","on":"download","count":0}'
expect_exit 10 "truncated files: partial" -- "$F" sync --store "$PGQ" --json
clear_faults
RUNQ=$(tail -1 <<<"$OUT")
QN=$(sql "$PGQ" "SELECT count(*) FROM quarantine WHERE run_id = $(json_field "$RUNQ" j.run_id)")
[ "$QN" -gt 0 ] && ok "$QN lines quarantined in PostgreSQL" || not_ok "no quarantine rows"
expect_match "$(sql "$PGQ" "SELECT status FROM sync_runs ORDER BY id DESC LIMIT 1")" '^partial$' \
    "the run is partial"

# ---- crawl mode -----------------------------------------------------------------------------------
PGC=$(db sync_crawl)
expect_exit 0 "a crawl into PostgreSQL" -- "$F" sync --store "$PGC" --mode crawl --types \
    Patient,Observation,Condition,Encounter --json
expect_exit 0 "the same crawl into SQLite" -- "$F" sync --store "$TMP/crawl.db" --mode crawl \
    --types Patient,Observation,Condition,Encounter --no-progress
same_dump "$PGC" "$TMP/crawl.db" "crawled PostgreSQL == crawled SQLite"

# ---- kill -9 with PostgreSQL ------------------------------------------------------------------------
SEED=${FHIRSYNC_KILL_SEED:-$(($(date +%s) % 100000))}
KILLS=${FHIRSYNC_PG_KILLS:-8}
echo "# PostgreSQL kill -9: seed $SEED (replay with FHIRSYNC_KILL_SEED=$SEED), $KILLS kills"
RANDOM=$SEED
start_sandbox --profile pgkill --patients 60 --resources-per-file 80 --export-delay-ms 700
PGK=$(db sync_kill)
killed=0 round=0
while [ "$killed" -lt "$KILLS" ] && [ "$round" -lt $((KILLS * 3)) ]; do
    round=$((round + 1))
    [ $((round % 4)) -eq 0 ] && mutate 0.1 0.03 >/dev/null
    delay=$((50 + RANDOM % 1451))
    "$F" sync --store "$PGK" --work-dir "$TMP/pgwork" --no-progress >/dev/null 2>&1 &
    pid=$!
    sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
    if kill -9 "$pid" 2>/dev/null; then
        killed=$((killed + 1))
        echo "#   round $round: killed after $delay ms"
    else
        echo "#   round $round: finished before $delay ms"
    fi
    wait "$pid" 2>/dev/null || true
done
[ "$killed" -ge "$KILLS" ] && ok "$killed runs killed mid-way" || not_ok "only $killed kills"
# the first completes the interrupted export (as of its transactionTime), the next catches up
expect_exit 0 "a final uninterrupted run" -- "$F" sync --store "$PGK" --work-dir "$TMP/pgwork" \
    --no-progress
expect_exit 0 "and the next" -- "$F" sync --store "$PGK" --work-dir "$TMP/pgwork" --no-progress
expect_exit 0 "a clean sync (same sandbox state)" -- "$F" sync --store "$TMP/pgclean.db" --no-progress
same_dump "$PGK" "$TMP/pgclean.db" "after $killed kills PostgreSQL holds an uninterrupted sync's data"
expect_match "$(sql "$PGK" "SELECT count(*) FROM sync_runs WHERE status = 'running'")" '^0$' \
    "no run is left 'running'"
finish
