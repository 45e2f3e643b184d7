/* tests/conformance/sql_on_fhir.c: the SQL on FHIR v2 conformance runner. For every file of the
 * suite (the .json files of tests/sql-on-fhir-v2/tests, or the folder given), every test's view is
 * read with fhirsync_view_parse and evaluated over every resource of the file through the public
 * API; the rows are compared with `expect` (as a multiset: the suite's views do not order rows),
 * `expectColumns` or `expectCount`, and `expectError` passes when reading the view or evaluating
 * a resource fails. Prints passed / failed / skipped per file, separately for shareable and
 * experimental tests (a test's tags, or its file's), and the reason of each failure. Exits 1 when
 * a shareable test fails (experimental failures are reported only). Usage: sql_on_fhir [DIR]
 * [-v]. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fhirsync/view.h"

typedef struct counts {
    int passed, failed, skipped;
} counts;

typedef struct rows {
    json_t *list; /* array of row objects */
    const fhirsync_view *view;
} rows;

static json_t *value_json(const fhirsync_view_value *v)
{
    switch (v->kind) {
    case FHIRSYNC_VIEW_NULL: return json_null();
    case FHIRSYNC_VIEW_BOOLEAN: return json_boolean(v->boolean);
    case FHIRSYNC_VIEW_INTEGER: return json_integer((json_int_t)v->integer);
    case FHIRSYNC_VIEW_DECIMAL: return json_real(strtod(v->text, NULL));
    case FHIRSYNC_VIEW_STRING: return json_stringn(v->text, v->len);
    case FHIRSYNC_VIEW_JSON: return json_loadb(v->text, v->len, JSON_DECODE_ANY, NULL);
    }
    return NULL;
}

static fhirsync_code collect(void *userdata, const fhirsync_view_value *values, size_t count)
{
    rows *r = userdata;
    json_t *row = json_object();
    for (size_t i = 0; i < count; i++)
        json_object_set_new(row, fhirsync_view_column_at(r->view, i)->name, value_json(&values[i]));
    json_array_append_new(r->list, row);
    return FHIRSYNC_OK;
}

/* JSON equality with numbers compared by value (5 equals 5.0). */
static bool same(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b))
        return fabs(json_number_value(a) - json_number_value(b)) < 1e-9;
    if (json_typeof(a) != json_typeof(b))
        return false;
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b))
            return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!same(json_array_get(a, i), json_array_get(b, i)))
                return false;
        return true;
    }
    if (json_is_object(a)) {
        if (json_object_size(a) != json_object_size(b))
            return false;
        const char *key;
        json_t *v;
        json_object_foreach ((json_t *)a, key, v) {
            json_t *w = json_object_get(b, key);
            if (!w || !same(v, w))
                return false;
        }
        return true;
    }
    return json_equal((json_t *)a, (json_t *)b);
}

/* The rows as multisets. */
static bool same_rows(const json_t *want, const json_t *got)
{
    size_t n = json_array_size(want);
    if (n != json_array_size(got))
        return false;
    bool *used = calloc(n + 1, sizeof *used);
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        bool found = false;
        for (size_t j = 0; j < n && !found; j++)
            if (!used[j] && same(json_array_get(want, i), json_array_get(got, j)))
                used[j] = found = true;
        ok = found;
    }
    free(used);
    return ok;
}

static bool has_tag(const json_t *tags, const char *tag)
{
    size_t i;
    json_t *t;
    json_array_foreach (tags, i, t) {
        if (json_is_string(t) && strcmp(json_string_value(t), tag) == 0)
            return true;
    }
    return false;
}

/* One test: 1 passed, 0 failed, -1 skipped; why in `why`. */
static int run_test(const json_t *resources, const json_t *test, char *why, size_t cap)
{
    const json_t *expect = json_object_get(test, "expect"),
                 *columns = json_object_get(test, "expectColumns"),
                 *count = json_object_get(test, "expectCount");
    bool want_error = json_is_true(json_object_get(test, "expectError"));
    if (!expect && !columns && !count && !want_error) {
        snprintf(why, cap, "nothing to check");
        return -1;
    }
    char *text = json_dumps(json_object_get(test, "view"), JSON_COMPACT);
    fhirsync_view *view = NULL;
    fhirsync_error err;
    fhirsync_code rc = fhirsync_view_parse(text, text ? strlen(text) : 0, &view, &err);
    free(text);
    if (rc != FHIRSYNC_OK) {
        snprintf(why, cap, "view refused: %s", err.message);
        return want_error;
    }
    rows r = {.list = json_array(), .view = view};
    size_t i;
    json_t *res;
    json_array_foreach (resources, i, res) {
        char *body = json_dumps(res, JSON_COMPACT);
        rc = fhirsync_view_eval(view, body, strlen(body), collect, &r, &err);
        free(body);
        if (rc != FHIRSYNC_OK)
            break;
    }
    int result;
    if (rc != FHIRSYNC_OK) {
        snprintf(why, cap, "evaluation failed: %s", err.message);
        result = want_error;
    } else if (want_error) {
        snprintf(why, cap, "an error was expected, the view gave %zu rows",
                 json_array_size(r.list));
        result = 0;
    } else {
        result = 1;
        if (columns) {
            json_t *names = json_array();
            for (size_t k = 0; k < fhirsync_view_column_count(view); k++)
                json_array_append_new(names, json_string(fhirsync_view_column_at(view, k)->name));
            if (!json_equal(names, (json_t *)columns)) {
                char *got = json_dumps(names, JSON_COMPACT);
                snprintf(why, cap, "columns %s", got);
                free(got);
                result = 0;
            }
            json_decref(names);
        }
        if (result && count && (size_t)json_integer_value(count) != json_array_size(r.list)) {
            snprintf(why, cap, "%zu rows, want %lld", json_array_size(r.list),
                     (long long)json_integer_value(count));
            result = 0;
        }
        if (result && expect && !same_rows(expect, r.list)) {
            char *got = json_dumps(r.list, JSON_COMPACT);
            snprintf(why, cap, "rows %.1500s", got);
            free(got);
            result = 0;
        }
    }
    json_decref(r.list);
    fhirsync_view_free(view);
    return result;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "tests/sql-on-fhir-v2/tests";
    bool verbose = argc > 2 && strcmp(argv[2], "-v") == 0;
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "cannot open %s\n", dir);
        return 2;
    }
    char *names[256];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 256) {
        size_t len = strlen(e->d_name);
        if (len > 5 && strcmp(e->d_name + len - 5, ".json") == 0)
            names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, by_name);
    counts total[2] = {{0}};
    int status = n ? 0 : 1;
    printf("%-24s %28s %28s\n", "file", "shareable pass/fail/skip", "experimental pass/fail/skip");
    for (size_t f = 0; f < n; f++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[f]);
        json_error_t jerr;
        json_t *file = json_load_file(path, 0, &jerr);
        if (!file) {
            printf("%s: not JSON: %s\n", names[f], jerr.text);
            status = 1;
            free(names[f]);
            continue;
        }
        counts c[2] = {{0}};
        const json_t *resources = json_object_get(file, "resources");
        size_t i;
        json_t *test;
        json_array_foreach (json_object_get(file, "tests"), i, test) {
            const json_t *tags = json_object_get(test, "tags");
            int kind = has_tag(tags, "experimental") ||
                       (!has_tag(tags, "shareable") &&
                        has_tag(json_object_get(file, "tags"), "experimental"));
            char why[2048] = "";
            int result = run_test(resources, test, why, sizeof why);
            const char *title = json_string_value(json_object_get(test, "title"));
            if (result == 1)
                c[kind].passed++;
            else if (result == 0)
                c[kind].failed++;
            else
                c[kind].skipped++;
            if (result == 0 || (verbose && result < 0))
                printf("  %s %s '%s': %s\n", result ? "SKIP" : "FAIL", names[f],
                       title ? title : "?", why);
            else if (verbose)
                printf("  ok %s '%s'%s%s\n", names[f], title ? title : "?", why[0] ? ": " : "",
                       why);
        }
        printf("%-24s %18d/%d/%d %22d/%d/%d\n", names[f], c[0].passed, c[0].failed, c[0].skipped,
               c[1].passed, c[1].failed, c[1].skipped);
        for (int k = 0; k < 2; k++) {
            total[k].passed += c[k].passed;
            total[k].failed += c[k].failed;
            total[k].skipped += c[k].skipped;
        }
        if (c[0].failed)
            status = 1;
        json_decref(file);
        free(names[f]);
    }
    printf("%-24s %18d/%d/%d %22d/%d/%d\n", "total", total[0].passed, total[0].failed,
           total[0].skipped, total[1].passed, total[1].failed, total[1].skipped);
    return status;
}
