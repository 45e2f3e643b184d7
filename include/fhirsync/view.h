/* fhirsync/view.h: SQL on FHIR v2 ViewDefinitions: read and validate one (JSON), list the columns
 * it produces, and evaluate it over one resource at a time, the rows coming out through a
 * callback as typed values (nothing of the result is held whole). The FHIRPath the views use is
 * the specification's "shareable" subset plus a few experimental functions (lowBoundary,
 * highBoundary); an expression that uses anything else is refused when the view is read, with a
 * message naming the element and the position.
 *
 * Errors follow common.h: every fallible function takes a `fhirsync_error *err`. An invalid view
 * is FHIRSYNC_E_VIEW from fhirsync_view_parse, and the message names the offending element
 * ("select[1].column[0].name: 'a b' is not a valid column name"). A resource the view cannot
 * evaluate (a `collection: false` column with several values, a `where` that is not boolean) is
 * FHIRSYNC_E_VIEW from fhirsync_view_eval: that resource's rows are incomplete, and the caller
 * decides (quarantine it, skip it); the view stays usable for the next resource.
 *
 * Thread safety: a view is not shared: fhirsync_view_eval uses scratch memory inside it. Parse one
 * view per thread (they are small), or serialise the calls. */
#ifndef FHIRSYNC_VIEW_H
#define FHIRSYNC_VIEW_H

#include "fhirsync/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fhirsync_view fhirsync_view;

/* Read and validate a ViewDefinition: `len` bytes of JSON. The whole definition is checked before
 * anything is evaluated: required elements (resource, select, column name and path), element
 * names (an unknown element is an error), column names ([A-Za-z][A-Za-z0-9_]*, unique in the
 * view), forEach and forEachOrNull not both in one select, unionAll branches with the same
 * columns in the same order, constants (a name and one value[x]), and every FHIRPath expression
 * (syntax, known functions, known %constants). On success *view is the caller's (free with
 * fhirsync_view_free); on failure it is NULL and err says why: FHIRSYNC_E_JSON (not JSON),
 * FHIRSYNC_E_VIEW (an invalid view), FHIRSYNC_E_NOMEM, FHIRSYNC_E_ARG (NULL arguments). */
FHIRSYNC_API fhirsync_code fhirsync_view_parse(const char *json, size_t len, fhirsync_view **view,
                                               fhirsync_error *err);

/* Free a view; NULL is a no-op. */
FHIRSYNC_API void fhirsync_view_free(fhirsync_view *view);

/* The view's `resource` (a FHIR resource type, "Patient"), and its `name` (NULL when the view has
 * none). Borrowed until the view is freed. */
FHIRSYNC_API const char *fhirsync_view_resource(const fhirsync_view *view);
FHIRSYNC_API const char *fhirsync_view_name(const fhirsync_view *view);

/* One column of the rows, in the order of the specification (a select's own columns, then its
 * nested selects', then its unionAll's). Handed out by the library: read only. */
typedef struct fhirsync_view_column {
    const char *name; /* a valid database name, unique in the view */
    const char *type; /* the column's `type` (a FHIR type: "string", "decimal", "dateTime"...), or
                         NULL when the view gives none */
    bool collection;  /* `collection: true`: values are JSON arrays */
} fhirsync_view_column;

/* How many columns each row has (at least 1). */
FHIRSYNC_API size_t fhirsync_view_column_count(const fhirsync_view *view);
/* Column `index` (0-based), borrowed until the view is freed; NULL when index is out of range. */
FHIRSYNC_API const fhirsync_view_column *fhirsync_view_column_at(const fhirsync_view *view,
                                                                 size_t index);

/* The kind of one value of a row. Append-only. */
typedef enum fhirsync_view_kind {
    FHIRSYNC_VIEW_NULL = 0,    /* no value */
    FHIRSYNC_VIEW_BOOLEAN = 1, /* `boolean` */
    FHIRSYNC_VIEW_INTEGER = 2, /* `integer` */
    FHIRSYNC_VIEW_DECIMAL = 3, /* `text`: the decimal exactly as the resource wrote it, or as
                                  computed with FHIRPath's precision ("1.50", "0.95") */
    FHIRSYNC_VIEW_STRING = 4,  /* `text`: strings, codes, dates, dateTimes, URIs... (UTF-8) */
    FHIRSYNC_VIEW_JSON = 5     /* `text`: JSON, for a complex value (a Coding) or a collection
                                  column (an array) */
} fhirsync_view_kind;

/* One value of a row. `text` is borrowed and valid only during the callback; it is `len` bytes
 * and NUL-terminated. */
typedef struct fhirsync_view_value {
    fhirsync_view_kind kind;
    bool boolean;
    int64_t integer;
    const char *text;
    size_t len;
} fhirsync_view_value;

/* Called once per row with fhirsync_view_column_count() values in column order. Return
 * FHIRSYNC_OK to go on; any other code stops the evaluation, which returns it. */
typedef fhirsync_code (*fhirsync_view_row_fn)(void *userdata, const fhirsync_view_value *values,
                                              size_t count);

/* Evaluate the view over one resource (`len` bytes of JSON), calling `row` for each row it
 * produces, in the specification's order. A resource of another type than the view's produces
 * no row (and is no error). Errors: FHIRSYNC_E_JSON (the resource is not a JSON object),
 * FHIRSYNC_E_VIEW (this resource cannot be evaluated: err names the column or where clause; rows
 * already delivered for it should be discarded), FHIRSYNC_E_NOMEM, FHIRSYNC_E_ARG, or the code
 * the callback returned. The view stays usable after any error. */
FHIRSYNC_API fhirsync_code fhirsync_view_eval(fhirsync_view *view, const char *resource, size_t len,
                                              fhirsync_view_row_fn row, void *userdata,
                                              fhirsync_error *err);

/* Called once per row of the view at `view_index` (its index in the array given to
 * fhirsync_view_eval_many), with fhirsync_view_column_count() of that view values. Return
 * FHIRSYNC_OK to go on; any other code ends that view's evaluation over this resource with that
 * code (see fhirsync_view_many_end_fn). */
typedef fhirsync_code (*fhirsync_view_many_row_fn)(void *userdata, size_t view_index,
                                                   const fhirsync_view_value *values, size_t count);

/* Called once per view, in order, when its evaluation over the resource has ended, after its
 * rows: `code` is FHIRSYNC_OK when every row was delivered (none for a view of another resource
 * type), else what ended it: FHIRSYNC_E_VIEW with `error` saying why (this view cannot evaluate
 * this resource: its rows already delivered should be discarded; the other views are not
 * affected), FHIRSYNC_E_NOMEM, or the code the row callback returned (`error` then holds no
 * message). `error` is borrowed for the call. Return FHIRSYNC_OK to go on with the next view;
 * any other code stops: fhirsync_view_eval_many returns it. */
typedef fhirsync_code (*fhirsync_view_many_end_fn)(void *userdata, size_t view_index,
                                                   fhirsync_code code, const fhirsync_error *error);

/* Evaluate `count` views over one resource (`len` bytes of JSON) read once for all of them: the
 * same rows as fhirsync_view_eval on each view in turn, for the cost of one read of the resource
 * (what a store keeping several views of one type needs). Views of another type than the
 * resource's produce no row. For each view in array order, its rows go to `row` with the view's
 * index, then `end` (when not NULL) gets its outcome and decides whether to go on: a view that
 * fails on this resource need not stop the others. Without `end`, the first view that fails
 * stops the evaluation, which returns its code with err filled, as fhirsync_view_eval does.
 * Errors: FHIRSYNC_E_JSON (the resource is not a JSON object: no view is evaluated),
 * FHIRSYNC_E_ARG (NULL views, resource or row; a NULL view), FHIRSYNC_E_NOMEM, the code of a
 * failed view (without `end`), or the code a callback returned to stop. `count` 0 reads nothing
 * and returns FHIRSYNC_OK. The views stay usable after any error.
 *
 * Thread safety: as fhirsync_view_eval, for all the views given (the first one's scratch memory
 * holds the resource); a view may appear more than once. The callbacks must not evaluate these
 * views. */
FHIRSYNC_API fhirsync_code fhirsync_view_eval_many(fhirsync_view *const *views, size_t count,
                                                   const char *resource, size_t len,
                                                   fhirsync_view_many_row_fn row,
                                                   fhirsync_view_many_end_fn end, void *userdata,
                                                   fhirsync_error *err);

#ifdef __cplusplus
}
#endif
#endif
