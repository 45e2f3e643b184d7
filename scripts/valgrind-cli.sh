#!/usr/bin/env bash
# valgrind memcheck over the fhirsync command on a small flow against the sandbox: keygen, jwks,
# token, doctor, get, and (when built) export, sync and query. Zero errors and no definite or
# indirect leaks, or it fails. Usage: scripts/valgrind-cli.sh BUILD_DIR   (a non-sanitizer build)
set -euo pipefail
build=$(cd "${1:?usage: valgrind-cli.sh BUILD_DIR}" && pwd)
F=$build/fhirsync
work=$(mktemp -d /tmp/fhirsync-vg.XXXXXX)
sb_pid=""
cleanup() { [ -n "$sb_pid" ] && kill "$sb_pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
json() { node -e "const j=JSON.parse(require('fs').readFileSync(process.argv[1],'utf8')); console.log($2)" "$1"; }

"$build/fhirsync-sandbox" --port 0 --ready-file ready.json --patients 5 >sandbox.log 2>&1 &
sb_pid=$!
for _ in $(seq 1 100); do [ -s ready.json ] && break; sleep 0.1; done
[ -s ready.json ] || { echo "valgrind-cli: the sandbox did not start"; exit 1; }

fail=0
count=0
vg() { # NAME args...: run fhirsync under memcheck
    local name=$1
    shift
    count=$((count + 1))
    if valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
            --show-leak-kinds=definite,indirect "$F" "$@" >"vg-$name.out" 2>"vg-$name.log"; then
        echo "valgrind: fhirsync $name clean"
    else
        echo "valgrind: fhirsync $name FAILED"
        tail -40 "vg-$name.log"
        fail=1
    fi
}

vg keygen keygen --alg RS384 --out keys --name vg
vg jwks jwks --key keys/vg.key.pem
printf '{"client_id":"vg","scope":"system/*.read","jwks":%s}' "$(cat keys/jwks.json)" >reg.json
curl -sf -X POST -H 'Content-Type: application/json' --data @reg.json "$(json ready.json j.register_url)" >/dev/null
export FHIRSYNC_BASE_URL=$(json ready.json j.base_url) FHIRSYNC_CLIENT_ID=vg
export FHIRSYNC_KEY_FILE=$work/keys/vg.key.pem
vg token token
vg doctor doctor
vg get get --all 'Observation?_count=20' --limit 60
if "$F" --help | grep -q '^  export '; then
    vg export export --out exp --type Patient,Observation
fi
if "$F" --help | grep -q '^  sync '; then
    vg sync sync --store "$work/vg.db"
    vg query query counts --store "$work/vg.db"
fi
echo "valgrind: $count fhirsync runs checked"
exit $fail
