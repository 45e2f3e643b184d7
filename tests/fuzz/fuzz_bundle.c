/* fuzz/fuzz_bundle.c: fuzz target for what the REST client reads from a FHIR server's search
 * pages and error bodies: the JSON span scanner (fhir/span.c), the Bundle page parser (entries,
 * paging links, search modes) and OperationOutcome / error-body descriptions (fhir/outcome.c).
 *
 * Besides "no crash, no leak", it checks the scanner against jansson as an oracle: whenever
 * jansson accepts the input as an object (and it is not nested beyond the scanner's depth), the
 * scanner must accept it too, find the same number of entries and links, and every span it
 * reports must parse, on its own, to the value jansson sees at that place. That is the property
 * the search iterator relies on when it hands out resources as raw bytes.
 *
 * Built with -fsanitize=fuzzer under clang (tests/fuzz/CMakeLists.txt), or with replay_main.c as
 * a corpus replayer under gcc. Dictionary: tests/fuzz/dict/fhir.dict. */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fhir/fhir_internal.h"
#include "json/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The span must hold exactly the JSON value `want`. */
static void check_span(const char *text, size_t size, fs_span span, const json_t *want)
{
    if (span.start > size || span.len > size - span.start)
        __builtin_trap();
    json_t *again =
        json_loadb(text + span.start, span.len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
    if (!again || !json_equal(again, want))
        __builtin_trap();
    json_decref(again);
}

static void scanner_against_jansson(const char *text, size_t size)
{
    fs_bundle_scan scan;
    fs_bundle_scan_init(&scan);
    fs_span_status st = fs_bundle_scan_run(text, size, &scan);
    json_t *doc = json_loadb(text, size, JSON_REJECT_DUPLICATES, NULL);
    if (st == FS_SPAN_OK && (scan.error_offset != 0))
        __builtin_trap();
    if (doc && json_is_object(doc) && st != FS_SPAN_DEPTH && st != FS_SPAN_NOMEM) {
        if (st != FS_SPAN_OK)
            __builtin_trap();
        const json_t *type = json_object_get(doc, "resourceType");
        if ((type != NULL) != (scan.resource_type.len > 0))
            __builtin_trap();
        if (type)
            check_span(text, size, scan.resource_type, type);
        const json_t *entries = json_object_get(doc, "entry");
        if (json_is_array(entries) != scan.entry_is_array ||
            scan.entry_count != json_array_size(entries))
            __builtin_trap();
        for (size_t i = 0; i < scan.entry_count; i++) {
            const json_t *resource = json_object_get(json_array_get(entries, i), "resource");
            if (!resource) {
                if (scan.resources[i].len != 0)
                    __builtin_trap();
                continue;
            }
            check_span(text, size, scan.resources[i], resource);
        }
        const json_t *links = json_object_get(doc, "link");
        if (json_is_array(links) != scan.link_is_array || scan.link_count != json_array_size(links))
            __builtin_trap();
        for (size_t i = 0; i < scan.link_count; i++)
            check_span(text, size, scan.links[i], json_array_get(links, i));
    }
    json_decref(doc);
    fs_bundle_scan_clear(&scan);

    /* any prefix position: the value skipper never reads out of bounds */
    size_t pos = size / 2;
    fs_span span;
    if (fs_json_span_value(text, size, &pos, &span) == FS_SPAN_OK &&
        (pos > size || span.start + span.len != pos))
        __builtin_trap();
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
