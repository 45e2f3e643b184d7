/* http/multi.h: parallel streaming downloads on libcurl's multi interface, for bulk export
 * files. It is the only other place besides http.c that calls libcurl, and it keeps the same
 * transport rules: TLS verification always on; plain http only to loopback hosts; redirects
 * followed here hop by hop (never by libcurl), each hop checked against the transport rules and
 * the redirect policy, with the bearer token attached per hop only when the hop's origin is the
 * token's origin (so a 307 to storage is followed without it); buffered bodies capped; debug
 * output only through the redaction path.
 *
 * Transfers run concurrently in the calling thread: add them, then call fs_multi_poll() in a
 * loop; each finished transfer comes back once. HTTP/2 connections are multiplexed when the
 * server offers them; HTTP/1.1 connections are reused between transfers.
 *
 * Not thread-safe: one fs_multi per thread (but for fs_multi_wakeup). */
#ifndef FS_HTTP_MULTI_H
#define FS_HTTP_MULTI_H

#include "http/http.h"

typedef struct fs_multi fs_multi;

/* Called once for the final response of a transfer (not for redirects being followed, not for
 * 1xx), when its headers are complete and before any of its body reaches the sink: `resp` holds
 * the status, the headers and the URL that answered (effective_url) and whether the token went
 * there (token_sent). Return false to abort the transfer (it then finishes with
 * FHIRSYNC_E_CANCELLED). */
typedef bool (*fs_multi_response_cb)(void *userdata, const fs_http_response *resp);

typedef struct fs_multi_request {
    const char *url;
    const char *const *headers; /* NULL-terminated "Name: value" lines, may be NULL */
    const char *bearer_token;   /* attached only on hops whose origin is token_origin's */
    const char *token_origin;
    fs_redirect_policy redirects;
    int64_t range_from;     /* > 0: "Range: bytes=N-" (the answer may be 206 or 200) */
    bool identity;          /* no Accept-Encoding (a Range applies to the encoded bytes) */
    long connect_timeout_s; /* 0: 10 */
    long stall_timeout_s;   /* abort when fewer than stall_bytes_per_s bytes a second
                               arrived for this long; 0: 120 */
    long stall_bytes_per_s; /* the speed below which a transfer stalls; 0: 1 (abort only
                               when no byte arrives) */
    const char *ca_file;    /* extra CA bundle (verification stays on), may be NULL */
    size_t max_body;        /* cap of a buffered body (non-2xx, or 2xx without a sink);
                               0: 64 KiB. Beyond it the body is cut, not an error */
    fs_multi_response_cb on_response; /* may be NULL */
    fs_http_sink sink;                /* the 2xx body of the final response; NULL: buffered */
    void *userdata;                   /* handed to on_response and sink, and returned when done */
} fs_multi_request;

/* A finished transfer. */
typedef struct fs_multi_done {
    void *userdata;
    fhirsync_code code; /* FHIRSYNC_OK when a final HTTP response arrived whole,
                           whatever its status; else the transport error (err) */
    fhirsync_error err;
    fs_http_response resp; /* the caller's: fs_http_response_clear() it */
    uint64_t body_bytes;   /* body bytes of the final response (after decoding) */
} fs_multi_done;

/* A new engine. `user_agent` is copied (NULL: "fhirsync/VERSION"). NULL on out of memory. */
fs_multi *fs_multi_new(const char *user_agent);
/* Abort every transfer still running and free everything. NULL is a no-op. */
void fs_multi_free(fs_multi *m);

/* Start a transfer (every string is copied; the token is wiped when freed). FHIRSYNC_E_URL when
 * the URL breaks the transport rules, FHIRSYNC_E_NOMEM. */
fhirsync_code fs_multi_add(fs_multi *m, const fs_multi_request *req, fhirsync_error *err);
/* Transfers added and not yet returned by fs_multi_poll(). */
size_t fs_multi_pending(const fs_multi *m);

/* Drive the transfers, waiting once for network activity (or fs_multi_wakeup) for at most
 * timeout_ms (>= 0). Returns true with *done filled (the caller's) when a transfer finished,
 * false otherwise (also before timeout_ms has passed: call it in a loop). */
bool fs_multi_poll(fs_multi *m, int timeout_ms, fs_multi_done *done);

/* Make a fs_multi_poll() that is waiting (or the next one) return at once. The one function
 * here that may be called from another thread. */
void fs_multi_wakeup(fs_multi *m);

/* Abort the transfer of `userdata` if it is still running (it is then not returned by
 * fs_multi_poll). Returns whether one was found. */
bool fs_multi_abort(fs_multi *m, void *userdata);

#endif
