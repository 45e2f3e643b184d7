/* store/fields.h: the line -> fields extractor of the store's hot path. One NDJSON line (one FHIR
 * resource) is scanned once, left to right, without building a JSON tree and without allocating:
 * it finds the top-level resourceType and id, meta.versionId and meta.lastUpdated, and the
 * Patient the resource belongs to (its own id for a Patient; else the subject, patient or
 * beneficiary reference "Patient/X"). The returned fields point into the line.
 *
 * Whole-line checks come for free on the way, with the lexer core the NDJSON checker uses
 * (json/lex.h): the grammar (brackets, strings, commas, numbers, literals, nesting depth), no
 * control characters in strings, valid escapes, valid UTF-8, nothing after the object. Both
 * paths into the store check lines strictly first (the bulk writer and the workers' fetch, with
 * bulk/ndjson.c); this scanner must in any case be safe on any bytes (it is fuzzed,
 * tests/fuzz/fuzz_resource_fields.c) and never accept a line a strict parser would read
 * differently in the fields it extracts. Unlike the checker it accepts \u0000 (and says so).
 *
 * Thread safety: pure functions; no state. */
#ifndef FS_STORE_FIELDS_H
#define FS_STORE_FIELDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest resource type name: 63 characters, PostgreSQL's identifier limit (NAMEDATALEN - 1),
 * so that a table named after the type is never silently truncated. */
#define FS_STORE_TYPE_MAX 63
/* Longest FHIR id ([A-Za-z0-9\-\.]{1,64}). */
#define FS_STORE_ID_MAX 64
/* Deepest nesting the scanner follows (jansson stops at 2048, so whatever jansson accepts the
 * scanner accepts too). */
#define FS_STORE_MAX_DEPTH 4096

typedef struct fs_resource_fields {
    const char *resource_type; /* top-level "resourceType" (validated as a type name) */
    size_t resource_type_len;
    const char *id; /* top-level "id" (validated as a FHIR id) */
    size_t id_len;
    const char *version_id; /* meta.versionId when it is a valid FHIR id; else NULL */
    size_t version_id_len;
    const char *last_updated; /* meta.lastUpdated when a string of at most 64 bytes */
    size_t last_updated_len;
    bool has_last_updated_ms; /* meta.lastUpdated parsed as a FHIR instant */
    int64_t last_updated_ms;  /* its epoch in milliseconds */
    const char *patient_id;   /* the Patient this resource belongs to, or NULL */
    size_t patient_id_len;
    bool has_nul_escape; /* a "\u0000" escape somewhere (PostgreSQL's jsonb cannot hold it) */
    /* Decoded values when the JSON strings used escapes ("Patient\/1"): the pointers above then
     * point here. Last in the struct: the scanner does not clear them. */
    char type_buf[FS_STORE_TYPE_MAX + 1];
    char id_buf[FS_STORE_ID_MAX + 1];
    char version_buf[FS_STORE_ID_MAX + 1];
    char updated_buf[64];
    char reference_buf[256];
} fs_resource_fields;

/* Scan one line (without its newline; a trailing "\r\n" or "\n" is tolerated). Returns NULL
 * when the line is usable, with `out` filled; otherwise a static English reason ("line is not
 * a JSON object", "id is missing", ...) and `out` is unspecified. */
const char *fs_store_scan_fields(const char *line, size_t len, fs_resource_fields *out);

/* Whether `name` is a usable resource type: ^[A-Z][A-Za-z]{1,62}$. */
bool fs_store_valid_type(const char *name, size_t len);
/* Whether `id` is a FHIR id: ^[A-Za-z0-9\-\.]{1,64}$. */
bool fs_store_valid_id(const char *id, size_t len);
/* The Patient id of a reference ("Patient/X", "Patient/X/_history/2", ".../fhir/Patient/X"), or
 * false when the reference is not to a Patient or X is not a valid id. */
bool fs_store_patient_of_reference(const char *ref, size_t len, const char **id, size_t *id_len);
/* Parse a FHIR instant (len bytes, not NUL-terminated) to epoch milliseconds. */
bool fs_store_parse_instant_ms(const char *text, size_t len, int64_t *out_ms);

#endif
