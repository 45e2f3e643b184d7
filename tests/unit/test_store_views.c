/* unit/test_store_views.c: SQL on FHIR views materialized in the store (fhirsync/store.h,
 * "materialized views"), on SQLite always and on PostgreSQL when FHIRSYNC_TEST_PG holds a
 * connection URL (tests/integration/test_store_postgresql.sh sets it; each test starts from an
 * empty schema).
 *
 * What is checked: adding a view builds its table from the stored resources, with column types
 * from the view; every write keeps it current in the same transaction (a put that stores, an
 * older version that does not, a delete, a reconciliation, a rolled-back batch, PostgreSQL's COPY
 * and append batches with repeated ids); a resource a view cannot evaluate is stored, has no rows
 * and is quarantined with the view's name; re-adding the same definition does nothing, a changed
 * one rebuilds; another handle's new view is picked up by the next transaction; names the store
 * cannot use are refused naming the element; and after all of it each view's table equals the
 * view evaluated over the stored resources (the invariant the feature promises).
 *
 *   test_store_views --check LOCATION   the invariant on any store (tests/integration/sync_lib.sh
 *                                       runs it after every sync it checks): each registered
 *                                       view's table holds exactly the rows the view gives over
 *                                       the stored resources, compared row by row (values in a
 *                                       canonical form: numbers as numbers, JSON re-serialised,
 *                                       booleans as true/false). Prints the differences; exit 1. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "core/core.h"
#include "fhirsync/store.h"
#include "fhirsync/view.h"
#include "store/store_internal.h"

#define assert_ok(call)                                                                            \
    do {                                                                                           \
        fhirsync_code rc_ = (call);                                                                \
        if (rc_ != FHIRSYNC_OK)                                                                    \
            fail_msg("%s: %s (%s)", #call, fhirsync_strerror(rc_), err.message);                   \
    } while (0)

#define assert_contains(haystack, needle)                                                          \
    do {                                                                                           \
        const char *hay_ = (haystack);                                                             \
        if (!hay_ || !strstr(hay_, (needle)))                                                      \
            fail_msg("\"%s\" does not contain \"%s\"", hay_ ? hay_ : "(null)", (needle));          \
    } while (0)

#include "store_fixture.h"

/* ---- data ------------------------------------------------------------------------------------ */

/* Observations: one row per component, typed columns of every class. */
static const char obs_view[] =
    "{\"resourceType\":\"ViewDefinition\",\"name\":\"bp\",\"resource\":\"Observation\","
    "\"select\":[{\"column\":["
    "{\"name\":\"id\",\"path\":\"getResourceKey()\",\"type\":\"string\"},"
    "{\"name\":\"patient_id\",\"path\":\"subject.getReferenceKey(Patient)\",\"type\":\"string\"},"
    "{\"name\":\"status\",\"path\":\"status\",\"type\":\"code\"},"
    "{\"name\":\"value\",\"path\":\"value.ofType(Quantity).value\",\"type\":\"decimal\"},"
    "{\"name\":\"codes\",\"path\":\"code.coding.code\",\"type\":\"code\",\"collection\":true}]},"
    "{\"forEachOrNull\":\"component\",\"column\":["
    "{\"name\":\"component_code\",\"path\":\"code.coding.code.first()\",\"type\":\"code\"},"
    "{\"name\":\"component_value\",\"path\":\"value.ofType(Quantity).value\","
    "\"type\":\"decimal\"}]}]}";

/* Patients: `family` is not a collection, so a Patient with two names cannot be evaluated. */
static const char pat_view[] =
    "{\"resourceType\":\"ViewDefinition\",\"name\":\"people\",\"resource\":\"Patient\","
    "\"select\":[{\"column\":["
    "{\"name\":\"id\",\"path\":\"getResourceKey()\",\"type\":\"string\"},"
    "{\"name\":\"family\",\"path\":\"name.family\",\"type\":\"string\"},"
    "{\"name\":\"active\",\"path\":\"active\",\"type\":\"boolean\"},"
    "{\"name\":\"births\",\"path\":\"multipleBirth.ofType(integer)\",\"type\":\"integer\"}]}]}";

/* Patients again, one row per name: evaluated with people over one read of each resource, and
 * able to evaluate what people cannot. */
static const char name_view[] =
    "{\"resourceType\":\"ViewDefinition\",\"name\":\"names\",\"resource\":\"Patient\","
    "\"select\":[{\"column\":[{\"name\":\"id\",\"path\":\"getResourceKey()\",\"type\":\"string\"}]}"
    ","
    "{\"forEach\":\"name\",\"column\":[{\"name\":\"family\",\"path\":\"family\","
    "\"type\":\"string\"}]}]}";

static char *obs(const char *id, const char *version, const char *updated, const char *status,
                 const char *value, bool components)
{
    char *line = malloc(1024);
    snprintf(line, 1024,
             "{\"resourceType\":\"Observation\",\"id\":\"%s\",\"meta\":{\"versionId\":\"%s\","
             "\"lastUpdated\":\"%s\"},\"status\":\"%s\",\"subject\":{\"reference\":\"Patient/p1\"},"
             "\"code\":{\"coding\":[{\"code\":\"85354-9\"},{\"code\":\"BP\"}]},"
             "\"valueQuantity\":{\"value\":%s}%s}",
             id, version, updated, status, value,
             components ? ",\"component\":[{\"code\":{\"coding\":[{\"code\":\"8480-6\"}]},"
                          "\"valueQuantity\":{\"value\":120}},{\"code\":{\"coding\":[{\"code\":"
                          "\"8462-4\"}]},\"valueQuantity\":{\"value\":80.0}}]"
                        : "");
    return line;
}

static void put(fhirsync_store *s, const char *line, fhirsync_put_outcome expect)
{
    fhirsync_error err = {0};
    fhirsync_put_outcome out;
    assert_ok(fhirsync_store_put(s, NULL, line, strlen(line), 0, &out, &err));
    assert_int_equal(out, expect);
}

static void add_view(fhirsync_store *s, const char *json, fhirsync_view_stats *st)
{
    fhirsync_error err = {0};
    assert_ok(fhirsync_view_stats_init(st, FHIRSYNC_VIEW_STATS_VERSION));
    assert_ok(fhirsync_store_view_add(s, json, strlen(json), st, &err));
}

/* ---- the invariant: a view's table equals the view over the stored resources ------------------
 */

typedef struct expect_ctx {
    long rows;
} expect_ctx;

static fhirsync_code count_row(void *userdata, const fhirsync_view_value *values, size_t count)
{
    (void)values;
    (void)count;
    ((expect_ctx *)userdata)->rows++;
    return FHIRSYNC_OK;
}

typedef struct eval_ctx {
    fhirsync_view *view;
    expect_ctx expect;
} eval_ctx;

static int eval_stored(size_t ncols, const char *const *names, const char *const *values,
                       const size_t *lengths, void *userdata)
{
    (void)names;
    eval_ctx *c = userdata;
    expect_ctx one = {0};
    if (ncols >= 1 && values[0] &&
        fhirsync_view_eval(c->view, values[0], lengths[0], count_row, &one, NULL) == FHIRSYNC_OK)
        c->expect.rows += one.rows; /* a resource the view fails on has no rows */
    return 0;
}

/* `refused`: rows the evaluation gives that the store refuses (a value of the wrong type for
 * its column: the view engine does not check `type`, the store does). */
static void assert_table_equals_view(fhirsync_store *s, const char *json, const char *name,
                                     const char *type, long refused)
{
    fhirsync_error err = {0};
    eval_ctx c = {0};
    assert_ok(fhirsync_view_parse(json, strlen(json), &c.view, &err));
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT raw FROM \"%s\"", type);
    assert_ok(fhirsync_store_query(s, sql, eval_stored, &c, &err));
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", name);
    assert_int_equal(query_long(s, sql), c.expect.rows - refused);
    fhirsync_view_free(c.view);
}

/* ---- tests ----------------------------------------------------------------------------------- */

static void test_add_builds_typed_table(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    char *a = obs("a", "1", "2024-01-01T00:00:00Z", "final", "1.50", true);
    char *b = obs("b", "1", "2024-01-01T00:00:00Z", "final", "98", false);
    put(s, a, FHIRSYNC_PUT_STORED);
    put(s, b, FHIRSYNC_PUT_STORED);
    fhirsync_view_stats st;
    add_view(s, obs_view, &st);
    assert_int_equal(st.views, 1);
    assert_int_equal(st.resources, 2);
    assert_int_equal(st.rows, 3); /* two components of a, and b's null row */
    assert_int_equal(st.failed, 0);
    assert_false(st.unchanged);
    assert_int_equal(query_long(s, "SELECT count(*) FROM bp WHERE _resource_id = 'a'"), 2);
    assert_int_equal(query_long(s, "SELECT count(*) FROM bp WHERE component_code IS NULL"), 1);
    assert_string_equal(query1(s, "SELECT patient_id FROM bp WHERE id = 'b'").text, "p1");
    /* numbers compare as numbers; PostgreSQL's numeric keeps the scale */
    assert_int_equal(query_long(s, "SELECT count(*) FROM bp WHERE value > 10"), 1);
    assert_string_equal(query1(s, "SELECT value FROM bp WHERE id = 'a' LIMIT 1").text,
                        f->pg ? "1.50" : "1.5");
    assert_int_equal(query_long(s, "SELECT sum(component_value) FROM bp"), 200);
    /* a collection column is a JSON array */
    scalar codes = query1(s, "SELECT codes FROM bp WHERE id = 'b'");
    assert_string_equal(codes.text, f->pg ? "[\"85354-9\", \"BP\"]" : "[\"85354-9\",\"BP\"]");
    if (f->pg) {
        assert_string_equal(query1(s, "SELECT data_type FROM information_schema.columns WHERE"
                                      " table_name = 'bp' AND column_name = 'value'")
                                .text,
                            "numeric");
        assert_string_equal(query1(s, "SELECT data_type FROM information_schema.columns WHERE"
                                      " table_name = 'bp' AND column_name = 'codes'")
                                .text,
                            "jsonb");
    } else {
        assert_string_equal(
            query1(s, "SELECT type FROM pragma_table_info('bp') WHERE name = 'value'").text,
            "NUMERIC");
    }
    /* listed */
    assert_string_equal(query1(s, "SELECT resource_type FROM view_definitions").text,
                        "Observation");
    /* the same definition again: nothing to do */
    add_view(s, obs_view, &st);
    assert_true(st.unchanged);
    assert_int_equal(st.rows, 0);
    assert_table_equals_view(s, obs_view, "bp", "Observation", 0);
    free(a);
    free(b);
    (void)err;
    fhirsync_store_close(s);
}

static void test_writes_keep_views_current(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    fhirsync_view_stats st;
    add_view(s, obs_view, &st);
    assert_int_equal(st.rows, 0);
    char *v1 = obs("x", "1", "2024-01-01T00:00:00Z", "preliminary", "5", true);
    char *v2 = obs("x", "2", "2024-02-01T00:00:00Z", "final", "6", false);
    assert_ok(fhirsync_store_begin(s, 0, &err));
    put(s, v1, FHIRSYNC_PUT_STORED);
    assert_ok(fhirsync_store_commit(s, &err));
    assert_int_equal(query_long(s, "SELECT count(*) FROM bp WHERE status = 'preliminary'"), 2);
    /* a newer version replaces the rows */
    put(s, v2, FHIRSYNC_PUT_STORED);
    assert_int_equal(query_long(s, "SELECT count(*) FROM bp"), 1);
    assert_string_equal(query1(s, "SELECT status FROM bp").text, "final");
    /* an older version is not stored, and the rows stay */
    put(s, v1, FHIRSYNC_PUT_KEPT_NEWER);
    assert_string_equal(query1(s, "SELECT status FROM bp").text, "final");
    /* a rolled-back batch takes its rows with it */
    char *y = obs("y", "1", "2024-01-01T00:00:00Z", "final", "7", false);
    assert_ok(fhirsync_store_begin(s, 0, &err));
    put(s, y, FHIRSYNC_PUT_STORED);
    assert_ok(fhirsync_store_rollback(s, &err));
    assert_int_equal(query_long(s, "SELECT count(*) FROM bp WHERE id = 'y'"), 0);
    /* a delete removes the rows */
    bool removed = false;
    assert_ok(fhirsync_store_delete(s, "Observation", "x", NULL, 0, &removed, &err));
    assert_true(removed);
    assert_int_equal(query_long(s, "SELECT count(*) FROM bp"), 0);
    /* a delete older than the row keeps both */
    put(s, v2, FHIRSYNC_PUT_STORED);
    assert_ok(
        fhirsync_store_delete(s, "Observation", "x", "2023-01-01T00:00:00Z", 0, &removed, &err));
    assert_false(removed);
    assert_int_equal(query_long(s, "SELECT count(*) FROM bp"), 1);
    /* the same version again replaces its rows, not adds to them; so does a newer version of a
     * resource inserted in the same batch (an export that has it twice) */
    put(s, v2, FHIRSYNC_PUT_STORED);
    assert_int_equal(query_long(s, "SELECT count(*) FROM bp"), 1);
    char *z1 = obs("z", "1", "2024-01-01T00:00:00Z", "preliminary", "5", true);
    char *z2 = obs("z", "2", "2024-02-01T00:00:00Z", "final", "6", true);
    assert_ok(fhirsync_store_begin(s, 0, &err));
    put(s, z1, FHIRSYNC_PUT_STORED);
    put(s, z2, FHIRSYNC_PUT_STORED);
    put(s, z2, FHIRSYNC_PUT_STORED);
    assert_ok(fhirsync_store_commit(s, &err));
    assert_int_equal(query_long(s, "SELECT count(*) FROM bp WHERE id = 'z'"), 2);
    assert_int_equal(query_long(s, "SELECT count(*) FROM bp WHERE id = 'z' AND status = 'final'"),
                     2);
    assert_table_equals_view(s, obs_view, "bp", "Observation", 0);
    free(z1);
    free(z2);
    free(v1);
    free(v2);
    free(y);
    fhirsync_store_close(s);
}

static void test_bulk_batches(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    fhirsync_view_stats st;
    add_view(s, obs_view, &st);
    /* a bulk batch (PostgreSQL: COPY into staging, merged) with a repeated id, newer then older */
    assert_ok(fhirsync_store_begin(s, FHIRSYNC_STORE_BULK, &err));
    for (int i = 0; i < 300; i++) {
        char id[16];
        snprintf(id, sizeof id, "o%d", i);
        char *line = obs(id, "1", "2024-01-01T00:00:00Z", "final", "1", i % 2 == 0);
        fhirsync_put_outcome out;
        assert_ok(fhirsync_store_put(s, NULL, line, strlen(line), 0, &out, &err));
        free(line);
    }
    char *newer = obs("o1", "3", "2024-03-01T00:00:00Z", "amended", "2", true);
    char *older = obs("o1", "2", "2024-02-01T00:00:00Z", "corrected", "3", false);
    fhirsync_put_outcome out;
    assert_ok(fhirsync_store_put(s, NULL, newer, strlen(newer), 0, &out, &err));
    assert_ok(fhirsync_store_put(s, NULL, older, strlen(older), 0, &out, &err));
    assert_ok(fhirsync_store_commit(s, &err));
    assert_int_equal(query_long(s, "SELECT count(*) FROM bp WHERE _resource_id = 'o1'"), 2);
    assert_string_equal(query1(s, "SELECT DISTINCT status FROM bp WHERE id = 'o1'").text,
                        "amended");
    assert_int_equal(query_long(s, "SELECT count(*) FROM bp"), 150 * 2 + 149 + 2);
    assert_table_equals_view(s, obs_view, "bp", "Observation", 0);
    /* an append batch of new rows (PostgreSQL stages the types that views read) */
    assert_ok(fhirsync_store_begin(s, FHIRSYNC_STORE_BULK | FHIRSYNC_STORE_APPEND, &err));
    for (int i = 0; i < 50; i++) {
        char id[16];
        snprintf(id, sizeof id, "n%d", i);
        char *line = obs(id, "1", "2024-01-01T00:00:00Z", "registered", "1", false);
        assert_ok(fhirsync_store_put(s, NULL, line, strlen(line), 0, &out, &err));
        free(line);
    }
    assert_ok(fhirsync_store_commit(s, &err));
    assert_int_equal(query_long(s, "SELECT count(*) FROM bp WHERE status = 'registered'"), 50);
    assert_table_equals_view(s, obs_view, "bp", "Observation", 0);
    free(newer);
    free(older);
    fhirsync_store_close(s);
}

static void test_resource_a_view_cannot_evaluate(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    fhirsync_view_stats st;
    add_view(s, pat_view, &st);
    add_view(s, name_view, &st);
    const char *good = "{\"resourceType\":\"Patient\",\"id\":\"g\",\"name\":[{\"family\":\"Lee\"}],"
                       "\"active\":true,\"multipleBirthInteger\":2}";
    const char *two_names = "{\"resourceType\":\"Patient\",\"id\":\"t\",\"name\":[{\"family\":"
                            "\"A\"},{\"family\":\"B\"}]}";
    const char *bad_type = "{\"resourceType\":\"Patient\",\"id\":\"w\",\"active\":\"yes\"}";
    assert_ok(fhirsync_store_begin(s, 0, &err));
    put(s, good, FHIRSYNC_PUT_STORED);
    put(s, two_names, FHIRSYNC_PUT_STORED);
    put(s, bad_type, FHIRSYNC_PUT_STORED);
    assert_ok(fhirsync_store_commit(s, &err));
    /* the resources are stored; only the good one has rows */
    assert_int_equal(query_long(s, "SELECT count(*) FROM \"Patient\""), 3);
    assert_int_equal(query_long(s, "SELECT count(*) FROM people"), 1);
    assert_int_equal(query_long(s, "SELECT births FROM people"), 2);
    assert_string_equal(query1(s, "SELECT active FROM people").text, f->pg ? "t" : "1");
    /* quarantined, naming the view and the column */
    assert_int_equal(query_long(s, "SELECT count(*) FROM quarantine WHERE source = 'view:people'"),
                     2);
    assert_contains(
        query1(s, "SELECT reason FROM quarantine WHERE reason LIKE '%resource t:%'").text,
        "view people");
    assert_contains(
        query1(s, "SELECT reason FROM quarantine WHERE reason LIKE '%resource w:%'").text,
        "column active (boolean): the value is a string");
    /* the other view of the type read the same resources: they have their rows there, and no
     * quarantine entry names it */
    assert_int_equal(query_long(s, "SELECT count(*) FROM names"), 3);
    assert_int_equal(query_long(s, "SELECT count(*) FROM names WHERE id = 't'"), 2);
    assert_int_equal(query_long(s, "SELECT count(*) FROM quarantine WHERE source = 'view:names'"),
                     0);
    /* a resource that is not JSON the views can read (\u0000 in a string): stored, and an entry
     * for each view */
    const char *nul =
        "{\"resourceType\":\"Patient\",\"id\":\"z\",\"name\":[{\"family\":\"a\\u0000\"}]}";
    put(s, nul, FHIRSYNC_PUT_STORED);
    assert_int_equal(query_long(s, "SELECT count(*) FROM quarantine WHERE reason LIKE "
                                   "'%resource z: resource holds a string with %u0000'"),
                     2);
    assert_int_equal(query_long(s, "SELECT count(*) FROM names WHERE id = 'z'"), 0);
    assert_ok(fhirsync_store_delete(s, "Patient", "z", "2025-01-01T00:00:00Z", 0, NULL, &err));
    /* fixed on the server: the next version gets its rows */
    const char *fixed = "{\"resourceType\":\"Patient\",\"id\":\"t\",\"name\":[{\"family\":\"A\"}]}";
    put(s, fixed, FHIRSYNC_PUT_STORED);
    assert_int_equal(query_long(s, "SELECT count(*) FROM people"), 2);
    assert_int_equal(query_long(s, "SELECT count(*) FROM names WHERE id = 't'"), 1);
    /* the same failures on a rebuild */
    assert_ok(fhirsync_view_stats_init(&st, FHIRSYNC_VIEW_STATS_VERSION));
    assert_ok(fhirsync_store_view_refresh(s, "people", &st, &err));
    assert_int_equal(st.resources, 3);
    assert_int_equal(st.rows, 2);
    assert_int_equal(st.failed, 1);
    assert_table_equals_view(s, pat_view, "people", "Patient", 1);
    /* both views rebuilt: each resource evaluated by each */
    assert_ok(fhirsync_view_stats_init(&st, FHIRSYNC_VIEW_STATS_VERSION));
    assert_ok(fhirsync_store_view_refresh(s, NULL, &st, &err));
    assert_int_equal(st.views, 2);
    assert_int_equal(st.resources, 6);
    assert_int_equal(st.rows, 2 + 2); /* w has no name: no row in names */
    assert_int_equal(st.failed, 1);
    assert_table_equals_view(s, name_view, "names", "Patient", 0);
    fhirsync_store_close(s);
}

static void test_replace_remove_and_other_handles(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_store *other = open_store(f);
    fhirsync_error err = {0};
    char *a = obs("a", "1", "2024-01-01T00:00:00Z", "final", "1", true);
    put(s, a, FHIRSYNC_PUT_STORED);
    /* `s` has read the (empty) registry; `other` adds a view */
    fhirsync_view_stats st;
    add_view(other, obs_view, &st);
    assert_int_equal(st.rows, 2);
    /* s's next write sees it */
    char *b = obs("b", "1", "2024-01-01T00:00:00Z", "final", "2", false);
    put(s, b, FHIRSYNC_PUT_STORED);
    assert_int_equal(query_long(s, "SELECT count(*) FROM bp"), 3);
    /* a changed definition replaces the table: column status renamed stat_s */
    char *changed = strdup(obs_view);
    char *status = strstr(changed, "\"name\":\"status\"");
    assert_non_null(status);
    memcpy(status + 8, "stat_s", 6);
    add_view(other, changed, &st);
    assert_true(st.replaced);
    assert_int_equal(st.rows, 3);
    assert_int_equal(query_long(s, "SELECT count(*) FROM bp WHERE stat_s = 'final'"), 3);
    char *c = obs("c", "1", "2024-01-01T00:00:00Z", "final", "2", false);
    put(s, c, FHIRSYNC_PUT_STORED); /* through s's statements, prepared for the old table */
    assert_int_equal(query_long(s, "SELECT count(*) FROM bp WHERE stat_s = 'final'"), 4);
    /* removed: the table goes, and writes go on */
    assert_ok(fhirsync_store_view_remove(other, "bp", &err));
    assert_int_equal(fhirsync_store_view_remove(other, "bp", &err), FHIRSYNC_E_ARG);
    assert_contains(err.message, "no view named 'bp'");
    char *d = obs("d", "1", "2024-01-01T00:00:00Z", "final", "2", false);
    put(s, d, FHIRSYNC_PUT_STORED);
    assert_int_equal(query_long(s, "SELECT count(*) FROM view_definitions"), 0);
    assert_int_equal(fhirsync_store_view_refresh(s, "bp", NULL, &err), FHIRSYNC_E_ARG);
    free(a);
    free(b);
    free(c);
    free(d);
    free(changed);
    fhirsync_store_close(other);
    fhirsync_store_close(s);
}

static void test_names_refused(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    struct {
        const char *json, *message;
        fhirsync_code code;
    } cases[] = {
        {"{\"resource\":\"Patient\",\"select\":[{\"column\":[{\"name\":\"id\",\"path\":\"id\"}]}]}",
         "needs a name", FHIRSYNC_E_VIEW},
        {"{\"name\":\"quarantine\",\"resource\":\"Patient\",\"select\":[{\"column\":[{\"name\":"
         "\"id\",\"path\":\"id\"}]}]}",
         "internal table", FHIRSYNC_E_VIEW},
        {"{\"name\":\"patient\",\"resource\":\"Patient\",\"select\":[{\"column\":[{\"name\":"
         "\"id\",\"path\":\"id\"}]}]}",
         "already has a table named 'patient'", FHIRSYNC_E_VIEW},
        {"{\"name\":\"p\",\"resource\":\"Patient\",\"select\":[{\"column\":[{\"name\":\"id\","
         "\"path\":\"id\"},{\"name\":\"ID\",\"path\":\"id\"}]}]}",
         "ignoring case", FHIRSYNC_E_VIEW},
        {"{\"name\":\"a_name_that_is_longer_than_fifty_characters_in_all_x\",\"resource\":"
         "\"Patient\",\"select\":[{\"column\":[{\"name\":\"id\",\"path\":\"id\"}]}]}",
         "cannot name a table", FHIRSYNC_E_VIEW},
        {"{\"name\":\"p\",\"resource\":\"Patient\",\"select\":[{\"column\":[{\"name\":\"id\","
         "\"path\":\"id.nosuchfunction()\"}]}]}",
         "nosuchfunction", FHIRSYNC_E_VIEW},
        {"not json", "", FHIRSYNC_E_JSON},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fhirsync_code rc =
            fhirsync_store_view_add(s, cases[i].json, strlen(cases[i].json), NULL, &err);
        if (rc != cases[i].code)
            fail_msg("case %zu: %s (%s)", i, fhirsync_strerror(rc), err.message);
        assert_contains(err.message, cases[i].message);
    }
    assert_int_equal(query_long(s, "SELECT count(*) FROM view_definitions"), 0);
    /* a resource type may not take a view's name later */
    const char *v = "{\"name\":\"Thing\",\"resource\":\"Basic\",\"select\":[{\"column\":[{\"name\":"
                    "\"id\",\"path\":\"id\"}]}]}";
    assert_ok(fhirsync_store_view_add(s, v, strlen(v), NULL, &err));
    const char *thing = "{\"resourceType\":\"THING\",\"id\":\"1\"}";
    assert_int_equal(fhirsync_store_put(s, NULL, thing, strlen(thing), 0, NULL, &err),
                     FHIRSYNC_E_JSON);
    assert_contains(err.message, "the name of the store's view");
    /* inside a batch: refused */
    assert_ok(fhirsync_store_begin(s, 0, &err));
    assert_int_equal(fhirsync_store_view_add(s, obs_view, strlen(obs_view), NULL, &err),
                     FHIRSYNC_E_ARG);
    assert_ok(fhirsync_store_rollback(s, &err));
    /* an unversioned stats struct */
    fhirsync_view_stats raw = {0};
    assert_int_equal(fhirsync_store_view_add(s, obs_view, strlen(obs_view), &raw, &err),
                     FHIRSYNC_E_ARG);
    assert_contains(err.message, "fhirsync_view_stats_init");
    fhirsync_store_close(s);
}

/* The ids of a reconciliation's resources go from the views too. */
static void test_reconcile(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    fhirsync_view_stats st;
    add_view(s, obs_view, &st);
    assert_ok(fs_store_bind_endpoint(s, "ep", "http://127.0.0.1:1/fhir", false, &err));
    int64_t run1, run2;
    assert_ok(fs_store_run_begin(s, "ep", "bulk", NULL, &run1, &err));
    for (int i = 0; i < 4; i++) {
        char id[8];
        snprintf(id, sizeof id, "r%d", i);
        char *line = obs(id, "1", "2024-01-01T00:00:00Z", "final", "1", false);
        assert_ok(fhirsync_store_put(s, NULL, line, strlen(line), run1, NULL, &err));
        free(line);
    }
    fs_store_run_end end = {.status = FHIRSYNC_RUN_OK};
    assert_ok(fs_store_run_finish(s, run1, &end, &err));
    assert_ok(fs_store_run_begin(s, "ep", "bulk", NULL, &run2, &err));
    char *kept = obs("r0", "1", "2024-01-01T00:00:00Z", "final", "1", false);
    assert_ok(fhirsync_store_put(s, NULL, kept, strlen(kept), run2, NULL, &err));
    fs_store_reconcile r = {.endpoint = "ep",
                            .type = "Observation",
                            .first_run = run2,
                            .run_id = run2,
                            .deleted_at = "2025-01-01T00:00:00Z",
                            .reason = FS_STORE_DELETED_RECONCILED,
                            .max_share = 1,
                            .force = true};
    fs_store_reconcile_result res;
    assert_ok(fs_store_reconcile_type(s, &r, &res, &err));
    assert_int_equal(res.deleted, 3);
    assert_int_equal(query_long(s, "SELECT count(*) FROM bp"), 1);
    assert_string_equal(query1(s, "SELECT id FROM bp").text, "r0");
    assert_ok(fs_store_run_finish(s, run2, &end, &err));
    free(kept);
    fhirsync_store_close(s);
}

typedef struct seen {
    int n;
    char names[2][16];
    int64_t rows[2];
    bool definitions;
} seen;

static int list_cb(const fhirsync_store_view_info *info, void *userdata)
{
    seen *got = userdata;
    if (got->n < 2) {
        snprintf(got->names[got->n], sizeof got->names[0], "%s", info->name);
        got->rows[got->n] = info->rows;
        got->definitions = info->definition && strstr(info->definition, "ViewDefinition") &&
                           info->created_at && info->refreshed_at && *info->refreshed_at;
    }
    got->n++;
    return 0;
}

static void test_list(void **state)
{
    fixture *f = *state;
    fhirsync_store *s = open_store(f);
    fhirsync_error err = {0};
    fhirsync_view_stats st;
    add_view(s, pat_view, &st);
    add_view(s, obs_view, &st);
    char *a = obs("a", "1", "2024-01-01T00:00:00Z", "final", "1", true);
    put(s, a, FHIRSYNC_PUT_STORED);
    fhirsync_store_close(s);
    fhirsync_store *ro = NULL;
    assert_ok(fhirsync_store_open(f->location, FHIRSYNC_STORE_READONLY, &ro, &err));
    seen got = {0};
    assert_ok(fhirsync_store_views(ro, list_cb, &got, &err));
    assert_int_equal(got.n, 2);
    assert_string_equal(got.names[0], "bp");
    assert_int_equal(got.rows[0], 2);
    assert_string_equal(got.names[1], "people");
    assert_int_equal(got.rows[1], 0);
    assert_true(got.definitions);
    fhirsync_store_close(ro);
    free(a);
}

/* ---- --check: a store's views against their evaluation ----------------------------------------
 */

typedef enum check_class { C_ANY, C_TEXT, C_INTEGER, C_BOOLEAN, C_DECIMAL, C_JSON } check_class;

/* How the store keeps a column (docs/views.md, "Column types"), written again here on purpose. */
static check_class check_class_of(const fhirsync_view_column *c)
{
    if (c->collection)
        return C_JSON;
    if (!c->type)
        return C_ANY;
    if (!strcmp(c->type, "boolean"))
        return C_BOOLEAN;
    if (!strcmp(c->type, "integer") || !strcmp(c->type, "positiveInt") ||
        !strcmp(c->type, "unsignedInt") || !strcmp(c->type, "integer64"))
        return C_INTEGER;
    if (!strcmp(c->type, "decimal"))
        return C_DECIMAL;
    return c->type[0] >= 'A' && c->type[0] <= 'Z' ? C_JSON : C_TEXT;
}

typedef struct lines {
    char **v;
    size_t n, cap;
} lines;

static void lines_add(lines *l, char *line)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 1024;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        if (!l->v)
            abort();
    }
    l->v[l->n++] = line;
}

static int by_text(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One value in canonical form, appended to b (tab-separated). */
static void canon(fs_buf *b, check_class c, const char *text, size_t len, bool null)
{
    if (b->len)
        fs_buf_append(b, "\t", 1);
    if (null) {
        fs_buf_append_str(b, "\\N");
        return;
    }
    char *copy = strndup(text, len);
    if (c == C_DECIMAL || c == C_INTEGER) {
        fs_buf_printf(b, "%.15g", strtod(copy, NULL));
    } else if (c == C_BOOLEAN) {
        bool t = !strcmp(copy, "1") || !strcmp(copy, "t") || !strcmp(copy, "true");
        fs_buf_append_str(b, t ? "true" : "false");
    } else if (c == C_JSON) {
        json_t *j = json_loadb(copy, len, JSON_DECODE_ANY, NULL);
        char *d = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
        fs_buf_append_str(b, d ? d : copy);
        free(d);
        json_decref(j);
    } else {
        fs_buf_append(b, copy, len);
    }
    free(copy);
}

typedef struct check_ctx {
    fhirsync_view *view;
    check_class *cls;
    lines expected, actual;
    lines pending; /* the rows of the resource being evaluated */
    bool refused;  /* a value its column's type cannot take: the store keeps no rows */
} check_ctx;

static bool kind_fits(check_class c, fhirsync_view_kind k)
{
    switch (c) {
    case C_INTEGER: return k == FHIRSYNC_VIEW_INTEGER;
    case C_BOOLEAN: return k == FHIRSYNC_VIEW_BOOLEAN;
    case C_DECIMAL: return k == FHIRSYNC_VIEW_DECIMAL || k == FHIRSYNC_VIEW_INTEGER;
    default: return true;
    }
}

static fhirsync_code expected_row(void *userdata, const fhirsync_view_value *values, size_t count)
{
    check_ctx *c = userdata;
    fs_buf b;
    fs_buf_init(&b);
    for (size_t i = 0; i < count; i++) {
        const fhirsync_view_value *v = &values[i];
        if (v->kind != FHIRSYNC_VIEW_NULL && !kind_fits(c->cls[i], v->kind))
            c->refused = true;
        char num[32];
        const char *text = v->text;
        size_t len = v->len;
        if (v->kind == FHIRSYNC_VIEW_BOOLEAN) {
            text = v->boolean ? "true" : "false";
            len = strlen(text);
        } else if (v->kind == FHIRSYNC_VIEW_INTEGER) {
            len = (size_t)snprintf(num, sizeof num, "%lld", (long long)v->integer);
            text = num;
        } else if (v->kind == FHIRSYNC_VIEW_STRING && c->cls[i] == C_JSON) {
            json_t *j = json_stringn(v->text, v->len); /* the store keeps it as a JSON string */
            char *d = json_dumps(j, JSON_ENCODE_ANY);
            json_decref(j);
            canon(&b, C_JSON, d, strlen(d), false);
            free(d);
            continue;
        }
        canon(&b, c->cls[i], text ? text : "", len, v->kind == FHIRSYNC_VIEW_NULL);
    }
    char *line = fs_buf_steal(&b);
    lines_add(&c->pending, line ? line : strdup(""));
    return FHIRSYNC_OK;
}

static int expected_resource(size_t ncols, const char *const *names, const char *const *values,
                             const size_t *lengths, void *userdata)
{
    (void)names;
    check_ctx *c = userdata;
    if (!ncols || !values[0])
        return 0;
    c->pending.n = 0;
    c->refused = false;
    fhirsync_code rc = fhirsync_view_eval(c->view, values[0], lengths[0], expected_row, c, NULL);
    for (size_t i = 0; i < c->pending.n; i++) {
        if (rc == FHIRSYNC_OK && !c->refused)
            lines_add(&c->expected, c->pending.v[i]);
        else
            free(c->pending.v[i]);
    }
    c->pending.n = 0;
    return 0;
}

static int actual_row(size_t ncols, const char *const *names, const char *const *values,
                      const size_t *lengths, void *userdata)
{
    (void)names;
    check_ctx *c = userdata;
    fs_buf b;
    fs_buf_init(&b);
    for (size_t i = 0; i < ncols; i++)
        canon(&b, c->cls[i], values[i] ? values[i] : "", values[i] ? lengths[i] : 0, !values[i]);
    char *line = fs_buf_steal(&b);
    lines_add(&c->actual, line ? line : strdup(""));
    return 0;
}

typedef struct check_all {
    fhirsync_store *store;
    int views, failures;
    long rows;
} check_all;

static int check_one(const fhirsync_store_view_info *info, void *userdata)
{
    check_all *all = userdata;
    fhirsync_error err = {0};
    check_ctx c;
    memset(&c, 0, sizeof c);
    all->views++;
    if (fhirsync_view_parse(info->definition, strlen(info->definition), &c.view, &err) !=
        FHIRSYNC_OK) {
        fprintf(stderr, "view %s: %s\n", info->name, err.message);
        all->failures++;
        return 0;
    }
    size_t n = fhirsync_view_column_count(c.view);
    c.cls = calloc(n, sizeof *c.cls);
    fs_buf sql;
    fs_buf_init(&sql);
    fs_buf_printf(&sql, "SELECT ");
    for (size_t i = 0; i < n; i++) {
        const fhirsync_view_column *col = fhirsync_view_column_at(c.view, i);
        c.cls[i] = check_class_of(col);
        fs_buf_printf(&sql, "%s\"%s\"", i ? ", " : "", col->name);
    }
    fs_buf_printf(&sql, " FROM \"%s\"", info->name);
    bool ok = fhirsync_store_query(all->store, sql.data, actual_row, &c, &err) == FHIRSYNC_OK;
    char q[256];
    snprintf(q, sizeof q, "SELECT count(*) FROM resource_types WHERE type = '%s'", info->resource);
    scalar has = query1(all->store, q);
    snprintf(q, sizeof q, "SELECT raw FROM \"%s\"", info->resource);
    if (ok && strcmp(has.text, "0") != 0)
        ok = fhirsync_store_query(all->store, q, expected_resource, &c, &err) == FHIRSYNC_OK;
    if (!ok) {
        fprintf(stderr, "view %s: %s\n", info->name, err.message);
        all->failures++;
    }
    if (c.expected.n) /* qsort of NULL is undefined even for no element */
        qsort(c.expected.v, c.expected.n, sizeof *c.expected.v, by_text);
    if (c.actual.n)
        qsort(c.actual.v, c.actual.n, sizeof *c.actual.v, by_text);
    size_t i = 0, j = 0, shown = 0, diffs = 0;
    while (i < c.expected.n || j < c.actual.n) {
        int cmp = i == c.expected.n ? 1
                  : j == c.actual.n ? -1
                                    : strcmp(c.expected.v[i], c.actual.v[j]);
        if (cmp == 0) {
            i++;
            j++;
            continue;
        }
        diffs++;
        if (shown++ < 5)
            fprintf(stderr, "view %s: %s row %s\n", info->name, cmp < 0 ? "missing" : "extra",
                    cmp < 0 ? c.expected.v[i] : c.actual.v[j]);
        if (cmp < 0)
            i++;
        else
            j++;
    }
    if (ok && diffs) {
        fprintf(stderr, "view %s: %zu rows differ (%zu in the table, %zu from the resources)\n",
                info->name, diffs, c.actual.n, c.expected.n);
        all->failures++;
    }
    all->rows += (long)c.actual.n;
    for (size_t k = 0; k < c.expected.n; k++)
        free(c.expected.v[k]);
    for (size_t k = 0; k < c.actual.n; k++)
        free(c.actual.v[k]);
    free(c.expected.v);
    free(c.actual.v);
    free(c.pending.v);
    free(c.cls);
    fs_buf_free(&sql);
    fhirsync_view_free(c.view);
    return 0;
}

static int run_check(const char *location)
{
    fhirsync_store *store = NULL;
    fhirsync_error err = {0};
    if (fhirsync_store_open(location, FHIRSYNC_STORE_READONLY, &store, &err) != FHIRSYNC_OK) {
        fprintf(stderr, "test_store_views --check: %s\n", err.message);
        return 1;
    }
    check_all all = {store, 0, 0, 0};
    if (fhirsync_store_views(store, check_one, &all, &err) != FHIRSYNC_OK) {
        fprintf(stderr, "test_store_views --check: %s\n", err.message);
        all.failures++;
    }
    fhirsync_store_close(store);
    printf("%d view%s, %ld rows: %s\n", all.views, all.views == 1 ? "" : "s", all.rows,
           all.failures ? "DIFFERENT" : "each equals its evaluation over the stored resources");
    return all.failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "--check") == 0)
        return fhirsync_global_init() == FHIRSYNC_OK ? run_check(argv[2]) : 1;

    const struct CMUnitTest sqlite_tests[] = {
#define BOTH(fn) cmocka_unit_test_setup_teardown(fn, setup_sqlite, teardown)
        BOTH(test_add_builds_typed_table),
        BOTH(test_writes_keep_views_current),
        BOTH(test_bulk_batches),
        BOTH(test_resource_a_view_cannot_evaluate),
        BOTH(test_replace_remove_and_other_handles),
        BOTH(test_names_refused),
        BOTH(test_reconcile),
        BOTH(test_list),
    };
    const struct CMUnitTest pg_tests[] = {
#define PG(fn) cmocka_unit_test_setup_teardown(fn, setup_pg, teardown_pg)
        PG(test_add_builds_typed_table),
        PG(test_writes_keep_views_current),
        PG(test_bulk_batches),
        PG(test_resource_a_view_cannot_evaluate),
        PG(test_replace_remove_and_other_handles),
        PG(test_names_refused),
        PG(test_reconcile),
        PG(test_list),
    };
    pg_url = getenv("FHIRSYNC_TEST_PG");
    if (pg_url && *pg_url)
        return cmocka_run_group_tests_name("views in the store on PostgreSQL", pg_tests,
                                           group_setup, group_teardown);
    return cmocka_run_group_tests_name("views in the store on SQLite", sqlite_tests, group_setup,
                                       group_teardown);
}
