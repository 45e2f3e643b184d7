/* fhirsync/log.h: the library never prints. It hands each log line to the application's callback,
 * after one redaction path has masked every secret (Authorization headers, access tokens, client
 * assertions, client secrets, refresh tokens, authorization codes, passwords in connection strings,
 * anything shaped like a JWT, PEM blocks). Logs carry counts, types, timings and URLs; never
 * resource content. */
#ifndef FHIRSYNC_LOG_H
#define FHIRSYNC_LOG_H

#include "fhirsync/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fhirsync_log_level {
    FHIRSYNC_LOG_ERROR = 0,
    FHIRSYNC_LOG_WARN = 1,
    FHIRSYNC_LOG_INFO = 2,
    FHIRSYNC_LOG_DEBUG = 3
} fhirsync_log_level;

/* Receives one redacted line (no trailing newline). Called from whichever thread logs; the
 * callback must be thread-safe if the application uses the library from several threads. */
typedef void (*fhirsync_log_cb)(fhirsync_log_level level, const char *line, void *userdata);

/* Install the callback and the most verbose level passed to it. NULL silences the library.
 * Set it before starting threads. */
FHIRSYNC_API void fhirsync_log_set(fhirsync_log_cb cb, void *userdata, fhirsync_log_level max);

/* The redaction path, for applications that log on their own: returns a redacted copy of
 * `text` (the caller's, free with fhirsync_free()), or NULL when out of memory. */
FHIRSYNC_API char *fhirsync_redact(const char *text);

/* "error", "warn", "info", "debug". */
FHIRSYNC_API const char *fhirsync_log_level_name(fhirsync_log_level level);

#ifdef __cplusplus
}
#endif
#endif
