/* fuzz/fuzz_fhirpath.c: fuzz target for the FHIRPath lexer, parser and evaluator (view/fhirpath.h).
 * The input (up to its first NUL byte) is an expression with the constants %c (a string) and %n
 * (a decimal); a refused one must come with FHIRSYNC_E_VIEW and a message. An accepted
 * one is evaluated over fixed resources (FHIR's JSON: arrays, choice types, primitive extensions,
 * decimals with their text, read as json/dom.h documents) and must either succeed with well-formed
 * items or fail with FHIRSYNC_E_VIEW (or FHIRSYNC_E_NOMEM) and a message. Built with
 * -fsanitize=fuzzer under clang, or with replay_main.c as a corpus replayer under gcc. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "view/fhirpath.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const resources[] = {
    "{\"resourceType\":\"Patient\",\"id\":\"p1\",\"active\":true,\"birthDate\":\"1970-06\","
    "\"name\":[{\"use\":\"official\",\"family\":\"F\",\"given\":[\"A\",null]},{\"given\":[\"C\"]}],"
    "\"_birthDate\":{\"extension\":[{\"url\":\"u\",\"valueString\":\"x\"}]},"
    "\"_name\":[{\"id\":\"n\"}],\"multipleBirthInteger\":3,"
    "\"link\":[{\"other\":{\"reference\":\"Patient/p1\"}}],\"deceasedBoolean\":false}",
    "{\"resourceType\":\"Observation\",\"id\":\"o1\",\"valueQuantity\":{\"value\":1.50},"
    "\"component\":[{\"valueInteger\":3},{\"valueDecimal\":-2.5e3},{\"valueString\":\"s\"}],"
    "\"effectiveDateTime\":\"2020-01-02T03:04\",\"valueTime\":\"12:00\"}",
};

static void evaluate(const fs_fp_expr *expr, const char *text)
{
    fhirsync_error err;
    fs_json_dom doc_dom = {0}, consts_dom = {0};
    const fs_json_node *doc, *consts;
    static const char consts_text[] = "{\"c\":\"official\",\"n\":2.50}";
    if (fs_json_dom_parse(&doc_dom, text, strlen(text), "resource", &doc, &err) ||
        fs_json_dom_parse(&consts_dom, consts_text, sizeof consts_text - 1, "consts", &consts,
                          &err))
        __builtin_trap();
    fs_fp_arena arena = {0};
    fs_fp_item res, c, n;
    fs_fp_item_of_node(doc, NULL, &res);
    fs_fp_item_of_node(fs_json_member(consts, "c", 1), "string", &c);
    fs_fp_item_of_node(fs_json_member(consts, "n", 1), "decimal", &n);
    fs_fp_coll vars[2] = {{&c, 1, 1}, {&n, 1, 1}};
    fs_fp_env env = {.arena = &arena, .resource = &res, .vars = vars, .row_index = 1};
    fs_fp_coll in = {&res, 1, 1}, out = {0};
    fhirsync_code rc = fs_fp_eval(expr, &env, &in, &out, &err);
    if (rc == FHIRSYNC_OK) {
        for (size_t i = 0; i < out.count; i++) {
            const fs_fp_item *it = &out.items[i];
            if (it->kind > FS_FP_STRING || (it->kind == FS_FP_NODE && !it->node) ||
                ((it->kind == FS_FP_STRING || it->kind == FS_FP_DECIMAL) && !it->s))
                __builtin_trap();
        }
    } else if ((rc != FHIRSYNC_E_VIEW && rc != FHIRSYNC_E_NOMEM) || !err.message[0]) {
        __builtin_trap();
    }
    fs_fp_arena_free(&arena);
    fs_json_dom_free(&doc_dom);
    fs_json_dom_free(&consts_dom);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    const char *vars[] = {"c", "n"};
    fhirsync_error err;
    fs_fp_expr *expr = fs_fp_parse(text, vars, 2, &err);
    if (!expr) {
        /* (the message names the position, unless the redaction of a password-like token in
         * the echoed text ate it: only non-empty is checked) */
        if ((err.code != FHIRSYNC_E_VIEW && err.code != FHIRSYNC_E_NOMEM) || !err.message[0])
            __builtin_trap();
    } else {
        for (size_t i = 0; i < sizeof resources / sizeof resources[0]; i++)
            evaluate(expr, resources[i]);
        fs_fp_free(expr);
    }
    free(text);
    return 0;
}
