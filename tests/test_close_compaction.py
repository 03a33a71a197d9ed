"""close() against a compaction running in another thread: close() waits for
it (or the compaction stops with ClosedError before changing anything), and
once close() has returned nothing in the directory changes any more.

The interleaving is forced: the snapshot writer (norikv._engine.write_snapshot,
looked up by KvStore.compact at each call) is wrapped so that the compaction
pauses right after writing its temporary files, until close() has started
to wait for it (seen through the store's compaction lock) or has returned."""

import hashlib
import os
import threading

import pytest

from norikv import ClosedError, FsyncPolicy, KvStore, _engine
from storeutil import open_store, run_in_thread

TIMEOUT = 60
MIB = 1 << 20


def listing(path):
    """Every file under path with a digest of its bytes."""
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, path)] = hashlib.sha256(f.read()).hexdigest()
    return out


class WatchedLock:
    """Stands in for the store's compaction lock and sets ``closer_waiting``
    when the closing thread starts to wait for it."""

    def __init__(self, lock, closer, closer_waiting):
        self.lock = lock
        self.closer = closer
        self.closer_waiting = closer_waiting

    def acquire(self, *args, **kwargs):
        if threading.current_thread() is self.closer:
            self.closer_waiting.set()
        return self.lock.acquire(*args, **kwargs)

    def release(self):
        self.lock.release()

    def locked(self):
        return self.lock.locked()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


class PausedSnapshot:
    """write_snapshot, pausing after the temporary files are written until
    ``go`` is set."""

    def __init__(self, monkeypatch):
        self.real = _engine.write_snapshot
        self.written = threading.Event()
        self.go = threading.Event()
        self.calls = 0
        monkeypatch.setattr(_engine, "write_snapshot", self)

    def __call__(self, *args):
        parts = self.real(*args)
        self.calls += 1
        assert all(os.path.exists(tmp) for tmp, _, _ in parts)
        self.written.set()
        assert self.go.wait(TIMEOUT), "the test never let the compaction go on"
        return parts


def fill(store, n=200):
    for round_ in range(3):  # dead records for the compaction to drop
        for i in range(n):
            store.put(b"k%04d" % i, b"v%d-" % round_ + b"x" * 100)
    store.delete(b"k0000")
    return {b"k%04d" % i: b"v2-" + b"x" * 100 for i in range(1, n)}


@pytest.mark.parametrize("how", ["manual", "background"])
def test_close_waits_for_running_compaction(tmp_path, monkeypatch, how):
    snap = PausedSnapshot(monkeypatch)
    if how == "manual":
        store = open_store(tmp_path, max_segment_size=MIB, auto_compact=False)
    else:
        store = open_store(tmp_path, max_segment_size=MIB, compact_min_bytes=1, compact_dead_ratio=0.3)
    closer_waiting = snap.go  # close() waiting for the compaction lets it go on
    store._compact_lock = WatchedLock(store._compact_lock, threading.current_thread(), closer_waiting)
    if how == "manual":
        expected = fill(store)
        compactor, box = run_in_thread(store.compact)
    else:
        expected = {}
        i = 0
        while not snap.written.is_set():  # overwrite until the background compaction starts
            assert i < 100_000, "no background compaction started"
            store.put(b"k%d" % (i % 50), b"%d" % i + b"y" * 200)
            expected[b"k%d" % (i % 50)] = b"%d" % i + b"y" * 200
            i += 1
        compactor, box = store._compactor, None
    assert snap.written.wait(TIMEOUT)
    assert any(n.endswith(".compact-tmp") for n in os.listdir(tmp_path / "wal"))

    store.close()
    after_close = listing(tmp_path)
    snap.go.set()  # (the fixed close() has let it go on already)
    compactor.join(TIMEOUT)
    assert not compactor.is_alive()

    assert listing(tmp_path) == after_close, "the directory changed after close() returned"
    assert not any(n.endswith(".compact-tmp") for n in after_close)
    if box is not None:
        err = box.get("error")
        assert err is None or isinstance(err, ClosedError), repr(err)
        if err is None:
            assert box["result"]["segments_written"] >= 1
    else:
        assert store._compact_error is None, repr(store._compact_error)
    assert store._compactions == 1  # close() waited for it to finish
    with KvStore.open(tmp_path, fsync_policy=FsyncPolicy.OS) as again:
        assert dict(again.items()) == expected


def test_compaction_started_after_close_began_raises_closed(tmp_path, monkeypatch):
    snap = PausedSnapshot(monkeypatch)
    store = open_store(tmp_path, max_segment_size=MIB, auto_compact=False)
    expected = fill(store)
    first, first_box = run_in_thread(store.compact)
    assert snap.written.wait(TIMEOUT)

    closer_waiting = threading.Event()

    def close():
        store.close()

    # The closing thread is known before it runs: wrap the lock in it.
    real_lock = store._compact_lock
    closer = threading.Thread(target=close, daemon=True)
    store._compact_lock = WatchedLock(real_lock, closer, closer_waiting)
    closer.start()
    assert closer_waiting.wait(TIMEOUT)
    assert store.closed
    # close() has begun and waits: a new compaction (and a write) is refused
    # at once, without waiting for the running one
    second, second_box = run_in_thread(store.compact)
    second.join(TIMEOUT)
    assert not second.is_alive()
    assert isinstance(second_box.get("error"), ClosedError), second_box
    with pytest.raises(ClosedError):
        store.put(b"late", b"v")
    assert snap.calls == 1
    assert closer.is_alive()  # still waiting for the first compaction
    snap.go.set()
    closer.join(TIMEOUT)
    first.join(TIMEOUT)
    assert not closer.is_alive() and not first.is_alive()
    assert "error" not in first_box, first_box
    assert first_box["result"]["segments_deleted"] >= 1
    final = listing(tmp_path)
    with pytest.raises(ClosedError):
        store.compact()
    assert listing(tmp_path) == final
    with KvStore.open(tmp_path, fsync_policy=FsyncPolicy.OS) as again:
        assert dict(again.items()) == expected
