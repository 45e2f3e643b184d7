/* fhirsync/keys.h: signing keys, their public JWK Set, and JWS signing. The backend's private
 * key signs a client assertion for every token request; its public half, as a JWK Set, is what
 * the EHR registers (by URL or by value).
 *
 * Keys are RSA (2048, 3072 or 4096 bits) or EC (P-256, P-384). They load from PEM (PKCS#8,
 * PKCS#1 "RSA PRIVATE KEY", SEC1 "EC PRIVATE KEY") or from a private JWK. Loading a file refuses
 * one readable by group or others. Key material is wiped when freed.
 *
 * Thread safety: a fhirsync_key is immutable after loading and may be shared between threads. */
#ifndef FHIRSYNC_KEYS_H
#define FHIRSYNC_KEYS_H

#include "fhirsync/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* JWS algorithms. SMART requires RS384 and ES384; the others exist for servers that want them. */
typedef enum fhirsync_alg {
    FHIRSYNC_ALG_NONE = 0,
    FHIRSYNC_ALG_RS384 = 1,
    FHIRSYNC_ALG_ES384 = 2,
    FHIRSYNC_ALG_RS256 = 3,
    FHIRSYNC_ALG_RS512 = 4,
    FHIRSYNC_ALG_ES256 = 5,
    FHIRSYNC_ALG_PS384 = 6
} fhirsync_alg;

/* "RS384" etc.; NULL for an unknown value. */
FHIRSYNC_API const char *fhirsync_alg_name(fhirsync_alg alg);
/* Parse a JWA name (exact, case-sensitive as in JWA); FHIRSYNC_ALG_NONE when unknown. */
FHIRSYNC_API fhirsync_alg fhirsync_alg_from_name(const char *name);

typedef struct fhirsync_key fhirsync_key;

typedef enum fhirsync_key_type { FHIRSYNC_KEY_RSA = 1, FHIRSYNC_KEY_EC = 2 } fhirsync_key_type;

/* Generate a new private key fit for `alg`: RSA with `bits` (2048, 3072 or 4096; 0 means 2048)
 * for RS*, PS*; EC P-384 for ES384, P-256 for ES256 (`bits` ignored). */
FHIRSYNC_API fhirsync_code fhirsync_key_generate(fhirsync_alg alg, int bits, fhirsync_key **out,
                                                 fhirsync_error *err);

/* Load a private key from a file: PEM (PKCS#8, PKCS#1, SEC1) or a private JWK (JSON). Fails with
 * FHIRSYNC_E_KEY_PERMS when the file is readable or writable by group or others (the message says
 * how to fix it), FHIRSYNC_E_KEY when it is not a usable private key, FHIRSYNC_E_IO when it
 * cannot be read. */
FHIRSYNC_API fhirsync_code fhirsync_key_load_file(const char *path, fhirsync_key **out,
                                                  fhirsync_error *err);

/* Load a private key from memory (PEM or private JWK), without the permission check. */
FHIRSYNC_API fhirsync_code fhirsync_key_load_mem(const char *data, size_t len, fhirsync_key **out,
                                                 fhirsync_error *err);

FHIRSYNC_API void fhirsync_key_free(fhirsync_key *key);

FHIRSYNC_API fhirsync_key_type fhirsync_key_type_of(const fhirsync_key *key);
/* RSA modulus bits, or the EC curve's field size (256, 384). */
FHIRSYNC_API int fhirsync_key_bits(const fhirsync_key *key);

/* The key's `kid`: its RFC 7638 JWK thumbprint (SHA-256, base64url). Borrowed, lives as long as
 * the key. */
FHIRSYNC_API const char *fhirsync_key_kid(const fhirsync_key *key);

/* Whether the key can sign with `alg` (RSA for RS* and PS* algorithms, P-384 for ES384, P-256 for
 * ES256). */
FHIRSYNC_API int fhirsync_key_fits_alg(const fhirsync_key *key, fhirsync_alg alg);

/* The default algorithm for the key: RS384 for RSA, ES384 for P-384, ES256 for P-256. */
FHIRSYNC_API fhirsync_alg fhirsync_key_default_alg(const fhirsync_key *key);

/* Write the private key as PKCS#8 PEM to `path`, created with mode 0600; refuses to overwrite an
 * existing file (FHIRSYNC_E_IO, message says so). */
FHIRSYNC_API fhirsync_code fhirsync_key_write_pem(const fhirsync_key *key, const char *path,
                                                  fhirsync_error *err);

/* The public JWK Set of one or more keys: for each, `kty`, `kid`, `alg` (algs[i], or the key's
 * default when algs is NULL or algs[i] is NONE), `use: "sig"`, `key_ops: ["verify"]`, and RSA
 * `n`/`e` or EC `crv`/`x`/`y`; nothing private. Pretty-printed JSON, the caller's. */
FHIRSYNC_API fhirsync_code fhirsync_jwks_build(const fhirsync_key *const *keys,
                                               const fhirsync_alg *algs, size_t count,
                                               char **out_json, fhirsync_error *err);

/* Sign `claims_json` (a JSON object, used byte for byte as the payload) as a JWS compact
 * serialization with header {alg, kid, typ: "JWT"} plus `jku` when not NULL. `kid` NULL means the
 * key's thumbprint. ES* signatures are raw R||S as JWA requires. The result is the caller's
 * secret: free it with fhirsync_free_secret(). */
FHIRSYNC_API fhirsync_code fhirsync_jws_sign(const fhirsync_key *key, fhirsync_alg alg,
                                             const char *kid, const char *jku,
                                             const char *claims_json, char **out_jws,
                                             fhirsync_error *err);

#ifdef __cplusplus
}
#endif
#endif
