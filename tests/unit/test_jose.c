/* unit/test_jose.c: tests of the JOSE module: base64url, RFC 7638 thumbprints (with the RFC's own
 * example), key generation, PEM (PKCS#8, PKCS#1, SEC1) and private-JWK loading with every bad
 * input users bring (truncated, garbage, public key, certificate, encrypted, wrong curve, too
 * small, world-readable file), JWK Set export, and JWS signing and verification for all six
 * algorithms, including tampered signatures and algorithm confusion.
 *
 * No key is ever committed: every key is generated when the tests run, and files are written
 * under $FHIRSYNC_TEST_TMP (or /tmp) in a fresh directory removed at the end.
 *
 * The same binary doubles as a small tool for tests/interop/test_jose_interop.sh and for
 * measuring speed (these modes do not run the cmocka tests):
 *   test_jose --sign ALG KEYFILE CLAIMS_JSON   print a compact JWS signed with the key file
 *   test_jose --verify JWKS_FILE JWS           verify a JWS with the matching key of a JWK Set
 *   test_jose --bench [SECONDS]                print signatures per second per algorithm */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/encoder.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "jose/jose.h"

#define assert_contains(haystack, needle)                                                          \
    do {                                                                                           \
        const char *hay_ = (haystack);                                                             \
        if (!hay_ || !strstr(hay_, (needle)))                                                      \
            fail_msg("\"%s\" does not contain \"%s\"", hay_ ? hay_ : "(null)", (needle));          \
    } while (0)

/* ---- fixtures ------------------------------------------------------------------------------ */

static char tmpdir[PATH_MAX / 2];
static fhirsync_key *rsa_key; /* RSA 2048 */
static fhirsync_key *p256_key;
static fhirsync_key *p384_key;

static const char claims[] = "{\"iss\":\"client-1\",\"sub\":\"client-1\",\"aud\":"
                             "\"https://ehr.example/oauth2/token\",\"exp\":1764366000,"
                             "\"jti\":\"5d1c7a\"}";

static fhirsync_key *generate(fhirsync_alg alg, int bits)
{
    fhirsync_key *key = NULL;
    fhirsync_error err = {0};
    if (fhirsync_key_generate(alg, bits, &key, &err) != FHIRSYNC_OK)
        fail_msg("cannot generate a %s key: %s", fhirsync_alg_name(alg), err.message);
    return key;
}

static int group_setup(void **state)
{
    (void)state;
    if (fhirsync_global_init() != FHIRSYNC_OK)
        return -1;
    const char *base = getenv("FHIRSYNC_TEST_TMP");
    if (!base || !*base)
        base = "/tmp";
    mkdir(base, 0700); /* ctest's directory may not exist yet */
    snprintf(tmpdir, sizeof tmpdir, "%s/jose-XXXXXX", base);
    if (!mkdtemp(tmpdir))
        return -1;
    rsa_key = generate(FHIRSYNC_ALG_RS384, 2048);
    p256_key = generate(FHIRSYNC_ALG_ES256, 0);
    p384_key = generate(FHIRSYNC_ALG_ES384, 0);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    fhirsync_key_free(rsa_key);
    fhirsync_key_free(p256_key);
    fhirsync_key_free(p384_key);
    char cmd[PATH_MAX + 16];
    if (tmpdir[0] && strstr(tmpdir, "/jose-")) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tmpdir);
    }
    fhirsync_global_cleanup();
    return 0;
}

/* The path of `name` in the temporary directory. */
static const char *tmp_path(const char *name)
{
    static char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    return path;
}

/* Write a file with exactly `mode` (whatever the umask); returns its path (static). */
static const char *write_file(const char *name, const char *data, size_t len, mode_t mode)
{
    const char *path = tmp_path(name);
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
    return path;
}

/* Serialize a key with OpenSSL's encoder: `structure` "PrivateKeyInfo" (PKCS#8),
 * "type-specific" (PKCS#1 / SEC1) or "SubjectPublicKeyInfo"; encrypted when `cipher` is set.
 * The result is NUL-terminated and the caller's (free). */
static char *encode_pem(EVP_PKEY *pkey, int selection, const char *structure, const char *cipher)
{
    OSSL_ENCODER_CTX *ctx = OSSL_ENCODER_CTX_new_for_pkey(pkey, selection, "PEM", structure, NULL);
    assert_non_null(ctx);
    assert_true(OSSL_ENCODER_CTX_get_num_encoders(ctx) > 0);
    if (cipher) {
        assert_int_equal(OSSL_ENCODER_CTX_set_cipher(ctx, cipher, NULL), 1);
        assert_int_equal(OSSL_ENCODER_CTX_set_passphrase(ctx, (const unsigned char *)"pw", 2), 1);
    }
    unsigned char *data = NULL;
    size_t len = 0;
    assert_int_equal(OSSL_ENCODER_to_data(ctx, &data, &len), 1);
    OSSL_ENCODER_CTX_free(ctx);
    char *text = malloc(len + 1);
    assert_non_null(text);
    memcpy(text, data, len);
    text[len] = '\0';
    OPENSSL_clear_free(data, len);
    return text;
}

static char *private_pem(EVP_PKEY *pkey, const char *structure)
{
    return encode_pem(pkey, EVP_PKEY_KEYPAIR, structure, NULL);
}

/* The PEM label of the first block ("PRIVATE KEY", "RSA PRIVATE KEY"...), static. */
static const char *pem_label(const char *pem)
{
    static char label[64];
    const char *p = strstr(pem, "-----BEGIN ");
    assert_non_null(p);
    p += strlen("-----BEGIN ");
    size_t n = strcspn(p, "-");
    snprintf(label, sizeof label, "%.*s", (int)n, p);
    return label;
}

/* A piece of the base64 body of a PEM, to prove that no error message quotes key material. */
static void body_snippet(const char *pem, char *out, size_t size)
{
    const char *body = strchr(pem, '\n');
    assert_non_null(body);
    snprintf(out, size, "%.16s", body + 1);
}

/* Check that loading fails with `code`, a one-line message containing `needle`, and no piece of
 * the key. */
static void expect_load_error(const char *data, size_t len, fhirsync_code code, const char *needle)
{
    fhirsync_key *key = (fhirsync_key *)1;
    fhirsync_error err = {0};
    fhirsync_code rc = fhirsync_key_load_mem(data, len, &key, &err);
    if (rc != code)
        fail_msg("expected %s, got %s: %s", fhirsync_strerror(code), fhirsync_strerror(rc),
                 err.message);
    assert_null(key);
    assert_int_equal(err.code, code);
    assert_contains(err.message, needle);
    assert_null(strchr(err.message, '\n'));
    const char *nl = memchr(data, '\n', len);
    if (nl && (size_t)(nl - data) + 17 < len) {
        char snippet[32];
        snprintf(snippet, sizeof snippet, "%.16s", nl + 1);
        assert_null(strstr(err.message, snippet));
    }
}

static fhirsync_key *load_ok(const char *data, size_t len)
{
    fhirsync_key *key = NULL;
    fhirsync_error err = {0};
    if (fhirsync_key_load_mem(data, len, &key, &err) != FHIRSYNC_OK)
        fail_msg("load failed: %s", err.message);
    return key;
}

/* The public key of a fhirsync_key, the way a verifier gets it: through its public JWK. */
static EVP_PKEY *public_via_jwk(const fhirsync_key *key)
{
    fhirsync_error err = {0};
    json_t *jwk = fs_jwk_public(fs_key_evp(key), NULL, FHIRSYNC_ALG_NONE, &err);
    if (!jwk)
        fail_msg("fs_jwk_public: %s", err.message);
    EVP_PKEY *pkey = fs_jwk_to_public_pkey(jwk, &err);
    if (!pkey)
        fail_msg("fs_jwk_to_public_pkey: %s", err.message);
    json_decref(jwk);
    return pkey;
}

/* base64url of a big-number parameter, padded to `pad` bytes when pad > 0. */
static char *param_b64(EVP_PKEY *pkey, const char *name, size_t pad)
{
    BIGNUM *bn = NULL;
    assert_int_equal(EVP_PKEY_get_bn_param(pkey, name, &bn), 1);
    size_t len = pad ? pad : (size_t)BN_num_bytes(bn);
    unsigned char buf[1024];
    assert_true(len <= sizeof buf);
    assert_int_equal(BN_bn2binpad(bn, buf, (int)len), (int)len);
    BN_clear_free(bn);
    char *text = fs_b64url_encode(buf, len);
    OPENSSL_cleanse(buf, sizeof buf);
    assert_non_null(text);
    return text;
}

/* The private JWK of a key, built from its numbers (what other tools export). */
static json_t *private_jwk(const fhirsync_key *key)
{
    EVP_PKEY *pkey = fs_key_evp(key);
    json_t *jwk = json_object();
    if (fhirsync_key_type_of(key) == FHIRSYNC_KEY_RSA) {
        static const char *const members[][2] = {
            {"n", OSSL_PKEY_PARAM_RSA_N},          {"e", OSSL_PKEY_PARAM_RSA_E},
            {"d", OSSL_PKEY_PARAM_RSA_D},          {"p", OSSL_PKEY_PARAM_RSA_FACTOR1},
            {"q", OSSL_PKEY_PARAM_RSA_FACTOR2},    {"dp", OSSL_PKEY_PARAM_RSA_EXPONENT1},
            {"dq", OSSL_PKEY_PARAM_RSA_EXPONENT2}, {"qi", OSSL_PKEY_PARAM_RSA_COEFFICIENT1}};
        json_object_set_new(jwk, "kty", json_string("RSA"));
        for (size_t i = 0; i < sizeof members / sizeof *members; i++) {
            char *v = param_b64(pkey, members[i][1], 0);
            json_object_set_new(jwk, members[i][0], json_string(v));
            fs_free(v);
        }
    } else {
        size_t size = (size_t)fhirsync_key_bits(key) / 8;
        json_object_set_new(jwk, "kty", json_string("EC"));
        json_object_set_new(jwk, "crv", json_string(size == 48 ? "P-384" : "P-256"));
        const char *const members[][2] = {{"x", OSSL_PKEY_PARAM_EC_PUB_X},
                                          {"y", OSSL_PKEY_PARAM_EC_PUB_Y},
                                          {"d", OSSL_PKEY_PARAM_PRIV_KEY}};
        for (size_t i = 0; i < 3; i++) {
            char *v = param_b64(pkey, members[i][1], size);
            json_object_set_new(jwk, members[i][0], json_string(v));
            fs_free(v);
        }
    }
    return jwk;
}

static fhirsync_key *key_for(fhirsync_alg alg)
{
    if (alg == FHIRSYNC_ALG_ES256)
        return p256_key;
    if (alg == FHIRSYNC_ALG_ES384)
        return p384_key;
    return rsa_key;
}

/* noinline: at -O3 gcc 12 mistakes the returned buffer for a dangling stack pointer */
__attribute__((noinline)) static char *sign(const fhirsync_key *key, fhirsync_alg alg)
{
    char *jws = NULL;
    fhirsync_error err = {0};
    if (fhirsync_jws_sign(key, alg, NULL, NULL, claims, &jws, &err) != FHIRSYNC_OK)
        fail_msg("sign %s: %s", fhirsync_alg_name(alg), err.message);
    return jws;
}

/* Decode and verify; returns the verification result, err filled. */
static fhirsync_code decode_verify(const char *jws, EVP_PKEY *pkey, fhirsync_error *err)
{
    fs_jws decoded;
    fhirsync_code rc = fs_jws_decode(jws, 16384, &decoded, err);
    if (rc != FHIRSYNC_OK)
        fail_msg("decode: %s", err->message);
    rc = fs_jws_verify(&decoded, pkey, err);
    fs_jws_clear(&decoded);
    return rc;
}

/* ---- base64url ----------------------------------------------------------------------------- */

static void test_b64url_vectors(void **state)
{
    (void)state;
    /* RFC 4648 section 10, which has no padding-free or URL-alphabet vectors of its own */
    static const char *const vectors[][2] = {
        {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},         {"foo", "Zm9v"},
        {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < sizeof vectors / sizeof *vectors; i++) {
        char *enc = fs_b64url_encode((const unsigned char *)vectors[i][0], strlen(vectors[i][0]));
        assert_string_equal(enc, vectors[i][1]);
        fs_free(enc);
        unsigned char *dec = NULL;
        size_t len = 0;
        assert_true(fs_b64url_decode(vectors[i][1], strlen(vectors[i][1]), &dec, &len));
        assert_int_equal(len, strlen(vectors[i][0]));
        assert_memory_equal(dec, vectors[i][0], len);
        fs_free(dec);
    }
    /* the URL alphabet: 62 and 63 are '-' and '_' */
    static const unsigned char binary[] = {0xfb, 0xff, 0xfe, 0x00, 0x3e};
    char *enc = fs_b64url_encode(binary, sizeof binary);
    assert_string_equal(enc, "-__-AD4");
    unsigned char *dec = NULL;
    size_t len = 0;
    assert_true(fs_b64url_decode(enc, strlen(enc), &dec, &len));
    assert_int_equal(len, sizeof binary);
    assert_memory_equal(dec, binary, sizeof binary);
    fs_free(dec);
    fs_free(enc);
}

static void test_b64url_strict(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "Zg==",   /* padding */
        "Zm9v\n", /* whitespace */
        "Zm 9v",  /* space */
        "Zm+v",   /* standard alphabet */
        "Zm/v",   /* standard alphabet */
        "Z",      /* impossible length */
        "Zh",     /* non-zero trailing bits: not the canonical encoding */
        "Zm9=",   /* padding in the middle of a quantum */
        "Zm\0v",  /* NUL */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        unsigned char *dec = (unsigned char *)1;
        size_t len = 99;
        size_t text_len = i == 8 ? 4 : strlen(bad[i]);
        if (fs_b64url_decode(bad[i], text_len, &dec, &len))
            fail_msg("accepted bad base64url #%zu \"%s\"", i, bad[i]);
        assert_null(dec);
        assert_int_equal(len, 0);
    }
}

/* ---- algorithms and thumbprints ------------------------------------------------------------ */

static void test_alg_names(void **state)
{
    (void)state;
    static const fhirsync_alg all[] = {FHIRSYNC_ALG_RS384, FHIRSYNC_ALG_ES384, FHIRSYNC_ALG_RS256,
                                       FHIRSYNC_ALG_RS512, FHIRSYNC_ALG_ES256, FHIRSYNC_ALG_PS384};
    static const char *const names[] = {"RS384", "ES384", "RS256", "RS512", "ES256", "PS384"};
    for (size_t i = 0; i < 6; i++) {
        assert_string_equal(fhirsync_alg_name(all[i]), names[i]);
        assert_int_equal(fhirsync_alg_from_name(names[i]), all[i]);
    }
    assert_null(fhirsync_alg_name(FHIRSYNC_ALG_NONE));
    assert_null(fhirsync_alg_name((fhirsync_alg)77));
    assert_int_equal(fhirsync_alg_from_name("rs384"), FHIRSYNC_ALG_NONE);
    assert_int_equal(fhirsync_alg_from_name("none"), FHIRSYNC_ALG_NONE);
    assert_int_equal(fhirsync_alg_from_name("HS256"), FHIRSYNC_ALG_NONE);
    assert_int_equal(fhirsync_alg_from_name(NULL), FHIRSYNC_ALG_NONE);
}

/* RFC 7638 section 3.1: the example RSA key and its thumbprint. Extra members and their order
 * must not change the result. */
static const char rfc7638_jwk[] =
    "{\"kid\":\"2011-04-29\",\"alg\":\"RS256\",\"kty\":\"RSA\",\"e\":\"AQAB\",\"n\":\""
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
    "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY"
    "368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f"
    "M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw\"}";

static void test_thumbprint_rfc7638(void **state)
{
    (void)state;
    fhirsync_error err = {0};
    json_t *jwk = fs_json_parse(rfc7638_jwk, strlen(rfc7638_jwk), true, "JWK", &err);
    assert_non_null(jwk);
    EVP_PKEY *pkey = fs_jwk_to_public_pkey(jwk, &err);
    if (!pkey)
        fail_msg("%s", err.message);
    char *kid = fs_jwk_thumbprint(pkey, &err);
    assert_string_equal(kid, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    /* exporting the key again gives the same n and e, and the kid we pass */
    json_t *exported = fs_jwk_public(pkey, kid, FHIRSYNC_ALG_RS256, &err);
    assert_non_null(exported);
    assert_string_equal(fs_json_str(exported, "n"), fs_json_str(jwk, "n"));
    assert_string_equal(fs_json_str(exported, "e"), "AQAB");
    assert_string_equal(fs_json_str(exported, "kid"), kid);
    assert_string_equal(fs_json_str(exported, "alg"), "RS256");
    json_decref(exported);
    fs_free(kid);
    EVP_PKEY_free(pkey);
    json_decref(jwk);
}

static void test_generate(void **state)
{
    (void)state;
    assert_int_equal(fhirsync_key_type_of(rsa_key), FHIRSYNC_KEY_RSA);
    assert_int_equal(fhirsync_key_bits(rsa_key), 2048);
    assert_int_equal(fhirsync_key_default_alg(rsa_key), FHIRSYNC_ALG_RS384);
    assert_int_equal(strlen(fhirsync_key_kid(rsa_key)), 43);
    assert_true(fhirsync_key_fits_alg(rsa_key, FHIRSYNC_ALG_RS256));
    assert_true(fhirsync_key_fits_alg(rsa_key, FHIRSYNC_ALG_RS512));
    assert_true(fhirsync_key_fits_alg(rsa_key, FHIRSYNC_ALG_PS384));
    assert_false(fhirsync_key_fits_alg(rsa_key, FHIRSYNC_ALG_ES384));
    assert_false(fhirsync_key_fits_alg(rsa_key, FHIRSYNC_ALG_NONE));

    assert_int_equal(fhirsync_key_type_of(p384_key), FHIRSYNC_KEY_EC);
    assert_int_equal(fhirsync_key_bits(p384_key), 384);
    assert_int_equal(fhirsync_key_default_alg(p384_key), FHIRSYNC_ALG_ES384);
    assert_true(fhirsync_key_fits_alg(p384_key, FHIRSYNC_ALG_ES384));
    assert_false(fhirsync_key_fits_alg(p384_key, FHIRSYNC_ALG_ES256));
    assert_false(fhirsync_key_fits_alg(p384_key, FHIRSYNC_ALG_RS384));

    assert_int_equal(fhirsync_key_bits(p256_key), 256);
    assert_int_equal(fhirsync_key_default_alg(p256_key), FHIRSYNC_ALG_ES256);
    assert_true(fhirsync_key_fits_alg(p256_key, FHIRSYNC_ALG_ES256));
    assert_false(fhirsync_key_fits_alg(p256_key, FHIRSYNC_ALG_ES384));
    assert_string_not_equal(fhirsync_key_kid(p256_key), fhirsync_key_kid(p384_key));

    fhirsync_key *key = (fhirsync_key *)1;
    fhirsync_error err = {0};
    assert_int_equal(fhirsync_key_generate(FHIRSYNC_ALG_RS384, 1024, &key, &err), FHIRSYNC_E_ARG);
    assert_null(key);
    assert_contains(err.message, "2048, 3072 or 4096");
    assert_int_equal(fhirsync_key_generate(FHIRSYNC_ALG_NONE, 0, &key, &err), FHIRSYNC_E_ARG);
    assert_null(key);

    /* NULL handles are harmless */
    fhirsync_key_free(NULL);
    assert_null(fhirsync_key_kid(NULL));
    assert_int_equal(fhirsync_key_bits(NULL), 0);
    assert_false(fhirsync_key_fits_alg(NULL, FHIRSYNC_ALG_RS384));
    assert_int_equal(fhirsync_key_default_alg(NULL), FHIRSYNC_ALG_NONE);
}

/* ---- JWK Set export ------------------------------------------------------------------------ */

static json_t *build_jwks(const fhirsync_key *const *keys, const fhirsync_alg *algs, size_t n)
{
    char *text = NULL;
    fhirsync_error err = {0};
    if (fhirsync_jwks_build(keys, algs, n, &text, &err) != FHIRSYNC_OK)
        fail_msg("jwks: %s", err.message);
    assert_non_null(strchr(text, '\n')); /* pretty-printed */
    json_t *jwks = fs_json_parse(text, strlen(text), true, "JWKS", &err);
    assert_non_null(jwks);
    fhirsync_free(text);
    return jwks;
}

static void check_public_jwk(json_t *jwk, const fhirsync_key *key, const char *alg)
{
    static const char *const private_members[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"};
    for (size_t i = 0; i < sizeof private_members / sizeof *private_members; i++)
        if (json_object_get(jwk, private_members[i]))
            fail_msg("public JWK has private member \"%s\"", private_members[i]);
    assert_string_equal(fs_json_str(jwk, "kid"), fhirsync_key_kid(key));
    assert_string_equal(fs_json_str(jwk, "alg"), alg);
    assert_string_equal(fs_json_str(jwk, "use"), "sig");
    json_t *ops = json_object_get(jwk, "key_ops");
    assert_int_equal(json_array_size(ops), 1);
    assert_string_equal(json_string_value(json_array_get(ops, 0)), "verify");
    /* importing the published key gives back the same thumbprint */
    fhirsync_error err = {0};
    EVP_PKEY *pkey = fs_jwk_to_public_pkey(jwk, &err);
    assert_non_null(pkey);
    char *kid = fs_jwk_thumbprint(pkey, &err);
    assert_string_equal(kid, fhirsync_key_kid(key));
    fs_free(kid);
    EVP_PKEY_free(pkey);
}

static size_t decoded_len(const char *b64)
{
    unsigned char *bytes = NULL;
    size_t len = 0;
    assert_true(fs_b64url_decode(b64, strlen(b64), &bytes, &len));
    assert_true(len > 0);
    assert_int_not_equal(bytes[0], 0); /* no leading zero octet (RFC 7518 section 6.3.1) */
    fs_free(bytes);
    return len;
}

static void test_jwks_rsa(void **state)
{
    (void)state;
    const fhirsync_key *keys[] = {rsa_key};
    json_t *jwks = build_jwks(keys, NULL, 1);
    json_t *jwk = json_array_get(json_object_get(jwks, "keys"), 0);
    assert_int_equal(json_array_size(json_object_get(jwks, "keys")), 1);
    assert_string_equal(fs_json_str(jwk, "kty"), "RSA");
    check_public_jwk(jwk, rsa_key, "RS384");
    assert_int_equal(decoded_len(fs_json_str(jwk, "n")), 256);
    assert_string_equal(fs_json_str(jwk, "e"), "AQAB");
    assert_null(json_object_get(jwk, "crv"));
    json_decref(jwks);
}

static void test_jwks_ec(void **state)
{
    (void)state;
    const fhirsync_key *keys[] = {p256_key, p384_key};
    json_t *jwks = build_jwks(keys, NULL, 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *jwk = json_array_get(json_object_get(jwks, "keys"), i);
        size_t size = i == 0 ? 32 : 48;
        assert_string_equal(fs_json_str(jwk, "kty"), "EC");
        assert_string_equal(fs_json_str(jwk, "crv"), i == 0 ? "P-256" : "P-384");
        check_public_jwk(jwk, keys[i], i == 0 ? "ES256" : "ES384");
        /* coordinates always full length, even with leading zero octets */
        unsigned char *bytes = NULL;
        size_t len = 0;
        assert_true(
            fs_b64url_decode(fs_json_str(jwk, "x"), strlen(fs_json_str(jwk, "x")), &bytes, &len));
        assert_int_equal(len, size);
        fs_free(bytes);
        assert_true(
            fs_b64url_decode(fs_json_str(jwk, "y"), strlen(fs_json_str(jwk, "y")), &bytes, &len));
        assert_int_equal(len, size);
        fs_free(bytes);
    }
    json_decref(jwks);
}

static void test_jwks_algs_and_errors(void **state)
{
    (void)state;
    const fhirsync_key *keys[] = {rsa_key, p384_key};
    const fhirsync_alg algs[] = {FHIRSYNC_ALG_PS384, FHIRSYNC_ALG_NONE};
    json_t *jwks = build_jwks(keys, algs, 2);
    json_t *list = json_object_get(jwks, "keys");
    assert_string_equal(fs_json_str(json_array_get(list, 0), "alg"), "PS384");
    assert_string_equal(fs_json_str(json_array_get(list, 1), "alg"), "ES384");
    json_decref(jwks);

    char *text = (char *)1;
    fhirsync_error err = {0};
    const fhirsync_alg wrong[] = {FHIRSYNC_ALG_RS384, FHIRSYNC_ALG_RS384};
    assert_int_equal(fhirsync_jwks_build(keys, wrong, 2, &text, &err), FHIRSYNC_E_KEY);
    assert_null(text);
    assert_contains(err.message, "key is EC P-384 but algorithm RS384 needs an RSA key");

    const fhirsync_key *twice[] = {rsa_key, rsa_key};
    assert_int_equal(fhirsync_jwks_build(twice, NULL, 2, &text, &err), FHIRSYNC_E_ARG);
    assert_contains(err.message, "twice");
    assert_int_equal(fhirsync_jwks_build(keys, NULL, 0, &text, &err), FHIRSYNC_E_ARG);
    assert_null(text);
}

/* ---- signing and verification -------------------------------------------------------------- */

static void test_sign_verify_all_algs(void **state)
{
    (void)state;
    static const fhirsync_alg all[] = {FHIRSYNC_ALG_RS384, FHIRSYNC_ALG_ES384, FHIRSYNC_ALG_RS256,
                                       FHIRSYNC_ALG_RS512, FHIRSYNC_ALG_ES256, FHIRSYNC_ALG_PS384};
    static const size_t sig_len[] = {256, 96, 256, 256, 64, 256};
    for (size_t i = 0; i < 6; i++) {
        fhirsync_key *key = key_for(all[i]);
        char *jws = sign(key, all[i]);
        fhirsync_error err = {0};
        fs_jws decoded;
        assert_int_equal(fs_jws_decode(jws, 16384, &decoded, &err), FHIRSYNC_OK);
        assert_int_equal(decoded.alg, all[i]);
        assert_string_equal(fs_json_str(decoded.header, "alg"), fhirsync_alg_name(all[i]));
        assert_string_equal(fs_json_str(decoded.header, "typ"), "JWT");
        assert_string_equal(decoded.kid, fhirsync_key_kid(key));
        assert_null(json_object_get(decoded.header, "jku"));
        assert_int_equal(decoded.signature_len, sig_len[i]);
        /* the payload is the claims byte for byte */
        const char *payload = strchr(jws, '.') + 1;
        unsigned char *bytes = NULL;
        size_t len = 0;
        assert_true(
            fs_b64url_decode(payload, (size_t)(strchr(payload, '.') - payload), &bytes, &len));
        assert_int_equal(len, strlen(claims));
        assert_memory_equal(bytes, claims, len);
        fs_free(bytes);

        EVP_PKEY *pub = public_via_jwk(key);
        if (fs_jws_verify(&decoded, pub, &err) != FHIRSYNC_OK)
            fail_msg("%s does not verify: %s", fhirsync_alg_name(all[i]), err.message);
        EVP_PKEY_free(pub);
        fs_jws_clear(&decoded);
        fhirsync_free_secret(jws);
    }
}

static void test_sign_header_options(void **state)
{
    (void)state;
    char *jws = NULL;
    fhirsync_error err = {0};
    assert_int_equal(fhirsync_jws_sign(p384_key, FHIRSYNC_ALG_ES384, "my-kid",
                                       "https://app.example/.well-known/jwks.json", claims, &jws,
                                       &err),
                     FHIRSYNC_OK);
    fs_jws decoded;
    assert_int_equal(fs_jws_decode(jws, 16384, &decoded, &err), FHIRSYNC_OK);
    assert_string_equal(decoded.kid, "my-kid");
    assert_string_equal(fs_json_str(decoded.header, "jku"),
                        "https://app.example/.well-known/jwks.json");
    /* the header is exactly alg, kid, typ, jku */
    assert_int_equal(json_object_size(decoded.header), 4);
    assert_int_equal(fs_jws_verify(&decoded, fs_key_evp(p384_key), &err), FHIRSYNC_OK);
    fs_jws_clear(&decoded);
    fhirsync_free_secret(jws);
    /* ECDSA and PSS are randomized: two signatures of the same claims differ */
    char *a = sign(rsa_key, FHIRSYNC_ALG_PS384), *b = sign(rsa_key, FHIRSYNC_ALG_PS384);
    assert_string_not_equal(a, b);
    fhirsync_free_secret(a);
    fhirsync_free_secret(b);
    /* PKCS#1 v1.5 is deterministic */
    a = sign(rsa_key, FHIRSYNC_ALG_RS384);
    b = sign(rsa_key, FHIRSYNC_ALG_RS384);
    assert_string_equal(a, b);
    fhirsync_free_secret(a);
    fhirsync_free_secret(b);
}

static void test_sign_rejects_wrong_alg(void **state)
{
    (void)state;
    char *jws = (char *)1;
    fhirsync_error err = {0};
    assert_int_equal(
        fhirsync_jws_sign(p384_key, FHIRSYNC_ALG_RS384, NULL, NULL, claims, &jws, &err),
        FHIRSYNC_E_KEY);
    assert_null(jws);
    assert_string_equal(err.message, "key is EC P-384 but algorithm RS384 needs an RSA key");
    assert_int_equal(fhirsync_jws_sign(rsa_key, FHIRSYNC_ALG_ES384, NULL, NULL, claims, &jws, &err),
                     FHIRSYNC_E_KEY);
    assert_string_equal(err.message, "key is RSA 2048-bit but algorithm ES384 needs an EC P-384 "
                                     "key");
    assert_int_equal(
        fhirsync_jws_sign(p256_key, FHIRSYNC_ALG_ES384, NULL, NULL, claims, &jws, &err),
        FHIRSYNC_E_KEY);
    assert_contains(err.message, "key is EC P-256");
    assert_int_equal(fhirsync_jws_sign(rsa_key, FHIRSYNC_ALG_NONE, NULL, NULL, claims, &jws, &err),
                     FHIRSYNC_E_ARG);
    assert_int_equal(
        fhirsync_jws_sign(rsa_key, FHIRSYNC_ALG_RS384, NULL, NULL, "[1,2]", &jws, &err),
        FHIRSYNC_E_JSON);
    assert_int_equal(
        fhirsync_jws_sign(rsa_key, FHIRSYNC_ALG_RS384, NULL, NULL, "{\"a\":", &jws, &err),
        FHIRSYNC_E_JSON);
    assert_null(jws);
    assert_int_equal(
        fhirsync_jws_sign(rsa_key, FHIRSYNC_ALG_RS384, "\xff\xfe", NULL, claims, &jws, &err),
        FHIRSYNC_E_ARG);
}

/* Replace segment `index` (0..2) of a compact JWS; returns a new string (free). */
static char *replace_segment(const char *jws, int index, const char *text)
{
    const char *dot1 = strchr(jws, '.'), *dot2 = strchr(dot1 + 1, '.');
    const char *start[] = {jws, dot1 + 1, dot2 + 1};
    const char *end[] = {dot1, dot2, jws + strlen(jws)};
    char *out = malloc(strlen(jws) + strlen(text) + 1);
    assert_non_null(out);
    size_t n = 0;
    for (int i = 0; i < 3; i++) {
        const char *s = i == index ? text : start[i];
        size_t len = i == index ? strlen(text) : (size_t)(end[i] - start[i]);
        memcpy(out + n, s, len);
        n += len;
        if (i < 2)
            out[n++] = '.';
    }
    out[n] = '\0';
    return out;
}

static char *b64_of(const char *text)
{
    char *b64 = fs_b64url_encode((const unsigned char *)text, strlen(text));
    assert_non_null(b64);
    return b64;
}

static void test_verify_rejects_tampering(void **state)
{
    (void)state;
    static const fhirsync_alg algs[] = {FHIRSYNC_ALG_RS384, FHIRSYNC_ALG_ES384, FHIRSYNC_ALG_PS384,
                                        FHIRSYNC_ALG_ES256};
    for (size_t i = 0; i < 4; i++) {
        fhirsync_key *key = key_for(algs[i]);
        EVP_PKEY *pub = public_via_jwk(key);
        char *jws = sign(key, algs[i]);
        fhirsync_error err = {0};

        /* flip one signature bit (in the middle: the last character may carry unused bits) */
        char *tampered = strdup(jws);
        char *sig = strrchr(tampered, '.') + 1;
        char *c = sig + strlen(sig) / 2;
        *c = *c == 'A' ? 'B' : 'A';
        assert_int_equal(decode_verify(tampered, pub, &err), FHIRSYNC_E_CRYPTO);
        assert_contains(err.message, "does not verify");
        free(tampered);

        /* other claims under the original signature */
        char *payload = b64_of("{\"iss\":\"attacker\",\"sub\":\"client-1\",\"exp\":1764366000}");
        tampered = replace_segment(jws, 1, payload);
        assert_int_equal(decode_verify(tampered, pub, &err), FHIRSYNC_E_CRYPTO);
        free(tampered);
        fs_free(payload);

        /* a different, genuine key of the same type does not verify it */
        fhirsync_key *other = generate(algs[i], 0);
        assert_int_equal(decode_verify(jws, fs_key_evp(other), &err), FHIRSYNC_E_CRYPTO);
        fhirsync_key_free(other);

        EVP_PKEY_free(pub);
        fhirsync_free_secret(jws);
    }
}

static void test_verify_rejects_alg_confusion(void **state)
{
    (void)state;
    fhirsync_error err = {0};
    EVP_PKEY *rsa_pub = public_via_jwk(rsa_key), *p384_pub = public_via_jwk(p384_key);
    EVP_PKEY *p256_pub = public_via_jwk(p256_key);

    /* an RS384 token never verifies with an EC key, nor ES384 with RSA, nor across curves */
    char *rs = sign(rsa_key, FHIRSYNC_ALG_RS384);
    assert_int_equal(decode_verify(rs, p384_pub, &err), FHIRSYNC_E_CRYPTO);
    assert_contains(err.message, "needs an RSA key");
    char *es = sign(p384_key, FHIRSYNC_ALG_ES384);
    assert_int_equal(decode_verify(es, rsa_pub, &err), FHIRSYNC_E_CRYPTO);
    assert_contains(err.message, "key is RSA 2048-bit but algorithm ES384 needs an EC P-384 key");
    assert_int_equal(decode_verify(es, p256_pub, &err), FHIRSYNC_E_CRYPTO);

    /* the header's alg switched to a sibling algorithm of the same key type */
    char *ps_header = b64_of("{\"alg\":\"PS384\",\"typ\":\"JWT\"}");
    char *swapped = replace_segment(rs, 0, ps_header);
    assert_int_equal(decode_verify(swapped, rsa_pub, &err), FHIRSYNC_E_CRYPTO);
    free(swapped);
    fs_free(ps_header);
    char *es256_header = b64_of("{\"alg\":\"ES256\",\"typ\":\"JWT\"}");
    swapped = replace_segment(es, 0, es256_header);
    assert_int_equal(decode_verify(swapped, p384_pub, &err), FHIRSYNC_E_CRYPTO);
    free(swapped);
    fs_free(es256_header);

    /* "none" and HMAC are refused whatever the key */
    char *none_header = b64_of("{\"alg\":\"none\",\"typ\":\"JWT\"}");
    char *unsigned_jws = replace_segment(rs, 0, none_header);
    char *cut = strrchr(unsigned_jws, '.');
    cut[1] = '\0';
    assert_int_equal(decode_verify(unsigned_jws, rsa_pub, &err), FHIRSYNC_E_CRYPTO);
    assert_contains(err.message, "\"none\"");
    free(unsigned_jws);
    fs_free(none_header);
    char *hs_header = b64_of("{\"alg\":\"HS256\",\"typ\":\"JWT\"}");
    char *hs = replace_segment(rs, 0, hs_header);
    assert_int_equal(decode_verify(hs, rsa_pub, &err), FHIRSYNC_E_CRYPTO);
    assert_contains(err.message, "not supported");
    free(hs);
    fs_free(hs_header);

    /* "crit" extensions we do not understand */
    char *crit_header = b64_of("{\"alg\":\"RS384\",\"crit\":[\"b64\"],\"b64\":false}");
    char *crit = replace_segment(rs, 0, crit_header);
    assert_int_equal(decode_verify(crit, rsa_pub, &err), FHIRSYNC_E_CRYPTO);
    assert_contains(err.message, "crit");
    free(crit);
    fs_free(crit_header);

    /* an ES384 signature in DER form (what OpenSSL makes) is refused by its length */
    fs_jws decoded;
    assert_int_equal(fs_jws_decode(es, 16384, &decoded, &err), FHIRSYNC_OK);
    unsigned char der[104] = {0x30, 0x66, 0x02, 0x31, 0x00};
    memcpy(der + 5, decoded.signature, 48);
    der[53] = 0x02;
    der[54] = 0x31;
    der[55] = 0x00;
    memcpy(der + 56, decoded.signature + 48, 48);
    fs_free(decoded.signature);
    decoded.signature = malloc(sizeof der);
    memcpy(decoded.signature, der, sizeof der);
    decoded.signature_len = sizeof der;
    assert_int_equal(fs_jws_verify(&decoded, p384_pub, &err), FHIRSYNC_E_CRYPTO);
    assert_contains(err.message, "raw R||S");
    fs_jws_clear(&decoded);

    fhirsync_free_secret(rs);
    fhirsync_free_secret(es);
    EVP_PKEY_free(rsa_pub);
    EVP_PKEY_free(p384_pub);
    EVP_PKEY_free(p256_pub);
}

static void test_decode_strict(void **state)
{
    (void)state;
    char *good = sign(p256_key, FHIRSYNC_ALG_ES256);
    char *obj = b64_of("{\"alg\":\"ES256\"}");
    char *arr = b64_of("[1]");
    char *dup = b64_of("{\"alg\":\"ES256\",\"alg\":\"none\"}");
    char *no_alg = b64_of("{\"typ\":\"JWT\"}");
    char *padded = malloc(strlen(good) + 3);
    const char *dot = strchr(good, '.');
    snprintf(padded, strlen(good) + 3, "%.*s==%s", (int)(dot - good), good, dot);
    struct {
        char *jws;
        const char *message;
    } bad[] = {
        {strdup("abc.def"), "three"},
        {strdup("a.b.c.d"), "three"},
        {strdup(""), "three"},
        {replace_segment(good, 0, ""), "header is empty"},
        {replace_segment(good, 1, ""), "payload is empty"},
        {replace_segment(good, 0, "e30*"), "not base64url"},
        {padded, "not base64url"},
        {replace_segment(good, 0, arr), "not an object"},
        {replace_segment(good, 1, arr), "not an object"},
        {replace_segment(good, 1, "bm90IGpzb24"), "not valid JSON"},
        {replace_segment(good, 0, dup), "not valid JSON"},
        {replace_segment(good, 0, no_alg), "\"alg\""},
        {replace_segment(good, 2, "AAA="), "signature is not base64url"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        fs_jws decoded;
        fhirsync_error err = {0};
        fhirsync_code rc = fs_jws_decode(bad[i].jws, 16384, &decoded, &err);
        if (rc != FHIRSYNC_E_JSON)
            fail_msg("#%zu \"%s\" gave %d (%s)", i, bad[i].jws, rc, err.message);
        assert_contains(err.message, bad[i].message);
        assert_null(decoded.header);
        assert_null(decoded.signing_input);
        free(bad[i].jws);
    }
    /* the size cap */
    fs_jws decoded;
    fhirsync_error err = {0};
    assert_int_equal(fs_jws_decode(good, strlen(good) - 1, &decoded, &err), FHIRSYNC_E_JSON);
    assert_contains(err.message, "longer than");
    assert_int_equal(fs_jws_decode(good, strlen(good), &decoded, &err), FHIRSYNC_OK);
    /* an unknown alg decodes (the verifier refuses it with a clear message) */
    fs_jws_clear(&decoded);
    char *unknown = replace_segment(good, 0, obj);
    assert_int_equal(fs_jws_decode(unknown, 16384, &decoded, &err), FHIRSYNC_OK);
    assert_int_equal(decoded.alg, FHIRSYNC_ALG_ES256);
    assert_null(decoded.kid);
    fs_jws_clear(&decoded);
    fs_jws_clear(&decoded); /* clearing twice is harmless */
    free(unknown);
    fs_free(obj);
    fs_free(arr);
    fs_free(dup);
    fs_free(no_alg);
    fhirsync_free_secret(good);
}

/* ---- loading keys -------------------------------------------------------------------------- */

static void check_same_key(fhirsync_key *loaded, const fhirsync_key *original)
{
    assert_non_null(loaded);
    assert_string_equal(fhirsync_key_kid(loaded), fhirsync_key_kid(original));
    assert_int_equal(fhirsync_key_type_of(loaded), fhirsync_key_type_of(original));
    assert_int_equal(fhirsync_key_bits(loaded), fhirsync_key_bits(original));
    /* and it signs what the original's public key verifies */
    fhirsync_alg alg = fhirsync_key_default_alg(loaded);
    char *jws = sign(loaded, alg);
    fhirsync_error err = {0};
    assert_int_equal(decode_verify(jws, fs_key_evp(original), &err), FHIRSYNC_OK);
    fhirsync_free_secret(jws);
    fhirsync_key_free(loaded);
}

static void test_load_pkcs8(void **state)
{
    (void)state;
    const fhirsync_key *keys[] = {rsa_key, p256_key, p384_key};
    for (size_t i = 0; i < 3; i++) {
        char *pem = private_pem(fs_key_evp(keys[i]), "PrivateKeyInfo");
        assert_string_equal(pem_label(pem), "PRIVATE KEY");
        check_same_key(load_ok(pem, strlen(pem)), keys[i]);
        /* through a file with mode 0600, with CRLF line ends and a UTF-8 BOM, too */
        const char *path = write_file("pkcs8.pem", pem, strlen(pem), 0600);
        fhirsync_key *key = NULL;
        fhirsync_error err = {0};
        assert_int_equal(fhirsync_key_load_file(path, &key, &err), FHIRSYNC_OK);
        check_same_key(key, keys[i]);
        size_t len = strlen(pem);
        char *crlf = malloc(3 + 2 * len + 1), *o = crlf;
        memcpy(o, "\xEF\xBB\xBF", 3);
        o += 3;
        for (size_t j = 0; j < len; j++) {
            if (pem[j] == '\n')
                *o++ = '\r';
            *o++ = pem[j];
        }
        check_same_key(load_ok(crlf, (size_t)(o - crlf)), keys[i]);
        OPENSSL_cleanse(crlf, (size_t)(o - crlf));
        free(crlf);
        OPENSSL_cleanse(pem, strlen(pem));
        free(pem);
    }
}

static void test_load_pkcs1_sec1(void **state)
{
    (void)state;
    char *pem = private_pem(fs_key_evp(rsa_key), "type-specific");
    assert_string_equal(pem_label(pem), "RSA PRIVATE KEY");
    check_same_key(load_ok(pem, strlen(pem)), rsa_key);
    free(pem);

    const fhirsync_key *ec[] = {p256_key, p384_key};
    for (size_t i = 0; i < 2; i++) {
        pem = private_pem(fs_key_evp(ec[i]), "type-specific");
        assert_string_equal(pem_label(pem), "EC PRIVATE KEY");
        check_same_key(load_ok(pem, strlen(pem)), ec[i]);
        /* `openssl ecparam -genkey` puts an EC PARAMETERS block first */
        char *params =
            encode_pem(fs_key_evp(ec[i]), EVP_PKEY_KEY_PARAMETERS, "type-specific", NULL);
        assert_string_equal(pem_label(params), "EC PARAMETERS");
        size_t len = strlen(params) + strlen(pem);
        char *both = malloc(len + 1);
        snprintf(both, len + 1, "%s%s", params, pem);
        check_same_key(load_ok(both, len), ec[i]);
        free(both);
        free(params);
        free(pem);
    }
}

static void test_load_private_jwk(void **state)
{
    (void)state;
    const fhirsync_key *keys[] = {rsa_key, p256_key, p384_key};
    for (size_t i = 0; i < 3; i++) {
        json_t *jwk = private_jwk(keys[i]);
        json_object_set_new(jwk, "kid", json_string("whatever-the-file-says"));
        char *text = fs_json_dump_pretty(jwk);
        check_same_key(load_ok(text, strlen(text)), keys[i]);
        const char *path = write_file("key.jwk", text, strlen(text), 0400);
        fhirsync_key *key = NULL;
        fhirsync_error err = {0};
        assert_int_equal(fhirsync_key_load_file(path, &key, &err), FHIRSYNC_OK);
        check_same_key(key, keys[i]);
        fs_free_secret(text);
        json_decref(jwk);
    }
}

static void expect_jwk_error(json_t *jwk, const char *needle)
{
    char *text = fs_json_dump(jwk);
    expect_load_error(text, strlen(text), FHIRSYNC_E_KEY, needle);
    fs_free_secret(text);
    json_decref(jwk);
}

static void test_load_bad_jwk(void **state)
{
    (void)state;
    /* public only */
    json_t *jwk = private_jwk(p384_key);
    json_object_del(jwk, "d");
    expect_jwk_error(jwk, "this is a public JWK");
    /* a JWK Set */
    jwk = json_pack("{s:[o]}", "keys", private_jwk(p256_key));
    expect_jwk_error(jwk, "JWK Set");
    /* a "d" of another key */
    jwk = private_jwk(p384_key);
    fhirsync_key *fresh = generate(FHIRSYNC_ALG_ES384, 0);
    json_t *other = private_jwk(fresh);
    json_object_set(jwk, "d", json_object_get(other, "d"));
    expect_jwk_error(jwk, "does not match its public half");
    json_decref(other);
    fhirsync_key_free(fresh);
    /* a point not on the curve */
    jwk = private_jwk(p256_key);
    char *x = strdup(fs_json_str(jwk, "x"));
    x[5] = x[5] == 'A' ? 'B' : 'A';
    json_object_set_new(jwk, "x", json_string(x));
    free(x);
    expect_jwk_error(jwk, "not on the curve");
    /* coordinates of the wrong length */
    jwk = private_jwk(p256_key);
    json_object_set_new(jwk, "x", json_string("AQAB"));
    expect_jwk_error(jwk, "expected 32");
    /* unsupported curve and key types */
    jwk = private_jwk(p256_key);
    json_object_set_new(jwk, "crv", json_string("P-521"));
    expect_jwk_error(jwk, "P-521\" is not supported");
    jwk = json_pack("{s:s, s:s}", "kty", "oct", "k", "c2VjcmV0");
    expect_jwk_error(jwk, "\"oct\" is not supported");
    jwk = json_pack("{s:s, s:s, s:s, s:s}", "kty", "OKP", "crv", "Ed25519", "x", "AA", "d", "AA");
    expect_jwk_error(jwk, "not supported");
    /* RSA with a member missing, or not base64url */
    jwk = private_jwk(rsa_key);
    json_object_del(jwk, "qi");
    expect_jwk_error(jwk, "lacks the \"qi\"");
    jwk = private_jwk(rsa_key);
    json_object_set_new(jwk, "dp", json_string("AQAB=="));
    expect_jwk_error(jwk, "\"dp\" is not base64url");
    jwk = private_jwk(rsa_key);
    json_object_set_new(jwk, "e", json_integer(65537));
    expect_jwk_error(jwk, "\"e\" is not a non-empty string");
    /* broken JSON: the message gives a position, never the text */
    static const char broken[] = "{\"kty\":\"EC\",\"d\":\"c2VjcmV0c2VjcmV0c2VjcmV0\" \"x\"}";
    expect_load_error(broken, strlen(broken), FHIRSYNC_E_KEY, "line 1");
    fhirsync_error err = {0};
    fhirsync_key *key = NULL;
    fhirsync_key_load_mem(broken, strlen(broken), &key, &err);
    assert_null(strstr(err.message, "c2Vj"));
}

/* A certificate for the key, PEM, the caller's (free). */
static char *make_certificate(EVP_PKEY *pkey)
{
    X509 *cert = X509_new();
    assert_non_null(cert);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_set_pubkey(cert, pkey);
    X509_NAME *name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"test", -1, -1, 0);
    X509_set_issuer_name(cert, name);
    assert_true(X509_sign(cert, pkey, EVP_sha256()) > 0);
    BIO *bio = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_X509(bio, cert), 1);
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    char *text = malloc((size_t)len + 1); /* the BIO's data is not NUL-terminated */
    assert_non_null(text);
    memcpy(text, data, (size_t)len);
    text[len] = '\0';
    BIO_free(bio);
    X509_free(cert);
    return text;
}

static void test_load_bad_pem(void **state)
{
    (void)state;
    char *pem = private_pem(fs_key_evp(rsa_key), "PrivateKeyInfo");
    size_t len = strlen(pem);
    char snippet[32];
    body_snippet(pem, snippet, sizeof snippet);

    /* truncated: in the body, and within the BEGIN line */
    expect_load_error(pem, len / 2, FHIRSYNC_E_KEY, "malformed PEM");
    expect_load_error(pem, len / 2, FHIRSYNC_E_KEY, "no END line");
    expect_load_error(pem, 15, FHIRSYNC_E_KEY, "cut short");
    /* the END line present but the body damaged */
    char *damaged = strdup(pem);
    memcpy(strchr(damaged, '\n') + 40, "!!!!", 4);
    expect_load_error(damaged, len, FHIRSYNC_E_KEY, "could not be decoded");
    /* lines dropped from the middle: valid base64, invalid DER */
    char *second = strchr(strchr(pem, '\n') + 1, '\n') + 1;
    char *fifth = strchr(strchr(strchr(second, '\n') + 1, '\n') + 1, '\n') + 1;
    size_t head = (size_t)(second - pem);
    memcpy(damaged, pem, head);
    memcpy(damaged + head, fifth, strlen(fifth) + 1);
    expect_load_error(damaged, strlen(damaged), FHIRSYNC_E_KEY, "malformed PEM");
    free(damaged);
    /* garbage and empty input */
    expect_load_error("hello world\n", 12, FHIRSYNC_E_KEY, "neither PEM");
    expect_load_error("\x30\x82\x04\xa4\x02\x01", 6, FHIRSYNC_E_KEY, "DER");
    expect_load_error("", 0, FHIRSYNC_E_KEY, "empty");
    expect_load_error(" \n\n", 3, FHIRSYNC_E_KEY, "empty");
    /* two keys in one file */
    char *two = malloc(2 * len + 1);
    snprintf(two, 2 * len + 1, "%s%s", pem, pem);
    expect_load_error(two, 2 * len, FHIRSYNC_E_KEY, "2 private keys");
    OPENSSL_cleanse(two, 2 * len);
    free(two);
    /* a public key, an RSA public key and a certificate */
    char *pub = encode_pem(fs_key_evp(rsa_key), EVP_PKEY_PUBLIC_KEY, "SubjectPublicKeyInfo", NULL);
    assert_string_equal(pem_label(pub), "PUBLIC KEY");
    expect_load_error(pub, strlen(pub), FHIRSYNC_E_KEY, "this is a public key");
    expect_load_error(pub, strlen(pub), FHIRSYNC_E_KEY, "fhirsync needs the private key");
    free(pub);
    pub = encode_pem(fs_key_evp(rsa_key), EVP_PKEY_PUBLIC_KEY, "type-specific", NULL);
    assert_string_equal(pem_label(pub), "RSA PUBLIC KEY");
    expect_load_error(pub, strlen(pub), FHIRSYNC_E_KEY, "this is a public key");
    free(pub);
    char *cert = make_certificate(fs_key_evp(p256_key));
    expect_load_error(cert, strlen(cert), FHIRSYNC_E_KEY, "certificate");
    free(cert);
    /* encrypted: PKCS#8 and traditional (Proc-Type) */
    char *enc = encode_pem(fs_key_evp(rsa_key), EVP_PKEY_KEYPAIR, "PrivateKeyInfo", "AES-256-CBC");
    assert_string_equal(pem_label(enc), "ENCRYPTED PRIVATE KEY");
    expect_load_error(enc, strlen(enc), FHIRSYNC_E_KEY, "encrypted");
    expect_load_error(enc, strlen(enc), FHIRSYNC_E_KEY, "openssl pkey");
    free(enc);
    enc = encode_pem(fs_key_evp(p384_key), EVP_PKEY_KEYPAIR, "type-specific", "AES-256-CBC");
    assert_non_null(strstr(enc, "Proc-Type: 4,ENCRYPTED"));
    expect_load_error(enc, strlen(enc), FHIRSYNC_E_KEY, "encrypted");
    free(enc);
    /* an unknown PEM block */
    static const char other[] = "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n";
    expect_load_error(other, strlen(other), FHIRSYNC_E_KEY, "'X509 CRL' block is not a private");
    OPENSSL_cleanse(pem, len);
    free(pem);
}

static void test_load_unsupported_keys(void **state)
{
    (void)state;
    struct {
        EVP_PKEY *pkey;
        const char *message;
    } cases[] = {
        {EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024), "at least 2048"},
        {EVP_PKEY_Q_keygen(NULL, NULL, "EC", "secp256k1"), "P-256 and P-384 only"},
        {EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-521"), "P-256 and P-384 only"},
        {EVP_PKEY_Q_keygen(NULL, NULL, "ED25519"), "fhirsync supports RSA"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        assert_non_null(cases[i].pkey);
        char *pem = private_pem(cases[i].pkey, "PrivateKeyInfo");
        expect_load_error(pem, strlen(pem), FHIRSYNC_E_KEY, cases[i].message);
        free(pem);
        EVP_PKEY_free(cases[i].pkey);
    }
}

static void test_load_file_checks(void **state)
{
    (void)state;
    char *pem = private_pem(fs_key_evp(p256_key), "PrivateKeyInfo");
    fhirsync_key *key = (fhirsync_key *)1;
    fhirsync_error err = {0};
    static const struct {
        mode_t mode;
        const char *word;
    } open_modes[] = {{0644, "readable"}, {0640, "readable"}, {0604, "readable"},
                      {0620, "writable"}, {0660, "readable"}, {0606, "readable"}};
    for (size_t i = 0; i < sizeof open_modes / sizeof *open_modes; i++) {
        const char *path = write_file("open.pem", pem, strlen(pem), open_modes[i].mode);
        assert_int_equal(fhirsync_key_load_file(path, &key, &err), FHIRSYNC_E_KEY_PERMS);
        assert_null(key);
        char expected[PATH_MAX + 64];
        snprintf(expected, sizeof expected,
                 "key file %s is %s by group or others (mode %04o): "
                 "run chmod 600 %s",
                 path, open_modes[i].word, (unsigned)open_modes[i].mode, path);
        assert_string_equal(err.message, expected);
    }
    /* the same file at 0600 and 0400 loads */
    const char *path = write_file("open.pem", pem, strlen(pem), 0400);
    assert_int_equal(fhirsync_key_load_file(path, &key, &err), FHIRSYNC_OK);
    fhirsync_key_free(key);
    /* missing, a directory, too big, and a bad key keeps the path in the message */
    assert_int_equal(fhirsync_key_load_file(tmp_path("missing.pem"), &key, &err), FHIRSYNC_E_IO);
    assert_contains(err.message, "missing.pem");
    assert_null(key);
    mkdir(tmp_path("dir.pem"), 0700);
    assert_int_equal(fhirsync_key_load_file(tmp_path("dir.pem"), &key, &err), FHIRSYNC_E_IO);
    assert_contains(err.message, "not a regular file");
    assert_int_equal(mkfifo(tmp_path("fifo.pem"), 0600), 0);
    assert_int_equal(fhirsync_key_load_file(tmp_path("fifo.pem"), &key, &err), FHIRSYNC_E_IO);
    assert_contains(err.message, "not a regular file");
    char *big = malloc(70000);
    memset(big, 'A', 70000);
    path = write_file("big.pem", big, 70000, 0600);
    assert_int_equal(fhirsync_key_load_file(path, &key, &err), FHIRSYNC_E_KEY);
    assert_contains(err.message, "64 KiB");
    assert_int_equal(fhirsync_key_load_mem(big, 70000, &key, &err), FHIRSYNC_E_KEY);
    free(big);
    path = write_file("garbage.pem", "not a key\n", 10, 0600);
    assert_int_equal(fhirsync_key_load_file(path, &key, &err), FHIRSYNC_E_KEY);
    assert_contains(err.message, "garbage.pem: malformed key");
    /* what the file is comes before its mode: a public JWK Set (often 0644) is the wrong file */
    static const char jwks[] = "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AA\","
                               "\"y\":\"AA\"}]}";
    path = write_file("jwks.json", jwks, sizeof jwks - 1, 0644);
    assert_int_equal(fhirsync_key_load_file(path, &key, &err), FHIRSYNC_E_KEY);
    assert_contains(err.message, "jwks.json: this is a JWK Set");
    assert_null(key);
    assert_int_equal(fhirsync_key_load_file(NULL, &key, &err), FHIRSYNC_E_ARG);
    free(pem);
}

static void test_write_pem(void **state)
{
    (void)state;
    const fhirsync_key *keys[] = {rsa_key, p384_key};
    mode_t old_umask = umask(0); /* even a careless umask gives 0600 */
    for (size_t i = 0; i < 2; i++) {
        const char *path = tmp_path(i == 0 ? "written-rsa.pem" : "written-ec.pem");
        unlink(path);
        fhirsync_error err = {0};
        assert_int_equal(fhirsync_key_write_pem(keys[i], path, &err), FHIRSYNC_OK);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0600);
        /* PKCS#8, and it loads back as the same key */
        fhirsync_key *key = NULL;
        assert_int_equal(fhirsync_key_load_file(path, &key, &err), FHIRSYNC_OK);
        check_same_key(key, keys[i]);
        FILE *f = fopen(path, "r");
        char first[64] = "";
        assert_non_null(fgets(first, sizeof first, f));
        fclose(f);
        assert_string_equal(pem_label(first), "PRIVATE KEY");
        /* never overwritten: the old file stays as it was */
        off_t size = st.st_size;
        assert_int_equal(fhirsync_key_write_pem(keys[1 - i], path, &err), FHIRSYNC_E_IO);
        assert_contains(err.message, "already exists");
        assert_contains(err.message, "never overwrites");
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_size, size);
        assert_int_equal(fhirsync_key_load_file(path, &key, &err), FHIRSYNC_OK);
        assert_string_equal(fhirsync_key_kid(key), fhirsync_key_kid(keys[i]));
        fhirsync_key_free(key);
    }
    /* a symbolic link is not followed, nor a missing directory created */
    fhirsync_error err = {0};
    assert_int_equal(symlink("nowhere.pem", tmp_path("link.pem")), 0);
    assert_int_equal(fhirsync_key_write_pem(rsa_key, tmp_path("link.pem"), &err), FHIRSYNC_E_IO);
    assert_int_equal(access(tmp_path("nowhere.pem"), F_OK), -1);
    assert_int_equal(fhirsync_key_write_pem(rsa_key, tmp_path("no/such/dir.pem"), &err),
                     FHIRSYNC_E_IO);
    assert_contains(err.message, "cannot create");
    umask(old_umask);
}

/* Every allocation of the library failing in turn ends in a clean "out of memory", never a
 * crash, a leak (the ASan and valgrind runs check) or a misleading "bad key". */
static void test_allocation_failures(void **state)
{
    (void)state;
    json_t *jwk = private_jwk(p256_key);
    char *jwk_text = fs_json_dump(jwk);
    json_decref(jwk);
    char *pem = private_pem(fs_key_evp(p384_key), "PrivateKeyInfo");
    char *jws_text = sign(rsa_key, FHIRSYNC_ALG_RS384);
    const fhirsync_key *keys[] = {rsa_key, p256_key};
    for (int op = 0; op < 5; op++) {
        int failures = 0;
        for (unsigned long n = 1; n < 10000; n++) {
            fhirsync_error err = {0};
            fs_alloc_fail_at(n);
            fhirsync_code rc = FHIRSYNC_OK;
            char *out = NULL;
            fhirsync_key *key = NULL;
            fs_jws decoded;
            switch (op) {
            case 0:
                rc = fhirsync_jws_sign(p384_key, FHIRSYNC_ALG_ES384, NULL, "https://x", claims,
                                       &out, &err);
                break;
            case 1: rc = fhirsync_jwks_build(keys, NULL, 2, &out, &err); break;
            case 2: rc = fhirsync_key_load_mem(jwk_text, strlen(jwk_text), &key, &err); break;
            case 3: rc = fhirsync_key_load_mem(pem, strlen(pem), &key, &err); break;
            case 4:
                rc = fs_jws_decode(jws_text, 16384, &decoded, &err);
                if (rc == FHIRSYNC_OK)
                    rc = fs_jws_verify(&decoded, fs_key_evp(rsa_key), &err);
                fs_jws_clear(&decoded);
                break;
            }
            bool fired = fs_alloc_failure_fired();
            fs_alloc_fail_at(0);
            fhirsync_free_secret(out);
            fhirsync_key_free(key);
            if (!fired) {
                assert_int_equal(rc, FHIRSYNC_OK);
                break;
            }
            failures++;
            if (rc != FHIRSYNC_E_NOMEM)
                fail_msg("operation %d, allocation %lu failed: got %s (%s), not out of memory", op,
                         n, fhirsync_strerror(rc), err.message);
            assert_true(err.message[0] != '\0');
        }
        assert_true(failures > 0);
    }
    fhirsync_free_secret(jws_text);
    fs_free_secret(jwk_text);
    free(pem);
}

/* ---- tool modes (not tests) ---------------------------------------------------------------- */

static char *read_text_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fs_buf b;
    fs_buf_init(&b);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        fs_buf_append(&b, chunk, n);
    fclose(f);
    return fs_buf_steal(&b);
}

static int tool_sign(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: test_jose --sign ALG KEYFILE CLAIMS_JSON\n");
        return 2;
    }
    fhirsync_alg alg = fhirsync_alg_from_name(argv[2]);
    fhirsync_key *key = NULL;
    fhirsync_error err = {0};
    char *jws = NULL;
    if (fhirsync_key_load_file(argv[3], &key, &err) != FHIRSYNC_OK ||
        fhirsync_jws_sign(key, alg, NULL, NULL, argv[4], &jws, &err) != FHIRSYNC_OK) {
        fprintf(stderr, "test_jose --sign: %s\n", err.message);
        fhirsync_key_free(key);
        return 1;
    }
    printf("%s\n", jws);
    fhirsync_free_secret(jws);
    fhirsync_key_free(key);
    return 0;
}

static int tool_verify(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: test_jose --verify JWKS_FILE JWS\n");
        return 2;
    }
    int status = 1;
    fhirsync_error err = {0};
    fs_jws jws;
    memset(&jws, 0, sizeof jws);
    EVP_PKEY *pkey = NULL;
    char *text = read_text_file(argv[2]);
    json_t *jwks = text ? fs_json_parse(text, strlen(text), true, "JWKS", &err) : NULL;
    if (!jwks) {
        fprintf(stderr, "test_jose --verify: cannot read %s %s\n", argv[2], err.message);
        goto out;
    }
    if (fs_jws_decode(argv[3], 16384, &jws, &err) != FHIRSYNC_OK) {
        fprintf(stderr, "test_jose --verify: %s\n", err.message);
        goto out;
    }
    json_t *list = json_object_get(jwks, "keys"), *jwk = NULL, *candidate;
    size_t i;
    for (i = 0; i < json_array_size(list); i++) {
        candidate = json_array_get(list, i);
        if (!jws.kid || fs_streq(fs_json_str(candidate, "kid"), jws.kid))
            jwk = candidate;
    }
    if (!jwk) {
        fprintf(stderr, "test_jose --verify: no key with kid %s in %s\n",
                jws.kid ? jws.kid : "(none)", argv[2]);
        goto out;
    }
    if (!(pkey = fs_jwk_to_public_pkey(jwk, &err)) ||
        fs_jws_verify(&jws, pkey, &err) != FHIRSYNC_OK) {
        fprintf(stderr, "test_jose --verify: %s\n", err.message);
        goto out;
    }
    printf("verified %s kid=%s\n", fs_json_str(jws.header, "alg"), jws.kid ? jws.kid : "");
    status = 0;
out:
    EVP_PKEY_free(pkey);
    fs_jws_clear(&jws);
    json_decref(jwks);
    fs_free(text);
    return status;
}

static int tool_bench(int argc, char **argv)
{
    double seconds = argc > 2 ? atof(argv[2]) : 1.0;
    if (seconds <= 0)
        seconds = 1.0;
    static const struct {
        const char *label;
        fhirsync_alg alg;
        int bits;
    } runs[] = {
        {"RS384-2048", FHIRSYNC_ALG_RS384, 2048}, {"RS384-3072", FHIRSYNC_ALG_RS384, 3072},
        {"ES384", FHIRSYNC_ALG_ES384, 0},         {"ES256", FHIRSYNC_ALG_ES256, 0},
        {"PS384-2048", FHIRSYNC_ALG_PS384, 2048}, {"RS256-2048", FHIRSYNC_ALG_RS256, 2048},
    };
    printf("%-12s %12s %12s   (complete JWS: header, base64url, signature; %.1f s each)\n",
           "algorithm", "signs/s", "verifies/s", seconds);
    for (size_t r = 0; r < sizeof runs / sizeof *runs; r++) {
        fhirsync_key *key = NULL;
        fhirsync_error err = {0};
        if (fhirsync_key_generate(runs[r].alg, runs[r].bits, &key, &err) != FHIRSYNC_OK) {
            fprintf(stderr, "%s: %s\n", runs[r].label, err.message);
            return 1;
        }
        char *jws = NULL;
        long signs = 0;
        int64_t start = fs_monotonic_ms(), elapsed;
        do {
            fhirsync_free_secret(jws);
            jws = NULL;
            if (fhirsync_jws_sign(key, runs[r].alg, NULL, NULL, claims, &jws, &err) !=
                FHIRSYNC_OK) {
                fprintf(stderr, "%s: %s\n", runs[r].label, err.message);
                return 1;
            }
            signs++;
        } while ((elapsed = fs_monotonic_ms() - start) < (int64_t)(seconds * 1000));
        double sign_rate = (double)signs * 1000.0 / (double)elapsed;
        fs_jws decoded;
        long verifies = 0;
        start = fs_monotonic_ms();
        do {
            if (fs_jws_decode(jws, 16384, &decoded, &err) != FHIRSYNC_OK ||
                fs_jws_verify(&decoded, fs_key_evp(key), &err) != FHIRSYNC_OK) {
                fprintf(stderr, "%s: %s\n", runs[r].label, err.message);
                return 1;
            }
            fs_jws_clear(&decoded);
            verifies++;
        } while ((elapsed = fs_monotonic_ms() - start) < (int64_t)(seconds * 1000));
        printf("%-12s %12.0f %12.0f\n", runs[r].label, sign_rate,
               (double)verifies * 1000.0 / (double)elapsed);
        fflush(stdout);
        fhirsync_free_secret(jws);
        fhirsync_key_free(key);
    }
    return 0;
}

static int run_tool(int argc, char **argv)
{
    if (fhirsync_global_init() != FHIRSYNC_OK)
        return 1;
    int status;
    if (strcmp(argv[1], "--sign") == 0)
        status = tool_sign(argc, argv);
    else if (strcmp(argv[1], "--verify") == 0)
        status = tool_verify(argc, argv);
    else
        status = tool_bench(argc, argv);
    fhirsync_global_cleanup();
    return status;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "--sign") == 0 || strcmp(argv[1], "--verify") == 0 ||
                      strcmp(argv[1], "--bench") == 0))
        return run_tool(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64url_vectors),
        cmocka_unit_test(test_b64url_strict),
        cmocka_unit_test(test_alg_names),
        cmocka_unit_test(test_thumbprint_rfc7638),
        cmocka_unit_test(test_generate),
        cmocka_unit_test(test_jwks_rsa),
        cmocka_unit_test(test_jwks_ec),
        cmocka_unit_test(test_jwks_algs_and_errors),
        cmocka_unit_test(test_sign_verify_all_algs),
        cmocka_unit_test(test_sign_header_options),
        cmocka_unit_test(test_sign_rejects_wrong_alg),
        cmocka_unit_test(test_verify_rejects_tampering),
        cmocka_unit_test(test_verify_rejects_alg_confusion),
        cmocka_unit_test(test_decode_strict),
        cmocka_unit_test(test_load_pkcs8),
        cmocka_unit_test(test_load_pkcs1_sec1),
        cmocka_unit_test(test_load_private_jwk),
        cmocka_unit_test(test_load_bad_jwk),
        cmocka_unit_test(test_load_bad_pem),
        cmocka_unit_test(test_load_unsupported_keys),
        cmocka_unit_test(test_load_file_checks),
        cmocka_unit_test(test_write_pem),
        cmocka_unit_test(test_allocation_failures),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
