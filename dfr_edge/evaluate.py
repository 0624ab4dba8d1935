"""Evaluate any artefact the same way: a predictor over the test set, then the metrics.

A predictor maps uint8 N x H x W x 3 BGR images at the model size to (maps, scores); the torch
bundle and every exported ONNX variant provide one, so their numbers are comparable. Torch-free.

Metrics are computed at the model's sampling rate: each test image's ROI resampled by
`Geometry.sample` (stretch: the model's H x W, as MVTec papers do; letterbox: the canvas without its
padding; crop: the region scaled to cover H x W, pixels outside the crop left out; tiled: the ROI's
own pixels), with its mask mapped the same way. The test images go through the same geometry code
as the runtime (tiles, padding, stitching), so what is measured is what a camera gets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dfr_edge.data.images import stack_if_same_size
from dfr_edge.data.mvtec import TestArrays
from dfr_edge.geometry import predict_frames
from dfr_edge.metrics import Metrics, compute_metrics, metrics_by_type
from dfr_edge.runtime.overlay import make_overlay
from dfr_edge.score_rule import ScoreRule

Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class Evaluation:
    metrics: Metrics
    maps: np.ndarray | list[np.ndarray]  # one per test image, its (sampled) size; a list when sizes differ
    scores: np.ndarray
    ms_per_image: float  # model and geometry time, batched, on this machine
    valid: np.ndarray | list[np.ndarray] | None = None  # pixels the model saw, where not all of them

    def summary(self) -> dict:
        return {**self.metrics.to_dict(), "images": int(len(self.scores)), "ms_per_image": self.ms_per_image}

    def by_type(self, test: TestArrays) -> dict[str, Metrics]:
        """The metrics of each defect type (its images and the good ones) on the set this was run on."""
        return metrics_by_type(self.maps, self.scores, test.masks, test.defect_types, self.valid)


def run_predictor(predict: Predictor, images: np.ndarray, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray, float]:
    """Raw model output over images already at the model size (backend checks; no geometry)."""
    maps, scores = [], []
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        amap, score = predict(np.ascontiguousarray(images[i : i + batch_size]))
        maps.append(amap)
        scores.append(score)
    elapsed = time.perf_counter() - start
    return np.concatenate(maps), np.concatenate(scores), 1000.0 * elapsed / max(1, len(images))


def evaluate(predict: Predictor, test: TestArrays, batch_size: int = 8, score: ScoreRule = ScoreRule()) -> Evaluation:
    """Metrics of `predict` on `test`; `score` is the model's image-score rule (for padded inputs)."""
    start = time.perf_counter()
    regions = predict_frames(predict, test.images, test.geometry, batch_size, score_of=score.of)
    ms = 1000.0 * (time.perf_counter() - start) / max(1, len(regions))
    maps = stack_if_same_size([r.values for r in regions])
    scores = np.array([r.score for r in regions], np.float32)
    valid = None
    if any(r.valid is not None for r in regions):
        valid = stack_if_same_size([np.ones(r.values.shape, bool) if r.valid is None else r.valid for r in regions])
    return Evaluation(compute_metrics(maps, scores, test.masks, valid), maps, scores, ms, valid)


def sample_indices(defect_types: list[str], per_type: int = 3) -> list[int]:
    """A few images of every defect type (good included), in dataset order."""
    picked, seen = [], {}
    for i, kind in enumerate(defect_types):
        if seen.get(kind, 0) < per_type:
            picked.append(i)
            seen[kind] = seen.get(kind, 0) + 1
    return picked


def write_overlays(out_dir: Path, test: TestArrays, evaluation: Evaluation, normal_level: float,
                   pixel_threshold: float, per_type: int = 3) -> list[Path]:
    """Heat-map overlays (left) next to the ground truth outline (right) for a sample of images."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i in sample_indices(test.defect_types, per_type):
        amap = evaluation.maps[i]
        shown = make_overlay(test.images[i], amap, amap > pixel_threshold, normal_level, pixel_threshold)
        truth = test.images[i].copy()
        contours, _ = cv2.findContours(test.masks[i].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(truth, contours, -1, (0, 255, 0), 1)
        label = f"{test.defect_types[i]} score {evaluation.scores[i]:.3g}"
        cv2.putText(shown, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        path = out_dir / f"{test.defect_types[i]}_{test.paths[i].stem}.png"
        cv2.imwrite(str(path), np.hstack([shown, truth]))
        written.append(path)
    return written
