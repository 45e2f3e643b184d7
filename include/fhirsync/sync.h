/* fhirsync/sync.h: keep a local copy of an endpoint's data current. One sync of one endpoint
 * pulls what changed since the last fully stored sync and stores it:
 *
 *   bulk mode   a Bulk Data $export (Group level when the endpoint has a group_id, else Patient
 *               level, else system level, falling back when the server refuses a level) into a
 *               resumable work folder; each file is loaded into the store as soon as it is
 *               complete and verified; `deleted` outputs delete resources (leaving a record);
 *               bad lines go to the quarantine.
 *   crawl mode  paged REST searches per resource type (and per patient where the server needs
 *               it), with _lastUpdated for increments; a full crawl also detects deletions.
 *
 * The endpoint's watermark (the next _since) moves only in the transaction that ends the run,
 * once everything of the run is stored, so a run killed at any instant is completed by the next
 * one: the export folder is resumed (same request, same job) and loads are idempotent upserts.
 * docs/sync.md describes the rules and argues the crash safety.
 *
 * Several machines can share the work through a PostgreSQL store (fhirsync_sync_worker_run):
 * endpoint syncs and the files of one export are work items claimed with leases.
 *
 * Conventions as in common.h. Thread safety: a sync handle is used by one thread at a time, with
 * a store handle that no other thread uses meanwhile; several handles (each with its own store
 * handle) may run in parallel threads. The event callback may be called from a loader thread of
 * the handle, never from two threads of one handle at once. */
#ifndef FHIRSYNC_SYNC_H
#define FHIRSYNC_SYNC_H

#include <stdbool.h>
#include <stdint.h>

#include "fhirsync/bulk.h"
#include "fhirsync/common.h"
#include "fhirsync/config.h"
#include "fhirsync/store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- options --------------------------------------------------------------------------------- */

/* When bulk files are loaded into the store. */
typedef enum fhirsync_sync_load {
    FHIRSYNC_SYNC_LOAD_STREAM = 0, /* each file as soon as it is verified, by a loader thread,
                                      while the others download (the default: see
                                      docs/sync.md for the measurements) */
    FHIRSYNC_SYNC_LOAD_AFTER = 1   /* every file once the whole export is downloaded */
} fhirsync_sync_load;

/* How to sync. Initialise with fhirsync_sync_options_init(), then set what differs. Strings are
 * copied by fhirsync_sync_new(). Versioned (see common.h). */
#define FHIRSYNC_SYNC_OPTIONS_VERSION 1
typedef struct fhirsync_sync_options {
    unsigned int version;    /* FHIRSYNC_SYNC_OPTIONS_VERSION, set by the _init */
    const char *work_dir;    /* where bulk exports are downloaded: <work_dir>/<endpoint>/.
                                NULL: "<store file>.work" for SQLite, "fhirsync.work" in the
                                working directory for PostgreSQL */
    long lock_timeout_ms;    /* the endpoint lock: 0 (default) fails at once with
                                FHIRSYNC_E_LOCKED naming the holder; > 0 waits that long; < 0
                                waits until cancelled */
    const char *lock_owner;  /* free text recorded with the lock (NULL: none) */
    bool full;               /* ignore the watermark and the `since` setting: a full sync (crawl:
                                also a reconciliation that detects deletions) */
    bool reconcile;          /* make this run a full export (bulk) or crawl that deletes what
                                the server no longer has */
    int reconcile_every;     /* every Nth run reconciles (0: the profile's `reconcile_every`,
                                default 24; < 0: never, only first runs, --full and --reconcile) */
    int skew_margin_s;       /* the watermark is never later than the crawl's start or the
                                export's kick-off (server clock) minus this many seconds, for
                                clock skew and late commits (0: 300; < 0: none) */
    int per_patient;         /* crawl: search each patient's resources with patient=ID: 1 yes,
                                0 no, -1 (default) when the vendor is Epic */
    int page_size;           /* crawl: _count of searches (0: 500) */
    fhirsync_sync_load load; /* bulk: when files are loaded */
    int delete_job;          /* bulk: delete the job on the server when done: 1, 0, or -1
                                (default) the profile's `delete_job` */
    int loaders;             /* bulk into PostgreSQL: files loaded at once, each over its own
                                session (0: 2; at most 16). SQLite loads one file at a time */
    int max_delete_share;    /* reconciliation deletes at most this percentage of a type's rows
                                in one run, else refuses that type and the run ends partial (0:
                                the profile's `max_delete_share`, default 50) */
    bool allow_mass_delete;  /* no such limit for this run */
} fhirsync_sync_options;

/* Fill `opts` with the defaults for the struct `version` the caller was built with
 * (FHIRSYNC_SYNC_OPTIONS_VERSION): per_patient -1, delete_job -1, streaming loads, everything
 * else zero. FHIRSYNC_E_ARG for a version this library does not know (the struct is then left
 * alone) or a NULL `opts`. */
FHIRSYNC_API fhirsync_code fhirsync_sync_options_init(fhirsync_sync_options *opts,
                                                      unsigned int version);

/* ---- events ---------------------------------------------------------------------------------- */

typedef enum fhirsync_sync_event_kind {
    FHIRSYNC_SYNC_EV_PLAN = 0,     /* the run starts: message describes mode, level, since and
                                      types */
    FHIRSYNC_SYNC_EV_EXPORT = 1,   /* an event of the bulk export: export_event is set */
    FHIRSYNC_SYNC_EV_LOADED = 2,   /* a file (bulk) or a type (crawl) is stored: name, type,
                                      count (resources), deleted, quarantined */
    FHIRSYNC_SYNC_EV_PROGRESS = 3, /* crawl: another page was stored (type, count so far) */
    FHIRSYNC_SYNC_EV_WARNING = 4,  /* something odd that did not stop the run: message */
    FHIRSYNC_SYNC_EV_DONE = 5      /* the run ended: code */
} fhirsync_sync_event_kind;

/* One event. Everything is borrowed for the duration of the callback. */
typedef struct fhirsync_sync_event {
    fhirsync_sync_event_kind kind;
    const char *endpoint;
    const char *message; /* already redacted; may be NULL */
    const char *name;    /* LOADED: the file name (bulk) or the search (crawl) */
    const char *type;    /* LOADED, PROGRESS: the resource type, NULL when mixed */
    int64_t count;       /* LOADED, PROGRESS: resources stored */
    int64_t deleted;     /* LOADED: deletions applied */
    int64_t quarantined; /* LOADED: lines quarantined */
    const fhirsync_export_event *export_event; /* EXPORT only */
    fhirsync_code code;                        /* DONE */
    int64_t resources;                         /* totals of the run so far */
    double elapsed_s;
} fhirsync_sync_event;

/* The callback. Return 0 to go on; any other value stops the run as if fhirsync_cancel() had
 * been called (FHIRSYNC_E_CANCELLED; the next run resumes). */
typedef int (*fhirsync_sync_cb)(const fhirsync_sync_event *event, void *userdata);

/* ---- one sync of one endpoint ---------------------------------------------------------------- */

typedef struct fhirsync_sync fhirsync_sync;

/* A sync of `ep` (copied) into `store` (borrowed: it must outlive the handle and not be used by
 * another thread while fhirsync_sync_run() runs). `opts` may be NULL (defaults). Nothing is sent
 * or locked yet. FHIRSYNC_E_ARG on bad options, FHIRSYNC_E_CONFIG when the profile lacks what
 * the mode needs, FHIRSYNC_E_NOMEM. Options not set up by fhirsync_sync_options_init() are
 * refused with FHIRSYNC_E_ARG. */
FHIRSYNC_API fhirsync_code fhirsync_sync_new(const fhirsync_endpoint *ep, fhirsync_store *store,
                                             const fhirsync_sync_options *opts, fhirsync_sync **out,
                                             fhirsync_error *err);
FHIRSYNC_API void fhirsync_sync_free(fhirsync_sync *sync);

/* Install the event callback (NULL: none). */
FHIRSYNC_API void fhirsync_sync_set_callback(fhirsync_sync *sync, fhirsync_sync_cb cb,
                                             void *userdata);

/* Run the sync: lock the endpoint, start a run in the audit table, pull and store, finish the
 * run (moving the watermark with the last commit), unlock. Returns FHIRSYNC_OK; FHIRSYNC_E_PARTIAL
 * when it finished with lines quarantined or errors reported by the server (the watermark still
 * moves: the quarantine keeps the lines); FHIRSYNC_E_LOCKED when another process syncs the
 * endpoint (the message names it); FHIRSYNC_E_CANCELLED on fhirsync_cancel() or the callback's
 * request, after the file being loaded is complete (the next run resumes); otherwise the error
 * that stopped it, recorded as a failed run. The message is in fhirsync_sync_errmsg(). A handle
 * can be run again (the next run). */
FHIRSYNC_API fhirsync_code fhirsync_sync_run(fhirsync_sync *sync);

/* The outcome of the handle's last fhirsync_sync_run(), as described in common.h: its code
 * (FHIRSYNC_OK after success, FHIRSYNC_E_PARTIAL after a partial run) and its message ("" after
 * success). The message is borrowed until the next run or the free. */
FHIRSYNC_API fhirsync_code fhirsync_sync_errcode(const fhirsync_sync *sync);
FHIRSYNC_API const char *fhirsync_sync_errmsg(const fhirsync_sync *sync);

/* What the last run did. Strings are borrowed from the handle until the next run or the free.
 * Versioned (see common.h), since it is the caller's memory that the library fills and it grows
 * with new counters: set it up with fhirsync_sync_stats_init(). */
#define FHIRSYNC_SYNC_STATS_VERSION 2
typedef struct fhirsync_sync_stats {
    unsigned int version;         /* FHIRSYNC_SYNC_STATS_VERSION, set by the _init */
    int64_t run_id;               /* 0 when no run was started (lock refused, ...) */
    fhirsync_run_status status;   /* how the run ended */
    const char *mode;             /* "bulk", "crawl" or "crawl-reconcile" */
    const char *level;            /* bulk: "group", "patient" or "system" (after fallbacks) */
    const char *since;            /* the _since / _lastUpdated used; NULL: a full sync */
    const char *transaction_time; /* bulk: the manifest's; NULL otherwise */
    const char *watermark;        /* the new watermark, NULL when it did not move */
    bool resumed;                 /* bulk: an interrupted export was continued */
    int64_t resources;            /* lines received and stored */
    int64_t deleted;              /* rows deleted */
    int64_t quarantined;          /* lines quarantined */
    int64_t server_errors;        /* OperationOutcomes of severity error/fatal in error files */
    int64_t requests;             /* crawl: search pages fetched */
    double duration_s;
    int64_t reconciled; /* of `deleted`: rows a reconciliation found gone */
    int64_t inserted;   /* rows new to the store (sum of the types' `inserted`) */
    /* version 2: what the run asked of the network (the run's own thread: requests of the FHIR
     * server, its file storage and the token endpoint) */
    int64_t http_responses; /* HTTP responses received, every retry and redirect hop included */
    int64_t rate_limited;   /* of which 429 Too Many Requests */
    int64_t bytes_received; /* bytes of response bodies, after content decoding */
    int64_t token_requests; /* access tokens obtained from the token endpoint (the first of the
                               run unless one was cached, and every renewal) */
} fhirsync_sync_stats;

/* Zero `stats` and set its version (FHIRSYNC_SYNC_STATS_VERSION); FHIRSYNC_E_ARG for a version
 * this library does not know or a NULL `stats`. */
FHIRSYNC_API fhirsync_code fhirsync_sync_stats_init(fhirsync_sync_stats *stats,
                                                    unsigned int version);
/* Fill `out` (its version kept; all zero for a NULL handle). FHIRSYNC_E_ARG, without touching
 * it, for a struct not set up by fhirsync_sync_stats_init() (not recorded in the handle: the
 * call only reads it). */
FHIRSYNC_API fhirsync_code fhirsync_sync_get_stats(const fhirsync_sync *sync,
                                                   fhirsync_sync_stats *out);

/* Counts per resource type of the last run, sorted by type. */
typedef struct fhirsync_sync_type_stats {
    const char *type;
    int64_t loaded;      /* lines received and stored (a resource repeated across files counts
                            each time) */
    int64_t deleted;     /* rows the run deleted (deleted files and reconciliation) */
    int64_t quarantined; /* lines quarantined */
    int64_t inserted;    /* rows the type's table gained that it did not have: its net change
                            plus `deleted` (what the store changed, beside what was received) */
    int64_t rows;        /* rows of the type in the store after the run */
} fhirsync_sync_type_stats;

FHIRSYNC_API size_t fhirsync_sync_type_count(const fhirsync_sync *sync);
/* Borrowed until the next run or the free; NULL out of range. */
FHIRSYNC_API const fhirsync_sync_type_stats *fhirsync_sync_type_at(const fhirsync_sync *sync,
                                                                   size_t i);

/* ---- workers sharing the work through the store ---------------------------------------------- */

/* Queue a sync of `endpoint` for the workers. `slot` makes the item unique (e.g. the scheduling
 * tick; NULL: one per watermark, so that a sync already queued for the same increment is not
 * queued twice). *id (may be NULL) receives the item's id. */
FHIRSYNC_API fhirsync_code fhirsync_sync_enqueue(fhirsync_store *store, const char *endpoint,
                                                 const char *slot, int64_t *id,
                                                 fhirsync_error *err);

/* How a worker runs. Versioned (see common.h): initialise with fhirsync_worker_options_init(),
 * which also initialises `sync`. */
#define FHIRSYNC_WORKER_OPTIONS_VERSION 1
typedef struct fhirsync_worker_options {
    unsigned int version;       /* FHIRSYNC_WORKER_OPTIONS_VERSION, set by the _init */
    const char *worker_id;      /* NULL: "host:pid" */
    int lease_s;                /* lease of a claimed item, renewed by a heartbeat (0: 30) */
    int poll_ms;                /* wait between claims when there is nothing to do (0: 500) */
    bool exit_when_idle;        /* return once nothing is pending or claimed (else: until
                                   cancelled) */
    fhirsync_sync_options sync; /* for the syncs the worker runs */
} fhirsync_worker_options;

/* Fill `opts` with the defaults for the struct `version` the caller was built with
 * (FHIRSYNC_WORKER_OPTIONS_VERSION), `sync` as fhirsync_sync_options_init() does. FHIRSYNC_E_ARG
 * for a version this library does not know (the struct is then left alone) or a NULL `opts`. */
FHIRSYNC_API fhirsync_code fhirsync_worker_options_init(fhirsync_worker_options *opts,
                                                        unsigned int version);

/* What a worker did. Versioned (see common.h) like the other stats: set it up with
 * fhirsync_worker_stats_init(). */
#define FHIRSYNC_WORKER_STATS_VERSION 1
typedef struct fhirsync_worker_stats {
    unsigned int version; /* FHIRSYNC_WORKER_STATS_VERSION, set by the _init */
    int64_t items_done;   /* items completed by this worker */
    int64_t items_failed; /* items given back after a failure */
    int64_t resources;    /* resources this worker stored */
} fhirsync_worker_stats;

/* Zero `stats` and set its version (FHIRSYNC_WORKER_STATS_VERSION); FHIRSYNC_E_ARG for a version
 * this library does not know or a NULL `stats`. */
FHIRSYNC_API fhirsync_code fhirsync_worker_stats_init(fhirsync_worker_stats *stats,
                                                      unsigned int version);

/* Run a worker on `store_location` (its own connections: one for the work, one for lease
 * heartbeats): claim items until cancelled (or, with exit_when_idle, until the queue is empty).
 * An endpoint sync item runs the endpoint's sync; for a bulk endpoint the worker kicks off the
 * export and queues one file-load item per file of the manifest plus a finalising item, which any
 * worker claims: a file is downloaded and stored in one transaction together with its item's
 * completion; the finalising item moves the watermark once every file is done. Endpoints are
 * looked up by name in `cfg` (borrowed). `cb` (may be NULL) receives the events of the work done
 * (from the calling thread). Returns FHIRSYNC_OK (idle or cancelled after finishing its item),
 * or a store failure. `opts` may be NULL (defaults); `stats` may be NULL. Options or stats not set
 * up by their _init are refused with FHIRSYNC_E_ARG before anything runs. */
FHIRSYNC_API fhirsync_code fhirsync_sync_worker_run(
    const char *store_location, const fhirsync_config *cfg, const fhirsync_worker_options *opts,
    fhirsync_sync_cb cb, void *userdata, fhirsync_worker_stats *stats, fhirsync_error *err);

#ifdef __cplusplus
}
#endif
#endif
