"""Times the open of a values="disk" store from its hint files.

Builds, once, a store of --keys random 16-byte keys with 1 KiB values (the
shape of benchmarks/test_bench_disk.py's reopen row, hints written), then
opens and closes it --rounds times and prints the best and every round, wall
and CPU. To compare two builds, run it twice on the same --dir, once with
PYTHONPATH pointing at the other build's src/ (a git worktree built with
`python setup.py build_ext --inplace`), interleaving the runs:

    python scripts/reopen_from_hints.py --dir /tmp/reopen-2m
    PYTHONPATH=/tmp/wt/src python scripts/reopen_from_hints.py --dir /tmp/reopen-2m
"""

from __future__ import annotations

import argparse
import os
import random
import time

from norikv import KvStore


def build(path: str, keys: int) -> None:
    rng = random.Random(5)
    blob = rng.randbytes(1024 + 4096)
    with KvStore.open(path, values="disk", auto_compact=False) as s:
        for i in range(keys):
            s.put(rng.randbytes(16), blob[i % 4096 : i % 4096 + 1024])
        s._write_hints()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="the store (built there when missing)")
    ap.add_argument("--keys", type=int, default=2_000_000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    if not os.path.exists(args.dir):
        build(args.dir, args.keys)
    walls, cpus = [], []
    for _ in range(args.rounds):
        c0, t0 = time.process_time(), time.perf_counter()
        s = KvStore.open(args.dir, values="disk", auto_compact=False)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        st = s.stats()
        s.close()
    best = min(walls)
    print(
        f"{st['keys']:,} keys, {st['recovery_hint_segments']} segments from hints:"
        f" best {best:.3f} s ({st['keys'] / best / 1e6:.2f} M keys/s), CPU best {min(cpus):.3f} s;"
        f" rounds {' '.join(f'{w:.3f}' for w in walls)}"
    )


if __name__ == "__main__":
    main()
