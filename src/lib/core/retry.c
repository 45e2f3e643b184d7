/* core/retry.c: what every retry loop of the library needs below the transport policy:
 * the process-wide cancellation flag (fhirsync_cancel), exponential backoff with jitter, and a
 * sleep that wakes when cancelled. Which answers are retried and how long a server asks us to
 * wait (Retry-After) is the transport policy's: http/policy.c. Store retries (a conflicting
 * writer) use the same backoff. */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>

#include "core/core.h"

static volatile sig_atomic_t cancel_flag;

void fhirsync_cancel(void)
{
    cancel_flag = 1;
}

void fhirsync_cancel_reset(void)
{
    cancel_flag = 0;
}

bool fs_cancel_requested(void)
{
    return cancel_flag != 0;
}

/* ---- delays --------------------------------------------------------------------------------- */

int64_t fs_backoff_ms(unsigned attempt, int64_t cap_ms)
{
    if (cap_ms <= 0)
        cap_ms = 300 * 1000;
    int64_t base = 1000;
    for (unsigned i = 0; i < attempt && base < cap_ms; i++)
        base *= 2;
    if (base > cap_ms)
        base = cap_ms;
    /* full jitter in [base/2, base] keeps clients from retrying in lockstep */
    unsigned char r[2];
    unsigned jitter = fs_random_bytes(r, sizeof r) ? (unsigned)(r[0] << 8 | r[1]) : 32768u;
    return base / 2 + (int64_t)((base / 2) * (int64_t)jitter / 65535);
}

bool fs_sleep_ms(int64_t ms)
{
    while (ms > 0) {
        if (fs_cancel_requested())
            return false;
        int64_t step = ms > 100 ? 100 : ms;
        struct timespec ts = {.tv_sec = step / 1000, .tv_nsec = (step % 1000) * 1000000};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
            if (fs_cancel_requested())
                return false;
        }
        ms -= step;
    }
    return !fs_cancel_requested();
}
