"""State shared by the benchmark modules: sizes from the environment, the best
round of each benchmark, and the list of project targets for the summary."""

from __future__ import annotations

import os
import shutil

N = int(os.environ.get("NORIKV_BENCH_N", "1000000"))
SYNC_N = int(os.environ.get("NORIKV_BENCH_SYNC_N", "2000"))
ROUNDS = int(os.environ.get("NORIKV_BENCH_ROUNDS", "3"))
# "wall" (default) or "cpu": with "cpu" the CPU-bound benchmarks (not the fsync
# ones) are timed with time.process_time (all threads of the process, user +
# system), which a shared, busy machine disturbs far less than wall time.
CLOCK = os.environ.get("NORIKV_BENCH_CLOCK", "wall")
KEY_SIZE = 16
VALUE_SIZE = 100

# The peers a user would pick instead (the bench extra installs them).
try:
    import lmdb
except ImportError:  # pragma: no cover
    lmdb = None
try:
    import semidbm
except ImportError:  # pragma: no cover
    semidbm = None

# name -> best (minimum) seconds of a round, filled as benchmarks finish
_BEST: dict[str, float] = {}
# target rows, in the order they are declared
_TARGETS: list[dict] = []


def best_seconds(benchmark) -> float:
    """Seconds of the best round of a finished pytest-benchmark run."""
    return benchmark.stats.stats.min


def remember(name: str, benchmark, ops: float | None = None, unit: str = "ops") -> float:
    """Stores the best round of `benchmark` under `name`; records ops/s in extra_info."""
    sec = best_seconds(benchmark)
    _BEST[name] = sec
    if ops is not None:
        benchmark.extra_info[f"{unit}_per_second"] = ops / sec
        benchmark.extra_info[unit] = ops
    return sec


def target(
    name: str, figure: str, value: float | None, goal: float, *, op: str = ">=", reference: str = "", benchmark=None
) -> None:
    """Declares a project target: `value` (a ratio or an absolute rate) against `goal`.
    value None means the figure could not be measured (reference missing)."""
    met = None if value is None else (value >= goal if op == ">=" else value <= goal)
    row = dict(name=name, figure=figure, value=value, goal=goal, op=op, reference=reference, met=met)
    _TARGETS[:] = [t for t in _TARGETS if t["name"] != name] + [row]
    if benchmark is not None:
        benchmark.extra_info["target"] = f"{name}: {value if value is None else round(value, 3)} {op} {goal}"


def best(name: str) -> float | None:
    return _BEST.get(name)


def interleaved(benchmark, subject, subject_setup, reference, reference_setup=None, rounds: int | None = None) -> float:
    """Benchmarks `subject` and, in the untimed setup before each of its rounds,
    one round of `reference`, timed here. On a busy machine both see the same
    load, so their ratio is steadier than that of two separate benchmarks.
    The setups return the positional arguments (a tuple) of their function.
    Returns the best reference round in seconds (also put into extra_info)."""
    from time import perf_counter

    ref_times: list[float] = []
    clock = getattr(benchmark, "_timer", perf_counter)

    def setup():
        args = reference_setup() if reference_setup is not None else ()
        t0 = clock()
        reference(*args)
        ref_times.append(clock() - t0)
        return subject_setup(), {}

    benchmark.pedantic(subject, setup=setup, rounds=rounds or ROUNDS, iterations=1)
    best_ref = min(ref_times)
    benchmark.extra_info["reference_best_seconds"] = best_ref
    benchmark.extra_info["reference_seconds"] = ref_times
    return best_ref


def fresh_lookups(keys, seed: int) -> list[bytes]:
    """The keys as a user looks them up: equal keys as new objects (parsed
    from a request, not the objects stored: no identity shortcut in a dict's
    compare), in another random order than they were stored in."""
    import random

    lookups = [bytes(bytearray(k)) for k in keys]
    random.Random(seed).shuffle(lookups)
    return lookups


def durable_write_rate(root: str, nbytes: int, window: float = 0.005, rounds: int = 3) -> float:
    """What this machine's storage takes when a log must be durable within
    `window` (the default batch policy's promise), with no key-value work at
    all: bytes per second (best of `rounds`) of 1 MiB os.write calls into a
    fresh file while another thread fdatasyncs it every `window` seconds
    (norikv's background flusher does the same), then a last fdatasync. A
    ceiling for any put loop under FsyncPolicy.batch(window) whose log grows
    faster than the storage writes."""
    import threading
    import time

    chunk = b"\xa5" * (1 << 20)
    best_rate = 0.0
    path = os.path.join(root, "durable-write-rate")
    for _ in range(rounds):
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        done = threading.Event()

        def flusher(fd=fd, done=done):
            while not done.wait(window):
                os.fdatasync(fd)

        th = threading.Thread(target=flusher)
        try:
            t0 = time.perf_counter()
            th.start()
            left = nbytes
            while left > 0:
                left -= os.write(fd, chunk if left >= len(chunk) else chunk[:left])
            done.set()
            th.join()
            os.fdatasync(fd)
            best_rate = max(best_rate, nbytes / (time.perf_counter() - t0))
        finally:
            done.set()
            os.close(fd)
            os.unlink(path)
    return best_rate


# The durable writer of DurableWritesBeside: `rate` bytes a second into its
# own already-written file (no extent to convert), in one write and one
# fdatasync every `window` seconds, until killed.
_DURABLE_WRITER = """
import os, sys, time
path, rate, window = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
ring = 64 << 20
chunk = max(4096, int(rate * window) // 4096 * 4096)
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, bytes(ring))
os.fsync(fd)
buf = os.urandom(chunk)
print("ready", flush=True)
off, due = 0, time.monotonic()
while True:
    os.pwrite(fd, buf, off)
    os.fdatasync(fd)
    off = (off + chunk) % (ring - ring % chunk)
    due += window
    if due > time.monotonic():
        time.sleep(due - time.monotonic())  # pacing (the next write is due), not a wait for an event
    else:
        due = time.monotonic()
"""


class DurableWritesBeside:
    """Another process that makes `rate` bytes a second durable beside the
    benchmark (pwrite, then fdatasync every `window` seconds, into a file of
    its own): the storage's work a store under FsyncPolicy.batch(window)
    must have done for it, with none of the store's own work. start() returns
    once the process writes; stop() kills it (idempotent)."""

    def __init__(self, root: str, window: float = 0.005):
        self.path = os.path.join(root, "durable-writes-beside")
        self.window = window
        self.proc = None

    def start(self, rate: float) -> None:
        import subprocess
        import sys

        self.stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _DURABLE_WRITER, self.path, str(rate), str(self.window)],
            stdout=subprocess.PIPE,
            text=True,
        )
        if self.proc.stdout.readline().strip() != "ready":
            self.stop()
            raise RuntimeError("the durable writer did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()
            self.proc = None
        if os.path.exists(self.path):
            os.unlink(self.path)


class Scratch:
    """Fresh directories under the bench root, removed when the next one is made."""

    def __init__(self, root: str, name: str):
        self.root = root
        self.name = name
        self.count = 0
        self.current: str | None = None

    def new(self) -> str:
        self.clean()
        self.count += 1
        self.current = os.path.join(self.root, f"{self.name}-{self.count}")
        return self.current

    def clean(self) -> None:
        if self.current is not None:
            shutil.rmtree(self.current, ignore_errors=True)
            self.current = None


def cpu_bound(benchmark) -> None:
    """Marks a CPU-bound benchmark: timed with process_time when NORIKV_BENCH_CLOCK=cpu."""
    import time

    if CLOCK == "cpu":
        benchmark._timer = time.process_time  # pytest-benchmark's timer attribute
        benchmark.extra_info["clock"] = "process_time"
    else:
        benchmark.extra_info["clock"] = "perf_counter"


class Closer:
    """Closes what the previous round opened when the next round is set up."""

    def __init__(self):
        self.objs = []

    def replace(self, *objs):
        while self.objs:
            self.objs.pop().close()
        self.objs.extend(objs)
        return objs[0] if objs else None


def open_store(path, policy=None, **kw):
    """A KvStore for benchmarks: OS policy unless told, no auto-compaction."""
    from norikv import FsyncPolicy, KvStore

    return KvStore.open(path, fsync_policy=policy or FsyncPolicy.OS, auto_compact=False, **kw)
