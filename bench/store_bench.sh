#!/usr/bin/env bash
# bench/store_bench.sh: NDJSON into the store (bench/store_bench.c), into SQLite and into a
# throwaway PostgreSQL server (scripts/pg-test-server.sh; skipped when PostgreSQL is not
# installed), each beside its limit measured in the same run: a bare prepared-INSERT loop into
# SQLite, a bare COPY into PostgreSQL. Nothing here fails on a timing.
#
#   bench/store_bench.sh BUILD_DIR [ROWS]      (default 1,000,000 rows; bench/run.sh runs it)
#   ROUNDS=N bench/store_bench.sh ...          the SQLite pair N times, alternating (default 3)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:?usage: bench/store_bench.sh BUILD_DIR [ROWS]}" && pwd)
rows=${2:-1000000}
BENCH=$build/bench/store_bench
[ -x "$BENCH" ] || { echo "store_bench: $BENCH is not built" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/tmp}/fhirsync-store-bench.XXXXXX")
pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/fhirsync-pg-bench.XXXXXX") # not inside $work: 0700
cleanup() {
    (cd / && "$root/scripts/pg-test-server.sh" stop "$pg_dir" >/dev/null 2>&1) || true
    rm -rf "$work"
}
trap cleanup EXIT
pg_url=$(cd / && "$root/scripts/pg-test-server.sh" start "$pg_dir" 2>/dev/null) || pg_url=
[ -n "$pg_url" ] || echo "(PostgreSQL is not available: SQLite only)"
# shellcheck disable=SC2086 # an empty URL is no argument
FHIRSYNC_BENCH_ROUNDS=${ROUNDS:-3} FHIRSYNC_TEST_TMP=$work "$BENCH" "$rows" $pg_url
