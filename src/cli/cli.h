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
/* Route library logs to stderr at the profile's verbosity. */
void cli_setup_logging(const cli_profile *p);
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
/* `view add|refresh|list|remove` (cmd_view_store.c), and their lines of the usage. */
int cli_view_store(const char *sub, int argc, char **argv);
void cli_view_store_usage(FILE *out);

#endif
