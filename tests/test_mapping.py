"""KvStore as a collections.abc.MutableMapping: pop, popitem, setdefault,
update, clear (api.pyx), equality by identity, ttl(), and shelve."""

from __future__ import annotations

import shelve
import threading
from collections.abc import Mapping, MutableMapping

import pytest

from norikv import ClosedError, KvStore, StoreFullError, _engine
from storeutil import open_store, wal_records


@pytest.fixture
def clock():
    _engine._set_clock_offset_ms(0)
    yield lambda seconds: _engine._set_clock_offset_ms(int(seconds * 1000))
    _engine._set_clock_offset_ms(0)


def test_is_a_mutable_mapping(tmp_path):
    with open_store(tmp_path) as s:
        assert isinstance(s, MutableMapping)
        assert isinstance(s, Mapping)
        assert issubclass(KvStore, MutableMapping)
        for name in ("pop", "popitem", "setdefault", "update", "clear", "ttl"):
            assert getattr(KvStore, name).__qualname__ == f"KvStore.{name}"


def test_pop(tmp_path):
    with open_store(tmp_path) as s:
        s[b"a"] = b"1"
        assert s.pop(b"a") == b"1"
        assert b"a" not in s
        assert s.pop(b"a", b"d") == b"d"
        assert s.pop(bytearray(b"a"), None) is None
        with pytest.raises(KeyError):
            s.pop(b"a")
        with pytest.raises(TypeError):
            s.pop("a")
    with open_store(tmp_path) as s:  # the pop was a tombstone in the log
        assert b"a" not in s
    assert [r.tombstone for r in wal_records(str(tmp_path))] == [False, True]


def test_pop_of_expired_key_is_absent(tmp_path, clock):
    with open_store(tmp_path) as s:
        s.put(b"t", b"v", ttl=1)
        clock(2)
        assert s.pop(b"t", b"gone") == b"gone"


def test_popitem_is_lifo_and_raises_when_empty(tmp_path):
    with open_store(tmp_path) as s:
        s.update([(b"a", b"1"), (b"b", b"2")])
        assert s.popitem() == (b"b", b"2")
        assert s.popitem() == (b"a", b"1")
        with pytest.raises(KeyError):
            s.popitem()
    with open_store(tmp_path) as s:
        assert len(s) == 0


def test_setdefault(tmp_path):
    with open_store(tmp_path) as s:
        assert s.setdefault(b"k", b"v") == b"v"
        assert s.setdefault(b"k", b"other") == b"v"
        assert s[b"k"] == b"v"
        with pytest.raises(TypeError):
            s.setdefault(b"new")  # default None: values cannot be None
        assert b"new" not in s


def test_update_forms_and_atomicity(tmp_path):
    with open_store(tmp_path) as s:
        s.update({b"a": b"1"})
        s.update([(b"b", b"2")])

        class KeysOnly:
            def keys(self):
                return [b"c"]

            def __getitem__(self, k):
                return b"3"

        s.update(KeysOnly())
        other = open_store(tmp_path / "other")
        other[b"d"] = b"4"
        s.update(other)  # a KvStore is a Mapping too
        other.close()
        assert dict(s.items()) == {b"a": b"1", b"b": b"2", b"c": b"3", b"d": b"4"}
        # a bad value anywhere: nothing at all is written
        with pytest.raises(TypeError):
            s.update({b"x": b"1", b"y": None})
        with pytest.raises(TypeError):
            s.update(z=b"1")  # keyword names are str
        assert b"x" not in s and b"z" not in s
    recs = wal_records(str(tmp_path))
    assert [r.key for r in recs] == [b"a", b"b", b"c", b"d"]


def test_update_is_one_batch_and_respects_limits(tmp_path):
    with open_store(tmp_path, max_keys=3) as s:
        with pytest.raises(StoreFullError):
            s.update({b"%d" % i: b"v" for i in range(4)})
        assert len(s) == 0
        s.update({b"%d" % i: b"v" for i in range(3)})
    recs = wal_records(str(tmp_path))
    assert len(recs) == 3
    # BATCH_CONT on the first two, BATCH_END on the last
    assert [r.flags & 0xA0 for r in recs] == [0x20, 0x20, 0x80]


def test_clear(tmp_path, clock):
    with open_store(tmp_path) as s:
        s.update({b"%d" % i: b"v" for i in range(100)})
        s.put(b"t", b"v", ttl=1)
        clock(2)
        s.clear()
        assert len(s) == 0 and s.keys() == []
        s.clear()  # empty: nothing written
    with open_store(tmp_path) as s:
        assert len(s) == 0
    assert sum(r.tombstone for r in wal_records(str(tmp_path))) == 100


def test_equality_is_identity_and_store_is_hashable(tmp_path):
    with open_store(tmp_path / "a") as a, open_store(tmp_path / "b") as b:
        a[b"k"] = b[b"k"] = b"v"
        assert a == a
        assert a != b  # same content, different stores
        assert a != {b"k": b"v"}
        assert dict(a.items()) == {b"k": b"v"}  # content comparison, spelled out
        assert len({a, b}) == 2


def test_ttl(tmp_path, clock):
    with open_store(tmp_path) as s:
        s.put(b"t", b"v", ttl=10)
        s.put(b"p", b"v")
        assert 5 < s.ttl(b"t") <= 10  # (real time passes too: slack, no timing)
        assert s.ttl(b"p") is None
        with pytest.raises(KeyError):
            s.ttl(b"absent")
        clock(4)
        assert 1 < s.ttl(b"t") <= 6
    with open_store(tmp_path) as s:  # the deadline is absolute: it survives a reopen
        assert 1 < s.ttl(b"t") <= 6
        clock(11)
        with pytest.raises(KeyError):
            s.ttl(b"t")


def test_mapping_methods_after_close_raise_closed_error(tmp_path):
    s = open_store(tmp_path)
    s.close()
    for call in (
        lambda: s.pop(b"a", None),
        s.popitem,
        lambda: s.setdefault(b"a", b"v"),
        lambda: s.update({b"a": b"v"}),
        s.clear,
        lambda: s.ttl(b"a"),
    ):
        with pytest.raises(ClosedError):
            call()


def test_concurrent_pops_return_each_value_once(tmp_path):
    n = 2000
    with open_store(tmp_path) as s:
        s.update({b"%05d" % i: b"v%05d" % i for i in range(n)})
        got: list[list[tuple[bytes, bytes]]] = [[] for _ in range(4)]
        start = threading.Barrier(4)

        def popper(out):
            start.wait()
            while True:
                try:
                    out.append(s.popitem())
                except KeyError:
                    return

        threads = [threading.Thread(target=popper, args=(got[i],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        items = [kv for out in got for kv in out]
        assert sorted(items) == [(b"%05d" % i, b"v%05d" % i) for i in range(n)]
        assert len(s) == 0


def test_shelf_over_a_store_closes_it_when_the_shelf_closes(tmp_path):
    # Documented (README, "KvStore as a mapping"): shelve.Shelf owns the
    # mapping it wraps and closes it (Shelf.close calls store.close()).
    s = open_store(tmp_path)
    with shelve.Shelf(s) as shelf:
        shelf["k"] = {"a": [1, 2]}
        assert shelf["k"] == {"a": [1, 2]}
    assert s.closed
    with open_store(tmp_path) as s:
        with shelve.Shelf(s) as shelf:
            assert shelf["k"] == {"a": [1, 2]}
