/* store/postgresql.c: the PostgreSQL engine of the store (libpq), for scale and for several
 * workers on several machines sharing one database.
 *
 * Resources are kept twice per row: `resource jsonb` for querying and `raw text` with the exact
 * bytes received, because jsonb normalises what FHIR needs kept (whitespace, key order, duplicate
 * keys, number spelling such as 6.0E-3). A line containing the escape \u0000, which jsonb cannot
 * hold, is stored with a NULL `resource` and keeps its `raw`.
 *
 * Three write paths:
 *   - rows: one prepared upsert per resource type (crawl batches, single puts);
 *   - bulk (a batch opened with FHIRSYNC_STORE_BULK): rows stream with COPY ... (FORMAT binary)
 *     into a session-private temporary staging table, and are merged into the type tables with
 *     INSERT ... SELECT ... ON CONFLICT when the batch commits, every STAGE_ROWS rows, or before
 *     any other statement (so deletes and run updates see them). An id seen twice in the staging
 *     set triggers a merge first, so repeated ids apply in order, as on the row path.
 *   - append (FHIRSYNC_STORE_BULK | FHIRSYNC_STORE_APPEND: rows the caller expects to be new, a
 *     first full load): rows stream with COPY straight into the type's table, sparing the
 *     server the staging write and the upsert (10-20% of its CPU per row). An id already
 *     stored, or repeated in the batch, violates the primary key: the batch fails with
 *     FHIRSYNC_E_CONFLICT and the caller loads it again without the flag.
 *
 * The connection string's password never reaches a log or an error: libpq's messages are
 * scrubbed of it, and the location kept for display is rebuilt without it. Notices go to the
 * log at debug level instead of libpq's default of printing to stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "store/store_private.h"

#define MAX_PARAMS 16
#define MAX_COLUMNS 24 /* of the store's own statements (status.c reads 16) */
#define STAGE_ROWS 25000
/* open addressing set of staged (type, id) hashes: > 2 x STAGE_ROWS */
#define STAGE_SET_SIZE 65536
#define COPY_CHUNK (256 * 1024)

#define OID_BOOL 16
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_TEXT 25

typedef struct pg_impl {
    PGconn *conn;
    char *password; /* to scrub from libpq's messages; wiped on close */
    /* bulk staging */
    bool copy_active;
    int copy_table; /* the COPY's target: -1 the staging table, else the slot of a type table */
    fs_buf copy;
    size_t staged_rows;
    uint64_t *staged_ids;
    unsigned *staged_types; /* slots of the types with staged rows */
    size_t staged_type_count, staged_type_cap;
    fs_buf scratch;                     /* bytea decoding */
    struct pg_stmt_params *stmt_params; /* stmt_run's arrays (large: allocated once) */
    unsigned long long stmt_serial;     /* names of stmt_prepare statements */
} pg_impl;

static pg_impl *impl_of(fhirsync_store *s)
{
    return s->impl;
}

/* ---- errors ---------------------------------------------------------------------------------- */

/* Copy a libpq message without the password. */
static void scrub(const pg_impl *impl, const char *message, char *buf, size_t size)
{
    snprintf(buf, size, "%s", message ? message : "");
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    if (!impl->password || !*impl->password)
        return;
    size_t plen = strlen(impl->password);
    char *hit;
    while ((hit = strstr(buf, impl->password)) != NULL) {
        memset(hit, '*', plen > 3 ? 3 : plen);
        memmove(hit + (plen > 3 ? 3 : plen), hit + plen, strlen(hit + plen) + 1);
    }
}

/* An error from a result: the primary message and SQLSTATE only (the detail and context can
 * quote row data, i.e. patient data). */
static fhirsync_code result_error(fhirsync_store *s, const PGresult *res, const char *what,
                                  fhirsync_error *err)
{
    pg_impl *impl = impl_of(s);
    char message[600];
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (PQstatus(impl->conn) == CONNECTION_BAD)
        return fs_err(err, FHIRSYNC_E_STORE, "PostgreSQL: the connection to %s was lost (%s)",
                      s->location, what);
    scrub(impl, primary ? primary : PQerrorMessage(impl->conn), message, sizeof message);
    fhirsync_code code = FHIRSYNC_E_STORE;
    if (state && strcmp(state, "25006") == 0)
        code = FHIRSYNC_E_ARG; /* a write in a read-only transaction */
    /* another writer got in the way (a deadlock, a serialization failure), or an append batch
     * met an id already stored: the transaction is lost, running it again is the cure */
    if (state && (strcmp(state, "40P01") == 0 || strcmp(state, "40001") == 0 ||
                  (strcmp(state, "23505") == 0 && s->append)))
        code = FHIRSYNC_E_CONFLICT;
    return fs_err(err, code, "PostgreSQL: %s%s%s%s (%s)", message, state ? " (SQLSTATE " : "",
                  state ? state : "", state ? ")" : "", what);
}

static bool result_ok(const PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

/* Run a parameterless command (no staging flush: the caller's business). */
static fhirsync_code command(fhirsync_store *s, const char *sql, const char *what,
                             fhirsync_error *err)
{
    PGresult *res = PQexec(impl_of(s)->conn, sql);
    fhirsync_code rc = res && result_ok(res) ? FHIRSYNC_OK : result_error(s, res, what, err);
    PQclear(res);
    return rc;
}

/* ---- bulk staging ---------------------------------------------------------------------------- */

static bool put_u16(fs_buf *b, unsigned v)
{
    unsigned char x[2] = {(unsigned char)(v >> 8), (unsigned char)v};
    return fs_buf_append(b, x, 2);
}

static bool put_u32(fs_buf *b, uint32_t v)
{
    unsigned char x[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    return fs_buf_append(b, x, 4);
}

static bool put_field(fs_buf *b, const char *data, size_t len)
{
    if (!data)
        return put_u32(b, 0xffffffffu); /* -1: NULL */
    return put_u32(b, (uint32_t)len) && fs_buf_append(b, data, len);
}

static bool put_int8(fs_buf *b, bool present, int64_t v)
{
    if (!present)
        return put_u32(b, 0xffffffffu);
    uint64_t u = (uint64_t)v;
    return put_u32(b, 8) && put_u32(b, (uint32_t)(u >> 32)) && put_u32(b, (uint32_t)u);
}

/* The COPY ended early (the server refused a row, or the connection broke): report the
 * server's error rather than libpq's "no COPY in progress", and leave the connection usable. */
static fhirsync_code copy_failed(fhirsync_store *s, const char *what, fhirsync_error *err)
{
    pg_impl *impl = impl_of(s);
    impl->copy_active = false;
    impl->copy.len = 0;
    fhirsync_code rc = FHIRSYNC_OK;
    PGresult *res;
    while ((res = PQgetResult(impl->conn)) != NULL) {
        if (rc == FHIRSYNC_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
            rc = result_error(s, res, what, err);
        PQclear(res);
    }
    return rc != FHIRSYNC_OK ? rc : result_error(s, NULL, what, err);
}

static const char *copy_what(const pg_impl *impl)
{
    return impl->copy_table >= 0 ? "appending rows with COPY" : "staging rows with COPY";
}

static fhirsync_code send_copy_data(fhirsync_store *s, fhirsync_error *err)
{
    pg_impl *impl = impl_of(s);
    if (impl->copy.len == 0)
        return FHIRSYNC_OK;
    if (PQputCopyData(impl->conn, impl->copy.data, (int)impl->copy.len) != 1)
        return copy_failed(s, copy_what(impl), err);
    impl->copy.len = 0;
    return FHIRSYNC_OK;
}

/* End the COPY stream (successfully, or aborting it). */
static fhirsync_code end_copy(fhirsync_store *s, bool abort_it, fhirsync_error *err)
{
    pg_impl *impl = impl_of(s);
    if (!impl->copy_active)
        return FHIRSYNC_OK;
    fhirsync_code rc = FHIRSYNC_OK;
    if (!abort_it) {
        if (!put_u16(&impl->copy, 0xffffu)) /* the trailer */
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        else
            rc = send_copy_data(s, err);
        if (!impl->copy_active)
            return rc; /* the server ended it: send_copy_data reported why */
    }
    impl->copy_active = false;
    bool clean = rc == FHIRSYNC_OK && !abort_it;
    if (PQputCopyEnd(impl->conn, clean ? NULL : "aborted") != 1) {
        fhirsync_code failed = copy_failed(s, copy_what(impl), clean ? err : NULL);
        return clean ? failed : rc;
    }
    PGresult *res;
    while ((res = PQgetResult(impl->conn)) != NULL) {
        if (rc == FHIRSYNC_OK && !abort_it && PQresultStatus(res) != PGRES_COMMAND_OK)
            rc = result_error(s, res, copy_what(impl), err);
        PQclear(res);
    }
    impl->copy.len = 0;
    return rc;
}

static void reset_staging(pg_impl *impl)
{
    impl->copy_table = -1;
    impl->staged_rows = 0;
    impl->staged_type_count = 0;
    if (impl->staged_ids)
        memset(impl->staged_ids, 0, STAGE_SET_SIZE * sizeof *impl->staged_ids);
}

/* The upsert rule of both PostgreSQL write paths (fhirsync_store_put says it in words): the
 * incoming row replaces the stored one unless the stored one is newer (lastUpdated, then numeric
 * versionId). `quoted`: the type's table. */
static bool append_upsert_rule(fs_buf *sql, const char *quoted)
{
    return fs_buf_printf(
        sql,
        " ON CONFLICT (id) DO UPDATE SET version_id = excluded.version_id,"
        " last_updated = excluded.last_updated, last_updated_ms = excluded.last_updated_ms,"
        " patient_id = excluded.patient_id, resource = excluded.resource, raw = excluded.raw,"
        " loaded_at = excluded.loaded_at, run_id = excluded.run_id"
        " WHERE NOT (coalesce(excluded.last_updated_ms < %s.last_updated_ms, false)"
        " OR (coalesce(excluded.last_updated_ms = %s.last_updated_ms, true)"
        " AND coalesce((CASE WHEN excluded.version_id ~ '^[0-9]{1,18}$'"
        " THEN excluded.version_id::bigint END)"
        " < (CASE WHEN %s.version_id ~ '^[0-9]{1,18}$' THEN %s.version_id::bigint END),"
        " false)))",
        quoted, quoted, quoted, quoted);
}

/* Merge the staged rows of one type into its table. When views read the type, the ids the merge
 * inserted or replaced are listed in fhirsync_merged for fs_store_views_merged. */
static fhirsync_code merge_type(fhirsync_store *s, fs_store_type *t, fhirsync_error *err)
{
    char quoted[FS_STORE_TYPE_MAX + 3];
    fs_store_quote_type(t->name, quoted, sizeof quoted);
    bool views = fs_store_views_cover(s, t);
    fs_buf sql;
    fs_buf_init(&sql);
    bool ok = (!views || fs_buf_printf(&sql, "WITH merged AS (")) &&
              fs_buf_printf(&sql,
                            "INSERT INTO %s (id, version_id, last_updated, last_updated_ms,"
                            " patient_id, resource, raw, loaded_at, run_id)"
                            " SELECT id, version_id, last_updated, last_updated_ms, patient_id,"
                            " CASE WHEN jsonb_ok THEN raw::jsonb END, raw, $1, run_id"
                            " FROM fhirsync_staging WHERE type = $2",
                            quoted) &&
              append_upsert_rule(&sql, quoted) &&
              (!views || fs_buf_printf(&sql, " RETURNING id) INSERT INTO fhirsync_merged (type,"
                                             " id) SELECT $2, id FROM merged"));
    if (views)
        t->views_merged = true;
    if (!ok) {
        fs_buf_free(&sql);
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    const char *params[2] = {fs_store_loaded_at(s), t->name};
    PGresult *res = PQexecParams(impl_of(s)->conn, sql.data, 2, NULL, params, NULL, NULL, 0);
    fs_buf_free(&sql);
    fhirsync_code rc =
        res && result_ok(res) ? FHIRSYNC_OK : result_error(s, res, "merging staged rows", err);
    PQclear(res);
    return rc;
}

/* End COPY and merge everything staged. */
static fhirsync_code flush_staged(fhirsync_store *s, fhirsync_error *err)
{
    pg_impl *impl = impl_of(s);
    if (!impl->copy_active && impl->staged_rows == 0)
        return FHIRSYNC_OK;
    bool appended = impl->copy_table >= 0; /* straight into a type table: nothing to merge */
    fhirsync_code rc = end_copy(s, false, err);
    for (size_t i = 0; rc == FHIRSYNC_OK && !appended && i < impl->staged_type_count; i++)
        rc = merge_type(s, &s->types[impl->staged_types[i]], err);
    if (rc == FHIRSYNC_OK && !appended && impl->staged_rows)
        rc = command(s, "TRUNCATE fhirsync_staging", "emptying the staging table", err);
    reset_staging(impl);
    /* with nothing staged any more, the views' statements can run */
    for (size_t i = 0; i < s->type_count; i++) {
        fs_store_type *t = &s->types[i];
        if (t->views_merged && rc == FHIRSYNC_OK)
            rc = fs_store_views_merged(s, t, err);
        t->views_merged = false;
    }
    return rc;
}

/* Start a COPY into the staging table (direct NULL) or straight into direct's table. */
static fhirsync_code start_copy(fhirsync_store *s, const fs_store_type *direct, fhirsync_error *err)
{
    pg_impl *impl = impl_of(s);
    if (!direct && !impl->staged_ids) {
        impl->staged_ids = fs_calloc(STAGE_SET_SIZE, sizeof *impl->staged_ids);
        if (!impl->staged_ids)
            return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    char sql[FS_STORE_TYPE_MAX + 160];
    if (direct) {
        char quoted[FS_STORE_TYPE_MAX + 3];
        fs_store_quote_type(direct->name, quoted, sizeof quoted);
        snprintf(sql, sizeof sql,
                 "COPY %s (id, version_id, last_updated, last_updated_ms, patient_id, resource,"
                 " raw, loaded_at, run_id) FROM STDIN (FORMAT binary)",
                 quoted);
    } else {
        snprintf(sql, sizeof sql,
                 "COPY fhirsync_staging (type, id, version_id, last_updated,"
                 " last_updated_ms, patient_id, raw, jsonb_ok, run_id)"
                 " FROM STDIN (FORMAT binary)");
    }
    PGresult *res = PQexec(impl->conn, sql);
    fhirsync_code rc = FHIRSYNC_OK;
    if (!res || PQresultStatus(res) != PGRES_COPY_IN)
        rc = result_error(s, res, "starting COPY", err);
    PQclear(res);
    if (rc != FHIRSYNC_OK)
        return rc;
    impl->copy_active = true;
    impl->copy_table = direct ? (int)direct->slot : -1;
    impl->copy.len = 0;
    /* signature, flags, header extension length */
    static const char signature[11] = {'P',  'G',    'C',  'O',  'P', 'Y',
                                       '\n', '\377', '\r', '\n', '\0'};
    if (!fs_buf_append(&impl->copy, signature, sizeof signature) || !put_u32(&impl->copy, 0) ||
        !put_u32(&impl->copy, 0)) {
        (void)end_copy(s, true, NULL);
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    return FHIRSYNC_OK;
}

/* Add (type, id) to the staged set; false when it is already there. */
static bool stage_id(pg_impl *impl, const fs_store_type *t, const fs_resource_fields *f)
{
    uint64_t h = fs_fnv1a(FS_FNV1A_INIT ^ t->slot, f->id, f->id_len);
    h |= 1; /* 0 marks an empty slot */
    size_t mask = STAGE_SET_SIZE - 1;
    for (size_t i = (size_t)(h ^ (h >> 29)) & mask;; i = (i + 1) & mask) {
        if (impl->staged_ids[i] == h)
            return false; /* a repeat (or, rarely, a collision: then merging early is harmless) */
        if (impl->staged_ids[i] == 0) {
            impl->staged_ids[i] = h;
            return true;
        }
    }
}

static fhirsync_code stage(fhirsync_store *s, fs_store_type *t, const fs_resource_fields *f,
                           const char *line, size_t len, int64_t run_id, fhirsync_error *err)
{
    pg_impl *impl = impl_of(s);
    fhirsync_code rc;
    if (impl->copy_active && !stage_id(impl, t, f)) {
        rc = flush_staged(s, err);
        if (rc != FHIRSYNC_OK)
            return rc;
    }
    if (!impl->copy_active) {
        rc = start_copy(s, NULL, err);
        if (rc != FHIRSYNC_OK)
            return rc;
        stage_id(impl, t, f);
    }
    bool listed = false;
    for (size_t i = 0; i < impl->staged_type_count && !listed; i++)
        listed = impl->staged_types[i] == t->slot;
    if (!listed) {
        if (impl->staged_type_count == impl->staged_type_cap) {
            unsigned *grown =
                fs_array_grow(impl->staged_types, &impl->staged_type_cap, sizeof *grown, 8);
            if (!grown)
                return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
            impl->staged_types = grown;
        }
        impl->staged_types[impl->staged_type_count++] = t->slot;
    }
    fs_buf *b = &impl->copy;
    size_t mark = b->len;
    bool ok = put_u16(b, 9) && put_field(b, t->name, t->len) && put_field(b, f->id, f->id_len) &&
              put_field(b, f->version_id, f->version_id_len) &&
              put_field(b, f->last_updated, f->last_updated_len) &&
              put_int8(b, f->has_last_updated_ms, f->last_updated_ms) &&
              put_field(b, f->patient_id, f->patient_id_len) && put_field(b, line, len) &&
              put_u32(b, 1) && fs_buf_append(b, f->has_nul_escape ? "\0" : "\1", 1) &&
              put_int8(b, run_id > 0, run_id);
    if (!ok) {
        b->len = mark; /* never send half a row */
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    impl->staged_rows++;
    if (b->len >= COPY_CHUNK) {
        rc = send_copy_data(s, err);
        if (rc != FHIRSYNC_OK)
            return rc;
    }
    if (impl->staged_rows >= STAGE_ROWS)
        return flush_staged(s, err);
    return FHIRSYNC_OK;
}

/* An append batch: the row goes straight into t's table (see the top of the file). */
static fhirsync_code append(fhirsync_store *s, fs_store_type *t, const fs_resource_fields *f,
                            const char *line, size_t len, int64_t run_id, fhirsync_error *err)
{
    pg_impl *impl = impl_of(s);
    fhirsync_code rc;
    if (impl->copy_active && impl->copy_table != (int)t->slot) {
        rc = flush_staged(s, err); /* another type (or staged rows) before this one */
        if (rc != FHIRSYNC_OK)
            return rc;
    }
    if (!impl->copy_active) {
        rc = start_copy(s, t, err);
        if (rc != FHIRSYNC_OK)
            return rc;
    }
    const char *loaded_at = fs_store_loaded_at(s);
    fs_buf *b = &impl->copy;
    size_t mark = b->len;
    /* jsonb's binary input is a version byte (1) and the text; \u0000 cannot be held: NULL */
    bool ok = put_u16(b, 9) && put_field(b, f->id, f->id_len) &&
              put_field(b, f->version_id, f->version_id_len) &&
              put_field(b, f->last_updated, f->last_updated_len) &&
              put_int8(b, f->has_last_updated_ms, f->last_updated_ms) &&
              put_field(b, f->patient_id, f->patient_id_len) &&
              (f->has_nul_escape ? put_u32(b, 0xffffffffu)
                                 : put_u32(b, (uint32_t)len + 1) && fs_buf_append(b, "\1", 1) &&
                                       fs_buf_append(b, line, len)) &&
              put_field(b, line, len) && put_field(b, loaded_at, strlen(loaded_at)) &&
              put_int8(b, run_id > 0, run_id);
    if (!ok) {
        b->len = mark; /* never send half a row */
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    impl->staged_rows++;
    return b->len >= COPY_CHUNK ? send_copy_data(s, err) : FHIRSYNC_OK;
}

/* ---- statements ------------------------------------------------------------------------------ */

/* "?N" placeholders of the shared SQL become "$N". */
static char *convert_placeholders(const char *sql)
{
    char *out = fs_strdup(sql);
    if (!out)
        return NULL;
    for (char *p = out; *p; p++)
        if (*p == '?' && p[1] >= '0' && p[1] <= '9')
            *p = '$';
    return out;
}

typedef struct pg_params {
    const char *values[MAX_PARAMS];
    int lengths[MAX_PARAMS];
    int formats[MAX_PARAMS];
    Oid types[MAX_PARAMS];
    char ints[MAX_PARAMS][24];
} pg_params;

/* The parameters of a statement built at run time (stmt_run): as many as FS_STORE_STMT_PARAMS. */
typedef struct pg_stmt_params {
    const char *values[FS_STORE_STMT_PARAMS];
    int lengths[FS_STORE_STMT_PARAMS];
    int formats[FS_STORE_STMT_PARAMS];
    Oid types[FS_STORE_STMT_PARAMS];
    char ints[FS_STORE_STMT_PARAMS][24];
} pg_stmt_params;

/* Fill the libpq arrays of params (each at least n long). */
#define fill_params(pp, params, n)                                                                 \
    fill_arrays((pp)->values, (pp)->lengths, (pp)->formats, (pp)->types, (pp)->ints, params, n)

static void fill_arrays(const char **values, int *lengths, int *formats, Oid *types,
                        char (*ints)[24], const fs_sql_value *params, int n)
{
    for (int i = 0; i < n; i++) {
        const fs_sql_value *v = &params[i];
        values[i] = NULL;
        lengths[i] = 0;
        formats[i] = 0;
        types[i] = 0;
        switch (v->kind) {
        case FS_SQL_INT:
            snprintf(ints[i], sizeof ints[i], "%lld", (long long)v->i);
            values[i] = ints[i];
            types[i] = OID_INT8;
            break;
        case FS_SQL_TEXT: values[i] = v->s; break; /* text format: any type may parse it */
        case FS_SQL_TEXTN:
            values[i] = v->s;
            lengths[i] = (int)v->len;
            formats[i] = 1; /* binary text is the bytes themselves */
            types[i] = OID_TEXT;
            break;
        case FS_SQL_BLOB:
            values[i] = v->len ? v->s : "";
            lengths[i] = (int)v->len;
            formats[i] = 1;
            types[i] = OID_BYTEA;
            break;
        default: break;
        }
    }
}

/* A bytea column's text form ("\x4a53...") as bytes, in the scratch buffer. */
static const char *decode_bytea(pg_impl *impl, const char *text, size_t len, size_t *out_len)
{
    if (len < 2 || text[0] != '\\' || text[1] != 'x') {
        *out_len = len;
        return text;
    }
    impl->scratch.len = 0;
    for (size_t i = 2; i + 1 < len; i += 2) {
        char pair[3] = {text[i], text[i + 1], '\0'};
        unsigned char byte = (unsigned char)strtoul(pair, NULL, 16);
        if (!fs_buf_append(&impl->scratch, &byte, 1))
            return NULL;
    }
    *out_len = impl->scratch.len;
    return impl->scratch.data ? impl->scratch.data : "";
}

/* Hand every row of a single-row-mode query to cb (until it stops: the rest is drained). */
static fhirsync_code stream_rows(fhirsync_store *s, fs_sql_row_fn cb, void *userdata,
                                 fhirsync_row_cb user_cb, void *user_data, int64_t *changes,
                                 const char *what, fhirsync_error *err)
{
    pg_impl *impl = impl_of(s);
    fhirsync_code rc = FHIRSYNC_OK;
    bool stopped = false;
    const char *fixed_values[MAX_COLUMNS], *fixed_names[MAX_COLUMNS];
    size_t fixed_lengths[MAX_COLUMNS];
    const char **values = fixed_values, **names = fixed_names;
    size_t *lengths = fixed_lengths;
    int allocated = 0;
    PGresult *res;
    while ((res = PQgetResult(impl->conn)) != NULL) {
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_SINGLE_TUPLE && !stopped && rc == FHIRSYNC_OK) {
            int ncols = PQnfields(res);
            if (!user_cb && ncols > MAX_COLUMNS)
                ncols = MAX_COLUMNS;
            if (ncols > MAX_COLUMNS && ncols > allocated) {
                if (values != fixed_values) {
                    fs_free(values);
                    fs_free(names);
                    fs_free(lengths);
                }
                values = fs_calloc((size_t)ncols, sizeof *values);
                names = fs_calloc((size_t)ncols, sizeof *names);
                lengths = fs_calloc((size_t)ncols, sizeof *lengths);
                allocated = ncols;
                if (!values || !names || !lengths) {
                    rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
                    stopped = true;
                }
            }
            for (int i = 0; rc == FHIRSYNC_OK && i < ncols; i++) {
                names[i] = PQfname(res, i);
                if (PQgetisnull(res, 0, i)) {
                    values[i] = NULL;
                    lengths[i] = 0;
                    continue;
                }
                values[i] = PQgetvalue(res, 0, i);
                lengths[i] = (size_t)PQgetlength(res, 0, i);
                if (PQftype(res, i) == OID_BYTEA) {
                    /* one bytea per row at most is decoded into the scratch buffer */
                    values[i] = decode_bytea(impl, values[i], lengths[i], &lengths[i]);
                    if (!values[i])
                        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
                }
            }
            if (rc == FHIRSYNC_OK) {
                int stop = user_cb ? user_cb((size_t)ncols, names, values, lengths, user_data)
                                   : cb(userdata, ncols, values, lengths, names);
                stopped = stop != 0;
            }
            /* after a stop the rest is read and dropped: a cancel request is not tied to a
             * statement and, arriving late on a busy machine, would hit the next one (the
             * COMMIT after an INSERT ... RETURNING, say) */
        } else if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
            if (changes)
                *changes = strtoll(PQcmdTuples(res), NULL, 10);
        } else if (st != PGRES_SINGLE_TUPLE && rc == FHIRSYNC_OK) {
            rc = result_error(s, res, what, err);
        }
        PQclear(res);
    }
    if (values != fixed_values) {
        fs_free(values);
        fs_free(names);
        fs_free(lengths);
    }
    return rc;
}

static fhirsync_code pg_exec(fhirsync_store *s, const char *sql, bool cache,
                             const fs_sql_value *params, int nparams, fs_sql_row_fn cb,
                             void *userdata, int64_t *changes, fhirsync_error *err)
{
    (void)cache; /* text is parsed each time: none of these statements is hot */
    pg_impl *impl = impl_of(s);
    if (nparams > MAX_PARAMS)
        return fs_err(err, FHIRSYNC_E_INTERNAL, "too many statement parameters");
    fhirsync_code rc = flush_staged(s, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    char *text = convert_placeholders(sql);
    if (!text)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    pg_params pp;
    fill_params(&pp, params, nparams);
    if (!cb) {
        PGresult *res =
            PQexecParams(impl->conn, text, nparams, pp.types, pp.values, pp.lengths, pp.formats, 0);
        if (res && result_ok(res)) {
            if (changes)
                *changes = strtoll(PQcmdTuples(res), NULL, 10);
        } else {
            rc = result_error(s, res, "running a statement", err);
        }
        PQclear(res);
    } else if (!PQsendQueryParams(impl->conn, text, nparams, pp.types, pp.values, pp.lengths,
                                  pp.formats, 0) ||
               !PQsetSingleRowMode(impl->conn)) {
        rc = result_error(s, NULL, "sending a query", err);
        PGresult *res;
        while ((res = PQgetResult(impl->conn)) != NULL)
            PQclear(res);
    } else {
        rc = stream_rows(s, cb, userdata, NULL, NULL, changes, "running a query", err);
    }
    fs_free(text);
    return rc;
}

static fhirsync_code pg_script(fhirsync_store *s, const char *sql, fhirsync_error *err)
{
    fhirsync_code rc = flush_staged(s, err);
    return rc == FHIRSYNC_OK ? command(s, sql, "changing the schema", err) : rc;
}

static fhirsync_code pg_begin(fhirsync_store *s, fhirsync_error *err)
{
    return command(s, "BEGIN", "beginning a transaction", err);
}

static void pg_rollback(fhirsync_store *s)
{
    pg_impl *impl = impl_of(s);
    (void)end_copy(s, true, NULL);
    reset_staging(impl);
    if (PQtransactionStatus(impl->conn) != PQTRANS_IDLE) {
        fhirsync_error ignored;
        (void)command(s, "ROLLBACK", "rolling back", &ignored);
    }
}

static fhirsync_code pg_commit(fhirsync_store *s, fhirsync_error *err)
{
    pg_impl *impl = impl_of(s);
    fhirsync_code rc = flush_staged(s, err);
    if (rc != FHIRSYNC_OK) {
        pg_rollback(s);
        return rc;
    }
    PGresult *res = PQexec(impl->conn, "COMMIT");
    if (!res || !result_ok(res))
        rc = result_error(s, res, "committing", err);
    else if (strcmp(PQcmdStatus(res), "COMMIT") != 0)
        /* COMMIT of a failed transaction answers ROLLBACK */
        rc = fs_err(err, FHIRSYNC_E_STORE,
                    "PostgreSQL rolled the transaction back after an error: nothing was stored");
    PQclear(res);
    if (rc != FHIRSYNC_OK)
        pg_rollback(s);
    return rc;
}

/* ---- resources ------------------------------------------------------------------------------- */

static fhirsync_code prepare_named(fhirsync_store *s, const char *name, const char *sql, int n,
                                   const Oid *types, fhirsync_error *err)
{
    PGresult *res = PQprepare(impl_of(s)->conn, name, sql, n, types);
    fhirsync_code rc = res && PQresultStatus(res) == PGRES_COMMAND_OK
                           ? FHIRSYNC_OK
                           : result_error(s, res, "preparing a statement", err);
    PQclear(res);
    return rc;
}

static fhirsync_code prepare_put(fhirsync_store *s, fs_store_type *t, fhirsync_error *err)
{
    char quoted[FS_STORE_TYPE_MAX + 3], name[32];
    fs_store_quote_type(t->name, quoted, sizeof quoted);
    snprintf(name, sizeof name, "fs_put_%u", t->slot);
    fs_buf sql;
    fs_buf_init(&sql);
    bool ok = fs_buf_printf(&sql,
                            "INSERT INTO %s (id, version_id, last_updated, last_updated_ms,"
                            " patient_id, resource, raw, loaded_at, run_id)"
                            " VALUES ($1, $2, $3, $4, $5, CASE WHEN $9 THEN $6::jsonb END, $6,"
                            " $7, $8)",
                            quoted) &&
              append_upsert_rule(&sql, quoted);
    if (!ok) {
        fs_buf_free(&sql);
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    static const Oid types[9] = {OID_TEXT, OID_TEXT, OID_TEXT, OID_INT8, OID_TEXT,
                                 OID_TEXT, OID_TEXT, OID_INT8, OID_BOOL};
    fhirsync_code rc = prepare_named(s, name, sql.data, 9, types, err);
    fs_buf_free(&sql);
    if (rc == FHIRSYNC_OK)
        t->put_stmt = t; /* marks "prepared"; the name comes from the slot */
    return rc;
}

static fhirsync_code pg_put(fhirsync_store *s, fs_store_type *t, const fs_resource_fields *f,
                            const char *line, size_t len, int64_t run_id,
                            fhirsync_put_outcome *outcome, fhirsync_error *err)
{
    if (s->in_batch && s->bulk) {
        /* views compute their rows from what the merge stored: rows of their types are staged */
        fhirsync_code rc = s->append && !fs_store_views_cover(s, t)
                               ? append(s, t, f, line, len, run_id, err)
                               : stage(s, t, f, line, len, run_id, err);
        if (rc == FHIRSYNC_OK && outcome)
            *outcome = FHIRSYNC_PUT_STAGED;
        return rc;
    }
    fhirsync_code rc = flush_staged(s, err);
    if (rc == FHIRSYNC_OK && !t->put_stmt)
        rc = prepare_put(s, t, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    char ms[24], run[24], name[32];
    snprintf(ms, sizeof ms, "%lld", (long long)f->last_updated_ms);
    snprintf(run, sizeof run, "%lld", (long long)run_id);
    snprintf(name, sizeof name, "fs_put_%u", t->slot);
    const char *values[9] = {f->id,
                             f->version_id,
                             f->last_updated,
                             f->has_last_updated_ms ? ms : NULL,
                             f->patient_id,
                             line,
                             fs_store_loaded_at(s),
                             run_id > 0 ? run : NULL,
                             f->has_nul_escape ? "f" : "t"};
    int lengths[9] = {(int)f->id_len,
                      (int)f->version_id_len,
                      (int)f->last_updated_len,
                      0,
                      (int)f->patient_id_len,
                      (int)len,
                      0,
                      0,
                      0};
    int formats[9] = {1, 1, 1, 0, 1, 1, 0, 0, 0};
    PGresult *res = PQexecPrepared(impl_of(s)->conn, name, 9, values, lengths, formats, 0);
    if (res && result_ok(res)) {
        if (outcome)
            *outcome =
                strcmp(PQcmdTuples(res), "0") == 0 ? FHIRSYNC_PUT_KEPT_NEWER : FHIRSYNC_PUT_STORED;
    } else {
        rc = result_error(s, res, "storing a resource", err);
    }
    PQclear(res);
    return rc;
}

static fhirsync_code pg_remove(fhirsync_store *s, fs_store_type *t, const char *id,
                               fs_sql_value deleted_ms, bool *removed, fhirsync_error *err)
{
    char quoted[FS_STORE_TYPE_MAX + 3], sql[256];
    fs_store_quote_type(t->name, quoted, sizeof quoted);
    snprintf(sql, sizeof sql,
             "DELETE FROM %s WHERE id = ?1 AND NOT coalesce(last_updated_ms > ?2, false)", quoted);
    fs_sql_value params[2] = {fs_sql_text(id), deleted_ms};
    int64_t changes = 0;
    fhirsync_code rc = pg_exec(s, sql, false, params, 2, NULL, NULL, &changes, err);
    *removed = changes > 0;
    return rc;
}

static void pg_forget_type(fhirsync_store *s, fs_store_type *t)
{
    pg_impl *impl = impl_of(s);
    if (t->put_stmt && impl && impl->conn && PQstatus(impl->conn) == CONNECTION_OK &&
        PQtransactionStatus(impl->conn) == PQTRANS_IDLE) {
        char sql[48];
        snprintf(sql, sizeof sql, "DEALLOCATE fs_put_%u", t->slot);
        PQclear(PQexec(impl->conn, sql));
    }
    t->put_stmt = NULL;
    t->delete_stmt = NULL;
}

/* ---- locks and clock ------------------------------------------------------------------------- */

/* A session-level advisory lock: PostgreSQL releases it when the session ends, so a dead worker
 * (or a lost connection) never leaves a stale lock. */
static fhirsync_code pg_lock_try(fhirsync_store *s, fs_store_lock *l, bool *acquired,
                                 fhirsync_error *err)
{
    *acquired = false;
    fhirsync_code rc = flush_staged(s, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    char text[24];
    snprintf(text, sizeof text, "%lld", (long long)(int64_t)l->key);
    const char *values[1] = {text};
    Oid types[1] = {OID_INT8};
    PGresult *res = PQexecParams(impl_of(s)->conn, "SELECT pg_try_advisory_lock($1)", 1, types,
                                 values, NULL, NULL, 0);
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        *acquired = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    else
        rc = result_error(s, res, "taking an advisory lock", err);
    PQclear(res);
    return rc;
}

static void pg_lock_release(fhirsync_store *s, fs_store_lock *l)
{
    pg_impl *impl = impl_of(s);
    if (!impl || !impl->conn || PQstatus(impl->conn) != CONNECTION_OK)
        return;
    char text[24];
    snprintf(text, sizeof text, "%lld", (long long)(int64_t)l->key);
    const char *values[1] = {text};
    Oid types[1] = {OID_INT8};
    PQclear(
        PQexecParams(impl->conn, "SELECT pg_advisory_unlock($1)", 1, types, values, NULL, NULL, 0));
}

/* Whether any session holds the advisory lock of `l`: asked of pg_locks, which takes no lock
 * (readable by every role, and in a read-only transaction). */
static fhirsync_code pg_lock_probe(fhirsync_store *s, const fs_store_lock *l, bool *held,
                                   fhirsync_error *err)
{
    *held = false;
    fhirsync_code rc = flush_staged(s, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    char classid[16], objid[16];
    snprintf(classid, sizeof classid, "%u", (unsigned)(l->key >> 32));
    snprintf(objid, sizeof objid, "%u", (unsigned)(l->key & 0xffffffffu));
    const char *values[2] = {classid, objid};
    PGresult *res = PQexecParams(impl_of(s)->conn,
                                 "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                                 " AND granted AND classid = $1::oid AND objid = $2::oid"
                                 " AND objsubid = 1",
                                 2, NULL, values, NULL, NULL, 0);
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        *held = strcmp(PQgetvalue(res, 0, 0), "0") != 0;
    else
        rc = result_error(s, res, "reading pg_locks", err);
    PQclear(res);
    return rc;
}

static void pg_lock_holder(fhirsync_store *s, const fs_store_lock *l, char *buf, size_t size)
{
    char classid[16], objid[16];
    snprintf(classid, sizeof classid, "%u", (unsigned)(l->key >> 32));
    snprintf(objid, sizeof objid, "%u", (unsigned)(l->key & 0xffffffffu));
    const char *values[2] = {classid, objid};
    buf[0] = '\0';
    PGresult *res = PQexecParams(impl_of(s)->conn,
                                 "SELECT l.pid, coalesce(host(a.client_addr), 'local'),"
                                 " coalesce(a.application_name, '')"
                                 " FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
                                 " WHERE l.locktype = 'advisory' AND l.granted"
                                 " AND l.classid = $1::oid AND l.objid = $2::oid"
                                 " AND l.objsubid = 1 LIMIT 1",
                                 2, NULL, values, NULL, NULL, 0);
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        snprintf(buf, size, "database session pid %s from %s%s%s", PQgetvalue(res, 0, 0),
                 PQgetvalue(res, 0, 1), *PQgetvalue(res, 0, 2) ? ", " : "", PQgetvalue(res, 0, 2));
    PQclear(res);
}

static fhirsync_code pg_now(fhirsync_store *s, int64_t *epoch, fhirsync_error *err)
{
    fhirsync_code rc = flush_staged(s, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    PGresult *res =
        PQexec(impl_of(s)->conn, "SELECT extract(epoch FROM clock_timestamp())::bigint");
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        *epoch = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    else
        rc = result_error(s, res, "reading the server's clock", err);
    PQclear(res);
    return rc;
}

/* ---- read-only user SQL ---------------------------------------------------------------------- */

static fhirsync_code pg_query(fhirsync_store *s, const char *sql, fhirsync_row_cb cb,
                              void *userdata, fhirsync_error *err)
{
    pg_impl *impl = impl_of(s);
    fhirsync_code rc = command(s, "BEGIN TRANSACTION READ ONLY", "beginning a query", err);
    if (rc != FHIRSYNC_OK)
        return rc;
    /* the extended protocol takes one statement only, which is what we want */
    if (!PQsendQueryParams(impl->conn, sql, 0, NULL, NULL, NULL, NULL, 0) ||
        !PQsetSingleRowMode(impl->conn)) {
        rc = result_error(s, NULL, "sending the query", err);
        PGresult *res;
        while ((res = PQgetResult(impl->conn)) != NULL)
            PQclear(res);
    } else {
        rc = stream_rows(s, NULL, NULL, cb, userdata, NULL, "running the query", err);
    }
    fhirsync_error ignored;
    (void)command(s, "ROLLBACK", "ending a query", &ignored);
    return rc;
}

/* ---- opening --------------------------------------------------------------------------------- */

static void log_notice(void *arg, const char *message)
{
    (void)arg;
    char line[600];
    snprintf(line, sizeof line, "%s", message);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n')
        line[--n] = '\0';
    fs_log(FHIRSYNC_LOG_DEBUG, "PostgreSQL: %s", line);
}

/* The location for display: postgresql://user@host:port/dbname, never the password. */
static char *display_location(PQconninfoOption *options)
{
    const char *user = "", *host = "", *port = "", *dbname = "";
    for (PQconninfoOption *o = options; o && o->keyword; o++) {
        if (!o->val)
            continue;
        if (strcmp(o->keyword, "user") == 0)
            user = o->val;
        else if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "dbname") == 0)
            dbname = o->val;
    }
    fs_buf b;
    fs_buf_init(&b);
    if (!fs_buf_printf(&b, "postgresql://%s%s%s%s%s/%s", user, *user ? "@" : "",
                       *host == '/' ? "[socket " : "", host, *host == '/' ? "]" : "", dbname) ||
        (*port && !fs_buf_printf(&b, " (port %s)", port))) {
        fs_buf_free(&b);
        return NULL;
    }
    return fs_buf_steal(&b);
}

static void pg_close(fhirsync_store *s)
{
    pg_impl *impl = impl_of(s);
    if (!impl)
        return;
    if (impl->conn)
        PQfinish(impl->conn);
    fs_free_secret(impl->password);
    fs_buf_free(&impl->copy);
    fs_buf_free(&impl->scratch);
    fs_free(impl->staged_ids);
    fs_free(impl->staged_types);
    fs_free(impl->stmt_params);
    fs_free(impl);
    s->impl = NULL;
}

static fhirsync_code pg_open(fhirsync_store *s, const char *location, fhirsync_error *err)
{
    pg_impl *impl = fs_calloc(1, sizeof *impl);
    if (!impl)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    impl->copy_table = -1;
    s->impl = impl;
    fs_buf_init(&impl->copy);
    fs_buf_init(&impl->scratch);
    /* libpq's parse errors may quote the string: say nothing of it beyond "invalid" */
    PQconninfoOption *options = PQconninfoParse(location, NULL);
    if (!options)
        return fs_err(err, FHIRSYNC_E_CONFIG,
                      "the PostgreSQL store location is not a valid connection URL or string");
    for (PQconninfoOption *o = options; o->keyword; o++)
        if (strcmp(o->keyword, "password") == 0 && o->val && *o->val &&
            !(impl->password = fs_strdup(o->val))) {
            PQconninfoFree(options);
            return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        }
    s->location = display_location(options);
    PQconninfoFree(options);
    if (!s->location)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");

    /* defaults first: what the location says wins */
    const char *keys[] = {"fallback_application_name", "connect_timeout", "client_encoding",
                          "dbname", NULL};
    const char *values[] = {"fhirsync", "15", "UTF8", location, NULL};
    impl->conn = PQconnectdbParams(keys, values, 1);
    if (!impl->conn)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory connecting to PostgreSQL");
    if (PQstatus(impl->conn) != CONNECTION_OK) {
        char message[600];
        scrub(impl, PQerrorMessage(impl->conn), message, sizeof message);
        return fs_err(err, FHIRSYNC_E_STORE, "cannot connect to the PostgreSQL store %s: %s",
                      s->location, message);
    }
    PQsetNoticeProcessor(impl->conn, log_notice, NULL);
    if (PQserverVersion(impl->conn) < 110000)
        return fs_err(err, FHIRSYNC_E_UNSUPPORTED,
                      "the PostgreSQL store needs server version 11 or newer (this is %d)",
                      PQserverVersion(impl->conn));
    fhirsync_code rc = command(s,
                               "SET client_min_messages = warning;"
                               "SET temp_buffers = '32MB'",
                               "setting up the session", err);
    if (rc != FHIRSYNC_OK)
        return rc;
    /* rows over 2 KB are compressed: lz4 (PostgreSQL 14+, when built with it) costs a fraction
     * of the default pglz; without it the default stays */
    if (PQserverVersion(impl->conn) >= 140000) {
        PGresult *res = PQexec(impl->conn, "SET default_toast_compression = 'lz4'");
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            fs_log(FHIRSYNC_LOG_DEBUG, "PostgreSQL: lz4 compression unavailable, using pglz");
        PQclear(res);
    }
    if (s->flags & FHIRSYNC_STORE_READONLY)
        return command(s, "SET default_transaction_read_only = on", "setting up the session", err);
    /* the bulk path's staging table: private to the session, gone with it */
    return command(s,
                   "CREATE TEMP TABLE IF NOT EXISTS fhirsync_staging ("
                   " type text, id text COLLATE \"C\", version_id text, last_updated text,"
                   " last_updated_ms bigint, patient_id text, raw text, jsonb_ok boolean,"
                   " run_id bigint);"
                   /* the ids a merge stored, for the views' rows (fs_store_views_merged) */
                   "CREATE TEMP TABLE IF NOT EXISTS fhirsync_merged ("
                   " type text, id text COLLATE \"C\")",
                   "creating the staging tables", err);
}

/* ---- statements built at run time ----------------------------------------------------------- */

typedef struct pg_stmt {
    char name[32];
} pg_stmt;

static fhirsync_code pg_stmt_prepare(fhirsync_store *s, const char *sql, void **stmt,
                                     fhirsync_error *err)
{
    pg_impl *impl = impl_of(s);
    *stmt = NULL;
    fhirsync_code rc = flush_staged(s, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    pg_stmt *st = fs_calloc(1, sizeof *st);
    char *text = convert_placeholders(sql);
    if (!st || !text) {
        fs_free(st);
        fs_free(text);
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    /* unique in the session: a statement freed inside a transaction may outlive its handle */
    snprintf(st->name, sizeof st->name, "fs_stmt_%llu", ++impl->stmt_serial);
    rc = prepare_named(s, st->name, text, 0, NULL, err);
    fs_free(text);
    if (rc != FHIRSYNC_OK) {
        fs_free(st);
        return rc;
    }
    *stmt = st;
    return FHIRSYNC_OK;
}

static fhirsync_code pg_stmt_run(fhirsync_store *s, void *stmt, const fs_sql_value *params,
                                 int nparams, int64_t *changes, fhirsync_error *err)
{
    pg_impl *impl = impl_of(s);
    if (nparams > FS_STORE_STMT_PARAMS)
        return fs_err(err, FHIRSYNC_E_INTERNAL, "too many statement parameters");
    fhirsync_code rc = flush_staged(s, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (!impl->stmt_params && !(impl->stmt_params = fs_calloc(1, sizeof *impl->stmt_params)))
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    pg_stmt_params *pp = impl->stmt_params;
    fill_params(pp, params, nparams);
    PGresult *res = PQexecPrepared(impl->conn, ((pg_stmt *)stmt)->name, nparams, pp->values,
                                   pp->lengths, pp->formats, 0);
    if (res && result_ok(res)) {
        if (changes)
            *changes = strtoll(PQcmdTuples(res), NULL, 10);
    } else {
        rc = result_error(s, res, "running a statement", err);
    }
    PQclear(res);
    return rc;
}

static void pg_stmt_free(fhirsync_store *s, void *stmt)
{
    pg_impl *impl = impl_of(s);
    pg_stmt *st = stmt;
    if (!st)
        return;
    /* DEALLOCATE is refused in a failed transaction: then the name stays (unique, harmless) */
    if (impl && impl->conn && PQstatus(impl->conn) == CONNECTION_OK &&
        PQtransactionStatus(impl->conn) != PQTRANS_INERROR) {
        char sql[48];
        snprintf(sql, sizeof sql, "DEALLOCATE %s", st->name);
        PQclear(PQexec(impl->conn, sql));
    }
    fs_free(st);
}

const fs_store_ops fs_store_postgresql_ops = {
    .name = "postgresql",
    .open = pg_open,
    .close = pg_close,
    .exec = pg_exec,
    .script = pg_script,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .put = pg_put,
    .remove = pg_remove,
    .forget_type = pg_forget_type,
    .lock_try = pg_lock_try,
    .lock_release = pg_lock_release,
    .lock_probe = pg_lock_probe,
    .lock_holder = pg_lock_holder,
    .now = pg_now,
    .query = pg_query,
    .stmt_prepare = pg_stmt_prepare,
    .stmt_run = pg_stmt_run,
    .stmt_free = pg_stmt_free,
};
