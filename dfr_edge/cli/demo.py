"""dfr-demo: the whole pipeline on the embedded synthetic dataset, no download needed.

Builds a defect dataset from a scikit-image texture, trains the default model, evaluates it,
and writes heat-map overlays, all under --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dfr_edge.cli.common import run_main
from dfr_edge.report import format_table, write_json


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dfr-demo", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="working folder (default runs/demo)")
    p.add_argument("--texture", default="brick", help="brick (default), grass or gravel")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="CAE optimizer steps (default: the training default)")
    return p


@run_main
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from dfr_edge.bundle import save_bundle
    from dfr_edge.config import TrainConfig
    from dfr_edge.data.mvtec import load_test_arrays, open_dataset
    from dfr_edge.data.synthetic import SyntheticSpec, generate_dataset
    from dfr_edge.evaluate import evaluate, write_overlays
    from dfr_edge.predict import predict_torch
    from dfr_edge.trainer import train

    start = time.perf_counter()
    data = generate_dataset(args.out / "data", SyntheticSpec(texture=args.texture, seed=args.seed))
    print(f"dataset: {data}")
    config = TrainConfig(seed=args.seed, **({"steps": args.steps} if args.steps else {}))
    result = train(config, open_dataset(data))
    bundle = args.out / "bundle"
    if bundle.exists():
        print(f"replacing the previous demo bundle {bundle}")
    save_bundle(result, bundle, data, force=True)

    test = load_test_arrays(open_dataset(data), *config.height_width)
    evaluation = evaluate(lambda images: predict_torch(result.model, images), test)
    overlays = write_overlays(args.out / "overlays", test, evaluation, result.normal_stats["pixel_median"],
                              result.thresholds.pixel)
    rows = [["torch (bundle)", evaluation.metrics.image_auroc, evaluation.metrics.pixel_auroc,
             evaluation.metrics.pro, round(evaluation.ms_per_image, 1)]]
    print()
    print(format_table(["model", "image AUROC", "pixel AUROC", "PRO", "ms/image"], rows))
    write_json(args.out / "metrics.json", {"torch": evaluation.summary()})
    print(f"\nbundle: {bundle}\noverlays ({len(overlays)}): {args.out / 'overlays'}\n"
          f"metrics: {args.out / 'metrics.json'}\ntotal {time.perf_counter() - start:.0f} s")
    return 0
