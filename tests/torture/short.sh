#!/bin/sh
# The short crash-torture run of `make check` (a few hundred kills, fixed
# seed; a checkpoint every 10 kills re-creates the map small, so the run
# goes through its first growth often); `make torture` runs the long one.
exec "${top_builddir:-.}/tests/torture/torture" --seed 7 --kills 300 --check-every 10 "$@"
