/* cli/cmd_export.c: `fhirsync export`: run a FHIR Bulk Data $export into a folder, with a
 * progress display on a terminal (plain lines otherwise), Ctrl-C leaving a resumable folder, and
 * a summary at the end. Uses only the public API (fhirsync/bulk.h). */
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "fhirsync/bulk.h"

#define MAX_REPEATED 256

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: fhirsync export --out DIR [options]\n"
        "       fhirsync export --resume DIR [options]\n"
        "\n"
        "Run a FHIR Bulk Data v2 $export and download every file into DIR: kick-off, status\n"
        "polls (honouring Retry-After and X-Progress), the manifest, then parallel downloads\n"
        "with every NDJSON line checked (one JSON object, the manifest's resourceType, length\n"
        "capped) and counts compared with the manifest. On success the job is deleted on the\n"
        "server.\n"
        "\n"
        "An interrupted export (Ctrl-C, kill, reboot, network loss) continues where it stopped:\n"
        "run the same command again, or 'fhirsync export --resume DIR'. Finished files are not\n"
        "downloaded again and no resource is duplicated. A different request into a folder that\n"
        "holds an export is refused.\n"
        "\n"
        "what to export:\n"
        "  --level LEVEL          system ([base]/$export), patient ([base]/Patient/$export)\n"
        "                         or group ([base]/Group/ID/$export). Default: the level sync\n"
        "                         uses first: group when the profile sets group_id, else\n"
        "                         patient. Unlike sync, export does not fall back to the next\n"
        "                         level when the server refuses one: say --level system then\n"
        "  --group ID             the Group of a group-level export (default: group_id setting;\n"
        "                         giving it implies --level group)\n"
        "  --type T,T,...         _type: resource types (default: the types setting)\n"
        "  --since INSTANT        _since: only resources changed after it, e.g.\n"
        "                         2024-05-01T00:00:00Z (deleted resources come as 'deleted' "
        "files)\n"
        "  --elements E,E,...     _elements\n"
        "  --type-filter QUERY    _typeFilter, e.g. 'Observation?category=laboratory' "
        "(repeatable)\n"
        "  --patient ID           patient: limit to this patient (repeatable; needs --post)\n"
        "  --include-associated-data V   includeAssociatedData\n"
        "  --output-format TYPE   _outputFormat (default: not sent; servers give ndjson)\n"
        "  --param NAME=VALUE     any other kick-off parameter (repeatable)\n"
        "  --post                 POST a Parameters resource instead of GET with a query\n"
        "  --lenient              Prefer: handling=lenient (ignore unsupported parameters)\n"
        "\n"
        "where and how:\n"
        "  --out DIR              the export folder (created 0700; files 0600)\n"
        "  --resume DIR           continue the export in DIR with the request it records\n"
        "  --parallel N           concurrent downloads (default: the parallel setting, 4)\n"
        "  --keep-job             do not DELETE the job on the server after success\n"
        "  --max-line BYTES       longest accepted NDJSON line (default 67108864 = 64 MiB;\n"
        "                         memory use does not depend on it)\n"
        "  --deadline DURATION    stop a run after this long whatever the server does (default\n"
        "                         24h; e.g. 90s, 30m, 6h, 0 for none): exit 9, the folder and\n"
        "                         the job stay resumable\n"
        "  --stall-speed BYTES    a download slower than BYTES per second ...\n"
        "  --stall-time SECONDS   ... for SECONDS in a row is stopped and retried (defaults 1024\n"
        "                         and 60; --stall-speed 0 turns the rule off)\n"
        "  --no-progress          plain log lines even on a terminal\n"
        "  --json                 print the summary as JSON\n"
        "\n"
        "the folder:\n"
        "  manifest.json          the server's manifest (all pages merged)\n"
        "  TYPE.N.ndjson          resources, numbered per type in manifest order\n"
        "  deleted/TYPE.N.ndjson  transaction Bundles of DELETE entries (with --since)\n"
        "  error/TYPE.N.ndjson    OperationOutcomes the server reported\n"
        "  quarantine/NAME        lines that failed the checks twice: line number, reason, text\n"
        "  export-log.jsonl       the run's log, one JSON event per line (kick-off, progress,\n"
        "                         downloads, retries, completion with counts, bytes and\n"
        "                         duration); named so that a *.ndjson glob meant for the data\n"
        "                         does not pick it up (an older folder's log.ndjson is renamed)\n"
        "  state.json             what is done (for resume); .partial/ files being downloaded\n"
        "\n"
        "A file whose lines fail the checks is downloaded once more; if it fails again, its good\n"
        "lines are kept, the bad ones go to quarantine/ and the export ends with exit code 10\n"
        "(partial data). Status polls are at least 1 s apart whatever Retry-After says; a\n"
        "download is retried (resuming with Range) up to max_retries times without getting\n"
        "further than before, then that file is given up and named, the others are still\n"
        "downloaded, and the export fails with that file's error (resumable).\n"
        "\n");
    cli_print_common_help(out);
    fprintf(out,
            "\n"
            "exit codes: 0 done, 2 usage, 3 configuration, 4 key, 5 authentication, 6 not found\n"
            "(e.g. files expired), 7 server error (429 at kick-off, failed export), 8 protocol\n"
            "(including a status URL on another origin, oversized response headers), 9 network\n"
            "(also a stalled file given up, and the --deadline passing; resumable), 10 partial\n"
            "data (quarantined lines, counts that differ from the manifest), 11 folder in use,\n"
            "12 interrupted (resumable), 13 local file error\n");
}

/* ---- signals -------------------------------------------------------------------------------- */

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    if (interrupted) {
        /* a second Ctrl-C: stop now (the folder is still resumable) */
        signal(SIGINT, SIG_DFL);
        raise(SIGINT);
        return;
    }
    interrupted = 1;
    fhirsync_cancel();
}

/* ---- progress ------------------------------------------------------------------------------- */

typedef struct display {
    bool tty;
    bool quiet;
    bool line_open;
    char progress[128]; /* the last X-Progress */
    size_t total_files;
} display;

static void human_bytes(uint64_t n, char *buf, size_t size)
{
    const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(buf, size, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

static void status_line(display *d, const fhirsync_export_event *ev)
{
    char bytes[32], rate[32];
    human_bytes(ev->bytes, bytes, sizeof bytes);
    human_bytes(ev->elapsed_s > 0 ? (uint64_t)((double)ev->bytes / ev->elapsed_s) : 0, rate,
                sizeof rate);
    if (ev->files_total == 0)
        fprintf(stderr, "\r\033[Kexport: waiting for the server%s%s (%.0f s)",
                d->progress[0] ? ": " : "", d->progress, ev->elapsed_s);
    else
        fprintf(stderr, "\r\033[Kexport: %zu/%zu files, %lld resources, %s, %s/s", ev->files_done,
                ev->files_total, (long long)ev->resources, bytes, rate);
    d->line_open = true;
}

static void plain(display *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void plain(display *d, const char *fmt, ...)
{
    if (d->line_open) {
        fputs("\r\033[K", stderr);
        d->line_open = false;
    }
    va_list ap;
    va_start(ap, fmt);
    fputs("fhirsync: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static int on_event(const fhirsync_export_event *ev, void *userdata)
{
    display *d = userdata;
    if (d->quiet && ev->kind != FHIRSYNC_EXPORT_EV_WARNING)
        return 0;
    const fhirsync_export_file *f = ev->file;
    switch (ev->kind) {
    case FHIRSYNC_EXPORT_EV_KICKOFF:
        plain(d, "export started; status URL %s", ev->status_url);
        break;
    case FHIRSYNC_EXPORT_EV_PROGRESS:
        snprintf(d->progress, sizeof d->progress, "%s", ev->message ? ev->message : "");
        if (d->tty)
            status_line(d, ev);
        else
            plain(d, "export in progress%s%s; next poll in %.1f s", ev->message ? ": " : "",
                  ev->message ? ev->message : "", (double)ev->delay_ms / 1000.0);
        break;
    case FHIRSYNC_EXPORT_EV_MANIFEST:
        plain(d, "manifest: %zu file(s), transaction time %s", ev->files_total,
              ev->transaction_time);
        break;
    case FHIRSYNC_EXPORT_EV_FILE_STARTED:
        if (!d->tty && ev->message)
            plain(d, "%s: %s", f->name, ev->message);
        break;
    case FHIRSYNC_EXPORT_EV_FILE_DONE:
        if (f->from_previous_run)
            plain(d, "%s: done by an earlier run (%lld resources)", f->name, (long long)f->count);
        else if (!d->tty)
            plain(d, "%s: %lld resources, %llu bytes", f->name, (long long)f->count,
                  (unsigned long long)f->bytes);
        else
            status_line(d, ev);
        break;
    case FHIRSYNC_EXPORT_EV_RETRY:
        plain(d, "retry%s%s: %s (in %.1f s)", f ? " " : "", f ? f->name : "",
              ev->message ? ev->message : "", (double)ev->delay_ms / 1000.0);
        break;
    case FHIRSYNC_EXPORT_EV_TOKEN_RENEWED:
        plain(d, "%s", ev->message ? ev->message : "access token renewed");
        break;
    case FHIRSYNC_EXPORT_EV_WARNING:
        plain(d, "warning: %s%s%s", f ? f->name : "", f ? ": " : "",
              ev->message ? ev->message : "");
        break;
    case FHIRSYNC_EXPORT_EV_BYTES:
        if (d->tty)
            status_line(d, ev);
        break;
    case FHIRSYNC_EXPORT_EV_DONE:
        if (d->line_open) {
            fputs("\r\033[K", stderr);
            d->line_open = false;
        }
        break;
    }
    fflush(stderr);
    return 0;
}

/* ---- the summary ---------------------------------------------------------------------------- */

typedef struct type_total {
    const char *type;
    int64_t count;
} type_total;

static void summary(const fhirsync_export *ex, fhirsync_code rc, bool json, bool job_deleted)
{
    fhirsync_export_stats s;
    fhirsync_export_stats_init(&s, FHIRSYNC_EXPORT_STATS_VERSION);
    fhirsync_export_get_stats(ex, &s);
    type_total types[256];
    size_t ntypes = 0;
    size_t nout = 0, ndel = 0, nerr = 0;
    for (size_t i = 0; i < fhirsync_export_file_count(ex); i++) {
        const fhirsync_export_file *f = fhirsync_export_file_at(ex, i);
        if (f->kind == FHIRSYNC_EXPORT_DELETED)
            ndel++;
        else if (f->kind == FHIRSYNC_EXPORT_ERROR)
            nerr++;
        else
            nout++;
        if (f->kind != FHIRSYNC_EXPORT_OUTPUT)
            continue;
        size_t t = 0;
        while (t < ntypes && strcmp(types[t].type, f->type) != 0)
            t++;
        if (t == ntypes && ntypes < sizeof types / sizeof *types)
            types[ntypes++] = (type_total){f->type, 0};
        if (t < ntypes)
            types[t].count += f->count;
    }
    char bytes[32];
    human_bytes(s.bytes, bytes, sizeof bytes);
    const char *tt = fhirsync_export_transaction_time(ex);
    if (json) {
        printf("{\"dir\":\"%s\",\"result\":\"%s\",\"transaction_time\":\"%s\",\"files\":%zu,"
               "\"resources\":%lld,\"deleted\":%lld,\"errors\":%lld,\"quarantined\":%lld,"
               "\"bytes\":%llu,\"duration_s\":%.3f,\"retries\":%u,\"token_renewals\":%u,"
               "\"job_deleted\":%s,\"types\":{",
               fhirsync_export_dir(ex), rc == FHIRSYNC_OK ? "complete" : "partial", tt ? tt : "",
               s.files, (long long)s.resources, (long long)s.deleted, (long long)s.errors,
               (long long)s.quarantined, (unsigned long long)s.bytes, s.duration_s, s.retries,
               s.token_renewals, job_deleted ? "true" : "false");
        for (size_t t = 0; t < ntypes; t++)
            printf("%s\"%s\":%lld", t ? "," : "", types[t].type, (long long)types[t].count);
        printf("}}\n");
        return;
    }
    printf("export %s: %s\n",
           rc == FHIRSYNC_OK ? "complete" : "complete, with problems (see below)",
           fhirsync_export_dir(ex));
    printf("  transaction time: %s (the _since of the next incremental export)\n", tt ? tt : "?");
    printf("  files:            %zu (%zu output, %zu deleted, %zu error)\n", s.files, nout, ndel,
           nerr);
    printf("  resources:        %lld\n", (long long)s.resources);
    for (size_t t = 0; t < ntypes; t++)
        printf("    %-22s %lld\n", types[t].type, (long long)types[t].count);
    printf("  deleted:          %lld\n", (long long)s.deleted);
    printf("  errors:           %lld OperationOutcome(s)%s\n", (long long)s.errors,
           s.errors ? " (see error/)" : "");
    if (s.quarantined)
        printf("  quarantined:      %lld line(s) (see quarantine/)\n", (long long)s.quarantined);
    printf("  bytes:            %s in %.1f s", bytes, s.duration_s);
    if (s.duration_s > 0) {
        char rate[32];
        human_bytes((uint64_t)((double)s.bytes / s.duration_s), rate, sizeof rate);
        printf(" (%s/s)", rate);
    }
    printf("\n");
    if (s.retries || s.token_renewals)
        printf("  retries:          %u, token renewals: %u\n", s.retries, s.token_renewals);
    if (job_deleted)
        printf("  job:              deleted on the server\n");
    else
        printf("  job:              kept on the server: %s\n", fhirsync_export_status_url(ex));
}

/* ---- the command ---------------------------------------------------------------------------- */

/* "90", "90s", "30m", "6h", "2d" in seconds; -1 when malformed. */
static int64_t parse_duration(const char *text)
{
    char *end = NULL;
    long long v = strtoll(text, &end, 10);
    if (!*text || *text == '-' || end == text || v < 0)
        return -1;
    long long unit = 1;
    if (*end == 's' || *end == 'm' || *end == 'h' || *end == 'd') {
        unit = *end == 's' ? 1 : *end == 'm' ? 60 : *end == 'h' ? 3600 : 86400;
        end++;
    }
    if (*end || v > (1LL << 40) / unit)
        return -1;
    return (int64_t)(v * unit);
}

int cmd_export(int argc, char **argv)
{
    /* clang-format off */
    enum {
        OPT_LEVEL = 1, OPT_GROUP, OPT_TYPE, OPT_SINCE, OPT_ELEMENTS, OPT_TYPE_FILTER, OPT_PATIENT,
        OPT_IAD, OPT_FORMAT, OPT_PARAM, OPT_POST, OPT_LENIENT, OPT_OUT, OPT_RESUME, OPT_PARALLEL,
        OPT_KEEP, OPT_MAX_LINE, OPT_NO_PROGRESS, OPT_JSON, OPT_DEADLINE, OPT_STALL_SPEED,
        OPT_STALL_TIME
    };
    /* clang-format on */
    static const struct option own[] = {
        {"level", required_argument, NULL, OPT_LEVEL},
        {"group", required_argument, NULL, OPT_GROUP},
        {"type", required_argument, NULL, OPT_TYPE},
        {"since", required_argument, NULL, OPT_SINCE},
        {"elements", required_argument, NULL, OPT_ELEMENTS},
        {"type-filter", required_argument, NULL, OPT_TYPE_FILTER},
        {"patient", required_argument, NULL, OPT_PATIENT},
        {"include-associated-data", required_argument, NULL, OPT_IAD},
        {"output-format", required_argument, NULL, OPT_FORMAT},
        {"param", required_argument, NULL, OPT_PARAM},
        {"post", no_argument, NULL, OPT_POST},
        {"lenient", no_argument, NULL, OPT_LENIENT},
        {"out", required_argument, NULL, OPT_OUT},
        {"resume", required_argument, NULL, OPT_RESUME},
        {"parallel", required_argument, NULL, OPT_PARALLEL},
        {"keep-job", no_argument, NULL, OPT_KEEP},
        {"max-line", required_argument, NULL, OPT_MAX_LINE},
        {"no-progress", no_argument, NULL, OPT_NO_PROGRESS},
        {"json", no_argument, NULL, OPT_JSON},
        {"deadline", required_argument, NULL, OPT_DEADLINE},
        {"stall-speed", required_argument, NULL, OPT_STALL_SPEED},
        {"stall-time", required_argument, NULL, OPT_STALL_TIME},
        {NULL, 0, NULL, 0}};
    char short_opts[32];
    const struct option *opts = cli_options(own, "", short_opts, sizeof short_opts);
    cli_profile profile = {0};
    fhirsync_export_options eo;
    fhirsync_export_options_init(&eo, FHIRSYNC_EXPORT_OPTIONS_VERSION);
    const char *filters[MAX_REPEATED], *patients[MAX_REPEATED], *params[MAX_REPEATED];
    const char *resume = NULL, *level = NULL;
    bool no_progress = false, json = false, keep = false;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, short_opts, opts, NULL)) != -1) {
        int handled = cli_profile_option(&profile, opt, optarg, "export");
        if (handled < 0)
            return -handled;
        if (handled)
            continue;
        switch (opt) {
        case OPT_LEVEL: level = optarg; break;
        case OPT_GROUP: eo.group_id = optarg; break;
        case OPT_TYPE: eo.types = optarg; break;
        case OPT_SINCE: eo.since = optarg; break;
        case OPT_ELEMENTS: eo.elements = optarg; break;
        case OPT_IAD: eo.include_associated_data = optarg; break;
        case OPT_FORMAT: eo.output_format = optarg; break;
        case OPT_TYPE_FILTER:
        case OPT_PATIENT:
        case OPT_PARAM: {
            const char **list = opt == OPT_TYPE_FILTER ? filters
                                : opt == OPT_PATIENT   ? patients
                                                       : params;
            size_t *n = opt == OPT_TYPE_FILTER ? &eo.type_filter_count
                        : opt == OPT_PATIENT   ? &eo.patient_count
                                               : &eo.param_count;
            if (*n >= MAX_REPEATED)
                return cli_usage_error("export", "too many repeated options (at most %d)",
                                       MAX_REPEATED);
            list[(*n)++] = optarg;
            break;
        }
        case OPT_POST: eo.post = true; break;
        case OPT_LENIENT: eo.lenient = true; break;
        case OPT_OUT: eo.out_dir = optarg; break;
        case OPT_RESUME: resume = optarg; break;
        case OPT_PARALLEL: {
            char *end = NULL;
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || v < 1 || v > 64)
                return cli_usage_error("export",
                                       "--parallel expects a number from 1 to 64, got "
                                       "'%s'",
                                       optarg);
            eo.parallel = (int)v;
            break;
        }
        case OPT_KEEP: keep = true; break;
        case OPT_MAX_LINE: {
            char *end = NULL;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (!*optarg || *optarg == '-' || *end || v < 1024 || v > (1ULL << 40))
                return cli_usage_error("export",
                                       "--max-line expects a byte count of at least "
                                       "1024, got '%s'",
                                       optarg);
            eo.max_line = (size_t)v;
            break;
        }
        case OPT_DEADLINE: {
            int64_t v = parse_duration(optarg);
            if (v < 0)
                return cli_usage_error("export",
                                       "--deadline expects a duration such as 90s, "
                                       "30m, 6h or 0 (none), got '%s'",
                                       optarg);
            eo.limits.deadline_s = v == 0 ? -1 : v;
            break;
        }
        case OPT_STALL_SPEED:
        case OPT_STALL_TIME: {
            char *end = NULL;
            long long v = strtoll(optarg, &end, 10);
            bool speed = opt == OPT_STALL_SPEED;
            if (!*optarg || *end || v < (speed ? 0 : 1) || v > (speed ? (1LL << 40) : 86400))
                return cli_usage_error(
                    "export", "--%s expects %s, got '%s'", speed ? "stall-speed" : "stall-time",
                    speed ? "bytes per second (0: off)" : "seconds (1 to 86400)", optarg);
            if (speed)
                eo.limits.stall_bytes_per_s = v == 0 ? -1 : v;
            else
                eo.limits.stall_s = v;
            break;
        }
        case OPT_NO_PROGRESS: no_progress = true; break;
        case OPT_JSON: json = true; break;
        case 'h': usage(stdout); return 0;
        default: return cli_bad_option("export", argv);
        }
    }
    if (optind < argc)
        return cli_usage_error("export", "unexpected argument '%s'", argv[optind]);
    eo.type_filters = filters;
    eo.patients = patients;
    eo.params = params;
    if (level) {
        if (!strcmp(level, "system"))
            eo.level = FHIRSYNC_EXPORT_SYSTEM;
        else if (!strcmp(level, "patient"))
            eo.level = FHIRSYNC_EXPORT_PATIENT;
        else if (!strcmp(level, "group"))
            eo.level = FHIRSYNC_EXPORT_GROUP;
        else
            return cli_usage_error("export", "--level is system, patient or group, not '%s'",
                                   level);
    } else if (eo.group_id) {
        eo.level = FHIRSYNC_EXPORT_GROUP;
    }
    if (eo.group_id && eo.level != FHIRSYNC_EXPORT_GROUP)
        return cli_usage_error("export", "--group goes with --level group");
    if (!resume && !eo.out_dir)
        return cli_usage_error("export", "say where the export goes: --out DIR (or --resume "
                                         "DIR to continue one)");
    if (resume && eo.out_dir && strcmp(resume, eo.out_dir) != 0)
        return cli_usage_error("export", "--out and --resume name different folders");
    if (keep)
        eo.delete_job = 0;
    cli_setup_logging(&profile);

    fhirsync_error err = {0};
    fhirsync_endpoint *ep = NULL;
    fhirsync_export *ex = NULL;
    int rc = 0;
    if (cli_profile_resolve(&profile, &ep, &err) != FHIRSYNC_OK) {
        rc = cli_fail(&err);
        goto out;
    }
    if (!level && !eo.group_id) {
        /* the level sync would use first: Group with group_id, else Patient */
        fhirsync_export_level chain[3];
        fhirsync_export_level_chain(ep, chain);
        eo.level = chain[0];
    }
    fhirsync_code code =
        resume ? fhirsync_export_open(ep, resume, eo.parallel, eo.delete_job, &ex, &err)
               : fhirsync_export_new(ep, &eo, &ex, &err);
    if (code != FHIRSYNC_OK) {
        rc = cli_fail(&err);
        goto out;
    }
    if (resume && fhirsync_export_set_limits(ex, &eo.limits) != FHIRSYNC_OK) {
        rc = cli_fail_handle(fhirsync_export_errcode(ex), fhirsync_export_errmsg(ex));
        goto out;
    }
    display d = {.tty = !no_progress && isatty(STDERR_FILENO), .quiet = profile.quiet};
    fhirsync_export_set_callback(ex, on_event, &d);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    code = fhirsync_export_run(ex);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (d.line_open)
        fputs("\r\033[K", stderr);
    if (code == FHIRSYNC_OK || code == FHIRSYNC_E_PARTIAL) {
        summary(ex, code, json, fhirsync_export_job_deleted(ex));
        rc = code == FHIRSYNC_E_PARTIAL
                 ? cli_fail_handle(fhirsync_export_errcode(ex), fhirsync_export_errmsg(ex))
                 : 0;
    } else {
        rc = cli_fail_handle(fhirsync_export_errcode(ex), fhirsync_export_errmsg(ex));
        if (code == FHIRSYNC_E_CANCELLED)
            fprintf(stderr, "fhirsync: resume with: fhirsync export --resume %s\n",
                    fhirsync_export_dir(ex));
    }
out:
    fhirsync_export_free(ex);
    fhirsync_endpoint_free(ep);
    return rc;
}
