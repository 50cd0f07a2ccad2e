#!/bin/sh
# The writer/reader exercise: 50 MB of random data through a shmds queue,
# writer and reader in separate processes, compared byte for byte; then the
# same with small blocks, the reader started first, and the error cases.
set -u
ex="$top_builddir/examples"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/shmds-xfr.XXXXXX") || exit 1
name="/shmds-xfr-test-$$"
fail=0
trap '"$ex/unlink" "$name" 2>/dev/null; rm -rf "$tmp"' EXIT

head -c 52428800 /dev/urandom > "$tmp/in" || exit 1

run() { # run WHAT READER-FIRST WRITER-OPTIONS...
    what=$1 first=$2; shift 2
    rm -f "$tmp/out"
    if [ "$first" = reader ]; then
        timeout 120 "$ex/xfr_reader" -n "$name" > "$tmp/out" & rpid=$!
        timeout 120 "$ex/xfr_writer" -n "$name" "$@" < "$tmp/in"; wst=$?
    else
        timeout 120 "$ex/xfr_writer" -n "$name" "$@" < "$tmp/in" & wpid=$!
        timeout 120 "$ex/xfr_reader" -n "$name" > "$tmp/out"; rst=$?
        wait "$wpid"; wst=$?
    fi
    [ "$first" = reader ] && { wait "$rpid"; rst=$?; }
    if [ "$wst" -ne 0 ] || [ "$rst" -ne 0 ]; then
        echo "FAIL: $what: writer exit $wst, reader exit $rst"; fail=1
    elif ! cmp "$tmp/in" "$tmp/out"; then
        echo "FAIL: $what: output differs from input"; fail=1
    elif [ -e "/dev/shm$name" ]; then
        echo "FAIL: $what: the writer left the region behind"; fail=1
    else
        echo "ok: $what"
    fi
}

run "50 MB, default blocks" writer
run "50 MB, 4 KiB blocks, reader first" reader -b 4k -c 256k
run "50 MB, 1 MiB blocks" writer -b 1m -c 8m

: > "$tmp/empty"
timeout 60 "$ex/xfr_writer" -n "$name" < "$tmp/empty" & wpid=$!
timeout 60 "$ex/xfr_reader" -n "$name" > "$tmp/out"; rst=$?
wait "$wpid"; wst=$?
if [ "$wst" -ne 0 ] || [ "$rst" -ne 0 ] || [ -s "$tmp/out" ]; then
    echo "FAIL: empty input: writer $wst, reader $rst"; fail=1
else
    echo "ok: empty input"
fi

expect() { # expect WHAT STATUS PATTERN COMMAND...
    what=$1 want=$2 pat=$3; shift 3
    out=$("$@" 2>&1 < /dev/null); got=$?
    case $out in *$pat*) ok=1;; *) ok=0;; esac
    if [ "$got" -ne "$want" ] || [ "$ok" -ne 1 ]; then
        echo "FAIL: $what: exit $got (want $want): $out"; fail=1
    else
        echo "ok: $what"
    fi
}
expect "writer usage" 2 "usage:" "$ex/xfr_writer" -x
expect "reader usage" 2 "usage:" "$ex/xfr_reader" extra
expect "bad block size" 2 "bad block size" "$ex/xfr_writer" -b 12q
expect "capacity too small" 2 "too small" "$ex/xfr_writer" -b 1m -c 1m
expect "reader without writer" 1 "is xfr_writer running" "$ex/xfr_reader" -n "$name" -t 0
"$ex/create" "$name" 1m > /dev/null
expect "region already there" 1 "File exists" "$ex/xfr_writer" -n "$name"
"$ex/unlink" "$name"
exit $fail
