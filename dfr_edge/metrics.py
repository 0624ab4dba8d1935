"""Anomaly-detection metrics as MVTec AD papers report them.

- image AUROC: label = the mask has any defect pixel, score = the image score (max of the map).
- pixel AUROC: one ROC over every pixel of every test image, good images included (pixels the input
  geometry leaves out, such as those outside a centre crop, are not counted: `valid`).
- PRO-AUC: per-region overlap averaged over all ground-truth regions (8-connected, pooled over
  images) against the false-positive rate over normal pixels, integrated up to FPR 0.3 exactly
  (interpolating at 0.3) and divided by 0.3 — MVTec's official convention, not the reference
  code's rescaling of the observed FPR range.

PRO trick: at threshold t, PRO(t) = mean over regions r of |{p in r: s_p >= t}| / |r|, which is a
true-positive rate where each defect pixel weighs 1/|its region|. So the whole PRO curve is a
weighted ROC curve, computed exactly at every distinct threshold by scikit-learn in one sort.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from skimage.measure import label
from sklearn.metrics import roc_auc_score, roc_curve

PRO_FPR_LIMIT = 0.3
Images = np.ndarray | Sequence[np.ndarray]  # N x H x W, or N arrays of their own sizes (geometry.py)


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


def pixel_auroc(maps: Images, masks: Images, valid: Images | None = None) -> float:
    truth = _pixels(masks, valid).astype(bool)
    if truth.all() or not truth.any():
        raise ValueError("pixel AUROC needs both normal and defect pixels")
    return float(roc_auc_score(truth, _pixels(maps, valid).astype(np.float32, copy=False)))


def region_weights(mask: np.ndarray) -> np.ndarray:
    """Per-pixel weight 1/|region| for the defect pixels of one image (8-connected regions), 0 elsewhere."""
    weights = np.zeros(mask.shape, np.float64)
    regions = label(np.asarray(mask, bool), connectivity=2)
    sizes = np.bincount(regions.ravel())
    inside = regions > 0
    weights[inside] = 1.0 / sizes[regions[inside]]
    return weights


def pro_auc(maps: Images, masks: Images, valid: Images | None = None, fpr_limit: float = PRO_FPR_LIMIT) -> float:
    """Normalised area under the PRO curve for FPR in [0, fpr_limit]."""
    if valid is not None:  # defect regions are what the model could see of them
        masks = [np.asarray(m, bool) & v for m, v in zip(masks, valid)]
    is_defect = _pixels(masks, valid).astype(bool)
    if not is_defect.any() or is_defect.all():
        raise ValueError("PRO needs both normal and defect pixels")
    weights = _pixels([region_weights(m) for m in masks], valid)
    sample_weight = np.where(is_defect, weights, 1.0)
    fpr, pro, _ = roc_curve(is_defect, _pixels(maps, valid).astype(np.float32, copy=False),
                            sample_weight=sample_weight, drop_intermediate=False)
    return integrate_to(fpr, pro, fpr_limit) / fpr_limit


def _pixels(images: Images, valid: Images | None) -> np.ndarray:
    """The pixels of per-image arrays (any sizes) in one vector, only the valid ones if given."""
    if valid is None:
        return np.concatenate([np.asarray(a).ravel() for a in images])
    return np.concatenate([np.asarray(a)[v] for a, v in zip(images, valid)])


def integrate_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoidal area under y(x) for x in [0, limit], interpolating y linearly at x = limit."""
    keep = x <= limit
    xs, ys = x[keep], y[keep]
    if xs[-1] < limit:
        nxt = np.searchsorted(x, limit)
        y_limit = np.interp(limit, x[nxt - 1 : nxt + 1], y[nxt - 1 : nxt + 1])
        xs, ys = np.append(xs, limit), np.append(ys, y_limit)
    return float(np.trapezoid(ys, xs))


def compute_metrics(maps: Images, scores: np.ndarray, masks: Images, valid: Images | None = None) -> Metrics:
    """Metrics over per-image maps and masks of any sizes; `valid` (bool per pixel) leaves pixels out.

    An image is anomalous when its mask has a defect pixel where the model could see it.
    """
    seen = masks if valid is None else [np.asarray(m, bool) & v for m, v in zip(masks, valid)]
    labels = np.array([np.asarray(m, bool).any() for m in seen])
    return Metrics(
        image_auroc=image_auroc(scores, labels),
        pixel_auroc=pixel_auroc(maps, masks, valid),
        pro=pro_auc(maps, masks, valid),
    )


def metrics_by_type(maps: Images, scores: np.ndarray, masks: Images, defect_types: list[str],
                    valid: Images | None = None, good: str = "good") -> dict[str, Metrics]:
    """Metrics of each defect type against the good images alone: which kinds of defect a model misses."""
    if good not in defect_types:
        raise ValueError("per-type metrics need good test images")
    scores = np.asarray(scores)
    result = {}
    for kind in sorted(set(defect_types) - {good}):
        picked = [i for i, k in enumerate(defect_types) if k in (good, kind)]
        result[kind] = compute_metrics([maps[i] for i in picked], scores[picked], [masks[i] for i in picked],
                                       None if valid is None else [valid[i] for i in picked])
    return result
