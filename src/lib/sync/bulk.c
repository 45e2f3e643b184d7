/* sync/bulk.c: bulk mode. One run is one Bulk Data export of the endpoint into its work folder
 * (<work>/<endpoint>/export, the bulk client's resumable folder), loaded into the store:
 *
 *   plan       types (the setting, else US Core types the granted scopes allow), level (Group
 *              with a group_id, else Patient, else system; a level the server refuses at
 *              kick-off falls back to the next one, logged), _since = the watermark
 *   export     the bulk client downloads and verifies the files; each FILE_DONE event hands the
 *              file to a loader thread, which stores it in one batch while the others download
 *              (or, with FHIRSYNC_SYNC_LOAD_AFTER, every file once the export is complete).
 *              PostgreSQL has several loaders (options.loaders, default 2), each with its own
 *              session: the server parses jsonb and maintains indexes in one process per
 *              session, so that is where a second core helps. SQLite writes one at a time.
 *   append     a run without _since (a first full load) loads its files as appends (rows
 *              expected to be new: COPY straight into the tables on PostgreSQL); the first
 *              file that meets stored ids is loaded again as merges, and so are all after it.
 *              Deleted files are applied before any output file, so that a resource deleted and
 *              re-created before the transactionTime ends up present, as it is on the server.
 *   ledger     after a file's batch commits, a line {"job", "file", "counts"} is appended to
 *              <work>/<endpoint>/loaded.ndjson (fsync'ed); a resumed run skips files listed
 *              there for the same job (status URL). A crash between the commit and the ledger
 *              line only makes the next run load the file again: upserts are idempotent.
 *   refused    lines the store refuses (no id, ...) go to refused.ndjson, not to the store at
 *              once: they are quarantined in the final batch, de-duplicated, so a file loaded
 *              twice does not quarantine its bad lines twice.
 *   final      one batch: the quarantine (the bulk client's quarantine/ files and refused
 *              lines), then the run's end with the watermark := the manifest's transactionTime
 *              (fs_store_run_finish commits them together). Then the folder is removed.
 *
 * Killed at any instant, the next run finds the watermark unchanged, plans the same request,
 * and the bulk client resumes the same job from the folder; files are reloaded or skipped as the
 * ledger says. docs/sync.md has the whole argument. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config_internal.h"
#include "json/json.h"
#include "store/store_internal.h"
#include "sync/sync_internal.h"

/* A finished file waiting for the loader. */
typedef struct pending_file {
    struct pending_file *next;
    fhirsync_export_file_kind kind;
    char *path, *type, *name, *url;
} pending_file;

typedef struct ledger_entry {
    char *name;
    char *counts; /* the JSON of fs_sync_counts_dump */
} ledger_entry;

#define MAX_LOADERS 16

typedef struct bulk_ctx bulk_ctx;

/* One loader thread and the store handle it alone uses. */
typedef struct loader {
    bulk_ctx *c;
    fhirsync_store *store; /* the sync's own handle for the first loader, else opened for it */
    pthread_t thread;
    bool started;
} loader;

struct bulk_ctx {
    fhirsync_sync *s;
    fhirsync_export *ex;
    char *workdir, *export_dir, *ledger_path, *refused_path;
    int refused_fd;
    char *job; /* the status URL the ledger entries belong to */
    ledger_entry *ledger;
    size_t nledger;
    bool ledger_read;
    /* the loaders */
    loader loaders[MAX_LOADERS];
    size_t nloaders;
    bool append;        /* load outputs as appends (see the top of the file) */
    pthread_mutex_t mu; /* the queue, the ledger, append, failed */
    pthread_mutex_t refused_mu;
    pthread_cond_t cv;
    pending_file *deleted_head, *deleted_tail, *other_head, *other_tail;
    size_t deleted_expected; /* deleted files in the manifest */
    size_t deleted_loaded;
    bool manifest_seen;
    bool closing; /* no more files will come */
    bool failed;  /* a load failed: load_err */
    fhirsync_error load_err;
    size_t files_loaded;
    /* reconciliation (see reconcile()) */
    bool full;                   /* a full export (no _since): its end reconciles */
    const char *requested;       /* the _type sent; NULL: every type */
    fhirsync_export_level level; /* the level that ran */
    int64_t first_run;           /* the first run that loaded files of this job (ledger) */
    bool first_run_unknown;      /* a ledger line of this job names no run */
    int incremental_runs;        /* incremental runs since the last full export ... */
    int64_t listed_deletions;    /* ... and the deletions their deleted files listed */
};

/* ---- small file helpers ---------------------------------------------------------------------- */

static char *join(const char *a, const char *b)
{
    fs_buf buf;
    fs_buf_init(&buf);
    if (!fs_buf_printf(&buf, "%s/%s", a, b)) {
        fs_buf_free(&buf);
        return NULL;
    }
    return fs_buf_steal(&buf);
}

static fhirsync_code mkdirs(const char *path, fhirsync_error *err)
{
    char *copy = fs_strdup(path);
    if (!copy)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    fhirsync_code rc = FHIRSYNC_OK;
    for (char *p = copy + 1; rc == FHIRSYNC_OK; p++) {
        if (*p != '/' && *p)
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(copy, 0700) != 0 && errno != EEXIST)
            rc = fs_err(err, FHIRSYNC_E_IO, "cannot create folder %s: %s", copy, strerror(errno));
        *p = saved;
        if (!saved)
            break;
    }
    fs_free(copy);
    return rc;
}

/* Append one line to a file and fsync it (the ledger: it must be on disk before it counts). */
static bool append_line(const char *path, const char *line)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return false;
    bool ok = fs_write_all(fd, line, strlen(line)) && fs_write_all(fd, "\n", 1) && fsync(fd) == 0;
    close(fd);
    return ok;
}

typedef bool (*line_fn)(void *ud, char *line, size_t len);

/* Call fn for each line of a (small) text file; a missing file has no lines. */
static fhirsync_code each_line(const char *path, line_fn fn, void *ud, fhirsync_error *err)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return errno == ENOENT
                   ? FHIRSYNC_OK
                   : fs_err(err, FHIRSYNC_E_IO, "cannot read %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    fhirsync_code rc = FHIRSYNC_OK;
    while ((n = getline(&line, &cap, f)) > 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n > 0 && !fn(ud, line, (size_t)n)) {
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory reading %s", path);
            break;
        }
    }
    free(line); /* getline's buffer comes from the C library */
    fclose(f);
    return rc;
}

/* ---- the ledger ------------------------------------------------------------------------------ */

static void ledger_clear(bulk_ctx *c)
{
    for (size_t i = 0; i < c->nledger; i++) {
        fs_free(c->ledger[i].name);
        fs_free(c->ledger[i].counts);
    }
    fs_free(c->ledger);
    c->ledger = NULL;
    c->nledger = 0;
    c->ledger_read = false;
}

static bool ledger_line(void *ud, char *line, size_t len)
{
    bulk_ctx *c = ud;
    fhirsync_error e;
    json_t *rec = fs_json_parse(line, len, true, "ledger line", &e);
    if (!rec)
        return e.code != FHIRSYNC_E_NOMEM; /* a torn last line: ignored */
    const char *job = fs_json_str(rec, "job");
    const char *file = fs_json_str(rec, "file");
    json_t *counts = json_object_get(rec, "counts");
    bool ok = true;
    int64_t run = 0;
    if (fs_streq(job, c->job) && file && json_is_object(counts)) {
        if (!fs_json_int(rec, "run", &run) || run <= 0)
            c->first_run_unknown = true;
        else if (run < c->first_run)
            c->first_run = run;
    }
    if (fs_streq(job, c->job) && file && json_is_object(counts)) {
        ledger_entry *grown = fs_realloc(c->ledger, (c->nledger + 1) * sizeof *grown);
        char *name = fs_strdup(file);
        char *text = fs_json_dump(counts);
        if (!grown || !name || !text) {
            if (grown)
                c->ledger = grown;
            fs_free(name);
            fs_free(text);
            ok = false;
        } else {
            c->ledger = grown;
            c->ledger[c->nledger++] = (ledger_entry){name, text};
        }
    }
    json_decref(rec);
    return ok;
}

/* The ledger entry of `name` for the current job (c->job; the ledger is read once). */
static const ledger_entry *ledger_find(bulk_ctx *c, const char *name, fhirsync_error *err,
                                       fhirsync_code *rc)
{
    *rc = FHIRSYNC_OK;
    if (!c->job)
        return NULL;
    if (!c->ledger_read) {
        *rc = each_line(c->ledger_path, ledger_line, c, err);
        if (*rc != FHIRSYNC_OK)
            return NULL;
        c->ledger_read = true;
    }
    const ledger_entry *found = NULL;
    for (size_t i = 0; i < c->nledger; i++)
        if (strcmp(c->ledger[i].name, name) == 0)
            found = &c->ledger[i]; /* the last one wins */
    return found;
}

/* ---- refused lines --------------------------------------------------------------------------- */

typedef struct refused_ctx {
    bulk_ctx *c;
    const pending_file *f;
} refused_ctx;

static bool write_refused(refused_ctx *r, const char *line, size_t len, int64_t line_no,
                          const char *reason)
{
    bulk_ctx *c = r->c;
    if (c->refused_fd < 0) {
        c->refused_fd = open(c->refused_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (c->refused_fd < 0)
            return false;
    }
    size_t keep = len > FHIRSYNC_STORE_QUARANTINE_CAP ? FHIRSYNC_STORE_QUARANTINE_CAP : len;
    json_t *rec =
        json_pack("{s:s?, s:s, s:s?, s:s?, s:I, s:s}", "job", c->job, "file", r->f->name, "url",
                  r->f->url, "type", r->f->type, "line", (json_int_t)line_no, "reason", reason);
    bool ok = rec != NULL;
    if (ok) {
        json_t *text = json_stringn(line, keep);
        if (text) {
            json_object_set_new(rec, "text", text);
        } else {
            char *b64 = fs_b64url_encode((const unsigned char *)line, keep);
            ok = b64 && json_object_set_new(rec, "text_base64url", json_string(b64)) == 0;
            fs_free(b64);
        }
        json_object_set_new(rec, "bytes", json_integer((json_int_t)len));
    }
    char *text = ok ? fs_json_dump(rec) : NULL;
    /* on disk before the file's batch commits: a line the store refused is never lost */
    ok = text && fs_write_all(c->refused_fd, text, strlen(text)) &&
         fs_write_all(c->refused_fd, "\n", 1) && fsync(c->refused_fd) == 0;
    fs_free(text);
    json_decref(rec);
    return ok;
}

static bool on_refused(void *ud, const char *line, size_t len, int64_t line_no, const char *reason)
{
    refused_ctx *r = ud;
    pthread_mutex_lock(&r->c->refused_mu); /* loaders share the file */
    bool ok = write_refused(r, line, len, line_no, reason);
    pthread_mutex_unlock(&r->c->refused_mu);
    return ok;
}

/* ---- loading one file ------------------------------------------------------------------------ */

static fhirsync_code load_one(bulk_ctx *c, fhirsync_store *store, const pending_file *f,
                              fhirsync_error *err)
{
    fhirsync_sync *s = c->s;
    fhirsync_code rc;
    fs_sync_counts counts;
    fs_sync_counts_init(&counts);
    pthread_mutex_lock(&c->mu);
    const ledger_entry *done = ledger_find(c, f->name, err, &rc);
    bool append = c->append;
    pthread_mutex_unlock(&c->mu);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (done) {
        /* loaded by an earlier process of this export: count it, do not load it again */
        if (!fs_sync_counts_parse(&counts, done->counts, strlen(done->counts)) ||
            !fs_sync_add_counts(s, &counts)) {
            fs_sync_counts_clear(&counts);
            return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        }
    } else {
        fs_sync_file file = {.kind = f->kind,
                             .type = f->type,
                             .name = f->name,
                             .source = f->url,
                             .transaction_time = s->transaction_time,
                             .run_id = s->run_id,
                             .append = append};
        refused_ctx r = {c, f};
        rc = fs_sync_load_path(store, f->path, &file, s->name, &counts, on_refused, &r, err);
        if (append && !file.append) {
            pthread_mutex_lock(&c->mu);
            if (c->append)
                fs_log(FHIRSYNC_LOG_INFO,
                       "sync %s: the store already holds resources of this export: the files "
                       "left are merged, not appended",
                       s->name);
            c->append = false;
            pthread_mutex_unlock(&c->mu);
        }
        char *dump = rc == FHIRSYNC_OK ? fs_sync_counts_dump(&counts) : NULL;
        if (rc == FHIRSYNC_OK && !dump)
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        json_t *parsed = dump ? json_loads(dump, 0, NULL) : NULL;
        json_t *rec = parsed ? json_pack("{s:s?, s:s, s:I, s:o}", "job", c->job, "file", f->name,
                                         "run", (json_int_t)s->run_id, "counts", parsed)
                             : NULL;
        char *line = rec ? fs_json_dump(rec) : NULL;
        if (rc == FHIRSYNC_OK && !line)
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        /* the ledger line may be lost (a crash right now): the file is then loaded again */
        pthread_mutex_lock(&c->mu);
        if (rc == FHIRSYNC_OK && !append_line(c->ledger_path, line))
            rc = fs_err(err, FHIRSYNC_E_IO, "cannot write %s: %s", c->ledger_path, strerror(errno));
        pthread_mutex_unlock(&c->mu);
        fs_free(line);
        json_decref(rec);
        fs_free(dump);
        if (rc == FHIRSYNC_OK && !fs_sync_add_counts(s, &counts))
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    if (rc == FHIRSYNC_OK) {
        int64_t loaded, deleted, quarantined;
        fs_sync_counts_totals(&counts, &loaded, &deleted, &quarantined);
        fhirsync_sync_event ev = {.kind = FHIRSYNC_SYNC_EV_LOADED,
                                  .name = f->name,
                                  .type = f->kind == FHIRSYNC_EXPORT_OUTPUT ? f->type : NULL,
                                  .count = loaded,
                                  .deleted = deleted,
                                  .quarantined = quarantined,
                                  .message = done ? "loaded by an earlier run" : NULL};
        fs_sync_emit(s, &ev);
    }
    fs_sync_counts_clear(&counts);
    return rc;
}

/* ---- the loader thread ----------------------------------------------------------------------- */

static void free_pending(pending_file *f)
{
    while (f) {
        pending_file *next = f->next;
        fs_free(f->path);
        fs_free(f->type);
        fs_free(f->name);
        fs_free(f->url);
        fs_free(f);
        f = next;
    }
}

/* Take the next file to load (deleted files first; outputs once every deleted file of the
 * manifest is loaded), or NULL when the loader must end. Called with mu held. */
static pending_file *next_file(bulk_ctx *c)
{
    for (;;) {
        if (c->failed || fs_sync_stopping(c->s))
            return NULL;
        pending_file *f = NULL;
        if (c->deleted_head) {
            f = c->deleted_head;
            c->deleted_head = f->next;
            if (!c->deleted_head)
                c->deleted_tail = NULL;
        } else if (c->other_head && (c->deleted_loaded >= c->deleted_expected || c->closing)) {
            f = c->other_head;
            c->other_head = f->next;
            if (!c->other_head)
                c->other_tail = NULL;
        }
        if (f) {
            f->next = NULL;
            return f;
        }
        if (c->closing)
            return NULL;
        pthread_cond_wait(&c->cv, &c->mu);
    }
}

static void *loader_main(void *arg)
{
    loader *l = arg;
    bulk_ctx *c = l->c;
    pthread_mutex_lock(&c->mu);
    pending_file *f;
    while ((f = next_file(c)) != NULL) {
        pthread_mutex_unlock(&c->mu);
        fhirsync_error e;
        fs_err_clear(&e);
        fhirsync_code rc = load_one(c, l->store, f, &e);
        pthread_mutex_lock(&c->mu);
        if (rc != FHIRSYNC_OK) {
            c->failed = true;
            c->load_err = e;
            c->load_err.code = rc;
        } else {
            c->files_loaded++;
            if (f->kind == FHIRSYNC_EXPORT_DELETED)
                c->deleted_loaded++;
        }
        free_pending(f);
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static void queue_file(bulk_ctx *c, pending_file *f)
{
    pthread_mutex_lock(&c->mu);
    if (f->kind == FHIRSYNC_EXPORT_DELETED) {
        if (c->deleted_tail)
            c->deleted_tail->next = f;
        else
            c->deleted_head = f;
        c->deleted_tail = f;
    } else {
        if (c->other_tail)
            c->other_tail->next = f;
        else
            c->other_head = f;
        c->other_tail = f;
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Stop taking files (after the current ones) and wait for the loaders. */
static void loader_close(bulk_ctx *c)
{
    pthread_mutex_lock(&c->mu);
    c->closing = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    for (size_t i = 0; i < c->nloaders; i++) {
        if (c->loaders[i].started)
            pthread_join(c->loaders[i].thread, NULL);
        c->loaders[i].started = false;
    }
}

/* Start loader threads from `first` on; false (and the threads started so far stay) when the
 * system refuses one. */
static bool spawn_loaders(bulk_ctx *c, size_t first)
{
    for (size_t i = first; i < c->nloaders; i++) {
        if (pthread_create(&c->loaders[i].thread, NULL, loader_main, &c->loaders[i]) != 0)
            return false;
        c->loaders[i].started = true;
    }
    return true;
}

/* Load what is queued once the export is complete (FHIRSYNC_SYNC_LOAD_AFTER): this thread is the
 * first loader. */
static void load_queued_here(bulk_ctx *c)
{
    c->closing = true;
    if (!spawn_loaders(c, 1)) {
        pthread_mutex_lock(&c->mu);
        if (!c->failed)
            fs_err(&c->load_err, FHIRSYNC_E_INTERNAL, "cannot start a loader thread");
        c->failed = true;
        pthread_mutex_unlock(&c->mu);
    }
    loader_main(&c->loaders[0]);
    loader_close(c);
}

/* The loaders' store handles: the sync's own, and one more session each for the others (fewer,
 * with a warning, when the database refuses more connections). */
static fhirsync_code open_loaders(bulk_ctx *c, fhirsync_error *err)
{
    fhirsync_sync *s = c->s;
    if (c->nloaders)
        return FHIRSYNC_OK;
    bool pg = fs_streq(fhirsync_store_engine_name(s->store), "postgresql");
    size_t want = 1;
    if (pg)
        want = s->opts.loaders > 0 ? (size_t)s->opts.loaders : 2;
    if (want > MAX_LOADERS)
        want = MAX_LOADERS;
    c->loaders[0] = (loader){.c = c, .store = s->store};
    c->nloaders = 1;
    while (c->nloaders < want) {
        fhirsync_store *more = NULL;
        fhirsync_error e;
        if (fhirsync_store_reopen(s->store, &more, &e) != FHIRSYNC_OK) {
            if (e.code == FHIRSYNC_E_NOMEM)
                return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
            fs_sync_warn(s, "loading with %zu session(s) instead of %zu: %s", c->nloaders, want,
                         e.message);
            break;
        }
        c->loaders[c->nloaders++] = (loader){.c = c, .store = more};
    }
    if (pg)
        fs_log(FHIRSYNC_LOG_INFO, "sync %s: files are stored over %zu PostgreSQL session%s, as %s",
               s->name, c->nloaders, c->nloaders == 1 ? "" : "s",
               c->append ? "appends (a first full load)" : "merges");
    return FHIRSYNC_OK;
}

static void close_loaders(bulk_ctx *c)
{
    loader_close(c);
    for (size_t i = 1; i < c->nloaders; i++)
        fhirsync_store_close(c->loaders[i].store);
    c->nloaders = 0;
}

/* ---- export events --------------------------------------------------------------------------- */

static int on_export_event(const fhirsync_export_event *ev, void *userdata)
{
    bulk_ctx *c = userdata;
    fhirsync_sync *s = c->s;
    if (ev->kind == FHIRSYNC_EXPORT_EV_MANIFEST) {
        size_t deleted = 0;
        for (size_t i = 0; i < fhirsync_export_file_count(c->ex); i++)
            if (fhirsync_export_file_at(c->ex, i)->kind == FHIRSYNC_EXPORT_DELETED)
                deleted++;
        pthread_mutex_lock(&c->mu);
        c->deleted_expected = deleted;
        c->manifest_seen = true;
        fs_free(s->transaction_time);
        s->transaction_time = ev->transaction_time ? fs_strdup(ev->transaction_time) : NULL;
        if (!c->job && ev->status_url)
            c->job = fs_strdup(ev->status_url);
        pthread_mutex_unlock(&c->mu);
    }
    if (ev->kind == FHIRSYNC_EXPORT_EV_FILE_DONE && ev->file) {
        const fhirsync_export_file *f = ev->file;
        pending_file *p = fs_calloc(1, sizeof *p);
        if (p) {
            p->kind = f->kind;
            p->path = fs_strdup(f->path);
            p->type = fs_strdup(f->type);
            p->name = fs_strdup(f->name);
            p->url = fs_strdup(f->url);
        }
        if (!p || !p->path || !p->type || !p->name || !p->url) {
            free_pending(p);
            pthread_mutex_lock(&c->mu);
            c->failed = true;
            fs_err(&c->load_err, FHIRSYNC_E_NOMEM, "out of memory");
            pthread_mutex_unlock(&c->mu);
            return 1;
        }
        queue_file(c, p);
    }
    fhirsync_sync_event sev = {.kind = FHIRSYNC_SYNC_EV_EXPORT, .export_event = ev};
    bool go_on = fs_sync_emit(s, &sev);
    pthread_mutex_lock(&c->mu);
    bool failed = c->failed;
    pthread_mutex_unlock(&c->mu);
    return go_on && !failed ? 0 : 1;
}

/* ---- reconciliation -------------------------------------------------------------------------- */

/* Types of the manifest's output files that were not asked for: stored, never reconciled, one
 * warning each. */
static void warn_unrequested(bulk_ctx *c)
{
    if (!c->requested)
        return;
    fs_buf seen;
    fs_buf_init(&seen);
    if (!fs_buf_append(&seen, "", 0))
        return;
    for (size_t i = 0; i < fhirsync_export_file_count(c->ex); i++) {
        const fhirsync_export_file *f = fhirsync_export_file_at(c->ex, i);
        if (f->kind != FHIRSYNC_EXPORT_OUTPUT || fs_sync_list_has(c->requested, f->type) ||
            fs_sync_list_has(seen.data, f->type))
            continue;
        if (!fs_sync_list_add(&seen, f->type))
            break;
        fs_sync_warn(c->s,
                     "the server returned %s, which was not asked for (_type=%s): stored, but "
                     "never reconciled (a later export may not return it)",
                     f->type, c->requested);
    }
    fs_buf_free(&seen);
}

/* The reconciliation's warnings and deletions, as this run's. */
static void reconcile_warn(void *userdata, const char *message)
{
    fs_sync_warn(userdata, "%s", message);
}

static bool reconcile_deleted(void *userdata, const char *type, int64_t rows)
{
    fhirsync_sync *s = userdata;
    fs_sync_counts one;
    fs_sync_counts_init(&one);
    fs_sync_count *e = fs_sync_counts_at(&one, type);
    if (e)
        e->deleted = rows;
    bool ok = e && fs_sync_add_counts(s, &one);
    fs_sync_counts_clear(&one);
    s->reconciled += rows;
    fhirsync_sync_event ev = {.kind = FHIRSYNC_SYNC_EV_LOADED,
                              .name = "reconciliation",
                              .type = type,
                              .deleted = rows,
                              .message = "not in the full export: gone on the server"};
    fs_sync_emit(s, &ev);
    return ok;
}

/* After a complete full export: every row of a reconciled type that this endpoint's earlier runs
 * wrote and this export did not return is gone on the server (within the export's scope), and is
 * deleted with the reason "full-export" (reconcile.c, docs/sync.md "Reconciliation"). In the final
 * batch. `why` collects what makes the run partial (a type refused by the share guard). */
static fhirsync_code reconcile(bulk_ctx *c, fs_buf *why, fhirsync_error *err)
{
    fhirsync_sync *s = c->s;
    const char *kicked = fhirsync_export_kickoff_time(c->ex);
    const char *deleted_at = kicked ? kicked : s->transaction_time;
    if (c->first_run_unknown || !deleted_at) {
        fs_sync_warn(s, "this export was started by an older fhirsync or has no kick-off time: "
                        "deletions are not reconciled this time (the next full export will)");
        return FHIRSYNC_OK;
    }
    fs_buf exported;
    fs_buf_init(&exported);
    fhirsync_code rc = fs_buf_append(&exported, "", 0)
                           ? FHIRSYNC_OK
                           : fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    for (size_t i = 0; rc == FHIRSYNC_OK && i < fhirsync_export_file_count(c->ex); i++) {
        const fhirsync_export_file *f = fhirsync_export_file_at(c->ex, i);
        if (f->kind == FHIRSYNC_EXPORT_OUTPUT && !fs_sync_list_add(&exported, f->type))
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    fs_sync_reconcile_req r = {.store = s->store,
                               .endpoint = s->name,
                               .level = c->level,
                               .requested = c->requested,
                               .exported = exported.data,
                               .counts = &s->counts,
                               .first_run = c->first_run,
                               .run_id = s->run_id,
                               .deleted_at = deleted_at,
                               .max_share = fs_sync_max_delete_share(&s->opts, s->ep),
                               .force = s->opts.allow_mass_delete,
                               .incremental_runs = c->incremental_runs,
                               .listed_deletions = c->listed_deletions,
                               .warn = reconcile_warn,
                               .deleted = reconcile_deleted,
                               .userdata = s};
    int64_t reconciled = 0;
    if (rc == FHIRSYNC_OK)
        rc = fs_sync_reconcile(&r, &reconciled, why, err);
    fs_buf_free(&exported);
    return rc;
}

/* ---- the final commit ------------------------------------------------------------------------ */

typedef struct quarantine_pass {
    bulk_ctx *c;
    fs_sync_counts *counts; /* quarantine from the bulk client's files is counted here */
    char **seen;            /* "file\nline" keys of refused lines already inserted */
    size_t nseen;
    fhirsync_code rc;
    fhirsync_error *err;
    bool from_refused;
} quarantine_pass;

static bool seen_before(quarantine_pass *q, const char *file, int64_t line, bool *nomem)
{
    char key[1024];
    snprintf(key, sizeof key, "%s\n%lld", file, (long long)line);
    for (size_t i = 0; i < q->nseen; i++)
        if (strcmp(q->seen[i], key) == 0)
            return true;
    char **grown = fs_realloc(q->seen, (q->nseen + 1) * sizeof *grown);
    char *copy = fs_strdup(key);
    if (!grown || !copy) {
        if (grown)
            q->seen = grown;
        fs_free(copy);
        *nomem = true;
        return false;
    }
    q->seen = grown;
    q->seen[q->nseen++] = copy;
    return false;
}

static bool quarantine_line(void *ud, char *text, size_t len)
{
    quarantine_pass *q = ud;
    bulk_ctx *c = q->c;
    fhirsync_error e;
    json_t *rec = fs_json_parse(text, len, true, "quarantine record", &e);
    if (!rec) {
        if (e.code == FHIRSYNC_E_NOMEM) {
            q->rc = FHIRSYNC_E_NOMEM;
            return false;
        }
        return true; /* a torn line of a crashed writer: the line is recorded again */
    }
    const char *file = fs_json_str(rec, "file");
    int64_t line_no = 0;
    fs_json_int(rec, "line", &line_no);
    bool skip = false, nomem = false;
    if (q->from_refused)
        skip = !fs_streq(fs_json_str(rec, "job"), c->job) ||
               seen_before(q, file ? file : "", line_no, &nomem);
    if (nomem) {
        json_decref(rec);
        q->rc = FHIRSYNC_E_NOMEM;
        return false;
    }
    bool ok = true;
    if (!skip) {
        const char *raw = fs_json_str(rec, "text");
        size_t raw_len = raw ? json_string_length(json_object_get(rec, "text")) : 0;
        unsigned char *decoded = NULL;
        const char *b64 = fs_json_str(rec, "text_base64url");
        if (!raw && b64 && fs_b64url_decode(b64, strlen(b64), &decoded, &raw_len))
            raw = (const char *)decoded;
        const char *reason = fs_json_str(rec, "reason");
        fhirsync_quarantine_entry entry = {
            .run_id = c->s->run_id,
            .endpoint = c->s->name,
            .source = fs_json_str(rec, "url") ? fs_json_str(rec, "url") : file,
            .line_number = line_no,
            .reason = reason ? reason : "quarantined",
            .line = raw,
            .line_len = raw ? raw_len : 0};
        q->rc = fhirsync_store_quarantine(c->s->store, &entry, q->err);
        fs_free(decoded);
        ok = q->rc == FHIRSYNC_OK;
        if (ok && !q->from_refused && line_no > 0) {
            const char *type = fs_json_str(rec, "type");
            fs_sync_count *cnt = fs_sync_counts_at(q->counts, type ? type : "Bundle");
            if (cnt)
                cnt->quarantined++;
            else
                ok = false, q->rc = FHIRSYNC_E_NOMEM;
        }
    }
    json_decref(rec);
    return ok;
}

/* Insert the quarantine and finish the run with the watermark, in one transaction. */
static fhirsync_code finish_ok(bulk_ctx *c, bool export_partial, fhirsync_error *err)
{
    fhirsync_sync *s = c->s;
    fs_sync_counts extra;
    fs_sync_counts_init(&extra);
    quarantine_pass q = {.c = c, .counts = &extra, .rc = FHIRSYNC_OK, .err = err};
    char *counts_json = NULL;
    fhirsync_code rc = fhirsync_store_begin(s->store, 0, err);
    for (size_t i = 0; rc == FHIRSYNC_OK && i < fhirsync_export_file_count(c->ex); i++) {
        const fhirsync_export_file *f = fhirsync_export_file_at(c->ex, i);
        char *qpath = join(c->export_dir, "quarantine");
        char *path = qpath ? join(qpath, f->name) : NULL;
        fs_free(qpath);
        if (!path) {
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
            break;
        }
        rc = each_line(path, quarantine_line, &q, err);
        if (rc == FHIRSYNC_OK && q.rc != FHIRSYNC_OK)
            rc = q.rc;
        fs_free(path);
    }
    if (rc == FHIRSYNC_OK) {
        q.from_refused = true;
        rc = each_line(c->refused_path, quarantine_line, &q, err);
        if (rc == FHIRSYNC_OK && q.rc != FHIRSYNC_OK)
            rc = q.rc;
    }
    for (size_t i = 0; i < q.nseen; i++)
        fs_free(q.seen[i]);
    fs_free(q.seen);
    if (rc == FHIRSYNC_OK && !fs_sync_add_counts(s, &extra))
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    fs_sync_counts_clear(&extra);
    warn_unrequested(c);
    fs_buf refused;
    fs_buf_init(&refused);
    if (rc == FHIRSYNC_OK && c->full) {
        if (export_partial || s->counts.server_errors > 0)
            fs_sync_warn(s, "deletions are not reconciled: the export is incomplete (%s)",
                         export_partial ? "files failed their checks or counts"
                                        : "the server reported errors");
        else
            rc = reconcile(c, &refused, err);
    }
    int64_t loaded = 0, deleted = 0, quarantined = 0;
    fs_sync_counts_totals(&s->counts, &loaded, &deleted, &quarantined);
    bool partial =
        export_partial || quarantined > 0 || s->counts.server_errors > 0 || refused.len > 0;
    char why[512] = "";
    if (s->counts.server_errors > 0)
        snprintf(why, sizeof why, "the server reported %lld error(s) in its error files",
                 (long long)s->counts.server_errors);
    else if (quarantined > 0)
        snprintf(why, sizeof why, "%lld line(s) quarantined", (long long)quarantined);
    else if (refused.len > 0)
        snprintf(why, sizeof why, "%s", refused.data);
    else if (partial)
        snprintf(why, sizeof why, "the export ended partial (see the warnings above)");
    fs_buf_free(&refused);
    int margin = s->opts.skew_margin_s ? s->opts.skew_margin_s : FS_SYNC_DEFAULT_SKEW_MARGIN_S;
    char mark[64];
    bool moves = fs_sync_bulk_watermark(s->transaction_time, fhirsync_export_kickoff_time(c->ex),
                                        margin, mark, sizeof mark);
    if (rc == FHIRSYNC_OK && !(counts_json = fs_sync_counts_loaded_json(&s->counts)))
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    if (rc == FHIRSYNC_OK) {
        fs_store_run_end end = {.status = partial ? FHIRSYNC_RUN_PARTIAL : FHIRSYNC_RUN_OK,
                                .transaction_time = s->transaction_time,
                                .counts_json = counts_json,
                                .resources = loaded,
                                .deletions = deleted,
                                .quarantined = quarantined,
                                .error = why[0] ? why : NULL,
                                .new_watermark = moves ? mark : NULL};
        /* the batch's final commit: the quarantine, the run's end and the watermark together */
        rc = fs_store_run_finish(s->store, s->run_id, &end, err);
        if (rc == FHIRSYNC_OK) {
            s->status = end.status;
            s->watermark = moves ? fs_strdup(mark) : NULL;
        }
    } else {
        fhirsync_store_rollback(s->store, NULL);
    }
    fs_free(counts_json);
    if (rc == FHIRSYNC_OK && partial)
        rc = fs_err(err, FHIRSYNC_E_PARTIAL, "sync of %s complete, but %s", s->name, why);
    return rc;
}

/* ---- the export ------------------------------------------------------------------------------ */

/* Forget the work of an earlier export: ledger and refused lines first (they name its job), then
 * the folder. */
static void wipe(bulk_ctx *c)
{
    if (c->refused_fd >= 0) {
        close(c->refused_fd);
        c->refused_fd = -1;
    }
    unlink(c->ledger_path);
    unlink(c->refused_path);
    /* state.json first: a kill while the folder is being removed must not leave a state.json
     * that names files or a manifest already gone (the next run of the same request, --full
     * say, would resume it and fail on the missing files for ever); without it the folder holds
     * no export and is discarded */
    char *state = join(c->export_dir, "state.json");
    if (state)
        unlink(state);
    fs_free(state);
    fs_sync_rmtree(c->export_dir);
    ledger_clear(c);
    fs_free(c->job);
    c->job = NULL;
    c->first_run = c->s->run_id;
    c->first_run_unknown = false;
}

static bool dir_has_state(const char *dir)
{
    char *path = join(dir, "state.json");
    bool has = path && access(path, F_OK) == 0;
    fs_free(path);
    return has;
}

/* A new (or resumed) export handle for `level`. A folder left by a different request (the
 * watermark moved after it was loaded, or the settings changed) is discarded. */
static fhirsync_code open_export(bulk_ctx *c, const fhirsync_endpoint *ep,
                                 fhirsync_export_level level, const char *types,
                                 fhirsync_error *err)
{
    fhirsync_sync *s = c->s;
    fhirsync_export_options eo;
    fhirsync_export_options_init(&eo, FHIRSYNC_EXPORT_OPTIONS_VERSION);
    eo.level = level;
    eo.group_id = level == FHIRSYNC_EXPORT_GROUP ? fhirsync_endpoint_get(s->ep, "group_id") : NULL;
    eo.types = types;
    eo.since = s->since;
    eo.delete_job = s->opts.delete_job;
    eo.out_dir = c->export_dir;
    fhirsync_code rc = fhirsync_export_new(ep, &eo, &c->ex, err);
    if (rc == FHIRSYNC_E_ARG && access(c->export_dir, F_OK) == 0) {
        /* The folder is ours alone (<work>/<endpoint>/export): it holds the export of another
         * request (the watermark moved after it was loaded, or the settings changed), or the
         * remains of a process killed while creating or removing it. Start afresh. */
        fs_log(FHIRSYNC_LOG_INFO, "sync %s: the work folder holds %s export (%s); starting afresh",
               s->name, dir_has_state(c->export_dir) ? "another" : "no complete", err->message);
        wipe(c);
        rc = fhirsync_export_new(ep, &eo, &c->ex, err);
    }
    if (rc != FHIRSYNC_OK)
        return rc;
    fhirsync_export_set_callback(c->ex, on_export_event, c);
    const char *status_url = fhirsync_export_status_url(c->ex);
    if (status_url) {
        s->resumed = true;
        c->job = fs_strdup(status_url);
        if (!c->job)
            return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        fs_log(FHIRSYNC_LOG_INFO, "sync %s: resuming the export of an interrupted run (%s)",
               s->name, status_url);
    } else {
        /* a new export: ledger and refused lines of any earlier job are meaningless */
        unlink(c->ledger_path);
        unlink(c->refused_path);
    }
    return FHIRSYNC_OK;
}

static void reset_loader(bulk_ctx *c)
{
    free_pending(c->deleted_head);
    free_pending(c->other_head);
    c->deleted_head = c->deleted_tail = c->other_head = c->other_tail = NULL;
    c->deleted_expected = c->deleted_loaded = 0;
    c->manifest_seen = c->closing = c->failed = false;
    fs_err_clear(&c->load_err);
}

static fhirsync_code start_loader(bulk_ctx *c, fhirsync_error *err)
{
    reset_loader(c);
    fhirsync_code rc = open_loaders(c, err);
    if (rc != FHIRSYNC_OK || c->s->opts.load != FHIRSYNC_SYNC_LOAD_STREAM)
        return rc;
    if (!spawn_loaders(c, 0)) {
        loader_close(c);
        return fs_err(err, FHIRSYNC_E_INTERNAL, "cannot start a loader thread");
    }
    return FHIRSYNC_OK;
}

/* The endpoint profile for the export: explicit settings passed as options are cleared so the
 * bulk client takes ours; eClinicalWorks Group export adds system/Group.read to its scope. */
static fhirsync_code export_profile(fhirsync_sync *s, fhirsync_export_level level,
                                    fhirsync_endpoint **out, fhirsync_error *err)
{
    *out = fhirsync_endpoint_dup(s->ep);
    if (!*out)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    fhirsync_endpoint_clear(*out, "since");
    fhirsync_endpoint_clear(*out, "types");
    if (level == FHIRSYNC_EXPORT_GROUP && fs_streq(fs_endpoint_vendor(s->ep), FS_VENDOR_ECW)) {
        char *scope = fs_sync_scope_with_group(fhirsync_endpoint_get(s->ep, "scope"));
        fhirsync_code rc = scope ? fhirsync_endpoint_set(*out, "scope", scope,
                                                         "sync (eClinicalWorks Group export)", err)
                                 : fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        fs_free(scope);
        if (rc != FHIRSYNC_OK) {
            fhirsync_endpoint_free(*out);
            *out = NULL;
            return rc;
        }
    }
    return FHIRSYNC_OK;
}

/* The bulk runs of the endpoint since its last full export (newest first): how many incremental
 * runs, and how many deletions their deleted files listed. */
static int count_bulk_run(const fhirsync_run_info *run, void *userdata)
{
    bulk_ctx *c = userdata;
    if (run->status != FHIRSYNC_RUN_OK && run->status != FHIRSYNC_RUN_PARTIAL)
        return 0;
    if (fs_streq(run->mode, "bulk-full") || fs_streq(run->mode, "bulk-worker-full"))
        return 1;
    if (fs_streq(run->mode, "bulk") || fs_streq(run->mode, "bulk-worker")) {
        c->incremental_runs++;
        c->listed_deletions += run->deletions;
    }
    return 0;
}

/* Whether this run is a full export that reconciles: no watermark (a first run, --full), asked
 * for (--reconcile), or reconcile_every - 1 incremental runs since the last one. A `since`
 * setting is the user's choice of increment: only --full overrides it. Killed runs do not count,
 * so a resumed run plans the same request. */
static fhirsync_code plan_full(bulk_ctx *c, fhirsync_error *err)
{
    fhirsync_sync *s = c->s;
    const char *setting = fhirsync_endpoint_get(s->ep, "since");
    int every = fs_sync_reconcile_every(&s->opts, s->ep);
    fhirsync_code rc = FHIRSYNC_OK;
    if (s->since)
        rc = fhirsync_store_runs(s->store, s->name, every > 0 ? (size_t)every : 100, count_bulk_run,
                                 c, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    bool due = !(setting && *setting) &&
               fs_sync_reconcile_due(false, false, s->opts.reconcile, every, c->incremental_runs);
    c->full = !s->since || due;
    if (c->full && s->since) {
        fs_log(FHIRSYNC_LOG_INFO,
               "sync %s: a full export this time, to find deletions (%d incremental run(s) since "
               "the last one; reconcile_every %d)",
               s->name, c->incremental_runs, every);
        fs_free(s->since);
        s->since = NULL;
    }
    return FHIRSYNC_OK;
}

fhirsync_code fs_sync_bulk_run(fhirsync_sync *s)
{
    fhirsync_error *err = &s->err;
    /* a first full load: the rows are new (the ledger skips files an earlier process stored) */
    bulk_ctx c = {.s = s, .refused_fd = -1, .append = !s->since && !s->opts.full};
    pthread_mutex_init(&c.mu, NULL);
    pthread_mutex_init(&c.refused_mu, NULL);
    pthread_cond_init(&c.cv, NULL);
    char *types = NULL, *compartment = NULL, *left_out = NULL;
    fhirsync_endpoint *ep = NULL;
    bool types_set = fhirsync_endpoint_get(s->ep, "types") != NULL;
    fhirsync_code rc = plan_full(&c, err);
    s->mode = c.full ? "bulk-full" : "bulk";
    if (!(c.workdir = fs_sync_endpoint_work_dir(s)) ||
        !(c.export_dir = join(c.workdir, "export")) ||
        !(c.ledger_path = join(c.workdir, "loaded.ndjson")) ||
        !(c.refused_path = join(c.workdir, "refused.ndjson"))) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
    if (rc == FHIRSYNC_OK)
        rc = mkdirs(c.workdir, err);
    if (rc == FHIRSYNC_OK)
        rc = fs_sync_plan_bulk_types(s->ep, &types, &left_out, err);
    if (rc == FHIRSYNC_OK && types && !types_set &&
        !(compartment = fs_sync_compartment_types(types)))
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    if (rc == FHIRSYNC_OK)
        rc = fs_store_run_begin(s->store, s->name, s->mode, s->since, &s->run_id, err);
    if (rc != FHIRSYNC_OK)
        goto out;
    c.first_run = s->run_id;
    if (left_out)
        fs_sync_warn(s, "types: %s", left_out);
    fhirsync_export_level chain[3];
    const char *group = fhirsync_endpoint_get(s->ep, "group_id");
    size_t nlevels = fs_sync_level_chain(group && *group, chain);
    bool retried_expired = false;
    for (size_t li = 0; li < nlevels; li++) {
        fhirsync_export_level level = chain[li];
        s->level = fs_sync_level_name(level);
        const char *level_types =
            level == FHIRSYNC_EXPORT_SYSTEM || types_set ? types : compartment;
        c.requested = level_types;
        c.level = level;
        char plan[700];
        snprintf(plan, sizeof plan, "bulk export at %s level%s%s%s, %s, types %s", s->level,
                 level == FHIRSYNC_EXPORT_GROUP ? " (Group/" : "",
                 level == FHIRSYNC_EXPORT_GROUP ? group : "",
                 level == FHIRSYNC_EXPORT_GROUP ? ")" : "",
                 s->since ? "changes since the watermark"
                 : c.full ? "everything, then deletions reconciled"
                          : "everything",
                 level_types ? level_types : "all (no _type)");
        fhirsync_sync_event pev = {.kind = FHIRSYNC_SYNC_EV_PLAN, .message = plan};
        fs_sync_emit(s, &pev);
        fhirsync_endpoint_free(ep);
        ep = NULL;
        rc = export_profile(s, level, &ep, err);
        if (rc == FHIRSYNC_OK)
            rc = open_export(&c, ep, level, level_types, err);
        if (rc == FHIRSYNC_OK)
            rc = start_loader(&c, err);
        if (rc != FHIRSYNC_OK)
            goto fail;
        bool resumed_here = fhirsync_export_status_url(c.ex) != NULL;
        rc = fhirsync_export_run(c.ex);
        if (rc != FHIRSYNC_OK && rc != FHIRSYNC_E_PARTIAL)
            fs_err(err, rc, "%s", fhirsync_export_errmsg(c.ex));
        bool kicked_off = fhirsync_export_status_url(c.ex) != NULL;
        if (rc != FHIRSYNC_OK && rc != FHIRSYNC_E_PARTIAL && rc != FHIRSYNC_E_CANCELLED &&
            li + 1 < nlevels &&
            fs_sync_level_refused(rc, err->http_status, err->message, kicked_off)) {
            fs_sync_warn(s, "the server refused a %s-level export (%s); falling back to %s level",
                         s->level, err->message, fs_sync_level_name(chain[li + 1]));
            loader_close(&c);
            fhirsync_export_free(c.ex);
            c.ex = NULL;
            wipe(&c);
            continue;
        }
        if (rc == FHIRSYNC_E_NOT_FOUND && resumed_here && !retried_expired) {
            /* the server forgot the job of the interrupted run (files expire): start over */
            fs_sync_warn(s,
                         "the interrupted export's job is gone on the server (%s); starting "
                         "a new export",
                         err->message);
            retried_expired = true;
            loader_close(&c);
            fhirsync_export_free(c.ex);
            c.ex = NULL;
            wipe(&c);
            s->resumed = false;
            li--;
            continue;
        }
        break;
    }
    if (rc == FHIRSYNC_OK || rc == FHIRSYNC_E_PARTIAL) {
        bool export_partial = rc == FHIRSYNC_E_PARTIAL;
        if (s->opts.load == FHIRSYNC_SYNC_LOAD_AFTER)
            load_queued_here(&c);
        else
            loader_close(&c);
        if (c.failed) {
            *err = c.load_err;
            rc = c.load_err.code ? c.load_err.code : FHIRSYNC_E_STORE;
            goto fail;
        }
        if (c.other_head || c.deleted_head || fs_sync_stopping(s)) {
            rc = fs_err(err, FHIRSYNC_E_CANCELLED,
                        "interrupted before every file was stored; "
                        "the next run resumes");
            goto fail;
        }
        rc = finish_ok(&c, export_partial, err);
        if (rc != FHIRSYNC_OK && rc != FHIRSYNC_E_PARTIAL)
            goto fail;
        fhirsync_export_free(c.ex);
        c.ex = NULL;
        wipe(&c);
        rmdir(c.workdir); /* and its parent when no other endpoint uses it */
        char *slash = strrchr(c.workdir, '/');
        if (slash) {
            *slash = '\0';
            rmdir(c.workdir);
            *slash = '/';
        }
        goto out;
    }
fail:
    loader_close(&c);
    if (c.failed && rc == FHIRSYNC_E_CANCELLED) {
        *err = c.load_err;
        rc = c.load_err.code ? c.load_err.code : FHIRSYNC_E_STORE;
    }
    if (rc == FHIRSYNC_E_CANCELLED)
        fs_err(err, rc, "interrupted; the next run resumes the export in %s", c.export_dir);
    fs_sync_finish_failed(s, err->message);
out:
    close_loaders(&c);
    reset_loader(&c);
    if (c.refused_fd >= 0)
        close(c.refused_fd);
    fhirsync_export_free(c.ex);
    fhirsync_endpoint_free(ep);
    ledger_clear(&c);
    fs_free(c.job);
    fs_free(c.workdir);
    fs_free(c.export_dir);
    fs_free(c.ledger_path);
    fs_free(c.refused_path);
    fs_free(types);
    fs_free(compartment);
    fs_free(left_out);
    pthread_cond_destroy(&c.cv);
    pthread_mutex_destroy(&c.refused_mu);
    pthread_mutex_destroy(&c.mu);
    return rc;
}
