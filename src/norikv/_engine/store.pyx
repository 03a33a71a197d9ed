# Hot paths of KvStore: replay into a dict, put/get/delete, batches, snapshots.

from heapq import heappush, heappop, heapify
cimport cython

cdef extern from "Python.h":
    PyObject *PyDict_GetItem(object d, object k)
    PyObject *PyDict_SetDefault(object d, object k, object v) except NULL

# Record flags that need the general replay path (everything but a plain put).
cdef uint32_t _LOADER_SLOW_FLAGS = NK_FLAG_TOMBSTONE | NK_FLAG_TTL | NK_COMP_MASK


cdef class _StoreLoader(_Sink):
    """Replays records into the dicts of a store: last write wins, tombstones
    delete, atomic batches apply whole or not at all (the scanner applies the
    batch rule, see _Sink), expired puts delete. A record whose value is
    damaged never reaches it (_Sink.check)."""

    cdef dict data
    cdef dict expiry
    cdef list staged
    cdef int64_t now_ms
    cdef int64_t open_ms
    cdef readonly uint64_t records
    cdef readonly uint64_t live_bytes
    cdef readonly uint64_t relative_ttls
    # key -> deadline derived from a relative TTL, for the keys whose last
    # record is such a put, live or already expired (a later record of the
    # key removes it): KvStore.open pins each one
    cdef readonly dict relative

    def __init__(self, dict data, dict expiry, int64_t open_ms, max_value_size=DEFAULT_MAX_VALUE_SIZE):
        _Sink.__init__(self, max_value_size)
        self.data = data
        self.expiry = expiry
        self.relative = {}
        self.staged = []
        self.open_ms = open_ms
        self.now_ms = _now_ms()

    cdef int _apply(self, bytes key, object value, int64_t deadline, bint relative) except -1:
        cdef PyObject *old = PyDict_GetItem(self.data, key)
        if relative:
            self.relative_ttls += 1
        if PyDict_GET_SIZE(<PyObject *>self.relative):
            self.relative.pop(key, None)
        if old != NULL:
            self.live_bytes -= PyBytes_GET_SIZE(key) + PyBytes_GET_SIZE(<object>old)
        if value is None or (deadline >= 0 and deadline <= self.now_ms):
            if old != NULL:
                del self.data[key]
            if len(self.expiry):
                self.expiry.pop(key, None)
            if relative and value is not None:
                # Expired already: still pinned (as a tombstone), or the next
                # open would count its TTL again and bring it back.
                self.relative[key] = deadline
            return 0
        self.data[key] = value
        self.live_bytes += PyBytes_GET_SIZE(key) + PyBytes_GET_SIZE(value)
        if deadline >= 0:
            self.expiry[key] = deadline
            if relative:
                self.relative[key] = deadline
        elif len(self.expiry):
            self.expiry.pop(key, None)
        return 0

    cdef tuple _decode(self, const nk_rec *r):
        """(key, value or None, deadline or -1, relative TTL?) of a record."""
        cdef bytes key = PyBytes_FromStringAndSize(<const char *>r.key, r.klen)
        cdef object value = None
        cdef int64_t deadline = -1
        cdef bint relative = False
        if not (r.flags & NK_FLAG_TOMBSTONE):
            value = self._value(r)          # decompressed once, by check()
            if r.flags & NK_FLAG_TTL:
                if r.flags & NK_FLAG_TTL_ABS:
                    deadline = nk_deadline(0, r.ttl_ms)
                else:
                    # A relative TTL written by another nori-wal user counts
                    # from the first open that replays it (docs/FORMAT.md);
                    # KvStore.open pins it with an absolute record.
                    deadline = nk_deadline(self.open_ms, r.ttl_ms)
                    relative = True
        return (key, value, deadline, relative)

    cdef int on_record(self, const nk_rec *r, uint64_t seg_id, uint64_t offset) except -1:
        cdef bytes key
        cdef object value
        cdef PyObject *old
        cdef Py_ssize_t n
        self.records += 1
        if not (r.flags & _LOADER_SLOW_FLAGS):
            # The common record, a plain put: one dict lookup (setdefault)
            # instead of get + set; a second one only when the key existed.
            key = PyBytes_FromStringAndSize(<const char *>r.key, r.klen)
            value = PyBytes_FromStringAndSize(<const char *>r.value, r.vlen)
            n = PyDict_GET_SIZE(<PyObject *>self.data)
            old = PyDict_SetDefault(self.data, key, value)
            # (not `old != value`: empty and 1-byte bytes are shared singletons)
            if PyDict_GET_SIZE(<PyObject *>self.data) == n:
                self.live_bytes -= PyBytes_GET_SIZE(key) + PyBytes_GET_SIZE(<object>old)
                PyDict_SetItem(self.data, key, value)
                if PyDict_GET_SIZE(<PyObject *>self.expiry):
                    self.expiry.pop(key, None)
            if PyDict_GET_SIZE(<PyObject *>self.relative):
                # (also for a key that is new again: `relative` keeps expired keys)
                self.relative.pop(key, None)
            self.live_bytes += PyBytes_GET_SIZE(key) + PyBytes_GET_SIZE(value)
            return 0
        k, v, d, rel = self._decode(r)
        return self._apply(k, v, d, rel)

    cdef int stage(self, const nk_rec *r, uint64_t seg_id, uint64_t offset) except -1:
        self.records += 1
        self.staged.append(self._decode(r))
        return 0

    cdef int end_batch(self, bint commit) except -1:
        if commit:
            for k, v, d, rel in self.staged:
                self._apply(k, v, d, rel)
        else:
            self.records -= len(self.staged)
        self.staged.clear()
        return 0


cdef bytes _stored_form(bytes value, uint32_t kind, Py_ssize_t min_size, uint64_t max_value_size,
                        uint32_t *flags):
    """The stored form of a value under compression ``kind``: compressed (its
    bits added to flags) when it is at least min_size and that is smaller;
    raw when it is over max_value_size (only a foreign writer's value: a
    compressed one no open with that bound could read)."""
    cdef bytes c
    if kind and PyBytes_GET_SIZE(value) >= min_size and <uint64_t>PyBytes_GET_SIZE(value) <= max_value_size:
        c = _compress(kind, value)
        if PyBytes_GET_SIZE(c) < PyBytes_GET_SIZE(value):
            flags[0] |= kind << NK_COMP_SHIFT
            return c
    return value


cdef class _StoreCore:
    """The in-memory map and the write path. Subclassed by norikv.KvStore."""

    cdef _WalCore _wal
    cdef dict _data
    cdef dict _expiry            # key -> absolute deadline (Unix ms), only for TTL keys
    cdef list _heap              # (deadline, key) entries, possibly stale
    cdef list _touched           # range index delta: keys added or removed since the last refresh
    cdef bint _indexed           # whether a range index exists (then _touched is kept)
    cdef readonly uint64_t live_bytes
    cdef readonly Py_ssize_t max_keys
    cdef readonly uint64_t max_bytes
    cdef uint32_t _compression
    cdef readonly Py_ssize_t compress_min_size
    cdef bint _closed
    cdef uint64_t _next_check
    cdef readonly double compact_dead_ratio
    cdef readonly uint64_t compact_min_bytes
    cdef object _compact_trigger
    cdef readonly uint64_t max_value_size

    def __cinit__(self):
        # Until _init_core (KvStore.open) the store is closed: every method
        # raises ClosedError instead of reaching the missing Wal and maps.
        self._closed = True

    def _init_core(self, _WalCore wal, dict data, dict expiry, uint64_t live_bytes,
                   Py_ssize_t max_keys, uint64_t max_bytes, int compression,
                   Py_ssize_t compress_min_size, double compact_dead_ratio,
                   uint64_t compact_min_bytes, compact_trigger):
        self._wal = wal
        self.max_value_size = wal.max_value_size
        self._data = data
        self._expiry = expiry
        self._heap = [(d, k) for k, d in expiry.items()]
        heapify(self._heap)
        self._touched = []
        self._indexed = False
        self.live_bytes = live_bytes
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        self._compression = compression
        self.compress_min_size = compress_min_size
        self.compact_dead_ratio = compact_dead_ratio
        self.compact_min_bytes = compact_min_bytes
        self._compact_trigger = compact_trigger
        self._next_check = 0
        self._closed = False

    cdef inline int _check_open(self) except -1:
        if self._closed:
            raise ClosedError("the KvStore is closed")
        return 0

    # ------------------------------------------------------------ reads

    cdef inline bint _expired(self, object key) except -1:
        """Whether key has a TTL that has passed (no lookup in a store
        without TTL keys)."""
        cdef PyObject *d
        if PyDict_GET_SIZE(<PyObject *>self._expiry) == 0:
            return False
        d = PyDict_GetItem(self._expiry, key)
        return d != NULL and <int64_t>(<object>d) <= _now_ms()

    def get(self, key, default=None):
        """The general path of get (see _get_entry)."""
        cdef PyObject *v
        if not PyBytes_CheckExact(key):
            key = _as_bytes(key, "key")
        if self._closed:
            raise ClosedError("the KvStore is closed")
        v = PyDict_GetItemWithError(self._data, key)
        if v == NULL:
            return default
        if self._expired(key):
            return default
        return <object>v

    def __getitem__(self, key):
        cdef PyObject *v
        if not PyBytes_CheckExact(key):
            key = _as_bytes(key, "key")
        if self._closed:
            raise ClosedError("the KvStore is closed")
        v = PyDict_GetItem(self._data, key)
        if v == NULL or self._expired(key):
            raise KeyError(key)
        return <object>v

    def __contains__(self, key):
        if not PyBytes_CheckExact(key):
            key = _as_bytes(key, "key")
        self._check_open()
        return PyDict_GetItem(self._data, key) != NULL and not self._expired(key)

    def __len__(self):
        self._check_open()
        self._purge_expired()
        return len(self._data)

    # ------------------------------------------------------------ writes

    cdef bytes _encode_value(self, bytes value, object compression, uint32_t *flags):
        """The stored form of value (compressed when that is smaller). A value
        over max_value_size (only a foreign writer's, re-put by the TTL pin)
        stays raw: compressed, no open with that bound could read it."""
        cdef uint32_t kind = self._compression
        if compression is not None:
            kind = int(_compression_enum().parse(compression))
        return _stored_form(value, kind, self.compress_min_size, self.max_value_size, flags)

    cdef int _room_for(self, bytes key, PyObject *old, Py_ssize_t vlen, bint may_purge) except -1:
        """Raises StoreFullError when the put would exceed the limits. With
        may_purge, expired keys are dropped first (which invalidates `old`)."""
        cdef int64_t delta
        if may_purge and self._heap and self._over_limit(key, old, vlen):
            self._purge_expired()
            old = PyDict_GetItem(self._data, key)
        if old == NULL and self.max_keys and PyDict_Size(self._data) >= self.max_keys:
            raise StoreFullError(f"the store holds max_keys={self.max_keys} keys")
        if self.max_bytes:
            delta = vlen + (PyBytes_GET_SIZE(key) if old == NULL else -PyBytes_GET_SIZE(<object>old))
            if <int64_t>self.live_bytes + delta > <int64_t>self.max_bytes:
                raise StoreFullError(f"the put would exceed max_bytes={self.max_bytes}")
        return 0

    cdef bint _over_limit(self, bytes key, PyObject *old, Py_ssize_t vlen):
        cdef int64_t delta
        if old == NULL and self.max_keys and PyDict_Size(self._data) >= self.max_keys:
            return True
        if self.max_bytes:
            delta = vlen + (PyBytes_GET_SIZE(key) if old == NULL else -PyBytes_GET_SIZE(<object>old))
            return <int64_t>self.live_bytes + delta > <int64_t>self.max_bytes
        return False

    cdef inline int _account(self, bytes key, bytes value, Py_ssize_t old_size,
                             int64_t deadline) except -1:
        """Bookkeeping of a put whose dict entry is written: live bytes, the
        range index (new keys), TTL. ``old_size`` is the replaced value's size,
        or -1 for a new key."""
        if old_size < 0:
            self.live_bytes += PyBytes_GET_SIZE(key) + PyBytes_GET_SIZE(value)
            if self._indexed:
                self._touch(key)
        else:
            self.live_bytes += PyBytes_GET_SIZE(value)
            self.live_bytes -= old_size
        if deadline >= 0:
            self._expiry[key] = deadline
            heappush(self._heap, (deadline, key))
        elif PyDict_GET_SIZE(<PyObject *>self._expiry):
            self._expiry.pop(key, None)
        return 0

    cdef inline int _set(self, bytes key, bytes value, PyObject *old, int64_t deadline) except -1:
        # The old value's size is read first: PyDict_SetItem may free it.
        cdef Py_ssize_t old_size = PyBytes_GET_SIZE(<object>old) if old != NULL else -1
        PyDict_SetItem(self._data, key, value)
        return self._account(key, value, old_size, deadline)

    cdef inline int _set_lookup(self, bytes key, bytes value, int64_t deadline) except -1:
        """_set for a caller that has not looked `old` up: a new key costs one
        dict lookup (setdefault), a replaced one a second (setitem)."""
        cdef Py_ssize_t n = PyDict_GET_SIZE(<PyObject *>self._data)
        cdef PyObject *old = PyDict_SetDefault(self._data, key, value)
        if PyDict_GET_SIZE(<PyObject *>self._data) == n:       # the key was there: replace
            return self._set(key, value, old, deadline)
        return self._account(key, value, -1, deadline)

    cdef inline int _unset(self, bytes key, object old) except -1:
        self.live_bytes -= PyBytes_GET_SIZE(key) + PyBytes_GET_SIZE(old)
        PyDict_DelItem(self._data, key)
        if PyDict_GET_SIZE(<PyObject *>self._expiry):
            self._expiry.pop(key, None)
        if self._indexed:
            self._touch(key)
        return 0

    cdef inline int _after_write(self) except -1:
        self._wal._after_append()
        if self._wal.written_total >= self._next_check:
            self._maybe_compact()
        return 0

    def put(self, key, value, *, ttl=None, compression=None):
        """The general path of put (see _put_entry)."""
        self._put(<bytes>key if PyBytes_CheckExact(key) else _as_bytes(key, "key"),
                  <bytes>value if PyBytes_CheckExact(value) else _as_bytes(value, "value"),
                  ttl, compression)

    cdef inline int _put(self, bytes k, bytes v, object ttl, object compression) except -1:
        cdef bytes stored = v
        cdef uint32_t flags = 0
        cdef int64_t deadline = -1
        cdef PyObject *old = NULL
        cdef uint64_t n
        cdef uint8_t *p
        cdef bint limited
        if self._closed:
            raise ClosedError("the KvStore is closed")
        if <uint64_t>PyBytes_GET_SIZE(v) > self.max_value_size:
            _check_value_size(v, self.max_value_size)
        if ttl is not None:
            deadline = _deadline(ttl)
            flags = NK_FLAG_TTL | NK_FLAG_TTL_ABS
        if self._compression or compression is not None:
            stored = self._encode_value(v, compression, &flags)
        if self.max_keys or self.max_bytes:
            self._room_for(k, PyDict_GetItem(self._data, k), PyBytes_GET_SIZE(v), True)
        n = nk_encoded_len(PyBytes_GET_SIZE(k), PyBytes_GET_SIZE(stored), flags, <uint64_t>deadline, 0, 0)
        p = self._wal._reserve(n)
        # From here to _commit nothing releases the GIL or runs Python code, so
        # the log and the map change together. `old` is read only now because
        # _reserve may have let other threads run.
        limited = self.max_keys or self.max_bytes
        if limited:
            old = PyDict_GetItem(self._data, k)
            self._room_for(k, old, PyBytes_GET_SIZE(v), False)
        nk_encode(p, <const uint8_t *>PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k),
                  <const uint8_t *>PyBytes_AS_STRING(stored), PyBytes_GET_SIZE(stored),
                  flags, <uint64_t>deadline, 0, 0)
        self._wal._commit(n)
        if limited:
            self._set(k, v, old, deadline)
        else:
            self._set_lookup(k, v, deadline)
        return self._after_write()

    def __setitem__(self, key, value):
        if value is None:
            raise TypeError("value must be bytes, bytearray or memoryview, not None")
        self.put(key, value)

    def delete(self, key):
        """Deletes ``key``; returns whether it was present. Deleting an absent
        key writes nothing."""
        cdef bytes k = <bytes>key if PyBytes_CheckExact(key) else _as_bytes(key, "key")
        cdef PyObject *old
        cdef uint64_t n
        cdef uint8_t *p
        self._check_open()
        old = PyDict_GetItem(self._data, k)
        if old == NULL:
            return False
        if self._expired(k):
            self._unset(k, <object>old)        # expired: its record already says so
            return False
        n = nk_encoded_len(PyBytes_GET_SIZE(k), 0, NK_FLAG_TOMBSTONE, 0, 0, 0)
        p = self._wal._reserve(n)
        old = PyDict_GetItem(self._data, k)    # other threads may have run in _reserve
        if old == NULL:
            return False
        nk_encode(p, <const uint8_t *>PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k), NULL, 0,
                  NK_FLAG_TOMBSTONE, 0, 0, 0)
        self._wal._commit(n)
        self._unset(k, <object>old)
        self._after_write()
        return True

    def __delitem__(self, key):
        if not self.delete(key):
            raise KeyError(key)

    def _apply_batch(self, list ops):
        """Writes ops [(key, value or None, deadline, compression)] as one atomic
        batch (one contiguous span, batch flags by nk_batch_flags; one op is a
        plain record) and applies them to memory; all or nothing."""
        cdef list recs = []
        cdef bytes k, v, stored
        cdef uint32_t flags
        cdef int64_t deadline
        cdef uint64_t total = 0, off = 0
        cdef Py_ssize_t i, n
        cdef uint8_t *p
        cdef PyObject *cur
        self._check_open()
        self._purge_expired()
        for k, v, deadline, compression in ops:
            if v is None:
                recs.append((k, b"", NK_FLAG_TOMBSTONE, 0))
                continue
            flags = 0
            stored = v
            if deadline >= 0:
                flags = NK_FLAG_TTL | NK_FLAG_TTL_ABS
            if self._compression or compression is not None:
                stored = self._encode_value(v, compression, &flags)
            recs.append((k, stored, flags, deadline if deadline >= 0 else 0))
        n = len(recs)
        for i in range(n):
            k, stored, flags, deadline = recs[i]
            total += nk_encoded_len(PyBytes_GET_SIZE(k), PyBytes_GET_SIZE(stored),
                                    nk_batch_flags(flags, i, n), <uint64_t>deadline, 0, 0)
        self._check_batch_limits(ops)
        p = self._wal._reserve(total)
        self._check_batch_limits(ops)       # other threads may have run in _reserve
        for i in range(n):
            k, stored, flags, deadline = recs[i]
            off += nk_encode(p + off, <const uint8_t *>PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k),
                             <const uint8_t *>PyBytes_AS_STRING(stored), PyBytes_GET_SIZE(stored),
                             nk_batch_flags(flags, i, n), <uint64_t>deadline, 0, 0)
        self._wal._commit(total)
        for k, v, deadline, compression in ops:
            cur = PyDict_GetItem(self._data, k)
            if v is None:
                if cur != NULL:
                    self._unset(k, <object>cur)
            else:
                self._set(k, v, cur, deadline)
        self._after_write()
        return n

    cdef int _check_batch_limits(self, list ops) except -1:
        cdef dict final = {}
        cdef Py_ssize_t new_keys = 0
        cdef int64_t delta = 0
        cdef PyObject *cur
        if not (self.max_keys or self.max_bytes):
            return 0
        for k, v, deadline, compression in ops:
            final[k] = v
        for k, v in final.items():
            cur = PyDict_GetItem(self._data, k)
            if cur == NULL and v is not None:
                new_keys += 1
                delta += PyBytes_GET_SIZE(k) + PyBytes_GET_SIZE(v)
            elif cur != NULL and v is None:
                new_keys -= 1
                delta -= PyBytes_GET_SIZE(k) + PyBytes_GET_SIZE(<object>cur)
            elif cur != NULL:
                delta += PyBytes_GET_SIZE(v) - PyBytes_GET_SIZE(<object>cur)
        if self.max_keys and new_keys > 0 and PyDict_Size(self._data) + new_keys > self.max_keys:
            raise StoreFullError(f"the batch would exceed max_keys={self.max_keys}")
        if self.max_bytes and delta > 0 and <int64_t>self.live_bytes + delta > <int64_t>self.max_bytes:
            raise StoreFullError(f"the batch would exceed max_bytes={self.max_bytes}")
        return 0

    # ------------------------------------------------------------ TTL

    def _purge_expired(self):
        """Drops keys whose deadline has passed (their records already say so)."""
        cdef int64_t now
        cdef PyObject *cur
        if not self._heap:
            return 0
        now = _now_ms()
        n = 0
        while self._heap and <int64_t>self._heap[0][0] <= now:
            deadline, key = heappop(self._heap)
            cur = PyDict_GetItem(self._expiry, key)
            if cur != NULL and <int64_t>(<object>cur) == <int64_t>deadline:
                self._unset(key, self._data[key])
                n += 1
        if len(self._heap) > 2 * len(self._expiry) + 1024:
            self._heap = [(d, k) for k, d in self._expiry.items()]
            heapify(self._heap)
        return n

    def _deadline_of(self, bytes key):
        return self._expiry.get(key)

    # ------------------------------------------------------------ range index

    cdef inline bint _delta_too_big(self):
        # Past this many changes, rebuilding the index from the map is cheaper
        # than applying them one by one.
        return PyList_GET_SIZE(self._touched) > (PyDict_GET_SIZE(<PyObject *>self._data) >> 3) + 65536

    cdef inline int _touch(self, bytes key) except -1:
        """Notes that key was added to or removed from the map. A list append,
        so that the put path does not pay for ordering (a dict of pending
        changes cost a second random insert per new key: puts ran at 0.53x a
        dict after a range query). Past _delta_too_big the index is dropped
        (keeping the list bounded); the next range query rebuilds it."""
        PyList_Append(self._touched, key)
        if self._delta_too_big():
            self._indexed = False
            self._touched = []
        return 0

    def _drop_index(self):
        """Forgets the range index (after fork: a thread of the parent may
        have been changing it); the next range query rebuilds it from the map."""
        self._indexed = False
        self._touched = []

    def _take_index_delta(self):
        """(rebuild, added, removed) for the range index. With rebuild, added
        is every key of the map and the index is to be built anew; otherwise
        the keys touched since the last call, each by its state in the map
        now (a key touched several times counts once): added keys may already
        be in the index, removed ones may never have been."""
        cdef list added = [], removed = []
        if not self._indexed or self._delta_too_big():
            self._indexed = True
            self._touched = []
            return True, list(self._data), removed
        touched = self._touched
        self._touched = []
        for k in set(touched):
            if PyDict_GetItem(self._data, k) != NULL:
                added.append(k)
            else:
                removed.append(k)
        return False, added, removed

    # ------------------------------------------------------------ compaction

    def _maybe_compact(self):
        cdef uint64_t log_bytes = self._wal_bytes()
        self._next_check = self._wal.written_total + max(1 << 20, log_bytes // 16)
        if self._compact_trigger is None or log_bytes < self.compact_min_bytes:
            return
        if self._dead_share(log_bytes) >= self.compact_dead_ratio:
            trigger = self._compact_trigger()     # a WeakMethod: no cycle through the store
            if trigger is not None:
                trigger()

    def _wal_bytes(self):
        return sum(self._wal._segment_sizes().values())

    def dead_ratio(self, log_bytes=None):
        """Share of the WAL's bytes that no longer hold live data (an estimate
        from uncompressed sizes plus per-record overhead)."""
        self._check_open()
        return self._dead_share(self._wal_bytes() if log_bytes is None else log_bytes)

    cdef double _dead_share(self, uint64_t log_bytes) except -1:
        cdef double live
        if not log_bytes:
            return 0.0
        live = self.live_bytes + 8 * len(self._data)
        return max(0.0, 1.0 - live / log_bytes)

    def _freeze(self):
        """Compaction step 1, atomic with respect to every write: copies the live
        map and seals the log so that later writes land in segments numbered
        after room reserved for the snapshot. Returns (data, expiry, first id,
        reserved ids)."""
        cdef uint64_t bound = 0
        cdef uint64_t gap
        self._check_open()
        self._wal._begin_exclusive()
        try:
            self._purge_expired()
            data = self._data.copy()
            expiry = self._expiry.copy()
            for k, v in data.items():
                bound += nk_encoded_len(PyBytes_GET_SIZE(k), PyBytes_GET_SIZE(v), NK_FLAG_TTL,
                                        UINT64_MAX, 0, 0)
            gap = bound // self._wal.max_segment_size + 2
            first, active = self._wal._seal_and_skip_locked(gap)
        finally:
            self._wal._end_exclusive()
        return data, expiry, first, gap

    # ------------------------------------------------------------ small accessors

    def _check_value(self, bytes value):
        """What put checks of a value before anything is written (for a
        WriteBatch): ClosedError, or ValueError over max_value_size."""
        self._check_open()
        _check_value_size(value, self.max_value_size)

    def _data_view(self):
        return self._data

    def _store_compression(self):
        return self._compression

    def _ttl_count(self):
        return len(self._expiry)

    def _is_closed(self):
        return self._closed

    def _mark_closed(self):
        self._closed = True


# ------------------------------------------------------------ fastcall entries
# (_fastcall.pxi says why). Each handles the call shape of a hot loop and
# passes every other call, unchanged, to the general def it replaces.

cdef PyMethodDef _get_slot, _put_slot


cdef object _get_entry(_StoreCore self, PyObject **args, Py_ssize_t nargs, PyObject *kwnames):
    cdef PyObject *v
    if (kwnames == NULL and (nargs == 1 or nargs == 2) and _PyBytes_CheckExact(args[0])
            and not self._closed and PyDict_GET_SIZE(<PyObject *>self._expiry) == 0):
        v = _PyDict_GetItemWithError(<PyObject *>self._data, args[0])
        if v != NULL:
            return <object>v
        return <object>args[1] if nargs == 2 else None
    return _call_general(_get_general, self, args, nargs, kwnames)


cdef object _put_entry(_StoreCore self, PyObject **args, Py_ssize_t nargs, PyObject *kwnames):
    if (kwnames == NULL and nargs == 2 and _PyBytes_CheckExact(args[0])
            and _PyBytes_CheckExact(args[1])):
        self._put(<bytes>args[0], <bytes>args[1], None, None)
        return None
    return _call_general(_put_general, self, args, nargs, kwnames)


_get_general = _install_fastcall(
    _StoreCore, &_get_slot, "get", <_fastcall_fn>_get_entry,
    "get($self, key, default=None)\n--\n\n"
    "The value of ``key``, or ``default``. Served from memory.")
_put_general = _install_fastcall(
    _StoreCore, &_put_slot, "put", <_fastcall_fn>_put_entry,
    "put($self, key, value, *, ttl=None, compression=None)\n--\n\n"
    "Stores ``key`` = ``value``: written to the WAL first, then to memory.\n\n"
    "``ttl`` (seconds) makes the key expire that long after this call, also\n"
    "across restarts. ``compression`` overrides the store's setting for this\n"
    "value. Durability follows the store's fsync policy.")

def _deadline(ttl):
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool):
        raise TypeError(f"ttl must be a number of seconds, not {type(ttl).__name__}")
    if not ttl > 0:
        raise ValueError(f"ttl must be > 0 seconds, got {ttl!r}")
    if ttl > 1e15:   # deadlines are int64 Unix ms; 1e15 s is ~31 million years
        raise ValueError(f"ttl must be at most 1e15 seconds, got {ttl!r}")
    return _now_ms() + <int64_t>(ttl * 1000.0 + 0.999999)


def write_snapshot(dict data, dict expiry, dirpath, uint64_t first_id, uint64_t ids,
                   uint64_t max_segment_size, int compression, Py_ssize_t compress_min_size,
                   uint64_t max_value_size=_DEFAULT_MAX_VALUE_SIZE):
    """Writes the live map as segment files named ``<id>.wal.compact-tmp``,
    fsynced, for ids first_id .. first_id+ids-1 (the last takes any overflow).
    Returns [(tmp path, id, size)]. Expired keys are left out. A value over
    max_value_size (read uncompressed from a log another writer made) is
    written uncompressed: compressed, no open with that bound could read it."""
    cdef uint64_t seg = first_id
    cdef uint64_t size = 0
    cdef int64_t now = _now_ms()
    cdef uint32_t flags
    cdef uint64_t deadline
    cdef bytes k, v, stored
    cdef size_t n, used = 0, cap = 4 << 20
    cdef uint8_t *buf = <uint8_t *>malloc(cap)
    cdef uint8_t *nb
    cdef list out = []
    cdef object f = None
    cdef str path = ""
    if buf == NULL:
        raise MemoryError()
    try:
        for k, v in data.items():
            d = expiry.get(k)
            flags = 0
            deadline = 0
            if d is not None:
                if <int64_t>d <= now:
                    continue
                deadline = <uint64_t>d
                flags = NK_FLAG_TTL | NK_FLAG_TTL_ABS
            stored = _stored_form(v, compression, compress_min_size, max_value_size, &flags)
            n = nk_encoded_len(PyBytes_GET_SIZE(k), PyBytes_GET_SIZE(stored), flags, deadline, 0, 0)
            if f is not None and size > 0 and size + n > max_segment_size and seg + 1 < first_id + ids:
                _write_all(f, buf, used)
                used = 0
                _seal_tmp(f)
                out.append((path, seg, size))
                f = None
                seg += 1
                size = 0
            if f is None:
                path = os.path.join(dirpath, segment_name(seg) + ".compact-tmp")
                f = open(path, "wb")
            if used + n > cap:
                _write_all(f, buf, used)
                used = 0
                if n > cap:
                    nb = <uint8_t *>realloc(buf, n)
                    if nb == NULL:
                        raise MemoryError()
                    buf = nb
                    cap = n
            used += nk_encode(buf + used, <const uint8_t *>PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k),
                              <const uint8_t *>PyBytes_AS_STRING(stored), PyBytes_GET_SIZE(stored),
                              flags, deadline, 0, 0)
            size += n
        if f is not None:
            _write_all(f, buf, used)
            _seal_tmp(f)
            out.append((path, seg, size))
            f = None
    finally:
        free(buf)
        if f is not None:
            f.close()
    return out


cdef int _write_all(object f, const uint8_t *buf, size_t n) except -1:
    if n:
        f.write(PyBytes_FromStringAndSize(<const char *>buf, n))
    return 0


def _seal_tmp(f):
    cdef int err
    cdef int fd
    f.flush()
    fd = f.fileno()
    with nogil:
        err = nk_sync_data(fd, NULL, 0)
    f.close()
    if err:
        raise io_error(err, f.name, "fsync")
