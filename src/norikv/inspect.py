"""Read-only inspection of a norikv log: its records, what an open would do
with it, and the store it holds, without opening it.

Nothing here takes the store's lock, creates a file or writes a byte, so every
function works on a store another process has open (``norikv info``,
``verify``, ``dump`` and the other read-only commands are built on it).
Segments are read with ``pread`` into one buffer of 1 MiB (or of the largest
record, if larger): memory stays bounded, except in :func:`read_store`, which
holds the live data.

What a lock-free read of a store in use sees: the log as it is on disk at that
moment, which includes every record the holder has appended (appended bytes are
in the page cache at once, before any fsync). A record the holder is copying in
as it is read looks like a torn tail: when the store is held (see
:func:`lock_holders`) and the plan would cut something, :func:`read_plan` and
:func:`read_store` read again (a few times, 20 ms apart; what is still torn
then is reported as the cut an open would make); when a compaction by the
holder deletes a segment meanwhile, they start again. The store they rebuild
is a prefix of the holder's writes (atomic batches whole or absent), as an
open at some moment of the read would have rebuilt it, not necessarily the
latest state. :func:`records` does neither: it reports what it reads, as it
reads it.

Which entries of a directory are segments, and the order they are read in, is
the engine's rule (``list_segments``), shared with the Wal and recovery.
"""

from __future__ import annotations

import bisect
import errno
import os
import time
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import NamedTuple

from norikv._engine import (
    COMPRESSION_MASK,
    FLAG_BATCH_CONT,
    FLAG_BATCH_END,
    FLAG_TOMBSTONE,
    FLAG_TTL_ABS,
    Position,
    _Sink,
    _StoreLoader,
    list_segments,
    now_ms,
    segment_id_of,
    segment_name,
    segment_records,
)
from norikv._engine import (
    _check_bytes as _as_bytes,
)
from norikv.compression import DEFAULT_MAX_VALUE_SIZE, Compression
from norikv.store import dead_ratio
from norikv.wal import RecoveryMode, RecoveryPlan, SegmentPlan, compaction_leftovers, plan_recovery

__all__ = [
    "LogRecord",
    "Damage",
    "records",
    "segment_files",
    "segment_name",
    "read_plan",
    "read_store",
    "StoreView",
    "TailCut",
    "dead_ratio",
    "lock_holders",
    "now_ms",
    "ProgressCallback",
    "plan_recovery",
    "RecoveryMode",
    "RecoveryPlan",
    "SegmentPlan",
    "compaction_leftovers",
]

_BytesLike = bytes | bytearray | memoryview
#: ``progress(bytes_read, bytes_total)``: called with (0, total) when a read
#: (re)starts and after each segment.
ProgressCallback = Callable[[int, int], object]

_RETRIES = 5  # reads of a store in use: restarts after a compaction or a transient tear
_RETRY_PAUSE = 0.02


# ------------------------------------------------------------------ records


class LogRecord(NamedTuple):
    """One record as it is stored in a segment (its value is not read).

    ``segment``, ``offset``: where it starts; ``size``: its encoded size in
    bytes (the next record starts at ``offset + size``); ``flags``: the flags
    byte (docs/FORMAT.md), also given by name below; ``value_size``: the
    stored value's size (compressed, when the record is); ``ttl_ms``: the TTL
    field or None; ``version``: (term, index) or None."""

    segment: int
    offset: int
    size: int
    flags: int
    key: bytes
    value_size: int
    ttl_ms: int | None
    version: tuple[int, int] | None

    @property
    def position(self) -> Position:
        return Position(self.segment, self.offset)

    @property
    def tombstone(self) -> bool:
        """A delete."""
        return bool(self.flags & FLAG_TOMBSTONE)

    @property
    def compression(self) -> Compression:
        """How the value is stored."""
        return Compression((self.flags & COMPRESSION_MASK) >> 2)

    @property
    def ttl_abs(self) -> bool:
        """``ttl_ms`` is norikv's absolute deadline (Unix ms), not a TTL."""
        return bool(self.flags & FLAG_TTL_ABS)

    @property
    def batch_cont(self) -> bool:
        """Another record of the same atomic batch follows."""
        return bool(self.flags & FLAG_BATCH_CONT)

    @property
    def batch_end(self) -> bool:
        """The last record of an atomic batch."""
        return bool(self.flags & FLAG_BATCH_END)


class Damage(NamedTuple):
    """Where the records of a segment stop being readable, and why
    (``reason``, e.g. ``"CRC32C mismatch"`` or ``"incomplete record"``)."""

    segment: int
    offset: int
    path: str
    reason: str

    @property
    def position(self) -> Position:
        return Position(self.segment, self.offset)


def segment_files(path: str | os.PathLike[str]) -> list[tuple[int, str]]:
    """(id, path) of each segment of a log, in id order; ``path`` is a store
    directory (one holding ``wal/``) or a log directory. Other entries are
    ignored; an entry with a segment's name that is not a regular file raises
    NoriIOError."""
    waldir = _log_dir(path)
    return [(seg, os.path.join(waldir, segment_name(seg))) for seg in list_segments(waldir)]


def _log_dir(path: str | os.PathLike[str]) -> str:
    """The log directory of ``path``: its ``wal/`` when it has one (a store
    directory), else ``path`` itself."""
    path = os.fsdecode(path)
    wal = os.path.join(path, "wal")
    return wal if os.path.isdir(wal) else path


def records(
    path: str | os.PathLike[str], start: Position | tuple[int, int] | None = None
) -> Iterator[LogRecord | Damage]:
    """Every record of a store directory, a log directory or one segment
    file, in log order, as :class:`LogRecord` items.

    ``start``: (segment id, offset); segments numbered below it are left out
    and its segment is read from that offset, which should be a record
    boundary (a position a LogRecord gave; anything else reads as damage).

    A damaged record (a CRC mismatch, an impossible field, a record cut short)
    ends its segment: one :class:`Damage` item is yielded for it, then the
    next segment is read. An all-zero tail (preallocation) is a clean end.
    Values are not decompressed, so a compressed value that does not
    decompress is not seen here (:func:`read_plan` checks values, as an
    open does). A segment file named otherwise than ``NNNNNN.wal`` raises
    ValueError (its id is unknown); a segment deleted while being read (a
    compaction by the process holding the store) raises NoriIOError with
    errno ENOENT naming it. The segments are listed when this is called,
    and opened one at a time as the iteration reaches them."""
    p = os.fsdecode(path)
    if os.path.isdir(p):
        files = segment_files(p)
    else:
        seg = segment_id_of(os.path.basename(p))
        if seg is None:
            if not os.path.exists(p):
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), p)
            raise ValueError(f"{p}: not a segment file name (NNNNNN.wal), so its segment id is unknown")
        files = [(seg, p)]
    first_seg, first_off = (0, 0) if start is None else tuple(start)
    return _records(files, first_seg, first_off)


def _records(files: list[tuple[int, str]], first_seg: int, first_off: int) -> Iterator[LogRecord | Damage]:
    for seg, path in files:
        if seg < first_seg:
            continue
        for off, rec in segment_records(path, first_off if seg == first_seg else 0):
            if isinstance(rec, str):
                yield Damage(seg, off, path, rec)
                break
            term = rec["term"]
            yield LogRecord(
                seg,
                off,
                rec["size"],
                rec["flags"],
                rec["key"],
                rec["vlen"],
                rec["ttl_ms"],
                None if term is None else (term, rec["index"]),
            )


# ------------------------------------------------------------------ what an open would do


def lock_holders(path: str | os.PathLike[str]) -> list[int] | None:
    """Pids of the processes holding a store's lock (``path``: the store or
    its log directory), read from /proc/locks without touching the lock:
    ``[]`` when it is free, None when this platform cannot tell."""
    try:
        st = os.stat(os.path.join(_log_dir(path), "LOCK"))
    except OSError:
        return []
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    for line in text.splitlines():
        parts = line.split()
        if "->" in parts or len(parts) < 6 or parts[1] != "FLOCK":
            continue
        if parts[5] == want:
            try:
                pids.append(int(parts[4]))
            except ValueError:
                pass
    return pids


def _plan_lock_free(
    waldir: str, mode: RecoveryMode, make_sink: Callable[[], _Sink], progress: ProgressCallback | None
) -> tuple[RecoveryPlan, _Sink]:
    """plan_recovery with a fresh sink, started again when a compaction by
    the process holding the store deletes a segment meanwhile, or when that
    process may have been copying a record in as it was read (a transient
    torn tail). Returns (plan, sink)."""
    for attempt in range(_RETRIES):
        last = attempt + 1 == _RETRIES
        total = 0
        for _, seg_path in segment_files(waldir):
            try:
                total += os.path.getsize(seg_path)
            except OSError:
                pass
        done = [0]

        def scanned(p: SegmentPlan, done: list[int] = done, total: int = total) -> None:
            done[0] += p.file_size
            if progress is not None:
                progress(done[0], total)

        if progress is not None:
            progress(0, total)
        sink = make_sink()
        try:
            plan = plan_recovery(waldir, mode, sink, progress=scanned)
        except OSError as exc:
            if exc.errno == errno.ENOENT and not last and os.path.isdir(waldir):
                continue
            raise
        if plan.changed and not last and lock_holders(waldir):
            time.sleep(_RETRY_PAUSE)
            continue
        return plan, sink
    raise AssertionError("unreachable")  # pragma: no cover


def read_plan(
    path: str | os.PathLike[str],
    mode: RecoveryMode = RecoveryMode.TOLERATE_CORRUPTED_TAIL,
    *,
    max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
    progress: ProgressCallback | None = None,
) -> RecoveryPlan:
    """What opening the store (or log directory) ``path`` in ``mode`` would
    cut, skip, delete or rewrite: :func:`plan_recovery`, made safe to run on
    a store in use (read again after a compaction or a transient tear, see
    the module's docstring). Every record's CRC is checked and every
    compressed value decompressed within ``max_value_size``, as the open
    does. Raises the CorruptionError that open would raise."""
    waldir = _log_dir(path)
    plan, _ = _plan_lock_free(waldir, mode, lambda: _Sink(max_value_size), progress)
    return plan


class TailCut(NamedTuple):
    """What an open cuts from one segment: from ``offset`` (where its data
    ends once recovered) on, ``bytes`` non-zero bytes, because of ``reason``."""

    segment: int
    path: str
    offset: int
    reason: str
    bytes: int

    @classmethod
    def of(cls, plan: SegmentPlan) -> TailCut:
        """The cut a segment's plan makes (its damage, an unterminated batch)."""
        if plan.unterminated_batch is not None:
            reason = "atomic batch never terminated" + (f", then {plan.damage[1]}" if plan.damage else "")
        else:
            reason = plan.damage[1] if plan.damage else "damaged"
        return cls(plan.id, plan.path, plan.size, reason, plan.bytes_cut)


# ------------------------------------------------------------------ the store


class StoreView:
    """A store's contents as the default open (TOLERATE_CORRUPTED_TAIL)
    would rebuild them, held in memory: made by :func:`read_store`.

    Read like a KvStore (get, ``in``, ``len``, keys, items, range, prefix);
    a key whose TTL has passed is not live, judged at each call. It never
    changes after it is made: later writes to the store are not seen."""

    def __init__(
        self,
        path: str,
        plan: RecoveryPlan,
        data: dict[bytes, bytes],
        expiry: dict[bytes, int],
        live_bytes: int,
        seconds: float,
    ) -> None:
        #: The log directory read.
        self.path = path
        #: What the next open does (the plan the view was replayed by).
        self.plan = plan
        self._data = data
        self._expiry = expiry
        self._sorted: list[bytes] | None = None
        #: Sum of the sizes of the replayed keys and values.
        self.live_bytes = live_bytes
        #: Seconds spent reading and replaying.
        self.seconds = seconds

    # ---------------------------------------------------------------- figures

    @property
    def segments(self) -> list[SegmentPlan]:
        """The segments the open keeps, in id order."""
        return self.plan.kept

    @property
    def records(self) -> int:
        """Records replayed."""
        return self.plan.valid_records

    @property
    def wal_bytes(self) -> int:
        """Bytes of the log once recovered (preallocation not counted)."""
        return sum(p.size for p in self.plan.kept)

    @property
    def wal_file_bytes(self) -> int:
        """Bytes of the segment files as they are (preallocation counted)."""
        return sum(p.file_size for p in self.plan.kept)

    @property
    def tail_cut(self) -> TailCut | None:
        """What the next open would cut (the damaged tail of the last
        segment), or None when it cuts nothing."""
        changed = [p for p in self.plan.kept if p.changed]
        return TailCut.of(changed[-1]) if changed else None

    @property
    def deadlines(self) -> Mapping[bytes, int]:
        """Key -> expiry deadline (Unix ms, see :func:`now_ms`) of the keys
        replayed with a TTL, including any whose deadline has passed since."""
        return MappingProxyType(self._expiry)

    @property
    def dead_ratio(self) -> float:
        """:func:`dead_ratio` of the live keys against :attr:`wal_bytes`."""
        return dead_ratio(self.live_bytes, len(self), self.wal_bytes)

    # ---------------------------------------------------------------- reads

    def _live(self, key: bytes, now: int) -> bool:
        d = self._expiry.get(key)
        return d is None or d > now

    def get(self, key: _BytesLike, default: bytes | None = None) -> bytes | None:
        """The value of a live key, else ``default``."""
        k = _as_bytes(key, "key")
        v = self._data.get(k)
        if v is None or (self._expiry and not self._live(k, now_ms())):
            return default
        return v

    def __getitem__(self, key: _BytesLike) -> bytes:
        v = self.get(key)
        if v is None:
            raise KeyError(key)
        return v

    def __contains__(self, key: object) -> bool:
        return isinstance(key, (bytes, bytearray, memoryview)) and self.get(key) is not None

    def __len__(self) -> int:
        if not self._expiry:
            return len(self._data)
        now = now_ms()
        return sum(1 for k in self._data if self._live(k, now))

    def keys(self) -> list[bytes]:
        """The live keys, in the order the store's map holds them (the order
        a KvStore opened on this log lists them)."""
        now = now_ms()
        return [k for k in self._data if not self._expiry or self._live(k, now)]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.keys())

    def items(self) -> list[tuple[bytes, bytes]]:
        """The live (key, value) pairs, in the order of :meth:`keys`."""
        data = self._data
        return [(k, data[k]) for k in self.keys()]

    def range(
        self, start: _BytesLike | None = None, end: _BytesLike | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs with start <= key < end in byte order (either
        bound may be None), live when the call is made."""
        keys = self._sorted_keys()
        a = 0 if start is None else bisect.bisect_left(keys, _as_bytes(start, "start"))
        b = len(keys) if end is None else bisect.bisect_left(keys, _as_bytes(end, "end"))
        return self._pairs(keys, a, b, reverse, now_ms())

    def prefix(self, prefix: _BytesLike, *, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with ``prefix``, in byte order."""
        p = _as_bytes(prefix, "prefix")
        keys = self._sorted_keys()
        n = len(p)
        # Cutting sorted keys to n bytes keeps them sorted: the keys starting
        # with p are those whose first n bytes equal p.
        a = bisect.bisect_left(keys, p)
        b = bisect.bisect_right(keys, p, lo=a, key=lambda k: k[:n])
        return self._pairs(keys, a, b, reverse, now_ms())

    def _sorted_keys(self) -> list[bytes]:
        if self._sorted is None:
            self._sorted = sorted(self._data)
        return self._sorted

    def _pairs(self, keys: list[bytes], a: int, b: int, reverse: bool, now: int) -> Iterator[tuple[bytes, bytes]]:
        data, expiry = self._data, self._expiry
        for i in range(b - 1, a - 1, -1) if reverse else range(a, b):
            k = keys[i]
            if expiry and not self._live(k, now):
                continue
            yield k, data[k]

    def __repr__(self) -> str:
        return f"<norikv.inspect.StoreView {self.path!r} {len(self._data)} keys>"


def read_store(
    path: str | os.PathLike[str],
    *,
    max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
    progress: ProgressCallback | None = None,
) -> StoreView:
    """What ``KvStore.open(path)`` would rebuild (the default
    TOLERATE_CORRUPTED_TAIL recovery), read without the lock and without
    changing anything: the same recovery plan (:func:`read_plan`, so a
    damaged tail is left out, not cut) replayed by the store's own loader
    (last write wins, tombstones, atomic batches all or nothing, TTLs).
    ``path``: the store directory or its log directory. Raises the
    CorruptionError with which that open would refuse the store."""
    waldir = _log_dir(path)
    t0 = time.perf_counter()
    data: dict[bytes, bytes] = {}
    expiry: dict[bytes, int] = {}

    def loader() -> _Sink:  # a fresh replay for each attempt
        nonlocal data, expiry
        data, expiry = {}, {}
        return _StoreLoader(data, expiry, now_ms(), max_value_size)

    plan, sink = _plan_lock_free(waldir, RecoveryMode.TOLERATE_CORRUPTED_TAIL, loader, progress)
    assert isinstance(sink, _StoreLoader)
    return StoreView(waldir, plan, data, expiry, sink.live_bytes, time.perf_counter() - t0)
