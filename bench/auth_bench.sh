#!/usr/bin/env bash
# bench/auth_bench.sh: signing speed per algorithm (test_jose --bench) and the cost of a token flow
# against the sandbox beside a plain GET to the same server (auth_bench), for RS384 and ES384.
# usage: bench/auth_bench.sh BUILD_DIR [N]
set -euo pipefail
BUILD=$(cd "${1:?usage: bench/auth_bench.sh BUILD_DIR [N]}" && pwd)
N=${2:-300}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/auth-bench.XXXXXX")
SB_PID=""
cleanup() { [ -n "$SB_PID" ] && kill "$SB_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"
json() { node -e "const j=JSON.parse(require('fs').readFileSync(process.argv[1],'utf8')); console.log($2)" "$1"; }

echo "-- signing (full JWS: header, base64url, signature), per algorithm"
"$BUILD/tests/test_jose" --bench

"$BUILD/fhirsync-sandbox" --port 0 --ready-file ready.json --patients 10 >sandbox.log 2>&1 &
SB_PID=$!
for _ in $(seq 1 100); do [ -s ready.json ] && break; sleep 0.1; done
echo "-- token flow against the sandbox (n=$N), beside a plain GET to the same server"
for alg in RS384 ES384; do
    "$BUILD/fhirsync" keygen --alg "$alg" --out "keys-$alg" --name k >/dev/null
    node -e 'console.log(JSON.stringify({jwks: require(process.argv[1]), scope: "system/*.read",
             algs: ["RS384","ES384"]}))' "$WORK/keys-$alg/jwks.json" >register.json
    curl -sf -X POST -H 'Content-Type: application/json' --data @register.json \
        "$(json ready.json j.register_url)" >client.json
    "$BUILD/bench/auth_bench" --base-url "$(json ready.json j.base_url)" \
        --client-id "$(json client.json j.client_id)" --key "keys-$alg/k.key.pem" --alg "$alg" -n "$N"
done
