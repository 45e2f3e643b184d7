/* sync/run.c: what a run's modes (bulk.c, crawl.c) and the workers (worker.c) share with the
 * handle (sync.c): events to the application's callback (serialised by the handle's mutex, since
 * bulk mode also reports from its loader thread), warnings, the stop request, the counts, the
 * endpoint's work folder, recording a failed run, and whether a workers' run is in flight. It
 * calls none of those files, so they depend on it and never on each other in a loop. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "store/store_internal.h"
#include "sync/sync_internal.h"

/* ---- events ---------------------------------------------------------------------------------- */

bool fs_sync_emit(fhirsync_sync *s, fhirsync_sync_event *ev)
{
    pthread_mutex_lock(&s->lock);
    ev->endpoint = s->name;
    fs_sync_counts_totals(&s->counts, &ev->resources, NULL, NULL);
    ev->elapsed_s = (double)(fs_monotonic_ms() - s->start_ms) / 1000.0;
    if (s->cb && s->cb(ev, s->cb_userdata) != 0)
        s->stop = true;
    bool go_on = !s->stop;
    pthread_mutex_unlock(&s->lock);
    return go_on;
}

void fs_sync_warn(fhirsync_sync *s, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fs_log(FHIRSYNC_LOG_INFO, "sync %s: %s", s->name, msg);
    char *clean = fs_redact(msg);
    fhirsync_sync_event ev = {.kind = FHIRSYNC_SYNC_EV_WARNING, .message = clean ? clean : ""};
    fs_sync_emit(s, &ev);
    fs_free(clean);
}

bool fs_sync_stopping(fhirsync_sync *s)
{
    pthread_mutex_lock(&s->lock);
    bool stop = s->stop;
    pthread_mutex_unlock(&s->lock);
    return stop || fs_cancel_requested();
}

bool fs_sync_add_counts(fhirsync_sync *s, const fs_sync_counts *c)
{
    pthread_mutex_lock(&s->lock);
    bool ok = fs_sync_counts_add(&s->counts, c);
    pthread_mutex_unlock(&s->lock);
    return ok;
}

/* ---- the run's end, and the workers' runs ---------------------------------------------------- */

char *fs_sync_endpoint_work_dir(const fhirsync_sync *s)
{
    return fs_sync_work_dir(fhirsync_store_location(s->store),
                            strcmp(fhirsync_store_engine_name(s->store), "postgresql") == 0,
                            s->opts.work_dir, s->name);
}

void fs_sync_finish_failed(fhirsync_sync *s, const char *why)
{
    if (s->run_id <= 0)
        return;
    fhirsync_store_rollback(s->store, NULL);
    int64_t loaded, deleted, quarantined;
    fs_sync_counts_totals(&s->counts, &loaded, &deleted, &quarantined);
    char *counts = fs_sync_counts_loaded_json(&s->counts);
    fs_store_run_end end = {.status = FHIRSYNC_RUN_FAILED,
                            .transaction_time = s->transaction_time,
                            .counts_json = counts,
                            .resources = loaded,
                            .deletions = deleted,
                            .quarantined = quarantined,
                            .error = why && *why ? why : "failed"};
    fhirsync_error ignored;
    if (fs_store_run_finish(s->store, s->run_id, &end, &ignored) != FHIRSYNC_OK)
        fs_log(FHIRSYNC_LOG_WARN, "sync %s: could not record the failed run: %s", s->name,
               ignored.message);
    fs_free(counts);
    s->status = FHIRSYNC_RUN_FAILED;
}

/* The running workers' runs among an endpoint's latest runs (collected first: the store cannot
 * run another query while it streams the runs). */
typedef struct running_runs {
    int64_t ids[20];
    size_t n;
} running_runs;

static int collect_running(const fhirsync_run_info *run, void *userdata)
{
    running_runs *r = userdata;
    if (run->status == FHIRSYNC_RUN_RUNNING && run->mode &&
        strncmp(run->mode, "bulk-worker", strlen("bulk-worker")) == 0 &&
        r->n < sizeof r->ids / sizeof r->ids[0])
        r->ids[r->n++] = run->id;
    return 0;
}

fhirsync_code fs_sync_worker_run_in_flight(fhirsync_store *store, const char *endpoint,
                                           int64_t *run_id, int64_t *files, fhirsync_error *err)
{
    *run_id = 0;
    if (files)
        *files = 0;
    running_runs runs = {.n = 0};
    fhirsync_code rc = fhirsync_store_runs(store, endpoint, 20, collect_running, &runs, err);
    for (size_t i = 0; rc == FHIRSYNC_OK && i < runs.n; i++) {
        char batch[512], final_batch[600];
        snprintf(batch, sizeof batch, "export/%s/%lld", endpoint, (long long)runs.ids[i]);
        snprintf(final_batch, sizeof final_batch, "%s/final", batch);
        fs_store_work_counts sum, fin;
        rc = fs_store_work_summary(store, batch, &sum, err);
        if (rc == FHIRSYNC_OK)
            rc = fs_store_work_summary(store, final_batch, &fin, err);
        if (rc == FHIRSYNC_OK && sum.pending + sum.claimed + fin.pending + fin.claimed > 0) {
            *run_id = runs.ids[i];
            if (files)
                *files = sum.pending + sum.claimed;
            break;
        }
    }
    return rc;
}
