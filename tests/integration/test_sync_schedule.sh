#!/usr/bin/env bash
# integration/test_sync_schedule.sh: `fhirsync sync --every` as a service: runs repeat with
# jitter; SIGTERM between runs exits 0 at once; SIGTERM while a run is in its export exits 12,
# records the run as interrupted, and the next start resumes the same export; a failing run is
# recorded and retried at the next tick; SIGHUP reloads the configuration before the next run
# (logged; the new settings are used); several endpoints run concurrently (--jobs). Bounded:
# every wait is capped.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/sync_lib.sh"
cd "$TMP"
start_sandbox --profile svc --patients 5
SVC_ADMIN=$ADMIN_URL
runs() { sql "$1" "SELECT count(*) FROM sync_runs WHERE status <> 'running'" 2>/dev/null || echo 0; }
started() { sql "$1" "SELECT count(*) FROM sync_runs" 2>/dev/null || echo 0; }
# service STORE [flags]: start the service in the background, pid in SVC
service() {
    local store=$1
    shift
    "$F" sync --every 2s --store "$store" --json "$@" >"$TMP/svc.out" 2>"$TMP/svc.err" &
    SVC=$!
    PIDS+=("$SVC")
}
# stop_service SIGNAL: send it and wait (at most 30 s); exit code in CODE
stop_service() {
    kill -"$1" "$SVC"
    local i=0
    while kill -0 "$SVC" 2>/dev/null && [ "$i" -lt 300 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    CODE=0
    wait "$SVC" || CODE=$?
}

# ---- runs repeat; SIGTERM between runs: exit 0 ------------------------------------------------------
service "$TMP/a.db"
two_done() { [ "$(runs "$TMP/a.db")" -ge 2 ]; }
wait_for two_done && ok "the service ran twice ($(runs "$TMP/a.db") runs)" || not_ok "fewer than 2 runs"
sleeping() { [ "$(started "$TMP/a.db")" = "$(runs "$TMP/a.db")" ] && grep -q 'next run in' "$TMP/svc.err"; }
wait_for sleeping || true
stop_service TERM
expect_match "$CODE" '^0$' "SIGTERM while sleeping: exit 0"
expect_match "$(cat "$TMP/svc.err")" 'stopping \(signal\): the last runs completed' "it says so"
GAPS=$(sql "$TMP/a.db" "SELECT started_at FROM sync_runs ORDER BY id" | while read -r t; do date -u -d "$t" +%s; done |
    awk 'NR > 1 {print $1 - prev} {prev = $1}')
BAD=$(awk '$1 < 1 || $1 > 4' <<<"$GAPS")
[ -z "$BAD" ] && ok "each run starts 2 s (+-10%) after the previous one ended: gaps $(echo $GAPS) s" ||
    not_ok "gaps between runs: $(echo $GAPS)"

# ---- SIGTERM during a run's export: exit 12, the next start resumes ----------------------------------
start_sandbox --profile slow --patients 5 --export-delay-ms 4000
service "$TMP/b.db"
in_export() { grep -q 'export started' "$TMP/svc.err" 2>/dev/null || [ "$(started "$TMP/b.db")" -ge 1 ]; }
wait_for in_export || true
sleep 0.5
stop_service TERM
expect_match "$CODE" '^12$' "SIGTERM during a run: exit 12 (interrupted)"
expect_match "$(sql "$TMP/b.db" "SELECT status || ' ' || error FROM sync_runs ORDER BY id DESC LIMIT 1")" \
    '^failed interrupted' "the run is recorded as interrupted"
expect_exit 0 "the next start resumes the export" -- "$F" sync --store "$TMP/b.db" --json --no-progress
expect_match "$(json_field "$(tail -1 <<<"$OUT")" j.resumed)" '^true$' "it resumed the same job"

# ---- a failing run is recorded and retried at the next tick ------------------------------------------
export FHIRSYNC_CONFIG=$TMP/svc/fhirsync.ini
ADMIN_URL=$SVC_ADMIN
add_fault '{"fault":"503","on":"kickoff","count":0}'
service "$TMP/c.db" --max-retries 0
failed_once() { [ "$(sql "$TMP/c.db" "SELECT count(*) FROM sync_runs WHERE status = 'failed'" 2>/dev/null || echo 0)" -ge 1 ]; }
wait_for failed_once && ok "a failing run is recorded as failed" || not_ok "no failed run recorded"
clear_faults
ok_once() { [ "$(sql "$TMP/c.db" "SELECT count(*) FROM sync_runs WHERE status = 'ok'" 2>/dev/null || echo 0)" -ge 1 ]; }
wait_for ok_once && ok "the next tick succeeds once the server is back" || not_ok "never recovered"
expect_match "$(cat "$TMP/svc.err")" 'next attempt in about' "the failure and the retry are logged"
stop_service TERM

# ---- SIGHUP: the configuration is reloaded before the next run ---------------------------------------
cp "$TMP/svc/fhirsync.ini" "$TMP/svc/reload.ini"
echo "types = Patient" >>"$TMP/svc/reload.ini"
export FHIRSYNC_CONFIG=$TMP/svc/reload.ini
clear_requests
service "$TMP/d.db"
one_done() { [ "$(runs "$TMP/d.db")" -ge 1 ]; }
wait_for one_done || true
sed -i 's/^types = Patient$/types = Patient,Observation/' "$TMP/svc/reload.ini"
kill -HUP "$SVC"
reloaded() { grep -q 'configuration reloaded (SIGHUP)' "$TMP/svc.err"; }
wait_for reloaded && ok "SIGHUP: 'configuration reloaded' is logged" || not_ok "no reload logged"
after_reload() { requests | grep '\$export' | grep -c 'Observation' >/dev/null; }
wait_for after_reload && ok "the next run uses the new types (Patient,Observation)" ||
    not_ok "the kick-offs did not change: $(requests | grep '\$export' | tail -2)"
expect_no_match "$(requests | grep '\$export' | head -1)" 'Observation' "the first run used the old types"
stop_service INT
expect_match "$CODE" '^(0|12)$' "SIGINT stops the service (exit $CODE)"

# ---- several endpoints at once ----------------------------------------------------------------------
# two sandboxes are two FHIR servers: a store each (one store holds one server's data)
{ cat "$TMP/svc/fhirsync.ini"; echo "store = $TMP/svc.db"; cat "$TMP/slow/fhirsync.ini"
  echo "store = $TMP/slow.db"; } >"$TMP/multi.ini"
expect_exit 0 "two endpoints synced concurrently (--jobs 2)" -- env FHIRSYNC_CONFIG="$TMP/multi.ini" \
    "$F" sync --jobs 2 --json
expect_match "$(grep -c '"status":"ok"' <<<"$OUT")" '^2$' "both endpoints ok"
expect_match "$ERR" '\[slow\] ' "progress lines name the endpoint"
# the slow endpoint's export (4 s in progress) started before the fast one had stored its files
SLOW_START=$(grep -n '\[slow\] export started' <<<"$ERR" | head -1 | cut -d: -f1)
FAST_LAST=$(grep -n '\[svc\] .*stored' <<<"$ERR" | tail -1 | cut -d: -f1)
[ -n "$SLOW_START" ] && [ -n "$FAST_LAST" ] && [ "$SLOW_START" -lt "$FAST_LAST" ] &&
    ok "the two endpoints ran at the same time" || not_ok "the runs did not overlap"
finish
