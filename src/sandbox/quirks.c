/* sandbox/quirks.c: quirk modes, the lasting deviations from the specifications that real EHRs
 * show (a transactionTime taken when the export ends, no deleted files, types that were not
 * asked for, a POST body ignored, Range ignored, downloads cut at the same byte or trickled,
 * Retry-After of 0 or as an absolute epoch, kick-off needing a write scope, the token echoed in
 * errors, wrong manifest counts, a CapabilityStatement listing fewer types, HTML 429s; for the
 * authorization-code flow a refresh token that does not rotate, aud checked against another URL,
 * a refresh answer without the launch context).
 *
 * Fault rules (faults.c) fire on single requests and are consumed; a quirk is a mode that stays
 * on until removed and changes how the server answers whole flows, so it is kept apart: a set of
 * entries {quirk, client_id or every client, parameter (a number, or a text for aud-other-url)},
 * added with --quirk NAME[=N] or POST /admin/quirks. bulk.c, fhir.c, launch.c and server.c ask
 * sb_quirk_on() where each deviation applies;
 * docs/sandbox.md is the reference. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox.h"

#define MAX_QUIRKS 256

typedef struct quirk_entry {
    unsigned id;
    sb_quirk_kind kind;
    char client_id[128]; /* "" = every client */
    int64_t param;
    bool has_param;
    char text[SB_QUIRK_TEXT_MAX]; /* the parameter of a quirk that takes a text, "" when none */
    uint64_t hits;
} quirk_entry;

struct sb_quirks {
    pthread_mutex_t lock;
    quirk_entry *entries; /* grown as quirks are added (most servers of --practices have none) */
    size_t count, cap;
    unsigned next_id;
};

static const struct {
    sb_quirk_kind kind;
    const char *name;
    bool takes_param;
    int64_t default_param;
    int64_t max_param;
    bool takes_text; /* the parameter is a text, not a number */
} kinds[] = {
    {SB_QUIRK_LATE_TRANSACTION_TIME, "late-transaction-time", false, 0, 0, false},
    {SB_QUIRK_NO_DELETED, "no-deleted", false, 0, 0, false},
    {SB_QUIRK_EXTRA_TYPES, "extra-types", false, 0, 0, false},
    {SB_QUIRK_IGNORE_POST_BODY, "ignore-post-body", false, 0, 0, false},
    {SB_QUIRK_IGNORE_RANGE, "ignore-range", false, 0, 0, false},
    {SB_QUIRK_TRUNCATE_SAME_PLACE, "truncate-same-place", true, -1, INT64_MAX / 2, false},
    {SB_QUIRK_TRICKLE, "trickle", true, 64, 1 << 30, false},
    {SB_QUIRK_RETRY_AFTER_ZERO, "retry-after-zero", true, 0, 1000000000, false},
    {SB_QUIRK_RETRY_AFTER_EPOCH, "retry-after-epoch", false, 0, 0, false},
    {SB_QUIRK_EXPORT_NEEDS_WRITE_SCOPE, "export-needs-write-scope", false, 0, 0, false},
    {SB_QUIRK_ECHO_TOKEN_IN_ERRORS, "echo-token-in-errors", false, 0, 0, false},
    {SB_QUIRK_COUNT_MISMATCH, "count-mismatch", true, 1, 1000000000, false},
    {SB_QUIRK_CAPABILITY_FEWER_TYPES, "capability-fewer-types", false, 0, 0, false},
    {SB_QUIRK_HTML_429, "html-429", false, 0, 0, false},
    {SB_QUIRK_NO_PROGRESS_HEADERS, "no-progress-headers", false, 0, 0, false},
    {SB_QUIRK_REQUEST_WITHOUT_QUERY, "request-without-query", false, 0, 0, false},
    {SB_QUIRK_REFRESH_NO_ROTATE, "refresh-no-rotate", false, 0, 0, false},
    {SB_QUIRK_AUD_OTHER_URL, "aud-other-url", true, 0, 0, true},
    {SB_QUIRK_REFRESH_NO_CONTEXT, "refresh-no-context", false, 0, 0, false},
    {SB_QUIRK_REDIRECT_EXACT_PORT, "redirect-exact-port", false, 0, 0, false},
};

#define NKINDS (sizeof kinds / sizeof kinds[0])

const char *sb_quirk_name(sb_quirk_kind kind)
{
    for (size_t i = 0; i < NKINDS; i++)
        if (kinds[i].kind == kind)
            return kinds[i].name;
    return "none";
}

void sb_quirk_names(char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < NKINDS && used < size; i++) {
        int n = snprintf(buf + used, size - used, "%s%s", i ? ", " : "", kinds[i].name);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

sb_quirks *sb_quirks_new(void)
{
    sb_quirks *q = fs_calloc(1, sizeof *q);
    if (!q)
        return NULL;
    pthread_mutex_init(&q->lock, NULL);
    q->next_id = 1;
    return q;
}

void sb_quirks_free(sb_quirks *q)
{
    if (!q)
        return;
    pthread_mutex_destroy(&q->lock);
    fs_free(q->entries);
    fs_free(q);
}

unsigned sb_quirks_add(sb_quirks *q, const char *name, const char *client_id, bool has_param,
                       int64_t param, fhirsync_error *err)
{
    return sb_quirks_add_text_param(q, name, client_id, has_param, param, NULL, err);
}

unsigned sb_quirks_add_text_param(sb_quirks *q, const char *name, const char *client_id,
                                  bool has_param, int64_t param, const char *text,
                                  fhirsync_error *err)
{
    size_t k = 0;
    while (k < NKINDS && !fs_streq(kinds[k].name, name))
        k++;
    if (k == NKINDS) {
        char known[512];
        sb_quirk_names(known, sizeof known);
        fs_err(err, FHIRSYNC_E_ARG, "unknown quirk \"%.40s\" (known: %s)", name ? name : "", known);
        return 0;
    }
    if ((has_param || text) && !kinds[k].takes_param) {
        fs_err(err, FHIRSYNC_E_ARG, "quirk %s takes no parameter", kinds[k].name);
        return 0;
    }
    if (kinds[k].takes_text && has_param) {
        fs_err(err, FHIRSYNC_E_ARG, "quirk %s: the parameter is a URL, not a number",
               kinds[k].name);
        return 0;
    }
    if (text && (!kinds[k].takes_text || !*text || strlen(text) >= SB_QUIRK_TEXT_MAX)) {
        fs_err(err, FHIRSYNC_E_ARG, "quirk %s: the parameter must be %s", kinds[k].name,
               kinds[k].takes_text ? "a non-empty text shorter than 256 characters" : "an integer");
        return 0;
    }
    if (has_param && (param < 0 || param > kinds[k].max_param ||
                      (kinds[k].kind == SB_QUIRK_TRICKLE && param == 0))) {
        fs_err(err, FHIRSYNC_E_ARG, "quirk %s: the parameter must be an integer in [%d, %lld]",
               kinds[k].name, kinds[k].kind == SB_QUIRK_TRICKLE ? 1 : 0,
               (long long)kinds[k].max_param);
        return 0;
    }
    if (client_id && strlen(client_id) >= sizeof((quirk_entry *)NULL)->client_id) {
        fs_err(err, FHIRSYNC_E_ARG, "quirk %s: client_id is too long", kinds[k].name);
        return 0;
    }
    unsigned id = 0;
    pthread_mutex_lock(&q->lock);
    if (q->count == q->cap && q->cap < MAX_QUIRKS) {
        size_t cap = q->cap ? 2 * q->cap : 4;
        quirk_entry *grown = fs_calloc(cap, sizeof *grown);
        if (grown) {
            if (q->count)
                memcpy(grown, q->entries, q->count * sizeof *grown);
            fs_free(q->entries);
            q->entries = grown;
            q->cap = cap;
        }
    }
    if (q->count < q->cap) {
        quirk_entry *e = &q->entries[q->count++];
        memset(e, 0, sizeof *e);
        id = e->id = q->next_id++;
        e->kind = kinds[k].kind;
        snprintf(e->client_id, sizeof e->client_id, "%s", client_id ? client_id : "");
        e->has_param = has_param || text;
        e->param = has_param ? param : kinds[k].default_param;
        snprintf(e->text, sizeof e->text, "%s", text ? text : "");
    }
    pthread_mutex_unlock(&q->lock);
    if (!id)
        fs_err(err, FHIRSYNC_E_ARG, "too many quirks (at most %d) or out of memory", MAX_QUIRKS);
    return id;
}

static bool kind_takes_text(const char *name)
{
    for (size_t i = 0; i < NKINDS; i++)
        if (fs_streq(kinds[i].name, name))
            return kinds[i].takes_text;
    return false;
}

/* Split "NAME" or "NAME=N" into name (size 64) and parameter; for a quirk whose parameter is a
 * text ("aud-other-url=URL"), *value_text points at it. */
static bool split_text(const char *text, char *name, bool *has_param, int64_t *param,
                       const char **value_text, fhirsync_error *err)
{
    const char *eq = strchr(text, '=');
    size_t n = eq ? (size_t)(eq - text) : strlen(text);
    *value_text = NULL;
    if (n >= 64) {
        fs_err(err, FHIRSYNC_E_ARG, "unknown quirk \"%.40s\"", text);
        return false;
    }
    memcpy(name, text, n);
    name[n] = '\0';
    if (eq && kind_takes_text(name)) {
        *has_param = false;
        *value_text = eq + 1;
        return true;
    }
    long value = 0;
    if (eq && (!fs_parse_long(eq + 1, &value) || value < 0)) {
        fs_err(err, FHIRSYNC_E_ARG, "quirk %s: the parameter %.40s is not a number", name, eq + 1);
        return false;
    }
    *has_param = eq != NULL;
    *param = value;
    return true;
}

unsigned sb_quirks_add_text(sb_quirks *q, const char *text, fhirsync_error *err)
{
    char name[64];
    bool has_param = false;
    int64_t param = 0;
    const char *value_text = NULL;
    if (!split_text(text, name, &has_param, &param, &value_text, err))
        return 0;
    return sb_quirks_add_text_param(q, name, NULL, has_param, param, value_text, err);
}

unsigned sb_quirks_add_json(sb_quirks *q, const json_t *spec, fhirsync_error *err)
{
    if (!json_is_object(spec)) {
        fs_err(err, FHIRSYNC_E_ARG, "a quirk is a JSON object {\"quirk\": NAME, ...}");
        return 0;
    }
    for (void *it = json_object_iter((json_t *)spec); it;
         it = json_object_iter_next((json_t *)spec, it)) {
        const char *key = json_object_iter_key(it);
        if (strcmp(key, "quirk") && strcmp(key, "client_id") && strcmp(key, "param")) {
            fs_err(err, FHIRSYNC_E_ARG, "quirk: unknown member \"%.40s\"", key);
            return 0;
        }
    }
    const char *text = fs_json_str(spec, "quirk");
    const char *client_id = fs_json_str(spec, "client_id");
    if (!text || (json_object_get(spec, "client_id") && !client_id)) {
        fs_err(err, FHIRSYNC_E_ARG, "quirk: \"quirk\" and \"client_id\" must be strings");
        return 0;
    }
    char name[64];
    bool has_param = false;
    int64_t param = 0;
    const char *value_text = NULL;
    if (!split_text(text, name, &has_param, &param, &value_text, err))
        return 0;
    if (json_object_get(spec, "param")) {
        if (has_param || value_text) {
            fs_err(err, FHIRSYNC_E_ARG, "quirk: give the parameter once (NAME=N or param)");
            return 0;
        }
        if (json_is_string(json_object_get(spec, "param"))) {
            value_text = fs_json_str(spec, "param");
        } else if (!fs_json_int(spec, "param", &param)) {
            fs_err(err, FHIRSYNC_E_ARG, "quirk: param must be an integer");
            return 0;
        }
        has_param = value_text == NULL;
    }
    return sb_quirks_add_text_param(q, name, client_id, has_param, param, value_text, err);
}

size_t sb_quirks_remove(sb_quirks *q, const char *name, const char *client_id)
{
    size_t removed = 0, kept = 0;
    pthread_mutex_lock(&q->lock);
    for (size_t i = 0; i < q->count; i++) {
        quirk_entry *e = &q->entries[i];
        bool match = (!name || fs_streq(sb_quirk_name(e->kind), name)) &&
                     (!client_id || fs_streq(e->client_id, client_id));
        if (match)
            removed++;
        else
            q->entries[kept++] = *e;
    }
    q->count = kept;
    pthread_mutex_unlock(&q->lock);
    return removed;
}

json_t *sb_quirks_list(sb_quirks *q)
{
    json_t *list = json_array(), *known = json_array();
    for (size_t i = 0; known && i < NKINDS; i++)
        json_array_append_new(known, json_string(kinds[i].name));
    pthread_mutex_lock(&q->lock);
    for (size_t i = 0; list && i < q->count; i++) {
        const quirk_entry *e = &q->entries[i];
        json_t *item =
            json_pack("{s:i, s:s, s:I, s:I}", "id", (int)e->id, "quirk", sb_quirk_name(e->kind),
                      "param", (json_int_t)e->param, "hits", (json_int_t)e->hits);
        if (item && e->client_id[0])
            json_object_set_new(item, "client_id", json_string(e->client_id));
        if (item && e->text[0])
            json_object_set_new(item, "param", json_string(e->text));
        json_array_append_new(list, item);
    }
    pthread_mutex_unlock(&q->lock);
    return json_pack("{s:o*, s:o*}", "quirks", list, "known", known);
}

bool sb_quirk_on(sb_quirks *q, sb_quirk_kind kind, const char *client_id, int64_t *param,
                 uint64_t *uses)
{
    return sb_quirk_on_text(q, kind, client_id, param, uses, NULL, 0);
}

bool sb_quirk_on_text(sb_quirks *q, sb_quirk_kind kind, const char *client_id, int64_t *param,
                      uint64_t *uses, char *text, size_t text_size)
{
    quirk_entry *found = NULL;
    pthread_mutex_lock(&q->lock);
    /* an entry for this very client wins over one for every client */
    for (size_t i = 0; i < q->count; i++) {
        quirk_entry *e = &q->entries[i];
        if (e->kind != kind)
            continue;
        if (e->client_id[0] && client_id && !strcmp(e->client_id, client_id)) {
            found = e;
            break;
        }
        if (!e->client_id[0] && !found)
            found = e;
    }
    if (found) {
        if (param)
            *param = found->param;
        if (uses)
            *uses = found->hits;
        if (text && text_size)
            snprintf(text, text_size, "%s", found->text);
        found->hits++;
    }
    pthread_mutex_unlock(&q->lock);
    return found != NULL;
}
