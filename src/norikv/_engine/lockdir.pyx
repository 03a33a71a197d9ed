# Taking a log directory: exclusively (a lone norikv.wal.Wal), shared with
# the other processes that have the store open (a KvStore: shared.pyx), or
# without a lock (read-only); and giving it back when the last one leaves.

from posix.fcntl cimport open as c_open, O_RDONLY, O_RDWR, O_CREAT, O_CLOEXEC
from posix.stat cimport struct_stat, fstat

import os
import weakref

from norikv.errors import LockError, io_error


cdef int _open_directory(_WalCore self, object config, bint shared, bint readonly,
                         object lock_timeout) except -1:
    """_WalCore._open."""
    cdef struct_stat st
    policy = config.fsync_policy
    self.config = config
    self.dir = os.fsdecode(config.dir)
    self.max_segment_size = config.max_segment_size
    self.max_value_size = config.max_value_size
    self.policy = policy.code
    self.small_folios = self.policy == POLICY_ALWAYS
    self.writeback_step = max(config.writeback_bytes, _FOLIO_MAX) if (
        self.policy == POLICY_OS and config.writeback_bytes) else 0
    self.window = float(policy.window)
    self.preallocate = bool(config.preallocate)
    self.readonly = readonly
    self.pid = os.getpid()
    self.lock_timeout = -1.0 if lock_timeout is None else float(lock_timeout)
    self.dir_fd = c_open(os.fsencode(self.dir), O_RDONLY | O_CLOEXEC)
    if self.dir_fd < 0:
        raise io_error(errno, self.dir, "open directory")
    fstat(self.dir_fd, &st)
    key = (st.st_dev, st.st_ino)
    if _dir_owner(key) is not None:
        self._release(False)
        raise LockError(EWOULDBLOCK, "the directory is already open in this process", self.dir)
    if readonly:
        try:
            _readonly_open(self)
        except BaseException:
            self._release(False)
            raise
        _register(self, key)
        return 0
    lock_path = os.path.join(self.dir, "LOCK")
    self.lock_fd = c_open(os.fsencode(lock_path), O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
    if self.lock_fd < 0:
        err = errno
        self._release(False)
        raise io_error(err, lock_path, "open lock file")
    if shared:
        try:
            _shared_open(self, lock_path)
        except BaseException:
            self._release(False)
            raise
        _write_lock_file_pid(self.lock_fd)
        _register(self, key)
        return 0
    err = nk_lock_file(self.lock_fd)
    if err:
        self._release(False)
        if err == EWOULDBLOCK:
            pid = _lock_file_pid(lock_path)
            exc = LockError(err, "the directory is locked by another process"
                            + (f" (pid {pid})" if pid is not None else ""), self.dir)
            exc.pid = pid
            raise exc
        raise io_error(err, lock_path, "flock")
    _write_lock_file_pid(self.lock_fd)
    _register(self, key)
    return 0

cdef int _register(_WalCore self, object key) except -1:
    _open_dirs[key] = weakref.ref(self)
    self.dir_key = key
    self.fork_gen = _fork_generation
    self.closed = False
    self.busy = 0
    return 0


cdef int _close_shared(_WalCore self) except -1:
    """close() of one of the processes sharing the log: its writes are
    made durable; the last one to leave seals the active segment."""
    cdef bint last = False
    try:
        last = _last_user(self)
        if self.failed is None and not self.shm.poisoned:
            if last:
                _writer_lock(self)
                self._lock_io()
                try:
                    self.busy = 1
                    _finalize_active(self)
                finally:
                    self._unlock_io()
                    _writer_unlock(self)
            else:
                _leave(self)
                _sync_shared(self)
    finally:
        self._lock_io()
        try:
            if self.shm_fd >= 0:
                flock(self.shm_fd, LOCK_UN)
            self._release(True)
        finally:
            self._unlock_io()
    return 0
