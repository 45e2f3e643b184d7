/* sandbox/practices.c: several practices on one port (--practices N), as EHRs that give every
 * practice its own FHIR base (eClinicalWorks) do. Each practice is a whole sb_server of its own:
 * its generated data (its own seed and size), clients and tokens, export jobs, fault rules,
 * quirks and a meter with its rate limit, and URLs that start with /practice/{i}. The root server
 * owns the listeners, the request log and the practices; server.c's dispatch strips the
 * /practice/{i} prefix and hands the request to practice i, so no handler knows about practices.
 *
 * Also here: the meter (what a practice was asked: requests, token requests and tokens issued,
 * 429s, the busiest minute and the busiest 60 seconds; its requests-per-minute limit), the
 * --clients file split over practices, the ready file's list of practices and the admin API
 * /admin/practices. docs/sandbox.md ("Several practices") documents the shapes. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sandbox.h"

#define MAX_PRACTICES 10000

struct sb_practices {
    sb_server **items; /* items[i - 1] is practice i */
    uint32_t count;
    atomic_bool published;
    char work_dir[2048]; /* every practice's export jobs (job ids are random: no clash) */
    bool temporary;      /* made here (no --work-dir): removed at the end */
    uint64_t patients;   /* the total */
};

/* ---- the meter ------------------------------------------------------------------------------ */

void sb_meter_init(sb_meter *m, uint32_t rate_limit, int64_t now)
{
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->lock, NULL);
    m->rate_limit = rate_limit;
    m->counts.since = now;
}

void sb_meter_destroy(sb_meter *m)
{
    pthread_mutex_destroy(&m->lock);
}

bool sb_meter_admit(sb_meter *m, bool token, int64_t now, uint32_t *limit, int64_t *retry_after)
{
    pthread_mutex_lock(&m->lock);
    sb_meter_counts *c = &m->counts;
    c->requests++;
    c->token_requests += token;
    if (!c->first_request)
        c->first_request = now;
    c->last_request = now;
    int64_t minute = now / 60;
    if (c->minute != minute) {
        c->minute = minute;
        c->minute_requests = 0;
        c->minute_admitted = 0;
    }
    if (++c->minute_requests > c->max_minute) {
        c->max_minute = c->minute_requests;
        c->max_minute_at = minute * 60;
    }
    /* the sliding window: the requests of the 60 seconds ending now */
    size_t slot = (size_t)(now % 60);
    if (c->second[slot] != now) {
        c->second[slot] = now;
        c->per_second[slot] = 0;
    }
    c->per_second[slot]++;
    uint64_t window = 0;
    for (size_t i = 0; i < 60; i++)
        if (c->second[i] > now - 60 && c->second[i] <= now)
            window += c->per_second[i];
    if (window > c->max_60s)
        c->max_60s = window;
    bool admitted = m->rate_limit == 0 || c->minute_admitted < m->rate_limit;
    if (admitted)
        c->minute_admitted++;
    else
        c->rate_limited++;
    *limit = m->rate_limit;
    pthread_mutex_unlock(&m->lock);
    *retry_after = 60 - now % 60;
    return admitted;
}

void sb_meter_count_status(sb_meter *m, unsigned status)
{
    if (status != 429)
        return;
    pthread_mutex_lock(&m->lock);
    m->counts.status_429++;
    pthread_mutex_unlock(&m->lock);
}

void sb_meter_count_token_issued(sb_meter *m)
{
    pthread_mutex_lock(&m->lock);
    m->counts.tokens_issued++;
    pthread_mutex_unlock(&m->lock);
}

static void meter_reset(sb_meter *m, int64_t now)
{
    pthread_mutex_lock(&m->lock);
    memset(&m->counts, 0, sizeof m->counts);
    m->counts.since = now;
    pthread_mutex_unlock(&m->lock);
}

static void meter_set_limit(sb_meter *m, uint32_t rate_limit)
{
    pthread_mutex_lock(&m->lock);
    m->rate_limit = rate_limit;
    pthread_mutex_unlock(&m->lock);
}

static json_t *instant_or_null(int64_t t)
{
    char text[40];
    if (!t)
        return json_null();
    fs_format_instant(t, text, sizeof text);
    return json_string(text);
}

/* Adds the meter's counts to `out`. */
static void meter_json(sb_meter *m, json_t *out)
{
    pthread_mutex_lock(&m->lock);
    uint32_t limit = m->rate_limit;
    sb_meter_counts c = m->counts;
    pthread_mutex_unlock(&m->lock);
    json_object_set_new(out, "rate_limit", json_integer(limit));
    json_object_set_new(out, "since", instant_or_null(c.since));
    json_object_set_new(out, "requests", json_integer((json_int_t)c.requests));
    json_object_set_new(out, "token_requests", json_integer((json_int_t)c.token_requests));
    json_object_set_new(out, "tokens_issued", json_integer((json_int_t)c.tokens_issued));
    json_object_set_new(out, "status_429", json_integer((json_int_t)c.status_429));
    json_object_set_new(out, "rate_limited", json_integer((json_int_t)c.rate_limited));
    json_object_set_new(out, "max_requests_per_minute", json_integer((json_int_t)c.max_minute));
    json_object_set_new(out, "busiest_minute", instant_or_null(c.max_minute_at));
    json_object_set_new(out, "max_requests_per_60s", json_integer((json_int_t)c.max_60s));
    json_object_set_new(out, "first_request", instant_or_null(c.first_request));
    json_object_set_new(out, "last_request", instant_or_null(c.last_request));
}

/* ---- life cycle ----------------------------------------------------------------------------- */

static void practice_free(sb_server *p)
{
    if (!p)
        return;
    sb_bulk_free(p->bulk);
    sb_launch_free(p->launch);
    sb_auth_free(p->auth);
    sb_faults_free(p->faults);
    sb_quirks_free(p->quirks);
    sb_data_free(p->data);
    sb_meter_destroy(&p->meter);
    pthread_mutex_destroy(&p->clock_lock);
    fs_free(p);
}

/* The practices' export folder: --work-dir, or a new temporary dir. One for all, rather than one
 * each: 500 mkdir(2) calls were most of the start-up time. */
static bool make_work_dir(sb_practices *ps, const char *work_dir, fhirsync_error *err)
{
    if (work_dir) {
        snprintf(ps->work_dir, sizeof ps->work_dir, "%s", work_dir);
        if (mkdir(ps->work_dir, 0700) != 0 && errno != EEXIST) {
            fs_err(err, FHIRSYNC_E_IO, "cannot create the work dir %s", ps->work_dir);
            return false;
        }
        return true;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(ps->work_dir, sizeof ps->work_dir, "%s/fhirsync-sandbox-XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(ps->work_dir)) {
        fs_err(err, FHIRSYNC_E_IO, "cannot create a temporary work dir");
        return false;
    }
    ps->temporary = true;
    return true;
}

static sb_server *practice_new(sb_practices *ps, sb_server *root, uint32_t number,
                               uint32_t patients, fhirsync_error *err)
{
    sb_server *p = fs_calloc(1, sizeof *p);
    if (!p) {
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        return NULL;
    }
    p->cfg = root->cfg;
    p->cfg.practices = 0;
    p->cfg.patients = patients;
    p->cfg.seed = root->cfg.seed + number;
    p->cfg.work_dir = ps->work_dir;
    p->cfg.clients_file = NULL;
    p->tls = root->tls;
    p->practice = number;
    p->log = root->log;
    pthread_mutex_init(&p->clock_lock, NULL);
    sb_meter_init(&p->meter, root->cfg.rate_limit, fs_now());
    sb_gen_config gc = {.seed = p->cfg.seed, .patients = patients};
    if (!(p->data = sb_data_new_generated(&gc, err)) || !(p->faults = sb_faults_new()) ||
        !(p->quirks = sb_quirks_new())) {
        if (p->data)
            fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        practice_free(p);
        return NULL;
    }
    return p;
}

sb_practices *sb_practices_new(sb_server *root, fhirsync_error *err)
{
    uint32_t n = root->cfg.practices;
    sb_practices *ps = fs_calloc(1, sizeof *ps);
    uint32_t *sizes = fs_calloc(n ? n : 1, sizeof *sizes);
    if (!ps || !sizes || !(ps->items = fs_calloc(n ? n : 1, sizeof *ps->items))) {
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto fail;
    }
    if (n == 0 || n > MAX_PRACTICES ||
        !sb_gen_split_patients(root->cfg.patients, n, root->cfg.practice_skew, sizes)) {
        fs_err(err, FHIRSYNC_E_CONFIG,
               "cannot split %u patients over %u practices (at least one each, at most %d "
               "practices, skew in [0, 10])",
               (unsigned)root->cfg.patients, (unsigned)n, MAX_PRACTICES);
        goto fail;
    }
    if (!make_work_dir(ps, root->cfg.work_dir, err))
        goto fail;
    for (uint32_t i = 0; i < n; i++) {
        if (!(ps->items[i] = practice_new(ps, root, i + 1, sizes[i], err)))
            goto fail;
        ps->count = i + 1;
        ps->patients += sizes[i];
    }
    fs_free(sizes);
    return ps;
fail:
    fs_free(sizes);
    sb_practices_free(ps);
    return NULL;
}

bool sb_practices_start(sb_practices *ps, sb_server *root, fhirsync_error *err)
{
    for (uint32_t i = 0; i < ps->count; i++) {
        sb_server *p = ps->items[i];
        p->port = root->port;
        p->storage_port = root->storage_port;
        char prefix[32];
        snprintf(prefix, sizeof prefix, "/practice/%u", p->practice);
        sb_server_format_urls(p, prefix);
        if (!(p->auth = sb_auth_new(p, err)) || !(p->launch = sb_launch_new(p, err)) ||
            !(p->bulk = sb_bulk_new(p, err))) {
            fs_err_prefix(err, "practice %u", p->practice);
            return false;
        }
    }
    return true;
}

void sb_practices_publish(sb_practices *ps)
{
    atomic_store(&ps->published, true);
}

void sb_practices_stopping(sb_practices *ps)
{
    if (!ps)
        return;
    atomic_store(&ps->published, false);
    for (uint32_t i = 0; i < ps->count; i++)
        atomic_store(&ps->items[i]->stopping, true);
}

void sb_practices_free(sb_practices *ps)
{
    if (!ps)
        return;
    for (uint32_t i = 0; i < ps->count; i++)
        practice_free(ps->items[i]);
    if (ps->temporary)
        rmdir(ps->work_dir);
    fs_free(ps->items);
    fs_free(ps);
}

uint32_t sb_practices_count(const sb_practices *ps)
{
    return ps ? ps->count : 0;
}

/* A practice number as a path segment or option: decimal, no sign or leading zero, 1..count. */
static uint32_t parse_number(const sb_practices *ps, const char *text, size_t len)
{
    if (len == 0 || len > 5 || text[0] == '0')
        return 0;
    uint32_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return 0;
        n = n * 10 + (uint32_t)(text[i] - '0');
    }
    return n <= ps->count ? n : 0;
}

sb_server *sb_practices_find(sb_practices *ps, const char *number)
{
    if (!ps || !atomic_load(&ps->published))
        return NULL;
    uint32_t n = parse_number(ps, number, strlen(number));
    return n ? ps->items[n - 1] : NULL;
}

/* ---- options -------------------------------------------------------------------------------- */

bool sb_practices_add_fault_text(sb_practices *ps, const char *text, fhirsync_error *err)
{
    for (uint32_t i = 0; i < ps->count; i++)
        if (!sb_faults_add_text(ps->items[i]->faults, text, err))
            return false;
    return true;
}

bool sb_practices_add_quirk_text(sb_practices *ps, const char *text, fhirsync_error *err)
{
    for (uint32_t i = 0; i < ps->count; i++)
        if (!sb_quirks_add_text(ps->items[i]->quirks, text, err))
            return false;
    return true;
}

bool sb_practices_add_practice_quirk(sb_practices *ps, const char *text, fhirsync_error *err)
{
    const char *colon = strchr(text, ':');
    uint32_t n = colon ? parse_number(ps, text, (size_t)(colon - text)) : 0;
    if (!n) {
        fs_err(err, FHIRSYNC_E_CONFIG, "expected PRACTICE:QUIRK[=N] with a practice in 1..%u",
               (unsigned)ps->count);
        return false;
    }
    return sb_quirks_add_text(ps->items[n - 1]->quirks, colon + 1, err) != 0;
}

/* Register one --clients entry with practice n (1-based). */
static bool register_with(sb_practices *ps, uint32_t n, const json_t *desc, size_t index,
                          fhirsync_error *err)
{
    if (sb_auth_register_json(ps->items[n - 1]->auth, desc, err))
        return true;
    fs_err_prefix(err, "clients[%zu] (practice %u)", index, (unsigned)n);
    return false;
}

bool sb_practices_load_clients(sb_practices *ps, const char *path, fhirsync_error *err)
{
    fs_err_clear(err);
    json_error_t jerr;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        fs_err(err, FHIRSYNC_E_CONFIG, "not readable JSON (line %d: %s)", jerr.line, jerr.text);
        return false;
    }
    bool ok = false;
    json_t *list = json_object_get(doc, "clients");
    if (!json_is_array(list)) {
        fs_err(err, FHIRSYNC_E_CONFIG, "expected {\"clients\": [ ... ]}");
        goto out;
    }
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *desc = json_array_get(list, i);
        json_t *where = json_object_get(desc, "practice");
        json_t *one = json_is_integer(where) ? json_pack("[O]", where) : json_incref(where);
        if (!where) {
            for (uint32_t n = 1; n <= ps->count; n++)
                if (!register_with(ps, n, desc, i, err))
                    goto out;
            continue;
        }
        bool fine = json_is_array(one) && json_array_size(one) > 0;
        for (size_t k = 0; fine && k < json_array_size(one); k++) {
            json_int_t n = json_integer_value(json_array_get(one, k));
            fine = json_is_integer(json_array_get(one, k)) && n >= 1 && n <= ps->count;
        }
        for (size_t k = 0; fine && k < json_array_size(one); k++)
            fine = register_with(ps, (uint32_t)json_integer_value(json_array_get(one, k)), desc, i,
                                 err);
        if (!fine && !err->message[0])
            fs_err(err, FHIRSYNC_E_CONFIG,
                   "clients[%zu]: practice must be a practice number (1..%u) or a list of them", i,
                   (unsigned)ps->count);
        json_decref(one);
        if (!fine)
            goto out;
    }
    ok = true;
out:
    json_decref(doc);
    return ok;
}

json_t *sb_practices_ready_list(sb_practices *ps)
{
    json_t *list = json_array();
    for (uint32_t i = 0; list && i < ps->count; i++) {
        sb_server *p = ps->items[i];
        json_t *item =
            json_pack("{s:i, s:s, s:s, s:s, s:s, s:i}", "practice", (int)p->practice, "base_url",
                      p->base_url, "token_url", p->token_url, "register_url", p->register_url,
                      "admin_url", p->admin_url, "patients", (int)p->cfg.patients);
        if (!item || json_array_append_new(list, item) != 0) {
            json_decref(list);
            return NULL;
        }
    }
    return list;
}

/* ---- the admin API -------------------------------------------------------------------------- */

/* Every resource the practice's generator made at the start (deleted ones included). */
static uint64_t practice_resources(const sb_server *p)
{
    uint64_t total = 0;
    size_t types = sb_data_type_count(p->data);
    for (size_t t = 0; t < types; t++)
        for (uint32_t b = 0; b < sb_data_buckets(p->data, t); b++)
            total += sb_data_slots(p->data, t, b);
    return total;
}

static json_t *practice_json(sb_server *p)
{
    json_t *out = json_pack("{s:i, s:s, s:s, s:s, s:s, s:I, s:i, s:I, s:i, s:I}", "practice",
                            (int)p->practice, "base_url", p->base_url, "token_url", p->token_url,
                            "register_url", p->register_url, "admin_url", p->admin_url, "seed",
                            (json_int_t)p->cfg.seed, "patients", (int)p->cfg.patients, "resources",
                            (json_int_t)practice_resources(p), "epoch", (int)sb_data_epoch(p->data),
                            "clients", (json_int_t)sb_auth_client_count(p->auth));
    if (out)
        meter_json(&p->meter, out);
    return out;
}

/* The practice named by the route's capture; NULL with a 404 in reply. On the single base:
 * 404 too. */
static sb_server *practice_of(sb_server *sb, sb_request *req, sb_reply *reply)
{
    if (!sb->practices) {
        sb_reply_outcome(reply, 404, "not-found",
                         "this sandbox serves one base: start it with --practices N");
        return NULL;
    }
    sb_server *p = sb_practices_find(sb->practices, req->captures[0]);
    if (!p)
        sb_reply_outcome(reply, 404, "not-found", "no practice %s (1..%u)", req->captures[0],
                         (unsigned)sb->practices->count);
    return p;
}

static void reply_taken(sb_reply *reply, unsigned status, json_t *doc)
{
    if (!doc) {
        sb_reply_outcome(reply, 500, "exception", "out of memory");
        return;
    }
    sb_reply_json(reply, status, SB_JSON, doc);
    json_decref(doc);
}

void sb_admin_handle_practices_get(sb_server *sb, sb_request *req, sb_reply *reply)
{
    if (req->captures[0]) {
        sb_server *p = practice_of(sb, req, reply);
        if (p)
            reply_taken(reply, 200, practice_json(p));
        return;
    }
    if (!sb->practices) {
        practice_of(sb, req, reply);
        return;
    }
    sb_practices *ps = sb->practices;
    json_t *list = json_array();
    json_t *totals =
        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "requests", (json_int_t)0, "token_requests",
                  (json_int_t)0, "tokens_issued", (json_int_t)0, "status_429", (json_int_t)0,
                  "rate_limited", (json_int_t)0, "resources", (json_int_t)0);
    static const char *const summed[] = {"requests",   "token_requests", "tokens_issued",
                                         "status_429", "rate_limited",   "resources"};
    for (uint32_t i = 0; list && totals && i < ps->count; i++) {
        json_t *item = practice_json(ps->items[i]);
        for (size_t k = 0; item && k < sizeof summed / sizeof summed[0]; k++) {
            json_t *total = json_object_get(totals, summed[k]);
            json_integer_set(total, json_integer_value(total) +
                                        json_integer_value(json_object_get(item, summed[k])));
        }
        if (!item || json_array_append_new(list, item) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    json_t *doc =
        list && totals
            ? json_pack("{s:i, s:I, s:I, s:f, s:i, s:O, s:O}", "count", (int)ps->count, "patients",
                        (json_int_t)ps->patients, "seed", (json_int_t)sb->cfg.seed, "skew",
                        sb->cfg.practice_skew, "rate_limit", (int)sb->cfg.rate_limit, "totals",
                        totals, "practices", list)
            : NULL;
    json_decref(list);
    json_decref(totals);
    reply_taken(reply, 200, doc);
}

/* POST /admin/practices[/{i}] {"rate_limit": N}: one practice's limit, or every practice's. */
void sb_admin_handle_practices_set(sb_server *sb, sb_request *req, sb_reply *reply)
{
    sb_server *one = NULL;
    if ((req->captures[0] || !sb->practices) && !(one = practice_of(sb, req, reply)))
        return;
    fhirsync_error err;
    fs_err_clear(&err);
    json_t *doc = fs_json_parse(req->body.data, req->body.len, true, "request body", &err);
    json_t *limit = json_object_get(doc, "rate_limit");
    if (!doc || !json_is_integer(limit) || json_integer_value(limit) < 0 ||
        json_integer_value(limit) > UINT32_MAX || json_object_size(doc) != 1) {
        sb_reply_outcome(reply, 400, "invalid",
                         "expected {\"rate_limit\": N}, N requests per minute (0: none)%s%s",
                         err.message[0] ? ": " : "", err.message);
        json_decref(doc);
        return;
    }
    uint32_t value = (uint32_t)json_integer_value(limit);
    json_decref(doc);
    sb_practices *ps = sb->practices;
    for (uint32_t i = 0; i < ps->count; i++) {
        sb_server *p = ps->items[i];
        if (one && p != one)
            continue;
        meter_set_limit(&p->meter, value);
    }
    if (one)
        reply_taken(reply, 200, practice_json(one));
    else
        reply_taken(reply, 200,
                    json_pack("{s:i, s:i}", "updated", (int)ps->count, "rate_limit", (int)value));
}

/* DELETE /admin/practices[/{i}]: the counts start again (the limits stay). */
void sb_admin_handle_practices_reset(sb_server *sb, sb_request *req, sb_reply *reply)
{
    sb_server *one = NULL;
    if ((req->captures[0] || !sb->practices) && !(one = practice_of(sb, req, reply)))
        return;
    sb_practices *ps = sb->practices;
    int64_t now = fs_now();
    uint32_t reset = 0;
    for (uint32_t i = 0; i < ps->count; i++) {
        sb_server *p = ps->items[i];
        if (one && p != one)
            continue;
        meter_reset(&p->meter, now);
        reset++;
    }
    reply_taken(reply, 200, json_pack("{s:i}", "reset", (int)reset));
}
