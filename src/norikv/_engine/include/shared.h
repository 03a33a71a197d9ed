/* The state several processes share to write one log (docs/DESIGN.md,
 * "Many processes"): one page of the file SHM in the log directory, mapped
 * MAP_SHARED by every process that has the store open.
 *
 * - wmutex serializes writers across processes; smutex elects the fsync
 *   leader; cmutex admits one compaction. All three are robust and
 *   process-shared: when a holder dies, the next locker gets EOWNERDEAD
 *   and repairs what the holder may have left half done (nk_shm_lock).
 * - What is published (the end of the log) is a double-buffered slot
 *   selected by `ver`: a writer fills the slot readers are not reading,
 *   then bumps `ver` with a release store. A reader never waits for a
 *   writer, and a writer that dies mid-publish leaves the previous slot
 *   intact.
 * - A read of one key compares one counter: its key's bucket of the
 *   publication totals after the page (nk_shm_bumped: the log's published
 *   total when a record of a key of that bucket was last published) with
 *   the total the process's map reflects, and `epoch` (a compaction, a new
 *   session) with the one it saw. `ver` changes with every put anywhere, so
 *   a reader beside a writer that compared it caught up at every get, one
 *   record at a time, and missed on its cache line every time. */
#ifndef NORIKV_SHARED_H
#define NORIKV_SHARED_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define NK_SHM_MAGIC 0x314d48535653524eULL    /* "NRSVSHM1" little-endian */
#define NK_SHM_VERSION 3
#define NK_SHM_HEADER 4096          /* the page of nk_shm */
#define NK_BUMP_BITS 13             /* then 2^13 buckets of publication totals */
#define NK_BUMP_N (1u << NK_BUMP_BITS)
#define NK_SHM_SIZE (NK_SHM_HEADER + NK_BUMP_N * 8)

typedef struct {
    uint64_t seg_id;        /* the active segment */
    uint64_t seg_size;      /* its published logical size */
    uint64_t total;         /* bytes published since the session began (monotonic) */
    uint64_t gen;           /* bumped when a compaction replaced segments */
    uint64_t gen_seal;      /* the first segment written after that compaction's seal */
} nk_pub;

typedef struct {
    uint64_t magic;
    uint32_t version;
    uint32_t size;
    uint64_t session;       /* changes whenever a first opener initializes the page */
    uint64_t ver;           /* publish count: slot[ver & 1] is current */
    nk_pub slot[2];
    uint64_t alloc;         /* bytes of the active segment's file reserved (fallocate) */
    uint64_t intent_seg;    /* the wmutex holder's reservation: [published end, */
    uint64_t intent_end;    /* intent_end) of intent_seg may hold its bytes */
    uint64_t synced_total;  /* published bytes known durable */
    int32_t poisoned;       /* an errno: an fsync of the log failed (WalFailedError) */
    int32_t writer_pid;
    int32_t compact_pid;
    int32_t init_pid;       /* the process that initialized the page (recovered the log) */
    uint64_t owner_deaths;  /* writers found dead holding wmutex (stats) */
    uint32_t sync_seq;      /* bumped after each fsync of the log: its waiters' futex */
    uint32_t arrivals;      /* sync() calls that found themselves uncovered: the gather's futex */
    uint32_t gathering;     /* an fsync leader waits on arrivals (shared.pyx, _gather) */
    uint32_t gather_base;   /* smutex: arrivals when the last fsync began, */
    uint32_t gather_prev;   /* and when the one before it began */
    uint32_t gather_want;   /* smutex: the arrivals the next fsync waits for */
    uint32_t fsync_us;      /* smutex: how long the last fsync took */
    uint32_t fsync_starts;  /* bumped as each fsync of the log begins: writers unmap behind (shared.pyx) */
    char pad[32];
    pthread_mutex_t wmutex __attribute__((aligned(64)));
    pthread_mutex_t smutex __attribute__((aligned(64)));
    pthread_mutex_t cmutex __attribute__((aligned(64)));
    /* Bumped (after the publication) when a compaction replaced segments,
       when a process leaves, and at a new session: every read of one key
       catches up then. nprocs: the processes that joined with a writable
       mapping (each joins before it reads the published end it loads, and
       leaves at close; one killed stays counted). While a writer is alone
       it bumps no bucket, and its reads compare none. On a line of their
       own, written that rarely, so the readers' copies stay valid. */
    uint64_t epoch __attribute__((aligned(64)));
    uint32_t nprocs;
    char pad_epoch[52];
} nk_shm;

_Static_assert(sizeof(nk_shm) <= NK_SHM_HEADER, "nk_shm fits its page");

static int nk_shm_mutex_init(pthread_mutex_t *m) {
    pthread_mutexattr_t a;
    int err = pthread_mutexattr_init(&a);
    if (err) return err;
    err = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
#if defined(PTHREAD_MUTEX_ROBUST) || defined(__linux__)
    if (!err) err = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
#endif
    if (!err) err = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return err;
}

/* A fresh page for a first opener (every other process is gone): the
   publish count and session go on from the old page's when it was valid, so
   a read-only follower of the old session sees both change. */
static int nk_shm_init(nk_shm *s, uint64_t seg_id, uint64_t seg_size, uint64_t total,
                       uint64_t alloc, int32_t pid) {
    uint64_t ver = 0, session = 0, gen = 0, epoch = 0;
    int err;
    if (s->magic == NK_SHM_MAGIC && s->version == NK_SHM_VERSION) {
        ver = s->ver + 2;
        session = s->session;
        gen = s->slot[s->ver & 1].gen;
        epoch = s->epoch;
    }
    memset(s, 0, NK_SHM_SIZE);      /* (the buckets too: totals start again) */
    s->epoch = epoch + 1;
    s->nprocs = 1;
    s->version = NK_SHM_VERSION;
    s->size = sizeof(*s);
    s->session = session + 1;
    s->slot[ver & 1].seg_id = seg_id;
    s->slot[ver & 1].seg_size = seg_size;
    s->slot[ver & 1].total = total;
    s->slot[ver & 1].gen = gen + 1;     /* a new session: followers reload */
    s->ver = ver;
    s->alloc = alloc;
    s->synced_total = total;
    s->init_pid = pid;
    if ((err = nk_shm_mutex_init(&s->wmutex)) || (err = nk_shm_mutex_init(&s->smutex))
            || (err = nk_shm_mutex_init(&s->cmutex)))
        return err;
    __atomic_store_n(&s->magic, NK_SHM_MAGIC, __ATOMIC_RELEASE);
    return 0;
}

/* The calling thread (what PyThread_get_thread_ident returns, without the call). */
static inline unsigned long nk_thread_id(void) { return (unsigned long)pthread_self(); }

static inline int nk_shm_valid(const nk_shm *s) {
    return __atomic_load_n(&s->magic, __ATOMIC_ACQUIRE) == NK_SHM_MAGIC
        && s->version == NK_SHM_VERSION && s->size == sizeof(*s);
}

static inline uint64_t nk_shm_ver(const nk_shm *s) {
    return __atomic_load_n(&s->ver, __ATOMIC_ACQUIRE);
}

/* A consistent copy of the published slot and its ver. */
static inline uint64_t nk_shm_read(const nk_shm *s, nk_pub *out) {
    uint64_t v1, v2;
    for (;;) {
        v1 = __atomic_load_n(&s->ver, __ATOMIC_ACQUIRE);
        memcpy(out, (const void *)&s->slot[v1 & 1], sizeof(*out));
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        v2 = __atomic_load_n(&s->ver, __ATOMIC_RELAXED);
        if (v1 == v2) return v1;
    }
}

/* Publishes p (the wmutex holder only): every byte written before this call
   is visible to a process that reads the new ver. Returns the new ver. */
static inline uint64_t nk_shm_publish(nk_shm *s, const nk_pub *p) {
    uint64_t v = s->ver + 1;
    memcpy(&s->slot[v & 1], p, sizeof(*p));
    __atomic_store_n(&s->ver, v, __ATOMIC_RELEASE);
    return v;
}

/* The bucket of the publication totals of the key k[:n]: the same in every
   process (Python's hash of bytes is seeded per process). */
static inline uint32_t nk_shm_bucket(const uint8_t *k, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (uint64_t)n, w;
    for (; n >= 8; k += 8, n -= 8) {
        memcpy(&w, k, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ULL;
        h ^= h >> 29;
    }
    if (n) {
        w = 0;
        memcpy(&w, k, n);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ULL;
    }
    return (uint32_t)((h * 0x94D049BB133111EBULL) >> (64 - NK_BUMP_BITS));
}

static inline uint64_t *nk_shm_bumps(const nk_shm *s) {
    return (uint64_t *)((char *)s + NK_SHM_HEADER);
}

/* The wmutex holder, after publishing a record of the key k[:n] with the
   log's published total at `total` (monotonic: every bump is made under
   wmutex, after its publication). */
static inline void nk_shm_bump(nk_shm *s, const uint8_t *k, size_t n, uint64_t total) {
    __atomic_store_n(nk_shm_bumps(s) + nk_shm_bucket(k, n), total, __ATOMIC_RELEASE);
}

/* The published total when a record of a key of k[:n]'s bucket was last
   published: a map that reflects at least that total has the key's newest
   record (read after nk_shm_publish's store of ver: a catch-up started
   after this load finds the publication). */
static inline uint64_t nk_shm_bumped(const nk_shm *s, const uint8_t *k, size_t n) {
    return __atomic_load_n(nk_shm_bumps(s) + nk_shm_bucket(k, n), __ATOMIC_ACQUIRE);
}

static inline uint64_t nk_shm_epoch(const nk_shm *s) {
    return __atomic_load_n(&s->epoch, __ATOMIC_ACQUIRE);
}

/* Read before the epoch: a process leaves (nk_shm_leave) by bumping the
   epoch before it lowers the count, so a reader that finds one process
   left also finds the epoch moved. */
static inline uint32_t nk_shm_nprocs(const nk_shm *s) {
    return __atomic_load_n(&s->nprocs, __ATOMIC_ACQUIRE);
}

/* A joiner counts itself before it reads the published end it loads, and
   a publisher reads the count after its publication (nk_shm_others), each
   with a full fence between: either the publisher sees the joiner and
   bumps, or the joiner's load has the publication (the store-load pairs of
   Dekker's algorithm). No lock: a joiner never waits for a writer. */
static inline void nk_shm_join(nk_shm *s) {
    __atomic_add_fetch(&s->nprocs, 1, __ATOMIC_SEQ_CST);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* The wmutex holder, after nk_shm_publish: whether other processes may
   read what it published (then it bumps the buckets). */
static inline int nk_shm_others(const nk_shm *s) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return __atomic_load_n(&s->nprocs, __ATOMIC_RELAXED) > 1;
}

/* close() of a process others still have the store open in: the epoch
   moves, then the count drops (never below one). */
static inline void nk_shm_leave(nk_shm *s) {
    uint32_t n = __atomic_load_n(&s->nprocs, __ATOMIC_RELAXED);
    __atomic_add_fetch(&s->epoch, 1, __ATOMIC_SEQ_CST);
    while (n > 1 && !__atomic_compare_exchange_n(&s->nprocs, &n, n - 1, 0, __ATOMIC_SEQ_CST,
                                                 __ATOMIC_RELAXED))
        ;
}

/* After a publication every reader must catch up with (a compaction's). */
static inline void nk_shm_new_epoch(nk_shm *s) {
    __atomic_add_fetch(&s->epoch, 1, __ATOMIC_RELEASE);
}

/* Raises synced_total to at least t. */
static inline void nk_shm_synced(nk_shm *s, uint64_t t) {
    uint64_t cur = __atomic_load_n(&s->synced_total, __ATOMIC_ACQUIRE);
    while (cur < t && !__atomic_compare_exchange_n(&s->synced_total, &cur, t, 0,
                                                   __ATOMIC_RELEASE, __ATOMIC_ACQUIRE))
        ;
}

/* Waiting for the fsync leader of another process (nk_shm_sync_wait) and
   waking every waiter at once when it is done (nk_shm_sync_wake): a futex on
   sync_seq. Waiters queued on smutex itself were woken one at a time, each
   taking and dropping the mutex only to find itself covered, and the chain
   of wake-ups (tens of us each on a VM) delayed the next fsync's cohort. */
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
static inline uint32_t nk_shm_sync_seq(nk_shm *s) {
    return __atomic_load_n(&s->sync_seq, __ATOMIC_ACQUIRE);
}
/* Sleeps while *addr holds val, at most timeout seconds. */
static inline void nk_futex_wait(uint32_t *addr, uint32_t val, double timeout) {
    struct timespec ts;
    ts.tv_sec = (time_t)timeout;
    ts.tv_nsec = (long)((timeout - (double)ts.tv_sec) * 1e9);
    (void)syscall(SYS_futex, addr, FUTEX_WAIT, val, &ts, NULL, 0);
}
/* Wakes at most n of the threads sleeping on addr. */
static inline void nk_futex_wake(uint32_t *addr, int n) {
    (void)syscall(SYS_futex, addr, FUTEX_WAKE, n, NULL, NULL, 0);
}
/* Sleeps until sync_seq differs from seq, at most timeout seconds (a leader
   that died in its fsync never wakes anyone: the waiter then tries smutex,
   which tells it the holder died). */
static inline void nk_shm_sync_wait(nk_shm *s, uint32_t seq, double timeout) {
    nk_futex_wait(&s->sync_seq, seq, timeout);
}
static inline void nk_shm_sync_wake(nk_shm *s) {
    __atomic_add_fetch(&s->sync_seq, 1, __ATOMIC_RELEASE);
    nk_futex_wake(&s->sync_seq, 0x7fffffff);
}

/* The leader's gather (shared.pyx, _gather): sync() callers count
   themselves in `arrivals`; the one that completes what a gathering
   leader waits for wakes it (gather_base and gather_want were stored
   before `gathering`; read stale, they only cost the leader its timeout). */
static inline int nk_shm_gathered(nk_shm *s, uint32_t arrivals) {
    return arrivals - __atomic_load_n(&s->gather_base, __ATOMIC_RELAXED)
           >= __atomic_load_n(&s->gather_want, __ATOMIC_RELAXED);
}
static inline void nk_shm_sync_arrive(nk_shm *s) {
    uint32_t a = __atomic_add_fetch(&s->arrivals, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&s->gathering, __ATOMIC_SEQ_CST) && nk_shm_gathered(s, a))
        nk_futex_wake(&s->arrivals, 1);
}
static inline uint32_t nk_shm_arrivals(nk_shm *s) {
    return __atomic_load_n(&s->arrivals, __ATOMIC_SEQ_CST);
}
static inline void nk_shm_set_gathering(nk_shm *s, uint32_t on) {
    __atomic_store_n(&s->gathering, on, __ATOMIC_SEQ_CST);
}
static inline void nk_shm_arrivals_wait(nk_shm *s, uint32_t a, double timeout) {
    nk_futex_wait(&s->arrivals, a, timeout);
}
#define NK_SHM_SYNC_FUTEX 1
#else
static inline void nk_shm_sync_arrive(nk_shm *s) { (void)s; }
static inline uint32_t nk_shm_arrivals(nk_shm *s) { (void)s; return 0; }
static inline int nk_shm_gathered(nk_shm *s, uint32_t arrivals) { (void)s; (void)arrivals; return 1; }
static inline void nk_shm_set_gathering(nk_shm *s, uint32_t on) { (void)s; (void)on; }
static inline void nk_shm_arrivals_wait(nk_shm *s, uint32_t a, double timeout) { (void)s; (void)a; (void)timeout; }
static inline uint32_t nk_shm_sync_seq(nk_shm *s) { (void)s; return 0; }
static inline void nk_shm_sync_wait(nk_shm *s, uint32_t seq, double timeout) { (void)s; (void)seq; (void)timeout; }
static inline void nk_shm_sync_wake(nk_shm *s) { (void)s; }
#define NK_SHM_SYNC_FUTEX 0
#endif

/* A fsync of the log begins (its leader); what writers compare. */
static inline void nk_shm_fsync_begins(nk_shm *s) {
    __atomic_add_fetch(&s->fsync_starts, 1, __ATOMIC_RELEASE);
}
static inline uint32_t nk_shm_fsync_starts(const nk_shm *s) {
    return __atomic_load_n(&s->fsync_starts, __ATOMIC_RELAXED);
}

/* What a lock call's result means: EOWNERDEAD is the lock taken from a
   holder that died (*dead set; the mutex is marked consistent at once: the
   caller's repair is idempotent, and a caller that dies while repairing
   leaves EOWNERDEAD to the next). */
static inline int nk_shm_locked(pthread_mutex_t *m, int err, int *dead) {
#if defined(__linux__)
    if (err == EOWNERDEAD) {
        *dead = 1;
        pthread_mutex_consistent(m);
        return 0;
    }
#else
    (void)m; (void)dead;
#endif
    return err;
}

/* Locks a robust mutex, waiting at most `timeout` seconds (< 0: no limit).
   Returns 0 (*dead set when the previous holder died holding it: the caller
   repairs, the mutex is already marked consistent), ETIMEDOUT, or an errno. */
static int nk_shm_lock(pthread_mutex_t *m, double timeout, int *dead) {
    int err;
    *dead = 0;
    if (timeout < 0) {
        err = pthread_mutex_lock(m);
    } else if (timeout == 0) {
        err = pthread_mutex_trylock(m);
        if (err == EBUSY) err = ETIMEDOUT;
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += (time_t)timeout;
        ts.tv_nsec += (long)((timeout - (double)(time_t)timeout) * 1e9);
        if (ts.tv_nsec >= 1000000000L) { ts.tv_sec += 1; ts.tv_nsec -= 1000000000L; }
        err = pthread_mutex_timedlock(m, &ts);
    }
    return nk_shm_locked(m, err, dead);
}

/* A contended writers' mutex is held for one append (well under a
   microsecond): spinning a little, as glibc's adaptive mutexes do (its
   robust ones do not), saves the futex sleep and wake-up when the holder
   runs on another core. Returns as nk_shm_trylock; EBUSY after `spins`. */
static inline int nk_shm_trylock(pthread_mutex_t *m, int *dead);
static int nk_shm_spinlock(pthread_mutex_t *m, int spins, int *dead) {
    int err = EBUSY;
    for (int i = 0; i < spins && err == EBUSY; i++) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        __asm__ __volatile__("yield");
#endif
        err = nk_shm_trylock(m, dead);
    }
    return err;
}

static inline int nk_shm_trylock(pthread_mutex_t *m, int *dead) {
    *dead = 0;
    return nk_shm_locked(m, pthread_mutex_trylock(m), dead);
}

/* flock with a timeout: LOCK_NB attempts with a growing pause (flock has no
   timed form; SQLite's busy handler waits the same way). timeout < 0: block. */
#include <sys/file.h>
static int nk_flock_wait(int fd, int op, double timeout) {
    struct timespec pause = {0, 1000000};      /* 1 ms, doubling to 50 ms */
    struct timespec now, end;
    if (timeout < 0) {
        while (flock(fd, op) != 0) {
            if (errno != EINTR) return errno;
        }
        return 0;
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += (time_t)timeout;
    end.tv_nsec += (long)((timeout - (double)(time_t)timeout) * 1e9);
    if (end.tv_nsec >= 1000000000L) { end.tv_sec += 1; end.tv_nsec -= 1000000000L; }
    for (;;) {
        if (flock(fd, op | LOCK_NB) == 0) return 0;
        if (errno != EWOULDBLOCK && errno != EINTR) return errno;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > end.tv_sec || (now.tv_sec == end.tv_sec && now.tv_nsec >= end.tv_nsec))
            return EWOULDBLOCK;
        nanosleep(&pause, NULL);
        if (pause.tv_nsec < 50000000L) pause.tv_nsec *= 2;
    }
}

#endif /* NORIKV_SHARED_H */
