"""KvStore: an in-memory map made durable by a nori-wal compatible WAL.

Reads are served from memory and never touch the disk. Every write goes to
the WAL first and then to memory, so after a crash, replaying the WAL rebuilds
exactly the acknowledged state (how durable an acknowledgement is depends on
the fsync policy: see README, "Durability").
"""

from __future__ import annotations

import gc
import os
import threading
import time
import weakref
from typing import Iterator, Union

from sortedcontainers import SortedList

from norikv import _options, _engine
from norikv.compression import DEFAULT_MAX_VALUE_SIZE, Compression
from norikv.errors import ClosedError, NoriError, io_error
from norikv.wal import FsyncPolicy, RecoveryInfo, RecoveryMode, Wal, WalConfig

__all__ = ["KvStore", "WriteBatch"]

BytesLike = Union[bytes, bytearray, memoryview]

_SCAN_CHUNK = 1024


class WriteBatch:
    """Puts and deletes applied together: all of them or none, in memory and
    across a crash. Use as ``with store.batch() as b: ...``; leaving the block
    with an exception discards the batch."""

    def __init__(self, store: "KvStore") -> None:
        if not isinstance(store, KvStore):
            raise TypeError("a WriteBatch comes from store.batch() on an open KvStore")
        self._store: KvStore | None = store
        self._ops: list[tuple[bytes, bytes | None, int, object]] = []
        self._done = False

    def put(self, key: BytesLike, value: BytesLike, *, ttl: float | None = None,
            compression: object = None) -> None:
        self._check()
        k = _engine._check_bytes(key, "key")
        v = _engine._check_bytes(value, "value")
        assert self._store is not None      # set until the batch is done (_check above)
        self._store._check_value(v)
        deadline = _engine._deadline(ttl) if ttl is not None else -1
        if compression is not None:
            Compression.parse(compression)
        self._ops.append((k, v, deadline, compression))

    def _put_deadline(self, key: BytesLike, value: BytesLike, deadline: int) -> None:
        """A put that expires at ``deadline`` (Unix ms, an int >= 0; larger
        than DEADLINE_MAX means practically never and saturates to it)
        instead of after a ttl (norikv import)."""
        self._check()
        k = _engine._check_bytes(key, "key")
        v = _engine._check_bytes(value, "value")
        if isinstance(deadline, bool) or not isinstance(deadline, int) or deadline < 0:
            raise ValueError(f"deadline must be an int >= 0 (Unix ms), got {deadline!r}")
        assert self._store is not None
        self._store._check_value(v)
        self._ops.append((k, v, min(deadline, _engine.DEADLINE_MAX), None))

    def delete(self, key: BytesLike) -> None:
        self._check()
        self._ops.append((_engine._check_bytes(key, "key"), None, -1, None))

    def clear(self) -> None:
        self._check()
        self._ops.clear()

    def __len__(self) -> int:
        return len(self._ops)

    def _check(self) -> None:
        if self._done:
            raise ClosedError("the batch was already written or discarded")

    def write(self) -> None:
        """Writes the batch atomically (also done by leaving the with block)."""
        self._check()
        self._done = True
        # A finished batch lets go of its store, so that a batch variable left
        # in scope does not keep a dropped store (and its lock) alive.
        store, ops = self._store, self._ops
        self._store, self._ops = None, []
        if ops:
            assert store is not None      # set until the batch is done (_check above)
            store._apply_batch(ops)

    def __enter__(self) -> "WriteBatch":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.write()
        else:
            self._done = True
            self._store, self._ops = None, []


# The options of KvStore.open (those it passes to WalConfig are checked by
# WalConfig's table), checked before anything on disk is touched.
_STORE_OPTIONS: dict[str, _options.Spec] = {
    "path": _options.Path(),
    "fsync_policy": _options.Instance(FsyncPolicy, optional=True),
    "compression": _options.Parsed(Compression.parse),
    "compress_min_size": _options.Int(0, _options.INT64_MAX, unit=" bytes"),
    "max_keys": _options.Int(1, _options.INT64_MAX, optional=True),
    "max_bytes": _options.Int(1, _options.INT64_MAX, optional=True, unit=" bytes"),
    "auto_compact": _options.Bool(),
    "compact_dead_ratio": _options.Real(0, 1, open_lo=True, open_hi=True),
    "compact_min_bytes": _options.Int(0, _options.INT64_MAX, unit=" bytes"),
}


class KvStore(_engine._StoreCore):
    """A durable key-value store. Open with :meth:`KvStore.open`.

    Keys and values are bytes-like. Safe to share between threads; several
    threads calling :meth:`sync` share fsyncs (group commit). Iteration and
    ``keys()``/``values()``/``items()`` return snapshots, so they are safe while
    other threads write."""

    wal: Wal
    recovery_info: RecoveryInfo
    path: str
    _recovery_seconds: float
    _recovered_records: int
    _relative_ttl_records: int
    _compactions: int
    _last_compaction: dict[str, float] | None
    _compact_lock: threading.Lock
    _index_lock: threading.Lock
    _index: SortedList | None
    _compactor: threading.Thread | None
    _compact_error: BaseException | None

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise TypeError("KvStore cannot be constructed directly: use KvStore.open(path)")

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        fsync_policy: FsyncPolicy | None = None,
        max_segment_size: int = 128 << 20,
        preallocate: bool = True,
        recovery_mode: RecoveryMode = RecoveryMode.TOLERATE_CORRUPTED_TAIL,
        compression: object = None,
        compress_min_size: int = 256,
        max_keys: int | None = None,
        max_bytes: int | None = None,
        auto_compact: bool = True,
        compact_dead_ratio: float = 0.5,
        compact_min_bytes: int = 64 << 20,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
    ) -> "KvStore":
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
        _options.check_options(_STORE_OPTIONS, locals())
        if fsync_policy is None:
            fsync_policy = FsyncPolicy.batch(0.005)
        kind = Compression.parse(compression)
        config = WalConfig(dir=os.path.join(os.fsdecode(path), "wal"), max_segment_size=max_segment_size,
                           fsync_policy=fsync_policy, preallocate=preallocate,
                           recovery_mode=recovery_mode, max_value_size=max_value_size)
        config.validate()   # the Wal creates <path>/wal and <path> durably
        store = cls.__new__(cls)   # closed until _init_core (KvStore() itself raises)
        data: dict[bytes, bytes] = {}
        expiry: dict[bytes, int] = {}
        loader = _engine._StoreLoader(data, expiry, _engine.now_ms(), max_value_size)
        wal = Wal()
        gc_was_enabled = gc.isenabled()
        gc.disable()  # the rebuild allocates millions of objects the GC need not visit
        t0 = time.perf_counter()
        try:
            info = wal._open_config(config, loader)
        finally:
            if gc_was_enabled:
                gc.enable()
        try:
            store.wal = wal
            store.path = os.fspath(path)
            store.recovery_info = info
            store._recovery_seconds = time.perf_counter() - t0
            store._recovered_records = loader.records
            store._relative_ttl_records = loader.relative_ttls
            store._compactions = 0
            store._last_compaction = None
            store._compact_lock = threading.Lock()
            store._index_lock = threading.Lock()
            store._index = None
            store._compactor = None
            store._compact_error = None
            wal._fork_callback = weakref.WeakMethod(store._after_fork_in_child)
            store._init_core(wal, data, expiry, loader.live_bytes, max_keys or 0, max_bytes or 0,
                             int(kind), compress_min_size, float(compact_dead_ratio), compact_min_bytes,
                             weakref.WeakMethod(store._start_background_compaction) if auto_compact else None)
            if loader.relative:
                store._pin_relative_ttls(loader.relative)
        except BaseException:
            # A failed open releases the lock at once: the exception (its
            # traceback holds this frame) may live on in the caller.
            store._mark_closed()
            t = getattr(store, "_compactor", None)
            if t is not None:
                t.join()
            wal._abandon()
            raise
        return store

    def _pin_relative_ttls(self, relative: dict[bytes, int]) -> None:
        """A relative TTL written by another nori-wal user counts from the first
        open that replays it: each key whose value comes from such a record
        (the loader's ``relative``) is written again with that deadline as an
        absolute one (TTL_ABS), so that a restart neither starts its clock
        again nor brings it back once expired. The deadline is written as it
        is (a huge TTL saturates to DEADLINE_MAX, beyond what ``ttl=`` takes).
        A key that expired before it was pinned (during replay, or during this
        loop) gets a tombstone instead, so a later open cannot revive it."""
        for key, deadline in relative.items():
            value = self.get(key)
            # one op each: a plain record (a put, or a tombstone for None)
            self._apply_batch([(key, value, deadline if value is not None else -1, None)])

    # ---------------------------------------------------------------- mapping

    def keys(self) -> list[bytes]:
        """A snapshot list of the live keys (insertion order)."""
        self._check_open_py()
        self._purge_expired()
        return list(self._data_view())

    def values(self) -> list[bytes]:
        """A snapshot list of the live values."""
        self._check_open_py()
        self._purge_expired()
        return list(self._data_view().values())

    def items(self) -> list[tuple[bytes, bytes]]:
        """A snapshot list of the live (key, value) pairs."""
        self._check_open_py()
        self._purge_expired()
        return list(self._data_view().items())

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.keys())

    def is_empty(self) -> bool:
        return len(self) == 0

    def _check_open_py(self) -> None:
        if self.closed:
            raise ClosedError("the KvStore is closed")

    # ---------------------------------------------------------------- writes

    def batch(self) -> WriteBatch:
        """A :class:`WriteBatch`: its puts and deletes apply all or none."""
        self._check_open_py()
        return WriteBatch(self)

    def sync(self) -> None:
        """Every write made before this call is on stable storage when it
        returns. Threads calling it together share one fsync."""
        self._check_open_py()
        self.wal.sync()

    # ---------------------------------------------------------------- ranges

    def _refresh_index(self) -> SortedList:
        """Brings the sorted key index up to date: O(k log n) for k changes,
        a rebuild from the map when k is large."""
        with self._index_lock:
            rebuild, added, removed = self._take_index_delta()
            if rebuild or self._index is None:
                self._index = SortedList(added)
                return self._index
            idx = self._index
            for k in removed:
                idx.discard(k)
            for k in added:
                if k not in idx:
                    idx.add(k)
            return idx

    def range(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
              reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs with start <= key < end in byte order (either
        bound may be None). A key written or deleted while the iterator runs
        may or may not be seen; every pair yielded was live when yielded."""
        self._check_open_py()
        lo = None if start is None else _engine._check_bytes(start, "start")
        hi = None if end is None else _engine._check_bytes(end, "end")
        return self._scan(lo, hi, reverse)

    def prefix(self, prefix: BytesLike, *, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with ``prefix``, in byte order."""
        p = _engine._check_bytes(prefix, "prefix")
        return self.range(p, _prefix_end(p), reverse=reverse)

    def _scan(self, lo: bytes | None, hi: bytes | None, reverse: bool) -> Iterator[tuple[bytes, bytes]]:
        get = self.get
        cursor: bytes | None = None
        want = 32  # chunks grow to _SCAN_CHUNK: a short scan does not fetch 1,024 keys
        while True:
            idx = self._refresh_index()
            with self._index_lock:
                if reverse:
                    top = hi if cursor is None else cursor
                    it = idx.irange(lo, top, inclusive=(True, False), reverse=True)
                else:
                    bottom = lo if cursor is None else cursor
                    it = idx.irange(bottom, hi, inclusive=(cursor is None, False))
                chunk = [k for _, k in zip(range(want), it)]
            for k in chunk:
                v = get(k)          # None: deleted or expired since the index saw it
                if v is not None:
                    yield k, v
            if len(chunk) < want:
                return
            cursor = chunk[-1]
            want = min(want * 2, _SCAN_CHUNK)

    # ---------------------------------------------------------------- compaction

    def compact(self) -> dict[str, float]:
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
        self._check_open_py()
        with self._compact_lock:
            t0 = time.perf_counter()
            before = self._wal_bytes()
            data, expiry, first, gap = self._freeze()
            try:
                parts = _engine.write_snapshot(data, expiry, self.wal.dir, first, gap,
                                            self.wal.max_segment_size, int(self._compression_kind()),
                                            self.compress_min_size, self.max_value_size)
                del data, expiry
                for tmp, seg, size in parts:
                    self.wal._install_segment(tmp, seg, size)
            except BaseException as exc:
                # A failed snapshot (e.g. ENOSPC) must not keep its partial
                # temporary files, and their disk space, until the next open.
                for seg in range(first, first + gap):
                    tmp = os.path.join(self.wal.dir, _engine.segment_name(seg) + ".compact-tmp")
                    try:
                        os.unlink(tmp)
                    except (FileNotFoundError, IsADirectoryError):
                        pass        # never written, or a directory that is not ours
                if isinstance(exc, OSError) and not isinstance(exc, NoriError) and exc.errno:
                    raise io_error(exc.errno, exc.filename, "compaction snapshot") from exc
                raise
            old = [s for s in self.wal._segment_ids() if s < first]
            self.wal._delete_segments(old)
            after = self._wal_bytes()
            self._compactions += 1
            result = {"seconds": time.perf_counter() - t0, "bytes_before": before,
                      "bytes_after": after, "segments_written": len(parts),
                      "segments_deleted": len(old)}
            self._last_compaction = result
            return result

    def _compression_kind(self) -> Compression:
        return Compression(self._store_compression())

    def _start_background_compaction(self) -> None:
        t = self._compactor
        if t is not None and t.is_alive():
            return
        if self._compact_lock.locked():
            return

        def run() -> None:
            try:
                self.compact()
            except ClosedError:
                pass
            except BaseException as exc:  # surfaced through stats() and the next compact()
                self._compact_error = exc

        t = threading.Thread(target=run, name="norikv-compactor", daemon=True)
        self._compactor = t
        t.start()

    # ---------------------------------------------------------------- monitoring

    def stats(self) -> dict[str, object]:
        """Figures for monitoring; every field is documented in the README."""
        self._check_open_py()
        self._purge_expired()
        sizes = self.wal._segment_sizes()
        wal_bytes = sum(sizes.values())
        written, synced, failed = self.wal._lock_state()
        n = self.wal.fsync_count
        return {
            "keys": len(self),
            "live_bytes": self.live_bytes,
            "wal_bytes": wal_bytes,
            "segments": len(sizes),
            "dead_ratio": self.dead_ratio(wal_bytes),
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
            "ttl_keys": self._ttl_count(),
            "relative_ttl_records": self._relative_ttl_records,
            "failed": repr(failed) if failed is not None else None,
        }

    # ---------------------------------------------------------------- lifecycle

    @property
    def closed(self) -> bool:
        return self._is_closed()

    def close(self) -> None:
        """Refuses new writes and compactions at once (ClosedError), waits for a
        running compaction (manual, in any thread, or background) to finish,
        then syncs and closes the WAL. When it returns nothing in the
        directory changes any more. Idempotent.

        In a child created by fork(), on a store inherited from the parent:
        releases only this process's handle (no waiting, no change to the
        files, which stay the parent's)."""
        self._mark_closed()
        lock = getattr(self, "_compact_lock", None)
        if lock is None:
            return                  # never opened (KvStore.__new__): nothing to release
        with lock:                  # held by compact() from start to end
            self.wal.close()
        t = self._compactor
        if t is not None and t is not threading.current_thread():
            t.join()                # a background compaction that found the store closed

    def _after_fork_in_child(self) -> None:
        """In a child created by fork() (called through the Wal's
        _after_fork_in_child): the Python locks are made anew, since a thread
        of the parent may have held them at the fork, and the range index is
        rebuilt on the next query (that thread may have been changing it).
        Reads keep serving the map as it was at the fork, which every write
        changes atomically with the GIL held; writes, sync and compact raise
        NoriIOError (the Wal is the parent's)."""
        self._compact_lock = threading.Lock()
        self._index_lock = threading.Lock()
        self._index = None
        self._compactor = None
        self._drop_index()

    def __enter__(self) -> "KvStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self)} keys"
        return f"<norikv.KvStore {getattr(self, 'path', '?')!r} {state}>"


def _prefix_end(p: bytes) -> bytes | None:
    """The smallest key greater than every key starting with p (None: no bound)."""
    b = bytearray(p)
    while b and b[-1] == 0xFF:
        b.pop()
    if not b:
        return None
    b[-1] += 1
    return bytes(b)
