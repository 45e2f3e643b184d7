#!/usr/bin/env bash
# Run one libFuzzer target for N minutes (default 5) over its seed corpus, with its dictionary.
# usage: scripts/fuzz.sh TARGET [MINUTES]      e.g. scripts/fuzz.sh config 10
#        scripts/fuzz.sh --list
# New inputs go to build/fuzz/tests/fuzz/corpus-TARGET (the committed seeds stay untouched); a crash leaves
# crash-* in build/fuzz/tests/fuzz: add it to tests/fuzz/corpus/TARGET/ once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--list" ] || [ -z "${1:-}" ]; then
    ls tests/fuzz/fuzz_*.c | sed 's|.*/fuzz_||; s|\.c$||'
    exit 0
fi
target=$1
minutes=${2:-5}
scripts/install-deps.sh >/dev/null
CC=clang cmake -S . -B build/fuzz -DFHIRSYNC_FUZZ=ON -DFHIRSYNC_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/fuzz -j"$(nproc)" --target "fuzz_$target"
out=build/fuzz/tests/fuzz
mkdir -p "$out/corpus-$target"
dict=()
for d in tests/fuzz/dict/"$target".dict; do
    [ -f "$d" ] && { dict=(-dict="$d"); break; }
done
dict=("${dict[@]/#-dict=/-dict=$PWD/}")
seeds=$PWD/tests/fuzz/corpus/$target
cd "$out"
./"fuzz_$target" "corpus-$target" "$seeds" "${dict[@]}" \
    -max_total_time=$((minutes * 60)) -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1
