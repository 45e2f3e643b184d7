/* unit/test_http_policy.c: the transport policy (http/policy.c) as a table a reader can check
 * against include/fhirsync/common.h: the error code of every status class for the FHIR server
 * and for the token endpoint, which statuses and transport failures are sent again (and when a
 * POST may be), every form of Retry-After (delay-seconds, HTTP-date, absolute epochs in seconds
 * and milliseconds, negative, huge, garbage), the delays between retries and between status
 * polls, and the rule that a 401 earns one new token. Pure functions: no server, no clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/core.h"
#include "http/http.h"
#include "http/policy.h"

#define RS FS_HTTP_RESOURCE_SERVER
#define AS FS_HTTP_AUTHORIZATION_SERVER

/* ---- status -> code ------------------------------------------------------------------------- */

typedef struct status_row {
    long status;
    fhirsync_code code;
} status_row;

/* Each row's status, as answered by `peer`, must map to the row's code. */
static void check_rows(fs_http_peer peer, const status_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        fhirsync_code got = fs_http_status_code(peer, rows[i].status);
        if (got != rows[i].code)
            fail_msg("HTTP %ld from the %s: %s, expected %s", rows[i].status,
                     peer == AS ? "token endpoint" : "resource server", fhirsync_strerror(got),
                     fhirsync_strerror(rows[i].code));
    }
}

static void test_status_codes_resource_server(void **state)
{
    (void)state;
    static const status_row rows[] = {
        {200, FHIRSYNC_OK},
        {202, FHIRSYNC_OK},
        {204, FHIRSYNC_OK},
        {206, FHIRSYNC_OK},
        {299, FHIRSYNC_OK},
        {0, FHIRSYNC_E_HTTP},
        {100, FHIRSYNC_E_HTTP},
        {199, FHIRSYNC_E_HTTP},
        {301, FHIRSYNC_E_HTTP},
        {302, FHIRSYNC_E_HTTP},
        {304, FHIRSYNC_E_HTTP},
        {400, FHIRSYNC_E_BAD_REQUEST},
        {401, FHIRSYNC_E_UNAUTHORIZED},
        {402, FHIRSYNC_E_BAD_REQUEST},
        {403, FHIRSYNC_E_FORBIDDEN}, /* discovery answered UNAUTHORIZED here before */
        {404, FHIRSYNC_E_NOT_FOUND},
        {405, FHIRSYNC_E_BAD_REQUEST},
        {408, FHIRSYNC_E_BAD_REQUEST},
        {409, FHIRSYNC_E_BAD_REQUEST},
        {410, FHIRSYNC_E_NOT_FOUND},
        {416, FHIRSYNC_E_BAD_REQUEST},
        {422, FHIRSYNC_E_BAD_REQUEST},
        {429, FHIRSYNC_E_RATE_LIMITED},
        {451, FHIRSYNC_E_BAD_REQUEST},
        {499, FHIRSYNC_E_BAD_REQUEST},
        {500, FHIRSYNC_E_SERVER},
        {501, FHIRSYNC_E_SERVER},
        {502, FHIRSYNC_E_SERVER},
        {503, FHIRSYNC_E_SERVER},
        {504, FHIRSYNC_E_SERVER},
        {599, FHIRSYNC_E_SERVER},
        {600, FHIRSYNC_E_HTTP},
        {999, FHIRSYNC_E_HTTP},
        {-1, FHIRSYNC_E_HTTP},
    };
    check_rows(RS, rows, sizeof rows / sizeof *rows);
    /* an unknown peer reads as the resource server */
    assert_int_equal(fs_http_status_code((fs_http_peer)7, 403), FHIRSYNC_E_FORBIDDEN);
}

static void test_status_codes_authorization_server(void **state)
{
    (void)state;
    static const status_row rows[] = {
        {200, FHIRSYNC_OK},
        {100, FHIRSYNC_E_HTTP},
        {302, FHIRSYNC_E_PROTOCOL}, /* token requests are never redirected */
        {307, FHIRSYNC_E_PROTOCOL},
        {400, FHIRSYNC_E_AUTH}, /* invalid_client, invalid_grant, invalid_scope ... */
        {401, FHIRSYNC_E_AUTH}, /* invalid_client with HTTP authentication */
        {403, FHIRSYNC_E_AUTH},
        {404, FHIRSYNC_E_AUTH},
        {405, FHIRSYNC_E_AUTH},
        {408, FHIRSYNC_E_SERVER}, /* the server timed out: not a refusal */
        {410, FHIRSYNC_E_AUTH},
        {429, FHIRSYNC_E_RATE_LIMITED},
        {499, FHIRSYNC_E_AUTH},
        {500, FHIRSYNC_E_SERVER},
        {501, FHIRSYNC_E_SERVER}, /* was FHIRSYNC_E_AUTH before the one table */
        {503, FHIRSYNC_E_SERVER},
        {599, FHIRSYNC_E_SERVER},
        {600, FHIRSYNC_E_HTTP},
    };
    check_rows(AS, rows, sizeof rows / sizeof *rows);
}

/* ---- what is sent again --------------------------------------------------------------------- */

static void test_retryable(void **state)
{
    (void)state;
    static const long again[] = {408, 429, 500, 502, 503, 504};
    static const long final[] = {0, 200, 202, 302, 400, 401, 403, 404, 410, 416, 501, 505, 599};
    for (size_t i = 0; i < sizeof again / sizeof *again; i++) {
        assert_true(fs_http_retryable_status(again[i], true, -1));
        assert_true(fs_http_retryable_status(again[i], true, 30));
    }
    for (size_t i = 0; i < sizeof final / sizeof *final; i++) {
        assert_false(fs_http_retryable_status(final[i], true, -1));
        assert_false(fs_http_retryable_status(final[i], true, 5));
    }
    /* a POST: only a 429 or 503 that says when to come back */
    assert_true(fs_http_retryable_status(429, false, 0));
    assert_true(fs_http_retryable_status(503, false, 10));
    assert_false(fs_http_retryable_status(429, false, -1));
    assert_false(fs_http_retryable_status(503, false, -1));
    assert_false(fs_http_retryable_status(500, false, 10));
    assert_false(fs_http_retryable_status(502, false, 10));
    assert_false(fs_http_retryable_status(408, false, 10));

    /* transport failures */
    assert_true(fs_http_retryable_failure(FHIRSYNC_E_NETWORK, true, true));
    assert_true(fs_http_retryable_failure(FHIRSYNC_E_TIMEOUT, true, true));
    assert_true(fs_http_retryable_failure(FHIRSYNC_E_NETWORK, false, false));
    assert_false(fs_http_retryable_failure(FHIRSYNC_E_NETWORK, false, true));
    assert_false(fs_http_retryable_failure(FHIRSYNC_E_TIMEOUT, false, true));
    static const fhirsync_code never[] = {
        FHIRSYNC_OK,          FHIRSYNC_E_TLS,   FHIRSYNC_E_URL,       FHIRSYNC_E_REDIRECT,
        FHIRSYNC_E_TOO_LARGE, FHIRSYNC_E_NOMEM, FHIRSYNC_E_CANCELLED, FHIRSYNC_E_SERVER};
    for (size_t i = 0; i < sizeof never / sizeof *never; i++) {
        assert_false(fs_http_retryable_failure(never[i], true, false));
        assert_false(fs_http_retryable_failure(never[i], false, false));
    }
}

/* ---- Retry-After ---------------------------------------------------------------------------- */

static void test_retry_after_forms(void **state)
{
    (void)state;
    int64_t now = 1714557600; /* 2024-05-01T10:00:00Z */
    int64_t s = -1;
    fs_http_retry_after_form form;
    const struct {
        const char *text;
        int64_t now, seconds;
        fs_http_retry_after_form form;
    } good[] = {
        /* delay-seconds, with the blanks servers add */
        {"30", now, 30, FS_HTTP_RETRY_AFTER_DELAY},
        {" 0 ", now, 0, FS_HTTP_RETRY_AFTER_DELAY},
        {"\t120\r\n", now, 120, FS_HTTP_RETRY_AFTER_DELAY},
        /* the largest plausible delay is still a delay */
        {"999999999", now, 999999999, FS_HTTP_RETRY_AFTER_DELAY},
        /* an HTTP-date, ahead and in the past (which means now) */
        {"Wed, 01 May 2024 10:01:00 GMT", now, 60, FS_HTTP_RETRY_AFTER_DATE},
        {"Sun, 06 Nov 1994 08:49:37 GMT", 784111777 - 30, 30, FS_HTTP_RETRY_AFTER_DATE},
        {"Sun, 06 Nov 1994 08:49:37 GMT", now, 0, FS_HTTP_RETRY_AFTER_DATE},
        /* an absolute epoch in seconds: a time, 45 s from now, not a delay of 54 years */
        {"1714557645", now, 45, FS_HTTP_RETRY_AFTER_EPOCH_S},
        {"1714557000", now, 0, FS_HTTP_RETRY_AFTER_EPOCH_S}, /* in the past: now */
        /* in milliseconds, rounded up to whole seconds */
        {"1714557645000", now, 45, FS_HTTP_RETRY_AFTER_EPOCH_MS},
        {"1714557600001", now, 1, FS_HTTP_RETRY_AFTER_EPOCH_MS},
        {"1714557599999", now, 0, FS_HTTP_RETRY_AFTER_EPOCH_MS},
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        s = -1;
        form = FS_HTTP_RETRY_AFTER_NONE;
        if (!fs_http_retry_after_parse(good[i].text, good[i].now, &s, &form))
            fail_msg("Retry-After \"%s\" not understood", good[i].text);
        if (s != good[i].seconds || form != good[i].form)
            fail_msg("Retry-After \"%s\": %lld s (%s), expected %lld s (%s)", good[i].text,
                     (long long)s, fs_http_retry_after_form_name(form), (long long)good[i].seconds,
                     fs_http_retry_after_form_name(good[i].form));
    }
    assert_true(fs_http_retry_after_parse("30", now, &s, NULL)); /* the form is optional */
    assert_int_equal(s, 30);
    /* huge: beyond milliseconds no clock means that; a delay, saturated, that callers cap */
    assert_true(fs_http_retry_after_parse("1714557645000000", now, &s, &form));
    assert_int_equal(form, FS_HTTP_RETRY_AFTER_DELAY);
    assert_true(s > 86400);
    assert_true(fs_http_retry_after_parse("99999999999999999999999999999", now, &s, &form));
    assert_int_equal(form, FS_HTTP_RETRY_AFTER_DELAY);
    assert_true(s > 0);
    assert_int_equal(fs_http_retry_delay_ms(0, s, 300), 300000); /* ... and the cap holds */
    /* negative and garbage: not understood, the value untouched */
    static const char *const bad[] = {"-5",
                                      "-0",
                                      "+5",
                                      "12abc",
                                      "1.5",
                                      "soon",
                                      "",
                                      "  ",
                                      "in a minute",
                                      "0x10",
                                      "5 s",
                                      "Wed, 31 Feb 2024 10:00:00 GMT",
                                      "Wed, 01 May 2024 10:00:00 PST"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        s = 4242;
        form = FS_HTTP_RETRY_AFTER_DATE;
        if (fs_http_retry_after_parse(bad[i], now, &s, &form))
            fail_msg("Retry-After \"%s\" was understood as %lld s", bad[i], (long long)s);
        assert_int_equal(s, 4242);
        assert_int_equal(form, FS_HTTP_RETRY_AFTER_NONE);
    }
    assert_false(fs_http_retry_after_parse(NULL, now, &s, NULL));
    assert_string_equal(fs_http_retry_after_form_name(FS_HTTP_RETRY_AFTER_DELAY), "seconds");
    assert_string_equal(fs_http_retry_after_form_name(FS_HTTP_RETRY_AFTER_DATE), "HTTP-date");
    assert_string_equal(fs_http_retry_after_form_name(FS_HTTP_RETRY_AFTER_EPOCH_S),
                        "epoch seconds");
    assert_string_equal(fs_http_retry_after_form_name(FS_HTTP_RETRY_AFTER_EPOCH_MS),
                        "epoch milliseconds");
    assert_string_equal(fs_http_retry_after_form_name(FS_HTTP_RETRY_AFTER_NONE), "none");
}

/* The header of a response, as the callers read it. */
static void test_retry_after_of_response(void **state)
{
    (void)state;
    char name[] = "retry-after", value[] = "Wed, 01 May 2024 10:00:10 GMT";
    char other_name[] = "Content-Type", other_value[] = "application/json";
    fs_http_header headers[] = {{other_name, other_value}, {name, value}};
    fs_http_response resp;
    fs_http_response_init(&resp);
    resp.status = 503;
    assert_int_equal(fs_http_retry_after(&resp, 1714557600), -1); /* no headers */
    resp.headers = headers;
    resp.header_count = 1;
    assert_int_equal(fs_http_retry_after(&resp, 1714557600), -1); /* not this header */
    resp.header_count = 2;
    assert_int_equal(fs_http_retry_after(&resp, 1714557600), 10); /* case-insensitive name */
    char garbage[] = "later";
    headers[1].value = garbage;
    assert_int_equal(fs_http_retry_after(&resp, 1714557600), -1);
    char negative[] = "-30";
    headers[1].value = negative;
    assert_int_equal(fs_http_retry_after(&resp, 1714557600), -1);
}

/* ---- delays --------------------------------------------------------------------------------- */

static void test_delays(void **state)
{
    (void)state;
    /* the server's Retry-After, capped by retry_cap (300 s when unset) */
    assert_int_equal(fs_http_retry_delay_ms(0, 7, 300), 7000);
    assert_int_equal(fs_http_retry_delay_ms(5, 0, 300), 0);
    assert_int_equal(fs_http_retry_delay_ms(3, 100000, 300), 300000);
    assert_int_equal(fs_http_retry_delay_ms(3, 100000, 0), 300000);
    assert_int_equal(fs_http_retry_delay_ms(3, 100000, 20), 20000);
    /* otherwise backoff from 1 s, doubling, with jitter in [base/2, base], under the cap */
    for (unsigned a = 0; a < 40; a++) {
        int64_t d = fs_http_retry_delay_ms(a, -1, 60);
        int64_t base = a >= 6 ? 60000 : 1000LL << a;
        if (base > 60000)
            base = 60000;
        assert_true(d >= base / 2 && d <= base);
    }
    /* status polls: a floor whatever the server says, the cap above it */
    assert_int_equal(fs_http_poll_delay_ms(0, 0, 1000, 300), 1000);
    assert_int_equal(fs_http_poll_delay_ms(0, 7, 1000, 300), 7000);
    assert_int_equal(fs_http_poll_delay_ms(0, 100000, 1000, 300), 300000);
    assert_int_equal(fs_http_poll_delay_ms(0, 0, 9000000, 2), 2000); /* floor under the cap */
    assert_int_equal(fs_http_poll_delay_ms(0, 0, -5, 300), 0);       /* a negative floor is 0 */
    assert_int_equal(fs_http_poll_delay_ms(0, 100000, 1000, 0), 300000);
    for (unsigned a = 0; a < 20; a++)
        assert_true(fs_http_poll_delay_ms(a, -1, 1000, 60) >= 1000);
}

/* ---- renew once ----------------------------------------------------------------------------- */

static void test_renew_once(void **state)
{
    (void)state;
    fs_http_renewal r = {0};
    /* not a 401, or a 401 from a host the token was not sent to: no renewal, nothing spent */
    assert_false(fs_http_should_renew(&r, 200, true));
    assert_false(fs_http_should_renew(&r, 403, true));
    assert_false(fs_http_should_renew(&r, 500, true));
    assert_false(fs_http_should_renew(&r, 401, false));
    assert_false(r.renewed);
    /* the first 401 that carried the token: renew */
    assert_true(fs_http_should_renew(&r, 401, true));
    assert_true(r.renewed);
    /* the second: report it */
    assert_false(fs_http_should_renew(&r, 401, true));
    assert_false(fs_http_should_renew(&r, 401, true));
    assert_true(r.renewed);
    /* each request (or attempt) has its own */
    fs_http_renewal other = {0};
    assert_true(fs_http_should_renew(&other, 401, true));
}

int main(void)
{
    fhirsync_global_init(); /* the random numbers of the jitter */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_codes_resource_server),
        cmocka_unit_test(test_status_codes_authorization_server),
        cmocka_unit_test(test_retryable),
        cmocka_unit_test(test_retry_after_forms),
        cmocka_unit_test(test_retry_after_of_response),
        cmocka_unit_test(test_delays),
        cmocka_unit_test(test_renew_once),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    fhirsync_global_cleanup();
    return rc;
}
