/* fhir/span.c: a small JSON scanner that finds where things are in a Bundle's text rather than
 * what they are. The search iterator hands each entry.resource to the caller as the exact bytes
 * the server sent, because re-serialising through a parser would change FHIR decimals (1.50 is
 * not 1.5 in FHIR: precision is part of the value) and key order. jansson still validates every
 * page (search.c); this scanner only locates byte ranges, and checks the grammar as it goes so
 * that a range is never taken from text jansson would read differently.
 *
 * Recursive descent over RFC 8259, depth-limited, no allocation except the span arrays. */
#include <string.h>

#include "fhir/fhir_internal.h"

typedef struct scanner {
    const char *s;
    size_t len;
    size_t pos;
    unsigned depth;
    fs_span_status status;
    size_t error_at;
} scanner;

static bool fail(scanner *sc, fs_span_status status)
{
    if (sc->status == FS_SPAN_OK) {
        sc->status = status;
        sc->error_at = sc->pos;
    }
    return false;
}

static void skip_ws(scanner *sc)
{
    while (sc->pos < sc->len) {
        char c = sc->s[sc->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        sc->pos++;
    }
}

static int peek(const scanner *sc)
{
    return sc->pos < sc->len ? (unsigned char)sc->s[sc->pos] : -1;
}

static int hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A string starting at the opening quote; `content` receives the bytes between the quotes. */
static bool scan_string(scanner *sc, fs_span *content)
{
    if (peek(sc) != '"')
        return fail(sc, FS_SPAN_SYNTAX);
    sc->pos++;
    size_t start = sc->pos;
    while (sc->pos < sc->len) {
        unsigned char c = (unsigned char)sc->s[sc->pos];
        if (c == '"') {
            content->start = start;
            content->len = sc->pos - start;
            sc->pos++;
            return true;
        }
        if (c < 0x20)
            return fail(sc, FS_SPAN_SYNTAX);
        if (c == '\\') {
            sc->pos++;
            int e = peek(sc);
            if (e == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (sc->pos + (size_t)i >= sc->len ||
                        hex_value((unsigned char)sc->s[sc->pos + (size_t)i]) < 0) {
                        sc->pos += (size_t)i;
                        return fail(sc, FS_SPAN_SYNTAX);
                    }
                sc->pos += 5;
                continue;
            }
            if (e < 0 || !strchr("\"\\/bfnrt", e) || e == 0)
                return fail(sc, FS_SPAN_SYNTAX);
        }
        sc->pos++;
    }
    return fail(sc, FS_SPAN_SYNTAX);
}

static bool scan_digits(scanner *sc)
{
    size_t start = sc->pos;
    while (sc->pos < sc->len && sc->s[sc->pos] >= '0' && sc->s[sc->pos] <= '9')
        sc->pos++;
    return sc->pos > start || fail(sc, FS_SPAN_SYNTAX);
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool scan_number(scanner *sc)
{
    if (peek(sc) == '-')
        sc->pos++;
    if (peek(sc) == '0')
        sc->pos++;
    else if (peek(sc) >= '1' && peek(sc) <= '9')
        scan_digits(sc);
    else
        return fail(sc, FS_SPAN_SYNTAX);
    if (peek(sc) == '.') {
        sc->pos++;
        if (!scan_digits(sc))
            return false;
    }
    if (peek(sc) == 'e' || peek(sc) == 'E') {
        sc->pos++;
        if (peek(sc) == '+' || peek(sc) == '-')
            sc->pos++;
        if (!scan_digits(sc))
            return false;
    }
    return true;
}

static bool scan_literal(scanner *sc, const char *word)
{
    size_t n = strlen(word);
    if (sc->len - sc->pos < n || memcmp(sc->s + sc->pos, word, n) != 0)
        return fail(sc, FS_SPAN_SYNTAX);
    sc->pos += n;
    return true;
}

/* Called for each member of an object with the name's raw content; must consume the value. */
typedef bool (*member_fn)(scanner *sc, fs_span name, void *ctx);
/* Called for each element of an array at its first byte; must consume the element. */
typedef bool (*element_fn)(scanner *sc, size_t index, void *ctx);

static bool scan_value(scanner *sc, fs_span *span);

static bool skip_member(scanner *sc, fs_span name, void *ctx)
{
    (void)name;
    (void)ctx;
    fs_span ignored;
    return scan_value(sc, &ignored);
}

static bool skip_element(scanner *sc, size_t index, void *ctx)
{
    (void)index;
    (void)ctx;
    fs_span ignored;
    return scan_value(sc, &ignored);
}

static bool enter(scanner *sc)
{
    if (sc->depth >= FS_SPAN_MAX_DEPTH)
        return fail(sc, FS_SPAN_DEPTH);
    sc->depth++;
    sc->pos++; /* the opening bracket */
    return true;
}

static bool scan_object(scanner *sc, member_fn on_member, void *ctx)
{
    if (peek(sc) != '{')
        return fail(sc, FS_SPAN_SYNTAX);
    if (!enter(sc))
        return false;
    skip_ws(sc);
    if (peek(sc) == '}') {
        sc->pos++;
        sc->depth--;
        return true;
    }
    for (;;) {
        skip_ws(sc);
        fs_span name;
        if (!scan_string(sc, &name))
            return false;
        skip_ws(sc);
        if (peek(sc) != ':')
            return fail(sc, FS_SPAN_SYNTAX);
        sc->pos++;
        skip_ws(sc);
        if (!on_member(sc, name, ctx))
            return false;
        skip_ws(sc);
        int c = peek(sc);
        sc->pos++;
        if (c == '}')
            break;
        if (c != ',') {
            sc->pos--;
            return fail(sc, FS_SPAN_SYNTAX);
        }
    }
    sc->depth--;
    return true;
}

static bool scan_array(scanner *sc, element_fn on_element, void *ctx)
{
    if (peek(sc) != '[')
        return fail(sc, FS_SPAN_SYNTAX);
    if (!enter(sc))
        return false;
    skip_ws(sc);
    if (peek(sc) == ']') {
        sc->pos++;
        sc->depth--;
        return true;
    }
    for (size_t index = 0;; index++) {
        skip_ws(sc);
        if (!on_element(sc, index, ctx))
            return false;
        skip_ws(sc);
        int c = peek(sc);
        sc->pos++;
        if (c == ']')
            break;
        if (c != ',') {
            sc->pos--;
            return fail(sc, FS_SPAN_SYNTAX);
        }
    }
    sc->depth--;
    return true;
}

static bool scan_value(scanner *sc, fs_span *span)
{
    skip_ws(sc);
    span->start = sc->pos;
    bool ok;
    fs_span content;
    switch (peek(sc)) {
    case '{': ok = scan_object(sc, skip_member, NULL); break;
    case '[': ok = scan_array(sc, skip_element, NULL); break;
    case '"': ok = scan_string(sc, &content); break;
    case 't': ok = scan_literal(sc, "true"); break;
    case 'f': ok = scan_literal(sc, "false"); break;
    case 'n': ok = scan_literal(sc, "null"); break;
    default: ok = scan_number(sc); break;
    }
    span->len = sc->pos - span->start;
    return ok;
}

fs_span_status fs_json_span_value(const char *text, size_t len, size_t *pos, fs_span *span)
{
    scanner sc = {.s = text, .len = len, .pos = *pos};
    span->start = span->len = 0;
    if (!text || *pos > len)
        return FS_SPAN_SYNTAX;
    if (scan_value(&sc, span))
        *pos = sc.pos;
    return sc.status;
}

/* ---- member names ---------------------------------------------------------------------------- */

/* Whether the raw (still escaped) name equals `want`, an ASCII word. Escapes are decoded:
 * "\u0065ntry" and "entry" are the same member to jansson, so they must be to the scanner. */
static bool name_is(const scanner *sc, fs_span name, const char *want)
{
    const char *p = sc->s + name.start;
    const char *end = p + name.len;
    if (!memchr(p, '\\', name.len))
        return name.len == strlen(want) && memcmp(p, want, name.len) == 0;
    for (; p < end; want++) {
        int c = (unsigned char)*p++;
        if (c == '\\') {
            int e = (unsigned char)*p++; /* the grammar was checked: an escape is complete */
            if (e == 'u') {
                c = 0;
                for (int i = 0; i < 4; i++)
                    c = c * 16 + hex_value((unsigned char)*p++);
            } else {
                static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
                c = (unsigned char)to[strchr(from, e) - from];
            }
        }
        if (*want == '\0' || c != (unsigned char)*want)
            return false;
    }
    return *want == '\0';
}

/* ---- the Bundle walk ------------------------------------------------------------------------- */

static bool grow(fs_span **items, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t n = *cap ? *cap * 2 : 64;
    while (n < need)
        n *= 2;
    fs_span *grown = fs_realloc(*items, n * sizeof *grown);
    if (!grown)
        return false;
    *items = grown;
    *cap = n;
    return true;
}

typedef struct walk {
    fs_bundle_scan *out;
    size_t index; /* the entry being walked */
} walk;

static bool entry_member(scanner *sc, fs_span name, void *ctx)
{
    walk *w = ctx;
    fs_span value;
    if (!scan_value(sc, &value))
        return false;
    if (name_is(sc, name, "resource"))
        w->out->resources[w->index] = value;
    return true;
}

static bool entry_element(scanner *sc, size_t index, void *ctx)
{
    walk *w = ctx;
    fs_bundle_scan *out = w->out;
    if (!grow(&out->resources, &out->cap_resources, index + 1))
        return fail(sc, FS_SPAN_NOMEM);
    out->resources[index] = (fs_span){0, 0};
    out->entry_count = index + 1;
    if (peek(sc) != '{') {
        fs_span ignored;
        return scan_value(sc, &ignored);
    }
    w->index = index;
    return scan_object(sc, entry_member, w);
}

static bool link_element(scanner *sc, size_t index, void *ctx)
{
    fs_bundle_scan *out = ((walk *)ctx)->out;
    if (!grow(&out->links, &out->cap_links, index + 1))
        return fail(sc, FS_SPAN_NOMEM);
    out->link_count = index + 1;
    return scan_value(sc, &out->links[index]);
}

static bool bundle_member(scanner *sc, fs_span name, void *ctx)
{
    walk *w = ctx;
    fs_bundle_scan *out = w->out;
    if (name_is(sc, name, "entry")) {
        out->has_entry = true;
        out->entry_count = 0;
        out->entry_is_array = peek(sc) == '[';
        if (out->entry_is_array)
            return scan_array(sc, entry_element, w);
    } else if (name_is(sc, name, "link")) {
        out->has_link = true;
        out->link_count = 0;
        out->link_is_array = peek(sc) == '[';
        if (out->link_is_array)
            return scan_array(sc, link_element, w);
    } else if (name_is(sc, name, "resourceType")) {
        return scan_value(sc, &out->resource_type);
    }
    fs_span ignored;
    return scan_value(sc, &ignored);
}

void fs_bundle_scan_init(fs_bundle_scan *scan)
{
    memset(scan, 0, sizeof *scan);
}

void fs_bundle_scan_clear(fs_bundle_scan *scan)
{
    fs_free(scan->resources);
    fs_free(scan->links);
    fs_bundle_scan_init(scan);
}

fs_span_status fs_bundle_scan_run(const char *text, size_t len, fs_bundle_scan *scan)
{
    /* keep the buffers, forget the previous page */
    scan->resource_type = (fs_span){0, 0};
    scan->has_entry = scan->entry_is_array = scan->has_link = scan->link_is_array = false;
    scan->entry_count = scan->link_count = 0;
    scan->error_offset = 0;
    scanner sc = {.s = text, .len = text ? len : 0};
    walk w = {.out = scan};
    skip_ws(&sc);
    if (scan_object(&sc, bundle_member, &w)) {
        skip_ws(&sc);
        if (sc.pos != sc.len)
            fail(&sc, FS_SPAN_SYNTAX);
    }
    if (sc.status != FS_SPAN_OK) {
        scan->error_offset = sc.error_at;
        scan->entry_count = scan->link_count = 0;
    }
    return sc.status;
}
