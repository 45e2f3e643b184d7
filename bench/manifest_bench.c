/* bench/manifest_bench.c: the cost of a large export manifest (issue 11: 160,000 entries must take
 * under 2 s and 64 MB, linear in the number of entries). For each size N it measures, each in a
 * child process of its own (so that each peak RSS is its own):
 *   jansson      json_loadb of the manifest alone: the baseline (what a document tree costs)
 *   parse        fs_bulk_manifest_parse of the same text (the checks and URL resolution of every
 *                entry)
 *   to-first     an export against a fake server (libmicrohttpd, in another process): token, the
 *                status poll answered with the N-entry manifest, manifest.json and state.json
 *                saved, the files built, until the first download starts (FILE_STARTED): the
 *                manifest handling the issue measured; peak RSS at that moment
 *   whole        the same run to its end: every one of the N files downloaded (one line each),
 *                checked, fsync'ed and renamed, state.json kept up to date (not manifest handling:
 *                mostly the disk; skipped with --no-downloads)
 *   resume       fhirsync_export_run on a folder whose state.json records all N files as done:
 *                manifest.json and state.json read back, a FILE_DONE event each (no network)
 * and prints time and peak RSS with their ratios to the jansson baseline of the same run. Nothing
 * here fails on a timing.
 * usage: manifest_bench [--no-downloads] [N...]   (default 20000 80000 160000) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

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

/* The manifest text of n entries whose files are at `base`/files/TYPE/SEQ.ndjson, each of
 * `count` lines (count < 0: the entry has the count i % 1000 instead). */
static char *manifest_text(const char *base, size_t n, long count, size_t *len)
{
    char *text = NULL;
    FILE *m = open_memstream(&text, len);
    if (!m)
        return NULL;
    fprintf(m,
            "{\"transactionTime\":\"2024-05-01T10:00:00Z\",\"request\":\"%s/$export\","
            "\"requiresAccessToken\":true,\"output\":[",
            base);
    size_t seq[NTYPES] = {0};
    for (size_t i = 0; i < n; i++) {
        size_t t = i % NTYPES;
        seq[t]++;
        fprintf(m, "%s{\"type\":\"%s\",\"url\":\"%s/files/%s/%zu.ndjson\",\"count\":%zu}",
                i ? "," : "", types[t], base, types[t], seq[t],
                count < 0 ? i % 1000 : (size_t)count);
    }
    fprintf(m, "]}\n");
    fclose(m);
    return text;
}

/* A state.json (manifest not yet saved: the next run polls) for an export whose status URL is
 * `base`/status/1, recording `done` files of the manifest as finished. */
static int write_state(const char *dir, const char *base, size_t done, bool manifest_saved)
{
    char path[1300];
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/state.json", dir);
    FILE *s = fopen(path, "w");
    if (!s)
        return -1;
    fprintf(s,
            "{\"fhirsync_export\":1,\"base_url\":\"%s\",\"request\":{\"level\":\"system\","
            "\"method\":\"GET\",\"params\":[],\"lenient\":false},\"status_url\":\"%s"
            "/status/1\",\"kickoff_time\":\"2024-05-01T10:00:00Z\",%s"
            "\"manifest_saved\":%s,\"complete\":false,\"job_deleted\":false,\"files\":[",
            base, base, manifest_saved ? "\"transaction_time\":\"2024-05-01T10:00:00Z\"," : "",
            manifest_saved ? "true" : "false");
    size_t seq[NTYPES] = {0};
    for (size_t i = 0; i < done; i++) {
        size_t t = i % NTYPES;
        seq[t]++;
        fprintf(s, "%s{\"name\":\"%s.%zu.ndjson\",\"count\":%zu,\"quarantined\":0,\"bytes\":%zu}",
                i ? "," : "", types[t], seq[t], i % 1000, (i % 1000) * 200);
    }
    fprintf(s, "]}\n");
    return fclose(s) == 0 ? 0 : -1;
}

/* The resume folder: manifest.json with n entries, state.json with every file done. */
static int make_folder(const char *dir, size_t n)
{
    char path[1300];
    size_t len;
    char *text = manifest_text(BASE, n, -1, &len);
    if (!text || write_state(dir, BASE, n, true) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    FILE *m = fopen(path, "w");
    int rc = m && fwrite(text, 1, len, m) == len ? 0 : -1;
    if (m && fclose(m) != 0)
        rc = -1;
    free(text);
    return rc;
}

/* ---- the fake server ------------------------------------------------------------------------ */

static char *served_manifest;
static size_t served_len;

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_len, void **con_cls)
{
    (void)cls, (void)version, (void)upload;
    if (!*con_cls) { /* the first call is for the headers alone */
        *con_cls = conn;
        return MHD_YES;
    }
    if (*upload_len) { /* the token request's form: not checked */
        *upload_len = 0;
        return MHD_YES;
    }
    struct MHD_Response *resp;
    const char *ctype = "application/json";
    char line[200];
    if (!strcmp(method, "POST") && !strcmp(url, "/token")) {
        static const char token[] = "{\"access_token\":\"bench-token\",\"token_type\":"
                                    "\"bearer\",\"expires_in\":3600,\"scope\":\"system/*.read\"}";
        resp =
            MHD_create_response_from_buffer(strlen(token), (void *)token, MHD_RESPMEM_PERSISTENT);
    } else if (!strcmp(url, "/fhir/status/1")) {
        resp = MHD_create_response_from_buffer(served_len, served_manifest, MHD_RESPMEM_PERSISTENT);
    } else if (!strncmp(url, "/fhir/files/", 12)) {
        char type[64] = "";
        unsigned long seq = 0;
        sscanf(url + 12, "%63[A-Za-z]/%lu", type, &seq);
        int n =
            snprintf(line, sizeof line, "{\"resourceType\":\"%s\",\"id\":\"r%lu\"}\n", type, seq);
        resp = MHD_create_response_from_buffer((size_t)n, line, MHD_RESPMEM_MUST_COPY);
        ctype = "application/fhir+ndjson";
    } else {
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(resp, "Content-Type", ctype);
        enum MHD_Result r = MHD_queue_response(conn, MHD_HTTP_NOT_FOUND, resp);
        MHD_destroy_response(resp);
        return r;
    }
    MHD_add_response_header(resp, "Content-Type", ctype);
    enum MHD_Result r = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return r;
}

/* Start the server in a child process serving a manifest of n entries: its pid and port. */
static pid_t start_server(size_t n, unsigned *port)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        struct MHD_Daemon *d =
            MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL_TURBO | MHD_USE_EPOLL,
                             0, NULL, NULL, answer, NULL, MHD_OPTION_THREAD_POOL_SIZE, 2U,
                             MHD_OPTION_CONNECTION_LIMIT, 64U, MHD_OPTION_END);
        const union MHD_DaemonInfo *info =
            d ? MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT) : NULL;
        unsigned p = info ? info->port : 0;
        char base[100];
        snprintf(base, sizeof base, "http://127.0.0.1:%u/fhir", p);
        served_manifest = p ? manifest_text(base, n, 1, &served_len) : NULL;
        if (!served_manifest)
            p = 0;
        if (write(fds[1], &p, sizeof p) != (ssize_t)sizeof p || !p)
            _exit(1);
        close(fds[1]);
        for (;;)
            pause();
    }
    close(fds[1]);
    unsigned p = 0;
    ssize_t got = pid > 0 ? read(fds[0], &p, sizeof p) : -1;
    close(fds[0]);
    if (got != (ssize_t)sizeof p || !p) {
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        return -1;
    }
    *port = p;
    return pid;
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

/* What a run reports from inside: files done, and the moment the first download started. */
typedef struct run_report {
    size_t done;
    bool started;
    bool stop_at_first; /* --no-downloads: stop the run there */
    double t0;          /* when the measurement began (monotonic) */
    double first_s, first_mib;
} run_report;

static int on_event(const fhirsync_export_event *ev, void *userdata)
{
    run_report *rep = userdata;
    if (ev->kind == FHIRSYNC_EXPORT_EV_FILE_DONE)
        rep->done++;
    if (ev->kind == FHIRSYNC_EXPORT_EV_FILE_STARTED && !rep->started) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        rep->started = true;
        rep->first_s = now_s() - rep->t0;
        rep->first_mib = (double)ru.ru_maxrss / 1024.0;
        return rep->stop_at_first ? 1 : 0;
    }
    return 0;
}

static char key_path[1300];

/* An export run on `dir` against `base` (the fake server's, or an unreachable one for the
 * resume). With downloads, the first download's figures go to report_fd. */
static int run_export(const char *dir, const char *base, size_t n, bool downloads,
                      bool stop_at_first, double t0, int report_fd)
{
    char token_url[200];
    snprintf(token_url, sizeof token_url, "%.*s/token", (int)(strlen(base) - 5), base);
    fhirsync_endpoint *ep = fhirsync_endpoint_new("bench");
    fhirsync_error err = {0};
    if (!ep || fhirsync_endpoint_set(ep, "base_url", base, "bench", &err) != FHIRSYNC_OK ||
        fhirsync_endpoint_set(ep, "key_file", key_path, "bench", &err) != FHIRSYNC_OK ||
        fhirsync_endpoint_set(ep, "client_id", "bench", "bench", &err) != FHIRSYNC_OK ||
        fhirsync_endpoint_set(ep, "token_url", token_url, "bench", &err) != FHIRSYNC_OK) {
        fprintf(stderr, "endpoint: %s\n", err.message);
        return 1;
    }
    fhirsync_export *ex = NULL;
    if (fhirsync_export_open(ep, dir, 4, 0, &ex, &err) != FHIRSYNC_OK) {
        fprintf(stderr, "open: %s\n", err.message);
        fhirsync_endpoint_free(ep);
        return 1;
    }
    run_report rep = {.stop_at_first = stop_at_first, .t0 = t0};
    fhirsync_export_set_callback(ex, on_event, &rep);
    fhirsync_code rc = fhirsync_export_run(ex);
    bool ok = stop_at_first ? rep.started : rc == FHIRSYNC_OK && rep.done == n;
    if (!ok && rc != FHIRSYNC_OK)
        fprintf(stderr, "run: %s\n", fhirsync_export_errmsg(ex));
    else if (!ok)
        fprintf(stderr, "run: %zu FILE_DONE events for %zu files\n", rep.done, n);
    if (downloads && report_fd >= 0) {
        double figures[2] = {rep.started ? rep.first_s : -1, rep.first_mib};
        if (write(report_fd, figures, sizeof figures) != (ssize_t)sizeof figures)
            ok = false;
    }
    fhirsync_export_free(ex);
    fhirsync_endpoint_free(ep);
    return ok ? 0 : 1;
}

enum { W_JANSSON, W_PARSE, W_DOWNLOAD, W_RESUME };

/* Run one measurement in a child: its wall time (s) and peak RSS (MiB), and for W_DOWNLOAD the
 * figures at the first download (first[0] s, first[1] MiB); -1 on failure. */
static int measure(int which, const char *dir, const char *base, size_t n, bool downloads,
                   double *secs, double *mib, double first[2])
{
    int fds[2] = {-1, -1};
    if (which == W_DOWNLOAD && pipe(fds) != 0)
        return -1;
    double t0 = now_s();
    pid_t pid = fork();
    if (pid == 0) {
        if (fhirsync_global_init() != FHIRSYNC_OK)
            _exit(2);
        int rc = which == W_JANSSON  ? run_jansson(dir)
                 : which == W_PARSE  ? run_parse(dir)
                 : which == W_RESUME ? run_export(dir, BASE, n, false, false, t0, -1)
                                     : run_export(dir, base, n, true, !downloads, t0, fds[1]);
        _exit(rc);
    }
    if (fds[1] >= 0)
        close(fds[1]);
    int status = 0;
    struct rusage ru;
    bool got = fds[0] < 0 ||
               (pid > 0 && read(fds[0], first, 2 * sizeof *first) == (ssize_t)(2 * sizeof *first));
    if (fds[0] >= 0)
        close(fds[0]);
    if (pid < 0 || wait4(pid, &status, 0, &ru) != pid)
        return -1;
    *secs = now_s() - t0;
    *mib = (double)ru.ru_maxrss / 1024.0;
    return got && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static void print_row(size_t n, const char *what, double t, double r, double t_base, double r_base)
{
    printf("%-8zu %-10s %10.3f %10.1f %10.2f %10.2f\n", n, what, t, r, t_base > 0 ? t / t_base : 0,
           r_base > 0 ? r / r_base : 0);
}

int main(int argc, char **argv)
{
    size_t sizes[16] = {20000, 80000, 160000};
    size_t nsizes = 3;
    bool downloads = true;
    int first_size = 1;
    if (argc > 1 && !strcmp(argv[1], "--no-downloads")) {
        downloads = false;
        first_size = 2;
    }
    if (argc > first_size) {
        nsizes = 0;
        for (int i = first_size; i < argc && nsizes < 16; i++)
            sizes[nsizes++] = (size_t)strtoull(argv[i], NULL, 10);
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* rows as they come, even into a file */
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
    printf("%-8s %-10s %10s %10s %10s %10s\n", "entries", "what", "time (s)", "peak MiB",
           "x jansson", "x jansson");
    printf("%-8s %-10s %10s %10s %10s %10s\n", "", "", "", "", "time", "RSS");
    for (size_t k = 0; k < nsizes; k++) {
        size_t n = sizes[k];
        char dir[1100], dl_dir[1100], base[100];
        snprintf(dir, sizeof dir, "%s/n%zu", root, n);
        snprintf(dl_dir, sizeof dl_dir, "%s/dl%zu", root, n);
        unsigned port = 0;
        pid_t server = start_server(n, &port);
        snprintf(base, sizeof base, "http://127.0.0.1:%u/fhir", port);
        if (server < 0 || make_folder(dir, n) != 0 || write_state(dl_dir, base, 0, false) != 0) {
            fprintf(stderr, "cannot set up the folders or the server\n");
            return 1;
        }
        double t[4] = {0}, r[4] = {0}, first[2] = {-1, 0};
        static const char *const names[] = {"jansson", "parse", "whole", "resume"};
        for (int w = W_JANSSON; w <= W_RESUME; w++) {
            if (measure(w, w == W_DOWNLOAD ? dl_dir : dir, base, n, downloads, &t[w], &r[w],
                        first) != 0) {
                printf("%-8zu %-10s failed\n", n, names[w]);
                failed = 1;
                continue;
            }
            if (w == W_DOWNLOAD) {
                print_row(n, "to-first", first[0], first[1], t[0], r[0]);
                if (downloads)
                    print_row(n, "whole", t[w], r[w], t[0], r[0]);
            } else {
                print_row(n, names[w], t[w], r[w], t[0], r[0]);
            }
        }
        kill(server, SIGTERM);
        waitpid(server, NULL, 0);
        printf("BENCH | manifest %zu entries: parse time vs jansson alone | %.3f s | %.3f s | "
               "%.2f\n",
               n, t[1], t[0], t[0] > 0 ? t[1] / t[0] : 0);
        printf("BENCH | manifest %zu entries: parse peak RSS vs jansson alone | %.1f MiB | "
               "%.1f MiB | %.2f\n",
               n, r[1], r[0], r[0] > 0 ? r[1] / r[0] : 0);
        printf("BENCH | manifest %zu entries: handling until the first download vs jansson "
               "alone | %.3f s | %.3f s | %.2f\n",
               n, first[0], t[0], t[0] > 0 ? first[0] / t[0] : 0);
        printf("BENCH | manifest %zu entries: peak RSS until the first download vs jansson "
               "alone | %.1f MiB | %.1f MiB | %.2f\n",
               n, first[1], r[0], r[0] > 0 ? first[1] / r[0] : 0);
        if (downloads)
            printf("BENCH | manifest %zu entries: whole run, %zu files downloaded, vs jansson "
                   "alone | %.3f s | %.3f s | %.2f\n",
                   n, n, t[2], t[0], t[0] > 0 ? t[2] / t[0] : 0);
        printf("BENCH | manifest %zu entries: resume (all files done) vs jansson alone | "
               "%.3f s | %.3f s | %.2f\n",
               n, t[3], t[0], t[0] > 0 ? t[3] / t[0] : 0);
        char cmd[2400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", dir, dl_dir);
        if (system(cmd) != 0)
            failed = 1;
    }
    unlink(key_path);
    rmdir(root);
    return failed;
}
