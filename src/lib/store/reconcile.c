/* store/reconcile.c: one type's reconciliation (store_internal.h): the rows an endpoint's earlier
 * runs wrote that a complete full export or crawl did not return are gone on the server; they are
 * deleted with a deletion record each, unless there are more of them than the share guard allows.
 * The deletion records are written first, chosen from the rows the DELETE then removes. */
#include <string.h>

#include "store/shared_private.h"
#include "store/store_internal.h"

/* The rows a reconciliation removes: ?1 endpoint, ?2 first run of the export, ?3 deleted_at in
 * ms. Rows written by this endpoint's earlier runs, not changed after the deletion instant. */
#define GONE_ROWS                                                                                  \
    " WHERE run_id IN (SELECT id FROM sync_runs WHERE endpoint = ?1) AND run_id < ?2"              \
    " AND (last_updated_ms IS NULL OR last_updated_ms <= ?3)"

fhirsync_code fs_store_reconcile_type(fhirsync_store *store, const fs_store_reconcile *r,
                                      fs_store_reconcile_result *out, fhirsync_error *err)
{
    memset(out, 0, sizeof *out);
    fhirsync_code rc = fs_store_check_writable(store, err);
    if (rc == FHIRSYNC_OK)
        rc = fs_store_check_type(r->type, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    int64_t deleted_ms;
    if (!r->endpoint || !r->deleted_at ||
        !fs_store_parse_instant_ms(r->deleted_at, strlen(r->deleted_at), &deleted_ms))
        return fs_err(err, FHIRSYNC_E_ARG, "reconciliation needs an endpoint and an instant");
    fs_store_type *t = fs_store_type_entry(store, r->type, strlen(r->type));
    if (!t)
        return fs_store_nomem(err);
    bool own, exists = false;
    rc = fs_store_tx_open(store, &own, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    rc = fs_store_type_exists(store, t, &exists, err);
    char quoted[FS_STORE_TYPE_MAX + 3];
    fs_store_quote_type(r->type, quoted, sizeof quoted);
    fs_buf sql;
    fs_buf_init(&sql);
    fs_sql_value p[8] = {fs_sql_text(r->endpoint),
                         fs_sql_int(r->first_run),
                         fs_sql_int(deleted_ms),
                         fs_sql_text(r->type),
                         fs_sql_text(r->deleted_at),
                         r->run_id > 0 ? fs_sql_int(r->run_id) : fs_sql_null(),
                         fs_sql_text(fs_store_loaded_at(store)),
                         fs_sql_text(r->reason)};
    int64_t counts[2] = {0, 0};
    if (rc == FHIRSYNC_OK && exists) {
        if (!fs_buf_printf(&sql,
                           "SELECT count(*), coalesce(sum(CASE WHEN run_id < ?2 AND"
                           " (last_updated_ms IS NULL OR last_updated_ms <= ?3) THEN 1 ELSE 0"
                           " END), 0) FROM %s WHERE run_id IN (SELECT id FROM sync_runs"
                           " WHERE endpoint = ?1)",
                           quoted))
            rc = fs_store_nomem(err);
        else
            rc =
                store->ops->exec(store, sql.data, false, p, 3, fs_store_row_two, counts, NULL, err);
    }
    out->rows = counts[0];
    out->gone = counts[1];
    bool over = out->gone > 0 && !r->force && r->max_share > 0 && r->max_share < 1 &&
                (double)out->gone > r->max_share * (double)out->rows;
    if (rc == FHIRSYNC_OK && out->gone > 0 && over)
        out->refused = true;
    if (rc == FHIRSYNC_OK && out->gone > 0 && !over) {
        /* the deletion records first: the DELETE removes the rows they are chosen from */
        fs_buf_reset(&sql);
        if (!fs_buf_printf(&sql,
                           "INSERT INTO deletions (resource_type, id, deleted_at, run_id,"
                           " recorded_at, reason) SELECT ?4, id, ?5, CAST(?6 AS bigint), ?7, ?8 "
                           "FROM %s" GONE_ROWS
                           " ON CONFLICT (resource_type, id, deleted_at) DO NOTHING",
                           quoted))
            rc = fs_store_nomem(err);
        else
            rc = store->ops->exec(store, sql.data, false, p, 8, NULL, NULL, NULL, err);
        /* the views' rows of those resources, before the rows they are chosen from go */
        fs_buf_reset(&sql);
        if (rc == FHIRSYNC_OK)
            rc = fs_store_views_ready(store, err);
        if (rc == FHIRSYNC_OK && fs_store_views_cover(store, t)) {
            if (!fs_buf_printf(&sql, "SELECT id FROM %s" GONE_ROWS, quoted))
                rc = fs_store_nomem(err);
            else
                rc = fs_store_views_delete_ids(store, t, sql.data, p, 3, err);
        }
        fs_buf_reset(&sql);
        if (rc == FHIRSYNC_OK && !fs_buf_printf(&sql, "DELETE FROM %s" GONE_ROWS, quoted))
            rc = fs_store_nomem(err);
        else if (rc == FHIRSYNC_OK)
            rc = store->ops->exec(store, sql.data, false, p, 3, NULL, NULL, &out->deleted, err);
    }
    fs_buf_free(&sql);
    rc = fs_store_tx_close(store, own, rc, err);
    if (rc != FHIRSYNC_OK)
        memset(out, 0, sizeof *out);
    return rc;
}
