"""put throughput against a dict loop, by value storage and fsync policy.

    python scripts/put_value_sizes.py [DIR] [--n 500000] [--value-size 1024]

Random 16-byte keys; prints puts/s and the ratio to the same loop over a dict
(measured right after each store). Information for docs/performance.md
("Values on disk"): what a put pays per byte is the write path's, in both
value storages."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time

import norikv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", nargs="?", default=None)
    ap.add_argument("--n", type=int, default=500_000)
    ap.add_argument("--value-size", type=int, default=1024)
    a = ap.parse_args()
    base = a.dir or tempfile.mkdtemp(prefix="norikv-put-")
    rng = random.Random(3)
    blob = rng.randbytes(a.value_size + 4096)
    pairs = [(rng.randbytes(16), blob[i % 4096 : i % 4096 + a.value_size]) for i in range(a.n)]
    for mode in ("memory", "disk"):
        for name, policy in (("default", None), ("OS", norikv.FsyncPolicy.OS)):
            path = os.path.join(base, f"{mode}-{name}")
            shutil.rmtree(path, ignore_errors=True)
            opts = {} if policy is None else {"fsync_policy": policy}
            with norikv.KvStore.open(path, values=mode, auto_compact=False, **opts) as s:
                put = s.put
                t = time.perf_counter()
                for k, v in pairs:
                    put(k, v)
                dt = time.perf_counter() - t
            shutil.rmtree(path, ignore_errors=True)
            d: dict[bytes, bytes] = {}
            t = time.perf_counter()
            for k, v in pairs:
                d[k] = v
            dd = time.perf_counter() - t
            rate, ref = a.n / dt / 1e6, a.n / dd / 1e6
            print(f"{mode:6} {name:7} {rate:5.2f} M puts/s  dict {ref:5.2f} M  ratio {dd / dt:.2f}")
    if a.dir is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
