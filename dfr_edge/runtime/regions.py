"""Defect boxes: connected regions of a binary mask with their peak anomaly score."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from dfr_edge.geometry import SampledMap


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    width: int
    height: int
    area: int  # defect pixels in the region
    peak: float  # highest anomaly score inside it

    def to_dict(self) -> dict:
        return asdict(self)


def defect_boxes(mask: np.ndarray, amap: np.ndarray, min_area: int = 1) -> list[Box]:
    """8-connected regions of `mask`, largest first."""
    if not mask.any():  # most frames on a line: the search costs as much on an empty mask as on a full one
        return []
    # 16-bit labels where they cannot overflow: OpenCV then labels and measures in one thread at 0.2 ms
    # for a 256x256 map, against 0.3-0.5 ms for 32-bit ones (camera loop, benchmarks/README.md)
    most_regions = math.ceil(mask.shape[0] / 2) * math.ceil(mask.shape[1] / 2)
    label_type = cv2.CV_16U if most_regions < 2**16 else cv2.CV_32S
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8,
                                                               ltype=label_type)
    boxes = []
    for i in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area >= min_area:
            peak = float(amap[y : y + h, x : x + w][labels[y : y + h, x : x + w] == i].max())
            boxes.append(Box(x, y, w, h, area, peak))
    return sorted(boxes, key=lambda b: b.area, reverse=True)


def sampled_boxes(sampled: SampledMap, threshold: float, min_area: int = 1) -> list[Box]:
    """Regions of a map at the model's resolution, in frame pixels, largest first.

    Each box covers the frame pixels of its map pixels (edges rounded outwards), its area is the map
    pixels times the frame pixels each covers (rounded), and its peak is the map's own maximum there
    (an upsampled map can only be lower). Boxes may thus differ from those of the frame-size mask by
    about one map pixel (benchmarks/README.md: "Camera loop targets").
    """
    sy, sx = sampled.scale_y, sampled.scale_x
    boxes = []
    for b in defect_boxes(sampled.values > threshold, sampled.values):
        y0, x0 = sampled.top + math.floor(b.y * sy + 1e-9), sampled.left + math.floor(b.x * sx + 1e-9)
        y1 = sampled.top + math.ceil((b.y + b.height) * sy - 1e-9)
        x1 = sampled.left + math.ceil((b.x + b.width) * sx - 1e-9)
        area = max(1, round(b.area * sy * sx))
        if area >= min_area:
            boxes.append(Box(x0, y0, x1 - x0, y1 - y0, area, b.peak))
    return boxes  # still largest first: scaling keeps the order of the areas
