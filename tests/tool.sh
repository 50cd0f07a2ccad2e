#!/bin/sh
# The shmds command-line tool, run as an operator would.
set -u
tool="$top_builddir/tools/shmds"
ex="$top_builddir/examples"
name="/shmds-tool-$$"
fail=0
fifo="/dev/shm/shmds-tool-fifo-$$"
half="/shmds-tool-half-$$"
trap '"$tool" rm "$name" "$half" 2>/dev/null; rm -f "$fifo"' EXIT

# A JSON parser to hold --json output to, when there is one.
json_ok() { :; }
if [ -n "${PYTHON:-}" ] && [ "$PYTHON" != : ]; then
    json_ok() { printf '%s\n' "$1" | "$PYTHON" -c 'import json, sys; json.load(sys.stdin)'; }
fi

expect() { # expect WHAT STATUS PATTERN COMMAND...
    what=$1 want=$2 pat=$3; shift 3
    out=$("$@" 2>&1); got=$?
    if [ "$got" -ne "$want" ]; then
        echo "FAIL: $what: exit $got, want $want: $out"; fail=1
    elif ! printf '%s\n' "$out" | grep -q -- "$pat"; then
        echo "FAIL: $what: output lacks '$pat': $out"; fail=1
    else
        echo "ok: $what"
    fi
}

expect_json() { # expect_json WHAT STATUS PATTERN COMMAND...: standard output only, valid JSON
    what=$1 want=$2 pat=$3; shift 3
    out=$("$@" 2>/dev/null); got=$?
    if [ "$got" -ne "$want" ]; then
        echo "FAIL: $what: exit $got, want $want: $out"; fail=1
    elif ! printf '%s\n' "$out" | grep -q -- "$pat"; then
        echo "FAIL: $what: output lacks '$pat': $out"; fail=1
    elif ! json_ok "$out"; then
        echo "FAIL: $what: not valid JSON: $out"; fail=1
    else
        echo "ok: $what"
    fi
}

expect "no command" 2 "usage" "$tool"
expect "unknown command" 2 "unknown command" "$tool" frobnicate
expect "--version" 0 "region format" "$tool" --version
"$ex/create" "$name" 1m >/dev/null || { echo "FAIL: create"; exit 1; }
expect "ls lists the region" 0 "$name" "$tool" ls
expect "info" 0 "objects (0; the directory's blocks hold 0" "$tool" info "$name"
expect "info shows the heap" 0 "largest" "$tool" info "$name"
expect "info lists the arenas" 0 "arena 0 at " "$tool" info "$name"
expect "info shows each arena lock" 0 "lock 0 *free" "$tool" info "$name"
# Issue 14: current and maximum size; growth on request (the default
# maximum of a 1 MiB region is 64 MiB), on a region of its own.
grown="/shmds-tool-grow-$$"
"$ex/create" "$grown" 1m >/dev/null || { echo "FAIL: create $grown"; fail=1; }
expect "info shows the maximum" 0 "maximum    64.0M" "$tool" info "$grown"
expect "grow" 0 "size 4.0M (4194304 bytes), maximum 64.0M" "$tool" grow "$grown" 4m
expect "info after grow" 0 "size       4.0M" "$tool" info "$grown"
expect_json "info --json after grow" 0 '"size": 4194304, "max_size": 67108864' "$tool" info "$grown" --json
expect "grow past the maximum" 1 "above the region's maximum" "$tool" grow "$grown" 65m
expect "grow is checked" 0 "healthy" "$tool" check "$grown"
"$tool" rm "$grown"
"$ex/jobs" "$name" init >/dev/null && "$ex/jobs" "$name" add "one job" >/dev/null ||
    { echo "FAIL: jobs"; fail=1; }
expect "info lists named objects" 0 "jobs" "$tool" info "$name"
"$top_builddir/tests/peer" mkmap "$name" cities paris France 'quote"d' 'tab	bed' ||
    { echo "FAIL: mkmap"; fail=1; }
expect "info counts map entries" 0 "cities.*2 entries" "$tool" info "$name"
expect "info shows the readers" 0 "inside a guard; epoch" "$tool" info "$name"
expect_json "info --json readers" 0 '"readers": {"slots": [0-9]*, "inside": 0' "$tool" info "$name" --json
expect "dump a map" 0 '"paris" = "France"' "$tool" dump "$name" cities
expect "dump escapes" 0 '"quote\\"d" = "tab\\tbed"' "$tool" dump "$name" cities
expect "dump --json" 0 '"paris": "France"' "$tool" dump "$name" cities --json
expect "stat a map" 0 "entries *2" "$tool" stat "$name" cities
expect "stat shows the budget" 0 "budget *none" "$tool" stat "$name" cities
expect "stat shows the default ttl" 0 "default ttl *none" "$tool" stat "$name" cities
expect "put a key" 0 "version [1-9]" "$tool" put "$name" cities lyon France --ttl 600000
expect "get a key" 0 '"France"' "$tool" get "$name" cities lyon
expect "get shows the ttl" 0 "ttl [1-9][0-9]* ms" "$tool" get "$name" cities lyon
expect "ttl reads the time left" 0 "^[1-9][0-9]*$" "$tool" ttl "$name" cities lyon
expect "ttl 0 persists" 0 "" "$tool" ttl "$name" cities lyon 0
expect "ttl of a persistent key" 0 "^-1$" "$tool" ttl "$name" cities lyon
expect "put --nx on a present key" 1 "EEXIST" "$tool" put "$name" cities lyon X --nx
expect "del a key" 0 "" "$tool" del "$name" cities lyon
expect "get a deleted key" 1 "ENOENT" "$tool" get "$name" cities lyon
expect "put a counter" 0 "version" "$tool" put "$name" cities hits -42 --int
expect "dump shows counters as numbers" 0 '"hits" = -42$' "$tool" dump "$name" cities
expect "dump --json counters" 0 '"hits": -42' "$tool" dump "$name" cities --json
expect "get a counter" 0 '^-42$' "$tool" get "$name" cities hits
expect "put utf-8" 0 "version" "$tool" put "$name" cities café "crème brûlée"
expect "dump --json keeps utf-8" 0 '"café": "crème brûlée"' "$tool" dump "$name" cities --json
expect "put bytes that are not utf-8" 0 "version" "$tool" put "$name" cities raw "$(printf 'a\377\303b')"
expect "dump --json escapes them losslessly" 0 '"raw": "a\\udcff\\udcc3b"' "$tool" dump "$name" cities --json
expect "dump text escapes them" 0 '"raw" = "a\\xff\\xc3b"' "$tool" dump "$name" cities
if command -v python3 >/dev/null 2>&1; then
    expect "dump --json is valid JSON and round-trips the bytes" 0 "^ok$" sh -c \
        "\"$tool\" dump \"$name\" cities --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d[\"café\"]==\"crème brûlée\"; assert d[\"raw\"].encode(\"utf-8\",\"surrogateescape\")==b\"a\\xff\\xc3b\"; assert d[\"hits\"]==-42; print(\"ok\")'"
fi
expect "del the extra keys" 0 "" sh -c "\"$tool\" del \"$name\" cities hits && \"$tool\" del \"$name\" cities café && \"$tool\" del \"$name\" cities raw"
"$top_builddir/tests/peer" mkqueue "$name" inbox one two three || { echo "FAIL: mkqueue"; fail=1; }
expect "info counts queued messages" 0 "inbox.*3 messages waiting" "$tool" info "$name"
expect "stat a queue" 0 "waiting *3 messages" "$tool" stat "$name" inbox
expect "stat counts sends" 0 "sent *3" "$tool" stat "$name" inbox
"$top_builddir/tests/peer" mkackq "$name" jobq a b || { echo "FAIL: mkackq"; fail=1; }
expect "stat an at-least-once queue" 0 "at-least-once" "$tool" stat "$name" jobq
expect "stat shows the lease in flight" 0 "in flight *1 " "$tool" stat "$name" jobq
expect "stat shows redeliveries" 0 "redelivered *0" "$tool" stat "$name" jobq
"$top_builddir/tests/peer" mktable "$name" prices apple 3 pear 5 &&
    "$top_builddir/tests/peer" mktable "$name" prices apple 4 pear 5 fig 9 ||
    { echo "FAIL: mktable"; fail=1; }
expect "info shows a table's version" 0 "prices *table .*3 entries, version 2" "$tool" info "$name"
expect "stat a table" 0 "version *2 (published" "$tool" stat "$name" prices
expect "stat counts a table's publishes" 0 "publishes *2" "$tool" stat "$name" prices
expect "dump a table" 0 '"fig" = "9"' "$tool" dump "$name" prices
expect "get from a table" 0 "table version 2" "$tool" get "$name" prices apple
expect "get a table's missing key" 1 "ENOENT" "$tool" get "$name" prices kiwi
expect_json "stat --json table" 0 '"type": "table", "name": "prices", "version": 2, "entries": 3' "$tool" stat "$name" prices --json
expect_json "dump --json table" 0 '"apple": "4"' "$tool" dump "$name" prices --json
expect_json "info --json table" 0 '"name": "prices", "type": "table", .*"entries": 3, "version": 2' "$tool" info "$name" --json
expect "check with every kind of object" 0 "healthy" "$tool" check "$name"
expect_json "ls --json" 0 "{\"name\": \"$name\", \"size\": 1048576" "$tool" ls --json
expect_json "info --json" 0 '"name": "cities", "type": "map", .*"entries": 2' "$tool" --json info "$name"
expect_json "info --json queues" 0 '"name": "inbox", "type": "queue", .*"messages": 3' "$tool" info "$name" --json
expect_json "info --json locks" 0 '"directory": {"state": "free"' "$tool" info "$name" --json
expect_json "stat --json map" 0 '"type": "map", "name": "cities", "entries": 2' "$tool" stat "$name" cities --json
expect_json "stat --json queue" 0 '"messages": 3' "$tool" stat --json "$name" inbox
expect_json "check --json" 0 '"repair": false, "healthy": true' "$tool" check "$name" --json
expect_json "dump --json error" 1 '{"error": {"object": "nosuch", "name": "ENOENT"' "$tool" dump "$name" nosuch --json
expect_json "--version --json" 0 '"format_version": ' "$tool" --version --json
expect "usage names the exit codes" 2 "Exit status: 0" "$tool"
expect "dump a missing object" 1 "ENOENT" "$tool" dump "$name" nosuch
expect "dump a user object" 1 "SHMDS_ETYPE" "$tool" dump "$name" jobs
expect "check healthy" 0 "healthy" "$tool" check "$name"
# Issue 19: a FIFO in /dev/shm made ls and info block for ever.
mkfifo "$fifo" || { echo "FAIL: mkfifo"; fail=1; }
expect "ls is not held up by a FIFO" 0 "NAME" timeout 20 "$tool" ls
expect "info refuses a FIFO at once" 1 "SHMDS_EFORMAT" timeout 20 "$tool" info "/${fifo##*/}"
rm -f "$fifo"
# Issue 19: the operator's tool refuses another user's region by default.
if [ "$(id -u)" -eq 0 ]; then
    chown 65534 "/dev/shm$name"
    expect "another user's region is refused" 1 "EPERM" "$tool" info "$name"
    expect "check refuses it too" 1 "EPERM" "$tool" check "$name"
    expect "ls says whose it is" 0 "another user's" "$tool" ls
    expect "--any-owner reads it" 0 "objects" "$tool" --any-owner info "$name"
    expect_json "ls --json notes another user's" 0 '"error": "EPERM", "note": "another user' \
        "$tool" ls --json
    expect_json "--any-owner --json" 0 '"name": "cities", "type": "map"' \
        "$tool" --any-owner --json info "$name"
    chown 0 "/dev/shm$name"
else
    echo "skip: another user's region (needs root to chown)"
fi
expect "check --repair" 0 "healthy" "$tool" check "$name" --repair
expect_json "check --repair --json" 0 '"repair": true, "healthy": true' \
    "$tool" check "$name" --repair --json
# Issue 19: a creation abandoned by a dead creator (the format words
# stamped, no magic, nobody holding the creation lock) is named as such.
fmt=$("$tool" --version | sed -n 's/.*region format \([0-9]*\).*/\1/p')
printf "\\000\\000\\000\\000\\000\\000\\000\\000\\$(printf %03o "$fmt")\\000\\000\\000\\000\\020\\000\\000" |
    dd of="/dev/shm$half" bs=16 count=1 2>/dev/null
truncate -s 65536 "/dev/shm$half"
expect "ls flags an abandoned creation" 0 "abandoned creation" "$tool" ls
expect_json "ls --json flags it too" 0 '"note": "abandoned creation' "$tool" ls --json
"$tool" rm "$half"
# Issue 19: an object truncated under the tool is an error, not SIGBUS.
"$ex/create" "$half" 1m >/dev/null && "$top_builddir/tests/peer" mkmap "$half" m k v ||
    { echo "FAIL: create $half"; fail=1; }
truncate -s 8192 "/dev/shm$half"
expect "dump of a truncated region" 1 "SHMDS_ECORRUPT" "$tool" dump "$half" m
"$tool" rm "$half"
# Damage the heap's control block (the header still opens): a verdict.
printf '%064d' 0 | tr 0 '\377' | dd of="/dev/shm${name}" bs=1 seek=4096 conv=notrunc 2>/dev/null
expect_json "check --json unhealthy" 1 '"healthy": false, "error": "SHMDS_ECORRUPT"' \
    "$tool" check "$name" --json
# Damage the header checksum the way a stray writer would.
# (byte 56 is the creator's pid: flip a bit, so the byte always changes)
b=$(od -An -tu1 -j56 -N1 "/dev/shm${name}" | tr -d ' ')
printf "\\$(printf '%03o' $((b ^ 1)))" | dd of="/dev/shm${name}" bs=1 seek=56 conv=notrunc 2>/dev/null
expect "check damaged" 1 "SHMDS_ECORRUPT" "$tool" check "$name"
expect_json "check --json damaged" 1 '"error": {"object": "/.*", "name": "SHMDS_ECORRUPT"' "$tool" check "$name" --json
expect_json "rm --json" 1 '"removed": false, "error": "ENOENT"' \
    "$tool" rm --json "$name" "$name"
"$ex/create" "$name" 1m >/dev/null || { echo "FAIL: create again"; exit 1; }
expect "rm" 0 "" "$tool" rm "$name"
expect "check missing" 1 "ENOENT" "$tool" check "$name"
exit $fail
