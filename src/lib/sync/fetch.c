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
 * each status means). Lines are cut by the loaders' splitter (core/lines.h, the 64 MiB cap) and,
 * unlike a file the bulk writer already checked, each goes through the strict NDJSON checker
 * before the store (the loader's `check`): a bad line is quarantined with the checker's reason,
 * as in bulk mode. Memory: the longest line. */

#include "config/config_internal.h"
#include "fhirsync/auth.h"
#include "http/http.h"
#include "http/policy.h"
#include "sync/sync_internal.h"

#define FETCH_TIMEOUT_S 3600

typedef struct fetch_sink {
    fs_sync_loader *ld;
    fs_lines lines;
    bool failed; /* the loader stopped: its rc/err say why */
} fetch_sink;

static bool on_data(const char *data, size_t len, void *userdata)
{
    fetch_sink *k = userdata;
    if (!fs_sync_load_chunk(k->ld, &k->lines, data, len))
        k->failed = true;
    return !k->failed;
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
    ld->check = true;
    for (;;) {
        fhirsync_token token = {0};
        if (requires_token) {
            rc = fhirsync_auth_token(auth, renewal.renewed, &token, err);
            if (rc != FHIRSYNC_OK)
                break;
        }
        fetch_sink sink = {.ld = ld};
        fs_lines_init(&sink.lines, 0);
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
        } else if (rc == FHIRSYNC_OK && ld->line_no == first_line &&
                   fs_http_should_renew(&renewal, resp.status, resp.token_sent)) {
            fs_http_response_clear(&resp);
            fs_lines_free(&sink.lines);
            continue;
        } else if (rc == FHIRSYNC_OK && (resp.status < 200 || resp.status > 299)) {
            char what[600];
            fs_http_describe(&resp, url, what, sizeof what);
            rc = fs_err_http(err, fs_http_status_code(FS_HTTP_RESOURCE_SERVER, resp.status),
                             resp.status, "%s", what);
        } else if (rc == FHIRSYNC_OK && !fs_sync_load_end(ld, &sink.lines)) {
            rc = ld->rc;
            if (ld->err && ld->err != err)
                *err = *ld->err;
        }
        fs_http_response_clear(&resp);
        fs_lines_free(&sink.lines);
        break;
    }
    fs_http_free(http);
    return rc;
}
