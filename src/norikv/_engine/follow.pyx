# Keeping a store's map up to date with what other processes write to its
# log (docs/DESIGN.md, "Many processes"). Every read compares one counter,
# SHM's publication count, with the one the map reflects; when they differ,
# the records published in between are applied by the store's own rules
# (the methods its own writes use), with the atomic-batch rule of a replay.
# When a compaction replaced the segments the map points into
# (values="disk"), or a segment the map has not read yet is gone, the map is
# loaded again from the log, as a joining process loads it.
#
# The pending directory (values="memory"). A read of one key (get, [], in)
# applies other processes' plain puts (no TTL, no compression, no batch) as
# their records' locations in a _KeyDir, KvStore._pending, as values="disk"
# holds its map, instead of making two bytes objects and a dict entry for
# each: a reader following a fast writer pays for the keys it reads, not
# for every record (docs/DESIGN.md, "The pending directory"). Its rules:
# - a read of one key looks in it first (its entries are newer than
#   _data's), and a pending key has no TTL: a store with deadlines, live
#   snapshots or limits (max_keys, max_bytes) applies every record at once;
# - every change of a key in _data drops the key's pending entry first
#   (KvStore._drop_pending): any change made now is newer;
# - every other operation folds it into _data first (KvStore._check_open,
#   _fold_pending), so _data's bookkeeping (live bytes, TTL, the range
#   index, len) never counts pending entries;
# - it is folded before the catch-up lets go of a segment (its entries
#   point into it) and emptied when the map is loaded again.
# It changes with the GIL held, one record at a time, and a fold takes it
# whole before applying it: the threads of a process need no other lock.

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_GET_SIZE

from norikv.errors import CorruptionError


cdef class _Follower(_Sink):
    """The sink of _catch_up: records in log order, batches whole."""

    def __init__(self, KvStore store):
        # `store` is set only while _catch_up runs: the store holds its
        # follower, and a store dropped without close() must be freed at once.
        _Sink.__init__(self, store.max_value_size)
        self.disk = store._disk
        self.staged = []
        self.open_ms = _now_ms()
        if self.disk:
            self.views = store._views
        else:
            self.views = _SegmentViews(store.wal.dir, store.wal.max_segment_size)

    cdef tuple _entry(self, const nk_rec *r, uint64_t seg_id, uint64_t offset):
        """(key, value or None, value size (-1: a delete), deadline, location)."""
        cdef bytes key = PyBytes_FromStringAndSize(<const char *>r.key, r.klen)
        cdef int64_t deadline = -1
        cdef uint64_t loc = 0
        if r.flags & NK_FLAG_TOMBSTONE:
            return (key, None, -1, -1, 0)
        if r.flags & NK_FLAG_TTL:
            deadline = nk_deadline(0 if r.flags & NK_FLAG_TTL_ABS else self.open_ms, r.ttl_ms)
        if self.disk:
            loc = self.views.locate_active(seg_id, -1, offset, r.size)
            if r.flags & NK_COMP_MASK:
                return (key, None, PyBytes_GET_SIZE(self.value), deadline, loc)
            return (key, None, r.vlen, deadline, loc)
        value = self._value(r)
        return (key, value, PyBytes_GET_SIZE(value), deadline, 0)

    cdef int _apply(self, tuple e) except -1:
        cdef KvStore store = self.store
        key, value, vsize, deadline, loc = e
        if vsize < 0:
            store._remove_key(key)
        elif self.disk:
            store._disk_set(key, vsize, loc, deadline)
        else:
            store._set_lookup(key, value, deadline)
        return 0

    cdef int on_record(self, const nk_rec *r, uint64_t seg_id, uint64_t offset) except -1:
        cdef bytes key
        cdef KvStore store = self.store
        cdef uint64_t old_loc, old_size
        if r.flags & (NK_FLAG_TOMBSTONE | NK_FLAG_TTL | NK_COMP_MASK):
            return self._apply(self._entry(r, seg_id, offset))
        # a plain put (the common record): straight to the store's own rule
        if self.disk:
            return store._disk_set_raw(r.key, r.klen, _kd_hash(r.key, r.klen), r.vlen,
                                       self.views.locate_active(seg_id, -1, offset, r.size), -1, None)
        if (self.point and store._pending is not None and PyList_GET_SIZE(store._snaps) == 0
                and PyDict_GET_SIZE(<PyObject *>store._expiry) == 0):
            store._pending.put(r.key, r.klen, _kd_hash(r.key, r.klen),
                               self.views.locate_active(seg_id, -1, offset, r.size), r.vlen, &old_loc, &old_size)
            return 0
        key = PyBytes_FromStringAndSize(<const char *>r.key, r.klen)
        return store._set_lookup(key, PyBytes_FromStringAndSize(<const char *>r.value, r.vlen), -1)

    cdef int stage(self, const nk_rec *r, uint64_t seg_id, uint64_t offset) except -1:
        self.staged.append(self._entry(r, seg_id, offset))
        return 0

    cdef int end_batch(self, bint commit) except -1:
        if commit:
            for e in self.staged:
                self._apply(e)
        self.staged.clear()
        return 0

    cdef int apply_range(self, uint64_t seg_id, uint64_t start, uint64_t end) except -1:
        """Applies the records of [start, end) of segment seg_id: published,
        so whole and ending on a batch boundary; anything else is damage."""
        cdef int64_t slot = self.views.slot_for(seg_id, -1, end)
        cdef const uint8_t *base = self.views.v[slot].base
        cdef uint64_t off = start
        cdef nk_rec r
        cdef nk_batch batch
        cdef int st
        batch.start = batch.count = batch.closed = 0
        while off < end:
            st = nk_decode(base + off, end - off, 1, &r)
            if st == NK_OK and r.flags & NK_COMP_MASK and self.check(&r):
                st = NK_BAD_COMPRESSION
            if st != NK_OK:
                path = os.path.join(self.store.wal.dir, segment_name(seg_id))
                raise CorruptionError(f"corrupt segment {path}: {_status_text(st)} at offset {off} "
                                      "(a record another process published)", path, off, seg_id)
            _feed(self, nk_batch_step(&batch, r.flags, off), &r, seg_id, off)
            off += r.size
        if batch.count:
            self.end_batch(False)       # (never: a batch is published whole)
        return 0


cdef int _catch_up(KvStore store, bint point=False) except -1:
    """Applies what other processes published since the map was last brought
    up to date (a read found SHM's count changed; a writer holding wmutex).
    point: for a read of one key, which may leave plain puts pending;
    otherwise the pending directory is folded in as well."""
    if not PyThread_acquire_lock(store._follow_mutex, NOWAIT_LOCK):
        with nogil:
            PyThread_acquire_lock(store._follow_mutex, WAIT_LOCK)
    try:
        return _catch_up_locked(store, point)
    finally:
        PyThread_release_lock(store._follow_mutex)


cdef int _catch_up_locked(KvStore store, bint point) except -1:
    cdef _WalCore wal = store.wal
    cdef _Follower follower
    cdef nk_pub p
    cdef uint64_t ver, seg, off, end, epoch
    if wal.shm == NULL or wal.closed or not nk_shm_valid(wal.shm):
        return 0                    # (a read-only follower: a first opener is setting SHM up)
    epoch = nk_shm_epoch(wal.shm)   # (before the publication: the map reflects at least this epoch's)
    if not point and store._has_pending():
        _fold_pending(store)
    ver = nk_shm_read(wal.shm, &p)
    if ver == wal.follow_ver:
        wal.seen_epoch = epoch
        return 0
    if wal.shm.session != wal.session or (p.gen != wal.pub.gen and store._disk):
        return _reload(store)
    follower = <_Follower>store._follower
    follower.store = store
    follower.point = point
    seg = wal.pub.seg_id
    off = wal.pub.seg_size
    try:
        while True:
            if seg == p.seg_id:
                end = p.seg_size
            else:
                end = os.path.getsize(os.path.join(wal.dir, segment_name(seg)))
            if end > off:
                follower.apply_range(seg, off, end)
            if seg == p.seg_id:
                break
            later = [s for s in list_segments(wal.dir) if seg < s <= p.seg_id]
            if not later:
                raise FileNotFoundError(ENOENT, "the active segment is gone", wal.dir)
            if not store._disk:
                if store._has_pending():
                    _fold_pending(store)    # (its entries may point into seg)
                follower.views.drop_segment(seg)
            seg = later[0]
            off = 0
    except OSError as exc:
        if exc.errno != ENOENT:
            raise
        return _reload(store)       # a compaction deleted a segment not read yet
    finally:
        follower.store = None
    if p.gen != wal.pub.gen:
        _rescan_sizes(wal, p.seg_id)
    wal.pub = p
    wal.follow_ver = ver
    wal.seen_epoch = epoch
    return 0


cdef int _reload(KvStore store) except -1:
    """The map loaded again from the log up to the newest publication (with
    _follow_mutex held), as a joining process loads it."""
    cdef _WalCore wal = store.wal
    cdef _StoreLoader loader
    from norikv.wal import load_newest
    loader = _new_loader(store._disk, wal.config)
    load_newest(wal, loader)
    old_views = store._views
    frozen = _freeze_snapshots(store)   # live range walks keep the old map (and its views)
    _adopt(store, loader)
    _new_follower(store)
    if old_views is not None and old_views is not store._views and not frozen:
        old_views.unmap_all()
    _rescan_sizes(wal, wal.pub.seg_id)
    store._reloads += 1
    return 0


cdef int _new_follower(KvStore store) except -1:
    """The store's follower, for a map just loaded (open, a reload), and an
    empty pending directory pointing into its views."""
    cdef _Follower follower = _Follower(store)
    store._follower = follower
    if not store._disk and not (store.max_keys or store.max_bytes):
        store._pending = _KeyDir()
        store._pending_views = follower.views
    return 0


cdef int _fold_pending(KvStore store) except -1:
    """Applies the pending directory's entries to _data by the store's own
    rule, each value read from its record (CRC checked: CorruptionError
    naming file and offset), in the order their keys entered it, and
    empties it. Taken whole first: when a record is damaged, the directory
    stays as it was (what was applied is applied again next time, to the
    same effect)."""
    cdef _KeyDir kd = store._pending
    cdef _SegmentViews views = store._pending_views
    cdef size_t cursor = 0, klen
    cdef const uint8_t *k
    cdef uint64_t loc, vsize
    cdef uint32_t kind
    store._pending = _KeyDir()
    try:
        while kd.next(&cursor, &k, &klen, &loc, &vsize):
            key = PyBytes_FromStringAndSize(<const char *>k, klen)
            store._set_lookup(key, _stored_at(views, loc, key, &kind, False), -1)
    except BaseException:
        store._pending = kd
        raise
    return 0
