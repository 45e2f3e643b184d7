/* tests/interop/fhirpath_eval.c: fhirsync's side of the FHIRPath differential test
 * (test_fhirpath_differential.sh; fhirpath_peer.mjs is the other side, the npm `fhirpath`
 * engine). Usage: fhirpath_eval EXPRESSIONS NDJSON. EXPRESSIONS holds one "ResourceType<TAB>path"
 * a line (blank lines and lines starting with '#' are skipped). Each path is wrapped in a
 * one-column view (`collection: true`) on that resource type and evaluated, through the public
 * view API, over every line of NDJSON; for each resource line of the matching type it prints
 * "LINE<TAB>INDEX<TAB>RESULT", RESULT being the column's JSON array ([] for an empty result), or
 * "error: MESSAGE" when the evaluation fails; a path the view parser refuses is printed once, as
 * line 0. LINE is 1-based, INDEX the 0-based position of the
 * expression among the non-skipped lines. Exit status 0, or 2 for bad arguments and files. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhirsync/view.h"

typedef struct expression {
    char *resource;
    fhirsync_view *view;
    char *refused; /* the parse error, when the view was refused */
} expression;

typedef struct result {
    char *text;
    size_t rows;
} result;

/* Append `s` to `out` as the body of a JSON string (quotes and controls escaped). */
static void json_escape(FILE *out, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
}

static fhirsync_view *wrap(const char *resource, const char *path, char **refused)
{
    char *json = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&json, &len);
    if (!out)
        return NULL;
    fprintf(out, "{\"resourceType\":\"ViewDefinition\",\"status\":\"active\",\"resource\":\"");
    json_escape(out, resource);
    fprintf(out, "\",\"select\":[{\"column\":[{\"name\":\"v\",\"collection\":true,\"path\":\"");
    json_escape(out, path);
    fprintf(out, "\"}]}]}");
    fclose(out);
    fhirsync_view *view = NULL;
    fhirsync_error err = {0};
    if (fhirsync_view_parse(json, len, &view, &err) != FHIRSYNC_OK)
        *refused = strdup(err.message);
    free(json);
    return view;
}

static fhirsync_code on_row(void *userdata, const fhirsync_view_value *values, size_t count)
{
    result *r = userdata;
    r->rows++;
    if (count != 1 || r->text)
        return FHIRSYNC_OK;
    if (values[0].kind == FHIRSYNC_VIEW_NULL)
        r->text = strdup("[]");
    else
        r->text = strndup(values[0].text, values[0].len);
    return r->text ? FHIRSYNC_OK : FHIRSYNC_E_NOMEM;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: fhirpath_eval EXPRESSIONS NDJSON\n");
        return 2;
    }
    FILE *list = fopen(argv[1], "r"), *data = fopen(argv[2], "r");
    if (!list || !data) {
        fprintf(stderr, "fhirpath_eval: cannot open %s\n", list ? argv[2] : argv[1]);
        return 2;
    }
    expression *exprs = NULL;
    size_t n = 0, cap = 0, linecap = 0;
    char *line = NULL;
    ssize_t got;
    while ((got = getline(&line, &linecap, list)) > 0) {
        line[strcspn(line, "\r\n")] = '\0';
        char *tab = strchr(line, '\t');
        if (line[0] == '#' || !tab)
            continue;
        *tab = '\0';
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            exprs = realloc(exprs, cap * sizeof *exprs);
            if (!exprs)
                return 1;
        }
        exprs[n].resource = strdup(line);
        exprs[n].refused = NULL;
        exprs[n].view = wrap(line, tab + 1, &exprs[n].refused);
        if (!exprs[n].view)
            printf("0\t%zu\terror: %s\n", n, exprs[n].refused ? exprs[n].refused : "no memory");
        n++;
    }
    size_t lineno = 0;
    while ((got = getline(&line, &linecap, data)) > 0) {
        lineno++;
        size_t len = (size_t)got;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        if (!len)
            continue;
        for (size_t i = 0; i < n; i++) {
            if (!exprs[i].view)
                continue;
            result r = {0};
            fhirsync_error err = {0};
            if (fhirsync_view_eval(exprs[i].view, line, len, on_row, &r, &err) != FHIRSYNC_OK)
                printf("%zu\t%zu\terror: %s\n", lineno, i, err.message);
            else if (r.rows == 1 && r.text) /* no row: a resource of another type */
                printf("%zu\t%zu\t%s\n", lineno, i, r.text);
            free(r.text);
        }
    }
    free(line);
    for (size_t i = 0; i < n; i++) {
        fhirsync_view_free(exprs[i].view);
        free(exprs[i].resource);
        free(exprs[i].refused);
    }
    free(exprs);
    fclose(list);
    fclose(data);
    return 0;
}
