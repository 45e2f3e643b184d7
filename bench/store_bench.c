/* bench/store_bench.c: loading NDJSON into the store, against the limits measured in the same run
 * on the same rows (the machines are noisy: compare the ratios, not absolute numbers). Nothing here
 * fails on a timing; a load that fails is reported as FAILED and makes the exit status non-zero.
 *
 *   store_bench [ROWS] [POSTGRESQL_URL]
 *       load ROWS (default 1,000,000) synthetic resources shaped like a Synthea export into SQLite
 *       with fhirsync_store_put (twice: inserts, then every row an update), and the same rows with
 *       a bare loop of prepared SQLite INSERTs (the limit); print resources/s, CPU and peak RSS of
 *       each and the ratio to the bare loop. With a URL, also into PostgreSQL: bare COPY of the
 *       lines (the limit), then the store's bulk batches, merged or appended, by one loader and by
 *       two at once, each with its ratio to the bare COPY. FHIRSYNC_BENCH_BATCH sets the SQLite
 *       batch size (default 50,000); FHIRSYNC_BENCH_ROUNDS=N (at most 15) runs the SQLite pair N
 *       times in alternating order and prints the best and the median of each and their ratios;
 *       FHIRSYNC_BENCH_ONLY=store (or =postgresql with a URL) runs only the store's load, in this
 *       process (for profilers).
 *   store_bench --load [--append] [--loaders N] LOCATION FILE.ndjson...
 *       load NDJSON files, one batch per file (appends with --append), by N processes at once;
 *       print counts and the total rate (bench/sync_bench.sh runs it on an export's files).
 *   store_bench --compare [--rounds N] FILE.ndjson...
 *       the store's load of the files beside two bare INSERT loops of the same lines, one into
 *       tables of the store's shape and one into a single column, N rounds (default 3) in rotating
 *       order; the best, the medians and the store's ratios to both (see run_compare).
 *   store_bench --write DIR [ROWS]
 *       write the synthetic rows (default 1,000,000) as NDJSON files, TYPE.N.ndjson of 50,000
 *       lines at most, for --compare and the other tools that read files.
 *
 * Lines of the form "BENCH | what | value | baseline | ratio" feed bench/run.sh's summary.
 * bench/store_bench.sh runs it with a throwaway PostgreSQL server. */
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "core/core.h"
#include "fhirsync/fhirsync.h"
#include "store/store_private.h"

/* Remove an SQLite file with its -wal and -shm. */
static void remove_db(const char *path)
{
    static const char *const suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
        char file[PATH_MAX + 8];
        snprintf(file, sizeof file, "%s%s", path, suffixes[i]);
        unlink(file);
    }
}

static int read_long(size_t ncols, const char *const *names, const char *const *values,
                     const size_t *lengths, void *userdata)
{
    (void)names;
    (void)lengths;
    if (ncols > 0 && values[0])
        *(long *)userdata = strtol(values[0], NULL, 10);
    return 1;
}

/* ---- benchmark ------------------------------------------------------------------------------- */

/* Synthetic resources shaped like the Synthea export in ../shared/data: the same mix of types
 * and sizes (average about 1.2 KB; ExplanationOfBenefit up to 16 KB; Patient with a narrative),
 * nested codings, references, decimals and extensions, in the order of an export's files: type
 * by type, each type's resources grouped by patient (about 360 resources per patient). A pool of
 * templates per type is built once; each row copies one and writes its own id (a random UUID,
 * as Synthea's) and its patient into fixed-width slots. */

#define UUID_LEN 36
static const char uuid_slot[] = "00000000-0000-4000-8000-000000000000";

typedef struct bench_template {
    char *text;
    size_t len;
    const char *type;
    size_t id_at, patient_at; /* offsets of the uuid slots (patient_at 0: none) */
} bench_template;

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= UINT64_C(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x *= UINT64_C(0xc4ceb9fe1a85ec53);
    x ^= x >> 33;
    return x;
}

static void write_uuid(char *out, uint64_t seed)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t a = mix64(seed), b = mix64(seed ^ UINT64_C(0x9e3779b97f4a7c15));
    for (int i = 0, bit = 0; i < UUID_LEN; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            out[i] = '-';
            continue;
        }
        uint64_t word = bit < 64 ? a : b;
        out[i] = hex[(word >> ((bit % 64))) & 0xf];
        bit += 4;
    }
    out[14] = '4';
}

static void coding(fs_buf *b, const char *system, unsigned code, const char *display)
{
    fs_buf_printf(b, "{\"system\":\"%s\",\"code\":\"%u\",\"display\":\"%s\"}", system, code,
                  display);
}

/* Append the body of one resource of `type` with `variant` steering its size. */
static void bench_body(fs_buf *b, const char *type, unsigned variant)
{
    static const char *displays[] = {"Body Height",
                                     "Pain severity - 0-10 verbal numeric rating",
                                     "Body Weight",
                                     "Hemoglobin A1c/Hemoglobin.total in Blood",
                                     "Systolic Blood Pressure",
                                     "Encounter for check up",
                                     "Viral sinusitis (disorder)",
                                     "Acute bronchitis (disorder)"};
    const char *display = displays[variant % 8];
    if (strcmp(type, "Observation") == 0) {
        fs_buf_printf(b, "\"status\":\"final\",\"category\":[{\"coding\":[");
        coding(b, "http://terminology.hl7.org/CodeSystem/observation-category", 1, "vital-signs");
        fs_buf_printf(b, "]}],\"code\":{\"coding\":[");
        coding(b, "http://loinc.org", 8302 + variant % 97, display);
        fs_buf_printf(b, "],\"text\":\"%s\"},", display);
    } else if (strcmp(type, "Patient") == 0) {
        fs_buf_printf(b,
                      "\"text\":{\"status\":\"generated\",\"div\":\"<div xmlns=\\\"http://www."
                      "w3.org/1999/xhtml\\\">Generated by <a href=\\\"https://github.com/"
                      "synthetichealth/synthea\\\">Synthea</a>.Version identifier: v2.5.0-385"
                      "-ge50db853\\n .   Person seed: %u  Population seed: 1588766244164"
                      "</div>\"},\"extension\":[",
                      variant * 7919u);
        for (int i = 0; i < 6; i++)
            fs_buf_printf(b,
                          "%s{\"url\":\"http://hl7.org/fhir/us/core/StructureDefinition/"
                          "us-core-ext-%d\",\"valueDecimal\":%u.%06u}",
                          i ? "," : "", i, variant % 90, (variant * 31 + (unsigned)i) % 1000000);
        fs_buf_printf(b,
                      "],\"identifier\":[{\"system\":\"https://github.com/synthetichealth/"
                      "synthea\",\"value\":\"%u\"},{\"type\":{\"coding\":[",
                      variant);
        coding(b, "http://terminology.hl7.org/CodeSystem/v2-0203", 203, "Medical Record Number");
        fs_buf_printf(b,
                      "],\"text\":\"Medical Record Number\"},\"system\":\"http://hospital."
                      "smarthealthit.org\",\"value\":\"%u\"}],\"name\":[{\"use\":\"official\","
                      "\"family\":\"Lindgren%u\",\"given\":[\"Claudia\"],\"prefix\":[\"Ms.\"]}],"
                      "\"telecom\":[{\"system\":\"phone\",\"value\":\"555-846-1088\",\"use\":"
                      "\"home\"}],\"gender\":\"female\",\"birthDate\":\"1966-01-17\","
                      "\"address\":[{\"extension\":[{\"url\":\"http://hl7.org/fhir/"
                      "StructureDefinition/geolocation\",\"extension\":[{\"url\":\"latitude\","
                      "\"valueDecimal\":42.46765167568827},{\"url\":\"longitude\","
                      "\"valueDecimal\":-71.02685584006909}]}],\"line\":[\"1003 Hirthe "
                      "Esplanade\"],\"city\":\"Melrose\",\"state\":\"Massachusetts\","
                      "\"postalCode\":\"02176\",\"country\":\"US\"}],\"maritalStatus\":"
                      "{\"coding\":[",
                      variant, variant);
        coding(b, "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", 1, "M");
        fs_buf_printf(b, "],\"text\":\"M\"},\"multipleBirthBoolean\":false,\"communication\":"
                         "[{\"language\":{\"coding\":[");
        coding(b, "urn:ietf:bcp:47", 1, "English");
        fs_buf_printf(b, "],\"text\":\"English\"}}]");
        return;
    } else {
        fs_buf_printf(b, "\"status\":\"active\",\"type\":[{\"coding\":[");
        coding(b, "http://snomed.info/sct", 185345009 + variant, display);
        fs_buf_printf(b, "],\"text\":\"%s\"}],", display);
    }
    /* references and a period, then the type's repeated part */
    fs_buf_printf(b,
                  "\"encounter\":{\"reference\":\"Encounter/%08u-e16e-7635-668b-44cc809d62cb\"},"
                  "\"effectiveDateTime\":\"2010-12-28T03:41:16-05:00\","
                  "\"issued\":\"2010-12-28T03:41:16.020-05:00\"",
                  variant);
    unsigned items = 0;
    if (strcmp(type, "ExplanationOfBenefit") == 0)
        items = 4 + variant % 28; /* about 4.5 KB on average, up to 16 KB */
    else if (strcmp(type, "Claim") == 0)
        items = 1 + (variant % 10 == 0 ? 6 : variant % 3);
    else if (strcmp(type, "DiagnosticReport") == 0 || strcmp(type, "CarePlan") == 0 ||
             strcmp(type, "CareTeam") == 0)
        items = 2 + variant % 2;
    else if (strcmp(type, "Encounter") == 0)
        items = 1;
    if (items) {
        fs_buf_printf(b, ",\"item\":[");
        for (unsigned i = 0; i < items; i++) {
            fs_buf_printf(b, "%s{\"sequence\":%u,\"productOrService\":{\"coding\":[", i ? "," : "",
                          i + 1);
            coding(b, "http://snomed.info/sct", 410620009 + i, displays[(variant + i) % 8]);
            fs_buf_printf(b,
                          "],\"text\":\"%s\"},\"servicedPeriod\":{\"start\":\"2010-12-28T03:"
                          "41:16-05:00\",\"end\":\"2010-12-28T03:56:16-05:00\"},"
                          "\"net\":{\"value\":%u.%02u,\"currency\":\"USD\"}}",
                          displays[(variant + i) % 8], 100 + i * 13, (variant + i) % 100);
        }
        fs_buf_printf(b, "]");
    }
    if (strcmp(type, "Observation") == 0)
        fs_buf_printf(b,
                      ",\"valueQuantity\":{\"value\":%u.%u0,\"unit\":\"cm\",\"system\":"
                      "\"http://unitsofmeasure.org\",\"code\":\"cm\"}",
                      100 + variant % 80, variant % 10);
}

/* Types in the proportions of the Synthea export (per 3,615 resources). */
static const struct {
    const char *type;
    unsigned weight;
    bool in_patient;
    const char *link; /* the member that refers to the patient */
} bench_types[] = {
    {"Observation", 1737, true, "subject"},      {"Claim", 525, true, "patient"},
    {"Encounter", 313, true, "subject"},         {"ExplanationOfBenefit", 313, true, "patient"},
    {"MedicationRequest", 212, true, "subject"}, {"Procedure", 122, true, "subject"},
    {"Immunization", 119, true, "patient"},      {"DiagnosticReport", 102, true, "subject"},
    {"Condition", 63, true, "subject"},          {"CarePlan", 31, true, "subject"},
    {"CareTeam", 31, true, "subject"},           {"Organization", 16, false, NULL},
    {"Practitioner", 16, false, NULL},           {"Patient", 10, false, NULL},
    {"AllergyIntolerance", 3, true, "patient"},  {"ImagingStudy", 2, true, "subject"},
};

#define BENCH_POOL 1024
#define RESOURCES_PER_PATIENT 360

/* The rows of one type: a contiguous segment of the run, like one file of an export. */
typedef struct bench_segment {
    uint64_t first, count;
    unsigned template_first, template_count;
} bench_segment;

static bench_segment bench_segments[sizeof bench_types / sizeof *bench_types];

/* Templates grouped by type (in proportion to the type's weight, at least 4 per type) and the
 * row segments of a run of `rows`. */
static bench_template *bench_pool(uint64_t rows, size_t *average_bytes)
{
    size_t ntypes = sizeof bench_types / sizeof *bench_types;
    unsigned total_weight = 0;
    for (size_t t = 0; t < ntypes; t++)
        total_weight += bench_types[t].weight;
    bench_template *pool = calloc(BENCH_POOL + 4 * ntypes, sizeof *pool);
    if (!pool)
        return NULL;
    unsigned n = 0;
    uint64_t first = 0;
    double weighted_bytes = 0;
    for (size_t t = 0; t < ntypes; t++) {
        unsigned count = BENCH_POOL * bench_types[t].weight / total_weight;
        if (count < 4)
            count = 4;
        bench_segments[t].template_first = n;
        bench_segments[t].template_count = count;
        size_t type_bytes = 0;
        for (unsigned k = 0; k < count; k++, n++) {
            unsigned variant = (unsigned)mix64(n + 1) % 100000;
            fs_buf b;
            fs_buf_init(&b);
            fs_buf_printf(&b, "{\"resourceType\":\"%s\",\"id\":\"", bench_types[t].type);
            pool[n].id_at = b.len;
            fs_buf_printf(&b,
                          "%s\",\"meta\":{\"versionId\":\"%u\",\"lastUpdated\":"
                          "\"2024-0%u-1%uT0%u:3%u:00.%03uZ\"},",
                          uuid_slot, 1 + k % 3, 1 + k % 9, k % 10, k % 10, k % 6, k % 1000);
            if (bench_types[t].in_patient) {
                fs_buf_printf(&b, "\"%s\":{\"reference\":\"Patient/", bench_types[t].link);
                pool[n].patient_at = b.len;
                fs_buf_printf(&b, "%s\"},", uuid_slot);
            }
            bench_body(&b, bench_types[t].type, variant);
            fs_buf_append_str(&b, "}");
            pool[n].text = b.data;
            pool[n].len = b.len;
            pool[n].type = bench_types[t].type;
            type_bytes += b.len;
        }
        bench_segments[t].first = first;
        bench_segments[t].count =
            t + 1 == ntypes ? rows - first : rows * bench_types[t].weight / total_weight;
        first += bench_segments[t].count;
        weighted_bytes += (double)type_bytes / count * bench_types[t].weight / total_weight;
    }
    *average_bytes = (size_t)weighted_bytes;
    return pool;
}

static void bench_pool_free(bench_template *pool)
{
    size_t ntypes = sizeof bench_types / sizeof *bench_types;
    for (size_t t = 0; t < ntypes; t++)
        for (unsigned k = 0; k < bench_segments[t].template_count; k++)
            fs_free(pool[bench_segments[t].template_first + k].text);
    free(pool);
}

/* Row i: its template and bytes (the id and patient written in). */
static const bench_template *bench_row(bench_template *pool, uint64_t rows, uint64_t i, char *row)
{
    size_t t = 0;
    while (i >= bench_segments[t].first + bench_segments[t].count)
        t++;
    const bench_segment *seg = &bench_segments[t];
    bench_template *tpl = &pool[seg->template_first + mix64(i * 2 + 1) % seg->template_count];
    memcpy(row, tpl->text, tpl->len);
    write_uuid(row + tpl->id_at, i);
    if (tpl->patient_at) {
        /* the segment's rows go through the patients in order, grouped */
        uint64_t patients = rows / RESOURCES_PER_PATIENT + 1;
        uint64_t patient_index = (i - seg->first) * patients / seg->count;
        write_uuid(row + tpl->patient_at, UINT64_C(1) << 40 | patient_index);
    }
    return tpl;
}

typedef struct bench_result {
    double seconds;     /* wall clock */
    double cpu_seconds; /* user + system of the process */
    long max_rss_kb;
    int status;
} bench_result;

static double self_cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* Run before `fn` in the child, outside the clocks (NULL: nothing): what a run needs ready. */
static int (*bench_child_setup)(void);

/* Run `fn` in a child process, for its own peak memory; wall clock and CPU time of fn alone. */
static bench_result bench_in_child(int (*fn)(void *), void *arg)
{
    bench_result r = {0, 0, 0, -1};
    int fds[2];
    if (pipe(fds) != 0)
        return r;
    fflush(stdout); /* or the child prints what the parent has buffered again */
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        if (bench_child_setup && bench_child_setup() != 0)
            _exit(3);
        int64_t t0 = fs_monotonic_ms();
        double cpu0 = self_cpu_seconds();
        int rc = fn(arg);
        double times[2] = {(double)(fs_monotonic_ms() - t0) / 1000.0, self_cpu_seconds() - cpu0};
        if (write(fds[1], times, sizeof times) != sizeof times)
            _exit(2);
        _exit(rc);
    }
    close(fds[1]);
    int status;
    struct rusage ru;
    if (pid > 0 && wait4(pid, &status, 0, &ru) == pid) {
        double times[2];
        if (read(fds[0], times, sizeof times) == sizeof times) {
            r.seconds = times[0];
            r.cpu_seconds = times[1];
        }
        r.max_rss_kb = ru.ru_maxrss;
        r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 99;
    }
    close(fds[0]);
    return r;
}

typedef struct bench_args {
    const char *location;
    uint64_t rows; /* rows of the whole run */
    bench_template *pool;
    size_t batch;
    unsigned index, stride; /* this loader stores batches index, index + stride, ... (stride 0:
                               all) */
    unsigned flags;         /* more batch flags (FHIRSYNC_STORE_APPEND); bare PostgreSQL: jsonb */
} bench_args;

/* Run fn on each of n args in n child processes at once: the wall clock of the whole, the sum
 * of their CPU, the largest peak memory. */
static bench_result bench_in_children(int (*fn)(void *), void *args, size_t n)
{
    bench_result total = {0, 0, 0, 0};
    pid_t pids[8];
    fflush(stdout);
    int64_t t0 = fs_monotonic_ms();
    for (size_t i = 0; i < n && i < 8; i++) {
        pids[i] = fork();
        if (pids[i] == 0)
            _exit(fn((bench_args *)args + i));
    }
    for (size_t i = 0; i < n && i < 8; i++) {
        int status;
        struct rusage ru;
        if (pids[i] < 0 || wait4(pids[i], &status, 0, &ru) != pids[i]) {
            total.status = -1;
            continue;
        }
        total.cpu_seconds += (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                             (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
        if (ru.ru_maxrss > total.max_rss_kb)
            total.max_rss_kb = ru.ru_maxrss;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            total.status = 1;
    }
    total.seconds = (double)(fs_monotonic_ms() - t0) / 1000.0;
    return total;
}

/* The CPU seconds a process has used so far (for a local PostgreSQL backend). */
static double process_cpu_seconds(long pid)
{
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *in = fopen(path, "r");
    if (!in)
        return -1;
    size_t n = fread(text, 1, sizeof text - 1, in);
    fclose(in);
    text[n] = '\0';
    const char *p = strrchr(text, ')');
    unsigned long utime = 0, stime = 0;
    if (!p ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static int bench_store_load(void *arg)
{
    bench_args *a = arg;
    long backend = 0;
    double backend_cpu = 0;
    fhirsync_store *s = NULL;
    fhirsync_error err = {0};
    char *row = malloc(64 * 1024);
    int rc = 1;
    if (!row || fhirsync_store_open(a->location, 0, &s, &err) != FHIRSYNC_OK)
        goto out;
    if (strcmp(fhirsync_store_engine_name(s), "postgresql") == 0) {
        if (fhirsync_store_query(s, "SELECT pg_backend_pid()", read_long, &backend, &err) !=
            FHIRSYNC_OK)
            goto out;
        backend_cpu = process_cpu_seconds(backend);
    }
    uint64_t count = 0, stride = a->stride ? a->stride : 1;
    for (uint64_t first = a->index * a->batch; first < a->rows; first += stride * a->batch) {
        uint64_t end = first + a->batch < a->rows ? first + a->batch : a->rows;
        if (fhirsync_store_begin(s, FHIRSYNC_STORE_BULK | a->flags, &err) != FHIRSYNC_OK)
            goto out;
        for (uint64_t k = first; k < end; k++) {
            const bench_template *t = bench_row(a->pool, a->rows, k, row);
            if (fhirsync_store_put(s, t->type, row, t->len, 1, NULL, &err) != FHIRSYNC_OK)
                goto out;
        }
        if (fhirsync_store_commit(s, &err) != FHIRSYNC_OK)
            goto out;
        count += end - first;
    }
    rc = 0;
    if (backend > 0 && backend_cpu >= 0) {
        double used = process_cpu_seconds(backend) - backend_cpu;
        printf("  (the PostgreSQL server process used %.2f s of CPU: %.0f resources per server "
               "CPU second)\n",
               used, used > 0 ? (double)count / used : 0);
        fflush(stdout);
    }
out:
    if (rc)
        fprintf(stderr, "bench: %s\n", err.message);
    fhirsync_store_close(s);
    free(row);
    return rc;
}

/* The limit: the same rows into tables of the same shape with plain prepared INSERTs, the
 * fields handed over ready (no scanning, no upsert), in batches of the same size, with the same
 * pragmas. */
static int bench_bare_sqlite(void *arg)
{
    bench_args *a = arg;
    sqlite3 *db = NULL;
    sqlite3_stmt *insert[sizeof bench_types / sizeof *bench_types] = {0};
    char *row = malloc(64 * 1024);
    int rc = 1;
    if (!row || sqlite3_open(a->location, &db) != SQLITE_OK ||
        sqlite3_exec(db, fs_store_sqlite_pragmas, NULL, NULL, NULL) != SQLITE_OK)
        goto out;
    size_t ntypes = sizeof bench_types / sizeof *bench_types;
    for (size_t t = 0; t < ntypes; t++) {
        char *ddl = fs_schema_type_ddl(FS_ENGINE_SQLITE, bench_types[t].type);
        char sql[256];
        snprintf(sql, sizeof sql,
                 "INSERT INTO \"%s\" (id, version_id, last_updated, last_updated_ms, patient_id,"
                 " raw, loaded_at, run_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                 bench_types[t].type);
        bool ok = ddl && sqlite3_exec(db, ddl, NULL, NULL, NULL) == SQLITE_OK &&
                  sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &insert[t], NULL) ==
                      SQLITE_OK;
        fs_free(ddl);
        if (!ok)
            goto out;
    }
    for (uint64_t i = 0; i < a->rows; i++) {
        if (i % a->batch == 0)
            sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        const bench_template *t = bench_row(a->pool, a->rows, i, row);
        size_t k = 0;
        while (strcmp(bench_types[k].type, t->type) != 0)
            k++;
        sqlite3_stmt *st = insert[k];
        sqlite3_bind_text(st, 1, row + t->id_at, UUID_LEN, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, "1", 1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, "2024-01-10T00:30:00.000Z", 24, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, INT64_C(1704846600000));
        if (t->patient_at)
            sqlite3_bind_text(st, 5, row + t->patient_at, UUID_LEN, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 5);
        sqlite3_bind_text(st, 6, row, (int)t->len, SQLITE_STATIC);
        sqlite3_bind_text(st, 7, "2026-11-28T21:33:00Z", 20, SQLITE_STATIC);
        sqlite3_bind_int64(st, 8, 1);
        if (sqlite3_step(st) != SQLITE_DONE)
            goto out;
        sqlite3_reset(st);
        if ((i + 1) % a->batch == 0 || i + 1 == a->rows)
            if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
                goto out;
    }
    rc = 0;
out:
    for (size_t t = 0; t < sizeof insert / sizeof *insert; t++)
        sqlite3_finalize(insert[t]);
    sqlite3_close(db);
    free(row);
    return rc;
}

static void bench_print(const char *what, uint64_t rows, size_t bytes, bench_result r)
{
    double rate = r.seconds > 0 ? (double)rows / r.seconds : 0;
    double cpu_rate = r.cpu_seconds > 0 ? (double)rows / r.cpu_seconds : 0;
    printf("  %-46s %7.2f s %8.0f /s %6.1f MB/s | CPU %6.2f s %8.0f /s | peak RSS %5.1f MB%s\n",
           what, r.seconds, rate, r.seconds > 0 ? (double)bytes / r.seconds / 1e6 : 0,
           r.cpu_seconds, cpu_rate, (double)r.max_rss_kb / 1024.0, r.status == 0 ? "" : "  FAILED");
}

/* The limit on PostgreSQL: COPY of the same lines into a bare table, `raw text` (flags 0) or
 * `raw text, resource jsonb` (flags 1: every line parsed as jsonb too), without the scan, the
 * primary key, the index or the upsert. */
static int bench_bare_pg(void *arg)
{
    bench_args *a = arg;
    PGconn *conn = PQconnectdb(a->location);
    char *row = malloc(64 * 1024);
    fs_buf b;
    fs_buf_init(&b);
    int rc = 1;
    if (!row || PQstatus(conn) != CONNECTION_OK)
        goto out;
    PQclear(PQexec(conn, "SET default_toast_compression = 'lz4'")); /* as the store does */
    PQclear(PQexec(conn, a->flags ? "CREATE TABLE bare (raw text, resource jsonb)"
                                  : "CREATE TABLE bare (raw text)"));
    PGresult *res = PQexec(conn, "COPY bare FROM STDIN WITH (FORMAT csv, QUOTE E'\\x01',"
                                 " DELIMITER E'\\x02')");
    bool copying = PQresultStatus(res) == PGRES_COPY_IN;
    PQclear(res);
    if (!copying)
        goto out;
    for (uint64_t k = 0; k < a->rows; k++) {
        const bench_template *t = bench_row(a->pool, a->rows, k, row);
        if (!fs_buf_append(&b, row, t->len) ||
            (a->flags && (!fs_buf_append(&b, "\2", 1) || !fs_buf_append(&b, row, t->len))) ||
            !fs_buf_append(&b, "\n", 1))
            goto out;
        if (b.len >= 256 * 1024 || k + 1 == a->rows) {
            if (PQputCopyData(conn, b.data, (int)b.len) != 1)
                goto out;
            b.len = 0;
        }
    }
    rc = PQputCopyEnd(conn, NULL) == 1 ? 0 : 1;
    while ((res = PQgetResult(conn)) != NULL) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            rc = 1;
        PQclear(res);
    }
out:
    if (rc)
        fprintf(stderr, "bench: %s", PQerrorMessage(conn));
    PQfinish(conn);
    fs_buf_free(&b);
    free(row);
    return rc;
}

#define MAX_ROUNDS 15

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The best (smallest) and the median of n values. */
static void best_median(const double *values, int n, double *best, double *median)
{
    double sorted[MAX_ROUNDS];
    memcpy(sorted, values, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, by_value);
    *best = sorted[0];
    *median = n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
}

/* The ratio of `ours` to a limit measured in the same rounds (1.00: as fast as the limit), by
 * wall clock and by CPU time, of the best runs and of the medians; a BENCH line (the medians of
 * the wall clock, or the one run). */
static void bench_compare(const char *what, const bench_result *ours, const char *limit_name,
                          const bench_result *limit, int rounds, uint64_t rows,
                          const char *bench_label)
{
    double wall[2][MAX_ROUNDS], cpu[2][MAX_ROUNDS];
    for (int r = 0; r < rounds; r++) {
        if (ours[r].status || limit[r].status || ours[r].seconds <= 0 || limit[r].seconds <= 0)
            return;
        wall[0][r] = ours[r].seconds;
        wall[1][r] = limit[r].seconds;
        cpu[0][r] = ours[r].cpu_seconds;
        cpu[1][r] = limit[r].cpu_seconds;
    }
    double wb[2], wm[2], cb[2], cm[2];
    for (int i = 0; i < 2; i++) {
        best_median(wall[i], rounds, &wb[i], &wm[i]);
        best_median(cpu[i], rounds, &cb[i], &cm[i]);
    }
    if (rounds == 1) {
        printf("  ratio %s / %s: %.2f by wall clock, %.2f by CPU time (1.00 = as fast as the "
               "bare loop)\n",
               what, limit_name, wb[1] / wb[0], cb[1] / cb[0]);
    } else {
        printf("  %s, %d rounds: best %.0f /s (CPU %.0f /s), median %.0f /s (CPU %.0f /s)\n", what,
               rounds, (double)rows / wb[0], (double)rows / cb[0], (double)rows / wm[0],
               (double)rows / cm[0]);
        printf("  %s, %d rounds: best %.0f /s (CPU %.0f /s), median %.0f /s (CPU %.0f /s)\n",
               limit_name, rounds, (double)rows / wb[1], (double)rows / cb[1], (double)rows / wm[1],
               (double)rows / cm[1]);
        printf("  ratio %s / %s: best %.2f, median %.2f by wall clock; best %.2f, median %.2f "
               "by CPU time (1.00 = as fast as the bare loop)\n",
               what, limit_name, wb[1] / wb[0], wm[1] / wm[0], cb[1] / cb[0], cm[1] / cm[0]);
    }
    printf("BENCH | %s | %.0f /s | %.0f /s | %.2fx\n", bench_label, (double)rows / wm[0],
           (double)rows / wm[1], wm[1] / wm[0]);
}

static int run_bench(int argc, char **argv)
{
    uint64_t rows = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    const char *pg = argc > 2 ? argv[2] : NULL;
    if (fhirsync_global_init() != FHIRSYNC_OK || rows == 0)
        return 1;
    size_t average;
    bench_template *pool = bench_pool(rows, &average);
    if (!pool)
        return 1;
    size_t bytes = average * rows;
    const char *base = getenv("FHIRSYNC_TEST_TMP");
    char dir[PATH_MAX / 2], ours[PATH_MAX], bare[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/store-bench-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dir))
        return 1;
    snprintf(ours, sizeof ours, "%s/fhirsync.db", dir);
    snprintf(bare, sizeof bare, "%s/bare.db", dir);
    const char *batch_env = getenv("FHIRSYNC_BENCH_BATCH");
    size_t batch = batch_env && atol(batch_env) > 0 ? (size_t)atol(batch_env) : 50000;
    bench_args a = {ours, rows, pool, batch, 0, 0, 0};
    printf("store benchmark: %llu synthetic resources, average %zu bytes (Synthea-shaped mix of "
           "16 types), SQLite batches of %zu\n",
           (unsigned long long)rows, average, batch);
    /* FHIRSYNC_BENCH_ONLY=store (or =postgresql with a URL): just the store's load, in this
     * process (for profilers) */
    const char *only = getenv("FHIRSYNC_BENCH_ONLY");
    if (only && (strcmp(only, "store") == 0 || (pg && strcmp(only, "postgresql") == 0))) {
        if (pg)
            a.location = pg;
        int rc = bench_store_load(&a);
        remove_db(ours);
        bench_pool_free(pool);
        rmdir(dir);
        return rc;
    }
    /* FHIRSYNC_BENCH_ROUNDS=N: N rounds of the store's load and the bare loop, in alternating
     * order (the machine is noisy: compare the best and the medians) */
    const char *rounds_env = getenv("FHIRSYNC_BENCH_ROUNDS");
    int rounds = rounds_env && atoi(rounds_env) > 0 ? atoi(rounds_env) : 1;
    if (rounds > MAX_ROUNDS)
        rounds = MAX_ROUNDS;
    bench_args b = {bare, rows, pool, batch, 0, 0, 0};
    bench_result ours_runs[MAX_ROUNDS], bare_runs[MAX_ROUNDS];
    int status = 0;
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < 2; k++) {
            if ((k == 0) == (r % 2 == 0)) {
                ours_runs[r] = bench_in_child(bench_store_load, &a);
                bench_print("SQLite: fhirsync_store_put (scan + upsert)", rows, bytes,
                            ours_runs[r]);
                if (r == 0) {
                    bench_result again = bench_in_child(bench_store_load, &a);
                    bench_print("SQLite: the same again (every row an update)", rows, bytes, again);
                    status |= again.status;
                }
                remove_db(ours);
                status |= ours_runs[r].status;
            } else {
                bare_runs[r] = bench_in_child(bench_bare_sqlite, &b);
                bench_print("SQLite: bare prepared INSERT loop (the limit)", rows, bytes,
                            bare_runs[r]);
                remove_db(bare);
                status |= bare_runs[r].status;
            }
        }
    }
    bench_compare("fhirsync", ours_runs, "bare inserts", bare_runs, rounds, rows,
                  "SQLite: fhirsync_store_put vs bare INSERT loop");
    if (pg) {
        /* each into a fresh schema: the limits (bare COPY of the same lines, no scan, no key,
         * no index), then the store's bulk batches, merged or appended, by one loader and by
         * two at once taking every other batch (files of an export, as `sync --loaders 2`) */
        static const struct {
            const char *what;
            int (*fn)(void *);
            unsigned flags;
            bool halves;
        } runs[] = {
            {"PostgreSQL: bare COPY into (raw text)", bench_bare_pg, 0, false},
            {"PostgreSQL: bare COPY into (raw text, jsonb)", bench_bare_pg, 1, false},
            {"PostgreSQL: bulk batch (COPY + merge)", bench_store_load, 0, false},
            {"PostgreSQL: append batch (COPY straight in)", bench_store_load, FHIRSYNC_STORE_APPEND,
             false},
            {"PostgreSQL: 2 loaders merging at once (every other batch)", bench_store_load, 0,
             true},
            {"PostgreSQL: 2 loaders appending at once", bench_store_load, FHIRSYNC_STORE_APPEND,
             true},
        };
        double bare_rate = 0;
        for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
            PGconn *conn = PQconnectdb(pg);
            if (PQstatus(conn) == CONNECTION_OK) {
                PQclear(PQexec(conn, "SET client_min_messages = warning"));
                PQclear(PQexec(conn, "DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public"));
            }
            PQfinish(conn);
            fhirsync_store *schema = NULL;
            fhirsync_error err = {0};
            if (fhirsync_store_open(pg, 0, &schema, &err) != FHIRSYNC_OK) /* migrate once */
                status = 1;
            fhirsync_store_close(schema);
            bench_result r;
            if (runs[i].halves) {
                /* every other batch each: both see the same mix of types */
                bench_args halves[2] = {{pg, rows, pool, 50000, 0, 2, runs[i].flags},
                                        {pg, rows, pool, 50000, 1, 2, runs[i].flags}};
                r = bench_in_children(runs[i].fn, halves, 2);
            } else {
                bench_args p = {pg, rows, pool, 50000, 0, 0, runs[i].flags};
                r = bench_in_child(runs[i].fn, &p);
            }
            bench_print(runs[i].what, rows, bytes, r);
            status |= r.status;
            double rate = r.seconds > 0 ? (double)rows / r.seconds : 0;
            if (i == 1)
                bare_rate = rate;
            else if (i > 1 && bare_rate > 0) {
                printf("  ratio to the bare COPY into (raw text, jsonb): %.2f\n", rate / bare_rate);
                printf("BENCH | %s vs bare COPY (raw text, jsonb) | %.0f /s | %.0f /s | %.2fx\n",
                       runs[i].what, rate, bare_rate, rate / bare_rate);
            }
        }
    }
    bench_pool_free(pool);
    rmdir(dir);
    fhirsync_global_cleanup();
    return status ? 1 : 0;
}

/* Load some NDJSON files (each line one resource) into one store handle, one batch per file;
 * the counts go to *stored and *rejected. */
static int load_files(const char *location, unsigned flags, char **files, int nfiles, int step,
                      long *stored, long *rejected, size_t *bytes)
{
    fhirsync_store *s = NULL;
    fhirsync_error err = {0};
    if (fhirsync_store_open(location, 0, &s, &err) != FHIRSYNC_OK) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    int status = 0;
    for (int i = 0; i < nfiles; i += step) {
        FILE *in = fopen(files[i], "rb");
        if (!in) {
            perror(files[i]);
            status = 1;
            continue;
        }
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        long count = 0, bad = 0, lineno = 0;
        fhirsync_store_begin(s, FHIRSYNC_STORE_BULK | flags, &err);
        while ((n = getline(&line, &cap, in)) > 0) {
            lineno++;
            *bytes += (size_t)n;
            if (fhirsync_store_put(s, NULL, line, (size_t)n, 0, NULL, &err) == FHIRSYNC_OK) {
                count++;
            } else {
                bad++;
                fprintf(stderr, "%s:%ld: %s\n", files[i], lineno, err.message);
            }
        }
        if (fhirsync_store_commit(s, &err) != FHIRSYNC_OK) {
            fprintf(stderr, "%s: commit: %s\n", files[i], err.message);
            status = 1;
        }
        free(line);
        fclose(in);
        printf("%-50s %7ld stored %5ld rejected\n", files[i], count, bad);
        fflush(stdout);
        *stored += count;
        *rejected += bad;
    }
    fhirsync_store_close(s);
    return status || *rejected ? 1 : 0;
}

/* --load [--append] [--loaders N] LOCATION FILE...: load NDJSON files, one batch per file
 * (FHIRSYNC_STORE_APPEND with --append), by N processes at once taking every Nth file (each its
 * own store handle, as `sync --loaders N` does), and report the total rate. */
static int run_load(int argc, char **argv)
{
    unsigned flags = 0;
    int loaders = 1, i = 2;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--append") == 0)
            flags |= FHIRSYNC_STORE_APPEND;
        else if (strcmp(argv[i], "--loaders") == 0 && i + 1 < argc)
            loaders = atoi(argv[++i]);
        else
            return 2;
    }
    if (argc - i < 2 || loaders < 1 || loaders > 16 || fhirsync_global_init() != FHIRSYNC_OK)
        return 2;
    const char *location = argv[i];
    char **files = argv + i + 1;
    int nfiles = argc - i - 1;
    { /* create (and migrate) the schema once, before the loaders race for it */
        fhirsync_store *s = NULL;
        fhirsync_error err = {0};
        if (fhirsync_store_open(location, 0, &s, &err) != FHIRSYNC_OK) {
            fprintf(stderr, "%s\n", err.message);
            return 1;
        }
        fhirsync_store_close(s);
    }
    int64_t t0 = fs_monotonic_ms();
    long total = 0, rejected = 0;
    size_t bytes = 0;
    int status = 0;
    if (loaders == 1) {
        status = load_files(location, flags, files, nfiles, 1, &total, &rejected, &bytes);
    } else {
        int pipes[16][2];
        pid_t pids[16];
        for (int k = 0; k < loaders; k++) {
            if (pipe(pipes[k]) != 0 || (pids[k] = fork()) < 0)
                return 1;
            if (pids[k] == 0) {
                long st = 0, rj = 0;
                size_t by = 0;
                int rc = k < nfiles ? load_files(location, flags, files + k, nfiles - k, loaders,
                                                 &st, &rj, &by)
                                    : 0;
                char msg[96];
                int len = snprintf(msg, sizeof msg, "%ld %ld %zu\n", st, rj, by);
                if (write(pipes[k][1], msg, (size_t)len) != len)
                    rc = 1;
                _exit(rc);
            }
            close(pipes[k][1]);
        }
        for (int k = 0; k < loaders; k++) {
            char msg[96] = "";
            ssize_t got = read(pipes[k][0], msg, sizeof msg - 1);
            close(pipes[k][0]);
            long st = 0, rj = 0;
            size_t by = 0;
            if (got <= 0 || sscanf(msg, "%ld %ld %zu", &st, &rj, &by) != 3)
                status = 1;
            total += st;
            rejected += rj;
            bytes += by;
            int ws = 0;
            if (waitpid(pids[k], &ws, 0) < 0 || !WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
                status = 1;
        }
    }
    double seconds = (double)(fs_monotonic_ms() - t0) / 1000.0;
    printf("total %ld stored, %ld rejected, %.1f MB in %.2f s (%.0f resources/s; %d loader%s%s)\n",
           total, rejected, (double)bytes / 1e6, seconds, seconds > 0 ? (double)total / seconds : 0,
           loaders, loaders == 1 ? "" : "s", flags ? ", appends" : "");
    fhirsync_global_cleanup();
    return status;
}

/* ---- files: the store's load beside two bare loops ------------------------------------------ */

/* --compare [--rounds N] FILE...: the NDJSON files (an export's) loaded, one transaction per
 * file, in rounds of three runs in rotating order, each in a child process on a fresh database:
 *   - the store's load path (fhirsync_store_put, as --load);
 *   - a bare prepared-INSERT loop into tables of the store's shape: the same pragmas, one table
 *     per type with its primary key and patient index, the fields handed over ready (read from
 *     the lines before the clock starts): what SQLite itself costs for the store's rows;
 *   - a bare prepared-INSERT loop of the lines into one table (n INTEGER PRIMARY KEY, raw TEXT),
 *     SQLite's defaults plus WAL (what `test_sync --bare-sqlite` runs): no key, no index.
 * Prints each run, the best and the median of each, and the store's ratios to both. */

/* Where a field of a line is: an offset into the line, or (FIELD_COPIED) into the copies of
 * fields that the line spells with escapes. */
#define FIELD_COPIED UINT32_C(0x80000000)

typedef struct line_fields {
    uint32_t at[4], len[4]; /* id, versionId, lastUpdated, patient (len 0 and at 0: none) */
    int64_t updated_ms;
    bool has_ms;
    uint8_t type; /* index into compare_types */
} line_fields;

static struct {
    char **files;
    int nfiles;
    line_fields *lines;
    size_t count;
    fs_buf copies;
    char types[64][FS_STORE_TYPE_MAX + 1];
    unsigned ntypes;
    const char *location;
} compare;

static bool compare_field(const char *line, size_t len, const char *value, size_t value_len,
                          uint32_t *at, uint32_t *out_len)
{
    *at = 0;
    *out_len = (uint32_t)value_len;
    if (!value)
        return true;
    if (value >= line && value + value_len <= line + len) {
        *at = (uint32_t)(value - line);
        return true;
    }
    *at = (uint32_t)compare.copies.len | FIELD_COPIED;
    return fs_buf_append(&compare.copies, value, value_len);
}

/* Read every line's fields: in the child of the bare loop into the store's shape, before its
 * clocks start (so that neither its times nor the other runs' peak memory count it). */
static int compare_prepare(void)
{
    size_t cap = 0;
    int rc = 0;
    for (int i = 0; rc == 0 && i < compare.nfiles; i++) {
        FILE *in = fopen(compare.files[i], "rb");
        if (!in) {
            perror(compare.files[i]);
            return 1;
        }
        char *line = NULL;
        size_t line_cap = 0;
        ssize_t n;
        while (rc == 0 && (n = getline(&line, &line_cap, in)) > 0) {
            size_t len = (size_t)n - (line[n - 1] == '\n');
            fs_resource_fields f;
            if (fs_store_scan_fields(line, len, &f) != NULL) {
                fprintf(stderr, "%s: a line the store refuses: not for this benchmark\n",
                        compare.files[i]);
                rc = 1;
                break;
            }
            if (compare.count == cap) {
                line_fields *grown = fs_array_grow(compare.lines, &cap, sizeof *grown, 4096);
                if (!grown) {
                    rc = 1;
                    break;
                }
                compare.lines = grown;
            }
            line_fields *lf = &compare.lines[compare.count++];
            memset(lf, 0, sizeof *lf);
            unsigned t = 0;
            while (t < compare.ntypes &&
                   (strlen(compare.types[t]) != f.resource_type_len ||
                    memcmp(compare.types[t], f.resource_type, f.resource_type_len) != 0))
                t++;
            if (t == compare.ntypes) {
                if (t == sizeof compare.types / sizeof *compare.types) {
                    rc = 1;
                    break;
                }
                memcpy(compare.types[t], f.resource_type, f.resource_type_len);
                compare.types[t][f.resource_type_len] = '\0';
                compare.ntypes++;
            }
            lf->type = (uint8_t)t;
            lf->updated_ms = f.last_updated_ms;
            lf->has_ms = f.has_last_updated_ms;
            if (!compare_field(line, len, f.id, f.id_len, &lf->at[0], &lf->len[0]) ||
                !compare_field(line, len, f.version_id, f.version_id_len, &lf->at[1],
                               &lf->len[1]) ||
                !compare_field(line, len, f.last_updated, f.last_updated_len, &lf->at[2],
                               &lf->len[2]) ||
                !compare_field(line, len, f.patient_id, f.patient_id_len, &lf->at[3], &lf->len[3]))
                rc = 1;
        }
        free(line);
        fclose(in);
    }
    return rc;
}

static void bind_field(sqlite3_stmt *st, int column, const char *line, uint32_t at, uint32_t len,
                       bool present)
{
    if (!present)
        sqlite3_bind_null(st, column);
    else if (at & FIELD_COPIED)
        sqlite3_bind_text(st, column, compare.copies.data + (at & ~FIELD_COPIED), (int)len,
                          SQLITE_STATIC);
    else
        sqlite3_bind_text(st, column, line + at, (int)len, SQLITE_STATIC);
}

/* The bare loop into tables of the store's shape (see above). */
static int compare_bare_shaped(void *arg)
{
    (void)arg;
    sqlite3 *db = NULL;
    sqlite3_stmt *insert[64] = {0};
    int rc = 1;
    if (sqlite3_open(compare.location, &db) != SQLITE_OK ||
        sqlite3_exec(db, fs_store_sqlite_pragmas, NULL, NULL, NULL) != SQLITE_OK)
        goto out;
    for (unsigned t = 0; t < compare.ntypes; t++) {
        char *ddl = fs_schema_type_ddl(FS_ENGINE_SQLITE, compare.types[t]);
        char sql[256];
        snprintf(sql, sizeof sql,
                 "INSERT INTO \"%s\" (id, version_id, last_updated, last_updated_ms, patient_id,"
                 " raw, loaded_at, run_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                 compare.types[t]);
        bool ok = ddl && sqlite3_exec(db, ddl, NULL, NULL, NULL) == SQLITE_OK &&
                  sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &insert[t], NULL) ==
                      SQLITE_OK;
        fs_free(ddl);
        if (!ok)
            goto out;
    }
    size_t k = 0;
    for (int i = 0; i < compare.nfiles; i++) {
        FILE *in = fopen(compare.files[i], "rb");
        if (!in)
            goto out;
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        bool ok = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
        while (ok && (n = getline(&line, &cap, in)) > 0 && k < compare.count) {
            size_t len = (size_t)n - (line[n - 1] == '\n');
            const line_fields *lf = &compare.lines[k++];
            sqlite3_stmt *st = insert[lf->type];
            bind_field(st, 1, line, lf->at[0], lf->len[0], true);
            bind_field(st, 2, line, lf->at[1], lf->len[1], lf->len[1] > 0);
            bind_field(st, 3, line, lf->at[2], lf->len[2], lf->len[2] > 0);
            if (lf->has_ms)
                sqlite3_bind_int64(st, 4, lf->updated_ms);
            else
                sqlite3_bind_null(st, 4);
            bind_field(st, 5, line, lf->at[3], lf->len[3], lf->len[3] > 0);
            sqlite3_bind_text(st, 6, line, (int)len, SQLITE_STATIC);
            sqlite3_bind_text(st, 7, "2026-11-28T21:33:00Z", 20, SQLITE_STATIC);
            sqlite3_bind_int64(st, 8, 1);
            ok = sqlite3_step(st) == SQLITE_DONE;
            sqlite3_reset(st);
        }
        free(line);
        fclose(in);
        if (!ok || sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
            goto out;
    }
    rc = k == compare.count ? 0 : 1;
out:
    if (rc)
        fprintf(stderr, "bench: %s\n", db ? sqlite3_errmsg(db) : "cannot open");
    for (size_t t = 0; t < sizeof insert / sizeof *insert; t++)
        sqlite3_finalize(insert[t]);
    sqlite3_close(db);
    return rc;
}

/* The bare loop of the lines into one table: test_sync --bare-sqlite's. */
static int compare_bare_lines(void *arg)
{
    (void)arg;
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc = 1;
    if (sqlite3_open(compare.location, &db) != SQLITE_OK ||
        sqlite3_exec(db,
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                     " CREATE TABLE IF NOT EXISTS bare (n INTEGER PRIMARY KEY, raw TEXT NOT NULL);",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO bare (raw) VALUES (?1)", -1, &st, NULL) != SQLITE_OK)
        goto out;
    for (int i = 0; i < compare.nfiles; i++) {
        FILE *in = fopen(compare.files[i], "rb");
        if (!in)
            goto out;
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        bool ok = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK;
        while (ok && (n = getline(&line, &cap, in)) > 0) {
            sqlite3_bind_text(st, 1, line, (int)n - (line[n - 1] == '\n'), SQLITE_STATIC);
            ok = sqlite3_step(st) == SQLITE_DONE;
            sqlite3_reset(st);
        }
        free(line);
        fclose(in);
        if (!ok || sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
            goto out;
    }
    rc = 0;
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

static int compare_store(void *arg)
{
    (void)arg;
    long stored = 0, rejected = 0;
    size_t bytes = 0;
    FILE *devnull = freopen("/dev/null", "w", stdout); /* load_files prints a line per file */
    (void)devnull;
    return load_files(compare.location, 0, compare.files, compare.nfiles, 1, &stored, &rejected,
                      &bytes);
}

static int run_compare(int argc, char **argv)
{
    int rounds = 3, i = 2;
    if (i + 1 < argc && strcmp(argv[i], "--rounds") == 0) {
        rounds = atoi(argv[i + 1]);
        i += 2;
    }
    if (rounds < 1 || rounds > MAX_ROUNDS || i >= argc || fhirsync_global_init() != FHIRSYNC_OK)
        return 2;
    compare.files = argv + i;
    compare.nfiles = argc - i;
    fs_buf_init(&compare.copies);
    size_t bytes = 0, lines = 0;
    for (int k = 0; k < compare.nfiles; k++) {
        FILE *in = fopen(compare.files[k], "rb");
        if (!in) {
            perror(compare.files[k]);
            return 1;
        }
        int c, last = '\n';
        while ((c = getc_unlocked(in)) != EOF) {
            bytes++;
            lines += c == '\n';
            last = c;
        }
        lines += last != '\n'; /* a last line without its newline */
        fclose(in);
    }
    const char *base = getenv("FHIRSYNC_TEST_TMP");
    char dir[PATH_MAX / 2], db[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/store-compare-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dir))
        return 1;
    snprintf(db, sizeof db, "%s/compare.db", dir);
    compare.location = db;
    printf("store load beside bare loops: %zu lines in %d files (%.1f MB, average %zu bytes), %d "
           "round%s\n",
           lines, compare.nfiles, (double)bytes / 1e6, lines ? bytes / lines : 0, rounds,
           rounds == 1 ? "" : "s");
    static const struct {
        const char *what;
        int (*fn)(void *);
    } runs[3] = {
        {"SQLite: the store's load (fhirsync_store_put)", compare_store},
        {"SQLite: bare INSERT loop, the store's tables", compare_bare_shaped},
        {"SQLite: bare INSERT loop, one column", compare_bare_lines},
    };
    bench_result results[3][MAX_ROUNDS];
    int status = 0;
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < 3; k++) {
            int which = (k + r) % 3; /* each goes first, second and third in turn */
            bench_child_setup = runs[which].fn == compare_bare_shaped ? compare_prepare : NULL;
            results[which][r] = bench_in_child(runs[which].fn, NULL);
            bench_child_setup = NULL;
            bench_print(runs[which].what, lines, bytes, results[which][r]);
            status |= results[which][r].status;
            remove_db(db);
        }
    }
    bench_compare("store load", results[0], "bare loop into the store's tables", results[1], rounds,
                  lines, "SQLite: store load vs bare loop into the store's tables");
    bench_compare("store load", results[0], "bare loop into one column", results[2], rounds, lines,
                  "SQLite: store load vs bare loop into one column");
    rmdir(dir);
    fhirsync_global_cleanup();
    return status ? 1 : 0;
}

/* --write DIR [ROWS]: the synthetic rows as NDJSON files of an export (TYPE.N.ndjson, 50,000
 * lines at most each, in the order of the run), for the tools that read files. */
static int run_write(int argc, char **argv)
{
    uint64_t rows = argc > 3 ? strtoull(argv[3], NULL, 10) : 1000000;
    size_t average;
    bench_template *pool = rows ? bench_pool(rows, &average) : NULL;
    char *row = malloc(64 * 1024);
    int rc = pool && row ? 0 : 1;
    FILE *out = NULL;
    unsigned part = 0;
    const char *type = NULL;
    for (uint64_t i = 0; rc == 0 && i < rows; i++) {
        const bench_template *t = bench_row(pool, rows, i, row);
        if (t->type != type || (i % 50000) == 0) {
            part = t->type != type ? 1 : part + 1;
            type = t->type;
            char path[PATH_MAX];
            snprintf(path, sizeof path, "%s/%s.%u.ndjson", argv[2], type, part);
            if ((out && fclose(out) != 0) || !(out = fopen(path, "w"))) {
                perror(path);
                rc = 1;
                break;
            }
        }
        if (fwrite(row, 1, t->len, out) != t->len || putc('\n', out) == EOF)
            rc = 1;
    }
    if (out && fclose(out) != 0)
        rc = 1;
    free(row);
    if (pool)
        bench_pool_free(pool);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "--compare") == 0)
        return run_compare(argc, argv);
    if (argc >= 3 && strcmp(argv[1], "--write") == 0)
        return run_write(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "--load") == 0)
        return run_load(argc, argv);
    return run_bench(argc, argv);
}
