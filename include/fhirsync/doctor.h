/* fhirsync/doctor.h: explain why authentication fails. fhirsync_doctor_run() walks the chain a
 * token depends on, step by step (profile, base URL and vendor, discovery, clock, key, registered
 * JWKS, assertion, token request, scopes, one authenticated request; optionally an export
 * permission probe), and reports each step through a callback as ok / warn / fail / skip with what
 * it found and what to do. It stops sending requests after a step that makes the later ones
 * meaningless, and reports those as skipped. */
#ifndef FHIRSYNC_DOCTOR_H
#define FHIRSYNC_DOCTOR_H

#include "fhirsync/common.h"
#include "fhirsync/config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fhirsync_check_status {
    FHIRSYNC_CHECK_OK = 0,
    FHIRSYNC_CHECK_INFO = 1, /* a fact worth showing (decoded assertion, granted scopes) */
    FHIRSYNC_CHECK_WARN = 2, /* may cause trouble, does not stop the chain */
    FHIRSYNC_CHECK_FAIL = 3,
    FHIRSYNC_CHECK_SKIP = 4
} fhirsync_check_status;

/* One reported step. Strings are borrowed for the duration of the callback; already redacted. */
typedef struct fhirsync_check {
    const char *step; /* short name: "discovery", "token request" */
    fhirsync_check_status status;
    const char *detail; /* what was found, one or more lines */
    const char *hint;   /* what to do about it, may be NULL; lines start with "- " */
} fhirsync_check;

typedef void (*fhirsync_doctor_cb)(const fhirsync_check *check, void *userdata);

/* Flags of fhirsync_doctor_run(). FHIRSYNC_DOCTOR_PROBE_EXPORT: after a working token, kick off
 * a small export (_type=Patient, at the level sync uses first: Group with group_id, else Patient)
 * and cancel it at once (DELETE on its status URL), so that a missing export permission (403 at
 * kick-off) shows before the first sync; reported as the step "export permission". */
#define FHIRSYNC_DOCTOR_PROBE_EXPORT 1u

/* Run the checks for a profile, with `flags` (0: none). Returns FHIRSYNC_OK when a token was
 * obtained and the authenticated request succeeded (warnings allowed); otherwise the code of the
 * first failure, with its message in err. A 401/403 at the probe's kick-off is a failure with
 * FHIRSYNC_E_FORBIDDEN; a level the server refuses (400/404/405/422/501) or a busy server is a
 * warning. */
FHIRSYNC_API fhirsync_code fhirsync_doctor_run(const fhirsync_endpoint *ep, unsigned flags,
                                               fhirsync_doctor_cb cb, void *userdata,
                                               fhirsync_error *err);

/* "ok", "info", "warn", "FAIL", "skip". */
FHIRSYNC_API const char *fhirsync_check_status_name(fhirsync_check_status status);

#ifdef __cplusplus
}
#endif
#endif
