"""The background thread's fsync syncs the log up to its end only
(nk_sync_range in _engine/include/platform.h: msync(MS_SYNC) of the
segment's mapping, which Linux runs as fdatasync of that range).

What it must do, checked on the page cache itself with cachestat(2): every
page of the active segment below the log's end is written back when the
fsync returns, and the pages past the end (zeros mapped for writing ahead
of the writer) are left dirty and mapped, where a whole-file fdatasync wrote
them out and write-protected them under the writer. sync() stays a
whole-file fdatasync. (A failing msync poisons the log like a failing
fdatasync: tests/faults/test_io_errors.py, with the fault shim.)

Under FsyncPolicy.OS with writeback_bytes, the same thread starts the
writeback of the log behind the writer (sync_file_range), checked the same
way."""

from __future__ import annotations

import ctypes
import errno
import os
import sys

import pytest

from conftest import sectors_written, wait_for
from norikv import FsyncPolicy, KvStore, Position, Record, Wal, WalConfig, _engine
from norikv._engine import segment_name

MIB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the ranged fsync is msync on Linux")


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _CacheStat(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("cache", "dirty", "writeback", "evicted", "recently_evicted")]


_libc = ctypes.CDLL(None, use_errno=True)
_NR_CACHESTAT = 451  # (the same number on every architecture since Linux 6.5)


def cachestat(path, off, length):
    """Pages of [off, off+length) of the file: (cached, dirty, under writeback)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        r, st = _Range(off, length), _CacheStat()
        if _libc.syscall(_NR_CACHESTAT, fd, ctypes.byref(r), ctypes.byref(st), 0) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), path)
        return st.cache, st.dirty, st.writeback
    finally:
        os.close(fd)


def _cachestat_works(tmp_path_factory):
    p = tmp_path_factory.mktemp("cachestat") / "f"
    p.write_bytes(b"x")
    try:
        cachestat(str(p), 0, PAGE)
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EPERM):
            return False
        raise
    return True


@pytest.fixture(scope="module")
def needs_cachestat(tmp_path_factory):
    if not _cachestat_works(tmp_path_factory):
        pytest.skip("cachestat(2) is not available (Linux 6.5+)")


def _round_up(n):
    return -(-n // PAGE) * PAGE


def _open(kind, path, policy, **kw):
    if kind == "wal":
        return Wal.open(WalConfig(dir=str(path), max_segment_size=64 * MIB, fsync_policy=policy, **kw))[0]
    return KvStore.open(str(path), fsync_policy=policy, max_segment_size=64 * MIB, auto_compact=False, **kw)


def _write(kind, w, n, size=100):
    for i in range(n):
        if kind == "wal":
            w.append(Record.put(b"k%06d" % i, b"v" * size))
        else:
            w.put(b"k%06d" % i, b"v" * size)


def _wal(kind, w):
    return w if kind == "wal" else w.wal


def _segment(wal):
    return os.path.join(wal.dir, segment_name(wal.seg_id))


# ------------------------------------------------------------ what it syncs


@pytest.mark.parametrize("kind", ["wal", "store"])  # one writer; a store's log shared through SHM
def test_the_background_fsync_writes_back_the_log_and_leaves_the_pages_past_its_end(needs_cachestat, tmp_path, kind):
    # The OS policy maps 2-16 MiB ahead of the writer for writing: dirty zero
    # pages past the log's end, which a whole-file fdatasync writes out.
    with _open(kind, tmp_path / "db", FsyncPolicy.OS) as w:
        wal = _wal(kind, w)
        _write(kind, w, 2000)  # ~250 KB
        path, end = _segment(wal), wal.seg_size
        assert wait_for(lambda: not wal.prefault_pending)
        _, dirty_below, _ = cachestat(path, 0, _round_up(end))
        _, dirty_past, _ = cachestat(path, _round_up(end), 16 * MIB)
        assert dirty_below > 0 and dirty_past >= 256  # (1 MiB; the data is 61 pages)

        _engine._test_background_sync(wal)

        cached, dirty, writeback = cachestat(path, 0, _round_up(end))
        assert (dirty, writeback) == (0, 0) and cached == _round_up(end) // PAGE
        _, still_dirty, _ = cachestat(path, _round_up(end), 16 * MIB)
        assert still_dirty >= dirty_past  # (whole-file fdatasync: 0)
        assert wal._lock_state()[1] == wal._lock_state()[0]  # all of it is durable


@pytest.mark.parametrize("kind", ["wal", "store"])
def test_the_batch_flusher_covers_every_append(needs_cachestat, tmp_path, kind):
    with _open(kind, tmp_path / "db", FsyncPolicy.batch(0.002)) as w:
        wal = _wal(kind, w)
        for _ in range(5):
            _write(kind, w, 500)
            written = wal._lock_state()[0]
            assert wait_for(lambda written=written: wal._lock_state()[1] >= written)
        # (the page the writer is in is mapped for writing again after each
        # fsync, by _rearm, which marks it dirty: the pages below it)
        end = wal.seg_size
        assert cachestat(_segment(wal), 0, end - end % PAGE)[1:] == (0, 0)
        assert wal.fsync_count > 0


@pytest.mark.parametrize("kind", ["wal", "store"])
def test_a_sync_call_stays_a_whole_file_fdatasync(needs_cachestat, tmp_path, kind):
    # sync() waits for its fsync. Ranged, each would convert the fallocated
    # (unwritten) extents it covers with a metadata write of its own: the
    # median sync() after 1,000 puts went from ~180 to ~295 us; fdatasync
    # also writes the zeros ahead, which converts them in bulk. Right after
    # it the background thread maps the call's span past the log's end for
    # writing again (_rearm_after_sync): only those pages are dirty then.
    with _open(kind, tmp_path / "db", FsyncPolicy.OS) as w:
        wal = _wal(kind, w)
        _write(kind, w, 2000)
        assert wait_for(lambda: not wal.prefault_pending)
        path, span = _segment(wal), wal._lock_state()[0]
        assert cachestat(path, 0, 64 * MIB)[1] >= 256 + 61
        w.sync()
        assert wal._lock_state()[1] == span
        assert wait_for(lambda: wal._rearmed_through() >= span)
        end = wal.seg_size
        assert cachestat(path, 0, end - end % 4096)[1:] == (0, 0)
        assert cachestat(path, end - end % 4096, 64 * MIB)[1] <= _round_up(span) // 4096 + 1


def _zeros_mapped_ahead(kind, tmp_path, n):
    """A new log (OS policy) with n records and the prefault's full 16 MiB
    lead mapped for writing ahead of them, as a writer gets it: (the store
    or Wal, its Wal, the segment's path, the log's end)."""
    if sectors_written(tmp_path) is None:
        pytest.skip("no block-device statistics for this file system")
    os.sync()
    w = _open(kind, tmp_path / "db", FsyncPolicy.OS)
    wal = _wal(kind, w)
    _write(kind, w, n)
    assert wait_for(lambda: not wal.prefault_pending)
    while _engine._test_prefault(wal, False)[1] < 16 * MIB:
        pass
    path, end = _segment(wal), wal.seg_size
    assert cachestat(path, _round_up(end), 16 * MIB)[1] >= 4000  # dirty zeros ahead
    return w, wal, path, end


def _keys_read_back(path):
    with Wal.open(WalConfig(dir=os.path.dirname(path)))[0] as again:
        return [r.key for r, _ in again.read_from(Position(0, 0))]


@pytest.mark.parametrize("kind", ["wal", "store"])
def test_sealing_a_segment_leaves_the_zeros_past_its_end_unwritten(needs_cachestat, tmp_path, kind):
    # close() (like a rotation and a compaction's seal) syncs the log's bytes
    # (a ranged fsync), then truncates: the 16 MiB of zeros mapped for writing
    # ahead are dropped, not written first (a whole-file fdatasync wrote
    # them: 16.3 MiB for a close, 20 ms instead of 4 on the test VM). Counted
    # on the block device, which other writers could disturb: what is dirty
    # elsewhere is written out first, and the bound is half of what was saved.
    w, _, path, size = _zeros_mapped_ahead(kind, tmp_path, 2000)  # ~250 KB
    before = sectors_written(tmp_path)
    w.close()
    wrote = sectors_written(tmp_path) - before
    assert wrote < 8 * MIB, wrote
    assert os.path.getsize(path) == size
    assert _keys_read_back(path)[-1] == b"k001999"


@pytest.mark.parametrize("kind", ["wal", "store"])
def test_the_first_small_sync_drops_the_zeros_mapped_ahead_unwritten(needs_cachestat, tmp_path, kind):
    # A store that syncs little switches to page-sized folios at its first
    # small sync(); the zeros the OS policy's prefault had mapped for writing
    # ahead of the log are dropped then (fallocate ZERO_RANGE), not written
    # by that fsync and the next (a new store's first sync() under OS took
    # 2.0-2.5 ms instead of 0.4-0.6). Counted on the block device, as above.
    w, _, path, end = _zeros_mapped_ahead(kind, tmp_path, 200)  # ~25 KB: a small sync
    before = sectors_written(tmp_path)
    w.sync()
    wrote = sectors_written(tmp_path) - before
    assert wrote < 8 * MIB, wrote
    assert cachestat(path, _round_up(end), 16 * MIB)[1] == 0
    _write(kind, w, 400)  # the log goes on past the dropped pages
    w.sync()
    w.close()
    assert _keys_read_back(path) == [b"k%06d" % i for i in range(200)] + [b"k%06d" % i for i in range(400)]


# ------------------------------------------------------------ writeback_bytes (FsyncPolicy.OS)


def _after_40000_puts(kind, path, step=0):
    """Writes about 5 MB under OS (writeback_bytes=step) and waits, with a
    step, until the writeback has started up to the last 2 MiB boundary
    below the end (where it stops: the largest page-cache folio, written
    whole). Returns where it started up to, and the dirty pages below the
    end and below that."""
    with _open(kind, path, FsyncPolicy.OS, **({"writeback_bytes": step} if step else {})) as w:
        wal = _wal(kind, w)
        _write(kind, w, 40_000)
        seg, end = _segment(wal), wal.seg_size
        if step:
            assert wait_for(lambda: wal._written_back_through() >= end - end % (2 * MIB))
        behind = wal._written_back_through()
        below_behind = cachestat(seg, 0, behind)[1] if behind else 0  # (a length of 0 is "to the end")
        return behind, cachestat(seg, 0, end - end % PAGE)[1], below_behind


@pytest.mark.parametrize("kind", ["wal", "store"])
def test_writeback_bytes_starts_the_logs_writeback_behind_the_writer(needs_cachestat, tmp_path, kind):
    # Every writeback_bytes the background thread starts the writeback of
    # the pages wholly written (sync_file_range WRITE): none of them is dirty
    # once it has, so the fsync that seals the segment finds them written.
    # Without the option the kernel leaves them dirty for 30 s.
    behind, dirty, dirty_behind = _after_40000_puts(kind, tmp_path / "on", MIB)
    assert behind >= 4 * MIB and dirty_behind == 0 and dirty <= 2 * MIB // PAGE
    behind, dirty, _ = _after_40000_puts(kind, tmp_path / "off")
    assert behind == 0 and dirty >= 1000  # (the default: the kernel's writeback, later)


@pytest.mark.parametrize("values", ["memory", "disk"])
def test_writeback_bytes_across_rotations_keeps_every_record(tmp_path, values):
    # Small segments and the smallest step (a smaller one is rounded up to
    # 2 MiB): the background thread's calls race the writer's rotations (a
    # call a rotation overtakes stops). Every record is there after a reopen.
    want = {}
    with KvStore.open(
        str(tmp_path), fsync_policy=FsyncPolicy.OS, max_segment_size=4 * MIB, writeback_bytes=1, values=values
    ) as s:
        for i in range(150_000):  # about 24 MiB: five rotations or so
            k, v = b"k%05d" % (i % 20_000), b"%d" % i * 30
            s.put(k, v)
            want[k] = v
        assert s.stats()["segments"] >= 5
    with KvStore.open(str(tmp_path), fsync_policy=FsyncPolicy.OS, auto_compact=False) as s:
        assert dict(s.items()) == want
        assert not s.recovery_info.corruption_detected
