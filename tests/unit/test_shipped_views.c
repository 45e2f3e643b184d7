/* tests/unit/test_shipped_views.c: the ViewDefinitions shipped in views/: every file parses with
 * fhirsync_view_parse, is named after its file and types every column, and evaluated over a
 * realistic sample (tests/data/synthea-1-patient.ndjson: one Synthea patient and that patient's
 * allergies, conditions, encounters, immunizations, medication requests and observations) gives
 * the row counts the sample implies and a few exact values (the patient's birth date and MRN, a
 * blood pressure's systolic and diastolic rows, a laboratory decimal as written). A hand-written
 * Patient checks the US Core race and ethnicity columns, and hand-written Procedures the
 * procedures view, which the sample lacks. The source tree comes from
 * FHIRSYNC_SOURCE_DIR (set by ctest). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fhirsync/common.h"
#include "fhirsync/view.h"

/* The shipped views, in file-name order. */
static const char *const shipped[] = {"active_medications",   "allergies",     "conditions",
                                      "encounters",           "immunizations", "laboratory_results",
                                      "patient_demographics", "procedures",    "vital_signs"};
#define SHIPPED_COUNT (sizeof shipped / sizeof shipped[0])

/* The rows one view produced: each a column_count array of strings ("NULL" for no value). */
typedef struct rows {
    size_t ncols;
    size_t count, cap;
    char ***cells;
} rows;

static char *path_of(const char *rel)
{
    const char *src = getenv("FHIRSYNC_SOURCE_DIR");
    assert_non_null(src); /* ctest sets it */
    size_t n = strlen(src) + strlen(rel) + 2;
    char *p = malloc(n);
    assert_non_null(p);
    snprintf(p, n, "%s/%s", src, rel);
    return p;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static fhirsync_view *load_view(const char *name)
{
    char rel[128];
    snprintf(rel, sizeof rel, "views/%s.json", name);
    char *path = path_of(rel);
    size_t len;
    char *json = slurp(path, &len);
    fhirsync_view *view = NULL;
    fhirsync_error err;
    fhirsync_code rc = fhirsync_view_parse(json, len, &view, &err);
    if (rc != FHIRSYNC_OK)
        fail_msg("%s: %s", path, err.message);
    free(json);
    free(path);
    return view;
}

static fhirsync_code collect(void *userdata, const fhirsync_view_value *values, size_t count)
{
    rows *r = userdata;
    assert_int_equal(count, r->ncols);
    if (r->count == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 64;
        r->cells = realloc(r->cells, r->cap * sizeof *r->cells);
        assert_non_null(r->cells);
    }
    char **row = calloc(count, sizeof *row);
    assert_non_null(row);
    for (size_t i = 0; i < count; i++) {
        switch (values[i].kind) {
        case FHIRSYNC_VIEW_NULL: row[i] = strdup("NULL"); break;
        case FHIRSYNC_VIEW_BOOLEAN: row[i] = strdup(values[i].boolean ? "true" : "false"); break;
        case FHIRSYNC_VIEW_INTEGER: {
            char num[32];
            snprintf(num, sizeof num, "%lld", (long long)values[i].integer);
            row[i] = strdup(num);
            break;
        }
        default: row[i] = strndup(values[i].text, values[i].len); break;
        }
        assert_non_null(row[i]);
    }
    r->cells[r->count++] = row;
    return FHIRSYNC_OK;
}

/* Evaluate `view` over every line of `ndjson` (NUL-terminated), collecting the rows. */
static void eval_lines(fhirsync_view *view, const char *ndjson, rows *r)
{
    r->ncols = fhirsync_view_column_count(view);
    const char *p = ndjson;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len) {
            fhirsync_error err;
            fhirsync_code rc = fhirsync_view_eval(view, p, len, collect, r, &err);
            if (rc != FHIRSYNC_OK)
                fail_msg("%s: %s", fhirsync_view_name(view), err.message);
        }
        p += len + (nl ? 1 : 0);
    }
}

static void rows_free(rows *r)
{
    for (size_t i = 0; i < r->count; i++) {
        for (size_t j = 0; j < r->ncols; j++)
            free(r->cells[i][j]);
        free(r->cells[i]);
    }
    free(r->cells);
}

/* Load view `name` and evaluate it over `ndjson` into *r; `done` frees both. */
static fhirsync_view *run_view(const char *name, const char *ndjson, rows *r)
{
    fhirsync_view *view = load_view(name);
    *r = (rows){0};
    eval_lines(view, ndjson, r);
    return view;
}

static void done(fhirsync_view *view, rows *r)
{
    rows_free(r);
    fhirsync_view_free(view);
}

static size_t col_index(fhirsync_view *view, const char *name)
{
    for (size_t i = 0; i < fhirsync_view_column_count(view); i++)
        if (!strcmp(fhirsync_view_column_at(view, i)->name, name))
            return i;
    fail_msg("%s has no column %s", fhirsync_view_name(view), name);
    return 0;
}

/* The value of column `col` in the row where column `key` is `value` and, when `key2` is not
 * NULL, column `key2` is `value2`; fails when no row matches. */
static const char *cell(fhirsync_view *view, const rows *r, const char *key, const char *value,
                        const char *key2, const char *value2, const char *col)
{
    size_t k = col_index(view, key), c = col_index(view, col);
    size_t k2 = key2 ? col_index(view, key2) : 0;
    for (size_t i = 0; i < r->count; i++)
        if (!strcmp(r->cells[i][k], value) && (!key2 || !strcmp(r->cells[i][k2], value2)))
            return r->cells[i][c];
    fail_msg("%s: no row with %s = %s", fhirsync_view_name(view), key, value);
    return NULL;
}

static size_t count_where(fhirsync_view *view, const rows *r, const char *key, const char *value)
{
    size_t k = col_index(view, key), n = 0;
    for (size_t i = 0; i < r->count; i++)
        n += !strcmp(r->cells[i][k], value);
    return n;
}

/* views/ holds exactly the shipped views; each parses, carries its file's name, and types every
 * column (so the store can give its table column types). */
static void test_every_file_parses(void **state)
{
    (void)state;
    char *dir = path_of("views");
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t json_files = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n > 5 && !strcmp(e->d_name + n - 5, ".json")) {
            json_files++;
            bool known = false;
            for (size_t i = 0; i < SHIPPED_COUNT; i++)
                known |= strlen(shipped[i]) == n - 5 && !strncmp(shipped[i], e->d_name, n - 5);
            if (!known)
                fail_msg("views/%s is not in this test's list", e->d_name);
        }
    }
    closedir(d);
    free(dir);
    assert_int_equal(json_files, SHIPPED_COUNT);
    for (size_t i = 0; i < SHIPPED_COUNT; i++) {
        fhirsync_view *view = load_view(shipped[i]);
        assert_string_equal(fhirsync_view_name(view), shipped[i]);
        assert_string_equal(fhirsync_view_column_at(view, 0)->name, "id");
        for (size_t c = 0; c < fhirsync_view_column_count(view); c++)
            if (!fhirsync_view_column_at(view, c)->type)
                fail_msg("%s: column %s has no type", shipped[i],
                         fhirsync_view_column_at(view, c)->name);
        fhirsync_view_free(view);
    }
}

static const char *const patient_id = "8d3e1155-278a-4824-a7e0-fddb24c7c179";

/* Row counts over the sample, as its resources imply (jq over the file). */
static void test_row_counts(void **state)
{
    (void)state;
    static const struct {
        const char *view;
        size_t rows;
    } expect[] = {
        {"patient_demographics", 1},
        {"vital_signs", 99}, /* 87 vital signs: 75 without component, 12 with two */
        {"laboratory_results", 107},
        {"conditions", 9},
        {"active_medications", 4}, /* of 80 requests */
        {"allergies", 2},
        {"immunizations", 15},
        {"encounters", 47},
        {"procedures", 0}, /* the sample has none: test_procedures */
    };
    char *path = path_of("tests/data/synthea-1-patient.ndjson");
    size_t len;
    char *ndjson = slurp(path, &len);
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++) {
        rows r;
        fhirsync_view *view = run_view(expect[i].view, ndjson, &r);
        if (r.count != expect[i].rows)
            fail_msg("%s: %zu rows, expected %zu", expect[i].view, r.count, expect[i].rows);
        if (strcmp(expect[i].view, "patient_demographics"))
            assert_int_equal(count_where(view, &r, "patient_id", patient_id), r.count);
        done(view, &r);
    }
    free(ndjson);
    free(path);
}

/* Exact values: the patient, a blood pressure's two rows, a lab decimal, an active medication. */
static void test_values(void **state)
{
    (void)state;
    char *path = path_of("tests/data/synthea-1-patient.ndjson");
    size_t len;
    char *ndjson = slurp(path, &len);

    rows r;
    fhirsync_view *v = run_view("patient_demographics", ndjson, &r);
    assert_string_equal(cell(v, &r, "id", patient_id, NULL, NULL, "birth_date"), "1991-10-27");
    assert_string_equal(cell(v, &r, "id", patient_id, NULL, NULL, "mrn"), patient_id);
    assert_string_equal(cell(v, &r, "id", patient_id, NULL, NULL, "family"), "Gibson");
    assert_string_equal(cell(v, &r, "id", patient_id, NULL, NULL, "given"), "Trey");
    assert_string_equal(cell(v, &r, "id", patient_id, NULL, NULL, "gender"), "male");
    assert_string_equal(cell(v, &r, "id", patient_id, NULL, NULL, "address_line"),
                        "199 Carter Passage Suite 24");
    assert_string_equal(cell(v, &r, "id", patient_id, NULL, NULL, "city"), "Pittsfield");
    assert_string_equal(cell(v, &r, "id", patient_id, NULL, NULL, "postal_code"), "NULL");
    assert_string_equal(cell(v, &r, "id", patient_id, NULL, NULL, "phone"), "555-256-3149");
    /* join() over no value is the empty string, not NULL (the engine's reading of FHIRPath) */
    assert_string_equal(cell(v, &r, "id", patient_id, NULL, NULL, "race"), "");
    assert_string_equal(cell(v, &r, "id", patient_id, NULL, NULL, "ethnicity"), "NULL");
    done(v, &r);

    /* Blood pressure 6415f105: no value of its own, one row per component. */
    const char *bp = "6415f105-54a4-434b-9978-315d8bd96ce4";
    v = run_view("vital_signs", ndjson, &r);
    assert_int_equal(count_where(v, &r, "id", bp), 2);
    assert_int_equal(count_where(v, &r, "code", "85354-9"), 12 * 2);
    assert_string_equal(cell(v, &r, "id", bp, NULL, NULL, "code"), "85354-9");
    assert_string_equal(cell(v, &r, "id", bp, NULL, NULL, "value"), "NULL");
    assert_string_equal(cell(v, &r, "id", bp, NULL, NULL, "effective"),
                        "2010-12-26T06:56:41-05:00");
    assert_string_equal(cell(v, &r, "id", bp, "component_code", "8480-6", "component_value"),
                        "128");
    assert_string_equal(cell(v, &r, "id", bp, "component_code", "8462-4", "component_value"), "86");
    assert_string_equal(cell(v, &r, "id", bp, "component_code", "8462-4", "component_unit"),
                        "mm[Hg]");
    assert_string_equal(cell(v, &r, "id", bp, "component_code", "8480-6", "patient_id"),
                        patient_id);
    /* An observation without component keeps its row, component columns NULL. */
    assert_int_equal(count_where(v, &r, "component_code", "NULL"), 75);
    done(v, &r);

    v = run_view("laboratory_results", ndjson, &r);
    const char *lab = "66fba369-583e-4243-bd77-bb1b67117244";
    assert_string_equal(cell(v, &r, "id", lab, NULL, NULL, "code"), "6690-2");
    assert_string_equal(cell(v, &r, "id", lab, NULL, NULL, "value"), "4.1692");
    assert_string_equal(cell(v, &r, "id", lab, NULL, NULL, "unit"), "10*3/uL");
    done(v, &r);

    v = run_view("active_medications", ndjson, &r);
    const char *med = "7c9f3533-1adc-48c2-baf2-38e41cc7e4d5";
    assert_string_equal(cell(v, &r, "id", med, NULL, NULL, "code"), "1870230");
    assert_string_equal(cell(v, &r, "id", med, NULL, NULL, "authored_on"),
                        "1992-12-05T06:56:41-05:00");
    assert_string_equal(cell(v, &r, "id", med, NULL, NULL, "status"), "active");
    done(v, &r);
    free(ndjson);
    free(path);
}

/* US Core race (several OMB categories) and ethnicity, absent from the Synthea sample. */
static void test_race_ethnicity(void **state)
{
    (void)state;
    static const char patient[] =
        "{\"resourceType\":\"Patient\",\"id\":\"us1\",\"extension\":["
        "{\"url\":\"http://hl7.org/fhir/us/core/StructureDefinition/us-core-race\",\"extension\":["
        "{\"url\":\"ombCategory\",\"valueCoding\":{\"system\":\"urn:oid:2.16.840.1.113883.6.238\","
        "\"code\":\"2106-3\",\"display\":\"White\"}},"
        "{\"url\":\"ombCategory\",\"valueCoding\":{\"system\":\"urn:oid:2.16.840.1.113883.6.238\","
        "\"code\":\"2028-9\",\"display\":\"Asian\"}},"
        "{\"url\":\"text\",\"valueString\":\"White, Asian\"}]},"
        "{\"url\":\"http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity\","
        "\"extension\":[{\"url\":\"ombCategory\",\"valueCoding\":{\"system\":"
        "\"urn:oid:2.16.840.1.113883.6.238\",\"code\":\"2186-5\"}},"
        "{\"url\":\"text\",\"valueString\":\"Not Hispanic or Latino\"}]}],"
        "\"identifier\":[{\"type\":{\"coding\":[{\"system\":"
        "\"http://terminology.hl7.org/CodeSystem/v2-0203\",\"code\":\"SS\"}]},\"value\":\"1\"},"
        "{\"type\":{\"coding\":[{\"system\":\"http://other\",\"code\":\"X\"},{\"system\":"
        "\"http://terminology.hl7.org/CodeSystem/v2-0203\",\"code\":\"MR\"}]},\"value\":\"M42\"}],"
        "\"name\":[{\"use\":\"usual\",\"family\":\"Nick\"},{\"use\":\"official\",\"family\":"
        "\"Doe\",\"given\":[\"Jane\",\"Q\"]}],\"deceasedDateTime\":\"2020-01-02\"}\n";
    rows r;
    fhirsync_view *v = run_view("patient_demographics", patient, &r);
    assert_int_equal(r.count, 1);
    assert_string_equal(cell(v, &r, "id", "us1", NULL, NULL, "race"), "2106-3,2028-9");
    assert_string_equal(cell(v, &r, "id", "us1", NULL, NULL, "ethnicity"), "2186-5");
    assert_string_equal(cell(v, &r, "id", "us1", NULL, NULL, "mrn"), "M42");
    assert_string_equal(cell(v, &r, "id", "us1", NULL, NULL, "family"), "Doe");
    assert_string_equal(cell(v, &r, "id", "us1", NULL, NULL, "given"), "Jane Q");
    assert_string_equal(cell(v, &r, "id", "us1", NULL, NULL, "deceased_date_time"), "2020-01-02");
    assert_string_equal(cell(v, &r, "id", "us1", NULL, NULL, "deceased"), "NULL");
    done(v, &r);
}

/* Procedures: performed as a dateTime or as a Period (each in its own columns, since shareable
 * FHIRPath has no way to take one or the other), the first coding's display rather than
 * code.text, a subject that is not a Patient; other resource types give no row. */
static void test_procedures(void **state)
{
    (void)state;
    static const char ndjson[] =
        "{\"resourceType\":\"Procedure\",\"id\":\"pr1\",\"status\":\"completed\","
        "\"code\":{\"coding\":[{\"system\":\"http://snomed.info/sct\",\"code\":\"73761001\","
        "\"display\":\"Colonoscopy\"}],\"text\":\"Colonoscopy (procedure)\"},"
        "\"subject\":{\"reference\":\"Patient/p1\"},\"performedPeriod\":{"
        "\"start\":\"2019-03-04T10:00:00-05:00\",\"end\":\"2019-03-04T10:45:00-05:00\"}}\n"
        "{\"resourceType\":\"Procedure\",\"id\":\"pr2\",\"status\":\"in-progress\","
        "\"code\":{\"coding\":[{\"system\":\"http://www.ama-assn.org/go/cpt\",\"code\":\"45378\"},"
        "{\"system\":\"http://snomed.info/sct\",\"code\":\"73761001\",\"display\":"
        "\"Colonoscopy\"}]},\"subject\":{\"reference\":"
        "\"https://ehr.example/fhir/Patient/p2/_history/3\"},"
        "\"performedDateTime\":\"2021-07-08\"}\n"
        "{\"resourceType\":\"Procedure\",\"id\":\"pr3\",\"status\":\"completed\","
        "\"code\":{\"text\":\"Tonsillectomy\"},\"subject\":{\"reference\":\"Group/g1\"},"
        "\"performedString\":\"in childhood\"}\n"
        "{\"resourceType\":\"Observation\",\"id\":\"o1\",\"status\":\"final\","
        "\"code\":{\"text\":\"x\"},\"subject\":{\"reference\":\"Patient/p1\"}}\n";
    rows r;
    fhirsync_view *v = run_view("procedures", ndjson, &r);
    assert_int_equal(r.count, 3);

    assert_string_equal(cell(v, &r, "id", "pr1", NULL, NULL, "patient_id"), "p1");
    assert_string_equal(cell(v, &r, "id", "pr1", NULL, NULL, "status"), "completed");
    assert_string_equal(cell(v, &r, "id", "pr1", NULL, NULL, "code"), "73761001");
    assert_string_equal(cell(v, &r, "id", "pr1", NULL, NULL, "display"), "Colonoscopy");
    assert_string_equal(cell(v, &r, "id", "pr1", NULL, NULL, "performed"), "NULL");
    assert_string_equal(cell(v, &r, "id", "pr1", NULL, NULL, "performed_start"),
                        "2019-03-04T10:00:00-05:00");
    assert_string_equal(cell(v, &r, "id", "pr1", NULL, NULL, "performed_end"),
                        "2019-03-04T10:45:00-05:00");

    /* first coding's code; its display is the first display among the codings */
    assert_string_equal(cell(v, &r, "id", "pr2", NULL, NULL, "patient_id"), "p2");
    assert_string_equal(cell(v, &r, "id", "pr2", NULL, NULL, "code"), "45378");
    assert_string_equal(cell(v, &r, "id", "pr2", NULL, NULL, "display"), "Colonoscopy");
    assert_string_equal(cell(v, &r, "id", "pr2", NULL, NULL, "performed"), "2021-07-08");
    assert_string_equal(cell(v, &r, "id", "pr2", NULL, NULL, "performed_start"), "NULL");
    assert_string_equal(cell(v, &r, "id", "pr2", NULL, NULL, "performed_end"), "NULL");

    assert_string_equal(cell(v, &r, "id", "pr3", NULL, NULL, "patient_id"), "NULL");
    assert_string_equal(cell(v, &r, "id", "pr3", NULL, NULL, "code"), "NULL");
    assert_string_equal(cell(v, &r, "id", "pr3", NULL, NULL, "display"), "NULL");
    assert_string_equal(cell(v, &r, "id", "pr3", NULL, NULL, "performed"), "NULL");
    assert_string_equal(cell(v, &r, "id", "pr3", NULL, NULL, "performed_start"), "NULL");
    done(v, &r);
}

int main(void)
{
    fhirsync_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_file_parses),
        cmocka_unit_test(test_row_counts),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_race_ethnicity),
        cmocka_unit_test(test_procedures),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    fhirsync_global_cleanup();
    return rc;
}
