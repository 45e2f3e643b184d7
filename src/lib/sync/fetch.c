/* sync/fetch.c: stream one bulk export file from the server straight into the store, line by
 * line, for the workers (a file-load item is claimed by any worker, which may be on another
 * machine than the one that kicked the export off, so there is no local folder to resume from).
 * The whole file is one batch of the caller's: a transfer that breaks is rolled back and the
 * item retried, so a file is stored completely or not at all, together with its item's
 * completion.
 *
 * Transport rules are the http module's: the access token is attached only when the manifest
 * says requiresAccessToken and only to the FHIR server's origin (a redirect to storage drops it);
 * a 401 to a request that carried the token renews it once (http/policy.h decides that and what
 * each status means). Memory: the longest line. */
#include <string.h>

#include "config/config_internal.h"
#include "fhirsync/auth.h"
#include "http/http.h"
#include "http/policy.h"
#include "sync/sync_internal.h"

#define FETCH_TIMEOUT_S 3600

typedef struct fetch_sink {
    fs_sync_loader *ld;
    fs_buf line;
    bool too_long;
    bool failed; /* the loader stopped: its rc/err say why */
    bool nomem;
} fetch_sink;

static bool on_data(const char *data, size_t len, void *userdata)
{
    fetch_sink *k = userdata;
    size_t at = 0;
    while (at < len) {
        const char *nl = memchr(data + at, '\n', len - at);
        size_t take = nl ? (size_t)(nl - (data + at)) : len - at;
        if (!k->too_long && k->line.len + take > FS_SYNC_MAX_LINE) {
            k->too_long = true;
            fs_buf_reset(&k->line);
        }
        if (!k->too_long) {
            if (nl && k->line.len == 0) {
                if (!fs_sync_load_line(k->ld, data + at, take)) {
                    k->failed = true;
                    return false;
                }
            } else if (!fs_buf_append(&k->line, data + at, take)) {
                k->nomem = true;
                return false;
            } else if (nl) {
                bool ok = fs_sync_load_line(k->ld, k->line.data, k->line.len);
                fs_buf_reset(&k->line);
                if (!ok) {
                    k->failed = true;
                    return false;
                }
            }
        } else if (nl) {
            /* a line over the cap: not stored; counted as a line so numbers stay right */
            k->too_long = false;
            if (!fs_sync_load_refuse(k->ld, "", 0, "the line is longer than 64 MiB")) {
                k->failed = true;
                return false;
            }
        }
        at += take + (nl ? 1 : 0);
    }
    return true;
}

fhirsync_code fs_sync_fetch_lines(const fhirsync_endpoint *ep, struct fhirsync_auth *auth,
                                  const char *url, bool requires_token, fs_sync_loader *ld,
                                  fhirsync_error *err)
{
    fs_http *http = fs_http_new(NULL);
    if (!http)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    static const char *const headers[] = {"Accept: application/fhir+ndjson", NULL};
    fhirsync_code rc = FHIRSYNC_OK;
    fs_http_renewal renewal = {0};
    for (;;) {
        fhirsync_token token = {0};
        if (requires_token) {
            rc = fhirsync_auth_token(auth, renewal.renewed, &token, err);
            if (rc != FHIRSYNC_OK)
                break;
        }
        fetch_sink sink = {.ld = ld};
        fs_buf_init(&sink.line);
        int64_t first_line = ld->line_no;
        fs_http_request req = {.method = "GET",
                               .url = url,
                               .headers = headers,
                               .bearer_token = requires_token ? token.access_token : NULL,
                               .token_origin = fhirsync_endpoint_get(ep, "base_url"),
                               .redirects = FS_REDIRECT_DROP_TOKEN,
                               .max_body = 64 * 1024,
                               .connect_timeout_s = fs_endpoint_long(ep, "connect_timeout"),
                               .timeout_s = FETCH_TIMEOUT_S,
                               .ca_file = fhirsync_endpoint_get(ep, "ca_file"),
                               .sink = on_data,
                               .sink_userdata = &sink};
        fs_http_response resp;
        fs_http_response_init(&resp);
        rc = fs_http_perform(http, &req, &resp, err);
        if (sink.failed) {
            rc = ld->rc != FHIRSYNC_OK ? ld->rc : FHIRSYNC_E_STORE;
            if (ld->err && ld->err != err)
                *err = *ld->err;
        } else if (sink.nomem) {
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        } else if (rc == FHIRSYNC_OK && ld->line_no == first_line &&
                   fs_http_should_renew(&renewal, resp.status, resp.token_sent)) {
            fs_http_response_clear(&resp);
            fs_buf_free(&sink.line);
            continue;
        } else if (rc == FHIRSYNC_OK && (resp.status < 200 || resp.status > 299)) {
            char what[600];
            fs_http_describe(&resp, url, what, sizeof what);
            rc = fs_err_http(err, fs_http_status_code(FS_HTTP_RESOURCE_SERVER, resp.status),
                             resp.status, "%s", what);
        } else if (rc == FHIRSYNC_OK && sink.line.len > 0 &&
                   !fs_sync_load_line(ld, sink.line.data, sink.line.len)) {
            rc = ld->rc;
            if (ld->err && ld->err != err)
                *err = *ld->err;
        }
        fs_http_response_clear(&resp);
        fs_buf_free(&sink.line);
        break;
    }
    fs_http_free(http);
    return rc;
}
