# store.pyx: KvStore, the whole store (its jobs with a part of their own:
# batch.pyx, index.pyx, compact.pyx, fastcall.pyx).

cdef class KvStore:
    cdef object __weakref__
    # how it was opened
    cdef readonly _WalCore wal               # the norikv.wal.Wal it writes to
    cdef readonly object path
    cdef readonly object recovery_info       # norikv.wal.RecoveryInfo
    cdef double _recovery_seconds
    cdef uint64_t _recovered_records
    cdef uint64_t _relative_ttl_records
    cdef uint64_t _hinted_segments
    cdef bint _closed                        # True until open() and from close() on
    cdef readonly object lock_timeout        # seconds an exclusive wait may take (None: no limit)

    # other processes' writes (follow.pyx): an operation whose SHM count
    # (*_pub_ver) differs from the one the map reflects (*_seen_ver) first
    # applies what was published in between (a read of one key asks
    # _behind_for instead); NULL without SHM
    cdef const uint64_t *_pub_ver
    cdef const uint64_t *_seen_ver
    # _behind_for's: SHM (NULL without it, or read-only: such a process is
    # not counted, so it compares the count), the epoch the map reflects,
    # and the published total it reflects
    cdef const nk_shm *_shm
    cdef const uint64_t *_seen_epoch
    cdef const uint64_t *_applied
    cdef object _follower
    cdef PyThread_type_lock _follow_mutex    # held by _catch_up (taken without the GIL when busy)
    cdef readonly uint64_t _reloads
    # values="memory": other processes' plain puts that a read of one key
    # applied as locations in the log (follow.pyx, "the pending directory"),
    # newer than _data's entries of the same keys and not in its bookkeeping
    # yet; None when the store may not keep one (values="disk", no SHM,
    # max_keys/max_bytes)
    cdef _KeyDir _pending
    cdef _SegmentViews _pending_views        # the follower's views, which _pending points into

    # the map: values="memory" holds the values (_data), values="disk" the
    # location of each key's record (_kd) in the mapped segments (_views)
    cdef readonly str value_storage          # "memory" or "disk"
    cdef bint _disk
    cdef dict _data
    cdef _KeyDir _kd
    cdef _SegmentViews _views
    # hint files (hints.pyx): written by a thread of the store's own
    cdef readonly object _hinter
    cdef readonly object _hint_lock          # held by the hint writer
    cdef public bint _hints_pending
    cdef readonly object _hint_error
    cdef public uint64_t _hints_written
    cdef uint64_t _hint_seen_seg             # the active segment when hints were last asked for
    cdef dict _expiry                        # key -> absolute deadline (Unix ms), TTL keys only
    cdef list _heap                          # (deadline, key) entries, possibly stale
    cdef readonly uint64_t live_bytes        # key + value bytes of the live keys
    cdef readonly Py_ssize_t max_keys        # 0: no limit
    cdef readonly uint64_t max_bytes         # 0: no limit
    cdef readonly uint64_t max_value_size
    cdef uint32_t _compression               # norikv.compression.Compression's value
    cdef readonly Py_ssize_t compress_min_size

    # weak references to the live snapshots (snapshot.pyx): every change of
    # the map is noted in them first
    cdef list _snaps

    # the range index (index.pyx), guarded by _index_lock
    cdef _RangeIndex _index
    cdef readonly object _index_lock

    # compaction (compact.pyx)
    cdef readonly double compact_dead_ratio
    cdef readonly uint64_t compact_min_bytes
    cdef bint _auto_compact
    cdef uint64_t _next_check                # written_total at which _maybe_compact looks again
    cdef public object _compact_lock         # held by a compaction from start to end
    cdef readonly object _compactor          # the background compaction's thread
    cdef readonly object _compact_error      # what the last background compaction raised
    cdef readonly uint64_t _compactions
    cdef readonly object _last_compaction    # the figures compact() returned last

    cdef inline int _check_open(self) except -1
    cdef inline bint _expired(self, object key) except -1
    cdef inline object _live(self, bytes key)
    cdef inline int _check_open_for(self, bytes key) except -1
    cdef inline bint _behind_for(self, const char *key, Py_ssize_t klen) noexcept
    cdef inline bint _has_pending(self) noexcept
    cdef inline bint _drop_pending(self, bytes key) except -1
    # put's body (also []=)
    cdef inline int _put(self, bytes k, bytes v, object ttl, object compression) except -1
    cdef bytes _encode_value(self, bytes value, object compression, uint32_t *flags)
    cdef inline uint64_t _locate(self, uint64_t n) except? 0xFFFFFFFFFFFFFFFF
    # delete's body: the old value (want) or True, None when it was absent
    cdef object _take(self, bytes k, bint want)

    # the map in either mode
    cdef inline Py_ssize_t _count(self) noexcept
    cdef uint64_t _loc_of(self, bytes key) except? 0
    cdef int64_t _old_size(self, bytes key) except -2
    # changes of the map once their record is committed (live bytes, TTL, range index)
    cdef inline bint _keeps_key(self, bint new_key, int64_t deadline) noexcept
    cdef inline int _account(self, object key, Py_ssize_t klen, Py_ssize_t vsize, Py_ssize_t old_size,
                             int64_t deadline) except -1
    cdef inline int _set(self, bytes key, bytes value, PyObject *old, int64_t deadline) except -1
    cdef inline int _set_lookup(self, bytes key, bytes value, int64_t deadline) except -1
    cdef inline int _disk_set(self, bytes key, Py_ssize_t vsize, uint64_t loc, int64_t deadline) except -1
    # _disk_set of raw key bytes (h: their _kd_hash); key: their bytes object, or None
    cdef int _disk_set_raw(self, const uint8_t *k, size_t klen, uint64_t h, Py_ssize_t vsize, uint64_t loc,
                           int64_t deadline, object key) except -1
    cdef bint _remove_key(self, bytes key) except -1
    cdef inline int _unset(self, bytes key, object old) except -1
    cdef inline int _forget(self, bytes key, Py_ssize_t old_size) except -1
    cdef inline int _after_write(self) except -1
    cdef Py_ssize_t _purge_expired(self) except -1
