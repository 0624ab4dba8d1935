"""Does keeping the aspect help on tall parts? Stretch to 256x256 vs image size auto vs letterbox.

    python benchmarks/geometry_accuracy.py [--steps 1500] [--out benchmarks/results/geometry_accuracy.json]

A tall set generated from the embedded brick texture (320 x 128 px, h x w: a 1:2.5 strip) with thin
scratches and blobs (dfr_edge.data.synthetic's drawers), trained and evaluated with the same
configuration except the input geometry. Metrics are each computed in that geometry's own sampling
space (see dfr_edge/evaluate.py), so they compare what each geometry lets the model see.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from dfr_edge import __version__
from dfr_edge.config import TrainConfig
from dfr_edge.data.mvtec import load_test_arrays, open_dataset
from dfr_edge.data.synthetic import add_defect, normal_crop
from dfr_edge.evaluate import evaluate
from dfr_edge.predict import predict_torch
from dfr_edge.report import format_table, machine_info, write_json
from dfr_edge.trainer import train

HERE = Path(__file__).resolve().parent
HEIGHT, WIDTH = 320, 128
GEOMETRIES = {"stretch 256x256": {"image_size": [256, 256]},
              "auto (aspect kept)": {"image_size": "auto"},
              "letterbox 256x256": {"image_size": [256, 256], "resize": "letterbox"}}


def tall_dataset(root: Path, n_train: int = 30, n_good: int = 10, n_per_defect: int = 10) -> Path:
    """MVTec layout; strips cut from seeded texture crops, defects from the embedded generator."""
    texture, rng = skimage.data.brick(), np.random.default_rng(0)

    def strip() -> np.ndarray:
        return np.ascontiguousarray(normal_crop(texture, HEIGHT, rng)[:, :WIDTH])

    def write(path: Path, image: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image)

    for i in range(n_train):
        write(root / "train" / "good" / f"{i:03d}.png", strip())
    for i in range(n_good):
        write(root / "test" / "good" / f"{i:03d}.png", strip())
    for kind in ("scratch", "blob"):
        for i in range(n_per_defect):
            image, mask = add_defect(strip(), kind, rng)
            write(root / "test" / kind / f"{i:03d}.png", image)
            write(root / "ground_truth" / kind / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
    return root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1500, help="CAE steps (shortened from 6000 to keep this quick)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "geometry_accuracy.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dataset = open_dataset(tall_dataset(Path(tmp) / "tall"))
        for name, overrides in GEOMETRIES.items():
            start = time.perf_counter()
            result = train(TrainConfig(steps=args.steps, **overrides), dataset)
            test = load_test_arrays(dataset, result.geometry)
            metrics = evaluate(lambda images, model=result.model: predict_torch(model, images), test).metrics
            rows.append({"geometry": name, "model_size": list(result.geometry.size),
                         "resize": result.geometry.resize, "seconds": round(time.perf_counter() - start, 1),
                         **metrics.to_dict()})
    print(f"Tall strips {HEIGHT}x{WIDTH} (h x w), {args.steps} CAE steps, otherwise the default configuration:")
    print(format_table(["geometry", "model h x w", "image AUROC", "pixel AUROC", "PRO", "seconds"],
                       [[r["geometry"], "x".join(map(str, r["model_size"])), r["image_auroc"], r["pixel_auroc"],
                         r["pro"], r["seconds"]] for r in rows]))
    write_json(args.out, {"dfr_edge": __version__, "machine": machine_info(), "steps": args.steps,
                          "images": [HEIGHT, WIDTH], "rows": rows})
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
