# Atomic batches: WriteBatch collects puts and deletes; _write_batch writes
# them as one run of records whose batch flags make recovery apply all of
# them or none (record.h), then applies them to the map.

cimport cython
from cpython.bytes cimport PyBytes_GET_SIZE

from norikv.errors import ClosedError


@cython.auto_pickle(False)
cdef class WriteBatch:
    """Puts and deletes applied together: all of them or none, in memory and
    across a crash. Use as ``with store.batch() as b: ...``; leaving the block
    with an exception discards the batch."""

    def __init__(self, store):
        if not isinstance(store, KvStore):
            raise TypeError("a WriteBatch comes from store.batch() on an open KvStore")
        self._store = store
        self._ops = []
        self._done = False

    cdef int _check(self) except -1:
        if self._done:
            raise ClosedError("the batch was already written or discarded")
        return 0

    cdef int _check_value(self, bytes value) except -1:
        """What put checks of a value before anything is written: ClosedError,
        or ValueError over max_value_size."""
        self._store._check_open()
        return _check_value_size(value, self._store.max_value_size)

    def put(self, key, value, *, ttl=None, compression=None, expires_at_ms=None):
        """Adds a put of ``key`` = ``value`` to the batch. ``ttl`` (seconds
        from now) or ``expires_at_ms`` (an absolute deadline, Unix ms, an int
        >= 0; beyond DEADLINE_MAX it saturates: practically never) makes the
        key expire, as KvStore.put's ``ttl`` does; not both."""
        self._check()
        k = _as_bytes(key, "key")
        v = _as_bytes(value, "value")
        self._check_value(v)
        if expires_at_ms is not None:
            if ttl is not None:
                raise TypeError("pass ttl or expires_at_ms, not both")
            if isinstance(expires_at_ms, bool) or not isinstance(expires_at_ms, int):
                raise TypeError(f"expires_at_ms must be an int, not {type(expires_at_ms).__name__}")
            if expires_at_ms < 0:
                raise ValueError(f"expires_at_ms must be >= 0 (Unix ms), got {expires_at_ms!r}")
            deadline = min(expires_at_ms, DEADLINE_MAX)
        else:
            deadline = _deadline(ttl) if ttl is not None else -1
        if compression is not None:
            _compression_enum().parse(compression)
        self._ops.append((k, v, deadline, compression))

    def delete(self, key):
        self._check()
        self._ops.append((_as_bytes(key, "key"), None, -1, None))

    def clear(self):
        self._check()
        self._ops.clear()

    def __len__(self):
        return len(self._ops)

    def write(self):
        """Writes the batch atomically (also done by leaving the with block)."""
        self._check()
        self._done = True
        # A finished batch lets go of its store, so that a batch variable left
        # in scope does not keep a dropped store (and its lock) alive.
        store, ops = self._store, self._ops
        self._store, self._ops = None, []
        if ops:
            _write_batch(store, ops)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.write()
        else:
            self._done = True
            self._store, self._ops = None, []


cdef Py_ssize_t _write_batch(KvStore store, list ops) except -1:
    """One contiguous run (_Run, atomic: a batch of one op is a plain
    record), written under the append contract (log.pxd), then the map."""
    cdef _Run run = _Run(len(ops), True)
    cdef dict final = None
    cdef bytes k, stored
    cdef uint32_t flags
    cdef int64_t deadline
    cdef uint64_t total, loc = 0
    cdef uint8_t *p
    cdef PyObject *cur
    cdef Py_ssize_t i = 0
    store._check_open()
    store._purge_expired()
    for k, v, deadline, compression in ops:
        if v is None:
            run.add(k, b"", NK_FLAG_TOMBSTONE, 0, 0, 0)
            continue
        flags = NK_FLAG_TTL | NK_FLAG_TTL_ABS if deadline >= 0 else 0
        stored = v
        if store._compression or compression is not None:
            stored = store._encode_value(v, compression, &flags)
        run.add(k, stored, flags, deadline if deadline >= 0 else 0, 0, 0)
    total = run.size()
    if store.max_keys or store.max_bytes:
        final = {}
        for k, v, _, _ in ops:
            final[k] = v
        _check_batch_room(store, final)
    p = store.wal._reserve(total)
    try:
        if final is not None:
            _check_batch_room(store, final)     # other threads (processes) may have run in _reserve
        if store._disk:
            loc = store._locate(total)
    except BaseException:
        store.wal._unreserve()
        raise
    run.encode(p)
    store.wal._commit(total)
    for k, v, deadline, _ in ops:
        if store._disk:
            if v is None:
                store._remove_key(k)
            else:
                store._disk_set(k, PyBytes_GET_SIZE(v), loc, deadline)
            loc += run.length(i)
            i += 1
            continue
        cur = PyDict_GetItem(store._data, k)
        if v is None:
            if cur != NULL:
                store._unset(k, <object>cur)
            else:
                store._drop_pending(k)      # (pending since _check_open: a read in _reserve)
        else:
            store._set(k, v, cur, deadline)
    store._after_write()
    return run.n


cdef int _check_batch_room(KvStore store, dict final) except -1:
    """Allocates nothing: it also runs between _reserve and _commit."""
    cdef Py_ssize_t new_keys = 0
    cdef int64_t delta = 0
    cdef int64_t cur
    for k, v in final.items():
        cur = store._old_size(k)
        if v is None:
            if cur >= 0:
                new_keys -= 1
                delta -= PyBytes_GET_SIZE(k) + cur
        elif cur < 0:
            new_keys += 1
            delta += PyBytes_GET_SIZE(k) + PyBytes_GET_SIZE(v)
        else:
            delta += PyBytes_GET_SIZE(v) - cur
    return _check_room(store, new_keys, delta, "batch")
