/* sync/sync.c: the public sync handle. A run locks the endpoint in the store (a second process
 * is told who holds it), works out the increment (the `since` setting, else the stored
 * watermark; --full: everything), hands over to bulk.c or crawl.c, which record the run in the
 * audit table and finish it with the watermark in the final commit, and unlocks. Events go to the
 * application's callback, serialised by the handle's mutex because bulk mode also reports from
 * its loader thread. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "config/config_internal.h"
#include "fhirsync/auth.h"
#include "fhirsync/client.h"
#include "json/json.h"
#include "store/store_internal.h"
#include "sync/sync_internal.h"

fhirsync_code fhirsync_sync_options_init(fhirsync_sync_options *opts, unsigned int version)
{
    if (fs_versioned_init(opts, sizeof *opts, version, FHIRSYNC_SYNC_OPTIONS_VERSION,
                          "fhirsync_sync_options") != FHIRSYNC_OK)
        return FHIRSYNC_E_ARG;
    opts->per_patient = -1;
    opts->delete_job = -1;
    opts->load = FHIRSYNC_SYNC_LOAD_STREAM;
    return FHIRSYNC_OK;
}

fhirsync_code fhirsync_sync_new(const fhirsync_endpoint *ep, fhirsync_store *store,
                                const fhirsync_sync_options *opts, fhirsync_sync **out,
                                fhirsync_error *err)
{
    if (out)
        *out = NULL;
    if (!ep || !store || !out)
        return fs_err(err, FHIRSYNC_E_ARG, "a sync needs an endpoint, a store and a result");
    fhirsync_sync_options defaults;
    fhirsync_sync_options_init(&defaults, FHIRSYNC_SYNC_OPTIONS_VERSION);
    if (!opts)
        opts = &defaults;
    fhirsync_code checked = fs_check_version(opts->version, FHIRSYNC_SYNC_OPTIONS_VERSION,
                                             "fhirsync_sync_options", err);
    if (checked != FHIRSYNC_OK)
        return checked;
    if (opts->load != FHIRSYNC_SYNC_LOAD_STREAM && opts->load != FHIRSYNC_SYNC_LOAD_AFTER)
        return fs_err(err, FHIRSYNC_E_ARG, "unknown load strategy %d", (int)opts->load);
    if (opts->page_size < 0 || opts->page_size > 10000)
        return fs_err(err, FHIRSYNC_E_ARG, "page size %d is outside 0..10000", opts->page_size);
    if (opts->loaders < 0 || opts->loaders > 16)
        return fs_err(err, FHIRSYNC_E_ARG, "loaders %d is outside 0..16", opts->loaders);
    fhirsync_code rc = fhirsync_endpoint_validate(ep, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    fhirsync_sync *s = fs_calloc(1, sizeof *s);
    if (!s)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    pthread_mutex_init(&s->lock, NULL);
    fs_sync_counts_init(&s->counts);
    s->store = store;
    s->opts = *opts;
    s->ep = fhirsync_endpoint_dup(ep);
    s->name = fs_strdup(fhirsync_endpoint_name(ep));
    s->work_dir_opt = opts->work_dir ? fs_strdup(opts->work_dir) : NULL;
    s->lock_owner = opts->lock_owner ? fs_strdup(opts->lock_owner) : NULL;
    if (!s->ep || !s->name || (opts->work_dir && !s->work_dir_opt) ||
        (opts->lock_owner && !s->lock_owner)) {
        fhirsync_sync_free(s);
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    s->opts.work_dir = s->work_dir_opt;
    s->opts.lock_owner = s->lock_owner;
    *out = s;
    return FHIRSYNC_OK;
}

static void reset_run(fhirsync_sync *s)
{
    fs_free(s->since);
    fs_free(s->transaction_time);
    fs_free(s->watermark);
    fs_free(s->type_stats);
    s->since = s->transaction_time = s->watermark = NULL;
    s->reconciled = 0;
    s->inserted = 0;
    fhirsync_free(s->rows_before);
    s->rows_before = NULL;
    s->nrows_before = 0;
    s->type_stats = NULL;
    fs_sync_counts_clear(&s->counts);
    s->run_id = 0;
    s->status = FHIRSYNC_RUN_FAILED;
    s->mode = NULL;
    s->level = NULL;
    s->resumed = false;
    s->requests = 0;
    s->duration_s = 0;
    s->stop = false;
}

void fhirsync_sync_free(fhirsync_sync *s)
{
    if (!s)
        return;
    reset_run(s);
    fhirsync_endpoint_free(s->ep);
    fs_free(s->name);
    fs_free(s->work_dir_opt);
    fs_free(s->lock_owner);
    pthread_mutex_destroy(&s->lock);
    fs_free(s);
}

void fhirsync_sync_set_callback(fhirsync_sync *s, fhirsync_sync_cb cb, void *userdata)
{
    if (!s)
        return;
    s->cb = cb;
    s->cb_userdata = userdata;
}

fhirsync_code fhirsync_sync_errcode(const fhirsync_sync *s)
{
    return s ? s->err.code : FHIRSYNC_E_ARG;
}

const char *fhirsync_sync_errmsg(const fhirsync_sync *s)
{
    return s ? s->err.message : "";
}

/* ---- the run --------------------------------------------------------------------------------- */

static int64_t rows_before(const fhirsync_sync *s, const char *type)
{
    for (size_t i = 0; i < s->nrows_before; i++)
        if (strcmp(s->rows_before[i].type, type) == 0)
            return s->rows_before[i].count;
    return 0;
}

/* Per type: what was received beside what the store changed. The rows are counted (only for the
 * types the run touched) when the run ended ok or partial. */
static fhirsync_code fill_type_stats(fhirsync_sync *s, bool finished)
{
    if (s->counts.n == 0)
        return FHIRSYNC_OK;
    s->type_stats = fs_calloc(s->counts.n, sizeof *s->type_stats);
    if (!s->type_stats)
        return FHIRSYNC_E_NOMEM;
    for (size_t i = 0; i < s->counts.n; i++) {
        const fs_sync_count *c = &s->counts.items[i];
        fhirsync_sync_type_stats *t = &s->type_stats[i];
        *t = (fhirsync_sync_type_stats){c->type, c->loaded, c->deleted, c->quarantined, 0, 0};
        fhirsync_error ignored;
        if (finished && fs_store_type_rows(s->store, c->type, &t->rows, &ignored) == FHIRSYNC_OK) {
            t->inserted = t->rows - rows_before(s, c->type) + c->deleted;
            if (t->inserted < 0)
                t->inserted = 0; /* another endpoint of a shared store deleted meanwhile */
            s->inserted += t->inserted;
        }
    }
    return FHIRSYNC_OK;
}

fhirsync_code fhirsync_sync_run(fhirsync_sync *s)
{
    if (!s)
        return FHIRSYNC_E_ARG;
    reset_run(s);
    fs_err_clear(&s->err);
    s->start_ms = fs_monotonic_ms();
    fs_tally_reset(&s->tally);
    fs_tally *outer = fs_tally_bind(&s->tally);
    fhirsync_code rc = fs_store_lock_endpoint(s->store, s->name, s->opts.lock_owner,
                                              s->opts.lock_timeout_ms, &s->err);
    if (rc != FHIRSYNC_OK)
        goto out;
    rc = fs_store_bind_endpoint(s->store, s->name, fhirsync_endpoint_get(s->ep, "base_url"),
                                fs_endpoint_bool(s->ep, "shared_store"), &s->err);
    /* workers loading an export of this endpoint: this run would mark theirs interrupted and
     * their watermark move would be lost */
    int64_t worker_run = 0, files = 0;
    if (rc == FHIRSYNC_OK)
        rc = fs_sync_worker_run_in_flight(s->store, s->name, &worker_run, &files, &s->err);
    if (rc == FHIRSYNC_OK && worker_run)
        rc = fs_err(&s->err, FHIRSYNC_E_LOCKED,
                    "endpoint '%s' is being synced by workers: %lld file(s) of their run %lld are "
                    "still being loaded (fhirsync sync --worker); sync again once they are done",
                    s->name, (long long)files, (long long)worker_run);
    if (rc == FHIRSYNC_OK)
        rc = fhirsync_store_counts(s->store, &s->rows_before, &s->nrows_before, &s->err);
    const char *mode = fhirsync_endpoint_get(s->ep, "mode");
    const char *since_setting = fhirsync_endpoint_get(s->ep, "since");
    if (rc == FHIRSYNC_OK && !s->opts.full) {
        if (since_setting && *since_setting) {
            s->since = fs_strdup(since_setting);
            if (!s->since)
                rc = fs_err(&s->err, FHIRSYNC_E_NOMEM, "out of memory");
        } else {
            rc = fhirsync_store_watermark(s->store, s->name, &s->since, &s->err);
        }
    }
    if (rc == FHIRSYNC_OK)
        rc = fs_streq(mode, "crawl") ? fs_sync_crawl_run(s) : fs_sync_bulk_run(s);
    fhirsync_error ignored;
    fs_store_unlock_endpoint(s->store, s->name, &ignored);
out:
    s->duration_s = (double)(fs_monotonic_ms() - s->start_ms) / 1000.0;
    if (fill_type_stats(s, rc == FHIRSYNC_OK || rc == FHIRSYNC_E_PARTIAL) != FHIRSYNC_OK &&
        rc == FHIRSYNC_OK)
        rc = fs_err(&s->err, FHIRSYNC_E_NOMEM, "out of memory");
    if (rc != FHIRSYNC_OK && !s->err.message[0])
        fs_err(&s->err, rc, "%s", fhirsync_strerror(rc));
    if (rc != FHIRSYNC_OK)
        s->err.code = rc;
    fs_tally_bind(outer);
    fhirsync_sync_event ev = {.kind = FHIRSYNC_SYNC_EV_DONE,
                              .code = rc,
                              .message = rc == FHIRSYNC_OK ? NULL : s->err.message};
    fs_sync_emit(s, &ev);
    return rc;
}

fhirsync_code fhirsync_sync_stats_init(fhirsync_sync_stats *stats, unsigned int version)
{
    return fs_versioned_init(stats, sizeof *stats, version, FHIRSYNC_SYNC_STATS_VERSION,
                             "fhirsync_sync_stats");
}

fhirsync_code fhirsync_sync_get_stats(const fhirsync_sync *s, fhirsync_sync_stats *out)
{
    if (!out || fs_check_version(out->version, FHIRSYNC_SYNC_STATS_VERSION, "fhirsync_sync_stats",
                                 NULL) != FHIRSYNC_OK)
        return FHIRSYNC_E_ARG;
    unsigned int version = out->version;
    /* a caller built with an older header has a shorter struct: never write past it */
    memset(out, 0, version >= 2 ? sizeof *out : offsetof(fhirsync_sync_stats, http_responses));
    out->version = version;
    if (!s)
        return FHIRSYNC_OK;
    if (version >= 2) {
        out->http_responses = atomic_load(&s->tally.responses);
        out->rate_limited = atomic_load(&s->tally.rate_limited);
        out->bytes_received = atomic_load(&s->tally.body_bytes);
        out->token_requests = atomic_load(&s->tally.tokens);
    }
    out->run_id = s->run_id;
    out->status = s->status;
    out->mode = s->mode;
    out->level = s->level;
    out->since = s->since;
    out->transaction_time = s->transaction_time;
    out->watermark = s->watermark;
    out->resumed = s->resumed;
    fs_sync_counts_totals(&s->counts, &out->resources, &out->deleted, &out->quarantined);
    out->server_errors = s->counts.server_errors;
    out->requests = s->requests;
    out->duration_s = s->duration_s;
    out->reconciled = s->reconciled;
    out->inserted = s->inserted;
    return FHIRSYNC_OK;
}

size_t fhirsync_sync_type_count(const fhirsync_sync *s)
{
    return s && s->type_stats ? s->counts.n : 0;
}

const fhirsync_sync_type_stats *fhirsync_sync_type_at(const fhirsync_sync *s, size_t i)
{
    if (!s || !s->type_stats || i >= s->counts.n)
        return NULL;
    return &s->type_stats[i];
}
