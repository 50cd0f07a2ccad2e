"""Published lookup tables: build, publish, read, replace (shmds/table.h)."""
import os
import signal

import pytest

import shmds


def test_table_publish_a_dict_and_read_it(region):
    data = {b"k%d" % i: b"v%d" % i for i in range(1000)}
    assert region.publish_table("t", data) == 1
    t = region.table("t")
    assert len(t) == 1000 and t.version == 1
    assert t.get(b"k7") == b"v7" and t[b"k999"] == b"v999"
    assert t.get(b"nope") is None and t.get(b"nope", b"d") == b"d"
    with pytest.raises(KeyError):
        t[b"nope"]
    assert b"k1" in t and b"nope" not in t
    assert sorted(t) == sorted(data)
    assert dict(t.items()) == data
    assert t.snapshot() == (1, list(data.items()))  # the order they were added
    assert region.kind("t") == "table" and region.objects()["t"][0] == "table"
    t.check()
    region.check()


def test_table_from_iterable_str_keys_empty_values_and_last_add_wins(region):
    pairs = [("a", "1"), (b"b", b""), ("a", "2"), (b"c", bytearray(b"x"))]
    v = region.publish_table("t", iter(pairs))
    t = region.table("t")
    assert v == 1 and len(t) == 3
    assert t[b"a"] == b"2" and t[b"b"] == b"" and t.get("c") == b"x"
    big = os.urandom(100000)
    region.publish_table("t", {b"big": big})
    assert t[b"big"] == big  # longer than the handle's first buffer


def test_table_republish_replaces_the_whole_version(region):
    region.publish_table("t", {b"old": b"1", b"both": b"old"})
    t = region.table("t")
    assert region.publish_table("t", {b"new": b"2", b"both": b"new"}) == 2
    assert t.version == 2 and len(t) == 2
    assert t.get(b"old") is None and t[b"both"] == b"new"
    st = t.stats()
    assert st["publishes"] == 2 and st["count"] == 2 and st["builds"] == 0


def test_table_builder_context_manager_publishes_or_aborts(region):
    with region.build_table("t", expected=2) as b:
        b.add(b"x", b"1")
        b[b"y"] = b"2"
    assert b.version == 1
    t = region.table("t")
    with pytest.raises(RuntimeError):
        with region.build_table("t") as b:
            b.add(b"z", b"3")
            raise RuntimeError("boom")
    assert t.version == 1 and t.get(b"z") is None
    b = region.build_table("t")
    b.add(b"w", b"4")
    b.abort()
    b.abort()
    with pytest.raises(ValueError):
        b.add(b"w", b"5")
    assert t.version == 1 and dict(t.items()) == {b"x": b"1", b"y": b"2"}
    assert t.stats()["builds"] == 0


def test_table_racing_builders_the_first_publish_wins(region):
    region.publish_table("t", {b"a": b"0"})
    b1, b2 = region.build_table("t"), region.build_table("t")
    b1.add(b"a", b"1")
    b2.add(b"a", b"2")
    assert b1.publish() == 2
    with pytest.raises(shmds.VersionConflict):
        b2.publish()
    t = region.table("t")
    assert t[b"a"] == b"1" and t.version == 2


def test_table_before_its_first_publish_finds_nothing(region):
    b = region.build_table("t")
    t = region.table("t")
    assert len(t) == 0 and t.version == 0 and t.get(b"a") is None
    assert t.lookup(b"a") == (None, 0) and list(t) == []
    b.abort()


def test_table_lookup_under_a_guard_names_the_version(region):
    region.publish_table("t", {b"a": b"1"})
    t = region.table("t")
    assert t.lookup(b"a") == (b"1", 1)
    with region.guard() as g:
        assert g.inside
        assert t.lookup(b"a", g) == (b"1", 1)
        region.publish_table("t", {b"a": b"2"})
        assert t.lookup(b"a", g) == (b"2", 2)
        assert t.lookup(b"b", g) == (None, 2)
    assert not g.inside
    with pytest.raises(ValueError):
        t.lookup(b"a", g)  # a guard that was left


def test_table_errors(region):
    with pytest.raises(ValueError):
        region.publish_table("t", {b"": b"empty key"})
    region.create_map("m")
    with pytest.raises(shmds.WrongType):
        region.build_table("m")
    with pytest.raises(FileNotFoundError):
        region.table("absent")
    region.publish_table("t", {b"a": b"1"})
    t = region.table("t")
    t.destroy()
    assert t.closed
    with pytest.raises(FileNotFoundError):
        region.table("t")


def test_table_read_only_attach_reads(region, name):
    region.publish_table("t", {b"a": b"1"})
    with shmds.Region.open(name, readonly=True) as ro:
        t = ro.table("t")
        assert t[b"a"] == b"1" and t.lookup(b"a") == (b"1", 1) and len(t) == 1
        t.check()
        with pytest.raises(shmds.ReadOnlyRegion):
            ro.build_table("t")


def test_table_builder_is_not_the_forked_childs(region):
    b = region.build_table("t")
    b.add(b"a", b"1")
    pid = os.fork()
    if pid == 0:  # the child may not add to its parent's builder
        code = 1
        try:
            b.add(b"b", b"2")
        except ValueError:
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b.publish() == 1
    assert dict(region.table("t").items()) == {b"a": b"1"}


def test_table_forked_reader_sees_every_republished_version(name):
    """A reader process, in its own attach, looks keys up while the parent
    republishes: every answer is one whole version (the key's value names
    the version), versions never go back, and it sees the last one."""
    n, last = 200, 60
    with shmds.Region.create(name, 16 << 20) as r:
        r.publish_table("t", {b"k%d" % i: b"1:%d" % i for i in range(n)})
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(rfd)
                with shmds.Region.open(name, readonly=True) as rr:
                    t = rr.table("t")
                    seen, prev, i = set(), 0, 0
                    os.write(wfd, b"r")
                    while prev < last:
                        with rr.guard() as g:
                            val, ver = t.lookup(b"k%d" % (i % n), g)
                            assert val == b"%d:%d" % (ver, i % n), (val, ver)
                            assert ver >= prev
                            assert t.lookup(b"absent", g)[0] is None
                        seen.add(ver)
                        prev, i = ver, i + 1
                    code = 0 if len(seen) > 1 else 2
            finally:
                os._exit(code)
        os.close(wfd)
        assert os.read(rfd, 1) == b"r"
        os.close(rfd)
        for v in range(2, last + 1):
            assert r.publish_table("t", {b"k%d" % i: b"%d:%d" % (v, i) for i in range(n)}) == v
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        t = r.table("t")
        t.check()
        r.check()
        assert t.stats()["publishes"] == last
