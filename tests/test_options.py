"""Option validation (issue 11, point 11): every option of KvStore.open and
WalConfig is checked before anything on disk is touched (a torn tail stays
as it was, no directory is created), a wrong type raises TypeError and a
wrong value ConfigError, each naming the option; and an open that fails for
any reason releases the directory lock at once, even while the exception
(and its traceback) is still referenced."""

from __future__ import annotations

import os

import pytest

import norikv.wal as wal_mod
from norikv import Compression, ConfigError, FsyncPolicy, KvStore, NoriError, RecoveryMode, Wal, WalConfig, _engine

MIB = 1 << 20
NAN = float("nan")
INF = float("inf")

# Values that are wrong for every int option, whatever its range.
NOT_INTS = [
    ("64", TypeError),
    (None, TypeError),
    (True, TypeError),
    (1.5, TypeError),
    (float(2 * MIB), TypeError),
    (b"1", TypeError),
]
HUGE = [(2**63, ConfigError), (2**64, ConfigError), (2**70, ConfigError)]

STORE_BAD = {
    "fsync_policy": [
        ("always", TypeError),
        (1, TypeError),
        (FsyncPolicy.batch(0), ConfigError),
        (FsyncPolicy.batch(-1), ConfigError),
        (FsyncPolicy.batch(NAN), ConfigError),
        (FsyncPolicy.batch(INF), ConfigError),
        (FsyncPolicy.batch(2), ConfigError),
        (FsyncPolicy.batch("0.1"), TypeError),
        (FsyncPolicy.batch(True), TypeError),
        (FsyncPolicy("sometimes"), ConfigError),
        (FsyncPolicy(1), TypeError),
    ],
    "max_segment_size": [
        (-1, ConfigError),
        (0, ConfigError),
        (MIB - 1, ConfigError),
        ((1 << 40) + 1, ConfigError),
        *HUGE,
        *NOT_INTS,
    ],
    "preallocate": [(1, TypeError), (0, TypeError), (None, TypeError), ("yes", TypeError)],
    "recovery_mode": [("point_in_time", TypeError), (None, TypeError), (1, TypeError), (RecoveryMode, TypeError)],
    "compression": [
        ("brotli", ConfigError),
        (3, ConfigError),
        (-1, ConfigError),
        (1.0, TypeError),
        (b"lz4", TypeError),
        (True, TypeError),
    ],
    "compress_min_size": [(-1, ConfigError), *HUGE, *NOT_INTS],
    "max_keys": [(0, ConfigError), (-1, ConfigError), *HUGE, *[(v, e) for v, e in NOT_INTS if v is not None]],
    "max_bytes": [(0, ConfigError), (-1, ConfigError), *HUGE, *[(v, e) for v, e in NOT_INTS if v is not None]],
    "auto_compact": [(1, TypeError), (0, TypeError), (None, TypeError), ("no", TypeError)],
    "compact_dead_ratio": [
        (0, ConfigError),
        (1, ConfigError),
        (0.0, ConfigError),
        (1.0, ConfigError),
        (-0.5, ConfigError),
        (1.5, ConfigError),
        (NAN, ConfigError),
        (INF, ConfigError),
        (-INF, ConfigError),
        ("0.5", TypeError),
        (None, TypeError),
        (True, TypeError),
    ],
    "compact_min_bytes": [(-1, ConfigError), *HUGE, *NOT_INTS],
    "writeback_bytes": [(-1, ConfigError), ((1 << 40) + 1, ConfigError), *HUGE, *NOT_INTS],
}
STORE_CASES = [(opt, val, exc) for opt, cases in STORE_BAD.items() for val, exc in cases]

WAL_BAD = {
    "dir": [(None, TypeError), (123, TypeError), ("", ConfigError), ("a\0b", ConfigError), (b"a\0b", ConfigError)],
    "max_segment_size": STORE_BAD["max_segment_size"],
    "fsync_policy": [(None, TypeError), *STORE_BAD["fsync_policy"]],
    "preallocate": STORE_BAD["preallocate"],
    "node_id": [(-1, ConfigError), (2**32, ConfigError), *HUGE, *NOT_INTS],
    "recovery_mode": STORE_BAD["recovery_mode"],
    "writeback_bytes": STORE_BAD["writeback_bytes"],
}
WAL_CASES = [(opt, val, exc) for opt, cases in WAL_BAD.items() for val, exc in cases]


def _case_id(case) -> str:
    opt, val, exc = case
    if isinstance(val, FsyncPolicy):
        return f"{opt}=FsyncPolicy({val.kind!r}, {val.window!r})"
    return f"{opt}={val!r}"[:60]


def tree(root) -> dict[str, bytes | None]:
    """Every file (with its bytes) and directory under root."""
    out: dict[str, bytes | None] = {}
    for d, dirs, files in os.walk(root):
        for n in dirs:
            out[os.path.relpath(os.path.join(d, n), root)] = None
        for n in files:
            with open(os.path.join(d, n), "rb") as f:
                out[os.path.relpath(os.path.join(d, n), root)] = f.read()
    return out


def store_with_torn_tail(path) -> None:
    """A store of 20 keys whose last segment ends in half a record."""
    with KvStore.open(path, fsync_policy=FsyncPolicy.OS) as s:
        for i in range(20):
            s.put(b"k%02d" % i, b"v%02d" % i)
    seg = os.path.join(path, "wal", "000000.wal")
    with open(seg, "ab") as f:
        f.write(b"\x08\x01\x00torn")  # a header promising more than is there


@pytest.mark.parametrize("case", STORE_CASES, ids=_case_id)
def test_store_option_rejected_before_disk(tmp_path, case):
    opt, bad, exc = case
    db = tmp_path / "db"
    store_with_torn_tail(db)
    before = tree(db)
    with pytest.raises(exc, match=opt) as info:
        KvStore.open(db, **{opt: bad})
    assert tree(db) == before  # the torn tail was not cut; nothing changed
    # The exception (and its traceback) is still alive: the lock is not held.
    with KvStore.open(db, fsync_policy=FsyncPolicy.OS) as s:
        assert len(s) == 20
        assert s.recovery_info.corruption_detected  # this open found and cut the tail
    assert info.value is not None
    # Nothing is created for a store that does not exist yet.
    fresh = tmp_path / "fresh"
    with pytest.raises(exc, match=opt):
        KvStore.open(fresh, **{opt: bad})
    assert not fresh.exists()


@pytest.mark.parametrize(
    "bad,exc",
    [
        (None, TypeError),
        (123, TypeError),
        (1.5, TypeError),
        ("", ConfigError),
        ("a\0b", ConfigError),
        (b"a\0b", ConfigError),
    ],
)
def test_store_path_rejected(tmp_path, monkeypatch, bad, exc):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(exc, match="path"):
        KvStore.open(bad)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("case", WAL_CASES, ids=_case_id)
def test_walconfig_option_rejected_before_disk(tmp_path, monkeypatch, case):
    opt, bad, exc = case
    monkeypatch.chdir(tmp_path)  # a relative dir in a bad case lands here
    d = tmp_path / "wal"
    store_with_torn_tail(tmp_path / "db")
    os.rename(tmp_path / "db" / "wal", d)
    before = tree(tmp_path)
    kw = dict(dir=str(d), max_segment_size=MIB, fsync_policy=FsyncPolicy.OS)
    kw[opt] = bad
    config = WalConfig(**kw)
    with pytest.raises(exc, match=opt) as info:
        config.validate()
    with pytest.raises(exc):
        Wal.open(config)
    with pytest.raises(exc):
        Wal.open(**kw)
    assert tree(tmp_path) == before
    wal, rec = Wal.open(dir=str(d), max_segment_size=MIB, fsync_policy=FsyncPolicy.OS)
    with wal:
        assert rec.valid_records == 20 and rec.corruption_detected
    assert info.value is not None


def test_good_values_at_the_bounds(tmp_path):
    """The extremes each range allows are accepted (and stored as given)."""
    big = 2**63 - 1
    with KvStore.open(
        tmp_path / "a",
        fsync_policy=FsyncPolicy.batch(1),
        max_segment_size=MIB,
        preallocate=False,
        compression=Compression.LZ4,
        compress_min_size=big,
        max_keys=big,
        max_bytes=big,
        auto_compact=False,
        compact_dead_ratio=1e-9,
        compact_min_bytes=big,
    ) as s:
        s.put(b"k", b"v")
        assert (s.max_keys, s.max_bytes, s.compress_min_size, s.compact_min_bytes) == (big, big, big, big)
    with KvStore.open(
        tmp_path / "b",
        compress_min_size=0,
        compact_min_bytes=0,
        compact_dead_ratio=0.999,
        max_segment_size=1 << 40,
        compression="zstd",
        fsync_policy=None,
        max_keys=None,
        max_bytes=None,
    ) as s:
        s.put(b"k", b"v" * 100)
        assert s.get(b"k") == b"v" * 100
    wal, _ = Wal.open(dir=str(tmp_path / "w"), node_id=2**32 - 1, max_segment_size=MIB)
    wal.close()
    with KvStore.open(os.fsencode(tmp_path / "c")) as s:  # a bytes path
        s.put(b"k", b"v")
    assert os.path.exists(tmp_path / "c" / "wal" / "000000.wal")


def test_failed_open_after_lock_releases_it(tmp_path, monkeypatch):
    """A failure after the directory was locked and recovered (here: the last
    step of the open, pinning relative TTLs) releases the lock at once, not
    when the exception dies."""
    with KvStore.open(tmp_path, fsync_policy=FsyncPolicy.OS) as s:
        s.put(b"a", b"1")

    def boom(self, *args):
        raise RuntimeError("injected")

    monkeypatch.setattr(_engine, "_pin_relative_ttls", boom)
    with pytest.raises(RuntimeError) as info:
        KvStore.open(tmp_path)
    monkeypatch.undo()
    with KvStore.open(tmp_path) as s:  # no LockError while `info` lives
        assert s.get(b"a") == b"1"
    assert info.value is not None


def test_failed_wal_start_releases_lock(tmp_path, monkeypatch):
    """Same for a Wal whose background thread cannot be started."""

    def boom(self):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(wal_mod.Wal, "_start_background", boom)
    with pytest.raises(RuntimeError) as info:
        Wal.open(dir=str(tmp_path), max_segment_size=MIB)
    monkeypatch.undo()
    wal, _ = Wal.open(dir=str(tmp_path), max_segment_size=MIB)
    wal.close()
    assert info.value is not None


def test_config_errors_are_nori_errors():
    assert issubclass(ConfigError, NoriError) and issubclass(ConfigError, ValueError)
