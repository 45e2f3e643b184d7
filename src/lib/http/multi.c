/* http/multi.c: parallel streaming downloads over libcurl's multi interface (see multi.h).
 * Each transfer owns one easy handle; redirects are followed here, one hop at a time, exactly
 * like fs_http_perform does for single requests: the next URL is resolved, checked against the
 * transport rules and the policy, and the token is attached only if that hop's origin is the
 * token's. The multi handle keeps the connection cache, so connections (and HTTP/2 streams) are
 * reused across transfers and hops. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "http/curl_private.h"
#include "http/multi.h"

#define MAX_REDIRECTS 10
#define DEFAULT_MAX_BODY (64 * 1024)
#define RECEIVE_BUFFER (256 * 1024)

typedef struct transfer {
    struct transfer *next; /* in the running list or the finished queue */
    fs_multi *m;
    CURL *easy;
    struct curl_slist *slist;
    /* the request (copies) */
    char *url; /* of the current hop */
    char **headers;
    size_t header_count;
    char *token; /* secret */
    char *token_origin;
    fs_redirect_policy redirects;
    int64_t range_from;
    bool identity;
    long connect_timeout_s, stall_timeout_s, stall_bytes_per_s;
    char *ca_file;
    size_t max_body;
    fs_multi_response_cb on_response;
    fs_http_sink sink;
    void *userdata;
    /* per-hop state */
    char *visited[MAX_REDIRECTS + 1];
    size_t visited_count;
    size_t header_bytes;
    bool headers_done, is_final, redirecting;
    bool too_large, aborted_by_cb, sink_aborted, oom;
    bool headers_too_large; /* the header caps, not the body's */
    char errbuf[CURL_ERROR_SIZE];
    /* the result */
    fs_http_response resp;
    uint64_t body_bytes;
    fhirsync_code code;
    fhirsync_error err;
} transfer;

struct fs_multi {
    CURLM *multi;
    char *user_agent;
    transfer *running;
    transfer *finished_head, *finished_tail;
    size_t pending;
};

/* ---- transfers ------------------------------------------------------------------------------ */

static void transfer_free(transfer *t)
{
    if (!t)
        return;
    if (t->easy) {
        if (t->m)
            curl_multi_remove_handle(t->m->multi, t->easy);
        curl_easy_cleanup(t->easy);
    }
    curl_slist_free_all(t->slist);
    fs_free(t->url);
    for (size_t i = 0; i < t->header_count; i++)
        fs_free(t->headers[i]);
    fs_free(t->headers);
    fs_free_secret(t->token);
    fs_free(t->token_origin);
    fs_free(t->ca_file);
    for (size_t i = 0; i < t->visited_count; i++)
        fs_free(t->visited[i]);
    fs_http_response_clear(&t->resp);
    fs_free(t);
}

static bool headers_complete(transfer *t)
{
    long status = t->resp.status;
    if (status >= 100 && status < 200)
        return true; /* an interim response: the real one follows */
    t->headers_done = true;
    fs_tally_response(status);
    if (fs_http_is_redirect(status) && t->redirects != FS_REDIRECT_NONE &&
        fs_http_header_get(&t->resp, "Location")) {
        t->redirecting = true;
        return true;
    }
    t->is_final = true;
    long version = 0;
    curl_easy_getinfo(t->easy, CURLINFO_HTTP_VERSION, &version);
    t->resp.http_version = version == CURL_HTTP_VERSION_2_0   ? "2"
                           : version == CURL_HTTP_VERSION_1_0 ? "1.0"
                                                              : "1.1";
    if (!t->resp.effective_url) {
        t->resp.effective_url = fs_strdup(t->url);
        if (!t->resp.effective_url) {
            t->oom = true;
            return false;
        }
    }
    if (t->on_response && !t->on_response(t->userdata, &t->resp)) {
        t->aborted_by_cb = true;
        return false;
    }
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
    if ((len == 2 && data[0] == '\r' && data[1] == '\n') || (len == 1 && data[0] == '\n'))
        return headers_complete(t) ? len : 0;
    if (!fs_http_take_header(&t->resp, data, len)) {
        t->oom = true;
        return 0;
    }
    return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *userdata)
{
    transfer *t = userdata;
    size_t len = size * n;
    if (!t->headers_done && !headers_complete(t))
        return 0;
    fs_tally_body(len);
    if (t->redirecting)
        return len; /* the body of a redirect is not wanted */
    t->body_bytes += len;
    long status = t->resp.status;
    if (t->sink && status >= 200 && status < 300) {
        if (!t->sink(data, len, t->userdata)) {
            t->sink_aborted = true;
            return 0;
        }
        return len;
    }
    /* error bodies (and 2xx without a sink) are kept up to the cap, then cut */
    size_t room = t->resp.body.len < t->max_body ? t->max_body - t->resp.body.len : 0;
    if (room && !fs_buf_append(&t->resp.body, data, len < room ? len : room)) {
        t->oom = true;
        return 0;
    }
    if (len > room && t->sink == NULL && status >= 200 && status < 300) {
        t->too_large = true;
        return 0;
    }
    return len;
}

/* Configure the easy handle for the current hop and add it to the multi handle. */
static fhirsync_code start_hop(transfer *t, fhirsync_error *err)
{
    fhirsync_code rc = fs_url_check_transport(t->url, "download URL", err);
    if (rc != FHIRSYNC_OK)
        return rc;
    CURL *e = t->easy;
    curl_easy_reset(e);
    curl_slist_free_all(t->slist);
    t->slist = NULL;
    t->header_bytes = 0;
    t->headers_done = t->is_final = t->redirecting = false;
    t->body_bytes = 0;
    t->errbuf[0] = '\0';
    fs_http_clear_headers(&t->resp);
    fs_buf_reset(&t->resp.body);
    t->resp.status = 0;

    bool attach = false;
    char *auth = NULL;
    if (t->token && t->token_origin &&
        fs_url_compare_origins(t->url, t->token_origin, &attach) != FHIRSYNC_OK)
        goto nomem;
    for (size_t i = 0; i < t->header_count; i++) {
        struct curl_slist *n = curl_slist_append(t->slist, t->headers[i]);
        if (!n)
            goto nomem;
        t->slist = n;
    }
    if (attach) {
        fs_buf b;
        fs_buf_init(&b);
        if (!fs_buf_printf(&b, "Authorization: Bearer %s", t->token)) {
            fs_buf_free_secret(&b);
            goto nomem;
        }
        auth = fs_buf_steal(&b);
        struct curl_slist *n = curl_slist_append(t->slist, auth);
        fs_free_secret(auth);
        if (!n)
            goto nomem;
        t->slist = n;
    }
    t->resp.token_sent = attach;
    curl_easy_setopt(e, CURLOPT_URL, t->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, t->connect_timeout_s);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, t->stall_bytes_per_s);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, t->stall_timeout_s);
    curl_easy_setopt(e, CURLOPT_USERAGENT, t->m->user_agent);
    if (!t->identity)
        curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, (long)RECEIVE_BUFFER);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (t->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, t->ca_file);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->slist);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(e, CURLOPT_PRIVATE, t);
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    if (fs_log_enabled(FHIRSYNC_LOG_DEBUG)) {
        curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, fs_http_curl_debug);
        curl_easy_setopt(e, CURLOPT_VERBOSE, 1L); /* only feeds fs_http_curl_debug, never stderr */
    }
    char range[48];
    if (t->range_from > 0) {
        /* CURLOPT_RANGE rather than RESUME_FROM: a 200 answer (no range support) is then a
         * normal response that the caller handles by starting over */
        snprintf(range, sizeof range, "%lld-", (long long)t->range_from);
        curl_easy_setopt(e, CURLOPT_RANGE, range);
    }
    fs_log(FHIRSYNC_LOG_DEBUG, "http-multi: GET %s%s%s", t->url,
           attach ? " (with bearer token)" : "", t->range_from > 0 ? " (range)" : "");
    if (curl_multi_add_handle(t->m->multi, e) != CURLM_OK)
        return fs_err(err, FHIRSYNC_E_INTERNAL, "cannot start the transfer of %s", t->url);
    return FHIRSYNC_OK;
nomem:
    return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory starting the transfer of %s", t->url);
}

/* What our callbacks stopped, or else what libcurl says (a broken encoding: retried). */
static fhirsync_code map_error(CURLcode cc, transfer *t)
{
    fhirsync_error *err = &t->err;
    const char *url = t->url;
    if (t->oom)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory receiving %s", url);
    if (t->headers_too_large)
        return fs_http_headers_too_large(url, err);
    if (t->too_large)
        return fs_err(err, FHIRSYNC_E_TOO_LARGE, "response from %s is too large (refused)", url);
    if (t->sink_aborted || t->aborted_by_cb)
        return fs_err(err, FHIRSYNC_E_CANCELLED, "transfer from %s stopped by its receiver", url);
    return fs_http_curl_error(cc, url, t->errbuf, FHIRSYNC_E_NETWORK, err);
}

/* A hop ended with a redirect to follow: move to the next URL. False when the transfer is
 * finished (t->code set). */
static bool follow(transfer *t)
{
    const char *location = fs_http_header_get(&t->resp, "Location");
    char *next = NULL;
    long status = t->resp.status;
    t->code = fs_url_resolve(t->url, location, false, &next, &t->err);
    if (t->code != FHIRSYNC_OK)
        return false;
    bool same = false;
    if (t->redirects == FS_REDIRECT_SAME_ORIGIN &&
        fs_url_compare_origins(t->url, next, &same) != FHIRSYNC_OK) {
        t->code = fs_err(&t->err, FHIRSYNC_E_NOMEM, "out of memory following a redirect");
        fs_free(next);
        return false;
    }
    if (t->redirects == FS_REDIRECT_SAME_ORIGIN && !same) {
        t->code = fs_err_http(&t->err, FHIRSYNC_E_REDIRECT, status,
                              "refused to follow a redirect from %s to another origin (%s)", t->url,
                              next);
        fs_free(next);
        return false;
    }
    for (size_t i = 0; i < t->visited_count; i++) {
        if (strcmp(t->visited[i], next) == 0 || strcmp(t->url, next) == 0) {
            t->code = fs_err_http(&t->err, FHIRSYNC_E_REDIRECT, status,
                                  "redirect loop: %s redirects back to %s", t->url, next);
            fs_free(next);
            return false;
        }
    }
    if (t->visited_count >= MAX_REDIRECTS) {
        t->code =
            fs_err_http(&t->err, FHIRSYNC_E_REDIRECT, status,
                        "too many redirects (more than %d) from %s", MAX_REDIRECTS, t->visited[0]);
        fs_free(next);
        return false;
    }
    bool token_there = t->token && fs_url_same_origin(next, t->token_origin);
    fs_log(FHIRSYNC_LOG_INFO, "http: %ld redirect from %s to %s%s", status, t->url, next,
           t->token && !token_there ? " (no token sent there)" : "");
    t->visited[t->visited_count++] = t->url;
    t->url = next;
    t->resp.redirects_followed++;
    curl_multi_remove_handle(t->m->multi, t->easy);
    t->code = start_hop(t, &t->err);
    return t->code == FHIRSYNC_OK;
}

static void finish(fs_multi *m, transfer *t)
{
    /* unlink from the running list */
    for (transfer **p = &m->running; *p; p = &(*p)->next) {
        if (*p == t) {
            *p = t->next;
            break;
        }
    }
    curl_multi_remove_handle(m->multi, t->easy);
    t->next = NULL;
    if (m->finished_tail)
        m->finished_tail->next = t;
    else
        m->finished_head = t;
    m->finished_tail = t;
}

static void on_done(fs_multi *m, transfer *t, CURLcode cc)
{
    double total = 0;
    curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME, &total);
    t->resp.total_time_s += total;
    if (cc != CURLE_OK) {
        t->code = map_error(cc, t);
    } else if (t->oom) {
        t->code = fs_err(&t->err, FHIRSYNC_E_NOMEM, "out of memory receiving %s", t->url);
    } else if (!t->headers_done && !headers_complete(t)) {
        t->code = map_error(CURLE_WRITE_ERROR, t);
    } else if (t->redirecting) {
        if (follow(t))
            return; /* the next hop runs */
    } else {
        t->code = FHIRSYNC_OK;
    }
    finish(m, t);
}

/* ---- the engine ------------------------------------------------------------------------------ */

fs_multi *fs_multi_new(const char *user_agent)
{
    fs_multi *m = fs_calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->user_agent = fs_strdup(user_agent ? user_agent : "fhirsync/" FHIRSYNC_VERSION);
    m->multi = curl_multi_init();
    if (!m->user_agent || !m->multi) {
        fs_multi_free(m);
        return NULL;
    }
    curl_multi_setopt(m->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    return m;
}

void fs_multi_free(fs_multi *m)
{
    if (!m)
        return;
    while (m->running) {
        transfer *t = m->running;
        m->running = t->next;
        transfer_free(t);
    }
    while (m->finished_head) {
        transfer *t = m->finished_head;
        m->finished_head = t->next;
        transfer_free(t);
    }
    if (m->multi)
        curl_multi_cleanup(m->multi);
    fs_free(m->user_agent);
    fs_free(m);
}

size_t fs_multi_pending(const fs_multi *m)
{
    return m->pending;
}

fhirsync_code fs_multi_add(fs_multi *m, const fs_multi_request *req, fhirsync_error *err)
{
    transfer *t = fs_calloc(1, sizeof *t);
    fhirsync_code rc = FHIRSYNC_OK;
    if (!t)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory starting a download");
    fs_http_response_init(&t->resp);
    t->m = m;
    size_t nh = 0;
    while (req->headers && req->headers[nh])
        nh++;
    t->headers = nh ? fs_calloc(nh, sizeof *t->headers) : NULL;
    bool ok = (nh == 0 || t->headers) && (t->url = fs_strdup(req->url)) != NULL &&
              (t->easy = curl_easy_init()) != NULL;
    for (size_t i = 0; ok && i < nh; i++) {
        t->headers[i] = fs_strdup(req->headers[i]);
        ok = t->headers[i] != NULL;
        t->header_count = i + 1;
    }
    if (ok && req->bearer_token && req->token_origin)
        ok = (t->token = fs_strdup(req->bearer_token)) != NULL &&
             (t->token_origin = fs_strdup(req->token_origin)) != NULL;
    if (ok && req->ca_file)
        ok = (t->ca_file = fs_strdup(req->ca_file)) != NULL;
    if (!ok) {
        t->m = NULL;
        transfer_free(t);
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory starting a download");
    }
    t->redirects = req->redirects;
    t->range_from = req->range_from;
    t->identity = req->identity;
    t->connect_timeout_s = req->connect_timeout_s > 0 ? req->connect_timeout_s : 10;
    t->stall_timeout_s = req->stall_timeout_s > 0 ? req->stall_timeout_s : 120;
    t->stall_bytes_per_s = req->stall_bytes_per_s > 0 ? req->stall_bytes_per_s : 1;
    t->max_body = req->max_body ? req->max_body : DEFAULT_MAX_BODY;
    t->on_response = req->on_response;
    t->sink = req->sink;
    t->userdata = req->userdata;
    rc = start_hop(t, err);
    if (rc != FHIRSYNC_OK) {
        curl_multi_remove_handle(m->multi, t->easy);
        t->m = NULL;
        transfer_free(t);
        return rc;
    }
    t->next = m->running;
    m->running = t;
    m->pending++;
    return FHIRSYNC_OK;
}

static bool pop_finished(fs_multi *m, fs_multi_done *done)
{
    transfer *t = m->finished_head;
    if (!t)
        return false;
    m->finished_head = t->next;
    if (!m->finished_head)
        m->finished_tail = NULL;
    m->pending--;
    memset(done, 0, sizeof *done);
    done->userdata = t->userdata;
    done->code = t->code;
    done->err = t->err;
    done->resp = t->resp;
    done->body_bytes = t->body_bytes;
    fs_http_response_init(&t->resp); /* handed over */
    t->m = NULL;                     /* already removed from the multi handle */
    transfer_free(t);
    return true;
}

/* Run what is ready without waiting; true with *done filled when a transfer finished. */
static bool drive(fs_multi *m, fs_multi_done *done)
{
    if (pop_finished(m, done))
        return true;
    int running = 0;
    curl_multi_perform(m->multi, &running);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        char *priv = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
        transfer *t = (transfer *)(void *)priv;
        if (t)
            on_done(m, t, msg->data.result);
    }
    return pop_finished(m, done);
}

bool fs_multi_poll(fs_multi *m, int timeout_ms, fs_multi_done *done)
{
    if (drive(m, done))
        return true;
    if (!m->running || timeout_ms <= 0)
        return false;
    curl_multi_poll(m->multi, NULL, 0, timeout_ms, NULL);
    return drive(m, done);
}

void fs_multi_wakeup(fs_multi *m)
{
    curl_multi_wakeup(m->multi);
}

bool fs_multi_abort(fs_multi *m, void *userdata)
{
    for (transfer **p = &m->running; *p; p = &(*p)->next) {
        if ((*p)->userdata == userdata) {
            transfer *t = *p;
            *p = t->next;
            m->pending--;
            transfer_free(t);
            return true;
        }
    }
    return false;
}
