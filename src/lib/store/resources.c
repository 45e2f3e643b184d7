/* store/resources.c: writing resources: making sure a type's table exists, put (the scan of
 * fields.c, then the engine's upsert of the exact bytes), delete with its deletion record; each
 * keeps the views of the type current (views.c). Each joins the open batch or runs in a
 * transaction of its own (batch.c). */
#include <string.h>

#include "store/shared_private.h"
#include "store/store_internal.h"

/* What a transaction writing resources of t needs first: the view registry read, and t's table
 * (created when missing, unless a view has its name: SQLite's names ignore case, and a resource
 * type must not take a view's table). */
static fhirsync_code ready_to_write(fhirsync_store *s, fs_store_type *t, fhirsync_error *err)
{
    fhirsync_code rc = fs_store_views_ready(s, err);
    if (rc != FHIRSYNC_OK || t->ensured)
        return rc;
    bool exists;
    rc = fs_store_type_exists(s, t, &exists, err);
    if (rc != FHIRSYNC_OK || exists)
        return rc;
    if (fs_store_views_name_taken(s, t->name))
        return fs_err(err, FHIRSYNC_E_JSON,
                      "resourceType %s has the name of the store's view %s (ignoring case)",
                      t->name, t->name);
    return fs_store_ensure_in_tx(s, t, err);
}

fhirsync_code fhirsync_store_ensure_type(fhirsync_store *store, const char *type,
                                         fhirsync_error *err)
{
    fhirsync_code rc = fs_store_check_writable(store, err);
    if (rc == FHIRSYNC_OK)
        rc = fs_store_check_type(type, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    fs_store_type *t = fs_store_type_entry(store, type, strlen(type));
    if (!t)
        return fs_store_nomem(err);
    if (t->ensured)
        return FHIRSYNC_OK;
    bool own;
    rc = fs_store_tx_open(store, &own, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    rc = ready_to_write(store, t, err);
    return fs_store_tx_close(store, own, rc, err);
}

fhirsync_code fhirsync_store_put(fhirsync_store *store, const char *type, const char *line,
                                 size_t len, int64_t run_id, fhirsync_put_outcome *outcome,
                                 fhirsync_error *err)
{
    if (outcome)
        *outcome = FHIRSYNC_PUT_STORED;
    fhirsync_code rc = fs_store_check_writable(store, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (!line)
        return fs_err(err, FHIRSYNC_E_ARG, "no line");
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    fs_resource_fields f;
    const char *why = fs_store_scan_fields(line, len, &f);
    if (why)
        return fs_err(err, FHIRSYNC_E_JSON, "%s", why);
    if (type && (strlen(type) != f.resource_type_len ||
                 memcmp(type, f.resource_type, f.resource_type_len) != 0))
        return fs_err(err, FHIRSYNC_E_JSON, "resourceType %.*s where %s was expected",
                      (int)f.resource_type_len, f.resource_type, type);
    fs_store_type *t = fs_store_type_entry(store, f.resource_type, f.resource_type_len);
    if (!t)
        return fs_store_nomem(err);
    if (!t->ensured && fs_store_reserved_type(t->name))
        return fs_err(err, FHIRSYNC_E_JSON, "resourceType %s is reserved", t->name);
    bool own;
    rc = fs_store_tx_open(store, &own, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    rc = ready_to_write(store, t, err);
    fhirsync_put_outcome done = FHIRSYNC_PUT_KEPT_NEWER;
    store->put_inserted = false;
    if (rc == FHIRSYNC_OK)
        rc = store->ops->put(store, t, &f, line, len, run_id, &done, err);
    /* a staged row gets its views' rows when it is merged (fs_store_views_merged) */
    if (rc == FHIRSYNC_OK && done == FHIRSYNC_PUT_STORED && fs_store_views_cover(store, t))
        rc = fs_store_views_put(store, t, f.id, f.id_len, line, len, run_id, store->put_inserted,
                                err);
    if (rc == FHIRSYNC_OK && outcome)
        *outcome = done;
    return fs_store_tx_close(store, own, rc, err);
}

bool fs_store_resource_key_ok(const char *type, const char *id)
{
    return type && fs_store_valid_type(type, strlen(type)) && !fs_store_reserved_type(type) && id &&
           fs_store_valid_id(id, strlen(id));
}

fhirsync_code fhirsync_store_delete(fhirsync_store *store, const char *type, const char *id,
                                    const char *deleted_at, int64_t run_id, bool *removed,
                                    fhirsync_error *err)
{
    return fs_store_delete_why(store, type, id, deleted_at, run_id, NULL, removed, err);
}

fhirsync_code fs_store_delete_why(fhirsync_store *store, const char *type, const char *id,
                                  const char *deleted_at, int64_t run_id, const char *reason,
                                  bool *removed, fhirsync_error *err)
{
    if (removed)
        *removed = false;
    fhirsync_code rc = fs_store_check_writable(store, err);
    if (rc == FHIRSYNC_OK)
        rc = fs_store_check_type(type, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (!id || !fs_store_valid_id(id, strlen(id)))
        return fs_err(err, FHIRSYNC_E_ARG, "'%s' is not a FHIR id", id ? id : "(null)");
    char now[32];
    if (!deleted_at) {
        fs_format_instant(fs_now(), now, sizeof now);
        deleted_at = now;
    }
    int64_t deleted_ms;
    if (!fs_store_parse_instant_ms(deleted_at, strlen(deleted_at), &deleted_ms))
        return fs_err(err, FHIRSYNC_E_ARG, "deleted_at '%s' is not a FHIR instant", deleted_at);
    fs_store_type *t = fs_store_type_entry(store, type, strlen(type));
    if (!t)
        return fs_store_nomem(err);
    bool own, exists = false, gone = false;
    rc = fs_store_tx_open(store, &own, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    rc = fs_store_type_exists(store, t, &exists, err);
    if (rc == FHIRSYNC_OK)
        rc = fs_store_views_ready(store, err);
    if (rc == FHIRSYNC_OK && exists)
        rc = store->ops->remove(store, t, id, fs_sql_int(deleted_ms), &gone, err);
    if (rc == FHIRSYNC_OK && gone && fs_store_views_cover(store, t))
        rc = fs_store_views_delete(store, t, id, err);
    if (rc == FHIRSYNC_OK) {
        fs_sql_value p[6] = {fs_sql_text(type),
                             fs_sql_text(id),
                             fs_sql_text(deleted_at),
                             run_id > 0 ? fs_sql_int(run_id) : fs_sql_null(),
                             fs_sql_text(fs_store_loaded_at(store)),
                             fs_sql_text(reason)};
        rc = store->ops->exec(store,
                              "INSERT INTO deletions (resource_type, id, deleted_at, run_id,"
                              " recorded_at, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                              " ON CONFLICT (resource_type, id, deleted_at) DO NOTHING",
                              true, p, 6, NULL, NULL, NULL, err);
    }
    rc = fs_store_tx_close(store, own, rc, err);
    if (rc == FHIRSYNC_OK && removed)
        *removed = gone;
    return rc;
}
