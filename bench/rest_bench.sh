#!/usr/bin/env bash
# bench/rest_bench.sh: resources per second through the REST client's search iterator
# (`fhirsync get --all`: start-up, token, paging, Bundle validation by the scanner, NDJSON output)
# beside curl fetching the same pages in sequence over one connection, against the sandbox. The
# ratio is the client's own overhead. Builds nothing; prints figures, fails only if something
# breaks.
#
# The two are run alternately, and the best of the runs is kept for each, so that load from
# other work on the machine hits both alike. Wall time is the figure asked for; CPU time
# (user + system, of the client or curl process only) is printed beside it because it is far
# less sensitive to a busy machine, and so is the sandbox's CPU time, which both wait for.
#
# usage: bench/rest_bench.sh BUILD_DIR [PAGES] [PAGE_SIZE] [RUNS]
#        (defaults: 200 pages of 100 Observations, best of 3 runs each)
# Use an optimised build (cmake -DCMAKE_BUILD_TYPE=Release): without a build type CMake compiles
# with no -O at all, and the figures then measure the compiler rather than the client.
# The bearer token for curl is read from `fhirsync token --print-token` into a header file
# (mode 0600) that curl reads with -H @FILE: it never appears on a command line.
set -euo pipefail

BUILD=${1:?usage: bench/rest_bench.sh BUILD_DIR [PAGES] [PAGE_SIZE] [RUNS]}
PAGES=${2:-200}
PAGE_SIZE=${3:-100}
RUNS=${4:-3}
BUILD=$(cd "$BUILD" && pwd)
FS="$BUILD/fhirsync"
SANDBOX="$BUILD/fhirsync-sandbox"
for bin in "$FS" "$SANDBOX"; do
    [ -x "$bin" ] || { echo "rest_bench: $bin is missing (build first)" >&2; exit 2; }
done
command -v curl >/dev/null && command -v node >/dev/null ||
    { echo "rest_bench: needs curl and node" >&2; exit 2; }

BUILD_TYPE=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD/CMakeCache.txt" 2>/dev/null || true)
case "$BUILD_TYPE" in
Release | RelWithDebInfo | MinSizeRel) ;;
*) echo "rest_bench: warning: $BUILD is not optimised (CMAKE_BUILD_TYPE='$BUILD_TYPE')" >&2 ;;
esac

RESOURCES=$((PAGES * PAGE_SIZE))
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rest-bench.XXXXXX")
SB_PID=""
cleanup() {
    [ -n "$SB_PID" ] && kill "$SB_PID" 2>/dev/null && wait "$SB_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"
json() { node -e "const j=JSON.parse(require('fs').readFileSync(process.argv[1],'utf8')); \
                  console.log($2)" "$1"; }

# about 53 Observations per generated patient: enough patients for every page to be full
PATIENTS=$((RESOURCES / 45 + 10))
"$SANDBOX" --port 0 --ready-file ready.json --patients "$PATIENTS" >sandbox.log 2>&1 &
SB_PID=$!
for _ in $(seq 1 100); do [ -s ready.json ] && break; sleep 0.1; done
[ -s ready.json ] || { echo "rest_bench: the sandbox did not start" >&2; exit 1; }
BASE=$(json ready.json j.base_url)
ADMIN=$(json ready.json j.admin_url)

"$FS" keygen --out keys >/dev/null
node -e 'console.log(JSON.stringify({jwks: require("./keys/jwks.json"), scope: "system/*.read"}))' \
    >register.json
curl -sf -X POST -H 'Content-Type: application/json' --data @register.json \
    "$(json ready.json j.register_url)" >client.json
export FHIRSYNC_BASE_URL=$BASE FHIRSYNC_CLIENT_ID=$(json client.json j.client_id)
export FHIRSYNC_KEY_FILE=$(ls "$WORK"/keys/*.key.pem)
QUERY="Observation?_count=$PAGE_SIZE"

# A first pass records the page URLs the iterator follows (from the sandbox's request log).
curl -sf -X DELETE "$ADMIN/requests" >/dev/null
"$FS" get --limit "$RESOURCES" "$QUERY" >first.ndjson
GOT=$(wc -l <first.ndjson | tr -d ' ')
if [ "$GOT" -ne "$RESOURCES" ]; then
    echo "rest_bench: got $GOT resources, wanted $RESOURCES" >&2
    exit 1
fi
ORIGIN=${BASE%/fhir*}
curl -sf "$ADMIN/requests" | node -e '
    let s = ""; process.stdin.on("data", (d) => s += d).on("end", () => {
        for (const l of s.split("\n").filter((x) => x)) {
            const r = JSON.parse(l);
            if (r.method === "GET" && r.path.startsWith("/fhir/Observation?"))
                console.log(`url = "${process.argv[1]}${r.path}"\noutput = "/dev/null"`);
        }
    });' "$ORIGIN" >curl.config
URLS=$(grep -c '^url' curl.config)

# the token for curl, in a header file only we can read
TOKEN=$("$FS" token --print-token | tail -n 1)
( umask 077; printf 'Authorization: Bearer %s\n' "$TOKEN" >auth.hdr )
unset TOKEN

# timed OUT -- command...: run it, write "wall user+sys" (seconds) to OUT
timed() {
    local out=$1
    shift 2
    local TIMEFORMAT='%3R %3U %3S' wall user sys
    { time "$@" 2>"$out.err"; } 2>"$out.t" || { cat "$out.err" >&2; return 1; }
    read -r wall user sys <"$out.t"
    echo "$wall $(echo "$user + $sys" | bc -l)" >"$out"
}
# the sandbox's CPU time so far, in seconds (utime + stime of /proc/PID/stat)
server_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' \
        "/proc/$SB_PID/stat"
}
min() { if [ -z "$1" ] || [ "$(echo "$2 < $1" | bc -l)" = 1 ]; then echo "$2"; else echo "$1"; fi; }

best_client="" best_curl="" cpu_client="" cpu_curl="" srv_client="" srv_curl=""
for run in $(seq 1 "$RUNS"); do
    s0=$(server_cpu)
    timed client.t -- "$FS" get --limit "$RESOURCES" "$QUERY" >/dev/null
    s1=$(server_cpu)
    timed curl.t -- curl -sf --compressed -H @auth.hdr -H 'Accept: application/fhir+json' \
        -K curl.config
    s2=$(server_cpu)
    read -r c cc <client.t
    read -r k kc <curl.t
    sc=$(echo "$s1 - $s0" | bc -l)
    sk=$(echo "$s2 - $s1" | bc -l)
    printf 'run %d: fhirsync get --all %.3f s (CPU %.3f s, sandbox %.2f s), ' "$run" "$c" "$cc" "$sc"
    printf 'curl %.3f s (CPU %.3f s, sandbox %.2f s)\n' "$k" "$kc" "$sk"
    best_client=$(min "$best_client" "$c")
    best_curl=$(min "$best_curl" "$k")
    cpu_client=$(min "$cpu_client" "$cc")
    cpu_curl=$(min "$cpu_curl" "$kc")
    srv_client=$(min "$srv_client" "$sc")
    srv_curl=$(min "$srv_curl" "$sk")
done
rm -f auth.hdr

rate_client=$(echo "$RESOURCES / $best_client" | bc -l)
rate_curl=$(echo "$RESOURCES / $best_curl" | bc -l)
echo
echo "REST search, $URLS pages of $PAGE_SIZE Observations ($RESOURCES resources), best of $RUNS:"
printf '  fhirsync get --all (search iterator): %10.0f resources/s  (%.3f s, token included)\n' \
    "$rate_client" "$best_client"
printf '  curl, same pages in sequence:         %10.0f resources/s  (%.3f s)\n' \
    "$rate_curl" "$best_curl"
printf '  ratio client/curl time: %.2f (client overhead %.0f%%)\n' \
    "$(echo "$best_client / $best_curl" | bc -l)" \
    "$(echo "($best_client / $best_curl - 1) * 100" | bc -l)"
printf '  CPU time (user + system), best: client %.3f s, curl %.3f s (ratio %.2f); ' \
    "$cpu_client" "$cpu_curl" "$(echo "$cpu_client / $cpu_curl" | bc -l)"
printf 'sandbox %.2f s / %.2f s\n' "$srv_client" "$srv_curl"
