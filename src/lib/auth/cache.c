/* auth/cache.c: the process-wide token cache, keyed by (token URL, client id, scope), so that
 * every handle of the process for the same client shares one token instead of asking the server
 * for a new one each time (eClinicalWorks counts token requests against its rate limit). Tokens
 * are wiped when replaced or dropped. A mutex makes it safe from any thread. */
#include <pthread.h>
#include <string.h>

#include "auth/auth_internal.h"

typedef struct entry {
    struct entry *next;
    char *token_url;
    char *client_id;
    char *scope_key;
    fs_cached_token tok;
} entry;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static entry *entries;

void fs_cached_token_clear(fs_cached_token *tok)
{
    fs_secret_free(tok->access_token); /* each copy holds its own registration */
    fs_free(tok->token_type);
    fs_free(tok->scope);
    memset(tok, 0, sizeof *tok);
}

static bool copy_token(fs_cached_token *dst, const fs_cached_token *src)
{
    memset(dst, 0, sizeof *dst);
    dst->access_token = fs_secret_strdup(src->access_token);
    dst->token_type = fs_strdup(src->token_type);
    dst->scope = fs_strdup(src->scope);
    dst->obtained_at = src->obtained_at;
    dst->expires_at = src->expires_at;
    dst->expires_in_missing = src->expires_in_missing;
    if (!dst->access_token || !dst->token_type || !dst->scope) {
        fs_cached_token_clear(dst);
        return false;
    }
    return true;
}

static entry **find(const char *token_url, const char *client_id, const char *scope)
{
    for (entry **e = &entries; *e; e = &(*e)->next)
        if (strcmp((*e)->token_url, token_url) == 0 && strcmp((*e)->client_id, client_id) == 0 &&
            strcmp((*e)->scope_key, scope) == 0)
            return e;
    return NULL;
}

static void free_entry(entry *e)
{
    fs_cached_token_clear(&e->tok);
    fs_free(e->token_url);
    fs_free(e->client_id);
    fs_free(e->scope_key);
    fs_free(e);
}

/* Time left before which a token is renewed: a minute, or a third of its life if shorter. */
static int64_t margin_of(const fs_cached_token *tok)
{
    int64_t life = tok->expires_at - tok->obtained_at;
    int64_t m = life / 3;
    return m < FS_TOKEN_RENEW_MARGIN ? m : FS_TOKEN_RENEW_MARGIN;
}

bool fs_token_cache_get(const char *token_url, const char *client_id, const char *scope,
                        int64_t now, fs_cached_token *out)
{
    bool found = false;
    pthread_mutex_lock(&lock);
    entry **e = find(token_url, client_id, scope);
    if (e && (*e)->tok.expires_at - now > margin_of(&(*e)->tok))
        found = copy_token(out, &(*e)->tok);
    pthread_mutex_unlock(&lock);
    return found;
}

bool fs_token_cache_put(const char *token_url, const char *client_id, const char *scope,
                        const fs_cached_token *tok)
{
    entry *fresh = fs_calloc(1, sizeof *fresh);
    if (!fresh)
        return false;
    fresh->token_url = fs_strdup(token_url);
    fresh->client_id = fs_strdup(client_id);
    fresh->scope_key = fs_strdup(scope);
    if (!fresh->token_url || !fresh->client_id || !fresh->scope_key ||
        !copy_token(&fresh->tok, tok)) {
        free_entry(fresh);
        return false;
    }
    pthread_mutex_lock(&lock);
    entry **old = find(token_url, client_id, scope);
    if (old) {
        entry *gone = *old;
        *old = gone->next;
        free_entry(gone);
    }
    fresh->next = entries;
    entries = fresh;
    pthread_mutex_unlock(&lock);
    return true;
}

void fs_token_cache_drop(const char *token_url, const char *client_id, const char *scope)
{
    pthread_mutex_lock(&lock);
    entry **e = find(token_url, client_id, scope);
    if (e) {
        entry *gone = *e;
        *e = gone->next;
        free_entry(gone);
    }
    pthread_mutex_unlock(&lock);
}

void fs_token_cache_clear(void)
{
    pthread_mutex_lock(&lock);
    while (entries) {
        entry *gone = entries;
        entries = gone->next;
        free_entry(gone);
    }
    pthread_mutex_unlock(&lock);
}
