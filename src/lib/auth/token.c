/* auth/token.c: access tokens. A fhirsync_auth holds what one endpoint profile needs to get
 * tokens: the private key (or the client secret), the token URL (from `token_url` or discovery)
 * and the effective scope. Each token request carries a fresh client assertion (new jti, new exp),
 * retries included; answers are parsed strictly and errors keep the server's body verbatim.
 * Tokens are shared through the process-wide cache (auth/cache.c).
 *
 * With auth = login the grant is not client_credentials but refresh_token, with the refresh token
 * `fhirsync login` stored in the credentials file (auth/credentials.c): read under a lock shared
 * by every process of the endpoint, and, when the server rotates it, the new one written to disk
 * before the access token that came with it is handed out. */
#include <string.h>
#include <strings.h>

#include "auth/auth_internal.h"
#include "config/config_internal.h"
#include "http/policy.h"
#include "http/ratelimit.h"

#define ASSERTION_TYPE "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

struct fhirsync_auth {
    fhirsync_endpoint *ep;
    fhirsync_key *key; /* NULL for symmetric clients */
    fhirsync_alg alg;
    const char *client_id; /* borrowed from ep */
    const char *base_url;
    const char *kid; /* override, or NULL for the thumbprint */
    const char *jku;
    const char *method;  /* private_key_jwt, client_secret_basic, client_secret_post */
    char *client_secret; /* secret */
    fhirsync_smart_config *smart;
    char *token_url;
    char *scope;
    long lifetime;
    long max_retries;
    long retry_cap;
    fs_http *http;
    bool login;              /* auth = login: refresh grants from the credentials file */
    char *credentials_path;  /* auth = login */
    fs_cached_token current; /* backs the strings handed out in fhirsync_token */
    char *last_error_body;   /* the server's answer to the last refused token request */
    long last_error_status;
};

const char *fs_auth_last_error_body(const fhirsync_auth *auth, long *status)
{
    *status = auth->last_error_status;
    return auth->last_error_body;
}

const fhirsync_key *fs_auth_key(const fhirsync_auth *auth, fhirsync_alg *alg)
{
    *alg = auth->alg;
    return auth->key;
}

void fhirsync_auth_free(fhirsync_auth *auth)
{
    if (!auth)
        return;
    fhirsync_endpoint_free(auth->ep);
    fhirsync_key_free(auth->key);
    fs_secret_free(auth->client_secret);
    fhirsync_smart_config_free(auth->smart);
    fs_free(auth->token_url);
    fs_free(auth->scope);
    fs_free(auth->credentials_path);
    fs_http_free(auth->http);
    fs_cached_token_clear(&auth->current);
    fs_free(auth->last_error_body);
    fs_free(auth);
}

fhirsync_code fhirsync_auth_new(const fhirsync_endpoint *ep, fhirsync_auth **out,
                                fhirsync_error *err)
{
    *out = NULL;
    fhirsync_code rc = fhirsync_endpoint_validate(ep, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    fhirsync_auth *auth = fs_calloc(1, sizeof *auth);
    if (!auth)
        return FHIRSYNC_E_NOMEM;
    if (!(auth->ep = fhirsync_endpoint_dup(ep)) || !(auth->http = fs_http_new(NULL))) {
        rc = FHIRSYNC_E_NOMEM;
        goto out;
    }
    auth->client_id = fhirsync_endpoint_get(auth->ep, "client_id");
    auth->base_url = fhirsync_endpoint_get(auth->ep, "base_url");
    auth->kid = fhirsync_endpoint_get(auth->ep, "kid");
    auth->jku = fhirsync_endpoint_get(auth->ep, "jku");
    auth->method = fhirsync_endpoint_get(auth->ep, "auth_method");
    if (!auth->method)
        auth->method = "private_key_jwt";
    auth->lifetime = fs_endpoint_long(auth->ep, "assertion_lifetime");
    if (auth->lifetime < 10 || auth->lifetime > 300)
        auth->lifetime = 300;
    auth->max_retries = fs_endpoint_long(auth->ep, "max_retries");
    auth->retry_cap = fs_endpoint_long(auth->ep, "retry_cap");
    rc = fs_url_check_transport(auth->base_url, "FHIR base URL (base_url)", err);
    if (rc != FHIRSYNC_OK)
        goto out;
    auth->login = fs_endpoint_login(auth->ep);
    if (auth->login && !(auth->credentials_path = fs_credentials_path(auth->ep))) {
        rc = FHIRSYNC_E_NOMEM;
        goto out;
    }

    if (strcmp(auth->method, "none") == 0) {
        /* a public client (auth = login only, fhirsync_endpoint_validate checked): no secret */
    } else if (strcmp(auth->method, "private_key_jwt") == 0) {
        const char *key_file = fhirsync_endpoint_get(auth->ep, "key_file");
        rc = fhirsync_key_load_file(key_file, &auth->key, err);
        if (rc != FHIRSYNC_OK)
            goto out;
        const char *alg_name = fhirsync_endpoint_get(auth->ep, "alg");
        auth->alg =
            alg_name ? fhirsync_alg_from_name(alg_name) : fhirsync_key_default_alg(auth->key);
        if (auth->alg == FHIRSYNC_ALG_NONE) {
            rc = fs_err(err, FHIRSYNC_E_CONFIG, "alg '%s' (from %s) is not a supported algorithm",
                        alg_name, fhirsync_endpoint_source(auth->ep, "alg"));
            goto out;
        }
        if (!fhirsync_key_fits_alg(auth->key, auth->alg)) {
            rc = fs_err(err, FHIRSYNC_E_KEY,
                        "key_file %s is %s %d but alg %s (from %s) needs %s: generate a matching "
                        "key with 'fhirsync keygen --alg %s' or change alg",
                        key_file,
                        fhirsync_key_type_of(auth->key) == FHIRSYNC_KEY_RSA ? "an RSA key of"
                                                                            : "an EC key on P-",
                        fhirsync_key_bits(auth->key), fhirsync_alg_name(auth->alg),
                        alg_name ? fhirsync_endpoint_source(auth->ep, "alg") : "the key",
                        auth->alg == FHIRSYNC_ALG_ES384   ? "an EC P-384 key"
                        : auth->alg == FHIRSYNC_ALG_ES256 ? "an EC P-256 key"
                                                          : "an RSA key",
                        fhirsync_alg_name(auth->alg));
            goto out;
        }
    } else {
        rc = fhirsync_endpoint_client_secret(auth->ep, &auth->client_secret, err);
        if (rc != FHIRSYNC_OK)
            goto out;
    }
out:
    if (rc != FHIRSYNC_OK)
        fhirsync_auth_free(auth);
    else
        *out = auth;
    return rc;
}

const char *fhirsync_auth_token_url(const fhirsync_auth *auth)
{
    return auth->token_url;
}

const fhirsync_smart_config *fhirsync_auth_smart_config(const fhirsync_auth *auth)
{
    return auth->smart;
}

const char *fhirsync_auth_scope(const fhirsync_auth *auth)
{
    return auth->scope ? auth->scope : fhirsync_endpoint_get(auth->ep, "scope");
}

char *fs_scope_to_v2(const char *scope)
{
    fs_buf b;
    fs_buf_init(&b);
    const char *p = scope;
    bool ok = true;
    while (*p && ok) {
        size_t n = strcspn(p, " ");
        if (n >= 5 && strncmp(p + n - 5, ".read", 5) == 0)
            ok = fs_buf_append(&b, p, n - 5) && fs_buf_append_str(&b, ".rs");
        else
            ok = fs_buf_append(&b, p, n);
        p += n;
        while (*p == ' ' && ok) {
            ok = fs_buf_append_str(&b, " ");
            p++;
        }
    }
    if (!ok) {
        fs_buf_free(&b);
        return NULL;
    }
    return fs_buf_steal(&b);
}

/* auth = login: the token URL and scope of the login (the credentials file), the token URL
 * setting winning. */
static fhirsync_code prepare_login(fhirsync_auth *auth, const char *override, fhirsync_error *err)
{
    fs_credentials creds;
    fhirsync_code rc = fs_credentials_read(auth->credentials_path, &creds, err);
    if (rc == FHIRSYNC_E_NOT_FOUND)
        return fs_err(err, FHIRSYNC_E_AUTH,
                      "[endpoint %s] has auth = login but no one has logged in yet (no "
                      "credentials file %s): run 'fhirsync login --endpoint %s'",
                      fhirsync_endpoint_name(auth->ep), auth->credentials_path,
                      fhirsync_endpoint_name(auth->ep));
    if (rc != FHIRSYNC_OK)
        return rc;
    if (!fs_streq(creds.client_id, auth->client_id)) {
        rc = fs_err(err, FHIRSYNC_E_AUTH,
                    "the credentials file %s belongs to client %s, not %s: run 'fhirsync login "
                    "--endpoint %s' again",
                    auth->credentials_path, creds.client_id, auth->client_id,
                    fhirsync_endpoint_name(auth->ep));
        goto out;
    }
    const char *url = override ? override : creds.token_url;
    rc = fs_url_check_transport(url, override ? "token_url" : "the login's token URL", err);
    if (rc != FHIRSYNC_OK)
        goto out;
    auth->token_url = fs_strdup(url);
    auth->scope = fs_strdup(creds.scope ? creds.scope : fhirsync_endpoint_get(auth->ep, "scope"));
    if (!auth->token_url || !auth->scope)
        rc = FHIRSYNC_E_NOMEM;
out:
    fs_credentials_clear(&creds);
    return rc;
}

/* The token URL and the effective scope: from settings, else from discovery. */
static fhirsync_code prepare(fhirsync_auth *auth, fhirsync_error *err)
{
    if (auth->token_url && auth->scope)
        return FHIRSYNC_OK;
    /* a previous call may have failed half-way (out of memory): start afresh */
    fs_free(auth->token_url);
    fs_free(auth->scope);
    fhirsync_smart_config_free(auth->smart);
    auth->token_url = auth->scope = NULL;
    auth->smart = NULL;
    fhirsync_code rc;
    const char *override = fhirsync_endpoint_get(auth->ep, "token_url");
    if (auth->login)
        return prepare_login(auth, override, err);
    if (override) {
        rc = fs_url_check_transport(override, "token_url", err);
        if (rc != FHIRSYNC_OK)
            return rc;
        if (!(auth->token_url = fs_strdup(override)))
            return FHIRSYNC_E_NOMEM;
    } else {
        rc = fhirsync_discover(auth->ep, &auth->smart, err);
        if (rc != FHIRSYNC_OK)
            return rc;
        rc = fs_url_check_transport(auth->smart->token_endpoint, "discovered token endpoint", err);
        if (rc != FHIRSYNC_OK)
            return rc;
        if (!(auth->token_url = fs_strdup(auth->smart->token_endpoint)))
            return FHIRSYNC_E_NOMEM;
        if (auth->key && auth->smart->signing_algs.count &&
            !fhirsync_strlist_has(&auth->smart->signing_algs, fhirsync_alg_name(auth->alg)))
            fs_log(FHIRSYNC_LOG_WARN,
                   "the server advertises signing algorithms that do not include %s; "
                   "the token request may fail (see 'fhirsync doctor')",
                   fhirsync_alg_name(auth->alg));
    }
    const char *scope = fhirsync_endpoint_get(auth->ep, "scope");
    if (!scope)
        scope = "system/*.read";
    bool defaulted = fs_streq(fhirsync_endpoint_source(auth->ep, "scope"), "default") ||
                     !fhirsync_endpoint_source(auth->ep, "scope");
    if (defaulted && auth->smart && auth->smart->scope_version == 2)
        auth->scope = fs_scope_to_v2(scope);
    else
        auth->scope = fs_strdup(scope);
    return auth->scope ? FHIRSYNC_OK : FHIRSYNC_E_NOMEM;
}

/* ---- assertion ----------------------------------------------------------------------------- */

char *fs_assertion_claims(const char *client_id, const char *audience, int64_t now, long lifetime,
                          const char *jti)
{
    json_t *claims = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s}", "iss", client_id, "sub",
                               client_id, "aud", audience, "exp", (json_int_t)(now + lifetime),
                               "iat", (json_int_t)now, "nbf", (json_int_t)now, "jti", jti);
    if (!claims)
        return NULL;
    char *text = fs_json_dump(claims);
    json_decref(claims);
    return text;
}

fhirsync_code fhirsync_auth_assertion(fhirsync_auth *auth, const char *token_url, char **out_jwt,
                                      fhirsync_error *err)
{
    *out_jwt = NULL;
    if (!auth->key)
        return fs_err(err, FHIRSYNC_E_UNSUPPORTED,
                      "auth_method %s uses a client secret, not a signed assertion", auth->method);
    /* 256 random bits: unique per assertion, 43 characters (Epic allows up to 151) */
    char *jti = fs_random_id(32);
    if (!jti)
        return fs_err(err, FHIRSYNC_E_CRYPTO, "no random bytes for the assertion's jti");
    char *claims = fs_assertion_claims(auth->client_id, token_url, fs_now(), auth->lifetime, jti);
    fs_free(jti);
    if (!claims)
        return FHIRSYNC_E_NOMEM;
    fhirsync_code rc =
        fhirsync_jws_sign(auth->key, auth->alg, auth->kid, auth->jku, claims, out_jwt, err);
    fs_free(claims);
    return rc;
}

/* ---- token response ------------------------------------------------------------------------ */

void fs_token_response_clear(fs_token_response *tr)
{
    fs_secret_free(tr->access_token);
    fs_free(tr->token_type);
    fs_free(tr->scope);
    fs_secret_free(tr->refresh_token);
    fs_free(tr->patient);
    fs_free(tr->fhir_user);
    memset(tr, 0, sizeof *tr);
    tr->expires_in = -1;
    tr->refresh_expires_in = -1;
}

char *fs_id_token_fhir_user(const char *id_token)
{
    /* header.payload.signature: the payload only, and no trust in it (not verified) */
    const char *dot = id_token ? strchr(id_token, '.') : NULL;
    const char *end = dot ? strchr(dot + 1, '.') : NULL;
    if (!end)
        return NULL;
    unsigned char *payload = NULL;
    size_t len = 0;
    if (!fs_b64url_decode(dot + 1, (size_t)(end - dot - 1), &payload, &len))
        return NULL;
    json_t *claims = fs_json_parse((const char *)payload, len, true, "id_token", NULL);
    fs_free(payload);
    const char *v = claims ? fs_json_str(claims, "fhirUser") : NULL;
    char *out = v ? fs_strdup(v) : NULL;
    json_decref(claims);
    return out;
}

/* A lifetime member that may be a number or a numeric string; -1 when absent or unusable. */
static long lifetime_member(const json_t *doc, const char *key)
{
    int64_t seconds = 0;
    long parsed = 0;
    json_t *v = json_object_get(doc, key);
    if (fs_json_int(doc, key, &seconds))
        ;
    else if (json_is_string(v) && fs_parse_long(json_string_value(v), &parsed))
        seconds = parsed;
    else
        return -1;
    if (seconds <= 0)
        return -1;
    return seconds > 86400L * 3650 ? 86400L * 3650 : (long)seconds;
}

static bool header_safe(const char *s)
{
    /* RFC 6750 b64token characters, so the token is safe to put into a header */
    for (const char *p = s; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              strchr("-._~+/=", *p)))
            return false;
    return true;
}

fhirsync_code fs_token_response_parse(const char *body, size_t len, fs_token_response *out,
                                      fhirsync_error *err)
{
    memset(out, 0, sizeof *out);
    out->expires_in = -1;
    out->refresh_expires_in = -1;
    fhirsync_code rc = FHIRSYNC_OK;
    fhirsync_error jerr = {0};
    json_t *doc = fs_json_parse(body, len, true, "token response", &jerr);
    if (!doc) {
        if (jerr.code == FHIRSYNC_E_NOMEM)
            return FHIRSYNC_E_NOMEM;
        return fs_err(err, FHIRSYNC_E_TOKEN_RESPONSE, "%s", jerr.message);
    }
    json_t *at = json_object_get(doc, "access_token");
    if (!json_is_string(at) || json_string_length(at) == 0) {
        rc = fs_err(err, FHIRSYNC_E_TOKEN_RESPONSE,
                    "the token response has no access_token (members: %s)",
                    json_object_size(doc) ? "see -vv" : "none");
        goto out;
    }
    if (!header_safe(json_string_value(at))) {
        rc = fs_err(err, FHIRSYNC_E_TOKEN_RESPONSE,
                    "the access_token holds characters not allowed in a bearer token");
        goto out;
    }
    const char *type = fs_json_str(doc, "token_type");
    if (!type) {
        fs_log(FHIRSYNC_LOG_WARN, "the token response has no token_type; assuming bearer");
        type = "bearer";
    } else if (strcasecmp(type, "bearer") != 0) {
        rc = fs_err(err, FHIRSYNC_E_TOKEN_RESPONSE,
                    "token_type '%s' is not supported (only bearer tokens)", type);
        goto out;
    }
    /* expires_in: absent means "not said" (a short assumed life, with a warning); present, it
     * must be a positive number of seconds (some servers send it as a string). 0 or negative
     * would be a token that is expired when issued: a protocol error naming the value, rather
     * than a guess that ends in 401s */
    json_t *ei = json_object_get(doc, "expires_in");
    int64_t seconds = 0;
    long parsed = 0;
    bool number = fs_json_int(doc, "expires_in", &seconds);
    if (!number && json_is_string(ei) && fs_parse_long(json_string_value(ei), &parsed)) {
        number = true;
        seconds = parsed;
    }
    if (!ei || json_is_null(ei)) {
        out->expires_in = -1;
    } else if (!number) {
        char *shown = json_dumps(ei, JSON_ENCODE_ANY | JSON_COMPACT);
        rc = fs_err(err, FHIRSYNC_E_TOKEN_RESPONSE,
                    "the token response's expires_in %s is not a number of seconds",
                    shown ? shown : "(unprintable)");
        fs_free(shown);
        goto out;
    } else if (seconds <= 0) {
        rc = fs_err(err, FHIRSYNC_E_TOKEN_RESPONSE,
                    "the token response's expires_in %lld is not a usable lifetime (the token "
                    "would be expired when issued)",
                    (long long)seconds);
        goto out;
    } else {
        out->expires_in = seconds > 86400 * 365 ? 86400 * 365 : (long)seconds;
    }
    /* registered the moment it exists: masked by value wherever it would appear */
    out->access_token = fs_secret_strdup(json_string_value(at));
    out->token_type = fs_strdup(type);
    const char *scope = fs_json_str(doc, "scope");
    out->scope = scope ? fs_strdup(scope) : NULL;
    if (!out->access_token || !out->token_type || (scope && !out->scope)) {
        rc = FHIRSYNC_E_NOMEM;
        goto out;
    }
    /* the authorization code and refresh grants' extras */
    const char *refresh = fs_json_str(doc, "refresh_token");
    if (refresh && *refresh && !(out->refresh_token = fs_secret_strdup(refresh)))
        rc = FHIRSYNC_E_NOMEM;
    const char *patient = fs_json_str(doc, "patient");
    if (patient && *patient && !(out->patient = fs_strdup(patient)))
        rc = FHIRSYNC_E_NOMEM;
    const char *id_token = fs_json_str(doc, "id_token");
    if (id_token)
        out->fhir_user = fs_id_token_fhir_user(id_token);
    out->refresh_expires_in = lifetime_member(doc, "refresh_expires_in");
    if (out->refresh_expires_in < 0)
        out->refresh_expires_in = lifetime_member(doc, "refresh_token_expires_in");
out:
    json_decref(doc);
    if (rc != FHIRSYNC_OK)
        fs_token_response_clear(out);
    return rc;
}

bool fs_oauth_error_code(const char *body, size_t len, char *code, size_t size)
{
    code[0] = '\0';
    json_t *doc = body && len ? fs_json_parse(body, len, true, "error body", NULL) : NULL;
    const char *e = doc ? fs_json_str(doc, "error") : NULL;
    if (e)
        snprintf(code, size, "%s", e);
    json_decref(doc);
    return e != NULL;
}

/* ---- token request ------------------------------------------------------------------------- */

static fhirsync_code build_form(fhirsync_auth *auth, const char *token_url, const char *grant,
                                fs_buf *form, char **basic, fhirsync_error *err)
{
    bool ok = fs_buf_append_str(form, grant);
    if (!ok)
        return FHIRSYNC_E_NOMEM;
    if (strcmp(auth->method, "none") == 0) {
        /* a public client identifies itself (RFC 6749 4.1.3) */
        ok = fs_buf_append_str(form, "&client_id=") &&
             fs_buf_append_urlencoded(form, auth->client_id);
    } else if (auth->key) {
        char *jwt = NULL;
        fhirsync_code rc = fhirsync_auth_assertion(auth, token_url, &jwt, err);
        if (rc != FHIRSYNC_OK)
            return rc;
        ok = fs_buf_append_str(form, "&client_assertion_type=") &&
             fs_buf_append_urlencoded(form, ASSERTION_TYPE) &&
             fs_buf_append_str(form, "&client_assertion=") && fs_buf_append_str(form, jwt);
        fs_secret_free(jwt);
    } else if (strcmp(auth->method, "client_secret_post") == 0) {
        ok = fs_buf_append_str(form, "&client_id=") &&
             fs_buf_append_urlencoded(form, auth->client_id) &&
             fs_buf_append_str(form, "&client_secret=") &&
             fs_buf_append_urlencoded(form, auth->client_secret);
    } else {
        /* client_secret_basic: RFC 6749 2.3.1 form-encodes id and secret before base64 */
        fs_buf pair;
        fs_buf_init(&pair);
        ok = fs_buf_append_urlencoded(&pair, auth->client_id) && fs_buf_append_str(&pair, ":") &&
             fs_buf_append_urlencoded(&pair, auth->client_secret);
        char *b64 = ok ? fs_b64_encode((unsigned char *)pair.data, pair.len) : NULL;
        fs_buf_free_secret(&pair);
        fs_buf h;
        fs_buf_init(&h);
        ok = b64 && fs_buf_printf(&h, "Authorization: Basic %s", b64);
        fs_free_secret(b64);
        *basic = ok ? fs_buf_steal(&h) : NULL;
        if (!ok)
            fs_buf_free_secret(&h);
    }
    return ok ? FHIRSYNC_OK : FHIRSYNC_E_NOMEM;
}

static fhirsync_code request_token(fhirsync_auth *auth, const char *token_url, const char *grant,
                                   bool idempotent, fs_token_response *tr, char *oauth_error,
                                   size_t oauth_error_size, fhirsync_error *err)
{
    if (oauth_error && oauth_error_size)
        oauth_error[0] = '\0';
    fhirsync_code rc = FHIRSYNC_OK;
    fs_http_response resp;
    fs_http_response_init(&resp);
    for (long attempt = 0;; attempt++) {
        fs_buf form;
        fs_buf_init(&form);
        char *basic = NULL;
        rc = build_form(auth, token_url, grant, &form, &basic, err); /* a fresh assertion */
        if (rc != FHIRSYNC_OK) {
            fs_buf_free_secret(&form);
            break;
        }
        const char *headers[] = {"Content-Type: application/x-www-form-urlencoded",
                                 "Accept: application/json", basic, NULL};
        fs_http_request req = {0};
        fs_http_request_from_profile(auth->ep, &req);
        req.method = "POST";
        req.url = token_url;
        req.headers = headers;
        req.body = form.data;
        req.body_len = form.len;
        req.redirects = FS_REDIRECT_NONE;
        req.max_body = FS_TOKEN_MAX_BODY;
        fs_log(FHIRSYNC_LOG_INFO, "token: requesting a token from %s for scope '%s' (%s, %.*s)",
               token_url, auth->scope ? auth->scope : "(the login's)", auth->method,
               (int)strcspn(grant + strlen("grant_type="), "&"), grant + strlen("grant_type="));
        /* keyed like the FHIR requests, by the FHIR base URL (not the token URL) and the
         * client id: the token request counts against the same practice's budget */
        rc = fs_ratelimit_acquire(auth->base_url, auth->client_id,
                                  fs_endpoint_long(auth->ep, "rate_limit"), err);
        if (rc == FHIRSYNC_OK)
            rc = fs_http_perform(auth->http, &req, &resp, err);
        fs_buf_free_secret(&form);
        fs_free_secret(basic);
        /* A token request is repeated like an idempotent one: each attempt carries a fresh
         * assertion, and a token issued to an answer we never read is simply not used. */
        int64_t retry_after = rc == FHIRSYNC_OK ? fs_http_retry_after(&resp, fs_now()) : -1;
        fhirsync_code code = fs_http_status_code(FS_HTTP_AUTHORIZATION_SERVER, resp.status);
        bool retry = false;
        if (rc != FHIRSYNC_OK) {
            if (!fs_http_retryable_failure(rc, idempotent, resp.request_sent))
                break;
            retry = true;
        } else if (code == FHIRSYNC_OK) {
            rc = fs_token_response_parse(resp.body.data, resp.body.len, tr, err);
            if (rc == FHIRSYNC_E_TOKEN_RESPONSE)
                fs_err_prefix(err, "token endpoint %s (HTTP %ld)", token_url, resp.status);
            break;
        } else if (fs_http_retryable_status(resp.status, idempotent, retry_after)) {
            retry = true;
            char desc[700];
            fs_http_describe(&resp, token_url, desc, sizeof desc);
            rc = fs_err_http(err, code, resp.status, "token request failed: %s", desc);
        } else if (resp.status >= 300 && resp.status < 400) {
            const char *loc = fs_http_header_get(&resp, "Location");
            rc = fs_err_http(err, code, resp.status,
                             "token endpoint %s answered HTTP %ld redirecting to %s: token "
                             "requests are never redirected (the assertion's aud must be the "
                             "final URL); set token_url to the right URL",
                             token_url, resp.status, loc ? loc : "(no Location)");
            break;
        } else {
            /* The server refused: keep its answer verbatim. */
            fs_free(auth->last_error_body);
            auth->last_error_body = fs_strndup(resp.body.data ? resp.body.data : "", 4096);
            auth->last_error_status = resp.status;
            if (oauth_error && oauth_error_size)
                fs_oauth_error_code(resp.body.data, resp.body.len, oauth_error, oauth_error_size);
            char desc[700];
            fs_http_describe(&resp, token_url, desc, sizeof desc);
            rc = fs_err_http(err, code, resp.status, "token request rejected: %s", desc);
            break;
        }
        if (!retry || attempt >= auth->max_retries)
            break;
        int64_t delay = fs_http_retry_delay_ms((unsigned)attempt, retry_after, auth->retry_cap);
        fs_log(FHIRSYNC_LOG_WARN, "token: %s; retry %ld of %ld in %.1f s",
               err ? err->message : fhirsync_strerror(rc), attempt + 1, auth->max_retries,
               (double)delay / 1000.0);
        if (!fs_sleep_ms(delay)) {
            rc = fs_err(err, FHIRSYNC_E_CANCELLED,
                        "cancelled while waiting to retry the token "
                        "request");
            break;
        }
    }
    fs_http_response_clear(&resp);
    return rc;
}

fhirsync_code fs_auth_grant(fhirsync_auth *auth, const char *token_url, const char *grant,
                            bool idempotent, fs_token_response *tr, char *oauth_error,
                            size_t oauth_error_size, fhirsync_error *err)
{
    return request_token(auth, token_url, grant, idempotent, tr, oauth_error, oauth_error_size,
                         err);
}

/* auth = login: a new access token with the refresh grant. Under the endpoint's lock, the file is
 * read afresh (another process may have rotated the token meanwhile); a rotated refresh token is
 * written before the new access token is returned. A session without a refresh token serves its
 * stored access token until it expires. */
static fhirsync_code refresh_from_login(fhirsync_auth *auth, int64_t now, fs_token_response *tr,
                                        fhirsync_error *err)
{
    memset(tr, 0, sizeof *tr);
    const char *name = fhirsync_endpoint_name(auth->ep);
    fs_credentials creds;
    fs_buf grant;
    fs_buf_init(&grant);
    int lock = fs_credentials_lock(auth->credentials_path);
    fhirsync_code rc = fs_credentials_read(auth->credentials_path, &creds, err);
    if (rc == FHIRSYNC_E_NOT_FOUND)
        rc = fs_err(err, FHIRSYNC_E_AUTH,
                    "no credentials file %s (removed?): run 'fhirsync login --endpoint %s'",
                    auth->credentials_path, name);
    if (rc != FHIRSYNC_OK)
        goto out;
    if (!creds.refresh_token) {
        if (creds.access_token && creds.access_expires_at - now > FS_TOKEN_RENEW_MARGIN) {
            tr->access_token = creds.access_token;
            creds.access_token = NULL;
            tr->token_type = fs_strdup("bearer");
            tr->scope = creds.scope ? fs_strdup(creds.scope) : NULL;
            tr->expires_in = (long)(creds.access_expires_at - now);
            rc = tr->token_type ? FHIRSYNC_OK : FHIRSYNC_E_NOMEM;
        } else {
            rc = fs_err(err, FHIRSYNC_E_AUTH,
                        "the login of [endpoint %s] has no refresh token (offline_access was not "
                        "granted) and its access token has expired: run 'fhirsync login "
                        "--endpoint %s' again",
                        name, name);
        }
        goto out;
    }
    if (!fs_buf_append_str(&grant, "grant_type=refresh_token&refresh_token=") ||
        !fs_buf_append_urlencoded(&grant, creds.refresh_token)) {
        rc = FHIRSYNC_E_NOMEM;
        goto out;
    }
    char oauth_error[64];
    rc = request_token(auth, auth->token_url, grant.data, false, tr, oauth_error,
                       sizeof oauth_error, err);
    if (rc == FHIRSYNC_E_AUTH || (rc != FHIRSYNC_OK && fs_streq(oauth_error, "invalid_grant"))) {
        if (fs_streq(oauth_error, "invalid_grant")) {
            fs_err_prefix(err,
                          "the refresh token of [endpoint %s] was refused (revoked, expired "
                          "or already used): run 'fhirsync login --endpoint %s' again",
                          name, name);
            if (err)
                err->code = FHIRSYNC_E_AUTH;
            rc = FHIRSYNC_E_AUTH;
        }
        goto out;
    }
    if (rc != FHIRSYNC_OK)
        goto out;
    /* what changed goes to disk before the new access token is used */
    bool rotated = tr->refresh_token && !fs_streq(tr->refresh_token, creds.refresh_token);
    if (rotated) {
        fs_secret_free(creds.refresh_token);
        creds.refresh_token = tr->refresh_token;
        tr->refresh_token = NULL;
        creds.refresh_expires_at = 0;
    }
    if (tr->refresh_expires_in > 0)
        creds.refresh_expires_at = now + tr->refresh_expires_in;
    if (tr->scope) {
        char *granted = fs_strdup(tr->scope);
        if (granted) {
            fs_free(creds.scope);
            creds.scope = granted;
        }
    }
    creds.refreshed_at = now;
    fhirsync_error werr = {0};
    fhirsync_code wrc = fs_credentials_write(auth->credentials_path, &creds, &werr);
    if (wrc != FHIRSYNC_OK && rotated) {
        fs_token_response_clear(tr);
        rc = fs_err(err, wrc,
                    "the server rotated the refresh token but it could not be saved (%s): the "
                    "new one is lost; run 'fhirsync login --endpoint %s' again",
                    werr.message, name);
        goto out;
    }
    if (wrc != FHIRSYNC_OK)
        fs_log(FHIRSYNC_LOG_WARN, "token: could not record the refresh in %s: %s",
               auth->credentials_path, werr.message);
    else if (rotated)
        fs_log(FHIRSYNC_LOG_INFO, "token: the server rotated the refresh token; saved to %s",
               auth->credentials_path);
out:
    fs_credentials_unlock(lock);
    fs_credentials_clear(&creds);
    fs_buf_free_secret(&grant);
    if (rc != FHIRSYNC_OK)
        fs_token_response_clear(tr);
    return rc;
}

static void fill_public(fhirsync_auth *auth, fhirsync_token *out, bool from_cache)
{
    out->access_token = auth->current.access_token;
    out->token_type = auth->current.token_type;
    out->scope = auth->current.scope;
    out->requested_scope = auth->scope;
    out->obtained_at = auth->current.obtained_at;
    out->expires_at = auth->current.expires_at;
    out->expires_in_missing = auth->current.expires_in_missing;
    out->from_cache = from_cache;
}

fhirsync_code fhirsync_auth_token(fhirsync_auth *auth, bool force_new, fhirsync_token *out,
                                  fhirsync_error *err)
{
    memset(out, 0, sizeof *out);
    fhirsync_code rc = prepare(auth, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    int64_t now = fs_now();
    if (!force_new) {
        fs_cached_token cached;
        if (fs_token_cache_get(auth->token_url, auth->client_id, auth->scope, now, &cached)) {
            fs_cached_token_clear(&auth->current);
            auth->current = cached;
            fill_public(auth, out, true);
            return FHIRSYNC_OK;
        }
    }
    fs_token_response tr;
    if (auth->login) {
        rc = refresh_from_login(auth, now, &tr, err);
    } else {
        fs_buf grant;
        fs_buf_init(&grant);
        if (!fs_buf_append_str(&grant, "grant_type=client_credentials&scope=") ||
            !fs_buf_append_urlencoded(&grant, auth->scope)) {
            fs_buf_free(&grant);
            return FHIRSYNC_E_NOMEM;
        }
        rc = request_token(auth, auth->token_url, grant.data, true, &tr, NULL, 0, err);
        fs_buf_free(&grant);
    }
    if (rc != FHIRSYNC_OK)
        return rc;
    fs_tally_token();
    fs_cached_token fresh = {0};
    fresh.access_token = tr.access_token;
    fresh.token_type = tr.token_type;
    fresh.scope = tr.scope ? tr.scope : fs_strdup(auth->scope);
    tr.access_token = tr.token_type = tr.scope = NULL;
    fresh.obtained_at = now;
    fresh.expires_in_missing = tr.expires_in < 0;
    fresh.expires_at = now + (tr.expires_in > 0 ? tr.expires_in : FS_TOKEN_ASSUMED_LIFETIME);
    fs_token_response_clear(&tr);
    if (!fresh.scope) {
        fs_cached_token_clear(&fresh);
        return FHIRSYNC_E_NOMEM;
    }
    if (fresh.expires_in_missing)
        fs_log(FHIRSYNC_LOG_WARN, "the token response has no expires_in: assuming %d s",
               FS_TOKEN_ASSUMED_LIFETIME);
    if (!fs_streq(fresh.scope, auth->scope))
        fs_log(FHIRSYNC_LOG_INFO, "token: granted scope '%s' differs from requested '%s'",
               fresh.scope, auth->scope);
    fs_token_cache_put(auth->token_url, auth->client_id, auth->scope, &fresh);
    fs_cached_token_clear(&auth->current);
    auth->current = fresh;
    fs_log(FHIRSYNC_LOG_INFO, "token: obtained, expires in %lld s",
           (long long)(fresh.expires_at - now));
    fill_public(auth, out, false);
    return FHIRSYNC_OK;
}

void fhirsync_auth_invalidate(fhirsync_auth *auth)
{
    if (auth->token_url && auth->scope)
        fs_token_cache_drop(auth->token_url, auth->client_id, auth->scope);
}
