# ttl.pyx: deadlines, pinning relative TTLs, purging expired keys.

cdef Py_ssize_t _purge_expired(KvStore store) except -1
