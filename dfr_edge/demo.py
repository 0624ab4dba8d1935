"""The whole pipeline on the embedded synthetic dataset: generate, train, evaluate, export, compare.

What `make demo` runs (through dfr-demo), so a fresh machine shows every stage working without a
download: one table with the accuracy and CPU speed of the torch bundle and each exported variant.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from dfr_edge.bundle import load_bundle, save_bundle
from dfr_edge.config import TrainConfig
from dfr_edge.data.mvtec import load_test_arrays, open_dataset
from dfr_edge.data.synthetic import SyntheticSpec, generate_dataset
from dfr_edge.evaluate import evaluate, write_overlays
from dfr_edge.export.pipeline import ExportOptions, export_bundle
from dfr_edge.geometry import Geometry
from dfr_edge.outputs import check_demo_target
from dfr_edge.predict import predict_torch
from dfr_edge.report import write_json
from dfr_edge.runtime import load_detector
from dfr_edge.trainer import train

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    data: Path
    bundle: Path
    overlays: Path
    rows: list[dict]  # one per artefact: name, file, metrics, ms per image
    seconds: float


def run_demo(out: Path, spec: SyntheticSpec, config: TrainConfig, force: bool = False) -> DemoResult:
    """The demo in folder `out`; which bundle at out/bundle it may replace: outputs.check_demo_target."""
    start, out = time.perf_counter(), Path(out)
    bundle_dir = out / "bundle"
    check_demo_target(out, force)  # before generating data and training
    data = generate_dataset(out / "data", spec)
    dataset = open_dataset(data)
    result = train(config, dataset)
    if bundle_dir.exists():
        log.info("replacing the previous demo bundle %s", bundle_dir)
    save_bundle(result, bundle_dir, data, force=True)  # checked above

    bundle = load_bundle(bundle_dir)
    test = load_test_arrays(dataset, Geometry.from_manifest(bundle.manifest))
    torch_eval = evaluate(lambda images: predict_torch(bundle.model, images), test)
    overlays = write_overlays(out / "overlays", test, torch_eval, result.normal_stats["pixel_median"],
                              result.thresholds.pixel)
    rows = [{"model": "torch (bundle)", "file": str(bundle_dir), **torch_eval.summary()}]
    for exported in export_bundle(bundle, ExportOptions(int8=True, force=True)):
        evaluation = evaluate(load_detector(exported.path).infer, test)
        rows.append({"model": exported.variant, "file": str(exported.path), **evaluation.summary()})
    write_json(out / "metrics.json", rows)
    return DemoResult(data, bundle_dir, overlays[0].parent if overlays else out, rows,
                      time.perf_counter() - start)
