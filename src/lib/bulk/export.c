/* bulk/export.c: the export handle: the folder and its lock, kick-off, status polls, the manifest
 * (all pages), the DELETE of the job, and the public API. Downloads are in download.c; what the
 * parts share (events, the run's log export-log.jsonl, the token, limits) is in job.c. Every
 * request to the FHIR server (kick-off, polls, manifest pages, DELETE) goes through the REST
 * client's fs_fhir_perform, which owns tokens, the 401 renewal, the rate limiter and retries;
 * status polls pace themselves (Retry-After, backoff, transient outcomes) and never come closer
 * than the poll floor (1 s), whatever the server says.
 * A run ends by its deadline (24 h unless set) whatever the server does, leaving the folder and
 * the job resumable; progress is reported when its text changes, or every 30 s, not per poll.
 *
 * The order of durable steps (each written before the next request):
 *   kick-off answered 202        -> state.json: status URL, request, kick-off time
 *   manifest complete             -> manifest.json, then state.json: transaction time
 *   a file verified and in place  -> state.json: its name, count, bytes (then FILE_DONE)
 *   every file done               -> state.json: complete; after the DELETE: job_deleted */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <dirent.h>
#include <unistd.h>

#include "bulk/bulk_internal.h"
#include "config/config_internal.h"
#include "fhir/fhir_internal.h"
#include "http/http.h"
#include "http/policy.h"

#define MAX_TRANSIENT_POLLS 1000

/* ---- options and limits ------------------------------------------------------------------- */

fhirsync_code fhirsync_export_limits_init(fhirsync_export_limits *limits, unsigned int version)
{
    return fs_versioned_init(limits, sizeof *limits, version, FHIRSYNC_EXPORT_LIMITS_VERSION,
                             "fhirsync_export_limits");
}

fhirsync_code fhirsync_export_options_init(fhirsync_export_options *opts, unsigned int version)
{
    if (fs_versioned_init(opts, sizeof *opts, version, FHIRSYNC_EXPORT_OPTIONS_VERSION,
                          "fhirsync_export_options") != FHIRSYNC_OK)
        return FHIRSYNC_E_ARG;
    opts->level = FHIRSYNC_EXPORT_SYSTEM;
    opts->delete_job = -1;
    return fhirsync_export_limits_init(&opts->limits, FHIRSYNC_EXPORT_LIMITS_VERSION);
}

fhirsync_code fhirsync_export_set_limits(fhirsync_export *ex, const fhirsync_export_limits *limits)
{
    if (!ex)
        return FHIRSYNC_E_ARG;
    fs_err_clear(&ex->err);
    if (!limits)
        return fhirsync_export_limits_init(&ex->limits, FHIRSYNC_EXPORT_LIMITS_VERSION);
    fhirsync_code rc = fs_check_version(limits->version, FHIRSYNC_EXPORT_LIMITS_VERSION,
                                        "fhirsync_export_limits", &ex->err);
    if (rc == FHIRSYNC_OK)
        ex->limits = *limits;
    return rc;
}

/* ---- the folder ----------------------------------------------------------------------------- */

/* Whether a folder has entries (other than . and ..). */
static bool dir_has_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return false;
    struct dirent *e;
    bool any = false;
    while (!any && (e = readdir(d)))
        any = strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return any;
}

static fhirsync_code open_folder(fhirsync_export *ex, fhirsync_error *err)
{
    fhirsync_code rc = fs_bulk_mkdirs(ex->dir, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    char *lock = fs_bulk_path_join(ex->dir, ".lock");
    if (!lock)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    ex->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    fs_free(lock);
    if (ex->lock_fd < 0)
        return fs_err(err, FHIRSYNC_E_IO, "cannot create %s/.lock: %s", ex->dir, strerror(errno));
    if (flock(ex->lock_fd, LOCK_EX | LOCK_NB) != 0)
        return fs_err(err, FHIRSYNC_E_LOCKED,
                      "another fhirsync process is using the export folder %s", ex->dir);
    return FHIRSYNC_OK;
}

/* The run's log is FS_BULK_LOG_FILE, a name no `*.ndjson` glob meant for data picks up. A
 * folder of an older version holds log.ndjson: it becomes the new log (or, when both exist, an
 * .old.jsonl beside it), so that resume goes on in one log and no data glob sees it. */
static fhirsync_code open_log(fhirsync_export *ex, fhirsync_error *err)
{
    char *path = fs_bulk_path_join(ex->dir, FS_BULK_LOG_FILE);
    char *old = fs_bulk_path_join(ex->dir, FS_BULK_OLD_LOG_FILE);
    char *aside = fs_bulk_path_join(ex->dir, "export-log.old.jsonl");
    ex->partial_dir = fs_bulk_path_join(ex->dir, ".partial");
    if (!path || !old || !aside || !ex->partial_dir) {
        fs_free(path);
        fs_free(old);
        fs_free(aside);
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    struct stat sb;
    if (lstat(old, &sb) == 0 && S_ISREG(sb.st_mode))
        (void)rename(old, lstat(path, &sb) == 0 ? aside : path); /* best effort: a log */
    fs_free(old);
    fs_free(aside);
    ex->log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    fhirsync_code rc = FHIRSYNC_OK;
    if (ex->log_fd < 0)
        rc = fs_err(err, FHIRSYNC_E_IO, "cannot open %s: %s", path, strerror(errno));
    fs_free(path);
    return rc;
}

/* Settings of the profile the export uses. */
static void read_settings(fhirsync_export *ex, int parallel, int delete_job)
{
    ex->parallel = parallel > 0 ? parallel : (int)fs_endpoint_long(ex->ep, "parallel");
    if (ex->parallel < 1)
        ex->parallel = 4;
    ex->delete_job = delete_job >= 0 ? delete_job != 0 : fs_endpoint_bool(ex->ep, "delete_job");
    ex->max_retries = fs_endpoint_long(ex->ep, "max_retries");
    ex->retry_cap = fs_endpoint_long(ex->ep, "retry_cap");
    if (ex->retry_cap <= 0)
        ex->retry_cap = 300;
    ex->rate_limit = fs_endpoint_long(ex->ep, "rate_limit");
    ex->timeout_s = fs_endpoint_long(ex->ep, "timeout");
    ex->connect_timeout_s = fs_endpoint_long(ex->ep, "connect_timeout");
}

static fhirsync_code handle_new(const fhirsync_endpoint *ep, const char *dir, fhirsync_export **out,
                                fhirsync_error *err)
{
    *out = NULL;
    if (!ep || !dir || !*dir)
        return fs_err(err, FHIRSYNC_E_ARG,
                      "an export needs an endpoint profile and a folder "
                      "(--out DIR)");
    fhirsync_export *ex = fs_calloc(1, sizeof *ex);
    if (!ex)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    ex->lock_fd = ex->log_fd = -1;
    fs_bulk_state_init(&ex->st);
    fs_bulk_manifest_init(&ex->man);
    fhirsync_code rc = fhirsync_client_new(ep, &ex->client, err);
    if (rc != FHIRSYNC_OK)
        goto out;
    size_t dlen = strlen(dir);
    while (dlen > 1 && dir[dlen - 1] == '/')
        dlen--;
    if (!(ex->ep = fhirsync_endpoint_dup(ep)) || !(ex->dir = fs_strndup(dir, dlen)) ||
        !(ex->base_url = fs_strdup(fs_fhir_client_base(ex->client)))) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
out:
    if (rc != FHIRSYNC_OK) {
        fhirsync_export_free(ex);
        return rc;
    }
    *out = ex;
    return FHIRSYNC_OK;
}

fhirsync_code fhirsync_export_new(const fhirsync_endpoint *ep, const fhirsync_export_options *opts,
                                  fhirsync_export **out, fhirsync_error *err)
{
    if (!out)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_export_new: no place for the handle");
    *out = NULL;
    if (!opts)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_export_new: no options");
    fhirsync_code checked = fs_check_version(opts->version, FHIRSYNC_EXPORT_OPTIONS_VERSION,
                                             "fhirsync_export_options", err);
    if (checked == FHIRSYNC_OK)
        checked = fs_check_version(opts->limits.version, FHIRSYNC_EXPORT_LIMITS_VERSION,
                                   "fhirsync_export_limits", err);
    if (checked != FHIRSYNC_OK)
        return checked;
    fhirsync_export *ex = NULL;
    json_t *request = fs_bulk_request_build(opts, ep, err);
    if (!request)
        return err ? err->code : FHIRSYNC_E_ARG;
    fhirsync_code rc = handle_new(ep, opts->out_dir, &ex, err);
    if (rc != FHIRSYNC_OK)
        goto out;
    ex->request = request;
    request = NULL;
    read_settings(ex, opts->parallel, opts->delete_job);
    ex->max_line = opts->max_line ? opts->max_line : FS_BULK_DEFAULT_MAX_LINE;
    ex->limits = opts->limits;
    struct stat sb;
    bool existed = stat(ex->dir, &sb) == 0;
    if (existed && !S_ISDIR(sb.st_mode)) {
        rc = fs_err(err, FHIRSYNC_E_ARG, "%s exists and is not a folder", ex->dir);
        goto out;
    }
    bool had_entries = existed && dir_has_entries(ex->dir);
    rc = open_folder(ex, err);
    if (rc != FHIRSYNC_OK)
        goto out;
    fhirsync_error e = {0};
    rc = fs_bulk_state_load(ex->dir, &ex->st, &e);
    if (rc == FHIRSYNC_E_NOT_FOUND) {
        if (had_entries) {
            rc = fs_err(err, FHIRSYNC_E_ARG,
                        "%s is not empty and holds no fhirsync export "
                        "(no state.json): choose a new or empty folder",
                        ex->dir);
            goto out;
        }
        fs_bulk_state_init(&ex->st);
        ex->st.base_url = fs_strdup(ex->base_url);
        ex->st.request = json_incref(ex->request);
        if (!ex->st.base_url) {
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
            goto out;
        }
        rc = fs_bulk_state_save(&ex->st, ex->dir, err);
        if (rc != FHIRSYNC_OK)
            goto out;
    } else if (rc != FHIRSYNC_OK) {
        if (err)
            *err = e;
        goto out;
    } else if (!fs_streq(ex->st.base_url, ex->base_url) ||
               !json_equal(ex->st.request, ex->request)) {
        char *recorded = fs_json_dump(ex->st.request);
        rc = fs_err(err, FHIRSYNC_E_ARG,
                    "%s holds an export of another request (%s at %s): continue it with "
                    "--resume %s, or use another folder",
                    ex->dir, recorded ? recorded : "?", ex->st.base_url, ex->dir);
        fs_free(recorded);
        goto out;
    }
    rc = open_log(ex, err);
out:
    json_decref(request);
    if (rc != FHIRSYNC_OK) {
        fhirsync_export_free(ex);
        return rc;
    }
    *out = ex;
    return FHIRSYNC_OK;
}

fhirsync_code fhirsync_export_open(const fhirsync_endpoint *ep, const char *dir, int parallel,
                                   int delete_job, fhirsync_export **out, fhirsync_error *err)
{
    if (!out)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_export_open: no place for the handle");
    *out = NULL;
    fhirsync_export *ex = NULL;
    fhirsync_code rc = handle_new(ep, dir, &ex, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    read_settings(ex, parallel, delete_job);
    ex->max_line = FS_BULK_DEFAULT_MAX_LINE;
    struct stat sb;
    if (stat(ex->dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        rc = fs_err(err, FHIRSYNC_E_ARG, "%s is not an export folder (it does not exist)", ex->dir);
        goto out;
    }
    rc = open_folder(ex, err);
    if (rc != FHIRSYNC_OK)
        goto out;
    rc = fs_bulk_state_load(ex->dir, &ex->st, err);
    if (rc == FHIRSYNC_E_NOT_FOUND) {
        rc = fs_err(err, FHIRSYNC_E_ARG, "%s holds no fhirsync export (no state.json)", ex->dir);
        goto out;
    }
    if (rc != FHIRSYNC_OK)
        goto out;
    if (!fs_streq(ex->st.base_url, ex->base_url)) {
        rc = fs_err(err, FHIRSYNC_E_ARG, "%s holds an export from %s, not from %s", ex->dir,
                    ex->st.base_url, ex->base_url);
        goto out;
    }
    ex->request = json_incref(ex->st.request);
    rc = open_log(ex, err);
out:
    if (rc != FHIRSYNC_OK) {
        fhirsync_export_free(ex);
        return rc;
    }
    *out = ex;
    return FHIRSYNC_OK;
}

void fs_bulk_file_clear(fs_bulk_file *f)
{
    /* type is the manifest's */
    fs_free(f->url);
    fs_free(f->name);
    fs_free(f->path);
    fs_bulk_scratch_free(f);
}

static void free_files(fhirsync_export *ex)
{
    for (size_t i = 0; i < ex->nfiles; i++)
        fs_bulk_file_clear(&ex->files[i]);
    fs_free(ex->files);
    ex->files = NULL;
    ex->nfiles = 0;
    ex->files_done = 0;
    ex->resources_done = 0;
}

void fhirsync_export_free(fhirsync_export *ex)
{
    if (!ex)
        return;
    free_files(ex);
    fs_bulk_manifest_clear(&ex->man);
    fs_bulk_state_clear(&ex->st);
    json_decref(ex->request);
    fhirsync_client_free(ex->client);
    fhirsync_endpoint_free(ex->ep);
    if (ex->log_fd >= 0)
        close(ex->log_fd);
    if (ex->lock_fd >= 0)
        close(ex->lock_fd); /* releases the flock */
    fs_free_secret(ex->token);
    fs_free(ex->last_progress);
    fs_free(ex->base_url);
    fs_free(ex->dir);
    fs_free(ex->partial_dir);
    fs_free(ex);
}

void fhirsync_export_set_callback(fhirsync_export *ex, fhirsync_export_cb cb, void *userdata)
{
    ex->cb = cb;
    ex->cb_userdata = userdata;
}

fhirsync_code fhirsync_export_errcode(const fhirsync_export *ex)
{
    return ex ? ex->err.code : FHIRSYNC_E_ARG;
}

const char *fhirsync_export_errmsg(const fhirsync_export *ex)
{
    return ex ? ex->err.message : "";
}

/* ---- the manifest against the request ------------------------------------------------------ */

/* Whether the comma-separated `list` holds `type`. */
static bool list_has(const char *list, const char *type)
{
    size_t n = strlen(type);
    for (const char *p = list; p && *p;) {
        size_t len = strcspn(p, ",");
        if (len == n && memcmp(p, type, n) == 0)
            return true;
        p += len + (p[len] == ',');
    }
    return false;
}

/* Types in the manifest that _type did not ask for: a server may add them (they are kept and
 * reported by the application), but after a POST kick-off they usually mean that the server
 * ignored the Parameters body altogether (seen in the wild: every type came back). Say so once. */
static void warn_ignored_body(fhirsync_export *ex)
{
    const char *types = fs_bulk_request_param(ex->request, "_type");
    if (!types || !fs_bulk_request_post(ex->request))
        return;
    for (size_t i = 0; i < ex->nfiles; i++) {
        const fhirsync_export_file *f = &ex->files[i].pub;
        if (f->kind != FHIRSYNC_EXPORT_OUTPUT || list_has(types, f->type))
            continue;
        char msg[400];
        snprintf(msg, sizeof msg,
                 "the manifest has %s, which _type=%s did not ask for: the server may have "
                 "ignored the POSTed Parameters body (try the same export without --post)",
                 f->type, types);
        fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_WARNING, NULL, msg, 0, FHIRSYNC_OK);
        return;
    }
}

/* ---- kick-off ------------------------------------------------------------------------------- */

/* A URL the server gave for us to poll or fetch with the token (status URL, manifest pages) must
 * be on the FHIR server's origin; another origin is the server breaking the protocol (exit 8),
 * not a setting of ours. */
static fhirsync_code check_same_origin(fhirsync_export *ex, const char *url, const char *what,
                                       fhirsync_error *err)
{
    bool same = false;
    if (fs_url_compare_origins(url, ex->base_url, &same) == FHIRSYNC_E_NOMEM)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    if (same)
        return FHIRSYNC_OK;
    return fs_err(err, FHIRSYNC_E_PROTOCOL,
                  "%s %s is not on the FHIR server's origin (%s): fhirsync polls and pages only "
                  "on the server it sends the token to",
                  what, url, ex->base_url);
}

/* Whether a text says that an export is already running (OperationOutcomes of servers that
 * allow one export at a time say so). */
static bool mentions_running_export(const char *text)
{
    static const char *const words[] = {"already",    "in progress",    "running",
                                        "concurrent", "another export", "existing export"};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (strcasestr(text, words[i]))
            return true;
    return false;
}

/* A 429 at kick-off: say what the server said. Only a server that speaks of a running export
 * gets the "cancel it" hint; one that says "Too Many Requests" is rate limiting. */
static fhirsync_code kickoff_429(const fs_http_response *resp, fhirsync_error *err)
{
    char desc[512];
    fs_fhir_describe_body(resp->body.data, resp->body.len, fs_http_header_get(resp, "Content-Type"),
                          desc, sizeof desc);
    int64_t wait_s = fs_http_retry_after(resp, fs_now());
    char when[96] = "";
    if (wait_s >= 0)
        snprintf(when, sizeof when, " (Retry-After: %lld s)", (long long)wait_s);
    bool empty = resp->body.len == 0;
    if (!empty && mentions_running_export(desc))
        return fs_err_http(err, FHIRSYNC_E_RATE_LIMITED, 429,
                           "the server refused the kick-off (HTTP 429): %s%s; an export is "
                           "already running: wait for it to finish, or cancel it by DELETE of "
                           "its status URL, then try again",
                           desc, when);
    if (empty)
        return fs_err_http(err, FHIRSYNC_E_RATE_LIMITED, 429,
                           "the server refused the kick-off with HTTP 429 and no explanation%s: "
                           "it is rate limiting, or an export of this client is still running; "
                           "try again later",
                           when);
    return fs_err_http(err, FHIRSYNC_E_RATE_LIMITED, 429,
                       "the server refused the kick-off as rate limited (HTTP 429)%s: %s; try "
                       "again later",
                       when, desc);
}

static fhirsync_code kickoff(fhirsync_export *ex, fhirsync_error *err)
{
    char *target = fs_bulk_request_target(ex->request);
    char *body = fs_bulk_request_post(ex->request) ? fs_bulk_request_parameters(ex->request) : NULL;
    fs_http_response resp;
    fs_http_response_init(&resp);
    fhirsync_code rc = FHIRSYNC_OK;
    char *status_url = NULL;
    if (!target || (fs_bulk_request_post(ex->request) && !body)) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
    const char *headers[] = {fs_bulk_request_lenient(ex->request)
                                 ? "Prefer: respond-async, handling=lenient"
                                 : "Prefer: respond-async",
                             NULL};
    fs_fhir_request req = {.method = body ? "POST" : "GET",
                           .target = target,
                           .accept = FS_FHIR_JSON,
                           .headers = headers,
                           .body = body,
                           .body_len = body ? strlen(body) : 0};
    fs_log(FHIRSYNC_LOG_INFO, "export: kick-off %s %s", req.method, target);
    int64_t sent_at = fs_now();
    rc = fs_fhir_perform(ex->client, &req, &resp, err);
    if (rc != FHIRSYNC_OK)
        goto out;
    const char *url = resp.effective_url ? resp.effective_url : target;
    if (resp.status == 429) {
        rc = kickoff_429(&resp, err);
        goto out;
    }
    if (resp.status != 202) {
        if (resp.status >= 200 && resp.status < 300)
            rc = fs_err_http(err, FHIRSYNC_E_PROTOCOL, resp.status,
                             "kick-off answered HTTP %ld from %s where 202 Accepted was expected "
                             "(the server may not support asynchronous $export)",
                             resp.status, url);
        else
            rc = fs_fhir_status_error(&resp, url, err);
        fs_err_prefix(err, "export kick-off refused");
        goto out;
    }
    const char *location = fs_http_header_get(&resp, "Content-Location");
    if (!location || !*location) {
        rc = fs_err_http(err, FHIRSYNC_E_PROTOCOL, 202,
                         "kick-off answered 202 Accepted without a Content-Location header: the "
                         "server did not say where to poll for the export's status");
        goto out;
    }
    rc = fs_url_resolve(url, location, false, &status_url, err);
    if (rc != FHIRSYNC_OK) {
        /* the server's header is wrong, not our configuration */
        if (rc != FHIRSYNC_E_NOMEM)
            rc = fs_err_http(err, FHIRSYNC_E_PROTOCOL, 202,
                             "kick-off answered 202 with a "
                             "Content-Location that is not a URL: %s",
                             err ? err->message : "");
        goto out;
    }
    rc =
        check_same_origin(ex, status_url, "the status URL (Content-Location of the kick-off)", err);
    if (rc != FHIRSYNC_OK)
        goto out;
    /* The kick-off time on the server's clock (its Date header), else ours when we sent it: the
     * sync's watermark never goes past it, whatever transactionTime the manifest gives. */
    int64_t kicked_off = sent_at;
    const char *date = fs_http_header_get(&resp, "Date");
    int64_t server_time;
    if (date && fs_parse_http_date(date, &server_time))
        kicked_off = server_time;
    char when[32];
    fs_format_instant(kicked_off, when, sizeof when);
    fs_free(ex->st.status_url);
    fs_free(ex->st.kickoff_time);
    ex->st.status_url = status_url;
    status_url = NULL;
    ex->st.kickoff_time = fs_strdup(when);
    if (!ex->st.kickoff_time) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
    rc = fs_bulk_state_save(&ex->st, ex->dir, err);
    if (rc != FHIRSYNC_OK)
        goto out;
    fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_KICKOFF, NULL, ex->st.status_url, 0, FHIRSYNC_OK);
out:
    fs_http_response_clear(&resp);
    fs_free(status_url);
    fs_free(target);
    fs_free(body);
    return rc;
}

/* ---- status polls --------------------------------------------------------------------------- */

int64_t fs_bulk_poll_delay_ms(const char *retry_after, int64_t now, unsigned attempt, int64_t cap_s,
                              int64_t floor_ms)
{
    int64_t seconds = -1;
    if (cap_s <= 0)
        cap_s = 300;
    if (!fs_http_retry_after_parse(retry_after, now, &seconds, NULL))
        seconds = -1;
    if (seconds < 0 && cap_s > FS_BULK_POLL_BACKOFF_CAP_S)
        cap_s = FS_BULK_POLL_BACKOFF_CAP_S;
    return fs_http_poll_delay_ms(attempt, seconds,
                                 floor_ms > 0 ? floor_ms : FS_BULK_DEFAULT_POLL_FLOOR_MS, cap_s);
}

static fhirsync_code wait_ms(fhirsync_export *ex, int64_t ms, fhirsync_error *err)
{
    if (ex->cb_stop || !fs_sleep_ms(ms))
        return fs_err(err, FHIRSYNC_E_CANCELLED,
                      "export interrupted while waiting for the "
                      "server (resume it by running the same command again)");
    return FHIRSYNC_OK;
}

/* " (Retry-After: VALUE, FORM: N s from now)" for messages; "" when the answer had none. */
static void describe_retry_after(const char *ra, char *buf, size_t size)
{
    buf[0] = '\0';
    if (!ra || size == 0)
        return;
    int64_t s = 0;
    fs_http_retry_after_form form;
    if (fs_http_retry_after_parse(ra, fs_now(), &s, &form))
        snprintf(buf, size, " (Retry-After: %.60s, %s: %lld s from now)", ra,
                 fs_http_retry_after_form_name(form), (long long)s);
    else
        snprintf(buf, size, " (Retry-After: %.60s, not understood)", ra);
}

/* A status poll said "in progress": tell the application and the log when the X-Progress text
 * changed or FS_BULK_PROGRESS_EVERY_MS passed, not per poll (a server answering at once must not
 * fill the disk with identical lines). */
static void report_progress(fhirsync_export *ex, const char *progress, const char *ra,
                            int64_t delay)
{
    int64_t now = fs_monotonic_ms();
    bool changed = (progress || ex->last_progress) && !fs_streq(progress, ex->last_progress);
    if (!changed && ex->last_progress_ms && now - ex->last_progress_ms < FS_BULK_PROGRESS_EVERY_MS)
        return;
    if (changed) {
        fs_free(ex->last_progress);
        ex->last_progress = progress ? fs_strdup(progress) : NULL;
    }
    ex->last_progress_ms = now;
    char why[160];
    describe_retry_after(ra, why, sizeof why);
    fs_log(FHIRSYNC_LOG_INFO, "export: in progress%s%s; next poll in %.1f s%s (poll %u)",
           progress ? ": " : "", progress ? progress : "", (double)delay / 1000.0, why, ex->polls);
    fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_PROGRESS, NULL, progress, delay, FHIRSYNC_OK);
}

/* GET one manifest page (after the first) and add it. */
static fhirsync_code fetch_next_page(fhirsync_export *ex, const char *url, fhirsync_error *err)
{
    fs_http_response resp;
    fs_http_response_init(&resp);
    fs_fhir_request req = {
        .target = url, .accept = "application/json", .max_body = FS_BULK_MANIFEST_MAX_BODY};
    fhirsync_code rc = fs_fhir_perform(ex->client, &req, &resp, err);
    if (rc == FHIRSYNC_OK && resp.status != 200)
        rc = resp.status >= 200 && resp.status < 300
                 ? fs_err_http(err, FHIRSYNC_E_PROTOCOL, resp.status,
                               "manifest page %s answered HTTP %ld, not 200", url, resp.status)
                 : fs_fhir_status_error(&resp, url, err);
    if (rc == FHIRSYNC_OK)
        rc = fs_bulk_manifest_parse(&ex->man, resp.body.data, resp.body.len,
                                    resp.effective_url ? resp.effective_url : url, err);
    fs_http_response_clear(&resp);
    return rc;
}

static fhirsync_code poll_status(fhirsync_export *ex, fhirsync_error *err)
{
    fs_http_response resp;
    fs_http_response_init(&resp);
    fhirsync_code rc = FHIRSYNC_OK;
    unsigned attempt = 0, failures = 0, transient = 0;
    const char *url = ex->st.status_url;
    for (;;) {
        if (fs_cancel_requested() || ex->cb_stop) {
            rc = wait_ms(ex, 0, err);
            break;
        }
        fs_fhir_request req = {.target = url,
                               .accept = "application/json",
                               .no_status_retries = true,
                               .max_body = FS_BULK_MANIFEST_MAX_BODY};
        rc = fs_fhir_perform(ex->client, &req, &resp, err);
        if (rc != FHIRSYNC_OK) {
            fs_err_prefix(err, "export status poll");
            break;
        }
        long status = resp.status;
        const char *ra = fs_http_header_get(&resp, "Retry-After");
        if (status == 200) {
            rc = fs_bulk_manifest_parse(&ex->man, resp.body.data, resp.body.len,
                                        resp.effective_url ? resp.effective_url : url, err);
            break;
        }
        char msg[1200];
        int64_t delay;
        if (status == 202) {
            failures = 0;
            transient = 0;
            delay = fs_bulk_poll_delay_ms(ra, fs_now(), attempt++, ex->retry_cap,
                                          fs_bulk_poll_floor_ms(ex));
            report_progress(ex, fs_http_header_get(&resp, "X-Progress"), ra, delay);
        } else if (status >= 500 || fs_http_retryable_status(status, true, -1)) {
            /* a 5xx may carry the bulk protocol's OperationOutcome: "transient" keeps polling,
             * an error ends the export; without one, the transport policy decides */
            fs_outcome oo;
            bool has_oo = fs_outcome_parse(resp.body.data, resp.body.len, &oo);
            if (has_oo && oo.transient && status >= 500) {
                if (++transient > MAX_TRANSIENT_POLLS) {
                    rc = fs_err_http(err, FHIRSYNC_E_SERVER, status,
                                     "export status: the server reported a transient error %u "
                                     "times in a row: %s",
                                     transient, oo.summary);
                    break;
                }
                snprintf(msg, sizeof msg, "status poll: HTTP %ld, transient: %s", status,
                         oo.summary);
            } else if (has_oo && oo.has_error && status >= 500) {
                rc = fs_err_http(err, FHIRSYNC_E_SERVER, status,
                                 "the export failed on the server (HTTP %ld from %s): %s", status,
                                 url, oo.summary);
                break;
            } else if (!fs_http_retryable_status(status, true, -1)) {
                rc = fs_fhir_status_error(&resp, url, err);
                fs_err_prefix(err, "export status poll");
                break;
            } else {
                if (++failures > (unsigned)ex->max_retries) {
                    rc = fs_fhir_status_error(&resp, url, err);
                    fs_err_prefix(err, "export status poll failed %u times", failures);
                    break;
                }
                char desc[512];
                fs_fhir_describe_body(resp.body.data, resp.body.len,
                                      fs_http_header_get(&resp, "Content-Type"), desc, sizeof desc);
                snprintf(msg, sizeof msg, "status poll: HTTP %ld: %s", status, desc);
            }
            delay = fs_bulk_poll_delay_ms(ra, fs_now(), failures + transient - 1, ex->retry_cap,
                                          fs_bulk_poll_floor_ms(ex));
            size_t used = strlen(msg);
            describe_retry_after(ra, msg + used, sizeof msg - used);
            fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_RETRY, NULL, msg, delay, FHIRSYNC_OK);
        } else if (status == 404 || status == 410) {
            rc = fs_fhir_status_error(&resp, url, err);
            fs_err_prefix(err, "the export job is gone (deleted or expired on the server); "
                               "start a new export in a new folder");
            break;
        } else {
            rc = status >= 200 && status < 300
                     ? fs_err_http(err, FHIRSYNC_E_PROTOCOL, status,
                                   "export status answered HTTP %ld (expected 202 or 200)", status)
                     : fs_fhir_status_error(&resp, url, err);
            fs_err_prefix(err, "export status poll");
            break;
        }
        fs_http_response_clear(&resp);
        rc = fs_bulk_deadline(ex, "while waiting for the server to finish the export", &delay, err);
        if (rc == FHIRSYNC_OK)
            rc = wait_ms(ex, delay, err);
        if (rc == FHIRSYNC_OK)
            rc = fs_bulk_deadline(ex, "while waiting for the server to finish the export", NULL,
                                  err);
        if (rc != FHIRSYNC_OK)
            break;
    }
    fs_http_response_clear(&resp);
    if (rc != FHIRSYNC_OK)
        return rc;
    /* further pages */
    char *seen[FS_BULK_MAX_MANIFEST_PAGES];
    size_t nseen = 0;
    while (rc == FHIRSYNC_OK && ex->man.next) {
        char *next = ex->man.next;
        ex->man.next = NULL;
        for (size_t i = 0; i < nseen; i++)
            if (strcmp(seen[i], next) == 0)
                rc = fs_err(err, FHIRSYNC_E_PROTOCOL, "manifest paging loops back to %s", next);
        if (rc == FHIRSYNC_OK && nseen == FS_BULK_MAX_MANIFEST_PAGES)
            rc = fs_err(err, FHIRSYNC_E_PROTOCOL, "manifest has more than %d pages",
                        FS_BULK_MAX_MANIFEST_PAGES);
        if (rc != FHIRSYNC_OK) {
            fs_free(next);
            break;
        }
        seen[nseen++] = next;
        rc = check_same_origin(ex, next, "the manifest's next page", err);
        if (rc == FHIRSYNC_OK)
            rc = fetch_next_page(ex, next, err);
    }
    for (size_t i = 0; i < nseen; i++)
        fs_free(seen[i]);
    return rc;
}

/* ---- the manifest and the files ------------------------------------------------------------- */

/* The files of the manifest, in linear time: the sequence number of a file among those of its
 * kind and type comes from a map; the URLs move from the manifest into the files, the type names
 * are the manifest's (kept with its header), and a file keeps only its name (its path is built
 * once it is done, its partial path while it downloads: see fs_bulk_file_path). */
static fhirsync_code build_files(fhirsync_export *ex, fhirsync_error *err)
{
    free_files(ex);
    size_t n = ex->man.count;
    ex->files = n ? fs_calloc(n, sizeof *ex->files) : NULL;
    if (n && !ex->files)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    /* output first, then deleted, then error, each in manifest order */
    size_t k = 0;
    fs_bulk_map seqs = {0};
    fhirsync_code rc = FHIRSYNC_OK;
    for (int kind = FHIRSYNC_EXPORT_OUTPUT; kind <= FHIRSYNC_EXPORT_ERROR; kind++) {
        fs_bulk_map_clear(&seqs);
        for (size_t i = 0; i < n; i++) {
            fs_bulk_entry *e = &ex->man.entries[i];
            if ((int)e->kind != kind)
                continue;
            size_t *last = fs_bulk_map_get(&seqs, e->type);
            unsigned seq = last ? (unsigned)(*last + 1) : 1;
            fs_bulk_file *f = &ex->files[k++];
            ex->nfiles = k;
            f->index = k - 1;
            /* "[deleted/|error/]Type.N.ndjson", allocated to its size; the full path and the
             * partial file's path are built when needed (fs_bulk_file_path, the scratch) */
            const char *prefix = kind == FHIRSYNC_EXPORT_DELETED ? "deleted/"
                                 : kind == FHIRSYNC_EXPORT_ERROR ? "error/"
                                                                 : "";
            int name_len = snprintf(NULL, 0, "%s%s.%u.ndjson", prefix, e->type, seq);
            f->name = name_len > 0 ? fs_malloc((size_t)name_len + 1) : NULL;
            if (f->name)
                snprintf(f->name, (size_t)name_len + 1, "%s%s.%u.ndjson", prefix, e->type, seq);
            f->type = e->type; /* the manifest's: the map's key lives on in the file */
            f->url = e->url;   /* moved */
            e->url = NULL;
            if (!f->name || (last ? (*last = seq, false) : !fs_bulk_map_put(&seqs, f->type, seq))) {
                rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
                goto out;
            }
            f->pub.kind = e->kind;
            f->pub.type = f->type;
            f->pub.url = f->url;
            f->pub.name = f->name;
            f->pub.manifest_count = e->count;
            const fs_bulk_done *d = fs_bulk_state_find_done(&ex->st, f->name);
            if (d) {
                f->pub.from_previous_run = true;
                f->pub.count = d->count;
                f->pub.quarantined = d->quarantined;
                f->pub.bytes = d->bytes;
                fs_bulk_file_mark_done(ex, f);
            }
        }
    }
out:
    fs_bulk_map_clear(&seqs);
    fs_bulk_manifest_drop_entries(&ex->man);
    return rc;
}

static fhirsync_code save_manifest(fhirsync_export *ex, fhirsync_error *err)
{
    char *text = fs_bulk_manifest_dump(&ex->man);
    if (!text)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    fhirsync_code rc = fs_bulk_write_atomic(ex->dir, "manifest.json", text, strlen(text), err);
    fs_free(text);
    if (rc != FHIRSYNC_OK)
        return rc;
    fs_free(ex->st.transaction_time);
    ex->st.transaction_time = fs_strdup(ex->man.transaction_time);
    if (!ex->st.transaction_time)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    ex->st.manifest_saved = true;
    return fs_bulk_state_save(&ex->st, ex->dir, err);
}

static fhirsync_code load_manifest(fhirsync_export *ex, fhirsync_error *err)
{
    char *path = fs_bulk_path_join(ex->dir, "manifest.json");
    char *text = NULL;
    size_t len = 0;
    fhirsync_code rc =
        path ? fs_bulk_read_file(path, FS_BULK_MANIFEST_MAX_BODY * 4, &text, &len, err)
             : fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    if (rc == FHIRSYNC_OK) {
        fs_bulk_manifest_clear(&ex->man);
        rc = fs_bulk_manifest_parse(&ex->man, text, len, ex->st.status_url, err);
        if (rc != FHIRSYNC_OK)
            fs_err_prefix(err, "%s (remove the folder to start the export again)", path);
    }
    fs_free(text);
    fs_free(path);
    return rc;
}

static fhirsync_code delete_job(fhirsync_export *ex, fhirsync_error *err)
{
    if (!ex->st.status_url)
        return fs_err(err, FHIRSYNC_E_ARG, "no export job to delete (no kick-off yet)");
    if (ex->st.job_deleted)
        return FHIRSYNC_OK;
    fs_http_response resp;
    fs_http_response_init(&resp);
    fs_fhir_request req = {
        .method = "DELETE", .target = ex->st.status_url, .accept = "application/json"};
    fhirsync_code rc = fs_fhir_perform(ex->client, &req, &resp, err);
    if (rc == FHIRSYNC_OK && !(resp.status >= 200 && resp.status < 300) && resp.status != 404 &&
        resp.status != 410)
        rc = fs_fhir_status_error(&resp, ex->st.status_url, err);
    if (rc == FHIRSYNC_OK) {
        fs_log(FHIRSYNC_LOG_INFO, "export: job deleted on the server (HTTP %ld)", resp.status);
        ex->st.job_deleted = true;
        fs_bulk_log_record(
            ex, json_pack("{s:s, s:I}", "event", "job-deleted", "status", (json_int_t)resp.status));
        rc = fs_bulk_state_save(&ex->st, ex->dir, err);
    }
    fs_http_response_clear(&resp);
    return rc;
}

fhirsync_code fhirsync_export_delete_job(fhirsync_export *ex)
{
    if (!ex)
        return FHIRSYNC_E_ARG;
    fs_err_clear(&ex->err);
    return delete_job(ex, &ex->err);
}

/* ---- run ------------------------------------------------------------------------------------ */

/* Why a complete export is partial, naming each cause: quarantined lines, and files whose line
 * count differs from the manifest's (with the first such file). */
static void partial_message(fhirsync_export *ex, fhirsync_error *err)
{
    fhirsync_export_stats stats;
    fs_bulk_collect_stats(ex, &stats);
    size_t mismatched = 0;
    const fs_bulk_file *first = NULL;
    for (size_t i = 0; i < ex->nfiles; i++) {
        if (ex->files[i].mismatch) {
            mismatched++;
            if (!first)
                first = &ex->files[i];
        }
    }
    char lines[160] = "", counts[400] = "";
    if (first)
        snprintf(counts, sizeof counts,
                 "%zu file(s) hold a different number of lines than the "
                 "manifest says (%s: %llu line(s), the manifest says %lld)",
                 mismatched, first->name, (unsigned long long)first->lines,
                 (long long)first->pub.manifest_count);
    if (stats.quarantined > 0 || !first)
        snprintf(lines, sizeof lines, "%lld line(s) failed the checks and were quarantined",
                 (long long)stats.quarantined);
    fs_err(err, FHIRSYNC_E_PARTIAL, "export complete, but %s%s%s (see %s/quarantine/)", lines,
           lines[0] && counts[0] ? "; and " : "", counts, ex->dir);
}

fhirsync_code fhirsync_export_run(fhirsync_export *ex)
{
    if (!ex)
        return FHIRSYNC_E_ARG;
    fs_err_clear(&ex->err);
    fhirsync_error *err = &ex->err;
    ex->run_start_ms = fs_monotonic_ms();
    ex->deadline_ms =
        fs_bulk_deadline_s(ex) > 0 ? ex->run_start_ms + fs_bulk_deadline_s(ex) * 1000 : 0;
    ex->polls = 0;
    ex->last_progress_ms = 0;
    ex->retries = ex->renewals = 0;
    ex->bytes_received = 0;
    ex->cb_stop = false;
    fhirsync_code rc = FHIRSYNC_OK;
    bool resumed = ex->st.status_url != NULL;
    fs_bulk_log_record(ex,
                       json_pack("{s:s, s:s, s:o, s:b}", "event", "run", "base_url", ex->base_url,
                                 "request", json_incref(ex->request), "resumed", resumed));
    if (!ex->st.status_url) {
        rc = kickoff(ex, err);
        if (rc != FHIRSYNC_OK)
            goto out;
    } else {
        fs_log(FHIRSYNC_LOG_INFO, "export: resuming %s (status URL %s)", ex->dir,
               ex->st.status_url);
    }
    if (!ex->manifest_loaded) {
        free_files(ex); /* they borrow the manifest's type names */
        if (ex->st.manifest_saved) {
            rc = load_manifest(ex, err);
        } else {
            fs_bulk_manifest_clear(&ex->man);
            rc = poll_status(ex, err);
            if (rc == FHIRSYNC_OK)
                rc = save_manifest(ex, err);
        }
        if (rc == FHIRSYNC_OK)
            rc = build_files(ex, err);
        if (rc != FHIRSYNC_OK)
            goto out;
        ex->manifest_loaded = true;
        warn_ignored_body(ex);
        if (ex->man.requires_token_missing)
            fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_WARNING, NULL,
                         "the manifest has no requiresAccessToken: the token is sent (to the "
                         "FHIR server's origin only)",
                         0, FHIRSYNC_OK);
        if (!fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_MANIFEST, NULL, NULL, 0, FHIRSYNC_OK)) {
            rc = wait_ms(ex, 0, err);
            goto out;
        }
        for (size_t i = 0; i < ex->nfiles; i++) {
            if (ex->files[i].pub.from_previous_run &&
                !fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_FILE_DONE, &ex->files[i], NULL, 0,
                              FHIRSYNC_OK)) {
                rc = wait_ms(ex, 0, err);
                goto out;
            }
        }
    }
    rc = fs_bulk_download_all(ex);
    if (rc != FHIRSYNC_OK)
        goto out;
    for (size_t i = 0; i < ex->nfiles; i++)
        if (ex->files[i].pub.quarantined > 0)
            ex->partial_result = true;
    if (!ex->st.complete) {
        ex->st.complete = true;
        rc = fs_bulk_state_save(&ex->st, ex->dir, err);
        if (rc != FHIRSYNC_OK)
            goto out;
    }
    rmdir(ex->partial_dir);
    if (ex->delete_job && !ex->st.job_deleted) {
        fhirsync_error e = {0};
        if (delete_job(ex, &e) != FHIRSYNC_OK) {
            char msg[sizeof e.message + 64];
            snprintf(msg, sizeof msg, "could not delete the job on the server: %s", e.message);
            fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_WARNING, NULL, msg, 0, FHIRSYNC_OK);
        }
    }
    rc = ex->partial_result ? FHIRSYNC_E_PARTIAL : FHIRSYNC_OK;
    if (rc == FHIRSYNC_E_PARTIAL)
        partial_message(ex, err);
    fs_bulk_emit(ex, FHIRSYNC_EXPORT_EV_DONE, NULL, NULL, 0, rc);
out:
    if (rc != FHIRSYNC_OK && rc != FHIRSYNC_E_PARTIAL) {
        if (!err->message[0])
            fs_err(err, rc, "%s", fhirsync_strerror(rc));
        err->code = rc;
        fs_bulk_log_record(ex, json_pack("{s:s, s:s, s:s}", "event", "failed", "code",
                                         fhirsync_strerror(rc), "message", err->message));
    }
    return rc;
}

/* ---- results -------------------------------------------------------------------------------- */

const char *fhirsync_export_dir(const fhirsync_export *ex)
{
    return ex ? ex->dir : NULL;
}

const char *fhirsync_export_status_url(const fhirsync_export *ex)
{
    return ex ? ex->st.status_url : NULL;
}

const char *fhirsync_export_kickoff_time(const fhirsync_export *ex)
{
    return ex ? ex->st.kickoff_time : NULL;
}

const char *fhirsync_export_transaction_time(const fhirsync_export *ex)
{
    return ex ? ex->st.transaction_time : NULL;
}

bool fhirsync_export_job_deleted(const fhirsync_export *ex)
{
    return ex && ex->st.job_deleted;
}

bool fhirsync_export_requires_token(const fhirsync_export *ex)
{
    return ex && ex->man.requires_token;
}

size_t fhirsync_export_file_count(const fhirsync_export *ex)
{
    return ex ? ex->nfiles : 0;
}

const fhirsync_export_file *fhirsync_export_file_at(const fhirsync_export *ex, size_t i)
{
    return ex && i < ex->nfiles ? &ex->files[i].pub : NULL;
}

fhirsync_code fhirsync_export_stats_init(fhirsync_export_stats *stats, unsigned int version)
{
    return fs_versioned_init(stats, sizeof *stats, version, FHIRSYNC_EXPORT_STATS_VERSION,
                             "fhirsync_export_stats");
}

fhirsync_code fhirsync_export_get_stats(const fhirsync_export *ex, fhirsync_export_stats *out)
{
    if (!out || fs_check_version(out->version, FHIRSYNC_EXPORT_STATS_VERSION,
                                 "fhirsync_export_stats", NULL) != FHIRSYNC_OK)
        return FHIRSYNC_E_ARG;
    fs_bulk_collect_stats(ex, out);
    return FHIRSYNC_OK;
}
