"""VGG19 as the DFR paper uses it, with torchvision-compatible parameter names.

Two modes:
- `faithful`: the reference code's VGG. Every 3x3 conv has padding 0 behind a ReflectionPad2d(1),
  and for every conv that is not the last of its block the returned feature is the ReLU output
  *after* the next conv's reflection pad, so relu1_1 is 258x258, relu3_1 66x66 and so on.
- `clean`: torchvision's VGG19 (zero padding 1): nominal map sizes. A documented deviation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Convs per block of VGG19 and their channel counts.
VGG19_BLOCKS = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))
MODES = ("faithful", "clean")
PAPER_12 = [f"relu{b}_{i}" for b, n in ((1, 2), (2, 2), (3, 4), (4, 4)) for i in range(1, n + 1)]
PAPER_16 = PAPER_12 + [f"relu5_{i}" for i in range(1, 5)]
LAYER_PRESETS = {"paper12": PAPER_12, "paper16": PAPER_16}


def _conv_plan() -> list[tuple[str, int, int, int, bool]]:
    """(relu name, torchvision `features` index, in ch, out ch, last-in-block) for every conv."""
    plan, index, cin = [], 0, 3
    for block, (convs, cout) in enumerate(VGG19_BLOCKS, start=1):
        for i in range(1, convs + 1):
            plan.append((f"relu{block}_{i}", index, cin, cout, i == convs))
            index += 2  # conv, relu
            cin = cout
        index += 1  # max pool
    return plan


def layer_names() -> list[str]:
    return [name for name, *_ in _conv_plan()]


class VGG19Features(nn.Module):
    """Returns the requested ReLU maps by name; truncated after the deepest one."""

    def __init__(self, layers: list[str], mode: str = "faithful"):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown vgg19 mode {mode!r}; choose one of {MODES}")
        unknown = [name for name in layers if name not in layer_names()]
        if unknown:
            raise ValueError(f"unknown vgg19 layer(s) {unknown}; choose from {layer_names()}")
        self.layers = list(layers)
        self.mode = mode
        plan = _conv_plan()
        deepest = max(layer_names().index(name) for name in layers)
        self.plan = plan[: deepest + 1]
        padding = 0 if mode == "faithful" else 1
        # A ModuleDict keyed by torchvision's `features` index keeps state-dict keys compatible.
        self.features = nn.ModuleDict(
            {str(idx): nn.Conv2d(cin, cout, 3, padding=padding) for _n, idx, cin, cout, _l in self.plan}
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        wanted = set(self.layers)
        out = {}
        faithful = self.mode == "faithful"
        if faithful:
            x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        for name, idx, _cin, _cout, last in self.plan:
            x = F.relu(self.features[str(idx)](x))
            if faithful and not last:
                x = F.pad(x, (1, 1, 1, 1), mode="reflect")  # the reference keeps this pad
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break
            if last:
                x = F.max_pool2d(x, 2, 2)
                if faithful:
                    x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return {name: out[name] for name in self.layers}
