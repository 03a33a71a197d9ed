"""What a run of puts makes the kernel write, by fsync policy; and the floor
of a 1 KiB put (a bare copy into a mapping).

    python scripts/write_path_pages.py [DIR] [--n 2000000] [--value-size 100] [--values disk]
    python scripts/write_path_pages.py --copy-floor [DIR] [--n 250000] [--value-size 1024]

The first form puts n random 16-byte keys under FsyncPolicy.OS and under
FsyncPolicy.batch(0.005) and prints, for each, puts/s, the writer thread's
CPU time and page faults, the fsyncs, and the page-cache pages dirtied and
written meanwhile (nr_dirtied and nr_written of /proc/vmstat: system-wide,
so run it on a quiet machine). Information for docs/performance.md ("A
ranged fsync for the background thread"): a whole-file fdatasync under the
batch policy dirtied 2.6x the pages of the OS policy.

The second form times a dict loop against a loop that only copies each
value into a shared mapping already faulted in for writing, the least a put
that stores the value in the mapped log has to do (docs/performance.md,
"disk put vs dict loop (1 KiB)")."""

from __future__ import annotations

import argparse
import mmap
import os
import random
import resource
import shutil
import tempfile
import time

from norikv import FsyncPolicy, KvStore


def vmstat() -> dict[str, int]:
    with open("/proc/vmstat") as f:
        return {k: int(v) for k, v in (line.split() for line in f) if k in ("nr_dirtied", "nr_written")}


def pairs(n: int, size: int) -> list[tuple[bytes, bytes]]:
    rng = random.Random(1)
    blob = rng.randbytes(size + 4096)
    return [(rng.randbytes(16), blob[i % 4096 : i % 4096 + size]) for i in range(n)]


def puts(base: str, ps: list[tuple[bytes, bytes]], values: str) -> None:
    for name, policy in (("OS", FsyncPolicy.OS), ("batch(0.005)", FsyncPolicy.batch(0.005))):
        d = os.path.join(base, "store")
        shutil.rmtree(d, ignore_errors=True)
        os.sync()
        with KvStore.open(d, fsync_policy=policy, values=values, auto_compact=False) as s:
            put = s.put
            v0, r0, t0 = vmstat(), resource.getrusage(resource.RUSAGE_THREAD), time.perf_counter()
            for k, v in ps:
                put(k, v)
            t1, r1, v1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_THREAD), vmstat()
            fsyncs = s.stats()["fsyncs"]
        print(
            f"{name:>13}: {len(ps) / (t1 - t0) / 1e6:.2f} M puts/s, writer CPU "
            f"{r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime:.2f} s, "
            f"{r1.ru_minflt - r0.ru_minflt} faults, {fsyncs} fsyncs, pages dirtied "
            f"{v1['nr_dirtied'] - v0['nr_dirtied']:,}, written {v1['nr_written'] - v0['nr_written']:,}"
        )


def copy_floor(base: str, ps: list[tuple[bytes, bytes]]) -> None:
    size = len(ps[0][1])
    for _ in range(3):
        d: dict[bytes, bytes] = {}
        t = time.perf_counter()
        for k, v in ps:
            d[k] = v
        t_dict = time.perf_counter() - t
        path = os.path.join(base, "floor")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            length = len(ps) * (size + 64)
            os.posix_fallocate(fd, 0, length)
            with mmap.mmap(fd, length) as mm:
                mm.madvise(getattr(mmap, "MADV_POPULATE_WRITE", 23))  # (Linux 5.14+; Python names it from 3.12)
                t = time.perf_counter()
                off = 0
                for _k, v in ps:
                    mm[off : off + size] = v
                    off += size + 34  # (a record's header and key)
                t_copy = time.perf_counter() - t
        finally:
            os.close(fd)
            os.unlink(path)
        print(
            f"dict loop {len(ps) / t_dict / 1e6:.2f} M/s, copy into the mapping {len(ps) / t_copy / 1e6:.2f} M/s: "
            f"{t_dict / t_copy:.2f}x the dict loop"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", nargs="?", default=None)
    ap.add_argument("--copy-floor", action="store_true")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--value-size", type=int, default=None)
    ap.add_argument("--values", choices=["memory", "disk"], default="disk")
    a = ap.parse_args()
    n = a.n or (250_000 if a.copy_floor else 2_000_000)
    size = a.value_size or (1024 if a.copy_floor else 100)
    base = a.dir or tempfile.mkdtemp(prefix="norikv-pages-")
    os.makedirs(base, exist_ok=True)
    try:
        ps = pairs(n, size)
        if a.copy_floor:
            copy_floor(base, ps)
        else:
            puts(base, ps, a.values)
    finally:
        if a.dir is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
