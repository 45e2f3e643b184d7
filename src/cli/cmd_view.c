/* cli/cmd_view.c: `fhirsync view run`: evaluate a SQL on FHIR v2 ViewDefinition over NDJSON files
 * or over the resources of the store, and write its rows as CSV (RFC 4180, a header row of the
 * column names) or NDJSON (one object a row), to stdout or to a file created 0600 (the rows may
 * hold patient data) and renamed into place once complete. Streaming: one resource is read,
 * evaluated and written at a time. A resource the view cannot evaluate (not JSON, a
 * `collection: false` column with several values, too long) is skipped with a one-line warning
 * naming the view and where the resource came from; the run goes on and ends with exit status 10
 * (partial). An invalid view is exit status 3. The other sub-commands (views kept as tables of
 * the store) are in cmd_view_store.c. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "fhirsync/store.h"
#include "printer.h"

#define VIEW_FILE_MAX (4u << 20)   /* a ViewDefinition is small: refuse anything larger */
#define LINE_MAX_BYTES (64u << 20) /* longest NDJSON line evaluated (as the bulk client's) */

static void usage(FILE *out)
{
    fprintf(out, "usage: fhirsync view run VIEW.json [--ndjson PATH]... [options]\n");
    cli_view_store_usage(out);
    fprintf(out,
            "\n"
            "'view run' evaluates a SQL on FHIR v2 ViewDefinition over the resources of NDJSON\n"
            "files (one resource a line; '-' reads stdin) or, without --ndjson, over the\n"
            "resources of the store, and writes its rows, streaming. Resources of another type\n"
            "than the view's are ignored. A resource the view cannot evaluate is skipped with a\n"
            "warning naming where it came from (exit status 10); an invalid view is exit\n"
            "status 3. To keep a view as a table of the store, current after every sync: 'view\n"
            "add'.\n"
            "\n"
            "options of 'view run':\n"
            "  --ndjson PATH        an NDJSON file to read (repeatable, read in order)\n"
            "  --store LOCATION     without --ndjson: the store to read (default: the profile's\n"
            "                       store setting, else fhirsync.db)\n"
            "  --format FORMAT      csv: a header row and RFC 4180 rows (CRLF, quoted fields;\n"
            "                       an empty field is null, \"\" an empty string; the\n"
            "                       default); ndjson: one JSON object a row; table: aligned\n"
            "                       columns for reading on a terminal\n"
            "  --out FILE           write to FILE (mode 0600, replaced once complete)\n"
            "                       instead of stdout\n"
            "\n");
    cli_print_common_help(out);
}

/* A growing byte buffer: one resource's rows, written only when the whole resource evaluated. */
typedef struct text {
    char *data;
    size_t len, cap;
} text;

static bool text_add(text *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < t->len + n + 1)
            cap *= 2;
        char *data = realloc(t->data, cap);
        if (!data)
            return false;
        t->data = data;
        t->cap = cap;
    }
    memcpy(t->data + t->len, s, n);
    t->len += n;
    t->data[t->len] = '\0';
    return true;
}

static bool text_str(text *t, const char *s)
{
    return text_add(t, s, strlen(s));
}

/* A CSV field: quoted when it holds a comma, a quote, CR or LF (quotes doubled), or when it is
 * empty (so that "" is the empty string and an empty field is null). */
static bool csv_field(text *t, const char *s, size_t n)
{
    if (n && !memchr(s, ',', n) && !memchr(s, '"', n) && !memchr(s, '\r', n) && !memchr(s, '\n', n))
        return text_add(t, s, n);
    bool ok = text_add(t, "\"", 1);
    for (size_t i = 0; ok && i < n; i++)
        ok = s[i] == '"' ? text_add(t, "\"\"", 2) : text_add(t, s + i, 1);
    return ok && text_add(t, "\"", 1);
}

/* A JSON string literal. */
static bool json_string(text *t, const char *s, size_t n)
{
    bool ok = text_add(t, "\"", 1);
    for (size_t i = 0; ok && i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            ok = text_add(t, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            ok = text_str(t, esc);
        } else {
            ok = text_add(t, s + i, 1);
        }
    }
    return ok && text_add(t, "\"", 1);
}

typedef struct run {
    fhirsync_view *view;
    bool csv;
    bool table;         /* an aligned table on stdout (the printer of `query`) */
    text rows;          /* the current resource's rows (csv, ndjson) */
    char ***cells;      /* table: the current resource's rows, each ncols strings (NULL: null) */
    size_t ncells, cap; /* rows in cells */
    cli_printer printer;
} run;

static void cells_clear(run *r)
{
    size_t ncols = fhirsync_view_column_count(r->view);
    for (size_t i = 0; i < r->ncells; i++) {
        for (size_t c = 0; c < ncols; c++)
            free(r->cells[i][c]);
        free(r->cells[i]);
    }
    r->ncells = 0;
}

/* A table row: each value as text. */
static fhirsync_code on_table_row(run *r, const fhirsync_view_value *values, size_t count)
{
    if (r->ncells == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 8;
        char ***grown = realloc(r->cells, cap * sizeof *grown);
        if (!grown)
            return FHIRSYNC_E_NOMEM;
        r->cells = grown;
        r->cap = cap;
    }
    char **row = calloc(count ? count : 1, sizeof *row);
    if (!row)
        return FHIRSYNC_E_NOMEM;
    r->cells[r->ncells++] = row;
    for (size_t i = 0; i < count; i++) {
        const fhirsync_view_value *v = &values[i];
        char number[32];
        const char *shown = v->text;
        if (v->kind == FHIRSYNC_VIEW_NULL)
            continue;
        if (v->kind == FHIRSYNC_VIEW_BOOLEAN)
            shown = v->boolean ? "true" : "false";
        else if (v->kind == FHIRSYNC_VIEW_INTEGER) {
            snprintf(number, sizeof number, "%" PRId64, v->integer);
            shown = number;
        }
        if (!(row[i] = strdup(shown ? shown : "")))
            return FHIRSYNC_E_NOMEM;
    }
    return FHIRSYNC_OK;
}

/* The buffered table rows of a resource that evaluated whole, to the printer. */
static int cells_print(run *r)
{
    size_t ncols = fhirsync_view_column_count(r->view);
    size_t *lengths = calloc(ncols ? ncols : 1, sizeof *lengths);
    int rc = lengths ? 0 : 1;
    for (size_t i = 0; !rc && i < r->ncells; i++) {
        for (size_t c = 0; c < ncols; c++)
            lengths[c] = r->cells[i][c] ? strlen(r->cells[i][c]) : 0;
        rc = cli_printer_row(&r->printer, (const char *const *)r->cells[i], lengths, NULL);
    }
    free(lengths);
    cells_clear(r);
    return rc ? cli_io_error("cannot write", "the rows", errno ? errno : ENOMEM) : 0;
}

static fhirsync_code on_row(void *userdata, const fhirsync_view_value *values, size_t count)
{
    run *r = userdata;
    if (r->table)
        return on_table_row(r, values, count);
    bool ok = r->csv || text_add(&r->rows, "{", 1);
    for (size_t i = 0; ok && i < count; i++) {
        const fhirsync_view_value *v = &values[i];
        char number[32];
        if (i)
            ok = text_add(&r->rows, ",", 1);
        if (ok && !r->csv) {
            const char *name = fhirsync_view_column_at(r->view, i)->name;
            ok = json_string(&r->rows, name, strlen(name)) && text_add(&r->rows, ":", 1);
        }
        if (!ok)
            break;
        switch (v->kind) {
        case FHIRSYNC_VIEW_NULL: ok = r->csv || text_str(&r->rows, "null"); break;
        case FHIRSYNC_VIEW_BOOLEAN: ok = text_str(&r->rows, v->boolean ? "true" : "false"); break;
        case FHIRSYNC_VIEW_INTEGER:
            snprintf(number, sizeof number, "%" PRId64, v->integer);
            ok = text_str(&r->rows, number);
            break;
        case FHIRSYNC_VIEW_DECIMAL: /* a JSON number as written ("1.50"), bare in CSV too */
            ok = text_add(&r->rows, v->text, v->len);
            break;
        case FHIRSYNC_VIEW_STRING:
            ok = r->csv ? csv_field(&r->rows, v->text, v->len)
                        : json_string(&r->rows, v->text, v->len);
            break;
        case FHIRSYNC_VIEW_JSON:
            ok =
                r->csv ? csv_field(&r->rows, v->text, v->len) : text_add(&r->rows, v->text, v->len);
            break;
        }
    }
    ok = ok && (r->csv ? text_add(&r->rows, "\r\n", 2) : text_add(&r->rows, "}\n", 2));
    return ok ? FHIRSYNC_OK : FHIRSYNC_E_NOMEM;
}

/* Read the whole view file (at most VIEW_FILE_MAX bytes). 0, or the exit status after a
 * message. */
static int read_view_file(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return cli_io_error("cannot open", path, errno);
    text t = {0};
    char chunk[8192];
    size_t n;
    bool ok = true;
    while (ok && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        ok = t.len + n <= VIEW_FILE_MAX && text_add(&t, chunk, n);
    int saved_errno = ferror(f) ? errno : 0;
    fclose(f);
    if (saved_errno || !ok || !t.data) {
        free(t.data);
        return cli_io_error("cannot read the view", path,
                            saved_errno ? saved_errno
                            : !ok       ? EFBIG
                                        : ENODATA);
    }
    *out = t.data;
    *len = t.len;
    return 0;
}

/* Read one line of `in` into `line` (without its end of line). Returns false at the end of the
 * input. A line longer than LINE_MAX_BYTES is consumed but not kept: *too_long is set. */
static bool read_line(FILE *in, text *line, bool *too_long)
{
    int c;
    line->len = 0;
    *too_long = false;
    bool any = false;
    while ((c = getc_unlocked(in)) != EOF) {
        any = true;
        if (c == '\n')
            break;
        if (*too_long)
            continue;
        char byte = (char)c;
        if (line->len >= LINE_MAX_BYTES || !text_add(line, &byte, 1))
            *too_long = true;
    }
    if (line->len && line->data[line->len - 1] == '\r')
        line->data[--line->len] = '\0';
    return any;
}

static bool blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t')
            return false;
    return true;
}

/* Evaluate the view over one resource and write its rows (all of them, or none: they are
 * buffered until the resource is done). 0, or the exit status of a failure that stops the run. */
static int run_one(run *r, const char *label, const char *where, const char *s, size_t n, FILE *out,
                   long *skipped)
{
    fhirsync_error err = {0};
    r->rows.len = 0;
    fhirsync_code code = fhirsync_view_eval(r->view, s, n, on_row, r, &err);
    if (r->table && code != FHIRSYNC_OK)
        cells_clear(r);
    if (code == FHIRSYNC_E_NOMEM)
        return cli_fail(&err);
    if (code != FHIRSYNC_OK) {
        fprintf(stderr, "fhirsync: view %s: %s: %s (skipped)\n", label, where,
                err.message[0] ? err.message : "cannot be evaluated");
        (*skipped)++;
        return 0;
    }
    if (r->table)
        return cells_print(r);
    if (r->rows.len && fwrite(r->rows.data, 1, r->rows.len, out) != r->rows.len)
        return cli_io_error("cannot write", "the rows", errno);
    return 0;
}

/* The first value of a one-row query, into a small buffer. */
static int first_value(size_t ncols, const char *const *names, const char *const *values,
                       const size_t *lengths, void *userdata)
{
    (void)names;
    if (ncols && values[0])
        snprintf(userdata, 8, "%.*s", (int)(lengths[0] < 7 ? lengths[0] : 7), values[0]);
    return 0;
}

/* The stored resources of the view's type, through a read-only query. */
typedef struct store_run {
    run *r;
    const char *label;
    FILE *out;
    long *skipped;
    int rc;
} store_run;

static int on_stored(size_t ncols, const char *const *names, const char *const *values,
                     const size_t *lengths, void *userdata)
{
    store_run *sr = userdata;
    if (ncols < 2 || !values[0] || !values[1])
        return 0;
    char where[128];
    snprintf(where, sizeof where, "stored %.*s", (int)(lengths[0] < 80 ? lengths[0] : 80),
             values[0]);
    (void)names;
    sr->rc = run_one(sr->r, sr->label, where, values[1], lengths[1], sr->out, sr->skipped);
    return sr->rc != 0;
}

static int run_store(run *r, const char *label, const cli_profile *profile, FILE *out,
                     long *skipped)
{
    const char *type = fhirsync_view_resource(r->view);
    bool ok = type && type[0] >= 'A' && type[0] <= 'Z' && strlen(type) < 64;
    for (const char *p = type; ok && *p; p++)
        ok = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z');
    if (!ok)
        return cli_usage_error("view run", "the view's resource is not a resource type name");
    fhirsync_error err = {0};
    char *owned = NULL;
    const char *location = cli_store_location(profile, &owned, &err);
    fhirsync_store *store = NULL;
    int rc = 0;
    if (!location ||
        fhirsync_store_open(location, FHIRSYNC_STORE_READONLY, &store, &err) != FHIRSYNC_OK) {
        rc = cli_fail(&err);
    } else {
        /* the type's table exists once a resource of it was stored */
        char sql[160];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM resource_types WHERE type = '%s'", type);
        char exists[8] = "0";
        fhirsync_code code = fhirsync_store_query(store, sql, first_value, exists, &err);
        if (code == FHIRSYNC_OK && strcmp(exists, "0") != 0) {
            snprintf(sql, sizeof sql, "SELECT id, raw FROM \"%s\" ORDER BY id", type);
            store_run sr = {r, label, out, skipped, 0};
            code = fhirsync_store_query(store, sql, on_stored, &sr, &err);
            rc = sr.rc;
        }
        if (!rc && code != FHIRSYNC_OK)
            rc = cli_fail(&err);
    }
    fhirsync_store_close(store);
    free(owned);
    return rc;
}

/* Evaluate the view over every line of one input; rows go to `out`. Counts the lines skipped. 0,
 * or the exit status of a failure that stops the run (a file that cannot be read, out of memory,
 * a write error). */
static int run_file(run *r, const char *label, const char *path, FILE *out, long *skipped)
{
    bool from_stdin = strcmp(path, "-") == 0;
    FILE *in = from_stdin ? stdin : fopen(path, "rb");
    if (!in)
        return cli_io_error("cannot open", path, errno);
    if (from_stdin)
        path = "stdin"; /* as the warnings name it */
    text line = {0};
    bool too_long;
    int rc = 0;
    for (long lineno = 1; read_line(in, &line, &too_long); lineno++) {
        const char *s = line.data ? line.data : "";
        size_t n = line.len;
        if (lineno == 1 && n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) { /* a BOM */
            s += 3;
            n -= 3;
        }
        if (too_long) {
            fprintf(stderr, "fhirsync: view %s: %s:%ld: line longer than %u bytes, skipped\n",
                    label, path, lineno, LINE_MAX_BYTES);
            (*skipped)++;
            continue;
        }
        if (blank(s, n))
            continue;
        char where[PATH_MAX + 32];
        snprintf(where, sizeof where, "%s:%ld", path, lineno);
        if ((rc = run_one(r, label, where, s, n, out, skipped)) != 0)
            break;
    }
    if (!rc && ferror(in))
        rc = cli_io_error("cannot read", path, errno);
    free(line.data);
    if (!from_stdin)
        fclose(in);
    return rc;
}

static int view_run(int argc, char **argv)
{
    enum { OPT_NDJSON = 600, OPT_FORMAT, OPT_OUT }; /* 1 is an argument */
    static const struct option own[] = {{"ndjson", required_argument, NULL, OPT_NDJSON},
                                        {"format", required_argument, NULL, OPT_FORMAT},
                                        {"out", required_argument, NULL, OPT_OUT},
                                        {NULL, 0, NULL, 0}};
    char short_opts[32];
    const struct option *opts = cli_options(own, "", short_opts + 1, sizeof short_opts - 1);
    if (short_opts[1] == '+')
        memmove(short_opts + 1, short_opts + 2, strlen(short_opts + 2) + 1);
    short_opts[0] = '-'; /* arguments come back in order, as code 1 */
    const char **inputs = calloc((size_t)argc + 1, sizeof *inputs);
    if (!inputs)
        return EXIT_INTERNAL;
    size_t ninputs = 0;
    const char *out_path = NULL, *positional[2] = {NULL, NULL};
    size_t npositional = 0;
    cli_profile profile = {0};
    bool csv = true, table = false;
    int opt, rc = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, short_opts, opts, NULL)) != -1) {
        if (opt == 1) {
            if (npositional < 2)
                positional[npositional] = optarg;
            npositional++;
            continue;
        }
        int handled = cli_profile_option(&profile, opt, optarg, "view run");
        if (handled) {
            if (handled < 0) {
                free(inputs);
                return -handled;
            }
            continue;
        }
        switch (opt) {
        case OPT_NDJSON: inputs[ninputs++] = optarg; break;
        case OPT_FORMAT:
            if (strcmp(optarg, "csv") != 0 && strcmp(optarg, "ndjson") != 0 &&
                strcmp(optarg, "table") != 0) {
                free(inputs);
                return cli_usage_error("view run", "--format is csv, ndjson or table, not '%s'",
                                       optarg);
            }
            csv = strcmp(optarg, "csv") == 0;
            table = strcmp(optarg, "table") == 0;
            break;
        case OPT_OUT: out_path = optarg; break;
        case 'h':
            usage(stdout);
            free(inputs);
            return 0;
        default: free(inputs); return cli_bad_option("view run", argv);
        }
    }
    while (optind < argc) {
        if (npositional < 2)
            positional[npositional] = argv[optind];
        npositional++;
        optind++;
    }
    if (table && out_path) {
        free(inputs);
        return cli_usage_error("view run", "--format table is for reading on a terminal: write "
                                           "csv or ndjson to --out");
    }
    if (npositional != 1) {
        free(inputs);
        return npositional == 0
                   ? cli_usage_error("view run", "the ViewDefinition file is missing")
                   : cli_usage_error("view run", "unexpected argument '%s'", positional[1]);
    }
    cli_setup_logging(&profile);
    const char *view_path = positional[0];

    char *json = NULL;
    size_t len = 0;
    run r = {.csv = csv, .table = table};
    fhirsync_error err = {0};
    if ((rc = read_view_file(view_path, &json, &len)) != 0) {
        free(inputs);
        return rc;
    }
    if (fhirsync_view_parse(json, len, &r.view, &err) != FHIRSYNC_OK) {
        free(json);
        free(inputs);
        if (err.code == FHIRSYNC_E_NOMEM)
            return cli_fail(&err);
        fprintf(stderr, "fhirsync: invalid view %s: %s\n", view_path, err.message);
        return EXIT_CONFIG; /* not JSON, or not a valid ViewDefinition */
    }
    free(json);
    const char *label = fhirsync_view_name(r.view) ? fhirsync_view_name(r.view) : view_path;

    /* the output: stdout, or a temporary file (0600: mkstemp) renamed over --out when complete */
    char tmp[PATH_MAX];
    FILE *out = stdout;
    if (out_path) {
        int fd = -1;
        if (snprintf(tmp, sizeof tmp, "%s.tmp-XXXXXX", out_path) >= (int)sizeof tmp)
            rc = cli_io_error("path too long:", out_path, ENAMETOOLONG);
        else if ((fd = mkstemp(tmp)) < 0)
            rc = cli_io_error("cannot create a file next to", out_path, errno);
        else if (fchmod(fd, 0600) != 0 || !(out = fdopen(fd, "w"))) {
            rc = cli_io_error("cannot write", out_path, errno);
            close(fd);
            unlink(tmp);
        }
        if (rc) {
            fhirsync_view_free(r.view);
            free(inputs);
            return rc;
        }
    }

    if (table) {
        size_t columns = fhirsync_view_column_count(r.view);
        const char **names = calloc(columns, sizeof *names);
        for (size_t i = 0; names && i < columns; i++)
            names[i] = fhirsync_view_column_at(r.view, i)->name;
        if (!names || !cli_printer_start(&r.printer, CLI_FORMAT_TABLE, columns, names))
            rc = cli_io_error("cannot write", "the rows", ENOMEM);
        free(names);
    } else if (csv) { /* the header row: the column names (valid database names: never quoted) */
        size_t columns = fhirsync_view_column_count(r.view);
        for (size_t i = 0; i < columns; i++)
            fprintf(out, "%s%s", i ? "," : "", fhirsync_view_column_at(r.view, i)->name);
        fputs("\r\n", out);
    }
    long skipped = 0;
    for (size_t i = 0; !rc && i < ninputs; i++)
        rc = run_file(&r, label, inputs[i], out, &skipped);
    if (!rc && !ninputs)
        rc = run_store(&r, label, &profile, out, &skipped);
    if (!rc && fflush(out) != 0)
        rc = cli_io_error("cannot write", out_path ? out_path : "stdout", errno);
    if (out_path) {
        if (!rc && fsync(fileno(out)) != 0)
            rc = cli_io_error("cannot write", out_path, errno);
        if (fclose(out) != 0 && !rc)
            rc = cli_io_error("cannot write", out_path, errno);
        if (!rc && rename(tmp, out_path) != 0)
            rc = cli_io_error("cannot rename into", out_path, errno);
        if (rc)
            unlink(tmp);
    }
    if (!rc && skipped) {
        fprintf(stderr, "fhirsync: view %s: %ld line%s skipped\n", label, skipped,
                skipped == 1 ? "" : "s");
        rc = EXIT_PARTIAL;
    }
    if (table) {
        cli_printer_end(&r.printer);
        cells_clear(&r);
        free(r.cells);
    }
    free(r.rows.data);
    fhirsync_view_free(r.view);
    free(inputs);
    return rc;
}

int cmd_view(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    if (strcmp(argv[1], "run") == 0)
        return view_run(argc - 1, argv + 1);
    if (strcmp(argv[1], "add") == 0 || strcmp(argv[1], "refresh") == 0 ||
        strcmp(argv[1], "list") == 0 || strcmp(argv[1], "remove") == 0)
        return cli_view_store(argv[1], argc - 1, argv + 1);
    return cli_usage_error("view", "unknown sub-command '%s' (run, add, refresh, list, remove)",
                           argv[1]);
}
