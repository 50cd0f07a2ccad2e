#!/bin/sh
# The manual pages: shmds(1) and shmds(7) format without warnings;
# shmds(1) documents every command and exit status the tool has; and
# every function the library exports has a section-3 page (made from the
# headers at build time, so it says what the header says).
set -u
fail=0
tool="$top_builddir/tools/shmds"
command -v man >/dev/null 2>&1 || { echo "man.sh: man(1) is not installed"; exit 77; }
for page in shmds.1 shmds.7; do
    warn=$(MANWIDTH=80 man --warnings -l "$top_srcdir/man/$page" 2>&1 >/dev/null)
    if [ -n "$warn" ]; then echo "FAIL: $page: $warn"; fail=1; else echo "ok: $page formats cleanly"; fi
done
text=$(MANWIDTH=200 man -l "$top_srcdir/man/shmds.1" 2>/dev/null)
# The tool's commands, from its own usage text.
for cmd in $("$tool" --help | sed -n '/^commands:/,/^$/s/^  \([a-z]*\) .*/\1/p'); do
    if printf '%s\n' "$text" | grep -q "^       shmds \[--any-owner\] \[--json\] $cmd"; then
        echo "ok: shmds(1) has $cmd"
    else
        echo "FAIL: shmds(1) does not document '$cmd'"; fail=1
    fi
done
for status in 0 1 2; do
    if printf '%s\n' "$text" | sed -n '/^EXIT STATUS/,/^[A-Z]/p' | grep -q "^       $status "; then
        echo "ok: shmds(1) documents exit status $status"
    else
        echo "FAIL: shmds(1) does not document exit status $status"; fail=1
    fi
done
# Section 3: one page per exported function.
if [ ! -f "$top_builddir/docs/man3.stamp" ]; then
    echo "man.sh: no section-3 pages (doxygen was not found by configure)"
    [ $fail -eq 0 ] && exit 77
    exit 1
fi
missing=0
for sym in $(grep -v '^#' "$top_srcdir/tests/exported-symbols.txt"); do
    p="$top_builddir/docs/man3/$sym.3"
    if [ ! -f "$p" ]; then
        echo "FAIL: no man page for $sym"; missing=1
    elif ! (cd "$top_builddir/docs" && MANWIDTH=200 man -l "man3/$sym.3" 2>/dev/null) | grep -q "$sym *("; then
        echo "FAIL: man page $sym.3 does not document $sym()"; missing=1
    fi
done
[ $missing -eq 0 ] && echo "ok: every exported function has a section-3 page" || fail=1
exit $fail
