/* doctor/doctor.c: `fhirsync doctor` in the library: walk the chain a token depends on and explain
 * each step in plain words, with the likely causes of a failure (PROTOCOL.md section 10) and
 * vendor hints when the base URL reveals the vendor (section 9). Everything reported passes
 * through the redaction path: the assertion is shown decoded (header and claims), never whole,
 * and the token is never shown. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "auth/auth_internal.h"
#include "config/config_internal.h"
#include "fhirsync/bulk.h"
#include "fhirsync/client.h"
#include "fhirsync/doctor.h"
#include "fhir/fhir_internal.h"
#include "http/policy.h"
#include "jose/jose.h"

typedef struct doctor {
    fhirsync_doctor_cb cb;
    void *userdata;
    fhirsync_code first_failure;
    fhirsync_error *err;
    fhirsync_error first_err;
    const fhirsync_endpoint *ep;
    const char *vendor;
} doctor;

const char *fhirsync_check_status_name(fhirsync_check_status status)
{
    switch (status) {
    case FHIRSYNC_CHECK_OK: return "ok";
    case FHIRSYNC_CHECK_INFO: return "info";
    case FHIRSYNC_CHECK_WARN: return "warn";
    case FHIRSYNC_CHECK_FAIL: return "FAIL";
    case FHIRSYNC_CHECK_SKIP: return "skip";
    }
    return "?";
}

/* Hand one step to the callback. The detail passes the redaction path: patterns and live secrets
 * (`plain`: live secrets only, for fhirsync's own decoding of values that are not secrets, such
 * as the client_id and the assertion's claims, so that a client_id shaped like a JWT, which some
 * servers issue, is shown as it is). Hints are fhirsync's own words: only live secrets are masked
 * in them, never patterns. */
static void report_as(doctor *d, const char *step, fhirsync_check_status status, const char *detail,
                      const char *hint, bool plain)
{
    char *rd = plain ? fs_redact_live(detail ? detail : "") : fs_redact(detail ? detail : "");
    char *rh = hint ? fs_redact_live(hint) : NULL;
    fhirsync_check check = {step, status, rd ? rd : "(out of memory)", rh};
    if (d->cb)
        d->cb(&check, d->userdata);
    fs_free(rd);
    fs_free(rh);
}

static void report(doctor *d, const char *step, fhirsync_check_status status, const char *detail,
                   const char *hint)
{
    report_as(d, step, status, detail, hint, false);
}

static void report_plain(doctor *d, const char *step, fhirsync_check_status status,
                         const char *detail, const char *hint)
{
    report_as(d, step, status, detail, hint, true);
}

static void fail(doctor *d, const char *step, fhirsync_code code, const char *detail,
                 const char *hint)
{
    report(d, step, FHIRSYNC_CHECK_FAIL, detail, hint);
    if (d->first_failure == FHIRSYNC_OK) {
        d->first_failure = code;
        fs_err(&d->first_err, code, "%s: %s", step, detail);
    }
}

/* A step's end: its outcome from what it collected (a failure counts as the run's error `code`,
 * an empty hint is none), and its buffers freed. */
static void conclude(doctor *d, const char *step, fhirsync_code code, fhirsync_check_status st,
                     fs_buf *detail, fs_buf *hint)
{
    if (st == FHIRSYNC_CHECK_FAIL)
        fail(d, step, code, detail->data, hint->data);
    else
        report(d, step, st, detail->data, hint->len ? hint->data : NULL);
    fs_buf_free(detail);
    fs_buf_free(hint);
}

/* ---- vendor -------------------------------------------------------------------------------- */

static const char *vendor_title(const char *v)
{
    if (strcmp(v, "eclinicalworks") == 0)
        return "eClinicalWorks/healow";
    if (strcmp(v, "epic") == 0)
        return "Epic";
    if (strcmp(v, "cerner") == 0)
        return "Oracle Health (Cerner)";
    return "no specific vendor";
}

/* ---- steps --------------------------------------------------------------------------------- */

static bool check_base_url(doctor *d)
{
    const char *base = fhirsync_endpoint_get(d->ep, "base_url");
    fhirsync_error e = {0};
    if (!base) {
        fail(d, "base URL", FHIRSYNC_E_CONFIG, "no FHIR base URL is set",
             "- set base_url in [endpoint NAME] of fhirsync.ini, FHIRSYNC_BASE_URL, or --base-url");
        return false;
    }
    if (fs_url_check_transport(base, "FHIR base URL", &e) != FHIRSYNC_OK) {
        fail(d, "base URL", e.code, e.message,
             "- the base URL is the FHIR R4 root the EHR gave you, e.g. "
             "https://fhir4.eclinicalworks.com/fhir/r4/PRACTICECODE");
        return false;
    }
    char *host = fs_url_host(base);
    fs_buf detail, hint;
    fs_buf_init(&detail);
    fs_buf_init(&hint);
    fs_buf_printf(&detail, "%s (host %s; vendor: %s)", base, host ? host : "?",
                  vendor_title(d->vendor));
    fhirsync_check_status st = FHIRSYNC_CHECK_OK;
    if (fs_vendor_patient_facing_host(base)) {
        st = FHIRSYNC_CHECK_FAIL;
        fs_buf_append_str(&hint,
                          "- fhir4.healow.com is eClinicalWorks' patient-facing host; backend "
                          "(system) apps use https://fhir4.eclinicalworks.com/fhir/r4/"
                          "{PRACTICECODE}\n");
    } else if (strcmp(d->vendor, "eclinicalworks") == 0 && !strstr(base, "/fhir/r4/")) {
        st = FHIRSYNC_CHECK_WARN;
        fs_buf_append_str(&hint, "- eClinicalWorks base URLs look like "
                                 "https://fhir4.eclinicalworks.com/fhir/r4/{PRACTICECODE}\n");
    } else if (host && strstr(host, "fhir-myrecord.cerner.com")) {
        st = FHIRSYNC_CHECK_WARN;
        fs_buf_append_str(&hint, "- fhir-myrecord is Oracle Health's patient-facing host; "
                                 "system apps use fhir-ehr(-code).cerner.com/r4/{tenant}\n");
    }
    if (strstr(base, "?") || strstr(base, "#")) {
        st = FHIRSYNC_CHECK_FAIL;
        fs_buf_append_str(&hint, "- the base URL must not carry a query or fragment\n");
    }
    conclude(d, "base URL", FHIRSYNC_E_CONFIG, st, &detail, &hint);
    fs_free(host);
    return st != FHIRSYNC_CHECK_FAIL;
}

static void list_join(fs_buf *b, const fhirsync_strlist *l)
{
    if (!l->count) {
        fs_buf_append_str(b, "(not advertised)");
        return;
    }
    for (size_t i = 0; i < l->count; i++)
        fs_buf_printf(b, "%s%s", i ? " " : "", l->items[i]);
}

static fhirsync_smart_config *check_discovery(doctor *d, fhirsync_alg alg, bool asymmetric)
{
    fhirsync_smart_config *smart = NULL;
    fhirsync_error e = {0};
    fhirsync_code rc = fhirsync_discover(d->ep, &smart, &e);
    if (rc != FHIRSYNC_OK) {
        const char *hint =
            rc == FHIRSYNC_E_NETWORK || rc == FHIRSYNC_E_TIMEOUT
                ? "- check the host name, that the server is up, and any proxy or firewall"
            : rc == FHIRSYNC_E_TLS
                ? "- the server's certificate did not verify: an incomplete chain or a private "
                  "CA (set ca_file to that CA's bundle; verification is never turned off)"
            : rc == FHIRSYNC_E_JSON
                ? "- an HTML page usually means a wrong base URL, a login page or a proxy; use "
                  "the FHIR base the EHR documents"
                : "- check the base URL; if the server has no discovery document, set token_url "
                  "to the token endpoint the EHR documents";
        if (fhirsync_endpoint_get(d->ep, "token_url")) {
            report(d, "discovery", FHIRSYNC_CHECK_WARN, e.message,
                   "- token_url is set, so the token request does not depend on discovery");
        } else {
            fail(d, "discovery", rc, e.message, hint);
        }
        return NULL;
    }
    fs_buf detail, hint;
    fs_buf_init(&detail);
    fs_buf_init(&hint);
    fhirsync_check_status st = FHIRSYNC_CHECK_OK;
    fs_buf_printf(&detail, "%s%s\ntoken endpoint: %s\ngrant types: ", smart->source_url,
                  smart->from_capability_statement ? " (legacy CapabilityStatement fallback)" : "",
                  smart->token_endpoint);
    list_join(&detail, &smart->grant_types);
    fs_buf_append_str(&detail, "\nauth methods: ");
    list_join(&detail, &smart->auth_methods);
    fs_buf_append_str(&detail, "\nsigning algorithms: ");
    list_join(&detail, &smart->signing_algs);
    fs_buf_append_str(&detail, "\ncapabilities: ");
    list_join(&detail, &smart->capabilities);
    fs_buf_printf(&detail, "\nscope syntax: SMART v%d", smart->scope_version);
    if (smart->grant_types.count && !fs_endpoint_login(d->ep) &&
        !fhirsync_strlist_has(&smart->grant_types, "client_credentials")) {
        st = FHIRSYNC_CHECK_WARN;
        fs_buf_append_str(&hint, "- the server does not list client_credentials: it may not "
                                 "support backend services at this base URL\n");
    }
    if (asymmetric && smart->auth_methods.count &&
        !fhirsync_strlist_has(&smart->auth_methods, "private_key_jwt")) {
        st = FHIRSYNC_CHECK_WARN;
        fs_buf_append_str(&hint, "- the server does not list private_key_jwt\n");
    }
    if (asymmetric && smart->signing_algs.count &&
        !fhirsync_strlist_has(&smart->signing_algs, fhirsync_alg_name(alg))) {
        st = FHIRSYNC_CHECK_FAIL;
        fs_buf_printf(&hint,
                      "- the server does not accept %s: make a key for one of the listed "
                      "algorithms (fhirsync keygen --alg RS384 or ES384), register its JWKS, and "
                      "set alg\n",
                      fhirsync_alg_name(alg));
    }
    const char *override = fhirsync_endpoint_get(d->ep, "token_url");
    if (override && strcmp(override, smart->token_endpoint) != 0) {
        if (st == FHIRSYNC_CHECK_OK)
            st = FHIRSYNC_CHECK_WARN;
        fs_buf_printf(&hint,
                      "- token_url (%s) differs from the discovered token endpoint; the "
                      "assertion's aud will be token_url\n",
                      override);
    }
    conclude(d, "discovery", FHIRSYNC_E_AUTH, st, &detail, &hint);
    return smart;
}

static void check_clock(doctor *d, const char *url)
{
    fs_http *http = fs_http_new(NULL);
    fs_http_response resp;
    fs_http_response_init(&resp);
    fs_http_request req = {0};
    fs_http_request_from_profile(d->ep, &req);
    req.url = url;
    req.redirects = FS_REDIRECT_DROP_TOKEN;
    req.max_body = FS_METADATA_MAX_BODY;
    fhirsync_error e = {0};
    int64_t before = fs_now();
    fhirsync_code rc = http ? fs_http_perform(http, &req, &resp, &e) : FHIRSYNC_E_NOMEM;
    const char *date = rc == FHIRSYNC_OK ? fs_http_header_get(&resp, "Date") : NULL;
    int64_t server_time;
    char detail[300];
    if (!date || !fs_parse_http_date(date, &server_time)) {
        report(d, "clock", FHIRSYNC_CHECK_SKIP,
               "the server sent no usable Date header; clock skew not measured", NULL);
    } else {
        int64_t skew = fs_now() - server_time;
        int64_t mid_skew = (before + fs_now()) / 2 - server_time;
        (void)skew;
        snprintf(detail, sizeof detail, "local clock is %lld s %s the server's (Date: %s)",
                 (long long)(mid_skew < 0 ? -mid_skew : mid_skew),
                 mid_skew >= 0 ? "ahead of" : "behind", date);
        if (mid_skew > 30)
            report(d, "clock", FHIRSYNC_CHECK_WARN, detail,
                   "- the assertion's iat/nbf will look like the future to the server (Epic and "
                   "others reject that): synchronise the clock (NTP)");
        else if (mid_skew < -240)
            report(d, "clock", FHIRSYNC_CHECK_WARN, detail,
                   "- with the clock this far behind, the assertion may already be expired when "
                   "it arrives: synchronise the clock (NTP)");
        else
            report(d, "clock", FHIRSYNC_CHECK_OK, detail, NULL);
    }
    fs_http_response_clear(&resp);
    fs_http_free(http);
}

static fhirsync_key *check_key(doctor *d, fhirsync_alg *alg_out)
{
    const char *path = fhirsync_endpoint_get(d->ep, "key_file");
    *alg_out = FHIRSYNC_ALG_NONE;
    if (!path) {
        fail(d, "key", FHIRSYNC_E_CONFIG, "no key_file is set",
             "- make a key with 'fhirsync keygen --alg RS384 --out keys/' and set key_file");
        return NULL;
    }
    fhirsync_key *key = NULL;
    fhirsync_error e = {0};
    fhirsync_code rc = fhirsync_key_load_file(path, &key, &e);
    if (rc != FHIRSYNC_OK) {
        fail(d, "key", rc, e.message,
             rc == FHIRSYNC_E_KEY_PERMS ? "- the private key must be readable by its owner only"
                                        : "- key_file must be the PRIVATE key (PEM PKCS#8, "
                                          "PKCS#1, SEC1, or a private JWK)");
        return NULL;
    }
    const char *alg_name = fhirsync_endpoint_get(d->ep, "alg");
    fhirsync_alg alg = alg_name ? fhirsync_alg_from_name(alg_name) : fhirsync_key_default_alg(key);
    *alg_out = alg;
    const char *kid_override = fhirsync_endpoint_get(d->ep, "kid");
    fs_buf detail, hint;
    fs_buf_init(&detail);
    fs_buf_init(&hint);
    fs_buf_printf(&detail, "%s: %s %d bits, alg %s, kid %s%s", path,
                  fhirsync_key_type_of(key) == FHIRSYNC_KEY_RSA ? "RSA" : "EC",
                  fhirsync_key_bits(key), alg ? fhirsync_alg_name(alg) : alg_name,
                  kid_override ? kid_override : fhirsync_key_kid(key),
                  kid_override ? " (set by kid)" : " (RFC 7638 thumbprint)");
    fhirsync_check_status st = FHIRSYNC_CHECK_OK;
    if (alg == FHIRSYNC_ALG_NONE || !fhirsync_key_fits_alg(key, alg)) {
        st = FHIRSYNC_CHECK_FAIL;
        fs_buf_printf(&hint,
                      "- the key cannot sign %s: use a key of the right type or change "
                      "alg\n",
                      alg_name ? alg_name : "?");
    }
    if (strcmp(d->vendor, "eclinicalworks") == 0 && alg != FHIRSYNC_ALG_RS384) {
        st = FHIRSYNC_CHECK_FAIL;
        fs_buf_append_str(&hint, "- eClinicalWorks accepts RS384 only: 'fhirsync keygen --alg "
                                 "RS384', register the new JWKS, set alg = RS384\n");
    } else if (alg == FHIRSYNC_ALG_RS256 || alg == FHIRSYNC_ALG_RS512 ||
               alg == FHIRSYNC_ALG_PS384 || alg == FHIRSYNC_ALG_ES256) {
        if (st == FHIRSYNC_CHECK_OK)
            st = FHIRSYNC_CHECK_WARN;
        fs_buf_printf(&hint,
                      "- %s is not a SMART algorithm: servers must accept RS384 and "
                      "ES384, and many accept nothing else\n",
                      fhirsync_alg_name(alg));
    }
    if (strcmp(d->vendor, "epic") == 0 && fhirsync_key_type_of(key) == FHIRSYNC_KEY_EC &&
        !fhirsync_endpoint_get(d->ep, "jku")) {
        if (st == FHIRSYNC_CHECK_OK)
            st = FHIRSYNC_CHECK_WARN;
        fs_buf_append_str(&hint, "- Epic accepts EC keys only when the JWKS is registered by "
                                 "URL\n");
    }
    conclude(d, "key", FHIRSYNC_E_KEY, st, &detail, &hint);
    return key;
}

/* Fetch or read the JWKS the user registered and find our key in it. */
static void check_registered_jwks(doctor *d, const fhirsync_key *key)
{
    const char *where = fhirsync_endpoint_get(d->ep, "registered_jwks");
    const char *jku = fhirsync_endpoint_get(d->ep, "jku");
    if (!where) {
        report(d, "registered JWKS", FHIRSYNC_CHECK_SKIP, "registered_jwks is not set",
               "- set registered_jwks to the JWKS file you pasted into the vendor portal, or to "
               "the JWKS URL you registered, to have it compared with your key");
        return;
    }
    fs_buf text;
    fs_buf_init(&text);
    fhirsync_error e = {0};
    fhirsync_code rc = FHIRSYNC_OK;
    bool is_url = fs_starts_with(where, "https://") || fs_starts_with(where, "http://");
    if (is_url) {
        rc = fs_url_check_transport(where, "registered_jwks URL", &e);
        fs_http *http = rc == FHIRSYNC_OK ? fs_http_new(NULL) : NULL;
        fs_http_response resp;
        fs_http_response_init(&resp);
        if (http) {
            fs_http_request req = {0};
            fs_http_request_from_profile(d->ep, &req);
            req.url = where;
            req.redirects = FS_REDIRECT_DROP_TOKEN;
            req.max_body = FS_DISCOVERY_MAX_BODY;
            const char *headers[] = {"Accept: application/json", NULL};
            req.headers = headers;
            rc = fs_http_perform(http, &req, &resp, &e);
            if (rc == FHIRSYNC_OK && resp.status != 200) {
                char desc[400];
                fs_http_describe(&resp, where, desc, sizeof desc);
                rc = fs_http_status_code(FS_HTTP_RESOURCE_SERVER, resp.status);
                rc = fs_err(&e, rc == FHIRSYNC_OK ? FHIRSYNC_E_HTTP : rc, "%s", desc);
            } else if (rc == FHIRSYNC_OK) {
                fs_buf_append(&text, resp.body.data, resp.body.len);
            }
        }
        fs_http_response_clear(&resp);
        fs_http_free(http);
        if (rc != FHIRSYNC_OK) {
            fail(d, "registered JWKS", rc, e.message,
                 "- the EHR must be able to fetch this URL over TLS without authentication; an "
                 "unreachable JWKS URL is a documented cause of invalid_client");
            fs_buf_free(&text);
            return;
        }
    } else {
        FILE *f = fopen(where, "rb");
        char chunk[4096];
        size_t n;
        while (f && (n = fread(chunk, 1, sizeof chunk, f)) > 0 && text.len < FS_DISCOVERY_MAX_BODY)
            fs_buf_append(&text, chunk, n);
        if (!f) {
            fail(d, "registered JWKS", FHIRSYNC_E_IO, "registered_jwks file cannot be read",
                 "- registered_jwks is a file path or an https URL");
            return;
        }
        fclose(f);
    }
    json_t *jwks = fs_json_parse(text.data, text.len, true, "registered JWKS", &e);
    fs_buf_free(&text);
    if (!jwks) {
        fail(d, "registered JWKS", FHIRSYNC_E_JSON, e.message,
             "- a JWKS is a JSON object {\"keys\": [...]}; an HTML page means the URL is wrong or "
             "behind a login");
        return;
    }
    const char *our_kid = fhirsync_endpoint_get(d->ep, "kid");
    if (!our_kid)
        our_kid = fhirsync_key_kid(key);
    json_t *keys = json_object_get(jwks, "keys");
    size_t matches = 0, i;
    json_t *jwk;
    bool same_key = false;
    json_array_foreach (keys, i, jwk) {
        if (!fs_streq(fs_json_str(jwk, "kid"), our_kid))
            continue;
        matches++;
        EVP_PKEY *pub = fs_jwk_to_public_pkey(jwk, NULL);
        char *tp = pub ? fs_jwk_thumbprint(pub, NULL) : NULL;
        if (tp && strcmp(tp, fhirsync_key_kid(key)) == 0)
            same_key = true;
        fs_free(tp);
        EVP_PKEY_free(pub);
    }
    char detail[600];
    snprintf(detail, sizeof detail, "%s holds %zu key(s); kid %s found %zu time(s)%s", where,
             json_array_size(keys), our_kid, matches,
             matches && same_key ? " with the same public key" : "");
    if (!json_is_array(keys)) {
        fail(d, "registered JWKS", FHIRSYNC_E_JSON, detail, "- the document has no \"keys\" array");
    } else if (matches == 0) {
        fail(d, "registered JWKS", FHIRSYNC_E_AUTH, detail,
             "- the server cannot verify your assertion: register the JWKS of this key "
             "('fhirsync jwks --key KEYFILE'), or point key_file at the key you registered");
    } else if (matches > 1) {
        fail(d, "registered JWKS", FHIRSYNC_E_AUTH, detail,
             "- each kid must be unique in the JWKS");
    } else if (!same_key) {
        fail(d, "registered JWKS", FHIRSYNC_E_AUTH, detail,
             "- a key with this kid is registered but it is not the public half of key_file");
    } else if (jku && is_url && strcmp(jku, where) != 0) {
        report(d, "registered JWKS", FHIRSYNC_CHECK_WARN, detail,
               "- jku must equal the registered JWKS URL exactly");
    } else {
        report(d, "registered JWKS", FHIRSYNC_CHECK_OK, detail,
               is_url ? NULL
                      : "- if you changed keys recently, servers may cache the old JWKS for a "
                        "while");
    }
    json_decref(jwks);
}

static void show_assertion(doctor *d, fhirsync_auth *auth, const char *token_url)
{
    char *jwt = NULL;
    fhirsync_error e = {0};
    if (fhirsync_auth_assertion(auth, token_url, &jwt, &e) != FHIRSYNC_OK) {
        fail(d, "assertion", e.code, e.message, NULL);
        return;
    }
    fs_jws jws = {0};
    if (fs_jws_decode(jwt, strlen(jwt) + 1, &jws, &e) != FHIRSYNC_OK) {
        fail(d, "assertion", FHIRSYNC_E_INTERNAL, e.message, NULL);
        fs_secret_free(jwt);
        return;
    }
    int64_t exp = 0, iat = 0;
    fs_json_int(jws.claims, "exp", &exp);
    fs_json_int(jws.claims, "iat", &iat);
    const char *jti = fs_json_str(jws.claims, "jti");
    const char *client_id = fhirsync_endpoint_get(d->ep, "client_id");
    char exp_text[32];
    fs_format_instant(exp, exp_text, sizeof exp_text);
    /* the claims are not secrets (only the signed whole is, and it is never shown): this example
     * assertion is not the one the token request sends, which gets its own jti */
    char detail[1600];
    snprintf(detail, sizeof detail,
             "header: alg %s, kid %s, typ %s%s%s\n"
             "iss: %s\nsub: %s\naud: %s\nexp: %lld (%s, iat + %lld s)\njti: %s",
             fs_json_str(jws.header, "alg"), fs_json_str(jws.header, "kid"),
             fs_json_str(jws.header, "typ"), fs_json_str(jws.header, "jku") ? ", jku " : "",
             fs_json_str(jws.header, "jku") ? fs_json_str(jws.header, "jku") : "",
             fs_json_str(jws.claims, "iss"), fs_json_str(jws.claims, "sub"),
             fs_json_str(jws.claims, "aud"), (long long)exp, exp_text, (long long)(exp - iat),
             jti ? jti : "(none)");
    bool ok = fs_streq(fs_json_str(jws.claims, "iss"), client_id) &&
              fs_streq(fs_json_str(jws.claims, "sub"), client_id) &&
              fs_streq(fs_json_str(jws.claims, "aud"), token_url) && exp - iat <= 300;
    report_plain(d, "assertion", ok ? FHIRSYNC_CHECK_INFO : FHIRSYNC_CHECK_WARN, detail,
                 "- aud is the token endpoint URL exactly (not the FHIR base); iss and sub are the "
                 "client_id; a new jti and exp for every request");
    fs_jws_clear(&jws);
    fs_secret_free(jwt);
}

static void causes_for(doctor *d, const char *oauth_error, fs_buf *hint)
{
    if (strcmp(oauth_error, "invalid_client") == 0) {
        fs_buf_append_str(
            hint,
            "- client_id unknown to this server, or not registered for backend services "
            "(system access)\n"
            "- the app is not activated/mapped at this practice or organization yet\n"
            "- sandbox and production mixed up (client ids, keys and URLs are separate)\n"
            "- kid not in the JWKS the server has (compare with registered_jwks), the JWKS URL "
            "unreachable or not allow-listed, or an old JWKS still cached after a key change\n"
            "- algorithm not accepted (RS256 where RS384 is required)\n"
            "- aud not exactly the token URL; iss/sub not the client_id\n"
            "- clock skew (iat/nbf in the future, exp more than 5 minutes ahead)\n");
    } else if (strcmp(oauth_error, "invalid_scope") == 0) {
        fs_buf_append_str(
            hint, "- a requested scope is not granted to this client: compare scope with the "
                  "registration (v1 system/*.read vs v2 system/*.rs syntax)\n");
    } else if (strcmp(oauth_error, "invalid_grant") == 0) {
        fs_buf_append_str(
            hint,
            "- the assertion's claims were refused (exp/iat, jti reuse) or the scopes are not "
            "allowed for this client\n");
    } else if (strcmp(oauth_error, "unsupported_grant_type") == 0 ||
               strcmp(oauth_error, "unauthorized_client") == 0) {
        fs_buf_append_str(
            hint, "- the client is not allowed client_credentials: register it as a backend "
                  "(system) app, not a user-facing one\n");
    } else if (strcmp(oauth_error, "invalid_request") == 0) {
        fs_buf_append_str(
            hint,
            "- the server found the request malformed: check token_url is the token endpoint\n");
    } else {
        fs_buf_append_str(hint, "- read the server's answer above; see docs/ for the common "
                                "causes\n");
    }
    if (strcmp(d->vendor, "eclinicalworks") == 0)
        fs_buf_append_str(hint, "- eClinicalWorks: the JWKS URL must be allow-listed by eCW and "
                                "each practice must activate the app; RS384 only\n");
    else if (strcmp(d->vendor, "epic") == 0)
        fs_buf_append_str(hint, "- Epic: the client must be mapped to a user at each customer; "
                                "changes can take a while to reach the server\n");
    else if (strcmp(d->vendor, "cerner") == 0)
        fs_buf_append_str(hint, "- Oracle Health: the aud must be the tenant-specific token URL "
                                "exactly\n");
}

/* Whether a refused token request says the server has no key with the assertion's kid (wording
 * differs by server: "no key in the JWKS matches kid X", "Unable to find key with kid", "unknown
 * kid", "kid not found"). */
static bool kid_unknown(const char *body)
{
    json_t *doc = body ? fs_json_parse(body, strlen(body), true, "error body", NULL) : NULL;
    const char *desc = doc ? fs_json_str(doc, "error_description") : NULL;
    const char *text = desc ? desc : body;
    bool found = text && strcasestr(text, "kid") &&
                 (strcasestr(text, "no key") || strcasestr(text, "not found") ||
                  strcasestr(text, "unknown") || strcasestr(text, "match") ||
                  strcasestr(text, "find") || strcasestr(text, "no such"));
    json_decref(doc);
    return found;
}

static void kid_hint(doctor *d, fhirsync_auth *auth, fs_buf *hint)
{
    fhirsync_alg alg;
    const fhirsync_key *key = fs_auth_key(auth, &alg);
    const char *kid = fhirsync_endpoint_get(d->ep, "kid");
    const char *key_file = fhirsync_endpoint_get(d->ep, "key_file");
    fs_buf_printf(
        hint,
        "- the server has no key with kid %s for this client: the key in %s (%s, kid "
        "%s%s) is not in the JWKS the server holds. Register its JWKS ('fhirsync jwks "
        "--key %s'), or point key_file (and kid) at the key you registered; a server "
        "may cache an old JWKS for a while after a change\n",
        kid ? kid : (key ? fhirsync_key_kid(key) : "?"), key_file ? key_file : "?",
        key ? fhirsync_alg_name(alg) : "?", kid ? kid : (key ? fhirsync_key_kid(key) : "?"),
        kid ? ", set by kid" : ", its RFC 7638 thumbprint", key_file ? key_file : "KEYFILE");
}

static fhirsync_code token_and_request(doctor *d, fhirsync_auth *auth)
{
    fhirsync_token tok;
    fhirsync_error e = {0};
    fhirsync_code rc = fhirsync_auth_token(auth, true, &tok, &e);
    if (rc != FHIRSYNC_OK) {
        long status = 0;
        const char *body = fs_auth_last_error_body(auth, &status);
        char code[64] = "";
        fs_buf hint;
        fs_buf_init(&hint);
        if (body && kid_unknown(body))
            kid_hint(d, auth, &hint); /* the cause is known: no list of other guesses */
        else if (body && fs_oauth_error_code(body, strlen(body), code, sizeof code))
            causes_for(d, code, &hint);
        else if (rc == FHIRSYNC_E_AUTH)
            causes_for(d, "", &hint);
        fail(d, "token request", rc, e.message, hint.len ? hint.data : NULL);
        fs_buf_free(&hint);
        report(d, "scopes", FHIRSYNC_CHECK_SKIP, "no token", NULL);
        report(d, "FHIR request", FHIRSYNC_CHECK_SKIP, "no token", NULL);
        return rc;
    }
    char detail[600];
    snprintf(detail, sizeof detail, "%s token from %s, expires in %lld s%s", tok.token_type,
             fhirsync_auth_token_url(auth), (long long)(tok.expires_at - tok.obtained_at),
             tok.expires_in_missing ? " (no expires_in sent: assumed)" : "");
    report(d, "token request", FHIRSYNC_CHECK_OK, detail, NULL);

    /* granted vs requested */
    fs_buf missing;
    fs_buf_init(&missing);
    const char *p = tok.requested_scope;
    while (p && *p) {
        size_t n = strcspn(p, " ");
        bool found = false;
        const char *g = tok.scope;
        while (g && *g && !found) {
            size_t m = strcspn(g, " ");
            found = m == n && strncmp(g, p, n) == 0;
            g += m;
            g += strspn(g, " ");
        }
        if (!found && n)
            fs_buf_printf(&missing, "%s%.*s", missing.len ? " " : "", (int)n, p);
        p += n;
        p += strspn(p, " ");
    }
    snprintf(detail, sizeof detail, "requested: %s\ngranted: %s%s%s", tok.requested_scope,
             tok.scope, missing.len ? "\nnot granted: " : "", missing.len ? missing.data : "");
    report(d, "scopes", missing.len ? FHIRSYNC_CHECK_WARN : FHIRSYNC_CHECK_OK, detail,
           missing.len ? "- the server granted less (or other scopes) than asked: requests for "
                         "the missing ones will get 403; check the registration"
                       : NULL);
    fs_buf_free(&missing);

    /* one authenticated request */
    const char *base = fhirsync_endpoint_get(d->ep, "base_url");
    char *url = fs_url_join(base, "metadata");
    fs_http *http = fs_http_new(NULL);
    fs_http_response resp;
    fs_http_response_init(&resp);
    fs_http_request req = {0};
    fs_http_request_from_profile(d->ep, &req);
    const char *headers[] = {"Accept: application/fhir+json", NULL};
    req.url = url;
    req.headers = headers;
    req.bearer_token = tok.access_token;
    req.token_origin = base;
    req.redirects = FS_REDIRECT_SAME_ORIGIN;
    req.max_body = FS_METADATA_MAX_BODY;
    rc = (url && http) ? fs_http_perform(http, &req, &resp, &e) : FHIRSYNC_E_NOMEM;
    if (rc != FHIRSYNC_OK) {
        fail(d, "FHIR request", rc, e.message, NULL);
    } else if (resp.status == 200) {
        snprintf(detail, sizeof detail, "GET %s with the token: HTTP 200 (HTTP/%s)", url,
                 resp.http_version);
        report(d, "FHIR request", FHIRSYNC_CHECK_OK, detail, NULL);
    } else {
        char desc[500];
        fs_http_describe(&resp, url, desc, sizeof desc);
        rc = fs_http_status_code(FS_HTTP_RESOURCE_SERVER, resp.status);
        if (rc == FHIRSYNC_OK)
            rc = FHIRSYNC_E_PROTOCOL; /* a 2xx other than 200 to a GET of the metadata */
        fail(d, "FHIR request", rc, desc,
             resp.status == 401 ? "- the resource server refused the token: the token endpoint "
                                  "may belong to another environment than the base URL"
             : resp.status == 403
                 ? "- the resource server accepted the token but refused the request: the "
                   "granted scopes (above) may not cover it, or the app lacks a permission in "
                   "the EHR's registration"
                 : NULL);
    }
    fs_http_response_clear(&resp);
    fs_http_free(http);
    fs_free(url);
    return rc;
}

/* ---- export permission probe -------------------------------------------------------------- */

/* Kick off a small export (_type=Patient at the level sync would use first) and cancel it at
 * once (DELETE on its status URL): a server that lets the client read but not start an export
 * (403 at kick-off: some store the job as the caller and want a write scope) is found here, not at
 * the first sync. Uses the REST client, not the bulk client: nothing is polled or downloaded. */
static void probe_export(doctor *d)
{
    fhirsync_export_level chain[3];
    fhirsync_export_level_chain(d->ep, chain);
    const char *group = fhirsync_endpoint_get(d->ep, "group_id");
    fs_buf path, detail;
    fs_buf_init(&path);
    fs_buf_init(&detail);
    const char *level = chain[0] == FHIRSYNC_EXPORT_GROUP     ? "Group"
                        : chain[0] == FHIRSYNC_EXPORT_PATIENT ? "Patient"
                                                              : "system";
    if (chain[0] == FHIRSYNC_EXPORT_GROUP) {
        fs_buf_append_str(&path, "Group/");
        fs_buf_append_urlencoded(&path, group);
        fs_buf_append_str(&path, "/$export?_type=Patient");
    } else if (chain[0] == FHIRSYNC_EXPORT_PATIENT) {
        fs_buf_append_str(&path, "Patient/$export?_type=Patient");
    } else {
        fs_buf_append_str(&path, "$export?_type=Patient");
    }
    fhirsync_client *client = NULL;
    fhirsync_response *resp = NULL, *del = NULL;
    fhirsync_error e = {0};
    const char *headers[] = {"Accept: application/fhir+json", "Prefer: respond-async", NULL};
    fhirsync_code rc = path.data ? fhirsync_client_new(d->ep, &client, &e) : FHIRSYNC_E_NOMEM;
    if (rc == FHIRSYNC_OK) {
        rc = fhirsync_client_request(client, "GET", path.data, headers, NULL, 0, true, &resp);
        if (rc != FHIRSYNC_OK)
            fs_err(&e, rc, "%s", fhirsync_client_errmsg(client));
    }
    if (rc != FHIRSYNC_OK) {
        fail(d, "export permission", rc, e.message, NULL);
        goto out;
    }
    long status = fhirsync_response_status(resp);
    size_t body_len = 0;
    const char *body = fhirsync_response_body(resp, &body_len);
    char said[400];
    fs_fhir_describe_body(body, body_len, fhirsync_response_header(resp, "Content-Type"), said,
                          sizeof said);
    fs_buf_printf(&detail, "GET %s (%s level, the level sync uses first): HTTP %ld", path.data,
                  level, status);
    if (status == 202) {
        const char *status_url = fhirsync_response_header(resp, "Content-Location");
        if (!status_url) {
            fs_buf_append_str(&detail, " without a Content-Location (status URL)");
            fail(d, "export permission", FHIRSYNC_E_PROTOCOL, detail.data,
                 "- the server accepted the kick-off but gave no status URL: exports cannot be "
                 "followed (Bulk Data requires Content-Location on 202)");
            goto out;
        }
        rc = fhirsync_client_request(client, "DELETE", status_url, NULL, NULL, 0, true, &del);
        long dstatus = rc == FHIRSYNC_OK ? fhirsync_response_status(del) : 0;
        if (rc == FHIRSYNC_OK && dstatus >= 200 && dstatus < 300) {
            fs_buf_printf(&detail, "\njob cancelled: DELETE %s: HTTP %ld", status_url, dstatus);
            report(d, "export permission", FHIRSYNC_CHECK_OK, detail.data, NULL);
        } else {
            if (rc == FHIRSYNC_OK)
                fs_buf_printf(&detail, "\nDELETE %s: HTTP %ld", status_url, dstatus);
            else
                fs_buf_printf(&detail, "\nDELETE %s: %s", status_url,
                              fhirsync_client_errmsg(client));
            report(d, "export permission", FHIRSYNC_CHECK_WARN, detail.data,
                   "- the export may be started, but this small probe job could not be "
                   "cancelled: the server will finish it and expire it on its own");
        }
    } else if (status == 401 || status == 403) {
        fs_buf_printf(&detail, ": %s", said);
        fs_buf hint;
        fs_buf_init(&hint);
        fs_buf_append_str(&hint,
                          "- the token can read but not start an export: the first sync would "
                          "fail with exit 5. Some servers store the export job as the caller "
                          "and need a wildcard or write scope for the kick-off (system/*.* or "
                          "system/*.write; SMART v2 system/*.cruds): ask for it in the "
                          "registration and set scope\n"
                          "- or the client is not allowed bulk export at this level: try "
                          "--level system or another group_id\n");
        if (strcmp(d->vendor, "epic") == 0)
            fs_buf_append_str(&hint, "- Epic: bulk export needs the Bulk Data APIs enabled for "
                                     "the client and a Group (registry) id\n");
        else if (strcmp(d->vendor, "cerner") == 0)
            fs_buf_append_str(&hint, "- Oracle Health: bulk export is Group level only, with "
                                     "the system/*.read scopes of the exported types\n");
        fail(d, "export permission", FHIRSYNC_E_FORBIDDEN, detail.data, hint.data);
        fs_buf_free(&hint);
    } else {
        fs_buf_printf(&detail, ": %s", said);
        report(d, "export permission", FHIRSYNC_CHECK_WARN, detail.data,
               status == 400 || status == 404 || status == 405 || status == 422 || status == 501
                   ? "- the server refused an export at this level: sync falls back to the "
                     "next level (Patient, then system); set group_id or check the server's "
                     "Bulk Data support"
                   : "- the server could not take the probe now (busy or failing): run the "
                     "probe again later");
    }
out:
    fhirsync_response_free(del);
    fhirsync_response_free(resp);
    fhirsync_client_free(client);
    fs_buf_free(&path);
    fs_buf_free(&detail);
}

/* ---- a person's login (auth = login) ------------------------------------------------------- */

/* The tokens of `asked` missing from `granted`, space-separated, into b. */
static void scopes_missing(fs_buf *b, const char *asked, const char *granted)
{
    for (const char *p = asked; p && *p;) {
        size_t len = strcspn(p, " ");
        bool found = false;
        for (const char *g = granted; g && *g && !found;) {
            size_t glen = strcspn(g, " ");
            found = glen == len && strncmp(g, p, len) == 0;
            g += glen;
            g += strspn(g, " ");
        }
        if (!found)
            fs_buf_printf(b, "%s%.*s", b->len ? " " : "", (int)len, p);
        p += len;
        p += strspn(p, " ");
    }
}

/* What the login flow needs of the server, and the credentials file `fhirsync login` wrote. */
static void check_login(doctor *d, const fhirsync_smart_config *smart)
{
    const char *name = fhirsync_endpoint_name(d->ep);
    const char *base = fhirsync_endpoint_get(d->ep, "base_url");
    fs_buf detail, hint;
    fs_buf_init(&detail);
    fs_buf_init(&hint);
    if (smart) {
        fhirsync_check_status st = FHIRSYNC_CHECK_OK;
        fs_buf_printf(&detail, "authorization endpoint: %s\nPKCE methods: ",
                      smart->authorization_endpoint ? smart->authorization_endpoint
                                                    : "(not advertised)");
        list_join(&detail, &smart->code_challenge_methods);
        fs_buf_printf(&detail, "\naud sent with the login: %s (the FHIR base URL, exactly)", base);
        if (!smart->authorization_endpoint ||
            !fhirsync_strlist_has(&smart->code_challenge_methods, "S256")) {
            st = FHIRSYNC_CHECK_FAIL;
            fs_buf_append_str(&hint, "- fhirsync login needs an authorization_endpoint and S256 "
                                     "in code_challenge_methods_supported (PKCE)\n");
        }
        if (smart->capabilities.count &&
            !fhirsync_strlist_has(&smart->capabilities, "permission-offline"))
            fs_buf_append_str(&hint, "- the server does not list permission-offline: it may "
                                     "not issue refresh tokens, and unattended sync needs one\n");
        fs_buf_append_str(&hint,
                          "- an authorize page that refuses the login with a 401 or an 'invalid "
                          "aud' / 'invalid redirect_uri' error: aud must be the FHIR base the EHR "
                          "registered the app for, and the redirect URI must be registered "
                          "(http://127.0.0.1/callback with any port, or set redirect_uri / "
                          "redirect_port to what was registered)\n");
        if (strcmp(d->vendor, "eclinicalworks") == 0)
            fs_buf_append_str(&hint, "- eClinicalWorks: provider apps use "
                                     "https://fhir4.eclinicalworks.com/fhir/r4/{PRACTICECODE}; "
                                     "fhir4.healow.com is the patient-facing host\n");
        if (st == FHIRSYNC_CHECK_FAIL)
            fail(d, "login (authorization)", FHIRSYNC_E_UNSUPPORTED, detail.data, hint.data);
        else
            report(d, "login (authorization)", FHIRSYNC_CHECK_OK, detail.data, hint.data);
    }

    fs_buf_reset(&detail);
    fs_buf_reset(&hint);
    char *path = fs_credentials_path(d->ep);
    fs_credentials c;
    fhirsync_error e = {0};
    fhirsync_code rc = path ? fs_credentials_read(path, &c, &e) : FHIRSYNC_E_NOMEM;
    if (rc == FHIRSYNC_E_NOT_FOUND) {
        fs_buf_printf(&hint, "- run 'fhirsync login --endpoint %s' (once, in a browser)", name);
        fail(d, "credentials", FHIRSYNC_E_AUTH, e.message, hint.data);
        goto out;
    }
    if (rc != FHIRSYNC_OK) {
        fail(d, "credentials", rc, e.message, NULL);
        goto out;
    }
    int64_t now = fs_now();
    fhirsync_check_status st = FHIRSYNC_CHECK_OK;
    char when[32];
    fs_format_instant(c.issued_at, when, sizeof when);
    fs_buf_printf(&detail, "%s (mode 0600)\nlogged in: %s (%lld days ago)\ngranted scope: %s", path,
                  when, (long long)((now - c.issued_at) / 86400), c.scope ? c.scope : "(not said)");
    if (c.refreshed_at) {
        fs_format_instant(c.refreshed_at, when, sizeof when);
        fs_buf_printf(&detail, "\nlast refresh: %s", when);
    }
    if (c.patient)
        fs_buf_printf(&detail, "\npatient: %s", c.patient);
    if (c.fhir_user)
        fs_buf_printf(&detail, "\nfhirUser: %s (from the id_token, not verified)", c.fhir_user);
    if (!c.refresh_token) {
        st = FHIRSYNC_CHECK_WARN;
        fs_buf_printf(&detail, "\nno refresh token: offline_access was not granted");
        fs_buf_printf(&hint,
                      "- without a refresh token sync cannot run unattended: ask the EHR to "
                      "allow offline_access for the app, then 'fhirsync login --endpoint %s'\n",
                      name);
        if (c.access_expires_at <= now) {
            st = FHIRSYNC_CHECK_FAIL;
            fs_buf_append_str(&hint, "- and the access token of that login has expired\n");
        }
    } else if (c.refresh_expires_at) {
        fs_format_instant(c.refresh_expires_at, when, sizeof when);
        fs_buf_printf(&detail, "\nrefresh token expires: %s", when);
        if (c.refresh_expires_at <= now) {
            st = FHIRSYNC_CHECK_FAIL;
            fs_buf_printf(&hint,
                          "- the refresh token has expired: run 'fhirsync login "
                          "--endpoint %s' again\n",
                          name);
        } else if (c.refresh_expires_at - now < 7 * 86400) {
            st = FHIRSYNC_CHECK_WARN;
            fs_buf_printf(&hint,
                          "- the refresh token expires within a week: plan a new "
                          "'fhirsync login --endpoint %s'\n",
                          name);
        }
    } else {
        fs_buf_append_str(&detail, "\nrefresh token: present (its expiry was not said)");
    }
    fs_buf missing;
    fs_buf_init(&missing);
    if (c.scope)
        scopes_missing(&missing, fhirsync_endpoint_get(d->ep, "scope"), c.scope);
    if (missing.len) {
        if (st == FHIRSYNC_CHECK_OK)
            st = FHIRSYNC_CHECK_WARN;
        fs_buf_printf(&hint, "- granted scopes are narrower than asked; not granted: %s (%s)\n",
                      missing.data,
                      strstr(missing.data, "offline_access") && c.refresh_token
                          ? "a refresh token came all the same"
                          : "the person or the app's registration did not allow them");
    }
    fs_buf_free(&missing);
    if (st == FHIRSYNC_CHECK_FAIL)
        fail(d, "credentials", FHIRSYNC_E_AUTH, detail.data, hint.data);
    else
        report(d, "credentials", st, detail.data, hint.len ? hint.data : NULL);
out:
    if (rc == FHIRSYNC_OK)
        fs_credentials_clear(&c);
    fs_free(path);
    fs_buf_free(&detail);
    fs_buf_free(&hint);
}

fhirsync_code fhirsync_doctor_run(const fhirsync_endpoint *ep, unsigned flags,
                                  fhirsync_doctor_cb cb, void *userdata, fhirsync_error *err)
{
    doctor d = {.cb = cb, .userdata = userdata, .err = err, .ep = ep};
    d.vendor = fs_endpoint_vendor(ep);
    fhirsync_smart_config *smart = NULL;
    fhirsync_key *key = NULL;
    fhirsync_auth *auth = NULL;
    fhirsync_alg alg = FHIRSYNC_ALG_NONE;

    fhirsync_error e = {0};
    if (fhirsync_endpoint_validate(ep, &e) != FHIRSYNC_OK)
        fail(&d, "profile", e.code, e.message, NULL);
    else
        report(&d, "profile", FHIRSYNC_CHECK_OK, "client_id, base_url and credentials are set",
               NULL);
    if (!check_base_url(&d))
        goto out;
    const char *method = fhirsync_endpoint_get(ep, "auth_method");
    bool asymmetric = !method || strcmp(method, "private_key_jwt") == 0;
    bool login = fs_endpoint_login(ep);
    if (asymmetric)
        key = check_key(&d, &alg);
    smart = check_discovery(&d, alg, asymmetric);
    if (login)
        check_login(&d, smart);
    char *probe = fs_url_join(fhirsync_endpoint_get(ep, "base_url"), "metadata");
    if (probe)
        check_clock(&d, probe);
    fs_free(probe);
    if (asymmetric && key)
        check_registered_jwks(&d, key);
    if (d.first_failure != FHIRSYNC_OK) {
        report(&d, "token request", FHIRSYNC_CHECK_SKIP, "skipped: fix the failures above first",
               NULL);
        goto out;
    }
    fhirsync_code rc = fhirsync_auth_new(ep, &auth, &e);
    if (rc != FHIRSYNC_OK) {
        fail(&d, "token request", rc, e.message, NULL);
        goto out;
    }
    const char *token_url = fhirsync_endpoint_get(ep, "token_url");
    if (!token_url && smart)
        token_url = smart->token_endpoint;
    if (asymmetric && token_url)
        show_assertion(&d, auth, token_url);
    rc = token_and_request(&d, auth);
    if (flags & FHIRSYNC_DOCTOR_PROBE_EXPORT) {
        if (rc == FHIRSYNC_OK)
            probe_export(&d);
        else
            report(&d, "export permission", FHIRSYNC_CHECK_SKIP, "no working token", NULL);
    }
out:
    fhirsync_auth_free(auth);
    fhirsync_key_free(key);
    fhirsync_smart_config_free(smart);
    if (err && d.first_failure != FHIRSYNC_OK)
        *err = d.first_err;
    return d.first_failure;
}
