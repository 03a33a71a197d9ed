# cython: language_level=3, freethreading_compatible=False
"""C core of norikv: CRC32C, the nori-wal record codec, segment scanning, the
write path of the Wal and the hot paths of KvStore.  The public names are
re-exported by :mod:`norikv`; this module is an implementation detail."""

from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t, UINT64_MAX
from libc.string cimport memcpy, memmove
from libc.stdlib cimport malloc, free, realloc
from libc.errno cimport errno
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_Check, PyBytes_CheckExact,
                            PyBytes_FromStringAndSize)
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Check
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.dict cimport PyDict_SetItem, PyDict_DelItem, PyDict_Size
from cpython.list cimport PyList_Append, PyList_GET_SIZE
from cpython.object cimport PyObject
from cpython.pythread cimport (PyThread_type_lock, PyThread_allocate_lock, PyThread_free_lock,
                               PyThread_acquire_lock, PyThread_release_lock, WAIT_LOCK, NOWAIT_LOCK)
from posix.unistd cimport close as c_close, ftruncate, pread, unlink, fsync
from posix.fcntl cimport open as c_open, O_RDONLY, O_RDWR, O_CREAT, O_EXCL, O_CLOEXEC
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED
from posix.stat cimport struct_stat, fstat
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME, CLOCK_MONOTONIC

import os
import sys
import weakref

from norikv.errors import (ClosedError, ConfigError, CorruptionError, LockError, NoriIOError,
                           StoreFullError, WalFailedError, io_error)
from norikv.compression import DEFAULT_MAX_VALUE_SIZE

# The largest value put/append accept and reads decompress, unless a store's
# or Wal's max_value_size says otherwise (norikv.compression documents it).
cdef uint64_t _DEFAULT_MAX_VALUE_SIZE = DEFAULT_MAX_VALUE_SIZE

cdef extern from "Python.h":
    PyObject *PyDict_GetItemWithError(object d, object k) except? NULL
    # The macro, on a borrowed pointer: no call, no reference taken.
    Py_ssize_t PyDict_GET_SIZE(PyObject *d)


# ---------------------------------------------------------------- CRC32C

nk_crc32c_init(0 if os.environ.get("NORIKV_CRC32C_SOFTWARE") else 1)


def crc32c(data, unsigned int value=0):
    """CRC-32C of a bytes-like object, continuing from ``value`` (same
    convention as the ``crc32c`` package)."""
    cdef Py_buffer view
    cdef uint32_t out
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        with nogil:
            out = nk_crc32c(value, <const uint8_t *>view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)
    return out


def crc32c_implementation():
    """Name of the CRC32C code path in use: ``"sse4.2"``, ``"armv8-crc"`` or ``"software"``."""
    return nk_crc32c_name.decode()


def select_crc32c_implementation(str name):
    """Switch the CRC32C path (for tests): ``"hardware"`` or ``"software"``.

    Returns the name now in use. Asking for hardware on a CPU without it gives
    the software path. The environment variable ``NORIKV_CRC32C_SOFTWARE=1``
    forces the software path at import time."""
    if name not in ("hardware", "software"):
        raise ValueError("name must be 'hardware' or 'software'")
    nk_crc32c_select(1 if name == "hardware" else 0)
    return crc32c_implementation()


PLATFORM = NK_PLATFORM.decode()

# ---------------------------------------------------------------- fork tracking

# Incremented in every child created by fork(); a Wal remembers the value it
# was opened under and, when it differs, it was inherited from the parent: it
# refuses everything but close(), which releases only the child's mapping and
# descriptors (_walcore.pxi).
cdef unsigned long _fork_generation = 0

def _after_fork_in_child():
    global _fork_generation
    _fork_generation += 1
    _detach_inherited_wals()

os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------- helpers

cdef inline double _now_monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9

# Test hook: milliseconds added to the wall clock that TTL deadlines use, so
# tests can move time forward instead of sleeping (see _set_clock_offset_ms).
cdef int64_t _clock_offset_ms = 0

cdef inline int64_t _now_ms() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000 + ts.tv_nsec // 1000000 + _clock_offset_ms

def now_ms():
    """The wall clock in Unix milliseconds, as TTL deadlines use it."""
    return _now_ms()


def _set_clock_offset_ms(int64_t offset_ms):
    """For tests only: shifts the TTL clock by ``offset_ms`` (0 restores it).
    Returns the previous offset."""
    global _clock_offset_ms
    cdef int64_t old = _clock_offset_ms
    _clock_offset_ms = offset_ms
    return old


cdef inline bytes _as_bytes(object obj, str what):
    """bytes, bytearray and memoryview pass; anything else is a TypeError.
    A subclass of bytes or bytearray gives its own content: bytes(obj) would
    ask its __bytes__ (or __buffer__), which may say something else."""
    if PyBytes_CheckExact(obj):
        return <bytes>obj
    if PyBytes_Check(obj):
        return PyBytes_FromStringAndSize(PyBytes_AS_STRING(obj), PyBytes_GET_SIZE(obj))
    if PyByteArray_Check(obj):
        return PyBytes_FromStringAndSize(PyByteArray_AS_STRING(obj), PyByteArray_GET_SIZE(obj))
    if isinstance(obj, memoryview):     # memoryview cannot be subclassed
        return bytes(obj)
    raise TypeError(f"{what} must be bytes, bytearray or memoryview, not {type(obj).__name__}"
                    f" (encode text first, e.g. {what}.encode())")


def _check_bytes(obj, what):
    """bytes for a bytes-like argument; TypeError naming ``what`` otherwise."""
    return _as_bytes(obj, what)


include "codec.pyx"
include "scan.pyx"
include "log.pyx"
include "fastcall.pyx"
include "store.pyx"
