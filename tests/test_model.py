"""The fused module: uint8 BGR in, batchable, the head does what the method says."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dfr_edge.bundle import load_bundle
from dfr_edge.model import AnomalyHead, Preprocess, check_image_size
from dfr_edge.thresholds import thresholds_from_normal


def test_preprocess_is_bgr_to_rgb_then_normalise():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    images = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8)
    rgb = images.permute(0, 3, 1, 2).float().flip(1) / 255
    expected = (rgb - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(Preprocess(mean, std)(images), expected)


def test_head_is_mean_squared_error_upsampled_and_max():
    torch.manual_seed(0)
    f, r = torch.randn(2, 5, 4, 4), torch.randn(2, 5, 4, 4)
    amap, score = AnomalyHead((16, 16), channels=5)(f, r)
    expected = F.interpolate(((r - f) ** 2).mean(1, keepdim=True), size=(16, 16), mode="bilinear",
                             align_corners=True)[:, 0]
    torch.testing.assert_close(amap, expected)
    torch.testing.assert_close(score, expected.amax(dim=(1, 2)))


def test_blur_keeps_a_flat_map_flat_and_spreads_a_peak():
    head = AnomalyHead((32, 32), channels=1, sigma=2.0)
    flat = torch.full((1, 1, 32, 32), 3.0)
    torch.testing.assert_close(head.blur(flat), flat)
    peak = torch.zeros(1, 1, 32, 32)
    peak[0, 0, 16, 16] = 1.0
    blurred = head.blur(peak)
    assert blurred[0, 0, 16, 16] < 0.1
    assert abs(float(blurred.sum()) - 1.0) < 1e-5


def test_batch_equals_one_by_one(tiny_bundle):
    model = load_bundle(tiny_bundle).model
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8))
    with torch.no_grad():
        maps, scores = model(images)
        singles = [model(images[i : i + 1]) for i in range(3)]
    torch.testing.assert_close(maps, torch.cat([m for m, _ in singles]), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(scores, torch.cat([s for _, s in singles]), rtol=1e-4, atol=1e-4)
    assert maps.shape == (3, 64, 64) and maps.dtype == torch.float32


@pytest.mark.parametrize("bad", [(250, 256), (16, 16)])
def test_image_size_rule(bad):
    check_image_size(256, 320)
    with pytest.raises(ValueError, match="multiple of 32"):
        check_image_size(*bad)


def test_pixel_threshold_flags_the_target_fraction_of_normal_pixels():
    rng = np.random.default_rng(0)
    maps = rng.gamma(2.0, size=(10, 32, 32))
    t = thresholds_from_normal(maps, maps.max(axis=(1, 2)), pixel_fpr=0.01, image_quantile=0.9)
    assert abs((maps > t.pixel).mean() - 0.01) < 0.001
    assert t.image == np.quantile(maps.max(axis=(1, 2)), 0.9)
