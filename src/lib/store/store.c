/* store/store.c: the public store API (fhirsync/store.h) and everything that is the same on both
 * engines: argument checks, batches and implicit transactions, the per-handle cache of resource
 * types, runs and the watermark, deletions, the quarantine, the rows of endpoint locks, the work
 * queue and the queries. The engines (sqlite.c, postgresql.c) implement the vtable of
 * store_int.h; the SQL here is shared and written with ?N placeholders. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "json/json.h"
#include "store/store_int.h"
#include "store/store_lib.h"

/* ---- small helpers --------------------------------------------------------------------------- */

static fhirsync_code no_memory(fhirsync_error *err)
{
    return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
}

const char *fs_store_loaded_at(fhirsync_store *s)
{
    int64_t now = fs_now();
    if (now != s->loaded_at_epoch || !s->loaded_at[0]) {
        fs_format_instant(now, s->loaded_at, sizeof s->loaded_at);
        s->loaded_at_epoch = now;
    }
    return s->loaded_at;
}

uint64_t fs_store_hash(const char *domain, const char *text)
{
    uint64_t h = UINT64_C(14695981039346656037);
    for (const char *p = domain; *p; p++)
        h = (h ^ (unsigned char)*p) * UINT64_C(1099511628211);
    h = (h ^ (unsigned char)':') * UINT64_C(1099511628211);
    for (const char *p = text; *p; p++)
        h = (h ^ (unsigned char)*p) * UINT64_C(1099511628211);
    return h;
}

void fs_store_quote_type(const char *type, char *buf, size_t size)
{
    /* the name was validated: letters only, so quoting needs no escaping */
    snprintf(buf, size, "\"%s\"", type);
}

bool fs_store_batch_unusable(fhirsync_store *s, fhirsync_error *err)
{
    if (!s->in_batch || !s->batch_failed)
        return false;
    fs_err(err, FHIRSYNC_E_STORE,
           "an earlier database error made the open batch unusable: roll it back");
    return true;
}

/* Names of internal tables that a type name could collide with (SQLite ignores case). */
static bool reserved_type(const char *name)
{
    return strcasecmp(name, "deletions") == 0 || strcasecmp(name, "quarantine") == 0;
}

static fhirsync_code check_type(const char *type, fhirsync_error *err)
{
    if (!type || !fs_store_valid_type(type, strlen(type)))
        return fs_err(err, FHIRSYNC_E_ARG,
                      "'%s' is not a resource type name (^[A-Z][A-Za-z]{1,62}$)",
                      type ? type : "(null)");
    if (reserved_type(type))
        return fs_err(err, FHIRSYNC_E_ARG, "'%s' is reserved for an internal table", type);
    return FHIRSYNC_OK;
}

static fhirsync_code check_writable(fhirsync_store *s, fhirsync_error *err)
{
    if (!s)
        return fs_err(err, FHIRSYNC_E_ARG, "no store");
    if (s->flags & FHIRSYNC_STORE_READONLY)
        return fs_err(err, FHIRSYNC_E_ARG, "store %s was opened read-only", s->location);
    return FHIRSYNC_OK;
}

static fhirsync_code check_outside_batch(fhirsync_store *s, const char *what, fhirsync_error *err)
{
    if (s->in_batch)
        return fs_err(err, FHIRSYNC_E_ARG, "%s must not run inside a batch", what);
    return FHIRSYNC_OK;
}

/* Whether a text is a JSON object (or with any_value, any JSON value). */
static bool is_json(const char *text, bool any_value)
{
    json_t *doc = fs_json_parse(text, strlen(text), !any_value, "JSON", NULL);
    bool ok = doc != NULL;
    json_decref(doc);
    return ok;
}

/* Row callbacks for single values. */
static int row_string(void *userdata, int ncols, const char *const *values, const size_t *lengths,
                      const char *const *names)
{
    (void)names;
    char **out = userdata;
    if (ncols > 0 && values[0] && !*out) {
        *out = fs_strndup(values[0], lengths[0]);
        if (!*out)
            *out = (char *)-1; /* out of memory: told apart below */
    }
    return 1;
}

static int row_int(void *userdata, int ncols, const char *const *values, const size_t *lengths,
                   const char *const *names)
{
    (void)lengths;
    (void)names;
    long v;
    if (ncols > 0 && values[0] && fs_parse_long(values[0], &v))
        *(int64_t *)userdata = v;
    return 1;
}

static int row_exists(void *userdata, int ncols, const char *const *values,
                      const size_t *lengths, const char *const *names)
{
    (void)ncols;
    (void)values;
    (void)lengths;
    (void)names;
    *(bool *)userdata = true;
    return 1;
}

/* Run a query returning one text value into *out (the caller's; NULL when no row or NULL). */
static fhirsync_code query_string(fhirsync_store *s, const char *sql, const fs_sql_value *params,
                                  int n, char **out, fhirsync_error *err)
{
    *out = NULL;
    fhirsync_code rc = s->ops->exec(s, sql, true, params, n, row_string, out, NULL, err);
    if (*out == (char *)-1) {
        *out = NULL;
        return no_memory(err);
    }
    if (rc != FHIRSYNC_OK) {
        fs_free(*out);
        *out = NULL;
    }
    return rc;
}

/* ---- transactions ---------------------------------------------------------------------------- */

/* Types whose table was created in the transaction that just ended: kept on commit, forgotten
 * (with their statements) on rollback, since the table went with it. */
static void settle_types(fhirsync_store *s, bool committed)
{
    for (size_t i = 0; i < s->type_count; i++) {
        fs_store_type *t = &s->types[i];
        if (!t->ensured_in_batch)
            continue;
        t->ensured_in_batch = false;
        if (!committed) {
            t->ensured = false;
            s->ops->forget_type(s, t);
        }
    }
}

static void end_rollback(fhirsync_store *s)
{
    s->ops->rollback(s);
    settle_types(s, false);
}

/* Join the open batch, or begin a transaction of our own (*own). */
static fhirsync_code tx_open(fhirsync_store *s, bool *own, fhirsync_error *err)
{
    *own = false;
    if (s->in_batch)
        return fs_store_batch_unusable(s, err) ? FHIRSYNC_E_STORE : FHIRSYNC_OK;
    fhirsync_code rc = s->ops->begin(s, err);
    if (rc == FHIRSYNC_OK)
        *own = true;
    return rc;
}

/* End what tx_open began: commit on success, roll back on failure. In a batch, a database error
 * makes the batch unusable. */
static fhirsync_code tx_close(fhirsync_store *s, bool own, fhirsync_code rc, fhirsync_error *err)
{
    if (!own) {
        if ((rc == FHIRSYNC_E_STORE || rc == FHIRSYNC_E_CONFLICT) && s->in_batch)
            s->batch_failed = true;
        return rc;
    }
    if (rc == FHIRSYNC_OK) {
        rc = s->ops->commit(s, err);
        settle_types(s, rc == FHIRSYNC_OK);
    } else {
        end_rollback(s);
    }
    return rc;
}

fhirsync_code fhirsync_store_begin(fhirsync_store *store, unsigned flags, fhirsync_error *err)
{
    fhirsync_code rc = check_writable(store, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (store->in_batch)
        return fs_err(err, FHIRSYNC_E_ARG, "a batch is already open");
    rc = store->ops->begin(store, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    store->in_batch = true;
    store->bulk = (flags & FHIRSYNC_STORE_BULK) != 0;
    store->append = store->bulk && (flags & FHIRSYNC_STORE_APPEND) != 0;
    store->batch_failed = false;
    return FHIRSYNC_OK;
}

fhirsync_code fhirsync_store_commit(fhirsync_store *store, fhirsync_error *err)
{
    if (!store || !store->in_batch)
        return fs_err(err, FHIRSYNC_E_ARG, "no open batch to commit");
    fhirsync_code rc;
    if (store->batch_failed) {
        fs_store_batch_unusable(store, err);
        end_rollback(store);
        rc = FHIRSYNC_E_STORE;
    } else {
        rc = store->ops->commit(store, err);
        settle_types(store, rc == FHIRSYNC_OK);
    }
    store->in_batch = store->bulk = store->append = store->batch_failed = false;
    return rc;
}

fhirsync_code fhirsync_store_rollback(fhirsync_store *store, fhirsync_error *err)
{
    (void)err;
    if (!store || !store->in_batch)
        return FHIRSYNC_OK;
    end_rollback(store);
    store->in_batch = store->bulk = store->append = store->batch_failed = false;
    return FHIRSYNC_OK;
}

/* ---- resource types -------------------------------------------------------------------------- */

/* The cache entry of a type (added when new). NULL on out of memory. */
static fs_store_type *type_entry(fhirsync_store *s, const char *name, size_t len)
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
        size_t cap = s->type_cap ? s->type_cap * 2 : 16;
        fs_store_type *grown = fs_realloc(s->types, cap * sizeof *grown);
        if (!grown)
            return NULL;
        s->types = grown;
        s->type_cap = cap;
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

/* Whether the table of t exists (asking the registry once per handle). */
static fhirsync_code type_exists(fhirsync_store *s, fs_store_type *t, bool *exists,
                                 fhirsync_error *err)
{
    *exists = t->ensured;
    if (t->ensured)
        return FHIRSYNC_OK;
    fs_sql_value p = fs_sql_text(t->name);
    fhirsync_code rc = s->ops->exec(s, "SELECT 1 FROM resource_types WHERE type = ?1", true, &p,
                                    1, row_exists, exists, NULL, err);
    if (rc == FHIRSYNC_OK && *exists)
        t->ensured = true;
    return rc;
}

/* Create t's table when missing; inside the caller's transaction. */
static fhirsync_code ensure_in_tx(fhirsync_store *s, fs_store_type *t, fhirsync_error *err)
{
    bool exists;
    fhirsync_code rc = type_exists(s, t, &exists, err);
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
    char *ddl = fs_schema_type_ddl(s->engine, t->name);
    if (!ddl)
        return no_memory(err);
    rc = s->ops->script(s, ddl, err);
    fs_free(ddl);
    fs_sql_value params[2] = {fs_sql_text(t->name), fs_sql_text(fs_store_loaded_at(s))};
    if (rc == FHIRSYNC_OK)
        rc = s->ops->exec(s,
                          "INSERT INTO resource_types (type, created_at) VALUES (?1, ?2)"
                          " ON CONFLICT (type) DO NOTHING",
                          true, params, 2, NULL, NULL, NULL, err);
    if (rc == FHIRSYNC_OK) {
        t->ensured = true;
        t->ensured_in_batch = true;
        fs_log(FHIRSYNC_LOG_DEBUG, "store: created the table of %s", t->name);
    }
    return rc;
}

fhirsync_code fhirsync_store_ensure_type(fhirsync_store *store, const char *type,
                                         fhirsync_error *err)
{
    fhirsync_code rc = check_writable(store, err);
    if (rc == FHIRSYNC_OK)
        rc = check_type(type, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    fs_store_type *t = type_entry(store, type, strlen(type));
    if (!t)
        return no_memory(err);
    if (t->ensured)
        return FHIRSYNC_OK;
    bool own;
    rc = tx_open(store, &own, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    rc = ensure_in_tx(store, t, err);
    return tx_close(store, own, rc, err);
}

/* ---- resources ------------------------------------------------------------------------------- */

fhirsync_code fhirsync_store_put(fhirsync_store *store, const char *type, const char *line,
                                 size_t len, int64_t run_id, fhirsync_put_outcome *outcome,
                                 fhirsync_error *err)
{
    if (outcome)
        *outcome = FHIRSYNC_PUT_STORED;
    fhirsync_code rc = check_writable(store, err);
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
    fs_store_type *t = type_entry(store, f.resource_type, f.resource_type_len);
    if (!t)
        return no_memory(err);
    if (!t->ensured && reserved_type(t->name))
        return fs_err(err, FHIRSYNC_E_JSON, "resourceType %s is reserved", t->name);
    bool own;
    rc = tx_open(store, &own, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (!t->ensured)
        rc = ensure_in_tx(store, t, err);
    if (rc == FHIRSYNC_OK)
        rc = store->ops->put(store, t, &f, line, len, run_id, outcome, err);
    return tx_close(store, own, rc, err);
}

bool fs_store_resource_key_ok(const char *type, const char *id)
{
    return type && fs_store_valid_type(type, strlen(type)) && !reserved_type(type) && id &&
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
    fhirsync_code rc = check_writable(store, err);
    if (rc == FHIRSYNC_OK)
        rc = check_type(type, err);
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
    fs_store_type *t = type_entry(store, type, strlen(type));
    if (!t)
        return no_memory(err);
    bool own, exists = false, gone = false;
    rc = tx_open(store, &own, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    rc = type_exists(store, t, &exists, err);
    if (rc == FHIRSYNC_OK && exists)
        rc = store->ops->remove(store, t, id, fs_sql_int(deleted_ms), &gone, err);
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
    rc = tx_close(store, own, rc, err);
    if (rc == FHIRSYNC_OK && removed)
        *removed = gone;
    return rc;
}

/* ---- reconciliation (store_lib.h) ------------------------------------------------------------ */

/* The rows a reconciliation removes: ?1 endpoint, ?2 first run of the export, ?3 deleted_at in
 * ms. Rows written by this endpoint's earlier runs, not changed after the deletion instant. */
#define GONE_ROWS                                                                                  \
    " WHERE run_id IN (SELECT id FROM sync_runs WHERE endpoint = ?1) AND run_id < ?2"              \
    " AND (last_updated_ms IS NULL OR last_updated_ms <= ?3)"

static int read_two(void *userdata, int ncols, const char *const *values, const size_t *lengths,
                    const char *const *names)
{
    (void)lengths;
    (void)names;
    int64_t *out = userdata;
    for (int i = 0; i < ncols && i < 2; i++) {
        long v = 0;
        if (values[i] && fs_parse_long(values[i], &v))
            out[i] = v;
    }
    return 1;
}

fhirsync_code fs_store_reconcile_type(fhirsync_store *store, const fs_store_reconcile *r,
                                      fs_store_reconcile_result *out, fhirsync_error *err)
{
    memset(out, 0, sizeof *out);
    fhirsync_code rc = check_writable(store, err);
    if (rc == FHIRSYNC_OK)
        rc = check_type(r->type, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    int64_t deleted_ms;
    if (!r->endpoint || !r->deleted_at ||
        !fs_store_parse_instant_ms(r->deleted_at, strlen(r->deleted_at), &deleted_ms))
        return fs_err(err, FHIRSYNC_E_ARG, "reconciliation needs an endpoint and an instant");
    fs_store_type *t = type_entry(store, r->type, strlen(r->type));
    if (!t)
        return no_memory(err);
    bool own, exists = false;
    rc = tx_open(store, &own, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    rc = type_exists(store, t, &exists, err);
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
            rc = no_memory(err);
        else
            rc = store->ops->exec(store, sql.data, false, p, 3, read_two, counts, NULL, err);
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
            rc = no_memory(err);
        else
            rc = store->ops->exec(store, sql.data, false, p, 8, NULL, NULL, NULL, err);
        fs_buf_reset(&sql);
        if (rc == FHIRSYNC_OK && !fs_buf_printf(&sql, "DELETE FROM %s" GONE_ROWS, quoted))
            rc = no_memory(err);
        else if (rc == FHIRSYNC_OK)
            rc = store->ops->exec(store, sql.data, false, p, 3, NULL, NULL, &out->deleted, err);
    }
    fs_buf_free(&sql);
    rc = tx_close(store, own, rc, err);
    if (rc != FHIRSYNC_OK)
        memset(out, 0, sizeof *out);
    return rc;
}

fhirsync_code fhirsync_store_quarantine(fhirsync_store *store,
                                        const fhirsync_quarantine_entry *entry,
                                        fhirsync_error *err)
{
    fhirsync_code rc = check_writable(store, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (!entry || !entry->reason || (!entry->line && entry->line_len))
        return fs_err(err, FHIRSYNC_E_ARG, "a quarantine entry needs a reason");
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
    bool own;
    rc = tx_open(store, &own, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    rc = store->ops->exec(store,
                          "INSERT INTO quarantine (run_id, endpoint, source, line_number, reason,"
                          " line, line_bytes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                          true, p, 8, NULL, NULL, NULL, err);
    return tx_close(store, own, rc, err);
}

/* ---- runs and the watermark ------------------------------------------------------------------ */

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

static bool holds_lock(const fhirsync_store *s, const char *endpoint)
{
    for (const fs_store_lock *l = s->locks; l; l = l->next)
        if (strcmp(l->endpoint, endpoint) == 0)
            return true;
    return false;
}

fhirsync_code fhirsync_store_run_begin(fhirsync_store *store, const char *endpoint,
                                       const char *mode, const char *since, int64_t *run_id,
                                       fhirsync_error *err)
{
    if (run_id)
        *run_id = 0;
    fhirsync_code rc = check_writable(store, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (!endpoint || !*endpoint || !run_id)
        return fs_err(err, FHIRSYNC_E_ARG, "a run needs an endpoint and a place for its id");
    const char *now = fs_store_loaded_at(store);
    bool own;
    rc = tx_open(store, &own, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (holds_lock(store, endpoint)) {
        fs_sql_value p[2] = {fs_sql_text(endpoint), fs_sql_text(now)};
        rc = store->ops->exec(store,
                              "UPDATE sync_runs SET status = 'failed', finished_at = ?2,"
                              " error = 'interrupted: the process ended before the run finished'"
                              " WHERE endpoint = ?1 AND status = 'running'",
                              true, p, 2, NULL, NULL, NULL, err);
    }
    int64_t id = 0;
    if (rc == FHIRSYNC_OK) {
        fs_sql_value p[6] = {fs_sql_text(endpoint), fs_sql_text(mode), fs_sql_text(now),
                             fs_sql_text(since), fs_sql_int(store->pid),
                             fs_sql_text(store->hostname)};
        rc = store->ops->exec(store,
                              "INSERT INTO sync_runs (endpoint, mode, status, started_at, since,"
                              " pid, hostname) VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6)"
                              " RETURNING id",
                              true, p, 6, row_int, &id, NULL, err);
    }
    if (rc == FHIRSYNC_OK && id <= 0)
        rc = fs_err(err, FHIRSYNC_E_STORE, "the new run got no id");
    rc = tx_close(store, own, rc, err);
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

fhirsync_code fhirsync_store_run_finish(fhirsync_store *store, int64_t run_id,
                                        const fhirsync_run_end *end, fhirsync_error *err)
{
    fhirsync_code rc = check_writable(store, err);
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
    if (end->counts_json && !is_json(end->counts_json, false))
        return fs_err(err, FHIRSYNC_E_ARG, "counts_json is not a JSON object");
    bool in_batch = store->in_batch;
    bool own;
    rc = tx_open(store, &own, err);
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
    rc = query_string(store,
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
        rc = tx_close(store, own, rc, err);
    }
    if (rc == FHIRSYNC_OK)
        fs_log(FHIRSYNC_LOG_INFO, "store: run %lld of %s ended %s%s%s", (long long)run_id,
               endpoint, fhirsync_run_status_name(end->status),
               end->new_watermark ? ", watermark " : "",
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
    return query_string(store, "SELECT watermark FROM sync_state WHERE endpoint = ?1", &p, 1,
                        watermark, err);
}

fhirsync_code fhirsync_store_set_watermark(fhirsync_store *store, const char *endpoint,
                                           const char *watermark, fhirsync_error *err)
{
    fhirsync_code rc = check_writable(store, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    int64_t ms;
    if (!endpoint || (watermark && !fs_store_parse_instant_ms(watermark, strlen(watermark), &ms)))
        return fs_err(err, FHIRSYNC_E_ARG, "a watermark needs an endpoint and a FHIR instant");
    bool own;
    rc = tx_open(store, &own, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    rc = upsert_watermark(store, endpoint, watermark, 0, err);
    return tx_close(store, own, rc, err);
}

/* ---- endpoints and their servers --------------------------------------------------------------
 */

/* base_url with scheme and host in lower case and no trailing '/'; caller frees. */
static char *normal_base_url(const char *url)
{
    char *n = fs_strdup(url);
    if (!n)
        return NULL;
    char *host = strstr(n, "://");
    char *end = host ? strchr(host + 3, '/') : NULL;
    for (char *p = n; *p && p != end; p++)
        *p = (char)tolower((unsigned char)*p);
    size_t len = strlen(n);
    while (len > 0 && n[len - 1] == '/')
        n[--len] = '\0';
    return n;
}

fhirsync_code fhirsync_store_bind_endpoint(fhirsync_store *store, const char *endpoint,
                                           const char *base_url, bool shared, fhirsync_error *err)
{
    fhirsync_code rc = check_writable(store, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (!endpoint || !*endpoint || !base_url || !*base_url)
        return fs_err(err, FHIRSYNC_E_ARG, "binding needs an endpoint and a base URL");
    char *url = normal_base_url(base_url);
    if (!url)
        return no_memory(err);
    bool own;
    rc = tx_open(store, &own, err);
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
        rc = query_string(store,
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
    rc = tx_close(store, own, rc, err);
    fs_free(other);
    fs_free(url);
    return rc;
}

/* ---- locks ----------------------------------------------------------------------------------- */

typedef struct holder_row {
    char text[512];
    bool found;
} holder_row;

static int describe_holder(void *userdata, int ncols, const char *const *v, const size_t *lengths,
                           const char *const *names)
{
    (void)lengths;
    (void)names;
    holder_row *h = userdata;
    if (ncols < 5)
        return 1;
    h->found = true;
    snprintf(h->text, sizeof h->text, "pid %s on host %s%s%s%s since %s, last heartbeat %s",
             v[0] ? v[0] : "?", v[1] ? v[1] : "?", v[2] ? " (owner " : "", v[2] ? v[2] : "",
             v[2] ? ")" : "", v[3] ? v[3] : "?", v[4] ? v[4] : "?");
    return 1;
}

static fhirsync_code locked_error(fhirsync_store *s, fs_store_lock *l, fhirsync_error *err)
{
    holder_row h = {{0}, false};
    fs_sql_value p = fs_sql_text(l->endpoint);
    fhirsync_error ignored;
    (void)s->ops->exec(s,
                       "SELECT pid, hostname, owner, acquired_at, heartbeat_at FROM sync_locks"
                       " WHERE endpoint = ?1",
                       true, &p, 1, describe_holder, &h, NULL, &ignored);
    char session[160] = "";
    s->ops->lock_holder(s, l, session, sizeof session);
    if (h.found)
        return fs_err(err, FHIRSYNC_E_LOCKED, "endpoint '%s' is being synced by %s%s%s",
                      l->endpoint, h.text, session[0] ? "; " : "", session);
    return fs_err(err, FHIRSYNC_E_LOCKED, "endpoint '%s' is being synced by another process%s%s",
                  l->endpoint, session[0] ? ": " : "", session);
}

static void free_lock(fs_store_lock *l)
{
    if (l) {
        fs_free(l->endpoint);
        fs_free(l);
    }
}

fhirsync_code fhirsync_store_lock(fhirsync_store *store, const char *endpoint, const char *owner,
                                  long timeout_ms, fhirsync_error *err)
{
    fhirsync_code rc = check_writable(store, err);
    if (rc == FHIRSYNC_OK)
        rc = check_outside_batch(store, "locking an endpoint", err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (!endpoint || !*endpoint)
        return fs_err(err, FHIRSYNC_E_ARG, "no endpoint to lock");
    if (holds_lock(store, endpoint))
        return FHIRSYNC_OK;
    fs_store_lock *l = fs_calloc(1, sizeof *l);
    if (!l || !(l->endpoint = fs_strdup(endpoint))) {
        free_lock(l);
        return no_memory(err);
    }
    l->key = fs_store_hash("fhirsync-sync-lock", endpoint);
    l->fd = -1;
    int64_t deadline = fs_monotonic_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        bool acquired = false;
        rc = store->ops->lock_try(store, l, &acquired, err);
        if (rc != FHIRSYNC_OK || acquired)
            break;
        int64_t left = deadline - fs_monotonic_ms();
        if (timeout_ms == 0 || (timeout_ms > 0 && left <= 0)) {
            rc = locked_error(store, l, err);
            break;
        }
        if (!fs_sleep_ms(timeout_ms < 0 || left > 100 ? 100 : left)) {
            rc = fs_err(err, FHIRSYNC_E_CANCELLED, "cancelled while waiting for the lock of %s",
                        endpoint);
            break;
        }
    }
    if (rc != FHIRSYNC_OK) {
        free_lock(l);
        return rc;
    }
    /* who holds it, for the next one who asks */
    const char *now = fs_store_loaded_at(store);
    fs_sql_value p[5] = {fs_sql_text(endpoint), fs_sql_int(store->pid),
                         fs_sql_text(store->hostname), fs_sql_text(owner), fs_sql_text(now)};
    bool own;
    rc = tx_open(store, &own, err);
    if (rc == FHIRSYNC_OK) {
        rc = store->ops->exec(store,
                              "INSERT INTO sync_locks (endpoint, pid, hostname, owner, acquired_at,"
                              " heartbeat_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)"
                              " ON CONFLICT (endpoint) DO UPDATE SET pid = excluded.pid,"
                              " hostname = excluded.hostname, owner = excluded.owner,"
                              " acquired_at = excluded.acquired_at,"
                              " heartbeat_at = excluded.heartbeat_at",
                              true, p, 5, NULL, NULL, NULL, err);
        rc = tx_close(store, own, rc, err);
    }
    if (rc != FHIRSYNC_OK) {
        store->ops->lock_release(store, l);
        free_lock(l);
        return rc;
    }
    l->next = store->locks;
    store->locks = l;
    fs_log(FHIRSYNC_LOG_DEBUG, "store: locked endpoint %s", endpoint);
    return FHIRSYNC_OK;
}

static fs_store_lock **find_lock(fhirsync_store *s, const char *endpoint)
{
    for (fs_store_lock **l = &s->locks; *l; l = &(*l)->next)
        if (strcmp((*l)->endpoint, endpoint) == 0)
            return l;
    return NULL;
}

fhirsync_code fhirsync_store_lock_heartbeat(fhirsync_store *store, const char *endpoint,
                                            fhirsync_error *err)
{
    if (!store || !endpoint || !find_lock(store, endpoint))
        return fs_err(err, FHIRSYNC_E_ARG, "this handle does not hold the lock of %s",
                      endpoint ? endpoint : "(null)");
    fs_sql_value p[4] = {fs_sql_text(endpoint), fs_sql_text(fs_store_loaded_at(store)),
                         fs_sql_int(store->pid), fs_sql_text(store->hostname)};
    bool own;
    fhirsync_code rc = tx_open(store, &own, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    rc = store->ops->exec(store,
                          "UPDATE sync_locks SET heartbeat_at = ?2"
                          " WHERE endpoint = ?1 AND pid = ?3 AND hostname = ?4",
                          true, p, 4, NULL, NULL, NULL, err);
    return tx_close(store, own, rc, err);
}

/* Remove the row (best effort when `err` is NULL) and release the OS/session lock. */
static fhirsync_code release_lock(fhirsync_store *s, fs_store_lock **link, fhirsync_error *err)
{
    fs_store_lock *l = *link;
    fhirsync_code rc = FHIRSYNC_OK;
    if (!s->in_batch) {
        fs_sql_value p[3] = {fs_sql_text(l->endpoint), fs_sql_int(s->pid),
                             fs_sql_text(s->hostname)};
        fhirsync_error ignored;
        rc = s->ops->exec(s,
                          "DELETE FROM sync_locks WHERE endpoint = ?1 AND pid = ?2"
                          " AND hostname = ?3",
                          true, p, 3, NULL, NULL, NULL, err ? err : &ignored);
    }
    s->ops->lock_release(s, l);
    *link = l->next;
    free_lock(l);
    return rc;
}

fhirsync_code fhirsync_store_unlock(fhirsync_store *store, const char *endpoint,
                                    fhirsync_error *err)
{
    fs_store_lock **link = store && endpoint ? find_lock(store, endpoint) : NULL;
    if (!link)
        return fs_err(err, FHIRSYNC_E_ARG, "this handle does not hold the lock of %s",
                      endpoint ? endpoint : "(null)");
    fhirsync_code rc = check_outside_batch(store, "unlocking an endpoint", err);
    if (rc != FHIRSYNC_OK)
        return rc;
    return release_lock(store, link, err);
}

/* ---- work queue ------------------------------------------------------------------------------ */

void fhirsync_work_item_free(fhirsync_work_item *item)
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

fhirsync_code fhirsync_store_work_enqueue(fhirsync_store *store, const fhirsync_work_spec *spec,
                                          int64_t *id, fhirsync_error *err)
{
    if (id)
        *id = 0;
    fhirsync_code rc = check_writable(store, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (!spec || !spec->endpoint || !spec->kind ||
        (strcmp(spec->kind, FHIRSYNC_WORK_ENDPOINT_SYNC) != 0 &&
         strcmp(spec->kind, FHIRSYNC_WORK_FILE_LOAD) != 0))
        return fs_err(err, FHIRSYNC_E_ARG, "a work item needs a known kind and an endpoint");
    if (spec->payload && !is_json(spec->payload, false))
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
    rc = tx_open(store, &own, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    rc = store->ops->exec(store,
                          "INSERT INTO work_items (kind, endpoint, batch, key, payload,"
                          " max_attempts, created_at, updated_at)"
                          " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)"
                          " ON CONFLICT (key) DO NOTHING RETURNING id",
                          true, p, 7, row_int, &new_id, NULL, err);
    if (rc == FHIRSYNC_OK && new_id == 0 && spec->key) {
        fs_sql_value k = fs_sql_text(spec->key);
        rc = store->ops->exec(store, "SELECT id FROM work_items WHERE key = ?1", true, &k, 1,
                              row_int, &new_id, NULL, err);
    }
    rc = tx_close(store, own, rc, err);
    if (rc == FHIRSYNC_OK && id)
        *id = new_id;
    return rc;
}

typedef struct claim_row {
    fhirsync_work_item *item;
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
    fhirsync_work_item *item = fs_calloc(1, sizeof *item);
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

fhirsync_code fhirsync_store_work_claim(fhirsync_store *store, const char *worker_id,
                                        const char *kind, int lease_seconds,
                                        fhirsync_work_item **item, fhirsync_error *err)
{
    if (item)
        *item = NULL;
    fhirsync_code rc = check_writable(store, err);
    if (rc == FHIRSYNC_OK)
        rc = check_outside_batch(store, "claiming work", err);
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
    rc = tx_open(store, &own, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    const char *stamp = fs_store_loaded_at(store);
    fs_sql_value expire[2] = {fs_sql_int(now), fs_sql_text(stamp)};
    rc = store->ops->exec(store, pg ? EXPIRE_SQL(" FOR UPDATE SKIP LOCKED") : EXPIRE_SQL(""),
                          true, expire, 2, NULL, NULL, NULL, err);
    if (rc == FHIRSYNC_OK) {
        fs_sql_value p[5] = {fs_sql_int(now), fs_sql_text(worker_id), fs_sql_text(stamp),
                             fs_sql_int(now + lease_seconds), fs_sql_text(kind)};
        rc = store->ops->exec(store, pg ? CLAIM_SQL(" FOR UPDATE SKIP LOCKED") : CLAIM_SQL(""),
                              true, p, 5, read_claim, &claim, NULL, err);
    }
    if (rc == FHIRSYNC_OK && claim.nomem)
        rc = no_memory(err);
    rc = tx_close(store, own, rc, err);
    if (rc != FHIRSYNC_OK) {
        fhirsync_work_item_free(claim.item);
        return rc;
    }
    *item = claim.item;
    return FHIRSYNC_OK;
}

/* Run an update on an item this worker holds; FHIRSYNC_E_LOCKED when it no longer does. */
static fhirsync_code update_held(fhirsync_store *s, int64_t id, const char *sql,
                                 const fs_sql_value *p, int n, bool in_own_tx,
                                 fhirsync_error *err)
{
    bool own = false;
    fhirsync_code rc = in_own_tx ? s->ops->begin(s, err) : tx_open(s, &own, err);
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
    return tx_close(s, own, rc, err);
}

fhirsync_code fhirsync_store_work_heartbeat(fhirsync_store *store, int64_t id,
                                            const char *worker_id, int lease_seconds,
                                            fhirsync_error *err)
{
    fhirsync_code rc = check_writable(store, err);
    if (rc == FHIRSYNC_OK)
        rc = check_outside_batch(store, "a work heartbeat", err);
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

fhirsync_code fhirsync_store_work_complete(fhirsync_store *store, int64_t id,
                                           const char *worker_id, const char *result_json,
                                           fhirsync_error *err)
{
    fhirsync_code rc = check_writable(store, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (!worker_id)
        return fs_err(err, FHIRSYNC_E_ARG, "no worker id");
    if (result_json && !is_json(result_json, true))
        return fs_err(err, FHIRSYNC_E_ARG, "a work result must be JSON");
    fs_sql_value p[4] = {fs_sql_int(id), fs_sql_text(worker_id), fs_sql_text(result_json),
                         fs_sql_text(fs_store_loaded_at(store))};
    return update_held(store, id,
                       "UPDATE work_items SET state = 'done', result = ?3, lease_until = NULL,"
                       " updated_at = ?4 WHERE id = ?1 AND claimed_by = ?2 AND state = 'claimed'",
                       p, 4, false, err);
}

fhirsync_code fhirsync_store_work_fail(fhirsync_store *store, int64_t id, const char *worker_id,
                                       const char *error, int retry_after_seconds,
                                       fhirsync_error *err)
{
    fhirsync_code rc = check_writable(store, err);
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
    fhirsync_work_summary *s = userdata;
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

fhirsync_code fhirsync_store_work_summary(fhirsync_store *store, const char *batch,
                                          fhirsync_work_summary *out, fhirsync_error *err)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!store || !out)
        return fs_err(err, FHIRSYNC_E_ARG, "no store or output");
    fhirsync_work_summary sum = {0, 0, 0, 0};
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

/* ---- queries --------------------------------------------------------------------------------- */

typedef struct type_list {
    char (*names)[FS_STORE_TYPE_MAX + 1];
    size_t count, cap;
    bool nomem;
} type_list;

static int read_type(void *userdata, int ncols, const char *const *v, const size_t *len,
                     const char *const *names)
{
    (void)names;
    type_list *l = userdata;
    if (ncols < 1 || !v[0] || len[0] > FS_STORE_TYPE_MAX || !fs_store_valid_type(v[0], len[0]))
        return 0;
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 32;
        void *grown = fs_realloc(l->names, cap * sizeof *l->names);
        if (!grown) {
            l->nomem = true;
            return 1;
        }
        l->names = grown;
        l->cap = cap;
    }
    memcpy(l->names[l->count], v[0], len[0]);
    l->names[l->count][len[0]] = '\0';
    l->count++;
    return 0;
}

/* Every type with a table, sorted, Patient first when `patient_first`. */
static fhirsync_code list_types(fhirsync_store *s, bool patient_first, type_list *l,
                                fhirsync_error *err)
{
    memset(l, 0, sizeof *l);
    fhirsync_code rc = s->ops->exec(s,
                                    patient_first
                                        ? "SELECT type FROM resource_types"
                                          " ORDER BY CASE WHEN type = 'Patient' THEN 0 ELSE 1 END,"
                                          " type"
                                        : "SELECT type FROM resource_types ORDER BY type",
                                    true, NULL, 0, read_type, l, NULL, err);
    if (rc == FHIRSYNC_OK && l->nomem)
        rc = no_memory(err);
    if (rc != FHIRSYNC_OK) {
        fs_free(l->names);
        memset(l, 0, sizeof *l);
    }
    return rc;
}

fhirsync_code fs_store_endpoint_types(fhirsync_store *store, const char *endpoint, char ***types,
                                      fhirsync_error *err)
{
    *types = NULL;
    type_list all;
    fhirsync_code rc = list_types(store, false, &all, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    char **out = fs_calloc(all.count + 1, sizeof *out);
    size_t n = 0;
    if (!out)
        rc = no_memory(err);
    fs_sql_value p = fs_sql_text(endpoint);
    for (size_t i = 0; rc == FHIRSYNC_OK && i < all.count; i++) {
        char sql[256], quoted[FS_STORE_TYPE_MAX + 3];
        fs_store_quote_type(all.names[i], quoted, sizeof quoted);
        snprintf(sql, sizeof sql,
                 "SELECT 1 FROM %s WHERE run_id IN (SELECT id FROM sync_runs WHERE endpoint = ?1)"
                 " LIMIT 1",
                 quoted);
        bool found = false;
        rc = store->ops->exec(store, sql, false, &p, 1, row_exists, &found, NULL, err);
        if (rc == FHIRSYNC_OK && found && !(out[n++] = fs_strdup(all.names[i])))
            rc = no_memory(err);
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
        true, p, 2, read_two, counts, NULL, err);
    if (rc == FHIRSYNC_OK) {
        out->listed = counts[0];
        out->reconciled = counts[1];
    }
    return rc;
}

/* Whether a type's table exists (a name that cannot be a resource type has none). */
static fhirsync_code table_of(fhirsync_store *store, const char *type, bool *exists,
                              fhirsync_error *err)
{
    *exists = false;
    if (!type || !fs_store_valid_type(type, strlen(type)) || reserved_type(type))
        return FHIRSYNC_OK;
    fs_store_type *t = type_entry(store, type, strlen(type));
    return t ? type_exists(store, t, exists, err) : no_memory(err);
}

fhirsync_code fs_store_run_rows(fhirsync_store *store, const char *type, int64_t run_id,
                                int64_t *rows, fhirsync_error *err)
{
    *rows = 0;
    bool exists;
    fhirsync_code rc = table_of(store, type, &exists, err);
    if (rc == FHIRSYNC_OK && exists) {
        char sql[160], quoted[FS_STORE_TYPE_MAX + 3];
        fs_store_quote_type(type, quoted, sizeof quoted);
        snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE run_id = ?1", quoted);
        fs_sql_value p = fs_sql_int(run_id);
        rc = store->ops->exec(store, sql, false, &p, 1, row_int, rows, NULL, err);
    }
    return rc;
}

fhirsync_code fs_store_run_tally(fhirsync_store *store, int64_t run_id, int64_t *deletions,
                                 int64_t *quarantined, fhirsync_error *err)
{
    *deletions = *quarantined = 0;
    fs_sql_value p = fs_sql_int(run_id);
    fhirsync_code rc = store->ops->exec(store, "SELECT count(*) FROM deletions WHERE run_id = ?1",
                                        true, &p, 1, row_int, deletions, NULL, err);
    if (rc == FHIRSYNC_OK)
        rc = store->ops->exec(store, "SELECT count(*) FROM quarantine WHERE run_id = ?1", true,
                              &p, 1, row_int, quarantined, NULL, err);
    return rc;
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
    fhirsync_code rc = table_of(store, type, &exists, err);
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

fhirsync_code fs_store_type_rows(fhirsync_store *store, const char *type, int64_t *rows,
                                 fhirsync_error *err)
{
    *rows = 0;
    bool exists;
    fhirsync_code rc = table_of(store, type, &exists, err);
    if (rc == FHIRSYNC_OK && exists) {
        char sql[128], quoted[FS_STORE_TYPE_MAX + 3];
        fs_store_quote_type(type, quoted, sizeof quoted);
        snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", quoted);
        rc = store->ops->exec(store, sql, false, NULL, 0, row_int, rows, NULL, err);
    }
    return rc;
}

fhirsync_code fhirsync_store_counts(fhirsync_store *store, fhirsync_type_count **counts,
                                    size_t *n, fhirsync_error *err)
{
    if (counts)
        *counts = NULL;
    if (n)
        *n = 0;
    if (!store || !counts || !n)
        return fs_err(err, FHIRSYNC_E_ARG, "no store or output");
    type_list types;
    fhirsync_code rc = list_types(store, false, &types, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    fhirsync_type_count *out = fs_calloc(types.count ? types.count : 1, sizeof *out);
    if (!out)
        rc = no_memory(err);
    for (size_t i = 0; rc == FHIRSYNC_OK && i < types.count; i++) {
        char sql[160], quoted[FS_STORE_TYPE_MAX + 3];
        fs_store_quote_type(types.names[i], quoted, sizeof quoted);
        snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", quoted);
        snprintf(out[i].type, sizeof out[i].type, "%s", types.names[i]);
        rc = store->ops->exec(store, sql, false, NULL, 0, row_int, &out[i].count, NULL, err);
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
    type_list types;
    fhirsync_code rc = list_types(store, true, &types, err);
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

typedef struct runs_ctx {
    fhirsync_run_cb cb;
    void *userdata;
} runs_ctx;

static int64_t int_or_zero(const char *v)
{
    long n;
    return v && fs_parse_long(v, &n) ? n : 0;
}

static int read_run(void *userdata, int ncols, const char *const *v, const size_t *len,
                    const char *const *names)
{
    (void)len;
    (void)names;
    runs_ctx *c = userdata;
    if (ncols < 13)
        return 1;
    fhirsync_run_info run = {int_or_zero(v[0]), v[1], v[2], status_from_name(v[3]), v[4], v[5],
                             v[6], v[7], v[8], int_or_zero(v[9]), int_or_zero(v[10]),
                             int_or_zero(v[11]), v[12]};
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
    fhirsync_quarantine_entry e = {int_or_zero(v[0]), int_or_zero(v[1]), v[2], v[3],
                                   int_or_zero(v[4]), v[5], v[6], v[6] ? len[6] : 0,
                                   int_or_zero(v[7]), v[8]};
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
    fhirsync_code rc = check_outside_batch(store, "a query", err);
    if (rc != FHIRSYNC_OK)
        return rc;
    return store->ops->query(store, sql, cb, userdata, err);
}

/* ---- opening and closing --------------------------------------------------------------------- */

/* A postgresql:// URL, or a libpq keyword string ("host=/run/postgresql dbname=fhir"). */
static bool is_postgresql(const char *location)
{
    static const char *const keywords[] = {
        "host",    "hostaddr",   "port",       "dbname",  "user",
        "passfile", "service",   "sslmode",    "options", "application_name",
        "connect_timeout", "target_session_attrs", NULL};
    if (strncasecmp(location, "postgresql://", 13) == 0 ||
        strncasecmp(location, "postgres://", 11) == 0)
        return true;
    while (*location == ' ')
        location++;
    for (size_t i = 0; keywords[i]; i++) {
        size_t n = strlen(keywords[i]);
        if (strncmp(location, keywords[i], n) != 0)
            continue;
        const char *p = location + n;
        while (*p == ' ')
            p++;
        if (*p == '=')
            return true;
    }
    return false;
}

fhirsync_code fhirsync_store_open(const char *location, unsigned flags, fhirsync_store **out,
                                  fhirsync_error *err)
{
    if (out)
        *out = NULL;
    if (!out || (flags & ~FHIRSYNC_STORE_READONLY))
        return fs_err(err, FHIRSYNC_E_ARG, "no output, or unknown flags");
    if (!location || !*location)
        location = FHIRSYNC_STORE_DEFAULT;
    fhirsync_store *s = fs_calloc(1, sizeof *s);
    if (!s)
        return no_memory(err);
    s->flags = flags;
    s->pid = (long)getpid();
    if (!(s->opened = fs_strdup(location))) {
        fs_free(s);
        return no_memory(err);
    }
    if (gethostname(s->hostname, sizeof s->hostname - 1) != 0)
        snprintf(s->hostname, sizeof s->hostname, "unknown");
    s->hostname[sizeof s->hostname - 1] = '\0';
    if (is_postgresql(location)) {
        s->engine = FS_ENGINE_POSTGRESQL;
        s->ops = &fs_store_postgresql_ops;
    } else {
        s->engine = FS_ENGINE_SQLITE;
        s->ops = &fs_store_sqlite_ops;
    }
    fhirsync_code rc = s->ops->open(s, location, err);
    if (rc == FHIRSYNC_OK)
        rc = fs_schema_migrate(s, err);
    if (rc != FHIRSYNC_OK) {
        fhirsync_store_close(s);
        return rc;
    }
    fs_log(FHIRSYNC_LOG_DEBUG, "store: opened %s (%s, schema version %d%s)", s->location,
           s->ops->name, s->schema_version,
           (flags & FHIRSYNC_STORE_READONLY) ? ", read-only" : "");
    *out = s;
    return FHIRSYNC_OK;
}

void fhirsync_store_close(fhirsync_store *store)
{
    if (!store)
        return;
    if (store->in_batch)
        fhirsync_store_rollback(store, NULL);
    while (store->locks)
        release_lock(store, &store->locks, NULL);
    for (size_t i = 0; i < store->type_count; i++)
        store->ops->forget_type(store, &store->types[i]);
    store->ops->close(store);
    fs_free(store->types);
    fs_free(store->location);
    fs_free_secret(store->opened);
    fs_free(store);
}

fhirsync_code fhirsync_store_reopen(const fhirsync_store *store, fhirsync_store **out,
                                    fhirsync_error *err)
{
    if (out)
        *out = NULL;
    if (!store || !out)
        return fs_err(err, FHIRSYNC_E_ARG, "no store, or no output");
    return fhirsync_store_open(store->opened, store->flags, out, err);
}

const char *fhirsync_store_engine_name(const fhirsync_store *store)
{
    return store ? store->ops->name : "";
}

const char *fhirsync_store_location(const fhirsync_store *store)
{
    return store && store->location ? store->location : "";
}

int fhirsync_store_schema_version(const fhirsync_store *store)
{
    return store ? store->schema_version : 0;
}

int fhirsync_store_schema_version_supported(void)
{
    return fs_schema_current();
}
