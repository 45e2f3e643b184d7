/* fhir/outcome.c: turning what a FHIR server says when it refuses into one clear line. FHIR
 * servers explain failures with an OperationOutcome (issue[].severity, code, diagnostics or
 * details.text); proxies and gateways in front of them answer HTML pages or plain text, and some
 * resource servers answer OAuth-style errors. Each becomes a short description; HTML is named,
 * never dumped. The error code of a status is the transport policy's (http/policy.h). */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "fhir/fhir_internal.h"
#include "http/policy.h"
#include "json/json.h"

/* Issues shown in a summary; the rest are counted. */
#define MAX_ISSUES_SHOWN 3
/* Characters of a non-JSON body quoted in a message. */
#define QUOTED_START 120

/* Append to a fixed buffer, truncating with "..." when full. */
static void append(char *buf, size_t size, size_t *used, const char *text, size_t n)
{
    if (*used + 1 >= size)
        return;
    size_t room = size - 1 - *used;
    if (n > room) {
        n = room;
        memcpy(buf + *used, text, n);
        *used += n;
        if (size >= 4)
            memcpy(buf + size - 4, "...", 3);
        buf[size - 1] = '\0';
        return;
    }
    memcpy(buf + *used, text, n);
    *used += n;
    buf[*used] = '\0';
}

static void append_str(char *buf, size_t size, size_t *used, const char *text)
{
    append(buf, size, used, text, strlen(text));
}

/* The human text of an issue: diagnostics, else details.text, else details.coding[0].display or
 * code. NULL when there is none. */
static const char *issue_text(const json_t *issue)
{
    const char *text = fs_json_str(issue, "diagnostics");
    if (text && *text)
        return text;
    const json_t *details = json_object_get(issue, "details");
    text = fs_json_str(details, "text");
    if (text && *text)
        return text;
    const json_t *coding = json_array_get(json_object_get(details, "coding"), 0);
    text = fs_json_str(coding, "display");
    if (text && *text)
        return text;
    text = fs_json_str(coding, "code");
    return text && *text ? text : NULL;
}

bool fs_outcome_parse(const char *body, size_t len, fs_outcome *out)
{
    memset(out, 0, sizeof *out);
    json_t *doc = body && len ? fs_json_parse(body, len, true, "OperationOutcome", NULL) : NULL;
    const json_t *issues = json_object_get(doc, "issue");
    if (!doc || !fs_streq(fs_json_str(doc, "resourceType"), "OperationOutcome") ||
        !json_is_array(issues)) {
        json_decref(doc);
        return false;
    }
    size_t used = 0;
    out->issues = json_array_size(issues);
    for (size_t i = 0; i < out->issues; i++) {
        const json_t *issue = json_array_get(issues, i);
        const char *severity = fs_json_str(issue, "severity");
        const char *code = fs_json_str(issue, "code");
        if (fs_streq(severity, "fatal") || fs_streq(severity, "error"))
            out->has_error = true;
        if (fs_streq(code, "transient"))
            out->transient = true;
        if (i >= MAX_ISSUES_SHOWN)
            continue;
        const char *text = issue_text(issue);
        if (i > 0)
            append_str(out->summary, sizeof out->summary, &used, "; ");
        append_str(out->summary, sizeof out->summary, &used, severity ? severity : "issue");
        if (code) {
            append_str(out->summary, sizeof out->summary, &used, " ");
            append_str(out->summary, sizeof out->summary, &used, code);
        }
        if (text) {
            append_str(out->summary, sizeof out->summary, &used, ": ");
            append_str(out->summary, sizeof out->summary, &used, text);
        }
    }
    if (out->issues > MAX_ISSUES_SHOWN) {
        char more[48];
        snprintf(more, sizeof more, " (and %zu more issues)", out->issues - MAX_ISSUES_SHOWN);
        append_str(out->summary, sizeof out->summary, &used, more);
    }
    if (out->issues == 0)
        append_str(out->summary, sizeof out->summary, &used, "an OperationOutcome with no issues");
    json_decref(doc);
    return true;
}

void fs_fhir_describe_body(const char *body, size_t len, const char *content_type, char *buf,
                           size_t size)
{
    if (size == 0)
        return;
    buf[0] = '\0';
    size_t i = 0;
    while (body && i < len && isspace((unsigned char)body[i]))
        i++;
    if (!body || i >= len) {
        snprintf(buf, size, "an empty body");
        return;
    }
    if (fs_looks_like_html(body + i, len - i) ||
        (content_type && (strstr(content_type, "html") || strstr(content_type, "HTML")))) {
        snprintf(buf, size, "an HTML page (not a FHIR response)");
        return;
    }
    fs_outcome outcome;
    if (fs_outcome_parse(body, len, &outcome)) {
        snprintf(buf, size, "%s", outcome.summary);
        return;
    }
    if (body[i] == '{') {
        json_t *doc = fs_json_parse(body, len, true, "error body", NULL);
        const char *error = fs_json_str(doc, "error");
        const char *desc = fs_json_str(doc, "error_description");
        const char *type = fs_json_str(doc, "resourceType");
        if (error)
            snprintf(buf, size, "%s%s%s", error, desc ? ": " : "", desc ? desc : "");
        else if (type)
            snprintf(buf, size, "a %.64s resource, not an OperationOutcome", type);
        json_decref(doc);
        if (buf[0])
            return;
    }
    /* anything else: the start of it, quoted, on one line */
    size_t n = len - i > QUOTED_START ? QUOTED_START : len - i;
    char quoted[QUOTED_START + 1];
    for (size_t k = 0; k < n; k++) {
        unsigned char c = (unsigned char)body[i + k];
        quoted[k] = (char)(c < 0x20 || c == 0x7f ? ' ' : c);
    }
    quoted[n] = '\0';
    snprintf(buf, size, "\"%s\"%s", quoted, len - i > n ? "..." : "");
}

fhirsync_code fs_fhir_status_error(const fs_http_response *resp, const char *url,
                                   fhirsync_error *err)
{
    fhirsync_code code = fs_http_status_code(FS_HTTP_RESOURCE_SERVER, resp->status);
    if (code == FHIRSYNC_OK)
        return FHIRSYNC_OK;
    char desc[800];
    fs_fhir_describe_body(resp->body.data, resp->body.len, fs_http_header_get(resp, "Content-Type"),
                          desc, sizeof desc);
    return fs_err_http(err, code, resp->status, "HTTP %ld from %s: %s", resp->status, url, desc);
}
