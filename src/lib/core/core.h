/* core/core.h: internal helpers every module of the library shares: the allocator (with the
 * allocation-failure seam used by tests), error reporting into fhirsync_error, logging through the
 * one redaction path, a growable byte buffer, base64url, and small string helpers.
 * Internal: the prefix is fs_; nothing here is exported from the shared library. */
#ifndef FS_CORE_H
#define FS_CORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "fhirsync/common.h"
#include "fhirsync/log.h"

/* ---- allocation ------------------------------------------------------------------------------
 * Every allocation of the library goes through these (jansson's too), so that a test can make
 * the Nth one fail and check that each failure ends in a clean error without leaks. */
void *fs_malloc(size_t n);
void *fs_calloc(size_t count, size_t size);
void *fs_realloc(void *p, size_t n);
/* Grow an array that doubles: room for *cap * 2 elements of `elem_size` bytes (`first` when *cap
 * is 0), *cap updated. NULL on out of memory or overflow, with the old array and *cap kept. */
void *fs_array_grow(void *items, size_t *cap, size_t elem_size, size_t first);
void fs_free(void *p);
char *fs_strdup(const char *s);
char *fs_strndup(const char *s, size_t n);
/* Wipe and free a NUL-terminated secret. */
void fs_free_secret(char *s);
/* Wipe and free a buffer of known length. */
void fs_free_wipe(void *p, size_t n);

/* Test seam: fail the Nth allocation from now on (1 = the next one); 0 turns it off. Returns how
 * many allocations have happened since the last call (so a test can size its walk). */
unsigned long fs_alloc_fail_at(unsigned long nth);
/* Whether an injected failure has fired since fs_alloc_fail_at() armed it. */
bool fs_alloc_failure_fired(void);

/* ---- errors ---------------------------------------------------------------------------------- */
/* Fill `err` (may be NULL) with `code` and a formatted, redacted one-line message; returns code. */
fhirsync_code fs_err(fhirsync_error *err, fhirsync_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Same, also recording the HTTP status. */
fhirsync_code fs_err_http(fhirsync_error *err, fhirsync_code code, long http_status,
                          const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Clear an error struct (may be NULL). */
void fs_err_clear(fhirsync_error *err);
/* Prefix the existing message with "what: " (context added on the way up). */
void fs_err_prefix(fhirsync_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The check of a versioned struct of the public API (an options or stats struct whose first
 * member is `unsigned int version`): FHIRSYNC_OK when `version` is one this library knows
 * (1..latest), else FHIRSYNC_E_ARG with a message naming `type` ("fhirsync_export_options") and
 * the _init call that sets it (a struct filled by memset or an initializer has version 0). */
fhirsync_code fs_check_version(unsigned int version, unsigned int latest, const char *type,
                               fhirsync_error *err);
/* The common part of every fhirsync_X_init(x, version): FHIRSYNC_E_ARG (x left alone) for a NULL
 * struct or a version fs_check_version refuses; otherwise zero the `size` bytes and store
 * `version` in the first member. The caller then sets its defaults. */
fhirsync_code fs_versioned_init(void *x, size_t size, unsigned int version, unsigned int latest,
                                const char *type);

/* ---- logging --------------------------------------------------------------------------------- */
void fs_log(fhirsync_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool fs_log_enabled(fhirsync_log_level level);
/* The one redaction path: a redacted copy of `text` (caller frees with fs_free), NULL on out of
 * memory. Masks every registered live secret by value, then the sensitive patterns (log.c). For
 * text that comes from outside: server bodies, headers, URLs, anything formatted with them. */
char *fs_redact(const char *text);
/* Masks only the registered live secrets, never patterns: for fhirsync's own wording (hints),
 * which must not be mangled by a pattern ("assertion: register ..."). */
char *fs_redact_live(const char *text);

/* ---- the registry of live secrets (secrets.c) ------------------------------------------------
 * Thread-safe. A value is copied (secure heap when available) and reference-counted: each
 * fs_secret_register() pairs with one fs_secret_unregister() of the same value. Values shorter
 * than FS_SECRET_MIN_LEN or longer than FS_SECRET_MAX_LEN are accepted but not masked by value
 * (patterns still apply). At most FS_SECRET_MAX distinct values: the oldest is dropped when full.
 * Register returns false only on out of memory (nothing registered). */
#define FS_SECRET_MIN_LEN 8
#define FS_SECRET_MAX_LEN 16384
#define FS_SECRET_MAX 64
bool fs_secret_register(const char *value);
void fs_secret_unregister(const char *value);
/* fs_strdup + register (NULL on out of memory, nothing registered); fs_secret_free unregisters,
 * wipes and frees (NULL is a no-op). */
char *fs_secret_strdup(const char *s);
void fs_secret_free(char *s);
/* How many values are registered (tests); drop them all (fhirsync_global_cleanup). */
size_t fs_secret_count(void);
void fs_secret_clear_all(void);
/* Set up OpenSSL's secure heap when nobody did (fhirsync_global_init); silent fallback. */
void fs_secure_heap_init(void);

/* ---- growable buffer ------------------------------------------------------------------------- */
typedef struct fs_buf {
    char *data; /* always NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
} fs_buf;

void fs_buf_init(fs_buf *b);
/* Append; returns false on out of memory (the buffer keeps what it had). */
bool fs_buf_append(fs_buf *b, const void *data, size_t n);
bool fs_buf_append_str(fs_buf *b, const char *s);
bool fs_buf_printf(fs_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool fs_buf_vprintf(fs_buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Append `s` percent-encoded for application/x-www-form-urlencoded (or a URL query). */
bool fs_buf_append_urlencoded(fs_buf *b, const char *s);
void fs_buf_reset(fs_buf *b);
void fs_buf_free(fs_buf *b);
/* Wipe then free (for buffers that held secrets). */
void fs_buf_free_secret(fs_buf *b);
/* Hand the data over to the caller (never NULL on success: "" for an empty buffer). */
char *fs_buf_steal(fs_buf *b);

/* ---- base64url (RFC 4648 section 5, no padding) ---------------------------------------------- */
/* Encode; result is the caller's (fs_free), NULL on out of memory. */
char *fs_b64url_encode(const unsigned char *data, size_t len);
/* Decode, rejecting padding, whitespace and characters outside the alphabet; *out is the
 * caller's. Returns false on bad input or out of memory (*out NULL). */
bool fs_b64url_decode(const char *text, size_t text_len, unsigned char **out, size_t *out_len);
/* Standard base64 with padding (for HTTP Basic). */
char *fs_b64_encode(const unsigned char *data, size_t len);
/* Plain base64 (RFC 4648 section 4), padded or not, as strict as fs_b64url_decode. */
bool fs_b64_decode(const char *text, size_t text_len, unsigned char **out, size_t *out_len);

/* ---- strings --------------------------------------------------------------------------------- */
bool fs_streq(const char *a, const char *b);     /* NULL-safe */
bool fs_strcaseeq(const char *a, const char *b); /* NULL-safe, ASCII case-insensitive */
bool fs_starts_with(const char *s, const char *prefix);
/* A base URL as two are compared to tell whether they name one server (the store's endpoint
 * binding, `fhirsync config check`): scheme and host in lower case, no trailing '/'. Caller frees;
 * NULL on out of memory. */
char *fs_url_comparable(const char *url);
/* Constant-time comparison of two equal-length byte strings; false when lengths differ. */
bool fs_consttime_eq(const void *a, size_t alen, const void *b, size_t blen);
/* Parse a decimal integer that must fill the whole string; false on junk or overflow. */
bool fs_parse_long(const char *s, long *out);
/* FNV-1a, 64 bits: the one hash of the library's in-memory sets and of the store's stamps (which
 * are stored, so its values never change). Inline: hash tables run it per key. Start from
 * FS_FNV1A_INIT (or that mixed with a domain), feed bytes, a buffer, or a NUL-terminated string. */
#define FS_FNV1A_INIT UINT64_C(14695981039346656037)
static inline uint64_t fs_fnv1a_byte(uint64_t h, unsigned char c)
{
    return (h ^ c) * UINT64_C(1099511628211);
}
static inline uint64_t fs_fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++)
        h = fs_fnv1a_byte(h, p[i]);
    return h;
}
static inline uint64_t fs_fnv1a_str(uint64_t h, const char *s)
{
    for (; *s; s++)
        h = fs_fnv1a_byte(h, (unsigned char)*s);
    return h;
}

/* The value of one hexadecimal digit (either case), -1 for anything else. Inline: the JSON
 * lexer's \uXXXX escapes run through it. */
static inline int fs_hex_value(unsigned c)
{
    if (c >= '0' && c <= '9')
        return (int)c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return (int)c - 'a' + 10;
    return -1;
}
/* Random bytes from the OS CSPRNG via OpenSSL; false on failure. */
bool fs_random_bytes(unsigned char *out, size_t n);
/* Random base64url string of `nbytes` bytes of entropy; caller frees. */
char *fs_random_id(size_t nbytes);

/* ---- time ------------------------------------------------------------------------------------ */
/* Wall clock seconds (overridable by tests through fs_time_set_offset for skew tests). */
int64_t fs_now(void);
void fs_time_set_offset(int64_t seconds);
/* Monotonic milliseconds. */
int64_t fs_monotonic_ms(void);
/* Parse an HTTP-date (IMF-fixdate, plus the obsolete RFC 850 and asctime forms, RFC 9110). */
bool fs_parse_http_date(const char *s, int64_t *out_epoch);
/* Write all `len` bytes to `fd`, retrying after EINTR and short writes. False with errno set
 * (EIO when write(2) wrote nothing without an error). */
bool fs_write_all(int fd, const void *data, size_t len);
/* Read from `fd` into buf until end of file or `cap` bytes, retrying after EINTR and short
 * reads: the bytes read, or -1 with errno set. A result equal to `cap` means the file may have
 * more (callers size buf one byte above what they expect, to see a file that grew). */
ssize_t fs_read_up_to(int fd, char *buf, size_t cap);
/* fsync the directory holding `path`, so that a file just created or renamed there is durable;
 * best effort (some file systems refuse, and out of memory skips it). */
void fs_fsync_parent(const char *path);
/* The permission rule of private files (keys, login credentials): FHIRSYNC_E_KEY_PERMS naming
 * `what`, `path`, the mode and the chmod to run when `mode` (st_mode) gives group or others any
 * access; FHIRSYNC_OK otherwise. */
fhirsync_code fs_private_file_mode_check(const char *what, const char *path, unsigned mode,
                                         fhirsync_error *err);
/* Days since 1970-01-01 of a proleptic Gregorian date (month 1-12; no timegm: no TZ). */
int64_t fs_days_from_civil(int64_t y, int m, int d);
/* Parse a FHIR instant / dateTime with time (YYYY-MM-DDThh:mm:ss[.fff](Z|+hh:mm)). */
bool fs_parse_instant(const char *s, int64_t *out_epoch);
/* Format an epoch as a FHIR instant in UTC ("2026-11-28T21:33:00Z") into buf (>= 21 bytes). */
void fs_format_instant(int64_t epoch, char *buf, size_t size);
/* Format as an IMF-fixdate into buf (>= 30 bytes). */
void fs_format_http_date(int64_t epoch, char *buf, size_t size);

/* ---- what a run asked of the network (tally.c) ------------------------------------------------
 */
/* Counters of one run, bound to the thread that runs it. */
typedef struct fs_tally {
    _Atomic int64_t responses;    /* HTTP responses received (every hop and retry) */
    _Atomic int64_t rate_limited; /* of which status 429 */
    _Atomic int64_t body_bytes;   /* response body bytes received (after content decoding) */
    _Atomic int64_t tokens;       /* access tokens obtained from a token endpoint (not cached) */
} fs_tally;

/* Count what this thread does from now on into `tally` (NULL: stop counting); returns the tally
 * bound before, for the caller to bind again when it is done. */
fs_tally *fs_tally_bind(fs_tally *tally);
void fs_tally_reset(fs_tally *tally);
/* Called by the HTTP layer and the token client; no-ops on a thread without a tally. */
void fs_tally_response(long status);
void fs_tally_body(size_t bytes);
void fs_tally_token(void);

/* ---- waiting (retry.c) ----------------------------------------------------------------------- */
/* The transport policy (which statuses to retry, Retry-After, the delays of HTTP retries and
 * status polls) is http/policy.h; core keeps what any retry loop needs. */

/* Exponential backoff before retry number `attempt` (0-based), in ms: 1 s doubled per attempt
 * up to cap_ms (<= 0: 300 s), with jitter in [base/2, base] so that clients do not retry in
 * lockstep. */
int64_t fs_backoff_ms(unsigned attempt, int64_t cap_ms);
/* Sleep, waking early when fs_cancel_requested() turns true. Returns false when cancelled. */
bool fs_sleep_ms(int64_t ms);
/* Process-wide cancellation flag (set from a signal handler by the application through
 * fhirsync_cancel()). */
bool fs_cancel_requested(void);

#endif
