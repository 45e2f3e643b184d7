/* fhirsync/auth.h: SMART Backend Services authentication: discovery of the server's SMART
 * configuration, the client assertion (a JWT signed with the backend's private key), and access
 * tokens (OAuth 2.0 client_credentials with private_key_jwt, or a client secret for symmetric
 * clients), cached per token URL, client and scope and renewed ahead of expiry.
 *
 * Thread safety: a fhirsync_auth may be used from one thread at a time; the token cache behind
 * it is shared by all handles of the process and is thread-safe. */
#ifndef FHIRSYNC_AUTH_H
#define FHIRSYNC_AUTH_H

#include <stdbool.h>

#include "fhirsync/common.h"
#include "fhirsync/config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- discovery ------------------------------------------------------------------------------ */

/* A string list, owned by the struct that holds it. */
typedef struct fhirsync_strlist {
    char **items;
    size_t count;
} fhirsync_strlist;

/* What discovery found. All strings owned by the struct; free with fhirsync_smart_config_free. */
typedef struct fhirsync_smart_config {
    char *source_url;               /* the document it came from */
    bool from_capability_statement; /* legacy fallback: CapabilityStatement oauth-uris extension */
    char *token_endpoint;           /* absolute (relative values are resolved against the base) */
    char *registration_endpoint;    /* may be NULL */
    fhirsync_strlist grant_types;
    fhirsync_strlist auth_methods;
    fhirsync_strlist signing_algs; /* empty when not advertised (eClinicalWorks omits it) */
    fhirsync_strlist scopes;
    fhirsync_strlist capabilities;
    int scope_version; /* 1 or 2: the scope syntax to use with this server */
    /* appended (the library allocates this struct): what a person's login (fhirsync/login.h)
     * needs */
    char *authorization_endpoint;            /* absolute, or NULL when not advertised */
    fhirsync_strlist code_challenge_methods; /* PKCE methods ("S256") */
} fhirsync_smart_config;

/* Discover {base_url}/.well-known/smart-configuration, falling back to the CapabilityStatement at
 * {base_url}/metadata. Errors keep what the server said; codes: FHIRSYNC_E_DISCOVERY,
 * FHIRSYNC_E_JSON, FHIRSYNC_E_NETWORK/_TLS/_TIMEOUT, FHIRSYNC_E_SERVER, FHIRSYNC_E_REDIRECT,
 * FHIRSYNC_E_TOO_LARGE, FHIRSYNC_E_URL. */
FHIRSYNC_API fhirsync_code fhirsync_discover(const fhirsync_endpoint *ep,
                                             fhirsync_smart_config **out, fhirsync_error *err);
FHIRSYNC_API void fhirsync_smart_config_free(fhirsync_smart_config *cfg);
/* Whether a list holds a value (exact match). */
FHIRSYNC_API bool fhirsync_strlist_has(const fhirsync_strlist *list, const char *value);

/* ---- tokens --------------------------------------------------------------------------------- */

typedef struct fhirsync_auth fhirsync_auth;

/* A token source for one endpoint profile: loads the key (or the client secret source), copies
 * the profile. Discovery happens on the first token request unless `token_url` is set.
 * FHIRSYNC_E_CONFIG / FHIRSYNC_E_KEY / FHIRSYNC_E_KEY_PERMS on an incomplete profile or bad key. */
FHIRSYNC_API fhirsync_code fhirsync_auth_new(const fhirsync_endpoint *ep, fhirsync_auth **out,
                                             fhirsync_error *err);
FHIRSYNC_API void fhirsync_auth_free(fhirsync_auth *auth);

/* A token as granted. Strings are borrowed from the auth handle and stay valid until the next
 * call that gets a token on the same handle, or its free. */
typedef struct fhirsync_token {
    const char *access_token; /* secret: never log it */
    const char *token_type;   /* as sent ("bearer", "Bearer") */
    const char *scope;        /* granted scopes (the requested ones when the server omitted them) */
    const char *requested_scope;
    int64_t obtained_at;     /* epoch seconds */
    int64_t expires_at;      /* epoch seconds */
    bool expires_in_missing; /* the server sent no expires_in: a short life was assumed */
    bool from_cache;
} fhirsync_token;

/* Get a valid token: from the cache when it has more than its renewal margin left, otherwise a new
 * one (a fresh assertion for every request, retries included). `force_new` skips the cache and
 * replaces its entry (after a 401 from the resource server). Errors: FHIRSYNC_E_AUTH (the server's
 * OAuth error verbatim in the message), FHIRSYNC_E_TOKEN_RESPONSE, discovery and transport
 * errors. */
FHIRSYNC_API fhirsync_code fhirsync_auth_token(fhirsync_auth *auth, bool force_new,
                                               fhirsync_token *out, fhirsync_error *err);

/* Drop the cached token of this handle's (token URL, client, scope) so the next call gets a new
 * one. */
FHIRSYNC_API void fhirsync_auth_invalidate(fhirsync_auth *auth);

/* The token endpoint in use (after discovery or from `token_url`), NULL before it is known. */
FHIRSYNC_API const char *fhirsync_auth_token_url(const fhirsync_auth *auth);
/* The discovery result the handle uses (NULL with `token_url` set and no discovery done). */
FHIRSYNC_API const fhirsync_smart_config *fhirsync_auth_smart_config(const fhirsync_auth *auth);
/* The effective scope requested (adapted to v2 syntax when the server is v2-only and the scope
 * was the default). */
FHIRSYNC_API const char *fhirsync_auth_scope(const fhirsync_auth *auth);

/* Build a client assertion for `token_url` with the handle's key and settings (what would be
 * sent). The JWT is the caller's secret (fhirsync_free_secret). FHIRSYNC_E_UNSUPPORTED for
 * symmetric clients. */
FHIRSYNC_API fhirsync_code fhirsync_auth_assertion(fhirsync_auth *auth, const char *token_url,
                                                   char **out_jwt, fhirsync_error *err);

#ifdef __cplusplus
}
#endif
#endif
