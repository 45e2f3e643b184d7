/* http/ratelimit.c: the token-bucket rate limiter shared by FHIR and token requests (see
 * ratelimit.h). A small linked list of buckets, one per (FHIR base URL, client id), behind one
 * mutex: a process talks to a handful of endpoints, so a list is enough. */
#include <pthread.h>
#include <string.h>

#include "http/http.h"
#include "http/ratelimit.h"

/* ---- the bucket ------------------------------------------------------------------------------ */

void fs_token_bucket_set_rate(fs_token_bucket *b, long per_minute, double burst, int64_t now_ms)
{
    b->capacity = burst < 1.0 ? 1.0 : burst;
    b->per_ms = per_minute > 0 ? (double)per_minute / 60000.0 : 0.0;
    if (b->tokens > b->capacity)
        b->tokens = b->capacity;
    if (now_ms > b->last_ms)
        b->last_ms = now_ms;
}

void fs_token_bucket_init(fs_token_bucket *b, long per_minute, double burst, int64_t now_ms)
{
    memset(b, 0, sizeof *b);
    b->last_ms = now_ms;
    fs_token_bucket_set_rate(b, per_minute, burst, now_ms);
    b->tokens = b->capacity;
}

int64_t fs_token_bucket_take(fs_token_bucket *b, int64_t now_ms)
{
    if (b->per_ms <= 0.0)
        return 0;
    if (now_ms > b->last_ms) {
        b->tokens += (double)(now_ms - b->last_ms) * b->per_ms;
        if (b->tokens > b->capacity)
            b->tokens = b->capacity;
        b->last_ms = now_ms;
    }
    b->tokens -= 1.0;
    if (b->tokens >= 0.0)
        return 0;
    /* the deficit refills at per_ms: round up so that the slot has really arrived */
    double wait = -b->tokens / b->per_ms;
    int64_t ms = (int64_t)wait;
    return (double)ms < wait ? ms + 1 : ms;
}

/* ---- the registry ---------------------------------------------------------------------------- */

typedef struct endpoint_bucket {
    struct endpoint_bucket *next;
    char *key; /* "base client_id", base as made by endpoint_base() */
    fs_token_bucket bucket;
} endpoint_bucket;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static endpoint_bucket *registry;
static int64_t (*clock_ms)(void) = fs_monotonic_ms;
static bool (*sleeper)(int64_t ms) = fs_sleep_ms;

void fs_ratelimit_set_clock(int64_t (*now_ms)(void), bool (*sleep_ms)(int64_t ms))
{
    pthread_mutex_lock(&registry_lock);
    clock_ms = now_ms ? now_ms : fs_monotonic_ms;
    sleeper = sleep_ms ? sleep_ms : fs_sleep_ms;
    pthread_mutex_unlock(&registry_lock);
}

void fs_ratelimit_reset(void)
{
    pthread_mutex_lock(&registry_lock);
    while (registry) {
        endpoint_bucket *next = registry->next;
        fs_free(registry->key);
        fs_free(registry);
        registry = next;
    }
    pthread_mutex_unlock(&registry_lock);
}

/* The bucket of a key, created on first use; NULL on out of memory. Called with the lock held. */
static fs_token_bucket *bucket_for(const char *key, long per_minute, int64_t now_ms)
{
    for (endpoint_bucket *e = registry; e; e = e->next) {
        if (strcmp(e->key, key) == 0) {
            /* profiles of one endpoint may disagree: the latest setting wins */
            if (e->bucket.per_ms != (double)per_minute / 60000.0)
                fs_token_bucket_set_rate(&e->bucket, per_minute, 1.0, now_ms);
            return &e->bucket;
        }
    }
    endpoint_bucket *e = fs_calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->key = fs_strdup(key);
    if (!e->key) {
        fs_free(e);
        return NULL;
    }
    fs_token_bucket_init(&e->bucket, per_minute, 1.0, now_ms);
    e->next = registry;
    registry = e;
    return &e->bucket;
}

/* The endpoint part of a key: the base URL with its origin normalised (scheme and host
 * lower-cased, the default port explicit), its path kept as written (paths are case-sensitive:
 * eClinicalWorks practice codes are part of it) minus trailing slashes, its query and fragment
 * dropped. "HTTPS://Fhir4.example/fhir/r4/P1/" and "https://fhir4.example:443/fhir/r4/P1" are
 * one endpoint; ".../r4/P2" is another. A base URL without an origin is used as written. NULL on
 * out of memory. */
static char *endpoint_base(const char *base_url)
{
    char *origin = NULL;
    if (fs_url_origin(base_url, &origin, NULL) != FHIRSYNC_OK)
        return fs_strdup(base_url);
    const char *authority = strstr(base_url, "://");
    const char *path = authority ? authority + 3 + strcspn(authority + 3, "/?#") : "";
    size_t path_len = strcspn(path, "?#");
    while (path_len > 0 && path[path_len - 1] == '/')
        path_len--;
    fs_buf b;
    fs_buf_init(&b);
    bool ok = fs_buf_append_str(&b, origin) && fs_buf_append(&b, path, path_len);
    fs_free(origin);
    if (!ok) {
        fs_buf_free(&b);
        return NULL;
    }
    return fs_buf_steal(&b);
}

fhirsync_code fs_ratelimit_acquire(const char *base_url, const char *client_id, long per_minute,
                                   fhirsync_error *err)
{
    if (per_minute <= 0)
        return FHIRSYNC_OK;
    char *base = endpoint_base(base_url ? base_url : "");
    fs_buf key;
    fs_buf_init(&key);
    /* a URL holds no space: the first one ends the base */
    if (!base || !fs_buf_printf(&key, "%s %s", base, client_id ? client_id : "")) {
        fs_free(base);
        fs_buf_free(&key);
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory in the rate limiter");
    }
    pthread_mutex_lock(&registry_lock);
    int64_t now = clock_ms();
    fs_token_bucket *b = bucket_for(key.data, per_minute, now);
    int64_t wait = b ? fs_token_bucket_take(b, now) : 0;
    bool (*sleep_fn)(int64_t) = sleeper;
    pthread_mutex_unlock(&registry_lock);
    fhirsync_code rc = FHIRSYNC_OK;
    if (!b) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory in the rate limiter");
    } else if (wait > 0) {
        if (wait > 1000)
            fs_log(FHIRSYNC_LOG_INFO,
                   "rate limit: waiting %.1f s for a request slot of %s (%ld requests per minute)",
                   (double)wait / 1000.0, *base ? base : "the endpoint", per_minute);
        if (!sleep_fn(wait))
            rc = fs_err(err, FHIRSYNC_E_CANCELLED,
                        "cancelled while waiting for a request slot (rate limit %ld per minute)",
                        per_minute);
    }
    fs_free(base);
    fs_buf_free(&key);
    return rc;
}
