/* store/report.c: what the store answers a user: resources per type, one patient's record,
 * deletions per way they were found, the quarantine, and read-only SQL of the user's own. Results
 * stream to callbacks, never held whole. */
#include <stdio.h>
#include <string.h>

#include "store/shared_private.h"
#include "store/store_internal.h"

fhirsync_code fhirsync_store_deletion_summary(fhirsync_store *store, const char *endpoint,
                                              fhirsync_deletion_summary *out, fhirsync_error *err)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!store || !endpoint || !out)
        return fs_err(err, FHIRSYNC_E_ARG, "no store, endpoint or output");
    fs_sql_value p[2] = {fs_sql_text(endpoint), fs_sql_text(FS_STORE_DELETED_LISTED)};
    int64_t counts[2] = {0, 0};
    fhirsync_code rc = store->ops->exec(
        store,
        "SELECT coalesce(sum(CASE WHEN reason = ?2 THEN 1 ELSE 0 END), 0),"
        " coalesce(sum(CASE WHEN reason IS NOT NULL AND reason <> ?2 THEN 1 ELSE 0 END), 0)"
        " FROM deletions WHERE run_id IN (SELECT id FROM sync_runs WHERE endpoint = ?1)",
        true, p, 2, fs_store_row_two, counts, NULL, err);
    if (rc == FHIRSYNC_OK) {
        out->listed = counts[0];
        out->reconciled = counts[1];
    }
    return rc;
}

/* The rows of a type whose table exists. */
static fhirsync_code count_rows(fhirsync_store *store, const char *type, int64_t *rows,
                                fhirsync_error *err)
{
    char sql[128], quoted[FS_STORE_TYPE_MAX + 3];
    fs_store_quote_type(type, quoted, sizeof quoted);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", quoted);
    return store->ops->exec(store, sql, false, NULL, 0, fs_store_row_int, rows, NULL, err);
}

fhirsync_code fs_store_type_rows(fhirsync_store *store, const char *type, int64_t *rows,
                                 fhirsync_error *err)
{
    *rows = 0;
    bool exists;
    fhirsync_code rc = fs_store_table_of(store, type, &exists, err);
    if (rc == FHIRSYNC_OK && exists)
        rc = count_rows(store, type, rows, err);
    return rc;
}

fhirsync_code fhirsync_store_counts(fhirsync_store *store, fhirsync_type_count **counts, size_t *n,
                                    fhirsync_error *err)
{
    if (counts)
        *counts = NULL;
    if (n)
        *n = 0;
    if (!store || !counts || !n)
        return fs_err(err, FHIRSYNC_E_ARG, "no store or output");
    fs_store_type_list types;
    fhirsync_code rc = fs_store_list_types(store, false, &types, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    fhirsync_type_count *out = fs_calloc(types.count ? types.count : 1, sizeof *out);
    if (!out)
        rc = fs_store_nomem(err);
    for (size_t i = 0; rc == FHIRSYNC_OK && i < types.count; i++) {
        snprintf(out[i].type, sizeof out[i].type, "%s", types.names[i]);
        rc = count_rows(store, types.names[i], &out[i].count, err);
    }
    size_t count = types.count;
    fs_free(types.names);
    if (rc != FHIRSYNC_OK) {
        fs_free(out);
        return rc;
    }
    *counts = out;
    *n = count;
    return FHIRSYNC_OK;
}

typedef struct record_ctx {
    const char *type;
    fhirsync_resource_cb cb;
    void *userdata;
    bool stopped;
} record_ctx;

static int read_resource(void *userdata, int ncols, const char *const *v, const size_t *len,
                         const char *const *names)
{
    (void)names;
    record_ctx *c = userdata;
    if (ncols < 4 || !v[0] || !v[3])
        return 0;
    fhirsync_resource_row row = {c->type, v[0], v[1], v[2], v[3], len[3]};
    if (c->cb(&row, c->userdata) != 0) {
        c->stopped = true;
        return 1;
    }
    return 0;
}

fhirsync_code fhirsync_store_patient_record(fhirsync_store *store, const char *patient_id,
                                            fhirsync_resource_cb cb, void *userdata,
                                            fhirsync_error *err)
{
    if (!store || !patient_id || !cb)
        return fs_err(err, FHIRSYNC_E_ARG, "no store, patient id or callback");
    if (!fs_store_valid_id(patient_id, strlen(patient_id)))
        return fs_err(err, FHIRSYNC_E_ARG, "'%s' is not a FHIR id", patient_id);
    fs_store_type_list types;
    fhirsync_code rc = fs_store_list_types(store, true, &types, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    record_ctx ctx = {NULL, cb, userdata, false};
    fs_sql_value p = fs_sql_text(patient_id);
    for (size_t i = 0; rc == FHIRSYNC_OK && i < types.count && !ctx.stopped; i++) {
        char sql[256], quoted[FS_STORE_TYPE_MAX + 3];
        fs_store_quote_type(types.names[i], quoted, sizeof quoted);
        snprintf(sql, sizeof sql,
                 "SELECT id, version_id, last_updated, raw FROM %s WHERE patient_id = ?1"
                 " ORDER BY id",
                 quoted);
        ctx.type = types.names[i];
        rc = store->ops->exec(store, sql, false, &p, 1, read_resource, &ctx, NULL, err);
    }
    fs_free(types.names);
    return rc;
}

typedef struct quarantine_ctx {
    fhirsync_quarantine_cb cb;
    void *userdata;
} quarantine_ctx;

static int read_quarantined(void *userdata, int ncols, const char *const *v, const size_t *len,
                            const char *const *names)
{
    (void)names;
    quarantine_ctx *c = userdata;
    if (ncols < 9)
        return 1;
    fhirsync_quarantine_entry e = {fs_store_int_or_zero(v[0]),
                                   fs_store_int_or_zero(v[1]),
                                   v[2],
                                   v[3],
                                   fs_store_int_or_zero(v[4]),
                                   v[5],
                                   v[6],
                                   v[6] ? len[6] : 0,
                                   fs_store_int_or_zero(v[7]),
                                   v[8]};
    return c->cb(&e, c->userdata) != 0;
}

fhirsync_code fhirsync_store_quarantine_list(fhirsync_store *store, int64_t run_id, size_t limit,
                                             fhirsync_quarantine_cb cb, void *userdata,
                                             fhirsync_error *err)
{
    if (!store || !cb)
        return fs_err(err, FHIRSYNC_E_ARG, "no store or callback");
    quarantine_ctx ctx = {cb, userdata};
    fs_sql_value p[2] = {fs_sql_int(run_id), fs_sql_int(limit ? (int64_t)limit : 20)};
    return store->ops->exec(store,
                            "SELECT id, run_id, endpoint, source, line_number, reason, line,"
                            " line_bytes, created_at FROM quarantine"
                            " WHERE ?1 = 0 OR run_id = ?1 ORDER BY id DESC LIMIT ?2",
                            true, p, 2, read_quarantined, &ctx, NULL, err);
}

fhirsync_code fhirsync_store_query(fhirsync_store *store, const char *sql, fhirsync_row_cb cb,
                                   void *userdata, fhirsync_error *err)
{
    if (!store || !sql || !cb)
        return fs_err(err, FHIRSYNC_E_ARG, "no store, SQL or callback");
    fhirsync_code rc = fs_store_check_outside_batch(store, "a query", err);
    if (rc != FHIRSYNC_OK)
        return rc;
    return store->ops->query(store, sql, cb, userdata, err);
}
