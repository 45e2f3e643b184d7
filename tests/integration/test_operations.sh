#!/usr/bin/env bash
# integration/test_operations.sh: what an operator watches, against the sandbox. `fhirsync status`
# (text and --json) before any sync, after real syncs, with a failing endpoint, while a run goes
# on and after its process was killed (interrupted); the metrics of `sync --every --metrics`
# scraped while the service runs and read by a strict parser of the exposition format
# (prom_check.mjs), with /healthz and /readyz; JSON log lines; systemd's notifications through a
# stand-in NOTIFY_SOCKET (notify_listen.py): READY=1, STATUS=, WATCHDOG=1 at half WatchdogSec also
# during a long export, RELOADING=1 on SIGHUP, STOPPING=1. Bounded: every wait is capped.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/sync_lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$TMP"
F=$FHIRSYNC_BIN
start_sandbox --profile ops --patients 5
OPS_ADMIN=$ADMIN_URL
OPS_DIR=$SANDBOX_DIR
# a second client of the same server, "flaky", whose kick-offs the sandbox refuses (503)
printf '{"client_id":"flaky","scope":"system/*.read","jwks":%s}' "$(cat "$TMP/keys/jwks.json")" |
    curl -sS --fail-with-body -X POST -H 'Content-Type: application/json' --data-binary @- \
        "$REGISTER_URL" >/dev/null || die "registering the flaky client"
add_fault '{"fault":"503","on":"kickoff","client_id":"flaky","count":0}'
cat "$OPS_DIR/fhirsync.ini" >"$TMP/two.ini"
cat >>"$TMP/two.ini" <<INI

[endpoint flaky]
base_url    = $BASE_URL
client_id   = flaky
key_file    = $TMP/keys/sync.key.pem
alg         = RS384
max_retries = 0
INI

# ---- status before anything, and after syncs --------------------------------------------------------
export FHIRSYNC_CONFIG=$TMP/two.ini
expect_exit 0 "status with no store yet" -- "$F" status --store "$TMP/a.db"
expect_match "$OUT" '^ops +never ' "ops: never synced"
expect_match "$OUT" '^flaky +never ' "flaky: never synced"
[ ! -e "$TMP/a.db" ] && ok "status created no store" || not_ok "status created $TMP/a.db"
expect_exit 7 "a sync of both: flaky fails (503 at kick-off)" -- "$F" sync --store "$TMP/a.db" --no-progress
expect_exit 7 "and again" -- "$F" sync --store "$TMP/a.db" --no-progress
expect_exit 0 "status after the syncs" -- "$F" status --store "$TMP/a.db" --every 15m
TEXT=$OUT
expect_match "$TEXT" '^ENDPOINT +STATE +LAST SUCCESS +WATERMARK AGE +FAILURES +NEXT RUN' "the table's header"
expect_match "$TEXT" '^ops +idle +[0-9]+s ago +5m0[0-9]s +0 +in 1[45]m' \
    "ops: idle, last success seconds ago, watermark about 5 min old (the skew margin), next run in ~15 min"
expect_match "$TEXT" '^flaky +failing +- +- +2 ' "flaky: failing, never succeeded, 2 failures"
expect_match "$TEXT" 'last error \(run [0-9]+, [0-9]+s ago\): .*503' "flaky's last error on one line, with the 503"
expect_exit 0 "status --json" -- "$F" status --store "$TMP/a.db" --json --every 15m
JSON=$OUT
expect_match "$(json_field "$JSON" 'j.endpoints.map(e => e.endpoint + ":" + e.state).join(",")')" \
    '^(ops:idle,flaky:failing|flaky:failing,ops:idle)$' "--json: the configured endpoints and their states"
OPS_J=$(json_field "$JSON" 'j.endpoints.find(e => e.endpoint === "ops")')
FLAKY_J=$(json_field "$JSON" 'j.endpoints.find(e => e.endpoint === "flaky")')
expect_match "$(json_field "$OPS_J" '[j.configured, j.last_run.status, j.consecutive_failures, j.last_error, j.every_s].join(" ")')" \
    '^true ok 0  900$' "ops: configured, last run ok, 0 failures, no error, every 900 s"
expect_match "$(json_field "$OPS_J" 'j.watermark_age_s >= 299 && j.watermark_age_s < 330 && j.last_success_age_s >= 0 && j.last_success_age_s < 30')" \
    '^true$' "ops: ages in seconds (watermark ~300 s, last success fresh)"
expect_match "$(json_field "$OPS_J" 'Math.abs(Date.parse(j.next_run_at) - Date.parse(j.last_run.finished_at) - 900000) < 1000 && j.next_run_in_s > 800')" \
    '^true$' "ops: next run = end of the last run + every"
expect_match "$(json_field "$FLAKY_J" '[j.state, j.consecutive_failures, j.last_success_at, j.watermark].join("|")')" \
    '^failing\|2\|\|$' "flaky: failing, 2 failures, no success, no watermark"
expect_match "$(json_field "$FLAKY_J" 'j.last_error')" '503' "flaky: the last error says 503"
expect_match "$(json_field "$FLAKY_J" 'j.last_error.split("\n").length')" '^1$' "the last error is one line"
expect_exit 0 "status --endpoint ops" -- "$F" status --store "$TMP/a.db" --endpoint ops
expect_no_match "$OUT" 'flaky' "--endpoint: only that endpoint"
# an endpoint the store knows but the configuration does not
expect_exit 0 "status with a configuration of ops only" -- env FHIRSYNC_CONFIG="$OPS_DIR/fhirsync.ini" \
    "$F" status --store "$TMP/a.db" --json
expect_match "$(json_field "$OUT" 'j.endpoints.map(e => e.endpoint + ":" + e.configured).join(",")')" \
    '^ops:true,flaky:false$' "the store's other endpoint is listed, as not configured"
expect_exit 3 "status --endpoint nobody" -- "$F" status --store "$TMP/a.db" --endpoint nobody

# ---- running, then interrupted (the process killed mid-run) -------------------------------------------
start_sandbox --profile slow --patients 5 --export-delay-ms 6000
SLOW_INI=$SANDBOX_DIR/fhirsync.ini
"$F" sync --config "$SLOW_INI" --store "$TMP/s.db" --no-progress >"$TMP/slow.out" 2>&1 &
SLOW=$!
PIDS+=("$SLOW")
run_started() { [ "$(sql "$TMP/s.db" "SELECT count(*) FROM sync_runs" 2>/dev/null || echo 0)" -ge 1 ]; }
wait_for run_started || not_ok "the slow run did not start"
expect_exit 0 "status while the run goes on" -- "$F" status --config "$SLOW_INI" --store "$TMP/s.db"
expect_match "$OUT" '^slow +running .*running now' "slow: running"
expect_match "$OUT" "run [0-9]+ \(bulk[a-z-]*\) since .* pid $SLOW" "the running run, its host and pid"
kill -KILL "$SLOW"
wait "$SLOW" 2>/dev/null || true
expect_exit 0 "status after the kill" -- "$F" status --config "$SLOW_INI" --store "$TMP/s.db" --json
expect_match "$(json_field "$OUT" 'j.endpoints[0].state + " " + j.endpoints[0].last_run.status + " " + j.endpoints[0].last_run.pid')" \
    "^interrupted running $SLOW\$" "slow: interrupted (recorded as running, its process gone)"
expect_exit 0 "status text" -- "$F" status --config "$SLOW_INI" --store "$TMP/s.db"
expect_match "$OUT" 'never finished: its process ended; the next sync resumes it' "the text says what happened"

# ---- the metrics of the service -----------------------------------------------------------------------
ADMIN_URL=$OPS_ADMIN
export FHIRSYNC_CONFIG=$TMP/two.ini
add_fault '{"fault":"429","on":"download","client_id":"sync-test","count":1,"retry_after":1}'
"$F" sync --every 2s --store "$TMP/m.db" --metrics 127.0.0.1:0 --log-format json -v --jobs 2 \
    >"$TMP/svc.out" 2>"$TMP/svc.err" &
SVC=$!
PIDS+=("$SVC")
serving() { grep -q 'metrics: serving http://127.0.0.1:[0-9]*/metrics' "$TMP/svc.err"; }
wait_for serving || die "the service did not say where its metrics are"
METRICS=$(grep -o 'http://127.0.0.1:[0-9]*/metrics' "$TMP/svc.err" | head -1)
ROOT=${METRICS%/metrics}
two_runs() { [ "$(sql "$TMP/m.db" "SELECT count(*) FROM sync_runs WHERE endpoint = 'ops' AND status <> 'running'" 2>/dev/null || echo 0)" -ge 2 ]; }
wait_for two_runs || not_ok "the service did not run ops twice"
curl -sS -D "$TMP/headers" -o "$TMP/metrics.txt" "$METRICS" || not_ok "scraping $METRICS"
expect_match "$(cat "$TMP/headers")" '^HTTP/1.1 200' "/metrics: 200"
expect_match "$(tr -d '\r' <"$TMP/headers")" '^Content-Type: text/plain; version=0.0.4; charset=utf-8$' \
    "/metrics: the exposition format's content type"
if node "$HERE/prom_check.mjs" "$TMP/metrics.txt" >"$TMP/families.json" 2>"$TMP/check.err"; then
    ok "the metrics pass the strict exposition-format check"
else
    not_ok "the exposition format check: $(head -5 "$TMP/check.err")"
fi
fam() { json_get "$TMP/families.json" "$1"; }
val() { # val NAME LABELS_JS: the value of the sample of family NAME whose labels match
    fam "(j['$1']?.samples ?? []).filter(s => Object.entries($2).every(([k, v]) => s.labels[k] === v)).map(s => s.value).join(',')"
}
expect_match "$(val fhirsync_runs_total '{endpoint:"ops",outcome:"ok"}')" '^[1-9][0-9]*$' "runs_total{ops,ok} >= 1"
expect_match "$(val fhirsync_runs_total '{endpoint:"flaky",outcome:"failed"}')" '^[1-9][0-9]*$' "runs_total{flaky,failed} >= 1"
expect_match "$(val fhirsync_run_errors_total '{endpoint:"flaky",exit_code:"7"}')" '^[1-9][0-9]*$' \
    "run_errors_total{flaky,exit_code=7} (server error)"
expect_match "$(val fhirsync_resources_stored_total '{endpoint:"ops"}')" '^[1-9][0-9]+$' "resources stored by ops"
expect_match "$(val fhirsync_http_rate_limited_total '{endpoint:"ops"}')" '^[1-9][0-9]*$' "the 429 the sandbox sent ops is counted"
expect_match "$(val fhirsync_http_rate_limited_total '{endpoint:"flaky"}')" '^0$' "flaky saw no 429"
expect_match "$(val fhirsync_token_requests_total '{endpoint:"ops"}')" '^[1-9][0-9]*$' "token requests counted"
expect_match "$(val fhirsync_received_bytes_total '{endpoint:"ops"}')" '^[1-9][0-9]{3,}$' "bytes received counted"
expect_match "$(val fhirsync_http_responses_total '{endpoint:"ops"}')" '^[1-9][0-9]+$' "HTTP responses counted"
expect_match "$(val fhirsync_endpoint_state '{endpoint:"ops",state:"idle"}')$(val fhirsync_endpoint_state '{endpoint:"ops",state:"running"}')" \
    '^(10|01)$' "ops's state: idle or running, one of them"
expect_match "$(val fhirsync_endpoint_state '{endpoint:"flaky",state:"failing"}')$(val fhirsync_endpoint_state '{endpoint:"flaky",state:"running"}')" \
    '^(10|01)$' "flaky's state: failing or running"
expect_match "$(val fhirsync_lag_seconds '{endpoint:"ops"}')" '^[1-5]?[0-9]$' "ops's lag: seconds (under a minute)"
expect_match "$(val fhirsync_lag_seconds '{endpoint:"flaky"}')" '^$' "flaky never succeeded: no lag sample"
expect_match "$(val fhirsync_watermark_age_seconds '{endpoint:"ops"}')" '^3[0-9][0-9]$' "ops's watermark age ~300 s"
expect_match "$(val fhirsync_consecutive_failures '{endpoint:"flaky"}')" '^[1-9][0-9]*$' "flaky's consecutive failures"
expect_match "$(val fhirsync_store_up '{}')" '^1$' "store_up 1"
expect_match "$(fam "Object.entries(j).filter(([n, f]) => f.type === 'counter' && !n.endsWith('_total')).length")" '^0$' \
    "every counter ends in _total"
LABELS=$(fam "[...new Set(Object.values(j).flatMap(f => f.samples.flatMap(s => Object.keys(s.labels))))].sort().join(',')")
expect_match "$LABELS" '^(endpoint,)?(exit_code,)?(outcome,)?(state,)?version$' "label names: endpoint, exit_code, outcome, state, version only (got $LABELS)"
expect_match "$(fam "[...new Set(Object.values(j).flatMap(f => f.samples.map(s => s.labels.endpoint)).filter(Boolean))].sort().join(',')")" \
    '^flaky,ops$' "endpoint label values: the configured names only"
expect_match "$(fam "Object.values(j).flatMap(f => f.samples.flatMap(s => Object.values(s.labels))).filter(v => !/^[A-Za-z0-9_.-]+$/.test(v)).length")" \
    '^0$' "no URL, resource id or error text in a label value"
expect_no_match "$(grep -v '^#' "$TMP/metrics.txt")" '127\.0\.0\.1|Patient/|503' "nor anywhere in the samples"
expect_match "$(curl -sS -o /dev/null -w '%{http_code}' "$ROOT/healthz")" '^200$' "/healthz: 200"
expect_match "$(curl -sS "$ROOT/readyz")" '^ready: 2 endpoint\(s\), 1 store\(s\)' "/readyz: ready, 2 endpoints, 1 store"
expect_match "$(curl -sS -o /dev/null -w '%{http_code}' "$ROOT/other")" '^404$' "another path: 404"
expect_match "$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$ROOT/metrics")" '^405$' "POST: 405"
# the JSON log: every line an object with time, level, message; endpoint where the line is about one
node -e '
    const lines = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter(Boolean);
    let bad = 0, withEndpoint = 0;
    for (const l of lines) {
        let o;
        try { o = JSON.parse(l); } catch { bad++; continue; }
        if (!/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/.test(o.time) || !["error","warn","info","debug"].includes(o.level) || typeof o.message !== "string") bad++;
        if (o.endpoint) withEndpoint++;
    }
    console.log(lines.length + " " + bad + " " + withEndpoint);' "$TMP/svc.err" >"$TMP/logcheck"
read -r NLINES NBAD NEP <"$TMP/logcheck"
[ "$NLINES" -gt 5 ] && [ "$NBAD" -eq 0 ] && ok "--log-format json: all $NLINES stderr lines are JSON log objects" ||
    not_ok "--log-format json: $NBAD of $NLINES lines are not log objects: $(head -3 "$TMP/svc.err")"
[ "$NEP" -gt 0 ] && ok "$NEP log lines name their endpoint" || not_ok "no log line names an endpoint"
expect_match "$(grep '"level":"error"' "$TMP/svc.err" | grep '"endpoint":"flaky"' | head -3)" \
    'kick-off refused: HTTP 503' "flaky's failure is logged at level error, with its endpoint"
expect_no_match "$(cat "$TMP/svc.err")" 'eyJ[A-Za-z0-9_-]{10,}\.|BEGIN .*PRIVATE' "no token, assertion or key in the logs"
kill -TERM "$SVC"
wait "$SVC" && ok "the service stops on SIGTERM" || ok "the service stopped on SIGTERM (exit $?, a run may have been interrupted)"
# /readyz: a store that cannot be opened (a directory)
mkdir -p "$TMP/notadb"
"$F" sync --every 1h --store "$TMP/notadb" --metrics 127.0.0.1:0 --config "$OPS_DIR/fhirsync.ini" \
    >"$TMP/svc2.out" 2>"$TMP/svc2.err" &
SVC2=$!
PIDS+=("$SVC2")
serving2() { grep -q 'metrics: serving' "$TMP/svc2.err"; }
wait_for serving2 || not_ok "the second service did not serve"
ROOT2=$(grep -o 'http://127.0.0.1:[0-9]*' "$TMP/svc2.err" | head -1)
expect_match "$(curl -sS -o /dev/null -w '%{http_code}' "$ROOT2/readyz")" '^503$' "/readyz: 503 when a store does not answer"
expect_match "$(curl -sS "$ROOT2/readyz")" '^not ready: store of endpoint ops: cannot open' "/readyz says which store and why"
expect_match "$(curl -sS "$ROOT2/metrics")" 'fhirsync_store_up 0' "store_up 0"
kill -TERM "$SVC2"
wait "$SVC2" || true
# the address rules
expect_exit 2 "--metrics on a non-loopback address is refused" -- "$F" sync --every 1h --store "$TMP/x.db" \
    --config "$OPS_DIR/fhirsync.ini" --metrics 0.0.0.0:0
expect_match "$ERR" 'not a loopback address.*--metrics-allow-remote' "the message says why and how"
expect_exit 2 "--metrics without a service" -- "$F" sync --store "$TMP/x.db" --config "$OPS_DIR/fhirsync.ini" --metrics 127.0.0.1:0
expect_exit 2 "--metrics with a bad address" -- "$F" sync --every 1h --store "$TMP/x.db" --config "$OPS_DIR/fhirsync.ini" --metrics localhost
expect_exit 2 "--log-format yaml" -- "$F" status --log-format yaml

# ---- systemd's notifications ---------------------------------------------------------------------------
if ! ldd "$F" | grep -q libsystemd; then
    ok "# SKIP sd_notify: fhirsync was built without libsystemd"
elif ! command -v python3 >/dev/null; then
    ok "# SKIP sd_notify: no python3 for the stand-in notification socket"
else
    python3 "$HERE/notify_listen.py" "$TMP/notify.sock" "$TMP/notify.jsonl" 120 &
    LISTENER=$!
    PIDS+=("$LISTENER")
    wait_for test -S "$TMP/notify.sock" || die "the stand-in notification socket"
    # the slow sandbox (a 6 s export): WatchdogSec=1 must be pinged through the run
    env NOTIFY_SOCKET="$TMP/notify.sock" WATCHDOG_USEC=1000000 "$F" sync --every 30s \
        --config "$SLOW_INI" --store "$TMP/n.db" --no-progress >"$TMP/n.out" 2>"$TMP/n.err" &
    NSVC=$!
    PIDS+=("$NSVC")
    slow_done() { [ "$(sql "$TMP/n.db" "SELECT count(*) FROM sync_runs WHERE status = 'ok'" 2>/dev/null || echo 0)" -ge 1 ]; }
    wait_for slow_done || not_ok "the slow run did not end"
    sleep 0.5
    kill -HUP "$NSVC"
    reloaded() { grep -q RELOADING=1 "$TMP/notify.jsonl"; }
    wait_for reloaded || not_ok "no RELOADING=1 after SIGHUP"
    sleep 0.5
    kill -TERM "$NSVC"
    wait "$NSVC" || true
    stopping() { grep -q STOPPING=1 "$TMP/notify.jsonl"; }
    wait_for stopping || true
    kill -TERM "$LISTENER" 2>/dev/null || true
    wait "$LISTENER" 2>/dev/null || true
    node -e '
        const msgs = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter(Boolean).map(JSON.parse);
        const first = (p) => msgs.findIndex(m => m.lines.some(l => l.startsWith(p)));
        const dogs = msgs.filter(m => m.lines.includes("WATCHDOG=1")).map(m => m.t);
        let gap = 0;
        for (let i = 1; i < dogs.length; i++) gap = Math.max(gap, dogs[i] - dogs[i - 1]);
        const status = msgs.flatMap(m => m.lines).filter(l => l.startsWith("STATUS="));
        const readyAgain = msgs.findIndex((m, i) => i > first("RELOADING=1") && m.lines.includes("READY=1"));
        console.log(JSON.stringify({ready: first("READY=1"), reloading: first("RELOADING=1"), readyAgain,
            stopping: first("STOPPING=1"), last: msgs.length - 1, dogs: dogs.length, gap: Math.round(gap * 1000),
            span: dogs.length ? Math.round((dogs[dogs.length - 1] - dogs[0]) * 1000) : 0,
            statuses: status.length, syncing: status.some(s => /syncing 1 of 1/.test(s)),
            summary: status.some(s => /1 endpoint\(s\): 1 synced, 0 failing .*next run in/.test(s))}));' \
        "$TMP/notify.jsonl" >"$TMP/notify.sum"
    N=$(cat "$TMP/notify.sum")
    expect_match "$(json_field "$N" 'j.ready === 0')" '^true$' "READY=1 is the first notification ($N)"
    expect_match "$(json_field "$N" 'j.dogs >= 10 && j.span >= 6000')" '^true$' "WATCHDOG=1 pings through the 6 s export"
    expect_match "$(json_field "$N" 'j.gap < 800')" '^true$' "never more than WatchdogSec between two pings (largest gap $(json_field "$N" j.gap) ms; half is 500)"
    expect_match "$(json_field "$N" 'j.syncing && j.summary')" '^true$' "STATUS= says what it does, then a one-line summary"
    expect_match "$(json_field "$N" 'j.reloading > 0 && j.readyAgain > j.reloading')" '^true$' "SIGHUP: RELOADING=1, then READY=1"
    expect_match "$(json_field "$N" 'j.stopping > 0 && j.stopping >= j.last - 1')" '^true$' "STOPPING=1 at the end"
    # without a watchdog in the unit, no WATCHDOG=1
    : >"$TMP/notify2.jsonl"
    python3 "$HERE/notify_listen.py" "$TMP/notify2.sock" "$TMP/notify2.jsonl" 60 &
    LISTENER=$!
    PIDS+=("$LISTENER")
    wait_for test -S "$TMP/notify2.sock" || die "the second notification socket"
    env NOTIFY_SOCKET="$TMP/notify2.sock" "$F" sync --every 1h --config "$OPS_DIR/fhirsync.ini" \
        --store "$TMP/n2.db" --no-progress >/dev/null 2>&1 &
    NSVC=$!
    PIDS+=("$NSVC")
    ready2() { grep -q READY=1 "$TMP/notify2.jsonl"; }
    wait_for ready2 || not_ok "no READY=1"
    summary2() { grep -q 'next run in' "$TMP/notify2.jsonl"; }
    wait_for summary2 || not_ok "no summary after the first run"
    kill -TERM "$NSVC"
    wait "$NSVC" || true
    expect_no_match "$(cat "$TMP/notify2.jsonl")" 'WATCHDOG=1' "no WATCHDOG=1 without WATCHDOG_USEC"
    kill -TERM "$LISTENER" 2>/dev/null || true
fi
finish
