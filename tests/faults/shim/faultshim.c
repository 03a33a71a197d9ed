/* faultshim: an LD_PRELOAD library that makes chosen I/O calls fail, for the
 * norikv fault tests.  Compiled by tests/faults/test_io_errors.py at run time:
 *
 *     cc -shared -fPIC -O1 -o faultshim.so faultshim.c -ldl
 *
 * Environment (read once, at the first intercepted call):
 *   FAULTSHIM_OPS      comma list of calls to fail: fsync, fdatasync, write,
 *                      pwrite, msync, fallocate, ftruncate (default: none)
 *   FAULTSHIM_ERRNO    errno to fail with (default 5, EIO)
 *   FAULTSHIM_PATH     only fail calls on descriptors whose path contains
 *                      this substring (default: any descriptor; msync has no
 *                      descriptor and ignores it)
 *   FAULTSHIM_CONTROL  a file path: faults are armed only while it exists
 *                      (so the process under test can arm them at a chosen
 *                      moment); if it holds a comma list of calls, those
 *                      replace FAULTSHIM_OPS while it exists.  Without it,
 *                      faults are armed from the start
 *   FAULTSHIM_AFTER    let this many matching calls succeed first (default 0)
 *   FAULTSHIM_LOG      a file to which one line per injected fault is appended
 *   FAULTSHIM_ACTION   "fail" (default) or "kill": perform the call, then
 *                      SIGKILL the process (a crash right after that call;
 *                      with FAULTSHIM_AFTER=n, after the n+1-th matching call);
 *                      or "hold": the n+1-th matching call (only that one)
 *                      first writes a byte into the FIFO FAULTSHIM_HELD, then
 *                      waits for a byte from the FIFO FAULTSHIM_HOLD, then
 *                      runs (what another thread can do meanwhile: whether
 *                      the caller released the GIL around the call);
 *                      or "delay" (not rename, pread): every matching call sleeps
 *                      FAULTSHIM_DELAY_US microseconds (default 1000), then
 *                      runs (a device whose flush takes that long)
 *
 * Calls that can be named: fsync, fdatasync, write, pwrite, msync, fallocate,
 * ftruncate, unlink (also unlinkat), rename (also renameat), pread (also
 * pread64: the reads of recovery).
 *
 * The process sees the failure exactly as from the kernel: -1 and errno (or
 * the error number returned, for posix_fallocate).  Nothing is written or
 * synced by a failed call. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

enum { OP_FSYNC = 1, OP_FDATASYNC = 2, OP_WRITE = 4, OP_PWRITE = 8, OP_MSYNC = 16,
       OP_FALLOCATE = 32, OP_FTRUNCATE = 64, OP_UNLINK = 128, OP_RENAME = 256, OP_PREAD = 512 };

static pthread_once_t once = PTHREAD_ONCE_INIT;
static unsigned ops_mask;
static int fail_errno = EIO;
static const char *path_sub;
static const char *control;
static const char *logpath;
static long after;
static long matched;
static int kill_mode;
static int hold_mode;
static int delay_mode;
static long delay_us = 1000;
static const char *held_fifo;
static const char *hold_fifo;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static unsigned parse_ops(const char *s) {
    unsigned mask = 0;
    char buf[256], *save = NULL;
    strncpy(buf, s, sizeof buf - 1);
    buf[sizeof buf - 1] = 0;
    for (char *tok = strtok_r(buf, ", \n", &save); tok; tok = strtok_r(NULL, ", \n", &save)) {
        if (!strcmp(tok, "fsync")) mask |= OP_FSYNC;
        else if (!strcmp(tok, "fdatasync")) mask |= OP_FDATASYNC;
        else if (!strcmp(tok, "write")) mask |= OP_WRITE;
        else if (!strcmp(tok, "pwrite")) mask |= OP_PWRITE;
        else if (!strcmp(tok, "msync")) mask |= OP_MSYNC;
        else if (!strcmp(tok, "fallocate")) mask |= OP_FALLOCATE;
        else if (!strcmp(tok, "ftruncate")) mask |= OP_FTRUNCATE;
        else if (!strcmp(tok, "unlink")) mask |= OP_UNLINK;
        else if (!strcmp(tok, "rename")) mask |= OP_RENAME;
        else if (!strcmp(tok, "pread")) mask |= OP_PREAD;
    }
    return mask;
}

/* The ops armed now: 0 when the control file is missing, its contents when
   it names any, else FAULTSHIM_OPS. */
static unsigned armed_ops(void) {
    static int (*real_open)(const char *, int, ...);
    static ssize_t (*real_read)(int, void *, size_t);
    char buf[256];
    ssize_t n;
    int fd;
    unsigned mask;
    if (!control) return ops_mask;
    if (!real_open) real_open = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open");
    if (!real_read) real_read = (ssize_t (*)(int, void *, size_t))dlsym(RTLD_NEXT, "read");
    fd = real_open(control, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    n = real_read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return ops_mask;
    buf[n] = 0;
    mask = parse_ops(buf);
    return mask ? mask : ops_mask;
}

static void init(void) {
    const char *s = getenv("FAULTSHIM_OPS");
    if (s) ops_mask = parse_ops(s);
    if ((s = getenv("FAULTSHIM_ERRNO"))) fail_errno = atoi(s);
    path_sub = getenv("FAULTSHIM_PATH");
    if (path_sub && !*path_sub) path_sub = NULL;
    control = getenv("FAULTSHIM_CONTROL");
    logpath = getenv("FAULTSHIM_LOG");
    if ((s = getenv("FAULTSHIM_AFTER"))) after = atol(s);
    if ((s = getenv("FAULTSHIM_ACTION")) && !strcmp(s, "kill")) kill_mode = 1;
    if (s && !strcmp(s, "hold")) hold_mode = 1;
    if (s && !strcmp(s, "delay")) delay_mode = 1;
    if ((s = getenv("FAULTSHIM_DELAY_US"))) delay_us = atol(s);
    held_fifo = getenv("FAULTSHIM_HELD");
    hold_fifo = getenv("FAULTSHIM_HOLD");
}

static int fd_matches(int fd) {
    char link[64], target[4096];
    ssize_t n;
    if (!path_sub || fd < 0) return 1;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    n = readlink(link, target, sizeof target - 1);
    if (n < 0) return 0;
    target[n] = 0;
    return strstr(target, path_sub) != NULL;
}

static void log_fault(const char *name, int fd) {
    static int (*real_open)(const char *, int, ...);
    static ssize_t (*real_write)(int, const void *, size_t);
    char line[128];
    int lfd, len;
    if (!logpath) return;
    if (!real_open) real_open = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open");
    if (!real_write) real_write = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    lfd = real_open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (lfd < 0) return;
    len = snprintf(line, sizeof line, "%s %d\n", name, fd);
    real_write(lfd, line, (size_t)len);
    close(lfd);
}

/* Whether this call must fail. Saves and restores errno when it need not. */
static int should_fail(unsigned op, const char *name, int fd) {
    int saved = errno, fail = 0;
    pthread_once(&once, init);
    if (!(armed_ops() & op)) { errno = saved; return 0; }
    if (fd >= 0 && !fd_matches(fd)) { errno = saved; return 0; }
    pthread_mutex_lock(&mu);
    if (hold_mode ? matched++ == after : matched++ >= after) fail = 1;
    pthread_mutex_unlock(&mu);
    if (fail) log_fault(name, fd);
    errno = saved;
    return fail;
}

/* Hold mode: says through FAULTSHIM_HELD that the call is held, and waits
   for a byte on FAULTSHIM_HOLD before the caller performs it. */
static void hold(void) {
    static int (*real_open)(const char *, int, ...);
    static ssize_t (*real_read)(int, void *, size_t);
    static ssize_t (*real_write)(int, const void *, size_t);
    char c = 'h';
    int fd, saved = errno;
    if (!real_open) real_open = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open");
    if (!real_read) real_read = (ssize_t (*)(int, void *, size_t))dlsym(RTLD_NEXT, "read");
    if (!real_write) real_write = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    if (held_fifo && (fd = real_open(held_fifo, O_WRONLY | O_CLOEXEC)) >= 0) {
        (void)real_write(fd, &c, 1);
        close(fd);
    }
    if (hold_fifo && (fd = real_open(hold_fifo, O_RDONLY | O_CLOEXEC)) >= 0) {
        (void)real_read(fd, &c, 1);
        close(fd);
    }
    errno = saved;
}

/* Delay mode: the caller sleeps delay_us first. */
static void delay(void) {
    struct timespec ts = {delay_us / 1000000, (delay_us % 1000000) * 1000};
    int saved = errno;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    errno = saved;
}

/* In kill mode a matching call is performed, then the process dies; in hold
   mode it waits (hold), in delay mode it sleeps (delay), then is performed. */
#define FAIL_OR_KILL(op, name, fd, failexpr, call) \
    do { \
        if (should_fail(op, name, fd)) { \
            if (hold_mode) { hold(); break; } \
            if (delay_mode) { delay(); break; } \
            if (kill_mode) { __typeof__(call) r_ = call; (void)r_; kill(getpid(), SIGKILL); } \
            failexpr; \
        } \
    } while (0)

#define REAL(ret, name, ...) \
    static ret (*real)(__VA_ARGS__); \
    if (!real) real = (ret (*)(__VA_ARGS__))dlsym(RTLD_NEXT, name)

int fsync(int fd) {
    REAL(int, "fsync", int);
    FAIL_OR_KILL(OP_FSYNC, "fsync", fd, { errno = fail_errno; return -1; }, real(fd));
    return real(fd);
}

int fdatasync(int fd) {
    REAL(int, "fdatasync", int);
    FAIL_OR_KILL(OP_FDATASYNC, "fdatasync", fd, { errno = fail_errno; return -1; }, real(fd));
    return real(fd);
}

ssize_t write(int fd, const void *buf, size_t n) {
    REAL(ssize_t, "write", int, const void *, size_t);
    FAIL_OR_KILL(OP_WRITE, "write", fd, { errno = fail_errno; return -1; }, real(fd, buf, n));
    return real(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    REAL(ssize_t, "pwrite", int, const void *, size_t, off_t);
    FAIL_OR_KILL(OP_PWRITE, "pwrite", fd, { errno = fail_errno; return -1; }, real(fd, buf, n, off));
    return real(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    REAL(ssize_t, "pwrite64", int, const void *, size_t, off_t);
    FAIL_OR_KILL(OP_PWRITE, "pwrite64", fd, { errno = fail_errno; return -1; }, real(fd, buf, n, off));
    return real(fd, buf, n, off);
}

int msync(void *addr, size_t len, int flags) {
    REAL(int, "msync", void *, size_t, int);
    FAIL_OR_KILL(OP_MSYNC, "msync", -1, { errno = fail_errno; return -1; }, real(addr, len, flags));
    return real(addr, len, flags);
}

int fallocate(int fd, int mode, off_t off, off_t len) {
    REAL(int, "fallocate", int, int, off_t, off_t);
    FAIL_OR_KILL(OP_FALLOCATE, "fallocate", fd, { errno = fail_errno; return -1; }, real(fd, mode, off, len));
    return real(fd, mode, off, len);
}

int fallocate64(int fd, int mode, off_t off, off_t len) {
    REAL(int, "fallocate64", int, int, off_t, off_t);
    FAIL_OR_KILL(OP_FALLOCATE, "fallocate64", fd, { errno = fail_errno; return -1; }, real(fd, mode, off, len));
    return real(fd, mode, off, len);
}

int posix_fallocate(int fd, off_t off, off_t len) {
    REAL(int, "posix_fallocate", int, off_t, off_t);
    FAIL_OR_KILL(OP_FALLOCATE, "posix_fallocate", fd, return fail_errno, real(fd, off, len));
    return real(fd, off, len);
}

int posix_fallocate64(int fd, off_t off, off_t len) {
    REAL(int, "posix_fallocate64", int, off_t, off_t);
    FAIL_OR_KILL(OP_FALLOCATE, "posix_fallocate64", fd, return fail_errno, real(fd, off, len));
    return real(fd, off, len);
}

int ftruncate(int fd, off_t len) {
    REAL(int, "ftruncate", int, off_t);
    FAIL_OR_KILL(OP_FTRUNCATE, "ftruncate", fd, { errno = fail_errno; return -1; }, real(fd, len));
    return real(fd, len);
}

int ftruncate64(int fd, off_t len) {
    REAL(int, "ftruncate64", int, off_t);
    FAIL_OR_KILL(OP_FTRUNCATE, "ftruncate64", fd, { errno = fail_errno; return -1; }, real(fd, len));
    return real(fd, len);
}

int unlink(const char *path) {
    REAL(int, "unlink", const char *);
    if (should_fail(OP_UNLINK, "unlink", -1)) {
        if (hold_mode) { hold(); return real(path); }
        if (delay_mode) { delay(); return real(path); }
        if (kill_mode) { real(path); kill(getpid(), SIGKILL); }
        errno = fail_errno; return -1;
    }
    return real(path);
}

int unlinkat(int dirfd, const char *path, int flags) {
    REAL(int, "unlinkat", int, const char *, int);
    if (should_fail(OP_UNLINK, "unlinkat", -1)) {
        if (hold_mode) { hold(); return real(dirfd, path, flags); }
        if (delay_mode) { delay(); return real(dirfd, path, flags); }
        if (kill_mode) { real(dirfd, path, flags); kill(getpid(), SIGKILL); }
        errno = fail_errno; return -1;
    }
    return real(dirfd, path, flags);
}

int rename(const char *a, const char *b) {
    REAL(int, "rename", const char *, const char *);
    if (should_fail(OP_RENAME, "rename", -1)) {
        if (kill_mode) { real(a, b); kill(getpid(), SIGKILL); }
        errno = fail_errno; return -1;
    }
    return real(a, b);
}

int renameat(int da, const char *a, int db, const char *b) {
    REAL(int, "renameat", int, const char *, int, const char *);
    if (should_fail(OP_RENAME, "renameat", -1)) {
        if (kill_mode) { real(da, a, db, b); kill(getpid(), SIGKILL); }
        errno = fail_errno; return -1;
    }
    return real(da, a, db, b);
}

ssize_t pread(int fd, void *buf, size_t n, off_t off) {
    REAL(ssize_t, "pread", int, void *, size_t, off_t);
    if (should_fail(OP_PREAD, "pread", fd)) { errno = fail_errno; return -1; }
    return real(fd, buf, n, off);
}

ssize_t pread64(int fd, void *buf, size_t n, off_t off) {
    REAL(ssize_t, "pread64", int, void *, size_t, off_t);
    if (should_fail(OP_PREAD, "pread64", fd)) { errno = fail_errno; return -1; }
    return real(fd, buf, n, off);
}
