/* cli/notify.c: the service's side of systemd's notification protocol (sd_notify(3)), for
 * `sync --every` and `sync --worker` under a unit with Type=notify: READY=1 once the scheduler
 * runs, STATUS= a one-line summary, WATCHDOG=1 at half the unit's WatchdogSec (asked of
 * sd_watchdog_enabled(3), so nothing is sent when the unit has no watchdog), RELOADING=1 and
 * READY=1 around a SIGHUP's reload, STOPPING=1 on the way out. Built with libsystemd when CMake
 * found it (FHIRSYNC_SYSTEMD); without it, or outside systemd (no NOTIFY_SOCKET), every call is a
 * no-op. Called from the scheduler's thread only. */
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "cli.h"

#ifdef FHIRSYNC_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>

static int64_t watchdog_every_ms;        /* 0: no watchdog */
static _Atomic int64_t watchdog_next_ms; /* the worker's ticker and its scheduler both tick */

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cli_notify_init(void)
{
    uint64_t usec = 0;
    /* unset_environment 0: a second call (a reload) must still see it */
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        watchdog_every_ms = (int64_t)(usec / 2000);
        if (watchdog_every_ms < 1)
            watchdog_every_ms = 1;
        watchdog_next_ms = 0;
    }
}

void cli_notify_ready(const char *status)
{
    sd_notifyf(0, "READY=1\nSTATUS=%s", status ? status : "running");
}

void cli_notify_reloading(void)
{
    sd_notify(0, "RELOADING=1\nSTATUS=reloading the configuration");
}

void cli_notify_status(const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    for (char *p = text; *p; p++)
        if (*p == '\n')
            *p = ' '; /* one line: a newline would start another assignment */
    sd_notifyf(0, "STATUS=%s", text);
}

void cli_notify_watchdog(void)
{
    if (!watchdog_every_ms)
        return;
    int64_t now = monotonic_ms();
    if (now < watchdog_next_ms)
        return;
    watchdog_next_ms = now + watchdog_every_ms;
    sd_notify(0, "WATCHDOG=1");
}

void cli_notify_stopping(void)
{
    sd_notify(0, "STOPPING=1\nSTATUS=stopping");
}

bool cli_notify_available(void)
{
    return true;
}

#else /* without libsystemd: nothing to tell */

void cli_notify_init(void)
{
}

void cli_notify_ready(const char *status)
{
    (void)status;
}

void cli_notify_reloading(void)
{
}

void cli_notify_status(const char *fmt, ...)
{
    (void)fmt;
}

void cli_notify_watchdog(void)
{
}

void cli_notify_stopping(void)
{
}

bool cli_notify_available(void)
{
    return false;
}

#endif
