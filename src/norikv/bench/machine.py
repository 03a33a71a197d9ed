"""What the figures were measured on: the machine and each store's version."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Iterable
from typing import Any

from norikv.bench.stores import STORES


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "memory_bytes": mem,
        "kernel": platform.release(),
        "os": platform.system(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
    }


def peer_versions(names: Iterable[str]) -> dict[str, str]:
    """Store name -> version, for the stores that are installed."""
    out = {}
    for name in names:
        cls = STORES[name]
        if cls.available() is None:
            try:
                out[name] = cls.version()
            except Exception as e:  # noqa: BLE001
                out[name] = f"unknown ({e})"
    return out
