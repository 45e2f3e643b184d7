/* core/lines.c: the NDJSON line splitter (see lines.h). */
#include <stdio.h>
#include <string.h>

#include "core/lines.h"

void fs_lines_init(fs_lines *sp, uint64_t max_line)
{
    memset(sp, 0, sizeof *sp);
    fs_buf_init(&sp->held);
    sp->max_line = max_line ? max_line : FS_LINES_DEFAULT_MAX;
}

void fs_lines_free(fs_lines *sp)
{
    fs_buf_free(&sp->held);
    fs_lines_init(sp, sp->max_line);
}

/* The current line ended: what it comes out as. */
static fs_lines_event line_end(fs_lines *sp, const char *start, size_t n, const char **line,
                               size_t *line_len)
{
    sp->line_no++;
    if (sp->too_long) {
        snprintf(sp->error, sizeof sp->error, "line %lld is longer than the %llu-byte limit",
                 (long long)sp->line_no, (unsigned long long)sp->max_line);
        sp->too_long = false;
        *line = NULL;
        *line_len = 0;
        return FS_LINES_TOO_LONG;
    }
    *line = start;
    *line_len = n;
    return FS_LINES_LINE;
}

/* Take n more bytes of the current line (no '\n' among them). */
static bool take(fs_lines *sp, const char *bytes, size_t n)
{
    if (!sp->too_long && (uint64_t)sp->held.len + n > sp->max_line) {
        sp->too_long = true;
        fs_buf_reset(&sp->held);
    }
    return sp->too_long || fs_buf_append(&sp->held, bytes, n);
}

fs_lines_event fs_lines_next(fs_lines *sp, const char **data, size_t *len, const char **line,
                             size_t *line_len)
{
    if (sp->held_out) {
        fs_buf_reset(&sp->held);
        sp->held_out = false;
    }
    if (*len == 0)
        return FS_LINES_MORE;
    const char *nl = memchr(*data, '\n', *len);
    size_t n = nl ? (size_t)(nl - *data) : *len;
    const char *start = *data;
    *data += n + (nl ? 1 : 0);
    *len -= n + (nl ? 1 : 0);
    if (nl && sp->held.len == 0 && !sp->too_long) {
        /* the common case: the whole line is in the chunk, no copy */
        if ((uint64_t)n > sp->max_line)
            sp->too_long = true;
        return line_end(sp, start, n, line, line_len);
    }
    if (!take(sp, start, n))
        return FS_LINES_NOMEM;
    if (!nl)
        return FS_LINES_MORE;
    sp->held_out = !sp->too_long;
    return line_end(sp, sp->held.data, sp->held.len, line, line_len);
}

fs_lines_event fs_lines_finish(fs_lines *sp, const char **line, size_t *line_len)
{
    if (sp->held_out) {
        fs_buf_reset(&sp->held);
        sp->held_out = false;
    }
    if (sp->held.len == 0 && !sp->too_long)
        return FS_LINES_MORE;
    sp->held_out = !sp->too_long;
    return line_end(sp, sp->held.data, sp->held.len, line, line_len);
}

const char *fs_lines_error(const fs_lines *sp)
{
    return sp->error;
}
