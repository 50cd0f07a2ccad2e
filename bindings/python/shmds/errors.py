"""Exceptions for what shmds calls return.

A C call returns 0, a negative errno value, or one of the library's own
codes (SHMDS_E*, -4001 to -4099). `error(rc)` turns any of them into an
exception:

  * an errno value becomes the OSError subclass Python itself picks for it
    (FileNotFoundError for ENOENT, FileExistsError for EEXIST,
    TimeoutError for ETIMEDOUT, BlockingIOError for EAGAIN,
    PermissionError for EACCES and EPERM, a plain OSError otherwise), with
    errno set and the library's description as its message;
  * a library code becomes a ShmdsError subclass: CorruptRegion,
    FormatError, ABIError, NotRecoverable, WrongType, QueueClosed,
    ReadOnlyRegion, VersionConflict. Codes a newer library adds that this
    module does not name yet still become a ShmdsError carrying the code
    and its name.

The containers raise the exceptions Python code expects where the C
result means one: KeyError for a key that is absent, IndexError for a pop
from an empty list.
"""
from ._native import calls

# The library's own codes lie in this range (shmds/error.h).
_LIB_FIRST, _LIB_LAST = -4099, -4001


class ShmdsError(OSError):
    """A result only shmds can give. `code` is the C value (negative),
    `name` its symbolic name ("SHMDS_ECORRUPT"); errno is -code."""

    code = 0
    name = "UNKNOWN"

    def __init__(self, code, what=None):
        desc = calls.strerror(code).decode()
        msg = "%s (%s)" % (desc, calls.errname(code).decode())
        if what is not None:
            msg = "%s: %s" % (what, msg)
        super().__init__(-code, msg)
        self.code = code
        self.name = calls.errname(code).decode()
        self.what = what

    def __str__(self):
        return self.strerror

    def __reduce__(self):  # survives pickling (multiprocessing results)
        return (type(self), (self.code, self.what))


class FormatError(ShmdsError):
    """SHMDS_EFORMAT: not a shmds region, or one of another format version."""


class ABIError(ShmdsError):
    """SHMDS_EABI: the region was made with another word size, lock size or
    byte order."""


class CorruptRegion(ShmdsError):
    """SHMDS_ECORRUPT: a check on shared data failed; nothing was changed."""


class NotRecoverable(ShmdsError):
    """SHMDS_ENOTRECOVERABLE: a dead process's change could not be repaired;
    the object is fenced off."""


class WrongType(ShmdsError, TypeError):
    """SHMDS_ETYPE: the name exists but is another kind of object."""


class QueueClosed(ShmdsError):
    """SHMDS_ECLOSED: the queue was shut down (and, for a receive, drained)."""


class ReadOnlyRegion(ShmdsError, PermissionError):
    """SHMDS_ERDONLY: the region is attached read-only; this call writes."""


class VersionConflict(ShmdsError):
    """SHMDS_EVERSION: another writer changed the object first (a table
    builder whose table was published by another builder since it began:
    rebuild from fresh data and publish again)."""


_BY_NAME = {
    "SHMDS_EFORMAT": FormatError,
    "SHMDS_EABI": ABIError,
    "SHMDS_ECORRUPT": CorruptRegion,
    "SHMDS_ENOTRECOVERABLE": NotRecoverable,
    "SHMDS_ETYPE": WrongType,
    "SHMDS_ECLOSED": QueueClosed,
    "SHMDS_ERDONLY": ReadOnlyRegion,
    "SHMDS_EVERSION": VersionConflict,
}


def library_codes():
    """{code: name} for every library code the loaded libshmds knows."""
    codes = {}
    for code in range(_LIB_LAST, _LIB_FIRST - 1, -1):
        name = calls.errname(code).decode()
        if name != "UNKNOWN":
            codes[code] = name
    return codes


# code -> exception class, for every code of the loaded library.
_BY_CODE = {code: _BY_NAME.get(name, ShmdsError) for code, name in library_codes().items()}


def error(rc, what=None):
    """The exception for a negative result `rc` of a shmds call; `what` (a
    name, a key) prefixes the message."""
    if _LIB_FIRST <= rc <= _LIB_LAST:
        return _BY_CODE.get(rc, ShmdsError)(rc, what)
    desc = calls.strerror(rc).decode()
    if what is None:
        return OSError(-rc, desc)
    return OSError(-rc, desc, what)


def check(rc, what=None):
    """Return rc when it is a success (>= 0), else raise error(rc, what)."""
    if rc < 0:
        raise error(rc, what)
    return rc
