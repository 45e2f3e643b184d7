/* fhir/span.c: the one check made on a search page. The search iterator hands each entry.resource
 * to the caller as the exact bytes the server sent, because re-serialising through a parser would
 * change FHIR decimals (1.50 is not 1.5 in FHIR: precision is part of the value) and key order.
 * So rather than parsing a page into a tree (which costs far more than fetching it) and then
 * finding the same bytes again, this scanner validates the whole text in one pass, as strictly as
 * jansson would (grammar, UTF-8, escapes, depth, no trailing bytes), and on the way records where
 * the entries' resources and the links are, plus the few values the iterator reads: resourceType,
 * total, each entry's resource type and search mode, each link's relation and url.
 *
 * Member names are checked for repeats in every object outside the entries' resources (the
 * Bundle, its entries, their search, its links and whatever those hold), so that nothing the
 * iterator reads is ambiguous. Inside a resource they are not: the resource is passed on
 * verbatim, as received, repeats included (see fs_bundle_scan_run in fhir_internal.h).
 *
 * The Bundle's own levels are walked by small dedicated functions; every other value (a resource,
 * an unknown member) by one iterative validator with a bit stack, so that nesting costs no
 * recursion. What a string, a number, a literal may hold is the lexer core's (json/lex.h, shared
 * with the NDJSON checker and the store's field scanner), which skips strings, most of the bytes,
 * 16 bytes at a time with SSE2 where the compiler targets it. No allocation except the scan's
 * arrays, kept from page to page. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fhir/fhir_internal.h"
#include "json/lex.h"

/* Objects with more members than this are checked for repeated names by sorting hashes rather
 * than by comparing every pair. */
#define PAIRWISE_NAMES 16

typedef struct scanner {
    const unsigned char *s;
    size_t len;
    size_t pos;
    unsigned depth; /* arrays and objects open around pos */
    fs_span_status status;
    size_t error_at;
    const char *error;
} scanner;

static bool fail(scanner *sc, fs_span_status status, const char *why)
{
    if (sc->status == FS_SPAN_OK) {
        sc->status = status;
        sc->error_at = sc->pos < sc->len ? sc->pos : sc->len;
        sc->error = why;
    }
    return false;
}

static bool syntax(scanner *sc, const char *why)
{
    return fail(sc, FS_SPAN_SYNTAX, why);
}

static void skip_ws(scanner *sc)
{
    const unsigned char *s = sc->s;
    size_t pos = sc->pos, len = sc->len;
    sc->pos = (size_t)(fs_lex_skip_ws(s + pos, s + len) - s);
}

static int peek(const scanner *sc)
{
    return sc->pos < sc->len ? sc->s[sc->pos] : -1;
}

/* ---- strings --------------------------------------------------------------------------------- */

/* The end of the string whose opening quote is at `pos`: the position just past its closing
 * quote, or 0 with *error_at and *why set. *escaped tells whether it holds a backslash. Forced
 * inline into the loops below: strings are most of a page. */
FS_LEX_HOT size_t string_end(const unsigned char *s, size_t len, size_t pos, bool *escaped,
                             size_t *error_at, const char **why)
{
    unsigned seen = 0;
    fs_lex_error err;
    const unsigned char *at;
    const unsigned char *end = fs_lex_string(s + pos + 1, s + len, false, &seen, &err, &at);
    if (!end) {
        *error_at = (size_t)(at - s);
        *why = fs_lex_strerror(err);
        return 0;
    }
    if (seen & FS_LEX_ESCAPED)
        *escaped = true;
    return (size_t)(end - s);
}

/* A string at its opening quote: validated, `content` set to the bytes between the quotes. */
static bool scan_string(scanner *sc, fs_span *content, bool *escaped)
{
    const char *why = NULL;
    size_t error_at = 0;
    *escaped = false;
    size_t end = string_end(sc->s, sc->len, sc->pos, escaped, &error_at, &why);
    if (!end) {
        sc->pos = error_at;
        return syntax(sc, why);
    }
    content->start = sc->pos + 1;
    content->len = end - 1 - content->start;
    sc->pos = end;
    return true;
}

/* ---- any value, iteratively ------------------------------------------------------------------ */

static bool is_digit(int c)
{
    return fs_lex_is_digit((unsigned)c);
}

static bool is_ws(int c)
{
    return fs_lex_is_ws((unsigned)c);
}

static bool escaped_content_is(const char *text, fs_span content, const char *want, size_t n);
static bool push_name(scanner *sc, fs_bundle_scan *out, fs_span name, bool escaped);
static bool push_base(scanner *sc, fs_bundle_scan *out);
static bool check_names(scanner *sc, fs_bundle_scan *out, size_t base, fs_span_where where,
                        size_t index, bool nested);

/* Where a value walked with name checks is. */
typedef struct checked_in {
    fs_bundle_scan *out;
    fs_span_where where;
    size_t index;
} checked_in;

/* Validate one value at sc->pos (whitespace skipped), however nested, without recursion: the
 * kind of each container opened here is one bit of a stack (1: object). The state lives in
 * locals, written back once.
 * With `check`, every object in the value must have distinct member names (the values outside
 * entry resources); the names go on check->out's stack, each object's start on its base stack.
 * With `type`, the value is a resource, whose names are not checked: the content of its own
 * "resourceType" member goes to *type when that is a string (*has_type), the last one counting
 * if the name is repeated. */
static bool skip_value_impl(scanner *sc, const checked_in *check, fs_span *type, bool *has_type)
{
    const unsigned char *s = sc->s;
    const size_t len = sc->len;
    size_t pos = sc->pos;
    const unsigned outer = sc->depth;
    unsigned depth = outer;
    uint8_t kinds[FS_SPAN_MAX_DEPTH / 8 + 1];
    const char *why = NULL;
    bool escaped, typed = false;
    size_t end;
    int c;

value:
    if (pos >= len) {
        why = fs_lex_strerror(FS_LEX_E_END);
        goto bad;
    }
    c = s[pos];
    switch (c) {
    case '"':
        escaped = false;
        end = string_end(s, len, pos, &escaped, &pos, &why);
        if (!end)
            goto bad;
        if (typed) {
            *type = (fs_span){pos + 1, end - pos - 2};
            *has_type = true;
        }
        pos = end;
        goto after;
    case '{':
    case '[': {
        if (depth >= FS_SPAN_MAX_DEPTH) {
            sc->pos = pos;
            sc->depth = depth;
            return fail(sc, FS_SPAN_DEPTH, fs_lex_strerror(FS_LEX_E_DEPTH));
        }
        typed = false; /* a resourceType that is an array or object is no type */
        fs_lex_kind_set(kinds, depth - outer, c == '{');
        depth++;
        pos++;
        while (pos < len && is_ws(s[pos]))
            pos++;
        if (pos < len && s[pos] == (c == '{' ? '}' : ']')) {
            pos++;
            depth--;
            goto after;
        }
        if (c != '{')
            goto value;
        if (check && !push_base(sc, check->out)) {
            sc->depth = depth;
            return false;
        }
        goto member;
    }
    case 't':
    case 'f':
    case 'n': {
        const unsigned char *end_literal = fs_lex_literal(s + pos, s + len);
        if (!end_literal) {
            why = fs_lex_strerror(FS_LEX_E_UNEXPECTED);
            goto bad;
        }
        pos = (size_t)(end_literal - s);
        goto after;
    }
    default: {
        fs_lex_error err;
        const unsigned char *at, *end_number = fs_lex_number(s + pos, s + len, &err, &at);
        if (!end_number) {
            pos = (size_t)(at - s);
            why = fs_lex_strerror(err);
            goto bad;
        }
        pos = (size_t)(end_number - s);
        goto after;
    }
    }

after:
    /* after a value: close containers, or go on to the next element or member */
    typed = false;
    if (depth == outer) {
        sc->pos = pos;
        return true;
    }
    while (pos < len && is_ws(s[pos]))
        pos++;
    {
        bool object = fs_lex_kind_is_object(kinds, depth - outer - 1);
        c = pos < len ? s[pos] : -1;
        if (c == ',') {
            pos++;
            while (pos < len && is_ws(s[pos]))
                pos++;
            if (object)
                goto member;
            goto value;
        }
        if (c != (object ? '}' : ']')) {
            why = fs_lex_strerror(object ? FS_LEX_E_OBJECT : FS_LEX_E_ARRAY);
            goto bad;
        }
        pos++;
        depth--;
        if (object && check) {
            fs_bundle_scan *out = check->out;
            size_t base = out->bases[--out->base_count];
            sc->pos = pos;
            if (!check_names(sc, out, base, check->where, check->index, true)) {
                sc->depth = depth;
                return false;
            }
        }
        goto after;
    }

member:
    if (pos >= len || s[pos] != '"') {
        why = fs_lex_strerror(FS_LEX_E_NAME);
        goto bad;
    }
    escaped = false;
    end = string_end(s, len, pos, &escaped, &pos, &why);
    if (!end)
        goto bad;
    if (check && !push_name(sc, check->out, (fs_span){pos + 1, end - pos - 2}, escaped)) {
        sc->depth = depth;
        return false;
    }
    if (type && depth == outer + 1) {
        fs_span name = {pos + 1, end - pos - 2};
        typed = escaped ? escaped_content_is((const char *)s, name, "resourceType", 12)
                        : name.len == 12 && memcmp(s + name.start, "resourceType", 12) == 0;
        if (typed)
            *has_type = false; /* until the value proves to be a string */
    }
    pos = end;
    while (pos < len && is_ws(s[pos]))
        pos++;
    if (pos >= len || s[pos] != ':') {
        why = fs_lex_strerror(FS_LEX_E_COLON);
        goto bad;
    }
    pos++;
    while (pos < len && is_ws(s[pos]))
        pos++;
    goto value;

bad:
    sc->pos = pos;
    sc->depth = depth;
    return syntax(sc, why);
}

/* Any value, outside entry resources: names checked (`where`, `index` name the place). */
static bool skip_checked(scanner *sc, fs_bundle_scan *out, fs_span_where where, size_t index)
{
    checked_in check = {out, where, index};
    return skip_value_impl(sc, &check, NULL, NULL);
}

/* Any value, no name checks: a resource that is no object, and fs_json_span_value. */
static bool skip_value(scanner *sc)
{
    uint8_t kinds[FS_SPAN_MAX_DEPTH / 8 + 1];
    fs_lex_skip sk = {.max_open = FS_SPAN_MAX_DEPTH - sc->depth, .kinds = kinds};
    const unsigned char *end = fs_lex_skip_value(sc->s + sc->pos, sc->s + sc->len, &sk);
    if (end) {
        sc->pos = (size_t)(end - sc->s);
        return true;
    }
    sc->pos = (size_t)(sk.error_at - sc->s);
    if (sk.error == FS_LEX_E_DEPTH)
        return fail(sc, FS_SPAN_DEPTH, fs_lex_strerror(FS_LEX_E_DEPTH));
    return syntax(sc, fs_lex_strerror(sk.error));
}

/* ---- member names ---------------------------------------------------------------------------- */

/* Reads the characters of a validated string content as UTF-8 bytes, escapes decoded. */
typedef struct decoder {
    const unsigned char *p, *end;
    unsigned char pending[4];
    unsigned npending, next;
} decoder;

static void decoder_init(decoder *d, const char *text, fs_span content)
{
    d->p = (const unsigned char *)text + content.start;
    d->end = d->p + content.len;
    d->npending = d->next = 0;
}

/* The next byte, or -1 at the end. */
static int decoder_byte(decoder *d)
{
    if (d->next < d->npending)
        return d->pending[d->next++];
    if (d->p >= d->end)
        return -1;
    if (*d->p != '\\')
        return *d->p++;
    unsigned char e = d->p[1];
    d->p += 2;
    if (e != 'u')
        return fs_lex_escape_char(e);
    size_t len;
    uint32_t cp = fs_lex_unicode(d->p - 2, &len);
    d->p += len - 2;
    if (cp < 0x80)
        return (int)cp;
    d->npending = (unsigned)fs_lex_utf8_encode(cp, d->pending);
    d->next = 1;
    return d->pending[0];
}

static bool has_escape(const char *text, fs_span content)
{
    return content.len && memchr(text + content.start, '\\', content.len) != NULL;
}

/* Whether an escaped string content decodes to `want` (n bytes). */
static bool escaped_content_is(const char *text, fs_span content, const char *want, size_t n)
{
    if (content.len <= n) /* an escape is longer than what it stands for */
        return false;
    decoder d;
    decoder_init(&d, text, content);
    for (size_t i = 0;; i++) {
        int c = decoder_byte(&d);
        if (c < 0 || i == n)
            return c < 0 && i == n;
        if (c != (unsigned char)want[i])
            return false;
    }
}

/* Whether a validated string content decodes to `want` (n bytes); `escaped`: it holds escapes.
 * Inline: with `want` a literal, the plain case is a length test and a fixed-size compare. */
static inline bool content_is(const char *text, fs_span content, bool escaped, const char *want,
                              size_t n)
{
    if (!escaped)
        return content.len == n && memcmp(text + content.start, want, n) == 0;
    return escaped_content_is(text, content, want, n);
}

bool fs_span_string_equals(const char *text, fs_span content, const char *want)
{
    return content_is(text, content, has_escape(text, content), want, strlen(want));
}

char *fs_span_string_decode(const char *text, fs_span content)
{
    /* a decoded string is never longer than its escaped form */
    char *out = fs_malloc(content.len + 1);
    if (!out)
        return NULL;
    decoder d;
    decoder_init(&d, text, content);
    size_t n = 0;
    for (int c; (c = decoder_byte(&d)) >= 0;)
        out[n++] = (char)c;
    out[n] = '\0';
    return out;
}

static bool names_equal(const char *text, const fs_span_name *a, const fs_span_name *b)
{
    if (!a->escaped && !b->escaped)
        return a->span.len == b->span.len &&
               memcmp(text + a->span.start, text + b->span.start, a->span.len) == 0;
    decoder da, db;
    decoder_init(&da, text, a->span);
    decoder_init(&db, text, b->span);
    for (;;) {
        int ca = decoder_byte(&da), cb = decoder_byte(&db);
        if (ca != cb)
            return false;
        if (ca < 0)
            return true;
    }
}

typedef struct hashed_name {
    uint64_t hash; /* FNV-1a of the decoded name */
    size_t index;
} hashed_name;

static int by_hash(const void *a, const void *b)
{
    const hashed_name *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Record a member name of the object being walked (its names start at out->names[base]). */
static bool push_name(scanner *sc, fs_bundle_scan *out, fs_span name, bool escaped)
{
    if (out->name_count == out->cap_names) {
        size_t cap = out->cap_names ? out->cap_names * 2 : 32;
        fs_span_name *grown = fs_realloc(out->names, cap * sizeof *grown);
        if (!grown)
            return fail(sc, FS_SPAN_NOMEM, "out of memory");
        out->names = grown;
        out->cap_names = cap;
    }
    out->names[out->name_count++] = (fs_span_name){name, escaped};
    return true;
}

/* Record where the names of an object that starts now begin. */
static bool push_base(scanner *sc, fs_bundle_scan *out)
{
    if (out->base_count == out->cap_bases) {
        size_t cap = out->cap_bases ? out->cap_bases * 2 : 16;
        size_t *grown = fs_realloc(out->bases, cap * sizeof *grown);
        if (!grown)
            return fail(sc, FS_SPAN_NOMEM, "out of memory");
        out->bases = grown;
        out->cap_bases = cap;
    }
    out->bases[out->base_count++] = out->name_count;
    return true;
}

/* At the end of an object: its names (from `base` on) must be distinct. Pops them. `nested`:
 * the object is inside the member values of `where` rather than `where` itself. */
static bool check_names(scanner *sc, fs_bundle_scan *out, size_t base, fs_span_where where,
                        size_t index, bool nested)
{
    const char *text = (const char *)sc->s;
    const fs_span_name *names = out->names + base;
    size_t n = out->name_count - base;
    size_t second = 0; /* of the repeats, the one that comes first in the text */
    bool repeated = false;
    out->name_count = base;
    if (n <= PAIRWISE_NAMES) {
        for (size_t j = 1; j < n && !repeated; j++)
            for (size_t i = 0; i < j && !repeated; i++)
                if (names_equal(text, &names[i], &names[j])) {
                    second = j;
                    repeated = true;
                }
    } else {
        /* sorting makes an object with a million members cost n log n, not n squared */
        hashed_name *h = fs_malloc(n * sizeof *h);
        if (!h)
            return fail(sc, FS_SPAN_NOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
            uint64_t hash = FS_FNV1A_INIT;
            decoder d;
            decoder_init(&d, text, names[i].span);
            for (int c; (c = decoder_byte(&d)) >= 0;)
                hash = fs_fnv1a_byte(hash, (unsigned char)c);
            h[i] = (hashed_name){hash, i};
        }
        qsort(h, n, sizeof *h, by_hash);
        for (size_t i = 0; i + 1 < n; i++)
            for (size_t j = i + 1; j < n && h[j].hash == h[i].hash; j++)
                if (names_equal(text, &names[h[i].index], &names[h[j].index])) {
                    size_t later = h[j].index; /* sorted by index within a hash */
                    if (!repeated || later < second)
                        second = later;
                    repeated = true;
                }
        fs_free(h);
    }
    if (!repeated)
        return true;
    out->duplicate = names[second].span;
    out->duplicate_in = where;
    out->duplicate_index = index;
    out->duplicate_nested = nested;
    sc->pos = names[second].span.start - 1; /* the name's opening quote */
    return fail(sc, FS_SPAN_DUPLICATE, "a repeated member name");
}

/* ---- the Bundle walk ------------------------------------------------------------------------- */

/* A member name as the walk sees it. */
typedef struct member {
    fs_span name;
    bool escaped;
} member;

static inline bool member_is(const scanner *sc, const member *m, const char *want, size_t n)
{
    return content_is((const char *)sc->s, m->name, m->escaped, want, n);
}

/* The object walk shared by the Bundle's levels: at '{', calls on_member with each name (the
 * value is next, whitespace skipped); on_member must consume the value. With `out`, the names
 * must be distinct (checked at the end: `where` and `index` say where, for the message). */
typedef bool (*member_fn)(scanner *sc, const member *m, void *ctx);

static bool walk_object(scanner *sc, member_fn on_member, void *ctx, fs_bundle_scan *out,
                        fs_span_where where, size_t index)
{
    if (sc->depth >= FS_SPAN_MAX_DEPTH)
        return fail(sc, FS_SPAN_DEPTH, fs_lex_strerror(FS_LEX_E_DEPTH));
    sc->depth++;
    sc->pos++;
    size_t base = out ? out->name_count : 0;
    skip_ws(sc);
    if (peek(sc) != '}') {
        for (;;) {
            if (peek(sc) != '"')
                return syntax(sc, fs_lex_strerror(FS_LEX_E_NAME));
            member m;
            if (!scan_string(sc, &m.name, &m.escaped))
                return false;
            if (out && !push_name(sc, out, m.name, m.escaped))
                return false;
            skip_ws(sc);
            if (peek(sc) != ':')
                return syntax(sc, fs_lex_strerror(FS_LEX_E_COLON));
            sc->pos++;
            skip_ws(sc);
            if (!on_member(sc, &m, ctx))
                return false;
            skip_ws(sc);
            int c = peek(sc);
            if (c == '}')
                break;
            if (c != ',')
                return syntax(sc, fs_lex_strerror(FS_LEX_E_OBJECT));
            sc->pos++;
            skip_ws(sc);
        }
    }
    sc->pos++;
    sc->depth--;
    return !out || check_names(sc, out, base, where, index, false);
}

/* The array walk: at '[', calls on_element at each element's first byte. */
typedef bool (*element_fn)(scanner *sc, size_t index, void *ctx);

static bool walk_array(scanner *sc, element_fn on_element, void *ctx)
{
    if (sc->depth >= FS_SPAN_MAX_DEPTH)
        return fail(sc, FS_SPAN_DEPTH, fs_lex_strerror(FS_LEX_E_DEPTH));
    sc->depth++;
    sc->pos++;
    skip_ws(sc);
    if (peek(sc) != ']') {
        for (size_t index = 0;; index++) {
            if (!on_element(sc, index, ctx))
                return false;
            skip_ws(sc);
            int c = peek(sc);
            if (c == ']')
                break;
            if (c != ',')
                return syntax(sc, fs_lex_strerror(FS_LEX_E_ARRAY));
            sc->pos++;
            skip_ws(sc);
        }
    }
    sc->pos++;
    sc->depth--;
    return true;
}

typedef struct walk {
    fs_bundle_scan *out;
    size_t index; /* the entry or link being walked */
} walk;

/* The value of a member the walk reads when it is a string: its content and whether it holds
 * escapes; any other value is validated, names checked, and left (*is_string false). */
static bool string_member(scanner *sc, const walk *w, fs_span_where where, fs_span *content,
                          bool *escaped, bool *is_string)
{
    *is_string = peek(sc) == '"';
    if (*is_string)
        return scan_string(sc, content, escaped);
    *content = (fs_span){0, 0};
    *escaped = false;
    return skip_checked(sc, w->out, where, w->index);
}

/* Whether the member's value is the string `want` (consumed either way). */
static bool string_member_is(scanner *sc, const walk *w, fs_span_where where, const char *want,
                             size_t n, bool *result)
{
    fs_span content;
    bool escaped, is_string;
    if (!string_member(sc, w, where, &content, &escaped, &is_string))
        return false;
    *result = is_string && content_is((const char *)sc->s, content, escaped, want, n);
    return true;
}

static bool search_member(scanner *sc, const member *m, void *ctx)
{
    walk *w = ctx;
    fs_bundle_entry *e = &w->out->entries[w->index];
    if (member_is(sc, m, "mode", 4))
        return string_member_is(sc, w, FS_IN_SEARCH, "outcome", 7, &e->outcome);
    return skip_checked(sc, w->out, FS_IN_SEARCH, w->index);
}

static bool entry_member(scanner *sc, const member *m, void *ctx)
{
    walk *w = ctx;
    fs_bundle_entry *e = &w->out->entries[w->index];
    if (member_is(sc, m, "resource", 8)) {
        e->resource.start = sc->pos;
        e->resource_object = peek(sc) == '{';
        /* names inside a resource are not checked: it is handed on verbatim */
        bool ok = e->resource_object ? skip_value_impl(sc, NULL, &e->resource_type, &e->has_type)
                                     : skip_value(sc);
        e->resource.len = sc->pos - e->resource.start;
        return ok;
    }
    if (member_is(sc, m, "search", 6) && peek(sc) == '{')
        return walk_object(sc, search_member, w, w->out, FS_IN_SEARCH, w->index);
    return skip_checked(sc, w->out, FS_IN_ENTRY, w->index);
}

static bool entry_element(scanner *sc, size_t index, void *ctx)
{
    walk *w = ctx;
    fs_bundle_scan *out = w->out;
    while (index >= out->cap_entries) { /* elements come one by one: one doubling at most */
        fs_bundle_entry *grown = fs_array_grow(out->entries, &out->cap_entries, sizeof *grown, 128);
        if (!grown)
            return fail(sc, FS_SPAN_NOMEM, "out of memory");
        out->entries = grown;
    }
    fs_bundle_entry *e = &out->entries[index];
    memset(e, 0, sizeof *e);
    out->entry_count = index + 1;
    w->index = index;
    e->is_object = peek(sc) == '{';
    if (!e->is_object)
        return skip_checked(sc, out, FS_IN_ENTRY, index);
    return walk_object(sc, entry_member, w, out, FS_IN_ENTRY, index);
}

static bool link_member(scanner *sc, const member *m, void *ctx)
{
    walk *w = ctx;
    fs_bundle_link *l = &w->out->links[w->index];
    if (member_is(sc, m, "relation", 8))
        return string_member_is(sc, w, FS_IN_LINK, "next", 4, &l->next);
    if (member_is(sc, m, "url", 3)) {
        bool escaped;
        return string_member(sc, w, FS_IN_LINK, &l->url, &escaped, &l->has_url);
    }
    return skip_checked(sc, w->out, FS_IN_LINK, w->index);
}

static bool link_element(scanner *sc, size_t index, void *ctx)
{
    walk *w = ctx;
    fs_bundle_scan *out = w->out;
    while (index >= out->cap_links) {
        fs_bundle_link *grown = fs_array_grow(out->links, &out->cap_links, sizeof *grown, 128);
        if (!grown)
            return fail(sc, FS_SPAN_NOMEM, "out of memory");
        out->links = grown;
    }
    fs_bundle_link *l = &out->links[index];
    memset(l, 0, sizeof *l);
    out->link_count = index + 1;
    w->index = index;
    l->value.start = sc->pos;
    l->is_object = peek(sc) == '{';
    bool ok = l->is_object ? walk_object(sc, link_member, w, out, FS_IN_LINK, index)
                           : skip_checked(sc, out, FS_IN_LINK, index);
    l->value.len = sc->pos - l->value.start;
    return ok;
}

/* A value of the Bundle whose bytes the caller reads afterwards. */
static bool record_value(scanner *sc, fs_bundle_scan *out, fs_span *value)
{
    value->start = sc->pos;
    bool ok = skip_checked(sc, out, FS_IN_BUNDLE, 0);
    value->len = sc->pos - value->start;
    return ok;
}

static bool bundle_member(scanner *sc, const member *m, void *ctx)
{
    walk *w = ctx;
    fs_bundle_scan *out = w->out;
    if (member_is(sc, m, "entry", 5)) {
        out->has_entry = true;
        out->entry_count = 0;
        out->entry_is_array = peek(sc) == '[';
        if (out->entry_is_array)
            return walk_array(sc, entry_element, w);
    } else if (member_is(sc, m, "link", 4)) {
        out->has_link = true;
        out->link_count = 0;
        out->link_is_array = peek(sc) == '[';
        if (out->link_is_array)
            return walk_array(sc, link_element, w);
    } else if (member_is(sc, m, "resourceType", 12)) {
        return record_value(sc, out, &out->resource_type);
    } else if (member_is(sc, m, "total", 5)) {
        return record_value(sc, out, &out->total);
    }
    return skip_checked(sc, out, FS_IN_BUNDLE, 0);
}

/* ---- entry points ---------------------------------------------------------------------------- */

void fs_bundle_scan_init(fs_bundle_scan *scan)
{
    memset(scan, 0, sizeof *scan);
}

void fs_bundle_scan_clear(fs_bundle_scan *scan)
{
    fs_free(scan->entries);
    fs_free(scan->links);
    fs_free(scan->names);
    fs_free(scan->bases);
    fs_bundle_scan_init(scan);
}

fs_span_status fs_bundle_scan_run(const char *text, size_t len, fs_bundle_scan *scan)
{
    /* keep the buffers, forget the previous page */
    scan->resource_type = scan->total = (fs_span){0, 0};
    scan->has_entry = scan->entry_is_array = scan->has_link = scan->link_is_array = false;
    scan->entry_count = scan->link_count = scan->name_count = scan->base_count = 0;
    scan->error_offset = 0;
    scan->error = NULL;
    scan->duplicate = (fs_span){0, 0};
    scan->duplicate_in = FS_IN_BUNDLE;
    scan->duplicate_index = 0;
    scan->duplicate_nested = false;
    scanner sc = {.s = (const unsigned char *)text, .len = text ? len : 0};
    walk w = {.out = scan};
    skip_ws(&sc);
    bool ok;
    if (peek(&sc) == '{') {
        ok = walk_object(&sc, bundle_member, &w, scan, FS_IN_BUNDLE, 0);
    } else if (peek(&sc) < 0) {
        ok = syntax(&sc, "no JSON value (an empty body)");
    } else {
        ok = skip_value(&sc);
        if (ok) {
            skip_ws(&sc);
            ok = sc.pos == sc.len
                     ? fail(&sc, FS_SPAN_NOT_OBJECT, "a JSON value that is not an object")
                     : syntax(&sc, "more bytes after the JSON value");
        }
    }
    if (ok) {
        skip_ws(&sc);
        if (sc.pos != sc.len)
            syntax(&sc, "more bytes after the JSON value");
    }
    if (sc.status != FS_SPAN_OK) {
        scan->error_offset = sc.error_at;
        scan->error = sc.error;
        scan->entry_count = scan->link_count = 0;
    }
    return sc.status;
}

fs_span_status fs_json_span_value(const char *text, size_t len, size_t *pos, fs_span *span)
{
    span->start = span->len = 0;
    if (!text || *pos > len)
        return FS_SPAN_SYNTAX;
    scanner sc = {.s = (const unsigned char *)text, .len = len, .pos = *pos};
    skip_ws(&sc);
    span->start = sc.pos;
    if (skip_value(&sc)) {
        span->len = sc.pos - span->start;
        *pos = sc.pos;
    } else {
        span->len = 0;
    }
    return sc.status;
}

bool fs_span_number_integer(const char *text, fs_span number, int64_t *out)
{
    const char *p = text + number.start;
    size_t n = number.len;
    if (n == 0 || !(p[0] == '-' || is_digit((unsigned char)p[0])))
        return false;
    bool negative = p[0] == '-';
    size_t i = negative;
    uint64_t v = 0;
    for (; i < n && is_digit((unsigned char)p[i]); i++) {
        unsigned d = (unsigned)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (i == n) {
        if (negative ? v > (uint64_t)INT64_MAX + 1 : v > (uint64_t)INT64_MAX)
            return false;
        *out = negative ? (int64_t)(0 - v) : (int64_t)v;
        return true;
    }
    /* a fraction or an exponent: a real, accepted when whole (jansson reads 2.0 as a real) */
    char copy[128];
    if (n >= sizeof copy)
        return false;
    memcpy(copy, p, n);
    copy[n] = '\0';
    char *end;
    double d = strtod(copy, &end);
    if (*end || !(d >= -9.2e18 && d <= 9.2e18) || d != (double)(int64_t)d)
        return false;
    *out = (int64_t)d;
    return true;
}
