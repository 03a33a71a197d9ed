# The store's limits (max_keys, max_bytes): the one rule puts and batches
# (batch.pyx) check through, as functions of the KvStore.

from norikv.errors import StoreFullError


cdef int _over_limits(KvStore self, Py_ssize_t new_keys, int64_t delta) except -1:
    """Which limit a change of the map by ``new_keys`` keys and ``delta``
    bytes would pass: 1 max_keys, 2 max_bytes, 0 none. Only growth is
    refused: a change that shrinks the store passes, also when it is over
    its limits already (reopened with lower ones)."""
    if new_keys > 0 and self.max_keys and self._count() + new_keys > self.max_keys:
        return 1
    if delta > 0 and self.max_bytes and <int64_t>self.live_bytes + delta > <int64_t>self.max_bytes:
        return 2
    return 0


cdef int _check_room(KvStore self, Py_ssize_t new_keys, int64_t delta, str what) except -1:
    """StoreFullError when ``what`` (a put, a batch) passes a limit (_over_limits)."""
    cdef int over = _over_limits(self, new_keys, delta)
    if over == 1:
        raise StoreFullError(f"the {what} would exceed max_keys={self.max_keys}")
    if over == 2:
        raise StoreFullError(f"the {what} would exceed max_bytes={self.max_bytes}")
    return 0


cdef int _room_for_put(KvStore self, bytes key, Py_ssize_t vlen, bint may_purge) except -1:
    """_check_room for a put of ``key`` with a value of vlen bytes. With
    may_purge, keys whose TTL has passed (they count until purged) are
    dropped first when it would not fit."""
    cdef int64_t old = self._old_size(key)
    cdef bint new = old < 0
    cdef int64_t delta = vlen + (PyBytes_GET_SIZE(key) if new else -old)
    if may_purge and self._heap and _over_limits(self, new, delta):
        self._purge_expired()
        return _room_for_put(self, key, vlen, False)
    return _check_room(self, new, delta, "put")
