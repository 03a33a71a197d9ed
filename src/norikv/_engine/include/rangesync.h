/* A durable sync of the first `end` bytes of a file only: fdatasync with a
 * range (docs/DESIGN.md, "Syncing a range").
 *
 * fdatasync(2) writes back every dirty page of the file. A segment written
 * through a mapping has dirty pages past its logical end: the pages mapped
 * for writing ahead of the appender (nk_prefault) and the ones it fills
 * while the fsync runs. Writing those back wrote zeros that are written
 * again, and write-protected pages the appender was filling (a TLB
 * shootdown each, and a write fault after): a batch-policy writer dirtied
 * 2.6x the pages it filled. The kernel has the ranged operation
 * (vfs_fsync_range: what every O_DSYNC write uses for the bytes it wrote),
 * and io_uring's IORING_OP_FSYNC takes its range from user space.
 *
 * The ring is set up on first use without liburing (the structures below
 * are the kernel ABI, defined here because the manylinux build images'
 * kernel headers predate io_uring). Where io_uring is missing or refused
 * (kernel < 5.1, kernel.io_uring_disabled, a seccomp profile such as
 * Docker's default), nk_sync_range falls back to nk_sync_data for good.
 * A ring is used by one thread at a time: its owner serializes its fsyncs. */
#ifndef NORIKV_RANGESYNC_H
#define NORIKV_RANGESYNC_H

#include "platform.h"

typedef struct {
    int fd;                 /* -1: not set up yet; -2: unavailable here */
    void *sq_ring, *cq_ring, *sqes;
    size_t sq_len, cq_len, sqes_len;
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
    unsigned *cq_head, *cq_tail, *cq_mask;
    void *cqes;
} nk_ring;

/* 1: every sync is nk_sync_data (NORIKV_RANGED_SYNC=0, and tests). */
static int nk_ranged_sync_off = 0;
/* Test hook: the next ring fsync fails with this errno instead of running. */
static int nk_ring_inject_errno = 0;

static inline void nk_ring_init(nk_ring *r) { r->fd = -1; }

#if defined(__linux__)
#include <string.h>
#include <sys/syscall.h>

#ifndef __NR_io_uring_setup
#  define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_enter
#  define __NR_io_uring_enter 426
#endif

struct nk_sqring_offsets { uint32_t head, tail, ring_mask, ring_entries, flags, dropped, array, resv1; uint64_t resv2; };
struct nk_cqring_offsets { uint32_t head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1; uint64_t resv2; };
struct nk_uring_params {
    uint32_t sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle, features, wq_fd, resv[3];
    struct nk_sqring_offsets sq_off;
    struct nk_cqring_offsets cq_off;
};
struct nk_sqe {             /* struct io_uring_sqe, as IORING_OP_FSYNC reads it */
    uint8_t opcode, flags;
    uint16_t ioprio;
    int32_t fd;
    uint64_t off, addr;
    uint32_t len, fsync_flags;
    uint64_t user_data, pad[3];
};
struct nk_cqe { uint64_t user_data; int32_t res; uint32_t flags; };

#define NK_IORING_OP_FSYNC 3
#define NK_IORING_FSYNC_DATASYNC 1u
#define NK_IORING_ENTER_GETEVENTS 1u
#define NK_IORING_FEAT_SINGLE_MMAP 1u
#define NK_IORING_OFF_SQ_RING 0ULL
#define NK_IORING_OFF_CQ_RING 0x8000000ULL
#define NK_IORING_OFF_SQES 0x10000000ULL

static void nk_ring_free(nk_ring *r) {
    if (r->fd < 0) return;
    if (r->sqes) munmap(r->sqes, r->sqes_len);
    if (r->cq_ring && r->cq_ring != r->sq_ring) munmap(r->cq_ring, r->cq_len);
    if (r->sq_ring) munmap(r->sq_ring, r->sq_len);
    close(r->fd);
    r->fd = -1;
}

/* Returns 0 (r set up) or -1 (r->fd = -2: io_uring is not usable here). */
static int nk_ring_setup(nk_ring *r) {
    struct nk_uring_params p;
    memset(&p, 0, sizeof p);
    memset(r, 0, sizeof *r);
    r->fd = (int)syscall(__NR_io_uring_setup, 1, &p);
    if (r->fd < 0) goto unusable;
    r->sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    r->cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct nk_cqe);
    if (p.features & NK_IORING_FEAT_SINGLE_MMAP && r->cq_len > r->sq_len) r->sq_len = r->cq_len;
    r->sq_ring = mmap(NULL, r->sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
                      NK_IORING_OFF_SQ_RING);
    if (r->sq_ring == MAP_FAILED) { r->sq_ring = NULL; goto fail; }
    if (p.features & NK_IORING_FEAT_SINGLE_MMAP) {
        r->cq_ring = r->sq_ring;
    } else {
        r->cq_ring = mmap(NULL, r->cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
                          NK_IORING_OFF_CQ_RING);
        if (r->cq_ring == MAP_FAILED) { r->cq_ring = NULL; goto fail; }
    }
    r->sqes_len = p.sq_entries * sizeof(struct nk_sqe);
    r->sqes = mmap(NULL, r->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
                   NK_IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED) { r->sqes = NULL; goto fail; }
    r->sq_head = (unsigned *)((char *)r->sq_ring + p.sq_off.head);
    r->sq_tail = (unsigned *)((char *)r->sq_ring + p.sq_off.tail);
    r->sq_mask = (unsigned *)((char *)r->sq_ring + p.sq_off.ring_mask);
    r->sq_array = (unsigned *)((char *)r->sq_ring + p.sq_off.array);
    r->cq_head = (unsigned *)((char *)r->cq_ring + p.cq_off.head);
    r->cq_tail = (unsigned *)((char *)r->cq_ring + p.cq_off.tail);
    r->cq_mask = (unsigned *)((char *)r->cq_ring + p.cq_off.ring_mask);
    r->cqes = (char *)r->cq_ring + p.cq_off.cqes;
    return 0;
fail:
    nk_ring_free(r);
unusable:
    r->fd = -2;
    return -1;
}

/* One IORING_OP_FSYNC of [0, end) of fd, waited for. Returns 0, an errno
   value of the fsync, or -1 (the ring itself failed: fall back). */
static int nk_ring_fsync(nk_ring *r, int fd, uint64_t end) {
    unsigned tail = *r->sq_tail, idx = tail & *r->sq_mask, head;
    struct nk_sqe *sqe = (struct nk_sqe *)r->sqes + idx;
    struct nk_cqe *cqe;
    int32_t res;
    if (nk_ring_inject_errno) {
        res = nk_ring_inject_errno;
        nk_ring_inject_errno = 0;
        return res;
    }
    memset(sqe, 0, sizeof *sqe);
    sqe->opcode = NK_IORING_OP_FSYNC;
    sqe->fd = fd;
    sqe->off = 0;
    sqe->len = end > 0xFFFFFFFFu ? 0 : (uint32_t)end;   /* 0: to the end of the file */
    sqe->fsync_flags = NK_IORING_FSYNC_DATASYNC;
    r->sq_array[idx] = idx;
    __atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
    for (;;) {
        head = *r->cq_head;
        if (head != __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE)) break;
        /* submits the entry if the kernel has not taken it yet, and waits */
        unsigned to_submit = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE) != tail + 1 ? 1 : 0;
        if (syscall(__NR_io_uring_enter, r->fd, to_submit, 1, NK_IORING_ENTER_GETEVENTS, NULL, 0) < 0
                && errno != EINTR)
            return -1;      /* (an fsync still in flight ends when the ring is closed) */
    }
    cqe = (struct nk_cqe *)r->cqes + (head & *r->cq_mask);
    res = cqe->res;
    __atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
    if (res == -EINVAL || res == -EOPNOTSUPP) return -1;     /* (the opcode unknown here) */
    return res < 0 ? -res : 0;
}

/* Makes [0, end) of fd durable, its data and the metadata needed to read
   it (fdatasync's promise for that range). addr: fd's shared mapping, for
   platforms that need an msync (nk_sync_data). Returns 0 or an errno. */
static int nk_sync_range(nk_ring *r, int fd, void *addr, uint64_t end) {
    int err;
    if (r->fd == -1 && !nk_ranged_sync_off) (void)nk_ring_setup(r);
    if (r->fd >= 0 && !nk_ranged_sync_off) {
        err = nk_ring_fsync(r, fd, end);
        if (err >= 0) return err;
        nk_ring_free(r);
        r->fd = -2;
    }
    return nk_sync_data(fd, addr, end);
}

#else  /* not Linux: no ranged sync; the whole file */

static void nk_ring_free(nk_ring *r) { (void)r; }
static int nk_sync_range(nk_ring *r, int fd, void *addr, uint64_t end) {
    (void)r;
    return nk_sync_data(fd, addr, end);
}

#endif
#endif /* NORIKV_RANGESYNC_H */
