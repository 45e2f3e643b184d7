/* fuzz/fuzz_lines.c: the loaders' line splitter (core/lines.h) on any bytes. The first two bytes
 * choose a cap (0 to 255 bytes) and a chunk size (1 to 256); the rest is split fed whole and fed
 * in chunks of that size, and both must give exactly what a plain memchr reference gives: the
 * same lines with the same bytes, the same over-the-cap lines by number, and nothing after a
 * final '\n'. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lines.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The reference: the next line of text at *at: 1 a line (start, len), 2 over the cap, 0 none. */
static int reference(const char *text, size_t size, size_t *at, uint64_t cap, const char **start,
                     size_t *len)
{
    if (*at >= size)
        return 0;
    const char *s = text + *at, *nl = memchr(s, '\n', size - *at);
    *len = nl ? (size_t)(nl - s) : size - *at;
    *start = s;
    *at += *len + (nl ? 1 : 0);
    return *len > cap ? 2 : 1;
}

static void check(const char *text, size_t size, uint64_t cap, size_t chunk)
{
    fs_lines sp;
    fs_lines_init(&sp, cap);
    size_t ref_at = 0;
    int64_t number = 0;
    const char *line, *want;
    size_t len, want_len;
    for (size_t off = 0;; off += chunk) {
        const char *data = text + (off < size ? off : size);
        size_t left = off < size ? (size - off < chunk ? size - off : chunk) : 0;
        bool last = off >= size;
        for (;;) {
            fs_lines_event ev = last ? fs_lines_finish(&sp, &line, &len)
                                     : fs_lines_next(&sp, &data, &left, &line, &len);
            if (ev == FS_LINES_MORE)
                break;
            if (ev == FS_LINES_NOMEM)
                abort();
            number++;
            int r = reference(text, size, &ref_at, cap, &want, &want_len);
            if (r == 0 || sp.line_no != number)
                abort();
            if (ev == FS_LINES_LINE && (r != 1 || len != want_len || memcmp(line, want, len)))
                abort();
            if (ev == FS_LINES_TOO_LONG) {
                char expect[128];
                snprintf(expect, sizeof expect, "line %lld is longer than the %llu-byte limit",
                         (long long)number, (unsigned long long)cap);
                if (r != 2 || strcmp(fs_lines_error(&sp), expect) != 0)
                    abort();
            }
            if (last)
                break;
        }
        if (last)
            break;
    }
    const char *s;
    size_t n;
    if (reference(text, size, &ref_at, cap, &s, &n) != 0)
        abort(); /* a line the splitter never gave */
    fs_lines_free(&sp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint64_t cap = data[0] ? data[0] : 1;
    size_t chunk = (size_t)data[1] + 1;
    const char *text = (const char *)data + 2;
    size -= 2;
    check(text, size, cap, size ? size : 1);
    check(text, size, cap, chunk);
    return 0;
}
