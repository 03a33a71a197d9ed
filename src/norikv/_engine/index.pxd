# index.pyx: the range index of a KvStore and the range queries it serves.

cdef class _RangeIndex:
    cdef dict data                   # the store's map (values="memory")
    cdef _KeyDir kd                  # or its key directory (values="disk")
    cdef list touched                # keys added or removed since the last refresh
    cdef bint active                 # an index exists (then `touched` is kept)
    cdef object keys                 # sortedcontainers.SortedList of the map's keys

    cdef inline bint _delta_too_big(self)
    cdef inline Py_ssize_t _count(self) noexcept
    cdef int _has(self, bytes key) except -1
    # Notes that key was added to or removed from the map (the write path).
    cdef inline int touch(self, bytes key) except -1
    cdef int drop(self) except -1
    # The index brought up to date (the caller holds the store's _index_lock).
    cdef object refresh(self)
