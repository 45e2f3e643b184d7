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
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/auth_internal.h"
#include "fhirsync/login.h"

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

/* ---- a person's login (auth = login) --------------------------------------------------------- */

static void test_pkce(void **state)
{
    (void)state;
    /* RFC 7636 appendix B */
    char *challenge = fs_pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
    assert_string_equal(challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    fs_free(challenge);
    char *a = fs_pkce_verifier(), *b = fs_pkce_verifier();
    assert_int_equal(strlen(a), 64);
    assert_int_equal(strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                     64);
    assert_string_not_equal(a, b);
    fs_secret_free(a);
    fs_secret_free(b);
}

static void test_login_redirect(void **state)
{
    (void)state;
    const char *cb = "http://127.0.0.1:4711/callback";
    char *code = NULL;
    fhirsync_error err = {0};
    assert_int_equal(fs_login_parse_redirect("http://127.0.0.1:4711/callback?code=a%2Bb+c&state=S1",
                                             "S1", cb, &code, &err),
                     FHIRSYNC_OK);
    assert_string_equal(code, "a+b c");
    fs_secret_free(code);
    /* a forged state: refused, whatever else the URL says */
    assert_int_equal(fs_login_parse_redirect("http://127.0.0.1:4711/callback?code=x&state=S2", "S1",
                                             cb, &code, &err),
                     FHIRSYNC_E_AUTH);
    assert_null(code);
    assert_non_null(strstr(err.message, "state does not match"));
    /* a missing state is refused before its error is believed */
    assert_int_equal(fs_login_parse_redirect("http://127.0.0.1:4711/callback?error=access_denied",
                                             "S1", cb, &code, &err),
                     FHIRSYNC_E_AUTH);
    assert_non_null(strstr(err.message, "state is missing"));
    assert_null(strstr(err.message, "access_denied"));
    /* the state before the target */
    assert_int_equal(
        fs_login_parse_redirect("http://evil.example/cb?code=x&state=S2", "S1", cb, &code, &err),
        FHIRSYNC_E_AUTH);
    assert_non_null(strstr(err.message, "state"));
    assert_int_equal(fs_login_parse_redirect("http://127.0.0.1:4711/other?code=x&state=S1", "S1",
                                             cb, &code, &err),
                     FHIRSYNC_E_AUTH);
    assert_non_null(strstr(err.message, "not to this login's redirect URI"));
    assert_int_equal(
        fs_login_parse_redirect("http://127.0.0.1:4711/callback?state=S1&error=access_denied&"
                                "error_description=The+user+said+no",
                                "S1", cb, &code, &err),
        FHIRSYNC_E_AUTH);
    assert_non_null(strstr(err.message, "access_denied (The user said no)"));
    assert_int_equal(
        fs_login_parse_redirect("http://127.0.0.1:4711/callback?state=S1", "S1", cb, &code, &err),
        FHIRSYNC_E_PROTOCOL);
    assert_int_equal(
        fs_login_parse_redirect("http://127.0.0.1:4711/callback", "S1", cb, &code, &err),
        FHIRSYNC_E_AUTH);
    assert_int_equal(fs_login_parse_redirect("http://127.0.0.1:4711/callback?state=S%zz&code=x",
                                             "S1", cb, &code, &err),
                     FHIRSYNC_E_AUTH);
    assert_null(code);
}

static void test_login_token_response(void **state)
{
    (void)state;
    /* {"alg":"none"}.{"sub":"u1","fhirUser":"Practitioner/7"}. : read, never verified */
    const char *doc =
        "{\"access_token\":\"at-1234567890\",\"token_type\":\"Bearer\","
        "\"expires_in\":300,\"refresh_token\":\"rt-abcdefghijkl\","
        "\"patient\":\"p9\",\"refresh_token_expires_in\":\"86400\",\"id_token\":"
        "\"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1MSIsImZoaXJVc2VyIjoiUHJhY3RpdGlvbmVyLzcifQ."
        "\"}";
    fs_token_response tr;
    fhirsync_error err = {0};
    assert_int_equal(fs_token_response_parse(S(doc), &tr, &err), FHIRSYNC_OK);
    assert_string_equal(tr.refresh_token, "rt-abcdefghijkl");
    assert_string_equal(tr.patient, "p9");
    assert_string_equal(tr.fhir_user, "Practitioner/7");
    assert_int_equal(tr.refresh_expires_in, 86400);
    fs_token_response_clear(&tr);
    assert_null(fs_id_token_fhir_user("not-a-jwt"));

    const char *smart = "{\"token_endpoint\":\"https://a/t\",\"authorization_endpoint\":\"/authz\","
                        "\"code_challenge_methods_supported\":[\"S256\"]}";
    fhirsync_smart_config *cfg = NULL;
    assert_int_equal(fs_smart_config_parse(S(smart), "https://a/fhir", "src", false, &cfg, &err),
                     FHIRSYNC_OK);
    assert_string_equal(cfg->authorization_endpoint, "https://a/authz");
    assert_true(fhirsync_strlist_has(&cfg->code_challenge_methods, "S256"));
    fhirsync_smart_config_free(cfg);
}

static void test_credentials_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/fhirsync-cred-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/sub/site.credentials", dir);
    fhirsync_error err = {0};
    fs_credentials c = {0}, back;
    assert_int_equal(fs_credentials_read(path, &back, &err), FHIRSYNC_E_NOT_FOUND);
    c.refresh_token = fs_secret_strdup("refresh-token-value-1");
    c.scope = fs_strdup("openid patient/*.read");
    c.patient = fs_strdup("p1");
    c.token_url = fs_strdup("https://ehr/token");
    c.client_id = fs_strdup("app");
    c.issued_at = 1700000000;
    assert_int_equal(fs_credentials_write(path, &c, &err), FHIRSYNC_OK);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(fs_credentials_read(path, &back, &err), FHIRSYNC_OK);
    assert_string_equal(back.refresh_token, "refresh-token-value-1");
    assert_string_equal(back.patient, "p1");
    assert_int_equal(back.issued_at, 1700000000);
    assert_null(back.fhir_user);
    fs_credentials_clear(&back);
    /* replaced whole, no temporary file left beside it */
    fs_secret_free(c.refresh_token);
    c.refresh_token = fs_secret_strdup("refresh-token-value-2");
    assert_int_equal(fs_credentials_write(path, &c, &err), FHIRSYNC_OK);
    assert_int_equal(fs_credentials_read(path, &back, &err), FHIRSYNC_OK);
    assert_string_equal(back.refresh_token, "refresh-token-value-2");
    fs_credentials_clear(&back);
    char sub[256];
    snprintf(sub, sizeof sub, "%s/sub", dir);
    DIR *d = opendir(sub);
    assert_non_null(d);
    int entries = 0;
    for (struct dirent *e; (e = readdir(d));)
        entries += e->d_name[0] != '.';
    closedir(d);
    assert_int_equal(entries, 1);
    /* readable by others: refused like a key file */
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(fs_credentials_read(path, &back, &err), FHIRSYNC_E_KEY_PERMS);
    assert_non_null(strstr(err.message, "run chmod 600"));
    assert_null(back.refresh_token);
    /* incomplete */
    assert_int_equal(chmod(path, 0600), 0);
    FILE *f = fopen(path, "w");
    fputs("{\"client_id\":\"app\"}", f);
    fclose(f);
    assert_int_equal(fs_credentials_read(path, &back, &err), FHIRSYNC_E_IO);
    unlink(path);
    char lock[300];
    snprintf(lock, sizeof lock, "%s.lock", path);
    unlink(lock);
    rmdir(sub);
    rmdir(dir);
    fs_credentials_clear(&c);
}

static void test_login_api(void **state)
{
    (void)state;
    fhirsync_error err = {0};
    fhirsync_login *login = NULL;
    fhirsync_endpoint *ep = fhirsync_endpoint_new("site");
    fhirsync_endpoint_set(ep, "base_url", "https://ehr.example/fhir", "t", &err);
    fhirsync_endpoint_set(ep, "client_id", "app", "t", &err);
    fhirsync_endpoint_set(ep, "key_file", "/nonexistent.pem", "t", &err);
    assert_int_equal(fhirsync_login_start(ep, "http://127.0.0.1:1/cb", &login, &err),
                     FHIRSYNC_E_CONFIG);
    assert_non_null(strstr(err.message, "auth = login"));
    assert_null(login);
    assert_int_equal(fhirsync_login_finish(NULL, "x", &err), FHIRSYNC_E_ARG);
    assert_null(fhirsync_login_authorize_url(NULL));
    assert_false(fhirsync_login_has_refresh_token(NULL));
    fhirsync_login_free(NULL);
    fhirsync_endpoint_set(ep, "auth", "login", "t", &err);
    fhirsync_endpoint_set(ep, "credentials_file", "/x/site.cred", "t", &err);
    char *path = fs_credentials_path(ep);
    assert_string_equal(path, "/x/site.cred");
    fs_free(path);
    fhirsync_endpoint_clear(ep, "credentials_file");
    setenv("XDG_STATE_HOME", "/state", 1);
    path = fs_credentials_path(ep);
    assert_string_equal(path, "/state/fhirsync/site.credentials");
    fs_free(path);
    unsetenv("XDG_STATE_HOME");
    fhirsync_endpoint_free(ep);
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
        cmocka_unit_test(test_pkce),
        cmocka_unit_test(test_login_redirect),
        cmocka_unit_test(test_login_token_response),
        cmocka_unit_test(test_credentials_file),
        cmocka_unit_test(test_login_api),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    fhirsync_global_cleanup();
    return rc;
}
