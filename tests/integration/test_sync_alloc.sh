#!/usr/bin/env bash
# integration/test_sync_alloc.sh: the allocation-failure walk over a small sync (issue 7). Starts
# the sandbox (one patient, three types), registers a client, and runs test_sync with
# FHIRSYNC_SYNC_WALK_* set: its walk makes the Nth allocation of the library fail for N over the
# whole sync (discovery and token from the cache, kick-off, polls, manifest, downloads, loading
# into a fresh SQLite file, the final commit) and checks that each run ends in a clean error (no
# crash; leaks are caught by the ASan build and valgrind). FHIRSYNC_SYNC_WALK_STEPS bounds the
# number of runs (here 250: every allocation of the first 150, then evenly spaced).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/sync_lib.sh"
cd "$TMP"
start_sandbox --profile walk --patients 1
export FHIRSYNC_SYNC_WALK_BASE_URL=$BASE_URL
export FHIRSYNC_SYNC_WALK_CLIENT_ID=sync-test
export FHIRSYNC_SYNC_WALK_KEY=$TMP/keys/sync.key.pem
export FHIRSYNC_SYNC_WALK_TYPES=Patient,Observation,Condition
export FHIRSYNC_SYNC_WALK_STEPS=${FHIRSYNC_SYNC_WALK_STEPS:-250}
if "$TEST_SYNC" >"$TMP/walk.log" 2>&1; then
    ok "sync allocation walk: $(grep 'injected failures' "$TMP/walk.log" | sed 's/^sync walk: //')"
else
    not_ok "sync allocation walk"
    tail -40 "$TMP/walk.log"
fi
grep -E 'sync walk: a small sync' "$TMP/walk.log" | sed 's/^/# /'
# the same walk over a crawl (searches instead of an export)
export FHIRSYNC_SYNC_WALK_MODE=crawl FHIRSYNC_SYNC_WALK_TYPES=Patient,Condition
if "$TEST_SYNC" >"$TMP/walk-crawl.log" 2>&1; then
    ok "crawl allocation walk: $(grep 'injected failures' "$TMP/walk-crawl.log" | sed 's/^sync walk: //')"
else
    not_ok "crawl allocation walk"
    tail -40 "$TMP/walk-crawl.log"
fi
finish
