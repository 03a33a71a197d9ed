"""Builds the LD_PRELOAD fault shim (tests/faults/shim/faultshim.c) once per session."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SHIM_SRC = Path(__file__).resolve().parent / "shim" / "faultshim.c"


@pytest.fixture(scope="session")
def shim_path(tmp_path_factory) -> str:
    if not sys.platform.startswith("linux"):
        pytest.skip("the fault shim is injected with LD_PRELOAD (Linux only)")
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler to build the fault shim")
    out = tmp_path_factory.mktemp("shim") / "faultshim.so"
    r = subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(out), str(SHIM_SRC), "-ldl"],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.skip(f"cannot build the fault shim: {r.stderr[-500:]}")
    return str(out)


def shim_env(shim: str, ops: str, control: str | None = None, path: str | None = None,
             log: str | None = None, after: int = 0, err: int = 5) -> dict:
    env = {"LD_PRELOAD": shim, "FAULTSHIM_OPS": ops, "FAULTSHIM_ERRNO": str(err),
           "FAULTSHIM_AFTER": str(after)}
    if control:
        env["FAULTSHIM_CONTROL"] = control
    if path:
        env["FAULTSHIM_PATH"] = path
    if log:
        env["FAULTSHIM_LOG"] = log
    return env
