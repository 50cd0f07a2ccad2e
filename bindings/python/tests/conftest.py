"""Fixtures for the binding's tests (run by tests/python.sh from make check).

SHMDS_LIBRARY names the library under test; SHMDS_BUILDDIR, when set, is
the build tree holding the C programs the interoperability tests run.
"""
import itertools
import os
import secrets

import pytest

import shmds

_seq = itertools.count()
_nonce = secrets.token_hex(4)


def unique_name(tag="t"):
    """A region name no other test or concurrent run uses."""
    return "/shmds-py-%s-%d-%s-%d" % (tag, os.getpid(), _nonce, next(_seq))


@pytest.fixture
def name():
    """A fresh region name, unlinked after the test if it still exists."""
    n = unique_name()
    yield n
    try:
        shmds.unlink(n)
    except FileNotFoundError:
        pass


@pytest.fixture
def region(name):
    """A 4 MiB region, closed after the test."""
    with shmds.Region.create(name, 4 << 20) as r:
        yield r


@pytest.fixture
def builddir():
    d = os.environ.get("SHMDS_BUILDDIR")
    if not d:
        pytest.skip("SHMDS_BUILDDIR not set: the C programs are not at hand")
    return d
