# compact.pyx: compaction, its trigger on the write path, the dead ratio.

# The dead share of a log (also norikv.store.dead_ratio, the one formula).
cpdef double dead_ratio(uint64_t live_bytes, uint64_t keys, uint64_t log_bytes) noexcept
cdef uint64_t _log_bytes(KvStore store) except? 0
cdef int _maybe_compact(KvStore store) except -1
cdef int _start_background_compaction(KvStore store) except -1
cdef tuple _freeze(KvStore store)
cdef dict _compact(KvStore store, bint background=*)
cdef int _snapshot_failed(object wal, uint64_t first, uint64_t gap, exc) except -1
cdef dict _compacted(KvStore store, double t0, uint64_t before, Py_ssize_t written,
                     Py_ssize_t deleted)


cdef class _SnapshotWriter:
    cdef object dirpath
    cdef uint64_t first, ids, seg, size, max_segment_size
    cdef object f                        # the open file of segment `seg`
    cdef str path
    cdef uint8_t *buf
    cdef size_t used, cap
    cdef list parts
    cdef uint64_t add(self, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen,
                      uint32_t flags, uint64_t deadline) except 0xFFFFFFFFFFFFFFFF
    cdef int _flush(self) except -1
    cdef list finish(self)


cdef class _DiskSnapshot:
    cdef _SegmentViews views
    cdef uint64_t *locs
    cdef uint64_t *moved
    cdef Py_ssize_t n
    cdef int write(self, _SnapshotWriter w, dict expiry, int64_t now) except -1


cdef int _relocate(KvStore store, _DiskSnapshot snap, list parts) except -1
