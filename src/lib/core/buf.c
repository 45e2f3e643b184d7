/* core/buf.c: a growable, always NUL-terminated byte buffer. Callers enforce their own caps. */
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "core/core.h"

void fs_buf_init(fs_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

static bool reserve(fs_buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len - 1)
        return false;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = fs_realloc(b->data, cap);
    if (!p)
        return false;
    b->data = p;
    b->cap = cap;
    return true;
}

bool fs_buf_append(fs_buf *b, const void *data, size_t n)
{
    if (!reserve(b, n))
        return false;
    if (n)
        memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
    return true;
}

bool fs_buf_append_str(fs_buf *b, const char *s)
{
    return fs_buf_append(b, s, strlen(s));
}

bool fs_buf_vprintf(fs_buf *b, const char *fmt, va_list ap)
{
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    if (n < 0 || !reserve(b, (size_t)n))
        return false;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return true;
}

bool fs_buf_printf(fs_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bool ok = fs_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return ok;
}

bool fs_buf_append_urlencoded(fs_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char enc[3];
        size_t n = 1;
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            enc[0] = (char)*p;
        } else {
            enc[0] = '%';
            enc[1] = hex[*p >> 4];
            enc[2] = hex[*p & 15];
            n = 3;
        }
        if (!fs_buf_append(b, enc, n))
            return false;
    }
    return true;
}

void fs_buf_reset(fs_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void fs_buf_free(fs_buf *b)
{
    fs_free(b->data);
    fs_buf_init(b);
}

void fs_buf_free_secret(fs_buf *b)
{
    if (b->data)
        OPENSSL_cleanse(b->data, b->cap);
    fs_buf_free(b);
}

char *fs_buf_steal(fs_buf *b)
{
    if (!b->data && !fs_buf_append(b, "", 0))
        return NULL;
    char *p = b->data;
    fs_buf_init(b);
    return p;
}
