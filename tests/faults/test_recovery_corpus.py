"""Recovery corpus: damaged logs run through every RecoveryMode against a
written table of expected outcomes, and crashes during recovery itself.

The log: 3 segments x 5 records (``sIrK`` = record K of segment I, 51 bytes
each), written as bytes so every offset is known. Outcomes:

* ``all``            every record survives, nothing reported
* ``before X``       the log is cut at record X: it and everything after it
                     (including later segments) is gone, and reported
* ``without X``      only record X is gone (skipped), and reported
* ``RAISE``          open raises CorruptionError and no file is changed
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys

import pytest

from norikv import CorruptionError, Position, Record, RecoveryMode, Wal, WalConfig

from ._shim import shim_env
from ._util import describe

TCT = RecoveryMode.TOLERATE_CORRUPTED_TAIL
ABS = RecoveryMode.ABSOLUTE_CONSISTENCY
PIT = RecoveryMode.POINT_IN_TIME
SKIP = RecoveryMode.SKIP_ANY_CORRUPTED_RECORDS
MODES = [TCT, ABS, PIT, SKIP]
SEGS, PER = 3, 5
ORDER = [f"s{i}r{k}" for i in range(SEGS) for k in range(PER)]


def record(i: int, k: int) -> bytes:
    return Record.put(b"s%dr%d" % (i, k), (b"%d-%d|" % (i, k)) * 10).encode()


REC_LEN = len(record(0, 0))


def write_log(d) -> None:
    os.makedirs(d, exist_ok=True)
    for i in range(SEGS):
        with open(os.path.join(d, "%06d.wal" % i), "wb") as f:
            f.write(b"".join(record(i, k) for k in range(PER)))


def seg(d, i) -> str:
    return os.path.join(d, "%06d.wal" % i)


def flip(d, i, k, byte_in_record, bit=0):
    with open(seg(d, i), "r+b") as f:
        f.seek(k * REC_LEN + byte_in_record)
        b = f.read(1)[0]
        f.seek(k * REC_LEN + byte_in_record)
        f.write(bytes([b ^ (1 << bit)]))


def truncate(d, i, size):
    os.truncate(seg(d, i), size)


def append(d, i, data):
    with open(seg(d, i), "ab") as f:
        f.write(data)


# Damage name -> (function applying it, {mode: expected outcome}).
# Offsets in a record: byte 0 = klen, 2 = flags, 3.. key, 8.. value, 47.. CRC.
CORPUS = {
    "clean": (lambda d: None, {TCT: "all", ABS: "all", PIT: "all", SKIP: "all"}),
    "zero tail (preallocated)": (
        lambda d: append(d, 2, bytes(1 << 16)),
        {TCT: "all", ABS: "all", PIT: "all", SKIP: "all"},
    ),
    "zero tail in a middle seg": (
        lambda d: append(d, 1, bytes(4096)),
        {TCT: "all", ABS: "all", PIT: "all", SKIP: "all"},
    ),
    "last record cut whole": (
        lambda d: truncate(d, 2, 4 * REC_LEN),
        {TCT: "all-but s2r4", ABS: "all-but s2r4", PIT: "all-but s2r4", SKIP: "all-but s2r4"},
    ),
    "bit flip: last seg, value": (
        lambda d: flip(d, 2, 2, 20),
        {TCT: "before s2r2", ABS: "RAISE", PIT: "before s2r2", SKIP: "without s2r2"},
    ),
    "bit flip: last seg, crc": (
        lambda d: flip(d, 2, 4, 49),
        {TCT: "before s2r4", ABS: "RAISE", PIT: "before s2r4", SKIP: "without s2r4"},
    ),
    "bit flip: middle seg, klen": (
        lambda d: flip(d, 1, 2, 0, 3),
        {TCT: "RAISE", ABS: "RAISE", PIT: "before s1r2", SKIP: "without s1r2"},
    ),
    "bit flip: middle seg, flags": (
        lambda d: flip(d, 1, 0, 2, 1),
        {TCT: "RAISE", ABS: "RAISE", PIT: "before s1r0", SKIP: "without s1r0"},
    ),
    "bit flip: first seg, key": (
        lambda d: flip(d, 0, 4, 5, 7),
        {TCT: "RAISE", ABS: "RAISE", PIT: "before s0r4", SKIP: "without s0r4"},
    ),
    "compression bits = 3": (
        lambda d: flip(d, 0, 1, 2, 2) or flip(d, 0, 1, 2, 3),
        {TCT: "RAISE", ABS: "RAISE", PIT: "before s0r1", SKIP: "without s0r1"},
    ),
    "zeroed record, middle seg": (
        lambda d: _zero(d, 1, 3),
        {TCT: "RAISE", ABS: "RAISE", PIT: "before s1r3", SKIP: "without s1r3"},
    ),
    "torn record, non-final seg": (
        lambda d: truncate(d, 0, 4 * REC_LEN + 20),
        {TCT: "RAISE", ABS: "RAISE", PIT: "before s0r4", SKIP: "without s0r4"},
    ),
    "garbage tail, last seg": (
        lambda d: append(d, 2, b"\xff" * 100),
        {TCT: "all", ABS: "RAISE", PIT: "all", SKIP: "all"},
    ),
}


def _zero(d, i, k):
    with open(seg(d, i), "r+b") as f:
        f.seek(k * REC_LEN)
        f.write(bytes(REC_LEN))


def expected_keys(outcome: str) -> list[str]:
    if outcome == "all":
        return list(ORDER)
    kind, _, x = outcome.partition(" ")
    if kind == "before":
        return ORDER[: ORDER.index(x)]
    if kind in ("without", "all-but"):
        return [k for k in ORDER if k != x]
    raise AssertionError(outcome)


def snapshot_files(d) -> dict:
    out = {}
    for n in sorted(os.listdir(d)):
        if n.endswith(".wal"):
            with open(os.path.join(d, n), "rb") as f:
                out[n] = f.read()
    return out


def open_keys(d, mode):
    wal, info = Wal.open(WalConfig(dir=d, max_segment_size=1 << 20, recovery_mode=mode))
    try:
        keys = [r.key.decode() for r, _ in wal.read_from(Position(0, 0))]
        for r, _ in wal.read_from(Position(0, 0)):
            if r.key.startswith(b"s"):  # no torn or misplaced value
                i, k = r.key.decode()[1:].split("r")
                assert r.value == (b"%s-%s|" % (i.encode(), k.encode())) * 10
    finally:
        wal.close()
    return keys, info


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
@pytest.mark.parametrize("damage", list(CORPUS))
def test_corpus(tmp_path, damage, mode):
    d = str(tmp_path / "wal")
    write_log(d)
    apply_damage, table = CORPUS[damage]
    apply_damage(d)
    outcome = table[mode]
    before = snapshot_files(d)
    if outcome == "RAISE":
        with pytest.raises(CorruptionError) as ei:
            Wal.open(WalConfig(dir=d, max_segment_size=1 << 20, recovery_mode=mode))
        assert ei.value.path and ei.value.offset is not None
        assert snapshot_files(d) == before  # nothing changed
        # ... and the lock was released: a tolerant mode can open it now.
        Wal.open(WalConfig(dir=d, max_segment_size=1 << 20, recovery_mode=SKIP))[0].close()
        return
    keys, info = open_keys(d, mode)
    assert keys == expected_keys(outcome), (damage, mode)
    damaged = damage not in ("clean", "last record cut whole") and not damage.startswith("zero tail")
    assert info.corruption_detected == damaged, info
    if outcome.startswith("before"):
        x = outcome.split()[1]
        assert info.segments_removed == SEGS - 1 - int(x[1]), info
    # Idempotent: a second open finds a clean log with the same records.
    keys2, info2 = open_keys(d, mode)
    assert keys2 == keys and not info2.corruption_detected


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
def test_truncation_at_every_byte_of_the_last_record(tmp_path, mode):
    """Every cut inside the last record: the record is gone, the rest stays,
    and the cut is reported (ABSOLUTE_CONSISTENCY refuses instead)."""
    base = 4 * REC_LEN
    for cut in range(1, REC_LEN):
        d = str(tmp_path / f"c{cut}")
        write_log(d)
        truncate(d, 2, base + cut)
        if mode is ABS:
            before = snapshot_files(d)
            with pytest.raises(CorruptionError):
                Wal.open(WalConfig(dir=d, max_segment_size=1 << 20, recovery_mode=mode))
            assert snapshot_files(d) == before
            continue
        keys, info = open_keys(d, mode)
        assert keys == ORDER[:-1], cut
        assert info.corruption_detected, (cut, info)
        if mode is SKIP:  # reported as a skipped span
            assert info.spans_skipped == 1, (cut, info)
        else:  # cut bytes up to the last non-zero one
            nonzero = len(record(2, 4)[:cut].rstrip(b"\0"))
            assert info.bytes_truncated == nonzero, (cut, info)
        assert os.path.getsize(seg(d, 2)) == base


def test_unterminated_batch_is_cut_in_every_mode(tmp_path):
    """An atomic batch whose last record never made it (records with the
    continuation flag, then a clean end) is cut off, so that later appends
    cannot complete it; ABSOLUTE_CONSISTENCY instead refuses and changes nothing."""
    for mode in MODES:
        d = str(tmp_path / mode.name)
        write_log(d)
        wal, _ = Wal.open(WalConfig(dir=d, max_segment_size=1 << 20))
        wal.append_batch([Record.put(b"b%d" % j, b"x") for j in range(3)], atomic=True)
        wal.close()
        size = os.path.getsize(seg(d, 2))
        last = Record.put(b"b2", b"x").encode()
        truncate(d, 2, size - len(last))  # drop the terminating record
        if mode is RecoveryMode.ABSOLUTE_CONSISTENCY:
            before = open(seg(d, 2), "rb").read()
            with pytest.raises(CorruptionError) as exc:
                open_keys(d, mode)
            assert exc.value.segment_id == 2 and "unterminated" in str(exc.value)
            assert open(seg(d, 2), "rb").read() == before
            continue
        keys, info = open_keys(d, mode)
        assert keys == ORDER, mode
        assert info.corruption_detected
        wal, _ = Wal.open(WalConfig(dir=d, max_segment_size=1 << 20, recovery_mode=mode))
        wal.append(Record.put(b"after", b"1"))
        wal.close()
        keys, _ = open_keys(d, mode)
        assert keys == ORDER + ["after"]


# ------------------------------------------------------------ crashes during recovery

OPEN_CHILD = r"""
import sys
from norikv import Wal, WalConfig, RecoveryMode
d, mode = sys.argv[1], sys.argv[2]
w, info = Wal.open(WalConfig(dir=d, max_segment_size=1 << 20, recovery_mode=RecoveryMode[mode]))
w.close()
print("opened")
"""

# Damage for which recovery must change files, and the outcome per mode.
RECOVERY_CRASH_CASES = [
    ("bit flip: middle seg, klen", PIT),
    ("torn record, non-final seg", PIT),
    ("bit flip: middle seg, klen", SKIP),
    ("bit flip: last seg, value", TCT),
    ("garbage tail, last seg", SKIP),
]


@pytest.mark.parametrize("damage,mode", RECOVERY_CRASH_CASES, ids=[f"{d}-{m.name}" for d, m in RECOVERY_CRASH_CASES])
def test_crash_at_every_step_of_recovery(shim_path, tmp_path, damage, mode):
    """SIGKILL the recovering process right after its 1st, 2nd, ... mutating
    call (ftruncate, fsync, unlink, rename, write), then reopen: the outcome
    is the table's, whatever step the crash hit."""
    apply_damage, table = CORPUS[damage]
    want = expected_keys(table[mode])
    step = 0
    while True:
        d = str(tmp_path / f"step{step}")
        write_log(d)
        apply_damage(d)
        env = dict(os.environ)
        env.update(shim_env(shim_path, "ftruncate,fsync,fdatasync,unlink,rename,write", path=d, after=step))
        env["FAULTSHIM_ACTION"] = "kill"
        proc = subprocess.run(
            [sys.executable, "-c", OPEN_CHILD, d, mode.name], env=env, capture_output=True, text=True, timeout=60
        )
        keys, _ = open_keys(d, mode)
        assert keys == want, (damage, mode, step, describe(proc))
        if proc.returncode == 0:
            break  # recovery ran to the end: all steps covered
        assert proc.returncode == -signal.SIGKILL, describe(proc)
        step += 1
        assert step < 50
    assert step >= 1


def test_random_kills_during_recovery(tmp_path):
    """Kill opens of a damaged store at random instants, again and again,
    then open cleanly: the result is still the table's."""
    rng = random.Random(99)
    apply_damage, table = CORPUS["bit flip: middle seg, klen"]
    for mode in (PIT, SKIP):
        want = expected_keys(table[mode])
        d = str(tmp_path / mode.name)
        write_log(d)
        apply_damage(d)
        for _ in range(8):
            p = subprocess.Popen(
                [sys.executable, "-c", OPEN_CHILD, d, mode.name], stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            try:
                p.wait(timeout=rng.uniform(0.0, 0.15))
            except subprocess.TimeoutExpired:
                p.kill()
            p.communicate(timeout=60)
        keys, _ = open_keys(d, mode)
        assert keys == want, mode


@pytest.mark.parametrize("mode", [TCT, PIT, SKIP], ids=lambda m: m.name)
def test_torn_batch_never_completed_by_later_appends(tmp_path, mode):
    """A crash tears the last record of an atomic batch. Whatever the mode,
    the batch's complete records must not be completed by the next append
    (regression: SKIP_ANY_CORRUPTED_RECORDS kept them in the rewritten
    segment, and the next put made b1, b2 apply without b3)."""
    from norikv import KvStore

    with KvStore.open(tmp_path) as s:
        s.put(b"a", b"1")
        with s.batch() as b:
            b.put(b"b1", b"x")
            b.put(b"b2", b"y")
            b.put(b"b3", b"z")
    segp = os.path.join(tmp_path, "wal", "000000.wal")
    with open(segp, "rb") as f:
        data = f.read()
    torn = len(Record.put(b"b3", b"z").encode()) - 3
    with open(segp, "wb") as f:
        f.write(data[:-torn])
    with KvStore.open(tmp_path, recovery_mode=mode) as s:
        assert dict(s.items()) == {b"a": b"1"}
        assert s.recovery_info.corruption_detected
        s.put(b"c", b"2")
    with KvStore.open(tmp_path, recovery_mode=mode) as s:
        assert dict(s.items()) == {b"a": b"1", b"c": b"2"}


def test_skip_mode_drops_a_batch_interrupted_by_damage(tmp_path):
    """SKIP_ANY_CORRUPTED_RECORDS: damage in the last record of an atomic batch
    (b1, b2, [b3 damaged]) followed by an unrelated put c. The batch's
    surviving records must not be applied, and c must not "complete" them
    (regression: b1, b2 and c were applied together)."""
    from norikv import KvStore

    with KvStore.open(tmp_path) as s:
        s.put(b"a", b"1")
        with s.batch() as b:
            b.put(b"b1", b"x")
            b.put(b"b2", b"y")
            b.put(b"b3", b"z")
        s.put(b"c", b"2")
    segp = os.path.join(tmp_path, "wal", "000000.wal")
    with open(segp, "rb") as f:
        data = bytearray(f.read())
    c_len = len(Record.put(b"c", b"2").encode())
    b3_len = len(Record.put(b"b3", b"z").encode())
    data[len(data) - c_len - b3_len + 4] ^= 0x01  # a key byte of b3
    with open(segp, "wb") as f:
        f.write(data)
    for _ in range(2):  # and again after the rewrite
        with KvStore.open(tmp_path, recovery_mode=SKIP) as s:
            assert dict(s.items()) == {b"a": b"1", b"c": b"2"}
