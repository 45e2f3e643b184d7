/* fuzz/fuzz_token_response.c: what a token endpoint answers: a success body (access_token,
 * token_type, expires_in, scope) and an OAuth error body ({error, error_description}). */
#include <stdint.h>
#include <stdlib.h>

#include "auth/auth_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int initialised;
    if (!initialised) {
        fhirsync_global_init();
        initialised = 1;
    }
    fs_token_response tr;
    fhirsync_error err;
    if (fs_token_response_parse((const char *)data, size, &tr, &err) == FHIRSYNC_OK)
        fs_token_response_clear(&tr);
    char code[64];
    fs_oauth_error_code((const char *)data, size, code, sizeof code);
    return 0;
}
