/* bulk/manifest.c: the completion manifest of a Bulk Data export: what the files are, where they
 * are, whether they need the token, and the transactionTime that an incremental sync uses as its
 * next _since. Parsed strictly (a sync must not advance its watermark on a manifest it misread),
 * with relative URLs resolved against the URL the manifest came from, and pages (link next)
 * merged into one document that is saved as manifest.json. */
#include <string.h>

#include "bulk/bulk_internal.h"
#include "http/http.h"

void fs_bulk_manifest_init(fs_bulk_manifest *m)
{
    memset(m, 0, sizeof *m);
}

void fs_bulk_manifest_clear(fs_bulk_manifest *m)
{
    for (size_t i = 0; i < m->count; i++) {
        fs_free(m->entries[i].type);
        fs_free(m->entries[i].url);
    }
    fs_free(m->entries);
    fs_free(m->transaction_time);
    fs_free(m->request);
    fs_free(m->next);
    json_decref(m->merged);
    fs_bulk_manifest_init(m);
}

void fs_bulk_manifest_drop_entries(fs_bulk_manifest *m)
{
    for (size_t i = 0; i < m->count; i++) {
        fs_free(m->entries[i].type);
        fs_free(m->entries[i].url);
    }
    fs_free(m->entries);
    m->entries = NULL;
    m->count = m->cap = 0;
    json_decref(m->merged);
    m->merged = NULL;
}

bool fs_bulk_type_name_ok(const char *type)
{
    if (!type || !(type[0] >= 'A' && type[0] <= 'Z'))
        return false;
    size_t n = 0;
    for (const char *p = type; *p; p++, n++) {
        char c = *p;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return false;
    }
    return n <= FS_BULK_MAX_TYPE_LEN;
}

static const char *kind_member(fhirsync_export_file_kind kind)
{
    return kind == FHIRSYNC_EXPORT_OUTPUT ? "output"
           : kind == FHIRSYNC_EXPORT_DELETED ? "deleted" : "error";
}

/* Append the entries of one array member (output, deleted or error) to m and to `merged`. */
static fhirsync_code add_entries(fs_bulk_manifest *m, json_t *page, fhirsync_export_file_kind kind,
                                 const char *base_url, json_t *merged, fhirsync_error *err)
{
    const char *member = kind_member(kind);
    json_t *arr = json_object_get(page, member);
    if (!arr) {
        if (kind == FHIRSYNC_EXPORT_OUTPUT)
            return fs_err(err, FHIRSYNC_E_PROTOCOL, "manifest has no \"output\" array");
        return FHIRSYNC_OK;
    }
    if (!json_is_array(arr))
        return fs_err(err, FHIRSYNC_E_PROTOCOL, "manifest \"%s\" is not an array", member);
    json_t *merged_arr = json_object_get(merged, member);
    if (!merged_arr) {
        merged_arr = json_array();
        if (!merged_arr || json_object_set_new(merged, member, merged_arr) != 0)
            return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory reading the manifest");
    }
    size_t i;
    json_t *item;
    json_array_foreach(arr, i, item)
    {
        if (!json_is_object(item))
            return fs_err(err, FHIRSYNC_E_PROTOCOL, "manifest %s[%zu] is not an object", member,
                          i);
        const char *type = fs_json_str(item, "type");
        const char *url = fs_json_str(item, "url");
        if (!type)
            return fs_err(err, FHIRSYNC_E_PROTOCOL, "manifest %s[%zu] has no \"type\" string",
                          member, i);
        if (!fs_bulk_type_name_ok(type))
            return fs_err(err, FHIRSYNC_E_PROTOCOL,
                          "manifest %s[%zu] type \"%.80s\" is not a resource type name", member,
                          i, type);
        if (!url || !*url)
            return fs_err(err, FHIRSYNC_E_PROTOCOL, "manifest %s[%zu] has no \"url\" string",
                          member, i);
        int64_t count = -1;
        json_t *jc = json_object_get(item, "count");
        if (jc && (!fs_json_int(item, "count", &count) || count < 0))
            return fs_err(err, FHIRSYNC_E_PROTOCOL,
                          "manifest %s[%zu] \"count\" is not a non-negative integer", member, i);
        char *abs = NULL;
        fhirsync_code rc = fs_url_resolve(base_url, url, false, &abs, err);
        if (rc != FHIRSYNC_OK) {
            fs_err_prefix(err, "manifest %s[%zu]", member, i);
            return rc == FHIRSYNC_E_NOMEM ? rc : fs_err(err, FHIRSYNC_E_PROTOCOL, "%s",
                                                        err ? err->message : "bad URL");
        }
        rc = fs_url_check_transport(abs, "manifest file URL", err);
        if (rc != FHIRSYNC_OK) {
            fs_free(abs);
            return rc == FHIRSYNC_E_NOMEM ? rc : fs_err(err, FHIRSYNC_E_PROTOCOL, "%s",
                                                        err ? err->message : "bad URL");
        }
        if (m->count == m->cap) {
            size_t cap = m->cap ? m->cap * 2 : 16;
            fs_bulk_entry *grown = fs_realloc(m->entries, cap * sizeof *grown);
            if (!grown) {
                fs_free(abs);
                return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory reading the manifest");
            }
            m->entries = grown;
            m->cap = cap;
        }
        fs_bulk_entry *e = &m->entries[m->count];
        e->kind = kind;
        e->count = count;
        e->url = abs;
        e->type = fs_strdup(type);
        /* the page's own item, its url made absolute, goes into the merged manifest: no copy
         * (the page is dropped after parsing; on failure the merged manifest is restored) */
        json_t *copy = json_incref(item);
        bool ok = e->type && json_object_set_new(copy, "url", json_string(abs)) == 0;
        if (ok) {
            ok = json_array_append_new(merged_arr, copy) == 0;
            copy = NULL; /* taken by the array, even when appending fails */
        }
        if (!ok) {
            json_decref(copy);
            fs_free(e->type);
            fs_free(e->url);
            return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory reading the manifest");
        }
        m->count++;
    }
    return FHIRSYNC_OK;
}

fhirsync_code fs_bulk_manifest_parse(fs_bulk_manifest *m, const char *body, size_t len,
                                     const char *base_url, fhirsync_error *err)
{
    fhirsync_code rc = FHIRSYNC_OK;
    json_t *page = NULL;
    char *next = NULL;
    bool first = m->merged == NULL;
    size_t count_before = m->count;
    bool had[FHIRSYNC_EXPORT_ERROR + 1] = {false};
    size_t size_before[FHIRSYNC_EXPORT_ERROR + 1] = {0};

    /* what the merged arrays hold before this page: a failure cuts them back (constant work per
     * page, where a copy of the merged manifest would cost all of it each page) */
    for (int k = FHIRSYNC_EXPORT_OUTPUT; k <= FHIRSYNC_EXPORT_ERROR && !first; k++) {
        json_t *arr = json_object_get(m->merged, kind_member((fhirsync_export_file_kind)k));
        had[k] = arr != NULL;
        size_before[k] = json_array_size(arr);
    }
    page = fs_json_parse(body, len, true, "export manifest", err);
    if (!page) {
        rc = fs_err(err, FHIRSYNC_E_PROTOCOL, "%s", err ? err->message : "bad manifest");
        goto out;
    }
    const char *tt = fs_json_str(page, "transactionTime");
    int64_t epoch;
    if (!tt) {
        rc = fs_err(err, FHIRSYNC_E_PROTOCOL, "manifest has no \"transactionTime\" string");
        goto out;
    }
    if (!fs_parse_instant(tt, &epoch)) {
        rc = fs_err(err, FHIRSYNC_E_PROTOCOL,
                    "manifest \"transactionTime\" \"%.60s\" is not a FHIR instant", tt);
        goto out;
    }
    if (!first && !fs_streq(tt, m->transaction_time)) {
        rc = fs_err(err, FHIRSYNC_E_PROTOCOL,
                    "manifest pages disagree on transactionTime (%.40s, then %.40s)",
                    m->transaction_time, tt);
        goto out;
    }
    json_t *rat = json_object_get(page, "requiresAccessToken");
    if (rat && !json_is_boolean(rat)) {
        rc = fs_err(err, FHIRSYNC_E_PROTOCOL, "manifest \"requiresAccessToken\" is not a boolean");
        goto out;
    }
    json_t *link = json_object_get(page, "link");
    if (link) {
        if (!json_is_array(link)) {
            rc = fs_err(err, FHIRSYNC_E_PROTOCOL, "manifest \"link\" is not an array");
            goto out;
        }
        size_t i;
        json_t *l;
        json_array_foreach(link, i, l)
        {
            if (!json_is_object(l) || !fs_streq(fs_json_str(l, "relation"), "next"))
                continue;
            const char *url = fs_json_str(l, "url");
            if (!url || !*url) {
                rc = fs_err(err, FHIRSYNC_E_PROTOCOL, "manifest link[%zu] (next) has no url", i);
                goto out;
            }
            rc = fs_url_resolve(base_url, url, false, &next, err);
            if (rc != FHIRSYNC_OK)
                goto out;
        }
    }
    if (first) {
        m->merged = json_object();
        if (!m->merged) {
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory reading the manifest");
            goto out;
        }
        const char *key;
        json_t *value;
        json_object_foreach(page, key, value)
        {
            if (!strcmp(key, "link") || !strcmp(key, "output") || !strcmp(key, "deleted") ||
                !strcmp(key, "error"))
                continue;
            if (json_object_set(m->merged, key, value) != 0) {
                rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory reading the manifest");
                goto out;
            }
        }
        m->transaction_time = fs_strdup(tt);
        const char *request = fs_json_str(page, "request");
        m->request = request ? fs_strdup(request) : NULL;
        m->requires_token_missing = rat == NULL;
        m->requires_token = rat ? json_is_true(rat) : true;
        if (!m->transaction_time || (request && !m->request)) {
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory reading the manifest");
            goto out;
        }
    }
    for (int k = FHIRSYNC_EXPORT_OUTPUT; k <= FHIRSYNC_EXPORT_ERROR && rc == FHIRSYNC_OK; k++)
        rc = add_entries(m, page, (fhirsync_export_file_kind)k, base_url, m->merged, err);
    if (rc != FHIRSYNC_OK)
        goto out;
    fs_free(m->next);
    m->next = next;
    next = NULL;
out:
    if (rc != FHIRSYNC_OK) {
        /* keep what earlier pages gave */
        while (m->count > count_before) {
            m->count--;
            fs_free(m->entries[m->count].type);
            fs_free(m->entries[m->count].url);
        }
        if (first) {
            json_decref(m->merged);
            m->merged = NULL;
            fs_free(m->transaction_time);
            fs_free(m->request);
            m->transaction_time = m->request = NULL;
        } else {
            for (int k = FHIRSYNC_EXPORT_OUTPUT; k <= FHIRSYNC_EXPORT_ERROR; k++) {
                const char *member = kind_member((fhirsync_export_file_kind)k);
                json_t *arr = json_object_get(m->merged, member);
                if (arr && !had[k])
                    json_object_del(m->merged, member);
                else
                    while (arr && json_array_size(arr) > size_before[k])
                        json_array_remove(arr, json_array_size(arr) - 1);
            }
        }
    }
    json_decref(page);
    fs_free(next);
    return rc;
}
