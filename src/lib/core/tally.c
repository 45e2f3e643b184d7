/* core/tally.c: what a run asked of the network, counted where it happens. A sync run points its
 * thread at its own fs_tally (fs_tally_bind); the HTTP layer then counts every response it
 * receives on that thread (and the 429s among them, and the bytes of their bodies), and the token
 * client every token it obtains from a token endpoint. Nothing is counted on a thread that has
 * no tally bound, so a program that never binds one pays one thread-local read per response.
 * The counters are atomic: a tally may be read from another thread while its run goes on. */
#include <stdatomic.h>

#include "core/core.h"

static _Thread_local fs_tally *bound;

fs_tally *fs_tally_bind(fs_tally *tally)
{
    fs_tally *previous = bound;
    bound = tally;
    return previous;
}

void fs_tally_reset(fs_tally *tally)
{
    atomic_store(&tally->responses, 0);
    atomic_store(&tally->rate_limited, 0);
    atomic_store(&tally->body_bytes, 0);
    atomic_store(&tally->tokens, 0);
}

void fs_tally_response(long status)
{
    fs_tally *t = bound;
    if (!t)
        return;
    atomic_fetch_add(&t->responses, 1);
    if (status == 429)
        atomic_fetch_add(&t->rate_limited, 1);
}

void fs_tally_body(size_t bytes)
{
    fs_tally *t = bound;
    if (t)
        atomic_fetch_add(&t->body_bytes, (int64_t)bytes);
}

void fs_tally_token(void)
{
    fs_tally *t = bound;
    if (t)
        atomic_fetch_add(&t->tokens, 1);
}
