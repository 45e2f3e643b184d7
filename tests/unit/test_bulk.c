/* unit/test_bulk.c: the Bulk Data client's parsers and records: the streaming NDJSON line checker
 * (valid lines, CRLF, empty lines, a BOM, lines over the cap, truncated last lines, wrong or
 * missing resourceType, every JSON error class, the same verdicts whatever the chunking, and
 * agreement with jansson), the manifest (valid, paged, missing fields, relative URLs, a missing
 * requiresAccessToken), state.json (round trip, atomic write mode, damage), the kick-off request
 * (GET query, POST Parameters, bad options), the status-poll delay (Retry-After in seconds, as an
 * HTTP-date or an absolute epoch, capped, never below the poll floor; backoff without it), the
 * per-file retry budget (only getting further than ever resets it), and manifests and states of
 * many files (every entry kept in order, lookups by name right).
 *
 * `test_bulk --bench FILE.ndjson` times the checker against jansson's json_loadb on each line of
 * a file (the measurement behind the choice of a scanner, see docs/bulk-export.md). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "bulk/bulk_internal.h"
#include "core/core.h"
#include "fhirsync/config.h"
#include "fhirsync/keys.h"
#include "http/http.h"
#include "json/json.h"

static char tmpdir[512];

static int group_setup(void **state)
{
    (void)state;
    if (fhirsync_global_init() != FHIRSYNC_OK)
        return -1;
    const char *base = getenv("FHIRSYNC_TEST_TMP");
    if (!base || !*base)
        base = "/tmp";
    mkdir(base, 0700);
    snprintf(tmpdir, sizeof tmpdir, "%s/bulk-XXXXXX", base);
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    char cmd[600];
    if (strstr(tmpdir, "/bulk-")) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            return -1;
    }
    fhirsync_global_cleanup();
    return 0;
}

/* ---- the line checker ----------------------------------------------------------------------- */

typedef struct line_result {
    fs_ndjson_verdict verdict;
    uint64_t line;
    char reason[200];
    char type[FS_BULK_MAX_TYPE_LEN + 1];
} line_result;

/* Feed a whole file in chunks of `chunk` bytes; collect each line's verdict. */
static size_t check_file(const char *data, size_t len, const char *type, uint64_t max_line,
                         size_t chunk, line_result *out, size_t max_out, bool *too_long)
{
    fs_ndjson_checker ck;
    fs_ndjson_init(&ck, type, max_line);
    size_t n = 0;
    *too_long = false;
    for (size_t off = 0; off < len;) {
        size_t piece = len - off < chunk ? len - off : chunk;
        size_t pos = 0;
        while (pos < piece) {
            size_t used;
            fs_ndjson_event ev = fs_ndjson_feed(&ck, data + off + pos, piece - pos, &used);
            assert_true(used > 0);
            pos += used;
            if (ev == FS_NDJSON_TOO_LONG)
                *too_long = true;
            if (ev == FS_NDJSON_LINE && n < max_out) {
                out[n].verdict = ck.verdict;
                out[n].line = ck.verdict_line;
                snprintf(out[n].reason, sizeof out[n].reason, "%s", ck.reason);
                snprintf(out[n].type, sizeof out[n].type, "%s",
                         ck.verdict == FS_NDJSON_OK ? ck.resource_type : "");
                n++;
            }
        }
        off += piece;
    }
    if (fs_ndjson_finish(&ck) && n < max_out) {
        out[n].verdict = ck.verdict;
        out[n].line = ck.verdict_line;
        snprintf(out[n].reason, sizeof out[n].reason, "%s", ck.reason);
        n++;
    }
    return n;
}

static fs_ndjson_verdict one(const char *line, const char *type)
{
    char reason[200];
    return fs_ndjson_check_line(line, strlen(line), type, reason, sizeof reason);
}

static void test_checker_valid_lines(void **state)
{
    (void)state;
    assert_int_equal(one("{\"resourceType\":\"Patient\",\"id\":\"1\"}", "Patient"), FS_NDJSON_OK);
    assert_int_equal(one("  {\"id\":\"1\", \"resourceType\" : \"Patient\"}  ", "Patient"),
                     FS_NDJSON_OK);
    assert_int_equal(one("{\"resourceType\":\"Observation\",\"valueQuantity\":{\"value\":-1.50e+3,"
                         "\"unit\":\"mg\"},\"a\":[true,false,null,0,[],{}],\"t\":\"\\u00e9\\n"
                         "\\ud83d\\ude00\\\"\\\\\\/\"}",
                         "Observation"),
                     FS_NDJSON_OK);
    /* UTF-8 of every length */
    assert_int_equal(one("{\"resourceType\":\"Patient\",\"n\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98"
                         "\x80\"}",
                         "Patient"),
                     FS_NDJSON_OK);
    /* a resourceType name written with an escape is still the name */
    assert_int_equal(one("{\"\\u0072esourceType\":\"Patient\"}", "Patient"), FS_NDJSON_OK);
    /* nested resourceType members do not count */
    assert_int_equal(one("{\"resourceType\":\"Bundle\",\"entry\":[{\"resource\":{\"resourceType\":"
                         "\"Patient\"}}]}",
                         "Bundle"),
                     FS_NDJSON_OK);
    /* any type accepted when none is expected, but it must be a type name */
    assert_int_equal(one("{\"resourceType\":\"Encounter\"}", NULL), FS_NDJSON_OK);
    assert_int_equal(one("{\"resourceType\":\"not a type\"}", NULL), FS_NDJSON_BAD);
}

static void test_checker_bad_lines(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "[1,2]",
        "\"text\"",
        "42",
        "{\"resourceType\":\"Patient\"",
        "{\"resourceType\":\"Patient\",}",
        "{\"resourceType\":\"Patient\"}x",
        "{\"resourceType\":\"Patient\"} {}",
        "{\"resourceType\":\"Patient\",\"a\":01}",
        "{\"resourceType\":\"Patient\",\"a\":1.}",
        "{\"resourceType\":\"Patient\",\"a\":-}",
        "{\"resourceType\":\"Patient\",\"a\":1e}",
        "{\"resourceType\":\"Patient\",\"a\":tru}",
        "{\"resourceType\":\"Patient\",\"a\":nul}",
        "{\"resourceType\":\"Patient\",\"a\":\"\\x\"}",
        "{\"resourceType\":\"Patient\",\"a\":\"\\u12G4\"}",
        "{\"resourceType\":\"Patient\",\"a\":\"\\ud83d\"}",
        "{\"resourceType\":\"Patient\",\"a\":\"\\ude00\"}",
        "{\"resourceType\":\"Patient\",\"a\":\"\\u0000\"}",
        "{\"resourceType\":\"Patient\",\"a\":\"\x01\"}",
        "{\"resourceType\":\"Patient\",\"a\":\"\xc3\"}",
        "{\"resourceType\":\"Patient\",\"a\":\"\xc0\x80\"}",
        "{\"resourceType\":\"Patient\",\"a\":\"\xed\xa0\x80\"}",
        "{\"resourceType\":\"Patient\",\"a\":\"\xf5\x80\x80\x80\"}",
        "{\"resourceType\":\"Patient\",\"a\" 1}",
        "{\"resourceType\":\"Patient\" \"a\":1}",
        "{'resourceType':'Patient'}",
        "{\"resourceType\":\"Patient\",\"a\":[1,]}",
        "{\"resourceType\":\"Patient\",\"a\":[1}",
        "{\"resourceType\":\"Patient\",\"a\":{]}",
        "{\"id\":\"1\"}",
        "{\"resourceType\":7}",
        "{\"resourceType\":\"\"}",
        "{\"resourceType\":\"Patient\",\"resourceType\":\"Patient\"}",
        "{\"resourceType\":\"Observation\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (one(bad[i], "Patient") != FS_NDJSON_BAD) {
            fprintf(stderr, "accepted: %s\n", bad[i]);
            fail();
        }
    }
    char reason[200];
    fs_ndjson_check_line("{\"resourceType\":\"Observation\"}", 30, "Patient", reason,
                         sizeof reason);
    assert_non_null(strstr(reason, "Observation"));
    assert_non_null(strstr(reason, "Patient"));
    /* deep nesting is refused past the limit, accepted below it */
    size_t depth = FS_NDJSON_MAX_DEPTH + 5;
    char *deep = malloc(depth * 2 + 64);
    assert_non_null(deep);
    strcpy(deep, "{\"resourceType\":\"Patient\",\"a\":");
    size_t p = strlen(deep);
    for (size_t i = 0; i < depth; i++)
        deep[p++] = '[';
    for (size_t i = 0; i < depth; i++)
        deep[p++] = ']';
    deep[p++] = '}';
    deep[p] = '\0';
    assert_int_equal(fs_ndjson_check_line(deep, p, "Patient", reason, sizeof reason),
                     FS_NDJSON_BAD);
    assert_non_null(strstr(reason, "nested"));
    free(deep);
}

static void test_checker_file_shapes(void **state)
{
    (void)state;
    line_result r[16];
    bool too_long;
    /* CRLF line ends, an empty line, a whitespace-only line, a last line without '\n' */
    const char *file = "{\"resourceType\":\"Patient\",\"id\":\"1\"}\r\n"
                       "\n"
                       " \r\n"
                       "{\"resourceType\":\"Patient\",\"id\":\"2\"}";
    size_t n = check_file(file, strlen(file), "Patient", 0, 1 << 20, r, 16, &too_long);
    assert_int_equal(n, 4);
    assert_int_equal(r[0].verdict, FS_NDJSON_OK);
    assert_string_equal(r[0].type, "Patient");
    assert_int_equal(r[1].verdict, FS_NDJSON_EMPTY);
    assert_int_equal(r[2].verdict, FS_NDJSON_EMPTY);
    assert_int_equal(r[3].verdict, FS_NDJSON_OK);
    assert_int_equal(r[3].line, 4);
    /* a truncated last line */
    const char *trunc = "{\"resourceType\":\"Patient\",\"id\":\"1\"}\n{\"resourceType\":\"Pat";
    n = check_file(trunc, strlen(trunc), "Patient", 0, 7, r, 16, &too_long);
    assert_int_equal(n, 2);
    assert_int_equal(r[1].verdict, FS_NDJSON_BAD);
    assert_non_null(strstr(r[1].reason, "truncated last line"));
    /* a byte order mark at the start is skipped (and reported by the checker's flag) */
    const char *bom = "\xef\xbb\xbf{\"resourceType\":\"Patient\"}\n";
    fs_ndjson_checker ck;
    fs_ndjson_init(&ck, "Patient", 0);
    size_t used, off = 0;
    while (off < strlen(bom)) {
        fs_ndjson_event ev = fs_ndjson_feed(&ck, bom + off, 1, &used);
        off += used;
        if (ev == FS_NDJSON_LINE)
            assert_int_equal(ck.verdict, FS_NDJSON_OK);
    }
    assert_true(ck.bom);
    /* a BOM in the middle of a file is just a bad line */
    const char *mid =
        "{\"resourceType\":\"Patient\"}\n\xef\xbb\xbf{\"resourceType\":\"Patient\"}\n";
    n = check_file(mid, strlen(mid), "Patient", 0, 1 << 20, r, 16, &too_long);
    assert_int_equal(n, 2);
    assert_int_equal(r[1].verdict, FS_NDJSON_BAD);
    /* a broken BOM */
    const char *broken = "\xef\xbb{\"resourceType\":\"Patient\"}\n";
    n = check_file(broken, strlen(broken), "Patient", 0, 1, r, 16, &too_long);
    assert_int_equal(r[0].verdict, FS_NDJSON_BAD);
    /* an empty file has no lines */
    n = check_file("", 0, "Patient", 0, 16, r, 16, &too_long);
    assert_int_equal(n, 0);
}

static void test_checker_line_cap(void **state)
{
    (void)state;
    line_result r[8];
    bool too_long;
    /* exactly max_line bytes is fine, one more is not; the cap does not cost memory */
    char line[300];
    snprintf(line, sizeof line, "{\"resourceType\":\"Patient\",\"x\":\"%0200d\"}", 0);
    size_t len = strlen(line);
    char file[700];
    snprintf(file, sizeof file, "%s\n%s\n", line, line);
    for (size_t chunk = 1; chunk <= 64; chunk *= 4) {
        size_t n = check_file(file, strlen(file), "Patient", len, chunk, r, 8, &too_long);
        assert_int_equal(n, 2);
        assert_false(too_long);
        assert_int_equal(r[0].verdict, FS_NDJSON_OK);
        assert_int_equal(r[1].verdict, FS_NDJSON_OK);
        n = check_file(file, strlen(file), "Patient", len - 1, chunk, r, 8, &too_long);
        assert_true(too_long);
        assert_int_equal(n, 2);
        assert_int_equal(r[0].verdict, FS_NDJSON_BAD);
        assert_non_null(strstr(r[0].reason, "longer than"));
        assert_int_equal(r[0].line, 1);
        assert_int_equal(r[1].line, 2);
    }
    /* a 20 MB line streams through without being held */
    size_t big = 20u * 1024 * 1024;
    char *huge = malloc(big + 64);
    assert_non_null(huge);
    size_t p = (size_t)sprintf(huge, "{\"resourceType\":\"Binary\",\"data\":\"");
    memset(huge + p, 'A', big);
    p += big;
    p += (size_t)sprintf(huge + p, "\"}\n");
    size_t n = check_file(huge, p, "Binary", 0, 65536, r, 8, &too_long);
    assert_int_equal(n, 1);
    assert_int_equal(r[0].verdict, FS_NDJSON_OK);
    n = check_file(huge, p, "Binary", 1024 * 1024, 65536, r, 8, &too_long);
    assert_true(too_long);
    assert_int_equal(r[0].verdict, FS_NDJSON_BAD);
    free(huge);
}

/* Chunking never changes a verdict, and the checker agrees with jansson on what is valid. */
static void test_checker_chunking_and_jansson(void **state)
{
    (void)state;
    static const char *const lines[] = {
        "{\"resourceType\":\"Patient\",\"a\":[1,2.5e-3,{\"b\":\"\\u00e9\\ud83d\\ude00\"}]}",
        "{\"resourceType\":\"Patient\",\"a\":\"\xe2\x82\xac\"}",
        "{\"resourceType\":\"Patient\",\"a\":\"\\ud83d\\u0041\"}",
        "{\"resourceType\":\"Patient\",\"a\":-0.0E+0}",
        "{\"resourceType\":\"Patient\",\"a\":\"\xed\x9f\xbf\"}",
        "{\"resourceType\":\"Patient\",\"a\":\"\xf4\x8f\xbf\xbf\"}",
        "{\"resourceType\":\"Patient\",\"a\":\"\xf4\x90\x80\x80\"}",
        "{\"resourceType\":\"Patient\",\"a\":\"\xe0\x9f\xbf\"}",
        "{\"resourceType\":\"Patient\",\"a\":[[[[]]]],\"b\":{\"c\":{}}}",
        "{\"resourceType\":\"Patient\",\"a\":\"\t\"}",
        "{\"resourceType\":\"Patient\"\t,\t\"a\"\t:\ttrue\t}",
    };
    for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
        const char *l = lines[i];
        json_error_t je;
        json_t *j = json_loadb(l, strlen(l), 0, &je);
        fs_ndjson_verdict v = one(l, "Patient");
        if ((j != NULL) != (v == FS_NDJSON_OK)) {
            fprintf(stderr, "jansson %s, checker %d: %s\n", j ? "accepts" : "refuses", v, l);
            fail();
        }
        json_decref(j);
        /* byte by byte gives the same verdict as all at once */
        line_result a[2], b[2];
        bool tl;
        size_t na = check_file(l, strlen(l), "Patient", 0, 1, a, 2, &tl);
        size_t nb = check_file(l, strlen(l), "Patient", 0, 4096, b, 2, &tl);
        assert_int_equal(na, nb);
        assert_int_equal(a[0].verdict, b[0].verdict);
    }
}

/* ---- the manifest --------------------------------------------------------------------------- */

static const char manifest1[] =
    "{\"transactionTime\":\"2024-05-01T10:00:00.000Z\",\"request\":\"http://h/fhir/$export\","
    "\"requiresAccessToken\":true,"
    "\"output\":[{\"type\":\"Patient\",\"url\":\"http://127.0.0.1:9/files/p1\",\"count\":10},"
    "{\"type\":\"Observation\",\"url\":\"files/o1\"}],"
    "\"deleted\":[{\"type\":\"Patient\",\"url\":\"/files/d1\",\"count\":2}],"
    "\"error\":[{\"type\":\"OperationOutcome\",\"url\":\"https://storage.example/e1?sig=x\"}],"
    "\"link\":[{\"relation\":\"next\",\"url\":\"status/1?page=2\"}]}";

static const char manifest2[] =
    "{\"transactionTime\":\"2024-05-01T10:00:00.000Z\",\"request\":\"x\","
    "\"requiresAccessToken\":true,"
    "\"output\":[{\"type\":\"Patient\",\"url\":\"http://127.0.0.1:9/files/p2\",\"count\":5}]}";

/* The merged manifest as a document (what manifest.json holds). */
static json_t *merged_doc(const fs_bulk_manifest *m)
{
    char *text = fs_bulk_manifest_dump(m);
    assert_non_null(text);
    json_error_t je;
    json_t *doc = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!doc)
        fprintf(stderr, "dump does not parse (%s): %s\n", je.text, text);
    assert_non_null(doc);
    fs_free(text);
    return doc;
}

static size_t merged_size(const fs_bulk_manifest *m, const char *member)
{
    json_t *doc = merged_doc(m);
    json_t *arr = json_object_get(doc, member);
    size_t n = arr ? json_array_size(arr) : (size_t)-1;
    json_decref(doc);
    return n;
}

static void test_manifest_valid_and_paged(void **state)
{
    (void)state;
    fs_bulk_manifest m;
    fs_bulk_manifest_init(&m);
    fhirsync_error err = {0};
    assert_int_equal(fs_bulk_manifest_parse(&m, manifest1, strlen(manifest1),
                                            "http://127.0.0.1:9/fhir/status/1", &err),
                     FHIRSYNC_OK);
    assert_string_equal(m.transaction_time, "2024-05-01T10:00:00.000Z");
    assert_true(m.requires_token);
    assert_false(m.requires_token_missing);
    assert_int_equal(m.count, 4);
    assert_string_equal(m.entries[0].type, "Patient");
    assert_int_equal(m.entries[0].count, 10);
    assert_int_equal(m.entries[1].count, -1);
    /* relative URLs resolve against the URL the manifest came from */
    assert_string_equal(m.entries[1].url, "http://127.0.0.1:9/fhir/status/files/o1");
    assert_string_equal(m.entries[2].url, "http://127.0.0.1:9/files/d1");
    assert_int_equal(m.entries[2].kind, FHIRSYNC_EXPORT_DELETED);
    assert_int_equal(m.entries[3].kind, FHIRSYNC_EXPORT_ERROR);
    assert_string_equal(m.next, "http://127.0.0.1:9/fhir/status/status/1?page=2");
    /* page two adds its entries; the merged manifest has no link */
    assert_int_equal(fs_bulk_manifest_parse(&m, manifest2, strlen(manifest2), m.next, &err),
                     FHIRSYNC_OK);
    assert_int_equal(m.count, 5);
    assert_null(m.next);
    json_t *doc = merged_doc(&m);
    assert_null(json_object_get(doc, "link"));
    assert_string_equal(fs_json_str(doc, "request"), "http://h/fhir/$export");
    json_decref(doc);
    assert_int_equal(merged_size(&m, "output"), 3);
    assert_int_equal(merged_size(&m, "deleted"), 1);
    /* a page that disagrees on transactionTime is refused and leaves the rest alone */
    const char *other = "{\"transactionTime\":\"2024-05-02T10:00:00Z\",\"requiresAccessToken\":"
                        "true,\"output\":[{\"type\":\"Patient\",\"url\":\"http://127.0.0.1/x\"}]}";
    assert_int_equal(fs_bulk_manifest_parse(&m, other, strlen(other), "http://127.0.0.1/", &err),
                     FHIRSYNC_E_PROTOCOL);
    assert_int_equal(m.count, 5);
    /* the merged document parses as a manifest of its own (what a resume reads back) */
    char *text = fs_bulk_manifest_dump(&m);
    fs_bulk_manifest m2;
    fs_bulk_manifest_init(&m2);
    assert_int_equal(fs_bulk_manifest_parse(&m2, text, strlen(text), "http://127.0.0.1:9/", &err),
                     FHIRSYNC_OK);
    assert_int_equal(m2.count, 5);
    assert_string_equal(m2.entries[1].url, "http://127.0.0.1:9/fhir/status/files/o1");
    fs_free(text);
    fs_bulk_manifest_clear(&m2);
    fs_bulk_manifest_clear(&m);
}

static void expect_manifest_error(const char *body, const char *words)
{
    fs_bulk_manifest m;
    fs_bulk_manifest_init(&m);
    fhirsync_error err = {0};
    fhirsync_code rc = fs_bulk_manifest_parse(&m, body, strlen(body), "http://127.0.0.1/s", &err);
    if (rc != FHIRSYNC_E_PROTOCOL || !strstr(err.message, words)) {
        fprintf(stderr, "manifest %s: code %d, message '%s' (wanted '%s')\n", body, rc, err.message,
                words);
        fail();
    }
    assert_int_equal(m.count, 0);
    assert_false(m.started);
    assert_null(m.transaction_time);
    fs_bulk_manifest_clear(&m);
}

static void test_manifest_errors(void **state)
{
    (void)state;
    expect_manifest_error("<html><body>oops</body></html>", "HTML");
    expect_manifest_error("{\"output\":[]}", "transactionTime");
    expect_manifest_error("{\"transactionTime\":\"yesterday\",\"output\":[]}", "FHIR instant");
    expect_manifest_error("{\"transactionTime\":\"2024-05-01T10:00:00Z\"}", "output");
    expect_manifest_error("{\"transactionTime\":\"2024-05-01T10:00:00Z\",\"output\":{}}",
                          "not an array");
    expect_manifest_error("{\"transactionTime\":\"2024-05-01T10:00:00Z\",\"output\":"
                          "[{\"url\":\"http://127.0.0.1/x\"}]}",
                          "type");
    expect_manifest_error("{\"transactionTime\":\"2024-05-01T10:00:00Z\",\"output\":"
                          "[{\"type\":\"Patient\"}]}",
                          "url");
    expect_manifest_error("{\"transactionTime\":\"2024-05-01T10:00:00Z\",\"output\":"
                          "[{\"type\":\"../etc\",\"url\":\"http://127.0.0.1/x\"}]}",
                          "resource type");
    expect_manifest_error("{\"transactionTime\":\"2024-05-01T10:00:00Z\",\"output\":"
                          "[{\"type\":\"Patient\",\"url\":\"http://127.0.0.1/x\",\"count\":-1}]}",
                          "count");
    expect_manifest_error("{\"transactionTime\":\"2024-05-01T10:00:00Z\",\"output\":"
                          "[{\"type\":\"Patient\",\"url\":\"ftp://h/x\"}]}",
                          "http");
    expect_manifest_error("{\"transactionTime\":\"2024-05-01T10:00:00Z\",\"output\":"
                          "[{\"type\":\"Patient\",\"url\":\"http://example.com/x\"}]}",
                          "plain http");
    expect_manifest_error("{\"transactionTime\":\"2024-05-01T10:00:00Z\",\"output\":[],"
                          "\"requiresAccessToken\":\"yes\"}",
                          "requiresAccessToken");
    /* no requiresAccessToken: assumed true, and said so */
    fs_bulk_manifest m;
    fs_bulk_manifest_init(&m);
    const char *body = "{\"transactionTime\":\"2024-05-01T10:00:00Z\",\"output\":[]}";
    assert_int_equal(fs_bulk_manifest_parse(&m, body, strlen(body), "http://127.0.0.1/", NULL),
                     FHIRSYNC_OK);
    assert_true(m.requires_token);
    assert_true(m.requires_token_missing);
    assert_int_equal(m.count, 0);
    fs_bulk_manifest_clear(&m);
}

/* ---- the manifest's JSON reader ------------------------------------------------------------- */

#define TT "\"transactionTime\":\"2024-05-01T10:00:00Z\""
#define ONE_OUTPUT "\"output\":[{\"type\":\"Patient\",\"url\":\"http://127.0.0.1/p\"}]"

/* The reader's verdict on a whole text agrees with jansson's, except where the reader is
 * documented to differ (numbers out of jansson's range). */
static void test_reader_grammar(void **state)
{
    (void)state;
    static const char *const same[] = {
        "{}",
        "[]",
        "0",
        "-0",
        "1.5e+10",
        "\"\"",
        "true",
        "null",
        " {\"a\" : [1, 2.0, -3e-2]} ",
        "\"\\u00e9\\ud83d\\ude00\\/\\b\\f\\n\\r\\t\\\"\\\\\"",
        "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"",
        "{\"a\":{\"b\":{\"c\":[[[{}]]]}}}",
        /* refused by both */
        "",
        " ",
        "{",
        "[1,]",
        "{\"a\":1,}",
        "{,}",
        "[1 2]",
        "{\"a\" 1}",
        "{'a':1}",
        "01",
        "1.",
        ".5",
        "-",
        "1e",
        "+1",
        "tru",
        "nul",
        "True",
        "\"abc",
        "\"a\\x\"",
        "\"\\u12\"",
        "\"\\u12G4\"",
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"\\ud800\\u0041\"",
        "\"\\u0000\"",
        "\"a\tb\"",
        "\"\xc3\"",
        "\"\xc0\x80\"",
        "\"\xed\xa0\x80\"",
        "\"\xf4\x90\x80\x80\"",
        "\"\xff\"",
        "{} {}",
        "{}x",
        "[1]]",
        "\xef\xbb\xbf{}",
        "{\"a\":1}\x00",
    };
    char why[200];
    for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
        size_t len = strlen(same[i]) + (strstr(same[i], "}\x00") ? 1 : 0);
        if (i == sizeof same / sizeof *same - 1)
            len = 8;
        json_error_t je;
        json_t *j = json_loadb(same[i], len, JSON_DECODE_ANY, &je);
        bool ours = fs_bulk_json_check(same[i], len, why, sizeof why);
        if ((j != NULL) != ours) {
            fprintf(stderr, "jansson %s, reader %s (%s): %s\n", j ? "accepts" : "refuses",
                    ours ? "accepts" : "refuses", ours ? "" : why, same[i]);
            fail();
        }
        json_decref(j);
    }
    /* numbers of any size are JSON: the members that need one check its range */
    assert_true(fs_bulk_json_check("[123456789012345678901234567890, 1e400]", 39, why, 200));
    /* nesting: 1024 levels of arrays pass, 1025 do not, and the fault says so */
    fs_buf deep;
    fs_buf_init(&deep);
    for (int i = 0; i < 1024; i++)
        assert_true(fs_buf_append_str(&deep, "["));
    for (int i = 0; i < 1024; i++)
        assert_true(fs_buf_append_str(&deep, "]"));
    assert_true(fs_bulk_json_check(deep.data, deep.len, why, sizeof why));
    fs_buf_reset(&deep);
    for (int i = 0; i < 100000; i++)
        assert_true(fs_buf_append_str(&deep, "{\"a\":["));
    assert_false(fs_bulk_json_check(deep.data, deep.len, why, sizeof why));
    assert_non_null(strstr(why, "nested too deep"));
    fs_buf_free(&deep);
    /* the fault names its line and column */
    assert_false(fs_bulk_json_check("{\n  \"a\": [1,\n   2,]\n}", 22, why, sizeof why));
    assert_string_equal(why, "line 3, column 6: a value expected");
    assert_false(fs_bulk_json_check("{\"a\": [1, 2", 11, why, sizeof why));
    assert_non_null(strstr(why, "truncated"));
}

static void test_reader_manifest_faults(void **state)
{
    (void)state;
    expect_manifest_error("", "empty");
    expect_manifest_error("[" TT "]", "not valid JSON");
    expect_manifest_error("[1, 2]", "JSON but not an object");
    /* truncated anywhere: a fault of the text, not a missing member */
    const char *whole = "{" TT ",\"output\":[{\"type\":\"Patient\",\"url\":\"http://127.0.0.1/p\","
                        "\"count\":3}],\"requiresAccessToken\":true}";
    for (size_t cut = 1; cut < strlen(whole); cut++) {
        char *part = fs_strndup(whole, cut);
        expect_manifest_error(part, "not valid JSON");
        fs_free(part);
    }
    expect_manifest_error("{" TT "," ONE_OUTPUT ",\"x\":", "truncated");
    /* a syntax fault after a wrong member is reported as the syntax fault */
    expect_manifest_error("{\"output\":{}, \"x\": [1,]}", "line 1, column 23: a value expected");
    /* deep nesting inside an extension */
    fs_buf deep;
    fs_buf_init(&deep);
    assert_true(fs_buf_append_str(&deep, "{" TT ",\"output\":[],\"extension\":"));
    for (int i = 0; i < 2000; i++)
        assert_true(fs_buf_append_str(&deep, "["));
    for (int i = 0; i < 2000; i++)
        assert_true(fs_buf_append_str(&deep, "]"));
    assert_true(fs_buf_append_str(&deep, "}"));
    expect_manifest_error(deep.data, "nested too deep");
    fs_buf_free(&deep);
    /* bad escapes and bad text in the members read */
    expect_manifest_error("{" TT
                          ",\"output\":[{\"type\":\"Patient\",\"url\":\"http://127.0.0.1/\\q\"}]}",
                          "invalid escape");
    expect_manifest_error("{" TT ",\"output\":[{\"type\":\"Pat\\u0000ient\",\"url\":\"u\"}]}",
                          "\\u0000");
    expect_manifest_error("{" TT ",\"output\":[{\"type\":\"Patient\",\"url\":\"\\ud800\"}]}",
                          "surrogate");
    expect_manifest_error("{" TT ",\"output\":[{\"type\":\"Patient\",\"url\":\"a\nb\"}]}",
                          "control character");
    expect_manifest_error("{" TT ",\"output\":[{\"type\":\"Patient\",\"url\":\"\xc3(\"}]}",
                          "UTF-8");
    /* numbers: a count must be a non-negative integer that fits */
    expect_manifest_error("{" TT
                          ",\"output\":[{\"type\":\"Patient\",\"url\":\"http://127.0.0.1/p\","
                          "\"count\":9223372036854775808}]}",
                          "\"count\" is not");
    expect_manifest_error("{" TT
                          ",\"output\":[{\"type\":\"Patient\",\"url\":\"http://127.0.0.1/p\","
                          "\"count\":1e400}]}",
                          "\"count\" is not");
    expect_manifest_error("{" TT
                          ",\"output\":[{\"type\":\"Patient\",\"url\":\"http://127.0.0.1/p\","
                          "\"count\":1.5}]}",
                          "\"count\" is not");
    expect_manifest_error("{" TT
                          ",\"output\":[{\"type\":\"Patient\",\"url\":\"http://127.0.0.1/p\","
                          "\"count\":\"3\"}]}",
                          "\"count\" is not");
    expect_manifest_error("{" TT
                          ",\"output\":[{\"type\":\"Patient\",\"url\":\"http://127.0.0.1/p\","
                          "\"count\":-0.5}]}",
                          "\"count\" is not");
    expect_manifest_error("{" TT
                          ",\"output\":[{\"type\":\"Patient\",\"url\":\"http://127.0.0.1/p\","
                          "\"count\":01}]}",
                          "leading zero");
    /* duplicate member names where they would be ambiguous */
    expect_manifest_error("{" TT "," ONE_OUTPUT ",\"output\":[]}",
                          "duplicate member name \"output\"");
    expect_manifest_error("{" TT "," TT "," ONE_OUTPUT "}",
                          "duplicate member name \"transactionTime\"");
    expect_manifest_error("{" TT
                          ",\"output\":[{\"type\":\"Patient\",\"type\":\"Group\",\"url\":\"u\"}]}",
                          "duplicate member name \"type\"");
    /* the same name written with an escape is the same name */
    expect_manifest_error(
        "{" TT ",\"output\":[{\"type\":\"Patient\",\"\\u0074ype\":\"Group\",\"url\":\"u\"}]}",
        "duplicate member name \"type\"");
    expect_manifest_error("{" TT "," ONE_OUTPUT ",\"link\":[{\"url\":\"a\",\"url\":\"b\"}]}",
                          "duplicate member name \"url\"");
    /* empty strings as names and values (the first string a reader decodes) */
    expect_manifest_error("{\"\":\"..-etc\",\"\":1}", "duplicate member name \"\"");
    expect_manifest_error("{\"transactionTime\":\"\"," ONE_OUTPUT "}", "is not a FHIR instant");
    expect_manifest_error("{" TT ",\"output\":[{\"type\":\"\",\"url\":\"u\"}]}",
                          "type \"\" is not a resource type name");
    expect_manifest_error("{" TT ",\"output\":[{\"type\":\"Patient\",\"url\":\"\"}]}",
                          "has no \"url\" string");
    /* wrong types */
    expect_manifest_error("{\"transactionTime\":20240501," ONE_OUTPUT "}", "transactionTime");
    expect_manifest_error("{" TT ",\"output\":\"none\"}", "\"output\" is not an array");
    expect_manifest_error("{" TT "," ONE_OUTPUT ",\"deleted\":{}}", "\"deleted\" is not an array");
    expect_manifest_error("{" TT ",\"output\":[3]}", "output[0] is not an object");
    expect_manifest_error("{" TT ",\"output\":[{\"type\":[\"Patient\"],\"url\":\"u\"}]}", "type");
    expect_manifest_error("{" TT ",\"output\":[{\"type\":\"Patient\",\"url\":7}]}", "url");
    expect_manifest_error("{" TT "," ONE_OUTPUT ",\"requiresAccessToken\":null}",
                          "requiresAccessToken");
    expect_manifest_error("{" TT "," ONE_OUTPUT ",\"link\":{}}", "\"link\" is not an array");
    expect_manifest_error("{" TT "," ONE_OUTPUT ",\"link\":[{\"relation\":\"next\"}]}",
                          "link[0] (next) has no url");
    /* the order of the checks: transactionTime before entries; output before deleted */
    expect_manifest_error("{\"output\":[3]}", "transactionTime");
    expect_manifest_error("{" TT ",\"deleted\":[3],\"output\":[{\"url\":\"u\"}]}", "output[0]");
}

static void test_reader_manifest_shapes(void **state)
{
    (void)state;
    fs_bulk_manifest m;
    fs_bulk_manifest_init(&m);
    fhirsync_error err = {0};
    /* a byte order mark, every kind of whitespace, members in any order, unknown members and
     * extensions (kept for manifest.json), escapes in names and values, counts written as
     * reals, numbers of any size where nothing reads them, error before output */
    const char *body =
        "\xef\xbb\xbf \r\n\t{ \"extension\" : {\"big\": 123456789012345678901234567890, "
        "\"deep\": [[[{\"x\": null}]]], \"huge\": 1e400},\r\n"
        "\"error\":[{\"type\":\"OperationOutcome\",\"url\":\"e/1\"}],"
        "\t\"output\" : [ {\"url\":\"files/a\\u002fb\", \"t\\u0079pe\":\"Patient\", \"count\":1e1,"
        " \"extension\":{\"note\":\"caf\\u00e9\"}} , {\"type\":\"Group\",\"url\":\"files/g\","
        "\"count\":2.0} ],\n \"request\":\"http://h/$export?_type=Patient\",\n" TT
        ",\"requiresAccessToken\":false, \"link\": [{\"relation\":\"self\",\"url\":\"s\"}, 7]}\n ";
    assert_int_equal(
        fs_bulk_manifest_parse(&m, body, strlen(body), "http://127.0.0.1:9/f/status", &err),
        FHIRSYNC_OK);
    assert_int_equal(m.count, 3);
    /* output first, then error, whatever the page's order */
    assert_int_equal(m.entries[0].kind, FHIRSYNC_EXPORT_OUTPUT);
    assert_string_equal(m.entries[0].type, "Patient");
    assert_string_equal(m.entries[0].url, "http://127.0.0.1:9/f/files/a/b");
    assert_int_equal(m.entries[0].count, 10);
    assert_int_equal(m.entries[1].count, 2);
    assert_int_equal(m.entries[2].kind, FHIRSYNC_EXPORT_ERROR);
    assert_false(m.requires_token);
    assert_false(m.requires_token_missing);
    assert_null(m.next);
    assert_string_equal(m.request, "http://h/$export?_type=Patient");
    /* one copy of each type name */
    fs_bulk_manifest_parse(&m, body, strlen(body), "http://127.0.0.1:9/f/status", &err);
    assert_int_equal(m.count, 6);
    assert_ptr_equal(m.entries[0].type, m.entries[3].type);
    /* manifest.json keeps the members as written, and reads back to the same entries */
    char *text = fs_bulk_manifest_dump(&m);
    assert_non_null(text);
    assert_non_null(strstr(text, "123456789012345678901234567890"));
    assert_non_null(strstr(text, "\"extension\":{\"note\":\"caf\\u00e9\"}"));
    fs_bulk_manifest back;
    fs_bulk_manifest_init(&back);
    assert_int_equal(fs_bulk_manifest_parse(&back, text, strlen(text), "http://x.invalid/", &err),
                     FHIRSYNC_OK);
    assert_int_equal(back.count, 6);
    /* manifest.json lists each kind's entries of every page together */
    static const size_t order[] = {0, 1, 3, 4, 2, 5};
    for (size_t i = 0; i < 6; i++) {
        const fs_bulk_entry *a = &back.entries[i], *b = &m.entries[order[i]];
        assert_string_equal(a->url, b->url);
        assert_string_equal(a->type, b->type);
        assert_int_equal(a->count, b->count);
        assert_int_equal(a->kind, b->kind);
    }
    assert_false(back.requires_token);
    fs_bulk_manifest_clear(&back);
    fs_free(text);
    fs_bulk_manifest_clear(&m);
}

/* The per-folder shortcut resolves every reference exactly as libcurl does, and refuses what
 * the transport rules refuse. */
static void test_reader_url_resolution(void **state)
{
    (void)state;
    static const char *const bases[] = {"http://127.0.0.1:9/fhir/status/1",
                                        "https://H.Example:8443/a/b/?q=1#f", "https://h/"};
    static const char *const refs[] = {
        "files/p1",
        "/files/p1",
        "files/",
        "./files/p1",
        "../files/p1",
        "a/../b/c",
        "a/./b/c.ndjson",
        "a/b/..",
        "a/b/.",
        "x/%41b",
        "x/%zz",
        "a b/c",
        "x/y?sig=1",
        "x/y#frag",
        "//127.0.0.1:9/x/y",
        "//other.example/x/y",
        "HTTPS://H.EXAMPLE/X/Y",
        "https://h/x/y~z_-.n",
        "http://127.0.0.1:9/files/Patient/1.ndjson",
        "http://localhost/a/b",
        "http://example.com/a/b",
        "ftp://h/a/b",
        "mailto:a/b",
        "https://h:99999/a/b",
        "https://h/a//b",
        "https://h/a/b/",
        "https://[::1]/a/b",
        "http://[::1]:8/a/b",
        "https://h/a/\xc3\xa9",
        "https://u:p@h/a/b",
        "https://h/a/b\\c",
        "p1",
    };
    for (size_t b = 0; b < sizeof bases / sizeof *bases; b++) {
        for (size_t i = 0; i < sizeof refs / sizeof *refs; i++) {
            char *full = NULL, *fast = NULL;
            bool ok = fs_url_resolve(bases[b], refs[i], false, &full, NULL) == FHIRSYNC_OK &&
                      fs_url_check_transport(full, "url", NULL) == FHIRSYNC_OK;
            bool fast_ok = fs_bulk_manifest_resolve(bases[b], refs[i], &fast);
            if (ok != fast_ok || (ok && strcmp(full, fast) != 0)) {
                fprintf(stderr, "%s + %s: libcurl %s, reader %s\n", bases[b], refs[i],
                        ok ? full : "refuses", fast_ok ? fast : "refuses");
                fail();
            }
            fs_free(full);
            fs_free(fast);
        }
    }
}

/* ---- state.json ----------------------------------------------------------------------------- */

static void test_state_round_trip(void **state)
{
    (void)state;
    fs_bulk_state st;
    fs_bulk_state_init(&st);
    st.base_url = fs_strdup("http://127.0.0.1:9/fhir");
    st.request = json_pack("{s:s, s:n, s:s, s:b, s:[[s,s]]}", "level", "system", "group", "method",
                           "GET", "lenient", 0, "params", "_type", "Patient");
    st.status_url = fs_strdup("http://127.0.0.1:9/fhir/bulkstatus/1");
    st.kickoff_time = fs_strdup("2024-05-01T10:00:00Z");
    st.transaction_time = fs_strdup("2024-05-01T10:00:01Z");
    st.manifest_saved = true;
    assert_true(fs_bulk_state_add_done(&st, "Patient.1.ndjson", 10, 0, 1234));
    assert_true(fs_bulk_state_add_done(&st, "deleted/Patient.1.ndjson", 2, 1, 99));
    assert_true(fs_bulk_state_add_done(&st, "Patient.1.ndjson", 11, 0, 1300)); /* update */
    fhirsync_error err = {0};
    assert_int_equal(fs_bulk_state_save(&st, tmpdir, &err), FHIRSYNC_OK);
    char path[600];
    snprintf(path, sizeof path, "%s/state.json", tmpdir);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    snprintf(path, sizeof path, "%s/.state.json.tmp", tmpdir);
    assert_int_not_equal(access(path, F_OK), 0); /* no temp file left */

    fs_bulk_state back;
    fs_bulk_state_init(&back);
    assert_int_equal(fs_bulk_state_load(tmpdir, &back, &err), FHIRSYNC_OK);
    assert_string_equal(back.status_url, st.status_url);
    assert_string_equal(back.transaction_time, st.transaction_time);
    assert_true(back.manifest_saved);
    assert_false(back.complete);
    assert_true(json_equal(back.request, st.request));
    assert_int_equal(back.done_count, 2);
    const fs_bulk_done *d = fs_bulk_state_find_done(&back, "Patient.1.ndjson");
    assert_non_null(d);
    assert_int_equal(d->count, 11);
    assert_int_equal(d->bytes, 1300);
    d = fs_bulk_state_find_done(&back, "deleted/Patient.1.ndjson");
    assert_non_null(d);
    assert_int_equal(d->quarantined, 1);
    assert_null(fs_bulk_state_find_done(&back, "Observation.1.ndjson"));
    fs_bulk_state_clear(&back);
    fs_bulk_state_clear(&st);
}

static void test_state_damage(void **state)
{
    (void)state;
    fs_bulk_state st;
    fs_bulk_state_init(&st);
    fhirsync_error err = {0};
    static const char *const damaged[] = {
        "",
        "{\"fhirsync_export\":1,\"base_url\":\"http://x\"",
        "{\"fhirsync_export\":2,\"base_url\":\"x\",\"request\":{},\"manifest_saved\":false,"
        "\"complete\":false,\"job_deleted\":false,\"files\":[]}",
        "{\"fhirsync_export\":1,\"request\":{},\"manifest_saved\":false,\"complete\":false,"
        "\"job_deleted\":false,\"files\":[]}",
        "{\"fhirsync_export\":1,\"base_url\":\"x\",\"request\":{},\"manifest_saved\":true,"
        "\"complete\":false,\"job_deleted\":false,\"files\":[]}",
        "{\"fhirsync_export\":1,\"base_url\":\"x\",\"request\":{},\"manifest_saved\":false,"
        "\"complete\":false,\"job_deleted\":false,\"files\":[{\"name\":\"../x\",\"count\":1,"
        "\"quarantined\":0,\"bytes\":1}]}",
        "{\"fhirsync_export\":1,\"base_url\":\"x\",\"request\":{},\"manifest_saved\":false,"
        "\"complete\":false,\"job_deleted\":false,\"files\":[{\"name\":\"a\",\"count\":-1,"
        "\"quarantined\":0,\"bytes\":1}]}",
        "{\"fhirsync_export\":1,\"base_url\":\"x\",\"request\":{},\"manifest_saved\":\"no\","
        "\"complete\":false,\"job_deleted\":false,\"files\":[]}",
    };
    for (size_t i = 0; i < sizeof damaged / sizeof *damaged; i++) {
        fhirsync_code rc = fs_bulk_state_parse(damaged[i], strlen(damaged[i]), &st, &err);
        if (rc != FHIRSYNC_E_JSON) {
            fprintf(stderr, "accepted damaged state %zu: %s\n", i, damaged[i]);
            fail();
        }
        assert_null(st.base_url);
        assert_int_equal(st.done_count, 0);
    }
    /* a missing state.json is "not found", not damage */
    char empty[600];
    snprintf(empty, sizeof empty, "%s/empty", tmpdir);
    assert_int_equal(fs_bulk_mkdirs(empty, &err), FHIRSYNC_OK);
    assert_int_equal(fs_bulk_state_load(empty, &st, &err), FHIRSYNC_E_NOT_FOUND);
    fs_bulk_state_clear(&st);
}

/* ---- the public handle's versioned structs and error model --------------------------------- */

static void test_export_handle_api(void **state)
{
    (void)state;
    /* _init: defaults and the version; an unknown version leaves the struct alone */
    fhirsync_export_options o;
    memset(&o, 0x7f, sizeof o);
    assert_int_equal(fhirsync_export_options_init(&o, FHIRSYNC_EXPORT_OPTIONS_VERSION),
                     FHIRSYNC_OK);
    assert_int_equal(o.version, FHIRSYNC_EXPORT_OPTIONS_VERSION);
    assert_int_equal(o.limits.version, FHIRSYNC_EXPORT_LIMITS_VERSION);
    assert_int_equal(o.level, FHIRSYNC_EXPORT_SYSTEM);
    assert_int_equal(o.delete_job, -1);
    assert_false(o.post);
    assert_null(o.out_dir);
    assert_int_equal(o.limits.deadline_s, 0);
    fhirsync_export_limits l;
    memset(&l, 0x7f, sizeof l);
    assert_int_equal(fhirsync_export_limits_init(&l, 0), FHIRSYNC_E_ARG);
    assert_int_equal(fhirsync_export_options_init(&o, FHIRSYNC_EXPORT_OPTIONS_VERSION + 1),
                     FHIRSYNC_E_ARG);
    assert_int_equal(o.version, FHIRSYNC_EXPORT_OPTIONS_VERSION);
    assert_int_equal(l.stall_s, 0x7f7f7f7f7f7f7f7f);

    char key[600], dir[600];
    snprintf(key, sizeof key, "%s/handle.key.pem", tmpdir);
    snprintf(dir, sizeof dir, "%s/handle-export", tmpdir);
    fhirsync_error err = {0};
    fhirsync_key *k = NULL;
    assert_int_equal(fhirsync_key_generate(FHIRSYNC_ALG_ES384, 0, &k, &err), FHIRSYNC_OK);
    assert_int_equal(fhirsync_key_write_pem(k, key, &err), FHIRSYNC_OK);
    fhirsync_key_free(k);
    fhirsync_endpoint *ep = fhirsync_endpoint_new("h");
    assert_int_equal(fhirsync_endpoint_set(ep, "base_url", "http://127.0.0.1:9/fhir", "t", &err),
                     FHIRSYNC_OK);
    assert_int_equal(fhirsync_endpoint_set(ep, "client_id", "c", "t", &err), FHIRSYNC_OK);
    assert_int_equal(fhirsync_endpoint_set(ep, "key_file", key, "t", &err), FHIRSYNC_OK);

    /* options that skipped _init are refused by name, as are limits inside them */
    fhirsync_export_options bare = {.out_dir = dir};
    fhirsync_export *ex = NULL;
    assert_int_equal(fhirsync_export_new(ep, &bare, &ex, &err), FHIRSYNC_E_ARG);
    assert_null(ex);
    assert_non_null(strstr(err.message, "fhirsync_export_options_init"));
    o.out_dir = dir;
    o.limits.version = 0;
    assert_int_equal(fhirsync_export_new(ep, &o, &ex, &err), FHIRSYNC_E_ARG);
    assert_non_null(strstr(err.message, "fhirsync_export_limits_init"));
    assert_int_equal(fhirsync_export_limits_init(&o.limits, FHIRSYNC_EXPORT_LIMITS_VERSION),
                     FHIRSYNC_OK);
    assert_int_equal(fhirsync_export_new(ep, &o, &ex, &err), FHIRSYNC_OK);
    assert_int_equal(fhirsync_export_errcode(ex), FHIRSYNC_OK);
    assert_string_equal(fhirsync_export_errmsg(ex), "");

    /* the handle keeps its last failure: no job to delete before a kick-off */
    assert_int_equal(fhirsync_export_delete_job(ex), FHIRSYNC_E_ARG);
    assert_int_equal(fhirsync_export_errcode(ex), FHIRSYNC_E_ARG);
    assert_true(strlen(fhirsync_export_errmsg(ex)) > 0);
    assert_false(fhirsync_export_job_deleted(ex));
    /* limits: unversioned ones are refused (recorded); NULL and versioned ones clear the error */
    fhirsync_export_limits unset = {.deadline_s = 5};
    assert_int_equal(fhirsync_export_set_limits(ex, &unset), FHIRSYNC_E_ARG);
    assert_int_equal(fhirsync_export_errcode(ex), FHIRSYNC_E_ARG);
    assert_non_null(strstr(fhirsync_export_errmsg(ex), "FHIRSYNC_EXPORT_LIMITS_VERSION"));
    assert_int_equal(fhirsync_export_set_limits(ex, NULL), FHIRSYNC_OK);
    assert_int_equal(fhirsync_export_errcode(ex), FHIRSYNC_OK);
    assert_string_equal(fhirsync_export_errmsg(ex), "");
    assert_int_equal(fhirsync_export_limits_init(&l, FHIRSYNC_EXPORT_LIMITS_VERSION), FHIRSYNC_OK);
    l.deadline_s = 5;
    assert_int_equal(fhirsync_export_set_limits(ex, &l), FHIRSYNC_OK);

    /* stats: only a versioned struct is filled */
    fhirsync_export_stats st = {.files = 9};
    assert_int_equal(fhirsync_export_get_stats(ex, &st), FHIRSYNC_E_ARG);
    assert_int_equal(st.files, 9);
    assert_int_equal(fhirsync_export_stats_init(&st, 3), FHIRSYNC_E_ARG);
    assert_int_equal(fhirsync_export_stats_init(&st, FHIRSYNC_EXPORT_STATS_VERSION), FHIRSYNC_OK);
    st.files = 9;
    assert_int_equal(fhirsync_export_get_stats(ex, &st), FHIRSYNC_OK);
    assert_int_equal(st.version, FHIRSYNC_EXPORT_STATS_VERSION);
    assert_int_equal(st.files, 0);
    fhirsync_export_free(ex);
    fhirsync_endpoint_free(ep);
    unlink(key);
}

/* ---- the request ---------------------------------------------------------------------------- */

static void test_request_build(void **state)
{
    (void)state;
    fhirsync_endpoint *ep = fhirsync_endpoint_new("t");
    assert_non_null(ep);
    fhirsync_export_options o;
    fhirsync_export_options_init(&o, FHIRSYNC_EXPORT_OPTIONS_VERSION);
    const char *filters[] = {"Observation?category=laboratory", "Condition?clinical-status=active"};
    const char *params[] = {"_foo=a b&c"};
    o.types = "Patient,Observation";
    o.since = "2024-01-31T12:00:00Z";
    o.type_filters = filters;
    o.type_filter_count = 2;
    o.params = params;
    o.param_count = 1;
    fhirsync_error err = {0};
    json_t *req = fs_bulk_request_build(&o, ep, &err);
    assert_non_null(req);
    char *target = fs_bulk_request_target(req);
    assert_string_equal(target, "$export?_since=2024-01-31T12%3A00%3A00Z&_type=Patient%2C"
                                "Observation&_typeFilter=Observation%3Fcategory%3Dlaboratory&"
                                "_typeFilter=Condition%3Fclinical-status%3Dactive&_foo=a%20b%26c");
    fs_free(target);
    json_decref(req);

    /* POST with patients at group level: a Parameters body with typed values */
    const char *patients[] = {"123", "Patient/456"};
    fhirsync_export_options_init(&o, FHIRSYNC_EXPORT_OPTIONS_VERSION);
    o.level = FHIRSYNC_EXPORT_GROUP;
    o.group_id = "g-1";
    o.post = true;
    o.patients = patients;
    o.patient_count = 2;
    o.since = "2024-01-31T12:00:00Z";
    o.lenient = true;
    req = fs_bulk_request_build(&o, ep, &err);
    assert_non_null(req);
    assert_true(fs_bulk_request_post(req));
    assert_true(fs_bulk_request_lenient(req));
    target = fs_bulk_request_target(req);
    assert_string_equal(target, "Group/g-1/$export");
    fs_free(target);
    char *body = fs_bulk_request_parameters(req);
    json_t *p = json_loads(body, 0, NULL);
    assert_non_null(p);
    assert_string_equal(fs_json_str(p, "resourceType"), "Parameters");
    json_t *list = json_object_get(p, "parameter");
    assert_int_equal(json_array_size(list), 3);
    assert_string_equal(fs_json_str(json_array_get(list, 0), "valueInstant"),
                        "2024-01-31T12:00:00Z");
    assert_string_equal(
        fs_json_str(json_object_get(json_array_get(list, 1), "valueReference"), "reference"),
        "Patient/123");
    assert_string_equal(
        fs_json_str(json_object_get(json_array_get(list, 2), "valueReference"), "reference"),
        "Patient/456");
    json_decref(p);
    fs_free(body);
    /* the same options give an equal canonical request (what a resume compares) */
    json_t *again = fs_bulk_request_build(&o, ep, &err);
    assert_true(json_equal(req, again));
    json_decref(again);
    json_decref(req);

    /* refusals */
    fhirsync_export_options_init(&o, FHIRSYNC_EXPORT_OPTIONS_VERSION);
    o.level = FHIRSYNC_EXPORT_GROUP;
    assert_null(fs_bulk_request_build(&o, ep, &err));
    assert_non_null(strstr(err.message, "group id"));
    o.group_id = "bad/id";
    assert_null(fs_bulk_request_build(&o, ep, &err));
    fhirsync_export_options_init(&o, FHIRSYNC_EXPORT_OPTIONS_VERSION);
    o.level = FHIRSYNC_EXPORT_PATIENT;
    o.patients = patients;
    o.patient_count = 1;
    assert_null(fs_bulk_request_build(&o, ep, &err));
    assert_non_null(strstr(err.message, "POST"));
    fhirsync_export_options_init(&o, FHIRSYNC_EXPORT_OPTIONS_VERSION);
    o.since = "last week";
    assert_null(fs_bulk_request_build(&o, ep, &err));
    assert_non_null(strstr(err.message, "instant"));
    fhirsync_export_options_init(&o, FHIRSYNC_EXPORT_OPTIONS_VERSION);
    o.params = (const char *[]){"novalue"};
    o.param_count = 1;
    assert_null(fs_bulk_request_build(&o, ep, &err));
    /* the profile's group_id and types are the defaults */
    fhirsync_export_options_init(&o, FHIRSYNC_EXPORT_OPTIONS_VERSION);
    o.level = FHIRSYNC_EXPORT_GROUP;
    assert_int_equal(fhirsync_endpoint_set(ep, "group_id", "practice-7", "test", &err),
                     FHIRSYNC_OK);
    req = fs_bulk_request_build(&o, ep, &err);
    assert_non_null(req);
    target = fs_bulk_request_target(req);
    assert_string_equal(target, "Group/practice-7/$export");
    fs_free(target);
    json_decref(req);
    fhirsync_endpoint_free(ep);
}

/* ---- poll delays ---------------------------------------------------------------------------- */

static void test_poll_delay(void **state)
{
    (void)state;
    int64_t now = 1714557600; /* 2024-05-01T10:00:00Z */
    assert_int_equal(fs_bulk_poll_delay_ms("5", now, 0, 300, 0), 5000);
    /* "Retry-After: 0" (and a date in the past) never means back-to-back polls: the floor */
    assert_int_equal(fs_bulk_poll_delay_ms("0", now, 3, 300, 0), FS_BULK_DEFAULT_POLL_FLOOR_MS);
    assert_int_equal(fs_bulk_poll_delay_ms("0", now, 3, 300, 250), 250);
    /* capped */
    assert_int_equal(fs_bulk_poll_delay_ms("86400", now, 0, 300, 0), 300000);
    /* an HTTP-date against the (fake) clock */
    assert_int_equal(fs_bulk_poll_delay_ms("Wed, 01 May 2024 10:00:30 GMT", now, 0, 300, 0), 30000);
    assert_int_equal(fs_bulk_poll_delay_ms("Wed, 01 May 2024 09:00:00 GMT", now, 0, 300, 0),
                     FS_BULK_DEFAULT_POLL_FLOOR_MS);
    /* absolute epochs, in seconds and in milliseconds: a time, not a delay to cap */
    assert_int_equal(fs_bulk_poll_delay_ms("1714557612", now, 0, 300, 0), 12000);
    assert_int_equal(fs_bulk_poll_delay_ms("1714557612000", now, 0, 300, 0), 12000);
    assert_int_equal(fs_bulk_poll_delay_ms("1714557000", now, 0, 300, 0),
                     FS_BULK_DEFAULT_POLL_FLOOR_MS); /* in the past */
    /* without (or with garbage) exponential backoff with jitter in [base/2, base], up to 120 s */
    for (unsigned attempt = 0; attempt < 12; attempt++) {
        int64_t base = 1000LL << (attempt < 9 ? attempt : 9);
        if (base > FS_BULK_POLL_BACKOFF_CAP_S * 1000)
            base = FS_BULK_POLL_BACKOFF_CAP_S * 1000;
        int64_t d = fs_bulk_poll_delay_ms(attempt % 2 ? "soon" : NULL, now, attempt, 300, 0);
        int64_t low =
            base / 2 < FS_BULK_DEFAULT_POLL_FLOOR_MS ? FS_BULK_DEFAULT_POLL_FLOOR_MS : base / 2;
        assert_true(d >= low && d <= base);
    }
    /* a retry_cap below the backoff cap wins */
    assert_true(fs_bulk_poll_delay_ms(NULL, now, 11, 2, 0) <= 2000);
}

/* ---- the retry budget ----------------------------------------------------------------------- */

static void test_retry_budget(void **state)
{
    (void)state;
    /* a server that cuts the file at byte 1000 every time: 5 retries, then the budget is spent */
    fs_bulk_budget b = {0};
    unsigned allowed = 0;
    for (int i = 0; i < 100 && fs_bulk_budget_fail(&b, 1000, false, 5); i++)
        allowed++;
    assert_int_equal(allowed, 5);
    assert_int_equal(b.furthest, 1000);
    /* getting further than ever resets it; reaching the same place again does not */
    fs_bulk_budget g = {0};
    assert_true(fs_bulk_budget_fail(&g, 100, false, 2));
    assert_true(fs_bulk_budget_fail(&g, 100, false, 2));
    assert_false(fs_bulk_budget_fail(&g, 100, false, 2));
    assert_true(fs_bulk_budget_fail(&g, 101, false, 2)); /* further: a fresh budget */
    assert_int_equal(g.failures, 1);
    assert_true(fs_bulk_budget_fail(&g, 50, false, 2)); /* a restart from 0 that fell short */
    assert_false(fs_bulk_budget_fail(&g, 101, false, 2));
    /* progress under the stall rule does not buy attempts: a trickle ends */
    fs_bulk_budget t = {0};
    unsigned tries = 0;
    for (uint64_t at = 10; at < 100000 && fs_bulk_budget_fail(&t, at, true, 3); at += 10)
        tries++;
    assert_int_equal(tries, 3);
    assert_int_equal(t.furthest, 40);
    /* no retries at all */
    fs_bulk_budget z = {0};
    assert_false(fs_bulk_budget_fail(&z, 0, false, 0));
}

/* ---- many files ----------------------------------------------------------------------------- */

#define MANY 40000

/* Issue 11: what every file of a manifest costs before its first transfer. fs_bulk_file keeps
 * only the public view and where the file stands; the transfer's and the writer's state live in
 * fs_bulk_scratch (only while a file downloads), the paths are built when needed. 160,000 files
 * at this size are 25 MB of the 64 MB budget before the first download. */
static void test_file_footprint(void **state)
{
    (void)state;
    assert_true(sizeof(fs_bulk_file) <= 168);
    assert_true(sizeof(fs_bulk_file) + 200 < sizeof(fs_bulk_scratch));
}

static void test_many_entries(void **state)
{
    (void)state;
    static const char *const types[] = {"Patient", "Observation", "Encounter"};
    fs_buf body;
    fs_buf_init(&body);
    assert_true(fs_buf_printf(&body, "{\"transactionTime\":\"2024-05-01T10:00:00Z\","
                                     "\"request\":\"x\",\"requiresAccessToken\":true,"
                                     "\"output\":["));
    for (int i = 0; i < MANY; i++)
        assert_true(fs_buf_printf(&body, "%s{\"type\":\"%s\",\"url\":\"f/%d\",\"count\":%d}",
                                  i ? "," : "", types[i % 3], i, i % 7));
    assert_true(fs_buf_printf(&body, "],\"error\":[{\"type\":\"OperationOutcome\","
                                     "\"url\":\"e/1\"}]}"));
    fs_bulk_manifest m;
    fs_bulk_manifest_init(&m);
    fhirsync_error err = {0};
    assert_int_equal(
        fs_bulk_manifest_parse(&m, body.data, body.len, "https://h.example/fhir/status/1", &err),
        FHIRSYNC_OK);
    assert_int_equal(m.count, MANY + 1);
    for (int i = 0; i < MANY; i += 997) {
        char url[64];
        snprintf(url, sizeof url, "https://h.example/fhir/status/f/%d", i);
        assert_string_equal(m.entries[i].url, url);
        assert_string_equal(m.entries[i].type, types[i % 3]);
        assert_int_equal(m.entries[i].count, i % 7);
    }
    assert_int_equal(m.entries[MANY].kind, FHIRSYNC_EXPORT_ERROR);
    assert_int_equal(merged_size(&m, "output"), MANY);
    /* a second page that fails leaves the first page's entries and merged arrays as they were */
    const char *bad = "{\"transactionTime\":\"2024-05-01T10:00:00Z\",\"output\":["
                      "{\"type\":\"Patient\",\"url\":\"ok\"},{\"type\":\"x\",\"url\":\"u\"}],"
                      "\"deleted\":[{\"type\":\"Bundle\",\"url\":\"d\"}]}";
    assert_int_equal(fs_bulk_manifest_parse(&m, bad, strlen(bad), "https://h.example/p", &err),
                     FHIRSYNC_E_PROTOCOL);
    assert_int_equal(m.count, MANY + 1);
    assert_int_equal(merged_size(&m, "output"), MANY);
    assert_int_equal(merged_size(&m, "deleted"), (size_t)-1);
    fs_bulk_manifest_drop_entries(&m);
    assert_int_equal(m.count, 0);
    assert_null(m.header);
    assert_string_equal(m.transaction_time, "2024-05-01T10:00:00Z");
    fs_bulk_manifest_clear(&m);
    fs_buf_free(&body);

    /* state.json with many finished files: each found by its name, re-adding updates */
    fs_bulk_state st;
    fs_bulk_state_init(&st);
    st.base_url = fs_strdup("https://h.example/fhir");
    st.request = json_object();
    char name[64];
    for (int i = 0; i < MANY; i++) {
        snprintf(name, sizeof name, "%s.%d.ndjson", types[i % 3], i / 3 + 1);
        assert_true(fs_bulk_state_add_done(&st, name, i, 0, (uint64_t)i * 10));
    }
    snprintf(name, sizeof name, "%s.%d.ndjson", types[5 % 3], 5 / 3 + 1);
    assert_true(fs_bulk_state_add_done(&st, name, 12345, 1, 1));
    assert_int_equal(st.done_count, MANY);
    for (int i = 0; i < MANY; i += 101) {
        snprintf(name, sizeof name, "%s.%d.ndjson", types[i % 3], i / 3 + 1);
        const fs_bulk_done *d = fs_bulk_state_find_done(&st, name);
        assert_non_null(d);
        assert_int_equal(d->count, i == 5 ? 12345 : i);
    }
    assert_null(fs_bulk_state_find_done(&st, "Patient.0.ndjson"));
    char *text = fs_bulk_state_dump(&st);
    assert_non_null(text);
    fs_bulk_state back;
    fs_bulk_state_init(&back);
    assert_int_equal(fs_bulk_state_parse(text, strlen(text), &back, &err), FHIRSYNC_OK);
    assert_int_equal(back.done_count, MANY);
    assert_int_equal(fs_bulk_state_find_done(&back, "Encounter.1.ndjson")->count, 2);
    fs_free(text);
    fs_bulk_state_clear(&back);
    fs_bulk_state_clear(&st);
}

/* ---- --bench -------------------------------------------------------------------------------- */

static int bench(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 1;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = malloc((size_t)size + 1);
    if (!data || fread(data, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        free(data);
        return 1;
    }
    fclose(f);
    int64_t t0 = fs_monotonic_ms();
    size_t lines = 0, ok = 0;
    fs_ndjson_checker ck;
    for (int round = 0; round < 5; round++) {
        fs_ndjson_init(&ck, NULL, 0);
        for (size_t off = 0; off < (size_t)size;) {
            size_t used;
            if (fs_ndjson_feed(&ck, data + off, (size_t)size - off, &used) == FS_NDJSON_LINE) {
                lines++;
                ok += ck.verdict == FS_NDJSON_OK;
            }
            off += used;
        }
    }
    int64_t t1 = fs_monotonic_ms();
    size_t jok = 0;
    for (int round = 0; round < 5; round++) {
        for (char *line = data; line < data + size;) {
            char *nl = memchr(line, '\n', (size_t)(data + size - line));
            size_t n = nl ? (size_t)(nl - line) : (size_t)(data + size - line);
            json_error_t je;
            json_t *j = json_loadb(line, n, 0, &je);
            if (j && json_is_string(json_object_get(j, "resourceType")))
                jok++;
            json_decref(j);
            line += n + 1;
        }
    }
    int64_t t2 = fs_monotonic_ms();
    double mb = 5.0 * (double)size / 1e6;
    printf("%zu lines (%zu ok) x5, %.1f MB: checker %.0f MB/s, jansson %.0f MB/s (%zu ok), "
           "ratio %.1fx\n",
           lines / 5, ok / 5, mb, mb / ((double)(t1 - t0) / 1000.0 + 1e-9),
           mb / ((double)(t2 - t1) / 1000.0 + 1e-9), jok / 5,
           (double)(t2 - t1) / ((double)(t1 - t0) + 1e-9));
    free(data);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--bench") == 0) {
        fhirsync_global_init();
        return bench(argv[2]);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checker_valid_lines),
        cmocka_unit_test(test_checker_bad_lines),
        cmocka_unit_test(test_checker_file_shapes),
        cmocka_unit_test(test_checker_line_cap),
        cmocka_unit_test(test_checker_chunking_and_jansson),
        cmocka_unit_test(test_manifest_valid_and_paged),
        cmocka_unit_test(test_manifest_errors),
        cmocka_unit_test(test_reader_grammar),
        cmocka_unit_test(test_reader_manifest_faults),
        cmocka_unit_test(test_reader_manifest_shapes),
        cmocka_unit_test(test_reader_url_resolution),
        cmocka_unit_test(test_state_round_trip),
        cmocka_unit_test(test_state_damage),
        cmocka_unit_test(test_request_build),
        cmocka_unit_test(test_export_handle_api),
        cmocka_unit_test(test_poll_delay),
        cmocka_unit_test(test_retry_budget),
        cmocka_unit_test(test_many_entries),
        cmocka_unit_test(test_file_footprint),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
