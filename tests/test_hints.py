"""Hint files: the key directory of a sealed segment, for values="disk" opens.

A hint is optional: a store opened from hints holds exactly what a scan of
the same log gives, and a hint that is missing, damaged, stale or not about
its segment is ignored (the segment is scanned). The segments stay nori-wal's:
the independent decoder of tests/spec_codec.py reads a directory with hints."""

import os
import shutil
from dataclasses import replace

import pytest

from norikv import FsyncPolicy, KvStore, _engine, inspect
from spec_codec import decode as spec_decode
from spec_codec import encode as spec_encode
from spec_codec import read_dir as spec_read_dir

MIB = 1 << 20


def fill(path, n=12000, **kw):
    """A disk store over several 1 MiB segments with deletes, TTLs, batches
    and compressed values; returns its contents."""
    with KvStore.open(
        path, values="disk", max_segment_size=MIB, fsync_policy=FsyncPolicy.OS, auto_compact=False, **kw
    ) as s:
        for i in range(n):
            s.put(b"k%06d" % i, b"%d" % i * 80, ttl=3600 if i % 13 == 0 else None)
            if i % 97 == 0:
                s.put(b"z%06d" % i, b"z" * 2000, compression="zstd")
            if i % 11 == 0:
                s.delete(b"k%06d" % (i // 2))
            if i % 500 == 0:
                with s.batch() as b:
                    b.put(b"b%06d" % i, b"batch")
                    b.delete(b"k%06d" % (i - 1))
        want = dict(s.items())
    return want


def wait_for_hints(path):
    """Writes the hints of every sealed segment lacking one (what the store's
    background writer does after each seal), in this thread."""
    with KvStore.open(path, values="disk", max_segment_size=MIB) as s:
        s._write_hints()


def hints(path):
    return sorted(n for n in os.listdir(os.path.join(path, "wal")) if n.endswith(".hint"))


def open_disk(path):
    return KvStore.open(path, values="disk", max_segment_size=MIB)


def test_an_open_from_hints_equals_an_open_that_scans(tmp_path):
    want = fill(tmp_path)
    wait_for_hints(tmp_path)
    segs = sorted(n for n in os.listdir(tmp_path / "wal") if n.endswith(".wal"))
    assert len(hints(tmp_path)) >= len(segs) - 1 >= 3
    with open_disk(tmp_path) as s:
        st = s.stats()
        assert st["recovery_hint_segments"] >= len(segs) - 1
        assert dict(s.items()) == want
        assert st["live_bytes"] == sum(len(k) + len(v) for k, v in want.items())
        assert st["ttl_keys"] == sum(1 for k in want if k.startswith(b"k") and int(k[1:]) % 13 == 0)
    for name in hints(tmp_path):
        os.unlink(tmp_path / "wal" / name)
    with open_disk(tmp_path) as s:
        assert s.stats()["recovery_hint_segments"] == 0
        assert dict(s.items()) == want
    with KvStore.open(tmp_path) as m:  # memory mode never reads hints
        assert dict(m.items()) == want


@pytest.mark.parametrize("damage", ["flip-entry", "truncate", "empty", "other-segment", "segment-grew", "segment-tail"])
def test_a_bad_or_stale_hint_is_ignored(tmp_path, damage):
    want = fill(tmp_path)
    wait_for_hints(tmp_path)
    wal = tmp_path / "wal"
    first, second = hints(tmp_path)[:2]
    h = wal / first
    data = bytearray(h.read_bytes())
    seg = wal / (first[:-5] + ".wal")
    if damage == "flip-entry":
        data[len(data) // 2] ^= 0x40
        h.write_bytes(data)
    elif damage == "truncate":
        h.write_bytes(data[: len(data) - 9])
    elif damage == "empty":
        h.write_bytes(b"")
    elif damage == "other-segment":
        shutil.copy(wal / second, h)  # a valid hint of another segment
    elif damage == "segment-grew":
        # the segment was appended to after its hint (as the last segment is
        # after a reopen): a zero tail, which a scan reads as a clean end
        with open(seg, "ab") as f:
            f.write(b"\0" * 100)
    elif damage == "segment-tail":
        # same size, other bytes at the end: the last record rewritten as a
        # valid record of another key of the same length
        last = [r for r in inspect.records(seg) if isinstance(r, inspect.LogRecord)][-1]
        with open(seg, "r+b") as f:
            f.seek(last.offset)
            rec, _ = spec_decode(f.read(last.size))
            other = replace(rec, key=rec.key.replace(b"k", b"q").replace(b"z", b"q").replace(b"b", b"q"))
            f.seek(last.offset)
            f.write(spec_encode(other))
        if not rec.tombstone and want.get(rec.key) == rec.value and rec.ttl_ms is None:
            del want[rec.key]
            want[other.key] = rec.value
    with open_disk(tmp_path) as s:
        hinted = s.stats()["recovery_hint_segments"]
        assert dict(s.items()) == want
    n_hints = len(hints(tmp_path))
    if damage != "segment-tail":
        assert hinted == n_hints - 1  # all but the bad one


def test_hints_follow_compaction_and_are_removed_with_their_segments(tmp_path):
    want = fill(tmp_path)
    wait_for_hints(tmp_path)
    before = set(hints(tmp_path))
    with open_disk(tmp_path) as s:
        s.compact()
        s._write_hints()  # (what its background writer starts after a compaction)
    after = set(hints(tmp_path))
    assert after and not before & after  # the old segments' hints went with them
    segs = {n[:-4] for n in os.listdir(tmp_path / "wal") if n.endswith(".wal")}
    assert {n[:-5] for n in after} <= segs
    with open_disk(tmp_path) as s:
        assert s.stats()["recovery_hint_segments"] >= 1
        assert dict(s.items()) == want


def test_a_leftover_temporary_hint_is_removed_and_changes_nothing(tmp_path):
    want = fill(tmp_path, n=6000)
    wait_for_hints(tmp_path)
    first = hints(tmp_path)[0]
    (tmp_path / "wal" / (first + "-tmp")).write_bytes(b"half a hint")
    with open_disk(tmp_path) as s:
        assert dict(s.items()) == want
        s.put(b"x", b"x" * 300_000)  # seals a segment: the hint writer runs
        s.put(b"y", b"y" * 900_000)
    assert not [n for n in os.listdir(tmp_path / "wal") if n.endswith("-tmp")]


def test_write_hint_refuses_a_damaged_segment(tmp_path):
    fill(tmp_path, n=6000)
    wal = tmp_path / "wal"
    seg = sorted(n for n in os.listdir(wal) if n.endswith(".wal"))[0]
    (wal / (seg[:-4] + ".hint")).unlink(missing_ok=True)
    with open(wal / seg, "r+b") as f:
        f.seek(5000)
        f.write(b"\xde\xad\xbe\xef")
    assert _engine.write_hint(str(wal), int(seg[:-4])) is False
    assert not (wal / (seg[:-4] + ".hint")).exists()


def test_write_hint_refuses_a_segment_with_a_value_bomb(tmp_path):
    """A compressed value whose CRC holds but which does not decompress
    within max_value_size is damage: the recovery scan stops there, so no
    hint may list the records after it."""
    from test_value_damage import bomb_record, put

    wal = tmp_path / "wal"
    wal.mkdir()
    (wal / "000000.wal").write_bytes(put(b"a") + bomb_record("zstd-no-size") + put(b"b"))
    (wal / "000001.wal").write_bytes(put(b"a") + put(b"c", b"x" * 5000))
    assert _engine.write_hint(str(wal), 0, 1 << 20) is False
    assert not (wal / "000000.hint").exists()
    assert _engine.write_hint(str(wal), 1, 1 << 20) is True


def test_a_hint_is_written_without_holding_the_gil(tmp_path):
    """A store's hint writer scans each segment it seals (128 MiB by
    default) in a thread of its own; a scan that held the GIL stalled the
    store's writer for as long. Here the scan runs in a thread while this
    one holds the GIL (a spin in C): the scan must end meanwhile, and the
    hint be the one an open uses."""
    import threading

    from conftest import wait_for

    opts = dict(values="memory", max_segment_size=64 * MIB, fsync_policy=FsyncPolicy.OS, auto_compact=False)
    with KvStore.open(tmp_path, **opts) as s:  # (memory: no hint writer of its own)
        value = b"v" * 80
        for i in range(400_000):  # ~40 MB in segment 0: a scan of tens of ms
            s.put(b"k%07d" % i, value)
    wal = str(tmp_path / "wal")
    caught = 0
    for _ in range(5):
        (tmp_path / "wal" / "000000.hint").unlink(missing_ok=True)
        began, ended, _ = _engine._test_hint_scans()
        done = []
        t = threading.Thread(target=lambda done=done: done.append(_engine.write_hint(wal, 0)))
        t.start()
        assert wait_for(lambda began=began: _engine._test_hint_scans()[0] > began)
        _, ended_at_spin, ended_after = _engine._test_hint_scans(hold_gil=30, past=ended)
        t.join()
        assert done == [True]
        assert ended_after == ended + 1, "the hint scan did not end while another thread held the GIL"
        caught += ended_at_spin == ended  # it was under way when the spin began
    # Never seen under way from here: a scan that holds the GIL throughout
    # (or a machine too fast for a scan of 40 MB).
    assert caught, "no other thread ran while the hint scan was under way"
    with KvStore.open(tmp_path, values="disk", fsync_policy=FsyncPolicy.OS) as s:
        assert s.stats()["recovery_hint_segments"] == 1
        assert len(s) == 400_000 and s.get(b"k0399999") == b"v" * 80


def test_the_segments_stay_nori_wals(tmp_path):
    """The directory with hints reads, by the independent decoder of the
    format, as the same records as norikv's own reader sees: hint files are
    not segments (nori-wal lists only NNNNNN.wal)."""
    fill(tmp_path, n=6000)
    wait_for_hints(tmp_path)
    assert hints(tmp_path)
    ours = [
        (r.segment, r.offset, r.key, r.tombstone) for r in inspect.records(tmp_path) if isinstance(r, inspect.LogRecord)
    ]
    theirs = [(seg, off, rec.key, rec.tombstone) for seg, off, rec in spec_read_dir(str(tmp_path / "wal"))]
    assert ours == theirs


def test_an_open_from_hints_holds_no_more_slots_than_one_that_scans(tmp_path):
    """Hint files reserve slots for all their entries up front (a key
    written in every segment counts once per segment); the open then gives
    back what the duplicates left unused, so the key directory ends up the
    size a scan grows it to."""
    with KvStore.open(tmp_path, values="disk", max_segment_size=MIB, auto_compact=False) as s:
        for n in range(20):
            for i in range(2000):
                s.put(b"k%05d" % i, b"%02d" % n * 50)
    wait_for_hints(tmp_path)
    assert len(hints(tmp_path)) >= 4
    with open_disk(tmp_path) as s:
        assert s.stats()["recovery_hint_segments"] == len(hints(tmp_path))
        from_hints = s.stats()["keydir_bytes"]
        want = dict(s.items())
    for name in hints(tmp_path):
        os.remove(tmp_path / "wal" / name)
    with open_disk(tmp_path) as s:
        assert s.stats()["recovery_hint_segments"] == 0
        scanned = s.stats()["keydir_bytes"]
        assert dict(s.items()) == want and len(want) == 2000
    assert from_hints <= scanned * 1.3, (from_hints, scanned)


def _replay_with_a_loader(path):
    """The key directory's figures after a values="disk" replay of the log at
    `path` (what KvStore.open runs, without the open's fit() after it)."""
    from norikv.wal import RecoveryMode, plan_recovery

    waldir = str(path / "wal")
    loader = _engine._DiskLoader(_engine._KeyDir(), _engine._SegmentViews(waldir, MIB), 0)
    plan_recovery(waldir, RecoveryMode.TOLERATE_CORRUPTED_TAIL, loader)
    return loader.kd._stats(), len(loader.kd)


def distinct_keys(path, n=50000):
    """n distinct keys over 4 segments or more."""
    with KvStore.open(path, values="disk", max_segment_size=MIB, auto_compact=False) as s:
        for i in range(n):
            s.put(b"key-%08d" % i, b"v" * 60)


def test_an_open_from_hints_builds_the_slots_once(tmp_path):
    """Before the first segment, the replay makes room for every entry the
    hints announce: one table of slots of the final size. A directory grown
    hint by hint rebuilt its slots each time it outgrew them (a reopen of 2M
    keys from 15 hints spent a third of its time there)."""
    distinct_keys(tmp_path)
    wait_for_hints(tmp_path)
    assert len(hints(tmp_path)) >= 3
    stats, n = _replay_with_a_loader(tmp_path)
    assert n == 50000
    assert stats["resizes"] <= 2, stats  # (one more for the active segment's keys: it has no hint)
    for name in hints(tmp_path):
        os.remove(tmp_path / "wal" / name)
    stats, n = _replay_with_a_loader(tmp_path)  # a scan grows the slots as it goes
    assert n == 50000 and stats["resizes"] > 3, stats


def test_a_hint_header_announcing_too_many_entries_reserves_what_its_file_can_hold(tmp_path):
    """The count in a hint's header is read before its CRC is checked: it is
    bounded by the bytes of the hint and of its segment, so a damaged header
    cannot make an open allocate for entries that cannot be there."""
    distinct_keys(tmp_path)
    wait_for_hints(tmp_path)
    first = tmp_path / "wal" / hints(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[24:32] = (50_000_000).to_bytes(8, "little")  # the header's entry count
    first.write_bytes(data)
    stats, n = _replay_with_a_loader(tmp_path)
    assert n == 50000
    hint_bytes = sum(os.path.getsize(tmp_path / "wal" / h) for h in hints(tmp_path))
    assert stats["slots"] * 4 <= 5 * (50000 + hint_bytes // 3) + 64, stats  # (not 50M entries)
    with open_disk(tmp_path) as s:
        assert s.stats()["recovery_hint_segments"] == len(hints(tmp_path)) - 1  # (its CRC fails: scanned)
        assert len(s) == 50000 and s[b"key-%08d" % 49999] == b"v" * 60


def test_a_fifo_in_place_of_a_hint_is_no_hint(tmp_path):
    """A FIFO named like a hint (opening one for reading waits for a writer)
    counts as no hint: the open scans that segment instead of hanging, and
    the store's hint writer replaces it with the segment's hint. Run in a
    child with a timeout, so that a regression fails instead of hanging."""
    import subprocess
    import sys

    distinct_keys(tmp_path)
    wait_for_hints(tmp_path)
    first = tmp_path / "wal" / hints(tmp_path)[0]
    first.unlink()
    os.mkfifo(first)
    code = (
        "import sys\n"
        "from norikv import KvStore\n"
        "with KvStore.open(sys.argv[1], values='disk', max_segment_size=1 << 20) as s:\n"
        "    print(len(s), s.stats()['recovery_hint_segments'])\n"
        "    s._write_hints()\n"
    )
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["50000", str(len(hints(tmp_path)) - 1)]
    assert first.is_file()  # (rewritten: a regular file again)
    with open_disk(tmp_path) as s:
        assert s.stats()["recovery_hint_segments"] == len(hints(tmp_path)) and len(s) == 50000
