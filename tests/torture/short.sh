#!/bin/sh
# The short crash-torture run of `make check` (a few hundred kills, fixed
# seed); `make torture` runs the long one.
exec "${top_builddir:-.}/tests/torture/torture" --seed 7 --kills 300 --check-every 50 "$@"
