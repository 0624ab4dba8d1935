"""The benchmark as a picture: latency per image against batch size per target, and a latency histogram."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dfr_edge.atomic import atomic_path


def plot(data: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        raise ImportError("--plot needs matplotlib (pip install matplotlib, or the [train] extra)") from None
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["results"]
    targets = list(dict.fromkeys(r["target"] for r in rows))
    views = data["plan"]["views"]
    smallest = min(r["batch"] for r in rows)
    histograms = {t: next(r["samples_ms"] for r in rows if r["target"] == t and r["view"] == views[0]
                          and r["batch"] == smallest) for t in targets}
    bins = np.histogram_bin_edges(np.concatenate(list(histograms.values())), bins=40)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, target in enumerate(targets):
        colour = f"C{i % 10}"
        for view, style in zip(views, ("-o", "--s")):
            points = sorted((r["batch"], r["per_image_ms"]) for r in rows
                            if r["target"] == target and r["view"] == view)
            left.plot(*zip(*points), style, color=colour, label=f"{target} ({view})")
        right.hist(histograms[target], bins=bins, alpha=0.5, color=colour, label=target)
    left.set(xscale="log", xlabel="batch size", ylabel="median ms per image", title="latency vs batch")
    batches = sorted({r["batch"] for r in rows})
    left.minorticks_off()
    left.set_xticks(batches, labels=[str(b) for b in batches])
    right.set(xlabel="ms per call", ylabel="calls", title=f"latency histogram ({views[0]} view, batch {smallest})")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.suptitle(f"dfr-bench: {data['environment']['cpu']}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
