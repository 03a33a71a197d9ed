# views.pyx: read-only mappings of a store's segments (values="disk").

cdef enum:
    _LOC_SHIFT = 40             # a location: slot << 40 | offset in the segment

cdef struct _View:
    uint64_t seg_id
    uint8_t *base               # NULL: a free slot
    size_t len
    # reads copying from it with the GIL released (changed with the GIL
    # held): it is not unmapped while this is not 0
    Py_ssize_t pins

cdef class _SegmentViews:
    cdef _View *v
    cdef uint32_t n             # slots [0, n) have been used
    cdef uint32_t cap
    cdef uint32_t active        # the slot of the Wal's active segment (when active_id matches)
    cdef uint64_t active_id     # UINT64_MAX: none
    cdef size_t min_len         # a view maps at least this much (the Wal's max_segment_size)
    cdef readonly object dir
    cdef _View *retired         # mappings replaced by larger ones, unmapped at close
    cdef uint32_t nretired
    cdef readonly uint64_t value_reads

    # The slot of segment seg_id, mapped from fd (or the path when fd < 0)
    # over at least `need` bytes. Runs no Python code when the view exists
    # and is large enough, or when fd >= 0 (so it may run inside the append
    # contract's window: log.pxd).
    cdef int64_t slot_for(self, uint64_t seg_id, int fd, size_t need) except -1
    # The location of a record about to be written at (seg_id, offset) of
    # the Wal's active segment (fd), n bytes long. Inside the window.
    cdef uint64_t locate_active(self, uint64_t seg_id, int fd, uint64_t offset, uint64_t n) except? 0xFFFFFFFFFFFFFFFF
    # The record at loc decoded (its CRC checked with check_crc) and checked
    # to be a put of `key` (key NULL: of any key): NK_OK (counted in
    # value_reads), -1 when it is another key's record or a delete, else the
    # decoding status. Never raises: a lookup by tag alone
    # (_KeyDir.locate) tries it, and asks the directory when it fails.
    cdef int decode_at(self, uint64_t loc, const uint8_t *key, size_t klen, nk_rec *r,
                       bint check_crc) noexcept
    # The record at loc, decoded and its CRC checked; CorruptionError naming
    # the file and offset when it is not a valid record of `key` (key NULL:
    # of any key).
    # check_crc False: the header and the key only (the caller checks the
    # CRC, record_ok).
    cdef int record_at(self, uint64_t loc, const uint8_t *key, size_t klen, nk_rec *r,
                       bint check_crc=*) except -1
    # Asks for the cache lines of the n bytes at loc ahead of a read.
    cdef void prefetch(self, uint64_t loc, size_t n) noexcept
    cdef const uint8_t *start(self, uint64_t loc) noexcept
    cdef int damaged(self, uint64_t loc, int st) except -1       # raises CorruptionError
    cdef void _wait_unpinned(self, uint32_t slot) noexcept
    cdef void forget_pins(self) noexcept        # in a child made by fork()
    # The size of the value at loc, given the key directory's `vsize`.
    cdef uint64_t value_size(self, uint64_t loc, uint64_t vsize) except? 0xFFFFFFFFFFFFFFFF
    cdef int drop_segment(self, uint64_t seg_id) except -1
    cdef void unmap_all(self) noexcept
