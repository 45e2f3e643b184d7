/* http/url.c: URL parsing for the transport rules: resolving relative references (FHIR `next`
 * links, relative endpoints in discovery documents), origins (who may receive the bearer token)
 * and the loopback rule for plain http. Built on libcurl's URL API so that the parser that checks
 * a URL is the same one that fetches it. */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "http/http.h"

/* Parse an absolute URL: FHIRSYNC_E_URL when it is not one, FHIRSYNC_E_NOMEM when libcurl ran
 * out of memory. */
static fhirsync_code parse_rc(const char *url, CURLU **out)
{
    *out = NULL;
    CURLU *h = curl_url();
    if (!h)
        return FHIRSYNC_E_NOMEM;
    CURLUcode uc = curl_url_set(h, CURLUPART_URL, url, 0);
    if (uc != CURLUE_OK) {
        curl_url_cleanup(h);
        return uc == CURLUE_OUT_OF_MEMORY ? FHIRSYNC_E_NOMEM : FHIRSYNC_E_URL;
    }
    *out = h;
    return FHIRSYNC_OK;
}

static CURLU *parse(const char *url)
{
    CURLU *h;
    parse_rc(url, &h);
    return h;
}

/* A part of a parsed URL, copied into our allocator. FHIRSYNC_E_URL when the URL lacks it,
 * FHIRSYNC_E_NOMEM when the copy fails. */
static fhirsync_code get_part_rc(CURLU *h, CURLUPart part, unsigned flags, char **out)
{
    char *raw = NULL;
    *out = NULL;
    CURLUcode uc = curl_url_get(h, part, &raw, flags);
    if (uc == CURLUE_OUT_OF_MEMORY)
        return FHIRSYNC_E_NOMEM;
    if (uc != CURLUE_OK)
        return FHIRSYNC_E_URL;
    *out = fs_strdup(raw);
    curl_free(raw);
    return *out ? FHIRSYNC_OK : FHIRSYNC_E_NOMEM;
}

static char *get_part(CURLU *h, CURLUPart part, unsigned flags)
{
    char *out;
    get_part_rc(h, part, flags, &out);
    return out;
}

fhirsync_code fs_url_resolve(const char *base, const char *ref, bool base_is_dir, char **out,
                             fhirsync_error *err)
{
    *out = NULL;
    fhirsync_code rc = FHIRSYNC_OK;
    char *dir = NULL;
    CURLU *h = NULL;
    if (!base || !ref)
        return fs_err(err, FHIRSYNC_E_ARG, "URL resolution needs a base and a reference");
    /* A FHIR base names a directory: make sure relative references land inside it. */
    const char *query = strpbrk(base, "?#");
    size_t base_len = query ? (size_t)(query - base) : strlen(base);
    if (base_is_dir && base_len > 0 && base[base_len - 1] != '/') {
        fs_buf b;
        fs_buf_init(&b);
        if (!fs_buf_append(&b, base, base_len) || !fs_buf_append_str(&b, "/")) {
            fs_buf_free(&b);
            return FHIRSYNC_E_NOMEM;
        }
        dir = fs_buf_steal(&b);
    }
    h = parse(dir ? dir : base);
    if (!h) {
        rc = fs_err(err, FHIRSYNC_E_URL, "malformed base URL '%s'", base);
        goto out;
    }
    if (curl_url_set(h, CURLUPART_URL, ref, 0) != CURLUE_OK) {
        rc = fs_err(err, FHIRSYNC_E_URL, "malformed URL reference '%s'", ref);
        goto out;
    }
    rc = get_part_rc(h, CURLUPART_URL, 0, out);
    if (rc == FHIRSYNC_E_URL)
        rc = fs_err(err, FHIRSYNC_E_URL, "cannot resolve '%s' against '%s'", ref, base);
out:
    fs_free(dir);
    curl_url_cleanup(h);
    return rc;
}

char *fs_url_host(const char *url)
{
    CURLU *h = url ? parse(url) : NULL;
    if (!h)
        return NULL;
    char *host = get_part(h, CURLUPART_HOST, 0);
    curl_url_cleanup(h);
    for (char *p = host; p && *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return host;
}

fhirsync_code fs_url_origin(const char *url, char **out, fhirsync_error *err)
{
    *out = NULL;
    CURLU *h = NULL;
    fhirsync_code rc = url ? parse_rc(url, &h) : FHIRSYNC_E_URL;
    if (rc == FHIRSYNC_E_NOMEM)
        return fs_err(err, rc, "out of memory");
    if (rc != FHIRSYNC_OK)
        return fs_err(err, FHIRSYNC_E_URL, "malformed URL '%s'", url ? url : "(none)");
    char *scheme = NULL, *host = NULL, *port = NULL;
    rc = get_part_rc(h, CURLUPART_SCHEME, 0, &scheme);
    if (rc == FHIRSYNC_OK)
        rc = get_part_rc(h, CURLUPART_HOST, 0, &host);
    if (rc == FHIRSYNC_OK)
        rc = get_part_rc(h, CURLUPART_PORT, CURLU_DEFAULT_PORT, &port);
    curl_url_cleanup(h);
    if (rc == FHIRSYNC_E_URL) {
        rc = fs_err(err, FHIRSYNC_E_URL, "URL '%s' has no scheme, host or port", url);
    } else if (rc == FHIRSYNC_OK) {
        for (char *p = host; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        for (char *p = scheme; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        fs_buf b;
        fs_buf_init(&b);
        if (fs_buf_printf(&b, "%s://%s:%s", scheme, host, port))
            *out = fs_buf_steal(&b);
        else
            rc = FHIRSYNC_E_NOMEM;
        fs_buf_free(&b);
    }
    if (rc == FHIRSYNC_E_NOMEM)
        fs_err(err, rc, "out of memory");
    fs_free(scheme);
    fs_free(host);
    fs_free(port);
    return rc;
}

fhirsync_code fs_url_compare_origins(const char *a, const char *b, bool *same)
{
    *same = false;
    if (!a || !b)
        return FHIRSYNC_OK;
    char *oa = NULL, *ob = NULL;
    fhirsync_code rc = fs_url_origin(a, &oa, NULL);
    if (rc == FHIRSYNC_OK)
        rc = fs_url_origin(b, &ob, NULL);
    if (rc == FHIRSYNC_OK)
        *same = strcmp(oa, ob) == 0;
    fs_free(oa);
    fs_free(ob);
    return rc == FHIRSYNC_E_NOMEM ? rc : FHIRSYNC_OK; /* a malformed URL: another origin */
}

bool fs_url_same_origin(const char *a, const char *b)
{
    bool same;
    return fs_url_compare_origins(a, b, &same) == FHIRSYNC_OK && same;
}

static bool is_loopback_host(const char *host)
{
    if (strcmp(host, "localhost") == 0 || strcmp(host, "[::1]") == 0 || strcmp(host, "::1") == 0)
        return true;
    /* 127.0.0.0/8 in dotted-quad form */
    if (strncmp(host, "127.", 4) != 0)
        return false;
    int dots = 0;
    for (const char *p = host; *p; p++) {
        if (*p == '.')
            dots++;
        else if (!isdigit((unsigned char)*p))
            return false;
    }
    return dots == 3;
}

fhirsync_code fs_url_check_transport(const char *url, const char *what, fhirsync_error *err)
{
    CURLU *h = url ? parse(url) : NULL;
    if (!h)
        return fs_err(err, FHIRSYNC_E_URL, "%s '%s' is not a valid absolute URL", what,
                      url ? url : "(none)");
    char *scheme = NULL, *host = NULL;
    fhirsync_code rc = get_part_rc(h, CURLUPART_SCHEME, 0, &scheme);
    if (rc == FHIRSYNC_OK)
        rc = get_part_rc(h, CURLUPART_HOST, 0, &host);
    curl_url_cleanup(h);
    if (rc == FHIRSYNC_E_NOMEM) {
        /* reported as is */
    } else if (rc != FHIRSYNC_OK) {
        rc = fs_err(err, FHIRSYNC_E_URL, "%s '%s' has no scheme or host", what, url);
    } else if (strcasecmp(scheme, "https") == 0) {
        rc = FHIRSYNC_OK;
    } else if (strcasecmp(scheme, "http") == 0) {
        for (char *p = host; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        if (!is_loopback_host(host))
            rc = fs_err(err, FHIRSYNC_E_URL,
                        "%s '%s' uses plain http to a non-loopback host: use https "
                        "(plain http is allowed only for localhost/127.0.0.1, e.g. the sandbox)",
                        what, url);
    } else {
        rc = fs_err(err, FHIRSYNC_E_URL, "%s '%s' is not an http(s) URL", what, url);
    }
    fs_free(scheme);
    fs_free(host);
    return rc;
}

char *fs_url_join(const char *base, const char *path)
{
    fs_buf b;
    fs_buf_init(&b);
    size_t len = strlen(base);
    while (len > 0 && base[len - 1] == '/')
        len--;
    while (*path == '/')
        path++;
    if (!fs_buf_append(&b, base, len) || !fs_buf_append_str(&b, "/") ||
        !fs_buf_append_str(&b, path)) {
        fs_buf_free(&b);
        return NULL;
    }
    return fs_buf_steal(&b);
}
