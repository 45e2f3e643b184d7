/* jose/jwk.c: public keys out: the public JWK of a key and its RFC 7638 thumbprint (the `kid`
 * fhirsync uses). Nothing private ever leaves through here: the
 * members are read one by one from the public parameters of the key, never copied wholesale.
 * It works on OpenSSL keys only and knows nothing of the fhirsync_key object (key.c uses it for
 * the kid; jwks.c builds the set from fhirsync_keys). JWK import (the reverse direction) lives
 * with the rest of key loading in key.c. */
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/sha.h>

#include "jose/jose_private.h"

/* The public members of a key, base64url-encoded as JWA wants them. */
typedef struct public_parts {
    int kind;        /* FHIRSYNC_KEY_RSA or FHIRSYNC_KEY_EC */
    char *n, *e;     /* RSA: big-endian, no leading zero octets (RFC 7518 section 6.3.1) */
    const char *crv; /* EC: "P-256" / "P-384" */
    char *x, *y;     /* EC: padded to the field size (RFC 7518 section 6.2.1.2) */
} public_parts;

static void public_parts_clear(public_parts *parts)
{
    fs_free(parts->n);
    fs_free(parts->e);
    fs_free(parts->x);
    fs_free(parts->y);
    memset(parts, 0, sizeof *parts);
}

/* Encode the big-number parameter `name` of the key (padded to `pad` octets when pad > 0). */
static fhirsync_code param_b64(EVP_PKEY *pkey, const char *name, size_t pad, char **out,
                               fhirsync_error *err)
{
    BIGNUM *bn = NULL;
    fhirsync_code rc = FHIRSYNC_OK;
    *out = NULL;
    if (EVP_PKEY_get_bn_param(pkey, name, &bn) != 1 || !bn ||
        (pad && (size_t)BN_num_bytes(bn) > pad))
        rc = fs_err(err, FHIRSYNC_E_CRYPTO, "cannot read the public numbers of the key");
    else if (!(*out = fs_jose_bn_b64(bn, pad)))
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    BN_free(bn);
    return rc;
}

static fhirsync_code public_parts_get(EVP_PKEY *pkey, public_parts *parts, fhirsync_error *err)
{
    memset(parts, 0, sizeof *parts);
    int bits = 0;
    int kind = fs_jose_pkey_kind(pkey, &bits);
    fhirsync_code rc;
    if (kind == FHIRSYNC_KEY_RSA) {
        if ((rc = param_b64(pkey, OSSL_PKEY_PARAM_RSA_N, 0, &parts->n, err)) == FHIRSYNC_OK)
            rc = param_b64(pkey, OSSL_PKEY_PARAM_RSA_E, 0, &parts->e, err);
    } else if (kind == FHIRSYNC_KEY_EC && bits != 0) {
        size_t size = (size_t)bits / 8;
        parts->crv = bits == 384 ? "P-384" : "P-256";
        if ((rc = param_b64(pkey, OSSL_PKEY_PARAM_EC_PUB_X, size, &parts->x, err)) == FHIRSYNC_OK)
            rc = param_b64(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, size, &parts->y, err);
    } else {
        char what[96];
        fs_jose_pkey_describe(pkey, what, sizeof what);
        return fs_err(err, FHIRSYNC_E_KEY,
                      "key is %s; a JWK can be made of RSA and EC P-256 / P-384 keys only", what);
    }
    if (rc != FHIRSYNC_OK) {
        public_parts_clear(parts);
        return rc;
    }
    parts->kind = kind;
    return FHIRSYNC_OK;
}

char *fs_jwk_thumbprint(EVP_PKEY *pkey, fhirsync_error *err)
{
    ERR_set_mark();
    public_parts parts;
    fs_buf canonical;
    fs_buf_init(&canonical);
    char *kid = NULL;
    if (public_parts_get(pkey, &parts, err) != FHIRSYNC_OK)
        goto out;
    /* RFC 7638 section 3: the required members only, in lexicographic order, no whitespace.
     * base64url values need no JSON escaping. */
    bool ok =
        parts.kind == FHIRSYNC_KEY_RSA
            ? fs_buf_printf(&canonical, "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", parts.e,
                            parts.n)
            : fs_buf_printf(&canonical, "{\"crv\":\"%s\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
                            parts.crv, parts.x, parts.y);
    unsigned char digest[SHA256_DIGEST_LENGTH];
    unsigned int digest_len = 0;
    if (!ok) {
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
    if (EVP_Digest(canonical.data, canonical.len, digest, &digest_len, EVP_sha256(), NULL) != 1) {
        fs_err(err, FHIRSYNC_E_CRYPTO, "SHA-256 failed");
        goto out;
    }
    if (!(kid = fs_b64url_encode(digest, digest_len)))
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
out:
    public_parts_clear(&parts);
    fs_buf_free(&canonical);
    ERR_pop_to_mark();
    return kid;
}

json_t *fs_jwk_public(EVP_PKEY *pkey, const char *kid, fhirsync_alg alg, fhirsync_error *err)
{
    if (alg == FHIRSYNC_ALG_NONE)
        alg = fs_jose_pkey_default_alg(pkey);
    if (!fs_jose_pkey_fits(pkey, alg)) {
        fs_jose_err_mismatch(err, FHIRSYNC_E_KEY, pkey, alg);
        return NULL;
    }
    ERR_set_mark();
    json_t *jwk = NULL;
    char *thumbprint = NULL;
    public_parts parts;
    if (public_parts_get(pkey, &parts, err) != FHIRSYNC_OK)
        goto out;
    if (!kid && !(kid = thumbprint = fs_jwk_thumbprint(pkey, err)))
        goto out;
    const char *alg_name = fhirsync_alg_name(alg);
    if (parts.kind == FHIRSYNC_KEY_RSA)
        jwk = json_pack("{s:s, s:s, s:s, s:s, s:[s], s:s, s:s}", "kty", "RSA", "kid", kid, "alg",
                        alg_name, "use", "sig", "key_ops", "verify", "n", parts.n, "e", parts.e);
    else
        jwk = json_pack("{s:s, s:s, s:s, s:s, s:[s], s:s, s:s, s:s}", "kty", "EC", "kid", kid,
                        "alg", alg_name, "use", "sig", "key_ops", "verify", "crv", parts.crv, "x",
                        parts.x, "y", parts.y);
    if (!jwk)
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory building a JWK");
out:
    public_parts_clear(&parts);
    fs_free(thumbprint);
    ERR_pop_to_mark();
    return jwk;
}
