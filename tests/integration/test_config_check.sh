#!/usr/bin/env bash
# integration/test_config_check.sh: configuration at the size of many practices, through the CLI.
# `fhirsync config check` over a directory of *.ini files and over one file of many sections:
# every problem of every file reported with its file, line, endpoint and setting (refused values,
# unknown settings, lines that do not parse, a duplicate endpoint naming both files, what an
# endpoint lacks, a store receiving two servers, the same server twice, key files missing, readable
# by others or not a key), the summary line, exit 0 with warnings only and 3 with errors, the
# --json report parsed with node, --endpoint, a bad environment variable reported once; 500
# generated endpoints checked clean (the time printed, never judged); and a directory used by
# another command (token against the sandbox, the key from a [defaults] in another file). Keys are
# generated here.
source "$(dirname "$0")/lib.sh"
F=$FHIRSYNC_BIN
cd "$TMP"
clean_fhirsync_env

"$F" keygen --alg RS384 --out shared-keys --name shared >/dev/null || die "keygen"
"$F" keygen --alg ES384 --out ec-keys --name ec >/dev/null || die "keygen (EC)"

# --- usage ------------------------------------------------------------------------------------
expect_exit 2 "config without a sub-command" -- "$F" config
expect_exit 2 "an unknown sub-command" -- "$F" config frobnicate
expect_match "$ERR" "unknown sub-command 'frobnicate'" "the usage error names it"
expect_exit 0 "config check --help" -- "$F" config check --help
expect_match "$OUT" "--json" "the help lists --json"
expect_exit 2 "an unknown option" -- "$F" config check --frob
mkdir empty
expect_exit 3 "no configuration at all" -- env -C empty "$F" config check
expect_match "$ERR" "--config PATH.*FHIRSYNC_CONFIG" "says how to give one"

# --- a clean directory: [defaults] in one file, a practice per file -----------------------------
mkdir good.d
cat >good.d/00-defaults.ini <<'INI'
; shared by every practice
[defaults]
key_file = ../shared-keys/shared.key.pem
scope    = system/*.read
INI
for i in 1 2 3; do
    cat >"good.d/practice-$i.ini" <<INI
[endpoint practice-$i]
base_url  = https://fhir4.eclinicalworks.com/fhir/r4/PRACTICE$i
client_id = client-$i
store     = practice-$i.db
INI
done
echo "not configuration" >good.d/README
expect_exit 0 "a clean directory" -- "$F" config check --config good.d
[ "$OUT" = "3 endpoints, 3 stores, 0 errors, 0 warnings" ] && ok "the summary line alone" ||
    not_ok "summary: $OUT"
expect_exit 0 "FHIRSYNC_CONFIG naming the directory" -- \
    env FHIRSYNC_CONFIG="$TMP/good.d" "$F" config check
expect_match "$OUT" "^3 endpoints" "the same endpoints"

# --- every kind of problem, in several files --------------------------------------------------
mkdir bad.d
cp good.d/00-defaults.ini bad.d/
cat >bad.d/a.ini <<'INI'
[endpoint alpha]
base_url  = https://fhir.example.org/alpha
client_id = alpha
store     = alpha.db
timeout   = soon
tmeout    = 5

[endpoint beta]
base_url = https://fhir.example.org/beta
store    = beta.db
this line is junk
INI
cat >bad.d/b.ini <<'INI'
; another practice that reused a name
[endpoint alpha]
base_url  = https://fhir.example.org/alpha-2
client_id = alpha-2

[endpoint gamma]
base_url  = https://fhir.example.org/gamma
client_id = gamma
store     = shared.db

[endpoint delta]
base_url  = https://fhir.example.org/delta
client_id = delta
store     = shared.db

[endpoint epsilon]
base_url  = https://fhir.example.org/gamma/
client_id = epsilon
store     = shared.db
INI
cat >bad.d/c.ini <<'INI'
[endpoint zeta]
base_url  = https://fhir.example.org/zeta
client_id = zeta
store     = zeta.db
key_file  = missing.key.pem

[endpoint eta]
base_url  = https://fhir.example.org/eta
client_id = eta
store     = eta.db
key_file  = ../open.key.pem

[endpoint theta]
base_url  = https://fhir.example.org/theta
client_id = theta
store     = theta.db
key_file  = ../ec-keys/ec.key.pem
alg       = RS384
INI
cp shared-keys/shared.key.pem open.key.pem
chmod 644 open.key.pem

expect_exit 3 "a directory with errors" -- "$F" config check --config bad.d
# one line per problem: FILE:LINE: error|warning: endpoint NAME: what (naming the setting)
problem() { # DESCRIPTION PATTERN
    expect_match "$OUT" "$2" "$1"
}
problem "a refused value: file, line, endpoint, setting" \
    "^bad.d/a.ini:5: error: endpoint alpha: timeout must be a whole number"
problem "an unknown setting, with a suggestion" \
    "^bad.d/a.ini:6: error: endpoint alpha: unknown setting 'tmeout' \(did you mean 'timeout'\?\)"
problem "a line that does not parse" "^bad.d/a.ini:11: error: endpoint beta: cannot parse"
problem "a missing setting, at the endpoint's header" \
    "^bad.d/a.ini:8: error: endpoint beta: no client id: set client_id"
problem "a duplicate endpoint names both files" \
    "^bad.d/b.ini:2: error: endpoint alpha: duplicate endpoint 'alpha' \(already defined at bad.d/a.ini:1\)"
problem "two servers into one store" \
    "^bad.d/b.ini:14: error: endpoint delta: store .*shared.db also receives endpoint gamma \(bad.d/b.ini:6\)"
problem "the other of the two, too" "^bad.d/b.ini:9: error: endpoint gamma: store .*shared.db"
problem "the same server twice into one store: a warning" \
    "^bad.d/b.ini:17: warning: endpoint epsilon: same base URL, group_id, types and store as endpoint gamma"
problem "a missing key file" \
    "^bad.d/c.ini:5: error: endpoint zeta: key_file: .*missing.key.pem.*No such file"
problem "a key file readable by others" "^bad.d/c.ini:11: error: endpoint eta: key_file: .*chmod 600"
problem "an algorithm the key cannot sign with" \
    "^bad.d/c.ini:18: error: endpoint theta: alg RS384 cannot sign with the EC key"
problem "every endpoint of the shared store" "^bad.d/b.ini:19: error: endpoint epsilon: store"
expect_match "$OUT" "^8 endpoints, 6 stores, 11 errors, 1 warning$" "the summary counts them"
lines=$(grep -cE '^bad.d/[a-z]+.ini:[0-9]+: (error|warning): ' <<<"$OUT" || true)
[ "$lines" -eq 12 ] && ok "one line per problem, each with file:line" ||
    not_ok "$lines problem lines: $OUT"
expect_no_match "$OUT" "PRIVATE KEY" "no key material in the report"
expect_exit 3 "-q: errors only" -- "$F" config check --config bad.d -q
expect_no_match "$OUT" "warning:" "-q leaves the warnings out"

# --- the report as JSON ------------------------------------------------------------------------
expect_exit 3 "--json with errors" -- "$F" config check --config bad.d --json
printf '%s' "$OUT" >report.json
[ "$(json_get report.json 'j.endpoints + "/" + j.stores + "/" + j.errors + "/" + j.warnings')" = \
    "8/6/11/1" ] && ok "--json: the counts" || not_ok "--json counts: $(head -c 300 report.json)"
[ "$(json_get report.json 'j.problems.length')" = 12 ] && ok "--json: every problem" ||
    not_ok "--json problems"
[ "$(json_get report.json 'j.problems.filter(p => p.severity === "error").length')" = 11 ] &&
    ok "--json: errors agree with the count" || not_ok "--json error count"
[ "$(json_get report.json 'j.config')" = bad.d ] && ok "--json: the configuration" ||
    not_ok "--json config"
got=$(json_get report.json \
    'j.problems.filter(p => p.setting === "timeout").map(p => [p.file, p.line, p.endpoint, p.source].join(" ")).join(",")')
[ "$got" = "bad.d/a.ini 5 alpha bad.d/a.ini:5" ] && ok "--json: file, line, endpoint, source" ||
    not_ok "--json timeout problem: $got"
got=$(json_get report.json 'j.problems.filter(p => p.line > 0 && !p.file).length')
[ "$got" = 0 ] && ok "--json: a line always with its file" || not_ok "--json lines without file"
got=$(json_get report.json 'j.problems.find(p => p.endpoint === "zeta").setting')
[ "$got" = key_file ] && ok "--json: the key problem's setting" || not_ok "--json key: $got"
expect_exit 0 "--json of a clean directory" -- "$F" config check --config good.d --json
printf '%s' "$OUT" >clean.json
[ "$(json_get clean.json 'JSON.stringify([j.endpoints, j.errors, j.problems])')" = '[3,0,[]]' ] &&
    ok "--json: clean" || not_ok "--json clean: $OUT"

# --- --endpoint, warnings only, the environment ------------------------------------------------
expect_exit 3 "--endpoint: an endpoint with errors" -- "$F" config check --config bad.d \
    --endpoint alpha
expect_no_match "$OUT" "endpoint (beta|zeta):" "only that endpoint's problems"
expect_match "$OUT" "^1 endpoint, 1 store, 3 errors, 0 warnings$" "its summary"
mkdir warn.d
cp good.d/00-defaults.ini warn.d/
printf '[endpoint one]\nbase_url = https://fhir.example.org/r4\nclient_id = a\n' >warn.d/one.ini
printf '[endpoint two]\nbase_url = https://FHIR.example.org/r4/\nclient_id = b\n' >warn.d/two.ini
expect_exit 0 "warnings only" -- "$F" config check --config warn.d
expect_match "$OUT" "^warn.d/two.ini:2: warning: endpoint two: same base URL" "the warning"
expect_match "$OUT" "^2 endpoints, 1 store, 0 errors, 1 warning$" "its summary"
expect_exit 3 "--endpoint that does not exist" -- "$F" config check --config good.d --endpoint nope
expect_match "$ERR" "'nope' is not defined" "says so"
expect_exit 3 "a bad variable" -- env FHIRSYNC_TIMEOUT=soon "$F" config check --config good.d
n=$(grep -c "environment FHIRSYNC_TIMEOUT" <<<"$OUT" || true)
[ "$n" -eq 1 ] && ok "reported once, not per endpoint" || not_ok "$n times: $OUT"
expect_exit 3 "a flag counts as for sync" -- "$F" config check --config good.d --parallel 99
expect_match "$OUT" "command line --parallel: parallel must be" "the flag's problem"
expect_exit 0 "the environment overrides [defaults]" -- \
    env FHIRSYNC_KEY_FILE="$TMP/ec-keys/ec.key.pem" "$F" config check --config good.d --json
printf '%s' "$OUT" >env.json
[ "$(json_get env.json 'j.errors')" = 0 ] && ok "an EC key from the environment is fine" ||
    not_ok "env key: $OUT"
mkdir other.d
cp good.d/*.ini other.d/
printf '[endpoint practice-9]\nbase_url = https://x.example.org/9\nclient_id = c9\n' \
    >other.d/z.ini
mkdir other.d/broken.ini
expect_exit 3 "an unreadable *.ini among good ones" -- "$F" config check --config other.d
expect_match "$OUT" "^other.d/broken.ini: error: config file other.d/broken.ini cannot be read" \
    "the unreadable file"
expect_match "$OUT" "^4 endpoints, 4 stores, 1 error, 0 warnings$" "the other files still read"

# --- one file of 500 practices, and a directory of 500 files ----------------------------------
mkdir many.d
{
    printf '[defaults]\nkey_file = shared-keys/shared.key.pem\nrate_limit = 100\n'
    for i in $(seq -w 1 500); do
        printf '\n[endpoint p%s]\nbase_url = https://fhir4.eclinicalworks.com/fhir/r4/P%s\n' "$i" "$i"
        printf 'client_id = client-%s\nstore = postgresql://sync@db/ehr?options=-csearch_path%%3Dp%s\n' \
            "$i" "$i"
    done
} >many.ini
printf '[defaults]\nkey_file = ../shared-keys/shared.key.pem\n' >many.d/00-defaults.ini
for i in $(seq -w 1 500); do
    printf '[endpoint p%s]\nbase_url = https://fhir4.eclinicalworks.com/fhir/r4/P%s\n' "$i" "$i" \
        >"many.d/p$i.ini"
    printf 'client_id = client-%s\nstore = practice-%s.db\n' "$i" "$i" >>"many.d/p$i.ini"
done
for config in many.ini many.d; do
    expect_exit 0 "500 endpoints in $config" -- "$F" config check --config "$config"
    expect_match "$OUT" "^500 endpoints, 500 stores, 0 errors, 0 warnings$" "$config: all clean"
    start=$(date +%s%N)
    "$F" config check --config "$config" >/dev/null
    end=$(date +%s%N)
    echo "# $config: fhirsync config check of 500 endpoints: $(((end - start) / 1000000)) ms"
done
printf '[endpoint p250]\nbase_url = https://x.example.org/\nclient_id = x\n' >many.d/zz-late.ini
expect_exit 3 "a duplicate among 500 files" -- "$F" config check --config many.d
expect_match "$OUT" \
    "^many.d/zz-late.ini:1: error: endpoint p250: duplicate endpoint 'p250' \(already defined at many.d/p250.ini:1\)" \
    "names both files"
rm many.d/zz-late.ini

# --- a directory in use: token for one of its endpoints ---------------------------------------
start_sandbox --profile practice
mkdir live.d
printf '[defaults]\nkey_file = %s\nalg = RS384\n' "$TMP/keys/sync.key.pem" >live.d/00-defaults.ini
printf '[endpoint practice]\nbase_url = %s\nclient_id = sync-test\n' "$BASE_URL" \
    >live.d/practice.ini
printf '[endpoint elsewhere]\nbase_url = https://fhir.example.org/x\nclient_id = x\n' \
    >live.d/other.ini
unset FHIRSYNC_CONFIG
expect_exit 0 "token with --config DIR --endpoint NAME" -- \
    "$F" token --config live.d --endpoint practice --json
expect_match "$OUT" '"token_url"' "a token through the directory's endpoint and [defaults]"
expect_exit 3 "several endpoints need --endpoint" -- env FHIRSYNC_CONFIG="$TMP/live.d" "$F" token
expect_match "$ERR" "defines 2 endpoints" "says so"
stop_sandbox

finish
