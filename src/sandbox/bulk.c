/* sandbox/bulk.c: Bulk Data Access v2.0.0 $export in the sandbox: kick-off (system, Patient and
 * Group level; GET with query parameters or POST with a Parameters body), jobs running in a
 * background thread each, status polls (202 with X-Progress and Retry-After, then the manifest),
 * DELETE to cancel or free, and file downloads with Range support.
 *
 * A job writes NDJSON files into its own folder under the work dir (a new file every
 * --resources-per-file lines), generating one resource at a time, and downloads stream those files
 * from disk: memory never grows with the size of an export. A job includes only what existed at
 * its transactionTime: a resource changed or deleted by a mutation that lands while the job runs
 * is left out (the next _since export picks it up). With _since, resources deleted after it are
 * listed in "deleted" files as transaction Bundles of DELETE entries.
 *
 * File names are never joined from the request: a download names a job and a file, and both
 * must be found in the job's own list. Jobs belong to the client whose token started them.
 *
 * Quirk modes (quirks.c) that shape an export's content are taken for the job's client at
 * kick-off; those of status polls and downloads are looked up at each request. An armed mutation
 * (POST /admin/mutate with "when": "export-running") is applied by the next job's thread right
 * after its snapshot time is taken and before it writes anything, so a test can make changes
 * land during an export deterministically. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sandbox.h"

#define MAX_JOBS_KEPT 1024
#define DELETED_PER_BUNDLE 100
#define MAX_ARMED 64
#define MAX_FIRED 64

typedef enum file_kind { FILE_OUTPUT = 0, FILE_DELETED = 1, FILE_ERROR = 2 } file_kind;

typedef struct bulk_file {
    char name[96];
    char type[64];
    file_kind kind;
    uint64_t count;
} bulk_file;

typedef enum job_state { JOB_RUNNING = 0, JOB_DONE = 1, JOB_FAILED = 2 } job_state;

typedef struct type_filter {
    sb_query *queries; /* OR-ed; none: every resource of the type */
    size_t count;
} type_filter;

typedef struct bulk_job {
    sb_server *sb;
    char id[40];
    char client_id[128];
    char *request_url;
    char dir[4096];
    int64_t transaction_time;
    bool has_since;
    int64_t since;
    bool *types;          /* per data type: exported */
    type_filter *filters; /* per data type */
    uint32_t *buckets;    /* patient restriction (sorted), or NULL */
    size_t nbuckets;
    bool restricted;
    json_t *warnings;      /* texts of OperationOutcomes for the error file */
    unsigned quirks;       /* bit (1 << sb_quirk_kind) of the kick-off-time quirks that are on */
    int64_t count_extra;   /* count-mismatch */
    int64_t finished_time; /* when the files were complete (late-transaction-time) */

    pthread_t thread;
    bool thread_started;
    atomic_bool cancel;
    _Atomic uint64_t done_units, total_units;

    pthread_mutex_t lock; /* guards the fields below */
    job_state state;
    char error[256];
    bulk_file *files;
    size_t nfiles;
    uint64_t stalled; /* status polls answered with Retry-After: 0 (retry-after-zero) */
    int refs;         /* the jobs list holds one; handlers one each while they work */
} bulk_job;

typedef struct armed_mutation {
    unsigned id;
    double update, del;
    char client_id[128]; /* "" = any client */
} armed_mutation;

typedef struct fired_mutation {
    unsigned id;
    char job[40];
    unsigned epoch;
    int64_t time;
} fired_mutation;

struct sb_bulk {
    sb_server *sb;
    char work_dir[2048];
    bool temporary;       /* we made the work dir: remove it at exit */
    pthread_mutex_t lock; /* guards the jobs and the armed and fired mutations */
    bulk_job *jobs[MAX_JOBS_KEPT];
    size_t njobs;
    armed_mutation armed[MAX_ARMED];
    size_t narmed;
    unsigned next_armed_id;
    fired_mutation fired[MAX_FIRED];
    size_t nfired; /* total ever fired; the last MAX_FIRED are kept (a ring) */
};

static bool job_quirk(const bulk_job *job, sb_quirk_kind kind)
{
    return (job->quirks >> kind) & 1u;
}

/* ---- jobs ----------------------------------------------------------------------------------- */

static void job_remove_files(bulk_job *job)
{
    pthread_mutex_lock(&job->lock);
    for (size_t i = 0; i < job->nfiles; i++) {
        char path[4300];
        snprintf(path, sizeof path, "%s/%s", job->dir, job->files[i].name);
        unlink(path);
        snprintf(path, sizeof path, "%s/%s.gz", job->dir, job->files[i].name); /* --gzip */
        unlink(path);
    }
    pthread_mutex_unlock(&job->lock);
    rmdir(job->dir);
}

static void job_free(bulk_job *job)
{
    if (!job)
        return;
    size_t ntypes = job->sb ? sb_data_type_count(job->sb->data) : 0;
    if (job->filters) {
        for (size_t t = 0; t < ntypes; t++) {
            for (size_t i = 0; i < job->filters[t].count; i++)
                sb_query_free(&job->filters[t].queries[i]);
            fs_free(job->filters[t].queries);
        }
    }
    fs_free(job->filters);
    fs_free(job->types);
    fs_free(job->buckets);
    fs_free(job->request_url);
    json_decref(job->warnings);
    fs_free(job->files);
    pthread_mutex_destroy(&job->lock);
    fs_free(job);
}

static void job_release(bulk_job *job)
{
    pthread_mutex_lock(&job->lock);
    int refs = --job->refs;
    pthread_mutex_unlock(&job->lock);
    if (refs == 0)
        job_free(job);
}

/* Find a job by id and take a reference; NULL when unknown. */
static bulk_job *job_get(sb_bulk *b, const char *id)
{
    bulk_job *found = NULL;
    pthread_mutex_lock(&b->lock);
    for (size_t i = 0; i < b->njobs && !found; i++) {
        if (!strcmp(b->jobs[i]->id, id)) {
            found = b->jobs[i];
            pthread_mutex_lock(&found->lock);
            found->refs++;
            pthread_mutex_unlock(&found->lock);
        }
    }
    pthread_mutex_unlock(&b->lock);
    return found;
}

/* Take a job out of the list (the caller then owns the list's reference). */
static bool job_unlist(sb_bulk *b, bulk_job *job)
{
    bool removed = false;
    pthread_mutex_lock(&b->lock);
    for (size_t i = 0; i < b->njobs && !removed; i++) {
        if (b->jobs[i] == job) {
            b->jobs[i] = b->jobs[--b->njobs];
            removed = true;
        }
    }
    pthread_mutex_unlock(&b->lock);
    return removed;
}

/* Stop a job's thread and delete its files; the job must be out of the list. */
static void job_stop(bulk_job *job)
{
    atomic_store(&job->cancel, true);
    if (job->thread_started)
        pthread_join(job->thread, NULL);
    job->thread_started = false;
    job_remove_files(job);
}

/* ---- the writer ----------------------------------------------------------------------------- */

typedef struct writer {
    bulk_job *job;
    file_kind kind;
    char type[64];
    char prefix[80]; /* file name prefix: "Patient", "deleted", "error" */
    unsigned next_index;
    FILE *f;
    size_t file_index; /* into job->files */
    uint64_t lines;    /* in the current file */
} writer;

static void writer_init(writer *w, bulk_job *job, file_kind kind, const char *type,
                        const char *prefix)
{
    memset(w, 0, sizeof *w);
    w->job = job;
    w->kind = kind;
    snprintf(w->type, sizeof w->type, "%s", type);
    snprintf(w->prefix, sizeof w->prefix, "%s", prefix);
    w->next_index = 1;
}

static bool writer_close(writer *w)
{
    if (!w->f)
        return true;
    bool ok = fclose(w->f) == 0;
    w->f = NULL;
    return ok;
}

static bool writer_open(writer *w)
{
    bulk_job *job = w->job;
    bulk_file file;
    memset(&file, 0, sizeof file);
    snprintf(file.name, sizeof file.name, "%s.%u.ndjson", w->prefix, w->next_index++);
    snprintf(file.type, sizeof file.type, "%s", w->type);
    file.kind = w->kind;
    pthread_mutex_lock(&job->lock);
    bulk_file *grown = fs_realloc(job->files, (job->nfiles + 1) * sizeof *grown);
    if (grown) {
        job->files = grown;
        job->files[job->nfiles] = file;
        w->file_index = job->nfiles++;
    }
    pthread_mutex_unlock(&job->lock);
    if (!grown)
        return false;
    char path[4300];
    snprintf(path, sizeof path, "%s/%s", job->dir, file.name);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return false;
    if (!(w->f = fdopen(fd, "w"))) {
        close(fd);
        return false;
    }
    setvbuf(w->f, NULL, _IOFBF, 256 * 1024);
    w->lines = 0;
    return true;
}

/* Write one NDJSON line, rotating files at --resources-per-file. */
static bool writer_line(writer *w, const char *line, size_t len)
{
    if (w->f && w->lines >= w->job->sb->cfg.resources_per_file && !writer_close(w))
        return false;
    if (!w->f && !writer_open(w))
        return false;
    if (fwrite(line, 1, len, w->f) != len || fputc('\n', w->f) == EOF)
        return false;
    w->lines++;
    pthread_mutex_lock(&w->job->lock);
    w->job->files[w->file_index].count++;
    pthread_mutex_unlock(&w->job->lock);
    return true;
}

/* ---- the job thread ------------------------------------------------------------------------- */

typedef struct deleted_batch {
    fs_buf entries;
    size_t count;
} deleted_batch;

static bool flush_deleted(writer *w, deleted_batch *d)
{
    if (d->count == 0)
        return true;
    fs_buf line;
    fs_buf_init(&line);
    bool ok = fs_buf_printf(&line,
                            "{\"resourceType\":\"Bundle\",\"type\":\"transaction\","
                            "\"entry\":[%s]}",
                            d->entries.data) &&
              writer_line(w, line.data, line.len);
    fs_buf_free(&line);
    fs_buf_reset(&d->entries);
    d->count = 0;
    return ok;
}

static bool add_deleted(writer *w, deleted_batch *d, const char *type, const char *id)
{
    if (!fs_buf_printf(&d->entries, "%s{\"request\":{\"method\":\"DELETE\",\"url\":\"%s/%s\"}}",
                       d->count ? "," : "", type, id))
        return false;
    d->count++;
    return d->count < DELETED_PER_BUNDLE || flush_deleted(w, d);
}

static bool filters_match(const type_filter *f, bool is_patient_type, const sb_resource_meta *meta,
                          const char *json, size_t len)
{
    if (f->count == 0)
        return true;
    json_t *res = NULL;
    bool any = false;
    for (size_t i = 0; i < f->count && !any; i++) {
        const sb_query *q = &f->queries[i];
        if (!sb_query_match_meta(q, is_patient_type, meta))
            continue;
        if (!sb_query_needs_content(q)) {
            any = true;
            continue;
        }
        if (!res && !(res = json_loadb(json, len, 0, NULL)))
            break;
        any = sb_query_match_content(q, res);
    }
    json_decref(res);
    return any;
}

static bool export_type(bulk_job *job, size_t type, writer *deleted, deleted_batch *batch)
{
    sb_server *sb = job->sb;
    const char *name = sb_data_type_name(sb->data, type);
    bool is_patient_type = (int)type == sb_data_patient_type(sb->data);
    writer out;
    writer_init(&out, job, FILE_OUTPUT, name, name);
    fs_buf json;
    fs_buf_init(&json);
    /* a patient restriction applies to compartment types; others (extra-types) are whole */
    bool restricted = job->restricted && sb_data_type_in_compartment(sb->data, type);
    bool list_deleted = job->has_since && !job_quirk(job, SB_QUIRK_NO_DELETED);
    sb_walk walk;
    sb_walk_init(&walk, sb->data, type, restricted ? job->buckets : NULL, job->nbuckets, 0, 0);
    bool ok = true;
    uint32_t bucket, slot, last_bucket = UINT32_MAX;
    uint64_t n = 0;
    while (ok && sb_walk_next(&walk, &bucket, &slot)) {
        if ((++n & 255) == 0 && atomic_load(&job->cancel)) {
            ok = false;
            break;
        }
        if (bucket != last_bucket) {
            if (last_bucket != UINT32_MAX)
                atomic_fetch_add(&job->done_units, 1);
            last_bucket = bucket;
        }
        sb_resource_meta meta;
        fs_buf_reset(&json);
        sb_data_read_lock(sb->data);
        bool got = sb_data_meta(sb->data, type, bucket, slot, &meta);
        bool wanted = got && !meta.deleted && meta.last_updated <= job->transaction_time &&
                      (!job->has_since || meta.last_updated > job->since);
        if (wanted)
            got = sb_data_get(sb->data, type, bucket, slot, &json, &meta);
        sb_data_read_unlock(sb->data);
        if (!got) {
            ok = false;
            break;
        }
        if (meta.deleted) {
            if (list_deleted && meta.deleted_at > job->since &&
                meta.deleted_at <= job->transaction_time)
                ok = add_deleted(deleted, batch, name, meta.id);
            continue;
        }
        if (!wanted || meta.last_updated > job->transaction_time)
            continue;
        if (!filters_match(&job->filters[type], is_patient_type, &meta, json.data, json.len))
            continue;
        ok = writer_line(&out, json.data, json.len);
    }
    if (ok)
        ok = flush_deleted(deleted, batch);
    if (!writer_close(&out))
        ok = false;
    fs_buf_free(&json);
    return ok;
}

static uint64_t units_of(bulk_job *job, size_t type)
{
    if (job->restricted && sb_data_type_in_compartment(job->sb->data, type))
        return job->nbuckets;
    return sb_data_buckets(job->sb->data, type);
}

/* Apply the first armed mutation that fits the job's client (after the job's snapshot time:
 * sb_mutation_time() orders it after every transaction time handed out). */
static void fire_armed(bulk_job *job)
{
    sb_bulk *b = job->sb->bulk;
    armed_mutation m;
    bool found = false;
    pthread_mutex_lock(&b->lock);
    for (size_t i = 0; i < b->narmed && !found; i++) {
        if (b->armed[i].client_id[0] && strcmp(b->armed[i].client_id, job->client_id) != 0)
            continue;
        m = b->armed[i];
        memmove(&b->armed[i], &b->armed[i + 1], (b->narmed - i - 1) * sizeof b->armed[0]);
        b->narmed--;
        found = true;
    }
    pthread_mutex_unlock(&b->lock);
    if (!found)
        return;
    fhirsync_error err;
    fs_err_clear(&err);
    int64_t when = sb_mutation_time(job->sb);
    unsigned epoch = sb_data_mutate(job->sb->data, m.update, m.del, when, &err);
    pthread_mutex_lock(&b->lock);
    fired_mutation *f = &b->fired[b->nfired++ % MAX_FIRED];
    f->id = m.id;
    snprintf(f->job, sizeof f->job, "%s", job->id);
    f->epoch = epoch; /* 0: refused (--data, or too many epochs) */
    f->time = when;
    pthread_mutex_unlock(&b->lock);
}

unsigned sb_bulk_arm_mutation(sb_bulk *b, double update, double del, const char *client_id)
{
    unsigned id = 0;
    pthread_mutex_lock(&b->lock);
    if (b->narmed < MAX_ARMED) {
        armed_mutation *m = &b->armed[b->narmed++];
        id = m->id = ++b->next_armed_id;
        m->update = update;
        m->del = del;
        snprintf(m->client_id, sizeof m->client_id, "%s", client_id ? client_id : "");
    }
    pthread_mutex_unlock(&b->lock);
    return id;
}

json_t *sb_bulk_mutations(sb_bulk *b)
{
    json_t *armed = json_array(), *fired = json_array();
    pthread_mutex_lock(&b->lock);
    for (size_t i = 0; armed && i < b->narmed; i++) {
        const armed_mutation *m = &b->armed[i];
        json_t *item =
            json_pack("{s:i, s:f, s:f}", "id", (int)m->id, "update", m->update, "delete", m->del);
        if (item && m->client_id[0])
            json_object_set_new(item, "client_id", json_string(m->client_id));
        json_array_append_new(armed, item);
    }
    size_t first = b->nfired > MAX_FIRED ? b->nfired - MAX_FIRED : 0;
    for (size_t i = first; fired && i < b->nfired; i++) {
        const fired_mutation *f = &b->fired[i % MAX_FIRED];
        char when[32];
        fs_format_instant(f->time, when, sizeof when);
        json_array_append_new(fired, json_pack("{s:i, s:s, s:i, s:s}", "id", (int)f->id, "job",
                                               f->job, "epoch", (int)f->epoch, "time", when));
    }
    pthread_mutex_unlock(&b->lock);
    return json_pack("{s:o*, s:o*}", "armed", armed, "fired", fired);
}

static void *job_main(void *arg)
{
    bulk_job *job = arg;
    sb_server *sb = job->sb;
    size_t ntypes = sb_data_type_count(sb->data);
    fire_armed(job);
    uint64_t total = 0;
    for (size_t t = 0; t < ntypes; t++)
        if (job->types[t])
            total += units_of(job, t);
    atomic_store(&job->total_units, total ? total : 1);
    writer deleted;
    writer_init(&deleted, job, FILE_DELETED, "Bundle", "deleted");
    deleted_batch batch;
    fs_buf_init(&batch.entries);
    batch.count = 0;
    bool ok = true;
    uint64_t done = 0;
    for (size_t t = 0; ok && t < ntypes; t++) {
        if (!job->types[t])
            continue;
        ok = export_type(job, t, &deleted, &batch);
        done += units_of(job, t);
        atomic_store(&job->done_units, done);
    }
    if (!writer_close(&deleted))
        ok = false;
    fs_buf_free(&batch.entries);
    if (ok && json_array_size(job->warnings) > 0) {
        writer errors;
        writer_init(&errors, job, FILE_ERROR, "OperationOutcome", "error");
        size_t i;
        for (i = 0; i < json_array_size(job->warnings); i++) {
            json_t *text = json_array_get(job->warnings, i);
            json_t *outcome = sb_outcome_new("warning", "not-supported", json_string_value(text));
            char *line = outcome ? fs_json_dump(outcome) : NULL;
            ok = ok && line && writer_line(&errors, line, strlen(line));
            fs_free(line);
            json_decref(outcome);
        }
        if (!writer_close(&errors))
            ok = false;
    }
    /* --export-delay-ms: stay "in progress" a while, so that tests see 202s deterministically */
    for (unsigned waited = 0; ok && waited < sb->cfg.export_delay_ms; waited += 10) {
        if (atomic_load(&job->cancel)) {
            ok = false;
            break;
        }
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    /* the time the files were complete: after every mutation so far, like a server that takes
     * its transactionTime at the end (late-transaction-time) */
    int64_t finished = job_quirk(job, SB_QUIRK_LATE_TRANSACTION_TIME) ? sb_transaction_time(sb) : 0;
    pthread_mutex_lock(&job->lock);
    job->finished_time = finished;
    if (ok) {
        job->state = JOB_DONE;
    } else {
        job->state = JOB_FAILED;
        snprintf(job->error, sizeof job->error, "%s",
                 atomic_load(&job->cancel) ? "the export was cancelled"
                                           : "the export failed writing its files");
    }
    pthread_mutex_unlock(&job->lock);
    return NULL;
}

/* ---- module life ---------------------------------------------------------------------------- */

sb_bulk *sb_bulk_new(sb_server *sb, fhirsync_error *err)
{
    sb_bulk *b = fs_calloc(1, sizeof *b);
    if (!b) {
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        return NULL;
    }
    b->sb = sb;
    if (sb->cfg.work_dir) {
        snprintf(b->work_dir, sizeof b->work_dir, "%s", sb->cfg.work_dir);
        if (mkdir(b->work_dir, 0700) != 0 && errno != EEXIST) {
            fs_err(err, FHIRSYNC_E_IO, "cannot create the work dir %s", b->work_dir);
            fs_free(b);
            return NULL;
        }
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(b->work_dir, sizeof b->work_dir, "%s/fhirsync-sandbox-XXXXXX",
                 tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(b->work_dir)) {
            fs_err(err, FHIRSYNC_E_IO, "cannot create a temporary work dir");
            fs_free(b);
            return NULL;
        }
        b->temporary = true;
    }
    pthread_mutex_init(&b->lock, NULL);
    return b;
}

void sb_bulk_free(sb_bulk *b)
{
    if (!b)
        return;
    for (;;) {
        pthread_mutex_lock(&b->lock);
        bulk_job *job = b->njobs ? b->jobs[b->njobs - 1] : NULL;
        if (job)
            b->njobs--;
        pthread_mutex_unlock(&b->lock);
        if (!job)
            break;
        job_stop(job);
        job_release(job);
    }
    if (b->temporary)
        rmdir(b->work_dir);
    pthread_mutex_destroy(&b->lock);
    fs_free(b);
}

/* ---- kick-off ------------------------------------------------------------------------------- */

typedef enum export_level { LEVEL_SYSTEM, LEVEL_PATIENT, LEVEL_GROUP } export_level;

static bool warn(bulk_job *job, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool warn(bulk_job *job, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    return json_array_append_new(job->warnings, json_string(text)) == 0;
}

/* Split a _typeFilter value at the commas that start a new "Type?" query. */
static bool next_type_filter(const char **p, char *out, size_t size)
{
    const char *s = *p;
    if (!*s)
        return false;
    const char *end = s;
    for (;;) {
        end = strchr(end, ',');
        if (!end) {
            end = s + strlen(s);
            break;
        }
        const char *t = end + 1;
        if (*t >= 'A' && *t <= 'Z') {
            const char *q = t;
            while ((*q >= 'A' && *q <= 'Z') || (*q >= 'a' && *q <= 'z'))
                q++;
            if (*q == '?')
                break;
        }
        end++;
    }
    size_t n = (size_t)(end - s);
    if (n >= size)
        n = size - 1;
    memcpy(out, s, n);
    out[n] = '\0';
    *p = *end ? end + 1 : end;
    return true;
}

static bool add_type_filter(sb_server *sb, bulk_job *job, const char *text, bool strict,
                            sb_reply *reply)
{
    const char *q = strchr(text, '?');
    char type_name[64];
    size_t tlen = q ? (size_t)(q - text) : strlen(text);
    if (!q || tlen == 0 || tlen >= sizeof type_name) {
        sb_reply_outcome(reply, 400, "invalid", "_typeFilter %.80s is not Type?query", text);
        return false;
    }
    memcpy(type_name, text, tlen);
    type_name[tlen] = '\0';
    int type = sb_data_type_index(sb->data, type_name);
    if (type < 0) {
        if (strict) {
            sb_reply_outcome(reply, 400, "not-supported",
                             "_typeFilter names the unknown type "
                             "%s",
                             type_name);
            return false;
        }
        return warn(job, "_typeFilter for the unknown type %s was ignored", type_name);
    }
    sb_params params;
    sb_params_init(&params);
    fhirsync_error err;
    sb_query query;
    sb_query_init(&query);
    bool ok = false;
    if (!sb_params_parse_form(&params, q + 1, strlen(q + 1), &err)) {
        sb_reply_outcome(reply, 400, "invalid", "_typeFilter %.80s: %s", text, err.message);
        goto out;
    }
    bool compartment = sb_data_type_in_compartment(sb->data, (size_t)type);
    for (size_t i = 0; i < params.count; i++) {
        sb_param_use use = sb_query_add(&query, params.items[i].name, params.items[i].value,
                                        compartment, false, &err);
        if (use == SB_PARAM_BAD) {
            sb_reply_outcome(reply, 400, "invalid", "_typeFilter %.80s: %s", text, err.message);
            goto out;
        }
        if (use == SB_PARAM_UNKNOWN) {
            if (strict) {
                sb_reply_outcome(reply, 400, "not-supported",
                                 "_typeFilter %.80s: search "
                                 "parameter %s is not supported",
                                 text, params.items[i].name);
                goto out;
            }
            if (!warn(job, "_typeFilter: the unsupported search parameter %s of %s was ignored",
                      params.items[i].name, type_name))
                goto oom;
        }
    }
    type_filter *f = &job->filters[type];
    sb_query *grown = fs_realloc(f->queries, (f->count + 1) * sizeof *grown);
    if (!grown)
        goto oom;
    f->queries = grown;
    f->queries[f->count++] = query;
    sb_query_init(&query);
    ok = true;
    goto out;
oom:
    sb_reply_outcome(reply, 500, "exception", "out of memory");
out:
    sb_query_free(&query);
    sb_params_free(&params);
    return ok;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Keep only the buckets also in `other` (both sorted). */
static void intersect(uint32_t *list, size_t *n, const uint32_t *other, size_t m)
{
    size_t i = 0, j = 0, k = 0;
    while (i < *n && j < m) {
        if (list[i] < other[j])
            i++;
        else if (list[i] > other[j])
            j++;
        else {
            list[k++] = list[i++];
            j++;
        }
    }
    *n = k;
}

static bool parse_kickoff(sb_server *sb, sb_request *req, bulk_job *job, export_level level,
                          const char *group_id, const sb_params *params, const sb_grant *grant,
                          sb_reply *reply)
{
    bool strict = sb_fhir_strict(req);
    size_t ntypes = sb_data_type_count(sb->data);
    bool type_given = false, post = !strcmp(req->method, "POST");
    uint32_t *patients = NULL;
    size_t npatients = 0;
    bool has_patients = false, ok = false;

    for (size_t i = 0; i < params->count; i++) {
        const char *name = params->items[i].name, *value = params->items[i].value;
        if (!strcmp(name, "_outputFormat")) {
            if (strcmp(value, "application/fhir+ndjson") && strcmp(value, "application/ndjson") &&
                strcmp(value, "ndjson")) {
                sb_reply_outcome(reply, 400, "not-supported",
                                 "_outputFormat %.80s is not "
                                 "supported (application/fhir+ndjson is)",
                                 value);
                goto out;
            }
        } else if (!strcmp(name, "_since")) {
            if (job->has_since || !fs_parse_instant(value, &job->since)) {
                sb_reply_outcome(reply, 400, "invalid",
                                 "_since must be one FHIR instant, not "
                                 "%.80s",
                                 value);
                goto out;
            }
            job->has_since = true;
        } else if (!strcmp(name, "_type")) {
            const char *p = value;
            while (*p) {
                size_t n = strcspn(p, ",");
                char type_name[64];
                if (n > 0 && n < sizeof type_name) {
                    memcpy(type_name, p, n);
                    type_name[n] = '\0';
                    int t = sb_data_type_index(sb->data, type_name);
                    bool fits = t >= 0 && (level == LEVEL_SYSTEM ||
                                           sb_data_type_in_compartment(sb->data, (size_t)t));
                    if (!fits && strict) {
                        sb_reply_outcome(reply, 400, "not-supported",
                                         "_type %s is not "
                                         "exported %s",
                                         type_name, t < 0 ? "by this server" : "at this level");
                        goto out;
                    }
                    if (!fits && !warn(job, "_type %s is not exported %s; ignored", type_name,
                                       t < 0 ? "by this server" : "at this level"))
                        goto oom;
                    if (fits) {
                        if (!sb_scopes_grant(grant->scope, type_name, SB_PERM_R)) {
                            sb_reply_outcome(reply, 403, "forbidden",
                                             "the token's scopes (%s) "
                                             "do not allow reading %s",
                                             grant->scope, type_name);
                            goto out;
                        }
                        job->types[t] = true;
                    }
                }
                type_given = true;
                p += n;
                if (*p == ',')
                    p++;
            }
        } else if (!strcmp(name, "_typeFilter")) {
            const char *p = value;
            char one[2048];
            while (next_type_filter(&p, one, sizeof one))
                if (*one && !add_type_filter(sb, job, one, strict, reply))
                    goto out;
        } else if (!strcmp(name, "patient")) {
            if (!post || level == LEVEL_SYSTEM) {
                sb_reply_outcome(reply, 400, "invalid",
                                 "the patient parameter is only for POST "
                                 "Patient- and Group-level exports");
                goto out;
            }
            const char *id = fs_starts_with(value, "Patient/") ? value + 8 : value;
            uint32_t bucket;
            if (!sb_data_patient_bucket(sb->data, id, &bucket)) {
                sb_reply_outcome(reply, 400, "invalid", "patient %.80s is not known", value);
                goto out;
            }
            uint32_t *grown = fs_realloc(patients, (npatients + 1) * sizeof *grown);
            if (!grown)
                goto oom;
            patients = grown;
            patients[npatients++] = bucket;
            has_patients = true;
        } else {
            if (strict) {
                sb_reply_outcome(reply, 400, "not-supported",
                                 "the export parameter %.60s is "
                                 "not supported (Prefer: handling=strict)",
                                 name);
                goto out;
            }
            if (!warn(job, "the export parameter %s is not supported and was ignored", name))
                goto oom;
        }
    }
    if (!type_given) {
        bool any = false;
        for (size_t t = 0; t < ntypes; t++) {
            const char *type_name = sb_data_type_name(sb->data, t);
            bool fits = level == LEVEL_SYSTEM || sb_data_type_in_compartment(sb->data, t);
            job->types[t] = fits && sb_scopes_grant(grant->scope, type_name, SB_PERM_R);
            any = any || job->types[t];
        }
        if (!any) {
            sb_reply_outcome(reply, 403, "forbidden",
                             "the token's scopes (%s) allow reading "
                             "none of the exported types",
                             grant->scope);
            goto out;
        }
    }
    if (level == LEVEL_GROUP) {
        sb_data_read_lock(sb->data);
        bool found = sb_data_group_members(sb->data, group_id, &job->buckets, &job->nbuckets);
        sb_data_read_unlock(sb->data);
        if (!found) {
            sb_reply_outcome(reply, 404, "not-found", "Group/%.64s is not known", group_id);
            goto out;
        }
        job->restricted = true;
    }
    if (has_patients) {
        qsort(patients, npatients, sizeof *patients, cmp_u32);
        size_t u = 0;
        for (size_t i = 0; i < npatients; i++)
            if (u == 0 || patients[u - 1] != patients[i])
                patients[u++] = patients[i];
        npatients = u;
        if (job->restricted) {
            intersect(job->buckets, &job->nbuckets, patients, npatients);
        } else {
            job->buckets = patients;
            job->nbuckets = npatients;
            patients = NULL;
            job->restricted = true;
        }
    }
    ok = true;
    goto out;
oom:
    sb_reply_outcome(reply, 500, "exception", "out of memory");
out:
    fs_free(patients);
    return ok;
}

/* extra-types: what some servers do with _type at Group level: Practitioner and Organization
 * come back too. Added whenever _type was given, and at Patient and Group level always (where
 * they are outside the compartment); with no such types in the data, the first type not asked
 * for. */
static void add_extra_types(sb_server *sb, bulk_job *job, export_level level)
{
    size_t ntypes = sb_data_type_count(sb->data);
    size_t asked = 0;
    for (size_t t = 0; t < ntypes; t++)
        asked += job->types[t];
    if (level == LEVEL_SYSTEM && asked == ntypes)
        return;
    bool added = false;
    static const char *const extra[] = {"Practitioner", "Organization"};
    for (size_t i = 0; i < 2; i++) {
        int t = sb_data_type_index(sb->data, extra[i]);
        if (t >= 0 && !job->types[t]) {
            job->types[t] = true;
            added = true;
        }
    }
    for (size_t t = 0; !added && t < ntypes; t++) {
        if (!job->types[t]) {
            job->types[t] = true;
            added = true;
        }
    }
}

void sb_bulk_handle_kickoff(sb_server *sb, sb_request *req, sb_reply *reply)
{
    sb_bulk *b = sb->bulk;
    bulk_job *job = NULL;
    sb_params body_params;
    sb_params_init(&body_params);
    fhirsync_error err;
    fs_err_clear(&err);
    export_level level = LEVEL_SYSTEM;
    const char *group_id = NULL;
    if (req->nsegments == 3)
        level = LEVEL_PATIENT;
    else if (req->nsegments == 4) {
        level = LEVEL_GROUP;
        group_id = req->captures[0];
    }
    if (!sb_accept_lists(sb_req_header(req, "Accept"), "application/fhir+json")) {
        sb_reply_outcome(reply, 400, "invalid",
                         "a bulk kick-off needs Accept: "
                         "application/fhir+json");
        goto out;
    }
    if (!sb_prefer_has(sb_req_header(req, "Prefer"), "respond-async")) {
        sb_reply_outcome(reply, 400, "invalid", "a bulk kick-off needs Prefer: respond-async");
        goto out;
    }
    sb_grant grant;
    if (!sb_auth_require(sb, req, reply, NULL, 0, &grant))
        goto out;
    if (grant.patient[0] &&
        !sb_scopes_grant_in(grant.scope, SB_SCOPE_SYSTEM | SB_SCOPE_USER, "*", SB_PERM_R)) {
        sb_reply_outcome(reply, 403, "forbidden",
                         "a token bound to patient %s (patient/ scopes) cannot start a bulk "
                         "export: it needs user/ or system/ scopes",
                         grant.patient);
        goto out;
    }
    if (sb_quirk_on(sb->quirks, SB_QUIRK_EXPORT_NEEDS_WRITE_SCOPE, grant.client_id, NULL, NULL) &&
        !sb_scopes_grant(grant.scope, "*", SB_PERM_C | SB_PERM_U | SB_PERM_D)) {
        sb_reply_outcome(reply, 403, "forbidden",
                         "the export runs as the caller and needs a write scope on every type "
                         "(system/*.write or system/*.*); the token's scopes are %s",
                         grant.scope);
        goto out;
    }
    const sb_params *params = &req->query;
    bool ignore_body =
        sb_quirk_on(sb->quirks, SB_QUIRK_IGNORE_POST_BODY, grant.client_id, NULL, NULL);
    if (!strcmp(req->method, "POST") && !ignore_body) {
        const char *type = sb_req_header(req, "Content-Type");
        if (!sb_media_type_is(type, "application/fhir+json") &&
            !sb_media_type_is(type, "application/json")) {
            sb_reply_outcome(reply, 415, "not-supported",
                             "a POST kick-off takes a Parameters "
                             "resource as application/fhir+json");
            goto out;
        }
        bool ok = true;
        for (size_t i = 0; ok && i < req->query.count; i++)
            ok = sb_params_add(&body_params, req->query.items[i].name, req->query.items[i].value);
        if (!ok || !sb_params_parse_parameters(&body_params, req->body.data, req->body.len, &err)) {
            sb_reply_outcome(reply, 400, "invalid",
                             "the kick-off body is not a usable "
                             "Parameters resource: %s",
                             err.message);
            goto out;
        }
        params = &body_params;
    }
    size_t ntypes = sb_data_type_count(sb->data);
    if (!(job = fs_calloc(1, sizeof *job)) || !(job->types = fs_calloc(ntypes, sizeof(bool))) ||
        !(job->filters = fs_calloc(ntypes, sizeof *job->filters)) ||
        !(job->warnings = json_array())) {
        sb_reply_outcome(reply, 500, "exception", "out of memory");
        goto out;
    }
    pthread_mutex_init(&job->lock, NULL);
    job->sb = sb;
    job->refs = 1;
    static const sb_quirk_kind shaping[] = {
        SB_QUIRK_LATE_TRANSACTION_TIME, SB_QUIRK_NO_DELETED,
        SB_QUIRK_EXTRA_TYPES,           SB_QUIRK_COUNT_MISMATCH,
        SB_QUIRK_REQUEST_WITHOUT_QUERY,
    };
    for (size_t i = 0; i < sizeof shaping / sizeof shaping[0]; i++) {
        int64_t param = 0;
        if (sb_quirk_on(sb->quirks, shaping[i], grant.client_id, &param, NULL)) {
            job->quirks |= 1u << shaping[i];
            if (shaping[i] == SB_QUIRK_COUNT_MISMATCH)
                job->count_extra = param;
        }
    }
    if (!parse_kickoff(sb, req, job, level, group_id, params, &grant, reply))
        goto out;
    if (job_quirk(job, SB_QUIRK_EXTRA_TYPES))
        add_extra_types(sb, job, level);
    char *id = fs_random_id(18);
    if (!id || !(job->request_url = sb_req_url(sb, req))) {
        fs_free(id);
        sb_reply_outcome(reply, 500, "exception", "out of memory");
        goto out;
    }
    snprintf(job->id, sizeof job->id, "%s", id);
    fs_free(id);
    snprintf(job->client_id, sizeof job->client_id, "%s", grant.client_id);
    snprintf(job->dir, sizeof job->dir, "%s/%s", b->work_dir, job->id);

    pthread_mutex_lock(&b->lock);
    size_t running = 0;
    for (size_t i = 0; i < b->njobs; i++) {
        pthread_mutex_lock(&b->jobs[i]->lock);
        running += b->jobs[i]->state == JOB_RUNNING;
        pthread_mutex_unlock(&b->jobs[i]->lock);
    }
    bool full = running >= sb->cfg.max_jobs || b->njobs >= MAX_JOBS_KEPT;
    bool started = false;
    if (!full && mkdir(job->dir, 0700) == 0) {
        job->transaction_time = sb_transaction_time(sb);
        job->state = JOB_RUNNING;
        if (pthread_create(&job->thread, NULL, job_main, job) == 0) {
            job->thread_started = true;
            b->jobs[b->njobs++] = job;
            started = true;
        } else {
            rmdir(job->dir);
        }
    }
    pthread_mutex_unlock(&b->lock);
    if (full) {
        sb_reply_outcome(reply, 429, "throttled",
                         "%zu exports are running or kept; wait, or "
                         "DELETE finished ones",
                         running);
        sb_reply_retry_after(sb, reply, grant.client_id, 5, false);
        goto out;
    }
    if (!started) {
        sb_reply_outcome(reply, 500, "exception", "cannot start the export job");
        goto out;
    }
    sb_reply_outcome(reply, 202, "informational",
                     "export %s started; poll the "
                     "Content-Location",
                     job->id);
    sb_reply_header(reply, "Content-Location", "%s/bulkstatus/%s", sb->base_url, job->id);
    job = NULL;
out:
    job_free(job);
    sb_params_free(&body_params);
}

/* ---- status, delete ------------------------------------------------------------------------- */

/* The job named by captures[0] for the request's client, or NULL with the reply set. */
static bulk_job *owned_job(sb_server *sb, sb_request *req, sb_reply *reply)
{
    sb_grant grant;
    if (!sb_auth_require(sb, req, reply, NULL, 0, &grant))
        return NULL;
    bulk_job *job = job_get(sb->bulk, req->captures[0]);
    if (!job) {
        sb_reply_outcome(reply, 404, "not-found", "no export job %.64s", req->captures[0]);
        return NULL;
    }
    if (strcmp(job->client_id, grant.client_id) != 0) {
        sb_reply_outcome(reply, 403, "forbidden", "export job %s belongs to another client",
                         job->id);
        job_release(job);
        return NULL;
    }
    return job;
}

static json_t *file_list(sb_server *sb, bulk_job *job, file_kind kind)
{
    int64_t extra = kind == FILE_OUTPUT ? job->count_extra : 0;
    json_t *list = json_array();
    for (size_t i = 0; list && i < job->nfiles; i++) {
        const bulk_file *f = &job->files[i];
        if (f->kind != kind || f->count == 0)
            continue;
        char url[512];
        snprintf(url, sizeof url, "%s/bulkfiles/%s/%s", sb->base_url, job->id, f->name);
        json_array_append_new(list, json_pack("{s:s, s:s, s:I}", "type", f->type, "url", url,
                                              "count", (json_int_t)f->count + extra));
    }
    return list;
}

void sb_bulk_handle_status(sb_server *sb, sb_request *req, sb_reply *reply)
{
    bulk_job *job = owned_job(sb, req, reply);
    if (!job)
        return;
    int64_t zero_polls = 0;
    bool zero =
        sb_quirk_on(sb->quirks, SB_QUIRK_RETRY_AFTER_ZERO, job->client_id, &zero_polls, NULL);
    bool bare = sb_quirk_on(sb->quirks, SB_QUIRK_NO_PROGRESS_HEADERS, job->client_id, NULL, NULL);
    pthread_mutex_lock(&job->lock);
    job_state state = job->state;
    /* retry-after-zero: answer "running, come back at once" (for ever, or N polls) */
    bool stall =
        zero && state != JOB_FAILED && (zero_polls == 0 || job->stalled < (uint64_t)zero_polls);
    if (stall)
        job->stalled++;
    if (state == JOB_RUNNING || stall) {
        uint64_t done = atomic_load(&job->done_units), total = atomic_load(&job->total_units);
        unsigned pct = total ? (unsigned)(done * 100 / total) : 0;
        if (pct > 99)
            pct = 99;
        sb_reply_text(reply, 202, NULL, "");
        if (!bare) {
            sb_reply_header(reply, "X-Progress", "%u%% complete", pct);
            if (stall)
                sb_reply_header(reply, "Retry-After", "0");
            else
                sb_reply_retry_after(sb, reply, job->client_id, sb->cfg.retry_after, false);
        }
    } else if (state == JOB_FAILED) {
        sb_reply_outcome(reply, 500, "exception", "%s", job->error);
    } else {
        char when[32];
        bool late = job_quirk(job, SB_QUIRK_LATE_TRANSACTION_TIME);
        fs_format_instant(late ? job->finished_time : job->transaction_time, when, sizeof when);
        char *request = fs_strdup(job->request_url);
        if (request && job_quirk(job, SB_QUIRK_REQUEST_WITHOUT_QUERY))
            request[strcspn(request, "?")] = '\0';
        json_t *manifest =
            json_pack("{s:s, s:s, s:b, s:o*, s:o*, s:o*}", "transactionTime", when, "request",
                      request ? request : job->request_url, "requiresAccessToken", 1, "output",
                      file_list(sb, job, FILE_OUTPUT), "deleted", file_list(sb, job, FILE_DELETED),
                      "error", file_list(sb, job, FILE_ERROR));
        if (manifest)
            sb_reply_json(reply, 200, SB_JSON, manifest);
        else
            sb_reply_outcome(reply, 500, "exception", "out of memory");
        json_decref(manifest);
        fs_free(request);
    }
    pthread_mutex_unlock(&job->lock);
    job_release(job);
}

void sb_bulk_handle_delete(sb_server *sb, sb_request *req, sb_reply *reply)
{
    bulk_job *job = owned_job(sb, req, reply);
    if (!job)
        return;
    if (job_unlist(sb->bulk, job)) {
        job_stop(job);
        job_release(job); /* the list's reference */
    }
    job_release(job);
    sb_reply_outcome(reply, 202, "informational", "export %s deleted", req->captures[0]);
}

/* ---- files ---------------------------------------------------------------------------------- */

/* Where the last line of a file of `size` bytes starts and how long it is (without its
 * newline); false when the file has no complete line. */
static bool last_line(int fd, uint64_t size, uint64_t *start, uint64_t *len)
{
    if (size < 2)
        return false;
    uint64_t end = size - 1; /* the final '\n' */
    uint64_t pos = end;
    char chunk[4096];
    while (pos > 0) {
        uint64_t from = pos > sizeof chunk ? pos - sizeof chunk : 0;
        ssize_t n = pread(fd, chunk, (size_t)(pos - from), (off_t)from);
        if (n <= 0)
            return false;
        for (ssize_t i = n - 1; i >= 0; i--) {
            if (chunk[i] == '\n') {
                *start = from + (uint64_t)i + 1;
                *len = end - *start;
                return true;
            }
        }
        pos = from;
    }
    *start = 0;
    *len = end;
    return true;
}

static void serve_file(sb_server *sb, sb_request *req, sb_reply *reply, bool storage)
{
    const char *job_id = req->captures[0], *name = req->captures[1];
    bulk_job *job = NULL;
    if (storage) {
        job = job_get(sb->bulk, job_id);
    } else {
        sb_grant grant;
        if (!sb_auth_require(sb, req, reply, NULL, 0, &grant))
            return;
        job = job_get(sb->bulk, job_id);
        if (job && strcmp(job->client_id, grant.client_id) != 0) {
            sb_reply_outcome(reply, 403, "forbidden",
                             "the file belongs to another client's "
                             "export");
            job_release(job);
            return;
        }
    }
    if (!job) {
        sb_reply_outcome(reply, 404, "not-found", "no export job %.64s", job_id);
        return;
    }
    const char *accept = sb_req_header(req, "Accept");
    if (accept && *accept && !strstr(accept, "ndjson") && !strstr(accept, "*/*") &&
        !strstr(accept, "application/*")) {
        sb_reply_outcome(reply, 406, "not-supported", "files are application/fhir+ndjson");
        job_release(job);
        return;
    }
    pthread_mutex_lock(&job->lock);
    bool done = job->state == JOB_DONE, listed = false;
    for (size_t i = 0; i < job->nfiles && !listed; i++)
        listed = !strcmp(job->files[i].name, name) && job->files[i].count > 0;
    pthread_mutex_unlock(&job->lock);
    if (!done || !listed) {
        sb_reply_outcome(reply, 404, "not-found", "no file %.80s in export %s", name, job->id);
        job_release(job);
        return;
    }
    if (!storage && req->fault.kind == SB_FAULT_REDIRECT) {
        sb_reply_text(reply, 307, NULL, "");
        sb_reply_header(reply, "Location", "%s/bulkfiles/%s/%s", sb->storage_base_url, job->id,
                        name);
        job_release(job);
        return;
    }
    char path[4300];
    snprintf(path, sizeof path, "%s/%s", job->dir, name);
    char owner[128];
    snprintf(owner, sizeof owner, "%s", job->client_id);
    job_release(job);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0)
            close(fd);
        sb_reply_outcome(reply, 404, "not-found", "the file is gone");
        return;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (!storage && req->fault.kind == SB_FAULT_TRUNCATE) {
        uint64_t start, len;
        if (last_line(fd, size, &start, &len))
            size = start + len / 2;
    }
    uint64_t offset = 0, length = size;
    bool ignore_range = sb_quirk_on(sb->quirks, SB_QUIRK_IGNORE_RANGE, owner, NULL, NULL);
    sb_range_result range =
        ignore_range ? SB_RANGE_NONE
                     : sb_range_parse(sb_req_header(req, "Range"), size, &offset, &length);
    if (range == SB_RANGE_UNSATISFIABLE) {
        close(fd);
        sb_reply_outcome(reply, 416, "invalid", "the range is outside the %llu-byte file",
                         (unsigned long long)size);
        sb_reply_header(reply, "Content-Range", "bytes */%llu", (unsigned long long)size);
        return;
    }
    if (range != SB_RANGE_OK) {
        offset = 0;
        length = size;
    }
    reply->status = range == SB_RANGE_OK ? 206 : 200;
    reply->content_type = SB_NDJSON;
    reply->fd = fd;
    reply->offset = offset;
    reply->length = length;
    int64_t param = 0;
    if (sb_quirk_on(sb->quirks, SB_QUIRK_TRUNCATE_SAME_PLACE, owner, &param, NULL) && size > 0) {
        /* the same absolute byte of the file every time, whatever the range asked */
        uint64_t at = param >= 0 ? (uint64_t)param : size / 2;
        if (at >= size)
            at = size - 1;
        if (at < offset + length) {
            reply->cut = true;
            reply->cut_after = at > offset ? at - offset : 0;
        }
    }
    if (sb->cfg.gzip && !reply->cut && !sb_req_header(req, "Range") &&
        req->fault.kind != SB_FAULT_TRUNCATE) {
        sb_reply_header(reply, "Vary", "Accept-Encoding");
        uint64_t gz_size;
        int gz = sb_gzip_accepted(sb_req_header(req, "Accept-Encoding"))
                     ? sb_gzip_open(path, &gz_size)
                     : -1;
        if (gz >= 0) {
            close(reply->fd);
            reply->fd = gz;
            reply->length = gz_size;
            sb_reply_header(reply, "Content-Encoding", "gzip");
        }
    }
    if (sb_quirk_on(sb->quirks, SB_QUIRK_TRICKLE, owner, &param, NULL))
        reply->rate = (uint64_t)param;
    if (!ignore_range)
        sb_reply_header(reply, "Accept-Ranges", "bytes");
    if (range == SB_RANGE_OK)
        sb_reply_header(reply, "Content-Range", "bytes %llu-%llu/%llu", (unsigned long long)offset,
                        (unsigned long long)(offset + length - 1), (unsigned long long)size);
}

void sb_bulk_handle_file(sb_server *sb, sb_request *req, sb_reply *reply)
{
    serve_file(sb, req, reply, false);
}

void sb_bulk_handle_storage_file(sb_server *sb, sb_request *req, sb_reply *reply)
{
    serve_file(sb, req, reply, true);
}
