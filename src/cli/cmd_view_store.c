/* cli/cmd_view_store.c: the views kept in the store (`fhirsync view add|refresh|list|remove`):
 * each registered ViewDefinition is a table of the store, named after the view, that every sync
 * keeps current (fhirsync/store.h, "materialized views"). The store is --store, else the
 * profile's `store` setting, else ./fhirsync.db. Uses only the public API. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fhirsync/store.h"

void cli_view_store_usage(FILE *out)
{
    fprintf(out,
            "       fhirsync view add VIEW... [options]      keep views as tables of the store\n"
            "       fhirsync view refresh [NAME] [options]   rebuild them from the stored "
            "resources\n"
            "       fhirsync view list [options]             the store's views, rows, when built\n"
            "       fhirsync view remove NAME [options]      drop a view and its table\n"
            "\n"
            "VIEW is a ViewDefinition file, a directory of them (*.json), or 'shipped' (the\n"
            "US Core views installed with fhirsync). A view's table is named after its `name`\n"
            "and has one column per view column (types from `type`) plus _resource_id; every\n"
            "sync updates the rows of the resources it changes, in the same transaction. The\n"
            "sync registers the profile's `views` setting (default: shipped) before each run.\n"
            "Query the tables with 'fhirsync query sql'.\n");
}

typedef struct list_ctx {
    int count;
} list_ctx;

static int print_view(const fhirsync_store_view_info *info, void *userdata)
{
    list_ctx *c = userdata;
    if (c->count++ == 0)
        printf("%-28s %-20s %10s  %s\n", "view", "resource", "rows", "built");
    printf("%-28s %-20s %10lld  %s\n", info->name, info->resource, (long long)info->rows,
           info->refreshed_at);
    return 0;
}

static void print_stats(const char *what, const fhirsync_view_stats *st)
{
    printf("%s: %lld view%s, %lld row%s from %lld resource%s", what, (long long)st->views,
           st->views == 1 ? "" : "s", (long long)st->rows, st->rows == 1 ? "" : "s",
           (long long)st->resources, st->resources == 1 ? "" : "s");
    if (st->failed)
        printf(", %lld resource%s could not be evaluated (fhirsync query quarantine)",
               (long long)st->failed, st->failed == 1 ? "" : "s");
    putchar('\n');
}

int cli_view_store(const char *sub, int argc, char **argv)
{
    char command[32];
    snprintf(command, sizeof command, "view %s", sub);
    static const struct option own[] = {{NULL, 0, NULL, 0}};
    char short_opts[32];
    const struct option *opts = cli_options(own, "", short_opts + 1, sizeof short_opts - 1);
    if (short_opts[1] == '+')
        memmove(short_opts + 1, short_opts + 2, strlen(short_opts + 2) + 1);
    short_opts[0] = '-'; /* arguments come back in order, as code 1 */
    cli_profile profile = {0};
    const char **args = calloc((size_t)argc + 1, sizeof *args);
    if (!args)
        return EXIT_INTERNAL;
    size_t nargs = 0;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, short_opts, opts, NULL)) != -1) {
        if (opt == 1) {
            args[nargs++] = optarg;
            continue;
        }
        int handled = cli_profile_option(&profile, opt, optarg, command);
        if (handled < 0) {
            free(args);
            return -handled;
        }
        if (handled)
            continue;
        if (opt == 'h') {
            fprintf(stdout, "usage: fhirsync view run VIEW.json ... (see 'fhirsync view run "
                            "--help')\n");
            cli_view_store_usage(stdout);
            fputc('\n', stdout);
            cli_print_common_help(stdout);
            free(args);
            return 0;
        }
        free(args);
        return cli_bad_option(command, argv);
    }
    while (optind < argc)
        args[nargs++] = argv[optind++];
    int rc = 0;
    bool is_add = strcmp(sub, "add") == 0, is_list = strcmp(sub, "list") == 0;
    bool is_remove = strcmp(sub, "remove") == 0;
    if (is_add && nargs == 0)
        rc = cli_usage_error(command, "name the views to add: files, directories or 'shipped'");
    else if (is_remove && nargs != 1)
        rc = cli_usage_error(command, nargs ? "one view at a time" : "name the view to remove");
    else if (is_list && nargs)
        rc = cli_usage_error(command, "unexpected argument '%s'", args[0]);
    else if (!is_add && !is_list && !is_remove && nargs > 1)
        rc = cli_usage_error(command, "unexpected argument '%s'", args[1]);
    if (rc) {
        free(args);
        return rc;
    }
    cli_setup_logging(&profile);
    fhirsync_error err = {0};
    char *owned = NULL;
    const char *location = cli_store_location(&profile, &owned, &err);
    fhirsync_store *store = NULL;
    if (!location || fhirsync_store_open(location, is_list ? FHIRSYNC_STORE_READONLY : 0, &store,
                                         &err) != FHIRSYNC_OK) {
        rc = cli_fail(&err);
        goto out;
    }
    fhirsync_code code = FHIRSYNC_OK;
    if (is_add) {
        for (size_t i = 0; code == FHIRSYNC_OK && i < nargs; i++)
            code = cli_views_register(store, args[i], !profile.quiet, &err);
    } else if (is_list) {
        list_ctx c = {0};
        code = fhirsync_store_views(store, print_view, &c, &err);
        if (code == FHIRSYNC_OK && c.count == 0 && !profile.quiet)
            printf("no views in %s ('fhirsync view add shipped' adds the US Core ones)\n",
                   fhirsync_store_location(store));
    } else if (is_remove) {
        code = fhirsync_store_view_remove(store, args[0], &err);
        if (code == FHIRSYNC_OK && !profile.quiet)
            printf("view %s: removed with its table\n", args[0]);
    } else {
        fhirsync_view_stats st;
        fhirsync_view_stats_init(&st, FHIRSYNC_VIEW_STATS_VERSION);
        code = fhirsync_store_view_refresh(store, nargs ? args[0] : NULL, &st, &err);
        if (code == FHIRSYNC_OK && !profile.quiet)
            print_stats("refreshed", &st);
    }
    if (code != FHIRSYNC_OK)
        rc = cli_fail(&err);
out:
    fhirsync_store_close(store);
    free(owned);
    free(args);
    return rc;
}
