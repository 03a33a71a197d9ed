"""The first small sync() drops the zeros mapped ahead of the log
(fallocate ZERO_RANGE past the page holding its end, segment.pyx
_drop_ahead), without the GIL. Another thread's appends meanwhile must not
land in the range being zeroed: a Wal's fast path does not take io_lock, so
`populated` is lowered first and an append past the end's page waits in
_make_room; a store's appends wait on the writers' mutex. The first version
lowered it after the discard, and test_wal_crash.py's SIGKILL test lost
acknowledged records (1035 found, 1080 acknowledged).

Here the fault shim holds that fallocate (hold action) while another thread
appends 2,000 records, then lets it go: every record must read back, also
after a reopen."""

from __future__ import annotations

import json
import os

import pytest

from ._shim import shim_env
from ._util import describe, run_py

HELD_DISCARD = r"""
import json, os, sys, threading
from norikv import FsyncPolicy, KvStore, Position, Record, Wal, WalConfig, _engine

kind, base, control, held, hold = sys.argv[1:6]
if kind == "wal":
    w = Wal.open(WalConfig(dir=base, fsync_policy=FsyncPolicy.OS))[0]
    wal, put = w, lambda k, v: w.append(Record.put(k, v))
else:
    w = KvStore.open(base, fsync_policy=FsyncPolicy.OS, auto_compact=False)
    wal, put = w.wal, w.put
for i in range(200):                            # ~25 KB: the sync below is small
    put(b"a%05d" % i, b"v" * 100)
while _engine._test_prefault(wal, False)[1] < 16 << 20:
    pass                                        # 16 MiB of zeros mapped ahead
open(control, "w").close()                      # arm: the next fallocate is held
syncer = threading.Thread(target=w.sync)
syncer.start()
with open(held, "rb") as f:                     # the sync is inside fallocate(ZERO_RANGE)
    f.read(1)
appender = threading.Thread(target=lambda: [put(b"b%05d" % i, b"w" * 100) for i in range(2000)])
appender.start()
# The appender either went past the end's page before the discard (the bug:
# its records are zeroed when the held call runs) or waits for the sync.
# Either way it has had its chance once this returns.
appender.join(2.0)
with open(hold, "wb") as f:
    f.write(b"x")
syncer.join()
appender.join()
os.unlink(control)
w.sync()
w.close()
with Wal.open(WalConfig(dir=os.path.join(base, "wal") if kind == "store" else base))[0] as again:
    keys = [r.key.decode() for r, _ in again.read_from(Position(0, 0))]
print(json.dumps(keys))
"""


@pytest.mark.parametrize("kind", ["wal", "store"])
def test_appends_during_the_discard_of_the_zeros_ahead_survive(shim_path, tmp_path, kind):
    control, held, hold = (str(tmp_path / n) for n in ("armed", "held", "hold"))
    os.mkfifo(held)
    os.mkfifo(hold)
    env = shim_env(shim_path, "fallocate", control=control)
    env.update(FAULTSHIM_ACTION="hold", FAULTSHIM_HELD=held, FAULTSHIM_HOLD=hold)
    proc = run_py(HELD_DISCARD, args=[kind, str(tmp_path / "db"), control, held, hold], env=env, timeout=120)
    assert proc.returncode == 0, describe(proc)
    keys = json.loads(proc.stdout.strip().splitlines()[-1])
    assert keys == ["a%05d" % i for i in range(200)] + ["b%05d" % i for i in range(2000)]
