# Process-wide state: the clocks and what happens in a child after fork().

import os


_fork_generation = 0
_clock_offset_ms = 0


def _after_fork_in_child():
    """Run in every child created by fork(): the Wals and stores the parent had
    open stop owning their directories in this process (log.pyx, store.pyx)."""
    global _fork_generation
    _fork_generation += 1
    _detach_inherited_wals()
    _stores_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def now_ms():
    """The wall clock in Unix milliseconds, as TTL deadlines use it."""
    return _now_ms()


def _set_clock_offset_ms(int64_t offset_ms):
    """For tests only: shifts the TTL clock by ``offset_ms`` (0 restores it).
    Returns the previous offset."""
    global _clock_offset_ms
    cdef int64_t old = _clock_offset_ms
    _clock_offset_ms = offset_ms
    return old
