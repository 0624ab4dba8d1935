"""Speed and accuracy of every artefact of one model, side by side (issue: ONNX export + runtime).

    python benchmarks/onnx_variants.py [--data ../shared/datasets/mvtec_ad/bottle] [--bundle DIR]

Without --bundle it trains the default model on --data into runs/benchmarks/bottle and exports
FP32, FP16 and both INT8 flavours. Latency: batch 1, 256x256 real test images, model only (no
decode/resize), every variant run once per round in turn (interleaved, so machine noise hits all
alike), 2 threads each, ONNX Runtime thread spinning off so one session's idle threads do not
steal the next one's cores. Medians and p90 over the rounds. Accuracy: the full test set through
the same evaluation as dfr-eval. Prints a table and writes benchmarks/results/onnx_variants.json.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from dfr_edge import __version__
from dfr_edge.bundle import load_bundle, save_bundle
from dfr_edge.config import TrainConfig
from dfr_edge.data.mvtec import load_test_arrays, open_dataset
from dfr_edge.evaluate import evaluate
from dfr_edge.export.int8 import FLAVOURS
from dfr_edge.export.pipeline import FP16_FILE, FP32_FILE, ExportOptions, export_bundle
from dfr_edge.geometry import Geometry
from dfr_edge.predict import predict_torch
from dfr_edge.report import format_table, machine_info, write_json
from dfr_edge.trainer import train

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "datasets" / "mvtec_ad" / "bottle"
THREADS = 2
VARIANT_FILES = {"onnx fp32": FP32_FILE, "onnx fp16": FP16_FILE,
                 **{f"onnx int8-{f.name}": f.filename for f in FLAVOURS.values()}}


def ort_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_runner(session: ort.InferenceSession):
    return lambda images: tuple(session.run(None, {"image": images}))


def prepare_bundle(data: Path, bundle: Path | None) -> Path:
    if bundle is not None:
        missing = [name for name in VARIANT_FILES.values() if not (bundle / name).is_file()]
        if missing:
            raise SystemExit(f"{bundle} lacks {missing}: run dfr-export {bundle} --fp16 --int8 first")
        return bundle
    bundle = Path("runs/benchmarks/bottle")
    save_bundle(train(TrainConfig(), open_dataset(data)), bundle, data, force=True)
    export_bundle(load_bundle(bundle), ExportOptions(fp16=True, int8=True, force=True))
    return bundle


def time_side_by_side(runners: dict, images: np.ndarray, rounds: int, warmup: int = 5) -> dict[str, np.ndarray]:
    for run in runners.values():
        for i in range(warmup):
            run(images[i % len(images)][None])
    times = {name: [] for name in runners}
    for r in range(rounds):
        batch = images[r % len(images)][None]
        for name, run in runners.items():
            start = time.perf_counter()
            run(batch)
            times[name].append(time.perf_counter() - start)
    return {name: np.array(t) * 1000.0 for name, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--bundle", type=Path, help="an exported bundle (default: train and export one)")
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--out", type=Path, default=HERE / "results" / "onnx_variants.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(THREADS)

    bundle_dir = prepare_bundle(args.data, args.bundle)
    bundle = load_bundle(bundle_dir)
    test = load_test_arrays(open_dataset(args.data), Geometry.from_manifest(bundle.manifest))
    sessions = {name: ort_session(bundle_dir / file) for name, file in VARIANT_FILES.items()}

    def run_torch(images: np.ndarray):
        with torch.inference_mode():
            return tuple(t.numpy() for t in bundle.model(torch.from_numpy(images)))

    runners = {"torch eager": run_torch}
    runners.update({name: ort_runner(s) for name, s in sessions.items()})
    times = time_side_by_side(runners, test.images, args.rounds)

    torch_maps, _ = predict_torch(bundle.model, test.images)
    fp32_maps = evaluate(runners["onnx fp32"], test).maps
    map_error = float(np.abs(fp32_maps - torch_maps).max() / (torch_maps.max() - torch_maps.min()))

    results = []
    for name, run in runners.items():
        metrics = evaluate(run, test).metrics.to_dict()
        results.append({"variant": name, "median_ms": float(np.median(times[name])),
                        "p90_ms": float(np.percentile(times[name], 90)), **metrics})
    base = {r["variant"]: r for r in results}
    ort_fp32, torch_row = base["onnx fp32"], base["torch eager"]
    rows = []
    for r in results:
        r["speedup_vs_onnx_fp32"] = ort_fp32["median_ms"] / r["median_ms"]
        r["speedup_vs_torch"] = torch_row["median_ms"] / r["median_ms"]
        r["delta_vs_fp32"] = {k: r[k] - ort_fp32[k] for k in ("image_auroc", "pixel_auroc", "pro")}
        rows.append([r["variant"], round(r["median_ms"], 2), round(r["p90_ms"], 2),
                     f"{r['speedup_vs_torch']:.2f}x", f"{r['speedup_vs_onnx_fp32']:.2f}x",
                     r["image_auroc"], r["pixel_auroc"], r["pro"],
                     f"{r['delta_vs_fp32']['pixel_auroc']:+.4f}", f"{r['delta_vs_fp32']['pro']:+.4f}"])
    print(format_table(["variant", "median ms", "p90 ms", "vs torch", "vs onnx fp32", "image AUROC",
                        "pixel AUROC", "PRO", "d pixel", "d PRO"], rows))
    print(f"\nONNX FP32 vs torch over {len(test.images)} test images: max |map error| = "
          f"{map_error:.2e} of the map range")
    write_json(args.out, {"dfr_edge": __version__, "machine": machine_info(), "data": str(args.data),
                          "bundle": str(bundle_dir), "batch": 1, "threads": THREADS, "rounds": args.rounds,
                          "onnx_fp32_vs_torch_map_error_relative": map_error, "results": results})
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
