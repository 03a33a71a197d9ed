"""Hostile bytes: random and adversarial segments fed to recovery (every
mode) and to the decoder. No crash, no hang, memory bounded by the file size,
and recovery is idempotent: what one open keeps, the next open keeps as is."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from hypothesis import given
from hypothesis import strategies as st

from norikv import CorruptionError, Position, Record, RecoveryMode, Wal, WalConfig

from ._util import describe, run_py


def varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


valid_record = st.builds(
    lambda k, v, tomb, ttl, ver: (Record.delete(k) if tomb else Record(k, v, ttl_ms=ttl, version=ver)).encode(),
    st.binary(max_size=40),
    st.binary(max_size=300),
    st.booleans(),
    st.none() | st.integers(0, 2**64 - 1),
    st.none() | st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
)

adversarial_header = st.builds(
    lambda klen, vlen, flags, tail: varint(klen) + varint(vlen) + bytes([flags]) + tail,
    st.sampled_from([0, 1, 127, 128, 2**31, 2**32 + 5, 2**40, 2**62, 2**64 - 1]),
    st.sampled_from([0, 5, 2**20, 2**33, 2**63, 2**64 - 1]),
    st.integers(0, 255),
    st.binary(max_size=30),
)

overlong_varint = st.builds(lambda n, tail: b"\xff" * n + tail, st.integers(9, 20), st.binary(max_size=8))

chunk = st.one_of(
    valid_record,
    valid_record,
    adversarial_header,
    overlong_varint,
    st.binary(max_size=64),
    st.builds(bytes, st.integers(0, 300)),
)

segments = st.lists(st.lists(chunk, max_size=12).map(b"".join), min_size=1, max_size=3)


def open_records(d, mode):
    wal, info = Wal.open(WalConfig(dir=d, max_segment_size=1 << 20, recovery_mode=mode))
    try:
        recs = [(r, p) for r, p in wal.read_from(Position(0, 0))]
    finally:
        wal.close()
    return recs, info


@given(segments, st.sampled_from(list(RecoveryMode)))
def test_recovery_of_hostile_segments(segs, mode):
    d = tempfile.mkdtemp(prefix="norikv-fuzz-")
    try:
        for i, data in enumerate(segs):
            with open(os.path.join(d, "%06d.wal" % i), "wb") as f:
                f.write(data)
        try:
            recs, info = open_records(d, mode)
        except CorruptionError:
            assert mode in (RecoveryMode.ABSOLUTE_CONSISTENCY, RecoveryMode.TOLERATE_CORRUPTED_TAIL)
            return
        for r, _ in recs:
            assert Record.decode(r.encode())[0] == r  # each kept record is whole
        # Idempotent: the repaired log is clean and holds the same records.
        recs2, info2 = open_records(d, mode)
        assert [r for r, _ in recs2] == [r for r, _ in recs]
        assert not info2.corruption_detected
    finally:
        shutil.rmtree(d, ignore_errors=True)


@given(st.one_of(chunk, st.lists(chunk, max_size=4).map(b"".join)))
def test_decoder_never_crashes(data):
    try:
        rec, n = Record.decode(data)
    except (CorruptionError, ValueError):
        return
    assert 0 < n <= len(data)
    assert rec.encode() == data[:n] or Record.decode(rec.encode())[0] == rec


MEMORY_CHILD = r"""
import json, os, resource, sys
from norikv import Wal, WalConfig, RecoveryMode, CorruptionError
d = sys.argv[1]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {}
for mode in RecoveryMode:
    try:
        w, info = Wal.open(WalConfig(dir=d, max_segment_size=1 << 20, recovery_mode=mode,
                                     preallocate=False))
        w.close()
        out[mode.name] = "opened"
    except CorruptionError:
        out[mode.name] = "corrupt"
out["growth_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps(out))
"""


def test_lengths_past_the_end_allocate_nothing(tmp_path):
    """Records claiming up to 2**64-1 bytes in a file of a few KiB: recovery
    never allocates for the claim (ru_maxrss of the process stays flat)."""
    d = tmp_path / "wal"
    d.mkdir()
    good = Record.put(b"k", b"v").encode()
    claims = b"".join(
        varint(k) + varint(v) + b"\x00" + b"abc"
        for k, v in [(2**40, 1), (1, 2**62), (2**33, 2**33), (2**64 - 1, 2**64 - 1)]
    )
    (d / "000000.wal").write_bytes(good * 10 + varint(2**31) + varint(2**31) + b"\x00" + b"x" * 4000)
    (d / "000001.wal").write_bytes(good * 3 + claims * 50)
    proc = run_py(MEMORY_CHILD, args=[str(d)], timeout=60)
    assert proc.returncode == 0, describe(proc)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["growth_kib"] < 16 * 1024, out  # < 16 MiB, for claims of up to 16 EiB
    assert out["SKIP_ANY_CORRUPTED_RECORDS"] == "opened"
