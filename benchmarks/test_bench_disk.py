"""values="disk" benchmarks (issue #13's targets), each ratio against a
reference measured in the same run: a dict, lmdb, semidbm.

The workload users have: random 16-byte keys, 100 B and 1 KiB values, the
default fsync policy, lookups with fresh key objects in random order (not
the objects stored), data in the page cache.

Environment (besides benchlib's):
  NORIKV_BENCH_DISK_N   keys of the memory and reopen benchmarks (default
                        2,000,000: 2 GiB of 1 KiB values on disk, once)
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap

import pytest

from benchlib import (
    _BEST,
    ROUNDS,
    Closer,
    N,
    cpu_bound,
    durable_write_rate,
    fresh_lookups,
    interleaved,
    lmdb,
    remember,
    semidbm,
    target,
)
from norikv import KvStore, Record

DISK_N = int(os.environ.get("NORIKV_BENCH_DISK_N", "2000000"))
SIZES = [100, 1024]


def _random_pairs(n: int, vsize: int, seed: int) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    blob = rng.randbytes(vsize + 4096)
    return [(rng.randbytes(16), blob[i % 4096 : i % 4096 + vsize]) for i in range(n)]


def _put_loop(put, pairs):
    for k, v in pairs:
        put(k, v)


def _get_loop(get, keys):
    for k in keys:
        get(k)


def _open_disk(path):
    # The default fsync policy, as users run it.
    return KvStore.open(path, values="disk", auto_compact=False)


@pytest.mark.benchmark(group="disk-get")
@pytest.mark.parametrize("vsize", SIZES)
def test_disk_get_vs_dict_and_lmdb(benchmark, scratch, closer, bench_root, vsize):
    """Targets: get in disk mode (values in the page cache) >= 0.6x dict.get
    and >= 2x lmdb's get (one read transaction) on the same keys."""
    cpu_bound(benchmark)
    pairs = _random_pairs(N, vsize, 1)
    lookups = fresh_lookups((k for k, _ in pairs), 2)
    d = dict(pairs)
    store = closer.replace(_open_disk(scratch.new()))
    _put_loop(store.put, pairs)
    store.sync()
    _get_loop(store.get, lookups)  # the values in the page cache, as the target says
    ref = interleaved(
        benchmark, _get_loop, lambda: (store.get, lookups), _get_loop, lambda: (d.get, lookups), rounds=max(ROUNDS, 5)
    )
    sec = remember(f"disk_get_{vsize}", benchmark, len(lookups), "gets")
    _BEST[f"dict_get_fresh_{vsize}"] = ref
    target(
        f"disk get vs dict.get ({vsize} B)",
        f"{len(lookups) / sec / 1e6:.2f} M gets/s vs {len(lookups) / ref / 1e6:.2f} M",
        ref / sec,
        0.6,
        reference="dict.get, fresh keys",
        benchmark=benchmark,
    )
    if lmdb is None:
        target(f"disk get vs lmdb get ({vsize} B)", "lmdb not installed", None, 2.0)
        return
    import time

    env = lmdb.open(os.path.join(bench_root, f"lmdb-get-{vsize}"), map_size=max(1 << 30, N * (vsize + 200) * 2))
    try:
        with env.begin(write=True) as txn:
            for k, v in pairs:
                txn.put(k, v)
        lm = []
        for _ in range(max(ROUNDS, 3)):
            with env.begin() as txn:
                t0 = time.process_time() if benchmark.extra_info.get("clock") == "process_time" else time.perf_counter()
                _get_loop(txn.get, lookups)
                t1 = time.process_time() if benchmark.extra_info.get("clock") == "process_time" else time.perf_counter()
            lm.append(t1 - t0)
    finally:
        env.close()
    benchmark.extra_info["lmdb_get_seconds"] = lm
    target(
        f"disk get vs lmdb get ({vsize} B)",
        f"{len(lookups) / sec / 1e6:.2f} M gets/s vs lmdb {len(lookups) / min(lm) / 1e6:.2f} M",
        min(lm) / sec,
        2.0,
        reference="lmdb txn.get, same keys",
        benchmark=benchmark,
    )


@pytest.mark.benchmark(group="disk-put")
@pytest.mark.parametrize("vsize", SIZES)
def test_disk_put_vs_dict(benchmark, scratch, closer, bench_root, vsize):
    """Target: put in disk mode (default policy) >= 0.75x a dict loop.

    Shown beside it (info): the storage's ceiling for that loop. The default
    policy makes the log durable within 5 ms, so puts cannot outrun what the
    storage writes: durable_write_rate's bytes per second over the bytes of
    one record, as a ratio to the same dict loop."""
    cpu_bound(benchmark)
    pairs = _random_pairs(N, vsize, 3)

    def subject_setup():
        closer.replace()
        return (closer.replace(_open_disk(scratch.new())).put, pairs)

    ref = interleaved(
        benchmark, _put_loop, subject_setup, _put_loop, lambda: (({}).__setitem__, pairs), rounds=max(ROUNDS, 5)
    )
    sec = remember(f"disk_put_{vsize}", benchmark, len(pairs), "puts")
    target(
        f"disk put vs dict loop ({vsize} B)",
        f"{len(pairs) / sec / 1e6:.2f} M puts/s vs {len(pairs) / ref / 1e6:.2f} M",
        ref / sec,
        0.75,
        reference="dict.__setitem__ loop",
        benchmark=benchmark,
    )
    record = len(Record.put(*pairs[0]).encode())
    rate = durable_write_rate(bench_root, record * len(pairs))
    benchmark.extra_info.update(durable_write_bytes_per_second=rate, record_bytes=record)
    target(
        f"disk put ({vsize} B): the storage's ceiling vs dict loop (info)",
        f"{rate / 1e9:.2f} GB/s written durably (5 ms fdatasyncs): {rate / record / 1e6:.2f} M records"
        f" of {record} B/s; norikv {len(pairs) / sec / 1e6:.2f} M puts/s",
        rate / record * ref / len(pairs),
        0.75,
        reference="raw 1 MiB writes + fdatasync every 5 ms, no key-value work",
        benchmark=benchmark,
    )


_FILL = textwrap.dedent(
    """
    import json, random, sys
    from norikv import KvStore

    path, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    def anon():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon"):
                    return int(line.split()[1]) * 1024

    rng = random.Random(5)
    blob = rng.randbytes(1024 + 4096)
    before = anon()
    with KvStore.open(path, values=mode, auto_compact=False) as s:
        for i in range(n):
            s.put(rng.randbytes(16), blob[i % 4096 : i % 4096 + 1024])
        after = anon()
        st = s.stats()
        s._write_hints() if mode == "disk" else None
    print(json.dumps(dict(before=before, after=after, keydir=st["keydir_bytes"], keys=st["keys"])))
    """
)


@pytest.fixture(scope="module")
def disk_store_2m(bench_root):
    """DISK_N random 16-byte keys with 1 KiB values in a disk-mode store
    (hint files written), and the anonymous memory the filling process grew by."""
    path = os.path.join(bench_root, "disk-2m")
    res = subprocess.run([sys.executable, "-c", _FILL, path, str(DISK_N), "disk"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return path, json.loads(res.stdout)


@pytest.mark.benchmark(group="disk-memory")
def test_disk_memory_per_key(benchmark, disk_store_2m):
    """Target: anonymous memory of a DISK_N-key store (16-byte keys, 1 KiB
    values) in disk mode <= 100 bytes per key."""
    path, out = disk_store_2m
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    per_key = (out["after"] - out["before"]) / out["keys"]
    benchmark.extra_info.update(out)
    target(
        "disk mode anonymous memory per key",
        f"{per_key:.0f} B/key ({out['keys']:,} keys; key directory {out['keydir'] / out['keys']:.0f} B/key)",
        per_key,
        100,
        op="<=",
        reference="bytes per key",
        benchmark=benchmark,
    )


@pytest.fixture(scope="module")
def semidbm_2m(bench_root, disk_store_2m):
    if semidbm is None:
        pytest.skip("semidbm not installed (pip install norikv[bench])")
    path = os.path.join(bench_root, "semidbm-2m")
    rng = random.Random(5)
    blob = rng.randbytes(1024 + 4096)
    db = semidbm.open(path, "c")
    for i in range(DISK_N):
        db[rng.randbytes(16)] = blob[i % 4096 : i % 4096 + 1024]
    db.close()
    return path


@pytest.mark.benchmark(group="disk-reopen")
def test_disk_reopen_from_hints_vs_semidbm(benchmark, closer, disk_store_2m, semidbm_2m):
    """Targets: reopen of the DISK_N-key disk store from its hint files
    >= 5,000,000 keys/s and >= 5x semidbm.open rebuilding its index over the
    same pairs."""
    cpu_bound(benchmark)
    path, _ = disk_store_2m
    sdb = Closer()
    hinted = []

    def run():
        store = _open_disk(path)
        closer.replace(store)
        hinted.append(store.stats()["recovery_hint_segments"])

    def subject_setup():
        closer.replace()
        sdb.replace()
        return ()

    try:
        ref_sec = interleaved(benchmark, run, subject_setup, lambda: sdb.replace(semidbm.open(semidbm_2m, "r")))
    finally:
        sdb.replace()
    sec = remember("disk_reopen", benchmark, DISK_N, "keys")
    benchmark.extra_info["segments_from_hints"] = hinted
    target(
        "disk reopen from hints",
        f"{DISK_N / sec / 1e6:.2f} M keys/s ({hinted[-1]} segments from hints)",
        DISK_N / sec / 5e6,
        1.0,
        reference="ratio to 5,000,000 keys/s",
        benchmark=benchmark,
    )
    target(
        "disk reopen vs semidbm",
        f"{sec:.3f} s vs semidbm {ref_sec:.3f} s",
        ref_sec / sec,
        5.0,
        reference="semidbm.open rebuilding its index",
        benchmark=benchmark,
    )
