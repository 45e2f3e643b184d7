/* jose/jwks.c: the JWK Set an EHR registers, built from fhirsync_keys: one public JWK per key
 * (jwk.c), each with its kid and, when given, its "alg". Kept apart from jwk.c so that jwk.c
 * depends on OpenSSL keys only and key.c (which needs jwk.c for the kid) is not needed by it. */
#include <string.h>

#include "jose/jose_private.h"

fhirsync_code fhirsync_jwks_build(const fhirsync_key *const *keys, const fhirsync_alg *algs,
                                  size_t count, char **out_json, fhirsync_error *err)
{
    if (!out_json)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_jwks_build: out_json is NULL");
    *out_json = NULL;
    if (!keys || count == 0)
        return fs_err(err, FHIRSYNC_E_ARG, "a JWK Set needs at least one key");
    fhirsync_code rc = FHIRSYNC_OK;
    json_t *list = json_array();
    json_t *jwks = json_object();
    if (!list || !jwks || json_object_set(jwks, "keys", list) != 0) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory building the JWK Set");
        goto out;
    }
    for (size_t i = 0; i < count; i++) {
        const fhirsync_key *key = keys[i];
        if (!key) {
            rc = fs_err(err, FHIRSYNC_E_ARG, "key %zu of the JWK Set is NULL", i + 1);
            goto out;
        }
        /* a kid names one key in the set: two entries with the same kid confuse every server */
        for (size_t j = 0; j < i; j++)
            if (strcmp(fhirsync_key_kid(keys[j]), fhirsync_key_kid(key)) == 0) {
                rc = fs_err(err, FHIRSYNC_E_ARG, "the same key (kid %s) is given twice",
                            fhirsync_key_kid(key));
                goto out;
            }
        fhirsync_alg alg = algs ? algs[i] : FHIRSYNC_ALG_NONE;
        json_t *jwk = fs_jwk_public(fs_key_evp(key), fhirsync_key_kid(key), alg, err);
        if (!jwk) {
            rc = err ? err->code : FHIRSYNC_E_KEY;
            if (count > 1)
                fs_err_prefix(err, "key %zu (kid %s)", i + 1, fhirsync_key_kid(key));
            goto out;
        }
        if (json_array_append_new(list, jwk) != 0) {
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory building the JWK Set");
            goto out;
        }
    }
    if (!(*out_json = fs_json_dump_pretty(jwks)))
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory building the JWK Set");
out:
    json_decref(list);
    json_decref(jwks);
    return rc;
}
