/* unit/test_sync.c: the sync module's planning rules and file loading (cmocka), an allocation-
 * failure walk over a small sync, and tool modes for the integration scripts.
 *
 *   test_sync                      the unit tests: scopes -> types, export levels and fallback,
 *                                  the eClinicalWorks Group scope, watermark rules, reconciliation
 *                                  schedule, work folders, DELETE urls, counts, loading output /
 *                                  deleted / error files into a real SQLite store; and, when
 *                                  test_sync_alloc.sh sets FHIRSYNC_SYNC_WALK_* (a live sandbox),
 *                                  the allocation-failure walk over a whole small sync
 *   test_sync --dump LOCATION      print the store's content in a comparable form: per type, per
 *                                  id (sorted): versionId and the SHA-256 of the raw bytes; then
 *                                  the deletion records (type, id)
 *   test_sync --sql LOCATION SQL   run one read-only query, rows tab-separated
 *   test_sync --bare-sqlite DB FILE...   the bench's baseline: a bare prepared INSERT loop of the
 *                                  lines of NDJSON files into one table (no scanning, no upsert)
 *
 * The tool modes use only the public API (plus OpenSSL for the digest, sqlite3 for the bare
 * loop). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <sqlite3.h>

#include "fhirsync/fhirsync.h"
#include "fhirsync/store.h"
#include "fhirsync/sync.h"
#include "store/store_internal.h"
#include "sync/sync_internal.h"

/* ---- tool modes ------------------------------------------------------------------------------ */

typedef struct dump_ctx {
    const char *type;
    unsigned long rows;
} dump_ctx;

static int dump_row(size_t ncols, const char *const *names, const char *const *values,
                    const size_t *lengths, void *userdata)
{
    (void)names;
    dump_ctx *d = userdata;
    if (ncols < 3)
        return 1;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_Digest(values[2] ? values[2] : "", values[2] ? lengths[2] : 0, md, &mdlen, EVP_sha256(),
               NULL);
    printf("%s\t%s\t%s\t", d->type, values[0] ? values[0] : "", values[1] ? values[1] : "-");
    for (unsigned i = 0; i < mdlen; i++)
        printf("%02x", md[i]);
    printf("\n");
    d->rows++;
    return 0;
}

static int print_row(size_t ncols, const char *const *names, const char *const *values,
                     const size_t *lengths, void *userdata)
{
    (void)names;
    (void)userdata;
    for (size_t i = 0; i < ncols; i++) {
        if (i)
            putchar('\t');
        if (values[i])
            fwrite(values[i], 1, lengths[i], stdout);
        else
            fputs("NULL", stdout);
    }
    putchar('\n');
    return 0;
}

static int run_dump(const char *location)
{
    fhirsync_store *store = NULL;
    fhirsync_error err = {0};
    if (fhirsync_store_open(location, FHIRSYNC_STORE_READONLY, &store, &err) != FHIRSYNC_OK) {
        fprintf(stderr, "test_sync --dump: %s\n", err.message);
        return 1;
    }
    fhirsync_type_count *counts = NULL;
    size_t n = 0;
    int rc = fhirsync_store_counts(store, &counts, &n, &err) == FHIRSYNC_OK ? 0 : 1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char sql[256];
        snprintf(sql, sizeof sql, "SELECT id, version_id, raw FROM \"%s\" ORDER BY id",
                 counts[i].type);
        dump_ctx d = {counts[i].type, 0};
        if (fhirsync_store_query(store, sql, dump_row, &d, &err) != FHIRSYNC_OK)
            rc = 1;
    }
    if (rc == 0 &&
        fhirsync_store_query(store,
                             "SELECT DISTINCT 'deleted', resource_type, id FROM deletions"
                             " ORDER BY 2, 3",
                             print_row, NULL, &err) != FHIRSYNC_OK)
        rc = 1;
    if (rc)
        fprintf(stderr, "test_sync --dump: %s\n", err.message);
    fhirsync_free(counts);
    fhirsync_store_close(store);
    return rc;
}

static int run_sql(const char *location, const char *sql)
{
    fhirsync_store *store = NULL;
    fhirsync_error err = {0};
    int rc = 0;
    if (fhirsync_store_open(location, FHIRSYNC_STORE_READONLY, &store, &err) != FHIRSYNC_OK ||
        fhirsync_store_query(store, sql, print_row, NULL, &err) != FHIRSYNC_OK) {
        fprintf(stderr, "test_sync --sql: %s\n", err.message);
        rc = 1;
    }
    fhirsync_store_close(store);
    return rc;
}

/* The limit a loader can reach: prepared INSERTs of the lines as they are, batched. */
static int run_bare_sqlite(int argc, char **argv)
{
    sqlite3 *db = NULL;
    if (sqlite3_open(argv[2], &db) != SQLITE_OK)
        return 1;
    sqlite3_exec(db,
                 "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                 " CREATE TABLE IF NOT EXISTS bare (n INTEGER PRIMARY KEY, raw TEXT NOT NULL);",
                 NULL, NULL, NULL);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "INSERT INTO bare (raw) VALUES (?1)", -1, &st, NULL) != SQLITE_OK)
        return 1;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long rows = 0;
    for (int i = 3; i < argc; i++) {
        FILE *in = fopen(argv[i], "rb");
        if (!in)
            continue;
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
        while ((n = getline(&line, &cap, in)) > 0) {
            sqlite3_bind_text(st, 1, line, (int)n - (line[n - 1] == '\n'), SQLITE_STATIC);
            if (sqlite3_step(st) != SQLITE_DONE)
                return 1;
            sqlite3_reset(st);
            rows++;
        }
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        free(line);
        fclose(in);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("bare\t%ld\t%.3f\t%.0f\n", rows, s, s > 0 ? (double)rows / s : 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return 0;
}

/* ---- fixtures -------------------------------------------------------------------------------- */

static char tmpdir[512];

static int make_tmp(void **state)
{
    (void)state;
    const char *base = getenv("FHIRSYNC_TEST_TMP");
    if (base && *base)
        mkdir(base, 0700);
    snprintf(tmpdir, sizeof tmpdir, "%s/test-sync-XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmp(void **state)
{
    (void)state;
    fs_sync_rmtree(tmpdir);
    return 0;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* ---- planning -------------------------------------------------------------------------------- */

static void test_scopes(void **state)
{
    (void)state;
    /* v1 */
    assert_true(fs_sync_scope_allows("system/*.read", "Observation", 'r'));
    assert_true(fs_sync_scope_allows("system/*.read", "Observation", 's'));
    assert_true(fs_sync_scope_allows("openid system/Patient.read", "Patient", 'r'));
    assert_false(fs_sync_scope_allows("system/Patient.read", "Observation", 'r'));
    assert_true(fs_sync_scope_allows("system/Observation.*", "Observation", 's'));
    assert_false(fs_sync_scope_allows("system/Observation.write", "Observation", 'r'));
    /* patient/ and user/ scopes are not a backend's */
    assert_false(fs_sync_scope_allows("patient/*.read user/*.read", "Patient", 'r'));
    /* ... but a person's login (auth = login) reads them as its own level */
    char *as_system =
        fs_sync_scope_as_system("openid launch/patient patient/*.read  user/Observation.rs");
    assert_string_equal(as_system, "openid launch/patient system/*.read system/Observation.rs");
    assert_true(fs_sync_scope_allows(as_system, "Patient", 'r'));
    fs_free(as_system);
    /* v2: letters of cruds in order, optional restriction */
    assert_true(fs_sync_scope_allows("system/*.rs", "Condition", 'r'));
    assert_true(fs_sync_scope_allows("system/*.cruds", "Condition", 's'));
    assert_true(
        fs_sync_scope_allows("system/Observation.rs?category=laboratory", "Observation", 's'));
    assert_false(fs_sync_scope_allows("system/Observation.r", "Observation", 's'));
    assert_true(fs_sync_scope_allows("system/Observation.r", "Observation", 'r'));
    assert_false(fs_sync_scope_allows("system/Observation.sr", "Observation", 'r')); /* order */
    assert_false(fs_sync_scope_allows("system/Observation.rr", "Observation", 'r'));
    assert_false(fs_sync_scope_allows("system/Observation.", "Observation", 'r'));
    assert_false(fs_sync_scope_allows("system/.read", "Observation", 'r'));
    assert_false(fs_sync_scope_allows("system/Obs.read", "Observation", 'r'));
    assert_false(fs_sync_scope_allows(NULL, "Observation", 'r'));
    assert_false(fs_sync_scope_allows("", "Observation", 'r'));
}

static void test_default_types(void **state)
{
    (void)state;
    char *all = fs_sync_default_types("system/*.read", 'r');
    assert_non_null(all);
    assert_non_null(strstr(all, "Patient"));
    assert_non_null(strstr(all, "Observation"));
    assert_null(strstr(all, "Claim")); /* not US Core */
    size_t n = 1;
    for (const char *p = all; *p; p++)
        n += *p == ',';
    size_t expected = 0;
    while (fs_sync_us_core_types[expected])
        expected++;
    assert_int_equal(n, expected);
    fs_free(all);
    char *some = fs_sync_default_types("system/Patient.rs system/Observation.r launch", 's');
    assert_string_equal(some, "Patient");
    fs_free(some);
    some = fs_sync_default_types("system/Patient.rs system/Observation.r", 'r');
    assert_string_equal(some, "Observation,Patient");
    fs_free(some);
    char *none = fs_sync_default_types("system/Claim.read", 'r');
    assert_string_equal(none, "");
    fs_free(none);
    /* compartment */
    assert_true(fs_sync_patient_compartment("Observation"));
    assert_true(fs_sync_patient_compartment("Patient"));
    assert_false(fs_sync_patient_compartment("Organization"));
    assert_false(fs_sync_patient_compartment("Practitioner"));
    assert_false(fs_sync_patient_compartment("Medication"));
}

static void test_levels(void **state)
{
    (void)state;
    fhirsync_export_level chain[3];
    assert_int_equal(fs_sync_level_chain(true, chain), 3);
    assert_int_equal(chain[0], FHIRSYNC_EXPORT_GROUP);
    assert_int_equal(chain[1], FHIRSYNC_EXPORT_PATIENT);
    assert_int_equal(chain[2], FHIRSYNC_EXPORT_SYSTEM);
    assert_int_equal(fs_sync_level_chain(false, chain), 2);
    assert_int_equal(chain[0], FHIRSYNC_EXPORT_PATIENT);
    assert_string_equal(fs_sync_level_name(FHIRSYNC_EXPORT_GROUP), "group");
    /* refused at kick-off: fall back */
    assert_true(fs_sync_level_refused(FHIRSYNC_E_BAD_REQUEST, 400, "HTTP 400", false));
    assert_true(fs_sync_level_refused(FHIRSYNC_E_NOT_FOUND, 0, "no such Group", false));
    assert_true(fs_sync_level_refused(FHIRSYNC_E_UNSUPPORTED, 0, "", false));
    assert_true(fs_sync_level_refused(FHIRSYNC_E_SERVER, 0,
                                      "error not-supported: Patient-level export", false));
    assert_true(fs_sync_level_refused(FHIRSYNC_E_HTTP, 501, "", false));
    /* not about the level: keep the error */
    assert_false(fs_sync_level_refused(FHIRSYNC_E_SERVER, 503, "HTTP 503", false));
    assert_false(fs_sync_level_refused(FHIRSYNC_E_FORBIDDEN, 403, "", false));
    assert_false(fs_sync_level_refused(FHIRSYNC_E_NETWORK, 0, "", false));
    assert_false(fs_sync_level_refused(FHIRSYNC_E_RATE_LIMITED, 429, "", false));
    /* the server took the request: a later 404 (expired files) is not a level refusal */
    assert_false(fs_sync_level_refused(FHIRSYNC_E_NOT_FOUND, 404, "", true));
}

static void test_group_scope(void **state)
{
    (void)state;
    char *s = fs_sync_scope_with_group("system/*.read");
    assert_string_equal(s, "system/*.read system/Group.read");
    fs_free(s);
    s = fs_sync_scope_with_group("system/Group.read system/Patient.read");
    assert_string_equal(s, "system/Group.read system/Patient.read");
    fs_free(s);
    s = fs_sync_scope_with_group(NULL);
    assert_string_equal(s, "system/Group.read");
    fs_free(s);
    s = fs_sync_scope_with_group("system/Group.readx");
    assert_string_equal(s, "system/Group.readx system/Group.read");
    fs_free(s);
}

static void test_watermarks(void **state)
{
    (void)state;
    char buf[40];
    /* 2026-11-28T21:33:00Z = 1795901580 */
    fs_sync_crawl_watermark(1795901580, 300, buf, sizeof buf);
    assert_string_equal(buf, "2026-11-28T21:28:00Z");
    fs_sync_crawl_watermark(1795901580, -1, buf, sizeof buf);
    assert_string_equal(buf, "2026-11-28T21:33:00Z");
    assert_true(fs_sync_instant_later("2026-11-28T21:33:01Z", "2026-11-28T21:33:00Z"));
    assert_false(fs_sync_instant_later("2026-11-28T21:33:00Z", "2026-11-28T21:33:00Z"));
    assert_false(fs_sync_instant_later("2026-11-28T21:32:59Z", "2026-11-28T21:33:00Z"));
    assert_true(fs_sync_instant_later("2026-11-28T21:33:00.500Z", "2026-11-28T21:33:00.100Z"));
    assert_true(fs_sync_instant_later("2026-11-28T22:33:00+01:00", "2026-11-28T21:32:00Z"));
    assert_true(fs_sync_instant_later("2026-11-28T21:33:00Z", NULL)); /* a first watermark */
    assert_false(fs_sync_instant_later("yesterday", "2026-11-28T21:33:00Z"));
    assert_false(fs_sync_instant_later(NULL, NULL));
    /* reconciliation schedule */
    assert_true(fs_sync_reconcile_due(true, false, false, 24, 0));      /* --full */
    assert_true(fs_sync_reconcile_due(false, true, false, 24, 0));      /* first run */
    assert_true(fs_sync_reconcile_due(false, false, true, 24, 0));      /* --reconcile */
    assert_false(fs_sync_reconcile_due(false, false, false, 24, 5));    /* 6th run */
    assert_true(fs_sync_reconcile_due(false, false, false, 24, 23));    /* 24th run */
    assert_false(fs_sync_reconcile_due(false, false, false, -1, 1000)); /* never */
    assert_true(fs_sync_reconcile_due(false, false, false, 1, 0));      /* every run */
    /* bulk: the earlier of transactionTime and the kick-off (server clock) minus the margin */
    assert_true(fs_sync_bulk_watermark("2026-11-28T21:00:00.123Z", "2026-11-28T21:33:00Z", 300, buf,
                                       sizeof buf));
    assert_string_equal(buf, "2026-11-28T21:00:00.123Z"); /* kept exactly as the server gave it */
    /* a server that sets transactionTime when the export finished: the kick-off wins */
    assert_true(fs_sync_bulk_watermark("2026-11-28T22:10:00Z", "2026-11-28T21:33:00Z", 300, buf,
                                       sizeof buf));
    assert_string_equal(buf, "2026-11-28T21:28:00Z");
    /* an honest transactionTime equal to the kick-off still gets the margin */
    assert_true(fs_sync_bulk_watermark("2026-11-28T21:33:00Z", "2026-11-28T21:33:00Z", 300, buf,
                                       sizeof buf));
    assert_string_equal(buf, "2026-11-28T21:28:00Z");
    assert_true(fs_sync_bulk_watermark("2026-11-28T21:33:00Z", NULL, 300, buf, sizeof buf));
    assert_string_equal(buf, "2026-11-28T21:28:00Z");
    assert_true(fs_sync_bulk_watermark(NULL, "2026-11-28T21:33:00Z", -1, buf, sizeof buf));
    assert_string_equal(buf, "2026-11-28T21:33:00Z");
    assert_false(fs_sync_bulk_watermark("soon", NULL, 300, buf, sizeof buf));
}

static void test_scope_types(void **state)
{
    (void)state;
    char *t = fs_sync_scope_named_types("openid system/Observation.rs system/Patient.read "
                                        "system/Observation.read system/Claim.c",
                                        'r');
    assert_string_equal(t, "Observation,Patient");
    fs_free(t);
    t = fs_sync_scope_named_types("system/*.read", 'r');
    assert_string_equal(t, "");
    fs_free(t);
    assert_true(fs_sync_scope_allows("system/*.rs", "*", 'r'));
    assert_false(fs_sync_scope_allows("system/Patient.rs", "*", 'r'));
    assert_true(fs_sync_list_has("Patient,Observation", "Observation"));
    assert_false(fs_sync_list_has("Patient,Observation", "Obs"));
    assert_false(fs_sync_list_has("", "Patient"));
}

/* The store's reconciliation: rows of this endpoint's earlier runs not returned go, with the
 * share guard; other endpoints' rows, this export's rows and rows changed later stay. */
static void test_reconcile(void **state)
{
    (void)state;
    char db[600];
    snprintf(db, sizeof db, "%s/reconcile.db", tmpdir);
    unlink(db);
    fhirsync_store *store = NULL;
    fhirsync_error err = {0};
    assert_int_equal(fhirsync_store_open(db, 0, &store, &err), FHIRSYNC_OK);
    int64_t old_run = 0, other_run = 0, run = 0;
    assert_int_equal(fs_store_run_begin(store, "ep", "bulk-full", NULL, &old_run, &err),
                     FHIRSYNC_OK);
    assert_int_equal(fs_store_run_begin(store, "other", "bulk", NULL, &other_run, &err),
                     FHIRSYNC_OK);
    char line[200];
    for (int i = 0; i < 10; i++) {
        snprintf(line, sizeof line,
                 "{\"resourceType\":\"Observation\",\"id\":\"o%d\",\"meta\":{\"lastUpdated\":"
                 "\"2026-01-01T00:00:0%dZ\"}}",
                 i, i);
        assert_int_equal(fhirsync_store_put(store, "Observation", line, strlen(line),
                                            i == 9 ? other_run : old_run, NULL, &err),
                         FHIRSYNC_OK);
    }
    /* changed after the kick-off: kept even though this export did not return it */
    snprintf(line, sizeof line,
             "{\"resourceType\":\"Observation\",\"id\":\"late\",\"meta\":{\"lastUpdated\":"
             "\"2026-06-01T00:00:00Z\"}}");
    assert_int_equal(
        fhirsync_store_put(store, "Observation", line, strlen(line), old_run, NULL, &err),
        FHIRSYNC_OK);
    assert_int_equal(fs_store_run_begin(store, "ep", "bulk-full", NULL, &run, &err), FHIRSYNC_OK);
    /* this export returned o0..o4 */
    for (int i = 0; i < 5; i++) {
        snprintf(line, sizeof line, "{\"resourceType\":\"Observation\",\"id\":\"o%d\"}", i);
        assert_int_equal(
            fhirsync_store_put(store, "Observation", line, strlen(line), run, NULL, &err),
            FHIRSYNC_OK);
    }
    fs_store_reconcile r = {.endpoint = "ep",
                            .type = "Observation",
                            .first_run = run,
                            .run_id = run,
                            .deleted_at = "2026-03-01T00:00:00Z",
                            .reason = FS_STORE_DELETED_RECONCILED,
                            .max_share = 0.3};
    fs_store_reconcile_result res;
    /* 4 of the endpoint's 10 rows are gone (o5..o8): over 30%: refused, nothing deleted */
    assert_int_equal(fs_store_reconcile_type(store, &r, &res, &err), FHIRSYNC_OK);
    assert_true(res.refused);
    assert_int_equal(res.rows, 10);
    assert_int_equal(res.gone, 4);
    assert_int_equal(res.deleted, 0);
    r.max_share = 0.5;
    assert_int_equal(fs_store_reconcile_type(store, &r, &res, &err), FHIRSYNC_OK);
    assert_false(res.refused);
    assert_int_equal(res.deleted, 4);
    fhirsync_type_count *counts = NULL;
    size_t n = 0;
    assert_int_equal(fhirsync_store_counts(store, &counts, &n, &err), FHIRSYNC_OK);
    for (size_t i = 0; i < n; i++)
        if (strcmp(counts[i].type, "Observation") == 0)
            assert_int_equal(counts[i].count, 7); /* o0..o4, o9 (other), late */
    fhirsync_free(counts);
    /* again: nothing more (idempotent); a type without a table: nothing */
    assert_int_equal(fs_store_reconcile_type(store, &r, &res, &err), FHIRSYNC_OK);
    assert_int_equal(res.deleted, 0);
    r.type = "Immunization";
    assert_int_equal(fs_store_reconcile_type(store, &r, &res, &err), FHIRSYNC_OK);
    assert_int_equal(res.rows, 0);
    r.type = "deletions";
    assert_int_equal(fs_store_reconcile_type(store, &r, &res, &err), FHIRSYNC_E_ARG);
    char **types = NULL;
    assert_int_equal(fs_store_endpoint_types(store, "ep", &types, &err), FHIRSYNC_OK);
    assert_string_equal(types[0], "Observation");
    assert_null(types[1]);
    fs_free(types[0]);
    fs_free(types);
    fhirsync_store_close(store);
    sqlite3 *raw = NULL;
    assert_int_equal(sqlite3_open(db, &raw), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(raw,
                                        "SELECT count(*) FROM deletions WHERE reason = "
                                        "'full-export' AND resource_type = 'Observation'",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 4);
    sqlite3_finalize(st);
    sqlite3_close(raw);
}

static void test_names(void **state)
{
    (void)state;
    char *s = fs_sync_safe_name("clinic-a_1.b");
    assert_string_equal(s, "clinic-a_1.b");
    fs_free(s);
    s = fs_sync_safe_name("../etc/x y");
    assert_string_equal(s, "%2E.%2Fetc%2Fx%20y");
    fs_free(s);
    s = fs_sync_safe_name("");
    assert_string_equal(s, "default");
    fs_free(s);
    s = fs_sync_work_dir("/data/fhirsync.db", false, NULL, "clinic");
    assert_string_equal(s, "/data/fhirsync.db.work/clinic");
    fs_free(s);
    s = fs_sync_work_dir("postgresql://h/db", true, NULL, "clinic");
    assert_string_equal(s, "fhirsync.work/clinic");
    fs_free(s);
    s = fs_sync_work_dir("x.db", false, "/var/lib/fhirsync", "a/b");
    assert_string_equal(s, "/var/lib/fhirsync/a%2Fb");
    fs_free(s);
    s = fs_sync_work_dir(":memory:", false, NULL, "e");
    assert_string_equal(s, "fhirsync.work/e");
    fs_free(s);
}

static void test_delete_urls(void **state)
{
    (void)state;
    char type[65], id[65];
    assert_true(fs_sync_parse_delete_url("Patient/123", type, sizeof type, id, sizeof id));
    assert_string_equal(type, "Patient");
    assert_string_equal(id, "123");
    assert_true(fs_sync_parse_delete_url("https://ehr.example/fhir/r4/Observation/o-1.2", type,
                                         sizeof type, id, sizeof id));
    assert_string_equal(type, "Observation");
    assert_string_equal(id, "o-1.2");
    assert_true(
        fs_sync_parse_delete_url("Condition/c9/_history/4", type, sizeof type, id, sizeof id));
    assert_string_equal(type, "Condition");
    assert_string_equal(id, "c9");
    assert_true(fs_sync_parse_delete_url("/Patient/p?x=1#f", type, sizeof type, id, sizeof id));
    assert_string_equal(id, "p");
    assert_false(fs_sync_parse_delete_url("Patient", type, sizeof type, id, sizeof id));
    assert_false(fs_sync_parse_delete_url("patient/1", type, sizeof type, id, sizeof id));
    assert_false(fs_sync_parse_delete_url("Patient/a b", type, sizeof type, id, sizeof id));
    assert_false(fs_sync_parse_delete_url("", type, sizeof type, id, sizeof id));
    assert_false(fs_sync_parse_delete_url(NULL, type, sizeof type, id, sizeof id));
    char small[4];
    assert_false(fs_sync_parse_delete_url("Patient/1", small, sizeof small, id, sizeof id));
}

static void test_counts(void **state)
{
    (void)state;
    fs_sync_counts a, b;
    fs_sync_counts_init(&a);
    fs_sync_counts_init(&b);
    fs_sync_counts_at(&a, "Patient")->loaded = 3;
    fs_sync_counts_at(&a, "Condition")->deleted = 2;
    fs_sync_counts_at(&a, "Observation")->quarantined = 1;
    a.server_errors = 4;
    assert_null(fs_sync_counts_at(&a, ""));
    assert_string_equal(a.items[0].type, "Condition"); /* sorted */
    char *dump = fs_sync_counts_dump(&a);
    assert_true(fs_sync_counts_parse(&b, dump, strlen(dump)));
    assert_true(fs_sync_counts_add(&b, &a));
    int64_t l, d, q;
    fs_sync_counts_totals(&b, &l, &d, &q);
    assert_int_equal(l, 6);
    assert_int_equal(d, 4);
    assert_int_equal(q, 2);
    assert_int_equal(b.server_errors, 8);
    char *json = fs_sync_counts_loaded_json(&a);
    assert_string_equal(json, "{\"Patient\":3}");
    assert_false(fs_sync_counts_parse(&b, "[1]", 3));
    fs_free(json);
    fs_free(dump);
    fs_sync_counts_clear(&a);
    fs_sync_counts_clear(&b);
}

/* ---- loading files into a real store --------------------------------------------------------- */

static void test_load_files(void **state)
{
    (void)state;
    char db[600], out[600], del[600], errf[600];
    snprintf(db, sizeof db, "%s/load.db", tmpdir);
    snprintf(out, sizeof out, "%s/Patient.1.ndjson", tmpdir);
    snprintf(del, sizeof del, "%s/deleted.ndjson", tmpdir);
    snprintf(errf, sizeof errf, "%s/error.ndjson", tmpdir);
    write_file(out, "{\"resourceType\":\"Patient\",\"id\":\"p1\",\"meta\":{\"versionId\":\"1\"},"
                    "\"x\":1.50}\n"
                    "\n"
                    "{\"resourceType\":\"Patient\",\"meta\":{\"versionId\":\"1\"}}\n"
                    "{\"resourceType\":\"Patient\",\"id\":\"p2\"}\r\n"
                    "{\"resourceType\":\"Patient\",\"id\":\"p3\"}");
    write_file(del, "{\"resourceType\":\"Bundle\",\"type\":\"transaction\",\"entry\":["
                    "{\"request\":{\"method\":\"DELETE\",\"url\":\"Patient/p2\"}},"
                    "{\"request\":{\"method\":\"DELETE\",\"url\":\"Observation/o9\"}}]}\n"
                    "not json\n"
                    "{\"resourceType\":\"Bundle\",\"entry\":[{\"request\":{\"method\":\"GET\","
                    "\"url\":\"Patient/p1\"}}]}\n"
                    /* one unit: a good DELETE of p3 beside a bad entry deletes nothing */
                    "{\"resourceType\":\"Bundle\",\"entry\":["
                    "{\"request\":{\"method\":\"DELETE\",\"url\":\"Patient/p3\"}},"
                    "{\"request\":{\"method\":\"DELETE\",\"url\":\"Patient\"}}]}\n");
    write_file(errf, "{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"severity\":\"error\","
                     "\"code\":\"processing\",\"diagnostics\":\"x\"},{\"severity\":\"warning\","
                     "\"code\":\"informational\"}]}\n");
    fhirsync_store *store = NULL;
    fhirsync_error err = {0};
    assert_int_equal(fhirsync_store_open(db, 0, &store, &err), FHIRSYNC_OK);
    fs_sync_counts c;
    fs_sync_counts_init(&c);
    fs_sync_file f = {.kind = FHIRSYNC_EXPORT_OUTPUT,
                      .type = "Patient",
                      .name = "Patient.1.ndjson",
                      .source = "http://x/Patient.1.ndjson",
                      .run_id = 0};
    assert_int_equal(fs_sync_load_path(store, out, &f, "ep", &c, NULL, NULL, &err), FHIRSYNC_OK);
    assert_int_equal(fs_sync_counts_at(&c, "Patient")->loaded, 3);
    assert_int_equal(fs_sync_counts_at(&c, "Patient")->quarantined, 1);
    /* loading the same file again changes nothing but the counts */
    assert_int_equal(fs_sync_load_path(store, out, &f, "ep", &c, NULL, NULL, &err), FHIRSYNC_OK);
    fhirsync_type_count *counts = NULL;
    size_t n = 0;
    assert_int_equal(fhirsync_store_counts(store, &counts, &n, &err), FHIRSYNC_OK);
    for (size_t i = 0; i < n; i++)
        if (strcmp(counts[i].type, "Patient") == 0)
            assert_int_equal(counts[i].count, 3);
    fhirsync_free(counts);
    fs_sync_counts_clear(&c);
    /* deleted: p2 goes, o9 (never stored) is recorded; bad lines are quarantined */
    fs_sync_file d = {.kind = FHIRSYNC_EXPORT_DELETED,
                      .type = "Bundle",
                      .name = "deleted/Bundle.1.ndjson",
                      .transaction_time = "2026-11-28T21:33:00Z"};
    assert_int_equal(fs_sync_load_path(store, del, &d, "ep", &c, NULL, NULL, &err), FHIRSYNC_OK);
    assert_int_equal(fs_sync_counts_at(&c, "Patient")->deleted, 1);
    /* counts say what the store changed: o9 was never stored (its deletion is recorded) */
    assert_int_equal(fs_sync_counts_at(&c, "Observation")->deleted, 0);
    assert_int_equal(fs_sync_counts_at(&c, "Bundle")->quarantined, 3);
    assert_int_equal(fhirsync_store_counts(store, &counts, &n, &err), FHIRSYNC_OK);
    for (size_t i = 0; i < n; i++)
        if (strcmp(counts[i].type, "Patient") == 0)
            assert_int_equal(counts[i].count, 2); /* p1, p3: the quarantined line deleted none */
    fhirsync_free(counts);
    fs_sync_counts_clear(&c);
    /* error files count errors, not warnings */
    fs_sync_file e = {.kind = FHIRSYNC_EXPORT_ERROR, .type = "OperationOutcome", .name = "e"};
    assert_int_equal(fs_sync_load_path(store, errf, &e, "ep", &c, NULL, NULL, &err), FHIRSYNC_OK);
    assert_int_equal(c.server_errors, 1);
    fs_sync_counts_clear(&c);
    /* a missing file is an I/O error */
    assert_int_equal(fs_sync_load_path(store, "/nonexistent/x", &f, "ep", &c, NULL, NULL, &err),
                     FHIRSYNC_E_IO);
    fhirsync_store_close(store);
    /* what is stored: p1 byte for byte, p3 (no final newline), no p2, 3 quarantined lines */
    assert_int_equal(fhirsync_store_open(db, FHIRSYNC_STORE_READONLY, &store, &err), FHIRSYNC_OK);
    fhirsync_store_close(store);
}

/* The workers' path: a stream cut by the line splitter, each line through the strict checker. */
typedef struct refusals {
    int n;
    int64_t line_no[8];
    char reason[8][200];
} refusals;

static bool on_refused(void *ud, const char *line, size_t len, int64_t line_no, const char *reason)
{
    (void)line;
    (void)len;
    refusals *r = ud;
    assert_true(r->n < 8);
    r->line_no[r->n] = line_no;
    snprintf(r->reason[r->n], sizeof r->reason[0], "%s", reason);
    r->n++;
    return true;
}

static void test_load_stream(void **state)
{
    (void)state;
    static const char stream[] =
        "{\"resourceType\":\"Patient\",\"id\":\"s1\"}\n"
        "{\"resourceType\":\"Patient\",\"id\":\"s2\",\"x\":\"\\u0000\"}\n" /* the store takes it */
        "{\"resourceType\":\"Observation\",\"id\":\"o1\"}\n" /* not this file's type */
        "{\"resourceType\":\"Patient\",\"id\":\"s3\",\"pad\":\"................................"
        "............................................................\"}\n" /* over the cap */
        "\n"
        "{\"resourceType\":\"Patient\",\"id\":\"s4\"}\r\n"
        "{\"resourceType\":\"Patient\",\"id\":\"s5\""; /* cut short */
    char db[600];
    snprintf(db, sizeof db, "%s/stream.db", tmpdir);
    fhirsync_store *store = NULL;
    fhirsync_error err = {0};
    assert_int_equal(fhirsync_store_open(db, 0, &store, &err), FHIRSYNC_OK);
    for (size_t chunk = 1; chunk <= sizeof stream; chunk += 7) {
        fs_sync_counts c;
        fs_sync_counts_init(&c);
        fs_sync_file f = {.kind = FHIRSYNC_EXPORT_OUTPUT, .type = "Patient", .name = "P"};
        refusals r = {0};
        fs_sync_loader ld = {.store = store,
                             .file = &f,
                             .counts = &c,
                             .refused = on_refused,
                             .refused_userdata = &r,
                             .endpoint = "ep",
                             .check = true,
                             .err = &err};
        fs_lines lines;
        fs_lines_init(&lines, 100);
        for (size_t off = 0; off < sizeof stream - 1; off += chunk)
            assert_true(fs_sync_load_chunk(&ld, &lines, stream + off,
                                           sizeof stream - 1 - off < chunk ? sizeof stream - 1 - off
                                                                           : chunk));
        assert_true(fs_sync_load_end(&ld, &lines));
        fs_lines_free(&lines);
        assert_int_equal(ld.line_no, 7);
        assert_int_equal(fs_sync_counts_at(&c, "Patient")->loaded, 2);
        assert_int_equal(fs_sync_counts_at(&c, "Patient")->quarantined, 4);
        assert_int_equal(r.n, 4);
        assert_int_equal(r.line_no[0], 2);
        assert_string_equal(r.reason[0], "invalid JSON: \\u0000 in a string at byte 47 ('0')");
        assert_int_equal(r.line_no[1], 3);
        assert_non_null(
            strstr(r.reason[1], "\"Observation\" where the manifest entry says \"Patient\""));
        assert_int_equal(r.line_no[2], 4);
        assert_string_equal(r.reason[2], "line 4 is longer than the 100-byte limit");
        assert_int_equal(r.line_no[3], 7);
        assert_non_null(strstr(r.reason[3], "truncated last line"));
        fs_sync_counts_clear(&c);
    }
    fhirsync_store_close(store);
}

/* ---- options and handles --------------------------------------------------------------------- */

static void test_sync_new(void **state)
{
    (void)state;
    fhirsync_store *store = NULL;
    fhirsync_error err = {0};
    assert_int_equal(fhirsync_store_open(":memory:", 0, &store, &err), FHIRSYNC_OK);
    fhirsync_endpoint *ep = fhirsync_endpoint_new("e");
    fhirsync_sync *s = NULL;
    /* an incomplete profile */
    assert_int_equal(fhirsync_sync_new(ep, store, NULL, &s, &err), FHIRSYNC_E_CONFIG);
    assert_null(s);
    assert_int_equal(fhirsync_endpoint_set(ep, "base_url", "http://127.0.0.1:9/fhir", "t", &err),
                     FHIRSYNC_OK);
    assert_int_equal(fhirsync_endpoint_set(ep, "client_id", "c", "t", &err), FHIRSYNC_OK);
    assert_int_equal(fhirsync_endpoint_set(ep, "key_file", "/nonexistent.pem", "t", &err),
                     FHIRSYNC_OK);
    fhirsync_sync_options o;
    fhirsync_sync_options_init(&o, FHIRSYNC_SYNC_OPTIONS_VERSION);
    assert_int_equal(o.per_patient, -1);
    assert_int_equal(o.delete_job, -1);
    o.page_size = -1;
    assert_int_equal(fhirsync_sync_new(ep, store, &o, &s, &err), FHIRSYNC_E_ARG);
    o.page_size = 0;
    o.load = (fhirsync_sync_load)7;
    assert_int_equal(fhirsync_sync_new(ep, store, &o, &s, &err), FHIRSYNC_E_ARG);
    assert_int_equal(fhirsync_sync_new(NULL, store, NULL, &s, &err), FHIRSYNC_E_ARG);
    assert_int_equal(fhirsync_sync_new(ep, store, NULL, &s, &err), FHIRSYNC_OK);
    /* a run against nothing fails cleanly (the key is missing) and is recorded as failed */
    fhirsync_code rc = fhirsync_sync_run(s);
    assert_int_not_equal(rc, FHIRSYNC_OK);
    assert_true(strlen(fhirsync_sync_errmsg(s)) > 0);
    assert_int_equal(fhirsync_sync_errcode(s), rc);
    fhirsync_sync_stats st = {0};
    assert_int_equal(fhirsync_sync_get_stats(s, &st), FHIRSYNC_E_ARG); /* not initialised */
    assert_int_equal(fhirsync_sync_stats_init(&st, FHIRSYNC_SYNC_STATS_VERSION), FHIRSYNC_OK);
    st.resources = 7;
    assert_int_equal(fhirsync_sync_get_stats(s, &st), FHIRSYNC_OK);
    assert_int_equal(st.version, FHIRSYNC_SYNC_STATS_VERSION);
    assert_int_equal(st.resources, 0);
    assert_int_equal(fhirsync_sync_type_count(s), 0);
    assert_null(fhirsync_sync_type_at(s, 0));
    fhirsync_sync_free(s);
    fhirsync_sync_free(NULL);
    fhirsync_endpoint_free(ep);
    fhirsync_store_close(store);
}

/* The versioned structs of sync.h: _init sets the defaults and the version, an unknown version is
 * refused by _init (leaving the struct alone) and a struct that skipped _init by its user. */
static void test_versioned_structs(void **state)
{
    (void)state;
    fhirsync_sync_options o;
    memset(&o, 0xab, sizeof o);
    assert_int_equal(fhirsync_sync_options_init(&o, FHIRSYNC_SYNC_OPTIONS_VERSION), FHIRSYNC_OK);
    assert_int_equal(o.version, FHIRSYNC_SYNC_OPTIONS_VERSION);
    assert_int_equal(o.per_patient, -1);
    assert_int_equal(o.delete_job, -1);
    assert_int_equal(o.load, FHIRSYNC_SYNC_LOAD_STREAM);
    assert_null(o.work_dir);
    assert_false(o.full);
    assert_int_equal(o.page_size, 0);
    fhirsync_sync_options untouched;
    memset(&untouched, 0x5a, sizeof untouched);
    assert_int_equal(fhirsync_sync_options_init(&untouched, 0), FHIRSYNC_E_ARG);
    assert_int_equal(fhirsync_sync_options_init(&untouched, FHIRSYNC_SYNC_OPTIONS_VERSION + 1),
                     FHIRSYNC_E_ARG);
    assert_int_equal(((unsigned char *)&untouched)[sizeof untouched - 1], 0x5a);
    assert_int_equal(fhirsync_sync_options_init(NULL, FHIRSYNC_SYNC_OPTIONS_VERSION),
                     FHIRSYNC_E_ARG);

    /* a struct filled without _init (version 0) or from a newer header is refused by name */
    fhirsync_store *store = NULL;
    fhirsync_error err = {0};
    assert_int_equal(fhirsync_store_open(":memory:", 0, &store, &err), FHIRSYNC_OK);
    fhirsync_endpoint *ep = fhirsync_endpoint_new("e");
    assert_int_equal(fhirsync_endpoint_set(ep, "base_url", "http://127.0.0.1:9/fhir", "t", &err),
                     FHIRSYNC_OK);
    assert_int_equal(fhirsync_endpoint_set(ep, "client_id", "c", "t", &err), FHIRSYNC_OK);
    assert_int_equal(fhirsync_endpoint_set(ep, "key_file", "/nonexistent.pem", "t", &err),
                     FHIRSYNC_OK);
    fhirsync_sync_options bare = {.page_size = 10};
    fhirsync_sync *s = NULL;
    assert_int_equal(fhirsync_sync_new(ep, store, &bare, &s, &err), FHIRSYNC_E_ARG);
    assert_null(s);
    assert_non_null(strstr(err.message, "fhirsync_sync_options_init"));
    assert_non_null(strstr(err.message, "FHIRSYNC_SYNC_OPTIONS_VERSION"));
    bare.version = FHIRSYNC_SYNC_OPTIONS_VERSION + 1;
    assert_int_equal(fhirsync_sync_new(ep, store, &bare, &s, &err), FHIRSYNC_E_ARG);
    assert_int_equal(fhirsync_sync_new(ep, store, &o, &s, &err), FHIRSYNC_OK);
    fhirsync_sync_free(s);

    fhirsync_sync_stats st;
    assert_int_equal(fhirsync_sync_stats_init(&st, FHIRSYNC_SYNC_STATS_VERSION + 1),
                     FHIRSYNC_E_ARG);
    assert_int_equal(fhirsync_sync_stats_init(&st, FHIRSYNC_SYNC_STATS_VERSION), FHIRSYNC_OK);
    assert_int_equal(st.run_id, 0);
    assert_int_equal(fhirsync_sync_get_stats(NULL, &st), FHIRSYNC_OK); /* zero for no handle */
    assert_int_equal(fhirsync_sync_get_stats(NULL, NULL), FHIRSYNC_E_ARG);
    /* a program built against version 1 has the shorter struct: nothing past it is written */
    fhirsync_sync_stats v1;
    memset(&v1, 0x5a, sizeof v1);
    v1.version = 1;
    assert_int_equal(fhirsync_sync_get_stats(NULL, &v1), FHIRSYNC_OK);
    assert_int_equal(v1.inserted, 0);
    assert_int_equal(((unsigned char *)&v1)[offsetof(fhirsync_sync_stats, http_responses)], 0x5a);
    assert_int_equal(((unsigned char *)&v1)[sizeof v1 - 1], 0x5a);

    /* the worker's: its options embed the sync options, both checked before anything runs */
    fhirsync_worker_options wo;
    assert_int_equal(fhirsync_worker_options_init(&wo, 0), FHIRSYNC_E_ARG);
    assert_int_equal(fhirsync_worker_options_init(&wo, FHIRSYNC_WORKER_OPTIONS_VERSION),
                     FHIRSYNC_OK);
    assert_int_equal(wo.version, FHIRSYNC_WORKER_OPTIONS_VERSION);
    assert_int_equal(wo.sync.version, FHIRSYNC_SYNC_OPTIONS_VERSION);
    assert_int_equal(wo.sync.per_patient, -1);
    assert_int_equal(wo.lease_s, 0);
    fhirsync_worker_stats ws;
    assert_int_equal(fhirsync_worker_stats_init(&ws, FHIRSYNC_WORKER_STATS_VERSION + 1),
                     FHIRSYNC_E_ARG);
    assert_int_equal(fhirsync_worker_stats_init(&ws, FHIRSYNC_WORKER_STATS_VERSION), FHIRSYNC_OK);
    assert_int_equal(ws.items_done, 0);
    fhirsync_config *cfg = fhirsync_config_new();
    assert_non_null(cfg);
    fhirsync_worker_options wbare = {.exit_when_idle = true};
    assert_int_equal(fhirsync_sync_worker_run(":memory:", cfg, &wbare, NULL, NULL, NULL, &err),
                     FHIRSYNC_E_ARG);
    assert_non_null(strstr(err.message, "fhirsync_worker_options_init"));
    wo.sync.version = 0;
    assert_int_equal(fhirsync_sync_worker_run(":memory:", cfg, &wo, NULL, NULL, NULL, &err),
                     FHIRSYNC_E_ARG);
    assert_non_null(strstr(err.message, "fhirsync_sync_options_init"));
    fhirsync_worker_stats wsbare = {0};
    assert_int_equal(fhirsync_sync_worker_run(":memory:", cfg, NULL, NULL, NULL, &wsbare, &err),
                     FHIRSYNC_E_ARG);
    assert_non_null(strstr(err.message, "fhirsync_worker_stats_init"));
    fhirsync_config_free(cfg);
    fhirsync_endpoint_free(ep);
    fhirsync_store_close(store);
}

/* ---- the allocation-failure walk over a small sync ------------------------------------------- */

typedef struct walk_ctx {
    char dir[600];
    fhirsync_endpoint *ep;
} walk_ctx;

static fhirsync_code small_sync(walk_ctx *w)
{
    char db[700], work[700];
    snprintf(db, sizeof db, "%s/walk.db", w->dir);
    snprintf(work, sizeof work, "%s/work", w->dir);
    fhirsync_store *store = NULL;
    fhirsync_sync *s = NULL;
    fhirsync_error err = {0};
    fhirsync_sync_options o;
    fhirsync_sync_options_init(&o, FHIRSYNC_SYNC_OPTIONS_VERSION);
    o.work_dir = work;
    o.load = FHIRSYNC_SYNC_LOAD_AFTER; /* one thread: the same allocations every time */
    fhirsync_code rc = fhirsync_store_open(db, 0, &store, &err);
    if (rc == FHIRSYNC_OK)
        rc = fhirsync_sync_new(w->ep, store, &o, &s, &err);
    if (rc == FHIRSYNC_OK)
        rc = fhirsync_sync_run(s);
    if (rc != FHIRSYNC_OK && rc != FHIRSYNC_E_NOMEM)
        fprintf(stderr, "sync walk: %s\n", s ? fhirsync_sync_errmsg(s) : err.message);
    fhirsync_sync_free(s);
    fhirsync_store_close(store);
    return rc;
}

static void clean_walk_dir(walk_ctx *w)
{
    fs_sync_rmtree(w->dir);
    mkdir(w->dir, 0700);
}

static void test_walk_sync(void **state)
{
    (void)state;
    const char *base = getenv("FHIRSYNC_SYNC_WALK_BASE_URL");
    if (!base) {
        printf("sync allocation walk skipped: no FHIRSYNC_SYNC_WALK_BASE_URL (run by "
               "test_sync_alloc.sh)\n");
        skip();
    }
    walk_ctx w;
    snprintf(w.dir, sizeof w.dir, "%s/walk", tmpdir);
    w.ep = fhirsync_endpoint_new("walk");
    fhirsync_error err = {0};
    const char *settings[][2] = {
        {"base_url", base},
        {"client_id", getenv("FHIRSYNC_SYNC_WALK_CLIENT_ID")},
        {"key_file", getenv("FHIRSYNC_SYNC_WALK_KEY")},
        {"types", getenv("FHIRSYNC_SYNC_WALK_TYPES")},
        {"mode", getenv("FHIRSYNC_SYNC_WALK_MODE")},
        {"max_retries", "0"},
        {"parallel", "1"},
    };
    for (size_t i = 0; i < sizeof settings / sizeof *settings; i++)
        if (settings[i][1])
            assert_int_equal(
                fhirsync_endpoint_set(w.ep, settings[i][0], settings[i][1], "walk", &err),
                FHIRSYNC_OK);
    /* one clean run: it sizes the walk and fills the token cache */
    clean_walk_dir(&w);
    fs_alloc_fail_at(0);
    assert_int_equal(small_sync(&w), FHIRSYNC_OK);
    clean_walk_dir(&w);
    fs_alloc_fail_at(0);
    assert_int_equal(small_sync(&w), FHIRSYNC_OK);
    unsigned long total = fs_alloc_fail_at(0);
    const char *max_env = getenv("FHIRSYNC_SYNC_WALK_STEPS");
    unsigned long steps = max_env && atol(max_env) > 0 ? (unsigned long)atol(max_env) : 400;
    if (steps < 2)
        steps = 2;
    unsigned long dense = steps < 300 ? steps / 2 : 150;
    unsigned long stride = total > dense ? (total - dense) / (steps - dense) : 1;
    if (stride < 1)
        stride = 1;
    printf("sync walk: a small sync makes %lu allocations; each of the first %lu fails in turn, "
           "then one in %lu\n",
           total, dense, stride);
    unsigned long tested = 0, absorbed = 0, misreported = 0, n;
    for (n = 1; n < total + 1000; n += n < dense ? 1 : stride) {
        clean_walk_dir(&w);
        fs_alloc_fail_at(n);
        fhirsync_code rc = small_sync(&w);
        bool fired = fs_alloc_failure_fired();
        fs_alloc_fail_at(0);
        if (!fired) {
            assert_int_equal(rc, FHIRSYNC_OK);
            break;
        }
        tested++;
        if (rc == FHIRSYNC_OK) {
            absorbed++;
            continue;
        }
        /* a clean error, never a crash (leaks: ASan and valgrind). Out of memory should say
         * so; other codes are reported (a module that misreports its out-of-memory) */
        assert_true(rc > FHIRSYNC_OK && rc <= FHIRSYNC_E_CONFLICT);
        if (rc != FHIRSYNC_E_NOMEM) {
            misreported++;
            fprintf(stderr,
                    "sync walk: allocation %lu failed -> %s (not reported as out of "
                    "memory)\n",
                    n, fhirsync_strerror(rc));
        }
    }
    printf("sync walk: %lu injected failures, %lu absorbed, %lu reported as another error\n",
           tested, absorbed, misreported);
    assert_true(tested > 100);
    fs_sync_rmtree(w.dir);
    fhirsync_endpoint_free(w.ep);
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "--dump") == 0)
        return fhirsync_global_init() == FHIRSYNC_OK ? run_dump(argv[2]) : 1;
    if (argc >= 4 && strcmp(argv[1], "--sql") == 0)
        return fhirsync_global_init() == FHIRSYNC_OK ? run_sql(argv[2], argv[3]) : 1;
    if (argc >= 3 && strcmp(argv[1], "--bare-sqlite") == 0)
        return run_bare_sqlite(argc, argv);
    fhirsync_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scopes),
        cmocka_unit_test(test_default_types),
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_group_scope),
        cmocka_unit_test(test_watermarks),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_delete_urls),
        cmocka_unit_test(test_counts),
        cmocka_unit_test(test_load_files),
        cmocka_unit_test(test_load_stream),
        cmocka_unit_test(test_sync_new),
        cmocka_unit_test(test_walk_sync),
        cmocka_unit_test(test_scope_types),
        cmocka_unit_test(test_reconcile),
        cmocka_unit_test(test_versioned_structs),
    };
    int rc = cmocka_run_group_tests(tests, make_tmp, remove_tmp);
    fhirsync_global_cleanup();
    return rc;
}
