/* http/http.h: the one place that talks to libcurl. It enforces the transport rules of the whole
 * library: TLS verification always on; plain http only to loopback hosts; connect and total
 * timeouts; every body held in memory capped; redirects followed only as the caller's policy
 * allows; the bearer token attached only to the origin it belongs to; and debug output that goes
 * through the redaction path (libcurl's raw verbose output is never turned on).
 *
 * A fs_http handle wraps one libcurl easy handle so that connections (and HTTP/2 streams) are
 * reused between requests. Not thread-safe: one handle per thread. */
#ifndef FS_HTTP_H
#define FS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

/* ---- URLs ----------------------------------------------------------------------------------- */

/* Resolve `ref` (absolute, or relative to `base`) into an absolute URL (caller frees). A base
 * with a path that does not end in '/' is treated as a directory when `base_is_dir` (FHIR bases:
 * "Patient?x" relative to https://h/fhir/r4 is https://h/fhir/r4/Patient?x). */
fhirsync_code fs_url_resolve(const char *base, const char *ref, bool base_is_dir, char **out,
                             fhirsync_error *err);
/* "scheme://host:port" with the default port made explicit and the host lower-cased; caller
 * frees. FHIRSYNC_E_URL on a malformed URL. */
fhirsync_code fs_url_origin(const char *url, char **out, fhirsync_error *err);
/* Whether two URLs have the same origin (scheme, host, port): FHIRSYNC_OK with *same (false when
 * either is malformed or NULL), or FHIRSYNC_E_NOMEM (*same false). The decisions that send or
 * withhold the token use this one, so that running out of memory is reported as such. */
fhirsync_code fs_url_compare_origins(const char *a, const char *b, bool *same);
/* The same as a plain answer: false also when out of memory (for messages and logs). */
bool fs_url_same_origin(const char *a, const char *b);
/* Check that a URL is absolute http(s), and that plain http goes only to a loopback host
 * (localhost, 127.0.0.0/8, ::1). `what` names the URL in the error ("FHIR base URL"). */
fhirsync_code fs_url_check_transport(const char *url, const char *what, fhirsync_error *err);
/* The host of a URL, lower-cased (caller frees), or NULL. */
char *fs_url_host(const char *url);
/* Append "/" + `path` to `base` without doubling slashes (caller frees). */
char *fs_url_join(const char *base, const char *path);

/* ---- requests ------------------------------------------------------------------------------- */

typedef enum fs_redirect_policy {
    FS_REDIRECT_NONE = 0,        /* a 3xx is returned to the caller as is (token requests) */
    FS_REDIRECT_SAME_ORIGIN = 1, /* follow within the origin; another origin is an error */
    FS_REDIRECT_DROP_TOKEN = 2   /* follow anywhere (https or loopback), without the token
                                    once the origin changes (bulk file downloads to storage) */
} fs_redirect_policy;

/* Where a streamed body goes: return false to abort the transfer (the request then fails with
 * the code and message the sink put into `err` of fs_http_perform). */
typedef bool (*fs_http_sink)(const char *data, size_t len, void *userdata);

typedef struct fs_http_request {
    const char *method; /* "GET" (default when NULL), "POST", "DELETE" */
    const char *url;
    const char *const *headers; /* NULL-terminated "Name: value" list, may be NULL */
    const char *body;           /* request body, may be NULL */
    size_t body_len;
    const char *bearer_token; /* attached as Authorization: Bearer only when the URL's */
    const char *token_origin; /*   origin equals token_origin's origin */
    fs_redirect_policy redirects;
    size_t max_body;        /* cap for a buffered body; 0 = 1 MiB */
    long connect_timeout_s; /* 0 = 10 */
    long timeout_s;         /* 0 = 120 */
    const char *ca_file;    /* extra CA bundle (verification stays on), may be NULL */
    fs_http_sink sink;      /* when set, a 2xx body is streamed here, not buffered */
    void *sink_userdata;
    int64_t range_from; /* > 0: ask for bytes from this offset (Range) */
} fs_http_request;

typedef struct fs_http_header {
    char *name;
    char *value;
} fs_http_header;

typedef struct fs_http_response {
    long status;
    fs_buf body;             /* buffered body (also for non-2xx when streaming) */
    fs_http_header *headers; /* of the final response */
    size_t header_count;
    char *effective_url; /* URL of the final response after redirects */
    int redirects_followed;
    bool token_sent;   /* whether the final request carried the bearer token */
    bool request_sent; /* whether any byte of the last request left this host
                          (false: it never reached the server, safe to repeat) */
    double total_time_s;
    const char *http_version; /* "1.1", "2" */
} fs_http_response;

typedef struct fs_http fs_http;

/* A handle with its own connection cache. `user_agent` is copied (NULL: "fhirsync/VERSION"). */
fs_http *fs_http_new(const char *user_agent);
void fs_http_free(fs_http *http);

/* Perform one request (following redirects as allowed). Fills `resp` (call fs_http_response_clear
 * afterwards in every case). Returns FHIRSYNC_OK whenever an HTTP response arrived, whatever its
 * status: the caller interprets the status. Errors: FHIRSYNC_E_URL (transport rules),
 * FHIRSYNC_E_NETWORK, FHIRSYNC_E_TLS, FHIRSYNC_E_TIMEOUT, FHIRSYNC_E_TOO_LARGE,
 * FHIRSYNC_E_REDIRECT (a loop, too many, or to an origin the policy refuses),
 * FHIRSYNC_E_CANCELLED (the sink returned false, or fhirsync_cancel() was called: transfers in
 * progress stop within about a second). resp->request_sent tells, on failure, whether the request
 * may have reached the server. */
fhirsync_code fs_http_perform(fs_http *http, const fs_http_request *req, fs_http_response *resp,
                              fhirsync_error *err);
void fs_http_response_init(fs_http_response *resp);
void fs_http_response_clear(fs_http_response *resp);
/* A response header (case-insensitive name), borrowed; NULL when absent. */
const char *fs_http_header_get(const fs_http_response *resp, const char *name);

/* A short description of a non-2xx response for error messages: "HTTP 500 from URL: <start of
 * the body, or 'an HTML page'>" into buf. */
void fs_http_describe(const fs_http_response *resp, const char *url, char *buf, size_t size);

#endif
