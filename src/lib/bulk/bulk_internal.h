/* bulk/bulk_internal.h: the Bulk Data export client's internals, shared between its files and
 * with the unit tests and fuzz targets:
 *
 *   ndjson.c    the streaming NDJSON line checker (a resumable JSON validator: constant memory,
 *               whatever the line length)
 *   manifest.c  the completion manifest: a strict one-pass JSON reader (no document tree), URL
 *               resolution, merging pages, manifest.json
 *   state.c     state.json (the durable record of an export) and small file helpers
 *   request.c   the kick-off request: query string or Parameters body, and its canonical form
 *   export.c    the export handle: kick-off, polls, manifest, events, the public API
 *   download.c  parallel downloads on the multi engine (http/multi.h), retries, recording files
 *   writer.c    the file side of the downloads on a thread of its own: line checks, the partial
 *               files, fsync and rename into place, quarantine
 *
 * Internal: the prefix is fs_bulk_ / fs_ndjson_; nothing here is exported. */
#ifndef FS_BULK_INTERNAL_H
#define FS_BULK_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "fhirsync/bulk.h"
#include "http/policy.h"
#include "json/json.h"

/* Defaults and caps. */
#define FS_BULK_DEFAULT_MAX_LINE ((size_t)64 * 1024 * 1024)
#define FS_BULK_MANIFEST_MAX_BODY ((size_t)32 * 1024 * 1024)
#define FS_BULK_MAX_MANIFEST_PAGES 1000
#define FS_BULK_MAX_TYPE_LEN 64
/* The run's log: a name no data glob (*.ndjson) picks up; the old name is migrated on open. */
#define FS_BULK_LOG_FILE "export-log.jsonl"
#define FS_BULK_OLD_LOG_FILE "log.ndjson"
/* Limits (fhirsync_export_limits) when the caller leaves them at zero. */
#define FS_BULK_DEFAULT_DEADLINE_S 86400
#define FS_BULK_DEFAULT_STALL_BYTES 1024
#define FS_BULK_DEFAULT_STALL_S 60
#define FS_BULK_DEFAULT_POLL_FLOOR_MS 1000
/* Progress (X-Progress) is reported when its text changes, otherwise at most this often. */
#define FS_BULK_PROGRESS_EVERY_MS 30000
/* A poll backoff without Retry-After grows up to this (or retry_cap when lower). */
#define FS_BULK_POLL_BACKOFF_CAP_S 120

/* ---- the NDJSON line checker (ndjson.c) ----------------------------------------------------- */

#define FS_NDJSON_MAX_DEPTH 1024
/* Room for a verdict's reason, NUL included. */
#define FS_NDJSON_REASON_MAX 200

typedef enum fs_ndjson_event {
    FS_NDJSON_MORE = 0,    /* every byte given was consumed; the line goes on */
    FS_NDJSON_LINE = 1,    /* a line ended (its '\n' is the last byte consumed) */
    FS_NDJSON_TOO_LONG = 2 /* the line just passed max_line bytes (reported once; the
                              line then goes on until its '\n', reported as a LINE) */
} fs_ndjson_event;

typedef enum fs_ndjson_verdict {
    FS_NDJSON_OK = 0,    /* one JSON object with the expected resourceType */
    FS_NDJSON_EMPTY = 1, /* an empty (or whitespace-only) line: skipped, reported */
    FS_NDJSON_BAD = 2    /* anything else: `reason` says what */
} fs_ndjson_verdict;

typedef struct fs_ndjson_checker {
    /* settings */
    char expect_type[FS_BULK_MAX_TYPE_LEN + 1]; /* "" accepts any resourceType */
    uint64_t max_line;
    /* position */
    uint64_t line_no;     /* 1-based number of the line being read */
    uint64_t line_len;    /* bytes of it so far (without the '\n') */
    uint64_t file_offset; /* bytes consumed since the start of the file */
    bool bom;             /* the file started with a UTF-8 byte order mark */
    unsigned bom_seen;    /* bytes of a possible BOM matched so far */
    /* the verdict of the line that just ended (after FS_NDJSON_LINE or fs_ndjson_finish) */
    uint64_t verdict_line;   /* its number */
    uint64_t verdict_offset; /* file offset of its first byte */
    uint64_t verdict_len;    /* its length without the '\n' */
    uint64_t line_start;     /* file offset of the current line's first byte */
    uint64_t at;             /* offset in the line of the byte being examined */
    fs_ndjson_verdict verdict;
    char reason[FS_NDJSON_REASON_MAX];
    char resource_type[FS_BULK_MAX_TYPE_LEN + 1];
    /* scanner state (ndjson.c) */
    uint8_t state, after_str, lit_left, u_left, u8_need, u8_lo, u8_hi;
    const char *lit;
    uint32_t u_value, u_high;
    bool too_long, failed;
    unsigned depth;
    uint8_t stack[FS_NDJSON_MAX_DEPTH / 8];
    /* resourceType capture at depth 1 */
    uint8_t key_len, rt_len;
    char key[16];
    bool key_overflow, in_key, value_is_rt, capturing_rt, rt_seen, rt_bad;
} fs_ndjson_checker;

/* Start checking a file: `expect_type` (may be NULL or "") is the resourceType every line must
 * have; max_line 0 means FS_BULK_DEFAULT_MAX_LINE. */
void fs_ndjson_init(fs_ndjson_checker *ck, const char *expect_type, uint64_t max_line);
/* Forget the current file (same settings): for a download restarted from scratch. */
void fs_ndjson_reset(fs_ndjson_checker *ck);

/* Consume bytes of the file, stopping after the first line end (or when the line passes the
 * cap): *used receives how many bytes were consumed (at least 1 when len > 0). After
 * FS_NDJSON_LINE the verdict_* fields, reason and resource_type describe the line that ended;
 * line_no is then already the next line's number. Constant memory. */
fs_ndjson_event fs_ndjson_feed(fs_ndjson_checker *ck, const char *data, size_t len, size_t *used);

/* The end of the file: true when an unterminated last line remains, whose verdict is then set
 * (OK when it is a complete object: a last line without '\n' is accepted; BAD "truncated last
 * line" otherwise). False when the file ended with a '\n' (or was empty). */
bool fs_ndjson_finish(fs_ndjson_checker *ck);

/* Whole-buffer helper for tests and the fuzz target: check one line (without its '\n'). */
fs_ndjson_verdict fs_ndjson_check_line(const char *line, size_t len, const char *expect_type,
                                       char *reason, size_t reason_size);

/* ---- the manifest (manifest.c) -------------------------------------------------------------- */

/* A map from borrowed strings to numbers (open addressing; state.c): lookups in constant time,
 * so that manifests and states of many files cost linear time. */
typedef struct fs_bulk_map_slot {
    const char *key; /* borrowed: must outlive the map's use of it */
    size_t value;
} fs_bulk_map_slot;

typedef struct fs_bulk_map {
    fs_bulk_map_slot *slots;
    size_t cap, count;
} fs_bulk_map;

/* The value of `key`, NULL when absent (writable: the map's own slot). */
size_t *fs_bulk_map_get(const fs_bulk_map *m, const char *key);
/* Set `key` (borrowed) to `value`; false on out of memory. */
bool fs_bulk_map_put(fs_bulk_map *m, const char *key, size_t value);
void fs_bulk_map_clear(fs_bulk_map *m);

typedef struct fs_bulk_entry {
    fhirsync_export_file_kind kind;
    const char *type; /* the manifest's one copy of the name (m->types): borrowed */
    char *url;        /* absolute (relative URLs resolved against the status URL) */
    char *extra;      /* the entry's other members as written ("extension":{...}),
                         NULL when none: kept for manifest.json */
    int64_t count;    /* -1 when absent */
} fs_bulk_entry;

/* A manifest as read page by page: the entries and what manifest.json needs, never a document
 * tree (a manifest of 160,000 entries costs about 150 bytes an entry). */
typedef struct fs_bulk_manifest {
    char *transaction_time;
    char *request;
    bool requires_token;
    bool requires_token_missing; /* the manifest had no requiresAccessToken: assumed true */
    bool started;                /* a first page was read */
    fs_bulk_entry *entries;      /* each page's output, then deleted, then error entries */
    size_t count;
    size_t cap;
    char *next;          /* link[relation=next].url (absolute), NULL on the last page */
    char *header;        /* the first page's other members, raw JSON ("k": v,\n  ...),
                            link, output, deleted and error left out; NULL when none */
    bool member_seen[3]; /* some page had output / deleted / error (by kind) */
    char **types;        /* each type name once; entries and files borrow them */
    size_t ntypes, types_cap;
    fs_bulk_map type_index; /* name -> index in types */
} fs_bulk_manifest;

void fs_bulk_manifest_init(fs_bulk_manifest *m);
void fs_bulk_manifest_clear(fs_bulk_manifest *m);
/* Free the entries and the raw members, keeping the header (transaction time, request,
 * requiresAccessToken) and the type names: once the files are built from it (they borrow the
 * names) and manifest.json is saved. */
void fs_bulk_manifest_drop_entries(fs_bulk_manifest *m);

/* Parse one manifest page and append its entries to `m` (first page: m empty; later pages:
 * entries appended, transactionTime must agree). `base_url` resolves relative URLs (the status
 * URL or the page's URL). The page is read in one pass by a strict JSON reader (no document
 * tree): grammar, UTF-8, escapes, no \u0000, nesting up to 1024 levels inside a member, no
 * duplicate member names in the manifest object, its entries and its links; a UTF-8 byte order
 * mark is ignored. FHIRSYNC_E_PROTOCOL with a message naming what is missing or wrong (not JSON,
 * with the line and column of the fault; an HTML page; no transactionTime; output not an array;
 * an entry without type or url; a type that is not a resource type name; a count that is not a
 * non-negative integer; a URL that is not http(s)); a fault of the JSON text wins over a missing
 * or wrong member. FHIRSYNC_E_NOMEM. On failure m keeps the entries of earlier pages. */
fhirsync_code fs_bulk_manifest_parse(fs_bulk_manifest *m, const char *body, size_t len,
                                     const char *base_url, fhirsync_error *err);

/* The merged manifest (every page's entries, link left out) as JSON text for manifest.json: the
 * first page's other members as written, then output, deleted and error (those some page had),
 * each entry's type, absolute url, count and other members. Caller frees; NULL on out of
 * memory. It parses back (fs_bulk_manifest_parse) to the same entries. */
char *fs_bulk_manifest_dump(const fs_bulk_manifest *m);

/* Test seams for the reader (unit tests, fuzz target): whether `data` is one JSON value by the
 * manifest reader's rules (why: "line L, column C: what"); and how an entry's URL is resolved
 * against `base` (the folder cache's fast path or libcurl; *out is the caller's). */
bool fs_bulk_json_check(const char *data, size_t len, char *why, size_t why_size);
bool fs_bulk_manifest_resolve(const char *base, const char *ref, char **out);

/* Whether a text is a FHIR resource type name: [A-Z][A-Za-z0-9]{0,63}. */
bool fs_bulk_type_name_ok(const char *type);

/* ---- state.json and files (state.c) --------------------------------------------------------- */

#define FS_BULK_STATE_FILE "state.json"

/* Write `len` bytes to dir/name atomically: dir/.name.tmp (0600), fsync, rename, fsync dir. */
fhirsync_code fs_bulk_write_atomic(const char *dir, const char *name, const char *data, size_t len,
                                   fhirsync_error *err);
/* fsync a directory. */
bool fs_bulk_fsync_dir(const char *dir);
/* mkdir -p with mode 0700 (existing folders are kept as they are). */
fhirsync_code fs_bulk_mkdirs(const char *path, fhirsync_error *err);
/* Read a whole small file (capped at `max` bytes) into *out (caller frees, NUL-terminated). */
fhirsync_code fs_bulk_read_file(const char *path, size_t max, char **out, size_t *len,
                                fhirsync_error *err);

/* One finished file as state.json records it. */
typedef struct fs_bulk_done {
    char *name;
    int64_t count, quarantined;
    uint64_t bytes;
} fs_bulk_done;

/* What state.json holds. */
typedef struct fs_bulk_state {
    int version;
    char *base_url;
    json_t *request;  /* the canonical request (request.c), owned */
    char *status_url; /* NULL before the kick-off */
    char *kickoff_time;
    char *transaction_time; /* NULL before the manifest */
    bool manifest_saved;
    bool job_deleted;
    bool complete; /* every file done (DONE reported) */
    fs_bulk_done *done;
    size_t done_count, done_cap;
    fs_bulk_map done_index; /* name -> index in done */
} fs_bulk_state;

void fs_bulk_state_init(fs_bulk_state *st);
void fs_bulk_state_clear(fs_bulk_state *st);
/* Serialise (caller frees) / parse. Parsing is strict: a damaged file is FHIRSYNC_E_JSON naming
 * the member. */
char *fs_bulk_state_dump(const fs_bulk_state *st);
fhirsync_code fs_bulk_state_parse(const char *text, size_t len, fs_bulk_state *st,
                                  fhirsync_error *err);
/* Save atomically as dir/state.json. */
fhirsync_code fs_bulk_state_save(const fs_bulk_state *st, const char *dir, fhirsync_error *err);
/* Load dir/state.json: FHIRSYNC_E_NOT_FOUND when there is none. */
fhirsync_code fs_bulk_state_load(const char *dir, fs_bulk_state *st, fhirsync_error *err);
/* Record a finished file (copied); false on out of memory. A name already there is updated. */
bool fs_bulk_state_add_done(fs_bulk_state *st, const char *name, int64_t count, int64_t quarantined,
                            uint64_t bytes);
const fs_bulk_done *fs_bulk_state_find_done(const fs_bulk_state *st, const char *name);

/* ---- the kick-off request (request.c) ------------------------------------------------------- */

/* The canonical request as recorded in state.json (and compared on resume): {"level", "group",
 * "method", "params": [[name, value]...] in a fixed order, "lenient"}. New reference, or NULL
 * with err filled (FHIRSYNC_E_ARG: bad options). */
json_t *fs_bulk_request_build(const fhirsync_export_options *opts, const fhirsync_endpoint *ep,
                              fhirsync_error *err);
/* The kick-off target relative to the base ("$export", "Patient/$export",
 * "Group/ID/$export") plus "?query" for GET; the caller's. */
char *fs_bulk_request_target(const json_t *request);
/* The POST body: a Parameters resource (caller frees). */
char *fs_bulk_request_parameters(const json_t *request);
/* Whether the request uses POST / asks for lenient handling. */
bool fs_bulk_request_post(const json_t *request);
/* The value of the request's parameter `name` (the first), NULL when not sent. Borrowed. */
const char *fs_bulk_request_param(const json_t *request, const char *name);
bool fs_bulk_request_lenient(const json_t *request);

/* ---- Retry-After for status polls (export.c) ------------------------------------------------ */

/* The wait before status poll number `attempt` (0-based) in ms: the Retry-After header (any
 * form fs_http_retry_after_parse reads, against `now`) when present and valid, capped by cap_s;
 * otherwise exponential backoff from 1 s (with jitter) up to FS_BULK_POLL_BACKOFF_CAP_S (or cap_s
 * when lower). Never below floor_ms (0: FS_BULK_DEFAULT_POLL_FLOOR_MS). */
int64_t fs_bulk_poll_delay_ms(const char *retry_after, int64_t now, unsigned attempt, int64_t cap_s,
                              int64_t floor_ms);

/* ---- the export handle (export.c, download.c) ----------------------------------------------- */

struct fhirsync_client;

/* What the writer made of a file whose transfer ended (writer.c). */
typedef enum fs_bulk_outcome {
    FS_BULK_NOT_FINISHED = 0, /* not a whole file (the transfer stopped or failed), or it
                                 was stopped early (abort_* say why) */
    FS_BULK_FINISHED = 1,     /* checked, fsync'ed and in place: record it (result_*) */
    FS_BULK_RETRY_STRICT = 2, /* the strict attempt failed its checks at the end (bad lines,
                                 a truncated last line or a count mismatch): again */
    FS_BULK_FAILED = 3        /* a local error finishing it: x->io_err */
} fs_bulk_outcome;

struct fs_bulk_item;

/* The retry budget of one file. Only getting past the furthest byte the file ever reached counts
 * as progress: a server that ignores Range and cuts the file at the same place, or that sends a
 * byte now and then, cannot make "retry 1 of 5" come back for ever. */
typedef struct fs_bulk_budget {
    uint64_t furthest; /* the furthest offset of the server's file ever received */
    unsigned failures; /* failed attempts since it last moved */
} fs_bulk_budget;

/* A failed attempt that reached offset `reached` of the file: true (and the failure counted)
 * when another attempt is allowed with `max_retries`; false when the budget is spent. An attempt
 * that got further than ever before resets the budget first, unless it was `stalled` (progress
 * below the stall rule's speed does not buy more attempts). */
bool fs_bulk_budget_fail(fs_bulk_budget *b, uint64_t reached, bool stalled, unsigned max_retries);

/* What a file needs only while it is being downloaded: allocated at its first attempt in this
 * process (fs_bulk_partial_open), freed once the file is done (fs_bulk_scratch_free), so that a
 * manifest of many files costs little memory per file (fs_bulk_file keeps what every file needs:
 * its public view and where it stands). Two threads use it (see writer.c): the export's thread
 * (transfers, retries, events) and the writer (checks, the partial file). The fields marked [w]
 * belong to the writer from the first bytes of a transfer until the file settles
 * (fs_bulk_writer_settled), and to the export's thread otherwise; `stop` is the only field both
 * use at any time. */
typedef struct fs_bulk_scratch {
    char *partial_path; /* .partial/[deleted-|error-]Type.N.ndjson */
    /* download state (the export's thread) */
    bool quarantine_mode;       /* the strict attempt failed its checks: keep going, cut the
                                   bad lines out at the end */
    fs_bulk_budget budget;      /* failed attempts since the file last got further */
    bool stalled;               /* this attempt ended by the stall rule */
    unsigned check_failures;    /* attempts that failed the line checks */
    fs_http_renewal renewal;    /* the one token renewal after a 401, per attempt */
    int64_t not_before_ms;      /* backoff: do not start before this monotonic time */
    uint64_t range_from;        /* the offset asked for in this attempt */
    uint64_t received;          /* bytes received in this attempt */
    unsigned token_gen;         /* generation of the token this attempt carried */
    bool restart;               /* the answer ignored the Range: start the file over */
    bool html;                  /* the answer is an HTML page */
    struct fs_bulk_item *block; /* the block being filled for the writer */
    atomic_bool stop;           /* set by the writer: end this transfer (abort_* say why) */
    struct fs_bulk_file *settled_next;
    /* the partial file and its checks [w] */
    fs_ndjson_checker ck;
    char first_bad_reason[200];
    fhirsync_error io_err;
    int fd;                   /* the partial file, -1 when closed */
    uint64_t offset;          /* bytes of the server's file in the partial file */
    uint64_t writeback_from;  /* where the next early write-back starts */
    int64_t good, bad, empty; /* lines seen so far in the partial file */
    uint64_t first_bad_line;
    bool abort_check;        /* a line failed (strict attempt): the transfer stops */
    bool abort_too_long;     /* a line passed the cap: the export stops */
    bool abort_io;           /* a local write failed: the export stops (io_err) */
    fs_bulk_outcome outcome; /* of the last transfer, once settled */
    bool bom;                /* it started with a byte order mark (removed) */
    bool clean;              /* nothing to drop: renamed into place as it is */
    int64_t result_count, result_quarantined;
    uint64_t result_bytes;
} fs_bulk_scratch;

/* One file of the export: what every file of the manifest needs, from the manifest on (the rest
 * is in its scratch, x, while it downloads). [w] as in fs_bulk_scratch. */
typedef struct fs_bulk_file {
    fhirsync_export_file pub; /* the public view (strings point at the members below) */
    const char *type;         /* the manifest's name (ex->man.types): borrowed */
    char *url, *name;         /* name: "[deleted/|error/]Type.N.ndjson" */
    char *path;               /* ex->dir/name: NULL until done (fs_bulk_file_path) */
    size_t index;
    fs_bulk_scratch *x; /* NULL before the first attempt and once done */
    uint64_t lines;     /* lines of the whole file (good + bad), once finished [w] */
    bool active;        /* a transfer is running */
    bool settling;      /* its transfer ended; the writer has not settled it yet */
    bool recorded;      /* finished and in ex->st; FILE_DONE once state.json is saved */
    bool failed;        /* the budget ran out: given up in this run (fail_why) */
    bool mismatch;      /* lines differ from the manifest's count [w] */
} fs_bulk_file;

struct fhirsync_export {
    fhirsync_endpoint *ep;
    struct fhirsync_client *client;
    char *base_url;
    char *dir;
    char *partial_dir;
    int lock_fd;
    int log_fd;
    json_t *request;
    fs_bulk_state st;
    fs_bulk_manifest man;
    bool manifest_loaded;
    fs_bulk_file *files;
    size_t nfiles;
    int parallel;
    bool delete_job;
    uint64_t max_line;
    long max_retries, retry_cap, rate_limit, timeout_s, connect_timeout_s;
    fhirsync_export_cb cb;
    void *cb_userdata;
    bool cb_stop; /* the callback asked to stop */
    fhirsync_error err;
    /* this run */
    int64_t run_start_ms;
    int64_t last_bytes_event_ms;
    unsigned retries, renewals;
    uint64_t bytes_received; /* this run, all files */
    bool partial_result;
    fhirsync_export_limits limits; /* as set (zero fields: the defaults) */
    int64_t deadline_ms;           /* this run stops at this monotonic time; 0: no deadline */
    unsigned polls;                /* status polls this run */
    char *last_progress;           /* the X-Progress text last reported */
    int64_t last_progress_ms;      /* when a PROGRESS event was last reported; 0: never */
    size_t files_done;             /* files with pub.done (fs_bulk_file_mark_done) */
    int64_t resources_done;        /* lines kept in the output files among them */
    size_t files_failed;           /* files whose retry budget ran out in this run */
    /* the access token for downloads */
    char *token; /* secret */
    unsigned token_gen;
};

/* Emit an event (fills the totals) and append it to the run's log. Returns false when the
 * callback asked to stop. */
bool fs_bulk_emit(fhirsync_export *ex, fhirsync_export_event_kind kind, const fs_bulk_file *file,
                  const char *message, int64_t delay_ms, fhirsync_code code);
/* Append a structured record to the run's log, FS_BULK_LOG_FILE (takes the reference). */
void fs_bulk_log_record(fhirsync_export *ex, json_t *record);
/* Mark a file done (keeps the totals of events in step). */
void fs_bulk_file_mark_done(fhirsync_export *ex, fs_bulk_file *f);
/* Get the access token for downloads (renewing it when `force` or when it is about to expire);
 * bumps token_gen and reports TOKEN_RENEWED when it changed. */
fhirsync_code fs_bulk_token(fhirsync_export *ex, bool force, fhirsync_error *err);
/* Download every file not done yet (download.c). A file whose retry budget runs out is given
 * up (fs_bulk_file.failed, counted in ex->files_failed) and the others go on; the caller says how
 * the export ended. */
fhirsync_code fs_bulk_download_all(fhirsync_export *ex);
/* FHIRSYNC_E_TIMEOUT (err filled, naming `doing`) when this run's deadline has passed; otherwise
 * FHIRSYNC_OK with *wait_ms (may be NULL) shortened to end at the deadline. */
fhirsync_code fs_bulk_deadline(fhirsync_export *ex, const char *doing, int64_t *wait_ms,
                               fhirsync_error *err);
/* The stall rule of this run: bytes per second (0: off) and seconds. */
void fs_bulk_stall_rule(const fhirsync_export *ex, long *bytes_per_s, long *seconds);
/* The poll floor (ms) and the deadline (s) of the handle's limits, defaults applied. */
int64_t fs_bulk_poll_floor_ms(const fhirsync_export *ex);
int64_t fs_bulk_deadline_s(const fhirsync_export *ex);
/* "dir/name", the caller's; NULL on out of memory. */
char *fs_bulk_path_join(const char *dir, const char *name);
/* The handle's statistics (zeroes for NULL), version set. */
void fs_bulk_collect_stats(const fhirsync_export *ex, fhirsync_export_stats *out);
/* The file's path (ex->dir/name), built the first time (when the file is done: a manifest of
 * many files keeps no path for the files not done); NULL on out of memory. Sets pub.path. */
const char *fs_bulk_file_path(const fhirsync_export *ex, fs_bulk_file *f);
/* Free f's scratch (f->x) and its partial path. */
void fs_bulk_scratch_free(fs_bulk_file *f);
/* Release what a file holds (fd, strings). */
void fs_bulk_file_clear(fs_bulk_file *f);

/* ---- the file side of the downloads (writer.c) ---------------------------------------------- */

typedef struct fs_bulk_writer fs_bulk_writer;

/* Start the writer for `ex` with room for `parallel` transfers: two threads (checks, disk
 * flushes) and a fixed pool of blocks (memory is bounded by it). `wake(wake_arg)` is called from
 * a writer thread each time a file settles or a save completes (to interrupt the export's thread
 * waiting on the network). If the threads cannot be started the writer works inline, in the
 * calling thread. FHIRSYNC_E_NOMEM. */
fhirsync_code fs_bulk_writer_new(fhirsync_export *ex, int parallel, void (*wake)(void *),
                                 void *wake_arg, fs_bulk_writer **out, fhirsync_error *err);
/* Finish the work queued so far (every block is checked and written, every file and save handed
 * over is done) and stop the threads; what comes after is done inline. Files that settled stay
 * to be collected. */
void fs_bulk_writer_stop(fs_bulk_writer *w);
/* Stop (as above) and free. NULL is a no-op. */
void fs_bulk_writer_free(fs_bulk_writer *w);
/* Bytes of f's transfer, in order (export's thread): copied into blocks and queued. Waits while
 * every block is in use. */
void fs_bulk_writer_data(fs_bulk_writer *w, fs_bulk_file *f, const char *data, size_t len);
/* Queue what f's open block holds (at the end of a transfer, or before stopping). */
void fs_bulk_writer_flush(fs_bulk_writer *w, fs_bulk_file *f);
/* f's transfer ended: after its bytes, the writer settles f. With `finish` (a 200 or 206 that
 * arrived whole), or when the partial file holds exactly `whole_at` bytes (a 416 naming the
 * size; -1: no such answer), it finishes the file first (checks, fsync, rename or filtered
 * copy). The caller sets f->settling and waits for fs_bulk_writer_settled to return f. */
void fs_bulk_writer_end(fs_bulk_writer *w, fs_bulk_file *f, bool finish, int64_t whole_at);
/* The next settled file (f->outcome set), waiting up to timeout_ms for one (or for a save to
 * complete); NULL if none. */
fs_bulk_file *fs_bulk_writer_settled(fs_bulk_writer *w, int timeout_ms);
/* Save state.json atomically (fs_bulk_write_atomic) with `text` (taken), on the writer's I/O
 * thread after the files it finished before. One save at a time: the next only after
 * fs_bulk_writer_saved() reported this one. */
void fs_bulk_writer_save(fs_bulk_writer *w, char *text);
/* Whether the save handed over has completed (reported once); err->code says how. */
bool fs_bulk_writer_saved(fs_bulk_writer *w, fhirsync_error *err);

/* The partial file, used by the export's thread while no transfer of f runs (writer.c).
 * Open .partial/NAME for the first attempt of this process: what an earlier run left is
 * re-scanned (counts rebuilt) and cut back to its last complete line. */
fhirsync_code fs_bulk_partial_open(fhirsync_export *ex, fs_bulk_file *f, fhirsync_error *err);
/* Start the file over: empty it, fresh counts. False with f->x->io_err on failure. */
bool fs_bulk_partial_truncate(fhirsync_export *ex, fs_bulk_file *f);

#endif
