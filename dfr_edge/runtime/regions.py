"""Defect boxes: connected regions of a binary mask with their peak anomaly score."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np


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
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    boxes = []
    for i in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area >= min_area:
            peak = float(amap[y : y + h, x : x + w][labels[y : y + h, x : x + w] == i].max())
            boxes.append(Box(x, y, w, h, area, peak))
    return sorted(boxes, key=lambda b: b.area, reverse=True)
