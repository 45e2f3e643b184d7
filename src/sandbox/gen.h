/* sandbox/gen.h: the sandbox's deterministic data generator. From a seed and a patient count it
 * produces realistic, US Core-shaped FHIR R4 resources one at a time, without holding them in
 * memory: any resource can be produced on its own from (type, patient, slot), so the server can
 * page, filter by patient, read by id and stream bulk files for 100,000 patients (about ten
 * million resources) in constant memory.
 *
 * Change over time: sb_gen_mutate() adds an "epoch" in which a fraction of the resources is
 * updated (new versionId and lastUpdated) and a fraction deleted. Whether a resource changed in an
 * epoch is a hash of (seed, epoch, type, patient, slot), so no per-resource state is kept.
 *
 * Thread safety: sb_gen_resource() and the other const functions may run concurrently;
 * sb_gen_mutate() must be serialised against them by the caller (a rwlock in the server). */
#ifndef SB_GEN_H
#define SB_GEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

typedef struct sb_gen sb_gen;

typedef struct sb_gen_config {
    uint64_t seed;
    uint32_t patients;     /* number of patients (>= 1) */
    int64_t created_at;    /* epoch seconds of the initial data's lastUpdated (0: fixed default) */
} sb_gen_config;

/* NULL on out of memory or invalid config. */
sb_gen *sb_gen_new(const sb_gen_config *cfg);
void sb_gen_free(sb_gen *gen);

/* Resource types, in a fixed order. Patient-compartment types have per-patient slots; the
 * others (Organization, Practitioner, Group) are global and use patient = 0. */
size_t sb_gen_type_count(void);
const char *sb_gen_type_name(size_t type);
/* -1 when the generator does not produce this type. */
int sb_gen_type_index(const char *name);
bool sb_gen_type_in_patient_compartment(size_t type);

uint32_t sb_gen_patient_count(const sb_gen *gen);
/* How many slots of `type` the patient has (global types: the global count, patient ignored). */
uint32_t sb_gen_slots(const sb_gen *gen, size_t type, uint32_t patient);

typedef struct sb_resource_meta {
    char id[64];              /* the resource id */
    char patient_id[64];      /* "Patient/<id>" reference target id, "" for global types */
    int64_t last_updated;     /* epoch seconds of meta.lastUpdated at the current epoch */
    uint32_t version;         /* meta.versionId */
    bool deleted;             /* deleted at or before the current epoch */
    int64_t deleted_at;       /* epoch seconds of the deletion, when deleted */
} sb_resource_meta;

/* Produce one resource at the current epoch. Always fills `meta`; appends the resource's JSON
 * (one line, no newline, compact) to `out` unless the resource is deleted. Returns false only on
 * out of memory or an out-of-range (type, patient, slot). */
bool sb_gen_resource(const sb_gen *gen, size_t type, uint32_t patient, uint32_t slot, fs_buf *out,
                     sb_resource_meta *meta);

/* Map an id produced by the generator back to (patient, slot); false for foreign ids. */
bool sb_gen_parse_id(const sb_gen *gen, size_t type, const char *id, uint32_t *patient,
                     uint32_t *slot);

/* The Patient id of patient index p (for `patient=` searches and Group members). */
void sb_gen_patient_id(const sb_gen *gen, uint32_t patient, char *buf, size_t size);

/* Add an epoch at time `now` in which update_fraction of live resources get a new version and
 * delete_fraction are deleted (both in [0,1]). Returns the new epoch number (first is 1). */
unsigned sb_gen_mutate(sb_gen *gen, double update_fraction, double delete_fraction, int64_t now);
unsigned sb_gen_epoch(const sb_gen *gen);

#endif
