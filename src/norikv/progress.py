"""The progress line of the command-line tools (``norikv`` and ``norikv bench``).

One line on stderr, drawn only when stderr is a terminal and ``--quiet`` is not
given, at most ten redraws a second unless forced, and erased when done, so
that nothing of it reaches a pipe or a log file.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

__all__ = ["Progress", "Spinner", "format_size"]


def format_size(n: float, sep: str = " ") -> str:
    """A byte count for people: ``512 B``, ``1.5 KiB``, ... ``2.0 TiB``
    (``sep`` goes between the number and the unit)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f}{sep}{unit}" if unit == "B" else f"{n:.1f}{sep}{unit}"
        n /= 1024
    return f"{n:.1f}{sep}TiB"


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """A progress line on stderr.

    ``args`` is the parsed command line: a true ``quiet`` attribute turns the
    line off. ``total`` is the amount at the end (None: no bar, only the amount
    done); ``unit`` is ``"bytes"`` (amounts shown as sizes), a word shown after
    the counts, or ``""`` for no amount at all; ``elapsed`` adds the seconds
    since the line was created.
    """

    def __init__(
        self, args: Any, label: str, total: int | None = None, unit: str = "bytes", *, elapsed: bool = False
    ) -> None:
        self.enabled = not getattr(args, "quiet", False) and stderr_is_tty()
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0
        self.detail = ""
        self._elapsed = elapsed
        self._t0 = time.monotonic()
        self._last = 0.0
        self._width = 0

    def update(self, done: int, force: bool = False, detail: str | None = None) -> None:
        """Sets the amount done (and the text after the line, when given);
        redraws unless the last redraw is less than 0.1 s old and not ``force``."""
        self.done = done
        if detail is not None:
            self.detail = detail
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        self._draw(self._line(now))

    def advance(self, n: int) -> None:
        """Adds ``n`` to the amount done (see update)."""
        self.update(self.done + n)

    def _line(self, now: float) -> str:
        parts = [self.label]
        if self.total:
            frac = min(1.0, self.done / self.total)
            parts.append(f"[{'#' * int(frac * 30):<30}] {frac * 100:5.1f}%")
        if self.unit == "bytes":
            parts.append(format_size(self.done) + (f" / {format_size(self.total)}" if self.total else ""))
        elif self.unit:
            parts.append(f"{self.done:,}" + (f" / {self.total:,}" if self.total else "") + f" {self.unit}")
        if self._elapsed:
            parts.append(f"{now - self._t0:.1f} s")
        if self.detail:
            parts.append(self.detail)
        return " ".join(parts)

    def _draw(self, line: str) -> None:
        pad = max(0, self._width - len(line))
        self._width = len(line)
        sys.stderr.write("\r" + line + " " * pad)
        sys.stderr.flush()

    def close(self) -> None:
        """Erases the line."""
        if self.enabled and self._width:
            sys.stderr.write("\r" + " " * self._width + "\r")
            sys.stderr.flush()
            self._width = 0


class Spinner:
    """Elapsed time on stderr while an operation without progress figures
    runs (a context manager; same terminal rule as Progress)."""

    def __init__(self, args: Any, label: str) -> None:
        self.progress = Progress(args, label, unit="", elapsed=True)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Spinner:
        if self.progress.enabled:

            def run() -> None:
                while not self._stop.wait(0.2):
                    self.progress.update(0, force=True)

            self._thread = threading.Thread(target=run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.progress.close()
