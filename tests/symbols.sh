#!/bin/sh
# The shared library exports exactly the public API listed in
# tests/exported-symbols.txt: nothing internal leaks, nothing public is lost.
set -eu
so="$top_builddir/src/.libs/libshmds.so"
[ -f "$so" ] || { echo "symbols.sh: $so not built (static-only build?)"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
${NM:-nm} -D --defined-only "$so" | awk '{print $3}' | grep -v '^_' | LC_ALL=C sort >"$tmp/actual"
grep -v '^#' "$top_srcdir/tests/exported-symbols.txt" | grep . | LC_ALL=C sort >"$tmp/expected"
if ! diff -u "$tmp/expected" "$tmp/actual"; then
    echo "symbols.sh: exported symbols differ from tests/exported-symbols.txt (- listed, + exported)"
    exit 1
fi
echo "symbols.sh: $(wc -l <"$tmp/actual") symbols, as listed"
# libshmds-redis (contrib/redis), when it is built: its own list.
so="$top_builddir/contrib/redis/.libs/libshmds-redis.so"
[ -f "$so" ] || exit 0
${NM:-nm} -D --defined-only "$so" | awk '{print $3}' | grep -v '^_' | LC_ALL=C sort >"$tmp/actual"
grep -v '^#' "$top_srcdir/tests/exported-symbols-redis.txt" | grep . | LC_ALL=C sort >"$tmp/expected"
if ! diff -u "$tmp/expected" "$tmp/actual"; then
    echo "symbols.sh: libshmds-redis exports differ from tests/exported-symbols-redis.txt"
    exit 1
fi
echo "symbols.sh: libshmds-redis: $(wc -l <"$tmp/actual") symbols, as listed"
