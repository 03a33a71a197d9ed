# The record codec's Python face: CRC32C, the flag bits, Record and Position,
# and the rules for a value's bytes (the argument check, the size bound, its
# stored form under compression). The codec itself is include/record.h.

from libc.stdlib cimport malloc, free
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_Check, PyBytes_CheckExact,
                            PyBytes_FromStringAndSize)
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Check
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.object cimport Py_LT, Py_LE, Py_EQ, Py_NE, Py_GT

import os

from norikv.compression import DEFAULT_MAX_VALUE_SIZE
from norikv.errors import CorruptionError


# ---------------------------------------------------------------- CRC32C

nk_crc32c_init(0 if os.environ.get("NORIKV_CRC32C_SOFTWARE") else 1)


def crc32c(data, unsigned int value=0):
    """CRC-32C of a bytes-like object, continuing from ``value`` (same
    convention as the ``crc32c`` package)."""
    cdef Py_buffer view
    cdef uint32_t out
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        with nogil:
            out = nk_crc32c(value, <const uint8_t *>view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)
    return out


def crc32c_implementation():
    """Name of the CRC32C code path in use: ``"sse4.2"``, ``"armv8-crc"`` or ``"software"``."""
    return nk_crc32c_name.decode()


def select_crc32c_implementation(str name):
    """Switch the CRC32C path (for tests): ``"hardware"`` or ``"software"``.

    Returns the name now in use. Asking for hardware on a CPU without it gives
    the software path. The environment variable ``NORIKV_CRC32C_SOFTWARE=1``
    forces the software path at import time."""
    if name not in ("hardware", "software"):
        raise ValueError("name must be 'hardware' or 'software'")
    nk_crc32c_select(1 if name == "hardware" else 0)
    return crc32c_implementation()


PLATFORM = NK_PLATFORM.decode()

# ---------------------------------------------------------------- values

# The largest value put/append accept and reads decompress, unless a store's
# or Wal's max_value_size says otherwise (norikv.compression documents it).
_DEFAULT_MAX_VALUE_SIZE = DEFAULT_MAX_VALUE_SIZE


cdef inline bytes _as_bytes(object obj, str what):  # no-cython-lint (codec.pxd)
    """bytes, bytearray and memoryview pass; anything else is a TypeError.
    A subclass of bytes or bytearray gives its own content: bytes(obj) would
    ask its __bytes__ (or __buffer__), which may say something else."""
    if PyBytes_CheckExact(obj):
        return <bytes>obj
    if PyBytes_Check(obj):
        return PyBytes_FromStringAndSize(PyBytes_AS_STRING(obj), PyBytes_GET_SIZE(obj))
    if PyByteArray_Check(obj):
        return PyBytes_FromStringAndSize(PyByteArray_AS_STRING(obj), PyByteArray_GET_SIZE(obj))
    if isinstance(obj, memoryview):     # memoryview cannot be subclassed
        return bytes(obj)
    raise TypeError(f"{what} must be bytes, bytearray or memoryview, not {type(obj).__name__}"
                    f" (encode text first, e.g. {what}.encode())")


def _check_bytes(obj, what):
    """bytes for a bytes-like argument; TypeError naming ``what`` otherwise."""
    return _as_bytes(obj, what)


cdef object _Compression = None

cdef object _compression_enum():
    global _Compression
    if _Compression is None:
        from norikv.compression import Compression
        _Compression = Compression
    return _Compression

cdef object _compress_fn = None
cdef object _decompress_fn = None

cdef bytes _compress(uint32_t kind, bytes value):
    global _compress_fn
    if _compress_fn is None:
        from norikv.compression import compress
        _compress_fn = compress
    return _compress_fn(kind, value)

cdef bytes _decompress(uint32_t kind, bytes stored, uint64_t max_size):
    """The value; CorruptionError when it does not decompress to at most max_size bytes."""
    global _decompress_fn
    if _decompress_fn is None:
        from norikv.compression import decompress
        _decompress_fn = decompress
    return _decompress_fn(kind, stored, max_size)


cdef inline int _check_value_size(object value, uint64_t max_size) except -1:  # no-cython-lint (codec.pxd)
    """ValueError when a value to be written is larger than max_value_size."""
    if <uint64_t>len(value) > max_size:
        raise ValueError(f"the value is {len(value)} bytes, over max_value_size {max_size}")
    return 0

cdef bytes _stored_form(bytes value, uint32_t kind, Py_ssize_t min_size, uint64_t max_value_size,
                        uint32_t *flags):
    """The stored form of a value under compression ``kind``: compressed (its
    bits added to flags) when it is at least min_size and that is smaller;
    raw when it is over max_value_size (only a foreign writer's value: a
    compressed one no open with that bound could read)."""
    cdef bytes c
    if kind and PyBytes_GET_SIZE(value) >= min_size and <uint64_t>PyBytes_GET_SIZE(value) <= max_value_size:
        c = _compress(kind, value)
        if PyBytes_GET_SIZE(c) < PyBytes_GET_SIZE(value):
            flags[0] |= kind << NK_COMP_SHIFT
            return c
    return value


# ---------------------------------------------------------------- runs of records

cdef class _Run:
    """Records written contiguously: as one atomic batch (``atomic``; a run
    of one is a plain record) or as plain records (the batch bits they carry
    cleared). Wal.append_batch and the store's batches encode through it, so
    a run's batch flags are set in one place (nk_batch_flags). It holds the
    bytes its records point into."""

    def __cinit__(self, Py_ssize_t capacity, bint atomic):
        self.recs = <_RunRecord *>malloc((capacity if capacity > 0 else 1) * sizeof(_RunRecord))
        if self.recs == NULL:
            raise MemoryError()
        self.cap = capacity
        self.n = 0
        self.atomic = atomic
        self.keep = []

    def __dealloc__(self):
        free(self.recs)

    cdef int add(self, bytes key, bytes value, uint32_t flags, uint64_t ttl_ms, uint64_t term,
                 uint64_t index) except -1:
        cdef _RunRecord *r
        if self.n >= self.cap:
            raise IndexError("the run is full")
        r = &self.recs[self.n]
        self.keep.append(key)
        self.keep.append(value)
        r.key = <const uint8_t *>PyBytes_AS_STRING(key)
        r.klen = <size_t>PyBytes_GET_SIZE(key)
        r.value = <const uint8_t *>PyBytes_AS_STRING(value)
        r.vlen = <size_t>PyBytes_GET_SIZE(value)
        r.flags = flags
        r.ttl_ms = ttl_ms
        r.term = term
        r.index = index
        self.n += 1
        return 0

    cdef inline uint32_t _flags(self, Py_ssize_t i) noexcept nogil:
        return nk_batch_flags(self.recs[i].flags, <size_t>i, <size_t>self.n if self.atomic else 1)

    cdef uint64_t length(self, Py_ssize_t i) noexcept nogil:
        cdef const _RunRecord *r = &self.recs[i]
        return nk_encoded_len(r.klen, r.vlen, self._flags(i), r.ttl_ms, r.term, r.index)

    cdef uint64_t size(self) noexcept nogil:
        cdef uint64_t total = 0
        cdef Py_ssize_t i
        for i in range(self.n):
            total += self.length(i)
        return total

    cdef void encode(self, uint8_t *p) noexcept nogil:
        cdef const _RunRecord *r
        cdef Py_ssize_t i
        for i in range(self.n):
            r = &self.recs[i]
            p += nk_encode(p, r.key, r.klen, r.value, r.vlen, self._flags(i), r.ttl_ms, r.term, r.index)


# The flag bits (docs/FORMAT.md), for tools such as the CLI's dump.
FLAG_TOMBSTONE = NK_FLAG_TOMBSTONE
FLAG_TTL = NK_FLAG_TTL
COMPRESSION_MASK = NK_COMP_MASK
FLAG_VERSION = NK_FLAG_VERSION
FLAG_BATCH_CONT = NK_FLAG_BATCH_CONT
FLAG_TTL_ABS = NK_FLAG_TTL_ABS
FLAG_BATCH_END = NK_FLAG_BATCH_END
# The largest TTL deadline (Unix ms): larger ones saturate to it (nk_deadline).
DEADLINE_MAX = 0x7FFFFFFFFFFFFFFF


cdef uint64_t _u64(object v, str what) except? 0:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"{what} must be an int, not {type(v).__name__}")
    if v < 0 or v > 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"{what} must be in 0..2**64-1, got {v}")
    return <uint64_t>v


cdef class Record:
    """One WAL record: a put or a delete of ``key``, optionally with a TTL,
    value compression and a (term, index) version.

    Records are immutable; ``with_compression``/``with_version`` return a new
    one. ``value`` is always the uncompressed value. Equality compares every
    field. A delete is written without compression bits; one read from a log
    that has them (nori-wal writes a delete's empty value compressed when
    asked) keeps them, its value decompressed, and encodes back to the same
    bytes."""

    def __init__(self, key, value=b"", *, tombstone=False, ttl_ms=None,
                 compression=None, version=None):
        self.key = _as_bytes(key, "key")
        self.value = _as_bytes(value, "value")
        self.flags = 0
        if tombstone:
            if len(self.value):
                raise ValueError("a delete record has no value")
            self.flags |= NK_FLAG_TOMBSTONE
        if ttl_ms is not None:
            self._ttl_ms = _u64(ttl_ms, "ttl_ms")
            self.flags |= NK_FLAG_TTL
        kind = int(_compression_enum().parse(compression))
        if not tombstone:  # a delete has no value to compress (and is written without the bits)
            self.flags |= (<uint32_t>kind) << NK_COMP_SHIFT
        if version is not None:
            term, index = version
            self._term = _u64(term, "term")
            self._index = _u64(index, "index")
            self.flags |= NK_FLAG_VERSION

    @staticmethod
    def put(key, value):
        """A put of ``key`` = ``value``."""
        cdef Record r = Record.__new__(Record)
        r.key = _as_bytes(key, "key")
        r.value = _as_bytes(value, "value")
        return r

    @staticmethod
    def put_with_ttl(key, value, seconds):
        """A put carrying ``ttl_ms`` = ``seconds`` * 1000 (relative, as nori-wal
        writes it; KvStore writes absolute deadlines, see docs/FORMAT.md)."""
        cdef Record r = Record.put(key, value)
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
            raise TypeError("seconds must be a number")
        if not 0 <= seconds < float("inf"):       # also NaN
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        ms = int(round(seconds * 1000))
        if ms > 0xFFFFFFFFFFFFFFFF:
            raise ValueError(f"seconds must be at most (2**64-1)/1000, got {seconds!r}")
        r._ttl_ms = <uint64_t>ms
        r.flags |= NK_FLAG_TTL
        return r

    @staticmethod
    def delete(key):
        """A delete (tombstone) of ``key``."""
        cdef Record r = Record.__new__(Record)
        r.key = _as_bytes(key, "key")
        r.value = b""
        r.flags = NK_FLAG_TOMBSTONE
        return r

    cdef Record _copy(self):
        cdef Record r = Record.__new__(Record)
        r.key = self.key
        r.value = self.value
        r.flags = self.flags
        r._ttl_ms = self._ttl_ms
        r._term = self._term
        r._index = self._index
        return r

    def with_compression(self, compression):
        """This record with its value compressed as ``compression`` on disk."""
        cdef Record r = self._copy()
        cdef uint32_t kind = int(_compression_enum().parse(compression))
        if r.flags & NK_FLAG_TOMBSTONE:
            kind = 0  # a delete has no value: it is written without compression bits
        r.flags = (r.flags & ~(<uint32_t>NK_COMP_MASK)) | (kind << NK_COMP_SHIFT)
        return r

    def with_version(self, term, index):
        """This record carrying the (term, index) version."""
        cdef Record r = self._copy()
        r._term = _u64(term, "term")
        r._index = _u64(index, "index")
        r.flags |= NK_FLAG_VERSION
        return r

    @property
    def tombstone(self):
        return bool(self.flags & NK_FLAG_TOMBSTONE)

    @property
    def ttl_ms(self):
        return self._ttl_ms if self.flags & NK_FLAG_TTL else None

    @property
    def compression(self):
        return _compression_enum()((self.flags & NK_COMP_MASK) >> NK_COMP_SHIFT)

    @property
    def version(self):
        return (self._term, self._index) if self.flags & NK_FLAG_VERSION else None

    cdef tuple _fields(self):
        return (self.key, self.value, self.flags, self.ttl_ms, self.version)

    def __eq__(self, other):
        if not isinstance(other, Record):
            return NotImplemented
        return self._fields() == (<Record>other)._fields()

    def __hash__(self):
        return hash(self._fields())

    def __repr__(self):
        parts = [f"key={self.key!r}"]
        if self.flags & NK_FLAG_TOMBSTONE:
            parts.append("tombstone=True")
        else:
            v = self.value if len(self.value) <= 32 else self.value[:32] + b"..."
            parts.append(f"value={v!r}")
        if self.flags & NK_FLAG_TTL:
            parts.append(f"ttl_ms={self._ttl_ms}")
        if self.flags & NK_COMP_MASK:
            parts.append(f"compression={self.compression.name}")
        if self.flags & NK_FLAG_VERSION:
            parts.append(f"version=({self._term}, {self._index})")
        if self.flags & NK_FLAGS_RESERVED:
            parts.append(f"flags=0x{self.flags:02x}")
        return f"Record({', '.join(parts)})"

    def __reduce__(self):
        return (_record_from_fields, (self.key, self.value, self.flags, self._ttl_ms,
                                      self._term, self._index))

    cdef inline uint32_t _wire_flags(self):
        """The flags as written: all of them (a delete made by norikv has no
        compression bits; one read from a nori-wal log may have them, and is
        written back as it was read)."""
        return self.flags

    cdef bytes _stored_value(self):
        cdef uint32_t kind = (self.flags & NK_COMP_MASK) >> NK_COMP_SHIFT
        if kind == 0:
            return self.value
        return _compress(kind, self.value)

    def encode(self):
        """The record's bytes exactly as they are written to a segment."""
        cdef bytes stored = self._stored_value()
        cdef uint32_t flags = self._wire_flags()
        cdef size_t n = nk_encoded_len(len(self.key), len(stored), flags, self._ttl_ms,
                                       self._term, self._index)
        cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
        nk_encode(<uint8_t *>PyBytes_AS_STRING(out), <const uint8_t *>PyBytes_AS_STRING(self.key),
                  len(self.key), <const uint8_t *>PyBytes_AS_STRING(stored), len(stored), flags,
                  self._ttl_ms, self._term, self._index)
        return out

    @staticmethod
    def decode(data, Py_ssize_t offset=0, *, max_value_size=DEFAULT_MAX_VALUE_SIZE):
        """Decodes the record at ``data[offset:]``; returns ``(record, size)``.

        Raises CorruptionError when the bytes are incomplete, fail the CRC or
        are malformed, or when a compressed value does not decompress to at
        most ``max_value_size`` bytes."""
        cdef Py_buffer view
        cdef nk_rec r
        cdef int st
        cdef uint64_t limit = _u64(max_value_size, "max_value_size")
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if offset < 0 or offset > view.len:
                raise ValueError("offset out of range")
            st = nk_decode(<const uint8_t *>view.buf + offset, view.len - offset, 1, &r)
            if st != NK_OK:
                raise CorruptionError(f"record at offset {offset}: {_status_text(st)}",
                                      None, offset, None)
            try:
                rec = _record_from_view(&r, limit)
            except CorruptionError as exc:
                raise CorruptionError(f"record at offset {offset}: {exc}", None, offset, None) from None
            return rec, r.size
        finally:
            PyBuffer_Release(&view)


def _record_from_fields(key, value, flags, ttl_ms, term, index):
    cdef Record r = Record.__new__(Record)
    r.key = key
    r.value = value
    r.flags = flags
    r._ttl_ms = ttl_ms
    r._term = term
    r._index = index
    return r


cdef Record _record_from_view(const nk_rec *v, uint64_t max_value_size):
    """The Record of a decoded view; CorruptionError (without a position:
    the caller adds it) when its value does not decompress within
    max_value_size. A delete's value is decompressed too, as nori-wal does."""
    cdef uint32_t kind = (v.flags & NK_COMP_MASK) >> NK_COMP_SHIFT
    cdef bytes value = PyBytes_FromStringAndSize(<const char *>v.value, v.vlen)
    if kind:
        value = _decompress(kind, value, max_value_size)
    return _record_with_value(v, value)


cdef Record _record_with_value(const nk_rec *v, bytes value):
    """The Record of a decoded view whose (decompressed) value is ``value``."""
    cdef Record r = Record.__new__(Record)
    r.key = PyBytes_FromStringAndSize(<const char *>v.key, v.klen)
    r.value = value
    r.flags = v.flags
    r._ttl_ms = v.ttl_ms
    r._term = v.term
    r._index = v.index
    return r


cdef str _status_text(int st):
    if st == NK_INCOMPLETE:
        return "incomplete record"
    if st == NK_BAD_VARINT:
        return "malformed varint (over 10 bytes or past 64 bits)"
    if st == NK_BAD_COMPRESSION:
        return "invalid compression bits (3)"
    if st == NK_BAD_CRC:
        return "CRC32C mismatch"
    return f"status {st}"


cdef class Position:
    """Where a record starts: ``(segment_id, offset)``. Ordered, hashable and
    unpackable like a tuple."""

    def __init__(self, segment_id=0, offset=0):
        self.segment_id = _u64(segment_id, "segment_id")
        self.offset = _u64(offset, "offset")

    def __iter__(self):
        return iter((self.segment_id, self.offset))

    def __richcmp__(self, other, int op):
        if not isinstance(other, Position):
            return NotImplemented
        a = (self.segment_id, self.offset)
        b = ((<Position>other).segment_id, (<Position>other).offset)
        if op == Py_LT:
            return a < b
        if op == Py_LE:
            return a <= b
        if op == Py_EQ:
            return a == b
        if op == Py_NE:
            return a != b
        if op == Py_GT:
            return a > b
        return a >= b

    def __hash__(self):
        return hash((self.segment_id, self.offset))

    def __repr__(self):
        return f"Position(segment_id={self.segment_id}, offset={self.offset})"

    def __reduce__(self):
        return (Position, (self.segment_id, self.offset))


cdef inline Position _pos(uint64_t seg, uint64_t off):  # no-cython-lint (codec.pxd says why)
    cdef Position p = Position.__new__(Position)
    p.segment_id = seg
    p.offset = off
    return p
