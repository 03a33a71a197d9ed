"""The write-ahead log: nori-wal compatible segments with stronger recovery.

A :class:`Wal` is a directory of segment files (``000000.wal``, ...). Records
are appended to the last segment; when it would pass ``max_segment_size`` the
segment is fsynced, truncated to its logical size and the next one is started.

Durability (see README, "Durability"):

* Every append that has returned survives the death of the process (SIGKILL,
  segfault): its bytes are in the OS page cache.
* ``FsyncPolicy.ALWAYS``: an append returns only after its record is on stable
  storage. Concurrent appenders share fsyncs.
* ``FsyncPolicy.batch(w)``: an fsync starts at most ``w`` seconds after an
  append, from a background flusher, even if no further append comes.
* ``FsyncPolicy.OS``: stable storage when the kernel writes back, at
  :meth:`Wal.sync`, on rotation and on :meth:`Wal.close`.
* :meth:`Wal.sync`: everything appended before the call is on stable storage
  when it returns.
"""

from __future__ import annotations

import errno
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from norikv import _engine
from norikv._engine import Position
from norikv.compression import DEFAULT_MAX_VALUE_SIZE
from norikv.config import FsyncPolicy, RecoveryMode, WalConfig
from norikv.errors import CorruptionError, NoriError, io_error

__all__ = [
    "FsyncPolicy",
    "WalConfig",
    "RecoveryMode",
    "RecoveryInfo",
    "RecoveryPlan",
    "SegmentPlan",
    "Wal",
    "plan_recovery",
]

_TMP_SUFFIX = ".compact-tmp"


@dataclass(frozen=True)
class RecoveryInfo:
    """What recovery found when the Wal was opened.

    ``valid_records``: records kept; ``segments_scanned``; ``bytes_truncated``:
    non-zero bytes cut away (torn or corrupt data; a zero preallocated tail is
    not counted); ``last_valid_position``: position just after the last valid
    record; ``corruption_detected``: anything was cut, skipped or removed.
    norikv adds ``segments_removed`` (POINT_IN_TIME), ``records_skipped`` spans
    (SKIP mode), ``mode``, ``seconds`` and ``batch_records_dropped``: records
    of broken atomic batches found before the end of the log, which replay
    never applies (a run of BATCH_CONT records followed by a record without
    BATCH_END, e.g. one appended by nori-wal after a crash tore the batch, or
    left open at the end of a non-final segment; docs/FORMAT.md). They are
    well-formed records left in place (not counted in ``valid_records``, not
    corruption) until a compaction drops them. A batch left open at the end
    of the log is cut instead (``bytes_truncated``)."""

    valid_records: int
    segments_scanned: int
    bytes_truncated: int
    last_valid_position: Position
    corruption_detected: bool
    segments_removed: int = 0
    spans_skipped: int = 0
    mode: RecoveryMode = RecoveryMode.TOLERATE_CORRUPTED_TAIL
    seconds: float = 0.0
    batch_records_dropped: int = 0


def makedirs_durable(path: str | os.PathLike[str]) -> None:
    """Creates ``path`` and its missing parents like ``os.makedirs``, and
    fsyncs each parent after an entry is made in it, so that a store created
    just before a power loss does not vanish with its directory."""
    path = os.path.abspath(os.fsdecode(path))
    missing = []
    p = path
    while not os.path.isdir(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    for d in reversed(missing):
        try:
            os.mkdir(d)
        except FileExistsError:
            if not os.path.isdir(d):
                raise io_error(errno.ENOTDIR, d, "create directory (a non-directory has that name)") from None
        except OSError as exc:
            raise _os_error(exc, d, "create directory") from exc
        parent = os.path.dirname(d)
        try:
            fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except PermissionError:
            continue  # an unreadable parent cannot be fsynced by us
        except OSError as exc:
            raise _os_error(exc, parent, "open directory") from exc
        try:
            os.fsync(fd)
        except OSError as exc:
            raise _os_error(exc, parent, "fsync directory") from exc
        finally:
            os.close(fd)


def _os_error(exc: OSError, path: str, what: str) -> OSError:
    """A builtin OSError from an os call as the NoriIOError saying what failed
    on which file (one already in the hierarchy, or without errno, unchanged)."""
    if isinstance(exc, NoriError) or not exc.errno:
        return exc
    return io_error(exc.errno, exc.filename or path, what)


@dataclass
class SegmentPlan:
    """What recovery does with one segment (an entry of RecoveryPlan.segments).

    ``records``: records kept; ``size``: its size once recovered (data only:
    a zero tail left where it is is not counted); ``damage``: where and why
    the first damage the mode acts on is (offset, reason) or None;
    ``skipped``: damaged spans SKIP_ANY_CORRUPTED_RECORDS leaves out, as
    (start, end, reason, records before it); ``dropped``: the byte ranges the
    rewrite leaves out (those spans, the records of atomic batches they broke,
    an unterminated batch at the end); ``cut``: the offset the file is
    truncated at, or None; ``bytes_cut``: the non-zero bytes that truncation
    removes; ``unterminated_batch``: offset of an atomic batch never completed
    at the end of the log, cut; ``batch_dropped``: records of broken atomic
    batches left in place but never applied (docs/FORMAT.md); ``delete``: the
    segment is deleted (POINT_IN_TIME, after damage in an earlier one)."""

    id: int
    path: str
    file_size: int
    records: int = 0
    size: int = 0
    data_end: int = 0
    damage: tuple[int, str] | None = None
    skipped: list[tuple[int, int, str, int]] = field(default_factory=list)
    dropped: list[tuple[int, int]] = field(default_factory=list)
    cut: int | None = None
    bytes_cut: int = 0
    unterminated_batch: int | None = None
    batch_dropped: int = 0
    delete: bool = False

    @property
    def changed(self) -> bool:
        """Whether recovery modifies this segment's file."""
        return self.delete or bool(self.dropped) or self.cut is not None


@dataclass
class RecoveryPlan:
    """What recovering a log directory in ``mode`` changes: built by
    :func:`plan_recovery` without modifying anything, applied by
    :func:`recover` when a Wal opens."""

    dir: str
    mode: RecoveryMode
    segments: list[SegmentPlan]
    leftovers: list[str]  # *.compact-tmp files the open removes

    @property
    def kept(self) -> list[SegmentPlan]:
        return [p for p in self.segments if not p.delete]

    @property
    def changed(self) -> list[SegmentPlan]:
        """The segments whose file recovery modifies or deletes."""
        return [p for p in self.segments if p.changed]

    @property
    def corruption_detected(self) -> bool:
        return bool(self.changed)

    @property
    def valid_records(self) -> int:
        return sum(p.records for p in self.kept)

    @property
    def bytes_truncated(self) -> int:
        return sum(p.bytes_cut for p in self.kept)

    @property
    def batch_records_dropped(self) -> int:
        return sum(p.batch_dropped for p in self.kept)

    @property
    def spans_skipped(self) -> int:
        return sum(len(p.skipped) for p in self.kept)

    @property
    def segments_removed(self) -> int:
        return sum(1 for p in self.segments if p.delete)

    @property
    def last_valid_position(self) -> Position:
        for p in reversed(self.kept):
            if p.size:
                return Position(p.id, p.size)
        return Position(0, 0)


def plan_recovery(
    path: str | os.PathLike[str],
    mode: RecoveryMode,
    sink: _engine._Sink | None = None,
    *,
    max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
    progress: Callable[[SegmentPlan], object] | None = None,
) -> RecoveryPlan:
    """Scans every segment of the log directory ``path`` in id order, handing
    the records recovery keeps to ``sink`` (default: a ``_engine._Sink``, which
    only checks that compressed values decompress within ``max_value_size``:
    what a Wal's recovery checks), and returns what opening it in ``mode``
    would cut, skip, delete or rewrite. Raises the CorruptionError (file, segment id and
    offset set) with which that open would refuse. Modifies nothing and takes
    no lock: ``norikv verify``/``info``/``repair`` use it to say what an open
    does, and an open applies it (:func:`recover`). ``progress`` is called
    with each segment's plan once it is scanned."""
    path = os.fsdecode(path)
    if sink is None:
        sink = _engine._Sink(max_value_size)
    skip = mode is RecoveryMode.SKIP_ANY_CORRUPTED_RECORDS
    leftovers = compaction_leftovers(path)
    ids = _engine.list_segments(path)
    plans: list[SegmentPlan] = []
    # A sink that can take a segment's hint file (values="disk") is spared
    # scanning a segment whose hint is valid and current (docs/FORMAT.md).
    from_hint = getattr(sink, "_from_hint", None)
    _hints_ahead(sink, path, ids)
    for i, seg in enumerate(ids):
        seg_path = os.path.join(path, _engine.segment_name(seg))
        is_last = i == len(ids) - 1
        if from_hint is not None:
            size = os.path.getsize(seg_path)
            n = from_hint(seg_path, seg, size)
            if n >= 0:
                p = SegmentPlan(id=seg, path=seg_path, file_size=size, records=n, size=size, data_end=size)
                plans.append(p)
                if progress is not None:
                    progress(p)
                continue
        res = _engine.scan_segment(seg_path, seg, sink, skip_corrupt=skip, final=is_last)
        end = res["end"]
        p = SegmentPlan(
            id=seg,
            path=seg_path,
            file_size=res["file_size"],
            records=res["records"] - res["batch_dropped"],
            size=end,
            data_end=end,
            skipped=res["skipped"],
            dropped=list(res["dropped"]),
            batch_dropped=res["batch_dropped"],
        )
        if res["skipped"]:
            p.damage = (res["skipped"][0][0], res["skipped"][0][2])
        if res["status"] is not None:  # (never when skipping)
            where = f"{seg_path}: {res['status']} at offset {end}"
            if mode is RecoveryMode.ABSOLUTE_CONSISTENCY or (
                mode is RecoveryMode.TOLERATE_CORRUPTED_TAIL and (not is_last or res["value_damage"])
            ):
                raise CorruptionError(f"corrupt segment {where}", seg_path, end, seg)
            p.damage = (end, res["status"])
            p.cut = end
            p.bytes_cut = max(0, res["nonzero_end"] - end)
        if (is_last or p.cut is not None) and res["batch_open"] is not None:
            # An atomic batch whose last record never made it (a torn tail):
            # cut off so that later appends cannot complete it by accident.
            cut = res["batch_open"]
            if mode is RecoveryMode.ABSOLUTE_CONSISTENCY:
                raise CorruptionError(
                    f"corrupt segment {seg_path}: atomic batch left unterminated at offset {cut}", seg_path, cut, seg
                )
            p.unterminated_batch = cut
            p.records -= res["batch_records"]
            p.bytes_cut += end - cut
            if p.dropped:
                p.dropped.append((cut, end))
            else:
                p.cut = cut
        if p.dropped:
            p.size = p.data_end - sum(b - a for a, b in p.dropped)
        elif p.cut is not None:
            p.size = p.cut
        plans.append(p)
        if progress is not None:
            progress(p)
        if p.cut is not None and not is_last:
            # POINT_IN_TIME: everything after the damage goes.
            for later in ids[i + 1 :]:
                later_path = os.path.join(path, _engine.segment_name(later))
                try:
                    size = os.path.getsize(later_path)
                except FileNotFoundError:
                    size = 0
                plans.append(SegmentPlan(id=later, path=later_path, file_size=size, delete=True))
            break
    return RecoveryPlan(dir=path, mode=mode, segments=plans, leftovers=leftovers)


def _truncate(path: str, size: int) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def compaction_leftovers(path: str) -> list[str]:
    """Names of the temporary files (``*.compact-tmp``) that a compaction or a
    SKIP_ANY_CORRUPTED_RECORDS rewrite left in ``path`` when interrupted;
    recovery deletes them. A directory with such a name is not norikv's (it
    never makes one): it is left alone and not listed (docs/FORMAT.md)."""
    with os.scandir(path) as entries:
        return sorted(e.name for e in entries if e.name.endswith(_TMP_SUFFIX) and not e.is_dir(follow_symlinks=False))


def _rewrite(core: _engine._WalCore, p: SegmentPlan) -> None:
    """Replaces segment p by a copy without its dropped ranges (SKIP mode).
    On any failure (ENOSPC...) the segment is left as it was, the copy is
    removed, and NoriIOError names the segment."""
    tmp = p.path + _TMP_SUFFIX
    try:
        _engine.copy_valid_records(p.path, tmp, p.data_end, p.dropped)
        os.replace(tmp, p.path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, NoriError):
            raise
        raise io_error(
            exc.errno or errno.EIO, p.path, f"rewriting {os.path.basename(p.path)} without its damaged records"
        ) from exc
    core._fsync_dir()


def apply_recovery(core: _engine._WalCore, plan: RecoveryPlan) -> None:
    """Makes the changes of a plan (made under the Wal's lock): removes
    compaction leftovers, rewrites the segments SKIP mode skips spans of,
    deletes the segments after a POINT_IN_TIME cut (newest first, durably,
    before the damaged one is cut: a crash in between leaves the damage for
    the next open to find, never a repaired segment followed by records
    written after the damage), then truncates."""
    for name in plan.leftovers:
        leftover = os.path.join(plan.dir, name)
        try:
            os.unlink(leftover)
        except OSError as exc:
            raise _os_error(exc, leftover, "remove compaction leftover") from exc
    for p in plan.segments:
        if p.dropped:
            _rewrite(core, p)
    doomed = [p for p in plan.segments if p.delete]
    for p in reversed(doomed):
        os.unlink(p.path)
    if doomed:
        core._fsync_dir()
    for p in plan.segments:
        if p.cut is not None and not p.dropped:
            _truncate(p.path, p.cut)


def recover(core: _engine._WalCore, mode: RecoveryMode, sink: _engine._Sink | None = None) -> RecoveryInfo:
    """Plans the recovery of the Wal's directory in ``mode`` (plan_recovery),
    applies it and starts the Wal; returns what it did.

    Nothing is modified when the mode raises CorruptionError."""
    t0 = time.perf_counter()
    plan = plan_recovery(core.dir, mode, sink, max_value_size=core.max_value_size)
    apply_recovery(core, plan)
    kept = plan.kept
    finalized = {p.id: p.size for p in kept[:-1]}
    last_id, last_size = (kept[-1].id, kept[-1].size) if kept else (None, 0)
    info = RecoveryInfo(
        valid_records=plan.valid_records,
        segments_scanned=len(plan.segments),
        bytes_truncated=plan.bytes_truncated,
        last_valid_position=plan.last_valid_position,
        corruption_detected=plan.corruption_detected,
        segments_removed=plan.segments_removed,
        spans_skipped=plan.spans_skipped,
        mode=mode,
        seconds=time.perf_counter() - t0,
        batch_records_dropped=plan.batch_records_dropped,
    )
    core._start(finalized, last_id, last_size)
    return info


def _hints_ahead(sink: _engine._Sink, path: str, ids: list[int]) -> None:
    """Tells a sink that takes hint files which segments of ``path`` it may
    take from them, before the first: it makes room for all at once."""
    ahead = getattr(sink, "_hints_ahead", None)
    if ahead is not None and ids:
        ahead([os.path.join(path, _engine.segment_name(s)) for s in ids], ids)


def load_published(path: str, sink: _engine._Sink, seg_id: int, size: int) -> tuple[int, dict[int, int]]:
    """Replays the log of directory ``path`` up to the published end
    ``(seg_id, size)`` into ``sink``, where another process recovered it
    and processes write it (KvStore with many processes; docs/DESIGN.md).
    Nothing past that end is read: bytes a writer is still writing are not
    records yet. Returns (records, {sealed segment id: size}). Raises
    FileNotFoundError when a segment vanished (a compaction deleted it after
    installing its snapshot; or an OSError with that errno): the caller
    starts over, from a fresh sink;
    CorruptionError when a published record is damaged."""
    from_hint = getattr(sink, "_from_hint", None)
    ids = [s for s in _engine.list_segments(path) if s <= seg_id]
    if not ids or ids[-1] != seg_id:
        raise FileNotFoundError(
            errno.ENOENT, "the active segment is gone", os.path.join(path, _engine.segment_name(seg_id))
        )
    records = 0
    sealed: dict[int, int] = {}
    _hints_ahead(sink, path, ids[:-1])
    for seg in ids:
        seg_path = os.path.join(path, _engine.segment_name(seg))
        last = seg == seg_id
        if from_hint is not None and not last:
            file_size = os.path.getsize(seg_path)
            n = from_hint(seg_path, seg, file_size)
            if n >= 0:
                sealed[seg] = file_size
                records += n
                continue
        if not os.path.exists(seg_path):
            raise FileNotFoundError(errno.ENOENT, "a segment is gone", seg_path)
        res = _engine.scan_segment(seg_path, seg, sink, limit=size if last else -1, final=last)
        if res["status"] is not None or (last and res["end"] != size):
            where = res["end"]
            raise CorruptionError(
                f"corrupt segment {seg_path}: {res['status'] or 'ends early'} at offset {where}", seg_path, where, seg
            )
        if not last:
            sealed[seg] = res["end"]
        records += res["records"] - res["batch_dropped"]
    return records, sealed


def load_newest(
    core: _engine._WalCore, sink: _engine._Sink, then: Callable[[dict[int, int]], None] | None = None
) -> tuple[int, int, int, dict[int, int]]:
    """load_published of the newest publication of the store ``core`` shares
    (a joining open, a reload after another process's compaction): started
    over, from the sink's ``_restart``, while a compaction deletes segments
    under it. ``then(sealed)`` runs once the load succeeded, and a segment it
    finds gone starts it over as well (a joiner opening the active segment
    a compaction has just sealed and deleted). Returns (segment id, size,
    records, {sealed segment id: size})."""
    restart = getattr(sink, "_restart", None)
    for _attempt in range(1000):
        seg_id, size, _total, _gen = _engine._published(core)
        try:
            records, sealed = load_published(core.dir, sink, seg_id, size)
            if then is not None:
                then(sealed)
            return seg_id, size, records, sealed
        except OSError as exc:  # (NoriIOError too: a view of a deleted segment)
            if exc.errno != errno.ENOENT or restart is None:
                raise
            restart()
    raise NoriError("the log kept changing while it was loaded")  # pragma: no cover - a compaction per attempt


def join(core: _engine._WalCore, mode: RecoveryMode, sink: _engine._Sink | None) -> RecoveryInfo:
    """Opens a Wal whose log other processes have open (or, read-only, a log
    as it is): loads what they published into ``sink`` and starts the Wal
    after it. Modifies nothing."""
    t0 = time.perf_counter()
    if sink is None:
        sink = _engine._Sink(core.max_value_size)
    if not core.shared:
        # read-only, no process has the store open: the log as recovery
        # would leave it, without changing a byte (a torn tail is not read)
        plan = plan_recovery(core.dir, mode, sink, max_value_size=core.max_value_size)
        records, scanned, last = plan.valid_records, len(plan.segments), plan.last_valid_position
    else:
        seg_id, size, records, sealed = load_newest(core, sink, then=core._shared_start)
        scanned, last = len(sealed) + 1, Position(seg_id, size)
    return RecoveryInfo(
        valid_records=records,
        segments_scanned=scanned,
        bytes_truncated=0,
        last_valid_position=last,
        corruption_detected=False,
        mode=mode,
        seconds=time.perf_counter() - t0,
    )


class Wal(_engine._WalCore):
    """A write-ahead log directory. Open with :meth:`Wal.open`.

    Safe to share between threads. One Wal per directory: a second open, in
    this process or another, raises LockError. In a child created by fork(), a
    Wal inherited from the parent can only be closed (or dropped): that releases
    the child's mapping and descriptors and leaves the files to the parent;
    everything else raises NoriIOError. The child can open the directory itself
    once no other process holds it."""

    _bg_stop: bool
    _bg_holding: bool

    @classmethod
    def open(cls, config: WalConfig | None = None, **kwargs: object) -> tuple[Wal, RecoveryInfo]:
        """Opens (creating if needed) and recovers a WAL; returns (wal, info)."""
        if config is None:
            config = WalConfig(**kwargs)  # type: ignore[arg-type]
        elif kwargs:
            raise TypeError("pass either a WalConfig or keyword arguments, not both")
        if not isinstance(config, WalConfig):
            raise TypeError(f"config must be a WalConfig, not {type(config).__name__}")
        config.validate()
        return cls._open_config(config, None)

    @classmethod
    def _open_config(
        cls,
        config: WalConfig,
        sink: _engine._Sink | None,
        *,
        shared: bool = False,
        readonly: bool = False,
        lock_timeout: float | None = None,
    ) -> tuple[Wal, RecoveryInfo]:
        """The one way a Wal comes to be open (Wal.open, and KvStore.open with
        its loader as ``sink``): takes the directory's lock, recovers it,
        handing the records it keeps to ``sink``, and starts the background
        thread. ``config`` is validated. ``shared`` (KvStore): other
        processes may have it open; only the first recovers, the others
        join (load what is published). ``readonly``: join without a lock."""
        path = os.fsdecode(config.dir)
        _await_dropped_owner(path)
        if readonly:
            if not os.path.isdir(path):
                raise io_error(errno.ENOENT, path, "open a store read-only (it does not exist)")
        else:
            makedirs_durable(path)
        wal = cls()
        wal._open(config, shared=shared, readonly=readonly, lock_timeout=lock_timeout)
        try:
            if readonly or (shared and not wal.first_opener):
                info = join(wal, config.recovery_mode, sink)
            else:
                info = recover(wal, config.recovery_mode, sink)
                if shared:
                    wal._shared_init()
            if not readonly:
                wal._start_background()
        except BaseException:
            wal._abandon()  # the lock goes now, not when the traceback dies
            raise
        return wal, info

    # -- background thread: batch-policy fsyncs and prefaulting the mapping --

    def _start_background(self) -> None:
        event = threading.Event()
        self._bg_event = event
        self._bg_stop = False
        self._waker = event.set
        # The thread holds only a weak reference while it waits, so a Wal
        # dropped without close() is still freed (and its lock released) by
        # reference counting.
        t = threading.Thread(
            target=_background, args=(weakref.ref(self), event), name=f"norikv-wal:{self.dir}", daemon=True
        )
        self._bg_thread: threading.Thread | None = t
        t.start()

    def _stop_background(self) -> None:
        t = getattr(self, "_bg_thread", None)
        if t is not None:
            self._bg_stop = True
            self._stop_flusher()
            self._bg_event.set()
            if t is not threading.current_thread():
                t.join()
            self._bg_thread = None

    def _abandon(self) -> None:
        """Releases the lock without touching the files (failed open)."""
        try:
            self._stop_background()
        finally:
            self._drop()

    def close(self) -> None:
        """Syncs, truncates the preallocated tail and releases the lock. Idempotent.
        In a child created by fork(), on a Wal inherited from the parent: only
        releases this process's mapping and descriptors (the files stay as the
        parent has them)."""
        self._stop_background()
        super().close()

    def _after_fork_in_child(self) -> None:
        """Called in a child created by fork() for each Wal the parent had
        open, once norikv._engine has detached it (_detach_inherited_wals): the
        background thread did not survive the fork."""
        self._bg_thread = None

    def __enter__(self) -> Wal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"segment {self.seg_id}, offset {self.seg_size}"
        return f"<norikv.Wal {self.dir!r} {state}>"


# Notified whenever the background thread lets go of a Wal, so that an open of
# the same directory can wait for a Wal its user already dropped.
_released = threading.Condition()


def _renew_released() -> None:
    # After fork() in the child: a background thread of the parent may have
    # held the condition's lock at the fork; it would stay held forever.
    global _released
    _released = threading.Condition()


os.register_at_fork(after_in_child=_renew_released)


def _await_dropped_owner(path: str, timeout: float = 5.0) -> None:
    """If a Wal of this directory is kept alive only by its own background
    thread (its user dropped it without close()), wait until that thread lets
    go and the Wal is freed, so the recipe's "drop, then reopen" works."""
    try:
        st = os.stat(path)
    except OSError:
        return
    key = (st.st_dev, st.st_ino)
    deadline = time.monotonic() + timeout
    with _released:
        while True:
            owner = _engine._dir_owner(key)
            if owner is None or not getattr(owner, "_bg_holding", False):
                return
            del owner
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            _released.wait(remaining)


def _background(ref: weakref.ref[Wal], event: threading.Event) -> None:
    """One thread per Wal: prefaults the mapping ahead of the writer and, under
    FsyncPolicy.batch(w), starts an fsync at most w after the first unsynced
    append, whether or not more appends come (_engine's flusher.pyx, without
    the GIL while there is work). Between busy periods it waits here holding
    no reference, so a Wal dropped without close() is freed (lock released)."""
    while True:
        wal = ref()
        if wal is None or wal._bg_stop:
            return
        wal._bg_holding = True
        try:
            again = wal._flusher_run()
        except Exception:
            return  # closed or failed: writers see the error themselves
        finally:
            wal._bg_holding = False
            del wal
            with _released:
                _released.notify_all()
        if not again:
            event.wait(1.0)
            event.clear()
