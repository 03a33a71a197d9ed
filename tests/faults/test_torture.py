"""Crash torture: SIGKILL a writer at random instants under each fsync policy
and check the reopened store against the model of acknowledged operations
(scripts/torture.py does the work; see its docstring for the model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ._util import REPO, SCRIPTS


def _torture(tmp_path, kills: int, seed: int, budget: float, timeout: float, threads: int = 1) -> dict:
    """Runs the script with the writers' value storage of the test's id
    (conftest's BOTH_VALUE_MODES); its checks reopen in either mode."""
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "torture.py"),
            "--kills",
            str(kills),
            "--seed",
            str(seed),
            "--dir",
            str(tmp_path / "t"),
            "--time-budget",
            str(budget),
            "--json",
            "--threads",
            str(threads),
            "--values",
            os.environ["NORIKV_TEST_VALUES"],
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert proc.stdout.strip(), proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["errors"] == [], "\n".join(summary["errors"][:10])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return summary


def test_crash_torture_quick(tmp_path):
    """~45 SIGKILLs across ALWAYS / batch / OS: nothing acknowledged is lost,
    nothing deleted comes back, batches are all-or-none, values are whole."""
    s = _torture(tmp_path, kills=45, seed=20261125, budget=40, timeout=180)
    assert s["kills"] >= 30, s  # the time budget may cut a few on a busy box
    assert set(s["per_policy"]) == {"always", "batch", "os"}
    assert all(n >= 10 for n in s["per_policy"].values()), s
    assert s["lost"] == 0 and s["rounds_failed"] == 0
    assert s["acknowledged_ops"] > 1000, s  # the writers really wrote between kills


def test_crash_torture_threads_quick(tmp_path):
    """15 kills of a writer with 3 threads (each owning its keys), so kills
    land amid concurrent appends, group commits and compactions; each
    thread's keys must match its own acknowledged model (plus its own op in
    flight). This also caught zstd's shared compressor crashing the writer."""
    s = _torture(tmp_path, kills=15, seed=99, budget=20, timeout=120, threads=3)
    assert s["kills"] >= 10 and s["lost"] == 0 and s["threads"] == 3


@pytest.mark.slow
def test_crash_torture_full(tmp_path):
    """The full mode: 500 kills."""
    s = _torture(tmp_path, kills=500, seed=7, budget=3600, timeout=4000)
    assert s["kills"] == 500 and s["lost"] == 0
    s = _torture(tmp_path / "threads", kills=150, seed=8, budget=3600, timeout=4000, threads=4)
    assert s["kills"] == 150 and s["lost"] == 0
