# A hand-written METH_FASTCALL entry point for KvStore.get.
#
# A Cython `def` method parses its arguments generically (keywords, defaults,
# a reference taken on every argument): about 50 machine instructions before
# the body runs, against a dozen for dict.get. Out of cache that matters more
# than the count suggests: the CPU overlaps the dict misses of successive
# calls only when a call is short enough to fit in its instruction window.
# So `get` is an entry that handles the common call shape straight away and
# hands anything else (keywords, non-bytes keys, TTL stores, a closed store)
# to the general `def`, which stays the one place with the full rules.
#
# Measured against Cython's own calling conventions (docs/DESIGN.md, "get and
# put"): kept for get, where it wins by 8-14 %; put's body is long enough
# that a method descriptor (@cython.binding(False)) does as well.

cdef object _call_general(object general, object self, PyObject **args, Py_ssize_t nargs,
                          PyObject *kwnames):
    """general(self, *args, **kwnames) for an entry's uncommon call shapes."""
    cdef PyObject *buf[_FORWARD_MAX]
    cdef Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames) if kwnames != NULL else 0
    cdef Py_ssize_t i
    if nargs + nkw + 1 > _FORWARD_MAX:
        return general(self, *[<object>args[i] for i in range(nargs)],
                       **{(<tuple>kwnames)[i]: <object>args[nargs + i] for i in range(nkw)})
    buf[0] = <PyObject *>self
    for i in range(nargs + nkw):
        buf[i + 1] = args[i]
    return PyObject_Vectorcall(general, buf, nargs + 1, kwnames)


cdef object _install_fastcall(type cls, PyMethodDef *slot, const char *name,
                              _fastcall_fn entry, const char *doc):
    """Makes `entry` the method `name` of cls; returns the general `def` it
    replaces (the entry's fallback). `slot` must live as long as the module."""
    general = cls.__dict__[name.decode()]
    slot.ml_name = name
    slot.ml_meth = <void *>entry
    slot.ml_flags = METH_FASTCALL | METH_KEYWORDS
    slot.ml_doc = doc
    (<dict>(<PyTypeObject *>cls).tp_dict)[name.decode()] = PyDescr_NewMethod(cls, slot)
    PyType_Modified(cls)
    return general


# ---------------------------------------------------------------- KvStore.get's entry
# It handles the call shape of a hot loop and passes every other call,
# unchanged, to the general def it replaces (store.pyx).

cdef PyMethodDef _get_slot


cdef object _get_entry(KvStore self, PyObject **args, Py_ssize_t nargs, PyObject *kwnames):
    cdef PyObject *v
    if kwnames != NULL or (nargs != 1 and nargs != 2) or not _PyBytes_CheckExact(args[0]):
        return _call_general(_get_general, self, args, nargs, kwnames)
    if self._behind_for(_PyBytes_AS_STRING(args[0]), _PyBytes_GET_SIZE(args[0])) and not self._closed:
        _catch_up(self, True)   # another process changed the key
    if not self._closed and PyDict_GET_SIZE(<PyObject *>self._expiry) == 0:
        if self._disk:
            d = _disk_value(self, <bytes>args[0])
            if d is not None:
                return d
        else:
            if self._has_pending():     # (other processes' newest puts, follow.pyx)
                d = _kd_value(self, self._pending, self._pending_views, <bytes>args[0])
                if d is not None:
                    return d
            v = _PyDict_GetItemWithError(<PyObject *>self._data, args[0])
            if v != NULL:
                return <object>v
        return <object>args[1] if nargs == 2 else None
    return _call_general(_get_general, self, args, nargs, kwnames)


_get_general = _install_fastcall(
    KvStore, &_get_slot, "get", <_fastcall_fn>_get_entry,
    "get($self, key, default=None)\n--\n\n"
    "The value of ``key``, or ``default``. Served from memory.")
