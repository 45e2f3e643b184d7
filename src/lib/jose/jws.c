/* jose/jws.c: JWS compact serialization (RFC 7515) with the JWA algorithms of RFC 7518: signing
 * the client assertion, and a strict decoder and verifier for the sandbox EHR and the tests.
 *
 * Two details matter for interoperability and safety. ECDSA signatures are the raw R || S of
 * fixed length that JWA requires, not the DER that OpenSSL produces, so they are converted both
 * ways. And the verifier takes the algorithm from the header only after checking that it fits the
 * key it was given: an RSA key never verifies an ES* token nor the other way round, and "none" is
 * never accepted. */
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/rsa.h>

#include "jose/jose_private.h"

/* ---- raw signatures ------------------------------------------------------------------------ */

/* PKCS#1 v1.5 is OpenSSL's default for RSA; PSS needs its parameters spelled out (RFC 7518
 * section 3.5: MGF1 with the same hash, salt as long as the hash). */
static bool set_padding(EVP_PKEY_CTX *pctx, const fs_jose_alg_info *info)
{
    if (info->kty != FHIRSYNC_KEY_RSA)
        return true;
    if (!info->pss)
        return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1;
    return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
           EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, info->digest, NULL) == 1 &&
           EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, (int)info->digest_len) == 1;
}

/* OpenSSL's DER ECDSA-Sig-Value into JWA's R || S, each left-padded to `half` octets. */
static bool der_to_raw(const unsigned char *der, size_t der_len, size_t half, unsigned char *raw)
{
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    bool ok = false;
    if (sig) {
        const BIGNUM *r = NULL, *s = NULL;
        ECDSA_SIG_get0(sig, &r, &s);
        ok = BN_bn2binpad(r, raw, (int)half) == (int)half &&
             BN_bn2binpad(s, raw + half, (int)half) == (int)half;
    }
    ECDSA_SIG_free(sig);
    return ok;
}

/* JWA's R || S into DER for OpenSSL; the result is freed with OPENSSL_free. */
static unsigned char *raw_to_der(const unsigned char *raw, size_t raw_len, size_t *der_len)
{
    size_t half = raw_len / 2;
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, (int)half, NULL);
    BIGNUM *s = BN_bin2bn(raw + half, (int)half, NULL);
    unsigned char *der = NULL;
    *der_len = 0;
    if (!sig || !r || !s || ECDSA_SIG_set0(sig, r, s) != 1) {
        BN_free(r);
        BN_free(s);
    } else {
        int n = i2d_ECDSA_SIG(sig, &der);
        if (n > 0)
            *der_len = (size_t)n;
        else
            der = NULL;
    }
    ECDSA_SIG_free(sig);
    return der;
}

/* Sign `input` and return the JWS signature octets (raw R || S for ES*). */
static fhirsync_code sign_bytes(EVP_PKEY *pkey, const fs_jose_alg_info *info, const char *input,
                                size_t input_len, unsigned char **out, size_t *out_len,
                                fhirsync_error *err)
{
    *out = NULL;
    *out_len = 0;
    fhirsync_code rc = FHIRSYNC_OK;
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char *sig = NULL, *raw = NULL;
    size_t sig_len = 0, raw_len = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || EVP_DigestSignInit_ex(md, &pctx, info->digest, NULL, NULL, pkey, NULL) != 1 ||
        !set_padding(pctx, info) ||
        EVP_DigestSign(md, NULL, &sig_len, (const unsigned char *)input, input_len) != 1) {
        rc = fs_err(err, FHIRSYNC_E_CRYPTO, "OpenSSL could not set up %s signing", info->name);
        goto out;
    }
    if (!(sig = fs_malloc(sig_len))) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
    if (EVP_DigestSign(md, sig, &sig_len, (const unsigned char *)input, input_len) != 1) {
        rc = fs_err(err, FHIRSYNC_E_CRYPTO, "%s signing failed", info->name);
        goto out;
    }
    if (info->kty == FHIRSYNC_KEY_EC) {
        raw_len = (size_t)info->ec_bits / 8 * 2;
        if (!(raw = fs_malloc(raw_len))) {
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
            goto out;
        }
        if (!der_to_raw(sig, sig_len, raw_len / 2, raw)) {
            rc = fs_err(err, FHIRSYNC_E_CRYPTO, "cannot convert the %s signature to R||S",
                        info->name);
            goto out;
        }
        *out = raw;
        *out_len = raw_len;
        raw = NULL;
    } else {
        *out = sig;
        *out_len = sig_len;
        sig = NULL;
    }
out:
    fs_free(sig);
    fs_free(raw);
    EVP_MD_CTX_free(md);
    return rc;
}

/* ---- signing ------------------------------------------------------------------------------- */

/* Append base64url(data) to the buffer. */
static bool append_b64(fs_buf *b, const void *data, size_t len)
{
    char *text = fs_b64url_encode(data, len);
    bool ok = text && fs_buf_append_str(b, text);
    fs_free_secret(text);
    return ok;
}

/* The protected header {"alg","kid","typ":"JWT"[,"jku"]} as compact JSON; caller frees. */
static char *make_header(const char *alg_name, const char *kid, const char *jku,
                         fhirsync_error *err)
{
    json_t *header = json_object();
    json_t *kid_value = json_string(kid);
    json_t *jku_value = jku ? json_string(jku) : NULL;
    char *text = NULL;
    if (!header) {
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    } else if (!kid_value || (jku && !jku_value)) {
        fs_err(err, FHIRSYNC_E_ARG, "the %s is not valid UTF-8", !kid_value ? "kid" : "jku");
    } else if (json_object_set_new(header, "alg", json_string(alg_name)) != 0 ||
               json_object_set(header, "kid", kid_value) != 0 ||
               json_object_set_new(header, "typ", json_string("JWT")) != 0 ||
               (jku_value && json_object_set(header, "jku", jku_value) != 0) ||
               !(text = fs_json_dump(header))) {
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    json_decref(kid_value);
    json_decref(jku_value);
    json_decref(header);
    return text;
}

fhirsync_code fhirsync_jws_sign(const fhirsync_key *key, fhirsync_alg alg, const char *kid,
                                const char *jku, const char *claims_json, char **out_jws,
                                fhirsync_error *err)
{
    if (!out_jws)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_jws_sign: out_jws is NULL");
    *out_jws = NULL;
    if (!key || !claims_json)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_jws_sign: key or claims missing");
    const fs_jose_alg_info *info = fs_jose_alg(alg);
    EVP_PKEY *pkey = fs_key_evp(key);
    if (!info)
        return fs_err(err, FHIRSYNC_E_ARG, "algorithm %d is not one fhirsync signs with", (int)alg);
    if (!fs_jose_pkey_fits(pkey, alg))
        return fs_jose_err_mismatch(err, FHIRSYNC_E_KEY, pkey, alg);
    if (info->kty == FHIRSYNC_KEY_RSA &&
        fs_jose_check_rsa_bits(fhirsync_key_bits(key), FHIRSYNC_E_KEY, err) != FHIRSYNC_OK)
        return FHIRSYNC_E_KEY;
    size_t claims_len = strlen(claims_json);
    json_t *claims = fs_json_parse(claims_json, claims_len, true, "JWT claims", err);
    if (!claims)
        return err ? err->code : FHIRSYNC_E_JSON;
    json_decref(claims);

    ERR_set_mark();
    fhirsync_code rc = FHIRSYNC_OK;
    fs_buf jws;
    fs_buf_init(&jws);
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    char *header = make_header(info->name, kid ? kid : fhirsync_key_kid(key), jku, err);
    if (!header) {
        rc = err ? err->code : FHIRSYNC_E_NOMEM;
        goto out;
    }
    if (!append_b64(&jws, header, strlen(header)) || !fs_buf_append(&jws, ".", 1) ||
        !append_b64(&jws, claims_json, claims_len)) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
    if ((rc = sign_bytes(pkey, info, jws.data, jws.len, &sig, &sig_len, err)) != FHIRSYNC_OK)
        goto out;
    if (!fs_buf_append(&jws, ".", 1) || !append_b64(&jws, sig, sig_len)) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
    *out_jws = fs_buf_steal(&jws);
    if (!fs_secret_register(*out_jws)) {
        fs_free_secret(*out_jws);
        *out_jws = NULL;
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
out:
    fs_free(header);
    fs_free_wipe(sig, sig_len);
    fs_buf_free_secret(&jws);
    ERR_pop_to_mark();
    return rc;
}

/* ---- decoding ------------------------------------------------------------------------------ */

void fs_jws_clear(fs_jws *jws)
{
    if (!jws)
        return;
    json_decref(jws->header);
    json_decref(jws->claims);
    fs_free_secret(jws->signing_input);
    fs_free(jws->signature);
    memset(jws, 0, sizeof *jws);
}

/* Decode one base64url segment holding a JSON object. */
static json_t *decode_json_part(const char *text, size_t len, const char *what, fhirsync_error *err)
{
    unsigned char *bytes = NULL;
    size_t n = 0;
    if (len == 0) {
        fs_err(err, FHIRSYNC_E_JSON, "JWS %s is empty", what);
        return NULL;
    }
    char name[32];
    snprintf(name, sizeof name, "JWS %s", what);
    if (fs_jose_b64url_decode(text, len, &bytes, &n, FHIRSYNC_E_JSON, name, err) != FHIRSYNC_OK)
        return NULL;
    json_t *value = fs_json_parse((const char *)bytes, n, true, what, err);
    fs_free_wipe(bytes, n);
    return value;
}

fhirsync_code fs_jws_decode(const char *compact, size_t max_len, fs_jws *out, fhirsync_error *err)
{
    if (!out)
        return fs_err(err, FHIRSYNC_E_ARG, "fs_jws_decode: out is NULL");
    memset(out, 0, sizeof *out);
    if (!compact)
        return fs_err(err, FHIRSYNC_E_ARG, "fs_jws_decode: no JWS given");
    size_t len = strnlen(compact, max_len + 1);
    if (len > max_len)
        return fs_err(err, FHIRSYNC_E_JSON, "JWS is longer than %zu bytes", max_len);
    const char *dot1 = memchr(compact, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - compact)) : NULL;
    if (!dot1 || !dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - compact)))
        return fs_err(err, FHIRSYNC_E_JSON,
                      "not a JWS compact serialization (three base64url "
                      "parts separated by '.')");
    fhirsync_code rc = FHIRSYNC_OK;
    const char *sig_text = dot2 + 1;
    size_t sig_text_len = len - (size_t)(sig_text - compact);
    if (!(out->header = decode_json_part(compact, (size_t)(dot1 - compact), "header", err)) ||
        !(out->claims = decode_json_part(dot1 + 1, (size_t)(dot2 - dot1 - 1), "payload", err))) {
        rc = err ? err->code : FHIRSYNC_E_JSON;
        goto out;
    }
    if ((rc = fs_jose_b64url_decode(sig_text, sig_text_len, &out->signature, &out->signature_len,
                                    FHIRSYNC_E_JSON, "JWS signature", err)) != FHIRSYNC_OK)
        goto out;
    if (!(out->signing_input = fs_strndup(compact, (size_t)(dot2 - compact)))) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
    const char *alg_name = fs_json_str(out->header, "alg");
    if (!alg_name) {
        rc = fs_err(err, FHIRSYNC_E_JSON, "JWS header has no \"alg\" string");
        goto out;
    }
    out->alg = fhirsync_alg_from_name(alg_name);
    out->kid = fs_json_str(out->header, "kid");
out:
    if (rc != FHIRSYNC_OK)
        fs_jws_clear(out);
    return rc;
}

/* ---- verification -------------------------------------------------------------------------- */

fhirsync_code fs_jws_verify(const fs_jws *jws, EVP_PKEY *pkey, fhirsync_error *err)
{
    if (!jws || !jws->header || !jws->signing_input || !pkey)
        return fs_err(err, FHIRSYNC_E_ARG, "fs_jws_verify: JWS or key missing");
    const char *alg_name = fs_json_str(jws->header, "alg");
    const fs_jose_alg_info *info = fs_jose_alg(jws->alg);
    if (!info) {
        if (alg_name && fs_strcaseeq(alg_name, "none"))
            return fs_err(err, FHIRSYNC_E_CRYPTO, "JWS alg \"none\" (unsigned) is not accepted");
        return fs_err(err, FHIRSYNC_E_CRYPTO,
                      "JWS alg \"%.32s\" is not supported (RS384 ES384 "
                      "RS256 RS512 ES256 PS384 are)",
                      alg_name ? alg_name : "");
    }
    /* RFC 7515 section 4.1.11: extensions listed as critical must be understood; we know none */
    if (json_object_get(jws->header, "crit"))
        return fs_err(err, FHIRSYNC_E_CRYPTO,
                      "JWS header lists critical extensions (\"crit\") "
                      "that fhirsync does not understand");
    if (!fs_jose_pkey_fits(pkey, jws->alg))
        return fs_jose_err_mismatch(err, FHIRSYNC_E_CRYPTO, pkey, jws->alg);
    if (info->kty == FHIRSYNC_KEY_RSA) {
        fhirsync_code rc = fs_jose_check_rsa_bits(EVP_PKEY_get_bits(pkey), FHIRSYNC_E_CRYPTO, err);
        if (rc != FHIRSYNC_OK)
            return rc;
        if (jws->signature_len != (size_t)EVP_PKEY_get_size(pkey))
            return fs_err(err, FHIRSYNC_E_CRYPTO,
                          "%s signature has %zu octets; the %d-bit key "
                          "makes %d",
                          info->name, jws->signature_len, EVP_PKEY_get_bits(pkey),
                          EVP_PKEY_get_size(pkey));
    } else if (jws->signature_len != (size_t)info->ec_bits / 4) {
        return fs_err(err, FHIRSYNC_E_CRYPTO,
                      "%s signature has %zu octets; JWA requires exactly "
                      "%d (raw R||S, not DER)",
                      info->name, jws->signature_len, info->ec_bits / 4);
    }

    ERR_set_mark();
    fhirsync_code rc = FHIRSYNC_OK;
    EVP_PKEY_CTX *pctx = NULL;
    const unsigned char *sig = jws->signature;
    size_t sig_len = jws->signature_len;
    unsigned char *der = NULL;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (info->kty == FHIRSYNC_KEY_EC) {
        if (!(der = raw_to_der(jws->signature, jws->signature_len, &sig_len))) {
            rc = fs_err(err, FHIRSYNC_E_CRYPTO, "cannot convert the %s signature to DER",
                        info->name);
            goto out;
        }
        sig = der;
    }
    if (!md || EVP_DigestVerifyInit_ex(md, &pctx, info->digest, NULL, NULL, pkey, NULL) != 1 ||
        !set_padding(pctx, info)) {
        rc = fs_err(err, FHIRSYNC_E_CRYPTO, "OpenSSL could not set up %s verification", info->name);
        goto out;
    }
    if (EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)jws->signing_input,
                         strlen(jws->signing_input)) != 1)
        rc =
            fs_err(err, FHIRSYNC_E_CRYPTO, "%s signature does not verify with the key", info->name);
out:
    OPENSSL_free(der);
    EVP_MD_CTX_free(md);
    ERR_pop_to_mark();
    return rc;
}
