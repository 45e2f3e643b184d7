#!/usr/bin/env bash
# integration/test_layering.sh: the store owns the schema. No SQL text (SELECT, INSERT, UPDATE,
# DELETE, CREATE) in the library outside src/lib/store/: the other modules call the store's typed
# functions (include/fhirsync/store.h for users, src/lib/store/store_lib.h for the library).
source "$(dirname "$0")/lib.sh"
cd "$FHIRSYNC_SOURCE_DIR"
LEAKS=$(grep -rnE '"[[:space:]]*(SELECT|INSERT|UPDATE|DELETE FROM|CREATE (TABLE|INDEX|VIEW))[[:space:]]' \
    src/lib --include='*.c' --include='*.h' | grep -v '^src/lib/store/' || true)
[ -z "$LEAKS" ] && ok "no SQL text in the library outside src/lib/store/" ||
    not_ok "SQL outside the store module: $LEAKS"
finish
