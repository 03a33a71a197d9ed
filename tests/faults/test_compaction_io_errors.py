"""Failed fsyncs outside the append path, injected with the LD_PRELOAD shim
(tests/faults/shim/faultshim.c), in subprocesses (issue 11, point 13):

* creating a store whose parent directory cannot be fsynced raises
  NoriIOError (errno and file name), not a bare OSError, and a later open
  works;
* a failed fsync of a compaction's *temporary* file fails that compaction
  only: NoriIOError (not WalFailedError), its temporary files are deleted,
  the log was never touched so the store is not poisoned and goes on;
* a failed fsync of the log directory after a snapshot segment was renamed
  into the log poisons the store (WalFailedError) until reopen, and the
  reopened store holds every acknowledged write.
"""

from __future__ import annotations

import errno
import json

from ._shim import shim_env
from ._util import REFUSALS, describe, run_py

CREATE = r"""
import json, os, sys
from norikv import KvStore, NoriIOError
base, control = sys.argv[1], sys.argv[2]
out = {}
open(control, "w").close()                        # arm: fsync fails
try:
    KvStore.open(os.path.join(base, "db"))
    out["first"] = "opened"
except OSError as exc:
    out["first"] = [type(exc).__name__, isinstance(exc, NoriIOError), exc.errno, exc.filename]
os.unlink(control)
with KvStore.open(os.path.join(base, "db")) as s:  # no lock left behind; the directory is fine
    s.put(b"k", b"v")
with KvStore.open(os.path.join(base, "db")) as s:
    out["reopened"] = s.get(b"k").decode()
print(json.dumps(out))
"""


def test_failed_fsync_creating_a_store(shim_path, tmp_path):
    control = str(tmp_path / "armed")
    base = tmp_path / "base"
    base.mkdir()
    env = shim_env(shim_path, "fsync", control=control, path=str(base))
    proc = run_py(CREATE, args=[str(base), control], env=env, timeout=60)
    assert proc.returncode == 0, describe(proc)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["first"] == ["NoriIOError", True, errno.EIO, str(base)]
    assert out["reopened"] == "v"


SETUP = r"""
import json, os, sys
from norikv import KvStore, FsyncPolicy, NoriIOError, WalFailedError
base = sys.argv[1]
store = KvStore.open(base, fsync_policy=FsyncPolicy.OS, auto_compact=False)
for i in range(200):
    store.put(b"k%03d" % i, b"v%03d" % i * 50)
for i in range(0, 200, 2):
    store.delete(b"k%03d" % i)
store.sync()
expected = {k.decode(): v.decode() for k, v in store.items()}
waldir = os.path.join(base, "wal")
out = {}
"""

TEMP_FSYNC = (
    SETUP
    + r"""
try:
    store.compact()
    out["compact"] = "ok"
except OSError as exc:
    out["compact"] = [type(exc).__name__, exc.errno, os.path.basename(exc.filename or "")]
out["tmp_left"] = sorted(n for n in os.listdir(waldir) if n.endswith(".compact-tmp"))
out["failed"] = store.stats()["failed"]
store.put(b"after", b"1")                           # not poisoned: writes and syncs go on
store.sync()
expected["after"] = "1"
store.close()
with KvStore.open(base) as s2:
    out["same"] = {k.decode(): v.decode() for k, v in s2.items()} == expected
print(json.dumps(out))
"""
)


def test_failed_fsync_of_compaction_temp_file_fails_only_that_compaction(shim_path, tmp_path):
    env = shim_env(shim_path, "fsync,fdatasync", path=".compact-tmp", log=str(tmp_path / "faults.log"))
    proc = run_py(TEMP_FSYNC, args=[str(tmp_path / "db")], env=env, timeout=60)
    assert proc.returncode == 0, describe(proc)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["compact"] == ["NoriIOError", errno.EIO, "000001.wal.compact-tmp"]
    assert out["tmp_left"] == []
    assert out["failed"] is None
    assert out["same"] is True
    with open(tmp_path / "faults.log") as f:
        assert f.read().split()[0] in ("fdatasync", "fsync")


DIR_FSYNC = (
    SETUP
    + REFUSALS
    + r"""
control = sys.argv[2]
real_install = store.wal._install_segment

def install(tmp, seg, size):
    open(control, "w").close()                      # arm: the directory fsync after the rename fails
    try:
        real_install(tmp, seg, size)
    finally:
        os.unlink(control)

store.wal._install_segment = install
try:
    store.compact()
    out["compact"] = "ok"
except OSError as exc:
    out["compact"] = [type(exc).__name__, exc.errno]
out["tmp_left"] = sorted(n for n in os.listdir(waldir) if n.endswith(".compact-tmp"))
out["refused"] = refusals([("put", lambda: store.put(b"later", b"x")), ("sync", store.sync),
                           ("compact", store.compact)])
store.close()
with KvStore.open(base) as s2:
    out["same"] = {k.decode(): v.decode() for k, v in s2.items()} == expected
print(json.dumps(out))
"""
)


def test_failed_directory_fsync_after_rename_poisons(shim_path, tmp_path):
    control = str(tmp_path / "armed")
    env = shim_env(
        shim_path, "fsync,fdatasync", control=control, path=str(tmp_path / "db"), log=str(tmp_path / "faults.log")
    )
    proc = run_py(DIR_FSYNC, args=[str(tmp_path / "db"), control], env=env, timeout=60)
    assert proc.returncode == 0, describe(proc)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["compact"] == ["WalFailedError", errno.EIO]
    assert out["tmp_left"] == []
    assert out["refused"] == [["put", errno.EIO], ["sync", errno.EIO], ["compact", errno.EIO]]
    assert out["same"] is True
    with open(tmp_path / "faults.log") as f:
        assert f.read().split()[0] == "fsync"


HELD_UNLINK = r"""
import json, os, sys, threading
from norikv import KvStore, FsyncPolicy
base, control, held, hold = sys.argv[1:5]
store = KvStore.open(base, fsync_policy=FsyncPolicy.OS, auto_compact=False, max_segment_size=1 << 20)
for r in range(4):                                # several segments, mostly dead
    for i in range(2000):
        store.put(b"k%05d" % i, b"%d" % r * 200)
open(control, "w").close()                        # arm: the next unlink is held
done = {}
t = threading.Thread(target=lambda: done.update(store.compact()))
t.start()
with open(held, "rb") as f:                       # the compaction is inside unlink(2) now
    f.read(1)
# This thread needs the GIL to get here and to do this: only if the
# compaction released it around unlink.
store.put(b"during", b"the unlink")
got = store.get(b"k00001")
with open(hold, "wb") as f:
    f.write(b"x")
t.join()
os.unlink(control)
out = {"got": got.decode(), "during": store.get(b"during").decode(), "deleted": done.get("segments_deleted")}
store.close()
print(json.dumps(out))
"""


def test_a_compaction_deletes_segments_without_holding_the_gil(shim_path, tmp_path):
    # Deleting a large segment frees its extents (33 ms for 128 MiB on this
    # VM): the unlink runs without the GIL, so the store's other threads go on.
    # With the GIL held across it, this subprocess deadlocks and times out.
    import os

    control, held, hold = (str(tmp_path / n) for n in ("armed", "held", "hold"))
    os.mkfifo(held)
    os.mkfifo(hold)
    base = tmp_path / "db"
    env = shim_env(shim_path, "unlink", control=control)
    env.update(FAULTSHIM_ACTION="hold", FAULTSHIM_HELD=held, FAULTSHIM_HOLD=hold)
    proc = run_py(HELD_UNLINK, args=[str(base), control, held, hold], env=env, timeout=60)
    assert proc.returncode == 0, describe(proc)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["got"] == "3" * 200 and out["during"] == "the unlink", out
    assert out["deleted"] >= 1, out
