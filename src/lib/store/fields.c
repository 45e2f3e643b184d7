/* store/fields.c: the line -> fields extractor (see fields.h). A single left-to-right pass over
 * the bytes of one resource: a member loop for the three objects whose members matter (the
 * resource, its meta, and a subject/patient/beneficiary reference), and the lexer core's strict
 * skipper (json/lex.h) for every other value; strings, numbers and literals are the core's too.
 *
 * Extracted strings normally point into the line; a value written with escapes ("P\u0061tient")
 * is decoded into a buffer of the result, so the scanner reads what a strict parser reads. */
#include <string.h>

#include "core/core.h"
#include "json/lex.h"
#include "store/fields.h"

typedef struct scanner {
    const unsigned char *p;
    const unsigned char *end;
    const char *why;
    bool nul_escape;
    /* one bit per open container of the skipper: 1 = object, 0 = array */
    uint8_t kinds[FS_STORE_MAX_DEPTH / 8 + 1];
} scanner;

/* A captured string value: raw bytes between the quotes, and whether escapes occur. */
typedef struct raw_string {
    const unsigned char *start;
    size_t len;
    bool escaped;
    bool present;
    bool is_string; /* false when the member exists with another kind of value */
} raw_string;

/* Where the member callbacks put what they find. */
typedef struct capture {
    raw_string resource_type, id, version_id, last_updated;
    raw_string ref[3]; /* subject, patient, beneficiary */
    raw_string *current_ref;
    unsigned seen; /* duplicate detection for extracted members */
} capture;

enum {
    SEEN_TYPE = 1u << 0,
    SEEN_ID = 1u << 1,
    SEEN_META = 1u << 2,
    SEEN_SUBJECT = 1u << 3,
    SEEN_PATIENT = 1u << 4,
    SEEN_BENEFICIARY = 1u << 5,
    SEEN_VERSION = 1u << 6,
    SEEN_UPDATED = 1u << 7
};

static bool fail(scanner *sc, const char *why)
{
    if (!sc->why)
        sc->why = why;
    return false;
}

static void skip_ws(scanner *sc)
{
    sc->p = fs_lex_skip_ws(sc->p, sc->end);
}

/* The scanner's words for the lexer's faults (they reach quarantine records and put errors). */
static bool lex_fail(scanner *sc, fs_lex_error e)
{
    switch (e) {
    case FS_LEX_E_UNTERMINATED: return fail(sc, "unterminated string");
    case FS_LEX_E_CONTROL: return fail(sc, "control character in a string");
    case FS_LEX_E_UTF8: return fail(sc, "invalid UTF-8");
    case FS_LEX_E_ESCAPE: return fail(sc, "invalid escape in a string");
    case FS_LEX_E_HEX: return fail(sc, "invalid \\u escape in a string");
    case FS_LEX_E_LONE_LOW:
    case FS_LEX_E_LONE_HIGH: return fail(sc, "unpaired UTF-16 surrogate in a string");
    case FS_LEX_E_END: return fail(sc, "truncated line");
    case FS_LEX_E_FRACTION:
    case FS_LEX_E_EXPONENT: return fail(sc, "invalid number");
    case FS_LEX_E_NAME: return fail(sc, "expected a member name");
    case FS_LEX_E_COLON: return fail(sc, "expected ':'");
    case FS_LEX_E_OBJECT: return fail(sc, "expected ',' or '}'");
    case FS_LEX_E_ARRAY: return fail(sc, "expected ',' or ']'");
    case FS_LEX_E_DEPTH: return fail(sc, "nested too deeply");
    default: return fail(sc, "unexpected character");
    }
}

/* ---- strings --------------------------------------------------------------------------------- */

/* At a '"': scan to the closing quote, checking escapes, control characters and UTF-8. */
static bool scan_string(scanner *sc, raw_string *out)
{
    unsigned seen = 0;
    fs_lex_error err;
    const unsigned char *at;
    const unsigned char *end = fs_lex_string(sc->p + 1, sc->end, true, &seen, &err, &at);
    if (!end)
        return lex_fail(sc, err);
    if (seen & FS_LEX_NUL_ESCAPE)
        sc->nul_escape = true;
    if (out) {
        out->start = sc->p + 1;
        out->len = (size_t)(end - 1 - out->start);
        out->escaped = (seen & FS_LEX_ESCAPED) != 0;
        out->present = true;
        out->is_string = true;
    }
    sc->p = end;
    return true;
}

/* Decode a scanned string (already validated) into buf; false when it does not fit. */
static bool decode_string(const raw_string *s, char *buf, size_t cap, size_t *out_len)
{
    const unsigned char *p = s->start, *end = s->start + s->len;
    size_t n = 0;
    while (p < end) {
        if (*p != '\\') {
            if (n >= cap)
                return false;
            buf[n++] = (char)*p++;
            continue;
        }
        unsigned c = p[1];
        unsigned long cp;
        if (c == 'u') {
            size_t len;
            cp = fs_lex_unicode(p, &len);
            p += len;
        } else {
            p += 2;
            cp = (unsigned long)fs_lex_escape_char(c);
        }
        unsigned char enc[4];
        size_t k = fs_lex_utf8_encode((uint32_t)cp, enc);
        if (cap - n < k)
            return false;
        memcpy(buf + n, enc, k);
        n += k;
    }
    *out_len = n;
    return true;
}

/* Whether a scanned member name equals `want` (want_len bytes), decoding escapes if any. */
static inline bool key_is(const raw_string *key, const char *want, size_t want_len)
{
    if (!key->escaped)
        return key->len == want_len && memcmp(key->start, want, want_len) == 0;
    char buf[32];
    size_t n;
    return decode_string(key, buf, sizeof buf, &n) && n == want_len && memcmp(buf, want, n) == 0;
}

#define KEY_IS(key, literal) key_is((key), literal, sizeof literal - 1)

/* ---- values ---------------------------------------------------------------------------------- */

/* Skip one value of any kind; `depth` is the nesting depth of the value's container. */
static bool skip_value(scanner *sc, unsigned depth)
{
    fs_lex_skip sk = {
        .max_open = FS_STORE_MAX_DEPTH - 1 - depth, .kinds = sc->kinds, .allow_nul = true};
    const unsigned char *end = fs_lex_skip_value(sc->p, sc->end, &sk);
    if (sk.saw_nul)
        sc->nul_escape = true;
    if (!end)
        return lex_fail(sc, sk.error);
    sc->p = end;
    return true;
}

/* Capture a string-valued member, or note that the member has another kind of value. */
static bool capture_string(scanner *sc, unsigned depth, raw_string *slot)
{
    if (*sc->p == '"')
        return scan_string(sc, slot);
    slot->present = true;
    slot->is_string = false;
    return skip_value(sc, depth);
}

typedef bool (*member_fn)(scanner *sc, unsigned depth, const raw_string *key, capture *cap);

/* At a '{': run `fn` on every member; fn consumes the member's value. */
static bool scan_object(scanner *sc, unsigned depth, member_fn fn, capture *cap)
{
    if (depth >= FS_STORE_MAX_DEPTH)
        return fail(sc, "nested too deeply");
    sc->p++;
    skip_ws(sc);
    if (sc->p < sc->end && *sc->p == '}') {
        sc->p++;
        return true;
    }
    for (;;) {
        skip_ws(sc);
        raw_string key = {0};
        if (sc->p >= sc->end || *sc->p != '"' || !scan_string(sc, &key))
            return fail(sc, "expected a member name");
        skip_ws(sc);
        if (sc->p >= sc->end || *sc->p != ':')
            return fail(sc, "expected ':'");
        sc->p++;
        skip_ws(sc);
        if (sc->p >= sc->end)
            return fail(sc, "truncated line");
        if (!fn(sc, depth, &key, cap))
            return false;
        skip_ws(sc);
        if (sc->p >= sc->end)
            return fail(sc, "truncated line");
        if (*sc->p == ',') {
            sc->p++;
            continue;
        }
        if (*sc->p == '}') {
            sc->p++;
            return true;
        }
        return fail(sc, "expected ',' or '}'");
    }
}

static bool once(scanner *sc, capture *cap, unsigned bit)
{
    if (cap->seen & bit)
        return fail(sc, "duplicate member");
    cap->seen |= bit;
    return true;
}

static bool reference_member(scanner *sc, unsigned depth, const raw_string *key, capture *cap)
{
    if (KEY_IS(key, "reference")) {
        if (cap->current_ref->present)
            return fail(sc, "duplicate member");
        return capture_string(sc, depth + 1, cap->current_ref);
    }
    return skip_value(sc, depth + 1);
}

static bool meta_member(scanner *sc, unsigned depth, const raw_string *key, capture *cap)
{
    if (KEY_IS(key, "versionId"))
        return once(sc, cap, SEEN_VERSION) && capture_string(sc, depth + 1, &cap->version_id);
    if (KEY_IS(key, "lastUpdated"))
        return once(sc, cap, SEEN_UPDATED) && capture_string(sc, depth + 1, &cap->last_updated);
    return skip_value(sc, depth + 1);
}

static bool resource_member(scanner *sc, unsigned depth, const raw_string *key, capture *cap)
{
    /* most members are none of these: an unescaped name of another length is skipped at once */
    size_t len = key->len;
    if (!key->escaped && len != 2 && len != 4 && len != 7 && len != 11 && len != 12)
        return skip_value(sc, depth + 1);
    if (KEY_IS(key, "resourceType"))
        return once(sc, cap, SEEN_TYPE) && capture_string(sc, depth + 1, &cap->resource_type);
    if (KEY_IS(key, "id"))
        return once(sc, cap, SEEN_ID) && capture_string(sc, depth + 1, &cap->id);
    if (KEY_IS(key, "meta")) {
        if (!once(sc, cap, SEEN_META))
            return false;
        return *sc->p == '{' ? scan_object(sc, depth + 1, meta_member, cap)
                             : skip_value(sc, depth + 1);
    }
    int ref = KEY_IS(key, "subject")       ? 0
              : KEY_IS(key, "patient")     ? 1
              : KEY_IS(key, "beneficiary") ? 2
                                           : -1;
    if (ref < 0)
        return skip_value(sc, depth + 1);
    static const unsigned ref_bits[3] = {SEEN_SUBJECT, SEEN_PATIENT, SEEN_BENEFICIARY};
    if (!once(sc, cap, ref_bits[ref]))
        return false;
    if (*sc->p != '{')
        return skip_value(sc, depth + 1);
    cap->current_ref = &cap->ref[ref];
    return scan_object(sc, depth + 1, reference_member, cap);
}

/* ---- validation ------------------------------------------------------------------------------ */

bool fs_store_valid_type(const char *name, size_t len)
{
    if (len < 2 || len > FS_STORE_TYPE_MAX || name[0] < 'A' || name[0] > 'Z')
        return false;
    for (size_t i = 1; i < len; i++) {
        char c = name[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')))
            return false;
    }
    return true;
}

/* [A-Za-z0-9\-\.] as a bitmap of the first 128 code points */
static const uint64_t id_bitmap[2] = {
    UINT64_C(0x03ff600000000000), /* '-' 45, '.' 46, '0'..'9' 48..57 */
    UINT64_C(0x07fffffe07fffffe)  /* 'A'..'Z' 65..90, 'a'..'z' 97..122 */
};

bool fs_store_valid_id(const char *id, size_t len)
{
    if (len < 1 || len > FS_STORE_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned c = (unsigned char)id[i];
        if (c >= 128 || !((id_bitmap[c >> 6] >> (c & 63)) & 1))
            return false;
    }
    return true;
}

bool fs_store_patient_of_reference(const char *ref, size_t len, const char **id, size_t *id_len)
{
    static const char marker[] = "Patient/";
    const size_t mlen = sizeof marker - 1;
    const char *start = NULL;
    if (len > mlen && memcmp(ref, marker, mlen) == 0) {
        start = ref + mlen;
    } else {
        /* an absolute reference: "<base>/Patient/<id>[/_history/<v>]" with a scheme */
        for (size_t i = len; i-- > 0;) {
            if (ref[i] == '/' && len - i - 1 > mlen && memcmp(ref + i + 1, marker, mlen) == 0) {
                start = ref + i + 1 + mlen;
                break;
            }
        }
        bool has_scheme = false;
        for (size_t i = 0; start && i + 2 < (size_t)(start - ref); i++)
            if (ref[i] == ':' && ref[i + 1] == '/' && ref[i + 2] == '/')
                has_scheme = true;
        if (!has_scheme)
            start = NULL;
    }
    if (!start)
        return false;
    const char *end = ref + len;
    const char *slash = memchr(start, '/', (size_t)(end - start));
    size_t n = slash ? (size_t)(slash - start) : (size_t)(end - start);
    if (slash) {
        static const char history[] = "/_history/";
        size_t rest = (size_t)(end - slash);
        if (rest <= sizeof history - 1 || memcmp(slash, history, sizeof history - 1) != 0)
            return false;
    }
    if (!fs_store_valid_id(start, n))
        return false;
    *id = start;
    *id_len = n;
    return true;
}

bool fs_store_parse_instant_ms(const char *text, size_t len, int64_t *out_ms)
{
    char buf[72];
    if (len < 20 || len >= sizeof buf)
        return false;
    memcpy(buf, text, len);
    buf[len] = '\0';
    int64_t seconds;
    if (!fs_parse_instant(buf, &seconds))
        return false;
    int64_t ms = 0;
    if (buf[19] == '.') {
        /* fs_parse_instant checked that digits follow; take the first three */
        int digits = 0;
        for (const char *p = buf + 20; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 3)
                ms = ms * 10 + (*p - '0');
        for (; digits < 3; digits++)
            ms *= 10;
    }
    if (seconds > INT64_MAX / 1000 - 1 || seconds < INT64_MIN / 1000 + 1)
        return false;
    *out_ms = seconds * 1000 + ms;
    return true;
}

/* ---- the scanner ----------------------------------------------------------------------------- */

/* Point (ptr, len) at a captured string, decoding into buf when it has escapes. */
static bool resolve(const raw_string *s, char *buf, size_t cap, const char **ptr, size_t *len)
{
    if (!s->escaped) {
        *ptr = (const char *)s->start;
        *len = s->len;
        return true;
    }
    if (!decode_string(s, buf, cap, len))
        return false;
    *ptr = buf;
    return true;
}

const char *fs_store_scan_fields(const char *line, size_t len, fs_resource_fields *out)
{
    scanner sc;
    sc.p = (const unsigned char *)line;
    sc.end = sc.p + len;
    sc.why = NULL;
    sc.nul_escape = false;
    capture cap;
    memset(&cap, 0, sizeof cap);
    memset(out, 0, offsetof(fs_resource_fields, type_buf));

    skip_ws(&sc);
    if (sc.p >= sc.end || *sc.p != '{')
        return "line is not a JSON object";
    if (!scan_object(&sc, 0, resource_member, &cap))
        return sc.why;
    skip_ws(&sc);
    if (sc.p != sc.end)
        return "data after the JSON object";
    out->has_nul_escape = sc.nul_escape;

    /* resourceType and id: required, and valid as a table name and a primary key */
    const char *text;
    size_t text_len;
    if (!cap.resource_type.present)
        return "resourceType is missing";
    if (!cap.resource_type.is_string)
        return "resourceType is not a string";
    if (!resolve(&cap.resource_type, out->type_buf, sizeof out->type_buf, &text, &text_len) ||
        !fs_store_valid_type(text, text_len))
        return "resourceType is not a valid resource type name";
    out->resource_type = text;
    out->resource_type_len = text_len;

    if (!cap.id.present)
        return "id is missing";
    if (!cap.id.is_string)
        return "id is not a string";
    if (!resolve(&cap.id, out->id_buf, sizeof out->id_buf, &text, &text_len) ||
        !fs_store_valid_id(text, text_len))
        return "id is not a valid FHIR id";
    out->id = text;
    out->id_len = text_len;

    /* meta: optional; an unusable versionId or lastUpdated is ignored, not fatal */
    if (cap.version_id.is_string &&
        resolve(&cap.version_id, out->version_buf, sizeof out->version_buf, &text, &text_len) &&
        fs_store_valid_id(text, text_len)) {
        out->version_id = text;
        out->version_id_len = text_len;
    }
    if (cap.last_updated.is_string &&
        resolve(&cap.last_updated, out->updated_buf, sizeof out->updated_buf, &text, &text_len) &&
        text_len <= sizeof out->updated_buf) {
        out->last_updated = text;
        out->last_updated_len = text_len;
        out->has_last_updated_ms = fs_store_parse_instant_ms(text, text_len, &out->last_updated_ms);
    }

    /* the patient compartment */
    if (out->resource_type_len == 7 && memcmp(out->resource_type, "Patient", 7) == 0) {
        out->patient_id = out->id;
        out->patient_id_len = out->id_len;
        return NULL;
    }
    for (int i = 0; i < 3; i++) {
        const raw_string *ref = &cap.ref[i];
        if (!ref->present || !ref->is_string)
            continue;
        if (!resolve(ref, out->reference_buf, sizeof out->reference_buf, &text, &text_len))
            continue;
        if (fs_store_patient_of_reference(text, text_len, &out->patient_id, &out->patient_id_len))
            break;
    }
    return NULL;
}
