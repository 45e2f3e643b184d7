/* fuzz/fuzz_json_dom.c: fuzz target for the compact read-only JSON document (json/dom.h), which
 * reads every resource the views evaluate. Differential against jansson, as the engine read
 * resources before it (fs_json_parse_exact: jansson behind a pass that keeps the text of numbers):
 *   - both accept the input or both refuse it, with FHIRSYNC_E_JSON and a message (out of memory
 *     aside);
 *   - when they accept it, the same values: the same kinds, member names and order, strings
 *     byte for byte, numbers by their text, array elements in order; every node's span and count
 *     consistent; every text NUL-terminated; each member found by fs_json_member;
 *   - the document written back (fs_json_node_write) is read again as the same values, equal by
 *     fs_json_node_equal, and written again byte for byte the same.
 * One document is reused from input to input, as the view engine reuses its own. Built with
 * -fsanitize=fuzzer under clang, or with replay_main.c as a corpus replayer under gcc. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json/dom.h"
#include "json/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok)
{
    if (!ok)
        __builtin_trap();
}

/* The node's value is jansson's `j` (a number: a string marked by fs_json_parse_exact). */
static void same_value(const fs_json_node *n, const json_t *j)
{
    size_t len;
    const char *num = fs_json_number_text(j, &len);
    switch (n->kind) {
    case FS_JSON_NULL: check(json_is_null(j) && !n->text && n->span == 1); break;
    case FS_JSON_TRUE: check(json_is_true(j) && n->span == 1); break;
    case FS_JSON_FALSE: check(json_is_false(j) && n->span == 1); break;
    case FS_JSON_NUMBER:
        check(num && len == n->len && memcmp(num, n->text, len) == 0 && n->text[len] == '\0');
        check(n->span == 1);
        break;
    case FS_JSON_STRING:
        check(json_is_string(j) && !num && json_string_length(j) == n->len);
        check(memcmp(json_string_value(j), n->text, n->len) == 0 && n->text[n->len] == '\0');
        check(n->span == 1);
        break;
    case FS_JSON_ARRAY: {
        check(json_is_array(j) && json_array_size(j) == n->len);
        const fs_json_node *el = n + 1;
        for (uint32_t i = 0; i < n->len; i++, el = fs_json_next(el))
            same_value(el, json_array_get(j, i));
        check(el == n + n->span);
        break;
    }
    case FS_JSON_OBJECT: {
        check(json_is_object(j) && json_object_size(j) == n->len);
        const fs_json_node *key = n + 1;
        void *it = json_object_iter((json_t *)j);
        for (uint32_t i = 0; i < n->len; i++, key = fs_json_next(key + 1)) {
            check(it && key->kind == FS_JSON_STRING && key->span == 1);
            const char *jkey = json_object_iter_key(it);
            check(strlen(jkey) == key->len && memcmp(jkey, key->text, key->len) == 0);
            check(key->text[key->len] == '\0');
            same_value(key + 1, json_object_iter_value(it));
            check(fs_json_member(n, key->text, key->len) == key + 1);
            it = json_object_iter_next((json_t *)j, it);
        }
        check(!it && key == n + n->span);
        break;
    }
    default: check(false);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fs_json_dom dom, again;
    const fs_json_node *root = NULL, *root2 = NULL;
    fhirsync_error err, jerr;
    fhirsync_code rc = fs_json_dom_parse(&dom, (const char *)data, size, "input", &root, &err);
    json_t *j = fs_json_parse_exact((const char *)data, size, "input", &jerr);
    if (rc == FHIRSYNC_E_NOMEM || (!j && jerr.code == FHIRSYNC_E_NOMEM)) {
        json_decref(j);
        return 0;
    }
    check((rc == FHIRSYNC_OK) == (j != NULL));
    if (rc != FHIRSYNC_OK) {
        check(rc == FHIRSYNC_E_JSON && err.message[0] && !root);
        return 0;
    }
    check(root && root->kind == FS_JSON_OBJECT);
    same_value(root, j);
    /* written back: the same values, and a fixed point */
    fs_buf out, out2;
    fs_buf_init(&out);
    fs_buf_init(&out2);
    if (fs_json_node_write(&out, root)) {
        check(fs_json_dom_parse(&again, out.data, out.len, "written", &root2, &err) == FHIRSYNC_OK);
        check(fs_json_node_equal(root, root2) && fs_json_node_equal(root2, root));
        same_value(root2, j);
        check(fs_json_node_write(&out2, root2) && out2.len == out.len &&
              memcmp(out.data, out2.data, out.len) == 0);
    }
    fs_buf_free(&out);
    fs_buf_free(&out2);
    json_decref(j);
    fs_json_dom_trim(&dom, 1 << 20);
    fs_json_dom_trim(&again, 1 << 20);
    return 0;
}
