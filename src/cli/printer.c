/* cli/printer.c: see printer.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "printer.h"

#define TABLE_BUFFERED 500 /* rows buffered to size the columns; later rows keep those widths */
#define TABLE_CELL_MAX 60

/* A cell for the table: control characters shown as spaces, cut at TABLE_CELL_MAX columns
 * (counting UTF-8 characters, not bytes). */
static char *table_cell(const char *value, size_t len)
{
    if (!value)
        return strdup("NULL");
    size_t cap = len < TABLE_CELL_MAX * 4 ? len : TABLE_CELL_MAX * 4;
    char *cell = malloc(cap + 4);
    if (!cell)
        return NULL;
    size_t n = 0, chars = 0;
    for (size_t i = 0; i < len && n < cap; i++) {
        unsigned char c = (unsigned char)value[i];
        if ((c & 0xc0) != 0x80 && ++chars > TABLE_CELL_MAX) {
            memcpy(cell + n, "...", 3);
            n += 3;
            break;
        }
        cell[n++] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
    }
    cell[n] = '\0';
    return cell;
}

static size_t display_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            w++;
    return w;
}

static void print_padded(const char *s, size_t width, bool last)
{
    fputs(s, stdout);
    if (!last)
        for (size_t w = display_width(s); w < width + 2; w++)
            putchar(' ');
}

static void table_print_row(cli_printer *p, char **cells)
{
    for (size_t i = 0; i < p->ncols; i++)
        print_padded(cells[i], p->widths[i], i + 1 == p->ncols);
    putchar('\n');
}

static void table_flush(cli_printer *p)
{
    if (!p->header_done) {
        table_print_row(p, p->names);
        for (size_t i = 0; i < p->ncols; i++) {
            for (size_t w = 0; w < p->widths[i]; w++)
                putchar('-');
            if (i + 1 < p->ncols)
                fputs("  ", stdout);
        }
        putchar('\n');
        p->header_done = true;
    }
    for (size_t r = 0; r < p->nrows; r++) {
        table_print_row(p, p->rows[r]);
        for (size_t i = 0; i < p->ncols; i++)
            free(p->rows[r][i]);
        free(p->rows[r]);
    }
    p->nrows = 0;
}

static void tsv_value(const char *value, size_t len)
{
    if (!value)
        return;
    for (size_t i = 0; i < len; i++) {
        char c = value[i];
        if (c == '\t')
            fputs("\\t", stdout);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\r')
            fputs("\\r", stdout);
        else if (c == '\\')
            fputs("\\\\", stdout);
        else
            putchar(c);
    }
}

/* Length of the valid UTF-8 sequence at s (first byte >= 0x80), 0 when invalid. */
static size_t utf8_length(const unsigned char *s, size_t left)
{
    size_t need = s[0] >= 0xf0 && s[0] <= 0xf4   ? 3
                  : s[0] >= 0xe0 && s[0] <= 0xef ? 2
                  : s[0] >= 0xc2 && s[0] <= 0xdf ? 1
                                                 : 0;
    if (!need || left <= need)
        return 0;
    for (size_t i = 1; i <= need; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return need + 1;
}

/* A JSON string (invalid UTF-8 becomes U+FFFD: the output must stay JSON). */
static void json_string(const char *value, size_t len)
{
    putchar('"');
    const unsigned char *s = (const unsigned char *)value;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            putchar('\\');
            putchar(c);
        } else if (c < 0x20) {
            printf("\\u%04x", c);
        } else if (c < 0x80) {
            putchar(c);
        } else {
            size_t n = utf8_length(s + i, len - i);
            if (n) {
                fwrite(s + i, 1, n, stdout);
                i += n - 1;
            } else {
                fputs("\\ufffd", stdout);
            }
        }
    }
    putchar('"');
}

bool cli_printer_start(cli_printer *p, cli_format format, size_t ncols, const char *const *names)
{
    memset(p, 0, sizeof *p);
    p->format = format;
    p->ncols = ncols;
    p->names = calloc(ncols ? ncols : 1, sizeof *p->names);
    p->widths = calloc(ncols ? ncols : 1, sizeof *p->widths);
    p->rows = calloc(TABLE_BUFFERED, sizeof *p->rows);
    if (!p->names || !p->widths || !p->rows)
        return false;
    for (size_t i = 0; i < ncols; i++) {
        if (!(p->names[i] = strdup(names[i] ? names[i] : "?")))
            return false;
        p->widths[i] = display_width(p->names[i]);
    }
    if (format == CLI_FORMAT_TSV) {
        for (size_t i = 0; i < ncols; i++) {
            tsv_value(names[i], strlen(names[i]));
            putchar(i + 1 < ncols ? '\t' : '\n');
        }
    }
    return true;
}

/* One row; `raw_json` marks columns that hold JSON to embed as is in NDJSON output. */
int cli_printer_row(cli_printer *p, const char *const *values, const size_t *lengths,
                    const bool *raw_json)
{
    if (p->format == CLI_FORMAT_TSV) {
        for (size_t i = 0; i < p->ncols; i++) {
            tsv_value(values[i], lengths[i]);
            putchar(i + 1 < p->ncols ? '\t' : '\n');
        }
    } else if (p->format == CLI_FORMAT_NDJSON) {
        putchar('{');
        for (size_t i = 0; i < p->ncols; i++) {
            if (i)
                putchar(',');
            json_string(p->names[i], strlen(p->names[i]));
            putchar(':');
            if (!values[i])
                fputs("null", stdout);
            else if (raw_json && raw_json[i])
                fwrite(values[i], 1, lengths[i], stdout);
            else
                json_string(values[i], lengths[i]);
        }
        fputs("}\n", stdout);
    } else {
        char **cells = calloc(p->ncols ? p->ncols : 1, sizeof *cells);
        if (!cells) {
            p->failed = true;
            return 1;
        }
        for (size_t i = 0; i < p->ncols; i++) {
            cells[i] = table_cell(values[i], values[i] ? lengths[i] : 0);
            if (!cells[i]) {
                p->failed = true;
                for (size_t k = 0; k < i; k++)
                    free(cells[k]);
                free(cells);
                return 1;
            }
            if (!p->header_done) {
                size_t w = display_width(cells[i]);
                if (w > p->widths[i])
                    p->widths[i] = w;
            }
        }
        p->rows[p->nrows++] = cells;
        if (p->nrows == TABLE_BUFFERED)
            table_flush(p);
    }
    if (ferror(stdout)) {
        p->failed = true;
        return 1; /* e.g. a closed pipe: stop the query */
    }
    return 0;
}

void cli_printer_end(cli_printer *p)
{
    if (p->format == CLI_FORMAT_TABLE && p->names)
        table_flush(p);
    for (size_t i = 0; p->names && i < p->ncols; i++)
        free(p->names[i]);
    free(p->names);
    free(p->widths);
    free(p->rows);
    fflush(stdout);
}
