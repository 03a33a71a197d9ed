"""Zeros written ahead of the writer (segment.pyx, _zero_ahead): a store
that commits with sync() in commits of 16 KiB or more gets the page cache
ahead of its log as folios of up to 64 KiB, made by writing zeros there,
instead of the page-sized folios its faults would make; the next sync()
writes those zeros (converting their extents in bulk) and later ones write
the commits in large folios (docs/DESIGN.md, "Zeros written ahead").

What these tests check, on the page cache itself (/proc/self/pagemap and
/proc/kpageflags, root only): which folios hold the log; and, with real
threads and processes, that no zero lands on a record."""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import sys
import threading

import pytest

from norikv import FsyncPolicy, KvStore, Position, Record, Wal, WalConfig
from norikv._engine import segment_name

PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1 << 20
KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL = 15, 16

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux page cache")


def folio_kinds(path, off, length):
    """For each page of `path` in [off, off+length) (cached: the caller
    knows it is), "b" if its folio is a single page, "h" or "t" if it is
    the head or a tail page of a larger folio. The mapping is advised
    MADV_RANDOM: a fault must not read ahead, which would cache pages past
    the range and so decide the size of the folios the store makes there."""
    fd = os.open(path, os.O_RDWR)
    try:
        m = mmap.mmap(fd, off + length)
    finally:
        os.close(fd)
    try:
        m.madvise(mmap.MADV_RANDOM)
        buf = ctypes.c_char.from_buffer(m)
        base = ctypes.addressof(buf)
        out = []
        with open("/proc/self/pagemap", "rb", buffering=0) as pm, open("/proc/kpageflags", "rb", buffering=0) as kf:
            for p in range(off, off + length, PAGE):
                m[p]  # mapped now
                pm.seek((base + p) // PAGE * 8)
                entry = struct.unpack("<Q", pm.read(8))[0]
                pfn = entry & ((1 << 55) - 1)
                assert entry >> 63 and pfn, f"page {p} not mapped"
                kf.seek(pfn * 8)
                flags = struct.unpack("<Q", kf.read(8))[0]
                out.append("h" if flags >> KPF_COMPOUND_HEAD & 1 else "t" if flags >> KPF_COMPOUND_TAIL & 1 else "b")
        del buf
        return "".join(out)
    finally:
        m.close()


@pytest.fixture
def large_folios(tmp_path):
    """Skips unless this process can read page frames (root) and the file
    system of tmp_path makes large folios for writes (ext4 since Linux
    6.16, XFS)."""
    p = tmp_path / "probe"
    try:
        with open(p, "wb") as f:
            f.write(bytes(64 << 10))
        kinds = folio_kinds(str(p), 0, 64 << 10)
    except (OSError, AssertionError) as exc:
        pytest.skip(f"page frames are not readable here: {exc}")
    finally:
        p.unlink()
    if "h" not in kinds:
        pytest.skip("this file system makes page-sized folios for writes")


def _open(kind, path):
    if kind == "wal":
        return Wal.open(WalConfig(dir=str(path), fsync_policy=FsyncPolicy.OS))[0]
    return KvStore.open(str(path), fsync_policy=FsyncPolicy.OS)


def _commits(kind, w, commits, per):
    k = 0
    for _ in range(commits):
        for _ in range(per):
            if kind == "wal":
                w.append(Record.put(b"k%08d" % k, b"v" * 100))
            else:
                w.put(b"k%08d" % k, b"v" * 100)
            k += 1
        w.sync()


def _log(kind, w):
    wal = w if kind == "wal" else w.wal
    seg = os.path.join(wal.dir, segment_name(wal.seg_id))
    return seg, wal.seg_size


@pytest.mark.parametrize("kind", ["wal", "store"])
def test_commits_of_a_thousand_puts_are_written_in_large_folios(large_folios, tmp_path, kind):
    # 30 commits of 123 KB: 3.5 MB of log, 64 KiB folios from the first
    # refill after the first sync() on. Before: every page its own folio.
    w = _open(kind, tmp_path / "db")
    try:
        _commits(kind, w, 30, 1000)
        seg, end = _log(kind, w)
        kinds = folio_kinds(seg, MIB, end - end % PAGE - MIB)
        assert kinds.count("b") <= len(kinds) // 10, kinds
        assert kinds.count("h") * 16 >= kinds.count("t") // 2  # (heads of 64 KiB folios, some smaller)
    finally:
        w.close()


@pytest.mark.parametrize("kind", ["wal", "store"])
def test_commits_of_one_put_keep_page_sized_folios(large_folios, tmp_path, kind):
    # A commit under 16 KiB would write a whole large folio for a few bytes
    # (and the zeros ahead of it): such a store gets no zeros written ahead.
    w = _open(kind, tmp_path / "db")
    try:
        _commits(kind, w, 10_000, 1)
        _commits(kind, w, 40, 100)  # 13 KB commits: still under the line
        seg, end = _log(kind, w)
        kinds = folio_kinds(seg, MIB // 4, end - end % PAGE - MIB // 4)
        assert set(kinds) == {"b"}, kinds
    finally:
        w.close()


def test_threads_appending_beside_a_committer_lose_nothing(tmp_path):
    """A Wal's appends take io_lock only off their fast path, and the zeros
    are written without the GIL: another thread appends meanwhile, below
    `populated`, which the zeros stay above. Every record is read back."""
    wal = Wal.open(WalConfig(dir=str(tmp_path / "db"), fsync_policy=FsyncPolicy.OS))[0]
    n_commits, per = 60, 250
    errors: list[BaseException] = []

    def committer():
        try:
            for c in range(n_commits):
                for i in range(per):
                    wal.append(Record.put(b"c%04d-%04d" % (c, i), b"c" * 100))
                wal.sync()
        except BaseException as exc:  # reported below
            errors.append(exc)

    t = threading.Thread(target=committer)
    t.start()
    j = 0
    while t.is_alive() or j < 5000:
        wal.append(Record.put(b"a%07d" % j, b"a" * 60))
        j += 1
    t.join()
    assert not errors, errors
    wal.close()
    wal = Wal.open(WalConfig(dir=str(tmp_path / "db")))[0]
    try:
        keys = {r.key for r, _ in wal.read_from(Position(0, 0))}
    finally:
        wal.close()
    assert {b"c%04d-%04d" % (c, i) for c in range(n_commits) for i in range(per)} <= keys
    assert {b"a%07d" % i for i in range(j)} <= keys


def test_processes_committing_together_lose_nothing(tmp_path, workers):
    """Three processes commit 200 puts + sync() at once; each writes zeros
    ahead when its append needs room, holding the writers' mutex, past the
    published end of the log. Every acknowledged put is read back."""
    ws = [workers(tmp_path) for _ in range(3)]
    code = (
        "import os\n"
        "me = os.getpid()\n"
        "for c in range(40):\n"
        "    for i in range(200):\n"
        "        s.put(b'%d-%03d-%03d' % (me, c, i), b'x' * 100)\n"
        "    s.sync()\n"
        "result = me\n"
    )
    for w in ws:
        w.send("run", code)
    pids = [w.reply() for w in ws]
    for w in ws:
        w.stop()
    with KvStore.open(tmp_path) as s:
        for pid in pids:
            for c in range(40):
                for i in range(200):
                    assert s.get(b"%d-%03d-%03d" % (pid, c, i)) == b"x" * 100
        assert len(s) == 3 * 40 * 200
