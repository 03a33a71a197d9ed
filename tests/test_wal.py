"""The Wal API: configuration, append positions, rotation, reading across
segments, segment deletion, sync, close and finalize."""

import os
import resource

import pytest

import spec_codec as spec
from conftest import sectors_written, wait_for
from norikv import (
    ClosedError,
    Compression,
    ConfigError,
    FsyncPolicy,
    KvStore,
    Position,
    Record,
    RecoveryMode,
    Wal,
    WalConfig,
    _engine,
)

MIB = 1 << 20


def cfg(path, **kw):
    kw.setdefault("max_segment_size", MIB)
    kw.setdefault("fsync_policy", FsyncPolicy.OS)
    return WalConfig(dir=str(path), **kw)


def seg_files(path):
    return sorted(n for n in os.listdir(path) if n.endswith(".wal"))


def size_of(path, seg):
    return os.path.getsize(os.path.join(path, spec.segment_name(seg)))


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(max_segment_size=MIB - 1), ConfigError, "1 MiB"),
        (dict(max_segment_size=0), ConfigError, "1 MiB"),
        (dict(max_segment_size=-5), ConfigError, "1 MiB"),
        (dict(max_segment_size="1048576"), TypeError, "int"),
        (dict(max_segment_size=float(MIB)), TypeError, "int"),
        (dict(max_segment_size=True), TypeError, "int"),
        (dict(fsync_policy=FsyncPolicy.batch(0)), ConfigError, "window"),
        (dict(fsync_policy=FsyncPolicy.batch(0.0)), ConfigError, "window"),
        (dict(fsync_policy=FsyncPolicy.batch(-0.001)), ConfigError, "window"),
        (dict(fsync_policy=FsyncPolicy.batch(1.0001)), ConfigError, "window"),
        (dict(fsync_policy=FsyncPolicy.batch(5)), ConfigError, "window"),
        (dict(fsync_policy=FsyncPolicy.batch("0.005")), TypeError, "window"),
        (dict(fsync_policy=FsyncPolicy.batch(float("nan"))), ConfigError, "window"),
        (dict(fsync_policy="always"), TypeError, "FsyncPolicy"),
        (dict(fsync_policy=None), TypeError, "FsyncPolicy"),
        (dict(recovery_mode="point_in_time"), TypeError, "RecoveryMode"),
        (dict(node_id=-1), ConfigError, "node_id"),
        (dict(node_id="0"), TypeError, "node_id"),
    ],
)
def test_config_validation(tmp_path, kwargs, exc, match):
    d = tmp_path / "wal"
    with pytest.raises(exc, match=match):
        Wal.open(cfg(d, **kwargs))
    assert not d.exists() or not seg_files(d)


def test_config_dir_type(tmp_path):
    with pytest.raises(TypeError):
        Wal.open(WalConfig(dir=123, max_segment_size=MIB))
    with pytest.raises(TypeError):
        Wal.open("not a config")


@pytest.mark.parametrize(
    "policy",
    [FsyncPolicy.ALWAYS, FsyncPolicy.OS, FsyncPolicy.batch(), FsyncPolicy.batch(1.0), FsyncPolicy.batch(0.0001)],
)
def test_valid_configs_open(tmp_path, policy):
    wal, info = Wal.open(cfg(tmp_path, fsync_policy=policy))
    with wal:
        assert wal.append(Record.put(b"k", b"v")) == Position(0, 0)
        assert info.valid_records == 0 and not info.corruption_detected
    assert FsyncPolicy.batch().window == 0.005


def test_open_with_keywords(tmp_path):
    wal, _ = Wal.open(dir=str(tmp_path), max_segment_size=MIB, fsync_policy=FsyncPolicy.OS)
    wal.close()
    with pytest.raises(TypeError):
        Wal.open(cfg(tmp_path), dir=str(tmp_path))


# ---------------------------------------------------------------- append


def test_append_positions(tmp_path):
    recs = [
        Record.put(b"a", b"1"),
        Record.delete(b"a"),
        Record.put_with_ttl(b"b", b"2", 3),
        Record.put(b"c", b"x" * 300).with_compression(Compression.LZ4),
        Record.put(b"d", b"y" * 300).with_compression(Compression.ZSTD),
        Record.put(b"e", b"5").with_version(1, 2),
    ]
    with Wal.open(cfg(tmp_path))[0] as wal:
        off = 0
        for r in recs:
            assert wal.current_position() == Position(0, off)
            assert wal.append(r) == Position(0, off)
            off += len(r.encode())
        assert wal.current_position() == Position(0, off)
        got = list(wal.read_from(Position(0, 0)))
    assert [r for r, _ in got] == recs
    assert got[3][0].value == b"x" * 300
    assert size_of(tmp_path, 0) == off


def test_append_batch_positions(tmp_path):
    with Wal.open(cfg(tmp_path))[0] as wal:
        wal.append(Record.put(b"first", b""))
        start = wal.current_position().offset
        recs = [Record.put(b"k%d" % i, b"v" * i) for i in range(50)]
        positions = wal.append_batch(recs)
        expected, off = [], start
        for r in recs:
            expected.append(Position(0, off))
            off += len(r.encode())
        assert positions == expected
        assert wal.current_position() == Position(0, off)
        assert wal.append_batch([]) == []
        assert wal.current_position() == Position(0, off)
        assert [r for r, _ in wal.read_from(Position(0, start))] == recs
        with pytest.raises(TypeError):
            wal.append_batch([Record.put(b"a", b"b"), b"not a record"])
        with pytest.raises(TypeError):
            wal.append(b"not a record")
        assert wal.current_position() == Position(0, off)  # nothing half-written


def test_rotation_and_read_across_segments(tmp_path):
    value = os.urandom(10_000)
    recs = [Record.put(b"key%05d" % i, value) for i in range(330)]  # ~3.2 MiB
    with Wal.open(cfg(tmp_path))[0] as wal:
        positions = [wal.append(r) for r in recs]
        assert seg_files(tmp_path) == ["000000.wal", "000001.wal", "000002.wal", "000003.wal"]
        # finalized on rotation: truncated to the logical size, never over the limit
        for seg in (0, 1, 2):
            logical = sum(len(r.encode()) for r, p in zip(recs, positions) if p.segment_id == seg)
            assert size_of(tmp_path, seg) == logical <= MIB
            # rotated only because the next record would not fit
            first_next = next(r for r, p in zip(recs, positions) if p.segment_id == seg + 1)
            assert logical + len(first_next.encode()) > MIB
        # the active segment is preallocated
        assert size_of(tmp_path, 3) == MIB
        # positions: each segment starts at offset 0 and offsets are contiguous
        for a, b, r in zip(positions, positions[1:], recs):
            if a.segment_id == b.segment_id:
                assert b.offset == a.offset + len(r.encode())
            else:
                assert b == Position(a.segment_id + 1, 0)
        got = list(wal.read_from(Position(0, 0)))
        assert [r for r, _ in got] == recs and [p for _, p in got] == positions
        mid = positions[150]
        assert [p for _, p in wal.read_from(mid)] == positions[150:]
        assert [r for r, _ in wal.read_from(Position(2, 0))] == [
            r for r, p in zip(recs, positions) if p.segment_id >= 2
        ]
        assert list(wal.read_from(wal.current_position())) == []
        active_logical = wal.current_position().offset
    assert size_of(tmp_path, 3) == active_logical  # finalized on close
    # the spec codec reads the same thing
    assert [(s, o) for s, o, _ in spec.read_dir(tmp_path)] == [tuple(p) for p in positions]


def test_oversized_record_gets_its_own_segment(tmp_path):
    big = Record.put(b"big", os.urandom(MIB + MIB // 2))
    with Wal.open(cfg(tmp_path))[0] as wal:
        assert wal.append(big) == Position(0, 0)  # first record of an empty log
        assert wal.append(Record.put(b"a", b"1")) == Position(1, 0)
        assert wal.append(Record.put(b"b", b"2")).segment_id == 1
        assert wal.append(big) == Position(2, 0)
        assert wal.append(Record.put(b"c", b"3")) == Position(3, 0)
        # in a batch too: never split, never refused
        ps = wal.append_batch([Record.put(b"d", b"4"), big])
        assert ps[0] == Position(4, 0) and ps[1].segment_id == 4
        got = [r.key for r, _ in wal.read_from(Position(0, 0))]
    assert got == [b"big", b"a", b"b", b"big", b"c", b"d", b"big"]
    assert size_of(tmp_path, 0) == len(big.encode())
    assert size_of(tmp_path, 2) == len(big.encode())
    wal, info = Wal.open(cfg(tmp_path))
    with wal:
        assert info.valid_records == 7 and not info.corruption_detected
        assert [r.key for r, _ in wal.read_from(Position(0, 0))] == got


def test_read_from_sees_later_appends(tmp_path):
    with Wal.open(cfg(tmp_path))[0] as wal:
        wal.append(Record.put(b"a", b"1"))
        it = wal.read_from(Position(0, 0))
        assert next(it)[0].key == b"a"
        wal.append(Record.put(b"b", b"2"))
        assert next(it)[0].key == b"b"
        with pytest.raises(StopIteration):
            next(it)
        with pytest.raises(TypeError):
            wal.read_from((0, 0))


def test_reopen_continues_where_it_left(tmp_path):
    with Wal.open(cfg(tmp_path))[0] as wal:
        for i in range(10):
            wal.append(Record.put(b"k%d" % i, b"v"))
        end = wal.current_position()
    wal, info = Wal.open(cfg(tmp_path))
    with wal:
        assert info.valid_records == 10
        assert info.last_valid_position == end
        assert info.segments_scanned == 1
        assert not info.corruption_detected and info.bytes_truncated == 0
        assert wal.current_position() == end
        assert wal.append(Record.put(b"k10", b"v")) == end
        assert size_of(tmp_path, 0) == MIB  # preallocated again while open
    assert len(spec.read_dir(tmp_path)) == 11


@pytest.mark.parametrize("preallocate", [True, False])
def test_a_reopened_active_segment_is_allocated_whole_again(tmp_path, preallocate):
    # close() truncates the active segment to its records; the first append
    # after a reopen allocates the whole segment again, as a new segment is
    # (it grew a MiB at a time: an fallocate per MiB, the prefault held to it).
    conf = cfg(tmp_path, max_segment_size=8 * MIB, preallocate=preallocate)
    with Wal.open(conf)[0] as wal:
        end = wal.append(Record.put(b"a", b"1")).offset + len(Record.put(b"a", b"1").encode())
    assert size_of(tmp_path, 0) == end
    with Wal.open(conf)[0] as wal:
        wal.append(Record.put(b"b", b"2"))
        assert size_of(tmp_path, 0) == (8 * MIB if preallocate else MIB)
    assert [r.key for _, _, r in spec.read_dir(tmp_path)] == [b"a", b"b"]


def test_preallocate_false(tmp_path):
    with Wal.open(cfg(tmp_path, preallocate=False))[0] as wal:
        ps = [wal.append(Record.put(b"k", os.urandom(5000))) for _ in range(300)]
        assert ps[-1].segment_id == 1
    assert size_of(tmp_path, 1) == ps[-1].offset + len(Record.put(b"k", bytes(5000)).encode())


def test_delete_segments_before(tmp_path):
    value = bytes(100_000)
    with Wal.open(cfg(tmp_path))[0] as wal:
        ps = [wal.append(Record.put(b"k%03d" % i, value)) for i in range(45)]
        assert ps[-1].segment_id == 4
        assert wal.delete_segments_before(Position(0, 0)) == 0
        third = next(p for p in ps if p.segment_id == 2)
        assert wal.delete_segments_before(third) == 2
        assert seg_files(tmp_path) == ["000002.wal", "000003.wal", "000004.wal"]
        # reading from the start now begins at the oldest remaining segment
        got = [p for _, p in wal.read_from(Position(0, 0))]
        assert got == [p for p in ps if p.segment_id >= 2]
        # the active segment is never deleted
        assert wal.delete_segments_before(Position(99, 0)) == 2
        assert seg_files(tmp_path) == ["000004.wal"]
        assert wal.append(Record.put(b"after", b"")).segment_id == 4
    wal, info = Wal.open(cfg(tmp_path))
    with wal:
        assert info.valid_records == sum(p.segment_id == 4 for p in ps) + 1
        assert not info.corruption_detected


def test_flush_and_sync(tmp_path):
    for policy in (FsyncPolicy.OS, FsyncPolicy.ALWAYS, FsyncPolicy.batch(1.0)):
        d = tmp_path / policy.kind
        with Wal.open(cfg(d, fsync_policy=policy))[0] as wal:
            wal.append(Record.put(b"a", b"b"))
            wal.flush()
            written, synced, failed = wal._lock_state()
            if policy is FsyncPolicy.ALWAYS:
                assert synced == written
            before = wal.fsync_count
            wal.sync()
            written, synced, failed = wal._lock_state()
            assert synced == written > 0 and failed is None
            if policy is not FsyncPolicy.ALWAYS:
                assert wal.fsync_count == before + 1
            wal.sync()  # nothing new: no second fsync
            assert wal._lock_state()[1] == written


def test_close_idempotent_and_closed_errors(tmp_path):
    wal, _ = Wal.open(cfg(tmp_path))
    wal.append(Record.put(b"a", b"b"))
    wal.close()
    wal.close()
    assert wal.closed
    for call in (
        lambda: wal.append(Record.put(b"x", b"y")),
        lambda: wal.append_batch([Record.put(b"x", b"y")]),
        wal.sync,
        wal.flush,
        wal.current_position,
        lambda: wal.read_from(Position(0, 0)),
        lambda: wal.delete_segments_before(Position(1, 0)),
    ):
        with pytest.raises(ClosedError):
            call()
    assert seg_files(tmp_path) == ["000000.wal"]
    assert size_of(tmp_path, 0) == len(Record.put(b"a", b"b").encode())


def test_context_manager_closes(tmp_path):
    with Wal.open(cfg(tmp_path))[0] as wal:
        wal.append(Record.put(b"a", b"b"))
    assert wal.closed
    with pytest.raises(ClosedError):
        wal.append(Record.put(b"a", b"b"))
    with pytest.raises(RuntimeError):
        with Wal.open(cfg(tmp_path))[0] as wal2:
            raise RuntimeError("boom")
    assert wal2.closed
    Wal.open(cfg(tmp_path))[0].close()  # the lock was released


def test_empty_wal_close_and_reopen(tmp_path):
    Wal.open(cfg(tmp_path))[0].close()
    assert seg_files(tmp_path) == ["000000.wal"]
    assert size_of(tmp_path, 0) == 0
    wal, info = Wal.open(cfg(tmp_path))
    with wal:
        assert info.valid_records == 0 and info.last_valid_position == Position(0, 0)
        assert wal.current_position() == Position(0, 0)


def test_ignores_foreign_files(tmp_path):
    spec.write_segment(tmp_path, 0, [spec.SpecRecord(b"a", b"1")])
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "1.wal").write_bytes(b"garbage")
    (tmp_path / "abcdef.wal").write_bytes(b"garbage")
    wal, info = Wal.open(cfg(tmp_path))
    with wal:
        assert info.valid_records == 1 and not info.corruption_detected
        assert [r.key for r, _ in wal.read_from(Position(0, 0))] == [b"a"]
    assert (tmp_path / "1.wal").read_bytes() == b"garbage"


def test_recovery_mode_default():
    assert WalConfig().recovery_mode is RecoveryMode.TOLERATE_CORRUPTED_TAIL


def test_dir_as_bytes_and_pathlike(tmp_path):
    for d in (os.fsencode(str(tmp_path / "b")), tmp_path / "p"):
        with Wal.open(WalConfig(dir=d, max_segment_size=MIB, fsync_policy=FsyncPolicy.OS))[0] as wal:
            wal.append(Record.put(b"a", b"b"))
            assert [r.key for r, _ in wal.read_from(Position(0, 0))] == [b"a"]
    assert seg_files(tmp_path / "b") == ["000000.wal"]


def test_batch_policy_syncs_without_further_appends(tmp_path):
    """The background flusher fsyncs a batch window after the last append even
    when no further append comes (nori-wal only synced inside a later append)."""
    with Wal.open(cfg(tmp_path, fsync_policy=FsyncPolicy.batch(0.005)))[0] as wal:
        for round_ in range(3):
            wal.append(Record.put(b"k%d" % round_, b"v"))
            written = wal._lock_state()[0]
            # The flusher publishes synced_total, then clears dirty: wait for both.
            assert wait_for(lambda written=written: wal._lock_state()[1] >= written and not wal.dirty), (
                wal._lock_state(),
                wal.dirty,
            )
        assert wal.fsync_count >= 3


def test_concurrent_appends_from_threads(tmp_path):
    import threading

    results = {}

    def writer(t):
        out = []
        for i in range(400):
            r = Record.put(b"t%d-%04d" % (t, i), os.urandom(i % 300))
            out.append((wal.append(r), r))
            if i % 50 == 0:
                ps = wal.append_batch([Record.put(b"t%d-b%04d-%d" % (t, i, j), b"x") for j in range(3)])
                out.extend(zip(ps, [Record.put(b"t%d-b%04d-%d" % (t, i, j), b"x") for j in range(3)]))
        results[t] = out

    with Wal.open(cfg(tmp_path, fsync_policy=FsyncPolicy.batch(0.002)))[0] as wal:
        threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        got = {p: r for r, p in wal.read_from(Position(0, 0))}
    expected = {p: r for out in results.values() for p, r in out}
    assert len(expected) == 4 * (400 + 8 * 3)
    assert got == expected


def test_records_across_read_chunks(tmp_path):
    """Segments bigger than the 1 MiB read chunk, records straddling chunk
    boundaries: recovery and read_from see every record."""
    import random

    rnd = random.Random(3)
    recs = [Record.put(b"k%05d" % i, rnd.randbytes(rnd.choice([1, 100, 5000, 70_000, 300_000]))) for i in range(120)]
    with Wal.open(cfg(tmp_path, max_segment_size=8 * MIB))[0] as wal:
        positions = wal.append_batch(recs[:60]) + [wal.append(r) for r in recs[60:]]
    assert len({p.segment_id for p in positions}) >= 2
    assert any(size_of(tmp_path, s) > 2 * MIB for s in {p.segment_id for p in positions})
    wal, info = Wal.open(cfg(tmp_path, max_segment_size=8 * MIB))
    with wal:
        assert info.valid_records == 120 and not info.corruption_detected
        got = list(wal.read_from(Position(0, 0)))
        assert [r for r, _ in got] == recs and [p for _, p in got] == positions
        assert [r for r, _ in wal.read_from(positions[77])] == recs[77:]


def test_position_value_semantics():
    import pickle

    p = Position(3, 17)
    seg, off = p
    assert (seg, off) == (3, 17) and p.segment_id == 3 and p.offset == 17
    assert Position(3, 17) == p and hash(Position(3, 17)) == hash(p)
    assert Position(2, 999) < p < Position(3, 18) < Position(4, 0)
    assert sorted([Position(1, 5), Position(0, 9), Position(1, 0)]) == [Position(0, 9), Position(1, 0), Position(1, 5)]
    assert pickle.loads(pickle.dumps(p)) == p
    with pytest.raises((TypeError, ValueError)):
        Position(-1, 0)
    with pytest.raises(TypeError):
        Position("0", 0)


def test_record_pickles():
    import pickle

    for r in (
        Record.put(b"k", b"v"),
        Record.delete(b"k"),
        Record.put_with_ttl(b"k", b"v", 2),
        Record.put(b"k", b"v" * 50).with_compression(Compression.ZSTD).with_version(1, 2),
    ):
        assert pickle.loads(pickle.dumps(r)) == r


# ---------------------------------------------------------------- small syncs stay small
# Linux 6.x grows the page-cache folios of a mapping written sequentially (to
# 2 MiB past ~32 MiB) and writes a dirty folio back whole, so without
# page-sized folios every small append + fdatasync deep into a segment wrote
# 2 MiB (2.2k/s instead of ~10k/s here). The process's write_bytes counter
# (/proc/self/io) shows what reached the disk.


def _disk_writes() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise AssertionError("no write_bytes in /proc/self/io")


needs_proc_io = pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs /proc/self/io (Linux)")


@needs_proc_io
@pytest.mark.parametrize("load", ["unsynced", "synced-every-100k"])
def test_small_syncs_deep_into_a_segment_write_little(tmp_path, load):
    wal, _ = Wal.open(cfg(tmp_path, max_segment_size=128 * MIB))
    big = Record.put(b"load", b"x" * (100 * 1024))
    for _ in range(48 * MIB // len(big.value)):  # 48 MiB into the segment
        wal.append(big)
        if load != "unsynced":
            wal.sync()
    wal.sync()
    small = Record.put(b"k", b"v" * 1000)
    written = []
    for _ in range(100):
        before = _disk_writes()
        wal.append(small)
        wal.sync()
        written.append(_disk_writes() - before)
    wal.close()
    # A page of data plus the filesystem's journal blocks per fsync (tens of
    # KiB), not a 2 MiB folio; 0 where the filesystem keeps no such count
    # (tmpfs). The median, because a few fsyncs also write the zero pages the
    # prefault thread faulted in ahead (they are dirty too).
    median = sorted(written)[len(written) // 2]
    assert median <= 512 * 1024, f"{median / 1024:.0f} KiB written per 1 KiB append + fsync"


@pytest.mark.parametrize("policy", [FsyncPolicy.OS, FsyncPolicy.batch(0.005)], ids=["os", "batch"])
@pytest.mark.parametrize("kind", ["wal", "store"])
def test_commits_of_a_thousand_puts_deep_into_a_segment_write_about_themselves(tmp_path, kind, policy):
    # 1,000 puts of 100 B (~120 KB) then sync(), over and over: with large
    # folios, past ~25 MiB each sync() rewrote the 2 MiB folio holding the
    # log's end and dirtied the next one whole (1-2 MB written per sync,
    # 670-860 us against 270-340). Such a sync is small (under 1 MiB): the
    # log switches to page-sized folios at the first one. Counted on the block
    # device (the median of the last 60: other writers on the machine are rare).
    if sectors_written(tmp_path) is None:
        pytest.skip("no block-device statistics for this file system")
    if kind == "wal":
        w, _ = Wal.open(cfg(tmp_path, max_segment_size=128 * MIB, fsync_policy=policy))
        put = lambda k, v: w.append(Record.put(k, v))  # noqa: E731
    else:
        w = KvStore.open(str(tmp_path / "store"), max_segment_size=128 * MIB, fsync_policy=policy, auto_compact=False)
        put = w.put
    value = b"v" * 100
    written = []
    for c in range(320):  # ~38 MiB into the segment
        for i in range(1000):
            put(b"k%06d:%04d" % (c, i), value)
        before = sectors_written(tmp_path)
        w.sync()
        written.append(sectors_written(tmp_path) - before)
    w.close()
    deep = sorted(written[-60:])
    assert deep[len(deep) // 2] <= 384 * 1024, f"{deep[len(deep) // 2] / 1024:.0f} KiB per sync() of ~120 KB"


@pytest.mark.parametrize(
    "policy, small", [(FsyncPolicy.ALWAYS, True), (FsyncPolicy.batch(0.005), False), (FsyncPolicy.OS, False)]
)
def test_page_sized_folios_from_open_or_from_the_first_small_sync(tmp_path, policy, small):
    wal, _ = Wal.open(cfg(tmp_path, fsync_policy=policy, max_segment_size=64 * MIB))
    assert wal.small_folios is small
    for _ in range(8):  # a bulk write: one sync covering 2 MiB
        wal.append(Record.put(b"k", b"v" * (256 * 1024)))
    wal.sync()
    assert wal.small_folios is small
    wal.append(Record.put(b"k", b"v"))  # a small sync switches for good
    wal.sync()
    assert wal.small_folios is True
    wal.close()


def test_first_small_sync_after_a_large_unsynced_write_starts_a_new_segment(tmp_path):
    wal, _ = Wal.open(cfg(tmp_path, max_segment_size=128 * MIB))
    big = Record.put(b"load", b"x" * (100 * 1024))
    for _ in range(32 * MIB // len(big.value)):
        wal.append(big)
    first = wal.seg_id
    wal.sync()  # covers 32 MiB: not a small sync
    assert wal.seg_id == first and not wal.small_folios
    wal.append(Record.put(b"small", b"1"))
    wal.sync()  # seals the segment faulted in past 24 MiB
    assert wal.seg_id == first + 1 and wal.seg_size == 0 and wal.small_folios
    pos = wal.append(Record.put(b"after", b"1"))
    wal.close()
    wal, info = Wal.open(cfg(tmp_path, max_segment_size=128 * MIB))
    records = list(wal.read_from(Position(0, 0)))
    assert records[-1][0].key == b"after" and records[-1][1] == pos
    assert len(records) == 32 * MIB // len(big.value) + 2
    wal.close()


@needs_proc_io
def test_prefaulted_pages_are_not_written_back_as_zeros(tmp_path):
    # Under page-sized folios (stores that sync small amounts) the mapping is
    # prefaulted for reading: the pages ahead of the writer stay clean, so an
    # fsync writes the page that was appended to, not megabytes of zeros the
    # prefault dirtied (a 6 MiB stall in one append before).
    wal, _ = Wal.open(cfg(tmp_path, max_segment_size=64 * MIB, fsync_policy=FsyncPolicy.ALWAYS))
    record = Record.put(b"k", b"v" * 100)
    written = []
    for _ in range(200):
        before = _disk_writes()
        wal.append(record)
        written.append(_disk_writes() - before)
    wal.close()
    assert max(written) <= 256 * 1024, f"an append + fsync wrote {max(written) >> 10} KiB"
    assert sum(written) <= 4 * MIB, f"200 appends + fsyncs wrote {sum(written) >> 10} KiB"


def _present_pages(path, nbytes: int) -> int:
    """How many of the first `nbytes` of this process's mapping of file
    `path` have a page-table entry (/proc/self/maps, /proc/self/pagemap)."""
    with open("/proc/self/maps") as f:
        starts = [int(line.split("-", 1)[0], 16) for line in f if line.rstrip("\n").endswith(" " + str(path))]
    assert len(starts) == 1, starts
    pages = nbytes // 4096
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(starts[0] // 4096 * 8)
        entries = f.read(pages * 8)
    return sum(1 for i in range(pages) if int.from_bytes(entries[i * 8 : i * 8 + 8], "little") >> 63)


needs_pagemap = pytest.mark.skipif(not os.path.exists("/proc/self/pagemap"), reason="needs /proc/self/pagemap (Linux)")


@needs_pagemap
def test_pages_wholly_written_leave_the_page_tables_and_keep_their_bytes(tmp_path):
    # Writeback write-protects every page some process maps writable, a TLB
    # shootdown per page sent to the writer's CPU (the batch policy's fsyncs
    # halved a 1 KiB put): the pages behind the writer are unmapped first.
    wal, _ = Wal.open(cfg(tmp_path, max_segment_size=64 * MIB))
    records = [Record.put(b"k%06d" % i, bytes([i % 251]) * 1000) for i in range(8192)]
    for r in records[:4096]:
        wal.append(r)
    segment = wal._segment_path(wal.seg_id)
    written = wal.current_position().offset
    assert _present_pages(segment, written) >= written // 4096 - 1
    wal._unmap_written()
    assert _present_pages(segment, written) <= 1  # (the page the writer is in)
    for r in records[4096:]:  # the writer goes on in the page it had started
        wal.append(r)
    wal._unmap_written()
    assert [rec.value for rec, _ in wal.read_from(Position(0, 0))] == [r.value for r in records]
    wal.close()
    wal, _ = Wal.open(cfg(tmp_path, max_segment_size=64 * MIB))
    assert [rec.value for rec, _ in wal.read_from(Position(0, 0))] == [r.value for r in records]
    wal.close()


def test_batch_flusher_fsyncs_while_the_writer_holds_the_gil(tmp_path):
    # A busy writer holds the GIL; a flusher that needed it waited for the
    # 5 ms switch interval on every fsync (26-37 fsyncs a second instead of
    # 200) and the batch window stretched with it.
    with Wal.open(cfg(tmp_path, fsync_policy=FsyncPolicy.batch(0.005)))[0] as wal:
        shown = 0
        for i in range(1000):
            wal.append(Record.put(b"k%d" % i, b"v" * 100))
            synced = _engine._test_synced_with_gil_held(wal, 30.0)
            assert synced is not False, "the flusher did not fsync while the GIL was held"
            if synced is None:  # (it was outside its loop: let it in)
                written = wal._lock_state()[0]
                assert wait_for(lambda written=written: wal._lock_state()[1] >= written)
            else:
                shown += 1
                if shown == 3:
                    break
        assert shown == 3


@needs_pagemap
def test_batch_flusher_unmaps_what_it_syncs(tmp_path):
    with Wal.open(cfg(tmp_path, max_segment_size=64 * MIB, fsync_policy=FsyncPolicy.batch(0.005)))[0] as wal:
        for i in range(1024):  # ~1 MiB
            wal.append(Record.put(b"k%04d" % i, b"v" * 1000))
        written = wal._lock_state()[0]
        assert wait_for(lambda: wal._lock_state()[1] >= written), wal._lock_state()
        whole = written - written % 4096
        assert _present_pages(wal._segment_path(wal.seg_id), whole) == 0


needs_thread_rusage = pytest.mark.skipif(not hasattr(resource, "RUSAGE_THREAD"), reason="needs RUSAGE_THREAD (Linux)")


@needs_thread_rusage
@pytest.mark.parametrize("how", ["fdatasync", "rearm", "wal-sync", "store-sync"])
def test_rearm_after_a_sync_spares_the_writer_its_page_faults(tmp_path, how):
    # An fsync write-protects the pages it wrote back, the prefaulted ones
    # ahead of the writer included: unless the background thread maps them
    # for writing again (_rearm: after a batch fsync, and after a sync()
    # call, _rearm_after_sync) the writer takes a fault (~3 us here) on each
    # page it fills next. "fdatasync", the control: a raw fdatasync of the
    # segment, which nothing re-arms.
    def faults() -> int:
        return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt

    if how == "store-sync":
        w = KvStore.open(str(tmp_path), fsync_policy=FsyncPolicy.OS, max_segment_size=64 * MIB, auto_compact=False)
        wal, value = w.wal, b"v" * 1000

        def append():
            w.put(b"k", value)
    else:
        w = wal = Wal.open(cfg(tmp_path, max_segment_size=64 * MIB))[0]
        record = Record.put(b"k", b"v" * 1000)

        def append():
            wal.append(record)

    with w:
        for _ in range(3000):
            append()
        # The mapping ahead is faulted in for writing before the sync, which
        # write-protects it: a prefault of the background thread still under
        # way would map pages after it, sparing the control its faults.
        assert wait_for(lambda: not wal.prefault_pending)
        end, _, populated, pending = _engine._test_prefault(wal, False)
        assert populated - end >= 64 * 1024 and not pending
        written = wal._lock_state()[0]
        if how in ("fdatasync", "rearm"):
            fd = os.open(wal._segment_path(wal.seg_id), os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
            if how == "rearm":
                wal._rearm_ahead()
        else:
            w.sync()
            assert wait_for(lambda: wal._rearmed_through() >= written)
        before = faults()
        for _ in range(60):  # ~60 KiB: 15 pages
            append()
        taken = faults() - before
    if how == "fdatasync":
        assert taken >= 10, taken  # (the machine does fault: the checks of the others mean something)
    else:
        assert taken <= 1, taken


@needs_thread_rusage
def test_batch_flusher_rearms_after_it_syncs(tmp_path):
    record = Record.put(b"k", b"v" * 1000)
    for attempt in range(10):
        config = cfg(tmp_path / str(attempt), max_segment_size=64 * MIB, fsync_policy=FsyncPolicy.batch(0.005))
        with Wal.open(config)[0] as wal:
            # Wait for the re-arm, which follows the background fsync, not for
            # the fsync alone (the appends below could run in between). A
            # background fsync that would cover under 64 KiB (a writer slowed
            # by a busy machine) is left to sync(), which does not re-arm:
            # append 100 KiB more until a re-arm covers everything appended.
            for _ in range(3000):
                wal.append(record)
            for _ in range(50):
                written = wal._lock_state()[0]
                if wait_for(lambda w=written: wal._rearmed_through() >= w, timeout=2.0):
                    break
                for _ in range(100):
                    wal.append(record)
            else:
                raise AssertionError(("no re-arm", wal._lock_state(), wal._rearmed_through()))
            if wal.small_folios:
                # Such a sync also switched the log to page-sized folios,
                # where the zeros written ahead replace the re-arm: start over.
                continue
            before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
            for _ in range(60):  # 15 pages, which the fsync above write-protected
                wal.append(record)
            taken = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before
        assert taken <= 5, taken  # (15 without the re-arm; a few if a second fsync runs meanwhile)
        return
    raise AssertionError("every attempt's log went to page-sized folios (a writer starved ten times)")


@needs_pagemap
def test_always_policy_maps_only_the_pages_it_writes(tmp_path):
    # Under ALWAYS an append's fsync costs ~100x the page fault a prefault
    # saves, and the prefault's bursts (megabytes faulted in, holding the
    # process's mmap lock) stalled an asyncio loop beside it for 1-5 ms.
    wal, _ = Wal.open(cfg(tmp_path, max_segment_size=64 * MIB, fsync_policy=FsyncPolicy.ALWAYS))
    for i in range(20):
        wal.append(Record.put(b"k%d" % i, b"v" * 1000))
    written = wal.current_position().offset
    assert _present_pages(wal._segment_path(wal.seg_id), 8 * MIB) <= written // 4096 + 1
    wal.close()
