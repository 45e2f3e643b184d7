#!/usr/bin/env bash
# scripts/pg-test-server.sh: a throwaway PostgreSQL cluster for tests (Debian's postgresql
# binaries). It lives in one directory: the data, the log and the unix socket; it listens on no
# TCP port unless asked (--tcp: 127.0.0.1 on a free port), runs with fsync off (nothing in it is
# worth a disk flush), trusts local connections, and prints its connection URL.
#
#   scripts/pg-test-server.sh start [DIR] [--tcp]   start (or reuse a running one); print the URL
#   scripts/pg-test-server.sh url [DIR]             print the URL of a running cluster
#   scripts/pg-test-server.sh stop [DIR]            stop it and remove DIR
#
# DIR defaults to ${TMPDIR:-/tmp}/fhirsync-pg. PostgreSQL refuses to run as root, so as root the
# cluster belongs to the `postgres` user (runuser, or su when runuser is missing), who must be
# able to reach DIR: its parent directories must not be private (0700) to root.
# Idempotent: `start` on a running cluster prints its URL; `start` over the leftovers of a
# crashed run (stale postmaster.pid, half-made directory) cleans them up first; `stop` on
# nothing succeeds. PG_MAX_CONNECTIONS (default 60) sets max_connections for a new cluster (the
# scale benchmark runs dozens of syncs at once, two sessions each).
set -euo pipefail

cmd=${1:-}
dir=${2:-${TMPDIR:-/tmp}/fhirsync-pg}
tcp=false
for arg in "$@"; do [ "$arg" = "--tcp" ] && tcp=true; done
[ "$dir" = "--tcp" ] && dir=${TMPDIR:-/tmp}/fhirsync-pg
dir=$(realpath -m "$dir") # the server runs elsewhere: relative paths would not resolve
dbname=fhirsync_test

die() { echo "pg-test-server: $*" >&2; exit 1; }

find_bin() {
    local d
    for d in ${PG_BIN:-} $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [ -x "$d/initdb" ] && { echo "$d"; return; }
    done
    command -v initdb >/dev/null && { dirname "$(command -v initdb)"; return; }
    die "no PostgreSQL server binaries (apt-get install postgresql)"
}

# as_owner CMD...: run as the cluster's owner (postgres when we are root)
as_owner() {
    if [ "$(id -u)" -ne 0 ]; then
        "$@"
    elif command -v runuser >/dev/null; then
        runuser -u postgres -- "$@"
    else
        su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
    fi
}

url_of() {
    local port
    port=$(cat "$dir/port" 2>/dev/null) || die "no cluster in $dir"
    if [ -f "$dir/tcp" ]; then
        echo "postgresql://postgres@127.0.0.1:$port/$dbname"
    else
        echo "postgresql://postgres@/$dbname?host=$dir&port=$port"
    fi
}

running() {
    [ -f "$dir/data/postmaster.pid" ] &&
        as_owner "$BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

free_port() {
    local port
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "no free TCP port found"
}

stop_cluster() {
    if [ -d "$dir/data" ] && running; then
        as_owner "$BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    # a postmaster whose pid file is gone: find it by its data directory
    local pid
    for pid in $(pgrep -f "postgres.*-D $dir/data" 2>/dev/null || true); do
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$dir"
}

start_cluster() {
    if [ -d "$dir" ] && running; then
        url_of
        return
    fi
    stop_cluster # leftovers of an earlier run
    mkdir -p "$dir"
    chmod 700 "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    as_owner test -w "$dir" ||
        die "$dir is not reachable by the postgres user (a parent directory is private?)"
    local port=5432
    if $tcp; then
        port=$(free_port)
        touch "$dir/tcp"
    fi
    echo "$port" >"$dir/port"
    as_owner "$BIN/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --locale=C \
        --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    local listen="''"
    $tcp && listen=127.0.0.1
    as_owner "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=$listen -c port=$port -c unix_socket_directories=$dir \
            -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
            -c max_connections=${PG_MAX_CONNECTIONS:-60} -c shared_buffers=128MB" \
        start >/dev/null || { tail -20 "$dir/server.log" >&2; die "the server did not start"; }
    as_owner "$BIN/createdb" -h "$dir" -p "$port" -U postgres "$dbname" ||
        die "createdb failed"
    url_of
}

BIN=$(find_bin)
case "$cmd" in
start) start_cluster ;;
stop) stop_cluster ;;
url) running || die "no running cluster in $dir"; url_of ;;
*) echo "usage: $0 start|url|stop [DIR] [--tcp]" >&2; exit 2 ;;
esac
