/*
 * src/sandbox/gzip.c: --gzip, bulk files sent with Content-Encoding: gzip, as servers that
 * compress (or object stores holding compressed objects) send them. The compressed copy of an
 * export file is made once, beside it (NAME.gz in the job's folder, removed with the job), at its
 * first download by a client that accepts gzip, and then sent from disk like the file itself. A
 * request with a Range gets the file as it is: a range of the encoded bytes would not resume a
 * partial file.
 */
#include "sandbox.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

bool sb_gzip_accepted(const char *accept_encoding)
{
    /* a list of "coding[;q=VALUE]": gzip, x-gzip or * with a q above 0 */
    const char *p = accept_encoding;
    while (p && *p) {
        p += strspn(p, " \t,");
        size_t name = strcspn(p, " \t;,");
        bool match = (name == 4 && !strncasecmp(p, "gzip", 4)) ||
                     (name == 6 && !strncasecmp(p, "x-gzip", 6)) || (name == 1 && *p == '*');
        const char *end = p + strcspn(p, ",");
        const char *q = strstr(p, "q=");
        if (match && (!q || q > end || strtod(q + 2, NULL) > 0))
            return true;
        p = end;
    }
    return false;
}

/* NAME.gz from NAME, through a temporary name: concurrent first downloads each write their own
 * and the last rename wins (the copies are the same). */
static bool compress_copy(const char *path, const char *gz_path)
{
    static atomic_uint serial;
    char tmp[4400];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d.%u", gz_path, (int)getpid(), atomic_fetch_add(&serial, 1));
    int in = open(path, O_RDONLY | O_CLOEXEC);
    int out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    gzFile z = out >= 0 ? gzdopen(out, "wb6") : NULL;
    bool ok = in >= 0 && z;
    if (out >= 0 && !z)
        close(out);
    char buf[65536];
    ssize_t n;
    while (ok && (n = read(in, buf, sizeof buf)) != 0)
        ok = n > 0 && gzwrite(z, buf, (unsigned)n) == (int)n;
    if (z && gzclose(z) != Z_OK)
        ok = false;
    if (in >= 0)
        close(in);
    if (ok && rename(tmp, gz_path) != 0)
        ok = false;
    if (!ok && out >= 0)
        unlink(tmp);
    return ok;
}

int sb_gzip_open(const char *path, uint64_t *size)
{
    char gz_path[4400];
    snprintf(gz_path, sizeof gz_path, "%s.gz", path);
    int fd = open(gz_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && compress_copy(path, gz_path))
        fd = open(gz_path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) != 0) {
        close(fd);
        fd = -1;
    }
    if (fd >= 0)
        *size = (uint64_t)st.st_size;
    return fd;
}
