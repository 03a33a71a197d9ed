"""Which directory entries are segments (issue 11, point 12; docs/FORMAT.md).

nori-wal takes a name whose extension is ``wal`` and whose stem Rust's
``u64::from_str`` parses, then opens ``format!("{:06}.wal", id)``. norikv
takes exactly the canonical names ``f"{id:06d}.wal"`` for ids 0..2**64-1 and
ignores every other name, so each id has one file and no file is replayed
twice; an entry with a segment's name that is not a regular file refuses the
open (nori-wal fails on it too)."""

from __future__ import annotations

import errno
import itertools
import json
import os
import subprocess
import sys

import pytest

from norikv import FsyncPolicy, KvStore, NoriIOError, Position, Record, Wal, WalConfig, _engine
from norikv.inspect import segment_files as _segment_files

MIB = 1 << 20
U64 = 2**64 - 1


@pytest.mark.parametrize(
    "name,seg",
    [
        ("000000.wal", 0),
        ("000005.wal", 5),
        ("999999.wal", 999999),
        ("1000000.wal", 1000000),
        (f"{U64}.wal", U64),
        (f"{2**63}.wal", 2**63),
        # nori-wal parses these (u64::from_str: leading zeros, '+') but opens the
        # canonical name instead: not segments here
        ("0000005.wal", None),
        ("00000000000000000000001.wal", None),
        ("0000000.wal", None),
        ("+00001.wal", None),
        ("+000001.wal", None),
        ("0000001000000.wal", None),
        # nori-wal rejects these too
        ("99999999999999999999999.wal", None),
        (f"{2**64}.wal", None),
        ("00001.wal", None),
        ("000001.wal.bak", None),
        (" 000001.wal", None),
        ("000001 .wal", None),
        ("000001.wal ", None),
        ("٠٠٠٠٠١.wal", None),
        ("００００01.wal", None),
        ("-00001.wal", None),
        ("000001.WAL", None),
        (".wal", None),
        ("wal", None),
        ("000001", None),
        ("000001..wal", None),
        ("0x0001.wal", None),
        ("000001.wal.compact-tmp", None),
        ("LOCK", None),
        ("00_001.wal", None),
        ("", None),
    ],
)
def test_segment_id_of(name, seg):
    assert _engine.segment_id_of(name) == seg
    if seg is not None:
        assert _engine.segment_name(seg) == name


STRAYS = [
    "0000005.wal",
    "00000000000000000000001.wal",
    "99999999999999999999999.wal",
    "0000000.wal",
    "0000001.wal",
    "000001.wal.bak",
    "+00001.wal",
    "+000001.wal",
    " 000001.wal",
    "000001.wal ",
    "٠٠٠٠٠١.wal",
    "000001.WAL",
    "00001.wal",
    f"{2**64}.wal",
    "-00001.wal",
]


def _big_value() -> bytes:
    """A value whose record fills segment 0 to 5 bytes short of 1 MiB after k0, k1."""
    used = 2 * len(Record.put(b"k0", b"v0").encode())
    n = MIB - used - 5 - 20
    while len(Record.put(b"big", b"x" * n).encode()) < MIB - used - 5:
        n += 1
    return b"x" * n


BIG = _big_value()


def make_log(d) -> None:
    """Segments 0 and 1 holding k0..k3 = v0..v3 (two per segment)."""
    wal, _ = Wal.open(WalConfig(dir=str(d), max_segment_size=MIB, fsync_policy=FsyncPolicy.OS))
    with wal:
        wal.append(Record.put(b"k0", b"v0"))
        wal.append(Record.put(b"k1", b"v1"))
        wal.append(Record.put(b"big", BIG))  # segment 0 is then full
        wal.append(Record.put(b"k2", b"v2"))
        wal.append(Record.put(b"k3", b"v3"))
    assert sorted(os.listdir(d)) == ["000000.wal", "000001.wal", "LOCK"]


def add_strays(d, names=STRAYS) -> dict[str, bytes]:
    """Stray files, each holding a valid record that must never be replayed."""
    out = {}
    for n in names:
        data = Record.put(b"k0", b"STRAY " + n.encode()).encode() + Record.put(b"stray", b"1").encode()
        with open(os.path.join(d, n), "wb") as f:
            f.write(data)
        out[n] = data
    return out


def test_wal_ignores_non_segment_names(tmp_path):
    d = tmp_path / "wal"
    make_log(d)
    strays = add_strays(d)
    assert _engine.list_segments(str(d)) == [0, 1]
    assert _engine.list_segments(os.fsencode(d)) == [0, 1]
    wal, info = Wal.open(WalConfig(dir=str(d), max_segment_size=MIB, fsync_policy=FsyncPolicy.OS))
    with wal:
        assert info.valid_records == 5 and info.segments_scanned == 2
        assert not info.corruption_detected
        keys = [r.key for r, _ in wal.read_from(Position(0, 0))]
        assert keys == [b"k0", b"k1", b"big", b"k2", b"k3"]
        pos = wal.append(Record.put(b"new", b"1"))
        assert pos.segment_id == 1
    for n, data in strays.items():  # untouched
        with open(d / n, "rb") as f:
            assert f.read() == data


def test_store_never_replays_a_file_twice(tmp_path):
    """0000000.wal beside 000000.wal (the same id, a non-canonical name): only
    the canonical one is replayed, once; compaction and reopen leave the
    strays alone and never apply them."""
    make_log(tmp_path / "wal")
    add_strays(tmp_path / "wal")
    with open(tmp_path / "wal" / "000000.wal", "rb") as f:
        seg0 = f.read()
    with open(tmp_path / "wal" / "0000000.wal", "wb") as f:  # an exact copy: replaying it would count twice
        f.write(seg0)
    with KvStore.open(tmp_path, fsync_policy=FsyncPolicy.OS, auto_compact=False) as s:
        assert s.recovery_info.valid_records == 5
        assert s.stats()["recovery_records"] == 5
        assert s.get(b"k0") == b"v0" and b"stray" not in s
        s.put(b"k1", b"changed")
        s.compact()
    names = set(os.listdir(tmp_path / "wal"))
    assert set(STRAYS) <= names
    with KvStore.open(tmp_path, fsync_policy=FsyncPolicy.OS) as s:
        assert dict(s.items()) == {b"k0": b"v0", b"k1": b"changed", b"big": BIG, b"k2": b"v2", b"k3": b"v3"}


def test_highest_u64_id_is_a_segment_and_never_wraps(tmp_path):
    """18446744073709551615.wal is the last possible segment: it is read after
    the others, and a rotation or compaction past it raises instead of
    wrapping to id 0 (which would be replayed first)."""
    d = tmp_path / "wal"
    make_log(d)
    with open(d / f"{U64}.wal", "wb") as f:
        f.write(Record.put(b"last", b"1").encode())
    with open(d / f"{U64 - 1}.wal", "wb") as f:
        f.write(Record.put(b"before-last", b"1").encode())
    cfg = WalConfig(dir=str(d), max_segment_size=MIB, fsync_policy=FsyncPolicy.OS)
    wal, info = Wal.open(cfg)
    with wal:
        assert info.last_valid_position.segment_id == U64
        # bounded: an iterator that wrapped to segment 0 would never end
        got = [(r.key, p.segment_id) for r, p in itertools.islice(wal.read_from(Position(0, 0)), 100)]
        assert got[-2:] == [(b"before-last", U64 - 1), (b"last", U64)] and len(got) == 7
        wal.append(Record.put(b"fits", b"y" * 1000))
        with pytest.raises(NoriIOError) as info_exc:
            wal.append(Record.put(b"rotates", b"z" * MIB))
        assert info_exc.value.errno == errno.EFBIG
        wal.append(Record.put(b"still", b"ok"))  # not poisoned
    assert _engine.list_segments(str(d)) == [0, 1, U64 - 1, U64]  # nothing wrapped to id 0 or 2
    with KvStore.open(tmp_path, fsync_policy=FsyncPolicy.OS, auto_compact=False) as s:
        assert s.get(b"still") == b"ok" and b"rotates" not in s
        with pytest.raises(NoriIOError):
            s.compact()
        s.put(b"after", b"1")
    with KvStore.open(tmp_path) as s:
        assert s.get(b"after") == b"1" and s.get(b"k3") == b"v3"


@pytest.mark.parametrize("name", ["000001.wal", "000007.wal"])
def test_directory_with_a_segment_name_refuses_open(tmp_path, name):
    d = tmp_path / "wal"
    make_log(d)
    os.mkdir(d / ("0" + name))  # a non-canonical name: ignored
    assert _engine.list_segments(str(d)) == [0, 1]
    (d / name).unlink(missing_ok=True)
    os.mkdir(d / name)
    before = sorted(os.listdir(d))
    with pytest.raises(NoriIOError) as info:
        Wal.open(WalConfig(dir=str(d), max_segment_size=MIB))
    assert info.value.errno == errno.EISDIR
    assert info.value.filename == str(d / name)
    assert "directory" in str(info.value)
    assert sorted(os.listdir(d)) == before
    os.rmdir(d / name)
    wal, _ = Wal.open(WalConfig(dir=str(d), max_segment_size=MIB))  # the lock was released
    wal.close()


def test_fifo_with_a_segment_name_does_not_hang(tmp_path):
    """A FIFO named like a segment would block an open() for reading forever."""
    d = tmp_path / "wal"
    make_log(d)
    os.mkfifo(d / "000002.wal")
    code = (
        "import sys\nfrom norikv import Wal, WalConfig, NoriIOError\n"
        "try:\n    Wal.open(WalConfig(dir=sys.argv[1], max_segment_size=1 << 20))\n"
        "except NoriIOError as e:\n    print(e.errno, e.filename)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(d)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(errno.EINVAL), str(d / "000002.wal")]


def test_symlink_to_a_segment_is_followed(tmp_path):
    d = tmp_path / "wal"
    make_log(d)
    os.rename(d / "000001.wal", tmp_path / "elsewhere.wal")
    os.symlink(tmp_path / "elsewhere.wal", d / "000001.wal")
    wal, info = Wal.open(WalConfig(dir=str(d), max_segment_size=MIB))
    with wal:
        assert info.valid_records == 5


def test_cli_lists_the_same_segments(tmp_path):
    """The CLI's segment listing is list_segments: the strays are not shown,
    read or counted."""
    make_log(tmp_path / "wal")
    add_strays(tmp_path / "wal")
    waldir = str(tmp_path / "wal")
    assert [s for s, _ in _segment_files(waldir)] == [0, 1]
    r = subprocess.run(
        [sys.executable, "-m", "norikv", "info", str(tmp_path), "--json"], capture_output=True, timeout=60
    )
    assert r.returncode == 0, r.stderr.decode()
    info = json.loads(r.stdout)
    assert info["segment_files"] == ["000000.wal", "000001.wal"]
    assert info["keys"] == 5 and info["recovery_records"] == 5
