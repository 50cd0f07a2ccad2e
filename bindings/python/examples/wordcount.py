#!/usr/bin/env python3
"""Count words with a pool of worker processes sharing one shmds map.

    python3 wordcount.py FILE...

Each worker opens the region itself and adds to shared counters with
Map.add, an atomic increment that survives a worker being killed in the
middle of it. The parent prints the ten most frequent words, then removes
the region.
"""
import multiprocessing
import os
import sys

import shmds

_counts = None


def _open(region_name):
    global _counts
    _counts = shmds.Region.open(region_name).map("words")


def _count_file(path):
    n = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            for word in line.lower().split():
                word = word.strip(".,;:!?\"'()[]{}`*#-")
                if word:  # a map key is at least one byte
                    _counts.add(word)
                    n += 1
    return n


def main(paths):
    name = "/wordcount-%d" % os.getpid()
    with shmds.Region.create(name, 64 << 20) as region:
        words = region.create_map("words", capacity=100000)
        try:
            with multiprocessing.Pool(initializer=_open, initargs=(name,)) as pool:
                total = sum(pool.map(_count_file, paths))
            top = sorted(((words.counter(w), w) for w in words), reverse=True)[:10]
            print("%d words, %d distinct" % (total, len(words)))
            for n, w in top:
                print("%8d  %s" % (n, w.decode(errors="replace")))
        finally:
            shmds.unlink(name)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    main(sys.argv[1:])
