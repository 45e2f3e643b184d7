/* sync/sync_internal.h: what the files of the sync module share, and the seam its unit tests use
 * (tests/unit/test_sync.c links the static library and calls the planning functions directly).
 *
 *   plan.c     pure planning: default types from the granted scopes, export level chain and
 *              fallback, the eClinicalWorks Group scope, watermark rules, work folder names,
 *              parsing DELETE entries
 *   counts.c   counts per resource type and their JSON form
 *   load.c     loading one NDJSON file (output, deleted, error) into the store, line by line
 *   bulk.c     bulk mode: the export, the loader thread, the ledger, the final commit
 *   crawl.c    crawl mode: paged searches, per patient when needed, reconciliation
 *   sync.c     the public handle: lock, run audit, dispatch, stats
 *   fetch.c    streaming one export file from the server straight into the store (workers)
 *   worker.c   the worker loop: claims, leases, coordinator, file loads, finalisation
 *   reconcile.c  deleting what a complete full export did not return (bulk.c and worker.c)
 *
 * Internal: the prefix is fs_sync_; nothing here is exported. */
#ifndef FS_SYNC_INTERNAL_H
#define FS_SYNC_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "core/lines.h"
#include "fhirsync/bulk.h"
#include "fhirsync/store.h"
#include "fhirsync/sync.h"

#define FS_SYNC_TYPE_MAX 64
#define FS_SYNC_DEFAULT_RECONCILE_EVERY 24
#define FS_SYNC_DEFAULT_SKEW_MARGIN_S 300
#define FS_SYNC_DEFAULT_PAGE_SIZE 500

/* ---- planning (plan.c) ----------------------------------------------------------------------- */

/* The US Core resource types synced when `types` is not set (NULL-terminated, sorted). */
extern const char *const fs_sync_us_core_types[];

/* Whether a space-separated scope string grants `perm` ('r' read, 's' search) on `type` at the
 * system level: "system/Type.read", "system/(star).read", "system/Type.(star)" (v1) or
 * "system/Type.rs", "system/(star).cruds"... (v2, letters in cruds order, an optional ?query
 * restriction), where (star) is the wildcard '*'. */
bool fs_sync_scope_allows(const char *scopes, const char *type, char perm);

/* The scopes of a person's login read as system-level ones for the rules above: "patient/" and
 * "user/" become "system/" (the server still limits them to the person's context), other tokens
 * ("openid", "launch/patient") pass unchanged. Caller frees; NULL on out of memory. */
char *fs_sync_scope_as_system(const char *scopes);

/* The default types: the US Core types that `granted` allows for `perm`, comma-separated (caller
 * frees; "" when none). NULL on out of memory. */
char *fs_sync_default_types(const char *granted, char perm);

/* The types that scope tokens name explicitly ("system/Observation.rs": Observation; wildcards
 * name none) and that they grant `perm` on, comma-separated, each once (caller frees; "" when
 * none). NULL on out of memory. */
char *fs_sync_scope_named_types(const char *granted, char perm);

/* Whether a comma-separated list holds `type`. */
bool fs_sync_list_has(const char *list, const char *type);

/* Whether resources of `type` belong to a patient's compartment (searchable with patient=).
 * Organization, Practitioner, PractitionerRole, Location, Medication and the like do not. */
bool fs_sync_patient_compartment(const char *type);

/* The types of a comma-separated list that a Patient or Group export can return (those in the
 * Patient compartment); caller frees, NULL on out of memory. */
char *fs_sync_compartment_types(const char *types);

/* The export levels to try in order: Group (with a group id), then Patient, then system. Fills
 * out[] and returns how many. */
size_t fs_sync_level_chain(bool has_group, fhirsync_export_level out[3]);

/* Whether a failed kick-off means "this level is not supported here" (fall back to the next
 * level): the server answered 400, 404, 405, 422 or 501 (or an OperationOutcome saying
 * not-supported) before giving a status URL. */
bool fs_sync_level_refused(fhirsync_code code, long http_status, const char *message,
                           bool kicked_off);

/* "group", "patient", "system". */
const char *fs_sync_level_name(fhirsync_export_level level);

/* The scope with system/Group.read added (eClinicalWorks wants it on Group export token
 * requests) unless already granted literally; caller frees. NULL on out of memory. */
char *fs_sync_scope_with_group(const char *scope);

/* The crawl watermark: start_epoch minus the margin, as a FHIR instant. */
void fs_sync_crawl_watermark(int64_t start_epoch, int margin_s, char *buf, size_t size);

/* The bulk watermark (the next _since): the earlier of the manifest's transactionTime and the
 * kick-off time on the server's clock minus margin_s seconds. A server that sets transactionTime
 * when the export finished left out what changed while it ran; a late commit or a clock that
 * disagrees is covered by the margin. Fetching a few resources twice is harmless (idempotent
 * upserts); missing one is not. Missing kick-off time: transactionTime minus the margin. False
 * when neither instant parses (the watermark does not move). */
bool fs_sync_bulk_watermark(const char *transaction_time, const char *kickoff_time, int margin_s,
                            char *buf, size_t size);

/* Whether instant `candidate` is later than `current` (NULL current: yes; an unparsable
 * candidate: no). */
bool fs_sync_instant_later(const char *candidate, const char *current);

/* Whether a crawl run must reconcile: a full sync, a first run, asked for, or `every` - 1 crawl
 * runs since the last reconciliation (runs_since_reconcile counts them; every < 0: never). */
bool fs_sync_reconcile_due(bool full, bool first_run, bool asked, int every,
                           int runs_since_reconcile);

/* A file-system-safe form of an endpoint name ([A-Za-z0-9._-], others as %XX); caller frees. */
char *fs_sync_safe_name(const char *endpoint);

/* The work folder of an endpoint: <work_dir>/<safe endpoint>, with work_dir defaulting to
 * "<store path>.work" (SQLite) or "fhirsync.work" (PostgreSQL, ":memory:"). Caller frees. */
char *fs_sync_work_dir(const char *store_location, bool postgresql, const char *work_dir,
                       const char *endpoint);

/* Parse the request.url of a DELETE entry ("Patient/123", "Patient/123/_history/2", an absolute
 * URL, with or without a query) into type and id. False when it names no resource. */
bool fs_sync_parse_delete_url(const char *url, char *type, size_t type_size, char *id,
                              size_t id_size);

/* Remove a folder and everything in it (no symlinks followed). False when something stayed. */
bool fs_sync_rmtree(const char *path);

/* ---- counts (counts.c) ----------------------------------------------------------------------- */

typedef struct fs_sync_count {
    char type[FS_SYNC_TYPE_MAX + 1];
    int64_t loaded, deleted, quarantined;
} fs_sync_count;

typedef struct fs_sync_counts {
    fs_sync_count *items;
    size_t n, cap;
    int64_t server_errors;
} fs_sync_counts;

void fs_sync_counts_init(fs_sync_counts *c);
void fs_sync_counts_clear(fs_sync_counts *c);
/* The entry of `type` (added, zeroed, kept sorted); NULL on out of memory or a bad type. */
fs_sync_count *fs_sync_counts_at(fs_sync_counts *c, const char *type);
/* Add every entry of `from` into `into`; false on out of memory. */
bool fs_sync_counts_add(fs_sync_counts *into, const fs_sync_counts *from);
/* Totals. */
void fs_sync_counts_totals(const fs_sync_counts *c, int64_t *loaded, int64_t *deleted,
                           int64_t *quarantined);
/* {"Type": loaded, ...} for the run's audit row (the store's documented shape); caller frees. */
char *fs_sync_counts_loaded_json(const fs_sync_counts *c);
/* {"Type": [loaded, deleted, quarantined], ..., "_server_errors": n} for the ledger, and back.
 * Parsing adds into `into`. */
char *fs_sync_counts_dump(const fs_sync_counts *c);
bool fs_sync_counts_parse(fs_sync_counts *into, const char *json, size_t len);

/* ---- loading files (load.c) ------------------------------------------------------------------ */

/* Where a line that the store refused goes: called with the line, its number and the reason.
 * Return false to stop (an I/O failure). */
typedef bool (*fs_sync_refused_fn)(void *userdata, const char *line, size_t len, int64_t line_no,
                                   const char *reason);

/* A file to load. */
typedef struct fs_sync_file {
    fhirsync_export_file_kind kind;
    const char *type;             /* the manifest entry's type */
    const char *name;             /* for messages and the quarantine's source */
    const char *source;           /* the URL it came from (quarantine source) */
    const char *transaction_time; /* deleted_at of deletions */
    int64_t run_id;
    bool append; /* outputs: the rows are expected to be new (FHIRSYNC_STORE_APPEND); cleared by
                    fs_sync_load_path when the store found stored ids and it merged instead */
} fs_sync_file;

/* A line sink that loads into the store: used for files on disk and for streams. */
typedef struct fs_sync_loader {
    fhirsync_store *store;
    const fs_sync_file *file;
    fs_sync_counts *counts;     /* what this file did */
    fs_sync_refused_fn refused; /* NULL: quarantine refused lines in the store at once */
    void *refused_userdata;
    const char *endpoint;
    bool check; /* lines no checker has seen (a stream, the workers' fetch.c): each goes through
                   the bulk writer's strict NDJSON checker first, and a bad one is quarantined
                   with its reason, as the writer's quarantine mode does */
    int64_t line_no;
    fhirsync_error *err; /* the failure that stopped the load */
    fhirsync_code rc;
} fs_sync_loader;

/* Handle one complete line (without its '\n'). False when the load must stop (rc/err set). */
bool fs_sync_load_line(fs_sync_loader *ld, const char *line, size_t len);

/* Split a chunk of NDJSON into lines (core/lines.h, the 64 MiB cap) and handle each with
 * fs_sync_load_line; a line over the cap is quarantined without its text, with an error naming
 * its number. False when the load must stop (rc/err set). fs_sync_load_end handles the last
 * line when it has no '\n'. */
bool fs_sync_load_chunk(fs_sync_loader *ld, fs_lines *lines, const char *data, size_t len);
bool fs_sync_load_end(fs_sync_loader *ld, fs_lines *lines);

/* Load a file on disk in one batch (FHIRSYNC_STORE_BULK for outputs, with FHIRSYNC_STORE_APPEND
 * when file->append): output lines are put, deleted Bundles delete, error OperationOutcomes are
 * counted by severity. The batch is committed on success and rolled back on failure. A batch the
 * store refuses with FHIRSYNC_E_CONFLICT (stored ids met by an append, a deadlock with another
 * loader) is loaded again, as merges, with `counts` started afresh (refused lines reach
 * `refused` again: the caller de-duplicates). FHIRSYNC_E_IO, FHIRSYNC_E_STORE, FHIRSYNC_E_NOMEM,
 * FHIRSYNC_E_CONFLICT after LOAD_ATTEMPTS tries. */
fhirsync_code fs_sync_load_path(fhirsync_store *store, const char *path, fs_sync_file *file,
                                const char *endpoint, fs_sync_counts *counts,
                                fs_sync_refused_fn refused, void *refused_userdata,
                                fhirsync_error *err);

/* ---- reconciliation (reconcile.c) ------------------------------------------------------------ */

/* Append the comma-separated `types` to `list` (a NUL-terminated fs_buf), each once. False on
 * out of memory. */
bool fs_sync_list_add(fs_buf *list, const char *types);

/* The share guard's percentage: options.max_delete_share, else the profile's
 * `max_delete_share`, else 50 (values outside 1..100 mean the default). */
int fs_sync_max_delete_share(const fhirsync_sync_options *opts, const fhirsync_endpoint *ep);

/* Every how many runs a full export reconciles on its own: options.reconcile_every, else the
 * profile's `reconcile_every`; -1 (never on its own) for the profile's 0 or a negative option. */
int fs_sync_reconcile_every(const fhirsync_sync_options *opts, const fhirsync_endpoint *ep);

/* What a complete full export reconciles (docs/sync.md, "Reconciliation"). Everything is
 * borrowed for the duration of the call. */
typedef struct fs_sync_reconcile_req {
    fhirsync_store *store; /* inside the run's final transaction */
    const char *endpoint;
    fhirsync_export_level level;  /* the level that ran */
    const char *requested;        /* the _type sent, comma-separated; NULL: every type */
    const char *exported;         /* the types of the export's output files (comma-separated;
                                     used when requested is NULL) */
    const fs_sync_counts *counts; /* this run's counts: a type with quarantined lines is kept */
    int64_t first_run;            /* the first run that stored this export's rows */
    int64_t run_id;               /* recorded on the deletions */
    const char *deleted_at;       /* the export's kick-off on the server's clock (else its
                                     transactionTime); NULL: nothing is reconciled (a warning) */
    int max_share;                /* percent (fs_sync_max_delete_share) */
    bool force;                   /* no share guard (--allow-mass-delete) */
    int incremental_runs;         /* incremental runs since the last full export, and ... */
    int64_t listed_deletions;     /* ... the deletions their deleted files listed */
    /* a warning for the run */
    void (*warn)(void *userdata, const char *message);
    /* `rows` rows of `type` were deleted; false: out of memory */
    bool (*deleted)(void *userdata, const char *type, int64_t rows);
    void *userdata;
} fs_sync_reconcile_req;

/* Reconcile every type of the request's scope: fs_store_reconcile_type per type (joining the
 * open batch), warnings and deletions through the callbacks. *reconciled: the rows deleted.
 * A type refused by the share guard is named in `why` ("; "-separated; the run ends partial).
 * FHIRSYNC_E_STORE, FHIRSYNC_E_NOMEM (the caller rolls the batch back). */
fhirsync_code fs_sync_reconcile(const fs_sync_reconcile_req *r, int64_t *reconciled, fs_buf *why,
                                fhirsync_error *err);

/* ---- the handle (sync.c) --------------------------------------------------------------------- */

struct fhirsync_sync {
    fhirsync_endpoint *ep;
    fhirsync_store *store;
    fhirsync_sync_options opts;
    char *work_dir_opt;
    char *lock_owner;
    char *name; /* the endpoint's name */
    fhirsync_sync_cb cb;
    void *cb_userdata;
    pthread_mutex_t lock; /* the callback, the counts and the stop flag */
    fhirsync_error err;
    bool stop; /* the callback asked to stop */
    /* the run */
    int64_t run_id;
    fhirsync_run_status status;
    const char *mode;  /* static */
    const char *level; /* static */
    char *since;
    char *transaction_time;
    char *watermark;
    bool resumed;
    int64_t requests;
    int64_t reconciled;               /* rows a reconciliation deleted */
    fhirsync_type_count *rows_before; /* the store's rows per type when the run started */
    size_t nrows_before;
    int64_t inserted;
    int64_t start_ms;
    double duration_s;
    fs_sync_counts counts;
    fhirsync_sync_type_stats *type_stats;
    fs_tally tally; /* the run thread's HTTP responses, 429s, bytes, tokens */
};

/* The workers' run of `endpoint` whose files are still being loaded (worker.c): its id in *run_id
 * (0: none) and its file items not done yet in *files (may be NULL). */
fhirsync_code fs_sync_worker_run_in_flight(fhirsync_store *store, const char *endpoint,
                                           int64_t *run_id, int64_t *files, fhirsync_error *err);
/* Emit an event (fills endpoint, totals, elapsed; serialised). False when the callback asked to
 * stop. */
bool fs_sync_emit(fhirsync_sync *s, fhirsync_sync_event *ev);
/* Emit a WARNING with a formatted message (and log it). */
void fs_sync_warn(fhirsync_sync *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Whether the run must stop (cancelled, or the callback asked). */
bool fs_sync_stopping(fhirsync_sync *s);
/* Add a file's counts to the run's (under the lock). False on out of memory. */
bool fs_sync_add_counts(fhirsync_sync *s, const fs_sync_counts *c);

/* The granted scope of a token for the endpoint (caller frees), or the requested one when the
 * token cannot be had (the sync then fails on its first request with the real error). */
fhirsync_code fs_sync_granted_scope(const fhirsync_endpoint *ep, char **out, fhirsync_error *err);
/* The types to sync: the `types` setting, else the US Core types the granted scope allows for
 * perm. Caller frees. */
fhirsync_code fs_sync_plan_types(const fhirsync_endpoint *ep, char perm, char **out,
                                 fhirsync_error *err);

/* Crawl: the types the server's CapabilityStatement lists that the planned (US Core) types leave
 * out, comma-separated, for the run's warning (caller frees); NULL when none, when the `types`
 * setting chose, or when the CapabilityStatement cannot be had. */
char *fs_sync_crawl_left_out(const fhirsync_endpoint *ep, const char *planned);

/* The _type of a bulk export: the `types` setting; else nothing (*out NULL: every type the export
 * offers) when the granted scopes read every type; else the types the scopes name, with
 * *left_out saying so for the run's warnings (caller frees both). A mirror holds what the server
 * gives: the CapabilityStatement is not consulted (servers list fewer types than they export). */
fhirsync_code fs_sync_plan_bulk_types(const fhirsync_endpoint *ep, char **out, char **left_out,
                                      fhirsync_error *err);

/* Bulk mode and crawl mode runs: called by fhirsync_sync_run() with the lock held and the run
 * started; they fill the handle's counts, transaction_time and watermark, and finish the run
 * themselves (the watermark moves with the final commit). */
fhirsync_code fs_sync_bulk_run(fhirsync_sync *s);
fhirsync_code fs_sync_crawl_run(fhirsync_sync *s);

/* The work folder of this handle's endpoint (caller frees). */
char *fs_sync_endpoint_work_dir(const fhirsync_sync *s);

/* Finish the run as failed with the handle's error message (best effort). */
void fs_sync_finish_failed(fhirsync_sync *s, const char *why);

/* ---- streaming fetch (fetch.c) --------------------------------------------------------------- */

struct fhirsync_auth;

/* Download `url` (a bulk output/deleted/error file) and hand each line to `ld`, inside the batch
 * the caller opened. The token is sent when `requires_token` and only to the FHIR server's
 * origin (redirects elsewhere drop it); a 401 renews it once. Network failures are returned
 * (the caller rolls back and retries later). */
fhirsync_code fs_sync_fetch_lines(const fhirsync_endpoint *ep, struct fhirsync_auth *auth,
                                  const char *url, bool requires_token, fs_sync_loader *ld,
                                  fhirsync_error *err);

#endif
