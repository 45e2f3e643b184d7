/* fhir/client.c: the FHIR REST client handle and the one request path every FHIR call takes
 * (fs_fhir_perform): target resolution under the origin rule, the endpoint's rate limiter, the
 * bearer token with one renewal on a 401, retries with backoff that honour Retry-After, and the
 * profile's headers. Reads and raw requests of the public API are thin wrappers around it; the
 * search iterator (search.c) and the bulk client use it directly. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "auth/auth_internal.h"
#include "config/config_internal.h"
#include "fhir/fhir_internal.h"
#include "http/policy.h"
#include "http/ratelimit.h"

/* max_body when the profile somehow has none (the setting's own default is 64 MiB). */
#define DEFAULT_MAX_BODY (64 * 1024 * 1024)

struct fhirsync_client {
    fhirsync_endpoint *ep; /* the client's own copy */
    fhirsync_auth *auth;
    fs_http *http;
    const char *base_url;  /* borrowed from ep */
    const char *client_id; /* borrowed from ep */
    char *origin;          /* of base_url */
    size_t max_body;
    long max_retries;
    long retry_cap;
    long rate_limit;    /* requests per minute, 0: off */
    fhirsync_error err; /* the last public call's outcome */
};

struct fhirsync_response {
    fs_http_response http;
};

/* ---- the handle ------------------------------------------------------------------------------ */

void fhirsync_client_free(fhirsync_client *client)
{
    if (!client)
        return;
    fhirsync_auth_free(client->auth);
    fs_http_free(client->http);
    fhirsync_endpoint_free(client->ep);
    fs_free(client->origin);
    fs_free(client);
}

fhirsync_code fhirsync_client_new(const fhirsync_endpoint *ep, fhirsync_client **out,
                                  fhirsync_error *err)
{
    if (!out)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_client_new: no place for the client");
    *out = NULL;
    if (!ep)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_client_new: no endpoint profile");
    fhirsync_client *c = fs_calloc(1, sizeof *c);
    if (!c)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory creating the FHIR client");
    /* the auth handle checks that the profile is complete and loads the key */
    fhirsync_code rc = fhirsync_auth_new(ep, &c->auth, err);
    if (rc != FHIRSYNC_OK)
        goto out;
    if (!(c->ep = fhirsync_endpoint_dup(ep)) || !(c->http = fs_http_new(NULL))) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory creating the FHIR client");
        goto out;
    }
    c->base_url = fhirsync_endpoint_get(c->ep, "base_url");
    c->client_id = fhirsync_endpoint_get(c->ep, "client_id");
    rc = fs_url_check_transport(c->base_url, "FHIR base URL (base_url)", err);
    if (rc != FHIRSYNC_OK)
        goto out;
    rc = fs_url_origin(c->base_url, &c->origin, err);
    if (rc != FHIRSYNC_OK)
        goto out;
    long max_body = fs_endpoint_long(c->ep, "max_body");
    c->max_body = max_body > 0 ? (size_t)max_body : DEFAULT_MAX_BODY;
    c->max_retries = fs_endpoint_long(c->ep, "max_retries");
    c->retry_cap = fs_endpoint_long(c->ep, "retry_cap");
    c->rate_limit = fs_endpoint_long(c->ep, "rate_limit");
    if (c->rate_limit > 0)
        fs_log(FHIRSYNC_LOG_DEBUG, "client: rate limit %ld requests per minute for %s (client %s)",
               c->rate_limit, c->base_url, c->client_id ? c->client_id : "?");
out:
    if (rc != FHIRSYNC_OK)
        fhirsync_client_free(c);
    else
        *out = c;
    return rc;
}

const char *fhirsync_client_errmsg(const fhirsync_client *client)
{
    return client ? client->err.message : "";
}

fhirsync_code fhirsync_client_errcode(const fhirsync_client *client)
{
    return client ? client->err.code : FHIRSYNC_E_ARG;
}

fhirsync_code fs_fhir_set_error(fhirsync_client *client, const fhirsync_error *err)
{
    if (!err || err->code == FHIRSYNC_OK) {
        /* called for every resource a search hands out: clear the 1 KiB message only when set */
        if (client->err.code != FHIRSYNC_OK || client->err.http_status || client->err.message[0])
            memset(&client->err, 0, sizeof client->err);
        return FHIRSYNC_OK;
    }
    client->err = *err;
    if (!client->err.message[0])
        snprintf(client->err.message, sizeof client->err.message, "%s",
                 fhirsync_strerror(err->code));
    return err->code;
}

const fhirsync_endpoint *fs_fhir_client_endpoint(const fhirsync_client *client)
{
    return client->ep;
}

const char *fs_fhir_client_base(const fhirsync_client *client)
{
    return client->base_url;
}

const char *fs_fhir_client_origin(const fhirsync_client *client)
{
    return client->origin;
}

fhirsync_auth *fs_fhir_client_auth(fhirsync_client *client)
{
    return client->auth;
}

/* ---- the origin rule ------------------------------------------------------------------------- */

fhirsync_code fs_fhir_same_origin(const fhirsync_client *client, const char *url, bool *same)
{
    *same = false;
    char *origin = NULL;
    fhirsync_code rc = url ? fs_url_origin(url, &origin, NULL) : FHIRSYNC_E_URL;
    if (rc == FHIRSYNC_OK)
        *same = strcmp(origin, client->origin) == 0;
    fs_free(origin);
    return rc == FHIRSYNC_E_NOMEM ? rc : FHIRSYNC_OK; /* a malformed URL: another origin */
}

fhirsync_code fs_fhir_resolve(const fhirsync_client *client, const char *target, bool authenticated,
                              char **out, fhirsync_error *err)
{
    *out = NULL;
    if (!target || !*target)
        return fs_err(err, FHIRSYNC_E_ARG, "no FHIR path or URL to request");
    char *url = NULL;
    fhirsync_code rc = fs_url_resolve(client->base_url, target, true, &url, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    /* "//other.host/x" and absolute URLs alike: what counts is where the result points */
    bool same = false;
    if (authenticated && fs_fhir_same_origin(client, url, &same) != FHIRSYNC_OK) {
        fs_free(url);
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    if (authenticated && !same) {
        rc = fs_err(err, FHIRSYNC_E_URL,
                    "refusing to request %s: it is not on the FHIR server's origin %s, and the "
                    "bearer token is sent only to the FHIR server",
                    url, client->origin);
        fs_free(url);
        return rc;
    }
    *out = url;
    return FHIRSYNC_OK;
}

/* ---- the request path ------------------------------------------------------------------------ */

static bool header_named(const char *line, const char *name)
{
    size_t n = strlen(name);
    return strncasecmp(line, name, n) == 0 && line[n] == ':';
}

/* Accept line, the profile's headers, the caller's; a Content-Type for bodies. NULL-terminated
 * array of borrowed strings except `accept_line` (owned by the caller of this function). */
static const char **build_headers(const fhirsync_client *c, const fs_fhir_request *req,
                                  char **accept_line)
{
    *accept_line = NULL;
    size_t own = 0, has_accept = 0, has_ctype = 0;
    for (const char *const *h = req->headers; h && *h; h++, own++) {
        has_accept |= header_named(*h, "Accept");
        has_ctype |= header_named(*h, "Content-Type");
    }
    size_t profile = fhirsync_endpoint_count(c->ep, "header");
    for (size_t i = 0; i < profile; i++) {
        const char *h = fhirsync_endpoint_get_at(c->ep, "header", i);
        has_accept |= header_named(h, "Accept");
        has_ctype |= header_named(h, "Content-Type");
    }
    const char **list = fs_calloc(own + profile + 3, sizeof *list);
    if (!list)
        return NULL;
    size_t n = 0;
    if (!has_accept) {
        fs_buf b;
        fs_buf_init(&b);
        if (!fs_buf_printf(&b, "Accept: %s", req->accept ? req->accept : FS_FHIR_JSON)) {
            fs_free(list);
            return NULL;
        }
        *accept_line = fs_buf_steal(&b);
        list[n++] = *accept_line;
    }
    for (size_t i = 0; i < profile; i++)
        list[n++] = fhirsync_endpoint_get_at(c->ep, "header", i);
    for (const char *const *h = req->headers; h && *h; h++)
        list[n++] = *h;
    if (req->body && !has_ctype)
        list[n++] = "Content-Type: " FS_FHIR_JSON;
    list[n] = NULL;
    return list;
}

/* Counts what a streamed body delivered, so that a transfer cut after the sink received bytes is
 * left to the caller (who can resume with a Range) rather than replayed into the same sink. */
typedef struct counting_sink {
    fs_http_sink sink;
    void *userdata;
    uint64_t delivered;
} counting_sink;

static bool count_into_sink(const char *data, size_t len, void *userdata)
{
    counting_sink *cs = userdata;
    cs->delivered += len;
    return cs->sink(data, len, cs->userdata);
}

/* A 2xx body buffered in the caller's buffer (fs_fhir_request.into), capped like resp->body. */
typedef struct buffer_sink {
    fs_buf *into;
    size_t max_body;
    bool too_large;
    bool oom;
} buffer_sink;

static bool append_to_buffer(const char *data, size_t len, void *userdata)
{
    buffer_sink *bs = userdata;
    if (len > bs->max_body - bs->into->len) {
        bs->too_large = true;
        return false;
    }
    if (!fs_buf_append(bs->into, data, len)) {
        bs->oom = true;
        return false;
    }
    return true;
}

fhirsync_code fs_fhir_perform(fhirsync_client *c, const fs_fhir_request *req,
                              fs_http_response *resp, fhirsync_error *err)
{
    fs_http_response_clear(resp);
    fhirsync_error e = {0};
    char *url = NULL, *accept_line = NULL;
    const char **headers = NULL;
    const char *method = req->method ? req->method : "GET";
    bool idempotent = strcasecmp(method, "POST") != 0 && strcasecmp(method, "PATCH") != 0;
    counting_sink cs = {.sink = req->sink, .userdata = req->sink_userdata};
    buffer_sink bs = {.into = req->into, .max_body = req->max_body ? req->max_body : c->max_body};
    fs_http_renewal renewal = {0};
    bool force_new = false;
    fhirsync_code rc = fs_fhir_resolve(c, req->target, !req->anonymous, &url, &e);
    if (rc != FHIRSYNC_OK)
        goto out;
    if (!(headers = build_headers(c, req, &accept_line))) {
        rc = fs_err(&e, FHIRSYNC_E_NOMEM, "out of memory building a request to %s", url);
        goto out;
    }
    for (unsigned attempt = 0;;) {
        if (fs_cancel_requested()) {
            rc = fs_err(&e, FHIRSYNC_E_CANCELLED, "cancelled before requesting %s", url);
            break;
        }
        /* the token first: a token request takes its own slot of the rate limit (the bucket of
         * this base URL and client id: token.c keys it the same way), and the slot of this
         * request must be taken right before it is sent */
        fhirsync_token token = {0};
        if (!req->anonymous) {
            rc = fhirsync_auth_token(c->auth, force_new, &token, &e);
            if (rc != FHIRSYNC_OK)
                break;
            force_new = false;
        }
        rc = fs_ratelimit_acquire(c->base_url, c->client_id, c->rate_limit, &e);
        if (rc != FHIRSYNC_OK)
            break;
        fs_http_request hr = {0};
        fs_http_request_from_profile(c->ep, &hr);
        hr.method = method;
        hr.url = url;
        hr.headers = headers;
        hr.body = req->body;
        hr.body_len = req->body ? req->body_len : 0;
        hr.bearer_token = req->anonymous ? NULL : token.access_token;
        hr.token_origin = req->anonymous ? NULL : c->base_url;
        hr.redirects = req->follow_anywhere ? FS_REDIRECT_DROP_TOKEN : FS_REDIRECT_SAME_ORIGIN;
        hr.max_body = req->max_body ? req->max_body : c->max_body;
        hr.sink = req->sink ? count_into_sink : NULL;
        hr.sink_userdata = req->sink ? &cs : NULL;
        if (req->into) {
            /* every attempt starts from an empty buffer: a retry replaces, never appends */
            fs_buf_reset(req->into);
            bs.too_large = bs.oom = false;
            hr.sink = append_to_buffer;
            hr.sink_userdata = &bs;
        }
        hr.range_from = req->range_from;
        rc = fs_http_perform(c->http, &hr, resp, &e);
        if (rc == FHIRSYNC_E_CANCELLED && bs.too_large)
            rc = fs_err(&e, FHIRSYNC_E_TOO_LARGE,
                        "response from %s is larger than the %zu-byte limit (refused)", url,
                        bs.max_body);
        else if (rc == FHIRSYNC_E_CANCELLED && bs.oom)
            rc = fs_err(&e, FHIRSYNC_E_NOMEM, "out of memory receiving %s", url);

        char reason[sizeof e.message + 64];
        /* the server's wish, when it answered: seconds to wait, or -1 */
        int64_t retry_after = rc == FHIRSYNC_OK ? fs_http_retry_after(resp, fs_now()) : -1;
        if (rc != FHIRSYNC_OK) {
            /* FHIRSYNC_E_CANCELLED (fhirsync_cancel() stopped the transfer, or a sink refused
             * the body), TLS, URL, redirect, size and memory errors are final; so is a POST
             * that may have been processed (never replayed blindly) */
            if (!fs_http_retryable_failure(rc, idempotent, resp->request_sent))
                break;
            if (cs.delivered > 0)
                break; /* the sink has part of the body: the caller decides (resume) */
            snprintf(reason, sizeof reason, "%s", e.message);
        } else if (fs_http_should_renew(&renewal, resp->status, resp->token_sent)) {
            /* the token was revoked or expired early: one new token, one more try */
            force_new = true;
            fhirsync_auth_invalidate(c->auth);
            fs_log(FHIRSYNC_LOG_INFO,
                   "fhir: HTTP 401 from %s: getting a new token and trying "
                   "once more",
                   url);
            continue;
        } else if (!req->no_status_retries &&
                   fs_http_retryable_status(resp->status, idempotent, retry_after)) {
            const char *ra = fs_http_header_get(resp, "Retry-After");
            int n = snprintf(reason, sizeof reason, "HTTP %ld", resp->status);
            if (retry_after >= 0 && n > 0 && (size_t)n < sizeof reason)
                snprintf(reason + n, sizeof reason - (size_t)n, " with Retry-After %s%s", ra,
                         retry_after > (c->retry_cap > 0 ? c->retry_cap : 300)
                             ? " (more than retry_cap: capped)"
                             : "");
        } else {
            break;
        }
        if ((long)attempt >= c->max_retries) {
            if (c->max_retries > 0)
                fs_log(FHIRSYNC_LOG_WARN, "fhir: %s %s: %s; giving up after %ld retries", method,
                       url, reason, c->max_retries);
            break;
        }
        int64_t delay = fs_http_retry_delay_ms(attempt, retry_after, c->retry_cap);
        fs_log(FHIRSYNC_LOG_WARN, "fhir: %s %s: %s; retry %u of %ld in %.1f s", method, url, reason,
               attempt + 1, c->max_retries, (double)delay / 1000.0);
        if (!fs_sleep_ms(delay)) {
            rc = fs_err(&e, FHIRSYNC_E_CANCELLED, "cancelled while waiting to retry %s", url);
            break;
        }
        attempt++;
        /* a network failure leaves no response: start the next attempt clean */
        fs_http_response_clear(resp);
    }
out:
    if (rc != FHIRSYNC_OK && err)
        *err = e;
    fs_free(headers);
    fs_free(accept_line);
    fs_free(url);
    return rc;
}

/* ---- public reads ---------------------------------------------------------------------------- */

/* A 2xx answer that is an HTML page where FHIR JSON was asked for: a login or "session expired"
 * page served with 200 by a gateway, a proxy's page, or a base URL that points at a web app.
 * Told by the Content-Type or by the body's first byte ('<'), either being enough. */
static fhirsync_code check_json_answer(const fs_http_response *resp, const char *url,
                                       fhirsync_error *e)
{
    const char *ctype = fs_http_header_get(resp, "Content-Type");
    const char *body = resp->body.data ? resp->body.data : "";
    size_t i = 0, len = resp->body.data ? resp->body.len : 0;
    while (i < len && strchr(" \t\r\n", body[i]))
        i++;
    bool html_type = ctype && (strcasestr(ctype, "text/html") || strcasestr(ctype, "xhtml"));
    bool html_body = i < len && body[i] == '<';
    if (!html_type && !html_body)
        return FHIRSYNC_OK;
    return fs_err_http(e, FHIRSYNC_E_PROTOCOL, resp->status,
                       "%s answered HTTP %ld with an HTML page (Content-Type %s) where FHIR JSON "
                       "was expected: a login or session-expired page, a proxy, or a base URL "
                       "that is not the FHIR endpoint",
                       url, resp->status, ctype ? ctype : "not given");
}

static fhirsync_code request(fhirsync_client *client, const char *method, const char *path_or_url,
                             const char *const *headers, const char *body, size_t body_len,
                             bool accept_any_status, bool expect_json, fhirsync_response **out)
{
    if (out)
        *out = NULL;
    if (!client)
        return FHIRSYNC_E_ARG;
    fhirsync_error e = {0};
    fhirsync_code rc;
    if (!out || !path_or_url) {
        rc = fs_err(&e, FHIRSYNC_E_ARG, "fhirsync_client_request: no %s",
                    out ? "path or URL" : "place for the response");
        return fs_fhir_set_error(client, &e);
    }
    fhirsync_response *resp = fs_calloc(1, sizeof *resp);
    if (!resp) {
        rc = fs_err(&e, FHIRSYNC_E_NOMEM, "out of memory");
        return fs_fhir_set_error(client, &e);
    }
    fs_http_response_init(&resp->http);
    fs_fhir_request req = {.method = method,
                           .target = path_or_url,
                           .headers = headers,
                           .body = body,
                           .body_len = body_len};
    rc = fs_fhir_perform(client, &req, &resp->http, &e);
    if (rc == FHIRSYNC_OK && !accept_any_status) {
        const char *url = resp->http.effective_url ? resp->http.effective_url : path_or_url;
        rc = fs_fhir_status_error(&resp->http, url, &e);
        if (resp->http.status == 401)
            fs_err_prefix(&e, "unauthorized even with a new token");
        else if (resp->http.status == 403)
            fs_err_prefix(&e, "forbidden (the token's scopes do not cover this request)");
        if (rc == FHIRSYNC_OK && expect_json)
            rc = check_json_answer(&resp->http, url, &e);
    }
    if (rc != FHIRSYNC_OK) {
        fhirsync_response_free(resp);
        return fs_fhir_set_error(client, &e);
    }
    *out = resp;
    return fs_fhir_set_error(client, NULL);
}

fhirsync_code fhirsync_client_request(fhirsync_client *client, const char *method,
                                      const char *path_or_url, const char *const *headers,
                                      const char *body, size_t body_len, bool accept_any_status,
                                      fhirsync_response **out)
{
    return request(client, method, path_or_url, headers, body, body_len, accept_any_status, false,
                   out);
}

fhirsync_code fhirsync_client_get(fhirsync_client *client, const char *path_or_url,
                                  fhirsync_response **out)
{
    return request(client, "GET", path_or_url, NULL, NULL, 0, false, true, out);
}

void fhirsync_response_free(fhirsync_response *resp)
{
    if (!resp)
        return;
    fs_http_response_clear(&resp->http);
    fs_free(resp);
}

long fhirsync_response_status(const fhirsync_response *resp)
{
    return resp ? resp->http.status : 0;
}

const char *fhirsync_response_body(const fhirsync_response *resp, size_t *len)
{
    if (len)
        *len = resp && resp->http.body.data ? resp->http.body.len : 0;
    return resp && resp->http.body.data ? resp->http.body.data : "";
}

const char *fhirsync_response_header(const fhirsync_response *resp, const char *name)
{
    return resp && name ? fs_http_header_get(&resp->http, name) : NULL;
}

const char *fhirsync_response_url(const fhirsync_response *resp)
{
    return resp ? resp->http.effective_url : NULL;
}
