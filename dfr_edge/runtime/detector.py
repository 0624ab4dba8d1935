"""Frames in, decisions out: resize to the model, infer, threshold, find defect regions.

Thresholds come from the artefact's dfr.json (chosen on normal data at training time) and can be
overridden at run time, because the right operating point is a production decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from dfr_edge.data.images import resize_image
from dfr_edge.runtime.backend import Backend
from dfr_edge.runtime.overlay import make_overlay
from dfr_edge.runtime.regions import Box, defect_boxes


@dataclass
class Detection:
    score: float
    anomalous: bool
    anomaly_map: np.ndarray  # float32, the frame's height x width
    mask: np.ndarray  # bool, the frame's height x width: pixels above the pixel threshold
    boxes: list[Box] = field(default_factory=list)


def as_bgr(frame: np.ndarray) -> np.ndarray:
    """uint8 H x W x 3 BGR from a BGR, grey (H x W or H x W x 1) or BGRA frame."""
    if frame.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 images, got {frame.dtype}")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        return cv2.cvtColor(frame.reshape(frame.shape[:2]), cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    raise ValueError(f"frames must be H x W x 3 BGR (or grey), got shape {frame.shape}")


class Detector:
    def __init__(self, backend: Backend, pixel_threshold: float | None = None,
                 image_threshold: float | None = None, min_region_area: int = 1):
        self.backend = backend
        thresholds = backend.manifest["thresholds"]
        self.pixel_threshold = float(thresholds["pixel"] if pixel_threshold is None else pixel_threshold)
        self.image_threshold = float(thresholds["image"] if image_threshold is None else image_threshold)
        self.min_region_area = min_region_area
        self.normal_level = float(backend.manifest["normal_stats"]["pixel_median"])

    @property
    def size(self) -> tuple[int, int]:
        return self.backend.height, self.backend.width

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw model output for images already at the model size (evaluation, benchmarks)."""
        return self.backend.infer(images)

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detection]:
        """One batch of frames of any size; maps and boxes come back in each frame's pixels."""
        frames = [as_bgr(f) for f in frames]
        if not frames:
            return []
        batch = np.stack([resize_image(f, *self.size) for f in frames])
        maps, scores = self.backend.infer(batch)
        return [self._decide(frame, amap, float(score)) for frame, amap, score in zip(frames, maps, scores)]

    def _decide(self, frame: np.ndarray, amap: np.ndarray, score: float) -> Detection:
        if amap.shape != frame.shape[:2]:
            amap = cv2.resize(amap, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)
        mask = amap > self.pixel_threshold
        return Detection(score, score > self.image_threshold, amap, mask,
                         defect_boxes(mask, amap, self.min_region_area))

    def overlay(self, frame: np.ndarray, detection: Detection) -> np.ndarray:
        return make_overlay(as_bgr(frame), detection.anomaly_map, detection.mask, self.normal_level,
                            self.pixel_threshold)
