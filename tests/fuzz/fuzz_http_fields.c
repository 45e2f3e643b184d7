/* fuzz/fuzz_http_fields.c: header values and URLs a server controls: Retry-After (seconds or
 * HTTP-date), HTTP dates, FHIR instants, Content-Location / Location / next-link URLs resolved
 * against a base and checked against the transport rules and the token origin. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "http/http.h"
#include "http/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int initialised;
    if (!initialised) {
        fhirsync_global_init();
        initialised = 1;
    }
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    int64_t v;
    fs_http_retry_after_form form;
    fs_http_retry_after_parse(text, 1700000000, &v, &form);
    fs_parse_http_date(text, &v);
    fs_parse_instant(text, &v);
    char *resolved = NULL;
    fhirsync_error err;
    if (fs_url_resolve("https://ehr.example/fhir/r4", text, true, &resolved, &err) == FHIRSYNC_OK) {
        fs_url_check_transport(resolved, "URL", &err);
        fs_url_same_origin(resolved, "https://ehr.example/fhir/r4");
        char *origin = NULL;
        if (fs_url_origin(resolved, &origin, &err) == FHIRSYNC_OK)
            fs_free(origin);
    }
    fs_free(resolved);
    char *red = fs_redact(text);
    fs_free(red);
    free(text);
    return 0;
}
