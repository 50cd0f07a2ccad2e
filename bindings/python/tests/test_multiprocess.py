"""A multiprocessing pool sharing one map, with a worker SIGKILLed mid-run.

The pool's workers open the region themselves (an initializer), as the
binding asks. One task hammers the map until the test SIGKILLs the worker
running it -- possibly inside a stripe lock, in the middle of a change.
The tasks that run after the kill, on the surviving and the replacement
workers, must all be acknowledged and visible; the map and the region must
check healthy; and the victim's keys must still be writable (a lock it
died holding is repaired by the next process that takes it).
"""
import multiprocessing
import os
import signal
import time

import shmds

_map = None


def _init(name):
    global _map
    _map = shmds.Region.open(name).map("shared")


def _work(task):
    i, n = task
    for j in range(n):
        _map.add(b"total")
        _map[b"task%d:%d" % (i, j)] = b"%d" % (i * j)
    return n


def _victim(_):
    _map[b"victim-pid"] = b"%d" % os.getpid()
    while True:
        _map.add(b"victim")
        _map[b"victim-key"] = os.urandom(64)
        del _map[b"victim-key"]


def _wait_for(pred, what, limit=60):
    deadline = time.monotonic() + limit
    while not pred():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.001)


def test_multiprocess_pool_survives_a_sigkilled_worker(name):
    ctx = multiprocessing.get_context("fork")
    tasks = [(i, 300) for i in range(8)]
    with shmds.Region.create(name, 16 << 20) as r:
        m = r.create_map("shared", capacity=4096)
        pool = ctx.Pool(4, initializer=_init, initargs=(name,))
        try:
            pool.apply_async(_victim, (None,))
            _wait_for(lambda: m.get(b"victim") is not None and m.counter(b"victim") >= 2000,
                      "the victim to get going")
            pid = int(m[b"victim-pid"])
            assert pid in [p.pid for p in multiprocessing.active_children()]
            before = m.counter(b"victim")
            os.kill(pid, signal.SIGKILL)
            done = pool.map(_work, tasks)
        finally:
            pool.terminate()
            pool.join()
        assert done == [n for _, n in tasks]
        assert m.counter(b"total") == sum(n for _, n in tasks)
        for i, n in tasks:
            for j in range(n):
                assert m[b"task%d:%d" % (i, j)] == b"%d" % (i * j)
        after = m.counter(b"victim")
        assert after >= before
        assert m.add(b"victim") == after + 1
        m[b"victim-key"] = b"writable again"
        assert m[b"victim-key"] == b"writable again"
        m.check()
        r.check()
