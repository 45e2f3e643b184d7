/* store/sqlite.c: the SQLite engine of the store (the default: one file, nothing to install).
 *
 * Settings and why:
 *   - The file is created 0600 by us before SQLite opens it, and SQLite gives its -wal and -shm
 *     files the database file's mode; the umask is also 077 while opening (belt and braces: it is
 *     process-wide, but only ever tightens what another thread creates in that instant).
 *   - journal_mode=WAL: readers (fhirsync query) never block the loader and the loader never
 *     blocks them; one writer at a time, others wait up to the busy timeout.
 *   - synchronous=NORMAL: in WAL mode a commit is then not fsync'ed at once, but the database can
 *     never be corrupted by a crash; a power loss (not a process crash: the OS has the data) may
 *     lose the last commits. The sync needs durability at commit boundaries against kill -9, which
 *     this gives, and repeats whatever a power loss undid: the watermark commits with the data, so
 *     it can never be ahead of it. FULL would cost an fsync per batch for no gain in that model.
 *   - 16 KiB pages: resources average 1.2 KB and reach 16 KB; bigger pages keep most rows in
 *     one page and divide the per-page costs (system calls, WAL frame headers) by four.
 *   - A 32 MiB page cache (the id and patient indexes are where a load spends its time) and WAL
 *     checkpoints every 4096 pages (64 MiB) bound memory (a 1-million-resource load peaks near
 *     40 MB) and the -wal file.
 *
 * Every statement the store runs often is prepared once and kept: the upsert and delete of each
 * resource type in the type's cache entry, the shared statements by the address of their text. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store/store_private.h"

#define CACHE_SLOTS 48
#define MAX_COLUMNS 24 /* of the store's own statements (status.c reads 16) */
#define BUSY_TIMEOUT_MS 10000

typedef struct cached_stmt {
    const char *sql;
    sqlite3_stmt *stmt;
} cached_stmt;

typedef struct sqlite_impl {
    sqlite3 *db;
    char *path; /* the database file, for lock side files; NULL for :memory: */
    cached_stmt cache[CACHE_SLOTS];
    size_t cached;
} sqlite_impl;

static sqlite_impl *impl_of(fhirsync_store *s)
{
    return s->impl;
}

/* Map an SQLite failure to a fhirsync error with the engine's message. */
static fhirsync_code db_error(fhirsync_store *s, int code, const char *what, fhirsync_error *err)
{
    sqlite3 *db = impl_of(s)->db;
    int primary = code & 0xff;
    if (primary == SQLITE_NOMEM)
        return fs_err(err, FHIRSYNC_E_NOMEM, "SQLite ran out of memory (%s)", what);
    if (primary == SQLITE_BUSY)
        return fs_err(err, FHIRSYNC_E_STORE,
                      "SQLite: %s is busy: another process kept it locked for more than %d s "
                      "(%s)",
                      s->location, BUSY_TIMEOUT_MS / 1000, what);
    return fs_err(err, FHIRSYNC_E_STORE, "SQLite: %s (%s, %s)",
                  db ? sqlite3_errmsg(db) : sqlite3_errstr(code), what, s->location);
}

static fhirsync_code prepare(fhirsync_store *s, const char *sql, bool persistent,
                             sqlite3_stmt **out, fhirsync_error *err)
{
    int rc = sqlite3_prepare_v3(impl_of(s)->db, sql, -1, persistent ? SQLITE_PREPARE_PERSISTENT : 0,
                                out, NULL);
    if (rc != SQLITE_OK) {
        *out = NULL;
        return db_error(s, rc, "preparing a statement", err);
    }
    return FHIRSYNC_OK;
}

static fhirsync_code bind(fhirsync_store *s, sqlite3_stmt *stmt, const fs_sql_value *params, int n,
                          fhirsync_error *err)
{
    for (int i = 0; i < n; i++) {
        const fs_sql_value *v = &params[i];
        int rc;
        switch (v->kind) {
        case FS_SQL_INT: rc = sqlite3_bind_int64(stmt, i + 1, v->i); break;
        case FS_SQL_TEXT: rc = sqlite3_bind_text(stmt, i + 1, v->s, -1, SQLITE_STATIC); break;
        case FS_SQL_TEXTN:
            rc = sqlite3_bind_text(stmt, i + 1, v->s, (int)v->len, SQLITE_STATIC);
            break;
        case FS_SQL_BLOB:
            rc = sqlite3_bind_blob(stmt, i + 1, v->len ? v->s : "", (int)v->len, SQLITE_STATIC);
            break;
        default: rc = sqlite3_bind_null(stmt, i + 1); break;
        }
        if (rc != SQLITE_OK)
            return db_error(s, rc, "binding a parameter", err);
    }
    return FHIRSYNC_OK;
}

/* The value of column i as bytes (text, or a blob's bytes); NULL for SQL NULL. */
static const char *column_value(sqlite3_stmt *stmt, int i, size_t *len)
{
    int type = sqlite3_column_type(stmt, i);
    const char *v;
    if (type == SQLITE_NULL) {
        *len = 0;
        return NULL;
    }
    if (type == SQLITE_BLOB)
        v = sqlite3_column_blob(stmt, i);
    else
        v = (const char *)sqlite3_column_text(stmt, i);
    *len = (size_t)sqlite3_column_bytes(stmt, i);
    return v ? v : "";
}

/* Step to the end, handing rows to cb. */
static fhirsync_code run(fhirsync_store *s, sqlite3_stmt *stmt, fs_sql_row_fn cb, void *userdata,
                         int64_t *changes, fhirsync_error *err)
{
    const char *values[MAX_COLUMNS], *names[MAX_COLUMNS];
    size_t lengths[MAX_COLUMNS];
    fhirsync_code result = FHIRSYNC_OK;
    for (;;) {
        int rc = sqlite3_step(stmt);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            result = db_error(s, rc, "running a statement", err);
            break;
        }
        if (!cb)
            continue;
        int ncols = sqlite3_column_count(stmt);
        if (ncols > MAX_COLUMNS)
            ncols = MAX_COLUMNS;
        for (int i = 0; i < ncols; i++) {
            values[i] = column_value(stmt, i, &lengths[i]);
            names[i] = sqlite3_column_name(stmt, i);
        }
        if (cb(userdata, ncols, values, lengths, names) != 0)
            break;
    }
    if (result == FHIRSYNC_OK && changes)
        *changes = sqlite3_changes64(impl_of(s)->db);
    sqlite3_reset(stmt);
    return result;
}

static fhirsync_code sq_exec(fhirsync_store *s, const char *sql, bool cache,
                             const fs_sql_value *params, int nparams, fs_sql_row_fn cb,
                             void *userdata, int64_t *changes, fhirsync_error *err)
{
    sqlite_impl *impl = impl_of(s);
    sqlite3_stmt *stmt = NULL;
    bool kept = false;
    if (cache) {
        for (size_t i = 0; i < impl->cached; i++) {
            if (impl->cache[i].sql == sql) {
                stmt = impl->cache[i].stmt;
                kept = true;
                break;
            }
        }
    }
    fhirsync_code rc = FHIRSYNC_OK;
    if (!stmt) {
        bool keep = cache && impl->cached < CACHE_SLOTS;
        rc = prepare(s, sql, keep, &stmt, err);
        if (rc != FHIRSYNC_OK)
            return rc;
        if (keep) {
            impl->cache[impl->cached].sql = sql;
            impl->cache[impl->cached].stmt = stmt;
            impl->cached++;
            kept = true;
        }
    }
    rc = bind(s, stmt, params, nparams, err);
    if (rc == FHIRSYNC_OK)
        rc = run(s, stmt, cb, userdata, changes, err);
    sqlite3_clear_bindings(stmt);
    if (!kept)
        sqlite3_finalize(stmt);
    return rc;
}

static fhirsync_code sq_script(fhirsync_store *s, const char *sql, fhirsync_error *err)
{
    int rc = sqlite3_exec(impl_of(s)->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? FHIRSYNC_OK : db_error(s, rc, "changing the schema", err);
}

/* The session settings of a read-write handle (see the top of the file); page_size only
 * applies to a new database. Shared with the benchmark's bare loop. */
const char fs_store_sqlite_pragmas[] = "PRAGMA page_size = 16384;"
                                       "PRAGMA journal_mode = WAL;"
                                       "PRAGMA synchronous = NORMAL;"
                                       "PRAGMA cache_size = -32768;"
                                       "PRAGMA wal_autocheckpoint = 4096;"
                                       "PRAGMA journal_size_limit = 67108864;"
                                       "PRAGMA temp_store = MEMORY";

static const char sql_begin[] = "BEGIN IMMEDIATE";
static const char sql_commit[] = "COMMIT";
static const char sql_rollback[] = "ROLLBACK";

static fhirsync_code sq_begin(fhirsync_store *s, fhirsync_error *err)
{
    /* IMMEDIATE: take the write lock now, so that a batch never fails half-way on a lock
     * upgrade; waiting for it is bounded by the busy timeout */
    return sq_exec(s, sql_begin, true, NULL, 0, NULL, NULL, NULL, err);
}

static void sq_rollback(fhirsync_store *s)
{
    if (!sqlite3_get_autocommit(impl_of(s)->db)) {
        fhirsync_error ignored;
        (void)sq_exec(s, sql_rollback, true, NULL, 0, NULL, NULL, NULL, &ignored);
    }
}

static fhirsync_code sq_commit(fhirsync_store *s, fhirsync_error *err)
{
    if (sqlite3_get_autocommit(impl_of(s)->db))
        return fs_err(err, FHIRSYNC_E_STORE,
                      "SQLite rolled the transaction back after an error: nothing was stored");
    fhirsync_code rc = sq_exec(s, sql_commit, true, NULL, 0, NULL, NULL, NULL, err);
    if (rc != FHIRSYNC_OK)
        sq_rollback(s);
    return rc;
}

/* ---- resources ------------------------------------------------------------------------------- */

/* A decimal versionId as a number, for the "older never overwrites newer" rule. */
static bool append_version_number(fs_buf *b, const char *column)
{
    return fs_buf_printf(b,
                         "(CASE WHEN %s GLOB '[0-9]*' AND %s NOT GLOB '*[^0-9]*'"
                         " AND length(%s) <= 18 THEN CAST(%s AS INTEGER) END)",
                         column, column, column, column);
}

/* The upsert of a type: see fhirsync_store_put for the rule in the WHERE clause. */
static fhirsync_code prepare_put(fhirsync_store *s, fs_store_type *t, fhirsync_error *err)
{
    char quoted[FS_STORE_TYPE_MAX + 3], stored_version[FS_STORE_TYPE_MAX + 16];
    fs_store_quote_type(t->name, quoted, sizeof quoted);
    snprintf(stored_version, sizeof stored_version, "%s.version_id", quoted);
    fs_buf sql;
    fs_buf_init(&sql);
    bool ok =
        fs_buf_printf(&sql,
                      "INSERT INTO %s (id, version_id, last_updated, last_updated_ms, patient_id,"
                      " raw, loaded_at, run_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                      " ON CONFLICT (id) DO UPDATE SET version_id = excluded.version_id,"
                      " last_updated = excluded.last_updated,"
                      " last_updated_ms = excluded.last_updated_ms,"
                      " patient_id = excluded.patient_id, raw = excluded.raw,"
                      " loaded_at = excluded.loaded_at, run_id = excluded.run_id"
                      " WHERE NOT (coalesce(excluded.last_updated_ms < %s.last_updated_ms, false)"
                      " OR (coalesce(excluded.last_updated_ms = %s.last_updated_ms, true)"
                      " AND coalesce(",
                      quoted, quoted, quoted) &&
        append_version_number(&sql, "excluded.version_id") && fs_buf_append_str(&sql, " < ") &&
        append_version_number(&sql, stored_version) && fs_buf_append_str(&sql, ", false)))");
    if (!ok) {
        fs_buf_free(&sql);
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    sqlite3_stmt *stmt;
    fhirsync_code rc = prepare(s, sql.data, true, &stmt, err);
    fs_buf_free(&sql);
    if (rc == FHIRSYNC_OK)
        t->put_stmt = stmt;
    return rc;
}

static fhirsync_code sq_put(fhirsync_store *s, fs_store_type *t, const fs_resource_fields *f,
                            const char *line, size_t len, int64_t run_id,
                            fhirsync_put_outcome *outcome, fhirsync_error *err)
{
    if (!t->put_stmt) {
        fhirsync_code rc = prepare_put(s, t, err);
        if (rc != FHIRSYNC_OK)
            return rc;
    }
    sqlite3_stmt *stmt = t->put_stmt;
    sqlite3_bind_text(stmt, 1, f->id, (int)f->id_len, SQLITE_STATIC);
    if (f->version_id)
        sqlite3_bind_text(stmt, 2, f->version_id, (int)f->version_id_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(stmt, 2);
    if (f->last_updated)
        sqlite3_bind_text(stmt, 3, f->last_updated, (int)f->last_updated_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(stmt, 3);
    if (f->has_last_updated_ms)
        sqlite3_bind_int64(stmt, 4, f->last_updated_ms);
    else
        sqlite3_bind_null(stmt, 4);
    if (f->patient_id)
        sqlite3_bind_text(stmt, 5, f->patient_id, (int)f->patient_id_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(stmt, 5);
    int brc = sqlite3_bind_text(stmt, 6, line, (int)len, SQLITE_STATIC);
    if (brc != SQLITE_OK) {
        sqlite3_clear_bindings(stmt);
        return db_error(s, brc, "binding a resource", err);
    }
    sqlite3_bind_text(stmt, 7, fs_store_loaded_at(s), -1, SQLITE_STATIC);
    if (run_id > 0)
        sqlite3_bind_int64(stmt, 8, run_id);
    else
        sqlite3_bind_null(stmt, 8);
    /* whether the upsert inserted: only an insert sets the last rowid (the table's rowids start
     * at 1; the DO UPDATE path leaves it as it was) */
    sqlite3 *db = impl_of(s)->db;
    sqlite3_set_last_insert_rowid(db, 0);
    int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    if (rc != SQLITE_DONE)
        return db_error(s, rc, "storing a resource", err);
    s->put_inserted = sqlite3_last_insert_rowid(db) != 0;
    if (outcome)
        *outcome = sqlite3_changes(db) ? FHIRSYNC_PUT_STORED : FHIRSYNC_PUT_KEPT_NEWER;
    return FHIRSYNC_OK;
}

static fhirsync_code sq_remove(fhirsync_store *s, fs_store_type *t, const char *id,
                               fs_sql_value deleted_ms, bool *removed, fhirsync_error *err)
{
    if (!t->delete_stmt) {
        char quoted[FS_STORE_TYPE_MAX + 3], sql[256];
        fs_store_quote_type(t->name, quoted, sizeof quoted);
        snprintf(sql, sizeof sql,
                 "DELETE FROM %s WHERE id = ?1 AND NOT coalesce(last_updated_ms > ?2, false)",
                 quoted);
        sqlite3_stmt *stmt;
        fhirsync_code rc = prepare(s, sql, true, &stmt, err);
        if (rc != FHIRSYNC_OK)
            return rc;
        t->delete_stmt = stmt;
    }
    fs_sql_value params[2] = {fs_sql_text(id), deleted_ms};
    int64_t changes = 0;
    fhirsync_code rc = bind(s, t->delete_stmt, params, 2, err);
    if (rc == FHIRSYNC_OK)
        rc = run(s, t->delete_stmt, NULL, NULL, &changes, err);
    sqlite3_clear_bindings(t->delete_stmt);
    *removed = changes > 0;
    return rc;
}

static void sq_forget_type(fhirsync_store *s, fs_store_type *t)
{
    (void)s;
    sqlite3_finalize(t->put_stmt);
    sqlite3_finalize(t->delete_stmt);
    t->put_stmt = t->delete_stmt = NULL;
}

/* ---- locks and clock ------------------------------------------------------------------------- */

/* An flock() on a side file "<db>.lock.<hash>", one per endpoint: the kernel releases it when
 * the holder exits or dies, so a crashed sync never leaves a stale lock, and it excludes other
 * handles of the same process too (each open() is its own open file description). The side
 * files stay: removing a lock file races with a process about to lock it. A row in the database
 * could not do this alone: a dead process cannot delete its row, and guessing staleness from a
 * heartbeat would let two live syncs run when one is slow. (SQLite needs a local file system
 * for WAL anyway, where flock() is reliable.) */
static fhirsync_code sq_lock_try(fhirsync_store *s, fs_store_lock *l, bool *acquired,
                                 fhirsync_error *err)
{
    sqlite_impl *impl = impl_of(s);
    *acquired = false;
    if (!impl->path) {
        *acquired = true; /* an in-memory database is private to its handle */
        return FHIRSYNC_OK;
    }
    fs_buf path;
    fs_buf_init(&path);
    if (!fs_buf_printf(&path, "%s.lock.%016llx", impl->path, (unsigned long long)l->key)) {
        fs_buf_free(&path);
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    int fd = open(path.data, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        fhirsync_code rc =
            fs_err(err, FHIRSYNC_E_IO, "cannot open the lock file %s: %s", path.data, strerror(e));
        fs_buf_free(&path);
        return rc;
    }
    fhirsync_code rc = FHIRSYNC_OK;
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
        l->fd = fd;
        *acquired = true;
    } else {
        int e = errno;
        close(fd);
        if (e != EWOULDBLOCK && e != EINTR)
            rc = fs_err(err, FHIRSYNC_E_IO, "cannot lock %s: %s", path.data, strerror(e));
    }
    fs_buf_free(&path);
    return rc;
}

static void sq_lock_release(fhirsync_store *s, fs_store_lock *l)
{
    (void)s;
    if (l->fd >= 0) {
        flock(l->fd, LOCK_UN);
        close(l->fd);
        l->fd = -1;
    }
}

/* Whether the lock file of `l` is flock()ed by anyone: looked up in /proc/locks by device and
 * inode, which takes no lock (a probe that took the lock, even a shared one for an instant, could
 * make a sync starting at that instant fail as locked). Without /proc/locks, a shared lock tried
 * and released at once. No file: never locked. */
static fhirsync_code sq_lock_probe(fhirsync_store *s, const fs_store_lock *l, bool *held,
                                   fhirsync_error *err)
{
    sqlite_impl *impl = impl_of(s);
    *held = false;
    if (!impl->path)
        return FHIRSYNC_OK; /* in memory: private to its handle */
    fs_buf path;
    fs_buf_init(&path);
    if (!fs_buf_printf(&path, "%s.lock.%016llx", impl->path, (unsigned long long)l->key)) {
        fs_buf_free(&path);
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    fhirsync_code rc = FHIRSYNC_OK;
    struct stat st;
    FILE *locks = NULL;
    if (stat(path.data, &st) != 0) {
        if (errno != ENOENT)
            rc = fs_err(err, FHIRSYNC_E_IO, "cannot read the lock file %s: %s", path.data,
                        strerror(errno));
    } else if ((locks = fopen("/proc/locks", "re")) != NULL) {
        char want[64], line[256];
        snprintf(want, sizeof want, " %02x:%02x:%llu ", major(st.st_dev), minor(st.st_dev),
                 (unsigned long long)st.st_ino);
        while (!*held && fgets(line, sizeof line, locks))
            *held = strstr(line, " FLOCK ") && strstr(line, want);
        fclose(locks);
    } else {
        int fd = open(path.data, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            if (flock(fd, LOCK_SH | LOCK_NB) == 0)
                flock(fd, LOCK_UN);
            else
                *held = errno == EWOULDBLOCK;
            close(fd);
        }
    }
    fs_buf_free(&path);
    return rc;
}

static void sq_lock_holder(fhirsync_store *s, const fs_store_lock *l, char *buf, size_t size)
{
    (void)s;
    (void)l;
    if (size)
        buf[0] = '\0';
}

static fhirsync_code sq_now(fhirsync_store *s, int64_t *epoch, fhirsync_error *err)
{
    (void)s;
    (void)err;
    *epoch = fs_now(); /* one machine: its clock (tests move it with fs_time_set_offset) */
    return FHIRSYNC_OK;
}

/* ---- read-only user SQL ---------------------------------------------------------------------- */

/* Refuse what stmt_readonly lets through but a query must not do: attaching other files (which
 * would create them) and transaction control (which would leave a transaction open). */
static int query_authorizer(void *userdata, int action, const char *a, const char *b, const char *c,
                            const char *d)
{
    (void)userdata;
    (void)a;
    (void)b;
    (void)c;
    (void)d;
    if (action == SQLITE_ATTACH || action == SQLITE_DETACH || action == SQLITE_TRANSACTION ||
        action == SQLITE_SAVEPOINT)
        return SQLITE_DENY;
    return SQLITE_OK;
}

static fhirsync_code sq_query(fhirsync_store *s, const char *sql, fhirsync_row_cb cb,
                              void *userdata, fhirsync_error *err)
{
    sqlite3 *db = impl_of(s)->db;
    sqlite3_stmt *stmt = NULL;
    const char *tail = NULL;
    const char **values = NULL, **names = NULL;
    size_t *lengths = NULL;
    fhirsync_code result = FHIRSYNC_OK;
    sqlite3_set_authorizer(db, query_authorizer, NULL);
    int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, &tail);
    sqlite3_set_authorizer(db, NULL, NULL);
    if (rc != SQLITE_OK) {
        result = fs_err(err, (rc & 0xff) == SQLITE_NOMEM ? FHIRSYNC_E_NOMEM : FHIRSYNC_E_STORE,
                        "SQLite: %s", sqlite3_errmsg(db));
        goto out;
    }
    if (!stmt) {
        result = fs_err(err, FHIRSYNC_E_ARG, "no SQL statement");
        goto out;
    }
    for (const char *p = tail; p && *p; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != ';') {
            result = fs_err(err, FHIRSYNC_E_ARG, "one SQL statement at a time");
            goto out;
        }
    }
    if (!sqlite3_stmt_readonly(stmt)) {
        result = fs_err(err, FHIRSYNC_E_ARG, "only read-only statements (SELECT) are allowed");
        goto out;
    }
    int ncols = sqlite3_column_count(stmt);
    size_t slots = ncols > 0 ? (size_t)ncols : 1;
    values = fs_calloc(slots, sizeof *values);
    names = fs_calloc(slots, sizeof *names);
    lengths = fs_calloc(slots, sizeof *lengths);
    if (!values || !names || !lengths) {
        result = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < ncols; i++)
        names[i] = sqlite3_column_name(stmt, i);
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        for (int i = 0; i < ncols; i++)
            values[i] = column_value(stmt, i, &lengths[i]);
        if (cb((size_t)ncols, names, values, lengths, userdata) != 0)
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        result = fs_err(err, (rc & 0xff) == SQLITE_NOMEM ? FHIRSYNC_E_NOMEM : FHIRSYNC_E_STORE,
                        "SQLite: %s", sqlite3_errmsg(db));
out:
    sqlite3_finalize(stmt);
    fs_free(values);
    fs_free(names);
    fs_free(lengths);
    return result;
}

/* ---- opening --------------------------------------------------------------------------------- */

/* Create the file 0600 (or tighten an existing one) before SQLite opens it. */
static fhirsync_code create_private_file(const char *path, fhirsync_error *err)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        return fs_err(err, FHIRSYNC_E_IO, "cannot create the store %s: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077) &&
        st.st_uid == geteuid()) {
        if (fchmod(fd, 0600) == 0)
            fs_log(FHIRSYNC_LOG_WARN,
                   "store %s was readable by others (mode %03o): tightened to 0600 (it holds "
                   "patient data)",
                   path, (unsigned)(st.st_mode & 0777));
    }
    close(fd);
    return FHIRSYNC_OK;
}

static void sq_close(fhirsync_store *s)
{
    sqlite_impl *impl = impl_of(s);
    if (!impl)
        return;
    for (size_t i = 0; i < impl->cached; i++)
        sqlite3_finalize(impl->cache[i].stmt);
    if (impl->db && sqlite3_close(impl->db) != SQLITE_OK)
        fs_log(FHIRSYNC_LOG_WARN, "store %s: SQLite did not close cleanly", s->location);
    fs_free(impl->path);
    fs_free(impl);
    s->impl = NULL;
}

static fhirsync_code sq_open(fhirsync_store *s, const char *location, fhirsync_error *err)
{
    bool readonly = (s->flags & FHIRSYNC_STORE_READONLY) != 0;
    bool memory = strcmp(location, ":memory:") == 0;
    bool uri = strncmp(location, "file:", 5) == 0;
    if (sqlite3_libversion_number() < 3038000)
        return fs_err(err, FHIRSYNC_E_UNSUPPORTED,
                      "the store needs SQLite 3.38 or newer (JSON operators); this is %s",
                      sqlite3_libversion());
    if (!(s->location = fs_strdup(location)))
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    sqlite_impl *impl = fs_calloc(1, sizeof *impl);
    if (!impl)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    s->impl = impl;
    if (!memory && !uri) {
        if (readonly) {
            if (access(location, F_OK) != 0)
                return fs_err(err, FHIRSYNC_E_STORE, "there is no store at %s", location);
        } else {
            fhirsync_code rc = create_private_file(location, err);
            if (rc != FHIRSYNC_OK)
                return rc;
        }
    }
    int flags = (readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
                SQLITE_OPEN_NOMUTEX | (uri ? SQLITE_OPEN_URI : 0);
    mode_t old_mask = umask(077);
    int rc = sqlite3_open_v2(location, &impl->db, flags, NULL);
    fhirsync_code result = FHIRSYNC_OK;
    if (rc != SQLITE_OK) {
        result = (rc & 0xff) == SQLITE_NOMEM
                     ? fs_err(err, FHIRSYNC_E_NOMEM, "out of memory opening %s", location)
                     : fs_err(err, readonly ? FHIRSYNC_E_STORE : FHIRSYNC_E_IO,
                              "cannot open the store %s: %s", location,
                              impl->db ? sqlite3_errmsg(impl->db) : sqlite3_errstr(rc));
        goto out;
    }
    sqlite3_extended_result_codes(impl->db, 1);
    sqlite3_busy_timeout(impl->db, BUSY_TIMEOUT_MS);
    if (readonly) {
        result = sq_script(s, "PRAGMA query_only = ON", err);
    } else {
        /* Switching a new database to WAL needs an exclusive lock, and SQLite answers BUSY at
         * once there without calling the busy handler (it would risk a deadlock). The pragmas
         * are idempotent: retry them until the busy timeout, so that several processes opening
         * a new store together all succeed. */
        int64_t deadline = fs_monotonic_ms() + BUSY_TIMEOUT_MS;
        int xrc;
        for (;;) {
            xrc = sqlite3_exec(impl->db, fs_store_sqlite_pragmas, NULL, NULL, NULL);
            if (xrc == SQLITE_OK || (xrc & 0xff) != SQLITE_BUSY || fs_monotonic_ms() >= deadline)
                break;
            fs_sleep_ms(20);
        }
        result = xrc == SQLITE_OK ? FHIRSYNC_OK : db_error(s, xrc, "changing the schema", err);
    }
    if (result != FHIRSYNC_OK)
        goto out;
    const char *file = sqlite3_db_filename(impl->db, "main");
    if (file && *file && !(impl->path = fs_strdup(file)))
        result = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
out:
    umask(old_mask);
    return result;
}

/* ---- statements built at run time ----------------------------------------------------------- */

static fhirsync_code sq_stmt_prepare(fhirsync_store *s, const char *sql, void **stmt,
                                     fhirsync_error *err)
{
    sqlite3_stmt *st = NULL;
    fhirsync_code rc = prepare(s, sql, true, &st, err);
    *stmt = st;
    return rc;
}

static fhirsync_code sq_stmt_run(fhirsync_store *s, void *stmt, const fs_sql_value *params,
                                 int nparams, int64_t *changes, fhirsync_error *err)
{
    fhirsync_code rc = bind(s, stmt, params, nparams, err);
    if (rc == FHIRSYNC_OK)
        rc = run(s, stmt, NULL, NULL, changes, err);
    sqlite3_clear_bindings(stmt);
    return rc;
}

static void sq_stmt_free(fhirsync_store *s, void *stmt)
{
    (void)s;
    sqlite3_finalize(stmt);
}

const fs_store_ops fs_store_sqlite_ops = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .exec = sq_exec,
    .script = sq_script,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .put = sq_put,
    .remove = sq_remove,
    .forget_type = sq_forget_type,
    .lock_try = sq_lock_try,
    .lock_release = sq_lock_release,
    .lock_probe = sq_lock_probe,
    .lock_holder = sq_lock_holder,
    .now = sq_now,
    .query = sq_query,
    .stmt_prepare = sq_stmt_prepare,
    .stmt_run = sq_stmt_run,
    .stmt_free = sq_stmt_free,
};
