/* sync/crawl.c: crawl mode, for servers without a usable bulk export (Epic's advice): paged REST
 * searches per resource type, "Type?_lastUpdated=gt<watermark>&_count=N" (a first run: no
 * filter), and per patient ("Type?patient=ID&...") where the server wants it (Epic, or
 * per_patient = 1): Patient is crawled first, then each patient's resources of the other types.
 * Results are stored a page at a time (a batch per page), in whatever order the server returns
 * them: upserts are idempotent and an older version never replaces a newer one.
 *
 * Watermark: the crawl's start time (client clock) minus a margin (skew_margin_s, default 300 s),
 * moved in the run's final commit. A resource changed while the crawl runs has a lastUpdated
 * after the start, so the next crawl sees it; the margin covers a server clock behind ours and
 * writes committed after the time they are stamped with. The overlap is fetched twice, which the
 * idempotent upserts make harmless.
 *
 * Deletions: an incremental search cannot see them. A reconciliation run (the first run, --full,
 * --reconcile, and every Nth crawl) searches everything, so every resource the server still has
 * is stored again with this run's id; a row of this endpoint that the run did not touch is gone
 * on the server and is deleted with a deletion record dated by the crawl's start. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config_internal.h"
#include "fhirsync/client.h"
#include "store/store_internal.h"
#include "sync/sync_internal.h"

typedef struct crawl_ctx {
    fhirsync_sync *s;
    fhirsync_client *client;
    const char *since; /* NULL: everything */
    int page_size;
    char *workdir;
    fs_sync_counts counts; /* of the type being crawled */
} crawl_ctx;

/* ---- one search ------------------------------------------------------------------------------ */

static fhirsync_code commit_page(crawl_ctx *c, const char *type, int64_t *stored,
                                 fhirsync_error *err)
{
    fhirsync_code rc = fhirsync_store_commit(c->s->store, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (!fs_sync_add_counts(c->s, &c->counts))
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    int64_t loaded;
    fs_sync_counts_totals(&c->counts, &loaded, NULL, NULL);
    *stored += loaded;
    fs_sync_counts_clear(&c->counts);
    fhirsync_sync_event ev = {.kind = FHIRSYNC_SYNC_EV_PROGRESS, .type = type, .count = *stored};
    fs_sync_emit(c->s, &ev);
    return FHIRSYNC_OK;
}

/* Search `type` (restricted to `patient` when not NULL) and store every result. */
static fhirsync_code crawl_search(crawl_ctx *c, const char *type, const char *patient,
                                  int64_t *stored, fhirsync_error *err)
{
    fhirsync_sync *s = c->s;
    fs_buf query;
    fs_buf_init(&query);
    bool ok = fs_buf_printf(&query, "%s?_count=%d", type, c->page_size);
    if (ok && patient)
        ok = fs_buf_append_str(&query, "&patient=") && fs_buf_append_urlencoded(&query, patient);
    if (ok && c->since)
        ok = fs_buf_append_str(&query, "&_lastUpdated=gt") &&
             fs_buf_append_urlencoded(&query, c->since);
    if (!ok) {
        fs_buf_free(&query);
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    fhirsync_search *search = NULL;
    fhirsync_code rc = fhirsync_search_start(c->client, query.data, &search);
    if (rc != FHIRSYNC_OK) {
        fs_err(err, rc, "%s", fhirsync_client_errmsg(c->client));
        fs_buf_free(&query);
        return rc;
    }
    fs_sync_file file = {.kind = FHIRSYNC_EXPORT_OUTPUT,
                         .type = type,
                         .name = query.data,
                         .source = query.data,
                         .run_id = s->run_id};
    fs_sync_loader ld = {.store = s->store,
                         .file = &file,
                         .counts = &c->counts,
                         .endpoint = s->name,
                         .err = err,
                         .rc = FHIRSYNC_OK};
    bool in_batch = false;
    size_t pages = 0;
    for (;;) {
        const char *resource = NULL;
        size_t len = 0;
        rc = fhirsync_search_next(search, &resource, &len);
        if (rc != FHIRSYNC_OK) {
            fs_err(err, rc, "searching %s: %s", query.data, fhirsync_client_errmsg(c->client));
            break;
        }
        /* a new page: what the last one gave is complete, commit it */
        if (in_batch && (fhirsync_search_pages(search) != pages || !resource)) {
            in_batch = false;
            rc = commit_page(c, type, stored, err);
            if (rc != FHIRSYNC_OK)
                break;
        }
        pages = fhirsync_search_pages(search);
        if (!resource)
            break;
        if (!in_batch) {
            rc = fhirsync_store_begin(s->store, FHIRSYNC_STORE_BULK, err);
            if (rc != FHIRSYNC_OK)
                break;
            in_batch = true;
        }
        ld.line_no = 0;
        if (!fs_sync_load_line(&ld, resource, len)) {
            rc = ld.rc;
            break;
        }
    }
    if (in_batch) {
        /* stopped mid-page (a network failure, a signal): what was received is whole resources,
         * worth keeping; the watermark does not move, so the next run fetches them again */
        fhirsync_error ignored;
        if (rc == FHIRSYNC_E_STORE || rc == FHIRSYNC_E_NOMEM ||
            commit_page(c, type, stored, &ignored) != FHIRSYNC_OK)
            fhirsync_store_rollback(s->store, NULL);
    }
    fs_sync_counts_clear(&c->counts);
    pthread_mutex_lock(&s->lock);
    s->requests += (int64_t)fhirsync_search_pages(search);
    pthread_mutex_unlock(&s->lock);
    fhirsync_search_free(search);
    fs_buf_free(&query);
    return rc;
}

/* ---- id lists from the store ----------------------------------------------------------------- */

typedef struct id_file {
    int fd;
    bool failed;
    size_t count;
} id_file;

static int write_id(void *userdata, const char *id, size_t len)
{
    id_file *f = userdata;
    if (write(f->fd, id, len) != (ssize_t)len || write(f->fd, "\n", 1) != 1) {
        f->failed = true;
        return 1;
    }
    f->count++;
    return 0;
}

/* The ids of `type` that this endpoint's runs wrote, into the file `path` (one id a line): the
 * searches that follow use the store's connection, so the list is read from the file, not from an
 * open query. *count receives how many. */
static fhirsync_code ids_to_file(fhirsync_store *store, const char *endpoint, const char *type,
                                 const char *path, size_t *count, fhirsync_error *err)
{
    id_file f = {open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), false, 0};
    if (f.fd < 0)
        return fs_err(err, FHIRSYNC_E_IO, "cannot create %s: %s", path, strerror(errno));
    fhirsync_code rc = fs_store_endpoint_ids(store, endpoint, type, write_id, &f, err);
    if (rc == FHIRSYNC_OK && f.failed)
        rc = fs_err(err, FHIRSYNC_E_IO, "cannot write %s: %s", path, strerror(errno));
    close(f.fd);
    *count = f.count;
    return rc;
}

/* ---- per patient ----------------------------------------------------------------------------- */

static fhirsync_code crawl_per_patient(crawl_ctx *c, const char *type, int64_t *stored,
                                       fhirsync_error *err)
{
    fhirsync_sync *s = c->s;
    fs_buf path;
    fs_buf_init(&path);
    if (!fs_buf_printf(&path, "%s/crawl-patients.txt", c->workdir)) {
        fs_buf_free(&path);
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    size_t count = 0;
    fhirsync_code rc = ids_to_file(s->store, s->name, "Patient", path.data, &count, err);
    FILE *f = rc == FHIRSYNC_OK ? fopen(path.data, "re") : NULL;
    if (rc == FHIRSYNC_OK && !f)
        rc = fs_err(err, FHIRSYNC_E_IO, "cannot read %s: %s", path.data, strerror(errno));
    char id[128];
    while (rc == FHIRSYNC_OK && fgets(id, sizeof id, f)) {
        id[strcspn(id, "\n")] = '\0';
        if (!id[0])
            continue;
        if (fs_sync_stopping(s)) {
            rc = fs_err(err, FHIRSYNC_E_CANCELLED, "interrupted");
            break;
        }
        rc = crawl_search(c, type, id, stored, err);
    }
    if (f)
        fclose(f);
    unlink(path.data);
    fs_buf_free(&path);
    return rc;
}

/* ---- reconciliation -------------------------------------------------------------------------- */

/* Rows of `type` that earlier runs of this endpoint wrote and this complete crawl did not touch
 * are gone on the server (the store's reconciliation, with the share guard). `refused` collects
 * the types the guard kept. */
static fhirsync_code reconcile_type(crawl_ctx *c, const char *type, const char *deleted_at,
                                    fs_buf *refused, fhirsync_error *err)
{
    fhirsync_sync *s = c->s;
    int share = fs_sync_max_delete_share(&s->opts, s->ep);
    fs_store_reconcile r = {.endpoint = s->name,
                            .type = type,
                            .first_run = s->run_id,
                            .run_id = s->run_id,
                            .deleted_at = deleted_at,
                            .reason = FS_STORE_DELETED_CRAWLED,
                            .max_share = share / 100.0,
                            .force = s->opts.allow_mass_delete};
    fs_store_reconcile_result res;
    fhirsync_code rc = fs_store_reconcile_type(s->store, &r, &res, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (res.refused) {
        fs_sync_warn(s,
                     "reconciliation of %s refused: the crawl did not find %lld of the %lld "
                     "stored (more than %d%%); nothing of it was deleted. If the server really "
                     "lost them, run again with --allow-mass-delete",
                     type, (long long)res.gone, (long long)res.rows, share);
        if (!fs_buf_printf(refused, "%sreconciliation of %s refused (%lld of %lld gone)",
                           refused->len ? "; " : "", type, (long long)res.gone,
                           (long long)res.rows))
            return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        return FHIRSYNC_OK;
    }
    if (res.deleted > 0) {
        fs_sync_counts counts;
        fs_sync_counts_init(&counts);
        fs_sync_count *e = fs_sync_counts_at(&counts, type);
        if (e)
            e->deleted = res.deleted;
        if (!e || !fs_sync_add_counts(s, &counts))
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        fs_sync_counts_clear(&counts);
        s->reconciled += res.deleted;
        fhirsync_sync_event ev = {.kind = FHIRSYNC_SYNC_EV_LOADED,
                                  .name = "reconciliation",
                                  .type = type,
                                  .deleted = res.deleted,
                                  .message = "gone on the server"};
        fs_sync_emit(s, &ev);
    }
    return rc;
}

/* ---- the run --------------------------------------------------------------------------------- */

typedef struct recent_runs {
    int since_reconcile;
    bool found_reconcile;
} recent_runs;

static int count_run(const fhirsync_run_info *run, void *userdata)
{
    recent_runs *r = userdata;
    if (run->status != FHIRSYNC_RUN_OK && run->status != FHIRSYNC_RUN_PARTIAL)
        return 0;
    if (fs_streq(run->mode, "crawl-reconcile")) {
        r->found_reconcile = true;
        return 1;
    }
    if (fs_streq(run->mode, "crawl"))
        r->since_reconcile++;
    return 0;
}

fhirsync_code fs_sync_crawl_run(fhirsync_sync *s)
{
    fhirsync_error *err = &s->err;
    crawl_ctx c = {.s = s,
                   .page_size = s->opts.page_size ? s->opts.page_size : FS_SYNC_DEFAULT_PAGE_SIZE};
    fs_sync_counts_init(&c.counts);
    fs_buf refused;
    fs_buf_init(&refused);
    char *types = NULL;
    int every = fs_sync_reconcile_every(&s->opts, s->ep);
    recent_runs recent = {0, false};
    fhirsync_code rc = FHIRSYNC_OK;
    if (!s->opts.full && s->since && every > 0)
        rc = fhirsync_store_runs(s->store, s->name, (size_t)every, count_run, &recent, err);
    bool reconcile = rc == FHIRSYNC_OK &&
                     fs_sync_reconcile_due(s->opts.full, s->since == NULL, s->opts.reconcile, every,
                                           recent.since_reconcile);
    if (reconcile) {
        fs_free(s->since);
        s->since = NULL;
    }
    c.since = s->since;
    s->mode = reconcile ? "crawl-reconcile" : "crawl";
    int64_t start = fs_now();
    char start_instant[40];
    fs_format_instant(start, start_instant, sizeof start_instant);
    int per_patient = s->opts.per_patient >= 0
                          ? s->opts.per_patient
                          : fs_streq(fs_endpoint_vendor(s->ep), FS_VENDOR_EPIC);
    if (rc == FHIRSYNC_OK)
        rc = fs_sync_plan_types(s->ep, 's', &types, err);
    if (rc == FHIRSYNC_OK) {
        char *left = fs_sync_crawl_left_out(s->ep, types);
        if (left)
            fs_sync_warn(s,
                         "types: a crawl searches the US Core types the scopes allow (%s); the "
                         "server also has %s, which this mirror leaves out (list them in the "
                         "`types` setting to sync them)",
                         types, left);
        fs_free(left);
    }
    if (rc == FHIRSYNC_OK && !(c.workdir = fs_sync_endpoint_work_dir(s)))
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    if (rc == FHIRSYNC_OK) {
        /* the folder for id lists */
        fs_buf parent;
        fs_buf_init(&parent);
        for (const char *p = c.workdir; rc == FHIRSYNC_OK; p++) {
            if (*p != '/' && *p)
                continue;
            fs_buf_reset(&parent);
            if (!fs_buf_append(&parent, c.workdir, (size_t)(p - c.workdir)))
                rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
            else if (parent.len && mkdir(parent.data, 0700) != 0 && errno != EEXIST)
                rc = fs_err(err, FHIRSYNC_E_IO, "cannot create %s: %s", parent.data,
                            strerror(errno));
            if (!*p)
                break;
        }
        fs_buf_free(&parent);
    }
    if (rc == FHIRSYNC_OK)
        rc = fhirsync_client_new(s->ep, &c.client, err);
    if (rc == FHIRSYNC_OK)
        rc = fs_store_run_begin(s->store, s->name, s->mode, s->since, &s->run_id, err);
    if (rc != FHIRSYNC_OK)
        goto out;
    char plan[600];
    snprintf(plan, sizeof plan, "crawl%s%s, %s, types %s", reconcile ? " with reconciliation" : "",
             per_patient ? " per patient" : "",
             s->since ? "changes since the watermark" : "everything", types);
    fhirsync_sync_event pev = {.kind = FHIRSYNC_SYNC_EV_PLAN, .message = plan};
    fs_sync_emit(s, &pev);
    /* Patient first: per-patient searches need the patients */
    for (int pass = 0; pass < 2 && rc == FHIRSYNC_OK; pass++) {
        const char *p = types;
        while (*p && rc == FHIRSYNC_OK) {
            size_t n = strcspn(p, ",");
            char type[FS_SYNC_TYPE_MAX + 1];
            bool take = n > 0 && n <= FS_SYNC_TYPE_MAX;
            if (take) {
                memcpy(type, p, n);
                type[n] = '\0';
                take = (pass == 0) == (strcmp(type, "Patient") == 0);
            }
            p += n + (p[n] == ',' ? 1 : 0);
            if (!take)
                continue;
            if (fs_sync_stopping(s)) {
                rc = fs_err(err, FHIRSYNC_E_CANCELLED, "interrupted");
                break;
            }
            int64_t stored = 0;
            if (per_patient && pass == 1 && fs_sync_patient_compartment(type))
                rc = crawl_per_patient(&c, type, &stored, err);
            else
                rc = crawl_search(&c, type, NULL, &stored, err);
            const fs_sync_count *cnt = NULL;
            for (size_t i = 0; i < s->counts.n; i++)
                if (strcmp(s->counts.items[i].type, type) == 0)
                    cnt = &s->counts.items[i];
            if (rc == FHIRSYNC_OK && reconcile && cnt && cnt->quarantined > 0)
                fs_sync_warn(s, "%s is not reconciled: %lld resource(s) of it were quarantined",
                             type, (long long)cnt->quarantined);
            else if (rc == FHIRSYNC_OK && reconcile)
                rc = reconcile_type(&c, type, start_instant, &refused, err);
            if (rc == FHIRSYNC_OK) {
                fhirsync_sync_event ev = {
                    .kind = FHIRSYNC_SYNC_EV_LOADED, .name = type, .type = type, .count = stored};
                fs_sync_emit(s, &ev);
            }
        }
    }
    if (rc != FHIRSYNC_OK)
        goto fail;
    {
        char watermark[40];
        fs_sync_crawl_watermark(
            start, s->opts.skew_margin_s ? s->opts.skew_margin_s : FS_SYNC_DEFAULT_SKEW_MARGIN_S,
            watermark, sizeof watermark);
        int64_t loaded, deleted, quarantined;
        fs_sync_counts_totals(&s->counts, &loaded, &deleted, &quarantined);
        char *counts_json = fs_sync_counts_loaded_json(&s->counts);
        if (!counts_json) {
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
            goto fail;
        }
        char why[512] = "";
        if (quarantined > 0)
            snprintf(why, sizeof why, "%lld resource(s) quarantined", (long long)quarantined);
        else if (refused.len > 0)
            snprintf(why, sizeof why, "%s", refused.data);
        bool partial = why[0] != '\0';
        fs_store_run_end end = {.status = partial ? FHIRSYNC_RUN_PARTIAL : FHIRSYNC_RUN_OK,
                                .counts_json = counts_json,
                                .resources = loaded,
                                .deletions = deleted,
                                .quarantined = quarantined,
                                .error = why[0] ? why : NULL,
                                .new_watermark = watermark};
        rc = fs_store_run_finish(s->store, s->run_id, &end, err);
        fs_free(counts_json);
        if (rc != FHIRSYNC_OK)
            goto fail;
        s->status = end.status;
        s->watermark = fs_strdup(watermark);
        if (partial)
            rc = fs_err(err, FHIRSYNC_E_PARTIAL, "crawl of %s complete, but %s", s->name, why);
        goto out;
    }
fail:
    fs_sync_finish_failed(s, err->message);
out:
    fhirsync_client_free(c.client);
    fs_sync_counts_clear(&c.counts);
    if (c.workdir)
        rmdir(c.workdir);
    fs_free(c.workdir);
    fs_free(types);
    fs_buf_free(&refused);
    return rc;
}
