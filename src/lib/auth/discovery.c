/* auth/discovery.c: finding the token endpoint and what the server supports. The SMART
 * configuration at {base}/.well-known/smart-configuration comes first; when it is missing or
 * unusable, the CapabilityStatement's oauth-uris security extension (the legacy way) is tried.
 * Relative URLs are resolved against the FHIR base. */
#include <string.h>

#include "auth/auth_internal.h"
#include "http/policy.h"

#define OAUTH_URIS_EXT "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"

void fhirsync_smart_config_free(fhirsync_smart_config *cfg)
{
    if (!cfg)
        return;
    fhirsync_strlist *lists[] = {&cfg->grant_types,  &cfg->auth_methods,
                                 &cfg->signing_algs, &cfg->scopes,
                                 &cfg->capabilities, &cfg->code_challenge_methods};
    for (size_t l = 0; l < sizeof lists / sizeof *lists; l++) {
        for (size_t i = 0; i < lists[l]->count; i++)
            fs_free(lists[l]->items[i]);
        fs_free(lists[l]->items);
    }
    fs_free(cfg->source_url);
    fs_free(cfg->token_endpoint);
    fs_free(cfg->registration_endpoint);
    fs_free(cfg->authorization_endpoint);
    fs_free(cfg);
}

bool fhirsync_strlist_has(const fhirsync_strlist *list, const char *value)
{
    for (size_t i = 0; list && i < list->count; i++)
        if (fs_streq(list->items[i], value))
            return true;
    return false;
}

/* Copy the strings of a JSON array member; non-strings are skipped; a non-array is an error. */
static fhirsync_code copy_list(const json_t *doc, const char *key, fhirsync_strlist *out,
                               fhirsync_error *err)
{
    json_t *arr = json_object_get(doc, key);
    if (!arr)
        return FHIRSYNC_OK;
    if (!json_is_array(arr))
        return fs_err(err, FHIRSYNC_E_DISCOVERY, "smart-configuration member '%s' is not an array",
                      key);
    size_t n = json_array_size(arr);
    if (n > 10000)
        return fs_err(err, FHIRSYNC_E_DISCOVERY, "smart-configuration member '%s' is too long",
                      key);
    out->items = fs_calloc(n ? n : 1, sizeof *out->items);
    if (!out->items)
        return FHIRSYNC_E_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(arr, i));
        if (!s)
            continue;
        if (!(out->items[out->count] = fs_strdup(s)))
            return FHIRSYNC_E_NOMEM;
        out->count++;
    }
    return FHIRSYNC_OK;
}

static fhirsync_code resolve_into(const char *base_url, const char *value, const char *what,
                                  char **out, fhirsync_error *err)
{
    if (!value || !*value)
        return FHIRSYNC_OK;
    fhirsync_code rc = fs_url_resolve(base_url, value, true, out, err);
    if (rc == FHIRSYNC_E_URL)
        fs_err_prefix(err, "discovery: %s", what);
    return rc;
}

/* The oauth-uris extension of a CapabilityStatement: rest[].security.extension[] */
static const json_t *find_oauth_uris(const json_t *doc)
{
    json_t *rest = json_object_get(doc, "rest");
    size_t i, j;
    json_t *r, *ext;
    json_array_foreach (rest, i, r) {
        json_t *exts = json_object_get(json_object_get(r, "security"), "extension");
        json_array_foreach (exts, j, ext) {
            if (fs_streq(fs_json_str(ext, "url"), OAUTH_URIS_EXT))
                return ext;
        }
    }
    return NULL;
}

static const char *sub_extension(const json_t *ext, const char *name)
{
    size_t i;
    json_t *sub;
    json_array_foreach (json_object_get(ext, "extension"), i, sub) {
        if (fs_streq(fs_json_str(sub, "url"), name))
            return fs_json_str(sub, "valueUri") ? fs_json_str(sub, "valueUri")
                                                : fs_json_str(sub, "valueUrl");
    }
    return NULL;
}

fhirsync_code fs_smart_config_parse(const char *body, size_t len, const char *base_url,
                                    const char *source_url, bool capability_statement,
                                    fhirsync_smart_config **out, fhirsync_error *err)
{
    *out = NULL;
    fhirsync_code rc = FHIRSYNC_OK;
    const char *what = capability_statement ? "CapabilityStatement" : "smart-configuration";
    json_t *doc = fs_json_parse(body, len, true, what, err);
    if (!doc)
        return err && err->code == FHIRSYNC_E_NOMEM ? FHIRSYNC_E_NOMEM : FHIRSYNC_E_JSON;
    fhirsync_smart_config *cfg = fs_calloc(1, sizeof *cfg);
    if (!cfg) {
        rc = FHIRSYNC_E_NOMEM;
        goto out;
    }
    cfg->from_capability_statement = capability_statement;
    if (!(cfg->source_url = fs_strdup(source_url))) {
        rc = FHIRSYNC_E_NOMEM;
        goto out;
    }
    if (capability_statement) {
        if (!fs_streq(fs_json_str(doc, "resourceType"), "CapabilityStatement")) {
            rc = fs_err(err, FHIRSYNC_E_DISCOVERY, "%s is not a CapabilityStatement", source_url);
            goto out;
        }
        const json_t *ext = find_oauth_uris(doc);
        if (!ext) {
            rc = fs_err(err, FHIRSYNC_E_DISCOVERY,
                        "the CapabilityStatement at %s declares no SMART oauth-uris extension "
                        "(rest.security): the server does not advertise OAuth",
                        source_url);
            goto out;
        }
        rc = resolve_into(base_url, sub_extension(ext, "token"), "token URL", &cfg->token_endpoint,
                          err);
        if (rc == FHIRSYNC_OK)
            rc = resolve_into(base_url, sub_extension(ext, "register"), "registration URL",
                              &cfg->registration_endpoint, err);
        if (rc == FHIRSYNC_OK)
            rc = resolve_into(base_url, sub_extension(ext, "authorize"), "authorize URL",
                              &cfg->authorization_endpoint, err);
    } else {
        json_t *te = json_object_get(doc, "token_endpoint");
        if (te && !json_is_string(te)) {
            rc = fs_err(err, FHIRSYNC_E_DISCOVERY, "token_endpoint in %s is not a string",
                        source_url);
            goto out;
        }
        rc = resolve_into(base_url, json_string_value(te), "token_endpoint", &cfg->token_endpoint,
                          err);
        if (rc == FHIRSYNC_OK)
            rc = resolve_into(base_url, fs_json_str(doc, "registration_endpoint"),
                              "registration_endpoint", &cfg->registration_endpoint, err);
        if (rc == FHIRSYNC_OK)
            rc = copy_list(doc, "grant_types_supported", &cfg->grant_types, err);
        if (rc == FHIRSYNC_OK)
            rc = copy_list(doc, "token_endpoint_auth_methods_supported", &cfg->auth_methods, err);
        if (rc == FHIRSYNC_OK)
            rc = copy_list(doc, "token_endpoint_auth_signing_alg_values_supported",
                           &cfg->signing_algs, err);
        if (rc == FHIRSYNC_OK)
            rc = copy_list(doc, "scopes_supported", &cfg->scopes, err);
        if (rc == FHIRSYNC_OK)
            rc = copy_list(doc, "capabilities", &cfg->capabilities, err);
        if (rc == FHIRSYNC_OK)
            rc = resolve_into(base_url, fs_json_str(doc, "authorization_endpoint"),
                              "authorization_endpoint", &cfg->authorization_endpoint, err);
        if (rc == FHIRSYNC_OK)
            rc = copy_list(doc, "code_challenge_methods_supported", &cfg->code_challenge_methods,
                           err);
    }
    if (rc != FHIRSYNC_OK)
        goto out;
    if (!cfg->token_endpoint) {
        rc = fs_err(err, FHIRSYNC_E_DISCOVERY, "%s names no token endpoint", source_url);
        goto out;
    }
    /* v2 scope syntax only when the server says it speaks v2 and not v1 (PROTOCOL.md 5) */
    bool v1 = fhirsync_strlist_has(&cfg->capabilities, "permission-v1");
    bool v2 = fhirsync_strlist_has(&cfg->capabilities, "permission-v2");
    cfg->scope_version = (v2 && !v1) ? 2 : 1;
    if (!v1 && !v2) {
        for (size_t i = 0; i < cfg->scopes.count; i++) {
            const char *dot = strrchr(cfg->scopes.items[i], '.');
            if (dot && strspn(dot + 1, "cruds") == strlen(dot + 1) && strcmp(dot + 1, "read"))
                cfg->scope_version = 2;
            if (dot && (strcmp(dot + 1, "read") == 0 || strcmp(dot + 1, "write") == 0)) {
                cfg->scope_version = 1;
                break;
            }
        }
    }
out:
    json_decref(doc);
    if (rc != FHIRSYNC_OK)
        fhirsync_smart_config_free(cfg);
    else
        *out = cfg;
    return rc;
}

/* GET a discovery document; *resp is filled on FHIRSYNC_OK (any status). */
static fhirsync_code fetch(fs_http *http, const fhirsync_endpoint *ep, const char *url,
                           const char *accept, size_t cap, fs_http_response *resp,
                           fhirsync_error *err)
{
    const char *headers[] = {accept, NULL};
    fs_http_request req = {0};
    fs_http_request_from_profile(ep, &req);
    req.url = url;
    req.headers = headers;
    req.redirects = FS_REDIRECT_DROP_TOKEN; /* unauthenticated: any https redirect is fine */
    req.max_body = cap;
    return fs_http_perform(http, &req, resp, err);
}

static fhirsync_code status_error(const fs_http_response *resp, const char *url,
                                  fhirsync_error *err)
{
    char desc[512];
    fs_http_describe(resp, url, desc, sizeof desc);
    return fs_err_http(err, fs_http_status_code(FS_HTTP_RESOURCE_SERVER, resp->status),
                       resp->status, "%s", desc);
}

fhirsync_code fhirsync_discover(const fhirsync_endpoint *ep, fhirsync_smart_config **out,
                                fhirsync_error *err)
{
    *out = NULL;
    const char *base = fhirsync_endpoint_get(ep, "base_url");
    if (!base || !*base)
        return fs_err(err, FHIRSYNC_E_CONFIG,
                      "no FHIR base URL: set base_url, FHIRSYNC_BASE_URL or --base-url");
    fhirsync_code rc = fs_url_check_transport(base, "FHIR base URL", err);
    if (rc != FHIRSYNC_OK)
        return rc;
    fs_http *http = fs_http_new(NULL);
    char *well_known = fs_url_join(base, ".well-known/smart-configuration");
    char *metadata = fs_url_join(base, "metadata");
    fs_http_response resp;
    fs_http_response_init(&resp);
    fhirsync_error first = {0};
    if (!http || !well_known || !metadata) {
        rc = FHIRSYNC_E_NOMEM;
        goto out;
    }

    rc = fetch(http, ep, well_known, "Accept: application/json", FS_DISCOVERY_MAX_BODY, &resp,
               &first);
    if (rc == FHIRSYNC_OK && resp.status >= 200 && resp.status < 300) {
        rc = fs_smart_config_parse(resp.body.data, resp.body.len, base, well_known, false, out,
                                   &first);
        if (rc == FHIRSYNC_OK || rc == FHIRSYNC_E_NOMEM)
            goto out;
        fs_err_prefix(&first, "%s", well_known);
    } else if (rc == FHIRSYNC_OK) {
        rc = status_error(&resp, well_known, &first);
    }
    /* Transport failures would fail the same way for /metadata: report them as they are. */
    if (rc == FHIRSYNC_E_NETWORK || rc == FHIRSYNC_E_TLS || rc == FHIRSYNC_E_TIMEOUT ||
        rc == FHIRSYNC_E_URL || rc == FHIRSYNC_E_NOMEM) {
        if (err)
            *err = first;
        goto out;
    }
    fs_log(FHIRSYNC_LOG_INFO, "discovery: %s unusable (%s); trying the CapabilityStatement",
           well_known, first.message);
    fhirsync_error second = {0};
    fhirsync_code rc2 = fetch(http, ep, metadata, "Accept: application/fhir+json",
                              FS_METADATA_MAX_BODY, &resp, &second);
    if (rc2 == FHIRSYNC_OK && resp.status >= 200 && resp.status < 300) {
        rc2 = fs_smart_config_parse(resp.body.data, resp.body.len, base, metadata, true, out,
                                    &second);
        if (rc2 == FHIRSYNC_OK) {
            rc = FHIRSYNC_OK;
            goto out;
        }
    } else if (rc2 == FHIRSYNC_OK) {
        rc2 = status_error(&resp, metadata, &second);
    }
    /* Both failed: report the SMART configuration's failure (the primary source), with the
     * fallback's as context. */
    if (err) {
        *err = first;
        char both[sizeof err->message];
        snprintf(both, sizeof both, "%.600s; fallback %.380s", first.message, second.message);
        memcpy(err->message, both, sizeof both);
    }
    if (rc == FHIRSYNC_E_NOT_FOUND && rc2 != FHIRSYNC_OK)
        rc = rc2 == FHIRSYNC_E_NOT_FOUND ? FHIRSYNC_E_DISCOVERY : rc2;
    if (err)
        err->code = rc;
out:
    fs_http_response_clear(&resp);
    fs_http_free(http);
    fs_free(well_known);
    fs_free(metadata);
    return rc;
}
