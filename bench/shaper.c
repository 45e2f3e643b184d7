/*
 * bench/shaper.c: a loopback TCP proxy that turns loopback into a slower, farther link for the
 * network benchmark (bench/net_bench.sh), because these machines' kernels have no netem. One
 * process, one thread, poll(): each --pair listens on a loopback port and forwards every
 * connection to a target host:port, through the model below. Nothing here knows HTTP.
 *
 * The link model, per direction (client -> server "up", server -> client "down"):
 *   - serialisation: bytes leave a per-connection queue through a token bucket of --rate bits/s;
 *     by default one bucket per direction is shared by every connection of the process (one
 *     access link: parallel downloads share 50 Mbit/s), --per-connection gives each its own;
 *   - propagation: paced bytes reach the other side RTT/2 later (stamped per chunk, so a
 *     connection has a whole bandwidth-delay product in flight: throughput is not bound by the
 *     latency);
 *   - connection set-up: a connection's first bytes up are held one RTT, the TCP handshake a
 *     real link would cost (the proxy's own accept on loopback is instant);
 *   - loss, which TCP turns into delay and a smaller window, not into missing bytes: with
 *     --loss P each 1448-byte segment is lost with probability P, and it and everything after it
 *     on that connection arrives one RTT late (fast retransmit; head-of-line blocking); and each
 *     connection is held to the loss-bound rate of TCP, MSS / RTT * 1.22 / sqrt(P) (Mathis et
 *     al., 1997: the average of a loss-based congestion window), so that one connection on a
 *     lossy long link gets less than the whole rate and several get more;
 *   - resets: with --reset P a connection is reset (RST both ways, in-flight bytes lost) with
 *     probability P per MiB it forwards, as a flaky NAT or a middlebox would.
 * Not modelled: slow start (a new connection gets its share at once), the window's saw-tooth
 * (the loss bound is applied as a steady rate), retransmission timeouts, TLS.
 *
 * Buffers are bounded (--buffer per connection and direction; reading stops when full, which
 * pushes back on the sender through loopback TCP). Counters (bytes forwarded per direction and
 * pair, connections, losses, resets) go to --stats-file as JSON on SIGUSR1 and at exit; SIGTERM
 * or SIGINT stops it cleanly (exit 0, ready file removed).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* ppoll, accept4 */
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PAIRS 8
#define SEGMENT 1448       /* bytes of a TCP segment on a 1500-byte MTU path */
#define QUANTUM (8 * 1024) /* bytes a connection may pace per turn: fairness */
#define MAX_MARKS 512      /* delivery stamps per direction (close ones are merged) */
#define MERGE_US 500       /* stamps closer than this share one (bytes early by < 0.5 ms) */
#define UP 0
#define DOWN 1

typedef struct pair {
    char listen_addr[64];
    unsigned listen_port;
    char target_text[160];
    struct sockaddr_storage target;
    socklen_t target_len;
    int listen_fd;
    uint64_t connections, bytes[2], losses, resets;
} pair;

typedef struct bucket {
    double rate; /* bytes per second; 0: unlimited */
    double depth;
    double tokens; /* bytes */
    int64_t last_us;
} bucket;

typedef struct mark {
    uint64_t end;   /* absolute byte count of the direction this stamp covers up to */
    int64_t due_us; /* when those bytes reach the other side */
} mark;

/* One direction of a connection: a ring of bytes read from the source, of which [out, paced)
 * are in flight with their delivery stamps and [paced, in) wait for the bucket. */
typedef struct direction {
    unsigned char *ring;
    uint64_t in, paced, out;
    mark marks[MAX_MARKS];
    size_t mark_head, mark_count;
    int64_t last_due;
    bool eof;     /* the source ended */
    bool shut;    /* the end passed on (shutdown of the destination's write side) */
    bool blocked; /* the destination's last write would block: wait for POLLOUT */
    bucket own;   /* the connection's own limit: --per-connection, the loss-bound window */
} direction;

typedef struct conn {
    pair *pair;
    int fd[2]; /* [UP]: the client (source up), [DOWN]: the target (source down) */
    bool connecting;
    bool dead;
    bool reset; /* dead by an injected reset: RST both ways */
    int64_t open_us;
    direction dir[2];
} conn;

static struct {
    pair pairs[MAX_PAIRS];
    size_t npairs;
    double rate_bps; /* bytes per second; 0: unlimited */
    bool per_connection;
    int64_t rtt_us, oneway_us;
    double loss, reset_per_mib;
    size_t buffer;
    size_t max_connections;
    uint64_t rng;
    const char *ready_file, *stats_file;
    conn **conns;
    size_t nconns;
    size_t turn[2]; /* per direction: the connection that paces first next time */
    bucket shared[2];
    double conn_rate; /* the own buckets' rate, bytes per second; 0: none */
    unsigned stats_seq;
} g;

static volatile sig_atomic_t stop_signal, dump_signal;

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        dump_signal = 1;
    else
        stop_signal = sig;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* xorshift64*: uniform in [0, 1) */
static double random_unit(void)
{
    g.rng ^= g.rng >> 12;
    g.rng ^= g.rng << 25;
    g.rng ^= g.rng >> 27;
    return (double)((g.rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static void usage(FILE *out)
{
    fputs("usage: shaper [options] --pair [ADDR:]PORT=HOST:PORT [--pair ...]\n"
          "A loopback TCP proxy that shapes what it forwards: rate, latency, loss, resets.\n\n"
          "  --pair [ADDR:]PORT=HOST:PORT  listen on ADDR:PORT (ADDR default 127.0.0.1; PORT 0:\n"
          "                        a free one) and forward to HOST:PORT (repeatable, up to 8)\n"
          "  --rate BITS           link rate per direction in bits/s, suffix k M G (default\n"
          "                        50M; 0: unlimited), shared by all connections\n"
          "  --per-connection      each connection gets its own --rate instead\n"
          "  --rtt MS              round-trip time: MS/2 each way, and one RTT of connection\n"
          "                        set-up (default 40)\n"
          "  --loss P              probability that a 1448-byte segment is lost: it and what\n"
          "                        follows on its connection arrive one RTT late, and each\n"
          "                        connection is held to MSS/RTT*1.22/sqrt(P) (default 0)\n"
          "  --reset P             probability per MiB forwarded that a connection is reset\n"
          "                        (default 0)\n"
          "  --buffer BYTES        per connection and direction (default 2 x rate x RTT/2\n"
          "                        + 64 KiB, at least 256 KiB)\n"
          "  --max-connections N   open connections at once (default 256)\n"
          "  --seed N              random seed of --loss and --reset (default 1)\n"
          "  --ready-file FILE     once listening: {\"pid\": N, \"ports\": [PORT, ...]}\n"
          "  --stats-file FILE     counters as JSON, written on SIGUSR1 and at exit\n"
          "  --help                this text\n"
          "SIGTERM or SIGINT: clean stop (exit 0). Exit 2: usage error; 1: cannot listen.\n",
          out);
}

/* ---- options -------------------------------------------------------------------------------- */

static bool parse_number(const char *text, double max, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !(v >= 0) || v > max)
        return false;
    *out = v;
    return true;
}

/* "50M", "1.5G", "800k", "1000000" bits per second -> bytes per second */
static bool parse_rate(const char *text, double *bytes_per_s)
{
    char buf[64];
    size_t n = strlen(text);
    if (n == 0 || n >= sizeof buf)
        return false;
    memcpy(buf, text, n + 1);
    double scale = 1;
    switch (buf[n - 1]) {
    case 'k':
    case 'K': scale = 1e3; break;
    case 'm':
    case 'M': scale = 1e6; break;
    case 'g':
    case 'G': scale = 1e9; break;
    default: break;
    }
    if (scale != 1)
        buf[n - 1] = '\0';
    double v;
    if (!parse_number(buf, 1e6, &v))
        return false;
    *bytes_per_s = v * scale / 8;
    return true;
}

static bool parse_port(const char *text, unsigned *port)
{
    double v;
    if (!*text || strspn(text, "0123456789") != strlen(text) || !parse_number(text, 65535, &v))
        return false;
    *port = (unsigned)v;
    return true;
}

/* "[ADDR:]PORT=HOST:PORT" */
static bool parse_pair(const char *text, pair *p)
{
    const char *eq = strchr(text, '=');
    if (!eq || (size_t)(eq - text) >= sizeof p->listen_addr || strlen(eq + 1) >= 160)
        return false;
    char listen[64], target[160];
    memcpy(listen, text, (size_t)(eq - text));
    listen[eq - text] = '\0';
    snprintf(target, sizeof target, "%s", eq + 1);
    char *colon = strrchr(listen, ':');
    snprintf(p->listen_addr, sizeof p->listen_addr, "127.0.0.1");
    if (colon) {
        *colon = '\0';
        snprintf(p->listen_addr, sizeof p->listen_addr, "%s", listen);
    }
    if (!parse_port(colon ? colon + 1 : listen, &p->listen_port))
        return false;
    snprintf(p->target_text, sizeof p->target_text, "%s", target);
    colon = strrchr(target, ':');
    unsigned port;
    if (!colon || colon == target || !parse_port(colon + 1, &port) || port == 0)
        return false;
    *colon = '\0';
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(target, colon + 1, &hints, &res) != 0 || !res) {
        fprintf(stderr, "shaper: cannot resolve %s\n", p->target_text);
        return false;
    }
    memcpy(&p->target, res->ai_addr, res->ai_addrlen);
    p->target_len = res->ai_addrlen;
    freeaddrinfo(res);
    return true;
}

/* 0 ok, 1 --help, 2 usage error */
static int parse_options(int argc, char **argv)
{
    enum {
        O_PAIR = 256,
        O_RATE,
        O_PERCONN,
        O_RTT,
        O_LOSS,
        O_RESET,
        O_BUFFER,
        O_MAXCONN,
        O_SEED,
        O_READY,
        O_STATS,
        O_HELP
    };
    static const struct option longopts[] = {
        {"pair", required_argument, NULL, O_PAIR},
        {"rate", required_argument, NULL, O_RATE},
        {"per-connection", no_argument, NULL, O_PERCONN},
        {"rtt", required_argument, NULL, O_RTT},
        {"loss", required_argument, NULL, O_LOSS},
        {"reset", required_argument, NULL, O_RESET},
        {"buffer", required_argument, NULL, O_BUFFER},
        {"max-connections", required_argument, NULL, O_MAXCONN},
        {"seed", required_argument, NULL, O_SEED},
        {"ready-file", required_argument, NULL, O_READY},
        {"stats-file", required_argument, NULL, O_STATS},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    g.rate_bps = 50e6 / 8;
    g.rtt_us = 40000;
    g.max_connections = 256;
    g.rng = 1;
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        double v = 0;
        bool good = true;
        switch (opt) {
        case O_PAIR:
            good = g.npairs < MAX_PAIRS && parse_pair(optarg, &g.pairs[g.npairs]);
            g.npairs += good;
            break;
        case O_RATE: good = parse_rate(optarg, &g.rate_bps); break;
        case O_PERCONN: g.per_connection = true; break;
        case O_RTT:
            good = parse_number(optarg, 60000, &v);
            g.rtt_us = (int64_t)(v * 1000);
            break;
        case O_LOSS:
            good = parse_number(optarg, 1, &v);
            g.loss = v;
            break;
        case O_RESET:
            good = parse_number(optarg, 1e6, &v);
            g.reset_per_mib = v;
            break;
        case O_BUFFER:
            good = parse_number(optarg, 1 << 30, &v) && v >= 4096;
            g.buffer = (size_t)v;
            break;
        case O_MAXCONN:
            good = parse_number(optarg, 100000, &v) && v >= 1;
            g.max_connections = (size_t)v;
            break;
        case O_SEED:
            good = parse_number(optarg, 1e18, &v);
            g.rng = (uint64_t)v ? (uint64_t)v : 1;
            break;
        case O_READY: g.ready_file = optarg; break;
        case O_STATS: g.stats_file = optarg; break;
        case O_HELP: return 1;
        default:
            fprintf(stderr, "shaper: unknown option or missing value: %s\n", argv[optind - 1]);
            return 2;
        }
        if (!good) {
            fprintf(stderr, "shaper: invalid value: %s\n", optarg);
            return 2;
        }
    }
    if (optind < argc || g.npairs == 0) {
        fprintf(stderr, "shaper: %s\n", g.npairs ? "unexpected argument" : "no --pair");
        return 2;
    }
    g.oneway_us = g.rtt_us / 2;
    if (g.buffer == 0) {
        double bdp = g.rate_bps * (double)g.oneway_us / 1e6;
        g.buffer = (size_t)fmin(2 * bdp + 65536, 64.0 * 1024 * 1024);
        if (g.buffer < 256 * 1024)
            g.buffer = 256 * 1024;
    }
    g.conn_rate = g.per_connection ? g.rate_bps : 0;
    if (g.loss > 0 && g.rtt_us > 0) {
        /* the loss-bound rate of one TCP connection (Mathis et al., 1997):
         * MSS / RTT * sqrt(3/2) / sqrt(p) */
        double bound = SEGMENT / ((double)g.rtt_us / 1e6) * 1.22 / sqrt(g.loss);
        g.conn_rate = g.conn_rate > 0 ? fmin(g.conn_rate, bound) : bound;
    }
    return 0;
}

/* ---- buckets -------------------------------------------------------------------------------- */

/* A bucket holds 5 ms of its rate (at least a few quanta): bursts stay small. */
static bucket new_bucket(double rate, int64_t now)
{
    double depth = fmax(4.0 * QUANTUM, rate * 0.005);
    return (bucket){rate, depth, depth, now};
}

static void refill(bucket *b, int64_t now)
{
    if (b->rate > 0)
        b->tokens = fmin(b->depth, b->tokens + b->rate * (double)(now - b->last_us) / 1e6);
    b->last_us = now;
}

/* How many of n bytes the bucket lets through now. */
static uint64_t allowance(const bucket *b, uint64_t n)
{
    return b->rate > 0 && b->tokens < (double)n ? (uint64_t)b->tokens : n;
}

static void take(bucket *b, uint64_t n)
{
    if (b->rate > 0)
        b->tokens -= (double)n;
}

/* Microseconds until the bucket lets n bytes through. */
static int64_t time_for(const bucket *b, uint64_t n)
{
    if (b->rate <= 0 || b->tokens >= (double)n)
        return 0;
    return (int64_t)ceil(((double)n - b->tokens) / b->rate * 1e6);
}

/* ---- sockets -------------------------------------------------------------------------------- */

static bool nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    return flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

static bool listen_on(pair *p)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res = NULL;
    char port[16];
    snprintf(port, sizeof port, "%u", p->listen_port);
    if (getaddrinfo(p->listen_addr, port, &hints, &res) != 0 || !res) {
        fprintf(stderr, "shaper: cannot resolve %s\n", p->listen_addr);
        return false;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    bool ok = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
              bind(fd, res->ai_addr, res->ai_addrlen) == 0 && listen(fd, 128) == 0 &&
              nonblocking(fd);
    freeaddrinfo(res);
    struct sockaddr_storage addr;
    socklen_t len = sizeof addr;
    if (ok && getsockname(fd, (struct sockaddr *)&addr, &len) == 0)
        p->listen_port =
            ntohs(addr.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&addr)->sin6_port
                                             : ((struct sockaddr_in *)&addr)->sin_port);
    if (!ok) {
        fprintf(stderr, "shaper: cannot listen on %s:%u: %s\n", p->listen_addr, p->listen_port,
                strerror(errno));
        if (fd >= 0)
            close(fd);
        return false;
    }
    p->listen_fd = fd;
    return true;
}

static void conn_free(conn *c)
{
    for (int k = 0; k < 2; k++) {
        if (c->fd[k] >= 0) {
            if (c->reset) {
                struct linger lg = {1, 0}; /* close with RST */
                setsockopt(c->fd[k], SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            }
            close(c->fd[k]);
        }
        free(c->dir[k].ring);
    }
    free(c);
}

static void accept_on(pair *p)
{
    while (g.nconns < g.max_connections) {
        int client = accept4(p->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (client < 0)
            return; /* EAGAIN, or a connection that went away: nothing to do */
        conn *c = calloc(1, sizeof *c);
        int server = socket(p->target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (!c || server < 0 || !(c->dir[UP].ring = malloc(g.buffer)) ||
            !(c->dir[DOWN].ring = malloc(g.buffer))) {
            close(client);
            if (server >= 0)
                close(server);
            if (c) {
                free(c->dir[UP].ring);
                free(c);
            }
            continue;
        }
        int one = 1;
        setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->pair = p;
        c->fd[UP] = client;
        c->fd[DOWN] = server;
        c->open_us = now_us();
        for (int k = 0; k < 2; k++)
            c->dir[k].own = new_bucket(g.conn_rate, c->open_us);
        if (connect(server, (struct sockaddr *)&p->target, p->target_len) != 0) {
            if (errno != EINPROGRESS) {
                c->reset = true;
                conn_free(c);
                continue;
            }
            c->connecting = true;
        }
        p->connections++;
        g.conns[g.nconns++] = c;
    }
}

/* ---- the link ------------------------------------------------------------------------------- */

/* n more bytes of direction k of c enter the link now */
static void send_into_link(conn *c, int k, uint64_t n, int64_t now)
{
    direction *d = &c->dir[k];
    int64_t due = now + g.oneway_us;
    if (g.loss > 0) {
        /* P(at least one of n / SEGMENT segments lost), fractions of a segment included */
        if (random_unit() < 1 - pow(1 - g.loss, (double)n / SEGMENT)) {
            due += g.rtt_us;
            c->pair->losses++;
        }
    }
    if (g.reset_per_mib > 0 && random_unit() < g.reset_per_mib * (double)n / 1048576.0) {
        c->dead = c->reset = true;
        c->pair->resets++;
        return;
    }
    if (due < d->last_due)
        due = d->last_due; /* in order: a late segment holds back what follows */
    d->last_due = due;
    d->paced += n;
    if (d->mark_count > 0) {
        mark *last = &d->marks[(d->mark_head + d->mark_count - 1) % MAX_MARKS];
        if (due - last->due_us < MERGE_US || d->mark_count == MAX_MARKS) {
            last->end = d->paced;
            return;
        }
    }
    d->marks[(d->mark_head + d->mark_count++) % MAX_MARKS] = (mark){d->paced, due};
}

/* Move waiting bytes into the link as the buckets allow, a quantum per connection in turn; the
 * next call starts after the last connection served, so that a bucket that holds one quantum at
 * a time still goes round them all. */
static void pace(int64_t now)
{
    for (int k = 0; k < 2; k++) {
        bucket *shared = &g.shared[k];
        refill(shared, now);
        bool moved = true;
        while (moved && g.nconns > 0) {
            moved = false;
            size_t first = g.turn[k] % g.nconns;
            for (size_t i = 0; i < g.nconns; i++) {
                size_t at = (first + i) % g.nconns;
                conn *c = g.conns[at];
                direction *d = &c->dir[k];
                uint64_t waiting = d->in - d->paced;
                if (c->dead || waiting == 0 || (k == UP && now < c->open_us + g.rtt_us))
                    continue;
                uint64_t n = waiting < QUANTUM ? waiting : QUANTUM;
                refill(&d->own, now);
                n = allowance(shared, allowance(&d->own, n));
                if (n == 0)
                    continue;
                take(shared, n);
                take(&d->own, n);
                send_into_link(c, k, n, now);
                g.turn[k] = at + 1;
                if (!c->dead)
                    moved = true;
            }
        }
    }
}

/* Write the bytes of direction k whose time has come. */
static void deliver(conn *c, int k, int64_t now)
{
    direction *d = &c->dir[k];
    int dst = c->fd[k == UP ? DOWN : UP];
    if (k == UP && c->connecting)
        return;
    while (!c->dead && d->mark_count > 0 && d->marks[d->mark_head].due_us <= now) {
        uint64_t end = d->marks[d->mark_head].end;
        while (d->out < end) {
            size_t at = (size_t)(d->out % g.buffer);
            size_t n = (size_t)(end - d->out);
            if (n > g.buffer - at)
                n = g.buffer - at;
            ssize_t w = send(dst, d->ring + at, n, MSG_NOSIGNAL);
            if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                d->blocked = true;
                return;
            }
            if (w <= 0) {
                c->dead = true;
                return;
            }
            d->out += (uint64_t)w;
            c->pair->bytes[k] += (uint64_t)w;
        }
        d->mark_head = (d->mark_head + 1) % MAX_MARKS;
        d->mark_count--;
    }
    if (d->eof && !d->shut && d->out == d->in) {
        shutdown(dst, SHUT_WR);
        d->shut = true;
    }
    if (c->dir[UP].shut && c->dir[DOWN].shut)
        c->dead = true;
}

/* Read what the source of direction k has, as far as the ring has room. */
static void receive(conn *c, int k)
{
    direction *d = &c->dir[k];
    int src = c->fd[k];
    while (!d->eof && !c->dead && d->in - d->out < g.buffer) {
        size_t at = (size_t)(d->in % g.buffer);
        size_t room = (size_t)(g.buffer - (d->in - d->out));
        size_t n = g.buffer - at < room ? g.buffer - at : room;
        ssize_t r = recv(src, d->ring + at, n, 0);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (r < 0) {
            c->dead = c->reset = true; /* a reset from one side is passed to the other */
            return;
        }
        if (r == 0)
            d->eof = true;
        d->in += (uint64_t)r;
    }
}

/* wake becomes t (not before now) if that is sooner; -1 is "never" */
static void sooner(int64_t *wake, int64_t t, int64_t now)
{
    if (t < now)
        t = now;
    if (*wake < 0 || t < *wake)
        *wake = t;
}

/* Microseconds until something is due (-1: nothing is). */
static int64_t next_wake(int64_t now)
{
    int64_t wake = -1;
    for (size_t i = 0; i < g.nconns; i++) {
        conn *c = g.conns[i];
        for (int k = 0; k < 2; k++) {
            direction *d = &c->dir[k];
            if (d->mark_count > 0 && !d->blocked && !(k == UP && c->connecting))
                sooner(&wake, d->marks[d->mark_head].due_us, now);
            uint64_t waiting = d->in - d->paced;
            if (waiting == 0)
                continue;
            if (k == UP && now < c->open_us + g.rtt_us) {
                sooner(&wake, c->open_us + g.rtt_us, now);
            } else {
                uint64_t n = waiting < QUANTUM ? waiting : QUANTUM;
                int64_t own = time_for(&d->own, n), link = time_for(&g.shared[k], n);
                sooner(&wake, now + (own > link ? own : link), now);
            }
        }
    }
    return wake < 0 ? -1 : wake - now;
}

/* ---- files ---------------------------------------------------------------------------------- */

static bool write_atomically(const char *path, const char *text)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    bool ok = f && fputs(text, f) >= 0;
    if (f && fclose(f) != 0)
        ok = false;
    if (ok && rename(tmp, path) != 0)
        ok = false;
    if (!ok)
        unlink(tmp);
    return ok;
}

static void write_stats(void)
{
    if (!g.stats_file)
        return;
    char text[8192];
    size_t n = 0;
    uint64_t total[2] = {0, 0}, connections = 0, losses = 0, resets = 0;
    n += (size_t)snprintf(text + n, sizeof text - n, "{\"seq\": %u, \"pairs\": [", ++g.stats_seq);
    for (size_t i = 0; i < g.npairs; i++) {
        pair *p = &g.pairs[i];
        n += (size_t)snprintf(text + n, sizeof text - n,
                              "%s{\"port\": %u, \"target\": \"%s\", \"connections\": %llu, "
                              "\"bytes_up\": %llu, \"bytes_down\": %llu, \"losses\": %llu, "
                              "\"resets\": %llu}",
                              i ? ", " : "", p->listen_port, p->target_text,
                              (unsigned long long)p->connections, (unsigned long long)p->bytes[UP],
                              (unsigned long long)p->bytes[DOWN], (unsigned long long)p->losses,
                              (unsigned long long)p->resets);
        total[UP] += p->bytes[UP];
        total[DOWN] += p->bytes[DOWN];
        connections += p->connections;
        losses += p->losses;
        resets += p->resets;
    }
    snprintf(text + n, sizeof text - n,
             "], \"connections\": %llu, \"bytes_up\": %llu, \"bytes_down\": %llu, "
             "\"losses\": %llu, \"resets\": %llu}\n",
             (unsigned long long)connections, (unsigned long long)total[UP],
             (unsigned long long)total[DOWN], (unsigned long long)losses,
             (unsigned long long)resets);
    if (!write_atomically(g.stats_file, text))
        fprintf(stderr, "shaper: cannot write %s\n", g.stats_file);
}

static bool write_ready(void)
{
    char text[512];
    size_t n = (size_t)snprintf(text, sizeof text, "{\"pid\": %d, \"ports\": [", (int)getpid());
    for (size_t i = 0; i < g.npairs; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "%s%u", i ? ", " : "",
                              g.pairs[i].listen_port);
    snprintf(text + n, sizeof text - n, "]}\n");
    return write_atomically(g.ready_file, text);
}

/* ---- the loop ------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    int rc = parse_options(argc, argv);
    if (rc == 1) {
        usage(stdout);
        return 0;
    }
    if (rc != 0) {
        usage(stderr);
        return 2;
    }
    sigset_t blocked, in_poll;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGTERM);
    sigaddset(&blocked, SIGINT);
    sigaddset(&blocked, SIGUSR1);
    sigprocmask(SIG_BLOCK, &blocked, &in_poll); /* delivered only inside ppoll: no lost wake */
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct pollfd *fds = NULL;
    if (!(g.conns = calloc(g.max_connections, sizeof *g.conns)) ||
        !(fds = calloc(MAX_PAIRS + 2 * g.max_connections, sizeof *fds)))
        return 1;
    for (size_t i = 0; i < g.npairs; i++) {
        if (!listen_on(&g.pairs[i]))
            return 1;
        printf("shaper: 127.0.0.1:%u -> %s\n", g.pairs[i].listen_port, g.pairs[i].target_text);
    }
    char bound[64] = "";
    if (g.conn_rate > 0)
        snprintf(bound, sizeof bound, " (a connection at most %.3g Mbit/s)", g.conn_rate * 8 / 1e6);
    char rate[64] = "unlimited rate";
    if (g.rate_bps > 0)
        snprintf(rate, sizeof rate, "%.4g Mbit/s %s", g.rate_bps * 8 / 1e6,
                 g.per_connection ? "per connection" : "shared");
    printf("shaper: %s, RTT %.1f ms, loss %g per segment%s, resets %g per MiB, buffer %zu\n", rate,
           (double)g.rtt_us / 1000, g.loss, bound, g.reset_per_mib, g.buffer);
    fflush(stdout);
    int64_t start = now_us();
    g.shared[UP] = g.shared[DOWN] = new_bucket(g.per_connection ? 0 : g.rate_bps, start);
    if (g.ready_file && !write_ready()) {
        fprintf(stderr, "shaper: cannot write %s\n", g.ready_file);
        return 1;
    }

    while (!stop_signal) {
        if (dump_signal) {
            dump_signal = 0;
            write_stats();
        }
        int64_t now = now_us();
        pace(now);
        for (size_t i = 0; i < g.nconns; i++)
            for (int k = 0; k < 2; k++)
                deliver(g.conns[i], k, now);
        size_t kept = 0;
        for (size_t i = 0; i < g.nconns; i++) {
            if (g.conns[i]->dead)
                conn_free(g.conns[i]);
            else
                g.conns[kept++] = g.conns[i];
        }
        g.nconns = kept;

        size_t nfds = 0;
        for (size_t i = 0; i < g.npairs; i++)
            fds[nfds++] =
                (struct pollfd){g.pairs[i].listen_fd, g.nconns < g.max_connections ? POLLIN : 0, 0};
        for (size_t i = 0; i < g.nconns; i++) {
            conn *c = g.conns[i];
            for (int side = 0; side < 2; side++) {
                /* side is the socket: it is the source of direction side and the destination
                 * of the other one */
                direction *src = &c->dir[side], *dst = &c->dir[!side];
                short ev = 0;
                if (!src->eof && src->in - src->out < g.buffer)
                    ev |= POLLIN;
                if (dst->blocked || (side == DOWN && c->connecting))
                    ev |= POLLOUT;
                fds[nfds++] = (struct pollfd){c->fd[side], ev, 0};
            }
        }
        int64_t wait = next_wake(now_us());
        struct timespec ts = {(time_t)(wait / 1000000), (long)(wait % 1000000) * 1000};
        int n = ppoll(fds, nfds, wait < 0 ? NULL : &ts, &in_poll);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "shaper: poll: %s\n", strerror(errno));
            break;
        }
        for (size_t i = 0; i < g.npairs; i++)
            if (fds[i].revents & POLLIN)
                accept_on(&g.pairs[i]);
        size_t at = g.npairs;
        size_t polled = (nfds - g.npairs) / 2; /* connections accepted above are not in fds */
        for (size_t i = 0; i < polled; i++) {
            conn *c = g.conns[i];
            for (int side = 0; side < 2; side++) {
                short re = fds[at++].revents;
                if (!re)
                    continue;
                if (side == DOWN && c->connecting && (re & (POLLOUT | POLLERR | POLLHUP))) {
                    int error = 0;
                    socklen_t len = sizeof error;
                    getsockopt(c->fd[DOWN], SOL_SOCKET, SO_ERROR, &error, &len);
                    if (error) {
                        c->dead = c->reset = true; /* the target refused: reset the client */
                        continue;
                    }
                    c->connecting = false;
                }
                if (re & POLLERR) {
                    c->dead = c->reset = true; /* a reset from one side is passed on */
                    continue;
                }
                if (re & POLLOUT)
                    c->dir[!side].blocked = false;
                if (re & (POLLIN | POLLHUP))
                    receive(c, side);
            }
        }
    }
    for (size_t i = 0; i < g.nconns; i++)
        conn_free(g.conns[i]);
    for (size_t i = 0; i < g.npairs; i++)
        close(g.pairs[i].listen_fd);
    write_stats();
    if (g.ready_file)
        unlink(g.ready_file);
    free(g.conns);
    free(fds);
    return 0;
}
