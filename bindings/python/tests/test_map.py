"""Maps: the dict protocol, put flags, TTL, counters, budgets."""
import pytest

import shmds


@pytest.fixture
def m(region):
    return region.create_map("m", capacity=100)


def test_map_dict_protocol(m):
    m[b"a"] = b"1"
    m["b"] = "two"  # str is UTF-8
    m[bytearray(b"c")] = memoryview(b"3")
    assert m[b"a"] == b"1" and m[b"b"] == b"two" and m["c"] == b"3"
    assert len(m) == 3
    assert b"a" in m and b"zz" not in m
    assert sorted(m) == [b"a", b"b", b"c"]
    assert sorted(m.items()) == [(b"a", b"1"), (b"b", b"two"), (b"c", b"3")]
    assert sorted(m.values()) == [b"1", b"3", b"two"]
    del m[b"a"]
    assert b"a" not in m and len(m) == 2


def test_map_absent_key_is_key_error(m):
    with pytest.raises(KeyError):
        m[b"nope"]
    with pytest.raises(KeyError):
        del m[b"nope"]
    with pytest.raises(KeyError):
        m.delete(b"nope")
    assert m.get(b"nope") is None
    assert m.get(b"nope", b"dflt") == b"dflt"


def test_map_empty_value_is_present(m):
    m[b"e"] = b""
    assert b"e" in m and m[b"e"] == b""


def test_map_values_of_any_size_round_trip(m):
    big = bytes(range(256)) * 1000
    m[b"big"] = big
    m[b"\x00key\x00"] = b"\x00"
    assert m[b"big"] == big
    assert m[b"\x00key\x00"] == b"\x00"
    m[b"big"] = b"small"
    assert m[b"big"] == b"small"


def test_map_put_nx_and_xx(m):
    assert m.put(b"k", b"1", nx=True) is True
    assert m.put(b"k", b"2", nx=True) is False
    assert m[b"k"] == b"1"
    assert m.put(b"k", b"3", xx=True) is True
    assert m.put(b"other", b"4", xx=True) is False
    assert m[b"k"] == b"3" and b"other" not in m
    with pytest.raises(ValueError):
        m.put(b"k", b"5", nx=True, xx=True)


def test_map_add_is_a_counter(m):
    assert m.add(b"hits") == 1
    assert m.add(b"hits", 41) == 42
    assert m.add(b"hits", -2) == 40
    assert m.counter(b"hits") == 40
    m[b"text"] = b"not eight"
    with pytest.raises(ValueError):
        m.add(b"text")
    m.add(b"big", 2**63 - 1)
    with pytest.raises(OverflowError):
        m.add(b"big")
    assert m.counter(b"big") == 2**63 - 1


def test_map_empty_key_is_rejected(m):
    for op in (lambda: m.put(b"", b"v"), lambda: m.get(b""), lambda: m[b""],
               lambda: m.add(b""), lambda: m.delete(b""), lambda: b"" in m):
        with pytest.raises(ValueError, match="at least one byte"):
            op()
    assert len(m) == 0


def test_map_budget_without_eviction_is_enomem(region):
    m = region.create_map("small", mem_limit=4096)
    with pytest.raises(OSError) as e:
        for i in range(1000):
            m[b"key%d" % i] = b"x" * 100
    assert e.value.errno == 12  # ENOMEM
    m.check()


def test_map_budget_with_eviction_keeps_going(region):
    m = region.create_map("lru", mem_limit=4096, evict=True)
    for i in range(1000):
        m[b"key%d" % i] = b"x" * 100
    assert m[b"key999"] == b"x" * 100
    assert m.stats()["evictions"] > 0
    assert len(m) < 1000


def test_map_stats_count_hits_and_misses(m):
    m[b"k"] = b"v"
    m.get(b"k")
    m.get(b"absent")
    st = m.stats()
    assert st["entries"] == 1 and st["inserts"] == 1
    assert st["hits"] >= 1 and st["misses"] >= 1


def test_map_destroy_frees_the_name(region):
    m = region.create_map("gone")
    m[b"k"] = b"v"
    m.destroy()
    assert m.closed
    assert "gone" not in region.objects()
    region.create_map("gone")


def test_map_wrong_kind_is_wrong_type(region):
    region.create_list("l")
    with pytest.raises(shmds.WrongType) as e:
        region.map("l")
    assert isinstance(e.value, TypeError)


def test_map_size_hint_fits(name):
    size = shmds.Map.size_hint(1000, 16, 100)
    with shmds.Region.create(name, size) as r:
        m = r.create_map("m", capacity=1000)
        for i in range(1000):
            m[b"%016d" % i] = b"v" * 100
        assert len(m) == 1000
