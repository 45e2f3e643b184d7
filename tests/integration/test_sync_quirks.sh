#!/usr/bin/env bash
# integration/test_sync_quirks.sh: the store equals the server against servers that bend the
# spec. For each sandbox quirk mode (docs/sandbox.md) that a sync must survive, on SQLite and on
# PostgreSQL: a full sync while the sandbox changes data during the export, an incremental sync
# with changes during the export, then a last sync; the store must then hold exactly what the
# server holds (per resource: type, id, versionId, SHA-256 of the bytes), compared with the
# sandbox's state dump. Servers that never list deletions are made equal by the periodic full
# export (reconcile_every), and say so. Also: the share guard (a server that suddenly returns far
# fewer resources does not wipe the mirror), and unrequested types (stored, warned, never
# reconciled).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/sync_lib.sh"
start_pg quirks
cd "$TMP"

# pg_store NAME: a fresh PostgreSQL database, as a URL
pg_store() {
    (cd / && psql -q "$PG_URL" -c "CREATE DATABASE $1" >/dev/null)
    printf '%s' "$PG_URL" | sed "s|/fhirsync_test|/$1|"
}

# round QUIRK ENGINE [last-sync-options...]: full + incremental syncs with mutations during the
# exports, then a last sync with the given options; the store must equal the server
round() {
    local quirk=$1 engine=$2
    shift 2
    local name store
    ROUNDS=$((${ROUNDS:-0} + 1))
    name=q${ROUNDS}_$(printf '%s' "$quirk" | tr -c 'a-z0-9' '_')_$engine
    local want=${ROUND_EXIT:-0}
    start_sandbox --profile "$name" --patients 12 --resources-per-file 200 --quirk "$quirk"
    [ -z "${ROUND_FAULT:-}" ] || add_fault "$ROUND_FAULT"
    if [ "$engine" = pg ]; then store=$(pg_store "$name"); else store=$TMP/$name.db; fi
    arm_mutation 0.1 0.05
    expect_exit "$want" "$quirk/$engine: full sync, data changed during the export" -- \
        "$F" sync --store "$store" --no-progress
    arm_mutation 0.1 0.05
    expect_exit "$want" "$quirk/$engine: incremental sync, data changed during the export" -- \
        "$F" sync --store "$store" --no-progress
    expect_exit "$want" "$quirk/$engine: the next sync" -- "$F" sync --store "$store" "$@"
    LAST_OUT=$OUT$ERR
    store_equals_server "$store" "$quirk/$engine: store = server"
    stop_sandbox
}

for engine in sqlite pg; do
    # a transactionTime set when the export finished: the watermark is the kick-off's
    round late-transaction-time "$engine" --no-progress
    # an export whose deleted list is always empty: the periodic full export reconciles
    round no-deleted "$engine" --reconcile
    expect_match "$LAST_OUT" "likely leaves .deleted. empty" \
        "no-deleted/$engine: the run says the server does not list deletions"
    # both at once
    round late-transaction-time "$engine" --reconcile
    round extra-types "$engine" --no-progress
    round capability-fewer-types "$engine" --no-progress
    round retry-after-epoch "$engine" --no-progress
    round no-progress-headers "$engine" --no-progress
    round request-without-query "$engine" --no-progress
    round ignore-range "$engine" --no-progress
    round echo-token-in-errors "$engine" --no-progress
    round retry-after-zero=3 "$engine" --no-progress
    SANDBOX_SCOPE="system/*.read system/*.*" round export-needs-write-scope "$engine" --no-progress
    # slow downloads that still go faster than the stall rule's floor
    round trickle=200000 "$engine" --no-progress
    # 429s with an HTML body on status polls: retried, and the data arrives
    ROUND_FAULT='{"fault":"429","on":"status","count":2,"retry_after":1}' \
        round html-429 "$engine" --no-progress
    # a manifest whose counts disagree with its files: every run ends partial (exit 10), the data
    # is stored all the same
    ROUND_EXIT=10 round count-mismatch "$engine" --no-progress
done

# ---- a file the server always cuts at the same place: the sync ends, bounded, and names it ---------
start_sandbox --profile cut --patients 3 --quirk truncate-same-place
printf 'max_retries = 2\nretry_cap = 1\n' >>"$SANDBOX_DIR/fhirsync.ini"
T0=$SECONDS
expect_exit 9 "a file cut at the same place on every attempt: the sync fails (network, exit 9)" -- \
    timeout -k 5 120 "$F" sync --store "$TMP/cut.db" --no-progress
[ $((SECONDS - T0)) -lt 60 ] && ok "it ended within its retry budget ($((SECONDS - T0)) s)" ||
    not_ok "it took $((SECONDS - T0)) s"
expect_match "$ERR" "could not be downloaded" "the message names the file that could not be had"
expect_match "$(sql "$TMP/cut.db" 'SELECT count(*) FROM sync_state WHERE watermark IS NOT NULL')" \
    '^0$' "the watermark did not move"
stop_sandbox

# ---- kick-off refused for read scopes: a clear failure, nothing stored ----------------------------
start_sandbox --profile writescope --patients 2 --quirk export-needs-write-scope
expect_exit 5 "a server that wants a write scope to kick off: authorization refused (exit 5)" -- \
    "$F" sync --store "$TMP/writescope.db" --no-progress
stop_sandbox

# ---- the default asks for every type; CapabilityStatement does not trim it ------------------------
start_sandbox --profile alltypes --patients 6 --quirk capability-fewer-types
expect_exit 0 "a default sync" -- "$F" sync --store "$TMP/alltypes.db" --json
expect_match "$(sql "$TMP/alltypes.db" 'SELECT count(*) FROM "Immunization"')" '^[1-9]' \
    "Immunization is synced although the CapabilityStatement omits it"
store_equals_server "$TMP/alltypes.db" "every type the server has is stored"
RUN=$(tail -1 <<<"$OUT")
PATIENTS=$(sql "$TMP/alltypes.db" 'SELECT count(*) FROM "Patient"')
expect_match "$(json_field "$RUN" 'j.types.Patient.rows + " " + j.types.Patient.new')" \
    "^$PATIENTS $PATIENTS\$" "the summary says what the store changed (rows, new) beside what was received"
OBS=$(sql "$TMP/alltypes.db" 'SELECT count(*) FROM "Observation"')
mutate 0 0.2 >/dev/null
expect_exit 0 "an increment with deletions" -- "$F" sync --store "$TMP/alltypes.db" --json
RUN=$(tail -1 <<<"$OUT")
GONE=$((OBS - $(sql "$TMP/alltypes.db" 'SELECT count(*) FROM "Observation"')))
[ "$GONE" -gt 0 ] && ok "the increment deleted $GONE Observation rows" || not_ok "nothing deleted"
expect_match "$(json_field "$RUN" 'j.types.Observation.deleted + " " + j.types.Observation.new')" \
    "^$GONE 0\$" "deleted counts the rows that went, new counts none"
stop_sandbox

# ---- unrequested types: stored, warned, never reconciled -----------------------------------------
start_sandbox --profile extra --patients 6 --quirk extra-types
echo "types = Patient,Encounter" >>"$SANDBOX_DIR/fhirsync.ini"
expect_exit 0 "a sync asking for Patient and Encounter" -- "$F" sync --store "$TMP/extra.db"
expect_match "$ERR" "returned Practitioner, which was not asked for" "the extra type is named"
PRAC=$(sql "$TMP/extra.db" 'SELECT count(*) FROM "Practitioner"')
[ "${PRAC:-0}" -gt 0 ] && ok "the extra type is stored ($PRAC)" || not_ok "no Practitioner stored"
expect_exit 0 "a reconciling sync" -- "$F" sync --store "$TMP/extra.db" --reconcile --no-progress
expect_match "$(sql "$TMP/extra.db" "SELECT count(*) FROM deletions WHERE resource_type = 'Practitioner'")" \
    '^0$' "the extra type is never reconciled"
stop_sandbox

# ---- doctor says when a server never lists deletions -----------------------------------------------
start_sandbox --profile nodel --patients 6 --quirk no-deleted
echo "store = $TMP/nodel.db" >>"$SANDBOX_DIR/fhirsync.ini"
expect_exit 0 "a full sync (no-deleted)" -- "$F" sync --no-progress
mutate 0 0.1 >/dev/null
expect_exit 0 "an increment: the server lists nothing" -- "$F" sync --no-progress
expect_exit 0 "a reconciling sync finds the deletions" -- "$F" sync --reconcile --no-progress
expect_exit 0 "doctor" -- "$F" doctor
expect_match "$OUT" "never listed a deletion, but full exports found [1-9][0-9]* resource" \
    "doctor says the server never lists deletions"
expect_match "$OUT" "reconcile_every" "and names the setting that helps"
stop_sandbox

# ---- a POSTed Parameters body ignored: the export says so ----------------------------------------
start_sandbox --profile postbody --patients 3 --quirk ignore-post-body
expect_exit 0 "an export POSTing _type=Patient to a server that ignores the body" -- \
    "$F" export --post --type Patient --level system --out "$TMP/postbody-export"
expect_match "$ERR" "may have ignored the POSTed Parameters body" "the export says the body was ignored"
stop_sandbox

# ---- the share guard: a server that returns far fewer resources does not wipe the mirror ----------
start_sandbox --profile guard --patients 10
expect_exit 0 "a full sync" -- "$F" sync --store "$TMP/guard.db" --no-progress
BEFORE=$(sql "$TMP/guard.db" 'SELECT count(*) FROM "Observation"')
mutate 0 0.7 >/dev/null
expect_exit 10 "a reconciliation that would delete 70% ends partial (exit 10)" -- \
    "$F" sync --store "$TMP/guard.db" --full --no-progress
expect_match "$ERR" "reconciliation of Observation refused" "the refused type is named"
expect_match "$(sql "$TMP/guard.db" 'SELECT count(*) FROM "Observation"')" "^$BEFORE\$" \
    "nothing of it was deleted"
expect_exit 0 "--allow-mass-delete lets it through" -- \
    "$F" sync --store "$TMP/guard.db" --full --allow-mass-delete --no-progress
store_equals_server "$TMP/guard.db" "after the forced reconciliation"
expect_match "$(sql "$TMP/guard.db" "SELECT count(*) FROM deletions WHERE reason = 'full-export'")" \
    '^[1-9]' "the deletions are recorded with their reason"
stop_sandbox

finish
