"""Crash at every step: SIGKILL the writer right after its 1st, 2nd, ...
mutating system call (fdatasync, fsync, ftruncate, fallocate, unlink, rename,
write; the LD_PRELOAD shim's kill mode) during a compaction and during a run
of writes that rotates segments, then reopen and compare with the model.
Random kills (test_torture) rarely land between two particular calls; this
walks every boundary deterministically."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from norikv import FsyncPolicy, KvStore

from ._shim import shim_env
from ._util import describe

OPS = "fdatasync,fsync,msync,ftruncate,fallocate,unlink,rename,write"

SETUP_N = 400

SETUP = r"""
SETUP_N = @SETUP_N@
import json, os, sys
from norikv import KvStore, FsyncPolicy
path, control, workload, nwrites = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[5])
store = KvStore.open(path, fsync_policy=FsyncPolicy.ALWAYS if workload == "writes" else FsyncPolicy.OS,
                     max_segment_size=1 << 20, auto_compact=False)
for i in range(SETUP_N):
    store.put(b"k%03d" % (i % 150), b"%d:" % i + bytes([i % 251]) * 3000)
    if i % 7 == 0:
        store.delete(b"k%03d" % ((i * 3) % 150))
store.put(b"ttl", b"t", ttl=3600)
with open(control, "w") as f:
    f.write(sys.argv[4])                            # arm the shim
if workload == "compact":
    store.compact()
    print("A compact", flush=True)
else:
    for i in range(nwrites):
        if i % 3 == 0:
            with store.batch() as b:
                b.put(b"b%02d" % i, bytes(200_000))        # big: rotates often
                b.delete(b"k%03d" % i)
                b.put(b"c%02d" % i, b"x")
        else:
            store.put(b"p%02d" % i, b"%d" % i + bytes(150_000))
        print("A %d" % i, flush=True)
os.unlink(control)
store.close()
print("DONE", flush=True)
""".replace("@SETUP_N@", str(SETUP_N))


def model_before():
    m = {}
    for i in range(SETUP_N):
        m[b"k%03d" % (i % 150)] = b"%d:" % i + bytes([i % 251]) * 3000
        if i % 7 == 0:
            m.pop(b"k%03d" % ((i * 3) % 150), None)
    m[b"ttl"] = b"t"
    return m


def apply_write(m, i):
    if i % 3 == 0:
        m[b"b%02d" % i] = bytes(200_000)
        m.pop(b"k%03d" % i, None)
        m[b"c%02d" % i] = b"x"
    else:
        m[b"p%02d" % i] = b"%d" % i + bytes(150_000)


@pytest.mark.parametrize(
    "workload,stride,nwrites",
    [
        ("compact", 1, 0),
        ("writes", 7, 18),
        pytest.param("writes", 1, 60, marks=pytest.mark.slow, id="writes-every-call"),
    ],
)
def test_kill_after_each_syscall(shim_path, tmp_path, workload, stride, nwrites):
    step = 0
    runs = 0
    while True:
        d = tmp_path / f"s{step}"
        control = str(tmp_path / f"armed{step}")
        env = dict(os.environ)
        env.update(shim_env(shim_path, OPS, control=control, path=str(d), after=step))
        env["FAULTSHIM_ACTION"] = "kill"
        proc = subprocess.run(
            [sys.executable, "-c", SETUP, str(d), control, workload, OPS, str(nwrites)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        runs += 1
        acked = [ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("A ")]
        finished = "DONE" in proc.stdout
        if not finished:
            assert proc.returncode == -signal.SIGKILL, describe(proc)
        base = model_before()
        candidates = []
        if workload == "compact":
            candidates = [base]
        else:
            m = dict(base)
            for a in acked:
                apply_write(m, int(a))
            candidates.append(dict(m))
            nxt = len(acked)
            if nxt < nwrites and not finished:
                apply_write(m, nxt)  # the write in flight
                candidates.append(m)
        with KvStore.open(d, fsync_policy=FsyncPolicy.ALWAYS, max_segment_size=1 << 20, auto_compact=False) as s:
            state = dict(s.items())
            assert any(state == c for c in candidates), (
                f"{workload}: killed after mutating call #{step + 1}: state matches no model; "
                f"{len(state)} keys vs {[len(c) for c in candidates]}\n" + describe(proc)
            )
            assert s._deadline_of(b"ttl") is not None
            s.put(b"z", b"after reopen")
            s.compact()  # a later compaction cleans up fine
        with KvStore.open(d, max_segment_size=1 << 20) as s:
            assert s.get(b"z") == b"after reopen" and len(s) == len(state) + 1
        if finished:
            break
        step += stride
        assert step < 2000
    assert runs >= 5
    print(f"{workload}: {runs} crash points checked")
