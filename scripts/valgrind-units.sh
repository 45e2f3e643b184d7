#!/usr/bin/env bash
# Runs every unit-test executable of a (non-sanitizer) build under valgrind memcheck: zero errors
# and no definite or indirect leaks, or it fails (FHIRSYNC_TEST_QUICK=1 skips what is only slow
# under valgrind: RSA key generation in every step of an allocation walk).
# Usage: scripts/valgrind-units.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: valgrind-units.sh BUILD_DIR}
# what ctest gives the unit tests (tests/CMakeLists.txt): the sources (views/, tests/data/) and a
# scratch directory
FHIRSYNC_SOURCE_DIR=$(cd "$(dirname "$0")/.." && pwd)
FHIRSYNC_TEST_TMP=$(cd "$build" && pwd)/test-tmp
export FHIRSYNC_SOURCE_DIR FHIRSYNC_TEST_TMP
mkdir -p "$FHIRSYNC_TEST_TMP"
fail=0
count=0
for t in "$build"/tests/test_*; do
    [ -x "$t" ] || continue
    count=$((count + 1))
    if FHIRSYNC_TEST_QUICK=1 valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
            --show-leak-kinds=definite,indirect "$t" >"$build/valgrind-$(basename "$t").log" 2>&1; then
        echo "valgrind: $(basename "$t") clean"
    else
        echo "valgrind: $(basename "$t") FAILED (see $build/valgrind-$(basename "$t").log)"
        tail -30 "$build/valgrind-$(basename "$t").log"
        fail=1
    fi
done
echo "valgrind: $count unit test programs checked"
[ "$count" -gt 0 ] || { echo "valgrind: no unit tests found"; exit 1; }
exit $fail
