# logdir.pyx: segment names and listing (segment_name, segment_id_of,
# list_segments: def functions), and the registry of open directories.

# (st_dev, st_ino) of each log directory open in this process -> weak
# reference to its Wal: a second open of it in this process is a LockError.
cdef dict _open_dirs


# LOCK's content: the holder's pid (information for LockError; the flock is the lock)
cdef void _write_lock_file_pid(int fd) noexcept


# unlink(2) without the GIL: 0 or the errno
cdef int _unlink(str path) noexcept
# the same, raising unless it succeeded or the file was already gone
cdef int _unlink_present(str path) except -1
