"""The structs the binding declares again in ctypes match the C headers.

The C side is tests/peer, which prints each struct's size and member
offsets as the compiler laid them out. A struct that gains, loses or moves
a member in the headers fails here until shmds/_native.py follows.
"""
import ctypes
import os
import subprocess

from shmds import _native

STRUCTS = {
    "shmds_region_opts": _native.RegionOpts,
    "shmds_region_info": _native.RegionInfo,
    "shmds_alloc_stats": _native.AllocStats,
    "shmds_map_opts": _native.MapOpts,
    "shmds_map_stats": _native.MapStats,
    "shmds_table_stats": _native.TableStats,
}


def test_layout_ctypes_structs_match_the_headers(builddir):
    out = subprocess.run([os.path.join(builddir, "tests/peer"), "layout"], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    seen = set()
    for line in out.splitlines():
        name, size, *members = line.split()
        cls = STRUCTS[name]
        seen.add(name)
        c_members = dict(m.split(":") for m in members)
        py_members = {f: getattr(cls, f).offset for f, _ in cls._fields_}
        assert {k: int(v) for k, v in c_members.items()} == py_members, name
        assert int(size) == ctypes.sizeof(cls), name
    assert seen == set(STRUCTS)
