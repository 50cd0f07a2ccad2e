#!/bin/sh
# The example programs, run as a user would run them.
set -u
ex="$top_builddir/examples"
name="/shmds-ex-$$"
fail=0
trap '"$ex/unlink" "$name" 2>/dev/null' EXIT

check() { # check WHAT EXPECTED-STATUS COMMAND...
    what=$1 want=$2; shift 2
    out=$("$@" 2>&1); got=$?
    if [ "$got" -ne "$want" ]; then
        echo "FAIL: $what: exit $got, want $want: $out"; fail=1
    else
        echo "ok: $what"
    fi
    last_out=$out
}

check "usage text" 2 "$ex/create"
check "create" 0 "$ex/create" "$name" 1m
check "create again is refused" 1 "$ex/create" "$name" 1m
case $last_out in *"File exists"*|*EEXIST*) ;; *) echo "FAIL: EEXIST not reported: $last_out"; fail=1;; esac
check "bad name" 1 "$ex/create" noslash 1m
check "jobs usage" 2 "$ex/jobs"
check "jobs before init" 1 "$ex/jobs" "$name" ls
check "jobs init" 0 "$ex/jobs" "$name" init
check "jobs add 1" 0 "$ex/jobs" "$name" add "wash the car"
check "jobs add 2" 0 "$ex/jobs" "$name" add "feed the cat"
check "jobs ls" 0 "$ex/jobs" "$name" ls
[ "$last_out" = "wash the car
feed the cat" ] || { echo "FAIL: jobs ls printed: $last_out"; fail=1; }
check "jobs take" 0 "$ex/jobs" "$name" take
[ "$last_out" = "wash the car" ] || { echo "FAIL: jobs take printed: $last_out"; fail=1; }
check "jobs take 2" 0 "$ex/jobs" "$name" take
check "jobs take empty" 3 "$ex/jobs" "$name" take
check "unlink" 0 "$ex/unlink" "$name"
check "unlink twice" 1 "$ex/unlink" "$name"

exit $fail
