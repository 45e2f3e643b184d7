/* sandbox/fhir.c: the FHIR REST side of the sandbox: the SMART configuration, the
 * CapabilityStatement, read (GET /fhir/Type/id) and search (GET /fhir/Type?..., POST
 * /fhir/Type/_search) over the data source, with paging by an opaque cursor.
 *
 * Search walks the type in streaming order (patients, then slots) from the cursor, so a page
 * costs O(page) plus what the filters skip; the cursor in the next link (_page_token) is the
 * (bucket, slot) to continue from. Unknown parameters are ignored (FHIR's default lenient
 * handling) unless the client sends Prefer: handling=strict. The paging faults
 * (next-other-origin, next-loop, malformed-bundle) are applied here. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sandbox.h"

#define SCAN_BUDGET 2000000u /* resources examined per page before giving a short page */
#define PEEK_BUDGET 20000u   /* resources examined after a full page to see if more exist */

bool sb_fhir_strict(const sb_request *req)
{
    return sb_prefer_has(sb_req_header(req, "Prefer"), "handling=strict");
}

/* Whether an Accept header allows a JSON answer (absent: yes). */
static bool accepts_json(const char *accept)
{
    if (!accept || !*accept)
        return true;
    return strstr(accept, "json") || strstr(accept, "*/*") || strstr(accept, "application/*");
}

static bool append_json_string(fs_buf *b, const char *s)
{
    json_t *v = json_string(s);
    char *text = v ? json_dumps(v, JSON_ENCODE_ANY) : NULL;
    bool ok = text && fs_buf_append_str(b, text);
    fs_free(text); /* json_dumps allocates with jansson's allocator: fs_malloc */
    json_decref(v);
    return ok;
}

/* ---- discovery ------------------------------------------------------------------------------ */

void sb_fhir_handle_smart_config(sb_server *sb, sb_request *req, sb_reply *reply)
{
    json_t *algs =
        sb->cfg.rs384_only ? json_pack("[s]", "RS384") : json_pack("[s, s]", "RS384", "ES384");
    json_t *doc = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:[s, s, s], s:[s, s, s, s], s:o*, s:[s], s:[s], s:[s], "
        "s:[s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s], "
        "s:[s, s, s, s, s, s, s, s, s, s, s, s, s]}",
        "issuer", sb->issuer, "jwks_uri", sb->jwks_url, "authorization_endpoint", sb->authorize_url,
        "token_endpoint", sb->token_url, "registration_endpoint", sb->register_url,
        "grant_types_supported", "client_credentials", "authorization_code", "refresh_token",
        "token_endpoint_auth_methods_supported", "private_key_jwt", "client_secret_basic",
        "client_secret_post", "none", "token_endpoint_auth_signing_alg_values_supported", algs,
        "response_types_supported", "code", "code_challenge_methods_supported", "S256",
        "id_token_signing_alg_values_supported", "RS256", "scopes_supported", "system/*.read",
        "system/*.rs", "system/*.cruds", "system/Patient.read", "system/Patient.rs", "openid",
        "fhirUser", "profile", "offline_access", "online_access", "launch/patient",
        "patient/*.read", "patient/*.rs", "patient/*.cruds", "user/*.read", "user/*.rs",
        "user/*.cruds", "capabilities", "client-confidential-asymmetric",
        "client-confidential-symmetric", "client-public", "launch-standalone",
        "context-standalone-patient", "permission-offline", "permission-online",
        "permission-patient", "permission-user", "permission-v1", "permission-v2",
        "sso-openid-connect", "context-banner");
    if (!doc) {
        sb_reply_outcome(reply, 500, "exception", "out of memory");
        return;
    }
    sb_reply_json(reply, 200, SB_JSON, doc);
    json_decref(doc);
}

void sb_fhir_handle_openid_config(sb_server *sb, sb_request *req, sb_reply *reply)
{
    json_t *doc = json_pack(
        "{s:s, s:s, s:s, s:s, s:[s], s:[s], s:[s], s:[s, s, s, s], s:[s, s, s]}", "issuer",
        sb->issuer, "authorization_endpoint", sb->authorize_url, "token_endpoint", sb->token_url,
        "jwks_uri", sb->jwks_url, "response_types_supported", "code", "subject_types_supported",
        "public", "id_token_signing_alg_values_supported", "RS256",
        "token_endpoint_auth_methods_supported", "private_key_jwt", "client_secret_basic",
        "client_secret_post", "none", "scopes_supported", "openid", "fhirUser", "profile");
    if (!doc) {
        sb_reply_outcome(reply, 500, "exception", "out of memory");
        return;
    }
    sb_reply_json(reply, 200, SB_JSON, doc);
    json_decref(doc);
}

void sb_fhir_handle_metadata(sb_server *sb, sb_request *req, sb_reply *reply)
{
    char now[32];
    fs_format_instant(fs_now(), now, sizeof now);
    json_t *resources = json_array();
    size_t ntypes = sb_data_type_count(sb->data);
    /* capability-fewer-types: some servers list fewer types than their export returns */
    char client[128];
    sb_auth_peek_client(sb, req, client, sizeof client);
    bool fewer = sb_quirk_on(sb->quirks, SB_QUIRK_CAPABILITY_FEWER_TYPES, client, NULL, NULL);
    for (size_t t = 0; resources && t < ntypes; t++) {
        const char *name = sb_data_type_name(sb->data, t);
        if (fewer && (!strcmp(name, "Immunization") || !strcmp(name, "Practitioner")))
            continue;
        json_t *params = json_pack("[{s:s, s:s}, {s:s, s:s}]", "name", "_id", "type", "token",
                                   "name", "_lastUpdated", "type", "date");
        if (sb_data_type_in_compartment(sb->data, t) && strcmp(name, "Patient") != 0)
            json_array_append_new(params,
                                  json_pack("{s:s, s:s}", "name", "patient", "type", "reference"));
        json_t *res = json_pack("{s:s, s:[{s:s}, {s:s}], s:o}", "type", name, "interaction", "code",
                                "read", "code", "search-type", "searchParam", params);
        if (res && !strcmp(name, "Patient"))
            json_object_set_new(res, "operation",
                                json_pack("[{s:s, s:s}]", "name", "export", "definition",
                                          "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"
                                          "patient-export"));
        if (res && !strcmp(name, "Group"))
            json_object_set_new(res, "operation",
                                json_pack("[{s:s, s:s}]", "name", "export", "definition",
                                          "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"
                                          "group-export"));
        json_array_append_new(resources, res);
    }
    json_t *security = json_pack(
        "{s:[{s:[{s:s, s:s}]}], s:[{s:s, s:[{s:s, s:s}, {s:s, s:s}]}]}", "service", "coding",
        "system", "http://terminology.hl7.org/CodeSystem/restful-security-service", "code",
        "SMART-on-FHIR", "extension", "url",
        "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris", "extension", "url",
        "token", "valueUri", sb->token_url, "url", "register", "valueUri", sb->register_url);
    json_t *doc = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:[s], s:{s:s, s:s}, s:{s:s, s:s}, s:[s],"
        " s:[{s:s, s:o*, s:o*, s:[{s:s, s:s}]}]}",
        "resourceType", "CapabilityStatement", "status", "active", "date", now, "kind", "instance",
        "fhirVersion", "4.0.1", "format", "json", "software", "name", "fhirsync-sandbox", "version",
        fhirsync_version(), "implementation", "description", "fhirsync sandbox EHR", "url",
        sb->base_url, "instantiates",
        "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data", "rest", "mode", "server",
        "security", security, "resource", resources, "operation", "name", "export", "definition",
        "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export");
    if (!doc) {
        sb_reply_outcome(reply, 500, "exception", "out of memory");
        return;
    }
    sb_reply_json(reply, 200, SB_FHIR_JSON, doc);
    json_decref(doc);
}

/* ---- cursors -------------------------------------------------------------------------------- */

static char *cursor_encode(const char *type, uint32_t bucket, uint32_t slot)
{
    char raw[128];
    int n = snprintf(raw, sizeof raw, "c1.%s.%u.%u", type, bucket, slot);
    if (n < 0 || (size_t)n >= sizeof raw)
        return NULL;
    return fs_b64url_encode((const unsigned char *)raw, (size_t)n);
}

static bool cursor_decode(const char *token, const char *type, uint32_t *bucket, uint32_t *slot)
{
    unsigned char *raw = NULL;
    size_t len = 0;
    if (strlen(token) > 200 || !fs_b64url_decode(token, strlen(token), &raw, &len))
        return false;
    char text[160];
    bool ok = false;
    if (len < sizeof text) {
        memcpy(text, raw, len);
        text[len] = '\0';
        char prefix[80];
        snprintf(prefix, sizeof prefix, "c1.%s.", type);
        if (strlen(text) == len && fs_starts_with(text, prefix)) {
            char *end = NULL;
            const char *p = text + strlen(prefix);
            unsigned long long b = strtoull(p, &end, 10);
            if (end != p && *end == '.' && b <= UINT32_MAX) {
                p = end + 1;
                unsigned long long s = strtoull(p, &end, 10);
                if (end != p && *end == '\0' && s <= UINT32_MAX && *p != '-') {
                    *bucket = (uint32_t)b;
                    *slot = (uint32_t)s;
                    ok = true;
                }
            }
        }
    }
    fs_free(raw);
    return ok;
}

/* ---- search --------------------------------------------------------------------------------- */

typedef struct search_ctx {
    sb_server *sb;
    sb_request *req;
    size_t type;
    const char *type_name;
    bool is_patient_type;
    sb_query q;
    uint32_t *buckets; /* patient restriction, sorted; NULL none */
    size_t nbuckets;
    bool restricted; /* a patient filter matched no known patient */
} search_ctx;

/* Does the resource at (bucket, slot) match? Appends its JSON to `json` when it does and `json`
 * is not NULL. -1 on failure. */
static int match_at(search_ctx *c, uint32_t bucket, uint32_t slot, fs_buf *json,
                    sb_resource_meta *meta)
{
    const sb_data *d = c->sb->data;
    if (!sb_data_meta(d, c->type, bucket, slot, meta))
        return -1;
    if (meta->deleted || !sb_query_match_meta(&c->q, c->is_patient_type, meta))
        return 0;
    bool content = sb_query_needs_content(&c->q);
    if (!json && !content)
        return 1;
    fs_buf local;
    fs_buf_init(&local);
    fs_buf *out = json ? json : &local;
    size_t start = out->len;
    if (!sb_data_get(d, c->type, bucket, slot, out, meta)) {
        fs_buf_free(&local);
        return -1;
    }
    int result = 1;
    if (meta->deleted) {
        result = 0;
    } else if (content) {
        json_t *res = json_loadb(out->data + start, out->len - start, 0, NULL);
        result = res && sb_query_match_content(&c->q, res) ? 1 : 0;
        json_decref(res);
    }
    if (result == 0 && json) {
        out->len = start;
        out->data[start] = '\0';
    }
    fs_buf_free(&local);
    return result;
}

/* Append "name=value&..." of the understood parameters (never _page_token). */
static bool append_query(fs_buf *url, const sb_params *params, const sb_query *q)
{
    bool first = true;
    for (size_t i = 0; i < params->count; i++) {
        const char *name = params->items[i].name;
        bool unknown = false;
        for (size_t k = 0; k < q->nunknown && !unknown; k++)
            unknown = !strcmp(q->unknown[k], name);
        if (unknown || !strcmp(name, "_page_token"))
            continue;
        if (!fs_buf_append_str(url, first ? "?" : "&") || !fs_buf_append_urlencoded(url, name) ||
            !fs_buf_append(url, "=", 1) || !fs_buf_append_urlencoded(url, params->items[i].value))
            return false;
        first = false;
    }
    return true;
}

static char *page_url(const char *base, const char *type, const sb_params *params,
                      const sb_query *q, const char *cursor)
{
    fs_buf url;
    fs_buf_init(&url);
    bool ok = fs_buf_printf(&url, "%s/%s", base, type) && append_query(&url, params, q);
    if (ok && cursor)
        ok = fs_buf_append_str(&url, strchr(url.data, '?') ? "&" : "?") &&
             fs_buf_append_str(&url, "_page_token=") && fs_buf_append_str(&url, cursor);
    if (!ok) {
        fs_buf_free(&url);
        return NULL;
    }
    return fs_buf_steal(&url);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Resolve the patient filter into a sorted list of buckets. */
static bool resolve_patients(search_ctx *c)
{
    if (!c->q.has_patients)
        return true;
    c->buckets = fs_malloc((c->q.npatients + 1) * sizeof *c->buckets);
    if (!c->buckets)
        return false;
    for (size_t i = 0; i < c->q.npatients; i++) {
        uint32_t b;
        if (sb_data_patient_bucket(c->sb->data, c->q.patients[i], &b))
            c->buckets[c->nbuckets++] = b;
    }
    qsort(c->buckets, c->nbuckets, sizeof *c->buckets, cmp_u32);
    size_t u = 0;
    for (size_t i = 0; i < c->nbuckets; i++)
        if (u == 0 || c->buckets[u - 1] != c->buckets[i])
            c->buckets[u++] = c->buckets[i];
    c->nbuckets = u;
    c->restricted = true;
    return true;
}

/* With _id: the sorted positions of the named resources (few), as (bucket << 32 | slot). */
static uint64_t *id_positions(search_ctx *c, size_t *count)
{
    uint64_t *pos = fs_malloc((c->q.nids + 1) * sizeof *pos);
    *count = 0;
    if (!pos)
        return NULL;
    for (size_t i = 0; i < c->q.nids; i++) {
        uint32_t b, s;
        if (sb_data_find(c->sb->data, c->type, c->q.ids[i], &b, &s))
            pos[(*count)++] = (uint64_t)b << 32 | s;
    }
    for (size_t i = 1; i < *count; i++) /* insertion sort: a few ids */
        for (size_t j = i; j > 0 && pos[j - 1] > pos[j]; j--) {
            uint64_t t = pos[j];
            pos[j] = pos[j - 1];
            pos[j - 1] = t;
        }
    return pos;
}

/* An iterator over either the id positions or a walk. */
typedef struct scan {
    uint64_t *positions;
    size_t npositions, at;
    sb_walk walk;
} scan;

static bool scan_next(scan *s, uint32_t *bucket, uint32_t *slot)
{
    if (s->positions) {
        if (s->at >= s->npositions)
            return false;
        *bucket = (uint32_t)(s->positions[s->at] >> 32);
        *slot = (uint32_t)s->positions[s->at];
        s->at++;
        return true;
    }
    return sb_walk_next(&s->walk, bucket, slot);
}

/* The cursor of the next position to look at; false at the end. */
static bool scan_cursor(scan *s, uint32_t *bucket, uint32_t *slot)
{
    if (s->positions) {
        if (s->at >= s->npositions)
            return false;
        *bucket = (uint32_t)(s->positions[s->at] >> 32);
        *slot = (uint32_t)s->positions[s->at];
        return true;
    }
    sb_walk_position(&s->walk, bucket, slot);
    return *bucket != UINT32_MAX;
}

static void scan_start(search_ctx *c, scan *s, uint32_t bucket, uint32_t slot)
{
    memset(s, 0, sizeof *s);
    if (c->q.has_ids) {
        s->positions = id_positions(c, &s->npositions);
        uint64_t from = (uint64_t)bucket << 32 | slot;
        while (s->at < s->npositions && s->positions[s->at] < from)
            s->at++;
        return;
    }
    sb_walk_init(&s->walk, c->sb->data, c->type, c->restricted ? c->buckets : NULL, c->nbuckets,
                 bucket, slot);
}

static bool append_entry(search_ctx *c, fs_buf *bundle, const char *resource, size_t len,
                         const sb_resource_meta *meta, bool first, bool drop_type)
{
    fs_buf full;
    fs_buf_init(&full);
    bool ok = fs_buf_printf(&full, "%s/%s/%s", c->sb->base_url, c->type_name, meta->id) &&
              fs_buf_append_str(bundle, first ? "" : ",") &&
              fs_buf_append_str(bundle, "{\"fullUrl\":") && append_json_string(bundle, full.data) &&
              fs_buf_append_str(bundle, ",\"resource\":");
    fs_buf_free(&full);
    if (ok && drop_type) {
        json_t *res = json_loadb(resource, len, 0, NULL);
        json_object_del(res, "resourceType");
        char *text = res ? fs_json_dump(res) : NULL;
        ok = text && fs_buf_append_str(bundle, text);
        fs_free(text);
        json_decref(res);
    } else if (ok) {
        ok = fs_buf_append(bundle, resource, len);
    }
    return ok && fs_buf_append_str(bundle, ",\"search\":{\"mode\":\"match\"}}");
}

static void run_search(search_ctx *c, const sb_params *params, const char *link_base,
                       sb_reply *reply)
{
    sb_server *sb = c->sb;
    sb_request *req = c->req;
    fs_buf bundle, resource;
    fs_buf_init(&bundle);
    fs_buf_init(&resource);
    char *self = NULL, *next = NULL, *cursor = NULL, *bundle_id = NULL;
    scan s;
    memset(&s, 0, sizeof s);
    uint32_t start_bucket = 0, start_slot = 0;
    if (c->q.page_token &&
        !cursor_decode(c->q.page_token, c->type_name, &start_bucket, &start_slot)) {
        sb_reply_outcome(reply, 400, "invalid", "_page_token is not a cursor of a %s search",
                         c->type_name);
        return;
    }
    if (!resolve_patients(c))
        goto oom;
    bool malformed = req->fault.kind == SB_FAULT_MALFORMED_BUNDLE;
    bool entry_object = malformed && !strcmp(req->fault.variant, "entry-not-array");
    bool drop_type = malformed && !entry_object;
    long limit = c->q.summary_count ? 0 : c->q.count;
    if (entry_object && limit > 1)
        limit = 1; /* the malformed variant has one entry, as an object */
    uint64_t total = 0;

    sb_data_read_lock(sb->data);
    bool failed = false;
    if (c->q.total) {
        scan all;
        scan_start(c, &all, 0, 0);
        uint32_t b, sl;
        sb_resource_meta meta;
        while (!failed && scan_next(&all, &b, &sl)) {
            int m = match_at(c, b, sl, NULL, &meta);
            failed = m < 0;
            total += m > 0;
        }
        fs_free(all.positions);
    }
    if (!(bundle_id = fs_random_id(12)))
        failed = true;
    char now[32];
    fs_format_instant(fs_now(), now, sizeof now);
    if (!failed && !fs_buf_printf(&bundle,
                                  "{\"resourceType\":\"Bundle\",\"id\":\"%s\",\"meta\":"
                                  "{\"lastUpdated\":\"%s\"},\"type\":\"searchset\"",
                                  bundle_id, now))
        failed = true;
    if (!failed && c->q.total &&
        !fs_buf_printf(&bundle, ",\"total\":%llu", (unsigned long long)total))
        failed = true;
    fs_buf entries;
    fs_buf_init(&entries);
    long found = 0;
    bool more = false;
    uint32_t next_bucket = 0, next_slot = 0;
    if (!failed && limit > 0) {
        scan_start(c, &s, start_bucket, start_slot);
        uint32_t b, sl;
        unsigned examined = 0;
        sb_resource_meta meta;
        while (!failed && found < limit && examined < SCAN_BUDGET && scan_next(&s, &b, &sl)) {
            examined++;
            fs_buf_reset(&resource);
            int m = match_at(c, b, sl, &resource, &meta);
            if (m < 0) {
                failed = true;
            } else if (m > 0) {
                if (!append_entry(c, &entries, resource.data, resource.len, &meta, found == 0,
                                  drop_type && found == 0))
                    failed = true;
                found++;
            }
        }
        /* more? look ahead a little so that the last page has no next link */
        if (!failed && scan_cursor(&s, &next_bucket, &next_slot)) {
            more = examined >= SCAN_BUDGET;
            unsigned peeked = 0;
            while (!failed && !more && peeked < PEEK_BUDGET &&
                   scan_cursor(&s, &next_bucket, &next_slot)) {
                if (!scan_next(&s, &b, &sl))
                    break;
                peeked++;
                int m = match_at(c, b, sl, NULL, &meta);
                failed = m < 0;
                more = m > 0;
            }
            if (!more && peeked >= PEEK_BUDGET)
                more = scan_cursor(&s, &next_bucket, &next_slot);
        }
    }
    sb_data_read_unlock(sb->data);
    if (failed) {
        fs_buf_free(&entries);
        goto oom;
    }
    const char *cursor_now = c->q.page_token;
    self = page_url(link_base, c->type_name, params, &c->q, cursor_now);
    bool loop = req->fault.kind == SB_FAULT_NEXT_LOOP;
    if (more || loop) {
        if (loop) {
            next = self ? fs_strdup(self) : NULL;
        } else {
            char other[200];
            const char *base = link_base;
            if (req->fault.kind == SB_FAULT_NEXT_OTHER_ORIGIN) {
                snprintf(other, sizeof other, "%s/fhir", sb->storage_base_url);
                base = other;
            }
            cursor = cursor_encode(c->type_name, next_bucket, next_slot);
            next = cursor ? page_url(base, c->type_name, params, &c->q, cursor) : NULL;
        }
        if (!next) {
            fs_buf_free(&entries);
            goto oom;
        }
    }
    bool ok = self && fs_buf_append_str(&bundle, ",\"link\":[{\"relation\":\"self\",\"url\":") &&
              append_json_string(&bundle, self) && fs_buf_append_str(&bundle, "}");
    if (ok && next)
        ok = fs_buf_append_str(&bundle, ",{\"relation\":\"next\",\"url\":") &&
             append_json_string(&bundle, next) && fs_buf_append_str(&bundle, "}");
    ok = ok && fs_buf_append_str(&bundle, "]");
    if (ok && found > 0) {
        ok = entry_object ? fs_buf_append_str(&bundle, ",\"entry\":") &&
                                fs_buf_append(&bundle, entries.data, entries.len)
                          : fs_buf_append_str(&bundle, ",\"entry\":[") &&
                                fs_buf_append(&bundle, entries.data, entries.len) &&
                                fs_buf_append_str(&bundle, "]");
    }
    fs_buf_free(&entries);
    if (!ok || !fs_buf_append_str(&bundle, "}"))
        goto oom;
    sb_reply_text(reply, 200, SB_FHIR_JSON, bundle.data);
    goto out;
oom:
    sb_reply_outcome(reply, 500, "exception", "out of memory or a data-source failure");
out:
    fs_free(s.positions);
    fs_free(self);
    fs_free(next);
    fs_free(cursor);
    fs_free(bundle_id);
    fs_buf_free(&bundle);
    fs_buf_free(&resource);
}

/* A token with a patient context (an app's launch/patient) whose only grant on `type` comes from
 * patient/ scopes sees that patient's compartment only; user/ or system/ scopes see everything. */
static bool patient_bound(const sb_grant *grant, const char *type, unsigned perms)
{
    return grant->patient[0] &&
           !sb_scopes_grant_in(grant->scope, SB_SCOPE_SYSTEM | SB_SCOPE_USER, type, perms);
}

/* Restrict a search to the grant's patient: Patient by _id, compartment types by patient; a
 * search that names another patient is refused (403). Other types are not restricted. */
static bool restrict_search(search_ctx *c, const sb_grant *grant, bool in_compartment,
                            sb_reply *reply)
{
    if (!patient_bound(grant, c->type_name, SB_PERM_S) || !(c->is_patient_type || in_compartment))
        return true;
    bool named = c->is_patient_type ? c->q.has_ids : c->q.has_patients;
    size_t n = c->is_patient_type ? c->q.nids : c->q.npatients;
    char **ids = c->is_patient_type ? c->q.ids : c->q.patients;
    for (size_t i = 0; named && i < n; i++) {
        if (strcmp(ids[i], grant->patient) != 0) {
            sb_reply_outcome(reply, 403, "forbidden",
                             "the token's patient context is %s: %s of another patient (%.64s) "
                             "needs user/ or system/ scopes",
                             grant->patient, c->type_name, ids[i]);
            return false;
        }
    }
    fhirsync_error err;
    if (!named && sb_query_add(&c->q, c->is_patient_type ? "_id" : "patient", grant->patient,
                               in_compartment, true, &err) != SB_PARAM_USED) {
        sb_reply_outcome(reply, 500, "exception", "cannot restrict the search to the patient");
        return false;
    }
    return true;
}

/* Common part of GET, POST _search and the storage copy. */
static void search(sb_server *sb, sb_request *req, sb_reply *reply, const sb_params *params,
                   bool need_token, const char *link_base)
{
    search_ctx c;
    memset(&c, 0, sizeof c);
    sb_query_init(&c.q);
    c.sb = sb;
    c.req = req;
    sb_grant grant;
    fhirsync_error err;
    fs_err_clear(&err);
    if (need_token && !sb_auth_require(sb, req, reply, NULL, 0, &grant))
        goto out;
    int type = sb_data_type_index(sb->data, req->captures[0]);
    if (type < 0) {
        sb_reply_outcome(reply, 404, "not-supported", "unknown resource type %.64s",
                         req->captures[0]);
        goto out;
    }
    c.type = (size_t)type;
    c.type_name = sb_data_type_name(sb->data, c.type);
    c.is_patient_type = type == sb_data_patient_type(sb->data);
    if (need_token && !sb_scopes_grant(grant.scope, c.type_name, SB_PERM_S)) {
        sb_auth_require(sb, req, reply, c.type_name, SB_PERM_S, NULL);
        goto out;
    }
    if (!accepts_json(sb_req_header(req, "Accept"))) {
        sb_reply_outcome(reply, 406, "not-supported",
                         "only JSON (application/fhir+json) is "
                         "served");
        goto out;
    }
    bool in_compartment = sb_data_type_in_compartment(sb->data, c.type);
    for (size_t i = 0; i < params->count; i++) {
        sb_param_use use = sb_query_add(&c.q, params->items[i].name, params->items[i].value,
                                        in_compartment, true, &err);
        if (use == SB_PARAM_BAD) {
            sb_reply_outcome(reply, 400, "invalid", "%s", err.message);
            goto out;
        }
    }
    if (need_token && !restrict_search(&c, &grant, in_compartment, reply))
        goto out;
    if (c.q.nunknown && sb_fhir_strict(req)) {
        fs_buf names;
        fs_buf_init(&names);
        for (size_t i = 0; i < c.q.nunknown; i++)
            fs_buf_printf(&names, "%s%s", i ? ", " : "", c.q.unknown[i]);
        sb_reply_outcome(reply, 400, "not-supported",
                         "unknown or unsupported search "
                         "parameter(s) for %s with handling=strict: %s",
                         c.type_name, names.data ? names.data : "");
        fs_buf_free(&names);
        goto out;
    }
    run_search(&c, params, link_base, reply);
out:
    fs_free(c.buckets);
    sb_query_free(&c.q);
}

void sb_fhir_handle_search(sb_server *sb, sb_request *req, sb_reply *reply)
{
    search(sb, req, reply, &req->query, true, sb->base_url);
}

void sb_fhir_handle_search_post(sb_server *sb, sb_request *req, sb_reply *reply)
{
    sb_params params;
    sb_params_init(&params);
    fhirsync_error err;
    if (!sb_media_type_is(sb_req_header(req, "Content-Type"),
                          "application/x-www-form-urlencoded")) {
        sb_reply_outcome(reply, 415, "not-supported",
                         "POST _search takes "
                         "application/x-www-form-urlencoded");
        goto out;
    }
    bool ok = true;
    for (size_t i = 0; ok && i < req->query.count; i++)
        ok = sb_params_add(&params, req->query.items[i].name, req->query.items[i].value);
    if (!ok ||
        !sb_params_parse_form(&params, req->body.data ? req->body.data : "", req->body.len, &err)) {
        sb_reply_outcome(reply, 400, "invalid", "the form body is malformed");
        goto out;
    }
    search(sb, req, reply, &params, true, sb->base_url);
out:
    sb_params_free(&params);
}

void sb_fhir_handle_storage_search(sb_server *sb, sb_request *req, sb_reply *reply)
{
    char base[200];
    snprintf(base, sizeof base, "%s/fhir", sb->storage_base_url);
    /* the storage origin serves the page without a token (a client must not send it there) */
    search(sb, req, reply, &req->query, false, base);
}

/* ---- read ----------------------------------------------------------------------------------- */

void sb_fhir_handle_read(sb_server *sb, sb_request *req, sb_reply *reply)
{
    sb_grant grant;
    if (!sb_auth_require(sb, req, reply, NULL, 0, &grant))
        return;
    const char *type_name = req->captures[0], *id = req->captures[1];
    int type = sb_data_type_index(sb->data, type_name);
    if (type < 0) {
        sb_reply_outcome(reply, 404, "not-supported", "unknown resource type %.64s", type_name);
        return;
    }
    if (!sb_scopes_grant(grant.scope, type_name, SB_PERM_R)) {
        sb_auth_require(sb, req, reply, type_name, SB_PERM_R, NULL);
        return;
    }
    if (!accepts_json(sb_req_header(req, "Accept"))) {
        sb_reply_outcome(reply, 406, "not-supported",
                         "only JSON (application/fhir+json) is "
                         "served");
        return;
    }
    uint32_t bucket, slot;
    fs_buf body;
    fs_buf_init(&body);
    sb_resource_meta meta;
    sb_data_read_lock(sb->data);
    bool found = sb_data_find(sb->data, (size_t)type, id, &bucket, &slot);
    bool ok = found && sb_data_get(sb->data, (size_t)type, bucket, slot, &body, &meta);
    sb_data_read_unlock(sb->data);
    if (!found || (ok && strcmp(meta.id, id) != 0)) {
        sb_reply_outcome(reply, 404, "not-found", "%.64s/%.64s is not known", type_name, id);
    } else if (!ok) {
        sb_reply_outcome(reply, 500, "exception", "the data source failed");
    } else if (patient_bound(&grant, type_name, SB_PERM_R) &&
               (type == sb_data_patient_type(sb->data)
                    ? strcmp(meta.id, grant.patient) != 0
                    : sb_data_type_in_compartment(sb->data, (size_t)type) &&
                          strcmp(meta.patient_id, grant.patient) != 0)) {
        sb_reply_outcome(reply, 403, "forbidden",
                         "%s/%s is outside the compartment of the token's patient %s", type_name,
                         id, grant.patient);
    } else if (meta.deleted) {
        sb_reply_outcome(reply, 410, "deleted", "%s/%s was deleted", type_name, id);
    } else {
        char date[40];
        fs_format_http_date(meta.last_updated, date, sizeof date);
        sb_reply_text(reply, 200, SB_FHIR_JSON, body.data ? body.data : "");
        sb_reply_header(reply, "ETag", "W/\"%u\"", meta.version);
        sb_reply_header(reply, "Last-Modified", "%s", date);
    }
    fs_buf_free(&body);
}
