/* http/policy.h: the transport policy, decided once for every module that talks to a server
 * (discovery, token requests, the REST client, bulk status polls and downloads, the workers'
 * fetch). What an HTTP status means as a library error code, which answers and failures are
 * worth another attempt, how long to wait (Retry-After in every form servers send, exponential
 * backoff, the pacing of status polls), and when a 401 earns one new token.
 *
 * The rules are pure functions of what the caller hands in (no I/O, no clock of their own), so
 * that tests can state them, and the callers keep only their mechanics: the http module cannot
 * reach the auth module, so a caller told to renew the token renews it itself.
 *
 * Thread safety: every function is safe to call from any thread; a fs_http_renewal belongs to
 * one request (or one file) and is not shared. */
#ifndef FS_HTTP_POLICY_H
#define FS_HTTP_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "core/core.h"

struct fs_http_response;

/* ---- what a status means -------------------------------------------------------------------- */

/* Who answered. The statuses of the FHIR server mean what include/fhirsync/common.h documents;
 * the token endpoint's refusals are the authorization server rejecting the token request. */
typedef enum fs_http_peer {
    FS_HTTP_RESOURCE_SERVER = 0,     /* the FHIR server: REST, discovery documents (the SMART
                                        configuration and the CapabilityStatement), bulk status
                                        polls and files, the workers' fetch */
    FS_HTTP_AUTHORIZATION_SERVER = 1 /* the token endpoint */
} fs_http_peer;

/* The error code for a final HTTP status, the one table of the library:
 *   status          resource server              authorization server
 *   2xx             FHIRSYNC_OK                  FHIRSYNC_OK
 *   3xx             FHIRSYNC_E_HTTP              FHIRSYNC_E_PROTOCOL (never redirected)
 *   401             FHIRSYNC_E_UNAUTHORIZED      FHIRSYNC_E_AUTH
 *   403             FHIRSYNC_E_FORBIDDEN         FHIRSYNC_E_AUTH
 *   404, 410        FHIRSYNC_E_NOT_FOUND         FHIRSYNC_E_AUTH
 *   408             FHIRSYNC_E_BAD_REQUEST       FHIRSYNC_E_SERVER (a timeout, not a refusal)
 *   429             FHIRSYNC_E_RATE_LIMITED      FHIRSYNC_E_RATE_LIMITED
 *   other 4xx       FHIRSYNC_E_BAD_REQUEST       FHIRSYNC_E_AUTH (400 invalid_client ...)
 *   5xx             FHIRSYNC_E_SERVER            FHIRSYNC_E_SERVER
 *   anything else   FHIRSYNC_E_HTTP              FHIRSYNC_E_HTTP   (1xx, odd numbers, 0)
 * An unknown peer value reads as the resource server. */
fhirsync_code fs_http_status_code(fs_http_peer peer, long status);

/* ---- what is worth another attempt ---------------------------------------------------------- */

/* Whether a final status is worth sending the request again: 408, 429, 500, 502, 503, 504. A
 * request that is not idempotent (POST, PATCH) is sent again only after a 429 or 503 that
 * carries a Retry-After (retry_after_s >= 0): the server saying it did not process it. */
bool fs_http_retryable_status(long status, bool idempotent, int64_t retry_after_s);

/* Whether a transport failure (the code fs_http_perform or the multi front end returned) is
 * worth another attempt: FHIRSYNC_E_NETWORK and FHIRSYNC_E_TIMEOUT. A request that is not
 * idempotent only when no byte of it left this host (request_sent false). TLS, URL, redirect,
 * size, memory and cancellation failures are final. */
bool fs_http_retryable_failure(fhirsync_code rc, bool idempotent, bool request_sent);

/* ---- Retry-After ---------------------------------------------------------------------------- */

/* How a Retry-After header was written. */
typedef enum fs_http_retry_after_form {
    FS_HTTP_RETRY_AFTER_NONE = 0,    /* not understood */
    FS_HTTP_RETRY_AFTER_DELAY = 1,   /* delay-seconds (RFC 9110 10.2.3) */
    FS_HTTP_RETRY_AFTER_DATE = 2,    /* an HTTP-date */
    FS_HTTP_RETRY_AFTER_EPOCH_S = 3, /* an absolute time in seconds since the epoch */
    FS_HTTP_RETRY_AFTER_EPOCH_MS = 4 /* an absolute time in milliseconds since the epoch */
} fs_http_retry_after_form;

/* Parse a Retry-After value against the wall clock `now` (epoch seconds) into seconds to wait
 * (>= 0; a time in the past is 0, a huge delay saturates and the callers cap it). A number is a
 * delay while it is plausible as one (under 1e9, about 31 years), an absolute time in seconds
 * from 1e9, in milliseconds from 1e11 up to 1e14; larger still is a delay again. Leading blanks
 * and trailing blanks or line ends are allowed. `form` (may be NULL) says which form it was.
 * False, *out_seconds untouched and *form FS_HTTP_RETRY_AFTER_NONE, for anything else (NULL,
 * a sign, other text). */
bool fs_http_retry_after_parse(const char *s, int64_t now, int64_t *out_seconds,
                               fs_http_retry_after_form *form);
/* "seconds", "HTTP-date", "epoch seconds", "epoch milliseconds" or "none" (static). */
const char *fs_http_retry_after_form_name(fs_http_retry_after_form form);
/* The Retry-After header of a response read against `now`: seconds to wait, or -1 when there is
 * none or it is not understood. */
int64_t fs_http_retry_after(const struct fs_http_response *resp, int64_t now);

/* ---- how long to wait ----------------------------------------------------------------------- */

/* Delay before retry number `attempt` (0-based), in ms: the server's Retry-After when given
 * (retry_after_s >= 0), otherwise exponential backoff from 1 s with jitter (fs_backoff_ms);
 * never above cap_s seconds (300 when cap_s <= 0). */
int64_t fs_http_retry_delay_ms(unsigned attempt, int64_t retry_after_s, int64_t cap_s);
/* Delay before status poll number `attempt` (0-based): as fs_http_retry_delay_ms, but never
 * below floor_ms (itself at most the cap), so that "Retry-After: 0" or a date in the past cannot
 * make a client poll in a tight loop. */
int64_t fs_http_poll_delay_ms(unsigned attempt, int64_t retry_after_s, int64_t floor_ms,
                              int64_t cap_s);

/* ---- one new token after a 401 -------------------------------------------------------------- */

/* The renewal state of one request (or one bulk file across its attempts). Zero-initialise. */
typedef struct fs_http_renewal {
    bool renewed; /* the one renewal was spent */
} fs_http_renewal;

/* Whether this answer calls for a new token and one more try: a 401 to a request that carried
 * the token (token_sent: a 401 from a host the token was not sent to is not about the token),
 * once per request. True spends the renewal (state->renewed); the caller then invalidates the
 * token, gets a new one and sends the request again. A later 401 returns false: the caller
 * reports it (FHIRSYNC_E_UNAUTHORIZED, "even with a new token"); state->renewed tells the two
 * cases apart. */
bool fs_http_should_renew(fs_http_renewal *state, long status, bool token_sent);

#endif
