/* fuzz/fuzz_config.c: fuzz target for the INI parser of endpoint profiles. The input is parsed
 * from memory as a config file (fs_config_load_mem, which fhirsync_config_load also uses); when
 * it parses, every setting of every endpoint is read back through the public and internal
 * getters, each endpoint is copied and checked for completeness, and an endpoint is added so
 * that [defaults] inheritance runs too. The same text also goes through a checking load (every
 * problem into a report, parsing going on after each) and fhirsync_config_check. Built with
 * -fsanitize=fuzzer under clang, or with replay_main.c as a corpus replayer under gcc. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "config/config_internal.h"
#include "core/core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void read_back(const fhirsync_endpoint *ep)
{
    const char *const *names = fhirsync_setting_names();
    size_t total = 0;
    for (size_t i = 0; names[i]; i++) {
        const char *v = fhirsync_endpoint_get(ep, names[i]);
        const char *source = fhirsync_endpoint_source(ep, names[i]);
        /* a value and its source come together */
        if ((v == NULL) != (source == NULL))
            __builtin_trap();
        total += v ? strlen(v) : 0;
        for (size_t n = 0; n < fhirsync_endpoint_count(ep, names[i]); n++)
            total += strlen(fhirsync_endpoint_get_at(ep, names[i], n));
        total += (size_t)fs_endpoint_long(ep, names[i]);
    }
    total += strlen(fs_endpoint_vendor(ep)) + fs_endpoint_bool(ep, "delete_job");
    fhirsync_error err;
    (void)fhirsync_endpoint_validate(ep, &err);
    (void)total;
}

/* The checking load of the same text: never fails but for memory, every problem located in the
 * file, and the check of the whole runs over what could be read. */
static void check_all(const uint8_t *data, size_t size)
{
    fhirsync_config_report *report = fhirsync_config_report_new();
    fhirsync_config *cfg = NULL;
    fhirsync_error err;
    if (!report)
        return;
    fhirsync_code rc =
        fs_config_load_mem_report((const char *)data, size, "fuzz.ini", report, &cfg, &err);
    if (rc != FHIRSYNC_OK && (cfg || rc != FHIRSYNC_E_NOMEM))
        __builtin_trap();
    if (rc == FHIRSYNC_OK) {
        for (size_t i = 0; i < fhirsync_config_report_count(report); i++) {
            const fhirsync_config_problem *p = fhirsync_config_report_at(report, i);
            if (!p->message || !p->file || strcmp(p->file, "fuzz.ini") != 0 || p->line < 1)
                __builtin_trap();
        }
        for (size_t i = 0; i < fhirsync_config_endpoint_count(cfg); i++)
            read_back(fhirsync_config_endpoint_at(cfg, i));
        (void)fhirsync_config_check(cfg, report, &err);
    }
    fhirsync_config_free(cfg);
    fhirsync_config_report_free(report);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fhirsync_config *cfg = NULL;
    fhirsync_error err;
    check_all(data, size);
    fhirsync_code rc = fs_config_load_mem((const char *)data, size, "fuzz.ini", &cfg, &err);
    if (rc != FHIRSYNC_OK) {
        /* a failure leaves nothing behind and says where */
        if (cfg || (rc == FHIRSYNC_E_CONFIG && strncmp(err.message, "fuzz.ini:", 9) != 0))
            __builtin_trap();
        return 0;
    }
    for (size_t i = 0; i < fhirsync_config_endpoint_count(cfg); i++) {
        const fhirsync_endpoint *ep = fhirsync_config_endpoint_at(cfg, i);
        read_back(ep);
        fhirsync_endpoint *copy = fhirsync_endpoint_dup(ep);
        if (copy)
            read_back(copy);
        fhirsync_endpoint_free(copy);
    }
    fhirsync_endpoint *added = NULL;
    if (fhirsync_config_add_endpoint(cfg, "fuzz-added-endpoint", &added, NULL) == FHIRSYNC_OK)
        read_back(added);
    fhirsync_config_free(cfg);
    return 0;
}
