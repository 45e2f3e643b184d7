/* store/store_private.h: the store's handle and its engines. sqlite.c and postgresql.c implement
 * the small vtable below: run one parameterised statement, transactions, the hot put path,
 * OS/session locks, the clock used for leases, and read-only user SQL. Everything that is the same
 * on both engines is written once above it, in the store's API files (store.c opening and closing,
 * batch.c, types.c, resources.c, runs.c, endpoints.c, locks.c, queue.c, reconcile.c, report.c;
 * what they share is in shared_private.h). schema.c has the DDL of both engines and the migrations.
 *
 * SQL shared between the engines is written with ?1, ?2... placeholders (PostgreSQL's engine turns
 * them into $1, $2...), and must not use the '?' character otherwise (no jsonb ? operator).
 * Internal: prefix fs_store_ / fs_schema_; nothing here is exported. */
#ifndef FS_STORE_PRIVATE_H
#define FS_STORE_PRIVATE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/core.h"
#include "fhirsync/store.h"
#include "fhirsync/view.h"
#include "store/fields.h"

/* ---- statement parameters -------------------------------------------------------------------- */

typedef enum fs_sql_kind {
    FS_SQL_NULL = 0,
    FS_SQL_INT,
    FS_SQL_TEXT,  /* NUL-terminated: the engine may parse it as any type (jsonb, ...) */
    FS_SQL_TEXTN, /* `len` bytes, not terminated: only where the column is text */
    FS_SQL_BLOB   /* bytes (SQLite BLOB, PostgreSQL bytea) */
} fs_sql_kind;

typedef struct fs_sql_value {
    fs_sql_kind kind;
    int64_t i;
    const char *s;
    size_t len;
} fs_sql_value;

static inline fs_sql_value fs_sql_null(void)
{
    fs_sql_value v = {FS_SQL_NULL, 0, NULL, 0};
    return v;
}
static inline fs_sql_value fs_sql_int(int64_t i)
{
    fs_sql_value v = {FS_SQL_INT, i, NULL, 0};
    return v;
}
/* NULL gives SQL NULL. */
static inline fs_sql_value fs_sql_text(const char *s)
{
    fs_sql_value v = {s ? FS_SQL_TEXT : FS_SQL_NULL, 0, s, 0};
    return v;
}
static inline fs_sql_value fs_sql_textn(const char *s, size_t len)
{
    fs_sql_value v = {s ? FS_SQL_TEXTN : FS_SQL_NULL, 0, s, len};
    return v;
}
static inline fs_sql_value fs_sql_blob(const void *p, size_t len)
{
    fs_sql_value v = {FS_SQL_BLOB, 0, p, len};
    return v;
}

/* One result row: values as text (NULL for SQL NULL), lengths, column names. Non-zero stops. */
typedef int (*fs_sql_row_fn)(void *userdata, int ncols, const char *const *values,
                             const size_t *lengths, const char *const *names);

/* ---- the handle ------------------------------------------------------------------------------ */

typedef enum fs_store_engine { FS_ENGINE_SQLITE = 1, FS_ENGINE_POSTGRESQL = 2 } fs_store_engine;

/* A resource type this handle has used: its table is known to exist, and the engine keeps its
 * prepared statements here. */
typedef struct fs_store_type {
    char name[FS_STORE_TYPE_MAX + 1];
    size_t len;
    bool ensured;          /* the table exists */
    bool ensured_in_batch; /* created in the open batch: a rollback undoes it */
    void *put_stmt;        /* engine-owned */
    void *delete_stmt;     /* engine-owned */
    unsigned slot;         /* index, for engine statement names */
    bool views_merged;     /* PostgreSQL: merged rows of the type await their views' rows */
} fs_store_type;

/* A held endpoint lock. */
typedef struct fs_store_lock {
    struct fs_store_lock *next;
    char *endpoint;
    uint64_t key; /* FNV-1a of the endpoint: side-file name / advisory lock key */
    int fd;       /* SQLite: the flock()ed side file; -1 otherwise */
} fs_store_lock;

typedef struct fs_store_ops fs_store_ops;
typedef struct fs_store_view fs_store_view; /* a materialized view (views.c) */

struct fhirsync_store {
    const fs_store_ops *ops;
    fs_store_engine engine;
    void *impl;     /* the engine's connection state */
    char *location; /* for display: path, or URL without password */
    char *opened;   /* the location as given (may hold a password: wiped on close) */
    unsigned flags; /* FHIRSYNC_STORE_READONLY */
    int schema_version;
    bool in_batch;
    bool bulk;         /* the open batch is a bulk load */
    bool append;       /* ... of rows expected to be new (FHIRSYNC_STORE_APPEND) */
    bool batch_failed; /* a database error happened in the open batch */
    fs_store_type *types;
    size_t type_count, type_cap, last_type;
    fs_store_lock *locks;
    fs_store_view *views; /* the registered views, as of views_tx (views.c) */
    size_t view_count;
    fs_store_view **view_set; /* view_count slots: the views of one type, evaluated together */
    fhirsync_view **view_set_views; /* ... and their compiled views (fhirsync_view_eval_many) */
    bool views_tx;                  /* the registry was read in the open transaction */
    bool put_inserted; /* the last ops->put stored an id new to its table (an engine that cannot
                          tell leaves it false): its views have no rows to delete */
    int64_t loaded_at_epoch; /* cache of the formatted loaded_at of puts */
    char loaded_at[32];
    char hostname[256];
    long pid;
};

struct fs_store_ops {
    const char *name;
    /* Connect to `location` (and prepare the session). */
    fhirsync_code (*open)(fhirsync_store *s, const char *location, fhirsync_error *err);
    void (*close)(fhirsync_store *s);
    /* One statement; rows go to cb (may be NULL). `cache`: sql is a string literal the engine may
     * keep prepared. *changes (may be NULL): rows inserted/updated/deleted. */
    fhirsync_code (*exec)(fhirsync_store *s, const char *sql, bool cache,
                          const fs_sql_value *params, int nparams, fs_sql_row_fn cb, void *userdata,
                          int64_t *changes, fhirsync_error *err);
    /* Several statements separated by ';', no parameters, no rows (DDL). */
    fhirsync_code (*script)(fhirsync_store *s, const char *sql, fhirsync_error *err);
    fhirsync_code (*begin)(fhirsync_store *s, fhirsync_error *err);
    fhirsync_code (*commit)(fhirsync_store *s, fhirsync_error *err);
    void (*rollback)(fhirsync_store *s);
    /* Store one scanned resource into t's table (inside an open transaction). */
    fhirsync_code (*put)(fhirsync_store *s, fs_store_type *t, const fs_resource_fields *f,
                         const char *line, size_t len, int64_t run_id,
                         fhirsync_put_outcome *outcome, fhirsync_error *err);
    /* Delete by id unless the row is newer than deleted_ms (NULL value: unknown). */
    fhirsync_code (*remove)(fhirsync_store *s, fs_store_type *t, const char *id,
                            fs_sql_value deleted_ms, bool *removed, fhirsync_error *err);
    /* Drop t's prepared statements (its table may be gone after a rollback). */
    void (*forget_type)(fhirsync_store *s, fs_store_type *t);
    /* The OS/session part of an endpoint lock. */
    fhirsync_code (*lock_try)(fhirsync_store *s, fs_store_lock *l, bool *acquired,
                              fhirsync_error *err);
    void (*lock_release)(fhirsync_store *s, fs_store_lock *l);
    /* Whether some process or session (this one included) holds the lock, without taking it and
     * without creating anything (read-only handles): for the status of a recorded run. */
    fhirsync_code (*lock_probe)(fhirsync_store *s, const fs_store_lock *l, bool *held,
                                fhirsync_error *err);
    /* Describe the session holding a lock that lock_try could not get ("" when unknown). */
    void (*lock_holder)(fhirsync_store *s, const fs_store_lock *l, char *buf, size_t size);
    /* The clock of work leases (epoch seconds): the database server's when there is one. */
    fhirsync_code (*now)(fhirsync_store *s, int64_t *epoch, fhirsync_error *err);
    /* Read-only user SQL. */
    fhirsync_code (*query)(fhirsync_store *s, const char *sql, fhirsync_row_cb cb, void *userdata,
                           fhirsync_error *err);
    /* A statement built at run time (a view's insert and delete), kept prepared until stmt_free:
     * ?1... placeholders, up to FS_STORE_STMT_PARAMS of them. */
    fhirsync_code (*stmt_prepare)(fhirsync_store *s, const char *sql, void **stmt,
                                  fhirsync_error *err);
    fhirsync_code (*stmt_run)(fhirsync_store *s, void *stmt, const fs_sql_value *params,
                              int nparams, int64_t *changes, fhirsync_error *err);
    void (*stmt_free)(fhirsync_store *s, void *stmt);
};

/* The most parameters of a stmt_prepare statement (a view's columns and its resource id). */
#define FS_STORE_STMT_PARAMS 256

extern const fs_store_ops fs_store_sqlite_ops;
/* The pragmas of a read-write SQLite handle (bench/store_bench.c's bare loop uses the same). */
extern const char fs_store_sqlite_pragmas[];
extern const fs_store_ops fs_store_postgresql_ops;

/* ---- materialized views (views.c), as the engines see them ----------------------------------- */

/* Whether registered views read resources of type t (the registry read in this transaction). */
bool fs_store_views_cover(const fhirsync_store *s, const fs_store_type *t);
/* PostgreSQL, after a merge of staged rows: the resources of t that the merge inserted or
 * replaced are listed in the session's table fhirsync_merged (type, id); recompute their rows in
 * every view of t, then empty the list. Called with nothing staged. */
fhirsync_code fs_store_views_merged(fhirsync_store *s, fs_store_type *t, fhirsync_error *err);

/* ---- helpers of the engines and the schema (shared.c) ---------------------------------------- */

/* The formatted `loaded_at` for rows written now (cached per second). */
const char *fs_store_loaded_at(fhirsync_store *s);
/* FNV-1a 64 of a string with a domain prefix (lock keys, index names). */
uint64_t fs_store_hash(const char *domain, const char *text);
/* Quote a validated type name as an SQL identifier into buf ("\"Patient\""). */
void fs_store_quote_type(const char *type, char *buf, size_t size);

/* ---- schema (schema.c) ----------------------------------------------------------------------- */

/* The newest schema version. */
int fs_schema_current(void);
/* Read the schema version and migrate to the current one (not for read-only handles, which
 * only check). Fills s->schema_version. */
fhirsync_code fs_schema_migrate(fhirsync_store *s, fhirsync_error *err);
/* The DDL creating the table and indexes of a resource type (idempotent); caller frees. */
char *fs_schema_type_ddl(fs_store_engine engine, const char *type);
/* Create the table of a resource type (idempotent) and register it in resource_types; inside the
 * caller's transaction. */
fhirsync_code fs_schema_create_type(fhirsync_store *s, const char *type, fhirsync_error *err);

/* Advisory lock keys of PostgreSQL for schema changes (migrations, new type tables). */
#define FS_STORE_PG_MIGRATE_KEY INT64_C(0x66687379636d6967) /* "fhsycmig" */
#define FS_STORE_PG_DDL_KEY INT64_C(0x6668737963646466)     /* "fhsycddf" */
/* views: shared by every transaction writing resources, exclusive to adding and refreshing views */
#define FS_STORE_PG_VIEWS_KEY INT64_C(0x6668737976696577) /* "fhsyview" */
#define FS_STORE_PG_BIND_KEY INT64_C(0x6668737962696e64)  /* "fhsybind" */

#endif
