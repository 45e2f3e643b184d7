/* config/config_internal.h: what the other modules of the library (auth, http, bulk, sync, doctor)
 * use of endpoint profiles beyond the public fhirsync/config.h: typed getters that parse a
 * setting once validated (falling back on its default, including the vendor-dependent ones),
 * vendor detection from the FHIR base URL, the duration syntax of `every`, and the memory-backed
 * INI parse (strict or checking) that fhirsync_config_load() and the fuzz target share.
 * Internal: the prefix is fs_; nothing here is exported from the shared library. */
#ifndef FS_CONFIG_INTERNAL_H
#define FS_CONFIG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "fhirsync/config.h"

/* Vendor names as `vendor` takes them and fs_endpoint_vendor() returns them (static strings). */
#define FS_VENDOR_GENERIC "generic"
#define FS_VENDOR_ECW "eclinicalworks"
#define FS_VENDOR_EPIC "epic"
#define FS_VENDOR_CERNER "cerner"

/* The scopes a person's login (auth = login) asks for by default, in v1 syntax (adapted to v2 when
 * discovery says the server speaks only v2). */
#define FS_LOGIN_DEFAULT_SCOPE "openid fhirUser offline_access launch/patient patient/*.read"

/* Parse `len` bytes of INI text as if read from the file `name` (used in messages such as
 * "name:12: ..." and, when it has a directory part, as the base of relative paths in the text).
 * The text need not be NUL-terminated and may hold any bytes. Same contract as
 * fhirsync_config_load(): *out is the caller's on success and NULL on failure. */
fhirsync_code fs_config_load_mem(const char *data, size_t len, const char *name,
                                 fhirsync_config **out, fhirsync_error *err);
/* The same as a checking load (fhirsync_config_load_report) when `report` is not NULL: every
 * problem goes to the report, and only a NULL argument or out of memory fails. */
fhirsync_code fs_config_load_mem_report(const char *data, size_t len, const char *name,
                                        fhirsync_config_report *report, fhirsync_config **out,
                                        fhirsync_error *err);

/* An integer setting's value (or its default: 0 when it has none). Also `every`, in seconds.
 * `rate_limit` defaults to 250 (requests per minute) when the vendor is eClinicalWorks and to 0
 * (off) otherwise. Values are validated when set, so this cannot fail; an unknown or non-numeric
 * setting gives 0. */
long fs_endpoint_long(const fhirsync_endpoint *ep, const char *setting);

/* Whether the profile gets its tokens from a person's login (auth = login): refresh tokens from
 * the credentials file instead of client_credentials. */
bool fs_endpoint_login(const fhirsync_endpoint *ep);

/* A yes/no setting (`delete_job`): true for "yes", including by default. */
bool fs_endpoint_bool(const fhirsync_endpoint *ep, const char *setting);

/* The vendor: the explicit `vendor` setting, else the one detected from base_url. Static string,
 * never NULL. */
const char *fs_endpoint_vendor(const fhirsync_endpoint *ep);

/* Guess the EHR vendor from a FHIR base URL (static string, never NULL):
 * eclinicalworks.com and healow.com hosts (and their subdomains) give "eclinicalworks"; epic.com
 * hosts, an "/api/FHIR/R4" path or "interconnect" anywhere give "epic"; cerner.com hosts and
 * hosts containing "oraclecloud" give "cerner"; anything else (or NULL) "generic". */
const char *fs_vendor_detect(const char *base_url);

/* Whether the URL's host is eClinicalWorks' patient-facing healow.com (or a subdomain): backend
 * services apps should use fhir4.eclinicalworks.com instead, which `doctor` points out. */
bool fs_vendor_patient_facing_host(const char *url);

/* Copy the host of an absolute http(s) URL, lower-cased and without brackets or port, into
 * `host`. False when the URL is not an absolute http(s) URL or the host does not fit. */
bool fs_config_url_host(const char *url, char *host, size_t size);

/* Parse a duration such as "30s", "15m", "1h", "2d" or "1h30m" into seconds (1 s .. 366 days).
 * False on anything else (a bare number has no unit and is refused). */
bool fs_config_parse_duration(const char *text, long *seconds);

/* Whether `setting` names a setting (what fhirsync_setting_names() lists). */
bool fs_setting_known(const char *setting);

#endif
