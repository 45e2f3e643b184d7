/* store/views.c: SQL on FHIR views materialized in the store (fhirsync/store.h, "materialized
 * views"). The registry is the table view_definitions (name, resource type, the definition as
 * given, its digest); each view has a table of its own named after it, with `_resource_id` and
 * the view's columns.
 *
 * Keeping the tables current is a matter of the transactions that write resources: each reads
 * the registry once (fs_store_views_ready: PostgreSQL shares an advisory lock that adding and
 * refreshing a view take exclusively, so no transaction writes resources with a stale list of
 * views), and then
 *   - a stored resource (put: inserted or replaced) has its rows deleted and evaluated again in
 *     every view of its type; PostgreSQL bulk batches do it for the rows a merge stored
 *     (fs_store_views_merged);
 *   - a deleted resource has its rows deleted, and a reconciliation deletes the rows of the
 *     resources it removes.
 * The views of one type are evaluated over a resource together, the resource read once
 * (fhirsync_view_eval_many). A resource a view cannot evaluate keeps no rows in that view and gets
 * a quarantine entry naming the view; the other views and its own storage are not affected.
 * Building a table whole (add, refresh) reads the stored resources of the type in pages of
 * PAGE_ROWS, by id. */
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "fhirsync/view.h"
#include "store/shared_private.h"
#include "store/store_internal.h"

#define PAGE_ROWS 256
#define VIEW_NAME_MAX 50 /* + "__resource" stays within PostgreSQL's 63-byte identifiers */
#define VIEW_COLUMNS_MAX (FS_STORE_STMT_PARAMS - 1)
#define QUARANTINE_SOURCE "view:"

/* How a column is stored, from its `type` and `collection`. */
typedef enum col_class {
    COL_ANY = 0, /* no type: the value as it comes (SQLite: no declared type; PostgreSQL: text) */
    COL_TEXT,    /* string, code, date, dateTime, uri... */
    COL_INTEGER, /* integer, positiveInt, unsignedInt, integer64 */
    COL_BOOLEAN,
    COL_DECIMAL,
    COL_JSON /* a collection, or a complex type (Coding, Quantity...) */
} col_class;

struct fs_store_view {
    char *name;
    char *type;
    char *stamp; /* digest and created_at: a change means the table was replaced */
    fhirsync_view *view;
    size_t ncols;
    unsigned char *cls;
    char *insert_sql, *delete_sql;
    void *insert_stmt, *delete_stmt; /* engine-owned, prepared on first use */
    fs_sql_value *params;            /* ncols + 1 */
};

/* Internal tables, and the PostgreSQL session's: a view may not take their names. */
static const char *const internal_tables[] = {
    "schema_version",   "resource_types",  "sync_runs",  "sync_state", "deletions",
    "quarantine",       "sync_locks",      "work_items", "endpoints",  "view_definitions",
    "fhirsync_staging", "fhirsync_merged", NULL};

/* ---- columns --------------------------------------------------------------------------------- */

static col_class class_of(const fhirsync_view_column *c)
{
    if (c->collection)
        return COL_JSON;
    if (!c->type)
        return COL_ANY;
    if (strcmp(c->type, "boolean") == 0)
        return COL_BOOLEAN;
    if (strcmp(c->type, "integer") == 0 || strcmp(c->type, "positiveInt") == 0 ||
        strcmp(c->type, "unsignedInt") == 0 || strcmp(c->type, "integer64") == 0)
        return COL_INTEGER;
    if (strcmp(c->type, "decimal") == 0)
        return COL_DECIMAL;
    if (c->type[0] >= 'A' && c->type[0] <= 'Z')
        return COL_JSON;
    return COL_TEXT;
}

/* The SQL type of a column class. SQLite: NUMERIC affinity for decimals (comparisons as numbers;
 * the exact text stays in the resource), TEXT for JSON (a "JSON" type would get NUMERIC
 * affinity). FHIR dates may be partial ("2020-04"): text on both engines. */
static const char *sql_type(fs_store_engine engine, col_class c)
{
    static const char *const sqlite_types[] = {"", "TEXT", "INTEGER", "INTEGER", "NUMERIC", "TEXT"};
    static const char *const pg_types[] = {"text", "text", "bigint", "boolean", "numeric", "jsonb"};
    return engine == FS_ENGINE_SQLITE ? sqlite_types[c] : pg_types[c];
}

static const char *kind_name(fhirsync_view_kind k)
{
    switch (k) {
    case FHIRSYNC_VIEW_BOOLEAN: return "a boolean";
    case FHIRSYNC_VIEW_INTEGER: return "an integer";
    case FHIRSYNC_VIEW_DECIMAL: return "a decimal";
    case FHIRSYNC_VIEW_STRING: return "a string";
    case FHIRSYNC_VIEW_JSON: return "a complex value";
    default: return "null";
    }
}

/* ---- the loaded views ------------------------------------------------------------------------ */

static void view_free(fhirsync_store *s, fs_store_view *v)
{
    if (v->insert_stmt)
        s->ops->stmt_free(s, v->insert_stmt);
    if (v->delete_stmt)
        s->ops->stmt_free(s, v->delete_stmt);
    fhirsync_view_free(v->view);
    fs_free(v->name);
    fs_free(v->type);
    fs_free(v->stamp);
    fs_free(v->cls);
    fs_free(v->insert_sql);
    fs_free(v->delete_sql);
    fs_free(v->params);
    memset(v, 0, sizeof *v);
}

void fs_store_views_unload(fhirsync_store *s)
{
    for (size_t i = 0; i < s->view_count; i++)
        view_free(s, &s->views[i]);
    fs_free(s->views);
    fs_free(s->view_set);
    fs_free(s->view_set_views);
    s->views = NULL;
    s->view_set = NULL;
    s->view_set_views = NULL;
    s->view_count = 0;
    s->views_tx = false;
}

/* Quote a view or column name (validated: letters, digits, '_') as an SQL identifier. */
static bool quote_name(fs_buf *b, const char *name)
{
    return fs_buf_printf(b, "\"%s\"", name);
}

/* Parse a definition and work out its columns and statements (not prepared yet). */
static fhirsync_code view_load(fhirsync_store *s, fs_store_view *v, const char *name,
                               const char *definition, size_t len, const char *stamp,
                               fhirsync_error *err)
{
    memset(v, 0, sizeof *v);
    fhirsync_code rc = fhirsync_view_parse(definition, len, &v->view, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    v->ncols = fhirsync_view_column_count(v->view);
    v->name = fs_strdup(name);
    v->type = fs_strdup(fhirsync_view_resource(v->view));
    v->stamp = fs_strdup(stamp ? stamp : "");
    v->cls = fs_calloc(v->ncols, 1);
    v->params = fs_calloc(v->ncols + 1, sizeof *v->params);
    if (!v->name || !v->type || !v->stamp || !v->cls || !v->params)
        return fs_store_nomem(err);
    fs_buf ins, del;
    fs_buf_init(&ins);
    fs_buf_init(&del);
    bool ok = fs_buf_printf(&ins, "INSERT INTO ") && quote_name(&ins, name) &&
              fs_buf_printf(&ins, " (_resource_id");
    for (size_t i = 0; ok && i < v->ncols; i++) {
        const fhirsync_view_column *c = fhirsync_view_column_at(v->view, i);
        v->cls[i] = (unsigned char)class_of(c);
        ok = fs_buf_printf(&ins, ", ") && quote_name(&ins, c->name);
    }
    ok = ok && fs_buf_printf(&ins, ") VALUES (?1");
    for (size_t i = 0; ok && i < v->ncols; i++)
        ok = fs_buf_printf(&ins, ", ?%zu", i + 2);
    ok = ok && fs_buf_printf(&ins, ")") && fs_buf_printf(&del, "DELETE FROM ") &&
         quote_name(&del, name) && fs_buf_printf(&del, " WHERE _resource_id = ?1");
    if (!ok) {
        fs_buf_free(&ins);
        fs_buf_free(&del);
        return fs_store_nomem(err);
    }
    v->insert_sql = fs_buf_steal(&ins);
    v->delete_sql = fs_buf_steal(&del);
    return FHIRSYNC_OK;
}

static fhirsync_code view_prepare(fhirsync_store *s, fs_store_view *v, fhirsync_error *err)
{
    fhirsync_code rc = FHIRSYNC_OK;
    if (!v->insert_stmt)
        rc = s->ops->stmt_prepare(s, v->insert_sql, &v->insert_stmt, err);
    if (rc == FHIRSYNC_OK && !v->delete_stmt)
        rc = s->ops->stmt_prepare(s, v->delete_sql, &v->delete_stmt, err);
    if (rc != FHIRSYNC_OK)
        fs_err_prefix(err, "view %s", v->name);
    return rc;
}

/* The registry's rows: name and stamp, or everything. */
typedef struct registry_row {
    char *name, *type, *definition, *stamp;
    size_t definition_len;
} registry_row;

typedef struct registry {
    registry_row *rows;
    size_t count, cap;
    bool full; /* the definitions too */
    bool nomem;
} registry;

static void registry_free(registry *r)
{
    for (size_t i = 0; i < r->count; i++) {
        fs_free(r->rows[i].name);
        fs_free(r->rows[i].type);
        fs_free(r->rows[i].definition);
        fs_free(r->rows[i].stamp);
    }
    fs_free(r->rows);
    memset(r, 0, sizeof *r);
}

static int registry_row_cb(void *userdata, int ncols, const char *const *values,
                           const size_t *lengths, const char *const *names)
{
    (void)names;
    registry *r = userdata;
    if (ncols < 4)
        return 0;
    if (r->count == r->cap) {
        registry_row *grown = fs_array_grow(r->rows, &r->cap, sizeof *grown, 8);
        if (!grown) {
            r->nomem = true;
            return 1;
        }
        r->rows = grown;
    }
    registry_row *row = &r->rows[r->count++];
    memset(row, 0, sizeof *row);
    row->name = fs_strndup(values[0] ? values[0] : "", lengths[0]);
    row->stamp = fs_strndup(values[1] ? values[1] : "", lengths[1]);
    if (r->full) {
        row->type = fs_strndup(values[2] ? values[2] : "", lengths[2]);
        row->definition = fs_strndup(values[3] ? values[3] : "", lengths[3]);
        row->definition_len = lengths[3];
    }
    if (!row->name || !row->stamp || (r->full && (!row->type || !row->definition))) {
        r->nomem = true;
        return 1;
    }
    return 0;
}

static fhirsync_code registry_read(fhirsync_store *s, registry *r, bool full, fhirsync_error *err)
{
    memset(r, 0, sizeof *r);
    r->full = full;
    fhirsync_code rc =
        s->ops->exec(s,
                     full ? "SELECT name, digest || ' ' || created_at, resource_type, definition"
                            " FROM view_definitions ORDER BY name"
                          : "SELECT name, digest || ' ' || created_at, '', '' FROM view_definitions"
                            " ORDER BY name",
                     true, NULL, 0, registry_row_cb, r, NULL, err);
    if (rc == FHIRSYNC_OK && r->nomem)
        rc = fs_store_nomem(err);
    if (rc != FHIRSYNC_OK)
        registry_free(r);
    return rc;
}

static bool registry_matches(const fhirsync_store *s, const registry *r)
{
    if (r->count != s->view_count)
        return false;
    for (size_t i = 0; i < r->count; i++)
        if (strcmp(r->rows[i].name, s->views[i].name) != 0 ||
            strcmp(r->rows[i].stamp, s->views[i].stamp) != 0)
            return false;
    return true;
}

static fhirsync_code registry_load(fhirsync_store *s, fhirsync_error *err)
{
    registry r;
    fhirsync_code rc = registry_read(s, &r, true, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    fs_store_views_unload(s);
    if (r.count && (!(s->views = fs_calloc(r.count, sizeof *s->views)) ||
                    !(s->view_set = fs_calloc(r.count, sizeof *s->view_set)) ||
                    !(s->view_set_views = fs_calloc(r.count, sizeof *s->view_set_views))))
        rc = fs_store_nomem(err);
    for (size_t i = 0; rc == FHIRSYNC_OK && i < r.count; i++) {
        rc = view_load(s, &s->views[i], r.rows[i].name, r.rows[i].definition,
                       r.rows[i].definition_len, r.rows[i].stamp, err);
        s->view_count = i + 1;
        if (rc != FHIRSYNC_OK && rc != FHIRSYNC_E_NOMEM)
            rc = fs_err(err, FHIRSYNC_E_STORE,
                        "the store's view %s cannot be read by this fhirsync (%s): remove it with "
                        "'fhirsync view remove %s', or use the fhirsync that added it",
                        r.rows[i].name, err ? err->message : "invalid", r.rows[i].name);
    }
    registry_free(&r);
    if (rc != FHIRSYNC_OK)
        fs_store_views_unload(s);
    return rc;
}

static fhirsync_code views_lock(fhirsync_store *s, bool exclusive, fhirsync_error *err)
{
    if (s->engine != FS_ENGINE_POSTGRESQL)
        return FHIRSYNC_OK; /* SQLite: a write transaction has the database to itself */
    fs_sql_value key = fs_sql_int(FS_STORE_PG_VIEWS_KEY);
    return s->ops->exec(s,
                        exclusive ? "SELECT pg_advisory_xact_lock(?1)"
                                  : "SELECT pg_advisory_xact_lock_shared(?1)",
                        true, &key, 1, NULL, NULL, NULL, err);
}

fhirsync_code fs_store_views_ready(fhirsync_store *s, fhirsync_error *err)
{
    if (s->views_tx)
        return FHIRSYNC_OK;
    fhirsync_code rc = views_lock(s, false, err);
    registry r;
    if (rc == FHIRSYNC_OK)
        rc = registry_read(s, &r, false, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    bool same = registry_matches(s, &r);
    registry_free(&r);
    if (!same)
        rc = registry_load(s, err);
    if (rc == FHIRSYNC_OK)
        s->views_tx = true;
    return rc;
}

static bool covers(const fs_store_view *v, const char *type)
{
    return strcmp(v->type, type) == 0;
}

bool fs_store_views_cover(const fhirsync_store *s, const fs_store_type *t)
{
    for (size_t i = 0; i < s->view_count; i++)
        if (covers(&s->views[i], t->name))
            return true;
    return false;
}

bool fs_store_views_name_taken(const fhirsync_store *s, const char *name)
{
    for (size_t i = 0; i < s->view_count; i++)
        if (strcasecmp(s->views[i].name, name) == 0)
            return true;
    return false;
}

/* ---- rows of one resource -------------------------------------------------------------------- */

/* The rows of one resource in the views of its type (s->view_set), evaluated in turn over one
 * read of it: a view's rows, then its end (view_end). */
typedef struct row_ctx {
    fhirsync_store *s;
    const char *id;
    size_t id_len;
    const char *line;
    size_t len;
    int64_t run_id;
    fhirsync_view_stats *stats;
    fhirsync_error *err; /* the caller's: database failures */
    bool stopped;        /* view_end stopped the evaluation (err says why) */
    /* the view being evaluated */
    int64_t rows;
    bool db_failed; /* the failure is the database's, not the resource's */
    char why[sizeof((fhirsync_error *)0)->message]; /* a value the column's type cannot take */
    char *scratch[VIEW_COLUMNS_MAX];
    size_t nscratch;
} row_ctx;

/* A scalar as JSON text, for a jsonb column given a scalar (a complex `type` meeting a string). */
static char *scalar_json(const fhirsync_view_value *val)
{
    json_t *j = NULL;
    switch (val->kind) {
    case FHIRSYNC_VIEW_BOOLEAN: j = json_boolean(val->boolean); break;
    case FHIRSYNC_VIEW_INTEGER: j = json_integer((json_int_t)val->integer); break;
    case FHIRSYNC_VIEW_DECIMAL: return fs_strndup(val->text, val->len); /* a JSON number */
    default: j = json_stringn(val->text, val->len); break;
    }
    char *out = j ? json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    json_decref(j);
    if (!out)
        return NULL;
    char *copy = fs_strdup(out);
    free(out);
    return copy;
}

/* One value as a statement parameter for column i; false (ctx->why says why) when the column's
 * type cannot take it. */
static bool bind_value(row_ctx *ctx, const fs_store_view *v, size_t i,
                       const fhirsync_view_value *val, fs_sql_value *out)
{
    bool pg = ctx->s->engine == FS_ENGINE_POSTGRESQL;
    col_class c = (col_class)v->cls[i];
    const fhirsync_view_column *col = fhirsync_view_column_at(v->view, i);
    *out = fs_sql_null();
    if (val->kind == FHIRSYNC_VIEW_NULL)
        return true;
    bool text = val->kind == FHIRSYNC_VIEW_STRING || val->kind == FHIRSYNC_VIEW_DECIMAL ||
                val->kind == FHIRSYNC_VIEW_JSON;
    if (pg && text && memchr(val->text, '\0', val->len)) {
        snprintf(ctx->why, sizeof ctx->why,
                 "column %s: the value holds U+0000, which PostgreSQL cannot store", col->name);
        return false;
    }
    bool fits = true;
    switch (c) {
    case COL_ANY:
    case COL_TEXT:
        if (val->kind == FHIRSYNC_VIEW_BOOLEAN)
            *out = fs_sql_text(val->boolean ? "true" : "false");
        else if (val->kind == FHIRSYNC_VIEW_INTEGER)
            *out = fs_sql_int(val->integer);
        else
            *out = pg ? fs_sql_text(val->text) : fs_sql_textn(val->text, val->len);
        break;
    case COL_INTEGER:
        fits = val->kind == FHIRSYNC_VIEW_INTEGER;
        *out = fs_sql_int(val->integer);
        break;
    case COL_BOOLEAN:
        fits = val->kind == FHIRSYNC_VIEW_BOOLEAN;
        *out = pg ? fs_sql_text(val->boolean ? "true" : "false") : fs_sql_int(val->boolean);
        break;
    case COL_DECIMAL:
        fits = val->kind == FHIRSYNC_VIEW_DECIMAL || val->kind == FHIRSYNC_VIEW_INTEGER;
        *out =
            val->kind == FHIRSYNC_VIEW_INTEGER ? fs_sql_int(val->integer) : fs_sql_text(val->text);
        break;
    case COL_JSON:
        if (val->kind == FHIRSYNC_VIEW_JSON) {
            *out = fs_sql_text(val->text);
        } else {
            char *json = scalar_json(val);
            if (!json) {
                snprintf(ctx->why, sizeof ctx->why, "out of memory");
                return false;
            }
            ctx->scratch[ctx->nscratch++] = json;
            *out = fs_sql_text(json);
        }
        break;
    }
    if (!fits)
        snprintf(ctx->why, sizeof ctx->why, "column %s (%s): the value is %s", col->name,
                 col->type ? col->type : "untyped", kind_name(val->kind));
    return fits;
}

static fhirsync_code on_row(void *userdata, size_t index, const fhirsync_view_value *values,
                            size_t count)
{
    row_ctx *ctx = userdata;
    fs_store_view *v = ctx->s->view_set[index];
    v->params[0] = fs_sql_textn(ctx->id, ctx->id_len);
    fhirsync_code rc = FHIRSYNC_OK;
    ctx->nscratch = 0;
    for (size_t i = 0; i < count && i < v->ncols && rc == FHIRSYNC_OK; i++)
        if (!bind_value(ctx, v, i, &values[i], &v->params[i + 1]))
            rc = FHIRSYNC_E_VIEW;
    if (rc == FHIRSYNC_OK) {
        rc = ctx->s->ops->stmt_run(ctx->s, v->insert_stmt, v->params, (int)v->ncols + 1, NULL,
                                   ctx->err);
        if (rc == FHIRSYNC_OK)
            ctx->rows++;
        else
            ctx->db_failed = true;
    }
    for (size_t i = 0; i < ctx->nscratch; i++)
        fs_free(ctx->scratch[i]);
    ctx->nscratch = 0;
    return rc;
}

static fhirsync_code delete_rows(fhirsync_store *s, fs_store_view *v, const char *id, size_t id_len,
                                 fhirsync_error *err)
{
    fs_sql_value p = fs_sql_textn(id, id_len);
    return s->ops->stmt_run(s, v->delete_stmt, &p, 1, NULL, err);
}

/* The end of one view's evaluation over the resource: its rows count, or, when the resource is at
 * fault (it cannot be evaluated, a value does not fit a column), its rows go and a quarantine
 * entry names the view; the next view goes on. Database failures and out of memory stop. */
static fhirsync_code view_end(void *userdata, size_t index, fhirsync_code code,
                              const fhirsync_error *error)
{
    row_ctx *ctx = userdata;
    fhirsync_store *s = ctx->s;
    fs_store_view *v = s->view_set[index];
    int64_t rows = ctx->rows;
    bool db_failed = ctx->db_failed;
    ctx->rows = 0;
    ctx->db_failed = false;
    if (ctx->stats)
        ctx->stats->resources++;
    if (code == FHIRSYNC_OK) {
        if (ctx->stats)
            ctx->stats->rows += rows;
        return FHIRSYNC_OK;
    }
    ctx->stopped = true;
    if (db_failed || code == FHIRSYNC_E_NOMEM) {
        if (code == FHIRSYNC_E_NOMEM && !db_failed)
            fs_store_nomem(ctx->err);
        return code;
    }
    /* the resource's fault: no rows in this view, and a quarantine entry saying why */
    fhirsync_code rc = rows ? delete_rows(s, v, ctx->id, ctx->id_len, ctx->err) : FHIRSYNC_OK;
    if (rc != FHIRSYNC_OK)
        return rc;
    if (ctx->stats)
        ctx->stats->failed++;
    char source[VIEW_NAME_MAX + sizeof QUARANTINE_SOURCE];
    snprintf(source, sizeof source, QUARANTINE_SOURCE "%s", v->name);
    char reason[sizeof error->message + VIEW_NAME_MAX + 64];
    snprintf(reason, sizeof reason, "view %s: resource %.*s: %s", v->name, (int)ctx->id_len,
             ctx->id, ctx->why[0] ? ctx->why : error->message);
    ctx->why[0] = '\0';
    fs_log(FHIRSYNC_LOG_WARN, "%s (the resource is stored; it has no rows in the view)", reason);
    fhirsync_quarantine_entry q = {.run_id = ctx->run_id,
                                   .source = source,
                                   .reason = reason,
                                   .line = ctx->line,
                                   .line_len = ctx->len};
    rc = fs_store_quarantine_in_tx(s, &q, ctx->err);
    ctx->stopped = rc != FHIRSYNC_OK;
    return rc;
}

/* Evaluate the views of type `type` (only `only` when not NULL) over one stored resource, read
 * once, and insert their rows (after deleting its old ones when `replace`). A resource a view
 * cannot evaluate is quarantined for that view (stats->failed); only database failures and out of
 * memory are returned. */
static fhirsync_code materialize(fhirsync_store *s, const char *type, fs_store_view *only,
                                 const char *id, size_t id_len, const char *line, size_t len,
                                 int64_t run_id, bool replace, fhirsync_view_stats *stats,
                                 fhirsync_error *err)
{
    fhirsync_code rc = FHIRSYNC_OK;
    size_t n = 0;
    for (size_t i = 0; i < s->view_count && rc == FHIRSYNC_OK; i++) {
        fs_store_view *v = &s->views[i];
        if ((only && v != only) || !covers(v, type))
            continue;
        rc = view_prepare(s, v, err);
        if (rc == FHIRSYNC_OK && replace)
            rc = delete_rows(s, v, id, id_len, err);
        s->view_set[n] = v;
        s->view_set_views[n++] = v->view;
    }
    if (rc != FHIRSYNC_OK || n == 0)
        return rc;
    row_ctx ctx = {.s = s,
                   .id = id,
                   .id_len = id_len,
                   .line = line,
                   .len = len,
                   .run_id = run_id,
                   .stats = stats,
                   .err = err};
    fhirsync_error why;
    fs_err_clear(&why);
    rc = fhirsync_view_eval_many(s->view_set_views, n, line, len, on_row, view_end, &ctx, &why);
    if (rc == FHIRSYNC_E_JSON) /* not read: no view could evaluate it */
        for (size_t i = 0; i < n && (rc == FHIRSYNC_E_JSON || rc == FHIRSYNC_OK); i++)
            rc = view_end(&ctx, i, FHIRSYNC_E_JSON, &why);
    else if (rc == FHIRSYNC_E_NOMEM && !ctx.stopped)
        fs_store_nomem(err);
    return rc;
}

fhirsync_code fs_store_views_put(fhirsync_store *s, fs_store_type *t, const char *id, size_t id_len,
                                 const char *line, size_t len, int64_t run_id, bool inserted,
                                 fhirsync_error *err)
{
    return materialize(s, t->name, NULL, id, id_len, line, len, run_id, !inserted, NULL, err);
}

fhirsync_code fs_store_views_delete(fhirsync_store *s, fs_store_type *t, const char *id,
                                    fhirsync_error *err)
{
    fhirsync_code rc = FHIRSYNC_OK;
    for (size_t i = 0; i < s->view_count && rc == FHIRSYNC_OK; i++) {
        fs_store_view *v = &s->views[i];
        if (!covers(v, t->name))
            continue;
        rc = view_prepare(s, v, err);
        if (rc == FHIRSYNC_OK)
            rc = delete_rows(s, v, id, strlen(id), err);
    }
    return rc;
}

fhirsync_code fs_store_views_delete_ids(fhirsync_store *s, fs_store_type *t, const char *ids_sql,
                                        const fs_sql_value *params, int n, fhirsync_error *err)
{
    fhirsync_code rc = FHIRSYNC_OK;
    fs_buf sql;
    fs_buf_init(&sql);
    for (size_t i = 0; i < s->view_count && rc == FHIRSYNC_OK; i++) {
        fs_store_view *v = &s->views[i];
        if (!covers(v, t->name))
            continue;
        fs_buf_reset(&sql);
        if (!fs_buf_printf(&sql, "DELETE FROM ") || !quote_name(&sql, v->name) ||
            !fs_buf_printf(&sql, " WHERE _resource_id IN (%s)", ids_sql))
            rc = fs_store_nomem(err);
        else
            rc = s->ops->exec(s, sql.data, false, params, n, NULL, NULL, NULL, err);
    }
    fs_buf_free(&sql);
    return rc;
}

/* ---- reading stored resources by pages ------------------------------------------------------- */

typedef struct page {
    char **ids, **lines;
    size_t *lens;
    int64_t *runs;
    size_t count;
    bool nomem;
} page;

static void page_clear(page *p)
{
    for (size_t i = 0; i < p->count; i++) {
        fs_free(p->ids[i]);
        fs_free(p->lines[i]);
    }
    p->count = 0;
    p->nomem = false;
}

static int page_row(void *userdata, int ncols, const char *const *values, const size_t *lengths,
                    const char *const *names)
{
    (void)names;
    page *p = userdata;
    if (ncols < 3 || !values[0] || !values[1] || p->count >= PAGE_ROWS)
        return 0;
    size_t i = p->count;
    p->ids[i] = fs_strndup(values[0], lengths[0]);
    p->lines[i] = fs_strndup(values[1], lengths[1]);
    p->lens[i] = lengths[1];
    p->runs[i] = fs_store_int_or_zero(values[2]);
    if (!p->ids[i] || !p->lines[i]) {
        fs_free(p->ids[i]);
        fs_free(p->lines[i]);
        p->nomem = true;
        return 1;
    }
    p->count++;
    return 0;
}

/* For each stored resource of `type` chosen by `filter` (SQL after "WHERE" using ?2 for the type
 * name; NULL: all), in id order: evaluate the views of `type` (only `only` when not NULL)
 * and insert their rows (the rows are expected deleted already). */
static fhirsync_code build(fhirsync_store *s, const char *type, fs_store_view *only,
                           const char *filter, fhirsync_view_stats *stats, fhirsync_error *err)
{
    bool exists = false;
    fhirsync_code rc = fs_store_table_of(s, type, &exists, err);
    if (rc != FHIRSYNC_OK || !exists)
        return rc;
    char quoted[FS_STORE_TYPE_MAX + 3];
    fs_store_quote_type(type, quoted, sizeof quoted);
    fs_buf sql;
    fs_buf_init(&sql);
    page p = {0};
    p.ids = fs_calloc(PAGE_ROWS, sizeof *p.ids);
    p.lines = fs_calloc(PAGE_ROWS, sizeof *p.lines);
    p.lens = fs_calloc(PAGE_ROWS, sizeof *p.lens);
    p.runs = fs_calloc(PAGE_ROWS, sizeof *p.runs);
    if (!p.ids || !p.lines || !p.lens || !p.runs ||
        !fs_buf_printf(&sql,
                       "SELECT id, raw, run_id FROM %s WHERE id > ?1%s%s ORDER BY id LIMIT %d",
                       quoted, filter ? " AND " : "", filter ? filter : "", PAGE_ROWS))
        rc = fs_store_nomem(err);
    char *last = fs_strdup("");
    if (!last)
        rc = fs_store_nomem(err);
    while (rc == FHIRSYNC_OK) {
        fs_sql_value params[2] = {fs_sql_text(last), fs_sql_text(type)};
        rc = s->ops->exec(s, sql.data, false, params, filter ? 2 : 1, page_row, &p, NULL, err);
        if (rc == FHIRSYNC_OK && p.nomem)
            rc = fs_store_nomem(err);
        for (size_t i = 0; rc == FHIRSYNC_OK && i < p.count; i++) {
            rc = materialize(s, type, only, p.ids[i], strlen(p.ids[i]), p.lines[i], p.lens[i],
                             p.runs[i], false, stats, err);
            if (rc == FHIRSYNC_OK && fs_cancel_requested())
                rc = fs_err(err, FHIRSYNC_E_CANCELLED, "cancelled");
        }
        bool more = p.count == PAGE_ROWS;
        if (rc == FHIRSYNC_OK && more) {
            fs_free(last);
            if (!(last = fs_strdup(p.ids[p.count - 1])))
                rc = fs_store_nomem(err);
        }
        page_clear(&p);
        if (!more)
            break;
    }
    fs_free(last);
    fs_free(p.ids);
    fs_free(p.lines);
    fs_free(p.lens);
    fs_free(p.runs);
    fs_buf_free(&sql);
    return rc;
}

fhirsync_code fs_store_views_merged(fhirsync_store *s, fs_store_type *t, fhirsync_error *err)
{
    fhirsync_code rc =
        fs_store_views_delete_ids(s, t, "SELECT id FROM fhirsync_merged WHERE type = ?1",
                                  (fs_sql_value[]){fs_sql_text(t->name)}, 1, err);
    if (rc == FHIRSYNC_OK)
        rc = build(s, t->name, NULL, "id IN (SELECT id FROM fhirsync_merged WHERE type = ?2)", NULL,
                   err);
    fs_sql_value p = fs_sql_text(t->name);
    if (rc == FHIRSYNC_OK)
        rc = s->ops->exec(s, "DELETE FROM fhirsync_merged WHERE type = ?1", true, &p, 1, NULL, NULL,
                          NULL, err);
    return rc;
}

/* ---- the public API -------------------------------------------------------------------------- */

fhirsync_code fhirsync_view_stats_init(fhirsync_view_stats *stats, unsigned int version)
{
    return fs_versioned_init(stats, sizeof *stats, version, FHIRSYNC_VIEW_STATS_VERSION,
                             "fhirsync_view_stats");
}

static fhirsync_code check_stats(fhirsync_view_stats *stats, fhirsync_error *err)
{
    if (!stats)
        return FHIRSYNC_OK;
    fhirsync_code rc =
        fs_check_version(stats->version, FHIRSYNC_VIEW_STATS_VERSION, "fhirsync_view_stats", err);
    if (rc == FHIRSYNC_OK) {
        unsigned int version = stats->version;
        memset(stats, 0, sizeof *stats);
        stats->version = version;
    }
    return rc;
}

/* A view's name and columns as the store needs them. */
static fhirsync_code check_view(const fhirsync_view *view, fhirsync_error *err)
{
    const char *name = fhirsync_view_name(view);
    if (!name)
        return fs_err(err, FHIRSYNC_E_VIEW,
                      "name: a view needs a name to be materialized (its table is named after it)");
    size_t n = strlen(name);
    bool ok = n >= 1 && n <= VIEW_NAME_MAX &&
              ((name[0] >= 'A' && name[0] <= 'Z') || (name[0] >= 'a' && name[0] <= 'z'));
    for (size_t i = 1; ok && i < n; i++) {
        char c = name[i];
        ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    }
    if (!ok)
        return fs_err(err, FHIRSYNC_E_VIEW,
                      "name: '%s' cannot name a table (^[A-Za-z][A-Za-z0-9_]{0,%d}$)", name,
                      VIEW_NAME_MAX - 1);
    for (size_t i = 0; internal_tables[i]; i++)
        if (strcasecmp(name, internal_tables[i]) == 0)
            return fs_err(err, FHIRSYNC_E_VIEW, "name: '%s' is the name of an internal table",
                          name);
    size_t ncols = fhirsync_view_column_count(view);
    if (ncols > VIEW_COLUMNS_MAX)
        return fs_err(err, FHIRSYNC_E_VIEW,
                      "select: %zu columns; a materialized view has at most %d", ncols,
                      VIEW_COLUMNS_MAX);
    for (size_t i = 0; i < ncols; i++)
        for (size_t j = 0; j < i; j++) {
            const char *a = fhirsync_view_column_at(view, i)->name;
            const char *b = fhirsync_view_column_at(view, j)->name;
            if (strcasecmp(a, b) == 0)
                return fs_err(err, FHIRSYNC_E_VIEW,
                              "column '%s': the same name as column '%s' ignoring case, which a "
                              "database cannot tell apart",
                              a, b);
        }
    return FHIRSYNC_OK;
}

/* Whether a table or view other than a registered view's has this name, ignoring case. */
static fhirsync_code name_in_use(fhirsync_store *s, const char *name, bool *used,
                                 fhirsync_error *err)
{
    fs_sql_value p = fs_sql_text(name);
    *used = false;
    return s->ops->exec(s,
                        s->engine == FS_ENGINE_SQLITE
                            ? "SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view')"
                              " AND lower(name) = lower(?1)"
                            : "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
                              " ON n.oid = c.relnamespace WHERE n.nspname = current_schema()"
                              " AND c.relkind IN ('r', 'v', 'm', 'p', 'f')"
                              " AND lower(c.relname) = lower(?1)",
                        true, &p, 1, fs_store_row_exists, used, NULL, err);
}

static fhirsync_code create_table(fhirsync_store *s, const fhirsync_view *view, const char *name,
                                  fhirsync_error *err)
{
    fs_buf ddl;
    fs_buf_init(&ddl);
    bool pg = s->engine == FS_ENGINE_POSTGRESQL;
    bool ok = fs_buf_printf(&ddl, "CREATE TABLE ") && quote_name(&ddl, name) &&
              fs_buf_printf(&ddl, " (_resource_id %s NOT NULL", pg ? "text COLLATE \"C\"" : "TEXT");
    for (size_t i = 0; ok && i < fhirsync_view_column_count(view); i++) {
        const fhirsync_view_column *c = fhirsync_view_column_at(view, i);
        const char *type = sql_type(s->engine, class_of(c));
        ok = fs_buf_printf(&ddl, ", ") && quote_name(&ddl, c->name) &&
             fs_buf_printf(&ddl, "%s%s", *type ? " " : "", type);
    }
    ok = ok && fs_buf_printf(&ddl, "); CREATE INDEX \"%s__resource\" ON ", name) &&
         quote_name(&ddl, name) && fs_buf_printf(&ddl, " (_resource_id)");
    fhirsync_code rc = ok ? s->ops->script(s, ddl.data, err) : fs_store_nomem(err);
    fs_buf_free(&ddl);
    return rc;
}

static fhirsync_code drop_table(fhirsync_store *s, const char *name, fhirsync_error *err)
{
    fs_buf ddl;
    fs_buf_init(&ddl);
    fhirsync_code rc = fs_buf_printf(&ddl, "DROP TABLE IF EXISTS ") && quote_name(&ddl, name)
                           ? s->ops->script(s, ddl.data, err)
                           : fs_store_nomem(err);
    fs_buf_free(&ddl);
    return rc;
}

static fs_store_view *find_view(fhirsync_store *s, const char *name)
{
    for (size_t i = 0; i < s->view_count; i++)
        if (strcmp(s->views[i].name, name) == 0)
            return &s->views[i];
    return NULL;
}

/* Begin a transaction that changes views: outside a batch, holding the views lock exclusively,
 * with the registry read. */
static fhirsync_code begin_change(fhirsync_store *s, const char *what, bool *own,
                                  fhirsync_error *err)
{
    *own = false;
    fhirsync_code rc = fs_store_check_writable(s, err);
    if (rc == FHIRSYNC_OK)
        rc = fs_store_check_outside_batch(s, what, err);
    if (rc == FHIRSYNC_OK)
        rc = fs_store_tx_open(s, own, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    rc = views_lock(s, true, err);
    if (rc == FHIRSYNC_OK && s->engine == FS_ENGINE_POSTGRESQL) {
        fs_sql_value key = fs_sql_int(FS_STORE_PG_DDL_KEY);
        rc = s->ops->exec(s, "SELECT pg_advisory_xact_lock(?1)", true, &key, 1, NULL, NULL, NULL,
                          err);
    }
    s->views_tx = false; /* read it again under the exclusive lock */
    if (rc == FHIRSYNC_OK)
        rc = fs_store_views_ready(s, err);
    return rc;
}

static fhirsync_code end_change(fhirsync_store *s, bool own, fhirsync_code rc, fhirsync_error *err)
{
    rc = fs_store_tx_close(s, own, rc, err);
    if (rc != FHIRSYNC_OK)
        fs_store_views_unload(s); /* the registry may have changed in what was rolled back */
    return rc;
}

/* Rebuild v's table whole and record when. */
static fhirsync_code rebuild(fhirsync_store *s, fs_store_view *v, fhirsync_view_stats *stats,
                             fhirsync_error *err)
{
    fs_buf sql;
    fs_buf_init(&sql);
    fhirsync_code rc = fs_buf_printf(&sql, "DELETE FROM ") && quote_name(&sql, v->name)
                           ? s->ops->exec(s, sql.data, false, NULL, 0, NULL, NULL, NULL, err)
                           : fs_store_nomem(err);
    fs_buf_free(&sql);
    if (rc == FHIRSYNC_OK)
        rc = build(s, v->type, v, NULL, stats, err);
    fs_sql_value p[2] = {fs_sql_text(fs_store_loaded_at(s)), fs_sql_text(v->name)};
    if (rc == FHIRSYNC_OK)
        rc = s->ops->exec(s, "UPDATE view_definitions SET refreshed_at = ?1 WHERE name = ?2", true,
                          p, 2, NULL, NULL, NULL, err);
    if (rc == FHIRSYNC_OK && stats)
        stats->views++;
    return rc;
}

fhirsync_code fhirsync_store_view_add(fhirsync_store *store, const char *json, size_t len,
                                      fhirsync_view_stats *stats, fhirsync_error *err)
{
    fhirsync_code rc = check_stats(stats, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    fhirsync_view_stats local;
    if (!stats) {
        fhirsync_view_stats_init(&local, FHIRSYNC_VIEW_STATS_VERSION);
        stats = &local;
    }
    if (!json)
        return fs_err(err, FHIRSYNC_E_ARG, "no ViewDefinition");
    fhirsync_view *view = NULL;
    rc = fhirsync_view_parse(json, len, &view, err);
    if (rc == FHIRSYNC_OK)
        rc = check_view(view, err);
    if (rc != FHIRSYNC_OK) {
        fhirsync_view_free(view);
        return rc;
    }
    const char *name = fhirsync_view_name(view);
    char digest[17];
    snprintf(digest, sizeof digest, "%016llx",
             (unsigned long long)fs_fnv1a(FS_FNV1A_INIT, json, len));
    /* the same definition registered already (the sync's case): no lock, no transaction */
    char *known = NULL;
    fs_sql_value key = fs_sql_text(name);
    rc = fs_store_check_writable(store, err);
    if (rc == FHIRSYNC_OK)
        rc = fs_store_check_outside_batch(store, "adding a view", err);
    if (rc == FHIRSYNC_OK)
        rc = fs_store_query_string(store, "SELECT digest FROM view_definitions WHERE name = ?1",
                                   &key, 1, &known, err);
    bool unchanged = rc == FHIRSYNC_OK && known && strcmp(known, digest) == 0;
    fs_free(known);
    if (rc != FHIRSYNC_OK || unchanged) {
        fhirsync_view_free(view);
        if (unchanged)
            stats->unchanged = true;
        return rc;
    }
    bool own;
    rc = begin_change(store, "adding a view", &own, err);
    fs_store_view *old = rc == FHIRSYNC_OK ? find_view(store, name) : NULL;
    bool same = old && strncmp(old->stamp, digest, 16) == 0 && old->stamp[16] == ' ';
    if (rc == FHIRSYNC_OK && same)
        stats->unchanged = true;
    if (rc == FHIRSYNC_OK && !same) {
        bool used = false;
        if (old) {
            stats->replaced = true;
            rc = drop_table(store, old->name, err);
        } else {
            rc = name_in_use(store, name, &used, err);
            if (rc == FHIRSYNC_OK && used)
                rc = fs_err(err, FHIRSYNC_E_VIEW,
                            "name: the store already has a table named '%s' (ignoring case): "
                            "give the view another name",
                            name);
        }
        if (rc == FHIRSYNC_OK)
            rc = create_table(store, view, name, err);
        const char *now = fs_store_loaded_at(store);
        fs_sql_value p[5] = {fs_sql_text(name), fs_sql_text(fhirsync_view_resource(view)),
                             fs_sql_textn(json, len), fs_sql_text(digest), fs_sql_text(now)};
        if (rc == FHIRSYNC_OK)
            rc = store->ops->exec(store,
                                  "INSERT INTO view_definitions (name, resource_type, definition,"
                                  " digest, created_at, refreshed_at) VALUES (?1, ?2, ?3, ?4, ?5,"
                                  " ?5) ON CONFLICT (name) DO UPDATE SET"
                                  " resource_type = excluded.resource_type,"
                                  " definition = excluded.definition, digest = excluded.digest,"
                                  " created_at = excluded.created_at,"
                                  " refreshed_at = excluded.refreshed_at",
                                  true, p, 5, NULL, NULL, NULL, err);
        /* the new registry, then the table's rows */
        store->views_tx = false;
        if (rc == FHIRSYNC_OK)
            rc = fs_store_views_ready(store, err);
        fs_store_view *v = rc == FHIRSYNC_OK ? find_view(store, name) : NULL;
        if (rc == FHIRSYNC_OK && !v)
            rc = fs_err(err, FHIRSYNC_E_INTERNAL, "view %s vanished from the registry", name);
        if (rc == FHIRSYNC_OK)
            rc = rebuild(store, v, stats, err);
    }
    if (rc != FHIRSYNC_OK && rc != FHIRSYNC_E_VIEW)
        fs_err_prefix(err, "adding view %s", name);
    rc = end_change(store, own, rc, err);
    if (rc == FHIRSYNC_OK && !same)
        fs_log(FHIRSYNC_LOG_INFO, "store %s: view %s %s: %lld rows from %lld %s resources",
               store->location, name, stats->replaced ? "replaced" : "added",
               (long long)stats->rows, (long long)stats->resources, fhirsync_view_resource(view));
    fhirsync_view_free(view);
    if (rc != FHIRSYNC_OK) {
        unsigned int version = stats->version;
        memset(stats, 0, sizeof *stats);
        stats->version = version;
    }
    return rc;
}

fhirsync_code fhirsync_store_view_refresh(fhirsync_store *store, const char *name,
                                          fhirsync_view_stats *stats, fhirsync_error *err)
{
    fhirsync_code rc = check_stats(stats, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    bool own;
    rc = begin_change(store, "refreshing views", &own, err);
    if (rc == FHIRSYNC_OK && name && !find_view(store, name))
        rc = fs_err(err, FHIRSYNC_E_ARG, "the store has no view named '%s'", name);
    for (size_t i = 0; rc == FHIRSYNC_OK && i < store->view_count; i++)
        if (!name || strcmp(store->views[i].name, name) == 0)
            rc = rebuild(store, &store->views[i], stats, err);
    return end_change(store, own, rc, err);
}

fhirsync_code fhirsync_store_view_remove(fhirsync_store *store, const char *name,
                                         fhirsync_error *err)
{
    if (!name)
        return fs_err(err, FHIRSYNC_E_ARG, "no view name");
    bool own;
    fhirsync_code rc = begin_change(store, "removing a view", &own, err);
    if (rc == FHIRSYNC_OK && !find_view(store, name))
        rc = fs_err(err, FHIRSYNC_E_ARG, "the store has no view named '%s'", name);
    if (rc == FHIRSYNC_OK)
        rc = drop_table(store, name, err);
    fs_sql_value p = fs_sql_text(name);
    if (rc == FHIRSYNC_OK)
        rc = store->ops->exec(store, "DELETE FROM view_definitions WHERE name = ?1", true, &p, 1,
                              NULL, NULL, NULL, err);
    store->views_tx = false;
    if (rc == FHIRSYNC_OK)
        rc = fs_store_views_ready(store, err);
    return end_change(store, own, rc, err);
}

fhirsync_code fhirsync_store_views(fhirsync_store *store, fhirsync_store_view_cb cb, void *userdata,
                                   fhirsync_error *err)
{
    if (!store || !cb)
        return fs_err(err, FHIRSYNC_E_ARG, "no store or no callback");
    fhirsync_code rc = fs_store_check_outside_batch(store, "listing views", err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (store->schema_version < 4)
        return FHIRSYNC_OK; /* a read-only handle on a store from before views */
    /* the registry's rows, the stamp column carrying "created_at refreshed_at" */
    registry reg;
    memset(&reg, 0, sizeof reg);
    reg.full = true;
    rc = store->ops->exec(store,
                          "SELECT name, created_at || ' ' || refreshed_at, resource_type,"
                          " definition FROM view_definitions ORDER BY name",
                          true, NULL, 0, registry_row_cb, &reg, NULL, err);
    if (rc == FHIRSYNC_OK && reg.nomem)
        rc = fs_store_nomem(err);
    fs_buf sql;
    fs_buf_init(&sql);
    for (size_t i = 0; rc == FHIRSYNC_OK && i < reg.count; i++) {
        registry_row *row = &reg.rows[i];
        int64_t rows = 0;
        fs_buf_reset(&sql);
        if (!fs_buf_printf(&sql, "SELECT count(*) FROM ") || !quote_name(&sql, row->name))
            rc = fs_store_nomem(err);
        else
            rc = store->ops->exec(store, sql.data, false, NULL, 0, fs_store_row_int, &rows, NULL,
                                  err);
        if (rc != FHIRSYNC_OK)
            break;
        char *space = strchr(row->stamp, ' ');
        if (space)
            *space = '\0';
        fhirsync_store_view_info info = {.name = row->name,
                                         .resource = row->type,
                                         .definition = row->definition,
                                         .created_at = row->stamp,
                                         .refreshed_at = space ? space + 1 : "",
                                         .rows = rows};
        if (cb(&info, userdata) != 0)
            break;
    }
    fs_buf_free(&sql);
    registry_free(&reg);
    return rc;
}
