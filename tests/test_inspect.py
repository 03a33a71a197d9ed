"""norikv.inspect: the records of a log, what an open would do with it and the
store it holds, read without the lock and without changing a byte."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from norikv import Compression, CorruptionError, KvStore, Position, Record, Wal, WalConfig
from norikv.inspect import (
    Damage,
    LogRecord,
    RecoveryMode,
    StoreView,
    TailCut,
    dead_ratio,
    lock_holders,
    plan_recovery,
    read_plan,
    read_store,
    records,
    segment_files,
)
from storeutil import open_store
from test_noriwal_corpus import CASES, ZERO_TAIL_CASES, copy_wal, load_case

TIMEOUT = 60
SEG = 1 << 20


def fingerprint(root: Path) -> dict[str, tuple[int, str]]:
    """Every entry under root: files with size and content hash (so a created
    LOCK file or a truncation shows)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        else:
            out[str(p.relative_to(root))] = (-1, "dir")
    return out


def split(items: list[LogRecord | Damage]) -> tuple[list[LogRecord], list[Damage]]:
    return [r for r in items if isinstance(r, LogRecord)], [d for d in items if isinstance(d, Damage)]


@pytest.fixture
def store(store_copy: Path) -> Path:
    """20,000 keys in three 1 MiB segments (conftest's three_segment_store)."""
    return store_copy


# ---------------------------------------------------------------- records


@pytest.mark.parametrize("case", CASES)
def test_corpus_records_come_out_with_nori_wal_positions_flags_and_sizes(case: str, tmp_path: Path) -> None:
    c = load_case(case)
    wal = copy_wal(c, tmp_path / "wal")
    before = fingerprint(tmp_path)
    got, damage = split(list(records(wal)))
    assert fingerprint(tmp_path) == before
    assert len(got) == len(c.records)
    for rec, exp in zip(got, c.records):
        where = f"{case} {exp.pos}"
        assert rec.position == exp.pos and (rec.segment, rec.offset) == tuple(exp.pos), where
        assert rec.key == exp.key, where
        assert rec.tombstone == exp.tombstone, where
        assert rec.ttl_ms == exp.ttl_ms, where
        assert rec.compression == exp.compression, where
        assert rec.version == exp.version, where
        assert not (rec.ttl_abs or rec.batch_cont or rec.batch_end), where  # nori-wal never sets them
        # The size and stored value size are the bytes' own: the record
        # decodes from exactly `size` bytes at its offset.
        raw = c.segments[rec.segment]
        decoded, n = Record.decode(raw, rec.offset, max_value_size=1 << 30)
        assert n == rec.size and decoded.key == rec.key, where
        assert decoded.flags == rec.flags, where
        if rec.compression == Compression.NONE:
            assert rec.value_size == len(decoded.value), where
        else:
            assert 0 < rec.value_size < rec.size, where
    # Records follow each other: each starts where the previous one ended.
    for a, b in zip(got, got[1:]):
        if a.segment == b.segment:
            assert a.offset + a.size == b.offset
    if case == "10-torn-tail":
        (d,) = damage
        last = got[-1]
        assert (d.segment, d.offset) == (last.segment, last.offset + last.size) == (0, 1560)
        assert d.reason == "incomplete record" and d.path == str(wal / "000000.wal")
    else:
        # A zero-filled preallocated tail (cases 09, 13) is a clean end.
        assert damage == [], case
    if case in ZERO_TAIL_CASES:
        last = got[-1]  # in the last segment, followed by zeros
        assert os.path.getsize(wal / f"{last.segment:06d}.wal") > last.offset + last.size


def test_records_of_a_store_a_log_directory_or_one_segment_file(store: Path) -> None:
    whole = list(records(store))
    assert whole == list(records(store / "wal")) == list(records(str(store)))
    assert [seg for seg, _ in segment_files(store)] == [0, 1, 2]
    assert len(whole) == 20000 and all(isinstance(r, LogRecord) for r in whole)
    one = list(records(store / "wal" / "000001.wal"))
    assert one == [r for r in whole if isinstance(r, LogRecord) and r.segment == 1]
    assert one[0].offset == 0 and one[0].key == b"k%06d" % whole.index(one[0])
    bogus = store / "copy.wal"
    shutil.copy(store / "wal" / "000001.wal", bogus)
    with pytest.raises(ValueError, match="segment id is unknown"):
        records(bogus)


def test_records_from_a_position(store: Path) -> None:
    whole = list(records(store))
    mid = whole[12345]
    assert isinstance(mid, LogRecord)
    assert list(records(store, mid.position)) == whole[12345:]
    assert list(records(store, (mid.segment, mid.offset))) == whole[12345:]
    assert list(records(store, (mid.segment + 1, 0)))[0].segment == mid.segment + 1
    # An offset that is not a record boundary reads as damage, first.
    first = next(records(store, (mid.segment, mid.offset + 1)))
    assert isinstance(first, Damage) and first.position == Position(mid.segment, mid.offset + 1)


def test_batch_ttl_abs_and_version_flags_by_name(tmp_path: Path) -> None:
    with Wal.open(WalConfig(dir=str(tmp_path / "wal")))[0] as w:
        w.append_batch([Record.put(b"a", b"1"), Record.delete(b"b"), Record.put(b"c", b"3")], atomic=True)
        w.append(Record.put(b"v", b"x" * 3000).with_version(7, 9).with_compression("zstd"))
    with open_store(tmp_path / "s") as s:
        s.put(b"t", b"x", ttl=60)
    a, b, c, v = records(tmp_path / "wal")
    assert [r.batch_cont for r in (a, b, c)] == [True, True, False]
    assert [r.batch_end for r in (a, b, c)] == [False, False, True]
    assert b.tombstone and not a.tombstone and a.version is None
    assert v.version == (7, 9) and v.compression is Compression.ZSTD and v.value_size < 3000
    (t,) = records(tmp_path / "s")
    assert t.ttl_abs and t.ttl_ms is not None and not t.batch_cont


def test_damage_ends_its_segment_and_the_next_one_is_read(store: Path) -> None:
    whole = list(records(store))
    victim = whole[100]
    assert isinstance(victim, LogRecord) and victim.segment == 0
    with open(store / "wal" / "000000.wal", "r+b") as f:
        f.seek(victim.offset + victim.size - 1)
        byte = f.read(1)
        f.seek(victim.offset + victim.size - 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    got = list(records(store))
    assert got[:100] == whole[:100]
    d = got[100]
    assert isinstance(d, Damage) and d.position == victim.position and d.segment == 0
    assert d.reason == "CRC32C mismatch" and d.path.endswith("000000.wal")
    # The rest of segment 0 is left out; segments 1 and 2 are read whole.
    assert got[101:] == [r for r in whole if isinstance(r, LogRecord) and r.segment > 0]


# ---------------------------------------------------------------- what an open would do


def test_read_plan_is_the_plan_of_the_open(store: Path) -> None:
    seen: list[tuple[int, int]] = []
    plan = read_plan(store, progress=lambda done, total: seen.append((done, total)))
    same = plan_recovery(store / "wal", RecoveryMode.TOLERATE_CORRUPTED_TAIL)
    assert plan.segments == same.segments and not plan.changed and plan.valid_records == 20000
    total = sum(os.path.getsize(p) for _, p in segment_files(store))
    assert seen[0] == (0, total) and seen[-1] == (total, total) and len(seen) == 4


def test_a_torn_tail_is_reported_as_the_open_cuts_it(store: Path) -> None:
    last = store / "wal" / "000002.wal"
    os.truncate(last, os.path.getsize(last) - 5)
    before = fingerprint(store)
    view = read_store(store)
    cut = view.tail_cut
    assert isinstance(cut, TailCut) and cut.segment == 2 and cut.path == str(last)
    assert cut.reason == "incomplete record" and cut.bytes > 0
    assert len(view) == view.records == 19999
    assert fingerprint(store) == before  # reported, never cut
    with KvStore.open(store) as s:
        info = s.recovery_info
        assert (info.bytes_truncated, info.last_valid_position) == (cut.bytes, Position(2, cut.offset))
        assert len(s) == 19999


def test_damage_the_open_refuses_raises_its_corruption_error(store: Path) -> None:
    victim = next(r for r in records(store) if isinstance(r, LogRecord) and r.segment == 1)
    with open(store / "wal" / "000001.wal", "r+b") as f:
        f.seek(victim.offset + 4)
        f.write(b"\xff\xff\xff\xff")
    before = fingerprint(store)
    with pytest.raises(CorruptionError) as viewed:
        read_store(store)
    with pytest.raises(CorruptionError) as planned:
        read_plan(store)
    with pytest.raises(CorruptionError) as opened:
        KvStore.open(store)
    for e in (viewed.value, planned.value):
        assert (e.path, e.offset, e.segment_id) == (opened.value.path, opened.value.offset, opened.value.segment_id)
    assert fingerprint(store) == before


# ---------------------------------------------------------------- the store


def test_view_reads_like_the_store(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with open_store(d, max_segment_size=SEG) as s:
        for i in range(3000):
            s.put(b"k%05d" % i, b"v%d" % i)
        for i in range(0, 3000, 3):
            s.delete(b"k%05d" % i)
        s.put(b"\xff\xff", b"top")
        s.put(b"\xff", b"ff")
        s.put(b"k00007", b"again")  # moves nothing: an overwrite
        s.put(b"k00003", b"back")  # deleted, then put: goes last
        s.put(b"soon", b"gone", ttl=0.001)
        s.put(b"later", b"here", ttl=3600)
        with s.batch() as b:
            b.put(b"b1", b"1")
            b.delete(b"k00001")
    view = read_store(d)
    assert isinstance(view, StoreView)
    with KvStore.open(d) as s:
        assert view.keys() == s.keys()  # the same map, in the same order
        assert view.items() == s.items() and list(view) == list(s)
        assert len(view) == len(s)
        for start, end in [(None, None), (b"k01", b"k02"), (b"k02", None), (None, b"b"), (b"z", b"a")]:
            for reverse in (False, True):
                assert list(view.range(start, end, reverse=reverse)) == list(s.range(start, end, reverse=reverse))
        for p in (b"k001", b"\xff", b"", b"nothing", b"k0000"):
            for reverse in (False, True):
                assert list(view.prefix(p, reverse=reverse)) == list(s.prefix(p, reverse=reverse))
        assert view.dead_ratio == s.dead_ratio()  # one formula
        assert view.live_bytes == s.live_bytes
    assert view.get(b"k00003") == b"back" and view[b"later"] == b"here" and b"b1" in view
    assert view.get(b"soon") is None and b"soon" not in view and view.get(b"k00000", b"-") == b"-"
    assert view.get(bytearray(b"b1")) == b"1" and memoryview(b"b1") in view and "b1" not in view
    with pytest.raises(KeyError):
        view[b"k00000"]
    with pytest.raises(TypeError):
        view.get("b1")  # type: ignore[arg-type]
    assert b"later" in view.deadlines and view.deadlines[b"later"] > 0
    assert view.segments == view.plan.kept and view.wal_bytes == sum(p.size for p in view.segments)
    assert view.tail_cut is None


def test_dead_ratio() -> None:
    assert dead_ratio(0, 0, 0) == 0.0
    assert dead_ratio(92, 1, 200) == 0.5
    assert dead_ratio(1000, 10, 100) == 0.0  # never below 0


# ---------------------------------------------------------------- lock-free


def test_nothing_takes_the_lock_or_writes(store: Path) -> None:
    (store / "wal" / "LOCK").unlink()  # so that creating it would show
    before = fingerprint(store)
    it = records(store)
    next(it)  # a segment is open for reading
    view = read_store(store)
    plan = read_plan(store, RecoveryMode.SKIP_ANY_CORRUPTED_RECORDS)
    assert lock_holders(store) == [] and not plan.changed
    assert fingerprint(store) == before
    # The store opens (and takes its lock) while all that is alive.
    with KvStore.open(store) as s:
        s.put(b"new", b"1")
        assert len(view) == 20000 and b"new" not in view  # a view never changes
        assert sum(1 for _ in it) == 19999 + 1  # the rest, plus the record written meanwhile


_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from norikv import FsyncPolicy, KvStore
    path, first, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    s = KvStore.open(path, max_segment_size=1 << 20, fsync_policy=FsyncPolicy.OS)
    for i in range(first):
        s.put(b"w%08d" % i, b"x" * 200)
    print("ready", flush=True)
    i = first
    while not os.path.exists(stop) and i < 200_000:
        for _ in range(20):
            s.put(b"w%08d" % i, b"x" * 200)
            i += 1
        time.sleep(0.001)
    sys.stdin.readline()
    s.close()
    """
)


def _writer(d: Path, first: int, stop: Path) -> subprocess.Popen:
    """A process holding the store at d: it puts ``first`` keys, says ready,
    then goes on putting until ``stop`` exists, and closes when told."""
    p = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(d), str(first), str(stop)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stdout.readline() == "ready\n"
    return p


def test_a_store_in_use_by_another_process(tmp_path: Path) -> None:
    d = tmp_path / "s"
    stop = tmp_path / "stop"
    stop.touch()  # no writes after the first ones
    p = _writer(d, 5200, stop)
    try:
        holders = lock_holders(d)
        if holders is not None:  # Linux: /proc/locks
            assert holders == [p.pid]
        view = read_store(d)
        assert len(view) == 5200 and view.tail_cut is None
        assert read_plan(d).valid_records == 5200
        assert sum(isinstance(r, LogRecord) for r in records(d)) == 5200
    finally:
        p.communicate("\n", timeout=TIMEOUT)
    assert p.returncode == 0


def test_a_store_being_written_reads_as_a_prefix_of_its_writes(tmp_path: Path) -> None:
    d = tmp_path / "s"
    stop = tmp_path / "stop"
    p = _writer(d, 5000, stop)
    try:
        sizes = []
        for _ in range(20):
            view = read_store(d)
            n = len(view)
            # Every key the writer put before the last one seen is there.
            assert view.keys() == [b"w%08d" % i for i in range(n)]
            sizes.append(n)
        assert sizes[0] >= 5000 and sizes == sorted(sizes)
    finally:
        stop.touch()
        p.communicate("\n", timeout=TIMEOUT)
    assert p.returncode == 0
