/* unit/test_core.c: the core helpers: redaction (the one path every log line and error message
 * takes), HTTP dates and Retry-After, FHIR instants, buffers and URL rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/core.h"
#include "http/http.h"

static void assert_redacted(const char *in, const char *secret, const char *must_keep)
{
    char *out = fs_redact(in);
    assert_non_null(out);
    if (strstr(out, secret)) {
        fprintf(stderr, "not redacted: %s -> %s\n", in, out);
        fail();
    }
    if (must_keep && !strstr(out, must_keep)) {
        fprintf(stderr, "over-redacted: %s -> %s\n", in, out);
        fail();
    }
    fs_free(out);
}

/* Arrays that double: the first size, doubling, and refusals that keep the old array. */
static void test_array_grow(void **state)
{
    (void)state;
    size_t cap = 0;
    int *items = fs_array_grow(NULL, &cap, sizeof *items, 4);
    assert_non_null(items);
    assert_int_equal(cap, 4);
    for (int i = 0; i < 4; i++)
        items[i] = i;
    int *grown = fs_array_grow(items, &cap, sizeof *items, 4);
    assert_non_null(grown);
    assert_int_equal(cap, 8);
    assert_int_equal(grown[3], 3);
    items = grown;
    size_t huge = SIZE_MAX / 2 + 1;
    assert_null(fs_array_grow(items, &huge, sizeof *items, 4));
    assert_int_equal(huge, SIZE_MAX / 2 + 1);
    size_t big = SIZE_MAX / 4;
    assert_null(fs_array_grow(items, &big, sizeof *items, 4)); /* the bytes would overflow */
    assert_int_equal(big, SIZE_MAX / 4);
    size_t none = 0;
    assert_null(fs_array_grow(NULL, &none, sizeof *items, 0));
    assert_int_equal(cap, 8);
    fs_free(items);
}

/* Plain base64 (HTTP Basic credentials): padded and unpadded, and what is refused. */
static void test_b64_plain(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out; /* out NULL: refused */
    } cases[] = {
        {"dXNlcjpwYXNz", "user:pass"},
        {"YQ==", "a"},
        {"YQ", "a"},
        {"YWI=", "ab"},
        {"YWI", "ab"},
        {"", ""},
        {"+/+/", "\xfb\xff\xbf"},
        {"YQ=", NULL},
        {"YQ===", NULL},
        {"Y", NULL},
        {"YR==", NULL},
        {"YW I=", NULL},
        {"YWI-", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        unsigned char *out = NULL;
        size_t len = 0;
        bool ok = fs_b64_decode(cases[i].in, strlen(cases[i].in), &out, &len);
        if (!cases[i].out) {
            if (ok)
                fprintf(stderr, "accepted: \"%s\"\n", cases[i].in);
            assert_false(ok);
            assert_null(out);
            continue;
        }
        assert_true(ok);
        assert_int_equal(len, strlen(cases[i].out));
        assert_memory_equal(out, cases[i].out, len);
        fs_free(out);
    }
    unsigned char *out = NULL;
    size_t len = 0;
    assert_false(fs_b64_decode("-_-_", 4, &out, &len)); /* the URL alphabet is not this one */
    assert_true(fs_b64url_decode("-_-_", 4, &out, &len));
    assert_int_equal(len, 3);
    fs_free(out);
}

/* Writing whole: a pipe larger than one write's worth arrives complete; a closed descriptor
 * fails. */
static void test_write_all(void **state)
{
    (void)state;
    char path[] = "/tmp/fhirsync-test-io.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = 3 * 1024 * 1024;
    char *data = malloc(n);
    assert_non_null(data);
    for (size_t i = 0; i < n; i++)
        data[i] = (char)(i * 7);
    assert_true(fs_write_all(fd, data, n));
    assert_int_equal(lseek(fd, 0, SEEK_END), (off_t)n);
    close(fd);
    unlink(path);
    assert_false(fs_write_all(fd, data, 1));
    free(data);
}

static void test_redact_headers_and_forms(void **state)
{
    (void)state;
    assert_redacted("Authorization: Bearer abc.DEF-123", "abc.DEF-123", "Authorization: Bearer");
    assert_redacted("authorization: Basic Zm9vOmJhcg==", "Zm9vOmJhcg", "Basic");
    assert_redacted("grant_type=client_credentials&client_assertion=AAA.BBB.CCC&scope=x",
                    "AAA.BBB.CCC", "grant_type=client_credentials");
    assert_redacted("client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    "SECRET-NOT-THERE", "jwt-bearer");
    assert_redacted("{\"access_token\":\"tok123secret\",\"token_type\":\"bearer\"}", "tok123secret",
                    "token_type");
    assert_redacted("{\"access_token\" : \"tok 456\"}", "tok 456", NULL);
    assert_redacted("client_secret=s3cr3t&client_id=abc", "s3cr3t", "client_id=abc");
    assert_redacted("refresh_token=rrr", "rrr", NULL);
    assert_redacted("https://x/cb?code=authcode123&state=1", "authcode123", "state=1");
    assert_redacted("postgresql://fhir:hunter2@db.local/fhirsync", "hunter2", "db.local");
    assert_redacted("host=db password=hunter2 dbname=x", "hunter2", "dbname=x");
    /* a JWT anywhere, even without a name */
    assert_redacted("got eyJhbGciOiJSUzM4NCJ9.eyJpc3MiOiJ4In0.c2lnbmF0dXJl here", "eyJpc3MiOiJ4In0",
                    "here");
    /* split so that no committed file holds a PEM private-key header */
    assert_redacted("-----BEGIN PRIV"
                    "ATE KEY-----\nMIIEv\n-----END PRIV"
                    "ATE KEY-----\nafter",
                    "MIIEv", "after");
    /* things that must survive */
    assert_redacted("\"token_endpoint_auth_methods_supported\":[\"client_secret_basic\"]", "zzz",
                    "client_secret_basic");
    assert_redacted("{\"code\":\"transient\"}", "zzz", "transient");
}

/* The public redaction path (fhirsync_redact) is the library's own: same masking, the caller's
 * copy. */
static void test_public_redact(void **state)
{
    (void)state;
    char *out = fhirsync_redact("GET /x Authorization: Bearer abc.DEF-123 client_secret=s3cr3t");
    assert_non_null(out);
    assert_null(strstr(out, "abc.DEF-123"));
    assert_null(strstr(out, "s3cr3t"));
    assert_non_null(strstr(out, "GET /x"));
    fhirsync_free(out);
    out = fhirsync_redact("");
    assert_non_null(out);
    assert_string_equal(out, "");
    fhirsync_free(out);
}

static void test_redact_unterminated_and_empty(void **state)
{
    (void)state;
    assert_redacted("access_token=", "zzz", "access_token");
    assert_redacted("\"client_secret\":\"unterminated", "unterminated", NULL);
    char *out = fs_redact("");
    assert_string_equal(out, "");
    fs_free(out);
}

static void test_http_dates(void **state)
{
    (void)state;
    int64_t t;
    /* RFC 9110's three forms of the same instant */
    assert_true(fs_parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT", &t));
    assert_int_equal(t, 784111777);
    assert_true(fs_parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT", &t));
    assert_int_equal(t, 784111777);
    assert_true(fs_parse_http_date("Sun Nov  6 08:49:37 1994", &t));
    assert_int_equal(t, 784111777);
    assert_false(fs_parse_http_date("Sun, 06 Nov 1994 08:49:37 PST", &t));
    assert_false(fs_parse_http_date("Sun, 31 Feb 1994 08:49:37 GMT", &t));
    assert_false(fs_parse_http_date("", &t));
    assert_false(fs_parse_http_date("garbage", &t));
    char buf[40];
    fs_format_http_date(784111777, buf, sizeof buf);
    assert_string_equal(buf, "Sun, 06 Nov 1994 08:49:37 GMT");
}

static void test_backoff(void **state)
{
    (void)state;
    for (unsigned a = 0; a < 20; a++) {
        int64_t d = fs_backoff_ms(a, 60000);
        assert_true(d >= 0 && d <= 60000);
    }
    int64_t first = fs_backoff_ms(0, 300000);
    assert_true(first >= 500 && first <= 1000);
    int64_t fourth = fs_backoff_ms(3, 300000); /* 8 s with jitter */
    assert_true(fourth >= 4000 && fourth <= 8000);
    int64_t capped = fs_backoff_ms(30, 2000); /* the cap, with jitter */
    assert_true(capped >= 1000 && capped <= 2000);
    int64_t unset = fs_backoff_ms(30, 0); /* no cap given: 300 s */
    assert_true(unset >= 150000 && unset <= 300000);
}

static void test_instants(void **state)
{
    (void)state;
    int64_t t;
    assert_true(fs_parse_instant("2026-11-28T21:23:58+00:00", &t));
    int64_t z;
    assert_true(fs_parse_instant("2026-11-28T21:23:58.123Z", &z));
    assert_int_equal(t, z);
    assert_true(fs_parse_instant("2026-11-28T23:23:58+02:00", &z));
    assert_int_equal(t, z);
    assert_false(fs_parse_instant("2026-11-28", &z));
    assert_false(fs_parse_instant("2026-13-28T21:23:58Z", &z));
    assert_false(fs_parse_instant("2026-11-28T21:23:58", &z));
    char buf[32];
    fs_format_instant(t, buf, sizeof buf);
    assert_string_equal(buf, "2026-11-28T21:23:58Z");
}

static void test_urls(void **state)
{
    (void)state;
    char *u = NULL;
    assert_int_equal(fs_url_resolve("https://h/fhir/r4", "Patient?x=1", true, &u, NULL), 0);
    assert_string_equal(u, "https://h/fhir/r4/Patient?x=1");
    fs_free(u);
    assert_int_equal(fs_url_resolve("https://h/fhir/r4/", "/other/p", true, &u, NULL), 0);
    assert_string_equal(u, "https://h/other/p");
    fs_free(u);
    assert_int_equal(fs_url_resolve("https://h/a", "https://x:8443/b", true, &u, NULL), 0);
    assert_string_equal(u, "https://x:8443/b");
    fs_free(u);
    assert_int_equal(fs_url_origin("HTTPS://Example.COM/x", &u, NULL), 0);
    assert_string_equal(u, "https://example.com:443");
    fs_free(u);
    assert_true(fs_url_same_origin("https://a.com/x", "https://a.com:443/y"));
    assert_false(fs_url_same_origin("https://a.com/x", "http://a.com/x"));
    assert_false(fs_url_same_origin("https://a.com/x", "https://a.com:8443/x"));
    assert_false(fs_url_same_origin("https://a.com/x", "https://b.a.com/x"));
    assert_false(fs_url_same_origin("http://127.0.0.1:1/x", "http://localhost:1/x"));
    bool same = true;
    assert_int_equal(fs_url_compare_origins("https://a.com/x", "not a url", &same), FHIRSYNC_OK);
    assert_false(same);
    assert_int_equal(fs_url_compare_origins(NULL, "https://a.com/x", &same), FHIRSYNC_OK);
    assert_false(same);
    /* out of memory is said, not taken for "another origin" */
    fs_alloc_fail_at(1);
    assert_int_equal(fs_url_compare_origins("https://a.com/x", "https://a.com/y", &same),
                     FHIRSYNC_E_NOMEM);
    fs_alloc_fail_at(0);
    assert_false(same);
    assert_false(fs_url_same_origin(NULL, NULL));
    fhirsync_error err = {0};
    assert_int_equal(fs_url_check_transport("https://ehr.example/fhir", "base", &err), 0);
    assert_int_equal(fs_url_check_transport("http://127.0.0.1:8080/fhir", "base", &err), 0);
    assert_int_equal(fs_url_check_transport("http://localhost/fhir", "base", &err), 0);
    assert_int_equal(fs_url_check_transport("http://[::1]:80/fhir", "base", &err), 0);
    assert_int_equal(fs_url_check_transport("http://ehr.example/fhir", "base", &err),
                     FHIRSYNC_E_URL);
    assert_non_null(strstr(err.message, "plain http"));
    assert_int_equal(fs_url_check_transport("http://127.0.0.1.evil.com/", "base", &err),
                     FHIRSYNC_E_URL);
    assert_int_equal(fs_url_check_transport("ftp://x/", "base", &err), FHIRSYNC_E_URL);
    assert_int_equal(fs_url_check_transport("not a url", "base", &err), FHIRSYNC_E_URL);
    char *j = fs_url_join("https://h/fhir/", "/.well-known/smart-configuration");
    assert_string_equal(j, "https://h/fhir/.well-known/smart-configuration");
    fs_free(j);
}

static void test_buf_and_urlencode(void **state)
{
    (void)state;
    fs_buf b;
    fs_buf_init(&b);
    assert_true(fs_buf_append_urlencoded(&b, "system/*.read a+b"));
    assert_string_equal(b.data, "system%2F%2A.read%20a%2Bb");
    fs_buf_reset(&b);
    assert_true(fs_buf_printf(&b, "%d-%s", 42, "x"));
    assert_string_equal(b.data, "42-x");
    char *s = fs_buf_steal(&b);
    assert_string_equal(s, "42-x");
    fs_free(s);
    assert_null(b.data);
}

static void test_error_messages_are_one_redacted_line(void **state)
{
    (void)state;
    fhirsync_error err;
    fs_err(&err, FHIRSYNC_E_AUTH, "server said:\n{\"access_token\":\"leak\"}\r\nend");
    assert_int_equal(err.code, FHIRSYNC_E_AUTH);
    assert_null(strchr(err.message, '\n'));
    assert_null(strstr(err.message, "leak"));
    fs_err_prefix(&err, "step %d", 3);
    assert_true(strncmp(err.message, "step 3: ", 8) == 0);
    assert_string_equal(fhirsync_strerror(FHIRSYNC_E_NOT_FOUND), "not found");
}

/* A registered live secret is masked whatever surrounds it, in logs and error messages alike;
 * released, it no longer is (and the registry is empty again). */
static void test_live_secrets_masked_by_value(void **state)
{
    (void)state;
    const char *token = "Zq81opaqueTOKENvalue";
    size_t before = fs_secret_count();
    char *held = fs_secret_strdup(token);
    assert_non_null(held);
    assert_int_equal(fs_secret_count(), before + 1);
    /* no pattern would catch this: plain prose around the token */
    assert_redacted("invalid token Zq81opaqueTOKENvalue for patient 7", token, "for patient 7");
    assert_redacted("xZq81opaqueTOKENvaluex", token, "x***x");
    fhirsync_error err;
    fs_err(&err, FHIRSYNC_E_AUTH, "OperationOutcome: diagnostics 'bad %s'", token);
    assert_null(strstr(err.message, token));
    char *live = fs_redact_live("hint with Zq81opaqueTOKENvalue inside");
    assert_string_equal(live, "hint with *** inside");
    fs_free(live);
    /* two holders, two registrations: the first release keeps it masked */
    assert_true(fs_secret_register(token));
    assert_int_equal(fs_secret_count(), before + 1);
    fs_secret_free(held);
    assert_redacted("still Zq81opaqueTOKENvalue", token, "still");
    fs_secret_unregister(token);
    assert_int_equal(fs_secret_count(), before);
    char *out = fs_redact("now Zq81opaqueTOKENvalue");
    assert_string_equal(out, "now Zq81opaqueTOKENvalue");
    fs_free(out);
    /* too short to mask by value: registering is accepted but changes nothing */
    assert_true(fs_secret_register("abc"));
    assert_int_equal(fs_secret_count(), before);
    fs_secret_unregister("abc");
}

/* The registry is bounded: registering more than FS_SECRET_MAX values drops the oldest. */
static void test_live_secret_registry_bounded(void **state)
{
    (void)state;
    char value[32];
    for (int i = 0; i < FS_SECRET_MAX + 5; i++) {
        snprintf(value, sizeof value, "bounded-secret-%04d", i);
        assert_true(fs_secret_register(value));
    }
    assert_int_equal(fs_secret_count(), FS_SECRET_MAX);
    assert_redacted("newest bounded-secret-0068", "bounded-secret-0068", "newest");
    char *out = fs_redact("oldest bounded-secret-0000");
    assert_non_null(strstr(out, "bounded-secret-0000"));
    fs_free(out);
    fs_secret_clear_all();
    assert_int_equal(fs_secret_count(), 0);
}

/* fhirsync's own hints are prose: a sensitive name followed by "name: word" is not a value. */
static void test_redact_leaves_prose_alone(void **state)
{
    (void)state;
    const char *hint = "- the server cannot verify your assertion: register the JWKS of this key";
    char *out = fs_redact(hint);
    assert_string_equal(out, hint);
    fs_free(out);
    out = fs_redact_live(hint);
    assert_string_equal(out, hint);
    fs_free(out);
    /* still masked: header lines, secret-looking values, '=' and quoted JSON */
    assert_redacted("Authorization: token", "token", "Authorization:");
    assert_redacted("client_secret: s3cr3t-Value", "s3cr3t-Value", "client_secret");
    assert_redacted("assertion: eyJhbGciOiJSUzM4NCJ9x.eyJpc3MiOiJ4In0", "eyJpc3MiOiJ4In0", NULL);
    assert_redacted("password=plainword", "plainword", NULL);
    assert_redacted("{\"client_secret\": \"plainword\"}", "plainword", NULL);
    assert_redacted("client_secret:plainword", "plainword", NULL);
}

int main(void)
{
    fhirsync_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_array_grow),
        cmocka_unit_test(test_b64_plain),
        cmocka_unit_test(test_write_all),
        cmocka_unit_test(test_redact_headers_and_forms),
        cmocka_unit_test(test_public_redact),
        cmocka_unit_test(test_redact_unterminated_and_empty),
        cmocka_unit_test(test_http_dates),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_instants),
        cmocka_unit_test(test_urls),
        cmocka_unit_test(test_buf_and_urlencode),
        cmocka_unit_test(test_error_messages_are_one_redacted_line),
        cmocka_unit_test(test_live_secrets_masked_by_value),
        cmocka_unit_test(test_live_secret_registry_bounded),
        cmocka_unit_test(test_redact_leaves_prose_alone),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    fhirsync_global_cleanup();
    return rc;
}
