#!/usr/bin/env bash
# bench/sync_bench.sh: end-to-end `fhirsync sync` benchmark against the sandbox, on this machine,
# for two export sizes: resources per second into SQLite (files loaded as they arrive, and after
# the whole export) and into PostgreSQL, with peak memory (VmHWM via /usr/bin/time -f %M), and
# the ratios to what bounds them, measured in the same run on the same files:
#   - the bulk download alone (`fhirsync export` of the same request: the network side)
#   - a bare prepared-INSERT loop of the same lines into SQLite (test_sync --bare-sqlite) and a
#     bare COPY of the same lines into PostgreSQL (psql \copy; into `raw text`, then into
#     `raw text, resource jsonb`, what the store keeps): the store side
#   - the store's own load path on the same files (bench/store_bench --compare: beside the bare
#     loop above and a bare loop into tables of the store's shape, ROUNDS times, default 3; for
#     PostgreSQL bench/store_bench --load by one session merging, and by two appending)
# No number here fails anything; docs/sync.md keeps the latest table.
#
#   bench/sync_bench.sh [BUILD_DIR]          (default: build-sync; a release build is best)
#   PATIENTS="1000 10000" bench/sync_bench.sh    the sizes (about 99 resources per patient)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build-sync}" && pwd)
F=$build/fhirsync
SANDBOX=$build/fhirsync-sandbox
TEST_SYNC=$build/tests/test_sync
for b in "$F" "$SANDBOX" "$TEST_SYNC"; do
    [ -x "$b" ] || { echo "sync_bench: $b is not built" >&2; exit 2; }
done
sizes=${PATIENTS:-"1000 10000"}
work=$(mktemp -d "${TMPDIR:-/tmp}/fhirsync-sync-bench.XXXXXX")
pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/fhirsync-pg-bench.XXXXXX")
sandbox_pid=
cleanup() {
    [ -n "$sandbox_pid" ] && kill "$sandbox_pid" 2>/dev/null && wait "$sandbox_pid" 2>/dev/null
    (cd / && "$root/scripts/pg-test-server.sh" stop "$pg_dir" >/dev/null 2>&1) || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
pg_url=$(cd / && "$root/scripts/pg-test-server.sh" start "$pg_dir" 2>/dev/null) || pg_url=
TIME=/usr/bin/time
[ -x "$TIME" ] || TIME=

# measure NAME COMMAND...: run, record wall seconds and peak RSS (MB) in $SECS and $RSS
measure() {
    local name=$1
    shift
    local t0 t1
    t0=$(date +%s.%N)
    if [ -n "$TIME" ]; then
        "$TIME" -f %M -o "$work/rss" "$@" >"$work/$name.out" 2>"$work/$name.err"
        RSS=$(awk '{printf "%.1f", $1 / 1024}' "$work/rss")
    else
        "$@" >"$work/$name.out" 2>"$work/$name.err"
        RSS=?
    fi
    t1=$(date +%s.%N)
    SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
}
rate() { awk -v n="$1" -v s="$2" 'BEGIN {printf "%.0f", (s > 0 ? n / s : 0)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}'; }

"$F" keygen --alg RS384 --out keys --name bench >/dev/null
printf 'machine: %s, %s CPU(s), %s\n' "$(uname -m)" "$(nproc)" \
    "$(awk '/MemTotal/ {printf "%.0f GB RAM", $2 / 1048576}' /proc/meminfo)"
printf '%-10s %-34s %9s %8s %11s %9s  %s\n' patients step resources seconds "resources/s" "peak MB" ratio
for patients in $sizes; do
    rm -f ready.json
    "$SANDBOX" --patients "$patients" --ready-file ready.json >sandbox.log 2>&1 &
    sandbox_pid=$!
    for _ in $(seq 1 300); do [ -s ready.json ] && break; sleep 0.1; done
    base=$(node -e "console.log(require('./ready.json').base_url)")
    reg=$(node -e "console.log(require('./ready.json').register_url)")
    printf '{"client_id":"bench","scope":"system/*.read","jwks":%s}' "$(cat keys/jwks.json)" |
        curl -sS --fail-with-body -X POST -H 'Content-Type: application/json' --data-binary @- \
            "$reg" >/dev/null
    cat >fhirsync.ini <<INI
[endpoint bench]
base_url  = $base
client_id = bench
key_file  = $work/keys/bench.key.pem
alg       = RS384
INI
    export FHIRSYNC_CONFIG=$work/fhirsync.ini
    # what the sync asks for by default here: the US Core types the sandbox has, Patient level
    types=AllergyIntolerance,Condition,DiagnosticReport,DocumentReference,Encounter
    types=$types,Immunization,MedicationRequest,Observation,Patient,Procedure

    # the download alone: the same request as the sync's first run
    rm -rf export
    measure export "$F" export --out export --level patient --type "$types" --json
    n=$(node -e "console.log(JSON.parse(require('fs').readFileSync('$work/export.out','utf8')).resources)")
    dl=$SECS
    printf '%-10s %-34s %9s %8s %11s %9s\n' "$patients" "bulk download alone (export)" "$n" "$SECS" \
        "$(rate "$n" "$SECS")" "$RSS"

    # the store's limits on the same lines
    rm -f bare.db*
    bare=$("$TEST_SYNC" --bare-sqlite bare.db export/[A-Z]*.ndjson | cut -f3)
    printf '%-10s %-34s %9s %8s %11s %9s\n' "" "SQLite: bare INSERT loop" "$n" "$bare" \
        "$(rate "$n" "$bare")" "-"
    rm -f bare.db*
    if [ -x "$build/bench/store_bench" ]; then
        # the store's own load path (scan + upsert, one batch per file) on the same files, beside
        # bare INSERT loops of the same lines into tables of the store's shape and into one
        # column, ROUNDS times in rotating order (the best and the medians)
        FHIRSYNC_TEST_TMP=$work "$build/bench/store_bench" --compare --rounds "${ROUNDS:-3}" \
            export/[A-Z]*.ndjson >"$work/compare.out" 2>&1 || echo "(store_bench --compare failed)"
        # each run with one round, else the best and the median of each; the ratios
        keep='.*rounds: best.*'
        [ "${ROUNDS:-3}" = 1 ] && keep='SQLite: .*'
        sed -n "s/^  \($keep\|ratio .*\)/           \1/p" "$work/compare.out"
    fi

    for load in stream after; do
        rm -rf s.db*
        measure "sync-$load" "$F" sync --store "$work/s.db" --load "$load" --json --no-progress
        got=$(node -e "console.log(JSON.parse(require('fs').readFileSync('$work/sync-$load.out','utf8').trim().split('\n').pop()).resources)")
        printf '%-10s %-34s %9s %8s %11s %9s  %s x download, %s x bare inserts\n' "" \
            "sync into SQLite (load $load)" "$got" "$SECS" "$(rate "$got" "$SECS")" "$RSS" \
            "$(ratio "$SECS" "$dl")" "$(ratio "$(rate "$got" "$SECS")" "$(rate "$n" "$bare")")"
    done
    rm -rf s.db*

    if [ -n "$pg_url" ]; then
        db="bench_$patients"
        url=$(printf '%s' "$pg_url" | sed "s|/fhirsync_test|/$db|")
        fresh_db() {
            (cd / && psql -q "$pg_url" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db") \
                >/dev/null 2>&1
        }
        # the limits: COPY of the same lines into a bare table, text only, then text and jsonb
        # (what the store keeps of each line), with no scan, key, index or upsert
        pgbare=
        for cols in "raw text" "raw text, resource jsonb"; do
            fresh_db
            (cd / && psql -q "$url" -c "CREATE TABLE bare ($cols)") >/dev/null
            t0=$(date +%s.%N)
            cat export/[A-Z]*.ndjson | if [ "$cols" = "raw text" ]; then cat; else
                awk '{print $0 "\002" $0}'; fi | (cd / && psql -q "$url" \
                -c "SET default_toast_compression = 'lz4'" -c \
                "\\copy bare FROM STDIN WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')") >/dev/null
            t1=$(date +%s.%N)
            pgbare=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
            printf '%-10s %-34s %9s %8s %11s %9s\n' "" "PostgreSQL: bare COPY ($cols)" "$n" \
                "$pgbare" "$(rate "$n" "$pgbare")" "-"
        done
        # the store's own load path on the same files, one batch per file: merges by one
        # session (the path of later runs), appends by two sessions (a first run's default)
        for variant in "1 loader, merges|" "2 loaders, appends|--loaders 2 --append"; do
            label=${variant%%|*}
            flags=${variant#*|}
            fresh_db
            # shellcheck disable=SC2086 # flags are words
            measure store-pg "$build/bench/store_bench" --load $flags "$url" export/[A-Z]*.ndjson
            printf '%-10s %-34s %9s %8s %11s %9s  %s x bare COPY (text, jsonb)\n' "" \
                "PostgreSQL: store load ($label)" "$n" "$SECS" "$(rate "$n" "$SECS")" "$RSS" \
                "$(ratio "$(rate "$n" "$SECS")" "$(rate "$n" "$pgbare")")"
        done
        # the sync: 2 loaders appending (the default of a first run), one loader, and merges
        for variant in "2 loaders, appends|" "1 loader, appends|--loaders 1" \
            "2 loaders, merges (--full)|--full"; do
            label=${variant%%|*}
            flags=${variant#*|}
            fresh_db
            rm -rf "$work/pgwork"
            # shellcheck disable=SC2086 # flags are words
            measure sync-pg "$F" sync --store "$url" --work-dir "$work/pgwork" --json \
                --no-progress $flags
            got=$(node -e "console.log(JSON.parse(require('fs').readFileSync('$work/sync-pg.out','utf8').trim().split('\n').pop()).resources)")
            printf '%-10s %-34s %9s %8s %11s %9s  %s x download, %s x bare COPY (text, jsonb)\n' \
                "" "PostgreSQL sync: $label" "$got" "$SECS" "$(rate "$got" "$SECS")" "$RSS" \
                "$(ratio "$SECS" "$dl")" "$(ratio "$(rate "$got" "$SECS")" "$(rate "$n" "$pgbare")")"
        done
        (cd / && psql -q "$pg_url" -c "DROP DATABASE $db") >/dev/null
    fi
    rm -rf export
    kill "$sandbox_pid" && wait "$sandbox_pid" 2>/dev/null || true
    sandbox_pid=
done
echo "(ratios: the sync's time over the download's; the sync's rate over the bare loop's)"
