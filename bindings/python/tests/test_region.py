"""Regions: create, open, context managers, info, permissions, checks."""
import os
import stat

import pytest

import shmds


def test_region_create_then_open_sees_the_same_objects(name):
    with shmds.Region.create(name, 1 << 20) as r:
        assert r.size == 1 << 20
        assert not r.readonly
        r.create_map("m")[b"k"] = b"v"
    with shmds.Region.open(name) as r2:
        assert r2.objects() == {"m": ("map", r2.objects()["m"][1])}
        assert r2.kind("m") == "map"
        assert r2.map("m")[b"k"] == b"v"


def test_region_context_manager_closes_region_and_objects(name):
    with shmds.Region.create(name, 1 << 20) as r:
        m = r.create_map("m")
    assert r.closed and m.closed
    with pytest.raises(ValueError):
        m.get(b"k")
    with pytest.raises(ValueError):
        r.info()
    r.close()  # idempotent


def test_region_default_mode_is_0600(name):
    with shmds.Region.create(name, 1 << 20):
        pass
    assert stat.S_IMODE(os.stat("/dev/shm" + name).st_mode) == 0o600


def test_region_mode_is_applied_whatever_the_umask(name):
    old = os.umask(0o077)
    try:
        with shmds.Region.create(name, 1 << 20, mode=0o640):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat("/dev/shm" + name).st_mode) == 0o640


def test_region_create_existing_name_is_file_exists(region):
    with pytest.raises(FileExistsError):
        shmds.Region.create(region.name, 1 << 20)


def test_region_open_missing_is_file_not_found(name):
    with pytest.raises(FileNotFoundError):
        shmds.Region.open(name)


def test_region_bad_size_is_an_oserror_with_errno(name):
    with pytest.raises(OSError) as e:
        shmds.Region.create(name, 100)
    assert e.value.errno == 22  # EINVAL


def test_region_info_names_the_creator(region):
    info = region.info()
    assert info["creator_pid"] == os.getpid()
    assert info["format_version"] >= 1
    assert info["roots"] == 0
    heap = region.heap()
    assert heap["used_bytes"] + heap["free_bytes"] == heap["heap_bytes"]


def test_region_readonly_attach_reads_but_refuses_writes(region):
    m = region.create_map("m")
    m[b"k"] = b"v"
    with shmds.Region.open(region.name, readonly=True) as ro:
        assert ro.readonly
        rm = ro.map("m")
        assert rm[b"k"] == b"v"
        with pytest.raises(shmds.ReadOnlyRegion) as e:
            rm[b"k2"] = b"v2"
        assert isinstance(e.value, PermissionError)
    assert b"k2" not in m


def test_region_check_and_reclaim_on_a_healthy_region(region):
    region.create_list("l").append(b"x")
    region.check()
    region.reclaim()


def test_region_damaged_header_is_corrupt_region(region):
    name = region.name
    region.close()
    with open("/dev/shm" + name, "r+b") as f:  # the header checksum covers byte 56
        f.seek(56)
        b = f.read(1)
        f.seek(56)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(shmds.CorruptRegion) as e:
        shmds.Region.open(name)
    assert e.value.name == "SHMDS_ECORRUPT"


def test_region_not_a_region_is_format_error(name):
    with open("/dev/shm" + name, "wb") as f:
        f.write(b"not a shmds region at all" * 1000)
    with pytest.raises(shmds.FormatError):
        shmds.Region.open(name)


def test_region_byte_swapped_magic_is_abi_error(region):
    name = region.name
    region.close()
    with open("/dev/shm" + name, "r+b") as f:
        magic = f.read(8)
        f.seek(0)
        f.write(magic[::-1])
    with pytest.raises(shmds.ABIError):
        shmds.Region.open(name)


def test_region_version_matches_the_library():
    major, minor, patch = shmds.version_info()
    assert shmds.version() == "%d.%d.%d" % (major, minor, patch)


def test_region_lock_timeout_is_per_handle_and_bounded(region):
    region.set_lock_timeout(0)
    region.set_lock_timeout(60000)
    for bad in (60001, 2**32, -1):
        with pytest.raises(ValueError):
            region.set_lock_timeout(bad)
    assert region.info()["lock_timeout_ms"] == 60000
    with shmds.Region.open(region.name) as other:  # another handle keeps the region's
        assert other.info()["lock_timeout_ms"] == 10000
