"""The input resize: OpenCV's one-step area resize against resize_image's stepped shrink.

    python benchmarks/resize_speed.py [--data ../shared/datasets/mvtec_ad/bottle] [--repeats 30]

For camera-sized frames (640x480, 1280x720, 1920x1080, 2448x2048) and the data's own image size,
each shrunk to the default 256x256 model input: the median time of each method over --repeats calls
(the two alternating, one thread for OpenCV so the numbers are per core), and how far the stepped
result is from the exact area average (mean, p99 and max absolute difference in grey levels) on the
data's test images scaled to that frame size. Prints a table, writes
benchmarks/results/resize_speed.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from dfr_edge import __version__
from dfr_edge.data.images import IMAGE_EXTENSIONS, read_image, resize_image
from dfr_edge.report import format_table, machine_info, write_json

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "datasets" / "mvtec_ad" / "bottle"
FRAMES = {"640x480": (480, 640), "1280x720": (720, 1280), "1920x1080": (1080, 1920), "2448x2048": (2048, 2448)}
MODEL = (256, 256)


def exact_area(frame: np.ndarray) -> np.ndarray:
    return cv2.resize(frame, MODEL[::-1], interpolation=cv2.INTER_AREA)


def stepped(frame: np.ndarray) -> np.ndarray:
    return resize_image(frame, *MODEL)


def median_ms(frame: np.ndarray, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {"area": [], "stepped": []}
    for _ in range(repeats):
        for name, fn in (("area", exact_area), ("stepped", stepped)):
            start = time.perf_counter()
            fn(frame)
            times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: statistics.median(v) for name, v in times.items()}


def difference(images: list[np.ndarray], size: tuple[int, int] | None) -> dict[str, float]:
    """Grey levels between the two methods over all images brought to `size` (None: as they are)."""
    diffs = []
    for image in images:
        frame = image if size is None else cv2.resize(image, size[::-1], interpolation=cv2.INTER_CUBIC)
        diffs.append(np.abs(stepped(frame).astype(np.int16) - exact_area(frame)).ravel())
    d = np.concatenate(diffs)
    return {"mean": float(d.mean()), "p99": float(np.percentile(d, 99)), "max": float(d.max())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--images", type=int, default=12, help="test images compared")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--out", type=Path, default=HERE / "results" / "resize_speed.json")
    args = p.parse_args()
    files = sorted(f for f in (args.data / "test").rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise SystemExit(f"no test images under {args.data}/test: pass --data")
    images = [read_image(f) for f in files[:: max(1, len(files) // args.images)][: args.images]]
    cv2.setNumThreads(1)
    own = images[0].shape[:2]
    sizes = {f"{own[1]}x{own[0]} (the data's own)": None, **FRAMES}
    rows, results = [], []
    for label, size in sizes.items():
        ms = median_ms(images[0] if size is None else cv2.resize(images[0], size[::-1]), args.repeats)
        diff = difference(images, size)
        results.append({"frame": label, "area_ms": ms["area"], "stepped_ms": ms["stepped"],
                        "speedup": ms["area"] / ms["stepped"], "grey_levels": diff})
        rows.append([label, round(ms["area"], 2), round(ms["stepped"], 2), f"{ms['area'] / ms['stepped']:.1f}x",
                     round(diff["mean"], 3), diff["p99"], diff["max"]])
    print(format_table(["frame -> 256x256", "area ms", "stepped ms", "speed-up", "mean |diff|", "p99", "max"], rows))
    write_json(args.out, {"dfr_edge": __version__, "machine": machine_info(), "data": str(args.data),
                          "images": len(images), "repeats": args.repeats, "results": results})


if __name__ == "__main__":
    main()
