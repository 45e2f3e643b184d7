/* fhirsync/store.h: the local copy of an EHR's data. One logical schema on two engines: SQLite
 * (a file, the default, nothing to install) and PostgreSQL (a postgresql:// URL, for scale and for
 * several workers sharing the work). docs/store.md describes the tables, views and queries.
 *
 * What it holds: one table per resource type (the resource's JSON exactly as received, plus its
 * id, versionId, lastUpdated and the Patient it belongs to), the audit trail of sync runs, the
 * per-endpoint watermark, the record of deletions, the quarantine of bad lines, and (used by the
 * sync, fhirsync/sync.h, through the library's own internal API) endpoint locks and a work queue.
 *
 * Loading: open a batch (fhirsync_store_begin), put lines, commit. Upserts are idempotent and an
 * older version never overwrites a newer one (see fhirsync_store_put). A sync's final commit and
 * the watermark move together: killed at any instant, the store holds either the whole run with
 * its watermark or the previous watermark.
 *
 * Conventions: every function returns a fhirsync_code and fills `err` (may be NULL) on failure;
 * out-parameters are NULL/zero on failure. FHIRSYNC_E_STORE is a database failure (the message
 * keeps the engine's primary message, never resource content or a password); after it, an open
 * batch is unusable and can only be rolled back. FHIRSYNC_E_ARG is a misuse.
 *
 * Thread safety: a handle is used by one thread at a time. Open one handle per thread or process;
 * handles on the same database work concurrently (SQLite: one writer at a time, the others wait
 * up to the busy timeout; PostgreSQL: row-level concurrency). */
#ifndef FHIRSYNC_STORE_H
#define FHIRSYNC_STORE_H

#include <stdbool.h>

#include "fhirsync/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fhirsync_store fhirsync_store;

/* The location used when none is configured: an SQLite file in the working directory. */
#define FHIRSYNC_STORE_DEFAULT "fhirsync.db"

/* ---- opening --------------------------------------------------------------------------------- */

/* Flags of fhirsync_store_open. */
#define FHIRSYNC_STORE_READONLY 0x1u /* queries only: no creation, no migration, no writes */

/* Open (and create, and migrate) a store. `location` is a file path for SQLite (NULL: the
 * default), ":memory:" (a private in-memory SQLite database, for tests), or a postgresql:// /
 * postgres:// URL or libpq keyword string ("host=... dbname=...") for PostgreSQL.
 *
 * SQLite: a new file is created with mode 0600 (its -wal and -shm files too); an existing file
 * readable by others is tightened to 0600 with a warning in the log. PostgreSQL: the password is
 * never logged nor put in error messages; put it in ~/.pgpass or PGPASSWORD, not in the URL.
 *
 * Migrations run in one transaction each, serialised between processes; opening a database
 * whose schema is newer than this library fails with FHIRSYNC_E_STORE saying so. With
 * FHIRSYNC_STORE_READONLY a missing SQLite file or an empty database is FHIRSYNC_E_STORE.
 * Errors: FHIRSYNC_E_ARG, FHIRSYNC_E_IO (the file cannot be created or opened), FHIRSYNC_E_STORE,
 * FHIRSYNC_E_NOMEM. On success *out is the caller's: close with fhirsync_store_close(). */
FHIRSYNC_API fhirsync_code fhirsync_store_open(const char *location, unsigned flags,
                                               fhirsync_store **out, fhirsync_error *err);
/* Roll back an open batch, release the handle's locks, close. NULL is a no-op. */
FHIRSYNC_API void fhirsync_store_close(fhirsync_store *store);

/* "sqlite" or "postgresql". */
FHIRSYNC_API const char *fhirsync_store_engine_name(const fhirsync_store *store);
/* The location for display: the path, or the URL without its password. Borrowed. */
FHIRSYNC_API const char *fhirsync_store_location(const fhirsync_store *store);
/* Open another handle on the same database, with the same flags (another PostgreSQL session, or
 * SQLite connection), for another thread: a handle is used by one thread at a time. */
FHIRSYNC_API fhirsync_code fhirsync_store_reopen(const fhirsync_store *store, fhirsync_store **out,
                                                 fhirsync_error *err);
/* The schema version of the open database (this library's current one after migrating). */
FHIRSYNC_API int fhirsync_store_schema_version(const fhirsync_store *store);
/* The newest schema version this library knows. */
FHIRSYNC_API int fhirsync_store_schema_version_supported(void);

/* ---- batches --------------------------------------------------------------------------------- */

/* Flags of fhirsync_store_begin. */
#define FHIRSYNC_STORE_BULK 0x1u /* a file load: PostgreSQL streams rows with COPY (see put) */
/* With FHIRSYNC_STORE_BULK: the rows are expected to be new (a first full load). PostgreSQL
 * copies them straight into the type tables instead of staging and merging them (10-20% less
 * server CPU per row). When an id is already stored, or repeated in the batch, the batch fails with
 * FHIRSYNC_E_CONFLICT and nothing of it is stored: load it again without this flag. SQLite
 * ignores the flag (its upsert costs the same). */
#define FHIRSYNC_STORE_APPEND 0x2u

/* Open a batch (one database transaction). Everything written until commit becomes visible at
 * once, or not at all after a rollback or a crash. Large loads commit every few thousand rows:
 * upserts are idempotent, so a load interrupted between commits is simply repeated.
 * FHIRSYNC_E_ARG when a batch is already open. */
FHIRSYNC_API fhirsync_code fhirsync_store_begin(fhirsync_store *store, unsigned flags,
                                                fhirsync_error *err);
/* Commit the batch. On FHIRSYNC_E_STORE the batch was rolled back (nothing of it is stored). */
FHIRSYNC_API fhirsync_code fhirsync_store_commit(fhirsync_store *store, fhirsync_error *err);
/* Roll back the batch (no-op without one). */
FHIRSYNC_API fhirsync_code fhirsync_store_rollback(fhirsync_store *store, fhirsync_error *err);

/* Make sure the table of a resource type exists (the common US Core types always exist). Cheap
 * when it does. Call it outside a batch for the types of a manifest before loading: on
 * PostgreSQL, creating a table inside a long batch serialises other workers' table creations
 * until that batch commits. FHIRSYNC_E_ARG when `type` is not ^[A-Z][A-Za-z]{1,62}$ or names an
 * internal table ("Deletions", "Quarantine"). */
FHIRSYNC_API fhirsync_code fhirsync_store_ensure_type(fhirsync_store *store, const char *type,
                                                      fhirsync_error *err);

/* ---- resources ------------------------------------------------------------------------------- */

typedef enum fhirsync_put_outcome {
    FHIRSYNC_PUT_STORED = 0,     /* inserted, or replaced the stored version */
    FHIRSYNC_PUT_KEPT_NEWER = 1, /* the stored version is newer: left as it was */
    FHIRSYNC_PUT_STAGED = 2      /* PostgreSQL bulk batch: decided when the batch is merged */
} fhirsync_put_outcome;

/* Store one resource: `line` is its JSON as received (len bytes; a trailing newline is ignored),
 * stored byte for byte (never re-serialised: decimals keep their precision). The id, versionId,
 * lastUpdated and the Patient it belongs to are read from the line by a fast top-level scanner.
 * `type` is the expected resourceType (the file's type) or NULL to take the line's. `run_id`
 * (0: none) is recorded on the row.
 *
 * Upsert rule: the line replaces the stored row with the same id unless the stored one is newer:
 * its meta.lastUpdated is later, or (lastUpdated equal or missing on either side) both versionIds
 * are decimal integers and the stored one is larger. Equal versions are replaced (loading the same
 * line twice leaves the same row). Within one PostgreSQL bulk batch a repeated id is merged in
 * order too.
 *
 * Outside a batch the put is its own transaction (slow: use batches). FHIRSYNC_E_JSON when the
 * line cannot be stored (not one JSON object, missing or invalid resourceType or id, a type
 * other than `type`, invalid UTF-8): the message says why, for the quarantine, and the batch stays
 * usable. `outcome` may be NULL. */
FHIRSYNC_API fhirsync_code fhirsync_store_put(fhirsync_store *store, const char *type,
                                              const char *line, size_t len, int64_t run_id,
                                              fhirsync_put_outcome *outcome, fhirsync_error *err);

/* Delete a resource and record the deletion (type, id, deleted_at, run_id). `deleted_at` is a
 * FHIR instant (the export's transactionTime, or when a crawl saw it gone; NULL: now). The row is
 * kept when its lastUpdated is later than deleted_at (it was re-created after the deletion).
 * Idempotent: the same (type, id, deleted_at) is recorded once. `removed` (may be NULL) says
 * whether a row was deleted. Joins an open batch (PostgreSQL bulk: staged rows are merged
 * first, so the order of puts and deletes is kept). */
FHIRSYNC_API fhirsync_code fhirsync_store_delete(fhirsync_store *store, const char *type,
                                                 const char *id, const char *deleted_at,
                                                 int64_t run_id, bool *removed,
                                                 fhirsync_error *err);

/* A line that could not be stored, kept with the reason. */
typedef struct fhirsync_quarantine_entry {
    int64_t id;             /* listing only */
    int64_t run_id;         /* 0: none */
    const char *endpoint;   /* may be NULL */
    const char *source;     /* the file URL or name, or the search URL; may be NULL */
    int64_t line_number;    /* 1-based; 0 when not from a file */
    const char *reason;     /* required: why it was refused */
    const char *line;       /* the raw bytes (any bytes); stored up to
                               FHIRSYNC_STORE_QUARANTINE_CAP */
    size_t line_len;        /* bytes at `line` (listing: the stored, possibly capped, length) */
    int64_t line_bytes;     /* listing only: the original length */
    const char *created_at; /* listing only */
} fhirsync_quarantine_entry;

#define FHIRSYNC_STORE_QUARANTINE_CAP 16384

/* Record a bad line. Joins an open batch. The line is stored as bytes (it may not be text). */
FHIRSYNC_API fhirsync_code fhirsync_store_quarantine(fhirsync_store *store,
                                                     const fhirsync_quarantine_entry *entry,
                                                     fhirsync_error *err);

/* ---- runs and the watermark ------------------------------------------------------------------ */
/* A sync records each run in an audit (fhirsync_store_runs lists them) and moves the endpoint's
 * watermark in the same transaction as the run's last rows. */

typedef enum fhirsync_run_status {
    FHIRSYNC_RUN_RUNNING = 0,
    FHIRSYNC_RUN_OK = 1,
    FHIRSYNC_RUN_PARTIAL = 2, /* finished, some lines quarantined */
    FHIRSYNC_RUN_FAILED = 3
} fhirsync_run_status;

/* "running", "ok", "partial", "failed". */
FHIRSYNC_API const char *fhirsync_run_status_name(fhirsync_run_status status);

/* The endpoint's watermark (the last fully stored transactionTime). *watermark is the caller's
 * (fhirsync_free), NULL when the endpoint has none (a first, full sync). */
FHIRSYNC_API fhirsync_code fhirsync_store_watermark(fhirsync_store *store, const char *endpoint,
                                                    char **watermark, fhirsync_error *err);
/* Set (or with NULL, clear: the next sync is full) the watermark outside a run. Joins a batch. */
FHIRSYNC_API fhirsync_code fhirsync_store_set_watermark(fhirsync_store *store, const char *endpoint,
                                                        const char *watermark, fhirsync_error *err);

/* ---- each endpoint's status ------------------------------------------------------------------ */
/* What an operator asks of a store (`fhirsync status`, the metrics of `sync --every`): per
 * endpoint, whether it is syncing, failing or behind, from the audit and the watermark. */

typedef enum fhirsync_endpoint_state {
    FHIRSYNC_STATE_NEVER = 0,      /* no run recorded */
    FHIRSYNC_STATE_IDLE = 1,       /* nothing running; the latest run ended ok or partial */
    FHIRSYNC_STATE_FAILING = 2,    /* nothing running; the latest run failed */
    FHIRSYNC_STATE_RUNNING = 3,    /* a run is in progress: its process holds the endpoint's
                                      lock, or workers are loading the files of its export */
    FHIRSYNC_STATE_INTERRUPTED = 4 /* the latest run is recorded as running but nothing runs it:
                                      its process ended without finishing it (killed, crashed,
                                      power loss); the next sync marks it failed and resumes */
} fhirsync_endpoint_state;

/* "never", "idle", "failing", "running", "interrupted". */
FHIRSYNC_API const char *fhirsync_endpoint_state_name(fhirsync_endpoint_state state);

/* One endpoint's status. Strings are borrowed for the duration of the callback; times are FHIR
 * instants as recorded (the store's writers' clocks; the watermark is the server's clock), with
 * the same instant as epoch seconds beside each (0 when absent). Allocated by the library: fields
 * are only ever appended. */
typedef struct fhirsync_endpoint_status {
    const char *endpoint;
    fhirsync_endpoint_state state;
    /* the latest run (0 / NULL: none) */
    int64_t last_run_id;
    fhirsync_run_status last_run_status;
    const char *last_run_mode;
    const char *last_run_started_at;
    int64_t last_run_started_s;
    const char *last_run_finished_at; /* NULL while running (or interrupted) */
    int64_t last_run_finished_s;
    const char *last_run_host; /* who ran it: host name and process id */
    int64_t last_run_pid;
    /* the latest successful (ok or partial) run */
    int64_t last_success_id;
    const char *last_success_at; /* when it finished */
    int64_t last_success_s;
    /* the watermark: the next sync's _since (NULL: none, the next sync is full) */
    const char *watermark;
    int64_t watermark_s;
    const char *watermark_updated_at; /* when it last moved */
    int64_t watermark_updated_s;
    /* failures */
    int64_t consecutive_failures; /* failed runs after the latest successful one */
    int64_t last_error_run_id;    /* the latest failed run (0: none ever) */
    const char *last_error;       /* its error, on one line (line breaks and tabs as spaces) */
    const char *last_error_at;    /* when it ended */
    int64_t last_error_s;
} fhirsync_endpoint_status;

typedef int (*fhirsync_endpoint_status_cb)(const fhirsync_endpoint_status *status, void *userdata);

/* The status of `endpoint` (NULL: of every endpoint with a run or a watermark in the store, by
 * name; an endpoint with neither is not reported: it was never synced), one call each (non-zero
 * stops). Whether a run recorded as running still runs is asked of the endpoint's lock
 * (SQLite: the lock file's flock, which also sees the calling process's own runs; PostgreSQL: the
 * advisory lock, whichever machine holds it) and, for workers' runs, of the work queue. Works on
 * read-only handles and creates nothing. Not inside a batch. FHIRSYNC_E_STORE;
 * FHIRSYNC_E_NOMEM. */
FHIRSYNC_API fhirsync_code fhirsync_store_status(fhirsync_store *store, const char *endpoint,
                                                 fhirsync_endpoint_status_cb cb, void *userdata,
                                                 fhirsync_error *err);

/* ---- queries --------------------------------------------------------------------------------- */
/* Callbacks receive borrowed values valid during the call only, and return non-zero to stop
 * early (the function then returns FHIRSYNC_OK; PostgreSQL still reads and drops the rest of the
 * result: a cancel request could hit the next statement). Results are streamed, never held
 * whole. */

typedef struct fhirsync_type_count {
    char type[64];
    int64_t count;
} fhirsync_type_count;

/* Resources per type, for every type that has a table, sorted by type. *counts is the caller's
 * (fhirsync_free); *n its length. */
FHIRSYNC_API fhirsync_code fhirsync_store_counts(fhirsync_store *store,
                                                 fhirsync_type_count **counts, size_t *n,
                                                 fhirsync_error *err);

typedef struct fhirsync_resource_row {
    const char *type;
    const char *id;
    const char *version_id;   /* may be NULL */
    const char *last_updated; /* may be NULL */
    const char *json;         /* exactly as received */
    size_t json_len;
} fhirsync_resource_row;

typedef int (*fhirsync_resource_cb)(const fhirsync_resource_row *row, void *userdata);

/* Every resource of one patient (the Patient itself first, then by type and id). */
FHIRSYNC_API fhirsync_code fhirsync_store_patient_record(fhirsync_store *store,
                                                         const char *patient_id,
                                                         fhirsync_resource_cb cb, void *userdata,
                                                         fhirsync_error *err);

typedef struct fhirsync_run_info {
    int64_t id;
    const char *endpoint;
    const char *mode;
    fhirsync_run_status status;
    const char *started_at;
    const char *finished_at;      /* NULL while running */
    const char *since;            /* NULL: full */
    const char *transaction_time; /* NULL: none */
    const char *counts_json;      /* NULL: none */
    int64_t resources, deletions, quarantined;
    const char *error; /* NULL: none */
} fhirsync_run_info;

typedef int (*fhirsync_run_cb)(const fhirsync_run_info *run, void *userdata);

/* How an endpoint's deletions were found: `listed` by the server in the deleted files of its
 * exports, `reconciled` by comparing a full export or crawl with the store (deletions.reason).
 * A server whose `listed` stays 0 while `reconciled` grows does not report deletions. */
typedef struct fhirsync_deletion_summary {
    int64_t listed;
    int64_t reconciled;
} fhirsync_deletion_summary;

/* The deletion summary of `endpoint` (its runs' deletions) into *out. */
FHIRSYNC_API fhirsync_code fhirsync_store_deletion_summary(fhirsync_store *store,
                                                           const char *endpoint,
                                                           fhirsync_deletion_summary *out,
                                                           fhirsync_error *err);

/* The latest `limit` runs (0: 20), newest first, of one endpoint (NULL: all). */
FHIRSYNC_API fhirsync_code fhirsync_store_runs(fhirsync_store *store, const char *endpoint,
                                               size_t limit, fhirsync_run_cb cb, void *userdata,
                                               fhirsync_error *err);

typedef int (*fhirsync_quarantine_cb)(const fhirsync_quarantine_entry *entry, void *userdata);

/* The latest `limit` quarantined lines (0: 20), newest first, of one run (0: all runs). */
FHIRSYNC_API fhirsync_code fhirsync_store_quarantine_list(fhirsync_store *store, int64_t run_id,
                                                          size_t limit, fhirsync_quarantine_cb cb,
                                                          void *userdata, fhirsync_error *err);

/* One row of a query: column names and values as text (NULL for SQL NULL; binary values as
 * their bytes), with lengths. */
typedef int (*fhirsync_row_cb)(size_t ncols, const char *const *names, const char *const *values,
                               const size_t *lengths, void *userdata);

/* Run one read-only SQL statement and stream its rows. Writes are refused: SQLite checks that the
 * statement is read-only (and the CLI opens with FHIRSYNC_STORE_READONLY), PostgreSQL runs it in a
 * READ ONLY transaction. FHIRSYNC_E_ARG for several statements or a write; FHIRSYNC_E_STORE with
 * the engine's message for bad SQL. Not inside a batch. */
FHIRSYNC_API fhirsync_code fhirsync_store_query(fhirsync_store *store, const char *sql,
                                                fhirsync_row_cb cb, void *userdata,
                                                fhirsync_error *err);

/* ---- materialized views (SQL on FHIR v2) ----------------------------------------------------- */
/* A ViewDefinition registered in the store is materialized as a table named after the view's
 * `name`: one column per view column (types from the columns' `type`: see docs/views.md), plus
 * `_resource_id`, the id of the resource each row came from. Every write keeps the tables current
 * in the same transaction as the resources: a put that stores a resource recomputes its rows in
 * every view of its type, a delete (or a reconciliation) removes them. A resource a view cannot
 * evaluate (a `collection: false` column with several values, a value of the wrong type) is
 * stored anyway; it has no rows in that view, and a quarantine entry (source "view:NAME", the
 * message naming the view and the column) says why. Rows of another writer's transaction never
 * mix with a view's (re)build: PostgreSQL takes an advisory lock, SQLite has one writer. */

/* What adding or refreshing views did. Versioned (see common.h): set it up with
 * fhirsync_view_stats_init(). */
#define FHIRSYNC_VIEW_STATS_VERSION 1
typedef struct fhirsync_view_stats {
    unsigned int version; /* FHIRSYNC_VIEW_STATS_VERSION, set by the _init */
    int64_t views;        /* views (re)built */
    int64_t resources;    /* resources evaluated */
    int64_t rows;         /* rows written */
    int64_t failed;       /* resources a view could not evaluate (in the quarantine) */
    bool unchanged;       /* add: the same definition was registered already: nothing was done */
    bool replaced;        /* add: a different definition of the same name was replaced */
} fhirsync_view_stats;

/* Zero `stats` and set its version; FHIRSYNC_E_ARG for an unknown version or NULL. */
FHIRSYNC_API fhirsync_code fhirsync_view_stats_init(fhirsync_view_stats *stats,
                                                    unsigned int version);

/* Register a ViewDefinition (`len` bytes of JSON) and build its table from the stored resources,
 * in one transaction. The view must have a `name`: ^[A-Za-z][A-Za-z0-9_]{0,49}$, not the name of
 * another table of the store (nor, ignoring case, of an internal table or a resource type's
 * table), with at most 255 columns whose names differ ignoring case. Adding the same definition
 * again (byte for byte) does nothing (stats->unchanged); a different definition with the same name
 * replaces the old one and rebuilds the table (stats->replaced). `stats` may be NULL. Not inside a
 * batch. Errors: FHIRSYNC_E_JSON, FHIRSYNC_E_VIEW (an invalid view, or a name the store cannot
 * use: the message names the element), FHIRSYNC_E_STORE, FHIRSYNC_E_ARG. */
FHIRSYNC_API fhirsync_code fhirsync_store_view_add(fhirsync_store *store, const char *json,
                                                   size_t len, fhirsync_view_stats *stats,
                                                   fhirsync_error *err);

/* Rebuild the table of view `name` (NULL: every view) from the stored resources, in one
 * transaction. FHIRSYNC_E_ARG when no view has that name. `stats` may be NULL. Not inside a
 * batch. */
FHIRSYNC_API fhirsync_code fhirsync_store_view_refresh(fhirsync_store *store, const char *name,
                                                       fhirsync_view_stats *stats,
                                                       fhirsync_error *err);

/* Drop view `name`: its table and its registration. FHIRSYNC_E_ARG when there is none. Not inside
 * a batch. */
FHIRSYNC_API fhirsync_code fhirsync_store_view_remove(fhirsync_store *store, const char *name,
                                                      fhirsync_error *err);

/* A registered view, for fhirsync_store_views. Strings borrowed for the call. */
typedef struct fhirsync_store_view_info {
    const char *name;         /* the view's name, and its table's */
    const char *resource;     /* the resource type it reads */
    const char *definition;   /* the ViewDefinition as registered (JSON) */
    const char *created_at;   /* when it was registered (FHIR instant) */
    const char *refreshed_at; /* when its table was last built whole */
    int64_t rows;             /* rows in its table now */
} fhirsync_store_view_info;

typedef int (*fhirsync_store_view_cb)(const fhirsync_store_view_info *info, void *userdata);

/* The registered views, by name; cb returns non-zero to stop. Works on read-only handles. */
FHIRSYNC_API fhirsync_code fhirsync_store_views(fhirsync_store *store, fhirsync_store_view_cb cb,
                                                void *userdata, fhirsync_error *err);

#ifdef __cplusplus
}
#endif
#endif
