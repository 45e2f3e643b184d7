/* cli/cmd_status.c: `fhirsync status`: where each configured endpoint stands, read from its store
 * (fhirsync_store_status): its state (running, idle, failing, never synced, interrupted), the
 * latest successful run and how long ago, the watermark and its age, the failures since the last
 * success with the latest error on one line, and when the service should run it next (its
 * `every` and the end of its latest run). A table, or one JSON document with --json. Read-only:
 * the stores are opened FHIRSYNC_STORE_READONLY and nothing is created. Uses only the public
 * API. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: fhirsync status [--json] [--every DURATION] [options]\n"
            "\n"
            "Where each configured endpoint (or only --endpoint NAME) stands, from its store:\n"
            "  state          running (a sync runs now), idle (the last run ended ok or\n"
            "                 partial), failing (the last run failed), never (no run yet),\n"
            "                 interrupted (a run recorded as running whose process is gone: the\n"
            "                 next sync resumes it)\n"
            "  last success   when the latest ok or partial run ended, and how long ago\n"
            "  watermark      the server time the next sync starts from, and its age: the\n"
            "                 newest data surely in the store is about that old\n"
            "  failures       failed runs since the last success, and the latest error\n"
            "  next run       the end of the latest run plus the endpoint's `every` (or\n"
            "                 --every), when `sync --every` runs as a service (+-10%% jitter)\n"
            "\n"
            "options:\n"
            "  --json            one JSON document: {\"time\", \"endpoints\": [...]}\n"
            "  --every DURATION  the service's interval for endpoints without an `every`\n"
            "                    setting (15m, 1h), to tell the next run\n"
            "\n"
            "Exit status 0 when every store could be read (whatever the endpoints' states), 3\n"
            "for a configuration error, 13 when a store cannot be read.\n"
            "\n");
    cli_print_common_help(out);
}

/* ---- one endpoint ---------------------------------------------------------------------------- */

typedef struct row {
    const char *name; /* borrowed from the configuration, or own_name */
    char own_name[128];
    bool configured; /* in the configuration (else only in a store) */
    bool found;      /* its store reported it */
    fhirsync_endpoint_state state;
    int64_t last_run_id;
    char last_run_status[16], last_run_mode[32];
    char last_run_started[40], last_run_finished[40], last_run_host[128];
    int64_t last_run_pid, last_run_started_s, last_run_finished_s;
    int64_t last_success_id, last_success_s;
    char last_success[40];
    char watermark[48], watermark_updated[40];
    int64_t watermark_s;
    int64_t failures, last_error_run_id, last_error_s;
    char last_error[600], last_error_at[40];
    long every; /* seconds, 0: unknown */
} row;

#define COPY(dst, src) snprintf((dst), sizeof(dst), "%s", (src) ? (src) : "")

typedef struct rows {
    row *items;
    size_t n, cap;
    bool add_unconfigured; /* report the store's other endpoints too */
    long default_every;
    bool oom;
} rows;

/* The row of `name`: a configured one, or (add_unconfigured) a new one. NULL: not wanted. */
static row *row_of(rows *r, const char *name)
{
    for (size_t i = 0; i < r->n; i++)
        if (!r->items[i].found && strcmp(r->items[i].name, name) == 0)
            return &r->items[i];
    if (!r->add_unconfigured)
        return NULL;
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->items[i].name, name) == 0)
            return NULL; /* reported by another store already */
    if (r->n == r->cap) {
        size_t cap = r->cap * 2 + 8;
        row *grown = realloc(r->items, cap * sizeof *grown);
        if (!grown) {
            r->oom = true;
            return NULL;
        }
        /* names borrowed from own_name moved with their rows */
        for (size_t i = 0; i < r->n; i++)
            if (!grown[i].configured)
                grown[i].name = grown[i].own_name;
        r->items = grown;
        r->cap = cap;
    }
    row *w = &r->items[r->n++];
    memset(w, 0, sizeof *w);
    COPY(w->own_name, name);
    w->name = w->own_name;
    w->every = r->default_every;
    return w;
}

static int take(const fhirsync_endpoint_status *st, void *userdata)
{
    rows *r = userdata;
    row *w = row_of(r, st->endpoint);
    if (w) {
        w->found = true;
        w->state = st->state;
        w->last_run_id = st->last_run_id;
        COPY(w->last_run_status,
             st->last_run_id ? fhirsync_run_status_name(st->last_run_status) : NULL);
        COPY(w->last_run_mode, st->last_run_mode);
        COPY(w->last_run_started, st->last_run_started_at);
        COPY(w->last_run_finished, st->last_run_finished_at);
        COPY(w->last_run_host, st->last_run_host);
        w->last_run_pid = st->last_run_pid;
        w->last_run_started_s = st->last_run_started_s;
        w->last_run_finished_s = st->last_run_finished_s;
        w->last_success_id = st->last_success_id;
        w->last_success_s = st->last_success_s;
        COPY(w->last_success, st->last_success_at);
        COPY(w->watermark, st->watermark);
        COPY(w->watermark_updated, st->watermark_updated_at);
        w->watermark_s = st->watermark_s;
        w->failures = st->consecutive_failures;
        w->last_error_run_id = st->last_error_run_id;
        w->last_error_s = st->last_error_s;
        COPY(w->last_error, st->last_error);
        COPY(w->last_error_at, st->last_error_at);
    }
    return r->oom;
}

static bool is_postgresql(const char *location)
{
    return strncmp(location, "postgresql://", 13) == 0 || strncmp(location, "postgres://", 11) == 0;
}

/* When the service should run it next (epoch seconds), 0 when it cannot be told: running now,
 * no interval, or no run yet (the service runs a new endpoint at once). */
static int64_t next_run(const row *w)
{
    if (!w->found || !w->every || w->state == FHIRSYNC_STATE_RUNNING)
        return 0;
    int64_t ended = w->last_run_finished_s ? w->last_run_finished_s : w->last_run_started_s;
    return ended ? ended + w->every : 0;
}

/* "3m12s", "2h05m", "4d3h"; negative ages (clock skew) as "-5s". */
static const char *span(int64_t seconds, char *buf, size_t size)
{
    const char *sign = seconds < 0 ? "-" : "";
    int64_t s = seconds < 0 ? -seconds : seconds;
    if (s < 60)
        snprintf(buf, size, "%s%llds", sign, (long long)s);
    else if (s < 3600)
        snprintf(buf, size, "%s%lldm%02llds", sign, (long long)(s / 60), (long long)(s % 60));
    else if (s < 86400)
        snprintf(buf, size, "%s%lldh%02lldm", sign, (long long)(s / 3600),
                 (long long)(s % 3600 / 60));
    else
        snprintf(buf, size, "%s%lldd%lldh", sign, (long long)(s / 86400),
                 (long long)(s % 86400 / 3600));
    return buf;
}

static const char *state_text(const row *w)
{
    if (!w->found)
        return "never";
    return fhirsync_endpoint_state_name(w->state);
}

/* ---- output ---------------------------------------------------------------------------------- */

static void print_table(const rows *r, int64_t now)
{
    printf("%-20s %-12s %-26s %-13s %-8s %s\n", "ENDPOINT", "STATE", "LAST SUCCESS",
           "WATERMARK AGE", "FAILURES", "NEXT RUN");
    for (size_t i = 0; i < r->n; i++) {
        const row *w = &r->items[i];
        char success[64] = "-", age[32], wm[32] = "-", next[48] = "-";
        if (w->last_success_s)
            snprintf(success, sizeof success, "%s ago",
                     span(now - w->last_success_s, age, sizeof age));
        if (w->watermark_s)
            span(now - w->watermark_s, wm, sizeof wm);
        int64_t at = next_run(w);
        if (w->found && w->state == FHIRSYNC_STATE_RUNNING)
            snprintf(next, sizeof next, "running now");
        else if (at && at >= now)
            snprintf(next, sizeof next, "in %s", span(at - now, age, sizeof age));
        else if (at)
            snprintf(next, sizeof next, "overdue by %s", span(now - at, age, sizeof age));
        else if (!w->every)
            snprintf(next, sizeof next, "- (no every)");
        printf("%-20s %-12s %-26s %-13s %-8lld %s\n", w->name, state_text(w), success, wm,
               (long long)w->failures, next);
        if (!w->configured)
            printf("  (in the store, not in the configuration)\n");
        if (w->found && w->state == FHIRSYNC_STATE_RUNNING)
            printf("  run %lld (%s) since %s, on %s pid %lld\n", (long long)w->last_run_id,
                   w->last_run_mode[0] ? w->last_run_mode : "?", w->last_run_started,
                   w->last_run_host[0] ? w->last_run_host : "?", (long long)w->last_run_pid);
        if (w->found && w->state == FHIRSYNC_STATE_INTERRUPTED)
            printf("  run %lld started %s on %s pid %lld never finished: its process ended; the "
                   "next sync resumes it\n",
                   (long long)w->last_run_id, w->last_run_started,
                   w->last_run_host[0] ? w->last_run_host : "?", (long long)w->last_run_pid);
        /* the latest error when it is news: after the last success */
        if (w->last_error_run_id && w->last_error_run_id > w->last_success_id)
            printf("  last error (run %lld, %s ago): %s\n", (long long)w->last_error_run_id,
                   w->last_error_s ? span(now - w->last_error_s, age, sizeof age) : "?",
                   w->last_error);
    }
}

/* A string field, or null for "". */
static void json_field(char *out, size_t size, size_t *used, const char *name, const char *value)
{
    *used += (size_t)snprintf(out + *used, size - *used, ",\"%s\":", name);
    cli_json_string(out, size, used, value && *value ? value : NULL);
}

static void json_int(char *out, size_t size, size_t *used, const char *name, int64_t value,
                     bool present)
{
    if (present)
        *used +=
            (size_t)snprintf(out + *used, size - *used, ",\"%s\":%lld", name, (long long)value);
    else
        *used += (size_t)snprintf(out + *used, size - *used, ",\"%s\":null", name);
}

static void instant(int64_t epoch, char *buf, size_t size)
{
    time_t t = (time_t)epoch;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void print_json(const rows *r, int64_t now)
{
    char when[32];
    instant(now, when, sizeof when);
    printf("{\"time\":\"%s\",\"endpoints\":[", when);
    for (size_t i = 0; i < r->n; i++) {
        const row *w = &r->items[i];
        char out[4096];
        size_t used = 0;
        out[0] = '\0';
        used += (size_t)snprintf(out, sizeof out, "{\"endpoint\":");
        cli_json_string(out, sizeof out, &used, w->name);
        used += (size_t)snprintf(out + used, sizeof out - used, ",\"configured\":%s",
                                 w->configured ? "true" : "false");
        json_field(out, sizeof out, &used, "state", state_text(w));
        used += (size_t)snprintf(out + used, sizeof out - used, ",\"last_run\":");
        if (w->last_run_id) {
            used += (size_t)snprintf(out + used, sizeof out - used, "{\"id\":%lld",
                                     (long long)w->last_run_id);
            json_field(out, sizeof out, &used, "status", w->last_run_status);
            json_field(out, sizeof out, &used, "mode", w->last_run_mode);
            json_field(out, sizeof out, &used, "started_at", w->last_run_started);
            json_field(out, sizeof out, &used, "finished_at", w->last_run_finished);
            json_field(out, sizeof out, &used, "host", w->last_run_host);
            json_int(out, sizeof out, &used, "pid", w->last_run_pid, w->last_run_pid != 0);
            used += (size_t)snprintf(out + used, sizeof out - used, "}");
        } else {
            used += (size_t)snprintf(out + used, sizeof out - used, "null");
        }
        json_field(out, sizeof out, &used, "last_success_at", w->last_success);
        json_int(out, sizeof out, &used, "last_success_age_s", now - w->last_success_s,
                 w->last_success_s != 0);
        json_field(out, sizeof out, &used, "watermark", w->watermark);
        json_int(out, sizeof out, &used, "watermark_age_s", now - w->watermark_s,
                 w->watermark_s != 0);
        json_field(out, sizeof out, &used, "watermark_updated_at", w->watermark_updated);
        json_int(out, sizeof out, &used, "consecutive_failures", w->failures, true);
        json_int(out, sizeof out, &used, "last_error_run_id", w->last_error_run_id,
                 w->last_error_run_id != 0);
        json_field(out, sizeof out, &used, "last_error", w->last_error);
        json_field(out, sizeof out, &used, "last_error_at", w->last_error_at);
        json_int(out, sizeof out, &used, "every_s", w->every, w->every != 0);
        int64_t at = next_run(w);
        char next[32] = "";
        if (at)
            instant(at, next, sizeof next);
        json_field(out, sizeof out, &used, "next_run_at", next);
        json_int(out, sizeof out, &used, "next_run_in_s", at - now, at != 0);
        if (used < sizeof out)
            snprintf(out + used, sizeof out - used, "}");
        printf("%s%s", i ? "," : "", out);
    }
    printf("]}\n");
}

/* ---- the command ----------------------------------------------------------------------------- */

int cmd_status(int argc, char **argv)
{
    enum { OPT_JSON = 1, OPT_EVERY };
    static const struct option own[] = {{"json", no_argument, NULL, OPT_JSON},
                                        {"every", required_argument, NULL, OPT_EVERY},
                                        {NULL, 0, NULL, 0}};
    char short_opts[32];
    const struct option *opts = cli_options(own, "", short_opts, sizeof short_opts);
    cli_profile profile = {0};
    bool json = false;
    long default_every = 0;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, short_opts, opts, NULL)) != -1) {
        int handled = cli_profile_option(&profile, opt, optarg, "status");
        if (handled < 0)
            return -handled;
        if (handled)
            continue;
        switch (opt) {
        case OPT_JSON: json = true; break;
        case OPT_EVERY:
            default_every = cli_parse_duration(optarg);
            if (default_every <= 0)
                return cli_usage_error("status",
                                       "--every expects a duration such as 15m, not "
                                       "'%s'",
                                       optarg);
            break;
        case 'h': usage(stdout); return 0;
        default: return cli_bad_option("status", argv);
        }
    }
    if (optind < argc)
        return cli_usage_error("status", "unexpected argument '%s'", argv[optind]);
    cli_setup_logging(&profile);

    fhirsync_config *cfg = NULL;
    fhirsync_error err = {0};
    if (cli_config_resolve(&profile, &cfg, &err) != FHIRSYNC_OK)
        return cli_fail(&err);
    size_t count = fhirsync_config_endpoint_count(cfg);
    rows r = {calloc(count ? count : 1, sizeof(row)),
              0,
              count ? count : 1,
              !profile.endpoint_name,
              default_every,
              false};
    const char **stores = calloc(count ? count : 1, sizeof *stores);
    int rc = 0;
    if (!r.items || !stores) {
        err.code = FHIRSYNC_E_NOMEM;
        snprintf(err.message, sizeof err.message, "out of memory");
        rc = cli_fail(&err);
        goto out;
    }
    for (size_t i = 0; i < count; i++) {
        const fhirsync_endpoint *ep = fhirsync_config_endpoint_at(cfg, i);
        if (profile.endpoint_name && strcmp(profile.endpoint_name, fhirsync_endpoint_name(ep)))
            continue;
        row *w = &r.items[r.n];
        w->name = fhirsync_endpoint_name(ep);
        w->configured = true;
        const char *every = fhirsync_endpoint_get(ep, "every");
        w->every = every ? cli_parse_duration(every) : default_every;
        const char *store = fhirsync_endpoint_get(ep, "store");
        stores[r.n++] = store ? store : FHIRSYNC_STORE_DEFAULT;
    }
    if (profile.endpoint_name && r.n == 0) {
        err.code = FHIRSYNC_E_CONFIG;
        snprintf(err.message, sizeof err.message,
                 "endpoint '%s' is not defined in the configuration", profile.endpoint_name);
        rc = cli_fail(&err);
        goto out;
    }
    /* each distinct store once (the rows of a store's other endpoints come after these) */
    size_t configured = r.n;
    for (size_t i = 0; i < configured && rc == 0; i++) {
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(stores[i], stores[j]) == 0;
        if (seen)
            continue;
        if (!is_postgresql(stores[i]) && access(stores[i], F_OK) != 0 && errno == ENOENT)
            continue; /* no store yet: nothing was ever synced into it */
        fhirsync_store *store = NULL;
        fhirsync_code code = fhirsync_store_open(stores[i], FHIRSYNC_STORE_READONLY, &store, &err);
        if (code == FHIRSYNC_OK)
            code = fhirsync_store_status(store, profile.endpoint_name, take, &r, &err);
        fhirsync_store_close(store);
        if (code == FHIRSYNC_OK && r.oom) {
            code = err.code = FHIRSYNC_E_NOMEM;
            snprintf(err.message, sizeof err.message, "out of memory");
        }
        if (code != FHIRSYNC_OK)
            rc = cli_fail(&err);
    }
    if (rc == 0) {
        int64_t now = (int64_t)time(NULL);
        if (json)
            print_json(&r, now);
        else
            print_table(&r, now);
        fflush(stdout);
    }
out:
    free(r.items);
    free(stores);
    fhirsync_config_free(cfg);
    return rc;
}
