/* tests/unit/test_view.c: the view module: the FHIRPath parser's errors (position, token, unknown
 * functions and variables, bounds), the evaluator's edge cases (decimal text and precision,
 * three-valued logic, choice types, primitive extensions, reference keys, boundaries, $this,
 * $index, %rowIndex), and the ViewDefinition API (validation messages naming the element, the
 * column list, rows through the callback, per-resource errors, repeat, the callback's stop). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fhirsync/view.h"
#include "json/json.h"
#include "view/fhirpath.h"

static const char *const patient =
    "{\"resourceType\":\"Patient\",\"id\":\"p1\",\"active\":true,"
    "\"birthDate\":\"1970-06\",\"_birthDate\":{\"extension\":[{\"url\":\"http://x/ext\","
    "\"valueString\":\"estimated\"}]},"
    "\"name\":[{\"use\":\"official\",\"family\":\"Smith\",\"given\":[\"Ann\",null,\"Bo\"],"
    "\"_given\":[null,{\"id\":\"g2\"},null]},{\"use\":\"usual\",\"given\":[\"Annie\"]}],"
    "\"multipleBirthInteger\":2,"
    "\"link\":[{\"other\":{\"reference\":\"https://h/fhir/Patient/p9/_history/3\"}}],"
    "\"extension\":[{\"url\":\"http://x/weight\",\"valueQuantity\":{\"value\":1.50,"
    "\"unit\":\"kg\"}}]}";

/* ---- FHIRPath helpers ------------------------------------------------------------------------ */

/* The result of `expr` over the patient, written as "1.50, 'x', true" (empty: ""); or "error:
 * MESSAGE" when parsing or evaluating fails. */
static char *eval_text(const char *expr)
{
    static char out[2048];
    fhirsync_error err;
    out[0] = '\0';
    const char *vars[] = {"two", "name_use"};
    fs_fp_expr *e = fs_fp_parse(expr, vars, 2, &err);
    if (!e) {
        snprintf(out, sizeof out, "error: %s", err.message);
        return out;
    }
    fs_json_dom doc_dom, consts_dom;
    fs_json_dom_init(&doc_dom);
    fs_json_dom_init(&consts_dom);
    const fs_json_node *doc, *consts;
    assert_int_equal(fs_json_dom_parse(&doc_dom, patient, strlen(patient), "patient", &doc, &err),
                     FHIRSYNC_OK);
    const char *const_text = "{\"a\":2,\"b\":\"official\"}";
    assert_int_equal(
        fs_json_dom_parse(&consts_dom, const_text, strlen(const_text), "c", &consts, &err),
        FHIRSYNC_OK);
    fs_fp_arena arena = {0};
    fs_fp_item res, two, use;
    fs_fp_item_of_node(doc, NULL, &res);
    fs_fp_item_of_node(fs_json_member(consts, "a", 1), "integer", &two);
    fs_fp_item_of_node(fs_json_member(consts, "b", 1), "string", &use);
    fs_fp_coll values[2] = {{&two, 1, 1}, {&use, 1, 1}};
    fs_fp_env env = {.arena = &arena, .resource = &res, .vars = values, .row_index = 7};
    fs_fp_coll in = {&res, 1, 1}, result = {0};
    if (fs_fp_eval(e, &env, &in, &result, &err) != FHIRSYNC_OK) {
        snprintf(out, sizeof out, "error: %s", err.message);
    } else {
        size_t at = 0;
        for (size_t i = 0; i < result.count && at < sizeof out - 64; i++) {
            const fs_fp_item *it = &result.items[i];
            const char *sep = i ? ", " : "";
            switch (it->kind) {
            case FS_FP_BOOLEAN:
                at += (size_t)snprintf(out + at, sizeof out - at, "%s%s", sep,
                                       it->b ? "true" : "false");
                break;
            case FS_FP_INTEGER:
                at += (size_t)snprintf(out + at, sizeof out - at, "%s%lld", sep, (long long)it->i);
                break;
            case FS_FP_DECIMAL:
                at +=
                    (size_t)snprintf(out + at, sizeof out - at, "%s%.*s", sep, (int)it->len, it->s);
                break;
            case FS_FP_STRING:
                at += (size_t)snprintf(out + at, sizeof out - at, "%s'%.*s'", sep, (int)it->len,
                                       it->s);
                break;
            case FS_FP_NULL:
                at += (size_t)snprintf(out + at, sizeof out - at, "%snull", sep);
                break;
            case FS_FP_NODE:
                at += (size_t)snprintf(out + at, sizeof out - at, "%s{%s}", sep,
                                       fs_fp_item_type(it) ? fs_fp_item_type(it) : "");
                break;
            }
        }
    }
    fs_fp_arena_free(&arena);
    fs_json_dom_free(&doc_dom);
    fs_json_dom_free(&consts_dom);
    fs_fp_free(e);
    return out;
}

#define EXPECT(expr, want)                                                                         \
    do {                                                                                           \
        const char *got_ = eval_text(expr);                                                        \
        if (strcmp(got_, want) != 0)                                                               \
            fail_msg("%s: got <%s>, want <%s>", expr, got_, want);                                 \
    } while (0)

#define EXPECT_ERROR(expr, part)                                                                   \
    do {                                                                                           \
        const char *got_ = eval_text(expr);                                                        \
        if (strncmp(got_, "error: ", 7) != 0 || !strstr(got_, part))                               \
            fail_msg("%s: got <%s>, want an error with <%s>", expr, got_, part);                   \
    } while (0)

/* ---- the parser ------------------------------------------------------------------------------ */

static void test_parse_errors(void **state)
{
    (void)state;
    EXPECT_ERROR("name.foo()", "unknown or unsupported function 'foo' at 5");
    EXPECT_ERROR("name.where()", "where() takes 1 to 1 arguments, not 0");
    EXPECT_ERROR("name.first(1)", "first() takes 0 to 0 arguments");
    EXPECT_ERROR("%nope", "unknown variable '%nope' at 0");
    EXPECT_ERROR("'abc", "unterminated string at 0");
    EXPECT_ERROR("name.", "a name expected at 5 (end of expression)");
    EXPECT_ERROR("name family", "unexpected token after the expression at 5 ('family')");
    EXPECT_ERROR("(name", "')' expected at 5");
    EXPECT_ERROR("name[0", "']' expected");
    EXPECT_ERROR("@@", "after '@' at 0");
    EXPECT_ERROR("name # 1", "unexpected character at 5 ('#')");
    EXPECT_ERROR("", "an expression expected at 0");
    EXPECT_ERROR("{1}", "'}' expected");
    EXPECT_ERROR("'a\\qb'", "bad escape");
    EXPECT_ERROR("value.ofType(1)", "a type name expected");
    EXPECT_ERROR("1 + ", "an expression expected at 4");
    EXPECT_ERROR("99999999999999999999", "integer literal out of range");
    /* bounds: nesting and length */
    char deep[512];
    memset(deep, '(', 300);
    strcpy(deep + 300, "1");
    EXPECT_ERROR(deep, "nested too deeply");
    memset(deep, '-', 300);
    strcpy(deep + 300, "1");
    EXPECT_ERROR(deep, "nested too deeply");
    char *longer = malloc(6 * 2000 + 8);
    strcpy(longer, "id");
    for (int i = 0; i < 2000; i++)
        strcat(longer, ".id");
    EXPECT_ERROR(longer, "expression too long");
    free(longer);
    /* comments, backticks and keywords as member names */
    EXPECT("name.`family` // comment", "'Smith'");
    EXPECT("/* c */ id", "'p1'");
}

/* ---- evaluation ------------------------------------------------------------------------------ */

static void test_paths(void **state)
{
    (void)state;
    EXPECT("id", "'p1'");
    EXPECT("Patient.id", "'p1'");
    EXPECT("name.given", "'Ann', null, 'Bo', 'Annie'");
    EXPECT("name[0].given[2]", "'Bo'");
    EXPECT("name[5].given", "");
    EXPECT("name[%two - 1].use", "'usual'");
    EXPECT("name.given[1].id", "'g2'");
    EXPECT("name.where(use = %name_use).family", "'Smith'");
    EXPECT("name.where($this.use = 'usual').given", "'Annie'");
    EXPECT("name.select(given.first())", "'Ann', 'Annie'");
    EXPECT("name.where($index = 1).use", "'usual'");
    EXPECT("%rowIndex", "7");
    EXPECT("%resource.id", "'p1'");
    EXPECT("multipleBirth", "2");
    EXPECT("multiple", ""); /* multipleBirthInteger is no choice of `multiple` */
    EXPECT("multipleBirth.ofType(integer)", "2");
    EXPECT("multipleBirth.ofType(boolean)", "");
    EXPECT("multipleBirthInteger is integer", "true");
    EXPECT("extension('http://x/weight').value.ofType(Quantity).value", "1.50");
    EXPECT("extension('http://x/weight').valueQuantity.unit", "'kg'");
    EXPECT("extension.value.ofType(Quantity)", "{Quantity}");
    EXPECT("birthDate.extension('http://x/ext').value", "'estimated'");
    EXPECT("name.family.exists() and name.given.count() = 4", "true");
    EXPECT("name.exists(use = 'temp')", "false");
    EXPECT("name.all(given.exists())", "true");
    EXPECT("name.empty()", "false");
    EXPECT("name.given.first() | name.given.last()", "'Ann', 'Annie'");
    EXPECT("name.given.where($this.hasValue()).distinct().count()", "3");
    EXPECT("name.given.tail().count()", "3");
    EXPECT("getResourceKey()", "'p1'");
    EXPECT("link.other.getReferenceKey()", "'p9'");
    EXPECT("link.other.getReferenceKey(Patient)", "'p9'");
    EXPECT("link.other.getReferenceKey(Observation)", "");
    EXPECT("iif(active, 'yes', 'no')", "'yes'");
}

static void test_operators(void **state)
{
    (void)state;
    /* decimals keep their text and FHIRPath's scale */
    EXPECT("1.10 + 2.0", "3.10");
    EXPECT("1.5 * 2.25", "3.375");
    EXPECT("3 / 2", "1.5");
    EXPECT("10 / 4.0", "2.5");
    EXPECT("1 / 3", "0.33333333");
    EXPECT("1 / 0", "");
    EXPECT("7 div 2", "3");
    EXPECT("7 mod 3", "1");
    EXPECT("2 - 5", "-3");
    EXPECT("-1.50", "-1.50");
    EXPECT("1.0 = 1", "true");
    EXPECT("1.50 ~ 1.5", "true");
    EXPECT_ERROR("9223372036854775807 + 1", "integer overflow");
    EXPECT("2 > 1.5 and 'b' >= 'a' and 1 < 2 and 2 <= 2", "true");
    EXPECT_ERROR("1 < 'a'", "cannot be compared");
    EXPECT_ERROR("'a' - 1", "not numbers");
    /* three-valued logic */
    EXPECT("{} and false", "false");
    EXPECT("{} and true", "");
    EXPECT("{} or true", "true");
    EXPECT("{} or false", "");
    EXPECT("true xor true", "false");
    EXPECT("false implies {}", "true");
    EXPECT("{} implies true", "true");
    EXPECT("(1 = 2).not()", "true");
    EXPECT("{}.not()", "");
    /* equality of collections and empties */
    EXPECT("name.given = name.given", "true");
    EXPECT("{} = 1", "");
    EXPECT("'Abc  d' ~ 'abc d'", "true");
    EXPECT("'a' != 'b'", "true");
    EXPECT("'a' !~ 'A'", "false");
    EXPECT("'a' in ('b' | 'a')", "true");
    EXPECT("('b' | 'a') contains 'c'", "false");
    EXPECT_ERROR("name.given + 1", "a single item expected");
    /* strings */
    EXPECT("'ab' & {} & 'c'", "'abc'");
    EXPECT("'ab' + 'c'", "'abc'");
    EXPECT("name.given.join(', ')", "'Ann, Bo, Annie'");
    EXPECT("name.given.join()", "'AnnBoAnnie'");
    EXPECT("'hello'.substring(1, 3) & 'hello'.substring(3) & 'hello'.substring(9)", "'elllo'");
    EXPECT("'Hello'.upper() & 'Hello'.lower()", "'HELLOhello'");
    EXPECT("'a.b.c'.replace('.', '-')", "'a-b-c'");
    EXPECT("'abc'.replace('', '-')", "'-a-b-c-'");
    EXPECT("'hello'.startsWith('he') and 'hello'.endsWith('lo') and 'hello'.contains('ll')",
           "true");
    EXPECT("'hello'.length()", "5");
    EXPECT("'42'.toInteger() + 1", "43");
    EXPECT("'4x'.toInteger()", "");
    EXPECT("12.toString() & true.toString()", "'12true'");
    EXPECT("'1.25'.toDecimal()", "1.25");
    EXPECT_ERROR("1.startsWith('1')", "not a string");
}

static void test_boundaries(void **state)
{
    (void)state;
    EXPECT("1.0.lowBoundary() | 1.0.highBoundary()", "0.95, 1.05");
    EXPECT("2.lowBoundary()", "1.5");
    EXPECT("birthDate.lowBoundary() | birthDate.highBoundary()", "'1970-06-01', '1970-06-30'");
    EXPECT("'2024'.highBoundary()", "'2024-12-31'");
    EXPECT("'2024-02'.highBoundary()", "'2024-02-29'");
    EXPECT("@2010-10-10T10:30.lowBoundary()", "'2010-10-10T10:30:00.000+14:00'");
    EXPECT("@2010-10-10T10:30:05Z.highBoundary()", "'2010-10-10T10:30:05.999Z'");
    EXPECT("'12:34'.highBoundary()", "'12:34:59.999'");
    EXPECT("'2024-13'.lowBoundary()", "");
}

/* ---- the view API ---------------------------------------------------------------------------- */

static fhirsync_code parse_view(const char *json, fhirsync_view **view, fhirsync_error *err)
{
    return fhirsync_view_parse(json, strlen(json), view, err);
}

static void expect_invalid(const char *json, const char *part)
{
    fhirsync_view *view = (fhirsync_view *)1;
    fhirsync_error err;
    fhirsync_code rc = parse_view(json, &view, &err);
    assert_null(view);
    if (rc != FHIRSYNC_E_VIEW || !strstr(err.message, part))
        fail_msg("view %s: code %d <%s>, want <%s>", json, rc, rc ? err.message : "", part);
}

#define VIEW(select) "{\"resource\":\"Patient\",\"select\":[" select "]}"

static void test_view_validation(void **state)
{
    (void)state;
    expect_invalid("{}", "'resource' (a FHIR resource type) is required");
    expect_invalid("{\"resource\":\"Patient\"}", "'select' is required");
    expect_invalid("{\"resource\":\"Patient\",\"selct\":[]}", "unknown element 'selct'");
    expect_invalid(VIEW("{\"column\":[{\"name\":\"a b\",\"path\":\"id\"}]}"),
                   "select[0].column[0]: 'a b' is not a valid column name");
    expect_invalid(VIEW("{\"column\":[{\"name\":\"_a\",\"path\":\"id\"}]}"),
                   "not a valid column name");
    expect_invalid(VIEW("{\"column\":[{\"name\":\"a\",\"path\":\"id\"}]},"
                        "{\"column\":[{\"name\":\"a\",\"path\":\"id\"}]}"),
                   "select[1].column[0]: duplicate column name 'a'");
    expect_invalid(VIEW("{\"forEach\":\"name\",\"forEachOrNull\":\"name\","
                        "\"column\":[{\"name\":\"a\",\"path\":\"id\"}]}"),
                   "select[0]: only one of forEach, forEachOrNull and repeat");
    expect_invalid(VIEW("{\"column\":[{\"name\":\"a\",\"path\":\"name.bogus()\"}]}"),
                   "select[0].column[0].path: unknown or unsupported function 'bogus' at 5");
    expect_invalid(VIEW("{\"column\":[{\"name\":\"a\",\"path\":\"id\",\"colour\":1}]}"),
                   "select[0].column[0]: unknown element 'colour'");
    expect_invalid(VIEW("{\"column\":[{\"name\":\"a\"}]}"), "'path' is required");
    expect_invalid(VIEW("{\"column\":[{\"name\":\"a\",\"path\":\"id\",\"collection\":1}]}"),
                   "'collection' must be true or false");
    expect_invalid(VIEW("{\"forEach\":\"name\"}"), "a select needs column, select or unionAll");
    expect_invalid(VIEW("{\"unionAll\":[{\"column\":[{\"name\":\"a\",\"path\":\"id\"}]},"
                        "{\"column\":[{\"name\":\"a\",\"path\":\"id\"},"
                        "{\"name\":\"b\",\"path\":\"id\"}]}]}"),
                   "unionAll branches must have the same columns");
    expect_invalid(
        "{\"resource\":\"Patient\",\"constant\":[{\"name\":\"c\",\"valueString\":\"x\","
        "\"valueInteger\":1}],\"select\":[{\"column\":[{\"name\":\"a\",\"path\":\"id\"}]}]}",
        "constant[0]: constant 'c' has more than one value[x]");
    expect_invalid("{\"resource\":\"Patient\",\"where\":[{\"path\":\"(\"}],"
                   "\"select\":[{\"column\":[{\"name\":\"a\",\"path\":\"id\"}]}]}",
                   "where[0].path: an expression expected at 1");
    fhirsync_view *view = NULL;
    fhirsync_error err;
    assert_int_equal(fhirsync_view_parse("{", 1, &view, &err), FHIRSYNC_E_JSON);
    assert_int_equal(fhirsync_view_parse(NULL, 0, &view, &err), FHIRSYNC_E_ARG);
    fhirsync_view_free(NULL);
}

typedef struct collected {
    char text[4096];
    size_t rows;
    size_t stop_after;
} collected;

static fhirsync_code collect(void *userdata, const fhirsync_view_value *values, size_t count)
{
    collected *c = userdata;
    size_t at = strlen(c->text);
    at += (size_t)snprintf(c->text + at, sizeof c->text - at, "%s", c->rows ? "|" : "");
    for (size_t i = 0; i < count; i++) {
        const fhirsync_view_value *v = &values[i];
        const char *sep = i ? "," : "";
        switch (v->kind) {
        case FHIRSYNC_VIEW_NULL:
            at += (size_t)snprintf(c->text + at, sizeof c->text - at, "%s-", sep);
            break;
        case FHIRSYNC_VIEW_BOOLEAN:
            at += (size_t)snprintf(c->text + at, sizeof c->text - at, "%s%s", sep,
                                   v->boolean ? "T" : "F");
            break;
        case FHIRSYNC_VIEW_INTEGER:
            at += (size_t)snprintf(c->text + at, sizeof c->text - at, "%si%lld", sep,
                                   (long long)v->integer);
            break;
        case FHIRSYNC_VIEW_DECIMAL:
            at += (size_t)snprintf(c->text + at, sizeof c->text - at, "%sd%s", sep, v->text);
            break;
        case FHIRSYNC_VIEW_STRING:
        case FHIRSYNC_VIEW_JSON:
            assert_int_equal(strlen(v->text), v->len);
            at += (size_t)snprintf(c->text + at, sizeof c->text - at, "%s%s", sep, v->text);
            break;
        }
    }
    c->rows++;
    return c->stop_after && c->rows == c->stop_after ? FHIRSYNC_E_CANCELLED : FHIRSYNC_OK;
}

static void expect_rows(const char *view_json, const char *resource, const char *want)
{
    fhirsync_view *view = NULL;
    fhirsync_error err;
    if (parse_view(view_json, &view, &err) != FHIRSYNC_OK)
        fail_msg("view refused: %s", err.message);
    collected c = {0};
    fhirsync_code rc = fhirsync_view_eval(view, resource, strlen(resource), collect, &c, &err);
    if (rc != FHIRSYNC_OK)
        fail_msg("eval: %s", err.message);
    if (strcmp(c.text, want) != 0)
        fail_msg("rows <%s>, want <%s>", c.text, want);
    fhirsync_view_free(view);
}

static void test_view_rows(void **state)
{
    (void)state;
    /* columns: names, types, collection */
    const char *json = "{\"resourceType\":\"ViewDefinition\",\"name\":\"pt\",\"resource\":"
                       "\"Patient\",\"select\":[{\"column\":[{\"name\":\"id\",\"path\":\"id\","
                       "\"type\":\"id\"},{\"name\":\"given\",\"path\":\"name.given\","
                       "\"collection\":true}]}]}";
    fhirsync_view *view = NULL;
    fhirsync_error err;
    assert_int_equal(parse_view(json, &view, &err), FHIRSYNC_OK);
    assert_string_equal(fhirsync_view_resource(view), "Patient");
    assert_string_equal(fhirsync_view_name(view), "pt");
    assert_int_equal(fhirsync_view_column_count(view), 2);
    assert_string_equal(fhirsync_view_column_at(view, 0)->type, "id");
    assert_null(fhirsync_view_column_at(view, 1)->type);
    assert_true(fhirsync_view_column_at(view, 1)->collection);
    assert_null(fhirsync_view_column_at(view, 2));
    collected c = {0};
    assert_int_equal(fhirsync_view_eval(view, patient, strlen(patient), collect, &c, &err),
                     FHIRSYNC_OK);
    assert_string_equal(c.text, "p1,[\"Ann\",null,\"Bo\",\"Annie\"]");
    /* another resource type: no rows, no error; bad JSON: an error, the view still works */
    memset(&c, 0, sizeof c);
    const char *obs = "{\"resourceType\":\"Observation\",\"id\":\"o\"}";
    assert_int_equal(fhirsync_view_eval(view, obs, strlen(obs), collect, &c, &err), FHIRSYNC_OK);
    assert_int_equal(c.rows, 0);
    assert_int_equal(fhirsync_view_eval(view, "[1]", 3, collect, &c, &err), FHIRSYNC_E_JSON);
    assert_int_equal(fhirsync_view_eval(view, patient, strlen(patient), collect, &c, &err),
                     FHIRSYNC_OK);
    assert_int_equal(c.rows, 1);
    fhirsync_view_free(view);

    /* forEach with %rowIndex, a decimal column, a complex value as JSON */
    expect_rows(VIEW("{\"column\":[{\"name\":\"id\",\"path\":\"id\"}]},"
                     "{\"forEach\":\"name\",\"column\":[{\"name\":\"i\",\"path\":\"%rowIndex\"},"
                     "{\"name\":\"use\",\"path\":\"use\"}]},"
                     "{\"column\":[{\"name\":\"w\",\"path\":\"extension.value.ofType(Quantity)."
                     "value\",\"type\":\"decimal\"},{\"name\":\"m\",\"path\":\"multipleBirth\","
                     "\"type\":\"decimal\"},{\"name\":\"q\",\"path\":\"extension.value\"}]}"),
                patient,
                "p1,i0,official,d1.50,d2,{\"value\":1.50,\"unit\":\"kg\"}|"
                "p1,i1,usual,d1.50,d2,{\"value\":1.50,\"unit\":\"kg\"}");
    /* forEachOrNull with nothing: one row of nulls; forEach with nothing: no row */
    expect_rows(
        VIEW("{\"column\":[{\"name\":\"id\",\"path\":\"id\"}]},"
             "{\"forEachOrNull\":\"contact\",\"column\":[{\"name\":\"c\",\"path\":\"id\"}]}"),
        patient, "p1,-");
    expect_rows(VIEW("{\"column\":[{\"name\":\"id\",\"path\":\"id\"}]},"
                     "{\"forEach\":\"contact\",\"column\":[{\"name\":\"c\",\"path\":\"id\"}]}"),
                patient, "");
    /* repeat: every level of nested items, depth first */
    const char *qr = "{\"resourceType\":\"QuestionnaireResponse\",\"item\":[{\"linkId\":\"1\","
                     "\"item\":[{\"linkId\":\"1.1\"},{\"linkId\":\"1.2\",\"item\":[{\"linkId\":"
                     "\"1.2.1\"}]}]},{\"linkId\":\"2\"}]}";
    expect_rows("{\"resource\":\"QuestionnaireResponse\",\"select\":[{\"repeat\":[\"item\"],"
                "\"column\":[{\"name\":\"link\",\"path\":\"linkId\"},{\"name\":\"i\","
                "\"path\":\"%rowIndex\"}]}]}",
                qr, "1,i0|1.1,i1|1.2,i2|1.2.1,i3|2,i4");
    /* constants of several types */
    expect_rows("{\"resource\":\"Patient\",\"constant\":[{\"name\":\"d\",\"valueDecimal\":2.50},"
                "{\"name\":\"day\",\"valueDate\":\"1970-06\"}],\"select\":[{\"column\":["
                "{\"name\":\"x\",\"path\":\"%d * 2\"},{\"name\":\"y\",\"path\":\"birthDate = "
                "%day\"}]}]}",
                patient, "d5.00,T");
    /* where: false, empty, true */
    expect_rows(
        "{\"resource\":\"Patient\",\"where\":[{\"path\":\"active\"},{\"path\":"
        "\"name.exists()\"}],\"select\":[{\"column\":[{\"name\":\"id\",\"path\":\"id\"}]}]}",
        patient, "p1");
    expect_rows("{\"resource\":\"Patient\",\"where\":[{\"path\":\"deceased\"}],"
                "\"select\":[{\"column\":[{\"name\":\"id\",\"path\":\"id\"}]}]}",
                patient, "");
}

static void test_view_errors(void **state)
{
    (void)state;
    fhirsync_view *view = NULL;
    fhirsync_error err;
    /* collection false with several values: an error naming the column */
    assert_int_equal(
        parse_view(VIEW("{\"column\":[{\"name\":\"g\",\"path\":\"name.given\"}]}"), &view, &err),
        FHIRSYNC_OK);
    collected c = {0};
    assert_int_equal(fhirsync_view_eval(view, patient, strlen(patient), collect, &c, &err),
                     FHIRSYNC_E_VIEW);
    assert_non_null(strstr(err.message, "select[0].column[0]: 4 values where collection is false"));
    fhirsync_view_free(view);
    /* a where that is not boolean */
    assert_int_equal(parse_view("{\"resource\":\"Patient\",\"where\":[{\"path\":\"id\"}],"
                                "\"select\":[{\"column\":[{\"name\":\"id\",\"path\":\"id\"}]}]}",
                                &view, &err),
                     FHIRSYNC_OK);
    assert_int_equal(fhirsync_view_eval(view, patient, strlen(patient), collect, &c, &err),
                     FHIRSYNC_E_VIEW);
    assert_non_null(strstr(err.message, "where[0].path gives a value of another type"));
    fhirsync_view_free(view);
    /* the callback stops the evaluation with its code */
    assert_int_equal(parse_view(VIEW("{\"forEach\":\"name.given\",\"column\":[{\"name\":\"g\","
                                     "\"path\":\"$this\"}]}"),
                                &view, &err),
                     FHIRSYNC_OK);
    memset(&c, 0, sizeof c);
    c.stop_after = 2;
    assert_int_equal(fhirsync_view_eval(view, patient, strlen(patient), collect, &c, &err),
                     FHIRSYNC_E_CANCELLED);
    assert_int_equal(c.rows, 2);
    fhirsync_view_free(view);
}

/* fhirsync_view_eval_many: one read, per-view rows and outcomes. */
typedef struct many {
    collected per_view[4];
    char ends[256];            /* "index:code;" for each end */
    fhirsync_code stop_at_end; /* returned by on_end for a failed view (OK: go on) */
} many;

static fhirsync_code many_row(void *userdata, size_t index, const fhirsync_view_value *values,
                              size_t count)
{
    many *m = userdata;
    assert_true(index < 4);
    return collect(&m->per_view[index], values, count);
}

static fhirsync_code many_end(void *userdata, size_t index, fhirsync_code code,
                              const fhirsync_error *error)
{
    many *m = userdata;
    size_t at = strlen(m->ends);
    snprintf(m->ends + at, sizeof m->ends - at, "%zu:%d;", index, (int)code);
    if (code == FHIRSYNC_E_VIEW)
        assert_non_null(strstr(error->message, "collection is false"));
    return code == FHIRSYNC_OK ? FHIRSYNC_OK : m->stop_at_end;
}

static void test_eval_many(void **state)
{
    (void)state;
    fhirsync_view *views[4] = {NULL};
    fhirsync_error err;
    const char *defs[4] = {
        VIEW("{\"column\":[{\"name\":\"id\",\"path\":\"id\"}]},"
             "{\"forEach\":\"name\",\"column\":[{\"name\":\"use\",\"path\":\"use\"}]}"),
        /* fails on the patient: several given names where collection is false */
        VIEW("{\"column\":[{\"name\":\"g\",\"path\":\"name.given\"}]}"),
        "{\"resource\":\"Observation\",\"select\":[{\"column\":[{\"name\":\"id\",\"path\":"
        "\"id\"}]}]}",
        VIEW("{\"column\":[{\"name\":\"given\",\"path\":\"name.given\",\"collection\":true},"
             "{\"name\":\"w\",\"path\":\"extension.value.ofType(Quantity).value\",\"type\":"
             "\"decimal\"}]}"),
    };
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(parse_view(defs[i], &views[i], &err), FHIRSYNC_OK);
    /* the same rows as fhirsync_view_eval on each view; the failed view does not stop the rest */
    many m = {0};
    assert_int_equal(
        fhirsync_view_eval_many(views, 4, patient, strlen(patient), many_row, many_end, &m, &err),
        FHIRSYNC_OK);
    assert_string_equal(m.ends, "0:0;1:33;2:0;3:0;");
    for (size_t i = 0; i < 4; i++) {
        collected one = {0};
        fhirsync_code rc =
            fhirsync_view_eval(views[i], patient, strlen(patient), collect, &one, &err);
        assert_int_equal(rc, i == 1 ? FHIRSYNC_E_VIEW : FHIRSYNC_OK);
        assert_string_equal(m.per_view[i].text, one.text);
        assert_int_equal(m.per_view[i].rows, one.rows);
    }
    assert_string_equal(m.per_view[0].text, "p1,official|p1,usual");
    assert_int_equal(m.per_view[2].rows, 0); /* another resource type */
    assert_string_equal(m.per_view[3].text, "[\"Ann\",null,\"Bo\",\"Annie\"],d1.50");
    /* the end callback stops with its code */
    memset(&m, 0, sizeof m);
    m.stop_at_end = FHIRSYNC_E_CANCELLED;
    assert_int_equal(
        fhirsync_view_eval_many(views, 4, patient, strlen(patient), many_row, many_end, &m, &err),
        FHIRSYNC_E_CANCELLED);
    assert_string_equal(m.ends, "0:0;1:33;");
    /* without an end callback, the first failed view stops with its error */
    memset(&m, 0, sizeof m);
    assert_int_equal(
        fhirsync_view_eval_many(views, 4, patient, strlen(patient), many_row, NULL, &m, &err),
        FHIRSYNC_E_VIEW);
    assert_non_null(strstr(err.message, "select[0].column[0]: 4 values where collection is false"));
    assert_int_equal(m.per_view[0].rows, 2);
    assert_int_equal(m.per_view[3].rows, 0);
    /* a row callback's code ends that view only, through the end callback */
    memset(&m, 0, sizeof m);
    m.per_view[0].stop_after = 1;
    assert_int_equal(
        fhirsync_view_eval_many(views, 4, patient, strlen(patient), many_row, many_end, &m, &err),
        FHIRSYNC_OK);
    assert_string_equal(m.ends, "0:28;1:33;2:0;3:0;");
    assert_int_equal(m.per_view[3].rows, 1);
    /* not JSON: no view evaluated, no end; the views still work; a view twice; no views */
    memset(&m, 0, sizeof m);
    assert_int_equal(fhirsync_view_eval_many(views, 4, "{\"a\":", 5, many_row, many_end, &m, &err),
                     FHIRSYNC_E_JSON);
    assert_string_equal(m.ends, "");
    fhirsync_view *twice[2] = {views[3], views[3]};
    assert_int_equal(
        fhirsync_view_eval_many(twice, 2, patient, strlen(patient), many_row, many_end, &m, &err),
        FHIRSYNC_OK);
    assert_string_equal(m.per_view[0].text, m.per_view[1].text);
    assert_string_equal(m.per_view[0].text, "[\"Ann\",null,\"Bo\",\"Annie\"],d1.50");
    assert_int_equal(fhirsync_view_eval_many(NULL, 0, patient, 3, many_row, NULL, &m, &err),
                     FHIRSYNC_OK);
    assert_int_equal(fhirsync_view_eval_many(NULL, 2, patient, 3, many_row, NULL, &m, &err),
                     FHIRSYNC_E_ARG);
    fhirsync_view *with_null[2] = {views[0], NULL};
    assert_int_equal(fhirsync_view_eval_many(with_null, 2, patient, 3, many_row, NULL, &m, &err),
                     FHIRSYNC_E_ARG);
    assert_int_equal(fhirsync_view_eval_many(views, 1, patient, 3, NULL, NULL, &m, &err),
                     FHIRSYNC_E_ARG);
    for (size_t i = 0; i < 4; i++)
        fhirsync_view_free(views[i]);
}

static void test_exact_numbers(void **state)
{
    (void)state;
    fhirsync_error err;
    const char *text = "{\"a\":1.50,\"b\":-2e3,\"c\":\"x\",\"d\":[0.0]}";
    json_t *doc = fs_json_parse_exact(text, strlen(text), "doc", &err);
    assert_non_null(doc);
    size_t len;
    const char *n = fs_json_number_text(json_object_get(doc, "a"), &len);
    assert_non_null(n);
    assert_int_equal(len, 4);
    assert_memory_equal(n, "1.50", 4);
    n = fs_json_number_text(json_object_get(doc, "b"), &len);
    assert_memory_equal(n, "-2e3", 4);
    assert_null(fs_json_number_text(json_object_get(doc, "c"), &len));
    n = fs_json_number_text(json_array_get(json_object_get(doc, "d"), 0), &len);
    assert_memory_equal(n, "0.0", 3);
    json_decref(doc);
    assert_null(fs_json_parse_exact("{\"a\":\"\\u0000\"}", 13, "doc", &err));
    assert_int_equal(err.code, FHIRSYNC_E_JSON);
    assert_null(fs_json_parse_exact("[1]", 3, "doc", &err));
    assert_null(fs_json_parse_exact("{\"a\":01}", 8, "doc", &err));
    assert_null(fs_json_parse_exact("", 0, "doc", &err));
}

int main(void)
{
    fhirsync_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_errors),    cmocka_unit_test(test_paths),
        cmocka_unit_test(test_operators),       cmocka_unit_test(test_boundaries),
        cmocka_unit_test(test_view_validation), cmocka_unit_test(test_view_rows),
        cmocka_unit_test(test_view_errors),     cmocka_unit_test(test_exact_numbers),
        cmocka_unit_test(test_eval_many),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    fhirsync_global_cleanup();
    return rc;
}
