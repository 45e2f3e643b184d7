#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what is missing, builds with
# -Wall -Wextra -Werror, runs every test (unit, integration against the sandbox, interop with the
# npm jose and oidc-provider peers, PostgreSQL, fuzz corpus replays), then builds again with
# AddressSanitizer + UndefinedBehaviorSanitizer and runs everything again, then runs the unit tests
# under valgrind memcheck. Exits non-zero on the first failing stage.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

jobs=$(nproc 2>/dev/null || echo 2)
stage() { printf '\n=== %s ===\n' "$*"; }

stage "build (release, -Werror)"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFHIRSYNC_WERROR=ON >/dev/null
cmake --build build/release -j"$jobs"

stage "tests (release)"
ctest --test-dir build/release --output-on-failure -j"$jobs"

stage "build (AddressSanitizer + UndefinedBehaviorSanitizer)"
cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DFHIRSYNC_WERROR=ON -DFHIRSYNC_SANITIZE=ON >/dev/null
cmake --build build/asan -j"$jobs"

stage "tests (ASan + UBSan)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build/asan --output-on-failure -j"$jobs"

stage "valgrind memcheck (unit tests, and the CLI on a small flow)"
scripts/valgrind-units.sh build/release
scripts/valgrind-cli.sh build/release

stage "all stages passed"
