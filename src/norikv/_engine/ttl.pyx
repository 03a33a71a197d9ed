# TTL: the deadline of a put's ttl=, pinning relative TTLs read from another
# nori-wal user's log, purging the keys whose deadline has passed.

from heapq import heapify, heappop


def _deadline(ttl):
    """The absolute deadline (Unix ms) of a ``ttl`` in seconds from now."""
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool):
        raise TypeError(f"ttl must be a number of seconds, not {type(ttl).__name__}")
    if not ttl > 0:
        raise ValueError(f"ttl must be > 0 seconds, got {ttl!r}")
    if ttl > 1e15:   # deadlines are int64 Unix ms; 1e15 s is ~31 million years
        raise ValueError(f"ttl must be at most 1e15 seconds, got {ttl!r}")
    return _now_ms() + <int64_t>(ttl * 1000.0 + 0.999999)


def _pin_relative_ttls(KvStore store, dict relative):
    """The last step of KvStore.open. A relative TTL written by another
    nori-wal user counts from the first open that replays it: each key whose
    value comes from such a record (the loader's ``relative``) is written
    again with that deadline as an absolute one (TTL_ABS), so that a restart
    neither starts its clock again nor brings it back once expired. The
    deadline is written as it is (a huge TTL saturates to DEADLINE_MAX,
    beyond what ``ttl=`` takes). A key that expired before it was pinned
    (during replay, or during this loop) gets a tombstone instead, so a later
    open cannot revive it."""
    for key, deadline in relative.items():
        value = store.get(key)
        # one op each: a plain record (a put, or a tombstone for None)
        store._apply_batch([(key, value, deadline if value is not None else -1, None)])


cdef Py_ssize_t _purge_expired(KvStore store) except -1:
    """KvStore._purge_expired: drops keys whose deadline has passed (their
    records already say so); the heap holds (deadline, key) entries, stale
    ones (a key rewritten since) skipped."""
    cdef int64_t now
    cdef PyObject *cur
    cdef Py_ssize_t n = 0
    now = _now_ms()
    while store._heap and <int64_t>store._heap[0][0] <= now:
        deadline, key = heappop(store._heap)
        cur = PyDict_GetItem(store._expiry, key)
        if cur != NULL and <int64_t>(<object>cur) == <int64_t>deadline:
            store._remove_key(key)
            n += 1
    if len(store._heap) > 2 * len(store._expiry) + 1024:
        store._heap = [(d, k) for k, d in store._expiry.items()]
        heapify(store._heap)
    return n
