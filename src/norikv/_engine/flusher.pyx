# The background work of a Wal, without the GIL: under FsyncPolicy.batch(w)
# an fsync at most w after the first unsynced append, whether or not more
# appends come, and prefaulting the mapping ahead of the writer.
#
# norikv.wal runs it in a thread of its own (_WalCore._flusher_run), which
# takes the GIL only between busy periods: the loop returns when nothing was
# unsynced for two windows (the thread then waits in Python, holding no
# reference, so that a Wal dropped without close() is freed), on close(), or
# when an fsync failed. A flusher that took the GIL for each fsync waited
# for the writer's 5 ms switch interval each time: a busy writer got 26-37
# fsyncs a second instead of 200, so the window grew, and every switch cost
# the writer the GIL.
#
# The `dirty` handshake. An append stores written_total, then (full fence)
# reads dirty and, if clear, sets dirty_since and dirty and wakes the
# thread. After an fsync the thread clears dirty, then (full fence) reads
# written_total and sets dirty again if something is still unsynced. One of
# the two sees the other's store, so an append is never left unsynced with
# dirty clear.


cdef void _wake_flusher(_WalCore self, bint stop) noexcept nogil:
    pthread_mutex_lock(&self.bg_mutex)
    self.bg_wake = True
    if stop:
        self.bg_stop = True
    pthread_cond_signal(&self.bg_cond)
    pthread_mutex_unlock(&self.bg_mutex)


cdef void _settle_dirty(_WalCore self, double since) noexcept nogil:
    """After an fsync that started at `since`: dirty again if anything
    appended is not covered (an append after `since` is younger than it)."""
    self.dirty = False
    nk_fence()
    if nk_load_acquire_u64(&self.written_total) > self.synced_total:
        self.dirty_since = since
        self.dirty = True


cdef double _SYNC_LINGER = 0.02     # s; see _flusher_loop


cdef int _fsync_batch(_WalCore self) noexcept nogil:
    """The batch policy's fsync: the pages wholly written leave this
    process's page tables first (_unmap_behind), the next window's are
    mapped for writing after (_rearm). Returns 0, an errno or a code of
    _flusher_loop's."""
    cdef uint64_t target = nk_load_acquire_u64(&self.written_total)
    cdef int res
    if self.shm == NULL and self._small_sync(target, _SMALL_BACKGROUND_SYNC):
        return _FLUSH_NEEDS_GIL             # _use_small_folios may seal the segment
    _unmap_behind(self)
    res = _background_fsync(self, target)
    if res == 0:
        _rearm(self)
    return res


cdef int _background_fsync(_WalCore self, uint64_t target) noexcept nogil:
    """The background thread's fsync up to target: of the log up to its end
    only (ranged: nk_sync_range). A failure poisons the Wal at its next call
    (bg_err). Returns 0, an errno or a code of _flusher_loop's."""
    cdef double t0 = _now_monotonic(), dt = 0
    cdef int err = 0, status
    cdef uint64_t seg = 0
    if self.shm != NULL:
        status = _shared_fsync(self, target, True, &seg, &err)
        if status == _SYNC_FAILED:
            self.bg_err = err
            self.broken = True
            return err
        if status == _SYNC_UNUSABLE:
            return _FLUSH_NEEDS_GIL         # (sync() raises)
        _note_synced(self)
        _settle_dirty(self, t0)
        return 0
    status = self._sync_nogil(target, True, &t0, &dt, &err)
    if status == _SYNC_FAILED:
        self.bg_err = err
        self.broken = True                  # (before the turn ends: nobody syncs, and succeeds, meanwhile)
        self._end_sync_turn(0)
        return err
    if status == _SYNC_UNUSABLE:
        return -1
    _settle_dirty(self, t0 if status == _SYNC_DONE else _now_monotonic())
    return 0


cdef int _flusher_loop(_WalCore self) noexcept nogil:
    # Idle (nothing unsynced) for two windows, or under the OS policy once
    # sync() was called for _SYNC_LINGER (so that the re-arm after each
    # call, _rearm_after_sync, does not first wait for the GIL, which a
    # busy writer gives up every 5 ms only), it returns: the thread then
    # waits in Python without holding the Wal, which a user may drop.
    cdef double now, wait_until, busy_at = _now_monotonic()
    cdef double linger
    cdef int res
    while True:
        if self.bg_stop or self.closed:
            return 0
        if self.rearm_due:
            self.rearm_due = False
            _rearm(self, self.sync_span)
            busy_at = _now_monotonic()
            continue
        now = _now_monotonic()
        if _fsync_due(self, now):
            res = _fsync_batch(self)
            if res != 0:
                return res
            busy_at = _now_monotonic()
            continue
        if self.writeback_pending:
            _writeback_behind(self)
            busy_at = _now_monotonic()
            continue
        if self.prefault_pending:
            _prefault_loop(self)            # (returns early when an fsync falls due)
            continue
        if self.dirty:
            wait_until = self.dirty_since + self.window
        else:
            linger = (2 * self.window if self.policy == POLICY_BATCH
                      else _SYNC_LINGER if self.synced_by_caller else 0)
            wait_until = busy_at + linger
            if wait_until <= now:
                return 0
        pthread_mutex_lock(&self.bg_mutex)
        if not self.bg_wake and not self.bg_stop:
            nk_cond_wait_until(&self.bg_cond, &self.bg_mutex, wait_until)
        self.bg_wake = False
        pthread_mutex_unlock(&self.bg_mutex)


def _test_synced_with_gil_held(_WalCore wal, double timeout):
    """Test hook: spins with the GIL held until every append of `wal` is
    durable (True), `timeout` seconds passed (False), or the background
    thread is not in its loop (None: it would need the GIL to get there).
    Only a thread that fsyncs without the GIL can make it return True."""
    cdef double end = _now_monotonic() + timeout
    while _now_monotonic() < end:
        if nk_load_acquire_u64(&wal.synced_total) >= nk_load_acquire_u64(&wal.written_total):
            return True
        if not wal.bg_looping:
            return None
    return False


def _test_background_sync(_WalCore wal):
    """Test hook: the background thread's fsync (_background_fsync) of
    everything appended, run now in this thread; raises as the Wal's next
    call would after a failed one."""
    cdef int res
    wal._check_usable()
    with nogil:
        res = _background_fsync(wal, nk_load_acquire_u64(&wal.written_total))
    wal._check_usable()
    if res:
        raise RuntimeError(f"the background fsync did not run here ({res})")


def _test_prefault(_WalCore wal, bint fsync_overdue):
    """Test hook: the background thread's prefault (_prefault_loop), run now
    in this thread as if the writer had just asked for it, from the log's
    end; with fsync_overdue, the batch window of the oldest unsynced append
    has run out (dirty_since moved back). Returns (the log's end, the lead
    it was asked for, how far the mapping is faulted in after, whether the
    prefault is still pending)."""
    cdef uint64_t end, lead
    wal._check_usable()
    if wal.fork_gen != _fork_generation or wal.map == NULL:
        raise RuntimeError("no mapping of this process to prefault")
    if fsync_overdue:
        if not wal.dirty:
            raise RuntimeError("nothing unsynced: no fsync can be due")
        wal.dirty_since = _now_monotonic() - 2 * wal.window - 1
    with nogil:
        wal._lock_map_nogil()
        end = wal.seg_size
        lead = wal.prefault_lead
        wal.populated = end
        wal.prefault_pending = True
        wal._unlock_map()
        _prefault_loop(wal)
    return end, lead, wal.populated, wal.prefault_pending
