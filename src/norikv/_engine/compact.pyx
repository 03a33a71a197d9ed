# Compaction: rewriting the log as one record per live key, crash-safe at
# every instant; when the write path starts one in the background; the
# dead-ratio estimate both use.

from libc.stdlib cimport malloc, free, realloc
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize

import os
import threading
import time

from norikv.errors import ClosedError, NoriError, io_error


cpdef double dead_ratio(uint64_t live_bytes, uint64_t keys, uint64_t log_bytes) noexcept:
    """The share of a log's ``log_bytes`` that no longer hold live data,
    estimated from the live keys' and values' uncompressed sizes plus 8 bytes
    of record overhead per key (``keys`` of them): what KvStore.dead_ratio()
    and stats() report and auto-compaction compares with
    ``compact_dead_ratio``. 0.0 for an empty log."""
    if not log_bytes:
        return 0.0
    return max(0.0, 1.0 - (live_bytes + 8.0 * keys) / log_bytes)


cdef uint64_t _log_bytes(KvStore store) except? 0:
    return sum(store.wal._segment_sizes().values())


cdef int _maybe_compact(KvStore store) except -1:
    """The write path's check (KvStore._after_write, once 1 MiB or a 16th of
    the log more is written): with auto_compact, a background compaction
    once the log holds compact_min_bytes and its dead_ratio reaches
    compact_dead_ratio."""
    cdef uint64_t log_bytes = _log_bytes(store)
    store._next_check = store.wal.written_total + max(<uint64_t>1 << 20, log_bytes // 16)
    if not store._auto_compact or log_bytes < store.compact_min_bytes:
        return 0
    if dead_ratio(store.live_bytes, len(store._data), log_bytes) >= store.compact_dead_ratio:
        _start_background_compaction(store)
    return 0


cdef int _start_background_compaction(KvStore store) except -1:
    t = store._compactor
    if t is not None and t.is_alive():
        return 0
    if store._compact_lock.locked():
        return 0
    t = threading.Thread(target=_background_compaction, args=(store,), name="norikv-compactor",
                         daemon=True)
    store._compactor = t
    t.start()
    return 0


def _background_compaction(KvStore store):
    """The background compaction's thread. A failure is kept for stats()
    (ClosedError only says the store closed meanwhile)."""
    try:
        _compact(store)
    except ClosedError:
        pass
    except BaseException as exc:
        store._compact_error = exc


cdef tuple _freeze(KvStore store):
    """Compaction step 1, atomic with respect to every write: copies the live
    map and seals the log so that later writes land in segments numbered
    after room reserved for the snapshot. Returns (data, expiry, first id,
    reserved ids)."""
    cdef uint64_t bound = 0
    cdef uint64_t gap
    store._check_open()
    store.wal._begin_exclusive()
    try:
        store._purge_expired()
        data = store._data.copy()
        expiry = store._expiry.copy()
        for k, v in data.items():
            bound += nk_encoded_len(PyBytes_GET_SIZE(k), PyBytes_GET_SIZE(v), NK_FLAG_TTL,
                                    UINT64_MAX, 0, 0)
        gap = bound // store.wal.max_segment_size + 2
        first, _ = store.wal._seal_and_skip_locked(gap)
    finally:
        store.wal._end_exclusive()
    return data, expiry, first, gap


cdef dict _compact(KvStore store):
    """KvStore.compact (its docstring says what it guarantees)."""
    cdef object wal = store.wal     # through Python attributes: tests and tools wrap its steps
    store._check_open()
    with store._compact_lock:
        t0 = time.perf_counter()
        before = _log_bytes(store)
        data, expiry, first, gap = _freeze(store)
        try:
            parts = write_snapshot(data, expiry, wal.dir, first, gap, wal.max_segment_size,
                                   store._compression, store.compress_min_size, store.max_value_size)
            del data, expiry
            for tmp, seg, size in parts:
                wal._install_segment(tmp, seg, size)
        except BaseException as exc:
            # A failed snapshot (e.g. ENOSPC) must not keep its partial
            # temporary files, and their disk space, until the next open.
            for seg in range(first, first + gap):
                tmp = os.path.join(wal.dir, segment_name(seg) + ".compact-tmp")
                try:
                    os.unlink(tmp)
                except (FileNotFoundError, IsADirectoryError):
                    pass        # never written, or a directory that is not ours
            if isinstance(exc, OSError) and not isinstance(exc, NoriError) and exc.errno:
                raise io_error(exc.errno, exc.filename, "compaction snapshot") from exc
            raise
        old = [s for s in wal._segment_ids() if s < first]
        wal._delete_segments(old)
        store._compactions += 1
        result = {"seconds": time.perf_counter() - t0, "bytes_before": before,
                  "bytes_after": _log_bytes(store), "segments_written": len(parts),
                  "segments_deleted": len(old)}
        store._last_compaction = result
        return result


def write_snapshot(dict data, dict expiry, dirpath, uint64_t first_id, uint64_t ids,
                   uint64_t max_segment_size, int compression, Py_ssize_t compress_min_size,
                   uint64_t max_value_size=_DEFAULT_MAX_VALUE_SIZE):
    """Writes the live map as segment files named ``<id>.wal.compact-tmp``,
    fsynced, for ids first_id .. first_id+ids-1 (the last takes any overflow).
    Returns [(tmp path, id, size)]. Expired keys are left out. A value over
    max_value_size (read uncompressed from a log another writer made) is
    written uncompressed: compressed, no open with that bound could read it."""
    cdef uint64_t seg = first_id
    cdef uint64_t size = 0
    cdef int64_t now = _now_ms()
    cdef uint32_t flags
    cdef uint64_t deadline
    cdef bytes k, v, stored
    cdef size_t n, used = 0, cap = 4 << 20
    cdef uint8_t *buf = <uint8_t *>malloc(cap)
    cdef uint8_t *nb
    cdef list out = []
    cdef object f = None
    cdef str path = ""
    if buf == NULL:
        raise MemoryError()
    try:
        for k, v in data.items():
            d = expiry.get(k)
            flags = 0
            deadline = 0
            if d is not None:
                if <int64_t>d <= now:
                    continue
                deadline = <uint64_t>d
                flags = NK_FLAG_TTL | NK_FLAG_TTL_ABS
            stored = _stored_form(v, compression, compress_min_size, max_value_size, &flags)
            n = nk_encoded_len(PyBytes_GET_SIZE(k), PyBytes_GET_SIZE(stored), flags, deadline, 0, 0)
            if f is not None and size > 0 and size + n > max_segment_size and seg + 1 < first_id + ids:
                _write_all(f, buf, used)
                used = 0
                _seal_tmp(f)
                out.append((path, seg, size))
                f = None
                seg += 1
                size = 0
            if f is None:
                path = os.path.join(dirpath, segment_name(seg) + ".compact-tmp")
                f = open(path, "wb")
            if used + n > cap:
                _write_all(f, buf, used)
                used = 0
                if n > cap:
                    nb = <uint8_t *>realloc(buf, n)
                    if nb == NULL:
                        raise MemoryError()
                    buf = nb
                    cap = n
            used += nk_encode(buf + used, <const uint8_t *>PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k),
                              <const uint8_t *>PyBytes_AS_STRING(stored), PyBytes_GET_SIZE(stored),
                              flags, deadline, 0, 0)
            size += n
        if f is not None:
            _write_all(f, buf, used)
            _seal_tmp(f)
            out.append((path, seg, size))
            f = None
    finally:
        free(buf)
        if f is not None:
            f.close()
    return out


cdef int _write_all(object f, const uint8_t *buf, size_t n) except -1:
    if n:
        f.write(PyBytes_FromStringAndSize(<const char *>buf, n))
    return 0


def _seal_tmp(f):
    cdef int err
    cdef int fd
    f.flush()
    fd = f.fileno()
    with nogil:
        err = nk_sync_data(fd, NULL, 0)
    f.close()
    if err:
        raise io_error(err, f.name, "fsync")
