/* unit/test_fhir.c: the FHIR REST client's offline parts: the JSON span scanner (exact bytes of
 * entry resources, grammar checks), Bundle page parsing, OperationOutcome messages, the status to
 * error-code mapping, the token-bucket rate limiter (with a fake clock and a fake sleeper: no
 * timing in the assertions), the origin rule for absolute URLs, and which failed requests are
 * sent again (a local socket that hangs up; a closed port). Requests against a server are
 * covered by tests/integration/test_rest_client.sh with the sandbox. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "fhir/fhir_internal.h"
#include "fhirsync/keys.h"
#include "http/ratelimit.h"

#define S(x) x, strlen(x)

/* The text of a span. */
static char *span_text(const char *json, fs_span span)
{
    char *copy = malloc(span.len + 1);
    assert_non_null(copy);
    memcpy(copy, json + span.start, span.len);
    copy[span.len] = '\0';
    return copy;
}

static void assert_span(const char *json, fs_span span, const char *want)
{
    char *got = span_text(json, span);
    assert_string_equal(got, want);
    free(got);
}

/* ---- the span scanner ------------------------------------------------------------------------ */

static void test_span_resources_exact(void **state)
{
    (void)state;
    /* decimals keep their precision and spelling; nested objects, strings holding quotes,
     * braces, brackets and escapes do not confuse the scanner; member order is kept */
    const char *r0 = "{\"resourceType\":\"Observation\",\"id\":\"o1\",\"valueQuantity\":"
                     "{\"value\":1.50,\"unit\":\"mg\"},\"component\":[{\"v\":1.000e+2},"
                     "{\"v\":-0.0}],\"note\":[{\"text\":\"a \\\"quoted\\\" {brace} [x] \\\\\"}]}";
    const char *r1 = "{ \"resourceType\" : \"Patient\" , \"id\" : \"p\\u0031\" ,"
                     " \"x\" : { \"resource\" : { \"nested\" : true } } }";
    char bundle[2048];
    snprintf(bundle, sizeof bundle,
             "{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"total\":2,"
             "\"link\":[{\"relation\":\"self\",\"url\":\"http://x/fhir/Observation\"},"
             "{\"relation\":\"next\",\"url\":\"Observation?_page_token=a}b\"}],"
             "\"entry\":[{\"fullUrl\":\"u0\",\"resource\":%s,\"search\":{\"mode\":\"match\"}},"
             "\n  {\"search\":{\"mode\":\"match\"},\"resource\":%s}]}\n",
             r0, r1);
    fs_bundle_scan scan;
    fs_bundle_scan_init(&scan);
    assert_int_equal(fs_bundle_scan_run(S(bundle), &scan), FS_SPAN_OK);
    assert_true(scan.has_entry && scan.entry_is_array);
    assert_int_equal(scan.entry_count, 2);
    assert_span(bundle, scan.resources[0], r0);
    assert_span(bundle, scan.resources[1], r1);
    assert_span(bundle, scan.resource_type, "\"Bundle\"");
    assert_int_equal(scan.link_count, 2);
    assert_span(bundle, scan.links[1],
                "{\"relation\":\"next\",\"url\":\"Observation?_page_token=a}b\"}");
    /* the buffers are reused by the next scan */
    assert_int_equal(fs_bundle_scan_run(S("{\"entry\":[]}"), &scan), FS_SPAN_OK);
    assert_int_equal(scan.entry_count, 0);
    assert_int_equal(scan.link_count, 0);
    assert_int_equal(scan.resource_type.len, 0);
    fs_bundle_scan_clear(&scan);
}

static void test_span_escaped_names(void **state)
{
    (void)state;
    /* "\u0065ntry" is the member "entry" to any JSON parser: the scanner must agree */
    const char *bundle = "{\"\\u0065ntry\":[{\"r\\u0065source\":{\"resourceType\":\"A\"}}],"
                         "\"li\\u006Ek\":[{}],\"entry2\":[{\"resource\":{}}]}";
    fs_bundle_scan scan;
    fs_bundle_scan_init(&scan);
    assert_int_equal(fs_bundle_scan_run(S(bundle), &scan), FS_SPAN_OK);
    assert_int_equal(scan.entry_count, 1);
    assert_span(bundle, scan.resources[0], "{\"resourceType\":\"A\"}");
    assert_int_equal(scan.link_count, 1);
    /* an entry that is not an object or has no resource: an empty span */
    const char *odd = "{\"entry\":[1,{\"fullUrl\":\"x\"},null,{\"resource\":[1]}]}";
    assert_int_equal(fs_bundle_scan_run(S(odd), &scan), FS_SPAN_OK);
    assert_int_equal(scan.entry_count, 4);
    assert_int_equal(scan.resources[0].len, 0);
    assert_int_equal(scan.resources[1].len, 0);
    assert_int_equal(scan.resources[2].len, 0);
    assert_span(odd, scan.resources[3], "[1]");
    /* entry present but not an array */
    assert_int_equal(fs_bundle_scan_run(S("{\"entry\":{\"resource\":{}}}"), &scan), FS_SPAN_OK);
    assert_true(scan.has_entry);
    assert_false(scan.entry_is_array);
    assert_int_equal(scan.entry_count, 0);
    fs_bundle_scan_clear(&scan);
}

static void test_span_values(void **state)
{
    (void)state;
    const char *ok[] = {"0",
                        "-0",
                        "1.5",
                        "-12.250e-3",
                        "1E+2",
                        "true",
                        "false",
                        "null",
                        "\"\"",
                        "\"\\u00e9\\n\\/\"",
                        "[]",
                        "{}",
                        "[[[]],{\"a\":[1,{}]}]",
                        "\"\xc3\xa9\"",
                        NULL};
    for (size_t i = 0; ok[i]; i++) {
        char text[64];
        snprintf(text, sizeof text, "  %s , rest", ok[i]);
        size_t pos = 0;
        fs_span span;
        assert_int_equal(fs_json_span_value(S(text), &pos, &span), FS_SPAN_OK);
        assert_span(text, span, ok[i]);
        assert_int_equal(text[pos], ' ');
    }
    /* each inside an array, so that a valid prefix ("0" of "01") cannot pass as the value */
    const char *bad[] = {"01",
                         "1.",
                         ".5",
                         "-",
                         "1e",
                         "+1",
                         "tru",
                         "nul",
                         "\"abc",
                         "\"a\\x\"",
                         "\"\\u12g4\"",
                         "\"\\u12\"",
                         "\"tab\there\"",
                         "[1,]",
                         "[1 2]",
                         "{\"a\"}",
                         "{\"a\":}",
                         "{a:1}",
                         "{\"a\":1,}",
                         "[",
                         "{",
                         "}",
                         "'x'",
                         NULL};
    for (size_t i = 0; bad[i]; i++) {
        char text[64];
        snprintf(text, sizeof text, "[ %s ]", bad[i]);
        size_t pos = 0;
        fs_span span;
        if (fs_json_span_value(S(text), &pos, &span) == FS_SPAN_OK)
            fail_msg("accepted malformed JSON value '%s'", bad[i]);
    }
    size_t pos = 0;
    fs_span span;
    assert_int_equal(fs_json_span_value(S("   "), &pos, &span), FS_SPAN_SYNTAX);
    assert_int_equal(pos, 0);
}

static void test_span_malformed_bundles(void **state)
{
    (void)state;
    fs_bundle_scan scan;
    fs_bundle_scan_init(&scan);
    const char *bad[] = {
        "",
        "[]",
        "{\"entry\":[{\"resource\":{\"a\":1}}]",         /* truncated */
        "{\"entry\":[{\"resource\":{\"a\":1}}]} x",      /* trailing garbage */
        "{\"entry\":[{\"resource\":{\"a\":\"}\"}}]]}",   /* bracket mismatch */
        "{\"entry\":[{\"resource\":{\"a\":1,}}]}",       /* trailing comma */
        "{\"entry\":[{\"resource\":{\"a\":\"\x01\"}}]}", /* control character in a string */
        "{\"entry\" [1]}",
        "{\"entry\":[{\"resource\":{\"a\":1}}],}",
        NULL};
    for (size_t i = 0; bad[i]; i++) {
        if (fs_bundle_scan_run(S(bad[i]), &scan) == FS_SPAN_OK)
            fail_msg("accepted malformed Bundle '%s'", bad[i]);
        assert_int_equal(scan.entry_count, 0);
    }
    /* too deep: refused with its own status, without exhausting the stack */
    size_t depth = FS_SPAN_MAX_DEPTH + 10;
    char *deep = malloc(depth * 2 + 32);
    assert_non_null(deep);
    size_t n = (size_t)sprintf(deep, "{\"entry\":");
    for (size_t i = 0; i < depth; i++)
        deep[n++] = '[';
    for (size_t i = 0; i < depth; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    assert_int_equal(fs_bundle_scan_run(deep, n, &scan), FS_SPAN_DEPTH);
    free(deep);
    fs_bundle_scan_clear(&scan);
}

/* ---- pages ----------------------------------------------------------------------------------- */

static void test_page_parse(void **state)
{
    (void)state;
    const char *body =
        "{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"total\":3,\"link\":["
        "{\"relation\":\"self\",\"url\":\"https://h/fhir/Observation?a=1\"},"
        "{\"relation\":\"next\",\"url\":\"https://h/fhir/Observation?page=2\"}],\"entry\":["
        "{\"resource\":{\"resourceType\":\"Observation\",\"id\":\"1\",\"valueQuantity\":"
        "{\"value\":98.60}},\"search\":{\"mode\":\"match\"}},"
        "{\"resource\":{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"severity\":"
        "\"warning\",\"code\":\"not-supported\",\"diagnostics\":\"_sort ignored\"}]},"
        "\"search\":{\"mode\":\"outcome\"}},"
        "{\"resource\":{\"resourceType\":\"Observation\",\"id\":\"2\"}}]}";
    fs_fhir_page page;
    fs_fhir_page_init(&page);
    fhirsync_error err = {0};
    assert_int_equal(fs_fhir_page_parse(S(body), "https://h/fhir/Observation", &page, &err),
                     FHIRSYNC_OK);
    assert_int_equal(page.count, 3);
    assert_int_equal(page.outcomes, 1);
    assert_int_equal(page.total, 3);
    assert_string_equal(page.next, "https://h/fhir/Observation?page=2");
    assert_false(page.entries[0].outcome);
    assert_true(page.entries[1].outcome);
    assert_span(body, page.entries[0].resource,
                "{\"resourceType\":\"Observation\",\"id\":\"1\",\"valueQuantity\":"
                "{\"value\":98.60}}");
    /* an empty last page */
    assert_int_equal(fs_fhir_page_parse(S("{\"resourceType\":\"Bundle\",\"type\":\"searchset\"}"),
                                        "u", &page, &err),
                     FHIRSYNC_OK);
    assert_int_equal(page.count, 0);
    assert_null(page.next);
    assert_int_equal(page.total, -1);
    fs_fhir_page_clear(&page);
}

static void test_page_parse_errors(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        const char *message;
    } cases[] = {
        {"<html><body><h1>502 Bad Gateway</h1></body></html>", "an HTML page"},
        {"Service temporarily unavailable", "not a FHIR Bundle: \"Service temporarily"},
        {"{\"resourceType\":\"Patient\",\"id\":\"1\"}", "resourceType is 'Patient', not Bundle"},
        {"{\"type\":\"searchset\"}", "resourceType is 'missing'"},
        {"{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"severity\":\"error\",\"code\":"
         "\"too-costly\",\"diagnostics\":\"narrow the search\"}]}",
         "an OperationOutcome, not a Bundle: error too-costly: narrow the search"},
        {"{\"resourceType\":\"Bundle\",\"entry\":{\"resource\":{}}}",
         "Bundle.entry is not an array"},
        {"{\"resourceType\":\"Bundle\",\"entry\":[{\"resource\":{\"id\":\"1\"}}]}",
         "Bundle.entry[0].resource has no resourceType"},
        {"{\"resourceType\":\"Bundle\",\"entry\":[{\"resource\":{\"resourceType\":\"A\"}},"
         "{\"fullUrl\":\"x\"}]}",
         "Bundle.entry[1] has no resource object"},
        {"{\"resourceType\":\"Bundle\",\"entry\":[7]}", "Bundle.entry[0] is not an object"},
        {"{\"resourceType\":\"Bundle\",\"link\":{\"relation\":\"next\"}}",
         "Bundle.link is not an array"},
        {"{\"resourceType\":\"Bundle\",\"link\":[{\"relation\":\"next\"}]}",
         "Bundle.link[0] (next) has no url"},
        {"{\"resourceType\":\"Bundle\",\"entry\":[],\"entry\":[]}", "duplicate"},
        {"{\"resourceType\":\"Bundle\",\"entry\":[", "not a FHIR Bundle"},
    };
    fs_fhir_page page;
    fs_fhir_page_init(&page);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        fhirsync_error err = {0};
        fhirsync_code rc = fs_fhir_page_parse(S(cases[i].body), "https://h/fhir/X", &page, &err);
        if (rc != FHIRSYNC_E_PROTOCOL || !strstr(err.message, cases[i].message))
            fail_msg("case %zu: code %d, message '%s', wanted '%s'", i, rc, err.message,
                     cases[i].message);
        assert_int_equal(page.count, 0);
        assert_null(page.next);
    }
    fs_fhir_page_clear(&page);
}

/* ---- OperationOutcome, statuses, messages ---------------------------------------------------- */

static void test_outcome(void **state)
{
    (void)state;
    fs_outcome o;
    assert_true(fs_outcome_parse(S("{\"resourceType\":\"OperationOutcome\",\"issue\":[{"
                                   "\"severity\":\"error\",\"code\":\"not-found\","
                                   "\"diagnostics\":\"Patient/999 is not known\"}]}"),
                                 &o));
    assert_string_equal(o.summary, "error not-found: Patient/999 is not known");
    assert_true(o.has_error);
    assert_false(o.transient);
    assert_int_equal(o.issues, 1);

    /* details.text when there are no diagnostics; several issues; transient */
    assert_true(fs_outcome_parse(
        S("{\"resourceType\":\"OperationOutcome\",\"issue\":["
          "{\"severity\":\"warning\",\"code\":\"informational\",\"details\":{\"text\":\"busy\"}},"
          "{\"severity\":\"error\",\"code\":\"transient\",\"details\":{\"coding\":[{\"code\":"
          "\"MSG_RETRY\",\"display\":\"try later\"}]}},{\"severity\":\"information\"},"
          "{\"severity\":\"error\",\"code\":\"x\"},{\"severity\":\"error\",\"code\":\"y\"}]}"),
        &o));
    assert_string_equal(o.summary, "warning informational: busy; error transient: try later; "
                                   "information (and 2 more issues)");
    assert_true(o.transient);
    assert_int_equal(o.issues, 5);

    assert_true(fs_outcome_parse(S("{\"resourceType\":\"OperationOutcome\",\"issue\":[]}"), &o));
    assert_string_equal(o.summary, "an OperationOutcome with no issues");
    assert_false(o.has_error);

    assert_false(fs_outcome_parse(S("{\"resourceType\":\"Patient\"}"), &o));
    assert_false(fs_outcome_parse(S("{\"resourceType\":\"OperationOutcome\"}"), &o));
    assert_false(fs_outcome_parse(S("not json"), &o));
    assert_false(fs_outcome_parse(NULL, 0, &o));
    assert_string_equal(o.summary, "");

    /* a very long diagnostics is cut, not overflowed */
    char big[4096];
    int n = snprintf(big, sizeof big,
                     "{\"resourceType\":\"OperationOutcome\",\"issue\":[{"
                     "\"severity\":\"error\",\"code\":\"x\",\"diagnostics\":\"");
    memset(big + n, 'a', 3000);
    snprintf(big + n + 3000, sizeof big - (size_t)n - 3000, "\"}]}");
    assert_true(fs_outcome_parse(S(big), &o));
    assert_int_equal(strlen(o.summary), sizeof o.summary - 1);
    assert_string_equal(o.summary + sizeof o.summary - 4, "...");
}

static void test_status_codes(void **state)
{
    (void)state;
    assert_int_equal(fs_fhir_status_code(200), FHIRSYNC_OK);
    assert_int_equal(fs_fhir_status_code(204), FHIRSYNC_OK);
    assert_int_equal(fs_fhir_status_code(401), FHIRSYNC_E_UNAUTHORIZED);
    assert_int_equal(fs_fhir_status_code(403), FHIRSYNC_E_FORBIDDEN);
    assert_int_equal(fs_fhir_status_code(404), FHIRSYNC_E_NOT_FOUND);
    assert_int_equal(fs_fhir_status_code(410), FHIRSYNC_E_NOT_FOUND);
    assert_int_equal(fs_fhir_status_code(429), FHIRSYNC_E_RATE_LIMITED);
    assert_int_equal(fs_fhir_status_code(500), FHIRSYNC_E_SERVER);
    assert_int_equal(fs_fhir_status_code(503), FHIRSYNC_E_SERVER);
    assert_int_equal(fs_fhir_status_code(599), FHIRSYNC_E_SERVER);
    assert_int_equal(fs_fhir_status_code(400), FHIRSYNC_E_BAD_REQUEST);
    assert_int_equal(fs_fhir_status_code(405), FHIRSYNC_E_BAD_REQUEST);
    assert_int_equal(fs_fhir_status_code(422), FHIRSYNC_E_BAD_REQUEST);
    assert_int_equal(fs_fhir_status_code(302), FHIRSYNC_E_HTTP);
    assert_int_equal(fs_fhir_status_code(100), FHIRSYNC_E_HTTP);
    assert_int_equal(fs_fhir_status_code(0), FHIRSYNC_E_HTTP);
}

static void test_describe_and_status_error(void **state)
{
    (void)state;
    char buf[300];
    fs_fhir_describe_body(S("  <!DOCTYPE html><html><body>secret page</body></html>"), NULL, buf,
                          sizeof buf);
    assert_string_equal(buf, "an HTML page (not a FHIR response)");
    fs_fhir_describe_body(S("{\"error\":\"x\"}"), "text/html; charset=utf-8", buf, sizeof buf);
    assert_non_null(strstr(buf, "HTML"));
    fs_fhir_describe_body(S("upstream\nconnect error"), "text/plain", buf, sizeof buf);
    assert_string_equal(buf, "\"upstream connect error\"");
    fs_fhir_describe_body(S("{\"error\":\"invalid_token\",\"error_description\":\"expired\"}"),
                          NULL, buf, sizeof buf);
    assert_string_equal(buf, "invalid_token: expired");
    fs_fhir_describe_body(S("{\"resourceType\":\"Patient\"}"), NULL, buf, sizeof buf);
    assert_string_equal(buf, "a Patient resource, not an OperationOutcome");
    fs_fhir_describe_body(S(" \n"), NULL, buf, sizeof buf);
    assert_string_equal(buf, "an empty body");
    char longer[400];
    memset(longer, 'z', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    fs_fhir_describe_body(S(longer), NULL, buf, sizeof buf);
    assert_true(strlen(buf) < 130);
    assert_non_null(strstr(buf, "\"..."));

    fs_http_response resp;
    fs_http_response_init(&resp);
    resp.status = 404;
    const char *oo = "{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"severity\":\"error\","
                     "\"code\":\"not-found\",\"diagnostics\":\"Patient/999 is not known\"}]}";
    assert_true(fs_buf_append(&resp.body, oo, strlen(oo)));
    fhirsync_error err = {0};
    assert_int_equal(fs_fhir_status_error(&resp, "https://h/fhir/Patient/999", &err),
                     FHIRSYNC_E_NOT_FOUND);
    assert_string_equal(err.message, "HTTP 404 from https://h/fhir/Patient/999: error "
                                     "not-found: Patient/999 is not known");
    assert_int_equal(err.http_status, 404);
    resp.status = 200;
    err.code = FHIRSYNC_E_INTERNAL;
    assert_int_equal(fs_fhir_status_error(&resp, "u", &err), FHIRSYNC_OK);
    assert_int_equal(err.code, FHIRSYNC_E_INTERNAL); /* untouched */
    fs_http_response_clear(&resp);
}

/* ---- the rate limiter ------------------------------------------------------------------------ */

static void test_bucket_arithmetic(void **state)
{
    (void)state;
    fs_token_bucket b;
    fs_token_bucket_init(&b, 60, 1, 1000); /* one per second */
    assert_int_equal(fs_token_bucket_take(&b, 1000), 0);
    assert_int_equal(fs_token_bucket_take(&b, 1000), 1000); /* queued behind the first */
    assert_int_equal(fs_token_bucket_take(&b, 1000), 2000);
    assert_int_equal(fs_token_bucket_take(&b, 3500), 500);    /* the reservations are honoured */
    assert_int_equal(fs_token_bucket_take(&b, 100000), 0);    /* idle: full again, but capped */
    assert_int_equal(fs_token_bucket_take(&b, 100000), 1000); /* at one slot: no burst */
    assert_int_equal(fs_token_bucket_take(&b, 50), 2000);     /* a clock going back counts as no
                                                                 time passing */
    /* a burst of 3 */
    fs_token_bucket_init(&b, 60, 3, 0);
    assert_int_equal(fs_token_bucket_take(&b, 0), 0);
    assert_int_equal(fs_token_bucket_take(&b, 0), 0);
    assert_int_equal(fs_token_bucket_take(&b, 0), 0);
    assert_int_equal(fs_token_bucket_take(&b, 0), 1000);
    /* 250 per minute (eClinicalWorks): 240 ms apart, rounded up to whole milliseconds */
    fs_token_bucket_init(&b, 250, 1, 0);
    assert_int_equal(fs_token_bucket_take(&b, 0), 0);
    assert_int_equal(fs_token_bucket_take(&b, 0), 240);
    /* a change of rate keeps the reservations */
    fs_token_bucket_set_rate(&b, 120, 1, 0);
    assert_int_equal(fs_token_bucket_take(&b, 0), 1000);
}

/* Simulated time: the fake sleeper advances the fake clock. */
static int64_t fake_now;
static int64_t slept[64];
static size_t sleeps;
static bool cancel_sleep;

static int64_t fake_clock(void)
{
    return fake_now;
}

static bool fake_sleep(int64_t ms)
{
    if (sleeps < 64)
        slept[sleeps++] = ms;
    if (cancel_sleep)
        return false;
    fake_now += ms;
    return true;
}

static void test_ratelimit_registry(void **state)
{
    (void)state;
    fs_ratelimit_reset();
    fs_ratelimit_set_clock(fake_clock, fake_sleep);
    fake_now = 5000;
    sleeps = 0;
    fhirsync_error err = {0};
    /* off: no bucket, no wait */
    for (int i = 0; i < 5; i++)
        assert_int_equal(fs_ratelimit_acquire("https://a/fhir", "c", 0, &err), FHIRSYNC_OK);
    assert_int_equal(sleeps, 0);
    /* 120 per minute: 500 ms apart; same origin and client share a bucket, whatever the path */
    assert_int_equal(fs_ratelimit_acquire("https://a/fhir", "c", 120, &err), FHIRSYNC_OK);
    assert_int_equal(fs_ratelimit_acquire("https://A:443/other/path", "c", 120, &err), 0);
    assert_int_equal(fs_ratelimit_acquire("https://a/fhir/Patient", "c", 120, &err), 0);
    assert_int_equal(sleeps, 2);
    assert_int_equal(slept[0], 500);
    assert_int_equal(slept[1], 500);
    /* another client or another origin: its own bucket */
    assert_int_equal(fs_ratelimit_acquire("https://a/fhir", "other", 120, &err), FHIRSYNC_OK);
    assert_int_equal(fs_ratelimit_acquire("https://b/fhir", "c", 120, &err), FHIRSYNC_OK);
    assert_int_equal(sleeps, 2);
    /* cancellation during the wait */
    cancel_sleep = true;
    assert_int_equal(fs_ratelimit_acquire("https://a/fhir", "c", 120, &err), FHIRSYNC_E_CANCELLED);
    assert_non_null(strstr(err.message, "cancelled"));
    cancel_sleep = false;
    fs_ratelimit_set_clock(NULL, NULL);
    fs_ratelimit_reset();
}

static void test_ratelimit_window(void **state)
{
    (void)state;
    /* A server counting 250 per fixed (or sliding) minute never sees more than 250 from a
     * client that sends as fast as the limiter lets it. */
    fs_ratelimit_reset();
    fs_ratelimit_set_clock(fake_clock, fake_sleep);
    fake_now = 123457;
    enum { N = 1000 };
    static int64_t sent[N];
    fhirsync_error err = {0};
    for (int i = 0; i < N; i++) {
        sleeps = 0;
        assert_int_equal(fs_ratelimit_acquire("https://fhir4.example/fhir/r4/P1", "app", 250, &err),
                         FHIRSYNC_OK);
        sent[i] = fake_now;
    }
    for (int i = 0, j = 0; i < N; i++) {
        while (sent[i] - sent[j] >= 60000)
            j++;
        assert_true(i - j + 1 <= 250);
    }
    /* and it is not slower than it must be: 1000 requests take about 4 minutes */
    assert_true(sent[N - 1] - sent[0] <= (int64_t)(N - 1) * 240 + N);
    fs_ratelimit_set_clock(NULL, NULL);
    fs_ratelimit_reset();
}

/* ---- the origin rule ------------------------------------------------------------------------- */

typedef struct fixture {
    char dir[512];
    char key[600];
    fhirsync_client *client;
} fixture;

static int setup_client(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    const char *base = getenv("FHIRSYNC_TEST_TMP");
    if (!base || !*base)
        base = "/tmp";
    mkdir(base, 0700);
    snprintf(f->dir, sizeof f->dir, "%s/fhir-XXXXXX", base);
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->key, sizeof f->key, "%s/test.key.pem", f->dir);
    fhirsync_key *key = NULL;
    fhirsync_error err = {0};
    if (fhirsync_key_generate(FHIRSYNC_ALG_ES384, 0, &key, &err) != FHIRSYNC_OK ||
        fhirsync_key_write_pem(key, f->key, &err) != FHIRSYNC_OK)
        return -1;
    fhirsync_key_free(key);
    fhirsync_endpoint *ep = fhirsync_endpoint_new("test");
    if (!ep || fhirsync_endpoint_set(ep, "base_url", "http://127.0.0.1:9/fhir/r4", "t", &err) ||
        fhirsync_endpoint_set(ep, "client_id", "c1", "t", &err) ||
        fhirsync_endpoint_set(ep, "key_file", f->key, "t", &err) ||
        fhirsync_endpoint_set(ep, "token_url", "http://127.0.0.1:9/auth/token", "t", &err) ||
        fhirsync_endpoint_set(ep, "max_retries", "1", "t", &err) ||
        fhirsync_endpoint_set(ep, "retry_cap", "1", "t", &err) ||
        fhirsync_client_new(ep, &f->client, &err) != FHIRSYNC_OK) {
        print_error("client: %s\n", err.message);
        return -1;
    }
    fhirsync_endpoint_free(ep);
    *state = f;
    return 0;
}

static int teardown_client(void **state)
{
    fixture *f = *state;
    fhirsync_client_free(f->client);
    unlink(f->key);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void test_origin_rule(void **state)
{
    fixture *f = *state;
    fhirsync_client *c = f->client;
    fhirsync_error err = {0};
    char *url = NULL;
    assert_int_equal(fs_fhir_resolve(c, "Patient?family=smith", true, &url, &err), FHIRSYNC_OK);
    assert_string_equal(url, "http://127.0.0.1:9/fhir/r4/Patient?family=smith");
    fs_free(url);
    assert_int_equal(fs_fhir_resolve(c, "http://127.0.0.1:9/elsewhere/x", true, &url, &err), 0);
    assert_string_equal(url, "http://127.0.0.1:9/elsewhere/x");
    fs_free(url);
    assert_int_equal(fs_fhir_resolve(c, "HTTP://127.0.0.1:9/fhir/r4/Patient/1", true, &url, &err),
                     FHIRSYNC_OK);
    fs_free(url);

    const char *foreign[] = {"http://127.0.0.1:10/fhir/r4/Patient", /* another port */
                             "https://127.0.0.1:9/fhir/r4/Patient", /* another scheme */
                             "http://localhost:9/fhir/r4/Patient",  /* another host name */
                             "//evil.example/fhir/Patient",         /* network-path reference */
                             "https://evil.example/Patient",        NULL};
    for (size_t i = 0; foreign[i]; i++) {
        url = (char *)"unchanged";
        assert_int_equal(fs_fhir_resolve(c, foreign[i], true, &url, &err), FHIRSYNC_E_URL);
        assert_null(url);
        assert_non_null(strstr(err.message, "bearer token is sent only to the FHIR server"));
        /* without a token the same URL may be fetched (bulk files on storage) */
        assert_int_equal(fs_fhir_resolve(c, foreign[i], false, &url, &err), FHIRSYNC_OK);
        fs_free(url);
    }
    assert_true(fs_fhir_same_origin(c, "http://127.0.0.1:9/x"));
    assert_false(fs_fhir_same_origin(c, "http://127.0.0.1:90/x"));
    assert_false(fs_fhir_same_origin(c, NULL));
    assert_int_equal(fs_fhir_resolve(c, "", true, &url, &err), FHIRSYNC_E_ARG);

    /* the public API refuses before any traffic (nothing listens on port 9 anyway) and keeps
     * the message in the client */
    fhirsync_response *resp = (fhirsync_response *)1;
    assert_int_equal(fhirsync_client_get(c, "https://evil.example/Patient", &resp), FHIRSYNC_E_URL);
    assert_null(resp);
    assert_int_equal(fhirsync_client_errcode(c), FHIRSYNC_E_URL);
    assert_non_null(strstr(fhirsync_client_errmsg(c), "https://evil.example/Patient"));
    fhirsync_search *search = (fhirsync_search *)1;
    assert_int_equal(fhirsync_search_start(c, "//evil.example/Patient", &search), FHIRSYNC_E_URL);
    assert_null(search);
    assert_int_equal(fhirsync_search_start(c, "Patient?_count=10", &search), FHIRSYNC_OK);
    assert_string_equal(fhirsync_client_errmsg(c), "");
    assert_int_equal(fhirsync_search_pages(search), 0);
    assert_int_equal(fhirsync_search_total(search), -1);
    fhirsync_search_free(search);
    assert_string_equal(fs_fhir_client_origin(c), "http://127.0.0.1:9");
}

/* ---- retries of requests that failed on the way ---------------------------------------------- */

/* A server that accepts connections, reads the request and hangs up without answering: the
 * request reached it, so a POST must not be sent again. */
typedef struct hang_up_server {
    int fd;
    int port;
    atomic_int accepted;
    atomic_bool stop;
    pthread_t thread;
} hang_up_server;

static void *hang_up(void *arg)
{
    hang_up_server *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            continue;
        char buf[4096];
        (void)read(c, buf, sizeof buf);
        atomic_fetch_add(&s->accepted, 1);
        close(c);
    }
    return NULL;
}

static void hang_up_start(hang_up_server *s)
{
    memset(s, 0, sizeof *s);
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->fd >= 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    assert_int_equal(bind(s->fd, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_int_equal(listen(s->fd, 8), 0);
    assert_int_equal(getsockname(s->fd, (struct sockaddr *)&addr, &len), 0);
    s->port = ntohs(addr.sin_port);
    assert_int_equal(pthread_create(&s->thread, NULL, hang_up, s), 0);
}

static void hang_up_stop(hang_up_server *s)
{
    atomic_store(&s->stop, true);
    pthread_join(s->thread, NULL);
    close(s->fd);
}

static int retry_lines;

static void count_retries(fhirsync_log_level level, const char *line, void *userdata)
{
    (void)userdata;
    if (level == FHIRSYNC_LOG_WARN && strstr(line, "retry 1 of 1 in "))
        retry_lines++;
}

static void test_retry_rules(void **state)
{
    fixture *f = *state;
    fhirsync_log_set(count_retries, NULL, FHIRSYNC_LOG_WARN);
    hang_up_server srv;
    hang_up_start(&srv);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/fhir/Patient", srv.port);
    fs_http_response resp;
    fs_http_response_init(&resp);
    fhirsync_error err = {0};

    /* a GET that got no answer is sent again (max_retries 1: two connections) */
    retry_lines = 0;
    fs_fhir_request get = {.target = url, .anonymous = true};
    assert_int_equal(fs_fhir_perform(f->client, &get, &resp, &err), FHIRSYNC_E_NETWORK);
    assert_int_equal(atomic_load(&srv.accepted), 2);
    assert_int_equal(retry_lines, 1);

    /* a POST that reached the server is never replayed */
    retry_lines = 0;
    fs_fhir_request post = {
        .method = "POST", .target = url, .body = "{}", .body_len = 2, .anonymous = true};
    assert_int_equal(fs_fhir_perform(f->client, &post, &resp, &err), FHIRSYNC_E_NETWORK);
    assert_int_equal(atomic_load(&srv.accepted), 3);
    assert_int_equal(retry_lines, 0);
    hang_up_stop(&srv);

    /* a POST whose connection was refused never reached anyone: it may be retried */
    retry_lines = 0;
    post.target = url; /* the port is closed now */
    assert_int_equal(fs_fhir_perform(f->client, &post, &resp, &err), FHIRSYNC_E_NETWORK);
    assert_int_equal(retry_lines, 1);

    /* cancellation stops before anything is sent */
    fhirsync_cancel();
    assert_int_equal(fs_fhir_perform(f->client, &get, &resp, &err), FHIRSYNC_E_CANCELLED);
    fhirsync_cancel_reset();
    fs_http_response_clear(&resp);
    fhirsync_log_set(NULL, NULL, FHIRSYNC_LOG_ERROR);
}

int main(void)
{
    fhirsync_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_span_resources_exact),
        cmocka_unit_test(test_span_escaped_names),
        cmocka_unit_test(test_span_values),
        cmocka_unit_test(test_span_malformed_bundles),
        cmocka_unit_test(test_page_parse),
        cmocka_unit_test(test_page_parse_errors),
        cmocka_unit_test(test_outcome),
        cmocka_unit_test(test_status_codes),
        cmocka_unit_test(test_describe_and_status_error),
        cmocka_unit_test(test_bucket_arithmetic),
        cmocka_unit_test(test_ratelimit_registry),
        cmocka_unit_test(test_ratelimit_window),
        cmocka_unit_test_setup_teardown(test_origin_rule, setup_client, teardown_client),
        cmocka_unit_test_setup_teardown(test_retry_rules, setup_client, teardown_client),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    fhirsync_global_cleanup();
    return failed;
}
