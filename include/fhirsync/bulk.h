/* fhirsync/bulk.h: the FHIR Bulk Data v2.0.0 `$export` client. One export handle runs one export
 * into one folder: kick-off (system, Patient or Group level, GET or POST), status polls, the
 * manifest, and parallel downloads of every output, deleted and error file, each line checked
 * while it streams to disk. The folder holds everything needed to continue after an interruption
 * (Ctrl-C, kill -9, reboot, network loss): run the same export again, or open the folder with
 * fhirsync_export_open(), and it resumes without downloading a finished file twice and without
 * duplicating a resource.
 *
 * The folder (created 0700, files 0600):
 *   state.json            the request, the status URL and the files finished so far; rewritten
 *                         atomically (temp file, fsync, rename, fsync of the folder) before
 *                         each next step
 *   manifest.json         the complete manifest (all pages merged), once received
 *   <Type>.<n>.ndjson     output files, numbered per type from 1 in manifest order
 *   deleted/<Type>.<n>.ndjson, error/<Type>.<n>.ndjson
 *   quarantine/NAME       lines of file NAME that failed the checks twice: line number, reason,
 *                         text (one JSON record a line)
 *   export-log.jsonl      the run's log: structured events (kick-off, progress, downloads,
 *                         retries, completion); not *.ndjson, so that data globs skip it (an
 *                         older folder's log.ndjson is renamed to it)
 *   .partial/             files being downloaded; renamed into place once every line was checked
 *
 * Events: the application receives an event for each step (see fhirsync_export_event), in
 * particular FHIRSYNC_EXPORT_EV_FILE_DONE once a file is complete, verified and renamed into
 * place, so that it can load the file while the others are still downloading.
 *
 * Thread safety: an export handle is used by one thread at a time; the callback is called from
 * the thread that runs fhirsync_export_run(). Several handles may run in parallel threads. */
#ifndef FHIRSYNC_BULK_H
#define FHIRSYNC_BULK_H

#include <stdbool.h>
#include <stdint.h>

#include "fhirsync/common.h"
#include "fhirsync/config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the request ---------------------------------------------------------------------------- */

typedef enum fhirsync_export_level {
    FHIRSYNC_EXPORT_SYSTEM = 0,  /* [base]/$export */
    FHIRSYNC_EXPORT_PATIENT = 1, /* [base]/Patient/$export */
    FHIRSYNC_EXPORT_GROUP = 2    /* [base]/Group/[id]/$export */
} fhirsync_export_level;

/* Bounds on the work one run does against a server, whatever it answers. Zero fields take the
 * defaults. Versioned (see common.h): fhirsync_export_limits_init() sets the version and zeroes
 * the rest; fhirsync_export_options_init() does it for the options' `limits`. */
#define FHIRSYNC_EXPORT_LIMITS_VERSION 1
typedef struct fhirsync_export_limits {
    unsigned int version;      /* FHIRSYNC_EXPORT_LIMITS_VERSION, set by the _init */
    int64_t deadline_s;        /* a run (kick-off, polls, manifest, downloads) stops with
                                  FHIRSYNC_E_TIMEOUT after this many seconds, leaving the
                                  folder and the job resumable; 0: 86400 (24 h); < 0: none */
    int64_t stall_bytes_per_s; /* a download slower than this ... */
    int64_t stall_s;           /* ... for this many seconds in a row is stopped and counts as
                                  a failed attempt of that file; 0: 1024 B/s for 60 s;
                                  stall_bytes_per_s < 0 turns the rule off */
    int64_t poll_floor_ms;     /* the least wait between two status polls, whatever the
                                  Retry-After says; 0: 1000 */
} fhirsync_export_limits;

/* Fill `limits` with the defaults (all zero) for the struct `version` the caller was built with
 * (FHIRSYNC_EXPORT_LIMITS_VERSION). FHIRSYNC_E_ARG for a version this library does not know
 * (the struct is then left alone) or a NULL `limits`. */
FHIRSYNC_API fhirsync_code fhirsync_export_limits_init(fhirsync_export_limits *limits,
                                                       unsigned int version);

/* What to export and how. Initialise with fhirsync_export_options_init(), then set what differs.
 * Every string and list is copied by fhirsync_export_new(); the struct may be reused afterwards.
 * A NULL string means "not sent" unless said otherwise. */
#define FHIRSYNC_EXPORT_OPTIONS_VERSION 1
typedef struct fhirsync_export_options {
    unsigned int version; /* FHIRSYNC_EXPORT_OPTIONS_VERSION, set by the _init */
    fhirsync_export_level level;
    const char *group_id;            /* Group level; NULL: the profile's `group_id` */
    const char *types;               /* _type, comma-separated; NULL: the profile's `types` */
    const char *since;               /* _since, a FHIR instant; NULL: the profile's `since` */
    const char *elements;            /* _elements, comma-separated */
    const char *const *type_filters; /* _typeFilter, one per entry (repeatable) */
    size_t type_filter_count;
    const char *const *patients; /* patient references ("Patient/123" or "123"): POST only */
    size_t patient_count;
    const char *include_associated_data; /* includeAssociatedData, comma-separated */
    const char *output_format;           /* _outputFormat; NULL: not sent (the server's ndjson) */
    const char *const *params;           /* custom parameters, "name=value" each */
    size_t param_count;
    bool post;                     /* POST a Parameters body instead of GET with a query */
    bool lenient;                  /* Prefer: handling=lenient */
    int parallel;                  /* concurrent downloads; 0: the profile's `parallel` (4) */
    int delete_job;                /* delete the job on the server after success: 1 yes, 0 no,
                                      -1 (default) the profile's `delete_job` (yes) */
    size_t max_line;               /* longest accepted NDJSON line in bytes; 0: 64 MiB */
    const char *out_dir;           /* the export folder (required by fhirsync_export_new) */
    fhirsync_export_limits limits; /* deadline, stall rule, poll pacing (zero: defaults) */
} fhirsync_export_options;

/* Fill `opts` with the defaults for the struct `version` the caller was built with
 * (FHIRSYNC_EXPORT_OPTIONS_VERSION): system level, GET, delete_job -1, `limits` initialised,
 * everything else unset. FHIRSYNC_E_ARG for a version this library does not know (the struct is
 * then left alone) or a NULL `opts`. */
FHIRSYNC_API fhirsync_code fhirsync_export_options_init(fhirsync_export_options *opts,
                                                        unsigned int version);

/* The export levels for a profile in the order `fhirsync sync` tries them, the one rule shared
 * by sync and the export command: Group (only when the profile sets `group_id`), then Patient,
 * then system. Fills out[] and returns how many (2 or 3); out[0] is the level to use when the
 * user names none. Thread-safe; `ep` may be NULL (no group). */
FHIRSYNC_API size_t fhirsync_export_level_chain(const fhirsync_endpoint *ep,
                                                fhirsync_export_level out[3]);

/* ---- files ---------------------------------------------------------------------------------- */

typedef enum fhirsync_export_file_kind {
    FHIRSYNC_EXPORT_OUTPUT = 0,  /* manifest `output`: resources of `type` */
    FHIRSYNC_EXPORT_DELETED = 1, /* manifest `deleted`: transaction Bundles of DELETE entries */
    FHIRSYNC_EXPORT_ERROR = 2    /* manifest `error`: OperationOutcomes */
} fhirsync_export_file_kind;

/* One file of the manifest. Borrowed from the export handle: valid until its free. */
typedef struct fhirsync_export_file {
    fhirsync_export_file_kind kind;
    const char *type;       /* the manifest entry's type ("Patient") */
    const char *url;        /* where it is downloaded from */
    const char *name;       /* path inside the folder: "Patient.1.ndjson",
                               "deleted/Patient.1.ndjson", "error/OperationOutcome.1.ndjson" */
    const char *path;       /* the folder joined with `name`: set once the file is done
                               (NULL before, so that a manifest of many files costs
                               little); in an event about the file it is always set,
                               valid for the callback */
    int64_t manifest_count; /* the manifest's `count`, -1 when it gave none */
    int64_t count;          /* resources (lines) kept in the file */
    int64_t quarantined;    /* lines that failed the checks (in quarantine/NAME) */
    uint64_t bytes;         /* size of the file on disk */
    bool done;              /* complete, verified and in place */
    bool from_previous_run; /* finished by an earlier run of this export (resume) */
} fhirsync_export_file;

/* ---- events --------------------------------------------------------------------------------- */

typedef enum fhirsync_export_event_kind {
    FHIRSYNC_EXPORT_EV_KICKOFF = 0,       /* the server accepted the request: status_url set */
    FHIRSYNC_EXPORT_EV_PROGRESS = 1,      /* a status poll said "in progress": message is the
                                             X-Progress text (NULL when none), delay_ms the wait;
                                             reported when the text changes, otherwise at most
                                             every 30 s, not per poll */
    FHIRSYNC_EXPORT_EV_MANIFEST = 2,      /* the manifest is complete (all pages): transaction_time
                                             set, files_total known */
    FHIRSYNC_EXPORT_EV_FILE_STARTED = 3,  /* a download (or a retry of it) started: file */
    FHIRSYNC_EXPORT_EV_FILE_DONE = 4,     /* file complete, verified and renamed into place: file
                                             (from_previous_run on resume for files already done) */
    FHIRSYNC_EXPORT_EV_RETRY = 5,         /* a request failed and will be retried: message (why),
                                             delay_ms, file (NULL for kick-off/status/manifest) */
    FHIRSYNC_EXPORT_EV_TOKEN_RENEWED = 6, /* the access token was renewed (expired, 401) */
    FHIRSYNC_EXPORT_EV_WARNING = 7,       /* something odd that did not stop the export: message,
                                             file when it concerns one (quarantined lines, empty
                                             lines skipped, a BOM, a count mismatch) */
    FHIRSYNC_EXPORT_EV_BYTES = 8,         /* downloads made progress (at most ~4 times a second):
                                             the totals only, for progress displays */
    FHIRSYNC_EXPORT_EV_DONE = 9           /* every file is done; code says how it ended */
} fhirsync_export_event_kind;

/* One event. Everything is borrowed for the duration of the callback. */
typedef struct fhirsync_export_event {
    fhirsync_export_event_kind kind;
    const char *message;              /* see the kinds; already redacted; may be NULL */
    const fhirsync_export_file *file; /* the file concerned, or NULL */
    int64_t delay_ms;                 /* RETRY and PROGRESS: the wait before the next attempt */
    fhirsync_code code;               /* DONE: FHIRSYNC_OK or FHIRSYNC_E_PARTIAL */
    const char *status_url;           /* NULL before the kick-off */
    const char *transaction_time;     /* the manifest's, NULL before it arrived */
    /* totals so far */
    size_t files_done;
    size_t files_total; /* 0 before the manifest */
    int64_t resources;  /* lines kept in finished files */
    uint64_t bytes;     /* bytes received (finished and partial files) */
    double elapsed_s;   /* since this run started */
} fhirsync_export_event;

/* The event callback. Return 0 to go on; any other value stops the export at once as if
 * fhirsync_cancel() had been called (FHIRSYNC_E_CANCELLED; the folder stays resumable). A slow
 * callback slows the downloads (they share the callback's thread): hand heavy work (loading a
 * file into a database) to another thread, or accept the pause. */
typedef int (*fhirsync_export_cb)(const fhirsync_export_event *event, void *userdata);

/* ---- the export handle ---------------------------------------------------------------------- */

typedef struct fhirsync_export fhirsync_export;

/* A new export of `ep` (copied) with `opts` into opts->out_dir. Nothing is sent yet.
 * If the folder already holds an export (state.json) of the same request against the same
 * server, the handle resumes it; a different request, or a non-empty folder that holds no
 * export, is refused with FHIRSYNC_E_ARG and a message saying so. Errors: FHIRSYNC_E_ARG (bad
 * options: a struct not set up by fhirsync_export_options_init(), group level without a group id,
 * `patient` without POST, a malformed _since...), FHIRSYNC_E_CONFIG / FHIRSYNC_E_KEY (as
 * fhirsync_client_new), FHIRSYNC_E_IO. */
FHIRSYNC_API fhirsync_code fhirsync_export_new(const fhirsync_endpoint *ep,
                                               const fhirsync_export_options *opts,
                                               fhirsync_export **out, fhirsync_error *err);

/* Open an existing export folder to resume it with the request recorded in its state.json.
 * `parallel` (0: the profile's) and `delete_job` (-1: the profile's) may differ from the first
 * run. FHIRSYNC_E_ARG when the folder holds no export or one of another server (base URL);
 * FHIRSYNC_E_JSON when state.json is damaged. */
FHIRSYNC_API fhirsync_code fhirsync_export_open(const fhirsync_endpoint *ep, const char *dir,
                                                int parallel, int delete_job, fhirsync_export **out,
                                                fhirsync_error *err);

FHIRSYNC_API void fhirsync_export_free(fhirsync_export *ex);

/* Change the limits of a handle (for one opened with fhirsync_export_open(), whose options are
 * those of the first run); NULL restores the defaults. Takes effect at the next run.
 * FHIRSYNC_E_ARG (recorded in the handle, limits unchanged) for a struct not set up by
 * fhirsync_export_limits_init(). */
FHIRSYNC_API fhirsync_code fhirsync_export_set_limits(fhirsync_export *ex,
                                                      const fhirsync_export_limits *limits);

/* Install the event callback (NULL: none). */
FHIRSYNC_API void fhirsync_export_set_callback(fhirsync_export *ex, fhirsync_export_cb cb,
                                               void *userdata);

/* Run the export to its end: kick-off (unless resumed past it), polls, manifest, downloads,
 * then DELETE of the job when configured. Returns FHIRSYNC_OK when every file is complete and
 * every line passed the checks; FHIRSYNC_E_PARTIAL when everything was downloaded but some lines
 * were quarantined or a count did not match (see quarantine/ and the WARNING events);
 * FHIRSYNC_E_CANCELLED on fhirsync_cancel() or a callback's request (the folder is resumable);
 * FHIRSYNC_E_TIMEOUT when the run's deadline (fhirsync_export_limits) passed (resumable, the job
 * kept); when some files could not be downloaded within their retry budget (fhirsync_export_limits
 * and the profile's max_retries) while the others were, the error of the first such file, with a
 * message naming it and counting them (resumable); otherwise the error that stopped it
 * (FHIRSYNC_E_RATE_LIMITED on a 429 at kick-off, with what the server said,
 * FHIRSYNC_E_PROTOCOL for a 202 without Content-Location, a status URL on another origin, a
 * malformed manifest or response headers over their caps, FHIRSYNC_E_SERVER with the
 * OperationOutcome's diagnostics, network and token errors after the retries...), with
 * fhirsync_export_errmsg() set. Running a handle again after a failure resumes from where it
 * stopped. */
FHIRSYNC_API fhirsync_code fhirsync_export_run(fhirsync_export *ex);

/* The outcome of the handle's last fallible call (fhirsync_export_run, _delete_job,
 * _set_limits), as described in common.h: its code (FHIRSYNC_OK after success; FHIRSYNC_E_PARTIAL
 * after a partial run) and its message ("" after success). The message is borrowed until the next
 * call on the handle. */
FHIRSYNC_API fhirsync_code fhirsync_export_errcode(const fhirsync_export *ex);
FHIRSYNC_API const char *fhirsync_export_errmsg(const fhirsync_export *ex);

/* DELETE the job on the server (what a successful run does unless delete_job is off): for an
 * application that kept the job until it had loaded every file. FHIRSYNC_OK also when the job
 * was already deleted; FHIRSYNC_E_ARG before a kick-off. */
FHIRSYNC_API fhirsync_code fhirsync_export_delete_job(fhirsync_export *ex);

/* ---- results (valid after the manifest arrived; borrowed until the free) -------------------- */

/* The export folder, as given. */
FHIRSYNC_API const char *fhirsync_export_dir(const fhirsync_export *ex);
/* The status URL, NULL before the kick-off. */
FHIRSYNC_API const char *fhirsync_export_status_url(const fhirsync_export *ex);
/* The manifest's transactionTime (the next incremental export's _since once every file of this
 * one is stored), NULL before the manifest. */
FHIRSYNC_API const char *fhirsync_export_transaction_time(const fhirsync_export *ex);
/* When the server accepted the kick-off, as a FHIR instant on the server's clock (its Date
 * header; the local clock when it sent none), NULL before the kick-off. A server that sets the
 * manifest's transactionTime when the export finished, not when it started, leaves out changes
 * made meanwhile: an incremental client's next _since must not be later than this. */
FHIRSYNC_API const char *fhirsync_export_kickoff_time(const fhirsync_export *ex);

/* Whether the job was deleted on the server (by a run, or fhirsync_export_delete_job()). */
FHIRSYNC_API bool fhirsync_export_job_deleted(const fhirsync_export *ex);
/* Whether the manifest said the files need the access token. */
FHIRSYNC_API bool fhirsync_export_requires_token(const fhirsync_export *ex);

/* Every file of the manifest in manifest order (output, then deleted, then error files). */
FHIRSYNC_API size_t fhirsync_export_file_count(const fhirsync_export *ex);
FHIRSYNC_API const fhirsync_export_file *fhirsync_export_file_at(const fhirsync_export *ex,
                                                                 size_t i);

/* Totals of the export (all runs of it). Versioned (see common.h), since it is the caller's
 * memory that the library fills and it grows with new counters: set it up with
 * fhirsync_export_stats_init() once, then call fhirsync_export_get_stats() as often as needed. */
#define FHIRSYNC_EXPORT_STATS_VERSION 1
typedef struct fhirsync_export_stats {
    unsigned int version; /* FHIRSYNC_EXPORT_STATS_VERSION, set by the _init */
    size_t files;         /* in the manifest */
    size_t files_done;
    int64_t resources;       /* lines kept in output files */
    int64_t deleted;         /* lines kept in deleted files */
    int64_t errors;          /* OperationOutcomes in error files */
    int64_t quarantined;     /* lines quarantined */
    uint64_t bytes;          /* bytes of the finished files */
    unsigned retries;        /* requests retried during this run */
    unsigned token_renewals; /* during this run */
    double duration_s;       /* of this run */
} fhirsync_export_stats;

/* Zero `stats` and set its version (FHIRSYNC_EXPORT_STATS_VERSION); FHIRSYNC_E_ARG for a
 * version this library does not know or a NULL `stats`. */
FHIRSYNC_API fhirsync_code fhirsync_export_stats_init(fhirsync_export_stats *stats,
                                                      unsigned int version);
/* Fill `out` (its version kept, every counter set; all zero for a NULL handle).
 * FHIRSYNC_E_ARG, without touching it, for a struct not set up by fhirsync_export_stats_init()
 * (not recorded in the handle: the call only reads it). */
FHIRSYNC_API fhirsync_code fhirsync_export_get_stats(const fhirsync_export *ex,
                                                     fhirsync_export_stats *out);

/* "output", "deleted", "error". */
FHIRSYNC_API const char *fhirsync_export_file_kind_name(fhirsync_export_file_kind kind);
/* "kick-off", "progress", "manifest", "file-started", "file-done", "retry", "token-renewed",
 * "warning", "bytes", "done". */
FHIRSYNC_API const char *fhirsync_export_event_name(fhirsync_export_event_kind kind);

#ifdef __cplusplus
}
#endif
#endif
