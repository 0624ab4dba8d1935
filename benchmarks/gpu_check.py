"""One check of every GPU path on an NVIDIA machine: build, compare with ONNX Runtime CPU, time, report.

    benchmarks/gpu_check.sh [--data DIR] [--bundle DIR] [--large-batch 64] [--iters 50]

Whatever is installed runs: the torch CUDA backend (FP32 and FP16 autocast, with and without
CUDA graphs) always, ONNX Runtime CUDA with onnxruntime-gpu, and the native TensorRT backend with
`tensorrt` + a CUDA binding (engines for FP32, FP16 and INT8 built first). Each backend's maps and
scores on the real test images are compared with ONNX Runtime CPU running the ONNX variant of the
same precision (per-precision tolerance on the map error relative to the map range, and on the
metric deltas); then batch 1 and a large batch are timed (p50/p99 wall time per call, GPU time
from CUDA events). Writes benchmarks/results/gpu_check-<gpu>.json, prints a table, exits 1 on
any mismatch or failure, 2 when there is no usable NVIDIA GPU. Without --bundle it trains a
short model on --data (MVTec bottle by default; a generated dataset if that is not there).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dfr_edge import __version__
from dfr_edge.metrics import compute_metrics
from dfr_edge.report import format_table, machine_info, write_json

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "datasets" / "mvtec_ad" / "bottle"
VARIANTS = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
# Largest map error relative to the reference map range, and largest metric drop, per precision.
MAP_TOLERANCE = {"fp32": 1e-3, "fp16": 3e-2, "int8": 1e-1}
METRIC_TOLERANCE = {"fp32": 0.002, "fp16": 0.01, "int8": 0.02}


@dataclass
class Check:
    backend: str
    precision: str
    status: str = "ok"  # ok | mismatch | failed | skipped
    reason: str = ""
    map_rel_error: float | None = None
    score_max_abs: float | None = None
    metric_deltas: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)  # "b1" / "b64" -> latency stats


def compare(precision: str, reference: tuple[np.ndarray, np.ndarray, dict], maps: np.ndarray, scores: np.ndarray,
            masks: np.ndarray, check: Check) -> Check:
    """Fill the accuracy fields of `check` and mark it a mismatch when outside the tolerances."""
    ref_maps, ref_scores, ref_metrics = reference
    scale = max(float(ref_maps.max() - ref_maps.min()), 1e-12)
    if not np.isfinite(maps).all() or not np.isfinite(scores).all():
        check.status, check.reason = "mismatch", "NaN/Inf in the outputs"
        return check
    check.map_rel_error = float(np.abs(maps - ref_maps).max()) / scale
    check.score_max_abs = float(np.abs(scores - ref_scores).max())
    metrics = compute_metrics(maps, scores, masks).to_dict()
    check.metric_deltas = {k: metrics[k] - ref_metrics[k] for k in ref_metrics}
    problems = []
    if check.map_rel_error > MAP_TOLERANCE[precision]:
        problems.append(f"map error {check.map_rel_error:.3g} of the range > {MAP_TOLERANCE[precision]}")
    worst = max((abs(v) for v in check.metric_deltas.values()), default=0.0)
    if worst > METRIC_TOLERANCE[precision]:
        problems.append(f"metric delta {worst:.4f} > {METRIC_TOLERANCE[precision]}")
    if problems:
        check.status, check.reason = "mismatch", "; ".join(problems)
    return check


def latency_stats(wall_ms: list[float], gpu_ms: list[float], batch: int) -> dict:
    wall = np.asarray(wall_ms)
    stats = {"batch": batch, "p50_ms": float(np.percentile(wall, 50)), "p99_ms": float(np.percentile(wall, 99)),
             "images_per_s": batch * 1e3 / float(np.percentile(wall, 50)), "iters": len(wall_ms)}
    if gpu_ms:
        stats["gpu_p50_ms"] = float(np.percentile(gpu_ms, 50))
    return stats


def time_backend(backend, batch: np.ndarray, iters: int, warmup: int = 5) -> dict:
    for _ in range(warmup):
        backend.infer(batch)
    wall, gpu = [], []
    for _ in range(iters):
        start = time.perf_counter()
        backend.infer(batch)
        wall.append((time.perf_counter() - start) * 1e3)
        if getattr(backend, "last_gpu_ms", None) is not None:
            gpu.append(backend.last_gpu_ms)
    return latency_stats(wall, gpu, len(batch))


def probe() -> dict:
    """Which GPU paths this machine has."""
    found = {"torch_cuda": False, "ort_cuda": False, "tensorrt": None, "cuda_binding": None}
    try:
        import torch

        found["torch_cuda"] = torch.cuda.is_available()
        if found["torch_cuda"]:
            found["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    try:
        import onnxruntime

        found["ort_cuda"] = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    except ImportError:
        pass
    try:
        import tensorrt

        found["tensorrt"] = tensorrt.__version__
    except ImportError:
        pass
    try:
        from dfr_edge.runtime.cuda import load_cuda

        cuda = load_cuda()
        found["cuda_binding"] = cuda.name
        found["gpu"] = cuda.device_info().name
    except (ImportError, RuntimeError):
        pass
    return found


def prepare(args: argparse.Namespace) -> tuple[Path, Path]:
    """A bundle with all three ONNX variants, and the MVTec-layout data to test it on."""
    from dfr_edge.export.tensorrt import ensure_variant

    data = args.data
    if not data.is_dir():
        from dfr_edge.data.synthetic import SyntheticSpec, generate_dataset

        print(f"{data} not found: using a generated dataset")
        data = generate_dataset(args.work / "data", SyntheticSpec())
    bundle = args.bundle
    if bundle is None:
        from dfr_edge.bundle import save_bundle
        from dfr_edge.config import TrainConfig
        from dfr_edge.data.mvtec import open_dataset
        from dfr_edge.trainer import train

        bundle = args.work / "bundle"
        if not (bundle / "dfr.json").is_file():
            save_bundle(train(TrainConfig(steps=args.steps), open_dataset(data)), bundle, data, force=True)
    for precision in VARIANTS:
        ensure_variant(bundle, precision)
    return bundle, data


def backends(bundle: Path, found: dict, large_batch: int) -> list[tuple[str, str, Callable]]:
    """(label, precision, factory) for every backend this machine can run."""
    from dfr_edge.runtime.onnxrt import OnnxRuntimeBackend
    from dfr_edge.runtime.torch_backend import TorchBackend

    items = []
    if found["torch_cuda"]:
        for fp16 in (False, True):
            for graphs in (False, True):
                label = f"torch-cuda{'-fp16' if fp16 else ''}{'+graphs' if graphs else ''}"
                items.append((label, "fp16" if fp16 else "fp32", lambda f=fp16, g=graphs: TorchBackend(
                    bundle, device="cuda", fp16=f, channels_last=True, cuda_graphs=g, time_gpu=True)))
    if found["ort_cuda"]:
        for precision in ("fp32", "fp16"):
            items.append((f"ort-cuda-{precision}", precision,
                          lambda p=precision: OnnxRuntimeBackend(bundle / VARIANTS[p], provider="cuda")))
    if found["tensorrt"] and found["cuda_binding"]:
        from dfr_edge.export.tensorrt import EngineOptions, build_engine
        from dfr_edge.runtime.tensorrt.runner import TensorRTBackend

        def engine_backend(precision: str, graphs: bool) -> TensorRTBackend:
            options = EngineOptions(precision=precision, max_batch=large_batch, opt_batch=large_batch)
            return TensorRTBackend(build_engine(bundle, options).path, cuda_graphs=graphs, time_gpu=True)

        for precision in VARIANTS:
            for graphs in (False, True):
                items.append((f"tensorrt-{precision}{'+graphs' if graphs else ''}", precision,
                              lambda p=precision, g=graphs: engine_backend(p, g)))
    return items


def run(args: argparse.Namespace) -> int:
    found = probe()
    print("found:", found)
    if not (found["torch_cuda"] or found["ort_cuda"] or found["cuda_binding"]):
        print("error: no usable NVIDIA GPU: torch.cuda, onnxruntime-gpu and the CUDA bindings all report none",
              file=sys.stderr)
        return 2
    from dfr_edge.data.mvtec import load_test_arrays, open_dataset
    from dfr_edge.evaluate import run_predictor
    from dfr_edge.geometry import Geometry
    from dfr_edge.runtime.onnxrt import OnnxRuntimeBackend

    bundle, data = prepare(args)
    meta = json.loads((bundle / "dfr.json").read_text())
    test = load_test_arrays(open_dataset(data), Geometry.from_manifest(meta))  # stretch: model-size images
    references = {}
    for precision, name in VARIANTS.items():  # ONNX Runtime CPU on the same ONNX: the reference
        maps, scores, _ = run_predictor(OnnxRuntimeBackend(bundle / name).infer, test.images)
        references[precision] = (maps, scores, compute_metrics(maps, scores, test.masks).to_dict())
    rng = np.random.default_rng(0)
    large = test.images[rng.integers(0, len(test.images), args.large_batch)]
    checks = []
    for label, precision, factory in backends(bundle, found, args.large_batch):
        check = Check(label, precision)
        try:
            backend = factory()
            maps, scores, _ = run_predictor(backend.infer, test.images)
            compare(precision, references[precision], maps, scores, test.masks, check)
            check.timings = {"b1": time_backend(backend, test.images[:1], args.iters),
                             f"b{args.large_batch}": time_backend(backend, large, max(5, args.iters // 5))}
        except Exception as exc:  # noqa: BLE001 - every failure is reported, then the run fails loudly
            check.status, check.reason = "failed", f"{type(exc).__name__}: {exc}"
        checks.append(check)
        print(f"{label}: {check.status} {check.reason}")
    return report(args, found, checks)


def report(args: argparse.Namespace, found: dict, checks: list[Check]) -> int:
    rows = []
    for c in checks:
        b1, bl = c.timings.get("b1", {}), c.timings.get(f"b{args.large_batch}", {})
        rows.append([c.backend, c.status, _fmt(c.map_rel_error, ".2g"), _fmt(c.score_max_abs, ".2g"),
                     _fmt(min(c.metric_deltas.values(), default=None), "+.4f"), _fmt(b1.get("p50_ms"), ".3f"),
                     _fmt(b1.get("p99_ms"), ".3f"), _fmt(b1.get("gpu_p50_ms"), ".3f"),
                     _fmt(bl.get("images_per_s"), ".0f")])
    print(format_table(["backend", "status", "map err/range", "score err", "worst metric delta", "b1 p50 ms",
                        "b1 p99 ms", "b1 GPU ms", f"b{args.large_batch} img/s"], rows))
    gpu = re.sub(r"[^a-z0-9]+", "-", str(found.get("gpu", "gpu")).lower()).strip("-")
    out = args.out or HERE / "results" / f"gpu_check-{gpu}.json"
    write_json(out, {"dfr_edge": __version__, "machine": machine_info(), "found": found,
                     "tolerances": {"map": MAP_TOLERANCE, "metrics": METRIC_TOLERANCE},
                     "checks": [asdict(c) for c in checks]})
    print(f"wrote {out}")
    bad = [c for c in checks if c.status in ("mismatch", "failed")]
    for c in bad:
        print(f"FAILED {c.backend}: {c.reason}", file=sys.stderr)
    return 1 if bad or not checks else 0


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MVTec-layout folder with a test split")
    p.add_argument("--bundle", type=Path, help="an existing bundle (default: train a short one on --data)")
    p.add_argument("--work", type=Path, default=Path("runs/gpu_check"), help="where the trained bundle goes")
    p.add_argument("--steps", type=int, default=1000, help="training steps of that bundle (kept short: < 10 min in all)")
    p.add_argument("--large-batch", type=int, default=64)
    p.add_argument("--iters", type=int, default=50, help="timed calls at batch 1")
    p.add_argument("--out", type=Path, help="JSON report (default benchmarks/results/gpu_check-<gpu>.json)")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
