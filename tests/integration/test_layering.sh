#!/usr/bin/env bash
# integration/test_layering.sh: the layering rules that a grep can check.
#   - The store owns the schema. No SQL text (SELECT, INSERT, UPDATE, DELETE, CREATE) in the
#     library outside src/lib/store/: the other modules call the store's typed functions
#     (include/fhirsync/store.h for users, src/lib/store/store_internal.h for the library).
#   - A module's private headers (*_private.h: the store's handle and engines, what its files
#     share, JOSE's tables, the curl front ends' common parts) are included by that module only;
#     the rest of src/ goes through the module's other headers (store/store_internal.h...).
#   - The store depends on core and json only (and its own headers, and the public API).
#   - The command-line tool uses the public API only: src/cli includes fhirsync/*.h and its own
#     headers, never a library-internal one.
source "$(dirname "$0")/lib.sh"
cd "$FHIRSYNC_SOURCE_DIR"
LEAKS=$(grep -rnE '"[[:space:]]*(SELECT|INSERT|UPDATE|DELETE FROM|CREATE (TABLE|INDEX|VIEW))[[:space:]]' \
    src/lib --include='*.c' --include='*.h' | grep -v '^src/lib/store/' || true)
[ -z "$LEAKS" ] && ok "no SQL text in the library outside src/lib/store/" ||
    not_ok "SQL outside the store module: $LEAKS"

# A header named *_private.h belongs to its module's files (and the unit tests and benchmarks
# that reach inside it); the rest of the library uses the module's other headers.
INTERNALS=""
while IFS= read -r hit; do
    file=${hit%%:*}
    header=$(sed -E 's/.*#[[:space:]]*include[[:space:]]+"([^"]+)".*/\1/' <<<"$hit")
    [ "${file#src/lib/${header%%/*}/}" != "$file" ] || INTERNALS="$INTERNALS $file:$header"
done < <(grep -rHE '#[[:space:]]*include[[:space:]]+"[a-z_]+/[a-z_]+_private\.h"' src \
    --include='*.c' --include='*.h')
PRIVATES=$(find src/lib -name '*_private.h' | wc -l)
[ "$PRIVATES" -ge 4 ] && [ -z "$INTERNALS" ] &&
    ok "the $PRIVATES *_private.h headers are included by their own module only" ||
    not_ok "private headers included outside their module ($PRIVATES found):$INTERNALS"

UPHILL=$(grep -nE '#[[:space:]]*include[[:space:]]+"' src/lib/store/*.c src/lib/store/*.h |
    grep -vE '"(core|json|store|fhirsync)/' || true)
[ -z "$UPHILL" ] && ok "the store includes core, json, its own and public headers only" ||
    not_ok "the store reaches up: $UPHILL"

PRIVATE=""
while IFS= read -r hit; do
    file=${hit%%:*}
    header=$(sed -E 's/.*#[[:space:]]*include[[:space:]]+"([^"]+)".*/\1/' <<<"$hit")
    case $header in
    fhirsync/*) ;;
    *) [ -e "src/cli/$header" ] || PRIVATE="$PRIVATE $file:$header" ;;
    esac
done < <(grep -HE '#[[:space:]]*include[[:space:]]+"' src/cli/*.c src/cli/*.h)
[ -z "$PRIVATE" ] && ok "src/cli includes only the public API and its own headers" ||
    not_ok "src/cli includes library internals:$PRIVATE"
finish
