"""Frames in, decisions out: frame to model inputs (dfr_edge/geometry.py), infer, back to frame
pixels, threshold, find defect regions.

The input geometry (model size, resize mode, ROI, tiles) comes from the artefact's dfr.json, so the
runtime sees a frame exactly as training and evaluation did. Thresholds come from dfr.json too
(chosen on normal data at training time) and can be overridden at run time, because the right
operating point is a production decision.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import cv2
import numpy as np

from dfr_edge.geometry import FrameMap, Geometry, RegionMap
from dfr_edge.runtime.backend import Backend
from dfr_edge.runtime.overlay import make_overlay
from dfr_edge.runtime.regions import Box, defect_boxes, sampled_boxes
from dfr_edge.score_rule import ScoreRule


@dataclass(eq=False)
class Detection:
    """A frame's decision and its defect boxes (frame pixels), found at the model's resolution.

    The map and mask in the frame's pixels are made on first use (an overlay, a recording, a saved
    mask): upsampling to a 640x480 frame and finding regions there cost the camera loop more than 10%
    of an inference per frame (benchmarks/README.md: "Camera loop targets").
    """

    score: float
    anomalous: bool
    boxes: list[Box]
    frame_map: Callable[[], RegionMap] = field(repr=False)  # the map in the frame's pixels
    pixel_threshold: float = field(repr=False)

    @cached_property
    def _region(self) -> RegionMap:
        return self.frame_map()

    @property
    def anomaly_map(self) -> np.ndarray:
        """float32, the frame's height x width."""
        return self._region.values

    @cached_property
    def mask(self) -> np.ndarray:
        """bool, the frame's height x width: pixels above the pixel threshold (never outside the ROI)."""
        mask = self._region.values > self.pixel_threshold
        if self._region.valid is not None:
            mask &= self._region.valid
        return mask


def as_bgr(frame: np.ndarray, index: int = 0) -> np.ndarray:
    """uint8 H x W x 3 BGR from a BGR, grey (H x W or H x W x 1) or BGRA frame; `index` names it in errors."""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame {index} is {type(frame).__name__}, not an image array (did a camera read or "
                         f"cv2.imread fail?)")
    if frame.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 images, got {frame.dtype} (frame {index})")
    if frame.ndim in (2, 3) and 0 in frame.shape[:2]:
        raise ValueError(f"frame {index} is empty ({frame.shape[1]} x {frame.shape[0]} pixels)")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        return cv2.cvtColor(frame.reshape(frame.shape[:2]), cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    raise ValueError(f"frames must be H x W x 3 BGR (or grey), got shape {frame.shape} (frame {index})")


def finite_threshold(name: str, value: float) -> float:
    """A NaN threshold flags nothing and an infinite one everything or nothing: refuse both."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


class Detector:
    """Thresholded detections on frames of any size, in chunks of at most `backend.max_batch` frames."""

    def __init__(self, backend: Backend, pixel_threshold: float | None = None,
                 image_threshold: float | None = None, min_region_area: int = 1):
        self.backend = backend
        self.geometry = Geometry.from_section(backend.manifest.get("geometry"), backend.height, backend.width)
        self.score_rule = ScoreRule.from_manifest(backend.manifest)
        thresholds = backend.manifest["thresholds"]
        self.pixel_threshold = finite_threshold(
            "pixel threshold", thresholds["pixel"] if pixel_threshold is None else pixel_threshold)
        self.image_threshold = finite_threshold(
            "image threshold", thresholds["image"] if image_threshold is None else image_threshold)
        self.min_region_area = min_region_area
        self.normal_level = float(backend.manifest["normal_stats"]["pixel_median"])

    @property
    def size(self) -> tuple[int, int]:
        return self.backend.height, self.backend.width

    def _chunks(self, count: int) -> range:
        return range(0, count, self.backend.max_batch)

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw model output for images already at the model size (evaluation, benchmarks)."""
        if len(images) == 0:
            raise ValueError("no images to infer")
        parts = [self.backend.infer(images[i : i + self.backend.max_batch]) for i in self._chunks(len(images))]
        if len(parts) == 1:  # a camera's every frame: no copy of the maps
            return parts[0]
        return np.concatenate([m for m, _ in parts]), np.concatenate([s for _, s in parts])

    def detect(self, frames: np.ndarray | Sequence[np.ndarray],
               timings: dict[str, float] | None = None) -> Detection | list[Detection]:
        """Detections for frames of any size; maps and boxes come back in each frame's pixels.

        One frame (an H x W x C or H x W array) gives one Detection; a sequence of frames, or an
        N x H x W x C array, gives a list. A grey batch must be a sequence: a 3-D array is one frame.
        `timings`, if given, gets the seconds spent in "resize", "infer" and "postprocess" added to
        it, so the camera loop and dfr-bench can say where a frame's time goes.
        """
        if isinstance(frames, np.ndarray) and frames.ndim in (2, 3):
            return self.detect([frames], timings)[0]
        frames = [as_bgr(f, i) for i, f in enumerate(frames)]
        detections = []
        for start in self._chunks(len(frames)):  # bounded memory: one chunk resized and in flight at a time
            began = time.perf_counter()
            batch = self.geometry.to_inputs(frames[start : start + self.backend.max_batch])  # ROI, mode, tiles
            resized = time.perf_counter()
            maps, scores = self.infer(batch.inputs)  # a frame's tiles run in chunks of max_batch too
            inferred = time.perf_counter()
            frame_maps = batch.frame_maps(maps, scores, self.normal_level, self.score_rule.of)
            detections.extend(self._decide(f) for f in frame_maps)
            if timings is not None:
                for stage, seconds in (("resize", resized - began), ("infer", inferred - resized),
                                       ("postprocess", time.perf_counter() - inferred)):
                    timings[stage] = timings.get(stage, 0.0) + seconds
        return detections

    def _decide(self, frame: FrameMap) -> Detection:
        """Outside the ROI (or a crop) the map sits at the normal level and nothing is flagged. Tiled
        frames are stitched in region pixels (usually 1:1), so their regions are found there."""
        score, sampled = frame.score, frame.sampled()
        if sampled is not None:
            boxes = sampled_boxes(sampled, self.pixel_threshold, self.min_region_area)
            return Detection(score, score > self.image_threshold, boxes, frame.full, self.pixel_threshold)
        region = frame.full()
        detection = Detection(score, score > self.image_threshold, [], lambda: region, self.pixel_threshold)
        detection.boxes = defect_boxes(detection.mask, region.values, self.min_region_area)
        return detection

    def overlay(self, frame: np.ndarray, detection: Detection) -> np.ndarray:
        return make_overlay(as_bgr(frame), detection.anomaly_map, detection.mask, self.normal_level,
                            self.pixel_threshold)
