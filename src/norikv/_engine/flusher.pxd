# flusher.pyx: a Wal's background work without the GIL.

cdef enum:
    _FLUSH_NEEDS_GIL = -2       # _flusher_loop: the caller runs sync() with the GIL, then again


# Runs until bg_stop or two windows with nothing to do (0), a failed fsync
# (its errno; bg_err is set), an unusable Wal (-1) or work that needs the
# GIL (_FLUSH_NEEDS_GIL).
cdef int _flusher_loop(_WalCore self) noexcept nogil
# Wakes it (an append made it dirty or wants prefaulting); stop: return.
cdef void _wake_flusher(_WalCore self, bint stop) noexcept nogil
# What is durable decides `dirty` (the handshake with _commit).
cdef void _settle_dirty(_WalCore self, double since) noexcept nogil
