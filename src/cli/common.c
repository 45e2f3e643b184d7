/* cli/common.c: exit codes, error printing, logging to stderr (text, or JSON lines with
 * --log-format json) and endpoint-profile resolution shared by the sub-commands. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

int cli_exit_code(fhirsync_code code)
{
    switch (code) {
    case FHIRSYNC_OK: return 0;
    case FHIRSYNC_E_ARG: return EXIT_USAGE;
    case FHIRSYNC_E_CONFIG:
    case FHIRSYNC_E_URL:
    case FHIRSYNC_E_VIEW: return EXIT_CONFIG;
    case FHIRSYNC_E_KEY:
    case FHIRSYNC_E_KEY_PERMS: return EXIT_KEY;
    case FHIRSYNC_E_AUTH:
    case FHIRSYNC_E_UNAUTHORIZED:
    case FHIRSYNC_E_FORBIDDEN: return EXIT_AUTH;
    case FHIRSYNC_E_NOT_FOUND: return EXIT_NOT_FOUND;
    case FHIRSYNC_E_SERVER:
    case FHIRSYNC_E_RATE_LIMITED:
    case FHIRSYNC_E_HTTP:
    case FHIRSYNC_E_BAD_REQUEST: return EXIT_SERVER;
    case FHIRSYNC_E_JSON:
    case FHIRSYNC_E_TOO_LARGE:
    case FHIRSYNC_E_REDIRECT:
    case FHIRSYNC_E_DISCOVERY:
    case FHIRSYNC_E_TOKEN_RESPONSE:
    case FHIRSYNC_E_PROTOCOL:
    case FHIRSYNC_E_UNSUPPORTED: return EXIT_PROTOCOL;
    case FHIRSYNC_E_NETWORK:
    case FHIRSYNC_E_TLS:
    case FHIRSYNC_E_TIMEOUT: return EXIT_NETWORK;
    case FHIRSYNC_E_PARTIAL: return EXIT_PARTIAL;
    case FHIRSYNC_E_LOCKED: return EXIT_LOCKED;
    case FHIRSYNC_E_CANCELLED: return EXIT_INTERRUPTED;
    case FHIRSYNC_E_IO:
    case FHIRSYNC_E_STORE:
    case FHIRSYNC_E_CONFLICT: return EXIT_IO;
    case FHIRSYNC_E_NOMEM:
    case FHIRSYNC_E_CRYPTO:
    case FHIRSYNC_E_INTERNAL: return EXIT_INTERNAL;
    }
    return EXIT_INTERNAL;
}

int cli_fail(const fhirsync_error *err)
{
    return cli_fail_handle(err->code, err->message);
}

int cli_fail_handle(fhirsync_code code, const char *message)
{
    const char *text = message && *message ? message : fhirsync_strerror(code);
    if (cli_log_is_json())
        cli_log(FHIRSYNC_LOG_ERROR, NULL, false, "%s", text);
    else
        fprintf(stderr, "fhirsync: %s\n", text);
    return cli_exit_code(code);
}

int cli_usage_error(const char *command, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (cli_log_is_json()) {
        char text[1024];
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        cli_log(FHIRSYNC_LOG_ERROR, NULL, false, "fhirsync %s: %s (see 'fhirsync %s --help')",
                command, text, command);
        return EXIT_USAGE;
    }
    fprintf(stderr, "fhirsync %s: ", command);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'fhirsync %s --help')\n", command);
    va_end(ap);
    return EXIT_USAGE;
}

int cli_bad_option(const char *command, char **argv)
{
    const char *arg = optind > 0 ? argv[optind - 1] : "?";
    if (optopt && optopt < 128 && optopt != '?')
        return cli_usage_error(command, "option -%c is unknown or needs a value", optopt);
    return cli_usage_error(command, "option '%s' is unknown or needs a value", arg);
}

/* ---- options ------------------------------------------------------------------------------- */

enum { OPT_CONFIG = 900, OPT_ENDPOINT, OPT_SET, OPT_LOG_FORMAT, OPT_SETTING_BASE = 1000 };

/* Friendlier aliases for a few settings; every setting also has --<name-with-dashes>. */
static const struct {
    const char *flag;
    const char *setting;
} aliases[] = {{"key", "key_file"}, {"base", "base_url"}, {"fhir-base", "base_url"}};

static struct option all_options[160];
static char flag_names[64][40];

const struct option *cli_options(const struct option *command_options, const char *command_short,
                                 char *short_opts, size_t short_size)
{
    size_t n = 0;
    for (const struct option *o = command_options; o && o->name; o++)
        all_options[n++] = *o;
    all_options[n++] = (struct option){"config", required_argument, NULL, OPT_CONFIG};
    all_options[n++] = (struct option){"endpoint", required_argument, NULL, OPT_ENDPOINT};
    all_options[n++] = (struct option){"set", required_argument, NULL, OPT_SET};
    all_options[n++] = (struct option){"log-format", required_argument, NULL, OPT_LOG_FORMAT};
    all_options[n++] = (struct option){"verbose", no_argument, NULL, 'v'};
    all_options[n++] = (struct option){"quiet", no_argument, NULL, 'q'};
    all_options[n++] = (struct option){"help", no_argument, NULL, 'h'};
    const char *const *names = fhirsync_setting_names();
    for (size_t i = 0; names[i] && i < 64; i++) {
        snprintf(flag_names[i], sizeof flag_names[i], "%s", names[i]);
        for (char *c = flag_names[i]; *c; c++)
            if (*c == '_')
                *c = '-';
        all_options[n++] =
            (struct option){flag_names[i], required_argument, NULL, OPT_SETTING_BASE + (int)i};
    }
    for (size_t a = 0; a < sizeof aliases / sizeof *aliases; a++) {
        for (size_t i = 0; names[i]; i++)
            if (strcmp(names[i], aliases[a].setting) == 0)
                all_options[n++] = (struct option){aliases[a].flag, required_argument, NULL,
                                                   OPT_SETTING_BASE + (int)i};
    }
    all_options[n] = (struct option){NULL, 0, NULL, 0};
    snprintf(short_opts, short_size, "%svqh", command_short ? command_short : "");
    return all_options;
}

static int add_override(cli_profile *p, const char *setting, const char *value, const char *flag,
                        const char *command)
{
    if (p->override_count >= sizeof p->overrides / sizeof *p->overrides)
        return cli_usage_error(command, "too many setting flags");
    p->overrides[p->override_count].setting = setting;
    p->overrides[p->override_count].value = value;
    snprintf(p->overrides[p->override_count].flag, sizeof p->overrides[0].flag, "--%s", flag);
    p->override_count++;
    return 1;
}

int cli_profile_option(cli_profile *p, int opt, const char *arg, const char *command)
{
    if (opt == OPT_CONFIG) {
        p->config_path = arg;
        return 1;
    }
    if (opt == OPT_ENDPOINT) {
        p->endpoint_name = arg;
        return 1;
    }
    if (opt == 'v') {
        p->verbosity++;
        return 1;
    }
    if (opt == 'q') {
        p->quiet = true;
        return 1;
    }
    if (opt == OPT_LOG_FORMAT) {
        if (strcmp(arg, "json") != 0 && strcmp(arg, "text") != 0)
            return -cli_usage_error(command, "--log-format is text or json, not '%s'", arg);
        p->log_json = strcmp(arg, "json") == 0;
        /* from now on: even a usage error found later is a JSON line */
        cli_log_json_early(p->log_json);
        return 1;
    }
    if (opt == OPT_SET) {
        /* --set name=value: any setting, for scripts */
        const char *eq = strchr(arg, '=');
        if (!eq || eq == arg)
            return -cli_usage_error(command, "--set expects NAME=VALUE, got '%s'", arg);
        static char names[16][64];
        static size_t used;
        if (used >= 16 || (size_t)(eq - arg) >= sizeof names[0])
            return -cli_usage_error(command, "--set: too many or too long names");
        char *name = names[used++];
        memcpy(name, arg, (size_t)(eq - arg));
        name[eq - arg] = '\0';
        int rc = add_override(p, name, eq + 1, "set", command);
        return rc == 1 ? 1 : -rc;
    }
    if (opt >= OPT_SETTING_BASE && opt < OPT_SETTING_BASE + 64) {
        const char *setting = fhirsync_setting_names()[opt - OPT_SETTING_BASE];
        int rc = add_override(p, setting, arg, flag_names[opt - OPT_SETTING_BASE], command);
        return rc == 1 ? 1 : -rc;
    }
    return 0;
}

const char *cli_config_path(const cli_profile *p)
{
    if (p->config_path)
        return p->config_path;
    const char *env = getenv("FHIRSYNC_CONFIG");
    if (env && *env)
        return env;
    if (access("fhirsync.ini", F_OK) == 0)
        return "fhirsync.ini";
    return NULL;
}

fhirsync_code cli_apply_layers(const cli_profile *p, fhirsync_endpoint *ep, fhirsync_error *err)
{
    fhirsync_code rc = fhirsync_endpoint_apply_env(ep, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    bool cleared_header = false;
    for (size_t i = 0; i < p->override_count; i++) {
        /* flags for a repeatable setting replace what the file and environment gave */
        if (strcmp(p->overrides[i].setting, "header") == 0 && !cleared_header) {
            fhirsync_endpoint_clear(ep, "header");
            cleared_header = true;
        }
        char source[64];
        snprintf(source, sizeof source, "command line %s", p->overrides[i].flag);
        rc = fhirsync_endpoint_set(ep, p->overrides[i].setting, p->overrides[i].value, source, err);
        if (rc != FHIRSYNC_OK)
            return rc;
    }
    return FHIRSYNC_OK;
}

fhirsync_code cli_config_resolve(const cli_profile *p, fhirsync_config **out, fhirsync_error *err)
{
    *out = NULL;
    const char *path = cli_config_path(p);
    fhirsync_config *cfg = NULL;
    fhirsync_code rc;
    if (path) {
        rc = fhirsync_config_load(path, &cfg, err);
        if (rc != FHIRSYNC_OK)
            return rc;
    } else {
        cfg = fhirsync_config_new();
        if (!cfg)
            return FHIRSYNC_E_NOMEM;
    }
    if (fhirsync_config_endpoint_count(cfg) == 0) {
        const char *name = p->endpoint_name ? p->endpoint_name : getenv("FHIRSYNC_ENDPOINT");
        rc = fhirsync_config_add_endpoint(cfg, name && *name ? name : "default", NULL, err);
        if (rc != FHIRSYNC_OK) {
            fhirsync_config_free(cfg);
            return rc;
        }
    }
    for (size_t i = 0; i < fhirsync_config_endpoint_count(cfg); i++) {
        rc = cli_apply_layers(p, fhirsync_config_endpoint_at(cfg, i), err);
        if (rc != FHIRSYNC_OK) {
            fhirsync_config_free(cfg);
            return rc;
        }
    }
    *out = cfg;
    return FHIRSYNC_OK;
}

fhirsync_code cli_profile_resolve(const cli_profile *p, fhirsync_endpoint **out,
                                  fhirsync_error *err)
{
    *out = NULL;
    const char *path = cli_config_path(p);
    const char *name = p->endpoint_name;
    if (!name) {
        const char *env = getenv("FHIRSYNC_ENDPOINT");
        name = env && *env ? env : NULL;
    }
    fhirsync_endpoint *ep = NULL;
    fhirsync_code rc = FHIRSYNC_OK;
    if (path) {
        fhirsync_config *cfg = NULL;
        rc = fhirsync_config_load(path, &cfg, err);
        if (rc != FHIRSYNC_OK)
            return rc;
        size_t count = fhirsync_config_endpoint_count(cfg);
        const fhirsync_endpoint *found = NULL;
        if (name) {
            found = fhirsync_config_endpoint(cfg, name);
            if (!found) {
                snprintf(err->message, sizeof err->message,
                         "endpoint '%s' is not defined in %s (add an [endpoint %s] section)", name,
                         path, name);
                err->code = rc = FHIRSYNC_E_CONFIG;
            }
        } else if (count == 1) {
            found = fhirsync_config_endpoint_at(cfg, 0);
        } else if (count > 1) {
            snprintf(err->message, sizeof err->message,
                     "%s defines %zu endpoints: choose one with --endpoint NAME or "
                     "FHIRSYNC_ENDPOINT",
                     path, count);
            err->code = rc = FHIRSYNC_E_CONFIG;
        }
        if (found && !(ep = fhirsync_endpoint_dup(found)))
            rc = FHIRSYNC_E_NOMEM;
        fhirsync_config_free(cfg);
        if (rc != FHIRSYNC_OK)
            return rc;
    }
    if (!ep && !(ep = fhirsync_endpoint_new(name ? name : "default")))
        return FHIRSYNC_E_NOMEM;
    rc = cli_apply_layers(p, ep, err);
    if (rc != FHIRSYNC_OK) {
        fhirsync_endpoint_free(ep);
        return rc;
    }
    *out = ep;
    return FHIRSYNC_OK;
}

/* ---- logging ------------------------------------------------------------------------------- */

static bool log_json;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local const char *thread_endpoint;

void cli_log_json_early(bool json)
{
    log_json = json;
}

bool cli_log_is_json(void)
{
    return log_json;
}

void cli_log_set_thread_endpoint(const char *endpoint)
{
    thread_endpoint = endpoint;
}

void cli_json_string(char *out, size_t size, size_t *used, const char *s)
{
    size_t u = *used;
#define PUT(c)                                                                                     \
    do {                                                                                           \
        if (u + 1 < size)                                                                          \
            out[u++] = (c);                                                                        \
    } while (0)
    if (!s) {
        for (const char *p = "null"; *p; p++)
            PUT(*p);
    } else {
        PUT('"');
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
            if (*p == '"' || *p == '\\') {
                PUT('\\');
                PUT((char)*p);
            } else if (*p < 0x20) {
                char esc[8];
                snprintf(esc, sizeof esc, "\\u%04x", *p);
                for (const char *e = esc; *e; e++)
                    PUT(*e);
            } else {
                PUT((char)*p);
            }
        }
        PUT('"');
    }
#undef PUT
    if (size)
        out[u < size ? u : size - 1] = '\0';
    *used = u;
}

/* One JSON log line: time (UTC, milliseconds), level, message, endpoint when known. Long messages
 * are cut (a log line is not a data channel). */
static void write_json_line(fhirsync_log_level level, const char *endpoint, const char *message)
{
    char line[4096];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    size_t used =
        (size_t)snprintf(line, sizeof line,
                         "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\","
                         "\"message\":",
                         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                         tm.tm_sec, now.tv_nsec / 1000000L, fhirsync_log_level_name(level));
    /* room for the endpoint and the closing brace, whatever the message's length */
    cli_json_string(line, sizeof line - 300, &used, message);
    if (endpoint) {
        used += (size_t)snprintf(line + used, sizeof line - used, ",\"endpoint\":");
        cli_json_string(line, sizeof line - 4, &used, endpoint);
    }
    snprintf(line + used, sizeof line - used, "}\n");
    pthread_mutex_lock(&log_lock);
    fputs(line, stderr);
    fflush(stderr);
    pthread_mutex_unlock(&log_lock);
}

static void log_to_stderr(fhirsync_log_level level, const char *line, void *userdata)
{
    (void)userdata;
    if (log_json) {
        write_json_line(level, thread_endpoint, line);
        return;
    }
    pthread_mutex_lock(&log_lock);
    fprintf(stderr, "fhirsync: %s: %s\n", fhirsync_log_level_name(level), line);
    pthread_mutex_unlock(&log_lock);
}

void cli_setup_logging(const cli_profile *p)
{
    fhirsync_log_level max = FHIRSYNC_LOG_WARN;
    if (p->quiet)
        max = FHIRSYNC_LOG_ERROR;
    else if (p->verbosity == 1)
        max = FHIRSYNC_LOG_INFO;
    else if (p->verbosity >= 2)
        max = FHIRSYNC_LOG_DEBUG;
    log_json = p->log_json;
    fhirsync_log_set(log_to_stderr, NULL, max);
}

void cli_log(fhirsync_log_level level, const char *endpoint, bool prefix, const char *fmt, ...)
{
    char text[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    char *clean = fhirsync_redact(text);
    const char *message = clean ? clean : "[a message that could not be redacted]";
    if (log_json) {
        write_json_line(level, endpoint, message);
    } else {
        pthread_mutex_lock(&log_lock);
        if (prefix && endpoint)
            fprintf(stderr, "fhirsync: [%s] %s\n", endpoint, message);
        else
            fprintf(stderr, "fhirsync: %s\n", message);
        fflush(stderr);
        pthread_mutex_unlock(&log_lock);
    }
    fhirsync_free(clean);
}

long cli_parse_duration(const char *text)
{
    if (!text || !*text)
        return 0;
    long total = 0;
    const char *p = text;
    while (*p) {
        if (*p < '0' || *p > '9')
            return 0;
        long n = 0;
        while (*p >= '0' && *p <= '9') {
            n = n * 10 + (*p++ - '0');
            if (n > 100000000L)
                return 0;
        }
        long unit = *p == 's' ? 1 : *p == 'm' ? 60 : *p == 'h' ? 3600 : *p == 'd' ? 86400 : 0;
        if (!unit)
            return 0;
        p++;
        total += n * unit;
    }
    return total;
}

void cli_print_common_help(FILE *out)
{
    fprintf(out, "endpoint options (override fhirsync.ini and FHIRSYNC_* variables):\n"
                 "  --config PATH        INI file, or a directory of *.ini files (default:\n"
                 "                       $FHIRSYNC_CONFIG, else ./fhirsync.ini)\n"
                 "  --endpoint NAME      which [endpoint NAME] section to use\n");
    const char *const *names = fhirsync_setting_names();
    for (size_t i = 0; names[i]; i++) {
        char flag[48];
        snprintf(flag, sizeof flag, "--%s", names[i]);
        for (char *c = flag; *c; c++)
            if (*c == '_')
                *c = '-';
        fprintf(out, "  %-20s %s\n", flag, fhirsync_setting_help(names[i]));
    }
    fprintf(out, "  --set NAME=VALUE     any setting by its INI name\n"
                 "  --log-format FORMAT  text (default) or json: one JSON object a log line\n"
                 "                       (time, level, message, endpoint)\n"
                 "  -v, --verbose        more log output (-vv: debug; secrets are always masked)\n"
                 "  -q, --quiet          errors only\n"
                 "  -h, --help           this help\n");
}

int cli_io_error(const char *what, const char *path, int errnum)
{
    fhirsync_error err = {.code = FHIRSYNC_E_IO};
    snprintf(err.message, sizeof err.message, "%s %s: %s", what, path, strerror(errnum));
    return cli_fail(&err);
}

int cli_write_public_file(const char *path, const char *text, bool replace)
{
    char tmp[PATH_MAX];
    const char *target = path;
    int fd;
    if (replace) {
        if (snprintf(tmp, sizeof tmp, "%s.tmp-XXXXXX", path) >= (int)sizeof tmp)
            return cli_io_error("path too long:", path, ENAMETOOLONG);
        target = tmp;
        fd = mkstemp(tmp);
        if (fd < 0)
            return cli_io_error("cannot create a file next to", path, errno);
    } else {
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
            return cli_io_error("cannot create", path, errno);
    }
    size_t len = strlen(text), done = 0;
    bool ok = fchmod(fd, 0644) == 0;
    while (ok && done < len) {
        ssize_t n = write(fd, text + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        ok = n > 0;
        if (ok)
            done += (size_t)n;
    }
    ok = ok && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
    int saved_errno = errno;
    if (close(fd) != 0 && ok) {
        ok = false;
        saved_errno = errno;
    }
    if (ok && replace && rename(tmp, path) != 0) {
        ok = false;
        saved_errno = errno;
    }
    if (!ok) {
        unlink(target);
        return cli_io_error("cannot write", path, saved_errno);
    }
    return 0;
}

/* The store: --store, else the profile's setting (config, FHIRSYNC_STORE), else the default;
 * with several endpoints and no --endpoint, the store they all share. *owned receives what the
 * caller frees. NULL (err filled) when it cannot be told. */
const char *cli_store_location(const cli_profile *profile, char **owned, fhirsync_error *err)
{
    *owned = NULL;
    for (size_t i = 0; i < profile->override_count; i++)
        if (strcmp(profile->overrides[i].setting, "store") == 0)
            return profile->overrides[i].value;
    fhirsync_endpoint *ep = NULL;
    const char *value = NULL;
    fhirsync_config *cfg = NULL;
    if (cli_profile_resolve(profile, &ep, err) == FHIRSYNC_OK) {
        value = fhirsync_endpoint_get(ep, "store");
    } else if (err->code == FHIRSYNC_E_CONFIG && !profile->endpoint_name &&
               cli_config_resolve(profile, &cfg, err) == FHIRSYNC_OK) {
        /* no endpoint chosen among several: fine when they share one store */
        for (size_t i = 0; i < fhirsync_config_endpoint_count(cfg); i++) {
            const char *store = fhirsync_endpoint_get(fhirsync_config_endpoint_at(cfg, i), "store");
            if (i > 0 && (!store || !value || strcmp(store, value) != 0)) {
                err->code = FHIRSYNC_E_CONFIG;
                snprintf(err->message, sizeof err->message,
                         "the endpoints use different stores: choose one with --endpoint NAME "
                         "or --store LOCATION");
                value = NULL;
                break;
            }
            value = store;
        }
        if (!value && err->code != FHIRSYNC_E_CONFIG)
            value = FHIRSYNC_STORE_DEFAULT;
    }
    if (value && !(*owned = strdup(value))) {
        err->code = FHIRSYNC_E_NOMEM;
        snprintf(err->message, sizeof err->message, "out of memory");
    }
    fhirsync_endpoint_free(ep);
    fhirsync_config_free(cfg);
    return *owned;
}
