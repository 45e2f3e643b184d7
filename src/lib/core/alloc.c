/* core/alloc.c: the library's allocator. All of libfhirsync (and jansson, through
 * json_set_alloc_funcs) allocates here, which gives tests one seam to make the Nth allocation
 * fail. The counter is process-wide and atomic; it costs one relaxed atomic add per allocation. */
#include <openssl/crypto.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

static atomic_ulong alloc_count;
static atomic_ulong fail_at; /* 0 = off; otherwise the count at which to fail */
static atomic_bool fired;

static bool should_fail(void)
{
    unsigned long n = atomic_fetch_add_explicit(&alloc_count, 1, memory_order_relaxed) + 1;
    unsigned long at = atomic_load_explicit(&fail_at, memory_order_relaxed);
    if (at != 0 && n == at) {
        atomic_store(&fired, true);
        return true;
    }
    return false;
}

unsigned long fs_alloc_fail_at(unsigned long nth)
{
    unsigned long before = atomic_exchange(&alloc_count, 0);
    atomic_store(&fired, false);
    atomic_store(&fail_at, nth);
    return before;
}

bool fs_alloc_failure_fired(void)
{
    return atomic_load(&fired);
}

void *fs_malloc(size_t n)
{
    if (should_fail())
        return NULL;
    return malloc(n ? n : 1);
}

void *fs_calloc(size_t count, size_t size)
{
    if (should_fail())
        return NULL;
    return calloc(count ? count : 1, size ? size : 1);
}

void *fs_realloc(void *p, size_t n)
{
    if (should_fail())
        return NULL;
    return realloc(p, n ? n : 1);
}

void *fs_array_grow(void *items, size_t *cap, size_t elem_size, size_t first)
{
    if (*cap > SIZE_MAX / 2)
        return NULL;
    size_t n = *cap ? *cap * 2 : first;
    if (n == 0 || elem_size == 0 || n > SIZE_MAX / elem_size)
        return NULL;
    void *grown = fs_realloc(items, n * elem_size);
    if (grown)
        *cap = n;
    return grown;
}

void fs_free(void *p)
{
    free(p);
}

char *fs_strndup(const char *s, size_t n)
{
    if (!s)
        return NULL;
    size_t len = strnlen(s, n);
    char *copy = fs_malloc(len + 1);
    if (!copy)
        return NULL;
    memcpy(copy, s, len);
    copy[len] = '\0';
    return copy;
}

char *fs_strdup(const char *s)
{
    return s ? fs_strndup(s, strlen(s)) : NULL;
}

void fs_free_wipe(void *p, size_t n)
{
    if (!p)
        return;
    OPENSSL_cleanse(p, n);
    free(p);
}

void fs_free_secret(char *s)
{
    if (s)
        fs_free_wipe(s, strlen(s));
}

void fhirsync_free(void *ptr)
{
    fs_free(ptr);
}
