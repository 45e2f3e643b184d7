/* fuzz/fuzz_ndjson.c: fuzz target for the bulk NDJSON line checker (bulk/ndjson.c), the parser
 * every byte of a downloaded export file goes through. The input is a file: its first byte picks
 * the chunk size and the line cap, the rest is fed in chunks and again in one piece, and the two
 * runs must give the same verdicts. Each line is also parsed with jansson: a line jansson reads
 * as an object with a string resourceType must pass the checker with that type (unless it is
 * nested past the checker's depth limit or names resourceType twice), and a line the checker
 * passes must be one jansson reads (or refuses only for a number too large for it). Built with
 * -fsanitize=fuzzer under clang, or with replay_main.c as a corpus replayer under gcc. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "bulk/bulk_internal.h"
#include "json/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_LINES 4096

typedef struct verdict {
    uint8_t kind;
    uint64_t line, offset, len;
    char type[FS_BULK_MAX_TYPE_LEN + 1];
} verdict;

static size_t run(const char *text, size_t len, size_t chunk, uint64_t cap, verdict *out)
{
    fs_ndjson_checker ck;
    fs_ndjson_init(&ck, NULL, cap);
    size_t n = 0;
    for (size_t off = 0; off < len;) {
        size_t piece = len - off < chunk ? len - off : chunk;
        for (size_t pos = 0; pos < piece;) {
            size_t used = 0;
            fs_ndjson_event ev = fs_ndjson_feed(&ck, text + off + pos, piece - pos, &used);
            if (used == 0 || used > piece - pos)
                __builtin_trap();
            pos += used;
            if (ev == FS_NDJSON_LINE && n < MAX_LINES) {
                out[n].kind = (uint8_t)ck.verdict;
                out[n].line = ck.verdict_line;
                out[n].offset = ck.verdict_offset;
                out[n].len = ck.verdict_len;
                memcpy(out[n].type, ck.verdict == FS_NDJSON_OK ? ck.resource_type : "",
                       ck.verdict == FS_NDJSON_OK ? sizeof out[n].type : 1);
                n++;
            }
        }
        off += piece;
    }
    if (fs_ndjson_finish(&ck) && n < MAX_LINES) {
        out[n].kind = (uint8_t)ck.verdict;
        out[n].line = ck.verdict_line;
        out[n].offset = ck.verdict_offset;
        out[n].len = ck.verdict_len;
        memcpy(out[n].type, ck.verdict == FS_NDJSON_OK ? ck.resource_type : "",
               ck.verdict == FS_NDJSON_OK ? sizeof out[n].type : 1);
        n++;
    }
    return n;
}

static verdict a[MAX_LINES], b[MAX_LINES];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = (size_t)(data[0] & 0x1f) + 1;
    uint64_t cap = (data[0] & 0x80) ? 64 : 0; /* a small cap now and then */
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    size_t na = run(text, len, chunk, cap, a);
    size_t nb = run(text, len, len ? len : 1, cap, b);
    if (na != nb)
        __builtin_trap();
    for (size_t i = 0; i < na; i++) {
        if (a[i].kind != b[i].kind || a[i].line != b[i].line || a[i].offset != b[i].offset ||
            strcmp(a[i].type, b[i].type) != 0)
            __builtin_trap();
        if (a[i].line != i + 1 || a[i].offset + a[i].len > len)
            __builtin_trap();
        if (cap)
            continue;
        /* the line's bytes, without its '\n' (and without the BOM of line 1) */
        const char *line = text + a[i].offset;
        size_t n = (size_t)a[i].len;
        json_error_t je;
        json_t *j = json_loadb(line, n, 0, &je);
        const char *rt = j ? fs_json_str(j, "resourceType") : NULL;
        char reason[200];
        fs_ndjson_verdict v = fs_ndjson_check_line(line, n, NULL, reason, sizeof reason);
        bool skip = strstr(reason, "nested") || strstr(reason, "twice") ||
                    (rt && !fs_bulk_type_name_ok(rt));
        if (j && json_is_object(j) && rt && !skip &&
            (a[i].kind != FS_NDJSON_OK || strcmp(a[i].type, rt) != 0))
            __builtin_trap();
        if (a[i].kind == FS_NDJSON_OK && !j && !strstr(je.text, "too big") &&
            !strstr(je.text, "overflow"))
            __builtin_trap();
        if (v != (fs_ndjson_verdict)a[i].kind && !memchr(line, '\n', n))
            __builtin_trap();
        json_decref(j);
    }
    return 0;
}
