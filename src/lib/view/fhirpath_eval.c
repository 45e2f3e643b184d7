/* view/fhirpath_eval.c: the FHIRPath evaluator over collections of items (fhirpath.h) that
 * borrow from a resource read into a JSON document (json/dom.h). Member access knows FHIR's JSON:
 * arrays flatten, a choice element `value` finds `valueQuantity` (and remembers the type for
 * ofType), and a primitive carries its `_name` sibling (extensions, id). Decimals stay text:
 * arithmetic keeps the scale FHIRPath asks for (the sum of 1.10 and 2.0 is 3.10), and comparisons
 * are numeric. Boolean operators are three-valued; an empty operand gives an empty result. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "view/fhirpath_private.h"

/* ---- the arena ------------------------------------------------------------------------------- */

struct fs_fp_block {
    fs_fp_block *next;
    size_t used, size;
    max_align_t data[];
};

#define BLOCK_SIZE 16384

/* n bytes of the arena, not zeroed; NULL on out of memory. */
static void *arena_take(fs_fp_arena *a, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    fs_fp_block *b = a->blocks;
    if (!b || b->size - b->used < n) {
        size_t size = n > BLOCK_SIZE ? n : BLOCK_SIZE;
        fs_fp_block *nb = fs_malloc(sizeof *nb + size);
        if (!nb)
            return NULL;
        nb->size = size;
        nb->used = 0;
        nb->next = b;
        a->blocks = b = nb;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

void *fs_fp_alloc(fs_fp_arena *a, size_t n)
{
    void *p = arena_take(a, n);
    if (p)
        memset(p, 0, n);
    return p;
}

void fs_fp_arena_reset(fs_fp_arena *a)
{
    fs_fp_block *b = a->blocks;
    if (!b)
        return;
    /* keep the last (oldest) block: one resource's work usually fits */
    while (b->next) {
        fs_fp_block *next = b->next;
        fs_free(b);
        b = next;
    }
    b->used = 0;
    a->blocks = b;
}

void fs_fp_arena_free(fs_fp_arena *a)
{
    while (a->blocks) {
        fs_fp_block *next = a->blocks->next;
        fs_free(a->blocks);
        a->blocks = next;
    }
}

bool fs_fp_push(fs_fp_arena *a, fs_fp_coll *c, const fs_fp_item *item)
{
    if (c->count == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 4;
        fs_fp_item *items = arena_take(a, cap * sizeof *items); /* filled as items come */
        if (!items)
            return false;
        if (c->count)
            memcpy(items, c->items, c->count * sizeof *items);
        c->items = items;
        c->cap = cap;
    }
    c->items[c->count++] = *item;
    return true;
}

static char *arena_strndup(fs_fp_arena *a, const char *s, size_t n)
{
    char *d = fs_fp_alloc(a, n + 1);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* ---- items ----------------------------------------------------------------------------------- */

void fs_fp_item_of_node(const fs_json_node *value, const char *type, fs_fp_item *out)
{
    memset(out, 0, sizeof *out);
    out->type = type;
    out->kind = FS_FP_NULL;
    if (!value)
        return;
    switch (value->kind) {
    case FS_JSON_NUMBER: {
        out->s = value->text;
        out->len = value->len;
        bool integral = !strpbrk(value->text, ".eE");
        errno = 0;
        char *end;
        long long v = integral ? strtoll(value->text, &end, 10) : 0;
        if (integral && !errno) {
            out->kind = FS_FP_INTEGER;
            out->i = v;
        } else {
            out->kind = FS_FP_DECIMAL;
        }
        break;
    }
    case FS_JSON_STRING:
        out->kind = FS_FP_STRING;
        out->s = value->text;
        out->len = value->len;
        break;
    case FS_JSON_TRUE:
    case FS_JSON_FALSE:
        out->kind = FS_FP_BOOLEAN;
        out->b = value->kind == FS_JSON_TRUE;
        break;
    case FS_JSON_OBJECT: /* its resourceType, when it has one, is looked up when asked for */
        out->kind = FS_FP_NODE;
        out->node = value;
        break;
    default: break; /* null, an array */
    }
}

const char *fs_fp_item_type(const fs_fp_item *item)
{
    if (item->type)
        return item->type;
    switch (item->kind) {
    case FS_FP_NODE: return fs_json_member_str(item->node, "resourceType", 12);
    case FS_FP_BOOLEAN: return "boolean";
    case FS_FP_INTEGER: return "integer";
    case FS_FP_DECIMAL: return "decimal";
    case FS_FP_STRING: return "string";
    default: return NULL;
    }
}

/* ---- evaluation context ---------------------------------------------------------------------- */

typedef struct frame {
    const fs_fp_coll *this_coll; /* $this, and the focus of value arguments */
    int64_t index;               /* $index */
} frame;

typedef struct eval {
    const fs_fp_env *env;
    fhirsync_error *err;
    const char *text;
} eval;

static fhirsync_code oom(eval *ev)
{
    return fs_err(ev->err, FHIRSYNC_E_NOMEM, "out of memory evaluating FHIRPath");
}

static fhirsync_code eval_node(eval *ev, const fp_node *n, const fs_fp_coll *input, const frame *fr,
                               fs_fp_coll *out);

static fhirsync_code push(eval *ev, fs_fp_coll *out, const fs_fp_item *item)
{
    return fs_fp_push(ev->env->arena, out, item) ? FHIRSYNC_OK : oom(ev);
}

static fhirsync_code push_bool(eval *ev, fs_fp_coll *out, bool b)
{
    fs_fp_item it = {.kind = FS_FP_BOOLEAN, .b = b};
    return push(ev, out, &it);
}

static fhirsync_code push_int(eval *ev, fs_fp_coll *out, int64_t i)
{
    fs_fp_item it = {.kind = FS_FP_INTEGER, .i = i};
    return push(ev, out, &it);
}

static fhirsync_code push_str(eval *ev, fs_fp_coll *out, const char *s, size_t len,
                              const char *type)
{
    char *copy = arena_strndup(ev->env->arena, s, len);
    if (!copy)
        return oom(ev);
    fs_fp_item it = {.kind = FS_FP_STRING, .s = copy, .len = len, .type = type};
    return push(ev, out, &it);
}

static fhirsync_code push_dec_text(eval *ev, fs_fp_coll *out, const char *text)
{
    fhirsync_code rc = push_str(ev, out, text, strlen(text), NULL);
    if (rc == FHIRSYNC_OK)
        out->items[out->count - 1].kind = FS_FP_DECIMAL;
    return rc;
}

/* A failure of the expression on this input, naming the node. */
static fhirsync_code fail_at(eval *ev, const fp_node *n, const char *what)
{
    return fs_err(ev->err, FHIRSYNC_E_VIEW, "%s (at %zu of '%.200s')", what, n->pos, ev->text);
}

/* ---- member access --------------------------------------------------------------------------- */

static const char *const primitive_types[] = {
    "boolean",  "integer", "integer64", "decimal",      "string",      "code",       "date",
    "dateTime", "time",    "instant",   "uri",          "url",         "canonical",  "id",
    "oid",      "uuid",    "markdown",  "base64Binary", "unsignedInt", "positiveInt"};

/* The complex types a choice element can take (FHIR R4 and R5 open types). */
static const char *const complex_types[] = {"Address",
                                            "Age",
                                            "Annotation",
                                            "Attachment",
                                            "Availability",
                                            "CodeableConcept",
                                            "CodeableReference",
                                            "Coding",
                                            "ContactDetail",
                                            "ContactPoint",
                                            "Contributor",
                                            "Count",
                                            "DataRequirement",
                                            "Distance",
                                            "Dosage",
                                            "Duration",
                                            "Expression",
                                            "ExtendedContactDetail",
                                            "HumanName",
                                            "Identifier",
                                            "Meta",
                                            "Money",
                                            "MonetaryComponent",
                                            "ParameterDefinition",
                                            "Period",
                                            "Quantity",
                                            "Range",
                                            "Ratio",
                                            "RatioRange",
                                            "Reference",
                                            "RelatedArtifact",
                                            "SampledData",
                                            "Signature",
                                            "Timing",
                                            "TriggerDefinition",
                                            "UsageContext",
                                            "VirtualServiceDetail"};

/* The type named by a choice suffix ("Quantity" stays, "DateTime" becomes "dateTime"), or NULL
 * when the suffix names no type (`codeSystem` is no choice of `code`). */
static const char *choice_type(const char *suffix)
{
    int first = tolower((unsigned char)suffix[0]);
    for (size_t i = 0; i < sizeof primitive_types / sizeof primitive_types[0]; i++) {
        const char *t = primitive_types[i];
        if (first == t[0] && strcmp(suffix + 1, t + 1) == 0)
            return t;
    }
    for (size_t i = 0; i < sizeof complex_types / sizeof complex_types[0]; i++)
        if (suffix[0] == complex_types[i][0] && strcmp(suffix, complex_types[i]) == 0)
            return complex_types[i];
    return NULL;
}

static bool is_kind(const fs_json_node *n, fs_json_kind kind)
{
    return n && n->kind == kind;
}

/* The items of `value` (flattened) with their `_name` siblings `ext`. */
static fhirsync_code push_member(eval *ev, fs_fp_coll *out, const fs_json_node *value,
                                 const fs_json_node *ext, const char *type)
{
    fs_fp_item it;
    bool ext_array = is_kind(ext, FS_JSON_ARRAY);
    if (is_kind(value, FS_JSON_ARRAY) || (!value && ext_array)) {
        uint32_t n = value ? value->len : ext->len, exts = ext_array ? ext->len : 0;
        const fs_json_node *v = value ? value + 1 : NULL, *e = ext_array ? ext + 1 : NULL;
        for (uint32_t k = 0; k < n; k++) {
            const fs_json_node *ek = k < exts ? e : NULL;
            if ((v && v->kind != FS_JSON_NULL) || is_kind(ek, FS_JSON_OBJECT)) {
                fs_fp_item_of_node(v, type, &it);
                it.ext = is_kind(ek, FS_JSON_OBJECT) ? ek : NULL;
                if (push(ev, out, &it))
                    return FHIRSYNC_E_NOMEM;
            }
            if (v)
                v = fs_json_next(v);
            if (ek)
                e = fs_json_next(e);
        }
        return FHIRSYNC_OK;
    }
    if ((!value || value->kind == FS_JSON_NULL) && !is_kind(ext, FS_JSON_OBJECT))
        return FHIRSYNC_OK;
    fs_fp_item_of_node(value, type, &it);
    it.ext = is_kind(ext, FS_JSON_OBJECT) ? ext : NULL;
    return push(ev, out, &it);
}

/* The object a member is read from: a complex value, or a primitive's `_name` object. */
static const fs_json_node *object_of(const fs_fp_item *item)
{
    return item->kind == FS_FP_NODE ? item->node : item->ext;
}

/* Whether a member name is `_` followed by the `len` bytes of `name`. */
static bool is_ext_of(const fs_json_node *key, const char *name, size_t len)
{
    return key->len == len + 1 && key->text[0] == '_' && memcmp(key->text + 1, name, len) == 0;
}

/* The `_name` member of obj (NULL when absent, or when name is too long to have one looked up). */
static const fs_json_node *ext_member(const fs_json_node *obj, const char *name, size_t len)
{
    if (len + 1 >= 256)
        return NULL;
    const fs_json_node *key = obj + 1;
    for (uint32_t i = 0; i < obj->len; i++, key = fs_json_next(key + 1))
        if (is_ext_of(key, name, len))
            return key + 1;
    return NULL;
}

static fhirsync_code member(eval *ev, const char *name, const fs_fp_coll *input, bool at_root,
                            fs_fp_coll *out)
{
    size_t nlen = strlen(name);
    bool ext_named = nlen + 1 < 256; /* `_name` is looked up for names of up to 254 bytes */
    for (size_t i = 0; i < input->count; i++) {
        const fs_fp_item *item = &input->items[i];
        /* `Patient.name`: a type name that starts the path selects the resource itself */
        if (at_root && isupper((unsigned char)name[0]) && item->kind == FS_FP_NODE &&
            fs_streq(fs_json_member_str(item->node, "resourceType", 12), name)) {
            if (push(ev, out, item))
                return FHIRSYNC_E_NOMEM;
            continue;
        }
        const fs_json_node *obj = object_of(item);
        if (!obj)
            continue;
        /* the member and its `_name` sibling in one pass over the (few) members */
        const fs_json_node *value = NULL, *ext = NULL, *key = obj + 1;
        for (uint32_t k = 0; k < obj->len; k++, key = fs_json_next(key + 1)) {
            if (key->len == nlen && key->text[0] == name[0] && memcmp(key->text, name, nlen) == 0)
                value = key + 1;
            else if (ext_named && key->text[0] == '_' && is_ext_of(key, name, nlen))
                ext = key + 1;
        }
        if (value || ext) {
            if (push_member(ev, out, value, ext, NULL))
                return FHIRSYNC_E_NOMEM;
            continue;
        }
        /* a choice element: `value` is whichever of valueQuantity, valueString... is there */
        key = obj + 1;
        for (uint32_t k = 0; k < obj->len; k++, key = fs_json_next(key + 1)) {
            if (key->len <= nlen || memcmp(key->text, name, nlen) != 0 ||
                !isupper((unsigned char)key->text[nlen]))
                continue;
            const char *type = choice_type(key->text + nlen);
            if (!type)
                continue;
            if (push_member(ev, out, key + 1, ext_member(obj, key->text, key->len), type))
                return FHIRSYNC_E_NOMEM;
            break;
        }
    }
    return FHIRSYNC_OK;
}

/* ---- comparisons ----------------------------------------------------------------------------- */

static bool is_number(const fs_fp_item *it)
{
    return it->kind == FS_FP_INTEGER || it->kind == FS_FP_DECIMAL;
}

static long double number_of(const fs_fp_item *it)
{
    if (it->kind == FS_FP_INTEGER)
        return (long double)it->i;
    char buf[128];
    size_t n = it->len < sizeof buf - 1 ? it->len : sizeof buf - 1;
    memcpy(buf, it->s, n);
    buf[n] = '\0';
    return strtold(buf, NULL);
}

/* Digits after the decimal point of a decimal's text (0 for an integer). */
static int scale_of(const fs_fp_item *it)
{
    if (it->kind != FS_FP_DECIMAL)
        return 0;
    const char *dot = memchr(it->s, '.', it->len);
    if (!dot)
        return 0;
    int n = 0;
    for (const char *p = dot + 1; p < it->s + it->len && isdigit((unsigned char)*p); p++)
        n++;
    return n;
}

static bool is_stringish(const fs_fp_item *it)
{
    return it->kind == FS_FP_STRING;
}

/* -1 unknown (different kinds), else 0/1. */
static int items_equal(const fs_fp_item *a, const fs_fp_item *b)
{
    if (is_number(a) && is_number(b))
        return number_of(a) == number_of(b);
    if (a->kind != b->kind)
        return is_stringish(a) || is_stringish(b) ? 0 : -1;
    switch (a->kind) {
    case FS_FP_BOOLEAN: return a->b == b->b;
    case FS_FP_STRING: return a->len == b->len && memcmp(a->s, b->s, a->len) == 0;
    case FS_FP_NODE: return fs_json_node_equal(a->node, b->node);
    case FS_FP_NULL: return fs_json_node_equal(a->ext, b->ext);
    default: return 0;
    }
}

/* Equivalence of strings: case and whitespace runs ignored. */
static bool strings_equivalent(const fs_fp_item *a, const fs_fp_item *b)
{
    size_t i = 0, j = 0;
    for (;;) {
        while (i < a->len && isspace((unsigned char)a->s[i]))
            i++;
        while (j < b->len && isspace((unsigned char)b->s[j]))
            j++;
        if (i == a->len || j == b->len)
            return i == a->len && j == b->len;
        if (tolower((unsigned char)a->s[i]) != tolower((unsigned char)b->s[j]))
            return false;
        i++;
        j++;
    }
}

static bool items_equivalent(const fs_fp_item *a, const fs_fp_item *b)
{
    if (a->kind == FS_FP_STRING && b->kind == FS_FP_STRING)
        return strings_equivalent(a, b);
    if (is_number(a) && is_number(b)) {
        int s = scale_of(a) < scale_of(b) ? scale_of(a) : scale_of(b);
        long double m = powl(10.0L, s);
        return roundl(number_of(a) * m) == roundl(number_of(b) * m);
    }
    return items_equal(a, b) == 1;
}

/* ---- decimals -------------------------------------------------------------------------------- */

static fhirsync_code push_decimal(eval *ev, fs_fp_coll *out, long double v, int scale)
{
    char buf[128];
    if (scale > 30)
        scale = 30;
    if (!isfinite(v) || fabsl(v) >= 1e30L)
        return fs_err(ev->err, FHIRSYNC_E_VIEW, "decimal out of range");
    snprintf(buf, sizeof buf, "%.*Lf", scale, v);
    if (strcmp(buf, "-0") == 0 || (buf[0] == '-' && strspn(buf + 1, "0.") == strlen(buf + 1)))
        memmove(buf, buf + 1, strlen(buf));
    return push_dec_text(ev, out, buf);
}

/* The quotient with up to 8 decimal places, trailing zeros dropped (1.5, not 1.50000000). */
static fhirsync_code push_quotient(eval *ev, fs_fp_coll *out, long double v)
{
    char buf[128];
    if (!isfinite(v) || fabsl(v) >= 1e30L)
        return fs_err(ev->err, FHIRSYNC_E_VIEW, "decimal out of range");
    snprintf(buf, sizeof buf, "%.8Lf", v);
    size_t n = strlen(buf);
    while (n > 0 && buf[n - 1] == '0')
        buf[--n] = '\0';
    if (n > 0 && buf[n - 1] == '.')
        buf[n++] = '0', buf[n] = '\0';
    return push_dec_text(ev, out, buf);
}

/* ---- operators ------------------------------------------------------------------------------- */

/* The single item of a collection: NULL when empty (the result is empty); an error for more. */
static fhirsync_code singleton(eval *ev, const fp_node *n, const fs_fp_coll *c,
                               const fs_fp_item **out)
{
    *out = NULL;
    if (c->count > 1)
        return fail_at(ev, n, "a single item expected, the collection has several");
    if (c->count == 1)
        *out = &c->items[0];
    return FHIRSYNC_OK;
}

/* A boolean operand of and/or/xor/implies/not: -1 empty, 0, 1. A single non-boolean item is
 * true (FHIRPath's singleton evaluation of collections). */
static fhirsync_code truth(eval *ev, const fp_node *n, const fs_fp_coll *c, int *out)
{
    const fs_fp_item *it;
    fhirsync_code rc = singleton(ev, n, c, &it);
    if (rc)
        return rc;
    *out = !it ? -1 : it->kind == FS_FP_BOOLEAN ? it->b : 1;
    return FHIRSYNC_OK;
}

static fhirsync_code logic(eval *ev, const fp_node *n, int a, int b, fs_fp_coll *out)
{
    int r = -1;
    switch (n->op) {
    case FP_OP_AND: r = (a == 0 || b == 0) ? 0 : (a == 1 && b == 1) ? 1 : -1; break;
    case FP_OP_OR: r = (a == 1 || b == 1) ? 1 : (a == 0 && b == 0) ? 0 : -1; break;
    case FP_OP_XOR: r = (a < 0 || b < 0) ? -1 : a != b; break;
    default: /* implies */ r = a == 0 ? 1 : a == 1 ? b : (b == 1 ? 1 : -1); break;
    }
    return r < 0 ? FHIRSYNC_OK : push_bool(ev, out, r == 1);
}

static fhirsync_code equality(eval *ev, const fp_node *n, const fs_fp_coll *l, const fs_fp_coll *r,
                              fs_fp_coll *out)
{
    bool equiv = n->op == FP_OP_EQUIV || n->op == FP_OP_NEQUIV;
    bool negate = n->op == FP_OP_NE || n->op == FP_OP_NEQUIV;
    if (!equiv && (l->count == 0 || r->count == 0))
        return FHIRSYNC_OK;
    bool eq = l->count == r->count;
    for (size_t i = 0; eq && i < l->count; i++) {
        if (equiv) {
            bool found = false;
            for (size_t j = 0; j < r->count && !found; j++)
                found = items_equivalent(&l->items[i], &r->items[j]);
            eq = found;
        } else {
            int e = items_equal(&l->items[i], &r->items[i]);
            if (e < 0)
                return FHIRSYNC_OK;
            eq = e == 1;
        }
    }
    return push_bool(ev, out, eq != negate);
}

static fhirsync_code compare(eval *ev, const fp_node *n, const fs_fp_item *a, const fs_fp_item *b,
                             fs_fp_coll *out)
{
    int c;
    if (is_number(a) && is_number(b)) {
        long double x = number_of(a), y = number_of(b);
        c = x < y ? -1 : x > y;
    } else if (a->kind == FS_FP_STRING && b->kind == FS_FP_STRING) {
        size_t m = a->len < b->len ? a->len : b->len;
        c = memcmp(a->s, b->s, m);
        if (c == 0)
            c = a->len < b->len ? -1 : a->len > b->len;
    } else {
        return fail_at(ev, n, "values of these types cannot be compared");
    }
    bool r = n->op == FP_OP_LT   ? c < 0
             : n->op == FP_OP_LE ? c <= 0
             : n->op == FP_OP_GT ? c > 0
                                 : c >= 0;
    return push_bool(ev, out, r);
}

static fhirsync_code arithmetic(eval *ev, const fp_node *n, const fs_fp_item *a,
                                const fs_fp_item *b, fs_fp_coll *out)
{
    if (n->op == FP_OP_ADD && a->kind == FS_FP_STRING && b->kind == FS_FP_STRING) {
        char *s = fs_fp_alloc(ev->env->arena, a->len + b->len + 1);
        if (!s)
            return oom(ev);
        memcpy(s, a->s, a->len);
        memcpy(s + a->len, b->s, b->len);
        fs_fp_item it = {.kind = FS_FP_STRING, .s = s, .len = a->len + b->len};
        return push(ev, out, &it);
    }
    if (!is_number(a) || !is_number(b))
        return fail_at(ev, n, "arithmetic on values that are not numbers");
    if (a->kind == FS_FP_INTEGER && b->kind == FS_FP_INTEGER && n->op != FP_OP_DIV) {
        int64_t x = a->i, y = b->i, r;
        bool overflow = false;
        switch (n->op) {
        case FP_OP_ADD: overflow = __builtin_add_overflow(x, y, &r); break;
        case FP_OP_SUB: overflow = __builtin_sub_overflow(x, y, &r); break;
        case FP_OP_MUL: overflow = __builtin_mul_overflow(x, y, &r); break;
        default: /* div, mod */
            if (y == 0 || (x == INT64_MIN && y == -1))
                return FHIRSYNC_OK;
            r = n->op == FP_OP_IDIV ? x / y : x % y;
        }
        if (overflow)
            return fail_at(ev, n, "integer overflow");
        return push_int(ev, out, r);
    }
    long double x = number_of(a), y = number_of(b);
    int sa = scale_of(a), sb = scale_of(b);
    switch (n->op) {
    case FP_OP_ADD: return push_decimal(ev, out, x + y, sa > sb ? sa : sb);
    case FP_OP_SUB: return push_decimal(ev, out, x - y, sa > sb ? sa : sb);
    case FP_OP_MUL: return push_decimal(ev, out, x * y, sa + sb);
    case FP_OP_DIV: return y == 0 ? FHIRSYNC_OK : push_quotient(ev, out, x / y);
    case FP_OP_IDIV: return y == 0 ? FHIRSYNC_OK : push_int(ev, out, (int64_t)truncl(x / y));
    default: return y == 0 ? FHIRSYNC_OK : push_decimal(ev, out, fmodl(x, y), sa > sb ? sa : sb);
    }
}

/* The text of a primitive for toString, join and &: false for a complex value. */
static bool text_of(eval *ev, const fs_fp_item *it, const char **s, size_t *len)
{
    switch (it->kind) {
    case FS_FP_STRING:
    case FS_FP_DECIMAL:
        *s = it->s;
        *len = it->len;
        return true;
    case FS_FP_BOOLEAN:
        *s = it->b ? "true" : "false";
        *len = strlen(*s);
        return true;
    case FS_FP_INTEGER: {
        char *buf = fs_fp_alloc(ev->env->arena, 24);
        if (!buf)
            return false;
        *len = (size_t)snprintf(buf, 24, "%lld", (long long)it->i);
        *s = buf;
        return true;
    }
    default: return false;
    }
}

static fhirsync_code binary_op(eval *ev, const fp_node *n, const fs_fp_coll *input, const frame *fr,
                               fs_fp_coll *out)
{
    fs_fp_coll l = {0}, r = {0};
    fhirsync_code rc = eval_node(ev, n->args[0], input, fr, &l);
    if (rc)
        return rc;
    /* short cuts that skip the right side's errors where FHIRPath allows it */
    if (n->op == FP_OP_AND || n->op == FP_OP_OR || n->op == FP_OP_IMPLIES) {
        int a;
        if ((rc = truth(ev, n, &l, &a)))
            return rc;
        if ((n->op == FP_OP_AND && a == 0) || (n->op == FP_OP_OR && a == 1))
            return push_bool(ev, out, a == 1);
        if (n->op == FP_OP_IMPLIES && a == 0)
            return push_bool(ev, out, true);
    }
    if ((rc = eval_node(ev, n->args[1], input, fr, &r)))
        return rc;
    switch (n->op) {
    case FP_OP_AND:
    case FP_OP_OR:
    case FP_OP_XOR:
    case FP_OP_IMPLIES: {
        int a, b;
        if ((rc = truth(ev, n, &l, &a)) || (rc = truth(ev, n, &r, &b)))
            return rc;
        return logic(ev, n, a, b, out);
    }
    case FP_OP_EQ:
    case FP_OP_NE:
    case FP_OP_EQUIV:
    case FP_OP_NEQUIV: return equality(ev, n, &l, &r, out);
    case FP_OP_UNION:
        for (size_t k = 0; k < 2; k++) {
            const fs_fp_coll *c = k ? &r : &l;
            for (size_t i = 0; i < c->count; i++) {
                bool dup = false;
                for (size_t j = 0; j < out->count && !dup; j++)
                    dup = items_equal(&out->items[j], &c->items[i]) == 1;
                if (!dup && (rc = push(ev, out, &c->items[i])))
                    return rc;
            }
        }
        return FHIRSYNC_OK;
    case FP_OP_IN:
    case FP_OP_CONTAINS: {
        const fs_fp_coll *one = n->op == FP_OP_IN ? &l : &r, *many = n->op == FP_OP_IN ? &r : &l;
        const fs_fp_item *it;
        if ((rc = singleton(ev, n, one, &it)) || !it)
            return rc;
        bool found = false;
        for (size_t i = 0; i < many->count && !found; i++)
            found = items_equal(it, &many->items[i]) == 1;
        return push_bool(ev, out, found);
    }
    case FP_OP_CONCAT: {
        const fs_fp_item *a, *b;
        if ((rc = singleton(ev, n, &l, &a)) || (rc = singleton(ev, n, &r, &b)))
            return rc;
        const char *sa = "", *sb = "";
        size_t la = 0, lb = 0;
        if ((a && !text_of(ev, a, &sa, &la)) || (b && !text_of(ev, b, &sb, &lb)))
            return fail_at(ev, n, "'&' needs strings");
        char *s = fs_fp_alloc(ev->env->arena, la + lb + 1);
        if (!s)
            return oom(ev);
        memcpy(s, sa, la);
        memcpy(s + la, sb, lb);
        fs_fp_item it = {.kind = FS_FP_STRING, .s = s, .len = la + lb};
        return push(ev, out, &it);
    }
    default: {
        const fs_fp_item *a, *b;
        if ((rc = singleton(ev, n, &l, &a)) || (rc = singleton(ev, n, &r, &b)) || !a || !b)
            return rc;
        if (n->op >= FP_OP_LT && n->op <= FP_OP_GE)
            return compare(ev, n, a, b, out);
        return arithmetic(ev, n, a, b, out);
    }
    }
}

/* ---- types ----------------------------------------------------------------------------------- */

static bool type_matches(const fs_fp_item *it, const char *type)
{
    const char *t = fs_fp_item_type(it);
    if (!t)
        return false;
    if (strcmp(t, type) == 0)
        return true;
    /* System types as FHIRPath spells them (String, Integer, Decimal, Boolean) */
    if (!it->type && it->kind != FS_FP_NODE && tolower((unsigned char)type[0]) == t[0] &&
        strcmp(type + 1, t + 1) == 0)
        return true;
    return false;
}

/* ---- boundaries (experimental) --------------------------------------------------------------- */

static bool all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

static int days_in_month(int year, int month)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (month == 2 && ((year % 4 == 0 && year % 100 != 0) || year % 400 == 0))
        return 29;
    return days[month - 1];
}

/* The date part "YYYY[-MM[-DD]]" of s completed to a full date; false if it is not one. */
static bool date_boundary(const char *s, size_t n, bool high, char out[11])
{
    if (n < 4 || !all_digits(s, 4) || (n != 4 && n != 7 && n != 10))
        return false;
    int year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    int month = high ? 12 : 1, day = 1;
    if (n >= 7) {
        if (s[4] != '-' || !all_digits(s + 5, 2))
            return false;
        month = (s[5] - '0') * 10 + (s[6] - '0');
    }
    if (month < 1 || month > 12)
        return false;
    if (n == 10) {
        if (s[7] != '-' || !all_digits(s + 8, 2))
            return false;
        day = (s[8] - '0') * 10 + (s[9] - '0');
    } else if (high) {
        day = days_in_month(year, month);
    }
    if (day < 1 || day > 31)
        return false;
    snprintf(out, 11, "%04u-%02u-%02u", (unsigned)year % 10000u, (unsigned)month % 100u,
             (unsigned)day % 100u);
    return true;
}

/* "HH[:MM[:SS[.fff]]]" completed to HH:MM:SS.fff. */
static bool time_boundary(const char *s, size_t n, bool high, char *out, size_t cap)
{
    if (n < 2 || !all_digits(s, 2))
        return false;
    char hh[3] = {s[0], s[1], 0}, mm[3] = "00", ss[3] = "00";
    const char *ms = high ? "999" : "000";
    if (high) {
        mm[0] = '5', mm[1] = '9';
        ss[0] = '5', ss[1] = '9';
    }
    if (n >= 5) {
        if (s[2] != ':' || !all_digits(s + 3, 2))
            return false;
        mm[0] = s[3], mm[1] = s[4];
        if (!high || n >= 8)
            ss[0] = '0', ss[1] = '0';
    }
    if (n >= 8) {
        if (s[5] != ':' || !all_digits(s + 6, 2))
            return false;
        ss[0] = s[6], ss[1] = s[7];
    }
    char frac[4];
    if (n > 8) {
        if (s[8] != '.' || n > 12 || !all_digits(s + 9, n - 9))
            return false;
        size_t k = n - 9;
        memcpy(frac, s + 9, k);
        for (; k < 3; k++)
            frac[k] = high ? '9' : '0';
        frac[3] = '\0';
        ms = frac;
    }
    snprintf(out, cap, "%s:%s:%s.%s", hh, mm, ss, ms);
    return true;
}

static fhirsync_code boundary(eval *ev, const fs_fp_item *it, bool high, fs_fp_coll *out)
{
    char buf[64];
    if (is_number(it)) {
        int scale = scale_of(it);
        long double half = 0.5L / powl(10.0L, scale);
        long double v = number_of(it);
        return push_decimal(ev, out, high ? v + half : v - half, scale + 1);
    }
    if (it->kind != FS_FP_STRING)
        return FHIRSYNC_OK;
    const char *s = it->s, *type = it->type;
    if (type && strcmp(type, "string") == 0)
        type = NULL; /* a literal or an element of unknown type: the text decides */
    size_t n = it->len;
    bool time_like = type ? strcmp(type, "time") == 0 : (n >= 5 && s[2] == ':' && all_digits(s, 2));
    if (time_like) {
        if (!time_boundary(s, n, high, buf, sizeof buf))
            return FHIRSYNC_OK;
        return push_str(ev, out, buf, strlen(buf), "time");
    }
    const char *t = memchr(s, 'T', n);
    bool datetime = t || (type && (strcmp(type, "dateTime") == 0 || strcmp(type, "instant") == 0));
    char date[11];
    if (!date_boundary(s, t ? (size_t)(t - s) : n, high, date))
        return FHIRSYNC_OK;
    if (!datetime)
        return push_str(ev, out, date, 10, "date");
    char clock[32];
    const char *zone = high ? "-12:00" : "+14:00";
    char zbuf[8];
    if (t) {
        const char *rest = t + 1, *end = s + n;
        const char *z = rest;
        while (z < end && *z != 'Z' && *z != '+' && *z != '-')
            z++;
        if (z < end) {
            size_t zl = (size_t)(end - z);
            if (zl >= sizeof zbuf)
                return FHIRSYNC_OK;
            memcpy(zbuf, z, zl);
            zbuf[zl] = '\0';
            zone = zbuf;
        }
        if (!time_boundary(rest, (size_t)(z - rest), high, clock, sizeof clock))
            return FHIRSYNC_OK;
    } else {
        snprintf(clock, sizeof clock, "%s", high ? "23:59:59.999" : "00:00:00.000");
    }
    snprintf(buf, sizeof buf, "%sT%s%s", date, clock, zone);
    return push_str(ev, out, buf, strlen(buf), "dateTime");
}

/* ---- functions ------------------------------------------------------------------------------- */

/* The reference's key: the id after the type (`Patient/p1`, `http://x/Patient/p1/_history/2`),
 * when the type is `type` (or any type when NULL). */
static bool reference_key(const char *ref, const char *type, const char **id, size_t *id_len)
{
    size_t n = strlen(ref);
    const char *hist = strstr(ref, "/_history/");
    if (hist)
        n = (size_t)(hist - ref);
    const char *slash = NULL;
    for (size_t i = n; i-- > 0;)
        if (ref[i] == '/') {
            slash = ref + i;
            break;
        }
    if (!slash || slash == ref || (size_t)(slash - ref) + 1 >= n)
        return false;
    const char *tstart = slash;
    while (tstart > ref && tstart[-1] != '/')
        tstart--;
    size_t tlen = (size_t)(slash - tstart);
    if (type && (strlen(type) != tlen || strncmp(tstart, type, tlen) != 0))
        return false;
    *id = slash + 1;
    *id_len = n - (size_t)(slash + 1 - ref);
    return true;
}

/* Argument k of a function, evaluated once: empty (NULL) or one item of `kind`. */
static fhirsync_code arg_of_kind(eval *ev, const fp_node *n, size_t k, const frame *fr,
                                 fs_fp_kind kind, const fs_fp_item **out)
{
    fs_fp_coll c = {0};
    fhirsync_code rc = eval_node(ev, n->args[k], fr->this_coll, fr, &c);
    if (rc || (rc = singleton(ev, n, &c, out)))
        return rc;
    if (*out && (*out)->kind != kind)
        return fail_at(ev, n,
                       kind == FS_FP_STRING ? "a string argument expected"
                                            : "an integer argument expected");
    return FHIRSYNC_OK;
}

static fhirsync_code string_arg(eval *ev, const fp_node *n, size_t k, const frame *fr,
                                const fs_fp_item **out)
{
    return arg_of_kind(ev, n, k, fr, FS_FP_STRING, out);
}

static fhirsync_code int_arg(eval *ev, const fp_node *n, size_t k, const frame *fr,
                             const fs_fp_item **out)
{
    return arg_of_kind(ev, n, k, fr, FS_FP_INTEGER, out);
}

/* Evaluate a lambda argument over one item. */
static fhirsync_code lambda(eval *ev, const fp_node *arg, const fs_fp_item *item, size_t index,
                            fs_fp_coll *out)
{
    fs_fp_coll one = {.items = (fs_fp_item *)item, .count = 1, .cap = 1};
    frame fr = {.this_coll = &one, .index = (int64_t)index};
    *out = (fs_fp_coll){0};
    return eval_node(ev, arg, &one, &fr, out);
}

static fhirsync_code string_fn(eval *ev, const fp_node *n, const fs_fp_item *it, const frame *fr,
                               fs_fp_coll *out)
{
    const fs_fp_item *a = NULL, *b = NULL;
    fhirsync_code rc;
    if (it->kind != FS_FP_STRING)
        return fail_at(ev, n, "a string function applied to a value that is not a string");
    switch (n->fn->fn) {
    case FN_STARTS_WITH:
    case FN_ENDS_WITH:
    case FN_CONTAINS:
        if ((rc = string_arg(ev, n, 0, fr, &a)) || !a)
            return rc;
        if (a->len > it->len)
            return push_bool(ev, out, false);
        if (n->fn->fn == FN_STARTS_WITH)
            return push_bool(ev, out, memcmp(it->s, a->s, a->len) == 0);
        if (n->fn->fn == FN_ENDS_WITH)
            return push_bool(ev, out, memcmp(it->s + it->len - a->len, a->s, a->len) == 0);
        for (size_t i = 0; i + a->len <= it->len; i++)
            if (memcmp(it->s + i, a->s, a->len) == 0)
                return push_bool(ev, out, true);
        return push_bool(ev, out, false);
    case FN_SUBSTRING: {
        if ((rc = int_arg(ev, n, 0, fr, &a)) || !a)
            return rc;
        if (n->nargs > 1 && (rc = int_arg(ev, n, 1, fr, &b)))
            return rc;
        if (a->i < 0 || (size_t)a->i >= it->len)
            return FHIRSYNC_OK;
        size_t start = (size_t)a->i, len = it->len - start;
        if (b && b->i >= 0 && (size_t)b->i < len)
            len = (size_t)b->i;
        else if (b && b->i < 0)
            len = 0;
        return push_str(ev, out, it->s + start, len, NULL);
    }
    case FN_UPPER:
    case FN_LOWER: {
        if ((rc = push_str(ev, out, it->s, it->len, NULL)))
            return rc;
        char *s = (char *)out->items[out->count - 1].s;
        for (size_t i = 0; i < it->len; i++)
            s[i] = (char)(n->fn->fn == FN_UPPER ? toupper((unsigned char)s[i])
                                                : tolower((unsigned char)s[i]));
        return FHIRSYNC_OK;
    }
    case FN_REPLACE: {
        if ((rc = string_arg(ev, n, 0, fr, &a)) || (rc = string_arg(ev, n, 1, fr, &b)) || !a || !b)
            return rc;
        fs_buf buf;
        fs_buf_init(&buf);
        bool ok = true;
        for (size_t i = 0; ok && i <= it->len;) {
            if (a->len == 0) {
                ok = fs_buf_append(&buf, b->s, b->len) &&
                     (i == it->len || fs_buf_append(&buf, it->s + i, 1));
                i++;
            } else if (i + a->len <= it->len && memcmp(it->s + i, a->s, a->len) == 0) {
                ok = fs_buf_append(&buf, b->s, b->len);
                i += a->len;
            } else {
                ok = i == it->len || fs_buf_append(&buf, it->s + i, 1);
                i++;
            }
        }
        rc = ok ? push_str(ev, out, buf.data ? buf.data : "", buf.len, NULL) : oom(ev);
        fs_buf_free(&buf);
        return rc;
    }
    default: /* length */ return push_int(ev, out, (int64_t)it->len);
    }
}

static fhirsync_code call(eval *ev, const fp_node *n, const fs_fp_coll *in, const frame *fr,
                          fs_fp_coll *out)
{
    fhirsync_code rc = FHIRSYNC_OK;
    fs_fp_coll tmp;
    const fs_fp_item *it = NULL;
    switch (n->fn->fn) {
    case FN_WHERE:
    case FN_SELECT:
    case FN_ALL:
    case FN_EXISTS:
        if (n->fn->fn == FN_EXISTS && n->nargs == 0)
            return push_bool(ev, out, in->count > 0);
        for (size_t i = 0; i < in->count; i++) {
            if ((rc = lambda(ev, n->args[0], &in->items[i], i, &tmp)))
                return rc;
            if (n->fn->fn == FN_SELECT) {
                for (size_t k = 0; k < tmp.count; k++)
                    if ((rc = push(ev, out, &tmp.items[k])))
                        return rc;
                continue;
            }
            int t;
            if ((rc = truth(ev, n, &tmp, &t)))
                return rc;
            if (tmp.count == 1 && tmp.items[0].kind != FS_FP_BOOLEAN)
                return fail_at(ev, n, "the criteria is not a boolean");
            if (n->fn->fn == FN_WHERE && t == 1 && (rc = push(ev, out, &in->items[i])))
                return rc;
            if (n->fn->fn == FN_EXISTS && t == 1)
                return push_bool(ev, out, true);
            if (n->fn->fn == FN_ALL && t != 1)
                return push_bool(ev, out, false);
        }
        if (n->fn->fn == FN_EXISTS)
            return push_bool(ev, out, false);
        if (n->fn->fn == FN_ALL)
            return push_bool(ev, out, true);
        return FHIRSYNC_OK;
    case FN_EMPTY: return push_bool(ev, out, in->count == 0);
    case FN_COUNT: return push_int(ev, out, (int64_t)in->count);
    case FN_FIRST: return in->count ? push(ev, out, &in->items[0]) : FHIRSYNC_OK;
    case FN_LAST: return in->count ? push(ev, out, &in->items[in->count - 1]) : FHIRSYNC_OK;
    case FN_TAIL:
        for (size_t i = 1; i < in->count && !rc; i++)
            rc = push(ev, out, &in->items[i]);
        return rc;
    case FN_DISTINCT:
        for (size_t i = 0; i < in->count && !rc; i++) {
            bool dup = false;
            for (size_t j = 0; j < out->count && !dup; j++)
                dup = items_equal(&out->items[j], &in->items[i]) == 1;
            if (!dup)
                rc = push(ev, out, &in->items[i]);
        }
        return rc;
    case FN_ALL_TRUE:
    case FN_ANY_TRUE: {
        bool any = n->fn->fn == FN_ANY_TRUE;
        for (size_t i = 0; i < in->count; i++) {
            bool t = in->items[i].kind == FS_FP_BOOLEAN && in->items[i].b;
            if (any && t)
                return push_bool(ev, out, true);
            if (!any && !t)
                return push_bool(ev, out, false);
        }
        return push_bool(ev, out, !any);
    }
    case FN_NOT: {
        int t;
        if ((rc = truth(ev, n, in, &t)) || t < 0)
            return rc;
        return push_bool(ev, out, !t);
    }
    case FN_EXTENSION: {
        const fs_fp_item *url;
        if ((rc = string_arg(ev, n, 0, fr, &url)) || !url)
            return rc;
        for (size_t i = 0; i < in->count; i++) {
            const fs_json_node *exts = fs_json_member(object_of(&in->items[i]), "extension", 9);
            if (!is_kind(exts, FS_JSON_ARRAY))
                continue;
            const fs_json_node *e = exts + 1;
            for (uint32_t k = 0; k < exts->len; k++, e = fs_json_next(e)) {
                const fs_json_node *u = fs_json_member(e, "url", 3);
                if (is_kind(u, FS_JSON_STRING) && u->len == url->len &&
                    memcmp(u->text, url->s, url->len) == 0) {
                    fs_fp_item item;
                    fs_fp_item_of_node(e, "Extension", &item);
                    if ((rc = push(ev, out, &item)))
                        return rc;
                }
            }
        }
        return FHIRSYNC_OK;
    }
    case FN_OF_TYPE:
    case FN_AS:
    case FN_IS:
        if (n->fn->fn == FN_IS) {
            if ((rc = singleton(ev, n, in, &it)) || !it)
                return rc;
            return push_bool(ev, out, type_matches(it, n->args[0]->name));
        }
        for (size_t i = 0; i < in->count && !rc; i++)
            if (type_matches(&in->items[i], n->args[0]->name))
                rc = push(ev, out, &in->items[i]);
        return rc;
    case FN_JOIN: {
        const fs_fp_item *sep = NULL;
        if (n->nargs && (rc = string_arg(ev, n, 0, fr, &sep)))
            return rc;
        fs_buf buf;
        fs_buf_init(&buf);
        bool ok = true, first = true;
        for (size_t i = 0; ok && i < in->count; i++) {
            const char *s;
            size_t len;
            if (in->items[i].kind == FS_FP_NULL) /* a primitive with only extensions */
                continue;
            if (!text_of(ev, &in->items[i], &s, &len)) {
                fs_buf_free(&buf);
                return fail_at(ev, n, "join() of a value that is not a primitive");
            }
            ok = (first || !sep || fs_buf_append(&buf, sep->s, sep->len)) &&
                 fs_buf_append(&buf, s, len);
            first = false;
        }
        rc = ok ? push_str(ev, out, buf.data ? buf.data : "", buf.len, NULL) : oom(ev);
        fs_buf_free(&buf);
        return rc;
    }
    case FN_GET_RESOURCE_KEY:
        for (size_t i = 0; i < in->count && !rc; i++) {
            const char *id = in->items[i].kind == FS_FP_NODE
                                 ? fs_json_member_str(in->items[i].node, "id", 2)
                                 : NULL;
            if (id && fs_json_member_str(in->items[i].node, "resourceType", 12))
                rc = push_str(ev, out, id, strlen(id), "string");
        }
        return rc;
    case FN_GET_REFERENCE_KEY:
        for (size_t i = 0; i < in->count && !rc; i++) {
            const char *ref = in->items[i].kind == FS_FP_NODE
                                  ? fs_json_member_str(in->items[i].node, "reference", 9)
                                  : NULL;
            const char *id;
            size_t len;
            if (ref && reference_key(ref, n->nargs ? n->args[0]->name : NULL, &id, &len))
                rc = push_str(ev, out, id, len, "string");
        }
        return rc;
    case FN_IIF: {
        int t;
        fs_fp_coll crit = {0};
        if ((rc = eval_node(ev, n->args[0], in, fr, &crit)) || (rc = truth(ev, n, &crit, &t)))
            return rc;
        if (t == 1)
            return eval_node(ev, n->args[1], in, fr, out);
        return n->nargs > 2 ? eval_node(ev, n->args[2], in, fr, out) : FHIRSYNC_OK;
    }
    default: break;
    }
    /* the rest work on one item */
    if ((rc = singleton(ev, n, in, &it)) || !it)
        return rc;
    switch (n->fn->fn) {
    case FN_HAS_VALUE: return push_bool(ev, out, it->kind != FS_FP_NODE && it->kind != FS_FP_NULL);
    case FN_TO_STRING: {
        const char *s;
        size_t len;
        return text_of(ev, it, &s, &len) ? push_str(ev, out, s, len, NULL) : FHIRSYNC_OK;
    }
    case FN_TO_INTEGER:
        if (it->kind == FS_FP_INTEGER)
            return push(ev, out, it);
        if (it->kind == FS_FP_BOOLEAN)
            return push_int(ev, out, it->b);
        if (it->kind == FS_FP_STRING && it->len > 0 && it->len < 20) {
            char buf[24];
            memcpy(buf, it->s, it->len);
            buf[it->len] = '\0';
            char *end;
            errno = 0;
            long long v = strtoll(buf, &end, 10);
            if (!errno && !*end && !isspace((unsigned char)buf[0]))
                return push_int(ev, out, v);
        }
        return FHIRSYNC_OK;
    case FN_TO_DECIMAL:
        if (is_number(it)) {
            const char *s;
            size_t len;
            if (!text_of(ev, it, &s, &len))
                return oom(ev);
            rc = push_str(ev, out, s, len, NULL);
            if (!rc)
                out->items[out->count - 1].kind = FS_FP_DECIMAL;
            return rc;
        }
        if (it->kind == FS_FP_BOOLEAN)
            return push_dec_text(ev, out, it->b ? "1.0" : "0.0");
        if (it->kind == FS_FP_STRING && it->len > 0 && it->len < 64) {
            char buf[64];
            memcpy(buf, it->s, it->len);
            buf[it->len] = '\0';
            const unsigned char *p = (const unsigned char *)buf;
            if (*p == '-' || *p == '+')
                p++;
            size_t digits = strspn((const char *)p, "0123456789");
            if (digits &&
                (p[digits] == '\0' || (p[digits] == '.' && isdigit(p[digits + 1]) &&
                                       strspn((const char *)p + digits + 1, "0123456789") ==
                                           strlen((const char *)p + digits + 1)))) {
                rc = push_str(ev, out, buf, it->len, NULL);
                if (!rc)
                    out->items[out->count - 1].kind = FS_FP_DECIMAL;
                return rc;
            }
        }
        return FHIRSYNC_OK;
    case FN_LOW_BOUNDARY:
    case FN_HIGH_BOUNDARY: return boundary(ev, it, n->fn->fn == FN_HIGH_BOUNDARY, out);
    default: return string_fn(ev, n, it, fr, out);
    }
}

/* ---- the tree walk --------------------------------------------------------------------------- */

static fhirsync_code eval_node(eval *ev, const fp_node *n, const fs_fp_coll *input, const frame *fr,
                               fs_fp_coll *out)
{
    fhirsync_code rc = FHIRSYNC_OK;
    fs_fp_coll src = {0};
    *out = (fs_fp_coll){0};
    switch (n->kind) {
    case FP_LITERAL: return push(ev, out, &n->lit);
    case FP_EMPTY: return FHIRSYNC_OK;
    case FP_THIS:
        for (size_t i = 0; i < fr->this_coll->count && !rc; i++)
            rc = push(ev, out, &fr->this_coll->items[i]);
        return rc;
    case FP_INDEX: return push_int(ev, out, fr->index);
    case FP_VAR:
        if (n->var == FP_VAR_ROW_INDEX)
            return push_int(ev, out, ev->env->row_index);
        if (n->var == FP_VAR_RESOURCE)
            return ev->env->resource ? push(ev, out, ev->env->resource) : FHIRSYNC_OK;
        for (size_t i = 0; i < ev->env->vars[n->var].count && !rc; i++)
            rc = push(ev, out, &ev->env->vars[n->var].items[i]);
        return rc;
    case FP_MEMBER:
        if (n->src && (rc = eval_node(ev, n->src, input, fr, &src)))
            return rc;
        return member(ev, n->name, n->src ? &src : input, !n->src && input == fr->this_coll, out) ==
                       FHIRSYNC_OK
                   ? FHIRSYNC_OK
                   : oom(ev);
    case FP_CALL:
        if (n->src && (rc = eval_node(ev, n->src, input, fr, &src)))
            return rc;
        return call(ev, n, n->src ? &src : input, fr, out);
    case FP_INDEXER: {
        fs_fp_coll idx = {0};
        const fs_fp_item *at;
        if ((rc = eval_node(ev, n->src, input, fr, &src)) ||
            (rc = eval_node(ev, n->args[0], fr->this_coll, fr, &idx)) ||
            (rc = singleton(ev, n, &idx, &at)) || !at)
            return rc;
        if (at->kind != FS_FP_INTEGER)
            return fail_at(ev, n, "an index must be an integer");
        if (at->i >= 0 && (uint64_t)at->i < src.count)
            return push(ev, out, &src.items[at->i]);
        return FHIRSYNC_OK;
    }
    case FP_NEGATE: {
        const fs_fp_item *v;
        if ((rc = eval_node(ev, n->args[0], input, fr, &src)) ||
            (rc = singleton(ev, n, &src, &v)) || !v)
            return rc;
        if (v->kind == FS_FP_INTEGER)
            return v->i == INT64_MIN ? fail_at(ev, n, "integer overflow")
                                     : push_int(ev, out, -v->i);
        if (v->kind != FS_FP_DECIMAL)
            return fail_at(ev, n, "'-' applied to a value that is not a number");
        char *s = fs_fp_alloc(ev->env->arena, v->len + 2);
        if (!s)
            return oom(ev);
        if (v->s[0] == '-') {
            memcpy(s, v->s + 1, v->len - 1);
        } else {
            s[0] = '-';
            memcpy(s + 1, v->s, v->len);
        }
        return push_dec_text(ev, out, s);
    }
    case FP_TYPE_OP: {
        const fs_fp_item *v;
        if ((rc = eval_node(ev, n->args[0], input, fr, &src)) ||
            (rc = singleton(ev, n, &src, &v)) || !v)
            return rc;
        if (n->op == FP_OP_IS)
            return push_bool(ev, out, type_matches(v, n->name));
        return type_matches(v, n->name) ? push(ev, out, v) : FHIRSYNC_OK;
    }
    case FP_BINARY: return binary_op(ev, n, input, fr, out);
    }
    return FHIRSYNC_OK;
}

fhirsync_code fs_fp_eval(const fs_fp_expr *expr, const fs_fp_env *env, const fs_fp_coll *input,
                         fs_fp_coll *out, fhirsync_error *err)
{
    eval ev = {.env = env, .err = err, .text = expr->text ? expr->text : ""};
    frame fr = {.this_coll = input, .index = 0};
    return eval_node(&ev, expr->root, input, &fr, out);
}
