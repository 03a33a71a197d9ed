"""values="disk": what only a store that reads its values from the log does.

Everything both modes share (durability, batches, TTL, ranges, limits,
recovery, compaction's crash safety, threads, fork, the CLI) runs in both
modes through conftest's BOTH_VALUE_MODES; here are the reads from the
mapped segments, damage found after the open, the relocation done by
compaction, and the two modes reading each other's logs."""

import os
import random
import threading

import pytest

from norikv import ConfigError, CorruptionError, FsyncPolicy, KvStore, RecoveryMode, inspect
from storeutil import run_in_thread

MIB = 1 << 20


def open_disk(path, **kw):
    kw.setdefault("fsync_policy", FsyncPolicy.OS)
    return KvStore.open(path, values="disk", **kw)


def record_of(path, key):
    """The last LogRecord of key in the store at path."""
    found = [r for r in inspect.records(path) if isinstance(r, inspect.LogRecord) and r.key == key]
    assert found, key
    return found[-1]


def test_values_option_is_checked_before_the_directory_is_made(tmp_path):
    with pytest.raises(ConfigError, match="values must be one of 'memory', 'disk'"):
        KvStore.open(tmp_path / "a", values="ram")
    with pytest.raises(TypeError, match="values must be a str"):
        KvStore.open(tmp_path / "b", values=1)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_values_are_read_from_the_log(tmp_path):
    with open_disk(tmp_path) as s:
        s.put(b"a", b"1" * 1000)
        s.put(b"b", b"2")
        st = s.stats()
        assert st["values"] == "disk" and s.value_storage == "disk"
        assert st["keydir_bytes"] > 0
        reads = st["value_reads"]
        assert s.get(b"a") == b"1" * 1000  # a fresh key object
        assert s[b"b"] == b"2"
        assert s.stats()["value_reads"] == reads + 2
        assert b"a" in s and b"zz" not in s
        assert s.stats()["value_reads"] == reads + 2  # `in` reads no value
    with KvStore.open(tmp_path, fsync_policy=FsyncPolicy.OS, values="memory") as s:
        st = s.stats()
        assert st["values"] == "memory" and st["keydir_bytes"] is None and st["value_reads"] is None


def test_each_mode_reads_the_other_modes_log(tmp_path):
    with open_disk(tmp_path, compression="lz4", compress_min_size=10) as s:
        for i in range(500):
            s.put(b"k%d" % i, b"v%d" % i * 40, ttl=3600 if i % 7 == 0 else None)
        s.delete(b"k3")
    with KvStore.open(tmp_path, fsync_policy=FsyncPolicy.OS, values="memory") as m:
        want = dict(m.items())
        assert len(want) == 499 and want[b"k10"] == b"v10" * 40
        m.put(b"from-memory", b"x")
        want[b"from-memory"] = b"x"
    with open_disk(tmp_path) as s:
        assert dict(s.items()) == want
        assert s.stats()["ttl_keys"] == 72


def test_a_value_damaged_after_the_open_raises_naming_file_and_offset(tmp_path):
    with open_disk(tmp_path) as s:
        s.put(b"good", b"g" * 100)
        s.put(b"bad", b"b" * 100)
        s.sync()
        rec = record_of(tmp_path, b"bad")
        path = os.path.join(tmp_path, "wal", "%06d.wal" % rec.segment)
        fd = os.open(path, os.O_WRONLY)
        try:  # one byte of the value, in the file under the open store
            os.pwrite(fd, b"X", rec.offset + rec.size - 4 - 10)
        finally:
            os.close(fd)
        with pytest.raises(CorruptionError) as info:
            s.get(b"bad")
        assert info.value.path == path and info.value.offset == rec.offset
        assert info.value.segment_id == rec.segment
        assert s.get(b"good") == b"g" * 100  # the rest reads on
        s.put(b"bad", b"fixed")  # and a new record replaces the damaged one
        assert s.get(b"bad") == b"fixed"


def _tag(key):
    return (hash(key) & ((1 << 64) - 1)) >> 32  # the key directory's tag: the hash's high 32 bits


def _two_keys_sharing_a_tag():
    rnd = random.Random(5)
    seen = {}
    while True:
        key = rnd.randbytes(16)
        other = seen.setdefault(_tag(key), key)
        if other != key:
            return other, key


def test_keys_sharing_a_hash_tag_are_told_apart_by_their_records(tmp_path):
    """get finds a key by its tag alone and checks the key in the record the
    slot points at; a record of another key with the same tag (1 in 2^32 per
    slot) sends it to the full lookup, which also reports a damaged key's
    record, naming file and offset."""
    first, second = _two_keys_sharing_a_tag()
    with open_disk(tmp_path) as s:
        s.put(first, b"1" * 50)
        s.put(second, b"2" * 60)  # probed after first's slot: the same home
        assert (s.get(first), s.get(second)) == (b"1" * 50, b"2" * 60)
        assert s.delete(first)
        assert s.get(first) is None and s.get(first, b"default") == b"default"
        assert s.get(second) == b"2" * 60
        s.put(first, b"back")  # now after second's slot
        assert (s.get(first), s.get(second)) == (b"back", b"2" * 60)
        s.sync()
        rec = record_of(tmp_path, second)
        path = os.path.join(tmp_path, "wal", "%06d.wal" % rec.segment)
        with open(path, "r+b") as f:  # the last byte of the key, under the open store
            f.seek(rec.offset + rec.size - 4 - 60 - 1)
            assert f.read(1) == second[-1:]
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([second[-1] ^ 1]))
        with pytest.raises(CorruptionError, match="CRC32C mismatch") as info:
            s.get(second)
        assert info.value.path == path and info.value.offset == rec.offset
        assert s.get(first) == b"back"


def test_a_store_agrees_with_a_dict_through_its_key_directorys_growths_in_steps(tmp_path):
    """120,000 new keys take the key directory through two growths in steps
    (from 78,895 and 118,342 slots; include/keydir.h), while some keys sit in
    the old slots and some in the new: after every put, the key just put and
    a key put long before read back right; keys are replaced and deleted
    along the way; then every key reads back, after a reopen too."""
    rnd = random.Random(7)
    model = {}
    order = []
    with open_disk(tmp_path, auto_compact=False) as s:
        sizes = set()
        for i in range(120_000):
            key = rnd.randbytes(12) + i.to_bytes(4, "big")
            value = i.to_bytes(4, "big") * 3
            s.put(key, value)
            model[key] = value
            order.append(key)
            old = order[rnd.randrange(len(order))]
            assert s.get(key) == value and s.get(old) == model.get(old)
            if i % 7 == 0:
                s.put(old, b"again")
                model[old] = b"again"
            if i % 11 == 0 and old in model:
                assert s.delete(old)
                del model[old]
            sizes.add(s.stats()["keydir_bytes"])
        assert len(s) == len(model)
        assert all(s.get(k) == v for k, v in model.items())
        assert len(sizes) > 20  # (the directory grew all along)
    with open_disk(tmp_path) as s:
        assert len(s) == len(model) and all(s.get(k) == v for k, v in model.items())


def test_a_record_larger_than_a_segment_is_read_back(tmp_path):
    big = os.urandom(3 * MIB + 5)
    with open_disk(tmp_path, max_segment_size=MIB) as s:
        s.put(b"small", b"s")
        s.put(b"big", big)
        s.put(b"after", b"a" * 1000)
        assert s.get(b"big") == big and s.get(b"after") == b"a" * 1000
        assert s.get(b"small") == b"s"
    with open_disk(tmp_path, max_segment_size=MIB) as s:
        assert s.get(b"big") == big and s.get(b"after") == b"a" * 1000


def test_compaction_moves_every_key_and_reclaims_the_log(tmp_path):
    with open_disk(tmp_path, max_segment_size=MIB, auto_compact=False, compression="zstd") as s:
        want = {}
        for rnd in range(6):
            for i in range(2000):
                v = b"%d-%d" % (rnd, i) * 30
                s.put(b"k%05d" % i, v, ttl=3600 if i % 100 == 0 else None)
                want[b"k%05d" % i] = v
        for i in range(0, 2000, 3):
            s.delete(b"k%05d" % i)
            del want[b"k%05d" % i]
        before = s.stats()["wal_bytes"]
        old_segments = {r.segment for r in inspect.records(tmp_path) if isinstance(r, inspect.LogRecord)}
        result = s.compact()
        assert result["bytes_after"] < before / 3
        new_segments = {r.segment for r in inspect.records(tmp_path) if isinstance(r, inspect.LogRecord)}
        assert not old_segments & new_segments  # every value now comes from the snapshot
        assert dict(s.items()) == want
        s.put(b"new", b"n")
        want[b"new"] = b"n"
    with open_disk(tmp_path) as s:
        assert dict(s.items()) == want


def test_reads_and_writes_go_on_during_a_compaction(tmp_path):
    with open_disk(tmp_path, max_segment_size=MIB, auto_compact=False) as s:
        for rnd in range(3):
            for i in range(3000):
                s.put(b"k%05d" % i, b"%d" % rnd * 200)
        stop = threading.Event()
        problems = []

        def reader():
            n = 0
            while not stop.is_set() or n < 3000:
                k = b"k%05d" % (n % 3000)
                v = s.get(k)
                if v is None or v.strip(b"0123456789") != b"" or len(v) != 200:
                    problems.append((k, v))
                n += 1

        t, box = run_in_thread(reader)
        writes = {}
        compactor, cbox = run_in_thread(s.compact)
        i = 0
        while compactor.is_alive() or i < 1000:
            k = b"k%05d" % (i % 3000)
            s.put(k, b"9" * 200)
            writes[k] = b"9" * 200
            i += 1
        compactor.join()
        stop.set()
        t.join()
        assert "error" not in cbox and "error" not in box, (cbox, box)
        assert problems == []
        for k, v in writes.items():
            assert s.get(k) == v
        expected = {b"k%05d" % i: writes.get(b"k%05d" % i, b"2" * 200) for i in range(3000)}
        assert dict(s.items()) == expected
    with open_disk(tmp_path) as s:
        assert dict(s.items()) == expected


def test_skip_mode_rewrite_moves_the_records_it_keeps(tmp_path):
    with open_disk(tmp_path, max_segment_size=MIB) as s:
        for i in range(300):
            s.put(b"k%03d" % i, b"v%03d" % i * 20)
    rec = record_of(tmp_path, b"k100")
    path = os.path.join(tmp_path, "wal", "%06d.wal" % rec.segment)
    with open(path, "r+b") as f:
        f.seek(rec.offset + rec.size - 2)
        f.write(b"\xff\xfe")  # its CRC no longer matches
    with open_disk(tmp_path, recovery_mode=RecoveryMode.SKIP_ANY_CORRUPTED_RECORDS) as s:
        assert s.recovery_info.spans_skipped == 1
        assert s.get(b"k100") is None
        assert all(s.get(b"k%03d" % i) == b"v%03d" % i * 20 for i in range(300) if i != 100)


def test_a_closed_store_refuses_reads_after_unmapping(tmp_path):
    s = open_disk(tmp_path)
    s.put(b"a", b"1")
    s.close()
    from norikv import ClosedError

    for call in (lambda: s.get(b"a"), lambda: s[b"a"], lambda: b"a" in s, s.items, lambda: list(s.range())):
        with pytest.raises(ClosedError):
            call()


def test_a_large_value_is_checked_while_copied_without_the_gil(tmp_path):
    big = os.urandom(MIB + 3)  # over the 64 KiB threshold: checked and copied with the GIL released
    with open_disk(tmp_path) as s:
        s.put(b"big", big)
        s.put(b"big2", big[::-1], compression="lz4")
        assert s.get(b"big") == big and s.get(b"big2") == big[::-1]
        s.sync()
        rec = record_of(tmp_path, b"big")
        path = os.path.join(tmp_path, "wal", "%06d.wal" % rec.segment)
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, b"\x00\x01", rec.offset + rec.size // 2)
        finally:
            os.close(fd)
        with pytest.raises(CorruptionError) as info:
            s.get(b"big")
        assert info.value.offset == rec.offset
        assert s.get(b"big2") == big[::-1]


def test_large_values_read_by_threads_while_compaction_unmaps(tmp_path):
    """Reads copying with the GIL released pin the mappings: a compaction
    that drops the old segments (and close()) waits for them."""
    vals = {b"v%d" % i: os.urandom(200_000 + i) for i in range(12)}
    with open_disk(tmp_path, max_segment_size=MIB, auto_compact=False) as s:
        for _ in range(3):
            for k, v in vals.items():
                s.put(k, v)
        stop = threading.Event()
        bad = []

        def reader():
            while not stop.is_set():
                for k, v in vals.items():
                    if s.get(k) != v:
                        bad.append(k)

        threads = [run_in_thread(reader) for _ in range(2)]
        for _ in range(3):
            s.compact()
        stop.set()
        for t, box in threads:
            t.join()
            assert "error" not in box, box
        assert bad == []
