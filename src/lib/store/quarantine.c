/* store/quarantine.c: recording lines (and resources a view could not evaluate) that could not be
 * stored, with why. Joins the open batch or runs in a transaction of its own (batch.c). */
#include "store/shared_private.h"

fhirsync_code fhirsync_store_quarantine(fhirsync_store *store,
                                        const fhirsync_quarantine_entry *entry, fhirsync_error *err)
{
    fhirsync_code rc = fs_store_check_writable(store, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (!entry || !entry->reason || (!entry->line && entry->line_len))
        return fs_err(err, FHIRSYNC_E_ARG, "a quarantine entry needs a reason");
    bool own;
    rc = fs_store_tx_open(store, &own, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    rc = fs_store_quarantine_in_tx(store, entry, err);
    return fs_store_tx_close(store, own, rc, err);
}

fhirsync_code fs_store_quarantine_in_tx(fhirsync_store *store,
                                        const fhirsync_quarantine_entry *entry, fhirsync_error *err)
{
    size_t kept = entry->line_len;
    if (kept > FHIRSYNC_STORE_QUARANTINE_CAP)
        kept = FHIRSYNC_STORE_QUARANTINE_CAP;
    fs_sql_value p[8] = {entry->run_id > 0 ? fs_sql_int(entry->run_id) : fs_sql_null(),
                         fs_sql_text(entry->endpoint),
                         fs_sql_text(entry->source),
                         entry->line_number > 0 ? fs_sql_int(entry->line_number) : fs_sql_null(),
                         fs_sql_text(entry->reason),
                         entry->line ? fs_sql_blob(entry->line, kept) : fs_sql_null(),
                         fs_sql_int((int64_t)entry->line_len),
                         fs_sql_text(fs_store_loaded_at(store))};
    return store->ops->exec(
        store,
        "INSERT INTO quarantine (run_id, endpoint, source, line_number, reason,"
        " line, line_bytes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        true, p, 8, NULL, NULL, NULL, err);
}
