"""Hot backup: a consistent copy of a live store while writers go on.

:meth:`KvStore.backup` (``store.backup(dest)``) and ``norikv backup DIR DEST``
copy the store's log segments, which are nori-wal segments: the copy is a
store directory (``DEST/wal/``) that ``KvStore.open`` and nori-wal read.

What is copied (the set is chosen at one instant, the *backup point*):

* From a store open in this process (:func:`backup`): the store's compaction
  lock is held from the choice to the last byte copied, so no segment is
  deleted meanwhile, and the point is read under the log's I/O lock: every
  sealed segment (immutable once sealed) and the active segment up to its
  logical size at that instant. An append, and a whole atomic batch, is one
  reservation made and published with the GIL held, so that size is never
  inside a record or a batch. The copy holds every write acknowledged before
  the call, and no half batch; writes after the point are not in it.
* From a directory another process may hold (:func:`backup_directory`, what
  ``norikv backup`` does): the segments are listed and each is opened at once,
  so that a compaction by the holder deleting it afterwards changes nothing
  that is read; the sealed ones are copied whole, the last one up to its last
  complete record outside an atomic batch left open (read as recovery reads
  it). When a segment disappears before it is opened, or a compaction installs
  one while the directory is read, it lists again. Every such listing is a
  state the holder's crash-safe compaction could leave, so the copy replays to
  a state the holder had at some instant after the call began.

Incremental: ``DEST/BACKUP.json`` lists what the last backup copied, with
each sealed segment's size and the identity of its source file (device,
inode, mtime). A sealed segment whose name, size and source identity match,
and whose copy in DEST still has that size and the same CRC32C of its last
64 KiB, is hard-linked from the old backup instead of copied. Sealed
segments never change and compaction writes new files (new inodes) under new
ids, so a match is the same bytes.

Crash safety: the new backup is built in ``.<DEST name>.norikv-backup-tmp``
next to DEST, every file and directory fsynced, then swapped with DEST in one
step (Linux ``renameat2(RENAME_EXCHANGE)``), the old backup removed after.
Where the exchange is unavailable, DEST is renamed to
``.<DEST name>.norikv-backup-old``, the new one renamed into place and the old
one removed; a crash between the two renames leaves DEST missing and the old
backup at that name, and the next backup (or :func:`recover_leftovers`) puts
it back. Either way DEST is, at every instant, the old backup or the new one.

``dest`` may also be a binary file object: the segments are written to it as
an uncompressed tar stream (``wal/NNNNNN.wal`` members), the CLI's ``-``.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import tarfile
import time
from collections.abc import Callable
from typing import IO, Any, NamedTuple

from norikv import _options
from norikv._engine import crc32c, scan_segment, segment_name
from norikv.errors import ClosedError, NoriError
from norikv.inspect import segment_files

__all__ = ["backup", "backup_directory", "recover_leftovers", "MANIFEST"]

MANIFEST = "BACKUP.json"
_TAIL = 64 << 10
_RETRIES = 50
_CHUNK = 8 << 20
# copy_file_range refused (another file system, an old kernel): read and write instead
_NO_COPY_RANGE = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP)


class _Seg(NamedTuple):
    name: str
    size: int  # bytes to back up
    sealed: bool
    file: IO[bytes]  # opened when chosen: a deletion afterwards changes nothing we read


def _step(name: str) -> None:
    """A point between two steps of a backup (tests kill the process here)."""


# ------------------------------------------------------------------ choosing


def backup(store: Any, dest: str | os.PathLike[str] | IO[bytes], *, incremental: bool = True) -> dict[str, Any]:
    """KvStore.backup: see the module docstring. Returns figures:
    ``segments``, ``bytes`` (of the backup), ``copied_bytes``,
    ``reused_segments`` (hard-linked from the previous backup), ``seconds``."""
    t0 = time.perf_counter()
    _check_dest(dest, store.path, incremental)
    segs: list[_Seg] = []
    try:
        with store._compact_lock:  # no compaction (and no close) until the copy is done
            if store.closed:
                raise ClosedError("the KvStore is closed")
            point = store._backup_point()  # {id: logical size}, under the log's I/O lock
            last = max(point)
            for seg, size in sorted(point.items()):
                name = segment_name(seg)
                segs.append(_Seg(name, size, seg != last, open(os.path.join(store.wal.dir, name), "rb")))
            figures = _write(segs, dest, incremental, os.path.abspath(store.path))
    finally:
        for s in segs:
            s.file.close()
    figures["seconds"] = time.perf_counter() - t0
    return figures


def backup_directory(
    path: str | os.PathLike[str], dest: str | os.PathLike[str] | IO[bytes], *, incremental: bool = True
) -> dict[str, Any]:
    """A backup of the store directory ``path`` without its lock (another
    process may hold it and write): see the module docstring."""
    t0 = time.perf_counter()
    root = os.fsdecode(path)
    _check_dest(dest, root, incremental)
    for _ in range(_RETRIES):
        segs = _pin_segments(root)
        if segs is None:
            continue  # a compaction deleted or installed a segment meanwhile: again
        try:
            figures = _write(segs, dest, incremental, os.path.abspath(root))
        finally:
            for s in segs:
                s.file.close()
        figures["seconds"] = time.perf_counter() - t0
        return figures
    raise NoriError(f"{root}: segments kept disappearing (compactions) while they were listed; try again")


def _pin_segments(root: str) -> list[_Seg] | None:
    """The segments of the store at ``root``, each opened (so the holder's
    compaction can delete it without changing what is read), the last one up
    to its last complete record outside an open atomic batch; None when a
    compaction changed the directory while it was listed."""
    segs: list[_Seg] = []
    ok = False
    try:
        listing = segment_files(root)
        if not listing:
            raise NoriError(f"{root}: no log segments to back up")
        for _, p in listing:
            f = open(p, "rb")
            segs.append(_Seg(os.path.basename(p), os.fstat(f.fileno()).st_size, True, f))
        last_id, last = listing[-1]
        # A segment a compaction installed while the directory was read may be
        # missing from the listing (readdir is not atomic): list again.
        have = {seg for seg, _ in listing}
        if any(seg <= last_id and seg not in have for seg, _ in segment_files(root)):
            return None
        info = scan_segment(last, last_id, None, final=True)
        end = info["batch_open"] if info["batch_open"] is not None else info["end"]
        segs[-1] = segs[-1]._replace(size=end, sealed=False)
        ok = True
        return segs
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
        return None
    finally:
        if not ok:
            for s in segs:
                s.file.close()


_BACKUP_OPTIONS: dict[str, _options.Spec] = {"incremental": _options.Bool()}


def _check_dest(dest: object, source: str, incremental: object) -> None:
    """The checks of a backup's arguments, before anything is written."""
    _options.check_options(_BACKUP_OPTIONS, {"incremental": incremental})
    if hasattr(dest, "write"):
        return
    if not isinstance(dest, (str, bytes, os.PathLike)):
        raise TypeError(f"dest must be a path or a binary file object, not {type(dest).__name__}")
    d = os.path.realpath(os.fsdecode(dest))
    src = os.path.realpath(source)
    if d == src or d.startswith(src + os.sep) or src.startswith(d + os.sep):
        raise ValueError(f"dest {d!r} must be outside the store {src!r} (and not contain it)")
    if os.path.lexists(d) and not os.path.isdir(d):
        raise FileExistsError(errno.EEXIST, "dest exists and is not a directory", d)
    if os.path.isdir(d) and os.listdir(d) and not os.path.isfile(os.path.join(d, MANIFEST)):
        raise FileExistsError(errno.EEXIST, f"dest is a non-empty directory without {MANIFEST}: not a backup", d)


# ------------------------------------------------------------------ writing


def _write(segs: list[_Seg], dest: Any, incremental: bool, source: str) -> dict[str, Any]:
    if hasattr(dest, "write"):
        return _write_tar(segs, dest)
    return _write_dir(segs, os.path.realpath(os.fsdecode(dest)), incremental, source)


def _write_tar(segs: list[_Seg], out: IO[bytes]) -> dict[str, Any]:
    total = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for d in ("wal",):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
            tar.addfile(info)
        for s in segs:
            s.file.seek(0)
            info = tarfile.TarInfo(f"wal/{s.name}")
            info.size, info.mode, info.mtime = s.size, 0o644, int(os.fstat(s.file.fileno()).st_mtime)
            tar.addfile(info, s.file)  # reads exactly s.size bytes (OSError if the file is shorter)
            total += s.size
    return {"segments": len(segs), "bytes": total, "copied_bytes": total, "reused_segments": 0}


def _identity(f: IO[bytes]) -> list[int]:
    st = os.fstat(f.fileno())
    return [st.st_dev, st.st_ino, st.st_mtime_ns]


def _tail_crc(path: str, size: int) -> int:
    with open(path, "rb") as f:
        f.seek(max(0, size - _TAIL))
        return crc32c(f.read(_TAIL))


def _old_manifest(dest: str) -> dict[str, Any]:
    try:
        with open(os.path.join(dest, MANIFEST), "rb") as f:
            m = json.load(f)
        return {e["name"]: e for e in m.get("segments", []) if e.get("sealed")}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _reusable(old: dict[str, Any], s: _Seg, ident: list[int], dest: str) -> bool:
    e = old.get(s.name)
    if e is None or e.get("size") != s.size or e.get("source") != ident:
        return False
    copy = os.path.join(dest, "wal", s.name)
    try:
        return os.path.getsize(copy) == s.size and _tail_crc(copy, s.size) == e.get("tail_crc32c")
    except OSError:
        return False


def _write_dir(segs: list[_Seg], dest: str, incremental: bool, source: str) -> dict[str, Any]:
    parent, base = os.path.split(dest)
    staging = os.path.join(parent, f".{base}.norikv-backup-tmp")
    recover_leftovers(dest)
    if os.path.lexists(staging):
        shutil.rmtree(staging)  # a backup that died before its swap
    old = _old_manifest(dest) if incremental else {}
    os.makedirs(os.path.join(staging, "wal"))
    entries, copied, reused = [], 0, 0
    try:
        for s in segs:
            _step("segment")
            target = os.path.join(staging, "wal", s.name)
            ident = _identity(s.file)
            if s.sealed and _reusable(old, s, ident, dest):
                try:
                    os.link(os.path.join(dest, "wal", s.name), target)
                    reused += 1
                except OSError:
                    _copy(s.file, target, s)
                    copied += s.size
            else:
                _copy(s.file, target, s)
                copied += s.size
            entry = {"name": s.name, "size": s.size, "sealed": s.sealed}
            if s.sealed:
                entry["source"] = ident
                entry["tail_crc32c"] = _tail_crc(target, s.size)
            entries.append(entry)
        manifest = {
            "format": 1,
            "source": source,
            "created_unix": time.time(),
            "segments": entries,
        }
        _step("manifest")
        _write_file(os.path.join(staging, MANIFEST), json.dumps(manifest, indent=1).encode() + b"\n")
        _fsync_dir(os.path.join(staging, "wal"))
        _fsync_dir(staging)
        _step("swap")
        _swap(staging, dest)
    except BaseException:
        # DEST is untouched, or (the two-rename swap failed between its
        # renames) is put back from the old backup.
        shutil.rmtree(staging, ignore_errors=True)
        recover_leftovers(dest)
        raise
    return {
        "segments": len(segs),
        "bytes": sum(s.size for s in segs),
        "copied_bytes": copied,
        "reused_segments": reused,
    }


def _copy(src: IO[bytes], target: str, s: _Seg) -> None:
    """Exactly s.size bytes of src into a new file target, fsynced."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        done = 0
        sfd = src.fileno()
        while done < s.size:
            n = min(_CHUNK, s.size - done)
            try:
                k = os.copy_file_range(sfd, fd, n, done, done)
            except (AttributeError, OSError) as exc:
                if isinstance(exc, OSError) and exc.errno not in _NO_COPY_RANGE:
                    raise
                data = os.pread(sfd, n, done)
                k = len(data)
                if k:
                    os.pwrite(fd, data, done)
            if k == 0:
                raise NoriError(f"{s.name}: shorter ({done} bytes) than the {s.size} bytes to back up")
            done += k
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ the swap

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
#: False: use the two-rename fallback even where renameat2 exists (tests).
_use_exchange = True
_renameat2: Callable[..., int] | None | bool = False  # False: not looked up yet


def _exchange(a: str, b: str) -> bool:
    """Atomically swaps the entries a and b (Linux renameat2); False where
    that is not available (no symbol, kernel or file system support)."""
    global _renameat2
    if not _use_exchange:
        return False
    if _renameat2 is False:
        try:
            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            _renameat2 = fn
        except (AttributeError, OSError):
            _renameat2 = None
    if _renameat2 is None:
        return False
    assert callable(_renameat2)
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), b)


def _swap(staging: str, dest: str) -> None:
    parent, base = os.path.split(dest)
    if not os.path.lexists(dest):
        os.rename(staging, dest)
        _fsync_dir(parent)
        return
    if _exchange(staging, dest):
        _fsync_dir(parent)
        _step("swapped")
        shutil.rmtree(staging)  # now the old backup
        return
    old = os.path.join(parent, f".{base}.norikv-backup-old")
    if os.path.lexists(old):
        shutil.rmtree(old)
    os.rename(dest, old)
    _fsync_dir(parent)
    _step("between-renames")
    os.rename(staging, dest)
    _fsync_dir(parent)
    _step("swapped")
    shutil.rmtree(old)


def recover_leftovers(dest: str | os.PathLike[str]) -> None:
    """After a backup into ``dest`` died: puts the old backup back when the
    two-rename swap stopped between its renames (DEST missing), and removes
    a leftover of a completed swap. The staging directory of an unfinished
    backup is removed by the next backup."""
    d = os.path.realpath(os.fsdecode(dest))
    parent, base = os.path.split(d)
    old = os.path.join(parent, f".{base}.norikv-backup-old")
    if not os.path.lexists(old):
        return
    if os.path.lexists(d):
        shutil.rmtree(old)
    else:
        os.rename(old, d)
        _fsync_dir(parent)
