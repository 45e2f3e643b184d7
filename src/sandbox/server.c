/* sandbox/server.c: the fhirsync-sandbox program: options, the two libmicrohttpd listeners (the
 * main one with the FHIR API, the authorization server and the admin API; a "storage" one on
 * another port and another origin, standing for the object store real EHRs redirect bulk
 * downloads to), the route table, request bodies with a size cap, fault injection around the
 * handlers, the request log, the ready file, and a clean stop on SIGTERM/SIGINT.
 *
 * Everything that touches libmicrohttpd is in this file. A request goes: URI callback (allocate
 * the sb_request with the raw URI) -> access handler calls (headers, then body chunks up to
 * SB_MAX_BODY) -> dispatch (split the path, parse the query, with --practices hand a
 * /practice/{i} request to practice i's server and count it against its rate limit, find the
 * route, fire a fault rule, run the handler into an sb_reply) -> an MHD response (memory, a file
 * range, or a callback that cuts the connection for the reset fault) -> the request log. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "sandbox.h"

/* ---- routes --------------------------------------------------------------------------------- */

enum {
    ROUTE_ADMIN = 1 << 0, /* loopback peers only; not written to the request log */
    /* With --practices the root serves only these (the others are a practice's, under
     * /practice/{i}); without, the single base serves every route. */
    ROUTE_ROOT = 1 << 1,   /* the root's only: never under /practice/{i} */
    ROUTE_SHARED = 1 << 2, /* the root's and every practice's */
};

typedef struct sb_route {
    sb_listener listener;
    const char *methods; /* "GET", "GET|HEAD", ... */
    const char *pattern; /* path segments; "*" matches (and captures) one segment */
    sb_handler handler;
    sb_on on; /* category for fault rules */
    unsigned flags;
} sb_route;

/* Adding an endpoint is one line. Order matters: the first matching pattern wins. */
static const sb_route routes[] = {
    {SB_LISTENER_MAIN, "GET", "/fhir/.well-known/smart-configuration", sb_fhir_handle_smart_config,
     SB_ON_METADATA, 0},
    {SB_LISTENER_MAIN, "GET", "/fhir/metadata", sb_fhir_handle_metadata, SB_ON_METADATA, 0},
    {SB_LISTENER_MAIN, "GET|POST", "/fhir/$export", sb_bulk_handle_kickoff, SB_ON_KICKOFF, 0},
    {SB_LISTENER_MAIN, "GET|POST", "/fhir/Patient/$export", sb_bulk_handle_kickoff, SB_ON_KICKOFF,
     0},
    {SB_LISTENER_MAIN, "GET|POST", "/fhir/Group/*/$export", sb_bulk_handle_kickoff, SB_ON_KICKOFF,
     0},
    {SB_LISTENER_MAIN, "GET", "/fhir/bulkstatus/*", sb_bulk_handle_status, SB_ON_STATUS, 0},
    {SB_LISTENER_MAIN, "DELETE", "/fhir/bulkstatus/*", sb_bulk_handle_delete, SB_ON_STATUS, 0},
    {SB_LISTENER_MAIN, "GET|HEAD", "/fhir/bulkfiles/*/*", sb_bulk_handle_file, SB_ON_DOWNLOAD, 0},
    {SB_LISTENER_MAIN, "POST", "/fhir/*/_search", sb_fhir_handle_search_post, SB_ON_SEARCH, 0},
    {SB_LISTENER_MAIN, "GET", "/fhir/*", sb_fhir_handle_search, SB_ON_SEARCH, 0},
    {SB_LISTENER_MAIN, "GET", "/fhir/*/*", sb_fhir_handle_read, SB_ON_READ, 0},
    {SB_LISTENER_MAIN, "POST", "/auth/token", sb_auth_handle_token, SB_ON_TOKEN, 0},
    {SB_LISTENER_MAIN, "POST", "/auth/register", sb_auth_handle_register, SB_ON_NONE, 0},
    {SB_LISTENER_MAIN, "GET", "/auth/authorize", sb_launch_handle_authorize, SB_ON_NONE, 0},
    {SB_LISTENER_MAIN, "POST", "/auth/login", sb_launch_handle_login, SB_ON_NONE, 0},
    {SB_LISTENER_MAIN, "POST", "/auth/consent", sb_launch_handle_consent, SB_ON_NONE, 0},
    {SB_LISTENER_MAIN, "GET", "/auth/jwks", sb_launch_handle_jwks, SB_ON_NONE, 0},
    {SB_LISTENER_MAIN, "GET", "/.well-known/openid-configuration", sb_fhir_handle_openid_config,
     SB_ON_NONE, 0},
    {SB_LISTENER_MAIN, "GET", "/admin/launch", sb_launch_admin_get, SB_ON_NONE, ROUTE_ADMIN},
    {SB_LISTENER_MAIN, "POST", "/admin/launch", sb_launch_admin_set, SB_ON_NONE, ROUTE_ADMIN},
    {SB_LISTENER_MAIN, "GET", "/admin/grants", sb_launch_admin_grants, SB_ON_NONE, ROUTE_ADMIN},
    {SB_LISTENER_MAIN, "POST", "/admin/revoke", sb_launch_admin_revoke, SB_ON_NONE, ROUTE_ADMIN},
    {SB_LISTENER_MAIN, "POST", "/admin/mutate", sb_admin_handle_mutate, SB_ON_NONE, ROUTE_ADMIN},
    {SB_LISTENER_MAIN, "GET", "/admin/mutate", sb_admin_handle_mutate_get, SB_ON_NONE, ROUTE_ADMIN},
    {SB_LISTENER_MAIN, "GET", "/admin/state", sb_admin_handle_state, SB_ON_NONE, ROUTE_ADMIN},
    {SB_LISTENER_MAIN, "POST", "/admin/quirks", sb_admin_handle_quirks_add, SB_ON_NONE,
     ROUTE_ADMIN},
    {SB_LISTENER_MAIN, "GET", "/admin/quirks", sb_admin_handle_quirks_get, SB_ON_NONE, ROUTE_ADMIN},
    {SB_LISTENER_MAIN, "DELETE", "/admin/quirks", sb_admin_handle_quirks_delete, SB_ON_NONE,
     ROUTE_ADMIN},
    {SB_LISTENER_MAIN, "GET", "/admin/requests", sb_admin_handle_requests_get, SB_ON_NONE,
     ROUTE_ADMIN | ROUTE_SHARED},
    {SB_LISTENER_MAIN, "DELETE", "/admin/requests", sb_admin_handle_requests_delete, SB_ON_NONE,
     ROUTE_ADMIN | ROUTE_SHARED},
    {SB_LISTENER_MAIN, "GET", "/admin/practices", sb_admin_handle_practices_get, SB_ON_NONE,
     ROUTE_ADMIN | ROUTE_ROOT},
    {SB_LISTENER_MAIN, "GET", "/admin/practices/*", sb_admin_handle_practices_get, SB_ON_NONE,
     ROUTE_ADMIN | ROUTE_ROOT},
    {SB_LISTENER_MAIN, "POST", "/admin/practices", sb_admin_handle_practices_set, SB_ON_NONE,
     ROUTE_ADMIN | ROUTE_ROOT},
    {SB_LISTENER_MAIN, "POST", "/admin/practices/*", sb_admin_handle_practices_set, SB_ON_NONE,
     ROUTE_ADMIN | ROUTE_ROOT},
    {SB_LISTENER_MAIN, "DELETE", "/admin/practices", sb_admin_handle_practices_reset, SB_ON_NONE,
     ROUTE_ADMIN | ROUTE_ROOT},
    {SB_LISTENER_MAIN, "DELETE", "/admin/practices/*", sb_admin_handle_practices_reset, SB_ON_NONE,
     ROUTE_ADMIN | ROUTE_ROOT},
    {SB_LISTENER_MAIN, "POST", "/admin/faults", sb_admin_handle_faults_add, SB_ON_NONE,
     ROUTE_ADMIN},
    {SB_LISTENER_MAIN, "GET", "/admin/faults", sb_admin_handle_faults_get, SB_ON_NONE, ROUTE_ADMIN},
    {SB_LISTENER_MAIN, "DELETE", "/admin/faults", sb_admin_handle_faults_delete, SB_ON_NONE,
     ROUTE_ADMIN},
    {SB_LISTENER_STORAGE, "GET|HEAD", "/storage/bulkfiles/*/*", sb_bulk_handle_storage_file,
     SB_ON_NONE, 0},
    {SB_LISTENER_STORAGE, "GET", "/storage/fhir/*", sb_fhir_handle_storage_search, SB_ON_NONE, 0},
};

static bool method_listed(const char *methods, const char *method)
{
    size_t n = strlen(method);
    for (const char *p = methods; *p;) {
        size_t len = strcspn(p, "|");
        if (len == n && strncmp(p, method, n) == 0)
            return true;
        p += len;
        if (*p == '|')
            p++;
    }
    return false;
}

/* Whether the request path matches `pattern`; fills req->captures. */
static bool path_matches(const char *pattern, sb_request *req)
{
    size_t seg = 0, ncap = 0;
    const char *p = pattern + 1;
    while (*p) {
        size_t len = strcspn(p, "/");
        if (seg >= req->nsegments)
            return false;
        if (len == 1 && *p == '*') {
            if (ncap < sizeof req->captures / sizeof req->captures[0])
                req->captures[ncap++] = req->segments[seg];
        } else if (strlen(req->segments[seg]) != len || strncmp(req->segments[seg], p, len)) {
            return false;
        }
        seg++;
        p += len;
        if (*p == '/')
            p++;
    }
    return seg == req->nsegments;
}

/* ---- per-request state ---------------------------------------------------------------------- */

typedef struct listener_ctx {
    sb_server *sb;
    sb_listener listener;
    unsigned port;
} listener_ctx;

typedef struct request_ctx {
    sb_request req;
    char **segments; /* every path segment (req.segments skips a /practice/{i} prefix) */
    size_t nsegments;
    bool started;
    bool answered; /* a response is queued (413 before the body, or the final one) */
} request_ctx;

const char *sb_req_header(const sb_request *req, const char *name)
{
    if (!req->connection)
        return NULL;
    return MHD_lookup_connection_value((struct MHD_Connection *)req->connection, MHD_HEADER_KIND,
                                       name);
}

const char *sb_req_bearer(const sb_request *req)
{
    return sb_bearer_token(sb_req_header(req, MHD_HTTP_HEADER_AUTHORIZATION));
}

char *sb_req_url(const sb_server *sb, const sb_request *req)
{
    fs_buf url;
    fs_buf_init(&url);
    const char *origin = req->listener == SB_LISTENER_STORAGE ? sb->storage_origin : sb->origin;
    if (!fs_buf_append_str(&url, origin) || !fs_buf_append_str(&url, req->raw_uri)) {
        fs_buf_free(&url);
        return NULL;
    }
    return fs_buf_steal(&url);
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    listener_ctx *lc = cls;
    request_ctx *rc = fs_calloc(1, sizeof *rc);
    if (!rc)
        return NULL;
    if (!(rc->req.raw_uri = fs_strdup(uri ? uri : "/"))) {
        fs_free(rc);
        return NULL;
    }
    rc->req.listener = lc->listener;
    sb_params_init(&rc->req.query);
    fs_buf_init(&rc->req.body);
    const char *q = strchr(rc->req.raw_uri, '?');
    rc->req.raw_query = q ? q + 1 : "";
    return rc;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    request_ctx *rc = *con_cls;
    if (!rc)
        return;
    fs_free(rc->req.raw_uri);
    sb_segments_free(rc->segments, rc->nsegments);
    sb_params_free(&rc->req.query);
    fs_buf_free_secret(&rc->req.body);
    fs_free(rc);
    *con_cls = NULL;
}

/* ---- responses ------------------------------------------------------------------------------ */

/* A body sent through a callback: cut short (the reset fault, truncate-same-place) and/or
 * paced (trickle). Pacing sleeps in the callback: with the default thread per connection only
 * that connection waits; with a --threads pool it holds one pool thread (like the slow fault). */
typedef struct cut_body {
    int fd; /* >= 0: read from the file at offset */
    uint64_t offset;
    char *data;    /* else from memory */
    uint64_t cut;  /* bytes sent before the connection is dropped (UINT64_MAX: none) */
    uint64_t rate; /* > 0: bytes per second */
    int64_t start_ms;
    const atomic_bool *stopping;
} cut_body;

/* How many bytes from `pos` the pace allows now, waiting (in slices, so that a stop is seen)
 * until it allows at least one; 0 when the server stops. */
static size_t paced(cut_body *c, uint64_t pos, size_t n)
{
    if (c->start_ms == 0)
        c->start_ms = fs_monotonic_ms();
    for (;;) {
        if (atomic_load(c->stopping))
            return 0;
        int64_t elapsed = fs_monotonic_ms() - c->start_ms;
        uint64_t allowed = c->rate * (uint64_t)(elapsed > 0 ? elapsed : 0) / 1000;
        if (allowed > pos)
            return allowed - pos < n ? (size_t)(allowed - pos) : n;
        int64_t wait_ms = (int64_t)((pos + 1) * 1000 / c->rate) - elapsed + 1;
        if (wait_ms > 100)
            wait_ms = 100;
        struct timespec ts = {0, (long)wait_ms * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static ssize_t cut_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    cut_body *c = cls;
    if (pos >= c->cut)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    size_t n = c->cut - pos < max ? (size_t)(c->cut - pos) : max;
    if (c->rate && (n = paced(c, pos, n)) == 0)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if (c->fd >= 0) {
        ssize_t got = pread(c->fd, buf, n, (off_t)(c->offset + pos));
        return got > 0 ? got : MHD_CONTENT_READER_END_WITH_ERROR;
    }
    memcpy(buf, c->data + pos, n);
    return (ssize_t)n;
}

static void cut_free(void *cls)
{
    cut_body *c = cls;
    if (c->fd >= 0)
        close(c->fd);
    fs_free(c->data);
    fs_free(c);
}

/* The MHD response for a reply (takes the body or the file descriptor over). */
static struct MHD_Response *make_response(sb_server *sb, sb_reply *reply, const sb_fault *fault)
{
    struct MHD_Response *resp = NULL;
    uint64_t size = reply->fd >= 0 ? reply->length : reply->body.len;
    if (fault->kind == SB_FAULT_RESET || reply->cut || reply->rate) {
        cut_body *c = fs_calloc(1, sizeof *c);
        if (!c)
            return NULL;
        c->fd = reply->fd;
        c->offset = reply->offset;
        c->data = reply->fd >= 0 ? NULL : fs_buf_steal(&reply->body);
        c->cut = UINT64_MAX;
        if (fault->kind == SB_FAULT_RESET) {
            c->cut = fault->after_bytes >= 0 ? (uint64_t)fault->after_bytes : size / 2;
            if (size > 0 && c->cut >= size)
                c->cut = size - 1;
        }
        if (reply->cut && reply->cut_after < c->cut)
            c->cut = reply->cut_after;
        c->rate = reply->rate;
        c->stopping = &sb->stopping;
        reply->fd = -1;
        resp = MHD_create_response_from_callback(size, 16384, cut_read, c, cut_free);
        if (!resp)
            cut_free(c);
        return resp;
    }
    if (reply->fd >= 0) {
        resp = MHD_create_response_from_fd_at_offset64(reply->length, reply->fd, reply->offset);
        if (resp)
            reply->fd = -1;
        return resp;
    }
    if (reply->body.len == 0)
        return MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    size_t len = reply->body.len;
    char *data = fs_buf_steal(&reply->body);
    resp = MHD_create_response_from_buffer_with_free_callback(len, data, fs_free);
    if (!resp)
        fs_free(data);
    return resp;
}

static void log_request(sb_server *sb, listener_ctx *lc, sb_request *req, unsigned status)
{
    char *uri = sb_uri_for_log(req->raw_uri);
    const char *auth = sb_req_header(req, MHD_HTTP_HEADER_AUTHORIZATION);
    sb_reqlog_entry e = {
        .method = req->method ? req->method : "?",
        .uri = uri ? uri : "?",
        .host = sb_req_header(req, MHD_HTTP_HEADER_HOST),
        .port = lc->port,
        .listener = lc->listener,
        .bearer = auth && strncasecmp(auth, "Bearer", 6) == 0,
        .status = status,
        .client_id = req->client_id,
        .fault = req->throttled                     ? "practice-rate-limit"
                 : req->fault.kind != SB_FAULT_NONE ? sb_fault_name(req->fault.kind)
                                                    : NULL,
        .practice = req->practice,
    };
    sb_reqlog_add(sb->log, &e);
    fs_free(uri);
}

static enum MHD_Result send_reply(sb_server *sb, listener_ctx *lc, struct MHD_Connection *conn,
                                  sb_request *req, sb_reply *reply, bool logged)
{
    if (reply->status == 0)
        sb_reply_outcome(reply, 500, "exception", "the handler gave no answer");
    if (req->fault.kind == SB_FAULT_WRONG_CONTENT_TYPE)
        reply->content_type = "text/plain; charset=utf-8";
    struct MHD_Response *resp = make_response(sb, reply, &req->fault);
    if (!resp) {
        sb_reply_clear(reply);
        return MHD_NO;
    }
    if (reply->content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, reply->content_type);
    for (size_t i = 0; i < reply->nheaders; i++)
        MHD_add_response_header(resp, reply->header_names[i], reply->header_values[i]);
    enum MHD_Result ok = MHD_queue_response(conn, reply->status, resp);
    MHD_destroy_response(resp);
    if (req->practice && logged)
        sb_meter_count_status(&sb->meter, reply->status);
    if (logged)
        log_request(sb, lc, req, reply->status);
    sb_reply_clear(reply);
    return ok;
}

/* ---- faults applied around the handler ------------------------------------------------------ */

/* Faults answered instead of the handler; true when the reply is complete. `client` is the
 * client the request speaks for, "" when unknown. */
static bool apply_fault_before(sb_server *sb, sb_request *req, sb_reply *reply, const char *client)
{
    const sb_fault *f = &req->fault;
    bool oauth = req->on == SB_ON_TOKEN;
    switch (f->kind) {
    case SB_FAULT_429:
    case SB_FAULT_RATE_LIMIT:
        if (oauth)
            sb_reply_oauth_error(reply, 429, "temporarily_unavailable",
                                 "too many requests (sandbox fault %s)", sb_fault_name(f->kind));
        else
            sb_reply_outcome(reply, 429, "throttled", "too many requests (sandbox fault %s)",
                             sb_fault_name(f->kind));
        sb_reply_retry_after(sb, reply, client, f->retry_after, f->retry_after_date);
        return true;
    case SB_FAULT_503:
        if (oauth)
            sb_reply_oauth_error(reply, 503, "temporarily_unavailable",
                                 "service unavailable (sandbox fault 503)");
        else
            sb_reply_outcome(reply, 503, "transient", "service unavailable (sandbox fault 503)");
        sb_reply_retry_after(sb, reply, client, f->retry_after, f->retry_after_date);
        return true;
    case SB_FAULT_500_TRANSIENT:
        sb_reply_outcome(reply, 500, "transient",
                         "a transient error, try again (sandbox fault 500-transient)");
        return true;
    case SB_FAULT_HTML:
        sb_reply_text(reply, f->status, "text/html; charset=utf-8",
                      "<!DOCTYPE html>\n<html><head><title>Service Error</title></head>"
                      "<body><h1>Internal Server Error</h1><p>The gateway could not reach the "
                      "application server.</p></body></html>\n");
        return true;
    case SB_FAULT_SLOW: {
        struct timespec ts = {f->delay_ms / 1000, (long)(f->delay_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
        return false;
    }
    case SB_FAULT_EXPIRE_TOKEN: {
        char who[128];
        sb_auth_peek_client(sb, req, who, sizeof who);
        if (*who)
            sb_auth_expire_client_tokens(sb->auth, who, fs_now());
        return false;
    }
    default: return false;
    }
}

/* ---- quirks applied to the handler's answer ------------------------------------------------- */

static const char html_429[] =
    "<!DOCTYPE html>\n<html><head><title>429 Too Many Requests</title></head><body>"
    "<h1>Too Many Requests</h1><p>You have sent too many requests in a given amount of time."
    "</p></body></html>\n";

/* echo-token-in-errors: prefix each diagnostics of a 4xx OperationOutcome with the caller's
 * access token, as servers that print "token X was rejected" do. */
static void echo_token(sb_reply *reply, const char *token)
{
    json_t *outcome =
        json_loadb(reply->body.data ? reply->body.data : "", reply->body.len, 0, NULL);
    if (!fs_streq(fs_json_str(outcome, "resourceType"), "OperationOutcome")) {
        json_decref(outcome);
        return;
    }
    json_t *issues = json_object_get(outcome, "issue");
    for (size_t i = 0; i < json_array_size(issues); i++) {
        json_t *issue = json_array_get(issues, i);
        const char *was = fs_json_str(issue, "diagnostics");
        fs_buf text;
        fs_buf_init(&text);
        if (fs_buf_printf(&text, "token %s was rejected: %s", token, was ? was : "error"))
            json_object_set_new(issue, "diagnostics", json_string(text.data));
        fs_buf_free(&text);
    }
    unsigned status = reply->status;
    fs_buf_reset(&reply->body);
    sb_reply_json(reply, status, SB_FHIR_JSON, outcome);
    json_decref(outcome);
}

static void apply_quirks_after(sb_server *sb, sb_request *req, sb_reply *reply, const char *client)
{
    const char *who = req->client_id[0] ? req->client_id : client;
    bool fhir = req->on != SB_ON_NONE && req->on != SB_ON_TOKEN;
    if (reply->status == 429 && fhir && reply->fd < 0 &&
        sb_quirk_on(sb->quirks, SB_QUIRK_HTML_429, who, NULL, NULL)) {
        fs_buf_reset(&reply->body);
        sb_reply_text(reply, 429, "text/html; charset=utf-8", html_429);
        return;
    }
    const char *token = sb_req_bearer(req);
    if (reply->status >= 400 && reply->status < 500 && token && reply->fd < 0 &&
        fs_streq(reply->content_type, SB_FHIR_JSON) &&
        sb_quirk_on(sb->quirks, SB_QUIRK_ECHO_TOKEN_IN_ERRORS, who, NULL, NULL))
        echo_token(reply, token);
}

/* ---- dispatch ------------------------------------------------------------------------------- */

static bool peer_is_loopback(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!info || !info->client_addr)
        return false;
    const struct sockaddr *sa = info->client_addr;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
            return true;
        return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127;
    }
    return false;
}

/* The rate limit of a practice refused the request: 429 with Retry-After (seconds to the next
 * minute), an OAuth error at the token endpoint, an OperationOutcome elsewhere. */
static void reply_throttled(sb_server *sb, sb_request *req, sb_reply *reply, const char *client,
                            uint32_t limit, int64_t retry_after)
{
    if (req->on == SB_ON_TOKEN)
        sb_reply_oauth_error(reply, 429, "temporarily_unavailable",
                             "practice %u allows %u requests per minute", sb->practice,
                             (unsigned)limit);
    else
        sb_reply_outcome(reply, 429, "throttled", "practice %u allows %u requests per minute",
                         sb->practice, (unsigned)limit);
    sb_reply_retry_after(sb, reply, client, retry_after, false);
}

/* With --practices: hand a /practice/{i} request to practice i (its path segments then start
 * after the prefix). NULL with a 404 in reply for a practice that does not exist. */
static sb_server *route_practice(sb_server *root, sb_request *req, sb_reply *reply)
{
    if (!root->practices || req->nsegments < 2 || strcmp(req->segments[0], "practice") != 0)
        return root;
    sb_server *p = sb_practices_find(root->practices, req->segments[1]);
    if (!p) {
        sb_reply_outcome(reply, 404, "not-found", "no practice %s: practices are 1..%u",
                         req->segments[1], (unsigned)sb_practices_count(root->practices));
        return NULL;
    }
    req->segments += 2;
    req->nsegments -= 2;
    req->practice = p->practice;
    return p;
}

static enum MHD_Result dispatch(listener_ctx *lc, struct MHD_Connection *conn, request_ctx *rc)
{
    sb_request *req = &rc->req;
    if (rc->answered)
        return MHD_YES;
    rc->answered = true;
    sb_server *sb = lc->sb;
    sb_reply reply;
    sb_reply_init(&reply);
    fhirsync_error err;
    fs_err_clear(&err);

    size_t path_len = strcspn(req->raw_uri, "?");
    char *raw_path = fs_strndup(req->raw_uri, path_len);
    bool path_ok = raw_path && sb_path_split(raw_path, &rc->segments, &rc->nsegments);
    fs_free(raw_path);
    req->segments = rc->segments;
    req->nsegments = rc->nsegments;
    if (!path_ok) {
        sb_reply_outcome(&reply, 400, "invalid",
                         "the request path is malformed (bad "
                         "percent-encoding or too many segments)");
        return send_reply(sb, lc, conn, req, &reply, true);
    }
    if (!sb_params_parse_form(&req->query, req->raw_query, strlen(req->raw_query), &err)) {
        sb_reply_outcome(&reply, 400, "invalid", "the query string is malformed: %s", err.message);
        return send_reply(sb, lc, conn, req, &reply, true);
    }
    sb_server *root = sb;
    if (!(sb = route_practice(root, req, &reply)))
        return send_reply(root, lc, conn, req, &reply, true);
    /* the root of several practices serves only its own routes (the admin API's) */
    bool practices_root = sb->practices != NULL;
    const sb_route *route = NULL;
    bool path_known = false;
    char allow[64] = "";
    for (size_t i = 0; i < sizeof routes / sizeof routes[0] && !route; i++) {
        const sb_route *r = &routes[i];
        if (r->listener != lc->listener || !path_matches(r->pattern, req))
            continue;
        if ((practices_root && !(r->flags & (ROUTE_ROOT | ROUTE_SHARED))) ||
            (sb->practice && (r->flags & ROUTE_ROOT)))
            continue;
        if (method_listed(r->methods, req->method)) {
            route = r;
        } else if (!path_known) {
            path_known = true;
            snprintf(allow, sizeof allow, "%s", r->methods);
        }
    }
    req->on = route ? route->on : SB_ON_NONE;
    char client[128] = "";
    if (req->on != SB_ON_NONE && lc->listener == SB_LISTENER_MAIN)
        sb_auth_peek_client(sb, req, client, sizeof client);
    /* a practice counts every request but the admin API's, and refuses those over its limit */
    int64_t retry_after = 0;
    uint32_t limit = 0;
    if (sb->practice && lc->listener == SB_LISTENER_MAIN &&
        !(route && route->flags & ROUTE_ADMIN) &&
        !sb_meter_admit(&sb->meter, req->on == SB_ON_TOKEN, fs_now(), &limit, &retry_after)) {
        req->throttled = true;
        snprintf(req->client_id, sizeof req->client_id, "%s", client);
        reply_throttled(sb, req, &reply, client, limit, retry_after);
        apply_quirks_after(sb, req, &reply, client);
        return send_reply(sb, lc, conn, req, &reply, true);
    }
    if (!route) {
        if (path_known) {
            for (char *p = allow; *p; p++)
                if (*p == '|')
                    *p = ',';
            sb_reply_outcome(&reply, 405, "not-supported", "method %s is not allowed here",
                             req->method);
            sb_reply_header(&reply, "Allow", "%s", allow);
        } else if (practices_root) {
            sb_reply_outcome(&reply, 404, "not-found",
                             "no such endpoint: this sandbox serves practices 1..%u, at "
                             "/practice/{i}/fhir",
                             (unsigned)sb_practices_count(sb->practices));
        } else {
            sb_reply_outcome(&reply, 404, "not-found", "no such endpoint");
        }
        return send_reply(sb, lc, conn, req, &reply, true);
    }
    bool logged = !(route->flags & ROUTE_ADMIN);
    if (req->body_too_large) {
        sb_reply_outcome(&reply, 413, "too-costly", "the request body is larger than %d bytes",
                         SB_MAX_BODY);
        return send_reply(sb, lc, conn, req, &reply, logged);
    }
    if ((route->flags & ROUTE_ADMIN) && !peer_is_loopback(conn)) {
        sb_reply_outcome(&reply, 403, "forbidden", "the admin API answers loopback peers only");
        return send_reply(sb, lc, conn, req, &reply, logged);
    }
    if (route->on != SB_ON_NONE && lc->listener == SB_LISTENER_MAIN)
        sb_faults_match(sb->faults, route->on, client, fs_now(), &req->fault);
    if (!apply_fault_before(sb, req, &reply, client))
        route->handler(sb, req, &reply);
    if (lc->listener == SB_LISTENER_MAIN)
        apply_quirks_after(sb, req, &reply, client);
    return send_reply(sb, lc, conn, req, &reply, logged);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    listener_ctx *lc = cls;
    request_ctx *rc = *con_cls;
    if (!rc) {
        /* the URI callback ran out of memory */
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        enum MHD_Result ok = resp ? MHD_queue_response(conn, 500, resp) : MHD_NO;
        if (resp)
            MHD_destroy_response(resp);
        return ok;
    }
    sb_request *req = &rc->req;
    if (!rc->started) {
        rc->started = true;
        req->method = method;
        req->connection = conn;
        const char *length =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        long declared = 0;
        if (length && fs_parse_long(length, &declared) && declared > SB_MAX_BODY) {
            req->body_too_large = true;
            return dispatch(lc, conn, rc);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!req->body_too_large) {
            if (req->body.len + *upload_data_size > SB_MAX_BODY ||
                !fs_buf_append(&req->body, upload_data, *upload_data_size)) {
                req->body_too_large = true;
                fs_buf_free_secret(&req->body);
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    return dispatch(lc, conn, rc);
}

/* ---- clocks --------------------------------------------------------------------------------- */

int64_t sb_transaction_time(sb_server *sb)
{
    pthread_mutex_lock(&sb->clock_lock);
    int64_t t = fs_now();
    if (t < sb->last_mutation_time)
        t = sb->last_mutation_time;
    if (t > sb->last_transaction_time)
        sb->last_transaction_time = t;
    pthread_mutex_unlock(&sb->clock_lock);
    return t;
}

int64_t sb_mutation_time(sb_server *sb)
{
    pthread_mutex_lock(&sb->clock_lock);
    int64_t t = fs_now();
    if (t <= sb->last_transaction_time)
        t = sb->last_transaction_time + 1;
    if (t < sb->last_mutation_time)
        t = sb->last_mutation_time;
    sb->last_mutation_time = t;
    pthread_mutex_unlock(&sb->clock_lock);
    return t;
}

/* ---- options -------------------------------------------------------------------------------- */

static void usage(FILE *out)
{
    fputs("usage: fhirsync-sandbox [options]\n"
          "A local, strict SMART Backend Services / App Launch + FHIR R4 + Bulk Data server\n"
          "for tests.\n\n"
          "  --host ADDR               listen address (default 127.0.0.1)\n"
          "  --port N                  port (default 0: a free one)\n"
          "  --ready-file FILE         write the URLs as JSON to FILE once listening\n"
          "  --patients N              generated patients (default 100)\n"
          "  --seed S                  generator seed (default 1)\n"
          "  --data DIR                serve an existing NDJSON export instead of generated data\n"
          "  --clients FILE            register clients from a JSON file\n"
          "  --rs384-only              accept only RS384 client assertions\n"
          "  --token-lifetime SECONDS  access-token lifetime (default 300)\n"
          "  --tls-cert FILE --tls-key FILE   serve HTTPS\n"
          "  --threads N               0: a thread per connection (default); N: a pool of N\n"
          "  --work-dir DIR            where export files go (default: a temporary folder)\n"
          "  --resources-per-file N    split export files above N resources (default 50000)\n"
          "  --retry-after SECONDS     Retry-After of running-export status polls (default 1)\n"
          "  --max-jobs N              concurrently running exports (default 8)\n"
          "  --export-delay-ms N       keep each export in progress N ms longer (for tests)\n"
          "  --request-log FILE        append the request log (NDJSON) to FILE\n"
          "  --fault JSON              add a fault rule (repeatable; see docs/sandbox.md)\n"
          "  --quirk NAME[=N]          turn a quirk mode on for every client (repeatable;\n"
          "                            per client: POST /admin/quirks; see docs/sandbox.md):\n"
          "    late-transaction-time   manifest transactionTime = when the export finished\n"
          "    no-deleted              never list deleted files, even with _since\n"
          "    extra-types             exports add Practitioner and Organization (types not\n"
          "                            asked for by _type, or outside the compartment)\n"
          "    ignore-post-body        a POSTed Parameters body is ignored\n"
          "    ignore-range            downloads ignore Range: 200 with the whole file\n"
          "    truncate-same-place[=N] downloads drop the connection at byte N of each file\n"
          "                            (default half the file), every attempt, Range or not\n"
          "    trickle[=N]             downloads at N bytes per second (default 64)\n"
          "    retry-after-zero[=N]    status polls: 202 with Retry-After: 0 for ever (N > 0:\n"
          "                            the first N polls of each job)\n"
          "    retry-after-epoch       Retry-After as an absolute epoch (ms first, then s)\n"
          "    export-needs-write-scope  kick-off 403 without a write scope on every type\n"
          "                            (system/*.write, system/*.*, system/*.cud[rs])\n"
          "    echo-token-in-errors    4xx OperationOutcomes quote the caller's access token\n"
          "    count-mismatch[=N]      manifest output counts are N (default 1) too high\n"
          "    capability-fewer-types  CapabilityStatement omits Immunization, Practitioner\n"
          "    html-429                429 answers on FHIR endpoints are an HTML page\n"
          "    no-progress-headers     running status polls: no X-Progress, no Retry-After\n"
          "    request-without-query   the manifest's request lacks its query string\n"
          "    refresh-no-rotate       the refresh grant returns the same refresh token\n"
          "    aud-other-url[=URL]     /authorize wants aud = URL (default: the origin, no /fhir)\n"
          "    refresh-no-context      the refresh grant's answer carries no patient\n"
          "    redirect-exact-port     a loopback redirect_uri must keep its registered port\n"
          "  --practices N             serve N practices on this port, each its own FHIR base\n"
          "                            /practice/{i}/fhir (i = 1..N) with its own data, clients,\n"
          "                            token endpoint, rate limit and quirks (docs/sandbox.md)\n"
          "  --patients N              with --practices: the total (default 20 per practice),\n"
          "                            split 1/i^skew: a few large practices, many small\n"
          "  --practice-skew S         that exponent (default 1; 0: equal sizes)\n"
          "  --rate-limit N            with --practices: requests per minute per practice\n"
          "                            (default 0: none); beyond it 429 with Retry-After\n"
          "  --practice-quirk I:NAME[=N]  a quirk mode for practice I only (repeatable)\n"
          "  --help                    this text\n",
          out);
}

static bool parse_unsigned(const char *text, unsigned long long max, unsigned long long *out)
{
    if (!text || !*text || *text == '-')
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || !end || *end || v > max)
        return false;
    *out = v;
    return true;
}

typedef struct options {
    sb_config cfg;
    const char **faults;
    size_t nfaults;
    const char **quirks;
    size_t nquirks;
    const char **practice_quirks; /* --practice-quirk I:NAME[=N] */
    size_t npractice_quirks;
} options;

/* Append an option's value to a list (realloc'd); false on out of memory. */
static bool push_option(const char ***list, size_t *count, const char *value)
{
    const char **grown = realloc(*list, (*count + 1) * sizeof *grown);
    if (!grown)
        return false;
    *list = grown;
    grown[(*count)++] = value;
    return true;
}

static void options_free(options *o)
{
    free(o->faults);
    free(o->quirks);
    free(o->practice_quirks);
}

/* 0 ok, 1 --help, 2 usage error */
static int parse_options(int argc, char **argv, options *o)
{
    enum {
        OPT_HOST = 256,
        OPT_PORT,
        OPT_READY,
        OPT_PATIENTS,
        OPT_SEED,
        OPT_DATA,
        OPT_CLIENTS,
        OPT_RS384,
        OPT_LIFETIME,
        OPT_CERT,
        OPT_KEY,
        OPT_THREADS,
        OPT_WORKDIR,
        OPT_PERFILE,
        OPT_RETRY,
        OPT_MAXJOBS,
        OPT_DELAY,
        OPT_LOG,
        OPT_FAULT,
        OPT_QUIRK,
        OPT_PRACTICES,
        OPT_SKEW,
        OPT_RATE_LIMIT,
        OPT_PRACTICE_QUIRK,
        OPT_HELP
    };
    static const struct option longopts[] = {
        {"host", required_argument, NULL, OPT_HOST},
        {"port", required_argument, NULL, OPT_PORT},
        {"ready-file", required_argument, NULL, OPT_READY},
        {"patients", required_argument, NULL, OPT_PATIENTS},
        {"seed", required_argument, NULL, OPT_SEED},
        {"data", required_argument, NULL, OPT_DATA},
        {"clients", required_argument, NULL, OPT_CLIENTS},
        {"rs384-only", no_argument, NULL, OPT_RS384},
        {"token-lifetime", required_argument, NULL, OPT_LIFETIME},
        {"tls-cert", required_argument, NULL, OPT_CERT},
        {"tls-key", required_argument, NULL, OPT_KEY},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"work-dir", required_argument, NULL, OPT_WORKDIR},
        {"resources-per-file", required_argument, NULL, OPT_PERFILE},
        {"retry-after", required_argument, NULL, OPT_RETRY},
        {"max-jobs", required_argument, NULL, OPT_MAXJOBS},
        {"export-delay-ms", required_argument, NULL, OPT_DELAY},
        {"request-log", required_argument, NULL, OPT_LOG},
        {"fault", required_argument, NULL, OPT_FAULT},
        {"quirk", required_argument, NULL, OPT_QUIRK},
        {"practices", required_argument, NULL, OPT_PRACTICES},
        {"practice-skew", required_argument, NULL, OPT_SKEW},
        {"rate-limit", required_argument, NULL, OPT_RATE_LIMIT},
        {"practice-quirk", required_argument, NULL, OPT_PRACTICE_QUIRK},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    sb_config *c = &o->cfg;
    c->host = "127.0.0.1";
    c->patients = 100;
    c->seed = 1;
    c->token_lifetime = 300;
    c->resources_per_file = 50000;
    c->retry_after = 1;
    c->max_jobs = 8;
    c->practice_skew = 1.0;
    bool patients_given = false;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        unsigned long long v = 0;
        const char *bad = NULL;
        switch (opt) {
        case OPT_HOST: c->host = optarg; break;
        case OPT_PORT:
            if (!parse_unsigned(optarg, 65535, &v))
                bad = "--port";
            c->port = (unsigned)v;
            break;
        case OPT_READY: c->ready_file = optarg; break;
        case OPT_PATIENTS:
            if (!parse_unsigned(optarg, 10000000, &v) || v == 0)
                bad = "--patients";
            c->patients = (uint32_t)v;
            patients_given = true;
            break;
        case OPT_SEED:
            if (!parse_unsigned(optarg, UINT64_MAX, &v))
                bad = "--seed";
            c->seed = v;
            break;
        case OPT_DATA: c->data_dir = optarg; break;
        case OPT_CLIENTS: c->clients_file = optarg; break;
        case OPT_RS384: c->rs384_only = true; break;
        case OPT_LIFETIME:
            if (!parse_unsigned(optarg, 86400 * 30, &v) || v == 0)
                bad = "--token-lifetime";
            c->token_lifetime = (int64_t)v;
            break;
        case OPT_CERT: c->tls_cert = optarg; break;
        case OPT_KEY: c->tls_key = optarg; break;
        case OPT_THREADS:
            if (!parse_unsigned(optarg, 1024, &v))
                bad = "--threads";
            c->threads = (unsigned)v;
            break;
        case OPT_WORKDIR: c->work_dir = optarg; break;
        case OPT_PERFILE:
            if (!parse_unsigned(optarg, UINT32_MAX, &v) || v == 0)
                bad = "--resources-per-file";
            c->resources_per_file = v;
            break;
        case OPT_RETRY:
            if (!parse_unsigned(optarg, 86400, &v))
                bad = "--retry-after";
            c->retry_after = (unsigned)v;
            break;
        case OPT_MAXJOBS:
            if (!parse_unsigned(optarg, 1024, &v) || v == 0)
                bad = "--max-jobs";
            c->max_jobs = (unsigned)v;
            break;
        case OPT_DELAY:
            if (!parse_unsigned(optarg, 3600000, &v))
                bad = "--export-delay-ms";
            c->export_delay_ms = (unsigned)v;
            break;
        case OPT_LOG: c->request_log = optarg; break;
        case OPT_FAULT:
            if (!push_option(&o->faults, &o->nfaults, optarg))
                return 2;
            break;
        case OPT_QUIRK:
            if (!push_option(&o->quirks, &o->nquirks, optarg))
                return 2;
            break;
        case OPT_PRACTICES:
            if (!parse_unsigned(optarg, 10000, &v) || v == 0)
                bad = "--practices";
            c->practices = (uint32_t)v;
            break;
        case OPT_SKEW: {
            char *end = NULL;
            errno = 0;
            c->practice_skew = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(c->practice_skew >= 0) || c->practice_skew > 10)
                bad = "--practice-skew";
            break;
        }
        case OPT_RATE_LIMIT:
            if (!parse_unsigned(optarg, 1000000000, &v))
                bad = "--rate-limit";
            c->rate_limit = (uint32_t)v;
            break;
        case OPT_PRACTICE_QUIRK:
            if (!push_option(&o->practice_quirks, &o->npractice_quirks, optarg))
                return 2;
            break;
        case OPT_HELP: return 1;
        default:
            fprintf(stderr, "fhirsync-sandbox: unknown option or missing value: %s\n",
                    argv[optind - 1]);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "fhirsync-sandbox: %s: invalid value %s\n", bad, optarg);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "fhirsync-sandbox: unexpected argument %s\n", argv[optind]);
        return 2;
    }
    if (!c->tls_cert != !c->tls_key) {
        fprintf(stderr, "fhirsync-sandbox: --tls-cert and --tls-key go together\n");
        return 2;
    }
    if (!c->practices && (c->rate_limit || o->npractice_quirks)) {
        fprintf(stderr, "fhirsync-sandbox: --rate-limit and --practice-quirk go with --practices "
                        "(the single base has the rate-limit fault rule)\n");
        return 2;
    }
    if (c->practices && c->data_dir) {
        fprintf(stderr, "fhirsync-sandbox: --practices serves generated data, not --data\n");
        return 2;
    }
    if (c->practices && !patients_given)
        c->patients = 20 * c->practices; /* about 2,000 resources a practice on average */
    if (c->practices > c->patients) {
        fprintf(stderr,
                "fhirsync-sandbox: --patients %u is the total over the practices: at least "
                "one each (%u)\n",
                (unsigned)c->patients, (unsigned)c->practices);
        return 2;
    }
    return 0;
}

/* ---- start-up ------------------------------------------------------------------------------- */

static char *read_file(const char *path, size_t max)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fs_buf b;
    fs_buf_init(&b);
    char chunk[4096];
    size_t n;
    bool ok = true;
    while (ok && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        ok = b.len + n <= max && fs_buf_append(&b, chunk, n);
    fclose(f);
    if (!ok || !b.data) {
        fs_buf_free_secret(&b);
        return NULL;
    }
    return fs_buf_steal(&b);
}

static bool resolve_host(const char *host, unsigned port, struct sockaddr_storage *addr)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char service[16];
    snprintf(service, sizeof service, "%u", port);
    if (getaddrinfo(host, service, &hints, &res) != 0 || !res)
        return false;
    memset(addr, 0, sizeof *addr);
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return true;
}

static struct MHD_Daemon *start_daemon(sb_server *sb, listener_ctx *lc, const char *cert,
                                       const char *key)
{
    struct sockaddr_storage addr;
    if (!resolve_host(sb->cfg.host, lc->listener == SB_LISTENER_MAIN ? sb->cfg.port : 0, &addr)) {
        fprintf(stderr, "fhirsync-sandbox: cannot resolve --host %s\n", sb->cfg.host);
        return NULL;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    if (sb->cfg.threads == 0)
        flags |= MHD_USE_THREAD_PER_CONNECTION | MHD_USE_AUTO;
    else
        flags |= MHD_USE_EPOLL;
    if (cert)
        flags |= MHD_USE_TLS;
    struct MHD_OptionItem opts[12];
    size_t n = 0;
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, &addr};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)on_uri, lc};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, 120, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT, 64 * 1024, NULL};
    if (sb->cfg.threads > 0)
        opts[n++] =
            (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)sb->cfg.threads, NULL};
    if (cert) {
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)cert};
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)key};
    }
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    struct MHD_Daemon *d = MHD_start_daemon(flags, 0, NULL, NULL, on_access, lc, MHD_OPTION_ARRAY,
                                            opts, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "fhirsync-sandbox: cannot listen on %s port %u: %s\n", sb->cfg.host,
                lc->listener == SB_LISTENER_MAIN ? sb->cfg.port : 0, strerror(errno));
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    lc->port = info ? info->port : 0;
    return d;
}

void sb_server_format_urls(sb_server *sb, const char *prefix)
{
    const char *scheme = sb->tls ? "https" : "http";
    const char *host = sb->cfg.host;
    bool v6 = strchr(host, ':') != NULL;
    snprintf(sb->origin, sizeof sb->origin, "%s://%s%s%s:%u", scheme, v6 ? "[" : "", host,
             v6 ? "]" : "", sb->port);
    snprintf(sb->issuer, sizeof sb->issuer, "%s%s", sb->origin, prefix);
    snprintf(sb->base_url, sizeof sb->base_url, "%s/fhir", sb->issuer);
    snprintf(sb->token_url, sizeof sb->token_url, "%s/auth/token", sb->issuer);
    snprintf(sb->register_url, sizeof sb->register_url, "%s/auth/register", sb->issuer);
    snprintf(sb->admin_url, sizeof sb->admin_url, "%s/admin", sb->issuer);
    snprintf(sb->authorize_url, sizeof sb->authorize_url, "%s/auth/authorize", sb->issuer);
    snprintf(sb->jwks_url, sizeof sb->jwks_url, "%s/auth/jwks", sb->issuer);
    /* the storage listener is reached by name, a different origin from the numeric one */
    bool loop4 = fs_starts_with(host, "127.") || !strcmp(host, "localhost");
    const char *storage_host = loop4 ? "localhost" : host;
    v6 = strchr(storage_host, ':') != NULL;
    snprintf(sb->storage_origin, sizeof sb->storage_origin, "%s://%s%s%s:%u", scheme, v6 ? "[" : "",
             storage_host, v6 ? "]" : "", sb->storage_port);
    snprintf(sb->storage_base_url, sizeof sb->storage_base_url, "%s%s/storage", sb->storage_origin,
             prefix);
}

/* The ready file: the single base's URLs, or with --practices the root's admin URL, URL
 * templates ("{i}" for the practice number) and every practice's URLs. */
static json_t *ready_doc(const sb_server *sb)
{
    if (!sb->practices)
        return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:i}", "base_url", sb->base_url,
                         "token_url", sb->token_url, "authorize_url", sb->authorize_url,
                         "register_url", sb->register_url, "admin_url", sb->admin_url,
                         "storage_base_url", sb->storage_base_url, "port", (int)sb->port,
                         "storage_port", (int)sb->storage_port, "pid", (int)getpid());
    char base[200], token[200], reg[200], admin[200];
    snprintf(base, sizeof base, "%s/practice/{i}/fhir", sb->origin);
    snprintf(token, sizeof token, "%s/practice/{i}/auth/token", sb->origin);
    snprintf(reg, sizeof reg, "%s/practice/{i}/auth/register", sb->origin);
    snprintf(admin, sizeof admin, "%s/practice/{i}/admin", sb->origin);
    json_t *list = sb_practices_ready_list(sb->practices);
    if (!list)
        return NULL;
    return json_pack("{s:s, s:i, s:I, s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:o}", "admin_url",
                     sb->admin_url, "practice_count", (int)sb_practices_count(sb->practices),
                     "patients", (json_int_t)sb->cfg.patients, "base_url_template", base,
                     "token_url_template", token, "register_url_template", reg,
                     "admin_url_template", admin, "port", (int)sb->port, "storage_port",
                     (int)sb->storage_port, "pid", (int)getpid(), "practices", list);
}

static bool write_ready_file(const sb_server *sb, const char *path)
{
    json_t *doc = ready_doc(sb);
    char *text = doc ? fs_json_dump_pretty(doc) : NULL;
    json_decref(doc);
    if (!text)
        return false;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    bool ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f) != 0)
        ok = false;
    fs_free(text);
    if (ok && rename(tmp, path) != 0)
        ok = false;
    if (!ok)
        unlink(tmp);
    return ok;
}

int main(int argc, char **argv)
{
    /* a closed pipe is an error to a write, not a signal: `--help | grep -q` (which exits at the
     * first match) must not kill the sandbox mid-text, nor a client gone mid-answer the server */
    signal(SIGPIPE, SIG_IGN);
    options o;
    memset(&o, 0, sizeof o);
    int rc = parse_options(argc, argv, &o);
    if (rc != 0) {
        usage(rc == 1 ? stdout : stderr);
        options_free(&o);
        return rc == 1 ? 0 : 2;
    }

    /* SIGTERM and SIGINT are taken with sigwait() below; every thread inherits the mask */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

    int status = 1;
    sb_server *sb = NULL;
    struct MHD_Daemon *main_daemon = NULL, *storage_daemon = NULL;
    listener_ctx main_lc = {0}, storage_lc = {0};
    char *cert = NULL, *key = NULL;
    fhirsync_error err;
    fs_err_clear(&err);

    if (fhirsync_global_init() != FHIRSYNC_OK) {
        fprintf(stderr, "fhirsync-sandbox: library initialisation failed\n");
        goto out;
    }
    if (!(sb = fs_calloc(1, sizeof *sb)))
        goto out;
    sb->cfg = o.cfg;
    sb->tls = sb->cfg.tls_cert != NULL;
    pthread_mutex_init(&sb->clock_lock, NULL);
    sb_meter_init(&sb->meter, 0, fs_now());
    if (!(sb->log = sb_reqlog_new(sb->cfg.request_log, &err)) || !(sb->faults = sb_faults_new()) ||
        !(sb->quirks = sb_quirks_new())) {
        fprintf(stderr, "fhirsync-sandbox: %s\n", err.message[0] ? err.message : "out of memory");
        goto out;
    }
    /* with --practices the root has no data of its own: each practice has its own */
    if (sb->cfg.practices)
        sb->practices = sb_practices_new(sb, &err);
    else if (sb->cfg.data_dir)
        sb->data = sb_data_new_ndjson(sb->cfg.data_dir, &err);
    else
        sb->data = sb_data_new_generated(
            &(sb_gen_config){.seed = sb->cfg.seed, .patients = sb->cfg.patients}, &err);
    if (!sb->data && !sb->practices) {
        fprintf(stderr, "fhirsync-sandbox: %s\n", err.message[0] ? err.message : "out of memory");
        goto out;
    }
    /* --fault and --quirk: the single base's, or every practice's (each its own copy) */
    for (size_t i = 0; i < o.nfaults; i++) {
        if (!sb_faults_add_text(sb->faults, o.faults[i], &err) ||
            (sb->practices && !sb_practices_add_fault_text(sb->practices, o.faults[i], &err))) {
            fprintf(stderr, "fhirsync-sandbox: --fault %s: %s\n", o.faults[i], err.message);
            status = 2;
            goto out;
        }
    }
    for (size_t i = 0; i < o.nquirks; i++) {
        if (!sb_quirks_add_text(sb->quirks, o.quirks[i], &err) ||
            (sb->practices && !sb_practices_add_quirk_text(sb->practices, o.quirks[i], &err))) {
            fprintf(stderr, "fhirsync-sandbox: --quirk %s: %s\n", o.quirks[i], err.message);
            status = 2;
            goto out;
        }
    }
    for (size_t i = 0; i < o.npractice_quirks; i++) {
        if (!sb_practices_add_practice_quirk(sb->practices, o.practice_quirks[i], &err)) {
            fprintf(stderr, "fhirsync-sandbox: --practice-quirk %s: %s\n", o.practice_quirks[i],
                    err.message);
            status = 2;
            goto out;
        }
    }
    if (sb->tls) {
        if (!MHD_is_feature_supported(MHD_FEATURE_TLS)) {
            fprintf(stderr, "fhirsync-sandbox: this libmicrohttpd has no TLS support\n");
            goto out;
        }
        if (!(cert = read_file(sb->cfg.tls_cert, 1 << 20)) ||
            !(key = read_file(sb->cfg.tls_key, 1 << 20))) {
            fprintf(stderr, "fhirsync-sandbox: cannot read --tls-cert/--tls-key\n");
            goto out;
        }
    }
    main_lc = (listener_ctx){sb, SB_LISTENER_MAIN, 0};
    storage_lc = (listener_ctx){sb, SB_LISTENER_STORAGE, 0};
    if (!(main_daemon = start_daemon(sb, &main_lc, cert, key)) ||
        !(storage_daemon = start_daemon(sb, &storage_lc, cert, key)))
        goto out;
    sb->port = main_lc.port;
    sb->storage_port = storage_lc.port;
    sb_server_format_urls(sb, "");
    /* auth needs the token URL (the assertion's aud), bulk the base URL */
    if (sb->practices
            ? !sb_practices_start(sb->practices, sb, &err)
            : !(sb->auth = sb_auth_new(sb, &err)) || !(sb->launch = sb_launch_new(sb, &err)) ||
                  !(sb->bulk = sb_bulk_new(sb, &err))) {
        fprintf(stderr, "fhirsync-sandbox: %s\n", err.message);
        goto out;
    }
    if (sb->cfg.clients_file &&
        !(sb->practices ? sb_practices_load_clients(sb->practices, sb->cfg.clients_file, &err)
                        : sb_auth_load_clients(sb->auth, sb->cfg.clients_file, &err))) {
        fprintf(stderr, "fhirsync-sandbox: --clients %s: %s\n", sb->cfg.clients_file, err.message);
        goto out;
    }
    printf("fhirsync-sandbox %s listening (pid %d)\n", fhirsync_version(), (int)getpid());
    if (sb->practices) {
        sb_practices_publish(sb->practices);
        printf("practices: %u (%u patients)\n", (unsigned)sb_practices_count(sb->practices),
               (unsigned)sb->cfg.patients);
        printf("FHIR base URLs: %s/practice/{i}/fhir\n", sb->origin);
        printf("token URLs: %s/practice/{i}/auth/token\n", sb->origin);
        printf("admin URL: %s\n", sb->admin_url);
    } else {
        printf("FHIR base URL: %s\n", sb->base_url);
        printf("token URL: %s\n", sb->token_url);
        printf("storage URL: %s\n", sb->storage_base_url);
    }
    fflush(stdout);
    if (sb->cfg.ready_file && !write_ready_file(sb, sb->cfg.ready_file)) {
        fprintf(stderr, "fhirsync-sandbox: cannot write the ready file %s\n", sb->cfg.ready_file);
        goto out;
    }

    int sig = 0;
    while (sigwait(&stop_signals, &sig) != 0)
        ;
    fprintf(stderr, "fhirsync-sandbox: signal %d, stopping\n", sig);
    status = 0;
out:
    if (sb) {
        atomic_store(&sb->stopping, true);
        sb_practices_stopping(sb->practices);
    }
    if (main_daemon)
        MHD_stop_daemon(main_daemon);
    if (storage_daemon)
        MHD_stop_daemon(storage_daemon);
    if (sb) {
        sb_practices_free(sb->practices);
        sb_bulk_free(sb->bulk);
        sb_launch_free(sb->launch);
        sb_auth_free(sb->auth);
        sb_faults_free(sb->faults);
        sb_quirks_free(sb->quirks);
        sb_reqlog_free(sb->log);
        sb_data_free(sb->data);
        pthread_mutex_destroy(&sb->clock_lock);
        sb_meter_destroy(&sb->meter);
        if (status == 0 && sb->cfg.ready_file)
            unlink(sb->cfg.ready_file);
        fs_free(sb);
    }
    fs_free(cert);
    fs_free_secret(key);
    options_free(&o);
    fhirsync_global_cleanup();
    return status;
}
