/* store/store_internal.h: the store's private, typed API for the library's own modules (sync). What
 * a library user needs stays in include/fhirsync/store.h; what only the sync needs (endpoint
 * binding and locks, starting and finishing runs, the work queue, reconciliation, id lists, run
 * counts), and what would otherwise make it write SQL against the store's own tables, lives here.
 * The SQL behind these functions is in src/lib/store/ and nowhere else.
 *
 * Conventions as in fhirsync/store.h: a fhirsync_code, `err` (may be NULL) filled on failure,
 * out-parameters NULL/zero on failure; a handle is used by one thread at a time.
 * Internal: prefix fs_store_; nothing here is exported. */
#ifndef FS_STORE_INTERNAL_H
#define FS_STORE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/core.h"
#include "fhirsync/store.h"

/* ---- resources (resources.c) ----------------------------------------------------------------- */

/* Why a resource was deleted (deletions.reason). */
#define FS_STORE_DELETED_LISTED "deleted-list"          /* in an export's deleted file */
#define FS_STORE_DELETED_RECONCILED "full-export"       /* missing from a complete full export */
#define FS_STORE_DELETED_CRAWLED "reconciliation-crawl" /* missing from a complete crawl */

/* Whether `type` and `id` name a resource the store can hold (a type name that is not an internal
 * table, a FHIR id): what fhirsync_store_delete and _put would refuse with FHIRSYNC_E_ARG. */
bool fs_store_resource_key_ok(const char *type, const char *id);

/* fhirsync_store_delete with the reason recorded (NULL: none). */
fhirsync_code fs_store_delete_why(fhirsync_store *store, const char *type, const char *id,
                                  const char *deleted_at, int64_t run_id, const char *reason,
                                  bool *removed, fhirsync_error *err);

/* ---- endpoints (endpoints.c) ----------------------------------------------------------------- */

/* Record that `endpoint` syncs the FHIR server at `base_url` into this store, refusing
 * (FHIRSYNC_E_CONFIG, naming the other endpoint) when another endpoint of the store syncs a
 * different server: resource ids are unique within one server only, so two servers' resources
 * would overwrite each other. `shared`: record without the check (the user says both base URLs
 * are one server). URLs compare without a trailing '/' and with scheme and host in lower case.
 * The sync calls it before each run, holding the endpoint's lock. */
fhirsync_code fs_store_bind_endpoint(fhirsync_store *store, const char *endpoint,
                                     const char *base_url, bool shared, fhirsync_error *err);

/* The types that hold rows last written by runs of `endpoint` (for reconciling an export that
 * sent no _type). *types: a NULL-terminated array, caller frees each string and the array with
 * fs_free. */
fhirsync_code fs_store_endpoint_types(fhirsync_store *store, const char *endpoint, char ***types,
                                      fhirsync_error *err);

/* The ids of `type` last written by runs of `endpoint`, in id order, one call each (non-zero
 * stops). Nothing without a table. A crawl lists them into a file before searching per patient. */
typedef int (*fs_store_id_fn)(void *userdata, const char *id, size_t len);
fhirsync_code fs_store_endpoint_ids(fhirsync_store *store, const char *endpoint, const char *type,
                                    fs_store_id_fn fn, void *userdata, fhirsync_error *err);

/* ---- locks (locks.c) ------------------------------------------------------------------------- */

/* Lock an endpoint so that no other process or handle syncs it at the same time. The lock dies
 * with its holder: SQLite holds an flock() on a side file "<db>.lock.<hash>", PostgreSQL a
 * session advisory lock. A row in sync_locks says who holds it (pid, host, owner, since when).
 * `owner` is free text for that row (e.g. a worker id; may be NULL). `timeout_ms`: 0 tries
 * once, > 0 waits up to that long, < 0 waits until cancelled (fhirsync_cancel: then
 * FHIRSYNC_E_CANCELLED). Held: FHIRSYNC_E_LOCKED, the message naming the holder. Locking an
 * endpoint this handle already holds succeeds. Not inside a batch (FHIRSYNC_E_ARG). Closing the
 * handle releases its locks. */
fhirsync_code fs_store_lock_endpoint(fhirsync_store *store, const char *endpoint, const char *owner,
                                     long timeout_ms, fhirsync_error *err);
/* Release a lock this handle holds (FHIRSYNC_E_ARG when it does not; not inside a batch). */
fhirsync_code fs_store_unlock_endpoint(fhirsync_store *store, const char *endpoint,
                                       fhirsync_error *err);

/* ---- runs (runs.c) --------------------------------------------------------------------------- */

/* Start a run (an audit row with status "running") and return its id. `mode` is e.g. "bulk" or
 * "crawl"; `since` the _since used (NULL: a full sync). Committed at once (outside a batch), so
 * the audit shows running and crashed runs. When this handle holds the endpoint's lock, runs of
 * the endpoint still "running" are first marked "failed" (interrupted): their process is gone. */
fhirsync_code fs_store_run_begin(fhirsync_store *store, const char *endpoint, const char *mode,
                                 const char *since, int64_t *run_id, fhirsync_error *err);

/* How a run ended. */
typedef struct fs_store_run_end {
    fhirsync_run_status status;   /* OK, PARTIAL or FAILED */
    const char *transaction_time; /* the export's transactionTime (NULL: none) */
    const char *counts_json;      /* resources per type, a JSON object ({"Patient":10}); NULL */
    int64_t resources;            /* resources stored */
    int64_t deletions;            /* deletions applied */
    int64_t quarantined;          /* lines quarantined */
    const char *error;            /* what went wrong (NULL: nothing) */
    const char *new_watermark;    /* non-NULL: set the endpoint's watermark to this instant (the
                                     transactionTime; crawl: the crawl's start time). Refused
                                     (FHIRSYNC_E_ARG) with status FAILED. */
} fs_store_run_end;

/* Finish a run: update its audit row and, with new_watermark, the endpoint's watermark. When a
 * batch is open this IS the batch's final commit: the last rows, the run's end and the watermark
 * commit together in one transaction. On any failure everything of the batch is rolled back (the
 * watermark is unchanged) and the error returned. FHIRSYNC_E_ARG when the run is not running. */
fhirsync_code fs_store_run_finish(fhirsync_store *store, int64_t run_id,
                                  const fs_store_run_end *end, fhirsync_error *err);

/* Rows of `type` last written by run `run_id` (0 without a table), and the deletion and
 * quarantine records of that run (a workers' run is finalised from these). */
fhirsync_code fs_store_run_rows(fhirsync_store *store, const char *type, int64_t run_id,
                                int64_t *rows, fhirsync_error *err);
fhirsync_code fs_store_run_tally(fhirsync_store *store, int64_t run_id, int64_t *deletions,
                                 int64_t *quarantined, fhirsync_error *err);

/* ---- work queue (queue.c) -------------------------------------------------------------------- */
/* Work shared by several workers through the database (PostgreSQL: on several machines; SQLite:
 * processes of one machine). An item is claimed with a lease; a worker that dies stops renewing
 * it and, once the lease has expired, another worker claims the item again. PostgreSQL leases use
 * the database server's clock, so workers' clocks need not agree. */

#define FS_STORE_WORK_ENDPOINT_SYNC "endpoint-sync"
#define FS_STORE_WORK_FILE_LOAD "file-load"

typedef struct fs_store_work_spec {
    const char *kind;     /* FS_STORE_WORK_ENDPOINT_SYNC or FS_STORE_WORK_FILE_LOAD */
    const char *endpoint; /* required */
    const char *batch;    /* groups items (e.g. one export's files); NULL: none */
    const char *key;      /* unique: enqueuing an existing key returns its id; NULL: none */
    const char *payload;  /* JSON object (file url, type, manifest job...); NULL: {} */
    int max_attempts;     /* claims before the item fails for good (0: 5) */
} fs_store_work_spec;

typedef struct fs_store_work_item {
    int64_t id;
    char *kind;
    char *endpoint;
    char *batch;         /* NULL when none */
    char *key;           /* NULL when none */
    char *payload;       /* JSON text */
    int attempts;        /* claims so far, this one included */
    int64_t lease_until; /* epoch seconds (database clock) */
} fs_store_work_item;

/* NULL is a no-op. */
void fs_store_work_item_free(fs_store_work_item *item);

/* Add an item (pending). *id (may be NULL) receives its id, or the existing item's id when `key`
 * is already queued. Joins an open batch. */
fhirsync_code fs_store_work_enqueue(fhirsync_store *store, const fs_store_work_spec *spec,
                                    int64_t *id, fhirsync_error *err);
/* Claim the oldest claimable item (pending and due, or claimed with an expired lease) of `kind`
 * (NULL: any) for lease_seconds (> 0). *item is the caller's (fs_store_work_item_free), NULL when
 * there is nothing to do (FHIRSYNC_OK). Items whose lease expired max_attempts times are failed
 * instead. Concurrent claimers never get the same item (PostgreSQL: FOR UPDATE SKIP LOCKED: they
 * do not wait for each other either). Not inside a batch (FHIRSYNC_E_ARG): a claim must be
 * visible to others at once. */
fhirsync_code fs_store_work_claim(fhirsync_store *store, const char *worker_id, const char *kind,
                                  int lease_seconds, fs_store_work_item **item,
                                  fhirsync_error *err);
/* Extend the lease of an item this worker holds. FHIRSYNC_E_LOCKED when the lease was lost (it
 * expired and another worker claimed the item). Not inside a batch. */
fhirsync_code fs_store_work_heartbeat(fhirsync_store *store, int64_t id, const char *worker_id,
                                      int lease_seconds, fhirsync_error *err);
/* Mark an item done with an optional JSON result. Joins an open batch: a file's last rows and its
 * completion commit together. FHIRSYNC_E_LOCKED when the lease was lost. */
fhirsync_code fs_store_work_complete(fhirsync_store *store, int64_t id, const char *worker_id,
                                     const char *result_json, fhirsync_error *err);
/* Give an item back after a failure: retry_after_seconds >= 0 makes it pending again after that
 * delay (unless it has used max_attempts, then it fails), < 0 fails it for good. Joins a batch.
 * FHIRSYNC_E_LOCKED when the lease was lost. */
fhirsync_code fs_store_work_fail(fhirsync_store *store, int64_t id, const char *worker_id,
                                 const char *error, int retry_after_seconds, fhirsync_error *err);

/* Items per state. */
typedef struct fs_store_work_counts {
    int64_t pending, claimed, done, failed;
} fs_store_work_counts;

/* Items per state of a batch (NULL: of all items). */
fhirsync_code fs_store_work_summary(fhirsync_store *store, const char *batch,
                                    fs_store_work_counts *out, fhirsync_error *err);

/* The items of work batch `batch` that are done: cb(userdata, payload, result) for each, in id
 * order (payload "{}" and result NULL when empty; borrowed for the call; return non-zero to
 * stop). FHIRSYNC_E_ARG without a batch; FHIRSYNC_E_STORE. */
typedef int (*fs_store_work_result_fn)(void *userdata, const char *payload, const char *result);
fhirsync_code fs_store_work_results(fhirsync_store *store, const char *batch,
                                    fs_store_work_result_fn cb, void *userdata,
                                    fhirsync_error *err);

/* ---- reconciliation (reconcile.c) ------------------------------------------------------------ */

/* One type's reconciliation: rows of `type` last written by runs of `endpoint` older than
 * `first_run` (the first run that loaded the current export or crawl), whose lastUpdated is not
 * later than `deleted_at`, were not returned by the complete export or crawl: they are gone on the
 * server (within the request's scope), and are deleted with a deletion record (reason, run_id,
 * deleted_at). Rows of other endpoints and rows written by this export's own runs are untouched.
 *
 * The share guard: when the rows to delete exceed `max_share` (0 < share <= 1) of the endpoint's
 * rows of the type, nothing is deleted and `refused` is set, unless `force`. */
typedef struct fs_store_reconcile {
    const char *endpoint;
    const char *type;
    int64_t first_run;
    int64_t run_id;         /* recorded on the deletions */
    const char *deleted_at; /* FHIR instant */
    const char *reason;
    double max_share;
    bool force;
} fs_store_reconcile;

typedef struct fs_store_reconcile_result {
    int64_t rows;    /* the endpoint's rows of the type before */
    int64_t gone;    /* of which not returned */
    int64_t deleted; /* rows deleted (0 when refused) */
    bool refused;    /* the share guard stopped it */
} fs_store_reconcile_result;

/* Joins an open batch (else its own transaction). FHIRSYNC_E_ARG for a bad type name;
 * FHIRSYNC_E_STORE. A type without a table has nothing to reconcile (all zero). */
fhirsync_code fs_store_reconcile_type(fhirsync_store *store, const fs_store_reconcile *r,
                                      fs_store_reconcile_result *out, fhirsync_error *err);

/* ---- reports (report.c) ---------------------------------------------------------------------- */

/* Rows of `type` in the store (0 without a table). */
fhirsync_code fs_store_type_rows(fhirsync_store *store, const char *type, int64_t *rows,
                                 fhirsync_error *err);

#endif
