/* fuzz/fuzz_bundle.c: fuzz target for what the REST client reads from a FHIR server's search
 * pages and error bodies: the Bundle scanner (fhir/span.c), the Bundle page parser (entries,
 * paging links, search modes) and OperationOutcome / error-body descriptions (fhir/outcome.c).
 *
 * Besides "no crash, no leak", it checks the scanner against jansson as an oracle, both ways,
 * because the scanner is the only validation a search page gets:
 * - scanner accepts => jansson accepts the same text as an object, except for repeated member
 *   names inside entry resources (passed on verbatim by design; every other object's names are
 *   checked): then the text with every resource replaced by a number must pass jansson's
 *   duplicate check. Each recorded span must parse, on its own, to the value jansson sees at
 *   that place, and the values the scanner read (resourceType, total, each resource's type,
 *   search mode, link relation and url) must be jansson's;
 * - scanner says "not an object" => jansson reads some other value;
 * - scanner says "duplicate" => jansson refuses the text for a duplicate key;
 * - scanner says "syntax" => jansson refuses the text.
 * Three differences are left out. Nesting between the scanner's limit (1024) and jansson's
 * (2048). Numbers jansson cannot represent (1e400, integers beyond 64 bits), which are valid
 * JSON: when jansson refuses a text for that, the comparison is skipped. And NUL bytes: jansson's
 * lexer drops one that follows a number ("[52\0]" loads as [52]), so a text holding a NUL byte
 * is only required to be refused by the scanner (a NUL is never valid JSON, raw).
 *
 * Built with -fsanitize=fuzzer under clang (tests/fuzz/CMakeLists.txt), or with replay_main.c as
 * a corpus replayer under gcc. Dictionary: tests/fuzz/dict/fhir.dict. */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fhir/fhir_internal.h"
#include "json/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The span must hold exactly the JSON value `want` (duplicates inside allowed: jansson keeps the
 * last, on both sides). */
static void check_span(const char *text, size_t size, fs_span span, const json_t *want)
{
    if (span.start > size || span.len > size - span.start)
        __builtin_trap();
    json_t *again = json_loadb(text + span.start, span.len, JSON_DECODE_ANY, NULL);
    if (!again || !json_equal(again, want))
        __builtin_trap();
    json_decref(again);
}

/* A string content the scanner recorded must decode to jansson's string. */
static void check_string(const char *text, fs_span content, const json_t *want)
{
    if (!json_is_string(want))
        __builtin_trap();
    char *got = fs_span_string_decode(text, content);
    if (!got)
        return; /* out of memory */
    if (strlen(got) != json_string_length(want) || strcmp(got, json_string_value(want)) != 0)
        __builtin_trap();
    if (!fs_span_string_equals(text, content, json_string_value(want)))
        __builtin_trap();
    fs_free(got);
}

/* Accepted with repeated names: they must all be inside entry resources. */
static void check_duplicates_in_resources(const char *text, size_t size, const fs_bundle_scan *scan)
{
    char *copy = malloc(size ? size : 1);
    if (!copy)
        return;
    memcpy(copy, text, size);
    for (size_t i = 0; i < scan->entry_count; i++) {
        fs_span r = scan->entries[i].resource;
        if (r.len == 0)
            continue;
        memset(copy + r.start, ' ', r.len);
        copy[r.start] = '0';
    }
    json_t *outer = json_loadb(copy, size, JSON_REJECT_DUPLICATES, NULL);
    if (!outer)
        __builtin_trap();
    json_decref(outer);
    free(copy);
}

static void check_scan(const char *text, size_t size, const fs_bundle_scan *scan, const json_t *doc)
{
    const json_t *type = json_object_get(doc, "resourceType");
    if ((type != NULL) != (scan->resource_type.len > 0))
        __builtin_trap();
    if (type)
        check_span(text, size, scan->resource_type, type);
    const json_t *total = json_object_get(doc, "total");
    if ((total != NULL) != (scan->total.len > 0))
        __builtin_trap();
    if (total) {
        check_span(text, size, scan->total, total);
        int64_t mine;
        if (json_is_integer(total) && (!fs_span_number_integer(text, scan->total, &mine) ||
                                       mine != json_integer_value(total)))
            __builtin_trap();
    }
    const json_t *entries = json_object_get(doc, "entry");
    if ((entries != NULL) != scan->has_entry || json_is_array(entries) != scan->entry_is_array ||
        scan->entry_count != json_array_size(entries))
        __builtin_trap();
    for (size_t i = 0; i < scan->entry_count; i++) {
        const fs_bundle_entry *e = &scan->entries[i];
        const json_t *entry = json_array_get(entries, i);
        if (e->is_object != json_is_object(entry))
            __builtin_trap();
        const json_t *resource = json_object_get(entry, "resource");
        if ((resource != NULL) != (e->resource.len > 0) ||
            e->resource_object != json_is_object(resource))
            __builtin_trap();
        if (resource)
            check_span(text, size, e->resource, resource);
        const json_t *rtype = json_object_get(resource, "resourceType");
        if (e->has_type != json_is_string(rtype))
            __builtin_trap();
        if (e->has_type)
            check_string(text, e->resource_type, rtype);
        const char *mode = fs_json_str(json_object_get(entry, "search"), "mode");
        if (e->outcome != fs_streq(mode, "outcome"))
            __builtin_trap();
    }
    const json_t *links = json_object_get(doc, "link");
    if ((links != NULL) != scan->has_link || json_is_array(links) != scan->link_is_array ||
        scan->link_count != json_array_size(links))
        __builtin_trap();
    for (size_t i = 0; i < scan->link_count; i++) {
        const fs_bundle_link *l = &scan->links[i];
        const json_t *link = json_array_get(links, i);
        check_span(text, size, l->value, link);
        if (l->is_object != json_is_object(link) ||
            l->next != fs_streq(fs_json_str(link, "relation"), "next") ||
            l->has_url != json_is_string(json_object_get(link, "url")))
            __builtin_trap();
        if (l->has_url)
            check_string(text, l->url, json_object_get(link, "url"));
    }
}

static void scanner_against_jansson(const char *text, size_t size)
{
    fs_bundle_scan scan;
    fs_bundle_scan_init(&scan);
    fs_span_status st = fs_bundle_scan_run(text, size, &scan);
    json_error_t any_err, strict_err;
    json_t *any = json_loadb(text, size, JSON_DECODE_ANY, &any_err);
    json_t *strict = json_loadb(text, size, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &strict_err);
    bool unrepresentable = !any && json_error_code(&any_err) == json_error_numeric_overflow;
    if ((st == FS_SPAN_OK) != (scan.error == NULL) || (st == FS_SPAN_OK && scan.error_offset))
        __builtin_trap();
    if (scan.error_offset > size)
        __builtin_trap();
    if (memchr(text, '\0', size)) {
        if (st == FS_SPAN_OK || st == FS_SPAN_NOT_OBJECT)
            __builtin_trap();
    } else if (!unrepresentable) {
        switch (st) {
        case FS_SPAN_OK:
            if (!json_is_object(any))
                __builtin_trap();
            if (!strict)
                check_duplicates_in_resources(text, size, &scan);
            check_scan(text, size, &scan, any);
            break;
        case FS_SPAN_NOT_OBJECT:
            if (!any || json_is_object(any))
                __builtin_trap();
            break;
        case FS_SPAN_DUPLICATE:
            if (strict || json_error_code(&strict_err) != json_error_duplicate_key)
                __builtin_trap();
            if (scan.duplicate.start == 0 || scan.duplicate.start + scan.duplicate.len > size)
                __builtin_trap();
            break;
        case FS_SPAN_SYNTAX:
            if (any)
                __builtin_trap();
            break;
        case FS_SPAN_DEPTH: /* jansson goes deeper */
        case FS_SPAN_NOMEM: break;
        }
    }
    json_decref(any);
    json_decref(strict);
    fs_bundle_scan_clear(&scan);

    /* from any position: the value validator never reads out of bounds, and agrees with jansson
     * on the value it found */
    size_t pos = size / 2;
    fs_span span;
    if (fs_json_span_value(text, size, &pos, &span) == FS_SPAN_OK) {
        if (pos > size || span.start + span.len != pos)
            __builtin_trap();
        json_error_t e;
        json_t *value = json_loadb(text + span.start, span.len, JSON_DECODE_ANY, &e);
        if (!value && json_error_code(&e) != json_error_numeric_overflow)
            __builtin_trap();
        if (memchr(text + span.start, '\0', span.len))
            __builtin_trap();
        json_decref(value);
    }
}

static void page_parser(const char *text, size_t size)
{
    fs_fhir_page page;
    fs_fhir_page_init(&page);
    fhirsync_error err = {0};
    fhirsync_code rc =
        fs_fhir_page_parse(text, size, "https://fuzz.example/fhir/Observation", &page, &err);
    if (rc == FHIRSYNC_OK) {
        for (size_t i = 0; i < page.count; i++) {
            fs_span r = page.entries[i].resource;
            if (r.start >= size || r.len > size - r.start || text[r.start] != '{' ||
                text[r.start + r.len - 1] != '}')
                __builtin_trap();
        }
        if (page.outcomes > page.count)
            __builtin_trap();
    } else {
        /* a failure leaves an empty page and says why, on one line */
        if (page.count || page.next || !err.message[0] || strchr(err.message, '\n'))
            __builtin_trap();
        if (rc != FHIRSYNC_E_PROTOCOL && rc != FHIRSYNC_E_NOMEM)
            __builtin_trap();
    }
    /* the same page struct is reused for the next page */
    (void)fs_fhir_page_parse("{\"resourceType\":\"Bundle\"}", 25, "u", &page, &err);
    fs_fhir_page_clear(&page);
}

static void error_bodies(const char *text, size_t size)
{
    fs_outcome outcome;
    bool is_outcome = fs_outcome_parse(text, size, &outcome);
    if (strnlen(outcome.summary, sizeof outcome.summary) >= sizeof outcome.summary)
        __builtin_trap();
    if (!is_outcome && (outcome.issues || outcome.summary[0]))
        __builtin_trap();
    char buf[256];
    fs_fhir_describe_body(text, size, NULL, buf, sizeof buf);
    fs_fhir_describe_body(text, size, "text/html", buf, sizeof buf);
    size_t blank = 0;
    while (blank < size && isspace((unsigned char)text[blank]))
        blank++;
    if (strcmp(buf, "an HTML page (not a FHIR response)") != 0 && blank < size)
        __builtin_trap(); /* an HTML content type always reads as a page, never quoted */
    fs_fhir_describe_body(text, size, "application/fhir+json", buf, 8); /* tiny buffer */
    fs_http_response resp;
    fs_http_response_init(&resp);
    resp.status = 400 + (long)(size % 200);
    if (fs_buf_append(&resp.body, text, size)) {
        fhirsync_error err = {0};
        if (fs_fhir_status_error(&resp, "https://fuzz.example/fhir/X", &err) == FHIRSYNC_OK ||
            err.http_status != resp.status)
            __builtin_trap();
    }
    fs_http_response_clear(&resp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    scanner_against_jansson(text, size);
    page_parser(text, size);
    error_bodies(text, size);
    return 0;
}
