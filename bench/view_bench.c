/* bench/view_bench.c: the speed of the SQL on FHIR view engine (fhirsync/view.h) over NDJSON
 * files, beside the bare cost of reading and parsing the same lines, measured in the same run
 * (issue 14). Every pass reads the files from the start (read(2) in 1 MiB chunks, split by the
 * loaders' splitter, core/lines.h), so every figure includes the same reading cost:
 *   read      reading and splitting the lines alone: the floor
 *   scan      + the store's field scanner (store/fields.h: resourceType, id, meta, patient), what
 *             a sync already does to every line it puts; no tree, no allocation
 *   jansson   + json_loadb of each line: what a document tree costs (the bare parse)
 *   exact     + fs_json_parse_exact of each line: the parse fhirsync_view_eval did first until
 *             json/dom.c (jansson behind a pass that keeps the text of numbers), timed per
 *             resource type as well
 *   document  + fs_json_dom_parse of each line into one reused document (json/dom.h): the parse
 *             the view engine does now
 *   views     + the line's resourceType (the store's field scanner, store/fields.h, as the store
 *             has it for every line it puts) and every view of that type evaluated on the line
 *             with fhirsync_view_eval, one view after the other, rows counted in the callback;
 *             each evaluation is timed, per view
 *   together  + the same views evaluated together with fhirsync_view_eval_many (the line read
 *             once for all of them): the work a sync materializing the views adds per line
 *   every     + every view evaluated on every line, which is what running each view over the
 *             files (`fhirsync view run`) costs: fhirsync_view_eval reads the line before it
 *             looks at the type, so a line of another type costs a read too. The slowest pass:
 *             it runs in the first EVERY rounds only (default 1).
 * Each figure is the best of ROUNDS rounds (default 3; the machines are noisy) with its ratio to
 * the jansson and exact passes of the same run; each view's time is beside the exact parse of the
 * lines of its type. Peak resident memory (getrusage ru_maxrss) is printed after the first round's
 * parse passes and at the end: the views should add nothing that grows with the input. Nothing
 * here fails on a timing.
 *
 * usage: view_bench [--rounds N] [--every N] --views PATH [--views PATH]... NDJSON_PATH...
 *        (a directory stands for its *.json views, or its *.ndjson files; read in name order) */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"
#include "core/lines.h"
#include "fhirsync/fhirsync.h"
#include "json/dom.h"
#include "json/json.h"
#include "store/fields.h"

#define CHUNK (1u << 20)
#define MAX_TYPES 64

/* clang-format off */
enum pass { READ, SCAN, JANSSON, EXACT, DOCUMENT, VIEWS, TOGETHER, EVERY, NPASSES };
static const char *const pass_names[NPASSES] = {
    "read + split lines",
    "+ store field scan",
    "+ jansson json_loadb",
    "+ exact parse (jansson's)",
    "+ document (json/dom.c)",
    "+ views by resourceType",
    "+ views by type, one read",
    "+ every view on every line",
};
/* clang-format on */

typedef struct view_slot {
    const char *path;
    fhirsync_view *view;
    const char *label; /* the view's name, else its file */
    double ms[NPASSES], best_ms[NPASSES];
    size_t lines, rows, errors; /* lines of its type in the VIEWS pass, rows, failed lines */
    size_t first_error_line;
    char first_error[sizeof(((fhirsync_error *)0)->message)];
} view_slot;

typedef struct type_stat {
    char name[FS_STORE_TYPE_MAX + 1];
    size_t lines, bytes;
    double exact_ms, best_exact_ms;
} type_stat;

typedef struct bench {
    char **files;
    size_t nfiles;
    view_slot *views;
    size_t nviews;
    type_stat types[MAX_TYPES];
    size_t ntypes;
    enum pass pass;
    size_t lines, bytes, good, rows, failed; /* of the current pass */
    size_t row_count;                        /* the row callback's counter */
    fs_json_dom dom;                         /* the document pass's */
    fhirsync_view **set;                     /* the together pass's views of a line's type */
    view_slot **set_slots;
    size_t set_rows;    /* rows of the view being evaluated in the together pass */
    double together_ms; /* the together pass's fhirsync_view_eval_many calls */
} bench;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double peak_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* Linux: KiB */
}

/* ---- inputs ---------------------------------------------------------------------------------- */

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static bool push(char ***list, size_t *count, char *path)
{
    char **grown = path ? realloc(*list, (*count + 1) * sizeof **list) : NULL;
    if (!grown) {
        fs_free(path);
        return false;
    }
    *list = grown;
    (*list)[(*count)++] = path;
    return true;
}

/* Append `path` to the list, or, for a directory, its files ending in `suffix` in name order. */
static bool add_path(char ***list, size_t *count, const char *path, const char *suffix)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        perror(path);
        return false;
    }
    if (!S_ISDIR(st.st_mode))
        return push(list, count, fs_strdup(path));
    DIR *dir = opendir(path);
    if (!dir) {
        perror(path);
        return false;
    }
    size_t first = *count;
    bool ok = true;
    for (struct dirent *e; ok && (e = readdir(dir)) != NULL;) {
        if (e->d_name[0] == '.' || !ends_with(e->d_name, suffix))
            continue;
        fs_buf name;
        fs_buf_init(&name);
        ok = fs_buf_printf(&name, "%s/%s", path, e->d_name) &&
             push(list, count, fs_buf_steal(&name));
    }
    closedir(dir);
    qsort(*list + first, *count - first, sizeof **list, by_name);
    return ok;
}

static char *read_whole(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    fs_buf b;
    fs_buf_init(&b);
    char chunk[4096];
    size_t n;
    while (f && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        fs_buf_append(&b, chunk, n);
    if (f)
        fclose(f);
    *len = b.len;
    return f ? fs_buf_steal(&b) : NULL;
}

static bool load_views(bench *b, char **paths, size_t npaths)
{
    b->views = calloc(npaths, sizeof *b->views);
    for (size_t i = 0; i < npaths; i++) {
        view_slot *v = &b->views[b->nviews];
        size_t len;
        char *json = read_whole(paths[i], &len);
        fhirsync_error err = {0};
        if (!json || fhirsync_view_parse(json, len, &v->view, &err) != FHIRSYNC_OK) {
            fprintf(stderr, "view_bench: %s: %s\n", paths[i], json ? err.message : strerror(errno));
            fs_free(json);
            return false;
        }
        fs_free(json);
        v->path = paths[i];
        const char *slash = strrchr(paths[i], '/');
        v->label = fhirsync_view_name(v->view) ? fhirsync_view_name(v->view)
                                               : (slash ? slash + 1 : paths[i]);
        b->nviews++;
    }
    return b->nviews > 0;
}

/* ---- the passes ------------------------------------------------------------------------------ */

static type_stat *type_of(bench *b, const char *name, size_t len)
{
    for (size_t i = 0; i < b->ntypes; i++)
        if (strlen(b->types[i].name) == len && memcmp(b->types[i].name, name, len) == 0)
            return &b->types[i];
    if (b->ntypes == MAX_TYPES || len > FS_STORE_TYPE_MAX)
        return NULL;
    type_stat *t = &b->types[b->ntypes++];
    memcpy(t->name, name, len);
    t->name[len] = '\0';
    return t;
}

static fhirsync_code count_row(void *userdata, const fhirsync_view_value *values, size_t count)
{
    (void)values, (void)count;
    ((bench *)userdata)->row_count++;
    return FHIRSYNC_OK;
}

static void eval_one(bench *b, view_slot *v, const char *line, size_t len)
{
    fhirsync_error err = {0};
    size_t before = b->row_count;
    double t0 = now_ms();
    fhirsync_code rc = fhirsync_view_eval(v->view, line, len, count_row, b, &err);
    v->ms[b->pass] += now_ms() - t0;
    if (rc != FHIRSYNC_OK) {
        b->row_count = before; /* the rows of a failed resource are discarded */
        b->failed++;
        if (b->pass == VIEWS && v->errors++ == 0) {
            v->first_error_line = b->lines;
            snprintf(v->first_error, sizeof v->first_error, "%s", err.message);
        }
    } else if (b->pass == VIEWS) {
        v->rows += b->row_count - before;
    }
}

static fhirsync_code count_set_row(void *userdata, size_t index, const fhirsync_view_value *values,
                                   size_t count)
{
    (void)index, (void)values, (void)count;
    ((bench *)userdata)->set_rows++;
    return FHIRSYNC_OK;
}

/* A view's end in the together pass: its rows count unless it failed. */
static fhirsync_code set_end(void *userdata, size_t index, fhirsync_code code,
                             const fhirsync_error *error)
{
    bench *b = userdata;
    view_slot *v = b->set_slots[index];
    if (code == FHIRSYNC_OK) {
        b->row_count += b->set_rows;
    } else {
        b->failed++;
        if (v->errors++ == 0) {
            v->first_error_line = b->lines;
            snprintf(v->first_error, sizeof v->first_error, "%s", error->message);
        }
    }
    b->set_rows = 0;
    return FHIRSYNC_OK;
}

static void on_line(bench *b, const char *line, size_t len)
{
    b->lines++;
    b->bytes += len + 1;
    switch (b->pass) {
    case READ: b->good++; break;
    case SCAN: {
        fs_resource_fields f;
        b->good += fs_store_scan_fields(line, len, &f) == NULL;
        break;
    }
    case JANSSON: {
        json_error_t je;
        json_t *doc = json_loadb(line, len, 0, &je);
        b->good += doc != NULL;
        json_decref(doc);
        break;
    }
    case EXACT: {
        double t0 = now_ms();
        json_t *doc = fs_json_parse_exact(line, len, "resource", NULL);
        double ms = now_ms() - t0;
        const char *type = doc ? fs_json_str(doc, "resourceType") : NULL;
        type_stat *t = type ? type_of(b, type, strlen(type)) : NULL;
        if (t) {
            t->lines++;
            t->bytes += len + 1;
            t->exact_ms += ms;
        }
        b->good += doc != NULL;
        json_decref(doc);
        break;
    }
    case DOCUMENT: {
        const fs_json_node *root;
        b->good += fs_json_dom_parse(&b->dom, line, len, "resource", &root, NULL) == FHIRSYNC_OK;
        break;
    }
    case TOGETHER: {
        fs_resource_fields f;
        if (fs_store_scan_fields(line, len, &f) != NULL) {
            b->failed++;
            break;
        }
        b->good++;
        size_t n = 0;
        for (size_t i = 0; i < b->nviews; i++) {
            const char *want = fhirsync_view_resource(b->views[i].view);
            if (strlen(want) == f.resource_type_len &&
                memcmp(want, f.resource_type, f.resource_type_len) == 0) {
                b->set_slots[n] = &b->views[i];
                b->set[n++] = b->views[i].view;
            }
        }
        if (n == 0)
            break;
        fhirsync_error err = {0};
        b->set_rows = 0;
        double t0 = now_ms();
        if (fhirsync_view_eval_many(b->set, n, line, len, count_set_row, set_end, b, &err) !=
            FHIRSYNC_OK)
            b->failed += n; /* not read: no view evaluated it */
        b->together_ms += now_ms() - t0;
        break;
    }
    case VIEWS: {
        fs_resource_fields f;
        if (fs_store_scan_fields(line, len, &f) != NULL) {
            b->failed++;
            break;
        }
        b->good++;
        for (size_t i = 0; i < b->nviews; i++) {
            const char *want = fhirsync_view_resource(b->views[i].view);
            if (strlen(want) == f.resource_type_len &&
                memcmp(want, f.resource_type, f.resource_type_len) == 0) {
                b->views[i].lines++;
                eval_one(b, &b->views[i], line, len);
            }
        }
        break;
    }
    case EVERY:
        b->good++;
        for (size_t i = 0; i < b->nviews; i++)
            eval_one(b, &b->views[i], line, len);
        break;
    case NPASSES: break;
    }
}

/* One pass over every file; returns its milliseconds, or a negative number on a read error. */
static double run_pass(bench *b, enum pass pass)
{
    b->pass = pass;
    b->lines = b->bytes = b->good = b->failed = b->row_count = 0;
    b->together_ms = 0;
    for (size_t i = 0; i < b->nviews; i++) {
        b->views[i].ms[pass] = 0;
        if (pass == VIEWS || pass == TOGETHER)
            b->views[i].errors = 0;
        if (pass == VIEWS)
            b->views[i].lines = b->views[i].rows = 0;
    }
    for (size_t i = 0; pass == EXACT && i < b->ntypes; i++)
        b->types[i].lines = b->types[i].bytes = 0, b->types[i].exact_ms = 0;
    static char chunk[CHUNK];
    double t0 = now_ms();
    for (size_t f = 0; f < b->nfiles; f++) {
        int fd = open(b->files[f], O_RDONLY);
        if (fd < 0) {
            perror(b->files[f]);
            return -1;
        }
        fs_lines sp;
        fs_lines_init(&sp, 0);
        const char *line;
        size_t len;
        ssize_t got;
        while ((got = read(fd, chunk, sizeof chunk)) > 0) {
            const char *at = chunk;
            size_t left = (size_t)got;
            fs_lines_event ev;
            while ((ev = fs_lines_next(&sp, &at, &left, &line, &len)) != FS_LINES_MORE)
                if (ev == FS_LINES_LINE && len > 0)
                    on_line(b, line, len);
        }
        if (fs_lines_finish(&sp, &line, &len) == FS_LINES_LINE && len > 0)
            on_line(b, line, len);
        fs_lines_free(&sp);
        close(fd);
        if (got < 0) {
            perror(b->files[f]);
            return -1;
        }
    }
    b->rows = b->row_count;
    return now_ms() - t0;
}

/* ---- the report ------------------------------------------------------------------------------ */

static double per_s(double n, double ms)
{
    return ms > 0 ? n / (ms / 1000.0) : 0;
}

static double ratio(double a, double b)
{
    return b > 0 ? a / b : 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: view_bench [--rounds N] [--every N] --views PATH [--views PATH]... "
            "NDJSON_PATH...\n"
            "  a directory stands for its *.json views, or its *.ndjson files\n"
            "  --rounds N   best of N rounds (default 3)\n"
            "  --every N    rounds of the every-view-every-line pass (default 1; 0: none)\n");
}

int main(int argc, char **argv)
{
    bench b = {0};
    char **view_paths = NULL;
    size_t nview_paths = 0;
    int rounds = 3, every_rounds = 1;
    if (fhirsync_global_init() != FHIRSYNC_OK)
        return 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--views") == 0 && i + 1 < argc) {
            if (!add_path(&view_paths, &nview_paths, argv[++i], ".json"))
                return 1;
        } else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
            rounds = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--every") == 0 && i + 1 < argc) {
            every_rounds = atoi(argv[++i]);
        } else if (argv[i][0] == '-') {
            usage();
            return 2;
        } else if (!add_path(&b.files, &b.nfiles, argv[i], ".ndjson")) {
            return 1;
        }
    }
    if (rounds < 1 || every_rounds < 0 || nview_paths == 0 || b.nfiles == 0) {
        usage();
        return 2;
    }
    if (!load_views(&b, view_paths, nview_paths))
        return 1;
    b.set = calloc(b.nviews, sizeof *b.set);
    b.set_slots = calloc(b.nviews, sizeof *b.set_slots);
    if (!b.set || !b.set_slots)
        return 1;
    double best_together = 1e300;

    double best[NPASSES];
    size_t lines = 0, bytes = 0, good[NPASSES] = {0}, rows[NPASSES] = {0}, failed[NPASSES] = {0};
    for (int k = 0; k < NPASSES; k++)
        best[k] = 1e300;
    for (size_t i = 0; i < b.nviews; i++)
        for (int k = 0; k < NPASSES; k++)
            b.views[i].best_ms[k] = 1e300;
    double rss_parsed = 0;
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < NPASSES; k++) {
            if (k == EVERY && r >= every_rounds)
                continue;
            double ms = run_pass(&b, (enum pass)k);
            if (ms < 0)
                return 1;
            if (ms < best[k])
                best[k] = ms;
            if (k == TOGETHER && b.together_ms < best_together)
                best_together = b.together_ms;
            lines = b.lines, bytes = b.bytes;
            good[k] = b.good, rows[k] = b.rows, failed[k] = b.failed;
            for (size_t i = 0; i < b.nviews; i++)
                if (b.views[i].ms[k] < b.views[i].best_ms[k])
                    b.views[i].best_ms[k] = b.views[i].ms[k];
            if (k == EXACT) {
                for (size_t t = 0; t < b.ntypes; t++)
                    if (r == 0 || b.types[t].exact_ms < b.types[t].best_exact_ms)
                        b.types[t].best_exact_ms = b.types[t].exact_ms;
                if (r == 0)
                    rss_parsed = peak_rss_mb();
            }
        }
    }

    printf("view_bench: %zu files, %zu lines, %.1f MB; %zu views; best of %d rounds (every view "
           "on every line: %d)\n",
           b.nfiles, lines, (double)bytes / 1e6, b.nviews, rounds,
           every_rounds < rounds ? every_rounds : rounds);
    printf("BENCH | %-30s | %10s | %7s | %10s | %10s | %8s | %9s | %7s\n", "pass", "lines/s",
           "MB/s", "rows", "rows/s", "seconds", "x jansson", "x exact");
    for (int k = 0; k < NPASSES; k++) {
        if (k == EVERY && every_rounds == 0)
            continue;
        printf("BENCH | %-30s | %10.0f | %7.1f | %10zu | %10.0f | %8.3f | %9.2f | %7.2f",
               pass_names[k], per_s((double)lines, best[k]), per_s((double)bytes / 1e6, best[k]),
               rows[k], per_s((double)rows[k], best[k]), best[k] / 1000.0,
               ratio(best[k], best[JANSSON]), ratio(best[k], best[EXACT]));
        if (good[k] != lines || failed[k])
            printf("   (%zu of %zu lines read, %zu evaluations failed)", good[k], lines, failed[k]);
        printf("\n");
    }
    double views_only = 0;
    for (size_t i = 0; i < b.nviews; i++)
        views_only += b.views[i].best_ms[VIEWS];
    printf("views alone (the evaluations' own time in the by-type pass, without reading or the "
           "type scan): %.2f s = %.2f x jansson, %.2f x exact\n",
           views_only / 1000.0, ratio(views_only, best[JANSSON]), ratio(views_only, best[EXACT]));
    printf("views alone, one read (the fhirsync_view_eval_many calls of the together pass): %.2f s "
           "= %.2f x jansson, %.2f x exact, %.2f us a line\n",
           best_together / 1000.0, ratio(best_together, best[JANSSON]),
           ratio(best_together, best[EXACT]), lines ? best_together * 1000.0 / (double)lines : 0);

    printf("\nper view (by-type pass: only the lines of its resource type; 'x exact' is its time\n"
           "over the exact parse of those same lines, so 1.00 means evaluating costs nothing "
           "beyond the parse)\n");
    printf("BENCH | %-22s | %-18s | %8s | %9s | %10s | %10s | %7s | %s\n", "view", "resource",
           "lines", "rows", "lines/s", "rows/s", "x exact", "every line (s)");
    for (size_t i = 0; i < b.nviews; i++) {
        view_slot *v = &b.views[i];
        const char *res = fhirsync_view_resource(v->view);
        type_stat *t = type_of(&b, res, strlen(res));
        double ms = v->best_ms[VIEWS];
        printf("BENCH | %-22s | %-18s | %8zu | %9zu | %10.0f | %10.0f | %7.2f | ", v->label, res,
               v->lines, v->rows, per_s((double)v->lines, ms), per_s((double)v->rows, ms),
               t && t->lines ? ratio(ms, t->best_exact_ms) : 0);
        if (every_rounds > 0)
            printf("%.3f\n", v->best_ms[EVERY] / 1000.0);
        else
            printf("-\n");
        if (v->errors)
            printf("      %zu lines failed; the first (line %zu of the pass): %s\n", v->errors,
                   v->first_error_line, v->first_error);
    }
    printf("peak RSS: %.1f MB after the first round's parse passes, %.1f MB at the end (views "
           "evaluated)\n",
           rss_parsed, peak_rss_mb());

    for (size_t i = 0; i < b.nviews; i++)
        fhirsync_view_free(b.views[i].view);
    free(b.views);
    free(b.set);
    free(b.set_slots);
    fs_json_dom_free(&b.dom);
    for (size_t i = 0; i < nview_paths; i++)
        fs_free(view_paths[i]);
    free(view_paths);
    for (size_t i = 0; i < b.nfiles; i++)
        fs_free(b.files[i]);
    free(b.files);
    fhirsync_global_cleanup();
    return 0;
}
