/* jose/jose_private.h: what the files of the JOSE module share and nobody else sees: the table of
 * JWS algorithms (digest, key type, curve), the one place that inspects an EVP_PKEY's type and
 * size, the one wording of "this key does not fit that algorithm", and the bounds on key sizes.
 * Only the .c files of src/lib/jose include it; everyone else uses jose/jose.h or
 * fhirsync/keys.h. */
#ifndef FS_JOSE_PRIVATE_H
#define FS_JOSE_PRIVATE_H

#include <openssl/bn.h>

#include "jose/jose.h"

/* RSA moduli accepted for signing and verification. Below 2048 is broken; above 8192 is not a
 * key anyone uses, and bounds the cost of a hostile key. */
#define FS_RSA_MIN_BITS 2048
#define FS_RSA_MAX_BITS 8192

/* Cap on a key file or key blob (PEM or JWK); a 8192-bit PKCS#8 PEM is about 6.5 KiB. */
#define FS_KEY_MAX_BYTES (64 * 1024)

typedef struct fs_jose_alg_info {
    fhirsync_alg alg;
    const char *name;      /* JWA name, "RS384" */
    const char *digest;    /* OpenSSL digest name, "SHA384" */
    size_t digest_len;     /* bytes of the digest (also the PSS salt length) */
    fhirsync_key_type kty; /* the key type the algorithm needs */
    int ec_bits;           /* for ES*: the curve's field size (256, 384); 0 for RSA */
    bool pss;              /* RSASSA-PSS rather than PKCS#1 v1.5 */
} fs_jose_alg_info;

/* The algorithm's row, NULL for NONE or an unknown value. */
const fs_jose_alg_info *fs_jose_alg(fhirsync_alg alg);

/* What a key is: FHIRSYNC_KEY_RSA (plain rsaEncryption keys only) with *bits the modulus size,
 * FHIRSYNC_KEY_EC with *bits 256 or 384 for P-256 / P-384 and 0 for any other curve, or 0 for
 * anything else (Ed25519, DSA, RSA-PSS-restricted keys...). */
int fs_jose_pkey_kind(EVP_PKEY *pkey, int *bits);

/* A short description for messages: "RSA 2048-bit", "EC P-384", "EC secp256k1", "ED25519". */
void fs_jose_pkey_describe(EVP_PKEY *pkey, char *buf, size_t size);

/* Whether `alg` can be used with the key (type and curve; RSA size is checked separately). */
bool fs_jose_pkey_fits(EVP_PKEY *pkey, fhirsync_alg alg);

/* The default algorithm for a key: RS384, ES256 or ES384; NONE when the key is unusable. */
fhirsync_alg fs_jose_pkey_default_alg(EVP_PKEY *pkey);

/* Fill err with "key is EC P-384 but algorithm RS384 needs an RSA key" and return `code`. */
fhirsync_code fs_jose_err_mismatch(fhirsync_error *err, fhirsync_code code, EVP_PKEY *pkey,
                                   fhirsync_alg alg);

/* Check an RSA key's size against the bounds; FHIRSYNC_OK or `code` with a message. */
fhirsync_code fs_jose_check_rsa_bits(int bits, fhirsync_code code, fhirsync_error *err);

/* fs_b64url_decode with an error that tells bad input (`code`, "<what> is not base64url without
 * padding") from out of memory (FHIRSYNC_E_NOMEM), which fs_b64url_decode does not. */
fhirsync_code fs_jose_b64url_decode(const char *text, size_t len, unsigned char **out,
                                    size_t *out_len, fhirsync_code code, const char *what,
                                    fhirsync_error *err);

/* A big-endian unsigned integer as base64url: without leading zeros when pad is 0, else
 * left-padded with zeros to exactly `pad` bytes (NULL when it does not fit). Caller frees. */
char *fs_jose_bn_b64(const BIGNUM *bn, size_t pad);

#endif
