"""The fused DFR module: uint8 BGR images in, anomaly map and score out.

This is the graph exported to ONNX (contract 1 in ARCHITECTURE.md): preprocessing happens inside
so no runtime re-implements it, and the scoring head is a submodule named `head` so its ONNX nodes
carry the `/head/` prefix that the FP16/INT8 exporters keep in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dfr_edge import rules
from dfr_edge.cae import CAE
from dfr_edge.features import POOL, RegionalFeatures
from dfr_edge.score_rule import TRT_TOPK_LIMIT, ScoreRule


class Preprocess(nn.Module):
    """N x H x W x 3 uint8 BGR → N x 3 x H x W float, RGB, normalised with the backbone's mean/std.

    Colour swap, scaling and mean/std are one 1x1 convolution (a permuted diagonal and a bias):
    exactly the same arithmetic as separate ops, but a single fast kernel in every engine.
    """

    def __init__(self, mean: tuple[float, float, float], std: tuple[float, float, float]):
        super().__init__()
        weight = torch.zeros(3, 3, 1, 1)
        for rgb in range(3):
            weight[rgb, 2 - rgb] = 1.0 / (255.0 * std[rgb])  # output RGB channel reads input BGR channel
        shift = torch.tensor([-m / s for m, s in zip(mean, std)])
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("shift", shift, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float()
        return F.conv2d(x, self.weight, self.shift)


class FeatureExtractor(nn.Module):
    """Preprocessing, frozen backbone and regional multi-scale features: the part that never trains."""

    def __init__(self, backbone: nn.Module, mean, std, image_size: tuple[int, int]):
        super().__init__()
        self.preprocess = Preprocess(mean, std)
        self.backbone = backbone
        self.image_size = tuple(image_size)
        with torch.no_grad():
            probe = self.backbone(torch.zeros(1, 3, *image_size))
        self.regional = RegionalFeatures({k: tuple(v.shape[-2:]) for k, v in probe.items()}, self.image_size)
        self.channels = sum(v.shape[1] for v in probe.values())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.regional(self.backbone(self.preprocess(images)))


def gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(4.0 * sigma + 0.5))  # scipy.ndimage's default truncation
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).float()


class AnomalyHead(nn.Module):
    """Squared reconstruction error, channel mean, bilinear upsample, optional blur, image score by `score`."""

    def __init__(self, image_size: tuple[int, int], channels: int, sigma: float = 0.0, score: str = "max"):
        super().__init__()
        # Channel mean as a 1x1 convolution with weights 1/C: the same sum, but a GEMM that every
        # engine runs fast, where a reduction over the channel axis is strided and slow on CPUs.
        self.register_buffer("channel_mean", torch.full((1, channels, 1, 1), 1.0 / channels), persistent=False)
        self.image_size = tuple(image_size)
        self.sigma = float(sigma)
        kernel = gaussian_kernel(sigma) if sigma > 0 else torch.ones(1)
        self.register_buffer("kernel", kernel, persistent=False)
        self.radius = (kernel.numel() - 1) // 2
        self.score_rule = ScoreRule.parse(score)
        pixels = self.image_size[0] * self.image_size[1]
        self.top_count = self.score_rule.top_count(pixels)
        if not 1 <= self.top_count <= min(pixels, TRT_TOPK_LIMIT):
            raise ValueError(f"image score {self.score_rule} reads the top {self.top_count} of {pixels} map values; "
                             f"at most {min(pixels, TRT_TOPK_LIMIT)} (TensorRT's TopK limit): choose a smaller K "
                             "or a higher quantile")

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        r, k = self.radius, self.kernel
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
        return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))

    def forward(self, features: torch.Tensor, reconstruction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        diff = reconstruction - features
        error = F.conv2d(diff * diff, self.channel_mean)
        # A constant scale (the grid is image size / 4) keeps Shape ops out of the exported head.
        amap = F.interpolate(error, scale_factor=float(POOL), mode="bilinear", align_corners=True)
        if self.sigma > 0:
            amap = self.blur(amap)
        amap = amap[:, 0]
        return amap, self.image_score(amap)

    def image_score(self, amap: torch.Tensor) -> torch.Tensor:
        """N x H x W map → N scores. TopK (sorted, K <= 3840) and a mean: ops TensorRT builds as they are."""
        if self.score_rule.rule == "max":
            return amap.amax(dim=(1, 2))
        top = torch.topk(amap.flatten(1), self.top_count, dim=1, sorted=True).values
        return top.mean(dim=1) if self.score_rule.rule == "topk" else top[:, -1]


class DFRModel(nn.Module):
    """Extractor + CAE + head; `forward(uint8 BGR batch) -> (anomaly_map N x H x W, score N)`."""

    def __init__(self, extractor: FeatureExtractor, cae: CAE, sigma: float = 0.0, score: str = "max"):
        super().__init__()
        self.extractor = extractor
        self.cae = cae
        self.head = AnomalyHead(extractor.image_size, extractor.channels, sigma, score)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.extractor(images)
        return self.head(features, self.cae(features))


def check_image_size(height: int, width: int) -> None:
    """Every backbone here downsamples by at most 32 and needs even stride-2 inputs."""
    for side in (height, width):
        if rules.image_side(side):
            raise ValueError(f"image size {height}x{width}: each side must be a multiple of 32 (e.g. 256)")
