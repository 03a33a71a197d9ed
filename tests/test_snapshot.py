"""range() and items() are snapshots: the map at the instant of the call,
however long the walk and whatever is written meanwhile (snapshot.pyx).
Checked against a dict model taken at that instant, in both value modes;
other processes' writes are in tests/test_processes.py."""

from __future__ import annotations

import gc
import random
import threading

import pytest

from norikv import CorruptionError, KvStore

N = 3000  # several chunks (32, 64, ..., 1024 keys)


def _fill(store, n=N, value=b"v0"):
    with store.batch() as b:
        for i in range(n):
            b.put(b"k%05d" % i, value + b"-%d" % i)
    return {b"k%05d" % i: value + b"-%d" % i for i in range(n)}


def _expect(model, lo=None, hi=None, reverse=False):
    keys = sorted(k for k in model if (lo is None or k >= lo) and (hi is None or k < hi))
    if reverse:
        keys.reverse()
    return [(k, model[k]) for k in keys]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("reverse", [False, True])
def test_a_walk_yields_the_map_at_its_start_whatever_is_written_meanwhile(tmp_path, seed, reverse):
    """Puts, deletes, batches and new keys, ahead of the walk and behind it,
    while it runs: it yields exactly the map at the instant range() was called."""
    rng = random.Random(seed)
    with KvStore.open(tmp_path, compression="lz4" if seed % 2 else None, compress_min_size=1) as store:
        model = _fill(store)
        lo, hi = (None, None) if seed % 3 == 0 else (b"k%05d" % rng.randrange(500), b"k%05d" % rng.randrange(2500, N))
        at_start = dict(model)
        walk = store.range(lo, hi, reverse=reverse)
        out = []
        for pair in walk:
            out.append(pair)
            for _ in range(rng.randrange(4)):
                k = b"k%05d" % rng.randrange(N + 200)  # (some keys are new)
                op = rng.random()
                if op < 0.4:
                    store.put(k, b"new-%d" % rng.randrange(1 << 30))
                elif op < 0.7:
                    store.delete(k)
                else:
                    with store.batch() as b:
                        b.put(k, b"batch" * rng.randrange(1, 40))
                        b.delete(b"k%05d" % rng.randrange(N))
        assert out == _expect(at_start, lo, hi, reverse)


def test_a_walk_started_before_a_batch_never_sees_it_in_part(tmp_path):
    """Another thread writes batches that keep an invariant over keys spread
    across the whole range (so across chunks): every walk sees it hold."""
    keys = [b"k%05d" % i for i in (0, 700, 1500, 2300, N - 1)]
    stop = threading.Event()
    errors = []

    with KvStore.open(tmp_path) as store:
        _fill(store)

        def writer():
            n = 0
            try:
                while not stop.is_set():
                    n += 1
                    with store.batch() as b:
                        for k in keys:
                            b.put(k, b"n%d" % n)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        t = threading.Thread(target=writer)
        t.start()
        try:
            seen = set()
            for _ in range(40):
                walk = dict(store.range())
                assert len(walk) == N
                vals = {walk[k] for k in keys}
                assert len(vals) == 1, vals
                seen |= vals
                snap = dict(store.items())
                assert len({snap[k] for k in keys}) == 1
        finally:
            stop.set()
            t.join()
        assert not errors
        assert len(seen) > 1  # the writer did run between walks


def test_a_walk_keeps_a_value_deleted_and_compacted_away(tmp_path):
    """A compaction of this process while a walk is live: the values it
    still has to yield survive the old segments' removal."""
    with KvStore.open(tmp_path, max_segment_size=1 << 20, auto_compact=False) as store:
        model = _fill(store, value=b"x" * 1000)  # 3 MB: several segments
        walk = store.range()
        first = [next(walk) for _ in range(10)]
        for k in list(model)[20:]:
            store.delete(k)
        store.put(b"k00005", b"behind")
        store.compact()
        assert first + list(walk) == _expect(model)
        assert len(store) == 20


def test_a_key_that_expires_during_the_walk_is_still_yielded(tmp_path):
    """TTLs are judged at the snapshot's instant."""
    from norikv import _engine

    with KvStore.open(tmp_path) as store:
        model = _fill(store, n=100)
        store.put(b"k00050", b"short", ttl=60)
        store.put(b"k00060", b"gone", ttl=1)
        model[b"k00050"] = b"short"
        _engine._set_clock_offset_ms(10_000)  # k00060 expired before the walk
        try:
            del model[b"k00060"]
            walk = store.range()
            first = next(walk)
            _engine._set_clock_offset_ms(120_000)  # k00050 expires during it
            assert store.get(b"k00050") is None
            store.put(b"k00070", b"after")
            assert [first] + list(walk) == _expect(model)
            assert b"k00050" not in dict(store.range())
        finally:
            _engine._set_clock_offset_ms(0)


def test_an_iterator_dropped_early_keeps_nothing(tmp_path):
    """A walk left unfinished (islice, break) is freed with its last
    reference; writes after it note nothing for it."""
    with KvStore.open(tmp_path) as store:
        _fill(store)
        walk = store.range()
        next(walk)
        store.put(b"k02000", b"changed")  # noted: the walk is live
        assert store._live_snapshots() == 1
        del walk
        gc.collect()
        store.put(b"k02001", b"changed")
        assert store._live_snapshots() == 0
        with store.range() as walk:
            next(walk)
        assert store._live_snapshots() == 0
        walk = store.range(b"k02990")
        assert len(list(walk)) == 10
        assert store._live_snapshots() == 0


def test_a_value_damaged_ahead_of_the_walk_fails_the_walk_not_the_put(tmp_path, value_storage):
    """values="disk": the old value of a key overwritten ahead of a walk is
    read from the log at once; when its record is damaged the put still
    succeeds, and the walk raises CorruptionError when it gets there."""
    if value_storage != "disk":
        pytest.skip("values=disk only")
    with KvStore.open(tmp_path, values="disk") as store:
        _fill(store, n=100)
        store.put(b"k00090", b"victim" * 10)
        store.sync()
        seg = sorted((tmp_path / "wal").glob("*.wal"))[-1]
        data = bytearray(seg.read_bytes())
        at = data.rindex(b"victim" * 10)
        with open(seg, "r+b") as f:
            f.seek(at)
            f.write(b"X")
        walk = store.range()
        next(walk)
        store.put(b"k00090", b"new")  # the pre-image read hits the damage
        assert store.get(b"k00090") == b"new"
        with pytest.raises(CorruptionError):
            list(walk)
