# segment.pyx: the active segment of a Wal, as functions of its _WalCore.

cdef enum:
    _GROW_STEP = 1 << 20
    _PREFAULT_STEP = 1 << 20        # synchronous prefault when the writer outruns the thread
    _PREFAULT_AHEAD = 16 << 20      # the background thread keeps this much ready
    _PREFAULT_SYNCED_AHEAD = 4 << 20    # once sync() was called (see _prefault_loop)
    _PREFAULT_REFILL = 2 << 20      # in steps of this much (a long one stalled fsyncs)
    _REARM_MIN = 64 << 10           # _rearm_ahead: at least this much
    _REARM_MAX = 4 << 20            # and at most this much
    _REARM_SYNC_MIN = 32 << 10      # _rearm_after_sync: after a sync() of at least this much
    _LARGE_FOLIOS_PAST = 24 << 20   # see _use_small_folios
    _ZERO_CHUNK_MIN = 16 << 10      # folio sizes of the zeros written ahead (_zero_chunk)
    _ZERO_CHUNK_MAX = 64 << 10
    _WRITEBACK_CHUNK = 2 << 20      # _writeback_behind submits this much at a time,
    _FOLIO_MAX = 2 << 20            # and stops at a multiple of the largest page-cache folio

# False once the kernel said it cannot prefault (then ordinary page faults).
cdef bint _prefault_supported


cdef inline bint _prefaults(_WalCore self) noexcept nogil:
    """Whether the mapping is faulted in ahead of the writer: not under
    ALWAYS, whose fsync per append costs ~100x the fault a prefault saves
    (and whose prefault bursts stalled an event loop beside it)."""
    return _prefault_supported and self.policy != POLICY_ALWAYS


cdef inline uint64_t _round_up(uint64_t n, uint64_t step) noexcept nogil:
    return (n + step - 1) // step * step


cdef inline uint64_t _zero_chunk(_WalCore self) noexcept nogil:
    """The folio size _zero_ahead writes zeros in: the largest power of two
    within the last sync()'s span, at most _ZERO_CHUNK_MAX. 0 (no zeros
    written: the prefault maps for reading, in page-sized folios) outside
    page-sized mode and where that is under _ZERO_CHUNK_MIN: a commit
    writes its first and last folios whole, which would multiply the bytes
    of a small one (docs/DESIGN.md, "Zeros written ahead")."""
    cdef uint64_t chunk = _ZERO_CHUNK_MAX
    if not self.small_folios or self.sync_span < _ZERO_CHUNK_MIN:
        return 0
    while chunk > self.sync_span:
        chunk >>= 1
    return chunk


cdef inline void _note_sync_span(_WalCore self, uint64_t target) noexcept:
    """sync() was called with the log at `target`: what it covers."""
    cdef uint64_t synced = self.synced_total
    if self.shm != NULL and self.shm.synced_total > synced:
        synced = self.shm.synced_total
    if target > synced:
        self.sync_span = target - synced


# Creates segment next_seg_id sized for at least `need` bytes, maps it, makes
# it active and its directory entry durable (a failure poisons the Wal).
cdef int _create_segment(_WalCore self, uint64_t need) except -1
# Opens segment seg_id, whose data ends at `size`, as the active one (after recovery).
cdef int _open_active(_WalCore self, uint64_t seg_id, uint64_t size) except -1
# fsyncs the active segment, truncates it to its logical size, closes it.
cdef int _finalize_active(_WalCore self) except -1
# The slow part of a reservation of n bytes (io_lock taken here): a segment,
# allocated and faulted in far enough; with SHM, published.
cdef int _make_room(_WalCore self, uint64_t n) except -1
# Seals the active segment and starts the next.
cdef int _rotate(_WalCore self, uint64_t need) except -1
# Raises unless n more segment ids follow the active one.
cdef int _check_ids_left(_WalCore self, uint64_t n) except -1
# Allocates the active segment up to at least `end` (remapping when it grows).
cdef int _grow(_WalCore self, uint64_t end) except -1
# Faults in the mapping up to at least `end`.
cdef int _prefault(_WalCore self, uint64_t end) except -1
# The background thread's fsync is due: the oldest unsynced append's window ran out.
cdef bint _fsync_due(_WalCore self, double now) noexcept nogil
# The background thread's prefaulting, without the GIL (flusher.pyx).
cdef void _prefault_loop(_WalCore self) noexcept nogil
# Drops the page-table entries of the mapping's pages wholly written (before an fsync).
cdef void _unmap_behind(_WalCore self) noexcept nogil
cdef void _writeback_behind(_WalCore self) noexcept nogil
# After a batch-policy fsync or a sync() call: maps for writing what the writer will fill before the next.
cdef void _rearm(_WalCore self, uint64_t span=*) noexcept nogil
# The first small sync(): page-sized page-cache folios from now on.
cdef int _use_small_folios(_WalCore self) except -1
cdef int _allocate(_WalCore self, int fd, uint64_t start, uint64_t end, object path) except -1
cdef int _map_active(_WalCore self, size_t want) except -1
cdef int _populate(_WalCore self, uint8_t *m, uint64_t start, uint64_t stop) noexcept nogil
cdef void _unmap(_WalCore self) noexcept
cdef void _unmap_locked(_WalCore self) noexcept
