/* core/retry.c: the transport policy every module that retries shares (token requests, FHIR
 * requests, bulk status polls and downloads): which HTTP statuses are worth another attempt, how
 * a Retry-After header is read, backoff delays, the pacing of status polls, and an interruptible
 * sleep. One place, so that a server's answer means the same thing to every caller.
 *
 * Retry-After (RFC 9110 section 10.2.3) is delay-seconds or an HTTP-date. Servers in the wild
 * also send an absolute time as a number: seconds or milliseconds since the epoch. A number is
 * read as a delay while it is plausible as one (under RA_EPOCH_S_MIN, about 31 years); above
 * that it is an absolute time in seconds, and from RA_EPOCH_MS_MIN on (1e11: year 5138 in
 * seconds, 1973 in milliseconds) in milliseconds. An absolute time in the past means "now". */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>

#include "core/core.h"

#define RA_EPOCH_S_MIN 1000000000LL       /* 2001-09-09 as seconds; 31.7 years as a delay */
#define RA_EPOCH_MS_MIN 100000000000LL    /* 1973 as milliseconds */
#define RA_EPOCH_MS_MAX 100000000000000LL /* year 5138 as milliseconds */

static volatile sig_atomic_t cancel_flag;

void fhirsync_cancel(void)
{
    cancel_flag = 1;
}

void fhirsync_cancel_reset(void)
{
    cancel_flag = 0;
}

bool fs_cancel_requested(void)
{
    return cancel_flag != 0;
}

/* ---- what is worth another attempt ---------------------------------------------------------- */

bool fs_retryable_status(long status)
{
    return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 ||
           status == 504;
}

/* ---- Retry-After ---------------------------------------------------------------------------- */

const char *fs_retry_after_form_name(fs_retry_after_form form)
{
    switch (form) {
    case FS_RETRY_AFTER_DELAY: return "seconds";
    case FS_RETRY_AFTER_DATE: return "HTTP-date";
    case FS_RETRY_AFTER_EPOCH_S: return "epoch seconds";
    case FS_RETRY_AFTER_EPOCH_MS: return "epoch milliseconds";
    case FS_RETRY_AFTER_NONE: break;
    }
    return "none";
}

bool fs_retry_after_parse(const char *s, int64_t now, int64_t *out_seconds,
                          fs_retry_after_form *form)
{
    if (form)
        *form = FS_RETRY_AFTER_NONE;
    if (!s)
        return false;
    while (*s == ' ' || *s == '\t')
        s++;
    if (isdigit((unsigned char)*s)) {
        int64_t v = 0;
        const char *p = s;
        while (isdigit((unsigned char)*p)) {
            if (v > INT64_MAX / 10 - 10)
                v = INT64_MAX / 10 - 10; /* saturate: callers cap it anyway */
            else
                v = v * 10 + (*p - '0');
            p++;
        }
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        if (*p)
            return false;
        fs_retry_after_form f = FS_RETRY_AFTER_DELAY;
        if (v >= RA_EPOCH_S_MIN && v < RA_EPOCH_MS_MIN) {
            f = FS_RETRY_AFTER_EPOCH_S;
            v = v > now ? v - now : 0;
        } else if (v >= RA_EPOCH_MS_MIN && v < RA_EPOCH_MS_MAX) {
            f = FS_RETRY_AFTER_EPOCH_MS;
            int64_t ms_now = now * 1000;
            v = v > ms_now ? (v - ms_now + 999) / 1000 : 0;
        } /* larger still: no clock means that; a delay, saturated, that callers cap */
        *out_seconds = v;
        if (form)
            *form = f;
        return true;
    }
    int64_t when;
    if (!fs_parse_http_date(s, &when))
        return false;
    *out_seconds = when > now ? when - now : 0;
    if (form)
        *form = FS_RETRY_AFTER_DATE;
    return true;
}

bool fs_parse_retry_after(const char *s, int64_t now, int64_t *out_seconds)
{
    return fs_retry_after_parse(s, now, out_seconds, NULL);
}

/* ---- delays --------------------------------------------------------------------------------- */

int64_t fs_backoff_ms(unsigned attempt, int64_t retry_after_s, int64_t cap_s)
{
    int64_t cap_ms = (cap_s > 0 ? cap_s : 300) * 1000;
    if (retry_after_s >= 0) {
        int64_t ms = retry_after_s > cap_ms / 1000 ? cap_ms : retry_after_s * 1000;
        return ms;
    }
    int64_t base = 1000;
    for (unsigned i = 0; i < attempt && base < cap_ms; i++)
        base *= 2;
    if (base > cap_ms)
        base = cap_ms;
    /* full jitter in [base/2, base] keeps clients from retrying in lockstep */
    unsigned char r[2];
    unsigned jitter = fs_random_bytes(r, sizeof r) ? (unsigned)(r[0] << 8 | r[1]) : 32768u;
    return base / 2 + (int64_t)((base / 2) * (int64_t)jitter / 65535);
}

int64_t fs_poll_delay_ms(unsigned attempt, int64_t retry_after_s, int64_t floor_ms, int64_t cap_s)
{
    if (cap_s <= 0)
        cap_s = 300;
    if (floor_ms < 0)
        floor_ms = 0;
    if (floor_ms > cap_s * 1000)
        floor_ms = cap_s * 1000;
    int64_t ms = fs_backoff_ms(attempt, retry_after_s, cap_s);
    return ms < floor_ms ? floor_ms : ms;
}

bool fs_sleep_ms(int64_t ms)
{
    while (ms > 0) {
        if (fs_cancel_requested())
            return false;
        int64_t step = ms > 100 ? 100 : ms;
        struct timespec ts = {.tv_sec = step / 1000, .tv_nsec = (step % 1000) * 1000000};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
            if (fs_cancel_requested())
                return false;
        }
        ms -= step;
    }
    return !fs_cancel_requested();
}
