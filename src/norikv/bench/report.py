"""The results document as a text table (what ``norikv bench`` prints)."""

from __future__ import annotations

from typing import Any

from norikv.bench.workload import DURABLE_OPS, THROUGHPUT_OPS
from norikv.progress import format_size


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def fmt_bytes(x: int | None) -> str:
    return "-" if x is None else format_size(x, sep="")


def _header(data: dict[str, Any]) -> list[str]:
    p = data["parameters"]
    m = data["machine"]
    return [
        f"norikv bench  {data['date_utc']}  N={p['n']:,}  key={p['key_size']}B  "
        f"sync_ops={p['sync_ops']:,}  batches={p['batches']}x{p['batch_size']}",
        f"machine: {m['cpu']}, {m['cores']} cores, {fmt_bytes(m['memory_bytes'])}, "
        f"Linux {m['kernel']}, Python {m['python']}",
        "throughput in operations per second (higher is better); reopen in ms (open + first get);",
        "anon mem / rss mem = growth of RssAnon / VmRSS while the store holds N keys (rss includes "
        "mapped file pages); peak rss = whole process, including the workload's key list; "
        "disk = allocated bytes with N keys, after close",
    ]


def _row(r: dict[str, Any], ops: list[str], rate_ops: list[str], notes: list[str]) -> list[str]:
    """One measured store's row; its footnotes are appended to notes."""
    row = [r["store"], r.get("level", "")]
    for o in rate_ops:
        f = r["ops"].get(o)
        if f is None:
            row.append("-")
        elif f["status"] != "ok":
            row.append("n/a")
        else:
            row.append(fmt_rate(f["ops_per_s"]) + ("*" if f.get("note") else ""))
            if f.get("note"):
                notes.append(f"{r['store']} {o}*: {f['note']}")
    if "reopen" in ops:
        f = r["ops"].get("reopen")
        row.append("n/a" if not f or f["status"] != "ok" else f"{f['seconds'] * 1e3:.1f}")
    row.append(fmt_bytes(r.get("memory_store_anon")))
    row.append(fmt_bytes(r.get("memory_store_rss")))
    row.append(fmt_bytes(r.get("peak_rss")))
    row.append(fmt_bytes(r.get("disk_bytes", {}).get("allocated")) if r.get("disk_bytes") else "n/a")
    return row


def _size_table(data: dict[str, Any], vs: int) -> list[str]:
    """The table of one value size, with its notes."""
    ops = data["parameters"]["ops"]
    rate_ops = [o for o in THROUGHPUT_OPS if o in ops]
    head = ["store", "level", *rate_ops]
    head += (["reopen ms"] if "reopen" in ops else []) + ["anon mem", "rss mem", "peak rss", "disk"]
    rows = [head]
    notes: list[str] = []
    for r in data["results"].values():
        if r["value_size"] != vs:
            continue
        if r["status"] != "measured":
            notes.append(f"{r['store']}: {r['status']}: {r['reason']}")
            continue
        rows.append(_row(r, ops, rate_ops, notes))
    lines = ["", f"== value size {vs} B =="]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    for j, row in enumerate(rows):
        lines.append(
            "  ".join(str(c).rjust(w) if i > 1 else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
        )
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.extend("  note: " + nline for nline in notes)
    return lines


def _configurations(data: dict[str, Any]) -> list[str]:
    """The configuration each store ran with, once per store and level."""
    lines = [
        "",
        "configuration (plain = put/get/get_missing/delete/reopen at the row's level; "
        "synced = batch_sync/put_sync/threads8_sync):",
    ]
    configs: dict[tuple[str, str], dict[str, list[int]]] = {}
    na: dict[str, str] = {}
    for r in data["results"].values():
        if r["status"] != "measured":
            continue
        for lvl in ("plain_ops", "durable_ops"):
            c = r.get("config", {}).get(lvl)
            if c:
                configs.setdefault((r["store"], lvl), {}).setdefault(c, []).append(r["value_size"])
        for o in DURABLE_OPS:
            f = r["ops"].get(o)
            if f and f.get("status") == "n/a" and "durable_ops" not in r.get("config", {}):
                na[r["store"]] = f["reason"]
    stores_seen: list[str] = []
    for store, _lvl in configs:
        if store not in stores_seen:
            stores_seen.append(store)
    for store in stores_seen:
        for lvl, label in (("plain_ops", "plain"), ("durable_ops", "synced")):
            texts = configs.get((store, lvl), {})
            for c, sizes in texts.items():
                suffix = "" if len(texts) == 1 else " [value size " + ", ".join(f"{v} B" for v in sizes) + "]"
                lines.append(f"  {store:<14} {label:<6} {c}{suffix}")
        if store in na:
            lines.append(f"  {store:<14} synced n/a: {na[store]}")
    return lines


def format_table(data: dict[str, Any]) -> str:
    """The results document as the text table printed after a run."""
    lines = _header(data)
    for vs in data["parameters"]["value_sizes"]:
        lines.extend(_size_table(data, vs))
    lines.extend(_configurations(data))
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in data["versions"].items()))
    return "\n".join(lines)
