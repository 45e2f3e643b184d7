/* fuzz/fuzz_resource_fields.c: fuzz target for the store's line -> fields scanner
 * (store/fields.c), which reads every resource a sync stores: resourceType, id, meta.versionId,
 * meta.lastUpdated and the Patient reference, without a JSON tree.
 *
 * Checks: whatever the bytes, the scanner returns a reason or fields that point into the input
 * (or into the result's own buffers) and are valid (type name, FHIR ids, bounded lengths). And
 * differentially, against jansson as the strict parser: when jansson reads the input as an object
 * (duplicates refused) whose resourceType and id are usable, the scanner must accept it and
 * extract the same type, id, versionId, lastUpdated and Patient. The reference and instant helpers
 * also run on the raw input. Built with -fsanitize=fuzzer under clang, or with replay_main.c as a
 * corpus replayer under gcc. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "json/json.h"
#include "store/fields.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A field points into the input or into the result struct, and stays inside it. */
static void check_span(const char *p, size_t len, const uint8_t *data, size_t size,
                       const fs_resource_fields *f)
{
    const char *in = (const char *)data;
    const char *own = (const char *)f;
    bool in_input = p >= in && p + len <= in + size;
    bool in_result = p >= own && p + len <= own + sizeof *f;
    if (!in_input && !in_result)
        __builtin_trap();
}

static bool same(const char *a, size_t alen, const char *b)
{
    return b && alen == strlen(b) && memcmp(a, b, alen) == 0;
}

/* The Patient jansson's reading gives, by the scanner's rule. */
static const char *expected_patient(json_t *doc, const char *type, const char *id, char *buf,
                                    size_t size)
{
    if (strcmp(type, "Patient") == 0)
        return id;
    static const char *const members[3] = {"subject", "patient", "beneficiary"};
    for (int i = 0; i < 3; i++) {
        json_t *ref = json_object_get(doc, members[i]);
        const char *text = json_is_object(ref) ? fs_json_str(ref, "reference") : NULL;
        if (!text)
            continue;
        size_t len = json_string_length(json_object_get(ref, "reference"));
        const char *pid;
        size_t pid_len;
        if (len < 200 && strlen(text) == len &&
            fs_store_patient_of_reference(text, len, &pid, &pid_len) && pid_len < size) {
            memcpy(buf, pid, pid_len);
            buf[pid_len] = '\0';
            return buf;
        }
    }
    return NULL;
}

static void differential(const uint8_t *data, size_t size, const char *why,
                         const fs_resource_fields *f)
{
    json_error_t error;
    json_t *doc = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &error);
    if (!json_is_object(doc)) {
        json_decref(doc);
        return;
    }
    const char *type = fs_json_str(doc, "resourceType");
    const char *id = fs_json_str(doc, "id");
    if (!type || !id || !fs_store_valid_type(type, strlen(type)) ||
        !fs_store_valid_id(id, strlen(id)) ||
        strlen(type) != json_string_length(json_object_get(doc, "resourceType"))) {
        json_decref(doc);
        return;
    }
    /* a strict parser read it: the scanner must too, and read the same */
    if (why)
        __builtin_trap();
    if (!same(f->resource_type, f->resource_type_len, type) || !same(f->id, f->id_len, id))
        __builtin_trap();
    json_t *meta = json_object_get(doc, "meta");
    const char *version = json_is_object(meta) ? fs_json_str(meta, "versionId") : NULL;
    if (version && fs_store_valid_id(version, strlen(version))) {
        if (!f->version_id || !same(f->version_id, f->version_id_len, version))
            __builtin_trap();
    } else if (f->version_id) {
        __builtin_trap();
    }
    const char *updated = json_is_object(meta) ? fs_json_str(meta, "lastUpdated") : NULL;
    size_t updated_len = updated ? json_string_length(json_object_get(meta, "lastUpdated")) : 0;
    if (updated && updated_len <= 64 && strlen(updated) == updated_len) {
        if (!f->last_updated || !same(f->last_updated, f->last_updated_len, updated))
            __builtin_trap();
    }
    char buf[80];
    const char *patient = expected_patient(doc, type, id, buf, sizeof buf);
    if (patient && (!f->patient_id || !same(f->patient_id, f->patient_id_len, patient)))
        __builtin_trap();
    json_decref(doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fs_resource_fields f;
    const char *why = fs_store_scan_fields((const char *)data, size, &f);
    if (!why) {
        check_span(f.resource_type, f.resource_type_len, data, size, &f);
        check_span(f.id, f.id_len, data, size, &f);
        if (!fs_store_valid_type(f.resource_type, f.resource_type_len) ||
            !fs_store_valid_id(f.id, f.id_len))
            __builtin_trap();
        if (f.version_id) {
            check_span(f.version_id, f.version_id_len, data, size, &f);
            if (!fs_store_valid_id(f.version_id, f.version_id_len))
                __builtin_trap();
        }
        if (f.last_updated) {
            check_span(f.last_updated, f.last_updated_len, data, size, &f);
            if (f.last_updated_len > 64)
                __builtin_trap();
            int64_t ms;
            if (f.has_last_updated_ms !=
                    fs_store_parse_instant_ms(f.last_updated, f.last_updated_len, &ms) ||
                (f.has_last_updated_ms && ms != f.last_updated_ms))
                __builtin_trap();
        } else if (f.has_last_updated_ms) {
            __builtin_trap();
        }
        if (f.patient_id) {
            check_span(f.patient_id, f.patient_id_len, data, size, &f);
            if (!fs_store_valid_id(f.patient_id, f.patient_id_len))
                __builtin_trap();
        }
    } else if (!*why) {
        __builtin_trap(); /* a reason is never empty */
    }
    differential(data, size, why, &f);

    /* the helpers on raw bytes */
    const char *pid;
    size_t pid_len;
    if (fs_store_patient_of_reference((const char *)data, size, &pid, &pid_len) &&
        (pid < (const char *)data || pid + pid_len > (const char *)data + size ||
         !fs_store_valid_id(pid, pid_len)))
        __builtin_trap();
    int64_t ms;
    (void)fs_store_parse_instant_ms((const char *)data, size, &ms);
    (void)fs_store_valid_type((const char *)data, size);
    return 0;
}
