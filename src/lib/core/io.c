/* core/io.c: writing to a file descriptor whole: write(2) may write less than asked or be
 * interrupted by a signal, and every file the library writes (keys, state, NDJSON, ledgers) must
 * be written completely or be reported as failed. */
#include <errno.h>
#include <unistd.h>

#include "core/core.h"

bool fs_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            return false;
        }
        p += n;
        len -= (size_t)n;
    }
    return true;
}
