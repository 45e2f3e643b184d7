/* cli/cmd_query.c: `fhirsync query`: look into the local store without writing SQL (resources per
 * type, one patient's record, the sync runs, the quarantine) or with it (`query sql`, read-only:
 * the store is opened read-only and PostgreSQL runs the statement in a READ ONLY transaction).
 *
 * Output: an aligned table on a terminal, tab-separated values otherwise (`--format` chooses:
 * table, tsv or ndjson). A patient's record as NDJSON is the resources exactly as stored. The
 * store is --store, else the profile's `store` setting (fhirsync.ini, FHIRSYNC_STORE), else
 * ./fhirsync.db. Uses only the public API. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "fhirsync/store.h"
#include "printer.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: fhirsync query <what> [options]\n"
            "\n"
            "Look into the local store (read-only).\n"
            "\n"
            "what:\n"
            "  counts               resources per type\n"
            "  patient ID           every resource of one patient (NDJSON: exactly as stored)\n"
            "  runs                 the latest sync runs (--endpoint NAME: of one endpoint)\n"
            "  quarantine           the latest lines refused by a sync, with the reason\n"
            "  sql 'SELECT ...'     one read-only SQL statement (tables and views: docs/store.md)\n"
            "\n"
            "options:\n"
            "  --store LOCATION     SQLite file or postgresql:// URL (default: the profile's\n"
            "                       store setting, else fhirsync.db)\n"
            "  --format FORMAT      table (default on a terminal), tsv (default otherwise), "
            "ndjson\n"
            "  --limit N            runs, quarantine: how many (default 20)\n"
            "  --run ID             quarantine: of one run\n"
            "  --all                counts: also the types with no resources\n"
            "\n");
    cli_print_common_help(out);
}

/* ---- the sub-commands ------------------------------------------------------------------------ */

typedef struct query_options {
    cli_format format;
    long limit;
    long run;
    bool all;
    const char *endpoint;
} query_options;

static int show_counts(fhirsync_store *store, const query_options *o, fhirsync_error *err)
{
    fhirsync_type_count *counts = NULL;
    size_t n = 0;
    if (fhirsync_store_counts(store, &counts, &n, err) != FHIRSYNC_OK)
        return cli_fail(err);
    static const char *const names[] = {"type", "resources"};
    cli_printer p;
    int rc = 0;
    if (!cli_printer_start(&p, o->format, 2, names)) {
        p.failed = true;
    } else {
        int64_t total = 0;
        for (size_t i = 0; i < n && !p.failed; i++) {
            if (counts[i].count == 0 && !o->all)
                continue;
            char number[32];
            snprintf(number, sizeof number, "%lld", (long long)counts[i].count);
            const char *values[2] = {counts[i].type, number};
            size_t lengths[2] = {strlen(counts[i].type), strlen(number)};
            const bool raw[2] = {false, true};
            cli_printer_row(&p, values, lengths, raw);
            total += counts[i].count;
        }
        if (o->format == CLI_FORMAT_TABLE && !p.failed) {
            char number[32];
            snprintf(number, sizeof number, "%lld", (long long)total);
            const char *values[2] = {"total", number};
            size_t lengths[2] = {5, strlen(number)};
            cli_printer_row(&p, values, lengths, NULL);
        }
    }
    if (p.failed)
        rc = EXIT_IO;
    cli_printer_end(&p);
    fhirsync_free(counts);
    return rc;
}

static int print_resource(const fhirsync_resource_row *row, void *userdata)
{
    cli_printer *p = userdata;
    if (p->format == CLI_FORMAT_NDJSON) {
        /* the resource itself, byte for byte */
        fwrite(row->json, 1, row->json_len, stdout);
        putchar('\n');
        if (ferror(stdout)) {
            p->failed = true;
            return 1;
        }
        return 0;
    }
    const char *values[5] = {row->type, row->id, row->version_id, row->last_updated, NULL};
    char bytes[32];
    snprintf(bytes, sizeof bytes, "%zu", row->json_len);
    values[4] = bytes;
    size_t lengths[5];
    for (int i = 0; i < 5; i++)
        lengths[i] = values[i] ? strlen(values[i]) : 0;
    return cli_printer_row(p, values, lengths, NULL);
}

static int show_patient(fhirsync_store *store, const char *patient_id, const query_options *o,
                        fhirsync_error *err)
{
    static const char *const names[] = {"type", "id", "version", "last_updated", "bytes"};
    cli_printer p;
    int rc = 0;
    if (!cli_printer_start(&p, o->format, 5, names)) {
        cli_printer_end(&p);
        return EXIT_INTERNAL;
    }
    if (fhirsync_store_patient_record(store, patient_id, print_resource, &p, err) != FHIRSYNC_OK)
        rc = cli_fail(err);
    else if (p.failed)
        rc = EXIT_IO;
    cli_printer_end(&p);
    return rc;
}

static int print_run(const fhirsync_run_info *run, void *userdata)
{
    cli_printer *p = userdata;
    char id[32], resources[32], deletions[32], quarantined[32];
    snprintf(id, sizeof id, "%lld", (long long)run->id);
    snprintf(resources, sizeof resources, "%lld", (long long)run->resources);
    snprintf(deletions, sizeof deletions, "%lld", (long long)run->deletions);
    snprintf(quarantined, sizeof quarantined, "%lld", (long long)run->quarantined);
    const char *values[13] = {id,
                              run->endpoint,
                              run->mode,
                              fhirsync_run_status_name(run->status),
                              run->started_at,
                              run->finished_at,
                              run->since,
                              run->transaction_time,
                              resources,
                              deletions,
                              quarantined,
                              run->counts_json,
                              run->error};
    size_t lengths[13];
    for (int i = 0; i < 13; i++)
        lengths[i] = values[i] ? strlen(values[i]) : 0;
    static const bool raw[13] = {true,  false, false, false, false, false, false,
                                 false, true,  true,  true,  true,  false};
    return cli_printer_row(p, values, lengths, raw);
}

static int show_runs(fhirsync_store *store, const query_options *o, fhirsync_error *err)
{
    static const char *const names[] = {
        "id",    "endpoint",         "mode",      "status",    "started_at",  "finished_at",
        "since", "transaction_time", "resources", "deletions", "quarantined", "counts",
        "error"};
    cli_printer p;
    int rc = 0;
    /* the table leaves out the per-type counts (long): tsv and ndjson have them */
    if (!cli_printer_start(&p, o->format, o->format == CLI_FORMAT_TABLE ? 11 : 13, names)) {
        cli_printer_end(&p);
        return EXIT_INTERNAL;
    }
    if (fhirsync_store_runs(store, o->endpoint, (size_t)o->limit, print_run, &p, err) !=
        FHIRSYNC_OK)
        rc = cli_fail(err);
    else if (p.failed)
        rc = EXIT_IO;
    cli_printer_end(&p);
    return rc;
}

static int print_quarantined(const fhirsync_quarantine_entry *e, void *userdata)
{
    cli_printer *p = userdata;
    char id[32], run[32], line_number[32], bytes[32];
    snprintf(id, sizeof id, "%lld", (long long)e->id);
    snprintf(run, sizeof run, "%lld", (long long)e->run_id);
    snprintf(line_number, sizeof line_number, "%lld", (long long)e->line_number);
    snprintf(bytes, sizeof bytes, "%lld", (long long)e->line_bytes);
    const char *values[9] = {id,        run,   e->endpoint,   e->source, line_number,
                             e->reason, bytes, e->created_at, e->line};
    size_t lengths[9];
    for (int i = 0; i < 9; i++)
        lengths[i] = values[i] ? strlen(values[i]) : 0;
    lengths[8] = e->line ? e->line_len : 0; /* bytes, possibly with NULs */
    static const bool raw[9] = {true, true, false, false, true, false, true, false, false};
    return cli_printer_row(p, values, lengths, raw);
}

static int show_quarantine(fhirsync_store *store, const query_options *o, fhirsync_error *err)
{
    static const char *const names[] = {"id",     "run",   "endpoint",   "source", "line_number",
                                        "reason", "bytes", "created_at", "line"};
    cli_printer p;
    int rc = 0;
    if (!cli_printer_start(&p, o->format, 9, names)) {
        cli_printer_end(&p);
        return EXIT_INTERNAL;
    }
    if (fhirsync_store_quarantine_list(store, o->run, (size_t)o->limit, print_quarantined, &p,
                                       err) != FHIRSYNC_OK)
        rc = cli_fail(err);
    else if (p.failed)
        rc = EXIT_IO;
    cli_printer_end(&p);
    return rc;
}

typedef struct sql_ctx {
    cli_printer p;
    cli_format format;
    bool started;
} sql_ctx;

static int print_sql_row(size_t ncols, const char *const *names, const char *const *values,
                         const size_t *lengths, void *userdata)
{
    sql_ctx *c = userdata;
    if (!c->started) {
        c->started = true;
        if (!cli_printer_start(&c->p, c->format, ncols, names)) {
            c->p.failed = true;
            return 1;
        }
    }
    return cli_printer_row(&c->p, values, lengths, NULL);
}

static int run_sql(fhirsync_store *store, const char *sql, const query_options *o,
                   fhirsync_error *err)
{
    sql_ctx c;
    memset(&c, 0, sizeof c);
    c.format = o->format;
    int rc = 0;
    if (fhirsync_store_query(store, sql, print_sql_row, &c, err) != FHIRSYNC_OK)
        rc = cli_fail(err);
    else if (c.p.failed)
        rc = EXIT_IO;
    if (c.started)
        cli_printer_end(&c.p);
    else if (rc == 0 && o->format == CLI_FORMAT_TABLE)
        printf("(no rows)\n");
    return rc;
}

/* ---- the command ----------------------------------------------------------------------------- */

int cmd_query(int argc, char **argv)
{
    enum { OPT_FORMAT = 600, OPT_LIMIT, OPT_RUN, OPT_ALL }; /* 1 is an argument */
    static const struct option own[] = {{"format", required_argument, NULL, OPT_FORMAT},
                                        {"limit", required_argument, NULL, OPT_LIMIT},
                                        {"run", required_argument, NULL, OPT_RUN},
                                        {"all", no_argument, NULL, OPT_ALL},
                                        {NULL, 0, NULL, 0}};
    char short_opts[32];
    const struct option *opts = cli_options(own, "", short_opts + 1, sizeof short_opts - 1);
    /* a leading '-': arguments come back in order as "options" of code 1, so that options may
     * come before or after them whether or not the common optstring asks for permutation */
    if (short_opts[1] == '+')
        memmove(short_opts + 1, short_opts + 2, strlen(short_opts + 2) + 1);
    short_opts[0] = '-';
    cli_profile profile = {0};
    query_options o = {isatty(STDOUT_FILENO) ? CLI_FORMAT_TABLE : CLI_FORMAT_TSV, 20, 0, false,
                       NULL};
    const char *positional[3] = {NULL, NULL, NULL};
    size_t npositional = 0;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, short_opts, opts, NULL)) != -1) {
        if (opt == 1) {
            if (npositional == 3)
                return cli_usage_error("query", "unexpected argument '%s'", optarg);
            positional[npositional++] = optarg;
            continue;
        }
        int handled = cli_profile_option(&profile, opt, optarg, "query");
        if (handled < 0)
            return -handled;
        if (handled)
            continue;
        char *end;
        switch (opt) {
        case OPT_FORMAT:
            if (strcmp(optarg, "table") == 0)
                o.format = CLI_FORMAT_TABLE;
            else if (strcmp(optarg, "tsv") == 0)
                o.format = CLI_FORMAT_TSV;
            else if (strcmp(optarg, "ndjson") == 0 || strcmp(optarg, "json") == 0)
                o.format = CLI_FORMAT_NDJSON;
            else
                return cli_usage_error("query", "--format is table, tsv or ndjson, not '%s'",
                                       optarg);
            break;
        case OPT_LIMIT:
            o.limit = strtol(optarg, &end, 10);
            if (*end || o.limit <= 0)
                return cli_usage_error("query", "--limit needs a positive number");
            break;
        case OPT_RUN:
            o.run = strtol(optarg, &end, 10);
            if (*end || o.run <= 0)
                return cli_usage_error("query", "--run needs a run id (see 'fhirsync query "
                                                "runs')");
            break;
        case OPT_ALL: o.all = true; break;
        case 'h': usage(stdout); return 0;
        default: return cli_usage_error("query", "unknown option");
        }
    }
    while (optind < argc && npositional < 3) /* after "--" */
        positional[npositional++] = argv[optind++];
    if (optind < argc)
        return cli_usage_error("query", "unexpected argument '%s'", argv[optind]);
    const char *what = positional[0];
    if (!what)
        return cli_usage_error("query", "say what to show: counts, patient ID, runs, quarantine "
                                        "or sql 'SELECT ...'");
    size_t want = strcmp(what, "patient") == 0 || strcmp(what, "sql") == 0 ? 2 : 1;
    if (strcmp(what, "counts") != 0 && strcmp(what, "patient") != 0 && strcmp(what, "runs") != 0 &&
        strcmp(what, "quarantine") != 0 && strcmp(what, "sql") != 0)
        return cli_usage_error("query", "unknown query '%s'", what);
    if (npositional < want)
        return cli_usage_error("query", "%s needs %s", what,
                               strcmp(what, "sql") == 0 ? "a statement" : "a patient id");
    if (npositional > want)
        return cli_usage_error("query", "unexpected argument '%s'", positional[want]);
    cli_setup_logging(&profile);
    o.endpoint = profile.endpoint_name;

    fhirsync_error err = {0};
    char *owned = NULL;
    const char *location = cli_store_location(&profile, &owned, &err);
    if (!location)
        return cli_fail(&err);
    fhirsync_store *store = NULL;
    int rc;
    if (fhirsync_store_open(location, FHIRSYNC_STORE_READONLY, &store, &err) != FHIRSYNC_OK) {
        rc = cli_fail(&err);
        goto out;
    }
    if (strcmp(what, "counts") == 0)
        rc = show_counts(store, &o, &err);
    else if (strcmp(what, "patient") == 0)
        rc = show_patient(store, positional[1], &o, &err);
    else if (strcmp(what, "runs") == 0)
        rc = show_runs(store, &o, &err);
    else if (strcmp(what, "quarantine") == 0)
        rc = show_quarantine(store, &o, &err);
    else
        rc = run_sql(store, positional[1], &o, &err);
out:
    fhirsync_store_close(store);
    free(owned);
    return rc;
}
