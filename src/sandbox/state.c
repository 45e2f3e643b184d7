/* sandbox/state.c: GET /admin/state, the dump of what the server holds now (after every
 * mutation), so that a test can prove "the store equals the server": for each live resource its
 * type, id, versionId, lastUpdated and the SHA-256 of the exact bytes the sandbox serves for it
 * (the NDJSON line of an export file without its newline, which is also the body of a REST
 * read). NDJSON sorted by type name then id (bytewise), optionally one type (?type=T), or per
 * type a count and a combined hash (?summary=1).
 *
 * The dump is built under the data read lock, so it is one consistent epoch: mutations wait for
 * it. Cost: every resource is produced and hashed once, and one type's rows (about 120 bytes each)
 * are held for sorting; fine for the 10k-1M resources tests use. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "sandbox.h"

typedef struct state_row {
    char id[64];
    uint32_t version;
    int64_t last_updated;
    unsigned char sha[32];
} state_row;

static int cmp_row(const void *a, const void *b)
{
    return strcmp(((const state_row *)a)->id, ((const state_row *)b)->id);
}

static void hex(const unsigned char *bytes, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * n] = '\0';
}

/* meta.lastUpdated the way the generator writes it: UTC, whole seconds, ".000Z". */
static void format_last_updated(int64_t epoch, char *buf, size_t size)
{
    time_t t = (time_t)epoch;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, size, "%Y-%m-%dT%H:%M:%S.000Z", &tm);
}

/* The live resources of one type, sorted by id; false on out of memory or a data failure. */
static bool collect(const sb_data *d, size_t type, state_row **rows, size_t *count)
{
    state_row *list = NULL;
    size_t n = 0, cap = 0;
    fs_buf json;
    fs_buf_init(&json);
    bool ok = true;
    sb_walk walk;
    sb_walk_init(&walk, d, type, NULL, 0, 0, 0);
    uint32_t bucket, slot;
    while (ok && sb_walk_next(&walk, &bucket, &slot)) {
        sb_resource_meta meta;
        if (!sb_data_meta(d, type, bucket, slot, &meta)) {
            ok = false;
            break;
        }
        if (meta.deleted)
            continue;
        fs_buf_reset(&json);
        if (!sb_data_get(d, type, bucket, slot, &json, &meta)) {
            ok = false;
            break;
        }
        if (meta.deleted)
            continue;
        if (n == cap) {
            state_row *grown = fs_array_grow(list, &cap, sizeof *grown, 1024);
            if (!grown) {
                ok = false;
                break;
            }
            list = grown;
        }
        state_row *row = &list[n++];
        snprintf(row->id, sizeof row->id, "%s", meta.id);
        row->version = meta.version;
        row->last_updated = meta.last_updated;
        ok = EVP_Digest(json.data ? json.data : "", json.len, row->sha, NULL, EVP_sha256(), NULL) ==
             1;
    }
    fs_buf_free(&json);
    if (!ok) {
        fs_free(list);
        return false;
    }
    if (n > 1)
        qsort(list, n, sizeof *list, cmp_row);
    *rows = list;
    *count = n;
    return true;
}

static bool append_json_string(fs_buf *b, const char *s)
{
    json_t *v = json_string(s);
    char *text = v ? json_dumps(v, JSON_ENCODE_ANY) : NULL;
    bool ok = text && fs_buf_append_str(b, text);
    fs_free(text);
    json_decref(v);
    return ok;
}

static bool emit_rows(fs_buf *out, const char *type_name, const state_row *rows, size_t n)
{
    bool ok = true;
    for (size_t i = 0; ok && i < n; i++) {
        char sha[65], when[40];
        hex(rows[i].sha, 32, sha);
        format_last_updated(rows[i].last_updated, when, sizeof when);
        ok = fs_buf_append_str(out, "{\"resourceType\":") && append_json_string(out, type_name) &&
             fs_buf_append_str(out, ",\"id\":") && append_json_string(out, rows[i].id) &&
             fs_buf_printf(out, ",\"versionId\":\"%u\",\"lastUpdated\":\"%s\",\"sha256\":\"%s\"}\n",
                           rows[i].version, when, sha);
    }
    return ok;
}

/* The combined hash of a type: SHA-256 over the lines "id versionId sha256hex\n" in id order. */
static bool combined_hash(const state_row *rows, size_t n, char out[65])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
    char line[64 + 16 + 64 + 4];
    for (size_t i = 0; ok && i < n; i++) {
        char sha[65];
        hex(rows[i].sha, 32, sha);
        int len = snprintf(line, sizeof line, "%s %u %s\n", rows[i].id, rows[i].version, sha);
        ok = len > 0 && (size_t)len < sizeof line && EVP_DigestUpdate(ctx, line, (size_t)len) == 1;
    }
    unsigned char digest[32];
    unsigned int dlen = 0;
    ok = ok && EVP_DigestFinal_ex(ctx, digest, &dlen) == 1 && dlen == 32;
    EVP_MD_CTX_free(ctx);
    if (ok)
        hex(digest, 32, out);
    return ok;
}

/* Type indices sorted by name (a few dozen: an insertion sort). */
static void sort_types(const sb_data *d, size_t *types, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        size_t t = types[i], j = i;
        for (; j > 0 && strcmp(sb_data_type_name(d, types[j - 1]), sb_data_type_name(d, t)) > 0;
             j--)
            types[j] = types[j - 1];
        types[j] = t;
    }
}

/* One dump under the read lock: NDJSON rows, or the summary object's "types" member. */
static bool dump(sb_data *d, const size_t *types, size_t ntypes, bool summary, fs_buf *out,
                 json_t *summary_types)
{
    bool ok = true;
    sb_data_read_lock(d);
    for (size_t i = 0; ok && i < ntypes; i++) {
        state_row *rows = NULL;
        size_t n = 0;
        const char *name = sb_data_type_name(d, types[i]);
        ok = collect(d, types[i], &rows, &n);
        if (ok && summary) {
            char hash[65];
            ok = combined_hash(rows, n, hash) &&
                 json_object_set_new(
                     summary_types, name,
                     json_pack("{s:I, s:s}", "count", (json_int_t)n, "hash", hash)) == 0;
        } else if (ok) {
            ok = emit_rows(out, name, rows, n);
        }
        fs_free(rows);
    }
    sb_data_read_unlock(d);
    return ok;
}

void sb_admin_handle_state(sb_server *sb, sb_request *req, sb_reply *reply)
{
    sb_data *d = sb->data;
    const char *only = sb_params_get(&req->query, "type");
    const char *summary_text = sb_params_get(&req->query, "summary");
    bool summary = summary_text && (fs_streq(summary_text, "1") || fs_streq(summary_text, "true"));
    size_t all = sb_data_type_count(d), ntypes = 0;
    size_t *types = fs_calloc(all + 1, sizeof *types);
    fs_buf out;
    fs_buf_init(&out);
    json_t *summary_types = NULL;
    if (!types) {
        sb_reply_outcome(reply, 500, "exception", "out of memory");
        goto out;
    }
    if (only) {
        int t = sb_data_type_index(d, only);
        if (t < 0) {
            sb_reply_outcome(reply, 404, "not-found", "no resource type %.64s here", only);
            goto out;
        }
        types[ntypes++] = (size_t)t;
    } else {
        for (size_t t = 0; t < all; t++)
            types[ntypes++] = t;
        sort_types(d, types, ntypes);
    }
    /* the epoch before and after must agree: the dump is of that one epoch (the lock holds
     * mutations off while it runs; reading the epoch under it could deadlock the rwlock) */
    unsigned epoch = 0;
    bool ok = false;
    for (int attempt = 0; attempt < 3 && !ok; attempt++) {
        epoch = sb_data_epoch(d);
        fs_buf_reset(&out);
        json_decref(summary_types);
        if (!(summary_types = json_object()) ||
            !dump(d, types, ntypes, summary, &out, summary_types)) {
            sb_reply_outcome(reply, 500, "exception", "the state dump failed (out of memory?)");
            goto out;
        }
        ok = sb_data_epoch(d) == epoch;
    }
    if (!ok) {
        sb_reply_outcome(reply, 503, "transient", "the data kept changing during the dump");
        goto out;
    }
    if (summary) {
        json_t *doc = json_pack("{s:i, s:O}", "epoch", (int)epoch, "types", summary_types);
        if (!doc) {
            sb_reply_outcome(reply, 500, "exception", "out of memory");
            goto out;
        }
        sb_reply_json(reply, 200, SB_JSON, doc);
        json_decref(doc);
    } else {
        /* hand the buffer over rather than copying megabytes */
        fs_buf_free(&reply->body);
        reply->body = out;
        fs_buf_init(&out);
        reply->status = 200;
        reply->content_type = "application/x-ndjson";
        sb_reply_header(reply, "X-Sandbox-Epoch", "%u", epoch);
    }
out:
    json_decref(summary_types);
    fs_buf_free(&out);
    fs_free(types);
}
