"""The longest pauses of a long run of puts, by fsync policy: what a segment
rotation (its fsync), a map resize or the kernel's writeback costs one put.

    python scripts/put_pauses.py [DIR] [--n 2500000] [--values disk] [--max-segment-size 134217728]
                                 [--writeback-bytes 0]

Puts n random 16-byte keys with 100 B values under FsyncPolicy.OS and under
FsyncPolicy.batch(0.005) and prints, for each, puts/s, the segments written
and the four longest gaps between blocks of 1,024 puts (milliseconds, and
the put count where each ended), and how many blocks took over 1 ms (a
block takes 0.2-0.5 ms here) and how long those took in all. README ("Durability") cites it."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time

from norikv import FsyncPolicy, KvStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", nargs="?", help="where to create the stores (default: a temporary directory)")
    ap.add_argument("--n", type=int, default=2_500_000)
    ap.add_argument("--values", choices=["memory", "disk"], default="disk")
    ap.add_argument("--max-segment-size", type=int, default=128 << 20)
    ap.add_argument("--writeback-bytes", type=int, default=0, help="KvStore.open's writeback_bytes (used under OS)")
    a = ap.parse_args()
    rng = random.Random(1)
    blob = rng.randbytes(4096 + 100)
    pairs = [(rng.randbytes(16), blob[i % 4096 : i % 4096 + 100]) for i in range(a.n)]
    base = a.dir or tempfile.mkdtemp(prefix="norikv-pauses-")
    path = os.path.join(base, "store")
    try:
        for name, policy in (("OS", FsyncPolicy.OS), ("batch(0.005)", FsyncPolicy.batch(0.005))):
            shutil.rmtree(path, ignore_errors=True)
            store = KvStore.open(
                path,
                fsync_policy=policy,
                auto_compact=False,
                values=a.values,
                max_segment_size=a.max_segment_size,
                writeback_bytes=a.writeback_bytes,
            )
            put = store.put
            gaps = []
            t0 = last = time.perf_counter()
            for i, (k, v) in enumerate(pairs):
                put(k, v)
                if not i & 1023:
                    now = time.perf_counter()
                    gaps.append((now - last, i))
                    last = now
            dt = time.perf_counter() - t0
            segments = store.stats().get("segments")
            store.close()
            worst = ", ".join(f"{g * 1e3:.1f} ms at {i:,}" for g, i in sorted(gaps, reverse=True)[:4])
            slow = [g for g, _ in gaps if g > 0.001]
            print(
                f"{name}: {a.n / dt / 1e6:.2f} M puts/s, {segments} segments; blocks of 1,024 puts over 1 ms:"
                f" {len(slow)} ({sum(slow) * 1e3:.0f} ms); longest pauses: {worst}"
            )
    finally:
        shutil.rmtree(path, ignore_errors=True)
        if not a.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
