#!/usr/bin/env python3
"""Instructions per operation of a norikv hot path, counted by callgrind.

    scripts/callgrind_per_op.py OP [--python PYTHON] [--small 20000] [--large 120000]

OP is read_from, reopen, get, put, append, put_sync or put_sync8; stores
open with --values (memory) and --policy (os). The same
workload runs under ``valgrind --tool=callgrind`` with --small and with
--large operations, and the difference of the two totals, divided by the
difference of the counts, is printed: start-up, imports and set-up cancel
out. --python picks the interpreter, hence the build (a venv of another
checkout measures that checkout; it must have norikv importable).
PYTHONHASHSEED is pinned, so a rerun gives the same count to within
obmalloc's state (a few instructions). put_sync and put_sync8 fsync each
operation: use --small 500 --large 2500.
docs/performance.md has figures measured this way."""

import argparse
import os
import re
import subprocess
import sys
import tempfile

# The workload, run as `python -c WORKLOAD OP DIR PHASE N LARGE`: PHASE "setup"
# writes what the measured phase reads (outside callgrind), "run" is measured.
# Both runs make the same LARGE keys (formatting them costs more than most
# operations); read_from reads N of a log of LARGE records, get first puts the
# LARGE keys: only the N operations differ.
WORKLOAD = r"""
import itertools, os, sys, threading
from norikv import FsyncPolicy, KvStore, Position, Record, Wal, WalConfig
op, path, phase, n, large = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
keys = [b"key:%012d" % ((i * 7919) % 1000003) for i in range(large)]
value = bytes(range(100))

def store():
    policy = FsyncPolicy.OS if os.environ["CG_POLICY"] == "os" else FsyncPolicy.batch(0.005)
    return KvStore.open(path, fsync_policy=policy, values=os.environ["CG_VALUES"], auto_compact=False)

def main():
    if phase == "setup":
        if op == "read_from":
            wal, _ = Wal.open(WalConfig(dir=path, fsync_policy=FsyncPolicy.OS))
            for k in keys:
                wal.append(Record.put(k, value))
            wal.close()
        elif op == "reopen":
            s = store()
            for k in keys[:n]:
                s.put(k, value)
            s.close()
        return
    if op == "read_from":
        wal, _ = Wal.open(WalConfig(dir=path, fsync_policy=FsyncPolicy.OS))
        count = 0
        for _ in wal.read_from(Position(0, 0)):
            count += 1
            if count == n:
                break
        assert count == n
        wal.close()
    elif op == "reopen":
        store().close()
    elif op == "get":
        s = store()
        put, get = s.put, s.get
        for k in keys:
            put(k, value)
        for k in keys[:n]:
            get(k)
        s.close()
    elif op == "put":
        s = store()
        put = s.put
        for k in keys[:n]:
            put(k, value)
        s.close()
    elif op == "append":
        wal, _ = Wal.open(WalConfig(dir=path, fsync_policy=FsyncPolicy.OS))
        append, rec = wal.append, Record.put
        for k in keys[:n]:
            append(rec(k, value))
        wal.close()
    else:  # put_sync, put_sync8: threads sharing one budget, as in benchmarks/
        threads = 8 if op == "put_sync8" else 1
        s, budget = store(), itertools.count()
        def work():
            while (i := next(budget)) < n:
                s.put(keys[i], value)
                s.sync()
        ts = [threading.Thread(target=work) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        s.close()

main()
"""

OPS = ("read_from", "reopen", "get", "put", "append", "put_sync", "put_sync8")


def instructions(python, op, n, large, tmp, values="memory", policy="os"):
    path = os.path.join(tmp, f"{op}-{n}")
    env = dict(os.environ, PYTHONHASHSEED="0", CG_VALUES=values, CG_POLICY=policy)
    cmd = [python, "-c", WORKLOAD, op, path]
    subprocess.run([*cmd, "setup", str(n), str(large)], check=True, env=env)
    out = os.path.join(tmp, f"callgrind.{op}.{n}")
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd, "run", str(n), str(large)],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with open(out) as f:
        m = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M)
    return int(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("op", choices=OPS)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--small", type=int, default=20000)
    ap.add_argument("--large", type=int, default=120000)
    ap.add_argument("--values", choices=["memory", "disk"], default="memory", help="the stores' value mode")
    ap.add_argument("--policy", choices=["os", "batch"], default="os", help="FsyncPolicy.OS or batch(0.005)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="norikv-callgrind-") as tmp:
        small = instructions(a.python, a.op, a.small, a.large, tmp, a.values, a.policy)
        large = instructions(a.python, a.op, a.large, a.large, tmp, a.values, a.policy)
    per = (large - small) / (a.large - a.small)
    print(f"{a.op}: {per:,.1f} instructions per operation ({a.small:,}: {small:,}; {a.large:,}: {large:,})")


if __name__ == "__main__":
    main()
