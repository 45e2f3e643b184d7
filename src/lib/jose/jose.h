/* jose/jose.h: internal JOSE API shared by the library, the sandbox and tests. The one module
 * that owns JOSE: keys (OpenSSL 3 EVP), JWK import/export, RFC 7638 thumbprints, JWS compact
 * signing and verification. The public half is in include/fhirsync/keys.h. */
#ifndef FS_JOSE_H
#define FS_JOSE_H

#include <openssl/evp.h>

#include "core/core.h"
#include "fhirsync/keys.h"
#include "json/json.h"

/* The EVP key inside a fhirsync_key (borrowed). */
EVP_PKEY *fs_key_evp(const fhirsync_key *key);

/* A public key from a JWK object (RSA n/e or EC crv/x/y), private members ignored. Returns a
 * fresh EVP_PKEY (EVP_PKEY_free) or NULL with err filled (FHIRSYNC_E_KEY). */
EVP_PKEY *fs_jwk_to_public_pkey(const json_t *jwk, fhirsync_error *err);

/* The RFC 7638 thumbprint of a public key (SHA-256, base64url); caller frees. */
char *fs_jwk_thumbprint(EVP_PKEY *pkey, fhirsync_error *err);

/* The public JWK object of a key (kty, kid, alg, use, key_ops, n/e or crv/x/y). New reference. */
json_t *fs_jwk_public(EVP_PKEY *pkey, const char *kid, fhirsync_alg alg, fhirsync_error *err);

/* A decoded JWS compact serialization. All members owned by the struct. */
typedef struct fs_jws {
    json_t *header;      /* parsed protected header */
    json_t *claims;      /* parsed payload (must be a JSON object) */
    char *signing_input; /* "b64header.b64payload" */
    unsigned char *signature;
    size_t signature_len;
    fhirsync_alg alg; /* from the header; NONE if unknown/unsupported */
    const char *kid;  /* borrowed from header, may be NULL */
} fs_jws;

/* Split and decode a compact JWS (3 parts, base64url, JSON header and payload), capped at
 * `max_len` bytes. Does not verify the signature. FHIRSYNC_E_JSON / FHIRSYNC_E_KEY on bad input. */
fhirsync_code fs_jws_decode(const char *compact, size_t max_len, fs_jws *out, fhirsync_error *err);
void fs_jws_clear(fs_jws *jws);

/* Verify a decoded JWS with a public key: the algorithm must fit the key type (no alg confusion),
 * ES* signatures must be raw R||S of the right length. FHIRSYNC_OK when valid,
 * FHIRSYNC_E_CRYPTO with a message naming the failure otherwise. */
fhirsync_code fs_jws_verify(const fs_jws *jws, EVP_PKEY *pkey, fhirsync_error *err);

#endif
