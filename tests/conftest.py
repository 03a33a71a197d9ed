"""Shared test configuration.

Long soak/torture runs carry ``@pytest.mark.slow`` and run only with
``NORIKV_SLOW=1`` (CI runs a bounded quick mode of each). Hypothesis uses the
``ci`` profile by default (bounded examples, no deadline: this machine is
shared and slow); ``HYPOTHESIS_PROFILE=thorough`` runs many more examples.
"""

import os
import shutil
import time
import warnings

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "thorough",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SLOW = os.environ.get("NORIKV_SLOW", "") not in ("", "0")


def fork_with_threads():
    """os.fork() in a test process that has threads running (a store's
    background thread): what these tests exercise, so Python 3.12's
    DeprecationWarning about it is silenced here, and only here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def wait_for(cond, timeout=30.0):
    """Polls cond() until it holds (True) or `timeout` seconds pass (False):
    for state another thread or process reaches on its own schedule (a
    background fsync), never as a stand-in for a synchronization."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


# Modules whose tests run twice, once per value storage: every KvStore.open
# that does not choose ``values=`` (also in the subprocesses they start, which
# inherit the environment) opens with the mode of the test's ``[memory]`` or
# ``[disk]`` id (KvStore.open reads NORIKV_TEST_VALUES for an unset ``values``).
BOTH_VALUE_MODES = {
    "test_store",
    "test_store_features",
    "test_store_model",
    "test_store_threads",
    "test_store_crash",
    "test_close_compaction",
    "test_compression",
    "test_error_boundaries",
    "test_fork",
    "test_value_damage",
    "test_options",
    "test_unopened",
    "test_cli",
    "test_mapping",
    "test_codecs",
    "test_backup",
    "test_aio",
    "test_compaction_io_errors",
    "test_concurrency",
    "test_crash_points",
    "test_full_disk",
    "test_io_errors",
    "test_torture",
    "test_skip_rewrite_errors",
    "test_processes",
    "test_snapshot",
    "test_example_prefork",
}


def sectors_written(path):
    """Bytes written to the block device holding path (its /sys stat), or None."""
    st = os.stat(path)
    try:
        with open(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/stat") as f:
            return int(f.read().split()[6]) * 512
    except (OSError, IndexError, ValueError):
        return None


def pytest_generate_tests(metafunc):
    if "value_storage" in metafunc.fixturenames and metafunc.module.__name__.rpartition(".")[2] in BOTH_VALUE_MODES:
        metafunc.parametrize("value_storage", ["memory", "disk"], indirect=True)


@pytest.fixture(autouse=True)
def value_storage(request, monkeypatch):
    """The value storage the test's stores open with by default."""
    mode = getattr(request, "param", "memory")
    monkeypatch.setenv("NORIKV_TEST_VALUES", mode)
    return mode


def pytest_collection_modifyitems(config, items):
    if SLOW:
        return
    skip = pytest.mark.skip(reason="long run: set NORIKV_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def three_segment_store(tmp_path_factory):
    """A closed store of THREE_SEGMENT_KEYS keys (``k%06d`` = ``v%06d`` + 93
    dots) in three 1 MiB segments. Shared: never modify it, copy it
    (``store_copy``)."""
    from norikv import FsyncPolicy, KvStore
    from storeutil import THREE_SEGMENT_KEYS

    d = tmp_path_factory.mktemp("three-segments") / "store"
    with KvStore.open(d, max_segment_size=1 << 20, fsync_policy=FsyncPolicy.OS) as s:
        for i in range(THREE_SEGMENT_KEYS):
            s.put(b"k%06d" % i, b"v%06d" % i + b"." * 93)
    assert len(list((d / "wal").glob("*.wal"))) == 3
    return d


@pytest.fixture
def store_copy(three_segment_store, tmp_path):
    """A copy of three_segment_store of the test's own."""
    d = tmp_path / "store"
    shutil.copytree(three_segment_store, d)
    return d


@pytest.fixture
def workers():
    """Processes with a store open (procutil.Worker: ``start(path, env=...,
    **open options)``) started by a test; whatever is left is killed at its
    end."""
    from procutil import Worker

    started = []

    def start(path, **opts):
        w = Worker(path, **opts)
        started.append(w)
        return w

    yield start
    for w in started:
        w.kill()
