/* cli/main.c: the fhirsync command: dispatch to sub-commands, global --help and --version. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const cli_command commands[] = {
    {"keygen", "generate a signing key pair and its public JWKS", cmd_keygen},
    {"jwks", "print the public JWKS of existing keys (for registration or rotation)", cmd_jwks},
    {"login", "authorize once in a browser (auth = login: SMART App Launch + refresh token)",
     cmd_login},
    {"token", "get an access token and show granted scopes and expiry", cmd_token},
    {"config", "check every endpoint of the configuration and say which setting is wrong",
     cmd_config},
    {"doctor", "check every step of authentication and explain what fails", cmd_doctor},
    {"export", "run a Bulk Data $export into a folder (resumable, every line checked)", cmd_export},
    {"get", "read or search the FHIR server (--all: every page, as NDJSON)", cmd_get},
    {"sync", "keep a local copy of each endpoint current (bulk or crawl; --every: a service)",
     cmd_sync},
    {"status", "where each endpoint stands: state, last success, lag, failures, next run",
     cmd_status},
    {"query", "look into the local store: counts, a patient's record, runs, quarantine, SQL",
     cmd_query},
    {"view", "evaluate a SQL on FHIR ViewDefinition over NDJSON files: CSV or NDJSON rows",
     cmd_view},
};

static void print_help(FILE *out)
{
    fprintf(out, "usage: fhirsync <command> [options]\n"
                 "\n"
                 "Get patient data out of EHRs with SMART on FHIR Backend Services (or, where\n"
                 "the EHR will not grant it, a person's one-time login: fhirsync login).\n"
                 "\n"
                 "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(out, "  %-9s %s\n", commands[i].name, commands[i].summary);
    fprintf(out,
            "\n"
            "Run 'fhirsync <command> --help' for a command's options.\n"
            "\n"
            "exit codes:\n"
            "  0 ok            1 internal error   2 usage          3 configuration\n"
            "  4 key           5 authentication   6 not found      7 server error\n"
            "  8 protocol      9 network         10 partial data  11 locked\n"
            " 12 interrupted  13 local file/store\n"
            "\n"
            "Core dumps are off (they would hold tokens and keys); FHIRSYNC_ALLOW_CORE_DUMPS=1\n"
            "keeps them for debugging.\n"
            "\n"
            "Settings come from fhirsync.ini, or every *.ini of a --config directory\n"
            "([defaults], then [endpoint NAME] sections), then FHIRSYNC_* environment\n"
            "variables, then flags. See fhirsync(1) and docs/.\n");
}

int main(int argc, char **argv)
{
    /* before any key or token exists: no core file may hold them (FHIRSYNC_ALLOW_CORE_DUMPS=1
     * keeps core dumps for debugging) */
    fhirsync_process_harden();
    if (argc < 2) {
        print_help(stderr);
        return EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
        print_help(stdout);
        return 0;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
        printf("fhirsync %s (libfhirsync %s)\nsd_notify: %s\n", FHIRSYNC_VERSION,
               fhirsync_version(),
               cli_notify_available() ? "yes (libsystemd)" : "no (built without libsystemd)");
        return 0;
    }
    opterr = 0; /* commands report bad options themselves, in one line (cli_bad_option) */
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) {
        if (strcmp(name, commands[i].name) == 0) {
            if (fhirsync_global_init() != FHIRSYNC_OK) {
                fprintf(stderr, "fhirsync: cannot initialise the library\n");
                return EXIT_INTERNAL;
            }
            int rc = commands[i].run(argc - 1, argv + 1);
            fhirsync_global_cleanup();
            return rc;
        }
    }
    fprintf(stderr, "fhirsync: unknown command '%s' (see 'fhirsync --help')\n", name);
    return EXIT_USAGE;
}
