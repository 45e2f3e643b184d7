#!/usr/bin/env bash
# scripts/check-format.sh: checks that every tracked C source and header (git ls-files '*.c'
# '*.h', less the EXCLUDE pattern below) is laid out as .clang-format says. It prints the files
# that drift and exits 1, or exits 0 when none do. `--fix` rewrites the drifting files in place
# instead. The formatter is pinned to clang-format 14, Debian 12's version (scripts/install-deps.sh
# installs it): other versions lay out some constructs differently, so the script refuses them
# instead of reporting false drift. It uses $CLANG_FORMAT if set, else clang-format-14, else
# clang-format. ctest runs it as the `format` test when configured with -DFHIRSYNC_FORMAT_CHECK=ON.
#
#   scripts/check-format.sh           list the drifting files (exit 1 if any)
#   scripts/check-format.sh -v        the same, with clang-format's report of each difference
#   scripts/check-format.sh --fix     reformat the drifting files
set -euo pipefail
cd "$(dirname "$0")/.."

PINNED_MAJOR=14
# generated or vendored C that is not ours to format (an extended regex on the path); none today
EXCLUDE='^$'

mode=check
case "${1:-}" in
"") ;;
-v | --verbose) mode=verbose ;;
--fix) mode=fix ;;
*)
    echo "usage: $0 [-v | --fix]" >&2
    exit 2
    ;;
esac

if [ -n "${CLANG_FORMAT:-}" ]; then
    cf=$CLANG_FORMAT
elif command -v clang-format-$PINNED_MAJOR >/dev/null; then
    cf=clang-format-$PINNED_MAJOR
else
    cf=clang-format
fi
if ! command -v "$cf" >/dev/null; then
    echo "check-format: $cf not found; install Debian's clang-format-$PINNED_MAJOR" \
        "(scripts/install-deps.sh does)" >&2
    exit 2
fi
version=$("$cf" --version)
if ! grep -qE "version $PINNED_MAJOR\.[0-9]+" <<<"$version"; then
    echo "check-format: $cf is \"$version\", but the layout is pinned to clang-format" \
        "$PINNED_MAJOR (Debian 12's): install clang-format-$PINNED_MAJOR or set CLANG_FORMAT" >&2
    exit 2
fi

mapfile -t files < <(git ls-files -- '*.c' '*.h' | grep -vE "$EXCLUDE")
if [ ${#files[@]} -eq 0 ]; then
    echo "check-format: no tracked .c/.h files (not a git checkout?)" >&2
    exit 2
fi

# One run over every file; each difference is reported as "FILE:LINE:COL: error: ...". Sets
# report and drifting.
check() {
    local status=0
    report=$("$cf" --style=file --dry-run -Werror "${files[@]}" 2>&1) || status=$?
    mapfile -t drifting < <(grep -oE '^[^:]+:[0-9]+:[0-9]+: error:' <<<"$report" |
        sed -E 's/:[0-9]+:[0-9]+: error:$//' | sort -u)
    if [ "$status" -ne 0 ] && [ ${#drifting[@]} -eq 0 ]; then
        echo "check-format: $cf failed:" >&2
        echo "$report" >&2
        exit 2
    fi
}
check

if [ "$mode" = fix ]; then
    # clang-format does not always reach its fixed point in one pass (realigned trailing
    # comments), so go on until the check passes
    for _ in 1 2 3; do
        [ ${#drifting[@]} -gt 0 ] || break
        "$cf" --style=file -i "${drifting[@]}"
        printf 'reformatted %s\n' "${drifting[@]}"
        check
    done
fi
if [ ${#drifting[@]} -eq 0 ]; then
    echo "check-format: ${#files[@]} files match .clang-format ($cf, $version)"
    exit 0
fi
[ "$mode" = verbose ] && echo "$report"
for f in "${drifting[@]}"; do
    echo "drifts: $f ($(grep -c "^$f:[0-9]*:[0-9]*: error:" <<<"$report") places)"
done
echo "check-format: ${#drifting[@]} of ${#files[@]} files drift from .clang-format;" \
    "scripts/check-format.sh --fix reformats them (-v shows where)" >&2
exit 1
