/* cli/cmd_config.c: `fhirsync config check`: read the whole configuration (one file, or a directory
 * of *.ini files) as sync reads it, with the FHIRSYNC_* variables and the flags on top, and report
 * every problem of every endpoint with its file, line and setting instead of stopping at the
 * first. The library finds what the configuration alone tells (fhirsync_config_load_report,
 * fhirsync_config_check: syntax, values, duplicates, completeness, stores shared by two servers);
 * this file adds the files the settings name (private keys loaded through fhirsync/keys.h, client
 * secrets, CA bundles), each checked once however many endpoints share it, and prints the report
 * as lines or as JSON. Uses only the public API. */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: fhirsync config check [--config PATH] [--json] [options]\n"
            "\n"
            "Check every endpoint of the configuration and report every problem, each with the\n"
            "file, line, endpoint and setting it is about:\n"
            "  - lines that do not parse, unknown settings, refused values;\n"
            "  - two [endpoint NAME] sections of one name (in one file or two), a second\n"
            "    [defaults];\n"
            "  - what an endpoint lacks to get a token (base_url, client_id, key_file or a\n"
            "    client secret);\n"
            "  - key files that are missing, readable by others or not a usable key (each file\n"
            "    once), client secret files, ca_file;\n"
            "  - a store that would receive two FHIR servers (the sync refuses it unless\n"
            "    shared_store = yes), and, as a warning, two endpoints that sync the same server,\n"
            "    group and types into one store.\n"
            "The FHIRSYNC_* variables and the setting flags count, as for sync: check in the\n"
            "environment the service runs in.\n"
            "\n"
            "PATH is an INI file or a directory: every *.ini file in it (not those starting\n"
            "with '.'), read in name order, is one configuration. The last line of the report\n"
            "is the summary: N endpoints, M stores, K errors, W warnings.\n"
            "\n"
            "options:\n"
            "  --json               the report as one JSON object: config, endpoints, stores,\n"
            "                       errors, warnings, and problems (severity, file, line,\n"
            "                       endpoint, setting, source, message)\n"
            "  --endpoint NAME      report only this endpoint's problems (and those of no\n"
            "                       endpoint)\n"
            "\n"
            "exit status: 0 no errors (warnings allowed), 3 errors, 2 usage.\n"
            "\n");
    cli_print_common_help(out);
}

/* ---- the files the settings name ------------------------------------------------------------ */

/* A file that several endpoints may name: checked once, reported at its first endpoint. */
typedef struct named_file {
    const char *path;
    fhirsync_endpoint *first;
    size_t users;
} named_file;

typedef struct file_list {
    named_file *items;
    size_t count;
} file_list;

/* Record that `ep` names `path`; false on out of memory. */
static bool file_list_add(file_list *list, size_t cap, const char *path, fhirsync_endpoint *ep)
{
    for (size_t i = 0; i < list->count; i++) {
        if (strcmp(list->items[i].path, path) == 0) {
            list->items[i].users++;
            return true;
        }
    }
    if (list->count == cap)
        return false;
    list->items[list->count++] = (named_file){path, ep, 1};
    return true;
}

static fhirsync_code add(fhirsync_config_report *report, fhirsync_endpoint *ep, const char *setting,
                         fhirsync_config_severity severity, fhirsync_code code, const char *fmt,
                         ...) __attribute__((format(printf, 6, 7)));

static fhirsync_code add(fhirsync_config_report *report, fhirsync_endpoint *ep, const char *setting,
                         fhirsync_config_severity severity, fhirsync_code code, const char *fmt,
                         ...)
{
    char message[1400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    return fhirsync_config_report_add(report, ep, setting, severity, code, message);
}

/* " (the key of 12 endpoints)" when shared */
static const char *shared_by(const named_file *f, const char *what, char *buf, size_t size)
{
    if (f->users > 1)
        snprintf(buf, size, " (the %s of %zu endpoints)", what, f->users);
    else
        buf[0] = '\0';
    return buf;
}

/* Private keys: each file loaded once (missing, permissions, not a usable key); then the
 * algorithm each endpoint asks of it. */
static fhirsync_code check_keys(fhirsync_config *cfg, file_list *keys,
                                fhirsync_config_report *report)
{
    fhirsync_code rc = FHIRSYNC_OK;
    size_t n = fhirsync_config_endpoint_count(cfg);
    for (size_t k = 0; k < keys->count && rc == FHIRSYNC_OK; k++) {
        named_file *f = &keys->items[k];
        fhirsync_key *key = NULL;
        fhirsync_error err = {0};
        char shared[64];
        if (fhirsync_key_load_file(f->path, &key, &err) != FHIRSYNC_OK) {
            rc = add(report, f->first, "key_file", FHIRSYNC_CONFIG_ERROR, err.code,
                     "key_file: %s%s", err.message, shared_by(f, "key", shared, sizeof shared));
            continue;
        }
        for (size_t i = 0; i < n && rc == FHIRSYNC_OK; i++) {
            fhirsync_endpoint *ep = fhirsync_config_endpoint_at(cfg, i);
            const char *path = fhirsync_endpoint_get(ep, "key_file");
            const char *alg = fhirsync_endpoint_get(ep, "alg");
            if (!path || !alg || strcmp(path, f->path) != 0 ||
                fhirsync_key_fits_alg(key, fhirsync_alg_from_name(alg)))
                continue;
            rc = add(report, ep, "alg", FHIRSYNC_CONFIG_ERROR, FHIRSYNC_E_KEY,
                     "alg %s cannot sign with the %s key %s (its algorithm: %s); remove alg to "
                     "use the key's own",
                     alg, fhirsync_key_type_of(key) == FHIRSYNC_KEY_RSA ? "RSA" : "EC", f->path,
                     fhirsync_alg_name(fhirsync_key_default_alg(key)));
        }
        fhirsync_key_free(key);
    }
    return rc;
}

/* Client secret files (read once each, wiped at once), the variables client_secret_env names,
 * and CA bundles. */
static fhirsync_code check_secrets_and_cas(file_list *secrets, file_list *vars, file_list *cas,
                                           fhirsync_config_report *report)
{
    fhirsync_code rc = FHIRSYNC_OK;
    char shared[64];
    for (size_t i = 0; i < secrets->count && rc == FHIRSYNC_OK; i++) {
        named_file *f = &secrets->items[i];
        char *secret = NULL;
        fhirsync_error err = {0};
        if (fhirsync_endpoint_client_secret(f->first, &secret, &err) != FHIRSYNC_OK)
            rc = add(report, f->first, "client_secret_file", FHIRSYNC_CONFIG_ERROR, err.code,
                     "%s%s", err.message, shared_by(f, "secret", shared, sizeof shared));
        fhirsync_free_secret(secret);
    }
    for (size_t i = 0; i < vars->count && rc == FHIRSYNC_OK; i++) {
        named_file *f = &vars->items[i];
        const char *value = getenv(f->path);
        if (!value || !*value)
            rc = add(report, f->first, "client_secret_env", FHIRSYNC_CONFIG_WARNING,
                     FHIRSYNC_E_CONFIG,
                     "client_secret_env names the variable %s, which is %s here: the sync "
                     "needs it in its environment%s",
                     f->path, value ? "empty" : "not set",
                     shared_by(f, "secret", shared, sizeof shared));
    }
    for (size_t i = 0; i < cas->count && rc == FHIRSYNC_OK; i++) {
        named_file *f = &cas->items[i];
        if (access(f->path, R_OK) != 0)
            rc = add(report, f->first, "ca_file", FHIRSYNC_CONFIG_ERROR, FHIRSYNC_E_IO,
                     "ca_file %s cannot be read (%s)%s", f->path, strerror(errno),
                     shared_by(f, "CA bundle", shared, sizeof shared));
    }
    return rc;
}

/* What the library cannot check: the files the settings name. */
static fhirsync_code check_files(fhirsync_config *cfg, fhirsync_config_report *report)
{
    size_t n = fhirsync_config_endpoint_count(cfg);
    size_t cap = n ? n : 1;
    file_list keys = {calloc(cap, sizeof(named_file)), 0};
    file_list secrets = {calloc(cap, sizeof(named_file)), 0};
    file_list vars = {calloc(cap, sizeof(named_file)), 0};
    file_list cas = {calloc(cap, sizeof(named_file)), 0};
    bool ok = keys.items && secrets.items && vars.items && cas.items;
    for (size_t i = 0; i < n && ok; i++) {
        fhirsync_endpoint *ep = fhirsync_config_endpoint_at(cfg, i);
        const char *method = fhirsync_endpoint_get(ep, "auth_method");
        const char *key = fhirsync_endpoint_get(ep, "key_file");
        const char *secret_file = fhirsync_endpoint_get(ep, "client_secret_file");
        const char *secret_env = fhirsync_endpoint_get(ep, "client_secret_env");
        const char *ca = fhirsync_endpoint_get(ep, "ca_file");
        bool uses_secret = strncmp(method, "client_secret_", 14) == 0;
        if (strcmp(method, "private_key_jwt") == 0 && key)
            ok = file_list_add(&keys, cap, key, ep);
        /* both set is an error fhirsync_config_check reported already */
        if (ok && uses_secret && secret_file && !secret_env)
            ok = file_list_add(&secrets, cap, secret_file, ep);
        if (ok && uses_secret && secret_env && !secret_file)
            ok = file_list_add(&vars, cap, secret_env, ep);
        if (ok && ca)
            ok = file_list_add(&cas, cap, ca, ep);
    }
    fhirsync_code rc = ok ? FHIRSYNC_OK : FHIRSYNC_E_NOMEM;
    if (rc == FHIRSYNC_OK)
        rc = check_keys(cfg, &keys, report);
    if (rc == FHIRSYNC_OK)
        rc = check_secrets_and_cas(&secrets, &vars, &cas, report);
    free(keys.items);
    free(secrets.items);
    free(vars.items);
    free(cas.items);
    return rc;
}

/* ---- the report ----------------------------------------------------------------------------- */

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* How many stores the endpoints (all, or the one named) write to; SIZE_MAX on out of memory. */
static size_t count_stores(fhirsync_config *cfg, const char *only)
{
    size_t n = fhirsync_config_endpoint_count(cfg), m = 0, distinct = 0;
    const char **stores = calloc(n ? n : 1, sizeof *stores);
    if (!stores)
        return SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        fhirsync_endpoint *ep = fhirsync_config_endpoint_at(cfg, i);
        if (!only || strcmp(fhirsync_endpoint_name(ep), only) == 0)
            stores[m++] = fhirsync_endpoint_get(ep, "store");
    }
    qsort(stores, m, sizeof *stores, compare_strings);
    for (size_t i = 0; i < m; i++)
        distinct += i == 0 || strcmp(stores[i], stores[i - 1]) != 0;
    free(stores);
    return distinct;
}

/* A JSON string of any bytes: control characters escaped, and bytes that are not UTF-8 (a file
 * name may hold any) as U+FFFD, so that the output stays JSON. */
static void json_string(const char *text)
{
    if (!text) {
        fputs("null", stdout);
        return;
    }
    putchar('"');
    const unsigned char *s = (const unsigned char *)text;
    while (*s) {
        unsigned char c = *s;
        size_t n = c < 0x80                 ? 1
                   : c >= 0xC2 && c <= 0xDF ? 2
                   : c >= 0xE0 && c <= 0xEF ? 3
                   : c >= 0xF0 && c <= 0xF4 ? 4
                                            : 0;
        for (size_t i = 1; i < n; i++)
            if ((s[i] & 0xC0) != 0x80)
                n = 0;
        if (n == 0) {
            fputs("\\ufffd", stdout);
            s++;
        } else if (c == '"' || c == '\\') {
            printf("\\%c", c);
            s++;
        } else if (c < 0x20) {
            printf("\\u%04x", c);
            s++;
        } else {
            fwrite(s, 1, n, stdout);
            s += n;
        }
    }
    putchar('"');
}

static bool wanted(const fhirsync_config_problem *p, const char *only)
{
    return !only || !p->endpoint || strcmp(p->endpoint, only) == 0;
}

static void print_json(const char *path, const fhirsync_config_report *report, const char *only,
                       size_t endpoints, size_t stores, size_t errors, size_t warnings)
{
    printf("{\"config\":");
    json_string(path);
    printf(",\"endpoints\":%zu,\"stores\":%zu,\"errors\":%zu,\"warnings\":%zu,\"problems\":[",
           endpoints, stores, errors, warnings);
    size_t shown = 0;
    for (size_t i = 0; i < fhirsync_config_report_count(report); i++) {
        const fhirsync_config_problem *p = fhirsync_config_report_at(report, i);
        if (!wanted(p, only))
            continue;
        printf("%s\n{\"severity\":\"%s\",\"file\":", shown++ ? "," : "",
               p->severity == FHIRSYNC_CONFIG_ERROR ? "error" : "warning");
        json_string(p->file);
        printf(",\"line\":%d,\"endpoint\":", p->line);
        json_string(p->endpoint);
        printf(",\"setting\":");
        json_string(p->setting);
        printf(",\"source\":");
        json_string(p->source);
        printf(",\"message\":");
        json_string(p->message);
        putchar('}');
    }
    printf("]}\n");
}

static void print_lines(const fhirsync_config_report *report, const char *only, bool quiet)
{
    for (size_t i = 0; i < fhirsync_config_report_count(report); i++) {
        const fhirsync_config_problem *p = fhirsync_config_report_at(report, i);
        bool error = p->severity == FHIRSYNC_CONFIG_ERROR;
        if (!wanted(p, only) || (quiet && !error))
            continue;
        if (p->source)
            printf("%s: ", p->source);
        printf("%s: ", error ? "error" : "warning");
        if (p->endpoint)
            printf("endpoint %s: ", p->endpoint);
        printf("%s\n", p->message);
    }
}

static const char *plural(size_t n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}

/* ---- the command ---------------------------------------------------------------------------- */

static int config_check(int argc, char **argv)
{
    enum { OPT_JSON = 1 };
    static const struct option own[] = {{"json", no_argument, NULL, OPT_JSON}, {NULL, 0, NULL, 0}};
    char short_opts[32];
    const struct option *opts = cli_options(own, "", short_opts, sizeof short_opts);
    cli_profile profile = {0};
    bool json = false;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, short_opts, opts, NULL)) != -1) {
        int handled = cli_profile_option(&profile, opt, optarg, "config check");
        if (handled < 0)
            return -handled;
        if (handled)
            continue;
        switch (opt) {
        case OPT_JSON: json = true; break;
        case 'h': usage(stdout); return 0;
        default: return cli_bad_option("config check", argv);
        }
    }
    if (optind < argc)
        return cli_usage_error("config check", "unexpected argument '%s'", argv[optind]);
    cli_setup_logging(&profile);
    const char *path = cli_config_path(&profile);
    if (!path) {
        fprintf(stderr, "fhirsync: no configuration to check: give --config PATH (a file, or a "
                        "directory of *.ini files), set FHIRSYNC_CONFIG, or create "
                        "./fhirsync.ini\n");
        return EXIT_CONFIG;
    }

    int rc = 0;
    fhirsync_error err = {0};
    fhirsync_config *cfg = NULL;
    fhirsync_config_report *report = fhirsync_config_report_new();
    if (!report || fhirsync_config_load_report(path, report, &cfg, &err) != FHIRSYNC_OK) {
        rc = report ? cli_fail(&err) : EXIT_INTERNAL;
        goto out;
    }
    const char *only = profile.endpoint_name;
    if (only && !fhirsync_config_endpoint(cfg, only)) {
        fprintf(stderr, "fhirsync: endpoint '%s' is not defined in %s\n", only, path);
        rc = EXIT_CONFIG;
        goto out;
    }
    /* the layers sync puts on top: a bad variable or flag is one problem, not one per endpoint */
    fhirsync_code layered = FHIRSYNC_OK;
    char last_layer_error[sizeof err.message] = "";
    for (size_t i = 0; i < fhirsync_config_endpoint_count(cfg) && layered == FHIRSYNC_OK; i++) {
        if (cli_apply_layers(&profile, fhirsync_config_endpoint_at(cfg, i), &err) == FHIRSYNC_OK ||
            strcmp(err.message, last_layer_error) == 0)
            continue;
        snprintf(last_layer_error, sizeof last_layer_error, "%s", err.message);
        layered = fhirsync_config_report_add(report, NULL, NULL, FHIRSYNC_CONFIG_ERROR, err.code,
                                             err.message);
    }
    if (layered != FHIRSYNC_OK || fhirsync_config_check(cfg, report, &err) != FHIRSYNC_OK ||
        check_files(cfg, report) != FHIRSYNC_OK) {
        fprintf(stderr, "fhirsync: out of memory\n");
        rc = EXIT_INTERNAL;
        goto out;
    }

    size_t endpoints = only ? 1 : fhirsync_config_endpoint_count(cfg);
    size_t stores = count_stores(cfg, only), errors = 0, warnings = 0;
    if (stores == SIZE_MAX) {
        fprintf(stderr, "fhirsync: out of memory\n");
        rc = EXIT_INTERNAL;
        goto out;
    }
    for (size_t i = 0; i < fhirsync_config_report_count(report); i++) {
        const fhirsync_config_problem *p = fhirsync_config_report_at(report, i);
        if (wanted(p, only))
            *(p->severity == FHIRSYNC_CONFIG_ERROR ? &errors : &warnings) += 1;
    }
    if (json) {
        print_json(path, report, only, endpoints, stores, errors, warnings);
    } else {
        print_lines(report, only, profile.quiet);
        printf("%zu %s, %zu %s, %zu %s, %zu %s\n", endpoints,
               plural(endpoints, "endpoint", "endpoints"), stores,
               plural(stores, "store", "stores"), errors, plural(errors, "error", "errors"),
               warnings, plural(warnings, "warning", "warnings"));
    }
    rc = errors ? EXIT_CONFIG : 0;
out:
    fhirsync_config_free(cfg);
    fhirsync_config_report_free(report);
    return rc;
}

int cmd_config(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    if (strcmp(argv[1], "check") == 0)
        return config_check(argc - 1, argv + 1);
    return cli_usage_error("config", "unknown sub-command '%s' (check)", argv[1]);
}
