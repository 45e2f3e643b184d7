/* sandbox/reply.c: building a reply before server.c hands it to libmicrohttpd: a status, a
 * content type, extra headers and a body that is either bytes in memory or a byte range of an
 * open file (bulk files are streamed from disk, never loaded). The error shapes live here too:
 * FHIR OperationOutcome for the FHIR API and RFC 6749 JSON for the authorization server. */
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "sandbox.h"

void sb_reply_init(sb_reply *r)
{
    memset(r, 0, sizeof *r);
    fs_buf_init(&r->body);
    r->fd = -1;
}

void sb_reply_clear(sb_reply *r)
{
    fs_buf_free(&r->body);
    if (r->fd >= 0)
        close(r->fd);
    for (size_t i = 0; i < r->nheaders; i++) {
        fs_free(r->header_names[i]);
        fs_free(r->header_values[i]);
    }
    sb_reply_init(r);
}

void sb_reply_header(sb_reply *r, const char *name, const char *fmt, ...)
{
    if (r->nheaders >= SB_MAX_REPLY_HEADERS)
        return;
    fs_buf value;
    fs_buf_init(&value);
    va_list ap;
    va_start(ap, fmt);
    bool ok = fs_buf_vprintf(&value, fmt, ap);
    va_end(ap);
    char *n = ok ? fs_strdup(name) : NULL;
    char *v = n ? fs_buf_steal(&value) : NULL;
    if (!n || !v) {
        fs_free(n);
        fs_free(v);
        fs_buf_free(&value);
        return;
    }
    r->header_names[r->nheaders] = n;
    r->header_values[r->nheaders] = v;
    r->nheaders++;
}

static void set_body(sb_reply *r, unsigned status, const char *content_type, const char *text,
                     size_t len)
{
    fs_buf_reset(&r->body);
    if (r->fd >= 0) {
        close(r->fd);
        r->fd = -1;
    }
    r->status = status;
    r->content_type = content_type;
    if (text && !fs_buf_append(&r->body, text, len)) {
        /* out of memory: answer with an empty 500 rather than a half body */
        fs_buf_reset(&r->body);
        r->status = 500;
    }
}

void sb_reply_text(sb_reply *r, unsigned status, const char *content_type, const char *text)
{
    set_body(r, status, content_type, text, text ? strlen(text) : 0);
}

void sb_reply_json(sb_reply *r, unsigned status, const char *content_type, const json_t *value)
{
    char *text = fs_json_dump(value);
    if (!text) {
        set_body(r, 500, SB_JSON, NULL, 0);
        return;
    }
    set_body(r, status, content_type, text, strlen(text));
    fs_free(text);
}

json_t *sb_outcome_new(const char *severity, const char *code, const char *diagnostics)
{
    return json_pack("{s:s, s:[{s:s, s:s, s:s}]}", "resourceType", "OperationOutcome", "issue",
                     "severity", severity, "code", code, "diagnostics", diagnostics);
}

void sb_reply_outcome(sb_reply *r, unsigned status, const char *issue_code, const char *fmt, ...)
{
    fs_buf text;
    fs_buf_init(&text);
    va_list ap;
    va_start(ap, fmt);
    fs_buf_vprintf(&text, fmt, ap);
    va_end(ap);
    const char *severity = strcmp(issue_code, "informational") == 0 ? "information" : "error";
    json_t *outcome = sb_outcome_new(severity, issue_code, text.data ? text.data : "");
    if (outcome)
        sb_reply_json(r, status, SB_FHIR_JSON, outcome);
    else
        set_body(r, status, SB_FHIR_JSON, NULL, 0);
    json_decref(outcome);
    fs_buf_free(&text);
}

void sb_reply_oauth_error(sb_reply *r, unsigned status, const char *error, const char *fmt, ...)
{
    fs_buf text;
    fs_buf_init(&text);
    va_list ap;
    va_start(ap, fmt);
    fs_buf_vprintf(&text, fmt, ap);
    va_end(ap);
    json_t *body =
        json_pack("{s:s, s:s}", "error", error, "error_description", text.data ? text.data : "");
    if (body)
        sb_reply_json(r, status, SB_JSON, body);
    else
        set_body(r, status, SB_JSON, NULL, 0);
    sb_reply_header(r, "Cache-Control", "no-store");
    sb_reply_header(r, "Pragma", "no-cache");
    json_decref(body);
    fs_buf_free(&text);
}

void sb_reply_retry_after(sb_server *sb, sb_reply *r, const char *client_id, int64_t seconds,
                          bool http_date)
{
    uint64_t uses = 0;
    if (sb_quirk_on(sb->quirks, SB_QUIRK_RETRY_AFTER_EPOCH, client_id, NULL, &uses)) {
        /* seen in the wild: milliseconds on the first answer, seconds after */
        int64_t at = fs_now() + seconds;
        if (uses == 0)
            sb_reply_header(r, "Retry-After", "%lld", (long long)at * 1000);
        else
            sb_reply_header(r, "Retry-After", "%lld", (long long)at);
    } else if (http_date) {
        char date[40];
        fs_format_http_date(fs_now() + seconds, date, sizeof date);
        sb_reply_header(r, "Retry-After", "%s", date);
    } else {
        sb_reply_header(r, "Retry-After", "%lld", (long long)seconds);
    }
}
