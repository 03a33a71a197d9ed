"""Power loss, not only process death: the writer's system calls are
recorded with strace and checked against what each policy promises.

A SIGKILL leaves the page cache, so it cannot tell a policy that fsyncs from
one that does not. Here every write the writer treats as *durable* (each put
under ALWAYS; everything before a returned ``sync()`` under batch and OS)
must have been covered, after it was written and before it was acknowledged,
by a completed fdatasync/fsync of its segment file (or msync(MS_SYNC) of
its mapping: Linux syncs that range of the file as fdatasync does, and the
background thread syncs the log that way, up to its end), and each new segment
file by a completed fsync of the directory (and each directory the open
created, by an fsync of its parent). Writes go through a MAP_SHARED
mapping, so there is no write() per record to see: the fsync between the
write's start and its acknowledgement is what counts. Acknowledgements are
written by the child to a known descriptor (``ACKFD``), so they appear in the
trace in order with the syscalls.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from ._util import describe

ACKFD = 99

CHILD = r"""
import os, sys
from norikv import KvStore, FsyncPolicy
path, policy, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
pol = {"always": FsyncPolicy.ALWAYS, "batch": FsyncPolicy.batch(0.002), "os": FsyncPolicy.OS}[policy]
fd = os.open("/dev/null", os.O_WRONLY)
os.dup2(fd, %d)
def mark(s):
    os.write(%d, s.encode())
store = KvStore.open(path, fsync_policy=pol, max_segment_size=1 << 20, auto_compact=False)
for i in range(n):
    mark("BEGIN %%d\n" %% i)
    store.put(b"k%%05d" %% i, bytes([i %% 251]) * 10000)
    mark("ACK %%d %%d\n" %% (i, store.wal.seg_id))
    if i %% 40 == 39:
        mark("SBEGIN %%d\n" %% i)
        store.sync()
        mark("SACK %%d\n" %% i)
store.close()
""" % (ACKFD, ACKFD)

LINE = re.compile(r"^(\d+)\s+(.*)$")
CALL = re.compile(r"^(\w+)\((.*?)(?: <unfinished \.\.\.>|\)\s+=\s+(0x[0-9a-f]+|-?\d+).*)$")
RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>.*\)\s+=\s+(0x[0-9a-f]+|-?\d+)")
SYNCS = ("fsync", "fdatasync", "msync")


def parse(trace: str):
    """Events in order: (kind, payload). Completed syncs carry the file path."""
    fdpath: dict[int, str] = {}
    maps: dict[int, tuple[int, str]] = {}  # shared file mappings: address -> (length, path)
    pending: dict[str, tuple[str, str]] = {}
    events = []

    def synced_path(name, args):
        if name != "msync":
            return fdpath.get(int(args.split(",")[0]), "?")
        addr = int(args.split(",")[0], 16)
        return next((p for a, (n, p) in maps.items() if a <= addr < a + n), "?")

    for raw in trace.splitlines():
        m = LINE.match(raw)
        if not m:
            continue
        pid, body = m.groups()
        r = RESUMED.match(body)
        if r:
            name, ret = r.group(1), int(r.group(2), 0)
            call = pending.pop(pid, None)
            if call is None:
                continue
            name, args = call
        else:
            c = CALL.match(body)
            if not c:
                continue
            name, args, ret = c.group(1), c.group(2), c.group(3)
            if ret is None:
                if name in SYNCS:  # started now, completes later
                    events.append(("sync-start", None))
                    args = (args, len(events) - 1, synced_path(name, args))
                pending[pid] = (name, args)
                continue
            ret = int(ret, 0)
        if name in ("mkdir", "mkdirat") and ret == 0:
            events.append(("mkdir", re.search(r'"([^"]*)"', args).group(1)))
        elif name == "openat" and ret >= 0:
            p = re.search(r'"([^"]*)"', args).group(1)
            fdpath[ret] = p
            if "O_CREAT" in args and p.endswith(".wal"):
                events.append(("create", p))
        elif name == "close" and ret == 0:
            fdpath.pop(int(args.split(",")[0]), None)
        elif name == "mmap" and ret > 0 and "MAP_SHARED" in args:
            a = [x.strip() for x in args.split(",")]
            if int(a[-2]) in fdpath:
                maps[ret] = (int(a[1]), fdpath[int(a[-2])])
        elif name == "munmap" and ret == 0:
            maps.pop(int(args.split(",")[0], 16), None)
        elif name in SYNCS and ret == 0 and (name != "msync" or "MS_SYNC" in str(args)):
            if isinstance(args, tuple):  # (args, start event, path)
                events.append(("sync", (args[2], args[1])))
            else:
                events.append(("sync", (synced_path(name, args), len(events))))
        elif name == "write" and args.startswith(f"{ACKFD}, "):
            text = re.search(r'"(.*)"', args).group(1).replace("\\n", "")
            events.append(("mark", text))
    return events


def check(events, waldir: str, policy: str, treat_every_put_as_durable: bool = False):
    """Returns the list of violations (empty: the promise held)."""
    seg_path = lambda s: os.path.join(waldir, "%06d.wal" % s)  # noqa: E731
    begin_at: dict[int, int] = {}
    seg_lo: dict[int, int] = {}  # threaded writers: segment when the write began
    seg_of: dict[int, int] = {}
    created_at: dict[str, int] = {}
    syncs: dict[str, list[int]] = {}
    undurable: list[int] = []
    dir_ok: set[str] = set()
    mkdirs: dict[str, int] = {}
    violations = []

    def covered(path, since, until):
        """A sync of `path` that started after `since` and completed before `until`."""
        return any(since < start and t < until for t, start in syncs.get(path, ()))

    def require(writes, at):
        for d, t_made in list(mkdirs.items()):
            if not covered(os.path.dirname(d), t_made, at):
                violations.append(
                    f"directory {d} was created but its parent was not fsynced before a durable acknowledgement"
                )
            del mkdirs[d]
        for w in writes:
            # With several writer threads another one may rotate between this
            # write and its ACK: the record is in one of the segments between.
            cands = [seg_path(x) for x in range(seg_lo.get(w, seg_of[w]), seg_of[w] + 1)]
            p = next((c for c in cands if covered(c, begin_at[w], at)), cands[-1])
            if not covered(p, begin_at[w], at):
                violations.append(
                    f"write {w} in {os.path.basename(p)} acknowledged as durable without a completed fsync of its file"
                )
            if p not in dir_ok:
                if covered(waldir, created_at.get(p, -1), at):
                    dir_ok.add(p)
                else:
                    violations.append(
                        f"{os.path.basename(p)} created but the directory was not "
                        f"fsynced before write {w} was acknowledged"
                    )

    for t, (kind, payload) in enumerate(events):
        if kind == "create":
            created_at[payload] = t
        elif kind == "mkdir":
            mkdirs[payload] = t
        elif kind == "sync":
            path, start = payload
            syncs.setdefault(path, []).append((t, start))
        elif kind == "mark":
            word, *rest = payload.split()
            if word == "BEGIN":
                begin_at[int(rest[0])] = t
                if len(rest) > 1:
                    seg_lo[int(rest[0])] = int(rest[1])
            elif word == "ACK":
                i, s = int(rest[0]), int(rest[1])
                seg_of[i] = s
                if policy == "always" or treat_every_put_as_durable:
                    require([i], t)
                else:
                    undurable.append(i)
            elif word == "SACK":
                require(undurable, t)
                undurable.clear()
    return violations


@pytest.fixture(scope="module")
def strace():
    exe = shutil.which("strace")
    if exe is None:
        pytest.skip("strace is not installed (apt-get install -y strace)")
    r = subprocess.run([exe, "-f", "-o", os.devnull, "true"], capture_output=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"strace cannot trace here: {r.stderr[-300:]!r}")
    return exe


def _strace(strace, out, calls, script, *args):
    """Runs ``python -c script args`` under strace (following threads,
    tracing ``calls``) into ``out``; returns the parsed events."""
    cmd = [strace, "-f", "-s", "256", "-o", str(out), "-e", "trace=" + calls, sys.executable, "-c", script, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, describe(proc)
    return parse(out.read_text())


def _trace(strace, tmp_path, policy, n=260):
    db = tmp_path / "new" / "db"
    calls = (
        "write,pwrite64,msync,mmap,munmap,fsync,fdatasync,rename,openat,close,fallocate,ftruncate,unlink,mkdir,mkdirat"
    )
    return _strace(strace, tmp_path / "trace.txt", calls, CHILD, str(db), policy, str(n)), str(db / "wal")


@pytest.mark.parametrize("policy", ["always", "batch", "os"])
def test_acknowledged_durable_writes_were_fsynced(strace, tmp_path, policy):
    events, waldir = _trace(strace, tmp_path, policy)
    marks = [e for e in events if e[0] == "mark"]
    assert len([m for m in marks if m[1].startswith("ACK")]) == 260
    creates = [e for e in events if e[0] == "create"]
    assert len(creates) >= 3, "the workload should rotate segments"
    assert len([e for e in events if e[0] == "mkdir"]) >= 2  # the store and its wal/ directory
    assert check(events, waldir, policy) == []


def test_checker_flags_writes_that_were_never_fsynced(strace, tmp_path):
    """Negative control: under OS, a put is not durable when it returns; a
    checker that demanded it must find violations (else it checks nothing)."""
    events, waldir = _trace(strace, tmp_path, "os", n=60)
    v = check(events, waldir, "os", treat_every_put_as_durable=True)
    assert len(v) >= 30, v[:5]


THREADED = r"""
import os, sys, threading
from norikv import KvStore, FsyncPolicy
path, n = sys.argv[1], int(sys.argv[2])
fd = os.open("/dev/null", os.O_WRONLY)
os.dup2(fd, @ACKFD@)
store = KvStore.open(path, fsync_policy=FsyncPolicy.ALWAYS, max_segment_size=1 << 20,
                     auto_compact=False)
def work(t):
    for i in range(n):
        w = t * 100000 + i
        os.write(@ACKFD@, b"BEGIN %d %d\n" % (w, store.wal.seg_id))
        store.put(b"t%d-%05d" % (t, i), bytes([i % 251]) * 6000)
        os.write(@ACKFD@, b"ACK %d %d\n" % (w, store.wal.seg_id))
ts = [threading.Thread(target=work, args=(t,)) for t in range(4)]
for t in ts: t.start()
for t in ts: t.join()
store.close()
""".replace("@ACKFD@", str(ACKFD))


def test_group_commit_covers_every_thread(strace, tmp_path):
    """Four threads putting under ALWAYS share fsyncs (group commit): each
    put must still return only after an fdatasync that started after it began
    and completed before it returned."""
    db = tmp_path / "db"
    calls = "write,msync,mmap,munmap,fsync,fdatasync,openat,close,ftruncate,mkdir,mkdirat"
    events = _strace(strace, tmp_path / "trace.txt", calls, THREADED, str(db), "120")
    acks = [e for e in events if e[0] == "mark" and e[1].startswith("ACK")]
    assert len(acks) == 480
    assert check(events, str(db / "wal"), "always") == []
