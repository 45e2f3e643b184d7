/* view/view.c: SQL on FHIR v2 ViewDefinitions (fhirsync/view.h). Reading a view validates all of
 * it and compiles its tree of selects: each column gets a slot of the row, every FHIRPath
 * expression is parsed once (view/fhirpath.h). Evaluating a resource follows the specification's
 * processing algorithm without building the result: a select's rows are the cartesian product of
 * its columns, its nested selects and its unionAll, taken for each focus of its forEach,
 * forEachOrNull or repeat; the product is walked with continuations, filling the row's slots, and
 * each complete row goes to the caller's callback at once. A resource is read once into a JSON
 * document (json/dom.h) kept in the view for the next one, and read once for all the views of
 * fhirsync_view_eval_many. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "fhirsync/view.h"
#include "json/dom.h"
#include "json/json.h"
#include "view/fhirpath.h"

/* ---- the compiled view ----------------------------------------------------------------------- */

typedef enum iteration { ITER_NONE, ITER_FOR_EACH, ITER_FOR_EACH_OR_NULL, ITER_REPEAT } iteration;

typedef struct column {
    fs_fp_expr *path;
    size_t slot;
    bool collection;
    bool decimal; /* type decimal: integers come out as decimals */
    char *where;  /* "select[0].column[1]", for messages */
} column;

typedef struct select_node select_node;
struct select_node {
    iteration iter;
    fs_fp_expr **paths; /* the forEach/forEachOrNull (1) or repeat (n) expressions */
    size_t npaths;
    column *columns;
    size_t ncolumns;
    select_node *selects;
    size_t nselects;
    select_node *unions;
    size_t nunions;
    size_t first_slot, end_slot; /* the row slots this select fills */
};

/* A resource document that grew past this (a resource of megabytes) is given back after it. */
#define SCRATCH_KEEP ((size_t)4 << 20)

struct fhirsync_view {
    json_t *doc;              /* the definition (constant names borrow from it) */
    fs_json_dom definition;   /* the definition as a document: constants' values borrow from it */
    fs_json_dom resource_doc; /* scratch: the resource being evaluated */
    char *resource, *name;
    select_node root;
    fs_fp_expr **where;
    size_t nwhere;
    const char **const_names;
    fs_fp_coll *const_values;
    size_t nconsts;
    fhirsync_view_column *cols;
    size_t ncols;
    fs_fp_arena arena;        /* scratch memory of one evaluation */
    fhirsync_view_value *row; /* the row being built, one value per column */
};

/* ---- reading ----------------------------------------------------------------------------------
 */

typedef struct reader {
    fhirsync_view *view;
    const char *text; /* the definition */
    size_t len;
    fhirsync_error *err;
    char where[256]; /* the element being read, for messages */
} reader;

static fhirsync_code invalid(reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static fhirsync_code invalid(reader *r, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fs_err(r->err, FHIRSYNC_E_VIEW, "%s%s%s", r->where, r->where[0] ? ": " : "", msg);
}

/* A JSON string of the definition that is text (fs_json_parse_exact turns numbers into strings
 * with a NUL mark). */
static const char *text_value(const json_t *v)
{
    size_t len;
    if (!json_is_string(v) || fs_json_number_text(v, &len))
        return NULL;
    return json_string_value(v);
}

/* Every member of `obj` is in `allowed` (NULL-terminated). */
static fhirsync_code check_elements(reader *r, const json_t *obj, const char *const *allowed,
                                    const char *choice_prefix)
{
    const char *key;
    json_t *v;
    json_object_foreach ((json_t *)obj, key, v) {
        bool ok = false;
        for (size_t i = 0; allowed[i] && !ok; i++)
            ok = strcmp(key, allowed[i]) == 0;
        if (!ok && choice_prefix && fs_starts_with(key, choice_prefix) &&
            isupper((unsigned char)key[strlen(choice_prefix)]))
            ok = true;
        if (!ok)
            return invalid(r, "unknown element '%.100s'", key);
    }
    return FHIRSYNC_OK;
}

static fhirsync_code compile_path(reader *r, const json_t *v, fs_fp_expr **out)
{
    const char *text = text_value(v);
    if (!text)
        return invalid(r, "%s", "a FHIRPath expression (a string) expected");
    fhirsync_error perr;
    *out = fs_fp_parse(text, r->view->const_names, r->view->nconsts, &perr);
    if (!*out) {
        if (perr.code == FHIRSYNC_E_NOMEM)
            return fs_err(r->err, FHIRSYNC_E_NOMEM, "%s", perr.message);
        return invalid(r, "%.300s", perr.message);
    }
    return FHIRSYNC_OK;
}

static bool valid_column_name(const char *s)
{
    if (!isalpha((unsigned char)s[0]))
        return false;
    for (size_t i = 1; s[i]; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_')
            return false;
    return true;
}

/* Give `name` its slot: a new column (union_slot SIZE_MAX), or the same slot as the first branch
 * of a unionAll, whose column there must have the same name. */
static fhirsync_code add_column(reader *r, const char *name, const char *type, bool collection,
                                size_t *next_slot, bool in_later_branch)
{
    fhirsync_view *v = r->view;
    size_t slot = (*next_slot)++;
    if (in_later_branch) {
        if (slot >= v->ncols || strcmp(v->cols[slot].name, name) != 0)
            return invalid(r,
                           "unionAll branches must have the same columns in the same order "
                           "('%.100s' does not match the first branch)",
                           name);
        return FHIRSYNC_OK;
    }
    for (size_t i = 0; i < v->ncols; i++)
        if (strcmp(v->cols[i].name, name) == 0)
            return invalid(r, "duplicate column name '%.100s'", name);
    fhirsync_view_column *cols = fs_realloc(v->cols, (v->ncols + 1) * sizeof *cols);
    if (!cols)
        return fs_err(r->err, FHIRSYNC_E_NOMEM, "out of memory reading a view");
    v->cols = cols;
    char *n = fs_strdup(name), *t = type ? fs_strdup(type) : NULL;
    if (!n || (type && !t)) {
        fs_free(n);
        fs_free(t);
        return fs_err(r->err, FHIRSYNC_E_NOMEM, "out of memory reading a view");
    }
    v->cols[v->ncols++] = (fhirsync_view_column){.name = n, .type = t, .collection = collection};
    return FHIRSYNC_OK;
}

static fhirsync_code read_select(reader *r, const json_t *obj, select_node *sel, size_t *next_slot,
                                 bool in_later_branch);

/* An array member of `obj` read element by element into `items` (count in *n). */
static fhirsync_code read_selects(reader *r, const json_t *arr, const char *what,
                                  select_node **items, size_t *n, size_t *next_slot,
                                  bool in_later_branch, bool is_union)
{
    if (!json_is_array(arr) || json_array_size(arr) == 0)
        return invalid(r, "'%s' must be a non-empty array", what);
    *items = fs_calloc(json_array_size(arr), sizeof **items);
    if (!*items)
        return fs_err(r->err, FHIRSYNC_E_NOMEM, "out of memory reading a view");
    size_t saved = strlen(r->where), start = *next_slot, end = 0;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        snprintf(r->where + saved, sizeof r->where - saved, "%s%s[%zu]", saved ? "." : "", what, i);
        if (is_union)
            *next_slot = start;
        fhirsync_code rc = read_select(r, json_array_get(arr, i), &(*items)[i], next_slot,
                                       in_later_branch || (is_union && i > 0));
        (*n)++;
        if (rc)
            return rc;
        if (is_union && i > 0 && *next_slot != end) {
            r->where[saved] = '\0';
            return invalid(r, "%s", "unionAll branches must have the same columns");
        }
        end = *next_slot;
        r->where[saved] = '\0';
    }
    return FHIRSYNC_OK;
}

static fhirsync_code read_column(reader *r, const json_t *c, column *col, size_t *next_slot,
                                 bool in_later_branch)
{
    static const char *const allowed[] = {"id",   "extension",   "modifierExtension", "path",
                                          "name", "description", "collection",        "type",
                                          "tag",  NULL};
    if (!json_is_object(c))
        return invalid(r, "%s", "a column must be an object");
    fhirsync_code rc = check_elements(r, c, allowed, NULL);
    if (rc)
        return rc;
    const char *name = text_value(json_object_get(c, "name"));
    if (!name)
        return invalid(r, "%s", "'name' (a string) is required");
    if (!valid_column_name(name))
        return invalid(r, "'%.100s' is not a valid column name ([A-Za-z][A-Za-z0-9_]*)", name);
    const json_t *coll = json_object_get(c, "collection"), *type = json_object_get(c, "type");
    if (coll && !json_is_boolean(coll))
        return invalid(r, "%s", "'collection' must be true or false");
    if (type && !text_value(type))
        return invalid(r, "%s", "'type' must be a string");
    if (!json_object_get(c, "path"))
        return invalid(r, "%s", "'path' is required");
    col->collection = json_is_true(coll);
    col->decimal = type && strcmp(text_value(type), "decimal") == 0;
    col->slot = *next_slot;
    if (!(col->where = fs_strdup(r->where)))
        return fs_err(r->err, FHIRSYNC_E_NOMEM, "out of memory reading a view");
    size_t saved = strlen(r->where);
    snprintf(r->where + saved, sizeof r->where - saved, ".path");
    rc = compile_path(r, json_object_get(c, "path"), &col->path);
    r->where[saved] = '\0';
    if (rc)
        return rc;
    return add_column(r, name, text_value(type), col->collection, next_slot, in_later_branch);
}

static fhirsync_code read_select(reader *r, const json_t *obj, select_node *sel, size_t *next_slot,
                                 bool in_later_branch)
{
    static const char *const allowed[] = {"id",       "extension", "modifierExtension", "column",
                                          "select",   "forEach",   "forEachOrNull",     "repeat",
                                          "unionAll", NULL};
    if (!json_is_object(obj))
        return invalid(r, "%s", "a select must be an object");
    fhirsync_code rc = check_elements(r, obj, allowed, NULL);
    if (rc)
        return rc;
    sel->first_slot = *next_slot;
    const json_t *for_each = json_object_get(obj, "forEach"),
                 *or_null = json_object_get(obj, "forEachOrNull"),
                 *repeat = json_object_get(obj, "repeat");
    if (!!for_each + !!or_null + !!repeat > 1)
        return invalid(r, "%s", "only one of forEach, forEachOrNull and repeat may be given");
    size_t saved = strlen(r->where);
    if (for_each || or_null) {
        sel->iter = for_each ? ITER_FOR_EACH : ITER_FOR_EACH_OR_NULL;
        if (!(sel->paths = fs_calloc(1, sizeof *sel->paths)))
            return fs_err(r->err, FHIRSYNC_E_NOMEM, "out of memory reading a view");
        sel->npaths = 1;
        snprintf(r->where + saved, sizeof r->where - saved, ".%s",
                 for_each ? "forEach" : "forEachOrNull");
        rc = compile_path(r, for_each ? for_each : or_null, &sel->paths[0]);
        r->where[saved] = '\0';
        if (rc)
            return rc;
    } else if (repeat) {
        sel->iter = ITER_REPEAT;
        if (!json_is_array(repeat) || json_array_size(repeat) == 0)
            return invalid(r, "%s", "'repeat' must be a non-empty array of FHIRPath expressions");
        if (!(sel->paths = fs_calloc(json_array_size(repeat), sizeof *sel->paths)))
            return fs_err(r->err, FHIRSYNC_E_NOMEM, "out of memory reading a view");
        for (size_t i = 0; i < json_array_size(repeat); i++) {
            snprintf(r->where + saved, sizeof r->where - saved, ".repeat[%zu]", i);
            rc = compile_path(r, json_array_get(repeat, i), &sel->paths[i]);
            sel->npaths++;
            r->where[saved] = '\0';
            if (rc)
                return rc;
        }
    }
    const json_t *cols = json_object_get(obj, "column");
    if (cols) {
        if (!json_is_array(cols) || json_array_size(cols) == 0)
            return invalid(r, "%s", "'column' must be a non-empty array");
        if (!(sel->columns = fs_calloc(json_array_size(cols), sizeof *sel->columns)))
            return fs_err(r->err, FHIRSYNC_E_NOMEM, "out of memory reading a view");
        for (size_t i = 0; i < json_array_size(cols); i++) {
            snprintf(r->where + saved, sizeof r->where - saved, "%scolumn[%zu]", saved ? "." : "",
                     i);
            rc = read_column(r, json_array_get(cols, i), &sel->columns[i], next_slot,
                             in_later_branch);
            sel->ncolumns++;
            r->where[saved] = '\0';
            if (rc)
                return rc;
        }
    }
    const json_t *nested = json_object_get(obj, "select"),
                 *unions = json_object_get(obj, "unionAll");
    if (nested && (rc = read_selects(r, nested, "select", &sel->selects, &sel->nselects, next_slot,
                                     in_later_branch, false)))
        return rc;
    if (unions && (rc = read_selects(r, unions, "unionAll", &sel->unions, &sel->nunions, next_slot,
                                     in_later_branch, true)))
        return rc;
    if (!cols && !nested && !unions)
        return invalid(r, "%s", "a select needs column, select or unionAll");
    sel->end_slot = *next_slot;
    return FHIRSYNC_OK;
}

/* The constants: names first (every expression may use them), values as FHIRPath items. */
static fhirsync_code read_constants(reader *r, const json_t *arr)
{
    static const char *const allowed[] = {"id", "extension", "modifierExtension", "name", NULL};
    fhirsync_view *v = r->view;
    if (!json_is_array(arr))
        return invalid(r, "%s", "'constant' must be an array");
    /* the values come from the definition read again as a document, like resources */
    const fs_json_node *root;
    fhirsync_code rc =
        fs_json_dom_parse(&v->definition, r->text, r->len, "view definition", &root, r->err);
    if (rc != FHIRSYNC_OK)
        return rc;
    const fs_json_node *values = fs_json_member(root, "constant", 8);
    if (!values || values->kind != FS_JSON_ARRAY)
        return fs_err(r->err, FHIRSYNC_E_INTERNAL, "constant: the definition reads differently");
    const fs_json_node *element = values + 1;
    size_t n = json_array_size(arr);
    v->const_names = fs_calloc(n ? n : 1, sizeof *v->const_names);
    v->const_values = fs_calloc(n ? n : 1, sizeof *v->const_values);
    if (!v->const_names || !v->const_values)
        return fs_err(r->err, FHIRSYNC_E_NOMEM, "out of memory reading a view");
    for (size_t i = 0; i < n; i++, element = fs_json_next(element)) {
        const json_t *c = json_array_get(arr, i);
        snprintf(r->where, sizeof r->where, "constant[%zu]", i);
        if (!json_is_object(c))
            return invalid(r, "%s", "a constant must be an object");
        rc = check_elements(r, c, allowed, "value");
        if (rc)
            return rc;
        const char *name = text_value(json_object_get(c, "name"));
        if (!name || !valid_column_name(name))
            return invalid(r, "%s", "'name' (a valid name) is required");
        for (size_t k = 0; k < i; k++)
            if (strcmp(v->const_names[k], name) == 0)
                return invalid(r, "duplicate constant '%.100s'", name);
        const char *key, *value_key = NULL;
        json_t *value, *found = NULL;
        json_object_foreach ((json_t *)c, key, value) {
            if (fs_starts_with(key, "value")) {
                if (found)
                    return invalid(r, "constant '%.100s' has more than one value[x]", name);
                found = value;
                value_key = key;
            }
        }
        if (!found || json_is_array(found) || json_is_null(found))
            return invalid(r, "constant '%.100s' needs one value[x]", name);
        /* the type from the suffix: valueInteger -> integer, valueCoding -> Coding */
        static char types[][16] = {"boolean",      "integer",     "decimal",     "string",   "code",
                                   "date",         "dateTime",    "time",        "instant",  "uri",
                                   "url",          "canonical",   "id",          "oid",      "uuid",
                                   "base64Binary", "unsignedInt", "positiveInt", "integer64"};
        const char *suffix = value_key + 5, *type = suffix;
        for (size_t k = 0; k < sizeof types / sizeof types[0]; k++)
            if (tolower((unsigned char)suffix[0]) == types[k][0] &&
                strcmp(suffix + 1, types[k] + 1) == 0)
                type = types[k];
        const fs_json_node *value_node = fs_json_member(element, value_key, strlen(value_key));
        if (!value_node)
            return fs_err(r->err, FHIRSYNC_E_INTERNAL,
                          "constant[%zu]: the definition reads differently", i);
        fs_fp_item item;
        fs_fp_item_of_node(value_node, type, &item);
        v->const_values[i].items = fs_calloc(1, sizeof item);
        if (!v->const_values[i].items)
            return fs_err(r->err, FHIRSYNC_E_NOMEM, "out of memory reading a view");
        v->const_values[i].items[0] = item;
        v->const_values[i].count = v->const_values[i].cap = 1;
        v->const_names[i] = name;
        v->nconsts++;
    }
    r->where[0] = '\0';
    return FHIRSYNC_OK;
}

static void free_select(select_node *sel)
{
    for (size_t i = 0; i < sel->npaths; i++)
        fs_fp_free(sel->paths[i]);
    fs_free(sel->paths);
    for (size_t i = 0; i < sel->ncolumns; i++) {
        fs_fp_free(sel->columns[i].path);
        fs_free(sel->columns[i].where);
    }
    fs_free(sel->columns);
    for (size_t i = 0; i < sel->nselects; i++)
        free_select(&sel->selects[i]);
    fs_free(sel->selects);
    for (size_t i = 0; i < sel->nunions; i++)
        free_select(&sel->unions[i]);
    fs_free(sel->unions);
}

void fhirsync_view_free(fhirsync_view *view)
{
    if (!view)
        return;
    free_select(&view->root);
    for (size_t i = 0; i < view->nwhere; i++)
        fs_fp_free(view->where[i]);
    fs_free(view->where);
    for (size_t i = 0; i < view->nconsts; i++)
        fs_free(view->const_values[i].items);
    fs_free(view->const_values);
    fs_free(view->const_names);
    for (size_t i = 0; i < view->ncols; i++) {
        fs_free((char *)view->cols[i].name);
        fs_free((char *)view->cols[i].type);
    }
    fs_free(view->cols);
    fs_free(view->resource);
    fs_free(view->name);
    fs_free(view->row);
    fs_fp_arena_free(&view->arena);
    json_decref(view->doc);
    fs_json_dom_free(&view->definition);
    fs_json_dom_free(&view->resource_doc);
    fs_free(view);
}

static bool valid_resource_type(const char *s)
{
    if (!isupper((unsigned char)s[0]))
        return false;
    for (size_t i = 1; s[i]; i++)
        if (!isalnum((unsigned char)s[i]))
            return false;
    return true;
}

fhirsync_code fhirsync_view_parse(const char *json, size_t len, fhirsync_view **out,
                                  fhirsync_error *err)
{
    static const char *const allowed[] = {"resourceType",
                                          "id",
                                          "meta",
                                          "implicitRules",
                                          "language",
                                          "text",
                                          "contained",
                                          "extension",
                                          "modifierExtension",
                                          "url",
                                          "identifier",
                                          "version",
                                          "name",
                                          "title",
                                          "status",
                                          "experimental",
                                          "date",
                                          "publisher",
                                          "contact",
                                          "description",
                                          "useContext",
                                          "jurisdiction",
                                          "purpose",
                                          "copyright",
                                          "copyrightLabel",
                                          "resource",
                                          "resourceVersion",
                                          "fhirVersion",
                                          "profile",
                                          "constant",
                                          "select",
                                          "where",
                                          NULL};
    static const char *const where_allowed[] = {"id",   "extension",   "modifierExtension",
                                                "path", "description", NULL};
    if (out)
        *out = NULL;
    if (!json || !out)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_view_parse: NULL argument");
    fhirsync_view *v = fs_calloc(1, sizeof *v);
    if (!v)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory reading a view");
    reader r = {.view = v, .text = json, .len = len, .err = err};
    fhirsync_code rc;
    if (!(v->doc = fs_json_parse_exact(json, len, "view definition", err))) {
        rc = err ? err->code : FHIRSYNC_E_JSON;
        goto out;
    }
    if ((rc = check_elements(&r, v->doc, allowed, "versionAlgorithm")))
        goto out;
    const char *rt = text_value(json_object_get(v->doc, "resourceType"));
    if (rt && strcmp(rt, "ViewDefinition") != 0) {
        rc = invalid(&r, "resourceType is '%.100s', not ViewDefinition", rt);
        goto out;
    }
    const char *resource = text_value(json_object_get(v->doc, "resource"));
    if (!resource || !valid_resource_type(resource)) {
        rc = invalid(&r, "%s", "'resource' (a FHIR resource type) is required");
        goto out;
    }
    const char *name = text_value(json_object_get(v->doc, "name"));
    if (!(v->resource = fs_strdup(resource)) || (name && !(v->name = fs_strdup(name)))) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory reading a view");
        goto out;
    }
    const json_t *consts = json_object_get(v->doc, "constant");
    if (consts && (rc = read_constants(&r, consts)))
        goto out;
    const json_t *selects = json_object_get(v->doc, "select");
    if (!selects) {
        rc = invalid(&r, "%s", "'select' is required");
        goto out;
    }
    size_t next_slot = 0;
    if ((rc = read_selects(&r, selects, "select", &v->root.selects, &v->root.nselects, &next_slot,
                           false, false)))
        goto out;
    v->root.end_slot = next_slot;
    if (v->ncols == 0) {
        rc = invalid(&r, "%s", "the view has no column");
        goto out;
    }
    const json_t *where = json_object_get(v->doc, "where");
    if (where) {
        if (!json_is_array(where)) {
            rc = invalid(&r, "%s", "'where' must be an array");
            goto out;
        }
        if (!(v->where = fs_calloc(json_array_size(where) + 1, sizeof *v->where))) {
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory reading a view");
            goto out;
        }
        for (size_t i = 0; i < json_array_size(where); i++) {
            const json_t *w = json_array_get(where, i);
            snprintf(r.where, sizeof r.where, "where[%zu]", i);
            if (!json_is_object(w)) {
                rc = invalid(&r, "%s", "a where must be an object");
                goto out;
            }
            if ((rc = check_elements(&r, w, where_allowed, NULL)))
                goto out;
            snprintf(r.where, sizeof r.where, "where[%zu].path", i);
            rc = compile_path(&r, json_object_get(w, "path"), &v->where[i]);
            if (rc)
                goto out;
            v->nwhere++;
        }
    }
    if (!(v->row = fs_calloc(v->ncols, sizeof *v->row))) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory reading a view");
        goto out;
    }
    *out = v;
    return FHIRSYNC_OK;
out:
    fhirsync_view_free(v);
    return rc;
}

const char *fhirsync_view_resource(const fhirsync_view *view)
{
    return view ? view->resource : NULL;
}

const char *fhirsync_view_name(const fhirsync_view *view)
{
    return view ? view->name : NULL;
}

size_t fhirsync_view_column_count(const fhirsync_view *view)
{
    return view ? view->ncols : 0;
}

const fhirsync_view_column *fhirsync_view_column_at(const fhirsync_view *view, size_t index)
{
    return view && index < view->ncols ? &view->cols[index] : NULL;
}

/* ---- evaluating ------------------------------------------------------------------------------ */

typedef struct run {
    fhirsync_view *view;
    fs_fp_env env;
    fhirsync_view_row_fn row;           /* fhirsync_view_eval's callback, or NULL */
    fhirsync_view_many_row_fn many_row; /* fhirsync_view_eval_many's */
    size_t index;                       /* the view's index for many_row */
    void *userdata;
    fhirsync_error *err;
} run;

/* What to do after a select has filled its slots for one row: the rest of the product. */
typedef struct cont cont;
struct cont {
    fhirsync_code (*fn)(run *r, const cont *self);
};

static fhirsync_code nomem(run *r)
{
    return fs_err(r->err, FHIRSYNC_E_NOMEM, "out of memory evaluating a view");
}

/* One item as JSON (for collections and complex values). False on out of memory, and for a
 * string that is not UTF-8 (a substring() that cut a character), which JSON cannot hold. */
static bool write_item(fs_buf *b, const fs_fp_item *it)
{
    switch (it->kind) {
    case FS_FP_NODE: return fs_json_node_write(b, it->node);
    case FS_FP_NULL: return fs_buf_append_str(b, "null");
    case FS_FP_BOOLEAN: return fs_buf_append_str(b, it->b ? "true" : "false");
    case FS_FP_INTEGER: return fs_buf_printf(b, "%lld", (long long)it->i);
    case FS_FP_DECIMAL: return fs_buf_append(b, it->s, it->len);
    case FS_FP_STRING: return fs_json_write_string(b, it->s, it->len);
    }
    return false;
}

static fhirsync_code set_json(run *r, fhirsync_view_value *value, fs_buf *b)
{
    char *text = fs_fp_alloc(&r->view->arena, b->len + 1);
    if (!text) {
        fs_buf_free(b);
        return nomem(r);
    }
    memcpy(text, b->data, b->len);
    *value = (fhirsync_view_value){.kind = FHIRSYNC_VIEW_JSON, .text = text, .len = b->len};
    fs_buf_free(b);
    return FHIRSYNC_OK;
}

static fhirsync_code column_value(run *r, const column *col, const fs_fp_item *focus,
                                  int64_t row_index)
{
    fhirsync_view_value *value = &r->view->row[col->slot];
    *value = (fhirsync_view_value){.kind = FHIRSYNC_VIEW_NULL};
    if (!focus)
        return FHIRSYNC_OK;
    fs_fp_coll in = {.items = (fs_fp_item *)focus, .count = 1, .cap = 1}, out = {0};
    r->env.row_index = row_index;
    fhirsync_code rc = fs_fp_eval(col->path, &r->env, &in, &out, r->err);
    if (rc) {
        fs_err_prefix(r->err, "%s", col->where);
        return rc;
    }
    fs_buf b;
    fs_buf_init(&b);
    if (col->collection) {
        bool ok = fs_buf_append(&b, "[", 1);
        for (size_t i = 0; ok && i < out.count; i++)
            ok = (!i || fs_buf_append(&b, ",", 1)) && write_item(&b, &out.items[i]);
        if (!ok || !fs_buf_append(&b, "]", 1)) {
            fs_buf_free(&b);
            return nomem(r);
        }
        return set_json(r, value, &b);
    }
    if (out.count > 1)
        return fs_err(r->err, FHIRSYNC_E_VIEW,
                      "%s: %zu values where collection is false (one at most)", col->where,
                      out.count);
    if (out.count == 0)
        return FHIRSYNC_OK;
    const fs_fp_item *it = &out.items[0];
    switch (it->kind) {
    case FS_FP_NULL: return FHIRSYNC_OK;
    case FS_FP_BOOLEAN:
        value->kind = FHIRSYNC_VIEW_BOOLEAN;
        value->boolean = it->b;
        break;
    case FS_FP_INTEGER:
        if (col->decimal) {
            char *text = fs_fp_alloc(&r->view->arena, 24);
            if (!text)
                return nomem(r);
            value->kind = FHIRSYNC_VIEW_DECIMAL;
            value->len = (size_t)snprintf(text, 24, "%lld", (long long)it->i);
            value->text = text;
        } else {
            value->kind = FHIRSYNC_VIEW_INTEGER;
            value->integer = it->i;
        }
        break;
    case FS_FP_DECIMAL:
    case FS_FP_STRING: {
        char *text = fs_fp_alloc(&r->view->arena, it->len + 1);
        if (!text)
            return nomem(r);
        memcpy(text, it->s, it->len);
        value->kind = it->kind == FS_FP_DECIMAL ? FHIRSYNC_VIEW_DECIMAL : FHIRSYNC_VIEW_STRING;
        value->text = text;
        value->len = it->len;
        break;
    }
    case FS_FP_NODE:
        if (!write_item(&b, it)) {
            fs_buf_free(&b);
            return nomem(r);
        }
        return set_json(r, value, &b);
    }
    return FHIRSYNC_OK;
}

static fhirsync_code gen_select(run *r, const select_node *sel, const fs_fp_item *node,
                                int64_t row_index, const cont *k);

/* The product's walk: parts 0..nselects-1 are the nested selects, part nselects the unionAll. */
typedef struct parts_cont {
    cont base;
    const select_node *sel;
    const fs_fp_item *focus;
    int64_t row_index;
    size_t part;
    const cont *then;
} parts_cont;

static fhirsync_code gen_parts(run *r, const select_node *sel, const fs_fp_item *focus,
                               int64_t row_index, size_t part, const cont *then);

static fhirsync_code parts_next(run *r, const cont *self)
{
    const parts_cont *pc = (const parts_cont *)self;
    return gen_parts(r, pc->sel, pc->focus, pc->row_index, pc->part, pc->then);
}

static fhirsync_code gen_parts(run *r, const select_node *sel, const fs_fp_item *focus,
                               int64_t row_index, size_t part, const cont *then)
{
    size_t nparts = sel->nselects + (sel->nunions ? 1 : 0);
    if (part == nparts)
        return then->fn(r, then);
    parts_cont next = {{parts_next}, sel, focus, row_index, part + 1, then};
    if (part < sel->nselects)
        return gen_select(r, &sel->selects[part], focus, row_index, &next.base);
    for (size_t i = 0; i < sel->nunions; i++) {
        fhirsync_code rc = gen_select(r, &sel->unions[i], focus, row_index, &next.base);
        if (rc)
            return rc;
    }
    return FHIRSYNC_OK;
}

/* One focus of a select: its columns, then the product of its parts. */
static fhirsync_code gen_focus(run *r, const select_node *sel, const fs_fp_item *focus,
                               int64_t row_index, const cont *then)
{
    if (!focus) /* forEachOrNull without a match: every column of the select is null */
        for (size_t s = sel->first_slot; s < sel->end_slot; s++)
            r->view->row[s] = (fhirsync_view_value){.kind = FHIRSYNC_VIEW_NULL};
    for (size_t i = 0; i < sel->ncolumns; i++) {
        fhirsync_code rc = column_value(r, &sel->columns[i], focus, row_index);
        if (rc)
            return rc;
    }
    return gen_parts(r, sel, focus, row_index, 0, then);
}

/* repeat: the items each path gives, and recursively what the paths give from them. */
static fhirsync_code repeat_collect(run *r, const select_node *sel, const fs_fp_item *node,
                                    fs_fp_coll *out, unsigned depth)
{
    if (depth > 64)
        return fs_err(r->err, FHIRSYNC_E_VIEW, "repeat nested deeper than 64 levels");
    fs_fp_coll in = {.items = (fs_fp_item *)node, .count = 1, .cap = 1};
    for (size_t p = 0; p < sel->npaths; p++) {
        fs_fp_coll found = {0};
        fhirsync_code rc = fs_fp_eval(sel->paths[p], &r->env, &in, &found, r->err);
        if (rc)
            return rc;
        for (size_t i = 0; i < found.count; i++) {
            if (!fs_fp_push(&r->view->arena, out, &found.items[i]))
                return nomem(r);
            if (found.items[i].kind == FS_FP_NODE &&
                (rc = repeat_collect(r, sel, &found.items[i], out, depth + 1)))
                return rc;
        }
    }
    return FHIRSYNC_OK;
}

static fhirsync_code gen_select(run *r, const select_node *sel, const fs_fp_item *node,
                                int64_t row_index, const cont *then)
{
    if (sel->iter == ITER_NONE)
        return gen_focus(r, sel, node, row_index, then);
    fs_fp_coll foci = {0};
    if (node) {
        fs_fp_coll in = {.items = (fs_fp_item *)node, .count = 1, .cap = 1};
        fhirsync_code rc = sel->iter == ITER_REPEAT
                               ? repeat_collect(r, sel, node, &foci, 0)
                               : fs_fp_eval(sel->paths[0], &r->env, &in, &foci, r->err);
        if (rc)
            return rc;
    }
    if (foci.count == 0 && sel->iter == ITER_FOR_EACH_OR_NULL)
        return gen_focus(r, sel, NULL, row_index, then);
    for (size_t i = 0; i < foci.count; i++) {
        fhirsync_code rc = gen_focus(r, sel, &foci.items[i], (int64_t)i, then);
        if (rc)
            return rc;
    }
    return FHIRSYNC_OK;
}

static fhirsync_code emit(run *r, const cont *self)
{
    (void)self;
    if (r->row)
        return r->row(r->userdata, r->view->row, r->view->ncols);
    return r->many_row(r->userdata, r->index, r->view->row, r->view->ncols);
}

/* The view's where clauses: true when every one is true (an empty result is false). */
static fhirsync_code passes_where(run *r, const fs_fp_item *resource, bool *pass)
{
    fs_fp_coll in = {.items = (fs_fp_item *)resource, .count = 1, .cap = 1};
    *pass = true;
    for (size_t i = 0; i < r->view->nwhere && *pass; i++) {
        fs_fp_coll out = {0};
        fhirsync_code rc = fs_fp_eval(r->view->where[i], &r->env, &in, &out, r->err);
        if (rc) {
            fs_err_prefix(r->err, "where[%zu]", i);
            return rc;
        }
        if (out.count > 1 || (out.count == 1 && out.items[0].kind != FS_FP_BOOLEAN))
            return fs_err(r->err, FHIRSYNC_E_VIEW, "where[%zu].path gives %s, not one boolean", i,
                          out.count > 1 ? "several values" : "a value of another type");
        *pass = out.count == 1 && out.items[0].b;
    }
    return FHIRSYNC_OK;
}

/* Evaluate r->view over a resource read already (`type` its resourceType, NULL when it has none).
 */
static fhirsync_code eval_resource(run *r, const fs_json_node *doc, const char *type)
{
    fhirsync_view *view = r->view;
    fhirsync_code rc = FHIRSYNC_OK;
    if (fs_streq(type, view->resource)) {
        fs_fp_item item;
        fs_fp_item_of_node(doc, NULL, &item);
        r->env = (fs_fp_env){.arena = &view->arena, .resource = &item, .vars = view->const_values};
        bool pass;
        if ((rc = passes_where(r, &item, &pass)) == FHIRSYNC_OK && pass) {
            cont done = {emit};
            rc = gen_parts(r, &view->root, &item, 0, 0, &done);
        }
    }
    fs_fp_arena_reset(&view->arena);
    return rc;
}

fhirsync_code fhirsync_view_eval(fhirsync_view *view, const char *resource, size_t len,
                                 fhirsync_view_row_fn row, void *userdata, fhirsync_error *err)
{
    if (!view || !resource || !row)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_view_eval: NULL argument");
    const fs_json_node *doc;
    fhirsync_code rc = fs_json_dom_parse(&view->resource_doc, resource, len, "resource", &doc, err);
    if (rc == FHIRSYNC_OK) {
        run r = {.view = view, .row = row, .userdata = userdata, .err = err};
        rc = eval_resource(&r, doc, fs_json_member_str(doc, "resourceType", 12));
    }
    fs_json_dom_trim(&view->resource_doc, SCRATCH_KEEP);
    return rc;
}

fhirsync_code fhirsync_view_eval_many(fhirsync_view *const *views, size_t count,
                                      const char *resource, size_t len,
                                      fhirsync_view_many_row_fn row, fhirsync_view_many_end_fn end,
                                      void *userdata, fhirsync_error *err)
{
    bool null_view = false;
    for (size_t i = 0; views && i < count; i++)
        null_view = null_view || !views[i];
    if ((count && !views) || null_view || !resource || !row)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_view_eval_many: NULL argument");
    if (count == 0)
        return FHIRSYNC_OK;
    fs_json_dom *scratch = &views[0]->resource_doc;
    const fs_json_node *doc;
    fhirsync_code rc = fs_json_dom_parse(scratch, resource, len, "resource", &doc, err);
    if (rc == FHIRSYNC_OK) {
        const char *type = fs_json_member_str(doc, "resourceType", 12);
        fhirsync_error view_err;
        for (size_t i = 0; i < count && rc == FHIRSYNC_OK; i++) {
            run r = {.view = views[i],
                     .many_row = row,
                     .index = i,
                     .userdata = userdata,
                     .err = end ? &view_err : err};
            fs_err_clear(&view_err);
            rc = eval_resource(&r, doc, type);
            if (end)
                rc = end(userdata, i, rc, &view_err);
        }
    }
    fs_json_dom_trim(scratch, SCRATCH_KEEP);
    return rc;
}
