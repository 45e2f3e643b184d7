/* bulk/request.c: the kick-off request of an export, built once from the options and the profile
 * into a canonical JSON form that state.json records. Resuming compares canonical forms, so the
 * same command run again on the same folder resumes, and a different request is refused. The
 * same form gives the GET query string or the POST Parameters body (Bulk Data v2.0.0 kick-off
 * parameters with the value types the specification gives them). */
#include <string.h>

#include "bulk/bulk_internal.h"

static const char *level_name(fhirsync_export_level level)
{
    return level == FHIRSYNC_EXPORT_PATIENT ? "patient"
           : level == FHIRSYNC_EXPORT_GROUP ? "group"
                                            : "system";
}

static bool fhir_id_ok(const char *id)
{
    size_t n = 0;
    for (const char *p = id; *p; p++, n++) {
        char c = *p;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.'))
            return false;
    }
    return n >= 1 && n <= 64;
}

static bool add_param(json_t *params, const char *name, const char *value)
{
    json_t *pair = json_pack("[s, s]", name, value);
    return pair && json_array_append_new(params, pair) == 0;
}

json_t *fs_bulk_request_build(const fhirsync_export_options *opts, const fhirsync_endpoint *ep,
                              fhirsync_error *err)
{
    json_t *req = json_object();
    json_t *params = json_array();
    fs_buf ref;
    fs_buf_init(&ref);
    bool ok = req && params;
    const char *group = NULL;
    if (!ok)
        goto nomem;
    if (opts->level == FHIRSYNC_EXPORT_GROUP) {
        group = opts->group_id ? opts->group_id : fhirsync_endpoint_get(ep, "group_id");
        if (!group || !*group) {
            fs_err(err, FHIRSYNC_E_ARG,
                   "a Group-level export needs a group id (--group ID, or "
                   "group_id in the endpoint's settings)");
            goto fail;
        }
        if (!fhir_id_ok(group)) {
            fs_err(err, FHIRSYNC_E_ARG,
                   "group id '%.80s' is not a FHIR id (letters, digits, "
                   "'-' and '.', at most 64)",
                   group);
            goto fail;
        }
    } else if (opts->level != FHIRSYNC_EXPORT_SYSTEM && opts->level != FHIRSYNC_EXPORT_PATIENT) {
        fs_err(err, FHIRSYNC_E_ARG, "unknown export level %d", (int)opts->level);
        goto fail;
    }
    if (opts->patient_count && !opts->post) {
        fs_err(err, FHIRSYNC_E_ARG, "the patient parameter can only be sent with POST (--post)");
        goto fail;
    }
    if (opts->patient_count && opts->level == FHIRSYNC_EXPORT_SYSTEM) {
        fs_err(err, FHIRSYNC_E_ARG, "the patient parameter needs a Patient or Group level export");
        goto fail;
    }
    const char *types = opts->types ? opts->types : fhirsync_endpoint_get(ep, "types");
    const char *since = opts->since ? opts->since : fhirsync_endpoint_get(ep, "since");
    int64_t epoch;
    if (since && *since && !fs_parse_instant(since, &epoch)) {
        fs_err(err, FHIRSYNC_E_ARG,
               "_since '%.80s' is not a FHIR instant (e.g. "
               "2024-01-31T12:00:00Z)",
               since);
        goto fail;
    }
    if (opts->output_format && *opts->output_format)
        ok = ok && add_param(params, "_outputFormat", opts->output_format);
    if (since && *since)
        ok = ok && add_param(params, "_since", since);
    if (types && *types)
        ok = ok && add_param(params, "_type", types);
    if (opts->elements && *opts->elements)
        ok = ok && add_param(params, "_elements", opts->elements);
    if (opts->include_associated_data && *opts->include_associated_data)
        ok = ok && add_param(params, "includeAssociatedData", opts->include_associated_data);
    for (size_t i = 0; i < opts->type_filter_count && ok; i++) {
        if (!opts->type_filters[i] || !*opts->type_filters[i]) {
            fs_err(err, FHIRSYNC_E_ARG, "an empty _typeFilter");
            goto fail;
        }
        ok = add_param(params, "_typeFilter", opts->type_filters[i]);
    }
    for (size_t i = 0; i < opts->patient_count && ok; i++) {
        const char *p = opts->patients[i];
        if (!p || !*p) {
            fs_err(err, FHIRSYNC_E_ARG, "an empty patient reference");
            goto fail;
        }
        fs_buf_reset(&ref);
        ok = fs_buf_printf(&ref, "%s%s", strchr(p, '/') ? "" : "Patient/", p) &&
             add_param(params, "patient", ref.data);
    }
    for (size_t i = 0; i < opts->param_count && ok; i++) {
        const char *p = opts->params[i];
        const char *eq = p ? strchr(p, '=') : NULL;
        if (!eq || eq == p) {
            fs_err(err, FHIRSYNC_E_ARG, "custom parameter '%.80s' is not NAME=VALUE", p ? p : "");
            goto fail;
        }
        char *name = fs_strndup(p, (size_t)(eq - p));
        ok = name && add_param(params, name, eq + 1);
        fs_free(name);
    }
    if (!ok)
        goto nomem;
    if (json_object_set_new(req, "level", json_string(level_name(opts->level))) ||
        json_object_set_new(req, "group", group ? json_string(group) : json_null()) ||
        json_object_set_new(req, "method", json_string(opts->post ? "POST" : "GET")) ||
        json_object_set_new(req, "lenient", json_boolean(opts->lenient)) ||
        json_object_set(req, "params", params))
        goto nomem;
    json_decref(params);
    fs_buf_free(&ref);
    return req;
nomem:
    fs_err(err, FHIRSYNC_E_NOMEM, "out of memory building the export request");
fail:
    json_decref(params);
    json_decref(req);
    fs_buf_free(&ref);
    return NULL;
}

const char *fs_bulk_request_param(const json_t *request, const char *name)
{
    json_t *params = json_object_get(request, "params");
    for (size_t i = 0; i < json_array_size(params); i++) {
        json_t *pair = json_array_get(params, i);
        if (fs_streq(json_string_value(json_array_get(pair, 0)), name))
            return json_string_value(json_array_get(pair, 1));
    }
    return NULL;
}

bool fs_bulk_request_post(const json_t *request)
{
    return fs_streq(fs_json_str(request, "method"), "POST");
}

bool fs_bulk_request_lenient(const json_t *request)
{
    bool lenient = false;
    return fs_json_bool(request, "lenient", &lenient) && lenient;
}

char *fs_bulk_request_target(const json_t *request)
{
    const char *level = fs_json_str(request, "level");
    const char *group = fs_json_str(request, "group");
    fs_buf b;
    fs_buf_init(&b);
    bool ok;
    if (fs_streq(level, "group"))
        ok = fs_buf_printf(&b, "Group/%s/$export", group ? group : "");
    else if (fs_streq(level, "patient"))
        ok = fs_buf_append_str(&b, "Patient/$export");
    else
        ok = fs_buf_append_str(&b, "$export");
    if (ok && !fs_bulk_request_post(request)) {
        json_t *params = json_object_get(request, "params");
        size_t i;
        json_t *pair;
        json_array_foreach (params, i, pair) {
            const char *name = json_string_value(json_array_get(pair, 0));
            const char *value = json_string_value(json_array_get(pair, 1));
            if (!name || !value)
                continue;
            ok = ok && fs_buf_append_str(&b, i == 0 ? "?" : "&") &&
                 fs_buf_append_urlencoded(&b, name) && fs_buf_append_str(&b, "=") &&
                 fs_buf_append_urlencoded(&b, value);
        }
    }
    if (!ok) {
        fs_buf_free(&b);
        return NULL;
    }
    return fs_buf_steal(&b);
}

/* The value[x] the specification gives each kick-off parameter. */
static json_t *parameter(const char *name, const char *value)
{
    if (!strcmp(name, "_since"))
        return json_pack("{s:s, s:s}", "name", name, "valueInstant", value);
    if (!strcmp(name, "includeAssociatedData"))
        return json_pack("{s:s, s:s}", "name", name, "valueCode", value);
    if (!strcmp(name, "patient"))
        return json_pack("{s:s, s:{s:s}}", "name", name, "valueReference", "reference", value);
    return json_pack("{s:s, s:s}", "name", name, "valueString", value);
}

char *fs_bulk_request_parameters(const json_t *request)
{
    json_t *list = json_array();
    json_t *body =
        list ? json_pack("{s:s, s:o}", "resourceType", "Parameters", "parameter", list) : NULL;
    char *text = NULL;
    if (!body)
        return NULL;
    bool ok = true;
    size_t i;
    json_t *pair;
    json_array_foreach (json_object_get(request, "params"), i, pair) {
        const char *name = json_string_value(json_array_get(pair, 0));
        const char *value = json_string_value(json_array_get(pair, 1));
        json_t *p = name && value ? parameter(name, value) : NULL;
        ok = ok && p && json_array_append_new(list, p) == 0;
    }
    if (ok)
        text = fs_json_dump(body);
    json_decref(body);
    return text;
}
