# mapping.pyx: the bodies of KvStore's pop, popitem, setdefault, update,
# clear, ttl, backup and _backup_point (their docstrings are the methods').

cdef object _pop(KvStore self, key, default)
cdef object _popitem(KvStore self)
cdef object _setdefault(KvStore self, key, default)
cdef object _update(KvStore self, other, dict kwargs)
cdef object _clear(KvStore self)
cdef object _ttl(KvStore self, key)
cdef object _backup(KvStore self, dest, incremental)
cdef object _backup_point(KvStore self)
