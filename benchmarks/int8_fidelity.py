"""Does the label-free fidelity check agree with the labelled metrics, and does mixed precision fix INT8?

    python benchmarks/int8_fidelity.py --set bottle=BUNDLE:DATA [--set NAME=BUNDLE:DATA ...]

For every set (a trained bundle with model.onnx, and its MVTec-layout data): calibrate once (minmax,
percentile, entropy from one pass), then for both INT8 flavours score against FP32 on the test set
(pixel AUROC, PRO, image AUROC, and the share of good test parts rejected at the graph's own image threshold,
which the written graph carries, and at FP32's) and with the fidelity check on the bundle's held-out normal images:
full INT8 with each calibration method (and minmax at 7-bit weights for the CPU flavour), every trial of the sensitivity search (one unit int8 at a time,
then the greedy float sets) and the chosen mixed-precision graph, whose speed is timed against FP32 (batch
1, 2 threads, interleaved rounds). The verdict of the check (within --fidelity-budget or not) is compared
with the labelled target (loses <= 0.005 pixel AUROC and <= 0.01 PRO). The TensorRT flavour is scored and
checked with its integer maths as written (fidelity.graph_runner, exact), the CPU flavour with ONNX Runtime's
kernels that run it. Prints the tables and writes
benchmarks/results/int8_fidelity.json. The CPU flavour's search runs at 8-bit and at 7-bit weights (int8.py);
every trial of both is a row.

Timing needs a quiet machine, the accuracy part only time: `--rounds 0` skips the timing, and `--speed-only`
runs just the search (no test set, no calibration-method comparison) and times what it chose, on the held-out
images.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx_variants import HERE, ort_runner, ort_session, time_side_by_side
from scipy.stats import spearmanr

from dfr_edge.bundle import load_bundle
from dfr_edge.data.mvtec import load_test_arrays, open_dataset
from dfr_edge.evaluate import evaluate
from dfr_edge.export import fidelity
from dfr_edge.export.calibration import CALIB_METHODS
from dfr_edge.export.fidelity import FidelityBudget
from dfr_edge.export.int8 import FLAVOURS, int8_source, quantize_int8
from dfr_edge.export.pipeline import ExportOptions, int8_images
from dfr_edge.export.sensitivity import mixed_int8
from dfr_edge.geometry import Geometry
from dfr_edge.report import format_table, machine_info, write_json

MAX_PIXEL_DROP, MAX_PRO_DROP = 0.005, 0.01


def labelled_ok(deltas: dict) -> bool:
    return deltas["pixel_auroc"] >= -MAX_PIXEL_DROP and deltas["pro"] >= -MAX_PRO_DROP


def variant_name(method: str, weight_bits: int, float_units: tuple[str, ...]) -> str:
    name = method if weight_bits == 8 else f"{method}, {weight_bits}-bit weights"
    return f"{name}, float {','.join(float_units)}" if float_units else f"full int8, {name}"


def run_set(name: str, bundle_dir: Path, data: Path, budget: FidelityBudget, rounds: int,
            speed_only: bool = False) -> dict:
    bundle = load_bundle(bundle_dir)
    fp32 = onnx.load(bundle_dir / "model.onnx")
    calib, held_out = int8_images(bundle, ExportOptions(int8=True))
    ref = fidelity.reference(fp32, held_out.images, fidelity.NormalThresholds.from_manifest(bundle.manifest))
    test = None if speed_only else load_test_arrays(open_dataset(data), Geometry.from_manifest(bundle.manifest))

    stored_image = bundle.manifest["thresholds"]["image"]

    def labelled(model: onnx.ModelProto, image_threshold: float, exact: bool = False) -> dict:
        """The metrics, and the share of good test parts rejected (what AUROC misses) at the graph's own image
        threshold and at FP32's; `exact`: the integer maths as written (the TensorRT flavour: what TensorRT
        computes)."""
        result = evaluate(fidelity.graph_runner(model, exact), test)
        good = result.scores[~test.labels]
        return {**result.metrics.to_dict(), "good_rejected": float(np.mean(good > image_threshold)),
                "good_rejected_at_fp32_threshold": float(np.mean(good > stored_image))}

    base = None if speed_only else labelled(fp32, stored_image)
    rows: list[dict] = []

    def add(flavour: str, variant: str, model: onnx.ModelProto, fid: fidelity.Fidelity | None = None) -> None:
        exact = FLAVOURS[flavour].exact_check
        fid = fid or fidelity.measure(ref, model, exact)
        metrics = labelled(model, fid.thresholds.image, exact)
        deltas = {k: metrics[k] - base[k] for k in base}
        rows.append({"set": name, "flavour": flavour, "variant": variant, **metrics, "deltas": deltas,
                     "fidelity": fid.to_dict(), "fidelity_ok": fid.within(budget), "labelled_ok": labelled_ok(deltas)})
        print(f"  {flavour:8s} {variant:40s} d pixel {deltas['pixel_auroc']:+.4f} d PRO {deltas['pro']:+.4f} "
              f"map shift {fid.map_shift:.3f} score shift {fid.score_shift:.3f} good rejected "
              f"{metrics['good_rejected']:.2f} ({metrics['good_rejected_at_fp32_threshold']:.2f} at FP32's)", flush=True)

    started = time.perf_counter()
    chosen = {}
    with int8_source(fp32, calib.images) as source:
        calibrate_s = time.perf_counter() - started
        for flavour in FLAVOURS.values():
            if not speed_only:
                for method, bits in [(m, 8) for m in CALIB_METHODS] + [("minmax", b) for b in flavour.weight_bits[1:]]:
                    add(flavour.name, variant_name(method, bits, ()), quantize_int8(source, flavour, method, (), bits))
            result = mixed_int8(source, flavour, "minmax", ref, budget, "auto")
            for search in result.searches if not speed_only else ():
                for trial in search.trials:
                    if trial.float_units:  # full int8 is scored above
                        add(flavour.name, variant_name("minmax", search.weight_bits, trial.float_units),
                            result.models[search.weight_bits, trial.float_units], trial.fidelity)
            chosen[flavour.name] = result
    speed = _speed(fp32, {f: r.model for f, r in chosen.items()}, held_out.images, rounds) if rounds else {}
    return {"set": name, "bundle": str(bundle_dir), "data": str(data), "fp32": base, "calibrate_s": calibrate_s,
            "calibration_images": len(calib.paths), "held_out": held_out.record(), "rows": rows,
            "chosen": {f: {**r.choice.to_dict(), "speed": speed.get(f)} for f, r in chosen.items()},
            "fp32_median_ms": speed["fp32"]["median_ms"] if speed else None}


def _speed(fp32: onnx.ModelProto, models: dict[str, onnx.ModelProto], images: np.ndarray, rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"fp32": Path(tmp) / "fp32.onnx"}
        onnx.save(fp32, paths["fp32"])
        for name, model in models.items():
            paths[name] = Path(tmp) / f"{name}.onnx"
            onnx.save(model, paths[name])
        runners = {name: ort_runner(ort_session(path)) for name, path in paths.items()}
        times = time_side_by_side(runners, images, rounds)
    base = float(np.median(times["fp32"]))
    return {name: {"median_ms": float(np.median(t)), "speedup_vs_fp32": base / float(np.median(t))}
            for name, t in times.items()}


def print_verdicts(rows: list[dict]) -> dict:
    """The table of every graph, and how well the check's verdicts agree with the labelled target."""
    print(format_table(
        ["set", "flavour", "variant", "d pixel AUROC", "d PRO", "d image AUROC", "map shift", "score shift",
         "pixel FPR (FP32)", "image FPR (FP32)", "good test parts rejected: own thresholds, FP32's (FP32 graph)",
         "fidelity ok", "labelled ok"],
        [[r["set"], r["flavour"], r["variant"],
          f"{r['deltas']['pixel_auroc']:+.4f}", f"{r['deltas']['pro']:+.4f}", f"{r['deltas']['image_auroc']:+.4f}",
          f"{r['fidelity']['map_shift']:.3f}", f"{r['fidelity']['score_shift']:.3f}",
          f"{r['fidelity']['pixel_fpr']:.4f} ({r['fidelity']['pixel_fpr_fp32']:.4f})",
          f"{r['fidelity']['image_fpr']:.3f} ({r['fidelity']['image_fpr_fp32']:.3f})",
          (f"{r['good_rejected']:.3f}, {r['good_rejected_at_fp32_threshold']:.3f} "
           f"({r['good_rejected'] - r['deltas']['good_rejected']:.3f})"),
          r["fidelity_ok"], r["labelled_ok"]] for r in rows]))
    agree = sum(r["fidelity_ok"] == r["labelled_ok"] for r in rows)
    losses = [-r["deltas"]["pixel_auroc"] for r in rows]
    rank = {m: spearmanr([r["fidelity"][m] for r in rows], losses).statistic for m in ("map_shift", "score_shift")}
    print(f"\nverdicts agree on {agree}/{len(rows)} graphs; Spearman with the pixel AUROC loss: map shift "
          f"{rank['map_shift']:.3f}, score shift {rank['score_shift']:.3f}")
    return {"verdicts_agree": agree, "graphs": len(rows), "spearman_map_shift_vs_pixel_loss": rank["map_shift"],
            "spearman_score_shift_vs_pixel_loss": rank["score_shift"]}


def labelled_set(text: str) -> tuple[str, Path, Path]:
    """NAME=BUNDLE:DATA -> (name, bundle folder, data folder)."""
    name, _, paths = text.partition("=")
    bundle, _, data = paths.partition(":")
    if not (name and bundle and data):
        raise argparse.ArgumentTypeError(f"--set {text!r}: expected NAME=BUNDLE:DATA")
    return name, Path(bundle), Path(data)


def add_set_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", required=True, type=labelled_set, metavar="NAME=BUNDLE:DATA",
                   help="a trained bundle (with model.onnx) and its MVTec-layout data folder")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_set_option(p)
    p.add_argument("--fidelity-budget", type=float, default=fidelity.DEFAULT_MAP_SHIFT)
    p.add_argument("--score-budget", type=float, default=fidelity.DEFAULT_SCORE_SHIFT)
    p.add_argument("--rounds", type=int, default=30, help="timed rounds; 0 skips the timing")
    p.add_argument("--speed-only", action="store_true", help="only the search and the timing (no labelled rows)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "int8_fidelity.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    budget = FidelityBudget(args.fidelity_budget, args.score_budget)
    sets = []
    for name, bundle, data in args.set:
        print(f"{name}:", flush=True)
        sets.append(run_set(name, bundle, data, budget, args.rounds, args.speed_only))

    rows = [r for s in sets for r in s["rows"]]
    record = {"machine": machine_info(), "budget": vars(budget), "targets": {
        "max_pixel_auroc_drop": MAX_PIXEL_DROP, "max_pro_drop": MAX_PRO_DROP}, "sets": sets}
    if rows:
        record.update(print_verdicts(rows))
    print(format_table(["set", "flavour", "weight bits", "float units", "map shift", "score shift", "median ms",
                        "vs FP32"],
                       [[s["set"], f, c["weight_bits"], ",".join(c["float_units"]) or "-",
                         f"{c['fidelity']['map_shift']:.3f}", f"{c['fidelity']['score_shift']:.3f}",
                         f"{c['speed']['median_ms']:.2f}" if c["speed"] else "-",
                         f"{c['speed']['speedup_vs_fp32']:.2f}x" if c["speed"] else "-"]
                        for s in sets for f, c in s["chosen"].items()]))
    write_json(args.out, record)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
