"""torchvision ResNets (resnet18, wide_resnet50_2) as named-feature extractors."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

ARCHITECTURES = {"resnet18": torchvision.models.resnet18, "wide_resnet50_2": torchvision.models.wide_resnet50_2}
STAGES = ("layer1", "layer2", "layer3", "layer4")


class ResNetFeatures(nn.Module):
    """Stem plus the residual stages up to the deepest requested one; torchvision key names."""

    def __init__(self, arch: str, layers: list[str]):
        super().__init__()
        unknown = [name for name in layers if name not in STAGES]
        if unknown:
            raise ValueError(f"unknown {arch} layer(s) {unknown}; choose from {list(STAGES)}")
        net = ARCHITECTURES[arch](weights=None)
        self.layers = list(layers)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        depth = 1 + max(STAGES.index(name) for name in layers)
        for name in STAGES[:depth]:
            setattr(self, name, getattr(net, name))
        self.stages = STAGES[:depth]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = {}
        for name in self.stages:
            x = getattr(self, name)(x)
            out[name] = x
        return {name: out[name] for name in self.layers}
