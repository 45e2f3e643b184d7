/* sync/types.c: which resource types a run asks for, where that needs the network: the scopes
 * the token was granted, and the types the server's CapabilityStatement lists (for a crawl's
 * "left out" warning). The pure rules are in plan.c. */
#include <stdio.h>
#include <string.h>

#include "config/config_internal.h"
#include "fhirsync/auth.h"
#include "fhirsync/client.h"
#include "json/json.h"
#include "sync/sync_internal.h"

fhirsync_code fs_sync_granted_scope(const fhirsync_endpoint *ep, char **out, fhirsync_error *err)
{
    *out = NULL;
    fhirsync_auth *auth = NULL;
    fhirsync_code rc = fhirsync_auth_new(ep, &auth, err);
    fhirsync_token token;
    if (rc == FHIRSYNC_OK)
        rc = fhirsync_auth_token(auth, false, &token, err);
    /* a person's login (auth = login) holds patient/ or user/ scopes: what they name is what the
     * run may read, within the person's context */
    if (rc == FHIRSYNC_OK &&
        !(*out = fs_endpoint_login(ep) ? fs_sync_scope_as_system(token.scope ? token.scope : "")
                                       : fs_strdup(token.scope ? token.scope : "")))
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    fhirsync_auth_free(auth);
    return rc;
}

/* The resource types the server's CapabilityStatement lists (comma-separated, with commas at
 * both ends for lookups), or NULL when it cannot be had: then nothing is filtered. */
static char *server_types(const fhirsync_endpoint *ep)
{
    fhirsync_client *client = NULL;
    fhirsync_response *resp = NULL;
    fhirsync_error err;
    json_t *doc = NULL;
    fs_buf b;
    fs_buf_init(&b);
    bool ok = fhirsync_client_new(ep, &client, &err) == FHIRSYNC_OK &&
              fhirsync_client_get(client, "metadata", &resp) == FHIRSYNC_OK;
    if (!ok)
        fs_log(FHIRSYNC_LOG_INFO, "sync: no CapabilityStatement (%s): types are not filtered",
               client ? fhirsync_client_errmsg(client) : err.message);
    size_t len = 0;
    const char *body = ok ? fhirsync_response_body(resp, &len) : NULL;
    if (ok && !(doc = fs_json_parse(body, len, true, "CapabilityStatement", &err)))
        ok = false;
    json_t *rest = doc ? json_object_get(doc, "rest") : NULL;
    ok = ok && fs_buf_append_str(&b, ",");
    size_t found = 0;
    for (size_t r = 0; ok && r < json_array_size(rest); r++) {
        json_t *resources = json_object_get(json_array_get(rest, r), "resource");
        for (size_t i = 0; ok && i < json_array_size(resources); i++) {
            const char *type = fs_json_str(json_array_get(resources, i), "type");
            if (type && strlen(type) <= FS_SYNC_TYPE_MAX) {
                ok = fs_buf_printf(&b, "%s,", type);
                found++;
            }
        }
    }
    json_decref(doc);
    fhirsync_response_free(resp);
    fhirsync_client_free(client);
    if (!ok || found == 0) {
        fs_buf_free(&b);
        return NULL;
    }
    return fs_buf_steal(&b);
}

/* The types of the comma-separated `list` that keep() accepts, comma-separated (caller frees);
 * NULL on out of memory. */
static char *select_types(const char *list, bool (*keep)(const char *type, const void *ud),
                          const void *ud)
{
    fs_buf b;
    fs_buf_init(&b);
    bool ok = fs_buf_append(&b, "", 0);
    for (const char *p = list; ok && *p;) {
        size_t n = strcspn(p, ",");
        char type[FS_SYNC_TYPE_MAX + 1];
        if (n > 0 && n <= FS_SYNC_TYPE_MAX) {
            memcpy(type, p, n);
            type[n] = '\0';
            if (keep(type, ud))
                ok = (b.len == 0 || fs_buf_append_str(&b, ",")) && fs_buf_append_str(&b, type);
        }
        p += n + (p[n] == ',' ? 1 : 0);
    }
    if (!ok) {
        fs_buf_free(&b);
        return NULL;
    }
    return fs_buf_steal(&b);
}

static bool listed_in(const char *type, const void *list)
{
    return fs_sync_list_has(list, type);
}

/* A type the server lists that a crawl leaves out (not the planned ones, nor the server's own
 * infrastructure types). */
static bool left_out_of(const char *type, const void *planned)
{
    return !fs_sync_list_has(planned, type) && strcmp(type, "Bundle") != 0 &&
           strcmp(type, "OperationDefinition") != 0;
}

/* The start of both type plans: the `types` setting when set (*out; *granted stays NULL), else
 * the granted scope (*granted, caller frees; *out NULL). */
static fhirsync_code setting_or_scope(const fhirsync_endpoint *ep, char **out, char **granted,
                                      fhirsync_error *err)
{
    *out = *granted = NULL;
    const char *types = fhirsync_endpoint_get(ep, "types");
    if (types && *types) {
        *out = fs_strdup(types);
        return *out ? FHIRSYNC_OK : fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    return fs_sync_granted_scope(ep, granted, err);
}

fhirsync_code fs_sync_plan_types(const fhirsync_endpoint *ep, char perm, char **out,
                                 fhirsync_error *err)
{
    char *granted = NULL;
    fhirsync_code rc = setting_or_scope(ep, out, &granted, err);
    if (rc != FHIRSYNC_OK || *out)
        return rc;
    char *list = fs_sync_default_types(granted, perm);
    char *supported = list ? server_types(ep) : NULL;
    if (list && supported) {
        /* only what the server says it has: asking for others brings warnings (bulk) or 404s
         * (search) */
        char *kept = select_types(list, listed_in, supported);
        fs_free(list);
        list = kept;
    }
    fs_free(supported);
    if (!list) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    } else if (!*list) {
        rc = fs_err(err, FHIRSYNC_E_FORBIDDEN,
                    "the granted scopes (%s) allow %s none of the US Core resource types the "
                    "server has: ask for system/*.read (or list the types in the `types` "
                    "setting)",
                    granted, perm == 's' ? "searching" : "reading");
        fs_free(list);
        list = NULL;
    }
    fs_free(granted);
    *out = list;
    return rc;
}

char *fs_sync_crawl_left_out(const fhirsync_endpoint *ep, const char *planned)
{
    if (fhirsync_endpoint_get(ep, "types"))
        return NULL; /* the user's choice */
    char *supported = server_types(ep);
    char *left = supported ? select_types(supported, left_out_of, planned) : NULL;
    fs_free(supported);
    if (left && !*left) {
        fs_free(left);
        left = NULL;
    }
    return left;
}

fhirsync_code fs_sync_plan_bulk_types(const fhirsync_endpoint *ep, char **out, char **left_out,
                                      fhirsync_error *err)
{
    *left_out = NULL;
    char *granted = NULL;
    fhirsync_code rc = setting_or_scope(ep, out, &granted, err);
    if (rc != FHIRSYNC_OK || *out)
        return rc;
    if (fs_sync_scope_allows(granted, "*", 'r')) {
        fs_free(granted); /* everything the export offers: no _type */
        return FHIRSYNC_OK;
    }
    char *named = fs_sync_scope_named_types(granted, 'r');
    fs_buf note;
    fs_buf_init(&note);
    if (!named) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    } else if (!*named) {
        rc = fs_err(err, FHIRSYNC_E_FORBIDDEN,
                    "the granted scopes (%s) allow reading no resource type: ask for "
                    "system/*.read (or list the types in the `types` setting)",
                    granted);
    } else if (!fs_buf_printf(&note,
                              "only %s: the granted scopes (%s) name no other type; other types "
                              "are left out of this mirror (ask for system/*.read to mirror "
                              "everything)",
                              named, granted)) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    if (rc == FHIRSYNC_OK) {
        *out = named;
        *left_out = fs_buf_steal(&note);
    } else {
        fs_free(named);
        fs_buf_free(&note);
    }
    fs_free(granted);
    return rc;
}
