/* unit/test_auth.c: discovery documents, token responses, OAuth error bodies, the assertion's
 * claim set, and the token cache. Network paths are covered by the interop and integration tests
 * against real servers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth/auth_internal.h"

#define S(x) x, strlen(x)

static void test_smart_config(void **state)
{
    (void)state;
    const char *doc = "{\"token_endpoint\":\"../auth/token\","
                      "\"grant_types_supported\":[\"client_credentials\"],"
                      "\"token_endpoint_auth_methods_supported\":[\"private_key_jwt\"],"
                      "\"token_endpoint_auth_signing_alg_values_supported\":[\"RS384\",\"ES384\"],"
                      "\"scopes_supported\":[\"system/*.rs\"],"
                      "\"capabilities\":[\"client-confidential-asymmetric\",\"permission-v2\"]}";
    fhirsync_smart_config *cfg = NULL;
    fhirsync_error err = {0};
    assert_int_equal(fs_smart_config_parse(S(doc), "https://ehr/fhir/r4", "src", false, &cfg, &err),
                     FHIRSYNC_OK);
    assert_string_equal(cfg->token_endpoint, "https://ehr/fhir/auth/token");
    assert_true(fhirsync_strlist_has(&cfg->signing_algs, "ES384"));
    assert_true(fhirsync_strlist_has(&cfg->grant_types, "client_credentials"));
    assert_int_equal(cfg->scope_version, 2);
    fhirsync_smart_config_free(cfg);

    /* both permission versions: v1 by default */
    const char *both = "{\"token_endpoint\":\"https://a/t\",\"capabilities\":"
                       "[\"permission-v1\",\"permission-v2\"]}";
    assert_int_equal(fs_smart_config_parse(S(both), "https://a", "src", false, &cfg, &err), 0);
    assert_int_equal(cfg->scope_version, 1);
    assert_int_equal(cfg->signing_algs.count, 0);
    fhirsync_smart_config_free(cfg);
}

static void test_smart_config_bad(void **state)
{
    (void)state;
    fhirsync_smart_config *cfg = NULL;
    fhirsync_error err = {0};
    assert_int_equal(fs_smart_config_parse(S("<html><body>Login</body></html>"), "https://a",
                                           "https://a/.well-known/smart-configuration", false, &cfg,
                                           &err),
                     FHIRSYNC_E_JSON);
    assert_null(cfg);
    assert_non_null(strstr(err.message, "HTML"));
    assert_int_equal(fs_smart_config_parse(S("{\"grant_types_supported\":[]}"), "https://a", "doc",
                                           false, &cfg, &err),
                     FHIRSYNC_E_DISCOVERY);
    assert_non_null(strstr(err.message, "no token endpoint"));
    assert_int_equal(
        fs_smart_config_parse(S("{\"token_endpoint\":42}"), "https://a", "doc", false, &cfg, &err),
        FHIRSYNC_E_DISCOVERY);
    assert_int_equal(fs_smart_config_parse(S("{\"token_endpoint\":\"https://a/t\","
                                             "\"capabilities\":\"x\"}"),
                                           "https://a", "doc", false, &cfg, &err),
                     FHIRSYNC_E_DISCOVERY);
    assert_int_equal(fs_smart_config_parse(S("[1,2]"), "https://a", "doc", false, &cfg, &err),
                     FHIRSYNC_E_JSON);
    assert_int_equal(
        fs_smart_config_parse(S("{\"a\":1,\"a\":2}"), "https://a", "doc", false, &cfg, &err),
        FHIRSYNC_E_JSON);
}

static void test_capability_statement(void **state)
{
    (void)state;
    const char *cs =
        "{\"resourceType\":\"CapabilityStatement\",\"rest\":[{\"mode\":\"server\",\"security\":"
        "{\"extension\":[{\"url\":\"http://fhir-registry.smarthealthit.org/StructureDefinition/"
        "oauth-uris\",\"extension\":[{\"url\":\"token\",\"valueUri\":\"https://auth/token\"},"
        "{\"url\":\"register\",\"valueUri\":\"/register\"}]}]}}]}";
    fhirsync_smart_config *cfg = NULL;
    fhirsync_error err = {0};
    assert_int_equal(fs_smart_config_parse(S(cs), "https://ehr/fhir", "m", true, &cfg, &err), 0);
    assert_string_equal(cfg->token_endpoint, "https://auth/token");
    assert_string_equal(cfg->registration_endpoint, "https://ehr/register");
    assert_true(cfg->from_capability_statement);
    fhirsync_smart_config_free(cfg);
    assert_int_equal(fs_smart_config_parse(S("{\"resourceType\":\"CapabilityStatement\"}"),
                                           "https://ehr", "m", true, &cfg, &err),
                     FHIRSYNC_E_DISCOVERY);
    assert_non_null(strstr(err.message, "oauth-uris"));
    assert_int_equal(fs_smart_config_parse(S("{\"resourceType\":\"Patient\"}"), "https://ehr", "m",
                                           true, &cfg, &err),
                     FHIRSYNC_E_DISCOVERY);
}

static void test_token_response(void **state)
{
    (void)state;
    fs_token_response tr;
    fhirsync_error err = {0};
    assert_int_equal(fs_token_response_parse(S("{\"access_token\":\"abc\",\"token_type\":"
                                               "\"Bearer\",\"expires_in\":300,\"scope\":"
                                               "\"system/Patient.read\"}"),
                                             &tr, &err),
                     0);
    assert_string_equal(tr.access_token, "abc");
    assert_string_equal(tr.token_type, "Bearer");
    assert_int_equal(tr.expires_in, 300);
    assert_string_equal(tr.scope, "system/Patient.read");
    fs_token_response_clear(&tr);
    /* expires_in missing or as a string */
    assert_int_equal(fs_token_response_parse(S("{\"access_token\":\"abc\",\"token_type\":"
                                               "\"bearer\"}"),
                                             &tr, &err),
                     0);
    assert_int_equal(tr.expires_in, -1);
    assert_null(tr.scope);
    fs_token_response_clear(&tr);
    assert_int_equal(fs_token_response_parse(S("{\"access_token\":\"abc\",\"token_type\":"
                                               "\"bearer\",\"expires_in\":\"3600\"}"),
                                             &tr, &err),
                     0);
    assert_int_equal(tr.expires_in, 3600);
    fs_token_response_clear(&tr);
    /* refusals */
    assert_int_equal(fs_token_response_parse(S("{\"token_type\":\"bearer\"}"), &tr, &err),
                     FHIRSYNC_E_TOKEN_RESPONSE);
    assert_non_null(strstr(err.message, "no access_token"));
    assert_int_equal(fs_token_response_parse(S("{\"access_token\":\"\"}"), &tr, &err),
                     FHIRSYNC_E_TOKEN_RESPONSE);
    assert_int_equal(
        fs_token_response_parse(S("{\"access_token\":\"a\",\"token_type\":\"mac\"}"), &tr, &err),
        FHIRSYNC_E_TOKEN_RESPONSE);
    assert_int_equal(
        fs_token_response_parse(S("{\"access_token\":\"a\\r\\nX-Evil: 1\"}"), &tr, &err),
        FHIRSYNC_E_TOKEN_RESPONSE);
    assert_int_equal(fs_token_response_parse(S("<html>502</html>"), &tr, &err),
                     FHIRSYNC_E_TOKEN_RESPONSE);
    assert_non_null(strstr(err.message, "HTML"));
    assert_null(tr.access_token);
    /* expires_in present but unusable: named as such, never "has no expires_in" */
    const char *unusable[][2] = {{"0", "expires_in 0 is not a usable lifetime"},
                                 {"-5", "expires_in -5 is not a usable lifetime"},
                                 {"\"0\"", "expires_in 0 is not a usable lifetime"},
                                 {"\"soon\"", "expires_in \"soon\" is not a number"},
                                 {"1.5", "expires_in 1.5 is not a number"}};
    for (size_t i = 0; i < sizeof unusable / sizeof *unusable; i++) {
        char body[200];
        snprintf(body, sizeof body,
                 "{\"access_token\":\"abc\",\"token_type\":\"bearer\",\"expires_in\":%s}",
                 unusable[i][0]);
        fs_err_clear(&err);
        assert_int_equal(fs_token_response_parse(body, strlen(body), &tr, &err),
                         FHIRSYNC_E_TOKEN_RESPONSE);
        if (!strstr(err.message, unusable[i][1]))
            fail_msg("expires_in %s: %s", unusable[i][0], err.message);
        assert_null(strstr(err.message, "has no expires_in"));
        assert_null(tr.access_token);
    }
    /* null is "not said" */
    assert_int_equal(fs_token_response_parse(S("{\"access_token\":\"abc\",\"token_type\":"
                                               "\"bearer\",\"expires_in\":null}"),
                                             &tr, &err),
                     0);
    assert_int_equal(tr.expires_in, -1);
    fs_token_response_clear(&tr);
}

static void test_oauth_error(void **state)
{
    (void)state;
    char code[32];
    assert_true(fs_oauth_error_code(S("{\"error\":\"invalid_client\",\"error_description\":"
                                      "\"kid unknown\"}"),
                                    code, sizeof code));
    assert_string_equal(code, "invalid_client");
    assert_false(fs_oauth_error_code(S("<html>"), code, sizeof code));
    assert_false(fs_oauth_error_code(S("{\"message\":\"x\"}"), code, sizeof code));
}

static void test_assertion_claims(void **state)
{
    (void)state;
    char *claims = fs_assertion_claims("my-client", "https://auth/token", 1000, 300, "jti-1");
    assert_non_null(claims);
    json_t *doc = fs_json_parse(S(claims), true, "claims", NULL);
    assert_non_null(doc);
    assert_string_equal(fs_json_str(doc, "iss"), "my-client");
    assert_string_equal(fs_json_str(doc, "sub"), "my-client");
    assert_string_equal(fs_json_str(doc, "aud"), "https://auth/token");
    int64_t v;
    assert_true(fs_json_int(doc, "exp", &v));
    assert_int_equal(v, 1300);
    assert_true(fs_json_int(doc, "iat", &v));
    assert_int_equal(v, 1000);
    assert_true(fs_json_int(doc, "nbf", &v));
    assert_int_equal(v, 1000);
    assert_string_equal(fs_json_str(doc, "jti"), "jti-1");
    json_decref(doc);
    fs_free(claims);
    /* strings are escaped, not pasted */
    claims = fs_assertion_claims("a\"b", "https://x/t", 1, 10, "j");
    doc = fs_json_parse(S(claims), true, "claims", NULL);
    assert_string_equal(fs_json_str(doc, "iss"), "a\"b");
    json_decref(doc);
    fs_free(claims);
}

static void test_token_cache(void **state)
{
    (void)state;
    fs_cached_token tok = {.access_token = "t1",
                           .token_type = "bearer",
                           .scope = "s",
                           .obtained_at = 1000,
                           .expires_at = 1300};
    assert_true(fs_token_cache_put("https://a/t", "c", "s", &tok));
    fs_cached_token got;
    assert_true(fs_token_cache_get("https://a/t", "c", "s", 1100, &got));
    assert_string_equal(got.access_token, "t1");
    fs_cached_token_clear(&got);
    /* renewed ahead of expiry: within the 60 s margin it is not handed out */
    assert_false(fs_token_cache_get("https://a/t", "c", "s", 1250, &got));
    /* keyed by token URL, client and scope */
    assert_false(fs_token_cache_get("https://a/t", "c", "other", 1100, &got));
    assert_false(fs_token_cache_get("https://a/t", "d", "s", 1100, &got));
    assert_false(fs_token_cache_get("https://b/t", "c", "s", 1100, &got));
    /* replacement and drop */
    tok.access_token = "t2";
    assert_true(fs_token_cache_put("https://a/t", "c", "s", &tok));
    assert_true(fs_token_cache_get("https://a/t", "c", "s", 1100, &got));
    assert_string_equal(got.access_token, "t2");
    fs_cached_token_clear(&got);
    fs_token_cache_drop("https://a/t", "c", "s");
    assert_false(fs_token_cache_get("https://a/t", "c", "s", 1100, &got));
    /* a short-lived token (60 s) is renewed in its last third */
    tok.expires_at = 1060;
    assert_true(fs_token_cache_put("https://a/t", "c", "s", &tok));
    assert_true(fs_token_cache_get("https://a/t", "c", "s", 1030, &got));
    fs_cached_token_clear(&got);
    assert_false(fs_token_cache_get("https://a/t", "c", "s", 1045, &got));
    fs_token_cache_clear();
}

/* What an auth handle tells before any request: the scope it will ask for, the token URL when the
 * profile sets it, no discovery result; a symmetric client has no assertion to show. */
static void test_auth_handle_accessors(void **state)
{
    (void)state;
    fhirsync_error err = {0};
    fhirsync_endpoint *ep = fhirsync_endpoint_new("acc");
    assert_non_null(ep);
    assert_int_equal(setenv("FHIRSYNC_TEST_ACCESSOR_SECRET", "s3cr3t", 1), 0);
    const char *settings[][2] = {{"base_url", "http://127.0.0.1:9/fhir"},
                                 {"client_id", "c1"},
                                 {"auth_method", "client_secret_basic"},
                                 {"client_secret_env", "FHIRSYNC_TEST_ACCESSOR_SECRET"},
                                 {"token_url", "http://127.0.0.1:9/token"}};
    for (size_t i = 0; i < sizeof settings / sizeof settings[0]; i++)
        assert_int_equal(fhirsync_endpoint_set(ep, settings[i][0], settings[i][1], "t", &err),
                         FHIRSYNC_OK);
    fhirsync_auth *auth = NULL;
    assert_int_equal(fhirsync_auth_new(ep, &auth, &err), FHIRSYNC_OK);
    assert_string_equal(fhirsync_auth_scope(auth), "system/*.read"); /* the default */
    /* known once the first token request settles it */
    const char *token_url = fhirsync_auth_token_url(auth);
    assert_true(!token_url || strcmp(token_url, "http://127.0.0.1:9/token") == 0);
    assert_null(fhirsync_auth_smart_config(auth)); /* token_url set: no discovery yet */
    char *jwt = NULL;
    assert_int_equal(fhirsync_auth_assertion(auth, "http://127.0.0.1:9/token", &jwt, &err),
                     FHIRSYNC_E_UNSUPPORTED);
    assert_null(jwt);
    fhirsync_auth_free(auth);
    assert_int_equal(fhirsync_endpoint_set(ep, "scope", "system/Patient.rs", "t", &err),
                     FHIRSYNC_OK);
    assert_int_equal(fhirsync_auth_new(ep, &auth, &err), FHIRSYNC_OK);
    assert_string_equal(fhirsync_auth_scope(auth), "system/Patient.rs");
    fhirsync_auth_free(auth);
    unsetenv("FHIRSYNC_TEST_ACCESSOR_SECRET");
    fhirsync_endpoint_free(ep);
}

static void test_alloc_failures_in_parsers(void **state)
{
    (void)state;
    const char *doc = "{\"token_endpoint\":\"t\",\"grant_types_supported\":[\"a\",\"b\"],"
                      "\"capabilities\":[\"permission-v1\"]}";
    for (unsigned long n = 1; n < 200; n++) {
        fs_alloc_fail_at(n);
        fhirsync_smart_config *cfg = NULL;
        fhirsync_error err = {0};
        fhirsync_code rc = fs_smart_config_parse(S(doc), "https://a", "d", false, &cfg, &err);
        bool fired = fs_alloc_failure_fired();
        fs_alloc_fail_at(0);
        if (!fired) {
            assert_int_equal(rc, FHIRSYNC_OK);
            fhirsync_smart_config_free(cfg);
            break;
        }
        if (rc != FHIRSYNC_E_NOMEM && rc != FHIRSYNC_OK)
            fprintf(stderr, "n=%lu rc=%d %s\n", n, rc, err.message);
        assert_true(rc == FHIRSYNC_E_NOMEM || rc == FHIRSYNC_OK);
        fhirsync_smart_config_free(cfg);
    }
    for (unsigned long n = 1; n < 200; n++) {
        fs_alloc_fail_at(n);
        fs_token_response tr;
        fhirsync_code rc = fs_token_response_parse(S("{\"access_token\":\"abc\",\"token_type\":"
                                                     "\"bearer\",\"scope\":\"x\"}"),
                                                   &tr, NULL);
        bool fired = fs_alloc_failure_fired();
        fs_alloc_fail_at(0);
        assert_true(rc == FHIRSYNC_OK || rc == FHIRSYNC_E_NOMEM || rc == FHIRSYNC_E_TOKEN_RESPONSE);
        fs_token_response_clear(&tr);
        if (!fired)
            break;
    }
}

int main(void)
{
    fhirsync_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_smart_config),
        cmocka_unit_test(test_smart_config_bad),
        cmocka_unit_test(test_capability_statement),
        cmocka_unit_test(test_token_response),
        cmocka_unit_test(test_oauth_error),
        cmocka_unit_test(test_assertion_claims),
        cmocka_unit_test(test_token_cache),
        cmocka_unit_test(test_auth_handle_accessors),
        cmocka_unit_test(test_alloc_failures_in_parsers),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    fhirsync_global_cleanup();
    return rc;
}
