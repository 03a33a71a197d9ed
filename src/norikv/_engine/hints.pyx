# Hint files (Bitcask's): for a sealed segment NNNNNN.wal, NNNNNN.hint lists
# the records an open applies from it -- flags, key, offset, value size, TTL
# -- so that a values="disk" store rebuilds its key directory without
# reading the values. The segments stay exactly nori-wal's (which ignores
# files whose names do not parse as NNNNNN.wal). A hint is optional: one
# that is missing, damaged (its CRC32C), or not about the segment as it is
# now (its size and a BLAKE2b digest of its last 64 KiB) is ignored and the
# segment scanned. Written by scanning the sealed segment (write_hint) with
# the reader and the rules of the scan an open makes, so a hint says exactly
# what the scan would; that scan runs without the GIL, beside the store's
# writer.
#
# Layout, little-endian: "NORIKVH1", u64 segment id, u64 segment size, u64
# entries, the 8-byte BLAKE2b digest of the segment's tail (not a CRC: a
# span ending with whole records and their CRCs has the same CRC32C
# whatever those records say); the entries: u8 flags, varint
# key length, key, varint offset, varint value size (uncompressed; absent
# for a delete), varint TTL (when the TTL flag is set); u32 CRC32C of all
# that precedes.

from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, memcmp
from posix.unistd cimport close as c_close, pread
from posix.fcntl cimport open as c_open, O_RDONLY, O_CLOEXEC, O_NONBLOCK
from posix.mman cimport mmap, munmap, PROT_READ, MAP_PRIVATE, MAP_FAILED
from posix.stat cimport struct_stat, fstat, S_ISREG
from cpython.bytes cimport PyBytes_FromStringAndSize

import hashlib
import os
import struct
import threading
import weakref

cdef enum:
    _HINT_HEADER = 40
    _HINT_TAIL = 65536

cdef bytes _HINT_MAGIC = b"NORIKVH1"


def hint_name(uint64_t seg_id):
    """The hint file's name of segment seg_id."""
    return _hint_path(segment_name(seg_id))


cdef inline object _hint_path(object seg_path):
    """The hint file's path beside segment file seg_path (NNNNNN.wal)."""
    return seg_path[:len(seg_path) - 4] + ".hint"


cdef int _open_hint(object seg_path, struct_stat *st) except -2:
    """A read-only descriptor of segment file seg_path's hint, its stat in
    *st; -1 when there is no hint that is a regular file (a FIFO in its
    place opens without waiting for a writer, then counts as no hint)."""
    cdef int fd = c_open(os.fsencode(_hint_path(seg_path)), O_RDONLY | O_CLOEXEC | O_NONBLOCK)
    if fd < 0:
        return -1
    if fstat(fd, st) != 0 or not S_ISREG(st.st_mode):
        c_close(fd)
        return -1
    return fd


cdef inline bint _hint_size_ok(uint64_t n, uint64_t seg_size) noexcept:
    """Whether n bytes can be a hint of a seg_size-byte segment: a header
    and a CRC at least, and never much larger than its segment."""
    return _HINT_HEADER + 4 <= n <= 2 * seg_size + 4096


cdef bint _hint_header_ok(const uint8_t *head, uint64_t n, uint64_t seg_id, uint64_t seg_size,
                          uint64_t *count) noexcept:
    """Whether head, the header of an n-byte hint, is one of segment seg_id
    as it is (seg_size bytes); its entry count in *count. (The rest, its
    CRC and the segment's tail: _replay_hint.)"""
    cdef uint64_t h_seg, h_size
    memcpy(&h_seg, head + 8, 8)
    memcpy(&h_size, head + 16, 8)
    memcpy(count, head + 24, 8)
    return (memcmp(head, <const char *>_HINT_MAGIC, 8) == 0 and h_seg == seg_id and h_size == seg_size
            and _hint_size_ok(n, seg_size))


ctypedef struct _HintBuf:
    # The entries of a hint being written, in C (the scan runs without the GIL).
    uint8_t *buf
    size_t used, cap
    size_t batch_start          # where the staged records of a batch begin
    uint64_t count              # entries applied
    uint64_t staged             # entries of the batch under way


cdef int _hint_add(_HintBuf *h, const nk_rec *r, uint64_t offset, uint64_t vsize) noexcept nogil:
    """Appends r's entry (vsize: its value's size, uncompressed); -1 when
    out of memory."""
    cdef size_t need = 1 + 10 + r.klen + 10 + 10 + 10
    cdef uint8_t *p
    if h.used + need > h.cap:
        p = <uint8_t *>realloc(h.buf, (h.used + need) * 2)
        if p == NULL:
            return -1
        h.buf = p
        h.cap = (h.used + need) * 2
    p = h.buf + h.used
    p[0] = <uint8_t>(r.flags & ~(<uint32_t>NK_FLAGS_BATCH))
    p = nk_put_varint(p + 1, r.klen)
    memcpy(p, r.key, r.klen)
    p = nk_put_varint(p + r.klen, offset)
    if not r.flags & NK_FLAG_TOMBSTONE:
        p = nk_put_varint(p, vsize)
    if r.flags & NK_FLAG_TTL:
        p = nk_put_varint(p, r.ttl_ms)
    h.used = p - h.buf
    return 0


cdef void _hint_end_batch(_HintBuf *h, bint commit) noexcept nogil:
    """The batch under way (if any) applied, or dropped."""
    if commit:
        h.count += h.staged
    elif h.staged:
        h.used = h.batch_start
    h.staged = 0


cdef int _hint_feed(_HintBuf *h, int action, const nk_rec *r, uint64_t offset, uint64_t vsize) noexcept nogil:
    """r's entry, as nk_batch_step decided (scan.pyx's _feed, for a hint)."""
    if action == NK_BATCH_BREAK:
        _hint_end_batch(h, False)
    if action == NK_BATCH_PLAIN or action == NK_BATCH_BREAK:
        h.count += 1
        return _hint_add(h, r, offset, vsize)
    if h.staged == 0:
        h.batch_start = h.used
    h.staged += 1
    if _hint_add(h, r, offset, vsize):
        return -1
    if action == NK_BATCH_COMMIT:
        _hint_end_batch(h, True)
    return 0


cdef uint64_t _uncompressed_size(_Sink checker, const nk_rec *r) noexcept:
    """The uncompressed size of r's compressed value, as the recovery scan
    judges it (_Sink.check: within max_value_size); UINT64_MAX when damaged."""
    cdef uint64_t n
    try:
        if checker.check(r):
            return UINT64_MAX
        n = len(checker.value)
        checker.value = None
        return n
    except BaseException:           # (no memory: then no hint)
        return UINT64_MAX


# Hint scans begun and ended in this process, for tests (_test_hint_scans).
cdef uint64_t _hint_scans_begun = 0, _hint_scans_ended = 0


def _test_hint_scans(double hold_gil=0, uint64_t past=0):
    """Test hook: (hint scans begun, ended, ended after spinning with the
    GIL held until more than `past` have ended or hold_gil seconds passed)
    in this process: only a scan that runs without the GIL can end during
    the spin."""
    cdef uint64_t ended = nk_load_acquire_u64(&_hint_scans_ended)
    cdef double end = _now_monotonic() + hold_gil
    while nk_load_acquire_u64(&_hint_scans_ended) <= past and _now_monotonic() < end:
        pass
    return nk_load_acquire_u64(&_hint_scans_begun), ended, nk_load_acquire_u64(&_hint_scans_ended)


cdef int _hint_scan(_SegmentReader rd, _Sink checker, _HintBuf *h, int *err) noexcept nogil:
    """The entries of the segment rd reads (from its start) into h: the
    records the recovery scan (scan_segment, final=False) applies, by its
    rules: the reader's decoding (CRC checked), the batch rule of record.h,
    _Sink.check for a compressed value (the only step that takes the GIL).
    0; 1 when no hint can say what a scan would (a bad record, a damaged
    value, a zero tail: the scan stops there, before the end); -1 when out
    of memory; 2 when a read failed (its errno in *err)."""
    cdef nk_rec r
    cdef nk_batch batch
    cdef uint64_t need, vsize
    cdef int st
    batch.start = batch.count = batch.closed = 0
    while True:
        st = rd.step(&r, &need)
        if st == SCAN_FILL:
            err[0] = rd._fill_c(need)
            if err[0] < 0:
                return -1
            if err[0]:
                return 2
            continue
        if st == SCAN_END:
            break
        if st != NK_OK:
            return 1
        vsize = r.vlen
        if r.flags & NK_COMP_MASK:
            with gil:
                vsize = _uncompressed_size(checker, &r)
            if vsize == UINT64_MAX:
                return 1
        if _hint_feed(h, nk_batch_step(&batch, r.flags, rd.rec_off), &r, rd.rec_off, vsize):
            return -1
    _hint_end_batch(h, False)       # never completed: batches never span segments
    return 0


cdef bytes _tail_digest(int fd, uint64_t size):
    """The BLAKE2b digest (8 bytes) of the last 64 KiB (or fewer) before
    `size` of a segment; b"" when it cannot be read."""
    cdef uint64_t start = size - _HINT_TAIL if size > _HINT_TAIL else 0
    try:
        data = os.pread(fd, <Py_ssize_t>(size - start), <Py_ssize_t>start)
    except OSError:
        return b""
    if <uint64_t>len(data) != size - start:
        return b""
    return hashlib.blake2b(data, digest_size=8).digest()


def write_hint(dirpath, uint64_t seg_id, max_value_size=DEFAULT_MAX_VALUE_SIZE):
    """Writes the hint file of sealed segment seg_id (through a temporary
    file and a rename: a reader sees the whole hint or none). Returns False,
    writing nothing, when the segment does not end cleanly (damage, an open
    batch, a preallocated tail): an open has to scan it anyway.

    The segment is read and decoded without the GIL (_hint_scan), so a
    store's writer goes on at full speed while its hint writer reads a
    sealed segment; with `pread`, as recovery reads, so a read error is an
    OSError (the hint is not written), never a SIGBUS."""
    cdef _Sink checker = _Sink(max_value_size)
    cdef _SegmentReader rd = _SegmentReader()
    cdef _HintBuf h
    cdef uint64_t size
    cdef int res, err = 0
    seg_path = os.path.join(dirpath, segment_name(seg_id))
    h.buf = NULL
    h.used = h.cap = h.batch_start = h.count = h.staged = 0
    try:
        rd.open(seg_path, 0, -1, 1)
        size = rd.limit
        with nogil:
            nk_add_u64(&_hint_scans_begun, 1)
            res = _hint_scan(rd, checker, &h, &err)
            nk_add_u64(&_hint_scans_ended, 1)
        if res < 0:
            raise MemoryError()
        if res == 2:
            raise io_error(err, seg_path, "read")
        if res or rd.pos != size:
            return False
        tail = _tail_digest(rd.fd, size)
        if not tail:
            return False
        entries = PyBytes_FromStringAndSize(<const char *>h.buf, h.used)
    finally:
        free(h.buf)
        rd.close()
    data = _HINT_MAGIC + struct.pack("<QQQ", seg_id, size, h.count) + tail + entries
    data += struct.pack("<I", crc32c(data))
    path = os.path.join(dirpath, hint_name(seg_id))
    # Per process: several processes' hint writers may write the same hint
    # (a leftover of a dead one is removed by the next writer, _remove_stale_hints).
    tmp = f"{path}-tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)              # (a full disk: no half hint left behind)
        except OSError:
            pass
        raise
    return True


ctypedef struct _HintEntry:
    uint32_t flags
    const uint8_t *key
    uint64_t klen, off, vsize, ttl


cdef int _hint_parse(const uint8_t **p, const uint8_t *end, uint64_t file_size, uint64_t max_value_size,
                     _HintEntry *e) noexcept nogil:
    """The entry at *p into e, *p moved past it: 0, or -1 when the bytes are
    not an entry of a hint of a file_size-byte segment."""
    if p[0] >= end:
        return -1
    e.flags = p[0][0]
    p[0] += 1
    if nk_get_varint(p, end, &e.klen) or e.klen > <uint64_t>(end - p[0]):
        return -1
    e.key = p[0]
    p[0] += e.klen
    e.vsize = e.ttl = 0
    if nk_get_varint(p, end, &e.off) or e.off >= file_size:
        return -1
    if not e.flags & NK_FLAG_TOMBSTONE and nk_get_varint(p, end, &e.vsize):
        return -1
    if e.flags & NK_COMP_MASK and e.vsize > max_value_size:
        return -1       # damage under this bound: the scan says where
    if e.flags & NK_FLAG_TTL and nk_get_varint(p, end, &e.ttl):
        return -1
    return 0


cdef enum:
    _HINT_AHEAD = 16        # entries whose slot is asked for before their put


cdef int _apply_hint(_DiskLoader loader, const uint8_t *p, const uint8_t *end, uint64_t count,
                     uint64_t key_bytes, uint64_t file_size, uint64_t seg_id) except -1:
    """The `count` entries at p (checked by _hint_parse; their keys are
    key_bytes long in all) into the loader, in order. Each key's hash is
    taken, and its home slot asked for, _HINT_AHEAD entries before its put:
    the slots of a large directory miss the cache at random, and the misses
    of the entries ahead overlap."""
    cdef _HintEntry ring[_HINT_AHEAD]
    cdef uint64_t hashes[_HINT_AHEAD]
    cdef uint64_t i, j
    cdef _HintEntry *e
    # Room for every entry as a new key first (the slots must not move under
    # the prefetches; the store's open gives back what duplicates left
    # unused, _KeyDir.fit).
    loader.kd.reserve(loader.kd.count + count, count, key_bytes)
    for i in range(count + _HINT_AHEAD):
        j = i % _HINT_AHEAD
        e = &ring[j]
        if i >= _HINT_AHEAD:        # entry i - _HINT_AHEAD, parsed into this place then
            loader.hint_entry(e.key, e.klen, hashes[j], e.flags, e.ttl, e.vsize, loader._location(seg_id, e.off))
        if i < count:
            _hint_parse(&p, end, file_size, loader.max_value_size, e)
            hashes[j] = _kd_hash(e.key, e.klen)
            loader.kd.prefetch(hashes[j])
    return 0


cdef bint _hint_header_current(object seg_path, uint64_t seg_id, uint64_t *count,
                               uint64_t *hint_size, uint64_t *seg_size) except -1:
    """Whether segment file seg_path (id seg_id) has a hint whose header is
    about the segment as it is now (its id and present size), in a regular
    file of a size such a hint can have; then its entry count, its size and
    the segment's in the out-parameters. Reads the 40-byte header only
    (_replay_hint checks the rest)."""
    cdef struct_stat st
    cdef uint8_t head[_HINT_HEADER]
    cdef int fd
    try:
        seg_size[0] = os.stat(seg_path).st_size
    except OSError:
        return False
    fd = _open_hint(seg_path, &st)
    if fd < 0:
        return False
    try:
        if pread(fd, head, _HINT_HEADER, 0) != _HINT_HEADER:
            return False
    finally:
        c_close(fd)
    hint_size[0] = <uint64_t>st.st_size
    return _hint_header_ok(head, hint_size[0], seg_id, seg_size[0], count)


cdef uint64_t _hint_announces(object seg_path, uint64_t seg_id) except? 0xFFFFFFFFFFFFFFFF:
    """The number of entries a current hint of the segment announces,
    bounded by what the hint and the segment can hold (an entry takes 3
    bytes at least, a record 7); 0 without one."""
    cdef uint64_t count, hint_size, seg_size, room
    if not _hint_header_current(seg_path, seg_id, &count, &hint_size, &seg_size):
        return 0
    room = (hint_size - _HINT_HEADER - 4) // 3
    if seg_size // 7 < room:
        room = seg_size // 7
    return count if count < room else room


cdef int _reserve_for_hints(_DiskLoader loader, object seg_paths, object seg_ids) except -1:
    """Room in the loader's key directory, before the first segment is
    replayed, for every entry the hints of these segments announce: one
    table of slots of the final size, where a directory grown hint by hint
    re-placed all its slots each time it outgrew them (a third of the
    reopen of 2M keys from 15 hints: docs/performance.md). Best effort:
    without the memory, the replay grows the directory as before.
    Duplicate keys leave slots unused, which _adopt gives back (fit)."""
    cdef uint64_t total = 0
    for path, seg in zip(seg_paths, seg_ids):
        total += _hint_announces(path, seg)
    if total:
        nk_kd_reserve(&loader.kd.kd, loader.kd.count + total, 0, 0)
    return 0


cdef int64_t _replay_hint(_DiskLoader loader, object seg_path, uint64_t seg_id,
                          uint64_t file_size) except -2:
    cdef struct_stat st
    cdef int fd, sfd
    cdef void *m = MAP_FAILED
    cdef size_t n = 0
    cdef const uint8_t *p
    cdef const uint8_t *end
    cdef uint64_t h_count, i, prev = 0, key_bytes = 0
    cdef uint32_t crc
    cdef _HintEntry e
    cdef int64_t result = -1
    fd = _open_hint(seg_path, &st)
    if fd < 0:
        return -1
    try:
        n = <size_t>st.st_size
        if not _hint_size_ok(n, file_size):
            return -1
        m = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0)
        if m == MAP_FAILED:
            return -1
        p = <const uint8_t *>m
        memcpy(&crc, p + n - 4, 4)
        if not _hint_header_ok(p, n, seg_id, file_size, &h_count) or nk_crc32c(0, p, n - 4) != crc:
            return -1
        sfd = c_open(os.fsencode(seg_path), O_RDONLY | O_CLOEXEC)
        if sfd < 0:
            return -1
        try:
            if _tail_digest(sfd, file_size) != PyBytes_FromStringAndSize(<const char *>p + 32, 8):
                return -1
        finally:
            c_close(sfd)
        # Pass 0 checks every entry, pass 1 applies them: a bad hint
        # changes nothing.
        p = <const uint8_t *>m + _HINT_HEADER
        end = <const uint8_t *>m + n - 4
        for i in range(h_count):
            if _hint_parse(&p, end, file_size, loader.max_value_size, &e) or (i and e.off <= prev):
                return -1
            prev = e.off
            key_bytes += e.klen
        if p != end:
            return -1
        _apply_hint(loader, <const uint8_t *>m + _HINT_HEADER, end, h_count, key_bytes, file_size, seg_id)
        result = <int64_t>h_count
    finally:
        if m != MAP_FAILED:
            munmap(m, n)
        c_close(fd)
    return result


# ---------------------------------------------------------------- when hints are written
# A values="disk" store writes the hints of its sealed segments in a thread
# of its own: after a rotation seals one (KvStore._after_write notices), after
# a compaction installs its snapshot, and after the open for those that have
# none. It holds the store's _hint_lock (one writer at a time), not the
# compaction lock: a compaction may delete a segment it reads (the open file
# still reads; the hint left for a deleted segment is removed by the next
# run, and no open uses it: ids are never reused). close() waits for it; it
# stops before its next segment once the store is closed. A failure (a full
# disk...) costs only the hint: it is kept for stats() and the next open
# scans.

cdef int _start_hint_writer(KvStore store) except -1:
    t = store._hinter
    store._hints_pending = True
    if t is not None and t.is_alive():
        return 0
    t = threading.Thread(target=_hint_writer, args=(weakref.ref(store), store._hint_lock),
                         name="norikv-hints", daemon=True)
    t.start()                   # (then published: close() joins only started threads)
    store._hinter = t
    return 0


def _hint_writer(ref, lock):
    """The thread. It holds the store only between segments, so that a store
    dropped without close() is freed (its lock released) at once; a hint it
    may still write then is checked like any other by the next open."""
    cdef KvStore store
    while True:
        with lock:
            store = ref()
            if store is None or store._closed or not store._hints_pending:
                return
            store._hints_pending = False
            wal = store.wal
            d = wal.dir
            active = wal.seg_id
            sealed = [seg for seg in wal._segment_ids() if seg != active]
            bound = store.max_value_size
            store = None
            wal = None
            try:
                names = set(os.listdir(d))
                for seg in sealed:
                    store = ref()
                    if store is None or store._closed:
                        return
                    store = None
                    if not _hint_current(d, seg, names) and write_hint(d, seg, bound):
                        store = ref()
                        if store is not None:
                            store._hints_written += 1
                        store = None
                _remove_stale_hints(d, names)
            except Exception as exc:
                store = ref()
                if store is not None:
                    store._hint_error = exc
                store = None


cdef bint _hint_current(object d, uint64_t seg, set names) except -1:
    """Whether seg has a hint about its present size (a segment a reopened
    store appended to, or that a recovery rewrote, needs a new one)."""
    cdef uint64_t count, hint_size, seg_size
    return hint_name(seg) in names and _hint_header_current(os.path.join(d, segment_name(seg)), seg, &count,
                                                            &hint_size, &seg_size)


cdef bint _dead_writer(str name):
    """Whether a hint's temporary file ``NNNNNN.hint-tmp.PID`` is a leftover:
    its process is gone (or it is not named by a pid)."""
    pid = name.rpartition(".")[2]
    if not pid.isdigit():
        return name.endswith(".hint-tmp")
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        return False
    return False


cdef int _remove_stale_hints(object d, set names) except -1:
    """Away with hints whose segment is gone (deleted by a compaction or a
    recovery) and with the temporary files of hint writers that died."""
    for name in names:
        if ((name.endswith(".hint") and name[:len(name) - 5] + ".wal" not in names)
                or (".hint-tmp" in name and _dead_writer(name))):
            try:
                os.unlink(os.path.join(d, name))
            except FileNotFoundError:
                pass
    return 0
