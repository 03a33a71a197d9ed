"""KvStore: the recipe's three tests, the mapping API, argument types,
directory layout and write batches."""

from __future__ import annotations

import os
import random

import pytest

from norikv import (
    ClosedError,
    FsyncPolicy,
    KvStore,
    Wal,
    WalConfig,
    WriteBatch,
)
from storeutil import open_store, wal_entries


def active_segment(store):
    """(path, logical size) of the store's active segment."""
    return os.path.join(store.wal.dir, "%06d.wal" % store.wal.seg_id), store.wal.seg_size


# "Drop without close" (the recipe's crash simulation) is ``del store``: in
# norikv a KvStore dropped without close() is freed by reference counting and
# its Wal then only unmaps and closes its descriptors. Nothing is synced, the
# preallocated zero tail of the active segment stays (no truncation) and the
# directory lock is released: the files are left as a killed process leaves them.


# ------------------------------------------------------------------ the recipe


def test_basic_operations(tmp_path):
    store = open_store(tmp_path)
    store.put(b"key1", b"value1")
    assert store.get(b"key1") == b"value1"
    store.put(b"key1", b"value2")
    assert store.get(b"key1") == b"value2"
    store.delete(b"key1")
    assert store.get(b"key1") is None
    store.close()


def test_recovery_after_drop_without_close(tmp_path):
    store = KvStore.open(tmp_path)
    store.put(b"key1", b"value1")
    store.put(b"key2", b"value2")
    store.sync()
    active, logical = active_segment(store)
    del store  # drop without close
    # Really a crash: the active segment still has its preallocated tail.
    assert os.path.getsize(active) > logical

    store = KvStore.open(tmp_path)
    assert store.get(b"key1") == b"value1"
    assert store.get(b"key2") == b"value2"
    assert len(store) == 2
    # A zero preallocated tail is a clean end, not corruption.
    assert store.recovery_info.corruption_detected is False
    assert store.recovery_info.bytes_truncated == 0
    assert store.recovery_info.valid_records == 2
    store.close()


def test_drop_right_after_a_large_sync_reopens_at_once(tmp_path):
    # A sync() of 32 KiB or more wakes the background thread to re-arm the
    # pages ahead, and it then lingers in C (flusher.pyx): a store dropped
    # meanwhile is still freed, its lock released, for the reopen below.
    store = KvStore.open(tmp_path, fsync_policy=FsyncPolicy.OS)
    for i in range(1000):
        store.put(b"k%04d" % i, b"v" * 100)
    store.sync()
    del store  # drop without close
    store = KvStore.open(tmp_path, fsync_policy=FsyncPolicy.OS)
    assert len(store) == 1000 and store.get(b"k0999") == b"v" * 100
    store.close()


def test_recovery_without_sync_after_drop(tmp_path):
    # A returned put is in the page cache: it survives the process without sync().
    store = open_store(tmp_path)
    for i in range(100):
        store.put(b"k%03d" % i, b"v%d" % i)
    del store  # drop without close
    store = open_store(tmp_path)
    assert dict(store.items()) == {b"k%03d" % i: b"v%d" % i for i in range(100)}
    store.close()


def test_delete_recovery(tmp_path):
    store = KvStore.open(tmp_path)
    store.put(b"key1", b"value1")
    store.delete(b"key1")
    store.sync()
    del store  # drop without close
    store = KvStore.open(tmp_path)
    assert store.get(b"key1") is None
    assert len(store) == 0
    assert store.is_empty()
    store.close()


def test_recovery_after_clean_close_and_repeated_crashes(tmp_path):
    store = open_store(tmp_path)
    store.put(b"a", b"1")
    store.close()
    expected = {b"a": b"1"}
    for round_ in range(4):
        store = open_store(tmp_path)
        assert dict(store.items()) == expected
        assert not store.recovery_info.corruption_detected
        store.put(b"r%d" % round_, b"x" * round_)
        store.delete(b"a")
        expected.pop(b"a", None)
        expected[b"r%d" % round_] = b"x" * round_
        del store  # drop without close
    store = open_store(tmp_path)
    assert dict(store.items()) == expected
    store.close()


# ------------------------------------------------------------------ mapping API


def test_mapping_api(tmp_path):
    with open_store(tmp_path) as store:
        assert store.is_empty() and len(store) == 0
        store[b"b"] = b"2"
        store[b"a"] = b"1"
        store.put(b"c", b"3")
        assert store[b"a"] == b"1"
        assert b"a" in store and b"zz" not in store
        assert len(store) == 3 and not store.is_empty()
        # insertion order, like a dict
        assert list(store) == [b"b", b"a", b"c"]
        assert store.keys() == [b"b", b"a", b"c"]
        assert store.values() == [b"2", b"1", b"3"]
        assert store.items() == [(b"b", b"2"), (b"a", b"1"), (b"c", b"3")]
        assert store.get(b"zz") is None
        assert store.get(b"zz", b"dflt") == b"dflt"
        sentinel = object()
        assert store.get(b"zz", sentinel) is sentinel
        with pytest.raises(KeyError):
            store[b"zz"]
        del store[b"b"]
        assert b"b" not in store and len(store) == 2
        with pytest.raises(KeyError):
            del store[b"b"]
        assert store.delete(b"a") is True
        assert store.delete(b"a") is False
        assert store.items() == [(b"c", b"3")]


def test_empty_key_and_value(tmp_path):
    store = open_store(tmp_path)
    store.put(b"", b"")
    store.put(b"k", b"")
    assert store.get(b"") == b"" and store[b"k"] == b""
    assert len(store) == 2
    store.close()
    store = open_store(tmp_path)
    assert dict(store.items()) == {b"": b"", b"k": b""}
    store.close()


def test_iteration_is_a_snapshot(tmp_path):
    store = open_store(tmp_path)
    for i in range(10):
        store.put(b"k%d" % i, b"v")
    seen = []
    for k in store:  # writing while iterating must not raise
        seen.append(k)
        store.put(k + b"-new", b"w")
        store.delete(k)
    assert seen == [b"k%d" % i for i in range(10)]
    assert sorted(store.keys()) == sorted(b"k%d-new" % i for i in range(10))
    store.close()


def test_context_manager_and_close_idempotent(tmp_path):
    with open_store(tmp_path) as store:
        store.put(b"k", b"v")
        assert not store.closed
    assert store.closed
    store.close()
    store.close()
    # the lock was released: the directory opens again
    with open_store(tmp_path) as again:
        assert again[b"k"] == b"v"


def test_context_manager_closes_on_exception(tmp_path):
    with pytest.raises(RuntimeError):
        with open_store(tmp_path) as store:
            store.put(b"k", b"v")
            raise RuntimeError("boom")
    assert store.closed
    with open_store(tmp_path) as again:
        assert again[b"k"] == b"v"


@pytest.mark.parametrize(
    "op",
    [
        lambda s: s.get(b"k"),
        lambda s: s[b"k"],
        lambda s: s.put(b"k", b"v"),
        lambda s: s.__setitem__(b"k", b"v"),
        lambda s: s.delete(b"k"),
        lambda s: s.__delitem__(b"k"),
        lambda s: b"k" in s,
        lambda s: len(s),
        lambda s: list(s),
        lambda s: s.keys(),
        lambda s: s.values(),
        lambda s: s.items(),
        lambda s: s.is_empty(),
        lambda s: list(s.range()),
        lambda s: list(s.prefix(b"k")),
        lambda s: s.batch(),
        lambda s: s.sync(),
        lambda s: s.compact(),
        lambda s: s.stats(),
    ],
    ids=[
        "get",
        "getitem",
        "put",
        "setitem",
        "delete",
        "delitem",
        "contains",
        "len",
        "iter",
        "keys",
        "values",
        "items",
        "is_empty",
        "range",
        "prefix",
        "batch",
        "sync",
        "compact",
        "stats",
    ],
)
def test_use_after_close_raises_closed_error(tmp_path, op):
    store = open_store(tmp_path)
    store.put(b"k", b"v")
    store.close()
    with pytest.raises(ClosedError):
        op(store)


def test_batch_opened_before_close_cannot_write_after(tmp_path):
    store = open_store(tmp_path)
    b = store.batch()
    b.put(b"k", b"v")
    store.close()
    with pytest.raises(ClosedError):
        b.write()
    with open_store(tmp_path) as again:
        assert b"k" not in again


def test_second_open_of_same_directory_is_refused(tmp_path):
    from norikv import LockError

    with open_store(tmp_path):
        with pytest.raises(LockError):
            open_store(tmp_path)


def test_repr(tmp_path):
    store = open_store(tmp_path)
    store.put(b"k", b"v")
    assert "1 keys" in repr(store)
    store.close()
    assert "closed" in repr(store)


# ------------------------------------------------------------------ argument types


@pytest.mark.parametrize("make", [bytes, bytearray, memoryview], ids=["bytes", "bytearray", "memoryview"])
def test_bytes_like_keys_and_values(tmp_path, make):
    store = open_store(tmp_path)
    store.put(make(b"key"), make(b"value"))
    store[make(b"key2")] = make(b"value2")
    assert store.get(make(b"key")) == b"value"
    assert store[make(b"key2")] == b"value2"
    assert make(b"key") in store
    # stored as bytes (a copy): mutating the caller's buffer changes nothing
    ba = bytearray(b"mutable")
    store.put(b"m", ba)
    ba[:] = b"changed"
    assert store[b"m"] == b"mutable"
    for k in store.keys():
        assert type(k) is bytes
    for v in store.values():
        assert type(v) is bytes
    assert store.delete(make(b"key")) is True
    del store[make(b"key2")]
    assert len(store) == 1
    with store.batch() as b:
        b.put(make(b"bk"), make(b"bv"))
        b.delete(make(b"m"))
    assert store.items() == [(b"bk", b"bv")]
    assert list(store.range(make(b"a"), make(b"z"))) == [(b"bk", b"bv")]
    assert list(store.prefix(make(b"b"))) == [(b"bk", b"bv")]
    store.close()


def test_memoryview_slice_is_stored_by_content(tmp_path):
    store = open_store(tmp_path)
    buf = memoryview(b"0123456789")
    store.put(buf[2:5], buf[5:])
    assert store[b"234"] == b"56789"
    store.close()


@pytest.mark.parametrize("bad", ["text", 1, None, 1.5, [1, 2]], ids=["str", "int", "None", "float", "list"])
def test_wrong_types_raise_type_error_saying_what_to_pass(tmp_path, bad):
    store = open_store(tmp_path)
    calls = [
        ("key", lambda: store.put(bad, b"v")),
        ("value", lambda: store.put(b"k", bad)),
        ("key", lambda: store.get(bad)),
        ("key", lambda: store[bad]),
        ("key", lambda: store.__setitem__(bad, b"v")),
        ("value", lambda: store.__setitem__(b"k", bad)),
        ("key", lambda: store.delete(bad)),
        ("key", lambda: store.__delitem__(bad)),
        ("key", lambda: bad in store),
        ("key", lambda: store.batch().put(bad, b"v")),
        ("value", lambda: store.batch().put(b"k", bad)),
        ("key", lambda: store.batch().delete(bad)),
    ]
    for what, call in calls:
        with pytest.raises(TypeError) as info:
            call()
        msg = str(info.value)
        assert what in msg and "bytes" in msg, msg
    if isinstance(bad, str):
        with pytest.raises(TypeError, match=r"encode"):
            store.put(bad, b"v")
    # nothing was written
    assert len(store) == 0
    assert store.stats()["wal_bytes"] == 0
    store.close()


def test_wrong_range_bound_types(tmp_path):
    store = open_store(tmp_path)
    with pytest.raises(TypeError, match="bytes"):
        store.range("a", None)
    with pytest.raises(TypeError, match="bytes"):
        store.range(None, 5)
    with pytest.raises(TypeError, match="bytes"):
        store.prefix("p")
    store.close()


# ------------------------------------------------------------------ get/put call shapes
# get and put are METH_FASTCALL entries (src/norikv/_fastcall.pxi) that take
# the common shape themselves and forward every other one to the general def.


def test_get_and_put_are_fastcall_method_descriptors():
    import inspect

    for name in ("get", "put"):
        method = inspect.getattr_static(KvStore, name)
        assert type(method).__name__ == "method_descriptor", name
    assert str(inspect.signature(KvStore.get)) == "(self, /, key, default=None)"
    assert str(inspect.signature(KvStore.put)) == "(self, /, key, value, *, ttl=None, compression=None)"
    assert "WAL first" in KvStore.put.__doc__


def test_get_and_put_every_call_shape(tmp_path):
    store = open_store(tmp_path)
    store.put(b"a", b"1")  # the entry's own shape
    store.put(key=b"b", value=b"2")  # keywords: forwarded
    store.put(b"c", value=b"3")
    store.put(bytearray(b"d"), memoryview(b"4"))  # bytes-like: forwarded
    store.put(b"e", b"5", ttl=60)
    store.put(b"f", b"6" * 100, compression="lz4")
    assert store.get(b"a") == b"1"
    assert store.get(key=b"b") == b"2"
    assert store.get(b"c", default=b"x") == b"3"
    assert store.get(bytearray(b"d")) == b"4"
    assert store.get(b"e") == b"5"  # TTL store: general path
    assert store.get(b"f") == b"6" * 100
    assert store.get(b"missing") is None
    assert store.get(b"missing", b"dflt") == b"dflt"
    assert store.get(b"missing", default=0) == 0
    store.close()
    store = open_store(tmp_path)
    assert {k: store[k] for k in store} == {
        b"a": b"1",
        b"b": b"2",
        b"c": b"3",
        b"d": b"4",
        b"e": b"5",
        b"f": b"6" * 100,
    }
    store.close()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s: s.get(), r"get\(\) takes at least 1 positional argument"),
        (lambda s: s.get(b"k", None, None), r"get\(\) takes at most 2 positional arguments"),
        (lambda s: s.get(b"k", nope=1), r"get\(\) got an unexpected keyword argument 'nope'"),
        (lambda s: s.put(b"k"), r"put\(\) takes exactly 2 positional arguments"),
        (lambda s: s.put(b"k", b"v", 60), r"put\(\) takes exactly 2 positional arguments"),
        (lambda s: s.put(*[b"x"] * 20), r"put\(\) takes exactly 2 positional arguments"),
        (lambda s: s.put(b"k", b"v", **{f"k{i}": 1 for i in range(20)}), r"put\(\) got an unexpected keyword argument"),
        (lambda s: s.put(b"k", None), "value must be bytes"),
        (lambda s: s.get("k"), "key must be bytes"),
    ],
)
def test_get_and_put_wrong_calls_raise_type_error_naming_the_method(tmp_path, call, message):
    store = open_store(tmp_path)
    with pytest.raises(TypeError, match=message):
        call(store)
    assert len(store) == 0 and store.stats()["wal_bytes"] == 0
    store.close()


# ------------------------------------------------------------------ delete of an absent key


def test_delete_absent_key_writes_no_tombstone(tmp_path):
    store = open_store(tmp_path)
    store.put(b"present", b"v")
    before = store.stats()["wal_bytes"]
    written = store.wal.written_total
    assert store.delete(b"absent") is False
    with pytest.raises(KeyError):
        del store[b"absent"]
    assert store.stats()["wal_bytes"] == before
    assert store.wal.written_total == written
    # deleting twice writes one tombstone
    assert store.delete(b"present") is True
    after_one = store.stats()["wal_bytes"]
    assert after_one > before
    assert store.delete(b"present") is False
    assert store.stats()["wal_bytes"] == after_one
    store.close()
    recs = wal_entries(str(tmp_path))
    assert [(r.key, r.tombstone) for r, _ in recs] == [(b"present", False), (b"present", True)]


# ------------------------------------------------------------------ layout / nori-wal reader


def test_wal_lives_in_path_wal_and_a_wal_reader_reads_it(tmp_path):
    store = open_store(tmp_path)
    store.put(b"user:1", b"alice")
    store.put(b"user:2", b"Bob")
    store.put(b"user:1", b"Alicia")
    store.delete(b"user:2")
    store.close()
    assert sorted(os.listdir(tmp_path)) == ["wal"]
    assert "000000.wal" in os.listdir(tmp_path / "wal")
    recs = wal_entries(str(tmp_path))
    assert [(r.key, r.value, r.tombstone) for r, _ in recs] == [
        (b"user:1", b"alice", False),
        (b"user:2", b"Bob", False),
        (b"user:1", b"Alicia", False),
        (b"user:2", b"", True),
    ]
    # plain records: no norikv extension flags on non-batch, non-TTL puts
    assert all(r.flags & 0xE0 == 0 for r, _ in recs)
    # the first record is byte for byte nori-wal's encoding (FORMAT.md vector)
    with open(tmp_path / "wal" / "000000.wal", "rb") as f:
        head = f.read(18)
    assert head.hex() == "060500757365723a31616c6963652516ede1"


def test_store_reads_a_wal_written_by_the_wal_api(tmp_path):
    from norikv import Record

    wal, _ = Wal.open(WalConfig(dir=str(tmp_path / "wal")))
    wal.append(Record.put(b"a", b"1"))
    wal.append(Record.put(b"b", b"2"))
    wal.append(Record.put(b"c", b"3").with_compression("lz4"))
    wal.append(Record.put(b"v", b"4").with_version(3, 9))
    wal.append(Record.delete(b"a"))
    wal.close()
    with open_store(tmp_path) as store:
        assert dict(store.items()) == {b"b": b"2", b"c": b"3", b"v": b"4"}
        assert store.stats()["recovery_records"] == 5


# ------------------------------------------------------------------ write batches


def test_batch_applies_all(tmp_path):
    store = open_store(tmp_path)
    store.put(b"gone", b"x")
    with store.batch() as b:
        assert isinstance(b, WriteBatch)
        b.put(b"a", b"1")
        b.put(b"b", b"2")
        b.delete(b"gone")
        b.put(b"a", b"1bis")  # later op on the same key wins
        assert len(b) == 4
        # nothing visible before the block ends
        assert b"a" not in store and b"gone" in store
    assert dict(store.items()) == {b"a": b"1bis", b"b": b"2"}
    store.close()
    with open_store(tmp_path) as store:
        assert dict(store.items()) == {b"a": b"1bis", b"b": b"2"}


def test_batch_discarded_on_exception(tmp_path):
    store = open_store(tmp_path)
    store.put(b"keep", b"1")
    size = store.stats()["wal_bytes"]
    with pytest.raises(ValueError):
        with store.batch() as b:
            b.put(b"a", b"1")
            b.delete(b"keep")
            raise ValueError("abort")
    assert store.items() == [(b"keep", b"1")]
    assert store.stats()["wal_bytes"] == size
    with pytest.raises(ClosedError):
        b.put(b"x", b"y")  # a discarded batch cannot be reused
    store.close()
    with open_store(tmp_path) as store:
        assert store.items() == [(b"keep", b"1")]


def test_batch_write_explicit_and_clear(tmp_path):
    store = open_store(tmp_path)
    b = store.batch()
    b.put(b"x", b"1")
    b.clear()
    b.put(b"y", b"2")
    b.write()
    assert store.items() == [(b"y", b"2")]
    with pytest.raises(ClosedError):
        b.write()
    # an empty batch writes nothing
    size = store.stats()["wal_bytes"]
    with store.batch():
        pass
    assert store.stats()["wal_bytes"] == size
    store.close()


def test_batch_on_disk_is_one_contiguous_atomic_group(tmp_path):
    store = open_store(tmp_path)
    store.put(b"before", b"0")
    with store.batch() as b:
        b.put(b"a", b"1")
        b.delete(b"before")
        b.put(b"c", b"3")
    store.put(b"after", b"9")
    store.close()
    recs = wal_entries(str(tmp_path))
    flags = [(r.key, r.flags & 0xA0) for r, _ in recs]
    # BATCH_CONT on every record of the batch but its last, BATCH_END on that
    assert flags == [(b"before", 0), (b"a", 0x20), (b"before", 0x20), (b"c", 0x80), (b"after", 0)]


def test_partial_batch_on_disk_is_dropped_at_recovery(tmp_path):
    """A batch whose last record never reached the disk (kill mid-batch) is
    cut off: none of it is applied. Simulated by truncating the segment."""
    store = open_store(tmp_path)
    store.put(b"base", b"0")
    with store.batch() as b:
        b.put(b"a", b"1")
        b.put(b"b", b"2")
        b.put(b"c", b"3")
    store.close()
    path = tmp_path / "wal" / "000000.wal"
    recs = wal_entries(str(tmp_path))
    last_start = recs[-1][1].offset
    for cut in (recs[1][1].offset + 3, recs[2][1].offset, last_start, last_start + 2):
        data = path.read_bytes()
        work = tmp_path / ("cut%d" % cut)
        (work / "wal").mkdir(parents=True)
        (work / "wal" / "000000.wal").write_bytes(data[:cut])
        with open_store(work) as s2:
            assert dict(s2.items()) == {b"base": b"0"}, cut
            assert s2.recovery_info.corruption_detected
            s2.put(b"later", b"x")
        # the cut-off records cannot be completed by later appends
        with open_store(work) as s2:
            assert dict(s2.items()) == {b"base": b"0", b"later": b"x"}


def test_batch_with_wrong_types_leaves_batch_usable(tmp_path):
    store = open_store(tmp_path)
    with store.batch() as b:
        b.put(b"a", b"1")
        with pytest.raises(TypeError):
            b.put("a", b"1")
        b.put(b"b", b"2")
    assert dict(store.items()) == {b"a": b"1", b"b": b"2"}
    store.close()


def test_batch_and_value_larger_than_a_segment(tmp_path):
    """A batch never spans segments (all-or-none relies on it), even one
    bigger than max_segment_size; a single huge value is fine too."""
    rng = random.Random(4)
    store = open_store(tmp_path, max_segment_size=1 << 20)
    store.put(b"first", b"1")
    big = {b"big%d" % i: rng.randbytes(600_000) for i in range(3)}
    with store.batch() as b:
        for k, v in big.items():
            b.put(k, v)
    store.put(b"huge", rng.randbytes(2_500_000))
    store.put(b"last", b"2")
    state = dict(store.items())
    del store  # drop without close
    store = open_store(tmp_path, max_segment_size=1 << 20)
    assert dict(store.items()) == state
    assert not store.recovery_info.corruption_detected
    store.compact()
    store.close()
    with open_store(tmp_path, max_segment_size=1 << 20) as store:
        assert dict(store.items()) == state


def test_finished_batches_do_not_keep_a_dropped_store_alive(tmp_path):
    store = open_store(tmp_path)
    with store.batch() as written:
        written.put(b"k", b"v")
    try:
        with store.batch() as discarded:
            discarded.put(b"x", b"y")
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    del store  # drop without close, batches still in scope
    store = open_store(tmp_path)  # the lock was released: no LockError
    assert store.items() == [(b"k", b"v")]
    assert len(written) == 0 and len(discarded) == 0
    store.close()


def test_first_small_sync_after_a_bulk_load_seals_the_large_folio_segment(tmp_path):
    # Linux grows the page-cache folios of a mapping written sequentially, and
    # writeback writes a dirty folio whole: after a bulk load, each small
    # put + sync() wrote up to 2 MiB (2.4k/s instead of ~9k/s). The first small
    # sync() seals the segment and the log goes on in a new one, with
    # page-sized folios; a KvStore (shared with other processes) does it
    # under the writers' mutex and publishes it.
    store = open_store(tmp_path, max_segment_size=64 << 20)
    value = bytes(range(256)) * 4
    for i in range(26_000):  # ~26 MiB written: faulted in past 24 MiB without waiting for the prefault
        store.put(b"bulk%05d" % i, value)
    store.sync()  # a large sync keeps large folios
    assert not store.wal.small_folios
    first = store.wal.seg_id
    store.put(b"small", b"v")
    store.sync()
    assert store.wal.small_folios and store.wal.seg_id == first + 1
    store.put(b"after", b"w")
    store.sync()
    store.close()
    with open_store(tmp_path) as again:
        assert len(again) == 26_002
        assert again.get(b"bulk25999") == value and again.get(b"small") == b"v" and again.get(b"after") == b"w"
