/* store/queue.c: the work queue that workers share through the database (PostgreSQL: on several
 * machines; SQLite: processes of one machine). An item is claimed with a lease on the database's
 * clock; a worker that dies stops renewing it, and once it has expired another worker claims the
 * item again, until max_attempts. PostgreSQL claims with FOR UPDATE SKIP LOCKED, so concurrent
 * claimers pass over each other's rows instead of waiting for them. */
#include <string.h>

#include "store/shared_private.h"
#include "store/store_internal.h"

void fs_store_work_item_free(fs_store_work_item *item)
{
    if (!item)
        return;
    fs_free(item->kind);
    fs_free(item->endpoint);
    fs_free(item->batch);
    fs_free(item->key);
    fs_free(item->payload);
    fs_free(item);
}

fhirsync_code fs_store_work_enqueue(fhirsync_store *store, const fs_store_work_spec *spec,
                                    int64_t *id, fhirsync_error *err)
{
    if (id)
        *id = 0;
    fhirsync_code rc = fs_store_check_writable(store, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (!spec || !spec->endpoint || !spec->kind ||
        (strcmp(spec->kind, FS_STORE_WORK_ENDPOINT_SYNC) != 0 &&
         strcmp(spec->kind, FS_STORE_WORK_FILE_LOAD) != 0))
        return fs_err(err, FHIRSYNC_E_ARG, "a work item needs a known kind and an endpoint");
    if (spec->payload && !fs_store_is_json(spec->payload, false))
        return fs_err(err, FHIRSYNC_E_ARG, "a work item's payload must be a JSON object");
    const char *now = fs_store_loaded_at(store);
    fs_sql_value p[7] = {fs_sql_text(spec->kind),
                         fs_sql_text(spec->endpoint),
                         fs_sql_text(spec->batch),
                         fs_sql_text(spec->key),
                         fs_sql_text(spec->payload ? spec->payload : "{}"),
                         fs_sql_int(spec->max_attempts > 0 ? spec->max_attempts : 5),
                         fs_sql_text(now)};
    int64_t new_id = 0;
    bool own;
    rc = fs_store_tx_open(store, &own, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    rc = store->ops->exec(store,
                          "INSERT INTO work_items (kind, endpoint, batch, key, payload,"
                          " max_attempts, created_at, updated_at)"
                          " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)"
                          " ON CONFLICT (key) DO NOTHING RETURNING id",
                          true, p, 7, fs_store_row_int, &new_id, NULL, err);
    if (rc == FHIRSYNC_OK && new_id == 0 && spec->key) {
        fs_sql_value k = fs_sql_text(spec->key);
        rc = store->ops->exec(store, "SELECT id FROM work_items WHERE key = ?1", true, &k, 1,
                              fs_store_row_int, &new_id, NULL, err);
    }
    rc = fs_store_tx_close(store, own, rc, err);
    if (rc == FHIRSYNC_OK && id)
        *id = new_id;
    return rc;
}

typedef struct claim_row {
    fs_store_work_item *item;
    bool nomem;
} claim_row;

static char *dup_value(const char *v, size_t len, bool *nomem)
{
    if (!v)
        return NULL;
    char *copy = fs_strndup(v, len);
    if (!copy)
        *nomem = true;
    return copy;
}

static int read_claim(void *userdata, int ncols, const char *const *v, const size_t *len,
                      const char *const *names)
{
    (void)names;
    claim_row *c = userdata;
    if (ncols < 8 || c->item)
        return 1;
    fs_store_work_item *item = fs_calloc(1, sizeof *item);
    if (!item) {
        c->nomem = true;
        return 1;
    }
    long n = 0;
    item->id = v[0] && fs_parse_long(v[0], &n) ? n : 0;
    item->kind = dup_value(v[1], len[1], &c->nomem);
    item->endpoint = dup_value(v[2], len[2], &c->nomem);
    item->batch = dup_value(v[3], len[3], &c->nomem);
    item->key = dup_value(v[4], len[4], &c->nomem);
    item->payload = dup_value(v[5], len[5], &c->nomem);
    item->attempts = v[6] && fs_parse_long(v[6], &n) ? (int)n : 0;
    item->lease_until = v[7] && fs_parse_long(v[7], &n) ? n : 0;
    c->item = item;
    return 1;
}

/* The claim statement; PostgreSQL adds FOR UPDATE SKIP LOCKED so that concurrent claimers pass
 * over each other's rows instead of waiting for them. */
#define CLAIM_SQL(LOCKING)                                                                         \
    "UPDATE work_items SET state = 'claimed', claimed_by = ?2, claimed_at = ?3,"                   \
    " lease_until = ?4, attempts = attempts + 1, updated_at = ?3"                                  \
    " WHERE id = (SELECT id FROM work_items"                                                       \
    "  WHERE ((state = 'pending' AND not_before <= ?1)"                                            \
    "   OR (state = 'claimed' AND lease_until < ?1 AND attempts < max_attempts))"                  \
    "  AND (CAST(?5 AS TEXT) IS NULL OR kind = ?5)"                                                \
    "  ORDER BY id LIMIT 1" LOCKING ")"                                                            \
    " RETURNING id, kind, endpoint, batch, key, payload, attempts, lease_until"
#define EXPIRE_SQL(LOCKING)                                                                        \
    "UPDATE work_items SET state = 'failed', lease_until = NULL, updated_at = ?2,"                 \
    " error = 'the lease expired ' || attempts || ' times (the worker died or hung)'"              \
    " WHERE id IN (SELECT id FROM work_items WHERE state = 'claimed' AND lease_until < ?1"         \
    "  AND attempts >= max_attempts" LOCKING ")"

fhirsync_code fs_store_work_claim(fhirsync_store *store, const char *worker_id, const char *kind,
                                  int lease_seconds, fs_store_work_item **item, fhirsync_error *err)
{
    if (item)
        *item = NULL;
    fhirsync_code rc = fs_store_check_writable(store, err);
    if (rc == FHIRSYNC_OK)
        rc = fs_store_check_outside_batch(store, "claiming work", err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (!worker_id || !item || lease_seconds <= 0)
        return fs_err(err, FHIRSYNC_E_ARG, "a claim needs a worker id and a positive lease");
    bool pg = store->engine == FS_ENGINE_POSTGRESQL;
    int64_t now;
    rc = store->ops->now(store, &now, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    claim_row claim = {NULL, false};
    bool own;
    rc = fs_store_tx_open(store, &own, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    const char *stamp = fs_store_loaded_at(store);
    fs_sql_value expire[2] = {fs_sql_int(now), fs_sql_text(stamp)};
    rc = store->ops->exec(store, pg ? EXPIRE_SQL(" FOR UPDATE SKIP LOCKED") : EXPIRE_SQL(""), true,
                          expire, 2, NULL, NULL, NULL, err);
    if (rc == FHIRSYNC_OK) {
        fs_sql_value p[5] = {fs_sql_int(now), fs_sql_text(worker_id), fs_sql_text(stamp),
                             fs_sql_int(now + lease_seconds), fs_sql_text(kind)};
        rc = store->ops->exec(store, pg ? CLAIM_SQL(" FOR UPDATE SKIP LOCKED") : CLAIM_SQL(""),
                              true, p, 5, read_claim, &claim, NULL, err);
    }
    if (rc == FHIRSYNC_OK && claim.nomem)
        rc = fs_store_nomem(err);
    rc = fs_store_tx_close(store, own, rc, err);
    if (rc != FHIRSYNC_OK) {
        fs_store_work_item_free(claim.item);
        return rc;
    }
    *item = claim.item;
    return FHIRSYNC_OK;
}

/* Run an update on an item this worker holds; FHIRSYNC_E_LOCKED when it no longer does. */
static fhirsync_code update_held(fhirsync_store *s, int64_t id, const char *sql,
                                 const fs_sql_value *p, int n, bool in_own_tx, fhirsync_error *err)
{
    bool own = false;
    fhirsync_code rc = in_own_tx ? s->ops->begin(s, err) : fs_store_tx_open(s, &own, err);
    if (in_own_tx && rc == FHIRSYNC_OK)
        own = true;
    if (rc != FHIRSYNC_OK)
        return rc;
    int64_t changes = 0;
    rc = s->ops->exec(s, sql, true, p, n, NULL, NULL, &changes, err);
    if (rc == FHIRSYNC_OK && changes == 0)
        rc = fs_err(err, FHIRSYNC_E_LOCKED,
                    "work item %lld is no longer claimed by this worker (its lease expired)",
                    (long long)id);
    /* a lost lease is not a database error: keep the batch usable */
    if (rc == FHIRSYNC_E_LOCKED && !own)
        return rc;
    return fs_store_tx_close(s, own, rc, err);
}

fhirsync_code fs_store_work_heartbeat(fhirsync_store *store, int64_t id, const char *worker_id,
                                      int lease_seconds, fhirsync_error *err)
{
    fhirsync_code rc = fs_store_check_writable(store, err);
    if (rc == FHIRSYNC_OK)
        rc = fs_store_check_outside_batch(store, "a work heartbeat", err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (!worker_id || lease_seconds <= 0)
        return fs_err(err, FHIRSYNC_E_ARG, "a heartbeat needs a worker id and a positive lease");
    int64_t now;
    rc = store->ops->now(store, &now, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    fs_sql_value p[4] = {fs_sql_int(id), fs_sql_text(worker_id), fs_sql_int(now + lease_seconds),
                         fs_sql_text(fs_store_loaded_at(store))};
    return update_held(store, id,
                       "UPDATE work_items SET lease_until = ?3, updated_at = ?4"
                       " WHERE id = ?1 AND claimed_by = ?2 AND state = 'claimed'",
                       p, 4, true, err);
}

fhirsync_code fs_store_work_complete(fhirsync_store *store, int64_t id, const char *worker_id,
                                     const char *result_json, fhirsync_error *err)
{
    fhirsync_code rc = fs_store_check_writable(store, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (!worker_id)
        return fs_err(err, FHIRSYNC_E_ARG, "no worker id");
    if (result_json && !fs_store_is_json(result_json, true))
        return fs_err(err, FHIRSYNC_E_ARG, "a work result must be JSON");
    fs_sql_value p[4] = {fs_sql_int(id), fs_sql_text(worker_id), fs_sql_text(result_json),
                         fs_sql_text(fs_store_loaded_at(store))};
    return update_held(store, id,
                       "UPDATE work_items SET state = 'done', result = ?3, lease_until = NULL,"
                       " updated_at = ?4 WHERE id = ?1 AND claimed_by = ?2 AND state = 'claimed'",
                       p, 4, false, err);
}

fhirsync_code fs_store_work_fail(fhirsync_store *store, int64_t id, const char *worker_id,
                                 const char *error, int retry_after_seconds, fhirsync_error *err)
{
    fhirsync_code rc = fs_store_check_writable(store, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (!worker_id)
        return fs_err(err, FHIRSYNC_E_ARG, "no worker id");
    int64_t now;
    rc = store->ops->now(store, &now, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    fs_sql_value p[5] = {fs_sql_int(id), fs_sql_text(worker_id),
                         fs_sql_int(retry_after_seconds >= 0 ? 1 : 0),
                         fs_sql_int(now + (retry_after_seconds > 0 ? retry_after_seconds : 0)),
                         fs_sql_text(error ? error : "failed")};
    fs_sql_value q[6] = {p[0], p[1], p[2], p[3], p[4], fs_sql_text(fs_store_loaded_at(store))};
    return update_held(store, id,
                       "UPDATE work_items SET state = CASE WHEN ?3 = 1 AND attempts < max_attempts"
                       " THEN 'pending' ELSE 'failed' END, not_before = ?4, error = ?5,"
                       " lease_until = NULL, updated_at = ?6"
                       " WHERE id = ?1 AND claimed_by = ?2 AND state = 'claimed'",
                       q, 6, false, err);
}

static int read_summary(void *userdata, int ncols, const char *const *v, const size_t *len,
                        const char *const *names)
{
    (void)len;
    (void)names;
    fs_store_work_counts *s = userdata;
    long n;
    if (ncols < 2 || !v[0] || !v[1] || !fs_parse_long(v[1], &n))
        return 0;
    if (strcmp(v[0], "pending") == 0)
        s->pending = n;
    else if (strcmp(v[0], "claimed") == 0)
        s->claimed = n;
    else if (strcmp(v[0], "done") == 0)
        s->done = n;
    else if (strcmp(v[0], "failed") == 0)
        s->failed = n;
    return 0;
}

fhirsync_code fs_store_work_summary(fhirsync_store *store, const char *batch,
                                    fs_store_work_counts *out, fhirsync_error *err)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!store || !out)
        return fs_err(err, FHIRSYNC_E_ARG, "no store or output");
    fs_store_work_counts sum = {0, 0, 0, 0};
    fs_sql_value p = fs_sql_text(batch);
    fhirsync_code rc = store->ops->exec(store,
                                        "SELECT state, count(*) FROM work_items"
                                        " WHERE CAST(?1 AS TEXT) IS NULL OR batch = ?1"
                                        " GROUP BY state",
                                        true, &p, 1, read_summary, &sum, NULL, err);
    if (rc == FHIRSYNC_OK)
        *out = sum;
    return rc;
}

typedef struct work_results {
    fs_store_work_result_fn cb;
    void *userdata;
} work_results;

static int read_work_result(void *userdata, int ncols, const char *const *v, const size_t *len,
                            const char *const *names)
{
    (void)len;
    (void)names;
    work_results *w = userdata;
    if (ncols < 2)
        return 0;
    return w->cb(w->userdata, v[0] ? v[0] : "{}", v[1]);
}

fhirsync_code fs_store_work_results(fhirsync_store *store, const char *batch,
                                    fs_store_work_result_fn cb, void *userdata, fhirsync_error *err)
{
    if (!store || !batch || !cb)
        return fs_err(err, FHIRSYNC_E_ARG, "no store, batch or callback");
    work_results w = {cb, userdata};
    fs_sql_value p = fs_sql_text(batch);
    return store->ops->exec(store,
                            "SELECT payload, result FROM work_items"
                            " WHERE batch = ?1 AND state = 'done' ORDER BY id",
                            true, &p, 1, read_work_result, &w, NULL, err);
}
