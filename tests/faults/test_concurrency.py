"""Concurrency hammer: threads doing put/get/delete/batch/range, a thread
compacting and a thread syncing, all at once on one store. Each writer owns a
key prefix, so its own model is exact: every read of its keys during the run,
the final state, and the state after reopen must equal the union of the
models. A watchdog fails the test (with every thread's stack) instead of
hanging."""

from __future__ import annotations

import faulthandler
import random
import sys
import threading

import pytest

from norikv import FsyncPolicy, KvStore

WRITERS = 4
OPS = 800
WATCHDOG = 120  # seconds; generous, only a deadlock reaches it


def writer(store, tid, model, errors, stop):
    rng = random.Random(tid)
    prefix = b"t%d:" % tid
    keys = [prefix + b"%03d" % i for i in range(60)]
    try:
        for n in range(OPS):
            if stop.is_set():
                return
            r = rng.random()
            k = rng.choice(keys)
            if r < 0.4:
                v = b"%d-%d-" % (tid, n) + bytes(rng.randrange(0, 3000))
                store.put(k, v)
                model[k] = v
            elif r < 0.55:
                was = store.delete(k)
                if was != (k in model):
                    errors.append(f"t{tid}: delete({k!r}) returned {was}, model says {k in model}")
                model.pop(k, None)
            elif r < 0.7:
                with store.batch() as b:
                    for j in range(rng.randint(1, 6)):
                        kk = rng.choice(keys)
                        if rng.random() < 0.3:
                            b.delete(kk)
                            model.pop(kk, None)
                        else:
                            v = b"b%d-%d-%d" % (tid, n, j)
                            b.put(kk, v)
                            model[kk] = v
            elif r < 0.95:
                got = store.get(k)
                if got != model.get(k):
                    errors.append(f"t{tid}: get({k!r}) = {got!r:.40}, model {model.get(k)!r:.40}")
            else:
                got = dict(store.prefix(prefix))
                if got != model:
                    errors.append(f"t{tid}: prefix scan differs from the model ({len(got)} vs {len(model)} keys)")
    except BaseException as exc:  # noqa: BLE001
        errors.append(f"t{tid}: {exc!r}")


def background(store, fn, errors, stop):
    try:
        while not stop.is_set():
            fn()
    except BaseException as exc:  # noqa: BLE001
        errors.append(f"{fn.__name__}: {exc!r}")


@pytest.mark.parametrize(
    "policy,compression",
    [
        (FsyncPolicy.batch(0.002), None),
        (FsyncPolicy.OS, None),
        (FsyncPolicy.ALWAYS, None),
        # Writers and the compactor compress at once (regression: one shared zstd
        # compressor for all threads gave ZstdError, heap corruption, SIGSEGV).
        (FsyncPolicy.OS, "zstd"),
        (FsyncPolicy.OS, "lz4"),
    ],
    ids=["batch", "os", "always", "os-zstd", "os-lz4"],
)
def test_hammer(tmp_path, policy, compression):
    faulthandler.dump_traceback_later(WATCHDOG, exit=True, file=sys.stderr)
    try:
        _hammer(tmp_path, policy, compression)
    finally:
        faulthandler.cancel_dump_traceback_later()


def _hammer(tmp_path, policy, compression=None):
    store = KvStore.open(
        tmp_path,
        fsync_policy=policy,
        max_segment_size=1 << 20,
        compact_min_bytes=1 << 20,
        compact_dead_ratio=0.3,
        compression=compression,
        compress_min_size=64,
    )
    models = [dict() for _ in range(WRITERS)]
    errors: list[str] = []
    stop = threading.Event()
    compactions = [0]

    def compact():
        store.compact()
        compactions[0] += 1

    def sync():
        store.sync()

    writers = [threading.Thread(target=writer, args=(store, t, models[t], errors, stop)) for t in range(WRITERS)]
    helpers = [threading.Thread(target=background, args=(store, f, errors, stop)) for f in (compact, sync)]
    for t in writers + helpers:
        t.start()
    for t in writers:
        t.join(WATCHDOG)
    stop.set()
    for t in helpers:
        t.join(WATCHDOG)
    alive = [t.name for t in writers + helpers if t.is_alive()]
    if alive:
        faulthandler.dump_traceback(all_threads=True)
        pytest.fail(f"threads still running (deadlock?): {alive}")
    assert errors == [], "\n".join(errors[:20])
    assert compactions[0] >= 1
    want = {}
    for m in models:
        want.update(m)
    assert dict(store.items()) == want
    store.close()
    with KvStore.open(tmp_path, fsync_policy=policy) as again:
        assert dict(again.items()) == want


ZSTD_THREADS = r"""
import random, threading
from norikv.compression import compress, decompress
errors = []
def work(t):
    rng = random.Random(t)
    try:
        for i in range(60):
            v = (rng.randbytes(64) * 4096)[: rng.randint(100_000, 262_144)]
            for kind in (2, 1):
                if decompress(kind, compress(kind, v)) != v:
                    errors.append("roundtrip")
    except Exception as exc:
        errors.append(repr(exc))
ts = [threading.Thread(target=work, args=(t,)) for t in range(4)]
for t in ts: t.start()
for t in ts: t.join()
assert not errors, errors[:3]
print("ok")
"""


def test_compression_from_many_threads():
    """Compression is called from writer threads and the compactor at once
    (regression: a single zstd compressor shared by every thread crashed the
    process: ZstdError, "malloc(): corrupted top size", SIGSEGV). In a
    subprocess, since the failure is a crash."""
    from ._util import describe, run_py

    proc = run_py(ZSTD_THREADS, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", describe(proc)
