"""Full disk: a small tmpfs mount filled by a writer in a subprocess.

Writing until the disk is full must give the caller an OSError with errno
ENOSPC (never a SIGBUS or any other death: the segment is reserved with
fallocate before bytes are stored through the mapping); every write
acknowledged before is there after reopen; once space is freed, writes
resume without reopening.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess

import pytest

from norikv import FsyncPolicy, KvStore

from ._util import describe, run_py

WRITER = r"""
import errno, json, os, sys
from norikv import KvStore, FsyncPolicy
mnt, policy = sys.argv[1], sys.argv[2]
pol = {"always": FsyncPolicy.ALWAYS, "batch": FsyncPolicy.batch(0.005), "os": FsyncPolicy.OS}[policy]
filler = os.path.join(mnt, "filler")
with open(filler, "wb") as f:
    f.write(b"\xab" * (1 << 20))
out = {"acked": 0, "errors": [], "resumed": 0, "compact": None}
store = KvStore.open(os.path.join(mnt, "store"), fsync_policy=pol, max_segment_size=1 << 20,
                     auto_compact=False)
def val(i):
    return (b"%08d" % i) * 512          # 4 KiB, self-describing
i = 0
first_error = None
while i < 100000:
    try:
        store.put(b"key%06d" % i, val(i))
    except OSError as exc:
        first_error = exc
        out["errors"].append([type(exc).__name__, exc.errno])
        break
    i += 1
out["acked"] = i
# The store keeps refusing cleanly while the disk is full (no crash, no half state).
for j in range(3):
    try:
        store.put(b"again%d" % j, val(j))
        out["errors"].append(["accepted-while-full", None])
    except OSError as exc:
        out["errors"].append([type(exc).__name__, exc.errno])
try:
    store.compact()
    out["compact"] = "ok"
except OSError as exc:
    out["compact"] = [type(exc).__name__, exc.errno]
# Free space: writes resume on the same open store.
os.unlink(filler)
# A compaction now gets past sealing the segment but its snapshot (the whole
# live data again) cannot fit: it fails with ENOSPC and must leave no
# temporary files (nor their space) behind, or the writes below would fail.
try:
    store.compact()
    out["compact2"] = "ok"
except OSError as exc:
    out["compact2"] = [type(exc).__name__, exc.errno]
out["tmp_left"] = [n for n in os.listdir(store.wal.dir) if "tmp" in n]
n = 0
for j in range(100):
    store.put(b"after%04d" % j, val(j))
    n += 1
out["resumed"] = n
store.sync()
store.close()
print(json.dumps(out))
"""


@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount tmpfs: {exc}")
    if r.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {r.stderr.strip()}")
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


@pytest.mark.parametrize("policy", ["always", "batch", "os"])
def test_full_disk_enospc_then_resume(tmpfs, policy):
    proc = run_py(WRITER, args=[tmpfs, policy], timeout=120)
    # Never killed by a signal (SIGBUS would show as a negative return code).
    assert proc.returncode == 0, describe(proc)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    acked = out["acked"]
    assert 200 < acked < 1000, out  # 4 MiB disk, 4 KiB values
    # Every error the caller saw is an OSError subclass carrying ENOSPC.
    assert out["errors"], out
    for name, err in out["errors"]:
        assert err == errno.ENOSPC, out
        assert name in ("NoriIOError", "WalFailedError", "OSError"), out
    assert out["compact"] == "ok" or out["compact"][1] == errno.ENOSPC, out
    assert out["compact2"] == "ok" or out["compact2"] == ["NoriIOError", errno.ENOSPC], out
    assert out["tmp_left"] == [], out
    assert out["resumed"] == 100
    # Reopen: everything acknowledged (before the disk filled, and after) is there.
    with KvStore.open(
        os.path.join(tmpfs, "store"), fsync_policy=FsyncPolicy.ALWAYS, max_segment_size=1 << 20, auto_compact=False
    ) as store:
        assert not store.recovery_info.corruption_detected
        for i in range(acked):
            assert store.get(b"key%06d" % i) == (b"%08d" % i) * 512, i
        for j in range(100):
            assert store.get(b"after%04d" % j) == (b"%08d" % j) * 512
        assert store.get(b"again0") is None
        assert len(store) == acked + 100


REOPENED = r"""
import errno, json, os, sys
from norikv import KvStore, FsyncPolicy
path = os.path.join(sys.argv[1], "store")
kw = dict(fsync_policy=FsyncPolicy.OS, max_segment_size=64 << 20, auto_compact=False)
with KvStore.open(path, **kw) as store:
    store.put(b"first", b"x")
out = {"acked": 0, "errno": None}
with KvStore.open(path, **kw) as store:
    i = 0
    try:
        while i < 100000:
            store.put(b"key%06d" % i, (b"%08d" % i) * 512)
            i += 1
    except OSError as exc:
        out["errno"] = exc.errno
    out["acked"] = i
print(json.dumps(out))
"""


def test_a_disk_too_small_for_a_whole_segment_takes_writes_in_steps(tmpfs):
    # A reopened active segment is allocated whole again (64 MiB here); on a
    # 4 MiB disk that fails, and the allocation falls back to 1 MiB steps,
    # then to what each append needs, until the disk is really full.
    proc = run_py(REOPENED, args=[tmpfs], timeout=120)
    assert proc.returncode == 0, describe(proc)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["errno"] == errno.ENOSPC, out
    assert 600 < out["acked"] <= 1024, out  # 4 KiB values: most of the 4 MiB used
    with KvStore.open(
        os.path.join(tmpfs, "store"), fsync_policy=FsyncPolicy.OS, max_segment_size=64 << 20, auto_compact=False
    ) as store:
        assert store.get(b"first") == b"x"
        for i in range(out["acked"]):
            assert store.get(b"key%06d" % i) == (b"%08d" % i) * 512, i


# ------------------------------------------------------------ a real file system

COMMITS = r"""
import json, os, sys
from norikv import KvStore, FsyncPolicy
mnt = sys.argv[1]
filler = os.path.join(mnt, "filler")
with open(filler, "wb") as f:
    f.write(b"\xab" * (2 << 20))
store = KvStore.open(os.path.join(mnt, "store"), fsync_policy=FsyncPolicy.OS, max_segment_size=4 << 20,
                     auto_compact=False)
def val(i):
    return (b"%08d" % i) * 128          # 1 KiB, self-describing
out = {"acked": 0, "errors": []}
i = 0
try:
    while i < 1000000:
        store.put(b"key%07d" % i, val(i))
        i += 1
        if i % 100 == 0:                # commits of ~100 KiB: zeros written ahead
            store.sync()
            out["acked"] = i
except OSError as exc:
    out["errors"].append([type(exc).__name__, exc.errno])
out["small_folios"] = store.wal.small_folios
os.unlink(filler)
try:
    for j in range(200):
        store.put(b"after%04d" % j, val(j))
    store.sync()
    out["resumed"] = 200
except OSError as exc:
    out["resumed"] = [type(exc).__name__, exc.errno]
store.close()
print(json.dumps(out))
"""


@pytest.fixture
def ext4(tmp_path):
    """A 32 MiB ext4 file system on a loop device: unwritten extents,
    their conversion at fdatasync, and the zeros written ahead of a store
    that commits with sync(), as on a real disk (tmpfs has none of them)."""
    img, mnt = tmp_path / "ext4.img", tmp_path / "mnt"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(32 << 20)
    try:
        for cmd in (["mkfs.ext4", "-q", "-F", str(img)], ["mount", "-o", "loop", str(img), str(mnt)]):
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                pytest.skip(f"cannot make an ext4 loop mount: {r.stderr.strip()}")
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot make an ext4 loop mount: {exc}")
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, timeout=60)


def test_full_ext4_disk_durable_commits(ext4):
    # A store committing 100 KiB at a time with sync() fills an ext4 file
    # system: ENOSPC reaches the caller (never SIGBUS, never a failed fsync
    # that poisons the store), every committed put is there after reopen,
    # and writes resume once space is freed.
    proc = run_py(COMMITS, args=[ext4], timeout=300)
    assert proc.returncode == 0, describe(proc)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["small_folios"], out  # (the mode the zeros are written ahead in)
    assert out["errors"] and all(e == ["NoriIOError", errno.ENOSPC] for e in out["errors"]), out
    assert out["acked"] > 10000, out  # most of the 32 MiB held records
    assert out["resumed"] == 200, out
    with KvStore.open(os.path.join(ext4, "store"), auto_compact=False) as store:
        assert not store.recovery_info.corruption_detected
        for i in range(out["acked"]):
            assert store.get(b"key%07d" % i) == (b"%08d" % i) * 128, i
        for j in range(200):
            assert store.get(b"after%04d" % j) == (b"%08d" % j) * 128, j
