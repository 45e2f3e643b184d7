/* core/error.c: the error enum's names and the helpers that fill a fhirsync_error. Every message
 * passes through the redaction path, since messages quote what servers said. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "core/core.h"

const char *fhirsync_strerror(fhirsync_code code)
{
    switch (code) {
    case FHIRSYNC_OK: return "success";
    case FHIRSYNC_E_NOMEM: return "out of memory";
    case FHIRSYNC_E_ARG: return "invalid argument";
    case FHIRSYNC_E_IO: return "file input/output error";
    case FHIRSYNC_E_CONFIG: return "configuration error";
    case FHIRSYNC_E_KEY: return "unusable key";
    case FHIRSYNC_E_KEY_PERMS: return "key file permissions too open";
    case FHIRSYNC_E_CRYPTO: return "cryptographic operation failed";
    case FHIRSYNC_E_JSON: return "malformed JSON";
    case FHIRSYNC_E_URL: return "malformed or disallowed URL";
    case FHIRSYNC_E_NETWORK: return "network error";
    case FHIRSYNC_E_TLS: return "TLS error";
    case FHIRSYNC_E_TIMEOUT: return "timed out";
    case FHIRSYNC_E_TOO_LARGE: return "response too large";
    case FHIRSYNC_E_HTTP: return "unexpected HTTP status";
    case FHIRSYNC_E_REDIRECT: return "redirect refused";
    case FHIRSYNC_E_DISCOVERY: return "SMART discovery failed";
    case FHIRSYNC_E_AUTH: return "token request rejected";
    case FHIRSYNC_E_TOKEN_RESPONSE: return "malformed token response";
    case FHIRSYNC_E_UNAUTHORIZED: return "unauthorized";
    case FHIRSYNC_E_FORBIDDEN: return "forbidden";
    case FHIRSYNC_E_NOT_FOUND: return "not found";
    case FHIRSYNC_E_SERVER: return "server error";
    case FHIRSYNC_E_RATE_LIMITED: return "rate limited";
    case FHIRSYNC_E_PROTOCOL: return "protocol violation by the server";
    case FHIRSYNC_E_PARTIAL: return "partial data";
    case FHIRSYNC_E_STORE: return "store error";
    case FHIRSYNC_E_LOCKED: return "locked by another process";
    case FHIRSYNC_E_CANCELLED: return "cancelled";
    case FHIRSYNC_E_UNSUPPORTED: return "not supported";
    case FHIRSYNC_E_BAD_REQUEST: return "request refused by the server";
    case FHIRSYNC_E_INTERNAL: return "internal error";
    case FHIRSYNC_E_CONFLICT: return "conflict with another writer or with stored rows";
    case FHIRSYNC_E_VIEW: return "invalid view definition, or a resource it cannot evaluate";
    }
    return "unknown error";
}

__attribute__((format(printf, 2, 0))) static void set_message(fhirsync_error *err, const char *fmt,
                                                              va_list ap)
{
    char raw[sizeof err->message];
    vsnprintf(raw, sizeof raw, fmt, ap);
    /* one line: control characters (newlines from server bodies) become spaces */
    for (char *p = raw; *p; p++)
        if ((unsigned char)*p < 0x20)
            *p = ' ';
    char *red = fs_redact(raw);
    snprintf(err->message, sizeof err->message, "%s",
             red ? red : "(message withheld: out of memory)");
    fs_free(red);
}

fhirsync_code fs_err(fhirsync_error *err, fhirsync_code code, const char *fmt, ...)
{
    if (!err)
        return code;
    err->code = code;
    err->http_status = 0;
    va_list ap;
    va_start(ap, fmt);
    set_message(err, fmt, ap);
    va_end(ap);
    return code;
}

fhirsync_code fs_err_http(fhirsync_error *err, fhirsync_code code, long http_status,
                          const char *fmt, ...)
{
    if (!err)
        return code;
    err->code = code;
    err->http_status = http_status;
    va_list ap;
    va_start(ap, fmt);
    set_message(err, fmt, ap);
    va_end(ap);
    return code;
}

void fs_err_clear(fhirsync_error *err)
{
    if (!err)
        return;
    err->code = FHIRSYNC_OK;
    err->http_status = 0;
    err->message[0] = '\0';
}

void fs_err_prefix(fhirsync_error *err, const char *fmt, ...)
{
    if (!err)
        return;
    char prefix[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* "prefix: message", truncated to fit */
    char joined[sizeof err->message];
    size_t plen = strlen(prefix), mlen = strlen(err->message), cap = sizeof joined - 1;
    size_t o = 0;
    for (size_t i = 0; i < plen && o < cap; i++)
        joined[o++] = prefix[i];
    for (size_t i = 0; i < 2 && o < cap; i++)
        joined[o++] = ": "[i];
    for (size_t i = 0; i < mlen && o < cap; i++)
        joined[o++] = err->message[i];
    joined[o] = '\0';
    memcpy(err->message, joined, o + 1);
}

fhirsync_code fs_check_version(unsigned int version, unsigned int latest, const char *type,
                               fhirsync_error *err)
{
    if (version >= 1 && version <= latest)
        return FHIRSYNC_OK;
    char macro[96];
    size_t n = 0;
    for (const char *p = type; *p && n < sizeof macro - 1; p++)
        macro[n++] = (char)toupper((unsigned char)*p);
    macro[n] = '\0';
    return fs_err(err, FHIRSYNC_E_ARG,
                  "%s has version %u, not one this library knows (1..%u): initialise it with "
                  "%s_init(&x, %s_VERSION)",
                  type, version, latest, type, macro);
}

fhirsync_code fs_versioned_init(void *x, size_t size, unsigned int version, unsigned int latest,
                                const char *type)
{
    if (!x || size < sizeof version || fs_check_version(version, latest, type, NULL) != FHIRSYNC_OK)
        return FHIRSYNC_E_ARG;
    memset(x, 0, size);
    memcpy(x, &version, sizeof version); /* `unsigned int version` is the first member */
    return FHIRSYNC_OK;
}
