/* store/runs.c: the audit of sync runs and the per-endpoint watermark. A run starts as a row
 * "running" committed at once, and ends (fs_store_run_finish) in the same transaction as the last
 * rows of its batch and its new watermark. Also the listing of runs (fhirsync_store_runs) and what
 * a workers' run is finalised from (the rows, deletions and quarantined lines of a run). */
#include <stdio.h>
#include <string.h>

#include "store/shared_private.h"
#include "store/store_internal.h"

const char *fhirsync_run_status_name(fhirsync_run_status status)
{
    switch (status) {
    case FHIRSYNC_RUN_RUNNING: return "running";
    case FHIRSYNC_RUN_OK: return "ok";
    case FHIRSYNC_RUN_PARTIAL: return "partial";
    case FHIRSYNC_RUN_FAILED: return "failed";
    }
    return "failed";
}

static fhirsync_run_status status_from_name(const char *name)
{
    if (fs_streq(name, "running"))
        return FHIRSYNC_RUN_RUNNING;
    if (fs_streq(name, "ok"))
        return FHIRSYNC_RUN_OK;
    if (fs_streq(name, "partial"))
        return FHIRSYNC_RUN_PARTIAL;
    return FHIRSYNC_RUN_FAILED;
}

fhirsync_code fs_store_run_begin(fhirsync_store *store, const char *endpoint, const char *mode,
                                 const char *since, int64_t *run_id, fhirsync_error *err)
{
    if (run_id)
        *run_id = 0;
    fhirsync_code rc = fs_store_check_writable(store, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (!endpoint || !*endpoint || !run_id)
        return fs_err(err, FHIRSYNC_E_ARG, "a run needs an endpoint and a place for its id");
    const char *now = fs_store_loaded_at(store);
    bool own;
    rc = fs_store_tx_open(store, &own, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (fs_store_holds_lock(store, endpoint)) {
        fs_sql_value p[2] = {fs_sql_text(endpoint), fs_sql_text(now)};
        rc = store->ops->exec(store,
                              "UPDATE sync_runs SET status = 'failed', finished_at = ?2,"
                              " error = 'interrupted: the process ended before the run finished'"
                              " WHERE endpoint = ?1 AND status = 'running'",
                              true, p, 2, NULL, NULL, NULL, err);
    }
    int64_t id = 0;
    if (rc == FHIRSYNC_OK) {
        fs_sql_value p[6] = {fs_sql_text(endpoint),  fs_sql_text(mode),
                             fs_sql_text(now),       fs_sql_text(since),
                             fs_sql_int(store->pid), fs_sql_text(store->hostname)};
        rc = store->ops->exec(store,
                              "INSERT INTO sync_runs (endpoint, mode, status, started_at, since,"
                              " pid, hostname) VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6)"
                              " RETURNING id",
                              true, p, 6, fs_store_row_int, &id, NULL, err);
    }
    if (rc == FHIRSYNC_OK && id <= 0)
        rc = fs_err(err, FHIRSYNC_E_STORE, "the new run got no id");
    rc = fs_store_tx_close(store, own, rc, err);
    if (rc == FHIRSYNC_OK)
        *run_id = id;
    return rc;
}

static fhirsync_code upsert_watermark(fhirsync_store *s, const char *endpoint,
                                      const char *watermark, int64_t run_id, fhirsync_error *err)
{
    fs_sql_value p[4] = {fs_sql_text(endpoint), fs_sql_text(watermark),
                         fs_sql_text(fs_store_loaded_at(s)),
                         run_id > 0 ? fs_sql_int(run_id) : fs_sql_null()};
    return s->ops->exec(s,
                        "INSERT INTO sync_state (endpoint, watermark, updated_at, run_id)"
                        " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (endpoint) DO UPDATE SET"
                        " watermark = excluded.watermark, updated_at = excluded.updated_at,"
                        " run_id = excluded.run_id",
                        true, p, 4, NULL, NULL, NULL, err);
}

fhirsync_code fs_store_run_finish(fhirsync_store *store, int64_t run_id,
                                  const fs_store_run_end *end, fhirsync_error *err)
{
    fhirsync_code rc = fs_store_check_writable(store, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (!end || run_id <= 0 || end->status == FHIRSYNC_RUN_RUNNING ||
        end->status > FHIRSYNC_RUN_FAILED)
        return fs_err(err, FHIRSYNC_E_ARG, "a run ends with a run id and ok, partial or failed");
    if (end->new_watermark && end->status == FHIRSYNC_RUN_FAILED)
        return fs_err(err, FHIRSYNC_E_ARG, "a failed run must not move the watermark");
    int64_t ms;
    if (end->new_watermark &&
        !fs_store_parse_instant_ms(end->new_watermark, strlen(end->new_watermark), &ms))
        return fs_err(err, FHIRSYNC_E_ARG, "watermark '%s' is not a FHIR instant",
                      end->new_watermark);
    if (end->counts_json && !fs_store_is_json(end->counts_json, false))
        return fs_err(err, FHIRSYNC_E_ARG, "counts_json is not a JSON object");
    bool in_batch = store->in_batch;
    bool own;
    rc = fs_store_tx_open(store, &own, err);
    if (rc != FHIRSYNC_OK) {
        if (in_batch)
            fhirsync_store_rollback(store, NULL);
        return rc;
    }
    char *endpoint = NULL;
    fs_sql_value p[9] = {fs_sql_int(run_id),
                         fs_sql_text(fs_store_loaded_at(store)),
                         fs_sql_text(fhirsync_run_status_name(end->status)),
                         fs_sql_text(end->transaction_time),
                         fs_sql_text(end->counts_json),
                         fs_sql_int(end->resources),
                         fs_sql_int(end->deletions),
                         fs_sql_int(end->quarantined),
                         fs_sql_text(end->error)};
    rc = fs_store_query_string(
        store,
        "UPDATE sync_runs SET finished_at = ?2, status = ?3, transaction_time = ?4,"
        " counts = ?5, resources = ?6, deletions = ?7, quarantined = ?8, error = ?9"
        " WHERE id = ?1 AND status = 'running' RETURNING endpoint",
        p, 9, &endpoint, err);
    if (rc == FHIRSYNC_OK && !endpoint)
        rc = fs_err(err, FHIRSYNC_E_ARG, "run %lld is not running (finished, or unknown)",
                    (long long)run_id);
    if (rc == FHIRSYNC_OK && end->new_watermark)
        rc = upsert_watermark(store, endpoint, end->new_watermark, run_id, err);
    if (in_batch) {
        /* the batch's final commit: everything, or nothing */
        if (rc == FHIRSYNC_OK)
            rc = fhirsync_store_commit(store, err);
        else
            fhirsync_store_rollback(store, NULL);
    } else {
        rc = fs_store_tx_close(store, own, rc, err);
    }
    if (rc == FHIRSYNC_OK)
        fs_log(FHIRSYNC_LOG_INFO, "store: run %lld of %s ended %s%s%s", (long long)run_id, endpoint,
               fhirsync_run_status_name(end->status), end->new_watermark ? ", watermark " : "",
               end->new_watermark ? end->new_watermark : "");
    fs_free(endpoint);
    return rc;
}

fhirsync_code fhirsync_store_watermark(fhirsync_store *store, const char *endpoint,
                                       char **watermark, fhirsync_error *err)
{
    if (watermark)
        *watermark = NULL;
    if (!store || !endpoint || !watermark)
        return fs_err(err, FHIRSYNC_E_ARG, "no store, endpoint or output");
    fs_sql_value p = fs_sql_text(endpoint);
    return fs_store_query_string(store, "SELECT watermark FROM sync_state WHERE endpoint = ?1", &p,
                                 1, watermark, err);
}

fhirsync_code fhirsync_store_set_watermark(fhirsync_store *store, const char *endpoint,
                                           const char *watermark, fhirsync_error *err)
{
    fhirsync_code rc = fs_store_check_writable(store, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    int64_t ms;
    if (!endpoint || (watermark && !fs_store_parse_instant_ms(watermark, strlen(watermark), &ms)))
        return fs_err(err, FHIRSYNC_E_ARG, "a watermark needs an endpoint and a FHIR instant");
    bool own;
    rc = fs_store_tx_open(store, &own, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    rc = upsert_watermark(store, endpoint, watermark, 0, err);
    return fs_store_tx_close(store, own, rc, err);
}

/* ---- the audit ------------------------------------------------------------------------------- */

typedef struct runs_ctx {
    fhirsync_run_cb cb;
    void *userdata;
} runs_ctx;

static int read_run(void *userdata, int ncols, const char *const *v, const size_t *len,
                    const char *const *names)
{
    (void)len;
    (void)names;
    runs_ctx *c = userdata;
    if (ncols < 13)
        return 1;
    fhirsync_run_info run = {.id = fs_store_int_or_zero(v[0]),
                             .endpoint = v[1],
                             .mode = v[2],
                             .status = status_from_name(v[3]),
                             .started_at = v[4],
                             .finished_at = v[5],
                             .since = v[6],
                             .transaction_time = v[7],
                             .counts_json = v[8],
                             .resources = fs_store_int_or_zero(v[9]),
                             .deletions = fs_store_int_or_zero(v[10]),
                             .quarantined = fs_store_int_or_zero(v[11]),
                             .error = v[12]};
    return c->cb(&run, c->userdata) != 0;
}

fhirsync_code fhirsync_store_runs(fhirsync_store *store, const char *endpoint, size_t limit,
                                  fhirsync_run_cb cb, void *userdata, fhirsync_error *err)
{
    if (!store || !cb)
        return fs_err(err, FHIRSYNC_E_ARG, "no store or callback");
    runs_ctx ctx = {cb, userdata};
    fs_sql_value p[2] = {fs_sql_text(endpoint), fs_sql_int(limit ? (int64_t)limit : 20)};
    return store->ops->exec(store,
                            "SELECT id, endpoint, mode, status, started_at, finished_at, since,"
                            " transaction_time, counts, resources, deletions, quarantined, error"
                            " FROM sync_runs WHERE CAST(?1 AS TEXT) IS NULL OR endpoint = ?1"
                            " ORDER BY id DESC LIMIT ?2",
                            true, p, 2, read_run, &ctx, NULL, err);
}

fhirsync_code fs_store_run_rows(fhirsync_store *store, const char *type, int64_t run_id,
                                int64_t *rows, fhirsync_error *err)
{
    *rows = 0;
    bool exists;
    fhirsync_code rc = fs_store_table_of(store, type, &exists, err);
    if (rc == FHIRSYNC_OK && exists) {
        char sql[160], quoted[FS_STORE_TYPE_MAX + 3];
        fs_store_quote_type(type, quoted, sizeof quoted);
        snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE run_id = ?1", quoted);
        fs_sql_value p = fs_sql_int(run_id);
        rc = store->ops->exec(store, sql, false, &p, 1, fs_store_row_int, rows, NULL, err);
    }
    return rc;
}

fhirsync_code fs_store_run_tally(fhirsync_store *store, int64_t run_id, int64_t *deletions,
                                 int64_t *quarantined, fhirsync_error *err)
{
    *deletions = *quarantined = 0;
    fs_sql_value p = fs_sql_int(run_id);
    fhirsync_code rc = store->ops->exec(store, "SELECT count(*) FROM deletions WHERE run_id = ?1",
                                        true, &p, 1, fs_store_row_int, deletions, NULL, err);
    if (rc == FHIRSYNC_OK)
        rc = store->ops->exec(store,
                              "SELECT count(*) FROM quarantine WHERE run_id = ?1"
                              " AND (source IS NULL OR source NOT LIKE 'view:%')",
                              true, &p, 1, fs_store_row_int, quarantined, NULL, err);
    return rc;
}
