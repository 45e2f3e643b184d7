/* fuzz/fuzz_sandbox_assertion.c: fuzz target for the sandbox token endpoint's client-assertion
 * checks (src/sandbox/assertion.c), without network: a registered client with an RSA and a P-384
 * key (made once at start-up) and a JWKS that also holds a duplicated kid. The first input byte
 * picks the mode:
 *   0      the rest is a compact JWS as it arrives in client_assertion (header checks: alg, kid,
 *          jku, typ; decoding; signature failures);
 *   1, 2   the rest is a claims object, signed here with the RSA (RS384) or EC (ES384) key, so
 *          that the claim checks after the signature (sub, aud, exp, iat, nbf, jti, replay) run;
 *   other  sb_assertion_peek_iss() on the rest.
 * The clock is fixed (1800000000) so that seeds with exp/iat values replay the same way.
 * Invariant: a fuzzed raw JWS can never pass (it cannot carry a valid signature). Built with
 * -fsanitize=fuzzer under clang, or with replay_main.c as a corpus replayer. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jose/jose.h"
#include "sandbox.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_NOW INT64_C(1800000000)
#define TOKEN_URL "http://127.0.0.1:8080/auth/token"

static fhirsync_key *rsa_key, *ec_key;
static sb_client client;
static sb_jti_store *jtis;

static const sb_client *lookup(void *ctx, const char *client_id)
{
    (void)ctx;
    return strcmp(client_id, client.client_id) == 0 ? &client : NULL;
}

static json_t *public_jwk(fhirsync_key *key, const char *kid, fhirsync_alg alg)
{
    json_t *jwk = fs_jwk_public(fs_key_evp(key), kid, alg, NULL);
    if (!jwk)
        __builtin_trap();
    return jwk;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (fhirsync_global_init() != FHIRSYNC_OK ||
        fhirsync_key_generate(FHIRSYNC_ALG_RS384, 2048, &rsa_key, NULL) != FHIRSYNC_OK ||
        fhirsync_key_generate(FHIRSYNC_ALG_ES384, 0, &ec_key, NULL) != FHIRSYNC_OK ||
        !(jtis = sb_jti_store_new()))
        __builtin_trap();
    json_t *keys = json_array();
    json_array_append_new(keys, public_jwk(rsa_key, "rsa-1", FHIRSYNC_ALG_RS384));
    json_array_append_new(keys, public_jwk(ec_key, "ec-1", FHIRSYNC_ALG_ES384));
    json_array_append_new(keys, public_jwk(rsa_key, "dup", FHIRSYNC_ALG_RS384));
    json_array_append_new(keys, public_jwk(ec_key, "dup", FHIRSYNC_ALG_ES384));
    client.client_id = "fuzz-client";
    client.jwks = json_pack("{s:o}", "keys", keys);
    client.scope = "system/*.read";
    client.algs = (1u << FHIRSYNC_ALG_RS384) | (1u << FHIRSYNC_ALG_ES384);
    client.method = SB_AUTH_PRIVATE_KEY_JWT;
    if (!client.jwks)
        __builtin_trap();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!jtis)
        LLVMFuzzerInitialize(NULL, NULL);
    if (size == 0)
        return 0;
    char *text = malloc(size);
    if (!text)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    sb_assertion_ctx ctx = {
        .token_url = TOKEN_URL,
        .rs384_only = (data[0] & 0x80) != 0,
        .now = FUZZ_NOW,
        .lookup = lookup,
        .fetch_jwks = NULL,
        .cb_ctx = NULL,
        .jtis = jtis,
    };
    fhirsync_error err;
    fs_err_clear(&err);
    unsigned mode = data[0] & 0x7f;
    if (mode == 0) {
        if (sb_assertion_check(&ctx, text, &err))
            __builtin_trap(); /* forged: no valid signature can come from the fuzzer */
        if (!err.message[0])
            __builtin_trap(); /* a refusal always names the check */
    } else if (mode == 1 || mode == 2) {
        char *jws = NULL;
        fhirsync_key *key = mode == 1 ? rsa_key : ec_key;
        fhirsync_alg alg = mode == 1 ? FHIRSYNC_ALG_RS384 : FHIRSYNC_ALG_ES384;
        if (fhirsync_jws_sign(key, alg, mode == 1 ? "rsa-1" : "ec-1", NULL, text, &jws, NULL) ==
            FHIRSYNC_OK) {
            const sb_client *ok = sb_assertion_check(&ctx, jws, &err);
            if (!ok && !err.message[0])
                __builtin_trap();
            if (ok && (ctx.rs384_only && mode == 2))
                __builtin_trap(); /* ES384 on an RS384-only server */
            fhirsync_free_secret(jws);
        }
    } else {
        char *iss = sb_assertion_peek_iss(text);
        fs_free(iss);
    }
    free(text);
    return 0;
}
