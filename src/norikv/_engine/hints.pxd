# hints.pyx: hint files, the key directory of a sealed segment (values="disk").

# Applies the hint of segment seg_id (file_size bytes) to loader; its number
# of entries, or -1 when there is no valid, current hint (the caller scans).
cdef int64_t _replay_hint(_DiskLoader loader, object seg_path, uint64_t seg_id,
                          uint64_t file_size) except -2

# Before a replay that may take these segments from their hints: room in
# the key directory for all their entries at once (best effort).
cdef int _reserve_for_hints(_DiskLoader loader, object seg_paths, object seg_ids) except -1

# The store's hint writer (a thread; see hints.pyx).
cdef int _start_hint_writer(KvStore store) except -1
cdef bint _hint_current(object d, uint64_t seg, set names) except -1
cdef int _remove_stale_hints(object d, set names) except -1
