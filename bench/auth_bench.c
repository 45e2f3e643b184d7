/* bench/auth_bench.c: the cost of authentication against a live server (the sandbox), measured in
 * one process so that the figures compare: signing an assertion, a whole token flow (fresh
 * assertion, POST, response parsing), and as the baseline a plain GET to the same server over
 * the same kind of connection. Prints ms per operation and the ratios.
 * usage: auth_bench --base-url URL --client-id ID --key FILE [--alg ALG] [-n N] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth_internal.h"
#include "fhirsync/fhirsync.h"

static double now_ms(void)
{
    return (double)fs_monotonic_ms();
}

int main(int argc, char **argv)
{
    const char *base = NULL, *client = NULL, *key = NULL, *alg = NULL;
    int n = 200;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--base-url"))
            base = argv[i + 1];
        else if (!strcmp(argv[i], "--client-id"))
            client = argv[i + 1];
        else if (!strcmp(argv[i], "--key"))
            key = argv[i + 1];
        else if (!strcmp(argv[i], "--alg"))
            alg = argv[i + 1];
        else if (!strcmp(argv[i], "-n"))
            n = atoi(argv[i + 1]);
    }
    if (!base || !client || !key || n < 1) {
        fprintf(stderr, "usage: auth_bench --base-url URL --client-id ID --key FILE [--alg ALG] "
                        "[-n N]\n");
        return 2;
    }
    fhirsync_global_init();
    fhirsync_error err = {0};
    fhirsync_endpoint *ep = fhirsync_endpoint_new("bench");
    fhirsync_endpoint_set(ep, "base_url", base, "bench", &err);
    fhirsync_endpoint_set(ep, "client_id", client, "bench", &err);
    fhirsync_endpoint_set(ep, "key_file", key, "bench", &err);
    if (alg)
        fhirsync_endpoint_set(ep, "alg", alg, "bench", &err);
    fhirsync_auth *auth = NULL;
    fhirsync_token tok;
    if (fhirsync_auth_new(ep, &auth, &err) != FHIRSYNC_OK ||
        fhirsync_auth_token(auth, true, &tok, &err) != FHIRSYNC_OK) {
        fprintf(stderr, "auth_bench: %s\n", err.message);
        return 1;
    }
    const char *token_url = fhirsync_auth_token_url(auth);

    /* 1. signing an assertion */
    double t0 = now_ms();
    for (int i = 0; i < n; i++) {
        char *jwt = NULL;
        fhirsync_auth_assertion(auth, token_url, &jwt, NULL);
        fhirsync_free_secret(jwt);
    }
    double sign_ms = (now_ms() - t0) / n;

    /* 2. a whole token flow (new assertion, POST, parse) */
    t0 = now_ms();
    for (int i = 0; i < n; i++) {
        if (fhirsync_auth_token(auth, true, &tok, &err) != FHIRSYNC_OK) {
            fprintf(stderr, "auth_bench: %s\n", err.message);
            return 1;
        }
    }
    double flow_ms = (now_ms() - t0) / n;

    /* 3. baseline: a plain GET of the discovery document on one reused connection */
    fs_http *http = fs_http_new(NULL);
    char *url = fs_url_join(base, ".well-known/smart-configuration");
    fs_http_response resp;
    fs_http_response_init(&resp);
    fs_http_request req = {.url = url, .max_body = 1 << 20};
    t0 = now_ms();
    for (int i = 0; i < n; i++)
        fs_http_perform(http, &req, &resp, NULL);
    double get_ms = (now_ms() - t0) / n;
    fs_http_response_clear(&resp);
    fs_http_free(http);
    fs_free(url);

    printf("BENCH | token flow (%s) | %.3f ms | plain GET %.3f ms | %.2fx\n",
           alg ? alg : "key default", flow_ms, get_ms, flow_ms / get_ms);
    printf("BENCH | assertion signing (%s) | %.3f ms | token flow %.3f ms | %.0f%% of the flow\n",
           alg ? alg : "key default", sign_ms, flow_ms, 100.0 * sign_ms / flow_ms);
    fhirsync_auth_free(auth);
    fhirsync_endpoint_free(ep);
    fhirsync_global_cleanup();
    return 0;
}
