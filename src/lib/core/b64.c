/* core/b64.c: base64url without padding (JOSE, RFC 7515 section 2) and plain base64 (HTTP Basic).
 * The decoder is strict: JOSE values with padding or stray characters are rejected, not
 * silently repaired. */
#include <string.h>

#include "core/core.h"

static const char url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
static const char std_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *encode(const unsigned char *data, size_t len, const char *alphabet, bool pad)
{
    if (len > (SIZE_MAX - 4) / 4 * 3)
        return NULL;
    size_t out_len = (len + 2) / 3 * 4 + 1;
    char *out = fs_malloc(out_len);
    if (!out)
        return NULL;
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        out[o++] = alphabet[v >> 18 & 63];
        out[o++] = alphabet[v >> 12 & 63];
        out[o++] = alphabet[v >> 6 & 63];
        out[o++] = alphabet[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)data[i + 1] << 8;
        out[o++] = alphabet[v >> 18 & 63];
        out[o++] = alphabet[v >> 12 & 63];
        if (i + 1 < len)
            out[o++] = alphabet[v >> 6 & 63];
        else if (pad)
            out[o++] = '=';
        if (pad)
            out[o++] = '=';
    }
    out[o] = '\0';
    return out;
}

char *fs_b64url_encode(const unsigned char *data, size_t len)
{
    return encode(data, len, url_alphabet, false);
}

char *fs_b64_encode(const unsigned char *data, size_t len)
{
    return encode(data, len, std_alphabet, true);
}

/* The value of one character in `alphabet` (its 62nd and 63rd characters are the only ones
 * the two alphabets differ in), -1 when it is not one. */
static int value_of(char c, const char *alphabet)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == alphabet[62])
        return 62;
    if (c == alphabet[63])
        return 63;
    return -1;
}

/* Strict decoding of unpadded text; the output is wiped when the input is refused, since it may
 * be a credential (HTTP Basic) or part of a key (JWK members). */
static bool decode(const char *text, size_t text_len, const char *alphabet, unsigned char **out,
                   size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (text_len % 4 == 1)
        return false;
    size_t cap = text_len / 4 * 3 + 3;
    unsigned char *buf = fs_malloc(cap);
    if (!buf)
        return false;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < text_len; i++) {
        int v = value_of(text[i], alphabet);
        if (v < 0) {
            fs_free_wipe(buf, cap);
            return false;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (unsigned char)(acc >> bits & 0xff);
        }
    }
    /* leftover bits must be zero (canonical encoding) */
    if (bits && (acc & ((1u << bits) - 1))) {
        fs_free_wipe(buf, cap);
        return false;
    }
    *out = buf;
    *out_len = o;
    return true;
}

bool fs_b64url_decode(const char *text, size_t text_len, unsigned char **out, size_t *out_len)
{
    return decode(text, text_len, url_alphabet, out, out_len);
}

bool fs_b64_decode(const char *text, size_t text_len, unsigned char **out, size_t *out_len)
{
    /* padding, when there is any, makes the length a multiple of 4: at most two '=' */
    size_t n = text_len;
    while (n > 0 && text_len - n < 2 && text[n - 1] == '=')
        n--;
    if (n < text_len && text_len % 4 != 0) {
        *out = NULL;
        *out_len = 0;
        return false;
    }
    return decode(text, n, std_alphabet, out, out_len);
}
