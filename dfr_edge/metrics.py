"""Anomaly-detection metrics as MVTec AD papers report them.

- image AUROC: label = the mask has any defect pixel, score = the image score (max of the map).
- pixel AUROC: one ROC over every pixel of every test image, good images included.
- PRO-AUC: per-region overlap averaged over all ground-truth regions (8-connected, pooled over
  images) against the false-positive rate over normal pixels, integrated up to FPR 0.3 exactly
  (interpolating at 0.3) and divided by 0.3 — MVTec's official convention, not the reference
  code's rescaling of the observed FPR range.

PRO trick: at threshold t, PRO(t) = mean over regions r of |{p in r: s_p >= t}| / |r|, which is a
true-positive rate where each defect pixel weighs 1/|its region|. So the whole PRO curve is a
weighted ROC curve, computed exactly at every distinct threshold by scikit-learn in one sort.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from skimage.measure import label
from sklearn.metrics import roc_auc_score, roc_curve

PRO_FPR_LIMIT = 0.3


@dataclass(frozen=True)
class Metrics:
    image_auroc: float
    pixel_auroc: float
    pro: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def image_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    labels = np.asarray(labels, bool)
    if labels.all() or not labels.any():
        raise ValueError("image AUROC needs both good and defective test images")
    return float(roc_auc_score(labels, scores))


def pixel_auroc(maps: np.ndarray, masks: np.ndarray) -> float:
    masks = np.asarray(masks, bool)
    if masks.all() or not masks.any():
        raise ValueError("pixel AUROC needs both normal and defect pixels")
    return float(roc_auc_score(masks.ravel(), np.asarray(maps, np.float32).ravel()))


def region_weights(masks: np.ndarray) -> np.ndarray:
    """Per-pixel weight 1/|region| for defect pixels (8-connected regions per image), 0 elsewhere."""
    weights = np.zeros(masks.shape, np.float64)
    for i, mask in enumerate(np.asarray(masks, bool)):
        regions = label(mask, connectivity=2)
        sizes = np.bincount(regions.ravel())
        inside = regions > 0
        weights[i][inside] = 1.0 / sizes[regions[inside]]
    return weights


def pro_auc(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = PRO_FPR_LIMIT) -> float:
    """Normalised area under the PRO curve for FPR in [0, fpr_limit]."""
    masks = np.asarray(masks, bool)
    if not masks.any() or masks.all():
        raise ValueError("PRO needs both normal and defect pixels")
    weights = region_weights(masks).ravel()
    is_defect = masks.ravel()
    sample_weight = np.where(is_defect, weights, 1.0)
    fpr, pro, _ = roc_curve(is_defect, np.asarray(maps, np.float32).ravel(), sample_weight=sample_weight,
                            drop_intermediate=False)
    return integrate_to(fpr, pro, fpr_limit) / fpr_limit


def integrate_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoidal area under y(x) for x in [0, limit], interpolating y linearly at x = limit."""
    keep = x <= limit
    xs, ys = x[keep], y[keep]
    if xs[-1] < limit:
        nxt = np.searchsorted(x, limit)
        y_limit = np.interp(limit, x[nxt - 1 : nxt + 1], y[nxt - 1 : nxt + 1])
        xs, ys = np.append(xs, limit), np.append(ys, y_limit)
    return float(np.trapezoid(ys, xs))


def compute_metrics(maps: np.ndarray, scores: np.ndarray, masks: np.ndarray) -> Metrics:
    labels = np.asarray(masks, bool).reshape(len(masks), -1).any(axis=1)
    return Metrics(
        image_auroc=image_auroc(scores, labels),
        pixel_auroc=pixel_auroc(maps, masks),
        pro=pro_auc(maps, masks),
    )
