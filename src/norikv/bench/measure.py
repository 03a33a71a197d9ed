"""What the worker reads off its own process and the disk (memory, allocated
bytes) and the shape of one measured figure in the results."""

from __future__ import annotations

import ctypes
import gc
import os
import sys
from typing import Any


def proc_status() -> dict[str, int]:
    """VmHWM / VmRSS / RssAnon of this process in bytes (Linux)."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in ("VmHWM", "VmRSS", "RssAnon"):
                    out[name] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    if "VmHWM" not in out:  # macOS and others: ru_maxrss only
        import resource

        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["VmHWM"] = r if sys.platform == "darwin" else r * 1024
    return out


def growth(res: dict[str, Any], name: str, base: dict[str, int], now: dict[str, int], field: str) -> None:
    """res[name] = now[field] - base[field], when both were read."""
    if now.get(field) is not None and base.get(field) is not None:
        res[name] = now[field] - base[field]


def trim() -> None:
    """Frees what the process can give back before a memory reading."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def disk_usage(path: str) -> dict[str, Any]:
    allocated = apparent = 0
    files_seen: list[tuple[int, str]] = []
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            apparent += st.st_size
            blocks = getattr(st, "st_blocks", 0) * 512
            allocated += blocks
            files_seen.append((blocks, os.path.relpath(full, path)))
    files_seen.sort(reverse=True)
    return {
        "allocated": allocated,
        "apparent": apparent,
        "files": len(files_seen),
        "largest": {name: b for b, name in files_seen[:5]},
    }


def figure(ops: int, seconds: float, **extra: Any) -> dict[str, Any]:
    """One measured operation: ops done in seconds, plus extra fields."""
    d = {
        "status": "ok",
        "ops": ops,
        "seconds": seconds,
        "ops_per_s": ops / seconds if seconds > 0 else None,
        "us_per_op": seconds / ops * 1e6 if ops else None,
    }
    d.update(extra)
    return d


def not_applicable(reason: str) -> dict[str, Any]:
    return {"status": "n/a", "reason": reason}
