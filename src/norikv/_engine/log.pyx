# The write side of a Wal (norikv.wal.Wal subclasses _WalCore and drives
# recovery): one mapped, preallocated active segment (segment.pyx).
#
# Appends copy the encoded record into a MAP_SHARED mapping of the active
# segment: once memcpy returns the bytes are in the kernel's page cache and
# survive the death of the process, with no system call per record.
#
# Threads: every append runs with the GIL held from reserve to commit, so
# appends are atomic with respect to each other.  Work that releases the GIL
# (fsync, rotation, growth) holds io_lock; rotation and growth also set `busy`
# so that appends in other threads take the slow path and wait for io_lock.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.pythread cimport (PyThread_allocate_lock, PyThread_free_lock, PyThread_acquire_lock,
                               PyThread_release_lock, WAIT_LOCK, NOWAIT_LOCK)
from posix.unistd cimport close as c_close

import os

from norikv.errors import ClosedError, NoriIOError, ReadOnlyError, WalFailedError, io_error


cdef enum:
    # A sync() covering less switches to page-sized folios (docs/DESIGN.md,
    # "Write path"): with large ones, every sync() rewrote the folio holding
    # the log's end and dirtied the next whole, up to 2 x 2 MiB deep into a
    # segment (commits of 123 KB past 25 MiB: 1-2 MB written and 670-860 us
    # per sync, against 128 KB and 270-340 us with page-sized folios).
    _SMALL_SYNC = 1 << 20
    # The batch policy's background fsync switches below this only: it runs
    # every window whatever the writer does, and a writer of 100 B puts
    # covers about 0.6 MB a window, at full speed only with large folios.
    _SMALL_BACKGROUND_SYNC = 64 << 10
    _SYNC_COVERED = 0
    _SYNC_DONE = 1
    _SYNC_UNUSABLE = 2
    _SYNC_FAILED = 3


cdef class _WalCore:
    """The write side of a Wal: its attributes and the append contract are
    declared in log.pxd."""

    def __cinit__(self):
        self.dir_fd = -1
        self.lock_fd = -1
        self.seg_fd = -1
        self.shm_fd = -1
        self.lock_timeout = -1.0
        self.map = NULL
        self.closed = True
        self.fork_gen = _fork_generation
        self.seg_sizes = {}
        self.max_value_size = _DEFAULT_MAX_VALUE_SIZE
        self.prefault_lead = _PREFAULT_REFILL
        self.io_lock = PyThread_allocate_lock()
        self.map_lock = PyThread_allocate_lock()
        if self.io_lock == NULL or self.map_lock == NULL:
            raise MemoryError()
        if pthread_mutex_init(&self.sync_mutex, NULL) != 0:
            raise MemoryError()
        if pthread_cond_init(&self.sync_cond, NULL) != 0:
            pthread_mutex_destroy(&self.sync_mutex)
            raise MemoryError()
        if pthread_mutex_init(&self.bg_mutex, NULL) != 0:
            pthread_cond_destroy(&self.sync_cond)
            pthread_mutex_destroy(&self.sync_mutex)
            raise MemoryError()
        if nk_cond_init_monotonic(&self.bg_cond) != 0:
            pthread_mutex_destroy(&self.bg_mutex)
            pthread_cond_destroy(&self.sync_cond)
            pthread_mutex_destroy(&self.sync_mutex)
            raise MemoryError()
        self.sync_init = True

    def __dealloc__(self):
        # Dropped without close(): release resources, leave the files as a
        # crash would (the zero tail is a clean end for recovery).
        self._release(False)
        _shm_unmap(self)        # (kept until now: a thread may still wait on its mutexes)
        if self.fork_gen != _fork_generation:
            # Inherited through fork(): a thread of the parent may have held
            # these locks, or waited on sync_cond, at the fork. Freeing them
            # could block (glibc's pthread_cond_destroy waits for the waiters,
            # which do not exist here); they are leaked on purpose, as CPython
            # does with its own locks after fork.
            return
        if self.io_lock != NULL:
            PyThread_free_lock(self.io_lock)
        if self.map_lock != NULL:
            PyThread_free_lock(self.map_lock)
        if self.sync_init:
            pthread_cond_destroy(&self.sync_cond)
            pthread_mutex_destroy(&self.sync_mutex)
            pthread_cond_destroy(&self.bg_cond)
            pthread_mutex_destroy(&self.bg_mutex)

    # ------------------------------------------------------------ locking

    cdef inline void _lock_io(self):
        if not PyThread_acquire_lock(self.io_lock, NOWAIT_LOCK):
            with nogil:
                PyThread_acquire_lock(self.io_lock, WAIT_LOCK)

    cdef inline void _unlock_io(self) noexcept:
        PyThread_release_lock(self.io_lock)

    cdef int _sync_nogil(self, uint64_t target, bint ranged, double *t0, double *dt, int *err) noexcept nogil:
        """The group commit, run without the GIL. Waits until `target` is
        durable or no fsync is running; in the second case this thread is
        the leader: it takes io_lock, fsyncs, and ends its turn at once, so
        the next leader starts its fsync while this one queues for the GIL.

        Returns _SYNC_COVERED (another fsync covered target), _SYNC_DONE (this
        thread fsynced), _SYNC_UNUSABLE (closed, failed or forked: the caller
        raises) or _SYNC_FAILED (err set; the turn and io_lock stay held so
        that no thread can fsync, and succeed, before the Wal is poisoned)."""
        cdef uint64_t cover
        pthread_mutex_lock(&self.sync_mutex)
        while True:
            if self.synced_total >= target:
                pthread_mutex_unlock(&self.sync_mutex)
                return _SYNC_COVERED
            if not self.syncing:
                self.syncing = True
                break
            pthread_cond_wait(&self.sync_cond, &self.sync_mutex)
        pthread_mutex_unlock(&self.sync_mutex)
        PyThread_acquire_lock(self.io_lock, WAIT_LOCK)
        if self.closed or self.broken or self.fork_gen != _fork_generation:
            self._end_sync_turn(0)
            return _SYNC_UNUSABLE
        if self.synced_total >= target:         # a segment rotation synced it
            self._end_sync_turn(0)
            return _SYNC_COVERED
        # io_lock keeps the segment, its fd and mapping in place; appends go
        # on, and what they publish after this load is left to the next fsync.
        t0[0] = _now_monotonic()
        cover = nk_load_acquire_u64(&self.written_total)
        if ranged:          # (the log up to its end only)
            err[0] = nk_sync_range(self.seg_fd, self.map, nk_load_acquire_u64(&self.seg_size))
        else:
            err[0] = nk_sync_data(self.seg_fd, self.map, self.seg_size)
        dt[0] = _now_monotonic() - t0[0]
        if err[0]:
            return _SYNC_FAILED
        self._count_fsync(dt[0])            # (in the turn: one leader counts at a time)
        self._end_sync_turn(cover)
        return _SYNC_DONE

    cdef void _end_sync_turn(self, uint64_t cover) noexcept nogil:
        """Ends the leader's turn: publishes `cover` as durable (0: nothing
        new), releases io_lock and wakes every waiting sync()."""
        pthread_mutex_lock(&self.sync_mutex)
        if cover > self.synced_total:
            self.synced_total = cover
        self.syncing = False
        PyThread_release_lock(self.io_lock)
        pthread_cond_broadcast(&self.sync_cond)
        pthread_mutex_unlock(&self.sync_mutex)

    # map_lock is always taken with the GIL released while waiting (the
    # prefault thread holds it without the GIL). Order: io_lock, then map_lock.

    cdef inline void _lock_map(self) noexcept:
        if not PyThread_acquire_lock(self.map_lock, NOWAIT_LOCK):
            with nogil:
                PyThread_acquire_lock(self.map_lock, WAIT_LOCK)

    cdef inline void _lock_map_nogil(self) noexcept nogil:
        PyThread_acquire_lock(self.map_lock, WAIT_LOCK)

    cdef inline void _unlock_map(self) noexcept nogil:
        PyThread_release_lock(self.map_lock)

    # ------------------------------------------------------------ state

    cdef int _check_owner(self) except -1:
        """Raises unless this Wal is open and owned by this process (not
        inherited from the parent through fork())."""
        if self.closed:
            raise ClosedError("the Wal is closed")
        if self.fork_gen != _fork_generation:
            raise NoriIOError(EPERM, "this Wal was opened by the parent process; a forked child can "
                              "only close it, and opens the store itself (a KvStore beside the "
                              "parent; a Wal once the parent has closed it)", self.dir)
        return 0

    cdef int _check_usable(self) except -1:
        self._check_owner()
        if self.readonly:
            raise ReadOnlyError(EROFS, "the store was opened with readonly=True", self.dir)
        if self.bg_err and self.failed is None:
            self._poison(self.bg_err, self._segment_path(self.seg_id), "fdatasync (background)")
        if self.failed is not None:
            raise WalFailedError(self.failed.errno, "the Wal failed earlier and refuses writes "
                                 f"until reopened ({self.failed.strerror})", self.failed.filename)
        return 0

    cdef int _poison(self, int err, object path, str what) except -1:
        exc = io_error(err, path, what, WalFailedError)
        self.failed = exc
        self.broken = True
        raise exc

    cdef int _sync_dir(self, bint poison) except -1:
        """Makes a change of the log directory durable (a segment created,
        renamed into place or deleted): fsync of the directory. A failure
        poisons the Wal when ``poison`` (once it is started: as any failed
        fsync of the log), else raises NoriIOError (recovery, before)."""
        cdef int err
        with nogil:
            err = nk_sync_full(self.dir_fd)
        if err:
            if poison:
                self._poison(err, self.dir, "fsync directory")
            raise io_error(err, self.dir, "fsync directory")
        return 0

    cdef void _count_fsync(self, double dt) noexcept nogil:
        self.fsync_count += 1
        self.fsync_seconds += dt
        if dt > self.fsync_max:
            self.fsync_max = dt

    # ------------------------------------------------------------ open

    def _open(self, config, *, bint shared=False, bint readonly=False, lock_timeout=None):
        """Takes the directory ``config.dir`` (which norikv.wal has created
        durably) with the settings of the validated WalConfig ``config``:
        exclusive, shared with other processes (``shared``: a KvStore's; only
        the first opener recovers), or without a lock (``readonly``). Recovery
        follows, driven by norikv.wal, which then calls _start (lockdir.pyx)."""
        _open_directory(self, config, shared, readonly, lock_timeout)

    def _shared_init(self):         # the first opener of a shared directory, after recovery
        _shared_init(self)

    def _shared_start(self, dict finalized):    # a joiner, once its map reflects _published()
        _shared_start(self, finalized)

    @property
    def shared(self):
        """Whether other processes may write this log too (a KvStore's Wal)."""
        return self.shm != NULL

    def _segment_path(self, uint64_t seg_id):
        return os.path.join(self.dir, segment_name(seg_id))

    def _segment_ids(self):
        ids = sorted(self.seg_sizes)
        if self.seg_fd >= 0:
            ids.append(self.seg_id)
        return ids

    def _segment_sizes(self):
        """{segment id: bytes} including the active segment's logical size."""
        out = dict(self.seg_sizes)
        if self.seg_fd >= 0:
            out[self.seg_id] = self.seg_size
        return out

    def _start(self, dict finalized, object last_id, uint64_t last_size):
        """Makes the Wal writable after recovery: appends continue at
        ``last_size`` in segment ``last_id`` (None: create segment 0)."""
        self.seg_sizes = dict(finalized)
        self.written_total = sum(finalized.values()) + last_size
        self.synced_total = self.written_total
        if last_id is None:
            self.next_seg_id = 0
            self._lock_io()
            try:
                _create_segment(self, 0)
            finally:
                self._unlock_io()
        else:
            _open_active(self, last_id, last_size)

    def _flusher_run(self):
        """The background thread's work (norikv.wal._background), without the
        GIL (flusher.pyx) until it returns: when idle for two batch windows,
        when _stop_flusher asks, or when a failed fsync poisoned the Wal
        (raised here). True: call again at once (it ran a sync() that
        needed the GIL)."""
        cdef int res
        if self.fork_gen != _fork_generation or self.closed:
            return False
        with nogil:
            self.bg_looping = True
            res = _flusher_loop(self)
            self.bg_looping = False
        if res == _FLUSH_NEEDS_GIL:
            self._sync(False)
            return True
        if res > 0:
            self._check_usable()
        return False

    def _stop_flusher(self):
        """Asks the background thread to return from _flusher_run (close())."""
        _wake_flusher(self, True)

    def _unmap_written(self):
        """_unmap_behind, as the background thread runs it before a batch fsync."""
        if self.fork_gen == _fork_generation:
            with nogil:
                _unmap_behind(self)

    def _rearm_ahead(self):
        """_rearm, as the background thread runs it after a batch fsync."""
        if self.fork_gen == _fork_generation:
            with nogil:
                _rearm(self)

    def _written_back_through(self):
        """Test hook: how far _writeback_behind has started the writeback of
        the active segment."""
        return self.written_back

    def _rearmed_through(self):
        """Test hook: written_total as the last finished _rearm read it."""
        return nk_load_acquire_u64(&self.rearmed_at)

    # ------------------------------------------------------------ append

    cdef inline uint8_t *_reserve(self, uint64_t n) except NULL:
        """Room for n bytes at the end of the log (the contract: log.pxd)."""
        if (self.busy == 0 and self.shm == NULL and self.fork_gen == _fork_generation and not self.broken
                and not self.closed and self.seg_size + n <= self.populated
                and (self.seg_size + n <= self.max_segment_size or self.seg_size == 0)):
            return self.map + self.seg_size
        if self.shm != NULL and not self.readonly:
            return _reserve_shared(self, n)     # (its own fast path)
        return self._reserve_slow(n)

    cdef inline uint8_t *_reserve_put(self, uint64_t n) except NULL:
        if self.shm != NULL and not self.readonly:
            return _reserve_put(self, n)
        return self._reserve(n)

    cdef uint8_t *_reserve_slow(self, uint64_t n) except NULL:
        self._check_usable()
        _make_room(self, n)
        return self.map + self.seg_size

    cdef inline int _commit(self, uint64_t n) except -1:
        """Publishes the n bytes written at _reserve's pointer. Runs no Python
        code, so a caller can keep its in-memory update atomic with the append."""
        self.seg_size += n
        nk_store_release_u64(&self.written_total, self.written_total + n)
        if self.shm != NULL:
            _publish_position(self)
            _writer_unlock(self)
        if self.policy == POLICY_BATCH:
            nk_fence()                  # written_total before dirty: _settle_dirty
            if not self.dirty:
                self.dirty_since = _now_monotonic()
                self.dirty = True
                self.wake_pending = True
        elif (self.writeback_step and self.seg_size >= self.written_back + self.writeback_step
                and not self.writeback_pending):
            self.writeback_pending = True
            self.wake_pending = True
        if (self.seg_size + self.prefault_lead - (self.prefault_lead >> 3) > self.populated
                and not self.prefault_pending and _prefaults(self) and not _zero_chunk(self)):
            self.prefault_pending = True
            self.wake_pending = True
        return 0

    cdef inline void _unreserve(self) noexcept:
        if self.shm != NULL and self.x_owner == nk_thread_id():
            _writer_unlock(self)

    cdef inline int _after_append(self) except -1:
        """Work that may run Python code or release the GIL: waking the
        flusher (batch policy) and the fsync of the ALWAYS policy. (Split so
        that the check, all an OS-policy append pays, is inlined.)"""
        if self.wake_pending or self.unmap_due or self.policy == POLICY_ALWAYS:
            return self._after_append_work()
        return 0

    cdef int _after_append_work(self) except -1:
        if self.unmap_due:
            self.unmap_due = False
            _unmap_behind(self)
        if self.wake_pending:
            self.wake_pending = False
            self._wake_background()
        if self.policy == POLICY_ALWAYS:
            self.sync()
        return 0

    def append(self, Record record not None):
        """Appends one record; returns its Position. The bytes are in the OS
        page cache when this returns (ALWAYS: on stable storage). A value
        over max_value_size is a ValueError and nothing is written."""
        cdef bytes stored
        _check_value_size(record.value, self.max_value_size)
        stored = record._stored_value()
        cdef uint32_t flags = record._wire_flags()
        cdef uint64_t n
        cdef uint8_t *p
        cdef Position pos
        n = nk_encoded_len(PyBytes_GET_SIZE(record.key), PyBytes_GET_SIZE(stored), flags,
                           record._ttl_ms, record._term, record._index)
        p = self._reserve(n)
        nk_encode(p, <const uint8_t *>PyBytes_AS_STRING(record.key), PyBytes_GET_SIZE(record.key),
                  <const uint8_t *>PyBytes_AS_STRING(stored), PyBytes_GET_SIZE(stored), flags,
                  record._ttl_ms, record._term, record._index)
        pos = _pos(self.seg_id, self.seg_size)
        self._commit(n)
        self._after_append()
        return pos

    def append_batch(self, records, *, bint atomic=False):
        """Appends records contiguously in one segment; returns their Positions.

        With ``atomic=True`` (and two records or more) every record but the
        last carries BATCH_CONT and the last BATCH_END (docs/FORMAT.md):
        recovery applies all of them or none. Without it, batch flags the
        records carry are cleared."""
        cdef list recs = list(records)
        cdef list positions = []
        cdef _Run run = _Run(len(recs), atomic)
        cdef Record r
        cdef uint64_t total, seg, off
        cdef Py_ssize_t i
        cdef uint8_t *p
        if not recs:
            return positions
        for r in recs:
            if r is None:
                raise TypeError("records must be Record objects")
            _check_value_size(r.value, self.max_value_size)
        for r in recs:
            run.add(r.key, r._stored_value(), r._wire_flags(), r._ttl_ms, r._term, r._index)
        total = run.size()
        p = self._reserve(total)
        seg = self.seg_id
        off = self.seg_size
        run.encode(p)
        self._commit(total)
        for i in range(run.n):
            positions.append(_pos(seg, off))
            off += run.length(i)
        self._after_append()
        return positions

    # ------------------------------------------------------------ sync and reads

    def flush(self):
        """Nothing to do: every append already reached the OS page cache.
        Kept for API parity with nori-wal."""
        self._check_owner()

    cdef inline bint _small_sync(self, uint64_t target, uint64_t small) noexcept nogil:
        return not self.small_folios and self.synced_total < target and target - self.synced_total < small

    def sync(self):
        """Makes everything appended before this call durable (fdatasync; on
        macOS F_FULLFSYNC). Concurrent callers share one fsync (group commit)."""
        self._sync(True)
        self._rearm_after_sync()

    cdef int _sync(self, bint caller) except -1:
        """sync(); `caller`: a call of the user's (not the background thread
        switching to page-sized folios), whose span sizes the zeros written
        ahead (_note_sync_span)."""
        cdef uint64_t target = self.written_total
        cdef int err = 0
        cdef int status
        cdef double t0 = 0, dt = 0
        self._check_usable()
        self.synced_by_caller = True
        if caller:
            _note_sync_span(self, target)
        if self._small_sync(target, _SMALL_SYNC):
            _use_small_folios(self)
        if self.shm != NULL:
            return _sync_shared(self)
        if self.synced_total >= target:
            return 0
        with nogil:
            status = self._sync_nogil(target, False, &t0, &dt, &err)
        if status == _SYNC_COVERED:
            return 0
        if status == _SYNC_UNUSABLE:
            self._check_usable()
            raise AssertionError("unreachable: _sync_nogil found the Wal unusable")
        if status == _SYNC_FAILED:
            try:
                self._poison(err, self._segment_path(self.seg_id), "fdatasync")
            finally:
                self._end_sync_turn(0)
        _settle_dirty(self, t0)
        return 0

    cdef int _rearm_after_sync(self) except -1:
        """After a sync() call: its fsync, like the batch policy's, cleaned
        and write-protected the pages the writer fills next, each then a
        write fault in the writer (33 per commit of 1,000 puts of 100 B).
        The background thread takes them instead (_rearm over the call's
        span: the next commit likely fills as much, and a page mapped for
        writing past what it fills is a dirty zero the next sync() writes),
        when the call covered at least _REARM_SYNC_MIN (under it the wake
        costs about what the faults do). Not under ALWAYS (_prefaults)."""
        if _prefaults(self) and self.sync_span >= _REARM_SYNC_MIN:
            self.rearm_due = True
            self._wake_background()
        return 0

    cdef int _wake_background(self) except -1:
        """Wakes the background thread, in flusher.pyx's loop or waiting in Python."""
        _wake_flusher(self, False)
        if self._waker is not None:
            self._waker()
        return 0

    def current_position(self):
        """Position at which the next record will be written."""
        self._check_owner()
        return _pos(self.seg_id, self.seg_size)

    def read_from(self, Position start not None):
        """Iterator of (Record, Position) from ``start`` to the current end,
        across segments in order."""
        cdef WalIterator it = WalIterator.__new__(WalIterator)
        self._check_owner()
        it.wal = self
        it.seg_id = start.segment_id
        it._start_offset = start.offset
        return it

    # ------------------------------------------------------------ segments and compaction support

    def delete_segments_before(self, Position pos not None):
        """Deletes every finalized segment whose id is below ``pos.segment_id``
        (never the active one), lowest first, each deletion made durable before
        the next so that what remains is always a suffix of the log. Returns the
        number of segments deleted."""
        self._check_usable()
        doomed = [i for i in sorted(self.seg_sizes) if i < pos.segment_id]
        return self._delete_segments(doomed)

    def _delete_segments(self, list ids):
        """Deletes the segments ``ids`` in order, each deletion made durable
        before the next (compaction, delete_segments_before)."""
        cdef int n = 0
        self._check_usable()
        for seg in ids:
            path = self._segment_path(seg)
            _unlink_present(path)
            _unlink(path[:len(path) - 4] + ".hint")     # values="disk"'s, if any
            self.seg_sizes.pop(seg, None)
            self._sync_dir(True)
            n += 1
        return n

    cdef int _begin_exclusive(self) except -1:
        """Takes io_lock and stops appends (they wait in the slow path) until
        _end_exclusive. Between the two, with the GIL held, no append is half done."""
        self._check_usable()
        if self.shm != NULL:
            _writer_lock_caught_up(self)
        self._lock_io()
        self.busy = 1
        try:
            self._check_usable()
        except BaseException:
            self._end_exclusive()
            raise
        return 0

    cdef void _end_exclusive(self) noexcept:
        self.busy = 0
        self._unlock_io()
        if self.shm != NULL and self.x_owner == nk_thread_id():
            _writer_unlock(self)

    cdef tuple _seal_and_skip_locked(self, uint64_t gap):
        """Compaction support, inside _begin_exclusive: finalizes the active
        segment and opens the next one `gap` ids further on, leaving ids
        [old+1, old+gap] free for a snapshot. Returns (first free id, new active id)."""
        cdef uint64_t first
        _check_ids_left(self, gap + 1)
        first = self.seg_id + 1
        _finalize_active(self)
        self.next_seg_id = first + gap
        _create_segment(self, 0)
        if self.shm != NULL:
            _publish_segment(self)
        return first, self.seg_id

    def _install_segment(self, tmp_path, uint64_t seg_id, uint64_t size):
        """Compaction support: renames a fully written, fsynced temporary file
        into place as segment seg_id and makes the rename durable."""
        self._check_usable()      # never after close(): another process may own the directory
        os.rename(tmp_path, self._segment_path(seg_id))
        self._sync_dir(True)
        self.seg_sizes[seg_id] = size

    def _fsync_dir(self):
        """_sync_dir without poisoning, for recovery (norikv.wal)."""
        self._sync_dir(False)

    def _lock_state(self):
        """(written_total, synced_total (SHM's: of the whole log), failed) for monitoring and tests."""
        return self.written_total, self.shm.synced_total if self.shm != NULL else self.synced_total, self.failed

    # ------------------------------------------------------------ close

    def close(self):
        """Syncs, finalizes the active segment (truncating the preallocated
        tail) and releases the directory lock. Idempotent."""
        if self.closed:
            return
        if self.fork_gen != _fork_generation:
            # Inherited through fork(): the parent owns the files. Release
            # this process's mapping and descriptors only, without io_lock (a
            # thread of the parent may have held it at the fork).
            self._release(False)
            return
        if self.shm != NULL and not self.readonly:
            _close_shared(self)
            return
        self._lock_io()
        try:
            if self.closed:
                return
            try:
                if self.failed is None:
                    self.busy = 1
                    _finalize_active(self)
            finally:
                self._release(True)
        finally:
            self._unlock_io()

    def _drop(self):
        """Releases descriptors, mapping and lock without touching the files."""
        self._release(False)

    cdef void _release(self, bint in_order) noexcept:
        if self.map != NULL:
            if self.fork_gen != _fork_generation:
                _unmap_locked(self)    # map_lock may be held by a parent thread that is gone
            else:
                _unmap(self)
        if self.seg_fd >= 0:
            c_close(self.seg_fd)
            self.seg_fd = -1
        if self.lock_fd >= 0:
            c_close(self.lock_fd)
            self.lock_fd = -1
        if self.shm_fd >= 0:
            c_close(self.shm_fd)
            self.shm_fd = -1
        if self.dir_fd >= 0:
            c_close(self.dir_fd)
            self.dir_fd = -1
        if self.dir_key is not None:
            ref = _open_dirs.get(self.dir_key)
            if ref is not None and (ref() is None or ref() is self):
                del _open_dirs[self.dir_key]
            self.dir_key = None
        self.closed = True
        self.busy = 1

    cdef void _detach_inherited(self) noexcept:
        """In a child created by fork(): this process stops owning the
        directory. The inherited descriptor of LOCK shares the parent's flock
        (one open file description): it is closed, never unlocked (LOCK_UN
        would drop the parent's lock), so that the lock ends with the parent's
        close and this process can then open the directory itself."""
        if self.lock_fd >= 0:
            c_close(self.lock_fd)
            self.lock_fd = -1
        if self.shm_fd >= 0:
            c_close(self.shm_fd)       # (SHM's flock, if the parent holds it, stays the parent's)
            self.shm_fd = -1
        self.dir_key = None
