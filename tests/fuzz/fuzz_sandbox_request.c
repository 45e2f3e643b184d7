/* fuzz/fuzz_sandbox_request.c: fuzz target for the sandbox's request parsing (src/sandbox/parse.c,
 * query.c, scope.c): every input goes through the form-urlencoded parser (query strings and token
 * request bodies), the search-parameter compiler and matcher, the FHIR Parameters body parser, the
 * Range, Accept, Prefer, Content-Type, Basic and Bearer header parsers, the raw path splitter, the
 * request-log masking and the scope parser. These are the parts of the sandbox that read bytes
 * from the network before any authentication. Built with -fsanitize=fuzzer under clang, or with
 * replay_main.c as a corpus replayer (tests/CMakeLists.txt adds the sandbox sources). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static json_t *resource;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (fhirsync_global_init() != FHIRSYNC_OK)
        __builtin_trap();
    resource =
        json_loads("{\"resourceType\":\"Observation\",\"id\":\"obs-1-2\",\"status\":\"final\","
                   "\"category\":[{\"coding\":[{\"system\":\"http://terminology.hl7.org/"
                   "CodeSystem/observation-category\",\"code\":\"laboratory\"}]}],"
                   "\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":"
                   "\"718-7\"}]},\"subject\":{\"reference\":\"Patient/pat-1\"}}",
                   0, NULL);
    if (!resource)
        __builtin_trap();
    return 0;
}

static void query_from(const sb_params *params, bool compartment, bool paging)
{
    sb_query q;
    sb_query_init(&q);
    fhirsync_error err;
    for (size_t i = 0; i < params->count; i++)
        if (sb_query_add(&q, params->items[i].name, params->items[i].value, compartment, paging,
                         &err) == SB_PARAM_BAD &&
            !err.message[0])
            __builtin_trap(); /* a refusal always says why */
    sb_resource_meta meta;
    memset(&meta, 0, sizeof meta);
    strcpy(meta.id, "obs-1-2");
    strcpy(meta.patient_id, "pat-1");
    meta.last_updated = 1735689600;
    (void)sb_query_match_meta(&q, false, &meta);
    (void)sb_query_match_meta(&q, true, &meta);
    if (sb_query_needs_content(&q))
        (void)sb_query_match_content(&q, resource);
    if (q.count < 0 || q.count > SB_MAX_COUNT)
        __builtin_trap();
    sb_query_free(&q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!resource)
        LLVMFuzzerInitialize(NULL, NULL);
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    fhirsync_error err;

    /* query strings and form bodies, then search parameters compiled from them */
    sb_params params;
    sb_params_init(&params);
    if (sb_params_parse_form(&params, text, size, &err)) {
        query_from(&params, true, true);
        query_from(&params, false, false);
        for (size_t i = 0; i < params.count; i++) {
            if (strlen(params.items[i].name) > size || strlen(params.items[i].value) > size)
                __builtin_trap(); /* decoding never grows */
            int64_t lo, hi;
            if (sb_parse_date_range(params.items[i].value, &lo, &hi) && hi <= lo)
                __builtin_trap();
        }
    }
    sb_params_free(&params);

    /* a POST $export body */
    sb_params_init(&params);
    if (sb_params_parse_parameters(&params, text, size, &err))
        query_from(&params, true, false);
    sb_params_free(&params);

    /* header values (C strings: stop at an embedded NUL like a header would) */
    uint64_t start = 0, length = 0, total = size > 0 ? (uint64_t)data[0] * 97 : 0;
    sb_range_result r = sb_range_parse(text, total, &start, &length);
    if (r == SB_RANGE_OK && (length == 0 || start + length > total))
        __builtin_trap();
    (void)sb_media_type_is(text, "application/x-www-form-urlencoded");
    (void)sb_accept_lists(text, "application/fhir+json");
    (void)sb_prefer_has(text, "respond-async");
    (void)sb_prefer_has(text, "handling=strict");
    char *user = NULL, *password = NULL;
    if (sb_basic_auth_parse(text, &user, &password) && (!user || !password))
        __builtin_trap();
    fs_free(user);
    fs_free_secret(password);
    (void)sb_bearer_token(text);

    /* paths and the request-log copy of a URI */
    char **segments = NULL;
    size_t nsegments = 0;
    if (sb_path_split(text, &segments, &nsegments))
        sb_segments_free(segments, nsegments);
    char *logged = sb_uri_for_log(text);
    fs_free(logged);

    /* scopes */
    (void)sb_scopes_valid(text, &err);
    (void)sb_scopes_grant(text, "Patient", SB_PERM_R | SB_PERM_S);
    sb_scope scope;
    if (sb_scope_parse(text, &scope, &err) && !sb_scope_within(&scope, &scope))
        __builtin_trap();

    free(text);
    return 0;
}
