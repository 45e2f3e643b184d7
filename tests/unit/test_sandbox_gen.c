/* unit/test_sandbox_gen.c: the sandbox's data generator (src/sandbox/gen.c). Checks that output
 * is deterministic, valid JSON of the right shape, that ids invert and references resolve, that
 * epochs update and delete the expected share of resources (never a Patient), that counts scale
 * linearly, that a 100,000-patient generator costs one small allocation, and how patients are
 * split over the practices of --practices.
 * `test_sandbox_gen --bench` instead prints the generator's throughput for 10^6 resources. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gen.h"
#include "json/json.h"

/* ---- helpers --------------------------------------------------------------------------------- */

static sb_gen *new_gen(uint64_t seed, uint32_t patients)
{
    sb_gen_config cfg = {.seed = seed, .patients = patients, .created_at = 0};
    sb_gen *g = sb_gen_new(&cfg);
    assert_non_null(g);
    return g;
}

/* Generate into a reset buffer; returns the meta. */
static sb_resource_meta gen_one(const sb_gen *g, size_t type, uint32_t p, uint32_t s, fs_buf *b)
{
    sb_resource_meta meta;
    fs_buf_reset(b);
    assert_true(sb_gen_resource(g, type, p, s, b, &meta));
    return meta;
}

static json_t *parse(const fs_buf *b)
{
    json_error_t jerr;
    json_t *doc = json_loadb(b->data, b->len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc)
        fail_msg("invalid JSON (%s at %d): %.300s", jerr.text, jerr.position, b->data);
    assert_true(json_is_object(doc));
    return doc;
}

static bool valid_fhir_id(const char *id)
{
    size_t n = strlen(id);
    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.'))
            return false;
    }
    return true;
}

static uint64_t fnv1a(const char *data, size_t len)
{
    uint64_t h = UINT64_C(14695981039346656037);
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)data[i];
        h *= UINT64_C(1099511628211);
    }
    return h;
}

/* Patients 0..patients-1 and the global resources, every slot, in a fixed order. */
typedef void (*visit_fn)(const sb_gen *g, size_t type, uint32_t p, uint32_t s, void *ctx);

static void visit_all(const sb_gen *g, uint32_t patients, visit_fn fn, void *ctx)
{
    for (size_t t = 0; t < sb_gen_type_count(); t++) {
        if (sb_gen_type_in_patient_compartment(t)) {
            for (uint32_t p = 0; p < patients; p++)
                for (uint32_t s = 0; s < sb_gen_slots(g, t, p); s++)
                    fn(g, t, p, s, ctx);
        } else {
            for (uint32_t s = 0; s < sb_gen_slots(g, t, 0); s++)
                fn(g, t, 0, s, ctx);
        }
    }
}

/* ---- types and configuration ----------------------------------------------------------------- */

static void test_types(void **state)
{
    (void)state;
    static const char *const names[] = {
        "Organization", "Practitioner", "Patient",           "Encounter",
        "Observation",  "Condition",    "MedicationRequest", "AllergyIntolerance",
        "Immunization", "Procedure",    "DiagnosticReport",  "DocumentReference",
        "Group"};
    assert_int_equal(sb_gen_type_count(), SB_GEN_TYPE_COUNT);
    assert_int_equal(sb_gen_type_count(), sizeof(names) / sizeof(names[0]));
    for (size_t i = 0; i < sb_gen_type_count(); i++) {
        assert_string_equal(sb_gen_type_name(i), names[i]);
        assert_int_equal(sb_gen_type_index(names[i]), (int)i);
        bool global = i == SB_GEN_ORGANIZATION || i == SB_GEN_PRACTITIONER || i == SB_GEN_GROUP;
        assert_int_equal(sb_gen_type_in_patient_compartment(i), !global);
    }
    assert_null(sb_gen_type_name(SB_GEN_TYPE_COUNT));
    assert_int_equal(sb_gen_type_index("Claim"), -1);
    assert_int_equal(sb_gen_type_index("patient"), -1);
    assert_int_equal(sb_gen_type_index(NULL), -1);
    assert_false(sb_gen_type_in_patient_compartment(SB_GEN_TYPE_COUNT));
}

static void test_invalid_config(void **state)
{
    (void)state;
    assert_null(sb_gen_new(NULL));
    sb_gen_config zero = {.seed = 1, .patients = 0, .created_at = 0};
    assert_null(sb_gen_new(&zero));
    sb_gen_config old = {.seed = 1, .patients = 10, .created_at = 86400};
    assert_null(sb_gen_new(&old));
    sb_gen_free(NULL);

    sb_gen *g = new_gen(1, 10);
    assert_int_equal(sb_gen_patient_count(g), 10);
    assert_int_equal(sb_gen_epoch_time(g, 0), SB_GEN_DEFAULT_CREATED_AT);
    assert_int_equal(sb_gen_epoch_time(g, 1), -1);
    fs_buf b;
    fs_buf_init(&b);
    sb_resource_meta meta;
    memset(&meta, 0x55, sizeof(meta));
    assert_false(sb_gen_resource(g, SB_GEN_PATIENT, 10, 0, &b, &meta));
    assert_string_equal(meta.id, "");
    assert_int_equal(meta.version, 0);
    assert_false(sb_gen_resource(g, SB_GEN_PATIENT, 0, 1, &b, &meta));
    assert_false(sb_gen_resource(g, SB_GEN_TYPE_COUNT, 0, 0, &b, &meta));
    assert_false(sb_gen_resource(g, SB_GEN_OBSERVATION, 0, sb_gen_slots(g, SB_GEN_OBSERVATION, 0),
                                 &b, &meta));
    assert_int_equal(b.len, 0);
    assert_int_equal(sb_gen_slots(g, SB_GEN_ENCOUNTER, 10), 0);
    assert_int_equal(sb_gen_slots(g, SB_GEN_TYPE_COUNT, 0), 0);
    /* global types ignore the patient */
    assert_int_equal(sb_gen_slots(g, SB_GEN_ORGANIZATION, 12345), 2);
    assert_true(sb_gen_resource(g, SB_GEN_ORGANIZATION, 12345, 1, &b, &meta));
    assert_string_equal(meta.id, "org-1");
    assert_string_equal(meta.patient_id, "");
    fs_buf_free(&b);
    sb_gen_free(g);
}

/* ---- determinism ----------------------------------------------------------------------------- */

typedef struct digest_ctx {
    fs_buf buf;
    uint64_t *hashes;
    size_t count;
    size_t cap;
    size_t bytes;
} digest_ctx;

static void digest_one(const sb_gen *g, size_t t, uint32_t p, uint32_t s, void *ctx)
{
    digest_ctx *d = ctx;
    gen_one(g, t, p, s, &d->buf);
    assert_true(d->count < d->cap);
    d->hashes[d->count++] = fnv1a(d->buf.data, d->buf.len);
    d->bytes += d->buf.len;
}

static void digest(const sb_gen *g, uint32_t patients, digest_ctx *d)
{
    fs_buf_init(&d->buf);
    d->cap = 200000;
    d->count = 0;
    d->bytes = 0;
    d->hashes = calloc(d->cap, sizeof(uint64_t));
    assert_non_null(d->hashes);
    visit_all(g, patients, digest_one, d);
    fs_buf_free(&d->buf);
}

static void test_determinism(void **state)
{
    (void)state;
    sb_gen *a = new_gen(42, 50);
    sb_gen *b = new_gen(42, 50);
    sb_gen *c = new_gen(43, 50);
    digest_ctx da, db, dc;
    digest(a, 50, &da);
    digest(b, 50, &db);
    assert_int_equal(da.count, db.count);
    assert_int_equal(da.bytes, db.bytes);
    assert_memory_equal(da.hashes, db.hashes, da.count * sizeof(uint64_t));

    /* another seed: other slot counts and content; compare the resources both have */
    digest(c, 50, &dc);
    size_t n = da.count < dc.count ? da.count : dc.count, differ = 0;
    for (size_t i = 0; i < n; i++)
        differ += da.hashes[i] != dc.hashes[i];
    assert_true(differ > n * 9 / 10);
    fs_buf x, y;
    fs_buf_init(&x);
    fs_buf_init(&y);
    gen_one(a, SB_GEN_PATIENT, 0, 0, &x);
    gen_one(c, SB_GEN_PATIENT, 0, 0, &y);
    assert_true(x.len != y.len || memcmp(x.data, y.data, x.len) != 0);
    fs_buf_free(&x);
    fs_buf_free(&y);
    free(da.hashes);
    free(db.hashes);
    free(dc.hashes);
    sb_gen_free(a);
    sb_gen_free(b);
    sb_gen_free(c);
}

/* Concurrent readers of one const generator produce the same bytes as a single thread. */
typedef struct thread_job {
    const sb_gen *g;
    digest_ctx d;
} thread_job;

static void *thread_main(void *arg)
{
    thread_job *job = arg;
    digest(job->g, 40, &job->d);
    return NULL;
}

static void test_concurrent_readers(void **state)
{
    (void)state;
    sb_gen *g = new_gen(9, 40);
    sb_gen_mutate(g, 0.2, 0.05, SB_GEN_DEFAULT_CREATED_AT + 60);
    thread_job jobs[3];
    pthread_t threads[3];
    for (int i = 0; i < 3; i++) {
        jobs[i].g = g;
        assert_int_equal(pthread_create(&threads[i], NULL, thread_main, &jobs[i]), 0);
    }
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    for (int i = 1; i < 3; i++) {
        assert_int_equal(jobs[i].d.count, jobs[0].d.count);
        assert_memory_equal(jobs[i].d.hashes, jobs[0].d.hashes, jobs[0].d.count * sizeof(uint64_t));
    }
    for (int i = 0; i < 3; i++)
        free(jobs[i].d.hashes);
    sb_gen_free(g);
}

/* ---- shape ----------------------------------------------------------------------------------- */

/* Every date-like string under these keys must parse and lie before created_at. */
static void check_times(const json_t *v, int64_t created_at, int *checked)
{
    static const char *const keys[] = {"effectiveDateTime",
                                       "onsetDateTime",
                                       "abatementDateTime",
                                       "recordedDate",
                                       "authoredOn",
                                       "occurrenceDateTime",
                                       "issued",
                                       "start",
                                       "end",
                                       "date",
                                       "creation"};
    if (json_is_array(v)) {
        size_t i;
        json_t *item;
        json_array_foreach (v, i, item)
            check_times(item, created_at, checked);
        return;
    }
    if (!json_is_object(v))
        return;
    const char *key;
    json_t *member;
    json_object_foreach ((json_t *)v, key, member) {
        for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
            if (strcmp(key, keys[k]) != 0)
                continue;
            assert_true(json_is_string(member));
            int64_t t;
            if (!fs_parse_instant(json_string_value(member), &t))
                fail_msg("%s: unparsable %s", key, json_string_value(member));
            assert_true(t < created_at);
            (*checked)++;
        }
        check_times(member, created_at, checked);
    }
}

typedef struct shape_ctx {
    fs_buf buf;
    size_t per_type[SB_GEN_TYPE_COUNT];
    int times_checked;
    size_t max_len[SB_GEN_TYPE_COUNT];
    size_t total_len[SB_GEN_TYPE_COUNT];
} shape_ctx;

static void check_shape(const sb_gen *g, size_t t, uint32_t p, uint32_t s, void *ctx)
{
    shape_ctx *sc = ctx;
    sb_resource_meta meta = gen_one(g, t, p, s, &sc->buf);
    assert_int_equal(strlen(sc->buf.data), sc->buf.len);  /* no NUL inside */
    assert_null(memchr(sc->buf.data, '\n', sc->buf.len)); /* one line */
    assert_true(sc->buf.data[sc->buf.len - 1] == '}');
    json_t *doc = parse(&sc->buf);
    assert_string_equal(fs_json_str(doc, "resourceType"), sb_gen_type_name(t));
    assert_string_equal(fs_json_str(doc, "id"), meta.id);
    assert_true(valid_fhir_id(meta.id));
    json_t *m = json_object_get(doc, "meta");
    assert_true(json_is_object(m));
    assert_string_equal(fs_json_str(m, "versionId"), "1");
    int64_t lu;
    assert_true(fs_parse_instant(fs_json_str(m, "lastUpdated"), &lu));
    assert_int_equal(lu, meta.last_updated);
    assert_int_equal(lu, sb_gen_epoch_time(g, 0));
    assert_int_equal(meta.version, 1);
    assert_false(meta.deleted);
    json_t *profile = json_object_get(m, "profile");
    if (t == SB_GEN_GROUP) {
        assert_null(profile);
    } else {
        assert_true(json_is_array(profile) && json_array_size(profile) == 1);
        assert_true(fs_starts_with(json_string_value(json_array_get(profile, 0)),
                                   "http://hl7.org/fhir/us/core/StructureDefinition/us-core-"));
    }
    if (sb_gen_type_in_patient_compartment(t)) {
        char pid[64];
        sb_gen_patient_id(g, p, pid, sizeof(pid));
        assert_string_equal(meta.patient_id, pid);
    } else {
        assert_string_equal(meta.patient_id, "");
    }

    /* type-specific shape */
    if (t == SB_GEN_PATIENT) {
        assert_non_null(fs_json_str(doc, "gender"));
        assert_non_null(fs_json_str(doc, "birthDate"));
        json_t *ident = json_array_get(json_object_get(doc, "identifier"), 0);
        assert_string_equal(fs_json_str(ident, "system"), SB_GEN_MRN_SYSTEM);
        assert_int_equal(strlen(fs_json_str(ident, "value")), 10);
        json_t *ext = json_object_get(doc, "extension");
        assert_true(json_array_size(ext) == 3);
        assert_string_equal(fs_json_str(json_array_get(ext, 0), "url"),
                            "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race");
        json_t *name = json_array_get(json_object_get(doc, "name"), 0);
        assert_non_null(fs_json_str(name, "family"));
        assert_true(json_array_size(json_object_get(doc, "telecom")) >= 1);
        assert_true(json_array_size(json_object_get(doc, "address")) == 1);
    } else if (t == SB_GEN_OBSERVATION) {
        assert_string_equal(fs_json_str(doc, "status"), "final");
        json_t *vq = json_object_get(doc, "valueQuantity");
        json_t *comp = json_object_get(doc, "component");
        assert_true((vq != NULL) != (comp != NULL));
        if (comp) {
            assert_int_equal(json_array_size(comp), 2);
            vq = json_object_get(json_array_get(comp, 0), "valueQuantity");
        }
        assert_true(json_is_number(json_object_get(vq, "value")));
        assert_string_equal(fs_json_str(vq, "system"), "http://unitsofmeasure.org");
        assert_string_equal(fs_json_str(vq, "unit"), fs_json_str(vq, "code"));
        const char *category = fs_json_str(
            json_array_get(
                json_object_get(json_array_get(json_object_get(doc, "category"), 0), "coding"), 0),
            "code");
        assert_true(fs_streq(category, "vital-signs") || fs_streq(category, "laboratory"));
    } else if (t == SB_GEN_DOCUMENT_REFERENCE) {
        json_t *att =
            json_object_get(json_array_get(json_object_get(doc, "content"), 0), "attachment");
        assert_string_equal(fs_json_str(att, "contentType"), "text/plain");
        int64_t size;
        assert_true(fs_json_int(att, "size", &size));
        assert_int_equal(strlen(fs_json_str(att, "data")), (size_t)(size + 2) / 3 * 4);
    } else if (t == SB_GEN_GROUP) {
        uint32_t first, count;
        assert_true(sb_gen_group_members(g, s, &first, &count));
        json_t *members = json_object_get(doc, "member");
        assert_int_equal(json_array_size(members), count);
        int64_t quantity;
        assert_true(fs_json_int(doc, "quantity", &quantity));
        assert_int_equal(quantity, count);
    }
    if (sb_gen_type_in_patient_compartment(t))
        check_times(doc, sb_gen_epoch_time(g, 0), &sc->times_checked);
    sc->per_type[t]++;
    sc->total_len[t] += sc->buf.len;
    if (sc->buf.len > sc->max_len[t])
        sc->max_len[t] = sc->buf.len;
    json_decref(doc);
}

static void test_json_shape(void **state)
{
    (void)state;
    sb_gen *g = new_gen(2026, 30);
    shape_ctx sc;
    memset(&sc, 0, sizeof(sc));
    fs_buf_init(&sc.buf);
    visit_all(g, 30, check_shape, &sc);
    for (size_t t = 0; t < SB_GEN_TYPE_COUNT; t++) {
        if (t != SB_GEN_ALLERGY_INTOLERANCE) /* may legitimately be 0 for a few patients */
            assert_true(sc.per_type[t] > 0);
        if (getenv("SB_GEN_SIZES") && sc.per_type[t])
            printf("%-20s n=%5zu avg=%5zu max=%6zu bytes\n", sb_gen_type_name(t), sc.per_type[t],
                   sc.total_len[t] / sc.per_type[t], sc.max_len[t]);
    }
    assert_true(sc.per_type[SB_GEN_ALLERGY_INTOLERANCE] > 0);
    assert_int_equal(sc.per_type[SB_GEN_PATIENT], 30);
    assert_int_equal(sc.per_type[SB_GEN_GROUP], 2); /* "all" and "cohort-0" */
    assert_true(sc.times_checked > 1000);
    fs_buf_free(&sc.buf);
    sb_gen_free(g);
}

/* ---- ids ---------------------------------------------------------------------------------------
 */

static void roundtrip_one(const sb_gen *g, size_t t, uint32_t p, uint32_t s, void *ctx)
{
    (void)ctx;
    sb_resource_meta meta;
    assert_true(sb_gen_meta(g, t, p, s, &meta));
    char id[40];
    assert_true(sb_gen_format_id(g, t, p, s, id, sizeof(id)));
    assert_string_equal(id, meta.id);
    assert_true(valid_fhir_id(id));
    uint32_t pp = 99, ss = 99;
    assert_true(sb_gen_parse_id(g, t, id, &pp, &ss));
    assert_int_equal(pp, sb_gen_type_in_patient_compartment(t) ? p : 0);
    assert_int_equal(ss, s);
    /* the same id under another type is foreign */
    size_t other = (t + 1) % SB_GEN_TYPE_COUNT;
    assert_false(sb_gen_parse_id(g, other, id, &pp, &ss));
}

static void test_ids(void **state)
{
    (void)state;
    sb_gen *g = new_gen(5, 1500);
    visit_all(g, 12, roundtrip_one, NULL);
    roundtrip_one(g, SB_GEN_OBSERVATION, 1499, sb_gen_slots(g, SB_GEN_OBSERVATION, 1499) - 1, NULL);
    roundtrip_one(g, SB_GEN_GROUP, 0, 2, NULL);

    uint32_t p, s;
    assert_true(sb_gen_parse_id(g, SB_GEN_GROUP, "all", &p, &s));
    assert_int_equal(s, 0);
    assert_true(sb_gen_parse_id(g, SB_GEN_GROUP, "cohort-1", &p, &s));
    assert_int_equal(s, 2);
    assert_true(sb_gen_parse_id(g, SB_GEN_PATIENT, "pat-1499", &p, &s));
    assert_int_equal(p, 1499);
    assert_true(sb_gen_parse_id(g, SB_GEN_OBSERVATION, "obs-7-0", &p, &s));
    assert_int_equal(p, 7);
    assert_int_equal(s, 0);

    static const struct {
        size_t type;
        const char *id;
    } foreign[] = {
        {SB_GEN_GROUP, "cohort-2"},
        {SB_GEN_GROUP, "cohort-"},
        {SB_GEN_GROUP, "All"},
        {SB_GEN_GROUP, "cohort-01"},
        {SB_GEN_PATIENT, "pat-1500"},
        {SB_GEN_PATIENT, "pat-01"},
        {SB_GEN_PATIENT, "pat-1-0"},
        {SB_GEN_PATIENT, "pat-"},
        {SB_GEN_PATIENT, ""},
        {SB_GEN_PATIENT, "pat--1"},
        {SB_GEN_PATIENT, "pat-+1"},
        {SB_GEN_PATIENT, "pat-1 "},
        {SB_GEN_OBSERVATION, "obs-1"},
        {SB_GEN_OBSERVATION, "obs-1-"},
        {SB_GEN_OBSERVATION, "obs-1-2-3"},
        {SB_GEN_OBSERVATION, "obs-1-99999"},
        {SB_GEN_OBSERVATION, "Obs-1-2"},
        {SB_GEN_OBSERVATION, "obs-4294967296-1"},
        {SB_GEN_OBSERVATION, "obs-1-02"},
        {SB_GEN_ORGANIZATION, "org-7"},
        {SB_GEN_ORGANIZATION, "org-0-0"},
        {SB_GEN_PRACTITIONER, "prac-30"},
        {SB_GEN_ENCOUNTER, "0b5fbe0c-7471-488e-9696-2748143c7320"},
    };
    for (size_t i = 0; i < sizeof(foreign) / sizeof(foreign[0]); i++) {
        p = s = 77;
        if (sb_gen_parse_id(g, foreign[i].type, foreign[i].id, &p, &s))
            fail_msg("accepted foreign id \"%s\"", foreign[i].id);
        assert_int_equal(p, 0);
        assert_int_equal(s, 0);
    }
    assert_false(sb_gen_parse_id(g, SB_GEN_PATIENT, NULL, &p, &s));
    assert_false(sb_gen_parse_id(g, SB_GEN_TYPE_COUNT, "pat-1", &p, &s));

    char small[4];
    assert_false(sb_gen_format_id(g, SB_GEN_PATIENT, 1234, 0, small, sizeof(small)));
    assert_string_equal(small, "");
    sb_gen_patient_id(g, 42, small, sizeof(small));
    assert_string_equal(small, "pat");
    char big[64];
    sb_gen_patient_id(g, 42, big, sizeof(big));
    assert_string_equal(big, "pat-42");
    sb_gen_free(g);
}

/* ---- references ------------------------------------------------------------------------------ */

typedef struct ref_ctx {
    fs_buf buf;
    fs_buf target;
    const sb_gen *g;
    size_t type;
    uint32_t patient;
    size_t refs;
} ref_ctx;

static void check_reference(ref_ctx *rc, const char *reference)
{
    const char *slash = strchr(reference, '/');
    assert_non_null(slash);
    char type_name[40];
    size_t n = (size_t)(slash - reference);
    assert_true(n < sizeof(type_name));
    memcpy(type_name, reference, n);
    type_name[n] = '\0';
    int t = sb_gen_type_index(type_name);
    if (t < 0)
        fail_msg("reference to an unknown type: %s", reference);
    uint32_t p, s;
    if (!sb_gen_parse_id(rc->g, (size_t)t, slash + 1, &p, &s))
        fail_msg("dangling reference %s", reference);
    /* patient-compartment data only points into its own patient's compartment */
    if (sb_gen_type_in_patient_compartment(rc->type) &&
        sb_gen_type_in_patient_compartment((size_t)t))
        assert_int_equal(p, rc->patient);
    rc->refs++;
}

static void walk_references(ref_ctx *rc, const json_t *v)
{
    if (json_is_array(v)) {
        size_t i;
        json_t *item;
        json_array_foreach (v, i, item)
            walk_references(rc, item);
    } else if (json_is_object(v)) {
        const char *key;
        json_t *member;
        json_object_foreach ((json_t *)v, key, member) {
            if (strcmp(key, "reference") == 0) {
                assert_true(json_is_string(member));
                check_reference(rc, json_string_value(member));
            } else {
                walk_references(rc, member);
            }
        }
    }
}

static const char *ref_of(const json_t *doc, const char *key)
{
    return fs_json_str(json_object_get(doc, key), "reference");
}

static void check_refs_one(const sb_gen *g, size_t t, uint32_t p, uint32_t s, void *ctx)
{
    ref_ctx *rc = ctx;
    rc->type = t;
    rc->patient = p;
    gen_one(g, t, p, s, &rc->buf);
    json_t *doc = parse(&rc->buf);
    walk_references(rc, doc);
    if (sb_gen_type_in_patient_compartment(t) && t != SB_GEN_PATIENT) {
        char expected[64];
        snprintf(expected, sizeof(expected), "Patient/pat-%u", p);
        const char *subject =
            ref_of(doc, "subject") ? ref_of(doc, "subject") : ref_of(doc, "patient");
        assert_non_null(subject);
        assert_string_equal(subject, expected);
    }
    if (t == SB_GEN_DIAGNOSTIC_REPORT) {
        /* results are laboratory Observations of the same encounter */
        json_t *results = json_object_get(doc, "result");
        assert_true(json_array_size(results) >= 1);
        size_t i;
        json_t *item;
        json_array_foreach (results, i, item) {
            uint32_t op, os;
            const char *ref = fs_json_str(item, "reference");
            assert_true(fs_starts_with(ref, "Observation/"));
            assert_true(sb_gen_parse_id(g, SB_GEN_OBSERVATION, ref + 12, &op, &os));
            gen_one(g, SB_GEN_OBSERVATION, op, os, &rc->target);
            json_t *obs = parse(&rc->target);
            assert_string_equal(ref_of(obs, "encounter"), ref_of(doc, "encounter"));
            assert_non_null(strstr(rc->target.data, "\"code\":\"laboratory\""));
            assert_string_equal(fs_json_str(obs, "effectiveDateTime"),
                                fs_json_str(doc, "effectiveDateTime"));
            json_decref(obs);
        }
    }
    json_decref(doc);
}

static void test_references(void **state)
{
    (void)state;
    sb_gen *g = new_gen(77, 400);
    ref_ctx rc;
    memset(&rc, 0, sizeof(rc));
    fs_buf_init(&rc.buf);
    fs_buf_init(&rc.target);
    rc.g = g;
    visit_all(g, 25, check_refs_one, &rc);
    /* and a few patients at the far end */
    for (uint32_t p = 390; p < 400; p++)
        for (size_t t = SB_GEN_PATIENT; t <= SB_GEN_DOCUMENT_REFERENCE; t++)
            for (uint32_t s = 0; s < sb_gen_slots(g, t, p); s++)
                check_refs_one(g, t, p, s, &rc);
    printf("%zu references checked\n", rc.refs);
    assert_true(rc.refs > 8000);
    fs_buf_free(&rc.buf);
    fs_buf_free(&rc.target);
    sb_gen_free(g);
}

/* ---- change over time ------------------------------------------------------------------------ */

typedef struct tracked {
    size_t type;
    uint32_t patient;
    uint32_t slot;
    uint64_t hash; /* of the JSON at the last look */
    uint32_t version;
    bool deleted;
    int64_t deleted_at;
} tracked;

static void test_mutate(void **state)
{
    (void)state;
    sb_gen *g = new_gen(11, 300);
    const int64_t t0 = SB_GEN_DEFAULT_CREATED_AT;
    fs_buf b;
    fs_buf_init(&b);

    /* 10,000 deletable resources, plus every Patient */
    enum { N = 10000 };
    tracked *items = calloc(N + 300, sizeof(*items));
    assert_non_null(items);
    size_t n = 0;
    for (uint32_t p = 0; p < 300 && n < N; p++)
        for (size_t t = SB_GEN_ENCOUNTER; t <= SB_GEN_DOCUMENT_REFERENCE && n < N; t++)
            for (uint32_t s = 0; s < sb_gen_slots(g, t, p) && n < N; s++)
                items[n++] = (tracked){t, p, s, 0, 1, false, 0};
    assert_int_equal(n, N);
    for (uint32_t p = 0; p < 300; p++)
        items[n++] = (tracked){SB_GEN_PATIENT, p, 0, 0, 1, false, 0};
    for (size_t i = 0; i < n; i++) {
        gen_one(g, items[i].type, items[i].patient, items[i].slot, &b);
        items[i].hash = fnv1a(b.data, b.len);
    }

    const int64_t t1 = t0 + 3600, t2 = t0 + 7200;
    const double update[2] = {0.10, 0.05}, del[2] = {0.02, 0.01};
    const int64_t when[2] = {t1, t2};
    for (unsigned e = 1; e <= 2; e++) {
        assert_int_equal(sb_gen_mutate(g, update[e - 1], del[e - 1], when[e - 1]), e);
        assert_int_equal(sb_gen_epoch(g), e);
        assert_int_equal(sb_gen_epoch_time(g, e), when[e - 1]);
        size_t updated = 0, deleted = 0, patients_updated = 0;
        for (size_t i = 0; i < n; i++) {
            tracked *it = &items[i];
            sb_resource_meta meta;
            fs_buf_reset(&b);
            fs_buf_append_str(&b, "sentinel");
            assert_true(sb_gen_resource(g, it->type, it->patient, it->slot, &b, &meta));
            if (it->deleted) {
                /* deletion is final */
                assert_true(meta.deleted);
                assert_int_equal(meta.deleted_at, it->deleted_at);
                assert_int_equal(meta.version, it->version);
                assert_int_equal(b.len, 8);
                continue;
            }
            if (meta.deleted) {
                assert_int_not_equal(it->type, SB_GEN_PATIENT);
                assert_int_equal(meta.deleted_at, when[e - 1]);
                assert_int_equal(meta.last_updated, when[e - 1]);
                assert_int_equal(meta.version, it->version + 1);
                assert_int_equal(b.len, 8); /* no JSON for a deleted resource */
                assert_string_equal(b.data, "sentinel");
                it->deleted = true;
                it->deleted_at = meta.deleted_at;
                it->version = meta.version;
                deleted++;
                continue;
            }
            assert_true(b.len > 8);
            fs_buf body = {.data = b.data + 8, .len = b.len - 8, .cap = 0};
            uint64_t h = fnv1a(body.data, body.len);
            json_t *doc = parse(&body);
            int64_t lu;
            assert_true(
                fs_parse_instant(fs_json_str(json_object_get(doc, "meta"), "lastUpdated"), &lu));
            assert_int_equal(lu, meta.last_updated);
            char version[16];
            snprintf(version, sizeof(version), "%u", meta.version);
            assert_string_equal(fs_json_str(json_object_get(doc, "meta"), "versionId"), version);
            json_decref(doc);
            if (meta.version == it->version) {
                /* untouched: the same bytes as before */
                assert_int_equal(h, it->hash);
                assert_true(meta.last_updated < when[e - 1]);
            } else {
                assert_int_equal(meta.version, it->version + 1);
                assert_int_equal(meta.last_updated, when[e - 1]);
                assert_true(h != it->hash); /* the content changed visibly */
                if (it->type == SB_GEN_PATIENT)
                    patients_updated++;
                else
                    updated++;
            }
            it->version = meta.version;
            it->hash = h;
        }
        /* the shares are near the fractions (binomial, N = 10,000: 5 sigma bounds) */
        double live = N;
        double want_del = live * del[e - 1], want_upd = live * update[e - 1];
        if (e == 2) {
            want_del = (N - 200.0) * del[1];
            want_upd = (N - 200.0) * update[1];
        }
        printf("epoch %u: %zu updated (want ~%.0f), %zu deleted (want ~%.0f), %zu of 300 "
               "patients updated\n",
               e, updated, want_upd, deleted, want_del, patients_updated);
        assert_true(updated > want_upd * 0.8 && updated < want_upd * 1.2);
        assert_true(deleted > want_del * 0.6 && deleted < want_del * 1.4);
        assert_true(patients_updated > 0);
    }

    /* time never goes backwards */
    assert_int_equal(sb_gen_mutate(g, 0, 0, t0), 3);
    assert_int_equal(sb_gen_epoch_time(g, 3), t2);

    /* deleting everything deletes no Patient, Organization, Practitioner or Group */
    assert_int_equal(sb_gen_mutate(g, 0.0, 1.0, t2 + 60), 4);
    for (size_t t = 0; t < SB_GEN_TYPE_COUNT; t++) {
        sb_resource_meta meta;
        bool keep = t == SB_GEN_PATIENT || t == SB_GEN_ORGANIZATION || t == SB_GEN_PRACTITIONER ||
                    t == SB_GEN_GROUP;
        for (uint32_t p = 0; p < 300; p += 37) {
            assert_true(sb_gen_meta(g, t, p, 0, &meta) || sb_gen_slots(g, t, p) == 0);
            if (sb_gen_slots(g, t, p) > 0)
                assert_int_equal(meta.deleted, !keep);
        }
    }
    /* out-of-range fractions are clamped; NaN counts as 0 */
    assert_int_equal(sb_gen_mutate(g, 7.0, -1.0, t2 + 120), 5);
    sb_resource_meta meta;
    assert_true(sb_gen_meta(g, SB_GEN_PATIENT, 3, 0, &meta));
    assert_int_equal(meta.last_updated, t2 + 120); /* update fraction 1: everything updated */
    assert_int_equal(sb_gen_mutate(g, NAN, 0.0, t2 + 180), 6);
    free(items);
    fs_buf_free(&b);
    sb_gen_free(g);
}

static void test_epoch_cap(void **state)
{
    (void)state;
    sb_gen *g = new_gen(3, 5);
    for (unsigned e = 1; e <= SB_GEN_MAX_EPOCHS; e++)
        assert_int_equal(sb_gen_mutate(g, 0.01, 0.001, SB_GEN_DEFAULT_CREATED_AT + e), e);
    assert_int_equal(sb_gen_mutate(g, 0.01, 0.001, SB_GEN_DEFAULT_CREATED_AT + 5000), 0);
    assert_int_equal(sb_gen_epoch(g), SB_GEN_MAX_EPOCHS);
    fs_buf b;
    fs_buf_init(&b);
    sb_resource_meta meta = gen_one(g, SB_GEN_PATIENT, 4, 0, &b);
    assert_true(meta.version > 1); /* ~1% per epoch over 1024 epochs */
    json_t *doc = parse(&b);
    json_decref(doc);
    fs_buf_free(&b);
    sb_gen_free(g);
}

/* ---- scale ----------------------------------------------------------------------------------- */

static void test_counts_scale(void **state)
{
    (void)state;
    sb_gen *small = new_gen(8, 100);
    sb_gen *large = new_gen(8, 1000);
    uint64_t total_small = 0, total_large = 0;
    for (size_t t = 0; t < SB_GEN_TYPE_COUNT; t++) {
        if (!sb_gen_type_in_patient_compartment(t))
            continue;
        uint64_t manual = 0;
        for (uint32_t p = 0; p < 100; p++)
            manual += sb_gen_slots(small, t, p);
        assert_int_equal(sb_gen_count(small, t), manual);
        total_small += sb_gen_count(small, t);
        total_large += sb_gen_count(large, t);
        if (getenv("SB_GEN_SIZES"))
            printf("%-20s %.2f per patient\n", sb_gen_type_name(t),
                   (double)sb_gen_count(large, t) / 1000.0);
    }
    double ratio = (double)total_large / (double)total_small;
    printf("resources: %llu for 100 patients, %llu for 1000 (ratio %.2f)\n",
           (unsigned long long)total_small, (unsigned long long)total_large, ratio);
    assert_true(ratio > 9.0 && ratio < 11.0);
    assert_true(total_large > 90 * 1000 && total_large < 112 * 1000);
    assert_int_equal(sb_gen_count(small, SB_GEN_PATIENT), 100);
    assert_int_equal(sb_gen_count(small, SB_GEN_ORGANIZATION), 2);
    assert_int_equal(sb_gen_count(large, SB_GEN_ORGANIZATION), 5);
    assert_int_equal(sb_gen_count(small, SB_GEN_PRACTITIONER), 3);
    assert_int_equal(sb_gen_count(large, SB_GEN_PRACTITIONER), 20);
    assert_int_equal(sb_gen_count(large, SB_GEN_GROUP), 2);
    assert_int_equal(sb_gen_count(large, SB_GEN_TYPE_COUNT), 0);
    sb_gen_free(small);
    sb_gen_free(large);
}

static void test_large_population(void **state)
{
    (void)state;
    sb_gen_config cfg = {.seed = 1, .patients = 100000, .created_at = 1767225600};
    fs_alloc_fail_at(0);
    sb_gen *g = sb_gen_new(&cfg);
    assert_non_null(g);
    assert_int_equal(fs_alloc_fail_at(0), 1); /* one allocation, independent of the size */
    assert_int_equal(sb_gen_epoch_time(g, 0), 1767225600);
    assert_int_equal(sb_gen_slots(g, SB_GEN_ORGANIZATION, 0), 500);
    assert_int_equal(sb_gen_slots(g, SB_GEN_PRACTITIONER, 0), 2000);
    assert_int_equal(sb_gen_slots(g, SB_GEN_GROUP, 0), 101);

    fs_buf b;
    fs_buf_init(&b);
    uint32_t last = 99999;
    uint32_t slots = sb_gen_slots(g, SB_GEN_OBSERVATION, last);
    sb_resource_meta meta = gen_one(g, SB_GEN_OBSERVATION, last, slots - 1, &b);
    char expected[40];
    snprintf(expected, sizeof(expected), "obs-99999-%u", slots - 1);
    assert_string_equal(meta.id, expected);
    assert_string_equal(meta.patient_id, "pat-99999");
    json_t *doc = parse(&b);
    json_decref(doc);

    /* the "all" group streams 100,000 members */
    meta = gen_one(g, SB_GEN_GROUP, 0, 0, &b);
    assert_string_equal(meta.id, "all");
    doc = parse(&b);
    json_t *members = json_object_get(doc, "member");
    assert_int_equal(json_array_size(members), 100000);
    assert_string_equal(
        fs_json_str(json_object_get(json_array_get(members, 99999), "entity"), "reference"),
        "Patient/pat-99999");
    json_decref(doc);

    uint32_t first, count, p, s;
    assert_true(sb_gen_group_members(g, 100, &first, &count));
    assert_int_equal(first, 99000);
    assert_int_equal(count, 1000);
    assert_false(sb_gen_group_members(g, 101, &first, &count));
    assert_true(sb_gen_parse_id(g, SB_GEN_GROUP, "cohort-99", &p, &s));
    assert_int_equal(s, 100);
    assert_false(sb_gen_parse_id(g, SB_GEN_GROUP, "cohort-100", &p, &s));
    meta = gen_one(g, SB_GEN_GROUP, 0, 100, &b);
    assert_string_equal(meta.id, "cohort-99");
    fs_buf_free(&b);
    sb_gen_free(g);

    /* the largest population: ten-digit patient numbers in ids and cohort members */
    sb_gen_config huge_cfg = {.seed = 2, .patients = UINT32_MAX, .created_at = 0};
    sb_gen *huge = sb_gen_new(&huge_cfg);
    assert_non_null(huge);
    uint32_t last_cohort = sb_gen_slots(huge, SB_GEN_GROUP, 0) - 1;
    fs_buf_init(&b);
    meta = gen_one(huge, SB_GEN_GROUP, 0, last_cohort, &b);
    assert_string_equal(meta.id, "cohort-4294967");
    doc = parse(&b);
    members = json_object_get(doc, "member");
    assert_int_equal(json_array_size(members), UINT32_MAX % SB_GEN_COHORT_SIZE);
    assert_string_equal(
        fs_json_str(
            json_object_get(json_array_get(members, json_array_size(members) - 1), "entity"),
            "reference"),
        "Patient/pat-4294967294");
    json_decref(doc);
    slots = sb_gen_slots(huge, SB_GEN_DIAGNOSTIC_REPORT, UINT32_MAX - 1);
    meta = gen_one(huge, SB_GEN_DIAGNOSTIC_REPORT, UINT32_MAX - 1, slots - 1, &b);
    assert_true(sb_gen_parse_id(huge, SB_GEN_DIAGNOSTIC_REPORT, meta.id, &p, &s));
    assert_int_equal(p, UINT32_MAX - 1);
    doc = parse(&b);
    json_decref(doc);
    fs_buf_free(&b);
    sb_gen_free(huge);

    /* a last cohort that is not full */
    sb_gen *h = new_gen(1, 2500);
    assert_true(sb_gen_group_members(h, 3, &first, &count));
    assert_int_equal(first, 2000);
    assert_int_equal(count, 500);
    sb_gen_free(h);
}

/* ---- out of memory --------------------------------------------------------------------------- */

static void test_out_of_memory(void **state)
{
    (void)state;
    sb_gen_config cfg = {.seed = 1, .patients = 5000, .created_at = 0};
    fs_alloc_fail_at(1);
    assert_null(sb_gen_new(&cfg));
    fs_alloc_fail_at(0);
    sb_gen *g = new_gen(1, 5000);

    fs_buf b;
    fs_buf_init(&b);
    sb_resource_meta meta;
    fs_alloc_fail_at(1);
    assert_false(sb_gen_resource(g, SB_GEN_PATIENT, 0, 0, &b, &meta));
    assert_true(fs_alloc_failure_fired());
    assert_int_equal(b.len, 0);

    /* a failure in the middle of a large resource leaves the earlier content intact */
    fs_alloc_fail_at(0);
    assert_true(fs_buf_append_str(&b, "kept"));
    for (unsigned long nth = 1; nth < 20; nth++) {
        fs_alloc_fail_at(nth);
        bool ok = sb_gen_resource(g, SB_GEN_GROUP, 0, 0, &b, &meta);
        bool fired = fs_alloc_failure_fired();
        fs_alloc_fail_at(0);
        if (!fired) {
            assert_true(ok);
            break;
        }
        assert_false(ok);
        assert_int_equal(b.len, 4);
        assert_string_equal(b.data, "kept");
    }
    fs_buf_free(&b);
    sb_gen_free(g);
}

/* ---- benchmark ------------------------------------------------------------------------------- */

static double seconds_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* Generate `target` resources patient by patient (as a Patient-level export would) and print the
 * rate; meta_only measures sb_gen_meta() instead. */
static void bench_run(const sb_gen *g, const char *label, uint64_t target, bool meta_only)
{
    fs_buf b;
    fs_buf_init(&b);
    uint64_t produced = 0, bytes = 0;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (uint32_t p = 0; p < sb_gen_patient_count(g) && produced < target; p++) {
        for (size_t t = SB_GEN_PATIENT; t <= SB_GEN_DOCUMENT_REFERENCE && produced < target; t++) {
            uint32_t slots = sb_gen_slots(g, t, p);
            for (uint32_t s = 0; s < slots && produced < target; s++) {
                sb_resource_meta meta;
                if (meta_only) {
                    sb_gen_meta(g, t, p, s, &meta);
                } else {
                    fs_buf_reset(&b);
                    if (!sb_gen_resource(g, t, p, s, &b, &meta)) {
                        fprintf(stderr, "bench: generation failed\n");
                        exit(1);
                    }
                    bytes += b.len;
                }
                produced++;
            }
        }
    }
    double elapsed = seconds_since(&start);
    printf("%-34s %8llu resources %8.1f MB %6.3f s  %9.0f resources/s  %7.1f MB/s\n", label,
           (unsigned long long)produced, (double)bytes / 1e6, elapsed, (double)produced / elapsed,
           (double)bytes / 1e6 / elapsed);
    fs_buf_free(&b);
}

static int bench(void)
{
    const uint64_t target = 1000000;
    sb_gen_config cfg = {.seed = 42, .patients = 100000, .created_at = 0};
    sb_gen *g = sb_gen_new(&cfg);
    if (!g)
        return 1;
    printf("sb_gen bench: 100,000 patients, %llu resources, single thread\n",
           (unsigned long long)target);
    uint64_t total = 0;
    for (size_t t = 0; t < SB_GEN_TYPE_COUNT; t++) {
        uint64_t n = sb_gen_count(g, t);
        total += n;
        printf("  %-20s %9llu  (%.2f per patient)\n", sb_gen_type_name(t), (unsigned long long)n,
               (double)n / cfg.patients);
    }
    printf("  %-20s %9llu  (%.2f per patient)\n", "total", (unsigned long long)total,
           (double)total / cfg.patients);
    bench_run(g, "resources (epoch 0)", target, false);
    bench_run(g, "meta only (epoch 0)", target, true);
    for (unsigned e = 1; e <= 10; e++)
        sb_gen_mutate(g, 0.05, 0.01, SB_GEN_DEFAULT_CREATED_AT + e * 3600);
    bench_run(g, "resources (10 epochs)", target, false);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    fs_buf b;
    fs_buf_init(&b);
    sb_resource_meta meta;
    sb_gen_resource(g, SB_GEN_GROUP, 0, 0, &b, &meta);
    printf("Group/all: %u members, %.1f MB in %.3f s\n", cfg.patients, (double)b.len / 1e6,
           seconds_since(&start));
    fs_buf_free(&b);
    sb_gen_free(g);
    return 0;
}

/* Patients split over practices (--practices): exact total, at least one each, never increasing,
 * deterministic; the worked example of gen.h's rule; the benchmark's shape is skewed. */
static void test_split_patients(void **state)
{
    (void)state;
    uint32_t small[3];
    assert_true(sb_gen_split_patients(10, 3, 1.0, small));
    /* shares of 7: 3.82, 1.91, 1.27 -> 3, 1, 1 and the two left over to .91 then .82 */
    assert_int_equal(small[0], 5);
    assert_int_equal(small[1], 3);
    assert_int_equal(small[2], 2);
    uint32_t equal[4];
    assert_true(sb_gen_split_patients(10, 4, 0.0, equal)); /* 1 + 1.5 each: .5 ties, low first */
    assert_int_equal(equal[0], 3);
    assert_int_equal(equal[1], 3);
    assert_int_equal(equal[2], 2);
    assert_int_equal(equal[3], 2);
    uint32_t one[1];
    assert_true(sb_gen_split_patients(7, 1, 1.0, one));
    assert_int_equal(one[0], 7);

    enum { N = 500 };
    static uint32_t sizes[N], again[N];
    assert_true(sb_gen_split_patients(10000, N, 1.0, sizes));
    assert_true(sb_gen_split_patients(10000, N, 1.0, again));
    assert_memory_equal(sizes, again, sizeof sizes);
    uint64_t sum = 0, top10 = 0;
    unsigned tiny = 0;
    for (unsigned i = 0; i < N; i++) {
        assert_true(sizes[i] >= 1);
        if (i > 0)
            assert_true(sizes[i] <= sizes[i - 1]);
        sum += sizes[i];
        top10 += i < 10 ? sizes[i] : 0;
        tiny += sizes[i] <= 10;
    }
    assert_int_equal(sum, 10000);
    /* 9,500 / H(500) = 1398.5 for the first practice, plus its one */
    assert_true(sizes[0] >= 1399 && sizes[0] <= 1400);
    assert_true(top10 * 100 / sum >= 40); /* a few large practices... */
    assert_true(tiny >= N / 2);           /* ...and many small ones */

    assert_false(sb_gen_split_patients(10, 0, 1.0, small));
    assert_false(sb_gen_split_patients(2, 3, 1.0, small));
    assert_false(sb_gen_split_patients(10, 3, -1.0, small));
    assert_false(sb_gen_split_patients(10, 3, NAN, small));
    assert_false(sb_gen_split_patients(10, 3, 11.0, small));
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--bench") == 0)
        return bench();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_invalid_config),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_concurrent_readers),
        cmocka_unit_test(test_json_shape),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_references),
        cmocka_unit_test(test_mutate),
        cmocka_unit_test(test_epoch_cap),
        cmocka_unit_test(test_counts_scale),
        cmocka_unit_test(test_large_population),
        cmocka_unit_test(test_out_of_memory),
        cmocka_unit_test(test_split_patients),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
