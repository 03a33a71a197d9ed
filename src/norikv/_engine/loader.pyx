# Replaying a log into a store's map (KvStore.open, and norikv's lock-free
# readers of a store: the same loader, so they agree by construction).

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_SetItem

from norikv.compression import DEFAULT_MAX_VALUE_SIZE


# Record flags that need the general replay path (everything but a plain put).
cdef enum:
    _LOADER_SLOW_FLAGS = NK_FLAG_TOMBSTONE | NK_FLAG_TTL | NK_COMP_MASK


cdef class _StoreLoader(_Sink):
    """Replays records into the dicts of a store: last write wins, tombstones
    delete, atomic batches apply whole or not at all (the scanner applies the
    batch rule, see _Sink), expired puts delete. A record whose value is
    damaged never reaches it (_Sink.check)."""

    def __init__(self, dict data, dict expiry, int64_t open_ms, max_value_size=DEFAULT_MAX_VALUE_SIZE):
        _Sink.__init__(self, max_value_size)
        self.data = data
        self.expiry = expiry
        self.relative = {}
        self.staged = []
        self.open_ms = open_ms
        self.now_ms = _now_ms()

    def _restart(self):
        """Forgets everything replayed so far (norikv.wal.join starts over
        when a compaction deleted a segment under it)."""
        self.data = {}
        self.expiry = {}
        self.relative = {}
        self.staged = []
        self.records = self.live_bytes = self.relative_ttls = 0

    cdef int64_t _set_value(self, bytes key, object value, int64_t vsize, uint64_t loc) except -2:
        """Sets key's value in the map; the old value's size, or -1 for a new key."""
        cdef PyObject *old = PyDict_GetItem(self.data, key)
        cdef int64_t size = -1 if old == NULL else PyBytes_GET_SIZE(<object>old)
        self.data[key] = value
        return size

    cdef int64_t _drop_value(self, bytes key) except -2:
        """Removes key from the map; its value's size, or -1 when absent."""
        cdef PyObject *old = PyDict_GetItem(self.data, key)
        cdef int64_t size
        if old == NULL:
            return -1
        size = PyBytes_GET_SIZE(<object>old)
        del self.data[key]
        return size

    cdef int _apply(self, bytes key, object value, int64_t vsize, int64_t deadline, bint relative,
                    uint64_t loc) except -1:
        """The replay rule of one record (or of a batch's, once committed):
        vsize is the value's size, -1 for a delete (``value`` is None for a
        map of locations)."""
        cdef int64_t old
        if relative:
            self.relative_ttls += 1
        if PyDict_GET_SIZE(<PyObject *>self.relative):
            self.relative.pop(key, None)
        if vsize < 0 or (deadline >= 0 and deadline <= self.now_ms):
            old = self._drop_value(key)
            if old >= 0:
                self.live_bytes -= PyBytes_GET_SIZE(key) + old
            if len(self.expiry):
                self.expiry.pop(key, None)
            if relative and vsize >= 0:
                # Expired already: still pinned (as a tombstone), or the next
                # open would count its TTL again and bring it back.
                self.relative[key] = deadline
            return 0
        old = self._set_value(key, value, vsize, loc)
        if old >= 0:
            self.live_bytes -= PyBytes_GET_SIZE(key) + old
        self.live_bytes += PyBytes_GET_SIZE(key) + vsize
        if deadline >= 0:
            self.expiry[key] = deadline
            if relative:
                self.relative[key] = deadline
        elif len(self.expiry):
            self.expiry.pop(key, None)
        return 0

    cdef tuple _decode(self, const nk_rec *r):
        """(key, value or None, its size or -1, deadline or -1, relative TTL?)
        of a record."""
        cdef bytes key = PyBytes_FromStringAndSize(<const char *>r.key, r.klen)
        cdef object value = None
        cdef int64_t deadline = self._deadline(r.flags, r.ttl_ms)
        if r.flags & NK_FLAG_TOMBSTONE:
            return (key, None, -1, deadline, False)
        value = self._value(r)          # decompressed once, by check()
        return (key, value, PyBytes_GET_SIZE(value), deadline,
                (r.flags & (NK_FLAG_TTL | NK_FLAG_TTL_ABS)) == NK_FLAG_TTL)

    cdef int64_t _deadline(self, uint32_t flags, uint64_t ttl_ms) noexcept:
        """The absolute deadline of a record's TTL field, -1 for none. A
        relative TTL written by another nori-wal user counts from the first
        open that replays it (docs/FORMAT.md); KvStore.open pins it with an
        absolute record."""
        if flags & NK_FLAG_TOMBSTONE or not flags & NK_FLAG_TTL:
            return -1
        if flags & NK_FLAG_TTL_ABS:
            return nk_deadline(0, ttl_ms)
        return nk_deadline(self.open_ms, ttl_ms)

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
        k, v, n, d, rel = self._decode(r)
        return self._apply(k, v, n, d, rel, self._location(seg_id, offset))

    cdef uint64_t _location(self, uint64_t seg_id, uint64_t offset) except? 0xFFFFFFFFFFFFFFFF:
        return 0            # the map holds values, not locations

    cdef int stage(self, const nk_rec *r, uint64_t seg_id, uint64_t offset) except -1:
        self.records += 1
        self.staged.append(self._decode(r) + (self._location(seg_id, offset),))
        return 0

    cdef int end_batch(self, bint commit) except -1:
        if commit:
            for k, v, n, d, rel, loc in self.staged:
                self._apply(k, v, n, d, rel, loc)
        else:
            self.records -= len(self.staged)
        self.staged.clear()
        return 0


cdef class _DiskLoader(_StoreLoader):
    """The loader of a store with values="disk": the same replay rule
    (_StoreLoader._apply), into a key directory of record locations
    (keydir.pyx) over read-only views of the segments (views.pyx)."""

    def __init__(self, _KeyDir kd, _SegmentViews views, int64_t open_ms,
                 max_value_size=DEFAULT_MAX_VALUE_SIZE):
        _StoreLoader.__init__(self, None, {}, open_ms, max_value_size)
        self.kd = kd
        self.views = views
        self.last_seg = UINT64_MAX

    def _restart(self):
        _StoreLoader._restart(self)
        self.data = None
        self.views.unmap_all()
        self.kd = _KeyDir()
        self.views = _SegmentViews(self.views.dir, self.views.min_len)
        self.last_seg = UINT64_MAX
        self.hinted_segments = 0

    cdef uint64_t _location(self, uint64_t seg_id, uint64_t offset) except? 0xFFFFFFFFFFFFFFFF:
        if seg_id != self.last_seg:
            self.last_slot = <uint64_t>self.views.slot_for(seg_id, -1, 0)
            self.last_seg = seg_id
        return (self.last_slot << _LOC_SHIFT) | offset

    cdef int64_t _set_value(self, bytes key, object value, int64_t vsize, uint64_t loc) except -2:
        cdef uint64_t old_loc, old_size
        cdef const uint8_t *k = <const uint8_t *>PyBytes_AS_STRING(key)
        if self.kd.put(k, PyBytes_GET_SIZE(key), _kd_hash_obj(key), loc, vsize, &old_loc, &old_size):
            return <int64_t>self.views.value_size(old_loc, old_size)
        return -1

    cdef int64_t _drop_value(self, bytes key) except -2:
        cdef uint64_t old_loc, old_size
        if self.kd.remove(<const uint8_t *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key),
                          _kd_hash_obj(key), &old_loc, &old_size):
            return <int64_t>self.views.value_size(old_loc, old_size)
        return -1

    cdef int on_record(self, const nk_rec *r, uint64_t seg_id, uint64_t offset) except -1:
        if r.flags & _LOADER_SLOW_FLAGS:
            return _StoreLoader.on_record(self, r, seg_id, offset)     # (its general path)
        return self.put_entry(r.key, r.klen, _kd_hash(r.key, r.klen), r.vlen, self._location(seg_id, offset))

    def _hints_ahead(self, seg_paths, seg_ids):
        """Told before the first _from_hint which segments may come (paths
        and ids, in order): makes room for their hints' entries at once.
        norikv.wal.plan_recovery and load_published ask every sink that has
        this method."""
        _reserve_for_hints(self, seg_paths, seg_ids)

    def _from_hint(self, seg_path, uint64_t seg_id, uint64_t file_size):
        """Applies the segment's hint file (hints.pyx): its number of
        records, or -1 when it has no valid, current one (scan it instead).
        norikv.wal.plan_recovery asks every sink that has this method."""
        n = _replay_hint(self, seg_path, seg_id, file_size)
        if n >= 0:
            self.hinted_segments += 1
        return n

    cdef int put_entry(self, const uint8_t *k, size_t klen, uint64_t h, uint64_t vsize, uint64_t loc) except -1:
        """A plain put (no TTL) of a vsize-byte value at loc (h: _kd_hash of
        the key): the key's bytes go straight into the directory (a key
        object only while TTL bookkeeping exists)."""
        cdef uint64_t old_loc, old_size
        cdef bint replaced
        cdef bytes key
        self.records += 1
        replaced = self.kd.put(k, klen, h, loc, vsize, &old_loc, &old_size)
        if replaced:
            self.live_bytes -= klen + self.views.value_size(old_loc, old_size)
        self.live_bytes += klen + vsize
        if PyDict_GET_SIZE(<PyObject *>self.expiry) or PyDict_GET_SIZE(<PyObject *>self.relative):
            key = PyBytes_FromStringAndSize(<const char *>k, klen)
            if replaced:
                self.expiry.pop(key, None)
            self.relative.pop(key, None)
        return 0

    cdef int hint_entry(self, const uint8_t *k, size_t klen, uint64_t h, uint32_t flags, uint64_t ttl_ms,
                        uint64_t vsize, uint64_t loc) except -1:
        """A record as a hint file describes it (hints.pyx): the same rule as
        on_record, without reading the segment."""
        if flags & (NK_FLAG_TOMBSTONE | NK_FLAG_TTL):
            self.records += 1
            return self._apply(PyBytes_FromStringAndSize(<const char *>k, klen), None,
                               -1 if flags & NK_FLAG_TOMBSTONE else <int64_t>vsize,
                               self._deadline(flags, ttl_ms),
                               (flags & (NK_FLAG_TTL | NK_FLAG_TTL_ABS)) == NK_FLAG_TTL, loc)
        return self.put_entry(k, klen, h, vsize, loc)
