"""Training configuration: one dataclass, loadable from YAML, overridable from the command line.

The effective configuration (after YAML and CLI overrides) is saved in the bundle, so a bundle
always says exactly how it was made.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dfr_edge import rules
from dfr_edge.errors import UnusableFileError
from dfr_edge.rules import kind_problem


def _image_size_rule(value: list) -> str | None:
    if len(value) != 2:
        return f"must be one number or [height, width] (got {value!r})"
    return next((f"sides {problem}" for problem in map(rules.image_side, value) if problem), None)


# The value rules of each field, shared with dfr.json where the manifest records the same value.
RULES: dict[str, rules.Rule] = {
    "image_size": _image_size_rule,
    "pca_explained": rules.PCA_EXPLAINED,
    "pca_images": rules.COUNT,
    "latent_dim": rules.COUNT,
    "steps": rules.COUNT,
    "epochs": rules.COUNT,
    "batch_positions": rules.at_least(2, integer=True),
    "learning_rate": rules.above(0),
    "cache_max_gb": rules.at_least(0),
    "val_fraction": rules.VAL_FRACTION,
    "sigma": rules.SIGMA,
    "pixel_fpr": rules.PIXEL_FPR,
    "image_quantile": rules.IMAGE_QUANTILE,
}


def _kinds(hint: Any) -> tuple[type, ...]:
    """The classes a type hint allows: `list[str] | str | None` -> (list, str, NoneType)."""
    parts = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return tuple(typing.get_origin(part) or part for part in parts)


@dataclass
class TrainConfig:
    # Feature extractor
    backbone: str = "efficientnet_lite0"
    layers: list[str] | str | None = None  # None: the backbone's default; str: a preset (vgg19: paper16)
    backbone_weights: str = "imagenet"  # "imagenet", "random", or a local weights file
    vgg_mode: str = "faithful"  # vgg19 only: "faithful" (reference padding quirk) or "clean"
    image_size: list[int] = field(default_factory=lambda: [256, 256])  # height, width
    # Latent size from PCA (or fixed with latent_dim)
    pca_explained: float = 0.9
    pca_images: int = 10
    latent_dim: int | None = None
    # CAE training: positions are independent samples (the CAE is a per-position MLP). Length is
    # `steps` optimizer steps whatever the dataset size, unless `epochs` (full passes) is given.
    steps: int = 6000
    epochs: int | None = None
    batch_positions: int = 256
    learning_rate: float = 1e-3
    cache_max_gb: float = 4.0  # feature cache bound; beyond it features are streamed each epoch
    val_fraction: float = 0.1  # held-out normal training images: validation loss and thresholds
    seed: int = 0
    # Scoring and thresholds
    sigma: float = 2.0  # Gaussian smoothing of the anomaly map in pixels (0 = off)
    pixel_fpr: float = 0.005  # fraction of normal pixels flagged at the pixel threshold
    image_quantile: float = 0.99  # quantile of normal image scores used as image threshold
    # Data
    skip_bad_images: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.image_size, int) and not isinstance(self.image_size, bool):
            self.image_size = [self.image_size, self.image_size]
        hints = typing.get_type_hints(type(self))
        problems = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            problem = kind_problem(value, _kinds(hints[f.name]))
            if problem is None and value is not None and f.name in RULES:
                problem = RULES[f.name](value)
            if problem:
                problems.append(f"{f.name} {problem}")
        if problems:
            raise ValueError(f"invalid configuration: {'; '.join(problems)}")

    @property
    def height_width(self) -> tuple[int, int]:
        return self.image_size[0], self.image_size[1]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown configuration key(s) {unknown}; known keys: {', '.join(sorted(known))}")
        return cls(**values)


def load_config(path: Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """YAML file (optional) then CLI overrides (None values mean 'not given')."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(read_config_file(Path(path)))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(values)


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's keys, checked on their own so that a bad value is blamed on the file."""
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} {'is not a file' if path.exists() else 'does not exist'}")
    remedy = "fix it (keys and values as in a bundle's config.yaml) or leave out --config"
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:  # syntax errors, and tags such as !!python/object that safe_load refuses
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UnusableFileError(path, f"not valid YAML{where} ({problem})", remedy) from None
    except UnicodeDecodeError:
        raise UnusableFileError(path, "not a text file", remedy) from None
    if not isinstance(loaded, dict):
        raise UnusableFileError(path, "must hold a mapping of keys to values", remedy)
    try:
        TrainConfig.from_dict(loaded)
    except ValueError as exc:
        raise UnusableFileError(path, str(exc), remedy) from None
    return loaded
