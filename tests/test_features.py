"""The per-axis resize-pool matrices give exactly the method's resize-then-pool features."""

from __future__ import annotations

import pytest
import torch

from dfr_edge.features import (
    RegionalFeatures,
    naive_regional_features,
    resize_pool_matrix,
)


@pytest.mark.parametrize("image_size", [(256, 256), (64, 128)])
def test_matrices_equal_the_naive_recipe(image_size):
    torch.manual_seed(0)
    # Sizes as VGG19 faithful / EfficientNet produce them, odd, even and non-square.
    shapes = {"a": (258, 258), "b": (66, 66), "c": (34, 17), "d": (16, 16), "e": (7, 9)}
    maps = {k: torch.rand(2, 3, h, w) * 10 for k, (h, w) in shapes.items()}
    fast = RegionalFeatures(shapes, image_size)(maps)
    naive = naive_regional_features(maps, image_size)
    assert fast.shape == (2, 15, image_size[0] // 4, image_size[1] // 4)
    torch.testing.assert_close(fast, naive, rtol=1e-5, atol=1e-4)


def test_resize_pool_rows_are_averages():
    m = resize_pool_matrix(33, 256)
    assert m.shape == (64, 33)
    torch.testing.assert_close(m.sum(dim=1), torch.ones(64))
    assert (m >= 0).all()


def test_image_size_must_be_poolable():
    with pytest.raises(ValueError, match="multiple of 4"):
        RegionalFeatures({"a": (8, 8)}, (30, 32))
