"""Hot backup (norikv.backup): KvStore.backup, backup_directory and
``norikv backup``. Consistency under writer threads and a writer
subprocess, incremental reuse, tar output, and SIGKILL at every step and at
random instants: DEST is always the old backup or the new one."""

from __future__ import annotations

import io
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
from pathlib import Path

import pytest

import spec_codec
from norikv import ClosedError, FsyncPolicy, KvStore
from norikv.backup import MANIFEST, backup_directory, recover_leftovers
from norikv.inspect import read_store
from storeutil import open_store

MIB = 1 << 20
TIMEOUT = 120


def contents(path) -> dict[bytes, bytes]:
    """What an open of ``path`` gives, read without changing it."""
    return dict(read_store(path).items())


def fill(store, n, prefix=b"k", size=60):
    for i in range(n):
        store.put(b"%s%06d" % (prefix, i), b"%06d" % i + b"." * size)


def test_backup_holds_the_data_and_is_a_nori_wal_directory(tmp_path):
    src, dest = tmp_path / "s", tmp_path / "b"
    with open_store(src, max_segment_size=MIB, compression="zstd", compress_min_size=64) as s:
        fill(s, 30000)
        with s.batch() as b:
            b.put(b"batch-a", b"1")
            b.put(b"batch-b", b"2")
        s.put(b"ttl", b"v", ttl=3600)
        s.delete(b"k000001")
        res = s.backup(dest)
        expect = dict(s.items())
        deadline = s._deadline_of(b"ttl")
    assert res["segments"] >= 2 and res["bytes"] == res["copied_bytes"]
    assert contents(dest) == expect
    assert sorted(os.listdir(dest / "wal")) == sorted(n for n in os.listdir(src / "wal") if n.endswith(".wal"))
    with KvStore.open(dest) as b:
        assert dict(b.items()) == expect
        assert b._deadline_of(b"ttl") == deadline
    # the independent codec (written from the nori-wal format) reads every segment
    # of the backup, and they are exactly the source's records
    assert spec_codec.read_dir(dest / "wal") == spec_codec.read_dir(src / "wal")


def test_incremental_backup_links_unchanged_sealed_segments(tmp_path):
    src, dest = tmp_path / "s", tmp_path / "b"
    with open_store(src, max_segment_size=MIB, auto_compact=False) as s:
        fill(s, 40000)
        first = s.backup(dest)
        sealed = first["segments"] - 1
        inodes = {n: os.stat(dest / "wal" / n).st_ino for n in os.listdir(dest / "wal")}
        fill(s, 100, prefix=b"x")
        second = s.backup(dest)
        assert second["reused_segments"] == sealed
        assert second["copied_bytes"] < second["bytes"]
        names = sorted(os.listdir(dest / "wal"))
        for n in names[:sealed]:
            assert os.stat(dest / "wal" / n).st_ino == inodes[n]  # the same file, not a copy
        assert contents(dest) == dict(s.items())
        # a changed copy in DEST (its tail) is not trusted: copied again
        victim = dest / "wal" / names[0]
        data = bytearray(victim.read_bytes())
        data[-1] ^= 0xFF
        victim.unlink()
        victim.write_bytes(bytes(data))
        third = s.backup(dest)
        assert third["reused_segments"] == sealed - 1
        assert contents(dest) == dict(s.items())
        # after a compaction the segments are new files: nothing is reused
        s.compact()
        fourth = s.backup(dest)
        assert fourth["reused_segments"] == 0
        assert contents(dest) == dict(s.items())
        full = s.backup(dest, incremental=False)
        assert full["reused_segments"] == 0 and full["copied_bytes"] == full["bytes"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".b.")]  # no staging left


def test_tar_stream(tmp_path):
    with open_store(tmp_path / "s", max_segment_size=MIB) as s:
        fill(s, 20000)
        buf = io.BytesIO()
        res = s.backup(buf)
        expect = dict(s.items())
    assert res["bytes"] == res["copied_bytes"]
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as t:
        assert all(n == "wal" or n.startswith("wal/") for n in t.getnames())
        t.extractall(tmp_path / "x", filter="data")
    assert contents(tmp_path / "x") == expect


def test_bad_destinations_and_closed_store(tmp_path):
    with open_store(tmp_path / "s") as s:
        s.put(b"k", b"v")
        with pytest.raises(ValueError):
            s.backup(tmp_path / "s" / "inside")
        with pytest.raises(ValueError):
            s.backup(tmp_path)  # contains the store
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "precious").write_bytes(b"x")
        with pytest.raises(FileExistsError):
            s.backup(tmp_path / "other")
        assert (tmp_path / "other" / "precious").read_bytes() == b"x"
        (tmp_path / "file").write_bytes(b"")
        with pytest.raises(FileExistsError):
            s.backup(tmp_path / "file")
        with pytest.raises(TypeError):
            s.backup(42)
        with pytest.raises(TypeError, match="incremental"):
            s.backup(tmp_path / "never", incremental=1)
        assert not (tmp_path / "never").exists()
        (tmp_path / "empty").mkdir()
        s.backup(tmp_path / "empty")  # an empty directory is fine
        assert contents(tmp_path / "empty") == {b"k": b"v"}
    with pytest.raises(ClosedError):
        s.backup(tmp_path / "late")


def test_backup_under_concurrent_writer_threads_and_compactions(tmp_path):
    """Every batch acknowledged before backup() began is in the copy, and no
    batch is there in part, while 3 threads write batches and a 4th compacts."""
    src = tmp_path / "s"
    s = open_store(src, max_segment_size=MIB, compact_min_bytes=0, compact_dead_ratio=0.3)
    acked: dict[int, int] = {}
    stop = threading.Event()
    lock = threading.Lock()
    started = threading.Event()

    def writer(t):
        i = 0
        while not stop.is_set() and i < 3000:  # (bounded: each compaction rewrites it all)
            with s.batch() as b:
                for j in range(5):
                    b.put(b"t%d-%07d-%d" % (t, i, j), b"%d" % i + b"x" * 100)
                b.put(b"t%d-last" % t, b"%d" % i)  # overwritten: compaction has dead data to drop
            with lock:
                acked[t] = i
            if i == 200:
                started.set()
            i += 1

    errors: list[BaseException] = []

    def compactor():
        try:
            while not stop.is_set():
                s.compact()
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(3)]
    threads.append(threading.Thread(target=compactor))
    for t in threads:
        t.start()
    try:
        assert started.wait(TIMEOUT)
        for _ in range(3):
            with lock:
                before = dict(acked)
            s.backup(tmp_path / "b")
            got = contents(tmp_path / "b")
            for t in range(3):
                batches = {}
                for j in range(5):
                    for i in range(before.get(t, -1) + 1):  # acknowledged before: all there
                        assert got[b"t%d-%07d-%d" % (t, i, j)].startswith(b"%d" % i)
                for k in got:
                    if k.startswith(b"t%d-" % t) and not k.endswith(b"-last"):
                        i = int(k.split(b"-")[1])
                        batches[i] = batches.get(i, 0) + 1
                assert set(batches.values()) == {5}  # whole batches only
                assert int(got[b"t%d-last" % t]) == max(batches)  # the same batch wrote it
    finally:
        stop.set()
        for t in threads:
            t.join(TIMEOUT)
        s.close()
    assert not errors, errors


WRITER = textwrap.dedent("""
    import sys
    from norikv import KvStore, FsyncPolicy
    s = KvStore.open(sys.argv[1], max_segment_size=1 << 20, fsync_policy=FsyncPolicy.OS,
                     compact_min_bytes=0, compact_dead_ratio=0.3)
    i = 0
    while True:
        with s.batch() as b:
            for j in range(5):
                b.put(b"w-%07d-%d" % (i, j), b"x" * 200)
            b.put(b"last", b"%d" % i)
        if i % 50 == 0:
            if i % 1000 == 0:
                s.compact()
            print(i, flush=True)
        i += 1
""")


@pytest.mark.parametrize("via", ["library", "cli"])
def test_backup_directory_under_a_writer_subprocess(tmp_path, via):
    """The store is held by another process that writes (and compacts): the
    lock-free backup has every batch that process acknowledged before the
    backup began, and whole batches only."""
    src = tmp_path / "s"
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(src)], stdout=subprocess.PIPE, text=True)
    try:
        for round_ in range(3):
            while int(p.stdout.readline()) < 2000 * (round_ + 1):
                pass
            acked = int(p.stdout.readline())  # printed after that batch returned
            if via == "library":
                backup_directory(src, tmp_path / "b")
            else:
                r = subprocess.run(
                    [sys.executable, "-m", "norikv", "backup", str(src), str(tmp_path / "b"), "--quiet"],
                    capture_output=True,
                    timeout=TIMEOUT,
                )
                assert r.returncode == 0, r.stderr
            got = contents(tmp_path / "b")
            batches: dict[int, int] = {}
            for k in got:
                if k.startswith(b"w-"):
                    i = int(k.split(b"-")[1])
                    batches[i] = batches.get(i, 0) + 1
            assert set(batches.values()) == {5}
            assert set(range(acked + 1)) <= set(batches)
            assert int(got[b"last"]) == max(batches)
    finally:
        p.kill()
        p.wait(TIMEOUT)
        p.stdout.close()


KILLER = textwrap.dedent("""
    import os, signal, sys
    import norikv.backup as nb
    from norikv import KvStore
    src, dest, kill_at, exchange = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
    nb._use_exchange = exchange
    n = [0]
    def step(name):
        n[0] += 1
        if n[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    nb._step = step
    with KvStore.open(src) as s:
        s.backup(dest)
    print("done", n[0])
""")


def _states(tmp_path):
    """A backup of state A in DEST; the source now holds state B."""
    src, dest = tmp_path / "s", tmp_path / "b"
    with open_store(src, max_segment_size=MIB, auto_compact=False) as s:
        fill(s, 20000)
        s.backup(dest)
        a = dict(s.items())
        fill(s, 20000, prefix=b"y")
        s.delete(b"k000000")
        b = dict(s.items())
    assert a != b
    return src, dest, a, b


def _kill_run(src, dest, kill_at, exchange):
    return subprocess.run(
        [sys.executable, "-c", KILLER, str(src), str(dest), str(kill_at), "1" if exchange else "0"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_sigkill_at_every_step_leaves_old_or_new_backup(tmp_path, exchange):
    src, dest, a, b = _states(tmp_path)
    seen = set()
    kill_at = 1
    while True:
        r = _kill_run(src, dest, kill_at, exchange)
        if r.returncode == 0:
            assert r.stdout.startswith("done")
            break
        assert r.returncode == -signal.SIGKILL, r.stderr
        if not dest.exists():
            # only the two-rename swap, killed between its renames
            assert not exchange
            recover_leftovers(dest)
        got = contents(dest)
        assert got in (a, b), kill_at
        seen.add("new" if got == b else "old")
        if got == b:  # back to the old backup for the next kill point
            _reset(tmp_path, dest, a)
        kill_at += 1
    assert kill_at > 4 and seen == {"old", "new"}
    assert contents(dest) == b
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".b.")]


def _reset(tmp_path, dest, a):
    """DEST back to a backup of state A (made from a store holding A)."""
    shutil.rmtree(dest)
    a_store = tmp_path / "a"
    if not a_store.exists():
        with open_store(a_store) as s:
            s.update(a)
    with open_store(a_store) as s:
        s.backup(dest)


def test_sigkill_at_random_instants(tmp_path):
    src, dest, a, b = _states(tmp_path)
    code = KILLER.replace("nb._step = step", "")
    rng = random.Random(16)
    for _ in range(6):
        p = subprocess.Popen(
            [sys.executable, "-c", code, str(src), str(dest), "0", "1"], stdout=subprocess.PIPE, text=True
        )
        try:
            p.wait(rng.uniform(0.05, 0.6))
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
        p.wait(TIMEOUT)
        p.stdout.close()
        recover_leftovers(dest)
        assert contents(dest) in (a, b)
    assert os.path.isfile(dest / MANIFEST)


def test_cli_backup_to_stdout_and_to_a_directory(tmp_path):
    src = tmp_path / "s"
    with open_store(src, max_segment_size=MIB, fsync_policy=FsyncPolicy.OS) as s:
        fill(s, 20000)
        expect = dict(s.items())
    r = subprocess.run([sys.executable, "-m", "norikv", "backup", str(src), "-"], capture_output=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as t:
        t.extractall(tmp_path / "x", filter="data")
    assert contents(tmp_path / "x") == expect
    r = subprocess.run(
        [sys.executable, "-m", "norikv", "backup", str(src), str(tmp_path / "d"), "--json"],
        capture_output=True,
        timeout=TIMEOUT,
    )
    assert r.returncode == 0, r.stderr
    assert b'"segments"' in r.stdout
    assert contents(tmp_path / "d") == expect
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "f").write_bytes(b"")
    r = subprocess.run(
        [sys.executable, "-m", "norikv", "backup", str(src), str(tmp_path / "junk")], capture_output=True, timeout=60
    )
    assert r.returncode == 2 and b"not a backup" in r.stderr
    assert Path(tmp_path / "junk" / "f").exists()
