/* bulk/download.c: the downloads of an export: up to `parallel` files at once on the multi
 * engine (http/multi.h), on the export's thread. Every received byte goes to the writer
 * (writer.c), which on its own thread checks the lines, appends them to .partial/NAME and, once
 * a transfer has ended, finishes the file (fsync and rename, or a filtered copy with
 * quarantine). When the writer hands a file back ("settles" it), this side decides what comes
 * next:
 *   - strict attempt (the first): any bad line, a truncated last line or a count that differs
 *     from the manifest's fails the file, which is downloaded again from scratch (a damaged
 *     transfer is the likely cause); a bad line stops the transfer at once (the writer raises
 *     the file's `stop` flag, the next received bytes end the transfer);
 *   - later attempt (quarantine mode): the writer keeps the good lines, writes each bad line to
 *     quarantine/NAME with its line number and reason, records a count mismatch there too, and
 *     the export ends as partial;
 *   - a finished file is recorded in state.json (files that settle together share one save),
 *     and only then the application hears FILE_DONE.
 *
 * Failures: 401 with the token renews it (once per attempt; parallel 401s renew once) and retries
 * at once; 408/429/5xx, network errors, answers that ignore or misanswer a Range, and transfers
 * that stall (slower than the stall rule's bytes per second for its seconds) are retried with
 * backoff honouring Retry-After (capped by retry_cap), up to max_retries failures without getting
 * past the furthest byte the file ever reached (fs_bulk_budget). A file whose budget is spent is
 * given up, named in a WARNING, and the other files go on; the export then fails with that
 * file's error, resumable. A line longer than the cap, 403, 404/410 (the file expired) and other
 * 4xx stop the export with a clear error. A retry resumes with a Range request from the partial
 * file's size, which is known once the writer has settled the file.
 *
 * Work per step does not grow with the number of files: files never started are taken in order
 * from a cursor, files to try again from a queue, and the totals are kept as they change. */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "bulk/bulk_internal.h"
#include "fhir/fhir_internal.h"
#include "http/multi.h"
#include "http/policy.h"
#include "http/ratelimit.h"

#define BYTES_EVENT_MS 250
#define ERROR_SUMMARY_LINES 10000
/* Transfers that ended and wait for the writer (each holds its partial file open): no new
 * transfer starts beyond this many, so that many small files arriving faster than they are
 * checked, fsync'ed and renamed cannot run the process out of file descriptors (seen with a
 * manifest of 80,000 one-line files: "Too many open files" past 9,000 waiting). */
#define MAX_SETTLING 256

/* ---- transfer callbacks --------------------------------------------------------------------- */

typedef struct dl_ctx {
    fhirsync_export *ex;
    fs_bulk_file *f;
    fs_bulk_writer *writer;
    fs_multi_done done; /* how the last transfer ended, kept until the file settles */
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
        f->x->html = true;
        return false;
    }
    /* No bytes of this transfer were handed to the writer yet, and the previous one settled:
     * the partial file is this thread's here. */
    if (status == 206) {
        /* Content-Range: bytes START-END/TOTAL, START must be where we asked to resume */
        const char *cr = fs_http_header_get(resp, "Content-Range");
        unsigned long long start = 0;
        if (f->x->range_from == 0 || !cr || sscanf(cr, "bytes %llu-", &start) != 1 ||
            start != f->x->range_from) {
            f->x->restart = true;
            return false;
        }
    } else if (f->x->range_from > 0) {
        /* the server ignored the Range: the whole file comes again */
        fs_log(FHIRSYNC_LOG_INFO,
               "export: %s: the server does not resume (HTTP 200 to a Range "
               "request): downloading it from the start",
               f->name);
        f->x->range_from = 0; /* what this attempt reaches counts from the start */
        if (!fs_bulk_partial_truncate(ex, f)) {
            f->x->abort_io = true;
            return false;
        }
    }
    if (ctype && !strcasestr(ctype, "ndjson") && f->x->received == 0 && f->x->offset == 0) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "Content-Type is \"%.100s\", not application/fhir+ndjson: "
                 "checking the lines anyway",
                 ctype);
        fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_WARNING, f, msg, 0, FHIRSYNC_OK);
    }
    return true;
}

static bool on_data(const char *data, size_t len, void *userdata)
{
    dl_ctx *ctx = userdata;
    fs_bulk_file *f = ctx->f;
    if (atomic_load(&f->x->stop))
        return false; /* the writer found a bad line (strict), a line over the cap or an I/O
                         error: it says which once the file settles */
    fs_bulk_writer_data(ctx->writer, f, data, len);
    f->x->received += len;
    ctx->ex->bytes_received += len;
    return true;
}

/* ---- recording a finished file ------------------------------------------------------------ */

/* A short summary of an error file's OperationOutcomes for a WARNING event. */
static void summarise_errors(fhirsync_export *ex, fs_bulk_file *f)
{
    char *text = NULL;
    size_t len = 0;
    const char *path = fs_bulk_file_path(ex, f);
    if (!path || fs_bulk_read_file(path, 4 * 1024 * 1024, &text, &len, NULL) != FHIRSYNC_OK)
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

/* Events for a file the writer finished and state.json now records. */
static void announce(fhirsync_export *ex, fs_bulk_file *f)
{
    char msg[400];
    fs_bulk_file_mark_done(ex, f);
    if (f->x->bom)
        fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_WARNING, f,
                     "the file starts with a UTF-8 byte order mark (removed)", 0, FHIRSYNC_OK);
    if (f->x->empty > 0) {
        snprintf(msg, sizeof msg, "%lld empty line(s) skipped (NDJSON has none)",
                 (long long)f->x->empty);
        fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_WARNING, f, msg, 0, FHIRSYNC_OK);
    }
    if (f->pub.quarantined > 0 || f->mismatch) {
        ex->partial_result = true;
        if (f->mismatch)
            snprintf(msg, sizeof msg,
                     "%lld line(s) quarantined; the file has %llu line(s) where "
                     "the manifest says %lld (see quarantine/%s)",
                     (long long)f->pub.quarantined, (unsigned long long)f->lines,
                     (long long)f->pub.manifest_count, f->name);
        else
            snprintf(msg, sizeof msg,
                     "%lld line(s) quarantined, first at line %llu: %s (see "
                     "quarantine/%s)",
                     (long long)f->pub.quarantined, (unsigned long long)f->x->first_bad_line,
                     f->x->first_bad_reason, f->name);
        fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_WARNING, f, msg, 0, FHIRSYNC_OK);
    }
    fs_log(FHIRSYNC_LOG_INFO, "export: %s done: %lld resources, %llu bytes", f->name,
           (long long)f->pub.count, (unsigned long long)f->pub.bytes);
    fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_FILE_DONE, f, NULL, 0, FHIRSYNC_OK);
    if (f->pub.kind == FHIRSYNC_EXPORT_ERROR && f->pub.count > 0)
        summarise_errors(ex, f);
    fs_bulk_scratch_free(f); /* a done file needs no checker any more */
}

/* A file the writer finished: in ex->st, so in state.json from the next save on (FILE_DONE
 * comes once that save is durable). */
static bool record(fhirsync_export *ex, fs_bulk_file *f)
{
    f->pub.count = f->x->result_count;
    f->pub.quarantined = f->x->result_quarantined;
    f->pub.bytes = f->x->result_bytes;
    f->recorded = true;
    return fs_bulk_state_add_done(&ex->st, f->name, f->pub.count, f->pub.quarantined, f->pub.bytes);
}

/* The strict attempt failed its checks (a bad line, or at the end of the file): say why, and
 * start over in quarantine mode. */
static fhirsync_code retry_checked(fhirsync_export *ex, fs_bulk_file *f, fhirsync_error *err)
{
    char msg[400];
    if (f->x->bad > 0)
        snprintf(msg, sizeof msg, "line %llu: %s; downloading the file again",
                 (unsigned long long)f->x->first_bad_line, f->x->first_bad_reason);
    else
        snprintf(msg, sizeof msg,
                 "the file has %llu line(s) where the manifest says %lld; "
                 "downloading it again",
                 (unsigned long long)f->lines, (long long)f->pub.manifest_count);
    fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_WARNING, f, msg, 0, FHIRSYNC_OK);
    f->x->check_failures++;
    f->x->quarantine_mode = true;
    if (!fs_bulk_partial_truncate(ex, f)) {
        *err = f->x->io_err;
        return FHIRSYNC_E_IO;
    }
    return FHIRSYNC_OK;
}

/* ---- the loop ------------------------------------------------------------------------------- */

typedef struct loop {
    fhirsync_export *ex;
    fs_multi *multi;
    fs_bulk_writer *writer;
    dl_ctx **ctx; /* per file, only while a transfer of it runs or settles
                     (1.1 KB each: 160,000 of them would cost 180 MB) */
    const char **headers;
    size_t active;          /* transfers running */
    size_t settling;        /* transfers ended, files not settled yet */
    fs_bulk_file **unsaved; /* recorded, not in a state.json save yet */
    size_t nunsaved;
    fs_bulk_file **saving; /* recorded, in the save under way */
    size_t nsaving;
    bool save_running;
    size_t cursor;        /* files before it were started (or done) in this run */
    fs_bulk_file **again; /* files to try again (after a failure or a check) */
    size_t nagain;
    fhirsync_error first_failure; /* of the first file given up */
} loop;

/* f's transfer settled (or the loop ends): its context goes until the next attempt. */
static void release_ctx(loop *lp, fs_bulk_file *f)
{
    dl_ctx *ctx = lp->ctx[f->index];
    if (ctx) {
        fs_http_response_clear(&ctx->done.resp);
        fs_free(ctx);
        lp->ctx[f->index] = NULL;
    }
}

static fhirsync_code start_file(loop *lp, fs_bulk_file *f, fhirsync_error *err)
{
    fhirsync_export *ex = lp->ex;
    fhirsync_code rc = fs_bulk_partial_open(ex, f, err); /* f->x from here on */
    if (rc != FHIRSYNC_OK)
        return rc;
    if (f->x->not_before_ms != 0) /* a new attempt, not the one more try after a renewal */
        f->x->renewal = (fs_http_renewal){0};
    if (!lp->ctx[f->index] && !(lp->ctx[f->index] = fs_calloc(1, sizeof **lp->ctx)))
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    lp->ctx[f->index]->ex = ex;
    lp->ctx[f->index]->f = f;
    lp->ctx[f->index]->writer = lp->writer;
    bool with_token = ex->man.requires_token;
    if (with_token && (rc = fs_bulk_token(ex, false, err)) != FHIRSYNC_OK)
        return rc;
    rc = fs_ratelimit_acquire(ex->base_url, fhirsync_endpoint_get(ex->ep, "client_id"),
                              ex->rate_limit, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    f->x->range_from = f->x->offset;
    f->x->received = 0;
    f->x->abort_check = f->x->abort_too_long = f->x->abort_io = f->x->restart = f->x->html = false;
    f->x->stalled = false;
    long stall_bytes, stall_s;
    fs_bulk_stall_rule(ex, &stall_bytes, &stall_s);
    if (stall_bytes == 0) { /* the rule is off: only a transfer with no byte at all stalls */
        stall_bytes = 1;
        stall_s = ex->timeout_s;
    }
    atomic_store(&f->x->stop, false);
    f->x->token_gen = ex->token_gen;
    fs_multi_request req = {
        .url = f->url,
        .headers = lp->headers,
        .bearer_token = with_token ? ex->token : NULL,
        .token_origin = with_token ? ex->base_url : NULL,
        .redirects = FS_REDIRECT_DROP_TOKEN,
        .range_from = (int64_t)f->x->offset,
        .identity = f->x->offset > 0,
        .connect_timeout_s = ex->connect_timeout_s,
        .stall_timeout_s = stall_s,
        .stall_bytes_per_s = stall_bytes,
        .ca_file = fhirsync_endpoint_get(ex->ep, "ca_file"),
        .on_response = on_response,
        .sink = on_data,
        .userdata = lp->ctx[f->index],
    };
    rc = fs_multi_add(lp->multi, &req, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    f->active = true;
    lp->active++;
    char msg[96];
    if (f->x->offset > 0)
        snprintf(msg, sizeof msg, "resuming at byte %llu", (unsigned long long)f->x->offset);
    fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_FILE_STARTED, f, f->x->offset > 0 ? msg : NULL, 0,
                 FHIRSYNC_OK);
    return FHIRSYNC_OK;
}

bool fs_bulk_budget_fail(fs_bulk_budget *b, uint64_t reached, bool stalled, unsigned max_retries)
{
    if (reached > b->furthest) {
        b->furthest = reached;
        if (!stalled)
            b->failures = 0; /* got further than ever: the budget starts again */
    }
    if (b->failures >= max_retries)
        return false;
    b->failures++;
    return true;
}

/* Schedule another attempt after a failure: FHIRSYNC_OK. When the file's budget is spent, the
 * file is given up (f->failed, a WARNING naming it) and the others go on: FHIRSYNC_OK too, with
 * the first such failure kept in lp->first_failure for the end of the export. */
static fhirsync_code schedule_retry(loop *lp, fs_bulk_file *f, const char *why,
                                    int64_t retry_after_s, fhirsync_code code, long status)
{
    fhirsync_export *ex = lp->ex;
    uint64_t reached = f->x->range_from + f->x->received;
    unsigned before = f->x->budget.failures;
    if (!fs_bulk_budget_fail(&f->x->budget, reached, f->x->stalled, (unsigned)ex->max_retries)) {
        fhirsync_error e = {0};
        fs_err_http(&e, code, status,
                    "%s could not be downloaded: %s (%u attempts in a row did "
                    "not get past byte %llu)",
                    f->name, why, before + 1, (unsigned long long)f->x->budget.furthest);
        f->failed = true;
        ex->files_failed++;
        if (!lp->first_failure.code)
            lp->first_failure = e;
        fs_log(FHIRSYNC_LOG_WARN, "export: %s", e.message);
        fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_WARNING, f, e.message, 0, FHIRSYNC_OK);
        return FHIRSYNC_OK;
    }
    int64_t delay = fs_http_retry_delay_ms(f->x->budget.failures - 1, retry_after_s, ex->retry_cap);
    f->x->not_before_ms = fs_monotonic_ms() + delay;
    char msg[sizeof lp->first_failure.message + 64];
    snprintf(msg, sizeof msg, "%s; retry %u of %ld%s", why, f->x->budget.failures, ex->max_retries,
             f->x->offset > 0 ? " (resuming with a Range request)" : "");
    fs_log(FHIRSYNC_LOG_WARN, "export: %s: %s in %.1f s", f->name, msg, (double)delay / 1000.0);
    fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_RETRY, f, msg, delay, FHIRSYNC_OK);
    return FHIRSYNC_OK;
}

/* A transfer ended: hand the end to the writer, which settles the file once every byte before it
 * is checked and written (and the file finished, when the whole of it arrived). */
static void transfer_ended(loop *lp, fs_multi_done *d)
{
    dl_ctx *ctx = d->userdata;
    fs_bulk_file *f = ctx->f;
    f->active = false;
    lp->active--;
    f->settling = true;
    lp->settling++;
    ctx->done = *d;
    long status = d->resp.status;
    bool finish =
        d->code == FHIRSYNC_OK && (status == 200 || status == 206) && !f->x->restart && !f->x->html;
    int64_t whole_at = -1;
    if (d->code == FHIRSYNC_OK && status == 416) {
        /* nothing after our offset: the partial file may be the whole file (a run stopped
         * between the last byte and the rename) */
        const char *cr = fs_http_header_get(&d->resp, "Content-Range");
        unsigned long long total = 0;
        if (cr && sscanf(cr, "bytes */%llu", &total) == 1 && total <= INT64_MAX)
            whole_at = (int64_t)total;
    }
    fs_bulk_writer_end(lp->writer, f, finish, whole_at);
}

/* The writer settled f: decide what comes next, from how its transfer ended. */
static fhirsync_code settled(loop *lp, fs_bulk_file *f, fhirsync_error *err)
{
    fhirsync_export *ex = lp->ex;
    fs_multi_done *d = &lp->ctx[f->index]->done;
    fs_http_response *resp = &d->resp;
    long status = resp->status;
    const char *url = resp->effective_url ? resp->effective_url : f->url;
    fhirsync_code rc = FHIRSYNC_OK;

    if (f->x->abort_too_long)
        return fs_err(err, FHIRSYNC_E_PROTOCOL,
                      "%s (%s): line %llu is longer than the "
                      "%llu-byte limit (raise it with --max-line if such lines are expected)",
                      f->name, f->url, (unsigned long long)f->x->ck.line_no,
                      (unsigned long long)ex->max_line);
    if (f->x->abort_io) {
        *err = f->x->io_err;
        return err->code ? err->code : FHIRSYNC_E_IO;
    }
    if (f->x->abort_check) /* strict attempt: a bad line. Start over, keeping the bad lines. */
        return retry_checked(ex, f, err);
    if (f->x->outcome == FS_BULK_FAILED) {
        *err = f->x->io_err;
        return err->code ? err->code : FHIRSYNC_E_IO;
    }
    if (f->x->outcome == FS_BULK_RETRY_STRICT)
        return retry_checked(ex, f, err);
    if (f->x->outcome == FS_BULK_FINISHED) {
        if (!record(ex, f))
            return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        lp->unsaved[lp->nunsaved++] = f;
        return FHIRSYNC_OK;
    }
    /* not finished: what arrived so far is in the partial file, kept for a Range request */
    if (f->x->restart || f->x->html) {
        const char *why = f->x->html ? "the server answered an HTML page instead of NDJSON"
                                     : "the server answered a Range request with another range";
        if (!fs_bulk_partial_truncate(ex, f)) {
            *err = f->x->io_err;
            return FHIRSYNC_E_IO;
        }
        return schedule_retry(lp, f, why, -1, FHIRSYNC_E_PROTOCOL, status);
    }
    if (d->code == FHIRSYNC_OK && status == 416) {
        /* the partial file is not the whole file the server has: start over */
        if (!fs_bulk_partial_truncate(ex, f))
            return (*err = f->x->io_err, FHIRSYNC_E_IO);
        return schedule_retry(lp, f, "HTTP 416 to a Range request", -1, FHIRSYNC_E_PROTOCOL,
                              status);
    }
    if (d->code == FHIRSYNC_OK && fs_http_should_renew(&f->x->renewal, status, resp->token_sent)) {
        /* several downloads may get a 401 for the same token: renew it once */
        if (f->x->token_gen == ex->token_gen && (rc = fs_bulk_token(ex, true, err)) != FHIRSYNC_OK)
            return rc;
        f->x->not_before_ms = 0;
        return FHIRSYNC_OK;
    }
    if (d->code == FHIRSYNC_OK && status == 401 && resp->token_sent) /* the renewal was spent */
        return fs_err_http(err, FHIRSYNC_E_UNAUTHORIZED, 401,
                           "%s: HTTP 401 from %s even with a new token", f->name, url);
    int64_t retry_after = d->code == FHIRSYNC_OK ? fs_http_retry_after(resp, fs_now()) : -1;
    if (d->code == FHIRSYNC_OK && fs_http_retryable_status(status, true, retry_after)) {
        const char *ra = fs_http_header_get(resp, "Retry-After");
        fhirsync_error e = {0};
        fs_fhir_status_error(resp, url, &e);
        char why[sizeof e.message + 100];
        snprintf(why, sizeof why, "%s%s%s%s", e.message, ra ? " (Retry-After: " : "", ra ? ra : "",
                 ra ? ")" : "");
        return schedule_retry(lp, f, why, retry_after, e.code, status);
    }
    if (d->code == FHIRSYNC_OK) {
        rc = status >= 200 && status < 300
                 ? fs_err_http(err, FHIRSYNC_E_PROTOCOL, status,
                               "HTTP %ld from %s (expected 200 with the file)", status, url)
                 : fs_fhir_status_error(resp, url, err);
        if (status == 404 || status == 410)
            fs_err_prefix(err,
                          "%s is gone (servers keep export files for a limited time: start "
                          "a new export)",
                          f->name);
        else
            fs_err_prefix(err, "%s", f->name);
        return rc;
    }
    if (fs_http_retryable_failure(d->code, true, true)) {
        char why[sizeof d->err.message + 160];
        long stall_bytes = 0, stall_s = 0;
        if (d->code == FHIRSYNC_E_TIMEOUT) {
            /* libcurl's low-speed limit: the stall rule (or, when it is off, no byte at all) */
            fs_bulk_stall_rule(ex, &stall_bytes, &stall_s);
            f->x->stalled = true;
        }
        if (stall_bytes > 0)
            snprintf(why, sizeof why,
                     "stalled: less than %ld bytes/s for %ld s (the stall rule; "
                     "%llu bytes in this attempt): %s",
                     stall_bytes, stall_s, (unsigned long long)f->x->received, d->err.message);
        else
            snprintf(why, sizeof why, "%s", d->err.message);
        return schedule_retry(lp, f, why, -1, d->code, 0);
    }
    *err = d->err;
    fs_err_prefix(err, "%s", f->name);
    return d->code;
}

/* Take the files the writer settled (waiting up to timeout_ms for the first, or for the save
 * under way), and keep state.json following: finished files are recorded, saved (on the writer's
 * I/O thread, several in one save when they finish together), and reported once the save is
 * durable. */
static fhirsync_code collect(loop *lp, int timeout_ms, fhirsync_error *err)
{
    fhirsync_export *ex = lp->ex;
    fhirsync_code rc = FHIRSYNC_OK;
    fs_bulk_file *f;
    while (rc == FHIRSYNC_OK && (f = fs_bulk_writer_settled(lp->writer, timeout_ms))) {
        timeout_ms = 0;
        f->settling = false;
        lp->settling--;
        rc = settled(lp, f, err);
        release_ctx(lp, f);
        if (rc == FHIRSYNC_OK && !f->recorded && !f->failed && !f->pub.done)
            lp->again[lp->nagain++] = f; /* another attempt, once its backoff is over */
    }
    fhirsync_error save_err = {0};
    if (lp->save_running && fs_bulk_writer_saved(lp->writer, &save_err)) {
        lp->save_running = false;
        if (save_err.code != FHIRSYNC_OK) {
            /* not recorded after all: stop_writer() tries once more */
            memcpy(lp->unsaved + lp->nunsaved, lp->saving, lp->nsaving * sizeof *lp->unsaved);
            lp->nunsaved += lp->nsaving;
            lp->nsaving = 0;
            if (rc == FHIRSYNC_OK) {
                *err = save_err;
                rc = save_err.code;
            }
        } else {
            for (size_t i = 0; i < lp->nsaving; i++)
                announce(ex, lp->saving[i]);
            lp->nsaving = 0;
        }
    }
    if (rc == FHIRSYNC_OK && !lp->save_running && lp->nunsaved > 0) {
        char *text = fs_bulk_state_dump(&ex->st);
        if (!text)
            return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory writing state.json");
        memcpy(lp->saving, lp->unsaved, lp->nunsaved * sizeof *lp->saving);
        lp->nsaving = lp->nunsaved;
        lp->nunsaved = 0;
        lp->save_running = true;
        fs_bulk_writer_save(lp->writer, text);
    }
    return rc;
}

/* The next file to start: not done, not running or settling, its backoff over. */
static fs_bulk_file *next_ready(loop *lp, int64_t now, int64_t *soonest)
{
    fhirsync_export *ex = lp->ex;
    *soonest = -1;
    /* files to try again first (few: at most the transfers that failed recently) */
    for (size_t i = 0; i < lp->nagain; i++) {
        fs_bulk_file *f = lp->again[i];
        if (f->x->not_before_ms <= now) {
            lp->again[i] = lp->again[--lp->nagain];
            return f;
        }
        if (*soonest < 0 || f->x->not_before_ms < *soonest)
            *soonest = f->x->not_before_ms;
    }
    while (lp->cursor < ex->nfiles) {
        fs_bulk_file *f = &ex->files[lp->cursor++];
        if (!f->pub.done && !f->recorded && !f->failed && !f->active && !f->settling)
            return f;
    }
    return NULL;
}

static void wake_multi(void *multi)
{
    fs_multi_wakeup(multi);
}

/* Stopping (an error, a cancel): the writer finishes what it was given, and the files it
 * finished are recorded in state.json so that the next run does not download them again (it
 * reports them then, as finished by an earlier run). */
static void stop_writer(loop *lp)
{
    fhirsync_export *ex = lp->ex;
    for (size_t i = 0; i < ex->nfiles; i++)
        fs_bulk_writer_flush(lp->writer, &ex->files[i]);
    fs_bulk_writer_stop(lp->writer);
    fs_bulk_file *f;
    while ((f = fs_bulk_writer_settled(lp->writer, 0))) {
        f->settling = false;
        if (f->x->outcome == FS_BULK_FINISHED && record(ex, f))
            lp->unsaved[lp->nunsaved++] = f;
        release_ctx(lp, f);
    }
    fhirsync_error e = {0};
    bool saved = !lp->save_running || (fs_bulk_writer_saved(lp->writer, &e) && !e.code);
    if (!saved || lp->nunsaved > 0)
        saved = fs_bulk_state_save(&ex->st, ex->dir, &e) == FHIRSYNC_OK;
    for (size_t i = 0; i < lp->nsaving + lp->nunsaved; i++) {
        f = i < lp->nsaving ? lp->saving[i] : lp->unsaved[i - lp->nsaving];
        if (saved)
            fs_bulk_file_mark_done(ex, f);
        else
            f->recorded = false; /* not recorded after all: a next run fetches it again */
    }
    lp->nsaving = lp->nunsaved = 0;
    lp->save_running = false;
}

fhirsync_code fs_bulk_download_all(fhirsync_export *ex)
{
    fhirsync_error *err = &ex->err;
    loop lp = {.ex = ex};
    fhirsync_code rc = FHIRSYNC_OK;
    size_t nprofile = fhirsync_endpoint_count(ex->ep, "header");
    lp.headers = fs_calloc(nprofile + 2, sizeof *lp.headers);
    lp.ctx = fs_calloc(ex->nfiles ? ex->nfiles : 1, sizeof *lp.ctx);
    lp.unsaved = fs_calloc(ex->nfiles ? ex->nfiles : 1, sizeof *lp.unsaved);
    lp.saving = fs_calloc(ex->nfiles ? ex->nfiles : 1, sizeof *lp.saving);
    lp.again = fs_calloc(ex->nfiles ? ex->nfiles : 1, sizeof *lp.again);
    lp.multi = fs_multi_new(NULL);
    if (!lp.headers || !lp.ctx || !lp.unsaved || !lp.saving || !lp.again || !lp.multi) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
    lp.headers[0] = "Accept: " FS_FHIR_NDJSON;
    for (size_t i = 0; i < nprofile; i++)
        lp.headers[i + 1] = fhirsync_endpoint_get_at(ex->ep, "header", i);
    ex->files_failed = 0;
    for (size_t i = 0; i < ex->nfiles; i++) {
        ex->files[i].failed = false;
        if (ex->files[i].x)
            ex->files[i].x->budget = (fs_bulk_budget){0};
    }
    if (ex->files_done == ex->nfiles)
        goto out;
    if ((rc = fs_bulk_mkdirs(ex->partial_dir, err)) != FHIRSYNC_OK)
        goto out;
    rc = fs_bulk_writer_new(ex, ex->parallel, wake_multi, lp.multi, &lp.writer, err);
    if (rc != FHIRSYNC_OK)
        goto out;
    for (;;) {
        if (fs_cancel_requested() || ex->cb_stop) {
            rc = fs_err(err, FHIRSYNC_E_CANCELLED,
                        "export interrupted; the folder keeps what "
                        "was downloaded: run the same command again (or --resume %s) to finish",
                        ex->dir);
            break;
        }
        if (ex->files_done + ex->files_failed >= ex->nfiles && lp.settling == 0 &&
            !lp.save_running && lp.nunsaved == 0)
            break;
        if ((rc = fs_bulk_deadline(ex, "during the downloads", NULL, err)) != FHIRSYNC_OK)
            goto out;
        int64_t now = fs_monotonic_ms(), soonest = -1;
        fs_bulk_file *f;
        while (lp.active < (size_t)ex->parallel && lp.settling < MAX_SETTLING &&
               (f = next_ready(&lp, now, &soonest))) {
            rc = start_file(&lp, f, err);
            if (rc != FHIRSYNC_OK)
                goto out;
        }
        if (lp.active == 0) {
            /* nothing on the network: wait for the writer, or for a backoff to end */
            bool writer_busy = lp.settling > 0 || lp.save_running || lp.nunsaved > 0;
            int64_t wait = soonest > now ? soonest - now : writer_busy ? 100 : 10;
            if (wait > 100)
                wait = 100;
            if (writer_busy)
                rc = collect(&lp, (int)wait, err);
            else
                fs_sleep_ms(wait);
            if (rc != FHIRSYNC_OK)
                goto out;
            continue;
        }
        fs_multi_done d;
        if (fs_multi_poll(lp.multi, 100, &d))
            transfer_ended(&lp, &d);
        rc = collect(&lp, 0, err);
        if (rc != FHIRSYNC_OK)
            goto out;
        now = fs_monotonic_ms();
        if (now - ex->last_bytes_event_ms >= BYTES_EVENT_MS) {
            ex->last_bytes_event_ms = now;
            fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_BYTES, NULL, NULL, 0, FHIRSYNC_OK);
        }
    }
out:
    /* Running transfers stop here. What they received goes to the partial files (the writer
     * finishes its queue first): a valid prefix for the next run. */
    if (lp.writer) {
        stop_writer(&lp);
        fs_bulk_writer_free(lp.writer);
    }
    fs_multi_free(lp.multi);
    for (size_t i = 0; i < ex->nfiles; i++) {
        fs_bulk_file *f = &ex->files[i];
        f->active = f->settling = false;
        if (!f->x)
            continue;
        if (f->x->fd >= 0) {
            close(f->x->fd);
            f->x->fd = -1;
        }
        f->x->block = NULL;
    }
    fs_free(lp.headers);
    for (size_t i = 0; lp.ctx && i < ex->nfiles; i++)
        release_ctx(&lp, &ex->files[i]);
    fs_free(lp.ctx);
    fs_free(lp.unsaved);
    fs_free(lp.saving);
    fs_free(lp.again);
    if (rc == FHIRSYNC_OK && ex->files_failed > 0) {
        *err = lp.first_failure;
        fs_err_prefix(err,
                      "%zu of %zu file(s) could not be downloaded (the %zu other(s) are "
                      "stored; run the same command again to retry)",
                      ex->files_failed, ex->nfiles, ex->files_done);
        rc = err->code ? err->code : FHIRSYNC_E_NETWORK;
    }
    return rc;
}
