/* fuzz/fuzz_jws.c: fuzz target for the JWS compact decoder and verifier the sandbox EHR runs on
 * every client assertion it receives. Each input is decoded (strictly: three base64url parts,
 * JSON object header and payload, size cap) and, when it decodes, verified against an RSA, a
 * P-256 and a P-384 key generated once at start-up, which exercises the algorithm/key-type
 * checks and the R||S conversion. Nothing the fuzzer makes can carry a valid signature, so a
 * successful verification is a bug. A "jwk" member of the header is imported as a public key.
 * Built with -fsanitize=fuzzer under clang, or with replay_main.c as a corpus replayer. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jose/jose.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static fhirsync_key *keys[3];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    static const fhirsync_alg algs[] = {FHIRSYNC_ALG_RS256, FHIRSYNC_ALG_ES256, FHIRSYNC_ALG_ES384};
    if (fhirsync_global_init() != FHIRSYNC_OK)
        __builtin_trap();
    for (size_t i = 0; i < 3; i++)
        if (fhirsync_key_generate(algs[i], 2048, &keys[i], NULL) != FHIRSYNC_OK)
            __builtin_trap();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the decoder takes a C string, as the sandbox gets it from a form field */
    char *compact = malloc(size + 1);
    if (!compact)
        return 0;
    memcpy(compact, data, size);
    compact[size] = '\0';
    fhirsync_error err;
    memset(&err, 0, sizeof err);
    fs_jws jws;
    if (fs_jws_decode(compact, 16384, &jws, &err) == FHIRSYNC_OK) {
        if (!jws.header || !jws.claims || !jws.signing_input)
            __builtin_trap();
        for (size_t i = 0; i < 3; i++)
            if (fs_jws_verify(&jws, fs_key_evp(keys[i]), &err) == FHIRSYNC_OK)
                __builtin_trap();
        json_t *jwk = json_object_get(jws.header, "jwk");
        if (jwk) {
            EVP_PKEY *pkey = fs_jwk_to_public_pkey(jwk, &err);
            if (pkey) {
                /* a token that carries its own key still needs a signature made with it */
                if (fs_jws_verify(&jws, pkey, &err) == FHIRSYNC_OK && jws.signature_len == 0)
                    __builtin_trap();
                EVP_PKEY_free(pkey);
            }
        }
        fs_jws_clear(&jws);
    } else if (jws.header || jws.signing_input || err.message[0] == '\0') {
        __builtin_trap();
    }
    free(compact);
    return 0;
}
