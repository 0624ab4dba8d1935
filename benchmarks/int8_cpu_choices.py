"""Which INT8 graph is fastest on ONNX Runtime CPU without losing accuracy (how CPU_FLAVOUR was chosen).

    python benchmarks/int8_cpu_choices.py [--bundle DIR] [--data ../shared/datasets/mvtec_ad/bottle]

Quantizes one FP32 export several ways (format, activation type, which ops, stem float or not),
times all of them side by side against FP32 (batch 1, 2 threads, interleaved rounds) and scores
each on the test set. --bundle defaults to the one onnx_variants.py trains (runs/benchmarks/bottle).
Prints a table and writes benchmarks/results/int8_cpu_choices.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
from onnx_variants import DEFAULT_DATA, HERE, ort_runner, ort_session, time_side_by_side
from onnxruntime.quantization import QuantFormat, QuantType

from dfr_edge.bundle import load_bundle
from dfr_edge.data.mvtec import load_test_arrays, open_dataset
from dfr_edge.evaluate import evaluate
from dfr_edge.export.int8 import (
    CPU_FLAVOUR,
    FLOAT_PREFIXES,
    TENSORRT_FLAVOUR,
    calibration_set,
    int8_source,
    quantize_int8,
)
from dfr_edge.export.onnx_fp32 import to_onnx
from dfr_edge.export.pipeline import training_images
from dfr_edge.geometry import Geometry
from dfr_edge.report import format_table, machine_info, write_json

WITH_STEM = tuple(p for p in FLOAT_PREFIXES if "stem" not in p)
CHOICES = {
    "Q/DQ S8S8 symmetric (TensorRT flavour), stem int8": dataclasses.replace(TENSORRT_FLAVOUR, float_prefixes=WITH_STEM),
    "Q/DQ U8S8, Conv only (ReLU6 float)": dataclasses.replace(
        CPU_FLAVOUR, quant_format=QuantFormat.QDQ, quantized_ops=("Conv",), float_prefixes=WITH_STEM),
    "QOperator U8S8, Conv only (ReLU6 float)": dataclasses.replace(
        CPU_FLAVOUR, quantized_ops=("Conv",), float_prefixes=WITH_STEM),
    "Q/DQ U8S8, Conv+Clip+Relu+Add": dataclasses.replace(CPU_FLAVOUR, quant_format=QuantFormat.QDQ,
                                                        float_prefixes=WITH_STEM),
    "QOperator S8S8, Conv+Clip+Relu+Add": dataclasses.replace(
        CPU_FLAVOUR, activation_type=QuantType.QInt8, float_prefixes=WITH_STEM),
    "QOperator U8S8, Conv+Clip+Relu+Add, stem int8": dataclasses.replace(CPU_FLAVOUR, float_prefixes=WITH_STEM),
    "QOperator U8S8, Conv+Clip+Relu+Add, stem float (CPU flavour)": CPU_FLAVOUR,
    "QOperator U8S8, per-tensor weights": dataclasses.replace(CPU_FLAVOUR, per_channel=False),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, default=Path("runs/benchmarks/bottle"))
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--calib-count", type=int, default=256)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--out", type=Path, default=HERE / "results" / "int8_cpu_choices.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bundle = load_bundle(args.bundle)
    height, width = bundle.manifest["input"]["height"], bundle.manifest["input"]["width"]
    fp32 = to_onnx(bundle.model, (height, width))
    geometry = Geometry.from_manifest(bundle.manifest)
    calib = calibration_set(training_images(bundle), args.calib_count, 0, geometry)
    test = load_test_arrays(open_dataset(args.data), geometry)

    tmp = Path(tempfile.mkdtemp(prefix="int8_choices_"))
    files = {"FP32": tmp / "fp32.onnx"}
    fp32_bytes = fp32.SerializeToString()
    files["FP32"].write_bytes(fp32_bytes)
    with int8_source(fp32, calib.images) as source:  # calibrated once for every choice
        for i, (name, flavour) in enumerate(CHOICES.items()):
            files[name] = tmp / f"choice{i}.onnx"
            files[name].write_bytes(quantize_int8(source, flavour, "minmax").SerializeToString())
    sessions = {name: ort_session(path) for name, path in files.items()}
    runners = {name: ort_runner(s) for name, s in sessions.items()}
    times = time_side_by_side(runners, test.images, args.rounds)

    base = float(np.median(times["FP32"]))
    results = []
    for name, run in runners.items():
        metrics = evaluate(run, test).metrics.to_dict()
        results.append({"graph": name, "median_ms": float(np.median(times[name])),
                        "speedup_vs_fp32": base / float(np.median(times[name])), **metrics})
    print(format_table(["graph", "median ms", "vs FP32", "image AUROC", "pixel AUROC", "PRO"],
                       [[r["graph"], round(r["median_ms"], 2), f"{r['speedup_vs_fp32']:.2f}x", r["image_auroc"],
                         r["pixel_auroc"], r["pro"]] for r in results]))
    write_json(args.out, {"machine": machine_info(), "bundle": str(args.bundle), "calibration_images": len(calib.paths),
                          "rounds": args.rounds, "results": results})
    shutil.rmtree(tmp)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
