# Snapshots of a store's map for range() and items(): the map as it was at
# one instant, however long the walk takes and whatever other threads and
# processes write meanwhile.
#
# Taking one copies nothing. While a snapshot is live, every change of the
# map first hands it the changed key's state before the change (its
# "pre-image": the value object, or with values="disk" the stored bytes read
# from the log), once per key and only for keys the walk has yet to reach
# (_note_change). A walk takes its keys a chunk at a time from the range
# index, as the index is now, adds the keys the snapshot has a pre-image of
# (those deleted since), and reads each key's pre-image if it has one, the map
# otherwise: a key without one has not changed since the instant. A batch is
# applied to the map with the GIL held throughout, so an instant never falls
# inside one. The cost is paid by writes while a walk is live, in proportion
# to what they change ahead of it (LevelDB's snapshots keep old versions the
# same way; an abandoned iterator is freed at once and keeps nothing).

from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE

import weakref

from sortedcontainers import SortedList


cdef uint32_t _RAISE = 0xFFFFFFFF     # a pre-image's kind: its record was damaged (raise at the walk)


cdef class _Snapshot:
    """A KvStore's map at one instant: the iterator range() returns. Walks
    lo <= key < hi in byte order (reverse: descending) and yields (key,
    value) pairs; a key expired at the instant is not yielded."""

    def __cinit__(self, KvStore store, lo, hi, bint reverse):
        store._check_open()         # other processes' writes acknowledged so far are in the map
        self.store = store
        self.lo = lo
        self.hi = hi
        self.reverse = reverse
        self.t0 = _now_ms()
        self.data = store._data
        self.kd = store._kd if store._disk else None
        self.views = store._views if store._disk else None
        self.expiry = store._expiry
        self.undo = {}
        self.fresh = []
        self.want = 32              # chunks grow to _SCAN_CHUNK: a short walk does not fetch 1,024 keys
        self.pending = []
        store._snaps.append(weakref.ref(self))
        self.registered = True

    def __iter__(self):
        return self

    def __next__(self):
        while self.pos >= PyList_GET_SIZE(self.pending):
            if self.done:
                raise StopIteration
            self.pending = self._chunk()
            self.pos = 0
        item = <object>PyList_GET_ITEM(self.pending, self.pos)
        self.pos += 1
        return item

    def close(self):
        """Ends the walk and lets go of what the snapshot kept."""
        self.done = True
        self.pending = []
        self.undo = {}
        self.undo_keys = None
        self._unregister()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    cdef bint _ahead(self, bytes key) except -1:
        """key is in the range and the walk has yet to reach it."""
        if self.lo is not None and key < self.lo or self.hi is not None and key >= self.hi:
            return False
        if self.bound is None:
            return True
        return key < self.bound if self.reverse else key > self.bound

    cdef bint _dead(self, int64_t deadline) noexcept:
        """A deadline (-1: none) had passed at the instant."""
        return 0 <= deadline <= self.t0

    cdef int64_t _map_deadline(self, bytes key) except -2:
        """key's deadline in the snapshot's map (-1: none)."""
        cdef PyObject *d
        if not PyDict_GET_SIZE(<PyObject *>self.expiry):
            return -1
        d = PyDict_GetItem(self.expiry, key)
        return -1 if d == NULL else <int64_t>(<object>d)

    cdef list _map_keys(self):
        return list(self.data) if self.kd is None else _kd_keys(self.kd)

    cdef object _value(self, bytes key):
        """key's value at the instant, or None (absent or expired then)."""
        cdef PyObject *e
        cdef uint32_t kind
        if PyDict_GET_SIZE(<PyObject *>self.undo):
            e = PyDict_GetItem(self.undo, key)
            if e != NULL:
                if <object>e is None:
                    return None
                stored, kind_o, deadline, loc = <tuple>(<object>e)
                if self._dead(deadline):
                    return None
                kind = kind_o
                if kind == _RAISE:
                    raise stored
                if self.kd is None:
                    return stored
                return _unpack(self.store, self.views, loc, stored, kind)
        if self._dead(self._map_deadline(key)):
            return None
        if self.kd is None:
            e = PyDict_GetItem(self.data, key)
            return None if e == NULL else <object>e
        return _kd_value(self.store, self.kd, self.views, key)

    cdef list _keys(self):
        """The keys of the map at the instant, in insertion order (those
        deleted since listed last): keys() and items(). Listing allocates,
        and a garbage collection it sets off may run finalizers, which may
        let other threads in; what they change is in undo."""
        listed = self._map_keys()
        if not PyDict_GET_SIZE(<PyObject *>self.undo) and not PyDict_GET_SIZE(<PyObject *>self.expiry):
            return listed
        out = [k for k in listed if k not in self.undo and not self._dead(self._map_deadline(k))]
        for k, pre in self.undo.items():
            if pre is not None and not self._dead((<tuple>pre)[2]):
                out.append(k)
        return out

    cdef int _unregister(self) except -1:
        cdef list snaps = self.store._snaps
        cdef Py_ssize_t i
        if self.registered:
            self.registered = False
            for i in range(PyList_GET_SIZE(snaps)):
                if (<object>PyList_GET_ITEM(snaps, i))() is self:
                    del snaps[i]
                    break
        return 0

    cdef list _chunk(self):
        """The next chunk's (key, value) pairs, in walking order."""
        cdef KvStore store = self.store
        cdef Py_ssize_t want = self.want
        cdef bint final
        cdef PyObject *e
        store._check_open()         # (writes of other processes: noted like this one's)
        if self.frozen is not None:
            keys = self.frozen[self.fpos:self.fpos + want]
            self.fpos += len(keys)
        else:
            with store._index_lock:
                idx = store._index.refresh()
                if self.reverse:
                    it = idx.irange(self.lo, self.hi if self.bound is None else self.bound,
                                    inclusive=(True, False), reverse=True)
                else:
                    it = idx.irange(self.lo if self.bound is None else self.bound, self.hi,
                                    inclusive=(self.bound is None, False))
                keys = [k for _, k in zip(range(want), it)]
        final = len(keys) < want
        upper = None if final else keys[len(keys) - 1]
        if self.fresh:
            if self.undo_keys is None:
                self.undo_keys = SortedList()
            self.undo_keys.update(self.fresh)
            self.fresh = []
        if self.undo_keys:
            # keys that changed since the instant and the index may no longer
            # have (deleted since)
            extra = self._undone(upper, final)
            if extra:
                keys = sorted(set(keys).union(extra), reverse=self.reverse)
        pairs = []
        if (self.kd is None and not PyDict_GET_SIZE(<PyObject *>self.undo)
                and not PyDict_GET_SIZE(<PyObject *>self.expiry)):
            for k in keys:      # (values="memory", nothing changed and no TTLs: _value's common case)
                e = PyDict_GetItem(self.data, k)
                if e != NULL:
                    pairs.append((k, <object>e))
            if PyDict_GET_SIZE(<PyObject *>self.undo):     # (a finalizer let a writer in meanwhile)
                pairs = []
        if not pairs:
            for k in keys:
                v = self._value(k)
                if v is not None:
                    pairs.append((k, v))
        if final:
            self.close()
        else:
            # the walk is past `upper`: no pre-image up to it is needed again
            self.bound = upper
            for k in self._undone(upper, False):
                del self.undo[k]
                self.undo_keys.remove(k)
            self.want = min(want * 2, _SCAN_CHUNK)
        return pairs

    cdef list _undone(self, upper, bint final):
        """The keys with a pre-image between the walk's bound and `upper`
        (inclusive; final: to the end of the range)."""
        if not self.undo_keys:
            return []
        if self.reverse:
            lo = self.lo if final else upper
            return list(self.undo_keys.irange(lo, self.bound if self.bound is not None else self.hi,
                                              inclusive=(True, False)))
        hi = self.hi if final else upper
        return list(self.undo_keys.irange(self.lo if self.bound is None else self.bound, hi,
                                          inclusive=(self.bound is None, not final)))


cdef object _pre_image(KvStore store, bytes key, PyObject *old_value, uint64_t old_loc, bint found):
    """key's state before a change: None (absent), or (stored value,
    compression kind, deadline or -1, location)."""
    cdef PyObject *d
    cdef uint32_t kind = 0
    cdef int64_t deadline = -1
    if not found:
        return None
    if PyDict_GET_SIZE(<PyObject *>store._expiry):
        d = PyDict_GetItem(store._expiry, key)
        if d != NULL:
            deadline = <int64_t>(<object>d)
    if not store._disk:
        return (<object>old_value, 0, deadline, 0)
    try:
        stored = _stored_at(store._views, old_loc, key, &kind, False)
    except CorruptionError as exc:
        return (exc, _RAISE, deadline, old_loc)
    return (stored, kind, deadline, old_loc)


cdef int _note_change(KvStore store, bytes key, PyObject *old_value, uint64_t old_loc,
                      bint found) except -1:
    cdef list snaps = store._snaps
    cdef Py_ssize_t i = 0
    cdef _Snapshot s
    pre = _MISSING
    while i < PyList_GET_SIZE(snaps):
        o = (<object>PyList_GET_ITEM(snaps, i))()
        if o is None:           # an iterator dropped before its end
            del snaps[i]
            continue
        i += 1
        s = <_Snapshot>o
        if key in s.undo or not s._ahead(key):
            continue
        if pre is _MISSING:
            pre = _pre_image(store, key, old_value, old_loc, found)
        s.undo[key] = pre
        s.fresh.append(key)
    return 0


cdef bint _freeze_snapshots(KvStore store) except -1:
    cdef _Snapshot s
    cdef bint any_frozen = False
    for ref in store._snaps:
        o = ref()
        if o is None:
            continue
        s = <_Snapshot>o
        s.frozen = sorted([k for k in s._map_keys() if s._ahead(k)], reverse=s.reverse)
        s.registered = False
        any_frozen = True
    store._snaps = []
    return any_frozen
