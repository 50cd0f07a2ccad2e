"""Every code the library returns maps to an exception."""
import errno
import pickle

import pytest

import shmds
from shmds import errors


def test_errors_every_library_code_has_an_exception_class():
    codes = errors.library_codes()
    assert len(codes) >= 7
    for code, name in codes.items():
        e = errors.error(code, "what")
        assert isinstance(e, shmds.ShmdsError)
        assert e.code == code and e.name == name and e.errno == -code
        assert name in str(e) and "what" in str(e)
    named = {errors.error(c).name: type(errors.error(c)) for c in codes}
    assert named["SHMDS_ECORRUPT"] is shmds.CorruptRegion
    assert named["SHMDS_EFORMAT"] is shmds.FormatError
    assert named["SHMDS_EABI"] is shmds.ABIError
    assert named["SHMDS_ENOTRECOVERABLE"] is shmds.NotRecoverable
    assert named["SHMDS_ETYPE"] is shmds.WrongType
    assert named["SHMDS_ECLOSED"] is shmds.QueueClosed
    assert named["SHMDS_ERDONLY"] is shmds.ReadOnlyRegion


@pytest.mark.parametrize("code,cls", [
    (errno.ENOENT, FileNotFoundError),
    (errno.EEXIST, FileExistsError),
    (errno.ETIMEDOUT, TimeoutError),
    (errno.EAGAIN, BlockingIOError),
    (errno.EACCES, PermissionError),
    (errno.EPERM, PermissionError),
    (errno.ENOMEM, OSError),
])
def test_errors_errno_values_become_python_os_errors(code, cls):
    e = errors.error(-code)
    assert isinstance(e, cls) and e.errno == code
    assert not isinstance(e, shmds.ShmdsError)


def test_errors_names_and_descriptions():
    assert shmds.errname(0) == "OK"
    assert shmds.errname(-errno.ENOENT) == "ENOENT"
    assert shmds.strerror(shmds.CorruptRegion(-4003).code) != "unknown error"
    assert shmds.errname(-4098) == "UNKNOWN"


def test_errors_survive_pickling_as_multiprocessing_sends_them():
    for code in errors.library_codes():
        e = errors.error(code, "obj")
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e)
        assert (back.code, back.name, back.errno, str(back)) == (e.code, e.name, e.errno, str(e))
    t = pickle.loads(pickle.dumps(errors.error(-errno.ETIMEDOUT, "q")))
    assert isinstance(t, TimeoutError) and t.filename == "q"
