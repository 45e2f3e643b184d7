/* auth/auth_internal.h: internal pieces of authentication shared by discovery, token requests,
 * the token cache, doctor, the FHIR client and the fuzz targets. */
#ifndef FS_AUTH_INTERNAL_H
#define FS_AUTH_INTERNAL_H

#include "core/core.h"
#include "fhirsync/auth.h"
#include "fhirsync/keys.h"
#include "http/http.h"
#include "json/json.h"

/* Caps for documents held in memory. */
#define FS_DISCOVERY_MAX_BODY (1024 * 1024)
#define FS_METADATA_MAX_BODY (8 * 1024 * 1024)
#define FS_TOKEN_MAX_BODY (64 * 1024)
/* Assumed life of a token whose response has no expires_in. */
#define FS_TOKEN_ASSUMED_LIFETIME 60
/* Renew this many seconds before expiry (or a third of the life, whichever is smaller). */
#define FS_TOKEN_RENEW_MARGIN 60

/* Parse a .well-known/smart-configuration document (capability_statement false) or a
 * CapabilityStatement's oauth-uris extension (true). Relative URLs are resolved against base_url.
 */
fhirsync_code fs_smart_config_parse(const char *body, size_t len, const char *base_url,
                                    const char *source_url, bool capability_statement,
                                    fhirsync_smart_config **out, fhirsync_error *err);

/* Transport options from a profile, for fs_http_request. */
void fs_http_request_from_profile(const fhirsync_endpoint *ep, fs_http_request *req);

/* Parsed token endpoint answer. */
typedef struct fs_token_response {
    char *access_token; /* secret */
    char *token_type;
    char *scope;
    long expires_in; /* -1 when missing */
    /* what the authorization code and refresh grants add (NULL / -1 when absent) */
    char *refresh_token; /* secret, registered */
    char *patient;       /* SMART launch context */
    char *fhir_user;     /* the id_token's fhirUser claim, NOT verified: display only */
    long refresh_expires_in;
} fs_token_response;

/* Parse a 2xx token response body. FHIRSYNC_E_TOKEN_RESPONSE naming what is wrong. */
fhirsync_code fs_token_response_parse(const char *body, size_t len, fs_token_response *out,
                                      fhirsync_error *err);
void fs_token_response_clear(fs_token_response *tr);

/* The fhirUser claim of an OpenID Connect id_token, read from its payload WITHOUT checking the
 * signature: for display and doctor only, never for a security decision. Caller frees; NULL when
 * the token is malformed or has no such claim. */
char *fs_id_token_fhir_user(const char *id_token);

/* Replace v1 ".read" with v2 ".rs" in each scope (for servers that speak only v2). Caller frees;
 * NULL on out of memory. */
char *fs_scope_to_v2(const char *scope);

/* The `error` code of an OAuth error body ({error, error_description, error_uri}) into code
 * (e.g. "invalid_client"); false when the body is not an OAuth error object. */
bool fs_oauth_error_code(const char *body, size_t len, char *code, size_t size);

/* The whole claim set of a client assertion, as compact JSON (caller frees). */
char *fs_assertion_claims(const char *client_id, const char *audience, int64_t now, long lifetime,
                          const char *jti);

/* The body and HTTP status of the last refused token request of a handle (NULL/0 if none). */
const char *fs_auth_last_error_body(const fhirsync_auth *auth, long *status);
/* The handle's key (NULL for symmetric clients) and algorithm. */
const fhirsync_key *fs_auth_key(const fhirsync_auth *auth, fhirsync_alg *alg);

/* ---- a person's login (auth = login) ------------------------------------------------------- */

/* The credentials file's content. Strings owned; the tokens are registered secrets. */
typedef struct fs_credentials {
    char *refresh_token; /* secret */
    char *access_token;  /* secret: kept only when the server gave no refresh token */
    char *scope;         /* granted */
    char *patient;
    char *fhir_user; /* from the id_token, unverified: display only */
    char *token_url;
    char *client_id;
    char *base_url;
    int64_t issued_at;          /* when `fhirsync login` ran */
    int64_t refreshed_at;       /* the last refresh grant (0: none yet) */
    int64_t refresh_expires_at; /* when the server said the refresh token ends (0: not said) */
    int64_t access_expires_at;  /* with access_token */
} fs_credentials;

/* The file of an endpoint: `credentials_file`, else $XDG_STATE_HOME/fhirsync/NAME.credentials
 * (~/.local/state/fhirsync/NAME.credentials). Caller frees; NULL on out of memory. */
char *fs_credentials_path(const fhirsync_endpoint *ep);
/* Read and check the file: FHIRSYNC_E_NOT_FOUND when it does not exist, FHIRSYNC_E_KEY_PERMS
 * when group or others may read or write it (the key files' rule), FHIRSYNC_E_IO when unreadable
 * or incomplete. *out is cleared on failure. */
fhirsync_code fs_credentials_read(const char *path, fs_credentials *out, fhirsync_error *err);
/* Replace the file atomically (temporary file, fsync, rename, directory fsync), mode 0600,
 * creating its directory (0700) when missing. FHIRSYNC_E_IO naming the path. */
fhirsync_code fs_credentials_write(const char *path, const fs_credentials *c, fhirsync_error *err);
void fs_credentials_clear(fs_credentials *c);
/* An exclusive lock (flock on PATH.lock) around read-refresh-write, so that two processes never
 * spend the same rotating refresh token; the descriptor, or -1 (then go on unlocked). */
int fs_credentials_lock(const char *path);
void fs_credentials_unlock(int fd);

/* PKCE (RFC 7636): the S256 challenge of a verifier, base64url without padding. Caller frees. */
char *fs_pkce_challenge(const char *verifier);
/* A new verifier: 64 base64url characters from 48 bytes of the CSPRNG. Caller frees (secret). */
char *fs_pkce_verifier(void);
/* Check the redirect a login ended with: the `state` first (missing or not `expected_state`:
 * FHIRSYNC_E_AUTH, nothing else looked at), then the target (the part before '?' must be
 * `redirect_uri` when that is not NULL), then an `error` (FHIRSYNC_E_AUTH with the error and its
 * error_description), then the `code` (FHIRSYNC_E_PROTOCOL when missing). *code is the caller's
 * secret (fs_secret_free). */
fhirsync_code fs_login_parse_redirect(const char *url, const char *expected_state,
                                      const char *redirect_uri, char **code, fhirsync_error *err);

/* A token request with the handle's client authentication: `grant` is the form's grant part
 * ("grant_type=...&..."), `idempotent` whether it may be repeated after it was sent (not an
 * authorization code, nor a rotating refresh token). Fills *tr on success; the server's refusal
 * verbatim in err (FHIRSYNC_E_AUTH), its OAuth error code in oauth_error (may be NULL). */
fhirsync_code fs_auth_grant(fhirsync_auth *auth, const char *token_url, const char *grant,
                            bool idempotent, fs_token_response *tr, char *oauth_error,
                            size_t oauth_error_size, fhirsync_error *err);

/* ---- the process-wide token cache ------------------------------------------------------------ */
typedef struct fs_cached_token {
    char *access_token;
    char *token_type;
    char *scope;
    int64_t obtained_at;
    int64_t expires_at;
    bool expires_in_missing;
} fs_cached_token;

/* Copy out a token for (token_url, client_id, scope) with more than `margin` seconds left. */
bool fs_token_cache_get(const char *token_url, const char *client_id, const char *scope,
                        int64_t now, fs_cached_token *out);
/* Store (copies). Returns false on out of memory (the token is still usable by the caller). */
bool fs_token_cache_put(const char *token_url, const char *client_id, const char *scope,
                        const fs_cached_token *tok);
void fs_token_cache_drop(const char *token_url, const char *client_id, const char *scope);
/* Wipe every cached token (fhirsync_global_cleanup, tests). */
void fs_token_cache_clear(void);
void fs_cached_token_clear(fs_cached_token *tok);

#endif
