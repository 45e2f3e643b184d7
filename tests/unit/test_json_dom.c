/* unit/test_json_dom.c: the compact read-only JSON document (json/dom.h) the views read resources
 * with: the tape's layout (spans, counts, member lookup), strings decoded in place (escapes,
 * surrogate pairs, raw UTF-8), numbers kept as their text, what it refuses and how it says so
 * (invalid JSON and UTF-8, lone surrogates, \u0000, duplicate names, nesting past jansson's limit,
 * a top level that is no object), equality and compact writing as jansson's, large documents and
 * the reuse of one document, acceptance equal to fs_json_parse_exact's (the jansson reading it
 * replaced), and clean failures when allocations fail. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "json/dom.h"
#include "json/json.h"

static const fs_json_node *parse_ok(fs_json_dom *dom, const char *text)
{
    const fs_json_node *root = NULL;
    fhirsync_error err = {0};
    fhirsync_code rc = fs_json_dom_parse(dom, text, strlen(text), "doc", &root, &err);
    if (rc != FHIRSYNC_OK)
        fail_msg("refused <%.80s>: %s", text, err.message);
    assert_non_null(root);
    return root;
}

/* Refused with FHIRSYNC_E_JSON and a message holding `want`; len SIZE_MAX: strlen. */
static void refused(const char *text, size_t len, const char *want)
{
    fs_json_dom dom;
    fs_json_dom_init(&dom);
    const fs_json_node *root = (const fs_json_node *)&dom;
    fhirsync_error err = {0};
    if (len == SIZE_MAX)
        len = strlen(text);
    fhirsync_code rc = fs_json_dom_parse(&dom, text, len, "doc", &root, &err);
    if (rc != FHIRSYNC_E_JSON)
        fail_msg("<%.80s>: %s, want a refusal", text, fhirsync_strerror(rc));
    assert_null(root);
    if (!strstr(err.message, want))
        fail_msg("<%.80s>: '%s' does not say '%s'", text, err.message, want);
    /* jansson (as the engine read resources before) refuses it too */
    json_t *j = fs_json_parse_exact(text, len, "doc", &err);
    if (j)
        fail_msg("<%.80s>: fs_json_parse_exact accepts it", text);
    fs_json_dom_free(&dom);
}

static const fs_json_node *member(const fs_json_node *obj, const char *name)
{
    return fs_json_member(obj, name, strlen(name));
}

static void assert_text(const fs_json_node *n, fs_json_kind kind, const char *want)
{
    assert_non_null(n);
    assert_int_equal(n->kind, kind);
    assert_int_equal(n->len, strlen(want));
    assert_memory_equal(n->text, want, n->len);
    assert_int_equal(n->text[n->len], '\0');
}

static void test_layout(void **state)
{
    (void)state;
    fs_json_dom dom;
    fs_json_dom_init(&dom);
    const fs_json_node *root =
        parse_ok(&dom, "{\"a\":[1,{\"b\":true},[]],\"c\":{},\"d\":null,\"e\":\"x\"}");
    assert_int_equal(root->kind, FS_JSON_OBJECT);
    assert_int_equal(root->len, 4);
    /* object, a, [, 1, {, b, true, [], c, {}, d, null, e, "x" */
    assert_int_equal(root->span, 14);
    assert_int_equal(dom.count, 14);
    const fs_json_node *a = member(root, "a");
    assert_int_equal(a->kind, FS_JSON_ARRAY);
    assert_int_equal(a->len, 3);
    assert_int_equal(a->span, 6);
    assert_ptr_equal(a, root + 2);
    assert_text(a + 1, FS_JSON_NUMBER, "1");
    const fs_json_node *inner = fs_json_next(a + 1);
    assert_int_equal(inner->kind, FS_JSON_OBJECT);
    assert_int_equal(inner->len, 1);
    assert_int_equal(member(inner, "b")->kind, FS_JSON_TRUE);
    const fs_json_node *empty = fs_json_next(inner);
    assert_int_equal(empty->kind, FS_JSON_ARRAY);
    assert_int_equal(empty->len, 0);
    assert_int_equal(empty->span, 1);
    assert_ptr_equal(fs_json_next(a), root + 8); /* the name "c" */
    assert_text(root + 8, FS_JSON_STRING, "c");
    assert_int_equal(member(root, "c")->kind, FS_JSON_OBJECT);
    assert_int_equal(member(root, "c")->len, 0);
    assert_int_equal(member(root, "d")->kind, FS_JSON_NULL);
    assert_null(member(root, "d")->text);
    assert_text(member(root, "e"), FS_JSON_STRING, "x");
    assert_string_equal(fs_json_member_str(root, "e", 1), "x");
    assert_null(fs_json_member_str(root, "d", 1));
    assert_null(member(root, "f"));
    assert_null(member(root, "ee"));
    assert_null(fs_json_member(NULL, "a", 1));
    assert_null(fs_json_member(a, "a", 1)); /* not an object */
    fs_json_dom_free(&dom);
    fs_json_dom_free(&dom); /* twice: a no-op */
    fs_json_dom_free(NULL);
}

static void test_numbers(void **state)
{
    (void)state;
    fs_json_dom dom;
    fs_json_dom_init(&dom);
    /* the byte after a number becomes its NUL: whitespace, ',', ']', '}' and the end */
    const fs_json_node *root =
        parse_ok(&dom, "{\"a\":1.50,\"b\":-0 ,\"c\":1e400,\"d\":[-2.5E+3,0.0\n,7],\"e\":"
                       "123456789012345678901234567890\t,\"f\":{\"g\":10}}");
    assert_text(member(root, "a"), FS_JSON_NUMBER, "1.50");
    assert_text(member(root, "b"), FS_JSON_NUMBER, "-0");
    assert_text(member(root, "c"), FS_JSON_NUMBER, "1e400");
    const fs_json_node *d = member(root, "d");
    assert_int_equal(d->len, 3);
    assert_text(d + 1, FS_JSON_NUMBER, "-2.5E+3");
    assert_text(d + 2, FS_JSON_NUMBER, "0.0");
    assert_text(d + 3, FS_JSON_NUMBER, "7");
    assert_text(member(root, "e"), FS_JSON_NUMBER, "123456789012345678901234567890");
    assert_text(member(member(root, "f"), "g"), FS_JSON_NUMBER, "10");
    /* the caller's text is not touched */
    const char text[] = "{\"n\":12}";
    char copy[sizeof text];
    memcpy(copy, text, sizeof text);
    const fs_json_node *n;
    fhirsync_error err;
    assert_int_equal(fs_json_dom_parse(&dom, copy, sizeof text - 1, "doc", &n, &err), FHIRSYNC_OK);
    assert_memory_equal(copy, text, sizeof text);
    refused("{\"a\":01}", SIZE_MAX, "not valid JSON");
    refused("{\"a\":1.}", SIZE_MAX, "decimal point");
    refused("{\"a\":1e}", SIZE_MAX, "exponent");
    refused("{\"a\":-}", SIZE_MAX, "not valid JSON");
    refused("{\"a\":+1}", SIZE_MAX, "not valid JSON");
    refused("{\"a\":.5}", SIZE_MAX, "not valid JSON");
    refused("{\"a\":1x}", SIZE_MAX, "not valid JSON");
    fs_json_dom_free(&dom);
}

static void test_strings(void **state)
{
    (void)state;
    fs_json_dom dom;
    fs_json_dom_init(&dom);
    const fs_json_node *root = parse_ok(
        &dom, "{\"s\":\"q\\\" b\\\\ s\\/ \\b\\f\\n\\r\\t|\\u00e9\\u20AC|\\ud83d\\ude00|\\u001f\","
              "\"k\\u0065y\":\"\\u0041\",\"raw\":\"\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\","
              "\"\xc3\xbc\":\"\",\"del\":\"\x7f\"}");
    assert_text(member(root, "s"), FS_JSON_STRING,
                "q\" b\\ s/ \b\f\n\r\t|\xc3\xa9\xe2\x82\xac|\xf0\x9f\x98\x80|\x1f");
    assert_text(member(root, "key"), FS_JSON_STRING, "A"); /* a name decoded too */
    assert_text(member(root, "raw"), FS_JSON_STRING, "\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    assert_text(member(root, "\xc3\xbc"), FS_JSON_STRING, "");
    assert_text(member(root, "del"), FS_JSON_STRING, "\x7f");
    /* what a string may not hold */
    refused("{\"s\":\"a\\u0000\"}", SIZE_MAX, "holds a string with \\u0000");
    refused("{\"\\u0000\":1}", SIZE_MAX, "holds a string with \\u0000");
    refused("{\"s\":\"\\ud800\"}", SIZE_MAX, "high surrogate");
    refused("{\"s\":\"\\ud800\\u0041\"}", SIZE_MAX, "high surrogate");
    refused("{\"s\":\"\\udc00\"}", SIZE_MAX, "lone low surrogate");
    refused("{\"s\":\"\\x\"}", SIZE_MAX, "invalid escape");
    refused("{\"s\":\"\\u12G4\"}", SIZE_MAX, "\\u escape");
    refused("{\"s\":\"a\x01\"}", SIZE_MAX, "control character");
    refused("{\"s\":\"a\tb\"}", SIZE_MAX, "control character");
    refused("{\"s\":\"\xc0\x80\"}", SIZE_MAX, "UTF-8");         /* overlong */
    refused("{\"s\":\"\xed\xa0\x80\"}", SIZE_MAX, "UTF-8");     /* an encoded surrogate */
    refused("{\"s\":\"\xf4\x90\x80\x80\"}", SIZE_MAX, "UTF-8"); /* past U+10FFFF */
    refused("{\"s\":\"\xe2\x82\"}", SIZE_MAX, "UTF-8");         /* cut short */
    refused("{\"s\":\"\x80\"}", SIZE_MAX, "UTF-8");             /* a lone continuation */
    refused("{\"\xff\":1}", SIZE_MAX, "UTF-8");
    refused("{\"s\":\"abc", SIZE_MAX, "unterminated");
    refused("{\"s\":\"a\\u0000\"}", 10, "\\u escape"); /* cut inside the escape */
    fs_json_dom_free(&dom);
}

static void test_refused(void **state)
{
    (void)state;
    refused("", 0, "is empty");
    refused(NULL, 0, "is empty");
    refused("[1]", SIZE_MAX, "JSON but not an object");
    refused("\"a\"", SIZE_MAX, "JSON but not an object");
    refused("1", SIZE_MAX, "JSON but not an object");
    refused("{", SIZE_MAX, "not valid JSON (line 1: ");
    refused("  ", SIZE_MAX, "the end of the text");
    refused("{\"a\"}", SIZE_MAX, "':'");
    refused("{\"a\":}", SIZE_MAX, "unexpected character");
    refused("{\"a\":1,}", SIZE_MAX, "member name");
    refused("{\"a\":1 \"b\":2}", SIZE_MAX, "',' or '}'");
    refused("{\"a\":[1 2]}", SIZE_MAX, "',' or ']'");
    refused("{\"a\":[1}", SIZE_MAX, "',' or ']'");
    refused("{a:1}", SIZE_MAX, "member name");
    refused("{\"t\":tru}", SIZE_MAX, "unexpected character");
    refused("{\"t\":nul}", SIZE_MAX, "unexpected character");
    refused("{} x", SIZE_MAX, "end of file expected");
    refused("{}{}", SIZE_MAX, "end of file expected");
    refused("{\"a\":1}\x00", 8, "end of file expected");
    refused("\xef\xbb\xbf{}", SIZE_MAX, "not valid JSON");
    /* the line of the fault, counted in the caller's text */
    refused("{\n  \"a\": 1,\n  \"b\": [1,\n  2 3]\n}", SIZE_MAX, "(line 4: a missing ',' or ']'");
    refused("{\"a\":1,\n\"b\":2\n\n,\"a\":3}", SIZE_MAX, "(line 4: duplicate object key)");
    /* duplicate names, as jansson with JSON_REJECT_DUPLICATES: after decoding, at any level */
    refused("{\"a\":1,\"b\":2,\"a\":3}", SIZE_MAX, "duplicate object key");
    refused("{\"a\":1,\"\\u0061\":2}", SIZE_MAX, "duplicate object key");
    refused("{\"x\":[{\"a\":1},{\"a\":1,\"b\":{\"c\":1,\"c\":2}}]}", SIZE_MAX,
            "duplicate object key");
    /* whitespace is JSON's four only */
    refused("{\"a\":\v1}", SIZE_MAX, "not valid JSON");
    fs_json_dom dom;
    fs_json_dom_init(&dom);
    const fs_json_node *root =
        parse_ok(&dom, " \t\r\n{ \"a\" : [ 1 , { } , [ ] ] , \"b\":{\"a\":{\"a\":1}}} \n");
    assert_int_equal(member(root, "a")->len, 3);
    fs_json_dom_free(&dom);
}

/* {"a": + k '[' + inner + k ']' + } */
static char *nested(size_t k, const char *inner)
{
    size_t n = strlen(inner);
    char *s = malloc(k * 2 + n + 8);
    assert_non_null(s);
    memcpy(s, "{\"a\":", 5);
    memset(s + 5, '[', k);
    memcpy(s + 5 + k, inner, n);
    memset(s + 5 + k + n, ']', k);
    memcpy(s + 5 + 2 * k + n, "}", 2);
    return s;
}

static void test_depth(void **state)
{
    (void)state;
    fs_json_dom dom;
    fs_json_dom_init(&dom);
    /* jansson's limit: a value (scalars count) at most 2048 deep, the top-level object at 1 */
    char *s = nested(2047, "");
    const fs_json_node *root = parse_ok(&dom, s);
    assert_int_equal(root->span, 2 + 2047);
    free(s);
    s = nested(2048, "");
    refused(s, SIZE_MAX, "nesting deeper than the limit");
    free(s);
    s = nested(2046, "1");
    root = parse_ok(&dom, s);
    const fs_json_node *deepest = root + 1 + 2046 + 1;
    assert_text(deepest, FS_JSON_NUMBER, "1");
    free(s);
    s = nested(2047, "1");
    refused(s, SIZE_MAX, "nesting deeper than the limit");
    free(s);
    s = nested(100000, "");
    refused(s, SIZE_MAX, "nesting deeper than the limit");
    free(s);
    fs_json_dom_free(&dom);
}

static void test_equal_and_write(void **state)
{
    (void)state;
    fs_json_dom one, two;
    fs_json_dom_init(&one);
    fs_json_dom_init(&two);
    const char *text = "{\"s\":\"q\\\"\\\\/\\u0001\\u001F\\b\\f\\n\\r\\t\xc3\xa9\x7f\","
                       "\"n\":[1.50,-0,1e400],\"o\":{\"t\":true,\"f\":false,\"z\":null},"
                       "\"e\":[],\"eo\":{},\"k\\\"ey\":1}";
    const fs_json_node *a = parse_ok(&one, text);
    fs_buf out;
    fs_buf_init(&out);
    assert_true(fs_json_node_write(&out, a));
    assert_string_equal(out.data, "{\"s\":\"q\\\"\\\\/\\u0001\\u001F\\b\\f\\n\\r\\t\xc3\xa9\x7f\","
                                  "\"n\":[1.50,-0,1e400],\"o\":{\"t\":true,\"f\":false,\"z\":null},"
                                  "\"e\":[],\"eo\":{},\"k\\\"ey\":1}");
    /* jansson writes the same for what it can represent (no numbers here) */
    const char *plain = "{\"s\":\"q\\\"\\\\\\/\\u0001\\u001f\\b\\f\\n\\r\\t\xc3\xa9\x7f\","
                        "\"o\":{\"t\":true,\"f\":false,\"z\":null},\"e\":[],\"eo\":{},"
                        "\"\xe2\x82\xac\":[\"\\ud83d\\ude00\"]}";
    json_t *j = json_loadb(plain, strlen(plain), 0, NULL);
    assert_non_null(j);
    char *jansson = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    fs_buf_reset(&out);
    assert_true(fs_json_node_write(&out, parse_ok(&two, plain)));
    assert_string_equal(out.data, jansson);
    free(jansson);
    json_decref(j);
    /* equality: objects in any order, numbers by their text, kinds */
    a = parse_ok(&one, "{\"a\":{\"x\":1,\"y\":[true,null,\"s\"]},\"b\":1.0,\"c\":\"1\",\"d\":[]}");
    const fs_json_node *b =
        parse_ok(&two, "{\"d\":[],\"c\":\"1\",\"b\":1.0,\"a\":{\"y\":[true,null,\"s\"],\"x\":1}}");
    assert_true(fs_json_node_equal(a, b));
    assert_true(fs_json_node_equal(b, a));
    assert_true(fs_json_node_equal(a, a));
    assert_false(fs_json_node_equal(a, NULL));
    assert_false(fs_json_node_equal(NULL, NULL));
    assert_false(fs_json_node_equal(member(a, "b"), member(a, "c"))); /* 1.0 and "1" */
    b = parse_ok(&two, "{\"d\":[],\"c\":\"1\",\"b\":1.00,\"a\":{\"y\":[true,null,\"s\"],\"x\":1}}");
    assert_false(fs_json_node_equal(a, b)); /* 1.0 is not 1.00 (jansson compared the text) */
    b = parse_ok(&two, "{\"d\":[],\"c\":\"1\",\"b\":1.0,\"a\":{\"y\":[null,true,\"s\"],\"x\":1}}");
    assert_false(fs_json_node_equal(a, b)); /* arrays in order */
    b = parse_ok(&two, "{\"d\":[],\"c\":\"1\",\"b\":1.0,\"a\":{\"y\":[true,null,\"s\"],\"z\":1}}");
    assert_false(fs_json_node_equal(a, b));
    b = parse_ok(&two, "{\"d\":[],\"c\":\"1\",\"b\":1.0,\"a\":{\"y\":[true,null,\"s\"]}}");
    assert_false(fs_json_node_equal(a, b));
    /* a string jansson would not hold is refused whole */
    fs_buf_reset(&out);
    assert_true(fs_buf_append_str(&out, "x"));
    assert_false(fs_json_write_string(&out, "a\xe2\x82", 3));
    assert_string_equal(out.data, "x");
    assert_true(fs_json_write_string(&out, "a\0b", 3));
    assert_string_equal(out.data, "x\"a\\u0000b\"");
    fs_buf_free(&out);
    fs_json_dom_free(&one);
    fs_json_dom_free(&two);
}

static void test_big_and_reuse(void **state)
{
    (void)state;
    fs_json_dom dom;
    fs_json_dom_init(&dom);
    /* an object of 5000 members (names checked with a hash table) and a long array */
    fs_buf b;
    fs_buf_init(&b);
    assert_true(fs_buf_append_str(&b, "{"));
    for (int i = 0; i < 5000; i++)
        assert_true(fs_buf_printf(&b, "%s\"member%d\":{\"v\":%d.5,\"s\":\"\\u00e9%d\"}",
                                  i ? "," : "", i, i, i));
    assert_true(fs_buf_append_str(&b, ",\"list\":["));
    for (int i = 0; i < 200000; i++)
        assert_true(fs_buf_printf(&b, "%s%d", i ? "," : "", i));
    assert_true(fs_buf_append_str(&b, "]}"));
    const fs_json_node *root = parse_ok(&dom, b.data);
    assert_int_equal(root->len, 5001);
    assert_text(member(member(root, "member4999"), "v"), FS_JSON_NUMBER, "4999.5");
    assert_text(member(member(root, "member17"), "s"), FS_JSON_STRING,
                "\xc3\xa9"
                "17");
    const fs_json_node *list = member(root, "list");
    assert_int_equal(list->len, 200000);
    assert_text(list + 200000, FS_JSON_NUMBER, "199999");
    assert_ptr_equal(fs_json_next(list), root + root->span);
    /* the same with a duplicate name at the end */
    b.len -= 2;
    assert_true(fs_buf_append_str(&b, "],\"member2500\":0}"));
    refused(b.data, b.len, "duplicate object key");
    /* the big buffers kept, then given back; the document reads again either way */
    size_t cap = dom.nodes_cap;
    root = parse_ok(&dom, "{\"a\":1}");
    assert_int_equal(dom.nodes_cap, cap);
    assert_text(member(root, "a"), FS_JSON_NUMBER, "1");
    fs_json_dom_trim(&dom, (size_t)1 << 30);
    assert_int_equal(dom.nodes_cap, cap);
    fs_json_dom_trim(&dom, 4096);
    assert_int_equal(dom.nodes_cap, 0);
    root = parse_ok(&dom, "{\"b\":[true]}");
    assert_int_equal(member(root, "b")->len, 1);
    fs_buf_free(&b);
    fs_json_dom_free(&dom);
}

/* The document's values are jansson's reading of the same text (fs_json_parse_exact). */
static void same_as_jansson(const fs_json_node *n, const json_t *j)
{
    size_t len;
    const char *num = fs_json_number_text(j, &len);
    switch (n->kind) {
    case FS_JSON_NULL: assert_true(json_is_null(j)); break;
    case FS_JSON_TRUE: assert_true(json_is_true(j)); break;
    case FS_JSON_FALSE: assert_true(json_is_false(j)); break;
    case FS_JSON_NUMBER:
        assert_non_null(num);
        assert_int_equal(len, n->len);
        assert_memory_equal(num, n->text, len);
        break;
    case FS_JSON_STRING:
        assert_null(num);
        assert_int_equal(json_string_length(j), n->len);
        assert_memory_equal(json_string_value(j), n->text, n->len);
        break;
    case FS_JSON_ARRAY: {
        assert_int_equal(json_array_size(j), n->len);
        const fs_json_node *el = n + 1;
        for (uint32_t i = 0; i < n->len; i++, el = fs_json_next(el))
            same_as_jansson(el, json_array_get(j, i));
        break;
    }
    default: {
        assert_int_equal(json_object_size(j), n->len);
        const fs_json_node *key = n + 1;
        void *it = json_object_iter((json_t *)j); /* jansson keeps the document's order */
        for (uint32_t i = 0; i < n->len; i++, key = fs_json_next(key + 1)) {
            assert_string_equal(json_object_iter_key(it), key->text);
            same_as_jansson(key + 1, json_object_iter_value(it));
            it = json_object_iter_next((json_t *)j, it);
        }
        break;
    }
    }
}

static void test_same_as_jansson(void **state)
{
    (void)state;
    static const char *const docs[] = {
        "{\"resourceType\":\"Observation\",\"id\":\"o1\",\"valueQuantity\":{\"value\":1.50,"
        "\"unit\":\"kg\"},\"component\":[{\"valueInteger\":3},{\"valueDecimal\":-2.5e3}],"
        "\"_status\":{\"extension\":[{\"url\":\"u\",\"valueString\":\"\\u00e9\\ud83d\\ude00\"}]},"
        "\"z\":[null,true,false,[],{},[[1]],\"\"],\"\xc3\xa9\":\"\\/\\b\"}",
        "{}",
        "{\"a\":{\"b\":{\"c\":{\"d\":[1,2,{\"e\":\"f\"}]}}}}",
    };
    fs_json_dom dom;
    fs_json_dom_init(&dom);
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        fhirsync_error err;
        json_t *j = fs_json_parse_exact(docs[i], strlen(docs[i]), "doc", &err);
        assert_non_null(j);
        same_as_jansson(parse_ok(&dom, docs[i]), j);
        json_decref(j);
    }
    fs_json_dom_free(&dom);
}

/* Every allocation of a read failing in turn: FHIRSYNC_E_NOMEM each time, then a good read. */
static void test_allocation_failures(void **state)
{
    (void)state;
    const char *text = "{\"a\":[{\"b\":1},{\"c\":[1,2,3,[4,[5,[6]]]]}],\"d\":\"\\u00e9\","
                       "\"e\":{\"k0\":0,\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5,\"k6\":6,"
                       "\"k7\":7,\"k8\":8,\"k9\":9,\"k10\":0,\"k11\":1,\"k12\":2,\"k13\":3,"
                       "\"k14\":4,\"k15\":5,\"k16\":6,\"k17\":7}}";
    unsigned long n;
    for (n = 1; n < 1000; n++) {
        fs_json_dom dom;
        fs_json_dom_init(&dom);
        const fs_json_node *root;
        fhirsync_error err;
        fs_alloc_fail_at(n);
        fhirsync_code rc = fs_json_dom_parse(&dom, text, strlen(text), "doc", &root, &err);
        bool fired = fs_alloc_failure_fired();
        fs_alloc_fail_at(0);
        fs_json_dom_free(&dom);
        if (!fired) {
            assert_int_equal(rc, FHIRSYNC_OK);
            break;
        }
        assert_int_equal(rc, FHIRSYNC_E_NOMEM);
        assert_null(root);
        assert_non_null(strstr(err.message, "out of memory"));
    }
    assert_true(n > 3); /* text, nodes, the stack of open containers, the names' table */
}

int main(void)
{
    fhirsync_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_equal_and_write),
        cmocka_unit_test(test_big_and_reuse),
        cmocka_unit_test(test_same_as_jansson),
        cmocka_unit_test(test_allocation_failures),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    fhirsync_global_cleanup();
    return rc;
}
