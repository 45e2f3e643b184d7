/* cli/cmd_get.c: `fhirsync get`: an authenticated FHIR read or search from the command line.
 * Without --all the response body is printed as received; with --all the search is paged
 * through and each resource written as one NDJSON line, with the server's exact bytes (only
 * insignificant line breaks inside a pretty-printed resource become spaces; the library has
 * validated each page as strict JSON, except for member names repeated inside a resource, which
 * are passed on as received). With --out the data goes to a temporary file next to FILE that is
 * renamed into place only when everything arrived: a failure never leaves a partial file that
 * looks complete. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: fhirsync get [options] PATH_OR_URL\n"
            "\n"
            "Read from the FHIR server with the endpoint's credentials: a path relative to the\n"
            "FHIR base ('Patient/123', 'Observation?patient=123&_count=100') or an absolute URL\n"
            "on the server's own origin (the token is never sent anywhere else).\n"
            "\n"
            "options:\n"
            "  --all           follow the search's next links and write every resource as one\n"
            "                  line of NDJSON (bytes as the server sent them; pages must be\n"
            "                  strict JSON, but a member name repeated inside a resource is\n"
            "                  passed on as received)\n"
            "  --limit N       stop after N resources (implies --all)\n"
            "  --out FILE      write to FILE (created with mode 0600) instead of stdout; the data\n"
            "                  is written to a temporary file and renamed when complete\n"
            "  --force         replace FILE if it exists (otherwise refused)\n"
            "\n"
            "Without --all the response body is printed as received. Errors show the server's\n"
            "OperationOutcome; exit codes: 2 usage (also a URL on another origin),\n"
            "5 authentication, 6 not found, 7 server error or refusal, 8 protocol violation\n"
            "(malformed Bundle, paging loop, foreign next link or redirect), 9 network or\n"
            "timeout, 12 interrupted, 13 local file.\n"
            "\n");
    cli_print_common_help(out);
}

static void on_signal(int sig)
{
    (void)sig;
    fhirsync_cancel();
}

/* Print a local failure as one line with the code's exit status. */
static int fail_code(fhirsync_code code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int fail_code(fhirsync_code code, const char *fmt, ...)
{
    fhirsync_error err = {.code = code};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err.message, sizeof err.message, fmt, ap);
    va_end(ap);
    return cli_fail(&err);
}

/* Bytes of output collected before a write(2). */
#define OUTPUT_BUFFER (256 * 1024)

/* Where the output goes: stdout, or a temporary file renamed to `path` at the end. */
typedef struct output {
    FILE *f;
    const char *path; /* NULL: stdout */
    char temp[PATH_MAX];
    bool force;
} output;

static int output_open(output *o, const char *path, bool force)
{
    o->path = path;
    o->force = force;
    if (!path) {
        o->f = stdout;
        /* NDJSON of a large search is many small writes: batch them (a terminal keeps its line
         * buffering) */
        if (!isatty(STDOUT_FILENO))
            setvbuf(stdout, NULL, _IOFBF, OUTPUT_BUFFER);
        return 0;
    }
    /* fail before any network traffic when the file is there */
    if (!force && access(path, F_OK) == 0)
        return fail_code(FHIRSYNC_E_IO, "%s exists; use --force to replace it", path);
    if (snprintf(o->temp, sizeof o->temp, "%s.partial-XXXXXX", path) >= (int)sizeof o->temp)
        return fail_code(FHIRSYNC_E_IO, "file name too long: %s", path);
    int fd = mkstemp(o->temp); /* mode 0600 */
    if (fd < 0 || fchmod(fd, 0600) != 0 || !(o->f = fdopen(fd, "w"))) {
        int saved = errno;
        if (fd >= 0) {
            close(fd);
            unlink(o->temp);
        }
        o->temp[0] = '\0';
        return fail_code(FHIRSYNC_E_IO, "cannot create a file next to %s: %s", path,
                         strerror(saved));
    }
    setvbuf(o->f, NULL, _IOFBF, OUTPUT_BUFFER); /* best effort, as for stdout */
    return 0;
}

/* Drop a partial output (the temporary file) after a failure. */
static void output_discard(output *o)
{
    if (o->path && o->f) {
        fclose(o->f);
        unlink(o->temp);
    }
    o->f = NULL;
}

/* Flush and move the temporary file into place: O_EXCL unless --force, so that a file that
 * appeared meanwhile is not replaced. */
static int output_commit(output *o)
{
    if (!o->path) {
        if (fflush(stdout) != 0 || ferror(stdout))
            return fail_code(FHIRSYNC_E_IO, "cannot write to stdout: %s", strerror(errno));
        return 0;
    }
    FILE *f = o->f;
    o->f = NULL;
    int rc = 0;
    if (fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0) {
        rc = fail_code(FHIRSYNC_E_IO, "cannot write %s: %s", o->temp, strerror(errno));
        fclose(f);
        unlink(o->temp);
        return rc;
    }
    if (fclose(f) != 0) {
        rc = fail_code(FHIRSYNC_E_IO, "cannot write %s: %s", o->temp, strerror(errno));
        unlink(o->temp);
        return rc;
    }
    if (!o->force) {
        int fd = open(o->path, O_WRONLY | O_CREAT | O_EXCL, 0600);
        if (fd < 0) {
            rc = fail_code(FHIRSYNC_E_IO, "cannot create %s: %s%s", o->path, strerror(errno),
                           errno == EEXIST ? " (use --force to replace it)" : "");
            unlink(o->temp);
            return rc;
        }
        close(fd);
    }
    if (rename(o->temp, o->path) != 0) {
        rc = fail_code(FHIRSYNC_E_IO, "cannot rename %s to %s: %s", o->temp, o->path,
                       strerror(errno));
        unlink(o->temp);
    }
    return rc;
}

/* One NDJSON line. A line break in valid JSON can only be whitespace between tokens (JSON strings
 * cannot hold raw control characters), so replacing it with a space keeps the value intact. Most
 * servers send compact JSON: two memchr() passes find nothing and the resource is one fwrite. */
static bool write_line(FILE *f, const char *resource, size_t len)
{
    const char *p = resource, *end = resource + len;
    for (;;) {
        const char *stop = memchr(p, '\n', (size_t)(end - p));
        if (!stop)
            stop = end;
        const char *cr = memchr(p, '\r', (size_t)(stop - p));
        if (cr)
            stop = cr;
        if (fwrite(p, 1, (size_t)(stop - p), f) != (size_t)(stop - p))
            return false;
        if (stop == end)
            return fputc('\n', f) != EOF;
        if (fputc(' ', f) == EOF)
            return false;
        p = stop + 1;
    }
}

static int get_one(fhirsync_client *client, const char *target, output *out)
{
    fhirsync_response *resp = NULL;
    if (fhirsync_client_get(client, target, &resp) != FHIRSYNC_OK) {
        fhirsync_code code = fhirsync_client_errcode(client);
        output_discard(out);
        int rc = cli_fail_handle(code, fhirsync_client_errmsg(client));
        /* a URL refused by the origin rule is the caller's mistake, not the profile's */
        return code == FHIRSYNC_E_URL ? EXIT_USAGE : rc;
    }
    size_t len;
    const char *body = fhirsync_response_body(resp, &len);
    bool ok = fwrite(body, 1, len, out->f) == len &&
              (len == 0 || body[len - 1] == '\n' || fputc('\n', out->f) != EOF);
    fhirsync_response_free(resp);
    if (!ok) {
        int rc = fail_code(FHIRSYNC_E_IO, "cannot write %s: %s",
                           out->path ? out->temp : "to stdout", strerror(errno));
        output_discard(out);
        return rc;
    }
    return output_commit(out);
}

static int get_all(fhirsync_client *client, const char *query, long limit, output *out, bool quiet)
{
    fhirsync_search *search = NULL;
    int rc = 0;
    size_t written = 0;
    fhirsync_code code = fhirsync_search_start(client, query, &search);
    while (code == FHIRSYNC_OK && (limit < 0 || (long)written < limit)) {
        const char *resource;
        size_t len;
        code = fhirsync_search_next(search, &resource, &len);
        if (code != FHIRSYNC_OK || !resource)
            break;
        if (!write_line(out->f, resource, len)) {
            rc = fail_code(FHIRSYNC_E_IO, "cannot write %s: %s",
                           out->path ? out->temp : "to stdout", strerror(errno));
            break;
        }
        written++;
    }
    if (code != FHIRSYNC_OK) {
        rc = cli_fail_handle(code, fhirsync_client_errmsg(client));
        if (code == FHIRSYNC_E_URL && !search)
            rc = EXIT_USAGE; /* the query itself was refused (another origin) */
    }
    if (rc != 0) {
        if (out->path)
            fprintf(stderr,
                    "fhirsync: %zu resources had been received before the error; the "
                    "partial output was removed (%s not written)\n",
                    written, out->path);
        else
            fprintf(stderr,
                    "fhirsync: %zu resources were written to stdout before the error: "
                    "the output is incomplete\n",
                    written);
        output_discard(out);
    } else {
        rc = output_commit(out);
        if (rc == 0 && !quiet && out->path)
            fprintf(stderr, "fhirsync: wrote %zu resources (%zu pages) to %s\n", written,
                    fhirsync_search_pages(search), out->path);
    }
    fhirsync_search_free(search);
    return rc;
}

int cmd_get(int argc, char **argv)
{
    enum { OPT_ALL = 1, OPT_LIMIT, OPT_OUT, OPT_FORCE };
    static const struct option own[] = {{"all", no_argument, NULL, OPT_ALL},
                                        {"limit", required_argument, NULL, OPT_LIMIT},
                                        {"out", required_argument, NULL, OPT_OUT},
                                        {"force", no_argument, NULL, OPT_FORCE},
                                        {NULL, 0, NULL, 0}};
    char short_opts[32];
    const struct option *opts = cli_options(own, "", short_opts, sizeof short_opts);
    cli_profile profile = {0};
    bool all = false, force = false;
    long limit = -1;
    const char *out_path = NULL;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, short_opts, opts, NULL)) != -1) {
        int handled = cli_profile_option(&profile, opt, optarg, "get");
        if (handled < 0)
            return -handled;
        if (handled)
            continue;
        switch (opt) {
        case OPT_ALL: all = true; break;
        case OPT_LIMIT: {
            char *end;
            errno = 0;
            limit = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end || limit < 0)
                return cli_usage_error("get", "--limit expects a number >= 0, got '%s'", optarg);
            all = true;
            break;
        }
        case OPT_OUT: out_path = optarg; break;
        case OPT_FORCE: force = true; break;
        case 'h': usage(stdout); return 0;
        default: return cli_usage_error("get", "unknown option");
        }
    }
    if (optind >= argc)
        return cli_usage_error("get", "expected a path such as 'Patient?family=smith'");
    if (optind + 1 < argc)
        return cli_usage_error("get", "unexpected argument '%s'", argv[optind + 1]);
    if (out_path && !*out_path)
        return cli_usage_error("get", "--out expects a file name");
    const char *target = argv[optind];
    cli_setup_logging(&profile);

    fhirsync_error err = {0};
    fhirsync_endpoint *ep = NULL;
    fhirsync_client *client = NULL;
    output out = {0};
    int rc = 0;
    if (cli_profile_resolve(&profile, &ep, &err) != FHIRSYNC_OK ||
        fhirsync_client_new(ep, &client, &err) != FHIRSYNC_OK) {
        rc = cli_fail(&err);
        goto done;
    }
    rc = output_open(&out, out_path, force);
    if (rc != 0)
        goto done;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    rc = all ? get_all(client, target, limit, &out, profile.quiet) : get_one(client, target, &out);
    if (rc == EXIT_AUTH)
        fprintf(stderr, "fhirsync: run 'fhirsync doctor' (same options) to check the "
                        "credentials step by step\n");
done:
    fhirsync_client_free(client);
    fhirsync_endpoint_free(ep);
    return rc;
}
