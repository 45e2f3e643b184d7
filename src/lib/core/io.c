/* core/io.c: writing to a file descriptor whole: write(2) may write less than asked or be
 * interrupted by a signal, and every file the library writes (keys, state, NDJSON, ledgers) must
 * be written completely or be reported as failed. Also the one permission rule of private files
 * (keys, login credentials). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <unistd.h>

#include "core/core.h"

ssize_t fs_read_up_to(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    while (len < cap) {
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        len += (size_t)n;
    }
    return (ssize_t)len;
}

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

fhirsync_code fs_private_file_mode_check(const char *what, const char *path, unsigned mode,
                                         fhirsync_error *err)
{
    if (!(mode & 077))
        return FHIRSYNC_OK;
    return fs_err(err, FHIRSYNC_E_KEY_PERMS,
                  "%s %s is %s by group or others (mode %04o): run chmod 600 %s", what, path,
                  mode & 044 ? "readable" : "writable", mode & 07777, path);
}

void fs_fsync_parent(const char *path)
{
    char *copy = fs_strdup(path);
    if (!copy)
        return;
    int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    fs_free(copy);
}
