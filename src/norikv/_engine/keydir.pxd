# keydir.pyx: _KeyDir, the key directory of values="disk" (include/keydir.h):
# key bytes -> (location, value size), iterated in insertion order.

cdef extern from "keydir.h" nogil:
    enum:
        NK_KD_OK
        NK_KD_NOMEM
        NK_KD_FULL
        NK_KD_TOOBIG
        NK_KD_DEFAULT_FLOOR
    uint64_t NK_KD_VSIZE_SAT           # a value size read back as this: ask the record
    ctypedef struct nk_keydir:
        uint64_t cap
        uint64_t old_cap                # growing in steps: the old table's slots, else 0
        uint64_t swept                  # ... and how many of them were swept
        uint64_t steps_from             # a table of this many slots grows in steps
        uint64_t next_cap               # the slots of the next growth, prepared ahead, else 0
        uint64_t next_touched           # ... and the bytes of them touched
        uint64_t units
        uint64_t arena_cap
        uint64_t garbage
        uint64_t floor_units
        uint64_t count
        uint64_t key_bytes
        uint64_t compactions
        uint64_t resizes
    void nk_kd_init(nk_keydir *kd, uint64_t floor_bytes)
    void nk_kd_free(nk_keydir *kd)
    int nk_kd_find(const nk_keydir *kd, const uint8_t *key, size_t klen, uint64_t h,
                   uint64_t *loc, uint64_t *vsize)
    int nk_kd_locate(const nk_keydir *kd, uint64_t h, uint64_t *loc)
    void nk_kd_prefetch(const nk_keydir *kd, uint64_t h)
    void nk_kd_fit(nk_keydir *kd)
    int nk_kd_put(nk_keydir *kd, const uint8_t *key, size_t klen, uint64_t h, uint64_t loc,
                  uint64_t vsize, uint64_t *old_loc, uint64_t *old_vsize)
    int nk_kd_remove(nk_keydir *kd, const uint8_t *key, size_t klen, uint64_t h,
                     uint64_t *old_loc, uint64_t *old_vsize)
    int nk_kd_relocate(nk_keydir *kd, const uint8_t *key, size_t klen, uint64_t h,
                       uint64_t expected, uint64_t new_loc)
    int nk_kd_next(const nk_keydir *kd, size_t *cursor, const uint8_t **key, size_t *klen,
                   uint64_t *loc, uint64_t *vsize)
    size_t nk_kd_nbytes(const nk_keydir *kd)
    int nk_kd_reserve(nk_keydir *kd, uint64_t keys, uint64_t more, uint64_t more_bytes)


cdef class _KeyDir:
    cdef nk_keydir kd
    cdef readonly Py_ssize_t count              # live keys
    cdef readonly uint64_t key_bytes            # sum of live key lengths

    # h: the caller's 64-bit hash of the key (_kd_hash / _kd_hash_obj).
    # A value size of 4 GiB - 1 or more reads back as NK_KD_VSIZE_SAT.
    cdef bint find(self, const uint8_t *key, size_t klen, uint64_t h,
                   uint64_t *loc, uint64_t *vsize) noexcept nogil
    # the loc of the first slot with h's tag (no entry read: the caller checks the key where
    # loc points, and asks find() when it is another key's); 0: no key of hash h
    cdef bint locate(self, uint64_t h, uint64_t *loc) noexcept nogil
    # asks for the cache line of h's home slot (a put of that hash coming)
    cdef void prefetch(self, uint64_t h) noexcept nogil
    # 1: replaced (*old_loc/*old_vsize set, the key keeps its place), 0: new key;
    # -1 with MemoryError set (or ValueError for a key of 2 GiB or more)
    cdef int put(self, const uint8_t *key, size_t klen, uint64_t h, uint64_t loc, uint64_t vsize,
                 uint64_t *old_loc, uint64_t *old_vsize) except -1
    # 1: removed (old values set), 0: absent
    cdef int remove(self, const uint8_t *key, size_t klen, uint64_t h,
                    uint64_t *old_loc, uint64_t *old_vsize) noexcept
    # compaction's install: sets loc only if the entry's loc is still `expected`; 1 done, 0 not
    cdef int relocate(self, const uint8_t *key, size_t klen, uint64_t h,
                      uint64_t expected, uint64_t new_loc) noexcept
    # insertion order: *cursor starts at 0; 1 and the outputs filled, 0 at the end. The
    # cursor survives finds, relocates and puts (a new key shows up at the end), not a remove
    # (it may compact the arena) nor a put at the 32 GiB limit (it compacts first);
    # the key pointer lives until the next put or remove.
    cdef int next(self, size_t *cursor, const uint8_t **key, size_t *klen,
                  uint64_t *loc, uint64_t *vsize) noexcept
    # room for `keys` keys in all, and `more` new keys of `more_bytes` bytes in all, without
    # growing (a loader that knows its counts: hint files); -1 with MemoryError set
    cdef int reserve(self, uint64_t keys, uint64_t more, uint64_t more_bytes) except -1
    # slots for a load of 2/3 when under 1/2 (after a loader's reserve() for more keys than came)
    cdef void fit(self) noexcept
    cpdef size_t nbytes(self) noexcept          # bytes held: slots + arena capacity
    cdef int clear(self) noexcept
    cdef void _sync(self) noexcept              # count and key_bytes from kd


# Python's hash of the bytes key[:klen] (equal to hash(bytes(...))), as uint64.
cdef uint64_t _kd_hash(const uint8_t *key, size_t klen) noexcept nogil
# Python's hash of an exact bytes object (cached in it by CPython), as uint64.
cdef uint64_t _kd_hash_obj(bytes key) except? 0
