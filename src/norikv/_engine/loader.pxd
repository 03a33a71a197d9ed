# loader.pyx: _StoreLoader, the _Sink that replays a log into a store's map.

cdef class _StoreLoader(_Sink):
    cdef dict data
    cdef dict expiry                   # key -> absolute deadline (Unix ms), TTL keys only
    cdef list staged
    cdef int64_t now_ms
    cdef int64_t open_ms               # a relative TTL counts from here
    cdef readonly uint64_t records
    cdef readonly uint64_t live_bytes
    cdef readonly uint64_t relative_ttls
    # key -> deadline derived from a relative TTL, for the keys whose last
    # record is such a put, live or already expired (a later record of the
    # key removes it): KvStore.open pins each one
    cdef readonly dict relative

    cdef int _apply(self, bytes key, object value, int64_t deadline, bint relative) except -1
    cdef tuple _decode(self, const nk_rec *r)
