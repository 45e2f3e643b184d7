/* tests/unit/test_lex.c: the JSON lexer core (json/lex.h) that the NDJSON checker, the
 * search-page scanner and the store's field scanner share, and the loaders' line splitter
 * (core/lines.h): strings (every length around the 16- and 8-byte steps, escapes, surrogates,
 * UTF-8 edge cases, control bytes, NUL), numbers, literals, the iterative skipper (deep nesting
 * against its limit), and lines (exactly at the cap, one byte over, CRLF, no final newline,
 * empty lines, NUL bytes, lines split across chunks at every position). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/lines.h"
#include "json/lex.h"

#define U(s) ((const unsigned char *)(s))

/* ---- the lexer ------------------------------------------------------------------------------- */

/* Scan the string content `text` (n bytes, without the opening quote): the end offset or -1. */
static long string_at(const char *text, size_t n, bool allow_nul, unsigned *seen, fs_lex_error *err,
                      long *at)
{
    const unsigned char *a = NULL;
    *seen = 0;
    *err = FS_LEX_OK;
    const unsigned char *end = fs_lex_string(U(text), U(text) + n, allow_nul, seen, err, &a);
    *at = a ? (long)(a - U(text)) : -1;
    return end ? (long)(end - U(text)) : -1;
}

static void expect_string_ok(const char *text, size_t n, long end, unsigned want_seen)
{
    unsigned seen;
    fs_lex_error err;
    long at;
    long got = string_at(text, n, false, &seen, &err, &at);
    if (got != end)
        fail_msg("string <%.*s>: end %ld, want %ld (fault %s at %ld)", (int)n, text, got, end,
                 fs_lex_strerror(err), at);
    assert_int_equal(seen, want_seen);
}

static void expect_string_bad(const char *text, size_t n, fs_lex_error want, long want_at)
{
    unsigned seen;
    fs_lex_error err;
    long at;
    long got = string_at(text, n, false, &seen, &err, &at);
    if (got != -1 || err != want || at != want_at)
        fail_msg("string <%.*s>: end %ld, fault %d (%s) at %ld, want fault %d at %ld", (int)n, text,
                 got, err, fs_lex_strerror(err), at, want, want_at);
}

static void test_strings(void **state)
{
    (void)state;
    /* plain ASCII of every length around the SSE2 and SWAR steps, the quote at every position */
    char buf[80];
    for (size_t n = 0; n < 70; n++) {
        memset(buf, 'a', n);
        buf[n] = '"';
        memset(buf + n + 1, 'z', sizeof buf - n - 1);
        expect_string_ok(buf, n + 1, (long)n + 1, 0);
        expect_string_ok(buf, sizeof buf, (long)n + 1, 0);
        /* a special byte at every position: a control byte, a backslash escape, UTF-8 */
        memset(buf, 'a', sizeof buf);
        buf[n] = '\x01';
        buf[sizeof buf - 1] = '"';
        expect_string_bad(buf, sizeof buf, FS_LEX_E_CONTROL, (long)n);
        buf[n] = '\0'; /* a raw NUL is a control byte */
        expect_string_bad(buf, sizeof buf, FS_LEX_E_CONTROL, (long)n);
        memcpy(buf + n, "\\n", 2);
        expect_string_ok(buf, sizeof buf, sizeof buf, FS_LEX_ESCAPED);
        memset(buf, 'a', sizeof buf - 1);
        memcpy(buf + n, "\xc3\xa9", 2);
        expect_string_ok(buf, sizeof buf, sizeof buf, FS_LEX_NON_ASCII);
        /* unterminated: the fault is at the end */
        memset(buf, 'a', sizeof buf);
        expect_string_bad(buf, n, FS_LEX_E_UNTERMINATED, (long)n);
    }
    /* escapes */
    expect_string_ok("\\\"\\\\\\/\\b\\f\\n\\r\\t\"", 17, 17, FS_LEX_ESCAPED);
    expect_string_ok("\\u00e9\"", 7, 7, FS_LEX_ESCAPED);
    expect_string_ok("\\uD83D\\uDE00\"", 13, 13, FS_LEX_ESCAPED); /* a surrogate pair */
    expect_string_bad("\\x\"", 3, FS_LEX_E_ESCAPE, 0);
    expect_string_bad("ab\\u12G4\"", 9, FS_LEX_E_HEX, 2);
    expect_string_bad("\\u12\"", 5, FS_LEX_E_HEX, 0); /* too short for four digits */
    expect_string_bad("\\u0000\"", 7, FS_LEX_E_NUL, 0);
    expect_string_bad("\\uDE00\"", 7, FS_LEX_E_LONE_LOW, 0);
    expect_string_bad("\\uD83D\"", 7, FS_LEX_E_LONE_HIGH, 0);
    expect_string_bad("\\uD83D\\u0041\"", 13, FS_LEX_E_LONE_HIGH, 0);
    expect_string_bad("\\", 1, FS_LEX_E_UNTERMINATED, 0);
    /* \u0000 when the caller allows it (the field scanner) */
    unsigned seen;
    fs_lex_error err;
    long at;
    assert_int_equal(string_at("a\\u0000\"", 8, true, &seen, &err, &at), 8);
    assert_int_equal(seen, FS_LEX_ESCAPED | FS_LEX_NUL_ESCAPE);
    /* UTF-8 (RFC 3629): the edges of each row of the table, and what is not UTF-8 */
    static const char *const good[] = {"\xc2\x80",         "\xdf\xbf",        "\xe0\xa0\x80",
                                       "\xed\x9f\xbf",     "\xee\x80\x80",    "\xef\xbf\xbf",
                                       "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf"};
    static const char *const bad[] = {
        "\x80",         "\xc0\xaf",         "\xc1\xbf",         "\xe0\x9f\xbf",
        "\xed\xa0\x80", "\xf0\x8f\xbf\xbf", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80",
        "\xff",         "\xc3\x28",         "\xe2\x82"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        snprintf(buf, sizeof buf, "%s\"", good[i]);
        expect_string_ok(buf, strlen(buf), (long)strlen(buf), FS_LEX_NON_ASCII);
    }
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(buf, sizeof buf, "ab%s\"", bad[i]);
        expect_string_bad(buf, strlen(buf), FS_LEX_E_UTF8, 2);
    }
    /* a sequence cut by the end of the text */
    expect_string_bad("\xe2\x82", 2, FS_LEX_E_UTF8, 0);
}

static void test_numbers_and_literals(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        long end; /* -1: a fault */
        fs_lex_error err;
    } cases[] = {
        {"0", 1, 0},
        {"-0", 2, 0},
        {"123", 3, 0},
        {"1.50", 4, 0},
        {"1e5", 3, 0},
        {"-1.5E+10,", 8, 0},
        {"1E-0]", 4, 0},
        {"01", 1, 0},
        {"-", -1, FS_LEX_E_UNEXPECTED},
        {"-a", -1, FS_LEX_E_UNEXPECTED},
        {"+1", -1, FS_LEX_E_UNEXPECTED},
        {"1.", -1, FS_LEX_E_FRACTION},
        {"1.e5", -1, FS_LEX_E_FRACTION},
        {"1e", -1, FS_LEX_E_EXPONENT},
        {"1e+", -1, FS_LEX_E_EXPONENT},
        {".5", -1, FS_LEX_E_UNEXPECTED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *t = cases[i].text;
        fs_lex_error err = FS_LEX_OK;
        const unsigned char *at = NULL;
        const unsigned char *end = fs_lex_number(U(t), U(t) + strlen(t), &err, &at);
        long got = end ? (long)(end - U(t)) : -1;
        if (got != cases[i].end || (!end && err != cases[i].err))
            fail_msg("number <%s>: %ld (fault %d), want %ld (fault %d)", t, got, err, cases[i].end,
                     cases[i].err);
    }
    assert_ptr_equal(fs_lex_literal(U("true,"), U("true,") + 5), U("true,") + 4);
    const char *f = "false";
    assert_ptr_equal(fs_lex_literal(U(f), U(f) + 5), U(f) + 5);
    assert_null(fs_lex_literal(U(f), U(f) + 4)); /* cut by the end */
    assert_null(fs_lex_literal(U("nul"), U("nul") + 3));
    assert_null(fs_lex_literal(U("tru e"), U("tru e") + 5));
    assert_int_equal(fs_lex_hex4(U("00aF")), 0xaf);
    assert_int_equal(fs_lex_hex4(U("0g00")), -1);
}

/* Skip the value in text: its end offset, or -1 with the fault. */
static long skip_text(const char *text, size_t n, unsigned max_open, fs_lex_error *err)
{
    uint8_t kinds[64];
    assert_true(max_open < 8 * sizeof kinds);
    fs_lex_skip sk = {.max_open = max_open, .kinds = kinds};
    const unsigned char *end = fs_lex_skip_value(U(text), U(text) + n, &sk);
    *err = sk.error;
    return end ? (long)(end - U(text)) : -1;
}

static void test_skip_value(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        long end;
        fs_lex_error err;
    } cases[] = {
        {" {\"a\" : [1, true, null, {\"b\":\"c\"}, []], \"d\":{}} ,", 47, 0},
        {"[]", 2, 0},
        {"\"x\"", 3, 0},
        {"-1.5e3 ", 6, 0},
        {"{\"a\":1,}", -1, FS_LEX_E_NAME},
        {"{\"a\" 1}", -1, FS_LEX_E_COLON},
        {"{\"a\":1 \"b\":2}", -1, FS_LEX_E_OBJECT},
        {"[1 2]", -1, FS_LEX_E_ARRAY},
        {"[1,", -1, FS_LEX_E_END},
        {"", -1, FS_LEX_E_END},
        {"{1:2}", -1, FS_LEX_E_NAME},
        {"[tru]", -1, FS_LEX_E_UNEXPECTED},
        {"[\"a\\u0000\"]", -1, FS_LEX_E_NUL},
        {"@", -1, FS_LEX_E_UNEXPECTED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        fs_lex_error err;
        long got = skip_text(cases[i].text, strlen(cases[i].text), 100, &err);
        if (got != cases[i].end || (got < 0 && err != cases[i].err))
            fail_msg("value <%s>: %ld (fault %s), want %ld", cases[i].text, got,
                     fs_lex_strerror(err), cases[i].end);
    }
    /* deep nesting: exactly at the limit, and one more */
    for (unsigned depth = 1; depth <= 300; depth += 299) {
        char *deep = malloc(2 * (size_t)depth);
        assert_non_null(deep);
        memset(deep, '[', depth);
        memset(deep + depth, ']', depth);
        fs_lex_error err;
        assert_int_equal(skip_text(deep, 2 * depth, depth, &err), (long)(2 * depth));
        assert_int_equal(skip_text(deep, 2 * depth, depth - 1, &err), -1);
        assert_int_equal(err, FS_LEX_E_DEPTH);
        free(deep);
    }
    /* objects and arrays alternating, 400 levels: the kind of each level is remembered */
    {
        enum { D = 400 };
        static char text[D * 8 + 8];
        size_t n = 0;
        for (int i = 0; i < D; i++)
            n += (size_t)sprintf(text + n, i % 2 ? "{\"k\":" : "[");
        text[n++] = '0';
        for (int i = D - 1; i >= 0; i--)
            text[n++] = i % 2 ? '}' : ']';
        uint8_t kinds[D / 8 + 1];
        fs_lex_skip sk = {.max_open = D, .kinds = kinds};
        assert_ptr_equal(fs_lex_skip_value(U(text), U(text) + n, &sk), U(text) + n);
        text[n - 1] = '}'; /* the outermost array closed as an object */
        sk = (fs_lex_skip){.max_open = D, .kinds = kinds};
        assert_null(fs_lex_skip_value(U(text), U(text) + n, &sk));
        assert_int_equal(sk.error, FS_LEX_E_ARRAY);
    }
    /* \u0000 when allowed: reported */
    uint8_t kinds[4];
    fs_lex_skip sk = {.max_open = 8, .kinds = kinds, .allow_nul = true};
    const char *t = "{\"a\":\"\\u0000\"}";
    assert_ptr_equal(fs_lex_skip_value(U(t), U(t) + strlen(t), &sk), U(t) + strlen(t));
    assert_true(sk.saw_nul);
}

/* ---- the line splitter ----------------------------------------------------------------------- */

typedef struct got_lines {
    char text[16][64];
    size_t len[16];
    int too_long[16]; /* the line number in the error, else 0 */
    int n;
    bool nomem;
} got_lines;

static void collect(got_lines *g, fs_lines *sp, fs_lines_event ev, const char *line, size_t len)
{
    assert_true(g->n < 16);
    if (ev == FS_LINES_LINE) {
        assert_true(len < sizeof g->text[0]);
        memcpy(g->text[g->n], line, len);
        g->len[g->n] = len;
    } else if (ev == FS_LINES_TOO_LONG) {
        assert_null(line);
        assert_int_equal(sscanf(fs_lines_error(sp), "line %d is longer than", &g->too_long[g->n]),
                         1);
        assert_non_null(strstr(fs_lines_error(sp), "-byte limit"));
    } else {
        g->nomem = true;
        return;
    }
    g->n++;
}

/* Split `text` (n bytes) fed in chunks of `chunk` bytes with the cap `max`. */
static void split(const char *text, size_t n, size_t chunk, uint64_t max, got_lines *g)
{
    memset(g, 0, sizeof *g);
    fs_lines sp;
    fs_lines_init(&sp, max);
    const char *line;
    size_t len;
    for (size_t off = 0; off < n; off += chunk) {
        const char *data = text + off;
        size_t left = n - off < chunk ? n - off : chunk;
        fs_lines_event ev;
        while ((ev = fs_lines_next(&sp, &data, &left, &line, &len)) != FS_LINES_MORE)
            collect(g, &sp, ev, line, len);
        assert_int_equal(left, 0);
    }
    fs_lines_event ev = fs_lines_finish(&sp, &line, &len);
    if (ev != FS_LINES_MORE)
        collect(g, &sp, ev, line, len);
    assert_int_equal(sp.line_no, g->n);
    assert_int_equal(fs_lines_finish(&sp, &line, &len), FS_LINES_MORE); /* nothing twice */
    fs_lines_free(&sp);
}

static void expect_line(const got_lines *g, int i, const char *want, size_t want_len)
{
    assert_int_equal(g->too_long[i], 0);
    assert_int_equal(g->len[i], want_len);
    assert_memory_equal(g->text[i], want, want_len);
}

static void test_lines(void **state)
{
    (void)state;
    /* every chunk size, so that each line is split at every position */
    static const char text[] = "{\"a\":1}\r\n\nab\0c\n   \nexactly10\nlast no newline";
    size_t n = sizeof text - 1;
    for (size_t chunk = 1; chunk <= n; chunk++) {
        got_lines g;
        split(text, n, chunk, 10, &g);
        assert_int_equal(g.n, 6);
        expect_line(&g, 0, "{\"a\":1}\r", 8); /* the '\r' stays: the loaders trim */
        expect_line(&g, 1, "", 0);            /* empty lines come out */
        expect_line(&g, 2, "ab\0c", 4);       /* NUL bytes too */
        expect_line(&g, 3, "   ", 3);
        expect_line(&g, 4, "exactly10", 9);
        assert_int_equal(g.too_long[5], 6); /* 15 bytes without '\n', over the cap of 10 */
    }
    /* the cap: exactly at it, one byte over, with the '\r' counted, at the end of the input */
    for (size_t chunk = 1; chunk <= 40; chunk++) {
        got_lines g;
        split("0123456789\n01234567890\n012345678\r\nab", 36, chunk, 10, &g);
        assert_int_equal(g.n, 4);
        expect_line(&g, 0, "0123456789", 10);
        assert_int_equal(g.too_long[1], 2);
        expect_line(&g, 2, "012345678\r", 10);
        expect_line(&g, 3, "ab", 2);
        split("ab\n0123456789", 13, chunk, 10, &g);
        assert_int_equal(g.n, 2);
        expect_line(&g, 1, "0123456789", 10); /* the last line, at the cap, no newline */
        split("ab\n01234567890", 14, chunk, 10, &g);
        assert_int_equal(g.n, 2);
        assert_int_equal(g.too_long[1], 2); /* over the cap at the end: still reported */
    }
    /* a final '\n' ends no empty line; empty input has no line */
    got_lines g;
    split("a\n", 2, 2, 0, &g);
    assert_int_equal(g.n, 1);
    split("", 0, 1, 0, &g);
    assert_int_equal(g.n, 0);
    split("\n\n", 2, 1, 0, &g);
    assert_int_equal(g.n, 2);
    /* the default cap */
    fs_lines sp;
    fs_lines_init(&sp, 0);
    assert_int_equal(sp.max_line, FS_LINES_DEFAULT_MAX);
    fs_lines_free(&sp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_numbers_and_literals),
        cmocka_unit_test(test_skip_value),
        cmocka_unit_test(test_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
