/* jose/key.c: the fhirsync_key object: generating keys, reading private keys from PEM (PKCS#8,
 * PKCS#1, SEC1) or a private JWK, importing public keys from JWKs, and writing a key as PKCS#8.
 *
 * Reading is where users make mistakes (a public key, a certificate, an encrypted or OpenSSH key,
 * a key file the whole machine can read), so every such case has its own one-line message that
 * says what to do, and no message ever quotes the input: it may be key material. Buffers that held
 * key material are wiped before they are freed. A key that loads has passed a sign-and-verify
 * self-test, so a corrupted key fails here rather than at the token endpoint. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/encoder.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/params.h>
#include <openssl/rsa.h>

#include "jose/jose_private.h"

struct fhirsync_key {
    EVP_PKEY *pkey;
    fhirsync_key_type type;
    int bits;
    char kid[64];
};

/* ---- the key object ------------------------------------------------------------------------ */

EVP_PKEY *fs_key_evp(const fhirsync_key *key)
{
    return key ? key->pkey : NULL;
}

void fhirsync_key_free(fhirsync_key *key)
{
    if (!key)
        return;
    EVP_PKEY_free(key->pkey);
    OPENSSL_cleanse(key, sizeof *key);
    fs_free(key);
}

fhirsync_key_type fhirsync_key_type_of(const fhirsync_key *key)
{
    return key ? key->type : (fhirsync_key_type)0;
}

int fhirsync_key_bits(const fhirsync_key *key)
{
    return key ? key->bits : 0;
}

const char *fhirsync_key_kid(const fhirsync_key *key)
{
    return key ? key->kid : NULL;
}

int fhirsync_key_fits_alg(const fhirsync_key *key, fhirsync_alg alg)
{
    return key && fs_jose_pkey_fits(key->pkey, alg);
}

fhirsync_alg fhirsync_key_default_alg(const fhirsync_key *key)
{
    return key ? fs_jose_pkey_default_alg(key->pkey) : FHIRSYNC_ALG_NONE;
}

/* Whether the key holds its private half (a decoder or importer may hand back less). */
static bool has_private_part(EVP_PKEY *pkey, int kind)
{
    BIGNUM *secret = NULL;
    const char *param = kind == FHIRSYNC_KEY_RSA ? OSSL_PKEY_PARAM_RSA_D : OSSL_PKEY_PARAM_PRIV_KEY;
    bool ok = EVP_PKEY_get_bn_param(pkey, param, &secret) == 1 && secret && !BN_is_zero(secret);
    BN_clear_free(secret);
    return ok;
}

/* Sign a fixed message with the private key and verify it with the public half: catches keys
 * whose parts do not belong together (a JWK with a wrong "d", a corrupted PEM that still
 * parses). FHIRSYNC_OK, FHIRSYNC_E_KEY for a mismatch, or the failure that stopped the test. */
static fhirsync_code self_test(EVP_PKEY *pkey, const char *what, fhirsync_error *err)
{
    static const unsigned char message[] = "fhirsync key self-test";
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    fhirsync_code rc = FHIRSYNC_OK;
    if (!md || EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, pkey, NULL) != 1 ||
        EVP_DigestSign(md, NULL, &sig_len, message, sizeof message) != 1) {
        rc = fs_err(err, FHIRSYNC_E_KEY, "the %s private key cannot sign (corrupted key?)", what);
        goto out;
    }
    if (!(sig = fs_malloc(sig_len))) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
    if (EVP_DigestSign(md, sig, &sig_len, message, sizeof message) != 1 ||
        EVP_MD_CTX_reset(md) != 1 ||
        EVP_DigestVerifyInit_ex(md, NULL, "SHA256", NULL, NULL, pkey, NULL) != 1 ||
        EVP_DigestVerify(md, sig, sig_len, message, sizeof message) != 1)
        rc = fs_err(err, FHIRSYNC_E_KEY,
                    "the %s private key does not match its public half "
                    "(corrupted key?)",
                    what);
out:
    fs_free(sig);
    EVP_MD_CTX_free(md);
    return rc;
}

/* Take ownership of `pkey` and make it a fhirsync_key after checking that it is a private key of
 * a supported type and size; frees pkey on failure. */
static fhirsync_code wrap_pkey(EVP_PKEY *pkey, bool test_it, fhirsync_key **out,
                               fhirsync_error *err)
{
    fhirsync_key *key = NULL;
    fhirsync_code rc = FHIRSYNC_OK;
    char *kid = NULL;
    int bits = 0;
    int kind = fs_jose_pkey_kind(pkey, &bits);
    char what[96];
    fs_jose_pkey_describe(pkey, what, sizeof what);
    if (kind == 0) {
        rc = fs_err(err, FHIRSYNC_E_KEY,
                    "key is %s; fhirsync supports RSA (2048 bits or more) "
                    "and EC P-256 / P-384 keys",
                    what);
        goto out;
    }
    if (kind == FHIRSYNC_KEY_EC && bits == 0) {
        rc = fs_err(err, FHIRSYNC_E_KEY,
                    "key is %s; fhirsync supports the EC curves P-256 and "
                    "P-384 only",
                    what);
        goto out;
    }
    if (kind == FHIRSYNC_KEY_RSA &&
        (rc = fs_jose_check_rsa_bits(bits, FHIRSYNC_E_KEY, err)) != FHIRSYNC_OK)
        goto out;
    if (!has_private_part(pkey, kind)) {
        rc = fs_err(err, FHIRSYNC_E_KEY, "this is a public key; fhirsync needs the private key");
        goto out;
    }
    if (test_it && (rc = self_test(pkey, what, err)) != FHIRSYNC_OK)
        goto out;
    if (!(kid = fs_jwk_thumbprint(pkey, err))) {
        rc = err ? err->code : FHIRSYNC_E_CRYPTO;
        goto out;
    }
    if (!(key = fs_calloc(1, sizeof *key))) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
    snprintf(key->kid, sizeof key->kid, "%s", kid);
    key->pkey = pkey;
    key->type = (fhirsync_key_type)kind;
    key->bits = bits;
    pkey = NULL;
out:
    fs_free(kid);
    EVP_PKEY_free(pkey);
    *out = key;
    return rc;
}

/* ---- generation ---------------------------------------------------------------------------- */

fhirsync_code fhirsync_key_generate(fhirsync_alg alg, int bits, fhirsync_key **out,
                                    fhirsync_error *err)
{
    if (!out)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_key_generate: out is NULL");
    *out = NULL;
    const fs_jose_alg_info *info = fs_jose_alg(alg);
    if (!info)
        return fs_err(err, FHIRSYNC_E_ARG,
                      "unknown algorithm %d: choose RS384, ES384, RS256, "
                      "RS512, ES256 or PS384",
                      (int)alg);
    bool rsa = info->kty == FHIRSYNC_KEY_RSA;
    if (rsa && bits == 0)
        bits = 2048;
    if (rsa && bits != 2048 && bits != 3072 && bits != 4096)
        return fs_err(err, FHIRSYNC_E_ARG,
                      "RSA key size %d is not offered: choose 2048, 3072 "
                      "or 4096 bits",
                      bits);
    ERR_set_mark();
    fhirsync_code rc = FHIRSYNC_OK;
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, rsa ? "RSA" : "EC", NULL);
    if (!ctx || EVP_PKEY_keygen_init(ctx) != 1 ||
        (rsa && EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, bits) != 1) ||
        (!rsa && EVP_PKEY_CTX_set_group_name(ctx, info->ec_bits == 384 ? "P-384" : "P-256") != 1) ||
        EVP_PKEY_generate(ctx, &pkey) != 1) {
        rc = fs_err(err, FHIRSYNC_E_CRYPTO, "OpenSSL could not generate the %s key", info->name);
        goto out;
    }
    rc = wrap_pkey(pkey, false, out, err);
out:
    EVP_PKEY_CTX_free(ctx);
    ERR_pop_to_mark();
    return rc;
}

/* ---- PEM ----------------------------------------------------------------------------------- */

static const char pem_begin[] = "-----BEGIN ";
static const char pem_dashes[] = "-----";

/* What was found in a PEM file, block by block. */
typedef struct pem_scan {
    const char *key_start; /* the private key block, from its BEGIN line ... */
    size_t key_len;        /* ... to the end of its END line */
    char key_label[64];
    int private_blocks;
    bool encrypted; /* PKCS#8 encrypted, or traditional with Proc-Type ENCRYPTED */
    bool openssh;
    bool dsa;
    bool public_or_cert;
    char other_label[64];     /* the first label we do not know, for the message */
    char truncated_label[64]; /* a block with no END line */
} pem_scan;

static bool label_is(const char *label, size_t len, const char *name)
{
    return strlen(name) == len && memcmp(label, name, len) == 0;
}

static void scan_pem(const char *data, size_t len, pem_scan *scan)
{
    memset(scan, 0, sizeof *scan);
    const char *end = data + len;
    const char *p = data;
    while (p < end) {
        const char *begin = memmem(p, (size_t)(end - p), pem_begin, sizeof pem_begin - 1);
        if (!begin)
            break;
        const char *label = begin + sizeof pem_begin - 1;
        const char *label_end = label;
        while (label_end < end && *label_end != '-' && *label_end != '\n' && label_end - label < 63)
            label_end++;
        size_t label_len = (size_t)(label_end - label);
        if ((size_t)(end - label_end) < sizeof pem_dashes - 1 ||
            memcmp(label_end, pem_dashes, sizeof pem_dashes - 1) != 0 || label_len == 0) {
            /* "-----BEGIN PRIV" and the file ends: a header cut short */
            snprintf(scan->truncated_label, sizeof scan->truncated_label, "%.*s", (int)label_len,
                     label);
            if (!scan->truncated_label[0])
                snprintf(scan->truncated_label, sizeof scan->truncated_label, "(no label)");
            break;
        }
        /* the matching END line */
        char end_line[96];
        int n = snprintf(end_line, sizeof end_line, "-----END %.*s-----", (int)label_len, label);
        const char *body = label_end + sizeof pem_dashes - 1;
        const char *stop = memmem(body, (size_t)(end - body), end_line, (size_t)n);
        if (!stop) {
            snprintf(scan->truncated_label, sizeof scan->truncated_label, "%.*s", (int)label_len,
                     label);
            break;
        }
        const char *after = stop + n;
        while (after < end && (*after == '\r' || *after == '\n'))
            after++;
        bool proc_encrypted = memmem(body, (size_t)(stop - body), "ENCRYPTED", 9) != NULL;
        if (label_is(label, label_len, "PRIVATE KEY") ||
            label_is(label, label_len, "RSA PRIVATE KEY") ||
            label_is(label, label_len, "EC PRIVATE KEY")) {
            if (scan->private_blocks++ == 0) {
                scan->key_start = begin;
                scan->key_len = (size_t)(after - begin);
                snprintf(scan->key_label, sizeof scan->key_label, "%.*s", (int)label_len, label);
            }
            if (proc_encrypted)
                scan->encrypted = true;
        } else if (label_is(label, label_len, "ENCRYPTED PRIVATE KEY")) {
            scan->encrypted = true;
        } else if (label_is(label, label_len, "OPENSSH PRIVATE KEY")) {
            scan->openssh = true;
        } else if (label_is(label, label_len, "DSA PRIVATE KEY")) {
            scan->dsa = true;
        } else if (label_is(label, label_len, "PUBLIC KEY") ||
                   label_is(label, label_len, "RSA PUBLIC KEY") ||
                   label_is(label, label_len, "CERTIFICATE") ||
                   label_is(label, label_len, "TRUSTED CERTIFICATE") ||
                   label_is(label, label_len, "X509 CERTIFICATE") ||
                   label_is(label, label_len, "CERTIFICATE REQUEST") ||
                   label_is(label, label_len, "NEW CERTIFICATE REQUEST")) {
            scan->public_or_cert = true;
        } else if (!label_is(label, label_len, "EC PARAMETERS") && !scan->other_label[0]) {
            /* `openssl ecparam -genkey` writes EC PARAMETERS before the key: harmless */
            snprintf(scan->other_label, sizeof scan->other_label, "%.*s", (int)label_len, label);
        }
        p = after;
    }
}

/* Never let OpenSSL ask for a passphrase on the terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *userdata)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)userdata;
    return -1;
}

static fhirsync_code load_pem(const char *data, size_t len, fhirsync_key **out, fhirsync_error *err)
{
    pem_scan scan;
    scan_pem(data, len, &scan);
    if (scan.encrypted)
        return fs_err(err, FHIRSYNC_E_KEY,
                      "the private key is encrypted, which fhirsync does "
                      "not support: decrypt it with 'openssl pkey -in KEY -out KEY.plain.pem' "
                      "and protect the file with chmod 600");
    if (scan.private_blocks > 1)
        return fs_err(err, FHIRSYNC_E_KEY,
                      "the PEM holds %d private keys; keep exactly one key "
                      "per file",
                      scan.private_blocks);
    if (scan.private_blocks == 0) {
        if (scan.openssh)
            return fs_err(err, FHIRSYNC_E_KEY,
                          "this is an OpenSSH private key; convert a copy "
                          "to PKCS#8 with 'ssh-keygen -p -m PKCS8 -f COPY'");
        if (scan.dsa)
            return fs_err(err, FHIRSYNC_E_KEY,
                          "DSA keys are not supported: use RSA or EC "
                          "('fhirsync keygen')");
        if (scan.truncated_label[0])
            return fs_err(err, FHIRSYNC_E_KEY,
                          "malformed PEM: the '%s' block is cut short "
                          "(no END line; truncated file?)",
                          scan.truncated_label);
        if (scan.public_or_cert)
            return fs_err(err, FHIRSYNC_E_KEY,
                          "this is a public key or certificate; fhirsync "
                          "needs the private key");
        if (scan.other_label[0])
            return fs_err(err, FHIRSYNC_E_KEY,
                          "malformed PEM: a '%s' block is not a private "
                          "key",
                          scan.other_label);
        return fs_err(err, FHIRSYNC_E_KEY, "malformed PEM: no BEGIN/END block found");
    }

    ERR_set_mark();
    fhirsync_code rc = FHIRSYNC_OK;
    EVP_PKEY *pkey = NULL;
    OSSL_DECODER_CTX *dctx =
        OSSL_DECODER_CTX_new_for_pkey(&pkey, "PEM", NULL, NULL, EVP_PKEY_KEYPAIR, NULL, NULL);
    const unsigned char *pem = (const unsigned char *)scan.key_start;
    size_t pem_len = scan.key_len;
    if (!dctx || OSSL_DECODER_CTX_set_pem_password_cb(dctx, no_passphrase, NULL) != 1) {
        rc = fs_err(err, FHIRSYNC_E_CRYPTO, "OpenSSL has no PEM key decoder");
        goto out;
    }
    if (OSSL_DECODER_from_data(dctx, &pem, &pem_len) != 1 || !pkey) {
        rc = fs_err(err, FHIRSYNC_E_KEY,
                    "malformed PEM: the '%s' block could not be decoded "
                    "(truncated or corrupted?)",
                    scan.key_label);
        goto out;
    }
    rc = wrap_pkey(pkey, true, out, err);
    pkey = NULL;
out:
    EVP_PKEY_free(pkey);
    OSSL_DECODER_CTX_free(dctx);
    ERR_pop_to_mark();
    return rc;
}

/* ---- JWK import ---------------------------------------------------------------------------- */

/* Decode a base64url member into a BIGNUM. `exact` > 0 demands that many octets (EC x and y);
 * `max` > 0 caps the length. Secrets go into secure BIGNUMs and their bytes are wiped. */
static BIGNUM *jwk_bn(const json_t *jwk, const char *member, size_t exact, size_t max, bool secret,
                      fhirsync_error *err)
{
    json_t *value = json_object_get(jwk, member);
    if (!value) {
        fs_err(err, FHIRSYNC_E_KEY, "JWK lacks the \"%s\" member", member);
        return NULL;
    }
    if (!json_is_string(value) || json_string_length(value) == 0) {
        fs_err(err, FHIRSYNC_E_KEY, "JWK member \"%s\" is not a non-empty string", member);
        return NULL;
    }
    unsigned char *bytes = NULL;
    size_t len = 0;
    BIGNUM *bn = NULL;
    char what[64];
    snprintf(what, sizeof what, "JWK member \"%s\"", member);
    if (fs_jose_b64url_decode(json_string_value(value), json_string_length(value), &bytes, &len,
                              FHIRSYNC_E_KEY, what, err) != FHIRSYNC_OK)
        return NULL;
    if ((exact && len != exact) || (max && len > max)) {
        fs_err(err, FHIRSYNC_E_KEY, "JWK member \"%s\" has %zu octets, expected %s%zu", member, len,
               exact ? "" : "at most ", exact ? exact : max);
        goto out;
    }
    bn = secret ? BN_secure_new() : BN_new();
    if (!bn || !BN_bin2bn(bytes, (int)len, bn)) {
        BN_clear_free(bn);
        bn = NULL;
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
out:
    fs_free_wipe(bytes, len);
    return bn;
}

/* Build an EVP_PKEY of `type` ("RSA", "EC") from parameters; NULL when OpenSSL refuses them. */
static EVP_PKEY *pkey_from_params(const char *type, int selection, OSSL_PARAM_BLD *bld)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (params && ctx && EVP_PKEY_fromdata_init(ctx) == 1)
        EVP_PKEY_fromdata(ctx, &pkey, selection, params);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params); /* wipes the secure half, where the private numbers are */
    return pkey;
}

static const char *const rsa_private_members[] = {"d", "p", "q", "dp", "dq", "qi"};
static const char *const rsa_private_params[] = {
    OSSL_PKEY_PARAM_RSA_D,         OSSL_PKEY_PARAM_RSA_FACTOR1,   OSSL_PKEY_PARAM_RSA_FACTOR2,
    OSSL_PKEY_PARAM_RSA_EXPONENT1, OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1};
#define RSA_PRIVATE_COUNT (sizeof rsa_private_members / sizeof *rsa_private_members)

static EVP_PKEY *jwk_import_rsa(const json_t *jwk, bool private_key, fhirsync_error *err)
{
    EVP_PKEY *pkey = NULL;
    BIGNUM *n = NULL, *e = NULL, *priv[RSA_PRIVATE_COUNT] = {NULL};
    OSSL_PARAM_BLD *bld = NULL;
    size_t max = FS_RSA_MAX_BITS / 8;
    if (!(n = jwk_bn(jwk, "n", 0, max, false, err)) || !(e = jwk_bn(jwk, "e", 0, 8, false, err)))
        goto out;
    if (private_key && json_object_get(jwk, "oth")) {
        fs_err(err, FHIRSYNC_E_KEY, "multi-prime RSA JWKs (\"oth\") are not supported");
        goto out;
    }
    /* e odd and at least 3, n odd: anything else is not an RSA key that can sign */
    if (!BN_is_odd(e) || BN_is_one(e) || !BN_is_odd(n)) {
        fs_err(err, FHIRSYNC_E_KEY, "JWK is not a valid RSA key (bad \"n\" or \"e\")");
        goto out;
    }
    if (fs_jose_check_rsa_bits(BN_num_bits(n), FHIRSYNC_E_KEY, err) != FHIRSYNC_OK)
        goto out;
    for (size_t i = 0; private_key && i < RSA_PRIVATE_COUNT; i++)
        if (!(priv[i] = jwk_bn(jwk, rsa_private_members[i], 0, max, true, err)))
            goto out;
    if (!(bld = OSSL_PARAM_BLD_new()) || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e)) {
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; private_key && i < RSA_PRIVATE_COUNT; i++)
        if (!OSSL_PARAM_BLD_push_BN(bld, rsa_private_params[i], priv[i])) {
            fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
            goto out;
        }
    pkey = pkey_from_params("RSA", private_key ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, bld);
    if (!pkey)
        fs_err(err, FHIRSYNC_E_KEY, "JWK is not a valid RSA key (OpenSSL refused its numbers)");
out:
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    for (size_t i = 0; i < RSA_PRIVATE_COUNT; i++)
        BN_clear_free(priv[i]);
    return pkey;
}

static EVP_PKEY *jwk_import_ec(const json_t *jwk, bool private_key, fhirsync_error *err)
{
    EVP_PKEY *pkey = NULL;
    BIGNUM *x = NULL, *y = NULL, *d = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    unsigned char point[1 + 2 * 48];
    const char *crv = fs_json_str(jwk, "crv");
    const char *group = NULL;
    size_t size = 0;
    if (fs_streq(crv, "P-256")) {
        group = "prime256v1";
        size = 32;
    } else if (fs_streq(crv, "P-384")) {
        group = "secp384r1";
        size = 48;
    } else {
        if (!crv)
            fs_err(err, FHIRSYNC_E_KEY, "EC JWK lacks the \"crv\" member");
        else
            fs_err(err, FHIRSYNC_E_KEY,
                   "JWK curve \"%.40s\" is not supported (P-256 and P-384 "
                   "are)",
                   crv);
        return NULL;
    }
    /* RFC 7518 section 6.2.1: x and y are exactly the field size; d at most the order size */
    if (!(x = jwk_bn(jwk, "x", size, 0, false, err)) ||
        !(y = jwk_bn(jwk, "y", size, 0, false, err)) ||
        (private_key && !(d = jwk_bn(jwk, "d", 0, size, true, err))))
        goto out;
    point[0] = 0x04; /* uncompressed point: 04 || x || y */
    if (BN_bn2binpad(x, point + 1, (int)size) != (int)size ||
        BN_bn2binpad(y, point + 1 + size, (int)size) != (int)size) {
        fs_err(err, FHIRSYNC_E_INTERNAL, "EC coordinate conversion failed");
        goto out;
    }
    if (!(bld = OSSL_PARAM_BLD_new()) ||
        !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * size) ||
        (d && !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, d))) {
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
    /* OpenSSL refuses a point that is not on the curve here */
    pkey = pkey_from_params("EC", private_key ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, bld);
    if (!pkey) {
        fs_err(err, FHIRSYNC_E_KEY, "JWK is not a valid %s key (the point is not on the curve)",
               crv);
        goto out;
    }
    EVP_PKEY_CTX *check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (!check || EVP_PKEY_public_check(check) != 1) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
        fs_err(err, FHIRSYNC_E_KEY, "JWK is not a valid %s public key", crv);
    }
    EVP_PKEY_CTX_free(check);
out:
    OSSL_PARAM_BLD_free(bld);
    BN_free(x);
    BN_free(y);
    BN_clear_free(d);
    return pkey;
}

/* The key of a JWK object; private members are used only when `private_key`. */
static EVP_PKEY *jwk_import(const json_t *jwk, bool private_key, fhirsync_error *err)
{
    if (!json_is_object(jwk)) {
        fs_err(err, FHIRSYNC_E_KEY, "JWK is not a JSON object");
        return NULL;
    }
    const char *kty = fs_json_str(jwk, "kty");
    if (fs_streq(kty, "RSA"))
        return jwk_import_rsa(jwk, private_key, err);
    if (fs_streq(kty, "EC"))
        return jwk_import_ec(jwk, private_key, err);
    if (!kty)
        fs_err(err, FHIRSYNC_E_KEY, "JWK lacks the \"kty\" member");
    else
        fs_err(err, FHIRSYNC_E_KEY, "JWK key type \"%.20s\" is not supported (RSA and EC are)",
               kty);
    return NULL;
}

EVP_PKEY *fs_jwk_to_public_pkey(const json_t *jwk, fhirsync_error *err)
{
    ERR_set_mark();
    EVP_PKEY *pkey = jwk_import(jwk, false, err);
    ERR_pop_to_mark();
    return pkey;
}

/* Wipe every string of a parsed JSON document (a private JWK) before it is freed. */
static void wipe_json_strings(json_t *value)
{
    if (json_is_string(value)) {
        OPENSSL_cleanse((char *)json_string_value(value), json_string_length(value));
    } else if (json_is_object(value)) {
        for (void *it = json_object_iter(value); it; it = json_object_iter_next(value, it))
            wipe_json_strings(json_object_iter_value(it));
    } else if (json_is_array(value)) {
        for (size_t i = 0; i < json_array_size(value); i++)
            wipe_json_strings(json_array_get(value, i));
    }
}

static fhirsync_code load_jwk(const char *data, size_t len, fhirsync_key **out, fhirsync_error *err)
{
    /* Not fs_json_parse: jansson's messages quote the text near the error, which here may be a
     * piece of the private key. Only the position is reported. */
    json_error_t jerr;
    json_t *jwk = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    fhirsync_code rc = FHIRSYNC_OK;
    if (!jwk) {
        if (json_error_code(&jerr) == json_error_out_of_memory)
            return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        return fs_err(err, FHIRSYNC_E_KEY, "malformed JWK: not valid JSON (line %d, column %d)",
                      jerr.line, jerr.column);
    }
    if (!json_is_object(jwk)) {
        rc = fs_err(err, FHIRSYNC_E_KEY, "malformed JWK: not a JSON object");
        goto out;
    }
    if (json_object_get(jwk, "keys")) {
        rc = fs_err(err, FHIRSYNC_E_KEY,
                    "this is a JWK Set; fhirsync needs one private JWK "
                    "(the object with \"d\") or a PEM private key");
        goto out;
    }
    const char *kty = fs_json_str(jwk, "kty");
    if ((fs_streq(kty, "RSA") || fs_streq(kty, "EC")) && !json_object_get(jwk, "d")) {
        rc = fs_err(err, FHIRSYNC_E_KEY,
                    "this is a public JWK; fhirsync needs the private key "
                    "(a JWK with \"d\")");
        goto out;
    }
    ERR_set_mark();
    EVP_PKEY *pkey = jwk_import(jwk, true, err);
    if (pkey)
        rc = wrap_pkey(pkey, true, out, err);
    else
        rc = err ? err->code : FHIRSYNC_E_KEY;
    ERR_pop_to_mark();
out:
    wipe_json_strings(jwk);
    json_decref(jwk);
    return rc;
}

/* ---- loading ------------------------------------------------------------------------------- */

fhirsync_code fhirsync_key_load_mem(const char *data, size_t len, fhirsync_key **out,
                                    fhirsync_error *err)
{
    if (!out)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_key_load_mem: out is NULL");
    *out = NULL;
    if (!data)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_key_load_mem: data is NULL");
    if (len > FS_KEY_MAX_BYTES)
        return fs_err(err, FHIRSYNC_E_KEY, "key is %zu bytes, more than the %d KiB a key can be",
                      len, FS_KEY_MAX_BYTES / 1024);
    size_t i = 0;
    if (len >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0)
        i = 3; /* a UTF-8 byte order mark from a Windows editor */
    while (i < len && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n'))
        i++;
    if (i == len)
        return fs_err(err, FHIRSYNC_E_KEY, "key is empty");
    if (data[i] == '{')
        return load_jwk(data + i, len - i, out, err);
    if (memmem(data, len, pem_begin, sizeof pem_begin - 1))
        return load_pem(data, len, out, err);
    if ((unsigned char)data[i] == 0x30)
        return fs_err(err, FHIRSYNC_E_KEY,
                      "key looks like binary DER; fhirsync reads PEM: "
                      "convert it with 'openssl pkey -inform DER -in KEY -out KEY.pem'");
    return fs_err(err, FHIRSYNC_E_KEY,
                  "malformed key: neither PEM (no '-----BEGIN' line) nor a "
                  "JWK (JSON object)");
}

fhirsync_code fhirsync_key_load_file(const char *path, fhirsync_key **out, fhirsync_error *err)
{
    if (!out)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_key_load_file: out is NULL");
    *out = NULL;
    if (!path || !*path)
        return fs_err(err, FHIRSYNC_E_ARG, "no key file given");
    fhirsync_code rc = FHIRSYNC_OK;
    char *buf = NULL;
    size_t cap = 0, len = 0;
    /* O_NONBLOCK: a FIFO given as key file must fail the regular-file check, not hang open() */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return fs_err(err, FHIRSYNC_E_IO, "cannot open key file %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = fs_err(err, FHIRSYNC_E_IO, "cannot stat key file %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = fs_err(err, FHIRSYNC_E_IO, "key file %s is not a regular file", path);
        goto out;
    }
    if (st.st_size > FS_KEY_MAX_BYTES) {
        rc = fs_err(err, FHIRSYNC_E_KEY,
                    "key file %s is %lld bytes, more than the %d KiB a key "
                    "can be: wrong file?",
                    path, (long long)st.st_size, FS_KEY_MAX_BYTES / 1024);
        goto out;
    }
    cap = (size_t)st.st_size + 1; /* one more byte tells us if the file grew meanwhile */
    if (!(buf = fs_malloc(cap))) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
    ssize_t got = fs_read_up_to(fd, buf, cap);
    if (got < 0) {
        rc = fs_err(err, FHIRSYNC_E_IO, "cannot read key file %s: %s", path, strerror(errno));
        goto out;
    }
    len = (size_t)got;
    if (len == cap) {
        rc = fs_err(err, FHIRSYNC_E_IO, "key file %s changed while being read", path);
        goto out;
    }
    rc = fhirsync_key_load_mem(buf, len, out, err);
    if (rc != FHIRSYNC_OK) {
        /* what the file is comes first: a public JWK Set at 0644 is the wrong file, not an
         * exposed key */
        fs_err_prefix(err, "key file %s", path);
    } else if ((rc = fs_private_file_mode_check("key file", path, (unsigned)st.st_mode, err)) !=
               FHIRSYNC_OK) {
        /* checked on the open descriptor, so the file checked is the file read */
        fhirsync_key_free(*out);
        *out = NULL;
    }
out:
    fs_free_wipe(buf, cap);
    close(fd);
    return rc;
}

/* ---- writing ------------------------------------------------------------------------------- */

fhirsync_code fhirsync_key_write_pem(const fhirsync_key *key, const char *path, fhirsync_error *err)
{
    if (!key || !path || !*path)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_key_write_pem: key or path missing");
    ERR_set_mark();
    fhirsync_code rc = FHIRSYNC_OK;
    unsigned char *pem = NULL;
    size_t pem_len = 0;
    int fd = -1;
    bool created = false;
    OSSL_ENCODER_CTX *ectx =
        OSSL_ENCODER_CTX_new_for_pkey(key->pkey, EVP_PKEY_KEYPAIR, "PEM", "PrivateKeyInfo", NULL);
    if (!ectx || OSSL_ENCODER_CTX_get_num_encoders(ectx) == 0 ||
        OSSL_ENCODER_to_data(ectx, &pem, &pem_len) != 1) {
        rc = fs_err(err, FHIRSYNC_E_CRYPTO, "OpenSSL could not encode the key as PKCS#8 PEM");
        goto out;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        if (errno == EEXIST)
            rc = fs_err(err, FHIRSYNC_E_IO,
                        "%s already exists: fhirsync never overwrites a key "
                        "file (move the old one away or choose another name)",
                        path);
        else
            rc = fs_err(err, FHIRSYNC_E_IO, "cannot create key file %s: %s", path, strerror(errno));
        goto out;
    }
    created = true;
    if (!fs_write_all(fd, pem, pem_len) || fsync(fd) != 0) {
        rc = fs_err(err, FHIRSYNC_E_IO, "cannot write key file %s: %s", path, strerror(errno));
        goto out;
    }
    int closed = close(fd);
    fd = -1;
    if (closed != 0) {
        rc = fs_err(err, FHIRSYNC_E_IO, "cannot write key file %s: %s", path, strerror(errno));
        goto out;
    }
    fs_fsync_parent(path);
out:
    if (fd >= 0)
        close(fd);
    if (rc != FHIRSYNC_OK && created)
        unlink(path); /* no half-written key left behind */
    OPENSSL_clear_free(pem, pem_len);
    OSSL_ENCODER_CTX_free(ectx);
    ERR_pop_to_mark();
    return rc;
}
