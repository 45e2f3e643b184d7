/* http/policy.c: the transport policy (see policy.h): the one table from HTTP statuses to error
 * codes, what is worth another attempt, Retry-After, the delays between attempts and between
 * status polls, and the rule that a 401 earns one new token. One place, so that a server's
 * answer means the same thing to every caller: discovery, token requests, the REST client, bulk
 * polls and downloads, the workers' fetch.
 *
 * Retry-After (RFC 9110 section 10.2.3) is delay-seconds or an HTTP-date. Servers in the wild
 * also send an absolute time as a number: seconds or milliseconds since the epoch. A number is
 * read as a delay while it is plausible as one (under RA_EPOCH_S_MIN, about 31 years); above
 * that it is an absolute time in seconds, and from RA_EPOCH_MS_MIN on (1e11: year 5138 in
 * seconds, 1973 in milliseconds) in milliseconds. An absolute time in the past means "now". */
#include <ctype.h>

#include "http/http.h"
#include "http/policy.h"

#define RA_EPOCH_S_MIN 1000000000LL       /* 2001-09-09 as seconds; 31.7 years as a delay */
#define RA_EPOCH_MS_MIN 100000000000LL    /* 1973 as milliseconds */
#define RA_EPOCH_MS_MAX 100000000000000LL /* year 5138 as milliseconds */

#define DEFAULT_CAP_S 300

/* ---- what a status means -------------------------------------------------------------------- */

/* First matching row wins; a status no row covers is FHIRSYNC_E_HTTP for both peers. */
static const struct status_row {
    long lo, hi;
    fhirsync_code resource;      /* FS_HTTP_RESOURCE_SERVER */
    fhirsync_code authorization; /* FS_HTTP_AUTHORIZATION_SERVER */
} status_table[] = {
    {200, 299, FHIRSYNC_OK, FHIRSYNC_OK},
    {300, 399, FHIRSYNC_E_HTTP, FHIRSYNC_E_PROTOCOL},
    {401, 401, FHIRSYNC_E_UNAUTHORIZED, FHIRSYNC_E_AUTH},
    {403, 403, FHIRSYNC_E_FORBIDDEN, FHIRSYNC_E_AUTH},
    {404, 404, FHIRSYNC_E_NOT_FOUND, FHIRSYNC_E_AUTH},
    {408, 408, FHIRSYNC_E_BAD_REQUEST, FHIRSYNC_E_SERVER},
    {410, 410, FHIRSYNC_E_NOT_FOUND, FHIRSYNC_E_AUTH},
    {429, 429, FHIRSYNC_E_RATE_LIMITED, FHIRSYNC_E_RATE_LIMITED},
    {400, 499, FHIRSYNC_E_BAD_REQUEST, FHIRSYNC_E_AUTH},
    {500, 599, FHIRSYNC_E_SERVER, FHIRSYNC_E_SERVER},
};

fhirsync_code fs_http_status_code(fs_http_peer peer, long status)
{
    for (size_t i = 0; i < sizeof status_table / sizeof *status_table; i++) {
        const struct status_row *row = &status_table[i];
        if (status >= row->lo && status <= row->hi)
            return peer == FS_HTTP_AUTHORIZATION_SERVER ? row->authorization : row->resource;
    }
    return FHIRSYNC_E_HTTP;
}

/* ---- what is worth another attempt ---------------------------------------------------------- */

bool fs_http_retryable_status(long status, bool idempotent, int64_t retry_after_s)
{
    bool transient = status == 408 || status == 429 || status == 500 || status == 502 ||
                     status == 503 || status == 504;
    if (!transient)
        return false;
    /* a POST may have been processed: only the server saying "not now, later" makes it safe */
    return idempotent || ((status == 429 || status == 503) && retry_after_s >= 0);
}

bool fs_http_retryable_failure(fhirsync_code rc, bool idempotent, bool request_sent)
{
    if (rc != FHIRSYNC_E_NETWORK && rc != FHIRSYNC_E_TIMEOUT)
        return false;
    return idempotent || !request_sent;
}

/* ---- Retry-After ---------------------------------------------------------------------------- */

const char *fs_http_retry_after_form_name(fs_http_retry_after_form form)
{
    switch (form) {
    case FS_HTTP_RETRY_AFTER_DELAY: return "seconds";
    case FS_HTTP_RETRY_AFTER_DATE: return "HTTP-date";
    case FS_HTTP_RETRY_AFTER_EPOCH_S: return "epoch seconds";
    case FS_HTTP_RETRY_AFTER_EPOCH_MS: return "epoch milliseconds";
    case FS_HTTP_RETRY_AFTER_NONE: break;
    }
    return "none";
}

bool fs_http_retry_after_parse(const char *s, int64_t now, int64_t *out_seconds,
                               fs_http_retry_after_form *form)
{
    if (form)
        *form = FS_HTTP_RETRY_AFTER_NONE;
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
        fs_http_retry_after_form f = FS_HTTP_RETRY_AFTER_DELAY;
        if (v >= RA_EPOCH_S_MIN && v < RA_EPOCH_MS_MIN) {
            f = FS_HTTP_RETRY_AFTER_EPOCH_S;
            v = v > now ? v - now : 0;
        } else if (v >= RA_EPOCH_MS_MIN && v < RA_EPOCH_MS_MAX) {
            f = FS_HTTP_RETRY_AFTER_EPOCH_MS;
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
        *form = FS_HTTP_RETRY_AFTER_DATE;
    return true;
}

int64_t fs_http_retry_after(const fs_http_response *resp, int64_t now)
{
    int64_t seconds = -1;
    if (!fs_http_retry_after_parse(fs_http_header_get(resp, "Retry-After"), now, &seconds, NULL))
        return -1;
    return seconds;
}

/* ---- how long to wait ----------------------------------------------------------------------- */

int64_t fs_http_retry_delay_ms(unsigned attempt, int64_t retry_after_s, int64_t cap_s)
{
    int64_t cap_ms = (cap_s > 0 ? cap_s : DEFAULT_CAP_S) * 1000;
    if (retry_after_s >= 0)
        return retry_after_s > cap_ms / 1000 ? cap_ms : retry_after_s * 1000;
    return fs_backoff_ms(attempt, cap_ms);
}

int64_t fs_http_poll_delay_ms(unsigned attempt, int64_t retry_after_s, int64_t floor_ms,
                              int64_t cap_s)
{
    if (cap_s <= 0)
        cap_s = DEFAULT_CAP_S;
    if (floor_ms < 0)
        floor_ms = 0;
    if (floor_ms > cap_s * 1000)
        floor_ms = cap_s * 1000;
    int64_t ms = fs_http_retry_delay_ms(attempt, retry_after_s, cap_s);
    return ms < floor_ms ? floor_ms : ms;
}

/* ---- one new token after a 401 -------------------------------------------------------------- */

bool fs_http_should_renew(fs_http_renewal *state, long status, bool token_sent)
{
    if (status != 401 || !token_sent || state->renewed)
        return false;
    state->renewed = true;
    return true;
}
