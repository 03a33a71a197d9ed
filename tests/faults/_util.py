"""Helpers shared by the fault tests: running Python snippets in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"


def run_py(
    code: str, *, env: dict | None = None, timeout: float = 60, preexec_fn=None, args: list[str] | None = None
) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter; returns the completed process
    (stdout/stderr as text). A hang fails the test through the timeout."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *(args or [])],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        preexec_fn=preexec_fn,
    )


def describe(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"


#: Script text for the subprocess snippets: ``refusals(ops)`` runs each
#: ``(name, fn)`` of a poisoned store and lists ``[name, errno]`` of the
#: WalFailedError it raised (``None`` when it returned instead).
REFUSALS = r"""
from norikv import WalFailedError as _WalFailedError


def refusals(ops):
    out = []
    for name, fn in ops:
        try:
            fn()
            out.append([name, None])
        except _WalFailedError as exc:
            out.append([name, exc.errno])
    return out
"""
