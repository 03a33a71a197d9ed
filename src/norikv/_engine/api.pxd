# api.pyx: KvStore's methods beyond store.pyx (MutableMapping's rest, ttl,
# backup), written into its type dict.

cdef int _add_methods(type cls, list funcs) except -1
