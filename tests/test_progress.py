"""norikv.progress: the one progress line of ``norikv`` and ``norikv bench``."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import time
from pathlib import Path

import pytest

import norikv.bench.runner
import norikv.cli
from norikv.progress import Progress, Spinner, format_size
from ptyutil import run_with_tty_stderr

TIMEOUT = 120


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _on_terminal(monkeypatch: pytest.MonkeyPatch) -> _Terminal:
    """sys.stderr replaced by a terminal that records what is drawn (in the
    test's body: pytest's capture swaps sys.stderr between a fixture's setup
    and the test)."""
    t = _Terminal()
    monkeypatch.setattr(sys, "stderr", t)
    return t


def _frames(text: str) -> list[str]:
    return [f.rstrip() for f in text.split("\r") if f.strip()]


def test_the_cli_and_the_bench_share_one_progress_line() -> None:
    assert norikv.cli.Progress is Progress and norikv.cli.Spinner is Spinner
    assert norikv.bench.runner.Progress is Progress


def test_format_size() -> None:
    assert [format_size(n) for n in (0, 1023, 1024, 1536, -1536, 5 << 20, 3 << 30, 2 << 40)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "-1.5 KiB", "5.0 MiB", "3.0 GiB", "2.0 TiB"]  # fmt: skip
    assert format_size(1536, sep="") == "1.5KiB"


def test_bar_with_a_total_then_erased(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _on_terminal(monkeypatch)
    p = Progress(argparse.Namespace(quiet=False), "exporting", 1000, unit="keys")
    p.update(500, force=True)
    p.update(1000, force=True, detail="last")
    p.close()
    frames = _frames(terminal.getvalue())
    assert frames == [
        "exporting [###############               ]  50.0% 500 / 1,000 keys",
        "exporting [##############################] 100.0% 1,000 / 1,000 keys last",
    ]
    assert terminal.getvalue().endswith("\r" + " " * len(frames[-1]) + "\r")


def test_quiet_or_not_a_terminal_draws_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _on_terminal(monkeypatch)
    p = Progress(argparse.Namespace(quiet=True), "reading", 10)
    p.update(5, force=True)
    p.close()
    assert terminal.getvalue() == "" and p.done == 5
    pipe = io.StringIO()  # isatty() is False
    monkeypatch.setattr(sys, "stderr", pipe)
    p = Progress(argparse.Namespace(), "reading", 10)
    p.update(5, force=True)
    p.close()
    assert pipe.getvalue() == ""


def test_spinner_shows_elapsed_seconds_only_then_erases(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _on_terminal(monkeypatch)
    with Spinner(argparse.Namespace(quiet=False), "compacting") as sp:
        deadline = time.monotonic() + 30
        while not terminal.getvalue() and time.monotonic() < deadline:  # the first frame, drawn by its thread
            time.sleep(0.01)
        assert sp.progress.enabled
    frames = _frames(terminal.getvalue())
    assert frames, "the spinner drew nothing"
    for f in frames:
        label, seconds, unit = f.split(" ")
        assert label == "compacting" and float(seconds) >= 0 and unit == "s", f
    assert terminal.getvalue().endswith("\r" + " " * len(frames[-1]) + "\r")


def _bench_with_tty_stderr(tmp_path: Path, *extra: str) -> tuple[int, bytes]:
    cmd = [sys.executable, "-m", "norikv.bench", "--stores", "norikv-os,dict", "--value-size", "100",
           "--n", "300", "--sync-ops", "16", "--batches", "2", "--out", str(tmp_path / "out"),
           "--dir", str(tmp_path / "stores"), *extra]  # fmt: skip
    return run_with_tty_stderr(cmd, subprocess.DEVNULL, TIMEOUT)


def test_bench_draws_the_shared_progress_line_on_a_terminal(tmp_path: Path) -> None:
    rc, err = _bench_with_tty_stderr(tmp_path)
    assert rc == 0, err
    frames = _frames(err.decode())
    # 2 stores x (7 operations after put, + put + done) = 18 steps
    assert frames[0].startswith("bench [") and " / 18 steps " in frames[0]
    assert any(f.endswith("norikv-os 100B: get_missing") for f in frames), frames
    assert any(f.endswith("dict 100B: put") for f in frames), frames
    assert frames[-1].startswith("bench [##############################] 100.0% 18 / 18 steps")
    assert err.endswith(b"\r")  # erased
    rc, err = _bench_with_tty_stderr(tmp_path, "--quiet")
    assert rc == 0 and err == b""
