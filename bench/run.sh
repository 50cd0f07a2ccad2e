#!/bin/sh
# make bench: run the map benchmark with the Boost baseline when it was built.
set -eu
n=${BENCH_N:-1000000}
b="$top_builddir/bench"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
if [ -x "$b/bench_map_boost" ]; then
    "$b/bench_map_boost" "$n" >"$tmp"
fi
"$b/bench_map" "$n" "$tmp"
