"""Frame-to-decision time through the geometry code vs the code before it, and tiling's cost per tile.

    python benchmarks/geometry_latency.py --model BUNDLE/model.onnx [--frames 40] [--threads 1]

Side by side in one run, on the same ONNX Runtime CPU session: `before` is the Detector's former
path (resize the frame to the model size, infer, resize the map back, threshold, boxes), `geometry`
is today's Detector.detect (dfr_edge/geometry.py: plan, inputs, stitch, paste). Frames: a
camera-sized 1280x1024 frame and one already at the model size. "host ms" is the time outside the
inference call (resizing, geometry, thresholds, boxes), which is what the geometry code can change.
Then tiling: the 1280x1024 frame split into model-size tiles (overlap 32) run as one batch, per tile
next to the same frame resized to one input. Medians over --frames repetitions, the compared paths
alternating every repetition; writes benchmarks/results/geometry_latency.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from dfr_edge import __version__
from dfr_edge.data.images import resize_image
from dfr_edge.geometry import Tiling
from dfr_edge.report import format_table, machine_info, write_json
from dfr_edge.runtime import load_detector
from dfr_edge.runtime.detector import Detector
from dfr_edge.runtime.regions import defect_boxes

HERE = Path(__file__).resolve().parent
CAMERA = (1024, 1280)  # h, w
OVERLAP = 32


def detect_before_geometry(detector: Detector, frame: np.ndarray) -> tuple[float, int]:
    """The Detector's frame path before geometry.py, kept here only as the baseline."""
    maps, scores = detector.backend.infer(resize_image(frame, *detector.size)[np.newaxis])
    amap = maps[0]
    if amap.shape != frame.shape[:2]:
        amap = cv2.resize(amap, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)
    mask = amap > detector.pixel_threshold
    return float(scores[0]), len(defect_boxes(mask, amap, detector.min_region_area))


class TimedInfer:
    """Wraps a backend's infer to add up its time, so host-side time = total - inference."""

    def __init__(self, infer):
        self.infer, self.seconds = infer, 0.0

    def __call__(self, images):
        start = time.perf_counter()
        try:
            return self.infer(images)
        finally:
            self.seconds += time.perf_counter() - start


def timed(run, timer: TimedInfer) -> tuple[float, float]:
    """(total ms, host ms excluding inference) of one call."""
    timer.seconds = 0.0
    start = time.perf_counter()
    run()
    total = time.perf_counter() - start
    return 1000.0 * total, 1000.0 * (total - timer.seconds)


def side_by_side(runs: dict, timer: TimedInfer, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (total ms, host ms) per run; the runs alternate every repetition so noise hits all alike."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for name, run in runs.items():
        run()  # warm-up
    for _ in range(repeats):
        for name, run in runs.items():
            samples[name].append(timed(run, timer))
    return {name: (statistics.median(t for t, _ in s), statistics.median(h for _, h in s))
            for name, s in samples.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="an exported model.onnx at the default size")
    p.add_argument("--frames", type=int, default=40, help="repetitions per measurement (median reported)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--out", type=Path, default=HERE / "results" / "geometry_latency.json")
    args = p.parse_args()

    detector = load_detector(args.model, threads=args.threads)
    timer = TimedInfer(detector.backend.infer)
    detector.backend.infer = timer
    height, width = detector.size
    rng = np.random.default_rng(0)
    frames = {"camera 1280x1024": rng.integers(0, 256, (*CAMERA, 3), dtype=np.uint8),
              f"model size {width}x{height}": rng.integers(0, 256, (height, width, 3), dtype=np.uint8)}
    rows = []
    for name, frame in frames.items():
        medians = side_by_side({"before": lambda f=frame: detect_before_geometry(detector, f),
                                "geometry": lambda f=frame: detector.detect([f])}, timer, args.frames)
        (before, before_host), (after, after_host) = medians["before"], medians["geometry"]
        rows.append({"frame": name, "before_ms": round(before, 2), "geometry_ms": round(after, 2),
                     "ratio": round(after / before, 3), "before_host_ms": round(before_host, 3),
                     "geometry_host_ms": round(after_host, 3)})
    print(f"Frame to decision, model {width}x{height}, {detector.backend.name}, {args.threads} thread(s):")
    print(format_table(["frame", "before ms", "geometry.py ms", "ratio", "before host ms", "geometry.py host ms"],
                       [[r["frame"], r["before_ms"], r["geometry_ms"], r["ratio"], r["before_host_ms"],
                         r["geometry_host_ms"]] for r in rows]))

    camera = frames["camera 1280x1024"]
    untiled = detector.geometry
    tiled = dataclasses.replace(detector.geometry, tiling=Tiling((height, width), OVERLAP))
    tiles = len(tiled.plan(CAMERA))

    def detect_with(geometry):
        def run():
            detector.geometry = geometry
            detector.detect([camera])
        return run

    medians = side_by_side({"untiled": detect_with(untiled), "tiled": detect_with(tiled)}, timer,
                           max(3, args.frames // 6))
    (one, _), (frame_ms, frame_host) = medians["untiled"], medians["tiled"]
    tiling = {"frame": list(CAMERA), "tile": [height, width], "overlap": OVERLAP, "tiles": tiles,
              "frame_ms": round(frame_ms, 1), "per_tile_ms": round(frame_ms / tiles, 2),
              "host_per_tile_ms": round(frame_host / tiles, 3), "untiled_frame_ms": round(one, 2),
              "per_tile_vs_untiled": round(frame_ms / tiles / one, 3)}
    print(f"\nTiling a 1280x1024 frame into {tiles} tiles of {width}x{height} (overlap {OVERLAP}), one batch, "
          "against the same frame resized to one model input:")
    print(format_table(["tiles", "frame ms", "ms per tile", "host ms per tile", "untiled frame ms",
                        "per tile / untiled"],
                       [[tiles, tiling["frame_ms"], tiling["per_tile_ms"], tiling["host_per_tile_ms"],
                         tiling["untiled_frame_ms"], tiling["per_tile_vs_untiled"]]]))
    write_json(args.out, {"dfr_edge": __version__, "machine": machine_info(), "model": str(args.model),
                          "backend": detector.backend.name, "threads": args.threads, "frames": args.frames,
                          "frame_to_decision": rows, "tiling": tiling})
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
