"""An I/O error (ENOSPC, EIO) while SKIP_ANY_CORRUPTED_RECORDS rewrites a
damaged segment (issue #11, point 13): the open raises NoriIOError carrying
the errno and the segment's file name, the segment is left exactly as it
was, and the temporary copy is removed. Injected with the LD_PRELOAD shim
(writes to ``*.compact-tmp`` fail), in a subprocess.
"""

from __future__ import annotations

import errno
import json

import pytest

from ._shim import shim_env
from ._util import describe, run_py

SCRIPT = r"""
import json, os, sys
from norikv import KvStore, RecoveryMode, NoriIOError, NoriError
base = sys.argv[1]
seg = os.path.join(base, "wal", "000000.wal")
before = open(seg, "rb").read()
out = {}
try:
    KvStore.open(base, recovery_mode=RecoveryMode.SKIP_ANY_CORRUPTED_RECORDS)
    out["opened"] = True
except NoriIOError as exc:
    out.update(type=type(exc).__name__, errno=exc.errno, filename=exc.filename, msg=str(exc),
               nori=isinstance(exc, NoriError))
out["intact"] = open(seg, "rb").read() == before
out["files"] = sorted(os.listdir(os.path.join(base, "wal")))
print(json.dumps(out))
"""


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO], ids=["ENOSPC", "EIO"])
def test_failed_rewrite_of_a_damaged_segment(shim_path, tmp_path, err):
    from norikv import KvStore

    base = tmp_path / "db"
    with KvStore.open(base, auto_compact=False) as s:
        for i in range(2000):
            s.put(b"k%05d" % i, b"v" * 100)
    seg = base / "wal" / "000000.wal"
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a damaged record in the middle
    seg.write_bytes(bytes(data))
    env = shim_env(shim_path, "write", path=".compact-tmp", err=err)
    proc = run_py(SCRIPT, env=env, args=[str(base)], timeout=120)
    assert proc.returncode == 0, describe(proc)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "opened" not in out, out
    assert out["type"] == "NoriIOError" and out["nori"] and out["errno"] == err, out
    assert out["filename"] == str(seg), out
    assert "000000.wal" in out["msg"], out
    assert out["intact"], out
    assert out["files"] == ["000000.wal", "LOCK", "SHM"], out
    # Without the fault the same open skips the damaged record.
    from norikv import RecoveryMode

    with KvStore.open(base, recovery_mode=RecoveryMode.SKIP_ANY_CORRUPTED_RECORDS) as s:
        assert len(s) == 1999 and s.recovery_info.spans_skipped == 1
