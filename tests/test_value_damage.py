"""A record whose CRC holds but whose compressed value does not decompress
within max_value_size (a decompression bomb) is a damaged record at its
offset (issue #11, point 2): every recovery mode treats it as damage, never
as a torn tail, the CorruptionError names file, segment and offset, and
``norikv verify`` agrees with KvStore.open because both run the same
recovery plan (norikv.wal.plan_recovery).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import lz4.block
import pytest

import spec_codec as spec
from norikv import CorruptionError, FsyncPolicy, KvStore, RecoveryMode, Wal, WalConfig
from norikv.wal import plan_recovery
from test_compression import rle_frame

LIMIT = 1 << 20  # max_value_size of these stores: keeps the bombs cheap
CONT = 0x20  # the atomic batch continuation flag
END = 0x80  # the flag of the last record of an atomic batch

BOMBS = {
    # a frame claiming 4 GiB (refused from its header)
    "zstd-claims-4GiB": (spec.ZSTD, rle_frame(1 << 20, claim=4 << 30)),
    # no content size, as a streaming encoder writes: inflates past the bound
    "zstd-no-size": (spec.ZSTD, rle_frame(2 * LIMIT)),
    # an LZ4 length prefix of 1 TiB
    "lz4-claims-1TiB": (spec.LZ4, spec.put_varint(1 << 40) + lz4.block.compress(b"x" * 1000, store_size=False)),
}


def bomb_record(name: str, key: bytes = b"bomb", flags: int = 0) -> bytes:
    kind, stored = BOMBS[name]
    return spec.encode(spec.SpecRecord(key, b"", compression=kind, reserved=flags), stored=stored)


def put(key: bytes, value: bytes = b"v", flags: int = 0) -> bytes:
    return spec.encode(spec.SpecRecord(key, value, reserved=flags))


def fingerprint(root: Path) -> dict[str, str]:
    """Every file but the LOCK and SHM files an open creates (the processes'
    lock and shared state, not data), with its hash."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ("LOCK", "SHM")
    }


def make_store(root: Path, bomb: str, where: str) -> dict[str, object]:
    """Segments 000000.wal (a0..a3) and 000001.wal (b0..b3); the bomb goes
    after a1 (where="middle": damage before the last segment) or after b1
    (where="last"). Returns what the tests need to know."""
    waldir = root / "wal"
    waldir.mkdir(parents=True)
    segs = [[put(b"a%d" % i) for i in range(4)], [put(b"b%d" % i) for i in range(4)]]
    seg = 0 if where == "middle" else 1
    segs[seg].insert(2, bomb_record(bomb))
    for i, recs in enumerate(segs):
        (waldir / f"00000{i}.wal").write_bytes(b"".join(recs))
    offset = len(segs[seg][0]) + len(segs[seg][1])
    before = {b"a0", b"a1"} if seg == 0 else {b"a0", b"a1", b"a2", b"a3", b"b0", b"b1"}
    return dict(
        seg=seg,
        offset=offset,
        path=str(waldir / f"00000{seg}.wal"),
        before=before,
        all={b"a0", b"a1", b"a2", b"a3", b"b0", b"b1", b"b2", b"b3"},
        bomb_len=len(segs[seg][2]),
        seg_bytes=b"".join(segs[seg]),
    )


def open_store(root: Path, mode: RecoveryMode, **kw: object) -> KvStore:
    return KvStore.open(root, recovery_mode=mode, max_value_size=LIMIT, fsync_policy=FsyncPolicy.OS, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("where", ["middle", "last"])
@pytest.mark.parametrize("bomb", list(BOMBS))
def test_refusing_modes_name_the_record_and_change_nothing(tmp_path, bomb, where):
    st = make_store(tmp_path / "s", bomb, where)
    before = fingerprint(tmp_path / "s")
    for mode in (RecoveryMode.TOLERATE_CORRUPTED_TAIL, RecoveryMode.ABSOLUTE_CONSISTENCY):
        with pytest.raises(CorruptionError) as ei:
            open_store(tmp_path / "s", mode)
        e = ei.value
        assert (e.path, e.segment_id, e.offset) == (st["path"], st["seg"], st["offset"]), e
        assert st["path"] in str(e) and f"offset {st['offset']}" in str(e)
        assert fingerprint(tmp_path / "s") == before
        # plan_recovery (what verify runs) refuses with the same error, lock-free
        with pytest.raises(CorruptionError) as ei2:
            plan_recovery(tmp_path / "s" / "wal", mode, max_value_size=LIMIT)
        assert (ei2.value.path, ei2.value.segment_id, ei2.value.offset) == (e.path, e.segment_id, e.offset)
        # the plain Wal's recovery checks values too
        with pytest.raises(CorruptionError) as ei3:
            Wal.open(
                WalConfig(
                    dir=str(tmp_path / "s" / "wal"),
                    recovery_mode=mode,
                    max_value_size=LIMIT,
                    fsync_policy=FsyncPolicy.OS,
                )
            )
        assert (ei3.value.segment_id, ei3.value.offset) == (st["seg"], st["offset"])
        assert fingerprint(tmp_path / "s") == before


@pytest.mark.parametrize("where", ["middle", "last"])
@pytest.mark.parametrize("bomb", list(BOMBS))
def test_point_in_time_cuts_the_log_at_the_record(tmp_path, bomb, where):
    st = make_store(tmp_path / "s", bomb, where)
    plan = plan_recovery(tmp_path / "s" / "wal", RecoveryMode.POINT_IN_TIME, max_value_size=LIMIT)
    with open_store(tmp_path / "s", RecoveryMode.POINT_IN_TIME) as s:
        assert set(s.keys()) == st["before"]
        info = s.recovery_info
        assert info.corruption_detected and info.valid_records == len(st["before"])
        assert info.segments_removed == (1 if where == "middle" else 0)
    assert Path(st["path"]).stat().st_size == st["offset"]
    names = [p.name for p in sorted((tmp_path / "s" / "wal").glob("*.wal"))]
    assert names == (["000000.wal"] if where == "middle" else ["000000.wal", "000001.wal"])
    assert plan.valid_records == info.valid_records and plan.segments_removed == info.segments_removed
    with open_store(tmp_path / "s", RecoveryMode.ABSOLUTE_CONSISTENCY) as s:  # clean now
        assert set(s.keys()) == st["before"]


@pytest.mark.parametrize("where", ["middle", "last"])
@pytest.mark.parametrize("bomb", list(BOMBS))
def test_skip_mode_skips_exactly_that_record(tmp_path, bomb, where):
    st = make_store(tmp_path / "s", bomb, where)
    with open_store(tmp_path / "s", RecoveryMode.SKIP_ANY_CORRUPTED_RECORDS) as s:
        assert set(s.keys()) == st["all"]
        info = s.recovery_info
        assert info.corruption_detected and info.spans_skipped == 1 and info.valid_records == 8
        s.put(b"later", b"x")
    # The segment was rewritten without exactly the record's bytes.
    data = Path(st["path"]).read_bytes()
    if where == "middle":
        want = st["seg_bytes"][: st["offset"]] + st["seg_bytes"][st["offset"] + st["bomb_len"] :]
        assert data == want
    else:
        assert data.startswith(st["seg_bytes"][: st["offset"]] + st["seg_bytes"][st["offset"] + st["bomb_len"] :])
    with open_store(tmp_path / "s", RecoveryMode.ABSOLUTE_CONSISTENCY) as s:
        assert set(s.keys()) == st["all"] | {b"later"}


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_skip_mode_on_a_plain_wal(tmp_path, bomb):
    st = make_store(tmp_path / "s", bomb, "middle")
    cfg = WalConfig(
        dir=str(tmp_path / "s" / "wal"),
        max_value_size=LIMIT,
        fsync_policy=FsyncPolicy.OS,
        recovery_mode=RecoveryMode.SKIP_ANY_CORRUPTED_RECORDS,
    )
    wal, info = Wal.open(cfg)
    with wal:
        from norikv import Position

        keys = [r.key for r, _ in wal.read_from(Position(0, 0))]
    assert set(keys) == st["all"] and info.spans_skipped == 1


@pytest.mark.parametrize("cont", [True, False], ids=["bomb-continues-batch", "bomb-ends-batch"])
def test_skip_mode_drops_the_whole_batch_of_the_record(tmp_path, cont):
    """A damaged record inside an atomic batch takes the whole batch with it
    (the records before it, and after it while the batch goes on); every
    other record is kept."""
    waldir = tmp_path / "s" / "wal"
    waldir.mkdir(parents=True)
    batch = [put(b"x1", flags=CONT), put(b"x2", flags=CONT), bomb_record("zstd-no-size", flags=CONT if cont else END)]
    if cont:
        batch += [put(b"x4", flags=CONT), put(b"x5", flags=END)]
    data = put(b"before") + b"".join(batch) + put(b"after")
    (waldir / "000000.wal").write_bytes(data)
    with open_store(tmp_path / "s", RecoveryMode.SKIP_ANY_CORRUPTED_RECORDS) as s:
        assert sorted(s.keys()) == [b"after", b"before"]
    assert (waldir / "000000.wal").read_bytes() == put(b"before") + put(b"after")
    # POINT_IN_TIME: cut at the batch's start (its records before the damage go too)
    (waldir / "000000.wal").write_bytes(data)
    with open_store(tmp_path / "s", RecoveryMode.POINT_IN_TIME) as s:
        assert s.keys() == [b"before"]
    assert (waldir / "000000.wal").read_bytes() == put(b"before")


def test_default_bound_bomb_in_a_store(tmp_path):
    """With the default max_value_size, a stream inflating one byte past it."""
    from norikv.compression import DEFAULT_MAX_VALUE_SIZE

    waldir = tmp_path / "s" / "wal"
    waldir.mkdir(parents=True)
    rec = spec.encode(
        spec.SpecRecord(b"bomb", b"", compression=spec.ZSTD), stored=rle_frame(DEFAULT_MAX_VALUE_SIZE + 1)
    )
    (waldir / "000000.wal").write_bytes(put(b"a") + rec + put(b"b"))
    with pytest.raises(CorruptionError, match="max_value_size") as ei:
        KvStore.open(tmp_path / "s")
    assert (ei.value.segment_id, ei.value.offset) == (0, len(put(b"a")))


# ---------------------------------------------------------------- norikv verify / info / repair


def run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "norikv"] + [str(a) for a in args], capture_output=True, timeout=120)


@pytest.mark.parametrize("where", ["middle", "last"])
@pytest.mark.parametrize("bomb", list(BOMBS))
def test_verify_reports_the_record_an_open_refuses(tmp_path, bomb, where):
    st = make_store(tmp_path / "s", bomb, where)
    before = fingerprint(tmp_path / "s")
    r = run("verify", tmp_path / "s", "--max-value-size", LIMIT)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert err.count("\n") == 1 and st["path"] in err and f"offset {st['offset']}" in err, err
    assert "refuses" in err
    out = r.stdout.decode()
    assert f"0000{st['seg']:02d}.wal: DAMAGED at offset {st['offset']}" in out, out
    rep = json.loads(run("verify", tmp_path / "s", "--max-value-size", LIMIT, "--json").stdout)
    assert not rep["clean"]
    (dmg,) = rep["segments"][st["seg"]]["damage"]
    assert dmg["offset"] == st["offset"] and dmg["bad_spans"] == [[st["offset"], st["offset"] + st["bomb_len"]]]
    # info (the same plan, with the store's replay) refuses as the open does
    r = run("info", tmp_path / "s", "--max-value-size", LIMIT)
    assert r.returncode == 3 and b"corrupt store" in r.stderr and f"offset {st['offset']}".encode() in r.stderr
    assert fingerprint(tmp_path / "s") == before
    # repair in SKIP mode removes exactly that record; verify is then clean
    r = run("repair", tmp_path / "s", "--mode", "skip_any_corrupted_records", "--max-value-size", LIMIT)
    assert r.returncode == 0, r.stderr
    assert run("verify", tmp_path / "s", "--max-value-size", LIMIT).returncode == 0
    with open_store(tmp_path / "s", RecoveryMode.ABSOLUTE_CONSISTENCY) as s:
        assert set(s.keys()) == st["all"]


def test_verify_uses_the_default_bound(tmp_path):
    """Without --max-value-size, verify judges values as a default open does:
    a 2 MiB value is fine, the same claim over 256 MiB is damage."""
    waldir = tmp_path / "s" / "wal"
    waldir.mkdir(parents=True)
    ok_rec = spec.encode(spec.SpecRecord(b"big", b"", compression=spec.ZSTD), stored=rle_frame(2 << 20))
    (waldir / "000000.wal").write_bytes(put(b"a") + ok_rec)
    assert run("verify", tmp_path / "s").returncode == 0
    r = run("verify", tmp_path / "s", "--max-value-size", 1 << 20)
    assert r.returncode == 1 and b"max_value_size" in r.stderr
    assert run("verify", tmp_path / "s", "--max-value-size", 0).returncode == 2
