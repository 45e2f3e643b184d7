/* store/store.c: opening and closing a store. The location chooses the engine (a postgresql://
 * URL or a libpq keyword string: PostgreSQL; anything else: an SQLite file), the engine connects,
 * schema.c migrates; closing rolls back an open batch and releases the handle's locks. The rest of
 * the public API (fhirsync/store.h) is in the files named by store_private.h, one concern each. */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "store/shared_private.h"

/* A postgresql:// URL, or a libpq keyword string ("host=/run/postgresql dbname=fhir"). */
static bool is_postgresql(const char *location)
{
    static const char *const keywords[] = {"host",
                                           "hostaddr",
                                           "port",
                                           "dbname",
                                           "user",
                                           "passfile",
                                           "service",
                                           "sslmode",
                                           "options",
                                           "application_name",
                                           "connect_timeout",
                                           "target_session_attrs",
                                           NULL};
    if (strncasecmp(location, "postgresql://", 13) == 0 ||
        strncasecmp(location, "postgres://", 11) == 0)
        return true;
    while (*location == ' ')
        location++;
    for (size_t i = 0; keywords[i]; i++) {
        size_t n = strlen(keywords[i]);
        if (strncmp(location, keywords[i], n) != 0)
            continue;
        const char *p = location + n;
        while (*p == ' ')
            p++;
        if (*p == '=')
            return true;
    }
    return false;
}

fhirsync_code fhirsync_store_open(const char *location, unsigned flags, fhirsync_store **out,
                                  fhirsync_error *err)
{
    if (out)
        *out = NULL;
    if (!out || (flags & ~FHIRSYNC_STORE_READONLY))
        return fs_err(err, FHIRSYNC_E_ARG, "no output, or unknown flags");
    if (!location || !*location)
        location = FHIRSYNC_STORE_DEFAULT;
    fhirsync_store *s = fs_calloc(1, sizeof *s);
    if (!s)
        return fs_store_nomem(err);
    s->flags = flags;
    s->pid = (long)getpid();
    if (!(s->opened = fs_strdup(location))) {
        fs_free(s);
        return fs_store_nomem(err);
    }
    if (gethostname(s->hostname, sizeof s->hostname - 1) != 0)
        snprintf(s->hostname, sizeof s->hostname, "unknown");
    s->hostname[sizeof s->hostname - 1] = '\0';
    if (is_postgresql(location)) {
        s->engine = FS_ENGINE_POSTGRESQL;
        s->ops = &fs_store_postgresql_ops;
    } else {
        s->engine = FS_ENGINE_SQLITE;
        s->ops = &fs_store_sqlite_ops;
    }
    fhirsync_code rc = s->ops->open(s, location, err);
    if (rc == FHIRSYNC_OK)
        rc = fs_schema_migrate(s, err);
    if (rc != FHIRSYNC_OK) {
        fhirsync_store_close(s);
        return rc;
    }
    fs_log(FHIRSYNC_LOG_DEBUG, "store: opened %s (%s, schema version %d%s)", s->location,
           s->ops->name, s->schema_version, (flags & FHIRSYNC_STORE_READONLY) ? ", read-only" : "");
    *out = s;
    return FHIRSYNC_OK;
}

void fhirsync_store_close(fhirsync_store *store)
{
    if (!store)
        return;
    if (store->in_batch)
        fhirsync_store_rollback(store, NULL);
    fs_store_release_locks(store);
    fs_store_views_unload(store);
    for (size_t i = 0; i < store->type_count; i++)
        store->ops->forget_type(store, &store->types[i]);
    store->ops->close(store);
    fs_free(store->types);
    fs_free(store->location);
    fs_free_secret(store->opened);
    fs_free(store);
}

fhirsync_code fhirsync_store_reopen(const fhirsync_store *store, fhirsync_store **out,
                                    fhirsync_error *err)
{
    if (out)
        *out = NULL;
    if (!store || !out)
        return fs_err(err, FHIRSYNC_E_ARG, "no store, or no output");
    return fhirsync_store_open(store->opened, store->flags, out, err);
}

const char *fhirsync_store_engine_name(const fhirsync_store *store)
{
    return store ? store->ops->name : "";
}

const char *fhirsync_store_location(const fhirsync_store *store)
{
    return store && store->location ? store->location : "";
}

int fhirsync_store_schema_version(const fhirsync_store *store)
{
    return store ? store->schema_version : 0;
}

int fhirsync_store_schema_version_supported(void)
{
    return fs_schema_current();
}
