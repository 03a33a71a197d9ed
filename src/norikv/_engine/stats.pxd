# stats.pyx: KvStore.stats().

cdef dict _stats(KvStore store)
