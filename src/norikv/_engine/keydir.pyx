# The key directory of values="disk" (include/keydir.h has the layout): the
# keys in memory, each with its value's location in the log and its size.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.object cimport PyObject_Hash

cdef extern from *:
    """
    /* The hash of bytes (bytes_hash): Py_HashBuffer from 3.14, _Py_HashBytes
       before; both map -1 to -2 and the empty buffer to 0. CPython 3.13
       still exports _Py_HashBytes but declares it only in an internal
       header: without this declaration of our own the C compiler assumed an
       int result and the hash lost its high 32 bits (the tag), so keys
       loaded from the log were filed apart from the same keys looked up. */
    #if PY_VERSION_HEX >= 0x030E0000
    #define nk_kd_pyhash(p, n) Py_HashBuffer((p), (Py_ssize_t)(n))
    #else
    PyAPI_FUNC(Py_hash_t) _Py_HashBytes(const void *, Py_ssize_t);
    #define nk_kd_pyhash(p, n) _Py_HashBytes((p), (Py_ssize_t)(n))
    #endif
    """
    Py_hash_t nk_kd_pyhash(const void *p, size_t n) nogil


cdef uint64_t _kd_hash(const uint8_t *key, size_t klen) noexcept nogil:
    return <uint64_t>nk_kd_pyhash(key, klen)


cdef uint64_t _kd_hash_obj(bytes key) except? 0:
    return <uint64_t>PyObject_Hash(key)


cdef int _kd_raise(int rc) except -1:
    if rc == NK_KD_FULL:
        raise MemoryError("the key directory is full (32 GiB of keys)")
    raise MemoryError()


cdef class _KeyDir:
    """The key directory: bytes -> (location, value size) in insertion order,
    about 16 bytes of overhead per key plus the 16-byte slots (docs/DESIGN.md).
    Internal to the engine; the def methods exist for the tests (h: a hash
    to use instead of the key's, to make keys collide)."""

    def __cinit__(self):
        nk_kd_init(&self.kd, NK_KD_DEFAULT_FLOOR)

    def __init__(self, *, uint64_t _compact_floor=NK_KD_DEFAULT_FLOOR, _steps_from=None):
        """_compact_floor: bytes of dead entries before the arena is compacted;
        _steps_from: the table size from which the slots grow in steps (tests)."""
        self.kd.floor_units = _compact_floor >> 3
        if _steps_from is not None:
            self.kd.steps_from = _steps_from

    def __dealloc__(self):
        nk_kd_free(&self.kd)

    cdef void _sync(self) noexcept:
        self.count = <Py_ssize_t>self.kd.count
        self.key_bytes = self.kd.key_bytes

    cdef bint find(self, const uint8_t *key, size_t klen, uint64_t h,
                   uint64_t *loc, uint64_t *vsize) noexcept nogil:
        return nk_kd_find(&self.kd, key, klen, h, loc, vsize)

    cdef bint locate(self, uint64_t h, uint64_t *loc) noexcept nogil:
        return nk_kd_locate(&self.kd, h, loc)

    cdef void prefetch(self, uint64_t h) noexcept nogil:
        nk_kd_prefetch(&self.kd, h)

    cdef int put(self, const uint8_t *key, size_t klen, uint64_t h, uint64_t loc, uint64_t vsize,
                 uint64_t *old_loc, uint64_t *old_vsize) except -1:
        cdef int rc = nk_kd_put(&self.kd, key, klen, h, loc, vsize, old_loc, old_vsize)
        if rc == 0:
            self._sync()
        elif rc < 0:
            if rc == NK_KD_TOOBIG:
                raise ValueError(f"a key of {klen} bytes is too long for the key directory")
            _kd_raise(rc)
        return rc

    cdef int reserve(self, uint64_t keys, uint64_t more, uint64_t more_bytes) except -1:
        cdef int rc = nk_kd_reserve(&self.kd, keys, more, more_bytes)
        if rc < 0:
            _kd_raise(rc)
        return 0

    cdef int remove(self, const uint8_t *key, size_t klen, uint64_t h,
                    uint64_t *old_loc, uint64_t *old_vsize) noexcept:
        cdef int rc = nk_kd_remove(&self.kd, key, klen, h, old_loc, old_vsize)
        if rc:
            self._sync()
        return rc

    cdef int relocate(self, const uint8_t *key, size_t klen, uint64_t h,
                      uint64_t expected, uint64_t new_loc) noexcept:
        return nk_kd_relocate(&self.kd, key, klen, h, expected, new_loc)

    cdef int next(self, size_t *cursor, const uint8_t **key, size_t *klen,
                  uint64_t *loc, uint64_t *vsize) noexcept:
        return nk_kd_next(&self.kd, cursor, key, klen, loc, vsize)

    cdef void fit(self) noexcept:
        nk_kd_fit(&self.kd)

    cpdef size_t nbytes(self) noexcept:
        return nk_kd_nbytes(&self.kd)

    cdef int clear(self) noexcept:
        nk_kd_free(&self.kd)
        self._sync()
        return 0

    # For the tests.

    def __len__(self):
        return self.count

    def set(self, bytes key not None, uint64_t loc, uint64_t vsize, h=None):
        """Sets key -> (loc, vsize); True if it replaced a value."""
        cdef uint64_t old_loc, old_vsize
        return self.put(<const uint8_t *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key),
                        _kd_hash_obj(key) if h is None else <uint64_t>h, loc, vsize,
                        &old_loc, &old_vsize) == 1

    def lookup(self, bytes key not None, h=None):
        """(loc, vsize) of key, or None."""
        cdef uint64_t loc, vsize
        if self.find(<const uint8_t *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key),
                     _kd_hash_obj(key) if h is None else <uint64_t>h, &loc, &vsize):
            return (loc, vsize)
        return None

    def locate_hash(self, uint64_t h):
        """locate(): the loc in the first slot with h's tag, or None."""
        cdef uint64_t loc
        return loc if self.locate(h, &loc) else None

    def discard(self, bytes key not None, h=None):
        """Removes key: its (loc, vsize), or None if absent."""
        cdef uint64_t loc, vsize
        if self.remove(<const uint8_t *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key),
                       _kd_hash_obj(key) if h is None else <uint64_t>h, &loc, &vsize):
            return (loc, vsize)
        return None

    def move(self, bytes key not None, uint64_t expected, uint64_t new, h=None):
        """relocate(): True if key's loc was `expected` and is now `new`."""
        return self.relocate(<const uint8_t *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key),
                             _kd_hash_obj(key) if h is None else <uint64_t>h, expected, new) == 1

    def items(self):
        """[(key, loc, vsize)] in insertion order."""
        cdef size_t cursor = 0, klen
        cdef const uint8_t *key
        cdef uint64_t loc, vsize
        out = []
        while self.next(&cursor, &key, &klen, &loc, &vsize):
            out.append((key[:klen], loc, vsize))
        return out

    def keys(self):
        """The keys in insertion order."""
        return [item[0] for item in self.items()]

    @staticmethod
    def _hash(bytes key not None):
        """_kd_hash of key's bytes (computed from them, not the cached hash)."""
        return _kd_hash(<const uint8_t *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))

    def _reserve(self, uint64_t keys, uint64_t more=0, uint64_t more_bytes=0):
        self.reserve(keys, more, more_bytes)

    def _fit(self):
        self.fit()

    def _reset(self):
        self.clear()

    def _stats(self):
        """The table's figures: slots, arena units used and allocated, garbage,
        compactions, rebuilds of the slots; while they grow in steps, the old
        table's slots and how many of them were swept; the next growth's
        slots prepared ahead and the bytes of them touched (else 0)."""
        return {"slots": self.kd.cap, "units": self.kd.units, "arena_cap": self.kd.arena_cap,
                "garbage": self.kd.garbage, "compactions": self.kd.compactions, "resizes": self.kd.resizes,
                "old_slots": self.kd.old_cap, "swept": self.kd.swept, "next_slots": self.kd.next_cap,
                "next_touched": self.kd.next_touched}
