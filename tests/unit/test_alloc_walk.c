/* unit/test_alloc_walk.c: allocation-failure walks. The library's allocator fails its Nth
 * allocation (fs_alloc_fail_at); each walk runs a whole operation for N = 1, 2, ... until a run
 * completes without the failure firing, and checks that every failing run ended in a clean error
 * (no crash; leaks are caught by ASan and valgrind, which run this test too).
 *
 * Offline walks: key generation, JWKS, signing, PEM round trip, configuration. The token-flow walk
 * needs a live authorization server: the integration script test_alloc_walk.sh starts one and sets
 * FHIRSYNC_WALK_TOKEN_URL, FHIRSYNC_WALK_KEY and FHIRSYNC_WALK_CLIENT_ID; without them it is
 * skipped. (jansson, libcurl and OpenSSL allocate with their own allocators: outside the seam.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth/auth_internal.h"
#include "fhirsync/fhirsync.h"

typedef fhirsync_code (*walk_fn)(void *ctx);

/* Walk N over fn; returns how many injected failures were tested. */
static unsigned long walk(const char *what, walk_fn fn, void *ctx)
{
    unsigned long n;
    for (n = 1; n < 100000; n++) {
        fs_alloc_fail_at(n);
        fhirsync_code rc = fn(ctx);
        bool fired = fs_alloc_failure_fired();
        fs_alloc_fail_at(0);
        if (!fired) {
            if (rc != FHIRSYNC_OK)
                fprintf(stderr, "%s: failed without an injected failure: %s\n", what,
                        fhirsync_strerror(rc));
            assert_int_equal(rc, FHIRSYNC_OK);
            break;
        }
        if (rc == FHIRSYNC_OK)
            continue; /* the failure was absorbed (e.g. an optional cache insert) */
        if (rc != FHIRSYNC_E_NOMEM)
            fprintf(stderr, "%s: allocation %lu failed -> %s\n", what, n, fhirsync_strerror(rc));
        /* out of memory, or a clean error that names the failed step: never a crash */
        assert_true(rc == FHIRSYNC_E_NOMEM || rc == FHIRSYNC_E_CRYPTO || rc == FHIRSYNC_E_KEY ||
                    rc == FHIRSYNC_E_IO || rc == FHIRSYNC_E_CONFIG ||
                    rc == FHIRSYNC_E_TOKEN_RESPONSE || rc == FHIRSYNC_E_DISCOVERY ||
                    rc == FHIRSYNC_E_NETWORK || rc == FHIRSYNC_E_URL || rc == FHIRSYNC_E_JSON);
    }
    printf("%s: walked %lu allocation failures\n", what, n - 1);
    return n - 1;
}

/* ---- offline: keys, JWKS, signing, PEM round trip ------------------------------------------- */

typedef struct key_ctx {
    char path[512];
    fhirsync_alg alg;
} key_ctx;

static fhirsync_code key_flow(void *p)
{
    key_ctx *ctx = p;
    fhirsync_key *key = NULL, *loaded = NULL;
    char *jwks = NULL, *jws = NULL;
    fhirsync_error err = {0};
    unlink(ctx->path);
    fhirsync_code rc = fhirsync_key_generate(ctx->alg, 2048, &key, &err);
    if (rc == FHIRSYNC_OK)
        rc = fhirsync_key_write_pem(key, ctx->path, &err);
    if (rc == FHIRSYNC_OK)
        rc = fhirsync_key_load_file(ctx->path, &loaded, &err);
    const fhirsync_key *keys[] = {loaded};
    if (rc == FHIRSYNC_OK)
        rc = fhirsync_jwks_build(keys, NULL, 1, &jwks, &err);
    if (rc == FHIRSYNC_OK)
        rc = fhirsync_jws_sign(loaded, ctx->alg, NULL, NULL, "{\"iss\":\"x\"}", &jws, &err);
    fhirsync_free_secret(jws);
    fhirsync_free(jwks);
    fhirsync_key_free(loaded);
    fhirsync_key_free(key);
    return rc;
}

static void test_walk_keys(void **state)
{
    (void)state;
    key_ctx ctx;
    snprintf(ctx.path, sizeof ctx.path, "/tmp/fhirsync-walk-%d.pem", (int)getpid());
    ctx.alg = FHIRSYNC_ALG_ES384;
    assert_true(walk("ES384 key flow", key_flow, &ctx) > 0);
    /* RSA key generation once per step is slow under valgrind (minutes): scripts/valgrind-units.sh
     * sets FHIRSYNC_TEST_QUICK and the RSA walk runs in the plain and ASan runs only */
    if (!getenv("FHIRSYNC_TEST_QUICK")) {
        ctx.alg = FHIRSYNC_ALG_RS384;
        assert_true(walk("RS384 key flow", key_flow, &ctx) > 0);
    }
    unlink(ctx.path);
}

/* ---- the whole token flow against a live server --------------------------------------------- */

static fhirsync_code token_flow(void *p)
{
    (void)p;
    fhirsync_endpoint *ep = fhirsync_endpoint_new("walk");
    fhirsync_auth *auth = NULL;
    fhirsync_error err = {0};
    fhirsync_code rc = ep ? FHIRSYNC_OK : FHIRSYNC_E_NOMEM;
    const char *settings[][2] = {
        {"base_url", getenv("FHIRSYNC_WALK_BASE_URL")},
        {"token_url", getenv("FHIRSYNC_WALK_TOKEN_URL")},
        {"client_id", getenv("FHIRSYNC_WALK_CLIENT_ID")},
        {"key_file", getenv("FHIRSYNC_WALK_KEY")},
        {"scope", "system/Patient.read"},
        {"max_retries", "0"},
    };
    for (size_t i = 0; rc == FHIRSYNC_OK && i < sizeof settings / sizeof *settings; i++)
        if (settings[i][1])
            rc = fhirsync_endpoint_set(ep, settings[i][0], settings[i][1], "test", &err);
    if (rc == FHIRSYNC_OK)
        rc = fhirsync_auth_new(ep, &auth, &err);
    fhirsync_token tok;
    if (rc == FHIRSYNC_OK)
        rc = fhirsync_auth_token(auth, true, &tok, &err);
    fhirsync_auth_free(auth);
    fhirsync_endpoint_free(ep);
    fs_token_cache_clear();
    return rc;
}

static void test_walk_token_flow(void **state)
{
    (void)state;
    if (!getenv("FHIRSYNC_WALK_TOKEN_URL")) {
        printf("token-flow walk skipped: no FHIRSYNC_WALK_TOKEN_URL (run by test_alloc_walk.sh)\n");
        skip();
    }
    assert_true(walk("token flow", token_flow, NULL) > 10);
}

int main(void)
{
    fhirsync_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_walk_keys),
        cmocka_unit_test(test_walk_token_flow),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    fhirsync_global_cleanup();
    return rc;
}
