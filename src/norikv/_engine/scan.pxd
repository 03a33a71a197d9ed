# scan.pyx: reading segments with bounded memory, the recovery scan (which
# hands records to a _Sink as the atomic-batch rule says), and the iterator
# over a live Wal.

cimport cython

cdef enum:
    SCAN_END = 100            # _SegmentReader.next: a clean end (end of file or an all-zero tail)
    SCAN_FILL = 101           # _SegmentReader.step: read more first


@cython.final       # (its methods called directly: next runs once per record)
cdef class _SegmentReader:
    """Decodes the records of one segment file through a reusable buffer."""
    cdef int fd
    cdef readonly object path
    cdef uint64_t limit
    cdef uint8_t *buf
    cdef size_t cap
    cdef uint64_t buf_off
    cdef size_t buf_len
    cdef readonly uint64_t pos          # offset of the next record (or of the bad one)
    cdef readonly uint64_t rec_off      # offset of the record last returned
    cdef readonly uint64_t nonzero_end  # after a failure: end of the last non-zero byte
    cdef int check_crc

    cdef int open(self, object path, uint64_t start, int64_t limit, int check_crc) except -1
    cdef void close(self) noexcept
    cdef int set_limit(self, uint64_t limit) except -1
    cdef int _fill(self, uint64_t need) except -1
    cdef int _fill_c(self, uint64_t need) noexcept nogil
    cdef int _rest_is_zero(self, uint64_t start) except -1
    # NK_OK (r points into the buffer until the next call), SCAN_END, or the
    # status of the bad record at pos.
    cdef int next(self, nk_rec *r) except -1
    # next's decoding, without the GIL and without reading (see scan.pyx).
    cdef inline int step(self, nk_rec *r, uint64_t *need) noexcept nogil
    cdef int resync(self) except -1


cdef class _Sink:
    """What a recovery scan hands the records it keeps to (KvStore's loader,
    a collector for tests and tools); see scan.pyx."""
    cdef readonly uint64_t max_value_size
    cdef readonly object bad_value      # why the last record refused was damaged
    cdef object value                   # the value `check` decompressed

    cdef int check(self, const nk_rec *r) except -1
    cdef object _value(self, const nk_rec *r)
    cdef int on_record(self, const nk_rec *r, uint64_t seg_id, uint64_t offset) except -1
    cdef int stage(self, const nk_rec *r, uint64_t seg_id, uint64_t offset) except -1
    cdef int end_batch(self, bint commit) except -1


cdef class _RecordCollector(_Sink):
    cdef public list records
    cdef list staged


cdef class WalIterator:
    cdef _WalCore wal
    cdef _SegmentReader rd
    cdef uint64_t seg_id
    cdef uint64_t _start_offset
    cdef bint done

    cdef bint _open_next(self)
