"""Metrics against brute-force implementations on small random cases."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label

from dfr_edge.metrics import compute_metrics, integrate_to, pixel_auroc, pro_auc


def brute_auroc(scores, labels):
    pos, neg = scores[labels], scores[~labels]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return (greater + 0.5 * ties) / (len(pos) * len(neg))


def brute_pro(maps, masks, limit=0.3):
    """PRO at every distinct threshold by explicit region overlaps, then trapezoids to `limit`."""
    regions = []
    for i, mask in enumerate(masks):
        lab = label(mask, connectivity=2)
        regions += [(i, lab == r) for r in range(1, lab.max() + 1)]
    normal = ~masks
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        pred = maps >= t
        fpr = (pred & normal).sum() / normal.sum()
        pro = np.mean([(pred[i] & r).sum() / r.sum() for i, r in regions])
        points.append((fpr, pro))
    fpr, pro = np.array(points).T
    area, x0, y0 = 0.0, 0.0, 0.0
    for x1, y1 in zip(fpr[1:], pro[1:]):
        if x1 > limit:
            y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            return (area + 0.5 * (limit - x0) * (y0 + y_lim)) / limit
        area += 0.5 * (x1 - x0) * (y0 + y1)
        x0, y0 = x1, y1
    return area / limit


def random_case(seed, n=3, size=12):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), bool)
    for i in range(1, n):
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, size - 3, 2)
            masks[i, y : y + rng.integers(1, 4), x : x + rng.integers(1, 4)] = True
    maps = rng.random((n, size, size)).astype(np.float32) + masks * rng.random() * 0.8
    maps = np.round(maps, 2)  # ties, as real quantized maps have
    return maps, masks


@pytest.mark.parametrize("seed", range(8))
def test_pro_matches_brute_force(seed):
    maps, masks = random_case(seed)
    assert pro_auc(maps, masks) == pytest.approx(brute_pro(maps, masks), abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_aurocs_match_brute_force(seed):
    maps, masks = random_case(seed)
    assert pixel_auroc(maps, masks) == pytest.approx(brute_auroc(maps.ravel(), masks.ravel()))
    scores = maps.reshape(len(maps), -1).max(1)
    m = compute_metrics(maps, scores, masks)
    assert m.image_auroc == pytest.approx(brute_auroc(scores, masks.reshape(len(masks), -1).any(1)))


def test_perfect_and_inverted_maps():
    _, masks = random_case(0)
    perfect = masks.astype(np.float32)
    assert pro_auc(perfect, masks) == pytest.approx(1.0)
    assert pixel_auroc(perfect, masks) == pytest.approx(1.0)
    assert pro_auc(1.0 - perfect, masks) == pytest.approx(0.0)


def test_small_regions_count_as_much_as_large_ones():
    masks = np.zeros((1, 20, 20), bool)
    masks[0, :10, :10] = True  # 100 pixels
    masks[0, 15, 15] = True  # 1 pixel
    maps = np.zeros((1, 20, 20), np.float32)
    maps[0, 15, 15] = 1.0  # only the tiny region is found
    # Half the regions are found at FPR 0; the curve then runs straight to (1, 1), so at FPR 0.3
    # PRO is 0.65 and the normalised area is (0.5 + 0.65) / 2.
    assert pro_auc(maps, masks) == pytest.approx(0.575)


def test_integrate_to_interpolates_at_the_limit():
    x, y = np.array([0.0, 0.2, 0.4]), np.array([0.0, 1.0, 1.0])
    assert integrate_to(x, y, 0.3) == pytest.approx(0.1 + 0.1)


def test_one_class_is_an_error():
    with pytest.raises(ValueError):
        pro_auc(np.zeros((1, 4, 4)), np.zeros((1, 4, 4), bool))


def test_metrics_by_type_scores_each_type_against_the_good_images_only():
    from dfr_edge.metrics import metrics_by_type

    rng = np.random.default_rng(0)
    masks = np.zeros((6, 8, 8), bool)
    masks[2:4, 2:5, 2:5] = True  # "dent": found (high map inside the mask)
    masks[4:6, 1:3, 1:7] = True  # "crack": missed (map is noise)
    maps = rng.random((6, 8, 8)).astype(np.float32)
    maps[2:4][masks[2:4]] += 1.0
    kinds = ["good", "good", "dent", "dent", "crack", "crack"]
    result = metrics_by_type(maps, maps.max(axis=(1, 2)), masks, kinds)
    assert sorted(result) == ["crack", "dent"]
    assert result["dent"].pixel_auroc == 1.0 and result["dent"].pro == 1.0
    picked = [0, 1, 4, 5]
    assert result["crack"] == compute_metrics(maps[picked], maps[picked].max(axis=(1, 2)), masks[picked])
    with pytest.raises(ValueError, match="good"):
        metrics_by_type(maps[2:], maps[2:].max(axis=(1, 2)), masks[2:], kinds[2:])
