"""Where one writing process's CPU goes, and what a fresh page costs here:
the measurement behind the CPU ceiling that benchmarks/test_bench_processes.py
prints beside "4 processes put vs 1 process".

    python scripts/cpu_split.py [DIR] [--puts 800000] [--rounds 3]

Prints:
- memset of 256 MiB of anonymous memory, first touch (each page faulted in
  and zeroed by the kernel) against a second pass over the same pages;
- per round, PUTS puts of 100 B values (random 16-byte keys) into a new
  store under FsyncPolicy.OS and under the default batch policy: the wall
  time, the CPU seconds of the calling thread, and those of the store's
  background thread (prefaulting the log's pages ahead of the writer, and
  the batch policy's fsyncs). What the background thread uses is work that
  N processes writing the same puts still have to do between them, on the
  same cores."""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import random
import shutil
import tempfile
import time

from norikv import FsyncPolicy, KvStore


def _touch_rates(mib: int = 256) -> tuple[float, float]:
    n = mib << 20
    m = mmap.mmap(-1, n)
    buf = ctypes.c_char.from_buffer(m)
    addr = ctypes.addressof(buf)
    t0 = time.perf_counter()
    ctypes.memset(addr, 1, n)
    t1 = time.perf_counter()
    ctypes.memset(addr, 2, n)
    t2 = time.perf_counter()
    del buf
    m.close()
    return n / (t1 - t0) / 1e9, n / (t2 - t1) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", nargs="?", default=None)
    ap.add_argument("--puts", type=int, default=800_000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    first, second = _touch_rates()
    print(f"memset of fresh anonymous memory: {first:.2f} GB/s first touch, {second:.2f} GB/s second pass")
    rng = random.Random(1)
    blob = rng.randbytes(4196)
    pairs = [(rng.randbytes(16), blob[i % 4096 : i % 4096 + 100]) for i in range(a.puts)]
    base = a.dir or os.environ.get("NORIKV_BENCH_DIR") or tempfile.gettempdir()
    path = os.path.join(base, "cpu-split")
    policies = {"OS": FsyncPolicy.OS, "batch(0.005)": FsyncPolicy.batch(0.005)}
    try:
        for _ in range(a.rounds):
            for name, policy in policies.items():
                shutil.rmtree(path, ignore_errors=True)
                store = KvStore.open(path, auto_compact=False, fsync_policy=policy)
                put = store.put
                w0, p0, t0 = time.perf_counter(), time.process_time(), time.thread_time()
                for k, v in pairs:
                    put(k, v)
                w1, p1, t1 = time.perf_counter(), time.process_time(), time.thread_time()
                store.close()
                main_cpu, other = t1 - t0, (p1 - p0) - (t1 - t0)
                print(
                    f"{name:>12}: {a.puts / (w1 - w0) / 1e6:.2f} M puts/s; wall {w1 - w0:.3f} s,"
                    f" calling thread {main_cpu:.3f} CPU s, background {other:.3f} CPU s"
                    f" ({(p1 - p0) / (w1 - w0):.2f} cores busy)"
                )
    finally:
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
