#!/usr/bin/env bash
# integration/test_module_deps.sh: the library's layering, checked on the tree and on the built
# objects. (1) Module level: the `#include "MODULE/..."` edges between the folders of src/lib run
# downhill only, as HACKING.md's map says (core depends on nothing; store on core and json only;
# nothing below sync knows the store). (2) File level: no two files of the library call each
# other, directly or round a longer loop: the symbols each object file defines and uses (nm)
# give a call graph that must have a topological order (tsort reports every loop it finds).
source "$(dirname "$0")/lib.sh"
cd "$FHIRSYNC_SOURCE_DIR/src/lib"

# What each module may include besides itself and the public headers (fhirsync/).
declare -A ALLOWED=(
    [core]=""
    [json]="core"
    [http]="core"
    [config]="core"
    [jose]="core json"
    [store]="core json"
    [view]="core json"
    [auth]="core json jose http config"
    [fhir]="core json http config auth"
    [bulk]="core json http config auth fhir"
    [doctor]="core json jose http config auth fhir bulk"
    [sync]="core json http config auth fhir bulk store"
)
for dir in */; do
    mod=${dir%/}
    [ -n "${ALLOWED[$mod]+set}" ] || { not_ok "src/lib/$mod is not in this test's map: add it"; continue; }
    bad=""
    for f in "$mod"/*.[ch]; do
        while read -r dep; do
            [ "$dep" = "$mod" ] || [ "$dep" = fhirsync ] && continue
            case " ${ALLOWED[$mod]} " in *" $dep "*) ;; *) bad="$bad $f->$dep" ;; esac
        done < <(sed -n 's,^#include "\([a-z_]*\)/.*,\1,p' "$f")
    done
    [ -z "$bad" ] && ok "$mod includes only: ${ALLOWED[$mod]:-(nothing)}" ||
        not_ok "$mod reaches up:$bad"
done

OBJ_DIR="$FHIRSYNC_BUILD_DIR/CMakeFiles/fhirsync_obj.dir/src/lib"
if [ ! -d "$OBJ_DIR" ]; then
    not_ok "no object files under $OBJ_DIR (is the library target still fhirsync_obj?)"
    finish
fi
cd "$OBJ_DIR"
while read -r obj; do
    f=${obj#./}
    f=${f%.o}
    nm "$obj" | awk -v f="$f" '$2 ~ /^[TDBRC]$/ {print "D", $3, f} $1 == "U" {print "U", $2, f}'
done < <(find . -name '*.o' | sort) > "$TMP/symbols"
awk '$1 == "D" {def[$2] = $3; next}
     {use[NR] = $2 " " $3}
     END {for (i in use) {split(use[i], u, " "); d = def[u[1]];
                          if (d != "" && d != u[2]) print u[2], d}}' "$TMP/symbols" |
    sort -u > "$TMP/edges"
files=$(awk '{print $3}' "$TMP/symbols" | sort -u | wc -l)
edges=$(wc -l < "$TMP/edges")
[ "$files" -gt 40 ] && [ "$edges" -gt 100 ] && ok "call graph read: $files files, $edges edges" ||
    not_ok "call graph too small to mean anything: $files files, $edges edges"
if tsort "$TMP/edges" > /dev/null 2> "$TMP/loops"; then
    ok "no call cycle between the library's files"
else
    not_ok "call cycles between files (each loop's members):"
    grep -v 'input contains a loop' "$TMP/loops" | sed 's/^tsort: /    /'
    # name the calls of each two-file loop, to say what to move
    awk '{print $1, $2}' "$TMP/edges" | while read -r a b; do
        grep -qx "$b $a" "$TMP/edges" && [[ "$a" < "$b" ]] && echo "    $a <-> $b"
    done
fi
finish
