# lockdir.pyx: taking a log directory (exclusive, shared, read-only) and giving it back.

cdef int _open_directory(_WalCore self, object config, bint shared, bint readonly,
                         object lock_timeout) except -1
cdef int _register(_WalCore self, object key) except -1
cdef int _close_shared(_WalCore self) except -1
