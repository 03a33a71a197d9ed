"""The command line of ``norikv bench`` / ``python -m norikv.bench``: the
options, then run, write results.json and chart.png, print the table."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable

from norikv.bench.chart import write_chart
from norikv.bench.report import format_table
from norikv.bench.runner import run
from norikv.bench.stores import STORES
from norikv.bench.workload import OPS, THREADS


def _csv(choices: Iterable[str], what: str) -> Callable[[str], list[str]]:
    allowed = list(choices)

    def parse(s: str) -> list[str]:
        items = [x.strip() for x in s.split(",") if x.strip()]
        bad = [x for x in items if x not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"unknown {what} {bad or s!r}; choose from {', '.join(allowed)}")
        return items

    return parse


def _sizes(s: str) -> list[int]:
    out = []
    for x in s.split(","):
        x = x.strip().lower()
        mult = 1
        if x.endswith("kb") or x.endswith("k"):
            mult, x = 1024, x.rstrip("b").rstrip("k")
        try:
            v = int(x) * mult
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad value size {s!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError("value sizes must be > 0")
        out.append(v)
    return out


def _positive(s: str) -> int:
    try:
        v = int(s.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {s!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return v


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="norikv bench",
        description="Compare norikv with dict, sqlite3, lmdb, rocksdict, plyvel, semidbm and diskcache "
        "on one workload (16-byte keys). Peers not installed are skipped with a note.",
    )
    ap.add_argument(
        "--stores",
        type=_csv(STORES, "store"),
        default=list(STORES),
        help="comma-separated subset of: " + ", ".join(STORES),
    )
    ap.add_argument(
        "--ops",
        type=_csv(OPS, "operation"),
        default=list(OPS),
        help="comma-separated subset of: " + ", ".join(OPS) + " (memory and disk are always measured)",
    )
    ap.add_argument(
        "--value-size",
        type=_sizes,
        default=[100, 1024],
        help="comma-separated value sizes in bytes, e.g. 100,1k (default 100,1024)",
    )
    ap.add_argument("--n", type=_positive, default=None, help="keys loaded (default 1,000,000; 20,000 with --quick)")
    ap.add_argument("--quick", action="store_true", help="CI size: N=20,000, 200 synced ops, 50 batches")
    ap.add_argument(
        "--sync-ops",
        type=_positive,
        default=None,
        help="operations for put_sync and threads8_sync (default 2,000; 200 with --quick)",
    )
    ap.add_argument("--batch-size", type=_positive, default=100, help="puts per durable batch (default 100)")
    ap.add_argument("--batches", type=_positive, default=None, help="durable batches (default 1,000; 50 with --quick)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default="bench-results", help="directory for results.json and chart.png")
    ap.add_argument("--dir", default=None, help="where the stores are created (default: the system temp dir)")
    ap.add_argument("--timeout", type=float, default=7200, help="seconds allowed per store and value size")
    ap.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.n is None:
        args.n = 20_000 if args.quick else 1_000_000
    if args.sync_ops is None:
        args.sync_ops = 200 if args.quick else 2_000
    if args.batches is None:
        args.batches = 50 if args.quick else 1_000
    args.sync_ops = max(THREADS, args.sync_ops - args.sync_ops % THREADS)  # the threads share it evenly
    if args.dir is not None:
        os.makedirs(args.dir, exist_ok=True)
    data = run(args)
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, "results.json")
    png_path = os.path.join(args.out, "chart.png")
    chart_note = write_chart(data, png_path)
    data["chart"] = None if chart_note else os.path.basename(png_path)
    if chart_note:
        data["chart_note"] = chart_note
    with open(json_path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    if not args.quiet:
        print(format_table(data))
        print(f"\nresults: {json_path}" + (f"\nchart:   {png_path}" if not chart_note else f"\n{chart_note}"))
    errors = [k for k, r in data["results"].items() if r["status"] == "error"]
    for k in errors:
        print(f"error: {k}: {data['results'][k]['reason']}", file=sys.stderr)
    return 1 if errors else 0
