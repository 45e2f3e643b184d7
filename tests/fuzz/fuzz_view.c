/* fuzz/fuzz_view.c: fuzz target for the ViewDefinition reader and the evaluation of what it
 * accepts (view/view.c, through fhirsync/view.h). An input that reads as a view must list at least
 * one column, each with a valid and unique name, and evaluating it over a few fixed resources must
 * either succeed with every row holding one well-formed value per column or fail with a code the
 * API documents and a message; a refused input must leave the view NULL with a message. The input
 * is also evaluated as a resource by a fixed view (resource parsing with exact numbers). Built with
 * -fsanitize=fuzzer under clang, or with replay_main.c as a corpus replayer under gcc. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fhirsync/view.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const resources[] = {
    "{\"resourceType\":\"Patient\",\"id\":\"p1\",\"active\":true,\"birthDate\":\"1970-06\","
    "\"name\":[{\"use\":\"official\",\"family\":\"F\",\"given\":[\"A\",\"B\"]},{\"given\":[\"C\"]}]"
    ","
    "\"_birthDate\":{\"extension\":[{\"url\":\"u\",\"valueString\":\"x\"}]},"
    "\"contact\":[{\"telecom\":[{\"system\":\"phone\",\"value\":\"1\"}]}],"
    "\"link\":[{\"other\":{\"reference\":\"Patient/p1\"}}],\"deceasedBoolean\":false}",
    "{\"resourceType\":\"Observation\",\"id\":\"o1\",\"status\":\"final\",\"valueQuantity\":"
    "{\"value\":1.50,\"unit\":\"kg\"},\"component\":[{\"valueInteger\":3},{\"valueString\":\"s\"}],"
    "\"subject\":{\"reference\":\"Patient/p1\"},\"effectiveDateTime\":\"2020-01-02T03:04:05Z\"}",
};

static const char *const fixed_view =
    "{\"resource\":\"Patient\",\"select\":[{\"column\":[{\"name\":\"id\",\"path\":\"id\"},"
    "{\"name\":\"n\",\"path\":\"name.given\",\"collection\":true}]},{\"forEachOrNull\":\"name\","
    "\"column\":[{\"name\":\"f\",\"path\":\"family.first()\"}]}]}";

typedef struct check {
    size_t columns;
} check;

static fhirsync_code on_row(void *userdata, const fhirsync_view_value *values, size_t count)
{
    const check *c = userdata;
    if (count != c->columns)
        __builtin_trap();
    for (size_t i = 0; i < count; i++) {
        const fhirsync_view_value *v = &values[i];
        if (v->kind > FHIRSYNC_VIEW_JSON)
            __builtin_trap();
        if (v->kind >= FHIRSYNC_VIEW_DECIMAL && (!v->text || strlen(v->text) > v->len))
            __builtin_trap();
    }
    return FHIRSYNC_OK;
}

static void evaluate(fhirsync_view *view, const char *resource, size_t len)
{
    check c = {fhirsync_view_column_count(view)};
    fhirsync_error err;
    fhirsync_code rc = fhirsync_view_eval(view, resource, len, on_row, &c, &err);
    if (rc != FHIRSYNC_OK &&
        ((rc != FHIRSYNC_E_VIEW && rc != FHIRSYNC_E_JSON && rc != FHIRSYNC_E_NOMEM) ||
         !err.message[0]))
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fhirsync_view *view = NULL;
    fhirsync_error err;
    fhirsync_code rc = fhirsync_view_parse((const char *)data, size, &view, &err);
    if (rc != FHIRSYNC_OK) {
        if (view || !err.message[0])
            __builtin_trap();
    } else {
        size_t n = fhirsync_view_column_count(view);
        if (n == 0 || !fhirsync_view_resource(view))
            __builtin_trap();
        for (size_t i = 0; i < n; i++) {
            const char *name = fhirsync_view_column_at(view, i)->name;
            if (!isalpha((unsigned char)name[0]))
                __builtin_trap();
            for (size_t k = 0; k < i; k++)
                if (strcmp(fhirsync_view_column_at(view, k)->name, name) == 0)
                    __builtin_trap();
        }
        for (size_t i = 0; i < sizeof resources / sizeof resources[0]; i++)
            evaluate(view, resources[i], strlen(resources[i]));
        fhirsync_view_free(view);
    }
    if (fhirsync_view_parse(fixed_view, strlen(fixed_view), &view, &err) != FHIRSYNC_OK)
        __builtin_trap();
    evaluate(view, (const char *)data, size);
    fhirsync_view_free(view);
    return 0;
}
