# opening.pyx: KvStore.open's body.

cdef KvStore _open_store(type cls, dict o)

# The map a loader built becomes the store's (open, follow.pyx's reload).
cdef int _adopt(KvStore store, _StoreLoader loader) except -1
