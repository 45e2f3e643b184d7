/* sync/sync.c: the public sync handle. A run locks the endpoint in the store (a second process
 * is told who holds it), works out the increment (the `since` setting, else the stored
 * watermark; --full: everything), hands over to bulk.c or crawl.c, which record the run in the
 * audit table and finish it with the watermark in the final commit, and unlocks. Events go to the
 * application's callback, serialised by the handle's mutex because bulk mode also reports from
 * its loader thread. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "config/config_internal.h"
#include "fhirsync/auth.h"
#include "fhirsync/client.h"
#include "json/json.h"
#include "store/store_lib.h"
#include "sync/sync_internal.h"

fhirsync_code fhirsync_sync_options_init(fhirsync_sync_options *opts, unsigned int version)
{
    if (fs_versioned_init(opts, sizeof *opts, version, FHIRSYNC_SYNC_OPTIONS_VERSION,
                          "fhirsync_sync_options") != FHIRSYNC_OK)
        return FHIRSYNC_E_ARG;
    opts->per_patient = -1;
    opts->delete_job = -1;
    opts->load = FHIRSYNC_SYNC_LOAD_STREAM;
    return FHIRSYNC_OK;
}

fhirsync_code fhirsync_sync_new(const fhirsync_endpoint *ep, fhirsync_store *store,
                                const fhirsync_sync_options *opts, fhirsync_sync **out,
                                fhirsync_error *err)
{
    if (out)
        *out = NULL;
    if (!ep || !store || !out)
        return fs_err(err, FHIRSYNC_E_ARG, "a sync needs an endpoint, a store and a result");
    fhirsync_sync_options defaults;
    fhirsync_sync_options_init(&defaults, FHIRSYNC_SYNC_OPTIONS_VERSION);
    if (!opts)
        opts = &defaults;
    fhirsync_code checked = fs_check_version(opts->version, FHIRSYNC_SYNC_OPTIONS_VERSION,
                                             "fhirsync_sync_options", err);
    if (checked != FHIRSYNC_OK)
        return checked;
    if (opts->load != FHIRSYNC_SYNC_LOAD_STREAM && opts->load != FHIRSYNC_SYNC_LOAD_AFTER)
        return fs_err(err, FHIRSYNC_E_ARG, "unknown load strategy %d", (int)opts->load);
    if (opts->page_size < 0 || opts->page_size > 10000)
        return fs_err(err, FHIRSYNC_E_ARG, "page size %d is outside 0..10000", opts->page_size);
    if (opts->loaders < 0 || opts->loaders > 16)
        return fs_err(err, FHIRSYNC_E_ARG, "loaders %d is outside 0..16", opts->loaders);
    fhirsync_code rc = fhirsync_endpoint_validate(ep, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    fhirsync_sync *s = fs_calloc(1, sizeof *s);
    if (!s)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    pthread_mutex_init(&s->lock, NULL);
    fs_sync_counts_init(&s->counts);
    s->store = store;
    s->opts = *opts;
    s->ep = fhirsync_endpoint_dup(ep);
    s->name = fs_strdup(fhirsync_endpoint_name(ep));
    s->work_dir_opt = opts->work_dir ? fs_strdup(opts->work_dir) : NULL;
    s->lock_owner = opts->lock_owner ? fs_strdup(opts->lock_owner) : NULL;
    if (!s->ep || !s->name || (opts->work_dir && !s->work_dir_opt) ||
        (opts->lock_owner && !s->lock_owner)) {
        fhirsync_sync_free(s);
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    s->opts.work_dir = s->work_dir_opt;
    s->opts.lock_owner = s->lock_owner;
    *out = s;
    return FHIRSYNC_OK;
}

static void reset_run(fhirsync_sync *s)
{
    fs_free(s->since);
    fs_free(s->transaction_time);
    fs_free(s->watermark);
    fs_free(s->type_stats);
    s->since = s->transaction_time = s->watermark = NULL;
    s->reconciled = 0;
    s->inserted = 0;
    fhirsync_free(s->rows_before);
    s->rows_before = NULL;
    s->nrows_before = 0;
    s->type_stats = NULL;
    fs_sync_counts_clear(&s->counts);
    s->run_id = 0;
    s->status = FHIRSYNC_RUN_FAILED;
    s->mode = NULL;
    s->level = NULL;
    s->resumed = false;
    s->requests = 0;
    s->duration_s = 0;
    s->stop = false;
}

void fhirsync_sync_free(fhirsync_sync *s)
{
    if (!s)
        return;
    reset_run(s);
    fhirsync_endpoint_free(s->ep);
    fs_free(s->name);
    fs_free(s->work_dir_opt);
    fs_free(s->lock_owner);
    pthread_mutex_destroy(&s->lock);
    fs_free(s);
}

void fhirsync_sync_set_callback(fhirsync_sync *s, fhirsync_sync_cb cb, void *userdata)
{
    if (!s)
        return;
    s->cb = cb;
    s->cb_userdata = userdata;
}

fhirsync_code fhirsync_sync_errcode(const fhirsync_sync *s)
{
    return s ? s->err.code : FHIRSYNC_E_ARG;
}

const char *fhirsync_sync_errmsg(const fhirsync_sync *s)
{
    return s ? s->err.message : "";
}

/* ---- events ---------------------------------------------------------------------------------- */

bool fs_sync_emit(fhirsync_sync *s, fhirsync_sync_event *ev)
{
    pthread_mutex_lock(&s->lock);
    ev->endpoint = s->name;
    fs_sync_counts_totals(&s->counts, &ev->resources, NULL, NULL);
    ev->elapsed_s = (double)(fs_monotonic_ms() - s->start_ms) / 1000.0;
    if (s->cb && s->cb(ev, s->cb_userdata) != 0)
        s->stop = true;
    bool go_on = !s->stop;
    pthread_mutex_unlock(&s->lock);
    return go_on;
}

void fs_sync_warn(fhirsync_sync *s, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fs_log(FHIRSYNC_LOG_INFO, "sync %s: %s", s->name, msg);
    char *clean = fs_redact(msg);
    fhirsync_sync_event ev = {.kind = FHIRSYNC_SYNC_EV_WARNING, .message = clean ? clean : ""};
    fs_sync_emit(s, &ev);
    fs_free(clean);
}

bool fs_sync_stopping(fhirsync_sync *s)
{
    pthread_mutex_lock(&s->lock);
    bool stop = s->stop;
    pthread_mutex_unlock(&s->lock);
    return stop || fs_cancel_requested();
}

bool fs_sync_add_counts(fhirsync_sync *s, const fs_sync_counts *c)
{
    pthread_mutex_lock(&s->lock);
    bool ok = fs_sync_counts_add(&s->counts, c);
    pthread_mutex_unlock(&s->lock);
    return ok;
}

/* ---- planning helpers that need the network -------------------------------------------------- */

fhirsync_code fs_sync_granted_scope(const fhirsync_endpoint *ep, char **out, fhirsync_error *err)
{
    *out = NULL;
    fhirsync_auth *auth = NULL;
    fhirsync_code rc = fhirsync_auth_new(ep, &auth, err);
    fhirsync_token token;
    if (rc == FHIRSYNC_OK)
        rc = fhirsync_auth_token(auth, false, &token, err);
    if (rc == FHIRSYNC_OK && !(*out = fs_strdup(token.scope ? token.scope : "")))
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    fhirsync_auth_free(auth);
    return rc;
}

/* The resource types the server's CapabilityStatement lists (comma-separated, with commas at
 * both ends for lookups), or NULL when it cannot be had: then nothing is filtered. */
static char *server_types(const fhirsync_endpoint *ep)
{
    fhirsync_client *client = NULL;
    fhirsync_response *resp = NULL;
    fhirsync_error err;
    json_t *doc = NULL;
    fs_buf b;
    fs_buf_init(&b);
    bool ok = fhirsync_client_new(ep, &client, &err) == FHIRSYNC_OK &&
              fhirsync_client_get(client, "metadata", &resp) == FHIRSYNC_OK;
    if (!ok)
        fs_log(FHIRSYNC_LOG_INFO, "sync: no CapabilityStatement (%s): types are not filtered",
               client ? fhirsync_client_errmsg(client) : err.message);
    size_t len = 0;
    const char *body = ok ? fhirsync_response_body(resp, &len) : NULL;
    if (ok && !(doc = fs_json_parse(body, len, true, "CapabilityStatement", &err)))
        ok = false;
    json_t *rest = doc ? json_object_get(doc, "rest") : NULL;
    ok = ok && fs_buf_append_str(&b, ",");
    size_t found = 0;
    for (size_t r = 0; ok && r < json_array_size(rest); r++) {
        json_t *resources = json_object_get(json_array_get(rest, r), "resource");
        for (size_t i = 0; ok && i < json_array_size(resources); i++) {
            const char *type = fs_json_str(json_array_get(resources, i), "type");
            if (type && strlen(type) <= FS_SYNC_TYPE_MAX) {
                ok = fs_buf_printf(&b, "%s,", type);
                found++;
            }
        }
    }
    json_decref(doc);
    fhirsync_response_free(resp);
    fhirsync_client_free(client);
    if (!ok || found == 0) {
        fs_buf_free(&b);
        return NULL;
    }
    return fs_buf_steal(&b);
}

/* The types of the comma-separated `list` that keep() accepts, comma-separated (caller frees);
 * NULL on out of memory. */
static char *select_types(const char *list, bool (*keep)(const char *type, const void *ud),
                          const void *ud)
{
    fs_buf b;
    fs_buf_init(&b);
    bool ok = fs_buf_append(&b, "", 0);
    for (const char *p = list; ok && *p;) {
        size_t n = strcspn(p, ",");
        char type[FS_SYNC_TYPE_MAX + 1];
        if (n > 0 && n <= FS_SYNC_TYPE_MAX) {
            memcpy(type, p, n);
            type[n] = '\0';
            if (keep(type, ud))
                ok = (b.len == 0 || fs_buf_append_str(&b, ",")) && fs_buf_append_str(&b, type);
        }
        p += n + (p[n] == ',' ? 1 : 0);
    }
    if (!ok) {
        fs_buf_free(&b);
        return NULL;
    }
    return fs_buf_steal(&b);
}

static bool listed_in(const char *type, const void *list)
{
    return fs_sync_list_has(list, type);
}

/* A type the server lists that a crawl leaves out (not the planned ones, nor the server's own
 * infrastructure types). */
static bool left_out_of(const char *type, const void *planned)
{
    return !fs_sync_list_has(planned, type) && strcmp(type, "Bundle") != 0 &&
           strcmp(type, "OperationDefinition") != 0;
}

/* The start of both type plans: the `types` setting when set (*out; *granted stays NULL), else
 * the granted scope (*granted, caller frees; *out NULL). */
static fhirsync_code setting_or_scope(const fhirsync_endpoint *ep, char **out, char **granted,
                                      fhirsync_error *err)
{
    *out = *granted = NULL;
    const char *types = fhirsync_endpoint_get(ep, "types");
    if (types && *types) {
        *out = fs_strdup(types);
        return *out ? FHIRSYNC_OK : fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    return fs_sync_granted_scope(ep, granted, err);
}

fhirsync_code fs_sync_plan_types(const fhirsync_endpoint *ep, char perm, char **out,
                                 fhirsync_error *err)
{
    char *granted = NULL;
    fhirsync_code rc = setting_or_scope(ep, out, &granted, err);
    if (rc != FHIRSYNC_OK || *out)
        return rc;
    char *list = fs_sync_default_types(granted, perm);
    char *supported = list ? server_types(ep) : NULL;
    if (list && supported) {
        /* only what the server says it has: asking for others brings warnings (bulk) or 404s
         * (search) */
        char *kept = select_types(list, listed_in, supported);
        fs_free(list);
        list = kept;
    }
    fs_free(supported);
    if (!list) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    } else if (!*list) {
        rc = fs_err(err, FHIRSYNC_E_FORBIDDEN,
                    "the granted scopes (%s) allow %s none of the US Core resource types the "
                    "server has: ask for system/*.read (or list the types in the `types` "
                    "setting)",
                    granted, perm == 's' ? "searching" : "reading");
        fs_free(list);
        list = NULL;
    }
    fs_free(granted);
    *out = list;
    return rc;
}

char *fs_sync_crawl_left_out(const fhirsync_endpoint *ep, const char *planned)
{
    if (fhirsync_endpoint_get(ep, "types"))
        return NULL; /* the user's choice */
    char *supported = server_types(ep);
    char *left = supported ? select_types(supported, left_out_of, planned) : NULL;
    fs_free(supported);
    if (left && !*left) {
        fs_free(left);
        left = NULL;
    }
    return left;
}

fhirsync_code fs_sync_plan_bulk_types(const fhirsync_endpoint *ep, char **out, char **left_out,
                                      fhirsync_error *err)
{
    *left_out = NULL;
    char *granted = NULL;
    fhirsync_code rc = setting_or_scope(ep, out, &granted, err);
    if (rc != FHIRSYNC_OK || *out)
        return rc;
    if (fs_sync_scope_allows(granted, "*", 'r')) {
        fs_free(granted); /* everything the export offers: no _type */
        return FHIRSYNC_OK;
    }
    char *named = fs_sync_scope_named_types(granted, 'r');
    fs_buf note;
    fs_buf_init(&note);
    if (!named) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    } else if (!*named) {
        rc = fs_err(err, FHIRSYNC_E_FORBIDDEN,
                    "the granted scopes (%s) allow reading no resource type: ask for "
                    "system/*.read (or list the types in the `types` setting)",
                    granted);
    } else if (!fs_buf_printf(&note,
                              "only %s: the granted scopes (%s) name no other type; other types "
                              "are left out of this mirror (ask for system/*.read to mirror "
                              "everything)",
                              named, granted)) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    if (rc == FHIRSYNC_OK) {
        *out = named;
        *left_out = fs_buf_steal(&note);
    } else {
        fs_free(named);
        fs_buf_free(&note);
    }
    fs_free(granted);
    return rc;
}

char *fs_sync_endpoint_work_dir(const fhirsync_sync *s)
{
    return fs_sync_work_dir(fhirsync_store_location(s->store),
                            strcmp(fhirsync_store_engine_name(s->store), "postgresql") == 0,
                            s->opts.work_dir, s->name);
}

void fs_sync_finish_failed(fhirsync_sync *s, const char *why)
{
    if (s->run_id <= 0)
        return;
    fhirsync_store_rollback(s->store, NULL);
    int64_t loaded, deleted, quarantined;
    fs_sync_counts_totals(&s->counts, &loaded, &deleted, &quarantined);
    char *counts = fs_sync_counts_loaded_json(&s->counts);
    fs_store_run_end end = {.status = FHIRSYNC_RUN_FAILED,
                            .transaction_time = s->transaction_time,
                            .counts_json = counts,
                            .resources = loaded,
                            .deletions = deleted,
                            .quarantined = quarantined,
                            .error = why && *why ? why : "failed"};
    fhirsync_error ignored;
    if (fs_store_run_finish(s->store, s->run_id, &end, &ignored) != FHIRSYNC_OK)
        fs_log(FHIRSYNC_LOG_WARN, "sync %s: could not record the failed run: %s", s->name,
               ignored.message);
    fs_free(counts);
    s->status = FHIRSYNC_RUN_FAILED;
}

/* ---- the run --------------------------------------------------------------------------------- */

static int64_t rows_before(const fhirsync_sync *s, const char *type)
{
    for (size_t i = 0; i < s->nrows_before; i++)
        if (strcmp(s->rows_before[i].type, type) == 0)
            return s->rows_before[i].count;
    return 0;
}

/* Per type: what was received beside what the store changed. The rows are counted (only for the
 * types the run touched) when the run ended ok or partial. */
static fhirsync_code fill_type_stats(fhirsync_sync *s, bool finished)
{
    if (s->counts.n == 0)
        return FHIRSYNC_OK;
    s->type_stats = fs_calloc(s->counts.n, sizeof *s->type_stats);
    if (!s->type_stats)
        return FHIRSYNC_E_NOMEM;
    for (size_t i = 0; i < s->counts.n; i++) {
        const fs_sync_count *c = &s->counts.items[i];
        fhirsync_sync_type_stats *t = &s->type_stats[i];
        *t = (fhirsync_sync_type_stats){c->type, c->loaded, c->deleted, c->quarantined, 0, 0};
        fhirsync_error ignored;
        if (finished && fs_store_type_rows(s->store, c->type, &t->rows, &ignored) == FHIRSYNC_OK) {
            t->inserted = t->rows - rows_before(s, c->type) + c->deleted;
            if (t->inserted < 0)
                t->inserted = 0; /* another endpoint of a shared store deleted meanwhile */
            s->inserted += t->inserted;
        }
    }
    return FHIRSYNC_OK;
}

fhirsync_code fhirsync_sync_run(fhirsync_sync *s)
{
    if (!s)
        return FHIRSYNC_E_ARG;
    reset_run(s);
    fs_err_clear(&s->err);
    s->start_ms = fs_monotonic_ms();
    fhirsync_code rc = fs_store_lock_endpoint(s->store, s->name, s->opts.lock_owner,
                                              s->opts.lock_timeout_ms, &s->err);
    if (rc != FHIRSYNC_OK)
        goto out;
    rc = fs_store_bind_endpoint(s->store, s->name, fhirsync_endpoint_get(s->ep, "base_url"),
                                fs_endpoint_bool(s->ep, "shared_store"), &s->err);
    /* workers loading an export of this endpoint: this run would mark theirs interrupted and
     * their watermark move would be lost */
    int64_t worker_run = 0, files = 0;
    if (rc == FHIRSYNC_OK)
        rc = fs_sync_worker_run_in_flight(s->store, s->name, &worker_run, &files, &s->err);
    if (rc == FHIRSYNC_OK && worker_run)
        rc = fs_err(&s->err, FHIRSYNC_E_LOCKED,
                    "endpoint '%s' is being synced by workers: %lld file(s) of their run %lld are "
                    "still being loaded (fhirsync sync --worker); sync again once they are done",
                    s->name, (long long)files, (long long)worker_run);
    if (rc == FHIRSYNC_OK)
        rc = fhirsync_store_counts(s->store, &s->rows_before, &s->nrows_before, &s->err);
    const char *mode = fhirsync_endpoint_get(s->ep, "mode");
    const char *since_setting = fhirsync_endpoint_get(s->ep, "since");
    if (rc == FHIRSYNC_OK && !s->opts.full) {
        if (since_setting && *since_setting) {
            s->since = fs_strdup(since_setting);
            if (!s->since)
                rc = fs_err(&s->err, FHIRSYNC_E_NOMEM, "out of memory");
        } else {
            rc = fhirsync_store_watermark(s->store, s->name, &s->since, &s->err);
        }
    }
    if (rc == FHIRSYNC_OK)
        rc = fs_streq(mode, "crawl") ? fs_sync_crawl_run(s) : fs_sync_bulk_run(s);
    fhirsync_error ignored;
    fs_store_unlock_endpoint(s->store, s->name, &ignored);
out:
    s->duration_s = (double)(fs_monotonic_ms() - s->start_ms) / 1000.0;
    if (fill_type_stats(s, rc == FHIRSYNC_OK || rc == FHIRSYNC_E_PARTIAL) != FHIRSYNC_OK &&
        rc == FHIRSYNC_OK)
        rc = fs_err(&s->err, FHIRSYNC_E_NOMEM, "out of memory");
    if (rc != FHIRSYNC_OK && !s->err.message[0])
        fs_err(&s->err, rc, "%s", fhirsync_strerror(rc));
    if (rc != FHIRSYNC_OK)
        s->err.code = rc;
    fhirsync_sync_event ev = {.kind = FHIRSYNC_SYNC_EV_DONE,
                              .code = rc,
                              .message = rc == FHIRSYNC_OK ? NULL : s->err.message};
    fs_sync_emit(s, &ev);
    return rc;
}

fhirsync_code fhirsync_sync_stats_init(fhirsync_sync_stats *stats, unsigned int version)
{
    return fs_versioned_init(stats, sizeof *stats, version, FHIRSYNC_SYNC_STATS_VERSION,
                             "fhirsync_sync_stats");
}

fhirsync_code fhirsync_sync_get_stats(const fhirsync_sync *s, fhirsync_sync_stats *out)
{
    if (!out || fs_check_version(out->version, FHIRSYNC_SYNC_STATS_VERSION, "fhirsync_sync_stats",
                                 NULL) != FHIRSYNC_OK)
        return FHIRSYNC_E_ARG;
    unsigned int version = out->version;
    memset(out, 0, sizeof *out);
    out->version = version;
    if (!s)
        return FHIRSYNC_OK;
    out->run_id = s->run_id;
    out->status = s->status;
    out->mode = s->mode;
    out->level = s->level;
    out->since = s->since;
    out->transaction_time = s->transaction_time;
    out->watermark = s->watermark;
    out->resumed = s->resumed;
    fs_sync_counts_totals(&s->counts, &out->resources, &out->deleted, &out->quarantined);
    out->server_errors = s->counts.server_errors;
    out->requests = s->requests;
    out->duration_s = s->duration_s;
    out->reconciled = s->reconciled;
    out->inserted = s->inserted;
    return FHIRSYNC_OK;
}

size_t fhirsync_sync_type_count(const fhirsync_sync *s)
{
    return s && s->type_stats ? s->counts.n : 0;
}

const fhirsync_sync_type_stats *fhirsync_sync_type_at(const fhirsync_sync *s, size_t i)
{
    if (!s || !s->type_stats || i >= s->counts.n)
        return NULL;
    return &s->type_stats[i];
}
