/* sandbox/query.c: FHIR search parameters compiled into a matcher, shared by REST search and the
 * _typeFilter of bulk exports. Supported: _id, _lastUpdated (eq ne gt ge lt le sa eb, with a
 * date or an instant), _since (lastUpdated > instant), patient / subject (Patient/ID or ID),
 * category, code, status (tokens: code, system|code, |code, system|), and for REST paging
 * _count, _page_token, _total, _summary=count. Anything else is recorded as unknown so that the
 * caller can apply lenient or strict handling. Comma-separated values are OR-ed; repeated
 * parameters are AND-ed. MHD-free: fuzzed through tests/fuzz/fuzz_sandbox_request.c. */
#include <ctype.h>
#include <string.h>

#include "sandbox.h"

#define MAX_VALUES 256

void sb_query_init(sb_query *q)
{
    memset(q, 0, sizeof *q);
    q->count = SB_DEFAULT_COUNT;
}

static void free_strings(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fs_free(list[i]);
    fs_free(list);
}

static void free_tokens(sb_token_list *t)
{
    for (size_t i = 0; i < t->count; i++) {
        fs_free(t->items[i].system);
        fs_free(t->items[i].code);
    }
    fs_free(t->items);
    t->items = NULL;
    t->count = 0;
}

void sb_query_free(sb_query *q)
{
    free_strings(q->ids, q->nids);
    fs_free(q->times);
    free_strings(q->patients, q->npatients);
    free_tokens(&q->category);
    free_tokens(&q->code);
    free_tokens(&q->status);
    fs_free(q->page_token);
    free_strings(q->unknown, q->nunknown);
    sb_query_init(q);
}

static bool push_string(char ***list, size_t *n, const char *s, size_t len)
{
    if (*n >= MAX_VALUES)
        return false;
    char **grown = fs_realloc(*list, (*n + 1) * sizeof **list);
    if (!grown)
        return false;
    *list = grown;
    if (!(grown[*n] = fs_strndup(s, len)))
        return false;
    (*n)++;
    return true;
}

/* ---- dates ---------------------------------------------------------------------------------- */

static bool fixed_digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

static int days_in_month(int y, int m)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : mdays[m - 1];
}

bool sb_parse_date_range(const char *value, int64_t *lo, int64_t *hi)
{
    size_t n = strlen(value);
    int y = 0, m = 1, d = 1;
    if (n > 10) {
        int64_t t;
        if (!fs_parse_instant(value, &t))
            return false;
        *lo = t;
        *hi = t + 1;
        return true;
    }
    if (n != 4 && n != 7 && n != 10)
        return false;
    if (!fixed_digits(value, 4, &y) || y < 1)
        return false;
    if (n >= 7 && (value[4] != '-' || !fixed_digits(value + 5, 2, &m) || m < 1 || m > 12))
        return false;
    if (n == 10 &&
        (value[7] != '-' || !fixed_digits(value + 8, 2, &d) || d < 1 || d > days_in_month(y, m)))
        return false;
    *lo = fs_days_from_civil(y, m, d) * 86400;
    if (n == 4)
        *hi = fs_days_from_civil(y + 1, 1, 1) * 86400;
    else if (n == 7)
        *hi = fs_days_from_civil(m == 12 ? y + 1 : y, m == 12 ? 1 : m + 1, 1) * 86400;
    else
        *hi = *lo + 86400;
    return true;
}

static bool add_time(sb_query *q, const char *prefix, int64_t lo, int64_t hi)
{
    if (q->ntimes >= MAX_VALUES)
        return false;
    sb_time_cond *grown = fs_realloc(q->times, (q->ntimes + 1) * sizeof *grown);
    if (!grown)
        return false;
    q->times = grown;
    sb_time_cond *c = &grown[q->ntimes++];
    memset(c, 0, sizeof *c);
    memcpy(c->prefix, prefix, 2);
    c->lo = lo;
    c->hi = hi;
    return true;
}

static bool time_matches(const sb_time_cond *c, int64_t t)
{
    const char *p = c->prefix;
    if (!strcmp(p, "eq"))
        return t >= c->lo && t < c->hi;
    if (!strcmp(p, "ne"))
        return t < c->lo || t >= c->hi;
    if (!strcmp(p, "gt") || !strcmp(p, "sa"))
        return t >= c->hi;
    if (!strcmp(p, "ge"))
        return t >= c->lo;
    if (!strcmp(p, "lt") || !strcmp(p, "eb"))
        return t < c->lo;
    if (!strcmp(p, "le"))
        return t < c->hi;
    return false;
}

/* ---- tokens --------------------------------------------------------------------------------- */

static bool add_token(sb_token_list *t, const char *value)
{
    if (t->count >= MAX_VALUES)
        return false;
    sb_token_cond *grown = fs_realloc(t->items, (t->count + 1) * sizeof *grown);
    if (!grown)
        return false;
    t->items = grown;
    sb_token_cond *c = &grown[t->count];
    c->system = NULL;
    c->code = NULL;
    const char *bar = strchr(value, '|');
    if (bar) {
        /* "|code": explicitly no system is treated as any system; "system|": any code */
        if (bar > value && !(c->system = fs_strndup(value, (size_t)(bar - value))))
            return false;
        if (bar[1] && !(c->code = fs_strdup(bar + 1))) {
            fs_free(c->system);
            return false;
        }
    } else if (!(c->code = fs_strdup(value))) {
        return false;
    }
    t->count++;
    return true;
}

static bool coding_matches(const json_t *coding, const sb_token_cond *c)
{
    if (c->system && !fs_streq(fs_json_str(coding, "system"), c->system))
        return false;
    if (c->code && !fs_streq(fs_json_str(coding, "code"), c->code))
        return false;
    return true;
}

static bool concept_matches(const json_t *concept, const sb_token_cond *c)
{
    const json_t *codings = json_object_get(concept, "coding");
    for (size_t i = 0; i < json_array_size(codings); i++) {
        const json_t *coding = json_array_get(codings, i);
        if (coding_matches(coding, c))
            return true;
    }
    return false;
}

/* Whether the element (a CodeableConcept, an array of them, or a code string) matches any
 * condition of the list. */
static bool element_matches(const json_t *element, const sb_token_list *t)
{
    for (size_t k = 0; k < t->count; k++) {
        const sb_token_cond *c = &t->items[k];
        if (json_is_string(element)) {
            if (!c->system && c->code && fs_streq(json_string_value(element), c->code))
                return true;
        } else if (json_is_array(element)) {
            size_t i;
            for (i = 0; i < json_array_size(element); i++) {
                json_t *concept = json_array_get(element, i);
                if (concept_matches(concept, c))
                    return true;
            }
        } else if (json_is_object(element) && concept_matches(element, c)) {
            return true;
        }
    }
    return false;
}

/* ---- adding parameters ---------------------------------------------------------------------- */

static bool split_values(const char *value, char ***list, size_t *n)
{
    const char *p = value;
    for (;;) {
        size_t len = strcspn(p, ",");
        if (len > 0 && !push_string(list, n, p, len))
            return false;
        if (!p[len])
            return true;
        p += len + 1;
    }
}

static const char *strip_patient_ref(const char *v)
{
    const char *slash = strstr(v, "Patient/");
    if (slash && (slash == v || slash[-1] == '/'))
        return slash + 8;
    return v;
}

static bool remember_unknown(sb_query *q, const char *name)
{
    return push_string(&q->unknown, &q->nunknown, name, strlen(name));
}

sb_param_use sb_query_add(sb_query *q, const char *name, const char *value, bool in_compartment,
                          bool paging, fhirsync_error *err)
{
    if (!strcmp(name, "_id")) {
        q->has_ids = true;
        if (!split_values(value, &q->ids, &q->nids))
            goto too_many;
        return SB_PARAM_USED;
    }
    if (!strcmp(name, "_lastUpdated") || !strcmp(name, "_since")) {
        bool since = name[1] == 's';
        const char *prefix = since ? "gt" : "eq";
        const char *v = value;
        static const char *const prefixes[] = {"eq", "ne", "gt", "ge", "lt", "le", "sa", "eb"};
        if (!since && strlen(v) > 2 && isalpha((unsigned char)v[0])) {
            for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
                if (!strncmp(v, prefixes[i], 2))
                    prefix = prefixes[i];
            if (strncmp(v, prefix, 2) != 0) {
                fs_err(err, FHIRSYNC_E_ARG, "%s: unknown prefix in '%.40s'", name, v);
                return SB_PARAM_BAD;
            }
            v += 2;
        }
        int64_t lo, hi;
        if (since ? !fs_parse_instant(v, &lo) : !sb_parse_date_range(v, &lo, &hi)) {
            fs_err(err, FHIRSYNC_E_ARG, "%s: '%.40s' is not a valid %s", name, v,
                   since ? "instant" : "date or instant");
            return SB_PARAM_BAD;
        }
        if (since)
            hi = lo + 1;
        if (!add_time(q, prefix, lo, hi))
            goto too_many;
        return SB_PARAM_USED;
    }
    if ((!strcmp(name, "patient") || !strcmp(name, "subject")) && in_compartment) {
        char **refs = NULL;
        size_t nrefs = 0;
        bool ok = split_values(value, &refs, &nrefs);
        for (size_t i = 0; ok && i < nrefs; i++) {
            const char *id = strip_patient_ref(refs[i]);
            if (strchr(id, '/')) {
                fs_err(err, FHIRSYNC_E_ARG, "%s: '%.60s' is not a Patient reference", name,
                       refs[i]);
                free_strings(refs, nrefs);
                return SB_PARAM_BAD;
            }
            ok = push_string(&q->patients, &q->npatients, id, strlen(id));
        }
        free_strings(refs, nrefs);
        q->has_patients = true;
        if (!ok)
            goto too_many;
        return SB_PARAM_USED;
    }
    if (!strcmp(name, "category") || !strcmp(name, "code") || !strcmp(name, "status")) {
        sb_token_list *t = name[0] == 'c' ? (name[1] == 'a' ? &q->category : &q->code) : &q->status;
        char **values = NULL;
        size_t nvalues = 0;
        bool ok = split_values(value, &values, &nvalues);
        for (size_t i = 0; ok && i < nvalues; i++)
            ok = add_token(t, values[i]);
        free_strings(values, nvalues);
        if (!ok)
            goto too_many;
        if (nvalues == 0) {
            fs_err(err, FHIRSYNC_E_ARG, "%s: empty value", name);
            return SB_PARAM_BAD;
        }
        return SB_PARAM_USED;
    }
    if (paging && !strcmp(name, "_count")) {
        long n;
        if (!fs_parse_long(value, &n) || n < 0) {
            fs_err(err, FHIRSYNC_E_ARG, "_count: '%.40s' is not a non-negative integer", value);
            return SB_PARAM_BAD;
        }
        q->count = n > SB_MAX_COUNT ? SB_MAX_COUNT : n;
        return SB_PARAM_USED;
    }
    if (paging && !strcmp(name, "_page_token")) {
        fs_free(q->page_token);
        if (!(q->page_token = fs_strdup(value)))
            goto too_many;
        return SB_PARAM_USED;
    }
    if (paging && !strcmp(name, "_total")) {
        if (!strcmp(value, "none"))
            q->total = false;
        else if (!strcmp(value, "accurate") || !strcmp(value, "estimate"))
            q->total = true;
        else {
            fs_err(err, FHIRSYNC_E_ARG, "_total: '%.40s' is not none, estimate or accurate", value);
            return SB_PARAM_BAD;
        }
        return SB_PARAM_USED;
    }
    if (paging && !strcmp(name, "_summary") && !strcmp(value, "count")) {
        q->summary_count = true;
        q->total = true;
        return SB_PARAM_USED;
    }
    if (paging && !strcmp(name, "_format")) {
        if (strstr(value, "json"))
            return SB_PARAM_USED;
        fs_err(err, FHIRSYNC_E_ARG, "_format: only JSON is supported");
        return SB_PARAM_BAD;
    }
    if (!remember_unknown(q, name))
        goto too_many;
    return SB_PARAM_UNKNOWN;
too_many:
    fs_err(err, FHIRSYNC_E_ARG, "%s: too many values (or out of memory)", name);
    return SB_PARAM_BAD;
}

/* ---- matching ------------------------------------------------------------------------------- */

bool sb_query_needs_content(const sb_query *q)
{
    return q->category.count || q->code.count || q->status.count;
}

bool sb_query_match_meta(const sb_query *q, bool is_patient_type, const sb_resource_meta *meta)
{
    if (q->has_ids) {
        bool any = false;
        for (size_t i = 0; i < q->nids && !any; i++)
            any = !strcmp(q->ids[i], meta->id);
        if (!any)
            return false;
    }
    for (size_t i = 0; i < q->ntimes; i++)
        if (!time_matches(&q->times[i], meta->last_updated))
            return false;
    if (q->has_patients) {
        const char *pid = is_patient_type ? meta->id : meta->patient_id;
        bool any = false;
        for (size_t i = 0; i < q->npatients && !any; i++)
            any = !strcmp(q->patients[i], pid);
        if (!any)
            return false;
    }
    return true;
}

bool sb_query_match_content(const sb_query *q, const json_t *resource)
{
    if (q->category.count && !element_matches(json_object_get(resource, "category"), &q->category))
        return false;
    if (q->code.count && !element_matches(json_object_get(resource, "code"), &q->code))
        return false;
    if (q->status.count && !element_matches(json_object_get(resource, "status"), &q->status))
        return false;
    return true;
}
