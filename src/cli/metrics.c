/* cli/metrics.c: what `sync --every ... --metrics ADDRESS:PORT` serves over HTTP (libmicrohttpd,
 * its own thread): /metrics in the Prometheus text exposition format 0.0.4, /healthz (the
 * scheduler's loop is alive) and /readyz (the configuration is loaded and every store answers).
 *
 * Two kinds of numbers. Counters of this process (runs by outcome, errors by exit code,
 * resources, HTTP responses, 429s, bytes, tokens) live in one registry under a mutex, since the
 * runs of --jobs report from their own threads. The rest is read from the stores at each scrape,
 * so that it is right after a restart and whichever process ran the sync (workers): each
 * endpoint's state, last success, lag and watermark age (fhirsync_store_status).
 *
 * Labels: `endpoint` (the configured names, so their number is bounded by the configuration),
 * `outcome` and `state` (fixed sets) and `exit_code` (the documented exit codes). Never a URL, a
 * resource id or an error's text. docs/operations.md lists the metrics and what to alert on. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "cli.h"

/* ---- the registry ---------------------------------------------------------------------------- */

/* How a run ended, the `outcome` label. */
enum { OUT_OK, OUT_PARTIAL, OUT_FAILED, OUT_LOCKED, OUT_INTERRUPTED, OUTCOMES };
static const char *const outcome_names[OUTCOMES] = {"ok", "partial", "failed", "locked",
                                                    "interrupted"};
#define EXIT_CODES 14 /* 0..13, cli.h */

typedef struct endpoint_metrics {
    char *name;
    char *store;     /* its store's location (NULL: not configured now) */
    bool configured; /* in the current configuration: reported */
    int64_t runs[OUTCOMES];
    int64_t exits[EXIT_CODES];
    int64_t stored, deleted, quarantined;
    int64_t responses, rate_limited, bytes, tokens;
    bool running;
    bool has_duration;
    double last_duration_s;
    int64_t next_run; /* epoch seconds, 0: unknown */
} endpoint_metrics;

static struct {
    pthread_mutex_t lock;
    bool on;
    struct MHD_Daemon *daemon;
    endpoint_metrics *eps;
    size_t n, cap;
    bool configured;      /* a configuration was loaded */
    int64_t started;      /* epoch seconds */
    int64_t heartbeat_ms; /* monotonic, the scheduler's last sign of life */
} reg = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The entry of `name`, added when new (under the lock). NULL on out of memory. */
static endpoint_metrics *entry(const char *name)
{
    for (size_t i = 0; i < reg.n; i++)
        if (strcmp(reg.eps[i].name, name) == 0)
            return &reg.eps[i];
    if (reg.n == reg.cap) {
        size_t cap = reg.cap ? reg.cap * 2 : 16;
        endpoint_metrics *grown = realloc(reg.eps, cap * sizeof *grown);
        if (!grown)
            return NULL;
        reg.eps = grown;
        reg.cap = cap;
    }
    endpoint_metrics *e = &reg.eps[reg.n];
    memset(e, 0, sizeof *e);
    if (!(e->name = strdup(name)))
        return NULL;
    reg.n++;
    return e;
}

void cli_metrics_configure(size_t n, const char *const *names, const char *const *stores)
{
    pthread_mutex_lock(&reg.lock);
    for (size_t i = 0; i < reg.n; i++) {
        reg.eps[i].configured = false;
        free(reg.eps[i].store);
        reg.eps[i].store = NULL;
    }
    for (size_t i = 0; i < n; i++) {
        endpoint_metrics *e = entry(names[i]);
        if (e) {
            e->configured = true;
            e->store = strdup(stores[i] ? stores[i] : FHIRSYNC_STORE_DEFAULT);
        }
    }
    reg.configured = true;
    pthread_mutex_unlock(&reg.lock);
}

void cli_metrics_heartbeat(void)
{
    pthread_mutex_lock(&reg.lock);
    reg.heartbeat_ms = monotonic_ms();
    pthread_mutex_unlock(&reg.lock);
}

void cli_metrics_run_started(const char *endpoint)
{
    pthread_mutex_lock(&reg.lock);
    endpoint_metrics *e = reg.on && endpoint ? entry(endpoint) : NULL;
    if (e)
        e->running = true;
    pthread_mutex_unlock(&reg.lock);
}

void cli_metrics_run_ended(const char *endpoint, fhirsync_code rc, const fhirsync_sync_stats *st)
{
    pthread_mutex_lock(&reg.lock);
    endpoint_metrics *e = reg.on && endpoint ? entry(endpoint) : NULL;
    if (e) {
        e->running = false;
        int outcome = rc == FHIRSYNC_OK            ? OUT_OK
                      : rc == FHIRSYNC_E_PARTIAL   ? OUT_PARTIAL
                      : rc == FHIRSYNC_E_LOCKED    ? OUT_LOCKED
                      : rc == FHIRSYNC_E_CANCELLED ? OUT_INTERRUPTED
                                                   : OUT_FAILED;
        e->runs[outcome]++;
        int code = cli_exit_code(rc);
        if (code > 0 && code < EXIT_CODES)
            e->exits[code]++;
        if (st) {
            e->responses += st->http_responses;
            e->rate_limited += st->rate_limited;
            e->bytes += st->bytes_received;
            e->tokens += st->token_requests;
            if (st->run_id) {
                e->has_duration = true;
                e->last_duration_s = st->duration_s;
            }
        }
    }
    pthread_mutex_unlock(&reg.lock);
}

void cli_metrics_loaded(const char *endpoint, int64_t stored, int64_t deleted, int64_t quarantined)
{
    pthread_mutex_lock(&reg.lock);
    endpoint_metrics *e = reg.on && endpoint ? entry(endpoint) : NULL;
    if (e) {
        e->stored += stored;
        e->deleted += deleted;
        e->quarantined += quarantined;
    }
    pthread_mutex_unlock(&reg.lock);
}

void cli_metrics_next_run(const char *endpoint, int64_t epoch)
{
    pthread_mutex_lock(&reg.lock);
    endpoint_metrics *e = reg.on && endpoint ? entry(endpoint) : NULL;
    if (e)
        e->next_run = epoch;
    pthread_mutex_unlock(&reg.lock);
}

/* ---- the exposition format ------------------------------------------------------------------- */

typedef struct text {
    char *data;
    size_t len, cap;
    bool oom;
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text *t, const char *fmt, ...)
{
    for (int attempt = 0; attempt < 2 && !t->oom; attempt++) {
        va_list ap;
        va_start(ap, fmt);
        int n =
            vsnprintf(t->data ? t->data + t->len : NULL, t->data ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->oom = true;
            return;
        }
        if (t->data && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap ? t->cap : 4096;
        while (cap <= t->len + (size_t)n)
            cap *= 2;
        char *grown = realloc(t->data, cap);
        if (!grown) {
            t->oom = true;
            return;
        }
        t->data = grown;
        t->cap = cap;
    }
}

/* A label value: backslash, double quote and line feed escaped, as the format requires. */
static void put_label_value(text *t, const char *value)
{
    put(t, "\"");
    for (const char *p = value; *p; p++) {
        if (*p == '\\')
            put(t, "\\\\");
        else if (*p == '"')
            put(t, "\\\"");
        else if (*p == '\n')
            put(t, "\\n");
        else
            put(t, "%c", *p);
    }
    put(t, "\"");
}

static void family(text *t, const char *name, const char *type, const char *help)
{
    put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{endpoint="E"[,extra="V"]} value */
static void sample(text *t, const char *name, const char *endpoint, const char *extra_label,
                   const char *extra_value, double value)
{
    put(t, "%s{endpoint=", name);
    put_label_value(t, endpoint);
    if (extra_label) {
        put(t, ",%s=", extra_label);
        put_label_value(t, extra_value);
    }
    /* integers as integers, other values with 9 significant digits */
    if (value == (double)(int64_t)value && value < 9.0e15 && value > -9.0e15)
        put(t, "} %lld\n", (long long)value);
    else
        put(t, "} %.9g\n", value);
}

/* ---- what the stores say --------------------------------------------------------------------- */

/* One configured endpoint as the scrape sees it: a copy made under the lock. */
typedef struct scrape_ep {
    endpoint_metrics m; /* name and store borrowed from the copy below */
    bool known;         /* the store reported it */
    fhirsync_endpoint_state state;
    int64_t last_success_s, watermark_s, failures;
} scrape_ep;

typedef struct scrape {
    scrape_ep *eps;
    size_t n;
    size_t stores, stores_up;
    char why[512]; /* the first store that did not answer, for /readyz */
} scrape;

static void scrape_free(scrape *sc)
{
    for (size_t i = 0; i < sc->n; i++) {
        free(sc->eps[i].m.name);
        free(sc->eps[i].m.store);
    }
    free(sc->eps);
}

static bool copy_registry(scrape *sc)
{
    memset(sc, 0, sizeof *sc);
    pthread_mutex_lock(&reg.lock);
    bool ok = true;
    sc->eps = calloc(reg.n ? reg.n : 1, sizeof *sc->eps);
    ok = sc->eps != NULL;
    for (size_t i = 0; ok && i < reg.n; i++) {
        if (!reg.eps[i].configured)
            continue; /* counters of an endpoint removed by a reload: kept, not reported */
        scrape_ep *e = &sc->eps[sc->n];
        e->m = reg.eps[i];
        e->m.name = strdup(reg.eps[i].name);
        e->m.store = reg.eps[i].store ? strdup(reg.eps[i].store) : NULL;
        sc->n++;
        ok = e->m.name && (e->m.store || !reg.eps[i].store);
    }
    pthread_mutex_unlock(&reg.lock);
    return ok;
}

static int take_status(const fhirsync_endpoint_status *st, void *userdata)
{
    scrape *sc = userdata;
    for (size_t i = 0; i < sc->n; i++) {
        scrape_ep *e = &sc->eps[i];
        if (!e->known && strcmp(e->m.name, st->endpoint) == 0 && e->m.store) {
            e->known = true;
            e->state = st->state;
            e->last_success_s = st->last_success_s;
            e->watermark_s = st->watermark_s;
            e->failures = st->consecutive_failures;
        }
    }
    return 0;
}

static bool is_postgresql(const char *location)
{
    return strncmp(location, "postgresql://", 13) == 0 || strncmp(location, "postgres://", 11) == 0;
}

/* Ask each distinct store once for the status of its endpoints. A SQLite file that does not
 * exist yet is up with nothing synced (the first run creates it). */
static void read_stores(scrape *sc)
{
    for (size_t i = 0; i < sc->n; i++) {
        const char *location = sc->eps[i].m.store;
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = sc->eps[j].m.store && location && strcmp(sc->eps[j].m.store, location) == 0;
        if (seen || !location)
            continue;
        sc->stores++;
        if (!is_postgresql(location) && access(location, F_OK) != 0 && errno == ENOENT) {
            sc->stores_up++;
            continue;
        }
        fhirsync_store *store = NULL;
        fhirsync_error err = {0};
        fhirsync_code rc = fhirsync_store_open(location, FHIRSYNC_STORE_READONLY, &store, &err);
        if (rc == FHIRSYNC_OK) {
            /* the status of every endpoint of this store: those of other configurations are
             * not copied out (take_status matches configured names only) */
            rc = fhirsync_store_status(store, NULL, take_status, sc, &err);
        }
        fhirsync_store_close(store);
        if (rc == FHIRSYNC_OK)
            sc->stores_up++;
        else if (!sc->why[0])
            snprintf(sc->why, sizeof sc->why, "store of endpoint %.64s: %.400s", sc->eps[i].m.name,
                     err.message[0] ? err.message : fhirsync_strerror(rc));
    }
}

static char *render_metrics(size_t *len)
{
    scrape sc;
    text t = {0};
    if (!copy_registry(&sc)) {
        scrape_free(&sc);
        return NULL;
    }
    read_stores(&sc);
    int64_t now = (int64_t)time(NULL);
    pthread_mutex_lock(&reg.lock);
    int64_t started = reg.started;
    pthread_mutex_unlock(&reg.lock);

    family(&t, "fhirsync_build_info", "gauge", "The fhirsync version serving these metrics.");
    put(&t, "fhirsync_build_info{version=");
    put_label_value(&t, fhirsync_version());
    put(&t, "} 1\n");
    family(&t, "fhirsync_start_time_seconds", "gauge",
           "When this process started (Unix time, seconds).");
    put(&t, "fhirsync_start_time_seconds %lld\n", (long long)started);
    family(&t, "fhirsync_endpoints", "gauge", "Endpoints in the loaded configuration.");
    put(&t, "fhirsync_endpoints %zu\n", sc.n);
    family(&t, "fhirsync_store_up", "gauge",
           "1 when every store answered this scrape, 0 when one did not (see /readyz).");
    put(&t, "fhirsync_store_up %d\n", sc.stores_up == sc.stores ? 1 : 0);

    family(&t, "fhirsync_runs_total", "counter",
           "Sync runs this process ended, by outcome (ok, partial, failed, locked, "
           "interrupted).");
    for (size_t i = 0; i < sc.n; i++)
        for (int o = 0; o < OUTCOMES; o++)
            sample(&t, "fhirsync_runs_total", sc.eps[i].m.name, "outcome", outcome_names[o],
                   (double)sc.eps[i].m.runs[o]);
    family(&t, "fhirsync_run_errors_total", "counter",
           "Sync runs this process ended with a non-zero exit code, by that code (10 partial, "
           "11 locked, 12 interrupted; fhirsync --help lists them).");
    for (size_t i = 0; i < sc.n; i++)
        for (int c = 1; c < EXIT_CODES; c++)
            if (sc.eps[i].m.exits[c]) {
                char code[8];
                snprintf(code, sizeof code, "%d", c);
                sample(&t, "fhirsync_run_errors_total", sc.eps[i].m.name, "exit_code", code,
                       (double)sc.eps[i].m.exits[c]);
            }
    struct {
        const char *name, *type, *help;
        size_t offset;
    } per_endpoint[] = {
        {"fhirsync_resources_stored_total", "counter",
         "Resources received and stored (counted as each file or type is stored).",
         offsetof(endpoint_metrics, stored)},
        {"fhirsync_resources_deleted_total", "counter",
         "Resources deleted (deleted files of exports and reconciliation).",
         offsetof(endpoint_metrics, deleted)},
        {"fhirsync_resources_quarantined_total", "counter",
         "Lines that could not be stored and went to the quarantine.",
         offsetof(endpoint_metrics, quarantined)},
        {"fhirsync_http_responses_total", "counter",
         "HTTP responses received by runs (FHIR server, file storage, token endpoint; retries "
         "included), counted when a run ends.",
         offsetof(endpoint_metrics, responses)},
        {"fhirsync_http_rate_limited_total", "counter",
         "HTTP 429 (Too Many Requests) responses received by runs, counted when a run ends.",
         offsetof(endpoint_metrics, rate_limited)},
        {"fhirsync_received_bytes_total", "counter",
         "Bytes of HTTP response bodies received by runs (after content decoding), counted when "
         "a run ends.",
         offsetof(endpoint_metrics, bytes)},
        {"fhirsync_token_requests_total", "counter",
         "Access tokens obtained from the token endpoint (first tokens and renewals; cached "
         "tokens are not counted), counted when a run ends.",
         offsetof(endpoint_metrics, tokens)},
    };
    for (size_t f = 0; f < sizeof per_endpoint / sizeof *per_endpoint; f++) {
        family(&t, per_endpoint[f].name, per_endpoint[f].type, per_endpoint[f].help);
        for (size_t i = 0; i < sc.n; i++) {
            int64_t v;
            memcpy(&v, (const char *)&sc.eps[i].m + per_endpoint[f].offset, sizeof v);
            sample(&t, per_endpoint[f].name, sc.eps[i].m.name, NULL, NULL, (double)v);
        }
    }
    family(&t, "fhirsync_run_in_progress", "gauge",
           "1 while this process runs a sync of the endpoint.");
    for (size_t i = 0; i < sc.n; i++)
        sample(&t, "fhirsync_run_in_progress", sc.eps[i].m.name, NULL, NULL,
               sc.eps[i].m.running ? 1 : 0);
    family(&t, "fhirsync_last_run_duration_seconds", "gauge",
           "How long this process's latest run of the endpoint took.");
    for (size_t i = 0; i < sc.n; i++)
        if (sc.eps[i].m.has_duration)
            sample(&t, "fhirsync_last_run_duration_seconds", sc.eps[i].m.name, NULL, NULL,
                   sc.eps[i].m.last_duration_s);
    family(&t, "fhirsync_next_run_timestamp_seconds", "gauge",
           "When this process will next run a sync of the endpoint (Unix time).");
    for (size_t i = 0; i < sc.n; i++)
        if (sc.eps[i].m.next_run)
            sample(&t, "fhirsync_next_run_timestamp_seconds", sc.eps[i].m.name, NULL, NULL,
                   (double)sc.eps[i].m.next_run);

    /* from the stores */
    family(&t, "fhirsync_endpoint_state", "gauge",
           "The endpoint's state in its store: 1 for the current one of never, idle, failing, "
           "running, interrupted.");
    static const fhirsync_endpoint_state states[] = {FHIRSYNC_STATE_NEVER, FHIRSYNC_STATE_IDLE,
                                                     FHIRSYNC_STATE_FAILING, FHIRSYNC_STATE_RUNNING,
                                                     FHIRSYNC_STATE_INTERRUPTED};
    for (size_t i = 0; i < sc.n; i++) {
        if (!sc.eps[i].known && sc.stores_up != sc.stores)
            continue; /* its store may not have answered: no guess */
        for (size_t k = 0; k < sizeof states / sizeof *states; k++)
            sample(&t, "fhirsync_endpoint_state", sc.eps[i].m.name, "state",
                   fhirsync_endpoint_state_name(states[k]),
                   (sc.eps[i].known ? sc.eps[i].state : FHIRSYNC_STATE_NEVER) == states[k]);
    }
    family(&t, "fhirsync_last_success_timestamp_seconds", "gauge",
           "When the endpoint's latest successful (ok or partial) run ended (Unix time); absent "
           "when it never had one.");
    for (size_t i = 0; i < sc.n; i++)
        if (sc.eps[i].known && sc.eps[i].last_success_s)
            sample(&t, "fhirsync_last_success_timestamp_seconds", sc.eps[i].m.name, NULL, NULL,
                   (double)sc.eps[i].last_success_s);
    family(&t, "fhirsync_lag_seconds", "gauge",
           "Seconds since the endpoint's latest successful run ended; absent when it never had "
           "one.");
    for (size_t i = 0; i < sc.n; i++)
        if (sc.eps[i].known && sc.eps[i].last_success_s)
            sample(&t, "fhirsync_lag_seconds", sc.eps[i].m.name, NULL, NULL,
                   (double)(now - sc.eps[i].last_success_s));
    family(&t, "fhirsync_watermark_age_seconds", "gauge",
           "Seconds since the endpoint's watermark (the server's time of the latest fully "
           "stored export or crawl): how old the newest data surely in the store can be.");
    for (size_t i = 0; i < sc.n; i++)
        if (sc.eps[i].known && sc.eps[i].watermark_s)
            sample(&t, "fhirsync_watermark_age_seconds", sc.eps[i].m.name, NULL, NULL,
                   (double)(now - sc.eps[i].watermark_s));
    family(&t, "fhirsync_consecutive_failures", "gauge",
           "Failed runs of the endpoint since its latest successful one.");
    for (size_t i = 0; i < sc.n; i++)
        if (sc.eps[i].known)
            sample(&t, "fhirsync_consecutive_failures", sc.eps[i].m.name, NULL, NULL,
                   (double)sc.eps[i].failures);
    scrape_free(&sc);
    if (t.oom) {
        free(t.data);
        return NULL;
    }
    *len = t.len;
    return t.data;
}

/* ---- HTTP ------------------------------------------------------------------------------------ */

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, const char *type,
                               char *body, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result respond_text(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum MHD_Result respond_text(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
{
    char buf[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char *body = strdup(buf);
    if (!body)
        return MHD_NO;
    return respond(c, status, "text/plain; charset=utf-8", body, strlen(body));
}

/* Ready: a configuration is loaded and every store answers. */
static enum MHD_Result readyz(struct MHD_Connection *c)
{
    scrape sc;
    if (!copy_registry(&sc)) {
        scrape_free(&sc);
        return respond_text(c, 503, "not ready: out of memory\n");
    }
    pthread_mutex_lock(&reg.lock);
    bool configured = reg.configured;
    pthread_mutex_unlock(&reg.lock);
    enum MHD_Result ret;
    if (!configured || sc.n == 0) {
        ret = respond_text(c, 503, "not ready: no configuration loaded\n");
    } else {
        read_stores(&sc);
        if (sc.stores_up != sc.stores)
            ret = respond_text(c, 503, "not ready: %s\n", sc.why);
        else
            ret = respond_text(c, 200, "ready: %zu endpoint(s), %zu store(s)\n", sc.n, sc.stores);
    }
    scrape_free(&sc);
    return ret;
}

/* Alive: the scheduler's loop said so within the last minute (it does at least every second,
 * also while runs go on). */
static enum MHD_Result healthz(struct MHD_Connection *c)
{
    pthread_mutex_lock(&reg.lock);
    int64_t quiet_ms = monotonic_ms() - reg.heartbeat_ms;
    pthread_mutex_unlock(&reg.lock);
    if (quiet_ms > 60000)
        return respond_text(c, 503, "unhealthy: the scheduler has been silent for %lld s\n",
                            (long long)(quiet_ms / 1000));
    return respond_text(c, 200, "ok\n");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **state)
{
    (void)cls;
    (void)version;
    (void)upload;
    if (!*state) { /* the first call is for the headers: answer on the second */
        *state = c;
        return MHD_YES;
    }
    if (*upload_size) /* a body was sent: not read, and the request is refused below */
        *upload_size = 0;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return respond_text(c, 405, "only GET\n");
    if (strcmp(url, "/metrics") == 0) {
        size_t len = 0;
        char *body = render_metrics(&len);
        if (!body)
            return respond_text(c, 500, "out of memory\n");
        return respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", body, len);
    }
    if (strcmp(url, "/healthz") == 0)
        return healthz(c);
    if (strcmp(url, "/readyz") == 0)
        return readyz(c);
    return respond_text(c, 404, "not found: /metrics, /healthz, /readyz\n");
}

/* ---- the listener ---------------------------------------------------------------------------- */

static bool loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return false;
}

int cli_metrics_start(const char *address, bool allow_remote)
{
    /* HOST:PORT or [IPV6]:PORT, the host a numeric address or localhost */
    char host[128];
    const char *colon = strrchr(address, ':');
    if (!colon || colon == address || !colon[1] || (size_t)(colon - address) >= sizeof host)
        return cli_usage_error("sync", "--metrics expects ADDRESS:PORT (127.0.0.1:9464), not '%s'",
                               address);
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = '\0';
    if (host[0] == '[') {
        size_t n = strlen(host);
        if (n < 3 || host[n - 1] != ']')
            return cli_usage_error("sync", "--metrics: '%s' is not [IPV6]:PORT", address);
        memmove(host, host + 1, n - 2);
        host[n - 2] = '\0';
    }
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535)
        return cli_usage_error("sync", "--metrics: '%s' is not a port", colon + 1);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    if (strcmp(host, "localhost") != 0)
        hints.ai_flags |= AI_NUMERICHOST; /* no name lookups: the address is what is bound */
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || !res)
        return cli_usage_error("sync", "--metrics: '%s' is not an IP address (or localhost)", host);
    struct sockaddr_storage addr;
    memset(&addr, 0, sizeof addr);
    memcpy(&addr, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    if (!loopback((const struct sockaddr *)&addr) && !allow_remote)
        return cli_usage_error("sync",
                               "--metrics %s is not a loopback address: the endpoints serve "
                               "without TLS or authentication; add --metrics-allow-remote to "
                               "serve on it anyway (behind a firewall or a proxy)",
                               address);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    pthread_mutex_lock(&reg.lock);
    reg.on = true;
    reg.started = (int64_t)time(NULL);
    reg.heartbeat_ms = monotonic_ms();
    pthread_mutex_unlock(&reg.lock);
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, &addr,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)32, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)32 * 1024, MHD_OPTION_END);
    if (!d) {
        int e = errno;
        pthread_mutex_lock(&reg.lock);
        reg.on = false;
        pthread_mutex_unlock(&reg.lock);
        fhirsync_error err = {.code = FHIRSYNC_E_IO};
        snprintf(err.message, sizeof err.message, "--metrics: cannot listen on %s: %s", address,
                 strerror(e));
        return cli_fail(&err);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    reg.daemon = d;
    cli_log(FHIRSYNC_LOG_INFO, NULL, false, "metrics: serving http://%s%s%s:%u/metrics",
            addr.ss_family == AF_INET6 ? "[" : "", host, addr.ss_family == AF_INET6 ? "]" : "",
            info ? (unsigned)info->port : (unsigned)port);
    return 0;
}

void cli_metrics_stop(void)
{
    if (reg.daemon)
        MHD_stop_daemon(reg.daemon);
    reg.daemon = NULL;
    pthread_mutex_lock(&reg.lock);
    reg.on = false;
    for (size_t i = 0; i < reg.n; i++) {
        free(reg.eps[i].name);
        free(reg.eps[i].store);
    }
    free(reg.eps);
    reg.eps = NULL;
    reg.n = reg.cap = 0;
    pthread_mutex_unlock(&reg.lock);
}
