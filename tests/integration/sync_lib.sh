# tests/integration/sync_lib.sh: helpers for the test_sync_*.sh scripts, sourced after lib.sh
# (whose `start_sandbox --profile NAME` starts the sandbox with a registered client and an
# endpoint profile): read and clear the sandbox's request log, mutate its data, dump a store in a
# comparable form, and bounded waits. Sourced, not run.

: "${FHIRSYNC_SANDBOX_BIN:?FHIRSYNC_SANDBOX_BIN must point at fhirsync-sandbox}"
: "${FHIRSYNC_BUILD_DIR:?}"
TEST_SYNC=$FHIRSYNC_BUILD_DIR/tests/test_sync
F=$FHIRSYNC_BIN

# arm_mutation UPDATE DELETE: the next export the sandbox runs changes that share of its data
# right after its snapshot, while it runs (docs/sandbox.md, "Mutations during an export")
arm_mutation() {
    curl -sS --fail-with-body -X POST -H 'Content-Type: application/json' \
        --data "{\"update\":$1,\"delete\":$2,\"when\":\"export-running\"}" \
        "$ADMIN_URL/mutate" >/dev/null
}

# server_state: what the sandbox holds now, in dump's form (type, id, versionId, sha256 of the
# exact bytes it serves), sorted bytewise
server_state() {
    curl -sS --fail-with-body "$ADMIN_URL/state" |
        node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{for(const l of s.split("\n")){
            if(!l.trim())continue;const r=JSON.parse(l);
            console.log([r.resourceType,r.id,r.versionId??"-",r.sha256].join("\t"));}})' |
        LC_ALL=C sort
}

# The types a Patient- or Group-level export does not cover (outside the Patient compartment):
# such a mirror is compared without them (docs/sync.md, "Reconciliation", scope).
OUT_OF_COMPARTMENT='^(Group|Organization|Practitioner|PractitionerRole|Location|Medication|HealthcareService|Endpoint)\b'

# store_equals_server STORE WHAT [system]: the store holds exactly the server's resources (type,
# id, versionId and the SHA-256 of the bytes), no more, no fewer; of the Patient compartment's
# types unless "system" (a system-level export's mirror)
store_equals_server() {
    local skip=$OUT_OF_COMPARTMENT
    [ "${3:-}" = system ] && skip='^deleted'
    { dump "$1" | grep -v '^deleted' | grep -Ev "$skip" | LC_ALL=C sort >"$TMP/state.store"; } &&
        { server_state | grep -Ev "$skip" >"$TMP/state.server"; } ||
        { not_ok "$2: dump failed"; return; }
    if cmp -s "$TMP/state.store" "$TMP/state.server" && [ -s "$TMP/state.server" ]; then
        ok "$2 (store = server: $(wc -l <"$TMP/state.server") resources)"
    else
        not_ok "$2: the store differs from the server ($(wc -l <"$TMP/state.store") vs $(wc -l <"$TMP/state.server") resources)"
        diff "$TMP/state.store" "$TMP/state.server" | head -10 || true
    fi
    views_equal_store "$1" "$2"
}

# views_equal_store STORE WHAT: every view registered in the store (the shipped ones by default)
# holds exactly the rows its ViewDefinition gives over the stored resources
views_equal_store() {
    local out
    if out=$("$FHIRSYNC_BUILD_DIR/tests/test_store_views" --check "$1" 2>&1); then
        ok "$2: views = store ($(printf '%s' "$out" | tail -1 | cut -d: -f1))"
    else
        not_ok "$2: a view's table differs from its evaluation over the store"
        printf '%s\n' "$out" | head -12
    fi
}

# mutate UPDATE DELETE: change the sandbox's data (fractions); prints the mutation time
mutate() {
    curl -sS --fail-with-body -X POST -H 'Content-Type: application/json' \
        --data "{\"update\":$1,\"delete\":$2}" "$ADMIN_URL/mutate" |
        node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).time))'
}

# add_fault JSON / clear_faults
add_fault() {
    curl -sS --fail-with-body -X POST -H 'Content-Type: application/json' --data "$1" \
        "$ADMIN_URL/faults" >/dev/null
}
clear_faults() { curl -sS -X DELETE "$ADMIN_URL/faults" >/dev/null; }

# requests: the request log (NDJSON); clear_requests empties it
requests() { curl -sS "$ADMIN_URL/requests"; }
clear_requests() { curl -sS -X DELETE "$ADMIN_URL/requests" >/dev/null; }

# dump STORE: per type, id, versionId, sha256 of the raw bytes; then deletions (sorted)
dump() { "$TEST_SYNC" --dump "$1"; }
# sql STORE QUERY: one read-only query, rows tab-separated
sql() { "$TEST_SYNC" --sql "$1" "$2"; }

# same_dump A B DESCRIPTION [all]: the two stores hold exactly the same resources (with "all":
# and the same deletion records)
same_dump() {
    local keep='^deleted'
    [ "${4:-}" = all ] && keep='^$'
    { dump "$1" | grep -v "$keep" >"$TMP/dump.a"; } && { dump "$2" | grep -v "$keep" >"$TMP/dump.b"; } ||
        { not_ok "$3: dump failed"; return; }
    if cmp -s "$TMP/dump.a" "$TMP/dump.b" && [ -s "$TMP/dump.a" ]; then
        ok "$3 ($(grep -vc '^deleted' "$TMP/dump.a") resources, $(grep -c '^deleted' "$TMP/dump.a") deletions)"
    else
        not_ok "$3: the stores differ"
        diff "$TMP/dump.a" "$TMP/dump.b" | head -20
    fi
}

# json_field TEXT EXPR: a field of a JSON text (EXPR on `j`)
json_field() {
    node -e "const j=JSON.parse(process.argv[1]); const v=($2); \
             console.log(typeof v==='string'?v:JSON.stringify(v))" "$1"
}

# wait_for COMMAND... : poll a condition every 0.1 s for up to 30 s
wait_for() {
    local i=0
    until "$@"; do
        i=$((i + 1))
        [ "$i" -le 300 ] || return 1
        sleep 0.1
    done
}

# The bulk watermark rule (docs/sync.md): the earlier of the manifest's transactionTime and the
# kick-off on the server's clock minus the margin (300 s by default). The sandbox stamps its
# transactionTime at the kick-off, so the watermark lies within the margin (and a second of Date
# rounding) before it. Usage: expect_bulk_watermark WATERMARK TRANSACTION_TIME WHAT [MARGIN]
expect_bulk_watermark() {
    local margin=${4:-300} wm tt
    wm=$(date -u -d "$1" +%s 2>/dev/null) && tt=$(date -u -d "$2" +%s 2>/dev/null) &&
        [ "$wm" -le "$tt" ] && [ "$wm" -ge $((tt - margin - 2)) ] && ok "$3" ||
        not_ok "$3: watermark '$1', transactionTime '$2'"
}
