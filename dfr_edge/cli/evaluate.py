"""dfr-eval: evaluate a bundle or any exported model on an MVTec-layout test set."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dfr_edge.cli.common import ArgumentParser, add_threads_option, check_writable, positive_int, run_main
from dfr_edge.report import format_table, write_json


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="dfr-eval", description=__doc__)
    p.add_argument("model", type=Path, help="bundle directory or exported .onnx file")
    p.add_argument("--data", type=Path, required=True, help="MVTec-layout category folder with test/")
    p.add_argument("--json", type=Path, help="write metrics as JSON here")
    p.add_argument("--overlays", type=Path, help="write heat-map overlays of sample test images here")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--provider", default="cpu", help="ONNX Runtime provider for .onnx files: cpu, cuda, tensorrt")
    add_threads_option(p)
    return p


def load_predictor(model: Path, provider: str, threads: int | None = None):
    """(predict function, manifest, description) for a bundle (torch) or an exported file."""
    if model.is_dir():
        from dfr_edge.bundle import load_bundle
        from dfr_edge.predict import predict_torch
        from dfr_edge.threads import use_torch_threads

        use_torch_threads(threads)
        bundle = load_bundle(model)
        return (lambda images: predict_torch(bundle.model, images)), bundle.manifest, "torch (bundle)"
    from dfr_edge.runtime import load_detector
    from dfr_edge.threads import default_threads

    detector = load_detector(model, provider=provider, threads=threads or default_threads())
    variant = detector.backend.export_info.get("variant", "onnx")
    return detector.infer, detector.backend.manifest, f"{variant} ({detector.backend.name})"


def can_record_metrics(manifest_path: Path) -> bool:
    """A read-only bundle is still evaluated; it just cannot keep the metrics (said before the work)."""
    try:
        check_writable(manifest_path)
    except OSError as exc:
        print(f"warning: metrics will not be recorded in {manifest_path} ({exc.strerror})", file=sys.stderr)
        return False
    return True


@run_main
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for target, folder in ((args.json, False), (args.overlays, True)):  # refused before the long work
        if target is not None:
            check_writable(target, folder=folder)
    from dfr_edge import manifest as manifest_io
    from dfr_edge.data.mvtec import load_test_arrays, open_dataset, require_test_set
    from dfr_edge.evaluate import evaluate, write_overlays
    from dfr_edge.geometry import Geometry
    from dfr_edge.outputs import writing
    from dfr_edge.score_rule import ScoreRule

    dataset = open_dataset(args.data)
    require_test_set(dataset)
    predict, meta, description = load_predictor(args.model, args.provider, args.threads)
    record = args.model.is_dir() and can_record_metrics(args.model / manifest_io.MANIFEST_NAME)
    test = load_test_arrays(dataset, Geometry.from_manifest(meta))
    result = evaluate(predict, test, args.batch_size, ScoreRule.from_manifest(meta))
    summary = {"model": str(args.model), "runs_as": description, "data": str(args.data), **result.summary()}
    m = result.metrics
    print(format_table(["model", "runs as", "images", "image AUROC", "pixel AUROC", "PRO (FPR<=0.3)", "ms/image"],
                       [[str(args.model), description, len(test.images), m.image_auroc, m.pixel_auroc, m.pro,
                         round(result.ms_per_image, 1)]]))
    by_type = result.by_type(test)  # which kinds of defect the model misses
    summary["by_type"] = {kind: metrics.to_dict() for kind, metrics in by_type.items()}
    print(format_table(["defect type", "image AUROC", "pixel AUROC", "PRO"],
                       [[kind, t.image_auroc, t.pixel_auroc, t.pro] for kind, t in by_type.items()]))
    if record:  # the bundle records how it scored, and on what
        with writing(args.model, "dfr-eval"):
            manifest_io.update(args.model / manifest_io.MANIFEST_NAME,
                               metrics={**m.to_dict(), "data": str(Path(args.data).resolve()),
                                        "images": len(test.images)})
    if args.json:
        write_json(args.json, summary)
        print(f"metrics written to {args.json}")
    if args.overlays:
        written = write_overlays(args.overlays, test, result, meta["normal_stats"]["pixel_median"],
                                 meta["thresholds"]["pixel"])
        print(f"{len(written)} overlays written to {args.overlays}")
    return 0
