"""Training configuration: one dataclass, loadable from YAML, overridable from the command line.

The effective configuration (after YAML and CLI overrides) is saved in the bundle, so a bundle
always says exactly how it was made.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


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
        if isinstance(self.image_size, int):
            self.image_size = [self.image_size, self.image_size]
        self.image_size = [int(v) for v in self.image_size]
        checks = [
            (0.0 < self.pca_explained < 1.0, "pca_explained must be in (0, 1)"),
            (self.pca_images >= 1, "pca_images must be >= 1"),
            (self.steps >= 1, "steps must be >= 1"),
            (self.epochs is None or self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_positions >= 2, "batch_positions must be >= 2"),
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (0.0 <= self.val_fraction < 1.0, "val_fraction must be in [0, 1)"),
            (self.sigma >= 0, "sigma must be >= 0"),
            (0.0 < self.pixel_fpr < 1.0, "pixel_fpr must be in (0, 1)"),
            (0.0 < self.image_quantile <= 1.0, "image_quantile must be in (0, 1]"),
            (len(self.image_size) == 2, "image_size must be one number or [height, width]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"invalid configuration: {message}")

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
            raise ValueError(f"unknown configuration key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**values)


def load_config(path: Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """YAML file (optional) then CLI overrides (None values mean 'not given')."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {path} must hold a mapping of keys to values")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(values)
