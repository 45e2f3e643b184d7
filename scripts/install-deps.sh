#!/usr/bin/env bash
# Installs what building and testing fhirsync needs on Debian 12: the -dev packages of the
# libraries it links, the tools the tests use (PostgreSQL server, valgrind, clang for the fuzz
# targets, clang-format 14 for the format check, node/npm for the independent JOSE/OAuth peers,
# Debian's chromium for the headless-browser login test), and the npm peers from their lockfile
# (puppeteer-core drives that chromium; it never downloads a browser of its own).
# Installs only what is missing; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config git ca-certificates curl openssl
          libcurl4-openssl-dev libssl-dev libjansson-dev libsqlite3-dev libpq-dev
          libmicrohttpd-dev libinih-dev libcmocka-dev libsystemd-dev zlib1g-dev
          postgresql valgrind clang clang-format-14 nodejs npm time bc sqlite3 chromium python3)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node and npm may come from elsewhere than Debian's packages: accept them when on PATH
if command -v node >/dev/null && command -v npm >/dev/null; then
    missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ! -d tests/interop/node_modules ] || [ tests/interop/package-lock.json -nt tests/interop/node_modules ]; then
    echo "install-deps: npm ci (test peers: jose, oidc-provider, puppeteer-core)"
    (cd tests/interop && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi
