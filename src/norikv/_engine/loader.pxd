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

    # the replay rule, on the map through _set_value/_drop_value (the
    # old value's size, -1: the key was absent)
    cdef int _apply(self, bytes key, object value, int64_t vsize, int64_t deadline, bint relative,
                    uint64_t loc) except -1
    cdef int64_t _set_value(self, bytes key, object value, int64_t vsize, uint64_t loc) except -2
    cdef int64_t _drop_value(self, bytes key) except -2
    cdef uint64_t _location(self, uint64_t seg_id, uint64_t offset) except? 0xFFFFFFFFFFFFFFFF
    cdef tuple _decode(self, const nk_rec *r)
    cdef int64_t _deadline(self, uint32_t flags, uint64_t ttl_ms) noexcept


cdef class _DiskLoader(_StoreLoader):
    cdef readonly _KeyDir kd
    cdef readonly _SegmentViews views
    cdef uint64_t last_seg, last_slot     # the slot of the segment being scanned
    cdef readonly uint64_t hinted_segments    # segments loaded from their hint file
    cdef int put_entry(self, const uint8_t *k, size_t klen, uint64_t h, uint64_t vsize, uint64_t loc) except -1
    cdef int hint_entry(self, const uint8_t *k, size_t klen, uint64_t h, uint32_t flags, uint64_t ttl_ms,
                        uint64_t vsize, uint64_t loc) except -1
