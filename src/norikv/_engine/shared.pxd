# shared.pyx: many processes on one log, as functions of each one's _WalCore.

cdef enum:
    _SYNC_WAIT_SLICE_US = 5000      # a waiter for another process's fsync tries smutex at least this often
    _GATHER_LIMIT_US = 500          # a leader waits at most this long for other sync() calls (_gather)
    _SYNC_LEAD = 4                  # _take_smutex: smutex held, this thread fsyncs (beside log.pyx's _SYNC_*)

cdef int _shm_map(_WalCore self, bint writable) except -1
cdef void _shm_unmap(_WalCore self) noexcept
# open: decide first opener or joiner (SHM's flock held), set up SHM, or read only
cdef int _shared_open(_WalCore self, object lock_path) except -1
cdef int _shared_init(_WalCore self) except -1
cdef int _readonly_open(_WalCore self) except -1
cdef int _shared_start(_WalCore self, dict finalized) except -1
# the writers' mutex: _reserve takes it (_reserve_shared), _commit publishes and releases it
cdef int _writer_lock(_WalCore self) except -1
cdef int _writer_locked(_WalCore self, int err, int dead) except -1
cdef int _writer_lock_caught_up(_WalCore self) except -1
cdef uint8_t *_reserve_shared(_WalCore self, uint64_t n) except NULL
cdef uint8_t *_reserve_put(_WalCore self, uint64_t n) except NULL
cdef uint8_t *_reserve_shared_slow(_WalCore self, uint64_t n, bint catch_up) except NULL
cdef int _check_shared_usable(_WalCore self) except -1
cdef void _publish_behind(_WalCore self) noexcept
cdef void _bump_published(_WalCore self, uint64_t seg, uint64_t start) noexcept
cdef void _publish_segment(_WalCore self) noexcept
cdef int _refresh(_WalCore self) except -1
cdef int _switch_active(_WalCore self, uint64_t seg_id, uint64_t size) except -1
cdef int _repair(_WalCore self) except -1
# the group commit of all processes; one compaction at a time; the last one out
cdef int _sync_shared(_WalCore self) except -1
cdef int _leave(_WalCore self) except -1
cdef int _shared_fsync(_WalCore self, uint64_t target, bint ranged, uint64_t *seg, int *err) noexcept nogil
cdef void _gather(_WalCore self, bint wait) noexcept nogil
cdef void _fsync_took(_WalCore self, double dt) noexcept nogil
cdef int _take_smutex(_WalCore self, uint64_t target, int *err) noexcept nogil
cdef int _fsync_newest(_WalCore self, bint ranged, uint64_t *seg, int *err) noexcept nogil
cdef int _fsync_published(_WalCore self, int fd, uint8_t *m, nk_pub *p, uint64_t *seg, int *err) noexcept nogil
cdef void _note_synced(_WalCore self) noexcept nogil
cdef int _compaction_lock(_WalCore self, double timeout) except -1
cdef void _compaction_unlock(_WalCore self) noexcept
cdef int _publish_gen(_WalCore self, uint64_t seal) except -1
cdef bint _last_user(_WalCore self) except -1
