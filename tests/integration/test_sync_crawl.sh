#!/usr/bin/env bash
# integration/test_sync_crawl.sh: `fhirsync sync` in crawl mode (paged REST searches) against the
# sandbox: a first crawl is full and reconciles; an incremental crawl searches with
# _lastUpdated=gt<watermark> and loads exactly the changed resources but cannot see deletions; a
# reconciliation crawl deletes what the server no longer has (with records); the result equals
# a fresh full crawl; per-patient searches (Epic's way) give the same data; every Nth crawl
# reconciles on its own.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/sync_lib.sh"
cd "$TMP"
start_sandbox --profile crawler --patients 20
DB=$TMP/crawl.db
crawl() { "$F" sync --store "$DB" --mode crawl --json --no-progress "$@"; }

expect_exit 0 "first crawl" -- crawl
RUN1=$(tail -1 <<<"$OUT")
expect_match "$(json_field "$RUN1" j.mode)" '^crawl-reconcile$' "a first crawl is a full one"
[ "$(json_field "$RUN1" j.resources)" -gt 1000 ] && ok "it stored $(json_field "$RUN1" j.resources) resources" ||
    not_ok "first crawl: $RUN1"
expect_match "$(json_field "$RUN1" j.types)" 'Organization' "non-compartment types are crawled too"
expect_match "$ERR" "the server also has [A-Za-z,]*Group.*which this mirror leaves out" \
    "the crawl says which of the server's types it leaves out"
START=$(date -u +%s)
WM=$(json_field "$RUN1" j.watermark)
WM_S=$(date -u -d "$WM" +%s)
[ $((START - WM_S)) -ge 300 ] && [ $((START - WM_S)) -le 330 ] &&
    ok "the watermark is the crawl's start minus the 300 s margin ($WM)" ||
    not_ok "watermark $WM vs now $(date -u +%FT%TZ)"

MUTATED=$(mutate 0.1 0.05)
clear_requests
expect_exit 0 "incremental crawl" -- crawl
RUN2=$(tail -1 <<<"$OUT")
expect_match "$(json_field "$RUN2" j.mode)" '^crawl$' "an incremental crawl"
SEARCHES=$(requests | grep -c '_lastUpdated=gt' || true)
[ "$SEARCHES" -gt 5 ] && ok "$SEARCHES searches carried _lastUpdated=gt<watermark>" ||
    not_ok "searches without _lastUpdated: $(requests | head -3)"
expect_match "$(requests | grep -o '_lastUpdated=gt[^&"]*' | sort -u | head -1)" \
    "_lastUpdated=gt${WM//:/%3A}|_lastUpdated=gt$WM" "the filter is the watermark"
CHANGED=0
for t in $(dump "$DB" | grep -v '^deleted' | cut -f1 | sort -u); do
    n=$(sql "$DB" "SELECT count(*) FROM \"$t\" WHERE last_updated >= '${MUTATED%Z}'")
    CHANGED=$((CHANGED + n))
done
expect_match "$(json_field "$RUN2" j.resources)" "^$CHANGED\$" \
    "exactly the $CHANGED changed resources were loaded"
expect_match "$(json_field "$RUN2" j.deleted)" '^0$' "an incremental crawl cannot see deletions"

expect_exit 0 "a reconciliation crawl" -- crawl --reconcile
RUN3=$(tail -1 <<<"$OUT")
expect_match "$(json_field "$RUN3" j.mode)" '^crawl-reconcile$' "--reconcile: a full crawl"
DELETED=$(json_field "$RUN3" j.deleted)
[ "$DELETED" -gt 0 ] && ok "it deleted $DELETED resources gone from the server" ||
    not_ok "no deletion found"
expect_match "$(sql "$DB" "SELECT count(*) FROM deletions WHERE run_id = $(json_field "$RUN3" j.run_id)")" \
    "^$DELETED\$" "each with a record"
expect_exit 0 "a fresh full crawl" -- "$F" sync --store "$TMP/fresh.db" --mode crawl --no-progress
same_dump "$DB" "$TMP/fresh.db" "full + incremental + reconciliation == a fresh full crawl"

clear_requests
expect_exit 0 "a per-patient crawl (Epic's way)" -- "$F" sync --store "$TMP/pp.db" --mode crawl \
    --per-patient yes --no-progress
PP=$(requests | grep -c 'patient=' || true)
[ "$PP" -ge 20 ] && ok "$PP searches were per patient" || not_ok "only $PP per-patient searches"
expect_no_match "$(requests | grep 'Organization?' | head -1)" 'patient=' \
    "Organization is searched without patient="
same_dump "$TMP/pp.db" "$TMP/fresh.db" "per-patient crawl == a plain crawl"

# every 2nd crawl reconciles: reconcile, crawl, reconcile, crawl
for i in 1 2 3 4; do
    expect_exit 0 "crawl $i with --reconcile-every 2" -- "$F" sync --store "$TMP/every.db" \
        --mode crawl --reconcile-every 2 --types Patient --no-progress
done
expect_match "$(sql "$TMP/every.db" "SELECT group_concat(mode, ' ') FROM (SELECT mode FROM sync_runs ORDER BY id)")" \
    '^crawl-reconcile crawl crawl-reconcile crawl$' "every 2nd crawl reconciles"
finish
