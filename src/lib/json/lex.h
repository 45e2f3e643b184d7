/* json/lex.h: the JSON lexer core that the library's hand-written scanners share: the streaming
 * NDJSON line checker (bulk/ndjson.c), the search-page scanner (fhir/span.c), the store's field
 * scanner (store/fields.c) and the manifest reader (bulk/manifest.c). It decides, in one place,
 * what RFC 8259 (with strict UTF-8, RFC 3629) accepts: whitespace, the bytes of a string (escapes,
 * surrogate pairs, control characters, UTF-8), numbers, the three literals; it also holds the
 * container-kind bit stack of the iterative skippers and one strict value skipper
 * (fs_lex_skip_value).
 *
 * The scanners read members that matter to them as they go and differ in what they keep, so the
 * core gives pieces rather than a token stream: a scanner calls fs_lex_string() at a '"' and gets
 * the end of the string, whether it holds escapes or non-ASCII bytes, or a fault code and where
 * it is. The pieces are static inline so that each scanner's hot loop gets them specialised and
 * inlined (strings are most of the bytes of a FHIR resource): the string skipper compares 16
 * bytes at a time with SSE2 where the compiler targets it, 8 at a time (SWAR) elsewhere.
 *
 * Faults are codes (fs_lex_error), not text, so that each scanner keeps its own wording;
 * fs_lex_strerror() gives a default one. Nothing here allocates, and nothing depends on jansson.
 * Thread safety: pure functions. Internal: the prefix is fs_lex_; nothing here is exported. */
#ifndef FS_JSON_LEX_H
#define FS_JSON_LEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/core.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* The hot pieces are forced inline: left to itself the compiler keeps one out-of-line copy per
 * file once a scanner calls them from several places, and the call costs more than the work. */
#define FS_LEX_HOT static inline __attribute__((always_inline))

typedef enum fs_lex_error {
    FS_LEX_OK = 0,
    FS_LEX_E_UNTERMINATED, /* a string without its closing quote */
    FS_LEX_E_CONTROL,      /* a control character (below 0x20) in a string */
    FS_LEX_E_UTF8,         /* a byte sequence that is not UTF-8 in a string */
    FS_LEX_E_ESCAPE,       /* a backslash followed by none of "\/bfnrtu */
    FS_LEX_E_HEX,          /* \u without four hex digits */
    FS_LEX_E_NUL,          /* \u0000 (refused unless the caller allows it) */
    FS_LEX_E_LONE_LOW,     /* a low surrogate escape with no high one before it */
    FS_LEX_E_LONE_HIGH,    /* a high surrogate escape without its low one */
    FS_LEX_E_END,          /* the text ends where a value was expected */
    FS_LEX_E_UNEXPECTED,   /* a byte no value starts with, or a misspelt literal */
    FS_LEX_E_FRACTION,     /* a number without digits after its decimal point */
    FS_LEX_E_EXPONENT,     /* a number without digits in its exponent */
    FS_LEX_E_NAME,         /* a member name (a string) expected */
    FS_LEX_E_COLON,        /* ':' expected after a member name */
    FS_LEX_E_OBJECT,       /* ',' or '}' expected in an object */
    FS_LEX_E_ARRAY,        /* ',' or ']' expected in an array */
    FS_LEX_E_DEPTH         /* nested deeper than the caller's limit */
} fs_lex_error;

/* A default English text of a fault ("an unterminated string"); static. */
const char *fs_lex_strerror(fs_lex_error e);

/* ---- whitespace ------------------------------------------------------------------------------ */

FS_LEX_HOT bool fs_lex_is_ws(unsigned c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

/* The first byte at or after p that is not JSON whitespace, or end. */
FS_LEX_HOT const unsigned char *fs_lex_skip_ws(const unsigned char *p, const unsigned char *end)
{
    while (p < end && fs_lex_is_ws(*p))
        p++;
    return p;
}

/* ---- UTF-8 (RFC 3629, the table of section 4) ------------------------------------------------ */

/* For a lead byte c >= 0x80: how many continuation bytes follow (1 to 3), and the range [*lo,
 * *hi] of the first of them (the others are 0x80..0xbf), which rules out overlong forms, encoded
 * surrogates and code points beyond U+10FFFF. 0 when c starts no character. */
static inline unsigned fs_lex_utf8_lead(unsigned c, unsigned char *lo, unsigned char *hi)
{
    *lo = 0x80;
    *hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        return 1;
    if (c >= 0xe0 && c <= 0xef) {
        if (c == 0xe0)
            *lo = 0xa0;
        else if (c == 0xed)
            *hi = 0x9f;
        return 2;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (c == 0xf0)
            *lo = 0x90;
        else if (c == 0xf4)
            *hi = 0x8f;
        return 3;
    }
    return 0;
}

/* The length of the well-formed character at p (p[0] >= 0x80, p < end), 0 when it is not one. */
static inline size_t fs_lex_utf8_length(const unsigned char *p, const unsigned char *end)
{
    unsigned char lo, hi;
    unsigned need = fs_lex_utf8_lead(p[0], &lo, &hi);
    if (need == 0 || (size_t)(end - p) <= need || p[1] < lo || p[1] > hi)
        return 0;
    for (unsigned i = 2; i <= need; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return need + 1;
}

/* ---- strings --------------------------------------------------------------------------------- */

/* 16 bytes at a time (SSE2): true with *pp at the first byte that needs a look in a string ('"',
 * '\', a control byte or a non-ASCII byte); false with *pp where fewer than 16 bytes remain
 * (at once without SSE2). */
FS_LEX_HOT bool fs_lex_plain16(const unsigned char **pp, const unsigned char *end)
{
#if defined(__SSE2__)
    const unsigned char *p = *pp;
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'),
                  space = _mm_set1_epi8(0x20);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        /* signed compare: bytes >= 0x80 are negative, so "< 0x20" also catches non-ASCII */
        __m128i hit =
            _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                         _mm_cmplt_epi8(v, space));
        unsigned mask = (unsigned)_mm_movemask_epi8(hit);
        if (mask) {
            *pp = p + __builtin_ctz(mask);
            return true;
        }
        p += 16;
    }
    *pp = p;
#else
    (void)pp;
    (void)end;
#endif
    return false;
}

/* The first byte at or after p that needs a look in a string, 8 bytes at a time (SWAR) then
 * one at a time; end when there is none. */
FS_LEX_HOT const unsigned char *fs_lex_plain_tail(const unsigned char *p, const unsigned char *end)
{
    const uint64_t ones = UINT64_C(0x0101010101010101), highs = UINT64_C(0x8080808080808080);
    while (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
        /* the high bit of a byte is set when it is '"' or '\' (a zero byte of q or b), below
         * 0x20, or >= 0x80; a borrow can flag a byte above a flagged one, never one below, and
         * none when no byte needs a look */
        if ((((q - ones) & ~q) | ((b - ones) & ~b) | ((w - ones * 0x20) & ~w) | w) & highs)
            break; /* the byte loop below finds it within these eight */
        p += 8;
    }
    while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
        p++;
    return p;
}

/* The first byte at or after p that needs a look in a string: '"', '\', a control byte or a
 * non-ASCII byte; end when there is none. */
FS_LEX_HOT const unsigned char *fs_lex_plain_end(const unsigned char *p, const unsigned char *end)
{
    if (fs_lex_plain16(&p, end))
        return p;
    return fs_lex_plain_tail(p, end);
}

/* The value of the four hex digits at p (four bytes readable), or -1. */
static inline long fs_lex_hex4(const unsigned char *p)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = fs_hex_value(p[i]);
        if (h < 0)
            return -1;
        v = v << 4 | h;
    }
    return v;
}

/* The escape at p[0] == '\': its length (2; 6 for \uXXXX; 12 for a surrogate pair, one
 * character), or 0 with the fault in *err. \u0000 is accepted (and *nul set) only when nul is
 * not NULL. */
static inline size_t fs_lex_escape(const unsigned char *p, const unsigned char *end, bool *nul,
                                   fs_lex_error *err)
{
    if (end - p < 2) {
        *err = FS_LEX_E_UNTERMINATED;
        return 0;
    }
    switch (p[1]) {
    case '"':
    case '\\':
    case '/':
    case 'b':
    case 'f':
    case 'n':
    case 'r':
    case 't': return 2;
    case 'u': break;
    default: *err = FS_LEX_E_ESCAPE; return 0;
    }
    long cp = end - p >= 6 ? fs_lex_hex4(p + 2) : -1;
    if (cp < 0) {
        *err = FS_LEX_E_HEX;
        return 0;
    }
    if (cp == 0) {
        if (!nul) {
            *err = FS_LEX_E_NUL;
            return 0;
        }
        *nul = true;
        return 6;
    }
    if (cp >= 0xdc00 && cp <= 0xdfff) {
        *err = FS_LEX_E_LONE_LOW;
        return 0;
    }
    if (cp < 0xd800 || cp > 0xdbff)
        return 6;
    long low = end - p >= 12 && p[6] == '\\' && p[7] == 'u' ? fs_lex_hex4(p + 8) : -1;
    if (low < 0xdc00 || low > 0xdfff) {
        *err = FS_LEX_E_LONE_HIGH;
        return 0;
    }
    return 12;
}

/* The character a one-letter escape stands for ('n' -> '\n'; '"', '\', '/' for themselves), -1
 * when c is none of "\/bfnrt. */
static inline int fs_lex_escape_char(unsigned c)
{
    switch (c) {
    case '"':
    case '\\':
    case '/': return (int)c;
    case 'b': return '\b';
    case 'f': return '\f';
    case 'n': return '\n';
    case 'r': return '\r';
    case 't': return '\t';
    }
    return -1;
}

/* The code point of a \u escape at p that fs_lex_escape() accepted (a surrogate pair taken
 * whole); *len gets its length (6 or 12). */
static inline uint32_t fs_lex_unicode(const unsigned char *p, size_t *len)
{
    uint32_t cp = (uint32_t)fs_lex_hex4(p + 2);
    *len = 6;
    if (cp >= 0xd800 && cp <= 0xdbff) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + ((uint32_t)fs_lex_hex4(p + 8) - 0xdc00);
        *len = 12;
    }
    return cp;
}

/* A code point (at most U+10FFFF) as UTF-8 in out: its length, 1 to 4. */
static inline size_t fs_lex_utf8_encode(uint32_t cp, unsigned char out[4])
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xc0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xe0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (unsigned char)(0xf0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

/* What fs_lex_string() saw in a string. */
enum {
    FS_LEX_ESCAPED = 1u << 0,   /* a backslash escape: the raw bytes are not the value */
    FS_LEX_NON_ASCII = 1u << 1, /* a byte >= 0x80 (valid UTF-8) */
    FS_LEX_NUL_ESCAPE = 1u << 2 /* a \u0000 (only when allow_nul) */
};

/* The rest of a string whose opening quote is just before p: the position just past its closing
 * quote, with FS_LEX_* bits added to *seen; or NULL with the fault in *err and its byte in *at
 * (end for an unterminated string). \u0000 is a fault unless allow_nul. */
FS_LEX_HOT const unsigned char *fs_lex_string(const unsigned char *p, const unsigned char *end,
                                              bool allow_nul, unsigned *seen, fs_lex_error *err,
                                              const unsigned char **at)
{
    for (;;) {
        /* a hit of the 16-byte loop is in bounds: no test on that (the usual) path */
        if (!fs_lex_plain16(&p, end)) {
            p = fs_lex_plain_tail(p, end);
            if (p >= end) {
                *err = FS_LEX_E_UNTERMINATED;
                *at = end;
                return NULL;
            }
        }
        unsigned c = *p;
        if (c == '"')
            return p + 1;
        size_t n;
        if (c == '\\') {
            bool nul = false;
            *seen |= FS_LEX_ESCAPED;
            n = fs_lex_escape(p, end, allow_nul ? &nul : NULL, err);
            if (nul)
                *seen |= FS_LEX_NUL_ESCAPE;
        } else if (c < 0x20) {
            n = 0;
            *err = FS_LEX_E_CONTROL;
        } else {
            *seen |= FS_LEX_NON_ASCII;
            n = fs_lex_utf8_length(p, end);
            *err = FS_LEX_E_UTF8;
        }
        if (!n) {
            *at = p;
            return NULL;
        }
        p += n;
    }
}

/* ---- numbers and literals -------------------------------------------------------------------- */

static inline bool fs_lex_is_digit(unsigned c)
{
    return c >= '0' && c <= '9';
}

/* A number at p (-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?): just past it, or NULL with
 * the fault in *err and its byte in *at. */
static inline const unsigned char *fs_lex_number(const unsigned char *p, const unsigned char *end,
                                                 fs_lex_error *err, const unsigned char **at)
{
    if (p < end && *p == '-')
        p++;
    if (p < end && *p == '0') {
        p++;
    } else if (p < end && *p >= '1' && *p <= '9') {
        while (++p < end && fs_lex_is_digit(*p))
            ;
    } else {
        *err = FS_LEX_E_UNEXPECTED;
        *at = p;
        return NULL;
    }
    if (p < end && *p == '.') {
        if (++p >= end || !fs_lex_is_digit(*p)) {
            *err = FS_LEX_E_FRACTION;
            *at = p;
            return NULL;
        }
        while (++p < end && fs_lex_is_digit(*p))
            ;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || !fs_lex_is_digit(*p)) {
            *err = FS_LEX_E_EXPONENT;
            *at = p;
            return NULL;
        }
        while (++p < end && fs_lex_is_digit(*p))
            ;
    }
    return p;
}

/* true, false or null at p: just past it, or NULL. */
static inline const unsigned char *fs_lex_literal(const unsigned char *p, const unsigned char *end)
{
    size_t n = *p == 'f' ? 5 : 4;
    const char *word = *p == 't' ? "true" : *p == 'f' ? "false" : "null";
    if ((size_t)(end - p) < n || memcmp(p, word, n) != 0)
        return NULL;
    return p + n;
}

/* ---- the container stack --------------------------------------------------------------------- */

/* The kind of each open container, one bit per level in the caller's bytes (1: an object). */
static inline void fs_lex_kind_set(uint8_t *kinds, unsigned level, bool object)
{
    if (object)
        kinds[level / 8] = (uint8_t)(kinds[level / 8] | (1u << (level % 8)));
    else
        kinds[level / 8] = (uint8_t)(kinds[level / 8] & ~(1u << (level % 8)));
}

static inline bool fs_lex_kind_is_object(const uint8_t *kinds, unsigned level)
{
    return (kinds[level / 8] >> (level % 8)) & 1u;
}

/* ---- one value ------------------------------------------------------------------------------- */

/* The strict skipper's settings and its report. */
typedef struct fs_lex_skip {
    unsigned max_open;             /* containers the value may open (nesting below its own level) */
    uint8_t *kinds;                /* at least max_open / 8 + 1 bytes, the caller's */
    bool allow_nul;                /* \u0000 accepted (and reported in saw_nul) */
    bool saw_nul;                  /* out: a \u0000 was seen */
    fs_lex_error error;            /* out: the fault */
    const unsigned char *error_at; /* out: its byte */
} fs_lex_skip;

/* Validate the one JSON value at p (leading whitespace is skipped), however nested, without
 * recursion: just past it, or NULL with sk->error and sk->error_at set. Inline, so that each
 * caller's copy has its settings folded in. */
static inline const unsigned char *fs_lex_skip_value(const unsigned char *p,
                                                     const unsigned char *end, fs_lex_skip *sk)
{
    unsigned open = 0; /* containers opened here */
    unsigned seen = 0;
    fs_lex_error err = FS_LEX_OK;
    const unsigned char *at = NULL;

value:
    p = fs_lex_skip_ws(p, end);
    if (p >= end) {
        err = FS_LEX_E_END;
        at = p;
        goto bad;
    }
    switch (*p) {
    case '"':
        if (!(p = fs_lex_string(p + 1, end, sk->allow_nul, &seen, &err, &at)))
            goto bad;
        break;
    case '{':
    case '[': {
        unsigned c = *p;
        if (open >= sk->max_open) {
            err = FS_LEX_E_DEPTH;
            at = p;
            goto bad;
        }
        fs_lex_kind_set(sk->kinds, open++, c == '{');
        p = fs_lex_skip_ws(p + 1, end);
        if (p < end && *p == (c == '{' ? '}' : ']')) {
            p++;
            open--;
            break;
        }
        if (c == '[')
            goto value;
        goto member;
    }
    case 't':
    case 'f':
    case 'n':
        if (!(at = p, p = fs_lex_literal(p, end))) {
            err = FS_LEX_E_UNEXPECTED;
            goto bad;
        }
        break;
    default:
        if (!(p = fs_lex_number(p, end, &err, &at)))
            goto bad;
        break;
    }

    /* after a value: close containers, or go on to the next element or member */
    while (open > 0) {
        p = fs_lex_skip_ws(p, end);
        bool object = fs_lex_kind_is_object(sk->kinds, open - 1);
        if (p < end && *p == ',') {
            p = fs_lex_skip_ws(p + 1, end);
            if (object)
                goto member;
            goto value;
        }
        if (p >= end || *p != (object ? '}' : ']')) {
            err = object ? FS_LEX_E_OBJECT : FS_LEX_E_ARRAY;
            at = p;
            goto bad;
        }
        p++;
        open--;
    }
    if (seen & FS_LEX_NUL_ESCAPE)
        sk->saw_nul = true;
    return p;

member:
    if (p >= end || *p != '"') {
        err = FS_LEX_E_NAME;
        at = p;
        goto bad;
    }
    if (!(p = fs_lex_string(p + 1, end, sk->allow_nul, &seen, &err, &at)))
        goto bad;
    p = fs_lex_skip_ws(p, end);
    if (p >= end || *p != ':') {
        err = FS_LEX_E_COLON;
        at = p;
        goto bad;
    }
    p++;
    goto value;

bad:
    if (seen & FS_LEX_NUL_ESCAPE)
        sk->saw_nul = true;
    sk->error = err;
    sk->error_at = at;
    return NULL;
}

#endif
