#!/usr/bin/env bash
# The main job, end to end, on one machine with no manual step: installs what is missing, builds,
# starts the sandbox EHR with generated data, makes a key, registers it with the sandbox, checks
# the chain with `fhirsync doctor`, gets a token, syncs the sandbox into ./fhirsync.db (a summary
# table: resources per type, time taken), changes some data in the sandbox, runs an incremental
# sync that picks up only the changes and the deletions, prints what happened (and queries two of
# the SQL on FHIR views the sync keeps as tables), and stops the sandbox.
# Environment: PATIENTS (default 100), DEMO_DIR (default ./demo).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scripts/install-deps.sh

build=build/release
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target fhirsync_cli fhirsync-sandbox >/dev/null
F=$root/$build/fhirsync
SANDBOX=$root/$build/fhirsync-sandbox
patients=${PATIENTS:-100}
demo=${DEMO_DIR:-$root/demo}
mkdir -p "$demo"
chmod 700 "$demo"
cd "$demo"

step() { printf '\n== %s\n' "$*"; }

step "starting the sandbox EHR ($patients patients)"
rm -f sandbox.json
"$SANDBOX" --patients "$patients" --ready-file sandbox.json >sandbox.log 2>&1 &
sandbox_pid=$!
trap 'kill $sandbox_pid 2>/dev/null; wait $sandbox_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -s sandbox.json ] && break; sleep 0.1; done
[ -s sandbox.json ] || { echo "the sandbox did not start; see $demo/sandbox.log"; exit 1; }
field() { node -e "console.log(JSON.parse(require('fs').readFileSync('sandbox.json','utf8'))['$1'])"; }
base_url=$(field base_url)
register_url=$(field register_url)
admin_url=$(field admin_url)
echo "FHIR base: $base_url"

step "making a signing key (RS384)"
if [ ! -f keys/demo.key.pem ]; then
    "$F" keygen --alg RS384 --out keys --name demo
else
    echo "keys/demo.key.pem exists: reusing it"
fi

step "registering the public JWKS with the sandbox (what a vendor portal does)"
printf '{"client_id":"fhirsync-demo","scope":"system/*.read","jwks":%s}' "$(cat keys/jwks.json)" \
    | curl -sS --fail-with-body -X POST -H 'Content-Type: application/json' --data-binary @- \
        "$register_url" >/dev/null
echo "client fhirsync-demo registered"

cat >fhirsync.ini <<INI
# written by scripts/demo.sh: the sandbox as an endpoint profile
[endpoint sandbox]
base_url  = $base_url
client_id = fhirsync-demo
key_file  = keys/demo.key.pem
alg       = RS384
scope     = system/*.read
store     = $root/fhirsync.db
registered_jwks = keys/jwks.json
INI
export FHIRSYNC_CONFIG=$demo/fhirsync.ini

step "fhirsync doctor"
"$F" doctor

step "fhirsync token"
"$F" token

db=$root/fhirsync.db
step "fhirsync sync: the first run copies everything into ./fhirsync.db"
rm -rf "$db" "$db-wal" "$db-shm" "$db".lock.* "$db.work"
"$F" sync

step "changing data in the sandbox: 10% of the resources updated, 2% deleted"
curl -sS --fail-with-body -X POST -H 'Content-Type: application/json' \
    --data '{"update":0.10,"delete":0.02}' "$admin_url/mutate"
echo

step "fhirsync sync again: only the changes and the deletions (the _since is the watermark)"
"$F" sync

step "what is in ./fhirsync.db"
if "$F" --help | grep -q '^  query '; then
    "$F" query counts --store "$db" || true
    "$F" query runs --store "$db" || true
elif command -v sqlite3 >/dev/null; then
    sqlite3 -header -column "$db" \
        "SELECT id, mode, status, since, transaction_time, resources, deletions FROM sync_runs"
fi

step "the SQL on FHIR views the sync keeps current (views/: US Core ViewDefinitions)"
"$F" view list --store "$db"
echo
echo "blood pressure readings, both components, from the vital_signs view:"
"$F" query sql --store "$db" \
    "SELECT patient_id, effective, component_code, component_value, component_unit
       FROM vital_signs WHERE code = '85354-9' ORDER BY effective DESC, component_code LIMIT 6"
echo
echo "active medications per patient, from the active_medications view:"
"$F" query sql --store "$db" \
    "SELECT p.family, p.given, count(*) AS active_medications
       FROM active_medications m JOIN patient_demographics p ON p.id = m.patient_id
      GROUP BY p.id, p.family, p.given ORDER BY active_medications DESC, p.family LIMIT 5"
echo "the database: $db (SQLite; open it with any SQLite tool; see docs/store.md, docs/views.md and docs/sync.md)"
step "done; stopping the sandbox"
