"""norikv verify: the verdict of the default open's own recovery plan, and
the details of every damage from a plan that reads past it (docs/cli.md,
"verify"). Read-only and lock-free, like the commands of norikv.cli.read."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from norikv.cli.output import EXIT_DAMAGE, EXIT_OK, out
from norikv.cli.store import ReadProgress, locate
from norikv.errors import CorruptionError
from norikv.inspect import RecoveryMode, RecoveryPlan, TailCut, lock_holders, read_plan


def _verify_plans(
    args: argparse.Namespace, waldir: str
) -> tuple[RecoveryPlan | None, CorruptionError | None, RecoveryPlan]:
    """The default open's plan (read_plan in tolerate_corrupted_tail, judging
    values as the open does) gives the verdict: damage is what that open
    would refuse or cut. When there is some, a skip_any_corrupted_records plan
    (which reads on past every damage) gives the details. Returns (verdict
    plan or None when refused, the refusal, the detail plan)."""
    progress = ReadProgress(args, "verifying")
    try:
        verdict: RecoveryPlan | None = None
        refusal: CorruptionError | None = None
        try:
            verdict = read_plan(waldir, max_value_size=args.max_value_size, progress=progress)
        except CorruptionError as exc:
            refusal = exc
        detail = verdict
        if detail is None or detail.changed:
            detail = read_plan(
                waldir, RecoveryMode.SKIP_ANY_CORRUPTED_RECORDS, max_value_size=args.max_value_size, progress=progress
            )
    finally:
        progress.close()
    return verdict, refusal, detail


def _verify_report(args: argparse.Namespace, waldir: str) -> dict[str, Any]:
    holders = lock_holders(waldir)
    verdict, refusal, detail = _verify_plans(args, waldir)
    segs: list[dict[str, Any]] = []
    for p in detail.segments:
        count = p.records
        damage: list[dict[str, Any]] = []
        if p.skipped:
            start, _, reason, before = p.skipped[0]
            spans = [[a, b] for a, b, _, _ in p.skipped]
            damage.append(dict(offset=start, reason=reason, bad_spans=spans, records_after=p.records - before))
            count = before
        if p.unterminated_batch is not None:
            damage.append(
                dict(
                    offset=p.unterminated_batch,
                    reason="atomic batch never terminated",
                    bad_spans=[[p.unterminated_batch, p.data_end]],
                    records_after=0,
                )
            )
        segs.append(
            dict(
                segment=p.id,
                file=os.path.basename(p.path),
                path=p.path,
                file_size=p.file_size,
                records=count,
                data_end=p.data_end,
                zero_tail=p.file_size - p.data_end if not damage else 0,
                damage=damage,
                last=p is detail.segments[-1],
                batch_records_dropped=p.batch_dropped,
            )
        )
    mode = RecoveryMode.TOLERATE_CORRUPTED_TAIL.value
    first: dict[str, Any] | None = None
    if refusal is not None:
        where = (refusal.path, refusal.offset)
        reason = next(
            (d["reason"] for s in segs for d in s["damage"] if (s["path"], d["offset"]) == where), str(refusal)
        )
        first = dict(
            path=refusal.path,
            offset=refusal.offset,
            reason=reason,
            verdict=f"the default open ({mode}) refuses this store",
        )
    elif verdict is not None and verdict.changed:
        cut = TailCut.of(verdict.changed[0])
        first = dict(
            path=cut.path,
            offset=cut.offset,
            reason=cut.reason,
            verdict=f"the default open ({mode}) would cut the damaged tail",
        )
    return dict(segments=segs, locked_by=holders, first_damage=first, leftovers=detail.leftovers)


def verify(args: argparse.Namespace) -> int:
    _, waldir = locate(args.dir)
    report = _verify_report(args, waldir)
    segs = report["segments"]
    first = report.pop("first_damage")
    leftovers = report.pop("leftovers")
    damaged = [s for s in segs if s["damage"]]
    count = sum(s["records"] for s in segs)
    data_bytes = sum(s["data_end"] for s in segs)
    verdict = first["verdict"] if first else "clean"
    report.update(
        clean=first is None, records=count, data_bytes=data_bytes, compaction_leftovers=leftovers, verdict=verdict
    )
    if args.json:
        out(json.dumps(report, indent=2) + "\n")
    elif not args.quiet:
        lines = []
        for s in segs:
            for d in s["damage"]:
                spans = ", ".join(f"{a}-{b}" for a, b in d["bad_spans"][:5])
                more = f" (+{len(d['bad_spans']) - 5} more)" if len(d["bad_spans"]) > 5 else ""
                lines.append(
                    f"{s['file']}: DAMAGED at offset {d['offset']}: {d['reason']}; "
                    f"{s['records']} valid records before it, {d['records_after']} after; "
                    f"bad bytes {spans}{more}"
                )
            if not s["damage"]:
                tail = f" + {s['zero_tail']} zero bytes of preallocation" if s["zero_tail"] else ""
                broken = (
                    f" ({s['batch_records_dropped']} of them in broken atomic batches, never applied)"
                    if s["batch_records_dropped"]
                    else ""
                )
                lines.append(f"{s['file']}: ok, {s['records']} records{broken}, {s['data_end']} bytes{tail}")
        for name in leftovers:
            lines.append(f"{name}: leftover of an interrupted compaction (removed by the next open)")
        if report["locked_by"]:
            pids = ", ".join(map(str, report["locked_by"]))
            lines.append(f"(the store is open in pid {pids}; verified what is on disk now)")
        state = "CORRUPT" if first else "clean"
        lines.append(f"{state}: {len(segs)} segment(s), {count} records, {data_bytes} bytes")
        out("\n".join(lines) + "\n")
    if first:
        sys.stderr.write(
            f"norikv verify: corruption in {first['path']} at offset {first['offset']}: "
            f"{first['reason']} ({max(1, len(damaged))} damaged segment(s); {verdict})\n"
        )
        return EXIT_DAMAGE
    return EXIT_OK
