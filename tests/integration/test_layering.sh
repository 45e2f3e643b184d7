#!/usr/bin/env bash
# integration/test_layering.sh: the layering rules that a grep can check.
#   - The store owns the schema. No SQL text (SELECT, INSERT, UPDATE, DELETE, CREATE) in the
#     library outside src/lib/store/: the other modules call the store's typed functions
#     (include/fhirsync/store.h for users, src/lib/store/store_lib.h for the library).
#   - The store's internals (store_internal.h: the handle and the engines; shared.h: what its files
#     share) are included by src/lib/store/ only; the rest of src/ goes through store_lib.h.
#   - The store depends on core and json only (and its own headers, and the public API).
#   - The command-line tool uses the public API only: src/cli includes fhirsync/*.h and its own
#     headers, never a library-internal one.
source "$(dirname "$0")/lib.sh"
cd "$FHIRSYNC_SOURCE_DIR"
LEAKS=$(grep -rnE '"[[:space:]]*(SELECT|INSERT|UPDATE|DELETE FROM|CREATE (TABLE|INDEX|VIEW))[[:space:]]' \
    src/lib --include='*.c' --include='*.h' | grep -v '^src/lib/store/' || true)
[ -z "$LEAKS" ] && ok "no SQL text in the library outside src/lib/store/" ||
    not_ok "SQL outside the store module: $LEAKS"

INTERNALS=$(grep -rnE '#[[:space:]]*include[[:space:]]+"store/(store_int|shared)\.h"' src \
    --include='*.c' --include='*.h' | grep -v '^src/lib/store/' || true)
[ -z "$INTERNALS" ] && ok "the store's internal headers are included by src/lib/store/ only" ||
    not_ok "store internals included outside the store: $INTERNALS"

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
