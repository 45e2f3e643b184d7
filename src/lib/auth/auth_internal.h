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
} fs_token_response;

/* Parse a 2xx token response body. FHIRSYNC_E_TOKEN_RESPONSE naming what is wrong. */
fhirsync_code fs_token_response_parse(const char *body, size_t len, fs_token_response *out,
                                      fhirsync_error *err);
void fs_token_response_clear(fs_token_response *tr);

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
