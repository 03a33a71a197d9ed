"""Recovery on open: torn tails at every byte, bit flips, zero tails, damage
in earlier segments, every RecoveryMode, and directories written only by the
independent spec codec (as nori-wal would write them)."""

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

import spec_codec as spec
from norikv import Compression, CorruptionError, FsyncPolicy, Position, Record, RecoveryMode, Wal, WalConfig

MIB = 1 << 20
M = RecoveryMode


def cfg(path, mode=M.TOLERATE_CORRUPTED_TAIL, **kw):
    kw.setdefault("max_segment_size", MIB)
    kw.setdefault("fsync_policy", FsyncPolicy.OS)
    return WalConfig(dir=str(path), recovery_mode=mode, **kw)


def srecs(n, tag=b"k", size=20):
    return [spec.SpecRecord(b"%s%04d" % (tag, i), bytes([i % 251 + 1]) * size) for i in range(n)]


def as_record(s):
    return Record(s.key, s.value, tombstone=s.tombstone, ttl_ms=s.ttl_ms, compression=s.compression, version=s.version)


def snapshot(path):
    return {n: (path / n).read_bytes() for n in sorted(os.listdir(path)) if n != "LOCK"}


def read_all(wal):
    return [(r, p) for r, p in wal.read_from(Position(0, 0))]


def keys(wal):
    return [r.key for r, _ in read_all(wal)]


# ---------------------------------------------------------------- torn tails


@pytest.mark.parametrize("zero_tail", [0, MIB], ids=["bare", "preallocated"])
def test_torn_tail_at_every_byte(tmp_path, zero_tail):
    good = srecs(5)
    last = spec.encode(spec.SpecRecord(b"last-key", b"last value bytes", ttl_ms=77, version=(3, 4)))
    prefix = b"".join(spec.encode(r) for r in good)
    for cut in range(len(last)):
        d = tmp_path / f"c{cut}"
        d.mkdir()
        torn = last[:cut]
        data = prefix + torn
        (d / "000000.wal").write_bytes(data + bytes(max(0, zero_tail - len(data))))
        wal, info = Wal.open(cfg(d))
        with wal:
            assert info.valid_records == 5, cut
            assert info.bytes_truncated == len(torn.rstrip(b"\0")), cut
            assert info.corruption_detected == (cut > 0), cut
            assert info.last_valid_position == Position(0, len(prefix))
            assert wal.current_position() == Position(0, len(prefix))
            got = read_all(wal)
            assert [r for r, _ in got] == [as_record(s) for s in good]
            pos = wal.append(Record.put(b"new", b"after the tear"))
            assert pos == Position(0, len(prefix))
            assert [r.key for r, _ in read_all(wal)][-2:] == [good[-1].key, b"new"]
        # what is on disk is exactly the good prefix plus the new record
        assert (d / "000000.wal").read_bytes() == prefix + Record.put(b"new", b"after the tear").encode()
        wal, info = Wal.open(cfg(d))
        with wal:
            assert info.valid_records == 6 and not info.corruption_detected


def test_torn_tail_in_later_segment_keeps_earlier_segments(tmp_path):
    seg0 = srecs(10, b"a")
    seg1 = srecs(4, b"b")
    spec.write_segment(tmp_path, 0, seg0)
    last = spec.encode(spec.SpecRecord(b"torn", b"x" * 50))
    spec.write_segment(tmp_path, 1, seg1 + [last[:30]])
    before0 = (tmp_path / "000000.wal").read_bytes()
    wal, info = Wal.open(cfg(tmp_path))
    with wal:
        assert info.valid_records == 14 and info.segments_scanned == 2
        assert info.bytes_truncated == 30 and info.corruption_detected
        assert keys(wal) == [r.key for r in seg0 + seg1]
        assert wal.current_position().segment_id == 1
    assert (tmp_path / "000000.wal").read_bytes() == before0


@pytest.mark.parametrize("mode", [M.TOLERATE_CORRUPTED_TAIL, M.POINT_IN_TIME, M.SKIP_ANY_CORRUPTED_RECORDS])
def test_bit_flips_in_last_record(tmp_path, mode):
    good = srecs(3)
    last = spec.encode(spec.SpecRecord(b"last", b"0123456789", ttl_ms=5))
    prefix = b"".join(spec.encode(r) for r in good)
    for i in range(len(last)):
        for bit in (0, 7):
            bad = bytearray(last)
            bad[i] ^= 1 << bit
            d = tmp_path / f"{i}-{bit}"
            d.mkdir()
            (d / "000000.wal").write_bytes(prefix + bytes(bad))
            wal, info = Wal.open(cfg(d, mode))
            with wal:
                assert info.valid_records == 3, (i, bit)
                assert info.corruption_detected, (i, bit)
                assert keys(wal) == [r.key for r in good]
                assert wal.current_position() == Position(0, len(prefix))
            assert (d / "000000.wal").read_bytes() == prefix


def test_bit_flip_absolute_consistency_changes_nothing(tmp_path):
    data = b"".join(spec.encode(r) for r in srecs(3))
    bad = bytearray(data)
    bad[-2] ^= 0x40
    (tmp_path / "000000.wal").write_bytes(bytes(bad))
    before = snapshot(tmp_path)
    with pytest.raises(CorruptionError) as ei:
        Wal.open(cfg(tmp_path, M.ABSOLUTE_CONSISTENCY))
    assert ei.value.offset == len(spec.encode(srecs(3)[0])) * 2
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- zero tails


@pytest.mark.parametrize("mode", list(M))
def test_zero_preallocated_tail_is_a_clean_end(tmp_path, mode):
    good = srecs(20)
    spec.write_segment(tmp_path, 0, good, zero_tail=MIB - 20 * 30)
    wal, info = Wal.open(cfg(tmp_path, mode))
    logical = sum(len(spec.encode(r)) for r in good)
    with wal:
        assert info.valid_records == 20
        assert not info.corruption_detected
        assert info.bytes_truncated == 0
        assert info.last_valid_position == Position(0, logical)
        assert wal.current_position() == Position(0, logical)
        assert wal.append(Record.put(b"z", b"z")) == Position(0, logical)
    assert os.path.getsize(tmp_path / "000000.wal") == logical + len(Record.put(b"z", b"z").encode())


def test_zero_tail_in_earlier_segment(tmp_path):
    """A segment left un-finalized (zero tail) before a later one is not damage."""
    spec.write_segment(tmp_path, 0, srecs(5, b"a"), zero_tail=4096)
    spec.write_segment(tmp_path, 1, srecs(5, b"b"))
    for mode in M:
        wal, info = Wal.open(cfg(tmp_path, mode))
        with wal:
            assert info.valid_records == 10 and not info.corruption_detected
            assert keys(wal) == [r.key for r in srecs(5, b"a") + srecs(5, b"b")]


def test_nonzero_garbage_after_zeros_is_corruption(tmp_path):
    good = srecs(4)
    data = b"".join(spec.encode(r) for r in good)
    (tmp_path / "000000.wal").write_bytes(data + bytes(5000) + b"\x07" + bytes(100))
    wal, info = Wal.open(cfg(tmp_path))
    with wal:
        assert info.valid_records == 4 and info.corruption_detected
        assert info.bytes_truncated == 5001
    assert (tmp_path / "000000.wal").read_bytes() == data


# ---------------------------------------------------------------- earlier segments


def _three_segments(path, damage="flip"):
    segs = [srecs(6, b"a"), srecs(6, b"b"), srecs(6, b"c")]
    for i, s in enumerate(segs):
        spec.write_segment(path, i, s)
    data = bytearray((path / "000001.wal").read_bytes())
    rec_len = len(spec.encode(segs[1][0]))
    bad_off = 3 * rec_len
    if damage == "flip":
        data[bad_off + 12] ^= 0x01
    else:  # torn: the segment ends in the middle of its 4th record
        data = data[: bad_off + 5]
    (path / "000001.wal").write_bytes(bytes(data))
    return segs, bad_off, rec_len


@pytest.mark.parametrize("damage", ["flip", "torn"])
@pytest.mark.parametrize("mode", [M.TOLERATE_CORRUPTED_TAIL, M.ABSOLUTE_CONSISTENCY])
def test_corrupt_earlier_segment_raises_and_changes_nothing(tmp_path, mode, damage):
    _, bad_off, _ = _three_segments(tmp_path, damage)
    before = snapshot(tmp_path)
    with pytest.raises(CorruptionError) as ei:
        Wal.open(cfg(tmp_path, mode))
    err = ei.value
    path = str(tmp_path / "000001.wal")
    assert err.path == path and err.offset == bad_off and err.segment_id == 1
    assert path in str(err) and str(bad_off) in str(err)
    assert snapshot(tmp_path) == before
    # the failed open released its lock: another mode can open it
    wal, info = Wal.open(cfg(tmp_path, M.POINT_IN_TIME))
    wal.close()


def test_point_in_time(tmp_path):
    segs, bad_off, _ = _three_segments(tmp_path)
    wal, info = Wal.open(cfg(tmp_path, M.POINT_IN_TIME))
    with wal:
        assert info.corruption_detected
        assert info.valid_records == 9
        assert info.segments_removed == 1
        assert info.segments_scanned == 3
        assert info.bytes_truncated > 0
        assert info.last_valid_position == Position(1, bad_off)
        assert keys(wal) == [r.key for r in segs[0] + segs[1][:3]]
        assert wal.append(Record.put(b"next", b"")) == Position(1, bad_off)
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".wal")) == ["000000.wal", "000001.wal"]


def test_skip_any_corrupted_records(tmp_path):
    segs, bad_off, rec_len = _three_segments(tmp_path)
    wal, info = Wal.open(cfg(tmp_path, M.SKIP_ANY_CORRUPTED_RECORDS))
    expected = segs[0] + segs[1][:3] + segs[1][4:] + segs[2]
    with wal:
        assert info.corruption_detected
        assert info.spans_skipped == 1
        assert info.valid_records == 17
        assert keys(wal) == [r.key for r in expected]
        assert wal.current_position().segment_id == 2
    # the damaged segment was rewritten without the bad record, the others untouched
    assert (tmp_path / "000001.wal").read_bytes() == b"".join(spec.encode(r) for r in segs[1][:3] + segs[1][4:])
    wal, info = Wal.open(cfg(tmp_path))
    with wal:
        assert not info.corruption_detected and info.valid_records == 17


def test_skip_mode_several_spans_and_torn_tail(tmp_path):
    recs = srecs(10)
    enc = [spec.encode(r) for r in recs]
    blob = bytearray(b"".join(enc))
    offs = [sum(map(len, enc[:i])) for i in range(10)]
    blob[offs[2] + 9] ^= 0xFF
    blob[offs[6] + 9] ^= 0xFF
    (tmp_path / "000000.wal").write_bytes(bytes(blob) + enc[0][:7])
    wal, info = Wal.open(cfg(tmp_path, M.SKIP_ANY_CORRUPTED_RECORDS))
    with wal:
        assert info.spans_skipped == 3 and info.corruption_detected
        assert keys(wal) == [r.key for i, r in enumerate(recs) if i not in (2, 6)]


def test_absolute_consistency_on_clean_log(tmp_path):
    spec.write_segment(tmp_path, 0, srecs(5))
    spec.write_segment(tmp_path, 1, srecs(5, b"b"), zero_tail=1000)
    wal, info = Wal.open(cfg(tmp_path, M.ABSOLUTE_CONSISTENCY))
    with wal:
        assert info.valid_records == 10 and not info.corruption_detected
        assert info.mode is M.ABSOLUTE_CONSISTENCY


def test_absolute_consistency_torn_tail_raises(tmp_path):
    data = b"".join(spec.encode(r) for r in srecs(3))
    (tmp_path / "000000.wal").write_bytes(data + spec.encode(srecs(1)[0])[:9])
    before = snapshot(tmp_path)
    with pytest.raises(CorruptionError) as ei:
        Wal.open(cfg(tmp_path, M.ABSOLUTE_CONSISTENCY))
    assert ei.value.offset == len(data)
    assert snapshot(tmp_path) == before


def test_hostile_length_in_tail_is_truncated(tmp_path):
    """A tail record claiming an enormous klen is incomplete, cut, and reported."""
    data = b"".join(spec.encode(r) for r in srecs(3))
    hostile = spec.put_varint(1 << 50) + b"\x00\x00" + b"junk" * 10
    (tmp_path / "000000.wal").write_bytes(data + hostile)
    wal, info = Wal.open(cfg(tmp_path))
    with wal:
        assert info.valid_records == 3 and info.corruption_detected
        assert info.bytes_truncated == len(hostile)
    assert (tmp_path / "000000.wal").read_bytes() == data


# ---------------------------------------------------------------- nori-wal directories


def test_spec_written_directory_opens(tmp_path):
    """A directory as nori-wal writes it (every record kind, several segments,
    a crash-left zero tail on the last one) opens cleanly and reads back."""
    big = os.urandom(3000) * 20
    seg0 = [
        spec.SpecRecord(b"user:1", b"alice"),
        spec.SpecRecord(b"user:1", tombstone=True),
        spec.SpecRecord(b"session:abc", b"data", ttl_ms=3_600_000),
        spec.SpecRecord(b"k", b"v", version=(2, 7)),
        spec.SpecRecord(b"log", b"ERROR: " * 20, compression=spec.LZ4),
        spec.SpecRecord(b"z", big, compression=spec.ZSTD),
        spec.SpecRecord(b"", b""),
    ]
    seg1 = [
        spec.SpecRecord(b"both", b"x" * 500, ttl_ms=1, version=(9, 10), compression=spec.ZSTD),
        spec.SpecRecord(b"lz", big, compression=spec.LZ4, ttl_ms=(1 << 64) - 1),
    ]
    seg2 = srecs(30)
    spec.write_segment(tmp_path, 0, seg0)
    spec.write_segment(tmp_path, 1, seg1)
    spec.write_segment(tmp_path, 2, seg2, zero_tail=MIB - 2000)
    wal, info = Wal.open(cfg(tmp_path))
    everything = seg0 + seg1 + seg2
    with wal:
        assert info.valid_records == len(everything)
        assert info.segments_scanned == 3
        assert not info.corruption_detected and info.bytes_truncated == 0
        got = read_all(wal)
        assert [r for r, _ in got] == [as_record(s) for s in everything]
        assert got[5][0].value == big and got[5][0].compression is Compression.ZSTD
        assert got[8][0].ttl_ms == (1 << 64) - 1
        wal.append(Record.put(b"norikv", b"was here"))
    # and nori-wal (the spec codec) reads what norikv left
    assert [r.key for _, _, r in spec.read_dir(tmp_path)] == [r.key for r in everything] + [b"norikv"]


@given(st.integers(0, 40), st.integers(0, 400), st.integers(0, 3))
def test_recovery_keeps_longest_valid_prefix(tmp_path_factory, n, cut, garbage):
    """Property: any file = valid records + a cut of one more record + zeros or
    not, recovers to exactly the valid records."""
    d = tmp_path_factory.mktemp("p")
    recs = [spec.SpecRecord(b"k%d" % i, os.urandom(i % 17), ttl_ms=i if i % 3 else None) for i in range(n)]
    extra = spec.encode(spec.SpecRecord(b"extra", b"e" * 300))
    tail = extra[: cut % len(extra)]
    if garbage == 1:
        tail += bytes(2000)
    spec.write_segment(d, 0, recs + ([tail] if tail else []))
    wal, info = Wal.open(cfg(d))
    with wal:
        assert info.valid_records == n
        assert [r for r, _ in read_all(wal)] == [as_record(s) for s in recs]
        assert info.corruption_detected == bool(tail.rstrip(b"\0"))


def test_crash_right_after_rotation(tmp_path):
    """The newest segment was created and preallocated but holds no record yet."""
    recs = srecs(8)
    spec.write_segment(tmp_path, 0, recs)
    (tmp_path / "000001.wal").write_bytes(bytes(MIB))
    logical = sum(len(spec.encode(r)) for r in recs)
    for mode in M:
        wal, info = Wal.open(cfg(tmp_path, mode))
        with wal:
            assert info.valid_records == 8 and not info.corruption_detected
            assert info.segments_scanned == 2
            assert info.last_valid_position == Position(0, logical)
            assert wal.current_position() == Position(1, 0)
        assert os.path.getsize(tmp_path / "000001.wal") == 0
    with Wal.open(cfg(tmp_path))[0] as wal:
        assert wal.append(Record.put(b"x", b"y")) == Position(1, 0)


@st.composite
def damaged_logs(draw):
    sizes = [draw(st.integers(1, 6)) for _ in range(3)]
    segs = [
        [
            spec.SpecRecord(
                b"s%dr%d" % (s, i),
                draw(st.binary(min_size=0, max_size=40)),
                ttl_ms=draw(st.none() | st.integers(0, 1 << 40)),
            )
            for i in range(n)
        ]
        for s, n in enumerate(sizes)
    ]
    seg = draw(st.integers(0, 2))
    blob_len = sum(len(spec.encode(r)) for r in segs[seg])
    off = draw(st.integers(0, blob_len - 1))
    xor = draw(st.integers(1, 255))
    return segs, seg, off, xor


@given(damaged_logs())
def test_modes_on_one_damaged_byte(tmp_path_factory, case):
    """One damaged byte anywhere in a three-segment log: each mode does what
    its docstring says."""
    segs, seg, off, xor = case
    offs = []
    pos = 0
    for r in segs[seg]:
        offs.append(pos)
        pos += len(spec.encode(r))
    bad_idx = max(i for i, o in enumerate(offs) if o <= off)
    flat = [r for s in segs for r in s]
    bad_flat = sum(len(s) for s in segs[:seg]) + bad_idx
    for mode in M:
        d = tmp_path_factory.mktemp("m")
        for i, s in enumerate(segs):
            spec.write_segment(d, i, s)
        p = d / spec.segment_name(seg)
        data = bytearray(p.read_bytes())
        data[off] ^= xor
        p.write_bytes(bytes(data))
        before = snapshot(d)
        raises = mode is M.ABSOLUTE_CONSISTENCY or (mode is M.TOLERATE_CORRUPTED_TAIL and seg < 2)
        if raises:
            with pytest.raises(CorruptionError) as ei:
                Wal.open(cfg(d, mode))
            assert ei.value.offset == offs[bad_idx] and ei.value.segment_id == seg
            assert snapshot(d) == before
            continue
        wal, info = Wal.open(cfg(d, mode))
        with wal:
            got = [r for r, _ in read_all(wal)]
        assert info.corruption_detected
        if mode is M.SKIP_ANY_CORRUPTED_RECORDS:
            expected = flat[:bad_flat] + flat[bad_flat + 1 :]
        else:  # TOLERATE (damage in the last segment) and POINT_IN_TIME: a prefix
            expected = flat[:bad_flat]
        assert got == [as_record(s) for s in expected], mode


BOUNDED_SCRIPT = """
import resource, sys
from norikv import FsyncPolicy, Position, Wal, WalConfig
with open("/proc/self/status") as f:
    vm = [int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize")][0]
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
resource.setrlimit(resource.RLIMIT_AS, (vm + (48 << 20), hard))
wal, info = Wal.open(WalConfig(dir=sys.argv[1], max_segment_size=1 << 20,
                               fsync_policy=FsyncPolicy.OS))
n = sum(len(r.value) for r, _ in wal.read_from(Position(0, 0)))
wal.close()
print(info.valid_records, info.corruption_detected, n)
"""


@pytest.mark.skipif(os.uname().sysname != "Linux", reason="reads /proc/self/status and relies on RLIMIT_AS (Linux)")
def test_recovery_memory_is_bounded(tmp_path):
    """A 96 MiB segment recovers and reads back under an address-space limit of
    48 MiB above the interpreter's: segments are read in chunks, never whole."""
    import subprocess
    import sys

    chunk = spec.encode(spec.SpecRecord(b"k", b"\x5a" * 100_000))
    with open(tmp_path / "000000.wal", "wb") as f:
        for _ in range(960):
            f.write(chunk)
    spec.write_segment(tmp_path, 1, srecs(3))
    out = subprocess.run(
        [sys.executable, "-c", BOUNDED_SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["963", "False", str(960 * 100_000 + 3 * 20)]
