# values="disk": a store whose map holds, for each key, the location of its
# record in the log (keydir.pyx) instead of its value. A get decodes the
# record from the segment's read-only mapping (views.pyx), checks its CRC and
# that it is the key's record, and copies (or decompresses) the value.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from libc.string cimport memcpy

from norikv.errors import CorruptionError


cdef enum:
    # Values of at least this many stored bytes are checked and copied with
    # the GIL released (their page faults do not stop other threads); below,
    # letting go of the GIL costs more than the copy.
    _NOGIL_COPY = 65536
    # Values of at least this many bytes have their record's cache lines
    # asked for before its CRC is checked (a few lines arrive as fast alone).
    _PREFETCH_FROM = 256


cdef object _disk_value(KvStore store, bytes key):
    return _kd_value(store, store._kd, store._views, key)


cdef object _kd_value(KvStore store, _KeyDir kd, _SegmentViews views, bytes key):
    """_disk_value through a given directory and its views (a snapshot's may
    be a map the store has replaced since)."""
    cdef uint64_t loc, vsize
    cdef uint32_t kind
    cdef nk_rec r
    cdef uint64_t h = _kd_hash_obj(key)
    cdef const uint8_t *k = <const uint8_t *>PyBytes_AS_STRING(key)
    cdef Py_ssize_t klen = PyBytes_GET_SIZE(key)
    # The slot's copy of loc, and the key checked in the record it points
    # at (which a get decodes anyway): the directory's entry stays out of
    # the cache. When the first slot with the key's tag is another key's (or
    # its record is damaged), the full lookup, and the record there decoded
    # with its CRC, so that damage is named as such, with file and offset,
    # not as another key's record (a rare path: the CRC is checked again).
    if not kd.locate(h, &loc):
        return None
    if views.decode_at(loc, k, klen, &r, False) != NK_OK:
        if not kd.find(k, klen, h, &loc, &vsize):
            return None
        views.record_at(loc, k, klen, &r)
    stored = _stored_value(views, loc, &r, &kind, True)
    return stored if kind == 0 else _unpack(store, views, loc, stored, kind)


cdef bytes _stored_at(_SegmentViews views, uint64_t loc, bytes key, uint32_t *kind, bint may_release):
    cdef nk_rec r
    views.record_at(loc, <const uint8_t *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key), &r, False)
    return _stored_value(views, loc, &r, kind, may_release)


cdef bytes _stored_value(_SegmentViews views, uint64_t loc, const nk_rec *r, uint32_t *kind, bint may_release):
    """The value bytes of the record r decoded at loc (its CRC not checked
    yet), as stored (compressed or not: *kind), once its CRC is checked
    (CorruptionError naming file and offset otherwise). With may_release, a
    value of _NOGIL_COPY bytes or more is checked and copied with the GIL
    released."""
    kind[0] = (r.flags & NK_COMP_MASK) >> NK_COMP_SHIFT
    if r.vlen >= _NOGIL_COPY and may_release:
        return _copy_nogil(views, loc, r)
    if r.vlen >= _PREFETCH_FROM:
        views.prefetch(loc, r.size)
    if not nk_crc_ok(views.start(loc), <size_t>r.size - 4):
        views.damaged(loc, NK_BAD_CRC)
    # Copied out of the mapping before any Python code runs (close() unmaps
    # with the GIL held).
    return PyBytes_FromStringAndSize(<const char *>r.value, r.vlen)


cdef object _unpack(KvStore store, _SegmentViews views, uint64_t loc, bytes stored, uint32_t kind):
    """A stored value decompressed; CorruptionError naming the file and
    offset of its record when it does not decompress."""
    if kind == 0:
        return stored
    try:
        return _decompress(kind, stored, store.max_value_size)
    except CorruptionError as exc:
        seg, off = views._where(loc)
        path = os.path.join(views.dir, segment_name(seg))
        raise CorruptionError(f"{path}: {exc} at offset {off} (read by get)", path, off, seg) from None


cdef bytes _copy_nogil(_SegmentViews views, uint64_t loc, const nk_rec *r):
    """The stored value of the record r decoded at loc, its CRC checked and
    the bytes copied with the GIL released (the view pinned meanwhile)."""
    cdef const uint8_t *rec
    cdef bint ok
    cdef char *dst
    cdef uint64_t slot = loc >> _LOC_SHIFT
    out = PyBytes_FromStringAndSize(NULL, r.vlen)
    dst = PyBytes_AS_STRING(out)
    rec = views.start(loc)
    views.v[slot].pins += 1       # (by index: the table may grow meanwhile)
    try:
        with nogil:
            ok = nk_crc_ok(rec, <size_t>r.size - 4)
            memcpy(dst, r.value, r.vlen)
    finally:
        views.v[slot].pins -= 1
    if not ok:
        views.damaged(loc, NK_BAD_CRC)
    return out


cdef object _disk_live(KvStore store, bytes key):
    """The live value of key read from the log, or None (KvStore's reads)."""
    cdef object v
    store._check_open_for(key)
    v = _disk_value(store, key)
    if v is not None and store._expired(key):
        return None
    return v


cdef list _kd_keys(_KeyDir kd):
    """The keys of the directory, in insertion order."""
    cdef size_t cursor = 0
    cdef const uint8_t *k
    cdef size_t klen
    cdef uint64_t loc, vsize
    cdef list out = []
    while kd.next(&cursor, &k, &klen, &loc, &vsize):
        out.append(PyBytes_FromStringAndSize(<const char *>k, klen))
    return out


cdef bytes _kd_last(_KeyDir kd):
    """The last key of the directory in insertion order (a walk: O(keys))."""
    cdef size_t cursor = 0
    cdef const uint8_t *k
    cdef const uint8_t *last = NULL
    cdef size_t klen, last_len = 0
    cdef uint64_t loc, vsize
    while kd.next(&cursor, &k, &klen, &loc, &vsize):
        last = k
        last_len = klen
    if last == NULL:
        raise KeyError("popitem(): the store is empty")
    return PyBytes_FromStringAndSize(<const char *>last, last_len)


cdef _StoreLoader _new_loader(bint disk, object config):
    """The sink KvStore.open replays the log into."""
    if disk:
        return _DiskLoader(_KeyDir(), _SegmentViews(os.fsdecode(config.dir), config.max_segment_size),
                           _now_ms(), config.max_value_size)
    return _StoreLoader({}, {}, _now_ms(), config.max_value_size)


cdef _StoreLoader _reload_disk(object wal, object config, _StoreLoader old):
    """A new directory of a log recovery has just rewritten (its records
    moved), built by scanning it again: the same plan, nothing left to cut."""
    cdef _StoreLoader loader
    from norikv.wal import plan_recovery
    (<_DiskLoader>old).views.unmap_all()
    loader = _new_loader(True, config)
    loader.open_ms = old.open_ms
    plan_recovery(wal.dir, config.recovery_mode, loader, max_value_size=config.max_value_size)
    return loader
