"""Speed of a whole-store range() walk and of items(), by value storage.

    python scripts/range_walk.py [DIR] [--n 1000000]

Random 16-byte keys, 100-byte values, FsyncPolicy.OS; best of 3 walks.
Information for docs/DESIGN.md ("Range snapshots"): what the snapshot
machinery costs a walk when nothing is written during it."""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import timeit

from norikv import FsyncPolicy, KvStore


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", nargs="?")
    ap.add_argument("--n", type=int, default=1_000_000)
    a = ap.parse_args()
    root = tempfile.mkdtemp(dir=a.dir)
    try:
        for mode in ("memory", "disk"):
            path = f"{root}/{mode}"
            with KvStore.open(path, values=mode, fsync_policy=FsyncPolicy.OS) as s:
                rng = random.Random(1)
                with s.batch() as b:
                    for _ in range(a.n):
                        b.put(rng.randbytes(16), b"x" * 100)
                walk = min(timeit.repeat(lambda: sum(1 for _ in s.range()), number=1, repeat=3))
                items = min(timeit.repeat(lambda: len(s.items()), number=1, repeat=3))
                print(f"{mode}: range {a.n / walk / 1e6:.2f} M pairs/s, items() {a.n / items / 1e6:.2f} M pairs/s")
            shutil.rmtree(path)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
