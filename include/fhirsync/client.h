/* fhirsync/client.h: an authenticated FHIR R4 REST client for one endpoint profile: reads,
 * searches that follow Bundle paging one resource at a time, and raw requests. It attaches the
 * token (renewed ahead of expiry; on a 401, renewed once with a fresh assertion and the request
 * retried once), retries 408/429/5xx and network errors with backoff that honours Retry-After,
 * rate-limits itself when the profile says so, and sends the bearer token only to the FHIR
 * server's own origin (scheme, host, port): never to a `next` link or redirect elsewhere, never to
 * URLs found in resources.
 *
 * Thread safety: a client is used by one thread at a time; use one client per thread. */
#ifndef FHIRSYNC_CLIENT_H
#define FHIRSYNC_CLIENT_H

#include <stdbool.h>

#include "fhirsync/common.h"
#include "fhirsync/config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fhirsync_client fhirsync_client;
typedef struct fhirsync_response fhirsync_response;
typedef struct fhirsync_search fhirsync_search;

/* A client for a profile (copied). Fails like fhirsync_auth_new on an incomplete profile or a bad
 * key. No network traffic until the first request. */
FHIRSYNC_API fhirsync_code fhirsync_client_new(const fhirsync_endpoint *ep, fhirsync_client **out,
                                               fhirsync_error *err);
FHIRSYNC_API void fhirsync_client_free(fhirsync_client *client);

/* The outcome of the client's last fallible call (fhirsync_client_get, _request, and
 * fhirsync_search_start, _next of its searches), as described in common.h: its code (FHIRSYNC_OK
 * after a success) and its message (HTTP status, OperationOutcome severity/code/diagnostics, OAuth
 * error; "" after a success), borrowed until the next call on the client. */
FHIRSYNC_API const char *fhirsync_client_errmsg(const fhirsync_client *client);
FHIRSYNC_API fhirsync_code fhirsync_client_errcode(const fhirsync_client *client);

/* GET a path relative to the base ("Patient/123", "Patient?family=smith") or an absolute URL.
 * Returns FHIRSYNC_OK only for a 2xx; otherwise the code of the failure (FHIRSYNC_E_NOT_FOUND,
 * FHIRSYNC_E_FORBIDDEN, FHIRSYNC_E_UNAUTHORIZED, FHIRSYNC_E_SERVER, FHIRSYNC_E_RATE_LIMITED,
 * FHIRSYNC_E_BAD_REQUEST, ...) with fhirsync_client_errmsg() set; *out is then NULL. A 2xx
 * answer that is an HTML page (Content-Type text/html, or a body whose first byte is '<': a
 * "session expired" page served with 200) is FHIRSYNC_E_PROTOCOL. The body is capped by the
 * profile's max_body. */
FHIRSYNC_API fhirsync_code fhirsync_client_get(fhirsync_client *client, const char *path_or_url,
                                               fhirsync_response **out);

/* Any method. `headers` is a NULL-terminated "Name: value" list (may be NULL). Non-idempotent
 * methods (POST) are retried only when the server said to (429/503 with Retry-After) or when the
 * request never reached it. A non-2xx answer is returned in *out with FHIRSYNC_OK when
 * `accept_any_status` is true (the caller interprets it). */
FHIRSYNC_API fhirsync_code fhirsync_client_request(fhirsync_client *client, const char *method,
                                                   const char *path_or_url,
                                                   const char *const *headers, const char *body,
                                                   size_t body_len, bool accept_any_status,
                                                   fhirsync_response **out);

FHIRSYNC_API void fhirsync_response_free(fhirsync_response *resp);
FHIRSYNC_API long fhirsync_response_status(const fhirsync_response *resp);
/* The body (NUL-terminated, borrowed) and its length. */
FHIRSYNC_API const char *fhirsync_response_body(const fhirsync_response *resp, size_t *len);
/* A header of the final response (case-insensitive), borrowed; NULL when absent. */
FHIRSYNC_API const char *fhirsync_response_header(const fhirsync_response *resp, const char *name);
/* The URL that answered (after same-origin redirects). */
FHIRSYNC_API const char *fhirsync_response_url(const fhirsync_response *resp);

/* Start a search ("Observation?patient=123&_count=100", or an absolute URL on the server's
 * origin). The first page is fetched by the first fhirsync_search_next(). */
FHIRSYNC_API fhirsync_code fhirsync_search_start(fhirsync_client *client, const char *query,
                                                 fhirsync_search **out);
/* The next resource of the search, as the exact bytes the server sent for it (a JSON object,
 * not re-serialised). *resource is borrowed until the next call or the free; at the end of the
 * search returns FHIRSYNC_OK with *resource NULL. Follows Bundle.link[next] exactly as given
 * (relative links resolved against the base), one page in memory at a time; a `next` link that
 * repeats, points to another origin, or a malformed Bundle ends the search with
 * FHIRSYNC_E_PROTOCOL. A page must be strict JSON (grammar, UTF-8, no repeated member names in the
 * Bundle's own structure); names repeated inside a resource are passed through as received. Entries
 * with search.mode "outcome" are skipped (and logged). */
FHIRSYNC_API fhirsync_code fhirsync_search_next(fhirsync_search *search, const char **resource,
                                                size_t *len);
/* Pages fetched and resources returned so far; Bundle.total of the first page or -1. */
FHIRSYNC_API size_t fhirsync_search_pages(const fhirsync_search *search);
FHIRSYNC_API size_t fhirsync_search_count(const fhirsync_search *search);
FHIRSYNC_API long fhirsync_search_total(const fhirsync_search *search);
FHIRSYNC_API void fhirsync_search_free(fhirsync_search *search);

#ifdef __cplusplus
}
#endif
#endif
