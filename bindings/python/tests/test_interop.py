"""A C process and a Python process sharing one region.

The C side is the project's own programs from the build tree: the test
peer, the shmds tool, and the xfr_writer / xfr_reader examples, which
stream a file through a queue while both processes are attached.
"""
import json
import os
import subprocess
import time

import pytest

import shmds

XFR_SLACK = 256 << 10  # examples/xfr.h: XFR_REGION_SLACK
XFR_BLOCK = 64 << 10   # XFR_DEFAULT_BLOCK
XFR_CAP = 4 << 20      # XFR_DEFAULT_CAPACITY


def run(builddir, prog, *args, **kw):
    return subprocess.run([os.path.join(builddir, prog)] + list(args), check=True,
                          capture_output=True, timeout=120, **kw)


def test_interop_c_writes_a_map_python_reads_it(builddir, region):
    run(builddir, "tests/peer", "mkmap", region.name, "cities", "paris", "France",
        "rome", "Italy")
    m = region.map("cities")
    assert dict(m.items()) == {b"paris": b"France", b"rome": b"Italy"}
    m[b"oslo"] = b"Norway"
    m.check()


def test_interop_c_publishes_a_table_python_reads_and_republishes(builddir, region):
    run(builddir, "tests/peer", "mktable", region.name, "prices", "apple", "3", "pear", "5")
    t = region.table("prices")
    assert dict(t.items()) == {b"apple": b"3", b"pear": b"5"} and t.version == 1
    run(builddir, "tests/peer", "mktable", region.name, "prices", "apple", "4")
    assert t.lookup(b"apple") == (b"4", 2) and t.get(b"pear") is None
    assert region.publish_table("prices", {"fig": "9"}) == 3
    out = run(builddir, "tools/shmds", "dump", region.name, "prices", "--json").stdout
    assert json.loads(out) == {"fig": "9"}


def test_interop_python_writes_c_tool_reads(builddir, region):
    m = region.create_map("m")
    want = {"k%d" % i: "v\"%d\t" % i for i in range(50)}
    for k, v in want.items():
        m[k] = v
    region.create_queue("q", 4096, 64).send(b"x")
    out = run(builddir, "tools/shmds", "dump", region.name, "m", "--json").stdout
    assert json.loads(out) == want
    run(builddir, "tools/shmds", "check", region.name)
    info = json.loads(run(builddir, "tools/shmds", "info", region.name, "--json").stdout)
    kinds = {o["name"]: o["type"] for o in info["objects"]}
    assert kinds == {"m": "map", "q": "queue"}


def test_interop_c_reads_a_queue_python_writes_meanwhile(builddir, name, tmp_path):
    data = os.urandom(3 * XFR_CAP + 12345)
    out = tmp_path / "out"
    with open(out, "wb") as f:
        reader = subprocess.Popen([os.path.join(builddir, "examples/xfr_reader"), "-n", name,
                                   "-t", "60"], stdout=f)
    try:
        with shmds.Region.create(name, XFR_CAP + XFR_SLACK) as r:
            done = r.create_queue("xfr.done", 64, 8)
            q = r.create_queue("xfr.data", XFR_CAP, XFR_BLOCK, spsc=True)
            for i in range(0, len(data), XFR_BLOCK):
                q.send(data[i:i + XFR_BLOCK], timeout=60)
            q.shutdown()
            assert done.recv(timeout=60) == b"done"
        assert reader.wait(60) == 0
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert out.read_bytes() == data


def test_interop_python_reads_a_queue_c_writes_meanwhile(builddir, name, tmp_path):
    data = os.urandom(2 * XFR_CAP + 999)
    src = tmp_path / "in"
    src.write_bytes(data)
    with open(src, "rb") as f:
        writer = subprocess.Popen([os.path.join(builddir, "examples/xfr_writer"), "-n", name,
                                   "-t", "60"], stdin=f)
    try:
        deadline = time.monotonic() + 60
        while True:  # the writer may not have made the region or its queues yet
            try:
                r = shmds.Region.open(name)
            except (FileNotFoundError, BlockingIOError):
                r = None
            if r is not None:
                try:
                    q, done = r.queue("xfr.data"), r.queue("xfr.done")
                    break
                except FileNotFoundError:
                    r.close()
            assert time.monotonic() < deadline, "xfr_writer never made its queues"
            time.sleep(0.01)
        with r:
            got = b"".join(q)
            done.send(b"done")
        assert writer.wait(60) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert got == data
