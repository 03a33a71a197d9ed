# KvStore's methods beyond the core of store.pyx: the rest of the
# MutableMapping API (pop, popitem, setdefault, update, clear), ttl() and
# backup(). They are functions of the store written into KvStore's type dict
# (_add_methods), exactly where Cython puts a `def` method of the class
# (a binding cyfunction), so store.pyx stays the store's core.

from collections.abc import Mapping


cdef object _MISSING = object()


def _kv_pop(KvStore self, key, default=_MISSING):
    """pop(key[, default]): deletes ``key`` and returns the value it had;
    ``default`` when it is absent (KeyError without one). Atomic: the value
    returned is the one the tombstone replaced."""
    cdef bytes k = _as_bytes(key, "key")
    v = self._take(k)
    if v is not None:
        return v
    if default is _MISSING:
        raise KeyError(k)
    return default


def _kv_popitem(KvStore self):
    """Deletes the most recently inserted live key and returns ``(key,
    value)`` (LIFO, like dict); KeyError when the store is empty."""
    self._check_open()
    self._purge_expired()
    while self._data:
        k = next(reversed(self._data))
        v = self._take(k)
        if v is not None:
            return k, v
    raise KeyError("popitem(): the store is empty")


def _kv_setdefault(KvStore self, key, default=None):
    """The value of ``key``; when it is absent, stores ``default`` (bytes-like;
    None is a TypeError, values cannot be None) and returns it. Not atomic
    against a put of the same key in another thread: the later write wins."""
    cdef bytes k = _as_bytes(key, "key")
    cdef PyObject *v = self._live(k)
    if v != NULL:
        return <object>v
    d = _as_bytes(default, "value")
    self.put(k, d)
    return d


def _kv_update(KvStore self, other=(), /, **kwargs):
    """update([other], **kw) as dict.update, written as one atomic batch:
    every pair or none (a bad key or value raises TypeError/ValueError, a
    limit StoreFullError, before anything is written). Keyword names are
    str, so ``**kw`` is a TypeError for a bytes store (see norikv.codecs)."""
    b = WriteBatch(self)
    if isinstance(other, Mapping):
        for k in other:
            b.put(k, other[k])
    elif hasattr(other, "keys"):
        for k in other.keys():
            b.put(k, other[k])
    else:
        for k, v in other:
            b.put(k, v)
    for k, v in kwargs.items():
        b.put(k, v)
    b.write()


def _kv_clear(KvStore self):
    """Deletes every live key, as one atomic batch of tombstones (the log
    shrinks at the next compaction). Keys written by other threads while it
    runs may survive it."""
    self._check_open()
    self._purge_expired()
    ops = [(k, None, -1, None) for k in self._data]
    if ops:
        _write_batch(self, ops)


def _kv_ttl(KvStore self, key):
    """The remaining time to live of ``key`` in seconds (a float, 0.0 at
    the last instant), None when it has no TTL; KeyError when it is absent
    or expired."""
    cdef bytes k = _as_bytes(key, "key")
    if self._live(k) == NULL:
        raise KeyError(k)
    d = self._expiry.get(k)
    if d is None:
        return None
    return max(0, <int64_t>d - _now_ms()) / 1000.0


def _kv_backup(KvStore self, dest, *, incremental=True):
    """Copies the store, live, into the directory ``dest`` (or as a tar
    stream into a binary file object): every write acknowledged before the
    call and no half batch; a second backup into the same ``dest`` copies
    only what changed; a crash leaves ``dest`` the old backup or the new one.
    Holds the compaction lock meanwhile (a compaction, and close(), wait for
    it); reads and writes go on. Returns figures. See :mod:`norikv.backup`."""
    from norikv.backup import backup
    return backup(self, dest, incremental=incremental)


def _kv__backup_point(KvStore self):
    """{segment id: logical size} of the log at one instant between two
    appends (under the log's I/O lock, so never inside a rotation)."""
    self._check_open()
    self.wal._begin_exclusive()
    try:
        return self.wal._segment_sizes()
    finally:
        self.wal._end_exclusive()


cdef int _add_methods(type cls, list funcs) except -1:
    """Writes each ``_kv_<name>`` function into cls's type dict as ``name``."""
    cdef dict d = <dict>(<PyTypeObject *>cls).tp_dict
    for f in funcs:
        name = f.__name__[len("_kv_"):]
        f.__name__ = name
        f.__qualname__ = f"{cls.__name__}.{name}"
        d[name] = f
    PyType_Modified(cls)
    return 0


_add_methods(KvStore, [_kv_pop, _kv_popitem, _kv_setdefault, _kv_update, _kv_clear, _kv_ttl, _kv_backup,
                       _kv__backup_point])
