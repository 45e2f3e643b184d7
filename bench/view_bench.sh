#!/usr/bin/env bash
# bench/view_bench.sh: the SQL on FHIR views benchmark (issue 14) against the sandbox, on this
# machine, with baselines measured in the same run. Never a test: it prints figures and ratios,
# it does not fail on them.
#
#   1. from NDJSON: one export of a PATIENTS-patient sandbox (`fhirsync export`, the types and
#      level of bench/sync_bench.sh), then bench/view_bench over its files and the shipped views
#      (views/*.json): lines/s, MB/s, rows/s of every view against reading the lines and parsing
#      them with jansson (json_loadb), with jansson's exact-number parse (what the engine used
#      before json/dom.c) and with the engine's document (json/dom.c), best of ROUNDS; per view
#      against the parse of the lines of its type; peak RSS.
#   2. during a sync: full `fhirsync sync` runs of the same sandbox into fresh SQLite stores, with
#      the profile setting `views = none` and `views = shipped`, alternating which goes first,
#      SYNC_ROUNDS times each: wall time, CPU time (user + sys of fhirsync, /usr/bin/time), peak
#      RSS, and the ratios with / without views. Target (issue 14): materializing the shipped views
#      adds at most 30% to a full sync's wall time, and memory stays flat. The sandbox generates
#      and serves the export on the same cores, so the CPU ratio is the steadier figure. This part
#      needs view materialization in the store: without it (`fhirsync view list --help` fails) it
#      is skipped with a message.
#
#   bench/view_bench.sh [BUILD_DIR]     (default: build/release; a release build is best)
#   PATIENTS="1000 10000"  the sizes (default 10000; about 99 resources per patient, 0.89 KB each)
#   ROUNDS=3 (view_bench), SYNC_ROUNDS=3 (each sync), EVERY=1 (view_bench's every-line pass)
# needs: node, curl, /usr/bin/time; about 2 GB of free disk in $TMPDIR at 10,000 patients.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build/release}" && pwd)
F=$build/fhirsync
SANDBOX=$build/fhirsync-sandbox
VIEW_BENCH=$build/bench/view_bench
for b in "$F" "$SANDBOX" "$VIEW_BENCH"; do
    [ -x "$b" ] || { echo "view_bench: $b is not built" >&2; exit 2; }
done
[ -x /usr/bin/time ] || { echo "view_bench: /usr/bin/time is needed (CPU time, peak RSS)" >&2; exit 2; }
sizes=${PATIENTS:-10000}
rounds=${ROUNDS:-3}
sync_rounds=${SYNC_ROUNDS:-3}
every=${EVERY:-1}
work=$(mktemp -d "${TMPDIR:-/tmp}/fhirsync-view-bench.XXXXXX")
sandbox_pid=
cleanup() {
    [ -n "$sandbox_pid" ] && kill "$sandbox_pid" 2>/dev/null && wait "$sandbox_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
for v in $(env | grep -o '^FHIRSYNC_[A-Z_]*'); do unset "$v"; done

json_last() { # FILE EXPR: EXPR of the last JSON line of FILE (as j)
    node -e "const t=require('fs').readFileSync(process.argv[1],'utf8').trim().split('\n');
             const j=JSON.parse(t[t.length-1]); console.log($2)" "$1"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}'; }
best() { printf '%s\n' "$@" | sort -g | head -1; }

# timed NAME COMMAND...: run under /usr/bin/time; sets WALL, CPU (user + sys, s) and RSS (MB)
timed() {
    local name=$1
    shift
    /usr/bin/time -f '%e %U %S %M' -o "$work/$name.time" "$@" >"$work/$name.out" \
        2>"$work/$name.err" || { echo "$name failed:" >&2; tail -5 "$work/$name.err" >&2; return 1; }
    read -r WALL user sys rss <"$work/$name.time"
    CPU=$(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.2f", u + s}')
    RSS=$(awk -v k="$rss" 'BEGIN {printf "%.1f", k / 1024}')
}

# the views part needs the store to materialize views (the `views` setting)
have_views=no
"$F" view list --help >/dev/null 2>&1 && have_views=yes

"$F" keygen --alg RS384 --out keys --name bench >/dev/null
printf 'machine: %s, %s CPU(s), %s, %s; load %s\n' "$(uname -m)" "$(nproc)" \
    "$(awk '/MemTotal/ {printf "%.0f GB RAM", $2 / 1048576}' /proc/meminfo)" \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" \
    "$(cut -d' ' -f1-3 /proc/loadavg)"
for patients in $sizes; do
    printf '\n=== %s patients\n' "$patients"
    rm -rf ready.json sandbox-files
    mkdir sandbox-files
    "$SANDBOX" --patients "$patients" --ready-file ready.json --work-dir sandbox-files \
        >sandbox.log 2>&1 &
    sandbox_pid=$!
    for _ in $(seq 1 600); do [ -s ready.json ] && break; sleep 0.1; done
    [ -s ready.json ] || { echo "the sandbox did not start:" >&2; cat sandbox.log >&2; exit 1; }
    base=$(node -e "console.log(require('./ready.json').base_url)")
    reg=$(node -e "console.log(require('./ready.json').register_url)")
    printf '{"client_id":"bench","scope":"system/*.read","jwks":%s}' "$(cat keys/jwks.json)" |
        curl -sS --fail-with-body -X POST -H 'Content-Type: application/json' --data-binary @- \
            "$reg" >/dev/null
    profile() { # VIEWS_SETTING (empty: no views line)
        cat <<INI
[endpoint bench]
base_url  = $base
client_id = bench
key_file  = $work/keys/bench.key.pem
alg       = RS384
INI
        [ -z "$1" ] || printf 'views     = %s\n' "$1"
    }
    profile "" >fhirsync.ini
    export FHIRSYNC_CONFIG=$work/fhirsync.ini

    # ---- 1. from NDJSON ----------------------------------------------------------------------
    # the same request as the sync's: the US Core types the sandbox has, Patient level
    types=AllergyIntolerance,Condition,DiagnosticReport,DocumentReference,Encounter
    types=$types,Immunization,MedicationRequest,Observation,Patient,Procedure
    rm -rf export
    timed export "$F" export --out export --level patient --type "$types" --json --no-progress
    printf 'export: %s resources, %s MB in %s files, %s s\n' \
        "$(json_last export.out j.resources)" \
        "$(awk -v b="$(json_last export.out j.bytes)" 'BEGIN {printf "%.1f", b / 1e6}')" \
        "$(find export -name '*.ndjson' | wc -l)" "$WALL"
    echo "\$ view_bench --rounds $rounds --every $every --views views/ EXPORT_DIR"
    "$VIEW_BENCH" --rounds "$rounds" --every "$every" --views "$root/views" export | tee vb.out
    # the one-read pass's seconds (its 7th column: the views of each line's type evaluated
    # together, as the store does), for the comparison with a sync below
    by_type_s=$(awk -F'|' '/views by type, one read/ {gsub(/ /, "", $7); print $7}' vb.out)
    rm -rf export sandbox-files/*

    # ---- 2. during a sync --------------------------------------------------------------------
    if [ "$have_views" = no ]; then
        echo "sync with views: skipped: this fhirsync does not materialize views yet" \
            "('fhirsync view list --help' fails; the 'views' setting comes with it)"
        # what there is to compare with meanwhile: the same full sync without views, beside the
        # time the views took over the same lines above (two measurements, not a sync with views)
        W="" C="" R=""
        for _ in $(seq 1 "$sync_rounds"); do
            rm -rf s.db* s.db.work
            timed sync "$F" sync --store "$work/s.db" --json --no-progress
            W+="$WALL " C+="$CPU " R+="$RSS "
        done
        rm -rf s.db* s.db.work
        # shellcheck disable=SC2086 # the lists are words
        printf 'full sync into SQLite, no views: %s resources, best of %s: wall %s s, CPU %s s,' \
            "$(json_last sync.out j.resources)" "$sync_rounds" "$(best $W)" "$(best $C)"
        # shellcheck disable=SC2086
        printf ' peak %s MB   [%s| %s| %s]\n' "$(best $R)" "$W" "$C" "$R"
        # shellcheck disable=SC2086
        printf 'the views by type, one read, over the same lines (view_bench): %s s = %s x that' \
            "$by_type_s" "$(ratio "$by_type_s" "$(best $W)")"
        # shellcheck disable=SC2086
        printf " sync's wall time, %s x its CPU time (one thread; none of the sync's work in it)\n" \
            "$(ratio "$by_type_s" "$(best $C)")"
    else
        declare -A wall cpu rss stored
        for setting in none shipped; do wall[$setting]="" cpu[$setting]="" rss[$setting]=""; done
        for i in $(seq 1 "$sync_rounds"); do
            order="none shipped"
            [ $((i % 2)) = 0 ] && order="shipped none"
            for setting in $order; do
                profile "$setting" >fhirsync.ini
                rm -rf s.db* s.db.work
                timed "sync-$setting" "$F" sync --store "$work/s.db" --json --no-progress
                stored[$setting]=$(json_last "sync-$setting.out" j.resources)
                wall[$setting]+="$WALL " cpu[$setting]+="$CPU " rss[$setting]+="$RSS "
                if [ "$setting" = shipped ] && [ "$i" = 1 ]; then
                    "$F" view list --store "$work/s.db" >view-list.out 2>&1 &&
                        sed 's/^/  view list: /' view-list.out
                fi
            done
        done
        rm -rf s.db* s.db.work
        profile "" >fhirsync.ini
        printf '%-28s %10s %14s %14s %12s   (best of %s; all runs in brackets)\n' \
            "full sync into SQLite" resources "wall s" "CPU s" "peak MB" "$sync_rounds"
        for setting in none shipped; do
            # shellcheck disable=SC2086 # the lists are words
            printf '%-28s %10s %14s %14s %12s   [%s| %s| %s]\n' "views = $setting" \
                "${stored[$setting]}" "$(best ${wall[$setting]})" "$(best ${cpu[$setting]})" \
                "$(best ${rss[$setting]})" "${wall[$setting]}" "${cpu[$setting]}" "${rss[$setting]}"
        done
        # shellcheck disable=SC2086 # the lists are words
        printf '%-28s %10s %14s %14s %12s   (target: wall <= 1.30, memory flat)\n' \
            "ratio shipped / none" "" \
            "$(ratio "$(best ${wall[shipped]})" "$(best ${wall[none]})")" \
            "$(ratio "$(best ${cpu[shipped]})" "$(best ${cpu[none]})")" \
            "$(ratio "$(best ${rss[shipped]})" "$(best ${rss[none]})")"
        unset wall cpu rss stored
    fi
    { kill "$sandbox_pid" && wait "$sandbox_pid" 2>/dev/null; } || true
    sandbox_pid=
done
