/* sandbox/launch.c: SMART App Launch 2.x (standalone launch) on the sandbox's authorization
 * server: GET /auth/authorize with its strict checks, a small HTML login form and consent page
 * (a test user, a patient picker for launch/patient), authorization codes (single use, 60 s,
 * PKCE S256 only), the authorization_code and refresh_token grants (auth.c authenticates the
 * client first and hands the request over), refresh tokens with rotation, revocation and
 * expiry, id_tokens signed RS256 with a key made at first use (published at /auth/jwks), and
 * the admin side: lifetimes, the test user, the list of grants, revocation.
 *
 * Everything is in memory under one mutex: a list of login sessions (the per-request id in the
 * forms' hidden "session" field, replaced at login, so a form cannot be posted out of order or
 * twice), codes, grants (one per successful code exchange: what was granted, to whom) and
 * refresh tokens (every one issued, with its state: current, rotated or revoked, so a replayed
 * rotated token is told apart from an unknown one). Token values are compared in constant time
 * and wiped when freed; the admin API never shows them. docs/sandbox.md is the reference. */
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "http/http.h"
#include "jose/jose.h"
#include "sandbox.h"

#define SESSION_LIFETIME 600 /* seconds from /authorize to the consent answer */
#define MAX_LOGIN_FAILURES 5
#define MAX_SESSIONS 10000
#define PICKER_PATIENTS 5
#define DEFAULT_CODE_LIFETIME 60
#define DEFAULT_REFRESH_LIFETIME (30 * 86400)
#define MAX_LIFETIME (365 * 86400)

typedef struct session {
    struct session *next;
    char id[64];
    char client_id[128];
    char *redirect_uri, *scope, *state, *challenge, *nonce;
    int64_t created;
    unsigned failures;
    bool logged_in;
    char user[64];
} session;

typedef struct code_entry {
    struct code_entry *next;
    char code[64];
    char client_id[128];
    char *redirect_uri, *scope, *challenge, *nonce;
    char patient[64];
    char user[64];
    int64_t expires;
    bool used;
    unsigned grant_id; /* the grant its exchange made, 0 before */
} code_entry;

typedef struct grant_entry {
    struct grant_entry *next;
    unsigned id;
    char client_id[128];
    char *scope; /* as granted at consent (a refresh may narrow the access token, not this) */
    char patient[64];
    char user[64];
    int64_t created;
    bool revoked;
    unsigned refresh_issued; /* refresh tokens issued so far (the first + each rotation) */
} grant_entry;

typedef enum refresh_state { REFRESH_CURRENT, REFRESH_ROTATED } refresh_state;

typedef struct refresh_entry {
    struct refresh_entry *next;
    char token[64];
    grant_entry *grant;
    unsigned seq; /* 1 for the first of its grant */
    refresh_state state;
    int64_t issued, expires;
} refresh_entry;

struct sb_launch {
    sb_server *sb;
    pthread_mutex_t lock;
    session *sessions;
    size_t nsessions;
    code_entry *codes;
    grant_entry *grants;
    refresh_entry *refreshes;
    unsigned next_grant_id;
    int64_t code_lifetime, refresh_lifetime;
    char user[64], password[128];
    fhirsync_key *id_key; /* made at first use: RSA key generation takes a while */
    char *jwks;           /* its public JWK Set */
};

/* ---- life cycle ----------------------------------------------------------------------------- */

static void session_free(session *s)
{
    if (!s)
        return;
    OPENSSL_cleanse(s->id, sizeof s->id);
    fs_free(s->redirect_uri);
    fs_free(s->scope);
    fs_free(s->state);
    fs_free(s->challenge);
    fs_free(s->nonce);
    fs_free(s);
}

static void code_free(code_entry *c)
{
    OPENSSL_cleanse(c->code, sizeof c->code);
    fs_free(c->redirect_uri);
    fs_free(c->scope);
    fs_free(c->challenge);
    fs_free(c->nonce);
    fs_free(c);
}

sb_launch *sb_launch_new(sb_server *sb, fhirsync_error *err)
{
    sb_launch *l = fs_calloc(1, sizeof *l);
    if (!l) {
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        return NULL;
    }
    l->sb = sb;
    pthread_mutex_init(&l->lock, NULL);
    l->next_grant_id = 1;
    l->code_lifetime = DEFAULT_CODE_LIFETIME;
    l->refresh_lifetime = DEFAULT_REFRESH_LIFETIME;
    snprintf(l->user, sizeof l->user, "%s", SB_LAUNCH_USER);
    snprintf(l->password, sizeof l->password, "%s", SB_LAUNCH_PASSWORD);
    return l;
}

void sb_launch_free(sb_launch *l)
{
    if (!l)
        return;
    while (l->sessions) {
        session *next = l->sessions->next;
        session_free(l->sessions);
        l->sessions = next;
    }
    while (l->codes) {
        code_entry *next = l->codes->next;
        code_free(l->codes);
        l->codes = next;
    }
    while (l->refreshes) {
        refresh_entry *next = l->refreshes->next;
        OPENSSL_cleanse(l->refreshes->token, sizeof l->refreshes->token);
        fs_free(l->refreshes);
        l->refreshes = next;
    }
    while (l->grants) {
        grant_entry *next = l->grants->next;
        fs_free(l->grants->scope);
        fs_free(l->grants);
        l->grants = next;
    }
    OPENSSL_cleanse(l->password, sizeof l->password);
    fhirsync_key_free(l->id_key);
    fs_free(l->jwks);
    pthread_mutex_destroy(&l->lock);
    fs_free(l);
}

/* ---- small helpers -------------------------------------------------------------------------- */

/* Whether space-separated `list` holds `word`. */
static bool has_word(const char *list, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = list ? list : ""; *p;) {
        while (*p == ' ')
            p++;
        size_t m = strcspn(p, " ");
        if (m == n && !strncmp(p, word, n))
            return true;
        p += m;
    }
    return false;
}

/* Whether a scope asks for a patient context: launch/patient or any patient/ resource scope. */
static bool needs_patient(const char *scopes)
{
    if (has_word(scopes, "launch/patient"))
        return true;
    for (const char *p = scopes ? scopes : ""; *p;) {
        while (*p == ' ')
            p++;
        if (fs_starts_with(p, "patient/"))
            return true;
        p += strcspn(p, " ");
    }
    return false;
}

/* Whether one requested scope is within the space-separated `allowed` list: the specials by
 * name, resource scopes by meaning (patient/(*).read covers patient/Observation.rs). */
static bool scope_allowed(const char *one, const char *allowed)
{
    if (sb_scope_is_app_special(one))
        return has_word(allowed, one);
    sb_scope want;
    if (!sb_scope_parse_in(one, SB_SCOPE_PATIENT | SB_SCOPE_USER, &want, NULL))
        return false;
    bool within = false;
    for (const char *p = allowed; *p && !within;) {
        while (*p == ' ')
            p++;
        size_t m = strcspn(p, " ");
        char text[256];
        sb_scope have;
        if (m > 0 && m < sizeof text) {
            memcpy(text, p, m);
            text[m] = '\0';
            within = sb_scope_parse_in(text, SB_SCOPE_PATIENT | SB_SCOPE_USER, &have, NULL) &&
                     sb_scope_within(&want, &have);
        }
        p += m;
    }
    return within;
}

/* Check each scope of `requested` against `allowed` (invalid, or not allowed: false with the
 * offending scope in bad). */
static bool scopes_within(const char *requested, const char *allowed, char *bad, size_t size)
{
    for (const char *p = requested; *p;) {
        while (*p == ' ')
            p++;
        size_t m = strcspn(p, " ");
        if (m == 0)
            break;
        char one[256];
        if (m >= sizeof one) {
            snprintf(bad, size, "%.60s...", p);
            return false;
        }
        memcpy(one, p, m);
        one[m] = '\0';
        if (!scope_allowed(one, allowed)) {
            snprintf(bad, size, "%s", one);
            return false;
        }
        p += m;
    }
    return true;
}

static bool html_escaped(fs_buf *b, const char *s)
{
    bool ok = true;
    for (; ok && *s; s++) {
        switch (*s) {
        case '<': ok = fs_buf_append_str(b, "&lt;"); break;
        case '>': ok = fs_buf_append_str(b, "&gt;"); break;
        case '&': ok = fs_buf_append_str(b, "&amp;"); break;
        case '"': ok = fs_buf_append_str(b, "&quot;"); break;
        case '\'': ok = fs_buf_append_str(b, "&#39;"); break;
        default: ok = fs_buf_append(b, s, 1);
        }
    }
    return ok;
}

static const char page_head[] = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                                "<title>fhirsync sandbox EHR</title></head><body>\n";
static const char page_tail[] = "</body></html>\n";

/* An HTML page that never redirects: the errors RFC 6749 4.1.2.1 forbids sending back to an
 * unverified redirect_uri (unknown client, unregistered redirect_uri), and broken forms. */
static void reply_html_error(sb_reply *reply, unsigned status, const char *error,
                             const char *description)
{
    fs_buf page;
    fs_buf_init(&page);
    bool ok = fs_buf_append_str(&page, page_head) &&
              fs_buf_append_str(&page, "<h1>Authorization error</h1>\n<p id=\"error\">") &&
              html_escaped(&page, error) &&
              fs_buf_append_str(&page, "</p>\n<p id=\"error_description\">") &&
              html_escaped(&page, description) && fs_buf_append_str(&page, "</p>\n") &&
              fs_buf_append_str(&page, page_tail);
    sb_reply_text(reply, status, "text/html; charset=utf-8", ok ? page.data : "error");
    sb_reply_header(reply, "Cache-Control", "no-store");
    fs_buf_free(&page);
}

/* RFC 8252 section 7.3: a native app's loopback redirect URI (http, host 127.0.0.1 or [::1])
 * may come with any port, chosen when the app starts listening; the rest must match exactly.
 * Whether `asked` is `registered` but for the port. */
static bool same_but_loopback_port(const char *registered, const char *asked)
{
    static const char *const hosts[] = {"http://127.0.0.1", "http://[::1]"};
    for (size_t h = 0; h < sizeof hosts / sizeof *hosts; h++) {
        size_t n = strlen(hosts[h]);
        if (strncmp(registered, hosts[h], n) != 0 || strncmp(asked, hosts[h], n) != 0)
            continue;
        const char *r = registered + n, *a = asked + n;
        if (*r == ':')
            r += 1 + strspn(r + 1, "0123456789");
        if (*a == ':')
            a += 1 + strspn(a + 1, "0123456789");
        return (*r == '\0' || *r == '/') && (*a == '\0' || *a == '/') && strcmp(r, a) == 0;
    }
    return false;
}

/* 302 to redirect_uri with the given parameters (name, value pairs; a NULL value is left out). */
static void reply_redirect(sb_reply *reply, const char *redirect_uri, const char *const *pairs,
                           size_t npairs)
{
    fs_buf url;
    fs_buf_init(&url);
    bool ok = fs_buf_append_str(&url, redirect_uri);
    char sep = strchr(redirect_uri, '?') ? '&' : '?';
    for (size_t i = 0; ok && i + 1 < npairs * 2; i += 2) {
        if (!pairs[i + 1])
            continue;
        ok = fs_buf_append(&url, &sep, 1) && fs_buf_append_str(&url, pairs[i]) &&
             fs_buf_append_str(&url, "=") && fs_buf_append_urlencoded(&url, pairs[i + 1]);
        sep = '&';
    }
    if (!ok) {
        reply_html_error(reply, 500, "server_error", "out of memory");
    } else {
        sb_reply_text(reply, 302, "text/plain; charset=utf-8", "");
        sb_reply_header(reply, "Location", "%s", url.data);
        sb_reply_header(reply, "Cache-Control", "no-store");
    }
    fs_buf_free_secret(&url);
}

static void redirect_error(sb_reply *reply, const char *redirect_uri, const char *error,
                           const char *description, const char *state)
{
    const char *pairs[] = {"error", error, "error_description", description, "state", state};
    reply_redirect(reply, redirect_uri, pairs, 3);
}

/* BASE64URL(SHA-256(verifier)) == challenge (RFC 7636 4.6), in constant time. */
static bool pkce_matches(const char *verifier, const char *challenge)
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(verifier, strlen(verifier), digest, &len, EVP_sha256(), NULL) != 1)
        return false;
    char *computed = fs_b64url_encode(digest, len);
    bool same =
        computed && fs_consttime_eq(computed, strlen(computed), challenge, strlen(challenge));
    fs_free(computed);
    return same;
}

/* RFC 7636 4.1: 43 to 128 characters of [A-Za-z0-9-._~] (a verifier; an S256 challenge is 43). */
static bool pkce_text_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 43 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_' || c == '~'))
            return false;
    }
    return true;
}

/* Up to `max` ids of a type in streaming order (for the patient picker and fhirUser). */
static size_t first_ids(sb_data *data, const char *type_name, char ids[][64], size_t max)
{
    int type = sb_data_type_index(data, type_name);
    if (type < 0)
        return 0;
    size_t n = 0;
    sb_walk w;
    uint32_t bucket, slot;
    sb_data_read_lock(data);
    sb_walk_init(&w, data, (size_t)type, NULL, 0, 0, 0);
    while (n < max && sb_walk_next(&w, &bucket, &slot)) {
        sb_resource_meta meta;
        if (sb_data_meta(data, (size_t)type, bucket, slot, &meta) && !meta.deleted)
            snprintf(ids[n++], 64, "%s", meta.id);
    }
    sb_data_read_unlock(data);
    return n;
}

static bool patient_exists(sb_data *data, const char *id)
{
    int type = sb_data_patient_type(data);
    uint32_t bucket, slot;
    sb_resource_meta meta;
    if (type < 0 || !id || !*id || strlen(id) >= 64)
        return false;
    sb_data_read_lock(data);
    bool found = sb_data_find(data, (size_t)type, id, &bucket, &slot) &&
                 sb_data_meta(data, (size_t)type, bucket, slot, &meta) && !meta.deleted &&
                 !strcmp(meta.id, id);
    sb_data_read_unlock(data);
    return found;
}

/* ---- sessions ------------------------------------------------------------------------------- */

/* Drop expired sessions and codes (codes are kept an hour past expiry to answer "expired"). */
static void purge(sb_launch *l, int64_t now)
{
    for (session **link = &l->sessions; *link;) {
        session *s = *link;
        if (s->created + SESSION_LIFETIME < now) {
            *link = s->next;
            session_free(s);
            l->nsessions--;
        } else {
            link = &s->next;
        }
    }
    for (code_entry **link = &l->codes; *link;) {
        code_entry *c = *link;
        if (c->expires + 3600 < now) {
            *link = c->next;
            code_free(c);
        } else {
            link = &c->next;
        }
    }
}

/* The session with this id, unlinked from the list (the caller owns it then), or NULL. */
static session *take_session(sb_launch *l, const char *id)
{
    if (!id)
        return NULL;
    session *found = NULL;
    size_t len = strlen(id);
    pthread_mutex_lock(&l->lock);
    purge(l, fs_now());
    for (session **link = &l->sessions; *link; link = &(*link)->next) {
        if (fs_consttime_eq((*link)->id, strlen((*link)->id), id, len)) {
            found = *link;
            *link = found->next;
            l->nsessions--;
            break;
        }
    }
    pthread_mutex_unlock(&l->lock);
    return found;
}

/* Give a session a fresh id and put it (back) in the list; false when full or out of memory
 * (the session is freed then). */
static bool store_session(sb_launch *l, session *s)
{
    char *id = fs_random_id(24);
    if (!id) {
        session_free(s);
        return false;
    }
    snprintf(s->id, sizeof s->id, "%s", id);
    fs_free_secret(id);
    bool stored = false;
    pthread_mutex_lock(&l->lock);
    if (l->nsessions < MAX_SESSIONS) {
        s->next = l->sessions;
        l->sessions = s;
        l->nsessions++;
        stored = true;
    }
    pthread_mutex_unlock(&l->lock);
    if (!stored)
        session_free(s);
    return stored;
}

/* ---- pages ---------------------------------------------------------------------------------- */

/* The page, with headers that keep it from being cached or framed. Its forms post to this origin;
 * the consent form's answer is a redirect to the app's registered redirect URI, which browsers
 * check against form-action too (CSP 3), so that URI's origin is allowed as well. */
static void reply_page(sb_reply *reply, fs_buf *page, bool ok, const char *redirect_uri)
{
    if (ok)
        ok = fs_buf_append_str(page, page_tail);
    sb_reply_text(reply, 200, "text/html; charset=utf-8", ok ? page->data : "out of memory");
    if (!ok)
        reply->status = 500;
    sb_reply_header(reply, "Cache-Control", "no-store");
    char *origin = NULL;
    fs_buf csp;
    fs_buf_init(&csp);
    bool csp_ok = fs_buf_append_str(&csp, "default-src 'none'; form-action 'self'");
    if (csp_ok && redirect_uri && fs_url_origin(redirect_uri, &origin, NULL) == FHIRSYNC_OK)
        csp_ok = fs_buf_printf(&csp, " %s", origin);
    csp_ok = csp_ok && fs_buf_append_str(&csp, "; frame-ancestors 'none'");
    sb_reply_header(reply, "Content-Security-Policy", "%s",
                    csp_ok ? csp.data : "default-src 'none'; frame-ancestors 'none'");
    fs_free(origin);
    fs_buf_free(&csp);
    sb_reply_header(reply, "X-Frame-Options", "DENY");
}

static void login_page(sb_reply *reply, const session *s, const char *message)
{
    fs_buf page;
    fs_buf_init(&page);
    bool ok = fs_buf_append_str(&page, page_head) &&
              fs_buf_append_str(&page, "<h1>Sign in to the fhirsync sandbox EHR</h1>\n"
                                       "<p>The app <b id=\"client\">") &&
              html_escaped(&page, s->client_id) &&
              fs_buf_append_str(&page, "</b> asks to connect.</p>\n");
    if (ok && message)
        ok = fs_buf_append_str(&page, "<p id=\"error\">") && html_escaped(&page, message) &&
             fs_buf_append_str(&page, "</p>\n");
    ok = ok &&
         fs_buf_append_str(&page,
                           "<form id=\"login-form\" method=\"post\" action=\"/auth/login\">\n"
                           "<input type=\"hidden\" id=\"session\" name=\"session\" value=\"") &&
         html_escaped(&page, s->id) &&
         fs_buf_append_str(
             &page, "\">\n<p><label for=\"username\">User</label> <input id=\"username\" "
                    "name=\"username\" autocomplete=\"username\"></p>\n<p><label "
                    "for=\"password\">Password</label> <input id=\"password\" name=\"password\" "
                    "type=\"password\" autocomplete=\"current-password\"></p>\n<p><button "
                    "id=\"login\" type=\"submit\">Sign in</button></p>\n</form>\n");
    reply_page(reply, &page, ok, s->redirect_uri);
    fs_buf_free(&page);
}

static void consent_page(sb_launch *l, sb_reply *reply, const session *s)
{
    fs_buf page;
    fs_buf_init(&page);
    bool ok = fs_buf_append_str(&page, page_head) &&
              fs_buf_append_str(&page, "<h1>Allow access?</h1>\n<p>The app <b id=\"client\">") &&
              html_escaped(&page, s->client_id) &&
              fs_buf_append_str(&page, "</b> asks for these permissions on behalf of <b "
                                       "id=\"user\">") &&
              html_escaped(&page, s->user) &&
              fs_buf_append_str(&page, "</b>:</p>\n<form id=\"consent-form\" method=\"post\" "
                                       "action=\"/auth/consent\">\n<input type=\"hidden\" "
                                       "id=\"session\" name=\"session\" value=\"") &&
              html_escaped(&page, s->id) && fs_buf_append_str(&page, "\">\n<ul id=\"scopes\">\n");
    unsigned n = 0;
    for (const char *p = s->scope; ok && *p;) {
        while (*p == ' ')
            p++;
        size_t m = strcspn(p, " ");
        if (m == 0)
            break;
        char one[256];
        snprintf(one, sizeof one, "%.*s", (int)m, p);
        ok = fs_buf_printf(&page,
                           "<li><label><input type=\"checkbox\" id=\"scope-%u\" name=\"scope\" "
                           "value=\"",
                           n) &&
             html_escaped(&page, one) && fs_buf_append_str(&page, "\" checked> ") &&
             html_escaped(&page, one) && fs_buf_append_str(&page, "</label></li>\n");
        n++;
        p += m;
    }
    ok = ok && fs_buf_append_str(&page, "</ul>\n");
    if (ok && needs_patient(s->scope)) {
        char ids[PICKER_PATIENTS][64];
        size_t count = first_ids(l->sb->data, "Patient", ids, PICKER_PATIENTS);
        ok = fs_buf_append_str(&page, "<p><label for=\"patient\">Patient</label> <select "
                                      "id=\"patient\" name=\"patient\">\n");
        for (size_t i = 0; ok && i < count; i++)
            ok = fs_buf_append_str(&page, "<option value=\"") && html_escaped(&page, ids[i]) &&
                 fs_buf_append_str(&page, i == 0 ? "\" selected>" : "\">") &&
                 html_escaped(&page, ids[i]) && fs_buf_append_str(&page, "</option>\n");
        ok = ok && fs_buf_append_str(&page, "</select></p>\n");
    }
    ok = ok && fs_buf_append_str(&page, "<p><button id=\"allow\" type=\"submit\" name=\"decision\" "
                                        "value=\"allow\">Allow</button> <button id=\"deny\" "
                                        "type=\"submit\" name=\"decision\" "
                                        "value=\"deny\">Deny</button></p>\n</form>\n");
    reply_page(reply, &page, ok, s->redirect_uri);
    fs_buf_free(&page);
}

/* ---- GET /auth/authorize -------------------------------------------------------------------- */

/* The aud /authorize insists on: the FHIR base URL, or with aud-other-url the quirk's URL (the
 * origin when it has none). */
static void expected_aud(sb_server *sb, const char *client_id, char *out, size_t size)
{
    char text[SB_QUIRK_TEXT_MAX];
    if (sb_quirk_on_text(sb->quirks, SB_QUIRK_AUD_OTHER_URL, client_id, NULL, NULL, text,
                         sizeof text))
        snprintf(out, size, "%s", text[0] ? text : sb->origin);
    else
        snprintf(out, size, "%s", sb->base_url);
}

void sb_launch_handle_authorize(sb_server *sb, sb_request *req, sb_reply *reply)
{
    const sb_params *q = &req->query;
    const char *client_id = sb_params_get(q, "client_id");
    const char *redirect_uri = sb_params_get(q, "redirect_uri");
    char why[1024];
    /* 1. what decides where errors may go: shown here, never redirected (RFC 6749 4.1.2.1) */
    if (!client_id || sb_params_count(q, "client_id") > 1) {
        reply_html_error(reply, 400, "invalid_request",
                         client_id ? "client_id is repeated" : "client_id missing");
        return;
    }
    snprintf(req->client_id, sizeof req->client_id, "%.127s", client_id);
    const sb_client *client = sb_auth_find_client(sb->auth, client_id);
    if (!client || !client->app) {
        snprintf(why, sizeof why,
                 client ? "client_id %.80s is a backend service, not an app of the authorization "
                          "code flow (it registered no redirect_uris)"
                        : "unknown client_id %.80s",
                 client_id);
        reply_html_error(reply, 400, client ? "unauthorized_client" : "invalid_client", why);
        return;
    }
    if (!redirect_uri || sb_params_count(q, "redirect_uri") > 1) {
        reply_html_error(reply, 400, "invalid_request",
                         redirect_uri ? "redirect_uri is repeated" : "redirect_uri missing");
        return;
    }
    bool any_port = !sb_quirk_on(sb->quirks, SB_QUIRK_REDIRECT_EXACT_PORT, client_id, NULL, NULL);
    bool registered = false;
    for (size_t i = 0; i < client->nredirect_uris && !registered; i++)
        registered = !strcmp(client->redirect_uris[i], redirect_uri) ||
                     (any_port && same_but_loopback_port(client->redirect_uris[i], redirect_uri));
    if (!registered) {
        snprintf(why, sizeof why,
                 "redirect_uri %.200s is not registered for client %.80s (compared exactly%s)",
                 redirect_uri, client_id, any_port ? ", but for a loopback IP's port" : "");
        reply_html_error(reply, 400, "invalid_request", why);
        return;
    }
    /* 2. the rest goes back to the app, with its state */
    const char *state = sb_params_get(q, "state");
    static const char *const single[] = {"response_type", "scope",          "state",
                                         "aud",           "code_challenge", "code_challenge_method",
                                         "nonce"};
    for (size_t i = 0; i < sizeof single / sizeof single[0]; i++) {
        if (sb_params_count(q, single[i]) > 1) {
            snprintf(why, sizeof why, "%s is repeated", single[i]);
            redirect_error(reply, redirect_uri, "invalid_request", why, state);
            return;
        }
    }
    const char *response_type = sb_params_get(q, "response_type");
    if (!fs_streq(response_type, "code")) {
        snprintf(why, sizeof why, "response_type %.40s is not supported: only code",
                 response_type ? response_type : "(missing)");
        redirect_error(reply, redirect_uri,
                       response_type ? "unsupported_response_type" : "invalid_request", why, state);
        return;
    }
    const char *scope = sb_params_get(q, "scope");
    char bad[300];
    if (!scope || !*scope) {
        redirect_error(reply, redirect_uri, "invalid_scope", "scope missing", state);
        return;
    }
    if (!scopes_within(scope, client->scope, bad, sizeof bad)) {
        snprintf(why, sizeof why, "scope %s is not allowed for client %.80s (allowed: %.300s)", bad,
                 client_id, client->scope);
        redirect_error(reply, redirect_uri, "invalid_scope", why, state);
        return;
    }
    if (!state || !*state) {
        redirect_error(reply, redirect_uri, "invalid_request",
                       "state missing (SMART requires an unguessable state)", NULL);
        return;
    }
    const char *method = sb_params_get(q, "code_challenge_method");
    const char *challenge = sb_params_get(q, "code_challenge");
    if (!method || strcmp(method, "S256") != 0) {
        snprintf(why, sizeof why,
                 "code_challenge_method %.20s is refused: PKCE with S256 is required",
                 method ? method : "(missing)");
        redirect_error(reply, redirect_uri, "invalid_request", why, state);
        return;
    }
    if (!challenge || strlen(challenge) != 43 || !pkce_text_ok(challenge)) {
        redirect_error(reply, redirect_uri, "invalid_request",
                       "code_challenge missing or not an S256 challenge (43 base64url characters)",
                       state);
        return;
    }
    const char *aud = sb_params_get(q, "aud");
    char want[SB_QUIRK_TEXT_MAX + 160];
    expected_aud(sb, client_id, want, sizeof want);
    if (!aud || strcmp(aud, want) != 0) {
        snprintf(why, sizeof why, "aud %.200s is not the FHIR base URL %.200s",
                 aud ? aud : "(missing)", want);
        redirect_error(reply, redirect_uri, "invalid_request", why, state);
        return;
    }
    session *s = fs_calloc(1, sizeof *s);
    const char *nonce = sb_params_get(q, "nonce");
    if (!s || !(s->redirect_uri = fs_strdup(redirect_uri)) || !(s->scope = fs_strdup(scope)) ||
        !(s->state = fs_strdup(state)) || !(s->challenge = fs_strdup(challenge)) ||
        (nonce && !(s->nonce = fs_strdup(nonce)))) {
        session_free(s);
        reply_html_error(reply, 500, "server_error", "out of memory");
        return;
    }
    snprintf(s->client_id, sizeof s->client_id, "%s", client_id);
    s->created = fs_now();
    if (!store_session(sb->launch, s)) {
        reply_html_error(reply, 503, "temporarily_unavailable", "too many sign-ins in progress");
        return;
    }
    login_page(reply, s, NULL);
}

/* ---- POST /auth/login and /auth/consent ----------------------------------------------------- */

/* The form body of a page's POST, or false with an HTML error in reply. */
static bool read_form(sb_request *req, sb_params *form, sb_reply *reply)
{
    fhirsync_error err;
    if (!sb_media_type_is(sb_req_header(req, "Content-Type"),
                          "application/x-www-form-urlencoded")) {
        reply_html_error(reply, 415, "invalid_request",
                         "the form must be posted as application/x-www-form-urlencoded");
        return false;
    }
    if (!sb_params_parse_form(form, req->body.data ? req->body.data : "", req->body.len, &err)) {
        reply_html_error(reply, 400, "invalid_request", err.message);
        return false;
    }
    return true;
}

void sb_launch_handle_login(sb_server *sb, sb_request *req, sb_reply *reply)
{
    sb_launch *l = sb->launch;
    sb_params form;
    sb_params_init(&form);
    if (!read_form(req, &form, reply))
        goto out;
    session *s = take_session(l, sb_params_get(&form, "session"));
    if (!s || s->logged_in) {
        /* a logged-in session's id was replaced at login: the old one is unknown now */
        reply_html_error(reply, 400, "invalid_request",
                         "unknown or expired sign-in session: start again from the app");
        if (s)
            session_free(s);
        goto out;
    }
    snprintf(req->client_id, sizeof req->client_id, "%s", s->client_id);
    const char *user = sb_params_get(&form, "username");
    const char *password = sb_params_get(&form, "password");
    pthread_mutex_lock(&l->lock);
    bool good = user && password && !strcmp(user, l->user) &&
                fs_consttime_eq(password, strlen(password), l->password, strlen(l->password));
    pthread_mutex_unlock(&l->lock);
    if (!good) {
        if (++s->failures >= MAX_LOGIN_FAILURES) {
            reply_html_error(reply, 403, "access_denied", "too many failed sign-ins");
            session_free(s);
        } else if (store_session(l, s)) {
            login_page(reply, s, "wrong user or password");
        } else {
            reply_html_error(reply, 503, "temporarily_unavailable", "too many sign-ins");
        }
        goto out;
    }
    s->logged_in = true;
    snprintf(s->user, sizeof s->user, "%s", user);
    /* a new id for the consent step: the login page's id cannot post a consent */
    if (!store_session(l, s)) {
        reply_html_error(reply, 503, "temporarily_unavailable", "too many sign-ins");
        goto out;
    }
    consent_page(l, reply, s);
out:
    sb_params_free(&form);
}

/* Make a code for a consented session; the code (the caller's secret) or NULL. */
static char *make_code(sb_launch *l, const session *s, const char *scope, const char *patient)
{
    code_entry *c = fs_calloc(1, sizeof *c);
    char *code = fs_random_id(32);
    if (!c || !code || !(c->redirect_uri = fs_strdup(s->redirect_uri)) ||
        !(c->scope = fs_strdup(scope)) || !(c->challenge = fs_strdup(s->challenge)) ||
        (s->nonce && !(c->nonce = fs_strdup(s->nonce)))) {
        if (c)
            code_free(c);
        fs_free_secret(code);
        return NULL;
    }
    snprintf(c->code, sizeof c->code, "%s", code);
    snprintf(c->client_id, sizeof c->client_id, "%s", s->client_id);
    snprintf(c->patient, sizeof c->patient, "%s", patient ? patient : "");
    snprintf(c->user, sizeof c->user, "%s", s->user);
    pthread_mutex_lock(&l->lock);
    c->expires = fs_now() + l->code_lifetime;
    c->next = l->codes;
    l->codes = c;
    pthread_mutex_unlock(&l->lock);
    return code;
}

void sb_launch_handle_consent(sb_server *sb, sb_request *req, sb_reply *reply)
{
    sb_launch *l = sb->launch;
    sb_params form;
    sb_params_init(&form);
    session *s = NULL;
    fs_buf granted;
    fs_buf_init(&granted);
    char *code = NULL;
    if (!read_form(req, &form, reply))
        goto out;
    s = take_session(l, sb_params_get(&form, "session"));
    if (!s || !s->logged_in) {
        reply_html_error(reply, 400, "invalid_request",
                         "unknown, expired or not signed-in session: start again from the app");
        goto out;
    }
    snprintf(req->client_id, sizeof req->client_id, "%s", s->client_id);
    const char *decision = sb_params_get(&form, "decision");
    if (!fs_streq(decision, "allow")) {
        redirect_error(reply, s->redirect_uri, "access_denied", "the user denied access", s->state);
        goto out;
    }
    /* the scopes ticked, in the order asked, each once */
    for (const char *p = s->scope; *p;) {
        while (*p == ' ')
            p++;
        size_t m = strcspn(p, " ");
        if (m == 0)
            break;
        char one[256];
        snprintf(one, sizeof one, "%.*s", (int)m, p);
        p += m;
        bool ticked = false;
        for (size_t i = 0; i < form.count && !ticked; i++)
            ticked = !strcmp(form.items[i].name, "scope") && !strcmp(form.items[i].value, one);
        if (ticked && !has_word(granted.data, one) &&
            !((granted.len == 0 || fs_buf_append_str(&granted, " ")) &&
              fs_buf_append_str(&granted, one))) {
            reply_html_error(reply, 500, "server_error", "out of memory");
            goto out;
        }
    }
    if (granted.len == 0) {
        redirect_error(reply, s->redirect_uri, "access_denied", "no scope was granted", s->state);
        goto out;
    }
    const char *patient = NULL;
    if (needs_patient(granted.data)) {
        patient = sb_params_get(&form, "patient");
        if (!patient_exists(sb->data, patient)) {
            reply_html_error(reply, 400, "invalid_request",
                             "choose a patient: the form's patient is missing or unknown");
            goto out;
        }
    }
    if (!(code = make_code(l, s, granted.data, patient))) {
        reply_html_error(reply, 500, "server_error", "out of memory");
        goto out;
    }
    const char *pairs[] = {"code", code, "state", s->state};
    reply_redirect(reply, s->redirect_uri, pairs, 2);
out:
    session_free(s);
    fs_buf_free(&granted);
    fs_free_secret(code);
    sb_params_free(&form);
}

/* ---- id_token ------------------------------------------------------------------------------- */

/* The signing key, made at first use (under the lock). */
static fhirsync_key *id_key(sb_launch *l)
{
    fhirsync_error err;
    pthread_mutex_lock(&l->lock);
    if (!l->id_key) {
        fhirsync_key *key = NULL;
        char *jwks = NULL;
        fhirsync_alg alg = FHIRSYNC_ALG_RS256;
        if (fhirsync_key_generate(FHIRSYNC_ALG_RS256, 2048, &key, &err) == FHIRSYNC_OK &&
            fhirsync_jwks_build((const fhirsync_key *const *)&key, &alg, 1, &jwks, &err) ==
                FHIRSYNC_OK) {
            l->id_key = key;
            l->jwks = jwks;
        } else {
            fhirsync_key_free(key);
        }
    }
    fhirsync_key *key = l->id_key;
    pthread_mutex_unlock(&l->lock);
    return key;
}

void sb_launch_handle_jwks(sb_server *sb, sb_request *req, sb_reply *reply)
{
    (void)req;
    if (!id_key(sb->launch)) {
        sb_reply_oauth_error(reply, 500, "server_error", "no signing key");
        return;
    }
    sb_reply_text(reply, 200, SB_JSON, sb->launch->jwks);
}

/* The fhirUser of the test user: the first Practitioner, as an absolute URL ("" when none). */
static void fhir_user(sb_server *sb, char *out, size_t size)
{
    char ids[1][64];
    if (first_ids(sb->data, "Practitioner", ids, 1) == 1)
        snprintf(out, size, "%s/Practitioner/%s", sb->base_url, ids[0]);
    else
        out[0] = '\0';
}

static char *make_id_token(sb_server *sb, const char *client_id, const char *user,
                           const char *nonce, int64_t now, int64_t lifetime)
{
    fhirsync_key *key = id_key(sb->launch);
    if (!key)
        return NULL;
    char who[300];
    fhir_user(sb, who, sizeof who);
    json_t *claims =
        json_pack("{s:s, s:s, s:s, s:I, s:I}", "iss", sb->issuer, "sub", user, "aud", client_id,
                  "iat", (json_int_t)now, "exp", (json_int_t)(now + lifetime));
    if (claims && who[0])
        json_object_set_new(claims, "fhirUser", json_string(who));
    if (claims && nonce)
        json_object_set_new(claims, "nonce", json_string(nonce));
    char *text = claims ? fs_json_dump(claims) : NULL;
    json_decref(claims);
    char *jws = NULL;
    fhirsync_error err;
    if (text &&
        fhirsync_jws_sign(key, FHIRSYNC_ALG_RS256, NULL, NULL, text, &jws, &err) != FHIRSYNC_OK)
        jws = NULL;
    fs_free(text);
    return jws;
}

/* ---- the token grants ----------------------------------------------------------------------- */

/* A new refresh token for `grant` (called under the lock); the value (the caller's secret). */
static char *new_refresh(sb_launch *l, grant_entry *grant, int64_t now)
{
    refresh_entry *r = fs_calloc(1, sizeof *r);
    char *token = fs_random_id(32);
    if (!r || !token) {
        fs_free(r);
        fs_free_secret(token);
        return NULL;
    }
    snprintf(r->token, sizeof r->token, "%s", token);
    r->grant = grant;
    r->seq = ++grant->refresh_issued;
    r->state = REFRESH_CURRENT;
    r->issued = now;
    r->expires = now + l->refresh_lifetime;
    r->next = l->refreshes;
    l->refreshes = r;
    return token;
}

static refresh_entry *find_refresh(sb_launch *l, const char *token)
{
    size_t len = strlen(token);
    for (refresh_entry *r = l->refreshes; r; r = r->next)
        if (fs_consttime_eq(r->token, strlen(r->token), token, len))
            return r;
    return NULL;
}

/* The answer of both grants. The access token is bound to `patient` (may be ""); the answer
 * names it unless hide_patient (refresh-no-context). */
static void token_answer(sb_server *sb, sb_reply *reply, const char *client_id, const char *scope,
                         const char *patient, bool hide_patient, const char *refresh,
                         const char *id_token)
{
    int64_t lifetime = sb_auth_access_lifetime(sb->auth);
    char *access = sb_auth_issue_access_token(sb->auth, client_id, scope, patient, fs_now());
    json_t *body = access ? json_pack("{s:s, s:s, s:I, s:s}", "access_token", access, "token_type",
                                      "Bearer", "expires_in", (json_int_t)lifetime, "scope", scope)
                          : NULL;
    if (body && refresh)
        json_object_set_new(body, "refresh_token", json_string(refresh));
    if (body && patient && *patient && !hide_patient) {
        json_object_set_new(body, "patient", json_string(patient));
        json_object_set_new(body, "need_patient_banner", json_true());
    }
    if (body && id_token)
        json_object_set_new(body, "id_token", json_string(id_token));
    if (body) {
        sb_reply_json(reply, 200, SB_JSON, body);
        sb_reply_header(reply, "Cache-Control", "no-store");
        sb_reply_header(reply, "Pragma", "no-cache");
    } else {
        sb_reply_oauth_error(reply, 500, "server_error", "out of memory issuing a token");
    }
    json_decref(body);
    fs_free_secret(access);
}

static void grant_code(sb_server *sb, const sb_client *client, const sb_params *form,
                       sb_reply *reply)
{
    sb_launch *l = sb->launch;
    const char *code = sb_params_get(form, "code");
    const char *redirect_uri = sb_params_get(form, "redirect_uri");
    const char *verifier = sb_params_get(form, "code_verifier");
    char *refresh = NULL, *id_token = NULL, *scope = NULL, *nonce = NULL;
    char patient[64] = "", user[64] = "";
    if (!code || !redirect_uri || !verifier) {
        sb_reply_oauth_error(reply, 400, "invalid_request", "%s missing",
                             !code           ? "code"
                             : !redirect_uri ? "redirect_uri"
                                             : "code_verifier");
        return;
    }
    int64_t now = fs_now();
    pthread_mutex_lock(&l->lock);
    code_entry *c = NULL;
    size_t len = strlen(code);
    for (code_entry *e = l->codes; e && !c; e = e->next)
        if (fs_consttime_eq(e->code, strlen(e->code), code, len))
            c = e;
    const char *error = NULL;
    char why[400] = "";
    if (!c) {
        error = "code unknown";
    } else if (strcmp(c->client_id, client->client_id) != 0) {
        error = "code was issued to another client";
    } else if (c->used) {
        /* RFC 6749 4.1.2: a code used twice revokes what its first use gave */
        for (grant_entry *g = l->grants; g; g = g->next)
            if (g->id == c->grant_id)
                g->revoked = true;
        error = "code was already used (its grant is revoked)";
    } else {
        c->used = true; /* any exchange attempt uses the code up */
        if (now >= c->expires) {
            error = "code expired";
        } else if (strcmp(c->redirect_uri, redirect_uri) != 0) {
            snprintf(why, sizeof why,
                     "redirect_uri %.200s is not the one of the authorization request",
                     redirect_uri);
        } else if (!pkce_text_ok(verifier) || !pkce_matches(verifier, c->challenge)) {
            error = "code_verifier does not match the code_challenge (PKCE S256)";
        }
    }
    if (error || why[0]) {
        pthread_mutex_unlock(&l->lock);
        sb_reply_oauth_error(reply, 400, "invalid_grant", "%s", error ? error : why);
        return;
    }
    grant_entry *g = fs_calloc(1, sizeof *g);
    if (!g || !(g->scope = fs_strdup(c->scope))) {
        fs_free(g);
        pthread_mutex_unlock(&l->lock);
        sb_reply_oauth_error(reply, 500, "server_error", "out of memory");
        return;
    }
    g->id = l->next_grant_id++;
    snprintf(g->client_id, sizeof g->client_id, "%s", client->client_id);
    snprintf(g->patient, sizeof g->patient, "%s", c->patient);
    snprintf(g->user, sizeof g->user, "%s", c->user);
    g->created = now;
    g->next = l->grants;
    l->grants = g;
    c->grant_id = g->id;
    bool offline = has_word(g->scope, "offline_access") || has_word(g->scope, "online_access");
    if (offline)
        refresh = new_refresh(l, g, now);
    scope = fs_strdup(g->scope);
    nonce = c->nonce ? fs_strdup(c->nonce) : NULL;
    snprintf(patient, sizeof patient, "%s", g->patient);
    snprintf(user, sizeof user, "%s", g->user);
    pthread_mutex_unlock(&l->lock);
    if (!scope || (offline && !refresh)) {
        sb_reply_oauth_error(reply, 500, "server_error", "out of memory");
        goto out;
    }
    if (has_word(scope, "openid") &&
        !(id_token = make_id_token(sb, client->client_id, user, nonce, now,
                                   sb_auth_access_lifetime(sb->auth)))) {
        sb_reply_oauth_error(reply, 500, "server_error", "cannot sign the id_token");
        goto out;
    }
    token_answer(sb, reply, client->client_id, scope, patient, false, refresh, id_token);
out:
    fs_free_secret(refresh);
    fs_free_secret(id_token);
    fs_free(scope);
    fs_free(nonce);
}

static void grant_refresh(sb_server *sb, const sb_client *client, const sb_params *form,
                          sb_reply *reply)
{
    sb_launch *l = sb->launch;
    const char *token = sb_params_get(form, "refresh_token");
    const char *asked = sb_params_get(form, "scope");
    char *fresh = NULL, *scope = NULL;
    char patient[64] = "", why[1024] = "", bad[300];
    const char *error = NULL;
    if (!token) {
        sb_reply_oauth_error(reply, 400, "invalid_request", "refresh_token missing");
        return;
    }
    int64_t now = fs_now();
    bool same = sb_quirk_on(sb->quirks, SB_QUIRK_REFRESH_NO_ROTATE, client->client_id, NULL, NULL);
    bool no_context =
        sb_quirk_on(sb->quirks, SB_QUIRK_REFRESH_NO_CONTEXT, client->client_id, NULL, NULL);
    pthread_mutex_lock(&l->lock);
    refresh_entry *r = find_refresh(l, token);
    if (!r) {
        error = "refresh token unknown";
    } else if (strcmp(r->grant->client_id, client->client_id) != 0) {
        error = "refresh token was issued to another client";
    } else if (r->grant->revoked) {
        error = "refresh token was revoked: authorize again";
    } else if (r->state == REFRESH_ROTATED) {
        error = "refresh token was already used and replaced by a newer one (rotation): use the "
                "newest refresh token";
    } else if (now >= r->expires) {
        error = "refresh token expired: authorize again";
    } else if (asked && *asked && !scopes_within(asked, r->grant->scope, bad, sizeof bad)) {
        snprintf(why, sizeof why, "scope %s was not granted (granted: %.300s)", bad,
                 r->grant->scope);
    }
    if (error || why[0]) {
        pthread_mutex_unlock(&l->lock);
        sb_reply_oauth_error(reply, 400, error ? "invalid_grant" : "invalid_scope", "%s",
                             error ? error : why);
        return;
    }
    if (same) {
        fresh = fs_strdup(r->token);
    } else {
        r->state = REFRESH_ROTATED;
        fresh = new_refresh(l, r->grant, now);
        if (!fresh)
            r->state = REFRESH_CURRENT;
    }
    scope = fs_strdup(asked && *asked ? asked : r->grant->scope);
    snprintf(patient, sizeof patient, "%s", r->grant->patient);
    pthread_mutex_unlock(&l->lock);
    if (!fresh || !scope)
        sb_reply_oauth_error(reply, 500, "server_error", "out of memory");
    else
        token_answer(sb, reply, client->client_id, scope, patient, no_context, fresh, NULL);
    fs_free_secret(fresh);
    fs_free(scope);
}

void sb_launch_handle_grant(sb_server *sb, const sb_client *client, const char *grant_type,
                            const sb_params *form, sb_reply *reply)
{
    if (!strcmp(grant_type, "authorization_code"))
        grant_code(sb, client, form, reply);
    else
        grant_refresh(sb, client, form, reply);
}

/* ---- admin ---------------------------------------------------------------------------------- */

static json_t *settings_json(sb_server *sb)
{
    sb_launch *l = sb->launch;
    pthread_mutex_lock(&l->lock);
    json_t *out = json_pack("{s:I, s:I, s:I, s:s}", "access_token_lifetime",
                            (json_int_t)sb_auth_access_lifetime(sb->auth), "refresh_token_lifetime",
                            (json_int_t)l->refresh_lifetime, "code_lifetime",
                            (json_int_t)l->code_lifetime, "user", l->user);
    pthread_mutex_unlock(&l->lock);
    return out;
}

static void reply_json_or_oom(sb_reply *reply, unsigned status, json_t *out)
{
    if (out)
        sb_reply_json(reply, status, SB_JSON, out);
    else
        sb_reply_outcome(reply, 500, "exception", "out of memory");
    json_decref(out);
}

void sb_launch_admin_get(sb_server *sb, sb_request *req, sb_reply *reply)
{
    (void)req;
    reply_json_or_oom(reply, 200, settings_json(sb));
}

void sb_launch_admin_set(sb_server *sb, sb_request *req, sb_reply *reply)
{
    sb_launch *l = sb->launch;
    fhirsync_error err;
    json_t *doc = fs_json_parse(req->body.data, req->body.len, true, "request body", &err);
    if (!doc || !json_is_object(doc)) {
        sb_reply_outcome(reply, 400, "invalid", "%s", doc ? "a JSON object" : err.message);
        json_decref(doc);
        return;
    }
    static const char *const numbers[] = {"access_token_lifetime", "refresh_token_lifetime",
                                          "code_lifetime"};
    int64_t values[3] = {-1, -1, -1};
    const char *user = fs_json_str(doc, "user"), *password = fs_json_str(doc, "password");
    const char *bad = NULL;
    for (void *it = json_object_iter(doc); it && !bad; it = json_object_iter_next(doc, it)) {
        const char *key = json_object_iter_key(it);
        size_t i = 0;
        while (i < 3 && strcmp(key, numbers[i]) != 0)
            i++;
        if (i < 3) {
            if (!fs_json_int(doc, key, &values[i]) || values[i] < 0 || values[i] > MAX_LIFETIME ||
                (i == 0 && values[i] == 0))
                bad = key;
        } else if (!(!strcmp(key, "user") && user && *user && strlen(user) < sizeof l->user) &&
                   !(!strcmp(key, "password") && password && *password &&
                     strlen(password) < sizeof l->password)) {
            bad = key;
        }
    }
    if (bad) {
        sb_reply_outcome(reply, 400, "invalid",
                         "%s: lifetimes are integer seconds in [0, %d] (access tokens at least "
                         "1), user and password non-empty strings; nothing else is known",
                         bad, MAX_LIFETIME);
        json_decref(doc);
        return;
    }
    if (values[0] > 0)
        sb_auth_set_access_lifetime(sb->auth, values[0]);
    pthread_mutex_lock(&l->lock);
    if (values[1] >= 0)
        l->refresh_lifetime = values[1];
    if (values[2] >= 0)
        l->code_lifetime = values[2];
    if (user)
        snprintf(l->user, sizeof l->user, "%s", user);
    if (password)
        snprintf(l->password, sizeof l->password, "%s", password);
    pthread_mutex_unlock(&l->lock);
    json_decref(doc);
    reply_json_or_oom(reply, 200, settings_json(sb));
}

void sb_launch_admin_grants(sb_server *sb, sb_request *req, sb_reply *reply)
{
    sb_launch *l = sb->launch;
    const char *only = sb_params_get(&req->query, "client_id");
    int64_t now = fs_now();
    json_t *list = json_array();
    pthread_mutex_lock(&l->lock);
    for (grant_entry *g = l->grants; list && g; g = g->next) {
        if (only && strcmp(only, g->client_id) != 0)
            continue;
        json_t *tokens = json_array();
        for (refresh_entry *r = l->refreshes; tokens && r; r = r->next) {
            if (r->grant != g)
                continue;
            const char *state = g->revoked                    ? "revoked"
                                : r->state == REFRESH_ROTATED ? "rotated"
                                : now >= r->expires           ? "expired"
                                                              : "current";
            json_array_insert_new(tokens, 0,
                                  json_pack("{s:i, s:s, s:I, s:I}", "seq", (int)r->seq, "state",
                                            state, "age", (json_int_t)(now - r->issued),
                                            "expires_in", (json_int_t)(r->expires - now)));
        }
        json_t *item = json_pack(
            "{s:i, s:s, s:s, s:s, s:s, s:I, s:b, s:b, s:i, s:o*}", "id", (int)g->id, "client_id",
            g->client_id, "scope", g->scope, "patient", g->patient, "user", g->user, "age",
            (json_int_t)(now - g->created), "revoked", g->revoked, "offline",
            has_word(g->scope, "offline_access") || has_word(g->scope, "online_access"),
            "rotations", g->refresh_issued ? (int)g->refresh_issued - 1 : 0, "refresh_tokens",
            tokens);
        json_array_append_new(list, item);
    }
    pthread_mutex_unlock(&l->lock);
    reply_json_or_oom(reply, 200, list ? json_pack("{s:o}", "grants", list) : NULL);
}

void sb_launch_admin_revoke(sb_server *sb, sb_request *req, sb_reply *reply)
{
    sb_launch *l = sb->launch;
    fhirsync_error err;
    json_t *doc = fs_json_parse(req->body.data, req->body.len, true, "request body", &err);
    const char *token = fs_json_str(doc, "refresh_token");
    const char *client_id = fs_json_str(doc, "client_id");
    int64_t grant_id = 0;
    bool by_id = json_object_get(doc, "grant") && fs_json_int(doc, "grant", &grant_id);
    if (!doc || json_object_size(doc) != 1 || !(token || client_id || by_id)) {
        sb_reply_outcome(reply, 400, "invalid",
                         "give exactly one of refresh_token (a value), client_id or grant (an "
                         "id from GET /admin/grants)");
        json_decref(doc);
        return;
    }
    size_t revoked = 0;
    pthread_mutex_lock(&l->lock);
    if (token) {
        refresh_entry *r = find_refresh(l, token);
        if (r && !r->grant->revoked) {
            r->grant->revoked = true;
            revoked++;
        }
    } else {
        for (grant_entry *g = l->grants; g; g = g->next) {
            if (!g->revoked &&
                (client_id ? !strcmp(client_id, g->client_id) : (int64_t)g->id == grant_id)) {
                g->revoked = true;
                revoked++;
            }
        }
    }
    pthread_mutex_unlock(&l->lock);
    json_decref(doc);
    reply_json_or_oom(reply, 200, json_pack("{s:I}", "revoked", (json_int_t)revoked));
}
