"""How many sync() calls share an fsync: N threads of one process, or N
processes, each in a loop of put + sync() on one new store for a few
seconds (docs/DESIGN.md, "The leader's gather").

    python scripts/group_commit.py [DIR] [--threads N | --processes N] [--seconds 2]

Prints the put + sync() calls a second, the calls per fsync, and the time
the fsync leaders waited for the others (stats()'s
fsync_gather_seconds_total). To see a device whose flush is slow, run it
under the test suite's fault shim:

    cc -shared -fPIC -O1 -o /tmp/faultshim.so tests/faults/shim/faultshim.c -ldl
    LD_PRELOAD=/tmp/faultshim.so FAULTSHIM_OPS=fdatasync,msync \\
        FAULTSHIM_ACTION=delay FAULTSHIM_DELAY_US=2000 python scripts/group_commit.py --processes 4"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import tempfile
import threading
import time

from norikv import KvStore


def _loop(store: KvStore, tag: int, until: float) -> int:
    put, sync = store.put, store.sync
    n = 0
    while time.monotonic() < until:
        put(b"%d-%d" % (tag, n), b"v" * 100)
        sync()
        n += 1
    return n


def _process(path: str, tag: int, go, seconds: float, out) -> None:
    with KvStore.open(path, auto_compact=False) as s:
        st0 = s.stats()
        go.wait()  # (every process has the store open)
        n = _loop(s, tag, time.monotonic() + seconds)
        st = s.stats()
        out.put((n, st["fsyncs"] - st0["fsyncs"], st["fsync_gather_seconds_total"] - st0["fsync_gather_seconds_total"]))


def _threads(path: str, n: int, seconds: float) -> tuple[int, int, float]:
    counts = [0] * n
    with KvStore.open(path, auto_compact=False) as s:
        until = time.monotonic() + seconds

        def run(t: int) -> None:
            counts[t] = _loop(s, t, until)

        ts = [threading.Thread(target=run, args=(t,)) for t in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        st = s.stats()
        return sum(counts), st["fsyncs"], st["fsync_gather_seconds_total"]


def _processes(path: str, n: int, seconds: float) -> tuple[int, int, float]:
    KvStore.open(path).close()
    out: multiprocessing.Queue = multiprocessing.Queue()
    go = multiprocessing.Barrier(n)
    ps = [multiprocessing.Process(target=_process, args=(path, i, go, seconds, out)) for i in range(n)]
    for p in ps:
        p.start()
    rs = [out.get() for _ in ps]
    for p in ps:
        p.join()
    return sum(r[0] for r in rs), sum(r[1] for r in rs), sum(r[2] for r in rs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", nargs="?", default=None)
    who = ap.add_mutually_exclusive_group()
    who.add_argument("--threads", type=int, default=0)
    who.add_argument("--processes", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=2.0)
    a = ap.parse_args()
    path = os.path.join(a.dir or tempfile.mkdtemp(prefix="norikv-group-commit-"), "store")
    shutil.rmtree(path, ignore_errors=True)
    if a.processes:
        what, (calls, fsyncs, gathered) = f"{a.processes} processes", _processes(path, a.processes, a.seconds)
    else:
        n = a.threads or 1
        what, (calls, fsyncs, gathered) = f"{n} thread(s)", _threads(path, n, a.seconds)
    shutil.rmtree(path, ignore_errors=True)
    print(
        f"{what}: {calls / a.seconds:,.0f} put + sync() a second, {calls / max(fsyncs, 1):.2f} calls per fsync,"
        f" leaders waited {gathered * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
