# The active segment of a Wal: creating it preallocated, mapping it, keeping
# it allocated and faulted in ahead of the writer, sealing it. Functions of
# the _WalCore they belong to (log.pyx calls them with io_lock held, except
# _prefault_loop, which holds map_lock). Disk blocks are reserved with
# fallocate before any byte is stored through the mapping, so a full disk is
# an ENOSPC from fallocate, never a SIGBUS.

from posix.unistd cimport close as c_close, ftruncate
from posix.fcntl cimport open as c_open, O_RDWR, O_CREAT, O_EXCL, O_CLOEXEC
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED
from posix.stat cimport struct_stat, fstat

import os

from norikv.errors import NoriIOError, io_error


_prefault_supported = True


cdef void _unmap(_WalCore self) noexcept:
    self._lock_map()
    _unmap_locked(self)
    self._unlock_map()


cdef void _unmap_locked(_WalCore self) noexcept:
    if self.map != NULL:
        munmap(self.map, self.map_len)
        self.map = NULL
        self.map_len = 0
        self.populated = 0


cdef int _map_active(_WalCore self, size_t want) except -1:
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
    self.unmapped_below = 0
    self.written_back = 0
    self._unlock_map()
    return 0


cdef int _open_active(_WalCore self, uint64_t seg_id, uint64_t size) except -1:
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
    _map_active(self, self.alloc)
    return 0


cdef int _allocate(_WalCore self, int fd, uint64_t start, uint64_t end, object path) except -1:
    """Reserves fd from `start` for an append ending at `end`: under
    preallocate the whole segment (max_segment_size, or `end`'s page for a
    record larger than that) at once, else to `end` rounded up to
    _GROW_STEP (within that bound); when the disk cannot hold that much, to
    that step, then to `end`'s page. Sets self.alloc. GIL released. (A segment
    reopened after a clean close was truncated to its records; grown a
    _GROW_STEP at a time it cost every MiB an fallocate and held the
    prefault to that MiB: puts into a reopened store ran at 0.6-0.8x a new
    one's.)"""
    cdef int err, i
    cdef uint64_t sizes[3]
    cdef uint64_t need = _round_up(end, nk_page_size())
    cdef uint64_t whole = self.max_segment_size if self.max_segment_size > need else need
    sizes[1] = _round_up(end, _GROW_STEP)
    if sizes[1] > whole:
        sizes[1] = whole
    sizes[0] = whole if self.preallocate else sizes[1]
    sizes[2] = need
    with nogil:
        for i in range(3):
            if i and sizes[i] == sizes[i - 1]:
                continue
            err = nk_allocate(fd, <long>start, <long>(sizes[i] - start))
            if err != ENOSPC:
                break
    if err:
        raise io_error(err, path, "allocate")
    self.alloc = sizes[i]
    return 0


cdef int _create_segment(_WalCore self, uint64_t need) except -1:
    """Creates segment next_seg_id sized for at least `need` bytes and makes it
    active. The caller holds io_lock; the previous segment is already closed."""
    cdef uint64_t seg_id = self.next_seg_id
    path = self._segment_path(seg_id)
    fd = c_open(os.fsencode(path), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
    if fd < 0:
        raise io_error(errno, path, "create segment")
    try:
        _allocate(self, fd, 0, need if need > 0 else 1, path)
        self.seg_fd = fd
        self.seg_id = seg_id
        self.seg_size = 0
        self.busy = 1
        try:
            _map_active(self, self.alloc)
        finally:
            self.busy = 0
    except BaseException:
        c_close(fd)
        self.seg_fd = -1
        _unlink(path)
        raise
    self.next_seg_id = seg_id + 1
    self._sync_dir(True)
    return 0


cdef int _finalize_active(_WalCore self) except -1:
    """fsyncs the active segment, truncates it to its logical size, closes it.
    The caller holds io_lock. The first sync covers the log's bytes only
    (nk_sync_range): fdatasync would also write the zeros mapped for writing
    ahead of the writer (up to _PREFAULT_AHEAD), which the truncation then
    drops; the second makes the new size durable."""
    cdef int err = 0
    cdef int fd = self.seg_fd
    cdef uint64_t size = self.seg_size
    cdef double t0
    if fd < 0:
        return 0
    with nogil:
        t0 = _now_monotonic()
        err = nk_sync_range(fd, self.map, size)
        if err == 0 and ftruncate(fd, <long>size) != 0:
            err = errno
        if err == 0:
            err = nk_sync_data(fd, NULL, 0)
    if err:
        self._poison(err, self._segment_path(self.seg_id), "finalize segment")
    self._count_fsync(_now_monotonic() - t0)
    _unmap(self)
    c_close(fd)
    self.seg_fd = -1
    if self.shm != NULL:
        self.shm.alloc = size       # (the next writer appends here if no segment follows)
    self.seg_sizes[self.seg_id] = size
    self.synced_total = self.written_total
    return 0


cdef int _check_ids_left(_WalCore self, uint64_t n) except -1:
    """Raises unless n more segment ids follow the active one (ids are u64:
    a wrapped id would be replayed first)."""
    if self.seg_id > UINT64_MAX - n:
        raise NoriIOError(EFBIG, f"no segment id left after {self.seg_id} (ids are 64-bit)",
                          self._segment_path(self.seg_id))
    return 0


cdef int _rotate(_WalCore self, uint64_t need) except -1:
    """Seals the active segment and starts the next; with SHM the new one is
    published (the caller holds the writers' mutex). Holds io_lock."""
    _check_ids_left(self, 1)
    self.busy = 1
    try:
        _finalize_active(self)
        _create_segment(self, need)
    finally:
        self.busy = 0
    if self.shm != NULL:
        _publish_segment(self)
    return 0


cdef inline bint _prefault_for_write(_WalCore self) noexcept nogil:
    """Whether the prefault maps pages for writing (dirty at once: the writer
    takes no fault) or for reading. For writing under OS, and under the
    batch policy until the first sync() call: its background fsync syncs
    the log up to its end only, so the dirty zeros ahead are not written,
    but a sync() is a whole-file fdatasync, which writes them (docs/DESIGN.md,
    "Syncing a range"). Page-sized folios (a store that syncs small
    amounts) map for reading."""
    if self.small_folios:
        return False
    return self.policy == POLICY_OS or (self.policy == POLICY_BATCH and not self.synced_by_caller)


cdef int _populate(_WalCore self, uint8_t *m, uint64_t start, uint64_t stop) noexcept nogil:
    """Faults in [start, stop) of mapping m, for writing or, in page-sized
    mode, for reading (nk_prefault). Returns 0 or the errno; an errno that
    says the kernel cannot do it turns prefaulting off for the process."""
    global _prefault_supported
    cdef int err = nk_prefault(m + start, <size_t>(stop - start), _prefault_for_write(self))
    if err == EINVAL or err == ENOSYS or err == EOPNOTSUPP:
        _prefault_supported = False
    return err


cdef int _zero_ahead(_WalCore self, uint64_t start, uint64_t stop) noexcept:
    """A store that commits with sync() (page-sized-folio mode, _zero_chunk
    nonzero): makes the page cache of [start, stop) folios of _zero_chunk
    bytes by writing zeros over it from the first chunk boundary at or past
    the log's end and `populated`, maps it for writing and starts the
    zeros' writeback, which runs while the writer fills its commit
    (without it, one sync() in eight waited for a MiB of zeros).

    Each sync() wrote back its commit in 4 KiB folios, and converted the
    fallocated (unwritten) extents under it with a metadata write of its
    own; now the next sync() writes the zeros ahead (their extents
    converted in bulk, as PostgreSQL zero-fills a WAL file before use) and
    later ones write the commits in large folios. The price is bytes: each
    is written twice, and a commit's first and last folios whole
    (docs/DESIGN.md, "Zeros written ahead").

    Nobody stores where the zeros go: the caller holds io_lock and, with
    many processes, the writers' mutex (the log's end is the published
    one); the appends of this process's other threads stay below
    `populated`, which the prefault thread cannot move meanwhile
    (map_lock). Returns 0 or an errno (the caller then falls back to
    faults)."""
    cdef uint64_t chunk = _zero_chunk(self)
    cdef uint64_t zero_from
    cdef int err = 0
    self._lock_map()
    zero_from = self.populated if self.populated > self.seg_size else self.seg_size
    zero_from = _round_up(zero_from if zero_from > start else start, chunk)
    with nogil:
        if zero_from < stop:
            err = nk_write_zeros(self.seg_fd, zero_from, stop - zero_from, <size_t>chunk)
        if err == 0:
            err = nk_prefault(self.map + start, <size_t>(stop - start), 1)
        if err == 0 and zero_from < stop:
            nk_start_writeback(self.seg_fd, zero_from, stop - zero_from)
    self._unlock_map()
    return err


cdef int _prefault(_WalCore self, uint64_t end) except -1:
    """Faults in the mapping up to at least `end` (a step ahead), or marks
    everything allocated as populated where it does not prefault
    (_prefaults: ALWAYS, or a kernel that cannot)."""
    cdef uint64_t page = nk_page_size()
    cdef uint64_t start = self.populated if self.populated > self.seg_size else self.seg_size
    start -= start % page
    cdef uint64_t stop = _round_up(end, page) + _PREFAULT_STEP
    cdef int err = 0
    if stop > self.alloc:
        stop = self.alloc
    if _prefaults(self) and stop > start:
        # Mapping changes need io_lock, which the caller holds.
        if _zero_chunk(self):
            err = _zero_ahead(self, start, stop)
        else:
            with nogil:
                err = _populate(self, self.map, start, stop)
        if err:
            # Not supported (old kernel, other OS) or no memory: fall back
            # to ordinary page faults.
            stop = self.alloc
    else:
        stop = self.alloc
    if stop > self.populated:
        self.populated = stop
    return 0


cdef bint _fsync_due(_WalCore self, double now) noexcept nogil:
    """Whether the background thread's fsync is due at `now`: the window of
    the oldest unsynced append has run out (read without the GIL: a stale
    value only delays it by a step)."""
    return self.dirty and self.dirty_since + self.window <= now


cdef void _prefault_loop(_WalCore self) noexcept nogil:
    """Faults in the mapping up to prefault_lead past the end the log had
    when called, in steps of _PREFAULT_STEP, then doubles the lead (up to
    _PREFAULT_AHEAD) and returns; the writer asks again once it has written
    an eighth of the lead (_WalCore._commit). A store that writes little
    holds little: 16 MiB of zeros faulted in for one put cost a close() 4 ms
    to drop, and each open store 16 MiB of page cache. The target is fixed
    per call: recomputed at each step, it chased the writer a few pages per
    madvise (7,000 calls for 120 MB, small folios) and kept the thread from
    its fsyncs for as long as the writer ran. Returns early, still pending, when a batch fsync falls due
    (_flusher_loop runs it, then calls back). Once sync() was called, the
    lead stops at _PREFAULT_SYNCED_AHEAD: where the prefault maps for
    writing, every page it maps ahead is a dirty zero that the next sync()'s
    fdatasync writes, and a lead growing to 16 MiB wrote 16 MiB of zeros
    in a new store's first five commits of 123 KB (4-14 ms each)."""
    cdef uint64_t page = nk_page_size()
    cdef uint64_t start, stop, target = 0, targeted_seg = 0
    cdef uint64_t cap = _PREFAULT_SYNCED_AHEAD if self.synced_by_caller else _PREFAULT_AHEAD
    cdef uint8_t *m
    while True:
        self._lock_map_nogil()
        m = self.map
        if m == NULL or self.closed or not _prefault_supported or _zero_chunk(self):
            break               # (the writer's _zero_ahead does it, under its mutex)
        # Page-aligned, so that `populated` never lands mid-page (the
        # next step would round down and fault the same bytes forever).
        # seg_size is read without the GIL: a stale value only moves the
        # target; `populated` is a hint for _reserve, never past alloc.
        # The target is an offset in the segment: the next segment gets one
        # of its own (a remap of the same one keeps it).
        if target == 0 or self.seg_id != targeted_seg:
            target = _round_up(self.seg_size + self.prefault_lead, page)
            targeted_seg = self.seg_id
        if target > self.alloc:
            target = self.alloc
        start = self.populated if self.populated > self.seg_size else self.seg_size
        start -= start % page
        if start >= target:
            break
        stop = start + _PREFAULT_STEP
        if stop > target:
            stop = target
        if _populate(self, m, start, stop):
            break
        if stop <= self.populated:
            break
        self.populated = stop
        self._unlock_map()
        if _fsync_due(self, _now_monotonic()):
            return
    if self.prefault_lead < cap:
        self.prefault_lead *= 2
    elif self.prefault_lead > cap:
        self.prefault_lead = cap
    self.prefault_pending = False
    self._unlock_map()


cdef void _unmap_behind(_WalCore self) noexcept nogil:
    """Drops this process's page-table entries for the pages of the active
    segment that are wholly written (below the page holding seg_size), so
    that the fsync about to clean them has nothing to write-protect in this
    process (nk_unmap_pages). The writer never stores there again; the
    page cache keeps every byte. seg_size is read without the GIL: a stale
    value only unmaps less."""
    cdef uint64_t page = nk_page_size()
    cdef uint64_t stop
    self._lock_map_nogil()
    stop = self.seg_size - self.seg_size % page
    if self.map != NULL and stop > self.unmapped_below and stop <= self.map_len:
        nk_unmap_pages(self.map + self.unmapped_below, <size_t>(stop - self.unmapped_below))
        self.unmapped_below = stop
    self._unlock_map()


cdef void _writeback_behind(_WalCore self) noexcept nogil:
    """FsyncPolicy.OS with WalConfig.writeback_bytes: starts the writeback
    of the active segment's pages wholly written since the last call
    (sync_file_range WRITE, which does not wait for it), as RocksDB's
    wal_bytes_per_sync does. The writer asks every writeback_step bytes
    (_WalCore._commit). The bytes go to the disk once either way; without
    it the kernel leaves them dirty (for 30 s) and the fsync that seals a
    segment writes up to max_segment_size of them in the put that filled
    it (50-80 ms for 128 MiB on this VM). This process's page-table entries
    for them go first (_unmap_behind), so the writeback has nothing to
    write-protect in this process.

    It stops at the last multiple of _FOLIO_MAX (2 MiB, the largest folio
    Linux puts in a mapped file's page cache; folios are aligned to their
    size) at or below the end, because writeback writes a folio whole: the
    folio holding the end would be written with the zeros mapped ahead of
    the writer in it, and write-protected under the writer, which would
    then fault on every page of it that it writes. (So writeback_step is
    at least _FOLIO_MAX: each request makes progress.)

    The target is the end when called (recomputed, it chased a running
    writer and kept the thread from its prefaults), submitted a chunk at a
    time with the map lock released between chunks (the writer's slow path
    and the prefault take it). Under that lock a mapped segment's
    descriptor is open and seg_id and seg_size are its own (a rotation
    unmaps before it closes, and sets the next segment's id and size before
    it maps it), so a call that a rotation overtakes stops; seg_size is read
    without the GIL: a stale value only writes back less."""
    cdef uint64_t seg, start, stop, target
    _unmap_behind(self)
    self._lock_map_nogil()
    seg, target = self.seg_id, self.seg_size - self.seg_size % _FOLIO_MAX
    while (self.map != NULL and self.seg_fd >= 0 and self.seg_id == seg
           and self.written_back < target <= self.map_len):
        start = self.written_back
        stop = start + _WRITEBACK_CHUNK if target - start > _WRITEBACK_CHUNK else target
        nk_start_writeback(self.seg_fd, start, stop - start)
        self.written_back = stop
        self._unlock_map()
        self._lock_map_nogil()
    self._unlock_map()
    self.writeback_pending = False      # (only now: the writer's next step asks again)


cdef void _rearm(_WalCore self, uint64_t span=0) noexcept nogil:
    """After a batch-policy fsync, which cleaned and write-protected the
    pages it wrote: faults in for writing what the writer will likely fill
    before the next fsync (1.5x what it wrote since the last one, within
    [_REARM_MIN, _REARM_MAX]; after a sync() call, `span`, what the call
    covered, up to _REARM_MAX), from the page it is in. Run by the
    background thread, so the writer does not take those write faults
    itself (~3 us each on this VM, 0.1 us per 100 B put). Best effort;
    seg_size and written_total are read without the GIL."""
    cdef uint64_t page = nk_page_size()
    cdef uint64_t total = nk_load_acquire_u64(&self.written_total)
    cdef uint64_t ahead = (total - self.rearmed_at) * 3 // 2 if total > self.rearmed_at else 0
    cdef uint64_t start, stop
    if span:
        ahead = span
    elif ahead < _REARM_MIN:
        ahead = _REARM_MIN
    if ahead > _REARM_MAX:
        ahead = _REARM_MAX
    self._lock_map_nogil()
    start = self.seg_size - self.seg_size % page
    stop = _round_up(start + ahead, page)
    if stop > self.alloc:
        stop = self.alloc
    if stop > self.map_len:
        stop = self.map_len
    if _zero_chunk(self) and stop > self.populated:
        stop = self.populated   # (past it, _zero_ahead makes the folios)
    if self.map != NULL and _prefaults(self) and stop > start:
        nk_prefault(self.map + start, <size_t>(stop - start), 1)
    self._unlock_map()
    nk_store_release_u64(&self.rearmed_at, total)     # (once done: tests wait for it)


cdef int _grow(_WalCore self, uint64_t end) except -1:
    """Allocates the active segment for an append ending at `end` (_allocate)
    and maps it that far."""
    self.busy = 1
    try:
        _allocate(self, self.seg_fd, self.alloc, end, self._segment_path(self.seg_id))
        if self.alloc > self.map_len:
            _unmap(self)
            _map_active(self, self.alloc)
    finally:
        self.busy = 0
    return 0


cdef int _use_small_folios(_WalCore self) except -1:
    """The first small sync(): page-sized folios from now on
    (nk_advise_small_folios). Linux grows the folios of a mapping written
    sequentially, past ~24 MiB to sizes whose whole-folio writeback makes
    every small fsync write up to 2 MiB; if the active segment is faulted
    in that far, it is sealed and the log goes on in a new segment, which
    starts with page-sized folios (with many processes, under the writers'
    mutex and published, as a rotation of _make_room's). Otherwise the
    zeros faulted in ahead of the log are dropped (_drop_ahead) and the
    mapping from the log's end on is advised."""
    self.small_folios = True
    if self.seg_fd < 0:
        return 0
    if self.shm != NULL:
        _writer_lock(self)          # (brings the Wal to the published end)
    try:
        self._lock_io()
        try:
            self._check_usable()
            if self.populated > _LARGE_FOLIOS_PAST:
                if self.seg_fd >= 0 and self.seg_size > 0 and self.seg_id < UINT64_MAX:
                    _rotate(self, 0)
            elif self.seg_fd >= 0:
                _drop_ahead(self)
        finally:
            self._unlock_io()
    finally:
        if self.shm != NULL:
            _writer_unlock(self)
    return 0


cdef void _drop_ahead(_WalCore self) noexcept:
    """With io_lock (and with many processes the writers' mutex) held: drops
    the page cache of the active segment past the page holding its end, the
    zeros the prefault faulted in ahead (nk_discard_range), and advises the
    mapping from there on. The discard runs without the GIL, and a Wal's
    appends take io_lock only off their fast path: `populated` is lowered
    to where the discard starts first, so that an append meanwhile fits in
    the page holding the end or waits in _make_room (an append that went on
    past it wrote into the range being zeroed, and a SIGKILL test lost
    acknowledged records). With many processes the writers' mutex holds
    every append. Those zeros
    were dirty where the prefault mapped for writing (the OS policy, and the
    batch policy until the first sync()), and this sync wrote them: up to
    16 MiB for a few KB of records. They were in folios of up to 2 MiB,
    which every later fsync covering one writes whole. Dropped, they come
    back page-sized and clean (the prefault maps for reading from now on).
    Best effort: where the file system cannot (EOPNOTSUPP), or on any error,
    they stay."""
    cdef uint64_t page = nk_page_size()
    cdef uint64_t start, stop
    self._lock_map()                    # (the prefault's steps wait; may release the GIL)
    start = _round_up(self.seg_size, page)
    stop = self.populated if self.populated < self.alloc else self.alloc
    if stop > start:
        self.populated = start          # (before the GIL goes: see above)
        with nogil:
            nk_discard_range(self.seg_fd, <long>start, <long>(stop - start))
    if self.map != NULL:
        stop = _round_up(self.populated, page)
        if stop < self.map_len:
            nk_advise_small_folios(self.map + stop, self.map_len - stop)
    self._unlock_map()


cdef int _make_room(_WalCore self, uint64_t n) except -1:
    """The slow part of a reservation of n bytes (it takes io_lock): a segment
    to write in (created, or the next one past max_segment_size),
    allocated and faulted in far enough. With SHM a new segment and a new
    allocation are published (the caller holds the writers' mutex)."""
    self._lock_io()
    try:
        self._check_usable()
        if self.seg_fd < 0:
            _create_segment(self, n)
            if self.shm != NULL:
                _publish_segment(self)
        elif self.seg_size > 0 and self.seg_size + n > self.max_segment_size:
            _rotate(self, n)
        if self.seg_size + n > self.alloc:
            _grow(self, self.seg_size + n)
            if self.shm != NULL:
                self.shm.alloc = self.alloc
        if self.seg_size + n > self.populated:
            _prefault(self, self.seg_size + n)
    finally:
        self._unlock_io()
    return 0
