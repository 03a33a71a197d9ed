# The write side of the Wal: one mapped, preallocated active segment.
#
# Appends copy the encoded record into a MAP_SHARED mapping of the active
# segment: once memcpy returns the bytes are in the kernel's page cache and
# survive the death of the process, with no system call per record.  Disk
# blocks are reserved with fallocate before any byte is stored through the
# mapping, so a full disk is an ENOSPC from fallocate, never a SIGBUS.
#
# Threads: every append runs with the GIL held from reserve to commit, so
# appends are atomic with respect to each other.  Work that releases the GIL
# (fsync, rotation, growth) holds io_lock; rotation and growth also set `busy`
# so that appends in other threads take the slow path and wait for io_lock.

cdef enum:
    POLICY_OS = 0
    POLICY_ALWAYS = 1
    POLICY_BATCH = 2

DEF _GROW_STEP = 1 << 20
DEF _PREFAULT_STEP = 1 << 20        # synchronous prefault when the writer outruns the thread
DEF _PREFAULT_AHEAD = 16 << 20      # the background thread keeps this much ready
DEF _LARGE_FOLIOS_PAST = 24 << 20   # see _use_small_folios
DEF _SMALL_SYNC = 256 << 10         # a sync covering less switches to page-sized folios

cdef bint _prefault_supported = True

# (st_dev, st_ino) of each directory open in this process -> weak reference to its Wal
cdef dict _open_dirs = {}


def _dir_owner(key):
    """The live Wal holding directory `key` in this process, or None."""
    ref = _open_dirs.get(key)
    return ref() if ref is not None else None


cdef inline uint64_t _round_up(uint64_t n, uint64_t step) noexcept nogil:
    return (n + step - 1) // step * step


def segment_name(uint64_t seg_id):
    """File name of a segment: the id as a 6-digit (or longer) decimal plus .wal."""
    return f"{seg_id:06d}.wal"


def segment_id_of(name):
    """The segment id named by a directory entry, or None when the name is not
    a segment's. nori-wal takes any name whose extension is ``wal`` and whose
    stem Rust's ``u64::from_str`` parses (ASCII digits, optional leading ``+``,
    any leading zeros, at most 2**64-1), then opens ``format!("{:06}.wal", id)``;
    of those names only that canonical one is a segment here (docs/FORMAT.md),
    so each id has exactly one file and none is read twice."""
    cdef Py_ssize_t n = len(name)
    if n < 10 or n > 24 or not name.endswith(".wal"):     # 6 to 20 digits + ".wal"
        return None
    stem = name[:n - 4]
    if not (stem.isascii() and stem.isdigit()):
        return None
    seg = int(stem)
    if seg > UINT64_MAX or segment_name(seg) != name:
        return None
    return seg


def list_segments(path):
    """Sorted ids of the segments in a directory: the entries segment_id_of()
    accepts; every other name is ignored. Every reader of a directory's
    segments (recovery, hence the Wal and WalIterator, compaction, the CLI)
    gets them from here. An entry with a segment's name that is not a regular
    file (after symlinks) raises NoriIOError: it holds that id's place in the
    log, nori-wal fails on it too, and opening a FIFO would block."""
    ids = []
    path = os.fsdecode(path)
    with os.scandir(path) as entries:
        for entry in entries:
            seg = segment_id_of(entry.name)
            if seg is None:
                continue
            try:
                regular = entry.is_file()
            except OSError as exc:
                raise io_error(exc.errno or 5, entry.path, "stat") from exc
            if not regular:
                kind = "a directory" if entry.is_dir() else "not a regular file"
                raise NoriIOError(21 if entry.is_dir() else 22,
                                  f"{entry.name} has a segment's name but is {kind}; "
                                  "move it out of the log directory", entry.path)
            ids.append(seg)
    ids.sort()
    return ids


cdef enum:
    _SYNC_COVERED, _SYNC_DONE, _SYNC_UNUSABLE, _SYNC_FAILED

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass
    int pthread_mutex_init(pthread_mutex_t *m, const void *attr)
    int pthread_mutex_destroy(pthread_mutex_t *m)
    int pthread_mutex_lock(pthread_mutex_t *m)
    int pthread_mutex_unlock(pthread_mutex_t *m)
    int pthread_cond_init(pthread_cond_t *c, const void *attr)
    int pthread_cond_destroy(pthread_cond_t *c)
    int pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m)
    int pthread_cond_broadcast(pthread_cond_t *c)


cdef class _WalCore:
    cdef object __weakref__
    cdef readonly object dir
    cdef int dir_fd
    cdef int lock_fd
    cdef object dir_key
    cdef readonly uint64_t max_segment_size
    cdef readonly uint64_t max_value_size   # largest value append takes and reads decompress
    cdef readonly int policy
    cdef readonly double window
    cdef readonly bint preallocate
    # active segment
    cdef readonly uint64_t seg_id
    cdef int seg_fd
    cdef uint8_t *map
    cdef size_t map_len
    cdef uint64_t alloc
    cdef uint64_t populated          # mapping faulted in for writing up to here
    cdef readonly uint64_t seg_size
    cdef uint64_t next_seg_id
    cdef dict seg_sizes              # finalized segments: id -> bytes
    # accounting
    cdef readonly uint64_t written_total
    cdef readonly uint64_t synced_total
    cdef readonly uint64_t fsync_count
    cdef readonly double fsync_seconds
    cdef readonly double fsync_max
    # state
    cdef int busy
    cdef readonly bint closed
    cdef object failed
    cdef bint broken                 # failed is set (readable without the GIL)
    cdef unsigned long fork_gen
    cdef PyThread_type_lock io_lock
    cdef PyThread_type_lock map_lock   # held to change/unmap the mapping, and while prefaulting
    # Group commit (sync): one leader fsyncs at a time; the others wait on
    # sync_cond for synced_total to cover them or for the leader's turn to
    # end. sync_mutex is only ever held for a few instructions, never while
    # waiting for the GIL, so it may be taken with the GIL held.
    cdef pthread_mutex_t sync_mutex
    cdef pthread_cond_t sync_cond
    cdef bint syncing
    cdef bint sync_init
    cdef readonly bint prefault_pending
    # Page-sized page-cache folios for the mapping (nk_advise_small_folios):
    # from the start under ALWAYS, from the first sync() that covers less
    # than _SMALL_SYNC bytes otherwise (a bulk writer keeps large folios).
    cdef readonly bint small_folios
    cdef readonly bint dirty
    cdef readonly double dirty_since
    cdef object wake
    cdef bint wake_pending

    def __cinit__(self):
        self.dir_fd = -1
        self.lock_fd = -1
        self.seg_fd = -1
        self.map = NULL
        self.closed = True
        self.fork_gen = _fork_generation
        self.seg_sizes = {}
        self.max_value_size = _DEFAULT_MAX_VALUE_SIZE
        self.io_lock = PyThread_allocate_lock()
        self.map_lock = PyThread_allocate_lock()
        if self.io_lock == NULL or self.map_lock == NULL:
            raise MemoryError()
        if pthread_mutex_init(&self.sync_mutex, NULL) != 0:
            raise MemoryError()
        if pthread_cond_init(&self.sync_cond, NULL) != 0:
            pthread_mutex_destroy(&self.sync_mutex)
            raise MemoryError()
        self.sync_init = True

    def __dealloc__(self):
        # Dropped without close(): release resources, leave the files as a
        # crash would (the zero tail is a clean end for recovery).
        self._release(False)
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

    # ------------------------------------------------------------ locking

    cdef inline void _lock_io(self):
        if not PyThread_acquire_lock(self.io_lock, NOWAIT_LOCK):
            with nogil:
                PyThread_acquire_lock(self.io_lock, WAIT_LOCK)

    cdef inline void _unlock_io(self) noexcept:
        PyThread_release_lock(self.io_lock)

    cdef int _sync_nogil(self, uint64_t target, double *t0, double *dt, int *err) noexcept nogil:
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
        err[0] = nk_sync_data(self.seg_fd, self.map, self.seg_size)
        dt[0] = _now_monotonic() - t0[0]
        if err[0]:
            return _SYNC_FAILED
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

    cdef void _unmap(self) noexcept:
        self._lock_map()
        self._unmap_locked()
        self._unlock_map()

    cdef void _unmap_locked(self) noexcept:
        if self.map != NULL:
            munmap(self.map, self.map_len)
            self.map = NULL
            self.map_len = 0
            self.populated = 0

    cdef int _check_owner(self) except -1:
        """Raises unless this Wal is open and owned by this process (not
        inherited from the parent through fork())."""
        if self.closed:
            raise ClosedError("the Wal is closed")
        if self.fork_gen != _fork_generation:
            raise NoriIOError(1, "this Wal was opened by the parent process; a forked child can "
                              "only close it, and must open the directory itself once the parent "
                              "has closed it", self.dir)
        return 0

    cdef int _check_usable(self) except -1:
        self._check_owner()
        if self.failed is not None:
            raise WalFailedError(self.failed.errno, "the Wal failed earlier and refuses writes "
                                 f"until reopened ({self.failed.strerror})", self.failed.filename)
        return 0

    cdef int _poison(self, int err, object path, str what) except -1:
        exc = io_error(err, path, what, WalFailedError)
        self.failed = exc
        self.broken = True
        raise exc

    # ------------------------------------------------------------ open

    def _open(self, path, uint64_t max_segment_size, int policy, double window, bint preallocate,
              uint64_t max_value_size=_DEFAULT_MAX_VALUE_SIZE):
        """Takes the directory lock of an existing directory (norikv.wal
        creates it durably first). Recovery is driven by norikv.wal."""
        cdef struct_stat st
        cdef bytes bdir
        self.dir = os.fspath(path)
        self.max_segment_size = max_segment_size
        self.max_value_size = max_value_size
        self.policy = policy
        self.small_folios = policy == POLICY_ALWAYS
        self.window = window
        self.preallocate = preallocate
        bdir = os.fsencode(self.dir)
        self.dir_fd = c_open(bdir, O_RDONLY | O_CLOEXEC)
        if self.dir_fd < 0:
            raise io_error(errno, self.dir, "open directory")
        fstat(self.dir_fd, &st)
        key = (st.st_dev, st.st_ino)
        if _dir_owner(key) is not None:
            self._release(False)
            raise LockError(11, "the directory is already open in this process", self.dir)
        lock_path = os.path.join(self.dir, "LOCK")
        self.lock_fd = c_open(os.fsencode(lock_path), O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        if self.lock_fd < 0:
            err = errno
            self._release(False)
            raise io_error(err, lock_path, "open lock file")
        err = nk_lock_file(self.lock_fd)
        if err:
            self._release(False)
            if err in (11, 35):   # EWOULDBLOCK on Linux / macOS
                raise LockError(err, "the directory is locked by another process", self.dir)
            raise io_error(err, lock_path, "flock")
        _open_dirs[key] = weakref.ref(self)
        self.dir_key = key
        self.fork_gen = _fork_generation
        self.closed = False
        self.busy = 0
        return None

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
                self._create_segment(0)
            finally:
                self._unlock_io()
        else:
            self._open_active(last_id, last_size)

    cdef int _map_active(self, size_t want) except -1:
        cdef void *m
        cdef size_t page = nk_page_size()
        want = <size_t>_round_up(want if want > self.max_segment_size else self.max_segment_size, page)
        m = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_SHARED, self.seg_fd, 0)
        if m == MAP_FAILED:
            raise io_error(errno, self._segment_path(self.seg_id), "mmap")
        if self.small_folios:
            nk_advise_small_folios(m, want)
        self._lock_map()
        self.map = <uint8_t *>m
        self.map_len = want
        self.populated = 0
        self._unlock_map()
        return 0

    cdef int _open_active(self, uint64_t seg_id, uint64_t size) except -1:
        cdef struct_stat st
        path = self._segment_path(seg_id)
        fd = c_open(os.fsencode(path), O_RDWR | O_CLOEXEC)
        if fd < 0:
            raise io_error(errno, path, "open")
        fstat(fd, &st)
        self.seg_fd = fd
        self.seg_id = seg_id
        self.next_seg_id = seg_id + 1
        self.seg_size = size
        self.alloc = <uint64_t>st.st_size
        self._map_active(self.alloc)
        return 0

    # ------------------------------------------------------------ segments

    cdef int _allocate(self, int fd, uint64_t start, uint64_t want, uint64_t need, object path) except -1:
        """Reserves [start, want) of fd, falling back to [start, need) when the
        disk cannot hold the preferred size. Sets self.alloc. GIL released."""
        cdef int err
        cdef long s = start
        cdef long w = want - start
        cdef long n = need - start
        with nogil:
            err = nk_allocate(fd, s, w)
            if err == 28 and n < w:      # ENOSPC: take only what this append needs
                err = nk_allocate(fd, s, n)
                if err == 0:
                    w = n
        if err:
            raise io_error(err, path, "allocate")
        self.alloc = start + w
        return 0

    cdef int _create_segment(self, uint64_t need) except -1:
        """Creates segment next_seg_id sized for at least `need` bytes and makes it
        active. The caller holds io_lock; the previous segment is already closed."""
        cdef uint64_t seg_id = self.next_seg_id
        cdef uint64_t page = nk_page_size()
        cdef uint64_t want, needr
        cdef int err
        path = self._segment_path(seg_id)
        fd = c_open(os.fsencode(path), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0:
            raise io_error(errno, path, "create segment")
        needr = _round_up(need if need > 0 else 1, page)
        want = self.max_segment_size if self.preallocate else _GROW_STEP
        if want < needr:
            want = needr
        try:
            self._allocate(fd, 0, want, needr, path)
            self.seg_fd = fd
            self.seg_id = seg_id
            self.seg_size = 0
            self.busy = 1
            try:
                self._map_active(self.alloc)
            finally:
                self.busy = 0
        except BaseException:
            c_close(fd)
            self.seg_fd = -1
            unlink(os.fsencode(path))
            raise
        self.next_seg_id = seg_id + 1
        with nogil:
            err = nk_sync_full(self.dir_fd)
        if err:
            self._poison(err, self.dir, "fsync directory")
        return 0

    cdef int _finalize_active(self) except -1:
        """fsyncs the active segment, truncates it to its logical size, closes it.
        The caller holds io_lock."""
        cdef int err = 0
        cdef int fd = self.seg_fd
        cdef uint64_t size = self.seg_size
        cdef double t0
        if fd < 0:
            return 0
        with nogil:
            t0 = _now_monotonic()
            err = nk_sync_data(fd, self.map, size)
            if err == 0 and ftruncate(fd, <long>size) != 0:
                err = errno
            if err == 0:
                err = nk_sync_data(fd, NULL, 0)
        if err:
            self._poison(err, self._segment_path(self.seg_id), "finalize segment")
        self._count_fsync(_now_monotonic() - t0)
        self._unmap()
        c_close(fd)
        self.seg_fd = -1
        self.seg_sizes[self.seg_id] = size
        self.synced_total = self.written_total
        return 0

    cdef void _count_fsync(self, double dt) noexcept:
        self.fsync_count += 1
        self.fsync_seconds += dt
        if dt > self.fsync_max:
            self.fsync_max = dt

    cdef int _check_ids_left(self, uint64_t n) except -1:
        """Raises unless n more segment ids follow the active one (ids are u64:
        a wrapped id would be replayed first)."""
        if self.seg_id > UINT64_MAX - n:
            raise NoriIOError(27, f"no segment id left after {self.seg_id} (ids are 64-bit)",
                              self._segment_path(self.seg_id))
        return 0

    cdef int _rotate(self, uint64_t need) except -1:
        """Seals the active segment and starts the next. Holds io_lock."""
        self._check_ids_left(1)
        self.busy = 1
        try:
            self._finalize_active()
            self._create_segment(need)
        finally:
            self.busy = 0
        return 0

    cdef int _populate(self, uint8_t *m, uint64_t start, uint64_t stop) noexcept nogil:
        """Faults in [start, stop) of mapping m, for writing or, in page-sized
        mode, for reading (nk_prefault). Returns 0 or the errno; an errno that
        says the kernel cannot do it turns prefaulting off for the process."""
        global _prefault_supported
        cdef int err = nk_prefault(m + start, <size_t>(stop - start), not self.small_folios)
        if err == 22 or err == 38 or err == 95:
            _prefault_supported = False
        return err

    cdef int _prefault(self, uint64_t end) except -1:
        """Faults in the mapping up to at least `end` (a step ahead), or marks
        everything allocated as populated where the kernel cannot do it."""
        cdef uint64_t page = nk_page_size()
        cdef uint64_t start = self.populated if self.populated > self.seg_size else self.seg_size
        start -= start % page
        cdef uint64_t stop = _round_up(end, page) + _PREFAULT_STEP
        cdef int err = 0
        if stop > self.alloc:
            stop = self.alloc
        if _prefault_supported and stop > start:
            # Mapping changes need io_lock, which the caller holds.
            with nogil:
                err = self._populate(self.map, start, stop)
            if err:
                # Not supported (old kernel, other OS) or no memory: fall back
                # to ordinary page faults.
                stop = self.alloc
        else:
            stop = self.alloc
        if stop > self.populated:
            self.populated = stop
        return 0

    def _prefault_ahead(self):
        """Background work: faults in the mapping up to _PREFAULT_AHEAD past the
        write offset, a step at a time, without io_lock (so fsyncs and appends
        go on) but holding map_lock (so the mapping cannot go away). Runs
        without the GIL from start to end: a writer holds the GIL for 5 ms
        at a time, and a loop that took it back between steps fell behind
        (the writer then faulted most pages itself)."""
        with nogil:
            self._prefault_loop()

    cdef void _prefault_loop(self) noexcept nogil:
        cdef uint64_t page = nk_page_size()
        cdef uint64_t start, stop, target
        cdef uint8_t *m
        while True:
            self._lock_map_nogil()
            m = self.map
            if m == NULL or self.closed or not _prefault_supported:
                break
            # Page-aligned, so that `populated` never lands mid-page (the
            # next step would round down and fault the same bytes forever).
            # seg_size is read without the GIL: a stale value only moves the
            # target; `populated` is a hint for _reserve, never past alloc.
            target = _round_up(self.seg_size + _PREFAULT_AHEAD, page)
            if target > self.alloc:
                target = self.alloc
            start = self.populated if self.populated > self.seg_size else self.seg_size
            start -= start % page
            if start >= target:
                break
            stop = start + _PREFAULT_STEP
            if stop > target:
                stop = target
            if self._populate(m, start, stop):
                break
            if stop <= self.populated:
                break
            self.populated = stop
            self._unlock_map()
        self.prefault_pending = False
        self._unlock_map()

    cdef int _grow(self, uint64_t end) except -1:
        cdef uint64_t page = nk_page_size()
        cdef uint64_t want = _round_up(end, _GROW_STEP)
        cdef uint64_t need = _round_up(end, page)
        self.busy = 1
        try:
            self._allocate(self.seg_fd, self.alloc, want, need, self._segment_path(self.seg_id))
            if self.alloc > self.map_len:
                self._unmap()
                self._map_active(self.alloc)
        finally:
            self.busy = 0
        return 0

    # ------------------------------------------------------------ append

    cdef inline uint8_t *_reserve(self, uint64_t n) except NULL:
        """Room for n bytes at the end of the log. The GIL must stay held until
        _commit(n): nothing that can run Python code may come in between."""
        if (self.busy == 0 and self.fork_gen == _fork_generation and self.failed is None
                and not self.closed and self.seg_size + n <= self.populated
                and (self.seg_size + n <= self.max_segment_size or self.seg_size == 0)):
            return self.map + self.seg_size
        return self._reserve_slow(n)

    cdef uint8_t *_reserve_slow(self, uint64_t n) except NULL:
        self._check_usable()
        self._lock_io()
        try:
            self._check_usable()
            if self.seg_fd < 0:
                self._create_segment(n)
            elif self.seg_size > 0 and self.seg_size + n > self.max_segment_size:
                self._rotate(n)
            if self.seg_size + n > self.alloc:
                self._grow(self.seg_size + n)
            if self.seg_size + n > self.populated:
                self._prefault(self.seg_size + n)
        finally:
            self._unlock_io()
        return self.map + self.seg_size

    cdef inline int _commit(self, uint64_t n) except -1:
        """Publishes n reserved bytes. Runs no Python code, so a caller can keep
        its in-memory update atomic with the append."""
        self.seg_size += n
        nk_store_release_u64(&self.written_total, self.written_total + n)
        if self.policy == POLICY_BATCH and not self.dirty:
            self.dirty = True
            self.dirty_since = _now_monotonic()
            self.wake_pending = True
        if self.seg_size + _PREFAULT_AHEAD // 2 > self.populated and not self.prefault_pending \
                and _prefault_supported:
            self.prefault_pending = True
            self.wake_pending = True
        return 0

    cdef inline int _after_append(self) except -1:
        """Work that may run Python code or release the GIL: waking the
        flusher (batch policy) and the fsync of the ALWAYS policy. (Split so
        that the check, all an OS-policy append pays, is inlined.)"""
        if self.wake_pending or self.policy == POLICY_ALWAYS:
            return self._after_append_work()
        return 0

    cdef int _after_append_work(self) except -1:
        if self.wake_pending:
            self.wake_pending = False
            if self.wake is not None:
                self.wake()
        if self.policy == POLICY_ALWAYS:
            self.sync()
        return 0

    def _set_waker(self, wake):
        self.wake = wake

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
        cdef list stored = []
        cdef list flags = []
        cdef list positions = []
        cdef Record r
        cdef uint64_t total = 0, off, n
        cdef uint32_t f
        cdef Py_ssize_t i, count = len(recs)
        cdef bytes sv
        cdef uint8_t *p
        if count == 0:
            return positions
        for i in range(count):
            r = recs[i]
            if r is None:
                raise TypeError("records must be Record objects")
            _check_value_size(r.value, self.max_value_size)
        for i in range(count):
            r = recs[i]
            sv = r._stored_value()
            f = nk_batch_flags(r._wire_flags(), i, count if atomic else 1)
            stored.append(sv)
            flags.append(f)
            total += nk_encoded_len(PyBytes_GET_SIZE(r.key), PyBytes_GET_SIZE(sv), f,
                                    r._ttl_ms, r._term, r._index)
        p = self._reserve(total)
        off = 0
        for i in range(count):
            r = recs[i]
            sv = stored[i]
            n = nk_encode(p + off, <const uint8_t *>PyBytes_AS_STRING(r.key), PyBytes_GET_SIZE(r.key),
                          <const uint8_t *>PyBytes_AS_STRING(sv), PyBytes_GET_SIZE(sv), <uint32_t>flags[i],
                          r._ttl_ms, r._term, r._index)
            positions.append(_pos(self.seg_id, self.seg_size + off))
            off += n
        self._commit(total)
        self._after_append()
        return positions

    cdef int _use_small_folios(self) except -1:
        """The first small sync(): page-sized folios from now on
        (nk_advise_small_folios). Linux grows the folios of a mapping written
        sequentially, past ~24 MiB to sizes whose whole-folio writeback makes
        every small fsync write up to 2 MiB; if the active segment is faulted
        in that far, it is sealed and the log goes on in a new segment, which
        starts with page-sized folios. Otherwise only the part of the mapping
        not yet faulted in is advised."""
        cdef size_t page = nk_page_size()
        cdef size_t start
        self.small_folios = True
        if self.seg_fd < 0:
            return 0
        if self.populated > _LARGE_FOLIOS_PAST:
            self._lock_io()
            try:
                self._check_usable()
                if self.seg_fd >= 0 and self.seg_size > 0 and self.seg_id < UINT64_MAX:
                    self._rotate(0)
            finally:
                self._unlock_io()
            return 0
        self._lock_map()
        if self.map != NULL:
            start = <size_t>_round_up(self.populated, page)
            if start < self.map_len:
                nk_advise_small_folios(self.map + start, self.map_len - start)
        self._unlock_map()
        return 0

    def flush(self):
        """Nothing to do: every append already reached the OS page cache.
        Kept for API parity with nori-wal."""
        self._check_owner()

    def sync(self):
        """Makes everything appended before this call durable (fdatasync; on
        macOS F_FULLFSYNC). Concurrent callers share one fsync (group commit)."""
        cdef uint64_t target = self.written_total
        cdef int err = 0
        cdef int status
        cdef double t0 = 0, dt = 0
        self._check_usable()
        if self.synced_total >= target:
            return
        if not self.small_folios and target - self.synced_total < _SMALL_SYNC:
            self._use_small_folios()
        with nogil:
            status = self._sync_nogil(target, &t0, &dt, &err)
        if status == _SYNC_COVERED:
            return
        if status == _SYNC_UNUSABLE:
            self._check_usable()
            raise AssertionError("unreachable: _sync_nogil found the Wal unusable")
        if status == _SYNC_FAILED:
            try:
                self._poison(err, self._segment_path(self.seg_id), "fdatasync")
            finally:
                self._end_sync_turn(0)
        self._count_fsync(dt)
        if self.synced_total >= self.written_total:
            self.dirty = False
        else:
            self.dirty_since = t0

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

    def delete_segments_before(self, Position pos not None):
        """Deletes every finalized segment whose id is below ``pos.segment_id``
        (never the active one), lowest first, each deletion made durable before
        the next so that what remains is always a suffix of the log. Returns the
        number of segments deleted."""
        self._check_usable()
        doomed = [i for i in sorted(self.seg_sizes) if i < pos.segment_id]
        return self._delete_segments(doomed)

    def _delete_segments(self, list ids):
        cdef int err
        cdef int n = 0
        self._check_usable()
        for seg in ids:
            path = self._segment_path(seg)
            if unlink(os.fsencode(path)) != 0 and errno != 2:
                raise io_error(errno, path, "unlink")
            self.seg_sizes.pop(seg, None)
            with nogil:
                err = nk_sync_full(self.dir_fd)
            if err:
                self._poison(err, self.dir, "fsync directory")
            n += 1
        return n

    cdef int _begin_exclusive(self) except -1:
        """Takes io_lock and stops appends (they wait in the slow path) until
        _end_exclusive. Between the two, with the GIL held, no append is half done."""
        self._check_usable()
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

    cdef tuple _seal_and_skip_locked(self, uint64_t gap):
        """Compaction support, inside _begin_exclusive: finalizes the active
        segment and opens the next one `gap` ids further on, leaving ids
        [old+1, old+gap] free for a snapshot. Returns (first free id, new active id)."""
        cdef uint64_t first
        self._check_ids_left(gap + 1)
        first = self.seg_id + 1
        self._finalize_active()
        self.next_seg_id = first + gap
        self._create_segment(0)
        return first, self.seg_id

    def _install_segment(self, tmp_path, uint64_t seg_id, uint64_t size):
        """Compaction support: renames a fully written, fsynced temporary file
        into place as segment seg_id and makes the rename durable."""
        cdef int err
        self._check_usable()      # never after close(): another process may own the directory
        final = self._segment_path(seg_id)
        os.rename(tmp_path, final)
        with nogil:
            err = nk_sync_full(self.dir_fd)
        if err:
            self._poison(err, self.dir, "fsync directory")
        self.seg_sizes[seg_id] = size

    def _fsync_dir(self):
        cdef int err
        with nogil:
            err = nk_sync_full(self.dir_fd)
        if err:
            raise io_error(err, self.dir, "fsync directory")

    def _lock_state(self):
        """(written_total, synced_total, failed) for monitoring and tests."""
        return self.written_total, self.synced_total, self.failed

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
        self._lock_io()
        try:
            if self.closed:
                return
            try:
                if self.failed is None:
                    self.busy = 1
                    self._finalize_active()
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
                self._unmap_locked()    # map_lock may be held by a parent thread that is gone
            else:
                self._unmap()
        if self.seg_fd >= 0:
            c_close(self.seg_fd)
            self.seg_fd = -1
        if self.lock_fd >= 0:
            c_close(self.lock_fd)
            self.lock_fd = -1
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
        self.dir_key = None


def _detach_inherited_wals():
    """Run right after fork() in the child (norikv._wal's at-fork hook): every
    Wal the parent had open is detached (_WalCore._detach_inherited) and
    forgotten by the registry, then its ``_after_fork_in_child`` method (the
    Python side: background thread, locks of a KvStore) is called."""
    wals = [ref() for ref in _open_dirs.values()]
    _open_dirs.clear()
    for w in wals:
        if w is not None:
            (<_WalCore>w)._detach_inherited()
    for w in wals:
        if w is not None:
            hook = getattr(w, "_after_fork_in_child", None)
            if hook is not None:
                hook()
