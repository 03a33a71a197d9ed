# compact.pyx: compaction, its trigger on the write path, the dead ratio.

# The dead share of a log (also norikv.store.dead_ratio, the one formula).
cpdef double dead_ratio(uint64_t live_bytes, uint64_t keys, uint64_t log_bytes) noexcept
cdef uint64_t _log_bytes(KvStore store) except? 0
cdef int _maybe_compact(KvStore store) except -1
cdef int _start_background_compaction(KvStore store) except -1
cdef tuple _freeze(KvStore store)
cdef dict _compact(KvStore store)
