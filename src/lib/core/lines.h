/* core/lines.h: the one NDJSON line splitter of the loaders (sync/load.c for a file on disk,
 * sync/fetch.c for a download streamed into the store). Chunks go in as they arrive (a read(2)
 * buffer, a libcurl write callback); lines come out one at a time, without their '\n'. A line
 * wholly inside a chunk points into that chunk (no copy: the common case); only a line split
 * across chunks is gathered in a buffer, which never grows past the cap: a longer line is
 * dropped as it arrives and reported once, when it ends, as FS_LINES_TOO_LONG with an error that
 * names its line number. Memory: the longest line kept.
 *
 * What a line holds is the caller's business: a '\r' before the '\n' stays in the line (and
 * counts towards the cap), as do empty lines and NUL bytes; the loaders trim and check. The
 * streaming NDJSON checker of the bulk writer (bulk/ndjson.c) finds lines itself because it keeps
 * no bytes at all.
 *
 * Thread safety: one splitter per thread. Internal: the prefix is fs_lines_. */
#ifndef FS_CORE_LINES_H
#define FS_CORE_LINES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

/* The default cap: the longest line (bytes before its '\n'), as the bulk client's --max-line. */
#define FS_LINES_DEFAULT_MAX ((uint64_t)64 * 1024 * 1024)

typedef enum fs_lines_event {
    FS_LINES_MORE = 0,     /* the chunk is used up: feed the next one, or fs_lines_finish() */
    FS_LINES_LINE = 1,     /* a line: *line, *line_len (valid until the next call) */
    FS_LINES_TOO_LONG = 2, /* a line longer than the cap ended; fs_lines_error() says which */
    FS_LINES_NOMEM = 3     /* out of memory gathering a split line (the splitter is unusable) */
} fs_lines_event;

typedef struct fs_lines {
    fs_buf held;       /* the start of a line split across chunks */
    bool held_out;     /* the line last returned is `held`: empty it on the next call */
    bool too_long;     /* the current line passed the cap: its bytes are dropped */
    uint64_t max_line; /* the cap */
    int64_t line_no;   /* the number of the line last returned (1-based), 0 before the first */
    char error[128];   /* after FS_LINES_TOO_LONG: "line N is longer than the M-byte limit" */
} fs_lines;

/* A splitter with the cap max_line (0: FS_LINES_DEFAULT_MAX). Free it with fs_lines_free. */
void fs_lines_init(fs_lines *sp, uint64_t max_line);
void fs_lines_free(fs_lines *sp);

/* The next line of the chunk (*data, *len), which is advanced past what was used: call again
 * with the same chunk until FS_LINES_MORE, then with the next chunk. A line that ends at a '\n'
 * comes out as FS_LINES_LINE or FS_LINES_TOO_LONG; the bytes after the chunk's last '\n' are
 * kept for the next chunk. */
fs_lines_event fs_lines_next(fs_lines *sp, const char **data, size_t *len, const char **line,
                             size_t *line_len);

/* At the end of the input: the last line when it has no '\n' (FS_LINES_LINE or
 * FS_LINES_TOO_LONG), else FS_LINES_MORE (nothing left: a final '\n' ends no empty line). */
fs_lines_event fs_lines_finish(fs_lines *sp, const char **line, size_t *line_len);

/* The message of the last FS_LINES_TOO_LONG ("line 12 is longer than the 67108864-byte limit"). */
const char *fs_lines_error(const fs_lines *sp);

#endif
