"""The directory lock: one Wal per directory across threads and processes,
released on close and by the OS when the holder dies; a forked child cannot
write through its parent's Wal."""

import gc
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import fork_with_threads
from norikv import FsyncPolicy, LockError, NoriError, Position, Record, Wal, WalConfig

MIB = 1 << 20
TIMEOUT = 60


def cfg(path, **kw):
    kw.setdefault("max_segment_size", MIB)
    kw.setdefault("fsync_policy", FsyncPolicy.OS)
    return WalConfig(dir=str(path), **kw)


TRY_OPEN = textwrap.dedent("""
    import sys
    from norikv import Wal, WalConfig, FsyncPolicy, LockError, Record
    try:
        wal, _ = Wal.open(WalConfig(dir=sys.argv[1], max_segment_size=1 << 20,
                                    fsync_policy=FsyncPolicy.OS))
    except LockError as e:
        print("LOCKED", e.filename, "|", e)
    else:
        wal.append(Record.put(b"from-child", b"1"))
        wal.close()
        print("OPENED")
""")

HOLD = textwrap.dedent("""
    import sys
    from norikv import Wal, WalConfig, FsyncPolicy, Record
    wal, _ = Wal.open(WalConfig(dir=sys.argv[1], max_segment_size=1 << 20,
                                fsync_policy=FsyncPolicy.OS))
    wal.append(Record.put(b"holder", b"1"))
    print("ready", flush=True)
    sys.stdin.read()   # hold the lock until killed
""")


def try_open(path):
    out = subprocess.run([sys.executable, "-c", TRY_OPEN, str(path)], capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_second_open_same_process(tmp_path):
    wal, _ = Wal.open(cfg(tmp_path))
    with wal:
        with pytest.raises(LockError) as ei:
            Wal.open(cfg(tmp_path))
        assert str(tmp_path) in str(ei.value)
        assert ei.value.filename == str(tmp_path)
        assert isinstance(ei.value, OSError) and isinstance(ei.value, NoriError)
        # the same directory under another spelling is still the same directory
        with pytest.raises(LockError):
            Wal.open(cfg(str(tmp_path) + "/./"))
        # the failed opens did not disturb the holder
        assert wal.append(Record.put(b"a", b"b")) == Position(0, 0)
    # released on close
    Wal.open(cfg(tmp_path))[0].close()


def test_lock_other_process(tmp_path):
    wal, _ = Wal.open(cfg(tmp_path))
    try:
        out = try_open(tmp_path)
        assert out.startswith("LOCKED " + str(tmp_path))
    finally:
        wal.close()
    assert try_open(tmp_path) == "OPENED"
    # and the child's record is there: it really had the directory
    with Wal.open(cfg(tmp_path))[0] as wal:
        assert [r.key for r, _ in wal.read_from(Position(0, 0))] == [b"from-child"]


def test_lock_released_after_sigkill(tmp_path):
    p = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout.readline().strip() == "ready"
        with pytest.raises(LockError):
            Wal.open(cfg(tmp_path))
        assert try_open(tmp_path).startswith("LOCKED")
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(TIMEOUT)
        p.stdout.close()
        p.stdin.close()
    assert p.returncode == -signal.SIGKILL
    wal, info = Wal.open(cfg(tmp_path))
    with wal:
        assert info.valid_records == 1 and not info.corruption_detected
        assert [r.key for r, _ in wal.read_from(Position(0, 0))] == [b"holder"]


def test_dropped_wal_releases_lock(tmp_path):
    wal, _ = Wal.open(cfg(tmp_path))
    wal.append(Record.put(b"a", b"b"))
    del wal
    gc.collect()
    wal, info = Wal.open(cfg(tmp_path))
    with wal:
        assert info.valid_records == 1


def _fork_child(wal, w):
    """In the child: try every write path, report what happened, never return."""
    try:
        results = []
        for name, call in (
            ("append", lambda: wal.append(Record.put(b"child", b"x"))),
            ("batch", lambda: wal.append_batch([Record.put(b"child", b"y")])),
            ("sync", wal.sync),
            ("delete", lambda: wal.delete_segments_before(Position(5, 0))),
        ):
            try:
                call()
                results.append(f"{name}:ok")
            except Exception as e:  # noqa: BLE001 - reported to the parent
                results.append(f"{name}:{type(e).__name__}")
        try:
            wal.close()  # must not finalize (truncate) the parent's segment
            results.append("close:ok")
        except Exception as e:  # noqa: BLE001
            results.append(f"close:{type(e).__name__}")
        os.write(w, (" ".join(results) + "\n").encode())
    finally:
        os._exit(0)


def test_forked_child_cannot_write(tmp_path):
    wal, _ = Wal.open(cfg(tmp_path))
    with wal:
        for i in range(5):
            wal.append(Record.put(b"parent%d" % i, b"v"))
        before = wal.current_position()
        r, w = os.pipe()
        pid = fork_with_threads()
        if pid == 0:
            os.close(r)
            _fork_child(wal, w)
        os.close(w)
        with os.fdopen(r) as f:
            report = f.read().split()
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert report[:4] == ["append:NoriIOError", "batch:NoriIOError", "sync:NoriIOError", "delete:NoriIOError"], (
            report
        )
        # the parent is unaffected: nothing was written, the lock is still held
        assert wal.current_position() == before
        assert os.path.getsize(tmp_path / "000000.wal") == MIB  # not finalized by the child
        assert try_open(tmp_path).startswith("LOCKED")
        assert wal.append(Record.put(b"parent5", b"v")) == before
        got = [rec.key for rec, _ in wal.read_from(Position(0, 0))]
    assert got == [b"parent%d" % i for i in range(6)]


def test_lock_error_names_the_holders_pid(tmp_path):
    # The holder writes its pid into LOCK (the flock stays the lock); another
    # process's LockError names it, without /proc/locks (so on macOS too).
    from norikv import KvStore

    p = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "wal")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout.readline().strip() == "ready"
        assert (tmp_path / "wal" / "LOCK").read_bytes() == b"%d\n" % p.pid
        with pytest.raises(LockError) as ei:
            KvStore.open(tmp_path)
        assert ei.value.pid == p.pid
        assert f"(pid {p.pid})" in str(ei.value)
        with pytest.raises(LockError) as ei:
            Wal.open(cfg(tmp_path / "wal"))
        assert ei.value.pid == p.pid
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(TIMEOUT)
        p.stdout.close()
        p.stdin.close()
    # the dead holder's pid stays in the file, but the flock went with it
    with KvStore.open(tmp_path):
        assert (tmp_path / "wal" / "LOCK").read_bytes() == b"%d\n" % os.getpid()


def test_lock_error_in_the_same_process_has_no_pid(tmp_path):
    wal, _ = Wal.open(cfg(tmp_path))
    with wal:
        with pytest.raises(LockError) as ei:
            Wal.open(cfg(tmp_path))
        assert ei.value.pid is None
