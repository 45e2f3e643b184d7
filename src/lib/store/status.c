/* store/status.c: each endpoint's status for an operator (fhirsync_store_status): the latest run,
 * the latest successful one, the failures since, the latest error and the watermark, read in one
 * statement from the audit (sync_runs) and sync_state; then, for a latest run still recorded as
 * running, whether anything runs it: the endpoint's lock (held by its process while it syncs, and
 * released by the kernel or the database when that process dies) or, for a workers' run, the
 * items of its export still in the work queue. The rows are read whole before those questions,
 * since an engine cannot run a statement while it streams another's rows. */
#include <stdio.h>
#include <string.h>

#include "store/shared_private.h"
#include "store/store_internal.h"

const char *fhirsync_endpoint_state_name(fhirsync_endpoint_state state)
{
    switch (state) {
    case FHIRSYNC_STATE_NEVER: return "never";
    case FHIRSYNC_STATE_IDLE: return "idle";
    case FHIRSYNC_STATE_FAILING: return "failing";
    case FHIRSYNC_STATE_RUNNING: return "running";
    case FHIRSYNC_STATE_INTERRUPTED: return "interrupted";
    }
    return "never";
}

/* The columns of the statement below, in order. */
enum {
    COL_ENDPOINT,
    COL_LAST_ID,
    COL_LAST_STATUS,
    COL_LAST_MODE,
    COL_LAST_STARTED,
    COL_LAST_FINISHED,
    COL_LAST_HOST,
    COL_LAST_PID,
    COL_OK_ID,
    COL_OK_FINISHED,
    COL_FAILURES,
    COL_FAIL_ID,
    COL_FAIL_ERROR,
    COL_FAIL_FINISHED,
    COL_WATERMARK,
    COL_WATERMARK_UPDATED,
    NCOLS
};

/* One endpoint's row, copied out of the result. */
typedef struct status_row {
    char *v[NCOLS];
} status_row;

typedef struct status_rows {
    status_row *items;
    size_t n, cap;
    bool oom;
} status_rows;

static void rows_free(status_rows *r)
{
    for (size_t i = 0; i < r->n; i++)
        for (int c = 0; c < NCOLS; c++)
            fs_free(r->items[i].v[c]);
    fs_free(r->items);
    memset(r, 0, sizeof *r);
}

static int collect_row(void *userdata, int ncols, const char *const *v, const size_t *len,
                       const char *const *names)
{
    (void)names;
    status_rows *r = userdata;
    if (ncols < NCOLS)
        return 1;
    if (r->n == r->cap) {
        status_row *grown = fs_array_grow(r->items, &r->cap, sizeof *grown, 16);
        if (!grown) {
            r->oom = true;
            return 1;
        }
        r->items = grown;
    }
    status_row *row = &r->items[r->n++];
    memset(row, 0, sizeof *row);
    for (int c = 0; c < NCOLS; c++) {
        if (v[c] && !(row->v[c] = fs_strndup(v[c], len[c]))) {
            r->oom = true;
            return 1;
        }
    }
    return 0;
}

/* An instant as epoch seconds, 0 when absent or unreadable. */
static int64_t epoch_of(const char *instant)
{
    int64_t ms;
    if (!instant || !fs_store_parse_instant_ms(instant, strlen(instant), &ms))
        return 0;
    return ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
}

/* Line breaks and tabs as spaces, in place: an error is shown on one line. */
static void one_line(char *text)
{
    for (char *p = text; p && *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
}

static fhirsync_run_status status_of(const char *name)
{
    if (fs_streq(name, "running"))
        return FHIRSYNC_RUN_RUNNING;
    if (fs_streq(name, "ok"))
        return FHIRSYNC_RUN_OK;
    if (fs_streq(name, "partial"))
        return FHIRSYNC_RUN_PARTIAL;
    return FHIRSYNC_RUN_FAILED;
}

/* Whether the recorded running run `run_id` of `endpoint` still runs (see the file's comment). */
static fhirsync_code still_running(fhirsync_store *s, const char *endpoint, int64_t run_id,
                                   const char *mode, bool *running, fhirsync_error *err)
{
    *running = false;
    fs_store_lock probe = {.endpoint = (char *)endpoint,
                           .key = fs_store_hash("fhirsync-sync-lock", endpoint),
                           .fd = -1};
    fhirsync_code rc = s->ops->lock_probe(s, &probe, running, err);
    if (rc != FHIRSYNC_OK || *running || !fs_starts_with(mode, "bulk-worker"))
        return rc;
    /* a workers' run: its coordinator let go of the lock once it had queued the files */
    char batch[600];
    snprintf(batch, sizeof batch, "export/%s/%lld", endpoint, (long long)run_id);
    fs_store_work_counts files, final;
    rc = fs_store_work_summary(s, batch, &files, err);
    if (rc == FHIRSYNC_OK) {
        size_t used = strlen(batch);
        snprintf(batch + used, sizeof batch - used, "/final");
        rc = fs_store_work_summary(s, batch, &final, err);
    }
    if (rc == FHIRSYNC_OK)
        *running = files.pending + files.claimed + final.pending + final.claimed > 0;
    return rc;
}

fhirsync_code fhirsync_store_status(fhirsync_store *store, const char *endpoint,
                                    fhirsync_endpoint_status_cb cb, void *userdata,
                                    fhirsync_error *err)
{
    if (!store || !cb)
        return fs_err(err, FHIRSYNC_E_ARG, "no store or callback");
    fhirsync_code rc = fs_store_check_outside_batch(store, "reading the status", err);
    if (rc != FHIRSYNC_OK)
        return rc;
    status_rows rows = {0};
    fs_sql_value p = fs_sql_text(endpoint);
    rc = store->ops->exec(
        store,
        /* the endpoints with runs by a loose index scan of sync_runs (endpoint, id): one probe
         * per endpoint, however many runs the audit holds */
        "WITH RECURSIVE ran(endpoint) AS (SELECT min(endpoint) FROM sync_runs"
        "  UNION ALL SELECT (SELECT min(r.endpoint) FROM sync_runs r"
        "   WHERE r.endpoint > ran.endpoint) FROM ran WHERE ran.endpoint IS NOT NULL),"
        " names AS (SELECT endpoint FROM ran WHERE endpoint IS NOT NULL"
        "  UNION SELECT endpoint FROM sync_state),"
        " k AS (SELECT n.endpoint,"
        "  (SELECT max(id) FROM sync_runs r WHERE r.endpoint = n.endpoint) AS last_id,"
        "  (SELECT max(id) FROM sync_runs r WHERE r.endpoint = n.endpoint"
        "    AND r.status IN ('ok', 'partial')) AS ok_id,"
        "  (SELECT max(id) FROM sync_runs r WHERE r.endpoint = n.endpoint"
        "    AND r.status = 'failed') AS fail_id"
        "  FROM names n WHERE CAST(?1 AS TEXT) IS NULL OR n.endpoint = ?1)"
        " SELECT k.endpoint, l.id, l.status, l.mode, l.started_at, l.finished_at,"
        "  l.hostname, l.pid, o.id, o.finished_at,"
        "  (SELECT count(*) FROM sync_runs r WHERE r.endpoint = k.endpoint"
        "    AND r.status = 'failed' AND r.id > coalesce(k.ok_id, 0)),"
        "  f.id, f.error, f.finished_at, w.watermark, w.updated_at"
        " FROM k LEFT JOIN sync_runs l ON l.id = k.last_id"
        " LEFT JOIN sync_runs o ON o.id = k.ok_id"
        " LEFT JOIN sync_runs f ON f.id = k.fail_id"
        " LEFT JOIN sync_state w ON w.endpoint = k.endpoint"
        " ORDER BY k.endpoint",
        true, &p, 1, collect_row, &rows, NULL, err);
    if (rc == FHIRSYNC_OK && rows.oom)
        rc = fs_store_nomem(err);
    for (size_t i = 0; rc == FHIRSYNC_OK && i < rows.n; i++) {
        char **v = rows.items[i].v;
        one_line(v[COL_FAIL_ERROR]);
        fhirsync_endpoint_status st = {.endpoint = v[COL_ENDPOINT],
                                       .last_run_id = fs_store_int_or_zero(v[COL_LAST_ID]),
                                       .last_run_status = status_of(v[COL_LAST_STATUS]),
                                       .last_run_mode = v[COL_LAST_MODE],
                                       .last_run_started_at = v[COL_LAST_STARTED],
                                       .last_run_started_s = epoch_of(v[COL_LAST_STARTED]),
                                       .last_run_finished_at = v[COL_LAST_FINISHED],
                                       .last_run_finished_s = epoch_of(v[COL_LAST_FINISHED]),
                                       .last_run_host = v[COL_LAST_HOST],
                                       .last_run_pid = fs_store_int_or_zero(v[COL_LAST_PID]),
                                       .last_success_id = fs_store_int_or_zero(v[COL_OK_ID]),
                                       .last_success_at = v[COL_OK_FINISHED],
                                       .last_success_s = epoch_of(v[COL_OK_FINISHED]),
                                       .watermark = v[COL_WATERMARK],
                                       .watermark_s = epoch_of(v[COL_WATERMARK]),
                                       .watermark_updated_at = v[COL_WATERMARK_UPDATED],
                                       .watermark_updated_s = epoch_of(v[COL_WATERMARK_UPDATED]),
                                       .consecutive_failures =
                                           fs_store_int_or_zero(v[COL_FAILURES]),
                                       .last_error_run_id = fs_store_int_or_zero(v[COL_FAIL_ID]),
                                       .last_error = v[COL_FAIL_ERROR],
                                       .last_error_at = v[COL_FAIL_FINISHED],
                                       .last_error_s = epoch_of(v[COL_FAIL_FINISHED])};
        if (!st.last_run_id) {
            st.state = FHIRSYNC_STATE_NEVER;
            st.last_run_status = FHIRSYNC_RUN_FAILED; /* meaningless without a run */
        } else if (st.last_run_status == FHIRSYNC_RUN_RUNNING) {
            bool running = false;
            rc = still_running(store, st.endpoint, st.last_run_id, st.last_run_mode, &running, err);
            st.state = running ? FHIRSYNC_STATE_RUNNING : FHIRSYNC_STATE_INTERRUPTED;
        } else {
            st.state = st.last_run_status == FHIRSYNC_RUN_FAILED ? FHIRSYNC_STATE_FAILING
                                                                 : FHIRSYNC_STATE_IDLE;
        }
        if (rc == FHIRSYNC_OK && cb(&st, userdata) != 0)
            break;
    }
    rows_free(&rows);
    return rc;
}
