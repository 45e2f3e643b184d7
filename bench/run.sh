#!/usr/bin/env bash
# bench/run.sh: every benchmark, in one run on this machine, from a Release build. Each part prints
# its figures beside a baseline measured in the same run (curl on the same URLs, a bare SQLite
# insert loop, a plain GET, the disk), because these machines are noisy: compare ratios, not
# absolute numbers across runs. Nothing here fails on a timing. The full output goes to
# build/bench/results.txt; a summary of the ratio lines closes the run.
# usage: bench/run.sh [--quick|--scale]   (--quick: smaller sizes, for a smoke run; --scale: only
#        the scale benchmarks at full size, 500 practices and one big practice, about an hour)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scripts/install-deps.sh
quick=${1:-}
build=$root/build/bench
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DFHIRSYNC_TESTS=ON >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null
out=$build/results.txt
: >"$out"
export FHIRSYNC_SANDBOX_BIN=$build/fhirsync-sandbox

part() { # TITLE command...
    local title=$1
    shift
    printf '\n=== %s\n' "$title" | tee -a "$out"
    if ! "$@" 2>&1 | tee -a "$out"; then
        echo "(this part failed; see above)" | tee -a "$out"
    fi
}

{
    echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "date: $(date -u +%FT%TZ)   load: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$out"

if [ "$quick" = "--scale" ]; then
    part "500 practices, workers, faults" bench/scale_bench.sh "$build"
    part "one big practice into SQLite and PostgreSQL" env PATIENTS="${BIG_PATIENTS:-2000 20000}" \
        bench/big_practice_bench.sh "$build"
elif [ "$quick" = "--quick" ]; then
    part "signing and token flow" bench/auth_bench.sh "$build" 50
    part "sandbox data generator" "$build/tests/test_sandbox_gen" --bench
    part "REST paging vs curl" bench/rest_bench.sh "$build" 50 100 1
    part "bulk download vs curl, peak memory" bench/bulk_bench.sh "$build" 4 200 1000
    part "large export manifests" "$build/bench/manifest_bench" --no-downloads 20000
    [ -x bench/store_bench.sh ] && part "NDJSON into SQLite / PostgreSQL" bench/store_bench.sh "$build" 100000
    [ -x bench/sync_bench.sh ] && part "sync end to end" bench/sync_bench.sh "$build" 100
    [ -x bench/view_bench.sh ] && part "SQL on FHIR views" env PATIENTS=100 ROUNDS=1 \
        bench/view_bench.sh "$build"
    part "a shaped link: gzip, parallel, keep-alive vs curl" bench/net_bench.sh "$build" 100 1
    part "practices, workers, faults (smoke)" env PRACTICES=3 PATIENTS=60 bench/scale_bench.sh "$build"
    part "one big practice (smoke)" env PATIENTS=200 bench/big_practice_bench.sh "$build"
else
    part "signing and token flow" bench/auth_bench.sh "$build" 300
    part "sandbox data generator" "$build/tests/test_sandbox_gen" --bench
    part "sandbox serving" bench/sandbox_bench.sh 10000
    part "REST paging vs curl" bench/rest_bench.sh "$build"
    part "bulk download vs curl, peak memory" bench/bulk_bench.sh "$build" 4
    part "large export manifests (without the minutes of 160k downloads)" \
        "$build/bench/manifest_bench" --no-downloads
    [ -x bench/store_bench.sh ] && part "NDJSON into SQLite / PostgreSQL" bench/store_bench.sh "$build"
    [ -x bench/sync_bench.sh ] && part "sync end to end" bench/sync_bench.sh "$build"
    [ -x bench/view_bench.sh ] && part "SQL on FHIR views" bench/view_bench.sh "$build"
    part "a shaped link (50 Mbit/s, 40 ms): gzip, parallel, keep-alive vs curl" \
        bench/net_bench.sh "$build"
fi

printf '\n=== summary (lines with a ratio or a target)\n'
grep -iE 'ratio|target|BENCH \||x curl|/curl|worth|x plain sync|x one big|bound|incremental after' "$out" || true
echo "full output: $out"
