/* cli/printer.h: rows for a person or a program: an aligned table (a terminal: the columns sized
 * on the first rows, later rows keep those widths, so output streams), tab-separated values, or
 * one JSON object a row. To stdout. Used by `query` and `view run`. */
#ifndef FHIRSYNC_CLI_PRINTER_H
#define FHIRSYNC_CLI_PRINTER_H

#include <stdbool.h>
#include <stddef.h>

typedef enum cli_format { CLI_FORMAT_TABLE, CLI_FORMAT_TSV, CLI_FORMAT_NDJSON } cli_format;

typedef struct cli_printer {
    cli_format format;
    size_t ncols;
    char **names;
    size_t *widths;
    char ***rows; /* buffered rows (table) */
    size_t nrows;
    bool header_done;
    bool failed; /* out of memory or a write error */
} cli_printer;

/* Start printing `ncols` columns named `names` (copied). false on out of memory. */
bool cli_printer_start(cli_printer *p, cli_format format, size_t ncols, const char *const *names);
/* One row of values (NULL: SQL NULL) with their lengths; `raw_json` (may be NULL) marks the
 * columns to embed as JSON as they are in NDJSON output. Non-zero: stop (a write error, out of
 * memory: p->failed). */
int cli_printer_row(cli_printer *p, const char *const *values, const size_t *lengths,
                    const bool *raw_json);
/* Print what is buffered and free the printer. */
void cli_printer_end(cli_printer *p);

#endif
