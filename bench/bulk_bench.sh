#!/usr/bin/env bash
# bench/bulk_bench.sh: the Bulk Data client's download speed and memory, measured in one run on
# this machine against the sandbox. Never a test: it prints figures and ratios, it does not fail
# on them.
#
#   1. download wall time: `fhirsync export` (--keep-job, so the files stay) against curl fetching
#      the same file URLs from the same server with the same parallelism (curl --parallel
#      --parallel-max N, the token in a header file, never on a command line). fhirsync's time is
#      the span between its manifest and done events in log.ndjson: downloads, line checks,
#      fsync and rename of every file. The files are read once beforehand so that both runs find
#      the sandbox's files in the page cache. Target: ratio <= 1.25.
#   2. peak memory (/usr/bin/time %M, the kernel's high-water mark of resident memory) of a
#      100,000-resource and a 2,000,000-resource export. Target: < 50 MB, about the same for both.
#
# usage: bench/bulk_bench.sh BUILD_DIR [PARALLEL] [SMALL_PATIENTS] [LARGE_PATIENTS]
#        (defaults: 4, 1000 patients ~ 100,000 resources, 20000 patients ~ 2,000,000 resources)
# needs: node, curl, /usr/bin/time; about 2 x 2 GB of free disk in $TMPDIR for the large export.
set -euo pipefail

BUILD=${1:?usage: bench/bulk_bench.sh BUILD_DIR [PARALLEL] [SMALL_PATIENTS] [LARGE_PATIENTS]}
BUILD=$(cd "$BUILD" && pwd)
PARALLEL=${2:-4}
SMALL=${3:-1000}
LARGE=${4:-20000}
FS=$BUILD/fhirsync
SANDBOX=$BUILD/fhirsync-sandbox
[ -x "$FS" ] && [ -x "$SANDBOX" ] || { echo "no fhirsync / fhirsync-sandbox in $BUILD" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time is needed for peak memory" >&2; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bulk-bench.XXXXXX")
SB_PID=""
cleanup() {
    [ -n "$SB_PID" ] && kill "$SB_PID" 2>/dev/null && wait "$SB_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
for v in $(env | grep -o '^FHIRSYNC_[A-Z_]*'); do unset "$v"; done

json() { node -e "const j=JSON.parse(require('fs').readFileSync(process.argv[1],'utf8'));
                  console.log($2)" "$1"; }
now_ms() { date +%s%3N; }

start_sandbox() { # PATIENTS
    [ -n "$SB_PID" ] && { kill "$SB_PID"; wait "$SB_PID" 2>/dev/null || true; }
    rm -f "$WORK/ready.json"
    mkdir -p "$WORK/sandbox-files"
    "$SANDBOX" --port 0 --ready-file "$WORK/ready.json" --patients "$1" --retry-after 1 \
        --work-dir "$WORK/sandbox-files" >"$WORK/sandbox.log" 2>&1 &
    SB_PID=$!
    for _ in $(seq 1 600); do [ -s "$WORK/ready.json" ] && break; sleep 0.1; done
    "$FS" keygen --out "$WORK/keys-$1" >/dev/null
    node -e 'const fs=require("fs"); console.log(JSON.stringify({jwks: JSON.parse(
             fs.readFileSync(process.argv[1], "utf8")), scope: "system/*.read"}))' \
        "$WORK/keys-$1/jwks.json" >"$WORK/register.json"
    curl -sf -X POST -H 'Content-Type: application/json' --data @"$WORK/register.json" \
        "$(json "$WORK/ready.json" j.register_url)" >"$WORK/client.json"
    export FHIRSYNC_BASE_URL FHIRSYNC_CLIENT_ID FHIRSYNC_KEY_FILE
    FHIRSYNC_BASE_URL=$(json "$WORK/ready.json" j.base_url)
    FHIRSYNC_CLIENT_ID=$(json "$WORK/client.json" j.client_id)
    FHIRSYNC_KEY_FILE=$(ls "$WORK"/keys-"$1"/*.key.pem)
}

# run_export DIR: fhirsync export under /usr/bin/time; prints "download_s peak_kb resources bytes"
run_export() {
    local dir=$1
    /usr/bin/time -f %M -o "$WORK/rss" "$FS" export --out "$dir" --keep-job --parallel "$PARALLEL" \
        --no-progress --json >"$WORK/summary.json" 2>"$WORK/export.err" ||
        { echo "export failed:" >&2; tail -5 "$WORK/export.err" >&2; exit 1; }
    local dl
    dl=$(node -e '
        const ev = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n")
            .map((l) => JSON.parse(l));
        const m = ev.filter((e) => e.event === "manifest").pop();
        const d = ev.filter((e) => e.event === "done").pop();
        console.log(((d.elapsed_ms - m.elapsed_ms) / 1000).toFixed(3));' "$dir/log.ndjson")
    echo "$dl $(tail -1 "$WORK/rss") $(json "$WORK/summary.json" j.resources) $(json "$WORK/summary.json" j.bytes)"
}

# curl_fetch DIR OUT: fetch every file URL of DIR/manifest.json with curl --parallel; prints seconds
curl_fetch() {
    local dir=$1 out=$2
    mkdir -p "$out"
    (umask 077 && "$FS" token --print-token | tail -1 | sed 's/^/Authorization: Bearer /' >"$WORK/auth.hdr")
    node -e '
        const m = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
        let i = 0;
        for (const k of ["output", "deleted", "error"])
            for (const e of m[k] || [])
                console.log(`url = "${e.url}"\noutput = "${process.argv[2]}/f${i++}.ndjson"`);' \
        "$dir/manifest.json" "$out" >"$WORK/curl.cfg"
    local t0 t1
    t0=$(now_ms)
    curl -sS --fail --parallel --parallel-max "$PARALLEL" --compressed -H @"$WORK/auth.hdr" \
        -H 'Accept: application/fhir+ndjson' -K "$WORK/curl.cfg"
    t1=$(now_ms)
    echo "scale=3; ($t1 - $t0) / 1000" | bc
}

echo "bulk download benchmark: $(nproc) cores, parallel $PARALLEL, $(uname -sr)"

# ---- speed and memory at ~100,000 resources -------------------------------------------------
start_sandbox "$SMALL"
read -r warm _ _ _ < <(run_export "$WORK/warm")        # the sandbox writes its files; warm cache
curl_fetch "$WORK/warm" "$WORK/curl-warm" >/dev/null
read -r f1 rss_small res_small bytes_small < <(run_export "$WORK/small-1")
c1=$(curl_fetch "$WORK/small-1" "$WORK/curl-1")
rm -rf "$WORK/curl-1"
read -r f2 _ _ _ < <(run_export "$WORK/small-2")
c2=$(curl_fetch "$WORK/small-2" "$WORK/curl-2")
best_f=$(echo "if ($f1 < $f2) $f1 else $f2" | bc)
best_c=$(echo "if ($c1 < $c2) $c1 else $c2" | bc)
ratio=$(echo "scale=2; $best_f / $best_c" | bc)
mb=$(echo "scale=1; $bytes_small / 1048576" | bc)
printf '\n%-44s %10s\n' "downloads of $res_small resources ($mb MiB)" "seconds"
printf '%-44s %10s\n' "fhirsync export (checked, fsync'ed, renamed)" "$best_f"
printf '%-44s %10s\n' "curl --parallel --parallel-max $PARALLEL" "$best_c"
printf '%-44s %10s   (target <= 1.25)\n' "ratio fhirsync / curl" "$ratio"
rm -rf "$WORK"/small-* "$WORK"/curl-* "$WORK"/warm "$WORK/sandbox-files"

# ---- memory at ~2,000,000 resources ---------------------------------------------------------
start_sandbox "$LARGE"
read -r f_large rss_large res_large bytes_large < <(run_export "$WORK/large")
mbl=$(echo "scale=1; $bytes_large / 1048576" | bc)
printf '\n%-44s %10s\n' "peak resident memory (VmHWM)" "MB"
printf '%-44s %10s\n' "export of $res_small resources" "$(echo "scale=1; $rss_small / 1024" | bc)"
printf '%-44s %10s\n' "export of $res_large resources ($mbl MiB)" "$(echo "scale=1; $rss_large / 1024" | bc)"
printf '%-44s %10s   (target < 50, flat)\n' "ratio large / small" "$(echo "scale=2; $rss_large / $rss_small" | bc)"
printf '%-44s %10s s (%s MiB/s)\n' "large export downloads" "$f_large" "$(echo "scale=0; $mbl / $f_large" | bc)"
