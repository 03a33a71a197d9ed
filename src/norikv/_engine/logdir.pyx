# A log directory: the names of its segments, which of its entries are
# segments, the registry of the directories open in this process, and the
# pid its lock holder writes into LOCK.

import os

from posix.unistd cimport unlink

from norikv.errors import NoriIOError, io_error


cdef int _unlink(str path) noexcept:
    """unlink(2) of path without the GIL; 0 or the errno. Deleting a large
    segment frees its extents (33 ms for 128 MiB on this VM, with discard):
    with the GIL held, every thread of the process waited."""
    cdef bytes b = os.fsencode(path)
    cdef const char *c = b
    cdef int err = 0
    with nogil:
        if unlink(c) != 0:
            err = errno
    return err


cdef int _unlink_present(str path) except -1:
    """_unlink of a file that may already be gone (ENOENT is not an error);
    any other failure raises."""
    cdef int err = _unlink(path)
    if err != 0 and err != ENOENT:
        raise io_error(err, path, "unlink")
    return 0


def segment_name(uint64_t seg_id):
    """File name of a segment: the id as a 6-digit (or longer) decimal plus .wal
    (nk_segment_name, which the background fsync uses without the GIL)."""
    cdef char buf[32]
    nk_segment_name(buf, sizeof(buf), seg_id)
    return buf.decode("ascii")


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
                raise io_error(exc.errno or EIO, entry.path, "stat") from exc
            if not regular:
                kind = "a directory" if entry.is_dir() else "not a regular file"
                raise NoriIOError(EISDIR if entry.is_dir() else EINVAL,
                                  f"{entry.name} has a segment's name but is {kind}; "
                                  "move it out of the log directory", entry.path)
            ids.append(seg)
    ids.sort()
    return ids


# (st_dev, st_ino) of each directory open in this process -> weak reference to its Wal
_open_dirs = {}


def _dir_owner(key):
    """The live Wal holding directory `key` in this process, or None."""
    ref = _open_dirs.get(key)
    return ref() if ref is not None else None


def _detach_inherited_wals():
    """Run right after fork() in the child (runtime.pyx's at-fork hook): every
    Wal the parent had open is detached (_WalCore._detach_inherited) and
    forgotten by the registry, then its ``_after_fork_in_child`` method (the
    Python side: the background thread) is called."""
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


# The pid of the process holding the lock, written into LOCK after the flock
# is taken (as LevelDB-style stores do): what LockError names, on every
# platform. LOCK is norikv's own file (nori-wal has no lock and ignores it);
# the flock stays the lock, the pid is information only.

cdef void _write_lock_file_pid(int fd) noexcept:
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"%d\n" % os.getpid(), 0)
    except OSError:
        pass                        # best effort: never fails an open (a full disk, say)


def _lock_file_pid(path):
    """The pid written in the lock file ``path``, or None (absent, empty,
    being written, not a pid)."""
    try:
        with open(path, "rb") as f:
            text = f.read(32)
    except OSError:
        return None
    try:
        pid = int(text.strip() or b"x")
    except ValueError:
        return None
    return pid if pid > 0 else None
