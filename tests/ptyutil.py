"""Running a command with its stderr on a pseudo-terminal (for the progress line)."""

from __future__ import annotations

import os
import pty
import subprocess
from typing import IO


def run_with_tty_stderr(cmd: list[str], stdout: IO[bytes] | int, timeout: float) -> tuple[int, bytes]:
    """Runs ``cmd`` with stderr on a pseudo-terminal; returns (exit code,
    everything it wrote to stderr)."""
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(cmd, stdout=stdout, stderr=slave)
        os.close(slave)
        slave = -1
        err = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            err += chunk
        return p.wait(timeout), err
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
