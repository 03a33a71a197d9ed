# Hand-written METH_FASTCALL entry points for the hottest methods.
#
# A Cython `def` method parses its arguments generically (keywords, defaults,
# a reference taken on every argument): about 50 machine instructions before
# the body runs, against a dozen for dict.get. Out of cache that matters more
# than the count suggests: the CPU overlaps the dict misses of successive
# calls only when a call is short enough to fit in its instruction window.
# So `get` and `put` are entries that handle the common call shape straight
# away and hand anything else (keywords, non-bytes keys, TTL stores, a closed
# store) to the general `def`, which stays the one place with the full rules.

cdef extern from "Python.h":
    ctypedef struct PyMethodDef:
        const char *ml_name
        void *ml_meth
        int ml_flags
        const char *ml_doc
    ctypedef struct PyTypeObject:
        PyObject *tp_dict
    int METH_FASTCALL
    int METH_KEYWORDS
    object PyDescr_NewMethod(type cls, PyMethodDef *meth)
    void PyType_Modified(type cls)
    object PyObject_Vectorcall(object func, PyObject **args, size_t nargsf, PyObject *kwnames)
    Py_ssize_t PyTuple_GET_SIZE(PyObject *t)
    bint _PyBytes_CheckExact "PyBytes_CheckExact"(PyObject *o)
    PyObject *_PyDict_GetItemWithError "PyDict_GetItemWithError"(PyObject *d, PyObject *k) except? NULL

ctypedef object (*_fastcall_fn)(object, PyObject **, Py_ssize_t, PyObject *)

cdef enum:
    # At most this many arguments are forwarded on the stack to the general
    # path; more (always a TypeError there) go through a tuple.
    _FORWARD_MAX = 8


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
