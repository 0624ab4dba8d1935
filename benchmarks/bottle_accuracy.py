"""Accuracy and training time on MVTec AD bottle with the default configuration (issue: DFR core).

    python benchmarks/bottle_accuracy.py [--data ../shared/datasets/mvtec_ad/bottle] [--runs 2] [--sweep]

Default run: dfr-train's code path (extraction included) timed end to end, then dfr-eval's metrics,
twice with the same seed to show reruns give the same numbers. --sweep adds the points the default
was chosen from: CAE steps x batch size, and map smoothing sigma (scored on the same trained model).
Prints tables and writes benchmarks/results/bottle_accuracy.json.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from dfr_edge import __version__
from dfr_edge.config import TrainConfig
from dfr_edge.data.mvtec import load_test_arrays, open_dataset
from dfr_edge.evaluate import evaluate
from dfr_edge.geometry import Geometry
from dfr_edge.model import AnomalyHead
from dfr_edge.predict import predict_torch
from dfr_edge.report import format_table, machine_info, write_json
from dfr_edge.trainer import train

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "datasets" / "mvtec_ad" / "bottle"
SWEEP_STEPS = ((750, 256), (1500, 256), (3000, 256), (6000, 256), (12000, 256), (3000, 1024), (6000, 1024))
SWEEP_SIGMAS = (0.0, 2.0, 4.0, 8.0)


def run(config: TrainConfig, data: Path, test, sigmas=(None,)) -> list[dict]:
    start = time.perf_counter()
    result = train(config, open_dataset(data))
    train_s = time.perf_counter() - start
    rows = []
    for sigma in sigmas:
        if sigma is not None:
            result.model.head = AnomalyHead(config.height_width, result.channels, sigma)
        metrics = evaluate(lambda images: predict_torch(result.model, images), test).metrics
        rows.append({"steps": config.steps, "batch": config.batch_positions,
                     "sigma": config.sigma if sigma is None else sigma, "latent_dim": result.latent_dim,
                     "train_s": round(train_s, 1), "extract_s": round(result.timings["extract_s"], 1),
                     "cae_s": round(result.timings["train_s"], 1), **metrics.to_dict()})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--sweep", action="store_true", help="also run the steps / batch / sigma sweep")
    p.add_argument("--runs", type=int, default=2, help="default-configuration trainings (reruns show determinism)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "bottle_accuracy.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    test = load_test_arrays(open_dataset(args.data), Geometry(256, 256))

    default = [run(TrainConfig(), args.data, test)[0] for _ in range(args.runs)]
    headers = ["steps", "batch", "sigma", "d", "train s (total)", "features s", "CAE s", "image AUROC",
               "pixel AUROC", "PRO"]
    def as_row(r: dict) -> list:
        return [r["steps"], r["batch"], r["sigma"], r["latent_dim"], r["train_s"], r["extract_s"], r["cae_s"],
                r["image_auroc"], r["pixel_auroc"], r["pro"]]

    print(f"Default configuration, trained {args.runs} time(s) with seed 0:")
    print(format_table(headers, [as_row(r) for r in default]))
    record = {"dfr_edge": __version__, "machine": machine_info(), "data": str(args.data), "default_runs": default}

    if args.sweep:
        sweep = []
        for steps, batch in SWEEP_STEPS:
            sweep += run(TrainConfig(steps=steps, batch_positions=batch), args.data, test, SWEEP_SIGMAS)
        print("\nSweep (sigma scored on the same trained model):")
        print(format_table(headers, [as_row(r) for r in sweep]))
        record["sweep"] = sweep
    write_json(args.out, record)
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
