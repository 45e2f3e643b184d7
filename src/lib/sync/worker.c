/* sync/worker.c: workers sharing syncs through the store's work queue (PostgreSQL across
 * machines; SQLite between processes of one machine). Items are claimed with a lease that a
 * heartbeat thread renews (on its own connection); a worker that dies stops renewing, and once
 * the lease has expired another worker claims the item again.
 *
 *   endpoint-sync   crawl endpoints: the worker runs the whole sync (fhirsync_sync_run).
 *                   Bulk endpoints: the worker coordinates one export. Holding the endpoint
 *                   lock, it checks that no export of the endpoint is still in flight, plans it
 *                   as bulk.c does (types, level, increment or full export: first run, --full,
 *                   --reconcile, every reconcile_every runs), starts a run ("bulk-worker", or
 *                   "bulk-worker-full"), kicks the export off and polls until the manifest, then
 *                   applies the deleted files itself (before any output is loaded, as in bulk
 *                   mode), and in ONE transaction queues a file-load item per output/error file
 *                   (batch "export/<endpoint>/<run>"), a finalising item, and completes its own
 *                   item. Killed before that commit, nothing was queued and the item is claimed
 *                   again (the export is kicked off anew; the server's old job expires).
 *   file-load       any worker downloads the file (fetch.c) and stores it in one transaction
 *                   with the item's completion: a worker killed mid-file leaves nothing behind,
 *                   and the item is loaded again by another.
 *   finalise        claimed after the files (items are claimed in id order); while files are
 *                   still pending or claimed it gives itself back for a second. Then, in one
 *                   transaction, it reconciles a complete full export (reconcile.c: rows of
 *                   earlier runs that the export did not return are gone), finishes the run
 *                   (counts from the rows this run stored), moves the watermark (plan.c's rule,
 *                   never backwards), and completes itself. Then it deletes the job on the
 *                   server.
 *
 * A file-load that keeps failing ends "failed" after its attempts: the run then fails and the
 * watermark stays, so the next sync exports those changes again. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config/config_internal.h"
#include "fhirsync/auth.h"
#include "fhirsync/client.h"
#include "json/json.h"
#include "store/store_internal.h"
#include "sync/sync_internal.h"

#define FILE_MAX_ATTEMPTS 10
#define FINALISE_MAX_ATTEMPTS 1000000
#define WAIT_RETRY_S 1

typedef struct worker {
    const fhirsync_config *cfg;
    fhirsync_worker_options opts;
    char id[300];
    fhirsync_store *store;    /* the work connection */
    fhirsync_store *hb_store; /* the heartbeat connection */
    fhirsync_sync_cb cb;
    void *cb_userdata;
    fhirsync_worker_stats stats;
    /* the heartbeat thread */
    pthread_t hb;
    bool hb_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool hb_stop;
    int64_t hb_item;
    bool lease_lost;
} worker;

/* ---- events ---------------------------------------------------------------------------------- */

static void emit(worker *w, fhirsync_sync_event *ev, const char *endpoint)
{
    ev->endpoint = endpoint;
    if (w->cb && w->cb(ev, w->cb_userdata) != 0)
        fhirsync_cancel();
}

static void note(worker *w, const char *endpoint, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void note(worker *w, const char *endpoint, const char *fmt, ...)
{
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fs_log(FHIRSYNC_LOG_INFO, "worker %s: %s", w->id, msg);
    fhirsync_sync_event ev = {.kind = FHIRSYNC_SYNC_EV_WARNING, .message = msg};
    emit(w, &ev, endpoint);
}

/* ---- heartbeats ------------------------------------------------------------------------------ */

static void *heartbeat_main(void *arg)
{
    worker *w = arg;
    int64_t period_ms = (int64_t)w->opts.lease_s * 1000 / 3;
    if (period_ms < 200)
        period_ms = 200;
    pthread_mutex_lock(&w->mu);
    while (!w->hb_stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += period_ms / 1000;
        until.tv_nsec += (period_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&w->cv, &w->mu, &until);
        if (w->hb_stop)
            break;
        int64_t item = w->hb_item;
        if (item <= 0)
            continue;
        pthread_mutex_unlock(&w->mu);
        fhirsync_error e;
        fhirsync_code rc = fs_store_work_heartbeat(w->hb_store, item, w->id, w->opts.lease_s, &e);
        pthread_mutex_lock(&w->mu);
        if (rc == FHIRSYNC_E_LOCKED && w->hb_item == item) {
            w->lease_lost = true;
            fs_log(FHIRSYNC_LOG_WARN, "worker %s: %s", w->id, e.message);
        } else if (rc != FHIRSYNC_OK) {
            fs_log(FHIRSYNC_LOG_WARN, "worker %s: heartbeat failed: %s", w->id, e.message);
        }
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void hold_item(worker *w, int64_t id)
{
    pthread_mutex_lock(&w->mu);
    w->hb_item = id;
    w->lease_lost = false;
    pthread_mutex_unlock(&w->mu);
}

/* ---- helpers --------------------------------------------------------------------------------- */

/* Give an item back: transient failures are retried after `retry_s`, the others fail for good. */
static void give_back(worker *w, const fs_store_work_item *item, fhirsync_code rc, const char *why,
                      int retry_s)
{
    fhirsync_error e;
    fhirsync_store_rollback(w->store, NULL);
    bool permanent = rc == FHIRSYNC_E_FORBIDDEN || rc == FHIRSYNC_E_CONFIG ||
                     rc == FHIRSYNC_E_KEY || rc == FHIRSYNC_E_ARG;
    if (fs_store_work_fail(w->store, item->id, w->id, why, permanent ? -1 : retry_s, &e) !=
        FHIRSYNC_OK)
        fs_log(FHIRSYNC_LOG_WARN, "worker %s: could not give item %lld back: %s", w->id,
               (long long)item->id, e.message);
    w->stats.items_failed++;
}

static fhirsync_code complete(worker *w, const fs_store_work_item *item, const char *result,
                              fhirsync_error *err)
{
    fhirsync_code rc = fs_store_work_complete(w->store, item->id, w->id, result, err);
    if (rc == FHIRSYNC_OK)
        w->stats.items_done++;
    return rc;
}

/* ---- file loads ------------------------------------------------------------------------------ */

static void process_file(worker *w, const fs_store_work_item *item, const fhirsync_endpoint *ep,
                         json_t *payload)
{
    fhirsync_error err;
    fs_err_clear(&err);
    const char *url = fs_json_str(payload, "url");
    const char *type = fs_json_str(payload, "type");
    const char *name = fs_json_str(payload, "name");
    const char *kind_name = fs_json_str(payload, "kind");
    int64_t run_id = 0;
    fs_json_int(payload, "run_id", &run_id);
    bool requires_token = true, append = false;
    fs_json_bool(payload, "requires_token", &requires_token);
    /* a first full load appends on the item's first claim; a claim after a conflict (stored ids:
     * FHIRSYNC_E_CONFLICT gives the item back), or after a worker died, merges */
    fs_json_bool(payload, "append", &append);
    append = append && item->attempts <= 1;
    fhirsync_export_file_kind kind = fs_streq(kind_name, "error")     ? FHIRSYNC_EXPORT_ERROR
                                     : fs_streq(kind_name, "deleted") ? FHIRSYNC_EXPORT_DELETED
                                                                      : FHIRSYNC_EXPORT_OUTPUT;
    if (!url || !type || !name) {
        give_back(w, item, FHIRSYNC_E_ARG, "a file-load item without url, type or name", -1);
        return;
    }
    fhirsync_auth *auth = NULL;
    fs_sync_counts counts;
    fs_sync_counts_init(&counts);
    fhirsync_code rc = requires_token ? fhirsync_auth_new(ep, &auth, &err) : FHIRSYNC_OK;
    if (rc == FHIRSYNC_OK && kind == FHIRSYNC_EXPORT_OUTPUT)
        rc = fhirsync_store_ensure_type(w->store, type, &err);
    if (rc == FHIRSYNC_OK)
        rc = fhirsync_store_begin(w->store,
                                  kind == FHIRSYNC_EXPORT_OUTPUT
                                      ? FHIRSYNC_STORE_BULK | (append ? FHIRSYNC_STORE_APPEND : 0)
                                      : 0,
                                  &err);
    fs_sync_file file = {.kind = kind,
                         .type = type,
                         .name = name,
                         .source = url,
                         .transaction_time = fs_json_str(payload, "transaction_time"),
                         .run_id = run_id};
    fs_sync_loader ld = {.store = w->store,
                         .file = &file,
                         .counts = &counts,
                         .endpoint = item->endpoint,
                         .err = &err,
                         .rc = FHIRSYNC_OK};
    if (rc == FHIRSYNC_OK)
        rc = fs_sync_fetch_lines(ep, auth, url, requires_token, &ld, &err);
    int64_t loaded = 0, deleted = 0, quarantined = 0;
    fs_sync_counts_totals(&counts, &loaded, &deleted, &quarantined);
    char result[256];
    snprintf(result, sizeof result,
             "{\"loaded\":%lld,\"deleted\":%lld,\"quarantined\":%lld,\"server_errors\":%lld}",
             (long long)loaded, (long long)deleted, (long long)quarantined,
             (long long)counts.server_errors);
    if (rc == FHIRSYNC_OK) {
        /* the file's rows and its completion commit together */
        rc = complete(w, item, result, &err);
        if (rc == FHIRSYNC_OK)
            rc = fhirsync_store_commit(w->store, &err);
        else
            fhirsync_store_rollback(w->store, NULL);
        if (rc == FHIRSYNC_OK) {
            w->stats.resources += loaded;
            fhirsync_sync_event ev = {.kind = FHIRSYNC_SYNC_EV_LOADED,
                                      .name = name,
                                      .type = kind == FHIRSYNC_EXPORT_OUTPUT ? type : NULL,
                                      .count = loaded,
                                      .deleted = deleted,
                                      .quarantined = quarantined,
                                      .resources = w->stats.resources};
            emit(w, &ev, item->endpoint);
        } else if (rc == FHIRSYNC_E_LOCKED) {
            note(w, item->endpoint, "lost the lease of %s: another worker loads it", name);
        }
    }
    if (rc == FHIRSYNC_E_CONFLICT) {
        /* stored ids met by an append, or a deadlock: the next claim (at once) merges */
        note(w, item->endpoint, "%s: %s; loading it again%s", name, err.message,
             append ? " as merges" : "");
        give_back(w, item, rc, err.message, 0);
    } else if (rc != FHIRSYNC_OK && rc != FHIRSYNC_E_LOCKED) {
        note(w, item->endpoint, "%s: %s (given back)", name, err.message);
        give_back(w, item, rc == FHIRSYNC_E_NOT_FOUND ? FHIRSYNC_E_FORBIDDEN : rc, err.message, 5);
    }
    fhirsync_store_rollback(w->store, NULL);
    fs_sync_counts_clear(&counts);
    fhirsync_auth_free(auth);
}

/* ---- finalisation ---------------------------------------------------------------------------- */

/* What the done file items of a run's batch say: server errors, and quarantined lines per type
 * (an output file's lines are of its type). */
typedef struct result_sum {
    int64_t server_errors;
    fs_sync_counts quarantined;
    bool nomem;
} result_sum;

static int sum_results(void *userdata, const char *payload_text, const char *result_text)
{
    result_sum *r = userdata;
    if (!result_text)
        return 0;
    fhirsync_error e;
    json_t *result = fs_json_parse(result_text, strlen(result_text), true, "work result", &e);
    json_t *payload = fs_json_parse(payload_text, strlen(payload_text), true, "work payload", &e);
    int64_t n = 0;
    if (result && fs_json_int(result, "server_errors", &n))
        r->server_errors += n;
    const char *type = fs_json_str(payload, "type");
    if (result && fs_json_int(result, "quarantined", &n) && n > 0) {
        fs_sync_count *c = fs_sync_counts_at(&r->quarantined, type ? type : "Bundle");
        if (c)
            c->quarantined += n;
        else
            r->nomem = true;
    }
    json_decref(result);
    json_decref(payload);
    return r->nomem ? 1 : 0;
}

/* Counts of what run `run_id` stored, per type of `types` (a JSON array), into c. */
static fhirsync_code run_counts(worker *w, int64_t run_id, json_t *types, fs_sync_counts *c,
                                fhirsync_error *err)
{
    fhirsync_code rc = FHIRSYNC_OK;
    for (size_t i = 0; rc == FHIRSYNC_OK && i < json_array_size(types); i++) {
        const char *type = json_string_value(json_array_get(types, i));
        int64_t n = 0;
        if (type)
            rc = fs_store_run_rows(w->store, type, run_id, &n, err);
        fs_sync_count *e = rc == FHIRSYNC_OK && n > 0 ? fs_sync_counts_at(c, type) : NULL;
        if (e)
            e->loaded = n;
        else if (rc == FHIRSYNC_OK && n > 0)
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    return rc;
}

/* The reconciliation's warnings and deletions, as the finalising worker's events. */
typedef struct finalise_ctx {
    worker *w;
    const char *endpoint;
    fs_sync_counts *counts;
} finalise_ctx;

static void finalise_warn(void *userdata, const char *message)
{
    finalise_ctx *f = userdata;
    note(f->w, f->endpoint, "%s", message);
}

static bool finalise_deleted(void *userdata, const char *type, int64_t rows)
{
    finalise_ctx *f = userdata;
    fs_sync_count *c = fs_sync_counts_at(f->counts, type);
    if (c)
        c->deleted += rows;
    fhirsync_sync_event ev = {.kind = FHIRSYNC_SYNC_EV_LOADED,
                              .name = "reconciliation",
                              .type = type,
                              .deleted = rows,
                              .message = "not in the full export: gone on the server"};
    emit(f->w, &ev, f->endpoint);
    return c != NULL;
}

static fhirsync_export_level level_from_name(const char *name)
{
    return fs_streq(name, "group")     ? FHIRSYNC_EXPORT_GROUP
           : fs_streq(name, "patient") ? FHIRSYNC_EXPORT_PATIENT
                                       : FHIRSYNC_EXPORT_SYSTEM;
}

/* The reconciliation of a complete full export (the finalise payload says "full"), inside the
 * transaction that ends the run. `results`: what the file items said. `why` names refused types. */
static fhirsync_code finalise_reconcile(worker *w, const fs_store_work_item *item, json_t *payload,
                                        int64_t run_id, const result_sum *results,
                                        fs_sync_counts *counts, int64_t *reconciled, fs_buf *why,
                                        fhirsync_error *err)
{
    *reconciled = 0;
    if (results->server_errors > 0) {
        note(w, item->endpoint,
             "deletions are not reconciled: the export is incomplete (the server reported "
             "errors)");
        return FHIRSYNC_OK;
    }
    fs_buf exported;
    fs_buf_init(&exported);
    json_t *types = json_object_get(payload, "types");
    bool ok = fs_buf_append(&exported, "", 0);
    for (size_t i = 0; ok && i < json_array_size(types); i++)
        ok = fs_sync_list_add(&exported, json_string_value(json_array_get(types, i)));
    const char *kickoff = fs_json_str(payload, "kickoff_time");
    int64_t share = 0, runs = 0, listed = 0;
    bool force = false;
    fs_json_int(payload, "max_delete_share", &share);
    fs_json_bool(payload, "allow_mass_delete", &force);
    fs_json_int(payload, "incremental_runs", &runs);
    fs_json_int(payload, "listed_deletions", &listed);
    finalise_ctx fc = {w, item->endpoint, counts};
    fs_sync_reconcile_req r = {.store = w->store,
                               .endpoint = item->endpoint,
                               .level = level_from_name(fs_json_str(payload, "level")),
                               .requested = fs_json_str(payload, "requested"),
                               .exported = exported.data,
                               .counts = &results->quarantined,
                               .first_run = run_id, /* every file item stamps its rows with it */
                               .run_id = run_id,
                               .deleted_at =
                                   kickoff ? kickoff : fs_json_str(payload, "transaction_time"),
                               .max_share = share > 0 && share <= 100 ? (int)share : 50,
                               .force = force,
                               .incremental_runs = (int)runs,
                               .listed_deletions = listed,
                               .warn = finalise_warn,
                               .deleted = finalise_deleted,
                               .userdata = &fc};
    fhirsync_code rc = ok ? fs_sync_reconcile(&r, reconciled, why, err)
                          : fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    fs_buf_free(&exported);
    return rc;
}

static void process_finalise(worker *w, const fs_store_work_item *item, const fhirsync_endpoint *ep,
                             json_t *payload)
{
    fhirsync_error err;
    fs_err_clear(&err);
    const char *files_batch = fs_json_str(payload, "files_batch");
    const char *tt = fs_json_str(payload, "transaction_time");
    const char *status_url = fs_json_str(payload, "status_url");
    int64_t run_id = 0;
    fs_json_int(payload, "run_id", &run_id);
    bool full = false;
    fs_json_bool(payload, "full", &full);
    fs_store_work_counts sum;
    fhirsync_code rc = files_batch ? fs_store_work_summary(w->store, files_batch, &sum, &err)
                                   : fs_err(&err, FHIRSYNC_E_ARG, "no files batch");
    if (rc != FHIRSYNC_OK) {
        give_back(w, item, rc, err.message, 5);
        return;
    }
    if (sum.pending + sum.claimed > 0) {
        char why[128];
        snprintf(why, sizeof why, "waiting for %lld file(s)",
                 (long long)(sum.pending + sum.claimed));
        fs_store_work_fail(w->store, item->id, w->id, why, WAIT_RETRY_S, &err);
        return;
    }
    fs_sync_counts counts;
    fs_sync_counts_init(&counts);
    char *current = NULL, *counts_json = NULL;
    int64_t deleted = 0, quarantined = 0, reconciled = 0;
    result_sum results = {0};
    fs_sync_counts_init(&results.quarantined);
    fs_buf refused;
    fs_buf_init(&refused);
    rc = run_counts(w, run_id, json_object_get(payload, "types"), &counts, &err);
    if (rc == FHIRSYNC_OK)
        rc = fs_store_run_tally(w->store, run_id, &deleted, &quarantined, &err);
    if (rc == FHIRSYNC_OK)
        rc = fs_store_work_results(w->store, files_batch, sum_results, &results, &err);
    if (rc == FHIRSYNC_OK && results.nomem)
        rc = fs_err(&err, FHIRSYNC_E_NOMEM, "out of memory");
    if (rc == FHIRSYNC_OK)
        rc = fhirsync_store_watermark(w->store, item->endpoint, &current, &err);
    if (rc == FHIRSYNC_OK && !(counts_json = fs_sync_counts_loaded_json(&counts)))
        rc = fs_err(&err, FHIRSYNC_E_NOMEM, "out of memory");
    /* the run's end, the reconciliation, the watermark and this item's completion: one
     * transaction (run_finish commits it) */
    if (rc == FHIRSYNC_OK)
        rc = fhirsync_store_begin(w->store, 0, &err);
    if (rc == FHIRSYNC_OK && full && sum.failed == 0)
        rc = finalise_reconcile(w, item, payload, run_id, &results, &counts, &reconciled, &refused,
                                &err);
    int64_t loaded = 0;
    fs_sync_counts_totals(&counts, &loaded, NULL, NULL);
    char why[512] = "", mark[64];
    fs_store_run_end end = {.status = FHIRSYNC_RUN_OK,
                            .transaction_time = tt,
                            .counts_json = counts_json,
                            .resources = loaded,
                            .deletions = deleted + reconciled,
                            .quarantined = quarantined};
    if (sum.failed > 0) {
        end.status = FHIRSYNC_RUN_FAILED;
        snprintf(why, sizeof why, "%lld file(s) could not be loaded (see work_items)",
                 (long long)sum.failed);
        if (full)
            note(w, item->endpoint, "deletions are not reconciled: the export is incomplete");
    } else {
        if (quarantined > 0 || results.server_errors > 0 || refused.len > 0) {
            end.status = FHIRSYNC_RUN_PARTIAL;
            if (quarantined > 0 || results.server_errors > 0)
                snprintf(why, sizeof why, "%lld line(s) quarantined, %lld server error(s)%s%s",
                         (long long)quarantined, (long long)results.server_errors,
                         refused.len ? "; " : "", refused.len ? refused.data : "");
            else
                snprintf(why, sizeof why, "%s", refused.data);
        }
        /* the earlier of transactionTime and the kick-off minus the margin (docs/sync.md);
         * never backwards: a later export of the endpoint may have finished first */
        int margin =
            w->opts.sync.skew_margin_s ? w->opts.sync.skew_margin_s : FS_SYNC_DEFAULT_SKEW_MARGIN_S;
        if (fs_sync_bulk_watermark(tt, fs_json_str(payload, "kickoff_time"), margin, mark,
                                   sizeof mark) &&
            fs_sync_instant_later(mark, current))
            end.new_watermark = mark;
    }
    end.error = why[0] ? why : NULL;
    char result[300];
    snprintf(result, sizeof result,
             "{\"run_id\":%lld,\"resources\":%lld,\"reconciled\":%lld,\"status\":\"%s\"}",
             (long long)run_id, (long long)loaded, (long long)reconciled,
             fhirsync_run_status_name(end.status));
    if (rc == FHIRSYNC_OK) {
        rc = complete(w, item, result, &err);
        /* run_finish is the batch's final commit: run end, watermark and completion together */
        if (rc == FHIRSYNC_OK)
            rc = fs_store_run_finish(w->store, run_id, &end, &err);
        else
            fhirsync_store_rollback(w->store, NULL);
        if (rc == FHIRSYNC_E_ARG) {
            /* the run was closed elsewhere (a plain `fhirsync sync` of the endpoint marked it
             * interrupted): the data is stored, only the watermark does not move (nor is anything
             * reconciled: that rolled back with the run's end) */
            note(w, item->endpoint, "run %lld was closed by another process: %s", (long long)run_id,
                 err.message);
            fhirsync_store_rollback(w->store, NULL);
            reconciled = 0;
            rc = complete(w, item, result, &err);
        }
    }
    if (rc == FHIRSYNC_OK) {
        note(w, item->endpoint, "export of run %lld finalised: %lld resources, %s%s%s",
             (long long)run_id, (long long)loaded, fhirsync_run_status_name(end.status),
             end.new_watermark ? ", watermark " : "", end.new_watermark ? end.new_watermark : "");
        if (reconciled > 0)
            note(w, item->endpoint,
                 "run %lld reconciled %lld resource(s) gone on the server (not in the full "
                 "export)",
                 (long long)run_id, (long long)reconciled);
        if (status_url && fs_endpoint_bool(ep, "delete_job")) {
            fhirsync_client *client = NULL;
            fhirsync_response *resp = NULL;
            fhirsync_error ignored;
            if (fhirsync_client_new(ep, &client, &ignored) == FHIRSYNC_OK &&
                fhirsync_client_request(client, "DELETE", status_url, NULL, NULL, 0, true, &resp) !=
                    FHIRSYNC_OK)
                fs_log(FHIRSYNC_LOG_INFO, "worker %s: could not delete the job %s: %s", w->id,
                       status_url, fhirsync_client_errmsg(client));
            fhirsync_response_free(resp);
            fhirsync_client_free(client);
        }
    } else if (rc != FHIRSYNC_E_LOCKED) {
        give_back(w, item, rc, err.message, 5);
    }
    fs_buf_free(&refused);
    fs_free(current);
    fs_free(counts_json);
    fs_sync_counts_clear(&results.quarantined);
    fs_sync_counts_clear(&counts);
}

/* ---- coordinating a bulk export -------------------------------------------------------------- */

typedef struct coord {
    worker *w;
    const char *endpoint;
} coord;

static int stop_at_manifest(const fhirsync_export_event *ev, void *userdata)
{
    coord *c = userdata;
    fhirsync_sync_event sev = {.kind = FHIRSYNC_SYNC_EV_EXPORT, .export_event = ev};
    emit(c->w, &sev, c->endpoint);
    return ev->kind == FHIRSYNC_EXPORT_EV_MANIFEST ? 1 : 0;
}

/* Queue a file-load item per output and error file, and the finalising item (its payload gets
 * the fields of `finalise_plan`). `append`: a first full load, whose rows are expected to be new
 * (each item's first claim appends; see process_file). */
static fhirsync_code queue_files(worker *w, const fs_store_work_item *item, fhirsync_export *ex,
                                 int64_t run_id, const char *batch, bool append,
                                 json_t *finalise_plan, size_t *nfiles, fhirsync_error *err)
{
    char final_batch[600], key[1200];
    snprintf(final_batch, sizeof final_batch, "%s/final", batch);
    json_t *types = json_array();
    fhirsync_code rc = types ? FHIRSYNC_OK : fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    const char *tt = fhirsync_export_transaction_time(ex);
    *nfiles = 0;
    for (size_t i = 0; rc == FHIRSYNC_OK && i < fhirsync_export_file_count(ex); i++) {
        const fhirsync_export_file *f = fhirsync_export_file_at(ex, i);
        if (f->kind == FHIRSYNC_EXPORT_DELETED)
            continue; /* applied by the coordinator already */
        json_t *payload =
            json_pack("{s:I, s:s, s:s, s:s, s:s, s:b, s:s?, s:b}", "run_id", (json_int_t)run_id,
                      "url", f->url, "type", f->type, "name", f->name, "kind",
                      fhirsync_export_file_kind_name(f->kind), "requires_token",
                      fhirsync_export_requires_token(ex), "transaction_time", tt, "append", append);
        char *text = payload ? fs_json_dump(payload) : NULL;
        json_decref(payload);
        if (!text) {
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
            break;
        }
        snprintf(key, sizeof key, "%s/%s", batch, f->name);
        fs_store_work_spec spec = {.kind = FS_STORE_WORK_FILE_LOAD,
                                   .endpoint = item->endpoint,
                                   .batch = batch,
                                   .key = key,
                                   .payload = text,
                                   .max_attempts = FILE_MAX_ATTEMPTS};
        rc = fs_store_work_enqueue(w->store, &spec, NULL, err);
        fs_free(text);
        if (rc == FHIRSYNC_OK && f->kind == FHIRSYNC_EXPORT_OUTPUT)
            json_array_append_new(types, json_string(f->type));
        (*nfiles)++;
    }
    json_t *fin =
        rc == FHIRSYNC_OK
            ? json_pack("{s:b, s:I, s:s?, s:s?, s:s?, s:s, s:O}", "finalise", 1, "run_id",
                        (json_int_t)run_id, "transaction_time", tt, "kickoff_time",
                        fhirsync_export_kickoff_time(ex), "status_url",
                        fhirsync_export_status_url(ex), "files_batch", batch, "types", types)
            : NULL;
    if (fin && finalise_plan && json_object_update(fin, finalise_plan) != 0) {
        json_decref(fin);
        fin = NULL;
    }
    char *text = fin ? fs_json_dump(fin) : NULL;
    if (rc == FHIRSYNC_OK && !text)
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    if (rc == FHIRSYNC_OK) {
        snprintf(key, sizeof key, "%s/finalise", batch);
        fs_store_work_spec spec = {.kind = FS_STORE_WORK_FILE_LOAD,
                                   .endpoint = item->endpoint,
                                   .batch = final_batch,
                                   .key = key,
                                   .payload = text,
                                   .max_attempts = FINALISE_MAX_ATTEMPTS};
        rc = fs_store_work_enqueue(w->store, &spec, NULL, err);
    }
    fs_free(text);
    json_decref(fin);
    json_decref(types);
    return rc;
}

/* Apply the deleted files of the export (each in its own transaction; idempotent). */
static fhirsync_code apply_deleted(worker *w, const fs_store_work_item *item,
                                   const fhirsync_endpoint *ep, fhirsync_export *ex, int64_t run_id,
                                   fhirsync_error *err)
{
    fhirsync_auth *auth = NULL;
    fhirsync_code rc = FHIRSYNC_OK;
    for (size_t i = 0; rc == FHIRSYNC_OK && i < fhirsync_export_file_count(ex); i++) {
        const fhirsync_export_file *f = fhirsync_export_file_at(ex, i);
        if (f->kind != FHIRSYNC_EXPORT_DELETED)
            continue;
        if (!auth && (rc = fhirsync_auth_new(ep, &auth, err)) != FHIRSYNC_OK)
            break;
        fs_sync_counts counts;
        fs_sync_counts_init(&counts);
        fs_sync_file file = {.kind = FHIRSYNC_EXPORT_DELETED,
                             .type = f->type,
                             .name = f->name,
                             .source = f->url,
                             .transaction_time = fhirsync_export_transaction_time(ex),
                             .run_id = run_id};
        fs_sync_loader ld = {.store = w->store,
                             .file = &file,
                             .counts = &counts,
                             .endpoint = item->endpoint,
                             .err = err,
                             .rc = FHIRSYNC_OK};
        rc = fhirsync_store_begin(w->store, 0, err);
        if (rc == FHIRSYNC_OK)
            rc =
                fs_sync_fetch_lines(ep, auth, f->url, fhirsync_export_requires_token(ex), &ld, err);
        if (rc == FHIRSYNC_OK)
            rc = fhirsync_store_commit(w->store, err);
        else
            fhirsync_store_rollback(w->store, NULL);
        int64_t deleted = 0;
        fs_sync_counts_totals(&counts, NULL, &deleted, NULL);
        if (rc == FHIRSYNC_OK) {
            fhirsync_sync_event ev = {
                .kind = FHIRSYNC_SYNC_EV_LOADED, .name = f->name, .deleted = deleted};
            emit(w, &ev, item->endpoint);
        }
        fs_sync_counts_clear(&counts);
    }
    fhirsync_auth_free(auth);
    return rc;
}

/* The endpoint's bulk runs since its last full export, newest first (workers' and plain ones):
 * how many incremental runs, and how many deletions their deleted files listed. Failed and
 * killed runs do not count, so a coordinator claimed again plans the same request. */
typedef struct run_tally {
    int incremental_runs;
    int64_t listed_deletions;
} run_tally;

static int tally_run(const fhirsync_run_info *run, void *userdata)
{
    run_tally *t = userdata;
    if (run->status != FHIRSYNC_RUN_OK && run->status != FHIRSYNC_RUN_PARTIAL)
        return 0;
    if (fs_streq(run->mode, "bulk-worker-full") || fs_streq(run->mode, "bulk-full"))
        return 1;
    if (fs_streq(run->mode, "bulk-worker") || fs_streq(run->mode, "bulk")) {
        t->incremental_runs++;
        t->listed_deletions += run->deletions;
    }
    return 0;
}

/* Whether this export is a full one that reconciles (the rules of bulk.c's plan_full): no
 * `since` (a first run, --full), asked for (--reconcile), or reconcile_every - 1 incremental runs
 * since the last full one. A `since` setting is the user's increment: only --full overrides it.
 * Clears *since when the export is full. */
static fhirsync_code plan_full(worker *w, const fhirsync_endpoint *ep, const char *name,
                               char **since, bool *full, run_tally *tally, fhirsync_error *err)
{
    const char *setting = fhirsync_endpoint_get(ep, "since");
    int every = fs_sync_reconcile_every(&w->opts.sync, ep);
    fhirsync_code rc = FHIRSYNC_OK;
    if (*since)
        rc = fhirsync_store_runs(w->store, name, every > 0 ? (size_t)every : 100, tally_run, tally,
                                 err);
    if (rc != FHIRSYNC_OK)
        return rc;
    bool due = !(setting && *setting) && fs_sync_reconcile_due(false, false, w->opts.sync.reconcile,
                                                               every, tally->incremental_runs);
    *full = !*since || due;
    if (*full && *since) {
        fs_log(FHIRSYNC_LOG_INFO,
               "worker %s: %s: a full export this time, to find deletions (%d incremental run(s) "
               "since the last one; reconcile_every %d)",
               w->id, name, tally->incremental_runs, every);
        fs_free(*since);
        *since = NULL;
    }
    return FHIRSYNC_OK;
}

/* Types of the manifest's output files that were not asked for: stored, never reconciled, one
 * warning each. */
static void warn_unrequested(worker *w, const char *name, fhirsync_export *ex,
                             const char *requested)
{
    if (!requested)
        return;
    fs_buf seen;
    fs_buf_init(&seen);
    if (!fs_buf_append(&seen, "", 0))
        return;
    for (size_t i = 0; i < fhirsync_export_file_count(ex); i++) {
        const fhirsync_export_file *f = fhirsync_export_file_at(ex, i);
        if (f->kind != FHIRSYNC_EXPORT_OUTPUT || fs_sync_list_has(requested, f->type) ||
            fs_sync_list_has(seen.data, f->type))
            continue;
        if (!fs_sync_list_add(&seen, f->type))
            break;
        note(w, name,
             "the server returned %s, which was not asked for (_type=%s): stored, but never "
             "reconciled (a later export may not return it)",
             f->type, requested);
    }
    fs_buf_free(&seen);
}

/* Coordinate one bulk sync: plan it (types, level, increment or full export, as bulk.c), kick
 * the export off, apply its deleted files and queue the rest for the workers. */
static fhirsync_code coordinate(worker *w, const fs_store_work_item *item,
                                const fhirsync_endpoint *ep)
{
    fhirsync_error err;
    fs_err_clear(&err);
    fhirsync_store *store = w->store;
    const char *name = item->endpoint;
    char *since = NULL, *types = NULL, *compartment = NULL, *left_out = NULL, *workdir = NULL,
         *dir = NULL;
    fhirsync_endpoint *ep2 = NULL;
    fhirsync_export *ex = NULL;
    json_t *plan = NULL;
    int64_t run_id = 0;
    bool locked = false, full = false, append = false;
    run_tally tally = {0, 0};
    bool types_set = fhirsync_endpoint_get(ep, "types") != NULL;
    const char *requested = NULL;
    fhirsync_export_level level = FHIRSYNC_EXPORT_SYSTEM;
    fhirsync_code rc = fs_store_lock_endpoint(store, name, w->id, 0, &err);
    if (rc != FHIRSYNC_OK) {
        note(w, name, "%s; trying again later", err.message);
        give_back(w, item, FHIRSYNC_E_LOCKED, err.message, 30);
        return rc;
    }
    locked = true;
    rc = fs_store_bind_endpoint(store, name, fhirsync_endpoint_get(ep, "base_url"),
                                fs_endpoint_bool(ep, "shared_store"), &err);
    /* an export of this endpoint whose files are still being loaded: this sync is not needed */
    int64_t in_flight = 0;
    if (rc == FHIRSYNC_OK)
        rc = fs_sync_worker_run_in_flight(store, name, &in_flight, NULL, &err);
    if (rc == FHIRSYNC_OK && in_flight) {
        note(w, name, "an export of %s is still being loaded; skipping this sync", name);
        rc = complete(w, item, "{\"skipped\":\"an export is in flight\"}", &err);
        goto out;
    }
    const char *since_setting = fhirsync_endpoint_get(ep, "since");
    if (rc == FHIRSYNC_OK) {
        if (w->opts.sync.full)
            since = NULL;
        else if (since_setting && *since_setting)
            rc = (since = fs_strdup(since_setting)) ? FHIRSYNC_OK
                                                    : fs_err(&err, FHIRSYNC_E_NOMEM, "no memory");
        else
            rc = fhirsync_store_watermark(store, name, &since, &err);
    }
    /* a first full load: the rows are new (a periodic full export merges) */
    append = !since && !w->opts.sync.full;
    if (rc == FHIRSYNC_OK)
        rc = plan_full(w, ep, name, &since, &full, &tally, &err);
    if (rc == FHIRSYNC_OK)
        rc = fs_sync_plan_bulk_types(ep, &types, &left_out, &err);
    if (rc == FHIRSYNC_OK && types && !types_set &&
        !(compartment = fs_sync_compartment_types(types)))
        rc = fs_err(&err, FHIRSYNC_E_NOMEM, "out of memory");
    if (rc == FHIRSYNC_OK) {
        workdir = fs_sync_work_dir(fhirsync_store_location(store),
                                   strcmp(fhirsync_store_engine_name(store), "postgresql") == 0,
                                   w->opts.sync.work_dir, name);
        fs_buf b;
        fs_buf_init(&b);
        if (workdir && fs_buf_printf(&b, "%s/coordinator-%lld", workdir, (long long)item->id))
            dir = fs_buf_steal(&b);
        else
            fs_buf_free(&b);
        if (!dir)
            rc = fs_err(&err, FHIRSYNC_E_NOMEM, "out of memory");
        else
            fs_sync_rmtree(dir);
    }
    if (rc == FHIRSYNC_OK)
        rc = fs_store_run_begin(store, name, full ? "bulk-worker-full" : "bulk-worker", since,
                                &run_id, &err);
    if (rc != FHIRSYNC_OK)
        goto fail;
    if (left_out)
        note(w, name, "types: %s", left_out);
    const char *group = fhirsync_endpoint_get(ep, "group_id");
    fhirsync_export_level chain[3];
    size_t nlevels = fs_sync_level_chain(group && *group, chain);
    for (size_t li = 0; li < nlevels; li++) {
        fhirsync_endpoint_free(ep2);
        fhirsync_export_free(ex);
        ex = NULL;
        if (!(ep2 = fhirsync_endpoint_dup(ep))) {
            rc = fs_err(&err, FHIRSYNC_E_NOMEM, "out of memory");
            break;
        }
        fhirsync_endpoint_clear(ep2, "since");
        fhirsync_endpoint_clear(ep2, "types");
        if (chain[li] == FHIRSYNC_EXPORT_GROUP && fs_streq(fs_endpoint_vendor(ep), FS_VENDOR_ECW)) {
            char *scope = fs_sync_scope_with_group(fhirsync_endpoint_get(ep, "scope"));
            rc = scope ? fhirsync_endpoint_set(ep2, "scope", scope, "sync (eClinicalWorks)", &err)
                       : fs_err(&err, FHIRSYNC_E_NOMEM, "out of memory");
            fs_free(scope);
            if (rc != FHIRSYNC_OK)
                break;
        }
        /* as in bulk.c: the setting as given; else every type (no _type) when the scopes read
         * every type, or what the scopes name, restricted to what the level can return */
        level = chain[li];
        requested = level == FHIRSYNC_EXPORT_SYSTEM || types_set ? types : compartment;
        char what[700];
        snprintf(
            what, sizeof what, "bulk export (workers, run %lld) at %s level%s%s%s, %s, types %s",
            (long long)run_id, fs_sync_level_name(level),
            level == FHIRSYNC_EXPORT_GROUP ? " (Group/" : "",
            level == FHIRSYNC_EXPORT_GROUP ? group : "", level == FHIRSYNC_EXPORT_GROUP ? ")" : "",
            since  ? "changes since the watermark"
            : full ? "everything, then deletions reconciled"
                   : "everything",
            requested ? requested : "all (no _type)");
        fs_log(FHIRSYNC_LOG_INFO, "worker %s: %s", w->id, what);
        fhirsync_sync_event pev = {.kind = FHIRSYNC_SYNC_EV_PLAN, .message = what};
        emit(w, &pev, name);
        fhirsync_export_options eo;
        fhirsync_export_options_init(&eo, FHIRSYNC_EXPORT_OPTIONS_VERSION);
        eo.level = level;
        eo.group_id = level == FHIRSYNC_EXPORT_GROUP ? group : NULL;
        eo.types = requested;
        eo.since = since;
        eo.delete_job = 0; /* the finalising item deletes it once every file is loaded */
        eo.out_dir = dir;
        fs_sync_rmtree(dir);
        rc = fhirsync_export_new(ep2, &eo, &ex, &err);
        if (rc != FHIRSYNC_OK)
            break;
        coord cc = {w, name};
        fhirsync_export_set_callback(ex, stop_at_manifest, &cc);
        rc = fhirsync_export_run(ex);
        if (rc == FHIRSYNC_E_CANCELLED && fhirsync_export_transaction_time(ex)) {
            rc = FHIRSYNC_OK; /* stopped at the manifest, as asked */
            break;
        }
        if (rc == FHIRSYNC_OK || rc == FHIRSYNC_E_PARTIAL)
            break; /* an export with no files at all: nothing was stopped */
        fs_err(&err, rc, "%s", fhirsync_export_errmsg(ex));
        if (li + 1 < nlevels &&
            fs_sync_level_refused(rc, 0, err.message, fhirsync_export_status_url(ex) != NULL)) {
            note(w, name, "the server refused a %s-level export (%s); falling back to %s level",
                 fs_sync_level_name(chain[li]), err.message, fs_sync_level_name(chain[li + 1]));
            continue;
        }
        break;
    }
    if (rc != FHIRSYNC_OK)
        goto fail;
    warn_unrequested(w, name, ex, requested);
    rc = apply_deleted(w, item, ep2, ex, run_id, &err);
    if (rc != FHIRSYNC_OK)
        goto fail;
    /* what the finalising item needs to reconcile a full export the way this worker planned it
     * (whichever worker finalises) */
    plan = json_pack("{s:b, s:s, s:s?, s:i, s:b, s:i, s:I}", "full", full, "level",
                     fs_sync_level_name(level), "requested", requested, "max_delete_share",
                     fs_sync_max_delete_share(&w->opts.sync, ep), "allow_mass_delete",
                     w->opts.sync.allow_mass_delete, "incremental_runs", tally.incremental_runs,
                     "listed_deletions", (json_int_t)tally.listed_deletions);
    if (!plan) {
        rc = fs_err(&err, FHIRSYNC_E_NOMEM, "out of memory");
        goto fail;
    }
    {
        char batch[512];
        snprintf(batch, sizeof batch, "export/%s/%lld", name, (long long)run_id);
        size_t nfiles = 0;
        char result[700];
        rc = fhirsync_store_begin(store, 0, &err);
        if (rc == FHIRSYNC_OK)
            rc = queue_files(w, item, ex, run_id, batch, append, plan, &nfiles, &err);
        snprintf(result, sizeof result, "{\"run_id\":%lld,\"files\":%zu,\"full\":%s}",
                 (long long)run_id, nfiles, full ? "true" : "false");
        /* the files, the finalising item and this item's completion: one transaction */
        if (rc == FHIRSYNC_OK)
            rc = complete(w, item, result, &err);
        if (rc == FHIRSYNC_OK)
            rc = fhirsync_store_commit(store, &err);
        else
            fhirsync_store_rollback(store, NULL);
        if (rc == FHIRSYNC_OK)
            note(w, name,
                 "export of run %lld queued: %zu file(s) for the workers, transaction "
                 "time %s",
                 (long long)run_id, nfiles, fhirsync_export_transaction_time(ex));
    }
    if (rc == FHIRSYNC_OK || rc == FHIRSYNC_E_LOCKED)
        goto out;
fail:
    if (run_id > 0) {
        fs_store_run_end end = {.status = FHIRSYNC_RUN_FAILED, .error = err.message};
        fhirsync_error ignored;
        fs_store_run_finish(store, run_id, &end, &ignored);
    }
    note(w, name, "sync failed: %s", err.message);
    give_back(w, item, rc, err.message, rc == FHIRSYNC_E_CANCELLED ? 0 : 60);
out:
    if (locked) {
        fhirsync_error ignored;
        fs_store_unlock_endpoint(store, name, &ignored);
    }
    fhirsync_export_free(ex);
    if (dir)
        fs_sync_rmtree(dir);
    fhirsync_endpoint_free(ep2);
    json_decref(plan);
    fs_free(since);
    fs_free(types);
    fs_free(compartment);
    fs_free(left_out);
    fs_free(workdir);
    fs_free(dir);
    return rc;
}

/* ---- endpoint syncs -------------------------------------------------------------------------- */

static void process_endpoint(worker *w, const fs_store_work_item *item, const fhirsync_endpoint *ep)
{
    const char *mode = fhirsync_endpoint_get(ep, "mode");
    if (!fs_streq(mode, "crawl")) {
        coordinate(w, item, ep);
        return;
    }
    fhirsync_sync *s = NULL;
    fhirsync_error err;
    fs_err_clear(&err);
    fhirsync_sync_options o = w->opts.sync;
    o.lock_owner = w->id;
    fhirsync_code rc = fhirsync_sync_new(ep, w->store, &o, &s, &err);
    if (rc == FHIRSYNC_OK) {
        fhirsync_sync_set_callback(s, w->cb, w->cb_userdata);
        rc = fhirsync_sync_run(s);
        fs_err(&err, rc, "%s", fhirsync_sync_errmsg(s));
    }
    if (rc == FHIRSYNC_OK || rc == FHIRSYNC_E_PARTIAL) {
        fhirsync_sync_stats st;
        fhirsync_sync_stats_init(&st, FHIRSYNC_SYNC_STATS_VERSION);
        fhirsync_sync_get_stats(s, &st);
        w->stats.resources += st.resources;
        char result[200];
        snprintf(result, sizeof result, "{\"run_id\":%lld,\"resources\":%lld}",
                 (long long)st.run_id, (long long)st.resources);
        if (complete(w, item, result, &err) != FHIRSYNC_OK)
            note(w, item->endpoint, "could not complete item %lld: %s", (long long)item->id,
                 err.message);
    } else {
        give_back(w, item, rc, err.message,
                  rc == FHIRSYNC_E_LOCKED      ? 30
                  : rc == FHIRSYNC_E_CANCELLED ? 0
                                               : 60);
    }
    fhirsync_sync_free(s);
}

/* ---- the loop -------------------------------------------------------------------------------- */

static void process(worker *w, const fs_store_work_item *item)
{
    const fhirsync_endpoint *ep = fhirsync_config_endpoint(w->cfg, item->endpoint);
    if (!ep) {
        note(w, item->endpoint, "endpoint %s is not in this worker's configuration",
             item->endpoint);
        give_back(w, item, FHIRSYNC_E_SERVER, "the endpoint is not in the worker's configuration",
                  30);
        return;
    }
    if (strcmp(item->kind, FS_STORE_WORK_ENDPOINT_SYNC) == 0) {
        process_endpoint(w, item, ep);
        return;
    }
    fhirsync_error err;
    json_t *payload =
        fs_json_parse(item->payload, strlen(item->payload), true, "work payload", &err);
    if (!payload) {
        give_back(w, item, err.code == FHIRSYNC_E_NOMEM ? FHIRSYNC_E_NOMEM : FHIRSYNC_E_ARG,
                  err.message, 5);
        return;
    }
    if (json_is_true(json_object_get(payload, "finalise")))
        process_finalise(w, item, ep, payload);
    else
        process_file(w, item, ep, payload);
    json_decref(payload);
}

fhirsync_code fhirsync_worker_options_init(fhirsync_worker_options *opts, unsigned int version)
{
    if (fs_versioned_init(opts, sizeof *opts, version, FHIRSYNC_WORKER_OPTIONS_VERSION,
                          "fhirsync_worker_options") != FHIRSYNC_OK)
        return FHIRSYNC_E_ARG;
    return fhirsync_sync_options_init(&opts->sync, FHIRSYNC_SYNC_OPTIONS_VERSION);
}

fhirsync_code fhirsync_worker_stats_init(fhirsync_worker_stats *stats, unsigned int version)
{
    return fs_versioned_init(stats, sizeof *stats, version, FHIRSYNC_WORKER_STATS_VERSION,
                             "fhirsync_worker_stats");
}

fhirsync_code fhirsync_sync_enqueue(fhirsync_store *store, const char *endpoint, const char *slot,
                                    int64_t *id, fhirsync_error *err)
{
    if (id)
        *id = 0;
    if (!store || !endpoint || !*endpoint)
        return fs_err(err, FHIRSYNC_E_ARG, "enqueueing needs a store and an endpoint");
    char *watermark = NULL;
    fhirsync_code rc = FHIRSYNC_OK;
    if (!slot)
        rc = fhirsync_store_watermark(store, endpoint, &watermark, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    fs_buf key;
    fs_buf_init(&key);
    bool ok =
        slot ? fs_buf_printf(&key, "sync/%s/%s", endpoint, slot)
             : fs_buf_printf(&key, "sync/%s/since/%s", endpoint, watermark ? watermark : "full");
    fs_free(watermark);
    if (!ok) {
        fs_buf_free(&key);
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    fs_store_work_spec spec = {.kind = FS_STORE_WORK_ENDPOINT_SYNC,
                               .endpoint = endpoint,
                               .key = key.data,
                               .payload = "{}"};
    rc = fs_store_work_enqueue(store, &spec, id, err);
    fs_buf_free(&key);
    return rc;
}

fhirsync_code fhirsync_sync_worker_run(const char *store_location, const fhirsync_config *cfg,
                                       const fhirsync_worker_options *opts, fhirsync_sync_cb cb,
                                       void *userdata, fhirsync_worker_stats *stats,
                                       fhirsync_error *err)
{
    if (stats && fs_check_version(stats->version, FHIRSYNC_WORKER_STATS_VERSION,
                                  "fhirsync_worker_stats", err) != FHIRSYNC_OK)
        return FHIRSYNC_E_ARG;
    if (stats)
        fhirsync_worker_stats_init(stats, stats->version);
    if (opts && (fs_check_version(opts->version, FHIRSYNC_WORKER_OPTIONS_VERSION,
                                  "fhirsync_worker_options", err) != FHIRSYNC_OK ||
                 fs_check_version(opts->sync.version, FHIRSYNC_SYNC_OPTIONS_VERSION,
                                  "fhirsync_sync_options", err) != FHIRSYNC_OK))
        return FHIRSYNC_E_ARG;
    if (!cfg)
        return fs_err(err, FHIRSYNC_E_ARG, "a worker needs a configuration");
    worker w = {.cfg = cfg, .cb = cb, .cb_userdata = userdata};
    fhirsync_worker_stats_init(&w.stats, FHIRSYNC_WORKER_STATS_VERSION);
    if (opts)
        w.opts = *opts;
    else
        fhirsync_worker_options_init(&w.opts, FHIRSYNC_WORKER_OPTIONS_VERSION);
    if (w.opts.lease_s <= 0)
        w.opts.lease_s = 30;
    if (w.opts.poll_ms <= 0)
        w.opts.poll_ms = 500;
    if (w.opts.worker_id && *w.opts.worker_id) {
        snprintf(w.id, sizeof w.id, "%s", w.opts.worker_id);
    } else {
        char host[256] = "localhost";
        gethostname(host, sizeof host - 1);
        snprintf(w.id, sizeof w.id, "%s:%ld", host, (long)getpid());
    }
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    fhirsync_code rc = fhirsync_store_open(store_location, 0, &w.store, err);
    if (rc == FHIRSYNC_OK)
        rc = fhirsync_store_open(store_location, 0, &w.hb_store, err);
    if (rc == FHIRSYNC_OK) {
        if (pthread_create(&w.hb, NULL, heartbeat_main, &w) == 0)
            w.hb_started = true;
        else
            rc = fs_err(err, FHIRSYNC_E_INTERNAL, "cannot start the heartbeat thread");
    }
    if (rc == FHIRSYNC_OK)
        fs_log(FHIRSYNC_LOG_INFO, "worker %s: started on %s", w.id,
               fhirsync_store_location(w.store));
    while (rc == FHIRSYNC_OK && !fs_cancel_requested()) {
        fs_store_work_item *item = NULL;
        rc = fs_store_work_claim(w.store, w.id, NULL, w.opts.lease_s, &item, err);
        if (rc != FHIRSYNC_OK)
            break;
        if (!item) {
            if (w.opts.exit_when_idle) {
                fs_store_work_counts sum;
                rc = fs_store_work_summary(w.store, NULL, &sum, err);
                if (rc != FHIRSYNC_OK || sum.pending + sum.claimed == 0)
                    break;
            }
            fs_sleep_ms(w.opts.poll_ms);
            continue;
        }
        fs_log(FHIRSYNC_LOG_DEBUG, "worker %s: claimed item %lld (%s, %s, attempt %d)", w.id,
               (long long)item->id, item->kind, item->endpoint, item->attempts);
        hold_item(&w, item->id);
        process(&w, item);
        hold_item(&w, 0);
        fs_store_work_item_free(item);
    }
    if (w.hb_started) {
        pthread_mutex_lock(&w.mu);
        w.hb_stop = true;
        pthread_cond_broadcast(&w.cv);
        pthread_mutex_unlock(&w.mu);
        pthread_join(w.hb, NULL);
    }
    fhirsync_store_close(w.hb_store);
    fhirsync_store_close(w.store);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    if (stats)
        *stats = w.stats;
    return rc;
}
