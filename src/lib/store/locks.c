/* store/locks.c: endpoint locks, so that no two processes or handles sync one endpoint at once.
 * The engine holds the lock itself (SQLite: flock() on a side file; PostgreSQL: a session advisory
 * lock), so it dies with its holder; a row in sync_locks says who holds it, for the message the
 * next one gets. A handle releases its locks when it closes. */
#include <stdio.h>
#include <string.h>

#include "store/shared_private.h"
#include "store/store_internal.h"

bool fs_store_holds_lock(const fhirsync_store *s, const char *endpoint)
{
    for (const fs_store_lock *l = s->locks; l; l = l->next)
        if (strcmp(l->endpoint, endpoint) == 0)
            return true;
    return false;
}

typedef struct holder_row {
    char text[512];
    bool found;
} holder_row;

static int describe_holder(void *userdata, int ncols, const char *const *v, const size_t *lengths,
                           const char *const *names)
{
    (void)lengths;
    (void)names;
    holder_row *h = userdata;
    if (ncols < 5)
        return 1;
    h->found = true;
    snprintf(h->text, sizeof h->text, "pid %s on host %s%s%s%s since %s, last heartbeat %s",
             v[0] ? v[0] : "?", v[1] ? v[1] : "?", v[2] ? " (owner " : "", v[2] ? v[2] : "",
             v[2] ? ")" : "", v[3] ? v[3] : "?", v[4] ? v[4] : "?");
    return 1;
}

static fhirsync_code locked_error(fhirsync_store *s, fs_store_lock *l, fhirsync_error *err)
{
    holder_row h = {{0}, false};
    fs_sql_value p = fs_sql_text(l->endpoint);
    fhirsync_error ignored;
    (void)s->ops->exec(s,
                       "SELECT pid, hostname, owner, acquired_at, heartbeat_at FROM sync_locks"
                       " WHERE endpoint = ?1",
                       true, &p, 1, describe_holder, &h, NULL, &ignored);
    char session[160] = "";
    s->ops->lock_holder(s, l, session, sizeof session);
    if (h.found)
        return fs_err(err, FHIRSYNC_E_LOCKED, "endpoint '%s' is being synced by %s%s%s",
                      l->endpoint, h.text, session[0] ? "; " : "", session);
    return fs_err(err, FHIRSYNC_E_LOCKED, "endpoint '%s' is being synced by another process%s%s",
                  l->endpoint, session[0] ? ": " : "", session);
}

static void free_lock(fs_store_lock *l)
{
    if (l) {
        fs_free(l->endpoint);
        fs_free(l);
    }
}

fhirsync_code fs_store_lock_endpoint(fhirsync_store *store, const char *endpoint, const char *owner,
                                     long timeout_ms, fhirsync_error *err)
{
    fhirsync_code rc = fs_store_check_writable(store, err);
    if (rc == FHIRSYNC_OK)
        rc = fs_store_check_outside_batch(store, "locking an endpoint", err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (!endpoint || !*endpoint)
        return fs_err(err, FHIRSYNC_E_ARG, "no endpoint to lock");
    if (fs_store_holds_lock(store, endpoint))
        return FHIRSYNC_OK;
    fs_store_lock *l = fs_calloc(1, sizeof *l);
    if (!l || !(l->endpoint = fs_strdup(endpoint))) {
        free_lock(l);
        return fs_store_nomem(err);
    }
    l->key = fs_store_hash("fhirsync-sync-lock", endpoint);
    l->fd = -1;
    int64_t deadline = fs_monotonic_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        bool acquired = false;
        rc = store->ops->lock_try(store, l, &acquired, err);
        if (rc != FHIRSYNC_OK || acquired)
            break;
        int64_t left = deadline - fs_monotonic_ms();
        if (timeout_ms == 0 || (timeout_ms > 0 && left <= 0)) {
            rc = locked_error(store, l, err);
            break;
        }
        if (!fs_sleep_ms(timeout_ms < 0 || left > 100 ? 100 : left)) {
            rc = fs_err(err, FHIRSYNC_E_CANCELLED, "cancelled while waiting for the lock of %s",
                        endpoint);
            break;
        }
    }
    if (rc != FHIRSYNC_OK) {
        free_lock(l);
        return rc;
    }
    /* who holds it, for the next one who asks */
    const char *now = fs_store_loaded_at(store);
    fs_sql_value p[5] = {fs_sql_text(endpoint), fs_sql_int(store->pid),
                         fs_sql_text(store->hostname), fs_sql_text(owner), fs_sql_text(now)};
    bool own;
    rc = fs_store_tx_open(store, &own, err);
    if (rc == FHIRSYNC_OK) {
        rc = store->ops->exec(store,
                              "INSERT INTO sync_locks (endpoint, pid, hostname, owner, acquired_at,"
                              " heartbeat_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)"
                              " ON CONFLICT (endpoint) DO UPDATE SET pid = excluded.pid,"
                              " hostname = excluded.hostname, owner = excluded.owner,"
                              " acquired_at = excluded.acquired_at,"
                              " heartbeat_at = excluded.heartbeat_at",
                              true, p, 5, NULL, NULL, NULL, err);
        rc = fs_store_tx_close(store, own, rc, err);
    }
    if (rc != FHIRSYNC_OK) {
        store->ops->lock_release(store, l);
        free_lock(l);
        return rc;
    }
    l->next = store->locks;
    store->locks = l;
    fs_log(FHIRSYNC_LOG_DEBUG, "store: locked endpoint %s", endpoint);
    return FHIRSYNC_OK;
}

static fs_store_lock **find_lock(fhirsync_store *s, const char *endpoint)
{
    for (fs_store_lock **l = &s->locks; *l; l = &(*l)->next)
        if (strcmp((*l)->endpoint, endpoint) == 0)
            return l;
    return NULL;
}

/* Remove the row (best effort when `err` is NULL) and release the OS/session lock. */
static fhirsync_code release_lock(fhirsync_store *s, fs_store_lock **link, fhirsync_error *err)
{
    fs_store_lock *l = *link;
    fhirsync_code rc = FHIRSYNC_OK;
    if (!s->in_batch) {
        fs_sql_value p[3] = {fs_sql_text(l->endpoint), fs_sql_int(s->pid),
                             fs_sql_text(s->hostname)};
        fhirsync_error ignored;
        rc = s->ops->exec(s,
                          "DELETE FROM sync_locks WHERE endpoint = ?1 AND pid = ?2"
                          " AND hostname = ?3",
                          true, p, 3, NULL, NULL, NULL, err ? err : &ignored);
    }
    s->ops->lock_release(s, l);
    *link = l->next;
    free_lock(l);
    return rc;
}

fhirsync_code fs_store_unlock_endpoint(fhirsync_store *store, const char *endpoint,
                                       fhirsync_error *err)
{
    fs_store_lock **link = store && endpoint ? find_lock(store, endpoint) : NULL;
    if (!link)
        return fs_err(err, FHIRSYNC_E_ARG, "this handle does not hold the lock of %s",
                      endpoint ? endpoint : "(null)");
    fhirsync_code rc = fs_store_check_outside_batch(store, "unlocking an endpoint", err);
    if (rc != FHIRSYNC_OK)
        return rc;
    return release_lock(store, link, err);
}

void fs_store_release_locks(fhirsync_store *s)
{
    while (s->locks)
        release_lock(s, &s->locks, NULL);
}
