/* fuzz/fuzz_discovery.c: discovery documents from a server: the SMART configuration and the
 * CapabilityStatement's oauth-uris security extension (the first byte picks which), with relative
 * URLs resolved against a base. */
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
    if (size < 1)
        return 0;
    bool capability = data[0] & 1;
    fhirsync_smart_config *cfg = NULL;
    fhirsync_error err;
    if (fs_smart_config_parse((const char *)data + 1, size - 1, "https://ehr.example/fhir/r4",
                              "https://ehr.example/fhir/r4/x", capability, &cfg,
                              &err) == FHIRSYNC_OK) {
        /* what callers do with a result */
        fhirsync_strlist_has(&cfg->signing_algs, "RS384");
        fs_url_check_transport(cfg->token_endpoint, "token endpoint", &err);
    }
    fhirsync_smart_config_free(cfg);
    return 0;
}
