/* json/json.c: jansson behind a few helpers with clear errors for outside input. */
#include <ctype.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "json/json.h"
#include "json/lex.h"

/* jansson allocates with the system allocator, outside the allocation-failure seam: its lexer
 * ignores a failed buffer growth and later trips an assertion (jansson 2.14 load.c, lex_save), so
 * injected failures there would test jansson's bug rather than our error paths. Its frees wipe
 * the block first: jansson holds token responses and private JWKs while parsing them. Memory
 * jansson returns (json_dumps) is released with fs_free, which is free(). */
static void wiping_free(void *p)
{
    if (p) {
        OPENSSL_cleanse(p, malloc_usable_size(p));
        free(p);
    }
}

void fs_json_init(void)
{
    json_set_alloc_funcs(malloc, wiping_free);
}

bool fs_looks_like_html(const char *data, size_t len)
{
    size_t i = 0;
    while (i < len && isspace((unsigned char)data[i]))
        i++;
    if (i >= len || data[i] != '<')
        return false;
    /* JSON never starts with '<': whatever markup this is (<html>, <!DOCTYPE>, <?xml>), say so */
    return true;
}

json_t *fs_json_parse(const char *data, size_t len, bool want_object, const char *what,
                      fhirsync_error *err)
{
    if (!data || len == 0) {
        fs_err(err, FHIRSYNC_E_JSON, "%s is empty, expected JSON", what);
        return NULL;
    }
    if (fs_looks_like_html(data, len)) {
        fs_err(err, FHIRSYNC_E_JSON, "%s is an HTML/XML page, not JSON", what);
        return NULL;
    }
    json_error_t jerr;
    json_t *value = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!value) {
        if (json_error_code(&jerr) == json_error_out_of_memory)
            fs_err(err, FHIRSYNC_E_NOMEM, "out of memory parsing %s", what);
        else
            fs_err(err, FHIRSYNC_E_JSON, "%s is not valid JSON (line %d, column %d: %s)", what,
                   jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    if (want_object && !json_is_object(value)) {
        fs_err(err, FHIRSYNC_E_JSON, "%s is JSON but not an object", what);
        json_decref(value);
        return NULL;
    }
    return value;
}

const char *fs_json_str(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

bool fs_json_int(const json_t *obj, const char *key, int64_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return true;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d >= -9.2e18 && d <= 9.2e18 && d == (double)(int64_t)d) {
            *out = (int64_t)d;
            return true;
        }
    }
    return false;
}

bool fs_json_bool(const json_t *obj, const char *key, bool *out)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_boolean(v))
        return false;
    *out = json_is_true(v);
    return true;
}

bool fs_json_array_has(const json_t *obj, const char *key, const char *value)
{
    json_t *arr = json_object_get(obj, key);
    size_t i;
    json_t *item;
    json_array_foreach (arr, i, item) {
        if (fs_streq(json_string_value(item), value))
            return true;
    }
    return false;
}

char *fs_json_dump(const json_t *value)
{
    return json_dumps(value, JSON_COMPACT | JSON_PRESERVE_ORDER);
}

char *fs_json_dump_pretty(const json_t *value)
{
    return json_dumps(value, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
}

/* The document with each number rewritten as "\u0000<text>" (a string jansson keeps as is). A
 * fault the lexer meets is left for jansson to report: the rest is copied unchanged. */
static bool numbers_as_strings(const unsigned char *p, const unsigned char *end, fs_buf *out,
                               bool *nul_in_string)
{
    while (p < end) {
        const unsigned char *start = p, *next = NULL, *at;
        fs_lex_error lerr;
        if (*p == '"') {
            unsigned seen = 0;
            next = fs_lex_string(p + 1, end, true, &seen, &lerr, &at);
            if (seen & FS_LEX_NUL_ESCAPE)
                *nul_in_string = true;
        } else if (*p == '-' || fs_lex_is_digit(*p)) {
            next = fs_lex_number(p, end, &lerr, &at);
            if (next) {
                if (!fs_buf_append_str(out, "\"\\u0000") ||
                    !fs_buf_append(out, start, (size_t)(next - start)) ||
                    !fs_buf_append(out, "\"", 1))
                    return false;
                p = next;
                continue;
            }
        } else {
            next = p + 1;
        }
        if (!next)
            next = end;
        if (!fs_buf_append(out, start, (size_t)(next - start)))
            return false;
        p = next;
    }
    return true;
}

json_t *fs_json_parse_exact(const char *data, size_t len, const char *what, fhirsync_error *err)
{
    if (!data || len == 0) {
        fs_err(err, FHIRSYNC_E_JSON, "%s is empty, expected JSON", what);
        return NULL;
    }
    fs_buf text;
    fs_buf_init(&text);
    bool nul = false;
    json_t *value = NULL;
    if (!numbers_as_strings((const unsigned char *)data, (const unsigned char *)data + len, &text,
                            &nul)) {
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory parsing %s", what);
        goto out;
    }
    if (nul) {
        fs_err(err, FHIRSYNC_E_JSON, "%s holds a string with \\u0000", what);
        goto out;
    }
    json_error_t jerr;
    value = json_loadb(text.data ? text.data : "", text.len,
                       JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!value) {
        if (json_error_code(&jerr) == json_error_out_of_memory)
            fs_err(err, FHIRSYNC_E_NOMEM, "out of memory parsing %s", what);
        else
            fs_err(err, FHIRSYNC_E_JSON, "%s is not valid JSON (line %d: %s)", what, jerr.line,
                   jerr.text);
    } else if (!json_is_object(value)) {
        fs_err(err, FHIRSYNC_E_JSON, "%s is JSON but not an object", what);
        json_decref(value);
        value = NULL;
    }
out:
    fs_buf_free(&text);
    return value;
}

const char *fs_json_number_text(const json_t *value, size_t *len)
{
    if (!json_is_string(value) || json_string_length(value) < 2)
        return NULL;
    const char *s = json_string_value(value);
    if (s[0] != FS_JSON_NUMBER_MARK)
        return NULL;
    *len = json_string_length(value) - 1;
    return s + 1;
}
