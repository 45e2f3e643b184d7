/* cli/cmd_sync.c: `fhirsync sync`: keep a local copy of every configured endpoint current.
 *
 * One-shot (the default): sync each endpoint once, several at a time (--jobs), print a summary
 * table per endpoint (or one JSON object per line with --json) and exit with the worst outcome.
 * Scheduled (--every 15m, or the `every` setting): run, sleep the interval with +-10% jitter, run
 * again; SIGTERM/SIGINT let the current file finish and exit (0 when the last runs were ok, 12
 * when one was interrupted), SIGHUP reloads the configuration before the next run. A failed run
 * is recorded by the library and retried at the next tick. Workers (--worker) share syncs and
 * export files through the store's work queue; --enqueue queues syncs for them. As a service it
 * can serve metrics and health checks (--metrics, cli/metrics.c) and tells systemd it is ready,
 * alive (the watchdog, pinged from the scheduler's loop, which never waits on a run) and what it
 * does (cli/notify.c). Uses only the public API (fhirsync/sync.h, fhirsync/store.h). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "fhirsync/store.h"
#include "fhirsync/sync.h"

/* endpoints one process syncs (a configuration with more is refused, not cut short) */
#define MAX_ENDPOINTS 4096

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: fhirsync sync [options]\n"
        "       fhirsync sync --every 15m [options]        run as a service\n"
        "       fhirsync sync --worker [options]           share the work through the store\n"
        "       fhirsync sync --enqueue [options]          queue syncs for the workers\n"
        "\n"
        "Pull what changed since the last sync of each configured endpoint (or only --endpoint\n"
        "NAME) and store it: SQLite by default (./fhirsync.db), PostgreSQL with a\n"
        "postgresql:// --store. The watermark (the next _since) moves only once everything of a\n"
        "run is stored: a sync killed at any instant is completed by the next one, which resumes\n"
        "the same export. Two processes never sync one endpoint at once.\n"
        "\n"
        "modes (the `mode` setting):\n"
        "  bulk    Bulk Data $export: Group level with a group_id, else Patient, else system\n"
        "          level; every type the export offers (no _type) unless `types` is set or the\n"
        "          scopes name types; files are stored as they arrive; deleted outputs delete\n"
        "  crawl   paged searches per type (per patient for Epic) with _lastUpdated\n"
        "  Both: a full run (first run, --full, --reconcile, every Nth run) also deletes what\n"
        "  the server no longer has (servers that never list deletions); see docs/sync.md\n"
        "\n"
        "what to sync:\n"
        "  --full                 ignore the watermark: everything again\n"
        "  --reconcile            a full export or crawl that deletes what the server lost\n"
        "  --reconcile-every N    reconcile every Nth run (default reconcile_every, 24; 0 never)\n"
        "  --max-delete-share PCT a reconciliation deleting more than PCT%% of a type's rows is\n"
        "                         refused for that type, run partial (default 50)\n"
        "  --allow-mass-delete    no such limit for this run (the server really lost them)\n"
        "  --per-patient yes|no   crawl: patient=ID searches (default: yes for Epic)\n"
        "  --page-size N          crawl: _count of searches (default 500)\n"
        "  --skew-margin SECONDS  the watermark is never later than the crawl's start or the\n"
        "                         export's kick-off (server clock) minus this (default 300)\n"
        "  --load stream|after    bulk: store files as they arrive (default) or after the export\n"
        "  --loaders N            bulk into PostgreSQL: files stored at once, one session each\n"
        "                         (default 2; SQLite stores one at a time)\n"
        "  --work-dir DIR         where exports download (default: <store>.work/)\n"
        "\n"
        "running:\n"
        "  --jobs N               endpoints synced at once (default 2)\n"
        "  --wait [SECONDS]       wait for another process's lock instead of exiting with 11\n"
        "  --every DURATION       run again and again (15m, 1h, 30s); the `every` setting too\n"
        "  --json                 print each run's summary as one JSON line\n"
        "  --no-progress          no progress lines (errors and warnings only)\n"
        "  --metrics ADDR:PORT    with --every or --worker: serve /metrics (Prometheus),\n"
        "                         /healthz and /readyz there (127.0.0.1:9464; port 0: any)\n"
        "  --metrics-allow-remote let --metrics listen on a non-loopback address (no TLS, no\n"
        "                         authentication: behind a firewall or a proxy only)\n"
        "\n"
        "workers (several processes or machines on one PostgreSQL store):\n"
        "  --worker               claim endpoint syncs and export files until stopped\n"
        "  --once                 with --worker: stop when the queue is empty\n"
        "  --enqueue              queue one sync per endpoint and exit\n"
        "  --slot TEXT            with --enqueue: makes the item unique (default: the watermark)\n"
        "  --worker-id ID         default host:pid\n"
        "  --lease SECONDS        lease of a claimed item, renewed while working (default 30)\n"
        "\n");
    cli_print_common_help(out);
    fprintf(out,
            "\n"
            "signals: SIGTERM/SIGINT finish the file being stored and exit (0 when the last runs\n"
            "were ok, 12 when interrupted mid-run: the next run resumes); SIGHUP reloads the\n"
            "configuration before the next run.\n"
            "systemd: under Type=notify the service reports READY=1 once it schedules, STATUS=\n"
            "lines, WATCHDOG=1 at half WatchdogSec and STOPPING=1 (built with libsystemd).\n"
            "exit codes: 0 ok, 2 usage, 3 configuration, 4 key, 5 authentication, 6 not found,\n"
            "7 server error, 8 protocol, 9 network, 10 partial (lines quarantined), 11 locked,\n"
            "12 interrupted, 13 store or local file error\n");
}

/* ---- signals --------------------------------------------------------------------------------- */

static volatile sig_atomic_t terminate_requested;
static volatile sig_atomic_t reload_requested;

static void on_terminate(int sig)
{
    if (terminate_requested && sig == SIGINT) {
        signal(SIGINT, SIG_DFL); /* a second Ctrl-C: now */
        raise(SIGINT);
        return;
    }
    terminate_requested = 1;
    fhirsync_cancel();
}

static void on_hangup(int sig)
{
    (void)sig;
    reload_requested = 1;
}

static void install_signals(void)
{
    struct sigaction sa = {0};
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_terminate;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_hangup;
    sigaction(SIGHUP, &sa, NULL);
}

/* What the service's loop does whenever it wakes (at least every 100 ms): tells the metrics'
 * /healthz and systemd's watchdog that it is alive. */
static void service_tick(void)
{
    cli_metrics_heartbeat();
    cli_notify_watchdog();
}

/* Sleep up to `ms`, waking at once on SIGTERM/SIGINT (and on SIGHUP when wake_on_hup). */
static void nap(int64_t ms, bool wake_on_hup)
{
    service_tick();
    while (ms > 0 && !terminate_requested && !(wake_on_hup && reload_requested)) {
        service_tick();
        int64_t step = ms > 100 ? 100 : ms;
        struct timespec ts = {(time_t)(step / 1000), (long)(step % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

/* ---- output ---------------------------------------------------------------------------------- */

typedef struct ui {
    bool progress;
    bool json;
    bool prefix; /* several endpoints: name each line */
    pthread_mutex_t lock;
} ui;

static ui g_ui = {.progress = true, .lock = PTHREAD_MUTEX_INITIALIZER};

static void say_at(fhirsync_log_level level, const char *endpoint, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say_at(fhirsync_log_level level, const char *endpoint, const char *fmt, ...)
{
    char text[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    cli_log(level, endpoint, g_ui.prefix, "%s", text);
}

#define say(...) say_at(FHIRSYNC_LOG_INFO, __VA_ARGS__)

static int on_event(const fhirsync_sync_event *ev, void *userdata)
{
    (void)userdata;
    if (ev->kind == FHIRSYNC_SYNC_EV_WARNING) {
        say_at(FHIRSYNC_LOG_WARN, ev->endpoint, "warning: %s", ev->message ? ev->message : "");
        return 0;
    }
    if (ev->kind == FHIRSYNC_SYNC_EV_LOADED)
        cli_metrics_loaded(ev->endpoint, ev->count, ev->deleted, ev->quarantined);
    if (!g_ui.progress)
        return 0;
    switch (ev->kind) {
    case FHIRSYNC_SYNC_EV_PLAN:
        say(ev->endpoint, "sync: %s", ev->message ? ev->message : "");
        break;
    case FHIRSYNC_SYNC_EV_EXPORT: {
        const fhirsync_export_event *x = ev->export_event;
        if (x->kind == FHIRSYNC_EXPORT_EV_KICKOFF)
            say(ev->endpoint, "export started (status URL %s)", x->status_url);
        else if (x->kind == FHIRSYNC_EXPORT_EV_MANIFEST)
            say(ev->endpoint, "manifest: %zu file(s), transaction time %s", x->files_total,
                x->transaction_time ? x->transaction_time : "?");
        else if (x->kind == FHIRSYNC_EXPORT_EV_RETRY)
            say(ev->endpoint, "retry%s%s: %s", x->file ? " " : "", x->file ? x->file->name : "",
                x->message ? x->message : "");
        /* the export's warnings are already in the library's log (shown at warn level) */
        break;
    }
    case FHIRSYNC_SYNC_EV_LOADED: {
        char extra[200] = "";
        size_t used = 0;
        if (ev->deleted)
            used += (size_t)snprintf(extra + used, sizeof extra - used, ", %lld deleted",
                                     (long long)ev->deleted);
        if (ev->quarantined && used < sizeof extra)
            used += (size_t)snprintf(extra + used, sizeof extra - used, ", %lld quarantined",
                                     (long long)ev->quarantined);
        if (ev->message && used < sizeof extra)
            snprintf(extra + used, sizeof extra - used, " (%s)", ev->message);
        say(ev->endpoint, "%s: %lld stored%s; %lld in total after %.1f s", ev->name,
            (long long)ev->count, extra, (long long)ev->resources, ev->elapsed_s);
        break;
    }
    default: break;
    }
    return 0;
}

static void json_string_out(FILE *out, const char *s)
{
    if (!s) {
        fputs("null", out);
        return;
    }
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(out, "\\u%04x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

static void print_summary(const char *endpoint, const fhirsync_sync *sync, fhirsync_code rc)
{
    fhirsync_sync_stats st;
    fhirsync_sync_stats_init(&st, FHIRSYNC_SYNC_STATS_VERSION);
    fhirsync_sync_get_stats(sync, &st);
    double rate = st.duration_s > 0 ? (double)st.resources / st.duration_s : 0;
    const char *status = st.run_id                 ? fhirsync_run_status_name(st.status)
                         : rc == FHIRSYNC_E_LOCKED ? "locked"
                                                   : "failed";
    pthread_mutex_lock(&g_ui.lock);
    if (g_ui.json) {
        printf("{\"endpoint\":");
        json_string_out(stdout, endpoint);
        printf(",\"run_id\":%lld,\"status\":", (long long)st.run_id);
        json_string_out(stdout, status);
        printf(",\"mode\":");
        json_string_out(stdout, st.mode);
        printf(",\"level\":");
        json_string_out(stdout, st.level);
        printf(",\"since\":");
        json_string_out(stdout, st.since);
        printf(",\"transaction_time\":");
        json_string_out(stdout, st.transaction_time);
        printf(",\"watermark\":");
        json_string_out(stdout, st.watermark);
        printf(",\"resumed\":%s,\"resources\":%lld,\"deleted\":%lld,\"reconciled\":%lld,"
               "\"new\":%lld,\"quarantined\":%lld,\"server_errors\":%lld,\"requests\":%lld,"
               "\"duration_s\":%.3f,\"rate\":%.1f,\"types\":{",
               st.resumed ? "true" : "false", (long long)st.resources, (long long)st.deleted,
               (long long)st.reconciled, (long long)st.inserted, (long long)st.quarantined,
               (long long)st.server_errors, (long long)st.requests, st.duration_s, rate);
        for (size_t i = 0; i < fhirsync_sync_type_count(sync); i++) {
            const fhirsync_sync_type_stats *t = fhirsync_sync_type_at(sync, i);
            printf("%s", i ? "," : "");
            json_string_out(stdout, t->type);
            printf(":{\"loaded\":%lld,\"new\":%lld,\"deleted\":%lld,\"quarantined\":%lld,"
                   "\"rows\":%lld}",
                   (long long)t->loaded, (long long)t->inserted, (long long)t->deleted,
                   (long long)t->quarantined, (long long)t->rows);
        }
        printf("},\"error\":");
        json_string_out(stdout, rc == FHIRSYNC_OK ? NULL : fhirsync_sync_errmsg(sync));
        printf("}\n");
    } else {
        printf("\nsync %s: %s", endpoint, status);
        if (st.mode)
            printf(" (%s%s%s%s, %s)", st.mode, st.level ? ", " : "", st.level ? st.level : "",
                   st.level ? " level" : "", st.since ? "incremental" : "full");
        printf("\n");
        if (st.since)
            printf("  since       %s\n", st.since);
        if (fhirsync_sync_type_count(sync) > 0) {
            /* what was received beside what the store changed */
            printf("  %-24s %10s %10s %10s %12s %10s\n", "type", "received", "new", "deleted",
                   "quarantined", "rows");
            int64_t rows = 0;
            for (size_t i = 0; i < fhirsync_sync_type_count(sync); i++) {
                const fhirsync_sync_type_stats *t = fhirsync_sync_type_at(sync, i);
                printf("  %-24s %10lld %10lld %10lld %12lld %10lld\n", t->type,
                       (long long)t->loaded, (long long)t->inserted, (long long)t->deleted,
                       (long long)t->quarantined, (long long)t->rows);
                rows += t->rows;
            }
            printf("  %-24s %10lld %10lld %10lld %12lld %10lld\n", "total", (long long)st.resources,
                   (long long)st.inserted, (long long)st.deleted, (long long)st.quarantined,
                   (long long)rows);
        }
        printf("  %lld resource(s) in %.2f s (%.0f resources/s)%s\n", (long long)st.resources,
               st.duration_s, rate, st.resumed ? ", resumed an interrupted export" : "");
        if (st.reconciled)
            printf("  reconciled  %lld resource(s) gone on the server (not in the full %s)\n",
                   (long long)st.reconciled,
                   st.mode && strncmp(st.mode, "crawl", 5) == 0 ? "crawl" : "export");
        if (st.server_errors)
            printf("  server errors: %lld (see the log)\n", (long long)st.server_errors);
        if (st.watermark)
            printf("  watermark   %s (the next sync starts there)\n", st.watermark);
        if (st.run_id)
            printf("  run         %lld (see 'fhirsync query runs')\n", (long long)st.run_id);
        if (rc != FHIRSYNC_OK)
            printf("  error       %s\n", fhirsync_sync_errmsg(sync));
    }
    fflush(stdout);
    pthread_mutex_unlock(&g_ui.lock);
}

/* ---- running syncs, several at a time -------------------------------------------------------- */

typedef struct job_list {
    fhirsync_endpoint *const *eps;
    size_t count;
    size_t next;
    const fhirsync_sync_options *opts;
    fhirsync_code *results;
    pthread_mutex_t lock;
    size_t live; /* job threads still working */
} job_list;

static fhirsync_code sync_one(const fhirsync_endpoint *ep, const fhirsync_sync_options *opts)
{
    const char *name = fhirsync_endpoint_name(ep);
    const char *location = fhirsync_endpoint_get(ep, "store");
    fhirsync_store *store = NULL;
    fhirsync_sync *sync = NULL;
    fhirsync_error err = {0};
    cli_log_set_thread_endpoint(name); /* the library's log lines of this thread name it */
    cli_metrics_run_started(name);
    fhirsync_code rc = fhirsync_store_open(location, 0, &store, &err);
    /* the profile's views (default: the shipped ones); unchanged ones cost one read */
    if (rc == FHIRSYNC_OK)
        rc = cli_views_register(store, fhirsync_endpoint_get(ep, "views"), false, &err);
    if (rc == FHIRSYNC_OK)
        rc = fhirsync_sync_new(ep, store, opts, &sync, &err);
    if (rc != FHIRSYNC_OK) {
        say_at(FHIRSYNC_LOG_ERROR, name, "%s",
               err.message[0] ? err.message : fhirsync_strerror(rc));
        fhirsync_store_close(store);
        cli_metrics_run_ended(name, rc, NULL);
        cli_log_set_thread_endpoint(NULL);
        return rc;
    }
    fhirsync_sync_set_callback(sync, on_event, NULL);
    rc = fhirsync_sync_run(sync);
    if (rc != FHIRSYNC_OK)
        say_at(rc == FHIRSYNC_E_PARTIAL ? FHIRSYNC_LOG_WARN : FHIRSYNC_LOG_ERROR, name, "%s",
               fhirsync_sync_errmsg(sync));
    if (rc != FHIRSYNC_E_LOCKED || g_ui.json)
        print_summary(name, sync, rc);
    fhirsync_sync_stats st;
    fhirsync_sync_stats_init(&st, FHIRSYNC_SYNC_STATS_VERSION);
    fhirsync_sync_get_stats(sync, &st);
    cli_metrics_run_ended(name, rc, &st);
    fhirsync_sync_free(sync);
    fhirsync_store_close(store);
    cli_log_set_thread_endpoint(NULL);
    return rc;
}

static void *job_thread(void *arg)
{
    job_list *jl = arg;
    for (;;) {
        pthread_mutex_lock(&jl->lock);
        size_t i = jl->next < jl->count ? jl->next++ : jl->count;
        pthread_mutex_unlock(&jl->lock);
        if (i >= jl->count || terminate_requested)
            break;
        jl->results[i] = sync_one(jl->eps[i], jl->opts);
    }
    pthread_mutex_lock(&jl->lock);
    jl->live--;
    pthread_mutex_unlock(&jl->lock);
    return NULL;
}

/* Sync eps[0..n) with at most `jobs` at once; results[i] receives each outcome. `supervise`
 * (the service): this thread does not sync but keeps the service's loop alive meanwhile
 * (service_tick), so that a long export never silences the watchdog or /healthz. */
static void run_syncs(fhirsync_endpoint *const *eps, size_t n, int jobs,
                      const fhirsync_sync_options *opts, fhirsync_code *results, bool supervise)
{
    job_list jl = {eps, n, 0, opts, results, PTHREAD_MUTEX_INITIALIZER, 0};
    for (size_t i = 0; i < n; i++)
        results[i] = FHIRSYNC_E_CANCELLED;
    size_t threads = (size_t)jobs < n ? (size_t)jobs : n;
    pthread_t tids[64];
    size_t started = 0;
    for (size_t t = supervise ? 0 : 1; t < threads && t < 64; t++) {
        pthread_mutex_lock(&jl.lock);
        jl.live++;
        pthread_mutex_unlock(&jl.lock);
        if (pthread_create(&tids[started], NULL, job_thread, &jl) == 0) {
            started++;
        } else {
            pthread_mutex_lock(&jl.lock);
            jl.live--;
            pthread_mutex_unlock(&jl.lock);
        }
    }
    if (supervise && started > 0) {
        for (;;) {
            pthread_mutex_lock(&jl.lock);
            size_t live = jl.live;
            pthread_mutex_unlock(&jl.lock);
            if (live == 0)
                break;
            service_tick();
            struct timespec step = {0, 100 * 1000000L};
            nanosleep(&step, NULL);
        }
    } else {
        jl.live++;
        job_thread(&jl); /* this thread works too */
    }
    for (size_t t = 0; t < started; t++)
        pthread_join(tids[t], NULL);
}

/* The worst outcome, as an exit code: a failure beats partial beats ok. */
static int exit_for(const fhirsync_code *results, size_t n)
{
    int worst = 0;
    for (size_t i = 0; i < n; i++) {
        int code = cli_exit_code(results[i]);
        if (code == 0)
            continue;
        if (worst == 0 || worst == EXIT_PARTIAL)
            worst = code;
    }
    return worst;
}

/* ---- the configuration ----------------------------------------------------------------------- */

typedef struct plan {
    fhirsync_config *cfg;
    fhirsync_endpoint *eps[MAX_ENDPOINTS];
    size_t count;
} plan;

static void plan_free(plan *p)
{
    fhirsync_config_free(p->cfg);
    memset(p, 0, sizeof *p);
}

static fhirsync_code plan_load(const cli_profile *profile, plan *p, fhirsync_error *err)
{
    memset(p, 0, sizeof *p);
    fhirsync_code rc = cli_config_resolve(profile, &p->cfg, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    size_t n = fhirsync_config_endpoint_count(p->cfg);
    if (n > MAX_ENDPOINTS && !profile->endpoint_name) {
        err->code = FHIRSYNC_E_CONFIG;
        snprintf(err->message, sizeof err->message,
                 "the configuration has %zu endpoints; one sync process takes at most %d: "
                 "split them between services (a configuration directory each)",
                 n, MAX_ENDPOINTS);
        plan_free(p);
        return FHIRSYNC_E_CONFIG;
    }
    for (size_t i = 0; i < n && p->count < MAX_ENDPOINTS; i++) {
        fhirsync_endpoint *ep = fhirsync_config_endpoint_at(p->cfg, i);
        if (profile->endpoint_name && strcmp(fhirsync_endpoint_name(ep), profile->endpoint_name))
            continue;
        p->eps[p->count++] = ep;
    }
    if (profile->endpoint_name && p->count == 0) {
        err->code = FHIRSYNC_E_CONFIG;
        snprintf(err->message, sizeof err->message,
                 "endpoint '%s' is not defined in the configuration (add an [endpoint %s] "
                 "section)",
                 profile->endpoint_name, profile->endpoint_name);
        plan_free(p);
        return FHIRSYNC_E_CONFIG;
    }
    for (size_t i = 0; i < p->count; i++) {
        rc = fhirsync_endpoint_validate(p->eps[i], err);
        if (rc != FHIRSYNC_OK) {
            char msg[sizeof err->message];
            snprintf(msg, sizeof msg, "%s", err->message);
            snprintf(err->message, sizeof err->message, "endpoint %.64s: %.900s",
                     fhirsync_endpoint_name(p->eps[i]), msg);
            plan_free(p);
            return rc;
        }
    }
    return FHIRSYNC_OK;
}

/* ---- modes ----------------------------------------------------------------------------------- */

typedef struct worker_args {
    const char *worker_id;
    int lease_s;
    bool once;
    bool enqueue;
    const char *slot;
} worker_args;

static int run_enqueue(plan *p, const worker_args *wa)
{
    int rc_exit = 0;
    for (size_t i = 0; i < p->count; i++) {
        const char *name = fhirsync_endpoint_name(p->eps[i]);
        fhirsync_store *store = NULL;
        fhirsync_error err = {0};
        int64_t id = 0;
        fhirsync_code rc =
            fhirsync_store_open(fhirsync_endpoint_get(p->eps[i], "store"), 0, &store, &err);
        if (rc == FHIRSYNC_OK)
            rc = fhirsync_sync_enqueue(store, name, wa->slot, &id, &err);
        if (rc == FHIRSYNC_OK)
            printf("queued a sync of %s (work item %lld)\n", name, (long long)id);
        else
            rc_exit = cli_fail(&err);
        fhirsync_store_close(store);
    }
    return rc_exit;
}

/* The scheduler of a worker with --every: queue each endpoint's sync once per tick (the slot is
 * the tick, so several workers with --every queue it once). */
typedef struct scheduler {
    plan *p;
    long every;
    pthread_t tid;
    bool started;
} scheduler;

static void *scheduler_main(void *arg)
{
    scheduler *sc = arg;
    while (!terminate_requested) {
        long tick = (long)(time(NULL) / sc->every);
        char slot[64];
        snprintf(slot, sizeof slot, "tick-%ld-%ld", sc->every, tick);
        for (size_t i = 0; i < sc->p->count && !terminate_requested; i++) {
            fhirsync_store *store = NULL;
            fhirsync_error err = {0};
            const fhirsync_endpoint *ep = sc->p->eps[i];
            if (fhirsync_store_open(fhirsync_endpoint_get(ep, "store"), 0, &store, &err) ==
                    FHIRSYNC_OK &&
                fhirsync_sync_enqueue(store, fhirsync_endpoint_name(ep), slot, NULL, &err) ==
                    FHIRSYNC_OK)
                ;
            else
                say(fhirsync_endpoint_name(ep), "cannot queue a sync: %s", err.message);
            fhirsync_store_close(store);
        }
        int64_t next = ((int64_t)tick + 1) * sc->every;
        nap((next - (int64_t)time(NULL)) * 1000, false);
    }
    return NULL;
}

/* A worker's sign of life for /healthz and systemd's watchdog: the library's worker loop runs on
 * the main thread, so a ticker beside it says the process is alive (not that each item
 * progresses: the leases do that). */
static volatile sig_atomic_t ticker_stop;

static void *ticker_main(void *arg)
{
    (void)arg;
    while (!ticker_stop) {
        service_tick();
        struct timespec step = {0, 100 * 1000000L};
        nanosleep(&step, NULL);
    }
    return NULL;
}

static int run_worker(plan *p, const worker_args *wa, const fhirsync_sync_options *opts, long every)
{
    if (p->count == 0)
        return cli_usage_error("sync", "the configuration has no endpoint for the worker");
    const char *location = fhirsync_endpoint_get(p->eps[0], "store");
    /* the views every worker's writes keep current: registered once, before any work */
    fhirsync_error verr = {0};
    fhirsync_store *vstore = NULL;
    fhirsync_code vrc = fhirsync_store_open(location, 0, &vstore, &verr);
    for (size_t i = 0; vrc == FHIRSYNC_OK && i < p->count; i++)
        vrc = cli_views_register(vstore, fhirsync_endpoint_get(p->eps[i], "views"), false, &verr);
    fhirsync_store_close(vstore);
    if (vrc != FHIRSYNC_OK)
        return cli_fail(&verr);
    fhirsync_worker_options wo;
    fhirsync_worker_options_init(&wo, FHIRSYNC_WORKER_OPTIONS_VERSION);
    wo.worker_id = wa->worker_id;
    wo.lease_s = wa->lease_s;
    wo.exit_when_idle = wa->once;
    wo.sync = *opts;
    scheduler sc = {p, every, 0, false};
    if (every > 0 && pthread_create(&sc.tid, NULL, scheduler_main, &sc) == 0)
        sc.started = true;
    fhirsync_worker_stats stats;
    fhirsync_worker_stats_init(&stats, FHIRSYNC_WORKER_STATS_VERSION);
    fhirsync_error err = {0};
    cli_notify_init();
    pthread_t ticker;
    ticker_stop = 0;
    bool ticking = pthread_create(&ticker, NULL, ticker_main, NULL) == 0;
    cli_notify_ready("worker: claiming syncs and export files");
    fhirsync_code rc =
        fhirsync_sync_worker_run(location, p->cfg, &wo, on_event, NULL, &stats, &err);
    cli_notify_stopping();
    if (ticking) {
        ticker_stop = 1;
        pthread_join(ticker, NULL);
    }
    if (sc.started) {
        terminate_requested = 1;
        pthread_join(sc.tid, NULL);
    }
    if (g_ui.json)
        printf("{\"worker\":true,\"items_done\":%lld,\"items_failed\":%lld,\"resources\":%lld}\n",
               (long long)stats.items_done, (long long)stats.items_failed,
               (long long)stats.resources);
    else
        printf("worker: %lld item(s) done, %lld given back, %lld resource(s) stored\n",
               (long long)stats.items_done, (long long)stats.items_failed,
               (long long)stats.resources);
    if (rc != FHIRSYNC_OK)
        return cli_fail(&err);
    return 0;
}

/* The metrics' view of the configuration: the endpoints and their stores. */
static void metrics_configure(const plan *p)
{
    const char *names[MAX_ENDPOINTS], *stores[MAX_ENDPOINTS];
    for (size_t i = 0; i < p->count; i++) {
        names[i] = fhirsync_endpoint_name(p->eps[i]);
        stores[i] = fhirsync_endpoint_get(p->eps[i], "store");
    }
    cli_metrics_configure(p->count, names, stores);
}

/* Open (create, migrate) each distinct store once before the first run, so that /readyz and
 * `fhirsync status` can read it from the start; a store that cannot be opened is said, and each
 * run of its endpoints fails and is retried as usual. */
static void prepare_stores(const plan *p)
{
    for (size_t i = 0; i < p->count; i++) {
        const char *location = fhirsync_endpoint_get(p->eps[i], "store");
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++) {
            const char *other = fhirsync_endpoint_get(p->eps[j], "store");
            seen = (!location && !other) || (location && other && strcmp(location, other) == 0);
        }
        if (seen)
            continue;
        fhirsync_store *store = NULL;
        fhirsync_error err = {0};
        if (fhirsync_store_open(location, 0, &store, &err) != FHIRSYNC_OK)
            say_at(FHIRSYNC_LOG_ERROR, fhirsync_endpoint_name(p->eps[i]), "store: %s", err.message);
        fhirsync_store_close(store);
    }
}

/* The one-line STATUS= of the service. */
static void notify_summary(const plan *p, const fhirsync_code *last, const bool *ran, int64_t next)
{
    size_t failing = 0, synced = 0;
    for (size_t i = 0; i < p->count; i++) {
        if (!ran[i])
            continue;
        synced++;
        if (last[i] != FHIRSYNC_OK && last[i] != FHIRSYNC_E_PARTIAL)
            failing++;
    }
    cli_notify_status("%zu endpoint(s): %zu synced, %zu failing at their last run; next run in "
                      "%lld s",
                      p->count, synced - failing, failing, (long long)(next - (int64_t)time(NULL)));
}

/* The service: each endpoint runs at its own interval (its `every`, else the shortest one). */
static int run_scheduled(const cli_profile *profile, plan *p, int jobs,
                         const fhirsync_sync_options *opts, long default_every)
{
    int64_t due[MAX_ENDPOINTS] = {0};
    fhirsync_code last[MAX_ENDPOINTS];
    bool ran[MAX_ENDPOINTS] = {false};
    bool interrupted = false;
    metrics_configure(p);
    prepare_stores(p);
    cli_notify_init();
    char ready[160];
    snprintf(ready, sizeof ready, "scheduling %zu endpoint(s), every %ld s by default", p->count,
             default_every);
    cli_notify_ready(ready);
    for (;;) {
        if (reload_requested) {
            reload_requested = 0;
            cli_notify_reloading();
            plan fresh;
            fhirsync_error err = {0};
            if (plan_load(profile, &fresh, &err) == FHIRSYNC_OK) {
                /* an endpoint keeps its schedule and its last outcome; a new one runs now */
                int64_t kept[MAX_ENDPOINTS] = {0};
                fhirsync_code kept_last[MAX_ENDPOINTS];
                bool kept_ran[MAX_ENDPOINTS] = {false};
                for (size_t i = 0; i < fresh.count; i++)
                    for (size_t j = 0; j < p->count; j++)
                        if (strcmp(fhirsync_endpoint_name(fresh.eps[i]),
                                   fhirsync_endpoint_name(p->eps[j])) == 0) {
                            kept[i] = due[j];
                            kept_last[i] = last[j];
                            kept_ran[i] = ran[j];
                        }
                plan_free(p);
                *p = fresh;
                memcpy(due, kept, sizeof due);
                memcpy(last, kept_last, sizeof last);
                memcpy(ran, kept_ran, sizeof ran);
                metrics_configure(p);
                prepare_stores(p);
                say(NULL, "configuration reloaded (SIGHUP): %zu endpoint(s)", p->count);
            } else {
                say_at(FHIRSYNC_LOG_ERROR, NULL,
                       "configuration NOT reloaded (SIGHUP): %s; keeping the previous one",
                       err.message);
            }
            cli_notify_ready("configuration reloaded");
        }
        int64_t now = (int64_t)time(NULL);
        fhirsync_endpoint *run[MAX_ENDPOINTS];
        size_t idx[MAX_ENDPOINTS], n = 0;
        for (size_t i = 0; i < p->count; i++)
            if (due[i] <= now) {
                idx[n] = i;
                run[n++] = p->eps[i];
            }
        if (n > 0) {
            fhirsync_code results[MAX_ENDPOINTS];
            fhirsync_cancel_reset();
            if (terminate_requested) /* a signal just before the reset: keep it */
                break;
            cli_notify_status("syncing %zu of %zu endpoint(s)", n, p->count);
            run_syncs(run, n, jobs, opts, results, true);
            for (size_t k = 0; k < n; k++) {
                size_t i = idx[k];
                if (results[k] == FHIRSYNC_E_CANCELLED)
                    interrupted = true;
                last[i] = results[k];
                ran[i] = true;
                long every = cli_parse_duration(fhirsync_endpoint_get(p->eps[i], "every"));
                if (every <= 0)
                    every = default_every;
                /* +-10% jitter so that many services do not hit one EHR in step */
                double jitter = 0.9 + 0.2 * ((double)rand() / (double)RAND_MAX);
                due[i] = (int64_t)time(NULL) + (int64_t)((double)every * jitter + 0.5);
                cli_metrics_next_run(fhirsync_endpoint_name(p->eps[i]), due[i]);
                if (!terminate_requested && results[k] != FHIRSYNC_OK)
                    say_at(results[k] == FHIRSYNC_E_PARTIAL ? FHIRSYNC_LOG_WARN
                                                            : FHIRSYNC_LOG_ERROR,
                           fhirsync_endpoint_name(p->eps[i]),
                           "run ended with %s; next attempt "
                           "in about %ld s",
                           fhirsync_strerror(results[k]), every);
            }
        }
        if (terminate_requested)
            break;
        int64_t next = (int64_t)time(NULL) + default_every;
        for (size_t i = 0; i < p->count; i++)
            if (due[i] < next)
                next = due[i];
        if (g_ui.progress)
            say(NULL, "next run in %lld s", (long long)(next - (int64_t)time(NULL)));
        notify_summary(p, last, ran, next);
        nap((next - (int64_t)time(NULL)) * 1000, true);
        if (terminate_requested)
            break;
    }
    cli_notify_stopping();
    say(NULL, "stopping (signal): %s",
        interrupted ? "a run was interrupted; the next start "
                      "resumes it"
                    : "the last runs completed");
    /* stopped between runs: a clean stop (failed runs are in the runs table and were retried
     * at each tick) */
    return interrupted ? EXIT_INTERRUPTED : 0;
}

/* ---- the command ----------------------------------------------------------------------------- */

static bool parse_int(const char *text, long min, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (!*text || *end || errno || v < min || v > max)
        return false;
    *out = v;
    return true;
}

int cmd_sync(int argc, char **argv)
{
    enum {
        OPT_FULL = 1,
        OPT_RECONCILE,
        OPT_RECONCILE_EVERY,
        OPT_PER_PATIENT,
        OPT_PAGE_SIZE,
        OPT_SKEW,
        OPT_LOAD,
        OPT_LOADERS,
        OPT_WORK_DIR,
        OPT_JOBS,
        OPT_WAIT,
        OPT_JSON,
        OPT_NO_PROGRESS,
        OPT_WORKER,
        OPT_ONCE,
        OPT_ENQUEUE,
        OPT_SLOT,
        OPT_WORKER_ID,
        OPT_LEASE,
        OPT_MAX_DELETE_SHARE,
        OPT_ALLOW_MASS_DELETE,
        OPT_METRICS,
        OPT_METRICS_ALLOW_REMOTE
    };
    static const struct option own[] = {
        {"full", no_argument, NULL, OPT_FULL},
        {"reconcile", no_argument, NULL, OPT_RECONCILE},
        {"reconcile-every", required_argument, NULL, OPT_RECONCILE_EVERY},
        {"per-patient", required_argument, NULL, OPT_PER_PATIENT},
        {"page-size", required_argument, NULL, OPT_PAGE_SIZE},
        {"skew-margin", required_argument, NULL, OPT_SKEW},
        {"load", required_argument, NULL, OPT_LOAD},
        {"loaders", required_argument, NULL, OPT_LOADERS},
        {"work-dir", required_argument, NULL, OPT_WORK_DIR},
        {"jobs", required_argument, NULL, OPT_JOBS},
        {"wait", optional_argument, NULL, OPT_WAIT},
        {"json", no_argument, NULL, OPT_JSON},
        {"no-progress", no_argument, NULL, OPT_NO_PROGRESS},
        {"worker", no_argument, NULL, OPT_WORKER},
        {"once", no_argument, NULL, OPT_ONCE},
        {"enqueue", no_argument, NULL, OPT_ENQUEUE},
        {"slot", required_argument, NULL, OPT_SLOT},
        {"worker-id", required_argument, NULL, OPT_WORKER_ID},
        {"lease", required_argument, NULL, OPT_LEASE},
        {"max-delete-share", required_argument, NULL, OPT_MAX_DELETE_SHARE},
        {"allow-mass-delete", no_argument, NULL, OPT_ALLOW_MASS_DELETE},
        {"metrics", required_argument, NULL, OPT_METRICS},
        {"metrics-allow-remote", no_argument, NULL, OPT_METRICS_ALLOW_REMOTE},
        {NULL, 0, NULL, 0}};
    char short_opts[32];
    const struct option *opts = cli_options(own, "", short_opts, sizeof short_opts);
    cli_profile profile = {0};
    fhirsync_sync_options so;
    fhirsync_sync_options_init(&so, FHIRSYNC_SYNC_OPTIONS_VERSION);
    worker_args wa = {0};
    bool worker = false, metrics_allow_remote = false;
    const char *metrics = NULL;
    long jobs = 2, v;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, short_opts, opts, NULL)) != -1) {
        int handled = cli_profile_option(&profile, opt, optarg, "sync");
        if (handled < 0)
            return -handled;
        if (handled)
            continue;
        switch (opt) {
        case OPT_FULL: so.full = true; break;
        case OPT_RECONCILE: so.reconcile = true; break;
        case OPT_ALLOW_MASS_DELETE: so.allow_mass_delete = true; break;
        case OPT_MAX_DELETE_SHARE:
            if (!parse_int(optarg, 1, 100, &v))
                return cli_usage_error("sync",
                                       "--max-delete-share expects 1..100 (percent), got "
                                       "'%s'",
                                       optarg);
            so.max_delete_share = (int)v;
            break;
        case OPT_RECONCILE_EVERY:
            if (!parse_int(optarg, 0, 100000, &v))
                return cli_usage_error("sync", "--reconcile-every expects a number, got '%s'",
                                       optarg);
            so.reconcile_every = v == 0 ? -1 : (int)v;
            break;
        case OPT_PER_PATIENT:
            if (strcmp(optarg, "yes") && strcmp(optarg, "no"))
                return cli_usage_error("sync", "--per-patient is yes or no, not '%s'", optarg);
            so.per_patient = strcmp(optarg, "yes") == 0;
            break;
        case OPT_PAGE_SIZE:
            if (!parse_int(optarg, 1, 10000, &v))
                return cli_usage_error("sync", "--page-size expects 1..10000, got '%s'", optarg);
            so.page_size = (int)v;
            break;
        case OPT_SKEW:
            if (!parse_int(optarg, 0, 86400, &v))
                return cli_usage_error("sync", "--skew-margin expects seconds, got '%s'", optarg);
            so.skew_margin_s = v == 0 ? -1 : (int)v;
            break;
        case OPT_LOAD:
            if (strcmp(optarg, "stream") == 0)
                so.load = FHIRSYNC_SYNC_LOAD_STREAM;
            else if (strcmp(optarg, "after") == 0)
                so.load = FHIRSYNC_SYNC_LOAD_AFTER;
            else
                return cli_usage_error("sync", "--load is stream or after, not '%s'", optarg);
            break;
        case OPT_LOADERS:
            if (!parse_int(optarg, 1, 16, &v))
                return cli_usage_error("sync", "--loaders expects 1..16, got '%s'", optarg);
            so.loaders = (int)v;
            break;
        case OPT_WORK_DIR: so.work_dir = optarg; break;
        case OPT_JOBS:
            if (!parse_int(optarg, 1, 64, &jobs))
                return cli_usage_error("sync", "--jobs expects 1..64, got '%s'", optarg);
            break;
        case OPT_WAIT: {
            /* --wait, --wait=SECONDS or --wait SECONDS */
            const char *arg = optarg;
            if (!arg && optind < argc && argv[optind][0] >= '0' && argv[optind][0] <= '9')
                arg = argv[optind++];
            if (!arg)
                so.lock_timeout_ms = -1;
            else if (parse_int(arg, 0, 86400 * 7, &v))
                so.lock_timeout_ms = v * 1000;
            else
                return cli_usage_error("sync", "--wait expects seconds, got '%s'", arg);
            break;
        }
        case OPT_METRICS: metrics = optarg; break;
        case OPT_METRICS_ALLOW_REMOTE: metrics_allow_remote = true; break;
        case OPT_JSON: g_ui.json = true; break;
        case OPT_NO_PROGRESS: g_ui.progress = false; break;
        case OPT_WORKER: worker = true; break;
        case OPT_ONCE: wa.once = true; break;
        case OPT_ENQUEUE: wa.enqueue = true; break;
        case OPT_SLOT: wa.slot = optarg; break;
        case OPT_WORKER_ID: wa.worker_id = optarg; break;
        case OPT_LEASE:
            if (!parse_int(optarg, 1, 86400, &v))
                return cli_usage_error("sync", "--lease expects seconds, got '%s'", optarg);
            wa.lease_s = (int)v;
            break;
        case 'h': usage(stdout); return 0;
        default: return cli_bad_option("sync", argv);
        }
    }
    if (optind < argc)
        return cli_usage_error("sync", "unexpected argument '%s'", argv[optind]);
    if (worker && wa.enqueue)
        return cli_usage_error("sync", "--worker and --enqueue are separate roles");
    if ((wa.once || wa.worker_id || wa.lease_s) && !worker)
        return cli_usage_error("sync", "--once, --worker-id and --lease go with --worker");
    if (wa.slot && !wa.enqueue)
        return cli_usage_error("sync", "--slot goes with --enqueue");
    if (profile.quiet)
        g_ui.progress = false;
    cli_setup_logging(&profile);

    plan p;
    fhirsync_error err = {0};
    if (plan_load(&profile, &p, &err) != FHIRSYNC_OK)
        return cli_fail(&err);
    g_ui.prefix = p.count > 1;
    long every = 0;
    for (size_t i = 0; i < p.count; i++) {
        const char *text = fhirsync_endpoint_get(p.eps[i], "every");
        long e = text ? cli_parse_duration(text) : 0;
        if (text && e <= 0) {
            plan_free(&p);
            return cli_usage_error("sync", "every '%s' is not a duration such as 15m", text);
        }
        if (e > 0 && (every == 0 || e < every))
            every = e;
    }
    if ((metrics || metrics_allow_remote) && (wa.enqueue || (!worker && every <= 0))) {
        plan_free(&p);
        return cli_usage_error("sync", "--metrics goes with a service: --every (or the every "
                                       "setting) or --worker");
    }
    if (metrics_allow_remote && !metrics) {
        plan_free(&p);
        return cli_usage_error("sync", "--metrics-allow-remote goes with --metrics");
    }
    if (metrics) {
        int mrc = cli_metrics_start(metrics, metrics_allow_remote);
        if (mrc != 0) {
            plan_free(&p);
            return mrc;
        }
        metrics_configure(&p);
    }
    srand((unsigned)(time(NULL) ^ (time_t)getpid()));
    install_signals();
    int rc;
    if (wa.enqueue) {
        rc = run_enqueue(&p, &wa);
    } else if (worker) {
        rc = run_worker(&p, &wa, &so, every);
    } else if (every > 0) {
        rc = run_scheduled(&profile, &p, (int)jobs, &so, every);
    } else {
        fhirsync_code results[MAX_ENDPOINTS];
        run_syncs(p.eps, p.count, (int)jobs, &so, results, false);
        rc = exit_for(results, p.count);
        if (terminate_requested && rc == 0)
            rc = EXIT_INTERRUPTED;
    }
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    cli_metrics_stop();
    plan_free(&p);
    return rc;
}
