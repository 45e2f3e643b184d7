/* fhir/fhir_internal.h: the FHIR REST client's internals that other modules reuse: the bulk
 * export client (kick-off, status polls, file downloads) needs authenticated requests with the
 * same retries, token handling and origin rule as REST reads; the fuzz targets and the unit tests
 * need the Bundle span scanner, the page parser and the OperationOutcome parser on their own.
 *
 *   client.c    the client handle, fs_fhir_perform (retries, tokens, rate limit), public reads
 *   outcome.c   OperationOutcome parsing, status -> error code, error messages from bodies
 *   span.c      the Bundle scanner: validates a page's JSON and finds entry[i].resource, link[j]
 *   search.c    the search iterator and the Bundle page parser
 *
 * Internal: the prefix is fs_fhir_ / fs_outcome_ / fs_bundle_ / fs_span_; nothing is exported. */
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
    fs_buf *into;       /* buffer a 2xx body here instead of resp->body (emptied before
                           every attempt, capped like it; retried like a buffered body):
                           the caller keeps its memory from one request to the next */
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
 *   are retried only on 429/503 carrying a Retry-After, or after a network error when no byte of
 *   the request left this host (fs_http_response.request_sent). A streamed request whose sink
 *   already received bytes is not retried;
 * - fhirsync_cancel() interrupts the waits and the transfer in progress: FHIRSYNC_E_CANCELLED,
 *   never retried.
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

/* Whether `url` (absolute) is on the FHIR base's origin, the only place the token may go:
 * FHIRSYNC_OK with *same (false for a malformed URL or NULL), or FHIRSYNC_E_NOMEM. */
fhirsync_code fs_fhir_same_origin(const fhirsync_client *client, const char *url, bool *same);

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

/* One short description of a body for an error message, into buf: the OperationOutcome summary,
 * an OAuth error ("invalid_token: ..."), "an HTML page" (never the page itself), "an empty body",
 * or the first characters of anything else in quotes. `content_type` may be NULL. */
void fs_fhir_describe_body(const char *body, size_t len, const char *content_type, char *buf,
                           size_t size);

/* Fill err for a non-2xx response of the FHIR server: the code of fs_http_status_code()
 * (FS_HTTP_RESOURCE_SERVER) and the message
 * "HTTP <status> from <url>: <description of the body>", with err->http_status set. Returns the
 * code (FHIRSYNC_OK, err untouched, for a 2xx). */
fhirsync_code fs_fhir_status_error(const fs_http_response *resp, const char *url,
                                   fhirsync_error *err);

/* ---- the Bundle scanner (span.c) ------------------------------------------------------------- */

/* A byte range [start, start + len) of a JSON text. */
typedef struct fs_span {
    size_t start;
    size_t len;
} fs_span;

typedef enum fs_span_status {
    FS_SPAN_OK = 0,
    FS_SPAN_SYNTAX = 1, /* not one JSON text: RFC 8259 grammar, UTF-8 (see fs_bundle_scan_run) */
    FS_SPAN_DEPTH = 2,  /* nested deeper than FS_SPAN_MAX_DEPTH */
    FS_SPAN_NOMEM = 3,
    FS_SPAN_DUPLICATE = 4, /* a member name twice in an object outside the entries' resources */
    FS_SPAN_NOT_OBJECT = 5 /* a well-formed JSON text whose value is not an object */
} fs_span_status;

#define FS_SPAN_MAX_DEPTH 1024

/* Where a duplicate member name was found. */
typedef enum fs_span_where {
    FS_IN_BUNDLE = 0, /* the Bundle's own members */
    FS_IN_ENTRY = 1,  /* Bundle.entry[index] */
    FS_IN_SEARCH = 2, /* Bundle.entry[index].search */
    FS_IN_LINK = 3    /* Bundle.link[index] */
} fs_span_where;

/* A member name's content, and whether it holds escapes (then compared decoded). */
typedef struct fs_span_name {
    fs_span span;
    bool escaped;
} fs_span_name;

/* One element of Bundle.entry. String contents are the bytes between the quotes, still escaped
 * (fs_span_string_decode / fs_span_string_equals read them). */
typedef struct fs_bundle_entry {
    fs_span resource;      /* the value of "resource" (any JSON value); len 0 when absent */
    fs_span resource_type; /* content of resource.resourceType when that is a string */
    bool is_object;        /* the entry is an object */
    bool resource_object;  /* its resource is an object */
    bool has_type;         /* ...with a string resourceType (the last one if repeated) */
    bool outcome;          /* entry.search is an object whose mode is the string "outcome" */
} fs_bundle_entry;

/* One element of Bundle.link. */
typedef struct fs_bundle_link {
    fs_span value;  /* the element's bytes */
    fs_span url;    /* content of "url" when it is a string */
    bool is_object; /* the element is an object */
    bool next;      /* its relation is the string "next" */
    bool has_url;   /* its url is a string */
} fs_bundle_link;

/* Where the parts of a Bundle are in its text, and what the few members the search iterator
 * reads say. Arrays are owned by the struct and kept between scans (fs_bundle_scan_clear frees
 * them). */
typedef struct fs_bundle_scan {
    fs_span resource_type; /* the top-level "resourceType" value (quotes included); len 0 when
                              absent */
    fs_span total;         /* the top-level "total" value; len 0 when absent */
    bool has_entry;        /* a top-level "entry" member exists */
    bool entry_is_array;
    fs_bundle_entry *entries;
    size_t entry_count;
    bool has_link;
    bool link_is_array;
    fs_bundle_link *links;
    size_t link_count;
    /* on failure */
    size_t error_offset; /* where the scan failed (FS_SPAN_DUPLICATE: the second name) */
    const char *error;   /* what failed, static text ("invalid UTF-8 in a string") */
    fs_span duplicate;   /* FS_SPAN_DUPLICATE: the repeated name's content */
    fs_span_where duplicate_in;
    size_t duplicate_index; /* the entry or link holding it */
    bool duplicate_nested;  /* in an object inside a member value of that place */
    /* buffers */
    size_t cap_entries, cap_links;
    fs_span_name *names; /* member names of the objects being checked for repeats */
    size_t name_count, cap_names;
    size_t *bases; /* where each open object's names start in `names` */
    size_t base_count, cap_bases;
} fs_bundle_scan;

void fs_bundle_scan_init(fs_bundle_scan *scan);
void fs_bundle_scan_clear(fs_bundle_scan *scan);

/* Validate `len` bytes as one JSON text and record where a Bundle's parts are, in one pass. This
 * is the only check a search page gets, so it checks everything a strict JSON parser would:
 * - the RFC 8259 grammar byte by byte (literals, numbers, strings with every escape, nesting),
 *   surrounding whitespace allowed, nothing after the value;
 * - strings: well-formed UTF-8 (no overlong forms, no encoded surrogates, nothing above
 *   U+10FFFF), \u escapes forming valid UTF-16 (no lone surrogates), no \u0000 (what jansson
 *   refuses too: a NUL would cut the C strings consumers make of values);
 * - nesting up to FS_SPAN_MAX_DEPTH arrays and objects (FS_SPAN_DEPTH beyond);
 * - member names unique in every object outside the entries' resources: the Bundle, its
 *   entries, their search, its links and whatever else they hold (FS_SPAN_DUPLICATE), so that
 *   what the iterator reads is never ambiguous. Names inside entry[i].resource are NOT checked:
 *   the resource is handed on as the server's bytes, verbatim, and a repeated name in it reaches
 *   the caller as received (the caller's JSON parser decides; most keep the last). Names are
 *   compared after unescaping ("\u0065ntry" is "entry").
 * Numbers are checked against the grammar only: 1e400 or a 30-digit integer are valid JSON
 * (FHIR decimals have arbitrary precision) although jansson refuses them.
 * A valid text whose value is not an object is FS_SPAN_NOT_OBJECT. On failure nothing but
 * error_offset, error and the duplicate fields is to be used. */
fs_span_status fs_bundle_scan_run(const char *text, size_t len, fs_bundle_scan *scan);

/* Validate one JSON value starting at or after `*pos` (leading whitespace allowed), with the
 * checks above but no duplicate names: on success *pos is just past it and *span its bytes.
 * Exposed for the unit tests and the fuzz target. */
fs_span_status fs_json_span_value(const char *text, size_t len, size_t *pos, fs_span *span);

/* The decoded value of a string's content (the bytes between the quotes, as validated by the
 * scanner) as a new NUL-terminated UTF-8 string (caller frees); NULL on out of memory. */
char *fs_span_string_decode(const char *text, fs_span content);
/* Whether a validated string content decodes to exactly `want` (NUL-terminated UTF-8). */
bool fs_span_string_equals(const char *text, fs_span content, const char *want);
/* The value of a validated number span as an integer, as jansson-based code read it: an integer,
 * or a number with no fractional part (2.0, 2e1) within int64_t; false otherwise. */
bool fs_span_number_integer(const char *text, fs_span number, int64_t *out);

/* ---- Bundle pages (search.c) ----------------------------------------------------------------- */

/* One parsed search page. */
typedef struct fs_fhir_page {
    const fs_bundle_entry *entries; /* scan.entries: resource bytes and the outcome mark */
    size_t count;
    size_t outcomes;     /* entries with search.mode "outcome" */
    char *next;          /* link[relation=next].url as given (unescaped), or NULL */
    long total;          /* Bundle.total, -1 when absent */
    fs_bundle_scan scan; /* the scanner's buffers, reused between pages */
} fs_fhir_page;

void fs_fhir_page_init(fs_fhir_page *page);
/* Forget the page's content (entries, next), keeping the scanner's buffers. */
void fs_fhir_page_reset(fs_fhir_page *page);
void fs_fhir_page_clear(fs_fhir_page *page);

/* Parse a search page (`url` names it in messages), validated once, by the scanner: one JSON
 * object (fs_bundle_scan_run) that is a Bundle; `entry` absent or an array; every entry an object
 * whose `resource` is an object with a non-empty string resourceType (search.mode "outcome"
 * entries are marked, and logged); `link` absent or an array of objects, the first with relation
 * "next" having a url. FHIRSYNC_E_PROTOCOL with a message saying what is wrong (an HTML page, not
 * JSON and where, not a Bundle, a duplicate member, ...), FHIRSYNC_E_NOMEM. jansson is used only
 * to describe bodies that are not Bundles (OperationOutcome diagnostics). On failure the page is
 * reset. */
fhirsync_code fs_fhir_page_parse(const char *body, size_t len, const char *url, fs_fhir_page *page,
                                 fhirsync_error *err);

#endif
