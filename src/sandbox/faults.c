/* sandbox/faults.c: fault-injection rules, added with --fault or POST /admin/faults, that make
 * the sandbox misbehave the way real EHRs do (429 with Retry-After, 5xx, resets, slow answers,
 * tokens expiring early, truncated files, wrong content types, HTML error pages, redirects to
 * storage, broken paging, rate limits), so that client tests can prove their recovery.
 *
 * A rule is {"fault": NAME, "on": CATEGORY, "client_id": optional, "count": N, parameters}. The
 * first rule in insertion order whose category, client and remaining count fit fires; a firing
 * consumes one of its count (0 = fires every time). Rules that only make sense for some requests
 * (truncate and redirect for downloads; the paging faults for searches) only match those.
 * server.c, fhir.c and bulk.c apply the fault that fired; docs/sandbox.md is the reference. */
#include <string.h>

#include "sandbox.h"

#define MAX_RULES 256
#define MAX_RATE_CLIENTS 64

typedef struct rate_window {
    char client_id[128];
    int64_t minute;
    uint64_t requests;
} rate_window;

typedef struct rule {
    unsigned id;
    sb_fault fault;
    unsigned on;
    char *client_id;
    bool always;
    uint64_t remaining;
    uint64_t hits;
    int64_t per_minute;
    json_t *spec;
    rate_window windows[MAX_RATE_CLIENTS];
    size_t nwindows;
} rule;

struct sb_faults {
    pthread_mutex_t lock;
    rule *rules[MAX_RULES];
    size_t count;
    unsigned next_id;
};

static const struct {
    sb_fault_kind kind;
    const char *name;
    unsigned applies;
} kinds[] = {
    {SB_FAULT_429, "429", SB_ON_ANY},
    {SB_FAULT_503, "503", SB_ON_ANY},
    {SB_FAULT_500_TRANSIENT, "500-transient", SB_ON_ANY},
    {SB_FAULT_RESET, "reset", SB_ON_ANY},
    {SB_FAULT_SLOW, "slow", SB_ON_ANY},
    {SB_FAULT_EXPIRE_TOKEN, "expire-token", SB_ON_ANY},
    {SB_FAULT_TRUNCATE, "truncate", SB_ON_DOWNLOAD},
    {SB_FAULT_WRONG_CONTENT_TYPE, "wrong-content-type", SB_ON_ANY},
    {SB_FAULT_HTML, "html", SB_ON_ANY},
    {SB_FAULT_REDIRECT, "redirect", SB_ON_DOWNLOAD},
    {SB_FAULT_NEXT_OTHER_ORIGIN, "next-other-origin", SB_ON_SEARCH},
    {SB_FAULT_NEXT_LOOP, "next-loop", SB_ON_SEARCH},
    {SB_FAULT_MALFORMED_BUNDLE, "malformed-bundle", SB_ON_SEARCH},
    {SB_FAULT_RATE_LIMIT, "rate-limit", SB_ON_ANY},
};

static const struct {
    sb_on on;
    const char *name;
} categories[] = {
    {SB_ON_TOKEN, "token"},       {SB_ON_SEARCH, "search"},   {SB_ON_READ, "read"},
    {SB_ON_METADATA, "metadata"}, {SB_ON_KICKOFF, "kickoff"}, {SB_ON_STATUS, "status"},
    {SB_ON_DOWNLOAD, "download"}, {SB_ON_ANY, "any"},
};

const char *sb_on_name(sb_on on)
{
    for (size_t i = 0; i < sizeof categories / sizeof categories[0]; i++)
        if (categories[i].on == on)
            return categories[i].name;
    return NULL;
}

sb_on sb_on_from_name(const char *name)
{
    for (size_t i = 0; name && i < sizeof categories / sizeof categories[0]; i++)
        if (!strcmp(categories[i].name, name))
            return categories[i].on;
    return SB_ON_NONE;
}

const char *sb_fault_name(sb_fault_kind kind)
{
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (kinds[i].kind == kind)
            return kinds[i].name;
    return "none";
}

sb_faults *sb_faults_new(void)
{
    sb_faults *f = fs_calloc(1, sizeof *f);
    if (!f)
        return NULL;
    pthread_mutex_init(&f->lock, NULL);
    f->next_id = 1;
    return f;
}

static void rule_free(rule *r)
{
    if (!r)
        return;
    fs_free(r->client_id);
    json_decref(r->spec);
    fs_free(r);
}

void sb_faults_clear(sb_faults *f)
{
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; i < f->count; i++)
        rule_free(f->rules[i]);
    f->count = 0;
    pthread_mutex_unlock(&f->lock);
}

void sb_faults_free(sb_faults *f)
{
    if (!f)
        return;
    sb_faults_clear(f);
    pthread_mutex_destroy(&f->lock);
    fs_free(f);
}

/* An optional non-negative integer member; false (err filled) when present but unusable. */
static bool opt_int(const json_t *spec, const char *key, int64_t min, int64_t max, int64_t *out,
                    fhirsync_error *err)
{
    if (!json_object_get(spec, key))
        return true;
    int64_t v;
    if (!fs_json_int(spec, key, &v) || v < min || v > max) {
        fs_err(err, FHIRSYNC_E_ARG, "fault rule: %s must be an integer in [%lld, %lld]", key,
               (long long)min, (long long)max);
        return false;
    }
    *out = v;
    return true;
}

unsigned sb_faults_add(sb_faults *f, const json_t *spec, fhirsync_error *err)
{
    static const char *const known_keys[] = {
        "fault",  "on",       "client_id",   "count",      "retry_after", "retry_after_date",
        "status", "delay_ms", "after_bytes", "per_minute", "variant",
    };
    if (!json_is_object(spec)) {
        fs_err(err, FHIRSYNC_E_ARG, "a fault rule is a JSON object");
        return 0;
    }
    for (void *it = json_object_iter((json_t *)spec); it;
         it = json_object_iter_next((json_t *)spec, it)) {
        const char *key = json_object_iter_key(it);
        bool known = false;
        for (size_t i = 0; i < sizeof known_keys / sizeof known_keys[0]; i++)
            known = known || !strcmp(key, known_keys[i]);
        if (!known) {
            fs_err(err, FHIRSYNC_E_ARG, "fault rule: unknown member \"%.40s\"", key);
            return 0;
        }
    }
    const char *name = fs_json_str(spec, "fault");
    size_t k = 0;
    while (k < sizeof kinds / sizeof kinds[0] && !fs_streq(kinds[k].name, name))
        k++;
    if (k == sizeof kinds / sizeof kinds[0]) {
        fs_err(err, FHIRSYNC_E_ARG, "fault rule: unknown or missing \"fault\" %.40s",
               name ? name : "");
        return 0;
    }
    const char *on_name = fs_json_str(spec, "on");
    if (json_object_get(spec, "on") && !on_name) {
        fs_err(err, FHIRSYNC_E_ARG, "fault rule: \"on\" must be a string");
        return 0;
    }
    sb_on on = on_name ? sb_on_from_name(on_name) : SB_ON_ANY;
    if (on == SB_ON_NONE) {
        fs_err(err, FHIRSYNC_E_ARG,
               "fault rule: \"on\" %.40s is not one of token, search, read, "
               "metadata, kickoff, status, download, any",
               on_name);
        return 0;
    }
    if (!(on & kinds[k].applies)) {
        fs_err(err, FHIRSYNC_E_ARG, "fault rule: %s does not apply to %s requests", name, on_name);
        return 0;
    }
    const char *client_id = fs_json_str(spec, "client_id");
    if (json_object_get(spec, "client_id") && !client_id) {
        fs_err(err, FHIRSYNC_E_ARG, "fault rule: client_id must be a string");
        return 0;
    }
    bool rate = kinds[k].kind == SB_FAULT_RATE_LIMIT;
    int64_t count = rate ? 0 : 1, retry_after = 1, status = 500, delay_ms = 1000, after_bytes = -1,
            per_minute = 250;
    bool retry_after_date = false;
    if (!opt_int(spec, "count", 0, INT32_MAX, &count, err) ||
        !opt_int(spec, "retry_after", 0, 86400 * 7, &retry_after, err) ||
        !opt_int(spec, "status", 400, 599, &status, err) ||
        !opt_int(spec, "delay_ms", 0, 600000, &delay_ms, err) ||
        !opt_int(spec, "after_bytes", 0, INT64_MAX / 2, &after_bytes, err) ||
        !opt_int(spec, "per_minute", 1, 1000000, &per_minute, err))
        return 0;
    if (json_object_get(spec, "retry_after_date") &&
        !fs_json_bool(spec, "retry_after_date", &retry_after_date)) {
        fs_err(err, FHIRSYNC_E_ARG, "fault rule: retry_after_date must be a boolean");
        return 0;
    }
    const char *variant = fs_json_str(spec, "variant");
    if (json_object_get(spec, "variant") &&
        !(fs_streq(variant, "entry-not-array") || fs_streq(variant, "no-resource-type"))) {
        fs_err(err, FHIRSYNC_E_ARG,
               "fault rule: variant must be entry-not-array or "
               "no-resource-type");
        return 0;
    }
    rule *r = fs_calloc(1, sizeof *r);
    if (!r || (client_id && !(r->client_id = fs_strdup(client_id))) ||
        !(r->spec = json_deep_copy(spec))) {
        rule_free(r);
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        return 0;
    }
    r->fault.kind = kinds[k].kind;
    r->fault.retry_after = retry_after;
    r->fault.retry_after_date = retry_after_date;
    r->fault.status = (unsigned)status;
    r->fault.delay_ms = delay_ms;
    r->fault.after_bytes = after_bytes;
    snprintf(r->fault.variant, sizeof r->fault.variant, "%s",
             variant ? variant : "entry-not-array");
    r->on = on & kinds[k].applies;
    r->always = count == 0;
    r->remaining = (uint64_t)count;
    r->per_minute = per_minute;
    pthread_mutex_lock(&f->lock);
    unsigned id = 0;
    if (f->count < MAX_RULES) {
        id = r->id = r->fault.rule_id = f->next_id++;
        f->rules[f->count++] = r;
    }
    pthread_mutex_unlock(&f->lock);
    if (!id) {
        rule_free(r);
        fs_err(err, FHIRSYNC_E_ARG, "too many fault rules (at most %d)", MAX_RULES);
    }
    return id;
}

unsigned sb_faults_add_text(sb_faults *f, const char *text, fhirsync_error *err)
{
    json_t *spec = fs_json_parse(text, strlen(text), true, "fault rule", err);
    if (!spec)
        return 0;
    unsigned id = sb_faults_add(f, spec, err);
    json_decref(spec);
    return id;
}

json_t *sb_faults_list(sb_faults *f)
{
    json_t *list = json_array();
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; list && i < f->count; i++) {
        rule *r = f->rules[i];
        json_t *item = json_deep_copy(r->spec);
        if (!item)
            continue;
        json_object_set_new(item, "id", json_integer(r->id));
        json_object_set_new(item, "hits", json_integer((json_int_t)r->hits));
        json_object_set_new(item, "always", json_boolean(r->always));
        json_object_set_new(item, "remaining", json_integer((json_int_t)r->remaining));
        json_array_append_new(list, item);
    }
    pthread_mutex_unlock(&f->lock);
    return json_pack("{s:o*}", "faults", list);
}

/* Count a request against a rate-limit rule; true when it is over the limit. */
static bool over_rate(rule *r, const char *client_id, int64_t now, int64_t *retry_after)
{
    const char *who = client_id ? client_id : "";
    int64_t minute = now / 60;
    rate_window *w = NULL;
    for (size_t i = 0; i < r->nwindows && !w; i++)
        if (!strcmp(r->windows[i].client_id, who))
            w = &r->windows[i];
    if (!w) {
        size_t at = r->nwindows < MAX_RATE_CLIENTS ? r->nwindows++ : 0;
        w = &r->windows[at];
        snprintf(w->client_id, sizeof w->client_id, "%s", who);
        w->minute = minute;
        w->requests = 0;
    }
    if (w->minute != minute) {
        w->minute = minute;
        w->requests = 0;
    }
    w->requests++;
    *retry_after = 60 - now % 60;
    return w->requests > (uint64_t)r->per_minute;
}

bool sb_faults_match(sb_faults *f, sb_on on, const char *client_id, int64_t now, sb_fault *out)
{
    bool fired = false;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; i < f->count && !fired; i++) {
        rule *r = f->rules[i];
        if (!(r->on & on) || (!r->always && r->remaining == 0))
            continue;
        if (r->client_id && !fs_streq(r->client_id, client_id))
            continue;
        int64_t retry_after = r->fault.retry_after;
        if (r->fault.kind == SB_FAULT_RATE_LIMIT && !over_rate(r, client_id, now, &retry_after))
            continue;
        *out = r->fault;
        out->retry_after = retry_after;
        r->hits++;
        if (!r->always)
            r->remaining--;
        fired = true;
    }
    pthread_mutex_unlock(&f->lock);
    return fired;
}
