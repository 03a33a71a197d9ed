# Read-only mappings of a store's segments, for values="disk": the key
# directory holds each key's location (slot << 40 | offset) and a get
# decodes the record there. A view maps a whole segment (at least
# max_segment_size, so the active segment's view covers it as it fills);
# records are only read once committed, so the unwritten or truncated tail
# past the file's end is never touched.

from libc.stdlib cimport realloc, free
from libc.string cimport memcmp, memset

cdef extern from "<sched.h>" nogil:
    int sched_yield()
from posix.unistd cimport close as c_close
from posix.fcntl cimport open as c_open, O_RDONLY, O_CLOEXEC
from posix.mman cimport mmap, munmap, PROT_READ, MAP_SHARED, MAP_FAILED
from posix.stat cimport struct_stat, fstat

import os

from norikv.errors import CorruptionError, io_error


cdef uint64_t _LOC_OFFSET_MASK = (<uint64_t>1 << _LOC_SHIFT) - 1


cdef class _SegmentViews:
    """The mapped segments of one store. Used with the GIL held."""

    def __cinit__(self, dirpath, size_t min_len):
        self.dir = dirpath
        self.min_len = min_len
        self.active_id = UINT64_MAX

    def __dealloc__(self):
        self.unmap_all()

    cdef int64_t slot_for(self, uint64_t seg_id, int fd, size_t need) except -1:
        cdef uint32_t i, free_slot = self.n
        cdef size_t page = nk_page_size()
        cdef size_t want
        cdef struct_stat st
        cdef void *m
        cdef _View *nv
        cdef int own_fd = -1
        for i in range(self.n):
            if self.v[i].base == NULL:
                if free_slot == self.n:
                    free_slot = i
            elif self.v[i].seg_id == seg_id:
                if self.v[i].len >= need:
                    return i
                free_slot = i       # grown past its view: map it again, larger
                break
        if fd < 0:
            path = os.path.join(self.dir, segment_name(seg_id))
            own_fd = c_open(os.fsencode(path), O_RDONLY | O_CLOEXEC)
            if own_fd < 0:
                raise io_error(errno, path, "open")
            fd = own_fd
        try:
            want = need if need > self.min_len else self.min_len
            if fstat(fd, &st) == 0 and <size_t>st.st_size > want:
                want = <size_t>st.st_size
            want = (want + page - 1) // page * page
            if want == 0:
                want = page
            m = mmap(NULL, want, PROT_READ, MAP_SHARED, fd, 0)
            if m == MAP_FAILED:
                raise io_error(errno, os.path.join(self.dir, segment_name(seg_id)), "mmap")
        finally:
            if own_fd >= 0:
                c_close(own_fd)
        if free_slot == self.n:
            if self.n >= (<uint32_t>1 << (64 - _LOC_SHIFT)) - 1:
                munmap(m, want)
                raise MemoryError("too many segments mapped")
            if self.n == self.cap:
                nv = <_View *>realloc(self.v, (self.cap * 2 + 8) * sizeof(_View))
                if nv == NULL:
                    munmap(m, want)
                    raise MemoryError()
                self.v = nv
                self.cap = self.cap * 2 + 8
            self.n += 1
            self.v[free_slot].pins = 0
        elif self.v[free_slot].base != NULL:
            # The smaller view is kept until close (a C array: this may run
            # inside the append window). Only a segment grown past
            # max_segment_size by one huge record is mapped again.
            nv = <_View *>realloc(self.retired, (self.nretired + 1) * sizeof(_View))
            if nv == NULL:
                munmap(m, want)
                raise MemoryError()
            self.retired = nv
            self.retired[self.nretired] = self.v[free_slot]
            self.nretired += 1
        self.v[free_slot].seg_id = seg_id
        self.v[free_slot].base = <uint8_t *>m
        self.v[free_slot].len = want
        return free_slot

    cdef uint64_t locate_active(self, uint64_t seg_id, int fd, uint64_t offset,
                                uint64_t n) except? 0xFFFFFFFFFFFFFFFF:
        cdef int64_t slot
        if seg_id != self.active_id or offset + n > self.v[self.active].len:
            slot = self.slot_for(seg_id, fd, offset + n)
            self.active = <uint32_t>slot
            self.active_id = seg_id
        return (<uint64_t>self.active << _LOC_SHIFT) | offset

    cdef int decode_at(self, uint64_t loc, const uint8_t *key, size_t klen, nk_rec *r,
                       bint check_crc) noexcept:
        cdef uint64_t slot = loc >> _LOC_SHIFT
        cdef uint64_t off = loc & _LOC_OFFSET_MASK
        cdef int st = NK_BAD_VARINT
        cdef _View *v
        if slot < self.n and self.v[slot].base != NULL and off < self.v[slot].len:
            v = &self.v[slot]
            st = nk_decode(v.base + off, v.len - off, check_crc, r)
            if st == NK_OK and (r.flags & NK_FLAG_TOMBSTONE or key != NULL and (
                    r.klen != klen or memcmp(r.key, key, klen) != 0)):
                st = -1
            if st == NK_OK:
                self.value_reads += 1
        return st

    cdef int record_at(self, uint64_t loc, const uint8_t *key, size_t klen, nk_rec *r,
                       bint check_crc=True) except -1:
        cdef int st = self.decode_at(loc, key, klen, r, check_crc)
        return self.damaged(loc, st) if st != NK_OK else 0

    cdef void prefetch(self, uint64_t loc, size_t n) noexcept:
        cdef uint64_t slot = loc >> _LOC_SHIFT
        cdef uint64_t off = loc & _LOC_OFFSET_MASK
        if slot < self.n and self.v[slot].base != NULL and off < self.v[slot].len:
            nk_prefetch(self.v[slot].base + off, min(n, self.v[slot].len - off))

    cdef const uint8_t *start(self, uint64_t loc) noexcept:
        """Where the record at loc (checked by record_at) begins."""
        return self.v[loc >> _LOC_SHIFT].base + (loc & _LOC_OFFSET_MASK)

    cdef int damaged(self, uint64_t loc, int st) except -1:
        """CorruptionError for the record at loc (st: its decoding status,
        -1: not the record of its key)."""
        cdef uint64_t slot = loc >> _LOC_SHIFT
        cdef uint64_t off = loc & _LOC_OFFSET_MASK
        if slot < self.n and self.v[slot].base != NULL:
            seg_id = self.v[slot].seg_id
            path = os.path.join(self.dir, segment_name(seg_id))
            what = "not the record of its key" if st == -1 else _status_text(st)
            raise CorruptionError(f"{path}: {what} at offset {off} (read by get)", path, off, seg_id)
        raise CorruptionError(f"no mapped segment holds location {loc:#x}", None, off, None)

    cdef void _wait_unpinned(self, uint32_t slot) noexcept:
        """Waits, letting go of the GIL, for the reads copying from view
        `slot` with the GIL released to end (they unpin once they have it
        back). No new read pins a view being dropped: no key points into it
        any more (compaction), or the store is closed."""
        while self.v[slot].pins:
            with nogil:
                sched_yield()

    cdef void forget_pins(self) noexcept:
        """In a child made by fork(): the threads that pinned views are the
        parent's."""
        cdef uint32_t i
        for i in range(self.n):
            self.v[i].pins = 0

    cdef uint64_t value_size(self, uint64_t loc, uint64_t vsize) except? 0xFFFFFFFFFFFFFFFF:
        """A value size the key directory gave: a saturated one (4 GiB and
        more: only uncompressed values, as values="disk" caps
        max_value_size below it) is read from the record's header."""
        cdef nk_rec r
        if vsize != NK_KD_VSIZE_SAT:
            return vsize
        self.record_at(loc, NULL, 0, &r)
        return r.vlen

    cdef int drop_segment(self, uint64_t seg_id) except -1:
        cdef uint32_t i
        for i in range(self.n):
            if self.v[i].base != NULL and self.v[i].seg_id == seg_id:
                self._wait_unpinned(i)
                munmap(self.v[i].base, self.v[i].len)
                memset(&self.v[i], 0, sizeof(_View))
                if seg_id == self.active_id:
                    self.active_id = UINT64_MAX
        return 0

    cdef void unmap_all(self) noexcept:
        cdef uint32_t i
        for i in range(self.n):
            self._wait_unpinned(i)
        for i in range(self.n):
            if self.v[i].base != NULL:
                munmap(self.v[i].base, self.v[i].len)
        free(self.v)
        self.v = NULL
        self.n = self.cap = 0
        self.active_id = UINT64_MAX
        for i in range(self.nretired):
            munmap(self.retired[i].base, self.retired[i].len)
        free(self.retired)
        self.retired = NULL
        self.nretired = 0

    def _where(self, uint64_t loc):
        """(segment id, offset) of a location."""
        cdef uint64_t slot = loc >> _LOC_SHIFT
        seg = self.v[slot].seg_id if slot < self.n and self.v[slot].base != NULL else None
        return seg, loc & _LOC_OFFSET_MASK

    def _slot_of(self, uint64_t seg_id):
        """For tests: the slot mapping seg_id, or None."""
        cdef uint32_t i
        for i in range(self.n):
            if self.v[i].base != NULL and self.v[i].seg_id == seg_id:
                return i
        return None
