"""Shared fixtures and the target summary of the norikv benchmark suite.

Run:   python -m pytest benchmarks/ --benchmark-only
Quick: NORIKV_BENCH_N=100000 python -m pytest benchmarks/ --benchmark-only

Every target of the project is reported as a figure and, where it is relative,
as a ratio against a reference measured in the same run (a plain dict, lmdb,
a raw write+fdatasync loop, semidbm, one thread). Nothing here asserts on
speed: the summary at the end says, per target, whether it was met.

Environment:
  NORIKV_BENCH_N        keys/records of the bulk benchmarks (default 1,000,000)
  NORIKV_BENCH_SYNC_N   durable operations of the fsync benchmarks (default 2,000)
  NORIKV_BENCH_ROUNDS   rounds per benchmark (default 3; the best round counts)
  NORIKV_BENCH_CLOCK    wall (default) or cpu: time the CPU-bound benchmarks with
                        time.process_time (for a busy shared machine)
  NORIKV_BENCH_DIR      where benchmark data goes (default: pytest's tmp dir);
                        must be a real disk for the fsync figures to mean anything
  NORIKV_BENCH_SUMMARY  write the target table as JSON to this path too
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import tempfile

import pytest

from benchlib import _BEST, _TARGETS, CLOCK, KEY_SIZE, ROUNDS, SYNC_N, VALUE_SIZE, Closer, N, Scratch


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _TARGETS:
        return
    tr = terminalreporter
    tr.section("norikv targets (ratios against references measured in this run)")
    tr.write_line(
        f"N={N:,} keys of {KEY_SIZE} B, values {VALUE_SIZE} B; durable ops={SYNC_N:,}; "
        f"best of {ROUNDS} rounds; clock={CLOCK}; {platform.machine()}, {os.cpu_count()} cpus, "
        f"Python {platform.python_version()}"
    )
    w = max(len(t["name"]) for t in _TARGETS)
    tr.write_line(f"{'target':<{w}}  {'measured':<44} {'value':>9}  goal      result")
    for t in _TARGETS:
        v = "n/a" if t["value"] is None else f"{t['value']:.3g}"
        res = "n/a" if t["met"] is None else ("PASS" if t["met"] else "MISS")
        tr.write_line(f"{t['name']:<{w}}  {t['figure']:<44} {v:>9}  {t['op']} {t['goal']:<6} {res}")
    path = os.environ.get("NORIKV_BENCH_SUMMARY")
    if path:
        with open(path, "w") as f:
            json.dump(
                dict(
                    n=N,
                    sync_n=SYNC_N,
                    rounds=ROUNDS,
                    clock=CLOCK,
                    cpus=os.cpu_count(),
                    python=platform.python_version(),
                    targets=_TARGETS,
                    best_seconds=_BEST,
                ),
                f,
                indent=2,
            )
        tr.write_line(f"written to {path}")


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def bench_root(tmp_path_factory):
    base = os.environ.get("NORIKV_BENCH_DIR")
    if base:
        os.makedirs(base, exist_ok=True)
        d = tempfile.mkdtemp(prefix="norikv-bench-", dir=base)
        yield d
        shutil.rmtree(d, ignore_errors=True)
    else:
        d = str(tmp_path_factory.mktemp("norikv-bench"))
        yield d
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def scratch(bench_root, request):
    s = Scratch(bench_root, request.node.name.replace("[", "-").replace("]", ""))
    yield s
    s.clean()


@pytest.fixture(scope="session")
def keys() -> list[bytes]:
    """N distinct 16-byte keys in random order."""
    order = list(range(N))
    random.Random(42).shuffle(order)
    return [b"key:%012d" % i for i in order]


@pytest.fixture(scope="session")
def values() -> list[bytes]:
    """N distinct 100-byte values."""
    blob = random.Random(7).randbytes(VALUE_SIZE + 4096)
    return [b"%08d" % i + blob[i % 4096 : i % 4096 + VALUE_SIZE - 8] for i in range(N)]


@pytest.fixture(scope="session")
def pairs(keys, values) -> list[tuple[bytes, bytes]]:
    return list(zip(keys, values))


@pytest.fixture(scope="session")
def loaded_store(bench_root, pairs):
    """A closed KvStore directory holding the N pairs (written with the OS policy)."""
    from norikv import FsyncPolicy, KvStore

    path = os.path.join(bench_root, "loaded-store")
    store = KvStore.open(path, fsync_policy=FsyncPolicy.OS, auto_compact=False)
    put = store.put
    for k, v in pairs:
        put(k, v)
    store.close()
    return path


@pytest.fixture
def closer():
    """A Closer that also closes what the last round left open at teardown."""
    c = Closer()
    yield c
    c.replace()
