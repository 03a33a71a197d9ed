"""A KvStore shared between threads: readers and writers, group commit,
compaction alongside, close while others write. Every test runs its threads
under a watchdog: a deadlock fails the test (with the stacks) instead of
hanging the run."""

from __future__ import annotations

import faulthandler
import tempfile
import threading
import time

import pytest

from norikv import ClosedError, FsyncPolicy, Record
from storeutil import open_store

WATCHDOG_S = 120.0


def run_threads(*targets, timeout=WATCHDOG_S):
    """Runs each callable in its own daemon thread; fails the test if one
    raises or if they are not all done within `timeout` seconds."""
    errors: list[BaseException] = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # reported below
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(fn), daemon=True, name=f"t{i}") for i, fn in enumerate(targets)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    if stuck:
        with tempfile.TemporaryFile("w+") as f:
            faulthandler.dump_traceback(f, all_threads=True)
            f.seek(0)
            stacks = f.read()
        pytest.fail(f"threads {stuck} still running after {timeout} s (deadlock?)\n{stacks}")
    if errors:
        raise errors[0]


# ------------------------------------------------------------------ readers + writers


def test_readers_and_writers(tmp_path):
    store = open_store(tmp_path)
    writers, versions, keys_per_writer = 3, 300, 20
    done = threading.Event()
    finished = [0]
    lock = threading.Lock()
    start = threading.Barrier(writers + 3)

    def writer(w):
        def run():
            start.wait()
            try:
                for v in range(1, versions + 1):
                    for j in range(keys_per_writer):
                        store.put(b"w%d-%02d" % (w, j), b"%06d" % v)
                    if v % 10 == 0:
                        with store.batch() as b:
                            b.put(b"pair-%d-a" % w, b"%06d" % v)
                            b.put(b"pair-%d-b" % w, b"%06d" % v)
                    if v % 3 == 0:
                        store.delete(b"tmp-%d" % w)
                    else:
                        store.put(b"tmp-%d" % w, b"x")
            finally:
                with lock:
                    finished[0] += 1
                    if finished[0] == writers:
                        done.set()

        return run

    def point_reader():
        start.wait()
        last: dict[bytes, bytes] = {}
        while not done.is_set():
            for w in range(writers):
                for j in range(0, keys_per_writer, 3):
                    k = b"w%d-%02d" % (w, j)
                    v = store.get(k)
                    if v is not None:
                        # one writer per key, increasing versions: never backwards
                        assert v >= last.get(k, b""), (k, v, last.get(k))
                        last[k] = v
                # a batch's pair is applied under the GIL in one step
                a = store.get(b"pair-%d-a" % (w % writers))
                b = store.get(b"pair-%d-b" % (w % writers))
                assert a is None or b is None or b >= a

    def scan_reader():
        start.wait()
        while not done.is_set():
            ks = [k for k, _ in store.range(b"w", b"x")]
            assert ks == sorted(ks) and len(ks) == len(set(ks))
            assert len(list(store.prefix(b"w1-"))) <= keys_per_writer
            len(store)
            store.items()

    def stats_reader():
        start.wait()
        while not done.is_set():
            st = store.stats()
            assert st["keys"] >= 0 and st["failed"] is None

    run_threads(*(writer(w) for w in range(writers)), point_reader, scan_reader, stats_reader)
    expected = {}
    for w in range(writers):
        for j in range(keys_per_writer):
            expected[b"w%d-%02d" % (w, j)] = b"%06d" % versions
        expected[b"pair-%d-a" % w] = expected[b"pair-%d-b" % w] = b"%06d" % (versions - versions % 10)
        if versions % 3:
            expected[b"tmp-%d" % w] = b"x"
    assert dict(store.items()) == expected
    store.close()
    with open_store(tmp_path) as store:
        assert dict(store.items()) == expected


# ------------------------------------------------------------------ group commit


def test_group_commit_one_fsync_covers_all_threads(tmp_path):
    """Each round every thread puts, then all call sync() together: the first
    fsync covers every thread's write, so there is exactly one per round."""
    store = open_store(tmp_path)  # OS policy: no background fsyncs
    n_threads, rounds = 6, 15
    barrier = threading.Barrier(n_threads)
    calls = [0]
    lock = threading.Lock()

    def worker(t):
        def run():
            for r in range(rounds):
                store.put(b"t%d-%d" % (t, r), b"v")
                barrier.wait(WATCHDOG_S)  # every put of the round is written
                store.sync()
                with lock:
                    calls[0] += 1
                # a returned sync covers this thread's write
                written, synced, _ = store.wal._lock_state()
                assert synced == written
                barrier.wait(WATCHDOG_S)  # nobody writes before all synced

        return run

    run_threads(*(worker(t) for t in range(n_threads)))
    st = store.stats()
    assert calls[0] == n_threads * rounds
    assert st["fsyncs"] == rounds
    assert st["fsyncs"] < calls[0]
    assert st["unsynced_bytes"] == 0
    store.close()


@pytest.mark.parametrize("policy", [FsyncPolicy.OS, FsyncPolicy.ALWAYS], ids=["sync-calls", "always"])
def test_group_commit_concurrent_syncs_share_fsyncs(tmp_path, policy):
    """Threads doing put + sync() (or puts under ALWAYS) at the same time:
    each call returns only once its own write is covered, and overlapping
    calls share fsyncs."""
    store = open_store(tmp_path, fsync_policy=policy)
    n_threads, per_thread = 6, 40
    start = threading.Barrier(n_threads)
    calls = [0]
    lock = threading.Lock()

    def worker(t):
        def run():
            start.wait(WATCHDOG_S)
            for i in range(per_thread):
                k, v = b"t%d-%d" % (t, i), b"v" * 50
                # this record ends at or after `before + size` in the log
                before = store.wal.written_total
                store.put(k, v)
                if policy is FsyncPolicy.OS:
                    store.sync()
                with lock:
                    calls[0] += 1
                assert store.wal.synced_total >= before + len(Record.put(k, v).encode())

        return run

    run_threads(*(worker(t) for t in range(n_threads)))
    st = store.stats()
    assert calls[0] == n_threads * per_thread
    assert 1 <= st["fsyncs"] < calls[0], st["fsyncs"]
    assert st["unsynced_bytes"] == 0
    assert len(store) == n_threads * per_thread
    store.close()


def test_sync_from_many_threads_with_batch_flusher(tmp_path):
    store = open_store(tmp_path, fsync_policy=FsyncPolicy.batch(0.002))
    start = threading.Barrier(4)

    def worker(t):
        def run():
            start.wait(WATCHDOG_S)
            for i in range(100):
                store.put(b"%d-%d" % (t, i), b"v")
                if i % 10 == 0:
                    store.sync()

        return run

    run_threads(*(worker(t) for t in range(4)))
    store.sync()
    assert store.stats()["unsynced_bytes"] == 0
    store.close()
    with open_store(tmp_path) as store:
        assert len(store) == 400


# ------------------------------------------------------------------ compaction alongside


def test_compactions_and_writers_in_parallel(tmp_path):
    store = open_store(tmp_path, max_segment_size=1 << 20)
    for i in range(5000):
        store.put(b"base-%05d" % i, b"b" * 100)
    writers = 3
    start = threading.Barrier(writers + 2)
    writers_done = threading.Event()
    finished = [0]
    lock = threading.Lock()
    compactions = [0]

    def writer(w):
        def run():
            start.wait(WATCHDOG_S)
            try:
                for v in range(2000):
                    store.put(b"w%d-%02d" % (w, v % 50), b"%06d" % v)
                    if v % 5 == 0:
                        store.delete(b"base-%05d" % (w * 1000 + v // 5))
            finally:
                with lock:
                    finished[0] += 1
                    if finished[0] == writers:
                        writers_done.set()

        return run

    def compactor():
        start.wait(WATCHDOG_S)
        while not writers_done.is_set() or compactions[0] < 2:
            store.compact()
            compactions[0] += 1

    def reader():
        start.wait(WATCHDOG_S)
        while not writers_done.is_set():
            assert store.get(b"base-04999") == b"b" * 100
            ks = [k for k, _ in store.prefix(b"w0-")]
            assert ks == sorted(ks)

    run_threads(*(writer(w) for w in range(writers)), compactor, reader)
    assert compactions[0] >= 2
    expected = {b"base-%05d" % i: b"b" * 100 for i in range(5000)}
    for w in range(writers):
        for v in range(2000):
            expected[b"w%d-%02d" % (w, v % 50)] = b"%06d" % v
            if v % 5 == 0:
                expected.pop(b"base-%05d" % (w * 1000 + v // 5), None)
    assert dict(store.items()) == expected
    store.compact()
    store.close()
    with open_store(tmp_path, max_segment_size=1 << 20) as store:
        assert dict(store.items()) == expected


# ------------------------------------------------------------------ close while in use


def test_close_while_threads_write_and_read(tmp_path):
    """Closing under load: the other threads get ClosedError (never a crash
    or a hang) and every write that returned is there after reopen."""
    store = open_store(tmp_path)
    n = 4
    start = threading.Barrier(n + 1)
    warmed_up = threading.Barrier(n + 1)  # every writer has written 100 times
    acked: list[list[int]] = [[] for _ in range(n)]

    def writer(t):
        def run():
            start.wait(WATCHDOG_S)
            i = 0
            try:
                while True:
                    if i % 4 == 3:
                        with store.batch() as b:
                            b.put(b"t%d-%06d" % (t, i), b"v")
                    else:
                        store.put(b"t%d-%06d" % (t, i), b"v")
                    acked[t].append(i)
                    if i == 100:
                        warmed_up.wait(WATCHDOG_S)
                    if i % 50 == 0:
                        store.sync()
                        store.get(b"t%d-%06d" % (t, i))
                        list(store.prefix(b"t%d-" % t))
                    i += 1
            except ClosedError:
                pass

        return run

    def closer():
        start.wait(WATCHDOG_S)
        warmed_up.wait(WATCHDOG_S)
        store.close()  # the writers are running again

    run_threads(*(writer(t) for t in range(n)), closer)
    assert store.closed
    with open_store(tmp_path) as store:
        for t in range(n):
            assert acked[t], t
            for i in acked[t]:
                assert store.get(b"t%d-%06d" % (t, i)) == b"v"
        assert len(store) == sum(len(a) for a in acked)


def test_sync_racing_close_gets_closed_error(tmp_path):
    """A sync() that began before close() and reaches the fsync after it
    raises ClosedError (or returns: close() made everything durable), never
    an error from the descriptors close() released. Before the fix it raised
    WalFailedError (EBADF from openat on the closed directory descriptor) in
    about one round in twelve; 300 rounds make a miss all but impossible."""
    for r in range(300):
        store = open_store(tmp_path / str(r))
        warmed_up = threading.Barrier(3)

        def writer(t, store=store, warmed_up=warmed_up):
            def run():
                i = 0
                try:
                    while True:
                        store.put(b"t%d-%d" % (t, i), b"v")
                        store.sync()
                        i += 1
                        if i == 20:
                            warmed_up.wait(WATCHDOG_S)
                except ClosedError:
                    pass

            return run

        def closer(store=store, warmed_up=warmed_up):
            warmed_up.wait(WATCHDOG_S)
            store.close()

        run_threads(writer(0), writer(1), closer)
