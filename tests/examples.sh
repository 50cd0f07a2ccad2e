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

# write / read: the message board.
check "read before any write" 1 "$ex/read" "$name"
check "write" 0 "$ex/write" "$name" "hello, shared world"
check "read" 0 "$ex/read" "$name"
[ "$last_out" = "hello, shared world" ] || { echo "FAIL: read printed: $last_out"; fail=1; }
check "overwrite" 0 "$ex/write" "$name" "second message"
check "read again" 0 "$ex/read" "$name"
[ "$last_out" = "second message" ] || { echo "FAIL: read printed: $last_out"; fail=1; }
long=$(head -c 5000 /dev/zero | tr '\0' x)
check "oversize message refused" 1 "$ex/write" "$name" "$long"
check "read after refused write" 0 "$ex/read" "$name"
[ "$last_out" = "second message" ] || { echo "FAIL: refused write changed the board: $last_out"; fail=1; }

# seqnum: numbers handed out once each, and a lock holder killed with SIGKILL.
check "seqnum_get before init" 1 "$ex/seqnum_get" -d 0 "$name"
check "seqnum_init" 0 "$ex/seqnum_init" "$name" 100
check "seqnum_get" 0 "$ex/seqnum_get" -d 0 "$name" 5
case $last_out in *"got 100 (run of 5)"*) ;; *) echo "FAIL: seqnum_get: $last_out"; fail=1;; esac
tmp=$(mktemp -d)
for i in 1 2 3; do "$ex/seqnum_get" -d 20 "$name" 10 >"$tmp/get$i" & done
wait
got=$(cat "$tmp"/get* | sed -n 's/.*got \([0-9]*\) .*/\1/p' | sort -n | tr '\n' ' ')
[ "$got" = "105 115 125 " ] || { echo "FAIL: concurrent seqnum_get handed out: $got"; fail=1; }
: >"$tmp/holder"
"$ex/seqnum_get" -d 600000 "$name" 1000 >"$tmp/holder" &
holder=$!
# Wait (bounded) until it holds the lock, then kill it there.
i=0
until grep -q holding "$tmp/holder"; do
    i=$((i + 1)); [ $i -lt 3000 ] || { echo "FAIL: holder never took the lock"; fail=1; break; }
    sleep 0.01
done
kill -9 $holder; wait $holder 2>/dev/null
check "seqnum_get after a holder was killed" 0 "$ex/seqnum_get" -d 0 "$name"
case $last_out in
    *"previous holder died"*"got 1135 "*) echo "ok: repaired, and the dead holder's run stays used" ;;
    *) echo "FAIL: after kill: $last_out"; fail=1 ;;
esac
rm -rf "$tmp"
check "unlink" 0 "$ex/unlink" "$name"
check "unlink twice" 1 "$ex/unlink" "$name"

# cache_workers: a pre-fork pool sharing one cache; one worker killed mid-run.
check "cache_workers usage" 2 "$ex/cache_workers"
check "cache_workers" 0 "$ex/cache_workers" 3 3000
case $last_out in *"worker 2: 3000 requests"*) ;; *) echo "FAIL: worker 2 did not report: $last_out"; fail=1;; esac
case $last_out in *"region check: ok"*) ;; *) echo "FAIL: cache region not healthy: $last_out"; fail=1;; esac
hits=$(printf '%s\n' "$last_out" | sed -n 's/^total: \([0-9]*\) hits.*/\1/p')
[ "${hits:-0}" -gt 4500 ] || { echo "FAIL: shared cache hit too rarely ($hits of 9000): $last_out"; fail=1; }
case $last_out in *"computed once "*", twice 0, 3 times 0, more 0"*) ;; *) echo "FAIL: a key computed twice: $last_out"; fail=1;; esac
check "cache_workers with a worker killed" 0 "$ex/cache_workers" -k 3 3000
case $last_out in *"worker 1: killed half way"*) ;; *) echo "FAIL: no kill reported: $last_out"; fail=1;; esac
case $last_out in *"worker 0: 3000 requests"*"region check: ok"*|*"region check: ok"*) ;; *) echo "FAIL: survivors: $last_out"; fail=1;; esac
case $last_out in *"worker 0: 3000 requests"*) ;; *) echo "FAIL: worker 0 did not finish: $last_out"; fail=1;; esac
case $last_out in *"worker 2: 3000 requests"*) ;; *) echo "FAIL: worker 2 did not finish: $last_out"; fail=1;; esac
case $last_out in *"computed once "*", twice 0, 3 times 0, more 0"*) ;; *) echo "FAIL: a key computed twice: $last_out"; fail=1;; esac

# lookup: a TSV table published, answered by 8 read-only workers while it is
# published again every second (3 versions in all); no lookup may fail.
tsv=$(mktemp)
trap '"$ex/unlink" "$name" 2>/dev/null; rm -f "$tsv"' EXIT
i=0
while [ $i -lt 500 ]; do printf 'city%d\tpopulation %d\n' $i $((i * 1000)); i=$((i + 1)); done >"$tsv"
printf 'paris\tcapital of France\n' >>"$tsv"
check "lookup usage" 2 "$ex/lookup"
check "lookup" 0 "$ex/lookup" "$tsv" 8 3 city7 paris city499 nowhere
case $last_out in *"loaded 501 rows as version 1"*) ;; *) echo "FAIL: row count: $last_out"; fail=1;; esac
for want in "reloaded 501 rows as version 2" "reloaded 501 rows as version 3" \
            "city7	population 7000 (version 3)" "paris	capital of France (version 3)" \
            "city499	population 499000 (version 3)" "nowhere	not found" "no lookup failed"; do
    case $last_out in *"$want"*) ;; *) echo "FAIL: lookup missing '$want': $last_out"; fail=1;; esac
done
w=0
while [ $w -lt 8 ]; do
    case $last_out in *"worker $w: "*" lookups, 0 failed, versions "*) ;;
        *) echo "FAIL: worker $w did not report 0 failed: $last_out"; fail=1;; esac
    w=$((w + 1))
done
check "lookup of a missing file" 1 "$ex/lookup" /nonexistent/table.tsv 1 1 k

exit $fail
