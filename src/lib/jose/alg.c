/* jose/alg.c: the JWS algorithms fhirsync signs and verifies with, and the questions every other
 * JOSE file asks about a key: what type and size it is, whether an algorithm fits it, and how to
 * say so when it does not. Keeping this in one place means signing, verification and the JWKS
 * all agree on what "fits" means (no alg confusion between RSA and EC, no EC curve mix-ups). */
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/objects.h>

#include "jose/jose_private.h"

static const fs_jose_alg_info algs[] = {
    {FHIRSYNC_ALG_RS384, "RS384", "SHA384", 48, FHIRSYNC_KEY_RSA, 0, false},
    {FHIRSYNC_ALG_ES384, "ES384", "SHA384", 48, FHIRSYNC_KEY_EC, 384, false},
    {FHIRSYNC_ALG_RS256, "RS256", "SHA256", 32, FHIRSYNC_KEY_RSA, 0, false},
    {FHIRSYNC_ALG_RS512, "RS512", "SHA512", 64, FHIRSYNC_KEY_RSA, 0, false},
    {FHIRSYNC_ALG_ES256, "ES256", "SHA256", 32, FHIRSYNC_KEY_EC, 256, false},
    {FHIRSYNC_ALG_PS384, "PS384", "SHA384", 48, FHIRSYNC_KEY_RSA, 0, true},
};

const fs_jose_alg_info *fs_jose_alg(fhirsync_alg alg)
{
    for (size_t i = 0; i < sizeof algs / sizeof *algs; i++)
        if (algs[i].alg == alg)
            return &algs[i];
    return NULL;
}

const char *fhirsync_alg_name(fhirsync_alg alg)
{
    const fs_jose_alg_info *info = fs_jose_alg(alg);
    return info ? info->name : NULL;
}

fhirsync_alg fhirsync_alg_from_name(const char *name)
{
    if (!name)
        return FHIRSYNC_ALG_NONE;
    for (size_t i = 0; i < sizeof algs / sizeof *algs; i++)
        if (strcmp(algs[i].name, name) == 0)
            return algs[i].alg;
    return FHIRSYNC_ALG_NONE;
}

/* The field size of a named curve we support, 0 for any other curve. OpenSSL reports the group
 * by its short name ("prime256v1", "secp384r1"); the NIST names are accepted as well. */
static int curve_bits(EVP_PKEY *pkey, char *name, size_t name_size)
{
    name[0] = '\0';
    size_t len = 0;
    if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, name, name_size, &len))
        return 0;
    int nid = OBJ_sn2nid(name);
    if (nid == NID_undef)
        nid = EC_curve_nist2nid(name);
    if (nid == NID_X9_62_prime256v1)
        return 256;
    if (nid == NID_secp384r1)
        return 384;
    return 0;
}

int fs_jose_pkey_kind(EVP_PKEY *pkey, int *bits)
{
    *bits = 0;
    if (!pkey)
        return 0;
    /* EVP_PKEY_RSA only: an RSA-PSS-restricted key (id-RSASSA-PSS) carries its own parameter
     * constraints that JWS does not express, so it is treated as unsupported. */
    if (EVP_PKEY_is_a(pkey, "RSA") && EVP_PKEY_get_base_id(pkey) == EVP_PKEY_RSA) {
        *bits = EVP_PKEY_get_bits(pkey);
        return FHIRSYNC_KEY_RSA;
    }
    if (EVP_PKEY_is_a(pkey, "EC")) {
        char name[64];
        *bits = curve_bits(pkey, name, sizeof name);
        return FHIRSYNC_KEY_EC;
    }
    return 0;
}

void fs_jose_pkey_describe(EVP_PKEY *pkey, char *buf, size_t size)
{
    int bits = 0;
    int kind = fs_jose_pkey_kind(pkey, &bits);
    if (kind == FHIRSYNC_KEY_RSA) {
        snprintf(buf, size, "RSA %d-bit", bits);
    } else if (kind == FHIRSYNC_KEY_EC) {
        char name[64];
        curve_bits(pkey, name, sizeof name);
        if (bits)
            snprintf(buf, size, "EC P-%d", bits);
        else
            snprintf(buf, size, "EC %s", name[0] ? name : "with explicit curve parameters");
    } else if (pkey) {
        const char *type = EVP_PKEY_get0_type_name(pkey);
        snprintf(buf, size, "%s", type ? type : "of an unknown type");
    } else {
        snprintf(buf, size, "missing");
    }
}

bool fs_jose_pkey_fits(EVP_PKEY *pkey, fhirsync_alg alg)
{
    const fs_jose_alg_info *info = fs_jose_alg(alg);
    int bits = 0;
    int kind = fs_jose_pkey_kind(pkey, &bits);
    if (!info || kind != (int)info->kty)
        return false;
    return info->kty == FHIRSYNC_KEY_RSA || bits == info->ec_bits;
}

fhirsync_alg fs_jose_pkey_default_alg(EVP_PKEY *pkey)
{
    int bits = 0;
    int kind = fs_jose_pkey_kind(pkey, &bits);
    if (kind == FHIRSYNC_KEY_RSA)
        return FHIRSYNC_ALG_RS384;
    if (kind == FHIRSYNC_KEY_EC && bits == 384)
        return FHIRSYNC_ALG_ES384;
    if (kind == FHIRSYNC_KEY_EC && bits == 256)
        return FHIRSYNC_ALG_ES256;
    return FHIRSYNC_ALG_NONE;
}

fhirsync_code fs_jose_err_mismatch(fhirsync_error *err, fhirsync_code code, EVP_PKEY *pkey,
                                   fhirsync_alg alg)
{
    char have[96];
    fs_jose_pkey_describe(pkey, have, sizeof have);
    const fs_jose_alg_info *info = fs_jose_alg(alg);
    if (!info)
        return fs_err(err, code,
                      "algorithm %d is not one fhirsync supports "
                      "(RS384 ES384 RS256 RS512 ES256 PS384)",
                      (int)alg);
    if (info->kty == FHIRSYNC_KEY_RSA)
        return fs_err(err, code, "key is %s but algorithm %s needs an RSA key", have, info->name);
    return fs_err(err, code, "key is %s but algorithm %s needs an EC P-%d key", have, info->name,
                  info->ec_bits);
}

fhirsync_code fs_jose_check_rsa_bits(int bits, fhirsync_code code, fhirsync_error *err)
{
    if (bits < FS_RSA_MIN_BITS)
        return fs_err(err, code,
                      "RSA key has %d bits; fhirsync needs at least %d "
                      "(generate a new one with 'fhirsync keygen')",
                      bits, FS_RSA_MIN_BITS);
    if (bits > FS_RSA_MAX_BITS)
        return fs_err(err, code, "RSA key has %d bits; fhirsync accepts at most %d", bits,
                      FS_RSA_MAX_BITS);
    return FHIRSYNC_OK;
}

char *fs_jose_bn_b64(const BIGNUM *bn, size_t pad)
{
    size_t len = pad ? pad : (size_t)BN_num_bytes(bn);
    if (len == 0)
        len = 1; /* the integer 0 is one zero octet */
    if ((size_t)BN_num_bytes(bn) > len)
        return NULL;
    unsigned char *bytes = fs_malloc(len);
    if (!bytes)
        return NULL;
    char *text = NULL;
    if (BN_bn2binpad(bn, bytes, (int)len) == (int)len)
        text = fs_b64url_encode(bytes, len);
    fs_free_wipe(bytes, len);
    return text;
}

/* Whether `text` is what fs_b64url_decode accepts: the URL alphabet, no padding, a possible
 * length, and zero bits after the last whole octet (the canonical encoding). */
static bool b64url_syntax_ok(const char *text, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    if (len % 4 == 1)
        return false;
    size_t last = 0;
    for (size_t i = 0; i < len; i++) {
        const char *at = text[i] ? memchr(alphabet, text[i], sizeof alphabet - 1) : NULL;
        if (!at)
            return false;
        last = (size_t)(at - alphabet);
    }
    if (len % 4 == 2)
        return (last & 0x0f) == 0;
    if (len % 4 == 3)
        return (last & 0x03) == 0;
    return true;
}

fhirsync_code fs_jose_b64url_decode(const char *text, size_t len, unsigned char **out,
                                    size_t *out_len, fhirsync_code code, const char *what,
                                    fhirsync_error *err)
{
    if (fs_b64url_decode(text, len, out, out_len))
        return FHIRSYNC_OK;
    if (b64url_syntax_ok(text, len))
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    return fs_err(err, code, "%s is not base64url without padding", what);
}
