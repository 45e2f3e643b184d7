/* sandbox/admin.c: the admin API that tests drive the sandbox with (loopback peers only, no
 * token, not written to the request log): POST /admin/mutate starts a new generator epoch now or
 * arms one for the next export (GET lists the armed and fired ones), GET/DELETE /admin/requests
 * read and clear the request log (a practice of --practices reads its own lines),
 * POST/GET/DELETE /admin/faults add, list and clear fault rules, POST/GET/DELETE /admin/quirks
 * the quirk modes (GET /admin/state is in state.c, /admin/practices in practices.c).
 * docs/sandbox.md documents these shapes; keep them stable. */
#include <string.h>

#include "sandbox.h"

static json_t *json_body(sb_request *req, sb_reply *reply, bool allow_empty)
{
    fhirsync_error err;
    fs_err_clear(&err);
    if (allow_empty && req->body.len == 0)
        return json_object();
    json_t *doc = fs_json_parse(req->body.data, req->body.len, true, "request body", &err);
    if (!doc)
        sb_reply_outcome(reply, 400, "invalid", "%s", err.message);
    return doc;
}

static bool fraction(const json_t *doc, const char *key, double *out, sb_reply *reply)
{
    json_t *v = json_object_get(doc, key);
    if (!v)
        return true;
    if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1) {
        sb_reply_outcome(reply, 400, "invalid", "%s must be a number in [0, 1]", key);
        return false;
    }
    *out = json_number_value(v);
    return true;
}

void sb_admin_handle_mutate(sb_server *sb, sb_request *req, sb_reply *reply)
{
    json_t *doc = json_body(req, reply, true);
    if (!doc)
        return;
    double update = 0.1, del = 0.02;
    const char *when_text = fs_json_str(doc, "when");
    const char *client_id = fs_json_str(doc, "client_id");
    if ((json_object_get(doc, "when") &&
         !(fs_streq(when_text, "now") || fs_streq(when_text, "export-running"))) ||
        (json_object_get(doc, "client_id") && !client_id)) {
        sb_reply_outcome(reply, 400, "invalid",
                         "when must be \"now\" or \"export-running\", client_id a string");
    } else if (!fraction(doc, "update", &update, reply) || !fraction(doc, "delete", &del, reply)) {
        /* the reply is set */
    } else if (fs_streq(when_text, "export-running")) {
        unsigned id = sb_data_is_generated(sb->data)
                          ? sb_bulk_arm_mutation(sb->bulk, update, del, client_id)
                          : 0;
        if (!id) {
            sb_reply_outcome(reply, 409, "not-supported",
                             "cannot arm a mutation (--data, or too many armed)");
        } else {
            json_t *out = json_pack("{s:i, s:s}", "armed", (int)id, "when", "export-running");
            sb_reply_json(reply, 202, SB_JSON, out);
            json_decref(out);
        }
    } else if (client_id) {
        sb_reply_outcome(reply, 400, "invalid", "client_id goes with when: export-running");
    } else {
        fhirsync_error err;
        fs_err_clear(&err);
        int64_t when = sb_mutation_time(sb);
        unsigned epoch = sb_data_mutate(sb->data, update, del, when, &err);
        if (!epoch) {
            sb_reply_outcome(reply, 409, "not-supported", "%s", err.message);
        } else {
            char instant[32];
            fs_format_instant(when, instant, sizeof instant);
            json_t *out = json_pack("{s:i, s:s}", "epoch", (int)epoch, "time", instant);
            sb_reply_json(reply, 200, SB_JSON, out);
            json_decref(out);
        }
    }
    json_decref(doc);
}

void sb_admin_handle_mutate_get(sb_server *sb, sb_request *req, sb_reply *reply)
{
    json_t *out = sb_bulk_mutations(sb->bulk);
    if (out)
        json_object_set_new(out, "epoch", json_integer(sb_data_epoch(sb->data)));
    if (!out) {
        sb_reply_outcome(reply, 500, "exception", "out of memory");
        return;
    }
    sb_reply_json(reply, 200, SB_JSON, out);
    json_decref(out);
}

void sb_admin_handle_requests_get(sb_server *sb, sb_request *req, sb_reply *reply)
{
    size_t len = 0;
    long since = 0;
    const char *since_text = sb_params_get(&req->query, "since");
    if (since_text && (!fs_parse_long(since_text, &since) || since < 0)) {
        sb_reply_outcome(reply, 400, "invalid", "since must be a request-log seq number");
        return;
    }
    /* a practice reads its own lines; the root all of them, or one practice's with ?practice= */
    long practice = sb->practice;
    const char *practice_text = sb_params_get(&req->query, "practice");
    if (!sb->practice && practice_text &&
        (!fs_parse_long(practice_text, &practice) || practice < 0 || practice > (long)UINT32_MAX)) {
        sb_reply_outcome(reply, 400, "invalid", "practice must be a practice number");
        return;
    }
    char *text = sb_reqlog_dump(sb->log, (uint64_t)since, (unsigned)practice, &len);
    if (!text) {
        sb_reply_outcome(reply, 500, "exception", "out of memory");
        return;
    }
    sb_reply_text(reply, 200, "application/x-ndjson", text);
    fs_free(text);
}

void sb_admin_handle_requests_delete(sb_server *sb, sb_request *req, sb_reply *reply)
{
    size_t n = sb_reqlog_clear(sb->log);
    json_t *out = json_pack("{s:I}", "cleared", (json_int_t)n);
    sb_reply_json(reply, 200, SB_JSON, out);
    json_decref(out);
}

/* The answer to adding a rule or a quirk: 201 with the entry and its id, or 400 naming why. */
static void reply_added(sb_reply *reply, const json_t *doc, unsigned id, const fhirsync_error *err)
{
    if (!id) {
        sb_reply_outcome(reply, 400, "invalid", "%s", err->message);
        return;
    }
    json_t *out = json_deep_copy(doc);
    json_object_set_new(out, "id", json_integer(id));
    sb_reply_json(reply, 201, SB_JSON, out);
    json_decref(out);
}

/* The answer to listing rules or quirks (takes the list). */
static void reply_list(sb_reply *reply, json_t *list)
{
    if (!list) {
        sb_reply_outcome(reply, 500, "exception", "out of memory");
        return;
    }
    sb_reply_json(reply, 200, SB_JSON, list);
    json_decref(list);
}

void sb_admin_handle_faults_add(sb_server *sb, sb_request *req, sb_reply *reply)
{
    json_t *doc = json_body(req, reply, false);
    if (!doc)
        return;
    fhirsync_error err;
    fs_err_clear(&err);
    reply_added(reply, doc, sb_faults_add(sb->faults, doc, &err), &err);
    json_decref(doc);
}

void sb_admin_handle_faults_get(sb_server *sb, sb_request *req, sb_reply *reply)
{
    (void)req;
    reply_list(reply, sb_faults_list(sb->faults));
}

void sb_admin_handle_faults_delete(sb_server *sb, sb_request *req, sb_reply *reply)
{
    sb_faults_clear(sb->faults);
    json_t *out = json_pack("{s:b}", "cleared", 1);
    sb_reply_json(reply, 200, SB_JSON, out);
    json_decref(out);
}

void sb_admin_handle_quirks_add(sb_server *sb, sb_request *req, sb_reply *reply)
{
    json_t *doc = json_body(req, reply, false);
    if (!doc)
        return;
    fhirsync_error err;
    fs_err_clear(&err);
    reply_added(reply, doc, sb_quirks_add_json(sb->quirks, doc, &err), &err);
    json_decref(doc);
}

void sb_admin_handle_quirks_get(sb_server *sb, sb_request *req, sb_reply *reply)
{
    (void)req;
    reply_list(reply, sb_quirks_list(sb->quirks));
}

void sb_admin_handle_quirks_delete(sb_server *sb, sb_request *req, sb_reply *reply)
{
    size_t n = sb_quirks_remove(sb->quirks, sb_params_get(&req->query, "quirk"),
                                sb_params_get(&req->query, "client_id"));
    json_t *out = json_pack("{s:I}", "removed", (json_int_t)n);
    sb_reply_json(reply, 200, SB_JSON, out);
    json_decref(out);
}
