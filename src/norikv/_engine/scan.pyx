# Reading segments: bounded-memory pread chunks, never a whole segment at
# once; the recovery scan, which applies the atomic-batch rule (record.h) for
# its sink; the iterator over a live Wal.

from libc.string cimport memmove
from libc.stdlib cimport free, realloc
from cpython.bytes cimport PyBytes_FromStringAndSize
from posix.unistd cimport close as c_close, pread
from posix.fcntl cimport open as c_open, O_RDONLY, O_CLOEXEC
from posix.stat cimport struct_stat, fstat

import os

from norikv.compression import DEFAULT_MAX_VALUE_SIZE
from norikv.errors import CorruptionError, io_error


cdef enum:
    _CHUNK = 1 << 20
    _HEADER_MAX = 64          # longest possible record header is 51 bytes


cdef class _SegmentReader:
    """Decodes records from one segment file through a reusable buffer."""

    def __cinit__(self):
        self.fd = -1
        self.buf = NULL

    def __dealloc__(self):
        self.close()

    cdef int open(self, object path, uint64_t start, int64_t limit, int check_crc) except -1:
        cdef struct_stat st
        cdef bytes bpath = os.fsencode(path)
        self.path = path
        self.fd = c_open(bpath, O_RDONLY | O_CLOEXEC)
        if self.fd < 0:
            raise io_error(errno, path, "open")
        if fstat(self.fd, &st) != 0:
            raise io_error(errno, path, "fstat")
        self.limit = <uint64_t>st.st_size
        if limit >= 0 and <uint64_t>limit < self.limit:
            self.limit = <uint64_t>limit
        self.pos = start
        self.buf_off = start
        self.buf_len = 0
        self.check_crc = check_crc
        return 0

    cdef void close(self) noexcept:
        if self.fd >= 0:
            c_close(self.fd)
            self.fd = -1
        if self.buf != NULL:
            free(self.buf)
            self.buf = NULL
            self.cap = 0

    cdef int set_limit(self, uint64_t limit) except -1:
        self.limit = limit
        return 0

    cdef int _fill(self, uint64_t need) except -1:
        """Makes the buffer hold [pos, pos + max(need, chunk)) clipped to the limit."""
        cdef int err
        with nogil:
            err = self._fill_c(need)
        if err < 0:
            raise MemoryError()
        if err:
            raise io_error(err, self.path, "read")
        return 0

    cdef int _fill_c(self, uint64_t need) noexcept nogil:
        """_fill without the GIL: 0, an errno of pread, or -1 (no memory)."""
        cdef uint64_t want = need if need > _CHUNK else _CHUNK
        cdef uint64_t left = self.limit - self.pos
        cdef size_t keep = 0
        cdef ssize_t got
        cdef uint8_t *nb
        cdef int err = 0
        if want > left:
            want = left
        if self.pos >= self.buf_off and self.pos < self.buf_off + self.buf_len:
            keep = <size_t>(self.buf_off + self.buf_len - self.pos)
            if keep >= want:
                return 0
        if want > self.cap:
            nb = <uint8_t *>realloc(self.buf, <size_t>want)
            if nb == NULL:
                return -1
            self.buf = nb
            self.cap = <size_t>want
        if keep:
            memmove(self.buf, self.buf + (self.pos - self.buf_off), keep)
        self.buf_off = self.pos
        self.buf_len = keep
        while self.buf_len < want:
            got = pread(self.fd, self.buf + self.buf_len, <size_t>(want - self.buf_len),
                        <long>(self.buf_off + self.buf_len))
            if got < 0:
                if errno == EINTR:
                    continue
                err = errno
                break
            if got == 0:
                break
            self.buf_len += got
        if err:
            return err
        if self.buf_len < want:       # the file shrank under us
            self.limit = self.buf_off + self.buf_len
        return 0

    cdef int _rest_is_zero(self, uint64_t start) except -1:
        """Whether [start, limit) is all zero bytes; sets nonzero_end."""
        cdef size_t n, i, skip
        cdef int zero = 1
        self.nonzero_end = start
        self.pos = start
        while self.pos < self.limit:
            self._fill(_CHUNK)
            # _fill may keep a buffer that starts before pos: look from pos on.
            skip = <size_t>(self.pos - self.buf_off)
            n = self.buf_len - skip
            if n == 0:
                break
            if not nk_all_zero(self.buf + skip, n):
                zero = 0
                i = n
                while i > 0 and self.buf[skip + i - 1] == 0:
                    i -= 1
                self.nonzero_end = self.pos + i
            self.pos += n
        self.pos = start
        return zero

    cdef int next(self, nk_rec *r) except -1:
        """NK_OK (r points into the buffer until the next call), SCAN_END, or
        the status of the bad record at self.pos."""
        cdef uint64_t need
        cdef int st
        while True:
            st = self.step(r, &need)
            if st == SCAN_FILL:
                self._fill(need)
            elif st == NK_OK or st == SCAN_END:
                return st
            elif self._rest_is_zero(self.pos):
                return SCAN_END
            else:
                return st

    cdef inline int step(self, nk_rec *r, uint64_t *need) noexcept nogil:
        """next's decoding, without the GIL and without reading: NK_OK (the
        record in r, pos past it), SCAN_END, SCAN_FILL (the buffer must
        hold *need bytes at pos first: _fill or _fill_c, then step again),
        or the status of the bad record at pos (not yet checked for a zero
        tail, which is a clean end: _rest_is_zero)."""
        cdef uint64_t avail
        cdef int st
        if self.pos >= self.limit:
            return SCAN_END
        if self.pos < self.buf_off or self.pos > self.buf_off + self.buf_len:
            self.buf_len = 0
            self.buf_off = self.pos
        avail = self.buf_off + self.buf_len - self.pos
        if avail < _HEADER_MAX and self.pos + avail < self.limit:
            need[0] = _HEADER_MAX
            return SCAN_FILL
        st = nk_decode(self.buf + (self.pos - self.buf_off), <size_t>avail, self.check_crc, r)
        if st == NK_OK:
            self.rec_off = self.pos
            self.pos += r.size
            return NK_OK
        if st == NK_INCOMPLETE and self.pos + avail < self.limit and r.size <= self.limit - self.pos:
            need[0] = r.size if r.size != UINT64_MAX else avail + _HEADER_MAX
            return SCAN_FILL
        return st

    cdef int resync(self) except -1:
        """After a bad record at pos: moves pos to the next offset at which a
        record decodes with a valid CRC (or to the limit). Returns 1 if found."""
        cdef nk_rec r
        cdef uint64_t cand = self.pos + 1
        cdef int st
        while cand < self.limit:
            self.pos = cand
            if cand < self.buf_off or cand + _HEADER_MAX > self.buf_off + self.buf_len:
                self._fill(_HEADER_MAX)
            st = nk_decode(self.buf + (cand - self.buf_off), <size_t>(self.buf_off + self.buf_len - cand), 1, &r)
            if st == NK_INCOMPLETE and r.size != UINT64_MAX and r.size <= self.limit - cand \
                    and cand + r.size > self.buf_off + self.buf_len:
                self._fill(r.size)
                st = nk_decode(self.buf + (cand - self.buf_off), <size_t>(self.buf_off + self.buf_len - cand), 1, &r)
            if st == NK_OK:
                self.pos = cand
                return 1
            cand += 1
        self.pos = self.limit
        return 0


cdef class _Sink:
    """Receives the records of a recovery scan in log order, with the batch
    rule (nk_batch_step, docs/FORMAT.md) already applied by the scanner:
    ``on_record`` for a record to apply now; ``stage`` for a record of an
    atomic batch, followed later by ``end_batch(True)`` (apply the staged
    records, in order) or ``end_batch(False)`` (discard them). on_record is
    never called while records are staged. (Subclassed by KvStore's loader.)

    Before a record with compressed value is handed on, the scanner calls
    ``check``: a value that does not decompress to at most
    ``max_value_size`` bytes makes the record damaged (``check`` returns 1
    and says why in ``bad_value``); otherwise the decompressed value is in
    ``value`` for on_record/stage to take, so it is decompressed once."""

    def __cinit__(self, *args, **kwargs):
        self.max_value_size = _DEFAULT_MAX_VALUE_SIZE

    def __init__(self, max_value_size=DEFAULT_MAX_VALUE_SIZE):
        self.max_value_size = _u64(max_value_size, "max_value_size")

    cdef int check(self, const nk_rec *r) except -1:
        """0: the compressed value of r decompresses (now in ``value``);
        1: it is damaged (see the class)."""
        cdef uint32_t kind = (r.flags & NK_COMP_MASK) >> NK_COMP_SHIFT
        try:
            self.value = _decompress(kind, PyBytes_FromStringAndSize(<const char *>r.value, r.vlen),
                                     self.max_value_size)
        except CorruptionError as exc:
            self.value = None
            self.bad_value = str(exc)
            return 1
        return 0

    cdef object _value(self, const nk_rec *r):
        """The value of r as check left it (stored bytes when uncompressed)."""
        if r.flags & NK_COMP_MASK:
            return self.value
        return PyBytes_FromStringAndSize(<const char *>r.value, r.vlen)

    cdef int on_record(self, const nk_rec *r, uint64_t seg_id, uint64_t offset) except -1:
        return 0

    cdef int stage(self, const nk_rec *r, uint64_t seg_id, uint64_t offset) except -1:
        return 0

    cdef int end_batch(self, bint commit) except -1:
        return 0


cdef class _RecordCollector(_Sink):
    """A sink that keeps the Records a replay applies, in order (used by tests
    and tools)."""
    def __init__(self, max_value_size=DEFAULT_MAX_VALUE_SIZE):
        _Sink.__init__(self, max_value_size)
        self.records = []
        self.staged = []

    cdef int on_record(self, const nk_rec *r, uint64_t seg_id, uint64_t offset) except -1:
        self.records.append((_record_with_value(r, self._value(r)), _pos(seg_id, offset)))
        return 0

    cdef int stage(self, const nk_rec *r, uint64_t seg_id, uint64_t offset) except -1:
        self.staged.append((_record_with_value(r, self._value(r)), _pos(seg_id, offset)))
        return 0

    cdef int end_batch(self, bint commit) except -1:
        if commit:
            self.records.extend(self.staged)
        self.staged.clear()
        return 0


cdef inline int _feed(_Sink sink, int action, const nk_rec *r, uint64_t seg_id,
                      uint64_t offset) except -1:
    """Hands a record to sink as nk_batch_step decided."""
    if action == NK_BATCH_PLAIN:
        return sink.on_record(r, seg_id, offset)
    if action == NK_BATCH_STAGE:
        return sink.stage(r, seg_id, offset)
    if action == NK_BATCH_COMMIT:
        sink.stage(r, seg_id, offset)
        return sink.end_batch(True)
    sink.end_batch(False)                 # NK_BATCH_BREAK
    return sink.on_record(r, seg_id, offset)


cdef dict _scan_result(uint64_t records, uint64_t end, object status, bint value_damage,
                       uint64_t file_size, uint64_t nonzero_end, nk_batch *batch,
                       uint64_t batch_dropped, list skipped, list dropped):
    return dict(records=records, end=end, status=status, value_damage=value_damage,
                file_size=file_size, nonzero_end=nonzero_end,
                batch_open=batch.start if batch.count else None, batch_records=batch.count,
                batch_dropped=batch_dropped, skipped=skipped, dropped=[tuple(d) for d in dropped])


def scan_segment(path, uint64_t seg_id, _Sink sink=None, *, int64_t limit=-1,
                 bint skip_corrupt=False, bint final=True):
    """Scans one segment, handing each valid record to ``sink`` as the atomic
    batch rule says, after the sink has judged its value (see _Sink).

    ``final``: the segment is the last of the log. Returns a dict:
    ``records`` (valid records read, less those of a batch broken by damage
    when ``skip_corrupt``), ``end`` (offset of the clean end, or of the first
    bad record), ``status`` (``None`` when clean, else a reason),
    ``value_damage`` (the bad record is whole, its CRC holds, but its value
    does not decompress within the sink's max_value_size: damage, never a
    torn write), ``file_size``, ``nonzero_end`` (end of the last non-zero
    byte after a bad record), ``batch_open`` (offset of an atomic batch left
    unterminated where the log may go on -- the end of a final segment, or
    the damage that stopped the scan -- for recovery to cut; else None) and
    ``batch_records`` (its records), ``batch_dropped`` (records of broken
    batches that are never applied: a run ended by a record without
    BATCH_END, or left open at the clean end of a non-final segment).

    With ``skip_corrupt`` damage is skipped and the scan goes on: ``status``
    stays None, ``end`` is where the segment's data ends, ``skipped`` lists
    the damaged spans as (start, end, reason, records before it), and
    ``dropped`` the byte ranges that a rewrite leaves out: those spans and
    the records of an atomic batch one of them broke (the records before the
    damage; and after it too when the damaged record is whole and says the
    batch goes on). The sink never sees a dropped record, or sees its batch
    discarded with end_batch(False)."""
    cdef _SegmentReader rd = _SegmentReader()
    cdef nk_rec r
    cdef int st, action
    cdef uint64_t count = 0
    cdef uint64_t batch_dropped = 0
    cdef nk_batch batch
    cdef uint64_t bad_at, drop_from
    cdef bint dropping = False
    cdef list skipped = []
    cdef list dropped = []
    cdef object reason
    batch.start = batch.count = batch.closed = 0
    rd.open(path, 0, limit, 1)
    try:
        file_size = rd.limit
        while True:
            st = rd.next(&r)
            if st == NK_OK:
                if dropping:
                    if r.flags & (NK_FLAG_BATCH_CONT | NK_FLAG_BATCH_END):
                        # The rest of an atomic batch whose damaged record was skipped.
                        dropped[len(dropped) - 1][1] = rd.pos     # (no wraparound: not [-1])
                        dropping = (r.flags & NK_FLAG_BATCH_CONT) != 0
                        continue
                    dropping = False
                if sink is None or not (r.flags & NK_COMP_MASK) or not sink.check(&r):
                    count += 1
                    action = nk_batch_step(&batch, r.flags, rd.rec_off)
                    if action == NK_BATCH_BREAK:
                        batch_dropped += batch.closed
                    if sink is not None:
                        _feed(sink, action, &r, seg_id, rd.rec_off)
                    continue
                # Whole, its CRC holds, but its value is damaged (the sink says why).
                bad_at = rd.rec_off
                if not skip_corrupt:
                    rd._rest_is_zero(bad_at)
                    return _scan_result(count, bad_at, sink.bad_value, True, file_size,
                                        rd.nonzero_end, &batch, batch_dropped, skipped, dropped)
                reason = sink.bad_value
                drop_from = bad_at
                if batch.count:
                    drop_from = batch.start
                    count -= nk_batch_drop(&batch)
                    sink.end_batch(False)
                skipped.append((bad_at, rd.pos, reason, count))
                dropped.append([drop_from, rd.pos])
                dropping = (r.flags & NK_FLAG_BATCH_CONT) != 0
                continue
            dropping = False
            if st == SCAN_END:
                if not final and batch.count:
                    # Never completed: batches never span segments.
                    batch_dropped += nk_batch_drop(&batch)
                    if sink is not None:
                        sink.end_batch(False)
                return _scan_result(count, rd.pos, None, False, file_size, rd.pos, &batch,
                                    batch_dropped, skipped, dropped)
            if skip_corrupt:
                bad_at = rd.pos
                drop_from = bad_at
                if batch.count:
                    # The damage broke an atomic batch: its records before the
                    # damage go too.
                    drop_from = batch.start
                    count -= nk_batch_drop(&batch)
                    if sink is not None:
                        sink.end_batch(False)
                rd.resync()
                skipped.append((bad_at, rd.pos, _status_text(st), count))
                dropped.append([drop_from, rd.pos])
                if rd.pos >= rd.limit:
                    return _scan_result(count, rd.pos, None, False, file_size, rd.pos, &batch,
                                        batch_dropped, skipped, dropped)
                continue
            return _scan_result(count, rd.pos, _status_text(st), False, file_size, rd.nonzero_end,
                                &batch, batch_dropped, skipped, dropped)
    finally:
        rd.close()
        if sink is not None and batch.count:
            sink.end_batch(False)       # a run left open here is never applied


def segment_records(path, uint64_t start=0):
    """Lists the records of a segment from ``start`` as they are stored,
    with the scanner recovery uses but without decompressing values:
    yields ``(offset, fields)``, fields a dict of size, flags, key, vlen
    (the stored value's size), ttl_ms, term and index (None when absent);
    at a bad record, a last ``(offset, reason)``. An all-zero tail is a clean
    end. (For ``norikv dump``.)"""
    cdef _SegmentReader rd = _SegmentReader()
    cdef nk_rec r
    cdef int st
    rd.open(path, start, -1, 1)
    try:
        while True:
            st = rd.next(&r)
            if st == SCAN_END:
                return
            if st != NK_OK:
                yield rd.pos, _status_text(st)
                return
            fields = dict(size=r.size, flags=r.flags,
                          key=PyBytes_FromStringAndSize(<const char *>r.key, r.klen), vlen=r.vlen,
                          ttl_ms=r.ttl_ms if r.flags & NK_FLAG_TTL else None,
                          term=r.term if r.flags & NK_FLAG_VERSION else None,
                          index=r.index if r.flags & NK_FLAG_VERSION else None)
            yield rd.rec_off, fields
    finally:
        rd.close()


def copy_valid_records(src, dst, uint64_t end, dropped):
    """Writes the bytes [0, end) of segment ``src`` to a new file ``dst``,
    leaving out the ``dropped`` byte ranges (what scan_segment with
    skip_corrupt found), and fsyncs it; returns its size. OSError as raised
    (the caller names the segment and removes ``dst``)."""
    cdef uint64_t pos = 0, a, b, n, size = 0
    keep = []
    for a, b in sorted(dropped):
        if a > pos:
            keep.append((pos, min(a, end)))
        if b > pos:
            pos = b
    if pos < end:
        keep.append((pos, end))
    with open(src, "rb") as f, open(dst, "wb") as out:
        for a, b in keep:
            f.seek(a)
            n = b - a
            while n:
                chunk = f.read(min(n, <uint64_t>_CHUNK))
                if not chunk:
                    raise CorruptionError(f"{os.fspath(src)} shrank while being rewritten",
                                          os.fspath(src), a, None)
                out.write(chunk)
                n -= len(chunk)
                size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return size


cdef class WalIterator:
    """Iterates ``(Record, Position)`` over the segments of a Wal, in order."""

    def __iter__(self):
        return self

    def __next__(self):
        cdef nk_rec r
        cdef int st
        cdef uint64_t seg
        if self.done:
            raise StopIteration
        while True:
            if self.rd is None:
                if not self._open_next():
                    self.done = True
                    raise StopIteration
            if self.seg_id == self.wal.seg_id and not self.wal.closed:
                self.rd.set_limit(self.wal.seg_size)
            st = self.rd.next(&r)
            if st == NK_OK:
                try:
                    rec = _record_from_view(&r, self.wal.max_value_size)
                except CorruptionError as exc:
                    self.rd.pos = self.rd.rec_off     # stays on it: the next call raises again
                    raise CorruptionError(f"{self.rd.path}: {exc} at offset {self.rd.rec_off}",
                                          os.fspath(self.rd.path), self.rd.rec_off,
                                          self.seg_id) from None
                return (rec, _pos(self.seg_id, self.rd.rec_off))
            if st == SCAN_END:
                if self.seg_id == self.wal.seg_id and not self.wal.closed \
                        and self.rd.pos < self.wal.seg_size:
                    continue
                self.rd.close()
                self.rd = None
                seg = self.seg_id
                if seg == UINT64_MAX:       # the last possible id: seg + 1 would wrap to 0
                    self.done = True
                    raise StopIteration
                self.seg_id = seg + 1
                continue
            raise CorruptionError(
                f"{self.rd.path}: {_status_text(st)} at offset {self.rd.pos}",
                os.fspath(self.rd.path), self.rd.pos, self.seg_id)

    cdef bint _open_next(self):
        """Opens the first segment with id >= self.seg_id; False at the end."""
        cdef uint64_t start = 0
        ids = [i for i in self.wal._segment_ids() if i >= self.seg_id]
        if not ids:
            return False
        if ids[0] == self.seg_id:
            start = self._start_offset
        else:
            start = 0
        self.seg_id = ids[0]
        self._start_offset = 0
        self.rd = _SegmentReader()
        self.rd.open(self.wal._segment_path(self.seg_id), start, -1, 1)
        return True

    def close(self):
        """Releases the file held open by the iterator."""
        if self.rd is not None:
            self.rd.close()
            self.rd = None
        self.done = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
