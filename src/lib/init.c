/* init.c: library set-up and tear-down: libcurl's global state, the allocators and OpenSSL's
 * secure heap (where private key numbers and the live-secret registry's copies live when it is
 * available), jansson's hash seed, and at the end the token cache and the secret registry.
 * It is the one file above every module (it reaches core, json and auth), so that core depends
 * on nothing above it. */
#include <curl/curl.h>
#include <stdatomic.h>

#include "core/core.h"
#include "auth/auth_internal.h"
#include "json/json.h"

static atomic_int init_count;

fhirsync_code fhirsync_global_init(void)
{
    if (atomic_fetch_add(&init_count, 1) > 0)
        return FHIRSYNC_OK;
    fs_secure_heap_init();
    fs_json_init();
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        atomic_fetch_sub(&init_count, 1);
        return FHIRSYNC_E_INTERNAL;
    }
    return FHIRSYNC_OK;
}

void fhirsync_global_cleanup(void)
{
    if (atomic_fetch_sub(&init_count, 1) == 1) {
        fs_token_cache_clear();
        fs_secret_clear_all();
        curl_global_cleanup();
    }
}

const char *fhirsync_version(void)
{
    return FHIRSYNC_VERSION;
}
