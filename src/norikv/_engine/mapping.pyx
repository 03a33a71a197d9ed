# The bodies of KvStore's methods beyond its core: the rest of the
# MutableMapping API (pop, popitem, setdefault, update, clear), ttl() and
# backup(). store.pyx declares the methods, each calling its function here.

from collections.abc import Mapping


cdef object _pop(KvStore self, key, default):
    cdef bytes k = _as_bytes(key, "key")
    v = self._take(k, True)
    if v is not None:
        return v
    if default is _MISSING:
        raise KeyError(k)
    return default


cdef object _popitem(KvStore self):
    self._check_open()
    self._purge_expired()
    while self._count():
        k = _kd_last(self._kd) if self._disk else next(reversed(self._data))
        v = self._take(k, True)
        if v is not None:
            return k, v
    raise KeyError("popitem(): the store is empty")


cdef object _setdefault(KvStore self, key, default):
    cdef bytes k = _as_bytes(key, "key")
    d = _disk_live(self, k) if self._disk else self._live(k)
    if d is not None:
        return d
    d = _as_bytes(default, "value")
    self.put(k, d)
    return d


cdef object _update(KvStore self, other, dict kwargs):
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


cdef object _clear(KvStore self):
    self._check_open()
    self._purge_expired()
    ops = [(k, None, -1, None) for k in (_kd_keys(self._kd) if self._disk else self._data)]
    if ops:
        _write_batch(self, ops)


cdef object _ttl(KvStore self, key):
    cdef bytes k = _as_bytes(key, "key")
    self._check_open()
    if self._old_size(k) < 0 or self._expired(k):
        raise KeyError(k)
    d = self._expiry.get(k)
    if d is None:
        return None
    return max(0, <int64_t>d - _now_ms()) / 1000.0


cdef object _backup(KvStore self, dest, incremental):
    from norikv.backup import backup
    return backup(self, dest, incremental=incremental)


cdef object _backup_point(KvStore self):
    self._check_open()
    self.wal._begin_exclusive()
    try:
        return self.wal._segment_sizes()
    finally:
        self.wal._end_exclusive()
