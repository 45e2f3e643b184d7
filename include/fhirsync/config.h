/* fhirsync/config.h: endpoint profiles. A profile holds everything needed to reach one EHR
 * endpoint (one practice): FHIR base URL, client id, key, algorithm, scopes, vendor, extra
 * headers, timeouts, and sync settings.
 *
 * Profiles come from an INI file (`[endpoint NAME]` sections, plus an optional `[defaults]`
 * section that every endpoint inherits), then environment variables FHIRSYNC_<SETTING> (e.g.
 * FHIRSYNC_CLIENT_ID), then command-line flags, each overriding the one before. Every value
 * remembers where it came from so that an error can name the setting and its source. Secrets are
 * never settings: a client secret is read from `client_secret_file` or from the environment
 * variable named by `client_secret_env`.
 *
 * Thread safety: a profile is not modified by the library once handed to a client; concurrent
 * reads are safe. */
#ifndef FHIRSYNC_CONFIG_H
#define FHIRSYNC_CONFIG_H

#include "fhirsync/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fhirsync_config fhirsync_config;
typedef struct fhirsync_endpoint fhirsync_endpoint;

/* Parse an INI file. Unknown sections or settings, malformed values and duplicate endpoint names
 * are errors naming the file and line (FHIRSYNC_E_CONFIG); FHIRSYNC_E_IO when unreadable. */
FHIRSYNC_API fhirsync_code fhirsync_config_load(const char *path, fhirsync_config **out,
                                                fhirsync_error *err);
/* An empty configuration (no endpoints). A pure allocator: NULL only when out of memory. */
FHIRSYNC_API fhirsync_config *fhirsync_config_new(void);
FHIRSYNC_API void fhirsync_config_free(fhirsync_config *cfg);

FHIRSYNC_API size_t fhirsync_config_endpoint_count(const fhirsync_config *cfg);
/* Borrowed; NULL when out of range / not found. */
FHIRSYNC_API fhirsync_endpoint *fhirsync_config_endpoint_at(const fhirsync_config *cfg, size_t i);
FHIRSYNC_API fhirsync_endpoint *fhirsync_config_endpoint(const fhirsync_config *cfg,
                                                         const char *name);
/* Add a new empty endpoint (inheriting [defaults]), owned by cfg; *out (may be NULL) receives it,
 * borrowed. FHIRSYNC_E_CONFIG when an endpoint of that name exists, FHIRSYNC_E_ARG for a NULL
 * config or name, FHIRSYNC_E_NOMEM; *out is then NULL and cfg unchanged. */
FHIRSYNC_API fhirsync_code fhirsync_config_add_endpoint(fhirsync_config *cfg, const char *name,
                                                        fhirsync_endpoint **out,
                                                        fhirsync_error *err);

/* A standalone profile (not in a config), and a deep copy. Pure allocators: NULL only when out of
 * memory (or for a NULL argument, a programming error). */
FHIRSYNC_API fhirsync_endpoint *fhirsync_endpoint_new(const char *name);
FHIRSYNC_API fhirsync_endpoint *fhirsync_endpoint_dup(const fhirsync_endpoint *ep);
FHIRSYNC_API void fhirsync_endpoint_free(fhirsync_endpoint *ep);
FHIRSYNC_API const char *fhirsync_endpoint_name(const fhirsync_endpoint *ep);

/* Set a setting by name (see fhirsync_setting_names()), validating the value. `source` says
 * where it came from ("fhirsync.ini:12", "environment FHIRSYNC_SCOPE", "--scope"). Repeatable
 * settings (`header`) append; others replace. FHIRSYNC_E_CONFIG names the setting and source. */
FHIRSYNC_API fhirsync_code fhirsync_endpoint_set(fhirsync_endpoint *ep, const char *setting,
                                                 const char *value, const char *source,
                                                 fhirsync_error *err);
/* Clear a repeatable setting's list (so that a later layer replaces rather than appends). */
FHIRSYNC_API void fhirsync_endpoint_clear(fhirsync_endpoint *ep, const char *setting);

/* The value (the last one for repeatable settings), or the setting's default, or NULL. */
FHIRSYNC_API const char *fhirsync_endpoint_get(const fhirsync_endpoint *ep, const char *setting);
/* Where the value came from ("default" for defaults), or NULL when unset. */
FHIRSYNC_API const char *fhirsync_endpoint_source(const fhirsync_endpoint *ep, const char *setting);
/* Values of a repeatable setting: count and i-th (borrowed). */
FHIRSYNC_API size_t fhirsync_endpoint_count(const fhirsync_endpoint *ep, const char *setting);
FHIRSYNC_API const char *fhirsync_endpoint_get_at(const fhirsync_endpoint *ep, const char *setting,
                                                  size_t i);

/* Apply FHIRSYNC_<SETTING> environment variables (upper case, e.g. FHIRSYNC_BASE_URL). */
FHIRSYNC_API fhirsync_code fhirsync_endpoint_apply_env(fhirsync_endpoint *ep, fhirsync_error *err);

/* Check that the profile is complete for getting a token: base_url, client_id, and a key_file
 * (private_key_jwt) or a client secret source (client_secret_*). The message names the missing
 * setting and how to set it. */
FHIRSYNC_API fhirsync_code fhirsync_endpoint_validate(const fhirsync_endpoint *ep,
                                                      fhirsync_error *err);

/* Read the client secret (from client_secret_file or the variable named by client_secret_env).
 * The result is the caller's secret: free with fhirsync_free_secret(). */
FHIRSYNC_API fhirsync_code fhirsync_endpoint_client_secret(const fhirsync_endpoint *ep, char **out,
                                                           fhirsync_error *err);

/* The NULL-terminated list of setting names, and a one-line description of one. */
FHIRSYNC_API const char *const *fhirsync_setting_names(void);
FHIRSYNC_API const char *fhirsync_setting_help(const char *setting);

#ifdef __cplusplus
}
#endif
#endif
