/* fuzz/fuzz_key.c: fuzz target for key loading, the parser that reads what users hand fhirsync as
 * a private key: PEM in its forms (PKCS#8, PKCS#1, SEC1, with the public-key, certificate,
 * encrypted and truncated cases detected before OpenSSL's decoder runs) and JSON Web Keys. A key
 * that loads is exported as a JWK Set; the same bytes are also read as a public JWK, the path the
 * sandbox uses for registered key sets. Built with -fsanitize=fuzzer under clang, or with
 * replay_main.c as a corpus replayer under gcc. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "jose/jose.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (fhirsync_global_init() != FHIRSYNC_OK)
        __builtin_trap();
    return 0;
}

/* A failure leaves no key behind and explains itself in one non-empty line. */
static void check_failure(const fhirsync_error *err, const void *out)
{
    if (out || err->message[0] == '\0' || strchr(err->message, '\n'))
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fhirsync_error err;
    memset(&err, 0, sizeof err);
    fhirsync_key *key = NULL;
    if (fhirsync_key_load_mem((const char *)data, size, &key, &err) == FHIRSYNC_OK) {
        const fhirsync_key *keys[] = {key};
        char *jwks = NULL;
        /* a key that loads is usable: its default algorithm fits and its JWK Set builds */
        if (!fhirsync_key_fits_alg(key, fhirsync_key_default_alg(key)) ||
            strlen(fhirsync_key_kid(key)) != 43 ||
            fhirsync_jwks_build(keys, NULL, 1, &jwks, &err) != FHIRSYNC_OK)
            __builtin_trap();
        fhirsync_free(jwks);
        fhirsync_key_free(key);
    } else {
        check_failure(&err, key);
    }

    json_t *jwk = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (jwk) {
        EVP_PKEY *pkey = fs_jwk_to_public_pkey(jwk, &err);
        if (pkey) {
            char *kid = fs_jwk_thumbprint(pkey, &err);
            json_t *exported = fs_jwk_public(pkey, kid, FHIRSYNC_ALG_NONE, &err);
            if (!kid || !exported)
                __builtin_trap();
            json_decref(exported);
            fs_free(kid);
            EVP_PKEY_free(pkey);
        } else {
            check_failure(&err, pkey);
        }
        json_decref(jwk);
    }
    return 0;
}
