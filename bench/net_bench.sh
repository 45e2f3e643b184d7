#!/usr/bin/env bash
# bench/net_bench.sh: what compression, parallel downloads and keep-alive are worth on a real
# network: the sandbox behind a shaped link (bench/shaper, a loopback proxy: these kernels have no
# netem), fhirsync beside curl fetching the same files with the same encoding and parallelism.
# Never a test: it prints figures and ratios, it does not fail on them.
#
# The link (defaults; NET_* variables change them): 50 Mbit/s each way shared by every connection,
# 40 ms RTT (20 ms each way, one more RTT to open a connection), loss 0.0002 per 1448-byte segment
# (one RTT of head-of-line delay per loss, and each connection held to TCP's loss-bound rate,
# MSS/RTT*1.22/sqrt(p) = 25 Mbit/s: one connection cannot fill the link), and a connection reset
# with probability 0.02 per MiB forwarded. bench/shaper.c states the model and what it leaves out.
# Both sandbox listeners sit behind the shaper: the sandbox advertises the shaper's origins
# (--public-url, --public-storage-url), so every URL a client follows (discovery, token, kick-off,
# status, manifest files) goes through the link.
#
#   1. downloads: two sandboxes with the same data, one serving bulk files as they are, one with
#      --gzip (gzip to clients that accept it). fhirsync always accepts gzip (libcurl's
#      Accept-Encoding: every coding it supports) and has no setting to refuse it, so "encoding
#      identity" is the plain sandbox, for both tools; curl asks with --compressed. For each
#      encoding and parallelism (1 and 4): fhirsync resuming a copy of a kept job's folder rewound
#      to "manifest saved, no file done" (as bench/bulk_bench.sh does; its time is the span between
#      the first file-started and the done events of export-log.jsonl, so that its discovery and
#      token requests, done before, are left out as curl's token is: they are shown apart),
#      and curl --parallel --parallel-max N on the same URLs (--retry 5 --retry-all-errors: a reset
#      restarts the file). The two alternate; the median (and best) of ROUNDS runs. Bytes on the
#      wire are the shaper's count of bytes forwarded server -> client in that run, beside the
#      NDJSON size on disk.
#   2. keep-alive: REST pages (the sandbox does not compress them) one after another: fhirsync
#      get --limit (one connection), curl on the same page URLs in one process (keep-alive), and
#      curl with Connection: close (a new connection, one more RTT, per page). fhirsync's time
#      includes its start (discovery, token); the cost per page is (time of N pages - time of one)
#      / (N - 1) for fhirsync and time / N for curl.
#
# usage: bench/net_bench.sh BUILD_DIR [PATIENTS] [ROUNDS]
#        (defaults 300 patients, about 30,000 resources and 26 MB of NDJSON; 3 rounds)
# environment: NET_RATE (50M), NET_RTT_MS (40), NET_LOSS (0.0002), NET_RESET (0.02 per MiB),
#        NET_PER_FILE (5000 resources per file, so that the largest type is several files, as
#        real servers split them), NET_PAGES (20) and NET_PAGE_SIZE (50) for part 2,
#        NET_DATA=DIR to serve an existing export (sandbox --data) instead of generated data.
# needs: node, curl, bc.
set -euo pipefail

USAGE="usage: bench/net_bench.sh BUILD_DIR [PATIENTS] [ROUNDS]"
BUILD=${1:?$USAGE}
BUILD=$(cd "$BUILD" && pwd)
PATIENTS=${2:-300}
ROUNDS=${3:-3}
RATE=${NET_RATE:-50M}
RTT=${NET_RTT_MS:-40}
LOSS=${NET_LOSS:-0.0002}
RESET=${NET_RESET:-0.02}
PER_FILE=${NET_PER_FILE:-5000}
PAGES=${NET_PAGES:-20}
PAGE_SIZE=${NET_PAGE_SIZE:-50}
FS=$BUILD/fhirsync
SANDBOX=$BUILD/fhirsync-sandbox
SHAPER=$BUILD/bench/shaper
for bin in "$FS" "$SANDBOX" "$SHAPER"; do
    [ -x "$bin" ] || { echo "net_bench: $bin is missing (build first)" >&2; exit 2; }
done
command -v node >/dev/null && command -v curl >/dev/null && command -v bc >/dev/null ||
    { echo "net_bench: needs node, curl and bc" >&2; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/net-bench.XXXXXX")
SB_PID="" SH_PID=""
stop_stack() {
    [ -z "$SH_PID" ] || { kill "$SH_PID" 2>/dev/null && wait "$SH_PID" 2>/dev/null || true; }
    [ -z "$SB_PID" ] || { kill "$SB_PID" 2>/dev/null && wait "$SB_PID" 2>/dev/null || true; }
    SB_PID="" SH_PID=""
}
cleanup() {
    stop_stack
    rm -rf "$WORK"
}
trap cleanup EXIT
for v in $(env | grep -o '^FHIRSYNC_[A-Z_]*'); do unset "$v"; done

json() { node -e "const j=JSON.parse(require('fs').readFileSync(process.argv[1],'utf8'));
                  console.log($2)" "$1"; }
now_ns() { date +%s%N; }
secs() { echo "scale=3; $1 / 1000000000" | bc | sed 's/^\./0./'; } # from ns
ms_secs() { echo "scale=3; $1 / 1000" | bc | sed 's/^\./0./'; }    # from ms
free_port() {
    node -e 'const s = require("net").createServer().listen(0, "127.0.0.1",
             () => { console.log(s.address().port); s.close(); })'
}
wait_file() { # FILE PID WHAT
    for _ in $(seq 1 600); do
        [ -s "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || break
        sleep 0.1
    done
    echo "net_bench: $3 did not start" >&2
    exit 1
}

# start_stack ENCODING (identity|gzip): the sandbox, the shaper in front of both its listeners
# (on ports picked first, so that the sandbox can advertise them), a registered client
start_stack() {
    stop_stack
    local dir=$WORK/$1 main_port storage_port
    mkdir -p "$dir/files"
    main_port=$(free_port)
    storage_port=$(free_port)
    local data=(--patients "$PATIENTS")
    [ -z "${NET_DATA:-}" ] || data=(--data "$NET_DATA")
    local gzip=()
    [ "$1" = identity ] || gzip=(--gzip)
    "$SANDBOX" --port 0 --ready-file "$dir/sandbox.json" "${data[@]}" "${gzip[@]}" \
        --resources-per-file "$PER_FILE" --retry-after 1 --work-dir "$dir/files" \
        --public-url "http://127.0.0.1:$main_port" \
        --public-storage-url "http://localhost:$storage_port" >"$dir/sandbox.log" 2>&1 &
    SB_PID=$!
    wait_file "$dir/sandbox.json" "$SB_PID" "the sandbox"
    "$SHAPER" --pair "$main_port=127.0.0.1:$(json "$dir/sandbox.json" j.port)" \
        --pair "$storage_port=127.0.0.1:$(json "$dir/sandbox.json" j.storage_port)" \
        --rate "$RATE" --rtt "$RTT" --loss "$LOSS" --reset "$RESET" \
        --ready-file "$dir/shaper.json" --stats-file "$dir/stats.json" >"$dir/shaper.log" 2>&1 &
    SH_PID=$!
    wait_file "$dir/shaper.json" "$SH_PID" "the shaper (a port taken since it was picked?)"
    STATS=$dir/stats.json
    [ -d "$WORK/keys" ] || "$FS" keygen --out "$WORK/keys" >/dev/null
    node -e 'const fs=require("fs"); console.log(JSON.stringify({jwks: JSON.parse(
             fs.readFileSync(process.argv[1], "utf8")), scope: "system/*.read"}))' \
        "$WORK/keys/jwks.json" >"$dir/register.json"
    curl -sf -X POST -H 'Content-Type: application/json' --data @"$dir/register.json" \
        "$(json "$dir/sandbox.json" j.register_url)" >"$dir/client.json"
    export FHIRSYNC_BASE_URL FHIRSYNC_CLIENT_ID FHIRSYNC_KEY_FILE
    FHIRSYNC_BASE_URL=$(json "$dir/sandbox.json" j.base_url)
    FHIRSYNC_CLIENT_ID=$(json "$dir/client.json" j.client_id)
    FHIRSYNC_KEY_FILE=$(ls "$WORK"/keys/*.key.pem)
    ADMIN_URL=$(json "$dir/sandbox.json" j.admin_url)
    STACK=$dir
}

# stats: the shaper's counters now, as "bytes_down bytes_up connections resets losses"
stats() {
    local seq=0
    [ -s "$STATS" ] && seq=$(json "$STATS" j.seq)
    kill -USR1 "$SH_PID"
    for _ in $(seq 1 200); do
        [ -s "$STATS" ] && [ "$(json "$STATS" j.seq)" != "$seq" ] && break
        sleep 0.02
    done
    json "$STATS" '[j.bytes_down, j.bytes_up, j.connections, j.resets, j.losses].join(" ")'
}
# delta BEFORE AFTER: the difference of two stats lines
delta() {
    local -a a=($1) b=($2)
    echo "$((b[0] - a[0])) $((b[1] - a[1])) $((b[2] - a[2])) $((b[3] - a[3])) $((b[4] - a[4]))"
}

# from DIR/export-log.jsonl: "downloads start", in ms: the span between the first file-started
# event and the done event, and before it the run's start (discovery and token: on resuming, the
# manifest is read from the folder)
download_ms() {
    node -e '
        const ev = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n")
            .map((l) => JSON.parse(l));
        const f = ev.find((e) => e.event === "file-started");
        const d = ev.filter((e) => e.event === "done").pop();
        console.log(d.elapsed_ms - f.elapsed_ms, f.elapsed_ms);' "$1/export-log.jsonl"
}

# template: an export kept on the server (--keep-job), whose folder every fhirsync run copies
template() {
    "$FS" export --out "$STACK/template" --keep-job --parallel 4 --no-progress --json \
        >"$STACK/summary.json" 2>"$STACK/export.err" ||
        { echo "net_bench: the export failed:" >&2; tail -5 "$STACK/export.err" >&2; exit 1; }
    (umask 077 && "$FS" token --print-token | tail -1 | sed 's/^/Authorization: Bearer /' \
        >"$STACK/auth.hdr")
    node -e '
        const m = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
        let i = 0;
        for (const k of ["output", "deleted", "error"])
            for (const e of m[k] || [])
                console.log(`url = "${e.url}"\noutput = "f${i++}.ndjson"`);' \
        "$STACK/template/manifest.json" >"$STACK/curl.cfg"
}

# fhirsync_run PARALLEL: the template's job downloaded again into a rewound copy of its folder;
# prints "seconds bytes_down bytes_up connections resets losses start_seconds"
fhirsync_run() {
    local dir=$STACK/rerun before after
    rm -rf "$dir"
    mkdir -m 700 "$dir"
    cp "$STACK/template/manifest.json" "$dir/"
    node -e 'const fs = require("fs"); const s = JSON.parse(fs.readFileSync(process.argv[1]));
             s.files = []; s.complete = false;
             fs.writeFileSync(process.argv[2], JSON.stringify(s), {mode: 0o600})' \
        "$STACK/template/state.json" "$dir/state.json"
    before=$(stats)
    "$FS" export --resume "$dir" --keep-job --parallel "$1" --no-progress >/dev/null \
        2>"$STACK/rerun.err" ||
        { echo "net_bench: fhirsync failed:" >&2; tail -5 "$STACK/rerun.err" >&2; exit 1; }
    after=$(stats)
    local ms
    read -r -a ms < <(download_ms "$dir")
    echo "$(ms_secs "${ms[0]}") $(delta "$before" "$after") $(ms_secs "${ms[1]}")"
    rm -rf "$dir"
}

# curl_run PARALLEL [--compressed]: the same URLs with curl; prints as fhirsync_run
curl_run() {
    local out=$STACK/curl-out t0 t1 before after
    rm -rf "$out"
    mkdir -p "$out"
    before=$(stats)
    t0=$(now_ns)
    curl -sS --fail --no-progress-meter --parallel --parallel-max "$1" ${2:-} \
        --retry 5 --retry-all-errors -H @"$STACK/auth.hdr" -H 'Accept: application/fhir+ndjson' \
        --output-dir "$out" -K "$STACK/curl.cfg" 2>"$STACK/curl.err" ||
        { echo "net_bench: curl failed:" >&2; tail -3 "$STACK/curl.err" >&2; exit 1; }
    t1=$(now_ns)
    after=$(stats)
    echo "$(secs $((t1 - t0))) $(delta "$before" "$after")"
    rm -rf "$out"
}

best() { printf '%s\n' "$@" | sort -n | head -1; }
median() { printf '%s\n' "$@" | sort -n | sed -n "$((($# + 1) / 2))p"; }
ratio() { echo "scale=2; $1 / $2" | bc | sed 's/^\./0./'; }
mib() { echo "scale=2; $1 / 1048576" | bc | sed 's/^\./0./'; }
col() { # N LINES...: the Nth field of each line
    local n=$1
    shift
    printf '%s\n' "$@" | awk -v n="$n" '{ print $n }'
}

declare -A RUNS
echo "network benchmark: $(nproc) cores, $(uname -sr), $ROUNDS rounds"
echo "link: $RATE bit/s shared, RTT $RTT ms, loss $LOSS per segment, resets $RESET per MiB"

# ---- 1. downloads ----------------------------------------------------------------------------
for enc in identity gzip; do
    start_stack "$enc"
    template
    [ "$enc" = identity ] && sed -n 's/^shaper: \(.*Mbit.*\)/shaper: \1/p' "$STACK/shaper.log"
    NDJSON_BYTES=$(json "$STACK/summary.json" j.bytes)
    RESOURCES=$(json "$STACK/summary.json" j.resources)
    FILES=$(json "$STACK/summary.json" j.files)
    compressed=""
    [ "$enc" = gzip ] && compressed=--compressed
    curl_run 4 $compressed >/dev/null # the sandbox's files (and their .gz copies) made and cached
    for i in $(seq 1 "$ROUNDS"); do
        for p in 1 4; do
            if [ $((i % 2)) = 1 ]; then
                RUNS[$enc:$p:fhirsync]+="$(fhirsync_run "$p");"
                RUNS[$enc:$p:curl]+="$(curl_run "$p" $compressed);"
            else
                RUNS[$enc:$p:curl]+="$(curl_run "$p" $compressed);"
                RUNS[$enc:$p:fhirsync]+="$(fhirsync_run "$p");"
            fi
        done
    done
    if [ "$enc" = identity ]; then # ---- 2. keep-alive, on this stack -----------------------
        ORIGIN=${FHIRSYNC_BASE_URL%/fhir}
        QUERY="Observation?_count=$PAGE_SIZE"
        curl -sf -X DELETE "$ADMIN_URL/requests" >/dev/null
        "$FS" get --limit $((PAGES * PAGE_SIZE)) "$QUERY" >/dev/null
        curl -sf "$ADMIN_URL/requests" | node -e '
            let s = ""; process.stdin.on("data", (d) => s += d).on("end", () => {
                for (const l of s.split("\n").filter((x) => x)) {
                    const r = JSON.parse(l);
                    if (r.method === "GET" && r.path.startsWith("/fhir/Observation?"))
                        console.log(`url = "${process.argv[1]}${r.path}"\noutput = "/dev/null"`);
                }
            });' "$ORIGIN" >"$STACK/pages.cfg"
        NPAGES=$(grep -c '^url' "$STACK/pages.cfg")
        timed_run() { # command...: "seconds bytes_down bytes_up connections resets losses"
            local before after t0 t1
            before=$(stats)
            t0=$(now_ns)
            "$@" >/dev/null 2>"$STACK/timed.err" ||
                { echo "net_bench: $1 failed:" >&2; tail -3 "$STACK/timed.err" >&2; exit 1; }
            t1=$(now_ns)
            after=$(stats)
            echo "$(secs $((t1 - t0))) $(delta "$before" "$after")"
        }
        CURL_PAGES=(curl -sS --fail -H @"$STACK/auth.hdr" -H 'Accept: application/fhir+json'
            --retry 5 --retry-all-errors -K "$STACK/pages.cfg")
        for i in $(seq 1 "$ROUNDS"); do
            RUNS[ka:fhirsync1]+="$(timed_run "$FS" get "$QUERY");"
            RUNS[ka:fhirsyncN]+="$(timed_run "$FS" get --limit $((PAGES * PAGE_SIZE)) "$QUERY");"
            RUNS[ka:curl]+="$(timed_run "${CURL_PAGES[@]}");"
            RUNS[ka:close]+="$(timed_run "${CURL_PAGES[@]}" -H 'Connection: close');"
        done
    fi
    rm -rf "$STACK/template"
done
stop_stack

# ---- report ----------------------------------------------------------------------------------
runs() { local IFS=';'; printf '%s\n' ${RUNS[$1]}; }
med() { median $(runs "$1" | awk -v n="$2" '{ print $n }'); }
bst() { best $(runs "$1" | awk -v n="$2" '{ print $n }'); }
sum() { runs "$1" | awk -v n="$2" '{ s += $n } END { print s + 0 }'; }
mb=$(mib "$NDJSON_BYTES")
printf '\nbulk downloads: %s resources, %s MiB of NDJSON in %s files; ' "$RESOURCES" "$mb" "$FILES"
printf 'median (best) of %s rounds\n' "$ROUNDS"
printf '%-9s %3s  %-17s %-17s %-12s %-16s %-9s %-11s %-9s %s\n' encoding par "fhirsync s" \
    "curl s" "ratio f/c" "MiB wire f / c" "wire/disk" "NDJSON MB/s" "conns f/c" "resets f/c"
for enc in identity gzip; do
    for p in 1 4; do
        f=$enc:$p:fhirsync c=$enc:$p:curl
        fm=$(med "$f" 1) cm=$(med "$c" 1)
        wf=$(med "$f" 2) wc=$(med "$c" 2)
        printf '%-9s %3s  %-17s %-17s %-12s %-16s %-9s %-11s %-9s %s\n' "$enc" "$p" \
            "$fm ($(bst "$f" 1))" "$cm ($(bst "$c" 1))" \
            "$(ratio "$fm" "$cm") ($(ratio "$(bst "$f" 1)" "$(bst "$c" 1)"))" \
            "$(mib "$wf") / $(mib "$wc")" \
            "$(echo "scale=3; $wf / $NDJSON_BYTES" | bc | sed 's/^\./0./')" \
            "$(echo "scale=1; $NDJSON_BYTES / 1000000 / $fm" | bc)" \
            "$(med "$f" 4) / $(med "$c" 4)" "$(sum "$f" 5) / $(sum "$c" 5)"
    done
done
speedup() { ratio "$(med "$1" 1)" "$(med "$2" 1)"; }
printf '\nworth (fhirsync, median times): parallel 4 vs 1: x%s identity, x%s gzip; ' \
    "$(speedup identity:1:fhirsync identity:4:fhirsync)" \
    "$(speedup gzip:1:fhirsync gzip:4:fhirsync)"
printf 'gzip vs identity: x%s at parallel 1, x%s at parallel 4\n' \
    "$(speedup identity:1:fhirsync gzip:1:fhirsync)" \
    "$(speedup identity:4:fhirsync gzip:4:fhirsync)"
printf 'worth (curl, median times):     parallel 4 vs 1: x%s identity, x%s gzip; ' \
    "$(speedup identity:1:curl identity:4:curl)" "$(speedup gzip:1:curl gzip:4:curl)"
printf 'gzip vs identity: x%s at parallel 1, x%s at parallel 4\n' \
    "$(speedup identity:1:curl gzip:1:curl)" "$(speedup identity:4:curl gzip:4:curl)"
printf 'fhirsync before its first download (discovery, token; not in the times above): %s s\n' \
    "$(median $(for k in identity:1 identity:4 gzip:1 gzip:4; do runs "$k:fhirsync"; done |
        awk '{ print $7 }'))"

f1=$(med ka:fhirsync1 1) fn=$(med ka:fhirsyncN 1) ck=$(med ka:curl 1) cc=$(med ka:close 1)
per() { echo "scale=1; $1 * 1000 / $2" | bc; }
printf '\nkeep-alive: %s REST pages of %s Observations, one after another; median of %s\n' \
    "$NPAGES" "$PAGE_SIZE" "$ROUNDS"
printf '%-46s %8s %10s %12s\n' "" "total s" "ms/page" "connections"
printf '%-46s %8s %10s %12s\n' "fhirsync get --limit (the pages on one)" "$fn" \
    "$(per "$(echo "$fn - $f1" | bc)" $((NPAGES - 1)))" "$(med ka:fhirsyncN 4)"
printf '%-46s %8s %10s %12s\n' "  its start: fhirsync get of one page" "$f1" "" \
    "$(med ka:fhirsync1 4)"
printf '%-46s %8s %10s %12s\n' "curl, same URLs, one process (keep-alive)" "$ck" \
    "$(per "$ck" "$NPAGES")" "$(med ka:curl 4)"
printf '%-46s %8s %10s %12s\n' "curl, Connection: close (a connection a page)" "$cc" \
    "$(per "$cc" "$NPAGES")" "$(med ka:close 4)"
printf 'ratio fhirsync / curl keep-alive per page: %s; keep-alive is worth x%s per page\n' \
    "$(ratio "$(per "$(echo "$fn - $f1" | bc)" $((NPAGES - 1)))" "$(per "$ck" "$NPAGES")")" \
    "$(ratio "$cc" "$ck")"
