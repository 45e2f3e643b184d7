#!/usr/bin/env bash
# bench/bulk_bench.sh: the Bulk Data client's download speed and memory, measured in one run on
# this machine against the sandbox. Never a test: it prints figures and ratios, it does not fail
# on them.
#
#   1. download wall time: fhirsync against curl fetching the same file URLs from the same server
#      with the same parallelism (curl --parallel --parallel-max N, writing the files to disk with
#      --output-dir, the token in a header file, never on a command line). Same conditions for
#      both: one export job is made and kept (--keep-job), and every timed run fetches that job's
#      files, already in the sandbox's page cache; `sync` before each run so that neither tool
#      inherits the other's dirty pages; the two tools alternate (and which goes first too); the
#      best and the median of ROUNDS runs are shown. fhirsync's run resumes a copy of the export
#      folder rewound to "manifest saved, no file done" (exactly what a kill -9 right after the
#      manifest leaves), so it downloads, checks, fsyncs, renames and records every file; its time
#      is the span between its manifest and done events in export-log.jsonl. Target: ratio <= 1.25.
#   2. a breakdown, for measurement only: fhirsync with its fsync calls made no-ops (an
#      LD_PRELOAD shim compiled here; the library has no such switch), curl followed by
#      `sync --data` of its files (the durability fhirsync provides), and the line checker alone
#      (test_bulk --bench, one thread, when the tests are built), with the field scanner, the
#      search-page scanner and the line splitter on the same lines (bench/lex_bench).
#   3. peak memory (/usr/bin/time %M, the kernel's high-water mark of resident memory) of a
#      100,000-resource and a 2,000,000-resource export. Target: < 50 MB, about the same for both.
#
# usage: bench/bulk_bench.sh BUILD_DIR [PARALLEL] [SMALL_PATIENTS] [LARGE_PATIENTS] [ROUNDS]
#        (defaults: 4, 1000 patients ~ 100,000 resources, 20000 patients ~ 2,000,000 resources,
#        15 rounds; LARGE_PATIENTS 0 skips the large export)
# needs: node, curl, /usr/bin/time, bc; cc for the no-fsync figure; about 2 x 2 GB of free disk
# in $TMPDIR for the large export.
set -euo pipefail

USAGE="usage: bench/bulk_bench.sh BUILD_DIR [PARALLEL] [SMALL_PATIENTS] [LARGE_PATIENTS] [ROUNDS]"
BUILD=${1:?$USAGE}
BUILD=$(cd "$BUILD" && pwd)
PARALLEL=${2:-4}
SMALL=${3:-1000}
LARGE=${4:-20000}
ROUNDS=${5:-15}
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
now_ns() { date +%s%N; }
secs() { echo "scale=3; $1 / 1000000000" | bc | sed 's/^\./0./'; }     # from ns
ms_secs() { echo "scale=3; $1 / 1000" | bc | sed 's/^\./0./'; }     # from ms

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

# download_ms DIR: the span between the manifest and done events of DIR/export-log.jsonl
download_ms() {
    node -e '
        const ev = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n")
            .map((l) => JSON.parse(l));
        const m = ev.filter((e) => e.event === "manifest").pop();
        const d = ev.filter((e) => e.event === "done").pop();
        console.log(d.elapsed_ms - m.elapsed_ms);' "$1/export-log.jsonl"
}

# run_export DIR: a new export (kept on the server) under /usr/bin/time; prints
# "download_s peak_kb resources bytes"
run_export() {
    local dir=$1
    /usr/bin/time -f %M -o "$WORK/rss" "$FS" export --out "$dir" --keep-job --parallel "$PARALLEL" \
        --no-progress --json >"$WORK/summary.json" 2>"$WORK/export.err" ||
        { echo "export failed:" >&2; tail -5 "$WORK/export.err" >&2; exit 1; }
    echo "$(ms_secs "$(download_ms "$dir")") $(tail -1 "$WORK/rss") \
$(json "$WORK/summary.json" j.resources) $(json "$WORK/summary.json" j.bytes)"
}

# fhirsync_rerun TEMPLATE [PRELOAD]: download TEMPLATE's job again into a rewound copy of its
# folder; prints seconds
fhirsync_rerun() {
    local dir=$WORK/rerun
    rm -rf "$dir"
    mkdir -m 700 "$dir"
    cp "$1/manifest.json" "$dir/"
    node -e 'const fs = require("fs"); const s = JSON.parse(fs.readFileSync(process.argv[1]));
             s.files = []; s.complete = false;
             fs.writeFileSync(process.argv[2], JSON.stringify(s), {mode: 0o600})' \
        "$1/state.json" "$dir/state.json"
    sync
    LD_PRELOAD=${2:-} "$FS" export --resume "$dir" --keep-job --parallel "$PARALLEL" \
        --no-progress >/dev/null 2>"$WORK/rerun.err" ||
        { echo "export failed:" >&2; tail -5 "$WORK/rerun.err" >&2; exit 1; }
    ms_secs "$(download_ms "$dir")"
    rm -rf "$dir"
}

# curl_setup TEMPLATE: the token header and curl's config for TEMPLATE's file URLs
curl_setup() {
    (umask 077 && "$FS" token --print-token | tail -1 | sed 's/^/Authorization: Bearer /' \
        >"$WORK/auth.hdr")
    node -e '
        const m = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
        let i = 0;
        for (const k of ["output", "deleted", "error"])
            for (const e of m[k] || [])
                console.log(`url = "${e.url}"\noutput = "f${i++}.ndjson"`);' \
        "$1/manifest.json" >"$WORK/curl.cfg"
}

# curl_fetch [sync]: fetch every URL of curl.cfg with curl --parallel (then fdatasync every file
# with "sync"); prints seconds
curl_fetch() {
    local out=$WORK/curl-out t0 t1
    rm -rf "$out"
    mkdir -p "$out"
    sync
    t0=$(now_ns)
    curl -sS --fail --no-progress-meter --parallel --parallel-max "$PARALLEL" --compressed \
        -H @"$WORK/auth.hdr" -H 'Accept: application/fhir+ndjson' --output-dir "$out" \
        -K "$WORK/curl.cfg"
    [ "${1:-}" = sync ] && sync --data "$out"/*.ndjson
    t1=$(now_ns)
    secs $((t1 - t0))
    rm -rf "$out"
}

# best LIST / median LIST of numbers
best() { printf '%s\n' "$@" | sort -n | head -1; }
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }

echo "bulk download benchmark: $(nproc) cores, parallel $PARALLEL, $ROUNDS rounds, $(uname -sr)"

# ---- speed at ~100,000 resources ------------------------------------------------------------
start_sandbox "$SMALL"
read -r _ rss_small res_small bytes_small < <(run_export "$WORK/template")
curl_setup "$WORK/template"
curl_fetch >/dev/null                                  # the sandbox's files into the page cache
NOSYNC=""
if command -v cc >/dev/null; then # measurement only: fsync, fdatasync, sync_file_range do nothing
    cat >"$WORK/nosync.c" <<'SHIM'
#include <sys/types.h>
int fsync(int fd) { (void)fd; return 0; }
int fdatasync(int fd) { (void)fd; return 0; }
int sync_file_range(int fd, off_t from, off_t n, unsigned flags)
{
    (void)fd, (void)from, (void)n, (void)flags;
    return 0;
}
SHIM
    cc -shared -fPIC -o "$WORK/nosync.so" "$WORK/nosync.c" && NOSYNC=$WORK/nosync.so
fi
F=() C=() FN=() CS=()
for i in $(seq 1 "$ROUNDS"); do
    if [ $((i % 2)) = 1 ]; then
        F+=("$(fhirsync_rerun "$WORK/template")")
        C+=("$(curl_fetch)")
    else
        C+=("$(curl_fetch)")
        F+=("$(fhirsync_rerun "$WORK/template")")
    fi
    [ -n "$NOSYNC" ] && FN+=("$(fhirsync_rerun "$WORK/template" "$NOSYNC")")
    CS+=("$(curl_fetch sync)")
done
ratio() { echo "scale=2; $1 / $2" | bc | sed 's/^\./0./'; }
row() { printf '%-50s %7s / %6s%s\n' "$1" "$2" "$3" "${4:-}"; } # LABEL BEST MEDIAN [NOTE]
mb=$(echo "scale=1; $bytes_small / 1048576" | bc)
printf '\n%-50s %16s\n' "downloads of $res_small resources ($mb MiB)" "best / median s"
row "fhirsync (checked, fsync'ed, renamed, recorded)" "$(best "${F[@]}")" "$(median "${F[@]}")"
row "curl --parallel --parallel-max $PARALLEL" "$(best "${C[@]}")" "$(median "${C[@]}")"
row "ratio fhirsync / curl" "$(ratio "$(best "${F[@]}")" "$(best "${C[@]}")")" \
    "$(ratio "$(median "${F[@]}")" "$(median "${C[@]}")")" "   (target <= 1.25)"
printf '\n%-50s\n' "breakdown (measurement only)"
[ -n "$NOSYNC" ] &&
    row "fhirsync, fsync calls made no-ops (LD_PRELOAD)" "$(best "${FN[@]}")" "$(median "${FN[@]}")"
row "curl, then sync --data of its files" "$(best "${CS[@]}")" "$(median "${CS[@]}")"
if [ -x "$BUILD/tests/test_bulk" ]; then
    cat "$WORK"/template/*.*.ndjson >"$WORK/all.ndjson"
    speed=$("$BUILD/tests/test_bulk" --bench "$WORK/all.ndjson" |
            sed -n 's/.*checker \([0-9]* MB\/s\).*/\1/p')
    printf '%-50s %s\n' "line checks alone (test_bulk --bench)" "$speed"
    # the three scanners of the lexer core (json/lex.h) on the same lines, beside memchr and jansson
    [ -x "$BUILD/bench/lex_bench" ] && "$BUILD/bench/lex_bench" "$WORK/all.ndjson" 3
    rm -f "$WORK/all.ndjson"
fi
rm -rf "$WORK"/template "$WORK/sandbox-files"
[ "$LARGE" -gt 0 ] || exit 0

# ---- memory at ~2,000,000 resources ---------------------------------------------------------
start_sandbox "$LARGE"
read -r f_large rss_large res_large bytes_large < <(run_export "$WORK/large")
mbl=$(echo "scale=1; $bytes_large / 1048576" | bc)
printf '\n%-50s %10s\n' "peak resident memory (VmHWM)" "MB"
printf '%-50s %10s\n' "export of $res_small resources" "$(echo "scale=1; $rss_small / 1024" | bc)"
printf '%-50s %10s\n' "export of $res_large resources ($mbl MiB)" "$(echo "scale=1; $rss_large / 1024" | bc)"
printf '%-50s %10s   (target < 50, flat)\n' "ratio large / small" "$(echo "scale=2; $rss_large / $rss_small" | bc)"
printf '%-50s %10s s (%s MiB/s)\n' "large export downloads" "$f_large" "$(echo "scale=0; $mbl / $f_large" | bc)"
