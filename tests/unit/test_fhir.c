/* unit/test_fhir.c: the FHIR REST client's offline parts: the Bundle scanner (exact bytes of
 * entry resources, the JSON grammar, UTF-8 and escapes, repeated member names, the values it
 * reads), Bundle page parsing, OperationOutcome messages, the
 * token-bucket rate limiter (with a fake clock and a fake sleeper: no timing in the assertions)
 * and its per-base-URL keys, the origin rule for absolute URLs, and which failed requests are
 * sent again (a local socket that hangs up; a closed port; a transfer cancelled mid-way).
 * Requests against a server are covered by tests/integration/test_rest_client.sh with the
 * sandbox. */
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
    assert_span(bundle, scan.entries[0].resource, r0);
    assert_span(bundle, scan.entries[1].resource, r1);
    assert_span(bundle, scan.resource_type, "\"Bundle\"");
    assert_int_equal(scan.link_count, 2);
    assert_span(bundle, scan.links[1].value,
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
    assert_span(bundle, scan.entries[0].resource, "{\"resourceType\":\"A\"}");
    assert_int_equal(scan.link_count, 1);
    /* an entry that is not an object or has no resource: an empty span */
    const char *odd = "{\"entry\":[1,{\"fullUrl\":\"x\"},null,{\"resource\":[1]}]}";
    assert_int_equal(fs_bundle_scan_run(S(odd), &scan), FS_SPAN_OK);
    assert_int_equal(scan.entry_count, 4);
    assert_int_equal(scan.entries[0].resource.len, 0);
    assert_int_equal(scan.entries[1].resource.len, 0);
    assert_int_equal(scan.entries[2].resource.len, 0);
    assert_span(odd, scan.entries[3].resource, "[1]");
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

/* Scan a Bundle whose only entry's resource is {"resourceType":"A","v":VALUE}. */
static fs_span_status scan_value_in_resource(const char *value)
{
    char text[256];
    snprintf(text, sizeof text, "{\"entry\":[{\"resource\":{\"resourceType\":\"A\",\"v\":%s}}]}",
             value);
    fs_bundle_scan scan;
    fs_bundle_scan_init(&scan);
    fs_span_status st = fs_bundle_scan_run(S(text), &scan);
    fs_bundle_scan_clear(&scan);
    return st;
}

static void test_span_strings(void **state)
{
    (void)state;
    /* what jansson accepts in strings, the scanner accepts */
    const char *ok[] = {"\"\xc3\xa9\"",                     /* é, two bytes */
                        "\"\xe2\x82\xac\"",                 /* €, three */
                        "\"\xf0\x9f\x98\x80\"",             /* U+1F600, four */
                        "\"\xef\xbf\xbf\xf4\x8f\xbf\xbf\"", /* U+FFFF, U+10FFFF */
                        "\"\\ud83d\\ude00\"",               /* a surrogate pair */
                        "\"\\u00e9\\u20AC\\uffff\"",
                        "\"a long string of plain ASCII text, longer than sixteen bytes \"",
                        "\"sixteen bytes, then \xc3\xa9 and \\\" and \\\\ at odd places\"",
                        NULL};
    for (size_t i = 0; ok[i]; i++)
        if (scan_value_in_resource(ok[i]) != FS_SPAN_OK)
            fail_msg("refused the valid string %s", ok[i]);
    /* what it refuses: malformed UTF-8, escapes jansson refuses too */
    const char *bad[] = {"\"\x80\"",             /* a stray continuation byte */
                         "\"\xc3\"",             /* a truncated sequence */
                         "\"\xc3(\"",            /* a lead byte without its tail */
                         "\"\xc0\xaf\"",         /* overlong '/' */
                         "\"\xe0\x80\xaf\"",     /* overlong, three bytes */
                         "\"\xf0\x80\x80\xaf\"", /* overlong, four bytes */
                         "\"\xed\xa0\x80\"",     /* U+D800 encoded */
                         "\"\xf4\x90\x80\x80\"", /* beyond U+10FFFF */
                         "\"\xf5\x80\x80\x80\"", /* an invalid lead byte */
                         "\"\xff\"",             /* never in UTF-8 */
                         "\"0123456789abcdef\x80 past the first sixteen\"",
                         "\"\\ud800\"",        /* a lone high surrogate */
                         "\"\\ud800x\"",       /* ...followed by text */
                         "\"\\ud800\\u0041\"", /* ...followed by no low half */
                         "\"\\udc00\"",        /* a lone low surrogate */
                         "\"\\u0000\"",        /* NUL: jansson refuses it too */
                         "\"a\\u00\"",         /* a short escape */
                         "\"\x7f\x1f\"",       /* a control character */
                         NULL};
    for (size_t i = 0; bad[i]; i++)
        if (scan_value_in_resource(bad[i]) != FS_SPAN_SYNTAX)
            fail_msg("accepted the malformed string %s", bad[i]);
    /* invalid UTF-8 in a member name, and outside strings */
    fs_bundle_scan scan;
    fs_bundle_scan_init(&scan);
    assert_int_equal(fs_bundle_scan_run(S("{\"entr\xff\":[]}"), &scan), FS_SPAN_SYNTAX);
    assert_non_null(strstr(scan.error, "UTF-8"));
    assert_int_equal(scan.error_offset, 6);
    assert_int_equal(fs_bundle_scan_run(S("\xef\xbb\xbf{}"), &scan), FS_SPAN_SYNTAX); /* BOM */
    fs_bundle_scan_clear(&scan);
}

static void test_span_numbers_and_tops(void **state)
{
    (void)state;
    /* numbers are checked against the grammar only: beyond 64 bits or a double, still JSON */
    assert_int_equal(scan_value_in_resource("123456789012345678901234567890"), FS_SPAN_OK);
    assert_int_equal(scan_value_in_resource("1e400"), FS_SPAN_OK);
    assert_int_equal(scan_value_in_resource("-0.000120"), FS_SPAN_OK);
    assert_int_equal(scan_value_in_resource("1.5e"), FS_SPAN_SYNTAX);
    assert_int_equal(scan_value_in_resource("[1,[2,{\"a\":[]}],{}]"), FS_SPAN_OK);
    assert_int_equal(scan_value_in_resource("[1,[2,{\"a\":[]}],{}"), FS_SPAN_SYNTAX);
    assert_int_equal(scan_value_in_resource("{\"a\" 1}"), FS_SPAN_SYNTAX);
    assert_int_equal(scan_value_in_resource("{1:2}"), FS_SPAN_SYNTAX);
    /* a valid text that is not an object, and texts that are not one value */
    fs_bundle_scan scan;
    fs_bundle_scan_init(&scan);
    assert_int_equal(fs_bundle_scan_run(S(" [1, {\"entry\":[]}] "), &scan), FS_SPAN_NOT_OBJECT);
    assert_int_equal(fs_bundle_scan_run(S("\"Bundle\""), &scan), FS_SPAN_NOT_OBJECT);
    assert_int_equal(fs_bundle_scan_run(S("[] []"), &scan), FS_SPAN_SYNTAX);
    assert_int_equal(fs_bundle_scan_run(S("{} {}"), &scan), FS_SPAN_SYNTAX);
    assert_non_null(strstr(scan.error, "after the JSON value"));
    assert_int_equal(fs_bundle_scan_run(S("  \n"), &scan), FS_SPAN_SYNTAX);
    assert_int_equal(fs_bundle_scan_run(NULL, 0, &scan), FS_SPAN_SYNTAX);
    fs_bundle_scan_clear(&scan);

    int64_t v = 0;
    const char *text = "[7, -12, 2.0, 3e2, 2.5, 99999999999999999999, -9223372036854775808]";
    fs_span n[] = {{1, 1}, {4, 3}, {9, 3}, {14, 3}, {19, 3}, {24, 20}, {46, 20}};
    assert_true(fs_span_number_integer(text, n[0], &v) && v == 7);
    assert_true(fs_span_number_integer(text, n[1], &v) && v == -12);
    assert_true(fs_span_number_integer(text, n[2], &v) && v == 2); /* as jansson-based code did */
    assert_true(fs_span_number_integer(text, n[3], &v) && v == 300);
    assert_false(fs_span_number_integer(text, n[4], &v));
    assert_false(fs_span_number_integer(text, n[5], &v));
    assert_true(fs_span_number_integer(text, n[6], &v) && v == INT64_MIN);
}

static void test_span_read_values(void **state)
{
    (void)state;
    /* what the iterator reads: each entry's resource type and search mode, each link's relation
     * and url, escapes decoded */
    const char *bundle =
        "{\"resourceType\":\"B\\u0075ndle\",\"total\":12,"
        "\"link\":[{\"relation\":\"self\",\"url\":\"a\"},\"odd\","
        "{\"url\":\"https:\\/\\/h\\/fhir?a=1\\u0026b=\\u00e9\",\"relation\":\"n\\u0065xt\"}],"
        "\"entry\":[{\"resource\":{\"id\":\"1\",\"resourceType\":\"Observation\","
        "\"contained\":[{\"resourceType\":\"Patient\"}]},\"search\":{\"mode\":\"match\"}},"
        "{\"search\":{\"mode\":\"outc\\u006fme\"},\"resource\":{\"resourceType\":"
        "\"OperationOutcome\"}},"
        "{\"resource\":{\"resourceType\":{\"not\":\"a string\"},\"x\":\"Patient\"}},"
        "{\"resource\":{\"resourceType\":\"A\",\"resourceType\":7}},"
        "{\"resource\":{\"resourceType\":7,\"resourceType\":\"B\"}},"
        "{\"resource\":[1]}]}";
    fs_bundle_scan scan;
    fs_bundle_scan_init(&scan);
    assert_int_equal(fs_bundle_scan_run(S(bundle), &scan), FS_SPAN_OK);
    assert_span(bundle, scan.resource_type, "\"B\\u0075ndle\"");
    assert_span(bundle, scan.total, "12");
    assert_int_equal(scan.link_count, 3);
    assert_true(scan.links[0].is_object && !scan.links[0].next && scan.links[0].has_url);
    assert_false(scan.links[1].is_object);
    assert_span(bundle, scan.links[1].value, "\"odd\"");
    assert_true(scan.links[2].next && scan.links[2].has_url);
    char *url = fs_span_string_decode(bundle, scan.links[2].url);
    assert_string_equal(url, "https://h/fhir?a=1&b=\xc3\xa9");
    fs_free(url);
    assert_true(fs_span_string_equals(bundle, scan.links[2].url, "https://h/fhir?a=1&b=\xc3\xa9"));
    assert_false(fs_span_string_equals(bundle, scan.links[2].url, "https://h/fhir?a=1&b="));

    assert_int_equal(scan.entry_count, 6);
    const fs_bundle_entry *e = scan.entries;
    assert_true(e[0].is_object && e[0].resource_object && e[0].has_type && !e[0].outcome);
    assert_span(bundle, e[0].resource_type, "Observation"); /* not the contained Patient */
    assert_true(e[1].has_type && e[1].outcome);
    assert_false(e[2].has_type); /* an object is no type, nor is a string inside it */
    assert_false(e[3].has_type); /* a repeated name: the last one counts */
    assert_true(e[4].has_type);
    assert_span(bundle, e[4].resource_type, "B");
    assert_false(e[5].resource_object);
    assert_span(bundle, e[5].resource, "[1]");
    fs_bundle_scan_clear(&scan);
}

static void test_span_duplicates(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        fs_span_where where;
        size_t index;
        const char *name;
    } cases[] = {
        {"{\"entry\":[],\"type\":\"searchset\",\"entry\":[]}", FS_IN_BUNDLE, 0, "entry"},
        {"{\"\\u0065ntry\":[],\"entry\":[]}", FS_IN_BUNDLE, 0, "entry"}, /* escapes decoded */
        {"{\"entry\":[{},{\"resource\":{},\"resource\":{}}]}", FS_IN_ENTRY, 1, "resource"},
        {"{\"entry\":[{\"search\":{\"mode\":\"match\",\"mode\":\"outcome\"}}]}", FS_IN_SEARCH, 0,
         "mode"},
        {"{\"link\":[{\"relation\":\"next\",\"url\":\"a\",\"url\":\"b\"}]}", FS_IN_LINK, 0, "url"},
    };
    fs_bundle_scan scan;
    fs_bundle_scan_init(&scan);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        if (fs_bundle_scan_run(S(cases[i].text), &scan) != FS_SPAN_DUPLICATE)
            fail_msg("case %zu: a repeated name was accepted", i);
        assert_int_equal(scan.duplicate_in, cases[i].where);
        assert_int_equal(scan.duplicate_index, cases[i].index);
        assert_true(fs_span_string_equals(cases[i].text, scan.duplicate, cases[i].name));
        assert_int_equal(cases[i].text[scan.error_offset], '"');
    }
    /* outside the resources every object counts, however deep: Bundle.meta, entry.request,
     * link extensions, an OperationOutcome answered instead of a Bundle */
    const char *nested[] = {
        "{\"resourceType\":\"Bundle\",\"meta\":{\"tag\":[{\"code\":\"a\",\"code\":\"b\"}]}}",
        "{\"entry\":[{\"request\":{\"method\":\"GET\",\"url\":\"x\",\"method\":\"PUT\"}}]}",
        "{\"link\":[{\"extension\":[{\"url\":\"a\",\"url\":\"b\"}]}]}",
        "{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"code\":\"x\",\"code\":\"y\"}]}",
        NULL};
    for (size_t i = 0; nested[i]; i++) {
        if (fs_bundle_scan_run(S(nested[i]), &scan) != FS_SPAN_DUPLICATE)
            fail_msg("nested case %zu: a repeated name was accepted", i);
        assert_true(scan.duplicate_nested);
    }
    assert_int_equal(scan.duplicate_in, FS_IN_BUNDLE);
    assert_int_equal(fs_bundle_scan_run(S(nested[1]), &scan), FS_SPAN_DUPLICATE);
    assert_int_equal(scan.duplicate_in, FS_IN_ENTRY);
    assert_true(fs_span_string_equals(nested[1], scan.duplicate, "method"));
    /* inside a resource, names are passed on as received: not checked */
    const char *inside = "{\"entry\":[{\"resource\":{\"resourceType\":\"A\",\"id\":\"1\",\"id\":"
                         "\"2\",\"x\":{\"a\":1,\"a\":2}}}]}";
    assert_int_equal(fs_bundle_scan_run(S(inside), &scan), FS_SPAN_OK);
    /* names that only look alike are distinct */
    assert_int_equal(
        fs_bundle_scan_run(S("{\"entry\":[],\"Entry\":[],\"entry \":[],\"e\":1}"), &scan),
        FS_SPAN_OK);
    /* many members: the sorted check finds the repeat, and only a real one */
    char many[8192];
    size_t n = (size_t)snprintf(many, sizeof many, "{");
    for (int i = 0; i < 200; i++)
        n += (size_t)snprintf(many + n, sizeof many - n, "\"m%d\":%d,", i, i);
    snprintf(many + n, sizeof many - n, "\"m17\":0}");
    assert_int_equal(fs_bundle_scan_run(S(many), &scan), FS_SPAN_DUPLICATE);
    assert_true(fs_span_string_equals(many, scan.duplicate, "m17"));
    snprintf(many + n, sizeof many - n, "\"m\\u0031\\u0039\\u0039\":0}"); /* "m199" escaped */
    assert_int_equal(fs_bundle_scan_run(S(many), &scan), FS_SPAN_DUPLICATE);
    snprintf(many + n, sizeof many - n, "\"m200\":0}");
    assert_int_equal(fs_bundle_scan_run(S(many), &scan), FS_SPAN_OK);
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
    /* escapes are decoded where values are read; a resource with a repeated name inside is
     * handed on as received */
    const char *escaped =
        "{\"resourceType\":\"B\\u0075ndle\",\"total\":2.0,\"link\":[{\"relation\":\"next\","
        "\"url\":\"https:\\/\\/h\\/fhir\\/Observation?page=2\\u0026x=\\\"y\\\"\"}],\"entry\":["
        "{\"resource\":{\"resourceType\":\"Observation\",\"id\":\"1\",\"id\":\"2\"}}]}";
    assert_int_equal(fs_fhir_page_parse(S(escaped), "u", &page, &err), FHIRSYNC_OK);
    assert_string_equal(page.next, "https://h/fhir/Observation?page=2&x=\"y\"");
    assert_int_equal(page.total, 2);
    assert_int_equal(page.count, 1);
    assert_span(escaped, page.entries[0].resource,
                "{\"resourceType\":\"Observation\",\"id\":\"1\",\"id\":\"2\"}");
    /* a failure resets the page, and the next parse starts clean */
    assert_int_equal(
        fs_fhir_page_parse(S("{\"resourceType\":\"Bundle\",\"entry\":[7]}"), "u", &page, &err),
        FHIRSYNC_E_PROTOCOL);
    assert_int_equal(page.count, 0);
    assert_null(page.next);
    assert_int_equal(fs_fhir_page_parse(S(body), "u", &page, &err), FHIRSYNC_OK);
    assert_int_equal(page.count, 3);
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
        {"{\"resourceType\":\"Bundle\",\"entry\":[],\"entry\":[]}",
         "duplicate member \"entry\" in the Bundle"},
        {"{\"resourceType\":\"Bundle\",\"link\":[{\"relation\":\"next\",\"url\":\"a\","
         "\"relation\":\"self\"}]}",
         "duplicate member \"relation\" in Bundle.link[0]"},
        {"{\"resourceType\":\"Bundle\",\"entry\":[{\"resource\":{\"resourceType\":\"A\"},"
         "\"resource\":{\"resourceType\":\"B\"}}]}",
         "duplicate member \"resource\" in Bundle.entry[0]"},
        {"{\"resourceType\":\"Bundle\",\"entry\":[{\"response\":{\"status\":\"200\","
         "\"status\":\"201\"}}]}",
         "duplicate member \"status\" in an object inside Bundle.entry[0]"},
        {"{\"resourceType\":\"Bundle\",\"entry\":[", "not a FHIR Bundle"},
        {"{\"resourceType\":\"Bundle\",\"entry\":[", "not valid JSON: the end of the text"},
        {"{\"resourceType\":\"Bundle\",\"id\":\"\xc3\x28\"}",
         "not valid JSON: invalid UTF-8 in a string at byte 31"},
        {"{\"resourceType\":\"Bundle\",\"id\":\"\\ud800\"}", "surrogate"},
        {"[{\"resourceType\":\"Bundle\"}]", "(JSON, but not an object)"},
        {"{\"resourceType\":\"Bundle\"} {}", "more bytes after the JSON value"},
        {"{\"resourceType\":\"Bund\\nle\"}", "resourceType is 'Bund?le', not Bundle"},
        {"{\"resourceType\":[\"Bundle\"]}", "resourceType is 'missing'"},
        {"{\"resourceType\":\"Bundle\",\"entry\":[{\"resource\":{\"resourceType\":\"\"}}]}",
         "Bundle.entry[0].resource has no resourceType"},
        {"{\"resourceType\":\"Bundle\",\"link\":[{\"relation\":\"next\",\"url\":\"\"}]}",
         "Bundle.link[0] (next) has no url"},
        {"{\"resourceType\":\"Bundle\",\"link\":[\"next\"]}", "Bundle.link[0] is not an object"},
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

/* Every allocation of a page parse failing in turn: each run ends in FHIRSYNC_E_NOMEM with an
 * empty page, or succeeds once no failure fired; nothing leaks (ASan). The page has more than
 * PAIRWISE_NAMES top-level members (the sorted repeat check allocates), nested objects outside
 * the resources (the name stacks grow), links and an escaped next URL. */
static void test_page_parse_alloc_walk(void **state)
{
    (void)state;
    char body[8192];
    size_t n = (size_t)snprintf(body, sizeof body, "{\"resourceType\":\"Bundle\",");
    for (int i = 0; i < 40; i++)
        n += (size_t)snprintf(body + n, sizeof body - n, "\"x%d\":{\"a\":[{\"b\":%d}]},", i, i);
    n += (size_t)snprintf(body + n, sizeof body - n,
                          "\"link\":[{\"relation\":\"self\",\"url\":\"a\"},{\"relation\":"
                          "\"next\",\"url\":\"b?\\u0026c\"}],\"entry\":[");
    for (int i = 0; i < 150; i++)
        n += (size_t)snprintf(body + n, sizeof body - n,
                              "%s{\"resource\":{\"resourceType\":\"A\",\"id\":\"%d\"}}",
                              i ? "," : "", i);
    snprintf(body + n, sizeof body - n, "]}");
    unsigned long failures = 0;
    for (unsigned long at = 1; at < 1000; at++) {
        fs_fhir_page page;
        fs_fhir_page_init(&page);
        fhirsync_error err = {0};
        fs_alloc_fail_at(at);
        fhirsync_code rc = fs_fhir_page_parse(S(body), "u", &page, &err);
        bool fired = fs_alloc_failure_fired();
        fs_alloc_fail_at(0);
        if (!fired) {
            assert_int_equal(rc, FHIRSYNC_OK);
            assert_int_equal(page.count, 150);
            assert_string_equal(page.next, "b?&c");
            fs_fhir_page_clear(&page);
            break;
        }
        failures++;
        if (rc != FHIRSYNC_E_NOMEM)
            fail_msg("allocation %lu failed: code %d, '%s'", at, rc, err.message);
        assert_int_equal(page.count, 0);
        assert_null(page.next);
        fs_fhir_page_clear(&page);
    }
    assert_true(failures >= 5);
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
    /* 120 per minute: 500 ms apart; the same base URL and client share a bucket, however the
     * URL's origin is spelled, with or without a trailing slash, query or fragment */
    const char *p1 = "https://fhir4.eclinicalworks.com/fhir/r4/PRACTICE1";
    assert_int_equal(fs_ratelimit_acquire(p1, "c", 120, &err), FHIRSYNC_OK);
    assert_int_equal(fs_ratelimit_acquire("HTTPS://FHIR4.eClinicalWorks.com:443/fhir/r4/PRACTICE1/",
                                          "c", 120, &err),
                     FHIRSYNC_OK);
    assert_int_equal(
        fs_ratelimit_acquire("https://fhir4.eclinicalworks.com/fhir/r4/PRACTICE1//?x=1#f", "c", 120,
                             &err),
        FHIRSYNC_OK);
    assert_int_equal(sleeps, 2);
    assert_int_equal(slept[0], 500);
    assert_int_equal(slept[1], 500);
    /* eClinicalWorks counts per practice, named in the path: another practice on the same
     * origin is another bucket; so are another client and another host */
    assert_int_equal(
        fs_ratelimit_acquire("https://fhir4.eclinicalworks.com/fhir/r4/PRACTICE2", "c", 120, &err),
        FHIRSYNC_OK);
    assert_int_equal(
        fs_ratelimit_acquire("https://fhir4.eclinicalworks.com/fhir/r4/practice1", "c", 120, &err),
        FHIRSYNC_OK); /* paths are case-sensitive */
    assert_int_equal(
        fs_ratelimit_acquire("https://fhir4.eclinicalworks.com/fhir/r4", "c", 120, &err),
        FHIRSYNC_OK);
    assert_int_equal(fs_ratelimit_acquire(p1, "other", 120, &err), FHIRSYNC_OK);
    assert_int_equal(fs_ratelimit_acquire("https://b/fhir", "c", 120, &err), FHIRSYNC_OK);
    assert_int_equal(fs_ratelimit_acquire("not a url", "c", 120, &err), FHIRSYNC_OK);
    assert_int_equal(sleeps, 2);
    /* a longer path on the same origin (a resource URL) is not the base: its own bucket, so
     * callers pass the FHIR base URL, as client.c and token.c do */
    assert_int_equal(fs_ratelimit_acquire("https://b/fhir/Patient", "c", 120, &err), FHIRSYNC_OK);
    assert_int_equal(sleeps, 2);
    assert_int_equal(fs_ratelimit_acquire("https://b/fhir/", "c", 120, &err), FHIRSYNC_OK);
    assert_int_equal(sleeps, 3);
    /* cancellation during the wait */
    cancel_sleep = true;
    assert_int_equal(fs_ratelimit_acquire("https://b/fhir", "c", 120, &err), FHIRSYNC_E_CANCELLED);
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
    bool same = false;
    assert_int_equal(fs_fhir_same_origin(c, "http://127.0.0.1:9/x", &same), FHIRSYNC_OK);
    assert_true(same);
    assert_int_equal(fs_fhir_same_origin(c, "http://127.0.0.1:90/x", &same), FHIRSYNC_OK);
    assert_false(same);
    assert_int_equal(fs_fhir_same_origin(c, NULL, &same), FHIRSYNC_OK);
    assert_false(same);
    assert_int_equal(fs_fhir_same_origin(c, "not a url", &same), FHIRSYNC_OK);
    assert_false(same);
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
 * request reached it, so a POST must not be sent again. With `hold`, it answers nothing and keeps
 * the connection open instead, after calling fhirsync_cancel(): the client's transfer is in
 * progress when the cancellation comes. */
typedef struct hang_up_server {
    int fd;
    int port;
    atomic_int accepted;
    atomic_bool stop;
    atomic_bool hold;
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
        if (atomic_load(&s->hold)) {
            fhirsync_cancel();
            /* until the client gives up (its end closes) or the test ends */
            struct pollfd q = {.fd = c, .events = POLLIN};
            while (!atomic_load(&s->stop) && (poll(&q, 1, 50) <= 0 || read(c, buf, 1) > 0))
                ;
        }
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
    assert_true(resp.request_sent);

    /* a POST that reached the server is never replayed: the http layer says it was sent,
     * whatever libcurl's message (the decision no longer reads message texts) */
    retry_lines = 0;
    fs_fhir_request post = {
        .method = "POST", .target = url, .body = "{}", .body_len = 2, .anonymous = true};
    assert_int_equal(fs_fhir_perform(f->client, &post, &resp, &err), FHIRSYNC_E_NETWORK);
    assert_int_equal(atomic_load(&srv.accepted), 3);
    assert_int_equal(retry_lines, 0);
    assert_true(resp.request_sent);

    /* fhirsync_cancel() during a transfer: it stops (libcurl's progress callback), is reported
     * as a cancellation, and is not retried as a network error would be */
    atomic_store(&srv.hold, true);
    retry_lines = 0;
    assert_int_equal(fs_fhir_perform(f->client, &get, &resp, &err), FHIRSYNC_E_CANCELLED);
    assert_int_equal(err.code, FHIRSYNC_E_CANCELLED);
    assert_non_null(strstr(err.message, "cancelled"));
    assert_int_equal(atomic_load(&srv.accepted), 4);
    assert_int_equal(retry_lines, 0);
    fhirsync_cancel_reset();
    hang_up_stop(&srv);

    /* a POST whose connection was refused never reached anyone: it may be retried */
    retry_lines = 0;
    post.target = url; /* the port is closed now */
    assert_int_equal(fs_fhir_perform(f->client, &post, &resp, &err), FHIRSYNC_E_NETWORK);
    assert_int_equal(retry_lines, 1);
    assert_false(resp.request_sent);

    /* cancellation stops before anything is sent */
    fhirsync_cancel();
    assert_int_equal(fs_fhir_perform(f->client, &get, &resp, &err), FHIRSYNC_E_CANCELLED);
    fhirsync_cancel_reset();
    fs_http_response_clear(&resp);
    fhirsync_log_set(NULL, NULL, FHIRSYNC_LOG_ERROR);
}

/* A body buffered into the caller's buffer (fs_fhir_request.into): capped like a response body,
 * and the cap is reported as such, not as a cancellation. A one-shot server answers 200 with a
 * body larger than the cap. */
static void *answer_big(void *arg)
{
    int fd = *(int *)arg;
    int c = accept(fd, NULL, NULL);
    if (c < 0)
        return NULL;
    char buf[4096];
    (void)read(c, buf, sizeof buf);
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\n"
                               "Content-Length: 5000\r\nConnection: close\r\n\r\n";
    char body[5000];
    memset(body, ' ', sizeof body);
    body[0] = '{';
    body[sizeof body - 1] = '}';
    (void)!write(c, head, sizeof head - 1);
    (void)!write(c, body, sizeof body);
    close(c);
    return NULL;
}

static void test_buffer_cap(void **state)
{
    fixture *f = *state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/fhir/Patient", ntohs(addr.sin_port));
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, answer_big, &fd), 0);
    fs_buf into;
    fs_buf_init(&into);
    assert_true(fs_buf_append(&into, "stale", 5));
    fs_http_response resp;
    fs_http_response_init(&resp);
    fhirsync_error err = {0};
    fs_fhir_request req = {.target = url, .anonymous = true, .into = &into, .max_body = 4096};
    assert_int_equal(fs_fhir_perform(f->client, &req, &resp, &err), FHIRSYNC_E_TOO_LARGE);
    assert_non_null(strstr(err.message, "larger than the 4096-byte limit"));
    pthread_join(thread, NULL);
    /* the same request with room for it: the body lands in the buffer, emptied first */
    assert_int_equal(pthread_create(&thread, NULL, answer_big, &fd), 0);
    req.max_body = 5000;
    assert_int_equal(fs_fhir_perform(f->client, &req, &resp, &err), FHIRSYNC_OK);
    pthread_join(thread, NULL);
    assert_int_equal(resp.status, 200);
    assert_int_equal(into.len, 5000);
    assert_int_equal(into.data[0], '{');
    assert_int_equal(resp.body.len, 0);
    fs_buf_free(&into);
    fs_http_response_clear(&resp);
    close(fd);
}

/* ---- the public client against a scripted server ------------------------------------------- */

/* Answers `count` connections, one request each: the token POST, a search page of two Patients
 * (no next link), a redirect-free read, and a 404 with an OperationOutcome for anything else. */
typedef struct script_server {
    int fd;
    int count;
} script_server;

static void *answer_script(void *arg)
{
    script_server *s = arg;
    for (int i = 0; i < s->count; i++) {
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            break;
        char req[8192];
        size_t got = 0;
        ssize_t n;
        while (got < sizeof req - 1 && (n = read(c, req + got, sizeof req - 1 - got)) > 0) {
            got += (size_t)n;
            req[got] = '\0';
            char *end = strstr(req, "\r\n\r\n");
            const char *cl = strcasestr(req, "Content-Length:");
            size_t head_len = end ? (size_t)(end + 4 - req) : 0;
            if (end && (!cl || cl > end || got >= head_len + strtoul(cl + 15, NULL, 10)))
                break;
        }
        req[got] = '\0';
        const char *status = "200 OK", *body;
        if (strncmp(req, "POST /token", 11) == 0)
            body = "{\"access_token\":\"t-1\",\"token_type\":\"bearer\",\"expires_in\":300,"
                   "\"scope\":\"system/*.read\"}";
        else if (strncmp(req, "GET /fhir/Patient?", 18) == 0)
            body = "{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"total\":2,\"entry\":["
                   "{\"resource\":{\"resourceType\":\"Patient\",\"id\":\"a\"}},"
                   "{\"resource\":{\"resourceType\":\"Patient\",\"id\":\"b\"}}]}";
        else if (strncmp(req, "GET /fhir/Patient/a ", 20) == 0)
            body = "{\"resourceType\":\"Patient\",\"id\":\"a\"}";
        else {
            status = "404 Not Found";
            body = "{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"severity\":\"error\","
                   "\"code\":\"not-found\",\"diagnostics\":\"no such thing\"}]}";
        }
        char head[256];
        int hl = snprintf(head, sizeof head,
                          "HTTP/1.1 %s\r\nContent-Type: application/fhir+json\r\n"
                          "X-Test: yes\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                          status, strlen(body));
        (void)!write(c, head, (size_t)hl);
        (void)!write(c, body, strlen(body));
        close(c);
    }
    return NULL;
}

/* The response accessors, the search counters and the client's error model (errcode and errmsg
 * set by a failure, cleared by the next success). */
static void test_client_public_calls(void **state)
{
    fixture *f = *state;
    script_server s = {.fd = socket(AF_INET, SOCK_STREAM, 0), .count = 4};
    assert_true(s.fd >= 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    assert_int_equal(bind(s.fd, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_int_equal(listen(s.fd, 8), 0);
    assert_int_equal(getsockname(s.fd, (struct sockaddr *)&addr, &len), 0);
    char base[64], token[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d/fhir", ntohs(addr.sin_port));
    snprintf(token, sizeof token, "http://127.0.0.1:%d/token", ntohs(addr.sin_port));
    fhirsync_error err = {0};
    fhirsync_endpoint *ep = fhirsync_endpoint_new("scripted");
    assert_non_null(ep);
    assert_int_equal(fhirsync_endpoint_set(ep, "base_url", base, "t", &err), FHIRSYNC_OK);
    assert_int_equal(fhirsync_endpoint_set(ep, "client_id", "c1", "t", &err), FHIRSYNC_OK);
    assert_int_equal(fhirsync_endpoint_set(ep, "key_file", f->key, "t", &err), FHIRSYNC_OK);
    assert_int_equal(fhirsync_endpoint_set(ep, "token_url", token, "t", &err), FHIRSYNC_OK);
    assert_int_equal(fhirsync_endpoint_set(ep, "max_retries", "0", "t", &err), FHIRSYNC_OK);
    fhirsync_client *client = NULL;
    assert_int_equal(fhirsync_client_new(ep, &client, &err), FHIRSYNC_OK);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, answer_script, &s), 0);

    /* a failure: the code and the server's words stay in the handle */
    fhirsync_response *resp = NULL;
    assert_int_equal(fhirsync_client_get(client, "Nothing/here", &resp), FHIRSYNC_E_NOT_FOUND);
    assert_null(resp);
    assert_int_equal(fhirsync_client_errcode(client), FHIRSYNC_E_NOT_FOUND);
    assert_non_null(strstr(fhirsync_client_errmsg(client), "no such thing"));

    /* a success clears them; the response tells its URL, status and headers */
    assert_int_equal(fhirsync_client_get(client, "Patient/a", &resp), FHIRSYNC_OK);
    assert_int_equal(fhirsync_client_errcode(client), FHIRSYNC_OK);
    assert_string_equal(fhirsync_client_errmsg(client), "");
    char url[96];
    snprintf(url, sizeof url, "%s/Patient/a", base);
    assert_string_equal(fhirsync_response_url(resp), url);
    assert_int_equal(fhirsync_response_status(resp), 200);
    assert_string_equal(fhirsync_response_header(resp, "x-test"), "yes");
    fhirsync_response_free(resp);

    /* a search counts its pages and resources */
    fhirsync_search *search = NULL;
    assert_int_equal(fhirsync_search_start(client, "Patient?_count=2", &search), FHIRSYNC_OK);
    assert_int_equal(fhirsync_search_count(search), 0);
    const char *resource;
    size_t n = 0;
    while (fhirsync_search_next(search, &resource, NULL) == FHIRSYNC_OK && resource)
        n++;
    assert_int_equal(n, 2);
    assert_int_equal(fhirsync_search_count(search), 2);
    assert_int_equal(fhirsync_search_pages(search), 1);
    assert_int_equal(fhirsync_search_total(search), 2);
    fhirsync_search_free(search);
    pthread_join(thread, NULL);
    close(s.fd);
    fhirsync_client_free(client);
    fhirsync_endpoint_free(ep);
}

int main(void)
{
    fhirsync_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_span_resources_exact),
        cmocka_unit_test(test_span_escaped_names),
        cmocka_unit_test(test_span_values),
        cmocka_unit_test(test_span_malformed_bundles),
        cmocka_unit_test(test_span_strings),
        cmocka_unit_test(test_span_numbers_and_tops),
        cmocka_unit_test(test_span_read_values),
        cmocka_unit_test(test_span_duplicates),
        cmocka_unit_test(test_page_parse),
        cmocka_unit_test(test_page_parse_errors),
        cmocka_unit_test(test_page_parse_alloc_walk),
        cmocka_unit_test(test_outcome),
        cmocka_unit_test(test_describe_and_status_error),
        cmocka_unit_test(test_bucket_arithmetic),
        cmocka_unit_test(test_ratelimit_registry),
        cmocka_unit_test(test_ratelimit_window),
        cmocka_unit_test_setup_teardown(test_origin_rule, setup_client, teardown_client),
        cmocka_unit_test_setup_teardown(test_retry_rules, setup_client, teardown_client),
        cmocka_unit_test_setup_teardown(test_buffer_cap, setup_client, teardown_client),
        cmocka_unit_test_setup_teardown(test_client_public_calls, setup_client, teardown_client),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    fhirsync_global_cleanup();
    return failed;
}
