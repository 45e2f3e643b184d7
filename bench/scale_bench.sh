#!/usr/bin/env bash
# bench/scale_bench.sh: many practices synced at once, each its own FHIR base, registration, rate
# limit and PostgreSQL schema, as a company serving hundreds of eClinicalWorks practices runs
# fhirsync. It starts everything itself (a PostgreSQL cluster, `fhirsync-sandbox --practices N`
# with a rate limit per practice, a configuration directory of one file per practice and a
# [defaults] file), prints tables, and removes everything on exit. Every figure stands beside a
# baseline measured in the same run; nothing here fails on a timing (docs/performance.md, "Scale").
#
# The parts:
#   1. one big practice holding every patient: a plain `fhirsync sync` (the baseline), then 1, 2
#      and 4 `sync --worker` processes sharing its export through the store's work queue, and
#      one worker killed (SIGKILL) while it holds a file: its item taken over after the lease
#   2. all practices, one schema each, by 1, 2 and 4 `fhirsync sync` processes (a shard of the
#      configuration each, --jobs JOBS): resources/s beside the big practice's plain sync, the
#      slowest practice's lag, peak memory per process, token requests per practice, the most
#      requests any practice saw in a minute, 429s
#   3. an incremental round after CHANGE of every practice's data changed
#   4. the same round with unhealthy practices (token endpoint down, 429 for an hour, a key the
#      EHR no longer has, corrupt files): the healthy practices' lag beside round 3's
#   5. a round in which one sync process is killed (SIGKILL) and run again; then every store is
#      compared with its practice (type, id, versionId, SHA-256 of the bytes)
#
# Why processes over shards and not `--worker` for part 2: resource ids collide between practices,
# so each practice needs its own store (a schema here), while a worker serves the one store it
# opened (the first endpoint's `store`): its work queue and every item it loads live there
# (src/lib/sync/worker.c, src/cli/cmd_sync.c run_worker). Workers share the work of practices that
# share a store, which practices cannot; so part 1 measures workers on one big practice.
#
#   bench/scale_bench.sh [BUILD_DIR]        (default build/release; a Release build is best)
#   PRACTICES=3 PATIENTS=60 bench/scale_bench.sh     a smoke run (2 minutes: the unhealthy
#                                                    practices get a minute to end on their own)
# Variables: PRACTICES (500), PATIENTS (total, default 20 a practice: 10,000 for 500, about a
# million resources), RATE (250 requests per minute per practice), PROCS ("1 2 4"), JOBS (8 per
# process), WORKERS ("1 2 4"), LEASE (10 s), CHANGE (0.01: the share updated before an
# incremental round; a fifth of it deleted), MARGIN (the rounds' --skew-margin, default 0: they
# run a minute apart on one clock, and the default 300 s would make each increment fetch the
# earlier rounds' changes again, so that no two rounds did the same work), VIEWS (the stores' views setting, default shipped:
# `VIEWS=none` leaves out the shipped views' tables, most of a load's cost), SKIP_BIG=1 (no
# part 1), SKIP_FAULTS=1, SKIP_KILL=1.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build/release}" && pwd)
F=$build/fhirsync
SANDBOX=$build/fhirsync-sandbox
TEST_SYNC=$build/tests/test_sync
LIB=$root/bench/scale_lib.mjs
for b in "$F" "$SANDBOX" "$TEST_SYNC"; do
    [ -x "$b" ] || { echo "scale_bench: $b is not built" >&2; exit 2; }
done
[ -x /usr/bin/time ] || { echo "scale_bench: needs /usr/bin/time (GNU time)" >&2; exit 2; }
PRACTICES=${PRACTICES:-500}
PATIENTS=${PATIENTS:-$((20 * PRACTICES))}
RATE=${RATE:-250}
PROCS=${PROCS:-"1 2 4"}
JOBS=${JOBS:-8}
WORKERS=${WORKERS:-"1 2 4"}
LEASE=${LEASE:-10}
CHANGE=${CHANGE:-0.01}
MARGIN=${MARGIN:-0}
VIEWS=${VIEWS:-shipped}
LIFETIME=300 # the sandbox's token lifetime (its default, as eClinicalWorks')
max_procs=$(printf '%s\n' $PROCS | sort -n | tail -1)
max_workers=$(printf '%s\n' $WORKERS | sort -n | tail -1)

work=$(mktemp -d "${TMPDIR:-/tmp}/fhirsync-scale-bench.XXXXXX")
pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/fhirsync-pg-scale.XXXXXX")
KILL_PIDS=() # processes this script started, ended at exit by their id
cleanup() {
    local p
    for p in "${KILL_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${KILL_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    (cd / && "$root/scripts/pg-test-server.sh" stop "$pg_dir" >/dev/null 2>&1) || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cd "$work"

# a connection per job and one per extra loader, for every process at once, and the workers
export PG_MAX_CONNECTIONS=$((max_procs * JOBS * 3 + max_workers * 4 + 20))
pg_url=$(cd / && "$root/scripts/pg-test-server.sh" start "$pg_dir" 2>/dev/null) ||
    { echo "scale_bench: cannot start PostgreSQL (scripts/pg-test-server.sh)" >&2; exit 2; }
export PGOPTIONS='-c client_min_messages=warning'
pg() { (cd / && psql -qAtX "$pg_url" "$@"); }
# db_url DB [SCHEMA]: the store URL of database DB (and that schema)
db_url() {
    local u=${pg_url/\/fhirsync_test\?//$1?}
    [ -n "${2:-}" ] && u="$u&options=-csearch_path%3D$2"
    printf '%s' "$u"
}
fresh_db() { pg -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null; }
drop_db() { pg -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null; }
# practice_schemas DB: one schema per practice, p0001...
practice_schemas() {
    local i
    for i in $(seq 1 "$PRACTICES"); do printf 'CREATE SCHEMA p%04d;\n' "$i"; done |
        (cd / && psql -qAtX "$(db_url "$1")") >/dev/null
}
stamp() { # each line of stdin with the wall-clock time it arrived
    local l
    while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done
}
json() { node -e "const j=JSON.parse(require('fs').readFileSync(0,'utf8')); console.log($1)"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", b - a}'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN {printf "%.0f", (s > 0 ? n / s : 0)}'; }
mb() { tail -1 "$1" 2>/dev/null | awk '/^[0-9]+$/ {printf "%.1f", $1 / 1024; ok = 1} END {if (!ok) printf "?"}'; }

# launch NAME COMMAND...: run COMMAND in the background under /usr/bin/time (peak RSS in
# NAME.rss), its stdout time-stamped into NAME.out, stderr in NAME.err, exit status in NAME.rc;
# the command's own pid (for SIGKILL and SIGTERM) in NAME.pid. The subshell's pid in LAUNCHED.
launch() {
    local name=$1
    shift
    rm -f "$name.pid" "$name.rc"
    (
        set +e
        /usr/bin/time -f %M -o "$name.rss" sh -c 'echo $$ >"$0"; exec "$@"' "$name.pid" "$@" \
            2>"$name.err" | stamp >>"$name.out"
        echo "${PIPESTATUS[0]}" >"$name.rc"
    ) &
    LAUNCHED=$!
    KILL_PIDS+=("$LAUNCHED")
    local i
    for i in $(seq 1 100); do [ -s "$name.pid" ] && break; sleep 0.05; done
    KILL_PIDS+=("$(cat "$name.pid")")
}

# start_sandbox DIR OPTIONS...: a sandbox with its ready file in DIR; its pid in SANDBOX_PID
start_sandbox() {
    local dir=$1
    shift
    mkdir -p "$dir"
    "$SANDBOX" --ready-file "$dir/ready.json" --work-dir "$dir/exports" "$@" >"$dir/out" 2>"$dir/err" &
    SANDBOX_PID=$!
    KILL_PIDS+=("$SANDBOX_PID")
    local i
    for i in $(seq 1 600); do
        [ -s "$dir/ready.json" ] && return 0
        kill -0 "$SANDBOX_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "scale_bench: the sandbox did not start:" >&2
    tail -5 "$dir/err" >&2
    exit 1
}

machine() {
    printf 'machine: %s CPU(s) (%s), %s GiB, load %s; %s practices, %s patients, %s requests/min each, views = %s\n' \
        "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" \
        "$(awk '/MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)" \
        "$(cut -d' ' -f1-3 /proc/loadavg)" "$PRACTICES" "$PATIENTS" "$RATE" "$VIEWS"
}
machine
bench_start=$EPOCHREALTIME

# ---- keys, the unhealthy practices, the registrations ---------------------------------------------

"$F" keygen --alg RS384 --out keys --name scale >/dev/null
"$F" keygen --alg RS384 --out other --name other >/dev/null
chmod 600 keys/scale.key.pem

# The unhealthy practices of part 4, spread over the sizes (practice 1, the largest, stays healthy):
# token endpoint down, 429 for an hour, a key the EHR no longer has, corrupt files. Fewer with
# fewer than 5 practices.
FAULT_NAMES=(token-down 429-for-an-hour revoked-key corrupt-files)
FAULTY=()
if [ "$PRACTICES" -ge 8 ]; then
    for k in 1 2 3 4; do FAULTY+=($((1 + k * (PRACTICES - 1) / 4))); done
else
    for i in $(seq 2 "$PRACTICES"); do [ "${#FAULTY[@]}" -lt 4 ] && FAULTY+=("$i"); done
fi
REKEYED=0
[ "${#FAULTY[@]}" -ge 3 ] && REKEYED=${FAULTY[2]}
node "$LIB" clients "$PRACTICES" keys/jwks.json other/jwks.json "$REKEYED" >clients.json
node "$LIB" clients 1 keys/jwks.json other/jwks.json 0 >clients_big.json

# ---- part 1: one big practice -------------------------------------------------------------------

if [ "${SKIP_BIG:-0}" != 1 ]; then
    echo
    echo "## One practice with all $PATIENTS patients: plain sync, then workers sharing its export"
    start_sandbox big --practices 1 --patients "$PATIENTS" --rate-limit "$RATE" \
        --clients clients_big.json
    big_pid=$SANDBOX_PID
    big_base=$(json 'j.practices[0].base_url' <big/ready.json)
    big_admin=$(json 'j.practices[0].admin_url' <big/ready.json)
    big_conf() { # big_conf DB: the configuration of the big practice into DB
        cat >big.ini <<INI
[endpoint practice-0001]
base_url   = $big_base
client_id  = scale-0001
key_file   = $work/keys/scale.key.pem
alg        = RS384
rate_limit = $RATE
views      = $VIEWS
store      = $(db_url "$1")
INI
    }
    echo "| run | processes | resources | wall s | resources/s | x plain sync | peak RSS MB per process | file items |"
    echo "|---|---|---|---|---|---|---|---|"
    fresh_db big_plain
    big_conf big_plain
    t0=$EPOCHREALTIME
    launch big_plain "$F" sync --config big.ini --json --no-progress --work-dir "$work/wd_plain"
    wait "$LAUNCHED" || true
    t1=$EPOCHREALTIME
    base_res=$(tail -1 big_plain.out | cut -d' ' -f2- | json j.resources)
    base_wall=$(secs "$t0" "$t1")
    BASE_RATE=$(rate "$base_res" "$base_wall")
    echo "| plain \`fhirsync sync\` (the baseline) | 1 | $base_res | $base_wall | $BASE_RATE | 1.00x | $(mb big_plain.rss) | - |"
    drop_db big_plain

    # workers W: one queued sync, W workers until the queue is empty
    run_workers() { # run_workers W DB [victim]: leaves the worker names in WNAMES
        local w=$1 db=$2 k
        fresh_db "$db"
        big_conf "$db"
        "$F" sync --config big.ini --enqueue >/dev/null
        WNAMES=()
        for k in $(seq 1 "$w"); do
            launch "$db.w$k" "$F" sync --config big.ini --worker --once --worker-id "w$k" \
                --lease "$LEASE" --json --no-progress --work-dir "$work/wd_$db.w$k"
            WNAMES+=("$db.w$k")
            eval "WPID_$k=$LAUNCHED"
        done
    }
    for w in $WORKERS; do
        db=big_w$w
        t0=$EPOCHREALTIME
        run_workers "$w" "$db"
        for k in $(seq 1 "$w"); do eval "wait \$WPID_$k" || true; done
        t1=$EPOCHREALTIME
        res=0
        rss=()
        for n in "${WNAMES[@]}"; do
            r=$(grep -o '"resources":[0-9]*' "$n.out" | tail -1 | cut -d: -f2)
            res=$((res + ${r:-0}))
            rss+=("$(mb "$n.rss")")
        done
        files=$( (cd / && psql -qAtX "$(db_url "$db")" -c "SELECT count(*) FILTER (WHERE state = 'done') || ' done, ' || count(*) FILTER (WHERE state <> 'done') || ' not' FROM work_items WHERE kind = 'file-load'"))
        wall=$(secs "$t0" "$t1")
        echo "| \`sync --worker\` x $w | $w | $res | $wall | $(rate "$res" "$wall") | $(awk -v a="$(rate "$res" "$wall")" -v b="$BASE_RATE" 'BEGIN {printf "%.2fx", a / b}') | ${rss[*]} | $files |"
        drop_db "$db"
    done

    if [ "${SKIP_KILL:-0}" != 1 ] && [ "$max_workers" -ge 2 ]; then
        # a worker killed while it holds a file: freeze it (SIGSTOP) before reading what it
        # holds, so that it cannot finish the item between the look and the kill
        db=big_kill
        q() { (cd / && psql -qAtX "$(db_url "$db")" -c "$1"); }
        t0=$EPOCHREALTIME
        run_workers "$max_workers" "$db"
        victim=$WPID_2
        vpid=$(cat "$db.w2.pid")
        held=
        for _ in $(seq 1 600); do
            if [ "$(q "SELECT count(*) FROM work_items WHERE claimed_by = 'w2' AND state = 'claimed' AND kind = 'file-load'" 2>/dev/null)" = 1 ]; then
                kill -STOP "$vpid"
                held=$(q "SELECT id FROM work_items WHERE state = 'claimed' AND claimed_by = 'w2' AND kind = 'file-load' LIMIT 1")
                [ -n "$held" ] && break
                kill -CONT "$vpid"
            fi
            kill -0 "$vpid" 2>/dev/null || break
            sleep 0.1
        done
        echo
        if [ -n "$held" ]; then
            kill -KILL "$vpid"
            t_kill=$EPOCHREALTIME
            wait "$victim" 2>/dev/null || true
            taken=
            for _ in $(seq 1 $((LEASE * 20 + 1200))); do
                by=$(q "SELECT coalesce(claimed_by, '') || ' ' || state FROM work_items WHERE id = $held")
                case $by in w2\ *) sleep 0.1 ;; *) taken=$(secs "$t_kill" "$EPOCHREALTIME"); break ;; esac
            done
            for k in $(seq 1 "$max_workers"); do [ "$k" = 2 ] || eval "wait \$WPID_$k" || true; done
            t1=$EPOCHREALTIME
            echo "Worker w2 of $max_workers killed (SIGKILL) while holding file item $held, $(secs "$t0" "$t_kill") s into the run."
            echo "- taken over by $(q "SELECT claimed_by FROM work_items WHERE id = $held") after ${taken:-?} s (lease $LEASE s; the survivors claim a new item when they finish the file in hand)"
            echo "- items: $(q "SELECT string_agg(state || ' ' || n, ', ') FROM (SELECT state, count(*) n FROM work_items GROUP BY 1 ORDER BY 1) s"); the run: $(q "SELECT mode || ' ' || status || ', ' || resources || ' resources' FROM sync_runs ORDER BY id DESC LIMIT 1"); $(secs "$t0" "$t1") s"
            printf -- '- '
            node "$LIB" verify "$TEST_SYNC" "$(db_url "$db")" "$big_admin" 1 1 || true
        else
            echo "Worker w2 was never seen holding a file (the export is too small to catch one: try more PATIENTS)."
            for k in $(seq 1 "$max_workers"); do eval "wait \$WPID_$k" || true; done
        fi
        drop_db "$db"
    fi
    kill "$big_pid" && wait "$big_pid" 2>/dev/null || true
    rm -rf big/exports
fi

# ---- the practices ------------------------------------------------------------------------------

echo
echo "## $PRACTICES practices, one PostgreSQL schema each, $RATE requests/min each"
start_sandbox practices --practices "$PRACTICES" --patients "$PATIENTS" --rate-limit "$RATE" \
    --clients clients.json
admin=$(json j.admin_url <practices/ready.json)
admin_tpl=$(json j.admin_url_template <practices/ready.json)
base_tpl=$(json j.base_url_template <practices/ready.json)
echo "resources served: $(curl -sS "$admin/practices" | json 'j.totals.resources.toLocaleString("en-US")'); sizes: $(json 'j.practices.map(p=>p.patients).slice(0,3).join(", ")+" ... "+j.practices.map(p=>p.patients).slice(-2).join(", ")' <practices/ready.json) patients"

# write_config DIR DB SHARDS [faults]: DIR/sK (K = 1..SHARDS) each a configuration directory of
# [defaults] and one file per practice of the shard (practice i in shard (i-1) % SHARDS + 1);
# with "faults", the revoked-key practice uses the client whose registration holds another key
write_config() {
    local dir=$1 db=$2 shards=$3 faults=${4:-} i k n client
    rm -rf "$dir"
    for k in $(seq 1 "$shards"); do
        mkdir -p "$dir/s$k"
        cat >"$dir/s$k/00-defaults.ini" <<INI
[defaults]
key_file   = $work/keys/scale.key.pem
alg        = RS384
scope      = system/*.read
rate_limit = $RATE
views      = $VIEWS
INI
    done
    for i in $(seq 1 "$PRACTICES"); do
        n=$(printf '%04d' "$i")
        client=scale-$n
        [ "$faults" = faults ] && [ "$i" = "$REKEYED" ] && client=scale-$n-rekeyed
        printf '[endpoint practice-%s]\nbase_url  = %s\nclient_id = %s\nstore     = %s\n' \
            "$n" "${base_tpl/\{i\}/$i}" "$client" "$(db_url "$db" "p$n")" \
            >"$dir/s$(((i - 1) % shards + 1))/practice-$n.ini"
    done
}
write_config conf_all scale 1
t0=$EPOCHREALTIME
echo "config check of the $PRACTICES-file directory: $("$F" config check --config conf_all/s1 | tail -1) ($(secs "$t0" "$EPOCHREALTIME") s)"

# mutate_all: CHANGE of every practice's resources updated, a fifth of that deleted
mutate_all() {
    local body urls=() i
    body=$(awk -v c="$CHANGE" 'BEGIN {printf "{\"update\":%s,\"delete\":%s}", c, c / 5}')
    for i in $(seq 1 "$PRACTICES"); do urls+=("${admin_tpl/\{i\}/$i}/mutate"); done
    curl -sS --fail -X POST -H 'Content-Type: application/json' -d "$body" "${urls[@]}" >/dev/null
}
# fault I JSON: a fault rule at practice I; clear_faults I
fault() {
    curl -sS --fail -X POST -H 'Content-Type: application/json' -d "$2" \
        "${admin_tpl/\{i\}/$1}/faults" >/dev/null
}
clear_faults() { curl -sS -X DELETE "${admin_tpl/\{i\}/$1}/faults" >/dev/null; }
healthy_reported() { # how many healthy practices have printed their run in round DIR
    local pat='"endpoint":"practice-(' i sep=''
    for i in "${FAULTY[@]}"; do pat+="$sep$(printf '%04d' "$i")"; sep='|'; done
    pat+=')"'
    [ ${#FAULTY[@]} -gt 0 ] || pat='^$'
    cat "$1"/p*.out 2>/dev/null | grep '"endpoint":' | grep -Evc "$pat" || true
}

# round SLUG LABEL DB PROCS [faults|kill]: one round of syncs of every practice by PROCS processes;
# prints its table row. faults: the unhealthy practices' rules are on, and a minute after every
# healthy practice is done the processes are stopped (SIGTERM: the unhealthy ones may retry for
# long).
# kill: process 1 is killed (SIGKILL) a third of the way through its shard, and run again once
# the others are done.
ROUNDS_HEADER_DONE=
round() {
    local name=$2 db=$3 procs=$4 mode=${5:-} k t0 t1 dir=$work/$1 faulty_json='[]'
    [ "$procs" -le "$PRACTICES" ] || procs=$PRACTICES # no empty shard
    mkdir -p "$dir"
    write_config "$dir/conf" "$db" "$procs" "$mode"
    curl -sS -X DELETE "$admin/practices" >/dev/null # the counters start again
    if [ "$mode" = faults ] || [ "$mode" = kill ]; then
        faulty_json="[$(IFS=,; echo "${FAULTY[*]}")]"
    fi
    [ "$mode" = kill ] && faulty_json='[]'
    ROUND_PROCS=$procs
    t0=$EPOCHREALTIME
    for k in $(seq 1 "$procs"); do
        launch "$dir/p$k" "$F" sync --config "$dir/conf/s$k" --jobs "$JOBS" --json --no-progress \
            --skew-margin "$MARGIN" --work-dir "$dir/wd$k"
        eval "RPID_$k=$LAUNCHED"
    done
    if [ "$mode" = faults ]; then
        local want=$((PRACTICES - ${#FAULTY[@]}))
        while [ "$(healthy_reported "$dir")" -lt "$want" ]; do
            local alive=0
            for k in $(seq 1 "$procs"); do [ -e "$dir/p$k.rc" ] || alive=1; done
            [ "$alive" = 1 ] || break
            sleep 0.2
        done
        t1=$EPOCHREALTIME
        # the unhealthy ones that end on their own (a refused key, quarantined lines) get a minute
        # more; those still waiting to retry then are stopped
        local grace=0 alive=1
        while [ "$alive" = 1 ] && [ "$grace" -lt 600 ]; do
            alive=0
            for k in $(seq 1 "$procs"); do [ -e "$dir/p$k.rc" ] || alive=1; done
            grace=$((grace + 1))
            sleep 0.1
        done
        for k in $(seq 1 "$procs"); do kill -TERM "$(cat "$dir/p$k.pid")" 2>/dev/null || true; done
    elif [ "$mode" = kill ]; then
        local shard=$(((PRACTICES + procs - 1) / procs)) pid1
        pid1=$(cat "$dir/p1.pid")
        while [ "$(grep -c '"endpoint":' "$dir/p1.out" 2>/dev/null || true)" -lt $(((shard + 2) / 3)) ] &&
            kill -0 "$pid1" 2>/dev/null; do sleep 0.1; done
        kill -KILL "$pid1" 2>/dev/null || true
        KILL_AT=$(secs "$t0" "$EPOCHREALTIME")
        KILL_DONE=$(grep -c '"endpoint":' "$dir/p1.out" || true)
    fi
    for k in $(seq 1 "$procs"); do eval "wait \$RPID_$k" || true; done
    [ "$mode" = faults ] || t1=$EPOCHREALTIME
    if [ "$mode" = kill ]; then
        "$F" status --config "$dir/conf/s1" --json >"$dir/status.json" 2>/dev/null || true
        KILL_STATES=$(json 'Object.entries(j.endpoints.reduce((a,e)=>(a[e.state]=(a[e.state]||0)+1,a),{})).map(([s,n])=>n+" "+s).join(", ")' <"$dir/status.json")
        local r0=$EPOCHREALTIME
        launch "$dir/p1" "$F" sync --config "$dir/conf/s1" --jobs "$JOBS" --json --no-progress \
            --skew-margin "$MARGIN" --work-dir "$dir/wd1"
        wait "$LAUNCHED" || true
        t1=$EPOCHREALTIME
        RERUN_S=$(secs "$r0" "$t1")
        RERUN_RESUMED=$(grep -c '"resumed":true' "$dir/p1.out" || true)
    fi
    curl -sS "$admin/practices" >"$dir/admin.json"
    cat >"$dir/round.json" <<JSON
{"label": "$name", "procs": $procs, "jobs": $JOBS, "t0": $t0, "t1": $t1, "practices": $PRACTICES,
 "faulty": $faulty_json, "lifetime": $LIFETIME, "rate_limit": $RATE,
 "baseline_rate": $([ "${name#full}" != "$name" ] && echo "${BASE_RATE:-0}" || echo 0)}
JSON
    if [ -z "$ROUNDS_HEADER_DONE" ]; then
        echo "| round | processes x jobs | practices ok/partial/failed | resources | wall s | resources/s | x one big practice | slowest practice's lag s | median lag s | peak RSS MB per process | token requests per practice, most | most requests in a wall-clock minute / any 60 s (limit) | 429s |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        ROUNDS_HEADER_DONE=1
    fi
    node "$LIB" round "$dir"
}

for p in $PROCS; do
    fresh_db "scale_p$p"
    practice_schemas "scale_p$p"
    round "full$p" "full, $p process(es)" "scale_p$p" "$p"
    [ "$p" = "$max_procs" ] || drop_db "scale_p$p"
done
DB=scale_p$max_procs
mutate_all
round incr "incremental ($CHANGE changed)" "$DB" "$max_procs"
if [ "${SKIP_FAULTS:-0}" != 1 ] && [ "${#FAULTY[@]}" -gt 0 ]; then
    mutate_all
    rules=('{"fault":"503","on":"token","count":0,"retry_after":30}'
        '{"fault":"429","on":"any","count":0,"retry_after":3600}'
        ''
        '{"fault":"truncate","on":"download","count":0}')
    for k in "${!FAULTY[@]}"; do [ -z "${rules[$k]}" ] || fault "${FAULTY[$k]}" "${rules[$k]}"; done
    round faults "incremental, ${#FAULTY[@]} unhealthy" "$DB" "$max_procs" faults
    for k in "${!FAULTY[@]}"; do clear_faults "${FAULTY[$k]}"; done
    echo
    echo "### Unhealthy practices: the healthy ones' lag without and with them"
    node - "$work/incr/summary.json" "$work/faults/summary.json" \
        "${FAULTY[*]}" "${FAULT_NAMES[*]}" <<'JS'
const fs = require('fs');
const [a, b] = [2, 3].map((k) => JSON.parse(fs.readFileSync(process.argv[k], 'utf8')));
const ids = process.argv[4].split(' '), names = process.argv[5].split(' ');
const f = (x) => (Number.isFinite(x) ? x.toFixed(1) : '-');
// the same practices in both rounds: those healthy in the second
const healthy = Object.keys(b.lags);
const stats = (s) => {
    const l = healthy.map((e) => s.lags[e]).filter((x) => x !== undefined).sort((x, y) => x - y);
    return { n: l.length, median: l[l.length >> 1], p90: l[Math.floor(l.length * 0.9)], max: l[l.length - 1] };
};
const [sa, sb] = [stats(a), stats(b)];
console.log(`| round | of the ${healthy.length} healthy practices, done | resources | median lag s | 90th percentile s | slowest s | wall s until they were done |`);
console.log('|---|---|---|---|---|---|---|');
const res = (r) => healthy.reduce((n, e) => n + (r.resources_by[e] || 0), 0).toLocaleString('en-US');
for (const [s, r, what] of [[sa, a, 'without them (the round before)'], [sb, b, `with ${ids.length} unhealthy practices`]])
    console.log(`| ${what} | ${s.n} | ${res(r)} | ${f(s.median)} | ${f(s.p90)} | ${f(s.max)} | ${f(r.wall)} |`);
console.log(`the healthy practices with the unhealthy ones beside them: slowest ${(sb.max / sa.max).toFixed(2)}x, median ${(sb.median / sa.median).toFixed(2)}x the round without them`);
for (let k = 0; k < ids.length; k++) {
    const name = `practice-${ids[k].padStart(4, '0')}`;
    const r = b.faulty.find((x) => x.endpoint === name);
    const stopped = r && /cancelled|interrupted/.test(r.error || '');
    console.log(`- ${name} (${names[k]}): ` + (r && !stopped
        ? `${r.status}, reported ${f(r.lag)} s into the round: ${(r.error || '').slice(0, 150)}`
        : `still retrying when the healthy practices were done, stopped by SIGTERM${r ? ` (${(r.error || '').slice(0, 100)})` : ''}`));
}
JS
fi

if [ "${SKIP_KILL:-0}" != 1 ]; then
    mutate_all
    echo
    round kill "incremental, process 1 killed and run again" "$DB" "$max_procs" kill
    echo
    echo "Process 1 of $ROUND_PROCS was killed (SIGKILL) $KILL_AT s into the round, after" \
        "$KILL_DONE practices of its shard; \`fhirsync status\` then said: $KILL_STATES (idle:" \
        "done in this round or not yet begun). The shard run again: $RERUN_S s, $RERUN_RESUMED" \
        "interrupted export(s) resumed; each practice of the shard was synced again with a token" \
        "of its own (their second token of the round). No other process takes over: each owns" \
        "its shard, and the endpoint locks die with the killed process."
fi
# The unhealthy practices catch up, their faults gone: an ordinary sync each; a full export for
# the corrupt files' practice, whose partial run quarantined the cut lines and moved its watermark
if [ "${SKIP_FAULTS:-0}" != 1 ] && [ "${#FAULTY[@]}" -gt 0 ]; then
    write_config conf_all "$DB" 1
    for k in "${!FAULTY[@]}"; do
        full=
        [ "$k" = 3 ] && full=--full
        "$F" sync --config conf_all/s1 --endpoint "practice-$(printf '%04d' "${FAULTY[$k]}")" \
            ${full:+"$full"} --json --no-progress --skew-margin "$MARGIN" --work-dir "$work/wd_catch_up" >/dev/null 2>&1 || true
    done
fi
echo
node "$LIB" verify "$TEST_SYNC" "$(db_url "$DB" 'p{i}')" "$admin_tpl" 1 "$PRACTICES" || true
echo "(whole benchmark: $(secs "$bench_start" "$EPOCHREALTIME") s)"
