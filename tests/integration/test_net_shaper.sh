#!/usr/bin/env bash
# test_net_shaper.sh: the pieces of bench/net_bench.sh. bench/shaper (the loopback link) forwards
# bytes exactly, both ways and through two pairs, delays them (no bound on speed is checked, only
# that the modelled latency is there: the first byte of an answer cannot come before the set-up
# RTT and the request's trip), counts them, resets connections when told to, and stops cleanly;
# the sandbox advertises the proxy's origin with --public-url and sends bulk files gzip-encoded
# with --gzip (identical once decoded; a Range request gets the plain bytes), and `fhirsync
# export` runs through the shaper. Skipped when the benchmarks are not built (FHIRSYNC_BENCH=OFF).
set -euo pipefail

source "$(dirname "$0")/lib.sh"
clean_fhirsync_env

SHAPER=${FHIRSYNC_BUILD_DIR:?}/bench/shaper
[ -x "$SHAPER" ] || { echo "SKIP: $SHAPER not built"; exit 0; }

expect_exit 0 "shaper --help" -- "$SHAPER" --help
expect_match "$OUT" "usage: shaper" "--help prints the usage"
expect_exit 2 "shaper without --pair" -- "$SHAPER" --rtt 10
expect_exit 2 "shaper with a bad --rate" -- "$SHAPER" --rate fast --pair 0=127.0.0.1:1
expect_exit 2 "shaper with a bad --pair" -- "$SHAPER" --pair 0=127.0.0.1

# the target: GET /blob sends a random file, POST /echo sends the body back
head -c 3000000 /dev/urandom >"$TMP/blob"
head -c 1000000 /dev/urandom >"$TMP/upload"
cat >"$TMP/target.mjs" <<'EOF'
import http from "node:http";
import fs from "node:fs";
const [blob, ready] = process.argv.slice(2);
const server = http.createServer((req, res) => {
    if (req.method === "GET" && req.url === "/blob") {
        res.writeHead(200, {"Content-Length": fs.statSync(blob).size});
        fs.createReadStream(blob).pipe(res);
    } else if (req.method === "POST" && req.url === "/echo") {
        res.writeHead(200);
        req.pipe(res);
    } else {
        res.writeHead(404).end();
    }
});
server.listen(0, "127.0.0.1", () => fs.writeFileSync(ready, String(server.address().port)));
process.on("SIGTERM", () => process.exit(0));
EOF
node "$TMP/target.mjs" "$TMP/blob" "$TMP/target.port" &
PIDS+=($!)
wait_for_file "$TMP/target.port" || die "the target server did not start"
TARGET=127.0.0.1:$(cat "$TMP/target.port")

# start_shaper NAME OPTIONS...: a shaper whose ready file is $TMP/NAME.json; sets SH_PID
start_shaper() {
    local name=$1
    shift
    "$SHAPER" --ready-file "$TMP/$name.json" --stats-file "$TMP/$name.stats" "$@" \
        >"$TMP/$name.out" 2>"$TMP/$name.err" &
    SH_PID=$!
    PIDS+=("$SH_PID")
    wait_for_file "$TMP/$name.json" 10 || die "the shaper did not start: $(cat "$TMP/$name.err")"
}
# stats NAME: the stats file, fresh (SIGUSR1, then its seq changes)
stats() {
    local seq=0
    [ -s "$TMP/$1.stats" ] && seq=$(json_get "$TMP/$1.stats" j.seq)
    kill -USR1 "$SH_PID"
    for _ in $(seq 1 100); do
        [ -s "$TMP/$1.stats" ] && [ "$(json_get "$TMP/$1.stats" j.seq)" != "$seq" ] && break
        sleep 0.05
    done
    cat "$TMP/$1.stats"
}

start_shaper link --rate 400M --rtt 40 --pair "0=$TARGET" --pair "127.0.0.1:0=$TARGET"
P1=$(json_get "$TMP/link.json" 'j.ports[0]')
P2=$(json_get "$TMP/link.json" 'j.ports[1]')
[ "$P1" -gt 0 ] && [ "$P2" -gt 0 ] && [ "$P1" != "$P2" ] && ok "two listeners ($P1, $P2)" ||
    fail "ready file: $(cat "$TMP/link.json")"

TTFB=$(curl -sS -o "$TMP/got" -w '%{time_starttransfer}' "http://127.0.0.1:$P1/blob")
cmp -s "$TMP/blob" "$TMP/got" && ok "GET through the shaper: the same 3,000,000 bytes" ||
    fail "GET through the shaper: the bytes differ"
# set-up RTT (40 ms) + request and answer (20 ms each) = 80 ms at least; half of it is checked
[ "$(echo "$TTFB >= 0.040" | bc)" = 1 ] && ok "the first byte came after the latency ($TTFB s)" ||
    fail "the first byte came after $TTFB s: no latency"
curl -sS -o "$TMP/echoed" --data-binary @"$TMP/upload" -H 'Content-Type: application/octet-stream' \
    "http://127.0.0.1:$P2/echo"
cmp -s "$TMP/upload" "$TMP/echoed" &&
    ok "POST through the second pair: the same 1,000,000 bytes both ways" ||
    fail "POST echo through the shaper: the bytes differ"
GETS=()
for i in 1 2 3; do
    curl -sS -o "$TMP/par$i" "http://127.0.0.1:$P1/blob" &
    GETS+=($!)
done
wait "${GETS[@]}" || true
for i in 1 2 3; do
    cmp -s "$TMP/blob" "$TMP/par$i" || fail "parallel GET $i: the bytes differ"
done
ok "three parallel GETs sharing the link"

S=$(stats link)
down=$(jget .bytes_down <<<"$S")
up=$(jget .bytes_up <<<"$S")
conns=$(jget .connections <<<"$S")
[ "$down" -ge 13000000 ] && [ "$up" -ge 1000000 ] && [ "$conns" -eq 5 ] &&
    ok "counters: $down bytes down, $up up, $conns connections" || fail "counters: $S"
[ "$(jget '.pairs[1].bytes_up' <<<"$S")" -ge 1000000 ] && ok "counted per pair" ||
    fail "per pair: $S"

kill -TERM "$SH_PID"
rc=0
wait "$SH_PID" || rc=$?
[ "$rc" = 0 ] && [ ! -e "$TMP/link.json" ] && [ -s "$TMP/link.stats" ] &&
    ok "SIGTERM: exit 0, ready file removed, counters written" ||
    fail "SIGTERM: exit $rc, ready file $(ls "$TMP/link.json" 2>&1)"

# resets: at 1000 per MiB the GET of 3 MB cannot finish
start_shaper flaky --rate 0 --rtt 0 --reset 1000 --pair "0=$TARGET"
rc=0
curl -sS -o /dev/null "http://127.0.0.1:$(json_get "$TMP/flaky.json" 'j.ports[0]')/blob" \
    2>/dev/null || rc=$?
[ "$rc" != 0 ] && ok "a reset connection fails the transfer (curl exit $rc)" ||
    fail "the transfer survived --reset 1000"
[ "$(stats flaky | jget .resets)" -ge 1 ] && ok "the reset is counted" || fail "no reset counted"
kill -TERM "$SH_PID"
wait "$SH_PID" || true

# ---- the sandbox behind the shaper: --public-url, --public-storage-url, --gzip --------------
expect_exit 2 "sandbox --public-url with a path" -- "$FHIRSYNC_SANDBOX_BIN" --public-url \
    http://127.0.0.1:1/fhir
expect_exit 2 "sandbox --public-url not http(s)" -- "$FHIRSYNC_SANDBOX_BIN" --public-url ftp://x:1
free_port() {
    node -e 'const s = require("net").createServer().listen(0, "127.0.0.1",
             () => { console.log(s.address().port); s.close(); })'
}
MAIN=$(free_port)
STORE=$(free_port)
mkdir -p "$TMP/sandbox-files"
start_sandbox --patients 5 --gzip --work-dir "$TMP/sandbox-files" \
    --public-url "http://127.0.0.1:$MAIN/" --public-storage-url "http://localhost:$STORE"
STORAGE_URL=$(json_get "$SANDBOX_DIR/ready.json" j.storage_base_url)
[ "$BASE_URL" = "http://127.0.0.1:$MAIN/fhir" ] &&
    [ "$STORAGE_URL" = "http://localhost:$STORE/storage" ] &&
    ok "the ready file advertises the public origins" ||
    fail "ready file: $(cat "$SANDBOX_DIR/ready.json")"
start_shaper front --rate 100M --rtt 10 \
    --pair "$MAIN=127.0.0.1:$(json_get "$SANDBOX_DIR/ready.json" j.port)" \
    --pair "$STORE=127.0.0.1:$(json_get "$SANDBOX_DIR/ready.json" j.storage_port)"
"$FHIRSYNC_BIN" keygen --alg RS384 --out "$TMP/keys" --name net >/dev/null
printf '{"client_id":"net","scope":"system/*.read","jwks":%s}' "$(cat "$TMP/keys/jwks.json")" |
    curl -sS --fail-with-body -X POST -H 'Content-Type: application/json' --data-binary @- \
        "$REGISTER_URL" >/dev/null || die "registering a client through the shaper"
export FHIRSYNC_BASE_URL=$BASE_URL FHIRSYNC_CLIENT_ID=net FHIRSYNC_KEY_FILE=$TMP/keys/net.key.pem
expect_exit 0 "fhirsync export through the shaper" -- "$FHIRSYNC_BIN" export --out "$TMP/export" \
    --keep-job --no-progress
FILE=$(jget '.output.find(o => o.type === "Observation").url' <"$TMP/export/manifest.json")
case "$FILE" in
"http://127.0.0.1:$MAIN/fhir/bulkfiles/"*) ok "the manifest's URLs are the shaper's" ;;
*) fail "manifest URL $FILE" ;;
esac
"$FHIRSYNC_BIN" token --print-token | tail -1 | sed 's/^/Authorization: Bearer /' >"$TMP/auth.hdr"
chmod 600 "$TMP/auth.hdr"
curl -sS --fail --compressed -D "$TMP/gz.headers" -o "$TMP/gz.body" -H @"$TMP/auth.hdr" "$FILE"
curl -sS --fail -D "$TMP/plain.headers" -o "$TMP/plain.body" -H @"$TMP/auth.hdr" "$FILE"
curl -sS --fail -D "$TMP/range.headers" -o "$TMP/range.body" -H @"$TMP/auth.hdr" \
    --compressed -r 100- "$FILE"
expect_match "$(cat "$TMP/gz.headers")" "[Cc]ontent-[Ee]ncoding: gzip" \
    "--gzip: gzip to a client that accepts it"
expect_no_match "$(cat "$TMP/plain.headers")" "[Cc]ontent-[Ee]ncoding" \
    "--gzip: the plain file to a client that does not"
expect_no_match "$(cat "$TMP/range.headers")" "[Cc]ontent-[Ee]ncoding" \
    "--gzip: the plain bytes to a Range request"
OBS=$(ls "$TMP"/export/Observation.*.ndjson | head -1)
cmp -s "$TMP/gz.body" "$OBS" && cmp -s "$TMP/plain.body" "$OBS" &&
    cmp -s "$TMP/range.body" <(tail -c +101 "$OBS") &&
    ok "decoded, plain and ranged bodies are fhirsync's file" ||
    fail "the bodies differ from the exported file"
S=$(stats front)
[ "$(jget '.pairs[0].bytes_down' <<<"$S")" -gt 0 ] && ok "the traffic went through the shaper" ||
    fail "nothing through the shaper: $S"
ls "$TMP"/sandbox-files/*/*.gz >/dev/null 2>&1 && ok "the gzip copies sit beside the files" ||
    fail "no .gz copy in the job's folder"
stop_sandbox
[ -z "$(ls -A "$TMP/sandbox-files")" ] &&
    ok "the jobs' folders, gzip copies included, removed at stop" ||
    fail "left in the work dir: $(ls -R "$TMP/sandbox-files")"
finish
