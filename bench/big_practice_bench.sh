#!/usr/bin/env bash
# bench/big_practice_bench.sh: one big practice through `fhirsync sync`, into SQLite and into
# PostgreSQL: wall and CPU time, peak memory (the 64 MB bound), the store's size on disk, and an
# incremental run after 1% of the data changed, whose time should be in proportion to the change.
# Beside them, measured in the same run on the same rows: the bulk download alone (`fhirsync
# export` of the same request), a bare prepared-INSERT loop into SQLite (test_sync --bare-sqlite)
# and a bare COPY into PostgreSQL of (raw text, resource jsonb) (what bench/store_bench.sh and
# bench/sync_bench.sh compare with). It starts the sandbox and a PostgreSQL cluster itself and
# removes everything on exit. Nothing here fails on a timing (docs/performance.md, "Scale").
#
#   bench/big_practice_bench.sh [BUILD_DIR]        (default build/release; Release is best)
#   PATIENTS="2000 20000" bench/big_practice_bench.sh   sizes (about 99 resources a patient;
#                                                        default 100000: about 10 million)
#   CHANGE=0.01 (the share updated before the incremental runs), SKIP_PG=1, SKIP_BARE=1
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build/release}" && pwd)
F=$build/fhirsync
SANDBOX=$build/fhirsync-sandbox
TEST_SYNC=$build/tests/test_sync
for b in "$F" "$SANDBOX" "$TEST_SYNC"; do
    [ -x "$b" ] || { echo "big_practice_bench: $b is not built" >&2; exit 2; }
done
[ -x /usr/bin/time ] || { echo "big_practice_bench: needs /usr/bin/time (GNU time)" >&2; exit 2; }
sizes=${PATIENTS:-100000}
CHANGE=${CHANGE:-0.01}
work=$(mktemp -d "${TMPDIR:-/tmp}/fhirsync-big-bench.XXXXXX")
pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/fhirsync-pg-big.XXXXXX")
sandbox_pid=
cleanup() {
    [ -z "$sandbox_pid" ] || { kill "$sandbox_pid" 2>/dev/null && wait "$sandbox_pid" 2>/dev/null; } || true
    (cd / && "$root/scripts/pg-test-server.sh" stop "$pg_dir" >/dev/null 2>&1) || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cd "$work"
pg_url=
[ "${SKIP_PG:-0}" = 1 ] || pg_url=$(cd / && "$root/scripts/pg-test-server.sh" start "$pg_dir" 2>/dev/null) ||
    { pg_url=; echo "(PostgreSQL is not available: SQLite only)"; }
export PGOPTIONS='-c client_min_messages=warning'

# measure NAME COMMAND...: run it; wall seconds in SECS, user+system CPU seconds in CPU, peak RSS
# (MB) in RSS; stdout in NAME.out, stderr in NAME.err
measure() {
    local name=$1 t0 t1
    shift
    t0=$EPOCHREALTIME
    /usr/bin/time -f '%M %U %S' -o "$name.time" "$@" >"$name.out" 2>"$name.err" || true
    t1=$EPOCHREALTIME
    SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')
    read -r RSS CPU < <(tail -1 "$name.time" | awk '{printf "%.1f %.1f\n", $1 / 1024, $2 + $3}')
}
rate() { awk -v n="$1" -v s="$2" 'BEGIN {printf "%.0f", (s > 0 ? n / s : 0)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}'; }
mib() { awk -v b="$1" 'BEGIN {printf "%.0f MiB", b / 1048576}'; }
last_json() { tail -1 "$1" | node -e "const j=JSON.parse(require('fs').readFileSync(0,'utf8')); console.log($2)"; }
row() { # STEP RESOURCES SECS CPU RSS SIZE NOTE
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$patients" "$1" "$2" "$3" "$4" \
        "$(rate "$2" "$3")" "$5" "$6" "$7"
}

"$F" keygen --alg RS384 --out keys --name bench >/dev/null
printf 'machine: %s CPU(s) (%s), %s GiB, load %s\n' "$(nproc)" \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" \
    "$(awk '/MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)" "$(cut -d' ' -f1-3 /proc/loadavg)"
echo "| patients | step | resources | wall s | CPU s | resources/s | peak RSS MB | store on disk | ratio |"
echo "|---|---|---|---|---|---|---|---|---|"
for patients in $sizes; do
    rm -f ready.json
    "$SANDBOX" --patients "$patients" --ready-file ready.json --work-dir "$work/sandbox" \
        >sandbox.log 2>&1 &
    sandbox_pid=$!
    for _ in $(seq 1 600); do [ -s ready.json ] && break; sleep 0.1; done
    base=$(node -p "require('./ready.json').base_url")
    reg=$(node -p "require('./ready.json').register_url")
    admin=$(node -p "require('./ready.json').admin_url")
    printf '{"client_id":"bench","scope":"system/*.read","jwks":%s}' "$(cat keys/jwks.json)" |
        curl -sS --fail-with-body -X POST -H 'Content-Type: application/json' --data-binary @- \
            "$reg" >/dev/null
    conf() { # conf STORE [VIEWS]: the endpoint with that store (and views setting)
        cat >fhirsync.ini <<INI
[endpoint big]
base_url  = $base
client_id = bench
key_file  = $work/keys/bench.key.pem
alg       = RS384
store     = $1
views     = ${2:-shipped}
INI
    }
    conf "$work/s.db"
    export FHIRSYNC_CONFIG=$work/fhirsync.ini
    mutate() {
        curl -sS --fail -X POST -H 'Content-Type: application/json' \
            -d "{\"update\":$CHANGE,\"delete\":0}" "$admin/mutate" >/dev/null
    }
    # the sync's first request: the US Core types the sandbox has, Patient level
    types=AllergyIntolerance,Condition,DiagnosticReport,DocumentReference,Encounter
    types=$types,Immunization,MedicationRequest,Observation,Patient,Procedure

    # the network side alone, and the files for the bare baselines
    bare_sqlite='' bare_pg=''
    if [ "${SKIP_BARE:-0}" != 1 ]; then
        rm -rf export
        measure export "$F" export --out export --level patient --type "$types" --json
        n=$(last_json export.out j.resources)
        dl=$SECS
        row "bulk download alone (\`fhirsync export\`)" "$n" "$SECS" "$CPU" "$RSS" \
            "$(mib "$(du -sb export | cut -f1)") of NDJSON" "-"
        rm -f bare.db*
        bare_sqlite=$("$TEST_SYNC" --bare-sqlite bare.db export/[A-Z]*.ndjson | cut -f3)
        row "SQLite: bare INSERT loop of the same lines" "$n" "$bare_sqlite" "-" "-" \
            "$(mib "$(cat bare.db* | wc -c)")" "-"
        rm -f bare.db*
        if [ -n "$pg_url" ]; then
            (cd / && psql -qAtX "$pg_url" -c "DROP TABLE IF EXISTS bare" \
                -c "CREATE TABLE bare (raw text, resource jsonb)") >/dev/null
            t0=$EPOCHREALTIME
            cat export/[A-Z]*.ndjson | awk '{print $0 "\002" $0}' | (cd / && psql -qX "$pg_url" \
                -c "SET default_toast_compression = 'lz4'" -c \
                "\\copy bare FROM STDIN WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')") >/dev/null
            bare_pg=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')
            size=$(cd / && psql -qAtX "$pg_url" -c "SELECT pg_total_relation_size('bare')")
            row "PostgreSQL: bare COPY (raw text, resource jsonb)" "$n" "$bare_pg" "-" "-" \
                "$(mib "$size")" "-"
            (cd / && psql -qAtX "$pg_url" -c "DROP TABLE bare") >/dev/null
        fi
        rm -rf export
    fi

    # The stores: LABEL STORE SIZE_COMMAND FRESH_COMMAND BARE_SECONDS BARE_WHAT, one line each
    sqlite_size() { cat "$work"/s.db* | wc -c; }
    sqlite_fresh() { rm -rf "$work"/s.db*; }
    stores=("SQLite|$work/s.db|sqlite_size|sqlite_fresh|$bare_sqlite|bare INSERT loop's rate")
    if [ -n "$pg_url" ]; then
        big_url=${pg_url/\/fhirsync_test\?//big?}
        pg_size() { (cd / && psql -qAtX "$pg_url" -c "SELECT pg_database_size('big')"); }
        pg_fresh() {
            (cd / && psql -qAtX "$pg_url" -c "DROP DATABASE IF EXISTS big WITH (FORCE)" \
                -c "CREATE DATABASE big") >/dev/null
        }
        stores+=("PostgreSQL|$big_url|pg_size|pg_fresh|$bare_pg|bare COPY's rate")
    fi
    # a full sync into each empty store, before any change (so that the incremental runs fetch
    # only the change, not also changes within the skew margin before a full run's kick-off)
    declare -A full_s full_n
    for st in "${stores[@]}"; do
        IFS='|' read -r label store size_cmd fresh_cmd bare bare_what <<<"$st"
        $fresh_cmd
        conf "$store"
        measure "full-$label" "$F" sync --json --no-progress --work-dir "$work/wd-$label"
        full_n[$label]=$(last_json "full-$label.out" j.resources)
        full_s[$label]=$SECS
        note=
        [ -n "$bare" ] && note="$(ratio "$(rate "${full_n[$label]}" "$SECS")" "$(rate "${full_n[$label]}" "$bare")")x the $bare_what"
        [ -n "${dl:-}" ] && note="$note${note:+, }$(ratio "$SECS" "$dl")x the download's time"
        note="$note; 64 MB bound: $(awk -v r="$RSS" 'BEGIN {print (r <= 64 ? "met" : "NOT met")}')"
        row "sync into $label, full" "${full_n[$label]}" "$SECS" "$CPU" "$RSS" "$(mib "$($size_cmd)")" "$note"
    done
    # CHANGE of the data changed, then an incremental sync of each store
    mutate
    for st in "${stores[@]}"; do
        IFS='|' read -r label store size_cmd fresh_cmd bare bare_what <<<"$st"
        conf "$store"
        measure "incr-$label" "$F" sync --json --no-progress --work-dir "$work/wd-$label"
        n=$(last_json "incr-$label.out" j.resources)
        row "sync into $label, incremental after $(awk -v c="$CHANGE" 'BEGIN {print c * 100}')% changed" \
            "$n" "$SECS" "$CPU" "$RSS" "$(mib "$($size_cmd)")" \
            "time $(ratio "$SECS" "${full_s[$label]}")x the full sync's, for $(ratio "$n" "${full_n[$label]}")x its resources"
        $fresh_cmd
    done
    # the full sync again into an empty store without the shipped views' tables: their cost
    for st in "${stores[@]}"; do
        [ "${SKIP_NO_VIEWS:-0}" != 1 ] || break
        IFS='|' read -r label store size_cmd fresh_cmd bare bare_what <<<"$st"
        conf "$store" none
        measure "noviews-$label" "$F" sync --json --no-progress --work-dir "$work/wd-$label"
        n=$(last_json "noviews-$label.out" j.resources)
        note=
        [ -n "$bare" ] && note="$(ratio "$(rate "$n" "$SECS")" "$(rate "$n" "$bare")")x the $bare_what; "
        row "sync into $label, full, \`views = none\`" "$n" "$SECS" "$CPU" "$RSS" \
            "$(mib "$($size_cmd)")" "${note}the full sync with the shipped views took $(ratio "${full_s[$label]}" "$SECS")x as long"
        $fresh_cmd
    done
    kill "$sandbox_pid" && wait "$sandbox_pid" 2>/dev/null || true
    sandbox_pid=
done
echo "(the store's size includes its indexes, the shipped views' tables and the audit tables;"
echo " PostgreSQL's is the whole database, SQLite's the database file and its -wal)"
