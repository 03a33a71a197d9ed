# limits.pyx: the one limit rule: put (_room_for_put) and batches (batch.pyx) check through it.

cdef int _over_limits(KvStore self, Py_ssize_t new_keys, int64_t delta) except -1
cdef int _check_room(KvStore self, Py_ssize_t new_keys, int64_t delta, str what) except -1
cdef int _room_for_put(KvStore self, bytes key, Py_ssize_t vlen, bint may_purge) except -1
