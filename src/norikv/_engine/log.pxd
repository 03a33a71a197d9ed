# log.pyx: _WalCore, the write side of a Wal. norikv.wal.Wal subclasses it
# (recovery, the background thread); KvStore writes through it (store.pyx).

cdef enum:
    POLICY_OS = 0
    POLICY_ALWAYS = 1
    POLICY_BATCH = 2


cdef class _WalCore:
    cdef object __weakref__
    cdef readonly object config          # the WalConfig it was opened with
    cdef readonly object dir
    cdef int dir_fd
    cdef int lock_fd
    cdef object dir_key                  # its key in _open_dirs (logdir.pyx)
    cdef readonly uint64_t max_segment_size
    cdef readonly uint64_t max_value_size   # largest value append takes and reads decompress
    cdef readonly int policy
    cdef readonly double window
    cdef readonly bint preallocate

    # the active segment (segment.pyx)
    cdef readonly uint64_t seg_id
    cdef int seg_fd
    cdef uint8_t *map
    cdef size_t map_len
    cdef uint64_t alloc                  # bytes of the file reserved with fallocate
    cdef uint64_t populated              # mapping faulted in for writing up to here
    # How far past the end the background thread keeps the mapping faulted
    # in: _PREFAULT_REFILL at first, doubled at each refill up to
    # _PREFAULT_AHEAD (_PREFAULT_SYNCED_AHEAD once sync() was called), so
    # that a store that writes little holds little.
    cdef uint64_t prefault_lead
    cdef uint64_t unmapped_below         # _unmap_written: no page-table entries below here
    # FsyncPolicy.OS with WalConfig.writeback_bytes: the writeback of the
    # active segment starts every writeback_step bytes (0: never), and has
    # started below written_back (_writeback_behind, segment.pyx)
    cdef uint64_t writeback_step
    cdef uint64_t written_back
    cdef uint64_t rearmed_at             # written_total as the last finished _rearm read it
    cdef bint rearm_due                  # a sync() call wrote the log back: _rearm (flusher.pyx)
    cdef readonly uint64_t seg_size      # its logical size: where the next record goes
    cdef uint64_t next_seg_id
    cdef dict seg_sizes                  # finalized segments: id -> bytes
    # Page-sized page-cache folios for the mapping (nk_advise_small_folios):
    # from the start under ALWAYS, otherwise from the first sync() that
    # covers less than _SMALL_SYNC bytes (1 MiB) or background fsync that
    # covers less than _SMALL_BACKGROUND_SYNC (64 KiB): a bulk writer keeps
    # large folios.
    cdef readonly bint small_folios
    # sync() has been called: under the batch policy the prefault then maps
    # for reading (segment.pyx, _prefault_for_write)
    cdef bint synced_by_caller
    # Bytes the last sync() call covered (0: none yet). Page-sized-folio
    # mode writes zeros ahead of the writer in folios sized from it
    # (segment.pyx, _zero_chunk).
    cdef uint64_t sync_span

    # accounting
    cdef readonly uint64_t written_total
    cdef readonly uint64_t synced_total
    cdef readonly uint64_t fsync_count
    cdef readonly double fsync_seconds
    cdef readonly double fsync_max
    cdef readonly double gather_seconds  # fsync leaders waiting for other processes' sync() (shared.pyx)

    # state
    cdef int busy                        # rotation or growth under way: appends take the slow path
    cdef readonly bint closed
    cdef object failed                   # the WalFailedError that poisoned it
    cdef bint broken                     # failed is set (readable without the GIL)
    cdef unsigned long fork_gen          # _fork_generation when opened (runtime.pxd)
    cdef PyThread_type_lock io_lock
    cdef PyThread_type_lock map_lock     # held to change/unmap the mapping, and while prefaulting
    # Group commit (sync): one leader fsyncs at a time; the others wait on
    # sync_cond for synced_total to cover them or for the leader's turn to
    # end. sync_mutex is only ever held for a few instructions, never while
    # waiting for the GIL, so it may be taken with the GIL held.
    cdef pthread_mutex_t sync_mutex
    cdef pthread_cond_t sync_cond
    cdef bint syncing
    cdef bint sync_init
    # The background thread (norikv.wal drives it; its work, without the
    # GIL, is in flusher.pyx): batch-policy fsyncs, prefaulting. Appends set
    # `dirty` (with dirty_since) and prefault_pending, and wake it through
    # bg_cond (in flusher.pyx's loop) and _waker (waiting in Python);
    # bg_mutex guards bg_wake and bg_stop.
    cdef readonly bint prefault_pending
    cdef bint writeback_pending          # under OS: _writeback_behind is due (flusher.pyx)
    cdef readonly bint dirty
    cdef readonly double dirty_since
    cdef bint wake_pending
    cdef bint unmap_due                  # another process's fsync began: _unmap_behind (shared.pyx)
    cdef uint32_t fsyncs_seen            # SHM.fsync_starts when this writer last looked
    cdef public object _waker            # wakes it while it waits in Python (norikv.wal)
    cdef pthread_mutex_t bg_mutex
    cdef pthread_cond_t bg_cond
    cdef bint bg_wake
    cdef bint bg_stop
    cdef int bg_err                      # errno of a failed background fsync (poisons at the next call)
    cdef bint bg_looping                 # the thread is in _flusher_loop (no GIL needed until it returns)

    # Many processes on one log (shared.pyx). shm is NULL for a Wal that is
    # the directory's only writer (norikv.wal.Wal); a KvStore's Wal shares
    # the page of SHM with every other process that has the store open.
    cdef nk_shm *shm
    cdef int shm_fd
    cdef int pid                         # this process's (SHM names the holders of its mutexes)
    cdef readonly bint readonly          # never writes (KvStore.open(readonly=True))
    cdef readonly bint first_opener      # it recovered the log and set up SHM
    cdef double lock_timeout             # seconds an exclusive wait may take (< 0: no limit)
    cdef unsigned long x_owner           # the thread holding shm.wmutex (0: none)
    # what this process's map reflects: publication follow_ver (of SHM's
    # session `session`), which said pub
    cdef uint64_t follow_ver
    cdef nk_pub pub
    cdef uint64_t seen_epoch             # SHM's epoch when the map was last brought up to date
    cdef bint joined                     # counted in SHM's nprocs (shared.h)
    cdef uint64_t wal_ver                # the publication the Wal's end (seg_id, seg_size) is of
    cdef uint64_t session
    cdef public object _follow_hook      # KvStore's catch-up, run with wmutex held

    # ---------------------------------------------------------- the append contract
    # Every append (append, append_batch, KvStore's put, delete and batches)
    # is these three steps, with the GIL held from the first to the second:
    #
    #   p = wal._reserve(n)   room for n bytes at the end of the log. The
    #                         slow path (a rotation, growth, a closed or
    #                         failed Wal) may release the GIL, so other
    #                         threads may have run when it returns: a caller
    #                         checks again what they may have changed (the
    #                         store's limits, the key's current value).
    #   ... exactly n bytes written at p (nk_encode, _Run.encode) ...
    #   wal._commit(n)        publishes them (seg_size, written_total).
    #   wal._after_append()   then: wakes the flusher, fsyncs under ALWAYS.
    #
    # Between _reserve's return and _commit nothing may run Python code
    # (no Python call, no allocation that can start the cyclic GC, whose
    # finalizers could let another thread append at the same p): so the
    # record and the caller's in-memory change are atomic with respect to
    # every other thread. A caller that gives up there (StoreFullError)
    # writes nothing at p: bytes past the logical end that formed a valid
    # record would be replayed by recovery.
    cdef inline uint8_t *_reserve(self, uint64_t n) except NULL
    # _reserve for a record that does not depend on the map (a put without
    # limits): with many processes, the map is not brought up to date with
    # the other processes' records first; its next read does that.
    cdef inline uint8_t *_reserve_put(self, uint64_t n) except NULL
    cdef uint8_t *_reserve_slow(self, uint64_t n) except NULL
    cdef inline int _commit(self, uint64_t n) except -1
    cdef inline int _after_append(self) except -1
    cdef int _after_append_work(self) except -1
    # A caller that gives up after _reserve (StoreFullError, the key changed)
    # calls _unreserve: with many processes it releases the writers' mutex.
    cdef inline void _unreserve(self) noexcept

    # locking
    cdef inline void _lock_io(self)
    cdef inline void _unlock_io(self) noexcept
    cdef inline void _lock_map(self) noexcept
    cdef inline void _lock_map_nogil(self) noexcept nogil
    cdef inline void _unlock_map(self) noexcept nogil
    # A sync() up to target covers less than `small` bytes: the log should
    # switch to page-sized folios (_use_small_folios) first.
    cdef inline bint _small_sync(self, uint64_t target, uint64_t small) noexcept nogil
    cdef int _sync(self, bint caller) except -1
    cdef int _rearm_after_sync(self) except -1
    cdef int _wake_background(self) except -1
    cdef int _sync_nogil(self, uint64_t target, bint ranged, double *t0, double *dt, int *err) noexcept nogil
    cdef void _end_sync_turn(self, uint64_t cover) noexcept nogil

    # state
    cdef int _check_owner(self) except -1      # open and owned by this process
    cdef int _check_usable(self) except -1     # and not failed
    cdef int _poison(self, int err, object path, str what) except -1
    cdef int _sync_dir(self, bint poison) except -1
    cdef void _count_fsync(self, double dt) noexcept nogil

    # compaction support (compact.pyx)
    cdef int _begin_exclusive(self) except -1
    cdef void _end_exclusive(self) noexcept
    cdef tuple _seal_and_skip_locked(self, uint64_t gap)

    cdef void _release(self, bint in_order) noexcept
    cdef void _detach_inherited(self) noexcept
