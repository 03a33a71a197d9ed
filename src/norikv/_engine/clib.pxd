# C declarations every part may use: the headers in include/ (the record
# codec, CRC32C, what differs between platforms), the errno names, pthread's
# mutex and condition (the Wal's group commit) and the few CPython macros
# the hot paths call on borrowed pointers.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t, UINT64_MAX
from libc.errno cimport (errno, EBUSY, EEXIST, EFBIG, EINTR, EINVAL, EIO, EISDIR, ENOENT, ENOSPC,
                         ENOSYS, EOPNOTSUPP, EPERM, EROFS, ETIMEDOUT)
from cpython.object cimport PyObject
from cpython.pythread cimport PyThread_type_lock

cdef extern from "crc32c.h" nogil:
    ctypedef uint32_t (*nk_crc_fn)(uint32_t, const uint8_t *, size_t)
    nk_crc_fn nk_crc32c
    const char *nk_crc32c_name
    uint32_t nk_crc32c_sw(uint32_t crc, const uint8_t *p, size_t n)
    int nk_crc32c_select(int want_hw)
    int nk_crc32c_hw_available()
    void nk_crc32c_init(int want_hw)

cdef extern from "record.h" nogil:
    enum:
        NK_FLAG_TOMBSTONE
        NK_FLAG_TTL
        NK_COMP_SHIFT
        NK_COMP_MASK
        NK_FLAG_VERSION
        NK_FLAG_BATCH_CONT
        NK_FLAG_TTL_ABS
        NK_FLAG_BATCH_END
        NK_FLAGS_BATCH
        NK_FLAGS_RESERVED
        NK_OK
        NK_INCOMPLETE
        NK_BAD_VARINT
        NK_BAD_COMPRESSION
        NK_BAD_CRC
        NK_BATCH_PLAIN
        NK_BATCH_STAGE
        NK_BATCH_COMMIT
        NK_BATCH_BREAK
    ctypedef struct nk_rec:
        const uint8_t *key
        const uint8_t *value
        uint64_t klen, vlen, ttl_ms, term, index, size
        uint32_t flags
    int nk_crc_ok(const uint8_t *buf, size_t body)
    int nk_decode(const uint8_t *buf, size_t avail, int check_crc, nk_rec *r)
    int nk_get_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out)
    size_t nk_varint_len(uint64_t v)
    uint8_t *nk_put_varint(uint8_t *p, uint64_t v)
    size_t nk_encoded_len(uint64_t klen, uint64_t vlen, uint32_t flags,
                          uint64_t ttl_ms, uint64_t term, uint64_t index)
    size_t nk_encode(uint8_t *out, const uint8_t *key, size_t klen,
                     const uint8_t *value, size_t vlen, uint32_t flags,
                     uint64_t ttl_ms, uint64_t term, uint64_t index)
    int nk_all_zero(const uint8_t *p, size_t n)
    ctypedef struct nk_batch:
        uint64_t start, count, closed
    uint32_t nk_batch_flags(uint32_t flags, size_t i, size_t n)
    int nk_batch_step(nk_batch *b, uint32_t flags, uint64_t offset)
    uint64_t nk_batch_drop(nk_batch *b)
    int64_t nk_deadline(int64_t base_ms, uint64_t ttl_ms)

cdef extern from "platform.h" nogil:
    const char *NK_PLATFORM
    int nk_sync_data(int fd, void *addr, size_t length)
    int nk_sync_range(int fd, void *addr, uint64_t end)
    int nk_sync_full(int fd)
    int nk_allocate(int fd, long off, long length)
    int nk_discard_range(int fd, long off, long length)
    int nk_lock_file(int fd)
    int nk_page_size()
    int nk_prefault(void *addr, size_t length, int for_write)
    void nk_unmap_pages(void *addr, size_t length)
    void nk_advise_small_folios(void *addr, size_t length)
    int nk_write_zeros(int fd, uint64_t off, uint64_t length, size_t chunk)
    void nk_start_writeback(int fd, uint64_t off, uint64_t length)
    void nk_store_release_u64(uint64_t *p, uint64_t v)
    uint64_t nk_load_acquire_u64(const uint64_t *p)
    void nk_add_u64(uint64_t *p, uint64_t v)
    void nk_fence()
    void nk_prefetch(const void *p, size_t n)
    int nk_segment_name(char *buf, size_t size, uint64_t seg_id)

cdef extern from "<errno.h>":
    enum: EWOULDBLOCK       # (not in Cython's libc.errno) flock's "held by another"

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass
    int pthread_mutex_init(pthread_mutex_t *m, const void *attr)
    int pthread_mutex_destroy(pthread_mutex_t *m)
    int pthread_mutex_lock(pthread_mutex_t *m)
    int pthread_mutex_unlock(pthread_mutex_t *m)
    int pthread_cond_init(pthread_cond_t *c, const void *attr)
    int pthread_cond_destroy(pthread_cond_t *c)
    int pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m)
    int pthread_cond_broadcast(pthread_cond_t *c)
    int pthread_cond_signal(pthread_cond_t *c)

cdef extern from "platform.h" nogil:
    int nk_cond_init_monotonic(pthread_cond_t *c)
    int nk_cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m, double deadline)

cdef extern from "shared.h" nogil:
    enum:
        NK_SHM_SIZE
    ctypedef struct nk_pub:
        uint64_t seg_id, seg_size, total, gen, gen_seal
    ctypedef struct nk_shm:
        uint64_t session, ver, alloc, intent_seg, intent_end, synced_total, owner_deaths
        int poisoned, writer_pid, compact_pid, init_pid
        uint32_t gather_base, gather_prev, gather_want, fsync_us, fsync_starts
        pthread_mutex_t wmutex, smutex, cmutex
    int nk_shm_init(nk_shm *s, uint64_t seg_id, uint64_t seg_size, uint64_t total,
                    uint64_t alloc, int pid)
    unsigned long nk_thread_id()
    int nk_shm_valid(const nk_shm *s)
    uint64_t nk_shm_ver(const nk_shm *s)
    uint64_t nk_shm_read(const nk_shm *s, nk_pub *out)
    uint64_t nk_shm_publish(nk_shm *s, const nk_pub *p)
    void nk_shm_bump(nk_shm *s, const uint8_t *k, size_t n, uint64_t total)
    uint64_t nk_shm_bumped(const nk_shm *s, const uint8_t *k, size_t n)
    uint64_t nk_shm_epoch(const nk_shm *s)
    void nk_shm_new_epoch(nk_shm *s)
    uint32_t nk_shm_nprocs(const nk_shm *s)
    void nk_shm_join(nk_shm *s)
    bint nk_shm_others(const nk_shm *s)
    void nk_shm_leave(nk_shm *s)
    void nk_shm_synced(nk_shm *s, uint64_t t)
    const int NK_SHM_SYNC_FUTEX
    uint32_t nk_shm_sync_seq(nk_shm *s)
    void nk_shm_sync_wait(nk_shm *s, uint32_t seq, double timeout)
    void nk_shm_sync_wake(nk_shm *s)
    void nk_shm_sync_arrive(nk_shm *s)
    uint32_t nk_shm_arrivals(nk_shm *s)
    bint nk_shm_gathered(nk_shm *s, uint32_t arrivals)
    void nk_shm_set_gathering(nk_shm *s, uint32_t on)
    void nk_shm_arrivals_wait(nk_shm *s, uint32_t a, double timeout)
    void nk_shm_fsync_begins(nk_shm *s)
    uint32_t nk_shm_fsync_starts(const nk_shm *s)
    int nk_shm_lock(pthread_mutex_t *m, double timeout, int *dead)
    int nk_shm_trylock(pthread_mutex_t *m, int *dead)
    int nk_shm_spinlock(pthread_mutex_t *m, int spins, int *dead)
    int nk_flock_wait(int fd, int op, double timeout)
    enum:
        LOCK_SH
        LOCK_EX
        LOCK_NB
        LOCK_UN
    int flock(int fd, int op)

cdef extern from "Python.h":
    PyObject *PyDict_GetItem(object d, object k)
    PyObject *PyDict_GetItemWithError(object d, object k) except? NULL
    PyObject *PyDict_SetDefault(object d, object k, object v) except NULL
    # The macro, on a borrowed pointer: no call, no reference taken.
    Py_ssize_t PyDict_GET_SIZE(PyObject *d)
