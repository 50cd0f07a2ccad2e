"""shmds: crash-safe data structures in POSIX shared memory, from Python.

A ctypes binding over the installed C library (libshmds). A region is a
named shared-memory object; inside it live maps, lists, queues and
published lookup tables that every process attaching the region -- in C,
in Python, or both -- sees, and that stay consistent when a process is
killed in the middle of a change (the next one to take the lock repairs
it).

    import shmds

    with shmds.Region.create("/myapp", 16 << 20) as r:
        m = r.create_map("cache")
        m[b"user:1"] = b"alice"
        m.add(b"hits")                 # an atomic shared counter
        q = r.create_queue("jobs", 1 << 20, 4096)
        q.send(b"job 1")
        r.publish_table("prices", {b"apple": b"3", b"pear": b"5"})

    # in another process:
    with shmds.Region.open("/myapp") as r:
        print(r.map("cache")[b"user:1"], r.queue("jobs").recv(timeout=1))
        print(r.table("prices").get(b"apple"))   # b"3"; None if absent

    shmds.unlink("/myapp")

Errors are exceptions (see shmds.errors): KeyError for an absent key,
IndexError for an empty list, FileNotFoundError / FileExistsError for
region names, TimeoutError for a wait that ran out, and ShmdsError
subclasses for the library's own codes (CorruptRegion, QueueClosed, ...).
"""
from ._native import calls as _calls
from .core import (TYPE_LIST, TYPE_MAP, TYPE_QUEUE, TYPE_TABLE, TYPE_USER, Guard, List, Map,
                   Queue, Region, Table, TableBuilder, unlink)
from .errors import (ABIError, CorruptRegion, FormatError, NotRecoverable, QueueClosed,
                     ReadOnlyRegion, ShmdsError, VersionConflict, WrongType)

__all__ = [
    "Region", "Map", "List", "Queue", "Table", "TableBuilder", "Guard", "unlink", "version",
    "version_info", "strerror", "errname", "ShmdsError", "CorruptRegion", "FormatError",
    "ABIError", "NotRecoverable", "WrongType", "QueueClosed", "ReadOnlyRegion", "VersionConflict",
    "TYPE_LIST", "TYPE_MAP", "TYPE_QUEUE", "TYPE_TABLE", "TYPE_USER",
]


def version():
    """The loaded C library's version, "MAJOR.MINOR.PATCH"."""
    return _calls.version_string().decode()


def version_info():
    """The loaded C library's version as a (major, minor, patch) tuple."""
    v = _calls.version()
    return (v >> 16, (v >> 8) & 0xFF, v & 0xFF)


def strerror(code):
    """The library's description of any value a shmds call returns."""
    return _calls.strerror(code).decode()


def errname(code):
    """The symbolic name of any value a shmds call returns ("ENOENT", ...)."""
    return _calls.errname(code).decode()


__version__ = version()
