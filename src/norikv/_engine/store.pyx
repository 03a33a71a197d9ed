# KvStore: a map made durable by a nori-wal compatible log. The map holds the
# values (values="memory") or each key's record location (values="disk":
# ondisk.pyx). Every write goes to the log first and then to the map (the
# append contract, log.pxd), so replaying the log after a crash rebuilds
# exactly the acknowledged state. Jobs with a part of their own: opening,
# batch, index, compact, ttl, stats, mapping, fastcall; replay: loader.pyx.

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_CheckExact
from cpython.dict cimport PyDict_SetItem, PyDict_DelItem

import os
import threading
import weakref
from heapq import heappush

from norikv._options import check_options
from norikv.compression import DEFAULT_MAX_VALUE_SIZE
from norikv.config import STORE_OPTIONS as _STORE_OPTIONS
from norikv.config import RecoveryMode
from norikv.errors import ClosedError, CorruptionError


_MISSING = object()    # pop's "no default"


@cython.auto_pickle(False)
cdef class KvStore:
    """A durable key-value store. Open with :meth:`KvStore.open`.

    Keys and values are bytes-like. Safe to share between threads; several
    threads calling :meth:`sync` share fsyncs (group commit). Iteration and
    ``keys()``/``values()``/``items()`` return snapshots, so they are safe while
    other threads write."""

    def __cinit__(self):
        # Until open() the store is closed: every method raises ClosedError
        # instead of reaching the missing log and maps.
        self._closed = True
        self._snaps = []

    def __init__(self, *args, **kwargs):
        raise TypeError("KvStore cannot be constructed directly: use KvStore.open(path)")

    @classmethod
    def open(cls, path, *, fsync_policy=None, max_segment_size=128 << 20, preallocate=True,
             recovery_mode=RecoveryMode.TOLERATE_CORRUPTED_TAIL, compression=None,
             compress_min_size=256, max_keys=None, max_bytes=None, auto_compact=True,
             compact_dead_ratio=0.5, compact_min_bytes=64 << 20,
             max_value_size=DEFAULT_MAX_VALUE_SIZE, values=None, readonly=False, lock_timeout=None,
             writeback_bytes=0):
        """Opens (creating if needed) the store at ``path``; the WAL lives in
        ``<path>/wal``. Recovery replays it and rebuilds the map.

        ``compression``: ``"lz4"``, ``"zstd"`` or None for values of at least
        ``compress_min_size`` bytes. ``max_keys``/``max_bytes`` (key + value
        bytes) make puts of new data beyond them raise StoreFullError.
        ``auto_compact``: compact in the background once the WAL holds at least
        ``compact_min_bytes`` and its dead share reaches ``compact_dead_ratio``.
        ``max_value_size``: the largest value ``put`` accepts (ValueError
        beyond), and the most a compressed value may decompress to when the
        log is replayed (a larger one is a damaged record); 256 MiB by default.
        ``values``: ``"memory"`` keeps every value in the process's memory;
        ``"disk"`` keeps only the keys (a key directory of record locations)
        and reads each value from the log's mapped segments on ``get``
        (README, "Values in memory or on disk"). None: ``"memory"``.

        Any number of processes may open the same store and write it (README,
        "Many processes"). ``readonly``: never writes (ReadOnlyError) and
        takes no lock, so it also opens a directory it cannot write.
        ``lock_timeout``: seconds to wait for another process's exclusive
        work (its recovery at open, its compaction) before LockError; None
        waits as long as that process lives. ``writeback_bytes``: under
        ``FsyncPolicy.OS``, start the log's writeback every this many bytes
        (0: leave it to the kernel), which bounds the pause of the put that
        seals a full segment (WalConfig.writeback_bytes; README, "Durability")."""
        if values is None:
            # The test suite runs a second time with every store on disk.
            values = os.environ.get("NORIKV_TEST_VALUES") or "memory"
        check_options(_STORE_OPTIONS, locals())
        return _open_store(cls, locals())

    cdef inline int _check_open(self) except -1:
        """ClosedError once closed; otherwise the map brought up to date
        with other processes' writes, the pending directory folded in: every
        operation but a read of one key asks here first."""
        if self._closed:
            raise ClosedError("the KvStore is closed")
        if self._pub_ver != NULL and (self._pub_ver[0] != self._seen_ver[0] or self._has_pending()):
            _catch_up(self, False)  # another process wrote
        return 0

    cdef inline bint _behind_for(self, const char *key, Py_ssize_t klen) noexcept:
        """Whether another process may have published a change of key
        since the map was last brought up to date: the check of a read of one
        key, before it reads the map. It compares the published total of
        key's bucket (the newest publication of a record of one of its keys,
        shared.h) with the total the map reflects, and SHM's epoch (a
        compaction, a new session) with the one it saw: two loads of lines
        that a writer of other keys mostly leaves alone, where SHM's count
        changes with every put anywhere (docs/DESIGN.md, "The reader's check")."""
        cdef uint32_t nprocs
        if self._shm == NULL:
            return self._pub_ver != NULL and self._pub_ver[0] != self._seen_ver[0]
        nprocs = nk_shm_nprocs(self._shm)   # (before the epoch: nk_shm_leave)
        if nk_shm_epoch(self._shm) != self._seen_epoch[0]:
            return True
        return nprocs > 1 and nk_shm_bumped(self._shm, <const uint8_t *>key, <size_t>klen) > self._applied[0]

    cdef inline int _check_open_for(self, bytes key) except -1:
        """_check_open for a read of one key (_live, _disk_live, `in`):
        ClosedError once closed; the map brought up to date only when
        another process changed the key (_behind_for), the pending
        directory left as it is."""
        if self._closed:
            raise ClosedError("the KvStore is closed")
        if self._behind_for(PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key)):
            _catch_up(self, True)   # another process wrote
        return 0

    cdef inline bint _has_pending(self) noexcept:
        return self._pending is not None and self._pending.count != 0

    cdef inline bint _drop_pending(self, bytes key) except -1:
        """Before a change of key in _data: its pending entry, older than
        any change made now, goes (follow.pyx). Whether there was one."""
        cdef uint64_t loc, vsize
        return self._has_pending() and self._pending.remove(
            <const uint8_t *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key), _kd_hash_obj(key), &loc, &vsize)

    # ------------------------------------------------------------ reads

    cdef inline bint _expired(self, object key) except -1:
        cdef PyObject *d
        if PyDict_GET_SIZE(<PyObject *>self._expiry) == 0:
            return False
        d = PyDict_GetItem(self._expiry, key)
        return d != NULL and <int64_t>(<object>d) <= _now_ms()

    cdef inline object _live(self, bytes key):
        """The live value of key, or None when it is absent or expired:
        every read of one key of a values="memory" store (get's entry aside,
        fastcall.pyx) asks here; _disk_live is its values="disk" twin. Other
        processes' writes are applied as a read of one key applies them: to
        the pending directory, which is looked at first."""
        cdef PyObject *v
        self._check_open_for(key)
        if self._has_pending():
            d = _kd_value(self, self._pending, self._pending_views, key)
            if d is not None:
                return d            # (no TTL: a pending key has none, follow.pyx)
        v = PyDict_GetItemWithError(self._data, key)
        if v == NULL or self._expired(key):
            return None
        return <object>v

    def get(self, key, default=None):
        """The general path of get (fastcall.pyx has its entry)."""
        cdef bytes k = <bytes>key if PyBytes_CheckExact(key) else _as_bytes(key, "key")
        d = _disk_live(self, k) if self._disk else self._live(k)
        return default if d is None else d

    def __getitem__(self, key):
        cdef bytes k = <bytes>key if PyBytes_CheckExact(key) else _as_bytes(key, "key")
        d = _disk_live(self, k) if self._disk else self._live(k)
        if d is None:
            raise KeyError(k)
        return d

    def __contains__(self, key):
        cdef bytes k = <bytes>key if PyBytes_CheckExact(key) else _as_bytes(key, "key")
        if self._disk:
            self._check_open_for(k)
            return self._old_size(k) >= 0 and not self._expired(k)
        return self._live(k) is not None

    def __len__(self):
        self._check_open()
        self._purge_expired()
        return self._count()

    def keys(self):
        """A snapshot list of the live keys (insertion order)."""
        cdef _Snapshot snap
        self._check_open()
        self._purge_expired()
        snap = _Snapshot(self, None, None, False)
        try:
            return snap._keys()
        finally:
            snap.close()

    def values(self):
        """A snapshot list of the live values (with values="disk", all read
        from the log: prefer iterating range() over a large store)."""
        return [v for _, v in self.items()]

    def items(self):
        """A snapshot list of the live (key, value) pairs."""
        cdef _Snapshot snap
        self._check_open()
        self._purge_expired()
        snap = _Snapshot(self, None, None, False)   # reading a value may let other threads in
        try:
            if not self._disk:
                out = list(self._data.items())
                if not snap.undo and not self._expiry:
                    return out                      # nothing changed while it was listed
            out = []
            for k in snap._keys():
                v = snap._value(k)
                if v is not None:
                    out.append((k, v))
            return out
        finally:
            snap.close()

    def __iter__(self):
        return iter(self.keys())

    def is_empty(self):
        return len(self) == 0

    def range(self, start=None, end=None, *, reverse=False):
        """An iterator of the (key, value) pairs with start <= key < end in
        byte order (either bound may be None; reverse: descending), as they
        were when range() was called: a consistent snapshot, whatever this
        or any other thread or process writes while it runs (a key that
        expires meanwhile is still yielded). Writes made while it is live
        keep the values they replace ahead of it until it ends; close() it
        (or use it as a context manager) to end it early."""
        self._check_open()
        lo = None if start is None else _as_bytes(start, "start")
        hi = None if end is None else _as_bytes(end, "end")
        return _Snapshot(self, lo, hi, reverse)

    def prefix(self, prefix, *, reverse=False):
        """(key, value) pairs whose key starts with ``prefix``, in byte order."""
        p = _as_bytes(prefix, "prefix")
        return self.range(p, _prefix_end(p), reverse=reverse)

    # ------------------------------------------------------------ writes

    @cython.binding(False)                      # a method descriptor (docs/DESIGN.md, "get and put")
    @cython.embedsignature.format("clinic")     # ... with an introspectable signature
    def put(self, key, value, *, ttl=None, compression=None):
        """Stores ``key`` = ``value``: written to the WAL first, then to memory.

        ``ttl`` (seconds) makes the key expire that long after this call, also
        across restarts. ``compression`` overrides the store's setting for this
        value. Durability follows the store's fsync policy."""
        self._put(<bytes>key if PyBytes_CheckExact(key) else _as_bytes(key, "key"),
                  <bytes>value if PyBytes_CheckExact(value) else _as_bytes(value, "value"),
                  ttl, compression)

    cdef inline int _put(self, bytes k, bytes v, object ttl, object compression) except -1:
        cdef bytes stored = v
        cdef uint32_t flags = 0
        cdef int64_t deadline = -1
        cdef uint64_t n, loc = 0
        cdef uint8_t *p
        cdef bint limited = self.max_keys or self.max_bytes
        if self._closed:
            raise ClosedError("the KvStore is closed")
        if <uint64_t>PyBytes_GET_SIZE(v) > self.max_value_size:
            _check_value_size(v, self.max_value_size)
        if ttl is not None:
            deadline = _deadline(ttl)
            flags = NK_FLAG_TTL | NK_FLAG_TTL_ABS
        if self._compression or compression is not None:
            stored = self._encode_value(v, compression, &flags)
        if limited:
            _room_for_put(self, k, PyBytes_GET_SIZE(v), True)
        n = nk_encoded_len(PyBytes_GET_SIZE(k), PyBytes_GET_SIZE(stored), flags, <uint64_t>deadline, 0, 0)
        p = self.wal._reserve(n) if limited else self.wal._reserve_put(n)
        if limited or self._disk:
            try:
                if limited:     # other threads (processes: the catch-up) may have run in _reserve
                    _room_for_put(self, k, PyBytes_GET_SIZE(v), False)
                if self._disk:
                    loc = self._locate(n)
            except BaseException:
                self.wal._unreserve()
                raise
        nk_encode(p, <const uint8_t *>PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k),
                  <const uint8_t *>PyBytes_AS_STRING(stored), PyBytes_GET_SIZE(stored),
                  flags, <uint64_t>deadline, 0, 0)
        self.wal._commit(n)
        if self._disk:
            self._disk_set(k, PyBytes_GET_SIZE(v), loc, deadline)
        else:
            self._set_lookup(k, v, deadline)
        return self._after_write()

    cdef inline uint64_t _locate(self, uint64_t n) except? 0xFFFFFFFFFFFFFFFF:
        """values="disk": the location of the n-byte record _reserve just
        made room for (inside the append window: no Python code runs)."""
        return self._views.locate_active(self.wal.seg_id, self.wal.seg_fd, self.wal.seg_size, n)

    def __setitem__(self, key, value):
        if value is None:
            raise TypeError("value must be bytes, bytearray or memoryview, not None")
        self.put(key, value)

    def delete(self, key):
        """Deletes ``key``; returns whether it was present. Deleting an absent
        key writes nothing."""
        return self._take(<bytes>key if PyBytes_CheckExact(key) else _as_bytes(key, "key"), False) is not None

    cdef object _take(self, bytes k, bint want):
        """Deletes k; returns the value it had (``want``: pop, popitem) or
        True, or None when it was absent."""
        cdef uint64_t n, loc
        cdef uint8_t *p
        cdef object value = True
        self._check_open()
        while True:
            if self._has_pending():
                _fold_pending(self)     # (a retry: other processes' writes came in _reserve)
            loc = self._loc_of(k)
            if loc == UINT64_MAX or self._expired(k):
                self.wal._unreserve()       # (after a second look: the key went meanwhile)
                if loc != UINT64_MAX:
                    self._remove_key(k)     # expired: its record already says so
                return None
            if want:
                value = _disk_value(self, k) if self._disk else self._data[k]
            n = nk_encoded_len(PyBytes_GET_SIZE(k), 0, NK_FLAG_TOMBSTONE, 0, 0, 0)
            p = self.wal._reserve(n)
            # Other threads may have run in _reserve: when the key changed,
            # write nothing at p and look again.
            if self._loc_of(k) == loc and (not want or self._disk or self._data.get(k) is value):
                break
        nk_encode(p, <const uint8_t *>PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k), NULL, 0,
                  NK_FLAG_TOMBSTONE, 0, 0, 0)
        self.wal._commit(n)
        self._remove_key(k)
        self._after_write()
        return value

    def __delitem__(self, key):
        if not self.delete(key):
            raise KeyError(key)

    def batch(self):
        """A :class:`WriteBatch`: its puts and deletes apply all or none."""
        self._check_open()
        return WriteBatch(self)

    # ------------------------------------------------------------ the rest of MutableMapping (mapping.pyx)

    def pop(self, key, default=_MISSING):
        """pop(key[, default]): deletes ``key`` and returns the value it had;
        ``default`` when it is absent (KeyError without one). Atomic: the value
        returned is the one the tombstone replaced."""
        return _pop(self, key, default)

    def popitem(self):
        """Deletes the most recently inserted live key and returns ``(key,
        value)`` (LIFO, like dict); KeyError when the store is empty. (With
        values="disk" it walks the key directory: O(keys).)"""
        return _popitem(self)

    def setdefault(self, key, default=None):
        """The value of ``key``; when it is absent, stores ``default`` (bytes-like;
        None is a TypeError, values cannot be None) and returns it. Not atomic
        against a put of the same key in another thread: the later write wins."""
        return _setdefault(self, key, default)

    def update(self, other=(), /, **kwargs):
        """update([other], **kw) as dict.update, written as one atomic batch:
        every pair or none (a bad key or value raises TypeError/ValueError, a
        limit StoreFullError, before anything is written). Keyword names are
        str, so ``**kw`` is a TypeError for a bytes store (see norikv.codecs)."""
        return _update(self, other, kwargs)

    def clear(self):
        """Deletes every live key, as one atomic batch of tombstones (the log
        shrinks at the next compaction). Keys written by other threads while it
        runs may survive it."""
        return _clear(self)

    def ttl(self, key):
        """The remaining time to live of ``key`` in seconds (a float, 0.0 at
        the last instant), None when it has no TTL; KeyError when it is absent
        or expired."""
        return _ttl(self, key)

    def backup(self, dest, *, incremental=True):
        """Copies the store, live, into the directory ``dest`` (or as a tar
        stream into a binary file object): every write acknowledged before the
        call and no half batch; a second backup into the same ``dest`` copies
        only what changed; a crash leaves ``dest`` the old backup or the new one.
        Holds the compaction lock meanwhile (a compaction, and close(), wait for
        it); reads and writes go on. Returns figures. See :mod:`norikv.backup`."""
        return _backup(self, dest, incremental)

    def _backup_point(self):
        """{segment id: logical size} of the log at one instant between two
        appends (under the log's I/O lock, so never inside a rotation)."""
        return _backup_point(self)

    def _apply_batch(self, list ops):
        """Writes ops [(key, value or None, deadline, compression)] as one
        atomic batch (batch.pyx)."""
        return _write_batch(self, ops)

    def sync(self):
        """Every write made before this call is on stable storage when it
        returns. Threads calling it together share one fsync."""
        self._check_open()
        self.wal.sync()

    cdef bytes _encode_value(self, bytes value, object compression, uint32_t *flags):
        """The stored form of value under the store's compression, or
        ``compression`` when given (_stored_form)."""
        cdef uint32_t kind = self._compression
        if compression is not None:
            kind = int(_compression_enum().parse(compression))
        return _stored_form(value, kind, self.compress_min_size, self.max_value_size, flags)

    # ------------------------------------------------------------ the map

    cdef inline Py_ssize_t _count(self) noexcept:
        """The keys in the map (expired ones included until purged)."""
        return self._kd.count if self._disk else PyDict_GET_SIZE(<PyObject *>self._data)

    cdef uint64_t _loc_of(self, bytes key) except? 0:
        """values="disk": where key's record is; "memory": 0, or 1 while
        its newest value is pending (follow.pyx). UINT64_MAX when the key is
        absent (expired or not)."""
        cdef uint64_t loc, vsize
        if self._disk:
            if self._kd.find(<const uint8_t *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key),
                             _kd_hash_obj(key), &loc, &vsize):
                return loc
            return UINT64_MAX
        if self._has_pending() and self._pending.find(<const uint8_t *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key),
                                                      _kd_hash_obj(key), &loc, &vsize):
            return 1
        return 0 if PyDict_GetItem(self._data, key) != NULL else UINT64_MAX

    cdef int64_t _old_size(self, bytes key) except -2:
        """The size of key's value in the map (expired or not), -1 when absent.
        Allocates nothing (batch.pyx calls it inside the append window)."""
        cdef PyObject *old
        cdef uint64_t loc, vsize
        if self._disk:
            if self._kd.find(<const uint8_t *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key),
                             _kd_hash_obj(key), &loc, &vsize):
                return <int64_t>self._views.value_size(loc, vsize)
            return -1
        old = PyDict_GetItem(self._data, key)
        return -1 if old == NULL else PyBytes_GET_SIZE(<object>old)

    cdef inline bint _keeps_key(self, bint new_key, int64_t deadline) noexcept:
        """Whether _account's bookkeeping of a put keeps the key object (the
        range index for a new key, a TTL set or dropped): otherwise it may be
        given None."""
        return (new_key and self._index.active) or deadline >= 0 or PyDict_GET_SIZE(<PyObject *>self._expiry) != 0

    cdef inline int _account(self, object key, Py_ssize_t klen, Py_ssize_t vsize, Py_ssize_t old_size,
                             int64_t deadline) except -1:
        """Bookkeeping of a put whose map entry is written: live bytes, the
        range index (new keys), TTL. ``key`` (``klen`` bytes) may be None
        when not _keeps_key. ``old_size`` is the replaced value's size, or -1
        for a new key."""
        if old_size < 0:
            self.live_bytes += klen + vsize
            if self._index.active:
                self._index.touch(key)
        else:
            self.live_bytes += vsize
            self.live_bytes -= old_size
        if deadline >= 0:
            self._expiry[key] = deadline
            heappush(self._heap, (deadline, key))
        elif PyDict_GET_SIZE(<PyObject *>self._expiry):
            self._expiry.pop(key, None)
        return 0

    cdef inline int _set(self, bytes key, bytes value, PyObject *old, int64_t deadline) except -1:
        # The old value's size is read first: PyDict_SetItem may free it.
        cdef Py_ssize_t old_size = PyBytes_GET_SIZE(<object>old) if old != NULL else -1
        if PyList_GET_SIZE(self._snaps):
            _note_change(self, key, old, 0, old != NULL)
        self._drop_pending(key)
        PyDict_SetItem(self._data, key, value)
        return self._account(key, PyBytes_GET_SIZE(key), PyBytes_GET_SIZE(value), old_size, deadline)

    cdef inline int _set_lookup(self, bytes key, bytes value, int64_t deadline) except -1:
        """_set for a caller that has not looked `old` up: a new key costs one
        dict lookup (setdefault), a replaced one a second (setitem)."""
        cdef Py_ssize_t n = PyDict_GET_SIZE(<PyObject *>self._data)
        if PyList_GET_SIZE(self._snaps):     # a live snapshot needs the old value first
            return self._set(key, value, PyDict_GetItem(self._data, key), deadline)
        cdef PyObject *old = PyDict_SetDefault(self._data, key, value)
        if PyDict_GET_SIZE(<PyObject *>self._data) == n:       # the key was there: replace
            return self._set(key, value, old, deadline)        # (which drops its pending entry)
        self._drop_pending(key)
        return self._account(key, PyBytes_GET_SIZE(key), PyBytes_GET_SIZE(value), -1, deadline)

    cdef inline int _disk_set(self, bytes key, Py_ssize_t vsize, uint64_t loc, int64_t deadline) except -1:
        """values="disk": key's record, of a vsize-byte value, is now at loc."""
        return self._disk_set_raw(<const uint8_t *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key),
                                  _kd_hash_obj(key), vsize, loc, deadline, key)

    cdef int _disk_set_raw(self, const uint8_t *k, size_t klen, uint64_t h, Py_ssize_t vsize, uint64_t loc,
                           int64_t deadline, object key) except -1:
        """_disk_set of the key bytes k[:klen] (h: _kd_hash of them), where
        `key` is their bytes object or None: one is made only when the
        bookkeeping keeps the key (a live snapshot, a new key with the range
        index on, a TTL), so a record applied from the log (_catch_up)
        allocates nothing in the common case."""
        cdef uint64_t old_loc = 0, old_size = 0
        cdef bint found = self._kd.put(k, klen, h, loc, vsize, &old_loc, &old_size)
        cdef Py_ssize_t old = <Py_ssize_t>self._views.value_size(old_loc, old_size) if found else -1
        if key is None and (PyList_GET_SIZE(self._snaps) or self._keeps_key(not found, deadline)):
            key = PyBytes_FromStringAndSize(<const char *>k, <Py_ssize_t>klen)
        if PyList_GET_SIZE(self._snaps):     # (the old record is still in the log)
            _note_change(self, key, NULL, old_loc, found)
        return self._account(key, <Py_ssize_t>klen, vsize, old, deadline)

    cdef bint _remove_key(self, bytes key) except -1:
        """Removes key from the map (its record is written, or says it
        expired); False when it was absent."""
        cdef PyObject *old
        cdef uint64_t old_loc, old_size
        if not self._disk:
            old = PyDict_GetItem(self._data, key)
            if old == NULL:
                return self._drop_pending(key)      # (a key only pending was present too)
            self._unset(key, <object>old)
            return True
        if not self._kd.remove(<const uint8_t *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key),
                               _kd_hash_obj(key), &old_loc, &old_size):
            return False
        if PyList_GET_SIZE(self._snaps):
            _note_change(self, key, NULL, old_loc, True)
        self._forget(key, <Py_ssize_t>self._views.value_size(old_loc, old_size))
        return True

    cdef inline int _unset(self, bytes key, object old) except -1:
        # The size is read first: PyDict_DelItem may free the value.
        cdef Py_ssize_t size = PyBytes_GET_SIZE(old)
        if PyList_GET_SIZE(self._snaps):
            _note_change(self, key, <PyObject *>old, 0, True)
        self._drop_pending(key)
        PyDict_DelItem(self._data, key)
        return self._forget(key, size)

    cdef inline int _forget(self, bytes key, Py_ssize_t old_size) except -1:
        """Bookkeeping of a key removed from the map."""
        self.live_bytes -= PyBytes_GET_SIZE(key) + old_size
        if PyDict_GET_SIZE(<PyObject *>self._expiry):
            self._expiry.pop(key, None)
        if self._index.active:
            self._index.touch(key)
        return 0

    cdef inline int _after_write(self) except -1:
        if self._disk and self.wal.seg_id != self._hint_seen_seg:
            self._hint_seen_seg = self.wal.seg_id      # a segment was sealed
            _start_hint_writer(self)
        self.wal._after_append()
        if self.wal.written_total >= self._next_check:
            _maybe_compact(self)
        return 0

    cdef Py_ssize_t _purge_expired(self) except -1:
        """Drops keys whose deadline has passed (their records already say so)."""
        if not self._heap:
            return 0
        return _purge_expired(self)

    def _pending_len(self):
        """The keys in the pending directory (follow.pyx; for the tests)."""
        return self._pending.count if self._pending is not None else 0

    def _map_ver(self):
        """SHM's publication count the map reflects (follow.pyx; for the tests)."""
        return self.wal.follow_ver

    def _live_snapshots(self):
        """For tests: how many range()/items() snapshots changes are noted in."""
        return sum(1 for ref in self._snaps if ref() is not None)

    def _write_hints(self):
        """values="disk": writes now, in this thread, the hint files the
        background writer would (tests, tools)."""
        self._check_open()
        self._hints_pending = True
        _hint_writer(weakref.ref(self), self._hint_lock)

    def _deadline_of(self, bytes key):
        return self._expiry.get(key)

    # ------------------------------------------------------------ compaction, monitoring

    def compact(self):
        """Rewrites the WAL so that it holds one record per live key.

        Crash-safe at every instant: the snapshot is written to temporary files,
        fsynced, renamed into segment ids reserved between the old log and the
        segment that takes new writes, and only then are the old segments
        deleted, oldest first. Reads and writes go on meanwhile. Returns
        figures about the run. :meth:`close` waits for a running compaction;
        one that starts after close() began raises ClosedError.

        A failure while the snapshot is written or fsynced (NoriIOError, e.g.
        ENOSPC or EIO) fails this compaction only: its temporary files are
        deleted and the store goes on. A failed fsync of the log directory
        after a rename poisons the store (WalFailedError), as any failed
        fsync of the log does."""
        return _compact(self)

    def dead_ratio(self, log_bytes=None):
        """Share of the WAL's bytes that no longer hold live data
        (:func:`norikv.store.dead_ratio` of this store)."""
        self._check_open()
        return dead_ratio(self.live_bytes, self._count(),
                          _log_bytes(self) if log_bytes is None else log_bytes)

    def stats(self):
        """Figures for monitoring; every field is documented in the README."""
        return _stats(self)

    # ------------------------------------------------------------ lifecycle

    @property
    def closed(self):
        return self._closed

    def close(self):
        """Refuses new writes and compactions at once (ClosedError), waits for a
        running compaction (manual, in any thread, or background) to finish,
        then syncs and closes the WAL. When it returns nothing in the
        directory changes any more. Idempotent.

        In a child created by fork(), on a store inherited from the parent:
        releases only this process's handle (no waiting, no change to the
        files, which stay the parent's)."""
        self._closed = True
        lock = self._compact_lock
        if lock is None:
            return                  # never opened (KvStore.__new__): nothing to release
        t = self._hinter
        if t is not None and t is not threading.current_thread():
            t.join()                # the hint writer stops before its next segment
        with self._hint_lock:       # one started meanwhile (by a compaction) finds _closed
            pass
        with lock:                  # held by compact() from start to end
            self.wal.close()
        t = self._compactor
        if t is not None and t is not threading.current_thread():
            t.join()                # a background compaction that found the store closed
        if self._views is not None:
            self._views.unmap_all()     # every read checks _closed first

    def _after_fork_in_child(self):
        """In a child created by fork(): the locks are made anew, since a
        thread of the parent may have held them at the fork, and the range
        index is rebuilt on the next query (that thread may have been
        changing it). Reads keep serving the map as it was at the fork, which
        every write changes atomically with the GIL held; writes, sync and
        compact raise NoriIOError (the Wal is the parent's)."""
        if self._compact_lock is None:
            return
        self._compact_lock = threading.Lock()
        self._hint_lock = threading.Lock()
        self._index_lock = threading.Lock()
        self._compactor = None
        self._hinter = None
        self._pub_ver = NULL        # the inherited map stays as it was at the fork
        self._shm = NULL
        if self._has_pending():
            try:
                _fold_pending(self)     # (with it: _check_open no longer folds)
            except CorruptionError:
                pass                    # (a damaged record: its key's reads name it)
        if self._views is not None:
            self._views.forget_pins()
        self._index.drop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self._closed else f"{len(self)} keys"
        path = "?" if self.path is None else self.path
        return f"<norikv.KvStore {path!r} {state}>"
