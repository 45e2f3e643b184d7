/* unit/test_store.c: the store (fhirsync/store.h) on both engines. The engine-independent tests
 * run against SQLite always, and against PostgreSQL too when FHIRSYNC_TEST_PG holds a connection
 * URL (tests/integration/test_store_postgresql.sh starts a throwaway server and sets it; each
 * test then starts from an empty schema). They cover the schema and its migrations (idempotent,
 * concurrent, a newer schema refused), exact bytes kept (1.50 and 6.0E-3 stay as written), the
 * upsert rule (an older version never overwrites a newer one, on the row and the COPY path),
 * deletions recorded once, the quarantine, run audit and a watermark that commits with the run's
 * last rows or not at all (an injected failure, and a process killed before its commit), locks
 * between handles and processes (and a holder killed with SIGKILL), the work queue (leases,
 * expiry takeover, retries, poison items, three competing worker processes), read-only queries
 * and the views. SQLite only: file modes 0600, the allocation-failure walk, the field scanner.
 * PostgreSQL only: SKIP LOCKED with a row locked by another session, an advisory lock held by
 * another session, and the COPY path across several merges.
 *
 * The library's internal store API (store/store_internal.h: binding, locks, runs, the work queue)
 * is tested here too. Files go under $FHIRSYNC_TEST_TMP (or /tmp) in a fresh directory removed at
 * the end. The load benchmark is bench/store_bench.c. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "core/core.h"
#include "fhirsync/store.h"
#include "store/fields.h"
#include "store/store_private.h"
#include "store/store_internal.h"

#define assert_contains(haystack, needle)                                                          \
    do {                                                                                           \
        const char *hay_ = (haystack);                                                             \
        if (!hay_ || !strstr(hay_, (needle)))                                                      \
            fail_msg("\"%s\" does not contain \"%s\"", hay_ ? hay_ : "(null)", (needle));          \
    } while (0)

#define assert_ok(call)                                                                            \
    do {                                                                                           \
        fhirsync_error e_ = {0};                                                                   \
        (void)e_;                                                                                  \
        fhirsync_code rc_ = (call);                                                                \
        if (rc_ != FHIRSYNC_OK)                                                                    \
            fail_msg("%s: %s (%s)", #call, fhirsync_strerror(rc_), err.message);                   \
    } while (0)

#include "store_fixture.h"

/* ---- resources used by the tests ------------------------------------------------------------- */

static char line_buf[8][2048];
static unsigned line_next;

/* An Observation with optional meta; `value` is written as given (a JSON number). */
static const char *observation(const char *id, const char *patient, const char *version,
                               const char *updated, const char *value)
{
    char meta[256] = "";
    if (version || updated)
        snprintf(meta, sizeof meta, "\"meta\":{%s%s%s%s%s%s%s},", version ? "\"versionId\":\"" : "",
                 version ? version : "", version ? "\"" : "", version && updated ? "," : "",
                 updated ? "\"lastUpdated\":\"" : "", updated ? updated : "", updated ? "\"" : "");
    char *buf = line_buf[line_next++ % 8];
    snprintf(buf, sizeof line_buf[0],
             "{\"resourceType\":\"Observation\",\"id\":\"%s\",%s\"status\":\"final\","
             "\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"8302-2\","
             "\"display\":\"Body Height\"}],\"text\":\"Body Height\"},"
             "\"subject\":{\"reference\":\"Patient/%s\"},"
             "\"effectiveDateTime\":\"2020-01-01T10:00:00-05:00\","
             "\"valueQuantity\":{\"value\":%s,\"unit\":\"cm\","
             "\"system\":\"http://unitsofmeasure.org\",\"code\":\"cm\"}}",
             id, meta, patient, value);
    return buf;
}

static const char *patient(const char *id, const char *family, const char *given)
{
    char *buf = line_buf[line_next++ % 8];
    snprintf(buf, sizeof line_buf[0],
             "{\"resourceType\":\"Patient\",\"id\":\"%s\",\"meta\":{\"versionId\":\"1\","
             "\"lastUpdated\":\"2024-03-01T12:00:00.000Z\"},\"name\":[{\"use\":\"official\","
             "\"family\":\"%s\",\"given\":[\"%s\",\"Maria\"]}],\"gender\":\"female\","
             "\"birthDate\":\"1970-05-04\",\"extension\":[{\"url\":\"http://example.org/dalys\","
             "\"valueDecimal\":0.014758995126364135}]}",
             id, family, given);
    return buf;
}

static void put_ok(fhirsync_store *s, const char *type, const char *line, fhirsync_put_outcome want)
{
    fhirsync_error err = {0};
    fhirsync_put_outcome got = FHIRSYNC_PUT_STAGED;
    if (fhirsync_store_put(s, type, line, strlen(line), 0, &got, &err) != FHIRSYNC_OK)
        fail_msg("put: %s", err.message);
    if (got != want)
        fail_msg("put outcome %d, wanted %d", got, want);
}

/* The raw text of a stored row. */
static scalar raw_of(fhirsync_store *s, const char *type, const char *id)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT raw FROM \"%s\" WHERE id = '%s'", type, id);
    return query1(s, sql);
}

/* ---- the field scanner (SQLite group only: no database involved) ----------------------------- */

static void expect_fields(const char *line, const char *type, const char *id, const char *version,
                          const char *updated, int64_t ms, const char *patient_id)
{
    fs_resource_fields f;
    const char *why = fs_store_scan_fields(line, strlen(line), &f);
    if (why)
        fail_msg("scan of %s: %s", line, why);
    assert_int_equal(f.resource_type_len, strlen(type));
    assert_memory_equal(f.resource_type, type, f.resource_type_len);
    assert_int_equal(f.id_len, strlen(id));
    assert_memory_equal(f.id, id, f.id_len);
    if (version) {
        assert_non_null(f.version_id);
        assert_int_equal(f.version_id_len, strlen(version));
        assert_memory_equal(f.version_id, version, f.version_id_len);
    } else {
        assert_null(f.version_id);
    }
    if (updated) {
        assert_non_null(f.last_updated);
        assert_memory_equal(f.last_updated, updated, strlen(updated));
    } else {
        assert_null(f.last_updated);
    }
    if (ms != INT64_MIN) {
        assert_true(f.has_last_updated_ms);
        assert_int_equal(f.last_updated_ms, ms);
    } else {
        assert_false(f.has_last_updated_ms);
    }
    if (patient_id) {
        if (!f.patient_id)
            fail_msg("no patient in %s", line);
        assert_int_equal(f.patient_id_len, strlen(patient_id));
        assert_memory_equal(f.patient_id, patient_id, f.patient_id_len);
    } else {
        assert_null(f.patient_id);
    }
}

static void expect_reject(const char *line, size_t len, const char *reason)
{
    fs_resource_fields f;
    const char *why = fs_store_scan_fields(line, len, &f);
    if (!why)
        fail_msg("scan accepted %.*s", (int)len, line);
    assert_contains(why, reason);
}

static void test_scanner_fields(void **state)
{
    (void)state;
    expect_fields("{\"resourceType\":\"Patient\",\"id\":\"p1\"}", "Patient", "p1", NULL, NULL,
                  INT64_MIN, "p1");
    /* meta anywhere, nested values skipped, whitespace */
    expect_fields(" { \"text\" : {\"div\":\"<div>\\\"}{[\\\\</div>\"} , \"id\" : \"o-1.2\" ,"
                  "\"meta\":{\"tag\":[{\"code\":\"x\"}],\"versionId\":\"7\","
                  "\"lastUpdated\":\"2024-01-02T03:04:05.678+01:00\"},"
                  "\"resourceType\":\"Observation\",\"valueQuantity\":{\"value\":1.50},"
                  "\"subject\":{\"display\":\"x\",\"reference\":\"Patient/abc\"}}\r\n",
                  "Observation", "o-1.2", "7", "2024-01-02T03:04:05.678+01:00",
                  INT64_C(1704161045678), "abc");
    /* patient / beneficiary, absolute and versioned references, a non-Patient subject */
    expect_fields("{\"resourceType\":\"Claim\",\"id\":\"c\",\"patient\":{\"reference\":"
                  "\"Patient/p9/_history/3\"}}",
                  "Claim", "c", NULL, NULL, INT64_MIN, "p9");
    expect_fields("{\"resourceType\":\"Coverage\",\"id\":\"c\",\"beneficiary\":{\"reference\":"
                  "\"https://ehr.example/fhir/r4/Patient/b-2\"}}",
                  "Coverage", "c", NULL, NULL, INT64_MIN, "b-2");
    expect_fields("{\"resourceType\":\"Observation\",\"id\":\"o\",\"subject\":{\"reference\":"
                  "\"Group/g1\"}}",
                  "Observation", "o", NULL, NULL, INT64_MIN, NULL);
    expect_fields("{\"resourceType\":\"Observation\",\"id\":\"o\",\"subject\":{\"reference\":"
                  "\"urn:uuid:7f0c\"},\"patient\":{\"reference\":\"Patient/second\"}}",
                  "Observation", "o", NULL, NULL, INT64_MIN, "second");
    /* escapes are decoded where a strict parser would: "\u0050atient\/x" is Patient/x */
    expect_fields("{\"resourceType\":\"Encounter\",\"\\u0069d\":\"e\\u002d1\",\"subject\":"
                  "{\"reference\":\"\\u0050atient\\/x\"}}",
                  "Encounter", "e-1", NULL, NULL, INT64_MIN, "x");
    /* unusable meta values are ignored, not fatal */
    expect_fields("{\"resourceType\":\"Patient\",\"id\":\"p\",\"meta\":{\"versionId\":\"a b\","
                  "\"lastUpdated\":\"yesterday\"}}",
                  "Patient", "p", NULL, "yesterday", INT64_MIN, "p");
    expect_fields("{\"resourceType\":\"Patient\",\"id\":\"p\",\"meta\":[1,2]}", "Patient", "p",
                  NULL, NULL, INT64_MIN, "p");
    /* UTF-8 and a \u0000 escape (flagged for PostgreSQL) */
    const char nul_line[] = "{\"resourceType\":\"Basic\",\"id\":\"b\",\"note\":\"caf\xc3\xa9 "
                            "\\u0000 \xf0\x9f\x98\x80\"}";
    fs_resource_fields f;
    assert_null(fs_store_scan_fields(nul_line, strlen(nul_line), &f));
    assert_true(f.has_nul_escape);
    assert_null(fs_store_scan_fields("{\"resourceType\":\"Basic\",\"id\":\"b\"}", 33, &f));
    assert_false(f.has_nul_escape);
}

static void test_scanner_rejects(void **state)
{
    (void)state;
    struct {
        const char *line;
        const char *reason;
    } cases[] = {
        {"", "not a JSON object"},
        {"[1]", "not a JSON object"},
        {"{\"resourceType\":\"Patient\"}", "id is missing"},
        {"{\"id\":\"x\"}", "resourceType is missing"},
        {"{\"resourceType\":\"patient\",\"id\":\"x\"}", "not a valid resource type"},
        {"{\"resourceType\":\"Pat_ient\",\"id\":\"x\"}", "not a valid resource type"},
        {"{\"resourceType\":7,\"id\":\"x\"}", "resourceType is not a string"},
        {"{\"resourceType\":\"Patient\",\"id\":5}", "id is not a string"},
        {"{\"resourceType\":\"Patient\",\"id\":\"a/b\"}", "not a valid FHIR id"},
        {"{\"resourceType\":\"Patient\",\"id\":\"\"}", "not a valid FHIR id"},
        {"{\"resourceType\":\"Patient\",\"id\":\"x\",\"id\":\"y\"}", "duplicate"},
        {"{\"resourceType\":\"Patient\",\"id\":\"x\"} x", "after the JSON object"},
        {"{\"resourceType\":\"Patient\",\"id\":\"x\"", "truncated"},
        {"{\"resourceType\":\"Patient\",\"id\":\"x\",\"a\":[1,2}", "expected ',' or ']'"},
        {"{\"resourceType\":\"Patient\",\"id\":\"x\",\"a\":{\"b\" 1}}", "expected ':'"},
        {"{\"resourceType\":\"Patient\",\"id\":\"x\",\"a\":\"\\q\"}", "invalid escape"},
        {"{\"resourceType\":\"Patient\",\"id\":\"x\",\"a\":\"\\ud800\"}", "surrogate"},
        {"{\"resourceType\":\"Patient\",\"id\":\"x\",\"a\":\"tab\there\"}", "control character"},
        {"{\"resourceType\":\"Patient\",\"id\":\"x\",\"a\":\"\xc3\x28\"}", "invalid UTF-8"},
        {"{\"resourceType\":\"Patient\",\"id\":\"x\",\"a\":\"\xed\xa0\x80\"}", "invalid UTF-8"},
        {"{\"resourceType\":\"Patient\",\"id\":\"x\",\"a\":\"\xc0\xaf\"}", "invalid UTF-8"},
        {"{\"resourceType\":\"Patient\",\"id\":\"x\",\"a\":@}", "unexpected character"},
        /* numbers and literals are the lexer core's, as strict as the NDJSON checker's */
        {"{\"resourceType\":\"Patient\",\"id\":\"x\",\"a\":1.}", "invalid number"},
        {"{\"resourceType\":\"Patient\",\"id\":\"x\",\"a\":1e+}", "invalid number"},
        {"{\"resourceType\":\"Patient\",\"id\":\"x\",\"a\":01}", "expected ',' or '}'"},
        {"{\"resourceType\":\"Patient\",\"id\":\"x\",\"a\":[tru]}", "unexpected character"},
        {"{\"resourceType\":\"Patient\",\"id\":\"x\",\"a\":nulll}", "expected ',' or '}'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        expect_reject(cases[i].line, strlen(cases[i].line), cases[i].reason);
    /* a NUL byte inside a string, and nesting deeper than the scanner follows */
    const char with_nul[] = "{\"resourceType\":\"Patient\",\"id\":\"x\",\"a\":\"\0\"}";
    expect_reject(with_nul, sizeof with_nul - 1, "control character");
    size_t depth = FS_STORE_MAX_DEPTH + 10;
    char *deep = malloc(2 * depth + 64);
    assert_non_null(deep);
    size_t n = (size_t)sprintf(deep, "{\"resourceType\":\"Patient\",\"id\":\"x\",\"a\":");
    memset(deep + n, '[', depth);
    memset(deep + n + depth, ']', depth);
    deep[n + 2 * depth] = '}';
    expect_reject(deep, n + 2 * depth + 1, "nested too deeply");
    free(deep);
}

static void test_scanner_helpers(void **state)
{
    (void)state;
    const char *id;
    size_t len;
    assert_true(fs_store_patient_of_reference("Patient/1", 9, &id, &len));
    assert_int_equal(len, 1);
    assert_false(fs_store_patient_of_reference("Patient/", 8, &id, &len));
    assert_false(fs_store_patient_of_reference("Patient/1/x", 11, &id, &len));
    assert_false(fs_store_patient_of_reference("foo/Patient/1", 13, &id, &len));
    assert_false(fs_store_patient_of_reference("Patient?identifier=1", 20, &id, &len));
    assert_true(fs_store_valid_type("Patient", 7));
    assert_false(fs_store_valid_type("P", 1));
    char long_type[80];
    memset(long_type, 'a', sizeof long_type);
    long_type[0] = 'A';
    assert_true(fs_store_valid_type(long_type, FS_STORE_TYPE_MAX));
    assert_false(fs_store_valid_type(long_type, FS_STORE_TYPE_MAX + 1));
    int64_t ms;
    assert_true(fs_store_parse_instant_ms("2024-01-01T00:00:00Z", 20, &ms));
    assert_int_equal(ms, INT64_C(1704067200000));
    assert_true(fs_store_parse_instant_ms("2024-01-01T00:00:00.5Z", 22, &ms));
    assert_int_equal(ms, INT64_C(1704067200500));
    assert_true(fs_store_parse_instant_ms("2024-01-01T00:00:00.123456-01:00", 32, &ms));
    assert_int_equal(ms, INT64_C(1704070800123));
    assert_false(fs_store_parse_instant_ms("2024-01-01", 10, &ms));
}

/* ---- schema and migrations ------------------------------------------------------------------- */

static void test_open_and_migrations(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    assert_int_equal(fhirsync_store_schema_version(s), fhirsync_store_schema_version_supported());
    assert_string_equal(fhirsync_store_engine_name(s), f->pg ? "postgresql" : "sqlite");
    assert_int_equal(query_long(s, "SELECT count(*) FROM schema_version"),
                     fhirsync_store_schema_version_supported());
    /* the common types exist from the start, with their views */
    fhirsync_type_count *counts = NULL;
    size_t n = 0;
    fhirsync_error err = {0};
    assert_ok(fhirsync_store_counts(s, &counts, &n, &err));
    assert_true(n >= 20);
    bool has_patient = false;
    for (size_t i = 0; i < n; i++) {
        has_patient |= strcmp(counts[i].type, "Patient") == 0;
        assert_int_equal(counts[i].count, 0);
        if (i)
            assert_true(strcmp(counts[i - 1].type, counts[i].type) < 0);
    }
    assert_true(has_patient);
    fhirsync_free(counts);
    /* version 4 dropped the hand-written SQL views for materialized ViewDefinitions */
    assert_int_equal(query_long(s, "SELECT count(*) FROM view_definitions"), 0);
    fhirsync_store_close(s);

    /* opening again changes nothing */
    s = open_store(f);
    assert_int_equal(query_long(s, "SELECT count(*) FROM schema_version"),
                     fhirsync_store_schema_version_supported());
    fhirsync_store_close(s);

    /* read-only opening of an existing store works; of a missing one fails clearly */
    fhirsync_store *ro = NULL;
    assert_ok(fhirsync_store_open(f->location, FHIRSYNC_STORE_READONLY, &ro, &err));
    assert_int_equal(fhirsync_store_put(ro, NULL, patient("p", "A", "B"), 20, 0, NULL, &err),
                     FHIRSYNC_E_ARG);
    fhirsync_store_close(ro);
    if (!f->pg) {
        char missing[PATH_MAX];
        snprintf(missing, sizeof missing, "%s/missing.db", tmpdir);
        assert_int_equal(fhirsync_store_open(missing, FHIRSYNC_STORE_READONLY, &ro, &err),
                         FHIRSYNC_E_STORE);
        assert_null(ro);
        assert_contains(err.message, "no store");
        assert_int_not_equal(access(missing, F_OK), 0);
    }
}

/* Three processes open (and migrate) the same new database at once: one migrates, all succeed. */
static void test_concurrent_migration(void **state)
{
    fixture *f = *state;
    pid_t pids[3];
    for (int i = 0; i < 3; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            fhirsync_store *s = NULL;
            fhirsync_error err = {0};
            int rc = fhirsync_store_open(f->location, 0, &s, &err) == FHIRSYNC_OK ? 0 : 1;
            if (rc)
                fprintf(stderr, "child open: %s\n", err.message);
            fhirsync_store_close(s);
            _exit(rc);
        }
    }
    for (int i = 0; i < 3; i++) {
        int status;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    fhirsync_store *s = open_store(f);
    assert_int_equal(query_long(s, "SELECT count(*) FROM schema_version"),
                     fhirsync_store_schema_version_supported());
    fhirsync_store_close(s);
}

static void test_newer_schema_refused(void **state)
{
    fixture *f = *state;
    fhirsync_store_close(open_store(f));
    if (f->pg) {
        PGconn *conn = pg_raw();
        pg_run(conn, "INSERT INTO schema_version VALUES (999, 'from the future', 'x')");
        PQfinish(conn);
    } else {
        sqlite3 *db;
        assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db,
                                      "INSERT INTO schema_version VALUES (999, 'from the future',"
                                      " 'x')",
                                      NULL, NULL, NULL),
                         SQLITE_OK);
        sqlite3_close(db);
    }
    fhirsync_store *s = NULL;
    fhirsync_error err = {0};
    assert_int_equal(fhirsync_store_open(f->location, 0, &s, &err), FHIRSYNC_E_STORE);
    assert_null(s);
    assert_contains(err.message, "schema version 999");
    assert_contains(err.message, "upgrade fhirsync");
    assert_int_equal(fhirsync_store_open(f->location, FHIRSYNC_STORE_READONLY, &s, &err),
                     FHIRSYNC_E_STORE);
    assert_contains(err.message, "newer");
}

/* ---- loading --------------------------------------------------------------------------------- */

static void test_exact_bytes(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    /* decimals as written, odd spacing, key order, unicode, escaped slash */
    const char *line = "{\"resourceType\":\"Observation\", \"id\":\"dec-1\",\"subject\":"
                       "{\"reference\":\"Patient/p1\"},\"valueQuantity\":{\"value\":1.50,"
                       "\"unit\":\"mg\"},\"component\":[{\"valueQuantity\":{\"value\":6.0E-3}}],"
                       "\"note\":[{\"text\":\"Gr\xc3\xbc\xc3\x9f\x65 \\/ \\u00e9\"}]}";
    assert_ok(fhirsync_store_begin(s, 0, &err));
    put_ok(s, "Observation", line, FHIRSYNC_PUT_STORED);
    assert_ok(fhirsync_store_commit(s, &err));
    scalar raw = raw_of(s, "Observation", "dec-1");
    assert_int_equal(raw.len, strlen(line));
    assert_memory_equal(raw.text, line, raw.len);
    assert_string_equal(query1(s, "SELECT patient_id FROM \"Observation\"").text, "p1");
    if (f->pg) {
        /* jsonb keeps numeric scale (but not spelling): the raw column is the exact one */
        assert_string_equal(query1(s, "SELECT resource #>> '{valueQuantity,value}' FROM"
                                      " \"Observation\"")
                                .text,
                            "1.50");
    }
    /* a line with its newline: the newline is not part of the resource */
    fs_buf with_nl;
    fs_buf_init(&with_nl);
    assert_true(fs_buf_printf(&with_nl, "%s\r\n", patient("p1", "Lindgren", "Claudia")));
    assert_ok(fhirsync_store_put(s, "Patient", with_nl.data, with_nl.len, 0, NULL, &err));
    scalar praw = raw_of(s, "Patient", "p1");
    assert_int_equal(praw.len, with_nl.len - 2);
    fs_buf_free(&with_nl);
    fhirsync_store_close(s);
}

static void test_upsert_rule(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    for (int bulk = 0; bulk < 2; bulk++) {
        /* the same rule on the row path and, for PostgreSQL, the COPY path */
        fhirsync_put_outcome staged = FHIRSYNC_PUT_STAGED;
        bool copy = f->pg && bulk;
        char id[16];
        snprintf(id, sizeof id, "u%d", bulk);
        const char *v2 = observation(id, "p", "2", "2024-02-01T00:00:00Z", "2");
        const char *v1 = observation(id, "p", "1", "2024-01-01T00:00:00Z", "1");
        const char *v3 = observation(id, "p", "3", "2024-03-01T00:00:00.001Z", "3");
        assert_ok(fhirsync_store_begin(s, bulk ? FHIRSYNC_STORE_BULK : 0, &err));
        put_ok(s, "Observation", v2, copy ? staged : FHIRSYNC_PUT_STORED);
        assert_ok(fhirsync_store_commit(s, &err));
        assert_ok(fhirsync_store_begin(s, bulk ? FHIRSYNC_STORE_BULK : 0, &err));
        put_ok(s, "Observation", v1, copy ? staged : FHIRSYNC_PUT_KEPT_NEWER);
        assert_ok(fhirsync_store_commit(s, &err));
        assert_string_equal(raw_of(s, "Observation", id).text, v2);
        /* the same version again: replaced with itself (idempotent) */
        assert_ok(fhirsync_store_begin(s, bulk ? FHIRSYNC_STORE_BULK : 0, &err));
        put_ok(s, "Observation", v2, copy ? staged : FHIRSYNC_PUT_STORED);
        /* newer, and older again within the same batch */
        put_ok(s, "Observation", v3, copy ? staged : FHIRSYNC_PUT_STORED);
        put_ok(s, "Observation", v1, copy ? staged : FHIRSYNC_PUT_KEPT_NEWER);
        assert_ok(fhirsync_store_commit(s, &err));
        assert_string_equal(raw_of(s, "Observation", id).text, v3);
        char sql[128];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM \"Observation\" WHERE id = '%s'", id);
        assert_int_equal(query_long(s, sql), 1);
        snprintf(sql, sizeof sql, "SELECT last_updated_ms FROM \"Observation\" WHERE id = '%s'",
                 id);
        assert_int_equal(query_long(s, sql), 1709251200001L);
    }
    /* equal lastUpdated: numeric versionIds decide ("10" > "9"); otherwise the newcomer wins */
    const char *t = "2024-05-05T05:05:05Z";
    put_ok(s, NULL, observation("v", "p", "10", t, "10"), FHIRSYNC_PUT_STORED);
    put_ok(s, NULL, observation("v", "p", "9", t, "9"), FHIRSYNC_PUT_KEPT_NEWER);
    put_ok(s, NULL, observation("v", "p", "11", NULL, "11"), FHIRSYNC_PUT_STORED);
    put_ok(s, NULL, observation("v", "p", "abc", NULL, "12"), FHIRSYNC_PUT_STORED);
    put_ok(s, NULL, observation("v", "p", NULL, NULL, "13"), FHIRSYNC_PUT_STORED);
    assert_string_equal(raw_of(s, "Observation", "v").text,
                        observation("v", "p", NULL, NULL, "13"));
    /* a resource without lastUpdated never replaces... unless versions say nothing */
    put_ok(s, NULL, observation("w", "p", "5", "2024-01-01T00:00:00Z", "1"), FHIRSYNC_PUT_STORED);
    put_ok(s, NULL, observation("w", "p", "4", NULL, "2"), FHIRSYNC_PUT_KEPT_NEWER);
    fhirsync_store_close(s);
}

/* Append batches (FHIRSYNC_STORE_APPEND). PostgreSQL copies the rows straight into the tables;
 * an id already stored, or repeated in the batch, fails the batch with FHIRSYNC_E_CONFLICT and
 * leaves nothing of it. SQLite ignores the flag: the same puts are upserts. Either way a merge
 * batch of the same rows afterwards gives the same table. Also: a second handle (reopen). */
static void test_append(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    const unsigned append = FHIRSYNC_STORE_BULK | FHIRSYNC_STORE_APPEND;
    const fhirsync_put_outcome new_row = f->pg ? FHIRSYNC_PUT_STAGED : FHIRSYNC_PUT_STORED;
    const char *v1 = "2024-01-01T00:00:00Z", *v2 = "2024-02-01T00:00:00Z";
    const char *nul = "{\"resourceType\":\"Observation\",\"id\":\"nul\",\"valueString\":"
                      "\"a\\u0000b\"}";
    assert_ok(fhirsync_store_begin(s, append, &err));
    for (int i = 0; i < 3000; i++) { /* several COPY chunks */
        char id[16];
        snprintf(id, sizeof id, "a%d", i);
        put_ok(s, "Observation", observation(id, "p", "1", v1, "1.50"), new_row);
    }
    put_ok(s, "Observation", nul, new_row);
    put_ok(s, "Patient", patient("p", "Lindgren", "Claudia"), new_row); /* another table */
    put_ok(s, "Observation", observation("after", "q", NULL, NULL, "6.0E-3"), new_row);
    assert_ok(fhirsync_store_commit(s, &err));
    assert_int_equal(query_long(s, "SELECT count(*) FROM \"Observation\""), 3002);
    assert_int_equal(query_long(s, "SELECT count(*) FROM \"Observation\" WHERE patient_id = 'p'"
                                   " AND version_id = '1' AND last_updated_ms = 1704067200000"
                                   " AND loaded_at IS NOT NULL AND run_id IS NULL"),
                     3000);
    assert_string_equal(raw_of(s, "Observation", "after").text,
                        observation("after", "q", NULL, NULL, "6.0E-3"));
    assert_string_equal(raw_of(s, "Observation", "nul").text, nul);
    if (f->pg) {
        assert_string_equal(query1(s, "SELECT resource #>> '{valueQuantity,value}' FROM"
                                      " \"Observation\" WHERE id = 'a7'")
                                .text,
                            "1.50");
        assert_true(query1(s, "SELECT resource FROM \"Observation\" WHERE id = 'nul'").null);
    }
    /* an id already stored (a5, newer) among new ones */
    fhirsync_code want = f->pg ? FHIRSYNC_E_CONFLICT : FHIRSYNC_OK;
    assert_ok(fhirsync_store_begin(s, append, &err));
    put_ok(s, "Observation", observation("b1", "p", "1", v1, "1"), new_row);
    put_ok(s, "Observation", observation("a5", "p", "2", v2, "2"), new_row);
    assert_int_equal(fhirsync_store_commit(s, &err), want);
    if (f->pg) {
        assert_contains(err.message, "SQLSTATE 23505");
        assert_int_equal(query_long(s, "SELECT count(*) FROM \"Observation\" WHERE id = 'b1'"), 0);
        assert_string_equal(
            query1(s, "SELECT version_id FROM \"Observation\" WHERE id = 'a5'").text, "1");
    }
    /* an id repeated within the batch */
    assert_ok(fhirsync_store_begin(s, append, &err));
    put_ok(s, "Observation", observation("c1", "p", "1", v1, "1"), new_row);
    put_ok(s, "Observation", observation("c1", "p", "2", v2, "2"), new_row);
    assert_int_equal(fhirsync_store_commit(s, &err), want);
    if (f->pg)
        assert_int_equal(query_long(s, "SELECT count(*) FROM \"Observation\" WHERE id = 'c1'"), 0);
    /* the handle goes on: the same rows as a merge batch */
    assert_ok(fhirsync_store_begin(s, FHIRSYNC_STORE_BULK, &err));
    const char *again[4] = {
        observation("b1", "p", "1", v1, "1"), observation("a5", "p", "2", v2, "2"),
        observation("c1", "p", "1", v1, "1"), observation("c1", "p", "2", v2, "2")};
    for (int i = 0; i < 4; i++) /* outcomes differ: SQLite stored these rows already */
        assert_ok(fhirsync_store_put(s, "Observation", again[i], strlen(again[i]), 0, NULL, &err));
    assert_ok(fhirsync_store_commit(s, &err));
    assert_int_equal(query_long(s, "SELECT count(*) FROM \"Observation\" WHERE id IN"
                                   " ('a5', 'b1', 'c1') AND version_id = CASE id WHEN 'b1'"
                                   " THEN '1' ELSE '2' END"),
                     3);
    /* a rolled-back append leaves nothing */
    assert_ok(fhirsync_store_begin(s, append, &err));
    put_ok(s, "Observation", observation("gone", "p", "1", v1, "1"), new_row);
    assert_ok(fhirsync_store_rollback(s, &err));
    assert_int_equal(query_long(s, "SELECT count(*) FROM \"Observation\" WHERE id = 'gone'"), 0);
    /* another handle on the same database sees the same rows */
    fhirsync_store *other = NULL;
    assert_ok(fhirsync_store_reopen(s, &other, &err));
    assert_int_equal(query_long(other, "SELECT count(*) FROM \"Observation\""), 3004);
    assert_string_equal(fhirsync_store_location(other), fhirsync_store_location(s));
    fhirsync_store_close(other);
    assert_int_equal(fhirsync_store_reopen(NULL, &other, &err), FHIRSYNC_E_ARG);
    fhirsync_store_close(s);
}

/* One store, one FHIR server: a second endpoint of another base URL is refused (ids would
 * collide), the same server under another name or spelling is not, shared = true records it
 * anyway, and an endpoint may move its own base URL. */
static void test_bind_endpoint(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    const char *a = "https://ehr.example.org/fhir/r4";
    /* alone in the store, an endpoint may move to another base URL (the EHR moved) */
    assert_ok(fs_store_bind_endpoint(s, "clinic-a", "https://old.example.org/fhir", false, &err));
    assert_ok(fs_store_bind_endpoint(s, "clinic-a", a, false, &err));
    assert_ok(fs_store_bind_endpoint(s, "clinic-a", a, false, &err)); /* again */
    assert_string_equal(query1(s, "SELECT base_url FROM endpoints").text, a);
    /* the same server: another endpoint name, a trailing slash, scheme and host in capitals */
    assert_ok(fs_store_bind_endpoint(s, "clinic-a-group", "HTTPS://EHR.example.org/fhir/r4/", false,
                                     &err));
    /* another server, or another path on it */
    static const char *const others[] = {"https://other.example.org/fhir/r4",
                                         "https://ehr.example.org/fhir/R4"};
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(fs_store_bind_endpoint(s, "clinic-b", others[i], false, &err),
                         FHIRSYNC_E_CONFIG);
        assert_contains(err.message, "holds the data of endpoint clinic-a");
        assert_contains(err.message, "shared_store = yes");
    }
    assert_int_equal(query_long(s, "SELECT count(*) FROM endpoints WHERE name = 'clinic-b'"), 0);
    /* the user says it is the same server */
    assert_ok(fs_store_bind_endpoint(s, "clinic-b", others[0], true, &err));
    assert_string_equal(query1(s, "SELECT base_url FROM endpoints WHERE name = 'clinic-b'").text,
                        others[0]);
    /* with clinic-b's server recorded, a new endpoint of clinic-a's server is refused too */
    assert_int_equal(fs_store_bind_endpoint(s, "clinic-c", a, false, &err), FHIRSYNC_E_CONFIG);
    assert_contains(err.message, "holds the data of endpoint clinic-b");
    /* inside a batch: the refusal leaves the batch usable */
    assert_ok(fhirsync_store_begin(s, 0, &err));
    assert_int_equal(fs_store_bind_endpoint(s, "clinic-d", "https://d.example/fhir", false, &err),
                     FHIRSYNC_E_CONFIG);
    assert_ok(fhirsync_store_commit(s, &err));
    assert_int_equal(fs_store_bind_endpoint(s, NULL, a, false, &err), FHIRSYNC_E_ARG);
    assert_int_equal(fs_store_bind_endpoint(s, "x", "", false, &err), FHIRSYNC_E_ARG);
    fhirsync_store_close(s);
}

static void test_put_rejects(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    assert_ok(fhirsync_store_begin(s, FHIRSYNC_STORE_BULK, &err));
    put_ok(s, "Patient", patient("good-1", "A", "B"),
           f->pg ? FHIRSYNC_PUT_STAGED : FHIRSYNC_PUT_STORED);
    const char *bad[] = {"not json", "{\"resourceType\":\"Patient\"}",
                         "{\"resourceType\":\"Patient\",\"id\":\"x\",\"a\":\"\xff\"}",
                         "{\"resourceType\":\"Deletions\",\"id\":\"x\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(fhirsync_store_put(s, NULL, bad[i], strlen(bad[i]), 0, NULL, &err),
                         FHIRSYNC_E_JSON);
        assert_true(err.message[0] != '\0');
    }
    /* a line of another type than the file's */
    const char *obs = observation("o1", "p", NULL, NULL, "1");
    assert_int_equal(fhirsync_store_put(s, "Patient", obs, strlen(obs), 0, NULL, &err),
                     FHIRSYNC_E_JSON);
    assert_contains(err.message, "Observation where Patient was expected");
    /* the batch is still fine */
    put_ok(s, "Patient", patient("good-2", "A", "B"),
           f->pg ? FHIRSYNC_PUT_STAGED : FHIRSYNC_PUT_STORED);
    assert_ok(fhirsync_store_commit(s, &err));
    assert_int_equal(query_long(s, "SELECT count(*) FROM \"Patient\""), 2);
    /* argument errors */
    assert_int_equal(fhirsync_store_ensure_type(s, "bad type", &err), FHIRSYNC_E_ARG);
    assert_int_equal(fhirsync_store_ensure_type(s, "Quarantine", &err), FHIRSYNC_E_ARG);
    assert_int_equal(fhirsync_store_commit(s, &err), FHIRSYNC_E_ARG);
    assert_ok(fhirsync_store_begin(s, 0, &err));
    assert_int_equal(fhirsync_store_begin(s, 0, &err), FHIRSYNC_E_ARG);
    assert_ok(fhirsync_store_rollback(s, &err));
    fhirsync_store_close(s);
}

/* A type created inside a batch that rolls back is created again next time. */
static void test_new_type_rollback(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    const char *line = "{\"resourceType\":\"NutritionOrder\",\"id\":\"n1\",\"patient\":"
                       "{\"reference\":\"Patient/p\"}}";
    assert_ok(fhirsync_store_begin(s, 0, &err));
    put_ok(s, NULL, line, FHIRSYNC_PUT_STORED);
    assert_ok(fhirsync_store_rollback(s, &err));
    assert_int_equal(query_long(s, "SELECT count(*) FROM resource_types"
                                   " WHERE type = 'NutritionOrder'"),
                     0);
    assert_ok(fhirsync_store_begin(s, FHIRSYNC_STORE_BULK, &err));
    put_ok(s, NULL, line, f->pg ? FHIRSYNC_PUT_STAGED : FHIRSYNC_PUT_STORED);
    assert_ok(fhirsync_store_commit(s, &err));
    assert_int_equal(query_long(s, "SELECT count(*) FROM \"NutritionOrder\""), 1);
    assert_ok(fhirsync_store_ensure_type(s, "NutritionOrder", &err));
    assert_ok(fhirsync_store_ensure_type(s, "VisionPrescription", &err));
    assert_int_equal(query_long(s, "SELECT count(*) FROM \"VisionPrescription\""), 0);
    fhirsync_store_close(s);
}

static int collect_record(const fhirsync_resource_row *row, void *userdata)
{
    fs_buf *b = userdata;
    fs_buf_printf(b, "%s/%s;", row->type, row->id);
    return 0;
}

static int stop_after_first(const fhirsync_resource_row *row, void *userdata)
{
    (void)row;
    ++*(int *)userdata;
    return 1;
}

static void test_patient_record(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    assert_ok(fhirsync_store_begin(s, FHIRSYNC_STORE_BULK, &err));
    const char *lines[] = {
        patient("p1", "A", "B"),
        patient("p2", "C", "D"),
        observation("o2", "p1", NULL, NULL, "1"),
        observation("o1", "p1", NULL, NULL, "1"),
        observation("o3", "p2", NULL, NULL, "1"),
        "{\"resourceType\":\"Claim\",\"id\":\"c1\",\"patient\":{\"reference\":\"Patient/p1\"}}",
        "{\"resourceType\":\"Coverage\",\"id\":\"cov\",\"beneficiary\":{\"reference\":"
        "\"Patient/p1\"}}",
        "{\"resourceType\":\"Organization\",\"id\":\"org\"}",
    };
    for (size_t i = 0; i < sizeof lines / sizeof *lines; i++)
        assert_ok(fhirsync_store_put(s, NULL, lines[i], strlen(lines[i]), 0, NULL, &err));
    assert_ok(fhirsync_store_commit(s, &err));
    fs_buf b;
    fs_buf_init(&b);
    assert_ok(fhirsync_store_patient_record(s, "p1", collect_record, &b, &err));
    assert_string_equal(b.data, "Patient/p1;Claim/c1;Coverage/cov;Observation/o1;"
                                "Observation/o2;");
    fs_buf_free(&b);
    int calls = 0;
    assert_ok(fhirsync_store_patient_record(s, "p1", stop_after_first, &calls, &err));
    assert_int_equal(calls, 1);
    assert_int_equal(fhirsync_store_patient_record(s, "bad id!", stop_after_first, &calls, &err),
                     FHIRSYNC_E_ARG);
    /* counts per type */
    fhirsync_type_count *counts = NULL;
    size_t n = 0;
    assert_ok(fhirsync_store_counts(s, &counts, &n, &err));
    for (size_t i = 0; i < n; i++) {
        if (strcmp(counts[i].type, "Observation") == 0)
            assert_int_equal(counts[i].count, 3);
        if (strcmp(counts[i].type, "Coverage") == 0)
            assert_int_equal(counts[i].count, 1);
    }
    fhirsync_free(counts);
    fhirsync_store_close(s);
}

/* ---- deletions and quarantine ---------------------------------------------------------------- */

static void test_deletions(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    put_ok(s, NULL, observation("d1", "p", "1", "2024-01-01T00:00:00Z", "1"), FHIRSYNC_PUT_STORED);
    put_ok(s, NULL, observation("d2", "p", "1", "2024-06-01T00:00:00Z", "1"), FHIRSYNC_PUT_STORED);
    bool removed = false;
    const char *when = "2024-03-01T00:00:00Z";
    assert_ok(fhirsync_store_begin(s, FHIRSYNC_STORE_BULK, &err));
    /* a put and a delete of the same id in one bulk batch keep their order */
    put_ok(s, NULL, observation("d3", "p", "1", "2024-01-01T00:00:00Z", "1"),
           f->pg ? FHIRSYNC_PUT_STAGED : FHIRSYNC_PUT_STORED);
    assert_ok(fhirsync_store_delete(s, "Observation", "d3", when, 7, &removed, &err));
    assert_true(removed);
    assert_ok(fhirsync_store_delete(s, "Observation", "d1", when, 7, &removed, &err));
    assert_true(removed);
    assert_ok(fhirsync_store_commit(s, &err));
    /* again: idempotent, recorded once */
    assert_ok(fhirsync_store_delete(s, "Observation", "d1", when, 8, &removed, &err));
    assert_false(removed);
    assert_int_equal(query_long(s, "SELECT count(*) FROM deletions WHERE id = 'd1'"), 1);
    assert_int_equal(query_long(s, "SELECT run_id FROM deletions WHERE id = 'd1'"), 7);
    /* updated after the deletion: kept, but the deletion is recorded */
    assert_ok(fhirsync_store_delete(s, "Observation", "d2", when, 7, &removed, &err));
    assert_false(removed);
    assert_int_equal(query_long(s, "SELECT count(*) FROM \"Observation\""), 1);
    assert_int_equal(query_long(s, "SELECT count(*) FROM deletions"), 3);
    /* unknown type or id: recorded, nothing created */
    assert_ok(fhirsync_store_delete(s, "SupplyDelivery", "x", NULL, 0, &removed, &err));
    assert_false(removed);
    assert_int_equal(query_long(s, "SELECT count(*) FROM resource_types"
                                   " WHERE type = 'SupplyDelivery'"),
                     0);
    assert_int_equal(fhirsync_store_delete(s, "Observation", "x", "not a date", 0, NULL, &err),
                     FHIRSYNC_E_ARG);
    assert_int_equal(fhirsync_store_delete(s, "Observation", "a b", NULL, 0, NULL, &err),
                     FHIRSYNC_E_ARG);
    fhirsync_store_close(s);
}

typedef struct quarantine_seen {
    int count;
    fhirsync_quarantine_entry first;
    char line[FHIRSYNC_STORE_QUARANTINE_CAP + 16];
    char reason[128], source[128];
} quarantine_seen;

static int collect_quarantine(const fhirsync_quarantine_entry *e, void *userdata)
{
    quarantine_seen *q = userdata;
    if (q->count++ == 0) {
        q->first = *e;
        memcpy(q->line, e->line, e->line_len);
        snprintf(q->reason, sizeof q->reason, "%s", e->reason);
        snprintf(q->source, sizeof q->source, "%s", e->source ? e->source : "");
    }
    return 0;
}

static void test_quarantine(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    /* any bytes (a NUL, invalid UTF-8), capped */
    size_t len = FHIRSYNC_STORE_QUARANTINE_CAP + 100;
    char *line = malloc(len);
    assert_non_null(line);
    for (size_t i = 0; i < len; i++)
        line[i] = (char)(i * 7);
    line[0] = '\0';
    line[1] = (char)0xff;
    fhirsync_quarantine_entry e = {0,
                                   3,
                                   "practice-a",
                                   "https://ehr/files/Observation.ndjson",
                                   42,
                                   "line is not a JSON object",
                                   line,
                                   len,
                                   0,
                                   NULL};
    assert_ok(fhirsync_store_quarantine(s, &e, &err));
    fhirsync_quarantine_entry small = {0, 4, NULL, NULL, 0, "bad", "xy", 2, 0, NULL};
    assert_ok(fhirsync_store_quarantine(s, &small, &err));
    quarantine_seen *q = calloc(1, sizeof *q);
    assert_non_null(q);
    assert_ok(fhirsync_store_quarantine_list(s, 3, 0, collect_quarantine, q, &err));
    assert_int_equal(q->count, 1);
    assert_int_equal(q->first.run_id, 3);
    assert_int_equal(q->first.line_number, 42);
    assert_int_equal(q->first.line_bytes, (int64_t)len);
    assert_int_equal(q->first.line_len, FHIRSYNC_STORE_QUARANTINE_CAP);
    assert_memory_equal(q->line, line, FHIRSYNC_STORE_QUARANTINE_CAP);
    assert_string_equal(q->reason, "line is not a JSON object");
    assert_string_equal(q->source, "https://ehr/files/Observation.ndjson");
    memset(q, 0, sizeof *q);
    assert_ok(fhirsync_store_quarantine_list(s, 0, 0, collect_quarantine, q, &err));
    assert_int_equal(q->count, 2);
    assert_int_equal(q->first.run_id, 4); /* newest first */
    free(q);
    free(line);
    fhirsync_quarantine_entry no_reason = {0};
    assert_int_equal(fhirsync_store_quarantine(s, &no_reason, &err), FHIRSYNC_E_ARG);
    fhirsync_store_close(s);
}

/* ---- runs and the watermark ------------------------------------------------------------------ */

typedef struct runs_seen {
    int count;
    int64_t ids[8];
    fhirsync_run_status status[8];
    char error[8][160];
    char counts[8][160];
} runs_seen;

static int collect_run(const fhirsync_run_info *run, void *userdata)
{
    runs_seen *r = userdata;
    if (r->count < 8) {
        r->ids[r->count] = run->id;
        r->status[r->count] = run->status;
        snprintf(r->error[r->count], sizeof r->error[0], "%s", run->error ? run->error : "");
        snprintf(r->counts[r->count], sizeof r->counts[0], "%s",
                 run->counts_json ? run->counts_json : "");
    }
    r->count++;
    return 0;
}

static void test_runs_and_watermark(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    char *mark = (char *)1;
    assert_ok(fhirsync_store_watermark(s, "ep", &mark, &err));
    assert_null(mark);
    int64_t run = 0;
    assert_ok(fs_store_run_begin(s, "ep", "bulk", NULL, &run, &err));
    assert_true(run > 0);
    fs_store_run_end end = {FHIRSYNC_RUN_OK,
                            "2024-06-01T10:00:00.123Z",
                            "{\"Patient\":10,\"Observation\":1737}",
                            1747,
                            2,
                            0,
                            NULL,
                            "2024-06-01T10:00:00.123Z"};
    assert_ok(fs_store_run_finish(s, run, &end, &err));
    assert_ok(fhirsync_store_watermark(s, "ep", &mark, &err));
    assert_string_equal(mark, "2024-06-01T10:00:00.123Z");
    fhirsync_free(mark);
    /* finishing twice, bad ends */
    assert_int_equal(fs_store_run_finish(s, run, &end, &err), FHIRSYNC_E_ARG);
    assert_contains(err.message, "not running");
    int64_t run2 = 0;
    assert_ok(fs_store_run_begin(s, "ep", "crawl", "2024-06-01T10:00:00.123Z", &run2, &err));
    fs_store_run_end failed = {FHIRSYNC_RUN_FAILED,   NULL, NULL, 0, 0, 0, "network down",
                               "2024-07-01T00:00:00Z"};
    assert_int_equal(fs_store_run_finish(s, run2, &failed, &err), FHIRSYNC_E_ARG);
    fs_store_run_end bad_counts = {FHIRSYNC_RUN_OK, NULL, "[1]", 0, 0, 0, NULL, NULL};
    assert_int_equal(fs_store_run_finish(s, run2, &bad_counts, &err), FHIRSYNC_E_ARG);
    failed.new_watermark = NULL;
    assert_ok(fs_store_run_finish(s, run2, &failed, &err));
    assert_ok(fhirsync_store_watermark(s, "ep", &mark, &err));
    assert_string_equal(mark, "2024-06-01T10:00:00.123Z");
    fhirsync_free(mark);
    /* a crashed run stays "running" until the next holder of the lock starts one */
    int64_t crashed = 0, next = 0;
    assert_ok(fs_store_run_begin(s, "ep", "bulk", NULL, &crashed, &err));
    assert_ok(fs_store_lock_endpoint(s, "ep", "test", 0, &err));
    assert_ok(fs_store_run_begin(s, "ep", "bulk", NULL, &next, &err));
    runs_seen r;
    memset(&r, 0, sizeof r);
    assert_ok(fhirsync_store_runs(s, "ep", 10, collect_run, &r, &err));
    assert_int_equal(r.count, 4);
    assert_int_equal(r.ids[0], next);
    assert_int_equal(r.status[0], FHIRSYNC_RUN_RUNNING);
    assert_int_equal(r.ids[1], crashed);
    assert_int_equal(r.status[1], FHIRSYNC_RUN_FAILED);
    assert_contains(r.error[1], "interrupted");
    assert_int_equal(r.status[2], FHIRSYNC_RUN_FAILED);
    assert_string_equal(r.error[2], "network down");
    assert_int_equal(r.status[3], FHIRSYNC_RUN_OK);
    assert_contains(r.counts[3], "1737");
    memset(&r, 0, sizeof r);
    assert_ok(fhirsync_store_runs(s, "other", 10, collect_run, &r, &err));
    assert_int_equal(r.count, 0);
    assert_ok(fs_store_unlock_endpoint(s, "ep", &err));
    /* explicit reset */
    assert_ok(fhirsync_store_set_watermark(s, "ep", NULL, &err));
    assert_ok(fhirsync_store_watermark(s, "ep", &mark, &err));
    assert_null(mark);
    assert_int_equal(fhirsync_store_set_watermark(s, "ep", "soon", &err), FHIRSYNC_E_ARG);
    fhirsync_store_close(s);
}

/* The watermark moves with the run's last rows, or not at all. */
static void test_watermark_atomic(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    assert_ok(fhirsync_store_set_watermark(s, "ep", "2024-01-01T00:00:00Z", &err));
    /* inject a failure of the watermark write, after the rows and the run update */
    const char *trigger_pg = "CREATE FUNCTION fail_watermark() RETURNS trigger LANGUAGE plpgsql"
                             " AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;"
                             "CREATE TRIGGER fail_watermark BEFORE UPDATE ON sync_state"
                             " FOR EACH ROW EXECUTE FUNCTION fail_watermark()";
    const char *trigger_sqlite = "CREATE TRIGGER fail_watermark BEFORE UPDATE ON sync_state"
                                 " BEGIN SELECT RAISE(ABORT, 'injected failure'); END";
    PGconn *conn = NULL;
    sqlite3 *db = NULL;
    if (f->pg) {
        conn = pg_raw();
        pg_run(conn, trigger_pg);
    } else {
        assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db, trigger_sqlite, NULL, NULL, NULL), SQLITE_OK);
    }
    int64_t run = 0;
    assert_ok(fs_store_run_begin(s, "ep", "bulk", NULL, &run, &err));
    fs_store_run_end end = {FHIRSYNC_RUN_OK,       "2024-02-01T00:00:00Z", NULL, 1, 0, 0, NULL,
                            "2024-02-01T00:00:00Z"};
    for (int bulk = 0; bulk < 2; bulk++) {
        assert_ok(fhirsync_store_begin(s, bulk ? FHIRSYNC_STORE_BULK : 0, &err));
        put_ok(s, NULL, patient("atomic", "A", "B"),
               f->pg && bulk ? FHIRSYNC_PUT_STAGED : FHIRSYNC_PUT_STORED);
        assert_int_equal(fs_store_run_finish(s, run, &end, &err), FHIRSYNC_E_STORE);
        assert_contains(err.message, "injected failure");
        /* nothing of the batch: no row, the run still running, the old watermark */
        assert_int_equal(fhirsync_store_commit(s, &err), FHIRSYNC_E_ARG); /* already ended */
        assert_int_equal(query_long(s, "SELECT count(*) FROM \"Patient\""), 0);
        char *mark = NULL;
        assert_ok(fhirsync_store_watermark(s, "ep", &mark, &err));
        assert_string_equal(mark, "2024-01-01T00:00:00Z");
        fhirsync_free(mark);
        runs_seen r;
        memset(&r, 0, sizeof r);
        assert_ok(fhirsync_store_runs(s, "ep", 1, collect_run, &r, &err));
        assert_int_equal(r.status[0], FHIRSYNC_RUN_RUNNING);
    }
    if (f->pg) {
        pg_run(conn, "DROP TRIGGER fail_watermark ON sync_state");
        PQfinish(conn);
    } else {
        assert_int_equal(sqlite3_exec(db, "DROP TRIGGER fail_watermark", NULL, NULL, NULL),
                         SQLITE_OK);
        sqlite3_close(db);
    }
    /* without the failure: all of it */
    assert_ok(fhirsync_store_begin(s, FHIRSYNC_STORE_BULK, &err));
    put_ok(s, NULL, patient("atomic", "A", "B"), f->pg ? FHIRSYNC_PUT_STAGED : FHIRSYNC_PUT_STORED);
    assert_ok(fs_store_run_finish(s, run, &end, &err));
    assert_int_equal(query_long(s, "SELECT count(*) FROM \"Patient\""), 1);
    char *mark = NULL;
    assert_ok(fhirsync_store_watermark(s, "ep", &mark, &err));
    assert_string_equal(mark, "2024-02-01T00:00:00Z");
    fhirsync_free(mark);

    /* a process killed in the middle of its final batch leaves the store as it was */
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        fhirsync_store *c = NULL;
        fhirsync_error cerr = {0};
        int64_t crun = 0;
        if (fhirsync_store_open(f->location, 0, &c, &cerr) != FHIRSYNC_OK ||
            fs_store_run_begin(c, "ep", "bulk", NULL, &crun, &cerr) != FHIRSYNC_OK ||
            fhirsync_store_begin(c, FHIRSYNC_STORE_BULK, &cerr) != FHIRSYNC_OK)
            _exit(1);
        for (int i = 0; i < 500; i++) {
            char id[32];
            snprintf(id, sizeof id, "killed-%d", i);
            const char *line = observation(id, "p", "1", "2024-03-01T00:00:00Z", "1");
            if (fhirsync_store_put(c, NULL, line, strlen(line), crun, NULL, &cerr) != FHIRSYNC_OK)
                _exit(1);
        }
        if (fhirsync_store_set_watermark(c, "ep", "2024-03-01T00:00:00Z", &cerr) != FHIRSYNC_OK)
            _exit(1);
        if (write(ready[1], "x", 1) != 1)
            _exit(1);
        pause(); /* killed here, before the commit */
        _exit(1);
    }
    close(ready[1]);
    char byte;
    assert_int_equal(read(ready[0], &byte, 1), 1);
    close(ready[0]);
    kill(pid, SIGKILL);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(query_long(s, "SELECT count(*) FROM \"Observation\""), 0);
    assert_ok(fhirsync_store_watermark(s, "ep", &mark, &err));
    assert_string_equal(mark, "2024-02-01T00:00:00Z");
    fhirsync_free(mark);
    fhirsync_store_close(s);
}

/* ---- locks ----------------------------------------------------------------------------------- */

/* In a child: try to lock `endpoint` with `timeout_ms`; exit 0 when the result is `want`. */
static pid_t child_lock(const fixture *f, const char *endpoint, long timeout_ms, fhirsync_code want,
                        int notify_fd)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    fhirsync_store *c = NULL;
    fhirsync_error err = {0};
    if (fhirsync_store_open(f->location, 0, &c, &err) != FHIRSYNC_OK)
        _exit(10);
    if (notify_fd >= 0 && write(notify_fd, "w", 1) != 1)
        _exit(11);
    fhirsync_code rc = fs_store_lock_endpoint(c, endpoint, "child", timeout_ms, &err);
    if (rc != want) {
        fprintf(stderr, "child lock: %s (%s)\n", fhirsync_strerror(rc), err.message);
        _exit(12);
    }
    if (rc == FHIRSYNC_E_LOCKED && !strstr(err.message, "pid "))
        _exit(13);
    _exit(0);
}

static int wait_child(pid_t pid)
{
    int status;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 100 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

static void test_locks(void **state)
{
    fixture *f = *state;
    fhirsync_store *a = open_store(f), *b = open_store(f);
    fhirsync_error err = {0};
    assert_ok(fs_store_lock_endpoint(a, "practice-a", "worker-1", 0, &err));
    assert_ok(fs_store_lock_endpoint(a, "practice-a", "worker-1", 0, &err)); /* already ours */
    /* another handle of this process, and another process */
    assert_int_equal(fs_store_lock_endpoint(b, "practice-a", NULL, 0, &err), FHIRSYNC_E_LOCKED);
    assert_contains(err.message, "practice-a");
    char pid_text[32];
    snprintf(pid_text, sizeof pid_text, "pid %ld", (long)getpid());
    assert_contains(err.message, pid_text);
    assert_contains(err.message, "worker-1");
    assert_int_equal(wait_child(child_lock(f, "practice-a", 0, FHIRSYNC_E_LOCKED, -1)), 0);
    /* a bounded wait that runs out */
    int64_t t0 = fs_monotonic_ms();
    assert_int_equal(fs_store_lock_endpoint(b, "practice-a", NULL, 300, &err), FHIRSYNC_E_LOCKED);
    assert_true(fs_monotonic_ms() - t0 >= 290);
    /* other endpoints are independent */
    assert_ok(fs_store_lock_endpoint(b, "practice-b", NULL, 0, &err));
    /* a waiter gets the lock once it is released */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t waiter = child_lock(f, "practice-a", 30000, FHIRSYNC_OK, fds[1]);
    char byte;
    assert_int_equal(read(fds[0], &byte, 1), 1);
    assert_ok(fs_store_unlock_endpoint(a, "practice-a", &err));
    assert_int_equal(wait_child(waiter), 0);
    close(fds[0]);
    close(fds[1]);
    assert_int_equal(fs_store_unlock_endpoint(a, "practice-a", &err), FHIRSYNC_E_ARG);
    /* a holder killed with SIGKILL: its lock dies with it */
    assert_int_equal(pipe(fds), 0);
    pid_t holder = fork();
    assert_true(holder >= 0);
    if (holder == 0) {
        fhirsync_store *c = NULL;
        fhirsync_error cerr = {0};
        if (fhirsync_store_open(f->location, 0, &c, &cerr) != FHIRSYNC_OK ||
            fs_store_lock_endpoint(c, "practice-c", "doomed", 0, &cerr) != FHIRSYNC_OK ||
            write(fds[1], "l", 1) != 1)
            _exit(1);
        pause();
        _exit(1);
    }
    assert_int_equal(read(fds[0], &byte, 1), 1);
    assert_int_equal(fs_store_lock_endpoint(a, "practice-c", NULL, 0, &err), FHIRSYNC_E_LOCKED);
    assert_contains(err.message, "doomed");
    kill(holder, SIGKILL);
    assert_int_equal(wait_child(holder), 100 + SIGKILL);
    assert_ok(fs_store_lock_endpoint(a, "practice-c", "successor", 10000, &err));
    close(fds[0]);
    close(fds[1]);
    /* locks are not taken inside a batch; closing releases them */
    assert_ok(fhirsync_store_begin(a, 0, &err));
    assert_int_equal(fs_store_lock_endpoint(a, "practice-d", NULL, 0, &err), FHIRSYNC_E_ARG);
    assert_ok(fhirsync_store_rollback(a, &err));
    fhirsync_store_close(a);
    assert_ok(fs_store_lock_endpoint(b, "practice-c", NULL, 0, &err));
    fhirsync_store_close(b);
}

/* ---- work queue ------------------------------------------------------------------------------ */

/* Move every lease into the past: the database clock for PostgreSQL, ours for SQLite. */
static void expire_leases(const fixture *f)
{
    if (f->pg) {
        PGconn *conn = pg_raw();
        pg_run(conn, "UPDATE work_items SET lease_until = lease_until - 3600"
                     " WHERE state = 'claimed'");
        PQfinish(conn);
    } else {
        fs_time_set_offset(3600);
    }
}

static void test_work_queue(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    int64_t ids[4] = {0};
    fs_store_work_spec spec = {FS_STORE_WORK_FILE_LOAD,
                               "ep",
                               "export-1",
                               "file:1",
                               "{\"url\":\"https://ehr/1.ndjson\",\"type\":\"Patient\"}",
                               0};
    assert_ok(fs_store_work_enqueue(s, &spec, &ids[0], &err));
    int64_t again = 0;
    assert_ok(fs_store_work_enqueue(s, &spec, &again, &err));
    assert_int_equal(again, ids[0]); /* the same key: the same item */
    spec.key = "file:2";
    assert_ok(fs_store_work_enqueue(s, &spec, &ids[1], &err));
    spec.key = NULL;
    spec.kind = FS_STORE_WORK_ENDPOINT_SYNC;
    spec.batch = NULL;
    spec.payload = NULL;
    spec.max_attempts = 2;
    assert_ok(fs_store_work_enqueue(s, &spec, &ids[2], &err));
    spec.kind = "bogus";
    assert_int_equal(fs_store_work_enqueue(s, &spec, NULL, &err), FHIRSYNC_E_ARG);
    spec.kind = FS_STORE_WORK_FILE_LOAD;
    spec.payload = "not json";
    assert_int_equal(fs_store_work_enqueue(s, &spec, NULL, &err), FHIRSYNC_E_ARG);

    /* claims in order, by kind */
    fs_store_work_item *item = NULL, *other = NULL;
    assert_ok(fs_store_work_claim(s, "w1", FS_STORE_WORK_ENDPOINT_SYNC, 60, &item, &err));
    assert_non_null(item);
    assert_int_equal(item->id, ids[2]);
    assert_string_equal(item->kind, FS_STORE_WORK_ENDPOINT_SYNC);
    assert_null(item->batch);
    assert_int_equal(item->attempts, 1);
    fs_store_work_item_free(item);
    assert_ok(fs_store_work_claim(s, "w1", NULL, 60, &item, &err));
    assert_int_equal(item->id, ids[0]);
    assert_string_equal(item->batch, "export-1");
    assert_string_equal(item->key, "file:1");
    assert_contains(item->payload, "https://ehr/1.ndjson");
    assert_ok(fs_store_work_claim(s, "w2", NULL, 60, &other, &err));
    assert_int_equal(other->id, ids[1]);
    fs_store_work_item *none = (fs_store_work_item *)1;
    assert_ok(fs_store_work_claim(s, "w3", NULL, 60, &none, &err));
    assert_null(none);

    /* the file's last rows and its completion commit together */
    assert_ok(fs_store_work_heartbeat(s, item->id, "w1", 120, &err));
    assert_ok(fhirsync_store_begin(s, FHIRSYNC_STORE_BULK, &err));
    put_ok(s, NULL, patient("wq", "A", "B"), f->pg ? FHIRSYNC_PUT_STAGED : FHIRSYNC_PUT_STORED);
    assert_ok(fs_store_work_complete(s, item->id, "w1", "{\"resources\":1}", &err));
    assert_int_equal(fs_store_work_claim(s, "w1", NULL, 60, &none, &err), FHIRSYNC_E_ARG);
    assert_ok(fhirsync_store_commit(s, &err));
    fs_store_work_counts sum;
    assert_ok(fs_store_work_summary(s, "export-1", &sum, &err));
    assert_int_equal(sum.done, 1);
    assert_int_equal(sum.claimed, 1);
    assert_int_equal(sum.pending, 0);

    /* w2 dies: its lease expires, w3 takes the item over; w2's late calls are refused */
    expire_leases(f);
    assert_ok(fs_store_work_claim(s, "w3", NULL, 60, &none, &err));
    assert_non_null(none);
    assert_int_equal(none->id, ids[1]);
    assert_int_equal(none->attempts, 2);
    assert_int_equal(fs_store_work_heartbeat(s, other->id, "w2", 60, &err), FHIRSYNC_E_LOCKED);
    assert_int_equal(fs_store_work_complete(s, other->id, "w2", NULL, &err), FHIRSYNC_E_LOCKED);
    /* a retryable failure makes it pending again, after its delay */
    assert_ok(fs_store_work_fail(s, none->id, "w3", "HTTP 503", 0, &err));
    fs_store_work_item_free(none);
    assert_ok(fs_store_work_claim(s, "w4", FS_STORE_WORK_FILE_LOAD, 60, &none, &err));
    assert_non_null(none);
    assert_int_equal(none->attempts, 3);
    assert_ok(fs_store_work_fail(s, none->id, "w4", "gone for good", -1, &err));
    fs_store_work_item_free(none);
    assert_ok(fs_store_work_summary(s, "export-1", &sum, &err));
    assert_int_equal(sum.failed, 1);
    assert_int_equal(sum.done, 1);
    fs_store_work_item_free(item);
    fs_store_work_item_free(other);

    /* a poison item (max_attempts 2) whose worker keeps dying ends failed */
    fs_time_set_offset(0);
    spec.kind = FS_STORE_WORK_ENDPOINT_SYNC;
    spec.payload = NULL;
    spec.batch = "poison";
    int64_t poison = 0;
    assert_ok(fs_store_work_enqueue(s, &spec, &poison, &err));
    /* the endpoint-sync item claimed first (ids[2]) is still claimed by w1: finish it */
    assert_ok(fs_store_work_complete(s, ids[2], "w1", NULL, &err));
    for (int attempt = 1; attempt <= 2; attempt++) {
        if (!f->pg)
            fs_time_set_offset(3600 * (attempt - 1) * 2);
        assert_ok(fs_store_work_claim(s, "dies", NULL, 60, &item, &err));
        assert_non_null(item);
        assert_int_equal(item->id, poison);
        fs_store_work_item_free(item);
        expire_leases(f);
    }
    if (!f->pg)
        fs_time_set_offset(3600 * 10);
    assert_ok(fs_store_work_claim(s, "next", NULL, 60, &item, &err));
    assert_null(item);
    assert_ok(fs_store_work_summary(s, "poison", &sum, &err));
    assert_int_equal(sum.failed, 1);
    scalar why = query1(s, "SELECT error FROM work_items WHERE batch = 'poison'");
    assert_contains(why.text, "lease expired 2 times");
    assert_ok(fs_store_work_summary(s, NULL, &sum, &err));
    assert_int_equal(sum.pending + sum.claimed + sum.done + sum.failed, 4);
    fhirsync_store_close(s);
}

/* Three worker processes drain one queue: every item done exactly once. */
static void test_work_three_workers(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    enum { ITEMS = 90, WORKERS = 3 };
    for (int i = 0; i < ITEMS; i++) {
        char key[32];
        snprintf(key, sizeof key, "item-%d", i);
        fs_store_work_spec spec = {FS_STORE_WORK_FILE_LOAD, "ep", "big", key, NULL, 0};
        assert_ok(fs_store_work_enqueue(s, &spec, NULL, &err));
    }
    pid_t pids[WORKERS];
    for (int w = 0; w < WORKERS; w++) {
        pids[w] = fork();
        assert_true(pids[w] >= 0);
        if (pids[w] == 0) {
            fhirsync_store *c = NULL;
            fhirsync_error cerr = {0};
            char worker[16], result[64];
            snprintf(worker, sizeof worker, "worker-%d", w);
            if (fhirsync_store_open(f->location, 0, &c, &cerr) != FHIRSYNC_OK)
                _exit(1);
            for (;;) {
                fs_store_work_item *it = NULL;
                if (fs_store_work_claim(c, worker, NULL, 60, &it, &cerr) != FHIRSYNC_OK)
                    _exit(2);
                if (!it)
                    break;
                snprintf(result, sizeof result, "{\"worker\":\"%s\"}", worker);
                fhirsync_code rc = fs_store_work_complete(c, it->id, worker, result, &cerr);
                fs_store_work_item_free(it);
                if (rc != FHIRSYNC_OK)
                    _exit(3);
            }
            fhirsync_store_close(c);
            _exit(0);
        }
    }
    for (int w = 0; w < WORKERS; w++)
        assert_int_equal(wait_child(pids[w]), 0);
    fs_store_work_counts sum;
    assert_ok(fs_store_work_summary(s, "big", &sum, &err));
    assert_int_equal(sum.done, ITEMS);
    assert_int_equal(query_long(s, "SELECT count(*) FROM work_items WHERE attempts <> 1"), 0);
    assert_int_equal(query_long(s, "SELECT count(*) FROM work_items WHERE claimed_by IS NULL"), 0);
    fhirsync_store_close(s);
}

/* ---- queries --------------------------------------------------------------------------------- */

static int count_rows(size_t ncols, const char *const *names, const char *const *values,
                      const size_t *lengths, void *userdata)
{
    (void)ncols;
    (void)names;
    (void)values;
    (void)lengths;
    ++*(int *)userdata;
    return 0;
}

static void test_query_readonly(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    put_ok(s, NULL, patient("q1", "Lindgren", "Claudia"), FHIRSYNC_PUT_STORED);
    put_ok(s, NULL, observation("qo", "q1", NULL, NULL, "6.0E-3"), FHIRSYNC_PUT_STORED);
    fhirsync_store_close(s);
    fhirsync_store *ro = NULL;
    assert_ok(fhirsync_store_open(f->location, FHIRSYNC_STORE_READONLY, &ro, &err));
    assert_string_equal(query1(ro, "SELECT id FROM \"Patient\"").text, "q1");
    assert_string_equal(query1(ro, "SELECT patient_id FROM \"Observation\"").text, "q1");
    int rows = 0;
    assert_ok(fhirsync_store_query(ro, "SELECT * FROM sync_runs", count_rows, &rows, &err));
    assert_int_equal(rows, 0);
    const char *writes[] = {"DELETE FROM \"Patient\"",
                            "INSERT INTO sync_state VALUES"
                            " ('x', NULL, 'y', NULL)",
                            "DROP TABLE \"Patient\""};
    for (size_t i = 0; i < sizeof writes / sizeof *writes; i++) {
        fhirsync_code rc = fhirsync_store_query(ro, writes[i], count_rows, &rows, &err);
        if (rc != FHIRSYNC_E_ARG && rc != FHIRSYNC_E_STORE)
            fail_msg("%s: %s", writes[i], fhirsync_strerror(rc));
    }
    assert_int_equal(query_long(ro, "SELECT count(*) FROM \"Patient\""), 1);
    fhirsync_code rc = fhirsync_store_query(ro, "SELECT 1; SELECT 2", count_rows, &rows, &err);
    assert_true(rc == FHIRSYNC_E_ARG || rc == FHIRSYNC_E_STORE);
    assert_int_equal(fhirsync_store_query(ro, "SELEKT 1", count_rows, &rows, &err),
                     FHIRSYNC_E_STORE);
    fhirsync_store_close(ro);
    /* a read-write handle refuses writes through query() too */
    s = open_store(f);
    assert_int_not_equal(
        fhirsync_store_query(s, "DELETE FROM \"Patient\"", count_rows, &rows, &err), FHIRSYNC_OK);
    if (!f->pg) {
        assert_int_equal(fhirsync_store_query(s, "ATTACH 'x.db' AS x", count_rows, &rows, &err),
                         FHIRSYNC_E_STORE);
        assert_int_equal(fhirsync_store_query(s, "BEGIN", count_rows, &rows, &err),
                         FHIRSYNC_E_STORE);
    }
    assert_int_equal(query_long(s, "SELECT count(*) FROM \"Patient\""), 1);
    fhirsync_store_close(s);
}

/* ---- SQLite only ----------------------------------------------------------------------------- */

static void test_sqlite_file_modes(void **state)
{
    fixture *f = *state;
    mode_t old = umask(0); /* even with a permissive umask */
    fhirsync_store *s = open_store(f);
    put_ok(s, NULL, patient("m", "A", "B"), FHIRSYNC_PUT_STORED);
    fhirsync_error err = {0};
    assert_ok(fs_store_lock_endpoint(s, "ep", NULL, 0, &err));
    umask(old);
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        char path[PATH_MAX + 8];
        snprintf(path, sizeof path, "%s%s", f->path, suffixes[i]);
        struct stat st;
        if (stat(path, &st) != 0)
            fail_msg("%s is missing", path);
        if (st.st_mode & 077)
            fail_msg("%s has mode %03o", path, (unsigned)(st.st_mode & 0777));
    }
    fhirsync_store_close(s);
    /* an existing file readable by others is tightened */
    char loose[PATH_MAX];
    snprintf(loose, sizeof loose, "%s/loose.db", tmpdir);
    int fd = open(loose, O_CREAT | O_WRONLY, 0644);
    assert_true(fd >= 0);
    close(fd);
    chmod(loose, 0644);
    assert_ok(fhirsync_store_open(loose, 0, &s, &err));
    fhirsync_store_close(s);
    struct stat st;
    assert_int_equal(stat(loose, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* an unwritable location is a clear I/O error */
    assert_int_equal(fhirsync_store_open("/proc/no/such/dir/x.db", 0, &s, &err), FHIRSYNC_E_IO);
    assert_contains(err.message, "/proc/no/such/dir/x.db");
}

static void remove_db(const char *path)
{
    char p[PATH_MAX + 8];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
}

/* Fail the 1st, 2nd, ... allocation of open + put + commit (and the rest of a small run): each
 * failure ends in FHIRSYNC_E_NOMEM or FHIRSYNC_E_STORE, and nothing leaks (ASan). */
static void test_alloc_failure_walk(void **state)
{
    fixture *f = *state;
    bool completed = false;
    unsigned long n;
    for (n = 1; n < 20000 && !completed; n++) {
        remove_db(f->path);
        fhirsync_store *s = NULL;
        fhirsync_error err = {0};
        fhirsync_code rcs[12];
        int k = 0;
        fs_alloc_fail_at(n);
        rcs[k++] = fhirsync_store_open(f->path, 0, &s, &err);
        if (s) {
            int64_t run = 0;
            const char *p = patient("a1", "A", "B");
            const char *o = observation("o1", "a1", "1", "2024-01-01T00:00:00Z", "1.50");
            const char *other = "{\"resourceType\":\"BodyStructure\",\"id\":\"b1\",\"patient\":"
                                "{\"reference\":\"Patient/a1\"}}";
            rcs[k++] = fs_store_lock_endpoint(s, "ep", "walk", 0, &err);
            rcs[k++] = fs_store_run_begin(s, "ep", "bulk", NULL, &run, &err);
            rcs[k++] = fhirsync_store_begin(s, FHIRSYNC_STORE_BULK, &err);
            rcs[k++] = fhirsync_store_put(s, NULL, p, strlen(p), run, NULL, &err);
            rcs[k++] = fhirsync_store_put(s, NULL, o, strlen(o), run, NULL, &err);
            rcs[k++] = fhirsync_store_put(s, NULL, other, strlen(other), run, NULL, &err);
            rcs[k++] = fhirsync_store_delete(s, "Observation", "gone", NULL, run, NULL, &err);
            fs_store_run_end end = {FHIRSYNC_RUN_OK,       NULL, "{\"Patient\":1}", 3, 1, 0, NULL,
                                    "2024-01-02T00:00:00Z"};
            rcs[k++] =
                run ? fs_store_run_finish(s, run, &end, &err) : fhirsync_store_commit(s, &err);
            fhirsync_type_count *counts = NULL;
            size_t count_n = 0;
            rcs[k++] = fhirsync_store_counts(s, &counts, &count_n, &err);
            fhirsync_free(counts);
            fhirsync_store_close(s);
        }
        bool fired = fs_alloc_failure_fired();
        fs_alloc_fail_at(0);
        bool all_ok = true;
        for (int i = 0; i < k; i++) {
            if (rcs[i] != FHIRSYNC_OK && rcs[i] != FHIRSYNC_E_NOMEM && rcs[i] != FHIRSYNC_E_STORE &&
                rcs[i] != FHIRSYNC_E_ARG)
                fail_msg("allocation %lu, call %d: %s (%s)", n, i, fhirsync_strerror(rcs[i]),
                         err.message);
            all_ok &= rcs[i] == FHIRSYNC_OK;
        }
        if (!fired) {
            if (!all_ok || k < 10)
                fail_msg("allocation %lu: no injected failure, yet not all calls succeeded", n);
            completed = true;
        }
    }
    assert_true(completed);
    assert_true(n > 20);
    /* after all that, a clean run works */
    remove_db(f->path);
    fhirsync_store_close(open_store(f));
}

/* ---- PostgreSQL only ------------------------------------------------------------------------- */

static void test_pg_skip_locked(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    int64_t first = 0, second = 0;
    fs_store_work_spec spec = {FS_STORE_WORK_FILE_LOAD, "ep", NULL, NULL, NULL, 0};
    assert_ok(fs_store_work_enqueue(s, &spec, &first, &err));
    assert_ok(fs_store_work_enqueue(s, &spec, &second, &err));
    /* another session holds the first row locked (a claimer mid-transaction) */
    PGconn *conn = pg_raw();
    pg_run(conn, "SET lock_timeout = '20s'");
    pg_run(conn, "BEGIN");
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT id FROM work_items WHERE id = %lld FOR UPDATE",
             (long long)first);
    pg_run(conn, sql);
    int64_t t0 = fs_monotonic_ms();
    fs_store_work_item *item = NULL;
    assert_ok(fs_store_work_claim(s, "w", NULL, 60, &item, &err));
    assert_non_null(item);
    assert_int_equal(item->id, second); /* skipped, not waited for */
    assert_true(fs_monotonic_ms() - t0 < 5000);
    fs_store_work_item_free(item);
    assert_ok(fs_store_work_claim(s, "w", NULL, 60, &item, &err));
    assert_null(item);
    pg_run(conn, "COMMIT");
    assert_ok(fs_store_work_claim(s, "w", NULL, 60, &item, &err));
    assert_non_null(item);
    assert_int_equal(item->id, first);
    fs_store_work_item_free(item);
    PQfinish(conn);
    fhirsync_store_close(s);
}

static void test_pg_advisory_lock_other_session(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    PGconn *conn = pg_raw();
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT pg_advisory_lock(%lld)",
             (long long)(int64_t)fs_store_hash("fhirsync-sync-lock", "practice-x"));
    pg_run(conn, sql);
    assert_int_equal(fs_store_lock_endpoint(s, "practice-x", NULL, 0, &err), FHIRSYNC_E_LOCKED);
    assert_contains(err.message, "database session pid");
    char backend[32];
    snprintf(backend, sizeof backend, "pid %d", PQbackendPID(conn));
    assert_contains(err.message, backend);
    PQfinish(conn); /* the session ends: its lock goes with it */
    assert_ok(fs_store_lock_endpoint(s, "practice-x", NULL, 10000, &err));
    fhirsync_store_close(s);
}

/* The COPY path across several merges, with repeats and a line jsonb cannot hold. */
static void test_pg_copy_path(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    enum { ROWS = 60000 };
    assert_ok(fhirsync_store_begin(s, FHIRSYNC_STORE_BULK, &err));
    for (int i = 0; i < ROWS; i++) {
        char id[32];
        snprintf(id, sizeof id, "c%d", i % 50000); /* the last 10,000 repeat, newer */
        const char *line = observation(id, "p", i < 50000 ? "1" : "2",
                                       i < 50000 ? "2024-01-01T00:00:00Z" : "2024-02-01T00:00:00Z",
                                       i < 50000 ? "1" : "2.50");
        put_ok(s, "Observation", line, FHIRSYNC_PUT_STAGED);
    }
    const char *nul = "{\"resourceType\":\"Observation\",\"id\":\"nul\",\"valueString\":"
                      "\"a\\u0000b\"}";
    put_ok(s, "Observation", nul, FHIRSYNC_PUT_STAGED);
    /* an older copy of a repeated id after the merge: kept out */
    put_ok(s, "Observation", observation("c7", "p", "1", "2024-01-01T00:00:00Z", "1"),
           FHIRSYNC_PUT_STAGED);
    assert_ok(fhirsync_store_commit(s, &err));
    assert_int_equal(query_long(s, "SELECT count(*) FROM \"Observation\""), 50001);
    assert_int_equal(query_long(s, "SELECT count(*) FROM \"Observation\" WHERE version_id = '2'"),
                     10000);
    assert_string_equal(query1(s, "SELECT resource #>> '{valueQuantity,value}' FROM"
                                  " \"Observation\" WHERE id = 'c7'")
                            .text,
                        "2.50");
    scalar r = query1(s, "SELECT resource FROM \"Observation\" WHERE id = 'nul'");
    assert_true(r.null);
    assert_string_equal(raw_of(s, "Observation", "nul").text, nul);
    assert_int_equal(query_long(s, "SELECT count(*) FROM \"Observation\" WHERE patient_id = 'p'"),
                     50000);
    /* a rolled-back bulk batch leaves nothing, and the staging is clean afterwards */
    assert_ok(fhirsync_store_begin(s, FHIRSYNC_STORE_BULK, &err));
    put_ok(s, "Observation", observation("rolled", "p", NULL, NULL, "1"), FHIRSYNC_PUT_STAGED);
    assert_ok(fhirsync_store_rollback(s, &err));
    assert_ok(fhirsync_store_begin(s, FHIRSYNC_STORE_BULK, &err));
    put_ok(s, "Observation", observation("kept", "p", NULL, NULL, "1"), FHIRSYNC_PUT_STAGED);
    assert_ok(fhirsync_store_commit(s, &err));
    assert_int_equal(query_long(s, "SELECT count(*) FROM \"Observation\" WHERE id IN"
                                   " ('rolled', 'kept')"),
                     1);
    fhirsync_store_close(s);
}

static void test_pg_password_never_shown(void **state)
{
    (void)state;
    fhirsync_store *s = NULL;
    fhirsync_error err = {0};
    /* a server that is not there, with a password in the URL */
    assert_int_equal(
        fhirsync_store_open("postgresql://alice:Sup3rS3cret@127.0.0.1:1/db", 0, &s, &err),
        FHIRSYNC_E_STORE);
    assert_null(strstr(err.message, "Sup3rS3cret"));
    assert_contains(err.message, "alice@127.0.0.1");
    assert_int_equal(
        fhirsync_store_open("postgresql://alice:Sup3rS3cret@h/db?bogus=%zz", 0, &s, &err),
        FHIRSYNC_E_CONFIG);
    assert_null(strstr(err.message, "Sup3rS3cret"));
    assert_int_equal(
        fhirsync_store_open("host=127.0.0.1 port=1 password=Sup3rS3cret user=bob", 0, &s, &err),
        FHIRSYNC_E_STORE);
    assert_null(strstr(err.message, "Sup3rS3cret"));
    /* a keyword string with a socket directory is PostgreSQL too, not a file path */
    assert_int_equal(fhirsync_store_open("host=/nonexistent/socket-dir port=1 dbname=x "
                                         "password=Sup3rS3cret",
                                         0, &s, &err),
                     FHIRSYNC_E_STORE);
    assert_contains(err.message, "PostgreSQL");
    assert_null(strstr(err.message, "Sup3rS3cret"));
    assert_int_equal(access("host=", F_OK), -1);
}

/* ---- each endpoint's status ------------------------------------------------------------------ */

typedef struct status_seen {
    size_t count;
    char endpoint[8][16];
    fhirsync_endpoint_state state[8];
    int64_t failures[8], last_success[8], last_run[8], runs[8];
    char error[8][64];
    char watermark[8][40];
    int64_t watermark_s[8], last_success_s[8];
    size_t stop_after; /* 0: never */
} status_seen;

static int collect_status(const fhirsync_endpoint_status *st, void *userdata)
{
    status_seen *r = userdata;
    if (r->count < 8) {
        size_t i = r->count;
        snprintf(r->endpoint[i], sizeof r->endpoint[i], "%s", st->endpoint);
        r->state[i] = st->state;
        r->failures[i] = st->consecutive_failures;
        r->last_success[i] = st->last_success_id;
        r->last_success_s[i] = st->last_success_s;
        r->last_run[i] = st->last_run_id;
        r->runs[i] = st->last_run_id ? 1 : 0;
        snprintf(r->error[i], sizeof r->error[i], "%s", st->last_error ? st->last_error : "");
        snprintf(r->watermark[i], sizeof r->watermark[i], "%s", st->watermark ? st->watermark : "");
        r->watermark_s[i] = st->watermark_s;
    }
    r->count++;
    return r->stop_after && r->count >= r->stop_after;
}

static status_seen status_of(fhirsync_store *s, const char *endpoint)
{
    status_seen r;
    memset(&r, 0, sizeof r);
    fhirsync_error err = {0};
    assert_ok(fhirsync_store_status(s, endpoint, collect_status, &r, &err));
    return r;
}

static void test_endpoint_status(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    assert_string_equal(fhirsync_endpoint_state_name(FHIRSYNC_STATE_INTERRUPTED), "interrupted");
    assert_string_equal(fhirsync_endpoint_state_name(FHIRSYNC_STATE_NEVER), "never");
    assert_int_equal(fhirsync_store_status(s, NULL, NULL, NULL, &err), FHIRSYNC_E_ARG);
    status_seen r = status_of(s, NULL);
    assert_int_equal(r.count, 0); /* nothing recorded: nothing reported */

    /* a: a successful run, then two failures (the second with a multi-line error) */
    int64_t run = 0;
    assert_ok(fs_store_run_begin(s, "a", "bulk", NULL, &run, &err));
    fs_store_run_end ok = {.status = FHIRSYNC_RUN_OK, .new_watermark = "2024-06-01T10:00:00Z"};
    assert_ok(fs_store_run_finish(s, run, &ok, &err));
    r = status_of(s, "a");
    assert_int_equal(r.count, 1);
    assert_int_equal(r.state[0], FHIRSYNC_STATE_IDLE);
    assert_int_equal(r.last_success[0], run);
    assert_true(r.last_success_s[0] > 1700000000);
    assert_string_equal(r.watermark[0], "2024-06-01T10:00:00Z");
    assert_int_equal(r.watermark_s[0], 1717236000);
    assert_int_equal(r.failures[0], 0);
    assert_string_equal(r.error[0], "");
    int64_t good = run;
    for (int i = 0; i < 2; i++) {
        assert_ok(fs_store_run_begin(s, "a", "bulk", "2024-06-01T10:00:00Z", &run, &err));
        fs_store_run_end bad = {.status = FHIRSYNC_RUN_FAILED,
                                .error = i ? "HTTP 503 at kick-off:\n\tservice down" : "first"};
        assert_ok(fs_store_run_finish(s, run, &bad, &err));
    }
    r = status_of(s, "a");
    assert_int_equal(r.state[0], FHIRSYNC_STATE_FAILING);
    assert_int_equal(r.failures[0], 2);
    assert_int_equal(r.last_success[0], good);
    assert_int_equal(r.last_run[0], run);
    assert_string_equal(r.error[0], "HTTP 503 at kick-off:  service down");
    /* a partial run is a success: the failures start again from 0 */
    assert_ok(fs_store_run_begin(s, "a", "bulk", NULL, &run, &err));
    fs_store_run_end partial = {.status = FHIRSYNC_RUN_PARTIAL, .quarantined = 1};
    assert_ok(fs_store_run_finish(s, run, &partial, &err));
    r = status_of(s, "a");
    assert_int_equal(r.state[0], FHIRSYNC_STATE_IDLE);
    assert_int_equal(r.failures[0], 0);
    assert_int_equal(r.last_success[0], run);
    assert_string_equal(r.error[0], "HTTP 503 at kick-off:  service down"); /* still the latest */

    /* b: a run whose process holds the lock is running, for this handle and for another; once the
     * lock is gone (its process died), interrupted */
    assert_ok(fs_store_lock_endpoint(s, "b", "test", 0, &err));
    int64_t brun = 0;
    assert_ok(fs_store_run_begin(s, "b", "crawl", NULL, &brun, &err));
    r = status_of(s, "b");
    assert_int_equal(r.state[0], FHIRSYNC_STATE_RUNNING);
    fhirsync_store *other = NULL;
    assert_ok(fhirsync_store_open(f->location, FHIRSYNC_STORE_READONLY, &other, &err));
    r = status_of(other, "b");
    assert_int_equal(r.count, 1);
    assert_int_equal(r.state[0], FHIRSYNC_STATE_RUNNING);
    assert_ok(fs_store_unlock_endpoint(s, "b", &err));
    r = status_of(other, "b");
    assert_int_equal(r.state[0], FHIRSYNC_STATE_INTERRUPTED);
    assert_int_equal(r.last_success[0], 0);
    assert_int_equal(r.failures[0], 0);

    /* w: a workers' run holds no lock while its files are queued: running until none is left */
    int64_t wrun = 0, item = 0;
    assert_ok(fs_store_run_begin(s, "w", "bulk-worker", NULL, &wrun, &err));
    char batch[64];
    snprintf(batch, sizeof batch, "export/w/%lld", (long long)wrun);
    fs_store_work_spec spec = {.kind = FS_STORE_WORK_FILE_LOAD, .endpoint = "w", .batch = batch};
    assert_ok(fs_store_work_enqueue(s, &spec, &item, &err));
    r = status_of(other, "w");
    assert_int_equal(r.state[0], FHIRSYNC_STATE_RUNNING);
    fs_store_work_item *claimed = NULL;
    assert_ok(fs_store_work_claim(s, "w1", NULL, 30, &claimed, &err));
    assert_non_null(claimed);
    assert_ok(fs_store_work_complete(s, claimed->id, "w1", NULL, &err));
    fs_store_work_item_free(claimed);
    r = status_of(other, "w");
    assert_int_equal(r.state[0], FHIRSYNC_STATE_INTERRUPTED);

    /* c: a watermark set by hand, no run: never synced, the watermark shown */
    assert_ok(fhirsync_store_set_watermark(s, "c", "2025-01-02T03:04:05.678+01:00", &err));
    r = status_of(other, NULL);
    assert_int_equal(r.count, 4);
    assert_string_equal(r.endpoint[0], "a");
    assert_string_equal(r.endpoint[1], "b");
    assert_string_equal(r.endpoint[2], "c");
    assert_string_equal(r.endpoint[3], "w");
    assert_int_equal(r.state[2], FHIRSYNC_STATE_NEVER);
    assert_int_equal(r.runs[2], 0);
    assert_int_equal(r.watermark_s[2], 1735783445);
    /* the callback stops the listing */
    memset(&r, 0, sizeof r);
    r.stop_after = 2;
    assert_ok(fhirsync_store_status(other, NULL, collect_status, &r, &err));
    assert_int_equal(r.count, 2);
    assert_int_equal(status_of(other, "nobody").count, 0);
    /* not inside a batch */
    assert_ok(fhirsync_store_begin(s, 0, &err));
    assert_int_equal(fhirsync_store_status(s, NULL, collect_status, &r, &err), FHIRSYNC_E_ARG);
    fhirsync_store_rollback(s, NULL);
    fhirsync_store_close(other);
    fhirsync_store_close(s);
}

/* ---- main ------------------------------------------------------------------------------------ */

#define BOTH(fn) cmocka_unit_test_setup_teardown(fn, setup_sqlite, teardown)
#define PG(fn) cmocka_unit_test_setup_teardown(fn, setup_pg, teardown_pg)

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest sqlite_tests[] = {
        cmocka_unit_test(test_scanner_fields),
        cmocka_unit_test(test_scanner_rejects),
        cmocka_unit_test(test_scanner_helpers),
        BOTH(test_open_and_migrations),
        BOTH(test_concurrent_migration),
        BOTH(test_newer_schema_refused),
        BOTH(test_exact_bytes),
        BOTH(test_upsert_rule),
        BOTH(test_append),
        BOTH(test_bind_endpoint),
        BOTH(test_put_rejects),
        BOTH(test_new_type_rollback),
        BOTH(test_patient_record),
        BOTH(test_deletions),
        BOTH(test_quarantine),
        BOTH(test_runs_and_watermark),
        BOTH(test_endpoint_status),
        BOTH(test_watermark_atomic),
        BOTH(test_locks),
        BOTH(test_work_queue),
        BOTH(test_work_three_workers),
        BOTH(test_query_readonly),
        BOTH(test_sqlite_file_modes),
        BOTH(test_alloc_failure_walk),
    };
    const struct CMUnitTest pg_tests[] = {
        PG(test_open_and_migrations),
        PG(test_concurrent_migration),
        PG(test_newer_schema_refused),
        PG(test_exact_bytes),
        PG(test_upsert_rule),
        PG(test_append),
        PG(test_bind_endpoint),
        PG(test_put_rejects),
        PG(test_new_type_rollback),
        PG(test_patient_record),
        PG(test_deletions),
        PG(test_quarantine),
        PG(test_runs_and_watermark),
        PG(test_endpoint_status),
        PG(test_watermark_atomic),
        PG(test_locks),
        PG(test_work_queue),
        PG(test_work_three_workers),
        PG(test_query_readonly),
        PG(test_pg_skip_locked),
        PG(test_pg_advisory_lock_other_session),
        PG(test_pg_copy_path),
        PG(test_pg_password_never_shown),
    };
    pg_url = getenv("FHIRSYNC_TEST_PG");
    if (pg_url && *pg_url) {
        /* the PostgreSQL run (from tests/integration/test_store_postgresql.sh) */
        return cmocka_run_group_tests_name("store on PostgreSQL", pg_tests, group_setup,
                                           group_teardown);
    }
    return cmocka_run_group_tests_name("store on SQLite", sqlite_tests, group_setup,
                                       group_teardown);
}
