"""The results document as a bar chart (chart.png, drawn with matplotlib)."""

from __future__ import annotations

from typing import Any

from norikv.bench.workload import KEY_SIZE, THROUGHPUT_OPS


def write_chart(data: dict[str, Any], path: str) -> str | None:
    """Throughput per operation per store (log scale), one panel per value
    size. Returns None when written, else why not (matplotlib missing,
    nothing measured)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"matplotlib is not installed ({e}); no chart"
    p = data["parameters"]
    ops = [o for o in THROUGHPUT_OPS if o in p["ops"]]
    sizes = p["value_sizes"]
    stores = []
    for r in data["results"].values():
        if r["status"] == "measured" and r["store"] not in stores:
            stores.append(r["store"])
    if not ops or not stores:
        return "nothing measured; no chart"
    fig, axes = plt.subplots(len(sizes), 1, figsize=(max(11, 1.6 * len(ops) + 4), 4.8 * len(sizes)), squeeze=False)
    cmap = plt.get_cmap("tab10")
    width = 0.8 / len(stores)
    for ax, vs in zip(axes[:, 0], sizes):
        missing: dict[int, list[float]] = {}
        for si, store in enumerate(stores):
            r = data["results"].get(f"{store}/{vs}")
            ys = []
            for o in ops:
                f = (r or {}).get("ops", {}).get(o) if r and r["status"] == "measured" else None
                ys.append(f["ops_per_s"] if f and f.get("status") == "ok" else 0)
            xs = [i + (si - (len(stores) - 1) / 2) * width for i in range(len(ops))]
            ax.bar(
                xs,
                [y if y else float("nan") for y in ys],
                width,
                label=store,
                color=cmap(si % 10),
                edgecolor="black",
                linewidth=0.3,
            )
            missing[si] = [x for x, y in zip(xs, ys) if not y]
        ax.set_yscale("log")
        lo = ax.get_ylim()[0]
        for xs_na in missing.values():
            for x in xs_na:
                ax.text(x, lo * 1.3, "n/a", rotation=90, ha="center", va="bottom", fontsize=6, color="grey")
        ax.set_xticks(range(len(ops)))
        ax.set_xticklabels(ops)
        ax.set_ylabel("operations / second (log)")
        ax.set_title(f"{KEY_SIZE}-byte keys, {vs}-byte values, N={p['n']:,}")
        ax.grid(axis="y", which="major", alpha=0.4)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0)
    m = data["machine"]
    fig.suptitle(f"norikv bench {data['date_utc']} - {m['cpu']}, {m['cores']} cores, Python {m['python']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
