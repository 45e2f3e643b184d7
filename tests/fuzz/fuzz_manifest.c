/* fuzz/fuzz_manifest.c: fuzz target for the bulk export's completion manifest parser and for
 * state.json (bulk/manifest.c, bulk/state.c). The input is parsed as a manifest page (then as a
 * second page of the same export); every entry must come out with a type name and an absolute
 * http(s) URL, and the merged manifest, serialised, must parse back to the same entries (what a
 * resume reads from manifest.json). The input is also parsed as state.json, and a state that
 * parses must serialise and parse back unchanged. Built with -fsanitize=fuzzer under clang, or
 * with replay_main.c as a corpus replayer under gcc. */
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_manifest((const char *)data, size);
    check_state((const char *)data, size);
    return 0;
}
