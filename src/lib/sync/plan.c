/* sync/plan.c: the decisions a sync makes before it sends anything, kept free of I/O so that the
 * unit tests can pin them down: which resource types (the `types` setting, else the US Core types
 * the granted scopes allow), which export level (Group, Patient, system, with fallback when the
 * server refuses one), the extra scope eClinicalWorks wants for Group export, the watermark
 * rules, when a crawl reconciles, and where the work folder of an endpoint lives. */
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sync/sync_internal.h"

/* US Core 6.1 profiles' base resource types, sorted. */
/* clang-format off */
const char *const fs_sync_us_core_types[] = {
    "AllergyIntolerance", "CarePlan", "CareTeam", "Condition", "Coverage", "Device",
    "DiagnosticReport", "DocumentReference", "Encounter", "Goal", "Immunization", "Location",
    "Medication", "MedicationDispense", "MedicationRequest", "Observation", "Organization",
    "Patient", "Practitioner", "PractitionerRole", "Procedure", "Provenance",
    "QuestionnaireResponse", "RelatedPerson", "ServiceRequest", "Specimen", NULL};
/* clang-format on */

/* Types outside the Patient compartment: a Patient or Group export does not return them, and a
 * per-patient crawl searches them without patient=. */
static const char *const non_compartment[] = {
    "Organization", "Practitioner", "PractitionerRole", "Location", "Medication", "Group", NULL};

/* ---- scopes ---------------------------------------------------------------------------------- */

/* Does one scope token ("system/Observation.rs?category=x") grant perm on type? */
static bool token_allows(const char *tok, size_t len, const char *type, char perm)
{
    static const char prefix[] = "system/";
    size_t plen = sizeof prefix - 1;
    if (len <= plen || memcmp(tok, prefix, plen) != 0)
        return false;
    const char *res = tok + plen;
    const char *end = tok + len;
    const char *q = memchr(res, '?', (size_t)(end - res));
    if (q)
        end = q;
    const char *dot = memchr(res, '.', (size_t)(end - res));
    if (!dot)
        return false;
    size_t rlen = (size_t)(dot - res);
    bool any = rlen == 1 && res[0] == '*';
    if (!any && (rlen != strlen(type) || memcmp(res, type, rlen) != 0))
        return false;
    const char *p = dot + 1;
    size_t n = (size_t)(end - p);
    if ((n == 4 && memcmp(p, "read", 4) == 0) || (n == 1 && p[0] == '*'))
        return true; /* v1: read covers read and search */
    /* v2: letters of "cruds", each at most once, in that order */
    static const char order[] = "cruds";
    size_t at = 0;
    bool has = false;
    for (size_t i = 0; i < n; i++) {
        const char *f = strchr(order + at, p[i]);
        if (!p[i] || !f)
            return false;
        at = (size_t)(f - order) + 1;
        if (p[i] == perm)
            has = true;
    }
    return n > 0 && has;
}

bool fs_sync_scope_allows(const char *scopes, const char *type, char perm)
{
    if (!scopes || !type)
        return false;
    const char *p = scopes;
    while (*p) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, " ");
        if (n && token_allows(p, n, type, perm))
            return true;
        p += n;
    }
    return false;
}

char *fs_sync_scope_as_system(const char *scopes)
{
    fs_buf b;
    fs_buf_init(&b);
    bool ok = fs_buf_append(&b, "", 0);
    for (const char *p = scopes ? scopes : ""; *p && ok;) {
        size_t n = strcspn(p, " ");
        size_t skip = strncmp(p, "patient/", 8) == 0 && n > 8 ? 8
                      : strncmp(p, "user/", 5) == 0 && n > 5  ? 5
                                                              : 0;
        ok = (!b.len || fs_buf_append_str(&b, " ")) &&
             (!skip || fs_buf_append_str(&b, "system/")) && fs_buf_append(&b, p + skip, n - skip);
        p += n;
        p += strspn(p, " ");
    }
    if (!ok) {
        fs_buf_free(&b);
        return NULL;
    }
    return fs_buf_steal(&b);
}

char *fs_sync_default_types(const char *granted, char perm)
{
    fs_buf b;
    fs_buf_init(&b);
    if (!fs_buf_append(&b, "", 0))
        return NULL;
    for (size_t i = 0; fs_sync_us_core_types[i]; i++) {
        if (!fs_sync_scope_allows(granted, fs_sync_us_core_types[i], perm))
            continue;
        if ((b.len && !fs_buf_append_str(&b, ",")) ||
            !fs_buf_append_str(&b, fs_sync_us_core_types[i])) {
            fs_buf_free(&b);
            return NULL;
        }
    }
    return fs_buf_steal(&b);
}

char *fs_sync_scope_named_types(const char *granted, char perm)
{
    fs_buf b;
    fs_buf_init(&b);
    if (!fs_buf_append(&b, "", 0))
        return NULL;
    static const char prefix[] = "system/";
    const char *p = granted ? granted : "";
    while (*p) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, " ");
        const char *dot = memchr(p, '.', n);
        size_t plen = sizeof prefix - 1;
        if (n > plen && dot && memcmp(p, prefix, plen) == 0) {
            size_t tlen = (size_t)(dot - p) - plen;
            char type[FS_SYNC_TYPE_MAX + 1];
            if (tlen > 0 && tlen <= FS_SYNC_TYPE_MAX && p[plen] != '*') {
                memcpy(type, p + plen, tlen);
                type[tlen] = '\0';
                bool listed = fs_sync_list_has(b.data, type); /* each type once */
                if (!listed && fs_sync_scope_allows(granted, type, perm) &&
                    ((b.len && !fs_buf_append_str(&b, ",")) || !fs_buf_append_str(&b, type))) {
                    fs_buf_free(&b);
                    return NULL;
                }
            }
        }
        p += n;
    }
    return fs_buf_steal(&b);
}

bool fs_sync_list_has(const char *list, const char *type)
{
    size_t tlen = type ? strlen(type) : 0;
    const char *p = list;
    while (p && *p && tlen) {
        size_t n = strcspn(p, ",");
        if (n == tlen && memcmp(p, type, n) == 0)
            return true;
        p += n;
        if (*p == ',')
            p++;
    }
    return false;
}

bool fs_sync_patient_compartment(const char *type)
{
    for (size_t i = 0; non_compartment[i]; i++)
        if (fs_streq(type, non_compartment[i]))
            return false;
    return type != NULL;
}

char *fs_sync_compartment_types(const char *types)
{
    fs_buf b;
    fs_buf_init(&b);
    if (!fs_buf_append(&b, "", 0))
        return NULL;
    const char *p = types;
    while (*p) {
        size_t n = strcspn(p, ",");
        char type[FS_SYNC_TYPE_MAX + 1];
        if (n > 0 && n <= FS_SYNC_TYPE_MAX) {
            memcpy(type, p, n);
            type[n] = '\0';
            if (fs_sync_patient_compartment(type) &&
                ((b.len && !fs_buf_append_str(&b, ",")) || !fs_buf_append_str(&b, type))) {
                fs_buf_free(&b);
                return NULL;
            }
        }
        p += n + (p[n] == ',' ? 1 : 0);
    }
    return fs_buf_steal(&b);
}

char *fs_sync_scope_with_group(const char *scope)
{
    static const char group[] = "system/Group.read";
    const char *p = scope ? scope : "";
    while (*p) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, " ");
        if (n == sizeof group - 1 && memcmp(p, group, n) == 0)
            return fs_strdup(scope);
        p += n;
    }
    fs_buf b;
    fs_buf_init(&b);
    if (!fs_buf_printf(&b, "%s%s%s", scope ? scope : "", scope && *scope ? " " : "", group)) {
        fs_buf_free(&b);
        return NULL;
    }
    return fs_buf_steal(&b);
}

/* ---- export levels --------------------------------------------------------------------------- */

size_t fs_sync_level_chain(bool has_group, fhirsync_export_level out[3])
{
    size_t n = 0;
    if (has_group)
        out[n++] = FHIRSYNC_EXPORT_GROUP;
    out[n++] = FHIRSYNC_EXPORT_PATIENT;
    out[n++] = FHIRSYNC_EXPORT_SYSTEM;
    return n;
}

size_t fhirsync_export_level_chain(const fhirsync_endpoint *ep, fhirsync_export_level out[3])
{
    const char *group = ep ? fhirsync_endpoint_get(ep, "group_id") : NULL;
    return fs_sync_level_chain(group && *group, out);
}

bool fs_sync_level_refused(fhirsync_code code, long http_status, const char *message,
                           bool kicked_off)
{
    if (kicked_off)
        return false; /* the server took the request: a later failure is not about the level */
    switch (http_status) {
    case 400:
    case 404:
    case 405:
    case 422:
    case 501: return true;
    default: break;
    }
    if (code == FHIRSYNC_E_UNSUPPORTED || code == FHIRSYNC_E_NOT_FOUND ||
        code == FHIRSYNC_E_BAD_REQUEST)
        return true;
    /* a 501 or an OperationOutcome "not-supported" behind a generic HTTP or server error */
    if (code == FHIRSYNC_E_HTTP || code == FHIRSYNC_E_SERVER)
        return message && (strstr(message, "not-supported") || strstr(message, "not supported") ||
                           strstr(message, "HTTP 501"));
    return false;
}

const char *fs_sync_level_name(fhirsync_export_level level)
{
    switch (level) {
    case FHIRSYNC_EXPORT_GROUP: return "group";
    case FHIRSYNC_EXPORT_PATIENT: return "patient";
    case FHIRSYNC_EXPORT_SYSTEM: return "system";
    }
    return "system";
}

/* ---- watermarks ------------------------------------------------------------------------------ */

void fs_sync_crawl_watermark(int64_t start_epoch, int margin_s, char *buf, size_t size)
{
    int64_t margin = margin_s > 0 ? margin_s : 0;
    fs_format_instant(start_epoch - margin, buf, size);
}

bool fs_sync_bulk_watermark(const char *transaction_time, const char *kickoff_time, int margin_s,
                            char *buf, size_t size)
{
    int64_t margin = margin_s > 0 ? margin_s : 0;
    int64_t tt = 0, kicked = 0;
    bool has_tt = transaction_time && fs_parse_instant(transaction_time, &tt);
    bool has_kick = kickoff_time && fs_parse_instant(kickoff_time, &kicked);
    if (!has_tt && !has_kick)
        return false;
    if (has_tt && has_kick && tt <= kicked - margin) {
        snprintf(buf, size, "%s", transaction_time);
        return true;
    }
    fs_format_instant((has_kick ? kicked : tt) - margin, buf, size);
    return true;
}

bool fs_sync_instant_later(const char *candidate, const char *current)
{
    int64_t a, b;
    if (!candidate || !fs_parse_instant(candidate, &a))
        return false;
    if (!current || !fs_parse_instant(current, &b))
        return true;
    if (a != b)
        return a > b;
    /* same second: fractions in the same layout compare as text */
    return strlen(candidate) == strlen(current) && strcmp(candidate, current) > 0;
}

bool fs_sync_reconcile_due(bool full, bool first_run, bool asked, int every,
                           int runs_since_reconcile)
{
    if (full || first_run || asked)
        return true;
    return every > 0 && runs_since_reconcile >= every - 1;
}

/* ---- names and folders ----------------------------------------------------------------------- */

char *fs_sync_safe_name(const char *endpoint)
{
    fs_buf b;
    fs_buf_init(&b);
    bool ok = fs_buf_append(&b, "", 0);
    for (const unsigned char *p = (const unsigned char *)(endpoint ? endpoint : ""); ok && *p;
         p++) {
        bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                     (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' ||
                     (*p == '.' && p != (const unsigned char *)endpoint);
        ok = plain ? fs_buf_append(&b, p, 1) : fs_buf_printf(&b, "%%%02X", *p);
    }
    if (ok && b.len == 0)
        ok = fs_buf_append_str(&b, "default");
    if (!ok) {
        fs_buf_free(&b);
        return NULL;
    }
    return fs_buf_steal(&b);
}

char *fs_sync_work_dir(const char *store_location, bool postgresql, const char *work_dir,
                       const char *endpoint)
{
    char *safe = fs_sync_safe_name(endpoint);
    if (!safe)
        return NULL;
    fs_buf b;
    fs_buf_init(&b);
    bool ok;
    if (work_dir && *work_dir)
        ok = fs_buf_printf(&b, "%s/%s", work_dir, safe);
    else if (postgresql || !store_location || !*store_location ||
             strcmp(store_location, ":memory:") == 0)
        ok = fs_buf_printf(&b, "fhirsync.work/%s", safe);
    else
        ok = fs_buf_printf(&b, "%s.work/%s", store_location, safe);
    fs_free(safe);
    if (!ok) {
        fs_buf_free(&b);
        return NULL;
    }
    return fs_buf_steal(&b);
}

static bool valid_type(const char *s, size_t n)
{
    if (n == 0 || n > FS_SYNC_TYPE_MAX || s[0] < 'A' || s[0] > 'Z')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
              (s[i] >= '0' && s[i] <= '9')))
            return false;
    return true;
}

static bool valid_id(const char *s, size_t n)
{
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '.'))
            return false;
    return true;
}

bool fs_sync_parse_delete_url(const char *url, char *type, size_t type_size, char *id,
                              size_t id_size)
{
    if (!url || !type || !id || type_size == 0 || id_size == 0)
        return false;
    size_t end = strcspn(url, "?#");
    /* collect up to the last four segments: Type/id or Type/id/_history/v */
    const char *seg[4];
    size_t seglen[4], nseg = 0;
    size_t i = 0;
    while (i < end) {
        while (i < end && url[i] == '/')
            i++;
        size_t start = i;
        while (i < end && url[i] != '/')
            i++;
        if (i > start) {
            if (nseg == 4) {
                memmove(seg, seg + 1, 3 * sizeof *seg);
                memmove(seglen, seglen + 1, 3 * sizeof *seglen);
                nseg = 3;
            }
            seg[nseg] = url + start;
            seglen[nseg++] = i - start;
        }
    }
    if (nseg >= 4 && seglen[nseg - 2] == 8 && memcmp(seg[nseg - 2], "_history", 8) == 0)
        nseg -= 2;
    if (nseg < 2)
        return false;
    const char *t = seg[nseg - 2], *d = seg[nseg - 1];
    size_t tl = seglen[nseg - 2], dl = seglen[nseg - 1];
    if (!valid_type(t, tl) || !valid_id(d, dl) || tl >= type_size || dl >= id_size)
        return false;
    memcpy(type, t, tl);
    type[tl] = '\0';
    memcpy(id, d, dl);
    id[dl] = '\0';
    return true;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    int rc = flag == FTW_DP ? rmdir(path) : unlink(path);
    return rc != 0 && errno != ENOENT ? -1 : 0;
}

bool fs_sync_rmtree(const char *path)
{
    if (!path || !*path)
        return false;
    if (access(path, F_OK) != 0)
        return true;
    return nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0;
}
