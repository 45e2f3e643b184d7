/* sandbox/ndjson.c: the index behind --data DIR, which serves an existing bulk export (one or
 * more NDJSON files per type, named like "1.Patient.ndjson" or "Patient.ndjson"; a manifest.json
 * may sit beside them and is not needed). Each line is parsed once at start-up to learn its
 * resourceType, id, meta.lastUpdated, meta.versionId and the patient it belongs to (its own id
 * for a Patient; subject or patient otherwise); the index keeps only byte offsets and that
 * metadata, never the resources, which are read back with pread() when served.
 *
 * Lines of a Patient-compartment type are ordered by patient (a stable counting sort), so that a
 * patient's resources form one bucket, like the generator's (patient, slot) addressing; lines
 * whose patient is unknown go to one last bucket. Types with no patient references at all
 * (Organization, Practitioner, Group...) have a single bucket. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sandbox.h"

#define MAX_LINE (16u * 1024 * 1024)
#define MAX_FILES 4096
#define MAX_TYPES 256

typedef struct nd_line {
    uint64_t offset;
    uint32_t len;
    uint32_t file;
    int64_t last_updated;
    uint32_t version;
    uint32_t bucket;
    char *id;
    char *patient_ref; /* only while loading */
} nd_line;

typedef struct nd_type {
    char name[64];
    nd_line *lines;
    size_t count, cap;
    bool compartment;
    uint32_t nbuckets;
    uint32_t *bucket_start; /* nbuckets + 1 entries */
    uint32_t *ids;          /* open addressing: line index + 1, 0 empty */
    size_t nids;
} nd_type;

struct sb_ndjson {
    int *fds;
    size_t nfiles;
    nd_type *types;
    size_t ntypes;
    int patient_type;
};

void sb_ndjson_free(sb_ndjson *nd)
{
    if (!nd)
        return;
    for (size_t i = 0; i < nd->nfiles; i++)
        if (nd->fds[i] >= 0)
            close(nd->fds[i]);
    fs_free(nd->fds);
    for (size_t t = 0; t < nd->ntypes; t++) {
        nd_type *ty = &nd->types[t];
        for (size_t i = 0; i < ty->count; i++) {
            fs_free(ty->lines[i].id);
            fs_free(ty->lines[i].patient_ref);
        }
        fs_free(ty->lines);
        fs_free(ty->bucket_start);
        fs_free(ty->ids);
    }
    fs_free(nd->types);
    fs_free(nd);
}

static nd_type *type_for(sb_ndjson *nd, const char *name)
{
    for (size_t t = 0; t < nd->ntypes; t++)
        if (!strcmp(nd->types[t].name, name))
            return &nd->types[t];
    if (nd->ntypes >= MAX_TYPES || strlen(name) >= sizeof nd->types[0].name)
        return NULL;
    nd_type *grown = fs_realloc(nd->types, (nd->ntypes + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    nd->types = grown;
    nd_type *ty = &grown[nd->ntypes++];
    memset(ty, 0, sizeof *ty);
    snprintf(ty->name, sizeof ty->name, "%s", name);
    return ty;
}

/* The id a reference "Patient/ID" (possibly absolute, possibly with /_history) points to. */
static char *patient_ref_id(const json_t *resource)
{
    static const char *const elements[] = {"subject", "patient", "beneficiary"};
    for (size_t i = 0; i < sizeof elements / sizeof elements[0]; i++) {
        const char *ref = fs_json_str(json_object_get(resource, elements[i]), "reference");
        const char *at = ref ? strstr(ref, "Patient/") : NULL;
        if (!at || (at != ref && at[-1] != '/'))
            continue;
        at += 8;
        return fs_strndup(at, strcspn(at, "/"));
    }
    return NULL;
}

static bool index_line(sb_ndjson *nd, uint32_t file, uint64_t offset, const char *line, size_t len,
                       const char *path, size_t lineno)
{
    json_t *res = json_loadb(line, len, 0, NULL);
    const char *type = fs_json_str(res, "resourceType");
    const char *id = fs_json_str(res, "id");
    bool ok = true;
    if (!json_is_object(res) || !type || !id || !*id || strlen(id) >= 64) {
        fprintf(stderr,
                "fhirsync-sandbox: %s line %zu: not a resource with resourceType and "
                "id; skipped\n",
                path, lineno);
        goto out;
    }
    nd_type *ty = type_for(nd, type);
    if (!ty) {
        fprintf(stderr, "fhirsync-sandbox: %s line %zu: unusable resourceType; skipped\n", path,
                lineno);
        goto out;
    }
    if (ty->count == ty->cap) {
        nd_line *lines = fs_array_grow(ty->lines, &ty->cap, sizeof *lines, 64);
        if (!lines) {
            ok = false;
            goto out;
        }
        ty->lines = lines;
    }
    nd_line *l = &ty->lines[ty->count];
    memset(l, 0, sizeof *l);
    l->offset = offset;
    l->len = (uint32_t)len;
    l->file = file;
    json_t *meta = json_object_get(res, "meta");
    if (!fs_parse_instant(fs_json_str(meta, "lastUpdated"), &l->last_updated))
        l->last_updated = 0;
    long version = 1;
    if (!fs_parse_long(fs_json_str(meta, "versionId"), &version) || version < 1)
        version = 1;
    l->version = (uint32_t)version;
    if (!(l->id = fs_strdup(id))) {
        ok = false;
        goto out;
    }
    if (strcmp(type, "Patient") == 0)
        l->patient_ref = fs_strdup(id);
    else
        l->patient_ref = patient_ref_id(res);
    if (l->patient_ref)
        ty->compartment = true;
    ty->count++;
out:
    json_decref(res);
    return ok;
}

static bool index_file(sb_ndjson *nd, uint32_t file, const char *path, fhirsync_error *err)
{
    FILE *f = fdopen(dup(nd->fds[file]), "r");
    if (!f)
        return fs_err(err, FHIRSYNC_E_IO, "cannot read %s", path) == FHIRSYNC_OK;
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    uint64_t offset = 0;
    ssize_t n;
    bool ok = true;
    while (ok && (n = getline(&line, &cap, f)) > 0) {
        lineno++;
        size_t len = (size_t)n;
        uint64_t start = offset;
        offset += len;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        if (len == 0)
            continue;
        if (len > MAX_LINE) {
            fprintf(stderr, "fhirsync-sandbox: %s line %zu is longer than %u bytes; skipped\n",
                    path, lineno, MAX_LINE);
            continue;
        }
        ok = index_line(nd, file, start, line, len, path, lineno);
    }
    free(line);
    fclose(f);
    if (!ok)
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory indexing %s", path);
    return ok;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static uint32_t lookup_id(const nd_type *ty, const char *id)
{
    if (!ty->nids)
        return 0;
    size_t at = fs_fnv1a_str(FS_FNV1A_INIT, id) % ty->nids;
    for (size_t probe = 0; probe < ty->nids; probe++) {
        uint32_t v = ty->ids[at];
        if (!v)
            return 0;
        if (!strcmp(ty->lines[v - 1].id, id))
            return v;
        at = (at + 1) % ty->nids;
    }
    return 0;
}

/* Order lines by bucket (stable), fill bucket_start and the id table. */
static bool finish_type(sb_ndjson *nd, nd_type *ty)
{
    nd_type *patients = nd->patient_type >= 0 ? &nd->types[nd->patient_type] : NULL;
    uint32_t npatients = patients ? (uint32_t)patients->count : 0;
    ty->nbuckets = ty->compartment ? npatients + 1 : 1;
    if (!(ty->bucket_start = fs_calloc((size_t)ty->nbuckets + 1, sizeof *ty->bucket_start)))
        return false;
    for (size_t i = 0; i < ty->count; i++) {
        nd_line *l = &ty->lines[i];
        l->bucket = 0;
        if (ty->compartment) {
            uint32_t v = 0;
            if (ty == patients)
                v = (uint32_t)i + 1;
            else if (l->patient_ref && patients)
                v = lookup_id(patients, l->patient_ref);
            l->bucket = v ? v - 1 : npatients;
        }
        fs_free(l->patient_ref);
        l->patient_ref = NULL;
        ty->bucket_start[l->bucket + 1]++;
    }
    for (uint32_t b = 0; b < ty->nbuckets; b++)
        ty->bucket_start[b + 1] += ty->bucket_start[b];
    if (ty->compartment && ty != patients) {
        nd_line *sorted = fs_malloc((ty->count + 1) * sizeof *sorted);
        uint32_t *next = fs_malloc(((size_t)ty->nbuckets + 1) * sizeof *next);
        if (!sorted || !next) {
            fs_free(sorted);
            fs_free(next);
            return false;
        }
        memcpy(next, ty->bucket_start, ((size_t)ty->nbuckets + 1) * sizeof *next);
        for (size_t i = 0; i < ty->count; i++)
            sorted[next[ty->lines[i].bucket]++] = ty->lines[i];
        fs_free(ty->lines);
        fs_free(next);
        ty->lines = sorted;
        ty->cap = ty->count + 1;
    }
    ty->nids = ty->count * 2 + 1;
    if (!(ty->ids = fs_calloc(ty->nids, sizeof *ty->ids)))
        return false;
    for (size_t i = 0; i < ty->count; i++) {
        size_t at = fs_fnv1a_str(FS_FNV1A_INIT, ty->lines[i].id) % ty->nids;
        while (ty->ids[at] && strcmp(ty->lines[ty->ids[at] - 1].id, ty->lines[i].id) != 0)
            at = (at + 1) % ty->nids;
        ty->ids[at] = (uint32_t)i + 1; /* a repeated id: the later line wins */
    }
    return true;
}

sb_ndjson *sb_ndjson_open(const char *dir, fhirsync_error *err)
{
    sb_ndjson *nd = fs_calloc(1, sizeof *nd);
    char **names = NULL;
    size_t nnames = 0;
    DIR *d = NULL;
    bool ok = false;
    if (!nd) {
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
    nd->patient_type = -1;
    if (!(d = opendir(dir))) {
        fs_err(err, FHIRSYNC_E_IO, "cannot open the --data folder %s", dir);
        goto out;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !ends_with(e->d_name, ".ndjson"))
            continue;
        if (nnames >= MAX_FILES) {
            fs_err(err, FHIRSYNC_E_CONFIG, "more than %d NDJSON files in %s", MAX_FILES, dir);
            goto out;
        }
        char **grown = fs_realloc(names, (nnames + 1) * sizeof *names);
        if (!grown || !(grown[nnames] = fs_strdup(e->d_name))) {
            names = grown ? grown : names;
            fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
            goto out;
        }
        names = grown;
        nnames++;
    }
    if (nnames == 0) {
        fs_err(err, FHIRSYNC_E_CONFIG, "no .ndjson files in the --data folder %s", dir);
        goto out;
    }
    qsort(names, nnames, sizeof *names, cmp_names);
    if (!(nd->fds = fs_malloc(nnames * sizeof *nd->fds))) {
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nnames; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        nd->fds[i] = open(path, O_RDONLY | O_CLOEXEC);
        nd->nfiles++;
        if (nd->fds[i] < 0) {
            fs_err(err, FHIRSYNC_E_IO, "cannot open %s", path);
            goto out;
        }
        if (!index_file(nd, (uint32_t)i, path, err))
            goto out;
    }
    for (size_t t = 0; t < nd->ntypes; t++)
        if (!strcmp(nd->types[t].name, "Patient"))
            nd->patient_type = (int)t;
    /* the Patient type first: the others look their patients up in its id table */
    if (nd->patient_type >= 0 && !finish_type(nd, &nd->types[nd->patient_type])) {
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t t = 0; t < nd->ntypes; t++) {
        if ((int)t != nd->patient_type && !finish_type(nd, &nd->types[t])) {
            fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
            goto out;
        }
    }
    ok = true;
out:
    if (d)
        closedir(d);
    for (size_t i = 0; i < nnames; i++)
        fs_free(names[i]);
    fs_free(names);
    if (!ok) {
        sb_ndjson_free(nd);
        return NULL;
    }
    return nd;
}

size_t sb_ndjson_type_count(const sb_ndjson *nd)
{
    return nd->ntypes;
}

const char *sb_ndjson_type_name(const sb_ndjson *nd, size_t type)
{
    return type < nd->ntypes ? nd->types[type].name : "";
}

bool sb_ndjson_type_in_compartment(const sb_ndjson *nd, size_t type)
{
    return type < nd->ntypes && nd->types[type].compartment;
}

int sb_ndjson_patient_type(const sb_ndjson *nd)
{
    return nd->patient_type;
}

uint32_t sb_ndjson_buckets(const sb_ndjson *nd, size_t type)
{
    return type < nd->ntypes ? nd->types[type].nbuckets : 0;
}

uint32_t sb_ndjson_slots(const sb_ndjson *nd, size_t type, uint32_t bucket)
{
    if (type >= nd->ntypes || bucket >= nd->types[type].nbuckets)
        return 0;
    const nd_type *ty = &nd->types[type];
    return ty->bucket_start[bucket + 1] - ty->bucket_start[bucket];
}

static const nd_line *line_at(const sb_ndjson *nd, size_t type, uint32_t bucket, uint32_t slot)
{
    if (slot >= sb_ndjson_slots(nd, type, bucket))
        return NULL;
    return &nd->types[type].lines[nd->types[type].bucket_start[bucket] + slot];
}

bool sb_ndjson_meta(const sb_ndjson *nd, size_t type, uint32_t bucket, uint32_t slot,
                    sb_resource_meta *meta)
{
    const nd_line *l = line_at(nd, type, bucket, slot);
    if (!l)
        return false;
    memset(meta, 0, sizeof *meta);
    snprintf(meta->id, sizeof meta->id, "%s", l->id);
    const nd_type *ty = &nd->types[type];
    if (ty->compartment && nd->patient_type >= 0) {
        const nd_type *pt = &nd->types[nd->patient_type];
        if (l->bucket < pt->count)
            snprintf(meta->patient_id, sizeof meta->patient_id, "%s", pt->lines[l->bucket].id);
    }
    meta->last_updated = l->last_updated;
    meta->version = l->version;
    return true;
}

bool sb_ndjson_get(const sb_ndjson *nd, size_t type, uint32_t bucket, uint32_t slot, fs_buf *out,
                   sb_resource_meta *meta)
{
    if (!sb_ndjson_meta(nd, type, bucket, slot, meta))
        return false;
    const nd_line *l = line_at(nd, type, bucket, slot);
    size_t start = out->len;
    if (!fs_buf_append(out, NULL, 0))
        return false;
    /* grow, then read in place */
    char chunk[8192];
    uint64_t done = 0;
    while (done < l->len) {
        size_t want = l->len - done > sizeof chunk ? sizeof chunk : (size_t)(l->len - done);
        ssize_t n = pread(nd->fds[l->file], chunk, want, (off_t)(l->offset + done));
        if (n <= 0 || !fs_buf_append(out, chunk, (size_t)n)) {
            out->len = start;
            if (out->data)
                out->data[start] = '\0';
            return false;
        }
        done += (uint64_t)n;
    }
    return true;
}

bool sb_ndjson_find(const sb_ndjson *nd, size_t type, const char *id, uint32_t *bucket,
                    uint32_t *slot)
{
    if (type >= nd->ntypes)
        return false;
    const nd_type *ty = &nd->types[type];
    uint32_t v = lookup_id(ty, id);
    if (!v)
        return false;
    const nd_line *l = &ty->lines[v - 1];
    *bucket = l->bucket;
    *slot = (v - 1) - ty->bucket_start[l->bucket];
    return true;
}
