/* json/dom.c: the compact read-only JSON document (dom.h). One iterative pass over a copy of the
 * text with the lexer core (lex.h) appends a node per value to the tape; a container's node gets
 * its span and its count when it closes, an object's member names are checked for duplicates
 * then. Strings are decoded in the copy (a decoded string is never longer than its escaped form)
 * and NUL-terminated where their closing quote was; a number is NUL-terminated by overwriting the
 * byte after it, which the parser reads before it does. */
#include <stdio.h>
#include <string.h>

#include "json/dom.h"
#include "json/lex.h"

/* Objects with more members than this are checked for duplicate names with a hash table. */
#define SMALL_OBJECT 16

void fs_json_dom_init(fs_json_dom *dom)
{
    memset(dom, 0, sizeof *dom);
}

void fs_json_dom_free(fs_json_dom *dom)
{
    if (!dom)
        return;
    fs_free(dom->text);
    fs_free(dom->nodes);
    fs_free(dom->open);
    fs_free(dom->scratch);
    fs_json_dom_init(dom);
}

void fs_json_dom_trim(fs_json_dom *dom, size_t keep_bytes)
{
    size_t held = dom->text_cap + dom->nodes_cap * sizeof *dom->nodes +
                  dom->open_cap * sizeof *dom->open + dom->scratch_cap * sizeof *dom->scratch;
    if (held > keep_bytes)
        fs_json_dom_free(dom);
}

/* ---- reading --------------------------------------------------------------------------------- */

typedef struct reader {
    fs_json_dom *dom;
    const char *why;               /* a fault of our own (not the lexer's), or NULL */
    fs_lex_error error;            /* the lexer's fault */
    const unsigned char *error_at; /* where, in the copy */
    bool nomem;
} reader;

/* Room for one more node on the tape (grown when full); false on out of memory. */
static bool make_room(reader *r)
{
    fs_json_dom *d = r->dom;
    if (d->count < d->nodes_cap)
        return true;
    fs_json_node *grown = fs_array_grow(d->nodes, &d->nodes_cap, sizeof *grown, 64);
    if (!grown) {
        r->nomem = true;
        return false;
    }
    d->nodes = grown;
    return true;
}

/* A new node at the end of the tape (make_room first): its index. */
static inline uint32_t add_node(fs_json_dom *d, fs_json_kind kind, const unsigned char *text,
                                uint32_t len)
{
    fs_json_node *n = &d->nodes[d->count];
    n->text = (const char *)text;
    n->len = len;
    n->span = 1;
    n->kind = (uint8_t)kind;
    return (uint32_t)d->count++;
}

/* Decode the string between start and its closing quote `close` (lex.h checked it) in place and
 * NUL-terminate it: its decoded length. */
static uint32_t finish_string(unsigned char *start, unsigned char *close, unsigned seen)
{
    if (!(seen & FS_LEX_ESCAPED)) {
        *close = '\0';
        return (uint32_t)(close - start);
    }
    const unsigned char *in = start;
    unsigned char *out = start;
    while (in < close) {
        const unsigned char *plain = memchr(in, '\\', (size_t)(close - in));
        size_t run = plain ? (size_t)(plain - in) : (size_t)(close - in);
        memmove(out, in, run);
        out += run;
        in += run;
        if (in >= close)
            break;
        if (in[1] == 'u') {
            size_t n;
            uint32_t cp = fs_lex_unicode(in, &n);
            out += fs_lex_utf8_encode(cp, out);
            in += n;
        } else {
            *out++ = (unsigned char)fs_lex_escape_char(in[1]);
            in += 2;
        }
    }
    *out = '\0';
    return (uint32_t)(out - start);
}

static bool same_name(const fs_json_node *a, const fs_json_node *b)
{
    return a->len == b->len && memcmp(a->text, b->text, a->len) == 0;
}

/* Whether the object at `obj` (closed: its values' spans are known) names a member twice. */
static bool has_duplicate(reader *r, const fs_json_node *obj)
{
    fs_json_dom *d = r->dom;
    uint32_t members = obj->len;
    if (members < 2)
        return false;
    const fs_json_node *first = obj + 1;
    if (members <= SMALL_OBJECT) {
        for (const fs_json_node *a = first; a < obj + obj->span; a = fs_json_next(a + 1))
            for (const fs_json_node *b = fs_json_next(a + 1); b < obj + obj->span;
                 b = fs_json_next(b + 1))
                if (same_name(a, b))
                    return true;
        return false;
    }
    /* a hash table of the names' offsets from obj (+1; 0 is free), open addressing */
    size_t slots = 64;
    while (slots < (size_t)members * 2)
        slots *= 2;
    while (d->scratch_cap < slots) {
        uint32_t *grown = fs_array_grow(d->scratch, &d->scratch_cap, sizeof *grown, 64);
        if (!grown) {
            r->nomem = true;
            return false;
        }
        d->scratch = grown;
    }
    memset(d->scratch, 0, slots * sizeof *d->scratch);
    for (const fs_json_node *a = first; a < obj + obj->span; a = fs_json_next(a + 1)) {
        size_t at = (size_t)fs_fnv1a(FS_FNV1A_INIT, a->text, a->len) & (slots - 1);
        while (d->scratch[at]) {
            if (same_name(obj + d->scratch[at] - 1, a))
                return true;
            at = (at + 1) & (slots - 1);
        }
        d->scratch[at] = (uint32_t)(a - obj) + 1;
    }
    return false;
}

/* Read the value at p into the tape: NULL with the fault in r on failure, else the end of the
 * text (only whitespace may follow the value). The innermost open container is `top` (its index
 * on the tape; the others are on d->open), kept in locals: most of the work is per value. */
static const unsigned char *read_value(reader *r, unsigned char *p, unsigned char *end)
{
    fs_json_dom *d = r->dom;
    size_t depth = 0; /* containers open */
    uint32_t top = 0; /* the innermost one, when depth > 0 */
    bool top_object = false;
    unsigned char *q;
    int c; /* the byte at p after a value (-1: the end), read before a number's NUL went there */
    unsigned seen;
    const unsigned char *at = NULL; /* a fault's byte, from the lexer */

value:
    p = (unsigned char *)fs_lex_skip_ws(p, end);
    if (p >= end) {
        r->error = FS_LEX_E_END;
        goto bad;
    }
    if (depth >= FS_JSON_DOM_MAX_DEPTH) {
        r->error = FS_LEX_E_DEPTH;
        goto bad;
    }
    if (!make_room(r))
        return NULL;
    if (depth && !top_object)
        d->nodes[top].len++;
    switch (*p) {
    case '{':
    case '[': {
        bool object = *p == '{';
        uint32_t index = add_node(d, object ? FS_JSON_OBJECT : FS_JSON_ARRAY, NULL, 0);
        p = (unsigned char *)fs_lex_skip_ws(p + 1, end);
        if (p < end && *p == (object ? '}' : ']')) {
            p++;
            goto after;
        }
        if (depth == d->open_cap) {
            uint32_t *grown = fs_array_grow(d->open, &d->open_cap, sizeof *grown, 32);
            if (!grown) {
                r->nomem = true;
                return NULL;
            }
            d->open = grown;
        }
        d->open[depth++] = index;
        top = index;
        top_object = object;
        if (object)
            goto member;
        goto value;
    }
    case '"':
        seen = 0;
        if (!(q = (unsigned char *)fs_lex_string(p + 1, end, false, &seen, &r->error, &at)))
            goto bad;
        add_node(d, FS_JSON_STRING, p + 1, finish_string(p + 1, q - 1, seen));
        p = q;
        goto after;
    case 't':
    case 'f':
    case 'n':
        if (!(q = (unsigned char *)fs_lex_literal(p, end))) {
            r->error = FS_LEX_E_UNEXPECTED;
            goto bad;
        }
        add_node(d, *p == 't' ? FS_JSON_TRUE : *p == 'f' ? FS_JSON_FALSE : FS_JSON_NULL, NULL, 0);
        p = q;
        goto after;
    default:
        if (!(q = (unsigned char *)fs_lex_number(p, end, &r->error, &at)))
            goto bad;
        add_node(d, FS_JSON_NUMBER, p, (uint32_t)(q - p));
        /* the byte after the number becomes its NUL (the copy has one at its end) */
        c = q < end ? *q : -1;
        *q = '\0';
        p = q;
        if (c >= 0 && fs_lex_is_ws((unsigned)c)) {
            p++;
            goto after;
        }
        goto after_c;
    }

after:
    p = (unsigned char *)fs_lex_skip_ws(p, end);
    c = p < end ? *p : -1;
after_c:
    if (depth == 0)
        return p;
    if (c == ',') {
        p = (unsigned char *)fs_lex_skip_ws(p + 1, end);
        if (top_object)
            goto member;
        goto value;
    }
    if (c != (top_object ? '}' : ']')) {
        r->error = top_object ? FS_LEX_E_OBJECT : FS_LEX_E_ARRAY;
        goto bad;
    }
    p++;
    {
        fs_json_node *closed = &d->nodes[top];
        closed->span = (uint32_t)(d->count - top);
        if (top_object && has_duplicate(r, closed)) {
            r->why = "duplicate object key";
            goto bad;
        }
        if (r->nomem)
            return NULL;
    }
    if (--depth) {
        top = d->open[depth - 1];
        top_object = d->nodes[top].kind == FS_JSON_OBJECT;
    }
    goto after;

member:
    if (p >= end || *p != '"') {
        r->error = FS_LEX_E_NAME;
        goto bad;
    }
    seen = 0;
    if (!(q = (unsigned char *)fs_lex_string(p + 1, end, false, &seen, &r->error, &at)))
        goto bad;
    if (!make_room(r))
        return NULL;
    add_node(d, FS_JSON_STRING, p + 1, finish_string(p + 1, q - 1, seen));
    d->nodes[top].len++;
    p = (unsigned char *)fs_lex_skip_ws(q, end);
    if (p >= end || *p != ':') {
        r->error = FS_LEX_E_COLON;
        goto bad;
    }
    p++;
    goto value;

bad:
    r->error_at = at ? at : p;
    return NULL;
}

fhirsync_code fs_json_dom_parse(fs_json_dom *dom, const char *data, size_t len, const char *what,
                                const fs_json_node **root, fhirsync_error *err)
{
    *root = NULL;
    if (!data || len == 0)
        return fs_err(err, FHIRSYNC_E_JSON, "%s is empty, expected JSON", what);
    if (len >= UINT32_MAX)
        return fs_err(err, FHIRSYNC_E_JSON, "%s is too large (%zu bytes) to read", what, len);
    if (dom->text_cap < len + 1) {
        size_t cap = len + 1 > 1024 ? len + 1 : 1024;
        char *text = fs_malloc(cap);
        if (!text)
            return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory parsing %s", what);
        fs_free(dom->text);
        dom->text = text;
        dom->text_cap = cap;
    }
    memcpy(dom->text, data, len);
    dom->text[len] = '\0';
    dom->count = 0;
    reader r = {.dom = dom};
    unsigned char *start = (unsigned char *)dom->text, *end = start + len;
    const unsigned char *stop = read_value(&r, start, end);
    if (r.nomem)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory parsing %s", what);
    if (stop && stop != end) {
        r.why = "end of file expected";
        r.error_at = stop;
    }
    if (!stop || stop != end) {
        if (r.error == FS_LEX_E_NUL && !r.why)
            return fs_err(err, FHIRSYNC_E_JSON, "%s holds a string with \\u0000", what);
        /* the line, from the caller's text: the copy has NULs where strings and numbers end */
        size_t offset = (size_t)(r.error_at - start), line = 1;
        for (const char *nl = data; (nl = memchr(nl, '\n', (size_t)(data + offset - nl))); nl++)
            line++;
        return fs_err(err, FHIRSYNC_E_JSON, "%s is not valid JSON (line %zu: %s)", what, line,
                      r.why ? r.why : fs_lex_strerror(r.error));
    }
    if (dom->nodes[0].kind != FS_JSON_OBJECT)
        return fs_err(err, FHIRSYNC_E_JSON, "%s is JSON but not an object", what);
    *root = &dom->nodes[0];
    return FHIRSYNC_OK;
}

/* ---- reading a node -------------------------------------------------------------------------- */

const fs_json_node *fs_json_member(const fs_json_node *obj, const char *name, size_t len)
{
    if (!obj || obj->kind != FS_JSON_OBJECT)
        return NULL;
    const fs_json_node *key = obj + 1;
    for (uint32_t i = 0; i < obj->len; i++) {
        if (key->len == len && memcmp(key->text, name, len) == 0)
            return key + 1;
        key = fs_json_next(key + 1);
    }
    return NULL;
}

const char *fs_json_member_str(const fs_json_node *obj, const char *name, size_t len)
{
    const fs_json_node *v = fs_json_member(obj, name, len);
    return v && v->kind == FS_JSON_STRING ? v->text : NULL;
}

bool fs_json_node_equal(const fs_json_node *a, const fs_json_node *b)
{
    if (!a || !b || a->kind != b->kind)
        return false;
    if (a == b)
        return true;
    switch (a->kind) {
    case FS_JSON_NUMBER:
    case FS_JSON_STRING: return a->len == b->len && memcmp(a->text, b->text, a->len) == 0;
    case FS_JSON_ARRAY: {
        if (a->len != b->len)
            return false;
        const fs_json_node *x = a + 1, *y = b + 1;
        for (uint32_t i = 0; i < a->len; i++, x = fs_json_next(x), y = fs_json_next(y))
            if (!fs_json_node_equal(x, y))
                return false;
        return true;
    }
    case FS_JSON_OBJECT: {
        if (a->len != b->len)
            return false;
        const fs_json_node *key = a + 1;
        for (uint32_t i = 0; i < a->len; i++, key = fs_json_next(key + 1))
            if (!fs_json_node_equal(key + 1, fs_json_member(b, key->text, key->len)))
                return false;
        return true;
    }
    default: return true; /* null, true, false */
    }
}

/* ---- writing --------------------------------------------------------------------------------- */

bool fs_json_write_string(fs_buf *out, const char *s, size_t len)
{
    size_t mark = out->len;
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    if (!fs_buf_append(out, "\"", 1))
        return false;
    while (p < end) {
        const unsigned char *plain = fs_lex_plain_end(p, end);
        if (plain > p && !fs_buf_append(out, p, (size_t)(plain - p)))
            goto fail;
        p = plain;
        if (p >= end)
            break;
        unsigned c = *p;
        if (c >= 0x80) {
            size_t n = fs_lex_utf8_length(p, end);
            if (!n || !fs_buf_append(out, p, n))
                goto fail;
            p += n;
            continue;
        }
        char esc[8];
        switch (c) {
        case '"': memcpy(esc, "\\\"", 3); break;
        case '\\': memcpy(esc, "\\\\", 3); break;
        case '\b': memcpy(esc, "\\b", 3); break;
        case '\f': memcpy(esc, "\\f", 3); break;
        case '\n': memcpy(esc, "\\n", 3); break;
        case '\r': memcpy(esc, "\\r", 3); break;
        case '\t': memcpy(esc, "\\t", 3); break;
        default: snprintf(esc, sizeof esc, "\\u%04X", c); break;
        }
        if (!fs_buf_append_str(out, esc))
            goto fail;
        p++;
    }
    if (fs_buf_append(out, "\"", 1))
        return true;
fail:
    out->len = mark;
    if (out->data)
        out->data[mark] = '\0';
    return false;
}

bool fs_json_node_write(fs_buf *out, const fs_json_node *node)
{
    switch (node->kind) {
    case FS_JSON_NULL: return fs_buf_append(out, "null", 4);
    case FS_JSON_FALSE: return fs_buf_append(out, "false", 5);
    case FS_JSON_TRUE: return fs_buf_append(out, "true", 4);
    case FS_JSON_NUMBER: return fs_buf_append(out, node->text, node->len);
    case FS_JSON_STRING: return fs_json_write_string(out, node->text, node->len);
    case FS_JSON_ARRAY: {
        if (!fs_buf_append(out, "[", 1))
            return false;
        const fs_json_node *el = node + 1;
        for (uint32_t i = 0; i < node->len; i++, el = fs_json_next(el))
            if ((i && !fs_buf_append(out, ",", 1)) || !fs_json_node_write(out, el))
                return false;
        return fs_buf_append(out, "]", 1);
    }
    default: {
        if (!fs_buf_append(out, "{", 1))
            return false;
        const fs_json_node *key = node + 1;
        for (uint32_t i = 0; i < node->len; i++, key = fs_json_next(key + 1))
            if ((i && !fs_buf_append(out, ",", 1)) ||
                !fs_json_write_string(out, key->text, key->len) || !fs_buf_append(out, ":", 1) ||
                !fs_json_node_write(out, key + 1))
                return false;
        return fs_buf_append(out, "}", 1);
    }
    }
}
