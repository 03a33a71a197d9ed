"""I/O errors injected with an LD_PRELOAD shim (tests/faults/shim/faultshim.c),
in subprocesses.

* A failed fsync/fdatasync raises WalFailedError (an OSError carrying the
  errno) and poisons the Wal: every later write and sync raises, even once
  the device works again (no retry that could report a lost page as durable:
  "fsyncgate"), until the store is reopened.
* Reopen shows a consistent state: every acknowledged write, and the one
  in-flight write either whole or not at all.
* Failures that lose nothing (fallocate, the snapshot writes of a
  compaction) raise a NoriIOError/OSError and the store goes on.
"""

from __future__ import annotations

import errno
import json
import os

import pytest

from ._shim import shim_env
from ._util import REFUSALS, describe, run_py

POISON = (
    REFUSALS
    + r"""
import json, os, sys, threading, time
from norikv import KvStore, FsyncPolicy, WalFailedError, NoriIOError
base, policy, control = sys.argv[1], sys.argv[2], sys.argv[3]
pol = {"always": FsyncPolicy.ALWAYS, "batch": FsyncPolicy.batch(0.002), "os": FsyncPolicy.OS}[policy]
out = {}
store = KvStore.open(base, fsync_policy=pol, auto_compact=False)
for i in range(50):
    store.put(b"k%03d" % i, b"v%03d" % i)
store.delete(b"k000")
store.sync()
open(control, "w").close()                          # arm: fsync/fdatasync now fail
try:
    store.put(b"inflight", b"x")
    if policy == "always":
        raise SystemExit("put returned although its fdatasync failed")
    if policy == "batch":
        # The background flusher's fdatasync fails: wait (bounded) until the
        # Wal knows, without touching it from this thread.
        deadline = time.monotonic() + 30
        while store.wal._lock_state()[2] is None:
            if time.monotonic() > deadline:
                raise SystemExit("the flusher never ran")
            time.sleep(0.002)
    store.sync()
    raise SystemExit("sync returned although fdatasync failed")
except WalFailedError as exc:
    out["first"] = [type(exc).__name__, exc.errno, isinstance(exc, OSError)]
os.unlink(control)                                  # the device "works" again
def _batch():
    with store.batch() as b:
        b.put(b"b1", b"1")
        b.delete(b"k003")
out["refused"] = refusals([("put", lambda: store.put(b"later", b"y")),
                           ("put_existing", lambda: store.put(b"k001", b"changed")),
                           ("delete", lambda: store.delete(b"k002")),
                           ("batch", _batch),
                           ("sync", store.sync),
                           ("compact", store.compact)])
out["stats_failed"] = store.stats()["failed"] is not None
store.close()
with KvStore.open(base, fsync_policy=pol) as s2:
    out["state"] = {k.decode(): v.decode() for k, v in s2.items()}
    s2.put(b"after", b"reopen")
    s2.sync()
with KvStore.open(base, fsync_policy=pol) as s3:
    out["after"] = (s3.get(b"after") or b"").decode()
print(json.dumps(out))
"""
)


@pytest.mark.parametrize("policy", ["always", "batch", "os"])
def test_failed_fsync_poisons_until_reopen(shim_path, tmp_path, policy):
    control = str(tmp_path / "armed")
    log = str(tmp_path / "faults.log")
    # (msync: the background thread syncs the log up to its end with msync(MS_SYNC))
    env = shim_env(shim_path, "fsync,fdatasync,msync", control=control, path=str(tmp_path), log=log)
    proc = run_py(POISON, args=[str(tmp_path / "db"), policy, control], env=env, timeout=90)
    assert proc.returncode == 0, describe(proc)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["first"] == ["WalFailedError", errno.EIO, True]
    assert out["refused"] == [[n, errno.EIO] for n in ("put", "put_existing", "delete", "batch", "sync", "compact")]
    assert out["stats_failed"]
    expected = {f"k{i:03d}": f"v{i:03d}" for i in range(1, 50)}
    state = out["state"]
    # The in-flight put may or may not be there; nothing refused is; all acknowledged is.
    assert state.pop("inflight", "x") == "x"
    assert state == expected
    assert out["after"] == "reopen"
    with open(log) as f:
        assert f.read().split()[0] in ("fdatasync", "fsync", "msync")


def test_the_batch_flushers_ranged_fsync_is_checked_like_fdatasync(shim_path, tmp_path):
    """The batch policy's background fsync is msync(MS_SYNC) of the log up to
    its end (the shim fails only msync here): its failure poisons the store
    exactly as a failed fdatasync does."""
    control = str(tmp_path / "armed")
    log = str(tmp_path / "faults.log")
    env = shim_env(shim_path, "msync", control=control, path=str(tmp_path), log=log)
    proc = run_py(POISON, args=[str(tmp_path / "db"), "batch", control], env=env, timeout=90)
    assert proc.returncode == 0, describe(proc)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["first"] == ["WalFailedError", errno.EIO, True]
    assert out["refused"] == [[n, errno.EIO] for n in ("put", "put_existing", "delete", "batch", "sync", "compact")]
    state = out["state"]
    assert state.pop("inflight", "x") == "x"
    assert state == {f"k{i:03d}": f"v{i:03d}" for i in range(1, 50)}
    with open(log) as f:
        assert f.read().split()[0] == "msync"


GROUP = r"""
import json, os, sys, threading
from norikv import KvStore, FsyncPolicy, WalFailedError
base, control = sys.argv[1], sys.argv[2]
store = KvStore.open(base, fsync_policy=FsyncPolicy.OS, auto_compact=False)
armed = threading.Event()
acked, late_acks, ends = [], [], []
lock = threading.Lock()

def writer(t):
    i = 0
    try:
        while True:
            after_arming = armed.is_set()
            key = b"t%d:%06d" % (t, i)
            store.put(key, b"v")
            store.sync()
            with lock:
                acked.append(key.decode())
                if after_arming:
                    late_acks.append(key.decode())
                if len(acked) == 400 and not armed.is_set():
                    open(control, "w").close()      # fsync/fdatasync fail from now on
                    armed.set()
            i += 1
    except WalFailedError as exc:
        ends.append(exc.errno)
    except BaseException as exc:
        ends.append(repr(exc))

threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
for th in threads:
    th.start()
for th in threads:
    th.join()
os.unlink(control)
store.close()
with KvStore.open(base) as s2:
    missing = [k for k in acked if s2.get(k.encode()) != b"v"]
print(json.dumps({"ends": ends, "late_acks": late_acks, "acked": len(acked), "missing": missing}))
"""


def test_failed_group_fsync_fails_every_waiting_thread(shim_path, tmp_path):
    """8 threads in put + sync() when fdatasync starts failing: every thread
    ends with WalFailedError (none hangs in the group-commit wait), no put
    made after the failure began is acknowledged, and every acknowledged put
    is there after reopen."""
    control = str(tmp_path / "armed")
    env = shim_env(
        shim_path, "fsync,fdatasync,msync", control=control, path=str(tmp_path), log=str(tmp_path / "faults.log")
    )
    proc = run_py(GROUP, args=[str(tmp_path / "db"), control], env=env, timeout=120)
    assert proc.returncode == 0, describe(proc)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ends"] == [errno.EIO] * 8
    assert out["late_acks"] == []
    assert out["acked"] >= 400
    assert out["missing"] == []


SWEEP = r"""
import json, os, random, shutil, sys
from norikv import KvStore, FsyncPolicy, WalFailedError, NoriIOError, RecoveryMode
base, control, seed, trials = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
POL = {"always": FsyncPolicy.ALWAYS, "batch": FsyncPolicy.batch(0.002), "os": FsyncPolicy.OS}
OPS = ["fdatasync", "fsync", "msync", "ftruncate", "fallocate", "write"]
out = {"trials": 0, "raised": 0, "poisoned": 0, "recovered_ok": 0, "problems": [], "kinds": {}}

def val(t, i, n):
    return (b"%d.%d:" % (t, i)) + bytes([i % 251]) * n

def apply(model, op, t, i):
    kind = op[0]
    if kind == "put":
        model[op[1]] = val(t, i, op[2])
    elif kind == "del":
        model.pop(op[1], None)
    elif kind == "batch":
        for j, (k, n) in enumerate(op[1]):
            if n < 0:
                model.pop(k, None)
            else:
                model[k] = val(t, i * 100 + j, n)

def run(store, op, t, i):
    kind = op[0]
    if kind == "put":
        store.put(op[1], val(t, i, op[2]))
    elif kind == "del":
        store.delete(op[1])
    elif kind == "batch":
        with store.batch() as b:
            for j, (k, n) in enumerate(op[1]):
                if n < 0:
                    b.delete(k)
                else:
                    b.put(k, val(t, i * 100 + j, n))
    elif kind == "sync":
        store.sync()
    elif kind == "compact":
        store.compact()

def rand_op():
    r = rng.random()
    k = b"key%02d" % rng.randrange(40)
    if r < 0.45:
        return ("put", k, rng.choice([10, 100, 3000, 250000]))
    if r < 0.6:
        return ("del", k)
    if r < 0.8:
        return ("batch", [(b"key%02d" % rng.randrange(40), rng.choice([-1, 50, 2000]))
                          for _ in range(rng.randint(1, 5))])
    if r < 0.93:
        return ("sync",)
    return ("compact",)

for t in range(trials):
    path = os.path.join(base, "t%d" % t)
    policy = rng.choice(sorted(POL))
    fault = rng.choice(OPS)
    store = KvStore.open(path, fsync_policy=POL[policy], max_segment_size=1 << 20, auto_compact=False)
    model = {}
    arm_at = rng.randint(0, 25)
    uncertain = None
    raised = None
    for i in range(60):
        if i == arm_at:
            with open(control, "w") as f:      # arm the shim for this one call kind
                f.write(fault)
        op = rand_op()
        try:
            run(store, op, t, i)
        except OSError as exc:
            raised = exc
            uncertain = (op, i)
            break
        apply(model, op, t, i)
    if os.path.exists(control):
        os.unlink(control)
    out["trials"] += 1
    key = "%s/%s" % (fault, policy)
    if raised is not None:
        out["raised"] += 1
        out["kinds"][key] = out["kinds"].get(key, 0) + 1
        if raised.errno != 5:
            out["problems"].append("trial %d: errno %r (%r)" % (t, raised.errno, raised))
        if isinstance(raised, WalFailedError):
            out["poisoned"] += 1
            for op in (("put", b"zz", 5), ("sync",)):
                try:
                    run(store, op, t, 999)
                    out["problems"].append("trial %d: %s accepted after %r" % (t, op[0], raised))
                except WalFailedError:
                    pass
        else:
            # Nothing was lost: the failed op left no trace in memory and
            # the store goes on writing.
            now = dict(store.items())
            if now != model:
                out["problems"].append("trial %d: memory changed by a failed %s (%r)" % (t, uncertain[0][0], raised))
            try:
                store.put(b"resume", b"ok")
                model[b"resume"] = b"ok"
            except OSError as exc:
                out["problems"].append("trial %d: no resume after %r: %r" % (t, raised, exc))
    try:
        store.close()
    except OSError as exc:
        out["problems"].append("trial %d: close raised %r" % (t, exc))
    with KvStore.open(path, fsync_policy=POL[policy], max_segment_size=1 << 20, auto_compact=False) as s2:
        state = dict(s2.items())
    ok = state == model
    if not ok and uncertain is not None:
        m1 = dict(model)
        apply(m1, uncertain[0], t, uncertain[1])
        ok = state == m1
    if ok:
        out["recovered_ok"] += 1
    else:
        diff = sorted(set(state.items()) ^ set(model.items()))[:3]
        out["problems"].append("trial %d (%s, %s): reopened state differs: %r" % (t, fault, policy, diff))
    shutil.rmtree(path)
print(json.dumps(out))
"""


def _sweep(shim_path, tmp_path, seed: int, trials: int) -> dict:
    control = str(tmp_path / "armed")
    log = str(tmp_path / "faults.log")
    base = tmp_path / "db"
    base.mkdir()
    # Each trial arms one call kind by writing its name into the control file.
    env = shim_env(shim_path, "", control=control, path=str(base), log=log)
    proc = run_py(SWEEP, args=[str(base), control, str(seed), str(trials)], env=env, timeout=180)
    assert proc.returncode == 0, describe(proc)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    with open(log) if os.path.exists(log) else open(os.devnull) as f:
        out["faults_injected"] = len(f.read().splitlines())
    return out


def test_random_fault_sweep(shim_path, tmp_path):
    """Random workloads under every policy with one fault kind armed at a
    random point: the error is an OSError with the injected errno, a poisoned
    store refuses writes, a non-poisoned one lost nothing and goes on, and
    the reopened state is the model (plus, possibly, the failed op)."""
    out = _sweep(shim_path, tmp_path, seed=12345, trials=40)
    assert out["problems"] == [], "\n".join(out["problems"])
    assert out["trials"] == 40 and out["recovered_ok"] == 40
    assert out["raised"] >= 15 and out["poisoned"] >= 5, out
    assert out["faults_injected"] >= out["raised"]


HINT_READ_FAIL = r"""
import json, os, sys
from norikv import KvStore, FsyncPolicy, _engine
path, control = sys.argv[1], sys.argv[2]
with KvStore.open(path, values="memory", max_segment_size=1 << 20, fsync_policy=FsyncPolicy.OS) as s:
    for i in range(3000):
        s.put(b"k%05d" % i, b"v" * 500)                 # segment 0 sealed, 1 active
wal = os.path.join(path, "wal")
out = {}
open(control, "w").close()                              # arm: pread fails
try:
    out["write_hint"] = _engine.write_hint(wal, 0)
except OSError as exc:
    out["write_hint"] = [type(exc).__name__, exc.errno]
os.unlink(control)
out["hint_left"] = sorted(n for n in os.listdir(wal) if ".hint" in n)
out["then"] = _engine.write_hint(wal, 0)
print(json.dumps(out))
"""


def test_read_error_while_writing_a_hint(shim_path, tmp_path):
    """EIO from pread while the hint writer scans a sealed segment (it reads
    with pread, without the GIL): NoriIOError(EIO), no hint and no
    temporary file left, the process goes on; the next try writes it."""
    control = str(tmp_path / "armed")
    env = shim_env(shim_path, "pread", control=control, path=str(tmp_path / "db"))
    proc = run_py(HINT_READ_FAIL, args=[str(tmp_path / "db"), control], env=env, timeout=60)
    assert proc.returncode == 0, describe(proc)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"write_hint": ["NoriIOError", errno.EIO], "hint_left": [], "then": True}


READ_FAIL = r"""
import json, os, sys
from norikv import KvStore, FsyncPolicy, NoriIOError, LockError
path, control, mode = sys.argv[1], sys.argv[2], sys.argv[3]
from norikv import RecoveryMode
out = {}
with KvStore.open(path, fsync_policy=FsyncPolicy.ALWAYS) as s:
    for i in range(100):
        s.put(b"k%03d" % i, b"v" * 500)
before = {n: open(os.path.join(path, "wal", n), "rb").read() for n in os.listdir(os.path.join(path, "wal"))}
open(control, "w").close()                         # arm: pread fails
try:
    KvStore.open(path, recovery_mode=RecoveryMode[mode])
    out["open"] = "ok"
except OSError as exc:
    out["open"] = [type(exc).__name__, exc.errno]
os.unlink(control)
after = {n: open(os.path.join(path, "wal", n), "rb").read() for n in os.listdir(os.path.join(path, "wal"))}
out["unchanged"] = before == after
with KvStore.open(path, recovery_mode=RecoveryMode[mode]) as s:   # the lock was released
    out["len"] = len(s)
print(json.dumps(out))
"""


@pytest.mark.parametrize("mode", ["TOLERATE_CORRUPTED_TAIL", "SKIP_ANY_CORRUPTED_RECORDS"])
def test_read_error_during_recovery(shim_path, tmp_path, mode):
    """EIO from pread while recovery scans: open raises NoriIOError(EIO),
    changes no file (a read error is not corruption: nothing is cut), and
    releases the lock; a later open recovers everything."""
    control = str(tmp_path / "armed")
    env = shim_env(shim_path, "pread", control=control, path=str(tmp_path / "db"))
    proc = run_py(READ_FAIL, args=[str(tmp_path / "db"), control, mode], env=env, timeout=60)
    assert proc.returncode == 0, describe(proc)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"open": ["NoriIOError", errno.EIO], "unchanged": True, "len": 100}
