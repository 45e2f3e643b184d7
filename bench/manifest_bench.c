/* bench/manifest_bench.c: the cost of a large export manifest (issue 11: 160,000 entries must take
 * under 2 s and 64 MB, linear in the number of entries). For each size it writes an export folder
 * whose manifest.json lists N output files and whose state.json records them all as downloaded,
 * then measures in separate child processes (so that each peak RSS is its own):
 *   jansson      json_loadb of manifest.json alone (the baseline: any reader pays this)
 *   parse        fs_bulk_manifest_parse (URL resolution and checks of every entry)
 *   export       fhirsync_export_open + fhirsync_export_run on the folder: the manifest parsed,
 *                the files built and matched with state.json, a FILE_DONE event each, state.json
 *                saved (no network: every file is done)
 * and prints time and peak RSS beside the baseline. Nothing here fails on a timing.
 * usage: manifest_bench [N...]   (default 20000 80000 160000) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bulk/bulk_internal.h"
#include "fhirsync/fhirsync.h"
#include "json/json.h"

static const char *const types[] = {"Patient", "Observation", "Encounter", "Condition"};
#define NTYPES (sizeof types / sizeof *types)
#define BASE "http://127.0.0.1:9/fhir"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf)
        buf[n] = '\0';
    *len = (size_t)n;
    fclose(f);
    return buf;
}

/* The folder: manifest.json with n entries, state.json with every file done. */
static int make_folder(const char *dir, size_t n)
{
    char path[1300];
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    FILE *m = fopen(path, "w");
    snprintf(path, sizeof path, "%s/state.json", dir);
    FILE *s = fopen(path, "w");
    if (!m || !s)
        return -1;
    fprintf(m, "{\"transactionTime\":\"2024-05-01T10:00:00Z\",\"request\":\"" BASE "/$export\","
               "\"requiresAccessToken\":true,\"output\":[");
    fprintf(s, "{\"fhirsync_export\":1,\"base_url\":\"" BASE "\",\"request\":{\"level\":\"system\","
               "\"method\":\"GET\",\"params\":[],\"lenient\":false},\"status_url\":\"" BASE
               "/status/1\",\"kickoff_time\":\"2024-05-01T10:00:00Z\",\"transaction_time\":"
               "\"2024-05-01T10:00:00Z\",\"manifest_saved\":true,\"complete\":false,"
               "\"job_deleted\":false,\"files\":[");
    size_t seq[NTYPES] = {0};
    for (size_t i = 0; i < n; i++) {
        size_t t = i % NTYPES;
        seq[t]++;
        fprintf(m, "%s{\"type\":\"%s\",\"url\":\"" BASE "/files/%s/%zu.ndjson\",\"count\":%zu}",
                i ? "," : "", types[t], types[t], seq[t], i % 1000);
        fprintf(s, "%s{\"name\":\"%s.%zu.ndjson\",\"count\":%zu,\"quarantined\":0,\"bytes\":%zu}",
                i ? "," : "", types[t], seq[t], i % 1000, (i % 1000) * 200);
    }
    fprintf(m, "]}\n");
    fprintf(s, "]}\n");
    return fclose(m) == 0 && fclose(s) == 0 ? 0 : -1;
}

static int run_jansson(const char *dir)
{
    char path[1300];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    size_t len;
    char *text = read_all(path, &len);
    json_error_t e;
    json_t *doc = text ? json_loadb(text, len, 0, &e) : NULL;
    int rc = doc ? 0 : 1;
    json_decref(doc);
    free(text);
    return rc;
}

static int run_parse(const char *dir)
{
    char path[1300];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    size_t len;
    char *text = read_all(path, &len);
    fs_bulk_manifest m;
    fs_bulk_manifest_init(&m);
    fhirsync_error err = {0};
    int rc = text && fs_bulk_manifest_parse(&m, text, len, BASE "/status/1", &err) == FHIRSYNC_OK
                 ? 0
                 : 1;
    if (rc)
        fprintf(stderr, "parse: %s\n", err.message);
    fs_bulk_manifest_clear(&m);
    free(text);
    return rc;
}

static int count_done(const fhirsync_export_event *ev, void *userdata)
{
    if (ev->kind == FHIRSYNC_EXPORT_EV_FILE_DONE)
        (*(size_t *)userdata)++;
    return 0;
}

static char key_path[1300];

static int run_export(const char *dir, size_t n)
{
    fhirsync_endpoint *ep = fhirsync_endpoint_new("bench");
    fhirsync_error err = {0};
    if (!ep || fhirsync_endpoint_set(ep, "base_url", BASE, "bench", &err) != FHIRSYNC_OK ||
        fhirsync_endpoint_set(ep, "key_file", key_path, "bench", &err) != FHIRSYNC_OK ||
        fhirsync_endpoint_set(ep, "client_id", "bench", "bench", &err) != FHIRSYNC_OK ||
        fhirsync_endpoint_set(ep, "token_url", "http://127.0.0.1:9/token", "bench", &err) !=
            FHIRSYNC_OK) {
        fprintf(stderr, "endpoint: %s\n", err.message);
        return 1;
    }
    fhirsync_export *ex = NULL;
    if (fhirsync_export_open(ep, dir, 0, 0, &ex, &err) != FHIRSYNC_OK) {
        fprintf(stderr, "open: %s\n", err.message);
        fhirsync_endpoint_free(ep);
        return 1;
    }
    size_t done = 0;
    fhirsync_export_set_callback(ex, count_done, &done);
    fhirsync_code rc = fhirsync_export_run(ex);
    if (rc != FHIRSYNC_OK)
        fprintf(stderr, "run: %s\n", fhirsync_export_errmsg(ex));
    else if (done != n)
        fprintf(stderr, "run: %zu FILE_DONE events for %zu files\n", done, n);
    fhirsync_export_free(ex);
    fhirsync_endpoint_free(ep);
    return rc == FHIRSYNC_OK && done == n ? 0 : 1;
}

/* Run one measurement in a child: its wall time (s) and peak RSS (MiB); -1 on failure. */
static int measure(int which, const char *dir, size_t n, double *secs, double *mib)
{
    double t0 = now_s();
    pid_t pid = fork();
    if (pid == 0) {
        if (fhirsync_global_init() != FHIRSYNC_OK)
            _exit(2);
        int rc = which == 0 ? run_jansson(dir) : which == 1 ? run_parse(dir) : run_export(dir, n);
        _exit(rc);
    }
    int status = 0;
    struct rusage ru;
    if (pid < 0 || wait4(pid, &status, 0, &ru) != pid)
        return -1;
    *secs = now_s() - t0;
    *mib = (double)ru.ru_maxrss / 1024.0;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    size_t sizes[16] = {20000, 80000, 160000};
    size_t nsizes = 3;
    if (argc > 1) {
        nsizes = 0;
        for (int i = 1; i < argc && nsizes < 16; i++)
            sizes[nsizes++] = (size_t)strtoull(argv[i], NULL, 10);
    }
    char tmpl[] = "/tmp/fhirsync-manifest-bench-XXXXXX";
    const char *root = mkdtemp(tmpl);
    if (!root)
        return 1;
    int failed = 0;
    fhirsync_key *key = NULL;
    fhirsync_error kerr = {0};
    snprintf(key_path, sizeof key_path, "%s/key.pem", root);
    if (fhirsync_global_init() != FHIRSYNC_OK ||
        fhirsync_key_generate(FHIRSYNC_ALG_ES384, 0, &key, &kerr) != FHIRSYNC_OK ||
        fhirsync_key_write_pem(key, key_path, &kerr) != FHIRSYNC_OK) {
        fprintf(stderr, "key: %s\n", kerr.message);
        return 1;
    }
    fhirsync_key_free(key);
    printf("%-8s %-8s %10s %10s\n", "entries", "what", "time (s)", "peak MiB");
    for (size_t k = 0; k < nsizes; k++) {
        char dir[1100];
        snprintf(dir, sizeof dir, "%s/n%zu", root, sizes[k]);
        if (make_folder(dir, sizes[k]) != 0)
            return 1;
        double t[3] = {0}, r[3] = {0};
        static const char *const names[] = {"jansson", "parse", "export"};
        for (int w = 0; w < 3; w++) {
            if (measure(w, dir, sizes[k], &t[w], &r[w]) != 0) {
                printf("%-8zu %-8s failed\n", sizes[k], names[w]);
                failed = 1;
                continue;
            }
            printf("%-8zu %-8s %10.3f %10.1f\n", sizes[k], names[w], t[w], r[w]);
        }
        printf("BENCH | manifest %zu entries: export time vs jansson alone | %.3f s | %.3f s | "
               "%.2f\n",
               sizes[k], t[2], t[0], t[0] > 0 ? t[2] / t[0] : 0);
        printf("BENCH | manifest %zu entries: export peak RSS vs jansson alone | %.1f MiB | "
               "%.1f MiB | %.2f\n",
               sizes[k], r[2], r[0], r[0] > 0 ? r[2] / r[0] : 0);
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            failed = 1;
    }
    unlink(key_path);
    rmdir(root);
    return failed;
}
