/* core/retry.c: backoff delays and an interruptible sleep, shared by every module that retries
 * (token requests, FHIR requests, bulk status polls and downloads). */
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

int64_t fs_backoff_ms(unsigned attempt, int64_t retry_after_s, int64_t cap_s)
{
    int64_t cap_ms = (cap_s > 0 ? cap_s : 300) * 1000;
    if (retry_after_s >= 0) {
        int64_t ms = retry_after_s > cap_ms / 1000 ? cap_ms : retry_after_s * 1000;
        return ms;
    }
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
