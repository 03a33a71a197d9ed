/* Everything that differs between platforms lives here: durable sync,
 * preallocation, locking.  norikv supports Linux and macOS (POSIX). */
#ifndef NORIKV_PLATFORM_H
#define NORIKV_PLATFORM_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <stdint.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#if defined(__APPLE__)
#  define NK_PLATFORM "macos"
#elif defined(__linux__)
#  define NK_PLATFORM "linux"
#else
#  define NK_PLATFORM "posix"
#endif

/* Publishing a counter to a thread that reads it without the GIL (the
   group-commit leader reads written_total): the release store orders the
   record bytes written before it; the acquire load pairs with it. */
static inline void nk_store_release_u64(uint64_t *p, uint64_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
static inline uint64_t nk_load_acquire_u64(const uint64_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

/* A counter several threads bump without a lock. */
static inline void nk_add_u64(uint64_t *p, uint64_t v) { __atomic_fetch_add(p, v, __ATOMIC_RELEASE); }

/* A full barrier: a store before it is visible to other threads before a
   load after it is made (the flusher's and the writer's `dirty` handshake,
   flusher.pyx). */
static inline void nk_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

/* Asks the CPU for every cache line of [p, p + n) at once (a get reads a
   whole record from a random place in the page cache: the lines arrive in
   parallel instead of one miss at a time as the CRC reaches them). */
static inline void nk_prefetch(const void *p, size_t n) {
    const char *c = (const char *)p;
    for (size_t i = 0; i < n; i += 64)
        __builtin_prefetch(c + i, 0, 3);
}

/* A segment's file name (logdir.pyx's segment_name uses it too). */
static int nk_segment_name(char *buf, size_t size, uint64_t seg_id) {
    return snprintf(buf, size, "%06llu.wal", (unsigned long long)seg_id);
}

/* A condition variable whose timed waits take a CLOCK_MONOTONIC deadline
   in seconds (as _now_monotonic gives it). */
static int nk_cond_init_monotonic(pthread_cond_t *c) {
#if defined(__APPLE__)
    return pthread_cond_init(c, NULL);
#else
    pthread_condattr_t a;
    int err = pthread_condattr_init(&a);
    if (err) return err;
    err = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    if (!err) err = pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
    return err;
#endif
}

static int nk_cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m, double deadline) {
    struct timespec ts;
#if defined(__APPLE__)
    struct timespec now;
    double rel;
    clock_gettime(CLOCK_MONOTONIC, &now);
    rel = deadline - (now.tv_sec + now.tv_nsec * 1e-9);
    if (rel < 0) rel = 0;
    ts.tv_sec = (time_t)rel;
    ts.tv_nsec = (long)((rel - (double)ts.tv_sec) * 1e9);
    return pthread_cond_timedwait_relative_np(c, m, &ts);
#else
    ts.tv_sec = (time_t)deadline;
    ts.tv_nsec = (long)((deadline - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec += 1; ts.tv_nsec -= 1000000000L; }
    if (ts.tv_nsec < 0) ts.tv_nsec = 0;
    return pthread_cond_timedwait(c, m, &ts);
#endif
}

/* Makes the data of fd (including bytes written through a shared mapping of
   [addr, addr+len)) durable.  Returns 0 or an errno value. */
static int nk_sync_data(int fd, void *addr, size_t len) {
#if defined(__APPLE__)
    if (addr && len && msync(addr, len, MS_SYNC) != 0) return errno;
    if (fcntl(fd, F_FULLFSYNC) == 0) return 0;
    return fsync(fd) == 0 ? 0 : errno;
#elif defined(__linux__)
    /* The page cache is unified: fdatasync writes back pages dirtied through
       the mapping too, so a separate msync would only repeat the work. */
    (void)addr; (void)len;
    return fdatasync(fd) == 0 ? 0 : errno;
#else
    if (addr && len && msync(addr, len, MS_SYNC) != 0) return errno;
    return fsync(fd) == 0 ? 0 : errno;
#endif
}

/* fdatasync's promise for the first `end` bytes of fd only; addr: a shared
   mapping of fd from offset 0 that covers them (NULL: the whole file).
   fdatasync(2) writes back every dirty page of the file, and a segment
   written through a mapping has dirty pages past its end: the pages mapped
   for writing ahead of the writer (zeros) and those it fills meanwhile.
   On Linux msync(MS_SYNC) of a shared file mapping is vfs_fsync_range over
   that range with datasync set: its dirty pages written and waited for, the
   metadata needed to read them committed, the device cache flushed; the
   file system code of fdatasync itself (and of every O_DSYNC write, for the
   bytes it wrote), in the calling thread. Elsewhere: nk_sync_data.
   Returns 0 or an errno value. */
static int nk_sync_range(int fd, void *addr, uint64_t end) {
#if defined(__linux__)
    if (addr && end) {
        uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
        if (msync(addr, (size_t)((end + page - 1) / page * page), MS_SYNC) == 0) return 0;
        if (errno != ENOMEM && errno != EINVAL) return errno;   /* (else: not mapped so far) */
    }
#endif
    return nk_sync_data(fd, addr, (size_t)end);
}

/* fsync for a file or directory (metadata included). */
static int nk_sync_full(int fd) {
#if defined(__APPLE__)
    if (fcntl(fd, F_FULLFSYNC) == 0) return 0;
#endif
    return fsync(fd) == 0 ? 0 : errno;
}

/* Reserves disk blocks for [off, off+len) and grows the file to cover it, so
   stores through a mapping of that range cannot fail for lack of space. */
static int nk_allocate(int fd, off_t off, off_t len) {
#if defined(__linux__)
    if (fallocate(fd, 0, off, len) == 0) return 0;
    if (errno != EOPNOTSUPP && errno != ENOSYS) return errno;
    return posix_fallocate(fd, off, len);
#elif defined(__APPLE__)
    fstore_t st = {F_ALLOCATECONTIG, F_PEOFPOSMODE, 0, off + len - 0, 0};
    struct stat sb;
    if (fstat(fd, &sb) != 0) return errno;
    if (off + len <= sb.st_size) return 0;
    st.fst_length = off + len - sb.st_size;
    if (fcntl(fd, F_PREALLOCATE, &st) == -1) {
        st.fst_flags = F_ALLOCATEALL;
        if (fcntl(fd, F_PREALLOCATE, &st) == -1) return errno;
    }
    return ftruncate(fd, off + len) == 0 ? 0 : errno;
#else
    return posix_fallocate(fd, off, len);
#endif
}

/* Drops the page cache of [off, off+len) of fd without writing it, and
   makes the range read as zeros, keeping its blocks (fallocate
   ZERO_RANGE: dirty pages are discarded, not written). Returns 0 or an
   errno value (EOPNOTSUPP where the file system or the OS cannot). */
static int nk_discard_range(int fd, off_t off, off_t len) {
#if defined(__linux__) && defined(FALLOC_FL_ZERO_RANGE)
    return fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len) == 0 ? 0 : errno;
#else
    (void)fd; (void)off; (void)len;
    return EOPNOTSUPP;
#endif
}

/* Exclusive, non-blocking lock of a whole file with flock(2): tied to the open
   file description, so closing another descriptor of the same file elsewhere in
   the process does not drop it (unlike fcntl locks). */
static int nk_lock_file(int fd) {
    return flock(fd, LOCK_EX | LOCK_NB) == 0 ? 0 : errno;
}

/* Faults in [addr, addr+len) of a shared file mapping ahead of the appender
   (Linux 5.14+), so that appends do not take a full page fault per page.
   for_write: writable and dirty at once (fastest for bulk appends, but the
   zero pages are dirty, and the next fsync writes them: megabytes at once);
   otherwise readable and clean (an append then takes a light write fault per
   page; used with page-sized folios, where small fsyncs are the point).
   Returns 0, or an errno value (EINVAL/ENOSYS: not supported here). */
static int nk_prefault(void *addr, size_t len, int for_write) {
#if defined(__linux__)
#  ifndef MADV_POPULATE_READ
#    define MADV_POPULATE_READ 22
#  endif
#  ifndef MADV_POPULATE_WRITE
#    define MADV_POPULATE_WRITE 23
#  endif
    return madvise(addr, len, for_write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ) == 0 ? 0 : errno;
#else
    (void)addr; (void)len; (void)for_write;
    return ENOSYS;
#endif
}

/* Writes zeros over [off, off+len) of fd, `chunk` bytes per pwrite (off and
   chunk multiples of the page size). Each write of `chunk` bytes at an
   offset aligned to it makes a page-cache folio of that size (file systems
   with large folios: ext4, XFS), where a fault on a mapping advised
   MADV_RANDOM makes a page-sized one. A write into a folio already cached
   keeps that folio's size, so the clean, unmapped page cache of the range
   is dropped first (readahead of a fault elsewhere in the mapping caches
   page-sized folios megabytes ahead). Returns 0 or an errno value. */
static int nk_write_zeros(int fd, uint64_t off, uint64_t len, size_t chunk) {
    static const char zeros[1 << 16];
    if (chunk > sizeof zeros) chunk = sizeof zeros;
#if defined(POSIX_FADV_DONTNEED)
    (void)posix_fadvise(fd, (off_t)off, (off_t)len, POSIX_FADV_DONTNEED);
#endif
    while (len) {
        size_t n = len < chunk ? (size_t)len : chunk;
        ssize_t w = pwrite(fd, zeros, n, (off_t)off);
        if (w < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        off += (uint64_t)w;
        len -= (uint64_t)w;
    }
    return 0;
}

/* Starts writeback of [off, off+len) of fd and returns without waiting
   (sync_file_range WRITE: no promise of durability, a head start for the
   next fsync). Linux only; elsewhere nothing. */
static void nk_start_writeback(int fd, uint64_t off, uint64_t len) {
#if defined(__linux__) && defined(SYNC_FILE_RANGE_WRITE)
    (void)sync_file_range(fd, (off_t)off, (off_t)len, SYNC_FILE_RANGE_WRITE);
#else
    (void)fd; (void)off; (void)len;
#endif
}

/* Page-sized page-cache folios for [addr, addr+len) of a segment mapping.
   Faults on a mapping written sequentially let Linux 6.x grow the folios it
   allocates (up to 2 MiB once ~32 MiB are written), and a dirty folio is
   written back whole: a 1 KiB append + fdatasync then wrote 2 MiB and ran at
   2.2k/s instead of 9.5k/s. MADV_RANDOM turns that readahead-driven growth
   off, at a cost for stores that never sync (large folios fault in faster:
   appends ran ~45% slower). Best effort: an error only costs speed. */
static void nk_advise_small_folios(void *addr, size_t len) {
#if defined(MADV_RANDOM)
    if (len) (void)madvise(addr, len, MADV_RANDOM);
#else
    (void)addr; (void)len;
#endif
}

/* Drops this process's page-table entries for [addr, addr+len) of a shared
   file mapping; the pages (dirty or not) stay in the page cache, and a later
   access faults them back in. Writeback must write-protect every page it
   cleans that some process maps writable, one TLB shootdown per page sent
   to each CPU running that process: a writer went at half speed while a
   concurrent fdatasync cleaned the pages behind it. Linux only (elsewhere
   MADV_DONTNEED may discard); best effort. */
static void nk_unmap_pages(void *addr, size_t len) {
#if defined(__linux__)
    if (len) (void)madvise(addr, len, MADV_DONTNEED);
#else
    (void)addr; (void)len;
#endif
}

static int nk_page_size(void) { return (int)sysconf(_SC_PAGESIZE); }

#endif /* NORIKV_PLATFORM_H */
