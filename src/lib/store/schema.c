/* store/schema.c: the schema of both engines and its versioned migrations.
 *
 * A migration is an ordered step with one SQL script per engine (plus, for step 1, the tables of
 * the common resource types, whose DDL is generated like that of any type created on demand).
 * Each step runs in its own transaction together with its row in schema_version, so a crash in
 * the middle leaves the previous version intact. Concurrent openers are serialised (SQLite: BEGIN
 * IMMEDIATE; PostgreSQL: a transaction-level advisory lock) and re-read the version inside the
 * transaction, so a step is applied once. A database whose version is newer than this library's
 * is refused: an older binary must not write into a schema it does not know.
 *
 * To change the schema, append a step: never edit a released one. docs/store.md lists them.
 *
 * It runs statements through the engine's vtable and uses shared.c's small helpers, nothing of the
 * store's API files: store.c migrates on opening, types.c creates a type's table on first use. */
#include <stdio.h>
#include <string.h>

#include "store/store_private.h"

/* Tables that exist from version 1, so that the views over them can too. */
/* clang-format off */
static const char *const common_types[] = {
    "Patient",          "Observation",       "Condition",         "Encounter",
    "Procedure",        "Immunization",      "MedicationRequest", "AllergyIntolerance",
    "DiagnosticReport", "DocumentReference", "CarePlan",          "CareTeam",
    "Goal",             "Device",            "Location",          "Organization",
    "Practitioner",     "PractitionerRole",  "Provenance",        "Medication",
    "Coverage",         "Claim",             "ExplanationOfBenefit", "ImagingStudy",
    NULL};
/* clang-format on */

/* ---- version 1 ------------------------------------------------------------------------------- */

static const char v1_sqlite[] =
    "CREATE TABLE IF NOT EXISTS sync_runs ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " endpoint TEXT NOT NULL,"
    " mode TEXT,"
    " status TEXT NOT NULL CHECK (status IN ('running','ok','partial','failed')),"
    " started_at TEXT NOT NULL,"
    " finished_at TEXT,"
    " since TEXT,"
    " transaction_time TEXT,"
    " counts TEXT,"
    " resources INTEGER NOT NULL DEFAULT 0,"
    " deletions INTEGER NOT NULL DEFAULT 0,"
    " quarantined INTEGER NOT NULL DEFAULT 0,"
    " error TEXT,"
    " pid INTEGER,"
    " hostname TEXT);"
    "CREATE INDEX IF NOT EXISTS sync_runs_endpoint ON sync_runs (endpoint, id);"
    "CREATE TABLE IF NOT EXISTS sync_state ("
    " endpoint TEXT PRIMARY KEY NOT NULL,"
    " watermark TEXT,"
    " updated_at TEXT NOT NULL,"
    " run_id INTEGER);"
    "CREATE TABLE IF NOT EXISTS deletions ("
    " resource_type TEXT NOT NULL,"
    " id TEXT NOT NULL,"
    " deleted_at TEXT NOT NULL,"
    " run_id INTEGER,"
    " recorded_at TEXT NOT NULL,"
    " PRIMARY KEY (resource_type, id, deleted_at));"
    "CREATE TABLE IF NOT EXISTS quarantine ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " run_id INTEGER,"
    " endpoint TEXT,"
    " source TEXT,"
    " line_number INTEGER,"
    " reason TEXT NOT NULL,"
    " line BLOB,"
    " line_bytes INTEGER NOT NULL,"
    " created_at TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS quarantine_run ON quarantine (run_id);"
    "CREATE TABLE IF NOT EXISTS sync_locks ("
    " endpoint TEXT PRIMARY KEY NOT NULL,"
    " pid INTEGER,"
    " hostname TEXT,"
    " owner TEXT,"
    " acquired_at TEXT NOT NULL,"
    " heartbeat_at TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS work_items ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " kind TEXT NOT NULL CHECK (kind IN ('endpoint-sync','file-load')),"
    " endpoint TEXT NOT NULL,"
    " batch TEXT,"
    " key TEXT UNIQUE,"
    " payload TEXT NOT NULL DEFAULT '{}',"
    " state TEXT NOT NULL DEFAULT 'pending'"
    "  CHECK (state IN ('pending','claimed','done','failed')),"
    " claimed_by TEXT,"
    " claimed_at TEXT,"
    " lease_until INTEGER,"
    " not_before INTEGER NOT NULL DEFAULT 0,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " max_attempts INTEGER NOT NULL DEFAULT 5,"
    " result TEXT,"
    " error TEXT,"
    " created_at TEXT NOT NULL,"
    " updated_at TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS work_items_state ON work_items (state, id);"
    "CREATE INDEX IF NOT EXISTS work_items_batch ON work_items (batch, state);"
    /* Views: the columns people filter on. json_extract for strings; the -> operator (SQLite
     * 3.38+) for quantities, because it returns a number's exact text ("1.50" stays "1.50"). */
    "CREATE VIEW IF NOT EXISTS patient_view AS SELECT id,"
    " json_extract(raw, '$.name[0].family') AS family,"
    " (SELECT group_concat(value, ' ') FROM json_each(raw, '$.name[0].given')) AS given,"
    " json_extract(raw, '$.birthDate') AS birth_date,"
    " json_extract(raw, '$.gender') AS gender,"
    " coalesce(json_extract(raw, '$.deceasedDateTime'),"
    "  json_extract(raw, '$.deceasedBoolean')) AS deceased,"
    " last_updated FROM \"Patient\";"
    "CREATE VIEW IF NOT EXISTS observation_view AS SELECT id, patient_id,"
    " json_extract(raw, '$.status') AS status,"
    " json_extract(raw, '$.category[0].coding[0].code') AS category,"
    " json_extract(raw, '$.code.coding[0].code') AS code,"
    " coalesce(json_extract(raw, '$.code.text'),"
    "  json_extract(raw, '$.code.coding[0].display')) AS display,"
    " coalesce(raw -> '$.valueQuantity.value', json_extract(raw, '$.valueString'),"
    "  json_extract(raw, '$.valueCodeableConcept.text'),"
    "  json_extract(raw, '$.valueCodeableConcept.coding[0].display'),"
    "  raw -> '$.valueInteger', raw -> '$.valueBoolean') AS value,"
    " json_extract(raw, '$.valueQuantity.unit') AS unit,"
    " coalesce(json_extract(raw, '$.effectiveDateTime'),"
    "  json_extract(raw, '$.effectivePeriod.start'), json_extract(raw, '$.effectiveInstant'),"
    "  json_extract(raw, '$.issued')) AS effective,"
    " last_updated FROM \"Observation\";"
    "CREATE VIEW IF NOT EXISTS condition_view AS SELECT id, patient_id,"
    " json_extract(raw, '$.clinicalStatus.coding[0].code') AS clinical_status,"
    " json_extract(raw, '$.verificationStatus.coding[0].code') AS verification_status,"
    " json_extract(raw, '$.category[0].coding[0].code') AS category,"
    " json_extract(raw, '$.code.coding[0].code') AS code,"
    " coalesce(json_extract(raw, '$.code.text'),"
    "  json_extract(raw, '$.code.coding[0].display')) AS display,"
    " coalesce(json_extract(raw, '$.onsetDateTime'),"
    "  json_extract(raw, '$.onsetPeriod.start')) AS onset,"
    " coalesce(json_extract(raw, '$.abatementDateTime'),"
    "  json_extract(raw, '$.abatementPeriod.start')) AS abatement,"
    " json_extract(raw, '$.recordedDate') AS recorded_date,"
    " last_updated FROM \"Condition\";"
    "CREATE VIEW IF NOT EXISTS encounter_view AS SELECT id, patient_id,"
    " json_extract(raw, '$.status') AS status,"
    " json_extract(raw, '$.class.code') AS class,"
    " json_extract(raw, '$.type[0].coding[0].code') AS type_code,"
    " coalesce(json_extract(raw, '$.type[0].text'),"
    "  json_extract(raw, '$.type[0].coding[0].display')) AS type_display,"
    " json_extract(raw, '$.period.start') AS period_start,"
    " json_extract(raw, '$.period.end') AS period_end,"
    " coalesce(json_extract(raw, '$.reasonCode[0].text'),"
    "  json_extract(raw, '$.reasonCode[0].coding[0].display')) AS reason,"
    " last_updated FROM \"Encounter\";"
    "CREATE VIEW IF NOT EXISTS medication_request_view AS SELECT id, patient_id,"
    " json_extract(raw, '$.status') AS status,"
    " json_extract(raw, '$.intent') AS intent,"
    " json_extract(raw, '$.medicationCodeableConcept.coding[0].code') AS code,"
    " coalesce(json_extract(raw, '$.medicationCodeableConcept.text'),"
    "  json_extract(raw, '$.medicationCodeableConcept.coding[0].display')) AS display,"
    " json_extract(raw, '$.authoredOn') AS authored_on,"
    " last_updated FROM \"MedicationRequest\";"
    "CREATE VIEW IF NOT EXISTS immunization_view AS SELECT id, patient_id,"
    " json_extract(raw, '$.status') AS status,"
    " json_extract(raw, '$.vaccineCode.coding[0].code') AS code,"
    " coalesce(json_extract(raw, '$.vaccineCode.text'),"
    "  json_extract(raw, '$.vaccineCode.coding[0].display')) AS display,"
    " json_extract(raw, '$.occurrenceDateTime') AS occurrence,"
    " last_updated FROM \"Immunization\";"
    "CREATE VIEW IF NOT EXISTS procedure_view AS SELECT id, patient_id,"
    " json_extract(raw, '$.status') AS status,"
    " json_extract(raw, '$.code.coding[0].code') AS code,"
    " coalesce(json_extract(raw, '$.code.text'),"
    "  json_extract(raw, '$.code.coding[0].display')) AS display,"
    " coalesce(json_extract(raw, '$.performedDateTime'),"
    "  json_extract(raw, '$.performedPeriod.start')) AS performed,"
    " last_updated FROM \"Procedure\";";

/* PostgreSQL: the same tables; JSON documents as jsonb, bytes as bytea, identities for ids. */
static const char v1_postgresql[] =
    "CREATE TABLE IF NOT EXISTS sync_runs ("
    " id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
    " endpoint text NOT NULL,"
    " mode text,"
    " status text NOT NULL CHECK (status IN ('running','ok','partial','failed')),"
    " started_at text NOT NULL,"
    " finished_at text,"
    " since text,"
    " transaction_time text,"
    " counts jsonb,"
    " resources bigint NOT NULL DEFAULT 0,"
    " deletions bigint NOT NULL DEFAULT 0,"
    " quarantined bigint NOT NULL DEFAULT 0,"
    " error text,"
    " pid bigint,"
    " hostname text);"
    "CREATE INDEX IF NOT EXISTS sync_runs_endpoint ON sync_runs (endpoint, id);"
    "CREATE TABLE IF NOT EXISTS sync_state ("
    " endpoint text PRIMARY KEY,"
    " watermark text,"
    " updated_at text NOT NULL,"
    " run_id bigint);"
    "CREATE TABLE IF NOT EXISTS deletions ("
    " resource_type text NOT NULL,"
    " id text COLLATE \"C\" NOT NULL,"
    " deleted_at text NOT NULL,"
    " run_id bigint,"
    " recorded_at text NOT NULL,"
    " PRIMARY KEY (resource_type, id, deleted_at));"
    "CREATE TABLE IF NOT EXISTS quarantine ("
    " id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
    " run_id bigint,"
    " endpoint text,"
    " source text,"
    " line_number bigint,"
    " reason text NOT NULL,"
    " line bytea,"
    " line_bytes bigint NOT NULL,"
    " created_at text NOT NULL);"
    "CREATE INDEX IF NOT EXISTS quarantine_run ON quarantine (run_id);"
    "CREATE TABLE IF NOT EXISTS sync_locks ("
    " endpoint text PRIMARY KEY,"
    " pid bigint,"
    " hostname text,"
    " owner text,"
    " acquired_at text NOT NULL,"
    " heartbeat_at text NOT NULL);"
    "CREATE TABLE IF NOT EXISTS work_items ("
    " id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
    " kind text NOT NULL CHECK (kind IN ('endpoint-sync','file-load')),"
    " endpoint text NOT NULL,"
    " batch text,"
    " key text UNIQUE,"
    " payload jsonb NOT NULL DEFAULT '{}',"
    " state text NOT NULL DEFAULT 'pending'"
    "  CHECK (state IN ('pending','claimed','done','failed')),"
    " claimed_by text,"
    " claimed_at text,"
    " lease_until bigint,"
    " not_before bigint NOT NULL DEFAULT 0,"
    " attempts integer NOT NULL DEFAULT 0,"
    " max_attempts integer NOT NULL DEFAULT 5,"
    " result jsonb,"
    " error text,"
    " created_at text NOT NULL,"
    " updated_at text NOT NULL);"
    "CREATE INDEX IF NOT EXISTS work_items_state ON work_items (state, id);"
    "CREATE INDEX IF NOT EXISTS work_items_batch ON work_items (batch, state);"
    "CREATE OR REPLACE VIEW patient_view AS SELECT id,"
    " resource #>> '{name,0,family}' AS family,"
    " (SELECT string_agg(g, ' ') FROM"
    "  jsonb_array_elements_text(CASE jsonb_typeof(resource #> '{name,0,given}')"
    "  WHEN 'array' THEN resource #> '{name,0,given}' END) AS g) AS given,"
    " resource ->> 'birthDate' AS birth_date,"
    " resource ->> 'gender' AS gender,"
    " coalesce(resource ->> 'deceasedDateTime', resource ->> 'deceasedBoolean') AS deceased,"
    " last_updated FROM \"Patient\";"
    "CREATE OR REPLACE VIEW observation_view AS SELECT id, patient_id,"
    " resource ->> 'status' AS status,"
    " resource #>> '{category,0,coding,0,code}' AS category,"
    " resource #>> '{code,coding,0,code}' AS code,"
    " coalesce(resource #>> '{code,text}', resource #>> '{code,coding,0,display}') AS display,"
    " coalesce(resource #>> '{valueQuantity,value}', resource ->> 'valueString',"
    "  resource #>> '{valueCodeableConcept,text}',"
    "  resource #>> '{valueCodeableConcept,coding,0,display}',"
    "  resource ->> 'valueInteger', resource ->> 'valueBoolean') AS value,"
    " resource #>> '{valueQuantity,unit}' AS unit,"
    " coalesce(resource ->> 'effectiveDateTime', resource #>> '{effectivePeriod,start}',"
    "  resource ->> 'effectiveInstant', resource ->> 'issued') AS effective,"
    " last_updated FROM \"Observation\";"
    "CREATE OR REPLACE VIEW condition_view AS SELECT id, patient_id,"
    " resource #>> '{clinicalStatus,coding,0,code}' AS clinical_status,"
    " resource #>> '{verificationStatus,coding,0,code}' AS verification_status,"
    " resource #>> '{category,0,coding,0,code}' AS category,"
    " resource #>> '{code,coding,0,code}' AS code,"
    " coalesce(resource #>> '{code,text}', resource #>> '{code,coding,0,display}') AS display,"
    " coalesce(resource ->> 'onsetDateTime', resource #>> '{onsetPeriod,start}') AS onset,"
    " coalesce(resource ->> 'abatementDateTime', resource #>> '{abatementPeriod,start}')"
    "  AS abatement,"
    " resource ->> 'recordedDate' AS recorded_date,"
    " last_updated FROM \"Condition\";"
    "CREATE OR REPLACE VIEW encounter_view AS SELECT id, patient_id,"
    " resource ->> 'status' AS status,"
    " resource #>> '{class,code}' AS class,"
    " resource #>> '{type,0,coding,0,code}' AS type_code,"
    " coalesce(resource #>> '{type,0,text}', resource #>> '{type,0,coding,0,display}')"
    "  AS type_display,"
    " resource #>> '{period,start}' AS period_start,"
    " resource #>> '{period,end}' AS period_end,"
    " coalesce(resource #>> '{reasonCode,0,text}',"
    "  resource #>> '{reasonCode,0,coding,0,display}') AS reason,"
    " last_updated FROM \"Encounter\";"
    "CREATE OR REPLACE VIEW medication_request_view AS SELECT id, patient_id,"
    " resource ->> 'status' AS status,"
    " resource ->> 'intent' AS intent,"
    " resource #>> '{medicationCodeableConcept,coding,0,code}' AS code,"
    " coalesce(resource #>> '{medicationCodeableConcept,text}',"
    "  resource #>> '{medicationCodeableConcept,coding,0,display}') AS display,"
    " resource ->> 'authoredOn' AS authored_on,"
    " last_updated FROM \"MedicationRequest\";"
    "CREATE OR REPLACE VIEW immunization_view AS SELECT id, patient_id,"
    " resource ->> 'status' AS status,"
    " resource #>> '{vaccineCode,coding,0,code}' AS code,"
    " coalesce(resource #>> '{vaccineCode,text}', resource #>> '{vaccineCode,coding,0,display}')"
    "  AS display,"
    " resource ->> 'occurrenceDateTime' AS occurrence,"
    " last_updated FROM \"Immunization\";"
    "CREATE OR REPLACE VIEW procedure_view AS SELECT id, patient_id,"
    " resource ->> 'status' AS status,"
    " resource #>> '{code,coding,0,code}' AS code,"
    " coalesce(resource #>> '{code,text}', resource #>> '{code,coding,0,display}') AS display,"
    " coalesce(resource ->> 'performedDateTime', resource #>> '{performedPeriod,start}')"
    "  AS performed,"
    " last_updated FROM \"Procedure\";";

/* ---- version 2 ------------------------------------------------------------------------------- */

/* Which FHIR server each endpoint syncs: resource ids are unique within one server only, so a
 * store refuses a second server (fs_store_bind_endpoint). */
static const char v2_sqlite[] = "CREATE TABLE IF NOT EXISTS endpoints ("
                                " name TEXT PRIMARY KEY NOT NULL,"
                                " base_url TEXT NOT NULL,"
                                " bound_at TEXT NOT NULL)";
static const char v2_postgresql[] = "CREATE TABLE IF NOT EXISTS endpoints ("
                                    " name text PRIMARY KEY,"
                                    " base_url text NOT NULL,"
                                    " bound_at text NOT NULL)";

/* ---- version 3 ------------------------------------------------------------------------------- */

/* Why a resource was deleted: listed in an export's deleted file, or missing from a complete
 * full export or reconciliation crawl (the store compares what the server returned). */
static const char v3_sqlite[] = "ALTER TABLE deletions ADD COLUMN reason TEXT";
static const char v3_postgresql[] = "ALTER TABLE deletions ADD COLUMN IF NOT EXISTS reason text";

/* Version 4: SQL on FHIR views. The registry of materialized ViewDefinitions (views.c); the
 * hand-written SQL views of version 1 give way to the shipped ViewDefinitions (views/README.md
 * maps their columns). */
#define V4_DROP_VIEWS                                                                              \
    "DROP VIEW IF EXISTS patient_view; DROP VIEW IF EXISTS observation_view;"                      \
    "DROP VIEW IF EXISTS condition_view; DROP VIEW IF EXISTS encounter_view;"                      \
    "DROP VIEW IF EXISTS medication_request_view; DROP VIEW IF EXISTS immunization_view;"          \
    "DROP VIEW IF EXISTS procedure_view;"
static const char v4_sqlite[] = V4_DROP_VIEWS "CREATE TABLE IF NOT EXISTS view_definitions ("
                                              " name TEXT PRIMARY KEY NOT NULL,"
                                              " resource_type TEXT NOT NULL,"
                                              " definition TEXT NOT NULL,"
                                              " digest TEXT NOT NULL,"
                                              " created_at TEXT NOT NULL,"
                                              " refreshed_at TEXT NOT NULL)";
static const char v4_postgresql[] = V4_DROP_VIEWS "CREATE TABLE IF NOT EXISTS view_definitions ("
                                                  " name text PRIMARY KEY,"
                                                  " resource_type text NOT NULL,"
                                                  " definition text NOT NULL,"
                                                  " digest text NOT NULL,"
                                                  " created_at text NOT NULL,"
                                                  " refreshed_at text NOT NULL)";

typedef struct migration {
    int version;
    const char *description;
    bool common_types; /* create the common type tables before the script */
    const char *sqlite_sql;
    const char *postgresql_sql;
} migration;

static const migration migrations[] = {
    {1, "resource tables, runs, state, deletions, quarantine, locks, work queue, views", true,
     v1_sqlite, v1_postgresql},
    {2, "endpoints: the FHIR server each endpoint syncs", false, v2_sqlite, v2_postgresql},
    {3, "deletions.reason: why a resource was deleted", false, v3_sqlite, v3_postgresql},
    {4, "view_definitions: materialized SQL on FHIR views (the SQL views of version 1 dropped)",
     false, v4_sqlite, v4_postgresql},
};

#define MIGRATION_COUNT (sizeof migrations / sizeof *migrations)

int fs_schema_current(void)
{
    return migrations[MIGRATION_COUNT - 1].version;
}

/* ---- per-type tables ------------------------------------------------------------------------- */

char *fs_schema_type_ddl(fs_store_engine engine, const char *type)
{
    char quoted[FS_STORE_TYPE_MAX + 3];
    fs_store_quote_type(type, quoted, sizeof quoted);
    /* index names stay within PostgreSQL's 63 bytes whatever the type's length */
    char index[96];
    if (strlen(type) <= 50)
        snprintf(index, sizeof index, "\"%s_patient\"", type);
    else
        snprintf(index, sizeof index, "\"ix%016llx_patient\"",
                 (unsigned long long)fs_store_hash("index", type));
    fs_buf b;
    fs_buf_init(&b);
    bool ok;
    if (engine == FS_ENGINE_SQLITE) {
        ok = fs_buf_printf(&b,
                           "CREATE TABLE IF NOT EXISTS %s ("
                           " id TEXT PRIMARY KEY NOT NULL,"
                           " version_id TEXT,"
                           " last_updated TEXT,"
                           " last_updated_ms INTEGER,"
                           " patient_id TEXT,"
                           " raw TEXT NOT NULL,"
                           " loaded_at TEXT NOT NULL,"
                           " run_id INTEGER);"
                           "CREATE INDEX IF NOT EXISTS %s ON %s (patient_id)"
                           " WHERE patient_id IS NOT NULL;",
                           quoted, index, quoted);
    } else {
        /* COLLATE "C": byte order, as in SQLite, and faster than a locale's for ids */
        ok = fs_buf_printf(&b,
                           "CREATE TABLE IF NOT EXISTS %s ("
                           " id text COLLATE \"C\" PRIMARY KEY,"
                           " version_id text,"
                           " last_updated text,"
                           " last_updated_ms bigint,"
                           " patient_id text COLLATE \"C\","
                           " resource jsonb,"
                           " raw text NOT NULL,"
                           " loaded_at text NOT NULL,"
                           " run_id bigint);"
                           "CREATE INDEX IF NOT EXISTS %s ON %s (patient_id)"
                           " WHERE patient_id IS NOT NULL;",
                           quoted, index, quoted);
    }
    if (!ok) {
        fs_buf_free(&b);
        return NULL;
    }
    return fs_buf_steal(&b);
}

fhirsync_code fs_schema_create_type(fhirsync_store *s, const char *type, fhirsync_error *err)
{
    char *ddl = fs_schema_type_ddl(s->engine, type);
    if (!ddl)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    fhirsync_code rc = s->ops->script(s, ddl, err);
    fs_free(ddl);
    fs_sql_value params[2] = {fs_sql_text(type), fs_sql_text(fs_store_loaded_at(s))};
    if (rc == FHIRSYNC_OK)
        rc = s->ops->exec(s,
                          "INSERT INTO resource_types (type, created_at) VALUES (?1, ?2)"
                          " ON CONFLICT (type) DO NOTHING",
                          true, params, 2, NULL, NULL, NULL, err);
    return rc;
}

/* ---- the driver ------------------------------------------------------------------------------ */

static int read_int(void *userdata, int ncols, const char *const *values, const size_t *lengths,
                    const char *const *names)
{
    (void)lengths;
    (void)names;
    long v = 0;
    if (ncols > 0 && values[0] && fs_parse_long(values[0], &v))
        *(long *)userdata = v;
    return 0;
}

/* The recorded version: 0 when there is no schema_version table (a new database). */
static fhirsync_code read_version(fhirsync_store *s, long *version, fhirsync_error *err)
{
    long exists = 0;
    const char *probe = s->engine == FS_ENGINE_SQLITE
                            ? "SELECT count(*) FROM sqlite_master"
                              " WHERE type = 'table' AND name = 'schema_version'"
                            : "SELECT count(*) FROM pg_catalog.pg_class c"
                              " WHERE c.oid = to_regclass('schema_version')";
    *version = 0;
    fhirsync_code rc = s->ops->exec(s, probe, true, NULL, 0, read_int, &exists, NULL, err);
    if (rc != FHIRSYNC_OK || !exists)
        return rc;
    return s->ops->exec(s, "SELECT coalesce(max(version), 0) FROM schema_version", true, NULL, 0,
                        read_int, version, NULL, err);
}

static fhirsync_code too_new(fhirsync_store *s, long version, fhirsync_error *err)
{
    return fs_err(err, FHIRSYNC_E_STORE,
                  "store %s has schema version %ld, newer than this fhirsync knows (%d): "
                  "upgrade fhirsync (libfhirsync %s) to use it",
                  s->location, version, fs_schema_current(), fhirsync_version());
}

static fhirsync_code apply(fhirsync_store *s, const migration *m, fhirsync_error *err)
{
    fhirsync_code rc = FHIRSYNC_OK;
    if (m->common_types) {
        for (size_t i = 0; common_types[i] && rc == FHIRSYNC_OK; i++)
            rc = fs_schema_create_type(s, common_types[i], err);
    }
    if (rc == FHIRSYNC_OK)
        rc = s->ops->script(s, s->engine == FS_ENGINE_SQLITE ? m->sqlite_sql : m->postgresql_sql,
                            err);
    if (rc == FHIRSYNC_OK) {
        fs_sql_value params[3] = {fs_sql_int(m->version), fs_sql_text(m->description),
                                  fs_sql_text(fs_store_loaded_at(s))};
        rc = s->ops->exec(s,
                          "INSERT INTO schema_version (version, description, applied_at)"
                          " VALUES (?1, ?2, ?3)",
                          true, params, 3, NULL, NULL, NULL, err);
    }
    return rc;
}

fhirsync_code fs_schema_migrate(fhirsync_store *s, fhirsync_error *err)
{
    long version;
    fhirsync_code rc = read_version(s, &version, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (version > fs_schema_current())
        return too_new(s, version, err);
    if (s->flags & FHIRSYNC_STORE_READONLY) {
        if (version == 0)
            return fs_err(err, FHIRSYNC_E_STORE,
                          "%s is not a fhirsync store (no schema): run a sync first", s->location);
        s->schema_version = (int)version;
        return FHIRSYNC_OK;
    }
    while (version < fs_schema_current()) {
        rc = s->ops->begin(s, err);
        if (rc != FHIRSYNC_OK)
            return rc;
        if (s->engine == FS_ENGINE_POSTGRESQL) {
            fs_sql_value key = fs_sql_int(FS_STORE_PG_MIGRATE_KEY);
            rc = s->ops->exec(s, "SELECT pg_advisory_xact_lock(?1)", true, &key, 1, NULL, NULL,
                              NULL, err);
        }
        if (rc == FHIRSYNC_OK)
            rc = s->ops->script(s,
                                "CREATE TABLE IF NOT EXISTS schema_version ("
                                " version INTEGER PRIMARY KEY,"
                                " description TEXT NOT NULL,"
                                " applied_at TEXT NOT NULL);"
                                "CREATE TABLE IF NOT EXISTS resource_types ("
                                " type TEXT PRIMARY KEY,"
                                " created_at TEXT NOT NULL)",
                                err);
        /* someone may have migrated while we waited for the lock */
        if (rc == FHIRSYNC_OK)
            rc = s->ops->exec(s, "SELECT coalesce(max(version), 0) FROM schema_version", true, NULL,
                              0, read_int, &version, NULL, err);
        if (rc == FHIRSYNC_OK && version > fs_schema_current())
            rc = too_new(s, version, err);
        const migration *next = NULL;
        for (size_t i = 0; rc == FHIRSYNC_OK && i < MIGRATION_COUNT && !next; i++)
            if (migrations[i].version > version)
                next = &migrations[i];
        if (rc == FHIRSYNC_OK && next) {
            rc = apply(s, next, err);
            if (rc != FHIRSYNC_OK)
                fs_err_prefix(err, "migrating %s to schema version %d", s->location, next->version);
        }
        if (rc == FHIRSYNC_OK)
            rc = s->ops->commit(s, err);
        else
            s->ops->rollback(s);
        if (rc != FHIRSYNC_OK)
            return rc;
        if (next) {
            fs_log(FHIRSYNC_LOG_INFO, "store %s: schema migrated to version %d (%s)", s->location,
                   next->version, next->description);
            version = next->version;
        }
    }
    s->schema_version = (int)version;
    return FHIRSYNC_OK;
}
