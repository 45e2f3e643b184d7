/* core/str.c: small string and randomness helpers. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/rand.h>

#include "core/core.h"

bool fs_streq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

bool fs_strcaseeq(const char *a, const char *b)
{
    return a && b && strcasecmp(a, b) == 0;
}

bool fs_starts_with(const char *s, const char *prefix)
{
    return s && prefix && strncmp(s, prefix, strlen(prefix)) == 0;
}

char *fs_url_comparable(const char *url)
{
    char *n = fs_strdup(url);
    if (!n)
        return NULL;
    char *host = strstr(n, "://");
    char *end = host ? strchr(host + 3, '/') : NULL;
    for (char *p = n; *p && p != end; p++)
        *p = (char)tolower((unsigned char)*p);
    size_t len = strlen(n);
    while (len > 0 && n[len - 1] == '/')
        n[--len] = '\0';
    return n;
}

bool fs_consttime_eq(const void *a, size_t alen, const void *b, size_t blen)
{
    if (alen != blen)
        return false;
    return CRYPTO_memcmp(a, b, alen) == 0;
}

bool fs_parse_long(const char *s, long *out)
{
    if (!s || !*s)
        return false;
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || !end || *end != '\0')
        return false;
    *out = v;
    return true;
}

bool fs_random_bytes(unsigned char *out, size_t n)
{
    return n <= INT_MAX && RAND_bytes(out, (int)n) == 1;
}

char *fs_random_id(size_t nbytes)
{
    unsigned char raw[64];
    if (nbytes > sizeof raw || !fs_random_bytes(raw, nbytes))
        return NULL;
    char *id = fs_b64url_encode(raw, nbytes);
    OPENSSL_cleanse(raw, sizeof raw);
    return id;
}
