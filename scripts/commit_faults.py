"""Times durable commits of 1,000 puts of 100 B (put x 1,000, then sync()) and
counts the page faults the writing thread takes per commit.

The shape of benchmarks/test_bench_write_path.py's durable-batch rows, OS
policy, memory mode, a new store each round: prints the best round's puts/s,
the puts' and the sync()'s time per commit and the writer's minor faults per
commit, then every round. To compare two builds, run it with PYTHONPATH
pointing at the other build's src/ (a git worktree built with
`python setup.py build_ext --inplace`), interleaving the runs:

    python scripts/commit_faults.py --order sequential --dir /tmp/commits
    PYTHONPATH=/tmp/wt/src python scripts/commit_faults.py --order sequential --dir /tmp/commits
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import time

from norikv import FsyncPolicy, KvStore


def faults() -> int:
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True, help="scratch directory (removed and made again each round)")
    ap.add_argument("--order", choices=["sequential", "random"], default="sequential")
    ap.add_argument("--puts", type=int, default=300_000)
    ap.add_argument("--commit", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    keys = [b"key:%012d" % i for i in range(a.puts)]
    if a.order == "random":
        random.Random(1).shuffle(keys)
    blob = random.Random(7).randbytes(4196)
    pairs = [(k, blob[i % 4096 : i % 4096 + 100]) for i, k in enumerate(keys)]
    commits = len(pairs) // a.commit
    rounds = []
    for _ in range(a.rounds):
        shutil.rmtree(a.dir, ignore_errors=True)
        with KvStore.open(a.dir, fsync_policy=FsyncPolicy.OS, auto_compact=False) as s:
            put, sync = s.put, s.sync
            putting = syncing = 0.0
            faulted = 0
            start = time.perf_counter()
            for i in range(0, commits * a.commit, a.commit):
                f0, t0 = faults(), time.perf_counter()
                for k, v in pairs[i : i + a.commit]:
                    put(k, v)
                t1 = time.perf_counter()
                faulted += faults() - f0
                sync()
                syncing += time.perf_counter() - t1
                putting += t1 - t0
            total = time.perf_counter() - start
        rounds.append((total, putting / commits * 1e6, syncing / commits * 1e6, faulted / commits))
    best = min(rounds)
    n = commits * a.commit
    print(
        f"{a.order}: best {n / best[0] / 1e3:,.0f} k puts/s; per commit: puts {best[1]:.0f} us,"
        f" sync {best[2]:.0f} us, writer faults {best[3]:.1f}; rounds: "
        + ", ".join(f"{n / r[0] / 1e3:,.0f}k" for r in rounds)
    )


if __name__ == "__main__":
    main()
