/* config/config.c: endpoint profiles (include/fhirsync/config.h) and the INI files they come from.
 *
 * One table lists every setting with its kind, default, range and help line; every value, from
 * whatever layer (file, environment, command line, application), is validated against it when
 * set and stored in a canonical form together with where it came from, so that the modules that
 * read a profile never see a malformed value and every error can name the setting and its source.
 *
 * The INI file is read with libinih, through a reader of our own that counts lines (this inih
 * calls the handler without a line number), strips leading blanks (so that inih's multi-line
 * continuation never applies: an indented line is an ordinary line), handles section headers
 * itself (inih truncates long section names and cannot report empty sections), reports lines
 * inih could not split, and lets values be longer than inih's fixed line buffer. A configuration
 * may be a directory: its *.ini files are parsed in name order into the one configuration, so
 * endpoint names are unique across them and there is one [defaults]. `[defaults]` is kept apart
 * while parsing, whatever its place, and copied into every endpoint that does not set a value
 * itself once every file is read; it also stays in the config for endpoints added later.
 *
 * A load is strict (the first problem ends it) or checking (fhirsync_config_load_report: every
 * problem goes to a report and parsing goes on; a refused value is left unset and marked, so that
 * the completeness check does not report it missing too). fhirsync_config_check() then looks at
 * the whole: what each endpoint lacks, and stores that would receive two FHIR servers. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ini.h>

#include "config/config_internal.h"
#include "core/core.h"

/* ---- the settings table --------------------------------------------------------------------- */

enum kind {
    K_STRING,   /* any non-empty text without control characters */
    K_URL,      /* absolute http(s) URL without fragment */
    K_PATH,     /* a file path (relative ones in a config file are relative to that file) */
    K_INT,      /* a decimal integer in [min, max] */
    K_ENUM,     /* one of `choices` (case-insensitive, stored as spelled in the table) */
    K_HEADER,   /* "Name: value" */
    K_DURATION, /* 30s, 15m, 1h, 1h30m, 2d */
    K_INSTANT,  /* FHIR instant */
    K_ENVNAME,  /* the name of an environment variable */
    K_JWKS,     /* a file path or an http(s) URL */
    K_TYPES,    /* comma-separated FHIR resource types */
    K_STORE,    /* database path or postgresql:// URL */
    K_SCOPE,    /* space-separated OAuth scope tokens */
    K_FHIR_ID,  /* a FHIR logical id */
    K_VIEWS     /* comma-separated: shipped, none, or ViewDefinition files and directories */
};

typedef struct setting_def {
    const char *name;
    enum kind kind;
    const char *fallback;       /* the default as text; NULL: none, or computed (see below) */
    long min, max;              /* K_INT */
    const char *unit;           /* K_INT: what the number counts, for messages */
    const char *const *choices; /* K_ENUM, NULL-terminated */
    bool repeatable;
    const char *help;
} setting_def;

static const char *const alg_choices[] = {"RS384", "ES384", "RS256", "RS512",
                                          "ES256", "PS384", NULL};
static const char *const vendor_choices[] = {FS_VENDOR_GENERIC, FS_VENDOR_ECW, FS_VENDOR_EPIC,
                                             FS_VENDOR_CERNER, NULL};
static const char *const auth_choices[] = {"private_key_jwt", "client_secret_basic",
                                           "client_secret_post", "none", NULL};
static const char *const flow_choices[] = {"backend", "login", NULL};
static const char *const mode_choices[] = {"bulk", "crawl", NULL};
static const char *const yes_no[] = {"yes", "no", NULL};

/* `vendor` (detected from base_url) and `rate_limit` (250 for eClinicalWorks, else 0) have
 * computed defaults: see default_text(). */
/* clang-format off */
static const setting_def settings[] = {
    {.name = "base_url", .kind = K_URL, .help = "FHIR base URL of the endpoint (required)"},
    {.name = "client_id", .kind = K_STRING,
     .help = "client id the EHR issued to this app (required)"},
    {.name = "key_file", .kind = K_PATH,
     .help = "private key for the client assertion (PEM or JWK file, mode 0600)"},
    {.name = "alg", .kind = K_ENUM, .choices = alg_choices,
     .help = "signing algorithm: RS384 ES384 RS256 RS512 ES256 PS384 (default: from the key)"},
    {.name = "kid", .kind = K_STRING,
     .help = "key id for the assertion header (default: the key's RFC 7638 thumbprint)"},
    {.name = "jku", .kind = K_URL,
     .help = "JWKS URL for the assertion header (only if the key was registered by URL)"},
    {.name = "scope", .kind = K_SCOPE,
     .help = "scopes to request (default system/*.read; with auth = login, "
             "'" FS_LOGIN_DEFAULT_SCOPE "')"},
    {.name = "token_url", .kind = K_URL,
     .help = "token endpoint (default: from .well-known/smart-configuration)"},
    {.name = "vendor", .kind = K_ENUM, .choices = vendor_choices,
     .help = "generic, eclinicalworks, epic or cerner (default: guessed from base_url)"},
    {.name = "header", .kind = K_HEADER, .repeatable = true,
     .help = "extra 'Name: value' header on FHIR requests, repeatable (e.g. Epic-Client-ID)"},
    {.name = "auth_method", .kind = K_ENUM, .choices = auth_choices,
     .help = "private_key_jwt, client_secret_basic, client_secret_post or none (a public client, "
             "auth = login only) (default private_key_jwt; with auth = login, none)"},
    {.name = "client_secret_file", .kind = K_PATH,
     .help = "file holding the client secret, mode 0600 (client_secret_* methods)"},
    {.name = "client_secret_env", .kind = K_ENVNAME,
     .help = "name of an environment variable holding the client secret"},
    {.name = "assertion_lifetime", .kind = K_INT, .fallback = "300", .min = 10, .max = 300,
     .unit = "seconds", .help = "seconds a client assertion is valid, 10..300 (default 300)"},
    {.name = "ca_file", .kind = K_PATH,
     .help = "extra CA bundle to trust (certificates are always verified)"},
    {.name = "connect_timeout", .kind = K_INT, .fallback = "10", .min = 1, .max = 600,
     .unit = "seconds", .help = "connect timeout in seconds (default 10)"},
    {.name = "timeout", .kind = K_INT, .fallback = "120", .min = 1, .max = 86400,
     .unit = "seconds", .help = "timeout of one request in seconds (default 120)"},
    {.name = "max_retries", .kind = K_INT, .fallback = "5", .min = 0, .max = 20,
     .unit = "retries", .help = "retries of a failed request, 0..20 (default 5)"},
    {.name = "retry_cap", .kind = K_INT, .fallback = "300", .min = 1, .max = 86400,
     .unit = "seconds", .help = "longest wait before a retry, in seconds (default 300)"},
    {.name = "rate_limit", .kind = K_INT, .min = 0, .max = 100000, .unit = "requests per minute",
     .help = "requests per minute, 0 = no limit (default 0; 250 for eClinicalWorks)"},
    {.name = "registered_jwks", .kind = K_JWKS,
     .help = "the JWKS registered with the EHR (file or https URL), checked by doctor"},
    {.name = "group_id", .kind = K_FHIR_ID, .help = "Group to export (bulk mode)"},
    {.name = "types", .kind = K_TYPES,
     .help = "resource types to sync, comma-separated "
             "(default: bulk, every type the export offers when the scopes read every type; "
             "crawl, the US Core types the scopes allow)"},
    {.name = "mode", .kind = K_ENUM, .choices = mode_choices,
     .help = "bulk (Bulk Data export) or crawl (paged search) (default bulk; with auth = login, "
             "crawl)"},
    {.name = "store", .kind = K_STORE, .fallback = "fhirsync.db",
     .help = "SQLite database path or postgresql:// URL (default fhirsync.db)"},
    {.name = "every", .kind = K_DURATION,
     .help = "interval between syncs, such as 15m, 1h or 30s"},
    {.name = "reconcile_every", .kind = K_INT, .fallback = "24", .min = 0, .max = 100000,
     .unit = "runs",
     .help = "every Nth sync is a full export (bulk) or crawl that deletes what the server no "
             "longer has, 0 = only first runs and --full (default 24)"},
    {.name = "max_delete_share", .kind = K_INT, .fallback = "50", .min = 1, .max = 100,
     .unit = "percent",
     .help = "reconciliation deletes at most this share of a type's rows in one run unless "
             "--allow-mass-delete, 1..100 (default 50)"},
    {.name = "since", .kind = K_INSTANT,
     .help = "sync changes since this FHIR instant instead of the stored watermark"},
    {.name = "max_body", .kind = K_INT, .fallback = "67108864", .min = 1024, .max = 1073741824,
     .unit = "bytes", .help = "largest FHIR response held in memory, bytes (default 64 MiB)"},
    {.name = "parallel", .kind = K_INT, .fallback = "4", .min = 1, .max = 32,
     .unit = "downloads", .help = "parallel downloads, 1..32 (default 4)"},
    {.name = "delete_job", .kind = K_ENUM, .fallback = "yes", .choices = yes_no,
     .help = "yes or no: delete the export job on the server when done (default yes)"},
    {.name = "shared_store", .kind = K_ENUM, .fallback = "no", .choices = yes_no,
     .help = "yes or no: share the store with endpoints of other base URLs that are the same "
             "server (default no: refused, ids of two servers collide)"},
    {.name = "auth", .kind = K_ENUM, .fallback = "backend", .choices = flow_choices,
     .help = "backend (SMART Backend Services, client_credentials) or login (a person authorizes "
             "once with 'fhirsync login'; refresh tokens after that) (default backend)"},
    {.name = "redirect_uri", .kind = K_URL,
     .help = "auth = login: the registered redirect URI (default http://127.0.0.1:PORT/callback, "
             "a loopback listener on a free port)"},
    {.name = "redirect_port", .kind = K_INT, .min = 1, .max = 65535, .unit = "port",
     .help = "auth = login: the loopback listener's port when the EHR registered a fixed one "
             "(default: a free port)"},
    {.name = "views", .kind = K_VIEWS, .fallback = "shipped",
     .help = "SQL on FHIR views the sync keeps as tables in the store, comma-separated: shipped "
             "(the US Core views installed with fhirsync), ViewDefinition files or directories "
             "of them, or none (default shipped)"},
    {.name = "credentials_file", .kind = K_PATH,
     .help = "auth = login: where 'fhirsync login' keeps the refresh token, mode 0600 (default "
             "$XDG_STATE_HOME/fhirsync/ENDPOINT.credentials, ~/.local/state/fhirsync/...)"},
};
/* clang-format on */

enum { SETTING_COUNT = sizeof settings / sizeof *settings };

/* The same names, in the same order, for fhirsync_setting_names(). */
/* clang-format off */
static const char *const setting_names[] = {
    "base_url", "client_id", "key_file", "alg", "kid", "jku", "scope", "token_url", "vendor",
    "header", "auth_method", "client_secret_file", "client_secret_env", "assertion_lifetime",
    "ca_file", "connect_timeout", "timeout", "max_retries", "retry_cap", "rate_limit",
    "registered_jwks", "group_id", "types", "mode", "store", "every", "reconcile_every",
    "max_delete_share", "since", "max_body",
    "parallel", "delete_job", "shared_store", "auth", "redirect_uri", "redirect_port",
    "views", "credentials_file", NULL};
/* clang-format on */

_Static_assert(sizeof setting_names / sizeof *setting_names == SETTING_COUNT + 1,
               "setting_names must list every setting of the table");

#define MAX_VALUE 4096       /* longest value of any setting */
#define MAX_LINE 8192        /* longest line of a config file */
#define MAX_FILE (16L << 20) /* largest config file: some 50,000 endpoints */
#define MAX_NAME 64          /* longest endpoint name */
#define MAX_SECRET 4096      /* largest client secret */

static const setting_def *find_setting(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < SETTING_COUNT; i++)
        if (strcmp(settings[i].name, name) == 0)
            return &settings[i];
    return NULL;
}

static size_t setting_index(const setting_def *def)
{
    return (size_t)(def - settings);
}

bool fs_setting_known(const char *setting)
{
    return find_setting(setting) != NULL;
}

const char *const *fhirsync_setting_names(void)
{
    return setting_names;
}

const char *fhirsync_setting_help(const char *setting)
{
    const setting_def *def = find_setting(setting);
    return def ? def->help : NULL;
}

/* ---- profiles ------------------------------------------------------------------------------- */

typedef struct setting_value {
    char *text;
    char *source;
} setting_value;

typedef struct slot {
    setting_value *items;
    size_t count;
} slot;

struct fhirsync_endpoint {
    char *name;
    /* file and line of its [endpoint NAME] header; NULL and 0 when not from a file */
    char *file;
    int line;
    /* settings whose value a checking load refused (bit i: settings[i]), so that a check does
     * not report them missing as well */
    uint64_t refused;
    slot slots[SETTING_COUNT];
};

_Static_assert(SETTING_COUNT <= 64, "fhirsync_endpoint.refused has a bit per setting");

struct fhirsync_config {
    fhirsync_endpoint **endpoints;
    size_t count, cap;
    fhirsync_endpoint *defaults; /* what every endpoint inherits; its file and line are those of
                                    the [defaults] header (line 0: none) */
    /* the endpoints by name, so that hundreds load and are found without a quadratic search:
     * open addressing, a slot holds an index into `endpoints` plus 1 (0: empty); the size is a
     * power of two at least twice the count */
    size_t *by_name;
    size_t by_name_size;
};

static void slot_clear(slot *s)
{
    for (size_t i = 0; i < s->count; i++) {
        fs_free(s->items[i].text);
        fs_free(s->items[i].source);
    }
    fs_free(s->items);
    s->items = NULL;
    s->count = 0;
}

/* Add a value, taking ownership of text and source (freed on failure). `replace` drops the values
 * the slot had. False on out of memory, the slot unchanged. */
static bool slot_add(slot *s, char *text, char *source, bool replace)
{
    if (replace && s->count > 0) {
        for (size_t i = 0; i < s->count; i++) {
            fs_free(s->items[i].text);
            fs_free(s->items[i].source);
        }
        s->items[0] = (setting_value){text, source};
        s->count = 1;
        return true;
    }
    setting_value *grown = fs_realloc(s->items, (s->count + 1) * sizeof *grown);
    if (!grown) {
        fs_free(text);
        fs_free(source);
        return false;
    }
    s->items = grown;
    s->items[s->count++] = (setting_value){text, source};
    return true;
}

/* Deep copy of src into the empty dst; false on out of memory (dst left empty). */
static bool slot_copy(slot *dst, const slot *src)
{
    for (size_t i = 0; i < src->count; i++) {
        char *text = fs_strdup(src->items[i].text);
        char *source = fs_strdup(src->items[i].source);
        bool added = text && source && slot_add(dst, text, source, false);
        if (!added) {
            if (!text || !source) { /* slot_add, when called, frees both itself */
                fs_free(text);
                fs_free(source);
            }
            slot_clear(dst);
            return false;
        }
    }
    return true;
}

static const setting_value *last_value(const fhirsync_endpoint *ep, const setting_def *def)
{
    const slot *s = &ep->slots[setting_index(def)];
    return s->count ? &s->items[s->count - 1] : NULL;
}

static const char *explicit_text(const fhirsync_endpoint *ep, const char *setting)
{
    const setting_value *v = last_value(ep, find_setting(setting));
    return v ? v->text : NULL;
}

fhirsync_endpoint *fhirsync_endpoint_new(const char *name)
{
    if (!name)
        return NULL;
    fhirsync_endpoint *ep = fs_calloc(1, sizeof *ep);
    if (!ep)
        return NULL;
    ep->name = fs_strdup(name);
    if (!ep->name) {
        fs_free(ep);
        return NULL;
    }
    return ep;
}

void fhirsync_endpoint_free(fhirsync_endpoint *ep)
{
    if (!ep)
        return;
    for (size_t i = 0; i < SETTING_COUNT; i++)
        slot_clear(&ep->slots[i]);
    fs_free(ep->name);
    fs_free(ep->file);
    fs_free(ep);
}

/* A copy of src's values under another name. NULL on out of memory. */
static fhirsync_endpoint *endpoint_copy(const fhirsync_endpoint *src, const char *name)
{
    fhirsync_endpoint *ep = fhirsync_endpoint_new(name);
    if (!ep)
        return NULL;
    ep->line = src->line;
    ep->refused = src->refused;
    if (src->file && !(ep->file = fs_strdup(src->file))) {
        fhirsync_endpoint_free(ep);
        return NULL;
    }
    for (size_t i = 0; i < SETTING_COUNT; i++) {
        if (!slot_copy(&ep->slots[i], &src->slots[i])) {
            fhirsync_endpoint_free(ep);
            return NULL;
        }
    }
    return ep;
}

fhirsync_endpoint *fhirsync_endpoint_dup(const fhirsync_endpoint *ep)
{
    return ep ? endpoint_copy(ep, ep->name) : NULL;
}

const char *fhirsync_endpoint_name(const fhirsync_endpoint *ep)
{
    return ep ? ep->name : NULL;
}

/* ---- vendors -------------------------------------------------------------------------------- */

bool fs_config_url_host(const char *url, char *host, size_t size)
{
    if (!url || !host || size == 0)
        return false;
    const char *p;
    if (strncasecmp(url, "https://", 8) == 0)
        p = url + 8;
    else if (strncasecmp(url, "http://", 7) == 0)
        p = url + 7;
    else
        return false;
    size_t auth_len = strcspn(p, "/?#");
    const char *at = memchr(p, '@', auth_len);
    if (at) {
        auth_len -= (size_t)(at + 1 - p);
        p = at + 1;
    }
    size_t host_len;
    if (auth_len > 0 && p[0] == '[') {
        const char *close = memchr(p, ']', auth_len);
        if (!close)
            return false;
        p++;
        host_len = (size_t)(close - p);
    } else {
        const char *colon = memchr(p, ':', auth_len);
        host_len = colon ? (size_t)(colon - p) : auth_len;
    }
    if (host_len == 0 || host_len >= size)
        return false;
    for (size_t i = 0; i < host_len; i++)
        host[i] = (char)tolower((unsigned char)p[i]);
    host[host_len] = '\0';
    return true;
}

/* Whether host is `domain` or a subdomain of it. */
static bool host_in(const char *host, const char *domain)
{
    size_t hl = strlen(host), dl = strlen(domain);
    if (hl == dl)
        return strcmp(host, domain) == 0;
    return hl > dl && host[hl - dl - 1] == '.' && strcmp(host + hl - dl, domain) == 0;
}

const char *fs_vendor_detect(const char *base_url)
{
    char host[256];
    if (!base_url || !fs_config_url_host(base_url, host, sizeof host))
        return FS_VENDOR_GENERIC;
    if (host_in(host, "eclinicalworks.com") || host_in(host, "healow.com"))
        return FS_VENDOR_ECW;
    if (host_in(host, "epic.com"))
        return FS_VENDOR_EPIC;
    if (host_in(host, "cerner.com") || strstr(host, "oraclecloud"))
        return FS_VENDOR_CERNER;
    if (strcasestr(base_url, "/api/FHIR/R4") || strcasestr(base_url, "interconnect"))
        return FS_VENDOR_EPIC;
    return FS_VENDOR_GENERIC;
}

bool fs_vendor_patient_facing_host(const char *url)
{
    char host[256];
    return fs_config_url_host(url, host, sizeof host) && host_in(host, "healow.com");
}

const char *fs_endpoint_vendor(const fhirsync_endpoint *ep)
{
    if (!ep)
        return FS_VENDOR_GENERIC;
    const char *vendor = explicit_text(ep, "vendor");
    return vendor ? vendor : fs_vendor_detect(explicit_text(ep, "base_url"));
}

/* The default of a setting for this profile, or NULL when it has none. */
static const char *default_text(const fhirsync_endpoint *ep, const setting_def *def)
{
    if (strcmp(def->name, "vendor") == 0)
        return fs_endpoint_vendor(ep);
    if (strcmp(def->name, "rate_limit") == 0)
        return strcmp(fs_endpoint_vendor(ep), FS_VENDOR_ECW) == 0 ? "250" : "0";
    /* a person's login (auth = login): a public client by default, the standalone-launch scopes,
     * and a crawl (user-level access rarely allows $export) */
    bool login = fs_streq(explicit_text(ep, "auth"), "login");
    if (strcmp(def->name, "auth_method") == 0)
        return login ? "none" : "private_key_jwt";
    if (strcmp(def->name, "scope") == 0)
        return login ? FS_LOGIN_DEFAULT_SCOPE : "system/*.read";
    if (strcmp(def->name, "mode") == 0)
        return login ? "crawl" : "bulk";
    return def->fallback;
}

/* ---- reading a profile ---------------------------------------------------------------------- */

const char *fhirsync_endpoint_get(const fhirsync_endpoint *ep, const char *setting)
{
    const setting_def *def = find_setting(setting);
    if (!ep || !def)
        return NULL;
    const setting_value *v = last_value(ep, def);
    return v ? v->text : default_text(ep, def);
}

const char *fhirsync_endpoint_source(const fhirsync_endpoint *ep, const char *setting)
{
    const setting_def *def = find_setting(setting);
    if (!ep || !def)
        return NULL;
    const setting_value *v = last_value(ep, def);
    if (v)
        return v->source;
    return default_text(ep, def) ? "default" : NULL;
}

size_t fhirsync_endpoint_count(const fhirsync_endpoint *ep, const char *setting)
{
    const setting_def *def = find_setting(setting);
    return ep && def ? ep->slots[setting_index(def)].count : 0;
}

const char *fhirsync_endpoint_get_at(const fhirsync_endpoint *ep, const char *setting, size_t i)
{
    const setting_def *def = find_setting(setting);
    if (!ep || !def || i >= ep->slots[setting_index(def)].count)
        return NULL;
    return ep->slots[setting_index(def)].items[i].text;
}

void fhirsync_endpoint_clear(fhirsync_endpoint *ep, const char *setting)
{
    const setting_def *def = find_setting(setting);
    if (ep && def)
        slot_clear(&ep->slots[setting_index(def)]);
}

bool fs_config_parse_duration(const char *text, long *seconds)
{
    if (!text || !*text)
        return false;
    long total = 0;
    const char *p = text;
    while (*p) {
        if (!isdigit((unsigned char)*p))
            return false;
        long n = 0;
        while (isdigit((unsigned char)*p)) {
            n = n * 10 + (*p++ - '0');
            if (n > 100000000L)
                return false;
        }
        long unit;
        switch (*p++) {
        case 's': unit = 1; break;
        case 'm': unit = 60; break;
        case 'h': unit = 3600; break;
        case 'd': unit = 86400; break;
        default: return false;
        }
        total += n * unit;
        if (total > 366L * 86400)
            return false;
    }
    if (total < 1)
        return false;
    if (seconds)
        *seconds = total;
    return true;
}

long fs_endpoint_long(const fhirsync_endpoint *ep, const char *setting)
{
    const setting_def *def = find_setting(setting);
    const char *text = fhirsync_endpoint_get(ep, setting);
    long number = 0;
    if (!def || !text)
        return 0;
    if (def->kind == K_INT && fs_parse_long(text, &number))
        return number;
    if (def->kind == K_DURATION && fs_config_parse_duration(text, &number))
        return number;
    return 0;
}

bool fs_endpoint_login(const fhirsync_endpoint *ep)
{
    return fs_streq(fhirsync_endpoint_get(ep, "auth"), "login");
}

bool fs_endpoint_bool(const fhirsync_endpoint *ep, const char *setting)
{
    return fs_streq(fhirsync_endpoint_get(ep, setting), "yes");
}

/* ---- validating values ---------------------------------------------------------------------- */

/* Where a value comes from: what fhirsync_endpoint_source() reports and messages name, whether
 * from a config file (which may not hold secrets), and that file's directory (empty, or ending
 * in '/'), against which relative paths are resolved. */
typedef struct origin {
    const char *source;
    bool from_file;
    const char *base_dir;
    size_t base_dir_len;
} origin;

/* A value as shown in a message: printable ASCII, at most 60 characters. */
static const char *shown(const char *text, char *buf, size_t size)
{
    size_t n = 0, i = 0;
    for (; text[i] && n + 4 < size && i < 60; i++) {
        unsigned char c = (unsigned char)text[i];
        buf[n++] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
    }
    if (text[i] && n + 4 < size) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
    return buf;
}

static fhirsync_code bad_value(fhirsync_error *err, const origin *o, const setting_def *def,
                               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static fhirsync_code bad_value(fhirsync_error *err, const origin *o, const setting_def *def,
                               const char *fmt, ...)
{
    char text[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    return fs_err(err, FHIRSYNC_E_CONFIG, "%s: %s %s", o->source, def->name, text);
}

static fhirsync_code no_memory(fhirsync_error *err)
{
    return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
}

/* What is wrong with an absolute http(s) URL, or NULL when nothing. */
static const char *url_problem(const char *url)
{
    const char *p;
    if (strncasecmp(url, "https://", 8) == 0)
        p = url + 8;
    else if (strncasecmp(url, "http://", 7) == 0)
        p = url + 7;
    else
        return "must be an absolute URL starting with https://";
    for (const char *c = url; *c; c++) {
        unsigned char ch = (unsigned char)*c;
        if (ch <= 0x20 || ch >= 0x7f)
            return "contains a space, control or non-ASCII character (percent-encode it)";
        if (ch == '#')
            return "must not have a fragment ('#...')";
    }
    size_t auth_len = strcspn(p, "/?");
    if (memchr(p, '@', auth_len))
        return "must not contain a user name or password";
    if (auth_len == 0)
        return "has no host";
    size_t i = 0;
    if (p[0] == '[') {
        for (i = 1; i < auth_len && (isxdigit((unsigned char)p[i]) || p[i] == ':' || p[i] == '.');
             i++)
            ;
        if (i == 1 || i >= auth_len || p[i] != ']')
            return "has a malformed IPv6 host";
        i++;
    } else {
        for (; i < auth_len &&
               (isalnum((unsigned char)p[i]) || p[i] == '-' || p[i] == '.' || p[i] == '_');
             i++)
            ;
        if (i == 0)
            return "has no host";
    }
    if (i < auth_len) {
        if (p[i] != ':')
            return "has a character not allowed in a host name";
        long port = 0;
        size_t digits = 0;
        for (i++; i < auth_len && isdigit((unsigned char)p[i]) && digits < 6; i++, digits++)
            port = port * 10 + (p[i] - '0');
        if (i < auth_len || digits == 0 || port < 1 || port > 65535)
            return "has a malformed port";
    }
    return NULL;
}

static bool is_tchar(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Headers the transport manages, or that would carry a secret in the config. */
static const char *const reserved_headers[] = {
    "Authorization",  "Proxy-Authorization", "Cookie",     "Host",
    "Content-Length", "Transfer-Encoding",   "Connection", NULL};

static fhirsync_code check_header(const char *text, const origin *o, const setting_def *def,
                                  char **out, fhirsync_error *err)
{
    char show[80];
    size_t name_len = 0;
    while (is_tchar((unsigned char)text[name_len]))
        name_len++;
    const char *colon = text + name_len;
    if (name_len == 0 || *colon != ':')
        return bad_value(err, o, def,
                         "must look like 'Name: value' (e.g. 'Epic-Client-ID: 0f3a...'), not '%s'",
                         shown(text, show, sizeof show));
    for (size_t i = 0; reserved_headers[i]; i++)
        if (strlen(reserved_headers[i]) == name_len &&
            strncasecmp(text, reserved_headers[i], name_len) == 0)
            return bad_value(err, o, def,
                             "cannot set %s (fhirsync manages that header itself, and secrets "
                             "never go in settings)",
                             reserved_headers[i]);
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    if (!*v)
        return bad_value(err, o, def, "'%.*s' has no value", (int)name_len, text);
    size_t size = name_len + 2 + strlen(v) + 1;
    char *canonical = fs_malloc(size);
    if (!canonical)
        return no_memory(err);
    snprintf(canonical, size, "%.*s: %s", (int)name_len, text, v);
    *out = canonical;
    return FHIRSYNC_OK;
}

static fhirsync_code check_types(const char *text, const origin *o, const setting_def *def,
                                 char **out, fhirsync_error *err)
{
    char show[80];
    fs_buf b;
    fs_buf_init(&b);
    const char *p = text;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *start = p;
        if (!isupper((unsigned char)*p))
            goto bad;
        while (isalpha((unsigned char)*p))
            p++;
        size_t len = (size_t)(p - start);
        while (*p == ' ' || *p == '\t')
            p++;
        if ((b.len && !fs_buf_append(&b, ",", 1)) || !fs_buf_append(&b, start, len)) {
            fs_buf_free(&b);
            return no_memory(err);
        }
        if (*p == '\0')
            break;
        if (*p++ != ',')
            goto bad;
    }
    *out = fs_buf_steal(&b);
    return FHIRSYNC_OK;
bad:
    fs_buf_free(&b);
    return bad_value(err, o, def,
                     "must be a comma-separated list of FHIR resource types such as "
                     "Patient,Observation, not '%s'",
                     shown(text, show, sizeof show));
}

static fhirsync_code check_scope(const char *text, const origin *o, const setting_def *def,
                                 char **out, fhirsync_error *err)
{
    /* RFC 6749 section 3.3: scope-tokens of %x21 / %x23-5B / %x5D-7E separated by spaces;
     * runs of blanks are collapsed to one space. */
    char *canonical = fs_malloc(strlen(text) + 1);
    if (!canonical)
        return no_memory(err);
    size_t n = 0;
    for (const char *p = text; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == ' ' || c == '\t') {
            if (n && canonical[n - 1] != ' ')
                canonical[n++] = ' ';
            continue;
        }
        if (c < 0x21 || c > 0x7e || c == '"' || c == '\\') {
            fs_free(canonical);
            return bad_value(err, o, def,
                             "has a character not allowed in an OAuth scope (byte 0x%02x)", c);
        }
        canonical[n++] = (char)c;
    }
    while (n && canonical[n - 1] == ' ')
        n--;
    canonical[n] = '\0';
    *out = canonical;
    return FHIRSYNC_OK;
}

/* A path as stored: relative paths from a config file are made relative to the file's folder. */
static fhirsync_code resolve_path(const char *text, const origin *o, char **out,
                                  fhirsync_error *err)
{
    bool relative = text[0] != '/' && o->base_dir_len > 0;
    size_t len = strlen(text);
    char *path = fs_malloc((relative ? o->base_dir_len : 0) + len + 1);
    if (!path)
        return no_memory(err);
    size_t n = 0;
    if (relative) {
        memcpy(path, o->base_dir, o->base_dir_len);
        n = o->base_dir_len;
    }
    memcpy(path + n, text, len + 1);
    *out = path;
    return FHIRSYNC_OK;
}

/* `views`: items separated by commas (blanks around them ignored); `none` alone, `shipped`, or
 * paths (relative ones in a config file are relative to it). Canonical: "item,item". */
static fhirsync_code check_views(const char *text, const origin *o, const setting_def *def,
                                 char **out, fhirsync_error *err)
{
    fs_buf b;
    fs_buf_init(&b);
    size_t items = 0;
    bool none = false;
    fhirsync_code rc = FHIRSYNC_OK;
    for (const char *p = text; rc == FHIRSYNC_OK && *p;) {
        size_t n = strcspn(p, ",");
        const char *start = p, *end = p + n;
        p = *end ? end + 1 : end;
        while (start < end && isspace((unsigned char)*start))
            start++;
        while (end > start && isspace((unsigned char)end[-1]))
            end--;
        if (start == end)
            continue;
        char *item = fs_strndup(start, (size_t)(end - start));
        char *resolved = NULL;
        if (!item) {
            rc = no_memory(err);
            break;
        }
        items++;
        if (strcmp(item, "none") == 0)
            none = true;
        else if (strcmp(item, "shipped") == 0)
            resolved = fs_strdup(item);
        else
            rc = resolve_path(item, o, &resolved, err);
        if (rc == FHIRSYNC_OK && !none && !resolved)
            rc = no_memory(err);
        if (rc == FHIRSYNC_OK && resolved && !fs_buf_printf(&b, "%s%s", b.len ? "," : "", resolved))
            rc = no_memory(err);
        fs_free(item);
        fs_free(resolved);
    }
    if (rc == FHIRSYNC_OK && none && items > 1)
        rc = bad_value(err, o, def, "none cannot be combined with other views");
    if (rc == FHIRSYNC_OK && items == 0)
        rc = bad_value(err, o, def, "must list views (shipped, files, directories) or be none");
    if (rc == FHIRSYNC_OK && !(*out = none ? fs_strdup("none") : fs_buf_steal(&b)))
        rc = no_memory(err);
    fs_buf_free(&b);
    return rc;
}

static bool is_postgres_url(const char *text)
{
    return strncasecmp(text, "postgresql://", 13) == 0 || strncasecmp(text, "postgres://", 11) == 0;
}

/* Whether a PostgreSQL URL or keyword string carries a password. */
static bool store_has_password(const char *text)
{
    if (strcasestr(text, "password="))
        return true;
    if (!is_postgres_url(text))
        return false;
    const char *p = strstr(text, "://") + 3;
    size_t auth_len = strcspn(p, "/?");
    const char *at = NULL;
    for (size_t i = 0; i < auth_len; i++)
        if (p[i] == '@')
            at = p + i;
    return at && memchr(p, ':', (size_t)(at - p)) != NULL;
}

/* Validate `text` (already trimmed, non-empty) for `def`; *out is its canonical form. */
static fhirsync_code check_kind(const setting_def *def, const char *text, const origin *o,
                                char **out, fhirsync_error *err)
{
    char show[80];
    const char *problem;
    switch (def->kind) {
    case K_STRING: break;
    case K_URL:
        if ((problem = url_problem(text)))
            return bad_value(err, o, def, "%s: '%s'", problem, shown(text, show, sizeof show));
        break;
    case K_PATH:
        if (strncmp(text, "-----BEGIN", 10) == 0 || text[0] == '{')
            return bad_value(err, o, def,
                             "must be the path of a file, not the file's content (keep keys and "
                             "secrets in files readable only by you)");
        return resolve_path(text, o, out, err);
    case K_INT: {
        long number;
        bool digits = true;
        for (const char *p = text + (text[0] == '-'); *p; p++)
            digits = digits && isdigit((unsigned char)*p);
        if (!digits || !fs_parse_long(text, &number) || number < def->min || number > def->max)
            return bad_value(err, o, def, "must be a whole number from %ld to %ld (%s), not '%s'",
                             def->min, def->max, def->unit, shown(text, show, sizeof show));
        char buf[32];
        snprintf(buf, sizeof buf, "%ld", number);
        *out = fs_strdup(buf);
        return *out ? FHIRSYNC_OK : no_memory(err);
    }
    case K_ENUM: {
        for (size_t i = 0; def->choices[i]; i++) {
            if (strcasecmp(text, def->choices[i]) == 0) {
                *out = fs_strdup(def->choices[i]);
                return *out ? FHIRSYNC_OK : no_memory(err);
            }
        }
        char list[256] = "";
        for (size_t i = 0; def->choices[i]; i++) {
            size_t used = strlen(list);
            snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", def->choices[i]);
        }
        return bad_value(err, o, def, "must be one of %s, not '%s'", list,
                         shown(text, show, sizeof show));
    }
    case K_HEADER: return check_header(text, o, def, out, err);
    case K_DURATION:
        if (!fs_config_parse_duration(text, NULL))
            return bad_value(err, o, def,
                             "must be a duration such as 30s, 15m, 1h or 1h30m (at most 366d), "
                             "not '%s'",
                             shown(text, show, sizeof show));
        break;
    case K_INSTANT: {
        int64_t epoch;
        if (!fs_parse_instant(text, &epoch))
            return bad_value(err, o, def,
                             "must be a FHIR instant such as 2024-01-31T00:00:00Z, not '%s'",
                             shown(text, show, sizeof show));
        break;
    }
    case K_ENVNAME: {
        bool ok = isalpha((unsigned char)text[0]) || text[0] == '_';
        for (const char *p = text; *p && ok; p++)
            ok = isalnum((unsigned char)*p) || *p == '_';
        if (!ok || strlen(text) > 128)
            return bad_value(err, o, def,
                             "must be the name of an environment variable (letters, digits, '_') "
                             "that holds the client secret, not the secret itself");
        break;
    }
    case K_JWKS:
        if (strstr(text, "://")) {
            if ((problem = url_problem(text)))
                return bad_value(err, o, def, "%s: '%s'", problem, shown(text, show, sizeof show));
            break;
        }
        return resolve_path(text, o, out, err);
    case K_TYPES: return check_types(text, o, def, out, err);
    case K_VIEWS: return check_views(text, o, def, out, err);
    case K_STORE:
        if (o->from_file && store_has_password(text))
            return bad_value(err, o, def,
                             "must not contain a database password in the config file (use "
                             "~/.pgpass or the PGPASSWORD variable)");
        if (is_postgres_url(text) || strchr(text, '=') || strcmp(text, ":memory:") == 0 ||
            strncmp(text, "file:", 5) == 0)
            break;
        return resolve_path(text, o, out, err);
    case K_SCOPE: return check_scope(text, o, def, out, err);
    case K_FHIR_ID: {
        size_t len = strlen(text);
        bool ok = len <= 64;
        for (const char *p = text; *p && ok; p++)
            ok = isalnum((unsigned char)*p) || *p == '-' || *p == '.';
        if (!ok)
            return bad_value(err, o, def,
                             "must be a FHIR id (letters, digits, '-' and '.', at most 64), "
                             "not '%s'",
                             shown(text, show, sizeof show));
        break;
    }
    }
    *out = fs_strdup(text);
    return *out ? FHIRSYNC_OK : no_memory(err);
}

static fhirsync_code check_value(const setting_def *def, const char *raw, const origin *o,
                                 char **out, fhirsync_error *err)
{
    *out = NULL;
    const char *start = raw;
    while (*start == ' ' || *start == '\t')
        start++;
    size_t len = strlen(start);
    while (len && (start[len - 1] == ' ' || start[len - 1] == '\t'))
        len--;
    if (len == 0)
        return bad_value(err, o, def, "has an empty value%s",
                         o->from_file ? " (remove the line to use the default)" : "");
    if (len > MAX_VALUE)
        return bad_value(err, o, def, "is too long (at most %d characters)", MAX_VALUE);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)start[i] < 0x20 || start[i] == 0x7f)
            return bad_value(err, o, def, "must not contain control characters (such as CR or LF)");
    char *text = fs_strndup(start, len);
    if (!text)
        return no_memory(err);
    fhirsync_code rc = check_kind(def, text, o, out, err);
    fs_free(text);
    return rc;
}

/* ---- unknown settings ----------------------------------------------------------------------- */

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return 99;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            char ca = (char)tolower((unsigned char)a[i - 1]);
            char cb = (char)tolower((unsigned char)b[j - 1]);
            if (ca == '-')
                ca = '_';
            size_t best = diag + (ca != cb);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* Names people reach for, and the setting they mean. */
static const struct {
    const char *name;
    const char *setting;
} name_hints[] = {{"key", "key_file"},
                  {"private_key", "key_file"},
                  {"base", "base_url"},
                  {"fhir_base", "base_url"},
                  {"fhir_base_url", "base_url"},
                  {"url", "base_url"},
                  {"token_endpoint", "token_url"},
                  {"group", "group_id"},
                  {"resource_types", "types"},
                  {"interval", "every"}};

static bool looks_like_secret(const char *name)
{
    char lower[MAX_NAME + 1];
    size_t n = 0;
    for (; name[n] && n < MAX_NAME; n++)
        lower[n] = (char)tolower((unsigned char)name[n]);
    lower[n] = '\0';
    return strstr(lower, "secret") || strstr(lower, "password") || strstr(lower, "passwd") ||
           strstr(lower, "api_key") || strstr(lower, "apikey") || strstr(lower, "credential") ||
           (strstr(lower, "token") && !strstr(lower, "url") && !strstr(lower, "endpoint"));
}

static fhirsync_code unknown_setting(fhirsync_error *err, const char *source, const char *name)
{
    char show[80];
    shown(name, show, sizeof show);
    for (size_t i = 0; i < sizeof name_hints / sizeof *name_hints; i++)
        if (strcasecmp(name, name_hints[i].name) == 0)
            return fs_err(err, FHIRSYNC_E_CONFIG, "%s: unknown setting '%s' (did you mean '%s'?)",
                          source, show, name_hints[i].setting);
    if (looks_like_secret(name))
        return fs_err(err, FHIRSYNC_E_CONFIG,
                      "%s: '%s' is not a setting: secrets never go in the config file or in "
                      "settings. Put the client secret in a file only you can read and set "
                      "client_secret_file to its path, or set client_secret_env to the name of an "
                      "environment variable that holds it",
                      source, show);
    const char *best = NULL;
    size_t best_distance = 3;
    for (size_t i = 0; i < SETTING_COUNT; i++) {
        size_t d = edit_distance(name, settings[i].name);
        if (d < best_distance) {
            best_distance = d;
            best = settings[i].name;
        }
    }
    if (best)
        return fs_err(err, FHIRSYNC_E_CONFIG, "%s: unknown setting '%s' (did you mean '%s'?)",
                      source, show, best);
    return fs_err(err, FHIRSYNC_E_CONFIG, "%s: unknown setting '%s'", source, show);
}

/* ---- setting values ------------------------------------------------------------------------- */

static fhirsync_code set_setting(fhirsync_endpoint *ep, const setting_def *def, const char *text,
                                 const origin *o, fhirsync_error *err)
{
    char *canonical = NULL;
    fhirsync_code rc = check_value(def, text, o, &canonical, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    char *source = fs_strdup(o->source);
    if (!source) {
        fs_free(canonical);
        return no_memory(err);
    }
    if (!slot_add(&ep->slots[setting_index(def)], canonical, source, !def->repeatable))
        return no_memory(err);
    return FHIRSYNC_OK;
}

fhirsync_code fhirsync_endpoint_set(fhirsync_endpoint *ep, const char *setting, const char *value,
                                    const char *source, fhirsync_error *err)
{
    if (!ep || !setting || !value)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_endpoint_set: NULL argument");
    origin o = {.source = source ? source : "set by the application"};
    const setting_def *def = find_setting(setting);
    if (!def)
        return unknown_setting(err, o.source, setting);
    return set_setting(ep, def, value, &o, err);
}

fhirsync_code fhirsync_endpoint_apply_env(fhirsync_endpoint *ep, fhirsync_error *err)
{
    if (!ep)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_endpoint_apply_env: NULL endpoint");
    for (size_t i = 0; i < SETTING_COUNT; i++) {
        const setting_def *def = &settings[i];
        char var[96], source[128];
        size_t n = (size_t)snprintf(var, sizeof var, "FHIRSYNC_%s", def->name);
        for (size_t c = 0; c < n; c++)
            var[c] = (char)toupper((unsigned char)var[c]);
        const char *env = getenv(var);
        if (!env || !*env)
            continue; /* an empty variable counts as unset */
        snprintf(source, sizeof source, "environment %s", var);
        origin o = {.source = source};
        if (!def->repeatable) {
            fhirsync_code rc = set_setting(ep, def, env, &o, err);
            if (rc != FHIRSYNC_OK)
                return rc;
            continue;
        }
        /* one value a line; the variable replaces what earlier layers gave */
        char *copy = fs_strdup(env);
        if (!copy)
            return no_memory(err);
        fhirsync_endpoint_clear(ep, def->name);
        fhirsync_code rc = FHIRSYNC_OK;
        for (char *line = copy, *next; line && rc == FHIRSYNC_OK; line = next) {
            next = strchr(line, '\n');
            if (next)
                *next++ = '\0';
            size_t len = strlen(line);
            if (len && line[len - 1] == '\r')
                line[--len] = '\0';
            if (strspn(line, " \t") == len)
                continue;
            rc = set_setting(ep, def, line, &o, err);
        }
        fs_free(copy);
        if (rc != FHIRSYNC_OK)
            return rc;
    }
    return FHIRSYNC_OK;
}

/* ---- completeness and the client secret ----------------------------------------------------- */

static fhirsync_code missing(fhirsync_error *err, const fhirsync_endpoint *ep, const char *what,
                             const char *setting)
{
    char var[96], flag[96];
    snprintf(var, sizeof var, "FHIRSYNC_%s", setting);
    snprintf(flag, sizeof flag, "--%s", setting);
    for (char *c = var; *c; c++)
        *c = (char)toupper((unsigned char)*c);
    for (char *c = flag; *c; c++)
        if (*c == '_')
            *c = '-';
    return fs_err(err, FHIRSYNC_E_CONFIG,
                  "no %s: set %s in [endpoint %s] of the config file, %s, or %s", what, setting,
                  ep->name, var, flag);
}

/* Receives each problem that completeness() finds, with the setting it is about; returns false
 * to stop at this one. */
typedef bool (*problem_sink)(void *user, const char *setting, const fhirsync_error *e);

static uint64_t setting_bit(const char *setting)
{
    const setting_def *def = find_setting(setting);
    return def ? (uint64_t)1 << setting_index(def) : 0;
}

/* Whether to go on after looking for a required setting: it is there, or it was refused (and
 * reported) already, or `found` was told and wants more. */
static bool require(const fhirsync_endpoint *ep, uint64_t refused, const char *setting,
                    const char *what, problem_sink found, void *user)
{
    if (explicit_text(ep, setting) || (refused & setting_bit(setting)))
        return true;
    fhirsync_error e;
    missing(&e, ep, what, setting);
    return found(user, setting, &e);
}

/* What a profile needs to get a token, each missing piece handed to `found`. Settings whose bit
 * is in `refused` (a value the file had but that was refused, already reported) are not reported
 * missing again, nor is what depends on them. */
static void completeness(const fhirsync_endpoint *ep, uint64_t refused, problem_sink found,
                         void *user)
{
    fhirsync_error e;
    if (!require(ep, refused, "base_url", "FHIR base URL", found, user) ||
        !require(ep, refused, "client_id", "client id", found, user))
        return;
    if (refused & (setting_bit("auth_method") | setting_bit("auth")))
        return;
    const char *method = fhirsync_endpoint_get(ep, "auth_method");
    if (strcmp(method, "none") == 0) {
        if (!fs_endpoint_login(ep)) {
            fs_err(&e, FHIRSYNC_E_CONFIG,
                   "auth_method none (%s) is a public client, which only a person's login can "
                   "use: set auth = login in [endpoint %s], or a key or secret",
                   fhirsync_endpoint_source(ep, "auth_method"), ep->name);
            found(user, "auth_method", &e);
        }
        return;
    }
    if (strcmp(method, "private_key_jwt") == 0) {
        require(ep, refused, "key_file", "private key", found, user);
        return;
    }
    const char *file = explicit_text(ep, "client_secret_file");
    const char *env = explicit_text(ep, "client_secret_env");
    if (refused & (setting_bit("client_secret_file") | setting_bit("client_secret_env")))
        return;
    if (file && env) {
        fs_err(&e, FHIRSYNC_E_CONFIG,
               "both client_secret_file (%s) and client_secret_env (%s) are set for "
               "[endpoint %s]; set only one",
               fhirsync_endpoint_source(ep, "client_secret_file"),
               fhirsync_endpoint_source(ep, "client_secret_env"), ep->name);
        found(user, "client_secret_env", &e);
    } else if (!file && !env) {
        fs_err(&e, FHIRSYNC_E_CONFIG,
               "auth_method %s needs a client secret (set client_secret_file to a file only you "
               "can read, or client_secret_env to the name of an environment variable holding "
               "it, in [endpoint %s] of the config file, FHIRSYNC_CLIENT_SECRET_FILE or "
               "FHIRSYNC_CLIENT_SECRET_ENV, or --client-secret-file or --client-secret-env)",
               method, ep->name);
        found(user, "client_secret_file", &e);
    }
}

static bool keep_first(void *user, const char *setting, const fhirsync_error *e)
{
    (void)setting;
    *(fhirsync_error *)user = *e;
    return false;
}

fhirsync_code fhirsync_endpoint_validate(const fhirsync_endpoint *ep, fhirsync_error *err)
{
    if (!ep)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_endpoint_validate: NULL endpoint");
    fhirsync_error first = {.code = FHIRSYNC_OK};
    completeness(ep, 0, keep_first, &first);
    if (first.code != FHIRSYNC_OK && err)
        *err = first;
    return first.code;
}

static fhirsync_code read_secret_file(const char *path, char **out, fhirsync_error *err)
{
    fhirsync_code rc = FHIRSYNC_OK;
    char *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return fs_err(err, FHIRSYNC_E_IO, "client secret file %s cannot be opened (%s)", path,
                      strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = fs_err(err, FHIRSYNC_E_IO, "client secret file %s cannot be examined (%s)", path,
                    strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = fs_err(err, FHIRSYNC_E_IO, "client secret file %s is not a regular file", path);
        goto out;
    }
    if (st.st_mode & 077) {
        rc = fs_err(err, FHIRSYNC_E_KEY_PERMS,
                    "client secret file %s is accessible by group or others (mode %04o); "
                    "run: chmod 600 %s",
                    path, (unsigned)(st.st_mode & 07777), path);
        goto out;
    }
    buf = fs_malloc(MAX_SECRET + 2);
    if (!buf) {
        rc = no_memory(err);
        goto out;
    }
    size_t len = 0;
    while (len < MAX_SECRET + 1) {
        ssize_t got = read(fd, buf + len, MAX_SECRET + 1 - len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rc = fs_err(err, FHIRSYNC_E_IO, "client secret file %s cannot be read (%s)", path,
                        strerror(errno));
            goto out;
        }
        if (got == 0)
            break;
        len += (size_t)got;
    }
    if (len > MAX_SECRET) {
        rc = fs_err(err, FHIRSYNC_E_CONFIG,
                    "client secret file %s is larger than %d bytes: it should hold only the "
                    "secret",
                    path, MAX_SECRET);
        goto out;
    }
    if (len && buf[len - 1] == '\n')
        len--;
    if (len && buf[len - 1] == '\r')
        len--;
    buf[len] = '\0';
    if (len == 0 || memchr(buf, '\0', len)) {
        rc = fs_err(err, FHIRSYNC_E_CONFIG, "client secret file %s is %s", path,
                    len ? "not text (it contains a NUL byte)" : "empty");
        goto out;
    }
    *out = buf;
    buf = NULL;
out:
    fs_free_wipe(buf, MAX_SECRET + 2);
    close(fd);
    return rc;
}

static fhirsync_code client_secret(const fhirsync_endpoint *ep, char **out, fhirsync_error *err)
{
    if (out)
        *out = NULL;
    if (!ep || !out)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_endpoint_client_secret: NULL argument");
    const char *file = explicit_text(ep, "client_secret_file");
    const char *env = explicit_text(ep, "client_secret_env");
    if (file && env)
        return fs_err(err, FHIRSYNC_E_CONFIG,
                      "both client_secret_file (%s) and client_secret_env (%s) are set for "
                      "[endpoint %s]; set only one",
                      fhirsync_endpoint_source(ep, "client_secret_file"),
                      fhirsync_endpoint_source(ep, "client_secret_env"), ep->name);
    if (file)
        return read_secret_file(file, out, err);
    if (!env)
        return fs_err(err, FHIRSYNC_E_CONFIG,
                      "no client secret source for [endpoint %s] (set client_secret_file or "
                      "client_secret_env)",
                      ep->name);
    const char *secret = getenv(env);
    if (!secret || !*secret)
        return fs_err(err, FHIRSYNC_E_CONFIG,
                      "client_secret_env (%s) names the environment variable %s, which is %s",
                      fhirsync_endpoint_source(ep, "client_secret_env"), env,
                      secret ? "empty" : "not set");
    if (strlen(secret) > MAX_SECRET)
        return fs_err(err, FHIRSYNC_E_CONFIG,
                      "the environment variable %s (client_secret_env) is longer than %d bytes",
                      env, MAX_SECRET);
    *out = fs_strdup(secret);
    return *out ? FHIRSYNC_OK : no_memory(err);
}

fhirsync_code fhirsync_endpoint_client_secret(const fhirsync_endpoint *ep, char **out,
                                              fhirsync_error *err)
{
    /* a live secret from the moment it exists: masked by value wherever it would appear, until
     * fhirsync_free_secret() releases it */
    fhirsync_code rc = client_secret(ep, out, err);
    if (rc == FHIRSYNC_OK && !fs_secret_register(*out)) {
        fs_free_secret(*out);
        *out = NULL;
        rc = no_memory(err);
    }
    return rc;
}

/* ---- configurations ------------------------------------------------------------------------- */

fhirsync_config *fhirsync_config_new(void)
{
    fhirsync_config *cfg = fs_calloc(1, sizeof *cfg);
    if (!cfg)
        return NULL;
    cfg->defaults = fhirsync_endpoint_new("defaults");
    if (!cfg->defaults) {
        fs_free(cfg);
        return NULL;
    }
    return cfg;
}

void fhirsync_config_free(fhirsync_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->count; i++)
        fhirsync_endpoint_free(cfg->endpoints[i]);
    fs_free(cfg->endpoints);
    fs_free(cfg->by_name);
    fhirsync_endpoint_free(cfg->defaults);
    fs_free(cfg);
}

size_t fhirsync_config_endpoint_count(const fhirsync_config *cfg)
{
    return cfg ? cfg->count : 0;
}

fhirsync_endpoint *fhirsync_config_endpoint_at(const fhirsync_config *cfg, size_t i)
{
    return cfg && i < cfg->count ? cfg->endpoints[i] : NULL;
}

/* FNV-1a */
static size_t name_hash(const char *name)
{
    uint64_t h = 14695981039346656037ULL;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return (size_t)h;
}

static void by_name_insert(size_t *slots, size_t size, const char *name, size_t index)
{
    size_t h = name_hash(name) & (size - 1);
    while (slots[h])
        h = (h + 1) & (size - 1);
    slots[h] = index + 1;
}

fhirsync_endpoint *fhirsync_config_endpoint(const fhirsync_config *cfg, const char *name)
{
    if (!cfg || !name || cfg->by_name_size == 0)
        return NULL;
    size_t mask = cfg->by_name_size - 1;
    for (size_t h = name_hash(name) & mask; cfg->by_name[h]; h = (h + 1) & mask) {
        fhirsync_endpoint *ep = cfg->endpoints[cfg->by_name[h] - 1];
        if (strcmp(ep->name, name) == 0)
            return ep;
    }
    return NULL;
}

/* Append ep (whose name no other endpoint of cfg has) to cfg, which then owns it; false on out of
 * memory (ep not taken, cfg unchanged but for spare room). */
static bool config_append(fhirsync_config *cfg, fhirsync_endpoint *ep)
{
    if ((cfg->count + 1) * 2 > cfg->by_name_size) {
        size_t size = cfg->by_name_size ? cfg->by_name_size * 2 : 16;
        size_t *slots = fs_calloc(size, sizeof *slots);
        if (!slots)
            return false;
        for (size_t i = 0; i < cfg->count; i++)
            by_name_insert(slots, size, cfg->endpoints[i]->name, i);
        fs_free(cfg->by_name);
        cfg->by_name = slots;
        cfg->by_name_size = size;
    }
    if (cfg->count == cfg->cap) {
        fhirsync_endpoint **grown = fs_array_grow(cfg->endpoints, &cfg->cap, sizeof *grown, 4);
        if (!grown)
            return false;
        cfg->endpoints = grown;
    }
    by_name_insert(cfg->by_name, cfg->by_name_size, ep->name, cfg->count);
    cfg->endpoints[cfg->count++] = ep;
    return true;
}

fhirsync_code fhirsync_config_add_endpoint(fhirsync_config *cfg, const char *name,
                                           fhirsync_endpoint **out, fhirsync_error *err)
{
    if (out)
        *out = NULL;
    if (!cfg || !name)
        return fs_err(err, FHIRSYNC_E_ARG, "adding an endpoint needs a configuration and a name");
    if (fhirsync_config_endpoint(cfg, name))
        return fs_err(err, FHIRSYNC_E_CONFIG, "endpoint '%s' exists already", name);
    fhirsync_endpoint *ep = endpoint_copy(cfg->defaults, name);
    if (!ep)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    fs_free(ep->file);
    ep->file = NULL;
    ep->line = 0;
    if (!config_append(cfg, ep)) {
        fhirsync_endpoint_free(ep);
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    if (out)
        *out = ep;
    return FHIRSYNC_OK;
}

/* ---- reports -------------------------------------------------------------------------------- */

struct fhirsync_config_report {
    fhirsync_config_problem *items;
    size_t count, cap;
    size_t errors;
};

fhirsync_config_report *fhirsync_config_report_new(void)
{
    return fs_calloc(1, sizeof(fhirsync_config_report));
}

static void problem_free(fhirsync_config_problem *p)
{
    fs_free((char *)p->file);
    fs_free((char *)p->endpoint);
    fs_free((char *)p->setting);
    fs_free((char *)p->source);
    fs_free((char *)p->message);
}

void fhirsync_config_report_free(fhirsync_config_report *report)
{
    if (!report)
        return;
    for (size_t i = 0; i < report->count; i++)
        problem_free(&report->items[i]);
    fs_free(report->items);
    fs_free(report);
}

size_t fhirsync_config_report_count(const fhirsync_config_report *report)
{
    return report ? report->count : 0;
}

const fhirsync_config_problem *fhirsync_config_report_at(const fhirsync_config_report *report,
                                                         size_t i)
{
    return report && i < report->count ? &report->items[i] : NULL;
}

size_t fhirsync_config_report_errors(const fhirsync_config_report *report)
{
    return report ? report->errors : 0;
}

/* Copy of s, or NULL for NULL; *ok goes false when the copy fails. */
static char *dup_or_null(const char *s, bool *ok)
{
    if (!s)
        return NULL;
    char *copy = fs_strdup(s);
    if (!copy)
        *ok = false;
    return copy;
}

/* Append a problem. `message` may start with "SOURCE: " (as the library's errors do): that
 * prefix goes, since the report keeps the location apart. */
static fhirsync_code report_push(fhirsync_config_report *r, fhirsync_config_severity severity,
                                 fhirsync_code code, const char *file, int line,
                                 const char *endpoint, const char *setting, const char *source,
                                 const char *message)
{
    size_t source_len = source ? strlen(source) : 0;
    if (source_len && strncmp(message, source, source_len) == 0 &&
        strncmp(message + source_len, ": ", 2) == 0)
        message += source_len + 2;
    if (r->count == r->cap) {
        fhirsync_config_problem *grown = fs_array_grow(r->items, &r->cap, sizeof *grown, 8);
        if (!grown)
            return FHIRSYNC_E_NOMEM;
        r->items = grown;
    }
    bool ok = true;
    fhirsync_config_problem p = {.severity = severity, .code = code, .line = line};
    p.file = dup_or_null(file, &ok);
    p.endpoint = dup_or_null(endpoint, &ok);
    p.setting = dup_or_null(setting, &ok);
    p.source = dup_or_null(source, &ok);
    p.message = dup_or_null(message, &ok);
    if (!ok) {
        problem_free(&p);
        return FHIRSYNC_E_NOMEM;
    }
    r->items[r->count++] = p;
    if (severity == FHIRSYNC_CONFIG_ERROR)
        r->errors++;
    return FHIRSYNC_OK;
}

/* Split a value's source into file and line when it is "FILE:LINE" (what a file gives); false
 * for "environment ...", "command line ..." and the like. */
static bool source_file_line(const char *source, char *file, size_t size, int *line)
{
    const char *colon = source ? strrchr(source, ':') : NULL;
    if (!colon || colon == source || !colon[1] ||
        strspn(colon + 1, "0123456789") != strlen(colon + 1))
        return false;
    long number;
    if (!fs_parse_long(colon + 1, &number) || number < 1 || number > 100000000L)
        return false;
    size_t len = (size_t)(colon - source);
    if (len >= size)
        return false;
    memcpy(file, source, len);
    file[len] = '\0';
    *line = (int)number;
    return true;
}

fhirsync_code fhirsync_config_report_add(fhirsync_config_report *report,
                                         const fhirsync_endpoint *ep, const char *setting,
                                         fhirsync_config_severity severity, fhirsync_code code,
                                         const char *message)
{
    if (!report || !message)
        return FHIRSYNC_E_ARG;
    const setting_def *def = find_setting(setting);
    const setting_value *v = ep && def ? last_value(ep, def) : NULL;
    char file[4096], where[4200];
    const char *source = NULL;
    int line = 0;
    bool in_file = false;
    if (v) {
        source = v->source;
        in_file = source_file_line(source, file, sizeof file, &line);
    } else if (ep && ep->file && strlen(ep->file) < sizeof file) {
        snprintf(file, sizeof file, "%s", ep->file);
        line = ep->line;
        in_file = true;
        snprintf(where, sizeof where, "%s:%d", file, line);
        source = where;
    }
    return report_push(report, severity, code, in_file ? file : NULL, line, ep ? ep->name : NULL,
                       setting, source, message);
}

/* ---- parsing INI text ----------------------------------------------------------------------- */

typedef struct parse_ctx {
    fhirsync_config *cfg;
    /* a checking load: every problem goes here and parsing goes on (NULL: stop at the first) */
    fhirsync_config_report *report;
    fhirsync_endpoint *scratch; /* checking: where a refused section's settings are checked */
    const char *name;           /* the file's name, for messages and sources */
    size_t dir_len;             /* length of its directory part, '/' included (0: none) */
    const char *pos, *end;      /* what is left to read */
    int lineno;                 /* the line last handed to inih */
    const char *raw;            /* that line (leading blanks skipped) and its length */
    size_t raw_len;
    bool long_line;            /* inih got only the start of it (see read_line) */
    fhirsync_endpoint *target; /* where the current section's settings go */
    const char *section_name;  /* the endpoint the current section is about, for the report */
    bool in_section;           /* a section header has been seen */
    const char *section_kind;  /* "endpoint" or "defaults", for messages */
    bool failed;               /* stop: the first error of a strict load, or out of memory */
    int err_line;
    fhirsync_error e;
} parse_ctx;

/* A problem on the current line, about `setting` (may be NULL) of the current section; e's
 * message starts with "FILE:LINE: ". A strict load keeps the first and stops; a checking load
 * adds it to the report and goes on. Out of memory stops both. */
static void parse_error(parse_ctx *ctx, const fhirsync_error *e, const char *setting)
{
    if (ctx->failed)
        return;
    if (ctx->report && e->code != FHIRSYNC_E_NOMEM) {
        if (ctx->target)
            ctx->target->refused |= setting_bit(setting);
        char source[4200];
        snprintf(source, sizeof source, "%s:%d", ctx->name, ctx->lineno);
        if (report_push(ctx->report, FHIRSYNC_CONFIG_ERROR, e->code, ctx->name, ctx->lineno,
                        ctx->section_name, setting, source, e->message) == FHIRSYNC_OK)
            return;
        fs_err(&ctx->e, FHIRSYNC_E_NOMEM, "out of memory");
    } else {
        ctx->e = *e;
    }
    ctx->failed = true;
    ctx->err_line = ctx->lineno;
}

static void parse_fail(parse_ctx *ctx, fhirsync_code code, const char *setting, const char *fmt,
                       ...) __attribute__((format(printf, 4, 5)));

/* parse_error() with "FILE:LINE: message". */
static void parse_fail(parse_ctx *ctx, fhirsync_code code, const char *setting, const char *fmt,
                       ...)
{
    if (ctx->failed)
        return;
    char text[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    fhirsync_error e;
    fs_err(&e, code, "%s:%d: %s", ctx->name, ctx->lineno, text);
    parse_error(ctx, &e, setting);
}

/* inih's rule for where text ends: at one of `chars`, or at an inline ';' comment (a ';' after
 * a blank). Returns the offset of that character, or len. */
static size_t find_end(const char *s, size_t len, const char *chars)
{
    bool was_space = false;
    size_t i = 0;
    for (; i < len; i++) {
        if ((chars && strchr(chars, s[i])) || (was_space && s[i] == ';'))
            break;
        was_space = isspace((unsigned char)s[i]);
    }
    return i;
}

static bool valid_endpoint_name(const char *name, size_t len)
{
    if (len == 0 || len > MAX_NAME)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)name[i]) && !strchr("-_.", name[i]))
            return false;
    return true;
}

/* A checking load: the section that starts here is refused (the header's problem is reported);
 * its settings are still checked, into a scratch profile kept nowhere. A strict load has
 * stopped already. */
static void refuse_section(parse_ctx *ctx, const char *endpoint)
{
    if (!ctx->report)
        return;
    fhirsync_endpoint_free(ctx->scratch);
    ctx->scratch = fhirsync_endpoint_new(endpoint ? endpoint : "");
    if (!ctx->scratch) {
        parse_fail(ctx, FHIRSYNC_E_NOMEM, NULL, "out of memory");
        return;
    }
    ctx->in_section = true;
    ctx->target = ctx->scratch;
    ctx->section_name = endpoint ? ctx->scratch->name : NULL;
}

/* "the first is on line 3" within one file, "the first is at other.ini:3" across files */
static const char *first_place(const parse_ctx *ctx, const char *file, int line, char *buf,
                               size_t size)
{
    if (file && strcmp(file, ctx->name) == 0)
        snprintf(buf, size, "on line %d", line);
    else
        snprintf(buf, size, "at %s:%d", file ? file : "?", line);
    return buf;
}

static void defaults_section(parse_ctx *ctx)
{
    fhirsync_endpoint *defaults = ctx->cfg->defaults;
    char place[4200];
    if (defaults->line) {
        parse_fail(ctx, FHIRSYNC_E_CONFIG, NULL,
                   "a second [defaults] section (the first is %s); merge them",
                   first_place(ctx, defaults->file, defaults->line, place, sizeof place));
        refuse_section(ctx, NULL);
        ctx->section_kind = "defaults";
        return;
    }
    fs_free(defaults->file);
    if (!(defaults->file = fs_strdup(ctx->name))) {
        parse_fail(ctx, FHIRSYNC_E_NOMEM, NULL, "out of memory");
        return;
    }
    defaults->line = ctx->lineno;
    ctx->target = defaults;
    ctx->section_name = NULL;
    ctx->section_kind = "defaults";
}

static void endpoint_section(parse_ctx *ctx, const char *name, size_t name_len)
{
    char show[80];
    char name_buf[MAX_NAME + 1];
    ctx->section_kind = "endpoint";
    if (name_len == 0) {
        parse_fail(ctx, FHIRSYNC_E_CONFIG, NULL, "[endpoint] needs a name: [endpoint NAME]");
        refuse_section(ctx, NULL);
        return;
    }
    if (!valid_endpoint_name(name, name_len)) {
        snprintf(name_buf, sizeof name_buf, "%.*s",
                 (int)(name_len > MAX_NAME ? MAX_NAME : name_len), name);
        parse_fail(ctx, FHIRSYNC_E_CONFIG, NULL,
                   "bad endpoint name '%s': use at most %d letters, digits, '-', '_' or '.'",
                   shown(name_buf, show, sizeof show), MAX_NAME);
        refuse_section(ctx, NULL);
        return;
    }
    memcpy(name_buf, name, name_len);
    name_buf[name_len] = '\0';
    const fhirsync_endpoint *existing = fhirsync_config_endpoint(ctx->cfg, name_buf);
    if (existing) {
        char place[4200];
        refuse_section(ctx, name_buf); /* the problem is about that endpoint */
        parse_fail(ctx, FHIRSYNC_E_CONFIG, NULL, "duplicate endpoint '%s' (already defined %s)",
                   name_buf, first_place(ctx, existing->file, existing->line, place, sizeof place));
        return;
    }
    fhirsync_endpoint *ep = fhirsync_endpoint_new(name_buf);
    if (!ep || !(ep->file = fs_strdup(ctx->name)) || !config_append(ctx->cfg, ep)) {
        fhirsync_endpoint_free(ep);
        parse_fail(ctx, FHIRSYNC_E_NOMEM, NULL, "out of memory");
        return;
    }
    ep->line = ctx->lineno;
    ctx->target = ep;
    ctx->section_name = ep->name;
}

/* A "[...]" line: start a section. */
static void section_line(parse_ctx *ctx, const char *line, size_t len)
{
    char show[80];
    ctx->in_section = true;
    ctx->target = NULL;
    ctx->section_name = NULL;
    size_t close = 1 + find_end(line + 1, len - 1, "]");
    if (close >= len || line[close] != ']') {
        parse_fail(ctx, FHIRSYNC_E_CONFIG, NULL, "section header without a closing ']'");
        refuse_section(ctx, NULL);
        return;
    }
    size_t after = close + 1;
    while (after < len && isspace((unsigned char)line[after]))
        after++;
    if (after < len && line[after] != ';' && line[after] != '#') {
        parse_fail(ctx, FHIRSYNC_E_CONFIG, NULL, "unexpected text after the section header");
        refuse_section(ctx, NULL);
        return;
    }
    const char *inner = line + 1;
    size_t inner_len = close - 1;
    while (inner_len && isspace((unsigned char)*inner)) {
        inner++;
        inner_len--;
    }
    while (inner_len && isspace((unsigned char)inner[inner_len - 1]))
        inner_len--;
    if (inner_len == 8 && strncasecmp(inner, "defaults", 8) == 0) {
        defaults_section(ctx);
        return;
    }
    if (inner_len >= 8 && strncasecmp(inner, "endpoint", 8) == 0 &&
        (inner_len == 8 || isspace((unsigned char)inner[8]))) {
        const char *name = inner + 8;
        size_t name_len = inner_len - 8;
        while (name_len && isspace((unsigned char)*name)) {
            name++;
            name_len--;
        }
        endpoint_section(ctx, name, name_len);
        return;
    }
    char section[MAX_NAME + 1];
    snprintf(section, sizeof section, "%.*s", (int)(inner_len > MAX_NAME ? MAX_NAME : inner_len),
             inner);
    parse_fail(ctx, FHIRSYNC_E_CONFIG, NULL,
               "unknown section [%s]: expected [endpoint NAME] or [defaults]",
               shown(section, show, sizeof show));
    refuse_section(ctx, NULL);
}

/* inih's line reader. Hands inih one line at a time, counting lines; section headers are turned
 * into comments after being handled here, and so are lines inih could not split into a name and
 * a value (reported here, so that a checking load reports every one of them); a line longer than
 * inih's buffer is handed over cut short (the name is at its start) and its value is taken from
 * the whole line by the handler. */
static char *read_line(char *str, int num, void *stream)
{
    parse_ctx *ctx = stream;
    if (ctx->pos >= ctx->end || num < 8)
        return NULL;
    const char *start = ctx->pos;
    const char *nl = memchr(start, '\n', (size_t)(ctx->end - start));
    const char *stop = nl ? nl : ctx->end;
    ctx->pos = nl ? nl + 1 : ctx->end;
    ctx->lineno++;
    if (ctx->lineno == 1 && stop - start >= 3 && memcmp(start, "\xEF\xBB\xBF", 3) == 0)
        start += 3;
    while (start < stop &&
           (*start == ' ' || *start == '\t' || *start == '\r' || *start == '\f' || *start == '\v'))
        start++;
    size_t len = (size_t)(stop - start);
    ctx->raw = start;
    ctx->raw_len = len;
    ctx->long_line = false;
    const char *give = start;
    size_t give_len = len;
    if (len > (size_t)num - 2)
        give_len = (size_t)num - 2;
    if (ctx->failed) {
        give = ";"; /* nothing more to learn from the rest */
        give_len = 1;
    } else if (memchr(start, '\0', len)) {
        parse_fail(ctx, FHIRSYNC_E_CONFIG, NULL, "the line contains a NUL byte (not a text file?)");
        give = ";";
        give_len = 1;
    } else if (len > MAX_LINE) {
        parse_fail(ctx, FHIRSYNC_E_CONFIG, NULL, "the line is longer than %d characters", MAX_LINE);
        give = ";";
        give_len = 1;
    } else if (len && *start == '[') {
        section_line(ctx, start, len);
        give = ";";
        give_len = 1;
    } else if (len && *start != ';' && *start != '#' &&
               find_end(give, give_len, "=:") == give_len) {
        /* inih would refuse it too, but tell only the first such line */
        parse_fail(ctx, FHIRSYNC_E_CONFIG, NULL,
                   "cannot parse this line: expected '[section]' or 'name = value'");
        give = ";";
        give_len = 1;
    } else if (give_len < len) {
        ctx->long_line = true;
    }
    memcpy(str, give, give_len);
    str[give_len] = '\n';
    str[give_len + 1] = '\0';
    return str;
}

/* The value of a name=value line, by inih's rules, from the whole line (for long lines). */
static char *whole_value(const char *line, size_t len)
{
    size_t i = find_end(line, len, "=:");
    if (i < len)
        i++;
    while (i < len && isspace((unsigned char)line[i]))
        i++;
    size_t stop = i + find_end(line + i, len - i, NULL);
    while (stop > i && isspace((unsigned char)line[stop - 1]))
        stop--;
    return fs_strndup(line + i, stop - i);
}

static int handle_pair(void *user, const char *section, const char *name, const char *val)
{
    parse_ctx *ctx = user;
    (void)section; /* sections are tracked by read_line */
    if (ctx->failed)
        return 1;
    if (!ctx->in_section) {
        parse_fail(ctx, FHIRSYNC_E_CONFIG, name,
                   "setting '%s' outside any section: put it under [endpoint NAME] or [defaults]",
                   name);
        return 1;
    }
    if (!ctx->target)
        return 1;
    if (!val) {
        parse_fail(ctx, FHIRSYNC_E_CONFIG, name, "%s has no value", name);
        return 1;
    }
    char source[4200];
    snprintf(source, sizeof source, "%s:%d", ctx->name, ctx->lineno);
    const setting_def *def = find_setting(name);
    fhirsync_error e;
    if (!def) {
        unknown_setting(&e, source, name);
        parse_error(ctx, &e, name);
        return 1;
    }
    const setting_value *previous = last_value(ctx->target, def);
    if (previous && !def->repeatable) {
        bool in_defaults = strcmp(ctx->section_kind, "defaults") == 0;
        parse_fail(ctx, FHIRSYNC_E_CONFIG, def->name,
                   "%s is given twice in [%s%s%s] (first at %s); only header may repeat", name,
                   ctx->section_kind, in_defaults ? "" : " ", in_defaults ? "" : ctx->target->name,
                   previous->source);
        return 1;
    }
    char *whole = NULL;
    if (ctx->long_line && !(whole = whole_value(ctx->raw, ctx->raw_len))) {
        parse_fail(ctx, FHIRSYNC_E_NOMEM, NULL, "out of memory");
        return 1;
    }
    origin o = {
        .source = source, .from_file = true, .base_dir = ctx->name, .base_dir_len = ctx->dir_len};
    fhirsync_code rc = set_setting(ctx->target, def, whole ? whole : val, &o, &e);
    fs_free(whole);
    if (rc != FHIRSYNC_OK) /* e already says what and where */
        parse_error(ctx, &e, def->name);
    return 1;
}

/* Parse one file's text into ctx->cfg. */
static void parse_text(parse_ctx *ctx, const char *data, size_t len, const char *name)
{
    ctx->name = name;
    const char *slash = strrchr(name, '/');
    ctx->dir_len = slash ? (size_t)(slash - name) + 1 : 0;
    ctx->pos = data;
    ctx->end = data + len;
    ctx->lineno = 0;
    ctx->target = NULL;
    ctx->section_name = NULL;
    ctx->in_section = false;
    ctx->section_kind = "endpoint";
    int rc = ini_parse_stream(read_line, ctx, handle_pair, ctx);
    if (rc == -2 && !ctx->failed) {
        ctx->failed = true;
        fs_err(&ctx->e, FHIRSYNC_E_NOMEM, "out of memory");
    } else if (rc > 0 && !ctx->failed) {
        /* read_line hands inih only lines it can split: this would be a bug */
        fhirsync_error e;
        ctx->lineno = rc;
        fs_err(&e, FHIRSYNC_E_CONFIG,
               "%s:%d: cannot parse this line: expected '[section]' or 'name = value'", name, rc);
        parse_error(ctx, &e, NULL);
    }
    fhirsync_endpoint_free(ctx->scratch);
    ctx->scratch = NULL;
    ctx->target = NULL;
}

/* Copy [defaults] into every endpoint that does not set the value itself (with the mark of a
 * value [defaults] had refused). */
static bool inherit_defaults(fhirsync_config *cfg)
{
    const fhirsync_endpoint *defaults = cfg->defaults;
    for (size_t e = 0; e < cfg->count; e++) {
        fhirsync_endpoint *ep = cfg->endpoints[e];
        for (size_t i = 0; i < SETTING_COUNT; i++) {
            if (ep->slots[i].count != 0 || (ep->refused & ((uint64_t)1 << i)))
                continue;
            ep->refused |= defaults->refused & ((uint64_t)1 << i);
            if (!slot_copy(&ep->slots[i], &defaults->slots[i]))
                return false;
        }
    }
    return true;
}

/* The end of a load: [defaults] inherited, the configuration or the first error handed over. */
static fhirsync_code finish_load(parse_ctx *ctx, fhirsync_config **out, fhirsync_error *err)
{
    if (!ctx->failed && !inherit_defaults(ctx->cfg)) {
        ctx->failed = true;
        fs_err(&ctx->e, FHIRSYNC_E_NOMEM, "out of memory");
    }
    if (ctx->failed) {
        fhirsync_config_free(ctx->cfg);
        if (err)
            *err = ctx->e;
        return ctx->e.code;
    }
    *out = ctx->cfg;
    return FHIRSYNC_OK;
}

fhirsync_code fs_config_load_mem(const char *data, size_t len, const char *name,
                                 fhirsync_config **out, fhirsync_error *err)
{
    return fs_config_load_mem_report(data, len, name, NULL, out, err);
}

fhirsync_code fs_config_load_mem_report(const char *data, size_t len, const char *name,
                                        fhirsync_config_report *report, fhirsync_config **out,
                                        fhirsync_error *err)
{
    if (out)
        *out = NULL;
    if (!out || (!data && len))
        return fs_err(err, FHIRSYNC_E_ARG, "fs_config_load_mem: NULL argument");
    parse_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.report = report;
    ctx.cfg = fhirsync_config_new();
    if (!ctx.cfg)
        return no_memory(err);
    parse_text(&ctx, data ? data : "", len, name ? name : "(config)");
    return finish_load(&ctx, out, err);
}

/* ---- reading files and directories ---------------------------------------------------------- */

static fhirsync_code read_config_file(const char *path, fs_buf *text, fhirsync_error *err)
{
    fhirsync_code rc = FHIRSYNC_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return fs_err(err, FHIRSYNC_E_IO, "config file %s cannot be opened (%s)", path,
                      strerror(errno));
    char chunk[8192];
    for (;;) {
        ssize_t got = read(fd, chunk, sizeof chunk);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rc = fs_err(err, FHIRSYNC_E_IO, "config file %s cannot be read (%s)", path,
                        strerror(errno));
            break;
        }
        if (got == 0)
            break;
        if (text->len + (size_t)got > (size_t)MAX_FILE) {
            rc = fs_err(err, FHIRSYNC_E_CONFIG, "%s: larger than %ld MiB; not a config file?", path,
                        MAX_FILE >> 20);
            break;
        }
        if (!fs_buf_append(text, chunk, (size_t)got)) {
            rc = no_memory(err);
            break;
        }
    }
    close(fd);
    return rc;
}

/* Read and parse one file; a file that cannot be read is a problem about the whole file. */
static void load_file(parse_ctx *ctx, const char *path)
{
    fs_buf text;
    fs_buf_init(&text);
    fhirsync_error e;
    if (read_config_file(path, &text, &e) == FHIRSYNC_OK) {
        parse_text(ctx, text.data ? text.data : "", text.len, path);
    } else if (ctx->report && e.code != FHIRSYNC_E_NOMEM) {
        if (report_push(ctx->report, FHIRSYNC_CONFIG_ERROR, e.code, path, 0, NULL, NULL, path,
                        e.message) != FHIRSYNC_OK) {
            ctx->failed = true;
            fs_err(&ctx->e, FHIRSYNC_E_NOMEM, "out of memory");
        }
    } else {
        ctx->failed = true;
        ctx->e = e;
    }
    fs_buf_free(&text);
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The configuration files of a directory: "*.ini" not starting with '.', as "DIR/NAME", sorted
 * by name. *paths is the caller's (each path and the array, fs_free). */
static fhirsync_code list_config_dir(const char *dir, char ***paths, size_t *count,
                                     fhirsync_error *err)
{
    *paths = NULL;
    *count = 0;
    DIR *d = opendir(dir);
    if (!d)
        return fs_err(err, FHIRSYNC_E_IO, "config directory %s cannot be opened (%s)", dir,
                      strerror(errno));
    fhirsync_code rc = FHIRSYNC_OK;
    char **list = NULL;
    size_t n = 0, cap = 0;
    size_t dir_len = strlen(dir);
    bool slash = dir_len > 0 && dir[dir_len - 1] == '/';
    struct dirent *entry;
    errno = 0;
    while (rc == FHIRSYNC_OK && (entry = readdir(d))) {
        size_t len = strlen(entry->d_name);
        if (entry->d_name[0] == '.' || len <= 4 || strcmp(entry->d_name + len - 4, ".ini") != 0)
            continue;
        if (n == cap) {
            char **grown = fs_array_grow(list, &cap, sizeof *grown, 16);
            if (!grown) {
                rc = no_memory(err);
                break;
            }
            list = grown;
        }
        size_t size = dir_len + 1 + len + 1;
        if (!(list[n] = fs_malloc(size))) {
            rc = no_memory(err);
            break;
        }
        snprintf(list[n++], size, "%s%s%s", dir, slash ? "" : "/", entry->d_name);
    }
    if (rc == FHIRSYNC_OK && errno != 0)
        rc = fs_err(err, FHIRSYNC_E_IO, "config directory %s cannot be read (%s)", dir,
                    strerror(errno));
    closedir(d);
    if (rc != FHIRSYNC_OK) {
        for (size_t i = 0; i < n; i++)
            fs_free(list[i]);
        fs_free(list);
        return rc;
    }
    if (n > 1)
        qsort(list, n, sizeof *list, compare_names);
    *paths = list;
    *count = n;
    return FHIRSYNC_OK;
}

/* A file, or every configuration file of a directory, into one configuration. */
static fhirsync_code load_path(const char *path, fhirsync_config_report *report,
                               fhirsync_config **out, fhirsync_error *err)
{
    parse_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.report = report;
    ctx.cfg = fhirsync_config_new();
    if (!ctx.cfg)
        return no_memory(err);
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        load_file(&ctx, path); /* says why it cannot be read, if it cannot */
        return finish_load(&ctx, out, err);
    }
    char **paths = NULL;
    size_t count = 0;
    fhirsync_error e;
    if (list_config_dir(path, &paths, &count, &e) != FHIRSYNC_OK) {
        if (!report || e.code == FHIRSYNC_E_NOMEM ||
            report_push(report, FHIRSYNC_CONFIG_ERROR, e.code, path, 0, NULL, NULL, path,
                        e.message) != FHIRSYNC_OK) {
            ctx.failed = true;
            ctx.e = e;
            if (report && e.code != FHIRSYNC_E_NOMEM)
                fs_err(&ctx.e, FHIRSYNC_E_NOMEM, "out of memory");
        }
    }
    for (size_t i = 0; i < count && !ctx.failed; i++)
        load_file(&ctx, paths[i]);
    for (size_t i = 0; i < count; i++)
        fs_free(paths[i]);
    fs_free(paths);
    return finish_load(&ctx, out, err);
}

fhirsync_code fhirsync_config_load(const char *path, fhirsync_config **out, fhirsync_error *err)
{
    if (out)
        *out = NULL;
    if (!path || !out)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_config_load: NULL argument");
    return load_path(path, NULL, out, err);
}

fhirsync_code fhirsync_config_load_report(const char *path, fhirsync_config_report *report,
                                          fhirsync_config **out, fhirsync_error *err)
{
    if (out)
        *out = NULL;
    if (!path || !report || !out)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_config_load_report: NULL argument");
    return load_path(path, report, out, err);
}

/* ---- checking a configuration --------------------------------------------------------------- */

/* An endpoint with a base URL, by the store it syncs into. */
typedef struct store_entry {
    const char *store;
    char *url; /* fs_url_comparable() of its base_url */
    size_t index;
} store_entry;

static int compare_entries(const void *a, const void *b)
{
    const store_entry *x = a, *y = b;
    int c = strcmp(x->store, y->store);
    if (c == 0)
        c = strcmp(x->url, y->url);
    if (c == 0)
        c = x->index < y->index ? -1 : x->index > y->index;
    return c;
}

static bool same_text(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* For every endpoint: `conflict[i]`, an endpoint of another base URL in the same store when i
 * does not have shared_store = yes; `repeat[i]`, an earlier endpoint with the same base URL,
 * group_id and types into the same store. SIZE_MAX for none. */
static bool find_store_clashes(const fhirsync_config *cfg, size_t *conflict, size_t *repeat)
{
    store_entry *entries = fs_calloc(cfg->count ? cfg->count : 1, sizeof *entries);
    if (!entries)
        return false;
    size_t n = 0;
    bool ok = true;
    for (size_t i = 0; i < cfg->count; i++) {
        conflict[i] = repeat[i] = SIZE_MAX;
        const char *url = explicit_text(cfg->endpoints[i], "base_url");
        if (!url)
            continue;
        entries[n] = (store_entry){fhirsync_endpoint_get(cfg->endpoints[i], "store"),
                                   fs_url_comparable(url), i};
        if (!entries[n++].url)
            ok = false;
    }
    if (ok && n > 1)
        qsort(entries, n, sizeof *entries, compare_entries);
    /* a group: one store; a run: one store and one URL */
    for (size_t g = 0, g_end; ok && g < n; g = g_end) {
        for (g_end = g + 1; g_end < n && strcmp(entries[g_end].store, entries[g].store) == 0;)
            g_end++;
        size_t second_run = g + 1;
        while (second_run < g_end && strcmp(entries[second_run].url, entries[g].url) == 0)
            second_run++;
        for (size_t r = g, r_end; r < g_end; r = r_end) {
            for (r_end = r + 1; r_end < g_end && strcmp(entries[r_end].url, entries[r].url) == 0;)
                r_end++;
            /* the other server: the group's first URL, or for that URL's run the next one */
            size_t other = r == g ? second_run : g;
            for (size_t k = r; k < r_end; k++) {
                const fhirsync_endpoint *ep = cfg->endpoints[entries[k].index];
                if (other < g_end && !fs_endpoint_bool(ep, "shared_store"))
                    conflict[entries[k].index] = entries[other].index;
                for (size_t j = r; j < k; j++) {
                    const fhirsync_endpoint *earlier = cfg->endpoints[entries[j].index];
                    if (same_text(explicit_text(ep, "group_id"),
                                  explicit_text(earlier, "group_id")) &&
                        same_text(explicit_text(ep, "types"), explicit_text(earlier, "types"))) {
                        repeat[entries[k].index] = entries[j].index;
                        break;
                    }
                }
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        fs_free(entries[i].url);
    fs_free(entries);
    return ok;
}

typedef struct check_sink {
    fhirsync_config_report *report;
    const fhirsync_endpoint *ep;
    fhirsync_code rc;
} check_sink;

static bool add_problem(void *user, const char *setting, const fhirsync_error *e)
{
    check_sink *s = user;
    if (s->rc == FHIRSYNC_OK)
        s->rc = fhirsync_config_report_add(s->report, s->ep, setting, FHIRSYNC_CONFIG_ERROR,
                                           e->code, e->message);
    return s->rc == FHIRSYNC_OK;
}

/* "endpoint NAME (FILE:LINE)", or without the place when it is not from a file */
static const char *endpoint_place(const fhirsync_endpoint *ep, char *buf, size_t size)
{
    if (ep->file)
        snprintf(buf, size, "endpoint %s (%s:%d)", ep->name, ep->file, ep->line);
    else
        snprintf(buf, size, "endpoint %s", ep->name);
    return buf;
}

fhirsync_code fhirsync_config_check(const fhirsync_config *cfg, fhirsync_config_report *report,
                                    fhirsync_error *err)
{
    if (!cfg || !report)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_config_check: NULL argument");
    check_sink sink = {.report = report};
    if (cfg->count == 0)
        sink.rc = report_push(report, FHIRSYNC_CONFIG_WARNING, FHIRSYNC_E_CONFIG, NULL, 0, NULL,
                              NULL, NULL, "no endpoints: add [endpoint NAME] sections");
    size_t *conflict = fs_calloc(cfg->count ? cfg->count : 1, sizeof *conflict);
    size_t *repeat = fs_calloc(cfg->count ? cfg->count : 1, sizeof *repeat);
    if (!conflict || !repeat || !find_store_clashes(cfg, conflict, repeat))
        sink.rc = FHIRSYNC_E_NOMEM;
    for (size_t i = 0; i < cfg->count && sink.rc == FHIRSYNC_OK; i++) {
        const fhirsync_endpoint *ep = cfg->endpoints[i];
        sink.ep = ep;
        completeness(ep, ep->refused, add_problem, &sink);
        fhirsync_error e;
        char place[4200];
        if (sink.rc == FHIRSYNC_OK && conflict[i] != SIZE_MAX) {
            const fhirsync_endpoint *other = cfg->endpoints[conflict[i]];
            fs_err(&e, FHIRSYNC_E_CONFIG,
                   "store %s also receives %s of another FHIR server (%s) than this endpoint's "
                   "%s: resource ids are unique only within one server, so the two would "
                   "overwrite each other's resources and the sync refuses it. Give each "
                   "practice its own store (a store line in each [endpoint] section; "
                   "PostgreSQL: a database or a schema each), or set shared_store = yes if both "
                   "URLs are the same server",
                   fhirsync_endpoint_get(ep, "store"), endpoint_place(other, place, sizeof place),
                   explicit_text(other, "base_url"), explicit_text(ep, "base_url"));
            add_problem(&sink, "store", &e);
        }
        if (sink.rc == FHIRSYNC_OK && repeat[i] != SIZE_MAX) {
            fs_err(&e, FHIRSYNC_E_CONFIG,
                   "same base URL, group_id, types and store as %s: each sync repeats the "
                   "other's; remove one, or give them different group_id or types",
                   endpoint_place(cfg->endpoints[repeat[i]], place, sizeof place));
            sink.rc = fhirsync_config_report_add(report, ep, "base_url", FHIRSYNC_CONFIG_WARNING,
                                                 e.code, e.message);
        }
    }
    fs_free(conflict);
    fs_free(repeat);
    if (sink.rc != FHIRSYNC_OK)
        return fs_err(err, sink.rc, "out of memory");
    return FHIRSYNC_OK;
}
