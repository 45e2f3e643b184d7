/* sync/load.c: loading one NDJSON file of an export into the store, line by line, in one batch:
 *
 *   output   each line is put (an idempotent upsert of the exact bytes; an older version never
 *            replaces a newer one); a line the store refuses (no id, wrong resourceType...) is
 *            quarantined with the store's reason
 *   deleted  each line is a transaction Bundle of DELETE entries: each names a resource, which
 *            is deleted with a deletion record dated by the export's transactionTime
 *   error    each line is an OperationOutcome from the server: issues of severity error or fatal
 *            are counted (the run ends partial), warnings are logged
 *
 * The same line handler serves files on disk (bulk mode) and streamed downloads (workers), and
 * one splitter (core/lines.h, the 64 MiB cap) cuts both into lines. Lines of a file on disk were
 * checked by the bulk writer on their way there; lines of a stream are checked here with the same
 * strict checker (bulk/ndjson.c) when the loader says so (`check`), and a bad one is quarantined
 * with the checker's reason, as the writer would have. Memory is one read buffer plus the longest
 * line. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "bulk/bulk_internal.h"
#include "json/json.h"
#include "store/store_internal.h"
#include "sync/sync_internal.h"

#define READ_BUFFER (1024 * 1024)
#define LOAD_ATTEMPTS 4 /* tries of a file whose batch conflicts with other writers */

static bool stop(fs_sync_loader *ld, fhirsync_code rc, const fhirsync_error *e)
{
    ld->rc = rc;
    if (ld->err && e && ld->err != e)
        *ld->err = *e;
    else if (ld->err && !e)
        fs_err(ld->err, rc, "%s", fhirsync_strerror(rc));
    return false;
}

/* A line that cannot be stored: to the caller's sink, or straight into the quarantine. */
static bool refuse(fs_sync_loader *ld, const char *line, size_t len, const char *type,
                   const char *reason)
{
    fs_sync_count *c = fs_sync_counts_at(ld->counts, type ? type : "Bundle");
    if (c)
        c->quarantined++;
    if (ld->refused) {
        if (!ld->refused(ld->refused_userdata, line, len, ld->line_no, reason)) {
            fhirsync_error e;
            fs_err(&e, FHIRSYNC_E_IO, "cannot record a refused line of %s", ld->file->name);
            return stop(ld, FHIRSYNC_E_IO, &e);
        }
        return true;
    }
    fhirsync_quarantine_entry q = {.run_id = ld->file->run_id,
                                   .endpoint = ld->endpoint,
                                   .source = ld->file->source ? ld->file->source : ld->file->name,
                                   .line_number = ld->line_no,
                                   .reason = reason,
                                   .line = line,
                                   .line_len = len};
    fhirsync_error e;
    fhirsync_code rc = fhirsync_store_quarantine(ld->store, &q, &e);
    return rc == FHIRSYNC_OK ? true : stop(ld, rc, &e);
}

static bool load_output(fs_sync_loader *ld, const char *line, size_t len)
{
    fhirsync_error e;
    fhirsync_put_outcome outcome;
    fhirsync_code rc =
        fhirsync_store_put(ld->store, ld->file->type, line, len, ld->file->run_id, &outcome, &e);
    if (rc == FHIRSYNC_E_JSON)
        return refuse(ld, line, len, ld->file->type, e.message);
    if (rc != FHIRSYNC_OK)
        return stop(ld, rc, &e);
    fs_sync_count *c = fs_sync_counts_at(ld->counts, ld->file->type);
    if (!c) {
        fs_err(&e, FHIRSYNC_E_NOMEM, "out of memory");
        return stop(ld, FHIRSYNC_E_NOMEM, &e);
    }
    c->loaded++;
    return true;
}

/* A deleted line is one unit: every entry is checked before any is applied, so that a line with
 * one bad entry is quarantined whole and deletes nothing. */
static bool load_deleted(fs_sync_loader *ld, const char *line, size_t len)
{
    fhirsync_error e;
    json_t *bundle = fs_json_parse(line, len, true, "deleted Bundle", &e);
    if (!bundle) {
        if (e.code == FHIRSYNC_E_NOMEM)
            return stop(ld, FHIRSYNC_E_NOMEM, &e);
        return refuse(ld, line, len, "Bundle", e.message);
    }
    json_t *entries = json_object_get(bundle, "entry");
    bool ok = true;
    char bad[300] = "";
    if (!fs_streq(fs_json_str(bundle, "resourceType"), "Bundle") || !json_is_array(entries))
        snprintf(bad, sizeof bad, "a deleted line must be a Bundle with an entry array");
    for (size_t i = 0; !bad[0] && i < json_array_size(entries); i++) {
        json_t *request = json_object_get(json_array_get(entries, i), "request");
        const char *method = fs_json_str(request, "method");
        const char *url = fs_json_str(request, "url");
        char type[FS_SYNC_TYPE_MAX + 1], id[65];
        if (!method || strcasecmp(method, "DELETE") != 0 || !url ||
            !fs_sync_parse_delete_url(url, type, sizeof type, id, sizeof id))
            snprintf(bad, sizeof bad, "entry %zu is not a DELETE of Type/id", i);
        else if (!fs_store_resource_key_ok(type, id))
            snprintf(bad, sizeof bad,
                     "entry %zu: '%.64s/%.64s' names no resource the store can hold", i, type, id);
    }
    for (size_t i = 0; ok && !bad[0] && i < json_array_size(entries); i++) {
        json_t *request = json_object_get(json_array_get(entries, i), "request");
        char type[FS_SYNC_TYPE_MAX + 1], id[65];
        fs_sync_parse_delete_url(fs_json_str(request, "url"), type, sizeof type, id, sizeof id);
        bool removed = false;
        fhirsync_code rc =
            fs_store_delete_why(ld->store, type, id, ld->file->transaction_time, ld->file->run_id,
                                FS_STORE_DELETED_LISTED, &removed, &e);
        if (rc != FHIRSYNC_OK) {
            ok = stop(ld, rc, &e);
            break;
        }
        fs_sync_count *c = fs_sync_counts_at(ld->counts, type);
        if (!c) {
            ok = stop(ld, FHIRSYNC_E_NOMEM, NULL);
            break;
        }
        if (removed)
            c->deleted++; /* what the store changed; a resource never stored is not counted */
    }
    json_decref(bundle);
    if (ok && bad[0])
        ok = refuse(ld, line, len, "Bundle", bad);
    return ok;
}

static bool load_error(fs_sync_loader *ld, const char *line, size_t len)
{
    fhirsync_error e;
    json_t *outcome = fs_json_parse(line, len, true, "OperationOutcome", &e);
    if (!outcome && e.code == FHIRSYNC_E_NOMEM)
        return stop(ld, FHIRSYNC_E_NOMEM, &e);
    if (!outcome) {
        fs_log(FHIRSYNC_LOG_WARN, "sync: %s line %lld is not an OperationOutcome: %s",
               ld->file->name, (long long)ld->line_no, e.message);
        ld->counts->server_errors++;
        return true;
    }
    json_t *issues = json_object_get(outcome, "issue");
    for (size_t i = 0; i < json_array_size(issues); i++) {
        json_t *issue = json_array_get(issues, i);
        const char *severity = fs_json_str(issue, "severity");
        const char *diagnostics = fs_json_str(issue, "diagnostics");
        bool serious = fs_streq(severity, "error") || fs_streq(severity, "fatal");
        if (serious)
            ld->counts->server_errors++;
        fs_log(serious ? FHIRSYNC_LOG_WARN : FHIRSYNC_LOG_INFO, "sync: the server reported %s: %s",
               severity ? severity : "an issue", diagnostics ? diagnostics : "(no diagnostics)");
    }
    json_decref(outcome);
    return true;
}

/* The type every line of the file must name: what the bulk writer checks against. */
static const char *expected_type(const fs_sync_file *file)
{
    switch (file->kind) {
    case FHIRSYNC_EXPORT_OUTPUT: return file->type;
    case FHIRSYNC_EXPORT_DELETED: return "Bundle";
    case FHIRSYNC_EXPORT_ERROR: return "OperationOutcome";
    }
    return file->type;
}

bool fs_sync_load_line(fs_sync_loader *ld, const char *line, size_t len)
{
    ld->line_no++;
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
        len--;
    size_t skip = 0;
    while (skip < len && (line[skip] == ' ' || line[skip] == '\t'))
        skip++;
    if (skip == len)
        return true; /* an empty line: nothing to store (the bulk client reported it) */
    if (ld->check) {
        char reason[FS_NDJSON_REASON_MAX];
        const char *type = expected_type(ld->file);
        if (fs_ndjson_check_line(line, len, type, reason, sizeof reason) == FS_NDJSON_BAD)
            return refuse(ld, line, len, type, reason);
    }
    switch (ld->file->kind) {
    case FHIRSYNC_EXPORT_OUTPUT: return load_output(ld, line, len);
    case FHIRSYNC_EXPORT_DELETED: return load_deleted(ld, line, len);
    case FHIRSYNC_EXPORT_ERROR: return load_error(ld, line, len);
    }
    return true;
}

/* What the splitter gave: a line to handle, or one over the cap to quarantine without its text
 * (counted as a line, so that the numbers of the next ones stay right). */
static bool deliver(fs_sync_loader *ld, const fs_lines *lines, fs_lines_event ev, const char *line,
                    size_t len)
{
    switch (ev) {
    case FS_LINES_LINE: return fs_sync_load_line(ld, line, len);
    case FS_LINES_TOO_LONG:
        ld->line_no++;
        return refuse(ld, "", 0, expected_type(ld->file), fs_lines_error(lines));
    case FS_LINES_NOMEM: return stop(ld, FHIRSYNC_E_NOMEM, NULL);
    case FS_LINES_MORE: break;
    }
    return true;
}

bool fs_sync_load_chunk(fs_sync_loader *ld, fs_lines *lines, const char *data, size_t len)
{
    const char *line;
    size_t line_len;
    fs_lines_event ev;
    while ((ev = fs_lines_next(lines, &data, &len, &line, &line_len)) != FS_LINES_MORE)
        if (!deliver(ld, lines, ev, line, line_len))
            return false;
    return true;
}

bool fs_sync_load_end(fs_sync_loader *ld, fs_lines *lines)
{
    const char *line = NULL;
    size_t line_len = 0;
    fs_lines_event ev = fs_lines_finish(lines, &line, &line_len);
    return deliver(ld, lines, ev, line, line_len);
}

static fhirsync_code load_once(fhirsync_store *store, const char *path, const fs_sync_file *file,
                               const char *endpoint, fs_sync_counts *counts,
                               fs_sync_refused_fn refused, void *refused_userdata,
                               fhirsync_error *err)
{
    fhirsync_code rc = FHIRSYNC_OK;
    char *buf = NULL;
    fs_lines lines;
    fs_lines_init(&lines, 0);
    bool in_batch = false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = fs_err(err, FHIRSYNC_E_IO, "cannot open %s: %s", path, strerror(errno));
        goto out;
    }
    if (file->kind == FHIRSYNC_EXPORT_OUTPUT) {
        /* outside the batch: creating a table inside a long batch serialises other writers */
        rc = fhirsync_store_ensure_type(store, file->type, err);
        if (rc != FHIRSYNC_OK)
            goto out;
    }
    buf = fs_malloc(READ_BUFFER);
    if (!buf) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
    unsigned flags = 0;
    if (file->kind == FHIRSYNC_EXPORT_OUTPUT)
        flags = FHIRSYNC_STORE_BULK | (file->append ? FHIRSYNC_STORE_APPEND : 0);
    rc = fhirsync_store_begin(store, flags, err);
    if (rc != FHIRSYNC_OK)
        goto out;
    in_batch = true;
    fs_sync_loader ld = {.store = store,
                         .file = file,
                         .counts = counts,
                         .refused = refused,
                         .refused_userdata = refused_userdata,
                         .endpoint = endpoint,
                         .err = err,
                         .rc = FHIRSYNC_OK};
    for (;;) {
        ssize_t n = read(fd, buf, READ_BUFFER);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = fs_err(err, FHIRSYNC_E_IO, "cannot read %s: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        if (!fs_sync_load_chunk(&ld, &lines, buf, (size_t)n)) {
            rc = ld.rc;
            goto out;
        }
    }
    if (!fs_sync_load_end(&ld, &lines)) {
        rc = ld.rc;
        goto out;
    }
    in_batch = false;
    rc = fhirsync_store_commit(store, err);
out:
    if (in_batch)
        fhirsync_store_rollback(store, NULL);
    if (fd >= 0)
        close(fd);
    fs_free(buf);
    fs_lines_free(&lines);
    return rc;
}

fhirsync_code fs_sync_load_path(fhirsync_store *store, const char *path, fs_sync_file *file,
                                const char *endpoint, fs_sync_counts *counts,
                                fs_sync_refused_fn refused, void *refused_userdata,
                                fhirsync_error *err)
{
    for (unsigned attempt = 1;; attempt++) {
        fhirsync_code rc =
            load_once(store, path, file, endpoint, counts, refused, refused_userdata, err);
        if (rc != FHIRSYNC_E_CONFLICT || attempt == LOAD_ATTEMPTS)
            return rc;
        bool appended = file->append;
        fs_log(FHIRSYNC_LOG_INFO, "sync: %s: %s; loading it again%s", file->name, err->message,
               appended ? " as merges" : "");
        file->append = false;
        fs_sync_counts_clear(counts);
        fs_sync_counts_init(counts);
        /* after a deadlock the other party is still committing: give it a moment, not the same
         * one (an append that met stored ids needs no wait) */
        if (!appended && !fs_sleep_ms(fs_backoff_ms(attempt - 1, 1000) / 4))
            return fs_err(err, FHIRSYNC_E_CANCELLED, "cancelled");
    }
}
