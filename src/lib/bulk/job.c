/* bulk/job.c: the services of an export handle that its parts share: the kick-off and poll
 * driver (export.c), the downloads (download.c) and the writer (writer.c). Limits (the poll
 * floor, the deadline, the stall rule), the event stream and the run's log (export-log.jsonl),
 * the access token with its renewal, a file's path and its done state, the statistics, and the
 * names of events and file kinds.
 * It calls none of those files, so they depend on it and never on each other in a loop. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bulk/bulk_internal.h"
#include "fhir/fhir_internal.h"

/* ---- names ---------------------------------------------------------------------------------- */

const char *fhirsync_export_file_kind_name(fhirsync_export_file_kind kind)
{
    switch (kind) {
    case FHIRSYNC_EXPORT_OUTPUT: return "output";
    case FHIRSYNC_EXPORT_DELETED: return "deleted";
    case FHIRSYNC_EXPORT_ERROR: return "error";
    }
    return "?";
}

const char *fhirsync_export_event_name(fhirsync_export_event_kind kind)
{
    switch (kind) {
    case FHIRSYNC_EXPORT_EV_KICKOFF: return "kick-off";
    case FHIRSYNC_EXPORT_EV_PROGRESS: return "progress";
    case FHIRSYNC_EXPORT_EV_MANIFEST: return "manifest";
    case FHIRSYNC_EXPORT_EV_FILE_STARTED: return "file-started";
    case FHIRSYNC_EXPORT_EV_FILE_DONE: return "file-done";
    case FHIRSYNC_EXPORT_EV_RETRY: return "retry";
    case FHIRSYNC_EXPORT_EV_TOKEN_RENEWED: return "token-renewed";
    case FHIRSYNC_EXPORT_EV_WARNING: return "warning";
    case FHIRSYNC_EXPORT_EV_BYTES: return "bytes";
    case FHIRSYNC_EXPORT_EV_DONE: return "done";
    }
    return "?";
}

/* ---- limits --------------------------------------------------------------------------------- */

int64_t fs_bulk_poll_floor_ms(const fhirsync_export *ex)
{
    return ex->limits.poll_floor_ms > 0 ? ex->limits.poll_floor_ms : FS_BULK_DEFAULT_POLL_FLOOR_MS;
}

int64_t fs_bulk_deadline_s(const fhirsync_export *ex)
{
    return ex->limits.deadline_s ? ex->limits.deadline_s : FS_BULK_DEFAULT_DEADLINE_S;
}

void fs_bulk_stall_rule(const fhirsync_export *ex, long *bytes_per_s, long *seconds)
{
    int64_t b = ex->limits.stall_bytes_per_s, t = ex->limits.stall_s;
    *bytes_per_s = b < 0          ? 0
                   : b == 0       ? FS_BULK_DEFAULT_STALL_BYTES
                   : b > LONG_MAX ? LONG_MAX
                                  : (long)b;
    *seconds = t <= 0 ? FS_BULK_DEFAULT_STALL_S : t > 86400 ? 86400 : (long)t;
}

fhirsync_code fs_bulk_deadline(fhirsync_export *ex, const char *doing, int64_t *wait_ms,
                               fhirsync_error *err)
{
    if (!ex->deadline_ms)
        return FHIRSYNC_OK;
    int64_t now = fs_monotonic_ms();
    if (now >= ex->deadline_ms)
        return fs_err(err, FHIRSYNC_E_TIMEOUT,
                      "the export's deadline of %lld s passed %s (%u status poll(s) this run): "
                      "the job is kept on the server and the folder is resumable; run the same "
                      "command again to go on (--deadline sets the limit)",
                      (long long)fs_bulk_deadline_s(ex), doing, ex->polls);
    if (wait_ms && *wait_ms > ex->deadline_ms - now)
        *wait_ms = ex->deadline_ms - now;
    return FHIRSYNC_OK;
}

/* ---- events and the log --------------------------------------------------------------------- */

/* The totals of fhirsync_export_get_stats() into `out` (any version: the library's own). */

static double elapsed_seconds(const fhirsync_export *ex)
{
    return (double)(fs_monotonic_ms() - ex->run_start_ms) / 1000.0;
}

void fs_bulk_log_record(fhirsync_export *ex, json_t *record)
{
    if (!record)
        return;
    char when[32];
    fs_format_instant(fs_now(), when, sizeof when);
    json_object_set_new(record, "time", json_string(when));
    if (ex->run_start_ms)
        json_object_set_new(record, "elapsed_ms",
                            json_integer(fs_monotonic_ms() - ex->run_start_ms));
    char *raw = ex->log_fd >= 0 ? fs_json_dump(record) : NULL;
    /* a live token or assertion never reaches the file, whatever text carries it */
    char *line = raw ? fs_redact_live(raw) : NULL;
    fs_free(raw);
    if (line) {
        size_t len = strlen(line);
        line[len] = '\n'; /* replaces the NUL: written with its length */
        ssize_t n = write(ex->log_fd, line, len + 1);
        (void)n; /* the log is a record for people: a full disk shows up in the data files */
        line[len] = '\0';
    }
    fs_free(line);
    json_decref(record);
}

const char *fs_bulk_file_path(const fhirsync_export *ex, fs_bulk_file *f)
{
    if (!f->path) {
        size_t len = strlen(ex->dir) + 1 + strlen(f->name);
        if ((f->path = fs_malloc(len + 1)))
            snprintf(f->path, len + 1, "%s/%s", ex->dir, f->name);
        f->pub.path = f->path;
    }
    return f->path;
}

void fs_bulk_scratch_free(fs_bulk_file *f)
{
    if (f->x) {
        if (f->x->fd >= 0)
            close(f->x->fd);
        fs_free(f->x->partial_path);
    }
    fs_free(f->x);
    f->x = NULL;
}

void fs_bulk_file_mark_done(fhirsync_export *ex, fs_bulk_file *f)
{
    if (f->pub.done)
        return;
    (void)fs_bulk_file_path(ex, f); /* out of memory: NULL until an event builds it */
    f->pub.done = true;
    ex->files_done++;
    if (f->pub.kind == FHIRSYNC_EXPORT_OUTPUT)
        ex->resources_done += f->pub.count;
}

bool fs_bulk_emit(fhirsync_export *ex, fhirsync_export_event_kind kind, const fs_bulk_file *file,
                  const char *message, int64_t delay_ms, fhirsync_code code)
{
    /* a file not done has no path of its own: the event's copy gets one for the callback */
    fhirsync_export_file pub;
    char *path = NULL;
    if (file && !file->pub.path) {
        pub = file->pub;
        size_t len = strlen(ex->dir) + 1 + strlen(file->name);
        if ((path = fs_malloc(len + 1)))
            snprintf(path, len + 1, "%s/%s", ex->dir, file->name);
        pub.path = path;
    }
    fhirsync_export_event ev = {
        .kind = kind,
        .message = message,
        .file = !file  ? NULL
                : path ? &pub
                       : &file->pub,
        .delay_ms = delay_ms,
        .code = code,
        .status_url = ex->st.status_url,
        .transaction_time = ex->st.transaction_time,
        .files_total = ex->nfiles,
        .bytes = ex->bytes_received,
        .elapsed_s = elapsed_seconds(ex),
    };
    ev.files_done = ex->files_done;
    ev.resources = ex->resources_done;
    if (kind != FHIRSYNC_EXPORT_EV_BYTES) {
        json_t *rec = json_pack("{s:s}", "event", fhirsync_export_event_name(kind));
        if (rec) {
            if (message)
                json_object_set_new(rec, "message", json_string(message));
            if (file) {
                json_object_set_new(rec, "file", json_string(file->name));
                json_object_set_new(rec, "kind",
                                    json_string(fhirsync_export_file_kind_name(file->pub.kind)));
                json_object_set_new(rec, "type", json_string(file->type));
                if (kind == FHIRSYNC_EXPORT_EV_FILE_DONE) {
                    json_object_set_new(rec, "count", json_integer(file->pub.count));
                    json_object_set_new(rec, "quarantined", json_integer(file->pub.quarantined));
                    json_object_set_new(rec, "bytes", json_integer((json_int_t)file->pub.bytes));
                    json_object_set_new(rec, "from_previous_run",
                                        json_boolean(file->pub.from_previous_run));
                }
            }
            if (delay_ms > 0)
                json_object_set_new(rec, "delay_ms", json_integer(delay_ms));
            if (kind == FHIRSYNC_EXPORT_EV_KICKOFF && ex->st.status_url)
                json_object_set_new(rec, "status_url", json_string(ex->st.status_url));
            if (kind == FHIRSYNC_EXPORT_EV_MANIFEST) {
                json_object_set_new(rec, "transaction_time", json_string(ex->st.transaction_time));
                json_object_set_new(rec, "files", json_integer((json_int_t)ex->nfiles));
            }
            if (kind == FHIRSYNC_EXPORT_EV_DONE) {
                fhirsync_export_stats stats;
                fs_bulk_collect_stats(ex, &stats);
                json_object_set_new(rec, "code", json_string(fhirsync_strerror(code)));
                json_object_set_new(rec, "files", json_integer((json_int_t)stats.files));
                json_object_set_new(rec, "resources", json_integer(stats.resources));
                json_object_set_new(rec, "deleted", json_integer(stats.deleted));
                json_object_set_new(rec, "errors", json_integer(stats.errors));
                json_object_set_new(rec, "quarantined", json_integer(stats.quarantined));
                json_object_set_new(rec, "bytes", json_integer((json_int_t)stats.bytes));
                json_object_set_new(rec, "duration_ms",
                                    json_integer((json_int_t)(stats.duration_s * 1000.0)));
                json_object_set_new(rec, "retries", json_integer(stats.retries));
                json_object_set_new(rec, "token_renewals", json_integer(stats.token_renewals));
            }
            fs_bulk_log_record(ex, rec);
        }
    }
    if (kind == FHIRSYNC_EXPORT_EV_RETRY)
        ex->retries++;
    if (kind == FHIRSYNC_EXPORT_EV_WARNING && message)
        fs_log(FHIRSYNC_LOG_WARN, "export: %s%s%s", file ? file->name : "", file ? ": " : "",
               message);
    if (ex->cb && ex->cb(&ev, ex->cb_userdata) != 0)
        ex->cb_stop = true;
    fs_free(path);
    return !ex->cb_stop;
}

/* ---- tokens --------------------------------------------------------------------------------- */

fhirsync_code fs_bulk_token(fhirsync_export *ex, bool force, fhirsync_error *err)
{
    fhirsync_auth *auth = fs_fhir_client_auth(ex->client);
    fhirsync_token tok;
    if (force)
        fhirsync_auth_invalidate(auth);
    fhirsync_code rc = fhirsync_auth_token(auth, force, &tok, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (ex->token && strcmp(ex->token, tok.access_token) == 0)
        return FHIRSYNC_OK;
    char *copy = fs_strdup(tok.access_token);
    if (!copy)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    bool renewal = ex->token != NULL;
    fs_free_secret(ex->token);
    ex->token = copy;
    ex->token_gen++;
    if (renewal) {
        ex->renewals++;
        fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_TOKEN_RENEWED, NULL,
                     force ? "the server refused the token (HTTP 401): got a new one"
                           : "the token was about to expire: got a new one",
                     0, FHIRSYNC_OK);
    }
    return FHIRSYNC_OK;
}

char *fs_bulk_path_join(const char *dir, const char *name)
{
    fs_buf b;
    fs_buf_init(&b);
    if (!fs_buf_printf(&b, "%s/%s", dir, name)) {
        fs_buf_free(&b);
        return NULL;
    }
    return fs_buf_steal(&b);
}

void fs_bulk_collect_stats(const fhirsync_export *ex, fhirsync_export_stats *out)
{
    memset(out, 0, sizeof *out);
    out->version = FHIRSYNC_EXPORT_STATS_VERSION;
    if (!ex)
        return;
    out->files = ex->nfiles;
    for (size_t i = 0; i < ex->nfiles; i++) {
        const fhirsync_export_file *f = &ex->files[i].pub;
        out->quarantined += f->quarantined;
        if (!f->done)
            continue;
        out->files_done++;
        out->bytes += f->bytes;
        if (f->kind == FHIRSYNC_EXPORT_OUTPUT)
            out->resources += f->count;
        else if (f->kind == FHIRSYNC_EXPORT_DELETED)
            out->deleted += f->count;
        else
            out->errors += f->count;
    }
    out->retries = ex->retries;
    out->token_renewals = ex->renewals;
    out->duration_s = ex->run_start_ms ? elapsed_seconds(ex) : 0;
}
