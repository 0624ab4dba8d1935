"""dfr-bench results: one record per (target, view, batch), as JSON, a Markdown table and a plot.

Throughput is images per second at the median call; every row also carries its speed as a ratio
to the torch-eager baseline measured in the same run (same view and batch), when there is one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dfr_edge import __version__
from dfr_edge.bench.measure import Cell, Plan
from dfr_edge.bench.targets import Target
from dfr_edge.manifest import write_text_atomic
from dfr_edge.report import write_json
from dfr_edge.runtime.camera.stats import latency_summary

SCHEMA = "dfr-bench/1"
STAGE_ORDER = ["resize", "infer", "postprocess", "gpu"]  # Detector.detect's, CUDA-event time; others after


def result_rows(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    rows = []
    for cell in cells:
        latency = latency_summary(cell.calls)
        rows.append({
            "target": cell.target.label, "variant": cell.target.variant, "backend": cell.target.backend,
            "threads": cell.target.threads, "baseline": cell.target.baseline, "view": cell.view,
            "batch": cell.batch, "latency_ms": latency.to_dict(), "p99_over_p50": latency.p99 / latency.p50,
            "per_image_ms": latency.p50 / cell.batch, "images_per_s": 1000.0 * cell.batch / latency.p50,
            "stages_ms": {stage: latency_summary(v).to_dict() for stage, v in cell.stages.items()},
            "samples_ms": [round(s * 1000.0, 4) for s in cell.calls],
        })
    baselines = {(r["view"], r["batch"], r["threads"]): r for r in rows if r["baseline"]}
    for row in rows:
        base = baselines.get((row["view"], row["batch"], row["threads"]))
        row["vs_baseline"] = base["latency_ms"]["p50"] / row["latency_ms"]["p50"] if base else None
    return rows


def report(targets: Sequence[Target], cells: Sequence[Cell], plan: Plan, environment: dict) -> dict[str, Any]:
    return {
        "schema": SCHEMA, "dfr_edge": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment, "plan": asdict(plan),
        "targets": [{"label": t.label, "artefact": t.artefact, "variant": t.variant, "backend": t.backend,
                     "threads": t.threads, "baseline": t.baseline} for t in targets],
        "results": result_rows(cells),
    }


def markdown(data: dict[str, Any]) -> str:
    """A table per view; the frame view adds the p50 of each stage."""
    env = data["environment"]
    lines = [f"dfr-bench on {env['cpu']} ({env['usable_cores']} cores; load {env['load_average']}), "
             f"{', '.join(env['gpus']) or 'no GPU'}; {data['created']}", ""]
    for view in data["plan"]["views"]:
        rows = [r for r in data["results"] if r["view"] == view]
        stages = sorted({s for r in rows for s in r["stages_ms"]},
                        key=lambda s: (STAGE_ORDER.index(s) if s in STAGE_ORDER else len(STAGE_ORDER), s))
        head = ["target", "batch", "p50 ms", "p90 ms", "p99 ms", "max ms", "p99/p50", "img/s", "vs baseline"]
        head += [f"{s} p50 ms" for s in stages]
        title = "model only" if view == "model" else "frame to decision (camera-size frame in memory)"
        lines += [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            lat = r["latency_ms"]
            ratio = f"{r['vs_baseline']:.2f}x" if r["vs_baseline"] else "-"
            cells = [r["target"], r["batch"], f"{lat['p50']:.2f}", f"{lat['p90']:.2f}", f"{lat['p99']:.2f}",
                     f"{lat['max']:.2f}", f"{r['p99_over_p50']:.2f}", f"{r['images_per_s']:.1f}", ratio]
            cells += [f"{r['stages_ms'][s]['p50']:.2f}" for s in stages]
            lines.append("| " + " | ".join(map(str, cells)) + " |")
        lines.append("")
    return "\n".join(lines)


def write_outputs(data: dict[str, Any], json_path: Path | None, markdown_path: Path | None,
                  plot_path: Path | None) -> None:
    if json_path:
        write_json(json_path, data)
    if markdown_path:
        Path(markdown_path).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(markdown_path), markdown(data) + "\n")
    if plot_path:
        from dfr_edge.bench.plot import plot

        plot(data, Path(plot_path))
