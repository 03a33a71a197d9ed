"""KvStore benchmarks against the references its targets name: a plain dict,
lmdb (one write transaction; transactions of 1,000 with sync), semidbm
(reopen), one thread (group commit), raw key+value bytes (memory).

Each reference runs as its own benchmark right before the norikv one, so the
ratio compares figures from the same run."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from benchlib import (
    _BEST,
    ROUNDS,
    SYNC_N,
    Closer,
    N,
    Scratch,
    cpu_bound,
    fresh_lookups,
    interleaved,
    lmdb,
    open_store,
    remember,
    semidbm,
    target,
)
from norikv import FsyncPolicy, KvStore

BATCH = 1000  # puts per durable commit
BATCHES = max(1, SYNC_N // 4)  # durable commits of 1,000 puts: SYNC_N/4 (500 by default)
THREADS = 8


def _lmdb_env(path, *, sync):
    # lmdb's documented settings for the durability level: sync=False/metasync=False
    # leaves commits in OS buffers (like FsyncPolicy.OS); sync=True fsyncs each commit.
    return lmdb.open(
        path, map_size=max(1 << 30, N * 400), sync=sync, metasync=sync, writemap=False, max_dbs=0, lock=True
    )


def _put_loop(put, pairs):
    for k, v in pairs:
        put(k, v)


# ------------------------------------------------------------ put


@pytest.fixture
def lmdb_closer():
    c = Closer()
    yield c
    c.replace()


@pytest.mark.benchmark(group="store-put")
def test_put_norikv_vs_dict(benchmark, scratch, closer, pairs):
    """Target: KvStore.put (OS policy) >= 0.8x the same loop over a plain dict
    (put = d.__setitem__), the dict round run right before each norikv round.
    The store has answered a range query first, so its range index exists
    while it is filled ("the put path must not pay for ordering")."""
    cpu_bound(benchmark)

    def subject_setup():
        closer.replace()
        store = closer.replace(open_store(scratch.new()))
        assert list(store.range()) == []
        return (store.put, pairs)

    ref = interleaved(
        benchmark, _put_loop, subject_setup, _put_loop, lambda: (({}).__setitem__, pairs), rounds=max(ROUNDS, 5)
    )
    sec = remember("norikv_put", benchmark, len(pairs), "puts")
    _BEST["dict_put"] = ref
    target(
        "KvStore.put vs dict loop",
        f"{len(pairs) / sec / 1e6:.2f} M puts/s vs dict {len(pairs) / ref / 1e6:.2f} M",
        ref / sec,
        0.8,
        reference="same loop over a dict",
        benchmark=benchmark,
    )


@pytest.mark.benchmark(group="store-put")
@pytest.mark.skipif(lmdb is None, reason="lmdb not installed (pip install norikv[bench])")
def test_put_norikv_vs_lmdb(benchmark, scratch, closer, lmdb_closer, bench_root, pairs):
    """Target: KvStore.put >= 1.2x lmdb putting everything in one write
    transaction (lmdb.open(sync=False, metasync=False): OS buffers, like FsyncPolicy.OS)."""
    cpu_bound(benchmark)
    lscratch = Scratch(bench_root, "lmdb-one-txn")

    def subject_setup():
        closer.replace()
        return (closer.replace(open_store(scratch.new())).put, pairs)

    def ref_setup():
        lmdb_closer.replace()
        return (lmdb_closer.replace(_lmdb_env(lscratch.new(), sync=False)),)

    def ref(env):
        with env.begin(write=True) as txn:
            _put_loop(txn.put, pairs)

    try:
        lm = interleaved(benchmark, _put_loop, subject_setup, ref, ref_setup)
    finally:
        lmdb_closer.replace()
        lscratch.clean()
    sec = remember("norikv_put_2", benchmark, len(pairs), "puts")
    _BEST["lmdb_put_one_txn"] = lm
    benchmark.extra_info["config"] = "lmdb.open(sync=False, metasync=False), one write txn"
    target(
        "KvStore.put vs lmdb one txn",
        f"{len(pairs) / sec / 1e6:.2f} M puts/s vs lmdb {len(pairs) / lm / 1e6:.2f} M",
        lm / sec,
        1.2,
        reference="lmdb, one write txn",
        benchmark=benchmark,
    )


# ------------------------------------------------------------ get


def _get_loop(get, keys):
    for k in keys:
        get(k)


@pytest.mark.benchmark(group="store-get")
def test_get_norikv_vs_dict(benchmark, scratch, closer, pairs, keys):
    """Target: KvStore.get >= 0.85x dict.get. Both hold the same key and value
    objects (the store filled by put, the dict by dict(pairs)); the lookups
    are equal keys as new objects, in another order (fresh_lookups)."""
    cpu_bound(benchmark)
    d = dict(pairs)
    store = closer.replace(open_store(scratch.new()))
    _put_loop(store.put, pairs)
    lookups = fresh_lookups(keys, 43)
    ref = interleaved(
        benchmark, _get_loop, lambda: (store.get, lookups), _get_loop, lambda: (d.get, lookups), rounds=max(ROUNDS, 5)
    )
    sec = remember("norikv_get", benchmark, len(keys), "gets")
    _BEST["dict_get"] = ref
    target(
        "KvStore.get vs dict.get",
        f"{len(keys) / sec / 1e6:.2f} M gets/s vs {len(keys) / ref / 1e6:.2f} M",
        ref / sec,
        0.85,
        reference="dict.get",
        benchmark=benchmark,
    )


@pytest.mark.benchmark(group="store-get")
def test_get_after_reopen_vs_dict_of_copies(benchmark, closer, loaded_store, pairs, keys):
    """Information: get from a reopened store (its own key objects) against a
    dict holding equal but distinct key objects."""
    cpu_bound(benchmark)
    d = {bytes(bytearray(k)): v for k, v in pairs}
    store = closer.replace(open_store(loaded_store))
    ref = interleaved(
        benchmark, _get_loop, lambda: (store.get, keys), _get_loop, lambda: (d.get, keys), rounds=max(ROUNDS, 5)
    )
    sec = remember("norikv_get_reopened", benchmark, len(keys), "gets")
    benchmark.extra_info["ratio_to_dict_get"] = ref / sec


@pytest.mark.benchmark(group="store-get")
def test_get_missing_norikv(benchmark, closer, loaded_store):
    cpu_bound(benchmark)
    store = closer.replace(open_store(loaded_store))
    missing = [b"absent:%09d" % i for i in range(min(N, 1_000_000))]
    benchmark.pedantic(_get_loop, args=(store.get, missing), rounds=ROUNDS, iterations=1)
    remember("norikv_get_missing", benchmark, len(missing), "gets")


# ------------------------------------------------------------ reopen


@pytest.fixture(scope="module")
def semidbm_file(bench_root, pairs):
    if semidbm is None:
        pytest.skip("semidbm not installed (pip install norikv[bench])")
    path = os.path.join(bench_root, "semidbm")
    db = semidbm.open(path, "c")
    for k, v in pairs:
        db[k] = v
    db.close()
    return path


@pytest.mark.benchmark(group="store-reopen")
def test_reopen_norikv_vs_semidbm(benchmark, closer, loaded_store, semidbm_file):
    """Targets: KvStore.open (full recovery, N keys) >= 3,000,000 records/s and
    >= 3x semidbm.open(path, 'r') rebuilding its index over the same pairs."""
    cpu_bound(benchmark)
    sdb = Closer()

    def ref():
        sdb.replace(semidbm.open(semidbm_file, "r"))

    def run():
        store = open_store(loaded_store)
        closer.replace(store)
        assert store.recovery_info.valid_records == N

    def subject_setup():
        closer.replace()
        sdb.replace()
        return ()

    try:
        ref_sec = interleaved(benchmark, run, subject_setup, ref)
    finally:
        sdb.replace()
    sec = remember("norikv_reopen", benchmark, N, "records")
    _BEST["semidbm_reopen"] = ref_sec
    rate = N / sec
    target(
        "KvStore reopen (full recovery)",
        f"{rate / 1e6:.2f} M records/s",
        rate / 3e6,
        1.0,
        reference="ratio to 3,000,000 records/s",
        benchmark=benchmark,
    )
    target(
        "KvStore reopen vs semidbm",
        f"{sec:.3f} s vs semidbm {ref_sec:.3f} s",
        ref_sec / sec,
        3.0,
        reference="semidbm.open rebuilding its index",
        benchmark=benchmark,
    )


# ------------------------------------------------------------ durable batches


@pytest.fixture(scope="module")
def batch_pairs(pairs):
    need = BATCH * BATCHES
    return [pairs[i % len(pairs)] for i in range(need)]


@pytest.mark.benchmark(group="store-durable-batches")
@pytest.mark.skipif(lmdb is None, reason="lmdb not installed (pip install norikv[bench])")
def test_batches_norikv_vs_lmdb_sync(benchmark, scratch, closer, lmdb_closer, bench_root, batch_pairs):
    """Target: (1,000 puts + sync()) repeated >= 1.2x lmdb committing
    transactions of 1,000 puts with lmdb.open(sync=True, metasync=True)."""
    lscratch = Scratch(bench_root, "lmdb-sync")

    def subject_setup():
        closer.replace()
        return (closer.replace(open_store(scratch.new())),)

    def run(store):
        put = store.put
        sync = store.sync
        for i in range(0, len(batch_pairs), BATCH):
            _put_loop(put, batch_pairs[i : i + BATCH])
            sync()

    def ref_setup():
        lmdb_closer.replace()
        return (lmdb_closer.replace(_lmdb_env(lscratch.new(), sync=True)),)

    def ref(env):
        for i in range(0, len(batch_pairs), BATCH):
            with env.begin(write=True) as txn:
                _put_loop(txn.put, batch_pairs[i : i + BATCH])

    try:
        lm = interleaved(benchmark, run, subject_setup, ref, ref_setup)
    finally:
        lmdb_closer.replace()
        lscratch.clean()
    sec = remember("norikv_batches_sync", benchmark, len(batch_pairs), "puts")
    _BEST["lmdb_batches_sync"] = lm
    benchmark.extra_info["config"] = "lmdb.open(sync=True, metasync=True), txns of 1,000"
    target(
        "1,000 puts + sync() vs lmdb txns",
        f"{len(batch_pairs) / sec / 1e3:,.0f} k puts/s vs lmdb {len(batch_pairs) / lm / 1e3:,.0f} k",
        lm / sec,
        1.2,
        reference="lmdb txns of 1,000, sync=True",
        benchmark=benchmark,
    )


# ------------------------------------------------------------ group commit


def _durable_writers(store, threads, total):
    """`threads` threads each doing put + sync() until `total` operations are
    done in all. The threads draw operations from one shared budget, so they
    all stop within an operation of each other: a fixed quota per thread
    would end with a tail of stragglers syncing alone, which measures thread
    start-up and shutdown rather than group commit."""
    value = b"v" * 100
    budget = itertools.count()  # next() is atomic under the GIL
    start = threading.Barrier(threads + 1)
    errors = []

    def work(t):
        put = store.put
        sync = store.sync
        start.wait()
        try:
            while (i := next(budget)) < total:
                put(b"t%02d:%011d" % (t, i), value)
                sync()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    start.wait()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


@pytest.mark.benchmark(group="store-group-commit")
def test_put_sync_8_threads_vs_1(benchmark, scratch, closer, bench_root):
    """Target: 8 threads each doing put + sync() >= 3x the throughput of one
    thread doing the same (group commit: one fdatasync covers many threads)."""
    total = 4 * SYNC_N  # 8,000 by default: ~0.3 s of 8 threads, ~1 s of one
    one = Closer()
    oscratch = Scratch(bench_root, "one-thread")

    def subject_setup():
        closer.replace()
        return (closer.replace(open_store(scratch.new())), THREADS, total)

    def ref_setup():
        one.replace()
        return (one.replace(open_store(oscratch.new())), 1, total)

    try:
        ref = interleaved(benchmark, _durable_writers, subject_setup, _durable_writers, ref_setup)
    finally:
        one.replace()
        oscratch.clean()
    sec = remember("put_sync_8_threads", benchmark, total, "durable_puts")
    _BEST["put_sync_1_thread"] = ref
    target(
        f"{THREADS} threads put+sync vs 1",
        f"{total / sec:,.0f} puts/s vs {total / ref:,.0f}",
        ref / sec,
        3.0,
        reference="1 thread doing put + sync()",
        benchmark=benchmark,
    )


# ------------------------------------------------------------ memory

_MEMORY_SCRIPT = textwrap.dedent("""
    import gc, json, os, sys
    from norikv import FsyncPolicy, KvStore

    def rss_anon():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024

    def wal_maps(wal_dir):
        # Segment files only: SHM (the many-process state in the same
        # directory) stays mapped until the Wal object is freed, by design.
        out = []
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                name = parts[5].strip() if len(parts) == 6 else ""
                if name.startswith(wal_dir) and name.endswith(".wal"):
                    out.append(name)
        return out

    path = sys.argv[1]
    gc.collect()
    before = rss_anon()
    store = KvStore.open(path, fsync_policy=FsyncPolicy.OS, auto_compact=False,
                         max_segment_size=int(sys.argv[2]))
    gc.collect()
    after = rss_anon()
    wal_dir = os.path.realpath(os.path.join(path, "wal"))
    segs = sorted(f for f in os.listdir(wal_dir) if f.endswith(".wal"))
    maps = wal_maps(wal_dir)
    raw = sum(len(k) + len(v) for k, v in store.items())
    n = len(store)
    store.close()
    json.dump(dict(before=before, after=after, raw=raw, keys=n, segments=segs,
                   mapped_while_open=sorted(set(maps)), mapped_after_close=wal_maps(wal_dir)),
              sys.stdout)
""")


@pytest.fixture(scope="module")
def multi_segment_store(bench_root, pairs):
    """The N pairs in a store with 8 MiB segments, so recovery crosses many segments."""
    path = os.path.join(bench_root, "memory-store")
    store = KvStore.open(path, fsync_policy=FsyncPolicy.OS, auto_compact=False, max_segment_size=8 << 20)
    _put_loop(store.put, pairs)
    store.close()
    return path


@pytest.mark.benchmark(group="store-memory")
def test_memory_loaded_store(benchmark, multi_segment_store):
    """Target: RssAnon of the loaded store <= 2.5x the raw key+value bytes, and
    no mapping of a segment other than the active one left after recovery."""
    out = {}

    def run():
        res = subprocess.run(
            [sys.executable, "-c", _MEMORY_SCRIPT, multi_segment_store, str(8 << 20)],
            capture_output=True,
            text=True,
            check=True,
        )
        out.update(json.loads(res.stdout))

    benchmark.pedantic(run, rounds=1, iterations=1)
    grown = out["after"] - out["before"]
    ratio = grown / out["raw"]
    benchmark.extra_info.update(out)
    benchmark.extra_info["rss_anon_ratio"] = ratio
    target(
        "RssAnon of loaded store / raw bytes",
        f"{grown / 2**20:.0f} MiB for {out['raw'] / 2**20:.0f} MiB raw ({out['keys']:,} keys)",
        ratio,
        2.5,
        op="<=",
        reference="key+value bytes",
        benchmark=benchmark,
    )
    active = out["segments"][-1]
    stale = [m for m in out["mapped_while_open"] if os.path.basename(m) != active]
    target(
        "recovery mappings released",
        f"{len(out['segments'])} segments; mapped while open: "
        f"{len(out['mapped_while_open'])}, after close: {len(out['mapped_after_close'])}",
        float(len(stale) + len(out["mapped_after_close"])),
        0.0,
        op="<=",
        reference="stale segment mappings (count)",
        benchmark=benchmark,
    )
