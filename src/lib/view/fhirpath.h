/* view/fhirpath.h: the FHIRPath subset that SQL on FHIR v2 views need, for the rest of the view
 * module (and its tests and fuzz targets). An expression is parsed once into an AST (fs_fp_parse:
 * a lexer and a recursive-descent parser; errors name the position and the token, and an unknown
 * function or variable is a parse error, never an empty result) and evaluated many times over
 * collections of items that borrow from a resource read into a JSON document (json/dom.h, so
 * decimals keep their text). Everything an evaluation allocates comes from an arena (fs_fp_arena)
 * that the caller resets between resources. Thread safety: a parsed expression is read-only while
 * evaluated, so threads may share one; an arena and an env belong to one thread. */
#ifndef FS_VIEW_FHIRPATH_H
#define FS_VIEW_FHIRPATH_H

#include "core/core.h"
#include "json/dom.h"

/* ---- values ---------------------------------------------------------------------------------- */

typedef enum fs_fp_kind {
    FS_FP_NODE,    /* a JSON object of the resource (a complex type or a resource) */
    FS_FP_NULL,    /* a primitive with no value, only extensions (`_given: [{...}]`) */
    FS_FP_BOOLEAN, /* b */
    FS_FP_INTEGER, /* i */
    FS_FP_DECIMAL, /* text in s/len, exactly as written or computed ("1.50") */
    FS_FP_STRING   /* s/len (code, date, dateTime, uri... are strings with a `type`) */
} fs_fp_kind;

/* One item of a collection. Strings borrow from the resource or the arena. */
typedef struct fs_fp_item {
    fs_fp_kind kind;
    const char *type; /* FHIR type when known (a choice suffix: "Quantity", "dateTime"), or NULL
                         (an object's resourceType is not copied here: see fs_fp_item_type) */
    const fs_json_node *node; /* FS_FP_NODE: the object */
    const fs_json_node *ext;  /* a primitive's `_name` object (extensions, id), or NULL */
    bool b;
    int64_t i;
    const char *s;
    size_t len;
} fs_fp_item;

typedef struct fs_fp_coll {
    fs_fp_item *items;
    size_t count, cap;
} fs_fp_coll;

/* ---- the arena ------------------------------------------------------------------------------- */

typedef struct fs_fp_block fs_fp_block;
typedef struct fs_fp_arena {
    fs_fp_block *blocks;
} fs_fp_arena;

/* `n` bytes, zeroed, aligned for any item; NULL on out of memory. */
void *fs_fp_alloc(fs_fp_arena *a, size_t n);
/* Give back everything allocated (the first block is kept for the next resource). */
void fs_fp_arena_reset(fs_fp_arena *a);
/* Free the arena's memory. */
void fs_fp_arena_free(fs_fp_arena *a);
/* Append an item (the collection grows in the arena); false on out of memory. */
bool fs_fp_push(fs_fp_arena *a, fs_fp_coll *c, const fs_fp_item *item);

/* ---- expressions ----------------------------------------------------------------------------- */

typedef struct fs_fp_expr fs_fp_expr;

/* Parse `text` (NUL-terminated). `vars` names the %variables the caller will supply (a view's
 * constants), in the order of the `vars` array of fs_fp_env; %resource, %rootResource, %context
 * and %rowIndex are built in. On failure returns NULL with err filled: FHIRSYNC_E_VIEW and a
 * message naming the position and the token ("unknown function 'foo' at 5"), or
 * FHIRSYNC_E_NOMEM. */
fs_fp_expr *fs_fp_parse(const char *text, const char *const *vars, size_t nvars,
                        fhirsync_error *err);
/* Free a parsed expression; NULL is a no-op. */
void fs_fp_free(fs_fp_expr *expr);

/* What an evaluation reads besides its input. */
typedef struct fs_fp_env {
    fs_fp_arena *arena;
    const fs_fp_item *resource; /* %resource, getResourceKey() */
    const fs_fp_coll *vars;     /* values of the parse's `vars`, same order */
    int64_t row_index;          /* %rowIndex */
} fs_fp_env;

/* Evaluate `expr` with `input` as its focus (the whole collection); the result goes to *out
 * (reset first, items in the arena). FHIRSYNC_E_VIEW with err filled when the expression fails on
 * this input (a function that needs one item got several, a type error), FHIRSYNC_E_NOMEM. */
fhirsync_code fs_fp_eval(const fs_fp_expr *expr, const fs_fp_env *env, const fs_fp_coll *input,
                         fs_fp_coll *out, fhirsync_error *err);

/* The item of a JSON value (a resource, or a constant), as member access would give it: an object
 * is FS_FP_NODE (of type `type`, else of its resourceType: fs_fp_item_type), a number FS_FP_INTEGER
 * when it is integral and fits, else FS_FP_DECIMAL with its text; null, an array or a NULL value is
 * FS_FP_NULL. The item borrows from the value's document. */
void fs_fp_item_of_node(const fs_json_node *value, const char *type, fs_fp_item *out);

/* The FHIRPath type name of an item ("boolean", "decimal", "Quantity", "Patient": its `type`,
 * else an object's resourceType, else the kind's), NULL for an object of unknown type. */
const char *fs_fp_item_type(const fs_fp_item *item);

#endif
