/* bulk/state.c: state.json, the durable record that makes an export resumable, and the small
 * file helpers it needs. Every change is written as a whole new file (temp file, fsync, rename,
 * fsync of the folder), so that after a crash, kill -9 or power loss the folder holds either the
 * previous state or the new one, never a torn mix. The state is written BEFORE the export moves
 * on: the status URL before the first poll, the manifest before the first download, a file's
 * record after its rename into place and before it is reported to the application.
 *
 * state.json:
 *   {"fhirsync_export": 1, "base_url": ..., "request": {...}, "status_url": ...,
 *    "kickoff_time": ..., "transaction_time": ..., "manifest_saved": bool, "complete": bool,
 *    "job_deleted": bool, "files": [{"name", "count", "quarantined", "bytes"}...]} */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bulk/bulk_internal.h"

#define STATE_MAX_BYTES (64 * 1024 * 1024)

/* ---- files ----------------------------------------------------------------------------------- */

bool fs_bulk_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool ok = fsync(fd) == 0 || errno == EINVAL;
    close(fd);
    return ok;
}

fhirsync_code fs_bulk_write_atomic(const char *dir, const char *name, const char *data, size_t len,
                                   fhirsync_error *err)
{
    fs_buf tmp, final;
    fs_buf_init(&tmp);
    fs_buf_init(&final);
    fhirsync_code rc = FHIRSYNC_OK;
    int fd = -1;
    if (!fs_buf_printf(&tmp, "%s/.%s.tmp", dir, name) ||
        !fs_buf_printf(&final, "%s/%s", dir, name)) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
    fd = open(tmp.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || !fs_write_all(fd, data, len) || fsync(fd) != 0) {
        rc = fs_err(err, FHIRSYNC_E_IO, "cannot write %s: %s", tmp.data, strerror(errno));
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = fs_err(err, FHIRSYNC_E_IO, "cannot write %s: %s", tmp.data, strerror(errno));
        goto out;
    }
    fd = -1;
    if (rename(tmp.data, final.data) != 0) {
        rc = fs_err(err, FHIRSYNC_E_IO, "cannot rename %s to %s: %s", tmp.data, final.data,
                    strerror(errno));
        goto out;
    }
    if (!fs_bulk_fsync_dir(dir))
        rc = fs_err(err, FHIRSYNC_E_IO, "cannot fsync folder %s: %s", dir, strerror(errno));
out:
    if (fd >= 0)
        close(fd);
    if (rc != FHIRSYNC_OK && tmp.data)
        unlink(tmp.data);
    fs_buf_free(&tmp);
    fs_buf_free(&final);
    return rc;
}

fhirsync_code fs_bulk_mkdirs(const char *path, fhirsync_error *err)
{
    char *copy = fs_strdup(path);
    if (!copy)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    fhirsync_code rc = FHIRSYNC_OK;
    for (char *p = copy + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(copy, 0700) != 0 && errno != EEXIST) {
                rc = fs_err(err, FHIRSYNC_E_IO, "cannot create folder %s: %s", copy,
                            strerror(errno));
                break;
            }
            *p = saved;
            if (!saved)
                break;
        }
    }
    struct stat st;
    if (rc == FHIRSYNC_OK && (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)))
        rc = fs_err(err, FHIRSYNC_E_IO, "%s is not a folder", path);
    fs_free(copy);
    return rc;
}

fhirsync_code fs_bulk_read_file(const char *path, size_t max, char **out, size_t *len,
                                fhirsync_error *err)
{
    *out = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fs_err(err, errno == ENOENT ? FHIRSYNC_E_NOT_FOUND : FHIRSYNC_E_IO,
                      "cannot open %s: %s", path, strerror(errno));
    fs_buf b;
    fs_buf_init(&b);
    fhirsync_code rc = FHIRSYNC_OK;
    char chunk[16384];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = fs_err(err, FHIRSYNC_E_IO, "cannot read %s: %s", path, strerror(errno));
            break;
        }
        if (n == 0)
            break;
        if (b.len + (size_t)n > max) {
            rc = fs_err(err, FHIRSYNC_E_TOO_LARGE, "%s is larger than %zu bytes", path, max);
            break;
        }
        if (!fs_buf_append(&b, chunk, (size_t)n)) {
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory reading %s", path);
            break;
        }
    }
    close(fd);
    if (rc == FHIRSYNC_OK) {
        *len = b.len;
        *out = fs_buf_steal(&b);
        if (!*out)
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory reading %s", path);
    }
    fs_buf_free(&b);
    return rc;
}

/* ---- the state ------------------------------------------------------------------------------- */

/* ---- a string map (names to numbers) -------------------------------------------------------- */

size_t *fs_bulk_map_get(const fs_bulk_map *m, const char *key)
{
    if (!m->cap)
        return NULL;
    for (size_t i = fs_fnv1a_str(FS_FNV1A_INIT, key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->slots[i].key)
            return NULL;
        if (strcmp(m->slots[i].key, key) == 0)
            return &m->slots[i].value;
    }
}

bool fs_bulk_map_put(fs_bulk_map *m, const char *key, size_t value)
{
    size_t *v = fs_bulk_map_get(m, key);
    if (v) {
        *v = value;
        return true;
    }
    if ((m->count + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        fs_bulk_map_slot *slots = fs_calloc(cap, sizeof *slots);
        if (!slots)
            return false;
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->slots[i].key)
                continue;
            size_t j = fs_fnv1a_str(FS_FNV1A_INIT, m->slots[i].key) & (cap - 1);
            while (slots[j].key)
                j = (j + 1) & (cap - 1);
            slots[j] = m->slots[i];
        }
        fs_free(m->slots);
        m->slots = slots;
        m->cap = cap;
    }
    size_t i = fs_fnv1a_str(FS_FNV1A_INIT, key) & (m->cap - 1);
    while (m->slots[i].key)
        i = (i + 1) & (m->cap - 1);
    m->slots[i].key = key;
    m->slots[i].value = value;
    m->count++;
    return true;
}

void fs_bulk_map_clear(fs_bulk_map *m)
{
    fs_free(m->slots);
    memset(m, 0, sizeof *m);
}

/* ---- the state ------------------------------------------------------------------------------ */

void fs_bulk_state_init(fs_bulk_state *st)
{
    memset(st, 0, sizeof *st);
    st->version = 1;
}

void fs_bulk_state_clear(fs_bulk_state *st)
{
    fs_free(st->base_url);
    json_decref(st->request);
    fs_free(st->status_url);
    fs_free(st->kickoff_time);
    fs_free(st->transaction_time);
    for (size_t i = 0; i < st->done_count; i++)
        fs_free(st->done[i].name);
    fs_free(st->done);
    fs_bulk_map_clear(&st->done_index);
    fs_bulk_state_init(st);
}

const fs_bulk_done *fs_bulk_state_find_done(const fs_bulk_state *st, const char *name)
{
    size_t *i = fs_bulk_map_get(&st->done_index, name);
    return i ? &st->done[*i] : NULL;
}

bool fs_bulk_state_add_done(fs_bulk_state *st, const char *name, int64_t count, int64_t quarantined,
                            uint64_t bytes)
{
    fs_bulk_done *d = (fs_bulk_done *)fs_bulk_state_find_done(st, name);
    if (!d) {
        if (st->done_count == st->done_cap) {
            fs_bulk_done *grown = fs_array_grow(st->done, &st->done_cap, sizeof *grown, 16);
            if (!grown)
                return false;
            st->done = grown;
        }
        char *copy = fs_strdup(name);
        if (!copy || !fs_bulk_map_put(&st->done_index, copy, st->done_count)) {
            fs_free(copy);
            return false;
        }
        d = &st->done[st->done_count++];
        d->name = copy;
    }
    d->count = count;
    d->quarantined = quarantined;
    d->bytes = bytes;
    return true;
}

static int set_str(json_t *obj, const char *key, const char *value)
{
    return json_object_set_new(obj, key, value ? json_string(value) : json_null());
}

/* Append a JSON string literal (names are ours and plain, but escape anyway). */
static bool append_json_string(fs_buf *b, const char *text)
{
    bool ok = fs_buf_append(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)text; ok && *p; p++) {
        if (*p == '"' || *p == '\\')
            ok = fs_buf_printf(b, "\\%c", *p);
        else if (*p < 0x20)
            ok = fs_buf_printf(b, "\\u%04x", *p);
        else
            ok = fs_buf_append(b, (const char *)p, 1);
    }
    return ok && fs_buf_append(b, "\"", 1);
}

/* The header members through jansson (they are few), the list of files written directly: a
 * state of many files is saved often during the downloads, and a document tree of every file at
 * each save would cost far more time and memory than the text. */
char *fs_bulk_state_dump(const fs_bulk_state *st)
{
    json_t *root = json_object();
    char *head = NULL, *text = NULL;
    fs_buf b;
    fs_buf_init(&b);
    if (!root)
        goto out;
    int bad = json_object_set_new(root, "fhirsync_export", json_integer(st->version));
    bad |= set_str(root, "base_url", st->base_url);
    bad |= json_object_set(root, "request", st->request ? st->request : json_null());
    bad |= set_str(root, "status_url", st->status_url);
    bad |= set_str(root, "kickoff_time", st->kickoff_time);
    bad |= set_str(root, "transaction_time", st->transaction_time);
    bad |= json_object_set_new(root, "manifest_saved", json_boolean(st->manifest_saved));
    bad |= json_object_set_new(root, "complete", json_boolean(st->complete));
    bad |= json_object_set_new(root, "job_deleted", json_boolean(st->job_deleted));
    if (bad || !(head = fs_json_dump_pretty(root)))
        goto out;
    /* "{\n ...members...\n}": drop the closing brace and add the files */
    size_t len = strlen(head);
    while (len > 0 && head[len - 1] != '}')
        len--;
    if (len == 0)
        goto out;
    len--;
    while (len > 0 && (head[len - 1] == '\n' || head[len - 1] == ' '))
        len--;
    bool ok = fs_buf_append(&b, head, len) && fs_buf_append_str(&b, ",\n  \"files\": [");
    for (size_t i = 0; ok && i < st->done_count; i++) {
        const fs_bulk_done *d = &st->done[i];
        ok = fs_buf_append_str(&b, i ? ",\n    {\"name\": " : "\n    {\"name\": ") &&
             append_json_string(&b, d->name) &&
             fs_buf_printf(&b, ", \"count\": %lld, \"quarantined\": %lld, \"bytes\": %llu}",
                           (long long)d->count, (long long)d->quarantined,
                           (unsigned long long)d->bytes);
    }
    ok = ok && fs_buf_append_str(&b, st->done_count ? "\n  ]\n}" : "]\n}");
    if (ok)
        text = fs_buf_steal(&b);
out:
    fs_buf_free(&b);
    fs_free(head);
    json_decref(root);
    return text;
}

static bool opt_string(json_t *root, const char *key, char **out)
{
    json_t *v = json_object_get(root, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_string(v))
        return false;
    *out = fs_strdup(json_string_value(v));
    return *out != NULL;
}

fhirsync_code fs_bulk_state_parse(const char *text, size_t len, fs_bulk_state *st,
                                  fhirsync_error *err)
{
    fs_bulk_state_clear(st);
    fhirsync_code rc = FHIRSYNC_OK;
    const char *bad = NULL;
    json_t *root = fs_json_parse(text, len, true, "state.json", err);
    if (!root)
        return FHIRSYNC_E_JSON;
    int64_t version;
    if (!fs_json_int(root, "fhirsync_export", &version)) {
        bad = "fhirsync_export";
    } else if (version != 1) {
        rc = fs_err(err, FHIRSYNC_E_JSON,
                    "state.json has version %lld; this fhirsync reads version 1",
                    (long long)version);
        goto out;
    } else if (!opt_string(root, "base_url", &st->base_url) || !st->base_url) {
        bad = "base_url";
    } else if (!json_is_object(json_object_get(root, "request"))) {
        bad = "request";
    } else if (!opt_string(root, "status_url", &st->status_url)) {
        bad = "status_url";
    } else if (!opt_string(root, "kickoff_time", &st->kickoff_time)) {
        bad = "kickoff_time";
    } else if (!opt_string(root, "transaction_time", &st->transaction_time)) {
        bad = "transaction_time";
    } else if (!fs_json_bool(root, "manifest_saved", &st->manifest_saved)) {
        bad = "manifest_saved";
    } else if (!fs_json_bool(root, "complete", &st->complete)) {
        bad = "complete";
    } else if (!fs_json_bool(root, "job_deleted", &st->job_deleted)) {
        bad = "job_deleted";
    } else if (!json_is_array(json_object_get(root, "files"))) {
        bad = "files";
    }
    if (bad)
        goto out;
    st->request = json_incref(json_object_get(root, "request"));
    size_t i;
    json_t *f;
    json_array_foreach (json_object_get(root, "files"), i, f) {
        int64_t count, quarantined, bytes;
        const char *name = fs_json_str(f, "name");
        if (!name || !*name || strstr(name, "..") || name[0] == '/' ||
            !fs_json_int(f, "count", &count) || !fs_json_int(f, "quarantined", &quarantined) ||
            !fs_json_int(f, "bytes", &bytes) || count < 0 || quarantined < 0 || bytes < 0) {
            bad = "files";
            goto out;
        }
        if (!fs_bulk_state_add_done(st, name, count, quarantined, (uint64_t)bytes)) {
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory reading state.json");
            goto out;
        }
    }
    if (st->manifest_saved && !st->transaction_time)
        bad = "transaction_time";
    else if (st->manifest_saved && !st->status_url)
        bad = "status_url";
out:
    if (bad)
        rc = fs_err(err, FHIRSYNC_E_JSON,
                    "state.json is damaged: member \"%s\" is missing or "
                    "malformed (remove the folder to start the export again)",
                    bad);
    if (rc != FHIRSYNC_OK)
        fs_bulk_state_clear(st);
    json_decref(root);
    return rc;
}

fhirsync_code fs_bulk_state_save(const fs_bulk_state *st, const char *dir, fhirsync_error *err)
{
    char *text = fs_bulk_state_dump(st);
    if (!text)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory writing state.json");
    fhirsync_code rc = fs_bulk_write_atomic(dir, FS_BULK_STATE_FILE, text, strlen(text), err);
    fs_free(text);
    return rc;
}

fhirsync_code fs_bulk_state_load(const char *dir, fs_bulk_state *st, fhirsync_error *err)
{
    fs_buf path;
    fs_buf_init(&path);
    if (!fs_buf_printf(&path, "%s/%s", dir, FS_BULK_STATE_FILE))
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    char *text = NULL;
    size_t len = 0;
    fhirsync_code rc = fs_bulk_read_file(path.data, STATE_MAX_BYTES, &text, &len, err);
    if (rc == FHIRSYNC_OK) {
        rc = fs_bulk_state_parse(text, len, st, err);
        if (rc != FHIRSYNC_OK)
            fs_err_prefix(err, "%s", path.data);
    }
    fs_free(text);
    fs_buf_free(&path);
    return rc;
}
