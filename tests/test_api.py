"""The public surface of the package: names, version, type information.

These tests run against whichever norikv is imported (the editable checkout,
or an installed wheel under scripts/wheel-check.sh), so they also check that a
built wheel ships its stubs and py.typed marker.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import norikv
from norikv import _version

HERE = Path(__file__).resolve().parent
PACKAGE_DIR = Path(norikv.__file__).resolve().parent

EXPECTED_ALL = [
    "__version__",
    "KvStore",
    "WriteBatch",
    "CodecStore",
    "Wal",
    "WalConfig",
    "WalIterator",
    "FsyncPolicy",
    "RecoveryMode",
    "RecoveryInfo",
    "Record",
    "Position",
    "Compression",
    "crc32c",
    "NoriError",
    "ConfigError",
    "ClosedError",
    "CorruptionError",
    "LockError",
    "StoreFullError",
    "NoriIOError",
    "WalFailedError",
    "ReadOnlyError",
]


def test_all_is_pinned():
    # Adding or removing a public name is an API change: update this list, the
    # stubs and the CHANGELOG together.
    assert norikv.__all__ == EXPECTED_ALL


def test_every_public_name_exists_and_star_import_matches():
    for name in norikv.__all__:
        assert hasattr(norikv, name), name
    ns: dict[str, object] = {}
    exec("from norikv import *", ns)
    assert sorted(k for k in ns if k != "__builtins__") == sorted(EXPECTED_ALL)


def test_exception_hierarchy():
    errors = EXPECTED_ALL[EXPECTED_ALL.index("NoriError") + 1 :]
    assert len(errors) == 8
    for name in errors:
        assert issubclass(getattr(norikv, name), norikv.NoriError), name
    assert issubclass(norikv.NoriIOError, OSError)
    assert issubclass(norikv.WalFailedError, norikv.NoriIOError)
    assert issubclass(norikv.ReadOnlyError, norikv.NoriIOError)


def test_version_is_single_sourced():
    assert norikv.__version__ == _version.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.dev\d+)?", norikv.__version__)
    # The distribution metadata (from pyproject's dynamic version) agrees.
    assert importlib.metadata.version("norikv") == norikv.__version__


def test_changelog_names_the_version():
    changelog = HERE.parent / "CHANGELOG.md"
    if not changelog.exists():
        pytest.skip("CHANGELOG.md is not next to this tests/ directory (installed-wheel run)")
    assert f"## [{norikv.__version__}]" in changelog.read_text()


def test_type_information_is_shipped():
    assert (PACKAGE_DIR / "py.typed").is_file()
    assert (PACKAGE_DIR / "_engine.pyi").is_file()


def _mypy_available() -> bool:
    try:
        import mypy  # noqa: F401
    except ImportError:
        return False
    return True


needs_mypy = pytest.mark.skipif(not _mypy_available(), reason="mypy is not installed")


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)


@needs_mypy
def test_stubs_match_the_extension(tmp_path):
    # stubtest imports norikv._engine and compares every name, signature and
    # class in it with src/norikv/_engine.pyi.
    proc = _run(
        [
            sys.executable,
            "-m",
            "mypy.stubtest",
            "norikv._engine",
            "--allowlist",
            str(HERE / "stubtest-allowlist.txt"),
            "--ignore-unused-allowlist",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_mypy
def test_mypy_strict_accepts_a_program_using_the_api(tmp_path):
    sample = tmp_path / "typing_sample.py"
    shutil.copy(HERE / "typing_sample.py", sample)
    proc = _run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", os.devnull, str(sample)],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_mypy
def test_mypy_rejects_misuse_of_the_api(tmp_path):
    # The stubs are not vacuous: wrong types in a call are reported.
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from norikv import KvStore, Record\n"
        "def f(store: KvStore) -> None:\n"
        "    n: int = store.get(b'k')\n"
        "    store.put('text', b'v')\n"
        "    s: str = Record.put(b'k', b'v').key\n"
    )
    proc = _run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", os.devnull, str(bad)],
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "bad.py:3: error" in proc.stdout
    assert "bad.py:4: error" in proc.stdout
    assert "bad.py:5: error" in proc.stdout


def test_typing_sample_runs(tmp_path):
    # The sample is a real program: run it, so it cannot drift from behaviour.
    proc = _run([sys.executable, str(HERE / "typing_sample.py"), str(tmp_path)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(norikv.__version__ + " ")


@needs_mypy
def test_mypy_accepts_the_package_itself(tmp_path):
    # The package's own sources type-check against its stubs (lz4 and
    # sortedcontainers ship no type information).
    proc = _run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--no-incremental",
            "--cache-dir",
            os.devnull,
            "--ignore-missing-imports",
            "-p",
            "norikv",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
