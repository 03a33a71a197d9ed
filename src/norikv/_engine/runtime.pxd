# Process-wide state every part reads: the clocks and the fork generation.
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME, CLOCK_MONOTONIC

# Incremented in every child created by fork(): a Wal remembers the value it
# was opened under; when it differs, the Wal was inherited from the parent and
# refuses everything but close() (log.pyx).
cdef unsigned long _fork_generation

# Test hook: milliseconds added to the wall clock that TTL deadlines use, so
# tests move time forward instead of sleeping (_set_clock_offset_ms).
cdef int64_t _clock_offset_ms


cdef inline double _now_monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef inline int64_t _now_ms() noexcept nogil:
    """The wall clock in Unix milliseconds, as TTL deadlines use it."""
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000 + ts.tv_nsec // 1000000 + _clock_offset_ms
