/* core/time.c: clocks and the date formats the protocols use: HTTP-date (RFC 9110 section 5.6.7,
 * all three forms a recipient must accept) and FHIR instants. Retry-After, which uses HTTP-dates,
 * is read in retry.c (the transport policy). Parsing is by hand, independent of the locale and of
 * strptime's leniency. */
#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/core.h"

static _Atomic int64_t clock_offset;

int64_t fs_now(void)
{
    return (int64_t)time(NULL) + atomic_load(&clock_offset);
}

void fs_time_set_offset(int64_t seconds)
{
    atomic_store(&clock_offset, seconds);
}

int64_t fs_monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
static const char *const wdays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};

int64_t fs_days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static bool valid_fields(int y, int mon, int d, int h, int mi, int s)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return y >= 1 && y <= 9999 && mon >= 1 && mon <= 12 && d >= 1 && d <= mdays[mon - 1] &&
           h >= 0 && h <= 23 && mi >= 0 && mi <= 59 && s >= 0 && s <= 60;
}

static int64_t to_epoch(int y, int mon, int d, int h, int mi, int s)
{
    return fs_days_from_civil(y, mon, d) * 86400 + h * 3600 + mi * 60 + s;
}

/* Whether `text` starts with `prefix`; never reads past text's terminator. */
static bool has_prefix(const char *text, const char *prefix)
{
    while (*prefix)
        if (*text++ != *prefix++)
            return false;
    return true;
}

static int month_index(const char *p)
{
    for (int i = 0; i < 12; i++)
        if (has_prefix(p, months[i]))
            return i + 1;
    return 0;
}

static bool weekday(const char *p)
{
    for (int i = 0; i < 7; i++)
        if (has_prefix(p, wdays[i]))
            return true;
    return false;
}

/* read exactly n digits */
static bool digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return false;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return true;
}

static bool lit(const char **p, const char *s)
{
    if (!has_prefix(*p, s))
        return false;
    *p += strlen(s);
    return true;
}

static bool hms(const char **p, int *h, int *mi, int *s)
{
    return digits(p, 2, h) && lit(p, ":") && digits(p, 2, mi) && lit(p, ":") && digits(p, 2, s);
}

bool fs_parse_http_date(const char *s, int64_t *out_epoch)
{
    if (!s)
        return false;
    while (*s == ' ')
        s++;
    const char *p = s;
    int y = 0, mon = 0, d = 0, h = 0, mi = 0, sec = 0;
    const char *comma = strchr(s, ',');
    if (comma && comma - s == 3) {
        /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
        p = comma + 1;
        if (!lit(&p, " ") || !digits(&p, 2, &d) || !lit(&p, " "))
            return false;
        if (!(mon = month_index(p)))
            return false;
        p += 3;
        if (!lit(&p, " ") || !digits(&p, 4, &y) || !lit(&p, " ") || !hms(&p, &h, &mi, &sec) ||
            !lit(&p, " GMT"))
            return false;
    } else if (comma) {
        /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT */
        p = comma + 1;
        int yy = 0;
        if (!lit(&p, " ") || !digits(&p, 2, &d) || !lit(&p, "-"))
            return false;
        if (!(mon = month_index(p)))
            return false;
        p += 3;
        if (!lit(&p, "-") || !digits(&p, 2, &yy) || !lit(&p, " ") || !hms(&p, &h, &mi, &sec) ||
            !lit(&p, " GMT"))
            return false;
        y = yy < 70 ? 2000 + yy : 1900 + yy;
    } else {
        /* asctime: Sun Nov  6 08:49:37 1994 */
        if (!weekday(p))
            return false;
        p += 3;
        if (!lit(&p, " "))
            return false;
        if (!(mon = month_index(p)))
            return false;
        p += 3;
        if (!lit(&p, " "))
            return false;
        if (*p == ' ') {
            p++;
            if (!digits(&p, 1, &d))
                return false;
        } else if (!digits(&p, 2, &d)) {
            return false;
        }
        if (!lit(&p, " ") || !hms(&p, &h, &mi, &sec) || !lit(&p, " ") || !digits(&p, 4, &y))
            return false;
    }
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    if (*p || !valid_fields(y, mon, d, h, mi, sec))
        return false;
    *out_epoch = to_epoch(y, mon, d, h, mi, sec);
    return true;
}

bool fs_parse_instant(const char *s, int64_t *out_epoch)
{
    if (!s)
        return false;
    const char *p = s;
    int y, mon, d, h, mi, sec;
    if (!digits(&p, 4, &y) || !lit(&p, "-") || !digits(&p, 2, &mon) || !lit(&p, "-") ||
        !digits(&p, 2, &d) || !lit(&p, "T") || !hms(&p, &h, &mi, &sec))
        return false;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return false;
        while (isdigit((unsigned char)*p))
            p++;
    }
    int64_t offset = 0;
    if (*p == 'Z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, oh, om;
        p++;
        if (!digits(&p, 2, &oh) || !lit(&p, ":") || !digits(&p, 2, &om) || oh > 14 || om > 59)
            return false;
        offset = sign * (oh * 3600 + om * 60);
    } else {
        return false;
    }
    if (*p || !valid_fields(y, mon, d, h, mi, sec))
        return false;
    *out_epoch = to_epoch(y, mon, d, h, mi, sec) - offset;
    return true;
}

void fs_format_instant(int64_t epoch, char *buf, size_t size)
{
    time_t t = (time_t)epoch;
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

void fs_format_http_date(int64_t epoch, char *buf, size_t size)
{
    time_t t = (time_t)epoch;
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(buf, size, "%s, %02d %s %04d %02d:%02d:%02d GMT", wdays[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}
