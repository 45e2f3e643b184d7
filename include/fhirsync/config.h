/* fhirsync/config.h: endpoint profiles. A profile holds everything needed to reach one EHR
 * endpoint (one practice): FHIR base URL, client id, key, algorithm, scopes, vendor, extra
 * headers, timeouts, and sync settings.
 *
 * Profiles come from a configuration: one INI file, or a directory whose `*.ini` files together
 * form one (`[endpoint NAME]` sections, names unique across all the files, plus at most one
 * optional `[defaults]` section that every endpoint of every file inherits); then environment
 * variables FHIRSYNC_<SETTING> (e.g. FHIRSYNC_CLIENT_ID), then command-line flags, each
 * overriding the one before: [defaults] < [endpoint NAME] < environment < flags. Every value
 * remembers where it came from so that an error can name the setting and its source. Secrets are
 * never settings: a client secret is read from `client_secret_file` or from the environment
 * variable named by `client_secret_env`.
 *
 * fhirsync_config_load() stops at the first problem. A check (fhirsync_config_load_report(),
 * fhirsync_config_check()) goes on and collects every problem of every file into a report, each
 * with its file, line, endpoint and setting: what `fhirsync config check` prints.
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

/* Parse an INI file, or every `*.ini` file of a directory (names not starting with '.', read in
 * byte order of their names; other files are ignored) as one configuration. Unknown sections or
 * settings, malformed values, two endpoints of one name (in one file or two) and a second
 * [defaults] are errors naming the file and line (FHIRSYNC_E_CONFIG); FHIRSYNC_E_IO when a file
 * is unreadable. The first error ends the load. An empty directory is an empty configuration. */
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

/* ---- checking a configuration -------------------------------------------------------------- */

/* How bad a problem is: an error stops the endpoint from syncing; a warning is likely a mistake.
 * Append-only. */
typedef enum fhirsync_config_severity {
    FHIRSYNC_CONFIG_ERROR = 1,
    FHIRSYNC_CONFIG_WARNING = 2
} fhirsync_config_severity;

/* One problem of a report. The library allocates it (fields may be appended); every string is
 * borrowed from the report. */
typedef struct fhirsync_config_problem {
    fhirsync_config_severity severity;
    fhirsync_code code;   /* FHIRSYNC_E_CONFIG, or what a file check met: _IO, _KEY, _KEY_PERMS */
    const char *file;     /* the file, NULL when the value came from elsewhere or from nowhere */
    int line;             /* its line, 0 when about the whole file (or no file) */
    const char *endpoint; /* the endpoint, NULL when about a file, [defaults] or all endpoints */
    const char *setting;  /* the setting (as written, for an unknown one), or NULL */
    const char *source;   /* where, as one text ("FILE:LINE", "environment FHIRSYNC_X",
                             "command line --x"), or NULL */
    const char *message;  /* what is wrong and what to do, one line without the location */
} fhirsync_config_problem;

typedef struct fhirsync_config_report fhirsync_config_report;

/* An empty report. A pure allocator: NULL only when out of memory. Not thread-safe: one thread
 * adds to a report at a time. */
FHIRSYNC_API fhirsync_config_report *fhirsync_config_report_new(void);
FHIRSYNC_API void fhirsync_config_report_free(fhirsync_config_report *report);
/* Problems in the order found (files in name order, lines in order, then the endpoints' checks in
 * configuration order). The problem is borrowed until the next addition or the free; NULL when
 * out of range. */
FHIRSYNC_API size_t fhirsync_config_report_count(const fhirsync_config_report *report);
FHIRSYNC_API const fhirsync_config_problem *
fhirsync_config_report_at(const fhirsync_config_report *report, size_t i);
/* How many of them are errors (FHIRSYNC_CONFIG_ERROR). */
FHIRSYNC_API size_t fhirsync_config_report_errors(const fhirsync_config_report *report);

/* Load like fhirsync_config_load(), but go on after a problem: every one of every file goes to
 * `report` (an unreadable file, a line that does not parse, an unknown setting, a refused value,
 * a duplicate endpoint naming both files and lines), and *out receives what could be read (a
 * refused value is left unset; the settings of a duplicate or broken section are checked but
 * kept nowhere). Fails only for a NULL argument (FHIRSYNC_E_ARG) or out of memory
 * (FHIRSYNC_E_NOMEM), *out then NULL. */
FHIRSYNC_API fhirsync_code fhirsync_config_load_report(const char *path,
                                                       fhirsync_config_report *report,
                                                       fhirsync_config **out, fhirsync_error *err);

/* Check every endpoint of a configuration (after the environment and flags were applied, if
 * they are to count), adding to `report`: errors for what fhirsync_endpoint_validate() refuses
 * (all of it, not the first), except what a checking load already reported as refused, and for
 * an endpoint whose store also receives an endpoint of another base URL without shared_store =
 * yes (the sync refuses it: resource ids are unique only within one server); warnings for two
 * endpoints with the same base URL, group_id and types into one store (each run repeats the
 * other's) and for a configuration without endpoints. Reads no file and no network. Fails only
 * for a NULL argument or out of memory. */
FHIRSYNC_API fhirsync_code fhirsync_config_check(const fhirsync_config *cfg,
                                                 fhirsync_config_report *report,
                                                 fhirsync_error *err);

/* Add a problem found by the application about an endpoint's setting (either may be NULL): its
 * file, line and source are where that setting's value came from (the endpoint's [endpoint]
 * header when the setting is NULL or unset). For checks the configuration module cannot make
 * itself, such as whether a key file holds a usable key. FHIRSYNC_E_ARG for a NULL report or
 * message, FHIRSYNC_E_NOMEM. */
FHIRSYNC_API fhirsync_code fhirsync_config_report_add(fhirsync_config_report *report,
                                                      const fhirsync_endpoint *ep,
                                                      const char *setting,
                                                      fhirsync_config_severity severity,
                                                      fhirsync_code code, const char *message);

#ifdef __cplusplus
}
#endif
#endif
