"""Writes cut short by RLIMIT_FSIZE (SIGXFSZ ignored), in a subprocess.

What actually happens in norikv: the log is written through a mapping of a
segment reserved with fallocate, so there is no short write of a log record.
A file-size limit shows up as EFBIG from fallocate when a segment must grow
(or be created) past the limit: the put raises NoriIOError(EFBIG) before a
byte is stored, the map is unchanged, and later writes that fit still work.
The only plain write() calls are the compaction snapshot (and the rewrite of
SKIP_ANY_CORRUPTED_RECORDS recovery), which go to temporary files: a snapshot
cut short raises, its temporary file is removed, and the log is untouched.
In every case reopen is correct and new records are readable afterwards.
"""

from __future__ import annotations

import errno
import json
import resource
import signal

from norikv import KvStore

from ._util import describe, run_py

LIMIT = 1536 << 10  # 1.5 MiB per file

CHILD = r"""
import errno, json, os, resource, sys
from norikv import KvStore, FsyncPolicy, NoriIOError
path, limit = sys.argv[1], int(sys.argv[2])
out = {"grow": None, "acked": 0, "after_error_fits": None}
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
assert soft == limit, (soft, limit)

# 1. The active segment cannot grow past the limit (no preallocation: it
#    grows 1 MiB at a time, max_segment_size 4 MiB > limit).
s = KvStore.open(os.path.join(path, "grow"), fsync_policy=FsyncPolicy.ALWAYS,
                 max_segment_size=4 << 20, preallocate=False, auto_compact=False)
i = 0
while True:
    try:
        s.put(b"g%05d" % i, (b"%05d" % i) * 800)          # 4000 bytes
    except OSError as exc:
        out["grow"] = [type(exc).__name__, exc.errno]
        out["failed_key_in_memory"] = s.get(b"g%05d" % i) is not None
        break
    i += 1
    if i > 10000:
        break
out["acked"] = i
# A small write that still fits in the allocated space goes through.
try:
    s.put(b"small", b"1")
    out["after_error_fits"] = True
except OSError as exc:
    out["after_error_fits"] = [type(exc).__name__, exc.errno]
s.close()

# 2. A compaction snapshot cut short: a 1.25 MiB record (written before the
#    limit was lowered) must be copied into a temporary file past the limit.
s = KvStore.open(os.path.join(path, "snap"), fsync_policy=FsyncPolicy.ALWAYS,
                 max_segment_size=1 << 20, auto_compact=False)
for j in range(20):
    s.put(b"s%02d" % j, b"v%02d" % j)
out["snap_put_big"] = None
try:
    s.put(b"big", b"B" * (1280 << 10))
    out["snap_put_big"] = "ok"
except OSError as exc:
    out["snap_put_big"] = [type(exc).__name__, exc.errno]
print(json.dumps(out), flush=True)
"""

CHILD2 = r"""
import json, os, sys
from norikv import KvStore, FsyncPolicy
path = sys.argv[1]
out = {}
s = KvStore.open(os.path.join(path, "snap"), fsync_policy=FsyncPolicy.ALWAYS,
                 max_segment_size=1 << 20, auto_compact=False)
try:
    s.compact()
    out["compact"] = "ok"
except OSError as exc:
    out["compact"] = [type(exc).__name__, exc.errno]
out["tmp_left"] = [n for n in os.listdir(s.wal.dir) if "tmp" in n]
for j in range(20, 40):
    s.put(b"s%02d" % j, b"v%02d" % j)
out["len"] = len(s)
s.close()
print(json.dumps(out), flush=True)
"""


def _limited(limit):
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))

    return pre


def test_file_size_limit_gives_efbig_and_reopen_is_correct(tmp_path):
    proc = run_py(CHILD, args=[str(tmp_path), str(LIMIT)], preexec_fn=_limited(LIMIT), timeout=90)
    assert proc.returncode == 0, describe(proc)  # no SIGXFSZ death
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["grow"] == ["NoriIOError", errno.EFBIG], out
    assert out["failed_key_in_memory"] is False
    assert 200 < out["acked"] < 400, out  # 1 MiB of 4 KB records
    assert out["after_error_fits"] is True
    # A 1.25 MiB record gets its own segment, under the 1.5 MiB limit: accepted.
    assert out["snap_put_big"] == "ok", out

    # Reopen without the limit: every acknowledged record, new ones readable.
    with KvStore.open(tmp_path / "grow", max_segment_size=4 << 20, preallocate=False) as s:
        assert not s.recovery_info.corruption_detected
        for i in range(out["acked"]):
            assert s.get(b"g%05d" % i) == (b"%05d" % i) * 800
        assert s.get(b"small") == b"1"
        assert len(s) == out["acked"] + 1
        s.put(b"new", b"record")
        for i in range(300):
            s.put(b"n%04d" % i, b"x" * 4000)  # the segment now grows past 1.5 MiB
    with KvStore.open(tmp_path / "grow", max_segment_size=4 << 20, preallocate=False) as s:
        assert s.get(b"new") == b"record" and s.get(b"n0299") == b"x" * 4000
        assert len(s) == out["acked"] + 302


def test_compaction_snapshot_cut_short(tmp_path):
    proc = run_py(CHILD, args=[str(tmp_path), str(LIMIT)], preexec_fn=_limited(LIMIT), timeout=90)
    assert proc.returncode == 0, describe(proc)
    # Now a limit below the big record: its snapshot copy is a short write.
    small = 1 << 20
    proc = run_py(CHILD2, args=[str(tmp_path)], preexec_fn=_limited(small), timeout=90)
    assert proc.returncode == 0, describe(proc)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["compact"] == ["NoriIOError", errno.EFBIG], out
    assert out["tmp_left"] == [], out
    assert out["len"] == 41
    with KvStore.open(tmp_path / "snap", max_segment_size=1 << 20) as s:
        assert not s.recovery_info.corruption_detected
        assert s.get(b"big") == b"B" * (1280 << 10)
        assert [s.get(b"s%02d" % j) for j in range(40)] == [b"v%02d" % j for j in range(40)]
        s.put(b"later", b"ok")
        s.compact()  # no limit now: the snapshot completes
    with KvStore.open(tmp_path / "snap", max_segment_size=1 << 20) as s:
        assert s.get(b"later") == b"ok" and s.get(b"big") == b"B" * (1280 << 10) and len(s) == 42
