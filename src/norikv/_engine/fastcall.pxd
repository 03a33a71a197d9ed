# fastcall.pyx: a METH_FASTCALL entry installed over KvStore.get.

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
    const char *_PyBytes_AS_STRING "PyBytes_AS_STRING"(PyObject *o)
    Py_ssize_t _PyBytes_GET_SIZE "PyBytes_GET_SIZE"(PyObject *o)
    PyObject *_PyDict_GetItemWithError "PyDict_GetItemWithError"(PyObject *d, PyObject *k) except? NULL

ctypedef object (*_fastcall_fn)(object, PyObject **, Py_ssize_t, PyObject *)

cdef enum:
    # At most this many arguments are forwarded on the stack to the general
    # path; more (always a TypeError there) go through a tuple.
    _FORWARD_MAX = 8

# general(self, *args, **kwnames): the entry's fallback for every other call shape.
cdef object _call_general(object general, object self, PyObject **args, Py_ssize_t nargs,
                          PyObject *kwnames)
# Makes `entry` the method `name` of cls; returns the general def it replaces.
cdef object _install_fastcall(type cls, PyMethodDef *slot, const char *name,
                              _fastcall_fn entry, const char *doc)
