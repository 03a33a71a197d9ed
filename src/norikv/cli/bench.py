"""``norikv bench ARGS``: hands ARGS to the comparison runner, norikv.bench."""

from __future__ import annotations

import sys

from norikv.cli.output import EXIT_OK, EXIT_USAGE


def run_bench(argv: list[str]) -> int:
    """``norikv.bench.main(argv)``; exit 2 with one line when the runner or
    one of its dependencies cannot be imported."""
    try:
        from norikv import bench  # type: ignore[attr-defined]
    except ImportError as exc:
        if exc.name == "norikv.bench":
            sys.stderr.write(
                "norikv bench: the benchmark runner (norikv.bench) is not available in this installation\n"
            )
        else:
            sys.stderr.write(
                f"norikv bench: cannot load the benchmark runner: {exc} "
                f"(install the extras: pip install 'norikv[bench]')\n"
            )
        return EXIT_USAGE
    rc = bench.main(argv)
    return rc if isinstance(rc, int) else EXIT_OK
