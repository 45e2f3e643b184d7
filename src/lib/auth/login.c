/* auth/login.c: a person's login (include/fhirsync/login.h): the SMART App Launch standalone
 * launch with the authorization code grant and PKCE (RFC 7636, S256 only), for endpoints whose
 * EHR will not grant Backend Services.
 *
 * fhirsync_login_start discovers the endpoints, draws the PKCE verifier and the `state` from the
 * CSPRNG and builds the authorization URL; fhirsync_login_finish checks the redirect the browser
 * came back with (the state before anything else), exchanges the code with the profile's client
 * authentication (none, a client secret, or the private_key_jwt assertion of auth/token.c) and
 * writes the credentials file (auth/credentials.c), which fhirsync_auth_token() then uses for
 * refresh grants. Nothing is written unless the whole exchange succeeded. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>

#include "auth/auth_internal.h"
#include "config/config_internal.h"
#include "fhirsync/login.h"

struct fhirsync_login {
    fhirsync_endpoint *ep;
    fhirsync_auth *auth; /* the client authentication of the code grant */
    fhirsync_smart_config *smart;
    char *redirect_uri;
    char *verifier; /* secret */
    char *state;
    char *scope;
    char *authorize_url;
    char *credentials_path;
    bool finished;
    /* what the exchange obtained */
    char *granted_scope;
    char *patient;
    char *fhir_user;
    bool has_refresh_token;
    int64_t access_expires_at;
};

/* ---- PKCE and the redirect ---------------------------------------------------------------- */

char *fs_pkce_challenge(const char *verifier)
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!verifier || EVP_Digest(verifier, strlen(verifier), digest, &len, EVP_sha256(), NULL) != 1)
        return NULL;
    return fs_b64url_encode(digest, len);
}

char *fs_pkce_verifier(void)
{
    unsigned char bytes[48]; /* 64 base64url characters: within RFC 7636's 43..128 */
    if (!fs_random_bytes(bytes, sizeof bytes))
        return NULL;
    char *text = fs_b64url_encode(bytes, sizeof bytes);
    OPENSSL_cleanse(bytes, sizeof bytes);
    char *verifier = text ? fs_secret_strdup(text) : NULL; /* registered: masked in any log */
    fs_free_secret(text);
    return verifier;
}

/* Decode a percent-encoded query value ('+' is a space). NULL on out of memory or a bad
 * escape. */
static char *query_decode(const char *s, size_t len)
{
    char *out = fs_malloc(len + 1);
    if (!out)
        return NULL;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            int hi = i + 2 < len ? fs_hex_value((unsigned char)s[i + 1]) : -1;
            int lo = hi >= 0 ? fs_hex_value((unsigned char)s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                fs_free(out);
                return NULL;
            }
            out[n++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[n++] = s[i] == '+' ? ' ' : s[i];
        }
    }
    out[n] = '\0';
    return out;
}

/* The decoded value of `name` in the query `q` (up to its end or '#'), the first occurrence;
 * *found false when absent. */
static fhirsync_code query_param(const char *q, const char *name, char **value, bool *found)
{
    *value = NULL;
    *found = false;
    size_t name_len = strlen(name);
    const char *end = q + strcspn(q, "#");
    for (const char *p = q; p < end;) {
        size_t len = strcspn(p, "&#");
        if (len > name_len && strncmp(p, name, name_len) == 0 && p[name_len] == '=') {
            *found = true;
            *value = query_decode(p + name_len + 1, len - name_len - 1);
            return *value ? FHIRSYNC_OK : FHIRSYNC_E_PROTOCOL;
        }
        if (len == name_len && strncmp(p, name, name_len) == 0) {
            *found = true;
            *value = fs_strdup("");
            return *value ? FHIRSYNC_OK : FHIRSYNC_E_NOMEM;
        }
        p += len;
        if (p < end && *p == '&')
            p++;
    }
    return FHIRSYNC_OK;
}

fhirsync_code fs_login_parse_redirect(const char *url, const char *expected_state,
                                      const char *redirect_uri, char **code, fhirsync_error *err)
{
    *code = NULL;
    char *state = NULL, *error = NULL, *desc = NULL, *value = NULL;
    bool found = false;
    fhirsync_code rc;
    const char *q = url ? strchr(url, '?') : NULL;
    if (!q)
        return fs_err(err, FHIRSYNC_E_AUTH,
                      "the redirect URL has no query (no state, no code): refused");
    q++;
    /* the state first: a redirect this login did not cause is refused before anything in it is
     * believed, its error message included */
    rc = query_param(q, "state", &state, &found);
    if (rc == FHIRSYNC_E_NOMEM)
        goto out;
    if (rc != FHIRSYNC_OK || !found ||
        !fs_consttime_eq(state, strlen(state), expected_state, strlen(expected_state))) {
        rc = fs_err(err, FHIRSYNC_E_AUTH,
                    "the redirect's state %s the one this login sent: refused (a forged or stale "
                    "redirect, or one from another login); nothing was exchanged",
                    found ? "does not match" : "is missing, so it cannot be checked against");
        goto out;
    }
    if (redirect_uri) {
        size_t target = (size_t)(q - 1 - url);
        if (target != strlen(redirect_uri) || strncmp(url, redirect_uri, target) != 0) {
            rc = fs_err(err, FHIRSYNC_E_AUTH,
                        "the redirect went to %.*s, not to this login's redirect URI %s: refused",
                        (int)(target > 200 ? 200 : target), url, redirect_uri);
            goto out;
        }
    }
    if ((rc = query_param(q, "error", &error, &found)) == FHIRSYNC_E_NOMEM)
        goto out;
    if (found) {
        bool has_desc = false;
        if (query_param(q, "error_description", &desc, &has_desc) == FHIRSYNC_E_NOMEM) {
            rc = FHIRSYNC_E_NOMEM;
            goto out;
        }
        rc = fs_err(err, FHIRSYNC_E_AUTH,
                    "the authorization server refused the login: %.60s%s%.300s%s%s",
                    error ? error : "(unreadable error)", desc ? " (" : "", desc ? desc : "",
                    desc ? ")" : "",
                    fs_streq(error, "access_denied")
                        ? ": the person declined, or the account may not use this app"
                        : "");
        goto out;
    }
    rc = query_param(q, "code", &value, &found);
    if (rc == FHIRSYNC_E_NOMEM)
        goto out;
    if (rc != FHIRSYNC_OK || !found || !value[0]) {
        rc = fs_err(err, FHIRSYNC_E_PROTOCOL,
                    "the redirect carries neither a code nor an error: nothing to exchange");
        goto out;
    }
    if (!(*code = fs_secret_strdup(value)))
        rc = FHIRSYNC_E_NOMEM;
out:
    fs_free(state);
    fs_free(error);
    fs_free(desc);
    fs_free_secret(value);
    return rc;
}

/* ---- the login ----------------------------------------------------------------------------- */

void fhirsync_login_free(fhirsync_login *login)
{
    if (!login)
        return;
    fhirsync_endpoint_free(login->ep);
    fhirsync_auth_free(login->auth);
    fhirsync_smart_config_free(login->smart);
    fs_free(login->redirect_uri);
    fs_secret_free(login->verifier);
    fs_free(login->state);
    fs_free(login->scope);
    fs_free(login->authorize_url);
    fs_free(login->credentials_path);
    fs_free(login->granted_scope);
    fs_free(login->patient);
    fs_free(login->fhir_user);
    fs_free(login);
}

static bool add_param(fs_buf *b, const char *name, const char *value)
{
    return fs_buf_append_str(b, "&") && fs_buf_append_str(b, name) && fs_buf_append_str(b, "=") &&
           fs_buf_append_urlencoded(b, value);
}

static fhirsync_code build_authorize_url(fhirsync_login *login)
{
    const char *base = fhirsync_endpoint_get(login->ep, "base_url");
    char *challenge = fs_pkce_challenge(login->verifier);
    fs_buf b;
    fs_buf_init(&b);
    const char *endpoint = login->smart->authorization_endpoint;
    bool ok = challenge && fs_buf_append_str(&b, endpoint) &&
              fs_buf_append_str(&b, strchr(endpoint, '?') ? "&" : "?") &&
              fs_buf_append_str(&b, "response_type=code") &&
              add_param(&b, "client_id", fhirsync_endpoint_get(login->ep, "client_id")) &&
              add_param(&b, "redirect_uri", login->redirect_uri) &&
              add_param(&b, "scope", login->scope) && add_param(&b, "state", login->state) &&
              add_param(&b, "aud", base) && add_param(&b, "code_challenge", challenge) &&
              add_param(&b, "code_challenge_method", "S256");
    fs_free(challenge);
    if (!ok) {
        fs_buf_free(&b);
        return FHIRSYNC_E_NOMEM;
    }
    login->authorize_url = fs_buf_steal(&b);
    return FHIRSYNC_OK;
}

fhirsync_code fhirsync_login_start(const fhirsync_endpoint *ep, const char *redirect_uri,
                                   fhirsync_login **out, fhirsync_error *err)
{
    if (!out)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_login_start: NULL out");
    *out = NULL;
    if (!ep || !redirect_uri || !*redirect_uri)
        return fs_err(err, FHIRSYNC_E_ARG,
                      "fhirsync_login_start: endpoint or redirect URI missing");
    if (!fs_endpoint_login(ep))
        return fs_err(err, FHIRSYNC_E_CONFIG,
                      "[endpoint %s] gets its tokens with Backend Services (auth = backend): set "
                      "auth = login to use a person's login",
                      fhirsync_endpoint_name(ep));
    fhirsync_login *login = fs_calloc(1, sizeof *login);
    if (!login)
        return FHIRSYNC_E_NOMEM;
    fhirsync_code rc = fhirsync_auth_new(ep, &login->auth, err);
    if (rc != FHIRSYNC_OK)
        goto out;
    if (!(login->ep = fhirsync_endpoint_dup(ep)) ||
        !(login->redirect_uri = fs_strdup(redirect_uri)) ||
        !(login->credentials_path = fs_credentials_path(ep))) {
        rc = FHIRSYNC_E_NOMEM;
        goto out;
    }
    rc = fhirsync_discover(ep, &login->smart, err);
    if (rc != FHIRSYNC_OK)
        goto out;
    if (!login->smart->authorization_endpoint) {
        rc = fs_err(err, FHIRSYNC_E_UNSUPPORTED,
                    "%s names no authorization_endpoint: the server does not offer a person's "
                    "login (SMART App Launch)",
                    login->smart->source_url);
        goto out;
    }
    rc = fs_url_check_transport(login->smart->authorization_endpoint,
                                "discovered authorization endpoint", err);
    if (rc == FHIRSYNC_OK)
        rc = fs_url_check_transport(login->smart->token_endpoint, "discovered token endpoint", err);
    if (rc != FHIRSYNC_OK)
        goto out;
    if (!fhirsync_strlist_has(&login->smart->code_challenge_methods, "S256")) {
        rc = fs_err(err, FHIRSYNC_E_UNSUPPORTED,
                    "%s does not list S256 in code_challenge_methods_supported: fhirsync logs in "
                    "only with PKCE S256 (SMART App Launch 2 requires it), never 'plain' or "
                    "without PKCE",
                    login->smart->source_url);
        goto out;
    }
    /* the scopes: v2 syntax when the server speaks only v2 and the scope is the default */
    const char *scope = fhirsync_endpoint_get(ep, "scope");
    bool defaulted = fs_streq(fhirsync_endpoint_source(ep, "scope"), "default");
    login->scope =
        defaulted && login->smart->scope_version == 2 ? fs_scope_to_v2(scope) : fs_strdup(scope);
    login->verifier = fs_pkce_verifier();
    login->state = fs_random_id(32);
    if (!login->scope || !login->verifier || !login->state) {
        rc = login->scope ? fs_err(err, FHIRSYNC_E_CRYPTO, "no random bytes for PKCE and state")
                          : FHIRSYNC_E_NOMEM;
        goto out;
    }
    rc = build_authorize_url(login);
out:
    if (rc != FHIRSYNC_OK)
        fhirsync_login_free(login);
    else
        *out = login;
    return rc;
}

const char *fhirsync_login_authorize_url(const fhirsync_login *login)
{
    return login ? login->authorize_url : NULL;
}

const char *fhirsync_login_redirect_uri(const fhirsync_login *login)
{
    return login ? login->redirect_uri : NULL;
}

const char *fhirsync_login_credentials_path(const fhirsync_login *login)
{
    return login ? login->credentials_path : NULL;
}

const char *fhirsync_login_requested_scope(const fhirsync_login *login)
{
    return login ? login->scope : NULL;
}

const char *fhirsync_login_granted_scope(const fhirsync_login *login)
{
    return login ? login->granted_scope : NULL;
}

const char *fhirsync_login_patient(const fhirsync_login *login)
{
    return login ? login->patient : NULL;
}

const char *fhirsync_login_fhir_user(const fhirsync_login *login)
{
    return login ? login->fhir_user : NULL;
}

bool fhirsync_login_has_refresh_token(const fhirsync_login *login)
{
    return login && login->has_refresh_token;
}

int64_t fhirsync_login_access_expires_at(const fhirsync_login *login)
{
    return login ? login->access_expires_at : 0;
}

fhirsync_code fhirsync_login_finish(fhirsync_login *login, const char *redirect_url,
                                    fhirsync_error *err)
{
    if (!login || !redirect_url)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_login_finish: NULL argument");
    if (login->finished)
        return fs_err(err, FHIRSYNC_E_ARG, "fhirsync_login_finish: this login already finished");
    char *code = NULL;
    fs_buf grant;
    fs_buf_init(&grant);
    fs_token_response tr;
    memset(&tr, 0, sizeof tr);
    fs_credentials creds;
    memset(&creds, 0, sizeof creds);
    fhirsync_code rc =
        fs_login_parse_redirect(redirect_url, login->state, login->redirect_uri, &code, err);
    if (rc != FHIRSYNC_OK)
        goto out;
    login->finished = true; /* the state and the verifier are spent */
    if (!fs_buf_append_str(&grant, "grant_type=authorization_code") ||
        !add_param(&grant, "code", code) ||
        !add_param(&grant, "redirect_uri", login->redirect_uri) ||
        !add_param(&grant, "code_verifier", login->verifier)) {
        rc = FHIRSYNC_E_NOMEM;
        goto out;
    }
    char oauth_error[64];
    rc = fs_auth_grant(login->auth, login->smart->token_endpoint, grant.data, false, &tr,
                       oauth_error, sizeof oauth_error, err);
    if (rc != FHIRSYNC_OK) {
        if (fs_streq(oauth_error, "invalid_grant"))
            fs_err_prefix(err, "the authorization code was refused (expired, already used, or "
                               "the PKCE verifier or redirect_uri does not match)");
        goto out;
    }
    int64_t now = fs_now();
    long life = tr.expires_in > 0 ? tr.expires_in : FS_TOKEN_ASSUMED_LIFETIME;
    creds.token_url = fs_strdup(login->smart->token_endpoint);
    creds.client_id = fs_strdup(fhirsync_endpoint_get(login->ep, "client_id"));
    creds.base_url = fs_strdup(fhirsync_endpoint_get(login->ep, "base_url"));
    creds.scope = fs_strdup(tr.scope ? tr.scope : login->scope);
    creds.patient = tr.patient ? fs_strdup(tr.patient) : NULL;
    creds.fhir_user = tr.fhir_user ? fs_strdup(tr.fhir_user) : NULL;
    creds.issued_at = now;
    if (tr.refresh_token) {
        creds.refresh_token = tr.refresh_token; /* moved, still registered */
        tr.refresh_token = NULL;
        if (tr.refresh_expires_in > 0)
            creds.refresh_expires_at = now + tr.refresh_expires_in;
    } else {
        /* no offline access: the access token serves until it expires */
        creds.access_token = tr.access_token;
        tr.access_token = NULL;
        creds.access_expires_at = now + life;
    }
    if (!creds.token_url || !creds.client_id || !creds.base_url || !creds.scope ||
        (tr.patient && !creds.patient) || (tr.fhir_user && !creds.fhir_user)) {
        rc = FHIRSYNC_E_NOMEM;
        goto out;
    }
    rc = fs_credentials_write(login->credentials_path, &creds, err);
    if (rc != FHIRSYNC_OK)
        goto out;
    login->granted_scope = creds.scope;
    login->patient = creds.patient;
    login->fhir_user = creds.fhir_user;
    creds.scope = creds.patient = creds.fhir_user = NULL;
    login->has_refresh_token = creds.refresh_token != NULL;
    login->access_expires_at = now + life;
    fs_log(FHIRSYNC_LOG_INFO, "login: credentials of [endpoint %s] written to %s",
           fhirsync_endpoint_name(login->ep), login->credentials_path);
out:
    fs_secret_free(code);
    fs_buf_free_secret(&grant);
    fs_token_response_clear(&tr);
    fs_credentials_clear(&creds);
    return rc;
}
