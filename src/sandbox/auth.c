/* sandbox/auth.c: the sandbox's authorization server: registered clients (from --clients and
 * POST /auth/register: backend services, and apps of the authorization-code flow that register
 * redirect_uris), the token endpoint (client_credentials with a private_key_jwt assertion, or
 * client_secret_basic for symmetric clients; the authorization_code and refresh_token grants are
 * handed to launch.c after the client is authenticated here), and the store of the opaque access
 * tokens it issues, which the FHIR and bulk handlers check through sb_auth_require().
 *
 * The token endpoint is deliberately strict and checks in a fixed order, each failure an RFC 6749
 * error whose description names the check: Content-Type, two client authentication methods,
 * grant_type, client_assertion_type, then the assertion checks of assertion.c, then the scopes. */
#include <string.h>

#include <openssl/crypto.h>

#include "http/http.h"
#include "jose/jose.h"
#include "sandbox.h"

#define TOKEN_SLOTS 1024
#define MAX_CLIENTS 10000
#define JWT_BEARER "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#define MAX_REDIRECT_URIS 10
#define MAX_REDIRECT_URI_LEN 512
/* what an app may ask for when it registers no scope */
#define APP_DEFAULT_SCOPE                                                                          \
    "openid fhirUser profile offline_access online_access launch/patient patient/*.cruds "         \
    "user/*.cruds"

typedef struct token_entry {
    struct token_entry *next;
    char token[64];
    char client_id[128];
    char patient[64]; /* the launch context, "" when none */
    char *scope;
    int64_t expires;
} token_entry;

struct sb_auth {
    sb_server *sb;
    pthread_rwlock_t clients_lock;
    sb_client **clients;
    size_t nclients, cap;
    sb_jti_store *jtis;
    pthread_mutex_t tokens_lock;
    token_entry *tokens[TOKEN_SLOTS];
    size_t ntokens;
    _Atomic int64_t access_lifetime; /* seconds; --token-lifetime, changed by the admin API */
};

/* ---- clients -------------------------------------------------------------------------------- */

static void client_free(sb_client *c)
{
    if (!c)
        return;
    fs_free(c->client_id);
    json_decref(c->jwks);
    fs_free(c->jwks_uri);
    fs_free(c->scope);
    fs_free_secret(c->client_secret);
    for (size_t i = 0; i < c->nredirect_uris; i++)
        fs_free(c->redirect_uris[i]);
    fs_free(c->redirect_uris);
    fs_free(c);
}

static const sb_client *find_client(sb_auth *a, const char *client_id)
{
    const sb_client *found = NULL;
    pthread_rwlock_rdlock(&a->clients_lock);
    for (size_t i = 0; i < a->nclients && !found; i++)
        if (!strcmp(a->clients[i]->client_id, client_id))
            found = a->clients[i];
    pthread_rwlock_unlock(&a->clients_lock);
    return found;
}

static const sb_client *lookup_cb(void *ctx, const char *client_id)
{
    return find_client(ctx, client_id);
}

static bool valid_client_id(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n >= 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_' || c == '~'))
            return false;
    }
    return true;
}

static bool check_jwks(const json_t *jwks, fhirsync_error *err)
{
    json_t *keys = json_object_get(jwks, "keys");
    if (!json_is_object(jwks) || !json_is_array(keys) || json_array_size(keys) == 0) {
        fs_err(err, FHIRSYNC_E_ARG, "jwks must be a JWK Set: {\"keys\": [ ... ]} with keys");
        return false;
    }
    size_t i;
    for (i = 0; i < json_array_size(keys); i++) {
        json_t *key = json_array_get(keys, i);
        if (!fs_json_str(key, "kid")) {
            fs_err(err, FHIRSYNC_E_ARG, "jwks.keys[%zu] has no kid", i);
            return false;
        }
        if (json_object_get(key, "d") || json_object_get(key, "p")) {
            fs_err(err, FHIRSYNC_E_ARG,
                   "jwks.keys[%zu] holds private key material: register "
                   "the public key only",
                   i);
            return false;
        }
        fhirsync_error detail;
        EVP_PKEY *pkey = fs_jwk_to_public_pkey(key, &detail);
        if (!pkey) {
            fs_err(err, FHIRSYNC_E_ARG, "jwks.keys[%zu] is not a usable public key: %s", i,
                   detail.message);
            return false;
        }
        EVP_PKEY_free(pkey);
    }
    return true;
}

/* redirect_uris: absolute http(s) URLs without a fragment (RFC 6749 3.1.2), compared exactly
 * at /authorize. Their presence makes the client an authorization-code app. */
static bool register_redirect_uris(sb_client *c, const json_t *uris, fhirsync_error *err)
{
    if (!uris)
        return true;
    size_t n = json_array_size(uris);
    if (!json_is_array(uris) || n == 0 || n > MAX_REDIRECT_URIS) {
        fs_err(err, FHIRSYNC_E_ARG, "redirect_uris must be an array of 1 to %d URLs",
               MAX_REDIRECT_URIS);
        return false;
    }
    if (!(c->redirect_uris = fs_calloc(n, sizeof *c->redirect_uris))) {
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        const char *uri = json_string_value(json_array_get(uris, i));
        if (!uri || strlen(uri) > MAX_REDIRECT_URI_LEN ||
            !(fs_starts_with(uri, "https://") || fs_starts_with(uri, "http://")) ||
            strchr(uri, '#') || strpbrk(uri, " \t\r\n<>\"")) {
            fs_err(err, FHIRSYNC_E_ARG,
                   "redirect_uris[%zu] must be an absolute http(s) URL without a fragment", i);
            return false;
        }
        if (!(c->redirect_uris[i] = fs_strdup(uri))) {
            fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
            return false;
        }
        c->nredirect_uris = i + 1;
    }
    c->app = true;
    return true;
}

const sb_client *sb_auth_register_json(sb_auth *a, const json_t *desc, fhirsync_error *err)
{
    sb_client *c = NULL;
    if (!json_is_object(desc)) {
        fs_err(err, FHIRSYNC_E_ARG, "a client description is a JSON object");
        goto fail;
    }
    if (!(c = fs_calloc(1, sizeof *c)))
        goto oom;
    json_t *id_value = json_object_get(desc, "client_id");
    const char *client_id = json_string_value(id_value);
    if (id_value && (!client_id || !valid_client_id(client_id))) {
        fs_err(err, FHIRSYNC_E_ARG, "client_id must be 1 to 127 characters of [A-Za-z0-9._~-]");
        goto fail;
    }
    if (client_id) {
        if (!(c->client_id = fs_strdup(client_id)))
            goto oom;
    } else {
        char *random = fs_random_id(12);
        if (!random)
            goto oom;
        size_t n = strlen(random) + 8;
        c->client_id = fs_malloc(n);
        if (c->client_id)
            snprintf(c->client_id, n, "client-%s", random);
        fs_free(random);
        if (!c->client_id)
            goto oom;
    }
    json_t *jwks = json_object_get(desc, "jwks");
    json_t *jwks_uri = json_object_get(desc, "jwks_uri");
    json_t *secret = json_object_get(desc, "client_secret");
    if (!register_redirect_uris(c, json_object_get(desc, "redirect_uris"), err))
        goto fail;
    const char *method = fs_json_str(desc, "token_endpoint_auth_method");
    if (json_object_get(desc, "token_endpoint_auth_method") && !method) {
        fs_err(err, FHIRSYNC_E_ARG, "token_endpoint_auth_method must be a string");
        goto fail;
    }
    if (!method && c->app && !secret && !jwks && !jwks_uri)
        method = "none";
    if (!method)
        method = secret && !jwks && !jwks_uri ? "client_secret_basic" : "private_key_jwt";
    bool app_method = !strcmp(method, "none") || !strcmp(method, "client_secret_post");
    if (app_method && !c->app) {
        fs_err(err, FHIRSYNC_E_ARG,
               "token_endpoint_auth_method %s is for apps of the authorization code flow: "
               "register redirect_uris",
               method);
        goto fail;
    }
    if (!strcmp(method, "none")) {
        c->method = SB_AUTH_NONE;
        if (secret || jwks || jwks_uri) {
            fs_err(err, FHIRSYNC_E_ARG, "a public client (none) registers no secret and no keys");
            goto fail;
        }
    } else if (!strcmp(method, "private_key_jwt")) {
        c->method = SB_AUTH_PRIVATE_KEY_JWT;
        if (!jwks == !jwks_uri) {
            fs_err(err, FHIRSYNC_E_ARG,
                   "a private_key_jwt client registers exactly one of jwks "
                   "and jwks_uri");
            goto fail;
        }
        if (secret) {
            fs_err(err, FHIRSYNC_E_ARG, "a private_key_jwt client has no client_secret");
            goto fail;
        }
        if (jwks) {
            if (!check_jwks(jwks, err))
                goto fail;
            if (!(c->jwks = json_deep_copy(jwks)))
                goto oom;
        } else {
            const char *uri = json_string_value(jwks_uri);
            if (!uri || !(fs_starts_with(uri, "https://") || fs_starts_with(uri, "http://"))) {
                fs_err(err, FHIRSYNC_E_ARG, "jwks_uri must be an http(s) URL");
                goto fail;
            }
            if (!(c->jwks_uri = fs_strdup(uri)))
                goto oom;
        }
    } else if (!strcmp(method, "client_secret_basic") || !strcmp(method, "client_secret_post")) {
        c->method = !strcmp(method, "client_secret_basic") ? SB_AUTH_CLIENT_SECRET_BASIC
                                                           : SB_AUTH_CLIENT_SECRET_POST;
        const char *s = json_string_value(secret);
        if (!s || !*s || jwks || jwks_uri) {
            fs_err(err, FHIRSYNC_E_ARG,
                   "a %s client registers a non-empty "
                   "client_secret and no keys",
                   method);
            goto fail;
        }
        if (!(c->client_secret = fs_strdup(s)))
            goto oom;
    } else {
        fs_err(err, FHIRSYNC_E_ARG,
               "token_endpoint_auth_method %.40s is not private_key_jwt, client_secret_basic, "
               "client_secret_post or none",
               method);
        goto fail;
    }
    json_t *scope = json_object_get(desc, "scope");
    if (scope && !json_is_string(scope)) {
        fs_err(err, FHIRSYNC_E_ARG, "scope must be a space-separated string");
        goto fail;
    }
    const char *scope_text = scope    ? json_string_value(scope)
                             : c->app ? APP_DEFAULT_SCOPE
                                      : "system/*.read";
    if (!*scope_text ||
        !(c->app ? sb_app_scopes_valid(scope_text, err) : sb_scopes_valid(scope_text, err)))
        goto fail;
    if (!(c->scope = fs_strdup(scope_text)))
        goto oom;
    json_t *algs = json_object_get(desc, "algs");
    if (!algs) {
        c->algs = (1u << FHIRSYNC_ALG_RS384) | (1u << FHIRSYNC_ALG_ES384);
    } else {
        size_t i;
        if (!json_is_array(algs) || json_array_size(algs) == 0) {
            fs_err(err, FHIRSYNC_E_ARG,
                   "algs must be a non-empty array such as "
                   "[\"RS384\",\"ES384\"]");
            goto fail;
        }
        for (i = 0; i < json_array_size(algs); i++) {
            json_t *alg = json_array_get(algs, i);
            fhirsync_alg value = fhirsync_alg_from_name(json_string_value(alg));
            if (value == FHIRSYNC_ALG_NONE) {
                fs_err(err, FHIRSYNC_E_ARG, "algs[%zu] is not a supported JWS algorithm", i);
                goto fail;
            }
            c->algs |= 1u << value;
        }
    }
    pthread_rwlock_wrlock(&a->clients_lock);
    bool duplicate = false;
    for (size_t i = 0; i < a->nclients && !duplicate; i++)
        duplicate = !strcmp(a->clients[i]->client_id, c->client_id);
    bool added = false;
    if (!duplicate && a->nclients < MAX_CLIENTS) {
        if (a->nclients == a->cap) {
            sb_client **grown = fs_array_grow(a->clients, &a->cap, sizeof *grown, 16);
            if (grown)
                a->clients = grown;
        }
        if (a->nclients < a->cap) {
            a->clients[a->nclients++] = c;
            added = true;
        }
    }
    pthread_rwlock_unlock(&a->clients_lock);
    if (!added) {
        fs_err(err, FHIRSYNC_E_ARG,
               duplicate ? "client_id %s is already registered"
                         : "cannot register %s: too many clients",
               c->client_id);
        goto fail;
    }
    return c;
oom:
    fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
fail:
    client_free(c);
    return NULL;
}

static json_t *client_json(const sb_client *c)
{
    json_t *algs = json_array();
    for (int a = 1; a < 32; a++)
        if ((c->algs & (1u << a)) && fhirsync_alg_name((fhirsync_alg)a))
            json_array_append_new(algs, json_string(fhirsync_alg_name((fhirsync_alg)a)));
    json_t *out =
        json_pack("{s:s, s:s, s:s, s:o*}", "client_id", c->client_id, "token_endpoint_auth_method",
                  sb_auth_method_name(c->method), "scope", c->scope, "algs", algs);
    if (out && c->app) {
        json_t *uris = json_array();
        for (size_t i = 0; uris && i < c->nredirect_uris; i++)
            json_array_append_new(uris, json_string(c->redirect_uris[i]));
        json_object_set_new(out, "redirect_uris", uris);
        json_object_set_new(out, "grant_types",
                            json_pack("[s, s]", "authorization_code", "refresh_token"));
    }
    if (out && c->jwks)
        json_object_set(out, "jwks", c->jwks);
    if (out && c->jwks_uri)
        json_object_set_new(out, "jwks_uri", json_string(c->jwks_uri));
    return out;
}

bool sb_auth_load_clients(sb_auth *a, const char *path, fhirsync_error *err)
{
    json_error_t jerr;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    bool ok = false;
    if (!doc) {
        fs_err(err, FHIRSYNC_E_CONFIG, "not readable JSON (line %d: %s)", jerr.line, jerr.text);
        return false;
    }
    json_t *list = json_object_get(doc, "clients");
    if (!json_is_array(list)) {
        fs_err(err, FHIRSYNC_E_CONFIG, "expected {\"clients\": [ ... ]}");
        goto out;
    }
    size_t i;
    for (i = 0; i < json_array_size(list); i++) {
        json_t *desc = json_array_get(list, i);
        if (!sb_auth_register_json(a, desc, err)) {
            fs_err_prefix(err, "clients[%zu]", i);
            goto out;
        }
    }
    ok = true;
out:
    json_decref(doc);
    return ok;
}

/* ---- JWKS by URL ---------------------------------------------------------------------------- */

static json_t *fetch_jwks(void *ctx, const char *uri, fhirsync_error *err)
{
    json_t *jwks = NULL;
    fs_http *http = fs_http_new("fhirsync-sandbox");
    fs_http_response resp;
    fs_http_response_init(&resp);
    static const char *const headers[] = {"Accept: application/json", NULL};
    fs_http_request req = {
        .method = "GET",
        .url = uri,
        .headers = headers,
        .redirects = FS_REDIRECT_NONE,
        .max_body = 256 * 1024,
        .connect_timeout_s = 5,
        .timeout_s = 10,
    };
    if (!http) {
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        goto out;
    }
    if (fs_http_perform(http, &req, &resp, err) != FHIRSYNC_OK)
        goto out;
    if (resp.status != 200) {
        fs_err(err, FHIRSYNC_E_HTTP, "HTTP %ld", resp.status);
        goto out;
    }
    if (!(jwks = fs_json_parse(resp.body.data, resp.body.len, true, "JWKS", err)))
        goto out;
    if (!json_is_array(json_object_get(jwks, "keys"))) {
        fs_err(err, FHIRSYNC_E_JSON, "the JWKS has no keys array");
        json_decref(jwks);
        jwks = NULL;
    }
out:
    fs_http_response_clear(&resp);
    fs_http_free(http);
    return jwks;
}

/* ---- tokens --------------------------------------------------------------------------------- */

static void token_free(token_entry *t)
{
    OPENSSL_cleanse(t->token, sizeof t->token);
    fs_free(t->scope);
    fs_free(t);
}

/* Drop tokens that expired more than an hour ago (kept that long to answer "expired"). */
static void purge_tokens(sb_auth *a, int64_t now)
{
    for (size_t i = 0; i < TOKEN_SLOTS; i++) {
        token_entry **link = &a->tokens[i];
        while (*link) {
            token_entry *t = *link;
            if (t->expires + 3600 < now) {
                *link = t->next;
                token_free(t);
                a->ntokens--;
            } else {
                link = &t->next;
            }
        }
    }
}

static char *issue_token(sb_auth *a, const char *client_id, const char *scope, const char *patient,
                         int64_t now)
{
    token_entry *t = fs_calloc(1, sizeof *t);
    char *token = fs_random_id(32);
    if (!t || !token || !(t->scope = fs_strdup(scope))) {
        if (t)
            token_free(t);
        fs_free_secret(token);
        return NULL;
    }
    snprintf(t->token, sizeof t->token, "%s", token);
    snprintf(t->client_id, sizeof t->client_id, "%s", client_id);
    snprintf(t->patient, sizeof t->patient, "%s", patient ? patient : "");
    t->expires = now + atomic_load(&a->access_lifetime);
    pthread_mutex_lock(&a->tokens_lock);
    if (a->ntokens > 0 && a->ntokens % 4096 == 0)
        purge_tokens(a, now);
    size_t at = fs_fnv1a_str(FS_FNV1A_INIT, t->token) % TOKEN_SLOTS;
    t->next = a->tokens[at];
    a->tokens[at] = t;
    a->ntokens++;
    pthread_mutex_unlock(&a->tokens_lock);
    sb_meter_count_token_issued(&a->sb->meter);
    return token;
}

typedef enum token_state { TOKEN_UNKNOWN, TOKEN_EXPIRED, TOKEN_VALID } token_state;

static token_state find_token(sb_auth *a, const char *token, int64_t now, sb_grant *grant)
{
    token_state state = TOKEN_UNKNOWN;
    size_t len = strlen(token);
    if (len >= 64)
        return TOKEN_UNKNOWN;
    pthread_mutex_lock(&a->tokens_lock);
    for (token_entry *t = a->tokens[fs_fnv1a_str(FS_FNV1A_INIT, token) % TOKEN_SLOTS]; t;
         t = t->next) {
        if (fs_consttime_eq(t->token, strlen(t->token), token, len)) {
            state = t->expires > now ? TOKEN_VALID : TOKEN_EXPIRED;
            if (grant) {
                snprintf(grant->client_id, sizeof grant->client_id, "%s", t->client_id);
                snprintf(grant->scope, sizeof grant->scope, "%s", t->scope);
                snprintf(grant->patient, sizeof grant->patient, "%s", t->patient);
            }
            break;
        }
    }
    pthread_mutex_unlock(&a->tokens_lock);
    return state;
}

char *sb_auth_issue_access_token(sb_auth *a, const char *client_id, const char *scope,
                                 const char *patient, int64_t now)
{
    return issue_token(a, client_id, scope, patient, now);
}

int64_t sb_auth_access_lifetime(sb_auth *a)
{
    return atomic_load(&a->access_lifetime);
}

void sb_auth_set_access_lifetime(sb_auth *a, int64_t seconds)
{
    atomic_store(&a->access_lifetime, seconds);
}

const sb_client *sb_auth_find_client(sb_auth *a, const char *client_id)
{
    return client_id ? find_client(a, client_id) : NULL;
}

size_t sb_auth_client_count(sb_auth *a)
{
    pthread_rwlock_rdlock(&a->clients_lock);
    size_t n = a->nclients;
    pthread_rwlock_unlock(&a->clients_lock);
    return n;
}

void sb_auth_expire_client_tokens(sb_auth *a, const char *client_id, int64_t now)
{
    pthread_mutex_lock(&a->tokens_lock);
    for (size_t i = 0; i < TOKEN_SLOTS; i++)
        for (token_entry *t = a->tokens[i]; t; t = t->next)
            if (!strcmp(t->client_id, client_id) && t->expires > now - 1)
                t->expires = now - 1;
    pthread_mutex_unlock(&a->tokens_lock);
}

/* ---- life cycle ----------------------------------------------------------------------------- */

sb_auth *sb_auth_new(sb_server *sb, fhirsync_error *err)
{
    sb_auth *a = fs_calloc(1, sizeof *a);
    if (!a || !(a->jtis = sb_jti_store_new())) {
        fs_free(a);
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        return NULL;
    }
    a->sb = sb;
    atomic_init(&a->access_lifetime, sb->cfg.token_lifetime);
    pthread_rwlock_init(&a->clients_lock, NULL);
    pthread_mutex_init(&a->tokens_lock, NULL);
    return a;
}

void sb_auth_free(sb_auth *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->nclients; i++)
        client_free(a->clients[i]);
    fs_free(a->clients);
    for (size_t i = 0; i < TOKEN_SLOTS; i++) {
        token_entry *t = a->tokens[i];
        while (t) {
            token_entry *next = t->next;
            token_free(t);
            t = next;
        }
    }
    sb_jti_store_free(a->jtis);
    pthread_rwlock_destroy(&a->clients_lock);
    pthread_mutex_destroy(&a->tokens_lock);
    fs_free(a);
}

/* ---- the token endpoint --------------------------------------------------------------------- */

/* Check the requested scopes against the client's; the granted scope string (caller frees) or
 * NULL with the reply set. */
static char *grant_scopes(const sb_client *client, const char *requested, sb_reply *reply)
{
    if (!requested || !*requested)
        return fs_strdup(client->scope);
    fs_buf granted;
    fs_buf_init(&granted);
    const char *p = requested;
    while (*p) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, " ");
        if (n == 0)
            break;
        char one[256];
        if (n >= sizeof one) {
            sb_reply_oauth_error(reply, 400, "invalid_scope", "scope %.60s... is too long", p);
            goto fail;
        }
        memcpy(one, p, n);
        one[n] = '\0';
        p += n;
        sb_scope want;
        fhirsync_error err;
        if (!sb_scope_parse(one, &want, &err)) {
            sb_reply_oauth_error(reply, 400, "invalid_scope",
                                 "%s (a backend service asks for "
                                 "system/ scopes only)",
                                 err.message);
            goto fail;
        }
        bool within = false;
        const char *q = client->scope;
        while (*q && !within) {
            while (*q == ' ')
                q++;
            size_t m = strcspn(q, " ");
            char allowed_text[256];
            if (m > 0 && m < sizeof allowed_text) {
                memcpy(allowed_text, q, m);
                allowed_text[m] = '\0';
                sb_scope allowed;
                within = sb_scope_parse(allowed_text, &allowed, NULL) &&
                         sb_scope_within(&want, &allowed);
            }
            q += m;
        }
        if (!within) {
            sb_reply_oauth_error(reply, 400, "invalid_scope",
                                 "scope %s is not allowed for "
                                 "client %s (allowed: %s)",
                                 one, client->client_id, client->scope);
            goto fail;
        }
        /* keep each scope once, in the order asked */
        bool repeated = false;
        const char *g = granted.data ? granted.data : "";
        for (const char *at = strstr(g, one); at && !repeated; at = strstr(at + 1, one))
            repeated = (at == g || at[-1] == ' ') && (at[n] == ' ' || at[n] == '\0');
        if (!repeated && !((granted.len == 0 || fs_buf_append(&granted, " ", 1)) &&
                           fs_buf_append_str(&granted, one))) {
            sb_reply_oauth_error(reply, 500, "server_error", "out of memory");
            goto fail;
        }
    }
    if (granted.len == 0) {
        fs_buf_free(&granted);
        return fs_strdup(client->scope);
    }
    return fs_buf_steal(&granted);
fail:
    fs_buf_free(&granted);
    return NULL;
}

/* client_credentials is for backend services: an app of the code flow gets unauthorized_client. */
static bool backend_client(const sb_client *client, sb_reply *reply)
{
    if (!client->app)
        return true;
    sb_reply_oauth_error(reply, 400, "unauthorized_client",
                         "client %s is registered for the authorization code flow "
                         "(redirect_uris), not client_credentials",
                         client->client_id);
    return false;
}

static void token_success(sb_server *sb, const sb_client *client, const char *scope,
                          sb_reply *reply)
{
    int64_t lifetime = sb_auth_access_lifetime(sb->auth);
    char *token = issue_token(sb->auth, client->client_id, scope, NULL, fs_now());
    if (!token) {
        sb_reply_oauth_error(reply, 500, "server_error", "out of memory issuing a token");
        return;
    }
    json_t *body = json_pack("{s:s, s:s, s:I, s:s}", "access_token", token, "token_type", "bearer",
                             "expires_in", (json_int_t)lifetime, "scope", scope);
    if (body)
        sb_reply_json(reply, 200, SB_JSON, body);
    else
        sb_reply_oauth_error(reply, 500, "server_error", "out of memory");
    sb_reply_header(reply, "Cache-Control", "no-store");
    sb_reply_header(reply, "Pragma", "no-cache");
    if (body) {
        /* the reply holds its own copy; wipe ours */
        json_t *value = json_object_get(body, "access_token");
        if (value)
            OPENSSL_cleanse((char *)json_string_value(value), strlen(token));
    }
    json_decref(body);
    fs_free_secret(token);
}

static void token_basic(sb_server *sb, sb_request *req, const char *authorization,
                        const sb_params *form, sb_reply *reply)
{
    char *user = NULL, *password = NULL, *scope = NULL;
    if (!sb_basic_auth_parse(authorization, &user, &password)) {
        sb_reply_oauth_error(reply, 401, "invalid_client",
                             "the Authorization Basic header is "
                             "malformed (client_secret_basic)");
        sb_reply_header(reply, "WWW-Authenticate", "Basic realm=\"fhirsync-sandbox\"");
        goto out;
    }
    snprintf(req->client_id, sizeof req->client_id, "%s", user);
    const sb_client *client = find_client(sb->auth, user);
    if (!client) {
        sb_reply_oauth_error(reply, 401, "invalid_client",
                             "unknown client_id %.80s "
                             "(client_secret_basic)",
                             user);
        sb_reply_header(reply, "WWW-Authenticate", "Basic realm=\"fhirsync-sandbox\"");
        goto out;
    }
    if (client->method != SB_AUTH_CLIENT_SECRET_BASIC) {
        sb_reply_oauth_error(reply, 401, "invalid_client",
                             "client_id %.80s is registered for "
                             "%s, not client_secret_basic",
                             user, sb_auth_method_name(client->method));
        sb_reply_header(reply, "WWW-Authenticate", "Basic realm=\"fhirsync-sandbox\"");
        goto out;
    }
    if (!fs_consttime_eq(client->client_secret, strlen(client->client_secret), password,
                         strlen(password))) {
        sb_reply_oauth_error(reply, 401, "invalid_client",
                             "the client secret does not match "
                             "(client_secret_basic)");
        sb_reply_header(reply, "WWW-Authenticate", "Basic realm=\"fhirsync-sandbox\"");
        goto out;
    }
    if (!backend_client(client, reply) ||
        !(scope = grant_scopes(client, sb_params_get(form, "scope"), reply)))
        goto out;
    token_success(sb, client, scope, reply);
out:
    fs_free(user);
    fs_free_secret(password);
    fs_free(scope);
}

/* The private_key_jwt checks of assertion.c against this server (both token paths). */
static const sb_client *check_assertion(sb_server *sb, const char *assertion, fhirsync_error *err)
{
    sb_assertion_ctx ctx = {
        .token_url = sb->token_url,
        .rs384_only = sb->cfg.rs384_only,
        .now = fs_now(),
        .lookup = lookup_cb,
        .fetch_jwks = fetch_jwks,
        .cb_ctx = sb->auth,
        .jtis = sb->auth->jtis,
    };
    return sb_assertion_check(&ctx, assertion, err);
}

/* The client of an authorization_code or refresh_token request, authenticated the way it
 * registered: private_key_jwt (the same assertion checks as client_credentials), Basic or a
 * client_secret in the body, or for a public client its client_id alone. A client_id form field,
 * when sent, must name the same client. NULL with the reply set (401 invalid_client). */
static const sb_client *authenticate_app(sb_server *sb, sb_request *req, const sb_params *form,
                                         const char *authorization, sb_reply *reply)
{
    const sb_client *client = NULL, *found = NULL;
    const char *form_id = sb_params_get(form, "client_id");
    const char *assertion = sb_params_get(form, "client_assertion");
    const char *secret = sb_params_get(form, "client_secret");
    char *user = NULL, *password = NULL;
    sb_auth_method used;
    fhirsync_error err;
    fs_err_clear(&err);
    if (assertion) {
        used = SB_AUTH_PRIVATE_KEY_JWT;
        const char *assertion_type = sb_params_get(form, "client_assertion_type");
        if (!assertion_type || strcmp(assertion_type, JWT_BEARER) != 0) {
            sb_reply_oauth_error(reply, 400, "invalid_request",
                                 "client_assertion_type must be %s, not %.80s", JWT_BEARER,
                                 assertion_type ? assertion_type : "(none)");
            goto out;
        }
        if (!(found = check_assertion(sb, assertion, &err))) {
            sb_reply_oauth_error(reply, 401, "invalid_client", "%s", err.message);
            goto out;
        }
    } else if (authorization) {
        used = SB_AUTH_CLIENT_SECRET_BASIC;
        if (strncasecmp(authorization, "Basic ", 6) != 0 ||
            !sb_basic_auth_parse(authorization, &user, &password)) {
            sb_reply_oauth_error(reply, 401, "invalid_client",
                                 "the Authorization header is not a well-formed Basic "
                                 "credential (client_secret_basic)");
            sb_reply_header(reply, "WWW-Authenticate", "Basic realm=\"fhirsync-sandbox\"");
            goto out;
        }
        found = find_client(sb->auth, user);
    } else if (secret) {
        used = SB_AUTH_CLIENT_SECRET_POST;
        found = form_id ? find_client(sb->auth, form_id) : NULL;
        if (!form_id) {
            sb_reply_oauth_error(reply, 401, "invalid_client",
                                 "client_secret_post needs the client_id in the body");
            goto out;
        }
    } else {
        used = SB_AUTH_NONE;
        if (!form_id) {
            sb_reply_oauth_error(reply, 401, "invalid_client",
                                 "no client authentication: a public client sends its client_id; "
                                 "a confidential one a client_assertion or its secret");
            goto out;
        }
        found = find_client(sb->auth, form_id);
    }
    const char *named = used == SB_AUTH_CLIENT_SECRET_BASIC ? user : form_id;
    if (found)
        snprintf(req->client_id, sizeof req->client_id, "%s", found->client_id);
    if (!found) {
        sb_reply_oauth_error(reply, 401, "invalid_client", "unknown client_id %.80s",
                             named ? named : "");
        goto out;
    }
    if (!found->app) {
        sb_reply_oauth_error(reply, 400, "unauthorized_client",
                             "client %s is a backend service (no redirect_uris): only "
                             "client_credentials",
                             found->client_id);
        goto out;
    }
    if (found->method != used) {
        sb_reply_oauth_error(
            reply, 401, "invalid_client", "client %s is registered for %s, but the request used %s",
            found->client_id, sb_auth_method_name(found->method), sb_auth_method_name(used));
        goto out;
    }
    if (form_id && strcmp(form_id, found->client_id) != 0) {
        sb_reply_oauth_error(reply, 401, "invalid_client",
                             "client_id %.80s in the body is not the authenticated client %s",
                             form_id, found->client_id);
        goto out;
    }
    const char *given = used == SB_AUTH_CLIENT_SECRET_BASIC ? password : secret;
    if ((used == SB_AUTH_CLIENT_SECRET_BASIC || used == SB_AUTH_CLIENT_SECRET_POST) &&
        !fs_consttime_eq(found->client_secret, strlen(found->client_secret), given,
                         strlen(given))) {
        sb_reply_oauth_error(reply, 401, "invalid_client", "the client secret does not match (%s)",
                             sb_auth_method_name(used));
        goto out;
    }
    client = found;
out:
    fs_free(user);
    fs_free_secret(password);
    return client;
}

void sb_auth_handle_token(sb_server *sb, sb_request *req, sb_reply *reply)
{
    sb_params form;
    sb_params_init(&form);
    char *scope = NULL;
    fhirsync_error err;
    fs_err_clear(&err);

    const char *content_type = sb_req_header(req, "Content-Type");
    if (!sb_media_type_is(content_type, "application/x-www-form-urlencoded")) {
        sb_reply_oauth_error(reply, 400, "invalid_request",
                             "Content-Type must be "
                             "application/x-www-form-urlencoded, not %.80s",
                             content_type ? content_type : "(none)");
        goto out;
    }
    if (!sb_params_parse_form(&form, req->body.data ? req->body.data : "", req->body.len, &err)) {
        sb_reply_oauth_error(reply, 400, "invalid_request", "the form body is malformed: %s",
                             err.message);
        goto out;
    }
    for (size_t i = 0; i < form.count; i++) {
        if (sb_params_count(&form, form.items[i].name) > 1) {
            sb_reply_oauth_error(reply, 400, "invalid_request", "parameter %.40s is repeated",
                                 form.items[i].name);
            goto out;
        }
    }
    const char *assertion = sb_params_get(&form, "client_assertion");
    const char *authorization = sb_req_header(req, "Authorization");
    const char *secret = sb_params_get(&form, "client_secret");
    if (assertion) {
        char *iss = sb_assertion_peek_iss(assertion);
        if (iss)
            snprintf(req->client_id, sizeof req->client_id, "%s", iss);
        fs_free(iss);
    }
    if ((assertion && (authorization || secret)) || (authorization && secret)) {
        sb_reply_oauth_error(reply, 401, "invalid_client",
                             "two client authentication methods "
                             "in one request (%s); use exactly one",
                             authorization ? "an Authorization header and a client_assertion"
                                           : "a client_secret and a client_assertion");
        goto out;
    }
    const char *grant_type = sb_params_get(&form, "grant_type");
    if (!grant_type) {
        sb_reply_oauth_error(reply, 400, "invalid_request",
                             "grant_type missing (must be "
                             "client_credentials)");
        goto out;
    }
    if (!strcmp(grant_type, "authorization_code") || !strcmp(grant_type, "refresh_token")) {
        const sb_client *app = authenticate_app(sb, req, &form, authorization, reply);
        if (app)
            sb_launch_handle_grant(sb, app, grant_type, &form, reply);
        goto out;
    }
    if (strcmp(grant_type, "client_credentials") != 0) {
        sb_reply_oauth_error(reply, 400, "unsupported_grant_type",
                             "grant_type %.60s is not supported; only client_credentials, "
                             "authorization_code and refresh_token",
                             grant_type);
        goto out;
    }
    if (authorization) {
        if (strncasecmp(authorization, "Basic ", 6) != 0) {
            sb_reply_oauth_error(reply, 401, "invalid_client",
                                 "the Authorization header of a "
                                 "token request must be Basic (client_secret_basic)");
            goto out;
        }
        token_basic(sb, req, authorization, &form, reply);
        goto out;
    }
    if (secret) {
        sb_reply_oauth_error(reply, 401, "invalid_client",
                             "client_secret_post is not "
                             "supported; use client_secret_basic or private_key_jwt");
        goto out;
    }
    const char *assertion_type = sb_params_get(&form, "client_assertion_type");
    if (!assertion && !assertion_type) {
        sb_reply_oauth_error(reply, 401, "invalid_client",
                             "no client authentication: send a "
                             "client_assertion (private_key_jwt) or Basic credentials");
        goto out;
    }
    if (!assertion_type || strcmp(assertion_type, JWT_BEARER) != 0) {
        sb_reply_oauth_error(reply, 400, "invalid_request",
                             "client_assertion_type must be %s, "
                             "not %.80s",
                             JWT_BEARER, assertion_type ? assertion_type : "(none)");
        goto out;
    }
    if (!assertion) {
        sb_reply_oauth_error(reply, 400, "invalid_request", "client_assertion missing");
        goto out;
    }
    const sb_client *client = check_assertion(sb, assertion, &err);
    if (!client) {
        sb_reply_oauth_error(reply, 401, "invalid_client", "%s", err.message);
        goto out;
    }
    if (!backend_client(client, reply) ||
        !(scope = grant_scopes(client, sb_params_get(&form, "scope"), reply)))
        goto out;
    token_success(sb, client, scope, reply);
out:
    fs_free(scope);
    sb_params_free(&form);
}

void sb_auth_handle_register(sb_server *sb, sb_request *req, sb_reply *reply)
{
    fhirsync_error err;
    fs_err_clear(&err);
    if (!sb_media_type_is(sb_req_header(req, "Content-Type"), "application/json")) {
        sb_reply_oauth_error(reply, 400, "invalid_client_metadata",
                             "Content-Type must be "
                             "application/json");
        return;
    }
    json_t *desc = fs_json_parse(req->body.data, req->body.len, true, "registration body", &err);
    if (!desc) {
        sb_reply_oauth_error(reply, 400, "invalid_client_metadata", "%s", err.message);
        return;
    }
    const sb_client *client = sb_auth_register_json(sb->auth, desc, &err);
    json_decref(desc);
    if (!client) {
        sb_reply_oauth_error(reply, 400, "invalid_client_metadata", "%s", err.message);
        return;
    }
    snprintf(req->client_id, sizeof req->client_id, "%s", client->client_id);
    json_t *out = client_json(client);
    if (out) {
        json_object_set_new(out, "client_id_issued_at", json_integer(fs_now()));
        sb_reply_json(reply, 201, SB_JSON, out);
        sb_reply_header(reply, "Cache-Control", "no-store");
    } else {
        sb_reply_oauth_error(reply, 500, "server_error", "out of memory");
    }
    json_decref(out);
}

/* ---- resource-server side ------------------------------------------------------------------- */

bool sb_auth_require(sb_server *sb, sb_request *req, sb_reply *reply, const char *type,
                     unsigned perms, sb_grant *grant)
{
    sb_grant local;
    if (!grant)
        grant = &local;
    memset(grant, 0, sizeof *grant);
    const char *token = sb_req_bearer(req);
    if (!token) {
        sb_reply_outcome(reply, 401, "login",
                         "no bearer token: send Authorization: Bearer "
                         "<access token>");
        sb_reply_header(reply, "WWW-Authenticate", "Bearer realm=\"fhirsync-sandbox\"");
        return false;
    }
    token_state state = find_token(sb->auth, token, fs_now(), grant);
    if (state != TOKEN_UNKNOWN)
        snprintf(req->client_id, sizeof req->client_id, "%s", grant->client_id);
    if (state != TOKEN_VALID) {
        const char *why = state == TOKEN_EXPIRED ? "the access token expired"
                                                 : "the access token is not known here";
        sb_reply_outcome(reply, 401, state == TOKEN_EXPIRED ? "expired" : "login", "%s", why);
        sb_reply_header(reply, "WWW-Authenticate",
                        "Bearer realm=\"fhirsync-sandbox\", error=\"invalid_token\", "
                        "error_description=\"%s\"",
                        why);
        return false;
    }
    if (type && !sb_scopes_grant(grant->scope, type, perms)) {
        sb_reply_outcome(reply, 403, "forbidden",
                         "the token's scopes (%s) do not allow %s of "
                         "%s",
                         grant->scope,
                         perms & SB_PERM_S
                             ? (perms & SB_PERM_R ? "reading and searching" : "searching")
                             : "reading",
                         type);
        sb_reply_header(reply, "WWW-Authenticate",
                        "Bearer realm=\"fhirsync-sandbox\", error=\"insufficient_scope\"");
        return false;
    }
    return true;
}

void sb_auth_peek_client(sb_server *sb, sb_request *req, char *client_id, size_t size)
{
    client_id[0] = '\0';
    const char *token = sb_req_bearer(req);
    if (token) {
        sb_grant grant;
        if (find_token(sb->auth, token, 0, &grant) != TOKEN_UNKNOWN)
            snprintf(client_id, size, "%s", grant.client_id);
        return;
    }
    if (req->on != SB_ON_TOKEN)
        return;
    char *user = NULL, *password = NULL;
    if (sb_basic_auth_parse(sb_req_header(req, "Authorization"), &user, &password)) {
        snprintf(client_id, size, "%s", user);
        fs_free(user);
        fs_free_secret(password);
        return;
    }
    sb_params form;
    sb_params_init(&form);
    if (sb_params_parse_form(&form, req->body.data ? req->body.data : "", req->body.len, NULL)) {
        char *iss = sb_assertion_peek_iss(sb_params_get(&form, "client_assertion"));
        const char *named = iss ? iss : sb_params_get(&form, "client_id");
        if (named)
            snprintf(client_id, size, "%s", named);
        fs_free(iss);
    }
    sb_params_free(&form);
}
