"""What the first sync() calls of a new store cost: put + sync() in a loop
on a new store, with each sync() timed, under FsyncPolicy.OS and the default
batch policy. The first small sync() drops the zeros the prefault mapped
ahead of the log (docs/performance.md, "The first small sync").

    python scripts/first_sync.py [DIR] [--syncs 400] [--rounds 2]

Prints per round and policy: the first five sync() calls in us, the
longest, and the total."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time

from norikv import FsyncPolicy, KvStore


def _round(path: str, policy, syncs: int) -> list[float]:
    rng = random.Random(1)
    shutil.rmtree(path, ignore_errors=True)
    lat = []
    with KvStore.open(path, fsync_policy=policy, auto_compact=False) as s:
        put, sync = s.put, s.sync
        for _ in range(syncs):
            put(rng.randbytes(16), b"v" * 100)
            t0 = time.perf_counter()
            sync()
            lat.append(time.perf_counter() - t0)
    shutil.rmtree(path, ignore_errors=True)
    return lat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", nargs="?", default=None)
    ap.add_argument("--syncs", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    base = a.dir or tempfile.mkdtemp(prefix="norikv-first-sync-")
    for _ in range(a.rounds):
        for name, policy in (("OS", FsyncPolicy.OS), ("batch(0.005)", FsyncPolicy.batch(0.005))):
            lat = [x * 1e6 for x in _round(os.path.join(base, "store"), policy, a.syncs)]
            first = ", ".join(f"{x:.0f}" for x in lat[:5])
            total = sum(lat) / 1e3
            print(f"{name:>12}: first sync() calls {first} us; longest {max(lat):.0f} us; total {total:.1f} ms")


if __name__ == "__main__":
    main()
