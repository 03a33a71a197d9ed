"""KvStore features: TTL, range/prefix, compression, limits, stats, compaction."""

from __future__ import annotations

import os
import random
import threading

import pytest

from norikv import (
    Compression,
    ConfigError,
    NoriError,
    Record,
    StoreFullError,
    Wal,
    WalConfig,
    _engine,
)
from storeutil import open_store, wal_records

TTL_ABS = 0x40
TTL_FLAG = 0x02


def raw_records(path):
    """(Record, stored size on disk) for every record, decoded from the raw
    segment bytes (the store must be closed)."""
    out = []
    wal_dir = os.path.join(path, "wal")
    for name in sorted(n for n in os.listdir(wal_dir) if n.endswith(".wal")):
        data = open(os.path.join(wal_dir, name), "rb").read()
        off = 0
        while off < len(data):
            rec, size = Record.decode(data, off)
            out.append((rec, size))
            off += size
    return out


class Clock:
    """Moves the TTL clock of norikv (``_engine._set_clock_offset_ms``)."""

    def __init__(self):
        self.offset_ms = 0

    def advance(self, seconds):
        self.offset_ms += int(round(seconds * 1000))
        _engine._set_clock_offset_ms(self.offset_ms)

    def now_ms(self):
        return _engine.now_ms()


@pytest.fixture
def clock():
    c = Clock()
    _engine._set_clock_offset_ms(0)
    yield c
    _engine._set_clock_offset_ms(0)


def assert_invisible(store, key):
    assert store.get(key) is None
    assert store.get(key, b"d") == b"d"
    assert key not in store
    with pytest.raises(KeyError):
        store[key]
    assert key not in store.keys()
    assert key not in list(store)
    assert key not in dict(store.items())
    assert key not in [k for k, _ in store.range()]
    assert key not in [k for k, _ in store.range(reverse=True)]
    assert key not in [k for k, _ in store.prefix(key[:1])]


# ================================================================== TTL


def test_ttl_expiry_hides_key_everywhere(tmp_path, clock):
    store = open_store(tmp_path)
    store.put(b"perm", b"p")
    store.put(b"tmp", b"t", ttl=100)
    assert store[b"tmp"] == b"t" and len(store) == 2
    assert store.stats()["ttl_keys"] == 1
    clock.advance(95)
    assert store.get(b"tmp") == b"t"
    assert [k for k, _ in store.range()] == [b"perm", b"tmp"]
    clock.advance(10)
    assert_invisible(store, b"tmp")
    assert len(store) == 1 and store.keys() == [b"perm"] and store.values() == [b"p"]
    assert store.stats()["keys"] == 1
    assert store.stats()["ttl_keys"] == 0
    assert store.stats()["live_bytes"] == len(b"perm") + len(b"p")
    # deleting an expired key is like deleting an absent one
    assert store.delete(b"tmp") is False
    with pytest.raises(KeyError):
        del store[b"tmp"]
    store.close()


def test_ttl_lookup_before_purge_is_hidden(tmp_path, clock):
    # get/in/[] must hide an expired key even before anything purged it
    store = open_store(tmp_path)
    store.put(b"tmp", b"t", ttl=1)
    clock.advance(2)
    assert store.get(b"tmp") is None
    assert b"tmp" not in store
    with pytest.raises(KeyError):
        store[b"tmp"]
    assert list(store.prefix(b"t")) == []
    store.close()


def test_ttl_is_an_absolute_deadline_on_disk(tmp_path, clock):
    store = open_store(tmp_path)
    before = clock.now_ms()
    store.put(b"k", b"v", ttl=10)
    after = clock.now_ms()
    store.close()
    (rec,) = wal_records(str(tmp_path))
    assert rec.flags & (TTL_FLAG | TTL_ABS) == TTL_FLAG | TTL_ABS
    assert before + 10_000 <= rec.ttl_ms <= after + 10_000 + 1


@pytest.mark.parametrize("crash", [False, True], ids=["close", "drop"])
def test_ttl_survives_reopen(tmp_path, clock, crash):
    """ttl=100 s, reopened 50 s later: the key expires 50 s after the reopen
    (margins of seconds: real time passes too on a busy machine)."""
    store = open_store(tmp_path)
    store.put(b"k", b"v", ttl=100)
    deadline = store._deadline_of(b"k")
    store.put(b"other", b"o")
    if crash:
        del store
    else:
        store.close()
    clock.advance(50)
    store = open_store(tmp_path)
    assert store[b"k"] == b"v"
    assert store._deadline_of(b"k") == deadline
    assert store.stats()["ttl_keys"] == 1
    clock.advance(45)
    assert store[b"k"] == b"v"
    clock.advance(10)
    assert_invisible(store, b"k")
    assert store.keys() == [b"other"]
    store.close()


def test_key_expired_while_closed_is_gone_at_open(tmp_path, clock):
    store = open_store(tmp_path)
    store.put(b"k", b"v", ttl=1)
    store.put(b"k2", b"v2", ttl=100)
    store.close()
    clock.advance(2)
    store = open_store(tmp_path)
    assert store.keys() == [b"k2"] and len(store) == 1
    assert store.stats()["live_bytes"] == 4
    store.close()


def test_overwrite_without_ttl_clears_the_ttl(tmp_path, clock):
    store = open_store(tmp_path)
    store.put(b"k", b"v1", ttl=1)
    store.put(b"k", b"v2")
    store.put(b"j", b"v1")
    store.put(b"j", b"v2", ttl=1)  # and the other way round
    clock.advance(2)
    assert store.get(b"k") == b"v2"
    assert store.get(b"j") is None
    store.close()
    store = open_store(tmp_path)
    assert store.items() == [(b"k", b"v2")]
    store.close()


def test_overwrite_with_longer_ttl_extends(tmp_path, clock):
    store = open_store(tmp_path)
    store.put(b"k", b"v1", ttl=1)
    store.put(b"k", b"v2", ttl=10)
    clock.advance(5)
    assert store.get(b"k") == b"v2"
    assert len(store) == 1
    store.close()
    store = open_store(tmp_path)
    assert store.get(b"k") == b"v2"
    clock.advance(6)
    assert store.get(b"k") is None
    store.close()


def test_ttl_in_batch(tmp_path, clock):
    store = open_store(tmp_path)
    with store.batch() as b:
        b.put(b"short", b"s", ttl=1)
        b.put(b"long", b"l", ttl=100)
        b.put(b"perm", b"p")
    clock.advance(2)
    assert sorted(store.keys()) == [b"long", b"perm"]
    store.close()
    store = open_store(tmp_path)
    assert sorted(store.keys()) == [b"long", b"perm"]
    clock.advance(100)
    assert store.keys() == [b"perm"]
    store.close()


@pytest.mark.parametrize(
    "ttl,exc",
    [
        (0, ValueError),
        (-1, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        (1e20, ValueError),
        ("10", TypeError),
        (True, TypeError),
        (b"1", TypeError),
    ],
)
def test_bad_ttl(tmp_path, ttl, exc):
    store = open_store(tmp_path)
    with pytest.raises(exc):
        store.put(b"k", b"v", ttl=ttl)
    with pytest.raises(exc):
        store.batch().put(b"k", b"v", ttl=ttl)
    assert len(store) == 0 and store.stats()["wal_bytes"] == 0
    store.close()


def test_expired_keys_dropped_at_compaction(tmp_path, clock):
    store = open_store(tmp_path)
    store.put(b"gone", b"g", ttl=1)
    store.put(b"stays", b"s", ttl=100)
    store.put(b"perm", b"p")
    deadline = store._deadline_of(b"stays")
    clock.advance(2)
    store.compact()
    store.close()
    recs = {r.key: r for r in wal_records(str(tmp_path))}
    assert set(recs) == {b"stays", b"perm"}
    # the surviving TTL keeps its absolute deadline through compaction
    assert recs[b"stays"].flags & TTL_ABS and recs[b"stays"].ttl_ms == deadline
    assert not recs[b"perm"].flags & TTL_FLAG
    clock.advance(99)
    store = open_store(tmp_path)
    assert store.keys() == [b"perm"]
    store.close()


def test_expired_keys_do_not_count_against_max_keys(tmp_path, clock):
    store = open_store(tmp_path, max_keys=2)
    store.put(b"a", b"1", ttl=1)
    store.put(b"b", b"2")
    with pytest.raises(StoreFullError):
        store.put(b"c", b"3")
    clock.advance(2)
    store.put(b"c", b"3")
    assert sorted(store.keys()) == [b"b", b"c"]
    store.close()


def test_foreign_relative_ttl_counts_from_first_open(tmp_path, clock):
    """A nori-wal record with ttl_ms but without TTL_ABS is relative: norikv
    counts it from the first open that replays it (docs/FORMAT.md) and pins
    that deadline with an absolute record, so a restart neither starts the
    clock again nor brings the key back once it has expired."""
    wal, _ = Wal.open(WalConfig(dir=str(tmp_path / "wal")))
    wal.append(Record.put_with_ttl(b"foreign", b"f", 100))
    wal.append(Record.put_with_ttl(b"gone", b"g", 10))
    wal.append(Record.put(b"plain", b"p"))
    wal.close()
    (rec, _size) = raw_records(str(tmp_path))[0]
    assert rec.flags & TTL_FLAG and not rec.flags & TTL_ABS and rec.ttl_ms == 100_000

    clock.advance(3600)  # written long ago: a relative TTL has no date
    store = open_store(tmp_path)
    assert store.get(b"foreign") == b"f" and store.get(b"gone") == b"g"
    assert store.stats()["relative_ttl_records"] == 2
    clock.advance(50)
    assert store.get(b"gone") is None
    store.close()
    pinned = {r.key for r, _ in raw_records(str(tmp_path)) if r.flags & TTL_ABS}
    assert pinned == {b"foreign", b"gone"}

    # the next open keeps the first open's clock: 50 s have passed of 100
    store = open_store(tmp_path)
    assert store.get(b"gone") is None  # expired: not brought back
    assert store.get(b"foreign") == b"f"
    assert store.get(b"plain") == b"p"
    clock.advance(45)
    assert store.get(b"foreign") == b"f"
    clock.advance(10)  # 105 s after the first open
    assert store.get(b"foreign") is None
    store.close()
    store = open_store(tmp_path)
    assert store.get(b"foreign") is None and len(store) == 1
    store.compact()  # the relative records are dropped for good
    store.close()
    assert [r.key for r in wal_records(str(tmp_path))] == [b"plain"]
    store = open_store(tmp_path)
    assert store.stats()["relative_ttl_records"] == 0
    store.close()


def model_range(model, start, end, reverse=False):
    keys = sorted(k for k in model if (start is None or k >= start) and (end is None or k < end))
    if reverse:
        keys.reverse()
    return [(k, model[k]) for k in keys]


def test_range_and_prefix_in_byte_order(tmp_path):
    store = open_store(tmp_path)
    keys = [
        b"",
        b"\x00",
        b"\x00\x00",
        b"a",
        b"a\x00",
        b"a\xff",
        b"ab",
        b"b",
        b"\x7f",
        b"\x80",
        b"\xff",
        b"\xff\xff",
        b"\xff\xff\x01",
        b"B",
        b"aa",
    ]
    model = {}
    for i, k in enumerate(reversed(keys)):
        store.put(k, b"v%d" % i)
        model[k] = b"v%d" % i
    assert list(store.range()) == model_range(model, None, None)
    assert list(store.range(reverse=True)) == model_range(model, None, None, True)
    bounds = [None] + sorted(set(keys)) + [b"a\x01", b"zz"]
    for s in bounds:
        for e in bounds:
            for rev in (False, True):
                assert list(store.range(s, e, reverse=rev)) == model_range(model, s, e, rev), (s, e, rev)
    for p in [b"", b"a", b"\x00", b"\xff", b"\xff\xff", b"a\xff", b"zz"]:
        want = [(k, model[k]) for k in sorted(model) if k.startswith(p)]
        assert list(store.prefix(p)) == want, p
        assert list(store.prefix(p, reverse=True)) == want[::-1], p
    store.close()


def test_range_after_many_changes_since_last_range(tmp_path):
    rng = random.Random(7)
    store = open_store(tmp_path)
    model = {}

    def check():
        for _ in range(20):
            a = bytes(rng.randrange(256) for _ in range(rng.randrange(3)))
            b = bytes(rng.randrange(256) for _ in range(rng.randrange(3)))
            s, e = (a, b) if rng.random() < 0.8 else (None, b)
            if rng.random() < 0.2:
                e = None
            rev = rng.random() < 0.5
            assert list(store.range(s, e, reverse=rev)) == model_range(model, s, e, rev)
        assert list(store.range()) == model_range(model, None, None)

    check()  # builds the index on an empty store
    # rounds of few (< 64) and many (bulk update path) changes between ranges
    for n_changes in (10, 3000, 50, 20000, 5, 500):
        for _ in range(n_changes):
            k = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3)))
            if model and rng.random() < 0.3:
                victim = rng.choice(list(model)) if rng.random() < 0.5 else k
                store.delete(victim)
                model.pop(victim, None)
            else:
                store.put(k, b"%d" % n_changes)
                model[k] = b"%d" % n_changes
        check()
    # a batch and a delete-then-reput between ranges
    some = sorted(model)[:10]
    with store.batch() as b:
        for k in some:
            b.delete(k)
    for k in some[:5]:
        store.put(k, b"again")
        model[k] = b"again"
    for k in some[5:]:
        del model[k]
    check()
    store.close()
    store = open_store(tmp_path)
    assert list(store.range()) == model_range(model, None, None)
    store.close()


def test_range_after_more_changes_than_the_index_keeps_track_of(tmp_path):
    # Past a bound (an eighth of the map + 65,536 changes) the store stops
    # recording changes for the range index and rebuilds it at the next range
    # query instead: the answers must not change.
    store = open_store(tmp_path)
    for i in range(1000):
        store.put(b"old:%05d" % i, b"o")
    assert [k for k, _ in store.range(b"old:00010", b"old:00013")] == [b"old:00010", b"old:00011", b"old:00012"]
    for i in range(70_000):
        store.put(b"new:%06d" % i, b"n")
    for i in range(0, 1000, 2):
        store.delete(b"old:%05d" % i)
    assert [k for k, _ in store.range(b"old:00010", b"old:00014")] == [b"old:00011", b"old:00013"]
    assert sum(1 for _ in store.prefix(b"new:")) == 70_000
    store.put(b"new:999999", b"n")
    store.delete(b"old:00011")
    assert [k for k, _ in store.range(b"old:00010", b"old:00014")] == [b"old:00013"]
    assert list(store.range(b"new:999998", b"old:")) == [(b"new:999999", b"n")]
    assert len(list(store.range())) == 500 - 1 + 70_001
    store.close()


def test_range_over_more_than_one_chunk_while_writing(tmp_path):
    store = open_store(tmp_path)
    n = 3000  # more than the 1024-key chunk of a range scan
    for i in range(n):
        store.put(b"k%05d" % i, b"v")
    out = []
    for k, v in store.range(b"k", None):
        out.append((k, v))
        if len(out) == 10:
            store.delete(b"k%05d" % (n - 1))  # not yet yielded: a snapshot still yields it
            store.put(b"k%05d" % 5, b"x")  # already yielded: no repeat
            store.put(b"k%05d" % 2000, b"y")  # ahead: its value at the snapshot
            store.put(b"k%05d" % 2000 + b"+", b"z")  # created since: not yielded
    assert out == [(b"k%05d" % i, b"v") for i in range(n)]
    rev = [k for k, _ in store.range(reverse=True)]
    assert rev == sorted([b"k%05d" % i for i in range(n - 1)] + [b"k02000+"], reverse=True)
    store.close()


def test_range_excludes_expired_and_handles_ttl_purge(tmp_path, clock):
    store = open_store(tmp_path)
    for i in range(100):
        store.put(b"k%03d" % i, b"v", ttl=1 if i % 2 else None)
    assert len(list(store.range())) == 100
    clock.advance(2)
    assert [k for k, _ in store.range()] == [b"k%03d" % i for i in range(0, 100, 2)]
    len(store)  # purges
    assert [k for k, _ in store.prefix(b"k0")] == [b"k%03d" % i for i in range(0, 100, 2)]
    store.close()


# ================================================================== compression


def compressible(n):
    return (b"norikv compresses this value " * (n // 29 + 1))[:n]


@pytest.mark.parametrize("kind", ["lz4", "zstd"])
def test_store_compression(tmp_path, kind):
    store = open_store(tmp_path, compression=kind, compress_min_size=100)
    big = compressible(5000)
    small = compressible(99)
    noisy = random.Random(1).randbytes(5000)  # incompressible: stored raw
    store.put(b"big", big)
    store.put(b"small", small)
    store.put(b"noisy", noisy)
    with store.batch() as b:
        b.put(b"big-batch", big)
    assert store[b"big"] == big and store[b"small"] == small and store[b"noisy"] == noisy
    assert store.stats()["live_bytes"] == sum(len(k) + len(v) for k, v in store.items())
    store.close()
    recs = {r.key: (r, size) for r, size in raw_records(str(tmp_path))}
    want = Compression.LZ4 if kind == "lz4" else Compression.ZSTD
    for key in (b"big", b"big-batch"):
        rec, size = recs[key]
        assert rec.compression == want and rec.value == big
        assert size < len(big) // 5  # really compressed on disk
    assert recs[b"small"][0].compression == Compression.NONE
    assert recs[b"small"][1] > len(small)
    assert recs[b"noisy"][0].compression == Compression.NONE
    assert recs[b"noisy"][1] > len(noisy)
    # reopened without compression configured: values come back decompressed
    store = open_store(tmp_path)
    assert store[b"big"] == big and store[b"big-batch"] == big and store[b"noisy"] == noisy
    assert list(store.range(b"big", b"big\xff")) == [(b"big", big), (b"big-batch", big)]
    store.close()


def test_compress_min_size_zero_and_no_compression(tmp_path):
    store = open_store(tmp_path / "none")
    store.put(b"big", compressible(5000))
    store.close()
    ((rec, size),) = raw_records(str(tmp_path / "none"))
    assert rec.compression == Compression.NONE and size > 5000

    store = open_store(tmp_path / "zero", compression="lz4", compress_min_size=0)
    store.put(b"v", compressible(60))
    store.close()
    ((rec, size),) = raw_records(str(tmp_path / "zero"))
    assert rec.compression == Compression.LZ4 and rec.value == compressible(60)


def test_per_put_compression(tmp_path):
    big = compressible(4000)
    store = open_store(tmp_path, compression="lz4", compress_min_size=100)
    store.put(b"default", big)
    store.put(b"zstd", big, compression="zstd")
    store.put(b"enum", big, compression=Compression.ZSTD)
    with store.batch() as b:
        b.put(b"batch-zstd", big, compression="zstd")
    store.close()
    store = open_store(tmp_path / "plain")
    store.put(b"lz4", big, compression="lz4")
    store.put(b"raw", big)
    with pytest.raises((ValueError, TypeError)):
        store.put(b"bad", big, compression="gzip")
    with pytest.raises((ValueError, TypeError)):
        store.batch().put(b"bad", big, compression="gzip")
    assert b"bad" not in store
    store.close()
    got = {r.key: r.compression for r, _ in raw_records(str(tmp_path))}
    assert got == {
        b"default": Compression.LZ4,
        b"zstd": Compression.ZSTD,
        b"enum": Compression.ZSTD,
        b"batch-zstd": Compression.ZSTD,
    }
    got = {r.key: r.compression for r, _ in raw_records(str(tmp_path / "plain"))}
    assert got == {b"lz4": Compression.LZ4, b"raw": Compression.NONE}
    with open_store(tmp_path) as store:
        assert all(v == big for v in store.values()) and len(store) == 4


def test_compaction_writes_values_compressed(tmp_path):
    big = compressible(3000)
    store = open_store(tmp_path, compression="zstd", compress_min_size=100)
    for i in range(20):
        store.put(b"k%d" % i, big)
        store.put(b"k%d" % i, big + b"!")
    store.compact()
    store.close()
    recs = raw_records(str(tmp_path))
    assert len(recs) == 20
    assert all(r.compression == Compression.ZSTD and size < 1000 for r, size in recs)
    with open_store(tmp_path) as store:
        assert all(v == big + b"!" for v in store.values())


def test_bad_compression_config(tmp_path):
    with pytest.raises((ValueError, TypeError)):
        open_store(tmp_path, compression="brotli")
    with pytest.raises(ConfigError):
        open_store(tmp_path, compression="lz4", compress_min_size=-1)


# ================================================================== limits


def test_max_keys(tmp_path):
    store = open_store(tmp_path, max_keys=3)
    for k in (b"a", b"b", b"c"):
        store.put(k, b"1")
    size = store.stats()["wal_bytes"]
    with pytest.raises(StoreFullError):
        store.put(b"d", b"1")
    with pytest.raises(StoreFullError):
        store[b"d"] = b"1"
    assert isinstance(StoreFullError("x"), NoriError)
    assert sorted(store.keys()) == [b"a", b"b", b"c"]
    assert store.stats()["wal_bytes"] == size
    store.put(b"a", b"overwrite is fine")
    assert store[b"a"] == b"overwrite is fine"
    store.delete(b"b")
    store.put(b"d", b"1")
    assert sorted(store.keys()) == [b"a", b"c", b"d"]
    store.close()
    with open_store(tmp_path, max_keys=3) as store:
        assert sorted(store.keys()) == [b"a", b"c", b"d"]
        with pytest.raises(StoreFullError):
            store.put(b"e", b"1")


def test_max_bytes(tmp_path):
    store = open_store(tmp_path, max_bytes=20)
    store.put(b"a", b"123456789")  # 10
    store.put(b"b", b"12345")  # 16
    size = store.stats()["wal_bytes"]
    with pytest.raises(StoreFullError):
        store.put(b"c", b"1234")  # would be 21
    with pytest.raises(StoreFullError):
        store.put(b"b", b"123456789x")  # overwrite growing past the limit
    assert dict(store.items()) == {b"a": b"123456789", b"b": b"12345"}
    assert store.stats()["wal_bytes"] == size
    assert store.live_bytes == 16
    store.put(b"b", b"123456789")  # overwrite that fits: exactly 20
    assert store.live_bytes == 20
    store.put(b"a", b"1")  # shrinking is always fine
    store.put(b"c", b"12")
    assert store.live_bytes == 2 + 10 + 3
    store.close()


def test_batch_limits_all_or_nothing(tmp_path):
    store = open_store(tmp_path, max_keys=3, max_bytes=100)
    store.put(b"a", b"1")
    store.put(b"b", b"1")
    size = store.stats()["wal_bytes"]
    with pytest.raises(StoreFullError):
        with store.batch() as b:
            b.put(b"c", b"1")
            b.put(b"d", b"1")
    with pytest.raises(StoreFullError):
        with store.batch() as b:
            b.put(b"a", b"x" * 200)
    assert dict(store.items()) == {b"a": b"1", b"b": b"1"}
    assert store.stats()["wal_bytes"] == size
    # net effect within limits: a delete makes room for two new keys
    with store.batch() as b:
        b.delete(b"a")
        b.put(b"c", b"1")
        b.put(b"d", b"1")
    assert sorted(store.keys()) == [b"b", b"c", b"d"]
    store.close()


@pytest.mark.parametrize(
    "kw,exc",
    [
        ({"max_keys": 0}, ConfigError),
        ({"max_keys": -1}, ConfigError),
        ({"max_keys": True}, TypeError),
        ({"max_keys": 1.5}, TypeError),
        ({"max_bytes": 0}, ConfigError),
        ({"max_bytes": "10"}, TypeError),
        ({"compact_dead_ratio": 0}, ConfigError),
        ({"compact_dead_ratio": 1.0}, ConfigError),
        ({"compress_min_size": 1.5}, TypeError),
    ],
)
def test_bad_limits_config(tmp_path, kw, exc):
    with pytest.raises(exc):
        open_store(tmp_path, **kw)


# ================================================================== stats

STATS_FIELDS = {
    "keys",
    "live_bytes",
    "wal_bytes",
    "segments",
    "dead_ratio",
    "recovery_seconds",
    "recovery_records",
    "recovery_corruption_detected",
    "relative_ttl_records",
    "fsyncs",
    "fsync_seconds_total",
    "fsync_seconds_avg",
    "fsync_seconds_max",
    "fsync_gather_seconds_total",
    "unsynced_bytes",
    "compactions",
    "last_compaction",
    "compaction_error",
    "ttl_keys",
    "failed",
}


def segment_files(path):
    return [n for n in os.listdir(os.path.join(path, "wal")) if n.endswith(".wal")]


def test_stats_fields(tmp_path, clock):
    store = open_store(tmp_path)
    st = store.stats()
    assert STATS_FIELDS <= set(st)
    assert st["keys"] == 0 and st["live_bytes"] == 0 and st["wal_bytes"] == 0
    assert st["dead_ratio"] == 0.0 and st["segments"] == 1
    assert st["recovery_records"] == 0 and st["recovery_corruption_detected"] is False
    assert st["fsyncs"] == 0 and st["fsync_seconds_total"] == 0.0 and st["fsync_seconds_avg"] == 0.0
    assert st["compactions"] == 0 and st["last_compaction"] is None
    assert st["compaction_error"] is None and st["failed"] is None and st["ttl_keys"] == 0

    for i in range(10):
        store.put(b"key%d" % i, b"value%d" % i)
    store.put(b"ttl", b"t", ttl=100)
    st = store.stats()
    assert st["keys"] == 11 == len(store)
    assert st["live_bytes"] == sum(len(k) + len(v) for k, v in store.items())
    assert st["wal_bytes"] == store.wal.written_total > st["live_bytes"]
    assert st["unsynced_bytes"] == st["wal_bytes"]  # OS policy: nothing synced yet
    assert st["ttl_keys"] == 1
    assert 0.0 <= st["dead_ratio"] < 0.5  # nothing overwritten yet

    store.sync()
    st = store.stats()
    assert st["fsyncs"] == 1 and st["unsynced_bytes"] == 0
    assert st["fsync_seconds_total"] > 0
    assert st["fsync_seconds_max"] <= st["fsync_seconds_total"]
    assert st["fsync_seconds_avg"] == pytest.approx(st["fsync_seconds_total"] / st["fsyncs"])
    store.sync()  # nothing new: no fsync
    assert store.stats()["fsyncs"] == 1
    assert st["fsync_gather_seconds_total"] == 0.0  # a lone caller never waits for others

    dead_before = st["dead_ratio"]
    for _ in range(10):
        for i in range(10):
            store.put(b"key%d" % i, b"value%d" % i)
    st = store.stats()
    assert st["dead_ratio"] > max(0.8, dead_before)  # 10 of 11 copies are dead
    assert st["keys"] == 11

    result = store.compact()
    st = store.stats()
    assert st["compactions"] == 1
    assert st["last_compaction"] == result
    assert set(result) >= {"seconds", "bytes_before", "bytes_after", "segments_written", "segments_deleted"}
    assert result["bytes_after"] < result["bytes_before"]
    assert st["dead_ratio"] < 0.2
    assert st["segments"] == len(segment_files(tmp_path))
    store.close()

    store = open_store(tmp_path)
    st = store.stats()
    assert st["recovery_records"] == 11
    assert st["recovery_seconds"] >= 0
    assert st["keys"] == 11 and st["compactions"] == 0 and st["ttl_keys"] == 1
    assert st["segments"] == len(segment_files(tmp_path))
    store.close()
    # after close the logical size is the file size
    total = sum(os.path.getsize(tmp_path / "wal" / n) for n in segment_files(tmp_path))
    assert total == st["wal_bytes"]


def test_stats_after_torn_tail(tmp_path):
    store = open_store(tmp_path)
    store.put(b"a", b"1")
    store.put(b"b", b"2")
    store.close()
    seg = tmp_path / "wal" / "000000.wal"
    data = seg.read_bytes()
    seg.write_bytes(data[:-3])
    with open_store(tmp_path) as store:
        st = store.stats()
        assert st["recovery_corruption_detected"] is True
        assert st["recovery_records"] == 1 and st["keys"] == 1


# ================================================================== compaction


def churn(store, model, rng, n, keyspace=300, vsize=(0, 200)):
    for _ in range(n):
        k = b"key-%05d" % rng.randrange(keyspace)
        if rng.random() < 0.2:
            store.delete(k)
            model.pop(k, None)
        else:
            v = rng.randbytes(rng.randrange(*vsize))
            store.put(k, v)
            model[k] = v


def test_compaction_leaves_one_record_per_live_key(tmp_path):
    rng = random.Random(3)
    store = open_store(tmp_path)
    model = {}
    churn(store, model, rng, 5000)
    before = store.stats()["wal_bytes"]
    result = store.compact()
    assert dict(store.items()) == model
    assert result["bytes_before"] == before
    assert result["segments_deleted"] >= 1
    # writes after the compaction come after the snapshot in the log
    churn(store, model, rng, 200)
    store.close()
    keys = [r.key for r in wal_records(str(tmp_path))]
    store = open_store(tmp_path)
    assert dict(store.items()) == model
    store.compact()
    store.close()
    recs = wal_records(str(tmp_path))
    assert sorted(r.key for r in recs) == sorted(model)
    assert not any(r.tombstone for r in recs)
    assert {r.key: r.value for r in recs} == model
    assert len(keys) > len(recs)
    with open_store(tmp_path) as store:
        assert dict(store.items()) == model


def test_compaction_across_several_segments_then_drop(tmp_path):
    rng = random.Random(5)
    store = open_store(tmp_path, max_segment_size=1 << 20)
    model = {}
    churn(store, model, rng, 6000, keyspace=3000, vsize=(500, 1500))
    assert store.stats()["segments"] >= 3
    result = store.compact()
    assert result["segments_written"] >= 2  # the snapshot spans segments
    assert dict(store.items()) == model
    churn(store, model, rng, 500, keyspace=3000, vsize=(500, 1500))
    del store  # drop without close
    store = open_store(tmp_path, max_segment_size=1 << 20)
    assert dict(store.items()) == model
    assert not store.recovery_info.corruption_detected
    store.close()


def test_compact_empty_and_all_deleted(tmp_path):
    store = open_store(tmp_path)
    store.compact()
    assert len(store) == 0
    store.put(b"a", b"1")
    store.delete(b"a")
    store.compact()
    store.close()
    assert wal_records(str(tmp_path)) == []
    with open_store(tmp_path) as store:
        assert len(store) == 0
        store.put(b"b", b"2")
    with open_store(tmp_path) as store:
        assert store.items() == [(b"b", b"2")]


def test_writes_during_compaction_not_lost_or_reordered(tmp_path):
    """A writer thread overwrites keys with increasing counters while the main
    thread compacts; every write survives, the last one wins, also after reopen."""
    store = open_store(tmp_path, max_segment_size=1 << 20)
    base = random.Random(9)
    for i in range(20000):  # enough data that compaction takes a while
        store.put(b"bulk-%05d" % i, base.randbytes(100))
    stop = threading.Event()
    written = [0]
    errors = []
    started = threading.Event()

    def writer():
        try:
            n = 0
            while not stop.is_set():
                n += 1
                store.put(b"w-%03d" % (n % 500), b"%d" % n)
                if n % 7 == 0:
                    store.delete(b"bulk-%05d" % (n % 20000))
                written[0] = n
                started.set()
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            started.set()

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    assert started.wait(60)
    overlapped = 0
    for _ in range(30):
        a = written[0]
        store.compact()
        if written[0] > a:
            overlapped += 1
        if overlapped >= 3:
            break
    stop.set()
    t.join(60)
    assert not t.is_alive() and not errors, errors
    assert overlapped >= 1, "no write ever ran during a compaction"
    n = written[0]
    expected = {}
    for i in range(20000):
        expected[b"bulk-%05d" % i] = True
    for m in range(1, n + 1):
        if m % 7 == 0:
            expected.pop(b"bulk-%05d" % (m % 20000), None)
    last = {}
    for m in range(max(1, n - 2000), n + 1):
        last[b"w-%03d" % (m % 500)] = b"%d" % m

    def check(s):
        for k, v in last.items():
            assert s.get(k) == v, k
        assert {k for k in s.keys() if k.startswith(b"bulk-")} == set(expected)

    check(store)
    state = dict(store.items())
    store.close()
    store = open_store(tmp_path, max_segment_size=1 << 20)
    check(store)
    assert dict(store.items()) == state
    store.close()


def test_auto_compaction_by_dead_ratio(tmp_path):
    store = open_store(tmp_path, compact_min_bytes=1 << 16, compact_dead_ratio=0.5)
    value = b"x" * 100
    for i in range(30000):  # ~3.5 MB of overwrites of 100 keys
        store.put(b"k%03d" % (i % 100), value)
        if store._compactor is not None:
            break
    t = store._compactor
    assert t is not None, "auto-compaction never started"
    t.join(60)
    assert not t.is_alive()
    st = store.stats()
    assert st["compactions"] >= 1 and st["compaction_error"] is None
    assert st["wal_bytes"] < 1 << 20
    assert len(store) == 100
    store.close()
    with open_store(tmp_path) as store:
        assert dict(store.items()) == {b"k%03d" % i: value for i in range(100)}


def test_no_auto_compaction_when_disabled_or_below_ratio(tmp_path):
    store = open_store(tmp_path / "off", compact_min_bytes=1 << 16, auto_compact=False)
    for i in range(20000):
        store.put(b"k%03d" % (i % 100), b"x" * 100)
    assert store._compactor is None and store.stats()["compactions"] == 0
    store.close()
    # all keys distinct: nothing is dead, so no compaction whatever the size
    store = open_store(tmp_path / "live", compact_min_bytes=1 << 16, compact_dead_ratio=0.5)
    for i in range(20000):
        store.put(b"k%05d" % i, b"x" * 100)
    assert store._compactor is None and store.stats()["compactions"] == 0
    store.close()


def test_close_waits_for_background_compaction(tmp_path):
    store = open_store(tmp_path, compact_min_bytes=1 << 16, compact_dead_ratio=0.5)
    for i in range(30000):
        store.put(b"k%03d" % (i % 100), b"y" * 100)
        if store._compactor is not None:
            break
    assert store._compactor is not None
    store.close()  # must join the compactor, not leave it writing
    assert not store._compactor.is_alive()
    with open_store(tmp_path) as store:
        assert dict(store.items()) == {b"k%03d" % i: b"y" * 100 for i in range(100)}


class _Crash(Exception):
    pass


@pytest.mark.parametrize("point", ["writing-snapshot", "after-first-install", "before-deletes", "after-first-delete"])
def test_compaction_interrupted_at_each_step(tmp_path, monkeypatch, point):
    """A compaction that stops at any step (then the process dies) leaves a
    store that reopens with exactly the same data, including the writes made
    after the compaction began. (kill -9 at random instants is in
    test_store_crash.py; this hits each step deterministically.)"""
    import gc

    rng = random.Random(len(point))
    store = open_store(tmp_path, max_segment_size=1 << 20)
    model = {}
    churn(store, model, rng, 5000, keyspace=2500, vsize=(300, 1200))
    assert store.stats()["segments"] >= 3
    wal = store.wal
    real_snapshot = _engine.write_snapshot
    real_install = type(wal)._install_segment
    real_delete = type(wal)._delete_segments
    seen = {"installs": 0, "snapshot_parts": 0}

    def snapshot(*args):
        parts = real_snapshot(*args)
        seen["snapshot_parts"] = len(parts)
        if point == "writing-snapshot":
            # temporary files written, none installed; drop the last one's
            # tail as if the process died while writing it
            path = parts[-1][0]
            os.truncate(path, os.path.getsize(path) // 2)
            raise _Crash
        return parts

    def install(self, tmp, seg, size):
        real_install(self, tmp, seg, size)
        seen["installs"] += 1
        if point == "after-first-install":
            raise _Crash

    def delete(self, ids):
        if point == "before-deletes":
            raise _Crash
        real_delete(self, ids[:1])
        raise _Crash

    monkeypatch.setattr(_engine, "write_snapshot", snapshot)
    monkeypatch.setattr(type(wal), "_install_segment", install)
    monkeypatch.setattr(type(wal), "_delete_segments", delete)
    try:
        store.compact()
    except _Crash:
        pass
    else:
        pytest.fail("the compaction was not interrupted")
    monkeypatch.undo()
    assert seen["snapshot_parts"] >= 2
    # writes go on after the interrupted compaction ...
    assert dict(store.items()) == model
    churn(store, model, rng, 300, keyspace=2500, vsize=(300, 1200))
    # ... and the process dies
    del store, wal
    gc.collect()
    store = open_store(tmp_path, max_segment_size=1 << 20)
    assert dict(store.items()) == model
    assert not [n for n in os.listdir(tmp_path / "wal") if n.endswith(".compact-tmp")]
    # and the store compacts fine afterwards
    store.compact()
    live = len(model)
    churn(store, model, rng, 100, keyspace=2500, vsize=(0, 100))
    store.close()
    with open_store(tmp_path, max_segment_size=1 << 20) as store:
        assert dict(store.items()) == model
    # one record per key live at the compaction, then at most the 100 later
    # writes (a delete of an absent key writes nothing)
    assert live <= len(wal_records(str(tmp_path))) <= live + 100
