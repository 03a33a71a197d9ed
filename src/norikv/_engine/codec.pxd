# codec.pyx: CRC32C, Record and Position, and the rules for a value's bytes.

# The bound of a value when no store or Wal says otherwise (256 MiB).
cdef uint64_t _DEFAULT_MAX_VALUE_SIZE

# bytes for a bytes-like argument (bytes, bytearray, memoryview); TypeError
# naming `what` otherwise. Inline in codec.pyx, as _pos below: the parts are
# one module, so the C compiler sees the body, unlike what cython-lint assumes.
cdef bytes _as_bytes(object obj, str what)  # no-cython-lint
# ValueError when a value to be written is over max_size bytes (inline too).
cdef int _check_value_size(object value, uint64_t max_size) except -1  # no-cython-lint
# A value's stored form under compression `kind` (bits added to flags[0]
# when it is stored compressed): the one rule for put, batches and snapshots.
cdef bytes _stored_form(bytes value, uint32_t kind, Py_ssize_t min_size, uint64_t max_value_size,
                        uint32_t *flags)
cdef bytes _compress(uint32_t kind, bytes value)
# CorruptionError when `stored` does not decompress to at most max_size bytes.
cdef bytes _decompress(uint32_t kind, bytes stored, uint64_t max_size)
cdef object _compression_enum()          # norikv.compression.Compression
cdef uint64_t _u64(object v, str what) except? 0
cdef str _status_text(int st)            # why nk_decode refused a record


cdef class Record:
    cdef readonly bytes key
    cdef readonly bytes value            # always uncompressed
    cdef readonly uint32_t flags
    cdef uint64_t _ttl_ms
    cdef uint64_t _term
    cdef uint64_t _index

    cdef Record _copy(self)
    cdef tuple _fields(self)
    cdef inline uint32_t _wire_flags(self)   # the flags as written
    cdef bytes _stored_value(self)       # the value as written (compressed per its flags)


# The Record of a decoded view (nk_rec), its value decompressed within
# max_value_size (CorruptionError without a position otherwise).
cdef Record _record_from_view(const nk_rec *v, uint64_t max_value_size)
# The Record of a decoded view whose (decompressed) value is `value`.
cdef Record _record_with_value(const nk_rec *v, bytes value)


cdef class Position:
    cdef readonly uint64_t segment_id
    cdef readonly uint64_t offset


# The Position (seg, off), on every record read_from yields. Its body is in
# codec.pyx, after the class: there Cython calls Position's tp_new directly
# and the C compiler inlines both into the caller. From a body here Cython
# generates a call through the type's tp_new pointer and a type check, out of
# line: +3 % of instructions per record of read_from (docs/performance.md).
# The parts are one module, so the inline holds, unlike what cython-lint
# assumes.
cdef Position _pos(uint64_t seg, uint64_t off)  # no-cython-lint


# A run of records written contiguously (Wal.append_batch, the store's batches).
ctypedef struct _RunRecord:
    const uint8_t *key
    const uint8_t *value
    size_t klen, vlen
    uint32_t flags
    uint64_t ttl_ms, term, index


cdef class _Run:
    cdef _RunRecord *recs
    cdef Py_ssize_t n, cap
    cdef bint atomic
    cdef list keep                      # the bytes objects `recs` points into

    # Adds a record (at most `capacity` of them, given at creation).
    cdef int add(self, bytes key, bytes value, uint32_t flags, uint64_t ttl_ms, uint64_t term,
                 uint64_t index) except -1
    cdef inline uint32_t _flags(self, Py_ssize_t i) noexcept nogil    # record i's, batch bits set
    cdef uint64_t length(self, Py_ssize_t i) noexcept nogil           # record i's bytes
    cdef uint64_t size(self) noexcept nogil                           # the run's bytes
    # Writes the run at p (room for size() bytes); no Python code, so it may
    # come between _reserve and _commit.
    cdef void encode(self, uint8_t *p) noexcept nogil
