"""Where a durable commit's time goes: 1,000 puts then sync(), repeated, in a
new store, with each part timed on its own.

    python scripts/commit_profile.py [DIR] [--order sequential|random] [--commits 200] [--rounds 3]

Prints per round: the whole loop's puts/s, the median and mean of the puts
of a commit and of its sync(), the write faults the puts took (minor faults
of the process), the commits whose sync() or puts were slow (index and us:
the first syncs of a new store, the 2 MiB refills, the map's resizes), and
the same puts in a store that never syncs. The setting of benchmarks/
test_bench_write_path.py's durable-batch row (FsyncPolicy.OS, sync() per
1,000 puts of 100 B, random 16-byte keys, sorted for "sequential");
docs/performance.md cites it."""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import tempfile
import time

from norikv import FsyncPolicy, KvStore

COMMIT = 1000


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _round(path: str, pairs: list[tuple[bytes, bytes]]) -> None:
    shutil.rmtree(path, ignore_errors=True)
    store = KvStore.open(path, fsync_policy=FsyncPolicy.OS, auto_compact=False)
    put, sync = store.put, store.sync
    puts: list[float] = []
    syncs: list[float] = []
    faults: list[int] = []
    t0 = time.perf_counter()
    for i in range(0, len(pairs), COMMIT):
        f0 = _faults()
        a = time.perf_counter()
        for k, v in pairs[i : i + COMMIT]:
            put(k, v)
        b = time.perf_counter()
        faults.append(_faults() - f0)
        sync()
        syncs.append(time.perf_counter() - b)
        puts.append(b - a)
    total = time.perf_counter() - t0
    store.close()

    shutil.rmtree(path, ignore_errors=True)
    store = KvStore.open(path, fsync_policy=FsyncPolicy.OS, auto_compact=False)
    put = store.put
    a = time.perf_counter()
    for k, v in pairs:
        put(k, v)
    never = time.perf_counter() - a
    store.close()
    shutil.rmtree(path, ignore_errors=True)

    def us(xs):
        return f"median {statistics.median(xs) * 1e6:.0f} mean {statistics.mean(xs) * 1e6:.0f} us"

    slow_syncs = [(i, round(x * 1e6)) for i, x in enumerate(syncs) if x > 4 * statistics.median(syncs)]
    slow_puts = [(i, round(x * 1e6)) for i, x in enumerate(puts) if x > 2 * statistics.median(puts)]
    print(
        f"{len(pairs) / total / 1e3:,.0f} k puts/s; puts of a commit {us(puts)}, "
        f"{statistics.median(faults):.0f} write faults; sync() {us(syncs)}; "
        f"puts in a store that never syncs {never / len(puts) * 1e6:.0f} us per {COMMIT}"
    )
    print(f"  slow sync() (commit, us): {slow_syncs[:20]}")
    print(f"  slow puts (commit, us): {slow_puts[:20]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", nargs="?", help="where to create the store (default: a temporary directory)")
    ap.add_argument("--order", choices=["sequential", "random"], default="sequential")
    ap.add_argument("--commits", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    rng = random.Random(1)
    keys = [rng.randbytes(16) for _ in range(a.commits * COMMIT)]
    if a.order == "sequential":
        keys = [bytes(bytearray(k)) for k in sorted(keys)]
    value = random.Random(3).randbytes(100)
    pairs = [(k, value) for k in keys]
    base = a.dir or tempfile.mkdtemp(prefix="norikv-commit-")
    try:
        for _ in range(a.rounds):
            _round(os.path.join(base, "store"), pairs)
    finally:
        if not a.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
