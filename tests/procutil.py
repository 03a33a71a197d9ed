"""Real processes on one store, for the tests of many processes.

A :class:`Worker` is a Python subprocess with the store open, driven one
command at a time over its stdin/stdout (a JSON line each way), so a test
decides exactly what each process does and when, and can SIGKILL it at any
point between two commands (or while it holds a lock a command took)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

_WORKER = r"""
import json, os, sys
import norikv
from norikv import KvStore, FsyncPolicy, _engine

path, opts = sys.argv[1], json.loads(sys.argv[2])
if "fsync_policy" in opts:
    opts["fsync_policy"] = {"os": FsyncPolicy.OS, "always": FsyncPolicy.ALWAYS}[opts["fsync_policy"]]
s = KvStore.open(path, **opts)
print(json.dumps({"pid": os.getpid(), "first": s.wal.first_opener}), flush=True)
enc = lambda b: None if b is None else b.decode("latin-1")
for line in sys.stdin:
    cmd = json.loads(line)
    op, args = cmd[0], cmd[1:]
    try:
        r = None
        if op == "put":
            s.put(args[0].encode(), args[1].encode())
        elif op == "get":
            r = enc(s.get(args[0].encode()))
        elif op == "delete":
            r = s.delete(args[0].encode())
        elif op == "batch":
            with s.batch() as b:
                for k, v in args[0]:
                    b.put(k.encode(), v.encode())
        elif op == "items":
            r = {enc(k): enc(v) for k, v in s.items()}
        elif op == "len":
            r = len(s)
        elif op == "sync":
            s.sync()
        elif op == "put_sync":
            s.put(args[0].encode(), args[1].encode())
            print(json.dumps({"put": True}), flush=True)
            s.sync()
        elif op == "compact":
            r = s.compact()["segments_written"]
        elif op == "stats":
            st = s.stats()
            r = {k: st[k] for k in ("fsyncs", "keys", "writer_deaths", "reloads") if k in st}
        elif op == "hold":
            r = _engine._test_hold(s.wal, args[0])
        elif op == "release":
            _engine._test_release(s.wal, args[0])
        elif op == "torn":
            _engine._test_torn_write(s.wal, bytes.fromhex(args[0]))
        elif op == "run":
            env = {"s": s, "norikv": norikv}
            exec(args[0], env)
            r = env.get("result")
        elif op == "close":
            s.close()
        else:
            raise ValueError(op)
        out = {"ok": r}
    except Exception as exc:
        out = {"err": type(exc).__name__, "msg": str(exc), "pid": getattr(exc, "pid", None)}
    print(json.dumps(out), flush=True)
"""


class Worker:
    """A process with ``KvStore.open(path, **opts)`` done, taking commands
    (``env``: variables added to its environment)."""

    def __init__(self, path, *, env=None, **opts):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER, os.fspath(path), json.dumps(opts)],
            env=None if env is None else {**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        hello = self._read()
        self.pid = hello["pid"]
        self.first = hello["first"]

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited with {self.proc.wait()}: {self.proc.stderr.read()}")
        return json.loads(line)

    def send(self, *cmd):
        """Sends a command without waiting for its answer."""
        self.proc.stdin.write(json.dumps(list(cmd)) + "\n")
        self.proc.stdin.flush()

    def reply(self):
        """The answer to the command sent last: its result, or raises
        RuntimeError naming the exception the worker got."""
        out = self._read()
        if "err" in out:
            raise WorkerError(out["err"], out["msg"], out["pid"])
        return out.get("ok")

    def __call__(self, *cmd):
        self.send(*cmd)
        return self.reply()

    def kill(self):
        """SIGKILL, wherever it is."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.proc.stderr.close()

    def stop(self):
        """Closes the store and ends the process."""
        if self.proc.poll() is None:
            try:
                self("close")
            finally:
                self.proc.stdin.close()
                self.proc.wait()
                self.proc.stdout.close()
                self.proc.stderr.close()


class WorkerError(RuntimeError):
    def __init__(self, kind, msg, pid):
        super().__init__(f"{kind}: {msg}")
        self.kind, self.msg, self.pid = kind, msg, pid
