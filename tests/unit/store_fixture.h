/* unit/store_fixture.h: what the store's test programs share (test_store.c, test_store_views.c):
 * a fresh directory under $FHIRSYNC_TEST_TMP (or /tmp), a fixture per test naming the store (an
 * SQLite file, or the PostgreSQL URL of FHIRSYNC_TEST_PG with the public schema emptied), and
 * read-only queries of one value. Included once per test program, after cmocka.h. */
#ifndef FHIRSYNC_TESTS_STORE_FIXTURE_H
#define FHIRSYNC_TESTS_STORE_FIXTURE_H

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <libpq-fe.h>

#include "core/core.h"
#include "fhirsync/store.h"

static char tmpdir[PATH_MAX / 2];
static const char *pg_url; /* FHIRSYNC_TEST_PG */
static unsigned test_counter;

typedef struct fixture {
    bool pg;
    char location[PATH_MAX];
    char path[PATH_MAX]; /* SQLite: the file */
} fixture;

static int group_setup(void **state)
{
    (void)state;
    const char *base = getenv("FHIRSYNC_TEST_TMP");
    if (!base || !*base)
        base = "/tmp";
    mkdir(base, 0700);
    snprintf(tmpdir, sizeof tmpdir, "%s/store-XXXXXX", base);
    if (!mkdtemp(tmpdir))
        return -1;
    return fhirsync_global_init() == FHIRSYNC_OK ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    char cmd[PATH_MAX];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    int rc = system(cmd);
    fhirsync_global_cleanup();
    return rc == 0 ? 0 : -1;
}

/* A raw libpq connection for what the tests do behind the store's back. */
static PGconn *pg_raw(void)
{
    PGconn *conn = PQconnectdb(pg_url);
    if (PQstatus(conn) != CONNECTION_OK)
        fail_msg("cannot connect to %s: %s", pg_url, PQerrorMessage(conn));
    PQclear(PQexec(conn, "SET client_min_messages = warning"));
    return conn;
}

static void pg_run(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(conn));
    PQclear(res);
}

/* An empty public schema. */
static void pg_reset(void)
{
    PGconn *conn = pg_raw();
    pg_run(conn, "DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public");
    PQfinish(conn);
}

static int setup_sqlite(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    snprintf(f->path, sizeof f->path, "%s/t%u.db", tmpdir, ++test_counter);
    snprintf(f->location, sizeof f->location, "%s", f->path);
    fs_time_set_offset(0);
    *state = f;
    return 0;
}

static int setup_pg(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->pg = true;
    snprintf(f->location, sizeof f->location, "%s", pg_url);
    pg_reset();
    fs_time_set_offset(0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fs_alloc_fail_at(0);
    fs_time_set_offset(0);
    free(*state);
    return 0;
}

/* After a PostgreSQL test: an empty schema again, for whatever runs next on the server. */
static int teardown_pg(void **state)
{
    pg_reset();
    return teardown(state);
}

static fhirsync_store *open_store(const fixture *f)
{
    fhirsync_store *s = NULL;
    fhirsync_error err = {0};
    if (fhirsync_store_open(f->location, 0, &s, &err) != FHIRSYNC_OK)
        fail_msg("open %s: %s", f->location, err.message);
    return s;
}

/* One text value of a read-only query. */
typedef struct scalar {
    char text[4096];
    size_t len;
    bool null;
    int rows;
} scalar;

static int scalar_row(size_t ncols, const char *const *names, const char *const *values,
                      const size_t *lengths, void *userdata)
{
    (void)names;
    scalar *sc = userdata;
    if (sc->rows++ == 0 && ncols > 0) {
        sc->null = values[0] == NULL;
        sc->len = values[0] ? lengths[0] : 0;
        if (sc->len >= sizeof sc->text)
            sc->len = sizeof sc->text - 1;
        if (values[0])
            memcpy(sc->text, values[0], sc->len);
        sc->text[sc->len] = '\0';
    }
    return 0;
}

static scalar query1(fhirsync_store *s, const char *sql)
{
    scalar sc;
    memset(&sc, 0, sizeof sc);
    fhirsync_error err = {0};
    if (fhirsync_store_query(s, sql, scalar_row, &sc, &err) != FHIRSYNC_OK)
        fail_msg("%s: %s", sql, err.message);
    return sc;
}

/* The query's first value as a number (0 for NULL); -1 without a row. */
static long query_long(fhirsync_store *s, const char *sql)
{
    scalar sc = query1(s, sql);
    return sc.rows ? strtol(sc.text, NULL, 10) : -1;
}

#endif
