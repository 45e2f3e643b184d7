/* core/secrets.c: the registry of live secrets and process hardening.
 *
 * Pattern redaction (log.c) finds secrets by their surroundings ("access_token=", "Bearer ",
 * "eyJ..."): a server that echoes a token inside free text ("invalid token abc123 for ...")
 * defeats it. So every live secret the library holds (the access token, the refresh token, the
 * client secret, each client assertion) is registered here the moment it exists and removed when
 * it is freed, and the one redaction path masks each registered value wherever it appears,
 * whatever the text around it.
 *
 * The registry is bounded (FS_SECRET_MAX entries; when full the oldest entry is dropped, since a
 * process holding that many live secrets has leaked registrations, and pattern redaction still
 * applies), thread-safe (one mutex), and keeps its copies in OpenSSL's secure heap when
 * fhirsync_global_init() could set one up (locked memory left out of core dumps), wiped when
 * removed. Values are reference-counted, so two holders of the same token (the handle and the
 * process-wide cache) can register and release it independently. Values shorter than
 * FS_SECRET_MIN_LEN are not masked by value: masking every "abc" in a log would mangle it.
 *
 * Process hardening (fhirsync_process_harden) turns core dumps off: a core file of a process that
 * holds a token or a private key holds them too. */
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "core/core.h"

typedef struct secret_entry {
    char *value; /* secure heap copy, NUL-terminated */
    size_t len;
    unsigned refs;
    unsigned long serial; /* registration order, to drop the oldest when full */
} secret_entry;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static secret_entry registry[FS_SECRET_MAX];
static unsigned long next_serial;

static void entry_wipe(secret_entry *e)
{
    OPENSSL_secure_clear_free(e->value, e->len + 1);
    memset(e, 0, sizeof *e);
}

bool fs_secret_register(const char *value)
{
    if (!value)
        return true;
    size_t len = strnlen(value, FS_SECRET_MAX_LEN + 1);
    if (len < FS_SECRET_MIN_LEN || len > FS_SECRET_MAX_LEN)
        return true; /* too short to mask by value, or longer than any token: patterns only */
    bool ok = true;
    pthread_mutex_lock(&registry_lock);
    secret_entry *slot = NULL, *oldest = NULL;
    for (size_t i = 0; i < FS_SECRET_MAX; i++) {
        secret_entry *e = &registry[i];
        if (e->value && e->len == len && CRYPTO_memcmp(e->value, value, len) == 0) {
            e->refs++;
            goto out;
        }
        if (!e->value && !slot)
            slot = e;
        if (e->value && (!oldest || e->serial < oldest->serial))
            oldest = e;
    }
    if (!slot) {
        entry_wipe(oldest);
        slot = oldest;
    }
    slot->value = OPENSSL_secure_malloc(len + 1);
    if (!slot->value) {
        ok = false;
        goto out;
    }
    memcpy(slot->value, value, len + 1);
    slot->len = len;
    slot->refs = 1;
    slot->serial = ++next_serial;
out:
    pthread_mutex_unlock(&registry_lock);
    return ok;
}

void fs_secret_unregister(const char *value)
{
    if (!value)
        return;
    size_t len = strnlen(value, FS_SECRET_MAX_LEN + 1);
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < FS_SECRET_MAX; i++) {
        secret_entry *e = &registry[i];
        if (e->value && e->len == len && CRYPTO_memcmp(e->value, value, len) == 0) {
            if (--e->refs == 0)
                entry_wipe(e);
            break;
        }
    }
    pthread_mutex_unlock(&registry_lock);
}

size_t fs_secret_count(void)
{
    size_t n = 0;
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < FS_SECRET_MAX; i++)
        n += registry[i].value != NULL;
    pthread_mutex_unlock(&registry_lock);
    return n;
}

void fs_secret_clear_all(void)
{
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < FS_SECRET_MAX; i++)
        if (registry[i].value)
            entry_wipe(&registry[i]);
    pthread_mutex_unlock(&registry_lock);
}

char *fs_secret_strdup(const char *s)
{
    char *copy = fs_strdup(s);
    if (copy && !fs_secret_register(copy)) {
        fs_free_secret(copy);
        copy = NULL;
    }
    return copy;
}

void fs_secret_free(char *s)
{
    if (!s)
        return;
    fs_secret_unregister(s);
    fs_free_secret(s);
}

void fhirsync_free_secret(char *secret)
{
    /* the secrets the API hands out (assertions, JWS, client secrets) are registered with the
     * redaction path; releasing one ends its registration */
    fs_secret_free(secret);
}

/* Replace each registered value in `text` by "***". NULL on out of memory. */
char *fs_redact_live(const char *text)
{
    if (!text)
        return fs_strdup("");
    fs_buf out;
    fs_buf_init(&out);
    bool ok = true;
    pthread_mutex_lock(&registry_lock);
    const char *p = text;
    while (*p && ok) {
        /* the earliest occurrence of any registered value (the longest one at a tie) */
        const char *best = NULL;
        size_t best_len = 0;
        for (size_t i = 0; i < FS_SECRET_MAX; i++) {
            const secret_entry *e = &registry[i];
            if (!e->value)
                continue;
            const char *hit = strstr(p, e->value);
            if (hit && (!best || hit < best || (hit == best && e->len > best_len))) {
                best = hit;
                best_len = e->len;
            }
        }
        if (!best) {
            ok = fs_buf_append_str(&out, p);
            break;
        }
        ok = fs_buf_append(&out, p, (size_t)(best - p)) && fs_buf_append_str(&out, "***");
        p = best + best_len;
    }
    pthread_mutex_unlock(&registry_lock);
    if (!ok) {
        fs_buf_free_secret(&out);
        return NULL;
    }
    return fs_buf_steal(&out);
}

/* ---- process hardening ----------------------------------------------------------------------- */

void fs_secure_heap_init(void)
{
    /* 64 KiB holds a few RSA-4096 keys' private numbers and the registry's copies; when the
     * secure heap cannot be set up (no mlock allowance, another caller set one up already, a
     * sanitizer build), OPENSSL_secure_malloc falls back to the ordinary heap: still wiped */
    if (!CRYPTO_secure_malloc_initialized())
        (void)CRYPTO_secure_malloc_init(64 * 1024, 32);
}

bool fhirsync_process_harden(void)
{
    const char *allow = getenv("FHIRSYNC_ALLOW_CORE_DUMPS");
    if (allow && strcmp(allow, "1") == 0)
        return false;
    struct rlimit none = {0, 0};
    (void)setrlimit(RLIMIT_CORE, &none);
    /* not dumpable: no core even through a core_pattern pipe, and no ptrace by other processes
     * of the same user */
    (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    return true;
}
