"""The LD_PRELOAD fault shim (tests/faults/shim/faultshim.c): how to build it
(the ``shim_path`` fixture in conftest.py does, once per session) and the
environment that arms it."""

from __future__ import annotations

from pathlib import Path

SHIM_SRC = Path(__file__).resolve().parent / "shim" / "faultshim.c"


def shim_env(
    shim: str,
    ops: str,
    control: str | None = None,
    path: str | None = None,
    log: str | None = None,
    after: int = 0,
    err: int = 5,
) -> dict:
    env = {"LD_PRELOAD": shim, "FAULTSHIM_OPS": ops, "FAULTSHIM_ERRNO": str(err), "FAULTSHIM_AFTER": str(after)}
    if control:
        env["FAULTSHIM_CONTROL"] = control
    if path:
        env["FAULTSHIM_PATH"] = path
    if log:
        env["FAULTSHIM_LOG"] = log
    return env
