/* auth/credentials.c: the credentials file of a person's login (auth = login): the refresh token
 * `fhirsync login` obtained, with what was granted alongside it (scopes, patient, fhirUser), the
 * token endpoint and client it belongs to, and when it was issued and last renewed.
 *
 * The file is JSON, mode 0600, and refused (like a private key file, jose/key.c) when group or
 * others may read or write it. It is replaced atomically: a temporary file in the same directory,
 * written whole, fsync'ed, renamed over the old one, and the directory fsync'ed, so that a crash
 * leaves the old file or the new one, never half of either; a rotated refresh token is on disk
 * before the access token that came with it is used. The refresh token is registered with the
 * live-secret registry (core/secrets.c) the moment it is read, so no log can show it. */
#include <errno.h>
#include <openssl/crypto.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/auth_internal.h"
#include "config/config_internal.h"

#define CREDENTIALS_MAX_BYTES (256 * 1024)
#define CREDENTIALS_VERSION 1

void fs_credentials_clear(fs_credentials *c)
{
    fs_secret_free(c->refresh_token);
    fs_secret_free(c->access_token);
    fs_free(c->scope);
    fs_free(c->patient);
    fs_free(c->fhir_user);
    fs_free(c->token_url);
    fs_free(c->client_id);
    fs_free(c->base_url);
    memset(c, 0, sizeof *c);
}

char *fs_credentials_path(const fhirsync_endpoint *ep)
{
    const char *set = fhirsync_endpoint_get(ep, "credentials_file");
    if (set)
        return fs_strdup(set);
    fs_buf b;
    fs_buf_init(&b);
    const char *state = getenv("XDG_STATE_HOME");
    const char *home = getenv("HOME");
    bool ok;
    if (state && state[0] == '/')
        ok = fs_buf_printf(&b, "%s/fhirsync/", state);
    else
        ok = fs_buf_printf(&b, "%s/.local/state/fhirsync/", home && *home ? home : ".");
    ok = ok && fs_buf_printf(&b, "%s.credentials", fhirsync_endpoint_name(ep));
    if (!ok) {
        fs_buf_free(&b);
        return NULL;
    }
    return fs_buf_steal(&b);
}

/* ---- reading ------------------------------------------------------------------------------- */

static fhirsync_code dup_member(const json_t *doc, const char *key, bool secret, char **out)
{
    const char *v = fs_json_str(doc, key);
    if (!v || !*v)
        return FHIRSYNC_OK;
    *out = secret ? fs_secret_strdup(v) : fs_strdup(v);
    return *out ? FHIRSYNC_OK : FHIRSYNC_E_NOMEM;
}

fhirsync_code fs_credentials_read(const char *path, fs_credentials *out, fhirsync_error *err)
{
    memset(out, 0, sizeof *out);
    fhirsync_code rc = FHIRSYNC_OK;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    json_t *doc = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT)
            return fs_err(err, FHIRSYNC_E_NOT_FOUND, "no credentials file %s", path);
        return fs_err(err, FHIRSYNC_E_IO, "credentials file %s cannot be opened (%s)", path,
                      strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = fs_err(err, FHIRSYNC_E_IO, "credentials file %s is not a regular file", path);
        goto out;
    }
    /* checked on the open descriptor, so the file checked is the file read */
    rc = fs_private_file_mode_check("credentials file", path, (unsigned)st.st_mode, err);
    if (rc != FHIRSYNC_OK)
        goto out;
    if (st.st_size > CREDENTIALS_MAX_BYTES) {
        rc = fs_err(err, FHIRSYNC_E_IO, "credentials file %s is too large (%lld bytes)", path,
                    (long long)st.st_size);
        goto out;
    }
    cap = (size_t)st.st_size + 1;
    if (!(buf = fs_malloc(cap))) {
        rc = FHIRSYNC_E_NOMEM;
        goto out;
    }
    ssize_t got = fs_read_up_to(fd, buf, cap);
    if (got < 0) {
        rc = fs_err(err, FHIRSYNC_E_IO, "cannot read credentials file %s: %s", path,
                    strerror(errno));
        goto out;
    }
    len = (size_t)got;
    fhirsync_error jerr = {0};
    doc = fs_json_parse(buf, len, true, "credentials file", &jerr);
    if (!doc) {
        rc = jerr.code == FHIRSYNC_E_NOMEM
                 ? FHIRSYNC_E_NOMEM
                 : fs_err(err, FHIRSYNC_E_IO,
                          "credentials file %s is not valid (%s): run 'fhirsync login' again", path,
                          jerr.message);
        goto out;
    }
    if ((rc = dup_member(doc, "refresh_token", true, &out->refresh_token)) ||
        (rc = dup_member(doc, "access_token", true, &out->access_token)) ||
        (rc = dup_member(doc, "scope", false, &out->scope)) ||
        (rc = dup_member(doc, "patient", false, &out->patient)) ||
        (rc = dup_member(doc, "fhirUser", false, &out->fhir_user)) ||
        (rc = dup_member(doc, "token_url", false, &out->token_url)) ||
        (rc = dup_member(doc, "client_id", false, &out->client_id)) ||
        (rc = dup_member(doc, "base_url", false, &out->base_url)))
        goto out;
    fs_json_int(doc, "issued_at", &out->issued_at);
    fs_json_int(doc, "refreshed_at", &out->refreshed_at);
    fs_json_int(doc, "refresh_expires_at", &out->refresh_expires_at);
    fs_json_int(doc, "access_expires_at", &out->access_expires_at);
    if (!out->token_url || !out->client_id || (!out->refresh_token && !out->access_token))
        rc = fs_err(err, FHIRSYNC_E_IO,
                    "credentials file %s lacks token_url, client_id or a token: run 'fhirsync "
                    "login' again",
                    path);
out:
    if (doc) {
        /* the refresh token's copy inside the parsed document is wiped with the buffer's */
        json_t *rt = json_object_get(doc, "refresh_token");
        if (json_is_string(rt))
            OPENSSL_cleanse((void *)json_string_value(rt), json_string_length(rt));
        json_decref(doc);
    }
    fs_free_wipe(buf, cap);
    close(fd);
    if (rc != FHIRSYNC_OK)
        fs_credentials_clear(out);
    return rc;
}

/* ---- writing ------------------------------------------------------------------------------- */

static bool set_str(json_t *doc, const char *key, const char *value)
{
    return !value || json_object_set_new(doc, key, json_string(value)) == 0;
}

static bool set_int(json_t *doc, const char *key, int64_t value)
{
    return !value || json_object_set_new(doc, key, json_integer((json_int_t)value)) == 0;
}

/* Create the directory of `path` (one level, mode 0700) when it is missing. */
static void make_parent(const char *path)
{
    char *copy = fs_strdup(path);
    if (!copy)
        return;
    char *dir = dirname(copy);
    struct stat st;
    if (stat(dir, &st) != 0 && errno == ENOENT) {
        /* the XDG state directory may itself be missing: make the chain */
        for (char *p = dir + 1; *p; p++) {
            if (*p != '/')
                continue;
            *p = '\0';
            (void)mkdir(dir, 0700);
            *p = '/';
        }
        (void)mkdir(dir, 0700);
    }
    fs_free(copy);
}

fhirsync_code fs_credentials_write(const char *path, const fs_credentials *c, fhirsync_error *err)
{
    fhirsync_code rc = FHIRSYNC_OK;
    char *text = NULL;
    fs_buf tmp;
    fs_buf_init(&tmp);
    int fd = -1;
    json_t *doc = json_object();
    bool ok = doc && json_object_set_new(doc, "version", json_integer(CREDENTIALS_VERSION)) == 0 &&
              set_str(doc, "token_url", c->token_url) && set_str(doc, "client_id", c->client_id) &&
              set_str(doc, "base_url", c->base_url) && set_str(doc, "scope", c->scope) &&
              set_str(doc, "patient", c->patient) && set_str(doc, "fhirUser", c->fhir_user) &&
              set_int(doc, "issued_at", c->issued_at) &&
              set_int(doc, "refreshed_at", c->refreshed_at) &&
              set_int(doc, "refresh_expires_at", c->refresh_expires_at) &&
              set_int(doc, "access_expires_at", c->access_expires_at) &&
              set_str(doc, "refresh_token", c->refresh_token) &&
              set_str(doc, "access_token", c->access_token);
    if (ok)
        text = fs_json_dump_pretty(doc);
    if (!ok || !text || !fs_buf_printf(&tmp, "%s.XXXXXX", path)) {
        rc = FHIRSYNC_E_NOMEM;
        goto out;
    }
    make_parent(path);
    fd = mkstemp(tmp.data); /* mode 0600 */
    if (fd < 0) {
        rc = fs_err(err, FHIRSYNC_E_IO, "cannot create a temporary file next to %s: %s", path,
                    strerror(errno));
        goto out;
    }
    if (fchmod(fd, 0600) != 0 || !fs_write_all(fd, text, strlen(text)) ||
        !fs_write_all(fd, "\n", 1) || fsync(fd) != 0) {
        rc = fs_err(err, FHIRSYNC_E_IO, "cannot write credentials file %s: %s", tmp.data,
                    strerror(errno));
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = fs_err(err, FHIRSYNC_E_IO, "cannot write credentials file %s: %s", tmp.data,
                    strerror(errno));
        goto out;
    }
    fd = -1;
    if (rename(tmp.data, path) != 0) {
        rc = fs_err(err, FHIRSYNC_E_IO, "cannot replace credentials file %s: %s", path,
                    strerror(errno));
        goto out;
    }
    fs_fsync_parent(path);
out:
    if (fd >= 0)
        close(fd);
    if (rc != FHIRSYNC_OK && tmp.data && tmp.data[0])
        (void)unlink(tmp.data);
    fs_buf_free(&tmp);
    if (text)
        fs_free_wipe(text, strlen(text));
    if (doc) {
        json_t *rt = json_object_get(doc, "refresh_token");
        if (json_is_string(rt))
            OPENSSL_cleanse((void *)json_string_value(rt), json_string_length(rt));
        json_t *at = json_object_get(doc, "access_token");
        if (json_is_string(at))
            OPENSSL_cleanse((void *)json_string_value(at), json_string_length(at));
        json_decref(doc);
    }
    return rc;
}

/* ---- serialising refreshes between processes ------------------------------------------------ */

int fs_credentials_lock(const char *path)
{
    fs_buf lock;
    fs_buf_init(&lock);
    if (!fs_buf_printf(&lock, "%s.lock", path))
        return -1;
    make_parent(path);
    int fd = open(lock.data, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    fs_buf_free(&lock);
    if (fd < 0)
        return -1;
    while (flock(fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            close(fd);
            return -1;
        }
    }
    return fd;
}

void fs_credentials_unlock(int fd)
{
    if (fd >= 0)
        close(fd); /* releases the flock */
}
