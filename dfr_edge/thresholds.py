"""Decision thresholds chosen from normal data only (never from labelled defects).

Pixel threshold: the value above which a target fraction of normal pixels lies (the reference's
expected-FPR rule, default 0.5%). Image threshold: a quantile of normal image scores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Thresholds:
    pixel: float
    image: float
    pixel_fpr: float  # fraction of normal pixels above `pixel` it was chosen at
    image_quantile: float  # quantile of normal image scores `image` is

    def to_dict(self) -> dict:
        return asdict(self)


def thresholds_from_normal(
    maps: np.ndarray, scores: np.ndarray, pixel_fpr: float, image_quantile: float
) -> Thresholds:
    if len(scores) == 0:
        raise ValueError("thresholds need at least one normal image")
    pixel = float(np.quantile(maps.astype(np.float64, copy=False), 1.0 - pixel_fpr))
    image = float(np.quantile(np.asarray(scores, np.float64), image_quantile))
    return Thresholds(pixel=pixel, image=image, pixel_fpr=pixel_fpr, image_quantile=image_quantile)


def normal_statistics(maps: np.ndarray, scores: np.ndarray) -> dict:
    """Summary of normal-image scores, stored in the bundle for monitoring and normalisation."""
    scores = np.asarray(scores, np.float64)
    q = np.quantile(maps.astype(np.float64, copy=False), [0.5, 0.99, 0.999])
    return {
        "count": int(len(scores)),
        "score_mean": float(scores.mean()),
        "score_std": float(scores.std()),
        "score_min": float(scores.min()),
        "score_max": float(scores.max()),
        "pixel_median": float(q[0]),
        "pixel_p99": float(q[1]),
        "pixel_p999": float(q[2]),
    }
