/* sandbox/gen.c: the sandbox's deterministic FHIR R4 data generator (the contract is in gen.h).
 *
 * Every value is a pure function of (seed, type, patient, slot) and, for the parts that change
 * when a resource is updated, of its version. A resource is built by hashing its coordinates into
 * a small random stream and writing compact JSON into a stack buffer that is flushed into the
 * caller's fs_buf, so producing one allocates nothing beyond the fs_buf's growth and keeps no
 * state: the generator is read-only after sb_gen_mutate(), and readers may run concurrently.
 * Facts that several resources of a patient share (birth date, encounter times, the patient's
 * practitioner, which conditions are chronic) are recomputed from the patient's hash wherever
 * they are needed; that costs a few hashes and is cheaper than storing them for 10^7 resources.
 *
 * Average slots per patient (uniform ranges; measured over 100,000 patients: 98.9 per patient,
 * 9.89 million resources plus 500 Organizations, 2,000 Practitioners and 101 Groups):
 *   Patient 1, Encounter 12 (4..20), Observation 52.9 (first the lab results of the patient's
 *   DiagnosticReports, ~19, then 2..8 sets of 7 vital signs, at most one set per encounter),
 *   Condition 5 (1..9; the first 0..2 chronic), MedicationRequest 8 (2..14; one or two per
 *   chronic condition, with reasonReference), AllergyIntolerance 1 (0..2), Immunization 7 (3..11),
 *   Procedure 6 (2..10), DiagnosticReport 4 (1..7), DocumentReference 2 (1..3).
 * Clinical history covers the ten years before created_at; patients are 25 to 95 years old.
 * Clinical dateTimes carry a fixed -05:00 offset, meta.lastUpdated is UTC with milliseconds.
 *
 * Change over time: each epoch stores its time and two thresholds. For a resource and an epoch,
 * one hash of (seed, epoch, type, patient, slot) below delete_fraction deletes it (deletable
 * types only), below delete_fraction + update_fraction updates it; the walk over epochs stops at
 * the deletion. The version-dependent fields differ per type (Observation value and status
 * "amended", Patient and Organization phone, Encounter end, ...). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gen.h"

/* ============================================================================================
 * Hashing: a splitmix64-style finaliser chained over the coordinates. */

#define GOLDEN UINT64_C(0x9e3779b97f4a7c15)

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    x ^= x >> 31;
    return x;
}

/* What a hash is for, so that unrelated decisions about the same resource are independent. */
enum {
    TAG_SLOTS = 1,
    TAG_PATIENT,
    TAG_CONTENT,
    TAG_HISTORY,
    TAG_ENCOUNTER,
    TAG_PANEL,
    TAG_REPORT_ENCOUNTER,
    TAG_VITAL_SET,
    TAG_EPOCH,
    TAG_CHRONIC,
    TAG_GLOBAL
};

/* A uniform value in [0, n) from the high half of a hash. */
static inline uint32_t below(uint64_t h, uint32_t n)
{
    return (uint32_t)(((h >> 32) * (uint64_t)n) >> 32);
}

typedef struct rng {
    uint64_t state;
} rng;

static inline uint64_t rng_next(rng *r)
{
    r->state += GOLDEN;
    return mix64(r->state);
}

static inline uint32_t rng_below(rng *r, uint32_t n)
{
    return below(rng_next(r), n);
}

/* Inclusive range. */
static inline int64_t rng_range(rng *r, int64_t lo, int64_t hi)
{
    return lo + (int64_t)rng_below(r, (uint32_t)(hi - lo + 1));
}

/* ============================================================================================
 * The generator. */

typedef struct gen_epoch {
    int64_t time;
    double update_fraction;
    double delete_fraction;
    uint64_t key;          /* mixed into each resource's history hash */
    uint64_t delete_below; /* on a 53-bit uniform value */
    uint64_t change_below; /* delete_below + the update share */
} gen_epoch;

struct sb_gen {
    uint64_t key; /* the mixed seed */
    uint32_t patients;
    int64_t created_at;
    uint32_t organizations;
    uint32_t practitioners;
    uint32_t groups;
    unsigned epochs;
    /* epoch[0..epochs], [0] being the initial data: &initial until the first mutation, which
     * allocates room for every epoch (so that a generator never mutated, as most of the
     * practices of --practices are, stays small) */
    gen_epoch *epoch;
    gen_epoch initial;
};

#define MIN_CREATED_AT INT64_C(946684800)    /* 2000-01-01 */
#define MAX_CREATED_AT INT64_C(4102444800)   /* 2100-01-01 */
#define MAX_EPOCH_TIME INT64_C(253402300799) /* 9999-12-31T23:59:59Z */
#define DAY INT64_C(86400)
#define YEAR (365 * DAY)
#define LOCAL_OFFSET (-5 * INT64_C(3600)) /* clinical times are written as -05:00 */

static inline uint64_t gen_hash(const sb_gen *g, unsigned tag, size_t type, uint32_t patient,
                                uint32_t slot)
{
    uint64_t x = mix64(g->key ^ (GOLDEN * (((uint64_t)tag << 8) | (uint64_t)type)));
    return mix64(x ^ (((uint64_t)patient << 32) | slot));
}

/* ============================================================================================
 * Types. */

typedef struct type_info {
    const char *name;
    const char *id_prefix;
    const char *profile; /* after http://hl7.org/fhir/us/core/StructureDefinition/ */
    bool compartment;
    bool deletable;
    uint16_t min_slots; /* per patient, uniform in [min_slots, max_slots] */
    uint16_t max_slots;
} type_info;

static const type_info types[SB_GEN_TYPE_COUNT] = {
    [SB_GEN_ORGANIZATION] = {"Organization", "org", "us-core-organization", false, false, 0, 0},
    [SB_GEN_PRACTITIONER] = {"Practitioner", "prac", "us-core-practitioner", false, false, 0, 0},
    [SB_GEN_PATIENT] = {"Patient", "pat", "us-core-patient", true, false, 1, 1},
    [SB_GEN_ENCOUNTER] = {"Encounter", "enc", "us-core-encounter", true, true, 4, 20},
    /* Observation slots come from the reports and vital sets (observation_layout). */
    [SB_GEN_OBSERVATION] = {"Observation", "obs", NULL, true, true, 0, 0},
    [SB_GEN_CONDITION] = {"Condition", "cond", "us-core-condition-encounter-diagnosis", true, true,
                          1, 9},
    [SB_GEN_MEDICATION_REQUEST] = {"MedicationRequest", "medrx", "us-core-medicationrequest", true,
                                   true, 2, 14},
    [SB_GEN_ALLERGY_INTOLERANCE] = {"AllergyIntolerance", "allergy", "us-core-allergyintolerance",
                                    true, true, 0, 2},
    [SB_GEN_IMMUNIZATION] = {"Immunization", "imm", "us-core-immunization", true, true, 3, 11},
    [SB_GEN_PROCEDURE] = {"Procedure", "proc", "us-core-procedure", true, true, 2, 10},
    [SB_GEN_DIAGNOSTIC_REPORT] = {"DiagnosticReport", "dxr", "us-core-diagnosticreport-lab", true,
                                  true, 1, 7},
    [SB_GEN_DOCUMENT_REFERENCE] = {"DocumentReference", "docref", "us-core-documentreference", true,
                                   true, 1, 3},
    /* No US Core profile exists for Group: meta carries no profile. */
    [SB_GEN_GROUP] = {"Group", NULL, NULL, false, false, 0, 0},
};

size_t sb_gen_type_count(void)
{
    return SB_GEN_TYPE_COUNT;
}

const char *sb_gen_type_name(size_t type)
{
    return type < SB_GEN_TYPE_COUNT ? types[type].name : NULL;
}

int sb_gen_type_index(const char *name)
{
    if (!name)
        return -1;
    for (size_t i = 0; i < SB_GEN_TYPE_COUNT; i++)
        if (strcmp(types[i].name, name) == 0)
            return (int)i;
    return -1;
}

bool sb_gen_type_in_patient_compartment(size_t type)
{
    return type < SB_GEN_TYPE_COUNT && types[type].compartment;
}

/* ============================================================================================
 * Terminology tables. Strings are plain ASCII; the writer escapes them anyway. */

#define SYS_LOINC "http://loinc.org"
#define SYS_SNOMED "http://snomed.info/sct"
#define SYS_RXNORM "http://www.nlm.nih.gov/research/umls/rxnorm"
#define SYS_CVX "http://hl7.org/fhir/sid/cvx"
#define SYS_UCUM "http://unitsofmeasure.org"
#define SYS_NPI "http://hl7.org/fhir/sid/us-npi"
#define US_CORE_SD "http://hl7.org/fhir/us/core/StructureDefinition/"

typedef struct coded {
    const char *code;
    const char *display;
} coded;

#define COUNT(a) ((uint32_t)(sizeof(a) / sizeof((a)[0])))

static const char *const given_female[] = {
    "Mary",      "Patricia", "Jennifer", "Linda",    "Elizabeth", "Barbara", "Susan",    "Jessica",
    "Sarah",     "Karen",    "Lisa",     "Nancy",    "Betty",     "Sandra",  "Margaret", "Ashley",
    "Kimberly",  "Emily",    "Donna",    "Michelle", "Carol",     "Amanda",  "Melissa",  "Deborah",
    "Stephanie", "Rebecca",  "Laura",    "Helen",    "Sharon",    "Cynthia", "Kathleen", "Amy",
    "Angela",    "Shirley",  "Anna",     "Brenda",   "Pamela",    "Emma",    "Nicole",   "Claudia"};
static const char *const given_male[] = {
    "James",    "Robert",  "John",        "Michael", "David",   "William", "Richard", "Joseph",
    "Thomas",   "Charles", "Christopher", "Daniel",  "Matthew", "Anthony", "Mark",    "Donald",
    "Steven",   "Paul",    "Andrew",      "Joshua",  "Kenneth", "Kevin",   "Brian",   "George",
    "Timothy",  "Ronald",  "Edward",      "Jason",   "Jeffrey", "Ryan",    "Jacob",   "Gary",
    "Nicholas", "Eric",    "Jonathan",    "Stephen", "Larry",   "Justin",  "Scott",   "Alden"};
static const char *const family_names[] = {
    "Smith",     "Johnson",  "Williams",  "Brown",   "Jones",    "Garcia",   "Miller",   "Davis",
    "Rodriguez", "Martinez", "Hernandez", "Lopez",   "Gonzalez", "Wilson",   "Anderson", "Thomas",
    "Taylor",    "Moore",    "Jackson",   "Martin",  "Lee",      "Perez",    "Thompson", "White",
    "Harris",    "Sanchez",  "Clark",     "Ramirez", "Lewis",    "Robinson", "Walker",   "Young",
    "Allen",     "King",     "Wright",    "Scott",   "Torres",   "Nguyen",   "Hill",     "Flores",
    "Green",     "Adams",    "Nelson",    "Baker",   "Hall",     "Rivera",   "Campbell", "Mitchell",
    "Carter",    "Roberts",  "Lindgren",  "Kautzer", "Bernier",  "Schumm",   "Herman",   "Crona",
    "Hirthe",    "Nader",    "Beier",     "Swift",   "Alcala",   "OConnor",  "Kim",      "Patel",
    "Chen",      "Murphy",   "Sullivan",  "Cohen",   "Larsen",   "Novak"};

typedef struct city {
    const char *name;
    const char *postal_code;
} city;

static const city cities[] = {
    {"Boston", "02108"},     {"Worcester", "01601"},  {"Springfield", "01103"},
    {"Lowell", "01850"},     {"Cambridge", "02138"},  {"New Bedford", "02740"},
    {"Brockton", "02301"},   {"Quincy", "02169"},     {"Lynn", "01901"},
    {"Fall River", "02720"}, {"Newton", "02458"},     {"Somerville", "02143"},
    {"Lawrence", "01840"},   {"Framingham", "01701"}, {"Haverhill", "01830"},
    {"Waltham", "02451"},    {"Malden", "02148"},     {"Medford", "02155"},
    {"Taunton", "02780"},    {"Chicopee", "01013"},   {"Revere", "02151"},
    {"Peabody", "01960"},    {"Pittsfield", "01201"}, {"Salem", "01970"}};
static const char *const street_names[] = {
    "Main",  "Oak",    "Maple",  "Cedar",    "Elm",      "Washington", "Lake",   "Hill",
    "Park",  "Pine",   "Union",  "Church",   "Bridge",   "Pleasant",   "High",   "School",
    "Water", "Summer", "Winter", "Prospect", "Chestnut", "Walnut",     "Spring", "Central"};
static const char *const street_suffixes[] = {"St", "Ave", "Rd", "Ln", "Dr", "Way", "Ct", "Pl"};
static const char *const organization_kinds[] = {
    "Family Medicine", "Community Health Center",      "General Hospital",
    "Medical Group",   "Internal Medicine Associates", "Urgent Care"};

typedef struct omb {
    const char *code;
    const char *display;
    uint32_t weight; /* percent */
} omb;

static const omb races[] = {{"2106-3", "White", 62},
                            {"2054-5", "Black or African American", 13},
                            {"2028-9", "Asian", 7},
                            {"1002-5", "American Indian or Alaska Native", 2},
                            {"2076-8", "Native Hawaiian or Other Pacific Islander", 1},
                            {"2131-1", "Other Race", 15}};
static const coded marital_statuses[] = {
    {"M", "Married"}, {"S", "Never Married"}, {"D", "Divorced"}, {"W", "Widowed"}};

/* Encounter classes (v3-ActCode) and the SNOMED CT types that go with each. */
enum { CLASS_AMB, CLASS_EMER, CLASS_IMP };
static const coded encounter_classes[] = {
    {"AMB", "ambulatory"}, {"EMER", "emergency"}, {"IMP", "inpatient encounter"}};
static const coded ambulatory_types[] = {
    {"185349003", "Encounter for check up (procedure)"},
    {"185345009", "Encounter for symptom (procedure)"},
    {"390906007", "Follow-up encounter (procedure)"},
    {"162673000", "General examination of patient (procedure)"},
    {"698314001", "Consultation for treatment (procedure)"},
    {"308335008", "Patient encounter procedure (procedure)"}};
static const coded emergency_types[] = {{"50849002", "Emergency room admission (procedure)"},
                                        {"183452005", "Emergency hospital admission (procedure)"}};
static const coded inpatient_types[] = {
    {"32485007", "Hospital admission (procedure)"},
    {"305408004", "Admission to surgical department (procedure)"}};

/* Laboratory analytes (LOINC, UCUM) and the panels (DiagnosticReport codes) that hold them.
 * Values are integers scaled by 10^decimals. */
typedef struct analyte {
    const char *code;
    const char *display;
    const char *unit;
    int32_t low;
    int32_t high;
    uint8_t decimals;
} analyte;

static const analyte metabolic_panel[] = {
    {"2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 70, 140, 0},
    {"6299-2", "Urea nitrogen [Mass/volume] in Blood", "mg/dL", 7, 20, 0},
    {"2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 60, 130, 2},
    {"17861-6", "Calcium [Mass/volume] in Serum or Plasma", "mg/dL", 85, 105, 1},
    {"2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 136, 145, 0},
    {"2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 35, 51, 1},
    {"2075-0", "Chloride [Moles/volume] in Serum or Plasma", "mmol/L", 98, 107, 0},
    {"2028-9", "Carbon dioxide, total [Moles/volume] in Serum or Plasma", "mmol/L", 22, 29, 0}};
static const analyte lipid_panel[] = {
    {"2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 140, 260, 0},
    {"2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "mg/dL", 50, 250, 0},
    {"2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma", "mg/dL", 30, 80, 0},
    {"18262-6", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay", "mg/dL", 60,
     180, 0}};
static const analyte a1c_panel[] = {
    {"4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 45, 95, 1}};
static const analyte blood_count_panel[] = {
    {"6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 40, 110, 1},
    {"789-8", "Erythrocytes [#/volume] in Blood by Automated count", "10*6/uL", 420, 590, 2},
    {"718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 120, 175, 1},
    {"4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", "%", 360, 500, 1},
    {"787-2", "MCV [Entitic volume] by Automated count", "fL", 800, 1000, 1},
    {"777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", 150, 400, 0}};

typedef struct panel {
    const char *code;
    const char *display;
    const analyte *analytes;
    uint32_t count;
} panel;

static const panel panels[] = {
    {"51990-0", "Basic metabolic panel - Blood", metabolic_panel, COUNT(metabolic_panel)},
    {"57698-3", "Lipid panel with direct LDL - Serum or Plasma", lipid_panel, COUNT(lipid_panel)},
    {"4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", a1c_panel, COUNT(a1c_panel)},
    {"58410-2", "CBC panel - Blood by Automated count", blood_count_panel,
     COUNT(blood_count_panel)}};

/* Vital signs: one set per visit, in this order. */
enum {
    VITAL_BP,
    VITAL_HR,
    VITAL_RR,
    VITAL_TEMP,
    VITAL_HEIGHT,
    VITAL_WEIGHT,
    VITAL_BMI,
    VITAL_KINDS
};
typedef struct vital {
    const char *code;
    const char *display;
    const char *unit;
    const char *profile;
    uint8_t decimals;
} vital;

static const vital vitals[VITAL_KINDS] = {
    [VITAL_BP] = {"85354-9", "Blood pressure panel with all children optional", "mm[Hg]",
                  "us-core-blood-pressure", 0},
    [VITAL_HR] = {"8867-4", "Heart rate", "/min", "us-core-heart-rate", 0},
    [VITAL_RR] = {"9279-1", "Respiratory rate", "/min", "us-core-respiratory-rate", 0},
    [VITAL_TEMP] = {"8310-5", "Body temperature", "Cel", "us-core-body-temperature", 1},
    [VITAL_HEIGHT] = {"8302-2", "Body height", "cm", "us-core-body-height", 1},
    [VITAL_WEIGHT] = {"29463-7", "Body weight", "kg", "us-core-body-weight", 1},
    [VITAL_BMI] = {"39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", "us-core-bmi", 1}};

/* Medications (RxNorm). */
enum {
    MED_LISINOPRIL,
    MED_METFORMIN,
    MED_AMLODIPINE,
    MED_ATORVASTATIN,
    MED_HCTZ,
    MED_SIMVASTATIN,
    MED_ALBUTEROL,
    MED_FLUTICASONE,
    MED_SERTRALINE,
    MED_NAPROXEN,
    MED_ACETAMINOPHEN,
    MED_AMOXICILLIN,
    MED_IBUPROFEN,
    MED_PENICILLIN_V,
    MED_COUNT
};
typedef struct medication {
    const char *code;
    const char *display;
    const char *instruction;
    uint8_t per_day;
} medication;

static const medication medications[MED_COUNT] = {
    [MED_LISINOPRIL] = {"314076", "lisinopril 10 MG Oral Tablet",
                        "Take 1 tablet by mouth once daily", 1},
    [MED_METFORMIN] = {"860975",
                       "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet",
                       "Take 1 tablet by mouth once daily with the evening meal", 1},
    [MED_AMLODIPINE] = {"197361", "amlodipine 5 MG Oral Tablet",
                        "Take 1 tablet by mouth once daily", 1},
    [MED_ATORVASTATIN] = {"259255", "atorvastatin 80 MG Oral Tablet",
                          "Take 1 tablet by mouth at bedtime", 1},
    [MED_HCTZ] = {"310798", "hydrochlorothiazide 25 MG Oral Tablet",
                  "Take 1 tablet by mouth every morning", 1},
    [MED_SIMVASTATIN] = {"312961", "simvastatin 20 MG Oral Tablet",
                         "Take 1 tablet by mouth in the evening", 1},
    [MED_ALBUTEROL] = {"745679", "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler",
                       "Inhale 2 puffs every 4 to 6 hours as needed for wheezing", 4},
    [MED_FLUTICASONE] = {"895994",
                         "120 ACTUAT fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler",
                         "Inhale 2 puffs twice daily", 2},
    [MED_SERTRALINE] = {"312940", "sertraline 50 MG Oral Tablet",
                        "Take 1 tablet by mouth once daily", 1},
    [MED_NAPROXEN] = {"849574", "naproxen sodium 220 MG Oral Tablet",
                      "Take 1 tablet by mouth twice daily with food", 2},
    [MED_ACETAMINOPHEN] = {"313782", "acetaminophen 325 MG Oral Tablet",
                           "Take 2 tablets by mouth every 6 hours as needed for pain", 4},
    [MED_AMOXICILLIN] = {"308192", "amoxicillin 500 MG Oral Tablet",
                         "Take 1 tablet by mouth three times daily for 10 days", 3},
    [MED_IBUPROFEN] = {"310965", "ibuprofen 200 MG Oral Tablet",
                       "Take 1 tablet by mouth every 8 hours as needed", 3},
    [MED_PENICILLIN_V] = {"834061", "penicillin V potassium 250 MG Oral Tablet",
                          "Take 1 tablet by mouth four times daily for 10 days", 4}};
static const uint8_t acute_medications[] = {MED_ACETAMINOPHEN, MED_AMOXICILLIN, MED_IBUPROFEN,
                                            MED_PENICILLIN_V, MED_NAPROXEN};

/* Conditions (SNOMED CT). Chronic ones stay active and carry the medications ordered for them. */
typedef struct condition {
    const char *code;
    const char *display;
    uint8_t medication[2];
} condition;

static const condition chronic_conditions[] = {
    {"44054006", "Diabetes mellitus type 2 (disorder)", {MED_METFORMIN, MED_METFORMIN}},
    {"38341003",
     "Hypertensive disorder, systemic arterial (disorder)",
     {MED_LISINOPRIL, MED_AMLODIPINE}},
    {"55822004", "Hyperlipidemia (disorder)", {MED_ATORVASTATIN, MED_SIMVASTATIN}},
    {"195967001", "Asthma (disorder)", {MED_ALBUTEROL, MED_FLUTICASONE}},
    {"15777000", "Prediabetes (finding)", {MED_METFORMIN, MED_METFORMIN}},
    {"239873007", "Osteoarthritis of knee (disorder)", {MED_NAPROXEN, MED_ACETAMINOPHEN}},
    {"35489007", "Depressive disorder (disorder)", {MED_SERTRALINE, MED_SERTRALINE}},
    {"13645005", "Chronic obstructive lung disease (disorder)", {MED_ALBUTEROL, MED_FLUTICASONE}},
    {"431855005", "Chronic kidney disease stage 1 (disorder)", {MED_LISINOPRIL, MED_HCTZ}}};
static const coded acute_conditions[] = {
    {"195662009", "Acute viral pharyngitis (disorder)"},
    {"10509002", "Acute bronchitis (disorder)"},
    {"444814009", "Viral sinusitis (disorder)"},
    {"65363002", "Otitis media (disorder)"},
    {"44465007", "Sprain of ankle (disorder)"},
    {"62106007", "Concussion with no loss of consciousness (disorder)"},
    {"43878008", "Streptococcal sore throat (disorder)"},
    {"68566005", "Urinary tract infectious disease (disorder)"},
    {"840539006", "Disease caused by severe acute respiratory syndrome coronavirus 2 (disorder)"}};

typedef struct allergy {
    const char *code;
    const char *display;
    const char *category;
} allergy;

static const allergy allergies[] = {
    {"300913006", "Shellfish allergy (disorder)", "food"},
    {"91935009", "Allergy to peanuts (disorder)", "food"},
    {"91936005", "Allergy to penicillin (disorder)", "medication"},
    {"419474003", "Allergy to mould (disorder)", "environment"},
    {"232350006", "House dust mite allergy (disorder)", "environment"},
    {"418689008", "Allergy to grass pollen (disorder)", "environment"},
    {"300916003", "Latex allergy (disorder)", "environment"},
    {"417532002", "Allergy to fish (disorder)", "food"},
    {"714035009", "Allergy to soya (disorder)", "food"}};
static const coded reactions[] = {{"271807003", "Eruption of skin (disorder)"},
                                  {"247472004", "Wheal (finding)"},
                                  {"49727002", "Cough (finding)"},
                                  {"267036007", "Dyspnea (finding)"},
                                  {"39579001", "Anaphylaxis (disorder)"}};
static const char *const severities[] = {"mild", "moderate", "severe"};
static const char *const criticalities[] = {"low", "high", "unable-to-assess"};

/* Vaccines (CVX): the first two are the common ones. */
static const coded vaccines[] = {
    {"140", "Influenza, seasonal, injectable, preservative free"},
    {"208", "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, 30 "
            "mcg/0.3mL dose"},
    {"08", "Hep B, adolescent or pediatric"},
    {"43", "Hep B, adult"},
    {"113", "Td (adult) preservative free"},
    {"115", "Tdap"},
    {"133", "Pneumococcal conjugate PCV 13"},
    {"33", "pneumococcal polysaccharide vaccine, 23 valent"},
    {"187", "zoster vaccine recombinant"},
    {"62", "HPV, quadrivalent"},
    {"83", "Hep A, ped/adol, 2 dose"},
    {"03", "MMR"}};

static const coded procedures[] = {
    {"430193006", "Medication reconciliation (procedure)"},
    {"710824005", "Assessment of health and social care needs (procedure)"},
    {"428191000124101", "Documentation of current medications (procedure)"},
    {"171207006", "Depression screening (procedure)"},
    {"73761001", "Colonoscopy (procedure)"},
    {"71651007", "Mammography (procedure)"},
    {"399208008", "Plain chest X-ray (procedure)"},
    {"117015009", "Throat culture (procedure)"},
    {"127783003", "Spirometry (procedure)"},
    {"29303009", "Electrocardiographic procedure (procedure)"},
    {"180256009", "Subcutaneous immunotherapy (procedure)"},
    {"274474001", "Bone immobilization (procedure)"}};

static const coded note_types[] = {{"11506-3", "Progress note"},
                                   {"34117-2", "History and physical note"},
                                   {"11488-4", "Consult note"}};
static const coded discharge_summary = {"18842-5", "Discharge summary"};

static const char *const medication_statuses[] = {"active", "on-hold", "stopped", "completed"};

/* ============================================================================================
 * Number and date formatting. */

/* Decimal digits of v at dst; returns the count. */
static inline size_t put_u64(char *dst, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        dst[i] = tmp[n - 1 - i];
    return n;
}

/* Exactly `width` digits, zero-padded (v must fit). */
static inline void put_padded(char *dst, uint64_t v, size_t width)
{
    for (size_t i = width; i-- > 0;) {
        dst[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

static inline int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b) != 0 && ((a < 0) != (b < 0)))
        q--;
    return q;
}

/* Days since 1970-01-01 to a proleptic Gregorian date (the usual 400-year era arithmetic). */
static void civil_from_days(int64_t days, int64_t *year, unsigned *month, unsigned *day)
{
    days += 719468; /* shift the epoch to 0000-03-01 */
    int64_t era = floor_div(days, 146097);
    unsigned day_of_era = (unsigned)(days - era * 146097);
    unsigned year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
    unsigned day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    unsigned month_index = (5 * day_of_year + 2) / 153; /* 0 = March */
    *day = day_of_year - (153 * month_index + 2) / 5 + 1;
    *month = month_index < 10 ? month_index + 3 : month_index - 9;
    *year = (int64_t)year_of_era + era * 400 + (*month <= 2);
}

/* "YYYY-MM-DD" (10 bytes). Years are within 0..9999 by construction (config checks). */
static void put_date(char *dst, int64_t t)
{
    int64_t year;
    unsigned month, day;
    civil_from_days(floor_div(t, DAY), &year, &month, &day);
    put_padded(dst, (uint64_t)year, 4);
    dst[4] = '-';
    put_padded(dst + 5, month, 2);
    dst[7] = '-';
    put_padded(dst + 8, day, 2);
}

/* "YYYY-MM-DDThh:mm:ss" (19 bytes). */
static void put_datetime(char *dst, int64_t t)
{
    put_date(dst, t);
    int64_t secs = t - floor_div(t, DAY) * DAY;
    dst[10] = 'T';
    put_padded(dst + 11, (uint64_t)(secs / 3600), 2);
    dst[13] = ':';
    put_padded(dst + 14, (uint64_t)(secs / 60 % 60), 2);
    dst[16] = ':';
    put_padded(dst + 17, (uint64_t)(secs % 60), 2);
}

/* ============================================================================================
 * JSON writer: a stack buffer flushed into the caller's fs_buf. */

enum { JW_CAP = 4096 };

typedef struct jw {
    fs_buf *out;
    size_t n;
    bool ok;
    char buf[JW_CAP];
} jw;

static void jw_flush(jw *w)
{
    if (w->n > 0 && w->ok && !fs_buf_append(w->out, w->buf, w->n))
        w->ok = false;
    w->n = 0;
}

/* Room for k (<= JW_CAP) more bytes; returns where to write them (the caller adds to n). */
static inline char *jw_room(jw *w, size_t k)
{
    if (w->n + k > JW_CAP)
        jw_flush(w);
    return w->buf + w->n;
}

static inline void jw_raw(jw *w, const char *s, size_t len)
{
    if (w->n + len > JW_CAP) {
        jw_flush(w);
        if (len > JW_CAP) {
            if (w->ok && !fs_buf_append(w->out, s, len))
                w->ok = false;
            return;
        }
    }
    memcpy(w->buf + w->n, s, len);
    w->n += len;
}

#define JW_LIT(w, lit) jw_raw((w), "" lit, sizeof(lit) - 1)

/* Trusted constant text (systems, URLs, codes of the fixed vocabularies). */
static inline void jw_cstr(jw *w, const char *s)
{
    jw_raw(w, s, strlen(s));
}

/* A JSON string, quoted and escaped. */
static void jw_str(jw *w, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    jw_raw(w, "\"", 1);
    const char *run = s;
    const char *p = s;
    for (; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        jw_raw(w, run, (size_t)(p - run));
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            jw_raw(w, esc, 2);
        } else {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            jw_raw(w, esc, 6);
        }
        run = p + 1;
    }
    jw_raw(w, run, (size_t)(p - run));
    jw_raw(w, "\"", 1);
}

static inline void jw_u64(jw *w, uint64_t v)
{
    char *p = jw_room(w, 20);
    w->n += put_u64(p, v);
}

/* A decimal with fixed precision: value / 10^decimals, e.g. (724, 1) -> 72.4. */
static void jw_decimal(jw *w, int64_t value, unsigned decimals)
{
    static const uint64_t pow10[] = {1, 10, 100, 1000, 10000};
    char *p = jw_room(w, 32); /* sign, 20 digits, point, 4 decimals */
    size_t n = 0;
    uint64_t magnitude = value < 0 ? (uint64_t)0 - (uint64_t)value : (uint64_t)value;
    if (value < 0)
        p[n++] = '-';
    n += put_u64(p + n, magnitude / pow10[decimals]);
    if (decimals) {
        p[n++] = '.';
        put_padded(p + n, magnitude % pow10[decimals], decimals);
        n += decimals;
    }
    w->n += n;
}

/* "YYYY-MM-DDThh:mm:ss.000Z" (meta.lastUpdated, issued). */
static void jw_instant(jw *w, int64_t t)
{
    char *p = jw_room(w, 26);
    p[0] = '"';
    put_datetime(p + 1, t);
    memcpy(p + 20, ".000Z\"", 6);
    w->n += 26;
}

/* A clinical dateTime in the fixed local offset: "YYYY-MM-DDThh:mm:ss-05:00". */
static void jw_local(jw *w, int64_t t)
{
    char *p = jw_room(w, 27);
    p[0] = '"';
    put_datetime(p + 1, t + LOCAL_OFFSET);
    memcpy(p + 20, "-05:00\"", 7);
    w->n += 27;
}

static void jw_date(jw *w, int64_t t)
{
    char *p = jw_room(w, 12);
    p[0] = '"';
    put_date(p + 1, t);
    p[11] = '"';
    w->n += 12;
}

/* Standard base64 with padding (Attachment.data). */
static void jw_base64(jw *w, const unsigned char *data, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    jw_raw(w, "\"", 1);
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)data[i + 1] << 8;
        if (i + 2 < len)
            v |= data[i + 2];
        char *p = jw_room(w, 4);
        p[0] = alphabet[(v >> 18) & 63];
        p[1] = alphabet[(v >> 12) & 63];
        p[2] = i + 1 < len ? alphabet[(v >> 6) & 63] : '=';
        p[3] = i + 2 < len ? alphabet[v & 63] : '=';
        w->n += 4;
    }
    jw_raw(w, "\"", 1);
}

/* "555-ddd-dddd" (the reserved fictional exchange), from a hash. */
static void jw_phone(jw *w, uint64_t h)
{
    char *p = jw_room(w, 14);
    memcpy(p, "\"555-", 5);
    put_padded(p + 5, 100 + below(h, 900), 3);
    p[8] = '-';
    put_padded(p + 9, below(mix64(h), 10000), 4);
    p[13] = '"';
    w->n += 14;
}

/* {"system":"<system>","code":"<code>","display":"<display>"} */
static void w_coding(jw *w, const char *system, const char *code, const char *display)
{
    JW_LIT(w, "{\"system\":\"");
    jw_cstr(w, system);
    JW_LIT(w, "\",\"code\":");
    jw_str(w, code);
    if (display) {
        JW_LIT(w, ",\"display\":");
        jw_str(w, display);
    }
    JW_LIT(w, "}");
}

/* {"coding":[<coding>],"text":"<display>"} */
static void w_concept(jw *w, const char *system, const char *code, const char *display)
{
    JW_LIT(w, "{\"coding\":[");
    w_coding(w, system, code, display);
    JW_LIT(w, "],\"text\":");
    jw_str(w, display);
    JW_LIT(w, "}");
}

/* {"value":<v>,"unit":"<unit>","system":"http://unitsofmeasure.org","code":"<unit>"} */
static void w_quantity(jw *w, int64_t value, unsigned decimals, const char *unit)
{
    JW_LIT(w, "{\"value\":");
    jw_decimal(w, value, decimals);
    JW_LIT(w, ",\"unit\":");
    jw_str(w, unit);
    JW_LIT(w, ",\"system\":\"" SYS_UCUM "\",\"code\":");
    jw_str(w, unit);
    JW_LIT(w, "}");
}

/* ============================================================================================
 * Ids. */

static inline uint32_t group_count(uint32_t patients)
{
    /* 64-bit: patients + COHORT_SIZE - 1 overflows uint32 near UINT32_MAX */
    return 1 + (uint32_t)(((uint64_t)patients + SB_GEN_COHORT_SIZE - 1) / SB_GEN_COHORT_SIZE);
}

/* The id of a resource known to exist, at buf (>= 40 bytes); returns its length. */
static size_t format_id(size_t type, uint32_t patient, uint32_t slot, char *buf)
{
    size_t n = 0;
    if (type == SB_GEN_GROUP) {
        if (slot == 0) {
            memcpy(buf, "all", 4);
            return 3;
        }
        memcpy(buf, "cohort-", 7);
        n = 7 + put_u64(buf + 7, slot - 1);
    } else {
        size_t plen = strlen(types[type].id_prefix);
        memcpy(buf, types[type].id_prefix, plen);
        n = plen;
        buf[n++] = '-';
        if (type == SB_GEN_ORGANIZATION || type == SB_GEN_PRACTITIONER) {
            n += put_u64(buf + n, slot);
        } else {
            n += put_u64(buf + n, patient);
            if (type != SB_GEN_PATIENT) {
                buf[n++] = '-';
                n += put_u64(buf + n, slot);
            }
        }
    }
    buf[n] = '\0';
    return n;
}

/* {"reference":"<Type>/<id>"} */
static void w_ref(jw *w, size_t type, uint32_t patient, uint32_t slot)
{
    char id[40];
    size_t len = format_id(type, patient, slot, id);
    JW_LIT(w, "{\"reference\":\"");
    jw_cstr(w, types[type].name);
    JW_LIT(w, "/");
    jw_raw(w, id, len);
    JW_LIT(w, "\"}");
}

/* ============================================================================================
 * Per-patient facts shared by several resources. */

typedef struct patient_ctx {
    uint32_t index;
    uint64_t hash;
    bool female;
    int64_t birth;         /* 00:00 UTC of the birth date */
    int64_t history_start; /* clinical history: [history_start, history_start + history_len) */
    int64_t history_len;
    uint32_t gp;         /* the patient's primary care practitioner */
    uint32_t encounters; /* Encounter slots */
} patient_ctx;

static uint32_t simple_slots(const sb_gen *g, size_t type, uint32_t patient)
{
    const type_info *ti = &types[type];
    uint32_t span = (uint32_t)(ti->max_slots - ti->min_slots) + 1;
    return ti->min_slots + below(gen_hash(g, TAG_SLOTS, type, patient, 0), span);
}

static void patient_ctx_init(const sb_gen *g, uint32_t patient, patient_ctx *pc)
{
    uint64_t h = gen_hash(g, TAG_PATIENT, SB_GEN_PATIENT, patient, 0);
    rng r = {h};
    pc->index = patient;
    pc->hash = h;
    pc->female = (h & 1) != 0;
    int64_t today = floor_div(g->created_at, DAY) * DAY;
    pc->birth = today - 25 * YEAR - (int64_t)rng_below(&r, 70 * 365) * DAY;
    int64_t history_end = today - 8 * DAY; /* room for a long inpatient stay */
    pc->history_len = 10 * YEAR;
    pc->history_start = history_end - pc->history_len;
    pc->gp = rng_below(&r, g->practitioners);
    pc->encounters = simple_slots(g, SB_GEN_ENCOUNTER, patient);
}

typedef struct encounter_info {
    int64_t start;
    int64_t end; /* at version 1 */
    unsigned cls;
    const coded *type;
    uint32_t practitioner;
    uint32_t organization;
} encounter_info;

/* Encounter e falls in the e-th of `encounters` equal stretches of the history, so a patient's
 * encounters are in slot order; ambulatory visits are in office hours. */
static void encounter_get(const sb_gen *g, const patient_ctx *pc, uint32_t e, encounter_info *ei)
{
    rng r = {gen_hash(g, TAG_ENCOUNTER, SB_GEN_ENCOUNTER, pc->index, e)};
    int64_t stretch = pc->history_len / pc->encounters;
    int64_t t = pc->history_start + stretch * e + (int64_t)rng_below(&r, (uint32_t)stretch);
    int64_t midnight = floor_div(t, DAY) * DAY;
    unsigned roll = rng_below(&r, 100);
    ei->cls = roll < 80 ? CLASS_AMB : roll < 92 ? CLASS_EMER : CLASS_IMP;
    switch (ei->cls) {
    case CLASS_AMB:
        /* 08:00..16:45 local */
        ei->start = midnight + 13 * 3600 + (int64_t)rng_below(&r, 36) * 900;
        ei->end = ei->start + rng_range(&r, 3, 12) * 300;
        ei->type = &ambulatory_types[rng_below(&r, COUNT(ambulatory_types))];
        break;
    case CLASS_EMER:
        ei->start = midnight + (int64_t)rng_below(&r, 96) * 900;
        ei->end = ei->start + rng_range(&r, 2, 8) * 3600;
        ei->type = &emergency_types[rng_below(&r, COUNT(emergency_types))];
        break;
    default:
        ei->start = midnight + (int64_t)rng_below(&r, 96) * 900;
        ei->end = ei->start + rng_range(&r, 1, 6) * DAY + rng_range(&r, 0, 23) * 3600;
        ei->type = &inpatient_types[rng_below(&r, COUNT(inpatient_types))];
        break;
    }
    ei->practitioner = rng_below(&r, 10) < 7 ? pc->gp : rng_below(&r, g->practitioners);
    ei->organization = ei->practitioner % g->organizations;
}

/* Observation slots: first the results of the patient's DiagnosticReports (report 0's panel,
 * then report 1's, ...), then `vital_sets` sets of VITAL_KINDS vital signs. */
typedef struct observation_layout {
    uint32_t reports;
    uint32_t labs;
    uint32_t vital_sets;
} observation_layout;

static inline const panel *report_panel(const sb_gen *g, uint32_t patient, uint32_t report)
{
    return &panels[below(gen_hash(g, TAG_PANEL, SB_GEN_DIAGNOSTIC_REPORT, patient, report),
                         COUNT(panels))];
}

static void observation_layout_get(const sb_gen *g, uint32_t patient, uint32_t encounters,
                                   observation_layout *ol)
{
    ol->reports = simple_slots(g, SB_GEN_DIAGNOSTIC_REPORT, patient);
    ol->labs = 0;
    for (uint32_t d = 0; d < ol->reports; d++)
        ol->labs += report_panel(g, patient, d)->count;
    ol->vital_sets = 2 + below(gen_hash(g, TAG_SLOTS, SB_GEN_OBSERVATION, patient, 0), 7);
    if (ol->vital_sets > encounters)
        ol->vital_sets = encounters;
}

static inline uint32_t report_encounter(const sb_gen *g, const patient_ctx *pc, uint32_t report)
{
    return below(gen_hash(g, TAG_REPORT_ENCOUNTER, SB_GEN_DIAGNOSTIC_REPORT, pc->index, report),
                 pc->encounters);
}

static inline uint32_t vital_set_encounter(const observation_layout *ol, const patient_ctx *pc,
                                           uint32_t set)
{
    return (uint32_t)((uint64_t)set * pc->encounters / ol->vital_sets);
}

/* How many of the patient's first Condition slots are chronic conditions (0..2), and the first
 * of them in chronic_conditions (they are consecutive there, so never duplicated). */
static void chronic_get(const sb_gen *g, uint32_t patient, uint32_t *count, uint32_t *first)
{
    uint64_t h = gen_hash(g, TAG_CHRONIC, SB_GEN_CONDITION, patient, 0);
    uint32_t n = below(h, 3);
    uint32_t slots = simple_slots(g, SB_GEN_CONDITION, patient);
    *count = n < slots ? n : slots;
    *first = below(mix64(h), COUNT(chronic_conditions));
}

static inline uint32_t condition_encounter(const sb_gen *g, const patient_ctx *pc, uint32_t slot)
{
    return below(gen_hash(g, TAG_ENCOUNTER, SB_GEN_CONDITION, pc->index, slot), pc->encounters);
}

typedef struct patient_names {
    const char *given;
    const char *middle;
    const char *family;
} patient_names;

static void patient_names_get(const patient_ctx *pc, patient_names *pn)
{
    rng r = {mix64(pc->hash ^ 0x6e616d6573)};
    const char *const *given = pc->female ? given_female : given_male;
    uint32_t n = pc->female ? COUNT(given_female) : COUNT(given_male);
    pn->given = given[rng_below(&r, n)];
    pn->middle = given[rng_below(&r, n)];
    pn->family = family_names[rng_below(&r, COUNT(family_names))];
}

/* ============================================================================================
 * Slots. */

uint32_t sb_gen_patient_count(const sb_gen *gen)
{
    return gen ? gen->patients : 0;
}

static uint32_t slots_of(const sb_gen *g, size_t type, uint32_t patient)
{
    switch (type) {
    case SB_GEN_ORGANIZATION: return g->organizations;
    case SB_GEN_PRACTITIONER: return g->practitioners;
    case SB_GEN_GROUP: return g->groups;
    default: break;
    }
    if (type >= SB_GEN_TYPE_COUNT || patient >= g->patients)
        return 0;
    if (type == SB_GEN_OBSERVATION) {
        observation_layout ol;
        observation_layout_get(g, patient, simple_slots(g, SB_GEN_ENCOUNTER, patient), &ol);
        return ol.labs + ol.vital_sets * VITAL_KINDS;
    }
    return simple_slots(g, type, patient);
}

uint32_t sb_gen_slots(const sb_gen *gen, size_t type, uint32_t patient)
{
    return gen ? slots_of(gen, type, patient) : 0;
}

uint64_t sb_gen_count(const sb_gen *gen, size_t type)
{
    if (!gen || type >= SB_GEN_TYPE_COUNT)
        return 0;
    if (!types[type].compartment)
        return slots_of(gen, type, 0);
    uint64_t total = 0;
    for (uint32_t p = 0; p < gen->patients; p++)
        total += slots_of(gen, type, p);
    return total;
}

/* ============================================================================================
 * Lifecycle and epochs. */

sb_gen *sb_gen_new(const sb_gen_config *cfg)
{
    if (!cfg || cfg->patients < 1)
        return NULL;
    int64_t created_at = cfg->created_at ? cfg->created_at : SB_GEN_DEFAULT_CREATED_AT;
    if (created_at < MIN_CREATED_AT || created_at >= MAX_CREATED_AT)
        return NULL;
    sb_gen *g = fs_calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    g->key = mix64(cfg->seed ^ UINT64_C(0x66687379636e6765)); /* bijective: seeds stay distinct */
    g->patients = cfg->patients;
    g->created_at = created_at;
    g->organizations = cfg->patients / 200 > 2 ? cfg->patients / 200 : 2;
    g->practitioners = cfg->patients / 50 > 3 ? cfg->patients / 50 : 3;
    g->groups = group_count(cfg->patients);
    g->epochs = 0;
    g->epoch = &g->initial;
    g->epoch[0].time = created_at;
    return g;
}

void sb_gen_free(sb_gen *gen)
{
    if (gen && gen->epoch != &gen->initial)
        fs_free(gen->epoch);
    fs_free(gen);
}

static double clamp_fraction(double f)
{
    if (!(f > 0)) /* also NaN */
        return 0;
    return f > 1 ? 1 : f;
}

unsigned sb_gen_mutate(sb_gen *gen, double update_fraction, double delete_fraction, int64_t now)
{
    if (!gen || gen->epochs >= SB_GEN_MAX_EPOCHS)
        return 0;
    if (gen->epoch == &gen->initial) {
        gen_epoch *all = fs_calloc(SB_GEN_MAX_EPOCHS + 1, sizeof *all);
        if (!all)
            return 0;
        all[0] = gen->initial;
        gen->epoch = all;
    }
    double del = clamp_fraction(delete_fraction);
    double upd = clamp_fraction(update_fraction);
    if (upd > 1 - del)
        upd = 1 - del;
    int64_t previous = gen->epoch[gen->epochs].time;
    if (now < previous)
        now = previous;
    if (now > MAX_EPOCH_TIME)
        now = MAX_EPOCH_TIME;
    unsigned e = gen->epochs + 1;
    gen_epoch *ep = &gen->epoch[e];
    const double scale = 9007199254740992.0; /* 2^53 */
    ep->time = now;
    ep->update_fraction = upd;
    ep->delete_fraction = del;
    ep->key = mix64(gen->key ^ (GOLDEN * ((uint64_t)TAG_EPOCH << 32 | e)));
    ep->delete_below = (uint64_t)(del * scale);
    ep->change_below = (uint64_t)((del + upd) * scale);
    gen->epochs = e;
    return e;
}

unsigned sb_gen_epoch(const sb_gen *gen)
{
    return gen ? gen->epochs : 0;
}

int64_t sb_gen_epoch_time(const sb_gen *gen, unsigned epoch)
{
    if (!gen || epoch > gen->epochs)
        return -1;
    return gen->epoch[epoch].time;
}

typedef struct history {
    uint32_t version;
    int64_t last_updated;
    bool deleted;
    int64_t deleted_at;
} history;

static void history_get(const sb_gen *g, size_t type, uint32_t patient, uint32_t slot, history *h)
{
    h->version = 1;
    h->last_updated = g->created_at;
    h->deleted = false;
    h->deleted_at = 0;
    if (g->epochs == 0)
        return;
    bool deletable = types[type].deletable;
    uint64_t base = gen_hash(g, TAG_HISTORY, type, patient, slot);
    for (unsigned e = 1; e <= g->epochs; e++) {
        const gen_epoch *ep = &g->epoch[e];
        uint64_t u = mix64(base ^ ep->key) >> 11; /* uniform in [0, 2^53) */
        if (u >= ep->change_below)
            continue;
        if (u < ep->delete_below) {
            if (!deletable)
                continue;
            h->version++;
            h->last_updated = ep->time;
            h->deleted = true;
            h->deleted_at = ep->time;
            return;
        }
        h->version++;
        h->last_updated = ep->time;
    }
}

/* ============================================================================================
 * Resources. */

typedef struct res_ctx {
    const sb_gen *g;
    size_t type;
    uint32_t patient;
    uint32_t slot;
    uint32_t version;
    int64_t last_updated;
    uint64_t content; /* version-independent content hash */
    uint64_t amend;   /* hash of the content and the version: what changes with updates */
    patient_ctx pc;   /* compartment types only */
    char id[40];
    size_t id_len;
    char patient_id[24];
    size_t patient_id_len;
} res_ctx;

/* {"resourceType":..,"id":..,"meta":{..} (the object stays open) */
static void w_head(jw *w, const res_ctx *r, const char *profile)
{
    JW_LIT(w, "{\"resourceType\":\"");
    jw_cstr(w, types[r->type].name);
    JW_LIT(w, "\",\"id\":\"");
    jw_raw(w, r->id, r->id_len);
    JW_LIT(w, "\",\"meta\":{\"versionId\":\"");
    jw_u64(w, r->version);
    JW_LIT(w, "\",\"lastUpdated\":");
    jw_instant(w, r->last_updated);
    if (profile) {
        JW_LIT(w, ",\"profile\":[\"" US_CORE_SD);
        jw_cstr(w, profile);
        JW_LIT(w, "\"]");
    }
    JW_LIT(w, "}");
}

static void w_patient_ref(jw *w, const res_ctx *r)
{
    JW_LIT(w, "{\"reference\":\"Patient/");
    jw_raw(w, r->patient_id, r->patient_id_len);
    JW_LIT(w, "\"}");
}

/* "line":[..],"city":..,"state":"MA","postalCode":..,"country":"US" */
static void w_address_fields(jw *w, uint64_t h, const city *c)
{
    rng r = {h};
    JW_LIT(w, "\"line\":[\"");
    jw_u64(w, rng_range(&r, 1, 999));
    JW_LIT(w, " ");
    jw_cstr(w, street_names[rng_below(&r, COUNT(street_names))]);
    JW_LIT(w, " ");
    jw_cstr(w, street_suffixes[rng_below(&r, COUNT(street_suffixes))]);
    JW_LIT(w, "\"],\"city\":");
    jw_str(w, c->name);
    JW_LIT(w, ",\"state\":\"MA\",\"postalCode\":");
    jw_str(w, c->postal_code);
    JW_LIT(w, ",\"country\":\"US\"");
}

/* A National Provider Identifier: 9 digits and a Luhn check digit over "80840" + them. */
static void jw_npi(jw *w, uint64_t base9)
{
    char digits[14] = {'8', '0', '8', '4', '0'};
    put_padded(digits + 5, base9, 9);
    unsigned sum = 0;
    for (size_t i = 0; i < 14; i++) {
        unsigned d = (unsigned)(digits[13 - i] - '0');
        if (i % 2 == 0) { /* rightmost payload digit is doubled: the check digit follows it */
            d *= 2;
            if (d > 9)
                d -= 9;
        }
        sum += d;
    }
    char *p = jw_room(w, 12);
    p[0] = '"';
    memcpy(p + 1, digits + 5, 9);
    p[10] = (char)('0' + (10 - sum % 10) % 10);
    p[11] = '"';
    w->n += 12;
}

static const city *organization_city(uint32_t org)
{
    return &cities[org % COUNT(cities)];
}

static void w_organization(jw *w, const res_ctx *r)
{
    uint32_t k = r->slot;
    const city *c = organization_city(k);
    w_head(w, r, types[SB_GEN_ORGANIZATION].profile);
    JW_LIT(w, ",\"identifier\":[{\"system\":\"" SYS_NPI "\",\"value\":");
    jw_npi(w, 200000000u + (uint64_t)k);
    JW_LIT(w, "}],\"active\":true,\"type\":[");
    w_concept(w, "http://terminology.hl7.org/CodeSystem/organization-type", "prov",
              "Healthcare Provider");
    JW_LIT(w, "],\"name\":\"");
    jw_cstr(w, c->name);
    JW_LIT(w, " ");
    jw_cstr(w, organization_kinds[(k / COUNT(cities)) % COUNT(organization_kinds)]);
    uint32_t round = k / (COUNT(cities) * COUNT(organization_kinds));
    if (round > 0) {
        JW_LIT(w, " ");
        jw_u64(w, round + 1);
    }
    JW_LIT(w, "\",\"telecom\":[{\"system\":\"phone\",\"value\":");
    jw_phone(w, r->amend);
    JW_LIT(w, ",\"use\":\"work\"}],\"address\":[{\"use\":\"work\",");
    w_address_fields(w, r->content, c);
    JW_LIT(w, "}]}");
}

static void w_lowercase(jw *w, const char *s)
{
    size_t len = strlen(s);
    char *p = jw_room(w, len);
    for (size_t i = 0; i < len; i++)
        p[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] + 32) : s[i];
    w->n += len;
}

static void w_practitioner(jw *w, const res_ctx *r)
{
    rng rg = {r->content};
    bool female = rng_below(&rg, 2) != 0;
    const char *given = female ? given_female[rng_below(&rg, COUNT(given_female))]
                               : given_male[rng_below(&rg, COUNT(given_male))];
    const char *family = family_names[rng_below(&rg, COUNT(family_names))];
    uint32_t org = r->slot % r->g->organizations;
    w_head(w, r, types[SB_GEN_PRACTITIONER].profile);
    JW_LIT(w, ",\"identifier\":[{\"system\":\"" SYS_NPI "\",\"value\":");
    jw_npi(w, 100000000u + (uint64_t)r->slot);
    JW_LIT(w, "}],\"active\":true,\"name\":[{\"use\":\"official\",\"family\":");
    jw_str(w, family);
    JW_LIT(w, ",\"given\":[");
    jw_str(w, given);
    JW_LIT(w, "],\"prefix\":[\"Dr.\"]}],\"telecom\":[{\"system\":\"phone\",\"value\":");
    jw_phone(w, r->amend);
    JW_LIT(w, ",\"use\":\"work\"},{\"system\":\"email\",\"value\":\"");
    w_lowercase(w, given);
    JW_LIT(w, ".");
    w_lowercase(w, family);
    JW_LIT(w, ".");
    jw_u64(w, r->slot);
    JW_LIT(w, "@example.org\",\"use\":\"work\"}],\"address\":[{\"use\":\"work\",");
    /* the practitioner works at the organization's address */
    w_address_fields(w, gen_hash(r->g, TAG_CONTENT, SB_GEN_ORGANIZATION, 0, org),
                     organization_city(org));
    JW_LIT(w, "}],\"gender\":");
    jw_cstr(w, female ? "\"female\"" : "\"male\"");
    JW_LIT(w, "}");
}

static void w_omb_extension(jw *w, const char *url, const char *code, const char *display)
{
    JW_LIT(w, "{\"url\":\"" US_CORE_SD);
    jw_cstr(w, url);
    JW_LIT(w, "\",\"extension\":[{\"url\":\"ombCategory\",\"valueCoding\":");
    w_coding(w, "urn:oid:2.16.840.1.113883.6.238", code, display);
    JW_LIT(w, "},{\"url\":\"text\",\"valueString\":");
    jw_str(w, display);
    JW_LIT(w, "}]}");
}

static void w_patient(jw *w, const res_ctx *r)
{
    const patient_ctx *pc = &r->pc;
    patient_names pn;
    patient_names_get(pc, &pn);
    rng rg = {r->content};
    uint32_t roll = rng_below(&rg, 100);
    const omb *race = &races[0];
    for (uint32_t i = 0, acc = 0; i < COUNT(races); i++) {
        acc += races[i].weight;
        if (roll < acc) {
            race = &races[i];
            break;
        }
    }
    bool hispanic = rng_below(&rg, 100) < 18;
    const city *c = &cities[rng_below(&rg, COUNT(cities))];
    const coded *marital = &marital_statuses[rng_below(&rg, COUNT(marital_statuses))];
    bool spanish = hispanic && rng_below(&rg, 2) == 0;

    w_head(w, r, types[SB_GEN_PATIENT].profile);
    JW_LIT(w, ",\"extension\":[");
    w_omb_extension(w, "us-core-race", race->code, race->display);
    JW_LIT(w, ",");
    w_omb_extension(w, "us-core-ethnicity", hispanic ? "2135-2" : "2186-5",
                    hispanic ? "Hispanic or Latino" : "Not Hispanic or Latino");
    JW_LIT(w, ",{\"url\":\"" US_CORE_SD "us-core-birthsex\",\"valueCode\":");
    jw_cstr(w, pc->female ? "\"F\"}]" : "\"M\"}]");

    /* MRN: the patient index times an odd multiplier not divisible by 5, mod 10^10, is a
     * bijection on [0, 10^10), so MRNs are unique and look random. */
    uint64_t mrn = ((uint64_t)pc->index * UINT64_C(2654435761) + 1234567) % UINT64_C(10000000000);
    JW_LIT(w, ",\"identifier\":[{\"use\":\"usual\",\"type\":");
    w_concept(w, "http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "Medical Record Number");
    JW_LIT(w, ",\"system\":\"" SB_GEN_MRN_SYSTEM "\",\"value\":\"");
    char *p = jw_room(w, 10);
    put_padded(p, mrn, 10);
    w->n += 10;
    JW_LIT(w, "\"}],\"active\":true,\"name\":[{\"use\":\"official\",\"family\":");
    jw_str(w, pn.family);
    JW_LIT(w, ",\"given\":[");
    jw_str(w, pn.given);
    JW_LIT(w, ",");
    jw_str(w, pn.middle);
    JW_LIT(w, "]}],\"telecom\":[{\"system\":\"phone\",\"value\":");
    jw_phone(w, r->amend); /* the phone number changes with each update */
    JW_LIT(w, ",\"use\":\"home\"},{\"system\":\"email\",\"value\":\"");
    w_lowercase(w, pn.given);
    JW_LIT(w, ".");
    w_lowercase(w, pn.family);
    JW_LIT(w, ".");
    jw_u64(w, pc->index);
    JW_LIT(w, "@example.com\"}],\"gender\":");
    jw_cstr(w, pc->female ? "\"female\"" : "\"male\"");
    JW_LIT(w, ",\"birthDate\":");
    jw_date(w, pc->birth);
    JW_LIT(w, ",\"address\":[{\"use\":\"home\",");
    w_address_fields(w, mix64(r->content), c);
    JW_LIT(w, "}],\"maritalStatus\":");
    w_concept(w, "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", marital->code,
              marital->display);
    JW_LIT(w, ",\"communication\":[{\"language\":");
    if (spanish)
        w_concept(w, "urn:ietf:bcp:47", "es", "Spanish");
    else
        w_concept(w, "urn:ietf:bcp:47", "en-US", "English (United States)");
    JW_LIT(w, "}],\"generalPractitioner\":[");
    w_ref(w, SB_GEN_PRACTITIONER, 0, pc->gp);
    JW_LIT(w, "],\"managingOrganization\":");
    w_ref(w, SB_GEN_ORGANIZATION, 0, pc->gp % r->g->organizations);
    JW_LIT(w, "}");
}

static void w_period(jw *w, int64_t start, int64_t end)
{
    JW_LIT(w, "{\"start\":");
    jw_local(w, start);
    JW_LIT(w, ",\"end\":");
    jw_local(w, end);
    JW_LIT(w, "}");
}

static void w_encounter(jw *w, const res_ctx *r)
{
    encounter_info ei;
    encounter_get(r->g, &r->pc, r->slot, &ei);
    /* an update amends the end of the encounter */
    int64_t end = ei.end + (int64_t)(r->version - 1) * 300;
    w_head(w, r, types[SB_GEN_ENCOUNTER].profile);
    JW_LIT(w, ",\"status\":\"finished\",\"class\":");
    w_coding(w, "http://terminology.hl7.org/CodeSystem/v3-ActCode", encounter_classes[ei.cls].code,
             encounter_classes[ei.cls].display);
    JW_LIT(w, ",\"type\":[");
    w_concept(w, SYS_SNOMED, ei.type->code, ei.type->display);
    JW_LIT(w, "],\"subject\":");
    w_patient_ref(w, r);
    JW_LIT(w, ",\"participant\":[{\"type\":[");
    w_concept(w, "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "PPRF",
              "primary performer");
    JW_LIT(w, "],\"period\":");
    w_period(w, ei.start, end);
    JW_LIT(w, ",\"individual\":");
    w_ref(w, SB_GEN_PRACTITIONER, 0, ei.practitioner);
    JW_LIT(w, "}],\"period\":");
    w_period(w, ei.start, end);
    JW_LIT(w, ",\"serviceProvider\":");
    w_ref(w, SB_GEN_ORGANIZATION, 0, ei.organization);
    JW_LIT(w, "}");
}

/* The observation's value at version 1, moved by a few steps on later versions. */
static int64_t amended_value(const res_ctx *r, int64_t value, int64_t step)
{
    if (r->version <= 1)
        return value;
    int64_t delta = step * (1 + (int64_t)below(r->amend, 5));
    return (r->amend & 1) ? value + delta : value - delta;
}

static void w_observation_start(jw *w, const res_ctx *r, const char *profile, bool laboratory)
{
    w_head(w, r, profile);
    JW_LIT(w, ",\"status\":");
    jw_cstr(w, r->version > 1 ? "\"amended\"" : "\"final\"");
    JW_LIT(w, ",\"category\":[{\"coding\":[{\"system\":"
              "\"http://terminology.hl7.org/CodeSystem/observation-category\",\"code\":");
    jw_cstr(w, laboratory ? "\"laboratory\",\"display\":\"Laboratory\"}],\"text\":\"Laboratory\"}]"
                          : "\"vital-signs\",\"display\":\"Vital Signs\"}],\"text\":\"Vital "
                            "Signs\"}]");
}

static void w_observation_context(jw *w, const res_ctx *r, uint32_t encounter, int64_t effective,
                                  int64_t issued)
{
    JW_LIT(w, ",\"subject\":");
    w_patient_ref(w, r);
    JW_LIT(w, ",\"encounter\":");
    w_ref(w, SB_GEN_ENCOUNTER, r->patient, encounter);
    JW_LIT(w, ",\"effectiveDateTime\":");
    jw_local(w, effective);
    JW_LIT(w, ",\"issued\":");
    jw_instant(w, issued);
}

static void w_bp_component(jw *w, const char *code, const char *display, int64_t value)
{
    JW_LIT(w, "{\"code\":");
    w_concept(w, SYS_LOINC, code, display);
    JW_LIT(w, ",\"valueQuantity\":");
    w_quantity(w, value, 0, "mm[Hg]");
    JW_LIT(w, "}");
}

static void w_observation(jw *w, const res_ctx *r)
{
    const sb_gen *g = r->g;
    const patient_ctx *pc = &r->pc;
    observation_layout ol;
    observation_layout_get(g, r->patient, pc->encounters, &ol);
    rng rg = {r->content};

    if (r->slot < ol.labs) {
        uint32_t first = 0, d = 0;
        const panel *pn = report_panel(g, r->patient, 0);
        while (r->slot >= first + pn->count) {
            first += pn->count;
            pn = report_panel(g, r->patient, ++d);
        }
        const analyte *a = &pn->analytes[r->slot - first];
        uint32_t encounter = report_encounter(g, pc, d);
        encounter_info ei;
        encounter_get(g, pc, encounter, &ei);
        int64_t value = amended_value(r, rng_range(&rg, a->low, a->high), 1);
        w_observation_start(w, r, "us-core-observation-lab", true);
        JW_LIT(w, ",\"code\":");
        w_concept(w, SYS_LOINC, a->code, a->display);
        w_observation_context(w, r, encounter, ei.start + 1800, ei.start + 3 * 3600);
        JW_LIT(w, ",\"valueQuantity\":");
        w_quantity(w, value, a->decimals, a->unit);
        JW_LIT(w, "}");
        return;
    }

    uint32_t index = r->slot - ol.labs;
    uint32_t set = index / VITAL_KINDS;
    unsigned kind = index % VITAL_KINDS;
    const vital *v = &vitals[kind];
    uint32_t encounter = vital_set_encounter(&ol, pc, set);
    encounter_info ei;
    encounter_get(g, pc, encounter, &ei);
    w_observation_start(w, r, v->profile, false);
    JW_LIT(w, ",\"code\":");
    w_concept(w, SYS_LOINC, v->code, v->display);
    w_observation_context(w, r, encounter, ei.start + 600, ei.start + 900);

    if (kind == VITAL_BP) {
        int64_t systolic = amended_value(r, rng_range(&rg, 100, 150), 1);
        int64_t diastolic = amended_value(r, rng_range(&rg, 60, 95), 1);
        JW_LIT(w, ",\"component\":[");
        w_bp_component(w, "8480-6", "Systolic blood pressure", systolic);
        JW_LIT(w, ",");
        w_bp_component(w, "8462-4", "Diastolic blood pressure", diastolic);
        JW_LIT(w, "]}");
        return;
    }
    int64_t value;
    if (kind == VITAL_HR) {
        value = rng_range(&rg, 55, 100);
    } else if (kind == VITAL_RR) {
        value = rng_range(&rg, 12, 20);
    } else if (kind == VITAL_TEMP) {
        value = rng_range(&rg, 361, 376);
    } else {
        /* body size: a per-patient height and BMI, the weight varying by visit; values in
         * millimetres and tenths of kilograms or kg/m2 */
        rng body = {mix64(pc->hash ^ 0x626f6479)};
        int64_t height_mm =
            pc->female ? rng_range(&body, 1520, 1750) : rng_range(&body, 1650, 1920);
        int64_t bmi10 = rng_range(&body, 190, 340);
        int64_t weight10 = (bmi10 * height_mm * height_mm + 500000) / 1000000;
        weight10 +=
            (int64_t)below(gen_hash(g, TAG_VITAL_SET, SB_GEN_OBSERVATION, r->patient, set), 61) -
            30;
        if (kind == VITAL_HEIGHT)
            value = height_mm;
        else if (kind == VITAL_WEIGHT)
            value = weight10;
        else
            value = (weight10 * 1000000 + height_mm * height_mm / 2) / (height_mm * height_mm);
    }
    value = amended_value(r, value, 1);
    JW_LIT(w, ",\"valueQuantity\":");
    w_quantity(w, value, v->decimals, v->unit);
    JW_LIT(w, "}");
}

static void w_version_note(jw *w, const res_ctx *r)
{
    if (r->version <= 1)
        return;
    JW_LIT(w, ",\"note\":[{\"time\":");
    jw_instant(w, r->last_updated);
    JW_LIT(w, ",\"text\":\"Record reviewed and amended (version ");
    jw_u64(w, r->version);
    JW_LIT(w, ").\"}]");
}

static void w_condition(jw *w, const res_ctx *r)
{
    const sb_gen *g = r->g;
    const patient_ctx *pc = &r->pc;
    uint32_t chronic_count, chronic_first;
    chronic_get(g, r->patient, &chronic_count, &chronic_first);
    rng rg = {r->content};
    bool chronic = r->slot < chronic_count;
    const char *code, *display;
    if (chronic) {
        const condition *c =
            &chronic_conditions[(chronic_first + r->slot) % COUNT(chronic_conditions)];
        code = c->code;
        display = c->display;
    } else {
        const coded *c = &acute_conditions[rng_below(&rg, COUNT(acute_conditions))];
        code = c->code;
        display = c->display;
    }
    uint32_t encounter = condition_encounter(g, pc, r->slot);
    encounter_info ei;
    encounter_get(g, pc, encounter, &ei);

    w_head(w, r, types[SB_GEN_CONDITION].profile);
    JW_LIT(w, ",\"clinicalStatus\":{\"coding\":[{\"system\":"
              "\"http://terminology.hl7.org/CodeSystem/condition-clinical\",\"code\":");
    jw_cstr(w, chronic ? "\"active\"" : "\"resolved\"");
    JW_LIT(w, "}]},\"verificationStatus\":{\"coding\":[{\"system\":"
              "\"http://terminology.hl7.org/CodeSystem/condition-ver-status\",\"code\":"
              "\"confirmed\"}]},\"category\":[");
    w_concept(w, "http://terminology.hl7.org/CodeSystem/condition-category", "encounter-diagnosis",
              "Encounter Diagnosis");
    JW_LIT(w, "],\"code\":");
    w_concept(w, SYS_SNOMED, code, display);
    JW_LIT(w, ",\"subject\":");
    w_patient_ref(w, r);
    JW_LIT(w, ",\"encounter\":");
    w_ref(w, SB_GEN_ENCOUNTER, r->patient, encounter);
    JW_LIT(w, ",\"onsetDateTime\":");
    jw_local(w, ei.start);
    if (!chronic) {
        int64_t abatement = ei.start + rng_range(&rg, 5, 30) * DAY;
        if (abatement > g->created_at - DAY)
            abatement = g->created_at - DAY;
        JW_LIT(w, ",\"abatementDateTime\":");
        jw_local(w, abatement);
    }
    JW_LIT(w, ",\"recordedDate\":");
    jw_local(w, ei.start + 1200);
    JW_LIT(w, ",\"recorder\":");
    w_ref(w, SB_GEN_PRACTITIONER, 0, ei.practitioner);
    w_version_note(w, r);
    JW_LIT(w, "}");
}

static void w_medication_request(jw *w, const res_ctx *r)
{
    const sb_gen *g = r->g;
    const patient_ctx *pc = &r->pc;
    uint32_t chronic_count, chronic_first;
    chronic_get(g, r->patient, &chronic_count, &chronic_first);
    rng rg = {r->content};
    const medication *med;
    uint32_t encounter;
    bool for_chronic = r->slot < 2 * chronic_count;
    uint32_t reason = 0;
    if (for_chronic) {
        /* one or two (re)orders per chronic condition, at or after its diagnosis */
        reason = r->slot % chronic_count;
        const condition *c =
            &chronic_conditions[(chronic_first + reason) % COUNT(chronic_conditions)];
        med = &medications[c->medication[r->slot / chronic_count]];
        uint32_t diagnosed = condition_encounter(g, pc, reason);
        encounter = diagnosed + rng_below(&rg, pc->encounters - diagnosed);
    } else {
        med = &medications[acute_medications[rng_below(&rg, COUNT(acute_medications))]];
        encounter = rng_below(&rg, pc->encounters);
    }
    encounter_info ei;
    encounter_get(g, pc, encounter, &ei);
    /* status: active for chronic, completed for acute orders; each update moves it on */
    uint32_t status = (for_chronic ? 0 : 3) + r->version - 1;

    w_head(w, r, types[SB_GEN_MEDICATION_REQUEST].profile);
    JW_LIT(w, ",\"status\":\"");
    jw_cstr(w, medication_statuses[status % COUNT(medication_statuses)]);
    JW_LIT(w, "\",\"intent\":\"order\",\"category\":[");
    w_concept(w, "http://terminology.hl7.org/CodeSystem/medicationrequest-category", "community",
              "Community");
    JW_LIT(w, "],\"medicationCodeableConcept\":");
    w_concept(w, SYS_RXNORM, med->code, med->display);
    JW_LIT(w, ",\"subject\":");
    w_patient_ref(w, r);
    JW_LIT(w, ",\"encounter\":");
    w_ref(w, SB_GEN_ENCOUNTER, r->patient, encounter);
    JW_LIT(w, ",\"authoredOn\":");
    jw_local(w, ei.start + 1500);
    JW_LIT(w, ",\"requester\":");
    w_ref(w, SB_GEN_PRACTITIONER, 0, ei.practitioner);
    if (for_chronic) {
        JW_LIT(w, ",\"reasonReference\":[");
        w_ref(w, SB_GEN_CONDITION, r->patient, reason);
        JW_LIT(w, "]");
    }
    JW_LIT(w, ",\"dosageInstruction\":[{\"sequence\":1,\"text\":");
    jw_str(w, med->instruction);
    JW_LIT(w, ",\"timing\":{\"repeat\":{\"frequency\":");
    jw_u64(w, med->per_day);
    JW_LIT(w, ",\"period\":1,\"periodUnit\":\"d\"}}}]}");
}

static void w_allergy(jw *w, const res_ctx *r)
{
    rng rg = {r->content};
    const allergy *a = &allergies[rng_below(&rg, COUNT(allergies))];
    const coded *reaction = &reactions[rng_below(&rg, COUNT(reactions))];
    const char *severity = severities[rng_below(&rg, COUNT(severities))];
    uint32_t criticality = rng_below(&rg, 2) + r->version - 1; /* updates change it */
    int64_t recorded = r->pc.history_start + (int64_t)rng_below(&rg, 3650) * DAY + 15 * 3600;

    w_head(w, r, types[SB_GEN_ALLERGY_INTOLERANCE].profile);
    JW_LIT(w, ",\"clinicalStatus\":{\"coding\":[{\"system\":"
              "\"http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical\","
              "\"code\":\"active\",\"display\":\"Active\"}]},\"verificationStatus\":{\"coding\":"
              "[{\"system\":\"http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
              "\",\"code\":\"confirmed\",\"display\":\"Confirmed\"}]},\"type\":\"allergy\","
              "\"category\":[\"");
    jw_cstr(w, a->category);
    JW_LIT(w, "\"],\"criticality\":\"");
    jw_cstr(w, criticalities[criticality % COUNT(criticalities)]);
    JW_LIT(w, "\",\"code\":");
    w_concept(w, SYS_SNOMED, a->code, a->display);
    JW_LIT(w, ",\"patient\":");
    w_patient_ref(w, r);
    JW_LIT(w, ",\"recordedDate\":");
    jw_local(w, recorded);
    JW_LIT(w, ",\"recorder\":");
    w_ref(w, SB_GEN_PRACTITIONER, 0, r->pc.gp);
    JW_LIT(w, ",\"reaction\":[{\"manifestation\":[");
    w_concept(w, SYS_SNOMED, reaction->code, reaction->display);
    JW_LIT(w, "],\"severity\":\"");
    jw_cstr(w, severity);
    JW_LIT(w, "\"}]}");
}

static void w_immunization(jw *w, const res_ctx *r)
{
    const patient_ctx *pc = &r->pc;
    rng rg = {r->content};
    uint32_t roll = rng_below(&rg, 100);
    const coded *vaccine = roll < 50   ? &vaccines[0]
                           : roll < 65 ? &vaccines[1]
                                       : &vaccines[2 + rng_below(&rg, COUNT(vaccines) - 2)];
    uint32_t encounter = rng_below(&rg, pc->encounters);
    encounter_info ei;
    encounter_get(r->g, pc, encounter, &ei);

    w_head(w, r, types[SB_GEN_IMMUNIZATION].profile);
    JW_LIT(w, ",\"status\":\"completed\",\"vaccineCode\":");
    w_concept(w, SYS_CVX, vaccine->code, vaccine->display);
    JW_LIT(w, ",\"patient\":");
    w_patient_ref(w, r);
    JW_LIT(w, ",\"encounter\":");
    w_ref(w, SB_GEN_ENCOUNTER, r->patient, encounter);
    JW_LIT(w, ",\"occurrenceDateTime\":");
    jw_local(w, ei.start + 1200);
    JW_LIT(w, ",\"primarySource\":true,\"lotNumber\":\"LOT");
    /* the lot number is corrected by updates */
    char *p = jw_room(w, 6);
    put_padded(p, below(r->amend, 1000000), 6);
    w->n += 6;
    JW_LIT(w, "\",\"performer\":[{\"function\":");
    w_concept(w, "http://terminology.hl7.org/CodeSystem/v2-0443", "AP", "Administering Provider");
    JW_LIT(w, ",\"actor\":");
    w_ref(w, SB_GEN_PRACTITIONER, 0, ei.practitioner);
    JW_LIT(w, "}]}");
}

static void w_procedure(jw *w, const res_ctx *r)
{
    const patient_ctx *pc = &r->pc;
    rng rg = {r->content};
    const coded *proc = &procedures[rng_below(&rg, COUNT(procedures))];
    uint32_t encounter = rng_below(&rg, pc->encounters);
    encounter_info ei;
    encounter_get(r->g, pc, encounter, &ei);
    int64_t start = ei.start + 300;
    int64_t end = start + rng_range(&rg, 1, 8) * 300;

    w_head(w, r, types[SB_GEN_PROCEDURE].profile);
    JW_LIT(w, ",\"status\":\"completed\",\"code\":");
    w_concept(w, SYS_SNOMED, proc->code, proc->display);
    JW_LIT(w, ",\"subject\":");
    w_patient_ref(w, r);
    JW_LIT(w, ",\"encounter\":");
    w_ref(w, SB_GEN_ENCOUNTER, r->patient, encounter);
    JW_LIT(w, ",\"performedPeriod\":");
    w_period(w, start, end);
    JW_LIT(w, ",\"performer\":[{\"actor\":");
    w_ref(w, SB_GEN_PRACTITIONER, 0, ei.practitioner);
    JW_LIT(w, "}]");
    w_version_note(w, r);
    JW_LIT(w, "}");
}

static void w_diagnostic_report(jw *w, const res_ctx *r)
{
    const sb_gen *g = r->g;
    const patient_ctx *pc = &r->pc;
    uint32_t first = 0;
    for (uint32_t d = 0; d < r->slot; d++)
        first += report_panel(g, r->patient, d)->count;
    const panel *pn = report_panel(g, r->patient, r->slot);
    uint32_t encounter = report_encounter(g, pc, r->slot);
    encounter_info ei;
    encounter_get(g, pc, encounter, &ei);

    w_head(w, r, types[SB_GEN_DIAGNOSTIC_REPORT].profile);
    JW_LIT(w, ",\"status\":");
    jw_cstr(w, r->version > 1 ? "\"amended\"" : "\"final\"");
    JW_LIT(w, ",\"category\":[");
    w_concept(w, "http://terminology.hl7.org/CodeSystem/v2-0074", "LAB", "Laboratory");
    JW_LIT(w, "],\"code\":");
    w_concept(w, SYS_LOINC, pn->code, pn->display);
    JW_LIT(w, ",\"subject\":");
    w_patient_ref(w, r);
    JW_LIT(w, ",\"encounter\":");
    w_ref(w, SB_GEN_ENCOUNTER, r->patient, encounter);
    JW_LIT(w, ",\"effectiveDateTime\":");
    jw_local(w, ei.start + 1800);
    JW_LIT(w, ",\"issued\":");
    jw_instant(w, ei.start + 3 * 3600);
    JW_LIT(w, ",\"performer\":[");
    w_ref(w, SB_GEN_ORGANIZATION, 0, ei.organization);
    JW_LIT(w, "],\"result\":[");
    for (uint32_t i = 0; i < pn->count; i++) {
        if (i)
            JW_LIT(w, ",");
        w_ref(w, SB_GEN_OBSERVATION, r->patient, first + i);
    }
    JW_LIT(w, "]");
    if (r->version > 1) {
        JW_LIT(w, ",\"conclusion\":\"Results reviewed; report amended (version ");
        jw_u64(w, r->version);
        JW_LIT(w, ").\"");
    }
    JW_LIT(w, "}");
}

/* A small fixed-capacity text builder for the clinical note. */
typedef struct note {
    char text[512];
    size_t len;
} note;

static void note_add(note *n, const char *s)
{
    size_t len = strlen(s);
    if (len > sizeof(n->text) - n->len)
        len = sizeof(n->text) - n->len;
    memcpy(n->text + n->len, s, len);
    n->len += len;
}

static void note_add_u64(note *n, uint64_t v)
{
    char digits[20];
    size_t len = put_u64(digits, v);
    if (len <= sizeof(n->text) - n->len) {
        memcpy(n->text + n->len, digits, len);
        n->len += len;
    }
}

static void w_document_reference(jw *w, const res_ctx *r)
{
    const patient_ctx *pc = &r->pc;
    rng rg = {r->content};
    uint32_t encounter = rng_below(&rg, pc->encounters);
    encounter_info ei;
    encounter_get(r->g, pc, encounter, &ei);
    const coded *doc_type =
        ei.cls == CLASS_IMP ? &discharge_summary : &note_types[rng_below(&rg, COUNT(note_types))];
    patient_names pn;
    patient_names_get(pc, &pn);

    note text = {.len = 0};
    char date[10];
    put_date(date, ei.start + LOCAL_OFFSET);
    note_add(&text, doc_type->display);
    note_add(&text, "\nPatient: ");
    note_add(&text, pn.given);
    note_add(&text, " ");
    note_add(&text, pn.family);
    note_add(&text, "\nDate: ");
    if (sizeof(text.text) - text.len >= sizeof(date)) {
        memcpy(text.text + text.len, date, sizeof(date));
        text.len += sizeof(date);
    }
    note_add(&text, "\nReason for visit: ");
    note_add(&text, ei.type->display);
    note_add(&text, "\nAssessment: stable. Plan: follow up in ");
    note_add_u64(&text, 1 + rng_below(&rg, 12));
    note_add(&text, " months.\nVersion: ");
    note_add_u64(&text, r->version);
    note_add(&text, "\n");

    w_head(w, r, types[SB_GEN_DOCUMENT_REFERENCE].profile);
    JW_LIT(w, ",\"status\":\"current\",\"docStatus\":");
    jw_cstr(w, r->version > 1 ? "\"amended\"" : "\"final\"");
    JW_LIT(w, ",\"type\":");
    w_concept(w, SYS_LOINC, doc_type->code, doc_type->display);
    JW_LIT(w, ",\"category\":[");
    w_concept(w, "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
              "clinical-note", "Clinical Note");
    JW_LIT(w, "],\"subject\":");
    w_patient_ref(w, r);
    JW_LIT(w, ",\"date\":");
    jw_local(w, ei.end);
    JW_LIT(w, ",\"author\":[");
    w_ref(w, SB_GEN_PRACTITIONER, 0, ei.practitioner);
    JW_LIT(w, "],\"custodian\":");
    w_ref(w, SB_GEN_ORGANIZATION, 0, ei.organization);
    JW_LIT(w, ",\"content\":[{\"attachment\":{\"contentType\":\"text/plain\",\"language\":"
              "\"en-US\",\"data\":");
    jw_base64(w, (const unsigned char *)text.text, text.len);
    JW_LIT(w, ",\"size\":");
    jw_u64(w, text.len);
    JW_LIT(w, ",\"title\":");
    jw_str(w, doc_type->display);
    JW_LIT(w, ",\"creation\":");
    jw_local(w, ei.end);
    JW_LIT(w, "},\"format\":{\"system\":\"http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/"
              "formatcode\",\"code\":\"urn:ihe:iti:xds:2017:mimeTypeSufficient\",\"display\":"
              "\"mimeType Sufficient\"}}],\"context\":{\"encounter\":[");
    w_ref(w, SB_GEN_ENCOUNTER, r->patient, encounter);
    JW_LIT(w, "],\"period\":");
    w_period(w, ei.start, ei.end);
    JW_LIT(w, "}}");
}

bool sb_gen_group_members(const sb_gen *gen, uint32_t slot, uint32_t *first, uint32_t *count)
{
    if (first)
        *first = 0;
    if (count)
        *count = 0;
    if (!gen || slot >= gen->groups)
        return false;
    uint32_t lo = 0, n = gen->patients;
    if (slot > 0) {
        lo = (uint32_t)((uint64_t)(slot - 1) * SB_GEN_COHORT_SIZE); /* < patients */
        n = gen->patients - lo < SB_GEN_COHORT_SIZE ? gen->patients - lo : SB_GEN_COHORT_SIZE;
    }
    if (first)
        *first = lo;
    if (count)
        *count = n;
    return true;
}

static void w_group(jw *w, const res_ctx *r)
{
    uint32_t first, count;
    sb_gen_group_members(r->g, r->slot, &first, &count);
    w_head(w, r, NULL);
    JW_LIT(w, ",\"identifier\":[{\"system\":\"http://hospital.example.org/fhir/sid/group\","
              "\"value\":\"");
    jw_raw(w, r->id, r->id_len);
    JW_LIT(w, "\"}],\"active\":true,\"type\":\"person\",\"actual\":true,\"name\":");
    if (r->slot == 0) {
        JW_LIT(w, "\"All patients\"");
    } else {
        JW_LIT(w, "\"Cohort ");
        jw_u64(w, r->slot - 1);
        JW_LIT(w, "\"");
    }
    JW_LIT(w, ",\"quantity\":");
    jw_u64(w, count);
    /* an update hands the group to another organization */
    JW_LIT(w, ",\"managingEntity\":");
    w_ref(w, SB_GEN_ORGANIZATION, 0, (r->slot + r->version - 1) % r->g->organizations);
    JW_LIT(w, ",\"member\":[");
    for (uint32_t i = 0; i < count; i++) {
        char *p = jw_room(w, 64); /* ",{..pat-" 37 + 10 digits + 3 */
        size_t n = 0;
        if (i)
            p[n++] = ',';
        memcpy(p + n, "{\"entity\":{\"reference\":\"Patient/pat-", 36);
        n += 36;
        n += put_u64(p + n, (uint64_t)first + i);
        memcpy(p + n, "\"}}", 3);
        w->n += n + 3;
    }
    JW_LIT(w, "]}");
}

/* ============================================================================================
 * Entry points. */

static bool in_range(const sb_gen *g, size_t type, uint32_t patient, uint32_t slot)
{
    if (type >= SB_GEN_TYPE_COUNT)
        return false;
    if (!types[type].compartment)
        return slot < slots_of(g, type, 0);
    return patient < g->patients && slot < slots_of(g, type, patient);
}

static void fill_meta(size_t type, uint32_t patient, uint32_t slot, const history *h,
                      sb_resource_meta *meta)
{
    memset(meta, 0, sizeof(*meta));
    format_id(type, patient, slot, meta->id);
    if (types[type].compartment)
        format_id(SB_GEN_PATIENT, patient, 0, meta->patient_id);
    meta->last_updated = h->last_updated;
    meta->version = h->version;
    meta->deleted = h->deleted;
    meta->deleted_at = h->deleted_at;
}

bool sb_gen_meta(const sb_gen *gen, size_t type, uint32_t patient, uint32_t slot,
                 sb_resource_meta *meta)
{
    if (!gen || !in_range(gen, type, patient, slot)) {
        if (meta)
            memset(meta, 0, sizeof(*meta));
        return false;
    }
    if (!types[type].compartment)
        patient = 0;
    history h;
    history_get(gen, type, patient, slot, &h);
    if (meta)
        fill_meta(type, patient, slot, &h, meta);
    return true;
}

bool sb_gen_resource(const sb_gen *gen, size_t type, uint32_t patient, uint32_t slot, fs_buf *out,
                     sb_resource_meta *meta)
{
    sb_resource_meta scratch;
    if (!meta)
        meta = &scratch;
    if (!sb_gen_meta(gen, type, patient, slot, meta))
        return false;
    if (meta->deleted || !out)
        return true;
    if (!types[type].compartment)
        patient = 0;

    res_ctx r;
    r.g = gen;
    r.type = type;
    r.patient = patient;
    r.slot = slot;
    r.version = meta->version;
    r.last_updated = meta->last_updated;
    r.content = gen_hash(gen, TAG_CONTENT, type, patient, slot);
    r.amend = mix64(r.content ^ (GOLDEN * r.version));
    r.id_len = strlen(meta->id);
    memcpy(r.id, meta->id, r.id_len + 1);
    r.patient_id_len = strlen(meta->patient_id);
    memcpy(r.patient_id, meta->patient_id, r.patient_id_len + 1);
    if (types[type].compartment)
        patient_ctx_init(gen, patient, &r.pc);
    else
        memset(&r.pc, 0, sizeof(r.pc));

    size_t start = out->len;
    jw w;
    w.out = out;
    w.n = 0;
    w.ok = true;
    switch (type) {
    case SB_GEN_ORGANIZATION: w_organization(&w, &r); break;
    case SB_GEN_PRACTITIONER: w_practitioner(&w, &r); break;
    case SB_GEN_PATIENT: w_patient(&w, &r); break;
    case SB_GEN_ENCOUNTER: w_encounter(&w, &r); break;
    case SB_GEN_OBSERVATION: w_observation(&w, &r); break;
    case SB_GEN_CONDITION: w_condition(&w, &r); break;
    case SB_GEN_MEDICATION_REQUEST: w_medication_request(&w, &r); break;
    case SB_GEN_ALLERGY_INTOLERANCE: w_allergy(&w, &r); break;
    case SB_GEN_IMMUNIZATION: w_immunization(&w, &r); break;
    case SB_GEN_PROCEDURE: w_procedure(&w, &r); break;
    case SB_GEN_DIAGNOSTIC_REPORT: w_diagnostic_report(&w, &r); break;
    case SB_GEN_DOCUMENT_REFERENCE: w_document_reference(&w, &r); break;
    default: w_group(&w, &r); break;
    }
    jw_flush(&w);
    if (!w.ok) {
        /* leave the buffer as it was */
        out->len = start;
        if (out->data)
            out->data[start] = '\0';
        return false;
    }
    return true;
}

/* ============================================================================================
 * Ids: formatting and parsing. */

bool sb_gen_format_id(const sb_gen *gen, size_t type, uint32_t patient, uint32_t slot, char *buf,
                      size_t size)
{
    if (!buf || size == 0)
        return false;
    buf[0] = '\0';
    if (!gen || !in_range(gen, type, patient, slot))
        return false;
    char id[40];
    size_t len = format_id(type, types[type].compartment ? patient : 0, slot, id);
    if (len + 1 > size)
        return false;
    memcpy(buf, id, len + 1);
    return true;
}

void sb_gen_patient_id(const sb_gen *gen, uint32_t patient, char *buf, size_t size)
{
    (void)gen;
    if (!buf || size == 0)
        return;
    char id[40];
    size_t len = format_id(SB_GEN_PATIENT, patient, 0, id);
    if (len + 1 > size)
        len = size - 1;
    memcpy(buf, id, len);
    buf[len] = '\0';
}

/* A canonical decimal uint32 (no sign, no leading zeros); advances *s. */
static bool parse_u32(const char **s, uint32_t *out)
{
    const char *p = *s;
    if (*p < '0' || *p > '9')
        return false;
    if (*p == '0' && p[1] >= '0' && p[1] <= '9')
        return false;
    uint64_t v = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > UINT32_MAX)
            return false;
    }
    *out = (uint32_t)v;
    *s = p;
    return true;
}

bool sb_gen_parse_id(const sb_gen *gen, size_t type, const char *id, uint32_t *patient,
                     uint32_t *slot)
{
    uint32_t p = 0, s = 0;
    bool ok = false;
    if (!gen || !id || type >= SB_GEN_TYPE_COUNT)
        goto out;
    const char *c = id;
    if (type == SB_GEN_GROUP) {
        if (strcmp(id, "all") == 0) {
            s = 0;
        } else {
            uint32_t k;
            if (strncmp(c, "cohort-", 7) != 0)
                goto out;
            c += 7;
            if (!parse_u32(&c, &k) || *c != '\0' || k == UINT32_MAX)
                goto out;
            s = k + 1;
        }
    } else {
        size_t plen = strlen(types[type].id_prefix);
        if (strncmp(c, types[type].id_prefix, plen) != 0 || c[plen] != '-')
            goto out;
        c += plen + 1;
        if (type == SB_GEN_ORGANIZATION || type == SB_GEN_PRACTITIONER) {
            if (!parse_u32(&c, &s))
                goto out;
        } else {
            if (!parse_u32(&c, &p))
                goto out;
            if (type != SB_GEN_PATIENT && (*c++ != '-' || !parse_u32(&c, &s)))
                goto out;
        }
        if (*c != '\0')
            goto out;
    }
    ok = in_range(gen, type, p, s);
out:
    if (patient)
        *patient = ok ? p : 0;
    if (slot)
        *slot = ok ? s : 0;
    return ok;
}

/* ============================================================================================
 * Several practices: patients split over them (largest-remainder apportionment of Zipf
 * weights). */

typedef struct share {
    double fraction; /* the fractional part of the practice's share */
    uint32_t index;
} share;

static int by_fraction(const void *a, const void *b)
{
    const share *x = a, *y = b;
    if (x->fraction != y->fraction)
        return x->fraction > y->fraction ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

bool sb_gen_split_patients(uint32_t total, uint32_t practices, double skew, uint32_t *sizes)
{
    if (practices == 0 || total < practices || !(skew >= 0 && skew <= 10) || !sizes)
        return false;
    share *shares = fs_malloc((size_t)practices * sizeof *shares);
    if (!shares)
        return false;
    double weights = 0;
    for (uint32_t i = 0; i < practices; i++)
        weights += pow((double)i + 1, -skew);
    uint32_t extra = total - practices, given = 0;
    for (uint32_t i = 0; i < practices; i++) {
        double exact = (double)extra * pow((double)i + 1, -skew) / weights;
        double whole = floor(exact);
        if (whole > (double)(extra - given)) /* rounding cannot overshoot the total */
            whole = (double)(extra - given);
        sizes[i] = 1 + (uint32_t)whole;
        given += (uint32_t)whole;
        shares[i] = (share){exact - whole, i};
    }
    qsort(shares, practices, sizeof *shares, by_fraction);
    for (uint32_t k = 0; given < extra; k = (k + 1) % practices, given++)
        sizes[shares[k].index]++;
    fs_free(shares);
    return true;
}
