# batch.pyx: WriteBatch and the atomic write of a batch.

cdef class WriteBatch:
    cdef KvStore _store          # None once written or discarded
    cdef list _ops               # [(key, value or None, deadline or -1, compression)]
    cdef bint _done

    cdef int _check(self) except -1
    cdef int _check_value(self, bytes value) except -1


# Writes ops as one atomic batch and applies them to the store's map, all or
# none (KvStore._apply_batch). Returns the number of records written.
cdef Py_ssize_t _write_batch(KvStore store, list ops) except -1
# KvStore._check_room for a batch whose net effect on the map is `final`.
cdef int _check_batch_room(KvStore store, dict final) except -1
