/* fhir/fhir_internal.h: the FHIR REST client's internals that other modules reuse: the bulk
 * export client (kick-off, status polls, file downloads) needs authenticated requests with the
 * same retries, token handling and origin rule as REST reads; the fuzz targets and the unit tests
 * need the Bundle span scanner, the page parser and the OperationOutcome parser on their own.
 *
 *   client.c    the client handle, fs_fhir_perform (retries, tokens, rate limit), public reads
 *   outcome.c   OperationOutcome parsing, status -> error code, error messages from bodies
 *   span.c      the JSON span scanner: byte ranges of entry[i].resource and link[j] in a Bundle
 *   search.c    the search iterator and the Bundle page parser
 *
 * Internal: the prefix is fs_fhir_ / fs_outcome_ / fs_bundle_; nothing is exported. */
#ifndef FS_FHIR_INTERNAL_H
#define FS_FHIR_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "core/core.h"
#include "fhirsync/auth.h"
#include "fhirsync/client.h"
#include "http/http.h"

/* Media types. */
#define FS_FHIR_JSON "application/fhir+json"
#define FS_FHIR_NDJSON "application/fhir+ndjson"

/* ---- the client (client.c) ------------------------------------------------------------------- */

/* One request through a client. Zero-initialise, then set what differs from the defaults. */
typedef struct fs_fhir_request {
    const char *method;         /* NULL: "GET" */
    const char *target;         /* a path relative to the base ("Patient/1", "$export?x") or
                                   an absolute URL */
    const char *accept;         /* NULL: "application/fhir+json"; ignored when `headers`
                                   holds an Accept line */
    const char *const *headers; /* more "Name: value" lines, NULL-terminated, may be NULL;
                                   sent after the profile's `header` settings */
    const char *body;           /* may be NULL */
    size_t body_len;
    bool anonymous;         /* no bearer token: then an absolute URL may be on any origin
                               (transport rules still apply: https, or http to loopback) */
    bool follow_anywhere;   /* follow redirects to other origins, never with the token
                               (FS_REDIRECT_DROP_TOKEN: bulk files answered by a 307 to
                               storage); default: same-origin redirects only */
    bool no_status_retries; /* return 408/429/5xx answers at once (the caller paces its
                               own polling); network errors are still retried */
    size_t max_body;        /* cap of a buffered body; 0: the profile's max_body */
    fs_http_sink sink;      /* stream a 2xx body here instead of buffering it */
    void *sink_userdata;
    int64_t range_from; /* > 0: ask for the bytes from this offset (Range) */
} fs_fhir_request;

/* Perform a request with everything a FHIR client owes the server and itself:
 * - the target is resolved against the base (fs_fhir_resolve); an authenticated request to
 *   another origin fails with FHIRSYNC_E_URL before anything is sent;
 * - the rate limiter of the endpoint is waited for before every attempt;
 * - the token (cached by the auth handle, renewed ahead of expiry) is attached, only on the
 *   base's origin; a 401 answer to a request that carried it invalidates it, a new one is
 *   requested (force_new, a fresh assertion) and the request is sent once more;
 * - 408, 429, 500, 502, 503, 504 and network errors/timeouts are retried up to the profile's
 *   max_retries with exponential backoff and jitter, or Retry-After (seconds or HTTP-date),
 *   capped by retry_cap; each retry is logged at warn with its reason and delay. POST and PATCH
 *   are retried only on 429/503 carrying a Retry-After, or when the connection never reached the
 *   server. A streamed request whose sink already received bytes is not retried;
 * - fhirsync_cancel() interrupts the waits (FHIRSYNC_E_CANCELLED).
 * Returns FHIRSYNC_OK whenever a final HTTP response arrived, whatever its status (a 401 after
 * the renewal, a 503 after the last retry...): map it with fs_fhir_status_error(). Otherwise the
 * transport or token error, with err filled. `resp` must have been initialised
 * (fs_http_response_init); it is cleared first and must be cleared by the caller in every case;
 * resp->effective_url is the URL that answered. Does not touch the client's errmsg. */
fhirsync_code fs_fhir_perform(fhirsync_client *client, const fs_fhir_request *req,
                              fs_http_response *resp, fhirsync_error *err);

/* Resolve a path (relative to the base, which is treated as a directory) or an absolute URL
 * into an absolute URL (*out is the caller's). With `authenticated`, a URL on another origin
 * than the base's is refused with FHIRSYNC_E_URL ("... the bearer token is sent only to the FHIR
 * server"); a malformed reference is FHIRSYNC_E_URL too. */
fhirsync_code fs_fhir_resolve(const fhirsync_client *client, const char *target, bool authenticated,
                              char **out, fhirsync_error *err);

/* Whether `url` (absolute) is on the FHIR base's origin: the only place the token may go. */
bool fs_fhir_same_origin(const fhirsync_client *client, const char *url);

/* Borrowed views of the client: its profile (a copy owned by the client), its FHIR base URL,
 * the base's origin ("scheme://host:port"), its auth handle. */
const fhirsync_endpoint *fs_fhir_client_endpoint(const fhirsync_client *client);
const char *fs_fhir_client_base(const fhirsync_client *client);
const char *fs_fhir_client_origin(const fhirsync_client *client);
fhirsync_auth *fs_fhir_client_auth(fhirsync_client *client);

/* Record the outcome of a public call in the client (what fhirsync_client_errmsg/_errcode
 * report): the error's code and message, or success when err is NULL or its code is
 * FHIRSYNC_OK. Returns the code. */
fhirsync_code fs_fhir_set_error(fhirsync_client *client, const fhirsync_error *err);

/* ---- OperationOutcome and statuses (outcome.c) ---------------------------------------------- */

/* What an OperationOutcome says, condensed for one error line. */
typedef struct fs_outcome {
    size_t issues;     /* number of issue[] entries */
    bool has_error;    /* an issue of severity fatal or error */
    bool transient;    /* an issue with code "transient" (bulk: keep polling) */
    char summary[768]; /* "error not-found: Patient/999 is not known; warning ..."
                          (severity, code, then diagnostics or details.text) */
} fs_outcome;

/* Parse `len` bytes as an OperationOutcome (resourceType "OperationOutcome" with an issue
 * array). False when the body is not one (not JSON, another resource, no issue array): *out is
 * then zeroed. Never fails on memory in a way that matters: out of memory reads as "not one". */
bool fs_outcome_parse(const char *body, size_t len, fs_outcome *out);

/* The error code for a final non-2xx HTTP status: 401 FHIRSYNC_E_UNAUTHORIZED, 403
 * FHIRSYNC_E_FORBIDDEN, 404/410 FHIRSYNC_E_NOT_FOUND, 429 FHIRSYNC_E_RATE_LIMITED, 5xx
 * FHIRSYNC_E_SERVER, other 4xx FHIRSYNC_E_BAD_REQUEST, anything else (1xx, 3xx, odd numbers)
 * FHIRSYNC_E_HTTP. FHIRSYNC_OK for 2xx. */
fhirsync_code fs_fhir_status_code(long status);

/* One short description of a body for an error message, into buf: the OperationOutcome summary,
 * an OAuth error ("invalid_token: ..."), "an HTML page" (never the page itself), "an empty body",
 * or the first characters of anything else in quotes. `content_type` may be NULL. */
void fs_fhir_describe_body(const char *body, size_t len, const char *content_type, char *buf,
                           size_t size);

/* Fill err for a non-2xx response: the code of fs_fhir_status_code() and the message
 * "HTTP <status> from <url>: <description of the body>", with err->http_status set. Returns the
 * code (FHIRSYNC_OK, err untouched, for a 2xx). */
fhirsync_code fs_fhir_status_error(const fs_http_response *resp, const char *url,
                                   fhirsync_error *err);

/* ---- the span scanner (span.c) --------------------------------------------------------------- */

/* A byte range [start, start + len) of a JSON text. */
typedef struct fs_span {
    size_t start;
    size_t len;
} fs_span;

typedef enum fs_span_status {
    FS_SPAN_OK = 0,
    FS_SPAN_SYNTAX = 1, /* not one well-formed JSON value (RFC 8259 grammar) */
    FS_SPAN_DEPTH = 2,  /* nested deeper than FS_SPAN_MAX_DEPTH */
    FS_SPAN_NOMEM = 3
} fs_span_status;

#define FS_SPAN_MAX_DEPTH 1024

/* Where the parts of a Bundle are in its text. Arrays are owned by the struct and kept between
 * scans (fs_bundle_scan_clear frees them). */
typedef struct fs_bundle_scan {
    fs_span resource_type; /* top-level "resourceType" value (quotes included); len 0
                              when absent */
    bool has_entry;        /* a top-level "entry" member exists */
    bool entry_is_array;
    fs_span *resources; /* per entry[i]: its "resource" value; len 0 when the entry
                           is not an object or has no "resource" */
    size_t entry_count;
    bool has_link;
    bool link_is_array;
    fs_span *links; /* each element of the top-level "link" array */
    size_t link_count;
    size_t error_offset; /* where the scan failed */
    size_t cap_resources, cap_links;
} fs_bundle_scan;

void fs_bundle_scan_init(fs_bundle_scan *scan);
void fs_bundle_scan_clear(fs_bundle_scan *scan);

/* Scan `len` bytes that must be exactly one JSON object (surrounding whitespace allowed),
 * validating the grammar byte by byte (strings with every escape, numbers, literals, nesting) and
 * recording the spans above. Member names are compared after unescaping ("\u0065ntry" is
 * "entry"). On failure the spans are not to be used and error_offset says where it failed. The
 * scanner does not check UTF-8 or duplicate names: callers validate with jansson as well. */
fs_span_status fs_bundle_scan_run(const char *text, size_t len, fs_bundle_scan *scan);

/* Skip one JSON value starting at or after `*pos` (leading whitespace allowed): on success *pos
 * is just past it and *span its bytes. Exposed for the unit tests and the fuzz target. */
fs_span_status fs_json_span_value(const char *text, size_t len, size_t *pos, fs_span *span);

/* ---- Bundle pages (search.c) ----------------------------------------------------------------- */

typedef struct fs_fhir_entry {
    fs_span resource; /* the exact bytes of entry[i].resource */
    bool outcome;     /* search.mode "outcome": not a result, skipped */
} fs_fhir_entry;

/* One parsed search page. */
typedef struct fs_fhir_page {
    fs_fhir_entry *entries;
    size_t count;
    size_t outcomes;     /* entries with search.mode "outcome" */
    char *next;          /* link[relation=next].url exactly as given, or NULL */
    long total;          /* Bundle.total, -1 when absent */
    fs_bundle_scan scan; /* the scanner's buffers, reused between pages */
} fs_fhir_page;

void fs_fhir_page_init(fs_fhir_page *page);
/* Free the page's content (entries, next), keeping nothing but empty buffers. */
void fs_fhir_page_reset(fs_fhir_page *page);
void fs_fhir_page_clear(fs_fhir_page *page);

/* Parse a search page (`url` names it in messages): valid JSON (jansson) and a Bundle; `entry`
 * absent or an array; every entry an object whose `resource` is an object with a string
 * resourceType (search.mode "outcome" entries are marked, and logged); `link` absent or an array
 * of objects; the entry spans from the scanner matching jansson's view. FHIRSYNC_E_PROTOCOL with
 * a message saying what is wrong (an HTML page, not JSON, not a Bundle, ...), FHIRSYNC_E_NOMEM.
 * On failure the page is reset. */
fhirsync_code fs_fhir_page_parse(const char *body, size_t len, const char *url, fs_fhir_page *page,
                                 fhirsync_error *err);

#endif
