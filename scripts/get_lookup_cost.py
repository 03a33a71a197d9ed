#!/usr/bin/env python3
"""Nanoseconds per KvStore.get against dict.get, by how the keys are looked up.

    scripts/get_lookup_cost.py [--keys 1000000] [--rounds 3]

One process holds a values="memory" store and two dicts of the same key and
value objects (one built by dict(pairs), one by setitem in put order), and
times get over them with the stored key objects and with fresh ones (equal
keys as new objects, as a service parses them from requests), both in a
random order other than the stored one. The store's own dict (reached with
gc.get_referents) is timed too: the same table behind a different call.
docs/performance.md ("Benchmarks that measured less than users do") has
figures measured with it."""

import argparse
import gc
import random
import tempfile
import time

from norikv import FsyncPolicy, KvStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    n = a.keys
    order = list(range(n))
    random.Random(42).shuffle(order)
    keys = [b"key:%012d" % i for i in order]
    blob = random.Random(7).randbytes(100 + 4096)
    values = [b"%08d" % i + blob[i % 4096 : i % 4096 + 92] for i in range(n)]
    pairs = list(zip(keys, values))
    built = dict(pairs)
    with tempfile.TemporaryDirectory() as d:
        store = KvStore.open(d, fsync_policy=FsyncPolicy.OS, auto_compact=False)
        for k, v in pairs:
            store.put(k, v)
        inserted = {}
        for k, v in pairs:
            inserted[k] = v
        own = [o for o in gc.get_referents(store) if isinstance(o, dict) and len(o) == n]
        stored = list(keys)
        random.Random(43).shuffle(stored)
        fresh = [bytes(bytearray(k)) for k in stored]
        gets = [("dict(pairs).get", built.get), ("setitem dict.get", inserted.get), ("KvStore.get", store.get)]
        if own:
            gets.append(("the store's dict.get", own[0].get))

        def ns_per_get(get, ks) -> float:
            t0 = time.perf_counter()
            for k in ks:
                get(k)
            return (time.perf_counter() - t0) / len(ks) * 1e9

        for kind, ks in (("stored objects", stored), ("fresh objects", fresh)):
            best = {name: min(ns_per_get(g, ks) for _ in range(a.rounds)) for name, g in gets}
            print(f"{n:,} keys, {kind}: " + ", ".join(f"{name} {ns:.0f} ns" for name, ns in best.items()))
        store.close()


if __name__ == "__main__":
    main()
