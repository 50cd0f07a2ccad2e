#!/bin/sh
# The Python binding's tests (bindings/python/tests, pytest) against the
# library just built: SHMDS_LIBRARY points the package at it, and
# SHMDS_BUILDDIR at the C programs the interoperability tests run.
# Skipped (77) only when there is no python3 with pytest.
set -u
so="$top_builddir/src/.libs/libshmds.so"
if [ ! -f "$so" ]; then
    echo "python.sh: $so not built (static-only build): nothing to load"
    exit 77
fi
if [ -n "${PYTHON:-}" ] && [ "$PYTHON" != : ] && "$PYTHON" -c 'import pytest' 2>/dev/null; then
    set -- "$PYTHON" -m pytest
elif command -v pytest-3 >/dev/null 2>&1; then
    set -- pytest-3
else
    echo "python.sh: no python3 with pytest (Debian: apt-get install python3-pytest)"
    exit 77
fi
SHMDS_LIBRARY=$so
SHMDS_BUILDDIR=$top_builddir
PYTHONPATH="$top_srcdir/bindings/python${PYTHONPATH:+:$PYTHONPATH}"
PYTHONDONTWRITEBYTECODE=1 # the source tree stays clean (and may be read-only)
export SHMDS_LIBRARY SHMDS_BUILDDIR PYTHONPATH PYTHONDONTWRITEBYTECODE
# A sanitizer build's library needs the ASan runtime loaded first, which
# the interpreter was not linked with; Python's own allocations are not
# ours to leak-check.
if [ -n "${SHMDS_SAN_CFLAGS:-}" ]; then
    rt=
    for f in libasan.so "libclang_rt.asan-$(uname -m).so"; do
        p=$(${CC:-cc} -print-file-name="$f")
        [ -f "$p" ] && { rt=$p; break; }
    done
    [ -n "$rt" ] || { echo "python.sh: sanitizer build, but no ASan runtime found"; exit 1; }
    LD_PRELOAD="$rt${LD_PRELOAD:+:$LD_PRELOAD}"
    ASAN_OPTIONS="detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
    export LD_PRELOAD ASAN_OPTIONS
fi
exec "$@" -q -p no:cacheprovider "$top_srcdir/bindings/python/tests"
