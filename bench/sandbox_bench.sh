#!/usr/bin/env bash
# bench/sandbox_bench.sh: throughput of the sandbox EHR, printed as figures and ratios (nothing
# here fails on timing). It starts a sandbox with many patients and measures:
#   1. a system $export of about a million resources: seconds, resources/s, MB/s of NDJSON made
#      (the generator and the file writer, i.e. "generation");
#   2. downloading the largest export file with curl from the main listener (token checked,
#      streamed from disk), from the storage listener (no token), and the same file read by curl
#      from disk (file://) as the ceiling; the ratios say what HTTP serving costs;
#   3. REST search paging (_count=1000, generated on the fly): resources/s and MB/s, against the
#      export rate.
#
# usage: bench/sandbox_bench.sh [PATIENTS]   (default 10000: about a million resources)
#        FHIRSYNC_SANDBOX_BIN=path/to/fhirsync-sandbox to choose the binary (default: build/)
set -euo pipefail

PATIENTS=${1:-10000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${FHIRSYNC_SANDBOX_BIN:-$ROOT/build/fhirsync-sandbox}
[ -x "$BIN" ] || { echo "no sandbox binary at $BIN (build it, or set FHIRSYNC_SANDBOX_BIN)" >&2; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sandbox-bench.XXXXXX")
SB_PID=""
cleanup() {
    if [ -n "$SB_PID" ]; then kill -TERM "$SB_PID" 2>/dev/null || true; wait "$SB_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

jget() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const v=eval("(d)=>d"+process.argv[1])(JSON.parse(s));console.log(typeof v==="object"?JSON.stringify(v):v)})' "$1"; }
now() { date +%s.%N; }
calc() { node -e "console.log(($1).toFixed(${2:-1}))"; }

cat >"$WORK/clients.json" <<'EOF'
{"clients": [{"client_id": "bench", "token_endpoint_auth_method": "client_secret_basic",
              "client_secret": "bench-secret", "scope": "system/*.read"}]}
EOF
t0=$(now)
"$BIN" --ready-file "$WORK/ready.json" --patients "$PATIENTS" --clients "$WORK/clients.json" \
    --work-dir "$WORK/jobs" --retry-after 1 >"$WORK/sandbox.out" 2>"$WORK/sandbox.err" &
SB_PID=$!
for _ in $(seq 1 600); do [ -s "$WORK/ready.json" ] && break; sleep 0.05; done
[ -s "$WORK/ready.json" ] || { echo "the sandbox did not start" >&2; cat "$WORK/sandbox.err" >&2; exit 1; }
t1=$(now)
BASE=$(jget .base_url <"$WORK/ready.json")
TOKEN=$(curl -sS -u bench:bench-secret --data grant_type=client_credentials "$(jget .token_url <"$WORK/ready.json")" | jget .access_token)
echo "sandbox: $PATIENTS patients, ready in $(calc "$t1 - $t0" 2) s"

# ---- 1. export
t0=$(now)
curl -sS -o /dev/null -D "$WORK/headers" -H "Authorization: Bearer $TOKEN" -H 'Accept: application/fhir+json' \
    -H 'Prefer: respond-async' "$BASE/\$export"
STATUS=$(tr -d '\r' <"$WORK/headers" | sed -n 's/^content-location: //Ip')
for _ in $(seq 1 36000); do
    st=$(curl -sS -o "$WORK/manifest.json" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$STATUS")
    [ "$st" = 200 ] && break
    sleep 0.1
done
t1=$(now)
[ "$st" = 200 ] || { echo "the export did not finish" >&2; exit 1; }
RESOURCES=$(jget '.output.reduce((n,o)=>n+o.count,0)' <"$WORK/manifest.json")
FILES=$(jget '.output.length' <"$WORK/manifest.json")
BYTES=$(du -sb "$WORK/jobs" | cut -f1)
EXPORT_S=$(calc "$t1 - $t0" 2)
EXPORT_RATE=$(calc "$RESOURCES / ($t1 - $t0)" 0)
EXPORT_MBS=$(calc "$BYTES / 1e6 / ($t1 - $t0)" 1)
echo "export: $RESOURCES resources in $FILES files, $(calc "$BYTES / 1e6" 1) MB, $EXPORT_S s:" \
     "$EXPORT_RATE resources/s, $EXPORT_MBS MB/s generated"

# ---- 2. the largest file over HTTP and from disk
URL=$(jget '.output.reduce((a,o)=>o.count>a.count?o:a).url' <"$WORK/manifest.json")
NAME=$(basename "$URL")
JOB=$(basename "$(dirname "$URL")")
PATH_ON_DISK="$WORK/jobs/$JOB/$NAME"
SIZE=$(stat -c %s "$PATH_ON_DISK")
best() { # URL [curl args]: best of 3 in bytes/s
    local url=$1 b=0 s
    shift
    for _ in 1 2 3; do
        s=$(curl -sS -o /dev/null -w '%{speed_download}' "$@" "$url")
        b=$(node -e "console.log(Math.max($b, $s))")
    done
    echo "$b"
}
MAIN=$(best "$URL" -H "Authorization: Bearer $TOKEN")
STORAGE=$(best "$(jget .storage_base_url <"$WORK/ready.json")/bulkfiles/$JOB/$NAME")
DISK=$(best "file://$PATH_ON_DISK")
echo "largest file: $NAME, $(calc "$SIZE / 1e6" 1) MB"
echo "  main listener (token, from disk):  $(calc "$MAIN / 1e6") MB/s"
echo "  storage listener (from disk):      $(calc "$STORAGE / 1e6") MB/s"
echo "  curl file:// (disk, no HTTP):      $(calc "$DISK / 1e6") MB/s"
echo "  ratio main/disk $(calc "$MAIN / $DISK" 2), storage/disk $(calc "$STORAGE / $DISK" 2)," \
     "main download / export generation $(calc "$MAIN / 1e6 / $EXPORT_MBS" 1)x"

# ---- 3. REST paging, generated on the fly (time as curl measures it: the shell work between
# pages, finding the next link, is not the server's)
url="$BASE/Observation?_count=1000"
pages=0 n=0 bytes=0 secs=0
while [ -n "$url" ] && [ "$pages" -lt 50 ]; do
    pages=$((pages + 1))
    t=$(curl -sS -o "$WORK/page.json" -w '%{time_total}' -H "Authorization: Bearer $TOKEN" "$url")
    secs=$(calc "$secs + $t" 6)
    bytes=$((bytes + $(stat -c %s "$WORK/page.json")))
    n=$((n + $(grep -o '"fullUrl":' "$WORK/page.json" | wc -l)))
    url=$(grep -o '"relation":"next","url":"[^"]*"' "$WORK/page.json" | sed 's/.*"url":"//; s/"$//' || true)
done
PAGE_RATE=$(calc "$n / $secs" 0)
echo "REST paging: $n Observations in $pages pages, $(calc "$secs" 2) s: $PAGE_RATE resources/s," \
     "$(calc "$bytes / 1e6 / $secs" 1) MB/s"
echo "  ratio export/paging resources per second: $(calc "$EXPORT_RATE / $PAGE_RATE" 2)"
echo "sandbox RSS at the end: $(awk '/VmRSS/ {print $2 " kB"}' "/proc/$SB_PID/status"), peak $(awk '/VmHWM/ {print $2 " kB"}' "/proc/$SB_PID/status")"
