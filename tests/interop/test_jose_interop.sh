#!/usr/bin/env bash
# interop/test_jose_interop.sh: fhirsync's JOSE against an independent implementation, the npm
# `jose` package (tests/interop/jose_peer.mjs), in both directions:
#   - keys from `fhirsync keygen` and JWK Sets from `fhirsync jwks` import in jose, and jose's
#     RFC 7638 thumbprint equals fhirsync's kid;
#   - JWTs fhirsync signs verify in jose for RS384 ES384 RS256 PS384 RS512 ES256, and a tampered
#     one is rejected; jose can sign with the PKCS#8 file keygen wrote;
#   - JWTs jose signs verify in fhirsync's verifier (test_jose --verify), tampered ones do not,
#     and fhirsync loads the private JWKs jose exports.
# Needs FHIRSYNC_BIN and FHIRSYNC_BUILD_DIR (set by ctest); node and npm. Uses the one harness
# (tests/integration/lib.sh): ok/not_ok lines, a summary, non-zero when anything fails.
source "$(dirname "$0")/../integration/lib.sh"

here=$(cd "$(dirname "$0")" && pwd)
bin=$FHIRSYNC_BIN
build=${FHIRSYNC_BUILD_DIR:?FHIRSYNC_BUILD_DIR must point at the build directory}
tool=$build/tests/test_jose
peer=$here/jose_peer.mjs

for need in "$bin" "$tool"; do
    [ -x "$need" ] || die "$need is missing (build the fhirsync_cli and test_jose targets)"
done
command -v node >/dev/null || die "node is not installed (scripts/install-deps.sh installs it)"
ensure_npm_peers
work=$TMP

# check DESCRIPTION COMMAND...: run it; ok, or not_ok with its output.
check() {
    local what=$1
    shift
    local out
    if out=$("$@" 2>&1); then
        ok "$what"
    else
        not_ok "$what"
        printf '%s\n' "$out" | sed 's/^/      /'
    fi
}

b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }

# The JWT with one character in the middle of its signature changed.
tamper_signature() {
    local jwt=$1 head sig mid c r
    head=${jwt%.*}
    sig=${jwt##*.}
    mid=$((${#sig} / 2))
    c=${sig:$mid:1}
    r=A
    [ "$c" = A ] && r=B
    printf '%s.%s%s%s\n' "$head" "${sig:0:$mid}" "$r" "${sig:$((mid + 1))}"
}

# The JWT with other claims under the original header and signature.
tamper_payload() {
    local jwt=$1 header sig payload
    header=${jwt%%.*}
    sig=${jwt##*.}
    payload=$(printf '{"iss":"attacker","sub":"attacker","exp":%s}' "$(($(date +%s) + 300))" | b64url)
    printf '%s.%s.%s\n' "$header" "$payload" "$sig"
}

now=$(date +%s)
claims() {
    printf '{"iss":"interop-client","sub":"interop-client","aud":"https://ehr.example/oauth2/token",'
    printf '"exp":%s,"iat":%s,"nbf":%s,"jti":"%s"}' "$((now + 300))" "$now" "$now" "$RANDOM$RANDOM"
}

# For check(): succeed when COMMAND fails and says PATTERN (so a crash or a missing file does not
# count as a rejection).
fails_with() {
    local pattern=$1 out
    shift
    if out=$("$@" 2>&1); then
        echo "accepted: $out"
        return 1
    fi
    printf '%s\n' "$out"
    grep -q -- "$pattern" <<<"$out"
}
# For check(): succeed when COMMAND succeeds and says PATTERN.
says() {
    local pattern=$1 out
    shift
    out=$("$@" 2>&1) || { printf '%s\n' "$out"; return 1; }
    printf '%s\n' "$out"
    grep -q -- "$pattern" <<<"$out"
}

echo "== fhirsync signs, jose verifies =="
declare -A jwt_of key_of
for alg in RS384 ES384 RS256 PS384 RS512 ES256; do
    dir=$work/ours-$alg
    if ! "$bin" keygen --alg "$alg" --out "$dir" >"$work/keygen-$alg.log" 2>&1; then
                not_ok "fhirsync keygen --alg $alg"
        sed 's/^/      /' "$work/keygen-$alg.log"
        continue
    fi
    key=$(ls "$dir"/*.key.pem)
    key_of[$alg]=$key
    kid=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).keys[0].kid)' \
        "$dir/jwks.json")
    check "$alg: keygen's jwks.json imports in jose and kid = jose thumbprint" \
        node "$peer" thumbprints "$dir/jwks.json"
    if ! jwt=$("$tool" --sign "$alg" "$key" "$(claims)" 2>&1); then
                not_ok "$alg: fhirsync signs: $jwt"
        continue
    fi
    jwt_of[$alg]=$jwt
    check "$alg: jose verifies the JWT fhirsync signed" node "$peer" verify "$dir/jwks.json" "$jwt" "$alg"
    check "$alg: jose rejects it with a tampered signature" \
        says ERR_JWS_SIGNATURE_VERIFICATION_FAILED \
        node "$peer" reject "$dir/jwks.json" "$(tamper_signature "$jwt")" "$alg"
    check "$alg: jose rejects it with tampered claims" \
        says ERR_JWS_SIGNATURE_VERIFICATION_FAILED \
        node "$peer" reject "$dir/jwks.json" "$(tamper_payload "$jwt")" "$alg"
    if jose_jwt=$(node "$peer" sign-pkcs8 "$alg" "$key" "$kid" "$(claims)" 2>&1); then
        check "$alg: jose signs with keygen's PKCS#8 file, fhirsync verifies" \
            says "verified $alg" "$tool" --verify "$dir/jwks.json" "$jose_jwt"
    else
                not_ok "$alg: jose cannot use keygen's PKCS#8 file: $jose_jwt"
    fi
done

echo "== key rotation: one JWK Set for two keys =="
if [ -n "${key_of[RS384]:-}" ] && [ -n "${key_of[ES384]:-}" ]; then
    check "fhirsync jwks --key RSA --key EC writes a set" \
        "$bin" jwks --key "${key_of[RS384]}" --key "${key_of[ES384]}" --out "$work/rotation.json"
    check "rotation set: both keys import in jose, kids = thumbprints" \
        node "$peer" thumbprints "$work/rotation.json"
    check "rotation set: jose picks the RS384 key by kid" \
        node "$peer" verify "$work/rotation.json" "${jwt_of[RS384]}" RS384
    check "rotation set: jose picks the ES384 key by kid" \
        node "$peer" verify "$work/rotation.json" "${jwt_of[ES384]}" ES384
    check "rotation set: jose refuses the RS384 token when pinned to PS384" \
        says ERR_JOSE_ALG_NOT_ALLOWED \
        node "$peer" reject "$work/rotation.json" "${jwt_of[RS384]}" PS384
fi

echo "== jose signs, fhirsync verifies =="
for alg in RS384 ES384 PS384 RS256 RS512 ES256; do
    dir=$work/jose-$alg
    if ! jwt=$(node "$peer" sign "$alg" "$dir" "$(claims)" 2>&1); then
                not_ok "$alg: jose signs: $jwt"
        continue
    fi
    check "$alg: fhirsync verifies the JWT jose signed" \
        says "verified $alg" "$tool" --verify "$dir/jwks.json" "$jwt"
    check "$alg: fhirsync rejects it with a tampered signature" \
        fails_with "signature does not verify" \
        "$tool" --verify "$dir/jwks.json" "$(tamper_signature "$jwt")"
    check "$alg: fhirsync rejects it with tampered claims" \
        fails_with "signature does not verify" \
        "$tool" --verify "$dir/jwks.json" "$(tamper_payload "$jwt")"
    if ours=$("$tool" --sign "$alg" "$dir/private.jwk" "$(claims)" 2>&1); then
        check "$alg: fhirsync loads jose's private JWK; jose verifies what it signs" \
            node "$peer" verify "$dir/jwks.json" "$ours" "$alg"
    else
                not_ok "$alg: fhirsync cannot sign with jose's private JWK: $ours"
    fi
done

finish
