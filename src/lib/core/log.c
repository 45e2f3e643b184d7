/* core/log.c: logging to the application's callback and the one redaction path.
 *
 * Everything the library logs or puts into an error message goes through fs_redact(), which
 * masks, wherever they appear (headers, form bodies, JSON, URLs, connection strings):
 *   - values of sensitive names: Authorization, access_token, refresh_token, id_token,
 *     client_assertion, assertion, client_secret, password, and `code` in a query or form;
 *   - anything shaped like a JWS/JWT (base64url "eyJ..." with dots);
 *   - PEM blocks;
 *   - the password in URL userinfo (postgresql://user:secret@host).
 * Masking errs on the side of hiding: an unterminated value is masked to the end of the text.
 *
 * Before the patterns, every live secret registered in secrets.c is masked by value, whatever
 * surrounds it (a server echoing the token in free text). A pattern must not eat prose: after an
 * unquoted name and "name: " (colon and space, as in a sentence), the value is masked only for
 * header names (Authorization, X-Api-Key) or when it is not a plain lowercase word, so
 * "your assertion: register the JWKS" stays readable while "client_secret: s3cr3t" and
 * "Authorization: Bearer x" are masked. Hints that fhirsync writes itself go through
 * fs_redact_live() only (live secrets, no patterns). */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "core/core.h"

static fhirsync_log_cb log_cb;
static void *log_userdata;
static fhirsync_log_level log_max = FHIRSYNC_LOG_INFO;

void fhirsync_log_set(fhirsync_log_cb cb, void *userdata, fhirsync_log_level max)
{
    log_cb = cb;
    log_userdata = userdata;
    log_max = max;
}

const char *fhirsync_log_level_name(fhirsync_log_level level)
{
    switch (level) {
    case FHIRSYNC_LOG_ERROR: return "error";
    case FHIRSYNC_LOG_WARN: return "warn";
    case FHIRSYNC_LOG_INFO: return "info";
    case FHIRSYNC_LOG_DEBUG: return "debug";
    }
    return "?";
}

bool fs_log_enabled(fhirsync_log_level level)
{
    return log_cb != NULL && level <= log_max;
}

void fs_log(fhirsync_log_level level, const char *fmt, ...)
{
    if (!fs_log_enabled(level))
        return;
    fs_buf line;
    fs_buf_init(&line);
    va_list ap;
    va_start(ap, fmt);
    bool ok = fs_buf_vprintf(&line, fmt, ap);
    va_end(ap);
    if (!ok) {
        fs_buf_free_secret(&line);
        return;
    }
    char *red = fs_redact(line.data);
    fs_buf_free_secret(&line);
    if (red) {
        log_cb(level, red, log_userdata);
        fs_free(red);
    }
}

char *fhirsync_redact(const char *text)
{
    return fs_redact(text);
}

/* ---- redaction ------------------------------------------------------------------------------ */

/* Header names: "Name: value" is a header line, never prose. */
static const char *const header_names[] = {"proxy-authorization", "authorization", "x-api-key"};

/* A plain lowercase word (letters only, then the end of the value): prose, not a secret. */
static bool plain_word(const char *p)
{
    size_t n = 0;
    while (p[n] >= 'a' && p[n] <= 'z')
        n++;
    return n > 0 && (p[n] == '\0' || strchr("&,;\"'}) \t\r\n.", p[n]));
}

/* clang-format off */
static const char *const sensitive_names[] = {
    "proxy-authorization", "authorization", "access_token", "refresh_token", "id_token",
    "client_assertion", "assertion", "client_secret", "password", "passwd", "secret",
    "x-api-key",
};
/* clang-format on */

static bool is_ident(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '-';
}

static bool is_b64url(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '-';
}

static size_t match_name(const char *p, const char *name)
{
    size_t n = strlen(name);
    if (strncasecmp(p, name, n) != 0)
        return 0;
    if (is_ident(p[n]))
        return 0;
    return n;
}

/* After a sensitive name at p+name_len: optional closing quote, spaces, ':' or '=', spaces,
 * optional opening quote. Returns the offset of the value's first character (0: no value). */
static size_t value_start(const char *p, size_t i, char *quote, bool *prose)
{
    bool name_quoted = p[i] == '"' || p[i] == '\'';
    if (name_quoted)
        i++;
    while (p[i] == ' ' || p[i] == '\t')
        i++;
    if (p[i] != ':' && p[i] != '=')
        return 0;
    bool colon = p[i] == ':';
    i++;
    size_t spaces = i;
    while (p[i] == ' ' || p[i] == '\t')
        i++;
    /* "name: value" with an unquoted name reads like a sentence unless it is a header */
    *prose = colon && !name_quoted && i > spaces;
    *quote = 0;
    if (p[i] == '"' || p[i] == '\'') {
        *quote = p[i];
        i++;
    }
    return i;
}

static size_t value_end(const char *p, size_t i, char quote)
{
    if (quote) {
        while (p[i] && p[i] != quote) {
            if (p[i] == '\\' && p[i + 1])
                i++;
            i++;
        }
        return i;
    }
    while (p[i] && !strchr("&,;\"'}) \t\r\n", p[i]))
        i++;
    return i;
}

/* A JWT-like run: "eyJ" then base64url with at least one dot, 20+ chars. Returns its length. */
static size_t jwt_len(const char *p)
{
    if (strncmp(p, "eyJ", 3) != 0)
        return 0;
    size_t i = 0, dots = 0;
    while (is_b64url(p[i]) || p[i] == '.') {
        if (p[i] == '.')
            dots++;
        i++;
    }
    return (dots >= 1 && i >= 20) ? i : 0;
}

static char *redact_patterns(const char *text);

char *fs_redact(const char *text)
{
    char *live = fs_redact_live(text);
    if (!live)
        return NULL;
    char *red = redact_patterns(live);
    fs_free_secret(live);
    return red;
}

static char *redact_patterns(const char *text)
{
    fs_buf out;
    fs_buf_init(&out);
    size_t i = 0;
    bool ok = true;
    while (text[i] && ok) {
        const char *p = text + i;
        bool boundary = (i == 0) || !is_ident(text[i - 1]);

        if (strncmp(p, "-----BEGIN ", 11) == 0) {
            const char *end = strstr(p + 11, "-----END ");
            size_t skip = strlen(p);
            if (end) {
                const char *close = strstr(end + 9, "-----");
                skip = close ? (size_t)(close + 5 - p) : strlen(p);
            }
            ok = fs_buf_append_str(&out, "[redacted PEM]");
            i += skip;
            continue;
        }
        if (boundary) {
            size_t jl = jwt_len(p);
            if (jl) {
                ok = fs_buf_append_str(&out, "[redacted]");
                i += jl;
                continue;
            }
        }
        if (strncmp(p, "://", 3) == 0) {
            /* URL userinfo: mask what follows the ':' in user:password@ */
            size_t a = 3, end = 3;
            while (p[end] && !strchr("/?# \t\r\n\"'", p[end]))
                end++;
            size_t at = 0;
            for (size_t k = a; k < end; k++)
                if (p[k] == '@')
                    at = k;
            if (at) {
                size_t colon = 0;
                for (size_t k = a; k < at; k++)
                    if (p[k] == ':') {
                        colon = k;
                        break;
                    }
                if (colon) {
                    ok = fs_buf_append(&out, p, colon + 1) && fs_buf_append_str(&out, "***");
                    i += at;
                    continue;
                }
            }
            ok = fs_buf_append(&out, p, 3);
            i += 3;
            continue;
        }
        if (boundary) {
            size_t nl = 0;
            for (size_t k = 0; k < sizeof sensitive_names / sizeof *sensitive_names && !nl; k++)
                nl = match_name(p, sensitive_names[k]);
            /* `code` is an OAuth authorization code only as a query or form parameter */
            if (!nl && i > 0 && (text[i - 1] == '?' || text[i - 1] == '&') &&
                strncasecmp(p, "code=", 5) == 0)
                nl = 4;
            if (nl) {
                char quote = 0;
                bool prose = false;
                size_t vs = value_start(p, nl, &quote, &prose);
                bool header = false;
                for (size_t h = 0; h < sizeof header_names / sizeof *header_names; h++)
                    header = header || match_name(p, header_names[h]) == nl;
                if (vs && prose && !header && !quote && plain_word(p + vs))
                    vs = 0; /* "your assertion: register ...": our own words, or a sentence */
                if (vs) {
                    size_t keep = vs;
                    /* keep the auth scheme word: "Authorization: Bearer ***" */
                    const char *schemes[] = {"Bearer ", "Basic ", "bearer ", "Negotiate "};
                    for (size_t s = 0; s < 4; s++)
                        if (strncmp(p + vs, schemes[s], strlen(schemes[s])) == 0)
                            keep = vs + strlen(schemes[s]);
                    size_t ve = value_end(p, keep, quote);
                    if (ve > keep) {
                        ok = fs_buf_append(&out, p, keep) && fs_buf_append_str(&out, "***");
                        i += ve;
                        continue;
                    }
                }
                ok = fs_buf_append(&out, p, nl);
                i += nl;
                continue;
            }
        }
        ok = fs_buf_append(&out, p, 1);
        i++;
    }
    if (!ok) {
        fs_buf_free_secret(&out);
        return NULL;
    }
    return fs_buf_steal(&out);
}
