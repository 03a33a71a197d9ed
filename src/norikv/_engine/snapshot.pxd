# snapshot.pyx: the state of a store's map at one instant, for range() and
# items(), kept by the first pre-image of each key changed after it.

cdef class _Snapshot:
    cdef object __weakref__
    cdef KvStore store
    cdef object lo, hi               # lo <= key < hi (None: no bound)
    cdef bint reverse
    cdef int64_t t0                  # the instant (Unix ms): TTLs are judged at it
    # the map the snapshot reads (the store's, until a reload replaces it)
    cdef dict data
    cdef _KeyDir kd
    cdef _SegmentViews views
    cdef dict expiry
    cdef bint registered             # in store._snaps: changes of the map are noted
    # key -> its state at t0 when it changed since: None (absent), or
    # (stored value, compression kind, deadline or -1, location in views)
    cdef dict undo
    cdef list fresh                  # keys noted since the last chunk (not yet in undo_keys)
    cdef object undo_keys            # SortedList of undo's keys (None until the first)
    cdef object bound                # keys up to it (in walking order) are behind the walk
    cdef bint done
    cdef list frozen                 # after a reload: the frozen map's keys ahead, in walking order
    cdef Py_ssize_t fpos             # ... the next one to walk
    cdef Py_ssize_t want             # the next chunk's size
    cdef list pending
    cdef Py_ssize_t pos

    cdef bint _ahead(self, bytes key) except -1
    cdef bint _dead(self, int64_t deadline) noexcept
    cdef int64_t _map_deadline(self, bytes key) except -2
    cdef list _map_keys(self)
    cdef object _value(self, bytes key)
    cdef list _keys(self)
    cdef int _unregister(self) except -1
    cdef list _chunk(self)
    cdef list _undone(self, object upper, bint final)


# Notes, for each live snapshot that has yet to reach key, key's state before
# the change the caller is about to make (or has made to the key directory:
# old_loc, found). Runs no Python code that could let another thread in.
cdef int _note_change(KvStore store, bytes key, PyObject *old_value, uint64_t old_loc,
                      bint found) except -1
# Before the store's map is replaced by a new one (a reload): each live
# snapshot keeps the old map, which nothing changes any more, and walks the
# keys it has left in it.
cdef bint _freeze_snapshots(KvStore store) except -1
