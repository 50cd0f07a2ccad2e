"""Regions, maps, lists, queues and tables: Python objects over the C handles.

Each object wraps one process-local C handle. The rules are the C
library's (see the shmds(7) manual page and the headers):

  * open the region and its objects in every process that uses them -- in
    a multiprocessing worker, open them in the worker (an initializer),
    not before the fork;
  * a handle may be used by one thread at a time;
  * closing a region closes the objects opened in it first; `with` blocks
    close on exit, and a handle that is garbage-collected is closed too.

Keys, values and messages are bytes-like objects (a str is encoded as
UTF-8); what comes back is always bytes, copied out of the region.
"""
import ctypes
import errno
import math
import os
import sys
import weakref
from ctypes import byref, c_int64, c_size_t, c_uint32, c_uint64, c_void_p

from . import _native
from ._native import calls
from .errors import QueueClosed, check

TYPE_LIST = 1
TYPE_MAP = 2
TYPE_QUEUE = 3
TYPE_TABLE = 4
TYPE_USER = 0x10000
_TYPE_NAMES = {TYPE_LIST: "list", TYPE_MAP: "map", TYPE_QUEUE: "queue", TYPE_TABLE: "table"}

_RDONLY = 1 << 0
_SAME_UID = 1 << 1
_MAP_EVICT = 1 << 0
_PUT_NX = 1 << 0
_PUT_XX = 1 << 1
_QUEUE_SPSC = 1 << 0


def _name(name):
    return name.encode() if isinstance(name, str) else bytes(name)


def _bytes(data):
    """A bytes object for a key, value or message."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    return bytes(memoryview(data))


def _key(key):
    """A map key as bytes; keys are at least one byte long."""
    k = _bytes(key)
    if not k:
        raise ValueError("a key is at least one byte long")
    return k


def _copy(ptr, length):
    """length bytes at a C pointer (which may be NULL when length is 0)."""
    return ctypes.string_at(ptr, length) if length else b""


def _timeout_ms(timeout):
    """None: wait without bound (-1); else seconds, rounded up to ms."""
    if timeout is None:
        return -1
    if timeout < 0:
        raise ValueError("timeout must be None or >= 0 seconds")
    return min(int(math.ceil(timeout * 1000)), 2**31 - 1)


class _Buffer:
    """A growable output buffer for calls that copy bytes out and report
    -ENOBUFS with the length they need."""

    def __init__(self, size):
        self.buf = ctypes.create_string_buffer(size)
        self.len = c_size_t(0)

    def call(self, fn, *args):
        """fn(*args, buf, cap, &len, ...) until the buffer is big enough;
        returns (rc, bytes or None)."""
        while True:
            rc = fn(*args, self.buf, len(self.buf), byref(self.len))
            if rc != -errno.ENOBUFS:
                break
            self.buf = ctypes.create_string_buffer(max(self.len.value, 2 * len(self.buf)))
        if rc < 0:
            return rc, None
        return rc, _copy(self.buf, self.len.value)


class _Walk:
    """Collects what a C foreach hands its callback. An exception inside
    the callback stops the walk and is raised once the C call returns."""

    def __init__(self, cfunctype, convert):
        self.items = []
        self.exc = None

        def cb(*args):
            try:
                self.items.append(convert(*args[:-1]))
                return 0
            except BaseException as e:  # re-raised by finish()
                self.exc = e
                return 1

        self.fn = cfunctype(cb)

    def finish(self, rc, what):
        if self.exc is not None:
            raise self.exc
        check(rc, what)
        return self.items


class _Handle:
    """Lifecycle shared by Map, List, Queue and Table."""

    _kind = None  # "map", "list", "queue", "table": the C call prefix

    def __init__(self, region, ptr, name):
        self.region = region
        self.name = name
        self._ptr = ptr
        self._finalizer = weakref.finalize(self, getattr(calls, self._kind + "_close"), ptr)
        region._children.add(self)

    @classmethod
    def _attach(cls, region, name, fn, *args):
        h = c_void_p()
        check(fn(region._h, _name(name), *args, byref(h)), name)
        return cls(region, h.value, name)

    @classmethod
    def open(cls, region, name):
        """Open the existing object `name` in `region` (also read-only)."""
        return cls._attach(region, name, getattr(calls, cls._kind + "_open"))

    @property
    def _h(self):
        if self._ptr is None:
            raise ValueError("%s %r is closed" % (self._kind, self.name))
        return self._ptr

    @property
    def closed(self):
        return self._ptr is None

    def close(self):
        """Drop the handle; the object stays in the region. Idempotent."""
        if self._ptr is not None:
            self._ptr = None
            self._finalizer()

    def destroy(self):
        """Remove the object from the region and free its memory; closes
        the handle. No other process may use the object afterwards."""
        ptr = self._h
        self._ptr = None
        self._finalizer.detach()
        check(getattr(calls, self._kind + "_destroy")(ptr), self.name)

    def check(self):
        """Verify the object's invariants; raises CorruptRegion if broken."""
        check(getattr(calls, self._kind + "_check")(self._h), self.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self._ptr is None else "open"
        return "<shmds.%s %r in %r, %s>" % (type(self).__name__, self.name, self.region.name,
                                            state)


class _Keyed(_Handle):
    """Copying reads by key, shared by Map and Table (a map's expired
    entries and keys a table's current version lacks are absent)."""

    def _lookup(self, key):
        """(True, value bytes) or (False, None) when absent."""
        k = _key(key)
        rc, val = self._buf.call(getattr(calls, self._kind + "_get"), self._h, k, len(k))
        if rc == -errno.ENOENT:
            return False, None
        check(rc, self.name)
        return True, val

    def get(self, key, default=None):
        """The value under key (bytes), or default when absent."""
        found, val = self._lookup(key)
        return val if found else default

    def __getitem__(self, key):
        found, val = self._lookup(key)
        if not found:
            raise KeyError(key)
        return val

    def keys(self):
        """The keys of items() (a subclass's snapshot)."""
        return [k for k, _ in self.items()]

    def values(self):
        return [v for _, v in self.items()]

    def __iter__(self):
        return iter(self.keys())

    def __contains__(self, key):
        k = _key(key)
        rc = getattr(calls, self._kind + "_get")(self._h, k, len(k), None, 0, None)
        if rc == -errno.ENOENT:
            return False
        if rc != -errno.ENOBUFS:  # a value too big for no buffer: present
            check(rc, self.name)
        return True


class Map(_Keyed):
    """A shared hash map from bytes to bytes (shmds/map.h).

    m[key], m[key] = value, del m[key], key in m, len(m) and iteration
    (over a snapshot of the keys) behave as for a dict; a missing key
    raises KeyError. get/put/delete/add expose the rest of the C API:
    TTLs, put-if-absent / put-if-present, and atomic 64-bit counters.
    """

    _kind = "map"

    def __init__(self, region, ptr, name):
        super().__init__(region, ptr, name)
        self._buf = _Buffer(256)

    @classmethod
    def create(cls, region, name, capacity=0, mem_limit=0, stripes=0, default_ttl=0,
               evict=False):
        """Create a map. capacity: expected entries (sizes the first table);
        mem_limit: bytes the entries may use (0: no budget); stripes: lock
        stripes (0: default); default_ttl: seconds entries live when put
        with ttl=0 (0: forever); evict: evict (CLOCK) instead of failing
        with MemoryError-like ENOMEM when over mem_limit."""
        o = _native.new_struct(_native.MapOpts)
        o.capacity, o.mem_limit, o.stripes = capacity, mem_limit, stripes
        o.default_ttl_s = default_ttl
        o.flags = _MAP_EVICT if evict else 0
        return cls._attach(region, name, calls.map_create, byref(o))

    @staticmethod
    def size_hint(entries, key_bytes, value_bytes):
        """Region size (bytes) that comfortably holds such a map."""
        return calls.map_size_hint(entries, key_bytes, value_bytes)


    def put(self, key, value, ttl=0, nx=False, xx=False):
        """Store value under key. ttl: seconds to live (0: the map's
        default). nx: only if absent; xx: only if present. Returns True when
        stored, False when nx/xx said no."""
        if nx and xx:
            raise ValueError("put: nx and xx exclude each other")
        k, v = _key(key), _bytes(value)
        flags = (_PUT_NX if nx else 0) | (_PUT_XX if xx else 0)
        rc = calls.map_put(self._h, k, len(k), v, len(v), ttl, flags)
        if (nx and rc == -errno.EEXIST) or (xx and rc == -errno.ENOENT):
            return False
        check(rc, self.name)
        return True

    def __setitem__(self, key, value):
        self.put(key, value)

    def delete(self, key):
        """Remove key; KeyError when absent."""
        k = _key(key)
        rc = calls.map_del(self._h, k, len(k))
        if rc == -errno.ENOENT:
            raise KeyError(key)
        check(rc, self.name)

    __delitem__ = delete

    def add(self, key, delta=1):
        """Atomically add delta to the 64-bit counter under key (created at
        0 when absent) and return the new value. ValueError (EINVAL) if the
        key holds a value that is not a counter; OverflowError if the sum
        does not fit 64 bits."""
        k = _key(key)
        out = c_int64()
        rc = calls.map_add(self._h, k, len(k), delta, byref(out))
        if rc == -errno.EOVERFLOW:
            raise OverflowError("%s: counter %r would overflow" % (self.name, key))
        if rc == -errno.EINVAL:
            raise ValueError("%s: %r does not hold an 8-byte counter" % (self.name, key))
        check(rc, self.name)
        return out.value

    def counter(self, key):
        """The counter under key as an int (KeyError when absent)."""
        return int.from_bytes(self[key], sys.byteorder, signed=True)

    def __len__(self):
        n = c_uint64()
        check(calls.map_count(self._h, byref(n)), self.name)
        return n.value

    def items(self):
        """A list of (key, value) pairs: a snapshot, each stripe consistent."""
        w = _Walk(_native.PAIR_FN,
                  lambda k, kl, v, vl: (_copy(k, kl), _copy(v, vl)))
        return w.finish(calls.map_foreach(self._h, w.fn, None), self.name)

    def stats(self):
        """The map's statistics as a dict (entries, hits, misses, ...)."""
        s = _native.new_struct(_native.MapStats)
        check(calls.map_stats_get(self._h, byref(s)), self.name)
        return _native.struct_dict(s)


class List(_Handle):
    """A shared doubly linked list of bytes (shmds/list.h), used like a
    collections.deque: append, appendleft, pop, popleft, len, iteration
    (over a snapshot)."""

    _kind = "list"

    def __init__(self, region, ptr, name):
        super().__init__(region, ptr, name)
        self._buf = _Buffer(256)

    @classmethod
    def create(cls, region, name):
        return cls._attach(region, name, calls.list_create)

    def push_back(self, data):
        d = _bytes(data)
        check(calls.list_push_back(self._h, d, len(d)), self.name)

    def push_front(self, data):
        d = _bytes(data)
        check(calls.list_push_front(self._h, d, len(d)), self.name)

    def _pop(self, fn):
        rc, val = self._buf.call(fn, self._h)
        if rc == -errno.ENOENT:
            raise IndexError("pop from an empty list")
        check(rc, self.name)
        return val

    def pop_front(self):
        """Remove and return the head element; IndexError when empty."""
        return self._pop(calls.list_pop_front)

    def pop_back(self):
        """Remove and return the tail element; IndexError when empty."""
        return self._pop(calls.list_pop_back)

    append, appendleft, pop, popleft = push_back, push_front, pop_back, pop_front

    def __len__(self):
        n = c_size_t()
        check(calls.list_len(self._h, byref(n)), self.name)
        return n.value

    def to_list(self):
        """The elements, head to tail, as one consistent snapshot."""
        w = _Walk(_native.BYTES_FN, _copy)
        return w.finish(calls.list_foreach(self._h, w.fn, None), self.name)

    def __iter__(self):
        return iter(self.to_list())


class Queue(_Handle):
    """A bounded queue of byte messages (shmds/queue.h).

    send/recv take a timeout in seconds: None waits without bound, 0 never
    waits (BlockingIOError when full / empty), otherwise TimeoutError after
    that long. After shutdown(), send raises QueueClosed and recv drains
    what is left, then raises QueueClosed; iterating receives until then.
    """

    _kind = "queue"

    def __init__(self, region, ptr, name):
        super().__init__(region, ptr, name)
        self._buf = _Buffer(4096)

    @classmethod
    def create(cls, region, name, capacity, max_msg, spsc=False):
        """capacity: ring bytes (see bytes_for); max_msg: largest message;
        spsc: one producer and one consumer, lock-free."""
        return cls._attach(region, name, calls.queue_create, capacity, max_msg,
                           _QUEUE_SPSC if spsc else 0)

    @staticmethod
    def bytes_for(msgs, length):
        """Ring bytes so that msgs messages of length bytes fit at once."""
        return msgs * (8 + ((length + 7) & ~7))

    def send(self, msg, timeout=None):
        d = _bytes(msg)
        check(calls.queue_send(self._h, d, len(d), _timeout_ms(timeout)), self.name)

    def recv(self, timeout=None):
        """The oldest message, as bytes."""
        t = _timeout_ms(timeout)
        rc, val = self._buf.call(lambda h, b, c, n: calls.queue_recv(h, b, c, n, t), self._h)
        check(rc, self.name)
        return val

    def shutdown(self):
        check(calls.queue_shutdown(self._h), self.name)

    def __len__(self):
        n = c_uint64()
        check(calls.queue_len(self._h, byref(n)), self.name)
        return n.value

    def __iter__(self):
        while True:
            try:
                yield self.recv()
            except QueueClosed:
                return


def _pairs(data):
    """(key, value) pairs from a mapping or an iterable of pairs."""
    items = getattr(data, "items", None)
    return items() if callable(items) else data


class Guard:
    """A read guard on a region (shmds/guard.h), as a context manager.

    While a thread is inside it, nothing it reaches through the region's
    structures is freed: a table version it found a value in stays whole
    however many versions are published meanwhile. Table.lookup() takes a
    guard to save entering one per call. A guard belongs to the thread that
    entered it; nested guards only count. Leave it soon: a guard held for
    long delays the freeing of replaced versions. Made by Region.guard().
    """

    def __init__(self, region):
        self.region = region
        self._ptr = None
        self._owner = None
        region._children.add(self)

    def enter(self):
        """Enter the guard (a no-op when this object is already inside)."""
        if self._ptr is None:
            g = c_void_p()
            check(calls.guard_enter(self.region._h, byref(g)), self.region.name)
            self._ptr, self._owner = g.value, os.getpid()
        return self

    def leave(self):
        """Leave the guard. Idempotent; a forked child's copy is dropped
        without touching its parent's slot."""
        ptr, self._ptr = self._ptr, None
        if ptr is not None and self._owner == os.getpid():
            calls.guard_leave(ptr)

    close = leave

    @property
    def _h(self):
        if self._ptr is None or self._owner != os.getpid():
            raise ValueError("the guard on %r is not entered (in this process)"
                             % self.region.name)
        return self._ptr

    @property
    def inside(self):
        return self._ptr is not None and self._owner == os.getpid()

    def __enter__(self):
        return self.enter()

    def __exit__(self, *exc):
        self.leave()


class TableBuilder:
    """The next version of a table, collected in this process's memory
    until publish() lays it out in the region and makes it current with
    one store (shmds_table_build(), shmds_table_publish()).

    Made by Table.build() / Region.build_table(). As a context manager it
    publishes on a clean exit (the new version number is then in
    .version) and aborts when the block raises. A builder belongs to the
    process that made it: a forked child may not add to it or publish it.
    """

    def __init__(self, region, name, expected=0):
        self.region = region
        self.name = name
        self.version = None
        b = c_void_p()
        check(calls.table_build(region._h, _name(name), expected, byref(b)), name)
        self._ptr = b.value
        self._owner = os.getpid()
        self._finalizer = weakref.finalize(self, calls.table_abort, b.value)
        region._children.add(self)

    @property
    def _h(self):
        if self._ptr is None:
            raise ValueError("table builder for %r is finished" % self.name)
        if self._owner != os.getpid():
            raise ValueError("table builder for %r belongs to process %d"
                             % (self.name, self._owner))
        return self._ptr

    def add(self, key, value):
        """Add one pair (bytes; a str is UTF-8). A key added again keeps
        the value added last."""
        k, v = _key(key), _bytes(value)
        check(calls.table_add(self._h, k, len(k), v, len(v)), self.name)

    __setitem__ = add

    def update(self, data):
        """Add every pair of a mapping or an iterable of (key, value)."""
        for k, v in _pairs(data):
            self.add(k, v)

    def publish(self):
        """Make the pairs the table's current version and return its number.
        VersionConflict: another builder published since this one began
        (nothing changed; build again from fresh data). The builder is
        finished whatever the result."""
        ptr = self._h
        self._ptr = None
        self._finalizer.detach()
        v = c_uint64()
        check(calls.table_publish(ptr, byref(v)), self.name)
        self.version = v.value
        return self.version

    def abort(self):
        """Drop the pairs without publishing. Idempotent."""
        if self._ptr is not None:
            self._ptr = None
            self._finalizer()

    close = abort

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None and self._ptr is not None:
            self.publish()
        else:
            self.abort()


class Table(_Keyed):
    """A published lookup table (shmds/table.h): an immutable bytes-to-bytes
    table that one process builds and publishes and many read with no lock,
    replaced as a whole by the next publish (readers see the old version or
    the new one, never a mix).

    t.get(key) returns bytes or None, t[key] raises KeyError, `key in t`,
    len(t), iteration (the keys of one version), items(), version.
    Table.publish(region, name, data) builds and publishes in one call;
    Table.build() gives a TableBuilder for adding pairs one at a time.
    Works on read-only attaches. A table with no version yet finds no key.
    """

    _kind = "table"

    def __init__(self, region, ptr, name):
        super().__init__(region, ptr, name)
        self._buf = _Buffer(256)

    @staticmethod
    def build(region, name, expected=0):
        """A TableBuilder for the next version of table `name` (created,
        with no version yet, when the region has none). expected: how many
        pairs will be added (a sizing hint)."""
        return TableBuilder(region, name, expected)

    @classmethod
    def publish(cls, region, name, data, expected=None):
        """Publish a mapping or an iterable of (key, value) pairs as the
        next version of table `name`; returns the new version number."""
        if expected is None:
            expected = len(data) if hasattr(data, "__len__") else 0
        with TableBuilder(region, name, expected) as b:
            b.update(data)
        return b.version


    def lookup(self, key, guard=None):
        """(value, version): the value under key (None when absent) and the
        number of the version that answered (0: none published yet). With
        an entered Guard of this thread, no guard is entered per call."""
        k = _key(key)
        val, vlen, ver = c_void_p(), c_size_t(), c_uint64()
        if guard is None:
            with Guard(self.region) as g:
                return self.lookup(key, g)
        rc = calls.table_get_ref(self._h, guard._h, k, len(k), byref(val), byref(vlen),
                                 byref(ver))
        if rc == -errno.ENOENT:
            return None, ver.value
        check(rc, self.name)
        return _copy(val.value, vlen.value), ver.value

    def __len__(self):
        n = c_uint64()
        check(calls.table_count(self._h, byref(n)), self.name)
        return n.value

    def snapshot(self):
        """(version, [(key, value), ...]): every pair of one version, in
        the order they were added."""
        w = _Walk(_native.PAIR_FN,
                  lambda k, kl, v, vl: (_copy(k, kl), _copy(v, vl)))
        ver = c_uint64()
        items = w.finish(calls.table_foreach(self._h, w.fn, None, byref(ver)), self.name)
        return ver.value, items

    def items(self):
        """The pairs of the current version, in the order they were added."""
        return self.snapshot()[1]

    def stats(self):
        """Facts about the current version as a dict (version, count,
        slots, bytes, max_probe, publishes, ...)."""
        s = _native.new_struct(_native.TableStats)
        check(calls.table_stat(self._h, byref(s)), self.name)
        return _native.struct_dict(s)

    @property
    def version(self):
        """The current version's number (0: none published yet)."""
        return self.stats()["version"]


class Region:
    """A named POSIX shared-memory region holding shmds objects.

    Region.create(name, size) makes one (mode 0600 by default);
    Region.open(name) attaches to an existing one (readonly=True for a
    read-only attach, same_uid=True to refuse a region another user owns).
    Use either as a context manager to close it on exit. Names are POSIX
    shared-memory names: "/myapp".
    """

    def __init__(self, ptr, name):
        self.name = name
        self._ptr = ptr
        self._children = weakref.WeakSet()
        self._finalizer = weakref.finalize(self, calls.region_close, ptr)

    @classmethod
    def create(cls, name, size, mode=0o600, lock_timeout_ms=0):
        o = _native.new_struct(_native.RegionOpts)
        o.mode, o.lock_timeout_ms = mode, lock_timeout_ms
        r = c_void_p()
        check(calls.region_create(_name(name), size, byref(o), byref(r)), name)
        return cls(r.value, name)

    @classmethod
    def open(cls, name, readonly=False, same_uid=False):
        flags = (_RDONLY if readonly else 0) | (_SAME_UID if same_uid else 0)
        r = c_void_p()
        check(calls.region_open(_name(name), flags, byref(r)), name)
        return cls(r.value, name)

    @staticmethod
    def unlink(name):
        """Remove the region's name (attached processes keep their mapping)."""
        check(calls.region_unlink(_name(name)), name)

    @property
    def _h(self):
        if self._ptr is None:
            raise ValueError("region %r is closed" % self.name)
        return self._ptr

    @property
    def closed(self):
        return self._ptr is None

    def close(self):
        """Close every object opened in this region, then unmap it."""
        if self._ptr is None:
            return
        for child in list(self._children):
            child.close()
        rc = calls.region_close(self._ptr)
        check(rc, self.name)
        self._ptr = None
        self._finalizer.detach()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<shmds.Region %r, %s>" % (self.name, "closed" if self._ptr is None else "open")

    @property
    def size(self):
        return calls.region_size(self._h)

    @property
    def readonly(self):
        return calls.region_readonly(self._h) == 1

    def set_lock_timeout(self, ms):
        """This handle's bound on waits for locks and for writers, in ms
        (process-local; other handles keep theirs). 0 never waits: a held
        lock is an OSError with errno EBUSY and a writer caught mid-change
        TimeoutError, at once. ValueError above the library's maximum."""
        if not 0 <= ms <= 0xFFFFFFFF:
            raise ValueError("lock timeout %r ms is out of range" % (ms,))
        rc = calls.region_set_lock_timeout(self._h, ms)
        if rc == -errno.EINVAL:
            raise ValueError("lock timeout %r ms is out of range" % (ms,))
        check(rc, self.name)

    def info(self):
        """The header as a dict (size, heap_size, creator_pid, epoch, ...)."""
        i = _native.new_struct(_native.RegionInfo)
        check(calls.region_info_get(self._h, byref(i)), self.name)
        return _native.struct_dict(i)

    def heap(self):
        """Heap accounting as a dict (used_bytes, free_bytes, largest_free, ...)."""
        s = _native.new_struct(_native.AllocStats)
        check(calls.alloc_stats_get(self._h, byref(s)), self.name)
        return _native.struct_dict(s)

    def check(self):
        """Verify the whole region; raises CorruptRegion (or another error)
        when something is wrong."""
        check(calls.region_check(self._h), self.name)

    def reclaim(self):
        """Finish creates and destroys whose process died part way."""
        check(calls.region_reclaim(self._h), self.name)

    def objects(self):
        """{name: (kind, offset)} for every named object; kind is "list",
        "map", "queue", "table", or the numeric type tag of a user object."""
        w = _Walk(_native.ROOT_FN,
                  lambda n, t, off: (n.decode(errors="replace"), _TYPE_NAMES.get(t, t), off))
        items = w.finish(calls.root_foreach(self._h, w.fn, None), self.name)
        return {n: (t, off) for n, t, off in items}

    def kind(self, name):
        """The kind of the named object ("map", ...); KeyError if none."""
        t = c_uint32()
        rc = calls.root_get(self._h, _name(name), byref(t), None)
        if rc == -errno.ENOENT:
            raise KeyError(name)
        check(rc, self.name)
        return _TYPE_NAMES.get(t.value, t.value)

    # Shortcuts: r.map("cache") is Map.open(r, "cache"), and so on.
    def map(self, name):
        return Map.open(self, name)

    def create_map(self, name, **opts):
        return Map.create(self, name, **opts)

    def list(self, name):
        return List.open(self, name)

    def create_list(self, name):
        return List.create(self, name)

    def queue(self, name):
        return Queue.open(self, name)

    def create_queue(self, name, capacity, max_msg, spsc=False):
        return Queue.create(self, name, capacity, max_msg, spsc)

    def table(self, name):
        return Table.open(self, name)

    def build_table(self, name, expected=0):
        return Table.build(self, name, expected)

    def publish_table(self, name, data, expected=None):
        return Table.publish(self, name, data, expected)

    def guard(self):
        """A read Guard on this region (enter it with `with`)."""
        return Guard(self)


def unlink(name):
    """Remove a region's name; see Region.unlink."""
    Region.unlink(name)
