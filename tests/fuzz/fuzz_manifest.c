/* fuzz/fuzz_manifest.c: fuzz target for the bulk export's completion manifest parser and for
 * state.json (bulk/manifest.c, bulk/state.c). The input is parsed as a manifest page (then as a
 * second page of the same export); every entry must come out with a type name and an absolute
 * http(s) URL, and the merged manifest, serialised, must parse back to the same entries (what a
 * resume reads from manifest.json). The manifest's own JSON reader must accept every text jansson
 * accepts (except a NUL byte after a literal, which jansson lets through), and refuse what
 * jansson refuses except numbers beyond jansson's range and nesting between the reader's depth
 * (1024) and jansson's (2048); the folder shortcut of URL resolution
 * must give what libcurl gives for the input as a reference. The input is also parsed as
 * state.json, and a state that parses must serialise and parse back unchanged. Built with
 * -fsanitize=fuzzer under clang, or with replay_main.c as a corpus replayer under gcc. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "bulk/bulk_internal.h"
#include "http/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_manifest(const char *text, size_t len)
{
    fs_bulk_manifest m;
    fs_bulk_manifest_init(&m);
    fhirsync_error err;
    const char *base = "https://fhir.example.org/r4/bulkstatus/42";
    if (fs_bulk_manifest_parse(&m, text, len, base, &err) != FHIRSYNC_OK) {
        if (m.count || m.started || m.transaction_time || err.code == FHIRSYNC_OK)
            __builtin_trap();
        fs_bulk_manifest_clear(&m);
        return;
    }
    size_t first = m.count;
    for (size_t i = 0; i < m.count; i++) {
        if (!fs_bulk_type_name_ok(m.entries[i].type) || m.entries[i].count < -1 ||
            fs_url_check_transport(m.entries[i].url, "url", NULL) != FHIRSYNC_OK)
            __builtin_trap();
    }
    /* the same text as a second page: entries double (or the page is refused whole) */
    if (fs_bulk_manifest_parse(&m, text, len, base, &err) == FHIRSYNC_OK) {
        if (m.count != 2 * first)
            __builtin_trap();
    } else if (m.count != first) {
        __builtin_trap();
    }
    char *dump = fs_bulk_manifest_dump(&m);
    if (dump) {
        fs_bulk_manifest back;
        fs_bulk_manifest_init(&back);
        if (fs_bulk_manifest_parse(&back, dump, strlen(dump), base, &err) != FHIRSYNC_OK ||
            back.count != m.count)
            __builtin_trap();
        /* the merged document lists each kind's entries in page order: compare per kind
         * (the order the export numbers files in) */
        for (int kind = 0; kind < 3; kind++) {
            size_t j = 0;
            for (size_t i = 0; i < m.count; i++) {
                if ((int)m.entries[i].kind != kind)
                    continue;
                while (j < back.count && (int)back.entries[j].kind != kind)
                    j++;
                if (j == back.count || strcmp(back.entries[j].url, m.entries[i].url) != 0 ||
                    strcmp(back.entries[j].type, m.entries[i].type) != 0)
                    __builtin_trap();
                j++;
            }
        }
        fs_bulk_manifest_clear(&back);
        fs_free(dump);
    }
    fs_bulk_manifest_clear(&m);
}

static void check_state(const char *text, size_t len)
{
    fs_bulk_state st, back;
    fs_bulk_state_init(&st);
    fs_bulk_state_init(&back);
    fhirsync_error err;
    if (fs_bulk_state_parse(text, len, &st, &err) == FHIRSYNC_OK) {
        char *dump = fs_bulk_state_dump(&st);
        if (dump) {
            if (fs_bulk_state_parse(dump, strlen(dump), &back, &err) != FHIRSYNC_OK ||
                back.done_count != st.done_count || !json_equal(back.request, st.request) ||
                ((back.status_url || st.status_url) && !fs_streq(back.status_url, st.status_url)))
                __builtin_trap();
            fs_free(dump);
        }
    }
    fs_bulk_state_clear(&st);
    fs_bulk_state_clear(&back);
}

static void check_reader(const char *text, size_t len)
{
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_DECODE_ANY, &je);
    char why[200];
    bool ours = fs_bulk_json_check(text, len, why, sizeof why);
    /* jansson takes "false\0" for false (its literal compare stops at the NUL): the reader
     * refuses any NUL byte outside a string, as RFC 8259 does */
    if (j && !ours && !strstr(why, "nested too deep") && !memchr(text, '\0', len))
        __builtin_trap();
    if (!j && ours && !strstr(je.text, "too big") && !strstr(je.text, "overflow") &&
        !strstr(je.text, "nesting"))
        __builtin_trap();
    json_decref(j);
}

static void check_resolution(const char *text, size_t len)
{
    if (len > 300 || memchr(text, '\0', len))
        return;
    char ref[301];
    memcpy(ref, text, len);
    ref[len] = '\0';
    const char *base = "https://fhir.example.org/r4/bulkstatus/42";
    char *full = NULL, *fast = NULL;
    bool ok = fs_url_resolve(base, ref, false, &full, NULL) == FHIRSYNC_OK &&
              fs_url_check_transport(full, "url", NULL) == FHIRSYNC_OK;
    bool fast_ok = fs_bulk_manifest_resolve(base, ref, &fast);
    if (ok != fast_ok || (ok && strcmp(full, fast) != 0))
        __builtin_trap();
    fs_free(full);
    fs_free(fast);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_manifest((const char *)data, size);
    check_reader((const char *)data, size);
    check_resolution((const char *)data, size);
    check_state((const char *)data, size);
    return 0;
}
