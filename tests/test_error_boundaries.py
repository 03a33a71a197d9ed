"""Errors that escaped the hierarchy or contradicted the docs (issue 11,
point 13), each at the boundary where it entered:

* a bytes (or bytearray) subclass is stored, looked up and compared as its
  own content, never as what its ``__bytes__`` returns;
* ``Record.put_with_ttl`` with an infinite, NaN, negative or too large
  number of seconds raises ValueError (never OverflowError);
* creating a store whose parent is not a directory raises NoriIOError;
* a directory named ``*.compact-tmp`` in the log directory is not norikv's:
  open leaves it alone, and a compaction that would write that very name
  fails with NoriIOError (the store goes on).

The fault-injected halves (a failed fsync while creating a store, a failed
fsync during compaction) are in tests/faults/test_compaction_io_errors.py.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

from norikv import FsyncPolicy, KvStore, NoriIOError, Position, Record, Wal, WalConfig, WalFailedError

MIB = 1 << 20


class Liar(bytes):
    """A bytes subclass whose __bytes__ says something else."""

    def __bytes__(self) -> bytes:
        return b"LIE"


class LiarArray(bytearray):
    def __bytes__(self) -> bytes:
        return b"LIE"


@pytest.mark.parametrize("cls", [Liar, LiarArray])
def test_bytes_subclass_is_its_own_content(tmp_path, cls):
    with KvStore.open(tmp_path, fsync_policy=FsyncPolicy.OS, auto_compact=False) as s:
        s.put(cls(b"own"), cls(b"value"))
        s[cls(b"item")] = cls(b"v2")
        s.put(cls(b"ttl"), cls(b"v3"), ttl=3600)
        with s.batch() as b:
            b.put(cls(b"b1"), cls(b"bv"))
            b.put(cls(b"gone"), cls(b"x"))
            b.delete(cls(b"gone"))
        assert sorted(s.keys()) == [b"b1", b"item", b"own", b"ttl"]
        assert all(type(k) is bytes for k in s.keys())
        assert all(type(v) is bytes for v in s.values())
        assert b"LIE" not in s
        assert s.get(cls(b"own")) == b"value" and s[cls(b"item")] == b"v2"
        assert cls(b"own") in s and cls(b"nope") not in s
        assert [k for k, _ in s.range(cls(b"item"), cls(b"ttl"))] == [b"item", b"own"]
        assert [k for k, _ in s.range(start=cls(b"o"))] == [b"own", b"ttl"]
        assert [k for k, _ in s.prefix(cls(b"o"))] == [b"own"]
        assert s.delete(cls(b"own")) is True
        del s[cls(b"item")]
        with s.batch() as b:
            b.delete(cls(b"b1"))
        assert s.keys() == [b"ttl"]
    with KvStore.open(tmp_path) as s:
        assert dict(s.items()) == {b"ttl": b"v3"}


@pytest.mark.parametrize("cls", [Liar, LiarArray])
def test_record_of_bytes_subclass(tmp_path, cls):
    recs = [
        Record(cls(b"k"), cls(b"v")),
        Record.put(cls(b"k"), cls(b"v")),
        Record.put_with_ttl(cls(b"k"), cls(b"v"), 1.0),
        Record(cls(b"k"), cls(b"v"), ttl_ms=1000),
    ]
    for r in recs:
        assert (r.key, r.value) == (b"k", b"v") and type(r.key) is bytes and type(r.value) is bytes
    d = Record.delete(cls(b"k"))
    assert d.key == b"k" and d.tombstone
    wal, _ = Wal.open(WalConfig(dir=str(tmp_path), max_segment_size=MIB))
    with wal:
        wal.append(Record.put(cls(b"wk"), cls(b"wv")))
        got = [(r.key, r.value) for r, _ in wal.read_from(Position(0, 0))]
    assert got == [(b"wk", b"wv")]


@pytest.mark.parametrize(
    "seconds", [float("inf"), float("-inf"), float("nan"), -1, -0.001, 2**64, 1.9e16, 1e300, 10**30]
)
def test_put_with_ttl_out_of_range_is_a_value_error(seconds):
    with pytest.raises(ValueError, match="seconds"):
        Record.put_with_ttl(b"k", b"v", seconds)


def test_put_with_ttl_bounds():
    assert Record.put_with_ttl(b"k", b"v", 0).ttl_ms == 0
    assert Record.put_with_ttl(b"k", b"v", (2**64 - 1) // 1000).ttl_ms == (2**64 - 1) // 1000 * 1000
    for bad in (None, "1", True):
        with pytest.raises(TypeError):
            Record.put_with_ttl(b"k", b"v", bad)


def test_store_under_a_file_is_a_nori_io_error(tmp_path):
    (tmp_path / "afile").write_bytes(b"not a directory")
    with pytest.raises(NoriIOError) as info:
        KvStore.open(tmp_path / "afile" / "db")
    assert info.value.errno == errno.ENOTDIR
    assert info.value.filename == str(tmp_path / "afile")
    assert (tmp_path / "afile").read_bytes() == b"not a directory"


def test_compact_tmp_directory_is_left_alone(tmp_path):
    """A directory named like a compaction's temporary file is not norikv's:
    open neither deletes it nor fails on it (a leftover temporary *file* is
    still deleted); a compaction whose snapshot would need that very name
    fails with NoriIOError(EISDIR), removes its own temporary files, does not
    poison the store, and the store goes on."""
    with KvStore.open(tmp_path, fsync_policy=FsyncPolicy.OS) as s:
        for i in range(10):
            s.put(b"k%d" % i, b"v%d" % i)
    waldir = tmp_path / "wal"
    os.mkdir(waldir / "000001.wal.compact-tmp")  # the first id a compaction takes
    (waldir / "000001.wal.compact-tmp" / "inside").write_bytes(b"someone's file")
    os.mkdir(waldir / "other.compact-tmp")
    (waldir / "000009.wal.compact-tmp").write_bytes(b"a leftover")  # ours: deleted
    r = subprocess.run(
        [sys.executable, "-m", "norikv", "info", str(tmp_path), "--json"], capture_output=True, timeout=60
    )
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(r.stdout)["compaction_leftovers"] == ["000009.wal.compact-tmp"]
    with KvStore.open(tmp_path, fsync_policy=FsyncPolicy.OS, auto_compact=False) as s:
        assert len(s) == 10
        assert not (waldir / "000009.wal.compact-tmp").exists()
        with pytest.raises(NoriIOError) as info:
            s.compact()
        assert not isinstance(info.value, WalFailedError)
        assert info.value.errno == errno.EISDIR
        assert info.value.filename == str(waldir / "000001.wal.compact-tmp")
        assert s.stats()["failed"] is None
        assert sorted(n for n in os.listdir(waldir) if n.endswith(".compact-tmp")) == [
            "000001.wal.compact-tmp",
            "other.compact-tmp",
        ]
        s.put(b"after", b"1")
        s.compact()  # the next ids are free: it works
        s.put(b"later", b"2")
    assert (waldir / "000001.wal.compact-tmp" / "inside").read_bytes() == b"someone's file"
    with KvStore.open(tmp_path) as s:
        assert len(s) == 12 and s.get(b"later") == b"2"
