/* sandbox/reqlog.c: the request log that tests read through GET /admin/requests: one JSON line
 * per request with what a client test needs to assert (method, path and query with secret-looking
 * values masked, the listener that got it, whether a bearer token came, the status, the client,
 * the fault that fired, the practice). Kept in memory (the last SB_REQLOG_MAX lines, shared by
 * the practices of --practices, each of which reads its own) and optionally appended to the
 * --request-log file. Never holds a token, an assertion or resource content. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "sandbox.h"

#define SB_REQLOG_MAX 100000

struct sb_reqlog {
    pthread_mutex_t lock;
    char **lines;        /* ring of SB_REQLOG_MAX */
    unsigned *practices; /* the practice of each line (0: none), for per-practice reads */
    size_t first, count;
    uint64_t seq;
    FILE *file;
};

sb_reqlog *sb_reqlog_new(const char *file, fhirsync_error *err)
{
    sb_reqlog *l = fs_calloc(1, sizeof *l);
    if (!l || !(l->lines = fs_calloc(SB_REQLOG_MAX, sizeof *l->lines)) ||
        !(l->practices = fs_calloc(SB_REQLOG_MAX, sizeof *l->practices))) {
        if (l)
            fs_free(l->lines);
        fs_free(l);
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        return NULL;
    }
    if (file && !(l->file = fopen(file, "a"))) {
        fs_free(l->lines);
        fs_free(l->practices);
        fs_free(l);
        fs_err(err, FHIRSYNC_E_IO, "cannot open the request log %s", file);
        return NULL;
    }
    pthread_mutex_init(&l->lock, NULL);
    return l;
}

void sb_reqlog_free(sb_reqlog *l)
{
    if (!l)
        return;
    sb_reqlog_clear(l);
    if (l->file)
        fclose(l->file);
    fs_free(l->lines);
    fs_free(l->practices);
    pthread_mutex_destroy(&l->lock);
    fs_free(l);
}

static void format_now(char *buf, size_t size)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    time_t t = ts.tv_sec;
    gmtime_r(&t, &tm);
    /* strftime for the calendar part: its bounds are known, unlike snprintf's view of tm ints */
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, size, "%.24s.%03dZ", date, (int)(ts.tv_nsec / 1000000) % 1000);
}

void sb_reqlog_add(sb_reqlog *l, const sb_reqlog_entry *e)
{
    char when[40];
    format_now(when, sizeof when);
    pthread_mutex_lock(&l->lock);
    uint64_t seq = ++l->seq;
    json_t *line =
        json_pack("{s:I, s:s, s:s, s:s, s:s, s:i, s:s, s:b, s:i}", "seq", (json_int_t)seq, "time",
                  when, "method", e->method, "path", e->uri, "host", e->host ? e->host : "", "port",
                  (int)e->port, "listener", e->listener == SB_LISTENER_STORAGE ? "storage" : "main",
                  "bearer", e->bearer, "status", (int)e->status);
    if (line && e->client_id && *e->client_id)
        json_object_set_new(line, "client_id", json_string(e->client_id));
    if (line && e->fault)
        json_object_set_new(line, "fault", json_string(e->fault));
    if (line && e->practice)
        json_object_set_new(line, "practice", json_integer(e->practice));
    char *text = line ? fs_json_dump(line) : NULL;
    json_decref(line);
    if (text) {
        size_t at = (l->first + l->count) % SB_REQLOG_MAX;
        if (l->count == SB_REQLOG_MAX) {
            fs_free(l->lines[l->first]);
            l->first = (l->first + 1) % SB_REQLOG_MAX;
            l->count--;
        }
        l->lines[at] = text;
        l->practices[at] = e->practice;
        l->count++;
        if (l->file) {
            fputs(text, l->file);
            fputc('\n', l->file);
            fflush(l->file);
        }
    }
    pthread_mutex_unlock(&l->lock);
}

char *sb_reqlog_dump(sb_reqlog *l, uint64_t since, unsigned practice, size_t *len)
{
    fs_buf out;
    fs_buf_init(&out);
    bool ok = fs_buf_append(&out, "", 0);
    pthread_mutex_lock(&l->lock);
    /* the ring holds consecutive sequence numbers, the last one being l->seq */
    uint64_t first_seq = l->seq - l->count + 1;
    size_t skip = since >= first_seq ? (size_t)(since - first_seq + 1) : 0;
    for (size_t i = skip; ok && i < l->count; i++) {
        size_t at = (l->first + i) % SB_REQLOG_MAX;
        if (practice && l->practices[at] != practice)
            continue;
        const char *line = l->lines[at];
        ok = fs_buf_append_str(&out, line) && fs_buf_append(&out, "\n", 1);
    }
    pthread_mutex_unlock(&l->lock);
    if (!ok) {
        fs_buf_free(&out);
        *len = 0;
        return NULL;
    }
    *len = out.len;
    return fs_buf_steal(&out);
}

size_t sb_reqlog_clear(sb_reqlog *l)
{
    pthread_mutex_lock(&l->lock);
    size_t n = l->count;
    for (size_t i = 0; i < l->count; i++) {
        fs_free(l->lines[(l->first + i) % SB_REQLOG_MAX]);
        l->lines[(l->first + i) % SB_REQLOG_MAX] = NULL;
    }
    l->first = 0;
    l->count = 0;
    pthread_mutex_unlock(&l->lock);
    return n;
}
