/* http/http.c: requests over libcurl with the library's transport rules (see http.h).
 * Redirects are followed here, by hand, rather than by libcurl, so that every hop is checked
 * against the transport rules and the bearer token is attached per hop only to its own origin. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "http/curl_private.h"

#define MAX_REDIRECTS 10
#define DEFAULT_MAX_BODY (1024 * 1024)

struct fs_http {
    CURL *easy;
    char *user_agent;
};

fs_http *fs_http_new(const char *user_agent)
{
    fs_http *http = fs_calloc(1, sizeof *http);
    if (!http)
        return NULL;
    http->user_agent = fs_strdup(user_agent ? user_agent : "fhirsync/" FHIRSYNC_VERSION);
    http->easy = curl_easy_init();
    if (!http->user_agent || !http->easy) {
        fs_http_free(http);
        return NULL;
    }
    return http;
}

void fs_http_free(fs_http *http)
{
    if (!http)
        return;
    if (http->easy)
        curl_easy_cleanup(http->easy);
    fs_free(http->user_agent);
    fs_free(http);
}

void fs_http_response_init(fs_http_response *resp)
{
    memset(resp, 0, sizeof *resp);
    fs_buf_init(&resp->body);
}

void fs_http_clear_headers(fs_http_response *resp)
{
    for (size_t i = 0; i < resp->header_count; i++) {
        fs_free(resp->headers[i].name);
        fs_free(resp->headers[i].value);
    }
    fs_free(resp->headers);
    resp->headers = NULL;
    resp->header_count = 0;
}

void fs_http_response_clear(fs_http_response *resp)
{
    fs_http_clear_headers(resp);
    fs_buf_free(&resp->body);
    fs_free(resp->effective_url);
    fs_http_response_init(resp);
}

const char *fs_http_header_get(const fs_http_response *resp, const char *name)
{
    for (size_t i = resp->header_count; i-- > 0;)
        if (strcasecmp(resp->headers[i].name, name) == 0)
            return resp->headers[i].value;
    return NULL;
}

/* ---- transfer state ------------------------------------------------------------------------ */

typedef struct transfer {
    const fs_http_request *req;
    fs_http_response *resp;
    size_t max_body;
    size_t header_bytes;
    bool too_large;
    bool headers_too_large; /* the header caps, not the body's */
    bool sink_aborted;
    bool oom;
} transfer;

bool fs_http_take_header(fs_http_response *resp, const char *data, size_t len)
{
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        /* a new response (after 1xx or a redirect): forget the previous one's headers */
        fs_http_clear_headers(resp);
        const char *sp = memchr(data, ' ', len);
        resp->status = 0;
        if (sp && (size_t)(sp - data) + 4 <= len && isdigit((unsigned char)sp[1]) &&
            isdigit((unsigned char)sp[2]) && isdigit((unsigned char)sp[3]))
            resp->status = (sp[1] - '0') * 100 + (sp[2] - '0') * 10 + (sp[3] - '0');
        return true;
    }
    const char *colon = memchr(data, ':', len);
    if (!colon || resp->header_count >= FS_HTTP_MAX_HEADERS)
        return true;
    const char *v = colon + 1, *end = data + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    fs_http_header *grown = fs_realloc(resp->headers, (resp->header_count + 1) * sizeof *grown);
    if (!grown)
        return false;
    resp->headers = grown;
    fs_http_header *h = &grown[resp->header_count];
    h->name = fs_strndup(data, (size_t)(colon - data));
    h->value = fs_strndup(v, (size_t)(end - v));
    if (!h->name || !h->value) {
        fs_free(h->name);
        fs_free(h->value);
        return false;
    }
    resp->header_count++;
    return true;
}

static size_t on_header(char *data, size_t size, size_t n, void *userdata)
{
    transfer *t = userdata;
    size_t len = size * n;
    t->header_bytes += len;
    if (t->header_bytes > FS_HTTP_MAX_HEADER_BYTES) {
        t->headers_too_large = true;
        return 0;
    }
    if (!fs_http_take_header(t->resp, data, len)) {
        t->oom = true;
        return 0;
    }
    return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *userdata)
{
    transfer *t = userdata;
    size_t len = size * n;
    long status = t->resp->status;
    fs_tally_body(len);
    if (t->req->sink && status >= 200 && status < 300) {
        if (!t->req->sink(data, len, t->req->sink_userdata)) {
            t->sink_aborted = true;
            return 0;
        }
        return len;
    }
    if (t->resp->body.len + len > t->max_body) {
        t->too_large = true;
        return 0;
    }
    if (!fs_buf_append(&t->resp->body, data, len)) {
        t->oom = true;
        return 0;
    }
    return len;
}

int fs_http_curl_debug(CURL *easy, curl_infotype type, char *data, size_t size, void *userdata)
{
    (void)easy;
    (void)userdata;
    const char *prefix;
    switch (type) {
    case CURLINFO_TEXT: prefix = "*"; break;
    case CURLINFO_HEADER_IN: prefix = "<"; break;
    case CURLINFO_HEADER_OUT: prefix = ">"; break;
    default: return 0;
    }
    /* one log line per header line */
    size_t start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i == size || data[i] == '\n') {
            size_t end = i;
            while (end > start && (data[end - 1] == '\r' || data[end - 1] == '\n'))
                end--;
            if (end > start)
                fs_log(FHIRSYNC_LOG_DEBUG, "http %s %.*s", prefix, (int)(end - start),
                       data + start);
            start = i + 1;
        }
    }
    return 0;
}

fhirsync_code fs_http_curl_error(CURLcode cc, const char *url, const char *detail,
                                 fhirsync_code bad_encoding, fhirsync_error *err)
{
    const char *why = detail && *detail ? detail : curl_easy_strerror(cc);
    switch (cc) {
    case CURLE_OPERATION_TIMEDOUT:
        return fs_err(err, FHIRSYNC_E_TIMEOUT, "timed out talking to %s: %s", url, why);
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
        return fs_err(err, FHIRSYNC_E_TLS, "TLS with %s failed: %s", url, why);
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT: return fs_err(err, FHIRSYNC_E_URL, "cannot use URL %s: %s", url, why);
    case CURLE_BAD_CONTENT_ENCODING:
        return fs_err(err, bad_encoding, "bad content encoding from %s: %s", url, why);
    case CURLE_OUT_OF_MEMORY:
        /* libcurl (7.x) says only "out of memory" when a response header line passes its cap
         * of 100 KB; our own allocations did not fail (the callers check that first), so this
         * is almost always the server's doing */
        return fs_err(err, FHIRSYNC_E_TOO_LARGE,
                      "libcurl refused the response from %s: a header line longer than the "
                      "%d-byte header line cap (or, rarely, memory ran out)%s%s",
                      url, FS_HTTP_MAX_HEADER_LINE, detail && *detail ? ": " : "",
                      detail ? detail : "");
    default: return fs_err(err, FHIRSYNC_E_NETWORK, "network error with %s: %s", url, why);
    }
}

fhirsync_code fs_http_headers_too_large(const char *url, fhirsync_error *err)
{
    return fs_err(err, FHIRSYNC_E_TOO_LARGE,
                  "the response headers from %s pass the header cap of %d bytes in all "
                  "(refused: a response body cap does not apply to them)",
                  url, FS_HTTP_MAX_HEADER_BYTES);
}

/* What our callbacks stopped, or else what libcurl says. */
static fhirsync_code map_curl_error(CURLcode cc, const transfer *t, const char *url,
                                    const char *detail, fhirsync_error *err)
{
    if (t->oom)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory receiving %s", url);
    if (t->headers_too_large)
        return fs_http_headers_too_large(url, err);
    if (t->too_large)
        return fs_err(err, FHIRSYNC_E_TOO_LARGE,
                      "response from %s is larger than the %zu-byte limit (refused)", url,
                      t->max_body);
    if (t->sink_aborted)
        return fs_err(err, FHIRSYNC_E_CANCELLED, "transfer from %s stopped by its receiver", url);
    return fs_http_curl_error(cc, url, detail, FHIRSYNC_E_PROTOCOL, err);
}

/* Stops a transfer in progress when the application asked the library to cancel. */
static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)userdata;
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    return fs_cancel_requested() ? 1 : 0;
}

bool fs_http_is_redirect(long status)
{
    return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

/* One hop: a single request without following redirects. */
static fhirsync_code perform_once(fs_http *http, const fs_http_request *req, const char *url,
                                  const char *method, bool with_body, fs_http_response *resp,
                                  fhirsync_error *err)
{
    CURL *e = http->easy;
    curl_easy_reset(e); /* keeps the connection cache */
    struct curl_slist *headers = NULL;
    char *auth = NULL;
    fhirsync_code rc = FHIRSYNC_OK;
    char errbuf[CURL_ERROR_SIZE] = "";
    transfer t = {
        .req = req, .resp = resp, .max_body = req->max_body ? req->max_body : DEFAULT_MAX_BODY};

    bool attach = false;
    if (req->bearer_token && req->token_origin &&
        fs_url_compare_origins(url, req->token_origin, &attach) != FHIRSYNC_OK) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
    for (const char *const *h = req->headers; h && *h; h++) {
        struct curl_slist *n = curl_slist_append(headers, *h);
        if (!n) {
            rc = FHIRSYNC_E_NOMEM;
            goto out;
        }
        headers = n;
    }
    if (attach) {
        fs_buf b;
        fs_buf_init(&b);
        if (!fs_buf_printf(&b, "Authorization: Bearer %s", req->bearer_token)) {
            fs_buf_free_secret(&b);
            rc = FHIRSYNC_E_NOMEM;
            goto out;
        }
        auth = fs_buf_steal(&b);
        struct curl_slist *n = curl_slist_append(headers, auth);
        if (!n) {
            rc = FHIRSYNC_E_NOMEM;
            goto out;
        }
        headers = n;
    }
    struct curl_slist *n = curl_slist_append(headers, "Expect:");
    if (!n) {
        rc = FHIRSYNC_E_NOMEM;
        goto out;
    }
    headers = n;

    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT,
                     req->connect_timeout_s ? req->connect_timeout_s : 10L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, req->timeout_s ? req->timeout_s : 120L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, http->user_agent);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (req->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, req->ca_file);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &t);
    if (fs_log_enabled(FHIRSYNC_LOG_DEBUG)) {
        curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, fs_http_curl_debug);
        curl_easy_setopt(e, CURLOPT_VERBOSE, 1L); /* only feeds fs_http_curl_debug, never stderr */
    }
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    if (req->range_from > 0)
        curl_easy_setopt(e, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)req->range_from);
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, with_body && req->body ? req->body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)(with_body && req->body ? req->body_len : 0));
    } else {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
        if (with_body && req->body) {
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body);
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        }
    }

    fs_log(FHIRSYNC_LOG_DEBUG, "http: %s %s%s", method, url, attach ? " (with bearer token)" : "");
    CURLcode cc = curl_easy_perform(e);
    long sent = 0;
    curl_easy_getinfo(e, CURLINFO_REQUEST_SIZE, &sent);
    resp->request_sent = sent > 0;
    if (cc == CURLE_ABORTED_BY_CALLBACK) {
        rc = fs_err(err, FHIRSYNC_E_CANCELLED, "transfer from %s cancelled", url);
        goto out;
    }
    if (cc != CURLE_OK) {
        rc = map_curl_error(cc, &t, url, errbuf, err);
        goto out;
    }
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    resp->status = status;
    fs_tally_response(status);
    resp->token_sent = attach;
    double total = 0;
    curl_easy_getinfo(e, CURLINFO_TOTAL_TIME, &total);
    resp->total_time_s += total;
    long version = 0;
    curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &version);
    resp->http_version = version == CURL_HTTP_VERSION_2_0   ? "2"
                         : version == CURL_HTTP_VERSION_1_0 ? "1.0"
                                                            : "1.1";
    fs_log(FHIRSYNC_LOG_DEBUG, "http: %ld from %s (%.3f s, %zu bytes buffered)", status, url, total,
           resp->body.len);
out:
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(headers);
    fs_free_secret(auth);
    return rc;
}

fhirsync_code fs_http_perform(fs_http *http, const fs_http_request *req, fs_http_response *resp,
                              fhirsync_error *err)
{
    fs_http_response_clear(resp);
    const char *method = req->method ? req->method : "GET";
    bool with_body = true;
    char *url = fs_strdup(req->url);
    char *visited[MAX_REDIRECTS + 1] = {0};
    size_t visited_count = 0;
    fhirsync_code rc = FHIRSYNC_OK;
    if (!url) {
        rc = req->url ? FHIRSYNC_E_NOMEM : fs_err(err, FHIRSYNC_E_ARG, "no URL to request");
        goto out;
    }
    for (;;) {
        rc = fs_url_check_transport(url, "URL", err);
        if (rc != FHIRSYNC_OK)
            goto out;
        fs_buf_reset(&resp->body);
        fs_http_clear_headers(resp);
        rc = perform_once(http, req, url, method, with_body, resp, err);
        if (rc != FHIRSYNC_OK)
            goto out;
        const char *location = fs_http_header_get(resp, "Location");
        if (!fs_http_is_redirect(resp->status) || req->redirects == FS_REDIRECT_NONE || !location)
            break;
        char *next = NULL;
        rc = fs_url_resolve(url, location, false, &next, err);
        if (rc != FHIRSYNC_OK)
            goto out;
        bool same = false;
        if (req->redirects == FS_REDIRECT_SAME_ORIGIN &&
            fs_url_compare_origins(url, next, &same) != FHIRSYNC_OK) {
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
            fs_free(next);
            goto out;
        }
        if (req->redirects == FS_REDIRECT_SAME_ORIGIN && !same) {
            rc = fs_err_http(err, FHIRSYNC_E_REDIRECT, resp->status,
                             "refused to follow a redirect from %s to another origin (%s)", url,
                             next);
            fs_free(next);
            goto out;
        }
        for (size_t i = 0; i < visited_count; i++) {
            if (strcmp(visited[i], next) == 0 || strcmp(url, next) == 0) {
                rc = fs_err_http(err, FHIRSYNC_E_REDIRECT, resp->status,
                                 "redirect loop: %s redirects back to %s", url, next);
                fs_free(next);
                goto out;
            }
        }
        if (visited_count >= MAX_REDIRECTS) {
            rc = fs_err_http(err, FHIRSYNC_E_REDIRECT, resp->status,
                             "too many redirects (more than %d) starting at %s", MAX_REDIRECTS,
                             req->url);
            fs_free(next);
            goto out;
        }
        fs_log(FHIRSYNC_LOG_INFO, "http: %ld redirect from %s to %s%s", resp->status, url, next,
               fs_url_same_origin(next, req->token_origin) ? "" : " (no token sent there)");
        visited[visited_count++] = url;
        url = next;
        resp->redirects_followed++;
        /* 303 always, and 301/302 after a POST, turn into a GET without a body */
        if (resp->status == 303 ||
            ((resp->status == 301 || resp->status == 302) && strcmp(method, "POST") == 0)) {
            method = "GET";
            with_body = false;
        }
    }
    resp->effective_url = url;
    url = NULL;
out:
    fs_free(url);
    for (size_t i = 0; i < visited_count; i++)
        fs_free(visited[i]);
    return rc;
}

void fs_http_describe(const fs_http_response *resp, const char *url, char *buf, size_t size)
{
    const char *ctype = fs_http_header_get(resp, "Content-Type");
    if (resp->body.len == 0) {
        snprintf(buf, size, "HTTP %ld from %s (empty body)", resp->status, url);
        return;
    }
    size_t i = 0;
    while (i < resp->body.len && isspace((unsigned char)resp->body.data[i]))
        i++;
    if ((ctype && strstr(ctype, "html")) || (i < resp->body.len && resp->body.data[i] == '<')) {
        snprintf(buf, size, "HTTP %ld from %s (an HTML page, not JSON)", resp->status, url);
        return;
    }
    int shown = (int)(resp->body.len - i > 300 ? 300 : resp->body.len - i);
    snprintf(buf, size, "HTTP %ld from %s: %.*s%s", resp->status, url, shown, resp->body.data + i,
             resp->body.len - i > 300 ? "..." : "");
}
