/* bulk/download.c: the downloads of an export: up to `parallel` files at once on the multi
 * engine (http/multi.h), each streamed through the NDJSON line checker into .partial/NAME.
 *
 * The partial file always holds exactly the bytes the server sent, in order, so that its size is
 * the offset to resume from with a Range request, whether after a reset in this run or after a
 * kill -9 (the file is then re-scanned to rebuild the line counts, and cut back to its last
 * complete line). Nothing is removed while downloading; once the transfer ends the file is
 * finished:
 *   - strict attempt (the first): any bad line, a truncated last line or a count that differs
 *     from the manifest's fails the file, which is downloaded again from scratch (a damaged
 *     transfer is the likely cause); a bad line stops the transfer at once;
 *   - later attempt (quarantine mode): the good lines are kept, each bad line is written to
 *     quarantine/NAME with its line number and reason, a count mismatch is recorded there too,
 *     and the export ends as partial;
 *   - a clean file is fsync'ed and renamed into place; a file with something to drop (bad or
 *     empty lines, a byte order mark, a missing final newline) is copied line by line instead.
 * Then state.json records it, and only then the application hears FILE_DONE.
 *
 * Failures: 401 with the token renews it (once per attempt; parallel 401s renew once) and retries
 * at once; 408/429/5xx and network errors are retried with backoff honouring Retry-After (capped
 * by retry_cap), up to max_retries failures in a row without progress; a line longer than the cap,
 * 403, 404/410 (the file expired) and other 4xx stop the export with a clear error. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bulk/bulk_internal.h"
#include "fhir/fhir_internal.h"
#include "http/multi.h"
#include "http/ratelimit.h"

#define WRITE_BUFFER (256 * 1024)
#define COPY_BUFFER (256 * 1024)
#define QUARANTINE_TEXT_MAX (1024 * 1024)
#define BYTES_EVENT_MS 250
#define ERROR_SUMMARY_LINES 10000

/* ---- the partial file ----------------------------------------------------------------------- */

/* Start the kernel's write-back of what was written since the last call once it passes 4 MiB,
 * without waiting: the disk then works while the network does, and the fdatasync() that makes a
 * finished file durable has little left to do. */
#define WRITEBACK_STEP (4 * 1024 * 1024)
static void start_writeback(fs_bulk_file *f)
{
    off_t end = lseek(f->fd, 0, SEEK_END);
    if (end < 0 || (uint64_t)end < f->writeback_from + WRITEBACK_STEP)
        return;
    (void)sync_file_range(f->fd, (off_t)f->writeback_from, end - (off_t)f->writeback_from,
                          SYNC_FILE_RANGE_WRITE);
    f->writeback_from = (uint64_t)end;
}

static bool flush_buffer(fs_bulk_file *f)
{
    size_t off = 0;
    while (off < f->wlen) {
        ssize_t n = write(f->fd, f->wbuf + off, f->wlen - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fs_err(&f->io_err, FHIRSYNC_E_IO, "cannot write %s: %s", f->partial_path,
                   strerror(errno));
            return false;
        }
        off += (size_t)n;
    }
    f->wlen = 0;
    start_writeback(f);
    return true;
}

static bool buffer_write(fs_bulk_file *f, const char *data, size_t len)
{
    if (f->wlen + len > WRITE_BUFFER && !flush_buffer(f))
        return false;
    if (len >= WRITE_BUFFER) {
        size_t save = f->wlen;
        char *keep = f->wbuf;
        f->wbuf = (char *)data;
        f->wlen = len;
        bool ok = flush_buffer(f);
        f->wbuf = keep;
        f->wlen = ok ? 0 : save;
        return ok;
    }
    memcpy(f->wbuf + f->wlen, data, len);
    f->wlen += len;
    return true;
}

static void reset_counts(fhirsync_export *ex, fs_bulk_file *f)
{
    fs_ndjson_init(&f->ck, f->pub.kind == FHIRSYNC_EXPORT_OUTPUT    ? f->type
                           : f->pub.kind == FHIRSYNC_EXPORT_DELETED ? "Bundle"
                                                                   : "OperationOutcome",
                   ex->max_line);
    f->offset = 0;
    f->writeback_from = 0;
    f->good = f->bad = f->empty = 0;
    f->first_bad_line = 0;
    f->first_bad_reason[0] = '\0';
    f->wlen = 0;
}

/* Account for one line the checker finished. Returns false when the transfer must stop (strict
 * mode and a bad line). */
static bool count_line(fs_bulk_file *f)
{
    switch (f->ck.verdict) {
    case FS_NDJSON_OK: f->good++; return true;
    case FS_NDJSON_EMPTY: f->empty++; return true;
    case FS_NDJSON_BAD:
        f->bad++;
        if (!f->first_bad_line) {
            f->first_bad_line = f->ck.verdict_line;
            snprintf(f->first_bad_reason, sizeof f->first_bad_reason, "%s", f->ck.reason);
        }
        return f->quarantine_mode;
    }
    return true;
}

/* Start the file over: an empty partial file and fresh counts. */
static bool truncate_partial(fhirsync_export *ex, fs_bulk_file *f)
{
    reset_counts(ex, f);
    if (f->fd >= 0 && ftruncate(f->fd, 0) != 0) {
        fs_err(&f->io_err, FHIRSYNC_E_IO, "cannot truncate %s: %s", f->partial_path,
               strerror(errno));
        return false;
    }
    return true;
}

/* Open the partial file for the first attempt of this process: re-scan what an earlier run left
 * (cut back to its last complete line) so that the download resumes after it. */
static fhirsync_code open_partial(fhirsync_export *ex, fs_bulk_file *f, fhirsync_error *err)
{
    if (f->fd >= 0)
        return FHIRSYNC_OK;
    if (!f->wbuf && !(f->wbuf = fs_malloc(WRITE_BUFFER)))
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    f->fd = open(f->partial_path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (f->fd < 0)
        return fs_err(err, FHIRSYNC_E_IO, "cannot open %s: %s", f->partial_path,
                      strerror(errno));
    reset_counts(ex, f);
    struct stat st;
    if (fstat(f->fd, &st) != 0 || st.st_size == 0)
        return FHIRSYNC_OK;
    /* find the last '\n' and cut there */
    char *buf = fs_malloc(COPY_BUFFER);
    if (!buf)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    off_t end = st.st_size, keep = 0;
    while (end > 0 && keep == 0) {
        off_t from = end > COPY_BUFFER ? end - COPY_BUFFER : 0;
        ssize_t n = pread(f->fd, buf, (size_t)(end - from), from);
        if (n <= 0)
            break;
        char *nl = memrchr(buf, '\n', (size_t)n);
        if (nl)
            keep = from + (nl - buf) + 1;
        end = from;
    }
    fhirsync_code rc = FHIRSYNC_OK;
    if (keep != st.st_size && ftruncate(f->fd, keep) != 0) {
        rc = fs_err(err, FHIRSYNC_E_IO, "cannot truncate %s: %s", f->partial_path,
                    strerror(errno));
        goto out;
    }
    /* re-scan: the counts (and quarantine mode if an earlier run had to use it) */
    bool saved_mode = f->quarantine_mode;
    f->quarantine_mode = true;
    for (off_t pos = 0; pos < keep;) {
        ssize_t n = pread(f->fd, buf, (size_t)(keep - pos > COPY_BUFFER ? COPY_BUFFER
                                                                         : keep - pos), pos);
        if (n <= 0) {
            rc = fs_err(err, FHIRSYNC_E_IO, "cannot read %s: %s", f->partial_path,
                        n < 0 ? strerror(errno) : "unexpected end");
            goto out;
        }
        for (size_t off = 0; off < (size_t)n;) {
            size_t used;
            fs_ndjson_event ev = fs_ndjson_feed(&f->ck, buf + off, (size_t)n - off, &used);
            off += used;
            if (ev == FS_NDJSON_LINE)
                count_line(f);
        }
        pos += n;
    }
    f->offset = (uint64_t)keep;
    f->quarantine_mode = saved_mode || f->bad > 0;
    if (f->quarantine_mode)
        f->check_failures = 1;
    fs_log(FHIRSYNC_LOG_INFO, "export: %s: resuming after %lld bytes (%lld lines) of an earlier "
           "run", f->name, (long long)keep, (long long)(f->good + f->bad));
out:
    fs_free(buf);
    return rc;
}

/* ---- transfer callbacks --------------------------------------------------------------------- */

typedef struct dl_ctx {
    fhirsync_export *ex;
    fs_bulk_file *f;
} dl_ctx;

static bool on_response(void *userdata, const fs_http_response *resp)
{
    fs_bulk_file *f = ((dl_ctx *)userdata)->f;
    fhirsync_export *ex = ((dl_ctx *)userdata)->ex;
    long status = resp->status;
    if (status != 200 && status != 206)
        return true; /* an error body: buffered by the engine, judged when done */
    const char *ctype = fs_http_header_get(resp, "Content-Type");
    if (ctype && strcasestr(ctype, "html")) {
        f->html = true;
        return false;
    }
    if (status == 206) {
        /* Content-Range: bytes START-END/TOTAL, START must be where we asked to resume */
        const char *cr = fs_http_header_get(resp, "Content-Range");
        unsigned long long start = 0;
        if (f->range_from == 0 || !cr || sscanf(cr, "bytes %llu-", &start) != 1 ||
            start != f->range_from) {
            f->restart = true;
            return false;
        }
    } else if (f->range_from > 0) {
        /* the server ignored the Range: the whole file comes again */
        fs_log(FHIRSYNC_LOG_INFO, "export: %s: the server does not resume (HTTP 200 to a Range "
               "request): downloading it from the start", f->name);
        if (!truncate_partial(ex, f)) {
            f->abort_io = true;
            return false;
        }
    }
    if (ctype && !strcasestr(ctype, "ndjson") && f->received == 0 && f->offset == 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "Content-Type is \"%.100s\", not application/fhir+ndjson: "
                 "checking the lines anyway", ctype);
        fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_WARNING, f, msg, 0, FHIRSYNC_OK);
    }
    return true;
}

static bool on_data(const char *data, size_t len, void *userdata)
{
    fs_bulk_file *f = ((dl_ctx *)userdata)->f;
    fhirsync_export *ex = ((dl_ctx *)userdata)->ex;
    for (size_t off = 0; off < len;) {
        size_t used;
        fs_ndjson_event ev = fs_ndjson_feed(&f->ck, data + off, len - off, &used);
        off += used;
        if (ev == FS_NDJSON_LINE && !count_line(f)) {
            f->abort_check = true;
            return false;
        }
        if (ev == FS_NDJSON_TOO_LONG) {
            f->abort_too_long = true;
            return false;
        }
    }
    if (!buffer_write(f, data, len)) {
        f->abort_io = true;
        return false;
    }
    f->offset += len;
    f->received += len;
    ex->bytes_received += len;
    return true;
}

/* ---- finishing a file ----------------------------------------------------------------------- */

static bool write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        data += n;
        len -= (size_t)n;
    }
    return true;
}

/* Copy [from, to) of the partial file to out_fd. */
static bool copy_range(int in_fd, int out_fd, uint64_t from, uint64_t to, char *buf)
{
    while (from < to) {
        size_t want = to - from > COPY_BUFFER ? COPY_BUFFER : (size_t)(to - from);
        ssize_t n = pread(in_fd, buf, want, (off_t)from);
        if (n <= 0 || !write_all(out_fd, buf, (size_t)n))
            return false;
        from += (uint64_t)n;
    }
    return true;
}

/* One quarantine record: {"file","line","reason","text"} (text as a JSON string when it is valid
 * UTF-8, else base64url; cut at QUARANTINE_TEXT_MAX). */
static bool quarantine_record(int q_fd, const fs_bulk_file *f, uint64_t line, const char *reason,
                              int in_fd, uint64_t offset, uint64_t len)
{
    json_t *rec = json_pack("{s:s, s:s, s:s, s:I, s:s}", "file", f->name, "url", f->url,
                            "type", f->type, "line", (json_int_t)line, "reason", reason);
    if (!rec)
        return false;
    bool ok = true;
    if (in_fd >= 0) {
        size_t n = len > QUARANTINE_TEXT_MAX ? QUARANTINE_TEXT_MAX : (size_t)len;
        char *text = fs_malloc(n + 1);
        ok = text && pread(in_fd, text, n, (off_t)offset) == (ssize_t)n;
        if (ok) {
            while (n > 0 && text[n - 1] == '\r')
                n--;
            json_t *s = json_stringn(text, n);
            if (s) {
                json_object_set_new(rec, "text", s);
            } else {
                char *b64 = fs_b64url_encode((const unsigned char *)text, n);
                ok = b64 != NULL;
                if (b64)
                    json_object_set_new(rec, "text_base64url", json_string(b64));
                fs_free(b64);
            }
            if (len > n)
                json_object_set_new(rec, "text_truncated", json_true());
        }
        fs_free(text);
    }
    char *line_text = ok ? fs_json_dump(rec) : NULL;
    ok = line_text && write_all(q_fd, line_text, strlen(line_text)) && write_all(q_fd, "\n", 1);
    fs_free(line_text);
    json_decref(rec);
    return ok;
}

static char *parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? fs_strndup(path, (size_t)(slash - path)) : fs_strdup(".");
}

/* Rename src to dst (creating dst's folder), then fsync dst's folder unless it is the export
 * folder itself, whose fsync by the state.json save that follows covers this rename too. */
static fhirsync_code put_in_place(fhirsync_export *ex, const char *src, const char *dst,
                                  fhirsync_error *err)
{
    char *dir = parent_dir(dst);
    if (!dir)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    fhirsync_code rc = fs_bulk_mkdirs(dir, err);
    if (rc == FHIRSYNC_OK && rename(src, dst) != 0)
        rc = fs_err(err, FHIRSYNC_E_IO, "cannot rename %s to %s: %s", src, dst, strerror(errno));
    if (rc == FHIRSYNC_OK && strcmp(dir, ex->dir) != 0 && !fs_bulk_fsync_dir(dir))
        rc = fs_err(err, FHIRSYNC_E_IO, "cannot fsync folder %s: %s", dir, strerror(errno));
    fs_free(dir);
    return rc;
}

/* Copy the good lines of the partial file into place and the bad ones into quarantine/NAME. */
static fhirsync_code filter_copy(fhirsync_export *ex, fs_bulk_file *f, bool count_mismatch,
                                 uint64_t lines, fhirsync_error *err)
{
    fs_buf tmp, qtmp, qpath;
    fs_buf_init(&tmp);
    fs_buf_init(&qtmp);
    fs_buf_init(&qpath);
    char *buf = fs_malloc(COPY_BUFFER), *copybuf = fs_malloc(COPY_BUFFER);
    int out_fd = -1, q_fd = -1;
    fhirsync_code rc = FHIRSYNC_OK;
    if (!buf || !copybuf || !fs_buf_printf(&tmp, "%s.final", f->partial_path) ||
        !fs_buf_printf(&qtmp, "%s.quarantine", f->partial_path) ||
        !fs_buf_printf(&qpath, "%s/quarantine/%s", ex->dir, f->name)) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
    out_fd = open(tmp.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    q_fd = open(qtmp.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out_fd < 0 || q_fd < 0) {
        rc = fs_err(err, FHIRSYNC_E_IO, "cannot create %s: %s", out_fd < 0 ? tmp.data : qtmp.data,
                    strerror(errno));
        goto out;
    }
    fs_ndjson_checker ck;
    fs_ndjson_init(&ck, f->ck.expect_type, ex->max_line);
    uint64_t run_start = 0, pos = 0, size = f->offset;
    unsigned char head[3];
    if (size >= 3 && pread(f->fd, head, 3, 0) == 3 && head[0] == 0xef && head[1] == 0xbb &&
        head[2] == 0xbf)
        run_start = 3; /* the byte order mark is not copied */
    bool io_ok = true;
    int64_t kept = 0, quarantined = 0;
    bool last_unterminated = false;
    while (io_ok && pos < size) {
        size_t want = size - pos > COPY_BUFFER ? COPY_BUFFER : (size_t)(size - pos);
        ssize_t n = pread(f->fd, buf, want, (off_t)pos);
        if (n <= 0) {
            io_ok = false;
            break;
        }
        for (size_t off = 0; io_ok && off < (size_t)n;) {
            size_t used;
            fs_ndjson_event ev = fs_ndjson_feed(&ck, buf + off, (size_t)n - off, &used);
            off += used;
            if (ev != FS_NDJSON_LINE)
                continue;
            if (ck.verdict == FS_NDJSON_OK) {
                kept++;
                continue; /* stays in the current run of good lines */
            }
            /* copy the run of good lines before this one, then skip or quarantine it */
            io_ok = copy_range(f->fd, out_fd, run_start, ck.verdict_offset, copybuf);
            if (io_ok && ck.verdict == FS_NDJSON_BAD) {
                quarantined++;
                io_ok = quarantine_record(q_fd, f, ck.verdict_line, ck.reason, f->fd,
                                          ck.verdict_offset, ck.verdict_len);
            }
            run_start = ck.file_offset; /* just past this line's '\n' */
        }
        pos += (uint64_t)n;
    }
    if (io_ok && fs_ndjson_finish(&ck)) {
        if (ck.verdict == FS_NDJSON_OK) {
            kept++;
            last_unterminated = true;
        } else {
            io_ok = copy_range(f->fd, out_fd, run_start, ck.verdict_offset, copybuf);
            run_start = size;
            if (io_ok && ck.verdict == FS_NDJSON_BAD) {
                quarantined++;
                io_ok = quarantine_record(q_fd, f, ck.verdict_line, ck.reason, f->fd,
                                          ck.verdict_offset, ck.verdict_len);
            }
        }
    }
    if (io_ok && run_start < size)
        io_ok = copy_range(f->fd, out_fd, run_start, size, copybuf);
    if (io_ok && last_unterminated)
        io_ok = write_all(out_fd, "\n", 1);
    if (io_ok && count_mismatch) {
        char reason[160];
        snprintf(reason, sizeof reason, "count mismatch: the manifest says %lld, the file has "
                 "%llu line(s)", (long long)f->pub.manifest_count, (unsigned long long)lines);
        io_ok = quarantine_record(q_fd, f, 0, reason, -1, 0, 0);
    }
    if (!io_ok || fsync(out_fd) != 0 || fsync(q_fd) != 0) {
        rc = fs_err(err, FHIRSYNC_E_IO, "cannot copy %s into place: %s", f->partial_path,
                    strerror(errno));
        goto out;
    }
    struct stat st;
    f->pub.bytes = fstat(out_fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    close(out_fd);
    out_fd = -1;
    close(q_fd);
    q_fd = -1;
    if (quarantined > 0 || count_mismatch)
        rc = put_in_place(ex, qtmp.data, qpath.data, err);
    else
        unlink(qtmp.data);
    if (rc == FHIRSYNC_OK)
        rc = put_in_place(ex, tmp.data, f->path, err);
    f->pub.count = kept;
    f->pub.quarantined = quarantined;
out:
    if (out_fd >= 0)
        close(out_fd);
    if (q_fd >= 0)
        close(q_fd);
    fs_free(buf);
    fs_free(copybuf);
    fs_buf_free(&tmp);
    fs_buf_free(&qtmp);
    fs_buf_free(&qpath);
    return rc;
}

/* A short summary of an error file's OperationOutcomes for a WARNING event. */
static void summarise_errors(fhirsync_export *ex, fs_bulk_file *f)
{
    char *text = NULL;
    size_t len = 0;
    if (fs_bulk_read_file(f->path, 4 * 1024 * 1024, &text, &len, NULL) != FHIRSYNC_OK)
        return;
    fs_buf msg;
    fs_buf_init(&msg);
    fs_buf_printf(&msg, "%lld OperationOutcome(s) from the server", (long long)f->pub.count);
    unsigned shown = 0;
    char *line = text;
    for (unsigned i = 0; line && *line && i < ERROR_SUMMARY_LINES; i++) {
        char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        fs_outcome oo;
        if (shown < 3 && fs_outcome_parse(line, n, &oo)) {
            fs_buf_printf(&msg, "%s %s", shown ? ";" : ":", oo.summary);
            shown++;
        }
        line = nl ? nl + 1 : NULL;
    }
    if (f->pub.count > (int64_t)shown && shown)
        fs_buf_append_str(&msg, "; ...");
    if (msg.data)
        fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_WARNING, f, msg.data, 0, FHIRSYNC_OK);
    fs_buf_free(&msg);
    fs_free(text);
}

typedef enum finish_result { FINISHED = 0, RETRY_STRICT = 1, FAILED = 2 } finish_result;

/* The transfer of f ended with the whole file: check it and put it in place. */
static finish_result finish_file(fhirsync_export *ex, fs_bulk_file *f, fhirsync_error *err)
{
    if (!flush_buffer(f)) {
        *err = f->io_err;
        return FAILED;
    }
    bool unterminated = fs_ndjson_finish(&f->ck);
    if (unterminated)
        count_line(f);
    uint64_t lines = (uint64_t)(f->good + f->bad);
    bool mismatch = f->pub.manifest_count >= 0 && lines != (uint64_t)f->pub.manifest_count;
    if (!f->quarantine_mode && (f->bad > 0 || mismatch)) {
        char msg[400];
        if (f->bad > 0)
            snprintf(msg, sizeof msg, "line %llu: %s; downloading the file again",
                     (unsigned long long)f->first_bad_line, f->first_bad_reason);
        else
            snprintf(msg, sizeof msg, "the file has %llu line(s) where the manifest says %lld; "
                     "downloading it again", (unsigned long long)lines,
                     (long long)f->pub.manifest_count);
        fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_WARNING, f, msg, 0, FHIRSYNC_OK);
        return RETRY_STRICT;
    }
    fhirsync_code rc = FHIRSYNC_OK;
    bool bom = f->ck.bom;
    if (f->bad == 0 && f->empty == 0 && !bom && !unterminated && !mismatch) {
        if (fdatasync(f->fd) != 0) {
            fs_err(err, FHIRSYNC_E_IO, "cannot fsync %s: %s", f->partial_path, strerror(errno));
            return FAILED;
        }
        rc = put_in_place(ex, f->partial_path, f->path, err);
        f->pub.count = f->good;
        f->pub.quarantined = 0;
        f->pub.bytes = f->offset;
    } else {
        rc = filter_copy(ex, f, mismatch, lines, err);
        if (rc == FHIRSYNC_OK)
            unlink(f->partial_path);
    }
    if (rc != FHIRSYNC_OK)
        return FAILED;
    close(f->fd);
    f->fd = -1;
    fs_free(f->wbuf);
    f->wbuf = NULL;
    f->pub.done = true;
    if (!fs_bulk_state_add_done(&ex->st, f->name, f->pub.count, f->pub.quarantined,
                                f->pub.bytes)) {
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        return FAILED;
    }
    if (fs_bulk_state_save(&ex->st, ex->dir, err) != FHIRSYNC_OK)
        return FAILED;
    char msg[400];
    if (bom)
        fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_WARNING, f,
                     "the file starts with a UTF-8 byte order mark (removed)", 0, FHIRSYNC_OK);
    if (f->empty > 0) {
        snprintf(msg, sizeof msg, "%lld empty line(s) skipped (NDJSON has none)",
                 (long long)f->empty);
        fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_WARNING, f, msg, 0, FHIRSYNC_OK);
    }
    if (f->pub.quarantined > 0 || mismatch) {
        ex->partial_result = true;
        if (mismatch)
            snprintf(msg, sizeof msg, "%lld line(s) quarantined; the file has %llu line(s) where "
                     "the manifest says %lld (see quarantine/%s)", (long long)f->pub.quarantined,
                     (unsigned long long)lines, (long long)f->pub.manifest_count, f->name);
        else
            snprintf(msg, sizeof msg, "%lld line(s) quarantined, first at line %llu: %s (see "
                     "quarantine/%s)", (long long)f->pub.quarantined,
                     (unsigned long long)f->first_bad_line, f->first_bad_reason, f->name);
        fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_WARNING, f, msg, 0, FHIRSYNC_OK);
    }
    fs_log(FHIRSYNC_LOG_INFO, "export: %s done: %lld resources, %llu bytes", f->name,
           (long long)f->pub.count, (unsigned long long)f->pub.bytes);
    fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_FILE_DONE, f, NULL, 0, FHIRSYNC_OK);
    if (f->pub.kind == FHIRSYNC_EXPORT_ERROR && f->pub.count > 0)
        summarise_errors(ex, f);
    return FINISHED;
}

/* ---- the loop ------------------------------------------------------------------------------- */

typedef struct loop {
    fhirsync_export *ex;
    fs_multi *multi;
    dl_ctx *ctx;                   /* one per file */
    const char **headers;
    size_t active;
} loop;

static fhirsync_code start_file(loop *lp, fs_bulk_file *f, fhirsync_error *err)
{
    fhirsync_export *ex = lp->ex;
    fhirsync_code rc = open_partial(ex, f, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    bool with_token = ex->man.requires_token;
    if (with_token && (rc = fs_bulk_token(ex, false, err)) != FHIRSYNC_OK)
        return rc;
    rc = fs_ratelimit_acquire(ex->base_url, fhirsync_endpoint_get(ex->ep, "client_id"),
                              ex->rate_limit, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    f->range_from = f->offset;
    f->received = 0;
    f->abort_check = f->abort_too_long = f->abort_io = f->restart = f->html = false;
    f->token_gen = ex->token_gen;
    fs_multi_request req = {
        .url = f->url,
        .headers = lp->headers,
        .bearer_token = with_token ? ex->token : NULL,
        .token_origin = with_token ? ex->base_url : NULL,
        .redirects = FS_REDIRECT_DROP_TOKEN,
        .range_from = (int64_t)f->offset,
        .identity = f->offset > 0,
        .connect_timeout_s = ex->connect_timeout_s,
        .stall_timeout_s = ex->timeout_s,
        .ca_file = fhirsync_endpoint_get(ex->ep, "ca_file"),
        .on_response = on_response,
        .sink = on_data,
        .userdata = &lp->ctx[f->index],
    };
    rc = fs_multi_add(lp->multi, &req, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    f->active = true;
    lp->active++;
    char msg[96];
    if (f->offset > 0)
        snprintf(msg, sizeof msg, "resuming at byte %llu", (unsigned long long)f->offset);
    fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_FILE_STARTED, f, f->offset > 0 ? msg : NULL, 0,
                 FHIRSYNC_OK);
    return FHIRSYNC_OK;
}

static bool retryable_status(long status)
{
    return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 ||
           status == 504;
}

/* Schedule another attempt after a failure; FHIRSYNC_OK, or the error once retries run out. */
static fhirsync_code schedule_retry(fhirsync_export *ex, fs_bulk_file *f, const char *why,
                                    int64_t retry_after_s, fhirsync_code code, long status,
                                    fhirsync_error *err)
{
    if (f->received > 0)
        f->failures = 0; /* progress was made: the budget starts again */
    if (f->failures >= (unsigned)ex->max_retries)
        return fs_err_http(err, code, status, "%s: %s (after %u retries)", f->name, why,
                           f->failures);
    int64_t delay = fs_backoff_ms(f->failures, retry_after_s, ex->retry_cap);
    f->failures++;
    f->not_before_ms = fs_monotonic_ms() + delay;
    char msg[sizeof err->message + 64];
    snprintf(msg, sizeof msg, "%s; retry %u of %ld%s", why, f->failures, ex->max_retries,
             f->offset > 0 ? " (resuming with a Range request)" : "");
    fs_log(FHIRSYNC_LOG_WARN, "export: %s: %s in %.1f s", f->name, msg, (double)delay / 1000.0);
    fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_RETRY, f, msg, delay, FHIRSYNC_OK);
    return FHIRSYNC_OK;
}

static fhirsync_code handle_done(loop *lp, fs_multi_done *d, fhirsync_error *err)
{
    fhirsync_export *ex = lp->ex;
    fs_bulk_file *f = ((dl_ctx *)d->userdata)->f;
    f->active = false;
    lp->active--;
    fs_http_response *resp = &d->resp;
    long status = resp->status;
    const char *url = resp->effective_url ? resp->effective_url : f->url;
    fhirsync_code rc = FHIRSYNC_OK;

    if (f->abort_too_long)
        return fs_err(err, FHIRSYNC_E_PROTOCOL, "%s (%s): line %llu is longer than the "
                      "%llu-byte limit (raise it with --max-line if such lines are expected)",
                      f->name, f->url, (unsigned long long)f->ck.line_no,
                      (unsigned long long)ex->max_line);
    if (f->abort_io) {
        *err = f->io_err;
        return err->code ? err->code : FHIRSYNC_E_IO;
    }
    if (f->abort_check) {
        /* strict attempt: a bad line. Start over, keeping the bad lines next time. */
        char msg[400];
        snprintf(msg, sizeof msg, "line %llu: %s; downloading the file again",
                 (unsigned long long)f->first_bad_line, f->first_bad_reason);
        fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_WARNING, f, msg, 0, FHIRSYNC_OK);
        f->check_failures++;
        f->quarantine_mode = true;
        return truncate_partial(ex, f) ? FHIRSYNC_OK : (*err = f->io_err, FHIRSYNC_E_IO);
    }
    /* what arrived so far is good: keep it on disk for a resume */
    if (!flush_buffer(f)) {
        *err = f->io_err;
        return FHIRSYNC_E_IO;
    }
    if (f->restart || f->html) {
        const char *why = f->html ? "the server answered an HTML page instead of NDJSON"
                                  : "the server answered a Range request with another range";
        if (!truncate_partial(ex, f)) {
            *err = f->io_err;
            return FHIRSYNC_E_IO;
        }
        return schedule_retry(ex, f, why, -1, FHIRSYNC_E_PROTOCOL, status, err);
    }
    if (d->code == FHIRSYNC_OK && (status == 200 || status == 206)) {
        finish_result fr = finish_file(ex, f, err);
        if (fr == FAILED)
            return err->code ? err->code : FHIRSYNC_E_IO;
        if (fr == RETRY_STRICT) {
            f->check_failures++;
            f->quarantine_mode = true;
            if (!truncate_partial(ex, f)) {
                *err = f->io_err;
                return FHIRSYNC_E_IO;
            }
        }
        return FHIRSYNC_OK;
    }
    if (d->code == FHIRSYNC_OK && status == 416) {
        /* nothing after our offset: the partial file is the whole file (a run stopped between
         * the last byte and the rename) */
        const char *cr = fs_http_header_get(resp, "Content-Range");
        unsigned long long total = 0;
        if (cr && sscanf(cr, "bytes */%llu", &total) == 1 && total == f->offset) {
            finish_result fr = finish_file(ex, f, err);
            if (fr == FAILED)
                return err->code ? err->code : FHIRSYNC_E_IO;
            if (fr == RETRY_STRICT) {
                f->check_failures++;
                f->quarantine_mode = true;
                if (!truncate_partial(ex, f))
                    return (*err = f->io_err, FHIRSYNC_E_IO);
            }
            return FHIRSYNC_OK;
        }
        if (!truncate_partial(ex, f))
            return (*err = f->io_err, FHIRSYNC_E_IO);
        return schedule_retry(ex, f, "HTTP 416 to a Range request", -1, FHIRSYNC_E_PROTOCOL,
                              status, err);
    }
    if (d->code == FHIRSYNC_OK && status == 401 && resp->token_sent) {
        if (f->renewed_for_401)
            return fs_err_http(err, FHIRSYNC_E_UNAUTHORIZED, 401, "%s: HTTP 401 from %s even "
                               "with a new token", f->name, url);
        f->renewed_for_401 = true;
        /* several downloads may get a 401 for the same token: renew it once */
        if (f->token_gen == ex->token_gen && (rc = fs_bulk_token(ex, true, err)) != FHIRSYNC_OK)
            return rc;
        f->not_before_ms = 0;
        return FHIRSYNC_OK;
    }
    if (d->code == FHIRSYNC_OK && retryable_status(status)) {
        int64_t retry_after = -1;
        const char *ra = fs_http_header_get(resp, "Retry-After");
        if (!ra || !fs_parse_retry_after(ra, fs_now(), &retry_after))
            retry_after = -1;
        fhirsync_error e = {0};
        fs_fhir_status_error(resp, url, &e);
        return schedule_retry(ex, f, e.message, retry_after, e.code, status, err);
    }
    if (d->code == FHIRSYNC_OK) {
        rc = status >= 200 && status < 300
                 ? fs_err_http(err, FHIRSYNC_E_PROTOCOL, status,
                               "HTTP %ld from %s (expected 200 with the file)", status, url)
                 : fs_fhir_status_error(resp, url, err);
        if (status == 404 || status == 410)
            fs_err_prefix(err, "%s is gone (servers keep export files for a limited time: start "
                          "a new export)", f->name);
        else
            fs_err_prefix(err, "%s", f->name);
        return rc;
    }
    if (d->code == FHIRSYNC_E_NETWORK || d->code == FHIRSYNC_E_TIMEOUT)
        return schedule_retry(ex, f, d->err.message, -1, d->code, 0, err);
    *err = d->err;
    fs_err_prefix(err, "%s", f->name);
    return d->code;
}

/* The next file to start: not done, not running, its backoff over. */
static fs_bulk_file *next_ready(fhirsync_export *ex, int64_t now, int64_t *soonest)
{
    *soonest = -1;
    for (size_t i = 0; i < ex->nfiles; i++) {
        fs_bulk_file *f = &ex->files[i];
        if (f->pub.done || f->active)
            continue;
        if (f->not_before_ms <= now)
            return f;
        if (*soonest < 0 || f->not_before_ms < *soonest)
            *soonest = f->not_before_ms;
    }
    return NULL;
}

fhirsync_code fs_bulk_download_all(fhirsync_export *ex)
{
    fhirsync_error *err = &ex->err;
    loop lp = {.ex = ex};
    fhirsync_code rc = FHIRSYNC_OK;
    size_t nprofile = fhirsync_endpoint_count(ex->ep, "header");
    lp.headers = fs_calloc(nprofile + 2, sizeof *lp.headers);
    lp.ctx = fs_calloc(ex->nfiles ? ex->nfiles : 1, sizeof *lp.ctx);
    lp.multi = fs_multi_new(NULL);
    if (!lp.headers || !lp.ctx || !lp.multi) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
    lp.headers[0] = "Accept: " FS_FHIR_NDJSON;
    for (size_t i = 0; i < nprofile; i++)
        lp.headers[i + 1] = fhirsync_endpoint_get_at(ex->ep, "header", i);
    for (size_t i = 0; i < ex->nfiles; i++) {
        lp.ctx[i].ex = ex;
        lp.ctx[i].f = &ex->files[i];
    }
    bool any = false;
    for (size_t i = 0; i < ex->nfiles; i++)
        any = any || !ex->files[i].pub.done;
    if (any && (rc = fs_bulk_mkdirs(ex->partial_dir, err)) != FHIRSYNC_OK)
        goto out;
    for (;;) {
        if (fs_cancel_requested() || ex->cb_stop) {
            rc = fs_err(err, FHIRSYNC_E_CANCELLED, "export interrupted; the folder keeps what "
                        "was downloaded: run the same command again (or --resume %s) to finish",
                        ex->dir);
            break;
        }
        size_t remaining = 0;
        for (size_t i = 0; i < ex->nfiles; i++)
            remaining += !ex->files[i].pub.done;
        if (remaining == 0)
            break;
        int64_t now = fs_monotonic_ms(), soonest = -1;
        fs_bulk_file *f;
        while (lp.active < (size_t)ex->parallel && (f = next_ready(ex, now, &soonest))) {
            f->renewed_for_401 = f->renewed_for_401 && f->not_before_ms == 0;
            rc = start_file(&lp, f, err);
            if (rc != FHIRSYNC_OK)
                goto out;
        }
        if (lp.active == 0) {
            int64_t wait = soonest > now ? soonest - now : 10;
            fs_sleep_ms(wait > 100 ? 100 : wait);
            continue;
        }
        fs_multi_done d;
        if (fs_multi_poll(lp.multi, 100, &d)) {
            rc = handle_done(&lp, &d, err);
            fs_http_response_clear(&d.resp);
            if (rc != FHIRSYNC_OK)
                goto out;
        }
        now = fs_monotonic_ms();
        if (now - ex->last_bytes_event_ms >= BYTES_EVENT_MS) {
            ex->last_bytes_event_ms = now;
            fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_BYTES, NULL, NULL, 0, FHIRSYNC_OK);
        }
    }
out:
    /* running transfers stop here; what they wrote is a valid prefix for the next run */
    fs_multi_free(lp.multi);
    for (size_t i = 0; i < ex->nfiles; i++) {
        fs_bulk_file *f = &ex->files[i];
        if (f->fd >= 0) {
            flush_buffer(f);
            close(f->fd);
            f->fd = -1;
        }
        f->active = false;
        fs_free(f->wbuf);
        f->wbuf = NULL;
    }
    fs_free(lp.headers);
    fs_free(lp.ctx);
    return rc;
}
