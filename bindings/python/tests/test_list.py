"""Lists: deque-like use, snapshots, errors."""
import pytest

import shmds


def test_list_push_pop_both_ends(region):
    lst = region.create_list("l")
    lst.append(b"b")
    lst.appendleft(b"a")
    lst.push_back(b"c")
    assert len(lst) == 3 and lst.to_list() == [b"a", b"b", b"c"]
    assert list(lst) == [b"a", b"b", b"c"]
    assert lst.popleft() == b"a"
    assert lst.pop() == b"c"
    assert lst.pop_front() == b"b"
    with pytest.raises(IndexError):
        lst.pop()
    with pytest.raises(IndexError):
        lst.popleft()


def test_list_big_and_empty_elements(region):
    lst = region.create_list("l")
    big = b"z" * 100000
    lst.append(big)
    lst.append(b"")
    assert lst.popleft() == big
    assert lst.popleft() == b""


def test_list_seen_by_another_handle(region):
    region.create_list("l").append(b"x")
    with shmds.Region.open(region.name) as r2:
        assert r2.list("l").to_list() == [b"x"]
    with shmds.Region.open(region.name, readonly=True) as ro:
        lro = ro.list("l")
        assert lro.to_list() == [b"x"] and len(lro) == 1
        with pytest.raises(shmds.ReadOnlyRegion):
            lro.append(b"y")


def test_list_heap_full_is_enomem_and_list_intact(name):
    with shmds.Region.create(name, 64 << 10) as r:
        lst = r.create_list("l")
        with pytest.raises(OSError) as e:
            while True:
                lst.append(b"x" * 1000)
        assert e.value.errno == 12
        n = len(lst)
        assert n > 0 and lst.to_list() == [b"x" * 1000] * n
        lst.check()


def test_list_destroy(region):
    lst = region.create_list("l")
    lst.append(b"x")
    lst.destroy()
    with pytest.raises(FileNotFoundError):
        region.list("l")
