# The range index of a store: its keys in byte order (a SortedList), brought
# up to date lazily. The write path only notes which keys it added or removed
# (touch: a list append, so that a put does not pay for ordering; a dict of
# pending changes cost a second random insert per new key, and puts ran at
# 0.53x a dict after a range query). A range query applies those changes, or
# rebuilds the index from the map when they are many; a range query's
# snapshot (snapshot.pyx) walks it a chunk at a time.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.list cimport PyList_Append, PyList_GET_SIZE

from sortedcontainers import SortedList


cdef enum:
    _SCAN_CHUNK = 1024


cdef class _RangeIndex:
    """The sorted keys of a store's map. Guarded by the store's _index_lock,
    except touch(), which the write path calls with the GIL held."""

    def __cinit__(self, dict data, _KeyDir kd):
        self.data = data
        self.kd = kd
        self.touched = []
        self.active = False
        self.keys = None

    cdef inline bint _delta_too_big(self):
        # Past this many changes, rebuilding the index from the map is cheaper
        # than applying them one by one.
        return PyList_GET_SIZE(self.touched) > (self._count() >> 3) + 65536

    cdef inline Py_ssize_t _count(self) noexcept:
        return self.kd.count if self.kd is not None else PyDict_GET_SIZE(<PyObject *>self.data)

    cdef int _has(self, bytes key) except -1:
        cdef uint64_t loc, vsize
        if self.kd is not None:
            return self.kd.find(<const uint8_t *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key),
                                _kd_hash_obj(key), &loc, &vsize)
        return PyDict_GetItem(self.data, key) != NULL

    cdef inline int touch(self, bytes key) except -1:
        """Past _delta_too_big the index is dropped (which keeps the list
        bounded); the next range query rebuilds it."""
        PyList_Append(self.touched, key)
        if self._delta_too_big():
            self.drop()
        return 0

    cdef int drop(self) except -1:
        """Forgets the index (also after fork: a thread of the parent may have
        been changing it); the next range query rebuilds it from the map."""
        self.active = False
        self.touched = []
        self.keys = None
        return 0

    cdef object refresh(self):
        """O(k log n) for k changes (each key by its state in the map now: a key
        touched several times counts once); a rebuild when k is large."""
        if not self.active or self.keys is None or self._delta_too_big():
            self.active = True
            self.touched = []
            self.keys = SortedList(_kd_keys(self.kd) if self.kd is not None else self.data)
            return self.keys
        touched = self.touched
        self.touched = []
        idx = self.keys
        for k in set(touched):
            if self._has(k):
                if k not in idx:
                    idx.add(k)
            else:
                idx.discard(k)
        return idx


def _prefix_end(p):
    """The smallest key greater than every key starting with p (None: no bound)."""
    cdef bytearray b = bytearray(p)
    cdef Py_ssize_t n = len(b)
    while n and b[n - 1] == 0xFF:
        n -= 1
    if not n:
        return None
    del b[n:]
    b[n - 1] += 1
    return bytes(b)
