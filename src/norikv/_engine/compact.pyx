# Compaction: rewriting the log as one record per live key, crash-safe at
# every instant; when the write path starts one in the background; the
# dead-ratio estimate both use.

from libc.stdlib cimport malloc, free, realloc
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize

import os
import threading
import time

from norikv.errors import ClosedError, LockError, NoriError, io_error


cpdef double dead_ratio(uint64_t live_bytes, uint64_t keys, uint64_t log_bytes) noexcept:
    """The share of a log's ``log_bytes`` that no longer hold live data,
    estimated from the live keys' and values' uncompressed sizes plus 8 bytes
    of record overhead per key (``keys`` of them): what KvStore.dead_ratio()
    and stats() report and auto-compaction compares with
    ``compact_dead_ratio``. 0.0 for an empty log."""
    if not log_bytes:
        return 0.0
    return max(0.0, 1.0 - (live_bytes + 8.0 * keys) / log_bytes)


cdef uint64_t _log_bytes(KvStore store) except? 0:
    return sum(store.wal._segment_sizes().values())


cdef int _maybe_compact(KvStore store) except -1:
    """The write path's check (KvStore._after_write, once 1 MiB or a 16th of
    the log more is written): with auto_compact, a background compaction
    once the log holds compact_min_bytes and its dead_ratio reaches
    compact_dead_ratio."""
    cdef uint64_t log_bytes
    if store.wal.shm != NULL and (nk_shm_ver(store.wal.shm) != store.wal.follow_ver or store._has_pending()):
        return 0    # the map is behind the log (this process only wrote since): no dead ratio yet
    log_bytes = _log_bytes(store)
    store._next_check = store.wal.written_total + max(<uint64_t>1 << 20, log_bytes // 16)
    if not store._auto_compact or log_bytes < store.compact_min_bytes:
        return 0
    if dead_ratio(store.live_bytes, store._count(), log_bytes) >= store.compact_dead_ratio:
        _start_background_compaction(store)
    return 0


cdef int _start_background_compaction(KvStore store) except -1:
    t = store._compactor
    if t is not None and t.is_alive():
        return 0
    if store._compact_lock.locked():
        return 0
    t = threading.Thread(target=_background_compaction, args=(store,), name="norikv-compactor",
                         daemon=True)
    t.start()                   # (then published: close() joins only started threads)
    store._compactor = t
    return 0


def _background_compaction(KvStore store):
    """The background compaction's thread. A failure is kept for stats()
    (ClosedError only says the store closed meanwhile)."""
    try:
        _compact(store, True)
    except (ClosedError, LockError):
        pass        # closed meanwhile; another process compacts
    except BaseException as exc:
        store._compact_error = exc


cdef tuple _freeze(KvStore store):
    """Compaction step 1, atomic with respect to every write: takes the live
    state (values="memory": a copy of the map and its deadlines;
    values="disk": the locations of the live records, a _DiskSnapshot, and
    the store's own deadlines, read as the snapshot is written) and seals
    the log so that later writes land in segments numbered after room
    reserved for the snapshot. Returns (data, expiry, first id, reserved ids)."""
    cdef uint64_t bound = 0
    cdef uint64_t gap, loc, vsize
    cdef size_t cursor = 0, klen
    cdef const uint8_t *k
    cdef _DiskSnapshot snap
    store._check_open()
    store.wal._begin_exclusive()
    try:
        store._purge_expired()
        if store._disk:
            data = snap = _DiskSnapshot(store._views, store._kd.count)
            expiry = store._expiry
            while store._kd.next(&cursor, &k, &klen, &loc, &vsize):
                snap.locs[snap.n] = loc
                snap.n += 1
                bound += nk_encoded_len(klen, vsize, NK_FLAG_TTL, UINT64_MAX, 0, 0)
        else:
            if store._has_pending():
                _fold_pending(store)    # (a read of one key in another thread while _begin_exclusive waited)
            data = store._data.copy()
            expiry = store._expiry.copy()
            for k_, v in data.items():
                bound += nk_encoded_len(PyBytes_GET_SIZE(k_), PyBytes_GET_SIZE(v), NK_FLAG_TTL,
                                        UINT64_MAX, 0, 0)
        gap = bound // store.wal.max_segment_size + 2
        first, _ = store.wal._seal_and_skip_locked(gap)
    finally:
        store.wal._end_exclusive()
    return data, expiry, first, gap


cdef dict _compact(KvStore store, bint background=False):
    """KvStore.compact (its docstring says what it guarantees). With
    values="disk" the snapshot is the live records copied as they are stored
    (compressed values stay compressed); once it is installed each key moves
    to its copy (_relocate), and the old segments are unmapped before they
    are deleted."""
    cdef object wal = store.wal     # through Python attributes: tests and tools wrap its steps
    store._check_open()
    with store._compact_lock, _SharedCompaction(store, background):
        t0 = time.perf_counter()
        before = _log_bytes(store)
        data, expiry, first, gap = _freeze(store)
        try:
            parts = write_snapshot(data, expiry, wal.dir, first, gap, wal.max_segment_size,
                                   store._compression, store.compress_min_size, store.max_value_size)
            for tmp, seg, size in parts:
                wal._install_segment(tmp, seg, size)
        except BaseException as exc:
            _snapshot_failed(wal, first, gap, exc)
            raise
        if store.wal.shm != NULL:
            _publish_gen(store.wal, first + gap)     # the others reload before the deletes
        if store._disk:
            _relocate(store, <_DiskSnapshot>data, parts)
            store._purge_expired()      # the keys the snapshot left out as expired
        del data, expiry
        old = [s for s in wal._segment_ids() if s < first]
        if store._disk:
            for seg in old:
                store._views.drop_segment(seg)
        wal._delete_segments(old)
        if store._disk:
            _start_hint_writer(store)
        return _compacted(store, t0, before, len(parts), len(old))


cdef class _SharedCompaction:
    """The compaction lock of all processes (shared.pyx) around a compaction:
    a background one skips when another process compacts (LockError, as
    "nothing to do"); compact() waits as the store's lock_timeout says."""
    cdef KvStore store
    cdef double timeout
    cdef bint held

    def __cinit__(self, KvStore store, bint background):
        self.store = store
        self.timeout = 0.0 if background else (
            -1.0 if store.lock_timeout is None else float(store.lock_timeout))

    def __enter__(self):
        self.store.wal._check_usable()      # (before SHM's mutex: a read-only store maps it read-only)
        if self.store.wal.shm != NULL:
            _compaction_lock(self.store.wal, self.timeout)
            self.held = True

    def __exit__(self, *exc):
        if self.held:
            self.held = False
            _compaction_unlock(self.store.wal)


cdef int _relocate(KvStore store, _DiskSnapshot snap, list parts) except -1:
    """values="disk": each key still at the location the snapshot copied
    moves to the copy (a key written since keeps its newer location)."""
    cdef _SegmentViews views = store._views
    cdef Py_ssize_t i
    cdef uint64_t loc
    cdef nk_rec r
    slots = [views.slot_for(seg, -1, 0) for _, seg, _ in parts]
    for i in range(snap.n):
        if snap.moved[i] != UINT64_MAX:
            views.record_at(snap.locs[i], NULL, 0, &r)
            loc = snap.moved[i]
            loc = (<uint64_t>slots[loc >> _LOC_SHIFT] << _LOC_SHIFT) | (loc & _LOC_OFFSET_MASK)
            store._kd.relocate(r.key, r.klen, _kd_hash(r.key, r.klen), snap.locs[i], loc)
    return 0


cdef int _snapshot_failed(object wal, uint64_t first, uint64_t gap, exc) except -1:
    """A failed snapshot (e.g. ENOSPC) must not keep its partial temporary
    files, and their disk space, until the next open; an OSError is raised
    as the hierarchy's error."""
    for seg in range(first, first + gap):
        tmp = os.path.join(wal.dir, segment_name(seg) + ".compact-tmp")
        try:
            os.unlink(tmp)
        except (FileNotFoundError, IsADirectoryError):
            pass        # never written, or a directory that is not ours
    if isinstance(exc, OSError) and not isinstance(exc, NoriError) and exc.errno:
        raise io_error(exc.errno, exc.filename, "compaction snapshot") from exc
    return 0


cdef dict _compacted(KvStore store, double t0, uint64_t before, Py_ssize_t written,
                     Py_ssize_t deleted):
    store._compactions += 1
    result = {"seconds": time.perf_counter() - t0, "bytes_before": before,
              "bytes_after": _log_bytes(store), "segments_written": written,
              "segments_deleted": deleted}
    store._last_compaction = result
    return result


cdef class _SnapshotWriter:
    """Writes records into segment files named ``<id>.wal.compact-tmp`` for
    ids first_id .. first_id+ids-1 (the last takes any overflow), each
    fsynced when full (_seal_tmp). ``parts``: [(tmp path, id, size)]."""

    def __cinit__(self, dirpath, uint64_t first_id, uint64_t ids, uint64_t max_segment_size):
        self.dirpath = dirpath
        self.first = first_id
        self.ids = ids
        self.seg = first_id
        self.max_segment_size = max_segment_size
        self.cap = 4 << 20
        self.buf = <uint8_t *>malloc(self.cap)
        if self.buf == NULL:
            raise MemoryError()
        self.parts = []

    def __dealloc__(self):
        free(self.buf)
        if self.f is not None:
            self.f.close()

    cdef uint64_t add(self, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen,
                      uint32_t flags, uint64_t deadline) except 0xFFFFFFFFFFFFFFFF:
        """Writes one record; returns (its id - first_id) << 40 | its offset."""
        cdef size_t n = nk_encoded_len(klen, vlen, flags, deadline, 0, 0)
        cdef uint8_t *nb
        cdef uint64_t at
        if (self.f is not None and self.size > 0 and self.size + n > self.max_segment_size
                and self.seg + 1 < self.first + self.ids):
            self._flush()
            _seal_tmp(self.f)
            self.parts.append((self.path, self.seg, self.size))
            self.f = None
            self.seg += 1
            self.size = 0
        if self.f is None:
            self.path = os.path.join(self.dirpath, segment_name(self.seg) + ".compact-tmp")
            self.f = open(self.path, "wb")
        if self.used + n > self.cap:
            self._flush()
            if n > self.cap:
                nb = <uint8_t *>realloc(self.buf, n)
                if nb == NULL:
                    raise MemoryError()
                self.buf = nb
                self.cap = n
        self.used += nk_encode(self.buf + self.used, k, klen, v, vlen, flags, deadline, 0, 0)
        at = ((self.seg - self.first) << _LOC_SHIFT) | self.size
        self.size += n
        return at

    cdef int _flush(self) except -1:
        _write_all(self.f, self.buf, self.used)
        self.used = 0
        return 0

    cdef list finish(self):
        if self.f is not None:
            self._flush()
            _seal_tmp(self.f)
            self.parts.append((self.path, self.seg, self.size))
            self.f = None
        return self.parts


def write_snapshot(object data, dict expiry, dirpath, uint64_t first_id, uint64_t ids,
                   uint64_t max_segment_size, int compression, Py_ssize_t compress_min_size,
                   uint64_t max_value_size=_DEFAULT_MAX_VALUE_SIZE):
    """Writes the live map as segment files named ``<id>.wal.compact-tmp``,
    fsynced, for ids first_id .. first_id+ids-1 (the last takes any overflow).
    Returns [(tmp path, id, size)]. Expired keys are left out. A value over
    max_value_size (read uncompressed from a log another writer made) is
    written uncompressed: compressed, no open with that bound could read it.
    ``data`` is the frozen map, or a values="disk" store's _DiskSnapshot
    (its records are copied as they are stored)."""
    cdef int64_t now = _now_ms()
    cdef uint32_t flags
    cdef uint64_t deadline
    cdef bytes k, v, stored
    cdef _SnapshotWriter w = _SnapshotWriter(dirpath, first_id, ids, max_segment_size)
    if type(data) is _DiskSnapshot:
        (<_DiskSnapshot>data).write(w, expiry, now)
        return w.finish()
    for k, v in (<dict>data).items():
        d = expiry.get(k)
        flags = 0
        deadline = 0
        if d is not None:
            if <int64_t>d <= now:
                continue
            deadline = <uint64_t>d
            flags = NK_FLAG_TTL | NK_FLAG_TTL_ABS
        stored = _stored_form(v, compression, compress_min_size, max_value_size, &flags)
        w.add(<const uint8_t *>PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k),
              <const uint8_t *>PyBytes_AS_STRING(stored), PyBytes_GET_SIZE(stored), flags, deadline)
    return w.finish()


cdef class _DiskSnapshot:
    """The frozen state of a values="disk" store: the location of each live
    key's record (``locs``); write() copies them into the snapshot and notes
    where each went (``moved``, UINT64_MAX: left out)."""

    def __cinit__(self, _SegmentViews views, Py_ssize_t cap):
        self.views = views
        self.locs = <uint64_t *>malloc((cap + 1) * sizeof(uint64_t))
        self.moved = <uint64_t *>malloc((cap + 1) * sizeof(uint64_t))
        if self.locs == NULL or self.moved == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.locs)
        free(self.moved)

    cdef int write(self, _SnapshotWriter w, dict expiry, int64_t now) except -1:
        cdef Py_ssize_t i
        cdef nk_rec r
        cdef uint32_t flags
        cdef uint64_t deadline
        for i in range(self.n):
            # Other threads run between records now and then; the old
            # segments stay mapped until the compaction ends.
            if i % 4096 == 4095:
                with nogil:
                    pass
            self.views.record_at(self.locs[i], NULL, 0, &r)
            flags = r.flags & ~(<uint32_t>NK_FLAGS_BATCH)
            deadline = 0
            if flags & NK_FLAG_TTL:
                d = expiry.get(PyBytes_FromStringAndSize(<const char *>r.key, r.klen))
                if d is None or <int64_t>d <= now:
                    self.moved[i] = UINT64_MAX     # expired (purged at the end)
                    continue
                deadline = <uint64_t>d
                flags |= NK_FLAG_TTL_ABS
            self.moved[i] = w.add(r.key, r.klen, r.value, r.vlen, flags, deadline)
        return 0


cdef int _write_all(object f, const uint8_t *buf, size_t n) except -1:
    if n:
        f.write(PyBytes_FromStringAndSize(<const char *>buf, n))
    return 0


def _seal_tmp(f):
    """fsyncs and closes a snapshot file."""
    cdef int err
    cdef int fd
    f.flush()
    fd = f.fileno()
    with nogil:
        err = nk_sync_data(fd, NULL, 0)
    f.close()
    if err:
        raise io_error(err, f.name, "fsync")
