/* store/store_lib.h: the store's private, typed API for the library's own modules (sync). What a
 * library user needs stays in include/fhirsync/store.h; what only the sync needs, and what would
 * otherwise make it write SQL against the store's own tables, lives here. The SQL behind these
 * functions is in src/lib/store/ and nowhere else.
 *
 * Internal: prefix fs_store_; nothing here is exported. */
#ifndef FS_STORE_LIB_H
#define FS_STORE_LIB_H

#include <stdbool.h>
#include <stdint.h>

#include "core/core.h"
#include "fhirsync/store.h"

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

/* The types that hold rows last written by runs of `endpoint` (for reconciling an export that
 * sent no _type). *types: a NULL-terminated array, caller frees each string and the array with
 * fs_free. */
fhirsync_code fs_store_endpoint_types(fhirsync_store *store, const char *endpoint, char ***types,
                                      fhirsync_error *err);

/* Rows of `type` in the store (0 without a table). */
fhirsync_code fs_store_type_rows(fhirsync_store *store, const char *type, int64_t *rows,
                                 fhirsync_error *err);

/* The items of work batch `batch` that are done: cb(userdata, payload, result) for each, in id
 * order (payload "{}" and result NULL when empty; borrowed for the call; return non-zero to
 * stop). FHIRSYNC_E_ARG without a batch; FHIRSYNC_E_STORE. */
typedef int (*fs_store_work_result_fn)(void *userdata, const char *payload, const char *result);
fhirsync_code fs_store_work_results(fhirsync_store *store, const char *batch,
                                    fs_store_work_result_fn cb, void *userdata,
                                    fhirsync_error *err);

/* Rows of `type` last written by run `run_id` (0 without a table), and the deletion and
 * quarantine records of that run (a workers' run is finalised from these). */
fhirsync_code fs_store_run_rows(fhirsync_store *store, const char *type, int64_t run_id,
                                int64_t *rows, fhirsync_error *err);
fhirsync_code fs_store_run_tally(fhirsync_store *store, int64_t run_id, int64_t *deletions,
                                 int64_t *quarantined, fhirsync_error *err);

/* The ids of `type` last written by runs of `endpoint`, in id order, one call each (non-zero
 * stops). Nothing without a table. A crawl lists them into a file before searching per patient. */
typedef int (*fs_store_id_fn)(void *userdata, const char *id, size_t len);
fhirsync_code fs_store_endpoint_ids(fhirsync_store *store, const char *endpoint, const char *type,
                                    fs_store_id_fn fn, void *userdata, fhirsync_error *err);

#endif
