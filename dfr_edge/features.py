"""DFR's regional multi-scale feature generator, without 256x256 copies of deep maps.

The method resizes every selected map bilinearly (align_corners=True) to the image size, average
pools it 4x4 with stride 4, and concatenates along channels. Resize followed by pooling is linear
and separable, so per axis it is one small matrix (out x in): applying the two matrices to the
small map gives exactly the same result at a fraction of the cost and memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

POOL = 4  # the method's regional pooling window (and stride)


def resize_pool_matrix(size_in: int, size_image: int, pool: int = POOL) -> torch.Tensor:
    """(size_image // pool) x size_in matrix equal to align_corners bilinear resize then avg pool."""
    impulses = torch.eye(size_in, dtype=torch.float64).unsqueeze(1)  # (in, 1, in)
    resized = F.interpolate(impulses, size=size_image, mode="linear", align_corners=True)
    pooled = F.avg_pool1d(resized, pool, pool)  # (in, 1, out)
    return pooled[:, 0, :].T.contiguous().float()


class RegionalFeatures(nn.Module):
    """Maps {layer: N x C_l x h_l x w_l} to one N x C x H/4 x W/4 tensor, layers in order."""

    def __init__(self, layer_shapes: dict[str, tuple[int, int]], image_size: tuple[int, int]):
        super().__init__()
        self.layers = list(layer_shapes)
        height, width = image_size
        if height % POOL or width % POOL:
            raise ValueError(f"image size {image_size} must be a multiple of {POOL}")
        for i, (h, w) in enumerate(layer_shapes.values()):
            self.register_buffer(f"rows{i}", resize_pool_matrix(h, height), persistent=False)
            self.register_buffer(f"cols{i}", resize_pool_matrix(w, width).T.contiguous(), persistent=False)

    def forward(self, maps: dict[str, torch.Tensor]) -> torch.Tensor:
        out = []
        for i, name in enumerate(self.layers):
            rows, cols = getattr(self, f"rows{i}"), getattr(self, f"cols{i}")
            out.append(rows @ maps[name] @ cols)  # (H/4 x h) . (h x w) . (w x W/4)
        return torch.cat(out, dim=1)


def naive_regional_features(maps: dict[str, torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
    """The method as written (materialises image-size maps); the reference for tests."""
    resized = [
        F.avg_pool2d(F.interpolate(m, size=image_size, mode="bilinear", align_corners=True), POOL, POOL)
        for m in maps.values()
    ]
    return torch.cat(resized, dim=1)
