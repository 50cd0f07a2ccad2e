"""The C library, loaded with ctypes, and the prototypes of its calls.

Every C call the package uses is declared once, in PROTOTYPES below: adding
a call the library grew is one line there plus the Python method that uses
it. A call the loaded library does not export (an older libshmds) is left
out of `calls` rather than failing the import; the method that needs it
raises NotImplementedError.

Which library is loaded, in this order:
  1. the file named by the SHMDS_LIBRARY environment variable (the tests
     point it at the library just built);
  2. the library `make install` put next to this package's configuration
     (_config.LIBRARY);
  3. whatever the dynamic linker finds as "shmds" (ctypes.util.find_library).

Structs passed to the library are allocated with room to spare past their
Python definition, zero-filled: options structs mean "defaults" when zero,
so a library whose structs grew a field at the end reads zeros, and stats
structs it fills may be longer than the Python view without overrunning it.
"""
import ctypes
import ctypes.util
import os
from ctypes import (POINTER, CFUNCTYPE, Structure, c_char_p, c_int, c_int64,
                    c_size_t, c_uint, c_uint32, c_uint64, c_void_p)

# Bytes of zeros allocated past every struct the library reads or fills.
_STRUCT_SLACK = 256


def _candidates():
    env = os.environ.get("SHMDS_LIBRARY")
    if env:
        yield env
        return
    try:
        from . import _config
        yield _config.LIBRARY
    except ImportError:
        pass
    found = ctypes.util.find_library("shmds")
    if found:
        yield found


def _load():
    tried = []
    for path in _candidates():
        try:
            return ctypes.CDLL(path, use_errno=True)
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
    raise ImportError("shmds: cannot load libshmds; tried: %s. Install the C library "
                      "(make install) or set SHMDS_LIBRARY to its path."
                      % ("; ".join(tried) or "nothing found"))


lib = _load()

region_p = c_void_p
handle_p = c_void_p


class RegionOpts(Structure):
    _fields_ = [("mode", c_uint32), ("lock_timeout_ms", c_uint32), ("max_size", c_size_t)]


class RegionInfo(Structure):
    _fields_ = [("size", c_uint64), ("heap_offset", c_uint64), ("heap_size", c_uint64),
                ("format_version", c_uint32), ("lock_timeout_ms", c_uint32),
                ("created_unix_ns", c_uint64), ("creator_pid", c_int),
                ("creator_uid", c_uint32), ("epoch", c_uint64), ("roots", c_uint32),
                ("roots_max", c_uint32), ("max_size", c_uint64), ("initial_size", c_uint64),
                ("mapped_size", c_uint64), ("map_calls", c_uint64)]


class AllocStats(Structure):
    _fields_ = [("heap_bytes", c_uint64), ("used_bytes", c_uint64), ("free_bytes", c_uint64),
                ("largest_free", c_uint64), ("used_blocks", c_uint64),
                ("free_blocks", c_uint64)]


class MapOpts(Structure):
    _fields_ = [("capacity", c_uint64), ("mem_limit", c_uint64), ("stripes", c_uint32),
                ("default_ttl_s", c_uint32), ("flags", c_uint32),
                ("default_ttl_ms", c_uint64)]


class MapStats(Structure):
    _fields_ = [("entries", c_uint64), ("buckets", c_uint64), ("hits", c_uint64),
                ("misses", c_uint64), ("inserts", c_uint64), ("deletes", c_uint64),
                ("evictions", c_uint64), ("expirations", c_uint64),
                ("recoveries", c_uint64), ("mem_used", c_uint64), ("fills", c_uint64),
                ("takeovers", c_uint64), ("mem_limit", c_uint64), ("default_ttl_ms", c_uint64),
                ("flags", c_uint32), ("stripes", c_uint32)]


class TableStats(Structure):
    _fields_ = [("version", c_uint64), ("count", c_uint64), ("slots", c_uint64),
                ("bytes", c_uint64), ("data_bytes", c_uint64), ("max_probe", c_uint32),
                ("builds", c_uint32), ("published_ns", c_uint64), ("publishes", c_uint64),
                ("reclaimed", c_uint64)]


def new_struct(cls):
    """A zeroed instance of cls backed by a buffer _STRUCT_SLACK bytes longer."""
    buf = ctypes.create_string_buffer(ctypes.sizeof(cls) + _STRUCT_SLACK)
    s = cls.from_buffer(buf)
    s._keepalive = buf
    return s


def struct_dict(s):
    return {name: getattr(s, name) for name, _ in s._fields_}


ROOT_FN = CFUNCTYPE(c_int, c_char_p, c_uint32, c_uint64, c_void_p)
BYTES_FN = CFUNCTYPE(c_int, c_void_p, c_size_t, c_void_p)
PAIR_FN = CFUNCTYPE(c_int, c_void_p, c_size_t, c_void_p, c_size_t, c_void_p)

P = POINTER
PROTOTYPES = {
    # errors and version
    "shmds_strerror": (c_char_p, [c_int]),
    "shmds_errname": (c_char_p, [c_int]),
    "shmds_version": (c_uint, []),
    "shmds_version_string": (c_char_p, []),
    # regions
    "shmds_region_create": (c_int, [c_char_p, c_size_t, c_void_p, P(region_p)]),
    "shmds_region_open": (c_int, [c_char_p, c_uint, P(region_p)]),
    "shmds_region_close": (c_int, [region_p]),
    "shmds_region_unlink": (c_int, [c_char_p]),
    "shmds_region_size": (c_size_t, [region_p]),
    "shmds_region_readonly": (c_int, [region_p]),
    "shmds_region_set_lock_timeout": (c_int, [region_p, c_uint32]),
    "shmds_region_info_get": (c_int, [region_p, c_void_p]),
    "shmds_region_check": (c_int, [region_p]),
    "shmds_region_reclaim": (c_int, [region_p]),
    "shmds_root_get": (c_int, [region_p, c_char_p, P(c_uint32), P(c_uint64)]),
    "shmds_root_foreach": (c_int, [region_p, ROOT_FN, c_void_p]),
    "shmds_alloc_stats_get": (c_int, [region_p, c_void_p]),
    # maps
    "shmds_map_create": (c_int, [region_p, c_char_p, c_void_p, P(handle_p)]),
    "shmds_map_open": (c_int, [region_p, c_char_p, P(handle_p)]),
    "shmds_map_close": (None, [handle_p]),
    "shmds_map_destroy": (c_int, [handle_p]),
    "shmds_map_put": (c_int, [handle_p, c_char_p, c_size_t, c_char_p, c_size_t, c_uint32,
                              c_uint]),
    "shmds_map_get": (c_int, [handle_p, c_char_p, c_size_t, c_void_p, c_size_t,
                              P(c_size_t)]),
    "shmds_map_del": (c_int, [handle_p, c_char_p, c_size_t]),
    "shmds_map_add": (c_int, [handle_p, c_char_p, c_size_t, c_int64, P(c_int64)]),
    "shmds_map_count": (c_int, [handle_p, P(c_uint64)]),
    "shmds_map_foreach": (c_int, [handle_p, PAIR_FN, c_void_p]),
    "shmds_map_stats_get": (c_int, [handle_p, c_void_p]),
    "shmds_map_check": (c_int, [handle_p]),
    "shmds_map_size_hint": (c_uint64, [c_uint64, c_size_t, c_size_t]),
    # lists
    "shmds_list_create": (c_int, [region_p, c_char_p, P(handle_p)]),
    "shmds_list_open": (c_int, [region_p, c_char_p, P(handle_p)]),
    "shmds_list_close": (None, [handle_p]),
    "shmds_list_destroy": (c_int, [handle_p]),
    "shmds_list_push_back": (c_int, [handle_p, c_char_p, c_size_t]),
    "shmds_list_push_front": (c_int, [handle_p, c_char_p, c_size_t]),
    "shmds_list_pop_front": (c_int, [handle_p, c_void_p, c_size_t, P(c_size_t)]),
    "shmds_list_pop_back": (c_int, [handle_p, c_void_p, c_size_t, P(c_size_t)]),
    "shmds_list_len": (c_int, [handle_p, P(c_size_t)]),
    "shmds_list_foreach": (c_int, [handle_p, BYTES_FN, c_void_p]),
    "shmds_list_check": (c_int, [handle_p]),
    # queues
    "shmds_queue_create": (c_int, [region_p, c_char_p, c_size_t, c_size_t, c_uint,
                                   P(handle_p)]),
    "shmds_queue_open": (c_int, [region_p, c_char_p, P(handle_p)]),
    "shmds_queue_close": (None, [handle_p]),
    "shmds_queue_destroy": (c_int, [handle_p]),
    "shmds_queue_send": (c_int, [handle_p, c_char_p, c_size_t, c_int]),
    "shmds_queue_recv": (c_int, [handle_p, c_void_p, c_size_t, P(c_size_t), c_int]),
    "shmds_queue_shutdown": (c_int, [handle_p]),
    "shmds_queue_len": (c_int, [handle_p, P(c_uint64)]),
    "shmds_queue_check": (c_int, [handle_p]),
    # read guards
    "shmds_guard_enter": (c_int, [region_p, P(handle_p)]),
    "shmds_guard_leave": (None, [handle_p]),
    # published tables
    "shmds_table_build": (c_int, [region_p, c_char_p, c_uint64, P(handle_p)]),
    "shmds_table_add": (c_int, [handle_p, c_char_p, c_size_t, c_char_p, c_size_t]),
    "shmds_table_publish": (c_int, [handle_p, P(c_uint64)]),
    "shmds_table_abort": (None, [handle_p]),
    "shmds_table_open": (c_int, [region_p, c_char_p, P(handle_p)]),
    "shmds_table_close": (None, [handle_p]),
    "shmds_table_destroy": (c_int, [handle_p]),
    "shmds_table_get": (c_int, [handle_p, c_char_p, c_size_t, c_void_p, c_size_t,
                                P(c_size_t)]),
    "shmds_table_get_ref": (c_int, [handle_p, handle_p, c_char_p, c_size_t, P(c_void_p),
                                    P(c_size_t), P(c_uint64)]),
    "shmds_table_stat": (c_int, [handle_p, c_void_p]),
    "shmds_table_count": (c_int, [handle_p, P(c_uint64)]),
    "shmds_table_foreach": (c_int, [handle_p, PAIR_FN, c_void_p, P(c_uint64)]),
    "shmds_table_check": (c_int, [handle_p]),
}


class _Calls:
    """The declared calls the loaded library exports, as attributes named
    without the shmds_ prefix (calls.map_put)."""

    def __getattr__(self, name):  # only for names not set below
        raise NotImplementedError("the loaded libshmds has no shmds_%s" % name)


calls = _Calls()
for _name, (_res, _args) in PROTOTYPES.items():
    _fn = getattr(lib, _name, None)
    if _fn is None:
        continue
    _fn.restype = _res
    _fn.argtypes = _args
    setattr(calls, _name[len("shmds_"):], _fn)

