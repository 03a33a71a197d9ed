# Replaying a log into a store's map (KvStore.open, and norikv's lock-free
# readers of a store: the same loader, so they agree by construction).

from cpython.bytes cimport PyBytes_GET_SIZE, PyBytes_FromStringAndSize
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
