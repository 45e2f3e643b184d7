/* bulk/writer.c: the file side of the downloads, on threads of its own. The transfers
 * (download.c) run on the export's thread, which copies every received byte into blocks and
 * queues them here:
 *   checker  checks each line of each block (ndjson.c), appends the block to .partial/NAME and
 *            starts its write-back; at the end of a transfer, checks the end of the file;
 *   syncers  (up to MAX_SYNCERS, one queue) put a finished file in place: fdatasync and rename,
 *            or a filtered copy with the bad lines in quarantine/NAME; and write the state.json
 *            saves handed to them.
 * A file whose transfer ended is then handed back ("settled"); the export's thread records it in
 * state.json and reports it. So events and state.json stay on the export's thread, and a file is
 * recorded only after its bytes were checked, fsync'ed and renamed here.
 *
 * Why: checking and writing cost about as much CPU as receiving, and every fsync waits for the
 * disk (tens of ms when it is busy); on one thread the transfers stood still meanwhile. Now the
 * network, the checks and the disk overlap, and the export's thread never waits for a disk flush
 * while transfers run.
 *
 * Memory is bounded: a fixed pool of blocks (one being filled per transfer, plus QUEUE_BLOCKS
 * queued), BLOCK_SIZE each. When every block is in use the export's thread waits for one, so the
 * transfers pause (TCP pushes back on the server) and a slow disk slows the downloads instead of
 * filling memory.
 *
 * Ownership of a file's fields is handed over through the queues' mutex (see fs_bulk_scratch in
 * bulk_internal.h): the partial file, the line checker and the counts belong to the checker from
 * the first queued bytes of a transfer, then (with the end item, when the file is to be put in
 * place) to the syncer, until the file settles. The one field used by several threads at any time
 * is the atomic `stop`: set here when the transfer should end early (a bad line in a strict
 * attempt, a line over the cap, a write error), seen by the receiving side at its next bytes. If
 * the threads cannot be started, the same work runs inline on the export's thread.
 *
 * The partial file always holds exactly the bytes the server sent, in order (its size is the
 * offset to resume from); nothing is removed from it while it downloads. A finished file with
 * nothing to drop is fsync'ed and renamed into place; one with bad or empty lines, a byte order
 * mark or a missing final newline is copied line by line instead. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bulk/bulk_internal.h"

#define BLOCK_SIZE (256 * 1024)
#define QUEUE_BLOCKS 8
#define COPY_BUFFER (256 * 1024)
#define QUARANTINE_TEXT_MAX (1024 * 1024)

/* Start the kernel's write-back of what was written since the last call once it passes this,
 * without waiting: the disk then works while the network does, and the fdatasync() that makes a
 * finished file durable has little left to do. */
#define WRITEBACK_STEP (1024 * 1024)

/* A queued piece of work: a block of a file's bytes, the end of its transfer, or a save. */
typedef struct fs_bulk_item {
    struct fs_bulk_item *next;
    fs_bulk_file *f; /* NULL: a state.json save */
    char *data;      /* BLOCK_SIZE bytes; NULL for an end item */
    size_t len;
    bool finish;      /* end item: finish the file */
    int64_t whole_at; /* end item: finish it if the partial file has this size */
    char *text;       /* save item: the new state.json */
} fs_bulk_item;

/* The syncers: fsyncs issued together share the file system's journal commits and the disk's
 * cache flushes, which cost the most at the end of an export (several files finishing at once). */
#define MAX_SYNCERS 4

enum { CHECKER = 0, SYNCER = 1 };

typedef struct queue {
    fs_bulk_item *head, *tail;
    pthread_cond_t work; /* an item was queued, or quit */
    bool quit;
} queue;

typedef struct worker {
    struct fs_bulk_writer *w;
    int which; /* the queue it serves */
    pthread_t thread;
    bool running;
} worker;

struct fs_bulk_writer {
    fhirsync_export *ex;
    pthread_mutex_t lock;            /* everything below */
    queue queues[2];                 /* the checker's, the syncers' */
    worker workers[1 + MAX_SYNCERS]; /* the checker, then the syncers */
    size_t nworkers;
    pthread_cond_t space; /* a block came back to the pool */
    pthread_cond_t news;  /* a file settled, or a save completed */
    fs_bulk_item *pool;   /* free blocks */
    fs_bulk_item *blocks; /* every block */
    char *memory;         /* their bytes */
    fs_bulk_item *ends;   /* one end item per file */
    fs_bulk_item save;    /* the one state.json save that may be under way */
    bool save_done;       /* it completed (save_err.code: how) */
    fhirsync_error save_err;
    fs_bulk_file *settled_head, *settled_tail;
    void (*wake)(void *);
    void *wake_arg;
    bool threaded; /* the threads run (else everything runs inline) */
};

/* ---- the partial file ----------------------------------------------------------------------- */

static void start_writeback(fs_bulk_file *f)
{
    if (f->x->offset < f->x->writeback_from + WRITEBACK_STEP)
        return;
    (void)sync_file_range(f->x->fd, (off_t)f->x->writeback_from,
                          (off_t)(f->x->offset - f->x->writeback_from), SYNC_FILE_RANGE_WRITE);
    f->x->writeback_from = f->x->offset;
}

static void reset_counts(fhirsync_export *ex, fs_bulk_file *f)
{
    fs_ndjson_init(&f->x->ck,
                   f->pub.kind == FHIRSYNC_EXPORT_OUTPUT    ? f->type
                   : f->pub.kind == FHIRSYNC_EXPORT_DELETED ? "Bundle"
                                                            : "OperationOutcome",
                   ex->max_line);
    f->x->offset = 0;
    f->x->writeback_from = 0;
    f->x->good = f->x->bad = f->x->empty = 0;
    f->x->first_bad_line = 0;
    f->x->first_bad_reason[0] = '\0';
}

/* Account for one line the checker finished. Returns false when the transfer must stop (strict
 * mode and a bad line). */
static bool count_line(fs_bulk_file *f)
{
    switch (f->x->ck.verdict) {
    case FS_NDJSON_OK: f->x->good++; return true;
    case FS_NDJSON_EMPTY: f->x->empty++; return true;
    case FS_NDJSON_BAD:
        f->x->bad++;
        if (!f->x->first_bad_line) {
            f->x->first_bad_line = f->x->ck.verdict_line;
            snprintf(f->x->first_bad_reason, sizeof f->x->first_bad_reason, "%s", f->x->ck.reason);
        }
        return f->x->quarantine_mode;
    }
    return true;
}

bool fs_bulk_partial_truncate(fhirsync_export *ex, fs_bulk_file *f)
{
    reset_counts(ex, f);
    if (f->x->fd >= 0 && ftruncate(f->x->fd, 0) != 0) {
        fs_err(&f->x->io_err, FHIRSYNC_E_IO, "cannot truncate %s: %s", f->x->partial_path,
               strerror(errno));
        return false;
    }
    return true;
}

fhirsync_code fs_bulk_partial_open(fhirsync_export *ex, fs_bulk_file *f, fhirsync_error *err)
{
    if (f->x && f->x->fd >= 0)
        return FHIRSYNC_OK;
    if (!f->x) {
        if (!(f->x = fs_calloc(1, sizeof *f->x)))
            return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        f->x->fd = -1;
    }
    if (!f->x->partial_path) {
        /* PARTIAL/[deleted-|error-]Type.N.ndjson: the name with its folder's '/' as a '-' */
        size_t len = strlen(ex->partial_dir) + 1 + strlen(f->name);
        if (!(f->x->partial_path = fs_malloc(len + 1)))
            return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        snprintf(f->x->partial_path, len + 1, "%s/%s", ex->partial_dir, f->name);
        char *slash = strchr(f->x->partial_path + strlen(ex->partial_dir) + 1, '/');
        if (slash)
            *slash = '-';
    }
    f->x->fd = open(f->x->partial_path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (f->x->fd < 0)
        return fs_err(err, FHIRSYNC_E_IO, "cannot open %s: %s", f->x->partial_path,
                      strerror(errno));
    reset_counts(ex, f);
    struct stat st;
    if (fstat(f->x->fd, &st) != 0 || st.st_size == 0)
        return FHIRSYNC_OK;
    /* find the last '\n' and cut there */
    char *buf = fs_malloc(COPY_BUFFER);
    if (!buf)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    off_t end = st.st_size, keep = 0;
    while (end > 0 && keep == 0) {
        off_t from = end > COPY_BUFFER ? end - COPY_BUFFER : 0;
        ssize_t n = pread(f->x->fd, buf, (size_t)(end - from), from);
        if (n <= 0)
            break;
        char *nl = memrchr(buf, '\n', (size_t)n);
        if (nl)
            keep = from + (nl - buf) + 1;
        end = from;
    }
    fhirsync_code rc = FHIRSYNC_OK;
    if (keep != st.st_size && ftruncate(f->x->fd, keep) != 0) {
        rc = fs_err(err, FHIRSYNC_E_IO, "cannot truncate %s: %s", f->x->partial_path,
                    strerror(errno));
        goto out;
    }
    /* re-scan: the counts (and quarantine mode if an earlier run had to use it) */
    bool saved_mode = f->x->quarantine_mode;
    f->x->quarantine_mode = true;
    for (off_t pos = 0; pos < keep;) {
        ssize_t n = pread(f->x->fd, buf,
                          (size_t)(keep - pos > COPY_BUFFER ? COPY_BUFFER : keep - pos), pos);
        if (n <= 0) {
            rc = fs_err(err, FHIRSYNC_E_IO, "cannot read %s: %s", f->x->partial_path,
                        n < 0 ? strerror(errno) : "unexpected end");
            goto out;
        }
        for (size_t off = 0; off < (size_t)n;) {
            size_t used;
            fs_ndjson_event ev = fs_ndjson_feed(&f->x->ck, buf + off, (size_t)n - off, &used);
            off += used;
            if (ev == FS_NDJSON_LINE)
                count_line(f);
        }
        pos += n;
    }
    f->x->offset = (uint64_t)keep;
    f->x->writeback_from = f->x->offset;
    f->x->quarantine_mode = saved_mode || f->x->bad > 0;
    if (f->x->quarantine_mode)
        f->x->check_failures = 1;
    fs_log(FHIRSYNC_LOG_INFO,
           "export: %s: resuming after %lld bytes (%lld lines) of an earlier "
           "run",
           f->name, (long long)keep, (long long)(f->x->good + f->x->bad));
out:
    fs_free(buf);
    return rc;
}

/* ---- checking and writing a block ----------------------------------------------------------- */

static void write_block(fs_bulk_file *f, const char *data, size_t len)
{
    if (f->x->abort_check || f->x->abort_too_long || f->x->abort_io)
        return; /* the transfer is being stopped: the rest of it is dropped */
    for (size_t off = 0; off < len;) {
        size_t used;
        fs_ndjson_event ev = fs_ndjson_feed(&f->x->ck, data + off, len - off, &used);
        off += used;
        if (ev == FS_NDJSON_LINE && !count_line(f)) {
            f->x->abort_check = true;
            goto stop;
        }
        if (ev == FS_NDJSON_TOO_LONG) {
            f->x->abort_too_long = true;
            goto stop;
        }
    }
    if (!fs_write_all(f->x->fd, data, len)) {
        fs_err(&f->x->io_err, FHIRSYNC_E_IO, "cannot write %s: %s", f->x->partial_path,
               strerror(errno));
        f->x->abort_io = true;
        goto stop;
    }
    f->x->offset += len;
    start_writeback(f);
    return;
stop:
    atomic_store(&f->x->stop, true);
}

/* ---- finishing a file ----------------------------------------------------------------------- */

/* Copy [from, to) of the partial file to out_fd. */
static bool copy_range(int in_fd, int out_fd, uint64_t from, uint64_t to, char *buf)
{
    while (from < to) {
        size_t want = to - from > COPY_BUFFER ? COPY_BUFFER : (size_t)(to - from);
        ssize_t n = pread(in_fd, buf, want, (off_t)from);
        if (n <= 0 || !fs_write_all(out_fd, buf, (size_t)n))
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
    json_t *rec = json_pack("{s:s, s:s, s:s, s:I, s:s}", "file", f->name, "url", f->url, "type",
                            f->type, "line", (json_int_t)line, "reason", reason);
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
    ok = line_text && fs_write_all(q_fd, line_text, strlen(line_text)) &&
         fs_write_all(q_fd, "\n", 1);
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
static fhirsync_code filter_copy(fhirsync_export *ex, fs_bulk_file *f, fhirsync_error *err)
{
    fs_buf tmp, qtmp, qpath, final;
    fs_buf_init(&tmp);
    fs_buf_init(&final);
    fs_buf_init(&qtmp);
    fs_buf_init(&qpath);
    char *buf = fs_malloc(COPY_BUFFER), *copybuf = fs_malloc(COPY_BUFFER);
    int out_fd = -1, q_fd = -1;
    fhirsync_code rc = FHIRSYNC_OK;
    if (!buf || !copybuf || !fs_buf_printf(&tmp, "%s.final", f->x->partial_path) ||
        !fs_buf_printf(&qtmp, "%s.quarantine", f->x->partial_path) ||
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
    fs_ndjson_init(&ck, f->x->ck.expect_type, ex->max_line);
    uint64_t run_start = 0, pos = 0, size = f->x->offset;
    unsigned char head[3];
    if (size >= 3 && pread(f->x->fd, head, 3, 0) == 3 && head[0] == 0xef && head[1] == 0xbb &&
        head[2] == 0xbf)
        run_start = 3; /* the byte order mark is not copied */
    bool io_ok = true;
    int64_t kept = 0, quarantined = 0;
    bool last_unterminated = false;
    while (io_ok && pos < size) {
        size_t want = size - pos > COPY_BUFFER ? COPY_BUFFER : (size_t)(size - pos);
        ssize_t n = pread(f->x->fd, buf, want, (off_t)pos);
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
            io_ok = copy_range(f->x->fd, out_fd, run_start, ck.verdict_offset, copybuf);
            if (io_ok && ck.verdict == FS_NDJSON_BAD) {
                quarantined++;
                io_ok = quarantine_record(q_fd, f, ck.verdict_line, ck.reason, f->x->fd,
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
            io_ok = copy_range(f->x->fd, out_fd, run_start, ck.verdict_offset, copybuf);
            run_start = size;
            if (io_ok && ck.verdict == FS_NDJSON_BAD) {
                quarantined++;
                io_ok = quarantine_record(q_fd, f, ck.verdict_line, ck.reason, f->x->fd,
                                          ck.verdict_offset, ck.verdict_len);
            }
        }
    }
    if (io_ok && run_start < size)
        io_ok = copy_range(f->x->fd, out_fd, run_start, size, copybuf);
    if (io_ok && last_unterminated)
        io_ok = fs_write_all(out_fd, "\n", 1);
    if (io_ok && f->mismatch) {
        char reason[160];
        snprintf(reason, sizeof reason,
                 "count mismatch: the manifest says %lld, the file has "
                 "%llu line(s)",
                 (long long)f->pub.manifest_count, (unsigned long long)f->lines);
        io_ok = quarantine_record(q_fd, f, 0, reason, -1, 0, 0);
    }
    if (!io_ok || fsync(out_fd) != 0 || fsync(q_fd) != 0) {
        rc = fs_err(err, FHIRSYNC_E_IO, "cannot copy %s into place: %s", f->x->partial_path,
                    strerror(errno));
        goto out;
    }
    struct stat st;
    f->x->result_bytes = fstat(out_fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    close(out_fd);
    out_fd = -1;
    close(q_fd);
    q_fd = -1;
    if (quarantined > 0 || f->mismatch)
        rc = put_in_place(ex, qtmp.data, qpath.data, err);
    else
        unlink(qtmp.data);
    if (rc == FHIRSYNC_OK)
        rc = fs_buf_printf(&final, "%s/%s", ex->dir, f->name)
                 ? put_in_place(ex, tmp.data, final.data, err)
                 : fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    f->x->result_count = kept;
    f->x->result_quarantined = quarantined;
out:
    if (out_fd >= 0)
        close(out_fd);
    if (q_fd >= 0)
        close(q_fd);
    fs_free(buf);
    fs_free(copybuf);
    fs_buf_free(&tmp);
    fs_buf_free(&final);
    fs_buf_free(&qtmp);
    fs_buf_free(&qpath);
    return rc;
}

/* The transfer of f ended with the whole file: check its end (checker). True when the file is
 * to be put in place (syncer); false with f->x->outcome set otherwise. */
static bool check_end(fs_bulk_file *f)
{
    bool unterminated = fs_ndjson_finish(&f->x->ck);
    if (unterminated)
        count_line(f);
    f->lines = (uint64_t)(f->x->good + f->x->bad);
    f->mismatch = f->pub.manifest_count >= 0 && f->lines != (uint64_t)f->pub.manifest_count;
    if (!f->x->quarantine_mode && (f->x->bad > 0 || f->mismatch)) {
        f->x->outcome = FS_BULK_RETRY_STRICT;
        return false;
    }
    f->x->bom = f->x->ck.bom;
    f->x->clean = f->x->bad == 0 && f->x->empty == 0 && !f->x->bom && !unterminated && !f->mismatch;
    return true;
}

/* Put a checked file in place (syncer): fsync and rename, or the filtered copy. */
static fs_bulk_outcome put_file(fhirsync_export *ex, fs_bulk_file *f)
{
    fhirsync_code rc;
    if (f->x->clean) {
        if (fdatasync(f->x->fd) != 0) {
            fs_err(&f->x->io_err, FHIRSYNC_E_IO, "cannot fsync %s: %s", f->x->partial_path,
                   strerror(errno));
            return FS_BULK_FAILED;
        }
        fs_buf final;
        fs_buf_init(&final);
        rc = fs_buf_printf(&final, "%s/%s", ex->dir, f->name)
                 ? put_in_place(ex, f->x->partial_path, final.data, &f->x->io_err)
                 : fs_err(&f->x->io_err, FHIRSYNC_E_NOMEM, "out of memory");
        fs_buf_free(&final);
        f->x->result_count = f->x->good;
        f->x->result_quarantined = 0;
        f->x->result_bytes = f->x->offset;
    } else {
        rc = filter_copy(ex, f, &f->x->io_err);
        if (rc == FHIRSYNC_OK)
            unlink(f->x->partial_path);
    }
    if (rc != FHIRSYNC_OK)
        return FS_BULK_FAILED;
    close(f->x->fd);
    f->x->fd = -1;
    return FS_BULK_FINISHED;
}

/* An end item at the checker: true when it goes on to the syncer. */
static bool end_transfer(fs_bulk_file *f, const fs_bulk_item *it)
{
    f->x->outcome = FS_BULK_NOT_FINISHED;
    if (f->x->abort_check || f->x->abort_too_long || f->x->abort_io)
        return false;
    if (it->finish || (it->whole_at >= 0 && (uint64_t)it->whole_at == f->x->offset))
        return check_end(f);
    return false;
}

/* ---- the queues ----------------------------------------------------------------------------- */

static void push_locked(fs_bulk_writer *w, int which, fs_bulk_item *it)
{
    queue *q = &w->queues[which];
    it->next = NULL;
    if (q->tail)
        q->tail->next = it;
    else
        q->head = it;
    q->tail = it;
    pthread_cond_signal(&q->work);
}

static void news_locked(fs_bulk_writer *w)
{
    pthread_cond_signal(&w->news);
    if (w->threaded && w->wake)
        w->wake(w->wake_arg);
}

static void settle_locked(fs_bulk_writer *w, fs_bulk_file *f)
{
    f->x->settled_next = NULL;
    if (w->settled_tail)
        w->settled_tail->x->settled_next = f;
    else
        w->settled_head = f;
    w->settled_tail = f;
    news_locked(w);
}

static void process(fs_bulk_writer *w, int which, fs_bulk_item *it);

/* Hand an item to a worker; inline when the threads do not run. */
static void submit(fs_bulk_writer *w, int which, fs_bulk_item *it)
{
    if (!w->threaded) {
        process(w, which, it);
        return;
    }
    pthread_mutex_lock(&w->lock);
    push_locked(w, which, it);
    pthread_mutex_unlock(&w->lock);
}

/* Do one item (without the lock), then give its block back, pass it on or report it. */
static void process(fs_bulk_writer *w, int which, fs_bulk_item *it)
{
    fs_bulk_file *f = it->f;
    if (!f) {
        fhirsync_error e = {0};
        fhirsync_code rc =
            fs_bulk_write_atomic(w->ex->dir, FS_BULK_STATE_FILE, it->text, strlen(it->text), &e);
        fs_free(it->text);
        it->text = NULL;
        pthread_mutex_lock(&w->lock);
        w->save_done = true;
        w->save_err = e;
        w->save_err.code = rc;
        news_locked(w);
        pthread_mutex_unlock(&w->lock);
        return;
    }
    if (it->data) {
        write_block(f, it->data, it->len);
        pthread_mutex_lock(&w->lock);
        it->next = w->pool;
        w->pool = it;
        pthread_cond_signal(&w->space);
        pthread_mutex_unlock(&w->lock);
        return;
    }
    if (which == CHECKER && end_transfer(f, it)) {
        submit(w, SYNCER, it); /* f goes on to the syncer */
        return;
    }
    if (which == SYNCER)
        f->x->outcome = put_file(w->ex, f);
    pthread_mutex_lock(&w->lock);
    settle_locked(w, f);
    pthread_mutex_unlock(&w->lock);
}

static void *worker_main(void *arg)
{
    worker *k = arg;
    fs_bulk_writer *w = k->w;
    int which = k->which;
    queue *q = &w->queues[which];
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!q->head && !q->quit)
            pthread_cond_wait(&q->work, &w->lock);
        fs_bulk_item *it = q->head;
        if (!it)
            break; /* quit, and the queue is empty */
        q->head = it->next;
        if (!q->head)
            q->tail = NULL;
        pthread_mutex_unlock(&w->lock);
        process(w, which, it);
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

fhirsync_code fs_bulk_writer_new(fhirsync_export *ex, int parallel, void (*wake)(void *),
                                 void *wake_arg, fs_bulk_writer **out, fhirsync_error *err)
{
    *out = NULL;
    fs_bulk_writer *w = fs_calloc(1, sizeof *w);
    size_t nblocks = (size_t)(parallel > 0 ? parallel : 1) + QUEUE_BLOCKS;
    if (!w)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    w->ex = ex;
    w->wake = wake;
    w->wake_arg = wake_arg;
    w->blocks = fs_calloc(nblocks, sizeof *w->blocks);
    w->memory = fs_malloc(nblocks * BLOCK_SIZE);
    w->ends = fs_calloc(ex->nfiles ? ex->nfiles : 1, sizeof *w->ends);
    /* default attributes: these cannot fail on Linux, and hold nothing to release */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->space, &ca);
    pthread_cond_init(&w->news, &ca);
    for (int i = 0; i < 2; i++)
        pthread_cond_init(&w->queues[i].work, &ca);
    /* one syncer per file that can finish at the same time, up to MAX_SYNCERS */
    size_t syncers = parallel < 1 ? 1 : parallel > MAX_SYNCERS ? MAX_SYNCERS : (size_t)parallel;
    w->nworkers = 1 + syncers;
    for (size_t i = 0; i < w->nworkers; i++) {
        w->workers[i].w = w;
        w->workers[i].which = i == 0 ? CHECKER : SYNCER;
    }
    pthread_condattr_destroy(&ca);
    if (!w->blocks || !w->memory || !w->ends) {
        fs_bulk_writer_free(w);
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < nblocks; i++) {
        w->blocks[i].data = w->memory + i * BLOCK_SIZE;
        w->blocks[i].next = w->pool;
        w->pool = &w->blocks[i];
    }
    /* the threads take no signals: they stay with the application's threads */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    bool started = true;
    for (size_t i = 0; i < w->nworkers; i++) {
        w->workers[i].running =
            pthread_create(&w->workers[i].thread, NULL, worker_main, &w->workers[i]) == 0;
        started = started && w->workers[i].running;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    w->threaded = started; /* before any item is queued: the threads read it under the lock */
    if (!w->threaded) {
        fs_bulk_writer_stop(w);
        fs_log(FHIRSYNC_LOG_WARN, "export: cannot start the writer threads; checking and writing "
                                  "on the download thread");
    }
    *out = w;
    return FHIRSYNC_OK;
}

void fs_bulk_writer_stop(fs_bulk_writer *w)
{
    if (!w)
        return;
    /* the checker first: what it finishes goes on to the syncers */
    for (int which = CHECKER; which <= SYNCER; which++) {
        pthread_mutex_lock(&w->lock);
        w->queues[which].quit = true;
        pthread_cond_broadcast(&w->queues[which].work);
        pthread_mutex_unlock(&w->lock);
        for (size_t i = 0; i < w->nworkers; i++) {
            worker *k = &w->workers[i];
            if (k->which == which && k->running) {
                pthread_join(k->thread, NULL);
                k->running = false;
            }
        }
    }
    w->threaded = false;
}

void fs_bulk_writer_free(fs_bulk_writer *w)
{
    if (!w)
        return;
    fs_bulk_writer_stop(w);
    for (int i = 0; i < 2; i++)
        pthread_cond_destroy(&w->queues[i].work);
    pthread_cond_destroy(&w->space);
    pthread_cond_destroy(&w->news);
    pthread_mutex_destroy(&w->lock);
    fs_free(w->save.text);
    fs_free(w->blocks);
    fs_free(w->memory);
    fs_free(w->ends);
    fs_free(w);
}

void fs_bulk_writer_data(fs_bulk_writer *w, fs_bulk_file *f, const char *data, size_t len)
{
    while (len > 0) {
        fs_bulk_item *b = f->x->block;
        if (!b) {
            pthread_mutex_lock(&w->lock);
            while (!w->pool)
                pthread_cond_wait(&w->space, &w->lock);
            b = w->pool;
            w->pool = b->next;
            pthread_mutex_unlock(&w->lock);
            b->f = f;
            b->len = 0;
            f->x->block = b;
        }
        size_t n = BLOCK_SIZE - b->len < len ? BLOCK_SIZE - b->len : len;
        memcpy(b->data + b->len, data, n);
        b->len += n;
        data += n;
        len -= n;
        if (b->len == BLOCK_SIZE) {
            f->x->block = NULL;
            submit(w, CHECKER, b);
        }
    }
}

void fs_bulk_writer_flush(fs_bulk_writer *w, fs_bulk_file *f)
{
    fs_bulk_item *b = f->x ? f->x->block : NULL;
    if (!b)
        return;
    f->x->block = NULL;
    submit(w, CHECKER, b);
}

void fs_bulk_writer_end(fs_bulk_writer *w, fs_bulk_file *f, bool finish, int64_t whole_at)
{
    fs_bulk_writer_flush(w, f);
    fs_bulk_item *it = &w->ends[f->index];
    it->f = f;
    it->data = NULL;
    it->len = 0;
    it->finish = finish;
    it->whole_at = whole_at;
    submit(w, CHECKER, it);
}

void fs_bulk_writer_save(fs_bulk_writer *w, char *text)
{
    fs_bulk_item *it = &w->save;
    it->f = NULL;
    it->data = NULL;
    it->text = text;
    submit(w, SYNCER, it);
}

bool fs_bulk_writer_saved(fs_bulk_writer *w, fhirsync_error *err)
{
    pthread_mutex_lock(&w->lock);
    bool done = w->save_done;
    if (done) {
        w->save_done = false;
        *err = w->save_err;
    }
    pthread_mutex_unlock(&w->lock);
    return done;
}

fs_bulk_file *fs_bulk_writer_settled(fs_bulk_writer *w, int timeout_ms)
{
    pthread_mutex_lock(&w->lock);
    if (!w->settled_head && !w->save_done && timeout_ms > 0 && w->threaded) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += timeout_ms / 1000;
        until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!w->settled_head && !w->save_done &&
               pthread_cond_timedwait(&w->news, &w->lock, &until) == 0)
            ;
    }
    fs_bulk_file *f = w->settled_head;
    if (f) {
        w->settled_head = f->x->settled_next;
        if (!w->settled_head)
            w->settled_tail = NULL;
        f->x->settled_next = NULL;
    }
    pthread_mutex_unlock(&w->lock);
    return f;
}
