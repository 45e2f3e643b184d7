/* store/endpoints.c: what the store knows of an endpoint: the FHIR server it syncs (binding:
 * resource ids are unique within one server only, so a store refuses a second server), and the
 * types and ids its runs wrote (what a full export or crawl is compared with). */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "store/shared_private.h"
#include "store/store_internal.h"

fhirsync_code fs_store_bind_endpoint(fhirsync_store *store, const char *endpoint,
                                     const char *base_url, bool shared, fhirsync_error *err)
{
    fhirsync_code rc = fs_store_check_writable(store, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (!endpoint || !*endpoint || !base_url || !*base_url)
        return fs_err(err, FHIRSYNC_E_ARG, "binding needs an endpoint and a base URL");
    char *url = fs_url_comparable(base_url);
    if (!url)
        return fs_store_nomem(err);
    bool own;
    rc = fs_store_tx_open(store, &own, err);
    if (rc == FHIRSYNC_OK && store->engine == FS_ENGINE_POSTGRESQL) {
        /* two endpoints binding at once must see each other */
        fs_sql_value key = fs_sql_int(FS_STORE_PG_BIND_KEY);
        rc = store->ops->exec(store, "SELECT pg_advisory_xact_lock(?1)", true, &key, 1, NULL, NULL,
                              NULL, err);
    }
    char *other = NULL;
    fs_sql_value params[3] = {fs_sql_text(endpoint), fs_sql_text(url),
                              fs_sql_text(fs_store_loaded_at(store))};
    if (rc == FHIRSYNC_OK && !shared)
        rc = fs_store_query_string(store,
                                   "SELECT name || ' (' || base_url || ')' FROM endpoints"
                                   " WHERE name <> ?1 AND base_url <> ?2 ORDER BY name LIMIT 1",
                                   params, 2, &other, err);
    if (rc == FHIRSYNC_OK && other)
        rc = fs_err(err, FHIRSYNC_E_CONFIG,
                    "store %s holds the data of endpoint %s, another FHIR server than %s of "
                    "endpoint %s: resource ids are unique only within one server, so the two "
                    "would overwrite each other's resources. Give %s its own store (store = "
                    "another.db in its [endpoint] section; PostgreSQL: another database, or a "
                    "schema with ?options=-csearch_path%%3D...), or set shared_store = yes "
                    "if both URLs are the same server",
                    store->location, other, url, endpoint, endpoint);
    if (rc == FHIRSYNC_OK)
        rc = store->ops->exec(store,
                              "INSERT INTO endpoints (name, base_url, bound_at)"
                              " VALUES (?1, ?2, ?3) ON CONFLICT (name) DO UPDATE"
                              " SET base_url = excluded.base_url, bound_at = excluded.bound_at",
                              true, params, 3, NULL, NULL, NULL, err);
    rc = fs_store_tx_close(store, own, rc, err);
    fs_free(other);
    fs_free(url);
    return rc;
}

fhirsync_code fs_store_endpoint_types(fhirsync_store *store, const char *endpoint, char ***types,
                                      fhirsync_error *err)
{
    *types = NULL;
    fs_store_type_list all;
    fhirsync_code rc = fs_store_list_types(store, false, &all, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    char **out = fs_calloc(all.count + 1, sizeof *out);
    size_t n = 0;
    if (!out)
        rc = fs_store_nomem(err);
    fs_sql_value p = fs_sql_text(endpoint);
    for (size_t i = 0; rc == FHIRSYNC_OK && i < all.count; i++) {
        char sql[256], quoted[FS_STORE_TYPE_MAX + 3];
        fs_store_quote_type(all.names[i], quoted, sizeof quoted);
        snprintf(sql, sizeof sql,
                 "SELECT 1 FROM %s WHERE run_id IN (SELECT id FROM sync_runs WHERE endpoint = ?1)"
                 " LIMIT 1",
                 quoted);
        bool found = false;
        rc = store->ops->exec(store, sql, false, &p, 1, fs_store_row_exists, &found, NULL, err);
        if (rc == FHIRSYNC_OK && found && !(out[n++] = fs_strdup(all.names[i])))
            rc = fs_store_nomem(err);
    }
    fs_free(all.names);
    if (rc != FHIRSYNC_OK) {
        for (size_t i = 0; out && i < n; i++)
            fs_free(out[i]);
        fs_free(out);
        return rc;
    }
    *types = out;
    return FHIRSYNC_OK;
}

typedef struct id_pass {
    fs_store_id_fn fn;
    void *userdata;
} id_pass;

static int pass_id(void *userdata, int ncols, const char *const *values, const size_t *lengths,
                   const char *const *names)
{
    (void)names;
    id_pass *p = userdata;
    return ncols > 0 && values[0] ? p->fn(p->userdata, values[0], lengths[0]) : 0;
}

fhirsync_code fs_store_endpoint_ids(fhirsync_store *store, const char *endpoint, const char *type,
                                    fs_store_id_fn fn, void *userdata, fhirsync_error *err)
{
    bool exists;
    fhirsync_code rc = fs_store_table_of(store, type, &exists, err);
    if (rc != FHIRSYNC_OK || !exists)
        return rc;
    char sql[256], quoted[FS_STORE_TYPE_MAX + 3];
    fs_store_quote_type(type, quoted, sizeof quoted);
    snprintf(sql, sizeof sql,
             "SELECT id FROM %s WHERE run_id IN (SELECT id FROM sync_runs WHERE endpoint = ?1)"
             " ORDER BY id",
             quoted);
    fs_sql_value p = fs_sql_text(endpoint);
    id_pass pass = {fn, userdata};
    return store->ops->exec(store, sql, false, &p, 1, pass_id, &pass, NULL, err);
}
