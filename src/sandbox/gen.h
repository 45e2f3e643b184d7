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
    uint32_t patients;  /* number of patients (>= 1) */
    int64_t created_at; /* epoch seconds of the initial data's lastUpdated (0: fixed default) */
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
    char id[64];          /* the resource id */
    char patient_id[64];  /* "Patient/<id>" reference target id, "" for global types */
    int64_t last_updated; /* epoch seconds of meta.lastUpdated at the current epoch */
    uint32_t version;     /* meta.versionId */
    bool deleted;         /* deleted at or before the current epoch */
    int64_t deleted_at;   /* epoch seconds of the deletion, when deleted */
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
 * delete_fraction are deleted (both in [0,1]). Returns the new epoch number (first is 1), 0 past
 * SB_GEN_MAX_EPOCHS or when memory runs out (the first mutation allocates the epochs' table). */
unsigned sb_gen_mutate(sb_gen *gen, double update_fraction, double delete_fraction, int64_t now);
unsigned sb_gen_epoch(const sb_gen *gen);

/* ---- additions: type indices, id scheme, constants and helpers ----------------------------------
 *
 * Ids (all match [A-Za-z0-9\-\.]{1,64}; numbers are decimal without leading zeros):
 *   Organization       "org-<slot>"           Practitioner       "prac-<slot>"
 *   Patient            "pat-<patient>"        Encounter          "enc-<patient>-<slot>"
 *   Observation        "obs-<p>-<s>"          Condition          "cond-<p>-<s>"
 *   MedicationRequest  "medrx-<p>-<s>"        AllergyIntolerance "allergy-<p>-<s>"
 *   Immunization       "imm-<p>-<s>"          Procedure          "proc-<p>-<s>"
 *   DiagnosticReport   "dxr-<p>-<s>"          DocumentReference  "docref-<p>-<s>"
 *   Group              "all" (slot 0: every patient) and "cohort-<k>" (slot k + 1: the patients
 *                      [k * SB_GEN_COHORT_SIZE, (k + 1) * SB_GEN_COHORT_SIZE) that exist).
 * Global counts: Organization max(2, patients / 200), Practitioner max(3, patients / 50),
 * Group 1 + ceil(patients / SB_GEN_COHORT_SIZE). Global types ignore `patient`.
 *
 * Deletion: Patient, Organization, Practitioner and Group resources are never deleted (they may be
 * updated), so every subject, performer and group member keeps resolving. Other resources may be
 * deleted; references to a deleted Encounter from its Observations then dangle, as they would on
 * a real server. A deleted resource stays deleted; its deletion counts as one more version. */
enum {
    SB_GEN_ORGANIZATION = 0,
    SB_GEN_PRACTITIONER,
    SB_GEN_PATIENT,
    SB_GEN_ENCOUNTER,
    SB_GEN_OBSERVATION,
    SB_GEN_CONDITION,
    SB_GEN_MEDICATION_REQUEST,
    SB_GEN_ALLERGY_INTOLERANCE,
    SB_GEN_IMMUNIZATION,
    SB_GEN_PROCEDURE,
    SB_GEN_DIAGNOSTIC_REPORT,
    SB_GEN_DOCUMENT_REFERENCE,
    SB_GEN_GROUP,
    SB_GEN_TYPE_COUNT
};

/* created_at used when the config says 0: 2025-01-01T00:00:00Z. A non-zero created_at must lie in
 * [2000-01-01, 2100-01-01) or sb_gen_new() refuses the config. */
#define SB_GEN_DEFAULT_CREATED_AT INT64_C(1735689600)
/* sb_gen_mutate() adds at most this many epochs, then returns 0. */
#define SB_GEN_MAX_EPOCHS 1024u
/* Patients per "cohort-<k>" Group. */
#define SB_GEN_COHORT_SIZE 1000u
/* Patient.identifier system of the medical record number (value: 10 digits, unique). */
#define SB_GEN_MRN_SYSTEM "http://hospital.example.org/fhir/sid/mrn"

/* Like sb_gen_resource() without producing JSON: only fills `meta` (cheap; for _since and
 * _lastUpdated filtering over millions of resources). False on an out-of-range resource. */
bool sb_gen_meta(const sb_gen *gen, size_t type, uint32_t patient, uint32_t slot,
                 sb_resource_meta *meta);

/* Write the id of (type, patient, slot) into buf (NUL-terminated; 40 bytes always suffice).
 * False when out of range or buf is too small (buf then holds ""). */
bool sb_gen_format_id(const sb_gen *gen, size_t type, uint32_t patient, uint32_t slot, char *buf,
                      size_t size);

/* The members of Group slot `slot` are the patients [*first, *first + *count). False when the
 * slot does not exist. */
bool sb_gen_group_members(const sb_gen *gen, uint32_t slot, uint32_t *first, uint32_t *count);

/* Time of an epoch: 0 gives created_at (the initial data), 1..sb_gen_epoch() the time stored by
 * sb_gen_mutate() (never earlier than the previous epoch: a `now` that goes backwards is raised
 * to the previous epoch's time). -1 for an epoch that does not exist. */
int64_t sb_gen_epoch_time(const sb_gen *gen, unsigned epoch);

/* Total slots of `type` over all patients (deleted resources included); O(patients), a few
 * milliseconds for 100,000 patients. 0 for an unknown type. */
uint64_t sb_gen_count(const sb_gen *gen, size_t type);

/* ---- several practices (fhirsync-sandbox --practices) -------------------------------------------
 * Split `total` patients over `practices` practices, skewed like a Zipf distribution: practice i
 * (1-based) has weight 1 / i^skew (skew 0: equal shares). Every practice first gets one patient;
 * the other total - practices are shared in proportion to the weights, each practice getting the
 * whole part of its share and the patients left over going one each to the largest fractional
 * parts (ties: the lower practice number first). The sizes are therefore deterministic, never
 * increase with i, and add up to total exactly. sizes[i - 1] is practice i's. False (sizes
 * untouched) when practices is 0, total < practices, skew is not in [0, 10] or memory runs out. */
bool sb_gen_split_patients(uint32_t total, uint32_t practices, double skew, uint32_t *sizes);

#endif
