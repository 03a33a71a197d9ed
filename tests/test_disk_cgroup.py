"""A store larger than the memory it may use: created, reopened and fully read
by a process in a cgroup-v1 memory cgroup whose limit is a quarter of the
data (values="disk"). An OOM kill, or any value read back wrong, fails it.

Size: NORIKV_CGROUP_MIB of values (default 2048, the issue's 2 GiB, in
1 KiB values) under a limit of a quarter of that (512 MiB by default)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

CG_ROOT = "/sys/fs/cgroup/memory"
DATA_MIB = int(os.environ.get("NORIKV_CGROUP_MIB", "2048"))

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.access(CG_ROOT, os.W_OK), reason="needs root and the cgroup v1 memory controller"
)

SCRIPT = textwrap.dedent(
    """
    import hashlib, json, os, sys
    from norikv import KvStore

    cg, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(os.path.join(cg, "cgroup.procs"), "w") as f:  # from here on, inside the limit
        f.write(str(os.getpid()))

    def key(i):
        return b"%016d" % i

    def value(i):
        return hashlib.blake2b(key(i), digest_size=32).digest() * 32  # 1 KiB

    with KvStore.open(path, values="disk") as s:
        for i in range(n):
            s.put(key(i), value(i))
        s.delete(key(0))
    with KvStore.open(path, values="disk") as s:
        assert len(s) == n - 1
        bad = sum(1 for i in range(1, n) if s.get(key(i)) != value(i))
        assert s.get(key(0)) is None
        got = 0
        for k in s.keys():  # and the whole store once more, in its own order
            got += len(s[k])
        stats = s.stats()
    print(json.dumps(dict(bad=bad, read=got, keydir=stats["keydir_bytes"], keys=stats["keys"])))
    """
)


def _read(cg, name):
    with open(os.path.join(cg, name)) as f:
        return int(f.read())


def test_a_store_four_times_the_memory_limit(tmp_path):
    n = DATA_MIB * 1024
    limit = DATA_MIB * (1 << 20) // 4
    cg = os.path.join(CG_ROOT, f"norikv-test-{os.getpid()}")
    os.mkdir(cg)
    try:
        with open(os.path.join(cg, "memory.limit_in_bytes"), "w") as f:
            f.write(str(limit))
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, cg, str(tmp_path / "db"), str(n)],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        peak = _read(cg, "memory.max_usage_in_bytes")
        assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:], f"peak {peak}")
        out = json.loads(proc.stdout)
        assert out["bad"] == 0 and out["keys"] == n - 1
        assert out["read"] == (n - 1) * 1024
        assert peak <= limit  # (the kernel enforces it; an OOM kill would have ended the process)
        size = sum(os.path.getsize(tmp_path / "db" / "wal" / f) for f in os.listdir(tmp_path / "db" / "wal"))
        assert size > 4 * limit * 0.99
    finally:
        os.rmdir(cg)
