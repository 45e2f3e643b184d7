/* cli/cmd_login.c: `fhirsync login`: a person authorizes fhirsync once, in a browser, for an
 * endpoint with auth = login (SMART App Launch standalone launch, authorization code + PKCE);
 * the refresh token goes into the endpoint's credentials file, and `token`, `get` and `sync` use
 * it from then on, unattended.
 *
 * The redirect comes back to a loopback listener on 127.0.0.1 (RFC 8252: a free port, or the one
 * redirect_port / redirect_uri fixes), served with plain sockets and poll: one GET on the
 * registered path ends the wait, other paths (favicon.ico) get a 404. Without a browser on this
 * machine (--no-browser, or no DISPLAY / WAYLAND_DISPLAY) the person opens the URL elsewhere and
 * pastes the URL the browser ended on; both are watched, the first wins. A redirect_uri that is
 * not a loopback URL (a registered https page) can only be pasted. Interrupted, timed out or
 * failed, nothing is written.
 *
 * For scripts and browser drivers the authorization URL is printed to stderr on a line of its
 * own, "authorize: URL", and, when FHIRSYNC_LOGIN_URL_FILE names a file, written there too. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

extern char **environ;

#define REQUEST_MAX 8192
#define PASTE_MAX 8192

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
    fhirsync_cancel();
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: fhirsync login --endpoint NAME [options]\n"
            "\n"
            "Authorize fhirsync once, in a browser, for an endpoint with auth = login (SMART App\n"
            "Launch, authorization code with PKCE). The refresh token is kept in the endpoint's\n"
            "credentials file (mode 0600); token, get and sync use it from then on.\n"
            "\n"
            "The browser comes back to a listener on 127.0.0.1 (a free port, or redirect_port /\n"
            "redirect_uri). With --no-browser, or without a display, open the printed URL on\n"
            "any machine and paste the URL the browser ended on (the address bar) here.\n"
            "\n"
            "options:\n"
            "  --no-browser         do not start a browser; also read the final URL from stdin\n"
            "  --timeout SECONDS    how long to wait for the login (default 300)\n"
            "\n"
            "The authorization URL is printed to stderr as 'authorize: URL' (and written to the\n"
            "file FHIRSYNC_LOGIN_URL_FILE names, if set).\n"
            "\n");
    cli_print_common_help(out);
}

/* ---- the redirect URI ------------------------------------------------------------------------ */

typedef struct redirect {
    char uri[2048];
    char path[1024];
    bool loopback; /* served by the listener */
    int port;      /* 0: any */
} redirect;

/* Split a loopback http URI (127.0.0.1 or localhost) into port and path; false for others. */
static bool parse_loopback(const char *uri, redirect *r)
{
    const char *rest;
    if (strncasecmp(uri, "http://127.0.0.1", 16) == 0)
        rest = uri + 16;
    else if (strncasecmp(uri, "http://localhost", 16) == 0)
        rest = uri + 16;
    else
        return false;
    long port = 80;
    if (*rest == ':') {
        char *end;
        port = strtol(rest + 1, &end, 10);
        if (end == rest + 1 || port < 1 || port > 65535)
            return false;
        rest = end;
    }
    if (*rest && *rest != '/')
        return false;
    size_t len = strcspn(rest, "?");
    if (rest[len] || len >= sizeof r->path)
        return false; /* a query in the registered URI: paste only */
    snprintf(r->path, sizeof r->path, "%.*s", (int)len, len ? rest : "/");
    r->port = (int)port;
    r->loopback = true;
    return true;
}

static int listen_loopback(int port, int *bound_port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 8) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    *bound_port = ntohs(sa.sin_port);
    return fd;
}

/* ---- the browser's request ------------------------------------------------------------------- */

static void respond(int fd, int status, const char *title, const char *text)
{
    char body[1024], head[256];
    int blen = snprintf(body, sizeof body,
                        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>fhirsync: %s"
                        "</title></head><body><h1>%s</h1><p>%s</p></body></html>\n",
                        title, title, text);
    int hlen = snprintf(head, sizeof head,
                        "HTTP/1.1 %d %s\r\nContent-Type: text/html; charset=utf-8\r\n"
                        "Content-Length: %d\r\nCache-Control: no-store\r\n"
                        "Referrer-Policy: no-referrer\r\nConnection: close\r\n\r\n",
                        status,
                        status == 200   ? "OK"
                        : status == 404 ? "Not Found"
                                        : "Bad Request",
                        blen);
    if (write(fd, head, (size_t)hlen) < 0 || write(fd, body, (size_t)blen) < 0) {
        /* the browser went away: nothing to tell it */
    }
}

/* Read one request's head (bounded in size and time). The target into `target`; false when it is
 * not a GET request line. */
static bool read_request(int fd, char *target, size_t size)
{
    char buf[REQUEST_MAX];
    size_t len = 0;
    int64_t deadline = (int64_t)time(NULL) + 10;
    while (len < sizeof buf - 1) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int64_t left = deadline - (int64_t)time(NULL);
        if (left <= 0 || poll(&p, 1, (int)left * 1000) <= 0)
            break;
        ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n"))
            break;
    }
    buf[len] = '\0';
    if (strncmp(buf, "GET ", 4) != 0)
        return false;
    size_t tlen = strcspn(buf + 4, " \r\n");
    if (tlen == 0 || tlen >= size)
        return false;
    memcpy(target, buf + 4, tlen);
    target[tlen] = '\0';
    return true;
}

/* ---- printing -------------------------------------------------------------------------------- */

static bool scope_has(const char *list, const char *token)
{
    size_t n = strlen(token);
    for (const char *p = list; p && *p;) {
        size_t len = strcspn(p, " ");
        if (len == n && strncmp(p, token, n) == 0)
            return true;
        p += len;
        p += strspn(p, " ");
    }
    return false;
}

static void print_summary(const fhirsync_login *login, const char *name)
{
    const char *granted = fhirsync_login_granted_scope(login);
    const char *asked = fhirsync_login_requested_scope(login);
    printf("logged in: [endpoint %s]\n", name);
    printf("  credentials:     %s\n", fhirsync_login_credentials_path(login));
    printf("  requested scope: %s\n", asked);
    printf("  granted scope:   %s\n", granted ? granted : "(as requested)");
    printf("  patient:         %s\n",
           fhirsync_login_patient(login) ? fhirsync_login_patient(login) : "(none)");
    printf("  fhirUser:        %s\n", fhirsync_login_fhir_user(login)
                                          ? fhirsync_login_fhir_user(login)
                                          : "(none; from the id_token, unverified)");
    printf("  refresh token:   %s\n", fhirsync_login_has_refresh_token(login) ? "yes" : "no");
    /* what was asked and not granted */
    char missing[1024] = "";
    for (const char *p = asked; granted && p && *p;) {
        size_t len = strcspn(p, " ");
        char tok[256];
        snprintf(tok, sizeof tok, "%.*s", (int)(len < 255 ? len : 255), p);
        if (!scope_has(granted, tok)) {
            size_t used = strlen(missing);
            snprintf(missing + used, sizeof missing - used, "%s%s", used ? " " : "", tok);
        }
        p += len;
        p += strspn(p, " ");
    }
    if (missing[0])
        fprintf(stderr, "fhirsync: warning: the server granted less than asked; not granted: %s\n",
                missing);
    if (!fhirsync_login_has_refresh_token(login)) {
        char at[32];
        time_t t = (time_t)fhirsync_login_access_expires_at(login);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%SZ", &tm);
        fprintf(stderr,
                "fhirsync: warning: the server sent no refresh token (offline_access %s): this "
                "login works only until the access token expires (%s), so unattended sync "
                "cannot run; ask the EHR to allow offline_access for the app, then log in "
                "again\n",
                granted && !scope_has(granted, "offline_access") ? "not granted" : "ignored", at);
    }
}

/* ---- the command ----------------------------------------------------------------------------- */

static void open_browser(const char *url)
{
    const char *argv[] = {"xdg-open", url, NULL};
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    if (posix_spawnp(&pid, "xdg-open", &actions, NULL, (char *const *)argv, environ) != 0)
        fprintf(stderr, "fhirsync: could not start xdg-open: open the URL yourself\n");
    posix_spawn_file_actions_destroy(&actions);
}

static void write_url_file(const char *url)
{
    const char *path = getenv("FHIRSYNC_LOGIN_URL_FILE");
    if (!path || !*path)
        return;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%s\n", url) < 0 || fclose(f) != 0 || rename(tmp, path) != 0)
        fprintf(stderr, "fhirsync: cannot write FHIRSYNC_LOGIN_URL_FILE %s\n", path);
}

/* Wait for the redirect: the listener and/or stdin, until the deadline. On success *url holds the
 * redirect URL (the caller frees) and *client the browser's connection to answer (or -1). */
static int wait_redirect(int listener, const redirect *r, bool read_stdin, long timeout, char **url,
                         int *client)
{
    *url = NULL;
    *client = -1;
    char paste[PASTE_MAX];
    size_t pasted = 0;
    int64_t deadline = (int64_t)time(NULL) + timeout;
    for (;;) {
        struct pollfd fds[2];
        nfds_t n = 0;
        if (listener >= 0)
            fds[n++] = (struct pollfd){.fd = listener, .events = POLLIN};
        if (read_stdin)
            fds[n++] = (struct pollfd){.fd = 0, .events = POLLIN};
        if (n == 0) {
            fprintf(stderr, "fhirsync: no redirect URL on stdin and nothing else to wait for: "
                            "nothing was written\n");
            return EXIT_AUTH;
        }
        int64_t left = deadline - (int64_t)time(NULL);
        if (interrupted) {
            fprintf(stderr, "fhirsync: login interrupted: nothing was written\n");
            return EXIT_INTERRUPTED;
        }
        if (left <= 0) {
            fprintf(stderr,
                    "fhirsync: no login within %ld s: nothing was written (run "
                    "'fhirsync login' again, or --timeout SECONDS)\n",
                    timeout);
            return EXIT_INTERRUPTED;
        }
        int ready = poll(fds, n, (int)(left > 3600 ? 3600 : left) * 1000);
        if (ready < 0 && errno != EINTR) {
            perror("fhirsync: poll");
            return EXIT_INTERNAL;
        }
        for (nfds_t i = 0; ready > 0 && i < n; i++) {
            if (!fds[i].revents)
                continue;
            if (fds[i].fd == listener) {
                int c = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0)
                    continue;
                char target[REQUEST_MAX];
                if (!read_request(c, target, sizeof target)) {
                    respond(c, 400, "Bad request", "fhirsync expects the login's redirect here.");
                    close(c);
                    continue;
                }
                size_t plen = strcspn(target, "?");
                if (plen != strlen(r->path) || strncmp(target, r->path, plen) != 0) {
                    /* favicon.ico and anything else: not the redirect */
                    respond(c, 404, "Not found", "Not the login's redirect path.");
                    close(c);
                    continue;
                }
                size_t size = strlen(r->uri) + strlen(target + plen) + 1;
                if (!(*url = malloc(size))) {
                    close(c);
                    return EXIT_INTERNAL;
                }
                snprintf(*url, size, "%s%s", r->uri, target + plen);
                *client = c;
                return 0;
            }
            /* stdin: a pasted URL, one line */
            ssize_t got = read(0, paste + pasted, sizeof paste - 1 - pasted);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0) {
                read_stdin = false; /* end of input: the listener may still get it */
                if (pasted == 0)
                    continue;
                got = 0;
                paste[pasted++] = '\n';
            }
            pasted += (size_t)got;
            paste[pasted] = '\0';
            char *nl = strchr(paste, '\n');
            if (!nl && pasted < sizeof paste - 1)
                continue;
            if (nl)
                *nl = '\0';
            char *line = paste + strspn(paste, " \t\r");
            size_t len = strcspn(line, " \t\r");
            line[len] = '\0';
            if (!*line) {
                pasted = 0;
                continue;
            }
            if (!(*url = strdup(line)))
                return EXIT_INTERNAL;
            return 0;
        }
    }
}

int cmd_login(int argc, char **argv)
{
    enum { OPT_NO_BROWSER = 1, OPT_TIMEOUT };
    static const struct option own[] = {{"no-browser", no_argument, NULL, OPT_NO_BROWSER},
                                        {"timeout", required_argument, NULL, OPT_TIMEOUT},
                                        {NULL, 0, NULL, 0}};
    char short_opts[32];
    const struct option *opts = cli_options(own, "", short_opts, sizeof short_opts);
    cli_profile profile = {0};
    bool no_browser = false;
    long timeout = 300;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, short_opts, opts, NULL)) != -1) {
        int handled = cli_profile_option(&profile, opt, optarg, "login");
        if (handled < 0)
            return -handled;
        if (handled)
            continue;
        switch (opt) {
        case OPT_NO_BROWSER: no_browser = true; break;
        case OPT_TIMEOUT: {
            char *end;
            timeout = strtol(optarg, &end, 10);
            if (*end || timeout < 1 || timeout > 86400)
                return cli_usage_error("login", "--timeout expects 1..86400 seconds, not '%s'",
                                       optarg);
            break;
        }
        case 'h': usage(stdout); return 0;
        default: return cli_bad_option("login", argv);
        }
    }
    if (optind < argc)
        return cli_usage_error("login", "unexpected argument '%s'", argv[optind]);
    cli_setup_logging(&profile);

    fhirsync_error err = {0};
    fhirsync_endpoint *ep = NULL;
    fhirsync_login *login = NULL;
    char *url = NULL;
    int listener = -1, client = -1, rc = 0;
    if (cli_profile_resolve(&profile, &ep, &err) != FHIRSYNC_OK) {
        rc = cli_fail(&err);
        goto out;
    }
    const char *name = fhirsync_endpoint_name(ep);
    if (strcmp(fhirsync_endpoint_get(ep, "auth"), "login") != 0) {
        fprintf(stderr,
                "fhirsync: [endpoint %s] uses Backend Services (auth = backend): set auth = login "
                "in its section (or --auth login) to log in as a person\n",
                name);
        rc = EXIT_CONFIG;
        goto out;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    /* the redirect URI, and the listener behind it when it is a loopback one */
    redirect r = {0};
    const char *set_uri = fhirsync_endpoint_get(ep, "redirect_uri");
    const char *set_port = fhirsync_endpoint_get(ep, "redirect_port");
    /* the setting was checked (1..65535) when the profile was read; 0 means "a free port" */
    char *port_end = NULL;
    long port = set_port ? strtol(set_port, &port_end, 10) : 0;
    if (set_port && (*port_end || port < 1 || port > 65535)) {
        fprintf(stderr, "fhirsync: redirect_port %s is not a port number\n", set_port);
        rc = EXIT_CONFIG;
        goto out;
    }
    if (set_uri) {
        snprintf(r.uri, sizeof r.uri, "%s", set_uri);
        parse_loopback(set_uri, &r);
        if (r.loopback && set_port && port != r.port) {
            fprintf(stderr, "fhirsync: redirect_port %s disagrees with redirect_uri %s\n", set_port,
                    set_uri);
            rc = EXIT_CONFIG;
            goto out;
        }
    } else {
        r.loopback = true;
        r.port = (int)port;
        snprintf(r.path, sizeof r.path, "/callback");
    }
    if (r.loopback) {
        int bound = 0;
        listener = listen_loopback(r.port, &bound);
        if (listener < 0) {
            fprintf(stderr, "fhirsync: cannot listen on 127.0.0.1:%d for the redirect: %s\n",
                    r.port, strerror(errno));
            rc = EXIT_IO;
            goto out;
        }
        if (!set_uri)
            snprintf(r.uri, sizeof r.uri, "http://127.0.0.1:%d%s", bound, r.path);
    }
    if (fhirsync_login_start(ep, r.uri, &login, &err) != FHIRSYNC_OK) {
        rc = cli_fail(&err);
        goto out;
    }
    const char *authorize = fhirsync_login_authorize_url(login);
    bool display = (getenv("DISPLAY") && *getenv("DISPLAY")) ||
                   (getenv("WAYLAND_DISPLAY") && *getenv("WAYLAND_DISPLAY"));
    bool browser = !no_browser && display;
    bool read_stdin = !browser || !r.loopback;
    fprintf(stderr, "fhirsync: log in to [endpoint %s] in a browser%s:\n", name,
            browser ? " (opening it now)" : "; open this URL");
    fprintf(stderr, "authorize: %s\n", authorize);
    if (read_stdin)
        fprintf(stderr,
                "fhirsync: %sthen paste here the whole URL the browser ends on (it starts with "
                "%s) and press Enter\n",
                r.loopback ? "if the browser cannot reach this machine, " : "", r.uri);
    fflush(stderr);
    write_url_file(authorize);
    if (browser)
        open_browser(authorize);

    rc = wait_redirect(listener, &r, read_stdin, timeout, &url, &client);
    if (rc != 0)
        goto out;
    if (fhirsync_login_finish(login, url, &err) != FHIRSYNC_OK) {
        if (client >= 0)
            respond(client, 400, "Login failed",
                    "fhirsync could not complete the login; the terminal says why. You can "
                    "close this tab.");
        rc = cli_fail(&err);
        fprintf(stderr, "fhirsync: nothing was written\n");
        goto out;
    }
    if (client >= 0)
        respond(client, 200, "Logged in",
                "fhirsync has its authorization. You can close this tab.");
    print_summary(login, name);
out:
    if (client >= 0)
        close(client);
    if (listener >= 0)
        close(listener);
    free(url);
    fhirsync_login_free(login);
    fhirsync_endpoint_free(ep);
    return rc;
}
