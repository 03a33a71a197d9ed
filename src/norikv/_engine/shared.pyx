# Many processes on one log: the page of SHM they share (include/shared.h),
# used through functions of the _WalCore each process holds (docs/DESIGN.md,
# "Many processes").
#
# Who may do what:
# - LOCK's flock: every process with the store open holds it shared; the
#   one that gets it exclusive is alone, so it recovers the log and sets up
#   SHM. SHM's own flock, held exclusive around that, makes the decision
#   atomic for concurrent openers. A plain Wal (norikv.wal) takes LOCK
#   exclusive and so still excludes everyone.
# - wmutex (robust, in SHM): held by a writer from _reserve to _commit (the
#   append contract, log.pxd). Taking it brings the process's Wal to the
#   published end of the log and its map up to date (_follow_hook), so a
#   record is always written after everything published before it.
# - A holder that dies leaves EOWNERDEAD to the next one, which repairs:
#   segments created but never published are deleted, and the bytes the
#   dead holder may have written past the published end are zeroed, so
#   recovery can never take them for records.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.string cimport memcpy
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED
from posix.unistd cimport close as c_close, getpid
from posix.fcntl cimport open as c_open, openat, O_RDONLY, O_RDWR, O_CREAT, O_CLOEXEC
from posix.stat cimport struct_stat, fstat

import os

from norikv.errors import LockError, WalFailedError, io_error


cdef str _SHM_NAME = "SHM"


cdef object _shm_path(_WalCore self):
    return os.path.join(self.dir, _SHM_NAME)


cdef int _shm_map(_WalCore self, bint writable) except -1:
    """Opens and maps <dir>/SHM: created (its page allocated, so a full disk
    is an ENOSPC here, never a SIGBUS later) when writable; returns 0 with
    shm NULL when read-only and there is no page."""
    cdef struct_stat st
    cdef void *m
    cdef int err
    path = _shm_path(self)
    fd = c_open(os.fsencode(path), (O_RDWR | O_CREAT if writable else O_RDONLY) | O_CLOEXEC, 0o644)
    if fd < 0:
        if not writable and errno == ENOENT:
            return 0
        raise io_error(errno, path, "open")
    self.shm_fd = fd
    if writable:
        err = nk_allocate(fd, 0, NK_SHM_SIZE)
        if err:
            raise io_error(err, path, "allocate")
    elif fstat(fd, &st) != 0 or st.st_size < NK_SHM_SIZE:
        return 0
    m = mmap(NULL, NK_SHM_SIZE, PROT_READ | (PROT_WRITE if writable else 0), MAP_SHARED, fd, 0)
    if m == MAP_FAILED:
        raise io_error(errno, path, "mmap")
    self.shm = <nk_shm *>m
    # The flocks go on a descriptor of their own: a mapping keeps its open
    # file description alive, and with it any flock taken through it, after
    # the descriptor is closed.
    self.shm_fd = c_open(os.fsencode(path), O_RDONLY | O_CLOEXEC)
    c_close(fd)
    if self.shm_fd < 0:
        raise io_error(errno, path, "open")
    return 0


cdef void _shm_unmap(_WalCore self) noexcept:
    if self.shm != NULL:
        munmap(self.shm, NK_SHM_SIZE)
        self.shm = NULL
    if self.shm_fd >= 0:
        c_close(self.shm_fd)
        self.shm_fd = -1


cdef int _lock_error(_WalCore self, int err, str what, object pid) except -1:
    if err == EWOULDBLOCK or err == ETIMEDOUT:
        exc = LockError(EWOULDBLOCK, what + (f" (pid {pid})" if pid else ""), self.dir)
        exc.pid = pid or None
        raise exc
    raise io_error(err, self.dir, what)


cdef int _shared_open(_WalCore self, object lock_path) except -1:
    """KvStore's open of the directory (lock_fd is open): decides, with
    SHM's flock held, whether this process is alone (first_opener: it
    recovers and then calls _shared_init) or joins the processes that have
    the store open (then SHM's flock is released at once)."""
    cdef int err
    cdef double timeout = self.lock_timeout
    _shm_map(self, True)
    with nogil:
        err = nk_flock_wait(self.shm_fd, LOCK_EX, timeout)
    if err:
        _lock_error(self, err, "another process is recovering the log",
                    self.shm.init_pid if nk_shm_valid(self.shm) else None)
    if flock(self.lock_fd, LOCK_EX | LOCK_NB) == 0:
        self.first_opener = True
        return 0
    err = errno
    if err == EWOULDBLOCK and flock(self.lock_fd, LOCK_SH | LOCK_NB) == 0 and nk_shm_valid(self.shm):
        flock(self.shm_fd, LOCK_UN)
        return 0
    if err == EWOULDBLOCK:
        # Held exclusive (a norikv.wal.Wal), or by a norikv without SHM.
        _lock_error(self, EWOULDBLOCK, "the directory is locked by another process",
                    _lock_file_pid(lock_path))
    raise io_error(err, lock_path, "flock")


cdef int _shared_init(_WalCore self) except -1:
    """The first opener, once recovery has started its Wal: a fresh SHM page
    describing the log, then LOCK shared like every other process, then
    SHM's flock released: joiners may come."""
    cdef int err = nk_shm_init(self.shm, self.seg_id, self.seg_size, self.written_total,
                               self.alloc, getpid())
    if err:
        raise io_error(err, _shm_path(self), "pthread_mutex_init")
    self.seen_epoch = nk_shm_epoch(self.shm)
    self.follow_ver = self.wal_ver = nk_shm_read(self.shm, &self.pub)
    self.session = self.shm.session
    self.joined = True                  # (nk_shm_init counted it)
    if flock(self.lock_fd, LOCK_SH | LOCK_NB) != 0:
        _lock_error(self, errno, "the directory is locked by another process", None)
    flock(self.shm_fd, LOCK_UN)
    return 0


cdef int _readonly_open(_WalCore self) except -1:
    """readonly=True: takes no lock and writes nothing. When processes have
    the store open (LOCK is held) and SHM describes them, this process
    follows what they publish; otherwise it reads the log as it is."""
    cdef int err, fd
    cdef bint live = False
    _shm_map(self, False)
    if self.shm_fd >= 0:
        with nogil:
            err = nk_flock_wait(self.shm_fd, LOCK_SH, self.lock_timeout)   # a recovery under way
        if err:
            _lock_error(self, err, "another process is recovering the log", None)
    try:
        fd = c_open(os.fsencode(os.path.join(self.dir, "LOCK")), O_RDONLY | O_CLOEXEC)
        if fd >= 0:
            if flock(fd, LOCK_EX | LOCK_NB) == 0:
                flock(fd, LOCK_UN)
            else:
                live = errno == EWOULDBLOCK
            c_close(fd)
        if not (live and self.shm != NULL and nk_shm_valid(self.shm)):
            _shm_unmap(self)
        else:
            self.seen_epoch = nk_shm_epoch(self.shm)
            self.follow_ver = nk_shm_read(self.shm, &self.pub)
            self.session = self.shm.session
    finally:
        if self.shm_fd >= 0:
            flock(self.shm_fd, LOCK_UN)
    return 0


def _published(_WalCore self):
    """(segment id, size, total, gen) of the published end of the log as
    this process's map will reflect it once loaded (the joiner's load). A
    joiner that will write is counted in SHM's nprocs first (nk_shm_join): a
    writer that publishes after that bumps its keys' buckets, and what it
    published before is in the end read here."""
    if not self.readonly and not self.joined:
        nk_shm_join(self.shm)
        self.joined = True
    self.seen_epoch = nk_shm_epoch(self.shm)
    self.follow_ver = nk_shm_read(self.shm, &self.pub)
    self.session = self.shm.session
    return self.pub.seg_id, self.pub.seg_size, self.pub.total, self.pub.gen


cdef int _shared_start(_WalCore self, dict finalized) except -1:
    """A joiner, once its map reflects self.pub: the Wal writes after it."""
    self.seg_sizes = dict(finalized)
    self.written_total = self.pub.total
    self.synced_total = self.pub.total
    self.wal_ver = self.follow_ver
    if not self.readonly:
        _open_active(self, self.pub.seg_id, self.pub.seg_size)
    return 0


# ---------------------------------------------------------------- the writers' mutex

cdef int _writer_lock(_WalCore self) except -1:
    """Takes wmutex (waiting without the GIL), repairs after a holder that
    died, and brings the Wal to the published end (when another process
    published since this one did, or changed the allocation)."""
    cdef int dead = 0
    cdef int err = nk_shm_trylock(&self.shm.wmutex, &dead)
    return _writer_locked(self, err, dead)


cdef inline bint _wal_stale(_WalCore self) noexcept:
    """Whether the Wal's end of the log may not be the published one (another
    process published or changed the allocation since, or it has no active
    segment, or it was closed): then _refresh, under wmutex."""
    return (self.closed or self.seg_fd < 0 or nk_shm_ver(self.shm) != self.wal_ver
            or self.shm.alloc != self.alloc)


cdef int _writer_locked(_WalCore self, int err, int dead) except -1:
    """_writer_lock after its trylock returned err (EBUSY: wait) and dead."""
    if err == EBUSY:
        with nogil:
            err = nk_shm_spinlock(&self.shm.wmutex, 200, &dead)
    if err == EBUSY:
        with nogil:
            err = nk_shm_lock(&self.shm.wmutex, -1.0, &dead)
    if err:
        raise io_error(err, _shm_path(self), "lock the writers' mutex")
    self.x_owner = nk_thread_id()
    self.shm.writer_pid = self.pid
    if dead or _wal_stale(self):
        try:
            self._check_owner()         # (close() may have run while this thread waited)
            if dead:
                _repair(self)
            _refresh(self)
        except BaseException:
            _writer_unlock(self)
            raise
    return 0


cdef inline void _writer_unlock(_WalCore self) noexcept:
    self.x_owner = 0
    self.shm.intent_end = 0
    pthread_mutex_unlock(&self.shm.wmutex)


cdef uint8_t *_reserve_shared(_WalCore self, uint64_t n) except NULL:
    """_reserve with many processes: the writers' mutex is held from here to
    _commit (or _unreserve), and the map is brought up to date first."""
    return _reserve_shared_as(self, n, True)


cdef uint8_t *_reserve_put(_WalCore self, uint64_t n) except NULL:
    """_reserve_shared for a record that does not depend on the map (a put
    without limits): the map is not brought up to date first, so writers of
    several processes do not each apply the others' records while the mutex
    is held; the next read does (log.pxd, the append contract), so a process
    that only writes does not pay for the others' writes (its first read
    after a long run of writes applies them all: README, "Many processes")."""
    return _reserve_shared_as(self, n, False)


cdef inline uint8_t *_reserve_shared_as(_WalCore self, uint64_t n, bint catch_up) except NULL:
    cdef int dead = 0, err
    cdef unsigned long me = nk_thread_id()
    if self.fork_gen != _fork_generation or self.closed:
        self._check_usable()        # (an inherited Wal: the mutex may be held by a parent's thread)
    if self.x_owner != me:
        err = nk_shm_trylock(&self.shm.wmutex, &dead)
        if err or dead or _wal_stale(self):
            _writer_locked(self, err, dead)
        else:
            self.x_owner = me             # (_writer_lock's common case, inline)
            self.shm.writer_pid = self.pid
    if ((not catch_up or nk_shm_ver(self.shm) == self.follow_ver) and self.busy == 0
            and self.failed is None and self.fork_gen == _fork_generation and not self.closed
            and not self.shm.poisoned and self.seg_size + n <= self.populated
            and (self.seg_size + n <= self.max_segment_size or self.seg_size == 0)):
        self.shm.intent_seg = self.seg_id         # (the common case, as _reserve's)
        self.shm.intent_end = self.seg_size + n
        return self.map + self.seg_size
    return _reserve_shared_slow(self, n, catch_up)


cdef uint8_t *_reserve_shared_slow(_WalCore self, uint64_t n, bint catch_up) except NULL:
    try:
        if catch_up and nk_shm_ver(self.shm) != self.follow_ver and self._follow_hook is not None:
            self._follow_hook()
        _check_shared_usable(self)
        if (self.busy or self.seg_fd < 0 or self.seg_size + n > self.populated
                or (self.seg_size + n > self.max_segment_size and self.seg_size > 0)):
            _make_room(self, n)
        self.shm.intent_seg = self.seg_id
        self.shm.intent_end = self.seg_size + n
    except BaseException:
        _writer_unlock(self)
        raise
    return self.map + self.seg_size


cdef int _check_shared_usable(_WalCore self) except -1:
    self._check_usable()
    if self.shm.poisoned and self.failed is None:
        self.failed = WalFailedError(self.shm.poisoned, "an fsync of the log failed in another "
                                     "process: writes are refused until every process reopens",
                                     self.dir)
        self.broken = True
        raise self.failed
    return 0


cdef inline void _publish_position(_WalCore self) noexcept:
    """Publishes the Wal's end of the log (the wmutex holder). When the map
    reflected everything published before, its position moves along (the
    caller applies its own record to it); otherwise (a put that did not catch
    up) the next read applies the records in between, this one included: a
    record applied twice leaves the map as once."""
    cdef uint64_t seg, start
    if nk_shm_ver(self.shm) == self.follow_ver:
        seg, start = self.pub.seg_id, self.pub.seg_size
        self.pub.seg_id = self.seg_id   # (self.pub is the current slot: nothing was published since)
        self.pub.seg_size = self.seg_size
        self.pub.total = self.written_total
        self.follow_ver = self.wal_ver = nk_shm_publish(self.shm, &self.pub)
        if nk_shm_others(self.shm):
            _bump_published(self, seg, start)
    else:
        _publish_behind(self)


cdef void _bump_published(_WalCore self, uint64_t seg, uint64_t start) noexcept:
    """After a publication by the wmutex holder, which the published end
    (seg, start) preceded: the bucket of each published record's key gets
    the new total (nk_shm_bump), so that the next read of any of those keys
    in another process catches up. The records are this process's own and
    whole; were one not to decode, every reader is sent to catch up (a new
    epoch)."""
    cdef uint64_t off = start if seg == self.seg_id else 0
    cdef nk_rec r
    while off < self.seg_size:
        if nk_decode(self.map + off, self.seg_size - off, 0, &r) != NK_OK:
            nk_shm_new_epoch(self.shm)
            return
        nk_shm_bump(self.shm, r.key, r.klen, self.written_total)
        off += r.size


cdef void _publish_segment(_WalCore self) noexcept:
    """A new active segment (created after a seal, which fsynced the old
    one): its allocation, how far the log is durable, and its position."""
    nk_shm_synced(self.shm, self.written_total)
    self.shm.alloc = self.alloc
    _publish_position(self)


cdef void _publish_behind(_WalCore self) noexcept:
    """Publishes the end of the log for a writer whose map is behind: other
    processes write to it too. When an fsync began since this writer last
    looked, it drops its page-table entries for the pages wholly written
    (_unmap_behind, after the writers' mutex: _WalCore._after_append): the
    fsync's writeback write-protects each dirty page in every process that
    maps it writable, one TLB shootdown per page and running process (4
    writers under the batch policy: 6 % of the machine's time in
    smp_call_function_many_cond). A lone writer unmaps before its own
    fsyncs (_fsync_batch)."""
    cdef nk_pub p
    cdef uint32_t n
    cdef uint64_t seg, start
    nk_shm_read(self.shm, &p)
    seg, start = p.seg_id, p.seg_size
    p.seg_id = self.seg_id
    p.seg_size = self.seg_size
    p.total = self.written_total
    self.wal_ver = nk_shm_publish(self.shm, &p)
    if nk_shm_others(self.shm):
        _bump_published(self, seg, start)
    n = nk_shm_fsync_starts(self.shm)
    if n != self.fsyncs_seen:
        self.fsyncs_seen = n
        self.unmap_due = True


cdef int _refresh(_WalCore self) except -1:
    """With wmutex held: the Wal's active segment, size and allocation
    become the published ones (another process may have rotated or grown
    the segment)."""
    cdef nk_pub p
    self.wal_ver = nk_shm_read(self.shm, &p)
    if self.seg_fd < 0 or p.seg_id != self.seg_id:
        self._lock_io()
        try:
            _switch_active(self, p.seg_id, p.seg_size)
        finally:
            self._unlock_io()
    else:
        self.seg_size = p.seg_size
    if p.total > self.written_total:
        nk_store_release_u64(&self.written_total, p.total)
    if self.shm.alloc != self.alloc:
        self.alloc = self.shm.alloc
        if self.populated > self.alloc:
            self.populated = self.alloc
        if self.alloc > self.map_len:
            self._lock_io()
            try:
                _unmap(self)
                _map_active(self, self.alloc)
            finally:
                self._unlock_io()
    self.next_seg_id = p.seg_id + 1
    return 0


cdef int _switch_active(_WalCore self, uint64_t seg_id, uint64_t size) except -1:
    """Another process sealed the segment this Wal had mapped: map seg_id."""
    if self.seg_fd >= 0:
        _unmap(self)
        c_close(self.seg_fd)
        self.seg_fd = -1
    _rescan_sizes(self, seg_id)
    _open_active(self, seg_id, size)
    self.shm.alloc = self.alloc         # (from fstat: the file's own size is the truth)
    return 0


def _rescan_sizes(_WalCore self, uint64_t active):
    """seg_sizes from the directory: every segment below `active`."""
    sizes = {}
    for seg in list_segments(self.dir):
        if seg < active:
            try:
                sizes[seg] = os.path.getsize(self._segment_path(seg))
            except FileNotFoundError:
                pass                # deleted by a compaction meanwhile
    self.seg_sizes = sizes


cdef int _repair(_WalCore self) except -1:
    """The previous wmutex holder died holding it (its process is gone).
    Segments it created but never published are deleted; bytes it may have
    written past the published end of the active segment are zeroed; the
    allocation is read from the file (it may have sealed it)."""
    cdef nk_pub p
    cdef struct_stat st
    cdef uint64_t end
    nk_shm_read(self.shm, &p)
    self.shm.owner_deaths += 1
    removed = False
    for seg in list_segments(self.dir):
        if seg > p.seg_id:
            _unlink_present(self._segment_path(seg))
            removed = True
    if removed:
        self._sync_dir(True)
    path = self._segment_path(p.seg_id)
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        fstat(fd, &st)
        self.shm.alloc = <uint64_t>st.st_size
        end = self.shm.intent_end
        if self.shm.intent_seg == p.seg_id and end > p.seg_size:
            if end > <uint64_t>st.st_size:
                end = <uint64_t>st.st_size
            off = p.seg_size
            while off < end:
                off += os.pwrite(fd, bytes(min(end - off, 1 << 20)), off)
    finally:
        os.close(fd)
    self.shm.intent_end = 0
    return 0


# ---------------------------------------------------------------- sync, compaction

cdef int _sync_shared(_WalCore self) except -1:
    """sync() with many processes: every byte published before the call is
    durable when it returns. The processes' fsyncs are shared: the first to
    take smutex fsyncs the active segment (sealed ones were fsynced when
    sealed) and publishes how far it got; the others find themselves covered."""
    cdef uint64_t target = nk_load_acquire_u64(&self.written_total)
    cdef uint64_t seg = 0
    cdef int err = 0, status
    cdef double t0
    _check_shared_usable(self)
    if self.pub.total > target:
        target = self.pub.total
    with nogil:
        t0 = _now_monotonic()
        status = _shared_fsync(self, target, False, &seg, &err)
    if status == _SYNC_UNUSABLE:
        _check_shared_usable(self)          # (another process's failed fsync)
        raise io_error(err, _shm_path(self), "lock the fsync mutex")
    if status == _SYNC_FAILED:
        self._poison(err, self._segment_path(seg), "fdatasync")
    _note_synced(self)
    _settle_dirty(self, t0)
    return 0


cdef int _shared_fsync(_WalCore self, uint64_t target, bint ranged, uint64_t *seg, int *err) noexcept nogil:
    """The fsync of _sync_shared without the GIL (the background thread runs
    it too, `ranged`: the log up to its end only, nk_sync_range). Returns
    _SYNC_COVERED, _SYNC_DONE, _SYNC_FAILED (err and seg set: the fsync
    failed, SHM is poisoned, or the segment would not open) or
    _SYNC_UNUSABLE (SHM is poisoned, this Wal was closed meanwhile, or
    err: smutex failed)."""
    cdef int status
    if nk_load_acquire_u64(&self.shm.synced_total) >= target:
        return _SYNC_COVERED
    if not ranged:
        nk_shm_sync_arrive(self.shm)
    status = _take_smutex(self, target, err)
    if status != _SYNC_LEAD:
        return status
    if nk_load_acquire_u64(&self.shm.synced_total) >= target:
        status = _SYNC_COVERED
    elif self.shm.poisoned:
        status = _SYNC_UNUSABLE
    else:
        _gather(self, not ranged)
        status = _fsync_newest(self, ranged, seg, err)
    pthread_mutex_unlock(&self.shm.smutex)
    nk_shm_sync_wake(self.shm)
    return status


cdef void _gather(_WalCore self, bint wait) noexcept nogil:
    """With smutex held, before the fsync: the leader's gather (group commit
    across processes). N processes each in a put + sync() loop, with a
    leader that fsyncs the moment it takes smutex, settle into two cohorts:
    while one fsync runs, the callers the previous one covered return, put
    and arrive; they wait for it to end, and one of them leads the next at
    once, while the callers just covered come back too late for it. Each
    caller then waits for about two fsyncs.

    So a sync() caller that finds itself uncovered counts itself in
    `arrivals` (nk_shm_sync_arrive), and a leader that is a sync() caller
    (`wait`) waits, before it reads how far the log goes, until as many
    callers have arrived since the last fsync began as arrived from the start
    of the one before it to the end of the last (the callers that one
    covered, and those who waited for it: all who will want the next); at
    most half the last fsync's time and _GATHER_LIMIT_US. A lone process
    wants one arrival, its own: no wait. A process that stopped syncing costs
    one wait, then it is not waited for. The counts are advice: a process
    that dies leaves them at worst one wait wrong."""
    cdef nk_shm *s = self.shm
    cdef uint32_t a
    cdef double t0 = 0, left, timeout = min(s.fsync_us * 0.5e-6, _GATHER_LIMIT_US * 1e-6)
    if wait and s.gather_want > 1 and timeout > 0:
        t0 = _now_monotonic()
        nk_shm_set_gathering(s, 1)      # (the arrival that completes the count wakes this thread)
        while True:
            a = nk_shm_arrivals(s)
            left = t0 + timeout - _now_monotonic()
            if nk_shm_gathered(s, a) or left <= 0:
                break
            nk_shm_arrivals_wait(s, a, left)
        self.gather_seconds += _now_monotonic() - t0
    nk_shm_set_gathering(s, 0)          # (also the flag of a leader that died gathering)
    s.gather_prev = s.gather_base
    s.gather_base = nk_shm_arrivals(s)


cdef void _fsync_took(_WalCore self, double dt) noexcept nogil:
    """With smutex held, after a successful fsync of dt seconds: what the
    next leader's _gather waits for, and at most how long."""
    self.shm.fsync_us = <uint32_t>min(dt * 1e6, 4e9)
    self.shm.gather_want = nk_shm_arrivals(self.shm) - self.shm.gather_prev


cdef int _take_smutex(_WalCore self, uint64_t target, int *err) noexcept nogil:
    """Takes smutex to lead the fsync (_SYNC_LEAD), unless another process's
    fsync covers target meanwhile (_SYNC_COVERED) or SHM is unusable
    (_SYNC_UNUSABLE: poisoned, or err set). On Linux a process that finds it
    taken does not queue on it: it waits with the others on sync_seq, which
    the leader wakes once after its fsync, then returns if covered or tries
    again (at least every _SYNC_WAIT_SLICE_US: a leader that died wakes
    nobody, and the mutex then says it died)."""
    cdef int dead
    cdef uint32_t seq
    if not NK_SHM_SYNC_FUTEX:
        err[0] = nk_shm_lock(&self.shm.smutex, -1.0, &dead)
        return _SYNC_UNUSABLE if err[0] else _SYNC_LEAD
    while True:
        seq = nk_shm_sync_seq(self.shm)
        err[0] = nk_shm_trylock(&self.shm.smutex, &dead)
        if err[0] != EBUSY:
            return _SYNC_UNUSABLE if err[0] else _SYNC_LEAD
        if nk_load_acquire_u64(&self.shm.synced_total) >= target:
            return _SYNC_COVERED
        if self.shm.poisoned:
            err[0] = 0
            return _SYNC_UNUSABLE
        nk_shm_sync_wait(self.shm, seq, _SYNC_WAIT_SLICE_US * 1e-6)
        if nk_load_acquire_u64(&self.shm.synced_total) >= target:
            return _SYNC_COVERED


cdef int _fsync_newest(_WalCore self, bint ranged, uint64_t *seg, int *err) noexcept nogil:
    """With smutex held: _fsync_published of the newest published segment,
    this process's active one (through its mapping when ranged) or another
    opened by name. One that is gone was sealed (which fsynced it) and
    deleted by a compaction, another process's or this one's while this
    thread waited: the log goes on in a newer one."""
    cdef nk_pub p
    cdef uint64_t gone
    cdef int fd, status
    cdef char name[32]
    cdef uint8_t *m = self.map if ranged else NULL
    PyThread_acquire_lock(self.io_lock, WAIT_LOCK)   # (the fd stays this segment's)
    if self.closed or self.fork_gen != _fork_generation:
        # close() ran while this thread waited (its descriptors, dir_fd
        # among them, are closed): the caller raises ClosedError.
        PyThread_release_lock(self.io_lock)
        return _SYNC_UNUSABLE
    nk_shm_read(self.shm, &p)
    while True:
        if p.seg_id == self.seg_id and self.seg_fd >= 0:
            status = _fsync_published(self, self.seg_fd, m, &p, seg, err)
            break
        nk_segment_name(name, sizeof(name), p.seg_id)
        fd = openat(self.dir_fd, name, O_RDONLY | O_CLOEXEC)
        if fd >= 0:
            status = _fsync_published(self, fd, NULL, &p, seg, err)
            c_close(fd)
            break
        err[0] = errno
        seg[0] = gone = p.seg_id
        status = _SYNC_FAILED
        if err[0] != ENOENT:
            break
        nk_shm_read(self.shm, &p)
        if p.seg_id <= gone:
            break
    PyThread_release_lock(self.io_lock)
    return status


cdef int _fsync_published(_WalCore self, int fd, uint8_t *m, nk_pub *p, uint64_t *seg, int *err) noexcept nogil:
    """With smutex held: fdatasync of fd, the published active segment p
    (of its first p.seg_size bytes where m, this process's mapping of it, is
    given: nk_sync_range). Records how far the log is durable, or the
    failure (SHM poisoned)."""
    cdef double t0 = _now_monotonic(), dt
    nk_shm_fsync_begins(self.shm)
    err[0] = nk_sync_range(fd, m, p.seg_size)
    if err[0]:
        seg[0] = p.seg_id
        self.shm.poisoned = err[0]
        return _SYNC_FAILED
    nk_shm_synced(self.shm, p.total)
    dt = _now_monotonic() - t0
    _fsync_took(self, dt)
    self._count_fsync(dt)
    return _SYNC_DONE


cdef void _note_synced(_WalCore self) noexcept nogil:
    """This Wal's view of what is durable (synced_total)."""
    cdef uint64_t synced = nk_load_acquire_u64(&self.shm.synced_total)
    if synced > self.synced_total:
        self.synced_total = synced


cdef int _compaction_lock(_WalCore self, double timeout) except -1:
    """Admits one compaction at a time across processes. timeout: seconds
    (< 0: no limit); LockError naming the compacting process after it.
    A compaction whose process died left temporary files: removed."""
    cdef int dead = 0, err
    with nogil:
        err = nk_shm_lock(&self.shm.cmutex, timeout, &dead)
    if err:
        _lock_error(self, err, "another process is compacting the store", self.shm.compact_pid)
    self.shm.compact_pid = self.pid
    if dead:
        for name in os.listdir(self.dir):
            if name.endswith(".compact-tmp"):
                try:
                    os.unlink(os.path.join(self.dir, name))
                except (FileNotFoundError, IsADirectoryError):
                    pass
    return 0


cdef void _compaction_unlock(_WalCore self) noexcept:
    self.shm.compact_pid = 0
    pthread_mutex_unlock(&self.shm.cmutex)


cdef int _writer_lock_caught_up(_WalCore self) except -1:
    """_writer_lock, then the map brought up to date (exclusive work:
    compaction's seal, a backup's point)."""
    _writer_lock(self)
    try:
        if nk_shm_ver(self.shm) != self.follow_ver and self._follow_hook is not None:
            self._follow_hook()
    except BaseException:
        _writer_unlock(self)
        raise
    return 0


cdef int _leave(_WalCore self) except -1:
    """close() of a process others still have the store open in: it is no
    longer counted in SHM's nprocs, and the epoch moves, so that a process
    left alone, which compares no bucket, catches up with what this one
    wrote. (One that dies stays counted: the others keep comparing.)"""
    if self.joined and self.fork_gen == _fork_generation:
        nk_shm_leave(self.shm)
        self.joined = False
    return 0


cdef int _publish_gen(_WalCore self, uint64_t seal) except -1:
    """A compaction installed its snapshot: segments are about to be
    deleted. Processes whose map points into them (values="disk") or that
    have not read past the seal reload (follow.pyx)."""
    _writer_lock_caught_up(self)
    try:
        self.pub.gen += 1
        self.pub.gen_seal = seal
        _publish_position(self)     # (caught up: it publishes self.pub)
        nk_shm_new_epoch(self.shm)  # (every process's next read of one key catches up)
    finally:
        _writer_unlock(self)
    return 0


cdef bint _last_user(_WalCore self) except -1:
    """close(): whether no other process has the store open (then this one
    seals the active segment, as a lone Wal does). Takes SHM's flock, so
    no process can join meanwhile; released by _release."""
    cdef int err
    with nogil:
        err = nk_flock_wait(self.shm_fd, LOCK_EX, -1.0)
    if err:
        return False
    return flock(self.lock_fd, LOCK_EX | LOCK_NB) == 0


def _shared_state(_WalCore self):
    """What SHM says, for stats() and tests (None without it)."""
    if self.shm == NULL:
        return None
    return {"session": self.shm.session, "ver": nk_shm_ver(self.shm),
            "synced_total": self.shm.synced_total, "writer_deaths": self.shm.owner_deaths,
            "init_pid": self.shm.init_pid, "compact_pid": self.shm.compact_pid}


# ---------------------------------------------------------------- test hooks

def _test_hold(_WalCore wal, str which):
    """Tests: takes one of SHM's mutexes ("writers", "sync", "compaction") and
    keeps it, as a process would that is killed while holding it."""
    cdef int dead = 0
    cdef pthread_mutex_t *m = (&wal.shm.wmutex if which == "writers" else
                               &wal.shm.smutex if which == "sync" else &wal.shm.cmutex)
    with nogil:
        nk_shm_lock(m, -1.0, &dead)
    if which == "compaction":
        wal.shm.compact_pid = wal.pid
    return dead


def _test_release(_WalCore wal, str which):
    pthread_mutex_unlock(&wal.shm.wmutex if which == "writers" else
                         &wal.shm.smutex if which == "sync" else &wal.shm.cmutex)
    if which == "sync":
        nk_shm_sync_wake(wal.shm)       # (as a leader does after its fsync)


def _test_torn_write(_WalCore wal, bytes data):
    """Tests: a writer that dies mid-append. Takes the writers' mutex and
    writes ``data`` past the published end of the log without publishing
    it; the caller is then killed."""
    cdef uint8_t *p = _reserve_shared(wal, PyBytes_GET_SIZE(data))
    memcpy(p, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
