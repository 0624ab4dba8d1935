"""Reproduce the project's published speed and accuracy numbers on this machine, next to the published ones.

    python benchmarks/reproduce.py --bundle DIR [--data ../shared/datasets/mvtec_ad/bottle] [--rounds 40]
    python benchmarks/reproduce.py              # trains + exports the default model first (~5 min)

1. Accuracy of every exported artefact in the bundle on the MVTec bottle test set, with dfr-eval's
   code, against benchmarks/results/onnx_variants.json (the published table in benchmarks/README.md).
   torch eager is not re-scored: the export step checks FP32 parity with it (dfr-export prints it),
   and scoring it costs more than everything else here on a 2-core machine.
2. Speed: batch 1, model only, --threads (2, as published), every artefact and the torch-eager
   baseline interleaved in dfr-bench's turns (its library) - measured twice in a row, to show how
   well a rerun agrees.
3. The camera loop's targets with the fastest CPU variant (reproduce_camera.py).
4. The same numbers next to the peers' published ones (PEERS.md §3), with what differs.
Prints the tables and writes results/reproduce_<cpu>.json and .md (the .md is what the README links).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

from reproduce_camera import camera_targets, scene_frames
from reproduce_camera import table as camera_table

from dfr_edge import __version__
from dfr_edge.bench import Plan, build_targets, environment, measure
from dfr_edge.bench.results import result_rows
from dfr_edge.data.mvtec import load_test_arrays, open_dataset
from dfr_edge.evaluate import evaluate
from dfr_edge.manifest import write_text_atomic
from dfr_edge.report import format_table, write_json
from dfr_edge.runtime.camera.engine_choice import parse_backend

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "datasets" / "mvtec_ad" / "bottle"
PUBLISHED = HERE / "results" / "onnx_variants.json"
PUBLISHED_NAMES = {"torch-eager": "torch eager", "fp32": "onnx fp32", "fp16": "onnx fp16",
                   "int8-tensorrt": "onnx int8-tensorrt", "int8-cpu": "onnx int8-cpu"}
# Published by peers (PEERS.md §3): name, what, CPU, image AUROC, pixel AUROC, CPU frames/s at batch 1.
PEER_NUMBERS = [
    ("AnomaVision PaDiM R18 (README)", "MVTec 15-class mean", "Intel Core i9", 0.850, 0.956, 43.4),
    ("anomalib PaDiM (as run by AnomaVision)", "MVTec 15-class mean", "Intel Core i9", 0.810, 0.935, 13.0),
    ("anomalib PaDiM R18 (own README)", "MVTec 15-class mean", "-", 0.891, 0.968, None),
    ("anomalib FRE R50 (DFR's nearest relative)", "MVTec 15-class mean", "-", 0.933, None, None),
]


def accuracy(targets, data: Path) -> dict[str, dict]:
    first = targets[0].detector
    test = load_test_arrays(open_dataset(data), first.geometry)
    return {t.variant: evaluate(t.detector.infer, test).metrics.to_dict() for t in targets if not t.baseline}


def speed_twice(targets, rounds: int, data: Path) -> list[dict[str, dict]]:
    """Two back-to-back interleaved runs; per variant its result row (medians, p99, ratio to torch)."""
    plan = Plan(batches=(1,), views=("model",), warmup=5, iterations=rounds)
    frames = scene_frames(data, 8)  # real scenes, as the published run used real images
    return [{row["variant"]: row for row in result_rows(measure(targets, plan, frames))} for _ in range(2)]


def compare(published: dict, metrics: dict, runs: list[dict]) -> tuple[list[list], list[dict]]:
    rows, records = [], []
    pub = {r["variant"]: r for r in published["results"]}
    fp32 = [run["fp32"]["latency_ms"]["p50"] for run in runs]
    for variant in runs[0]:
        m = metrics.get(variant, {"image_auroc": None, "pixel_auroc": None, "pro": None})  # torch: not re-scored
        p = pub.get(PUBLISHED_NAMES.get(variant, variant), {})
        medians = [run[variant]["latency_ms"]["p50"] for run in runs]
        record = {"variant": variant, **m, "median_ms_runs": medians,
                  "p99_over_p50": runs[1][variant]["p99_over_p50"],
                  "rerun_difference": abs(medians[1] - medians[0]) / medians[0],
                  "vs_torch": runs[1][variant]["vs_baseline"], "vs_fp32": fp32[1] / medians[1],
                  "published": {k: p.get(k) for k in ("median_ms", "image_auroc", "pixel_auroc", "pro",
                                                       "speedup_vs_torch", "speedup_vs_onnx_fp32")}}
        records.append(record)
        rows.append([variant, f"{_pub(m, 'image_auroc')} ({_pub(p, 'image_auroc')})",
                     f"{_pub(m, 'pixel_auroc')} ({_pub(p, 'pixel_auroc')})", f"{_pub(m, 'pro')} ({_pub(p, 'pro')})",
                     f"{medians[0]:.2f} / {medians[1]:.2f} ({_pub(p, 'median_ms', 2)})",
                     f"{record['rerun_difference'] * 100:.1f}%", f"{record['p99_over_p50']:.2f}",
                     f"{record['vs_torch']:.2f}x ({_pub(p, 'speedup_vs_torch', 2)}x)",
                     f"{record['vs_fp32']:.2f}x ({_pub(p, 'speedup_vs_onnx_fp32', 2)}x)"])
    return rows, records


def _pub(row: dict, key: str, digits: int = 4) -> str:
    return f"{row[key]:.{digits}f}" if row.get(key) is not None else "-"


def peers_table(records: list[dict], cpu: str) -> list[list]:
    ours = {r["variant"]: r for r in records}
    best = min((r for r in records if r["variant"] != "torch-eager"), key=lambda r: r["median_ms_runs"][1])
    rows = [[f"dfr-edge {best['variant']} (this run)", "MVTec bottle only", cpu, f"{best['image_auroc']:.3f}",
             f"{best['pixel_auroc']:.3f}", f"{1000.0 / best['median_ms_runs'][1]:.1f}"]]
    if "torch-eager" in ours:
        t, same = ours["torch-eager"], ours.get("fp32", ours["torch-eager"])  # FP32 parity checked at export
        rows.append(["dfr-edge torch eager (this run)", "MVTec bottle only", cpu, f"{same['image_auroc']:.3f}",
                     f"{same['pixel_auroc']:.3f}", f"{1000.0 / t['median_ms_runs'][1]:.1f}"])
    for name, what, peer_cpu, image, pixel, fps in PEER_NUMBERS:
        rows.append([name, what, peer_cpu, image, "-" if pixel is None else pixel, "-" if fps is None else fps])
    return rows


def cpu_slug(env: dict) -> str:
    return re.sub(r"[^a-z0-9]+", "-", f"{env['cpu']} {env['usable_cores']}c".lower()).strip("-")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--bundle", type=Path, help="an exported bundle (default: train and export one)")
    p.add_argument("--rounds", type=int, default=40, help="timed calls per variant per speed run")
    p.add_argument("--threads", type=int, default=2, help="inference threads (the published runs used 2)")
    p.add_argument("--soak-frames", type=int, default=5000)
    p.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    if args.bundle is None:
        from onnx_variants import prepare_bundle

        args.bundle = prepare_bundle(args.data, None)
    env = environment()
    targets = build_targets([args.bundle], [parse_backend("onnxruntime")], [args.threads], max_batch=1)
    targets.sort(key=lambda t: t.baseline, reverse=True)  # torch first, as in the published table
    metrics = accuracy(targets, args.data)
    runs = speed_twice(targets, args.rounds, args.data)
    rows, records = compare(json.loads(PUBLISHED.read_text()), metrics, runs)
    fastest = min((r for r in records if r["variant"].startswith("int8-cpu") or r["variant"] == "fp32"),
                  key=lambda r: r["median_ms_runs"][1])
    camera = camera_targets(next(Path(t.artefact) for t in targets if t.variant == fastest["variant"]), args.data,
                            args.threads, soak_frames=args.soak_frames)

    speed_head = ["variant", "image AUROC (published)", "pixel AUROC (published)", "PRO (published)",
                  "median ms run 1 / run 2 (published)", "rerun diff", "p99/p50", "vs torch (published)",
                  "vs fp32 (published)"]
    peer_head = ["model", "data", "CPU", "image AUROC", "pixel AUROC", "CPU frames/s (batch 1)"]
    text = "\n\n".join([
        f"Machine: {env['cpu']}, {env['usable_cores']} cores, load average {env['load_average']} at the end; "
        f"packages {env['packages']}. Published numbers: {json.loads(PUBLISHED.read_text())['machine']['cpu']}.",
        format_table(speed_head, rows),
        f"Camera loop targets ({fastest['variant']}, {args.threads} thread(s), 640x480 frames):\n"
        + camera_table(camera),
        "Peers' published numbers (PEERS.md §3) - other CPUs, other data scope:\n"
        + format_table(peer_head, peers_table(records, env["cpu"]))])
    print(text)
    slug = cpu_slug(env)
    write_json(args.out_dir / f"reproduce_{slug}.json",
               {"dfr_edge": __version__, "environment": env, "bundle": str(args.bundle), "data": str(args.data),
                "threads": args.threads, "rounds": args.rounds, "variants": records, "camera": camera})
    write_text_atomic(args.out_dir / f"reproduce_{slug}.md", "```\n" + text + "\n```\n")
    print(f"written to {args.out_dir}/reproduce_{slug}.json and .md")


if __name__ == "__main__":
    main()
