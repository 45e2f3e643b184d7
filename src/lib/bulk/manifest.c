/* bulk/manifest.c: the completion manifest of a Bulk Data export: what the files are, where they
 * are, whether they need the token, and the transactionTime that an incremental sync uses as its
 * next _since. Parsed strictly (a sync must not advance its watermark on a manifest it misread),
 * with relative URLs resolved against the URL the manifest came from, and pages (link next)
 * merged into one document that is saved as manifest.json.
 *
 * The page is read in one pass by a small strict JSON reader of its own (below), not through a
 * document tree: a manifest of 160,000 entries costs the entries themselves (a type shared by
 * all the entries of that type, an absolute URL each), not a tree of every member. The reader
 * checks what jansson would (grammar, UTF-8, escapes, surrogates, no \u0000, nesting depth,
 * duplicate member names in the objects it interprets, nothing after the document) and reports
 * the line and column of the first fault. A syntax error anywhere wins over a missing or wrong
 * member, so that a truncated manifest is reported as truncated. Members it does not know are
 * kept as their raw text (the manifest's own, and each entry's, such as extension) for
 * manifest.json, which is written from the entries (fs_bulk_manifest_dump). What a string, a
 * number, a literal may hold is the lexer core's (json/lex.h); the reader keeps its own words. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulk/bulk_internal.h"
#include "http/http.h"
#include "json/lex.h"

/* Nesting allowed inside a member the reader skips (jansson allows 2048 in all). */
#define JR_MAX_DEPTH 1024

/* ---- the strict JSON reader ----------------------------------------------------------------- */

typedef struct jr {
    const unsigned char *start, *p, *end;
    const char *why; /* the first fault (static text), NULL while none */
    const unsigned char *why_at;
    char dup[96]; /* the text of a duplicate member fault */
    bool nomem;
} jr;

static bool jr_fail(jr *r, const char *why)
{
    if (!r->why) {
        r->why = r->p >= r->end ? "the text ends early (truncated)" : why;
        r->why_at = r->p;
    }
    return false;
}

static bool jr_nomem(jr *r)
{
    r->nomem = true;
    return jr_fail(r, "out of memory");
}

static void jr_ws(jr *r)
{
    r->p = fs_lex_skip_ws(r->p, r->end);
}

static bool put_utf8(fs_buf *out, uint32_t cp)
{
    unsigned char b[4];
    return fs_buf_append(out, b, fs_lex_utf8_encode(cp, b));
}

/* The \uXXXX escape at p (after the backslash and 'u' were seen): its code point, a surrogate
 * pair taken whole; 0 with the fault set when it is not a valid one. */
static uint32_t jr_unicode(jr *r)
{
    fs_lex_error err;
    if (!fs_lex_escape(r->p, r->end, NULL, &err)) {
        switch (err) {
        case FS_LEX_E_NUL: return jr_fail(r, "\\u0000 is not allowed in a string"), 0;
        case FS_LEX_E_LONE_LOW:
            return jr_fail(r, "invalid Unicode escape (a lone low surrogate)"), 0;
        case FS_LEX_E_LONE_HIGH:
            return jr_fail(r, "invalid Unicode escape (a high surrogate without its low half)"), 0;
        default: return jr_fail(r, "invalid \\u escape"), 0;
        }
    }
    size_t len;
    uint32_t cp = fs_lex_unicode(r->p, &len);
    r->p += len;
    return cp;
}

/* A string at r->p (its opening quote): checked, and decoded into `out` when not NULL. */
static bool jr_string(jr *r, fs_buf *out)
{
    if (out)
        fs_buf_reset(out);
    r->p++;
    const unsigned char *run = r->p;
    for (;;) {
        if (r->p >= r->end)
            return jr_fail(r, "unterminated string");
        unsigned c = *r->p;
        if (c == '"' || c == '\\') {
            if (out && r->p > run && !fs_buf_append(out, run, (size_t)(r->p - run)))
                return jr_nomem(r);
            if (c == '"') {
                r->p++;
                /* "" decodes to an empty string, never to a buffer without data */
                if (out && !out->data) {
                    if (!fs_buf_append(out, "", 1))
                        return jr_nomem(r);
                    out->len = 0;
                }
                return true;
            }
            if (r->end - r->p < 2)
                return jr_fail(r, "unterminated string");
            int esc = fs_lex_escape_char(r->p[1]);
            if (esc >= 0) {
                char ch = (char)esc;
                if (out && !fs_buf_append(out, &ch, 1))
                    return jr_nomem(r);
                r->p += 2;
            } else if (r->p[1] == 'u') {
                uint32_t cp = jr_unicode(r);
                if (!cp)
                    return false;
                if (out && !put_utf8(out, cp))
                    return jr_nomem(r);
            } else {
                return jr_fail(r, "invalid escape in a string");
            }
            run = r->p;
        } else if (c < 0x20) {
            return jr_fail(r, "control character in a string (must be escaped)");
        } else if (c < 0x80) {
            r->p++;
        } else {
            size_t n = fs_lex_utf8_length(r->p, r->end);
            if (!n)
                return jr_fail(r, "invalid UTF-8 in a string");
            r->p += n;
        }
    }
}

/* A number at r->p: checked against the JSON grammar; *is_integer when it has no fraction and
 * no exponent. Any size is accepted here: the members that need a number check its range. */
static bool jr_number(jr *r, bool *is_integer)
{
    fs_lex_error err;
    const unsigned char *start = r->p, *at, *end = fs_lex_number(r->p, r->end, &err, &at);
    if (!end) {
        r->p = at;
        return jr_fail(r, err == FS_LEX_E_FRACTION   ? "invalid number (no digit after the point)"
                          : err == FS_LEX_E_EXPONENT ? "invalid number (no digit in the exponent)"
                                                     : "invalid number");
    }
    r->p = end;
    if (end < r->end && fs_lex_is_digit(*end)) /* "01": the number ended at its zero */
        return jr_fail(r, "invalid number (a leading zero)");
    *is_integer = true;
    for (const unsigned char *q = start; q < end; q++)
        if (*q == '.' || *q == 'e' || *q == 'E')
            *is_integer = false;
    return true;
}

/* true, false or null at r->p. */
static bool jr_literal(jr *r)
{
    const unsigned char *end = fs_lex_literal(r->p, r->end);
    if (!end)
        return jr_fail(r, "invalid token (not a JSON value)");
    r->p = end;
    return true;
}

/* One member name, the colon after it and the whitespace before the value. */
static bool jr_key(jr *r, fs_buf *key)
{
    if (r->p >= r->end || *r->p != '"')
        return jr_fail(r, "a member name (a string) expected");
    if (!jr_string(r, key))
        return false;
    jr_ws(r);
    if (r->p >= r->end || *r->p != ':')
        return jr_fail(r, "':' expected after a member name");
    r->p++;
    return true;
}

/* Any value at r->p (whitespace before it allowed): checked and stepped over, without recursion
 * (a stack of one bit per level: object or array). */
static bool jr_value(jr *r)
{
    unsigned char stack[JR_MAX_DEPTH / 8];
    unsigned depth = 0;
    bool integer;
    for (;;) {
        jr_ws(r);
        if (r->p >= r->end)
            return jr_fail(r, "a value expected");
        unsigned c = *r->p;
        if (c == '{' || c == '[') {
            if (depth == JR_MAX_DEPTH)
                return jr_fail(r, "nested too deep");
            bool obj = c == '{';
            if (obj)
                stack[depth / 8] |= (unsigned char)(1u << (depth % 8));
            else
                stack[depth / 8] &= (unsigned char)~(1u << (depth % 8));
            depth++;
            r->p++;
            jr_ws(r);
            if (r->p < r->end && *r->p == (obj ? '}' : ']')) {
                r->p++;
                depth--;
            } else {
                if (obj && !jr_key(r, NULL))
                    return false;
                continue;
            }
        } else if (c == '"') {
            if (!jr_string(r, NULL))
                return false;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            if (!jr_number(r, &integer))
                return false;
        } else if (c != 't' && c != 'f' && c != 'n') {
            return jr_fail(r, "a value expected");
        } else if (!jr_literal(r)) {
            return false;
        }
        /* a value ended: close what it ends */
        for (;;) {
            if (depth == 0)
                return true;
            bool obj = stack[(depth - 1) / 8] & (1u << ((depth - 1) % 8));
            jr_ws(r);
            if (r->p < r->end && *r->p == ',') {
                r->p++;
                jr_ws(r);
                if (obj && !jr_key(r, NULL))
                    return false;
                break;
            }
            if (r->p < r->end && *r->p == (obj ? '}' : ']')) {
                r->p++;
                depth--;
                continue;
            }
            return jr_fail(r, obj ? "',' or '}' expected" : "',' or ']' expected");
        }
    }
}

/* The next member of an object whose '{' was consumed: 1 with its name decoded in `key`, the
 * name's opening quote at *key_at and the reader at the value; 0 after the closing '}'; -1 on a
 * fault. */
static int jr_member(jr *r, bool *first, fs_buf *key, const unsigned char **key_at)
{
    jr_ws(r);
    if (r->p < r->end && *r->p == '}') {
        r->p++;
        return 0;
    }
    if (!*first) {
        if (r->p >= r->end || *r->p != ',')
            return jr_fail(r, "',' or '}' expected"), -1;
        r->p++;
        jr_ws(r);
    }
    *first = false;
    *key_at = r->p;
    if (!jr_key(r, key))
        return -1;
    jr_ws(r);
    if (r->p >= r->end)
        return jr_fail(r, "a value expected"), -1;
    return 1;
}

/* The next item of an array whose '[' was consumed: 1 at the item, 0 after ']', -1 on a fault. */
static int jr_item(jr *r, bool *first)
{
    jr_ws(r);
    if (r->p < r->end && *r->p == ']') {
        r->p++;
        return 0;
    }
    if (!*first) {
        if (r->p >= r->end || *r->p != ',')
            return jr_fail(r, "',' or ']' expected"), -1;
        r->p++;
        jr_ws(r);
    }
    *first = false;
    if (r->p >= r->end)
        return jr_fail(r, "a value expected"), -1;
    return 1;
}

/* The names of one object, to refuse a duplicate (open addressing over offsets into `names`). */
typedef struct keyset {
    fs_buf names;
    uint32_t *slots; /* offset + 1 of a name, 0 when empty */
    size_t cap, count;
} keyset;

static uint32_t key_hash(const char *s)
{
    uint64_t h = fs_fnv1a_str(FS_FNV1A_INIT, s);
    return (uint32_t)(h ^ h >> 32);
}

static void keyset_reset(keyset *ks)
{
    if (ks->count) {
        memset(ks->slots, 0, ks->cap * sizeof *ks->slots);
        ks->count = 0;
        fs_buf_reset(&ks->names);
    }
}

static void keyset_free(keyset *ks)
{
    fs_free(ks->slots);
    fs_buf_free(&ks->names);
}

/* Add `key` of the object being read: false with the fault set when it is there already (or out
 * of memory). */
static bool keyset_add(jr *r, keyset *ks, const char *key)
{
    if ((ks->count + 1) * 2 > ks->cap) {
        size_t cap = ks->cap ? ks->cap * 2 : 16;
        uint32_t *slots = fs_calloc(cap, sizeof *slots);
        if (!slots)
            return jr_nomem(r);
        for (size_t i = 0; i < ks->cap; i++) {
            if (!ks->slots[i])
                continue;
            size_t j = key_hash(ks->names.data + ks->slots[i] - 1) & (cap - 1);
            while (slots[j])
                j = (j + 1) & (cap - 1);
            slots[j] = ks->slots[i];
        }
        fs_free(ks->slots);
        ks->slots = slots;
        ks->cap = cap;
    }
    size_t j = key_hash(key) & (ks->cap - 1);
    while (ks->slots[j]) {
        if (strcmp(ks->names.data + ks->slots[j] - 1, key) == 0) {
            snprintf(r->dup, sizeof r->dup, "duplicate member name \"%.60s\"", key);
            return jr_fail(r, r->dup);
        }
        j = (j + 1) & (ks->cap - 1);
    }
    size_t at = ks->names.len;
    if (at >= UINT32_MAX - 1 || !fs_buf_append(&ks->names, key, strlen(key) + 1))
        return jr_nomem(r);
    ks->slots[j] = (uint32_t)at + 1;
    ks->count++;
    return true;
}

/* The line and column (1-based) of a position, for messages. */
static void jr_position(const jr *r, const unsigned char *at, size_t *line, size_t *column)
{
    *line = 1;
    const unsigned char *line_start = r->start;
    for (const unsigned char *p = r->start; p < at; p++)
        if (*p == '\n') {
            (*line)++;
            line_start = p + 1;
        }
    *column = (size_t)(at - line_start) + 1;
}

bool fs_bulk_json_check(const char *data, size_t len, char *why, size_t why_size)
{
    jr r = {.start = (const unsigned char *)data,
            .p = (const unsigned char *)data,
            .end = (const unsigned char *)data + len};
    bool ok = jr_value(&r);
    if (ok) {
        jr_ws(&r);
        if (r.p < r.end)
            ok = jr_fail(&r, "end of text expected after the value");
    }
    if (!ok && why && why_size) {
        size_t line, column;
        jr_position(&r, r.why_at, &line, &column);
        snprintf(why, why_size, "line %zu, column %zu: %s", line, column, r.why);
    }
    return ok;
}

/* ---- the manifest --------------------------------------------------------------------------- */

void fs_bulk_manifest_init(fs_bulk_manifest *m)
{
    memset(m, 0, sizeof *m);
}

static void free_entries(fs_bulk_manifest *m, size_t from)
{
    while (m->count > from) {
        m->count--;
        fs_free(m->entries[m->count].url);
        fs_free(m->entries[m->count].extra);
    }
}

void fs_bulk_manifest_drop_entries(fs_bulk_manifest *m)
{
    free_entries(m, 0);
    fs_free(m->entries);
    m->entries = NULL;
    m->count = m->cap = 0;
    fs_free(m->header);
    m->header = NULL;
    m->started = false;
}

void fs_bulk_manifest_clear(fs_bulk_manifest *m)
{
    fs_bulk_manifest_drop_entries(m);
    for (size_t i = 0; i < m->ntypes; i++)
        fs_free(m->types[i]);
    fs_free(m->types);
    fs_bulk_map_clear(&m->type_index);
    fs_free(m->transaction_time);
    fs_free(m->request);
    fs_free(m->next);
    fs_bulk_manifest_init(m);
}

bool fs_bulk_type_name_ok(const char *type)
{
    if (!type || !(type[0] >= 'A' && type[0] <= 'Z'))
        return false;
    size_t n = 0;
    for (const char *p = type; *p; p++, n++) {
        char c = *p;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return false;
    }
    return n <= FS_BULK_MAX_TYPE_LEN;
}

static const char *kind_member(fhirsync_export_file_kind kind)
{
    return kind == FHIRSYNC_EXPORT_OUTPUT    ? "output"
           : kind == FHIRSYNC_EXPORT_DELETED ? "deleted"
                                             : "error";
}

/* The manifest's one copy of a type name (the entries and then the files borrow it). */
static const char *intern_type(fs_bulk_manifest *m, const char *type)
{
    size_t *i = fs_bulk_map_get(&m->type_index, type);
    if (i)
        return m->types[*i];
    if (m->ntypes == m->types_cap) {
        char **grown = fs_array_grow(m->types, &m->types_cap, sizeof *grown, 16);
        if (!grown)
            return NULL;
        m->types = grown;
    }
    char *copy = fs_strdup(type);
    if (!copy || !fs_bulk_map_put(&m->type_index, copy, m->ntypes)) {
        fs_free(copy);
        return NULL;
    }
    m->types[m->ntypes] = copy;
    return m->types[m->ntypes++];
}

/* URL resolution through libcurl costs microseconds per URL, which a manifest of many entries
 * multiplies. Entries share folders: the folder part of a reference (up to its last '/') is
 * resolved and checked once, and a last segment made only of characters that resolution keeps
 * as they are is appended to it. Anything else goes the whole way (fs_url_resolve and
 * fs_url_check_transport), with their messages. */
#define URL_CACHE_SLOTS 16

typedef struct url_cache {
    const char *base;
    struct {
        char *ref_dir; /* the folder part of a reference, as written */
        size_t ref_len;
        char *abs_dir; /* what it resolved to */
    } slot[URL_CACHE_SLOTS];
    unsigned next; /* the slot replaced next (round robin) */
} url_cache;

static void url_cache_clear(url_cache *uc)
{
    for (size_t i = 0; i < URL_CACHE_SLOTS; i++) {
        fs_free(uc->slot[i].ref_dir);
        fs_free(uc->slot[i].abs_dir);
    }
    memset(uc->slot, 0, sizeof uc->slot);
}

/* The resolved folder of `ref`'s first dir_len bytes: from the cache, or resolved and checked
 * now and cached when it is a folder that passes the transport check; NULL when it is not one
 * (or out of memory: the slow path reports it). */
static const char *cached_dir(url_cache *uc, const char *ref, size_t dir_len)
{
    for (size_t i = 0; i < URL_CACHE_SLOTS; i++)
        if (uc->slot[i].ref_dir && uc->slot[i].ref_len == dir_len &&
            memcmp(uc->slot[i].ref_dir, ref, dir_len) == 0)
            return uc->slot[i].abs_dir;
    char *dir = fs_strndup(ref, dir_len);
    char *abs = NULL;
    if (!dir || fs_url_resolve(uc->base, dir, false, &abs, NULL) != FHIRSYNC_OK) {
        fs_free(dir);
        return NULL;
    }
    size_t n = strlen(abs);
    if (!n || abs[n - 1] != '/' || strpbrk(abs, "?#") ||
        fs_url_check_transport(abs, "manifest file URL", NULL) != FHIRSYNC_OK) {
        fs_free(dir);
        fs_free(abs);
        return NULL;
    }
    unsigned i = uc->next;
    uc->next = (uc->next + 1) % URL_CACHE_SLOTS;
    fs_free(uc->slot[i].ref_dir);
    fs_free(uc->slot[i].abs_dir);
    uc->slot[i].ref_dir = dir;
    uc->slot[i].ref_len = dir_len;
    uc->slot[i].abs_dir = abs;
    return abs;
}

static bool plain_segment(const char *s, size_t n)
{
    if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_' || c == '~'))
            return false;
    }
    return true;
}

static fhirsync_code resolve_url(url_cache *uc, const char *ref, char **out, fhirsync_error *err)
{
    *out = NULL;
    const char *slash = strrchr(ref, '/');
    size_t dir_len = slash ? (size_t)(slash - ref) + 1 : 0;
    bool fast =
        dir_len > 0 && !strpbrk(ref, "?#") && plain_segment(ref + dir_len, strlen(ref + dir_len));
    const char *dir = fast ? cached_dir(uc, ref, dir_len) : NULL;
    if (dir) {
        /* to its size: one of these stays for every file */
        size_t dl = strlen(dir), sl = strlen(ref + dir_len);
        char *abs = fs_malloc(dl + sl + 1);
        if (!abs)
            return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory reading the manifest");
        memcpy(abs, dir, dl);
        memcpy(abs + dl, ref + dir_len, sl + 1);
        *out = abs;
        return FHIRSYNC_OK;
    }
    char *abs = NULL;
    fhirsync_code rc = fs_url_resolve(uc->base, ref, false, &abs, err);
    if (rc == FHIRSYNC_OK)
        rc = fs_url_check_transport(abs, "manifest file URL", err);
    if (rc != FHIRSYNC_OK) {
        fs_free(abs);
        return rc;
    }
    *out = abs;
    return FHIRSYNC_OK;
}

bool fs_bulk_manifest_resolve(const char *base, const char *ref, char **out)
{
    url_cache uc = {.base = base};
    bool ok = resolve_url(&uc, ref, out, NULL) == FHIRSYNC_OK;
    url_cache_clear(&uc);
    return ok;
}

/* What one page says, as it is read. */
typedef struct page {
    fs_bulk_manifest *m;
    const char *base_url;
    bool first;
    url_cache urls;
    keyset keys, entry_keys;
    fs_buf key, text, type, url, extra;
    /* members of the page */
    bool tt_string, rat_seen, rat_bool, rat_value, request_string;
    char *tt, *request, *next;
    bool member_seen[3];
    size_t kind_start[3], kind_end[3]; /* the page's entries of each kind (one array each) */
    fs_buf header;                     /* other members, raw (first page) */
    /* the first fault of each part, by the precedence the checks report them in */
    fhirsync_error link_err, kind_err[3];
    bool link_failed, kind_failed[3];
} page;

/* The first fault of one kind's entries (later ones are not reported). */
static void kind_fail(page *pg, int kind, fhirsync_code code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void kind_fail(page *pg, int kind, fhirsync_code code, const char *fmt, ...)
{
    if (pg->kind_failed[kind])
        return;
    pg->kind_failed[kind] = true;
    fhirsync_error *e = &pg->kind_err[kind];
    memset(e, 0, sizeof *e);
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

/* A count: a non-negative integer (a real without a fraction, as fs_json_int reads it). */
static bool count_value(const unsigned char *s, size_t n, bool integer, int64_t *out)
{
    if (integer) {
        size_t i = s[0] == '-' ? 1 : 0;
        uint64_t v = 0;
        for (; i < n; i++) {
            if (v > (uint64_t)INT64_MAX / 10)
                return false;
            v = v * 10 + (uint64_t)(s[i] - '0');
            if (v > (uint64_t)INT64_MAX)
                return false;
        }
        if (s[0] == '-' && v != 0)
            return false;
        *out = (int64_t)v;
        return true;
    }
    char copy[400];
    if (n >= sizeof copy)
        return false;
    memcpy(copy, s, n);
    copy[n] = '\0';
    double d = strtod(copy, NULL);
    if (!(d >= 0 && d <= 9.2e18) || d != (double)(int64_t)d)
        return false;
    *out = (int64_t)d;
    return true;
}

/* Grow m->entries for one more. */
static bool entry_room(fs_bulk_manifest *m)
{
    if (m->count < m->cap)
        return true;
    fs_bulk_entry *grown = fs_array_grow(m->entries, &m->cap, sizeof *grown, 16);
    if (!grown)
        return false;
    m->entries = grown;
    return true;
}

/* One item of output, deleted or error at r->p. */
static bool read_entry(jr *r, page *pg, int kind, size_t i)
{
    const char *member = kind_member((fhirsync_export_file_kind)kind);
    if (*r->p != '{') {
        kind_fail(pg, kind, FHIRSYNC_E_PROTOCOL, "manifest %s[%zu] is not an object", member, i);
        return jr_value(r);
    }
    r->p++;
    keyset_reset(&pg->entry_keys);
    fs_buf_reset(&pg->extra);
    bool type_string = false, url_string = false, count_seen = false, count_ok = false;
    int64_t count = -1;
    bool first = true;
    const unsigned char *key_at;
    int more;
    while ((more = jr_member(r, &first, &pg->key, &key_at)) == 1) {
        const char *key = pg->key.data;
        if (!keyset_add(r, &pg->entry_keys, key))
            return false;
        const unsigned char *value_at = r->p;
        if (!strcmp(key, "type") || !strcmp(key, "url")) {
            bool is_type = key[0] == 't';
            if (*r->p == '"') {
                if (!jr_string(r, is_type ? &pg->type : &pg->url))
                    return false;
                *(is_type ? &type_string : &url_string) = true;
            } else if (!jr_value(r)) {
                return false;
            }
        } else if (!strcmp(key, "count")) {
            count_seen = true;
            bool integer = false;
            if (*r->p == '-' || (*r->p >= '0' && *r->p <= '9')) {
                if (!jr_number(r, &integer))
                    return false;
                count_ok = count_value(value_at, (size_t)(r->p - value_at), integer, &count);
            } else if (!jr_value(r)) {
                return false;
            }
        } else {
            /* extension and anything else: kept as written, for manifest.json */
            if (!jr_value(r))
                return false;
            if ((pg->extra.len && !fs_buf_append(&pg->extra, ",", 1)) ||
                !fs_buf_append(&pg->extra, key_at, (size_t)(r->p - key_at)))
                return jr_nomem(r);
        }
    }
    if (more < 0 || pg->kind_failed[kind])
        return more == 0;
    const char *type = type_string ? pg->type.data : NULL;
    const char *url = url_string ? pg->url.data : NULL;
    if (!type) {
        kind_fail(pg, kind, FHIRSYNC_E_PROTOCOL, "manifest %s[%zu] has no \"type\" string", member,
                  i);
        return true;
    }
    if (!fs_bulk_type_name_ok(type)) {
        kind_fail(pg, kind, FHIRSYNC_E_PROTOCOL,
                  "manifest %s[%zu] type \"%.80s\" is not a resource type name", member, i, type);
        return true;
    }
    if (!url || !*url) {
        kind_fail(pg, kind, FHIRSYNC_E_PROTOCOL, "manifest %s[%zu] has no \"url\" string", member,
                  i);
        return true;
    }
    if (count_seen && !count_ok) {
        kind_fail(pg, kind, FHIRSYNC_E_PROTOCOL,
                  "manifest %s[%zu] \"count\" is not a non-negative integer", member, i);
        return true;
    }
    char *abs = NULL;
    fhirsync_error e;
    fhirsync_code rc = resolve_url(&pg->urls, url, &abs, &e);
    if (rc != FHIRSYNC_OK) {
        kind_fail(pg, kind, rc == FHIRSYNC_E_NOMEM ? rc : FHIRSYNC_E_PROTOCOL,
                  "manifest %s[%zu]: %s", member, i, e.message);
        return true;
    }
    const char *interned = intern_type(pg->m, type);
    char *extra = pg->extra.len ? fs_strdup(pg->extra.data) : NULL;
    if (!interned || (pg->extra.len && !extra) || !entry_room(pg->m)) {
        fs_free(abs);
        fs_free(extra);
        return jr_nomem(r);
    }
    fs_bulk_entry *en = &pg->m->entries[pg->m->count++];
    en->kind = (fhirsync_export_file_kind)kind;
    en->type = interned;
    en->url = abs;
    en->count = count;
    en->extra = extra;
    return true;
}

/* The value of output, deleted or error at r->p. */
static bool read_entries(jr *r, page *pg, int kind)
{
    fs_bulk_manifest *m = pg->m;
    pg->kind_start[kind] = m->count;
    if (*r->p != '[') {
        kind_fail(pg, kind, FHIRSYNC_E_PROTOCOL, "manifest \"%s\" is not an array",
                  kind_member((fhirsync_export_file_kind)kind));
        return jr_value(r);
    }
    r->p++;
    bool first = true;
    int more;
    size_t i = 0;
    while ((more = jr_item(r, &first)) == 1)
        if (!read_entry(r, pg, kind, i++))
            return false;
    pg->kind_end[kind] = m->count;
    return more == 0;
}

/* The value of link at r->p: the next page's URL, resolved. */
static bool read_link(jr *r, page *pg)
{
    if (*r->p != '[') {
        if (!pg->link_failed)
            fs_err(&pg->link_err, FHIRSYNC_E_PROTOCOL, "manifest \"link\" is not an array");
        pg->link_failed = true;
        return jr_value(r);
    }
    r->p++;
    bool first = true;
    int more;
    size_t i = 0;
    for (; (more = jr_item(r, &first)) == 1; i++) {
        if (*r->p != '{') {
            if (!jr_value(r))
                return false;
            continue;
        }
        r->p++;
        keyset_reset(&pg->entry_keys);
        bool item_first = true, is_next = false, url_string = false;
        const unsigned char *key_at;
        int m;
        while ((m = jr_member(r, &item_first, &pg->key, &key_at)) == 1) {
            if (!keyset_add(r, &pg->entry_keys, pg->key.data))
                return false;
            bool rel = !strcmp(pg->key.data, "relation");
            bool url = !strcmp(pg->key.data, "url");
            if ((rel || url) && *r->p == '"') {
                if (!jr_string(r, rel ? &pg->text : &pg->url))
                    return false;
                if (rel)
                    is_next = !strcmp(pg->text.data, "next");
                else
                    url_string = true;
            } else if (!jr_value(r)) {
                return false;
            }
        }
        if (m < 0)
            return false;
        if (!is_next || pg->link_failed)
            continue;
        if (!url_string || !pg->url.data[0]) {
            fs_err(&pg->link_err, FHIRSYNC_E_PROTOCOL, "manifest link[%zu] (next) has no url", i);
            pg->link_failed = true;
            continue;
        }
        fs_free(pg->next);
        pg->next = NULL;
        if (fs_url_resolve(pg->base_url, pg->url.data, false, &pg->next, &pg->link_err) !=
            FHIRSYNC_OK)
            pg->link_failed = true;
    }
    return more == 0;
}

/* The page's top-level members. */
static bool read_page(jr *r, page *pg)
{
    r->p++; /* '{' */
    bool first = true;
    const unsigned char *key_at;
    int more;
    while ((more = jr_member(r, &first, &pg->key, &key_at)) == 1) {
        const char *key = pg->key.data;
        if (!keyset_add(r, &pg->keys, key))
            return false;
        int kind = !strcmp(key, "output")    ? FHIRSYNC_EXPORT_OUTPUT
                   : !strcmp(key, "deleted") ? FHIRSYNC_EXPORT_DELETED
                   : !strcmp(key, "error")   ? FHIRSYNC_EXPORT_ERROR
                                             : -1;
        if (kind >= 0) {
            pg->member_seen[kind] = true;
            if (!read_entries(r, pg, kind))
                return false;
            continue;
        }
        if (!strcmp(key, "link")) {
            if (!read_link(r, pg))
                return false;
            continue;
        }
        bool tt = !strcmp(key, "transactionTime"), rq = !strcmp(key, "request");
        if ((tt || rq) && *r->p == '"') {
            if (!jr_string(r, &pg->text))
                return false;
            char *copy = fs_strdup(pg->text.data);
            if (!copy)
                return jr_nomem(r);
            fs_free(tt ? pg->tt : pg->request);
            *(tt ? &pg->tt : &pg->request) = copy;
            *(tt ? &pg->tt_string : &pg->request_string) = true;
        } else if (!strcmp(key, "requiresAccessToken")) {
            pg->rat_seen = true;
            pg->rat_bool = *r->p == 't' || *r->p == 'f';
            pg->rat_value = *r->p == 't';
            if (!jr_value(r))
                return false;
        } else if (!jr_value(r)) {
            return false;
        }
        if (pg->first && ((pg->header.len && !fs_buf_append(&pg->header, ",\n  ", 4)) ||
                          !fs_buf_append(&pg->header, key_at, (size_t)(r->p - key_at))))
            return jr_nomem(r);
    }
    return more == 0;
}

/* Put the page's entries in kind order (output, deleted, error), whatever order the page gave
 * its arrays in: a stable reordering of the page's tail of m->entries. */
static bool order_kinds(fs_bulk_manifest *m, page *pg, size_t from)
{
    size_t n = m->count - from;
    bool ordered = true;
    for (size_t i = from + 1; i < m->count && ordered; i++)
        ordered = m->entries[i - 1].kind <= m->entries[i].kind;
    if (ordered || n == 0)
        return true;
    fs_bulk_entry *tmp = fs_malloc(n * sizeof *tmp);
    if (!tmp)
        return false;
    size_t k = 0;
    for (int kind = 0; kind <= FHIRSYNC_EXPORT_ERROR; kind++)
        for (size_t i = pg->kind_start[kind]; i < pg->kind_end[kind]; i++)
            tmp[k++] = m->entries[i];
    memcpy(m->entries + from, tmp, n * sizeof *tmp);
    fs_free(tmp);
    return true;
}

fhirsync_code fs_bulk_manifest_parse(fs_bulk_manifest *m, const char *body, size_t len,
                                     const char *base_url, fhirsync_error *err)
{
    fhirsync_code rc = FHIRSYNC_OK;
    size_t count_before = m->count;
    page pg;
    memset(&pg, 0, sizeof pg);
    pg.m = m;
    pg.base_url = base_url;
    pg.first = !m->started;
    pg.urls.base = base_url;
    const char *what = "export manifest";
    jr r = {.start = (const unsigned char *)body,
            .p = (const unsigned char *)body,
            .end = (const unsigned char *)body + len};

    if (!body || len == 0) {
        rc = fs_err(err, FHIRSYNC_E_PROTOCOL, "%s is empty, expected JSON", what);
        goto out;
    }
    if (fs_looks_like_html(body, len)) {
        rc = fs_err(err, FHIRSYNC_E_PROTOCOL, "%s is an HTML/XML page, not JSON", what);
        goto out;
    }
    /* a byte order mark is not JSON, but RFC 8259 lets a reader ignore one */
    if (len >= 3 && memcmp(body, "\xEF\xBB\xBF", 3) == 0)
        r.p += 3;
    jr_ws(&r);
    bool object = r.p < r.end && *r.p == '{';
    bool ok = object ? read_page(&r, &pg) : jr_value(&r);
    if (ok) {
        jr_ws(&r);
        if (r.p < r.end)
            ok = jr_fail(&r, "end of text expected after the value");
    }
    if (!ok) {
        if (r.nomem) {
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory reading the manifest");
        } else {
            size_t line, column;
            jr_position(&r, r.why_at, &line, &column);
            rc = fs_err(err, FHIRSYNC_E_PROTOCOL, "%s is not valid JSON (line %zu, column %zu: %s)",
                        what, line, column, r.why);
        }
        goto out;
    }
    if (!object) {
        rc = fs_err(err, FHIRSYNC_E_PROTOCOL, "%s is JSON but not an object", what);
        goto out;
    }
    /* the checks, in the order they are reported */
    int64_t epoch;
    if (!pg.tt_string) {
        rc = fs_err(err, FHIRSYNC_E_PROTOCOL, "manifest has no \"transactionTime\" string");
        goto out;
    }
    if (!fs_parse_instant(pg.tt, &epoch)) {
        rc = fs_err(err, FHIRSYNC_E_PROTOCOL,
                    "manifest \"transactionTime\" \"%.60s\" is not a FHIR instant", pg.tt);
        goto out;
    }
    if (!pg.first && !fs_streq(pg.tt, m->transaction_time)) {
        rc = fs_err(err, FHIRSYNC_E_PROTOCOL,
                    "manifest pages disagree on transactionTime (%.40s, then %.40s)",
                    m->transaction_time, pg.tt);
        goto out;
    }
    if (pg.rat_seen && !pg.rat_bool) {
        rc = fs_err(err, FHIRSYNC_E_PROTOCOL, "manifest \"requiresAccessToken\" is not a boolean");
        goto out;
    }
    if (pg.link_failed) {
        rc = pg.link_err.code;
        if (err)
            *err = pg.link_err;
        goto out;
    }
    if (!pg.member_seen[FHIRSYNC_EXPORT_OUTPUT]) {
        rc = fs_err(err, FHIRSYNC_E_PROTOCOL, "manifest has no \"output\" array");
        goto out;
    }
    for (int k = 0; k <= FHIRSYNC_EXPORT_ERROR; k++) {
        if (pg.kind_failed[k]) {
            rc = pg.kind_err[k].code;
            if (err)
                *err = pg.kind_err[k];
            goto out;
        }
    }
    if (!order_kinds(m, &pg, count_before)) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory reading the manifest");
        goto out;
    }
    if (pg.first) {
        m->transaction_time = pg.tt;
        m->request = pg.request;
        pg.tt = pg.request = NULL;
        m->requires_token_missing = !pg.rat_seen;
        m->requires_token = pg.rat_seen ? pg.rat_value : true;
        m->header = pg.header.len ? fs_buf_steal(&pg.header) : NULL;
        m->started = true;
    }
    for (int k = 0; k <= FHIRSYNC_EXPORT_ERROR; k++)
        m->member_seen[k] |= pg.member_seen[k];
    fs_free(m->next);
    m->next = pg.next;
    pg.next = NULL;
out:
    if (rc != FHIRSYNC_OK)
        free_entries(m, count_before); /* keep what earlier pages gave */
    fs_free(pg.tt);
    fs_free(pg.request);
    fs_free(pg.next);
    url_cache_clear(&pg.urls);
    keyset_free(&pg.keys);
    keyset_free(&pg.entry_keys);
    fs_buf_free(&pg.key);
    fs_buf_free(&pg.text);
    fs_buf_free(&pg.type);
    fs_buf_free(&pg.url);
    fs_buf_free(&pg.extra);
    fs_buf_free(&pg.header);
    return rc;
}

/* ---- manifest.json -------------------------------------------------------------------------- */

/* A JSON string of `s` (UTF-8 already checked): quotes, backslashes and control characters
 * escaped. */
static bool put_json_string(fs_buf *b, const char *s)
{
    if (!fs_buf_append(b, "\"", 1))
        return false;
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c != '"' && c != '\\' && c >= 0x20)
            continue;
        if (s > run && !fs_buf_append(b, run, (size_t)(s - run)))
            return false;
        bool ok = c == '"'    ? fs_buf_append(b, "\\\"", 2)
                  : c == '\\' ? fs_buf_append(b, "\\\\", 2)
                              : fs_buf_printf(b, "\\u%04x", c);
        if (!ok)
            return false;
        run = s + 1;
    }
    return (s == run || fs_buf_append(b, run, (size_t)(s - run))) && fs_buf_append(b, "\"", 1);
}

char *fs_bulk_manifest_dump(const fs_bulk_manifest *m)
{
    fs_buf b;
    fs_buf_init(&b);
    bool ok = fs_buf_append_str(&b, "{");
    const char *sep = "\n  ";
    if (ok && m->header) {
        ok = fs_buf_append_str(&b, sep) && fs_buf_append_str(&b, m->header);
        sep = ",\n  ";
    }
    for (int k = 0; k <= FHIRSYNC_EXPORT_ERROR && ok; k++) {
        if (!m->member_seen[k])
            continue;
        ok = fs_buf_printf(&b, "%s\"%s\": [", sep, kind_member((fhirsync_export_file_kind)k));
        sep = ",\n  ";
        const char *item_sep = "\n    ";
        bool any = false;
        for (size_t i = 0; i < m->count && ok; i++) {
            const fs_bulk_entry *e = &m->entries[i];
            if ((int)e->kind != k)
                continue;
            any = true;
            ok = fs_buf_printf(&b, "%s{\"type\": \"%s\", \"url\": ", item_sep, e->type) &&
                 put_json_string(&b, e->url) &&
                 (e->count < 0 || fs_buf_printf(&b, ", \"count\": %lld", (long long)e->count)) &&
                 (!e->extra || (fs_buf_append_str(&b, ", ") && fs_buf_append_str(&b, e->extra))) &&
                 fs_buf_append_str(&b, "}");
            item_sep = ",\n    ";
        }
        if (ok)
            ok = fs_buf_append_str(&b, any ? "\n  ]" : "]");
    }
    if (ok)
        ok = fs_buf_append_str(&b, "\n}\n");
    if (!ok) {
        fs_buf_free(&b);
        return NULL;
    }
    return fs_buf_steal(&b);
}
