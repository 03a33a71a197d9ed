# follow.pyx: a store's map kept up to date with what other processes
# publish to its log.

cdef class _Follower(_Sink):
    cdef KvStore store
    cdef bint disk
    cdef list staged
    cdef int64_t open_ms
    cdef _SegmentViews views             # values="memory": its own; "disk": the store's
    cdef bint point                      # this catch-up's: a read of one key (may leave puts pending)
    cdef tuple _entry(self, const nk_rec *r, uint64_t seg_id, uint64_t offset)
    cdef int _apply(self, tuple e) except -1
    cdef int apply_range(self, uint64_t seg_id, uint64_t start, uint64_t end) except -1

# Brings the store's map to the newest publication (every read checks first).
cdef int _catch_up(KvStore store, bint point=*) except -1
cdef int _reload(KvStore store) except -1
# The pending directory (values="memory"): made for a new map, folded into _data.
cdef int _new_follower(KvStore store) except -1
cdef int _fold_pending(KvStore store) except -1
