/* sandbox/parse.c: the sandbox's parsers for what arrives from the network, kept free of
 * libmicrohttpd so that the fuzz target (tests/fuzz/fuzz_sandbox_request.c) builds them alone:
 * percent-encoding, query strings and form bodies, FHIR Parameters bodies, Range, media types,
 * Accept and Prefer lists, Basic and Bearer credentials, raw paths, and the masking of secret
 * query values for the request log. Every function takes untrusted input and bounded sizes. */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "sandbox.h"

#define MAX_PAIRS 1000
#define MAX_SEGMENTS 16

/* ---- parameter lists ------------------------------------------------------------------------ */

void sb_params_init(sb_params *p)
{
    p->items = NULL;
    p->count = 0;
    p->cap = 0;
}

void sb_params_free(sb_params *p)
{
    for (size_t i = 0; i < p->count; i++) {
        fs_free(p->items[i].name);
        fs_free_secret(p->items[i].value);
    }
    fs_free(p->items);
    sb_params_init(p);
}

static bool params_add_owned(sb_params *p, char *name, char *value)
{
    if (p->count == p->cap) {
        sb_param *items = fs_array_grow(p->items, &p->cap, sizeof *items, 8);
        if (!items)
            return false;
        p->items = items;
    }
    p->items[p->count].name = name;
    p->items[p->count].value = value;
    p->count++;
    return true;
}

bool sb_params_add(sb_params *p, const char *name, const char *value)
{
    char *n = fs_strdup(name);
    char *v = fs_strdup(value);
    if (!n || !v || !params_add_owned(p, n, v)) {
        fs_free(n);
        fs_free(v);
        return false;
    }
    return true;
}

const char *sb_params_get(const sb_params *p, const char *name)
{
    for (size_t i = 0; i < p->count; i++)
        if (strcmp(p->items[i].name, name) == 0)
            return p->items[i].value;
    return NULL;
}

size_t sb_params_count(const sb_params *p, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < p->count; i++)
        if (strcmp(p->items[i].name, name) == 0)
            n++;
    return n;
}

/* ---- percent-encoding ----------------------------------------------------------------------- */

bool sb_percent_decode(const char *s, size_t n, bool plus_is_space, char **out)
{
    *out = NULL;
    char *dst = fs_malloc(n + 1);
    if (!dst)
        return false;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (n - i < 3) {
                fs_free(dst);
                return false;
            }
            int h = fs_hex_value((unsigned char)s[i + 1]),
                l = fs_hex_value((unsigned char)s[i + 2]);
            if (h < 0 || l < 0 || (h == 0 && l == 0)) {
                fs_free(dst);
                return false;
            }
            dst[j++] = (char)(h * 16 + l);
            i += 2;
        } else if (c == '+' && plus_is_space) {
            dst[j++] = ' ';
        } else if (c == '\0') {
            fs_free(dst);
            return false;
        } else {
            dst[j++] = c;
        }
    }
    dst[j] = '\0';
    *out = dst;
    return true;
}

bool sb_params_parse_form(sb_params *out, const char *text, size_t len, fhirsync_error *err)
{
    size_t i = 0, pairs = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && text[end] != '&')
            end++;
        if (end > i) {
            if (++pairs > MAX_PAIRS) {
                fs_err(err, FHIRSYNC_E_ARG, "more than %d parameters", MAX_PAIRS);
                return false;
            }
            size_t eq = i;
            while (eq < end && text[eq] != '=')
                eq++;
            char *name = NULL, *value = NULL;
            bool ok = sb_percent_decode(text + i, eq - i, true, &name);
            if (ok)
                ok = eq < end ? sb_percent_decode(text + eq + 1, end - eq - 1, true, &value)
                              : (value = fs_strdup("")) != NULL;
            if (!ok) {
                fs_free(name);
                fs_free_secret(value);
                fs_err(err, FHIRSYNC_E_ARG, "malformed percent-encoding in parameter %zu", pairs);
                return false;
            }
            if (!params_add_owned(out, name, value)) {
                fs_free(name);
                fs_free_secret(value);
                fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
                return false;
            }
        }
        i = end + 1;
    }
    return true;
}

/* ---- FHIR Parameters ------------------------------------------------------------------------ */

static char *parameter_value_text(const json_t *param)
{
    static const char *const string_keys[] = {
        "valueString", "valueCode", "valueInstant",   "valueDateTime", "valueDate",
        "valueUri",    "valueUrl",  "valueCanonical", "valueId",
    };
    for (size_t i = 0; i < sizeof string_keys / sizeof string_keys[0]; i++) {
        const char *v = fs_json_str(param, string_keys[i]);
        if (v)
            return fs_strdup(v);
    }
    json_t *b = json_object_get(param, "valueBoolean");
    if (json_is_boolean(b))
        return fs_strdup(json_is_true(b) ? "true" : "false");
    json_t *n = json_object_get(param, "valueInteger");
    if (json_is_integer(n)) {
        fs_buf buf;
        fs_buf_init(&buf);
        if (!fs_buf_printf(&buf, "%lld", (long long)json_integer_value(n))) {
            fs_buf_free(&buf);
            return NULL;
        }
        return fs_buf_steal(&buf);
    }
    json_t *ref = json_object_get(param, "valueReference");
    if (json_is_object(ref)) {
        const char *r = fs_json_str(ref, "reference");
        if (r)
            return fs_strdup(r);
    }
    return NULL;
}

bool sb_params_parse_parameters(sb_params *out, const char *body, size_t len, fhirsync_error *err)
{
    bool ok = false;
    json_t *doc = fs_json_parse(body, len, true, "Parameters body", err);
    if (!doc)
        goto out;
    if (!fs_streq(fs_json_str(doc, "resourceType"), "Parameters")) {
        fs_err(err, FHIRSYNC_E_JSON, "the body is not a Parameters resource");
        goto out;
    }
    json_t *list = json_object_get(doc, "parameter");
    if (list && !json_is_array(list)) {
        fs_err(err, FHIRSYNC_E_JSON, "Parameters.parameter is not an array");
        goto out;
    }
    if (json_array_size(list) > MAX_PAIRS) {
        fs_err(err, FHIRSYNC_E_JSON, "more than %d parameters", MAX_PAIRS);
        goto out;
    }
    size_t i;
    for (i = 0; i < json_array_size(list); i++) {
        json_t *param = json_array_get(list, i);
        const char *name = fs_json_str(param, "name");
        if (!json_is_object(param) || !name || !*name) {
            fs_err(err, FHIRSYNC_E_JSON, "Parameters.parameter[%zu] has no name", i);
            goto out;
        }
        char *value = parameter_value_text(param);
        if (!value) {
            fs_err(err, FHIRSYNC_E_JSON, "Parameters.parameter[%zu] (%s) has no supported value[x]",
                   i, name);
            goto out;
        }
        bool added = sb_params_add(out, name, value);
        fs_free(value);
        if (!added) {
            fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
            goto out;
        }
    }
    ok = true;
out:
    json_decref(doc);
    return ok;
}

/* ---- Range ---------------------------------------------------------------------------------- */

static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
    if (n == 0 || n > 19)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

sb_range_result sb_range_parse(const char *header, uint64_t size, uint64_t *start, uint64_t *length)
{
    *start = 0;
    *length = size;
    if (!header)
        return SB_RANGE_NONE;
    while (*header == ' ' || *header == '\t')
        header++;
    if (strncasecmp(header, "bytes", 5) != 0)
        return SB_RANGE_INVALID;
    const char *p = header + 5;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p != '=')
        return SB_RANGE_INVALID;
    p++;
    while (*p == ' ' || *p == '\t')
        p++;
    if (strchr(p, ','))
        return SB_RANGE_NONE; /* several ranges: we send the whole representation */
    const char *dash = strchr(p, '-');
    if (!dash)
        return SB_RANGE_INVALID;
    const char *end = dash + 1 + strlen(dash + 1);
    while (end > dash + 1 && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    uint64_t first = 0, last = 0;
    bool has_first = dash > p, has_last = end > dash + 1;
    if (has_first && !parse_u64(p, (size_t)(dash - p), &first))
        return SB_RANGE_INVALID;
    if (has_last && !parse_u64(dash + 1, (size_t)(end - dash - 1), &last))
        return SB_RANGE_INVALID;
    if (!has_first && !has_last)
        return SB_RANGE_INVALID;
    if (!has_first) {
        /* suffix range: the last `last` bytes */
        if (last == 0 || size == 0)
            return SB_RANGE_UNSATISFIABLE;
        if (last > size)
            last = size;
        *start = size - last;
        *length = last;
        return SB_RANGE_OK;
    }
    if (has_last && last < first)
        return SB_RANGE_INVALID;
    if (first >= size)
        return SB_RANGE_UNSATISFIABLE;
    if (!has_last || last >= size)
        last = size - 1;
    *start = first;
    *length = last - first + 1;
    return SB_RANGE_OK;
}

/* ---- header values -------------------------------------------------------------------------- */

static bool media_equal(const char *s, size_t n, const char *type)
{
    while (n > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    return strlen(type) == n && strncasecmp(s, type, n) == 0;
}

bool sb_media_type_is(const char *header, const char *type)
{
    if (!header)
        return false;
    size_t n = strcspn(header, ";");
    return media_equal(header, n, type);
}

/* Whether a parameter list ("; q=0.5; x=y") says q=0. */
static bool q_is_zero(const char *params, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++) {
        if ((params[i] == 'q' || params[i] == 'Q') && params[i + 1] == '=') {
            size_t j = i + 2;
            if (j < n && params[j] == '0') {
                j++;
                if (j < n && params[j] == '.')
                    j++;
                while (j < n && params[j] == '0')
                    j++;
                return j >= n || params[j] == ';' || params[j] == ' ' || params[j] == ',';
            }
        }
    }
    return false;
}

bool sb_accept_lists(const char *header, const char *type)
{
    if (!header)
        return false;
    const char *p = header;
    while (*p) {
        size_t n = strcspn(p, ",");
        size_t media = strcspn(p, ";,");
        if (media > n)
            media = n;
        if (media_equal(p, media, type) && !q_is_zero(p + media, n - media))
            return true;
        p += n;
        if (*p == ',')
            p++;
    }
    return false;
}

bool sb_prefer_has(const char *header, const char *token)
{
    if (!header)
        return false;
    const char *p = header;
    while (*p) {
        size_t n = strcspn(p, ",;");
        if (media_equal(p, n, token))
            return true;
        p += n;
        if (*p)
            p++;
    }
    return false;
}

/* ---- credentials ---------------------------------------------------------------------------- */

bool sb_basic_auth_parse(const char *header, char **user, char **password)
{
    *user = NULL;
    *password = NULL;
    if (!header || strncasecmp(header, "Basic ", 6) != 0)
        return false;
    const char *p = header + 6;
    while (*p == ' ')
        p++;
    size_t n = strlen(p);
    while (n > 0 && p[n - 1] == ' ')
        n--;
    unsigned char *raw = NULL;
    size_t raw_len = 0;
    if (!fs_b64_decode(p, n, &raw, &raw_len))
        return false;
    bool ok = false;
    unsigned char *colon = memchr(raw, ':', raw_len);
    if (colon && memchr(raw, '\0', raw_len) == NULL) {
        size_t ulen = (size_t)(colon - raw);
        ok = sb_percent_decode((const char *)raw, ulen, true, user) &&
             sb_percent_decode((const char *)colon + 1, raw_len - ulen - 1, true, password);
    }
    fs_free_wipe(raw, raw_len);
    if (!ok) {
        fs_free(*user);
        fs_free_secret(*password);
        *user = NULL;
        *password = NULL;
    }
    return ok;
}

const char *sb_bearer_token(const char *header)
{
    if (!header || strncasecmp(header, "Bearer ", 7) != 0)
        return NULL;
    const char *p = header + 7;
    while (*p == ' ')
        p++;
    return *p ? p : NULL;
}

/* ---- paths and URIs ------------------------------------------------------------------------- */

void sb_segments_free(char **segments, size_t count)
{
    if (!segments)
        return;
    for (size_t i = 0; i < count; i++)
        fs_free(segments[i]);
    fs_free(segments);
}

bool sb_path_split(const char *raw_path, char ***segments, size_t *count)
{
    *segments = NULL;
    *count = 0;
    char **segs = fs_calloc(MAX_SEGMENTS, sizeof *segs);
    if (!segs)
        return false;
    size_t n = 0;
    const char *p = raw_path;
    if (*p == '/')
        p++;
    while (*p) {
        size_t len = strcspn(p, "/");
        bool last = p[len] == '\0';
        if (!(last && len == 0)) {
            if (n == MAX_SEGMENTS || !sb_percent_decode(p, len, false, &segs[n])) {
                sb_segments_free(segs, n);
                return false;
            }
            n++;
        }
        p += len;
        if (*p == '/')
            p++;
    }
    *segments = segs;
    *count = n;
    return true;
}

static bool secret_name(const char *name, size_t n)
{
    static const char *const words[] = {"token", "secret", "assertion",    "password",
                                        "code",  "key",    "authorization"};
    for (size_t w = 0; w < sizeof words / sizeof words[0]; w++) {
        size_t wl = strlen(words[w]);
        for (size_t i = 0; i + wl <= n; i++)
            if (strncasecmp(name + i, words[w], wl) == 0)
                return true;
    }
    return false;
}

char *sb_uri_for_log(const char *raw_uri)
{
    fs_buf out;
    fs_buf_init(&out);
    const char *q = strchr(raw_uri, '?');
    if (!q)
        return fs_strdup(raw_uri);
    bool ok = fs_buf_append(&out, raw_uri, (size_t)(q - raw_uri) + 1);
    const char *p = q + 1;
    while (ok && *p) {
        size_t n = strcspn(p, "&");
        size_t eq = strcspn(p, "=&");
        /* _page_token is our own opaque cursor, not a credential */
        bool mask = eq < n && secret_name(p, eq) && !(eq == 11 && !strncmp(p, "_page_token", 11));
        if (mask)
            ok = fs_buf_append(&out, p, eq + 1) && fs_buf_append_str(&out, "***");
        else
            ok = fs_buf_append(&out, p, n);
        p += n;
        if (ok && *p == '&') {
            ok = fs_buf_append(&out, "&", 1);
            p++;
        }
    }
    if (!ok) {
        fs_buf_free(&out);
        return NULL;
    }
    return fs_buf_steal(&out);
}
