# KvStore: an in-memory map made durable by a nori-wal compatible log.
#
# Reads are served from memory and never touch the disk. Every write goes to
# the log first and then to memory (the append contract, log.pxd), so after
# a crash, replaying the log rebuilds exactly the acknowledged state. The jobs
# with a part of their own: atomic batches (batch.pyx), the range index
# (index.pyx), compaction (compact.pyx), the entries of get and put
# (fastcall.pyx); the replay is loader.pyx.

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_CheckExact
from cpython.dict cimport PyDict_SetItem, PyDict_DelItem

import gc
import os
import threading
import time
import weakref
from heapq import heapify, heappop, heappush

from norikv._options import check_options
from norikv.compression import DEFAULT_MAX_VALUE_SIZE
from norikv.config import STORE_OPTIONS as _STORE_OPTIONS
from norikv.config import FsyncPolicy, RecoveryMode, WalConfig
from norikv.errors import ClosedError, StoreFullError


# Every store opened in this process, for the child of a fork() (_stores_after_fork).
_open_stores = weakref.WeakSet()


def _deadline(ttl):
    """The absolute deadline (Unix ms) of a ``ttl`` in seconds from now."""
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool):
        raise TypeError(f"ttl must be a number of seconds, not {type(ttl).__name__}")
    if not ttl > 0:
        raise ValueError(f"ttl must be > 0 seconds, got {ttl!r}")
    if ttl > 1e15:   # deadlines are int64 Unix ms; 1e15 s is ~31 million years
        raise ValueError(f"ttl must be at most 1e15 seconds, got {ttl!r}")
    return _now_ms() + <int64_t>(ttl * 1000.0 + 0.999999)


def _pin_relative_ttls(KvStore store, dict relative):
    """The last step of KvStore.open. A relative TTL written by another
    nori-wal user counts from the first open that replays it: each key whose
    value comes from such a record (the loader's ``relative``) is written
    again with that deadline as an absolute one (TTL_ABS), so that a restart
    neither starts its clock again nor brings it back once expired. The
    deadline is written as it is (a huge TTL saturates to DEADLINE_MAX,
    beyond what ``ttl=`` takes). A key that expired before it was pinned
    (during replay, or during this loop) gets a tombstone instead, so a later
    open cannot revive it."""
    for key, deadline in relative.items():
        value = store.get(key)
        # one op each: a plain record (a put, or a tombstone for None)
        store._apply_batch([(key, value, deadline if value is not None else -1, None)])


def _stores_after_fork():
    """In a child created by fork() (runtime.pyx's hook), for each store of
    the parent: see KvStore._after_fork_in_child."""
    for store in list(_open_stores):
        (<KvStore>store)._after_fork_in_child()


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

    def __init__(self, *args, **kwargs):
        raise TypeError("KvStore cannot be constructed directly: use KvStore.open(path)")

    @classmethod
    def open(cls, path, *, fsync_policy=None, max_segment_size=128 << 20, preallocate=True,
             recovery_mode=RecoveryMode.TOLERATE_CORRUPTED_TAIL, compression=None,
             compress_min_size=256, max_keys=None, max_bytes=None, auto_compact=True,
             compact_dead_ratio=0.5, compact_min_bytes=64 << 20,
             max_value_size=DEFAULT_MAX_VALUE_SIZE):
        """Opens (creating if needed) the store at ``path``; the WAL lives in
        ``<path>/wal``. Recovery replays it and rebuilds the map.

        ``compression``: ``"lz4"``, ``"zstd"`` or None for values of at least
        ``compress_min_size`` bytes. ``max_keys``/``max_bytes`` (key + value
        bytes) make puts of new data beyond them raise StoreFullError.
        ``auto_compact``: compact in the background once the WAL holds at least
        ``compact_min_bytes`` and its dead share reaches ``compact_dead_ratio``.
        ``max_value_size``: the largest value ``put`` accepts (ValueError
        beyond), and the most a compressed value may decompress to when the
        log is replayed (a larger one is a damaged record); 256 MiB by default."""
        cdef KvStore store
        cdef _StoreLoader loader
        check_options(_STORE_OPTIONS, locals())
        # norikv.wal (recovery, the background thread) is the layer above
        # this module's log: imported when first used, not at import time.
        from norikv.wal import Wal
        if fsync_policy is None:
            fsync_policy = FsyncPolicy.batch(0.005)
        kind = _compression_enum().parse(compression)
        config = WalConfig(dir=os.path.join(os.fsdecode(path), "wal"), max_segment_size=max_segment_size,
                           fsync_policy=fsync_policy, preallocate=preallocate,
                           recovery_mode=recovery_mode, max_value_size=max_value_size)
        config.validate()   # the Wal creates <path>/wal and <path> durably
        loader = _StoreLoader({}, {}, _now_ms(), max_value_size)
        gc_was_enabled = gc.isenabled()
        gc.disable()  # the rebuild allocates millions of objects the GC need not visit
        t0 = time.perf_counter()
        try:
            wal, info = Wal._open_config(config, loader)
        finally:
            if gc_was_enabled:
                gc.enable()
        store = cls.__new__(cls)
        try:
            store.wal = wal
            store.path = os.fspath(path)
            store.recovery_info = info
            store._recovery_seconds = time.perf_counter() - t0
            store._recovered_records = loader.records
            store._relative_ttl_records = loader.relative_ttls
            store._data = loader.data
            store._expiry = loader.expiry
            store._heap = [(d, k) for k, d in loader.expiry.items()]
            heapify(store._heap)
            store.live_bytes = loader.live_bytes
            store.max_keys = max_keys or 0
            store.max_bytes = max_bytes or 0
            store.max_value_size = max_value_size
            store._compression = int(kind)
            store.compress_min_size = compress_min_size
            store._index = _RangeIndex(store._data)
            store._index_lock = threading.Lock()
            store.compact_dead_ratio = compact_dead_ratio
            store.compact_min_bytes = compact_min_bytes
            store._auto_compact = auto_compact
            store._compact_lock = threading.Lock()
            store._closed = False
            _open_stores.add(store)
            _pin_relative_ttls(store, loader.relative)
        except BaseException:
            # A failed open releases the lock at once: the exception (its
            # traceback holds this frame) may live on in the caller.
            store._closed = True
            if store._compactor is not None:
                store._compactor.join()
            wal._abandon()
            raise
        return store

    cdef inline int _check_open(self) except -1:
        if self._closed:
            raise ClosedError("the KvStore is closed")
        return 0

    # ------------------------------------------------------------ reads

    cdef inline bint _expired(self, object key) except -1:
        cdef PyObject *d
        if PyDict_GET_SIZE(<PyObject *>self._expiry) == 0:
            return False
        d = PyDict_GetItem(self._expiry, key)
        return d != NULL and <int64_t>(<object>d) <= _now_ms()

    cdef inline PyObject *_live(self, bytes key) except? NULL:
        """The live value of key (borrowed), or NULL when it is absent or
        expired: every read (get's entry aside, fastcall.pyx) asks here."""
        cdef PyObject *v
        if self._closed:
            raise ClosedError("the KvStore is closed")
        v = PyDict_GetItemWithError(self._data, key)
        if v != NULL and self._expired(key):
            return NULL
        return v

    def get(self, key, default=None):
        """The general path of get (fastcall.pyx has its entry)."""
        cdef PyObject *v = self._live(<bytes>key if PyBytes_CheckExact(key) else _as_bytes(key, "key"))
        return default if v == NULL else <object>v

    def __getitem__(self, key):
        cdef bytes k = <bytes>key if PyBytes_CheckExact(key) else _as_bytes(key, "key")
        cdef PyObject *v = self._live(k)
        if v == NULL:
            raise KeyError(k)
        return <object>v

    def __contains__(self, key):
        return self._live(<bytes>key if PyBytes_CheckExact(key) else _as_bytes(key, "key")) != NULL

    def __len__(self):
        self._check_open()
        self._purge_expired()
        return len(self._data)

    def keys(self):
        """A snapshot list of the live keys (insertion order)."""
        self._check_open()
        self._purge_expired()
        return list(self._data)

    def values(self):
        """A snapshot list of the live values."""
        self._check_open()
        self._purge_expired()
        return list(self._data.values())

    def items(self):
        """A snapshot list of the live (key, value) pairs."""
        self._check_open()
        self._purge_expired()
        return list(self._data.items())

    def __iter__(self):
        return iter(self.keys())

    def is_empty(self):
        return len(self) == 0

    def range(self, start=None, end=None, *, reverse=False):
        """(key, value) pairs with start <= key < end in byte order (either
        bound may be None). A key written or deleted while the iterator runs
        may or may not be seen; every pair yielded was live when yielded."""
        self._check_open()
        lo = None if start is None else _as_bytes(start, "start")
        hi = None if end is None else _as_bytes(end, "end")
        return _scan(self, lo, hi, reverse)

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
        cdef uint64_t n
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
            self._room_for_put(k, PyBytes_GET_SIZE(v), True)
        n = nk_encoded_len(PyBytes_GET_SIZE(k), PyBytes_GET_SIZE(stored), flags, <uint64_t>deadline, 0, 0)
        p = self.wal._reserve(n)
        if limited:     # other threads may have run in _reserve
            self._room_for_put(k, PyBytes_GET_SIZE(v), False)
        nk_encode(p, <const uint8_t *>PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k),
                  <const uint8_t *>PyBytes_AS_STRING(stored), PyBytes_GET_SIZE(stored),
                  flags, <uint64_t>deadline, 0, 0)
        self.wal._commit(n)
        self._set_lookup(k, v, deadline)
        return self._after_write()

    def __setitem__(self, key, value):
        if value is None:
            raise TypeError("value must be bytes, bytearray or memoryview, not None")
        self.put(key, value)

    def delete(self, key):
        """Deletes ``key``; returns whether it was present. Deleting an absent
        key writes nothing."""
        return self._take(<bytes>key if PyBytes_CheckExact(key) else _as_bytes(key, "key")) is not None

    cdef object _take(self, bytes k):
        """Deletes k; returns the value it had, or None when it was absent
        (delete, and pop/popitem in mapping.pyx)."""
        cdef PyObject *old
        cdef uint64_t n
        cdef uint8_t *p
        self._check_open()
        old = PyDict_GetItem(self._data, k)
        if old == NULL:
            return None
        if self._expired(k):
            self._unset(k, <object>old)        # expired: its record already says so
            return None
        n = nk_encoded_len(PyBytes_GET_SIZE(k), 0, NK_FLAG_TOMBSTONE, 0, 0, 0)
        p = self.wal._reserve(n)
        old = PyDict_GetItem(self._data, k)    # other threads may have run in _reserve
        if old == NULL:
            return None
        value = <object>old
        nk_encode(p, <const uint8_t *>PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k), NULL, 0,
                  NK_FLAG_TOMBSTONE, 0, 0, 0)
        self.wal._commit(n)
        self._unset(k, value)
        self._after_write()
        return value

    def __delitem__(self, key):
        if not self.delete(key):
            raise KeyError(key)

    def batch(self):
        """A :class:`WriteBatch`: its puts and deletes apply all or none."""
        self._check_open()
        return WriteBatch(self)

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

    # ------------------------------------------------------------ limits

    cdef int _over_limits(self, Py_ssize_t new_keys, int64_t delta) except -1:
        """Which limit a change of the map by ``new_keys`` keys and ``delta``
        bytes would pass: 1 max_keys, 2 max_bytes, 0 none. Only growth is
        refused: a change that shrinks the store passes, also when it is over
        its limits already (reopened with lower ones)."""
        if new_keys > 0 and self.max_keys and PyDict_GET_SIZE(<PyObject *>self._data) + new_keys > self.max_keys:
            return 1
        if delta > 0 and self.max_bytes and <int64_t>self.live_bytes + delta > <int64_t>self.max_bytes:
            return 2
        return 0

    cdef int _check_room(self, Py_ssize_t new_keys, int64_t delta, str what) except -1:
        """StoreFullError when ``what`` (a put, a batch) passes a limit (_over_limits)."""
        cdef int over = self._over_limits(new_keys, delta)
        if over == 1:
            raise StoreFullError(f"the {what} would exceed max_keys={self.max_keys}")
        if over == 2:
            raise StoreFullError(f"the {what} would exceed max_bytes={self.max_bytes}")
        return 0

    cdef int _room_for_put(self, bytes key, Py_ssize_t vlen, bint may_purge) except -1:
        """_check_room for a put of ``key`` with a value of vlen bytes. With
        may_purge, keys whose TTL has passed (they count until purged) are
        dropped first when it would not fit."""
        cdef PyObject *old = PyDict_GetItem(self._data, key)
        cdef bint new = old == NULL
        cdef int64_t delta = vlen + (PyBytes_GET_SIZE(key) if new else -PyBytes_GET_SIZE(<object>old))
        if may_purge and self._heap and self._over_limits(new, delta):
            self._purge_expired()
            return self._room_for_put(key, vlen, False)
        return self._check_room(new, delta, "put")

    # ------------------------------------------------------------ the map

    cdef inline int _account(self, bytes key, bytes value, Py_ssize_t old_size,
                             int64_t deadline) except -1:
        """Bookkeeping of a put whose dict entry is written: live bytes, the
        range index (new keys), TTL. ``old_size`` is the replaced value's size,
        or -1 for a new key."""
        if old_size < 0:
            self.live_bytes += PyBytes_GET_SIZE(key) + PyBytes_GET_SIZE(value)
            if self._index.active:
                self._index.touch(key)
        else:
            self.live_bytes += PyBytes_GET_SIZE(value)
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
        PyDict_SetItem(self._data, key, value)
        return self._account(key, value, old_size, deadline)

    cdef inline int _set_lookup(self, bytes key, bytes value, int64_t deadline) except -1:
        """_set for a caller that has not looked `old` up: a new key costs one
        dict lookup (setdefault), a replaced one a second (setitem)."""
        cdef Py_ssize_t n = PyDict_GET_SIZE(<PyObject *>self._data)
        cdef PyObject *old = PyDict_SetDefault(self._data, key, value)
        if PyDict_GET_SIZE(<PyObject *>self._data) == n:       # the key was there: replace
            return self._set(key, value, old, deadline)
        return self._account(key, value, -1, deadline)

    cdef inline int _unset(self, bytes key, object old) except -1:
        self.live_bytes -= PyBytes_GET_SIZE(key) + PyBytes_GET_SIZE(old)
        PyDict_DelItem(self._data, key)
        if PyDict_GET_SIZE(<PyObject *>self._expiry):
            self._expiry.pop(key, None)
        if self._index.active:
            self._index.touch(key)
        return 0

    cdef inline int _after_write(self) except -1:
        self.wal._after_append()
        if self.wal.written_total >= self._next_check:
            _maybe_compact(self)
        return 0

    cdef Py_ssize_t _purge_expired(self) except -1:
        """Drops keys whose deadline has passed (their records already say so)."""
        cdef int64_t now
        cdef PyObject *cur
        cdef Py_ssize_t n = 0
        if not self._heap:
            return 0
        now = _now_ms()
        while self._heap and <int64_t>self._heap[0][0] <= now:
            deadline, key = heappop(self._heap)
            cur = PyDict_GetItem(self._expiry, key)
            if cur != NULL and <int64_t>(<object>cur) == <int64_t>deadline:
                self._unset(key, self._data[key])
                n += 1
        if len(self._heap) > 2 * len(self._expiry) + 1024:
            self._heap = [(d, k) for k, d in self._expiry.items()]
            heapify(self._heap)
        return n

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
        return dead_ratio(self.live_bytes, len(self._data),
                          _log_bytes(self) if log_bytes is None else log_bytes)

    def stats(self):
        """Figures for monitoring; every field is documented in the README."""
        self._check_open()
        self._purge_expired()
        sizes = self.wal._segment_sizes()
        wal_bytes = sum(sizes.values())
        written, synced, failed = self.wal._lock_state()
        n = self.wal.fsync_count
        return {
            "keys": len(self._data),
            "live_bytes": self.live_bytes,
            "wal_bytes": wal_bytes,
            "segments": len(sizes),
            "dead_ratio": dead_ratio(self.live_bytes, len(self._data), wal_bytes),
            "recovery_seconds": self._recovery_seconds,
            "recovery_records": self._recovered_records,
            "recovery_corruption_detected": self.recovery_info.corruption_detected,
            "fsyncs": n,
            "fsync_seconds_total": self.wal.fsync_seconds,
            "fsync_seconds_avg": self.wal.fsync_seconds / n if n else 0.0,
            "fsync_seconds_max": self.wal.fsync_max,
            "unsynced_bytes": written - synced,
            "compactions": self._compactions,
            "last_compaction": self._last_compaction,
            "compaction_error": repr(self._compact_error) if self._compact_error else None,
            "ttl_keys": len(self._expiry),
            "relative_ttl_records": self._relative_ttl_records,
            "failed": repr(failed) if failed is not None else None,
        }

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
        with lock:                  # held by compact() from start to end
            self.wal.close()
        t = self._compactor
        if t is not None and t is not threading.current_thread():
            t.join()                # a background compaction that found the store closed

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
        self._index_lock = threading.Lock()
        self._compactor = None
        self._index.drop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self._closed else f"{len(self)} keys"
        path = "?" if self.path is None else self.path
        return f"<norikv.KvStore {path!r} {state}>"
