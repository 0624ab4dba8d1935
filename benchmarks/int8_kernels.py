"""INT8 through ONNX Runtime's fused CPU kernels against the same graph's integer maths as written.

    python benchmarks/int8_kernels.py --set NAME=BUNDLE:DATA [--set NAME=BUNDLE:DATA ...]

For every set (a trained bundle with model.onnx, and its MVTec-layout data): calibrate on the bundle's
normal images as dfr-export does, quantize both flavours at full INT8 (minmax, 8-bit weights), and score
each graph on the test set twice: with ONNX Runtime's fused integer kernels (what runs the CPU flavour),
and exactly as written, graph optimizations off (every DequantizeLinear -> float op -> QuantizeLinear
computed literally: what TensorRT computes with int32 sums). The CPU flavour's QOperator graph is integer
kernels whatever the optimization level, so its quantization grid (uint8 activations, int8 per-channel
weights, the same ranges) is also written as Q/DQ ("int8-cpu-grid-qdq") to be computed exactly. Where
fused and exact differ, the kernels are the cause: on x86 without VNNI they sum pairs of uint8 x int8
products in 16 bits and saturate. Also the
median score of the held-out normal images, which shows a shift of the whole map. Prints a table and
writes benchmarks/results/int8_kernels.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import numpy as np
import onnx
from int8_fidelity import HERE, add_set_option
from onnxruntime.quantization import QuantFormat

from dfr_edge.bundle import load_bundle
from dfr_edge.data.mvtec import load_test_arrays, open_dataset
from dfr_edge.evaluate import evaluate
from dfr_edge.export.fidelity import graph_runner
from dfr_edge.export.int8 import CPU_FLAVOUR, FLAVOURS, int8_source, quantize_int8
from dfr_edge.export.pipeline import ExportOptions, int8_images
from dfr_edge.geometry import Geometry
from dfr_edge.report import format_table, machine_info, write_json

ARITHMETIC = {"fused kernels": False, "exact": True}
CPU_GRID_AS_QDQ = dataclasses.replace(CPU_FLAVOUR, name="cpu-grid-qdq", quant_format=QuantFormat.QDQ)


def run_set(name: str, bundle_dir: Path, data: Path) -> list[dict]:
    bundle = load_bundle(bundle_dir)
    fp32 = onnx.load(bundle_dir / "model.onnx")
    calib, held_out = int8_images(bundle, ExportOptions(int8=True))
    test = load_test_arrays(open_dataset(data), Geometry.from_manifest(bundle.manifest))

    def scored(model: onnx.ModelProto, exact: bool) -> dict:
        run = graph_runner(model, exact)
        normal_scores = run(held_out.images)[1]
        return {**evaluate(run, test).metrics.to_dict(), "held_out_median_score": float(np.median(normal_scores))}

    rows = []
    with int8_source(fp32, calib.images) as source:
        graphs = {"fp32": fp32, **{f"int8-{f.name}": quantize_int8(source, f, "minmax") for f in FLAVOURS.values()},
                  "int8-cpu-grid-qdq": quantize_int8(source, CPU_GRID_AS_QDQ, "minmax")}
        for arithmetic, exact in ARITHMETIC.items():
            base = scored(fp32, exact)
            for graph, model in graphs.items():
                metrics = base if graph == "fp32" else scored(model, exact)
                rows.append({"set": name, "graph": graph, "arithmetic": arithmetic, **metrics,
                             "deltas": {k: metrics[k] - base[k] for k in ("pixel_auroc", "pro", "image_auroc")}})
                print(f"  {graph:14s} {arithmetic:13s} d pixel {rows[-1]['deltas']['pixel_auroc']:+.4f} "
                      f"d PRO {rows[-1]['deltas']['pro']:+.4f} held-out median score "
                      f"{metrics['held_out_median_score']:.3f}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_set_option(p)
    p.add_argument("--out", type=Path, default=HERE / "results" / "int8_kernels.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    for name, bundle, data in args.set:
        print(f"{name}:", flush=True)
        rows += run_set(name, bundle, data)
    print(format_table(["set", "graph", "arithmetic", "d pixel AUROC", "d PRO", "held-out median score"],
                       [[r["set"], r["graph"], r["arithmetic"], f"{r['deltas']['pixel_auroc']:+.4f}",
                         f"{r['deltas']['pro']:+.4f}", f"{r['held_out_median_score']:.3f}"] for r in rows]))
    write_json(args.out, {"machine": machine_info(), "rows": rows})
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
