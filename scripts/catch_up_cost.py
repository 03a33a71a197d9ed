"""What a process pays to apply records another process wrote (the catch-up
of a store opened by several processes, docs/DESIGN.md "Many processes").

    python scripts/catch_up_cost.py [DIR] [--records 1000000] [--keys 100000] [--rounds 3]

For each value mode, per round: a store is opened in this process, a child
process writes RECORDS puts of 100 B values (KEYS random 16-byte keys
overwritten in a cycle, as the reader benchmark's writer does) and exits,
then one get in this process applies them all; printed: ns per record
applied. The benchmark "reader get while a process writes"
(benchmarks/test_bench_processes.py) pays this for every record the writer
puts; docs/performance.md cites the figures. With values="memory" the get
leaves the puts pending (follow.pyx); the len() after it folds them into
the map: printed as ns per key folded (KEYS of them)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

from norikv import KvStore

_WRITER = textwrap.dedent(
    """
    import random, sys
    from norikv import KvStore
    path, mode, records, keys = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(8)
    ks = [rng.randbytes(16) for _ in range(keys)]
    blob = rng.randbytes(4196)
    with KvStore.open(path, auto_compact=False, values=mode) as s:
        put = s.put
        for i in range(records):
            put(ks[i % keys], blob[i % 4096 : i % 4096 + 100])
    """
)


def _round(path: str, mode: str, records: int, keys: int) -> tuple[float, float]:
    shutil.rmtree(path, ignore_errors=True)
    with KvStore.open(path, auto_compact=False, values=mode) as store:
        store.put(b"opened", b"x")
        subprocess.run([sys.executable, "-c", _WRITER, path, mode, str(records), str(keys)], check=True)
        t0 = time.perf_counter()
        store.get(b"opened")  # applies everything the child published
        t1 = time.perf_counter()
        assert len(store) == keys + 1  # (values="memory": folds the pending puts in)
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", nargs="?", default=None)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    base = a.dir or os.environ.get("NORIKV_BENCH_DIR") or tempfile.gettempdir()
    path = os.path.join(base, "catch-up-cost")
    try:
        for mode in ("memory", "disk"):
            times = [_round(path, mode, a.records, a.keys) for _ in range(a.rounds)]
            per = ", ".join(f"{t / a.records * 1e9:.0f}" for t, _ in times)
            print(f"values={mode}: {a.records:,} records applied, ns per record: {per}")
            if mode == "memory":
                per = ", ".join(f"{t / a.keys * 1e9:.0f}" for _, t in times)
                print(f"  then len(): {a.keys:,} pending keys folded into the map, ns per key: {per}")
    finally:
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
