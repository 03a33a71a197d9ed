"""Wal benchmarks: append by policy and record size, append_batch, read_from,
recovery, and the ALWAYS policy against a raw write + fdatasync loop."""

from __future__ import annotations

import os

import pytest

from benchlib import _BEST, ROUNDS, SYNC_N, N, Scratch, best, cpu_bound, interleaved, remember, target
from norikv import FsyncPolicy, Position, Record, Wal, WalConfig


def _open_wal(path, policy, **kw):
    wal, _ = Wal.open(WalConfig(dir=path, fsync_policy=policy, **kw))
    return wal


class _Opened:
    """Closes the Wal of the previous round when the next one is set up."""

    def __init__(self):
        self.obj = None

    def replace(self, obj=None):
        if self.obj is not None:
            self.obj.close()
        self.obj = obj
        return obj


@pytest.fixture
def opened():
    o = _Opened()
    yield o
    o.replace()


# ------------------------------------------------------------ append


def _append_loop(wal, pairs):
    append = wal.append
    put = Record.put
    for k, v in pairs:
        append(put(k, v))


@pytest.mark.benchmark(group="wal-append")
def test_append_os_100b(benchmark, scratch, opened, pairs):
    """Target: >= 2,000,000 records/s from a Python loop (OS policy, 100-byte values)."""
    cpu_bound(benchmark)

    def setup():
        opened.replace()
        return (opened.replace(_open_wal(scratch.new(), FsyncPolicy.OS)), pairs), {}

    benchmark.pedantic(_append_loop, setup=setup, rounds=ROUNDS, iterations=1)
    sec = remember("wal_append_os", benchmark, len(pairs), "records")
    rate = len(pairs) / sec
    target(
        "WAL append, OS policy, 100 B",
        f"{rate / 1e6:.2f} M records/s",
        rate / 2e6,
        1.0,
        reference="ratio to 2,000,000 records/s",
        benchmark=benchmark,
    )


@pytest.mark.benchmark(group="wal-append")
def test_append_batch_policy_100b(benchmark, scratch, opened, pairs):
    """FsyncPolicy.batch(5 ms): the background flusher fsyncs while the loop runs."""

    def setup():
        opened.replace()
        return (opened.replace(_open_wal(scratch.new(), FsyncPolicy.batch(0.005))), pairs), {}

    benchmark.pedantic(_append_loop, setup=setup, rounds=ROUNDS, iterations=1)
    remember("wal_append_batch", benchmark, len(pairs), "records")


@pytest.mark.benchmark(group="wal-append")
def test_append_os_1kb(benchmark, scratch, opened, keys):
    cpu_bound(benchmark)
    n = max(1, N // 4)
    value = os.urandom(1000)
    data = [(k, value) for k in keys[:n]]

    def setup():
        opened.replace()
        return (opened.replace(_open_wal(scratch.new(), FsyncPolicy.OS)), data), {}

    benchmark.pedantic(_append_loop, setup=setup, rounds=ROUNDS, iterations=1)
    sec = remember("wal_append_os_1kb", benchmark, n, "records")
    benchmark.extra_info["MB_per_second"] = n * 1024 / sec / 1e6


@pytest.mark.benchmark(group="wal-append")
def test_append_batch_api_100b(benchmark, scratch, opened, pairs):
    """wal.append_batch of 1,000 records at a time (OS policy)."""
    cpu_bound(benchmark)
    records = [Record.put(k, v) for k, v in pairs]
    chunks = [records[i : i + 1000] for i in range(0, len(records), 1000)]

    def run(wal):
        append_batch = wal.append_batch
        for c in chunks:
            append_batch(c)

    def setup():
        opened.replace()
        return (opened.replace(_open_wal(scratch.new(), FsyncPolicy.OS)),), {}

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    remember("wal_append_batch_api", benchmark, len(records), "records")


# ------------------------------------------------------------ recovery and reading


@pytest.fixture(scope="module")
def wal_1kb(bench_root, keys):
    """A closed WAL of 1 KB records (16-byte keys, 1,000-byte values): N/4 records."""
    path = os.path.join(bench_root, "wal-1kb")
    n = max(1, N // 4)
    value = os.urandom(1000)
    wal = _open_wal(path, FsyncPolicy.OS)
    _append_loop(wal, ((k, value) for k in keys[:n]))
    wal.close()
    size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(".wal"))
    return path, n, size


@pytest.fixture(scope="module")
def wal_100b(bench_root, pairs):
    path = os.path.join(bench_root, "wal-100b")
    wal = _open_wal(path, FsyncPolicy.OS)
    _append_loop(wal, pairs)
    wal.close()
    return path, len(pairs)


@pytest.mark.benchmark(group="wal-recovery")
def test_recovery_1kb(benchmark, opened, wal_1kb):
    """Target: open (full CRC-checked recovery) of a WAL of 1 KB records >= 3 GB/s."""
    cpu_bound(benchmark)
    path, n, size = wal_1kb

    def run():
        wal, info = Wal.open(WalConfig(dir=path, fsync_policy=FsyncPolicy.OS))
        opened.replace(wal)
        assert info.valid_records == n

    benchmark.pedantic(run, setup=lambda: opened.replace(), rounds=ROUNDS, iterations=1)
    sec = remember("wal_recovery_1kb", benchmark, n, "records")
    gbs = size / sec / 1e9
    benchmark.extra_info["GB_per_second"] = gbs
    benchmark.extra_info["bytes"] = size
    target(
        "WAL recovery, 1 KB records",
        f"{gbs:.2f} GB/s ({size / 1e6:.0f} MB)",
        gbs / 3.0,
        1.0,
        reference="ratio to 3 GB/s",
        benchmark=benchmark,
    )


@pytest.mark.benchmark(group="wal-read")
def test_read_from(benchmark, opened, wal_100b):
    """Target: read_from iteration >= 1,000,000 records/s."""
    cpu_bound(benchmark)
    path, n = wal_100b
    wal = opened.replace(_open_wal(path, FsyncPolicy.OS))

    def run():
        count = 0
        for _ in wal.read_from(Position(0, 0)):
            count += 1
        assert count == n

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    sec = remember("wal_read_from", benchmark, n, "records")
    rate = n / sec
    target(
        "WAL read_from",
        f"{rate / 1e6:.2f} M records/s",
        rate / 1e6,
        1.0,
        reference="ratio to 1,000,000 records/s",
        benchmark=benchmark,
    )


# ------------------------------------------------------------ ALWAYS vs raw fdatasync


def _record_bytes(n):
    """n encoded 123-byte records (16-byte key, 100-byte value), as raw bytes."""
    value = os.urandom(100)
    return [Record.put(b"sync:%011d" % i, value).encode() for i in range(n)]


@pytest.mark.benchmark(group="wal-always")
def test_raw_pwrite_fdatasync_preallocated(benchmark, scratch):
    """Stricter reference (information only): pwrite + fdatasync into a preallocated file."""
    recs = _record_bytes(SYNC_N)
    fds = []

    def setup():
        for fd in fds:
            os.close(fd)
        fds.clear()
        d = scratch.new()
        os.makedirs(d)
        fd = os.open(os.path.join(d, "raw.log"), os.O_RDWR | os.O_CREAT, 0o644)
        os.posix_fallocate(fd, 0, sum(len(r) for r in recs) + 4096)
        os.fsync(fd)
        fds.append(fd)
        return (fd,), {}

    def run(fd):
        pwrite = os.pwrite
        fdatasync = os.fdatasync
        off = 0
        for r in recs:
            pwrite(fd, r, off)
            off += len(r)
            fdatasync(fd)

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    for fd in fds:
        os.close(fd)
    remember("raw_pwrite_fdatasync_prealloc", benchmark, SYNC_N, "records")


class _Fds:
    def __init__(self):
        self.fds = []

    def replace(self, fd=None):
        while self.fds:
            os.close(self.fds.pop())
        if fd is not None:
            self.fds.append(fd)
        return fd


@pytest.mark.benchmark(group="wal-always")
def test_append_always_vs_raw_fdatasync(benchmark, scratch, opened, bench_root):
    """Target: FsyncPolicy.ALWAYS within 10% of a raw os.write + os.fdatasync
    loop appending the same encoded records to a new file (run before each round)."""
    value = os.urandom(100)
    records = [Record.put(b"sync:%011d" % i, value) for i in range(SYNC_N)]
    recs = [r.encode() for r in records]
    fds = _Fds()
    rscratch = Scratch(bench_root, "raw-fdatasync")

    def subject_setup():
        opened.replace()
        return (opened.replace(_open_wal(scratch.new(), FsyncPolicy.ALWAYS)),)

    def run(wal):
        append = wal.append
        for r in records:
            append(r)

    def ref_setup():
        fds.replace()
        d = rscratch.new()
        os.makedirs(d)
        return (fds.replace(os.open(os.path.join(d, "raw.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)),)

    def ref(fd):
        write = os.write
        fdatasync = os.fdatasync
        for r in recs:
            write(fd, r)
            fdatasync(fd)

    try:
        raw = interleaved(benchmark, run, subject_setup, ref, ref_setup)
    finally:
        fds.replace()
        rscratch.clean()
    sec = remember("wal_append_always", benchmark, SYNC_N, "records")
    _BEST["raw_write_fdatasync"] = raw
    target(
        "ALWAYS vs raw write+fdatasync",
        f"{SYNC_N / sec:,.0f} records/s vs {SYNC_N / raw:,.0f}",
        raw / sec,
        0.9,
        reference="raw os.write+os.fdatasync loop",
        benchmark=benchmark,
    )
    pre = best("raw_pwrite_fdatasync_prealloc")
    if pre is not None:
        benchmark.extra_info["ratio_to_preallocated_pwrite"] = pre / sec
