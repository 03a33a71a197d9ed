"""kill -9 of a process writing to a KvStore, at random instants.

A child process opens the store and applies a deterministic sequence of
operations (single puts/deletes, atomic batches, with a compaction thread
running in the compaction variant). After each operation returns it writes
the operation's index to a pipe: that is the acknowledgement. The parent
kills the child with SIGKILL after a random number of acknowledgements,
drains the pipe, reopens the store and checks that its contents are exactly
the result of the acknowledged operations, or of those plus the one
operation that was in flight (never a part of a batch). The next child
continues from there in the same directory, so every kill also tests
recovery of a store recovered before.

The quick variants run by default (bounded to a few seconds each); the
``slow`` variants (NORIKV_SLOW=1) do hundreds of kills.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time

import pytest

from norikv import FsyncPolicy, KvStore

# Shared by the parent (exec) and the child: operation i of a run.
OPS_SRC = r"""
import random

def gen(mode, seed, i):
    r = random.Random(seed * 1_000_003 + i)
    keyspace = 3000 if mode == "compact" else 400
    vmax = 600 if mode == "compact" else 100

    def one():
        k = b"k%05d" % r.randrange(keyspace)
        if r.random() < 0.15:
            return (k, None)
        return (k, b"%d:" % i + r.randbytes(r.randrange(vmax)))

    if mode == "batch" and r.random() < 0.7:
        return "batch", [one() for _ in range(r.randrange(2, 17))]
    return "single", [one()]
"""

CHILD = (
    OPS_SRC
    + r"""
import os, sys, threading
from norikv import KvStore, FsyncPolicy

path, mode, seed, start, policy = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
fsync = {"os": FsyncPolicy.OS, "always": FsyncPolicy.ALWAYS, "batch": FsyncPolicy.batch(0.005)}[policy]
store = KvStore.open(path, fsync_policy=fsync, max_segment_size=1 << 20, auto_compact=False)

def ack(line):
    os.write(1, line)

if mode == "compact":
    def compactor():
        while True:
            ack(b"s\n")
            store.compact()
            ack(b"c\n")
    threading.Thread(target=compactor, daemon=True).start()

ack(b"r\n")
i = start
while True:
    kind, ops = gen(mode, seed, i)
    if kind == "batch":
        with store.batch() as b:
            for k, v in ops:
                if v is None:
                    b.delete(k)
                else:
                    b.put(k, v)
    else:
        ((k, v),) = ops
        if v is None:
            store.delete(k)
        else:
            store.put(k, v)
    ack(b"%d\n" % i)
    if mode == "commit" and i % 400 == 399:
        store.sync()  # commits of ~30 KB: zeros written ahead (segment.pyx, _zero_ahead)
    i += 1
"""
)

_ns: dict = {}
exec(OPS_SRC, _ns)
gen = _ns["gen"]

POLICIES = ["os", "batch", "always"]
TIMEOUT = 60.0  # any single wait longer than this fails the test


def apply(model, mode, seed, i):
    _, ops = gen(mode, seed, i)
    for k, v in ops:
        if v is None:
            model.pop(k, None)
        else:
            model[k] = v


class Child:
    def __init__(self, path, mode, seed, start, policy, errfile):
        self.err = errfile
        with open(errfile, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(path), mode, str(seed), str(start), policy],
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        self.buf = b""
        self.acked: list[int] = []
        self.events: list[str] = []  # "r", "s" (compaction started), "c" (done), "w" (write acked)

    def _fail(self, why):
        self.proc.kill()
        self.proc.wait()
        with open(self.err, "rb") as f:
            err = f.read().decode(errors="replace")
        pytest.fail(f"{why}; child stderr:\n{err[-3000:]}")

    def _consume(self, data):
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            if line in (b"r", b"s", b"c"):
                self.events.append(line.decode())
            else:
                self.acked.append(int(line))
                self.events.append("w")

    def read_until(self, pred):
        deadline = time.monotonic() + TIMEOUT
        fd = self.proc.stdout.fileno()
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                self._fail("timed out waiting for the child")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                data = os.read(fd, 1 << 16)
                if not data:
                    self._fail(f"the child exited early (rc={self.proc.wait()})")
                self._consume(data)

    def kill(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(TIMEOUT)
        assert self.proc.returncode == -signal.SIGKILL
        # every acknowledgement written before death is still in the pipe
        rest = self.proc.stdout.read()
        self.proc.stdout.close()
        self._consume(rest)
        assert self.buf == b""  # pipe writes of a short line are atomic


def run_kills(tmp_path, mode, kills, seed, budget_s):
    """Kills `kills` children (fewer if `budget_s` runs out after a minimum of
    5); returns statistics of the run. The children keep their values as
    the test's mode says (conftest's BOTH_VALUE_MODES); each reopen that
    checks their work picks a mode at random, so a log (and the hint files)
    written in one mode is recovered in the other too."""
    path = tmp_path / "store"
    rng = random.Random(seed)
    modes = random.Random(seed + 1)  # (apart: the other draws stay those of each seed)
    model: dict[bytes, bytes] = {}
    nxt = 0
    t0 = time.monotonic()
    stats = {"kills": 0, "in_flight_applied": 0, "mid_compaction": 0, "acked": 0, "corruption_reported": 0}
    for n in range(kills):
        if n >= 5 and time.monotonic() - t0 > budget_s:
            break
        policy = rng.choice(POLICIES)
        child = Child(path, mode, seed, nxt, policy, tmp_path / "child.err")
        child.read_until(lambda child=child: "r" in child.events)
        if mode == "compact":
            # kill a random number of writes after the k-th compaction started
            k = rng.randrange(1, 4)
            extra = rng.randrange(0, 60)

            def ready(child=child, k=k, extra=extra):
                starts = [j for j, e in enumerate(child.events) if e == "s"]
                return len(starts) >= k and child.events[starts[k - 1] :].count("w") >= extra

            child.read_until(ready)
        else:
            target = rng.choice([1, rng.randrange(1, 50), rng.randrange(1, 3000)])
            if policy == "always":
                target = min(target, 200)  # each write waits for an fsync
            child.read_until(lambda child=child, target=target: len(child.acked) >= target)
        child.kill()
        if mode == "compact" and child.events[-1 - child.events[::-1].index("s") :].count("c") == 0:
            stats["mid_compaction"] += 1  # the last compaction started never finished
        acked = child.acked
        assert acked == list(range(nxt, nxt + len(acked)))  # in order, none missing
        stats["kills"] += 1
        stats["acked"] += len(acked)
        for i in acked:
            apply(model, mode, seed, i)
        with_next = dict(model)
        in_flight = nxt + len(acked)
        apply(with_next, mode, seed, in_flight)

        checked_in = modes.choice(["memory", "disk"])
        store = KvStore.open(
            path, fsync_policy=FsyncPolicy.OS, max_segment_size=1 << 20, auto_compact=False, values=checked_in
        )
        try:
            state = dict(store.items())
            if store.recovery_info.corruption_detected:
                stats["corruption_reported"] += 1
            if state == model:
                nxt = in_flight
            elif state == with_next:
                # the operation in flight had been written completely
                model = with_next
                nxt = in_flight + 1
                stats["in_flight_applied"] += 1
            else:
                lost = {k for k in model if state.get(k) != model[k]}
                extra = {k for k in state if k not in model}
                pytest.fail(
                    f"kill {n} ({mode}, {policy}, reopened with values={checked_in!r}): state after reopen is "
                    f"neither the "
                    f"acknowledged one nor that plus the op in flight (#{in_flight}); "
                    f"{len(lost)} keys differ, {len(extra)} unexpected: "
                    f"{sorted(lost)[:5]} {sorted(extra)[:5]}"
                )
            assert len(store) == len(model)
        finally:
            if rng.random() < 0.5:
                store.close()
            else:
                del store  # leave the files as found (drop without close)
    return stats


# --------------------------------------------------------------- quick (default)


def test_kill9_during_single_writes(tmp_path):
    stats = run_kills(tmp_path, "write", kills=20, seed=11, budget_s=12)
    assert stats["kills"] >= 5 and stats["acked"] > 0


def test_kill9_during_batches(tmp_path):
    stats = run_kills(tmp_path, "batch", kills=20, seed=22, budget_s=12)
    assert stats["kills"] >= 5 and stats["acked"] > 0


def test_kill9_during_durable_commits(tmp_path):
    """A store that commits with sync() every 400 puts: the writer writes
    zeros ahead of the log's end (page-sized-folio mode); none may land on
    an acknowledged record."""
    stats = run_kills(tmp_path, "commit", kills=20, seed=44, budget_s=12)
    assert stats["kills"] >= 5 and stats["acked"] > 0


def test_kill9_during_compaction(tmp_path):
    stats = run_kills(tmp_path, "compact", kills=16, seed=33, budget_s=15)
    assert stats["kills"] >= 5
    # the kills must really hit compactions in progress, not only writes
    assert stats["mid_compaction"] >= 1, stats


# --------------------------------------------------------------- slow soak


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["write", "batch", "commit", "compact"])
def test_kill9_soak(tmp_path, mode):
    stats = run_kills(tmp_path, mode, kills=150, seed=1000 + len(mode), budget_s=400)
    assert stats["kills"] >= 50
    if mode == "compact":
        assert stats["mid_compaction"] >= 10, stats
