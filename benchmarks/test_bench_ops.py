"""Information-only KvStore benchmarks (no target): delete, mixed 90/10
read/write, range scans, write batches, compaction. Issue 4's list; the
project's targets live in test_bench_store.py and test_bench_wal.py."""

from __future__ import annotations

import random

import pytest

from benchlib import ROUNDS, N, cpu_bound, open_store, remember


def _filled(scratch, closer, pairs):
    store = closer.replace(open_store(scratch.new()))
    put = store.put
    for k, v in pairs:
        put(k, v)
    return store


@pytest.mark.benchmark(group="ops")
def test_delete(benchmark, scratch, closer, pairs, keys):
    """delete of every key of a filled store (writes N tombstones)."""
    cpu_bound(benchmark)

    def setup():
        closer.replace()
        return (_filled(scratch, closer, pairs),), {}

    def run(store):
        delete = store.delete
        for k in keys:
            delete(k)

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    remember("norikv_delete", benchmark, len(keys), "deletes")


@pytest.mark.benchmark(group="ops")
def test_mixed_90_read_10_write(benchmark, scratch, closer, pairs, keys):
    """N operations on a filled store: 90% get, 10% put (overwrite), random keys."""
    cpu_bound(benchmark)
    rnd = random.Random(3)
    ops = [(rnd.random() < 0.1, keys[rnd.randrange(len(keys))]) for _ in range(len(keys))]
    value = b"w" * 100
    store = _filled(scratch, closer, pairs)

    def run():
        get = store.get
        put = store.put
        for is_write, k in ops:
            if is_write:
                put(k, value)
            else:
                get(k)

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    remember("norikv_mixed_90_10", benchmark, len(ops), "ops")


@pytest.mark.benchmark(group="ops")
def test_range_scans(benchmark, scratch, closer, pairs, keys):
    """1,000 range scans of 100 keys each, after 1,000 fresh puts (the index catches up)."""
    cpu_bound(benchmark)
    store = _filled(scratch, closer, pairs)
    sorted_keys = sorted(keys)
    rnd = random.Random(5)
    starts = [sorted_keys[rnd.randrange(max(1, len(sorted_keys) - 100))] for _ in range(1000)]
    list(store.range(None, None))  # build the index once, as a long-running store would have
    fresh = [(b"new:%012d" % i, b"n" * 100) for i in range(1000)]

    def setup():
        for k, v in fresh:
            store.put(k, v)
        return (), {}

    def run():
        rng = store.range
        for s in starts:
            it = rng(s, None)
            for _ in range(100):
                next(it)

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    remember("norikv_range_scans", benchmark, 1000 * 100, "pairs")


@pytest.mark.benchmark(group="ops")
def test_write_batches(benchmark, scratch, closer, pairs):
    """Atomic write batches of 100 puts (with store.batch()), N puts in all."""
    cpu_bound(benchmark)
    chunks = [pairs[i : i + 100] for i in range(0, len(pairs), 100)]

    def setup():
        closer.replace()
        return (closer.replace(open_store(scratch.new())),), {}

    def run(store):
        batch = store.batch
        for chunk in chunks:
            with batch() as b:
                put = b.put
                for k, v in chunk:
                    put(k, v)

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    remember("norikv_write_batches", benchmark, len(pairs), "puts")


@pytest.mark.benchmark(group="ops")
def test_compaction(benchmark, scratch, closer, pairs):
    """compact() of a store whose WAL holds every key twice (half of it dead)."""
    half = pairs[: max(1, N // 2)]

    def setup():
        closer.replace()
        store = _filled(scratch, closer, half)
        put = store.put
        for k, v in half:
            put(k, v)
        return (store,), {}

    benchmark.pedantic(lambda store: store.compact(), setup=setup, rounds=ROUNDS, iterations=1)
    remember("norikv_compaction", benchmark, len(half), "live_keys")
