/* sandbox/sandbox.h: the internal API the sandbox EHR's modules share. The sandbox is a strict,
 * local SMART Backend Services (and App Launch) authorization server plus a FHIR R4 server with
 * Bulk Data v2 export, for demos, tests and benchmarks. It is split into small modules:
 *
 *   server.c     main, options, the libmicrohttpd listeners, the route table, the request log
 *   reply.c      building replies: JSON, OperationOutcome, OAuth errors, files
 *   parse.c      MHD-free parsers: percent-encoding, query strings and form bodies, Range,
 *                Parameters bodies, media types, Prefer and Basic headers (fuzzed)
 *   query.c      FHIR search parameters compiled into a matcher (fuzzed with parse.c)
 *   scope.c      SMART v1/v2 system scopes: parsing and coverage
 *   assertion.c  the private_key_jwt client-assertion checks and the jti replay store (fuzzed)
 *   auth.c       clients, registration, the token endpoint, the access-token store
 *   launch.c     SMART App Launch: /authorize, login and consent pages, codes, refresh tokens,
 *                id_tokens, the grants' admin API
 *   data.c       the data source: the deterministic generator (gen.h) or an NDJSON folder
 *   ndjson.c     the NDJSON folder index (line offsets) behind --data
 *   fhir.c       REST read/search, CapabilityStatement, smart-configuration
 *   bulk.c       $export jobs, status, manifests, file downloads
 *   faults.c     fault-injection rules (single requests)
 *   quirks.c     quirk modes (lasting deviations from the specifications, as real EHRs show)
 *   admin.c      the admin API (mutate, request log, faults, quirks)
 *   state.c      the state dump (GET /admin/state): every live resource with a hash of its JSON
 *   reqlog.c     the request log (memory and --request-log file)
 *   practices.c  --practices N: N practices on one port, each a whole sb_server of its own
 *                behind /practice/{i}; the meter (counts and the rate limit of a practice);
 *                /admin/practices
 *
 * Nothing here includes microhttpd.h: only server.c talks to libmicrohttpd, so the parsers and
 * the assertion checks build on their own for the fuzz targets. Internal prefix: sb_. */
#ifndef SB_SANDBOX_H
#define SB_SANDBOX_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "gen.h"
#include "json/json.h"

/* Caps on what the network may make us hold. */
#define SB_MAX_BODY (1024 * 1024) /* request bodies; larger ones get 413 */
#define SB_MAX_ASSERTION 16384    /* client_assertion length */
#define SB_MAX_JTI 255            /* jti length */
#define SB_ASSERTION_LEEWAY 60    /* clock leeway for exp/iat/nbf, seconds */
#define SB_ASSERTION_MAX_LIFE 300 /* exp at most this far ahead (plus the leeway) */
#define SB_MAX_COUNT 1000         /* largest _count */
#define SB_DEFAULT_COUNT 50

/* ---- request categories (what fault rules match on) ------------------------------------------ */
typedef enum sb_on {
    SB_ON_NONE = 0,
    SB_ON_TOKEN = 1 << 0,
    SB_ON_SEARCH = 1 << 1,
    SB_ON_READ = 1 << 2,
    SB_ON_METADATA = 1 << 3,
    SB_ON_KICKOFF = 1 << 4,
    SB_ON_STATUS = 1 << 5,
    SB_ON_DOWNLOAD = 1 << 6,
    SB_ON_ANY = (1 << 7) - 1
} sb_on;

/* "token", "search"... for an exact single category; "any" for SB_ON_ANY; NULL otherwise. */
const char *sb_on_name(sb_on on);
/* Parse a category name; SB_ON_NONE when unknown. */
sb_on sb_on_from_name(const char *name);

typedef enum sb_listener { SB_LISTENER_MAIN = 0, SB_LISTENER_STORAGE = 1 } sb_listener;

/* ---- parse.c: MHD-free parsers -------------------------------------------------------------- */
typedef struct sb_param {
    char *name;
    char *value;
} sb_param;

/* An ordered multimap of decoded name/value pairs (query string, form body, Parameters). */
typedef struct sb_params {
    sb_param *items;
    size_t count;
    size_t cap;
} sb_params;

void sb_params_init(sb_params *p);
void sb_params_free(sb_params *p);
/* Copies both strings; false on out of memory. */
bool sb_params_add(sb_params *p, const char *name, const char *value);
/* The first value of `name`, NULL when absent. Borrowed. */
const char *sb_params_get(const sb_params *p, const char *name);
size_t sb_params_count(const sb_params *p, const char *name);

/* Decode `n` bytes of percent-encoding into a new NUL-terminated string (caller frees). With
 * plus_is_space, '+' means a space (form encoding). Rejects malformed escapes and %00. */
bool sb_percent_decode(const char *s, size_t n, bool plus_is_space, char **out);

/* Parse an application/x-www-form-urlencoded text (a query string or a form body) into `out`
 * (appending). Empty pairs are skipped; a pair without '=' has the value "". False with a
 * message in err on malformed encoding, too many pairs (> 1000) or out of memory. */
bool sb_params_parse_form(sb_params *out, const char *text, size_t len, fhirsync_error *err);

/* Parse a FHIR Parameters resource (the body of a POST $export) into name/value pairs: each
 * parameter's value[x] as text (valueString, valueCode, valueInstant, valueDateTime, valueUri,
 * valueUrl, valueCanonical, valueId, valueBoolean, valueInteger, valueReference.reference).
 * False with a message when the body is not a Parameters resource or a parameter has no name or
 * no supported value. */
bool sb_params_parse_parameters(sb_params *out, const char *body, size_t len, fhirsync_error *err);

typedef enum sb_range_result {
    SB_RANGE_NONE = 0, /* no Range header, or one we ignore (several ranges): send all */
    SB_RANGE_OK = 1,   /* one satisfiable range: *start, *length */
    SB_RANGE_UNSATISFIABLE = 2,
    SB_RANGE_INVALID = 3 /* syntactically bad: ignored like NONE per RFC 9110 */
} sb_range_result;

/* Parse a Range header ("bytes=a-b", "bytes=a-", "bytes=-n") against a representation of
 * `size` bytes. */
sb_range_result sb_range_parse(const char *header, uint64_t size, uint64_t *start,
                               uint64_t *length);

/* Whether a Content-Type header value has the media type `type` (case-insensitive, parameters
 * such as charset ignored). */
bool sb_media_type_is(const char *header, const char *type);
/* Whether an Accept header value lists `type` (parameters ignored, q=0 entries ignored). */
bool sb_accept_lists(const char *header, const char *type);
/* Whether a Prefer header holds the preference `token` ("respond-async", "handling=strict"),
 * compared case-insensitively, several Prefer values joined by commas. */
bool sb_prefer_has(const char *header, const char *token);
/* Split an "Authorization: Basic ..." value into user and password (both the caller's; the
 * password is a secret). RFC 6749 2.3.1: both parts are form-urlencoded inside the base64. */
bool sb_basic_auth_parse(const char *header, char **user, char **password);
/* The token of an "Authorization: Bearer ..." value, borrowed from `header`; NULL when not a
 * bearer credential. */
const char *sb_bearer_token(const char *header);

/* Split a raw (still percent-encoded) path into decoded segments. "/a/b%2Fc/" gives "a",
 * "b/c" (the decoded slash stays inside its segment), and an empty last segment is dropped.
 * The segments are the caller's (sb_segments_free). False on malformed encoding or more than
 * 16 segments. */
bool sb_path_split(const char *raw_path, char ***segments, size_t *count);
void sb_segments_free(char **segments, size_t count);

/* A copy of a raw request URI for the request log: the values of query parameters whose names
 * look secret (token, secret, assertion, password, code, key) are replaced by "***". */
char *sb_uri_for_log(const char *raw_uri);

/* ---- query.c: FHIR search parameters -------------------------------------------------------- */
typedef struct sb_time_cond {
    char prefix[3]; /* eq ne gt ge lt le sa eb */
    int64_t lo, hi; /* the value as the half-open range [lo, hi) of epoch seconds */
} sb_time_cond;

typedef struct sb_token_cond {
    char *system; /* NULL: any system */
    char *code;   /* NULL: any code ("system|") */
} sb_token_cond;

typedef struct sb_token_list {
    sb_token_cond *items; /* OR-ed */
    size_t count;
} sb_token_list;

typedef struct sb_query {
    char **ids; /* _id values, OR-ed; NULL when not given */
    size_t nids;
    bool has_ids;
    sb_time_cond *times; /* _lastUpdated and _since, AND-ed (each one an OR list) */
    size_t ntimes;
    char **patients; /* patient/subject ids, OR-ed */
    size_t npatients;
    bool has_patients;
    sb_token_list category, code, status; /* AND-ed between them */
    long count;                           /* _count, SB_DEFAULT_COUNT when not given */
    char *page_token;                     /* _page_token */
    bool total;                           /* _total=accurate|estimate or _summary=count */
    bool summary_count;                   /* _summary=count */
    char **unknown;                       /* names of parameters not understood, in order */
    size_t nunknown;
} sb_query;

void sb_query_init(sb_query *q);
void sb_query_free(sb_query *q);

typedef enum sb_param_use {
    SB_PARAM_USED = 0,    /* understood and applied */
    SB_PARAM_UNKNOWN = 1, /* not a parameter the sandbox supports (recorded in q->unknown) */
    SB_PARAM_BAD = 2      /* a supported parameter with an unusable value (err says why) */
} sb_param_use;

/* Add one search parameter. `in_compartment`: the resource type is in the Patient compartment
 * (patient/subject apply). `paging`: _count, _page_token, _total, _summary are accepted (REST
 * search) rather than unknown (a _typeFilter). */
sb_param_use sb_query_add(sb_query *q, const char *name, const char *value, bool in_compartment,
                          bool paging, fhirsync_error *err);

/* Parse a search date/instant ("2024", "2024-05", "2024-05-06", an instant with seconds) into the
 * half-open range it denotes. */
bool sb_parse_date_range(const char *value, int64_t *lo, int64_t *hi);

/* Whether the query asks for element-level matching (category, code, status). */
bool sb_query_needs_content(const sb_query *q);
/* Meta-level match: _id, _lastUpdated/_since, patient (for the Patient type its own id). */
bool sb_query_match_meta(const sb_query *q, bool is_patient_type, const sb_resource_meta *meta);
/* Element-level match on the parsed resource. */
bool sb_query_match_content(const sb_query *q, const json_t *resource);

/* ---- scope.c: SMART system scopes ----------------------------------------------------------- */
enum {
    SB_PERM_C = 1 << 0,
    SB_PERM_R = 1 << 1,
    SB_PERM_U = 1 << 2,
    SB_PERM_D = 1 << 3,
    SB_PERM_S = 1 << 4
};

/* The context of a resource scope (a bit each, so that a set of contexts is a mask). */
enum { SB_SCOPE_SYSTEM = 1, SB_SCOPE_PATIENT = 2, SB_SCOPE_USER = 4, SB_SCOPE_ANY = 7 };

typedef struct sb_scope {
    char type[64];    /* resource type, or "*" */
    unsigned perms;   /* SB_PERM_* */
    unsigned context; /* SB_SCOPE_SYSTEM, _PATIENT or _USER */
} sb_scope;

/* Parse one resource scope whose context is one of `contexts` (a mask): v1 C/T.read|write|*, v2
 * C/T.<letters of cruds, in order>. False with a message naming the scope for anything else
 * (another context, openid, launch scopes, granular ?...). */
bool sb_scope_parse_in(const char *text, unsigned contexts, sb_scope *out, fhirsync_error *err);
/* sb_scope_parse_in for system/ scopes only (backend services). */
bool sb_scope_parse(const char *text, sb_scope *out, fhirsync_error *err);
/* Whether one scope is within another (same context, same type or a wildcard, and a subset of
 * permissions). */
bool sb_scope_within(const sb_scope *inner, const sb_scope *outer);
/* Whether a space-separated scope string grants `perms` on `type` (scopes of any context). */
bool sb_scopes_grant(const char *scopes, const char *type, unsigned perms);
/* The same, counting only the scopes whose context is in `contexts`. */
bool sb_scopes_grant_in(const char *scopes, unsigned contexts, const char *type, unsigned perms);
/* Validate a space-separated system/ scope list (each one parses); false with the first bad one. */
bool sb_scopes_valid(const char *scopes, fhirsync_error *err);
/* Whether `scope` is one of the non-resource scopes an app may ask for: openid, fhirUser,
 * profile, offline_access, online_access, launch/patient. */
bool sb_scope_is_app_special(const char *scope);
/* Validate the scopes of an authorization-code app: patient/ and user/ scopes and the specials. */
bool sb_app_scopes_valid(const char *scopes, fhirsync_error *err);

/* ---- assertion.c: private_key_jwt checks ---------------------------------------------------- */
typedef enum sb_auth_method {
    SB_AUTH_PRIVATE_KEY_JWT = 0,
    SB_AUTH_CLIENT_SECRET_BASIC = 1,
    SB_AUTH_CLIENT_SECRET_POST = 2, /* authorization-code apps only */
    SB_AUTH_NONE = 3                /* public authorization-code apps */
} sb_auth_method;

/* "private_key_jwt", "client_secret_basic", "client_secret_post", "none". */
const char *sb_auth_method_name(sb_auth_method method);

/* A registered client. Immutable once registered (never freed before shutdown), so a pointer
 * found under the registry lock stays valid without it. */
typedef struct sb_client {
    char *client_id;
    json_t *jwks;   /* {"keys":[...]} registered by value, or NULL */
    char *jwks_uri; /* registered by URL, or NULL */
    char *scope;    /* allowed scopes, space-separated */
    unsigned algs;  /* bit (1 << fhirsync_alg) per allowed algorithm */
    sb_auth_method method;
    char *client_secret; /* client_secret_basic/_post clients only (a secret) */
    /* An app of the authorization-code flow (SMART App Launch) registers redirect_uris; a
     * backend service has none and uses client_credentials only. */
    bool app;
    char **redirect_uris; /* compared exactly */
    size_t nredirect_uris;
} sb_client;

/* Replay store for assertion jtis: remembered until their exp (plus leeway). Thread-safe. */
typedef struct sb_jti_store sb_jti_store;
sb_jti_store *sb_jti_store_new(void);
void sb_jti_store_free(sb_jti_store *s);
/* Record (client_id, jti) until `expires`; false when it is already there (a replay). */
bool sb_jti_store_add(sb_jti_store *s, const char *client_id, const char *jti, int64_t expires,
                      int64_t now);

/* Find a client; NULL when unknown. */
typedef const sb_client *(*sb_client_lookup_fn)(void *ctx, const char *client_id);
/* Fetch a JWKS by URL (a new reference, or NULL with err filled). */
typedef json_t *(*sb_jwks_fetch_fn)(void *ctx, const char *uri, fhirsync_error *err);

typedef struct sb_assertion_ctx {
    const char *token_url; /* the exact aud the assertion must carry */
    bool rs384_only;
    int64_t now;
    sb_client_lookup_fn lookup;
    sb_jwks_fetch_fn fetch_jwks; /* may be NULL: jwks_uri clients then fail */
    void *cb_ctx;
    sb_jti_store *jtis;
} sb_assertion_ctx;

/* Check a client assertion in the order of the SMART rules: decodes, iss known, alg allowed, kid
 * found exactly once, jku, signature, iss == sub, aud, exp, iat/nbf, jti. On success returns the
 * client (and records the jti); on failure NULL with err->message naming the failed check (an
 * invalid_client cause). */
const sb_client *sb_assertion_check(const sb_assertion_ctx *ctx, const char *assertion,
                                    fhirsync_error *err);
/* The `iss` of an assertion without checking anything (for fault matching and the request log);
 * the caller's, NULL when there is none. */
char *sb_assertion_peek_iss(const char *assertion);

/* ---- data.c / ndjson.c: the data source -------------------------------------------------------
 * Resources of a type are addressed as (bucket, slot): for Patient-compartment types the bucket
 * is the patient index (an NDJSON folder adds one last bucket for resources with no known
 * patient), for the others there is a single bucket 0. Iterating buckets then slots is the
 * streaming order shared by search paging, export files and cursors. */
typedef struct sb_data sb_data;

sb_data *sb_data_new_generated(const sb_gen_config *cfg, fhirsync_error *err);
sb_data *sb_data_new_ndjson(const char *dir, fhirsync_error *err);
void sb_data_free(sb_data *d);

bool sb_data_is_generated(const sb_data *d);
size_t sb_data_type_count(const sb_data *d);
const char *sb_data_type_name(const sb_data *d, size_t type);
int sb_data_type_index(const sb_data *d, const char *name);
bool sb_data_type_in_compartment(const sb_data *d, size_t type);
/* The index of the Patient type, -1 when the source has none. */
int sb_data_patient_type(const sb_data *d);
uint32_t sb_data_buckets(const sb_data *d, size_t type);
uint32_t sb_data_slots(const sb_data *d, size_t type, uint32_t bucket);
/* Produce one resource: fills meta, appends its JSON to out unless it is deleted. False on out
 * of memory, I/O failure or an out-of-range address. Call under sb_data_read_lock. */
bool sb_data_get(const sb_data *d, size_t type, uint32_t bucket, uint32_t slot, fs_buf *out,
                 sb_resource_meta *meta);
/* Only the meta of a resource (no JSON: cheap, for _since and _lastUpdated filters). */
bool sb_data_meta(const sb_data *d, size_t type, uint32_t bucket, uint32_t slot,
                  sb_resource_meta *meta);
/* Locate a resource by id. */
bool sb_data_find(const sb_data *d, size_t type, const char *id, uint32_t *bucket, uint32_t *slot);
/* The bucket of a patient id (its index). */
bool sb_data_patient_bucket(const sb_data *d, const char *patient_id, uint32_t *bucket);
/* The patient buckets of a Group's members, sorted and unique (caller frees *buckets). False
 * when there is no such Group (or out of memory: *buckets NULL then too). */
bool sb_data_group_members(sb_data *d, const char *group_id, uint32_t **buckets, size_t *count);
/* Readers (search, read, export) hold the read lock while producing resources; mutate takes
 * the write lock. */
void sb_data_read_lock(sb_data *d);
void sb_data_read_unlock(sb_data *d);
/* New epoch of changes (generated data only). 0 with err filled for an NDJSON folder. */
unsigned sb_data_mutate(sb_data *d, double update_fraction, double delete_fraction, int64_t now,
                        fhirsync_error *err);
unsigned sb_data_epoch(const sb_data *d);

/* A walk over the addresses of one type in streaming order, optionally restricted to a sorted
 * list of buckets (patients), starting at (bucket, slot). The current position after a call is
 * a cursor: starting a new walk there continues exactly where this one stopped. */
typedef struct sb_walk {
    const sb_data *data;
    size_t type;
    const uint32_t *buckets; /* sorted; NULL: every bucket */
    size_t nbuckets;
    size_t index; /* into buckets */
    uint32_t bucket, slot, slots;
    bool loaded;
} sb_walk;

void sb_walk_init(sb_walk *w, const sb_data *d, size_t type, const uint32_t *buckets,
                  size_t nbuckets, uint32_t start_bucket, uint32_t start_slot);
/* The next address; false at the end. */
bool sb_walk_next(sb_walk *w, uint32_t *bucket, uint32_t *slot);
/* The cursor: the address the walk would look at next. */
void sb_walk_position(sb_walk *w, uint32_t *bucket, uint32_t *slot);

/* The NDJSON folder index (ndjson.c), used by data.c. */
typedef struct sb_ndjson sb_ndjson;
sb_ndjson *sb_ndjson_open(const char *dir, fhirsync_error *err);
void sb_ndjson_free(sb_ndjson *nd);
size_t sb_ndjson_type_count(const sb_ndjson *nd);
const char *sb_ndjson_type_name(const sb_ndjson *nd, size_t type);
bool sb_ndjson_type_in_compartment(const sb_ndjson *nd, size_t type);
uint32_t sb_ndjson_buckets(const sb_ndjson *nd, size_t type);
uint32_t sb_ndjson_slots(const sb_ndjson *nd, size_t type, uint32_t bucket);
bool sb_ndjson_get(const sb_ndjson *nd, size_t type, uint32_t bucket, uint32_t slot, fs_buf *out,
                   sb_resource_meta *meta);
bool sb_ndjson_meta(const sb_ndjson *nd, size_t type, uint32_t bucket, uint32_t slot,
                    sb_resource_meta *meta);
bool sb_ndjson_find(const sb_ndjson *nd, size_t type, const char *id, uint32_t *bucket,
                    uint32_t *slot);
/* The index of the Patient type, -1 when the folder has no Patient resources. */
int sb_ndjson_patient_type(const sb_ndjson *nd);

/* ---- the server ----------------------------------------------------------------------------- */
typedef struct sb_config {
    const char *host;
    unsigned port;
    const char *ready_file;
    uint32_t patients;
    uint64_t seed;
    const char *data_dir;
    const char *clients_file;
    bool rs384_only;
    int64_t token_lifetime;
    const char *tls_cert;
    const char *tls_key;
    unsigned threads; /* 0: a thread per connection; N: a pool of N */
    const char *work_dir;
    uint64_t resources_per_file;
    const char *request_log;
    unsigned retry_after;     /* Retry-After on status polls of running exports */
    unsigned max_jobs;        /* concurrently running exports */
    unsigned export_delay_ms; /* a job stays "in progress" this long after its files */
    uint32_t practices;       /* --practices N (0: the single base); patients is then the total */
    double practice_skew;     /* Zipf exponent of the practices' sizes (sb_gen_split_patients) */
    uint32_t rate_limit;      /* requests per wall-clock minute per practice, 0: none */
} sb_config;

typedef struct sb_auth sb_auth;
typedef struct sb_launch sb_launch;
typedef struct sb_bulk sb_bulk;
typedef struct sb_faults sb_faults;
typedef struct sb_quirks sb_quirks;
typedef struct sb_reqlog sb_reqlog;
typedef struct sb_practices sb_practices;

/* What a practice was asked (practices.c): every request to it except the admin API, and its
 * rate limit. Counts since the start or the last reset; thread-safe (its own lock). */
typedef struct sb_meter_counts {
    int64_t since;            /* when counting started (epoch seconds) */
    uint64_t requests;        /* every request, refused ones included */
    uint64_t token_requests;  /* of which to the token endpoint */
    uint64_t tokens_issued;   /* access tokens issued (any grant) */
    uint64_t status_429;      /* answers with status 429, whatever the cause */
    uint64_t rate_limited;    /* of which refused by the rate limit */
    int64_t minute;           /* the current wall-clock minute (epoch seconds / 60) */
    uint64_t minute_requests; /* requests in it (refused ones included) */
    uint64_t minute_admitted; /* requests in it within the limit */
    uint64_t max_minute;      /* the most requests in one wall-clock minute */
    int64_t max_minute_at;    /* that minute's start */
    int64_t second[60];       /* a ring of the last 60 seconds: which second each slot holds */
    uint32_t per_second[60];  /* and its requests */
    uint64_t max_60s;         /* the most requests in any 60 consecutive seconds */
    int64_t first_request, last_request;
} sb_meter_counts;

typedef struct sb_meter {
    pthread_mutex_t lock;
    uint32_t rate_limit; /* requests admitted per wall-clock minute, 0: no limit */
    sb_meter_counts counts;
} sb_meter;

typedef struct sb_server {
    sb_config cfg;
    bool tls;
    unsigned port, storage_port;
    char origin[128];   /* "http://127.0.0.1:PORT" */
    char base_url[160]; /* origin + "/fhir" */
    char token_url[160];
    char register_url[160];
    char admin_url[160];
    char authorize_url[160];    /* origin + "/auth/authorize" */
    char jwks_url[160];         /* origin + "/auth/jwks": the id_token signing key */
    char storage_origin[128];   /* "http://localhost:PORT2" */
    char storage_base_url[160]; /* storage_origin + "/storage" */
    char issuer[144];           /* the authorization server: origin (+ "/practice/{i}") */
    /* --practices: the root owns the listeners, the request log and the practices; a practice
     * is a whole server of its own whose URLs start with /practice/{i} (practices.c). Without
     * --practices the root serves the single base and practice is 0. */
    unsigned practice;       /* 0: the root; i: practice i */
    sb_practices *practices; /* the root's, NULL without --practices */
    sb_meter meter;
    sb_data *data;
    sb_auth *auth;
    sb_launch *launch;
    sb_bulk *bulk;
    sb_faults *faults;
    sb_quirks *quirks;
    sb_reqlog *log;
    atomic_bool stopping;       /* set before the listeners stop: paced bodies give up */
    pthread_mutex_t clock_lock; /* orders transaction times against mutations */
    int64_t last_transaction_time;
    int64_t last_mutation_time;
} sb_server;

/* ---- fault rules (faults.c) ----------------------------------------------------------------- */
typedef enum sb_fault_kind {
    SB_FAULT_NONE = 0,
    SB_FAULT_429,
    SB_FAULT_503,
    SB_FAULT_500_TRANSIENT,
    SB_FAULT_RESET,
    SB_FAULT_SLOW,
    SB_FAULT_EXPIRE_TOKEN,
    SB_FAULT_TRUNCATE,
    SB_FAULT_WRONG_CONTENT_TYPE,
    SB_FAULT_HTML,
    SB_FAULT_REDIRECT,
    SB_FAULT_NEXT_OTHER_ORIGIN,
    SB_FAULT_NEXT_LOOP,
    SB_FAULT_MALFORMED_BUNDLE,
    SB_FAULT_RATE_LIMIT
} sb_fault_kind;

/* A fault that fired for one request: a copy of the rule's parameters. */
typedef struct sb_fault {
    sb_fault_kind kind;
    unsigned rule_id;
    int64_t retry_after;   /* seconds (429, 503, rate-limit) */
    bool retry_after_date; /* send Retry-After as an HTTP-date */
    unsigned status;       /* html: the status (500) */
    int64_t delay_ms;      /* slow */
    int64_t after_bytes;   /* reset: bytes sent before the connection is cut (-1: half) */
    char variant[32];      /* malformed-bundle: "entry-not-array" | "no-resource-type" */
} sb_fault;

const char *sb_fault_name(sb_fault_kind kind);

sb_faults *sb_faults_new(void);
void sb_faults_free(sb_faults *f);
/* Add a rule from its JSON; returns the rule id (> 0) or 0 with err filled. */
unsigned sb_faults_add(sb_faults *f, const json_t *rule, fhirsync_error *err);
/* Add a rule from JSON text (the --fault option). */
unsigned sb_faults_add_text(sb_faults *f, const char *text, fhirsync_error *err);
/* The rules with their hit counts: {"faults":[...]}. New reference. */
json_t *sb_faults_list(sb_faults *f);
void sb_faults_clear(sb_faults *f);
/* Find the first rule that fires for a request of category `on` from `client_id` (may be NULL)
 * and consume one of its count; fills *out and returns true when one fired. */
bool sb_faults_match(sb_faults *f, sb_on on, const char *client_id, int64_t now, sb_fault *out);

/* ---- quirk modes (quirks.c) ------------------------------------------------------------------ */
typedef enum sb_quirk_kind {
    SB_QUIRK_LATE_TRANSACTION_TIME = 0,
    SB_QUIRK_NO_DELETED,
    SB_QUIRK_EXTRA_TYPES,
    SB_QUIRK_IGNORE_POST_BODY,
    SB_QUIRK_IGNORE_RANGE,
    SB_QUIRK_TRUNCATE_SAME_PLACE, /* param: the byte offset (-1: half the file) */
    SB_QUIRK_TRICKLE,             /* param: bytes per second */
    SB_QUIRK_RETRY_AFTER_ZERO,    /* param: polls answered so (0: for ever) */
    SB_QUIRK_RETRY_AFTER_EPOCH,
    SB_QUIRK_EXPORT_NEEDS_WRITE_SCOPE,
    SB_QUIRK_ECHO_TOKEN_IN_ERRORS,
    SB_QUIRK_COUNT_MISMATCH, /* param: added to each output count */
    SB_QUIRK_CAPABILITY_FEWER_TYPES,
    SB_QUIRK_HTML_429,
    SB_QUIRK_NO_PROGRESS_HEADERS,
    SB_QUIRK_REQUEST_WITHOUT_QUERY,
    SB_QUIRK_REFRESH_NO_ROTATE,  /* the refresh grant returns the same, still valid token */
    SB_QUIRK_AUD_OTHER_URL,      /* text param: the URL /authorize wants as aud (origin) */
    SB_QUIRK_REFRESH_NO_CONTEXT, /* the refresh grant's answer has no patient */
    SB_QUIRK_REDIRECT_EXACT_PORT /* a loopback redirect_uri must have the registered port too */
} sb_quirk_kind;

#define SB_QUIRK_TEXT_MAX 256

const char *sb_quirk_name(sb_quirk_kind kind);
/* The known quirk names, comma-separated, into buf (for messages and --help). */
void sb_quirk_names(char *buf, size_t size);

sb_quirks *sb_quirks_new(void);
void sb_quirks_free(sb_quirks *q);
/* Turn a quirk on for `client_id` (NULL: every client), with its parameter when has_param.
 * Returns the entry id (> 0), or 0 with err filled (unknown name: the message lists the known
 * ones; a parameter out of range or given to a quirk without one). Thread-safe. */
unsigned sb_quirks_add(sb_quirks *q, const char *name, const char *client_id, bool has_param,
                       int64_t param, fhirsync_error *err);
/* sb_quirks_add with, for a quirk whose parameter is a text (aud-other-url), that text (NULL:
 * none; then has_param must be false). */
unsigned sb_quirks_add_text_param(sb_quirks *q, const char *name, const char *client_id,
                                  bool has_param, int64_t param, const char *text,
                                  fhirsync_error *err);
/* "NAME" or "NAME=N" (the --quirk option), for every client; "NAME=TEXT" for a text quirk. */
unsigned sb_quirks_add_text(sb_quirks *q, const char *text, fhirsync_error *err);
/* {"quirk": "NAME" or "NAME=N", "client_id": optional, "param": optional integer (a string for
 * a text quirk)}. */
unsigned sb_quirks_add_json(sb_quirks *q, const json_t *spec, fhirsync_error *err);
/* Remove the entries of quirk `name` (NULL: any) and client `client_id` (NULL: any; "" the
 * entries for every client); the number removed. */
size_t sb_quirks_remove(sb_quirks *q, const char *name, const char *client_id);
/* {"quirks":[{"id","quirk","param","hits","client_id"?}], "known":[names]}. New reference. */
json_t *sb_quirks_list(sb_quirks *q);
/* Whether quirk `kind` is on for `client_id` (an entry for that client first, then one for
 * every client). When on: *param (if not NULL) gets the parameter, *uses (if not NULL) how many
 * times the entry was asked before, and the entry's hits grow. */
bool sb_quirk_on(sb_quirks *q, sb_quirk_kind kind, const char *client_id, int64_t *param,
                 uint64_t *uses);
/* sb_quirk_on that also copies the entry's text parameter ("" when none) into text. */
bool sb_quirk_on_text(sb_quirks *q, sb_quirk_kind kind, const char *client_id, int64_t *param,
                      uint64_t *uses, char *text, size_t text_size);

/* ---- requests and replies (server.c, reply.c) ----------------------------------------------- */
typedef struct sb_request sb_request;

struct sb_request {
    sb_listener listener;
    const char *method;
    char *raw_uri;         /* as received: path and query, still encoded */
    const char *raw_query; /* after '?', "" when none (points into raw_uri) */
    char **segments;       /* decoded path segments */
    size_t nsegments;
    sb_params query; /* decoded query parameters */
    fs_buf body;
    bool body_too_large;
    const char *captures[4]; /* path segments matched by '*' in the route */
    sb_on on;                /* the route's category */
    void *connection;        /* for sb_req_header (server.c) */
    /* Filled while handling, for the request log and the faults */
    char client_id[128];
    sb_fault fault;    /* kind SB_FAULT_NONE when none fired */
    bool throttled;    /* refused by its practice's rate limit */
    unsigned practice; /* the practice it went to, 0 for none */
};

/* A request header (case-insensitive name), NULL when absent. Borrowed. */
const char *sb_req_header(const sb_request *req, const char *name);
/* The bearer token of the request, NULL when none. */
const char *sb_req_bearer(const sb_request *req);
/* The full URL of the request on this server (origin + raw URI), the caller's. */
char *sb_req_url(const sb_server *sb, const sb_request *req);

#define SB_MAX_REPLY_HEADERS 8

typedef struct sb_reply {
    unsigned status;          /* 0: not answered yet */
    const char *content_type; /* static string */
    fs_buf body;
    int fd; /* >= 0: the body is fd's [offset, offset + length) */
    uint64_t offset, length;
    bool cut;           /* the connection is dropped after cut_after bytes of the body */
    uint64_t cut_after; /* (truncate-same-place) */
    uint64_t rate;      /* > 0: the body is sent at this many bytes per second (trickle) */
    size_t nheaders;
    char *header_names[SB_MAX_REPLY_HEADERS];
    char *header_values[SB_MAX_REPLY_HEADERS];
} sb_reply;

#define SB_FHIR_JSON "application/fhir+json; charset=utf-8"
#define SB_JSON "application/json"
#define SB_NDJSON "application/fhir+ndjson"

void sb_reply_init(sb_reply *r);
void sb_reply_clear(sb_reply *r);
/* Add a header (copied). Silently ignored beyond SB_MAX_REPLY_HEADERS. */
void sb_reply_header(sb_reply *r, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Body set from a JSON value (compact), status and content type. Takes no reference. */
void sb_reply_json(sb_reply *r, unsigned status, const char *content_type, const json_t *value);
/* Body set from text. */
void sb_reply_text(sb_reply *r, unsigned status, const char *content_type, const char *text);
/* An OperationOutcome with one issue (severity error unless code is "informational"). */
void sb_reply_outcome(sb_reply *r, unsigned status, const char *issue_code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* An RFC 6749 error {"error","error_description"}, Cache-Control: no-store. */
void sb_reply_oauth_error(sb_reply *r, unsigned status, const char *error, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A Retry-After header of `seconds` for a request of `client_id`, as an HTTP-date when
 * http_date, or as an absolute epoch when the retry-after-epoch quirk is on for the client
 * (milliseconds the first time the quirk answers, seconds after). */
void sb_reply_retry_after(sb_server *sb, sb_reply *r, const char *client_id, int64_t seconds,
                          bool http_date);
/* An OperationOutcome object (new reference). */
json_t *sb_outcome_new(const char *severity, const char *code, const char *diagnostics);

/* ---- handlers ------------------------------------------------------------------------------- */
typedef void (*sb_handler)(sb_server *sb, sb_request *req, sb_reply *reply);

/* auth.c */
sb_auth *sb_auth_new(sb_server *sb, fhirsync_error *err);
void sb_auth_free(sb_auth *a);
/* Load clients from a --clients file. */
bool sb_auth_load_clients(sb_auth *a, const char *path, fhirsync_error *err);
/* Register a client from its JSON description (as POST /auth/register takes it). Returns the
 * client or NULL with err filled. */
const sb_client *sb_auth_register_json(sb_auth *a, const json_t *desc, fhirsync_error *err);
void sb_auth_handle_token(sb_server *sb, sb_request *req, sb_reply *reply);
void sb_auth_handle_register(sb_server *sb, sb_request *req, sb_reply *reply);

/* What a valid access token grants. */
typedef struct sb_grant {
    char client_id[128];
    char scope[1024];
    char patient[64]; /* the launch context of an app's token (a Patient id), "" when none */
} sb_grant;

/* Issue an opaque access token (the caller's secret) for the current access lifetime; patient
 * may be NULL. NULL on out of memory. */
char *sb_auth_issue_access_token(sb_auth *a, const char *client_id, const char *scope,
                                 const char *patient, int64_t now);
/* The access-token lifetime in seconds (--token-lifetime, or what the admin API set). */
int64_t sb_auth_access_lifetime(sb_auth *a);
void sb_auth_set_access_lifetime(sb_auth *a, int64_t seconds);
/* A registered client by id (valid until shutdown), NULL when unknown or id is NULL. */
const sb_client *sb_auth_find_client(sb_auth *a, const char *client_id);
/* How many clients are registered. */
size_t sb_auth_client_count(sb_auth *a);

/* Check the request's bearer token (401 + OperationOutcome + WWW-Authenticate into reply when
 * missing, unknown or expired) and, when `type` is not NULL, that its scopes grant `perms` on
 * the type (403). Fills grant and req->client_id. */
bool sb_auth_require(sb_server *sb, sb_request *req, sb_reply *reply, const char *type,
                     unsigned perms, sb_grant *grant);
/* The client a request speaks for without checking anything (bearer token owner, Basic user,
 * assertion iss): for fault matching. Writes "" when unknown. */
void sb_auth_peek_client(sb_server *sb, sb_request *req, char *client_id, size_t size);
/* Make every current token of `client_id` expire now (the expire-token fault). */
void sb_auth_expire_client_tokens(sb_auth *a, const char *client_id, int64_t now);

/* launch.c: SMART App Launch (standalone), see docs/sandbox.md */
#define SB_LAUNCH_USER "clinician"         /* the test user of the login form */
#define SB_LAUNCH_PASSWORD "sandbox-login" /* its password (POST /admin/launch changes both) */
sb_launch *sb_launch_new(sb_server *sb, fhirsync_error *err);
void sb_launch_free(sb_launch *l);
/* GET /auth/authorize: the checks, then the login form. */
void sb_launch_handle_authorize(sb_server *sb, sb_request *req, sb_reply *reply);
/* POST /auth/login: the login form's answer; the consent page. */
void sb_launch_handle_login(sb_server *sb, sb_request *req, sb_reply *reply);
/* POST /auth/consent: Allow (a code) or Deny (access_denied), as a redirect. */
void sb_launch_handle_consent(sb_server *sb, sb_request *req, sb_reply *reply);
/* GET /auth/jwks: the public key of the id_tokens. */
void sb_launch_handle_jwks(sb_server *sb, sb_request *req, sb_reply *reply);
/* The authorization_code and refresh_token grants, for a client auth.c authenticated. */
void sb_launch_handle_grant(sb_server *sb, const sb_client *client, const char *grant_type,
                            const sb_params *form, sb_reply *reply);
/* GET/POST /admin/launch (lifetimes, the test user), GET /admin/grants, POST /admin/revoke. */
void sb_launch_admin_get(sb_server *sb, sb_request *req, sb_reply *reply);
void sb_launch_admin_set(sb_server *sb, sb_request *req, sb_reply *reply);
void sb_launch_admin_grants(sb_server *sb, sb_request *req, sb_reply *reply);
void sb_launch_admin_revoke(sb_server *sb, sb_request *req, sb_reply *reply);

/* fhir.c */
void sb_fhir_handle_smart_config(sb_server *sb, sb_request *req, sb_reply *reply);
/* GET /.well-known/openid-configuration (the issuer is the origin): for the id_tokens. */
void sb_fhir_handle_openid_config(sb_server *sb, sb_request *req, sb_reply *reply);
void sb_fhir_handle_metadata(sb_server *sb, sb_request *req, sb_reply *reply);
void sb_fhir_handle_search(sb_server *sb, sb_request *req, sb_reply *reply);
void sb_fhir_handle_search_post(sb_server *sb, sb_request *req, sb_reply *reply);
void sb_fhir_handle_read(sb_server *sb, sb_request *req, sb_reply *reply);
/* The storage listener's copy of a search page (next-other-origin): no token needed. */
void sb_fhir_handle_storage_search(sb_server *sb, sb_request *req, sb_reply *reply);
/* Whether the request asked for strict handling (Prefer: handling=strict). */
bool sb_fhir_strict(const sb_request *req);

/* bulk.c */
sb_bulk *sb_bulk_new(sb_server *sb, fhirsync_error *err);
/* Cancel every job, wait for the threads and remove the files (and a temporary work dir). */
void sb_bulk_free(sb_bulk *b);
void sb_bulk_handle_kickoff(sb_server *sb, sb_request *req, sb_reply *reply);
void sb_bulk_handle_status(sb_server *sb, sb_request *req, sb_reply *reply);
void sb_bulk_handle_delete(sb_server *sb, sb_request *req, sb_reply *reply);
void sb_bulk_handle_file(sb_server *sb, sb_request *req, sb_reply *reply);
void sb_bulk_handle_storage_file(sb_server *sb, sb_request *req, sb_reply *reply);
/* Arm a mutation (fractions as sb_data_mutate) that the next export job started by `client_id`
 * (NULL: any client) applies right after taking its snapshot (its transactionTime), before it
 * writes anything. Returns the armed mutation's id (> 0), 0 when too many are armed. */
unsigned sb_bulk_arm_mutation(sb_bulk *b, double update, double del, const char *client_id);
/* {"armed":[{"id","update","delete","client_id"?}], "fired":[{"id","job","epoch","time"}]}
 * (the last 64 fired, oldest first). New reference. */
json_t *sb_bulk_mutations(sb_bulk *b);

/* admin.c */
void sb_admin_handle_mutate(sb_server *sb, sb_request *req, sb_reply *reply);
void sb_admin_handle_requests_get(sb_server *sb, sb_request *req, sb_reply *reply);
void sb_admin_handle_requests_delete(sb_server *sb, sb_request *req, sb_reply *reply);
void sb_admin_handle_faults_add(sb_server *sb, sb_request *req, sb_reply *reply);
void sb_admin_handle_faults_get(sb_server *sb, sb_request *req, sb_reply *reply);
void sb_admin_handle_faults_delete(sb_server *sb, sb_request *req, sb_reply *reply);
void sb_admin_handle_mutate_get(sb_server *sb, sb_request *req, sb_reply *reply);
void sb_admin_handle_quirks_add(sb_server *sb, sb_request *req, sb_reply *reply);
void sb_admin_handle_quirks_get(sb_server *sb, sb_request *req, sb_reply *reply);
void sb_admin_handle_quirks_delete(sb_server *sb, sb_request *req, sb_reply *reply);
/* state.c: GET /admin/state[?type=T][&summary=1] */
void sb_admin_handle_state(sb_server *sb, sb_request *req, sb_reply *reply);

/* reqlog.c */
typedef struct sb_reqlog_entry {
    const char *method;
    const char *uri;  /* raw URI; secret-looking query values are masked */
    const char *host; /* Host header, may be NULL */
    unsigned port;
    sb_listener listener;
    bool bearer;
    unsigned status;
    const char *client_id; /* "" or NULL when unknown */
    const char *fault;     /* NULL when none fired */
    unsigned practice;     /* --practices: the practice it went to; 0 for none */
} sb_reqlog_entry;

sb_reqlog *sb_reqlog_new(const char *file, fhirsync_error *err);
void sb_reqlog_free(sb_reqlog *l);
void sb_reqlog_add(sb_reqlog *l, const sb_reqlog_entry *e);
/* The entries with seq > since (of practice `practice` only, unless 0) as NDJSON, oldest first
 * (caller frees). */
char *sb_reqlog_dump(sb_reqlog *l, uint64_t since, unsigned practice, size_t *len);
size_t sb_reqlog_clear(sb_reqlog *l);

/* ---- practices.c: several practices on one port (--practices) -------------------------------- */
/* The URLs of a server (origin, base, token, register, admin, authorize, jwks, issuer, storage)
 * from its port, storage port, TLS and host, with `prefix` ("" or "/practice/3") between the
 * origin and each path (server.c). */
void sb_server_format_urls(sb_server *sb, const char *prefix);

/* Create the root's cfg.practices practices with their generated data (sizes from
 * sb_gen_split_patients, practice i's seed cfg.seed + i), fault rules and quirks, and their
 * export folder (--work-dir or a temporary dir, shared). Before the listeners start. */
sb_practices *sb_practices_new(sb_server *root, fhirsync_error *err);
/* Once the root knows its ports: each practice's URLs, clients, App Launch and exports. */
bool sb_practices_start(sb_practices *ps, sb_server *root, fhirsync_error *err);
/* From now on dispatch hands /practice/{i} requests to the practices. */
void sb_practices_publish(sb_practices *ps);
/* Tell every practice that the server stops (paced bodies give up). */
void sb_practices_stopping(sb_practices *ps);
/* Free every practice (after the listeners stopped) and remove the work dirs. */
void sb_practices_free(sb_practices *ps);
uint32_t sb_practices_count(const sb_practices *ps);
/* Practice `number` (a path segment: decimal, 1..count, no leading zero) once published; NULL
 * otherwise. */
sb_server *sb_practices_find(sb_practices *ps, const char *number);
/* Apply a fault rule or quirk (the --fault/--quirk text) to every practice; false with err. */
bool sb_practices_add_fault_text(sb_practices *ps, const char *text, fhirsync_error *err);
bool sb_practices_add_quirk_text(sb_practices *ps, const char *text, fhirsync_error *err);
/* --practice-quirk I:NAME[=N]: a quirk for every client of practice I. */
bool sb_practices_add_practice_quirk(sb_practices *ps, const char *text, fhirsync_error *err);
/* --clients in practice mode: an entry with "practice": I (or a list of them) is registered
 * with those practices only, one without it with every practice. */
bool sb_practices_load_clients(sb_practices *ps, const char *path, fhirsync_error *err);
/* The ready file's list: [{"practice", "base_url", "token_url", "register_url", "admin_url",
 * "patients"}]. New reference, NULL on out of memory. */
json_t *sb_practices_ready_list(sb_practices *ps);

/* The meter. Count a request (`token`: to the token endpoint) at `now`; false when the rate
 * limit refuses it, with *limit the limit and *retry_after the seconds to the next minute. */
void sb_meter_init(sb_meter *m, uint32_t rate_limit, int64_t now);
void sb_meter_destroy(sb_meter *m);
bool sb_meter_admit(sb_meter *m, bool token, int64_t now, uint32_t *limit, int64_t *retry_after);
void sb_meter_count_status(sb_meter *m, unsigned status);
void sb_meter_count_token_issued(sb_meter *m);

/* GET /admin/practices[/{i}], POST (set rate_limit), DELETE (reset the counters). */
void sb_admin_handle_practices_get(sb_server *sb, sb_request *req, sb_reply *reply);
void sb_admin_handle_practices_set(sb_server *sb, sb_request *req, sb_reply *reply);
void sb_admin_handle_practices_reset(sb_server *sb, sb_request *req, sb_reply *reply);

/* ---- clocks --------------------------------------------------------------------------------- */
/* The transaction time for a new export: now, but never before the last mutation, so that a
 * resource changed after an export's transactionTime always has lastUpdated > transactionTime. */
int64_t sb_transaction_time(sb_server *sb);
/* The time for a new mutation epoch: now, but after every transaction time handed out. */
int64_t sb_mutation_time(sb_server *sb);

#endif
