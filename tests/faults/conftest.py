"""Fixtures of the fault-injection tests."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from ._shim import SHIM_SRC


@pytest.fixture(scope="session")
def shim_path(tmp_path_factory) -> str:
    if not sys.platform.startswith("linux"):
        pytest.skip("the fault shim is injected with LD_PRELOAD (Linux only)")
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler to build the fault shim")
    out = tmp_path_factory.mktemp("shim") / "faultshim.so"
    r = subprocess.run(
        [cc, "-shared", "-fPIC", "-O1", "-o", str(out), str(SHIM_SRC), "-ldl"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot build the fault shim: {r.stderr[-500:]}")
    return str(out)
