#!/bin/sh
# The shmds demo: a pre-fork pool sharing one cache (with a worker killed
# mid-run), then the classic POSIX shared-memory programs redone on shmds,
# including a lock holder killed with SIGKILL and the next process repairing,
# and a file streamed through a queue between two processes.
# Usage: examples/demo.sh [DIR-WITH-BUILT-EXAMPLES]
set -eu
ex=${1:-$(dirname "$0")}
name="/shmds-demo-$$"
trap '"$ex/unlink" "$name" 2>/dev/null || true' EXIT
say() { printf '\n$ %s\n' "$*"; }

say "cache_workers -k 4 20000: four workers share one cache; worker 1 is SIGKILLed half way"
"$ex/cache_workers" -k 4 20000

say create "$name" 1m;            "$ex/create" "$name" 1m
say write "$name" "hello, shared world"; "$ex/write" "$name" "hello, shared world"
say read "$name";                 "$ex/read" "$name"
say seqnum_init "$name" 100;      "$ex/seqnum_init" "$name" 100
say "three seqnum_get at once (each holds the lock 300 ms)"
for i in 1 2 3; do "$ex/seqnum_get" -d 300 "$name" 5 & done
wait
say "seqnum_get holding the lock, killed with SIGKILL"
log=$(mktemp)
"$ex/seqnum_get" -d 60000 "$name" >"$log" &
pid=$!
until grep -q holding "$log"; do sleep 0.05; done
cat "$log"; rm -f "$log"
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
echo "killed $pid (it had reserved one number; the repair keeps it used, never handed out twice)"
say seqnum_get "$name";           "$ex/seqnum_get" -d 0 "$name"
say unlink "$name";               "$ex/unlink" "$name"

data=$(mktemp); copy=$(mktemp)
head -c 20000000 /dev/urandom >"$data"
say "xfr_writer < 20 MB & xfr_reader > copy: a file through a queue, then cmp"
"$ex/xfr_writer" -n "$name-xfr" <"$data" &
"$ex/xfr_reader" -n "$name-xfr" >"$copy"
wait
cmp "$data" "$copy" && echo "identical: $(wc -c <"$copy") bytes"
rm -f "$data" "$copy"
trap - EXIT
