/* http/ratelimit.h: the client-side rate limiter. Some EHRs cap the requests of an app per
 * practice (eClinicalWorks: 250 per minute, token requests included) and answer 429 until the
 * next minute once the cap is hit; pacing ourselves is cheaper than being refused. Every request
 * to an endpoint, FHIR and token alike, takes one slot from a token bucket shared by the whole
 * process and keyed by the full FHIR base URL and the client id, so that several clients and
 * threads talking to the same endpoint share one budget. The full URL, not just its origin:
 * eClinicalWorks serves every practice from one host and names the practice in the path
 * (https://fhir4.eclinicalworks.com/fhir/r4/{PRACTICE}), each with its own cap. A token request
 * is keyed by the base URL of the endpoint it is for, not by the token URL, so that it counts
 * against that practice's bucket.
 *
 * The bucket holds one slot (no burst): requests are spaced evenly at 60/rate seconds, which
 * guarantees that no window of 60 seconds, aligned to the minute or not, sees more than `rate`
 * requests. A burst allowance would let a client exceed a fixed-window cap right after a window
 * boundary.
 *
 * Thread safety: the registry is protected by a mutex; waiting happens outside it. */
#ifndef FS_RATELIMIT_H
#define FS_RATELIMIT_H

#include <stdint.h>

#include "core/core.h"

/* ---- the bucket (pure arithmetic, for tests with a fake clock) ------------------------------- */

typedef struct fs_token_bucket {
    double tokens;   /* may go negative: slots reserved by callers that are still waiting */
    double capacity; /* the most slots that can accumulate (the burst), >= 1 */
    double per_ms;   /* refill rate, slots per millisecond */
    int64_t last_ms; /* clock of the last refill */
} fs_token_bucket;

/* A full bucket for `per_minute` requests (> 0) with `burst` slots (values below 1 mean 1). */
void fs_token_bucket_init(fs_token_bucket *b, long per_minute, double burst, int64_t now_ms);
/* Change the rate of an existing bucket, keeping what it holds (capped by the burst). */
void fs_token_bucket_set_rate(fs_token_bucket *b, long per_minute, double burst, int64_t now_ms);
/* Reserve one slot at time `now_ms` (a monotonic clock that never goes backwards for this
 * bucket; an earlier value is treated as `last_ms`). Returns how many milliseconds the caller
 * must wait before sending (0: at once). The slot is taken whatever the wait, so concurrent
 * callers queue in the order they reserved. */
int64_t fs_token_bucket_take(fs_token_bucket *b, int64_t now_ms);

/* ---- the process-wide registry --------------------------------------------------------------- */

/* Wait for a request slot of the endpoint (`base_url`, the FHIR base, and `client_id`) at
 * `per_minute` requests per minute; a no-op returning FHIRSYNC_OK when per_minute <= 0 (the
 * limiter is off). Base URLs that differ only in the case of scheme or host, an explicit default
 * port, trailing slashes, a query or a fragment are the same endpoint; the path is compared as
 * written. A base URL without an origin is keyed by its text. Waits longer than one second are
 * logged at info. FHIRSYNC_E_CANCELLED (err filled) when fhirsync_cancel() interrupts the wait;
 * FHIRSYNC_E_NOMEM when a new endpoint's bucket cannot be allocated. Thread-safe. */
fhirsync_code fs_ratelimit_acquire(const char *base_url, const char *client_id, long per_minute,
                                   fhirsync_error *err);

/* Test seam: the clock of the registry in milliseconds (NULL restores fs_monotonic_ms), and a
 * sleeper (NULL restores fs_sleep_ms), so that tests check waits without sleeping. */
void fs_ratelimit_set_clock(int64_t (*now_ms)(void), bool (*sleep_ms)(int64_t ms));
/* Forget every endpoint's bucket (tests, library cleanup). Thread-safe. */
void fs_ratelimit_reset(void);

#endif
