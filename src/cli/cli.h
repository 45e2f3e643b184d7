/* cli/cli.h: what the sub-commands of the fhirsync tool share: the exit-code table, printing
 * errors and logs to stderr, and resolving an endpoint profile from the configuration file, the
 * environment and command-line flags (in that order of precedence, flags winning).
 * The tool uses only the public API of libfhirsync. */
#ifndef FHIRSYNC_CLI_H
#define FHIRSYNC_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>

#include "fhirsync/fhirsync.h"

/* Exit codes: documented in `fhirsync --help`, the man page and docs/. Never renumbered. */
enum cli_exit {
    EXIT_OK_ = 0,
    EXIT_INTERNAL = 1,     /* a bug, or out of memory */
    EXIT_USAGE = 2,        /* wrong flags or arguments */
    EXIT_CONFIG = 3,       /* a setting is missing or wrong (config file, environment, flags) */
    EXIT_KEY = 4,          /* the key file is unusable (malformed, wrong type, permissions) */
    EXIT_AUTH = 5,         /* the server refused authentication or authorization (401, 403) */
    EXIT_NOT_FOUND = 6,    /* the resource or endpoint does not exist (404) */
    EXIT_SERVER = 7,       /* the server failed (5xx, 429 after retries, refused the request) */
    EXIT_PROTOCOL = 8,     /* the server answered something the protocol does not allow */
    EXIT_NETWORK = 9,      /* DNS, connection, TLS or timeout */
    EXIT_PARTIAL = 10,     /* finished, but some data was quarantined */
    EXIT_LOCKED = 11,      /* another process holds the lock */
    EXIT_INTERRUPTED = 12, /* stopped by a signal before finishing */
    EXIT_IO = 13           /* a local file or the store could not be written or read */
};

/* The exit code for a library error. */
int cli_exit_code(fhirsync_code code);
/* Print "fhirsync: <msg>" (one line) to stderr and return the exit code for err->code. */
int cli_fail(const fhirsync_error *err);
/* The same for the failure a handle recorded (fhirsync_X_errcode(), fhirsync_X_errmsg()): the
 * message, or the code's name when it is empty. */
int cli_fail_handle(fhirsync_code code, const char *message);
/* Print a usage error for the command and return EXIT_USAGE. */
int cli_usage_error(const char *command, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Report the option getopt_long just refused (unknown, or missing its value) and return
 * EXIT_USAGE. */
int cli_bad_option(const char *command, char **argv);

/* A local file failed: "WHAT PATH: strerror(errnum)" as FHIRSYNC_E_IO; returns the exit status. */
int cli_io_error(const char *what, const char *path, int errnum);
/* Write `text` and a newline to the public file `path`, mode 0644 whatever the umask (a JWK Set
 * a web server serves), fsync'ed. `replace`: write a temporary file next to it and rename it over
 * `path`, so that no one ever reads half of it; otherwise create it and refuse an existing file
 * or a symbolic link. 0, or the exit status after a message naming the path and the cause. */
int cli_write_public_file(const char *path, const char *text, bool replace);

/* Common options of every command that talks to an endpoint. */
typedef struct cli_profile {
    const char *config_path;   /* --config, else FHIRSYNC_CONFIG, else ./fhirsync.ini if present;
                                  a file or a directory of *.ini files */
    const char *endpoint_name; /* --endpoint, else FHIRSYNC_ENDPOINT, else the only one */
    struct {
        const char *setting;
        const char *value;
        char flag[48];
    } overrides[64];
    size_t override_count;
    int verbosity; /* -v: info, -vv: debug */
    bool quiet;
    bool log_json; /* --log-format json: log lines on stderr as JSON objects */
} cli_profile;

/* The command's options followed by the common ones (config, endpoint, one flag per setting,
 * -v, -q, -h). Returns a static array; `short_opts` receives the matching optstring. */
const struct option *cli_options(const struct option *command_options, const char *command_short,
                                 char *short_opts, size_t short_size);
/* Handle one getopt_long result if it is a common option: 1 consumed, 0 not ours, <0 exit code. */
int cli_profile_option(cli_profile *p, int opt, const char *arg, const char *command);
/* The configuration to read: --config, else FHIRSYNC_CONFIG, else ./fhirsync.ini when it exists;
 * NULL when there is none. */
const char *cli_config_path(const cli_profile *p);
/* The layers above the configuration files, applied to one endpoint: FHIRSYNC_* variables, then
 * the setting flags. */
fhirsync_code cli_apply_layers(const cli_profile *p, fhirsync_endpoint *ep, fhirsync_error *err);
/* Build the endpoint profile: config file, then environment, then flags. On success *out is the
 * caller's (fhirsync_endpoint_free). */
fhirsync_code cli_profile_resolve(const cli_profile *p, fhirsync_endpoint **out,
                                  fhirsync_error *err);
/* Load the whole configuration with env/flag overrides applied to every endpoint (for sync). */
fhirsync_code cli_config_resolve(const cli_profile *p, fhirsync_config **out, fhirsync_error *err);
/* Route library logs to stderr at the profile's verbosity, as text ("fhirsync: LEVEL: line") or,
 * with --log-format json, one JSON object a line: {"time", "level", "message", "endpoint" when
 * known}. Every line has gone through the library's redaction path. */
void cli_setup_logging(const cli_profile *p);
/* A line of the tool's own on stderr (progress, warnings, errors), in the format set up:
 * text "fhirsync: [ENDPOINT] message" (the endpoint only when `prefix`), or a JSON object with
 * the endpoint. The message goes through fhirsync_redact(). Thread-safe. */
void cli_log(fhirsync_log_level level, const char *endpoint, bool prefix, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The endpoint this thread works for (NULL: none), named in the JSON log lines the library
 * writes from this thread. */
void cli_log_set_thread_endpoint(const char *endpoint);
/* Set the format before cli_setup_logging (the option parser does, so that usage errors found
 * after --log-format json are JSON lines too). */
void cli_log_json_early(bool json);
/* Whether log lines are JSON. */
bool cli_log_is_json(void);
/* Append `s` as a JSON string (quotes and escapes; "null" for NULL) to out[*used..size). */
void cli_json_string(char *out, size_t size, size_t *used, const char *s);
/* "15m", "1h30m", "30s", "2d" into seconds; 0 when malformed. */
long cli_parse_duration(const char *text);
/* The store: --store, else the profile's setting (config, FHIRSYNC_STORE), else the default;
 * with several endpoints and no --endpoint, the store they all share. *owned receives what the
 * caller frees. NULL (err filled) when it cannot be told. */
const char *cli_store_location(const cli_profile *profile, char **owned, fhirsync_error *err);
/* Register in `store` the views a `views` setting lists (comma-separated: shipped, ViewDefinition
 * files, directories of them; none). `verbose`: a line per view on stdout. FHIRSYNC_E_VIEW (the
 * message naming the file) for an invalid view; FHIRSYNC_E_IO for a file that cannot be read. */
fhirsync_code cli_views_register(fhirsync_store *store, const char *setting, bool verbose,
                                 fhirsync_error *err);
/* Print the common options' help. */
void cli_print_common_help(FILE *out);

/* ---- the service's systemd notifications (notify.c) ----------------------------------------- */
/* No-ops without libsystemd at build time or outside a Type=notify unit. The scheduler's thread
 * only. */
void cli_notify_init(void); /* reads the watchdog interval */
void cli_notify_ready(const char *status);
void cli_notify_reloading(void);
void cli_notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_notify_watchdog(void); /* WATCHDOG=1 when half the interval has passed */
void cli_notify_stopping(void);
bool cli_notify_available(void); /* built with libsystemd */

/* ---- the service's metrics and health endpoints (metrics.c) ---------------------------------- */
/* One process-wide registry; every function is thread-safe and a no-op until cli_metrics_start
 * succeeded. */

/* Serve /metrics, /healthz and /readyz on ADDRESS:PORT (127.0.0.1:9464, [::1]:9464; port 0: any
 * free port). A non-loopback address is refused unless `allow_remote`. Logs the URL it serves.
 * 0, or an exit status after a message. */
int cli_metrics_start(const char *address, bool allow_remote);
void cli_metrics_stop(void);
/* The configured endpoints and their stores (a reload calls it again; counters are kept by
 * endpoint name). Copied. */
void cli_metrics_configure(size_t n, const char *const *names, const char *const *stores);
/* The scheduler's loop is alive (/healthz answers 503 when it has not said so for 60 s). */
void cli_metrics_heartbeat(void);
void cli_metrics_run_started(const char *endpoint);
/* A run ended with `rc`; `stats` (may be NULL) what it did. */
void cli_metrics_run_ended(const char *endpoint, fhirsync_code rc,
                           const fhirsync_sync_stats *stats);
/* Resources stored, deleted and quarantined as a run goes (its LOADED events). */
void cli_metrics_loaded(const char *endpoint, int64_t stored, int64_t deleted, int64_t quarantined);
/* When the scheduler will run the endpoint next (epoch seconds). */
void cli_metrics_next_run(const char *endpoint, int64_t epoch);

/* Sub-commands: each lives in its own file, named cmd_<name>.c. */
typedef struct cli_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} cli_command;

int cmd_keygen(int argc, char **argv);
int cmd_jwks(int argc, char **argv);
int cmd_token(int argc, char **argv);
int cmd_doctor(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_get(int argc, char **argv);
int cmd_sync(int argc, char **argv);
int cmd_query(int argc, char **argv);
int cmd_login(int argc, char **argv);
int cmd_view(int argc, char **argv);
int cmd_config(int argc, char **argv);
int cmd_status(int argc, char **argv);
/* `view add|refresh|list|remove` (cmd_view_store.c), and their lines of the usage. */
int cli_view_store(const char *sub, int argc, char **argv);
void cli_view_store_usage(FILE *out);

#endif
