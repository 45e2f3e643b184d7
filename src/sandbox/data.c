/* sandbox/data.c: the data source behind search, read and export: either the deterministic
 * generator (gen.h), or an existing bulk export folder indexed by ndjson.c (--data). Both are
 * seen as types whose resources are addressed by (bucket, slot), with buckets being patients for
 * Patient-compartment types, so the FHIR and bulk modules never care which one is serving.
 * A read-write lock serialises generator mutations (new epochs) against readers. */
#include <stdlib.h>
#include <string.h>

#include "sandbox.h"

struct sb_data {
    sb_gen *gen; /* exactly one of gen and nd is set */
    sb_ndjson *nd;
    pthread_rwlock_t lock;
};

static sb_data *data_alloc(void)
{
    sb_data *d = fs_calloc(1, sizeof *d);
    if (!d)
        return NULL;
    /* writers first: a mutation must not starve behind a stream of export readers */
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&d->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    return d;
}

sb_data *sb_data_new_generated(const sb_gen_config *cfg, fhirsync_error *err)
{
    sb_data *d = data_alloc();
    if (!d || !(d->gen = sb_gen_new(cfg))) {
        sb_data_free(d);
        fs_err(err, FHIRSYNC_E_CONFIG,
               "the data generator refused the configuration "
               "(patients %u) or memory ran out",
               (unsigned)cfg->patients);
        return NULL;
    }
    return d;
}

sb_data *sb_data_new_ndjson(const char *dir, fhirsync_error *err)
{
    sb_data *d = data_alloc();
    if (!d) {
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        return NULL;
    }
    if (!(d->nd = sb_ndjson_open(dir, err))) {
        sb_data_free(d);
        return NULL;
    }
    return d;
}

void sb_data_free(sb_data *d)
{
    if (!d)
        return;
    sb_gen_free(d->gen);
    sb_ndjson_free(d->nd);
    pthread_rwlock_destroy(&d->lock);
    fs_free(d);
}

bool sb_data_is_generated(const sb_data *d)
{
    return d->gen != NULL;
}

size_t sb_data_type_count(const sb_data *d)
{
    return d->gen ? sb_gen_type_count() : sb_ndjson_type_count(d->nd);
}

const char *sb_data_type_name(const sb_data *d, size_t type)
{
    return d->gen ? sb_gen_type_name(type) : sb_ndjson_type_name(d->nd, type);
}

int sb_data_type_index(const sb_data *d, const char *name)
{
    if (!name)
        return -1;
    size_t n = sb_data_type_count(d);
    for (size_t i = 0; i < n; i++)
        if (!strcmp(sb_data_type_name(d, i), name))
            return (int)i;
    return -1;
}

bool sb_data_type_in_compartment(const sb_data *d, size_t type)
{
    return d->gen ? sb_gen_type_in_patient_compartment(type)
                  : sb_ndjson_type_in_compartment(d->nd, type);
}

int sb_data_patient_type(const sb_data *d)
{
    return d->gen ? SB_GEN_PATIENT : sb_ndjson_patient_type(d->nd);
}

uint32_t sb_data_buckets(const sb_data *d, size_t type)
{
    if (d->nd)
        return sb_ndjson_buckets(d->nd, type);
    return sb_gen_type_in_patient_compartment(type) ? sb_gen_patient_count(d->gen) : 1;
}

uint32_t sb_data_slots(const sb_data *d, size_t type, uint32_t bucket)
{
    if (d->nd)
        return sb_ndjson_slots(d->nd, type, bucket);
    if (!sb_gen_type_in_patient_compartment(type))
        return bucket == 0 ? sb_gen_slots(d->gen, type, 0) : 0;
    return bucket < sb_gen_patient_count(d->gen) ? sb_gen_slots(d->gen, type, bucket) : 0;
}

bool sb_data_get(const sb_data *d, size_t type, uint32_t bucket, uint32_t slot, fs_buf *out,
                 sb_resource_meta *meta)
{
    if (d->nd)
        return sb_ndjson_get(d->nd, type, bucket, slot, out, meta);
    return sb_gen_resource(d->gen, type, bucket, slot, out, meta);
}

bool sb_data_meta(const sb_data *d, size_t type, uint32_t bucket, uint32_t slot,
                  sb_resource_meta *meta)
{
    if (d->nd)
        return sb_ndjson_meta(d->nd, type, bucket, slot, meta);
    return sb_gen_meta(d->gen, type, bucket, slot, meta);
}

bool sb_data_find(const sb_data *d, size_t type, const char *id, uint32_t *bucket, uint32_t *slot)
{
    if (d->nd)
        return sb_ndjson_find(d->nd, type, id, bucket, slot);
    uint32_t p = 0, s = 0;
    if (!sb_gen_parse_id(d->gen, type, id, &p, &s))
        return false;
    *bucket = sb_gen_type_in_patient_compartment(type) ? p : 0;
    *slot = s;
    return *slot < sb_data_slots(d, type, *bucket);
}

bool sb_data_patient_bucket(const sb_data *d, const char *patient_id, uint32_t *bucket)
{
    int pt = sb_data_patient_type(d);
    uint32_t b = 0, s = 0;
    if (pt < 0 || !sb_data_find(d, (size_t)pt, patient_id, &b, &s))
        return false;
    *bucket = b;
    return true;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Members of a Group read from its resource (the NDJSON folder case): member[].entity. */
static bool members_from_resource(sb_data *d, const char *group_id, uint32_t **buckets,
                                  size_t *count)
{
    int gt = sb_data_type_index(d, "Group");
    uint32_t b, s;
    if (gt < 0 || !sb_data_find(d, (size_t)gt, group_id, &b, &s))
        return false;
    fs_buf text;
    fs_buf_init(&text);
    sb_resource_meta meta;
    bool ok = false;
    json_t *group = NULL;
    uint32_t *list = NULL;
    size_t n = 0;
    if (!sb_data_get(d, (size_t)gt, b, s, &text, &meta) || meta.deleted)
        goto out;
    if (!(group = json_loadb(text.data ? text.data : "", text.len, 0, NULL)))
        goto out;
    json_t *members = json_object_get(group, "member");
    if (!(list = fs_malloc((json_array_size(members) + 1) * sizeof *list)))
        goto out;
    size_t i;
    for (i = 0; i < json_array_size(members); i++) {
        json_t *member = json_array_get(members, i);
        const char *ref = fs_json_str(json_object_get(member, "entity"), "reference");
        if (!fs_starts_with(ref, "Patient/"))
            continue;
        uint32_t pb;
        if (sb_data_patient_bucket(d, ref + 8, &pb))
            list[n++] = pb;
    }
    qsort(list, n, sizeof *list, cmp_u32);
    size_t u = 0;
    for (size_t k = 0; k < n; k++)
        if (u == 0 || list[u - 1] != list[k])
            list[u++] = list[k];
    *buckets = list;
    *count = u;
    list = NULL;
    ok = true;
out:
    fs_free(list);
    json_decref(group);
    fs_buf_free(&text);
    return ok;
}

bool sb_data_group_members(sb_data *d, const char *group_id, uint32_t **buckets, size_t *count)
{
    *buckets = NULL;
    *count = 0;
    if (d->nd)
        return members_from_resource(d, group_id, buckets, count);
    uint32_t p = 0, slot = 0, first = 0, n = 0;
    if (!sb_gen_parse_id(d->gen, SB_GEN_GROUP, group_id, &p, &slot) ||
        !sb_gen_group_members(d->gen, slot, &first, &n))
        return false;
    uint32_t *list = fs_malloc(((size_t)n + 1) * sizeof *list);
    if (!list)
        return false;
    for (uint32_t i = 0; i < n; i++)
        list[i] = first + i;
    *buckets = list;
    *count = n;
    return true;
}

void sb_data_read_lock(sb_data *d)
{
    pthread_rwlock_rdlock(&d->lock);
}

void sb_data_read_unlock(sb_data *d)
{
    pthread_rwlock_unlock(&d->lock);
}

unsigned sb_data_mutate(sb_data *d, double update_fraction, double delete_fraction, int64_t now,
                        fhirsync_error *err)
{
    if (!d->gen) {
        fs_err(err, FHIRSYNC_E_UNSUPPORTED, "mutations need generated data, not --data");
        return 0;
    }
    pthread_rwlock_wrlock(&d->lock);
    unsigned epoch = sb_gen_mutate(d->gen, update_fraction, delete_fraction, now);
    pthread_rwlock_unlock(&d->lock);
    if (!epoch)
        fs_err(err, FHIRSYNC_E_ARG,
               "the generator refused the mutation (at most %u epochs, or out of memory)",
               SB_GEN_MAX_EPOCHS);
    return epoch;
}

unsigned sb_data_epoch(const sb_data *d)
{
    if (!d->gen)
        return 0;
    pthread_rwlock_t *lock = (pthread_rwlock_t *)&d->lock;
    pthread_rwlock_rdlock(lock);
    unsigned epoch = sb_gen_epoch(d->gen);
    pthread_rwlock_unlock(lock);
    return epoch;
}

/* ---- walks ---------------------------------------------------------------------------------- */

void sb_walk_init(sb_walk *w, const sb_data *d, size_t type, const uint32_t *buckets,
                  size_t nbuckets, uint32_t start_bucket, uint32_t start_slot)
{
    memset(w, 0, sizeof *w);
    w->data = d;
    w->type = type;
    w->buckets = buckets;
    w->nbuckets = nbuckets;
    w->bucket = start_bucket;
    w->slot = start_slot;
    if (buckets) {
        /* the first listed bucket at or after the start */
        size_t lo = 0, hi = nbuckets;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (buckets[mid] < start_bucket)
                lo = mid + 1;
            else
                hi = mid;
        }
        w->index = lo;
        if (lo < nbuckets && buckets[lo] != start_bucket)
            w->slot = 0;
    }
}

/* Point w->bucket at the current bucket; false past the end. */
static bool walk_current(sb_walk *w)
{
    if (w->buckets) {
        if (w->index >= w->nbuckets)
            return false;
        w->bucket = w->buckets[w->index];
        return w->bucket < sb_data_buckets(w->data, w->type);
    }
    return w->bucket < sb_data_buckets(w->data, w->type);
}

bool sb_walk_next(sb_walk *w, uint32_t *bucket, uint32_t *slot)
{
    while (walk_current(w)) {
        if (!w->loaded) {
            w->slots = sb_data_slots(w->data, w->type, w->bucket);
            w->loaded = true;
        }
        if (w->slot < w->slots) {
            *bucket = w->bucket;
            *slot = w->slot++;
            return true;
        }
        w->slot = 0;
        w->loaded = false;
        if (w->buckets)
            w->index++;
        else
            w->bucket++;
    }
    return false;
}

void sb_walk_position(sb_walk *w, uint32_t *bucket, uint32_t *slot)
{
    if (!walk_current(w)) {
        *bucket = UINT32_MAX;
        *slot = 0;
        return;
    }
    *bucket = w->bucket;
    *slot = w->slot;
}
