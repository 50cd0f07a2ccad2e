#!/bin/sh
# Quick start: install the dependencies, build shmds in _build, and run the
# demo (examples/demo.sh).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
scripts/install-deps.sh
[ -x configure ] || ./autogen.sh
mkdir -p _build
cd _build
[ -f Makefile ] || ../configure -q
make -s -j"$(nproc 2>/dev/null || echo 2)"
exec "$top/examples/demo.sh" "$top/_build/examples"
