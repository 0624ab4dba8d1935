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
from dfr_edge.geometry import RESIZE_MODES, Geometry, Tiling
from dfr_edge.rules import kind_problem
from dfr_edge.score_rule import ScoreRule, score_problem

AUTO = "auto"


def parse_image_size(value: Any) -> Any:
    """256 -> [256, 256]; "256x320" or "256,320" -> [height, width]; "auto" and lists stay (rules check them)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value, value]
    if not isinstance(value, str) or value.strip().lower() == AUTO:
        return value.strip().lower() if isinstance(value, str) else value
    parts = value.lower().replace("x", ",").split(",")
    try:
        size = [int(v) for v in parts]
    except ValueError:
        return value
    return size * 2 if len(size) == 1 else size


def _image_size_rule(value: list | str) -> str | None:
    if value == AUTO:
        return None
    if isinstance(value, str) or len(value) != 2:
        return f"must be one number, [height, width], HxW or auto (got {value!r})"
    return next((f"sides {problem}" for problem in map(rules.image_side, value) if problem), None)


def _integers(count: int, low: tuple[int, ...], meaning: str) -> rules.Rule:
    """`count` integers, each >= its entry of `low`."""
    def rule(value: list) -> str | None:
        ok = len(value) == count and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ok = ok and all(v >= lo for v, lo in zip(value, low))
        return None if ok else f"must be {meaning} (got {value!r})"

    return rule


# The value rules of each field, shared with dfr.json where the manifest records the same value.
RULES: dict[str, rules.Rule] = {
    "image_size": _image_size_rule,
    "auto_max_pixels": rules.at_least(32 * 32, integer=True),
    "resize": rules.one_of(*RESIZE_MODES),
    "roi": _integers(4, (0, 0, 1, 1), "[x, y, width, height] in pixels, x and y >= 0, a positive size"),
    "tile": _integers(2, (1, 1), "[height, width] in pixels"),
    "tile_overlap": rules.at_least(0, integer=True),
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
    "score": score_problem,
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
    image_size: list[int] | str = field(default_factory=lambda: [256, 256])  # [height, width] or "auto"
    auto_max_pixels: int = 256 * 256  # image_size auto: compute budget in model pixels (see geometry.py)
    resize: str = "stretch"  # "stretch", "letterbox" (aspect kept, padded) or "crop" (centre, aspect kept)
    roi: list[int] | None = None  # region of interest [x, y, width, height] in image pixels
    tile: list[int] | None = None  # split images into overlapping [height, width] tiles (usually the image size)
    tile_overlap: int = 32  # minimum overlap of neighbouring tiles in pixels
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
    # Image score from the map: "max", "topk:K" (mean of the K largest values) or "quantile:Q". The mean of
    # the top 1000 had the best mean image AUROC over 8 sets of the size-independent rules (benchmarks/README.md).
    score: str = "topk:1000"
    pixel_fpr: float = 0.005  # fraction of normal pixels flagged at the pixel threshold
    image_quantile: float = 0.99  # quantile of normal image scores used as image threshold
    # Data
    skip_bad_images: bool = False

    def __post_init__(self) -> None:
        self.image_size = parse_image_size(self.image_size)
        hints = typing.get_type_hints(type(self))
        problems = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            problem = kind_problem(value, _kinds(hints[f.name]))
            if problem is None and value is not None and f.name in RULES:
                problem = RULES[f.name](value)
            if problem:
                problems.append(f"{f.name} {problem}")
        if not problems and self.tile and self.tile_overlap >= min(self.tile):
            problems.append(f"tile_overlap must be smaller than the tile {self.tile} (got {self.tile_overlap})")
        if not problems and self.image_size == AUTO and self.tile:
            problems.append("image_size auto picks a whole-image size; with tile give the model size")
        if problems:
            raise ValueError(f"invalid configuration: {'; '.join(problems)}")
        self.score = str(ScoreRule.parse(self.score))  # one spelling of each rule in config.yaml and dfr.json

    @property
    def height_width(self) -> tuple[int, int]:
        if self.image_size == AUTO:
            raise ValueError("image_size auto is resolved from the training images (dfr_edge.trainer)")
        return self.image_size[0], self.image_size[1]

    def geometry(self, height: int, width: int) -> Geometry:
        """The input geometry at a model size (the configured one, or the one `auto` picked)."""
        tiling = Tiling(tuple(self.tile), self.tile_overlap) if self.tile else None
        return Geometry(height, width, self.resize, tuple(self.roi) if self.roi else None, tiling)

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
