"""The write path at the hardware's price (issue 15).

- KvStore.put under FsyncPolicy.batch(0.005), the default, against the same
  loop under FsyncPolicy.OS, each round of one right before a round of the
  other: random 16-byte keys, 100 B and 1 KiB values, both value modes, one
  thread. Target: batch >= 0.9x OS.
- A durable commit: sync() after 1,000 puts against a raw pwrite +
  fdatasync of the same bytes (target <= 1.3x), and 1,000 puts + sync()
  against lmdb's transactions of 1,000 with sync=True, sequential and random
  keys (target >= 1.5x).
- A guard of the project's own: puts into a store that was closed and
  opened again against puts into a new one (>= 0.9x).
- Two info rows, the machine's limits for those targets, measured in the
  same run: put under OS while another process makes the log's byte rate
  durable (5 ms fdatasyncs) against put under OS alone, the ceiling of the
  batch-vs-OS rows; and a dict plus one pwrite + fdatasync of each commit's
  bytes against lmdb, the floor of a durable commit.

docs/performance.md, "The write path under the batch policy", has the
figures and what each cost was."""

from __future__ import annotations

import os
import random
import time

import pytest

from benchlib import (
    ROUNDS,
    DurableWritesBeside,
    N,
    Scratch,
    best,
    best_seconds,
    interleaved,
    lmdb,
    open_store,
    remember,
    target,
)
from norikv import FsyncPolicy, Record

_SIZES = {100: N, 1024: max(1, N // 4)}  # about 130 MB and 260 MB of log per round


def _loop(put, pairs):
    for k, v in pairs:
        put(k, v)


@pytest.fixture(scope="module")
def random_pairs_by_size(keys):
    out = {}
    for size, n in _SIZES.items():
        blob = random.Random(size).randbytes(size + 4096)
        out[size] = [(k, blob[i % 4096 : i % 4096 + size]) for i, k in enumerate(keys[:n])]
    return out


def _interleaved_stores(benchmark, closer, scratches, *args, rounds=None, after=None):
    """interleaved(benchmark, *args) over stores made in `scratches`, for
    `rounds` (default max(ROUNDS, 5)); afterwards, error or not, calls
    `after`, closes the last store and removes the scratch directories."""
    try:
        return interleaved(benchmark, *args, rounds=rounds or max(ROUNDS, 5))
    finally:
        if after is not None:
            after()
        closer.replace()
        for scratch in scratches:
            scratch.clean()


def _batch_vs_os(benchmark, bench_root, closer, name, work, **open_kw):
    """Rounds of `work(store)` on a fresh store under batch(0.005), each
    after a round on a fresh store under OS (interleaved). Returns the best
    batch and OS seconds and the batch store's fsyncs per second per round."""

    batch_dirs = Scratch(bench_root, f"batch-{name}")
    os_dirs = Scratch(bench_root, f"os-{name}")
    fsync_rates: list[float] = []

    def subject(store):
        t0, before = time.perf_counter(), store.stats()["fsyncs"]
        work(store)
        fsync_rates.append((store.stats()["fsyncs"] - before) / (time.perf_counter() - t0))

    def setup(dirs, policy):
        closer.replace()
        dirs.clean()
        return (closer.replace(open_store(dirs.new(), policy, **open_kw)),)

    ref = _interleaved_stores(
        benchmark,
        closer,
        (batch_dirs, os_dirs),
        subject,
        lambda: setup(batch_dirs, FsyncPolicy.batch(0.005)),
        work,
        lambda: setup(os_dirs, FsyncPolicy.OS),
    )
    benchmark.extra_info["fsyncs_per_second"] = fsync_rates
    return best_seconds(benchmark), ref, fsync_rates


def _report_batch_vs_os(benchmark, row, n, sec, ref, fsync_rates, reference):
    target(
        f"put, batch(5 ms) vs OS policy, {row}",
        f"{n / sec / 1e6:.2f} M puts/s vs OS {n / ref / 1e6:.2f} M"
        f" ({min(fsync_rates):.0f}-{max(fsync_rates):.0f} fsyncs/s)",
        ref / sec,
        0.9,
        reference=reference,
        benchmark=benchmark,
    )


@pytest.mark.benchmark(group="write-path-batch-vs-os")
@pytest.mark.parametrize("values", ["memory", "disk"])
@pytest.mark.parametrize("size", sorted(_SIZES))
def test_put_batch_policy_vs_os(benchmark, bench_root, closer, random_pairs_by_size, size, values):
    pairs = random_pairs_by_size[size]
    sec, ref, rates = _batch_vs_os(
        benchmark, bench_root, closer, f"{size}-{values}", lambda store: _loop(store.put, pairs), values=values
    )
    remember(f"norikv_put_batch_{size}_{values}", benchmark, len(pairs), "puts")
    _report_batch_vs_os(
        benchmark,
        f"{size} B values, {values} mode",
        len(pairs),
        sec,
        ref,
        rates,
        "KvStore.put under FsyncPolicy.OS, same keys",
    )


@pytest.mark.benchmark(group="write-path-batch-vs-os")
def test_put_batch_policy_vs_os_4_threads(benchmark, bench_root, closer, random_pairs_by_size):
    """Target: with 4 threads putting (disjoint keys, 100 B, memory mode),
    batch(0.005) >= 0.9x OS."""
    import threading

    pairs = random_pairs_by_size[100]
    parts = [pairs[i::4] for i in range(4)]

    def threads(store):
        ts = [threading.Thread(target=_loop, args=(store.put, part)) for part in parts]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    sec, ref, rates = _batch_vs_os(benchmark, bench_root, closer, "4-threads", threads)
    remember("norikv_put_batch_4_threads", benchmark, len(pairs), "puts")
    _report_batch_vs_os(
        benchmark, "4 threads, 100 B values", len(pairs), sec, ref, rates, "the same 4 threads under FsyncPolicy.OS"
    )


@pytest.mark.benchmark(group="write-path-batch-vs-os")
def test_put_os_beside_durable_writes_vs_alone(benchmark, bench_root, closer, random_pairs_by_size):
    """Info, the storage's ceiling for the batch-vs-OS rows: put under OS
    (100 B values, memory mode) while another process makes the bytes the
    batch policy's log grew by durable (its own file, an fdatasync every
    5 ms: DurableWritesBeside), against the same puts with nothing beside
    them (interleaved). No store can make its log durable within 5 ms for
    less than this costs its writer here: the batch rows (100 B) have this
    ratio for a ceiling."""
    pairs = random_pairs_by_size[100]
    record = len(Record.put(*pairs[0]).encode())
    beside = DurableWritesBeside(bench_root)
    alone_dirs = Scratch(bench_root, "os-alone")
    beside_dirs = Scratch(bench_root, "os-beside")
    batch_sec = best("norikv_put_batch_100_memory")
    if batch_sec is None:  # run alone with -k: the rate of an OS round instead
        with open_store(alone_dirs.new(), FsyncPolicy.OS) as store:
            t0 = time.perf_counter()
            _loop(store.put, pairs)
            batch_sec = time.perf_counter() - t0
    rate = record * len(pairs) / batch_sec

    def alone_setup():
        beside.stop()
        closer.replace()
        beside_dirs.clean()
        return (closer.replace(open_store(alone_dirs.new(), FsyncPolicy.OS)).put, pairs)

    def beside_setup():
        closer.replace()
        alone_dirs.clean()
        store = closer.replace(open_store(beside_dirs.new(), FsyncPolicy.OS))
        beside.start(rate)
        return (store.put, pairs)

    ref = _interleaved_stores(
        benchmark, closer, (alone_dirs, beside_dirs), _loop, beside_setup, _loop, alone_setup, after=beside.stop
    )
    sec = remember("norikv_put_os_beside_durable_writes", benchmark, len(pairs), "puts")
    benchmark.extra_info.update(durable_bytes_per_second=rate, record_bytes=record)
    target(
        "put under OS beside durable writes of the log's bytes vs alone: the batch rows' ceiling (info)",
        f"{len(pairs) / sec / 1e6:.2f} M puts/s vs alone {len(pairs) / ref / 1e6:.2f} M"
        f" ({rate / 1e6:.0f} MB/s made durable beside)",
        ref / sec,
        0.9,
        reference="the same puts under FsyncPolicy.OS, nothing beside them",
        benchmark=benchmark,
    )


@pytest.mark.benchmark(group="write-path-batch-vs-os")
def test_put_batch_policy_vs_dict(benchmark, bench_root, closer, random_pairs_by_size):
    """Target: KvStore.put under the default batch(0.005), 100 B values,
    >= 0.8x the same loop over a plain dict (put = d.__setitem__)."""
    pairs = random_pairs_by_size[100]
    dirs = Scratch(bench_root, "batch-vs-dict")

    def subject_setup():
        closer.replace()
        dirs.clean()
        return (closer.replace(open_store(dirs.new(), FsyncPolicy.batch(0.005))).put, pairs)

    ref = _interleaved_stores(
        benchmark, closer, (dirs,), _loop, subject_setup, _loop, lambda: (({}).__setitem__, pairs)
    )
    sec = remember("norikv_put_batch_vs_dict", benchmark, len(pairs), "puts")
    target(
        "put, batch(5 ms), 100 B values, vs a dict loop",
        f"{len(pairs) / sec / 1e6:.2f} M puts/s vs dict {len(pairs) / ref / 1e6:.2f} M",
        ref / sec,
        0.8,
        reference="the same loop over a dict",
        benchmark=benchmark,
    )


@pytest.mark.benchmark(group="write-path-reopened")
def test_put_into_a_reopened_store_vs_a_new_one(benchmark, bench_root, closer, random_pairs_by_size):
    """The project's own guard (no issue target): puts under the default
    policy into a store that was closed and opened again (its active segment
    truncated to its records at close) at least 0.9x the same puts into a
    new store. Most stores a service writes to were opened, not created."""
    pairs = random_pairs_by_size[100]
    new_dirs = Scratch(bench_root, "put-new")
    old_dirs = Scratch(bench_root, "put-reopened")

    def reopened():
        closer.replace()
        old_dirs.clean()
        path = old_dirs.new()
        with open_store(path, FsyncPolicy.batch(0.005)) as store:
            store.put(b"first", b"x")
        return (closer.replace(open_store(path, FsyncPolicy.batch(0.005))).put, pairs)

    def new():
        closer.replace()
        new_dirs.clean()
        return (closer.replace(open_store(new_dirs.new(), FsyncPolicy.batch(0.005))).put, pairs)

    ref = _interleaved_stores(benchmark, closer, (new_dirs, old_dirs), _loop, reopened, _loop, new)
    sec = remember("norikv_put_reopened", benchmark, len(pairs), "puts")
    target(
        "put into a reopened store vs a new one (guard)",
        f"{len(pairs) / sec / 1e6:.2f} M puts/s vs new {len(pairs) / ref / 1e6:.2f} M",
        ref / sec,
        0.9,
        reference="the same puts into a new store",
        benchmark=benchmark,
    )


# ------------------------------------------------------------ a durable commit

COMMIT = 1000  # puts per commit
# 123 MB: about a whole segment (128 MiB). 200 commits covered its first 25 MB
# only, where page-cache folios are still small, and hid what a sync() cost
# deeper in (4x the raw fdatasync before 2026-11-30's tenth session).
COMMITS = 1000


def _commit_pairs(keys, order):
    chosen = keys[: COMMIT * COMMITS]
    if order == "sequential":  # (new objects, laid out in memory in the order they are used)
        chosen = [bytes(bytearray(k)) for k in sorted(chosen)]
    value = random.Random(3).randbytes(100)
    return [(k, value) for k in chosen]


@pytest.mark.benchmark(group="write-path-commit")
def test_sync_after_1000_puts_vs_raw_fdatasync(benchmark, bench_root, closer, keys):
    """Target: sync() after 1,000 puts of 100 B costs at most 1.3x a raw
    pwrite + fdatasync of the same bytes into an already-written file,
    measured beside it (medians over COMMITS commits)."""
    import statistics

    pairs = _commit_pairs(keys, "random")
    dirs = Scratch(bench_root, "commit-store")
    raw_path = os.path.join(bench_root, "commit-raw")
    syncs: list[float] = []
    raws: list[float] = []
    sizes: list[int] = []

    def raw_round():
        size = sizes[-1] if sizes else COMMIT * 150
        fd = os.open(raw_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, bytes(size * COMMITS))  # already written: no extent to convert
            os.fsync(fd)
            buf = random.Random(5).randbytes(size)
            for i in range(COMMITS):
                t = time.perf_counter()
                os.pwrite(fd, buf, i * size)
                os.fdatasync(fd)
                raws.append(time.perf_counter() - t)
        finally:
            os.close(fd)
            os.unlink(raw_path)

    def setup():
        raw_round()
        closer.replace()
        store = closer.replace(open_store(dirs.new(), FsyncPolicy.OS))
        return (store,), {}

    def run(store):
        put, sync = store.put, store.sync
        perf = time.perf_counter
        for i in range(0, len(pairs), COMMIT):
            before = store.wal.written_total
            for k, v in pairs[i : i + COMMIT]:
                put(k, v)
            sizes.append(store.wal.written_total - before)
            t = perf()
            sync()
            syncs.append(perf() - t)

    try:
        benchmark.pedantic(run, setup=setup, rounds=max(ROUNDS, 3), iterations=1)
    finally:
        closer.replace()
        dirs.clean()
    sync_med, raw_med = statistics.median(syncs), statistics.median(raws)
    benchmark.extra_info.update(sync_median_us=sync_med * 1e6, raw_median_us=raw_med * 1e6, bytes=sizes[-1])
    target(
        "sync() after 1,000 puts vs raw pwrite + fdatasync of the same bytes",
        f"median {sync_med * 1e6:.0f} us vs raw {raw_med * 1e6:.0f} us ({sizes[-1]:,} B)",
        sync_med / raw_med,
        1.3,
        op="<=",
        reference="pwrite + fdatasync into an already-written file",
        benchmark=benchmark,
    )


class _LmdbCommits:
    """lmdb committing `pairs` in transactions of COMMIT puts with
    sync=True (data, then meta page), a new environment each round."""

    def __init__(self, root, name, pairs):
        self.dirs = Scratch(root, name)
        self.pairs = pairs
        self.envs = []

    def setup(self):
        self.close()
        self.envs.append(lmdb.open(self.dirs.new(), map_size=1 << 30, sync=True, metasync=True))
        return (self.envs[-1],)

    def run(self, env):
        pairs = self.pairs
        for i in range(0, len(pairs), COMMIT):
            with env.begin(write=True) as txn:
                for k, v in pairs[i : i + COMMIT]:
                    txn.put(k, v)

    def close(self):
        while self.envs:
            self.envs.pop().close()
        self.dirs.clean()


@pytest.mark.benchmark(group="write-path-commit")
@pytest.mark.skipif(lmdb is None, reason="lmdb not installed (pip install norikv[bench])")
@pytest.mark.parametrize("order", ["sequential", "random"])
def test_durable_batches_vs_lmdb(benchmark, bench_root, closer, keys, order):
    """Target: 1,000 puts + sync(), COMMITS times, >= 1.5x lmdb committing
    transactions of 1,000 puts with sync=True (data, then meta page)."""
    pairs = _commit_pairs(keys, order)
    dirs = Scratch(bench_root, f"durable-{order}")
    lm_envs = _LmdbCommits(bench_root, f"durable-lmdb-{order}", pairs)

    def run(store):
        put, sync = store.put, store.sync
        for i in range(0, len(pairs), COMMIT):
            for k, v in pairs[i : i + COMMIT]:
                put(k, v)
            sync()

    def subject_setup():
        closer.replace()
        return (closer.replace(open_store(dirs.new(), FsyncPolicy.OS)),)

    lm = _interleaved_stores(
        benchmark, closer, (dirs,), run, subject_setup, lm_envs.run, lm_envs.setup, rounds=ROUNDS, after=lm_envs.close
    )
    sec = remember(f"norikv_durable_batches_{order}", benchmark, len(pairs), "puts")
    target(
        f"1,000 puts + sync() vs lmdb txns of 1,000 (sync=True), {order} keys",
        f"{len(pairs) / sec / 1e3:,.0f} k puts/s vs lmdb {len(pairs) / lm / 1e3:,.0f} k",
        lm / sec,
        1.5,
        reference="lmdb.open(sync=True, metasync=True)",
        benchmark=benchmark,
    )


@pytest.mark.benchmark(group="write-path-commit")
@pytest.mark.skipif(lmdb is None, reason="lmdb not installed (pip install norikv[bench])")
def test_durable_commit_floor_vs_lmdb(benchmark, bench_root, keys):
    """Info, the floor of the sequential durable-batch row: per commit, the
    1,000 puts into a plain dict and one pwrite + fdatasync of the bytes
    norikv's commit writes (no encoding, no CRC, no log format), against
    lmdb's transactions as in that row. The log is a new file, as a new
    store's is: preallocated (posix_fallocate, the timed subject) or grown
    by each write (timed beside it); the row's value is the better of the
    two. A store that keeps its keys in a dict and appends a new log cannot
    commit faster than this on this machine. Also timed: the same loop into
    a file whose zeros were written and synced beforehand (untimed), which
    a new log reaches only by writing those zeros, as dearly, in its loop."""
    pairs = _commit_pairs(keys, "sequential")
    size = sum(len(Record.put(k, v).encode()) for k, v in pairs[:COMMIT])
    commits = len(pairs) // COMMIT
    path = os.path.join(bench_root, "commit-floor")
    lm_envs = _LmdbCommits(bench_root, "floor-lmdb", pairs)
    buf = random.Random(5).randbytes(size)
    fds: list[int] = []
    beside: dict[str, list[float]] = {"lmdb": [], "grown": [], "written": []}

    def new_file(kind):
        while fds:
            os.close(fds.pop())
        fds.append(os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644))
        if kind == "preallocated":
            os.posix_fallocate(fds[0], 0, size * max(commits, 1))
        elif kind == "written":
            os.write(fds[0], bytes(size * commits))
        os.fsync(fds[0])
        return ({}, fds[0])

    def floor(table, fd):
        put = table.__setitem__
        for c in range(commits):
            for k, v in pairs[c * COMMIT : (c + 1) * COMMIT]:
                put(k, v)
            os.pwrite(fd, buf, c * size)
            os.fdatasync(fd)

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        fn(*args)
        beside[name].append(time.perf_counter() - t0)

    def setup():
        timed("lmdb", lm_envs.run, *lm_envs.setup())
        timed("grown", floor, *new_file("grown"))
        timed("written", floor, *new_file("written"))
        return new_file("preallocated"), {}

    try:
        benchmark.pedantic(floor, setup=setup, rounds=ROUNDS, iterations=1)
    finally:
        while fds:
            os.close(fds.pop())
        lm_envs.close()
        if os.path.exists(path):
            os.unlink(path)
    benchmark.extra_info.update({f"{name}_seconds": times for name, times in beside.items()})
    sec = min(remember("durable_commit_floor", benchmark, len(pairs), "puts"), min(beside["grown"]))
    lm, written = min(beside["lmdb"]), min(beside["written"])
    norikv = best("norikv_durable_batches_sequential")
    of_floor = "" if norikv is None else f"; norikv {sec / norikv:.3f} of it"
    target(
        "a dict + pwrite + fdatasync per commit into a new file vs lmdb, sequential keys: the floor (info)",
        f"{len(pairs) / sec / 1e3:,.0f} k puts/s ({size:,} B a commit) vs lmdb {len(pairs) / lm / 1e3:,.0f} k;"
        f" zeros written beforehand {lm / written:.2f}x lmdb{of_floor}",
        lm / sec,
        1.5,
        reference="lmdb.open(sync=True, metasync=True)",
        benchmark=benchmark,
    )
