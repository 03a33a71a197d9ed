"""fork() with a store or Wal open in the parent.

In the child, the inherited handle stops being an owner: it can be closed or
dropped without waiting for anything (the locks a thread of the parent held
at the fork stay held forever in the child) and without touching the files;
everything else but reads of the KvStore's memory raises NoriIOError. The
child can open the store itself beside its parent (any number of processes
share a store); a Wal's directory raises LockError while another process
holds it, and opens once the parent has closed it.

Every child reports through a pipe and ends with os._exit; the parent waits
for it with a deadline and kills it when it hangs."""

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback

import pytest

import norikv.wal
from conftest import fork_with_threads
from norikv import FsyncPolicy, KvStore, Position, Record, Wal, WalConfig, _engine
from storeutil import run_in_thread

MIB = 1 << 20
TIMEOUT = 60


# ---------------------------------------------------------------- fork helpers


class Child:
    def __init__(self, pid, from_child, to_child):
        self.pid = pid
        self.from_child = from_child
        self.to_child = to_child
        self.buf = b""
        self.status = None

    def send(self, msg):
        os.write(self.to_child, (msg + "\n").encode())

    def recv(self, timeout=TIMEOUT):
        """The next message of the child; fails (killing it) if none comes in time."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            ready = select.select([self.from_child], [], [], max(left, 0))[0] if left > 0 else []
            if not ready:
                self.kill()
                pytest.fail(f"the child did not answer within {timeout} s (hung)")
            chunk = os.read(self.from_child, 65536)
            if not chunk:
                self.wait()
                pytest.fail(f"the child ended without answering (status {self.status})")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        msg = json.loads(line)
        if msg[0] == "exception":
            self.wait()
            pytest.fail("the child raised:\n" + msg[1])
        return msg

    def wait(self, timeout=TIMEOUT):
        """Waits for the child to exit (killing it after the deadline); returns its exit code."""
        if self.status is None:
            deadline = time.monotonic() + timeout
            while True:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.status = status
                    break
                if time.monotonic() > deadline:
                    self.kill()
                    pytest.fail(f"the child did not exit within {timeout} s (hung)")
                # the child closes its pipe end when it exits: wait for that
                select.select([self.from_child], [], [], 0.05)
            os.close(self.from_child)
            os.close(self.to_child)
        assert os.WIFEXITED(self.status), f"child killed by signal {os.WTERMSIG(self.status)}"
        return os.WEXITSTATUS(self.status)

    def kill(self):
        if self.status is None:
            os.kill(self.pid, signal.SIGKILL)
            _, self.status = os.waitpid(self.pid, 0)
            os.close(self.from_child)
            os.close(self.to_child)


def fork(body):
    """Forks; the child runs body(send, recv) and _exits (1 if it raised,
    after reporting the traceback)."""
    up_r, up_w = os.pipe()
    down_r, down_w = os.pipe()
    pid = fork_with_threads()
    if pid == 0:
        code = 1
        try:
            os.close(up_r)
            os.close(down_w)
            rfile = os.fdopen(down_r, "rb", buffering=0)

            def send(*msg):
                os.write(up_w, (json.dumps(msg) + "\n").encode())

            def recv():
                line = b""
                while not line.endswith(b"\n"):
                    c = rfile.read(1)
                    if not c:
                        raise EOFError("the parent went away")
                    line += c
                return line.decode().strip()

            body(send, recv)
            code = 0
        except BaseException:
            try:
                os.write(up_w, (json.dumps(["exception", traceback.format_exc()]) + "\n").encode())
            except BaseException:
                pass
        finally:
            os._exit(code)
    os.close(up_w)
    os.close(down_r)
    return Child(pid, up_r, down_w)


def outcome(fn):
    """'ok' or the name of the exception fn raised."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - reported to the parent
        return type(e).__name__
    return "ok"


# ---------------------------------------------------------------- parent-side holders


def block_next_segment(wal, thread_name):
    """Makes the thread named thread_name stop, holding the Wal's io_lock,
    when it next creates a segment (a rotation). Returns (entered, go)."""
    real = type(wal)._segment_path
    entered, go = threading.Event(), threading.Event()

    def segment_path(seg_id):
        if threading.current_thread().name == thread_name and not entered.is_set():
            entered.set()
            go.wait(TIMEOUT)
        return real(wal, seg_id)

    wal._segment_path = segment_path
    return entered, go


class PausedSnapshot:
    """norikv._engine.write_snapshot, pausing (with the store's compaction lock
    held) after the temporary files are written, until ``go`` is set."""

    def __init__(self, monkeypatch):
        self.real = _engine.write_snapshot
        self.written = threading.Event()
        self.go = threading.Event()
        monkeypatch.setattr(_engine, "write_snapshot", self)

    def __call__(self, *args):
        parts = self.real(*args)
        self.written.set()
        self.go.wait(TIMEOUT)
        return parts


def open_kv(path, **kw):
    kw.setdefault("fsync_policy", FsyncPolicy.OS)
    kw.setdefault("max_segment_size", MIB)
    return KvStore.open(path, **kw)


def wal_cfg(path, **kw):
    kw.setdefault("fsync_policy", FsyncPolicy.OS)
    kw.setdefault("max_segment_size", MIB)
    return WalConfig(dir=str(path), **kw)


def wal_items(wal):
    return [[r.key.decode(), r.value.decode()] for r, _ in wal.read_from(Position(0, 0))]


# ---------------------------------------------------------------- (a) + (c), deterministic


def test_store_child_of_busy_parent_closes_and_opens_its_own(tmp_path, monkeypatch):
    """At the fork, threads of the parent hold every lock a child path could
    need: a compaction paused in its snapshot (the compaction lock), a writer
    stopped inside a segment rotation (the Wal's io_lock), the main thread
    holds the range index lock and wal.py's release condition. The child can
    read, is refused writes through the inherited handle, opens the store
    itself (but gets LockError from Wal.open), and close() returns."""
    store = open_kv(tmp_path, auto_compact=False)
    expected = {}
    for i in range(100):
        store.put(b"k%03d" % i, b"v%d" % i)
        expected[b"k%03d" % i] = b"v%d" % i
    list(store.range(b"k000", b"k010"))  # the range index exists

    snap = PausedSnapshot(monkeypatch)
    compactor, cbox = run_in_thread(store.compact, "paused-compaction")
    assert snap.written.wait(TIMEOUT)
    entered, go = block_next_segment(store.wal, "blocked-writer")

    def write_big():
        store.put(b"big1", b"x" * (600 << 10))
        store.put(b"big2", b"y" * (600 << 10))  # rotates: stops holding io_lock

    writer, wbox = run_in_thread(write_big, "blocked-writer")
    assert entered.wait(TIMEOUT)
    store._index_lock.acquire()
    norikv.wal._released.acquire()
    try:

        def child(send, recv):
            res = {
                "get": store.get(b"k005").decode(),
                "len": len(store),
                "range": [k.decode() for k, _ in store.range(b"k000", b"k003")],
                "prefix": len(list(store.prefix(b"k0"))),
                "contains": b"k007" in store,
                "stats_keys": store.stats()["keys"],
                "put": outcome(lambda: store.put(b"c", b"1")),
                "setitem": outcome(lambda: store.__setitem__(b"c", b"1")),
                "delete": outcome(lambda: store.delete(b"k001")),
                "sync": outcome(store.sync),
                "compact": outcome(store.compact),
                "open": outcome(lambda: KvStore.open(tmp_path)),
                "wal_open": outcome(lambda: Wal.open(wal_cfg(tmp_path / "wal"))),
                "wal_read": outcome(lambda: store.wal.current_position()),
            }
            b = store.batch()
            b.put(b"c", b"1")
            res["batch"] = outcome(b.write)
            store.close()
            res["closed"] = store.closed
            res["close_again"] = outcome(store.close)
            send("done", res)

        c = fork(child)
        msg = c.recv()
        assert c.wait() == 0
    finally:
        norikv.wal._released.release()
        store._index_lock.release()
        go.set()
        snap.go.set()
    res = msg[1]
    # big1 went in before the writer stopped in the rotation for big2
    assert res["get"] == "v5" and res["len"] == 101 and res["contains"] is True
    assert res["range"] == ["k000", "k001", "k002"] and res["prefix"] == 100
    assert res["stats_keys"] == 101
    for op in ("put", "setitem", "delete", "batch", "sync", "compact", "wal_read"):
        assert res[op] == "NoriIOError", (op, res)
    assert res["open"] == "ok" and res["wal_open"] == "LockError"
    assert res["closed"] is True and res["close_again"] == "ok"

    # the parent goes on as if nothing happened
    writer.join(TIMEOUT)
    compactor.join(TIMEOUT)
    assert not writer.is_alive() and not compactor.is_alive()
    assert "error" not in wbox and "error" not in cbox, (wbox, cbox)
    del store.wal._segment_path
    store.put(b"after", b"fork")
    expected.update({b"big1": b"x" * (600 << 10), b"big2": b"y" * (600 << 10), b"after": b"fork"})
    assert dict(store.items()) == expected
    store.close()
    with open_kv(tmp_path) as again:
        assert dict(again.items()) == expected


def test_wal_child_of_busy_parent_closes_and_cannot_open(tmp_path):
    wal, _ = Wal.open(wal_cfg(tmp_path))
    for i in range(10):
        wal.append(Record.put(b"k%d" % i, b"v"))
    entered, go = block_next_segment(wal, "blocked-writer")

    def write_big():
        wal.append(Record.put(b"big1", b"x" * (600 << 10)))
        wal.append(Record.put(b"big2", b"y" * (600 << 10)))

    writer, wbox = run_in_thread(write_big, "blocked-writer")
    assert entered.wait(TIMEOUT)
    norikv.wal._released.acquire()
    try:

        def child(send, recv):
            res = {
                "append": outcome(lambda: wal.append(Record.put(b"c", b"1"))),
                "batch": outcome(lambda: wal.append_batch([Record.put(b"c", b"1")])),
                "sync": outcome(wal.sync),
                "flush": outcome(wal.flush),
                "position": outcome(wal.current_position),
                "read": outcome(lambda: list(wal.read_from(Position(0, 0)))),
                "delete": outcome(lambda: wal.delete_segments_before(Position(1, 0))),
                "open": outcome(lambda: Wal.open(wal_cfg(tmp_path))),
            }
            wal.close()
            res["closed"] = wal.closed
            send("done", res)

        c = fork(child)
        msg = c.recv()
        assert c.wait() == 0
    finally:
        norikv.wal._released.release()
        go.set()
    res = msg[1]
    for op in ("append", "batch", "sync", "flush", "position", "read", "delete"):
        assert res[op] == "NoriIOError", (op, res)
    assert res["open"] == "LockError" and res["closed"] is True
    writer.join(TIMEOUT)
    assert not writer.is_alive() and "error" not in wbox, wbox
    del wal._segment_path
    keys = [r.key for r, _ in wal.read_from(Position(0, 0))]
    assert keys == [b"k%d" % i for i in range(10)] + [b"big1", b"big2"]
    wal.close()


# ---------------------------------------------------------------- (a), a writer thread at full speed


@pytest.mark.parametrize("policy", [FsyncPolicy.ALWAYS, FsyncPolicy.batch(0.001)], ids=["always", "batch"])
def test_fork_while_a_thread_puts_in_a_loop(tmp_path, policy):
    """The issue's reproduction: a thread of the parent puts in a loop (under
    ALWAYS it holds io_lock for its fsyncs most of the time); each child drops
    its handle (close(), with-exit, del) and exits 0 in bounded time."""
    store = KvStore.open(tmp_path, fsync_policy=policy, max_segment_size=MIB)
    stop = threading.Event()
    count = [0]

    def loop():
        i = 0
        while not stop.is_set():
            store.put(b"k%d" % (i % 500), b"v" * 200)
            i += 1
            count[0] = i

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        for n in range(6):
            before = count[0]
            deadline = time.monotonic() + TIMEOUT
            while count[0] < before + 50:  # the loop is running at the fork
                assert t.is_alive() and time.monotonic() < deadline, "the writer stopped"
                stop.wait(0.001)
            how = ("close", "with", "del")[n % 3]

            def child(send, recv, how=how):
                nonlocal store
                if how == "close":
                    store.close()
                elif how == "with":
                    with store:
                        pass
                else:
                    del store
                send("dropped", how)

            c = fork(child)
            assert c.recv() == ["dropped", how]
            assert c.wait() == 0
    finally:
        stop.set()
        t.join(TIMEOUT)
    assert not t.is_alive()
    keys = len(store)
    store.close()
    with open_kv(tmp_path) as again:
        assert len(again) == keys


# ---------------------------------------------------------------- (b) open in the child once the parent closed


@pytest.mark.parametrize("how", ["close", "with", "del"])
def test_store_child_opens_after_parent_closes(tmp_path, how):
    store = open_kv(tmp_path)
    stop = threading.Event()

    def loop(s=store):  # a reference the child cannot drop (the thread is gone there)
        i = 0
        while not stop.is_set():
            s.put(b"w%d" % (i % 100), b"%d" % i)
            i += 1

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    store.put(b"parent", b"1")

    def child(send, recv):
        nonlocal store
        held = outcome(lambda: KvStore.open(tmp_path))
        if how == "close":
            store.close()
        elif how == "with":
            with store:
                pass
        else:
            del store  # the writer thread's reference keeps the object alive
        send("dropped", held)
        assert recv() == "parent-closed"
        with open_kv(tmp_path) as mine:
            items = {k.decode(): v.decode() for k, v in mine.items()}
            mine.put(b"child", b"2")
        send("items", items)

    c = fork(child)
    assert c.recv() == ["dropped", "ok"]  # a child opens the store beside its parent
    stop.set()
    t.join(TIMEOUT)
    expected = {k.decode(): v.decode() for k, v in store.items()}
    store.close()
    c.send("parent-closed")
    assert c.recv() == ["items", expected]
    assert c.wait() == 0
    with open_kv(tmp_path) as again:
        assert again.get(b"child") == b"2"
        assert again.get(b"parent") == b"1"


@pytest.mark.parametrize("how", ["close", "with", "del"])
def test_wal_child_opens_after_parent_closes(tmp_path, how):
    wal, _ = Wal.open(wal_cfg(tmp_path))
    for i in range(20):
        wal.append(Record.put(b"p%d" % i, b"%d" % i))
    reader = wal.read_from(Position(0, 0))  # refers to the Wal: dropping `wal` does not free it

    def child(send, recv):
        nonlocal wal
        held = outcome(lambda: Wal.open(wal_cfg(tmp_path)))
        if how == "close":
            wal.close()
        elif how == "with":
            with wal:
                pass
        else:
            del wal
        send("dropped", held)
        assert recv() == "parent-closed"
        mine, _ = Wal.open(wal_cfg(tmp_path))
        with mine:
            items = wal_items(mine)
            mine.append(Record.put(b"child", b"c"))
        send("items", items)

    c = fork(child)
    assert c.recv() == ["dropped", "LockError"]
    wal.append(Record.put(b"late", b"l"))  # written after the fork, read by the child
    expected = wal_items(wal)
    wal.close()
    c.send("parent-closed")
    assert c.recv() == ["items", expected]
    assert c.wait() == 0
    reader.close()
    with Wal.open(wal_cfg(tmp_path))[0] as again:
        assert wal_items(again) == expected + [["child", "c"]]


PARENT_EXITS = textwrap.dedent("""
    import os, select, sys
    from norikv import FsyncPolicy, KvStore, LockError
    path = sys.argv[1]
    store = KvStore.open(path, fsync_policy=FsyncPolicy.OS)
    store.put(b"from-parent", b"1")
    parent = os.getpid()
    pidfd = os.pidfd_open(parent)
    r, w = os.pipe()
    if os.fork() == 0:
        os.close(r)
        with KvStore.open(path, fsync_policy=FsyncPolicy.OS) as beside:
            print("child: opened beside the parent, from-parent =", beside.get(b"from-parent"), flush=True)
        os.write(w, b"x")              # the parent may exit now
        # readable once the parent has exited, after the kernel closed its files
        assert select.select([pidfd], [], [], 60)[0], "the parent did not exit"
        with KvStore.open(path, fsync_policy=FsyncPolicy.OS) as mine:
            print("child: opened, from-parent =", mine.get(b"from-parent"), flush=True)
        os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"x"
    # the parent exits with the store open (no close): the OS releases its lock
""")


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs os.pidfd_open (Linux)")
def test_child_opens_after_parent_exits(tmp_path):
    """The inherited handle is not dropped at all here: the child opens the
    store once its parent has exited, holding it to the end."""
    out = subprocess.run(
        [sys.executable, "-c", PARENT_EXITS, str(tmp_path)], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "child: opened beside the parent, from-parent = b'1'",
        "child: opened, from-parent = b'1'",
    ], out.stderr
