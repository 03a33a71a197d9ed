# ondisk.pyx: what a values="disk" store adds to the store (store.pyx).

# The live value of key read from its record, or None when the key is not in
# the directory (expiry is the caller's check). CorruptionError naming the
# file and offset when the record there is damaged.
cdef object _disk_value(KvStore store, bytes key)
cdef object _kd_value(KvStore store, _KeyDir kd, _SegmentViews views, bytes key)
cdef object _disk_live(KvStore store, bytes key)
# The value bytes of key's record at loc as stored, its CRC checked; *kind its
# compression. may_release: a large value is copied with the GIL released.
cdef bytes _stored_at(_SegmentViews views, uint64_t loc, bytes key, uint32_t *kind, bint may_release)
# A stored value decompressed (CorruptionError naming file and offset).
cdef object _unpack(KvStore store, _SegmentViews views, uint64_t loc, bytes stored, uint32_t kind)
cdef list _kd_keys(_KeyDir kd)
cdef bytes _kd_last(_KeyDir kd)
cdef _StoreLoader _new_loader(bint disk, object config)
cdef _StoreLoader _reload_disk(object wal, object config, _StoreLoader old)
