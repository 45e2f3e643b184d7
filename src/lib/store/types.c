/* store/types.c: resource types. Each handle caches the types it has used (their table is known
 * to exist, and the engines keep their prepared statements there); a type's table is created on
 * first use (schema.c has its DDL) and registered in resource_types, which lists the tables for
 * the queries. fhirsync_store_ensure_type is the public face of it. */
#include <string.h>

#include "store/shared_private.h"

fs_store_type *fs_store_type_entry(fhirsync_store *s, const char *name, size_t len)
{
    if (s->last_type < s->type_count) {
        fs_store_type *t = &s->types[s->last_type];
        if (t->len == len && memcmp(t->name, name, len) == 0)
            return t;
    }
    for (size_t i = 0; i < s->type_count; i++) {
        fs_store_type *t = &s->types[i];
        if (t->len == len && memcmp(t->name, name, len) == 0) {
            s->last_type = i;
            return t;
        }
    }
    if (s->type_count == s->type_cap) {
        fs_store_type *grown = fs_array_grow(s->types, &s->type_cap, sizeof *grown, 16);
        if (!grown)
            return NULL;
        s->types = grown;
    }
    fs_store_type *t = &s->types[s->type_count];
    memset(t, 0, sizeof *t);
    memcpy(t->name, name, len);
    t->name[len] = '\0';
    t->len = len;
    t->slot = (unsigned)s->type_count;
    s->last_type = s->type_count++;
    return t;
}

fhirsync_code fs_store_type_exists(fhirsync_store *s, fs_store_type *t, bool *exists,
                                   fhirsync_error *err)
{
    *exists = t->ensured;
    if (t->ensured)
        return FHIRSYNC_OK;
    fs_sql_value p = fs_sql_text(t->name);
    fhirsync_code rc = s->ops->exec(s, "SELECT 1 FROM resource_types WHERE type = ?1", true, &p, 1,
                                    fs_store_row_exists, exists, NULL, err);
    if (rc == FHIRSYNC_OK && *exists)
        t->ensured = true;
    return rc;
}

fhirsync_code fs_store_ensure_in_tx(fhirsync_store *s, fs_store_type *t, fhirsync_error *err)
{
    bool exists;
    fhirsync_code rc = fs_store_type_exists(s, t, &exists, err);
    if (rc != FHIRSYNC_OK || exists)
        return rc;
    if (s->engine == FS_ENGINE_POSTGRESQL) {
        /* two workers creating the same table at once would collide in the catalog */
        fs_sql_value key = fs_sql_int(FS_STORE_PG_DDL_KEY);
        rc = s->ops->exec(s, "SELECT pg_advisory_xact_lock(?1)", true, &key, 1, NULL, NULL, NULL,
                          err);
        if (rc != FHIRSYNC_OK)
            return rc;
    }
    rc = fs_schema_create_type(s, t->name, err);
    if (rc == FHIRSYNC_OK) {
        t->ensured = true;
        t->ensured_in_batch = true;
        fs_log(FHIRSYNC_LOG_DEBUG, "store: created the table of %s", t->name);
    }
    return rc;
}

static int read_type(void *userdata, int ncols, const char *const *v, const size_t *len,
                     const char *const *names)
{
    (void)names;
    fs_store_type_list *l = userdata;
    if (ncols < 1 || !v[0] || len[0] > FS_STORE_TYPE_MAX || !fs_store_valid_type(v[0], len[0]))
        return 0;
    if (l->count == l->cap) {
        void *grown = fs_array_grow(l->names, &l->cap, sizeof *l->names, 32);
        if (!grown) {
            l->nomem = true;
            return 1;
        }
        l->names = grown;
    }
    memcpy(l->names[l->count], v[0], len[0]);
    l->names[l->count][len[0]] = '\0';
    l->count++;
    return 0;
}

fhirsync_code fs_store_list_types(fhirsync_store *s, bool patient_first, fs_store_type_list *l,
                                  fhirsync_error *err)
{
    memset(l, 0, sizeof *l);
    fhirsync_code rc =
        s->ops->exec(s,
                     patient_first ? "SELECT type FROM resource_types"
                                     " ORDER BY CASE WHEN type = 'Patient' THEN 0 ELSE 1 END,"
                                     " type"
                                   : "SELECT type FROM resource_types ORDER BY type",
                     true, NULL, 0, read_type, l, NULL, err);
    if (rc == FHIRSYNC_OK && l->nomem)
        rc = fs_store_nomem(err);
    if (rc != FHIRSYNC_OK) {
        fs_free(l->names);
        memset(l, 0, sizeof *l);
    }
    return rc;
}

fhirsync_code fs_store_table_of(fhirsync_store *store, const char *type, bool *exists,
                                fhirsync_error *err)
{
    *exists = false;
    if (!type || !fs_store_valid_type(type, strlen(type)) || fs_store_reserved_type(type))
        return FHIRSYNC_OK;
    fs_store_type *t = fs_store_type_entry(store, type, strlen(type));
    return t ? fs_store_type_exists(store, t, exists, err) : fs_store_nomem(err);
}
