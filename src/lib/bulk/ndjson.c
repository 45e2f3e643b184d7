/* bulk/ndjson.c: the NDJSON line checker that every byte of a bulk file goes through on its way
 * to disk. It is a resumable, byte-at-a-time JSON validator (RFC 8259 grammar, strict UTF-8, no
 * lone surrogates, no \u0000: what jansson accepts, minus duplicate-name checks) that keeps no
 * part of the line: memory is constant whatever the line length, so the line cap is a guard
 * against a runaway server, not a memory budget. While it validates it picks up the top-level
 * "resourceType" so that each line can be compared with the manifest entry's type.
 *
 * Why not jansson per line: it would hold each line twice (text and tree) and allocate per value;
 * measured on generated US Core resources this scanner runs 30x faster (see docs/bulk-export.md),
 * which matters because one thread (the export's writer, writer.c) checks every byte of every
 * file of an export as fast as the network delivers them.
 *
 * The caller feeds chunks as they arrive; the checker stops after each line end so that the
 * caller knows where lines start and end in its output (to cut a bad line out in quarantine
 * mode).
 *
 * What a string, a number, a literal may hold, and the UTF-8 table, are the lexer core's
 * (json/lex.h), shared with the search-page scanner and the store's field scanner; this file keeps
 * the two shapes of walk: the resumable byte machine and the whole-line fast path. */
#include <stdio.h>
#include <string.h>

#include "bulk/bulk_internal.h"
#include "json/lex.h"

enum {
    ST_START = 0,  /* line start: whitespace, then '{' */
    ST_VALUE,      /* a value is expected (after ':' or ',' in an array) */
    ST_ARR_FIRST,  /* after '[': a value or ']' */
    ST_OBJ_FIRST,  /* after '{': a name or '}' */
    ST_OBJ_KEY,    /* after ',' in an object: a name */
    ST_COLON,      /* after a name */
    ST_AFTER,      /* after a value: ',' or the closing bracket */
    ST_END,        /* the top-level object is closed: only whitespace may follow */
    ST_STR,        /* inside a string */
    ST_STR_ESC,    /* after a backslash */
    ST_STR_U,      /* inside \uXXXX (u_left hex digits to go) */
    ST_STR_LOW_BS, /* after a high surrogate: '\' of the low one */
    ST_STR_LOW_U,  /* after a high surrogate and '\': 'u' */
    ST_UTF8,       /* inside a multi-byte UTF-8 sequence */
    ST_NUM_MINUS,  /* after '-' */
    ST_NUM_ZERO,   /* a leading 0 */
    ST_NUM_INT,    /* integer digits */
    ST_NUM_DOT,    /* after '.' */
    ST_NUM_FRAC,   /* fraction digits */
    ST_NUM_E,      /* after 'e' */
    ST_NUM_ESIGN,  /* after the exponent's sign */
    ST_NUM_EXP,    /* exponent digits */
    ST_LIT,        /* inside true/false/null */
    ST_ERROR       /* the line is bad: skip to its end */
};

enum { AFTER_STR_VALUE = 0, AFTER_STR_KEY = 1 };

void fs_ndjson_init(fs_ndjson_checker *ck, const char *expect_type, uint64_t max_line)
{
    memset(ck, 0, sizeof *ck);
    snprintf(ck->expect_type, sizeof ck->expect_type, "%s", expect_type ? expect_type : "");
    ck->max_line = max_line ? max_line : FS_BULK_DEFAULT_MAX_LINE;
    ck->line_no = 1;
}

void fs_ndjson_reset(fs_ndjson_checker *ck)
{
    char type[sizeof ck->expect_type];
    memcpy(type, ck->expect_type, sizeof type);
    fs_ndjson_init(ck, type, ck->max_line);
}

/* Reset the per-line state for the next line. */
static void next_line(fs_ndjson_checker *ck)
{
    ck->line_no++;
    ck->line_len = 0;
    ck->state = ST_START;
    ck->too_long = ck->failed = false;
    ck->depth = 0;
    ck->in_key = ck->value_is_rt = ck->capturing_rt = ck->rt_seen = ck->rt_bad = false;
    ck->key_len = ck->rt_len = 0;
    ck->u_high = 0;
}

static void fail(fs_ndjson_checker *ck, const char *what, unsigned char c)
{
    if (!ck->failed) {
        char shown[8];
        if (c >= 0x21 && c < 0x7f)
            snprintf(shown, sizeof shown, "'%c'", c);
        else
            snprintf(shown, sizeof shown, "0x%02x", c);
        snprintf(ck->reason, sizeof ck->reason, "%s at byte %llu (%s)", what,
                 (unsigned long long)ck->at + 1, shown);
        ck->failed = true;
    }
    ck->state = ST_ERROR;
}

/* JSON whitespace; the '\n' that would be one ends the line before any state sees it */
static bool is_ws(unsigned char c)
{
    return fs_lex_is_ws(c);
}

static bool push(fs_ndjson_checker *ck, bool object)
{
    if (ck->depth >= FS_NDJSON_MAX_DEPTH)
        return false;
    fs_lex_kind_set(ck->stack, ck->depth++, object);
    return true;
}

static bool top_is_object(const fs_ndjson_checker *ck)
{
    return fs_lex_kind_is_object(ck->stack, ck->depth - 1);
}

/* A decoded character of a string: kept when it belongs to a depth-1 name or the resourceType
 * value. Non-ASCII characters make either one unusable (both are ASCII when they matter). */
static void capture(fs_ndjson_checker *ck, uint32_t ch)
{
    if (ck->in_key) {
        if (ch < 0x80 && ck->key_len < sizeof ck->key)
            ck->key[ck->key_len++] = (char)ch;
        else
            ck->key_overflow = true;
    } else if (ck->capturing_rt) {
        if (ch < 0x80 && ck->rt_len < FS_BULK_MAX_TYPE_LEN)
            ck->resource_type[ck->rt_len++] = (char)ch;
        else
            ck->rt_bad = true;
    }
}

static void string_end(fs_ndjson_checker *ck)
{
    if (ck->after_str == AFTER_STR_KEY) {
        if (ck->in_key) {
            ck->value_is_rt =
                !ck->key_overflow && ck->key_len == 12 && memcmp(ck->key, "resourceType", 12) == 0;
            ck->in_key = false;
        }
        ck->state = ST_COLON;
        return;
    }
    if (ck->capturing_rt) {
        ck->capturing_rt = false;
        ck->resource_type[ck->rt_len] = '\0';
        if (ck->rt_len == 0)
            ck->rt_bad = true;
    }
    ck->state = ST_AFTER;
}

/* The start of a value at byte c. */
static void value_start(fs_ndjson_checker *ck, unsigned char c)
{
    bool rt = ck->value_is_rt;
    if (rt) {
        ck->value_is_rt = false;
        if (ck->rt_seen) {
            if (!ck->failed) {
                snprintf(ck->reason, sizeof ck->reason, "resourceType appears twice");
                ck->failed = true;
            }
            ck->state = ST_ERROR;
            return;
        }
        ck->rt_seen = true;
        if (c == '"') {
            ck->capturing_rt = true;
            ck->rt_len = 0;
        } else {
            ck->rt_bad = true;
        }
    }
    switch (c) {
    case '{':
        if (!push(ck, true))
            fail(ck, "nested deeper than 1024 levels", c);
        else
            ck->state = ST_OBJ_FIRST;
        return;
    case '[':
        if (!push(ck, false))
            fail(ck, "nested deeper than 1024 levels", c);
        else
            ck->state = ST_ARR_FIRST;
        return;
    case '"':
        ck->state = ST_STR;
        ck->after_str = AFTER_STR_VALUE;
        return;
    case '-': ck->state = ST_NUM_MINUS; return;
    case '0': ck->state = ST_NUM_ZERO; return;
    case 't':
        ck->state = ST_LIT;
        ck->lit = "rue";
        ck->lit_left = 3;
        return;
    case 'f':
        ck->state = ST_LIT;
        ck->lit = "alse";
        ck->lit_left = 4;
        return;
    case 'n':
        ck->state = ST_LIT;
        ck->lit = "ull";
        ck->lit_left = 3;
        return;
    default:
        if (c >= '1' && c <= '9') {
            ck->state = ST_NUM_INT;
            return;
        }
        fail(ck, "invalid JSON: a value cannot start with this", c);
    }
}

static void key_start(fs_ndjson_checker *ck)
{
    ck->state = ST_STR;
    ck->after_str = AFTER_STR_KEY;
    if (ck->depth == 1) {
        ck->in_key = true;
        ck->key_len = 0;
        ck->key_overflow = false;
    }
}

/* After a value ended at byte c (a delimiter, re-examined here). */
static void after_value(fs_ndjson_checker *ck, unsigned char c)
{
    if (is_ws(c))
        return;
    if (c == ',') {
        ck->state = top_is_object(ck) ? ST_OBJ_KEY : ST_VALUE;
        return;
    }
    if ((c == '}' && top_is_object(ck)) || (c == ']' && !top_is_object(ck))) {
        ck->depth--;
        ck->state = ck->depth == 0 ? ST_END : ST_AFTER;
        return;
    }
    fail(ck, "invalid JSON: ',' or a closing bracket expected", c);
}

static void utf8_lead(fs_ndjson_checker *ck, unsigned char c)
{
    unsigned char lo, hi;
    unsigned need = fs_lex_utf8_lead(c, &lo, &hi);
    if (!need) {
        fail(ck, "invalid UTF-8", c);
        return;
    }
    ck->u8_need = (uint8_t)need;
    ck->u8_lo = lo;
    ck->u8_hi = hi;
    capture(ck, 0x80); /* non-ASCII */
    ck->state = ST_UTF8;
}

/* One byte (not '\n') in any state but ST_ERROR. */
static void step(fs_ndjson_checker *ck, unsigned char c)
{
again:
    switch (ck->state) {
    case ST_START:
        if (is_ws(c))
            return;
        if (c != '{') {
            fail(ck, "not a JSON object: a line must start with '{'", c);
            return;
        }
        value_start(ck, c);
        return;
    case ST_VALUE:
        if (!is_ws(c))
            value_start(ck, c);
        return;
    case ST_ARR_FIRST:
        if (is_ws(c))
            return;
        if (c == ']') {
            ck->depth--;
            ck->state = ck->depth == 0 ? ST_END : ST_AFTER;
            return;
        }
        value_start(ck, c);
        return;
    case ST_OBJ_FIRST:
        if (is_ws(c))
            return;
        if (c == '}') {
            ck->depth--;
            ck->state = ck->depth == 0 ? ST_END : ST_AFTER;
        } else if (c == '"') {
            key_start(ck);
        } else {
            fail(ck, "invalid JSON: a member name expected", c);
        }
        return;
    case ST_OBJ_KEY:
        if (is_ws(c))
            return;
        if (c == '"')
            key_start(ck);
        else
            fail(ck, "invalid JSON: a member name expected", c);
        return;
    case ST_COLON:
        if (is_ws(c))
            return;
        if (c == ':')
            ck->state = ST_VALUE;
        else
            fail(ck, "invalid JSON: ':' expected", c);
        return;
    case ST_AFTER: after_value(ck, c); return;
    case ST_END:
        if (!is_ws(c))
            fail(ck, "text after the JSON object", c);
        return;
    case ST_STR:
        if (c == '"') {
            string_end(ck);
        } else if (c == '\\') {
            ck->state = ST_STR_ESC;
        } else if (c < 0x20) {
            fail(ck, "invalid JSON: control character in a string", c);
        } else if (c < 0x80) {
            capture(ck, c);
        } else {
            utf8_lead(ck, c);
        }
        return;
    case ST_STR_ESC: {
        int ch = fs_lex_escape_char(c);
        if (ch >= 0) {
            capture(ck, (uint32_t)ch);
            ck->state = ST_STR;
        } else if (c == 'u') {
            ck->state = ST_STR_U;
            ck->u_left = 4;
            ck->u_value = 0;
        } else {
            fail(ck, "invalid JSON: unknown escape", c);
        }
        return;
    }
    case ST_STR_U: {
        int h = fs_hex_value(c);
        if (h < 0) {
            fail(ck, "invalid JSON: bad \\u escape", c);
            return;
        }
        ck->u_value = ck->u_value << 4 | (uint32_t)h;
        if (--ck->u_left)
            return;
        uint32_t v = ck->u_value;
        if (ck->u_high) {
            if (v < 0xdc00 || v > 0xdfff) {
                fail(ck, "invalid JSON: a high surrogate without its low one", c);
                return;
            }
            ck->u_high = 0;
            capture(ck, 0x10000);
            ck->state = ST_STR;
        } else if (v >= 0xd800 && v <= 0xdbff) {
            ck->u_high = v;
            ck->state = ST_STR_LOW_BS;
        } else if (v >= 0xdc00 && v <= 0xdfff) {
            fail(ck, "invalid JSON: a lone low surrogate", c);
        } else if (v == 0) {
            fail(ck, "invalid JSON: \\u0000 in a string", c);
        } else {
            capture(ck, v);
            ck->state = ST_STR;
        }
        return;
    }
    case ST_STR_LOW_BS:
        if (c == '\\')
            ck->state = ST_STR_LOW_U;
        else
            fail(ck, "invalid JSON: a high surrogate without its low one", c);
        return;
    case ST_STR_LOW_U:
        if (c == 'u') {
            ck->state = ST_STR_U;
            ck->u_left = 4;
            ck->u_value = 0;
        } else {
            fail(ck, "invalid JSON: a high surrogate without its low one", c);
        }
        return;
    case ST_UTF8:
        if (c < ck->u8_lo || c > ck->u8_hi) {
            fail(ck, "invalid UTF-8", c);
            return;
        }
        ck->u8_lo = 0x80;
        ck->u8_hi = 0xbf;
        if (--ck->u8_need == 0)
            ck->state = ST_STR;
        return;
    case ST_NUM_MINUS:
        if (c == '0')
            ck->state = ST_NUM_ZERO;
        else if (c >= '1' && c <= '9')
            ck->state = ST_NUM_INT;
        else
            fail(ck, "invalid JSON: bad number after '-'", c);
        return;
    case ST_NUM_ZERO:
    case ST_NUM_INT:
        if (ck->state == ST_NUM_INT && c >= '0' && c <= '9')
            return;
        if (c == '.') {
            ck->state = ST_NUM_DOT;
            return;
        }
        if (c == 'e' || c == 'E') {
            ck->state = ST_NUM_E;
            return;
        }
        ck->state = ST_AFTER;
        goto again;
    case ST_NUM_DOT:
        if (c >= '0' && c <= '9')
            ck->state = ST_NUM_FRAC;
        else
            fail(ck, "invalid JSON: bad number after '.'", c);
        return;
    case ST_NUM_FRAC:
        if (c >= '0' && c <= '9')
            return;
        if (c == 'e' || c == 'E') {
            ck->state = ST_NUM_E;
            return;
        }
        ck->state = ST_AFTER;
        goto again;
    case ST_NUM_E:
        if (c == '+' || c == '-') {
            ck->state = ST_NUM_ESIGN;
            return;
        }
        /* fall through */
    case ST_NUM_ESIGN:
        if (c >= '0' && c <= '9')
            ck->state = ST_NUM_EXP;
        else
            fail(ck, "invalid JSON: bad number exponent", c);
        return;
    case ST_NUM_EXP:
        if (c >= '0' && c <= '9')
            return;
        ck->state = ST_AFTER;
        goto again;
    case ST_LIT:
        if (c != (unsigned char)*ck->lit) {
            fail(ck, "invalid JSON: bad literal (true, false, null)", c);
            return;
        }
        ck->lit++;
        if (--ck->lit_left == 0)
            ck->state = ST_AFTER;
        return;
    default: return;
    }
}

/* Decide the verdict of the line that just ended (at a '\n' or at the end of the file). */
static void conclude(fs_ndjson_checker *ck, bool at_eof)
{
    ck->verdict_line = ck->line_no;
    ck->verdict_offset = ck->line_start;
    ck->verdict_len = ck->line_len;
    if (ck->state == ST_START && !ck->failed) {
        ck->verdict = FS_NDJSON_EMPTY;
        snprintf(ck->reason, sizeof ck->reason, "empty line");
        ck->resource_type[0] = '\0';
        return;
    }
    ck->verdict = FS_NDJSON_BAD;
    if (ck->too_long) {
        snprintf(ck->reason, sizeof ck->reason, "line longer than the %llu-byte limit",
                 (unsigned long long)ck->max_line);
    } else if (ck->failed) {
        /* reason already set */
    } else if (ck->state != ST_END) {
        snprintf(ck->reason, sizeof ck->reason, "%s: the JSON object is incomplete (%llu bytes)",
                 at_eof ? "truncated last line" : "incomplete line",
                 (unsigned long long)ck->line_len);
    } else if (!ck->rt_seen) {
        snprintf(ck->reason, sizeof ck->reason, "no resourceType");
    } else if (ck->rt_bad) {
        snprintf(ck->reason, sizeof ck->reason, "resourceType is not a resource type name");
    } else if (ck->expect_type[0] && strcmp(ck->expect_type, ck->resource_type) != 0) {
        snprintf(ck->reason, sizeof ck->reason,
                 "resourceType \"%s\" where the manifest entry says \"%s\"", ck->resource_type,
                 ck->expect_type);
    } else if (!ck->expect_type[0] && !fs_bulk_type_name_ok(ck->resource_type)) {
        snprintf(ck->reason, sizeof ck->reason, "resourceType is not a resource type name");
    } else {
        ck->verdict = FS_NDJSON_OK;
        ck->reason[0] = '\0';
    }
}

/* ---- the fast path: a whole line in the buffer ------------------------------------------------
 *
 * Most lines arrive whole in one chunk. For those a plain recursive-descent-shaped loop over the
 * line (locals in registers, no state saved per byte) decides the common case, a good line, several
 * times faster than the resumable machine above. It only ever answers "good, with this
 * resourceType" or "not sure": anything else (a bad line, an empty one, an escape in a depth-1
 * name or in the resourceType, nesting past FAST_MAX_DEPTH) goes back to the resumable machine,
 * which scans the same line from its start and gives the verdict and the reason. So the fast path
 * can only make checking faster, never change a verdict. The fuzz target (tests/fuzz/
 * fuzz_ndjson.c) holds it to that: it feeds each input whole (fast path) and in small chunks
 * (lines split across chunks take the resumable machine) and requires the same verdicts.
 *
 * Every scan is bounded by the line's '\n' (e): the lexer core's pieces take it as their end, and
 * a single-byte look at *s is always in the buffer (at the latest it reads the '\n'). */

#define FAST_MAX_DEPTH 64

/* Whitespace within the line [s, e) (a '\n' never occurs before e). */
static const unsigned char *fast_ws(const unsigned char *s, const unsigned char *e)
{
    return fs_lex_skip_ws(s, e);
}

/* The rest of a string after its opening quote: just past the closing quote, or NULL when the
 * string is not valid JSON (the resumable machine then says why). *simple becomes false when the
 * string holds an escape or a non-ASCII character (its raw bytes are then not its value). */
FS_LEX_HOT const unsigned char *fast_string(const unsigned char *s, const unsigned char *e,
                                            bool *simple)
{
    unsigned seen = 0;
    fs_lex_error err;
    const unsigned char *at;
    s = fs_lex_string(s, e, false, &seen, &err, &at);
    *simple = !(seen & (FS_LEX_ESCAPED | FS_LEX_NON_ASCII));
    return s;
}

/* Check the line [s, e) (e is its '\n'). True when it is a good line: ck->resource_type then
 * holds its type. False when the resumable machine must decide. */
static bool fast_line(fs_ndjson_checker *ck, const unsigned char *s, const unsigned char *e)
{
    uint64_t objects = 0; /* bit d: the container at depth d+1 is an object */
    unsigned depth = 0;
    const unsigned char *rt = NULL;
    size_t rt_len = 0;
    bool simple;

    s = fast_ws(s, e);
    if (*s != '{')
        return false;
    s++;
    depth = 1;
    objects = 1;
obj_first:
    s = fast_ws(s, e);
    if (*s == '}')
        goto close;
key:
    if (*s != '"')
        return false;
    {
        const unsigned char *name = s + 1;
        if (!(s = fast_string(name, e, &simple)))
            return false;
        bool is_rt = false;
        if (depth == 1) {
            if (!simple)
                return false; /* an escape could spell resourceType: let the machine decode */
            is_rt = s - 1 - name == 12 && memcmp(name, "resourceType", 12) == 0;
        }
        s = fast_ws(s, e);
        if (*s != ':')
            return false;
        s = fast_ws(s + 1, e);
        if (is_rt) {
            if (rt || *s != '"')
                return false;
            rt = s + 1;
            if (!(s = fast_string(rt, e, &simple)) || !simple)
                return false;
            rt_len = (size_t)(s - 1 - rt);
            if (rt_len == 0 || rt_len > FS_BULK_MAX_TYPE_LEN)
                return false;
            goto after;
        }
    }
    goto value;
arr_first:
    s = fast_ws(s, e);
    if (*s == ']')
        goto close;
value:
    switch (*s) {
    case '"':
        if (!(s = fast_string(s + 1, e, &simple)))
            return false;
        goto after;
    case '{':
    case '[':
        if (depth >= FAST_MAX_DEPTH)
            return false;
        if (*s == '{')
            objects |= (uint64_t)1 << depth;
        else
            objects &= ~((uint64_t)1 << depth);
        depth++;
        if (*s++ == '{')
            goto obj_first;
        goto arr_first;
    case 't':
    case 'f':
    case 'n':
        if (!(s = fs_lex_literal(s, e)))
            return false;
        goto after;
    default: {
        fs_lex_error err;
        const unsigned char *at;
        if (!(s = fs_lex_number(s, e, &err, &at)))
            return false;
        goto after;
    }
    }
after:
    s = fast_ws(s, e);
    if (*s == ',') {
        s = fast_ws(s + 1, e);
        if ((objects >> (depth - 1)) & 1)
            goto key;
        goto value;
    }
    if (*s != ((objects >> (depth - 1)) & 1 ? '}' : ']'))
        return false;
close:
    s++;
    if (--depth > 0)
        goto after;
    if (fast_ws(s, e) != e || !rt)
        return false;
    memcpy(ck->resource_type, rt, rt_len);
    ck->resource_type[rt_len] = '\0';
    if (ck->expect_type[0] ? strcmp(ck->expect_type, ck->resource_type) != 0
                           : !fs_bulk_type_name_ok(ck->resource_type))
        return false;
    return true;
}

fs_ndjson_event fs_ndjson_feed(fs_ndjson_checker *ck, const char *data, size_t len, size_t *used)
{
    static const unsigned char bom[3] = {0xef, 0xbb, 0xbf};
    const unsigned char *p = (const unsigned char *)data, *end = p + len;
    *used = 0;
    /* a UTF-8 byte order mark at the start of the file is skipped (and reported) */
    while (p < end && ck->file_offset < 3 && ck->bom_seen == ck->file_offset && !ck->bom) {
        if (*p != bom[ck->bom_seen]) {
            if (ck->bom_seen > 0) {
                /* the bytes taken for a BOM belong to the first line after all */
                ck->line_start = 0;
                ck->line_len = ck->bom_seen;
                ck->at = ck->bom_seen;
                fail(ck, "broken byte order mark", *p);
            }
            break;
        }
        ck->bom_seen++;
        ck->file_offset++;
        ck->line_start = ck->file_offset;
        p++;
        if (ck->bom_seen == 3)
            ck->bom = true;
    }
    if (p == end) {
        *used = len;
        return FS_NDJSON_MORE;
    }
    if (ck->state == ST_START && ck->line_len == 0 && !ck->failed && !ck->too_long) {
        /* a line starts here: if all of it is in the buffer, try the fast path */
        size_t span =
            (uint64_t)(end - p) > ck->max_line ? (size_t)ck->max_line + 1 : (size_t)(end - p);
        const unsigned char *eol = memchr(p, '\n', span);
        if (eol && fast_line(ck, p, eol)) {
            ck->line_len = (uint64_t)(eol - p);
            ck->verdict_line = ck->line_no;
            ck->verdict_offset = ck->line_start;
            ck->verdict_len = ck->line_len;
            ck->verdict = FS_NDJSON_OK;
            ck->reason[0] = '\0';
            ck->file_offset += (uint64_t)(eol + 1 - p);
            *used = (size_t)(eol + 1 - (const unsigned char *)data);
            next_line(ck);
            ck->line_start = ck->file_offset;
            return FS_NDJSON_LINE;
        }
    }
    const unsigned char *start = p;
    uint64_t room = ck->max_line - ck->line_len; /* line_len <= max_line unless too_long */
    if (ck->too_long)
        room = UINT64_MAX;
    const unsigned char *lim = (uint64_t)(end - p) > room ? p + room : end;
    const unsigned char *nl = NULL;

    while (p < lim) {
        if (ck->state == ST_ERROR) {
            nl = memchr(p, '\n', (size_t)(lim - p));
            p = nl ? nl : lim;
            break;
        }
        if (ck->state == ST_STR && !ck->in_key && !ck->capturing_rt) {
            p = fs_lex_plain_end(p, lim);
            if (p == lim)
                break;
        }
        unsigned char c = *p;
        if (c == '\n') {
            nl = p;
            break;
        }
        ck->at = ck->line_len + (uint64_t)(p - start);
        step(ck, c);
        p++;
    }
    /* a line exactly max_line bytes long may end right at the limit */
    if (!nl && p == lim && lim < end && *lim == '\n')
        nl = lim;
    if (nl) {
        ck->line_len += (uint64_t)(nl - start);
        conclude(ck, false);
        size_t n = (size_t)(nl + 1 - (const unsigned char *)data);
        ck->file_offset += (uint64_t)(nl + 1 - start);
        *used = n;
        next_line(ck);
        ck->line_start = ck->file_offset;
        return FS_NDJSON_LINE;
    }
    ck->line_len += (uint64_t)(p - start);
    ck->file_offset += (uint64_t)(p - start);
    if (p < end) {
        /* the next byte would pass the cap */
        ck->line_len++;
        ck->file_offset++;
        p++;
        ck->too_long = true;
        ck->state = ST_ERROR;
        *used = (size_t)(p - (const unsigned char *)data);
        return FS_NDJSON_TOO_LONG;
    }
    *used = len;
    return FS_NDJSON_MORE;
}

bool fs_ndjson_finish(fs_ndjson_checker *ck)
{
    if (ck->line_len == 0 && ck->state == ST_START && !ck->failed)
        return false;
    /* a complete last object without '\n' is accepted: a number cannot end the top level */
    conclude(ck, true);
    next_line(ck);
    ck->line_start = ck->file_offset;
    return true;
}

fs_ndjson_verdict fs_ndjson_check_line(const char *line, size_t len, const char *expect_type,
                                       char *reason, size_t reason_size)
{
    fs_ndjson_checker ck;
    fs_ndjson_init(&ck, expect_type, len + 1);
    ck.bom_seen = 4; /* no BOM handling for a single line */
    size_t used = 0, off = 0;
    fs_ndjson_verdict v = FS_NDJSON_EMPTY;
    bool decided = false;
    while (off < len) {
        fs_ndjson_event ev = fs_ndjson_feed(&ck, line + off, len - off, &used);
        off += used;
        if (ev == FS_NDJSON_LINE) {
            /* a '\n' inside: the line is not one line */
            v = FS_NDJSON_BAD;
            snprintf(ck.reason, sizeof ck.reason, "a newline inside the line");
            decided = true;
            break;
        }
    }
    if (!decided) {
        if (fs_ndjson_finish(&ck))
            v = ck.verdict;
        else
            snprintf(ck.reason, sizeof ck.reason, "empty line");
    }
    if (reason && reason_size)
        snprintf(reason, reason_size, "%s", v == FS_NDJSON_OK ? "" : ck.reason);
    return v;
}
