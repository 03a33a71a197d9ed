# opening.pyx: KvStore.open's body.

cdef KvStore _open_store(type cls, dict o)
