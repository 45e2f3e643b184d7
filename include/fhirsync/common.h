/* fhirsync/common.h: what every part of the public API shares: the export macro, the one error
 * enum with its strerror, the error-detail struct, and library set-up.
 *
 * Conventions of the whole API: functions return a fhirsync_code; out-parameters are NULL/zero
 * on failure; `_new()` pairs with `_free()` and `_free(NULL)` is a no-op; string inputs are copied;
 * a returned `const char *` is borrowed, a returned `char *` is the caller's (free with
 * fhirsync_free()). A constructor that can fail for a reason other than memory returns a
 * fhirsync_code and its object through an out-parameter; the few that return a pointer are pure
 * allocators whose NULL means out of memory (each says so).
 *
 * Error detail: the code says what class of failure it was; the detail (one redacted line that
 * keeps what the remote side said) lives in exactly one place per function:
 *   - a function with a `fhirsync_error *err` parameter fills it on failure (NULL: not wanted).
 *     Constructors, functions without a handle, and the handles whose every fallible call takes
 *     one (configuration, endpoint, key, auth) work this way.
 *   - a handle whose calls take no `err` (fhirsync_client and its searches, fhirsync_export,
 *     fhirsync_sync) keeps the outcome of its last fallible call: fhirsync_X_errcode() returns its
 *     code (FHIRSYNC_OK after a success) and fhirsync_X_errmsg() its message ("" after a success;
 *     never NULL; borrowed until the next call on the handle). Each such call overwrites both, so
 *     read them right after the call that failed, from the thread that made it (a handle is used
 *     by one thread at a time). Calls that only read a handle (getters) record nothing.
 *
 * Versioned structs (libgit2's pattern): every options struct a caller fills and every stats
 * struct a caller passes in to be filled starts with `unsigned int version`. Set it up with its
 * `fhirsync_X_init(&x, FHIRSYNC_X_VERSION)` (zero-fill, defaults, the version), then set what
 * differs. The version tells the library which layout the caller was compiled with, so that a
 * struct can gain members at its end without breaking programs built against an older header; a
 * struct with a version the library does not know (0 for one filled by memset or an initializer)
 * is refused with FHIRSYNC_E_ARG and a message naming the _init to call. Structs the library hands
 * out (events, files, tokens, borrowed pointers) need no version: the caller only reads them. */
#ifndef FHIRSYNC_COMMON_H
#define FHIRSYNC_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhirsync/version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(FHIRSYNC_BUILDING_LIBRARY)
#define FHIRSYNC_API __attribute__((visibility("default")))
#else
#define FHIRSYNC_API
#endif

/* Error codes. Append-only: a number is never reused or renumbered. */
typedef enum fhirsync_code {
    FHIRSYNC_OK = 0,
    FHIRSYNC_E_NOMEM = 1,      /* out of memory */
    FHIRSYNC_E_ARG = 2,        /* invalid argument (a programming or usage error) */
    FHIRSYNC_E_IO = 3,         /* a local file could not be read or written */
    FHIRSYNC_E_CONFIG = 4,     /* a setting is missing or wrong */
    FHIRSYNC_E_KEY = 5,        /* a key is malformed, unsupported or of the wrong type */
    FHIRSYNC_E_KEY_PERMS = 6,  /* a private key file is readable by group or others */
    FHIRSYNC_E_CRYPTO = 7,     /* the crypto library failed (signing, random numbers) */
    FHIRSYNC_E_JSON = 8,       /* a document is not the JSON it should be */
    FHIRSYNC_E_URL = 9,        /* a URL is malformed or not allowed (plain http off loopback) */
    FHIRSYNC_E_NETWORK = 10,   /* DNS, connect, reset, send/receive failure */
    FHIRSYNC_E_TLS = 11,       /* TLS handshake or certificate verification failed */
    FHIRSYNC_E_TIMEOUT = 12,   /* connect or total timeout */
    FHIRSYNC_E_TOO_LARGE = 13, /* a response exceeded its size cap */
    FHIRSYNC_E_HTTP = 14,      /* an unexpected HTTP status */
    FHIRSYNC_E_REDIRECT = 15,  /* a redirect not allowed here, or too many */
    FHIRSYNC_E_DISCOVERY = 16, /* no usable SMART configuration */
    FHIRSYNC_E_AUTH = 17,      /* the authorization server rejected the token request */
    FHIRSYNC_E_TOKEN_RESPONSE = 18, /* the token response is malformed */
    FHIRSYNC_E_UNAUTHORIZED = 19,   /* 401 from the resource server (after one renewal) */
    FHIRSYNC_E_FORBIDDEN = 20,      /* 403: the token's scopes do not cover the request */
    FHIRSYNC_E_NOT_FOUND = 21,      /* 404 / 410 */
    FHIRSYNC_E_SERVER = 22,         /* 5xx after the retries */
    FHIRSYNC_E_RATE_LIMITED = 23,   /* 429 after the retries */
    FHIRSYNC_E_PROTOCOL = 24,    /* the server broke the protocol (HTML, missing fields, loops) */
    FHIRSYNC_E_PARTIAL = 25,     /* done, but some data failed validation (quarantined) */
    FHIRSYNC_E_STORE = 26,       /* the database failed */
    FHIRSYNC_E_LOCKED = 27,      /* another process holds the lock */
    FHIRSYNC_E_CANCELLED = 28,   /* interrupted on request (signal) */
    FHIRSYNC_E_UNSUPPORTED = 29, /* the server or build lacks a needed feature */
    FHIRSYNC_E_BAD_REQUEST = 30, /* 4xx other than 401/403/404/429: the server refused it */
    FHIRSYNC_E_INTERNAL = 31,    /* a bug in fhirsync */
    FHIRSYNC_E_CONFLICT = 32,    /* the database refused a batch because of another writer (a
                                    deadlock) or an id already stored (FHIRSYNC_STORE_APPEND):
                                    nothing of it was stored; running it again is the cure */
    FHIRSYNC_E_VIEW = 33         /* a ViewDefinition or FHIRPath expression is invalid, or a
                                    resource cannot be evaluated by it (fhirsync/view.h) */
} fhirsync_code;

/* A static English name of the code. Never NULL. */
FHIRSYNC_API const char *fhirsync_strerror(fhirsync_code code);

/* Detail of a failure for functions that take a `fhirsync_error *err` (see the model above).
 * Callers pass a pointer to one (or NULL when the detail is not wanted); it is written only on
 * failure. `message` is one line, already redacted, and keeps what the remote side said (HTTP
 * status, OAuth error, OperationOutcome diagnostics). Its layout is fixed (no version): it is never
 * extended. */
typedef struct fhirsync_error {
    fhirsync_code code;
    long http_status; /* the HTTP status involved, 0 if none */
    char message[1024];
} fhirsync_error;

/* Initialise the library (libcurl, allocators). Call once before any other function and before
 * threads start; idempotent. fhirsync_global_cleanup() undoes it at the end of the program. */
FHIRSYNC_API fhirsync_code fhirsync_global_init(void);
FHIRSYNC_API void fhirsync_global_cleanup(void);

/* Turn core dumps off for the whole process (RLIMIT_CORE 0, and PR_SET_DUMPABLE 0 so that no
 * core is written even through a core_pattern pipe and other processes of the user cannot
 * ptrace it): a core file of a process that holds an access token or a private key holds them
 * too. Does nothing and returns false when the environment variable FHIRSYNC_ALLOW_CORE_DUMPS is
 * "1"; returns true otherwise. Process-wide and not undoable: the fhirsync command calls it first
 * thing; an application embedding the library decides for itself (fhirsync_global_init does not
 * call it). Call it before threads start. */
FHIRSYNC_API bool fhirsync_process_harden(void);

/* Free memory the library returned as `char *` (or any buffer documented as the caller's). */
FHIRSYNC_API void fhirsync_free(void *ptr);

/* Free a secret string: wipe it first. NULL is a no-op. */
FHIRSYNC_API void fhirsync_free_secret(char *secret);

/* Ask every running operation of the process to stop at its next safe point (they then fail
 * with FHIRSYNC_E_CANCELLED). Async-signal-safe: call it from a SIGINT/SIGTERM handler.
 * fhirsync_cancel_reset() clears the request. */
FHIRSYNC_API void fhirsync_cancel(void);
FHIRSYNC_API void fhirsync_cancel_reset(void);

/* The library's version string, e.g. "0.1.0". */
FHIRSYNC_API const char *fhirsync_version(void);

#ifdef __cplusplus
}
#endif
#endif
