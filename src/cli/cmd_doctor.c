/* cli/cmd_doctor.c: `fhirsync doctor`: run the library's step-by-step authentication checks and
 * print each step with its verdict, what was found and what to do. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "fhirsync/store.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: fhirsync doctor [options]\n"
            "\n"
            "Walk the authentication chain step by step and explain what fails and why:\n"
            "base URL and vendor, discovery, clock skew, key, the JWKS you registered\n"
            "(set registered_jwks), the decoded assertion, the token request with the\n"
            "server's answer and its likely causes, granted scopes, one FHIR request.\n"
            "When the endpoint's store exists: how its deletions were found (a server whose\n"
            "exports never list deletions is named, with the setting that helps).\n"
            "\n"
            "  --probe-export       also kick off a small export (_type=Patient, at the level\n"
            "                       sync uses first: Group with group_id, else Patient) and\n"
            "                       cancel it at once (DELETE), so that a server refusing the\n"
            "                       kick-off (403: some want a write scope) shows before the\n"
            "                       first sync\n"
            "\n"
            "Exit codes: 0 every check passed (warnings allowed), else the code of the first\n"
            "failure (3 configuration, 4 key, 5 authentication, including a 403 at the export\n"
            "probe, 7 server, 8 protocol, 9 network).\n"
            "\n");
    cli_print_common_help(out);
}

typedef struct printer {
    bool color;
    int failures;
    int warnings;
} printer;

static void print_indented(const char *text, const char *indent)
{
    const char *p = text;
    while (*p) {
        size_t n = strcspn(p, "\n");
        if (n)
            printf("%s%.*s\n", indent, (int)n, p);
        p += n;
        if (*p == '\n')
            p++;
    }
}

static void on_check(const fhirsync_check *check, void *userdata)
{
    printer *pr = userdata;
    const char *color = "";
    switch (check->status) {
    case FHIRSYNC_CHECK_OK: color = "\033[32m"; break;
    case FHIRSYNC_CHECK_WARN:
        color = "\033[33m";
        pr->warnings++;
        break;
    case FHIRSYNC_CHECK_FAIL:
        color = "\033[31m";
        pr->failures++;
        break;
    default: color = "\033[36m"; break;
    }
    printf("[%s%-4s%s] %s\n", pr->color ? color : "", fhirsync_check_status_name(check->status),
           pr->color ? "\033[0m" : "", check->step);
    print_indented(check->detail, "       ");
    if (check->hint)
        print_indented(check->hint, "       ");
    fflush(stdout);
}

/* What the endpoint's store says about the server's deleted lists: a server whose exports never
 * list a deletion while full exports keep finding resources gone does not report deletions. Only
 * when the store exists (doctor creates nothing). */
static void check_deletions(const fhirsync_endpoint *ep, printer *pr)
{
    const char *location = fhirsync_endpoint_get(ep, "store");
    if (!location)
        location = "fhirsync.db";
    bool pg = strncmp(location, "postgres", 8) == 0;
    if (!pg && access(location, F_OK) != 0)
        return;
    fhirsync_store *store = NULL;
    fhirsync_error err = {0};
    fhirsync_deletion_summary sum;
    char detail[600], hint[600] = "";
    fhirsync_check check = {.step = "deletions", .status = FHIRSYNC_CHECK_INFO, .detail = detail};
    if (fhirsync_store_open(location, FHIRSYNC_STORE_READONLY, &store, &err) != FHIRSYNC_OK ||
        fhirsync_store_deletion_summary(store, fhirsync_endpoint_name(ep), &sum, &err) !=
            FHIRSYNC_OK) {
        snprintf(detail, sizeof detail, "the store %.200s could not be read: %.300s", location,
                 err.message);
        check.status = FHIRSYNC_CHECK_WARN;
    } else if (sum.reconciled > 0 && sum.listed == 0) {
        snprintf(detail, sizeof detail,
                 "the server's exports never listed a deletion, but full exports found %lld "
                 "resource(s) gone: it likely leaves `deleted` empty",
                 (long long)sum.reconciled);
        snprintf(hint, sizeof hint,
                 "- deletions reach the store only through the full export every "
                 "`reconcile_every` runs (now %ld): lower it to see them sooner",
                 fhirsync_endpoint_get(ep, "reconcile_every")
                     ? strtol(fhirsync_endpoint_get(ep, "reconcile_every"), NULL, 10)
                     : 24L);
        check.hint = hint;
        check.status = FHIRSYNC_CHECK_WARN;
    } else {
        snprintf(detail, sizeof detail,
                 "%lld deletion(s) listed by the server, %lld found by full exports or crawls",
                 (long long)sum.listed, (long long)sum.reconciled);
    }
    on_check(&check, pr);
    fhirsync_store_close(store);
}

int cmd_doctor(int argc, char **argv)
{
    enum { OPT_PROBE_EXPORT = 1 };
    static const struct option own[] = {
        {"probe-export", no_argument, NULL, OPT_PROBE_EXPORT},
        {NULL, 0, NULL, 0},
    };
    char short_opts[32];
    const struct option *opts = cli_options(own, "", short_opts, sizeof short_opts);
    unsigned flags = 0;
    cli_profile profile = {0};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, short_opts, opts, NULL)) != -1) {
        int handled = cli_profile_option(&profile, opt, optarg, "doctor");
        if (handled < 0)
            return -handled;
        if (handled)
            continue;
        if (opt == OPT_PROBE_EXPORT) {
            flags |= FHIRSYNC_DOCTOR_PROBE_EXPORT;
            continue;
        }
        if (opt == 'h') {
            usage(stdout);
            return 0;
        }
        return cli_bad_option("doctor", argv);
    }
    if (optind < argc)
        return cli_usage_error("doctor", "unexpected argument '%s'", argv[optind]);
    cli_setup_logging(&profile);

    fhirsync_error err = {0};
    fhirsync_endpoint *ep = NULL;
    if (cli_profile_resolve(&profile, &ep, &err) != FHIRSYNC_OK)
        return cli_fail(&err);
    printer pr = {.color = isatty(STDOUT_FILENO) && !getenv("NO_COLOR")};
    printf("fhirsync doctor: endpoint '%s'\n", fhirsync_endpoint_name(ep));
    fhirsync_code rc = fhirsync_doctor_run(ep, flags, on_check, &pr, &err);
    check_deletions(ep, &pr);
    fhirsync_endpoint_free(ep);
    if (rc == FHIRSYNC_OK) {
        printf("\nall checks passed%s\n", pr.warnings ? " (see the warnings above)" : "");
        return 0;
    }
    printf("\n%d step(s) failed; the first: %s\n", pr.failures, err.message);
    return cli_exit_code(rc);
}
