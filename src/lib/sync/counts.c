/* sync/counts.c: counts per resource type (loaded, deleted, quarantined), kept sorted by type, and
 * their two JSON forms: the run's audit row ({"Patient": 10}, the store's documented shape) and
 * the bulk ledger's per-file record ({"Patient": [10, 0, 1], "_server_errors": 0}), which a
 * resumed run reads back for the files an earlier process already loaded. */
#include <string.h>

#include "json/json.h"
#include "sync/sync_internal.h"

void fs_sync_counts_init(fs_sync_counts *c)
{
    memset(c, 0, sizeof *c);
}

void fs_sync_counts_clear(fs_sync_counts *c)
{
    fs_free(c->items);
    fs_sync_counts_init(c);
}

fs_sync_count *fs_sync_counts_at(fs_sync_counts *c, const char *type)
{
    size_t len = type ? strlen(type) : 0;
    if (len == 0 || len > FS_SYNC_TYPE_MAX)
        return NULL;
    size_t lo = 0, hi = c->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int cmp = strcmp(c->items[mid].type, type);
        if (cmp == 0)
            return &c->items[mid];
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (c->n == c->cap) {
        fs_sync_count *items = fs_array_grow(c->items, &c->cap, sizeof *items, 16);
        if (!items)
            return NULL;
        c->items = items;
    }
    memmove(&c->items[lo + 1], &c->items[lo], (c->n - lo) * sizeof *c->items);
    memset(&c->items[lo], 0, sizeof c->items[lo]);
    memcpy(c->items[lo].type, type, len + 1);
    c->n++;
    return &c->items[lo];
}

bool fs_sync_counts_add(fs_sync_counts *into, const fs_sync_counts *from)
{
    for (size_t i = 0; i < from->n; i++) {
        fs_sync_count *e = fs_sync_counts_at(into, from->items[i].type);
        if (!e)
            return false;
        e->loaded += from->items[i].loaded;
        e->deleted += from->items[i].deleted;
        e->quarantined += from->items[i].quarantined;
    }
    into->server_errors += from->server_errors;
    return true;
}

void fs_sync_counts_totals(const fs_sync_counts *c, int64_t *loaded, int64_t *deleted,
                           int64_t *quarantined)
{
    int64_t l = 0, d = 0, q = 0;
    for (size_t i = 0; i < c->n; i++) {
        l += c->items[i].loaded;
        d += c->items[i].deleted;
        q += c->items[i].quarantined;
    }
    if (loaded)
        *loaded = l;
    if (deleted)
        *deleted = d;
    if (quarantined)
        *quarantined = q;
}

char *fs_sync_counts_loaded_json(const fs_sync_counts *c)
{
    json_t *obj = json_object();
    bool ok = obj != NULL;
    for (size_t i = 0; ok && i < c->n; i++)
        if (c->items[i].loaded > 0)
            ok = json_object_set_new(obj, c->items[i].type,
                                     json_integer((json_int_t)c->items[i].loaded)) == 0;
    char *text = ok ? fs_json_dump(obj) : NULL;
    json_decref(obj);
    return text;
}

char *fs_sync_counts_dump(const fs_sync_counts *c)
{
    json_t *obj = json_object();
    bool ok = obj != NULL;
    for (size_t i = 0; ok && i < c->n; i++) {
        const fs_sync_count *e = &c->items[i];
        ok =
            json_object_set_new(obj, e->type,
                                json_pack("[I, I, I]", (json_int_t)e->loaded,
                                          (json_int_t)e->deleted, (json_int_t)e->quarantined)) == 0;
    }
    if (ok)
        ok = json_object_set_new(obj, "_server_errors",
                                 json_integer((json_int_t)c->server_errors)) == 0;
    char *text = ok ? fs_json_dump(obj) : NULL;
    json_decref(obj);
    return text;
}

bool fs_sync_counts_parse(fs_sync_counts *into, const char *json, size_t len)
{
    fhirsync_error err;
    json_t *obj = fs_json_parse(json, len, true, "ledger counts", &err);
    if (!obj)
        return false;
    bool ok = true;
    const char *key;
    json_t *value;
    void *iter = json_object_iter(obj);
    while (ok && iter) {
        key = json_object_iter_key(iter);
        value = json_object_iter_value(iter);
        if (strcmp(key, "_server_errors") == 0) {
            into->server_errors += json_integer_value(value);
        } else if (json_is_array(value) && json_array_size(value) == 3) {
            fs_sync_count *e = fs_sync_counts_at(into, key);
            ok = e != NULL;
            if (ok) {
                e->loaded += json_integer_value(json_array_get(value, 0));
                e->deleted += json_integer_value(json_array_get(value, 1));
                e->quarantined += json_integer_value(json_array_get(value, 2));
            }
        }
        iter = json_object_iter_next(obj, iter);
    }
    json_decref(obj);
    return ok;
}
