#!/usr/bin/env bash
# tests/integration/test_install.sh: the installed tree is usable. Configures and builds the
# source tree afresh (no tests, no benchmarks, -O0: a few seconds) for prefix /usr with the
# multiarch libdir (lib/<triplet>), installs it with DESTDIR into a temp dir, and then, against
# that tree only: checks the SONAME and the paths fhirsync.pc gives, builds examples/ twice (with
# pkg-config, PKG_CONFIG_SYSROOT_DIR in DESTDIR; and with CMake find_package(fhirsync),
# CMAKE_PREFIX_PATH in DESTDIR), checks the header's version against the library's, and runs
# examples/list_patients from each build (LD_LIBRARY_PATH in DESTDIR) against the installed
# sandbox with a key made by the installed CLI. A wrong .pc or CMake package fails a build here.
source "$(dirname "$0")/lib.sh"

SRC=$FHIRSYNC_SOURCE_DIR
clean_fhirsync_env
TRIPLET=$(gcc -print-multiarch 2>/dev/null || true)
[ -n "$TRIPLET" ] || TRIPLET=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
LIBDIR=lib/$TRIPLET
D=$TMP/destdir
B=$TMP/build

# ---- configure, build, install ---------------------------------------------------------------
step() { # step DESCRIPTION LOG -- command...: run it; on failure show the log's tail and stop
    local what=$1 log=$2
    shift 3
    if "$@" >"$log" 2>&1; then
        ok "$what"
    else
        not_ok "$what"
        tail -40 "$log"
        finish || true
        exit 1
    fi
}
step "configure for prefix /usr, libdir $LIBDIR" "$TMP/configure.log" -- \
    cmake -S "$SRC" -B "$B" -DCMAKE_BUILD_TYPE= -DFHIRSYNC_WERROR=ON -DFHIRSYNC_TESTS=OFF \
    -DFHIRSYNC_BENCH=OFF -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_INSTALL_LIBDIR="$LIBDIR"
step "build" "$TMP/build.log" -- cmake --build "$B" -j2
step "install with DESTDIR" "$TMP/install.log" -- env DESTDIR="$D" cmake --install "$B"

# ---- what was installed ------------------------------------------------------------------------
for f in "$LIBDIR/libfhirsync.so" "$LIBDIR/pkgconfig/fhirsync.pc" \
    "$LIBDIR/cmake/fhirsync/fhirsyncConfig.cmake" \
    "$LIBDIR/cmake/fhirsync/fhirsyncConfigVersion.cmake" include/fhirsync/fhirsync.h \
    include/fhirsync/version.h bin/fhirsync bin/fhirsync-sandbox; do
    if [ -e "$D/usr/$f" ]; then ok "installed /usr/$f"; else not_ok "missing /usr/$f"; fi
done
SONAME=$(readelf -d "$D/usr/$LIBDIR/libfhirsync.so" |
    sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
expect_match "$SONAME" '^libfhirsync\.so\.[0-9]+$' \
    "the library's SONAME is libfhirsync.so.N ($SONAME)"
if [ -e "$D/usr/$LIBDIR/$SONAME" ]; then ok "the SONAME link exists"; else
    not_ok "no $LIBDIR/$SONAME"; fi
# the ABI is what the headers declare (docs/abi.md): every exported symbol is a fhirsync_ name
# that an installed header declares
EXPORTED=$(nm -D --defined-only "$D/usr/$LIBDIR/libfhirsync.so" | awk '{print $3}')
expect_match "$EXPORTED" '^fhirsync_' "the library exports fhirsync_ symbols"
OTHER=$(grep -v '^fhirsync_' <<<"$EXPORTED" || true)
expect_match "${OTHER:-none}" '^none$' "it exports nothing else"
UNDECLARED=$(comm -23 <(sort -u <<<"$EXPORTED") \
    <(grep -ohE '\bfhirsync_[a-z0-9_]+' "$D"/usr/include/fhirsync/*.h | sort -u))
expect_match "${UNDECLARED:-none}" '^none$' "every exported symbol is declared in a public header"
export LD_LIBRARY_PATH="$D/usr/$LIBDIR"

# ---- pkg-config -------------------------------------------------------------------------------
export PKG_CONFIG_PATH="$D/usr/$LIBDIR/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$D"
# the paths as written (pkgconf prefixes variables with the sysroot, too)
expect_match "$(PKG_CONFIG_SYSROOT_DIR= pkg-config --variable=libdir fhirsync)" "^/usr/$LIBDIR\$" \
    "fhirsync.pc: libdir is /usr/$LIBDIR"
expect_match "$(PKG_CONFIG_SYSROOT_DIR= pkg-config --variable=includedir fhirsync)" \
    '^/usr/include$' "fhirsync.pc: includedir is /usr/include"
expect_match "$(pkg-config --modversion fhirsync)" \
    "^$(sed -n 's/^project(fhirsync VERSION \([0-9.]*\).*/\1/p' "$SRC/CMakeLists.txt")\$" \
    "fhirsync.pc: the project's version"
STATIC_LIBS=$(pkg-config --static --libs fhirsync)
for lib in -lcurl -lcrypto -ljansson -linih -lsqlite3 -lpq -lm; do
    expect_match "$STATIC_LIBS" "(^| )$lib( |\$)" "pkg-config --static names $lib"
done
CFLAGS_PC=$(pkg-config --cflags fhirsync)
LIBS_PC=$(pkg-config --libs fhirsync)
expect_match "$LIBS_PC" "(^| )-L$D/usr/$LIBDIR( |\$)" "pkg-config --libs: -L in DESTDIR's libdir"

mkdir -p "$TMP/pc"
# shellcheck disable=SC2086 # word splitting of the flags is meant
step "examples built with pkg-config" "$TMP/pc.log" -- \
    cc -std=c11 -Wall -Wextra -Werror $CFLAGS_PC "$SRC/examples/list_patients.c" \
    -o "$TMP/pc/example_list_patients" $LIBS_PC

# the header and the library agree on the version
cat >"$TMP/version.c" <<'EOF'
#include <stdio.h>
#include <string.h>
#include <fhirsync/fhirsync.h>
int main(void)
{
    printf("%s %s\n", FHIRSYNC_VERSION, fhirsync_version());
    return strcmp(FHIRSYNC_VERSION, fhirsync_version()) != 0;
}
EOF
# shellcheck disable=SC2086
step "a version check built with pkg-config" "$TMP/version.log" -- \
    cc -std=c11 -Wall -Wextra -Werror $CFLAGS_PC "$TMP/version.c" -o "$TMP/pc/version" $LIBS_PC
expect_exit 0 "the header's version is the library's" -- "$TMP/pc/version"
expect_match "$OUT" '^[0-9]+\.[0-9]+\.[0-9]+ [0-9]+\.[0-9]+\.[0-9]+$' "the version prints"
unset PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR

# ---- CMake find_package -----------------------------------------------------------------------
step "examples configured with find_package(fhirsync)" "$TMP/cmake-configure.log" -- \
    cmake -S "$SRC/examples" -B "$TMP/cm" -DCMAKE_PREFIX_PATH="$D/usr" \
    -DCMAKE_FIND_ROOT_PATH="$D" -DCMAKE_C_FLAGS="-Wall -Wextra -Werror"
expect_match "$(grep '^fhirsync_DIR:' "$TMP/cm/CMakeCache.txt")" \
    "=$D/usr/$LIBDIR/cmake/fhirsync\$" "find_package found the package in DESTDIR"
step "examples built with find_package(fhirsync)" "$TMP/cmake-build.log" -- \
    cmake --build "$TMP/cm" -j2

# ---- run them against the installed sandbox -----------------------------------------------------
for exe in "$TMP/pc/example_list_patients" "$TMP/cm/example_list_patients"; do
    expect_match "$(ldd "$exe")" "libfhirsync\\.so\\.[0-9]+ => $D/usr/$LIBDIR/" \
        "${exe#"$TMP"/} loads libfhirsync from DESTDIR"
done
"$D/usr/bin/fhirsync-sandbox" --port 0 --ready-file "$TMP/ready.json" --patients 3 \
    >"$TMP/sandbox.log" 2>&1 &
PIDS+=($!)
wait_for_file "$TMP/ready.json"
"$D/usr/bin/fhirsync" keygen --out "$TMP/keys" >/dev/null
printf '{"jwks":%s,"scope":"system/*.read"}' "$(cat "$TMP/keys/jwks.json")" >"$TMP/register.json"
curl -sf -X POST -H 'Content-Type: application/json' --data @"$TMP/register.json" \
    "$(json_get "$TMP/ready.json" j.register_url)" >"$TMP/client.json"
export FHIRSYNC_BASE_URL FHIRSYNC_CLIENT_ID FHIRSYNC_KEY_FILE
FHIRSYNC_BASE_URL=$(json_get "$TMP/ready.json" j.base_url)
FHIRSYNC_CLIENT_ID=$(json_get "$TMP/client.json" j.client_id)
FHIRSYNC_KEY_FILE=$(ls "$TMP"/keys/*.key.pem)
for exe in "$TMP/pc/example_list_patients" "$TMP/cm/example_list_patients"; do
    expect_exit 0 "${exe#"$TMP"/} runs" -- "$exe" 2
    expect_match "$OUT" '^pat-0 ' "${exe#"$TMP"/}: the first patient is listed"
    expect_match "$OUT" '^2 patients$' "${exe#"$TMP"/}: two patients"
done

finish
