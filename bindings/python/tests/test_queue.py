"""Queues: send/recv of bytes, timeouts, shutdown, threads."""
import threading

import pytest

import shmds


@pytest.fixture
def q(region):
    return region.create_queue("q", 4096, 1024)


def test_queue_fifo(q):
    for i in range(10):
        q.send(b"msg %d" % i)
    assert len(q) == 10
    assert [q.recv() for _ in range(10)] == [b"msg %d" % i for i in range(10)]
    assert len(q) == 0


def test_queue_empty_recv_times_out(q):
    with pytest.raises(TimeoutError):
        q.recv(timeout=0.05)
    with pytest.raises(BlockingIOError):
        q.recv(timeout=0)


def test_queue_full_send_times_out(q):
    with pytest.raises(BlockingIOError):
        while True:
            q.send(b"x" * 100, timeout=0)
    with pytest.raises(TimeoutError):
        q.send(b"x" * 100, timeout=0.05)


def test_queue_message_too_big(q):
    with pytest.raises(OSError) as e:
        q.send(b"x" * 2000)
    assert e.value.errno == 90  # EMSGSIZE


def test_queue_shutdown_drains_then_closed(q):
    q.send(b"a")
    q.send(b"b")
    q.shutdown()
    with pytest.raises(shmds.QueueClosed):
        q.send(b"c")
    assert list(q) == [b"a", b"b"]
    with pytest.raises(shmds.QueueClosed):
        q.recv()


def test_queue_blocked_recv_wakes_for_a_send_from_another_thread(region):
    q = region.create_queue("q", 4096, 1024)
    got = []

    def consumer():
        with shmds.Region.open(region.name) as r:
            got.append(r.queue("q").recv(timeout=30))

    t = threading.Thread(target=consumer)
    t.start()
    q.send(b"wake up")
    t.join(60)
    assert got == [b"wake up"]


def test_queue_spsc_stream(region):
    q = region.create_queue("s", shmds.Queue.bytes_for(4, 64), 64, spsc=True)
    for i in range(100):
        q.send(b"%d" % i, timeout=0)
        assert q.recv(timeout=0) == b"%d" % i
    q.check()
