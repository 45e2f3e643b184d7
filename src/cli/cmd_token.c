/* cli/cmd_token.c: `fhirsync token`: get an access token for an endpoint profile and show what
 * was granted. The token itself is printed only with --print-token (for piping into another
 * tool); it never appears in logs. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: fhirsync token [options]\n"
                 "\n"
                 "Get an access token (SMART Backend Services: client_credentials with a signed\n"
                 "assertion, or a client secret) and print the granted scopes and the expiry.\n"
                 "\n"
                 "options:\n"
                 "  --print-token        also print the access token itself (last line of stdout)\n"
                 "  --json               print the result as JSON\n"
                 "\n");
    cli_print_common_help(out);
}

int cmd_token(int argc, char **argv)
{
    enum { OPT_PRINT = 1, OPT_JSON };
    static const struct option own[] = {{"print-token", no_argument, NULL, OPT_PRINT},
                                        {"json", no_argument, NULL, OPT_JSON},
                                        {NULL, 0, NULL, 0}};
    char short_opts[32];
    const struct option *opts = cli_options(own, "", short_opts, sizeof short_opts);
    cli_profile profile = {0};
    bool print_token = false, json = false;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, short_opts, opts, NULL)) != -1) {
        int handled = cli_profile_option(&profile, opt, optarg, "token");
        if (handled < 0)
            return -handled;
        if (handled)
            continue;
        switch (opt) {
        case OPT_PRINT: print_token = true; break;
        case OPT_JSON: json = true; break;
        case 'h': usage(stdout); return 0;
        default: return cli_bad_option("token", argv);
        }
    }
    if (optind < argc)
        return cli_usage_error("token", "unexpected argument '%s'", argv[optind]);
    cli_setup_logging(&profile);

    fhirsync_error err = {0};
    fhirsync_endpoint *ep = NULL;
    fhirsync_auth *auth = NULL;
    int rc = 0;
    if (cli_profile_resolve(&profile, &ep, &err) != FHIRSYNC_OK ||
        fhirsync_auth_new(ep, &auth, &err) != FHIRSYNC_OK) {
        rc = cli_fail(&err);
        goto out;
    }
    fhirsync_token tok;
    if (fhirsync_auth_token(auth, false, &tok, &err) != FHIRSYNC_OK) {
        rc = cli_fail(&err);
        if (rc == EXIT_AUTH)
            fprintf(stderr, "fhirsync: run 'fhirsync doctor' (same options) for the likely "
                            "causes\n");
        goto out;
    }
    long long lifetime = (long long)(tok.expires_at - tok.obtained_at);
    char expires[32];
    time_t at = (time_t)tok.expires_at;
    struct tm tm;
    gmtime_r(&at, &tm);
    strftime(expires, sizeof expires, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (json) {
        printf("{\"token_url\":\"%s\",\"token_type\":\"%s\",\"scope\":\"%s\","
               "\"requested_scope\":\"%s\",\"expires_in\":%lld,\"expires_at\":\"%s\"",
               fhirsync_auth_token_url(auth), tok.token_type, tok.scope, tok.requested_scope,
               lifetime, expires);
        if (print_token)
            printf(",\"access_token\":\"%s\"", tok.access_token);
        printf("}\n");
    } else {
        printf("token obtained from %s\n", fhirsync_auth_token_url(auth));
        printf("  type:            %s\n", tok.token_type);
        printf("  expires in:      %lld s (at %s)%s\n", lifetime, expires,
               tok.expires_in_missing ? " -- the server sent no expires_in: assumed" : "");
        printf("  requested scope: %s\n", tok.requested_scope);
        printf("  granted scope:   %s\n", tok.scope);
        if (print_token)
            printf("%s\n", tok.access_token);
    }
out:
    fhirsync_auth_free(auth);
    fhirsync_endpoint_free(ep);
    return rc;
}
