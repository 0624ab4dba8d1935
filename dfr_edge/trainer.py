"""Train DFR on normal images: extract features once, size the CAE by PCA, train it, threshold.

The backbone is frozen and there is no augmentation, so features are computed once and cached
(within a memory bound; beyond it they are recomputed every epoch). The 1x1 CAE is a per-position
MLP, so positions from all images are shuffled together and trained in small batches: the number
of optimizer steps matters far more than the number of passes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from dfr_edge.backbones import Backbone, build_backbone
from dfr_edge.cae import CAE, latent_dim_by_pca
from dfr_edge.config import AUTO, TrainConfig
from dfr_edge.data.images import read_images
from dfr_edge.data.mvtec import Dataset
from dfr_edge.geometry import ASPECT_WARN_RATIO, Geometry, aspect_spread, auto_image_size, model_inputs, predict_frames
from dfr_edge.model import DFRModel, FeatureExtractor, check_image_size
from dfr_edge.predict import predict_torch
from dfr_edge.thresholds import Thresholds, normal_statistics, thresholds_from_normal

log = logging.getLogger(__name__)
EXTRACT_BATCH = 8


@dataclass
class EpochLog:
    epoch: int
    steps: int
    train_loss: float
    val_loss: float | None
    seconds: float


@dataclass
class TrainResult:
    model: DFRModel
    config: TrainConfig
    backbone: Backbone
    latent_dim: int
    channels: int
    thresholds: Thresholds
    normal_stats: dict
    train_paths: list[Path]
    val_paths: list[Path]
    skipped: list[tuple[Path, str]]
    geometry: Geometry
    auto_size: dict | None  # how image_size auto chose the model size, if it did
    history: list[EpochLog] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    feature_cache: str = "memory"


def extract_features(extractor: FeatureExtractor, images: np.ndarray, desc: str | None = None) -> torch.Tensor:
    """N x C x h x w features of uint8 BGR images, computed in small batches."""
    chunks = []
    starts = range(0, len(images), EXTRACT_BATCH)
    with torch.inference_mode():
        for start in tqdm(starts, desc=desc, disable=desc is None, unit="batch", leave=False):
            chunks.append(extractor(torch.from_numpy(images[start : start + EXTRACT_BATCH])))
    return torch.cat(chunks)


def as_rows(features: torch.Tensor) -> torch.Tensor:
    """N x C x h x w → (N*h*w) x C: one row per position."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]).contiguous()


class FeatureRows:
    """Feature vectors of a set of images: held in memory, or recomputed per pass when too big."""

    def __init__(self, extractor: FeatureExtractor, images: np.ndarray, cached: bool, desc: str):
        self.extractor, self.images = extractor, images
        self.rows = as_rows(extract_features(extractor, images, desc)) if cached else None

    def _chunks(self, rng: np.random.Generator | None) -> Iterator[torch.Tensor]:
        if self.rows is not None:
            yield self.rows
            return
        order = rng.permutation(len(self.images)) if rng is not None else np.arange(len(self.images))
        for start in range(0, len(order), 4 * EXTRACT_BATCH):
            picked = np.sort(order[start : start + 4 * EXTRACT_BATCH])
            yield as_rows(extract_features(self.extractor, self.images[picked]))

    def batches(self, batch_size: int, rng: np.random.Generator) -> Iterator[torch.Tensor]:
        """Shuffled batches of rows covering every position once."""
        for rows in self._chunks(rng):
            perm = torch.from_numpy(rng.permutation(len(rows)))
            for start in range(0, len(rows) - batch_size + 1, batch_size):
                yield rows[perm[start : start + batch_size]]

    def mean_loss(self, cae: CAE) -> float:
        total, count = 0.0, 0
        with torch.inference_mode():
            for rows in self._chunks(None):
                for start in range(0, len(rows), 65536):
                    part = rows[start : start + 65536]
                    total += F.mse_loss(cae.forward_rows(part), part, reduction="sum").item()
                    count += part.numel()
        return total / count


def split_train_val(paths: list[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """A seeded held-out slice of the normal training images (never the test set)."""
    if fraction <= 0 or len(paths) < 2:
        return list(paths), []
    n_val = min(len(paths) - 1, max(1, round(len(paths) * fraction)))
    order = np.random.default_rng(seed).permutation(len(paths))
    val = sorted(paths[i] for i in order[:n_val])
    train = sorted(paths[i] for i in order[n_val:])
    return train, val


def fits_in_cache(n_images: int, channels: int, grid: tuple[int, int], max_gb: float) -> bool:
    return n_images * channels * grid[0] * grid[1] * 4 <= max_gb * 2**30


def train_cae(cae: CAE, rows: FeatureRows, val: FeatureRows | None, config: TrainConfig) -> list[EpochLog]:
    """Adam on shuffled position batches for `config.steps` steps (or `config.epochs` passes)."""
    rng = np.random.default_rng(config.seed)
    optimizer = torch.optim.Adam(cae.parameters(), lr=config.learning_rate)
    max_steps = None if config.epochs else config.steps
    history, step, epoch = [], 0, 0
    progress = tqdm(total=config.epochs or config.steps, desc="train CAE", unit="epoch" if config.epochs else "step")
    while (epoch < config.epochs) if config.epochs else (step < max_steps):
        epoch += 1
        start, losses = time.perf_counter(), []
        cae.train()
        for batch in rows.batches(config.batch_positions, rng):
            loss = F.mse_loss(cae.forward_rows(batch), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
            if max_steps is not None:
                progress.update(1)
                if step >= max_steps:
                    break
        if not losses:
            raise ValueError(f"too few feature positions for one batch of {config.batch_positions}")
        cae.eval()
        val_loss = val.mean_loss(cae) if val is not None else None
        history.append(EpochLog(epoch, step, float(np.mean(losses)), val_loss, time.perf_counter() - start))
        if max_steps is None:
            progress.update(1)
        progress.set_postfix(loss=f"{history[-1].train_loss:.4f}", val="-" if val_loss is None else f"{val_loss:.4f}")
    progress.close()
    return history


def train(config: TrainConfig, dataset: Dataset) -> TrainResult:
    """The whole training stage; returns the fused model with thresholds and a record of the run."""
    t_start = time.perf_counter()
    torch.manual_seed(config.seed)
    geometry, auto_size = resolve_geometry(config, dataset.train)
    height, width = geometry.size
    check_image_size(height, width)
    config = dataclasses.replace(config, image_size=[height, width])  # the bundle records the size used
    train_paths, val_paths = split_train_val(dataset.train, config.val_fraction, config.seed)
    skip, remedy = config.skip_bad_images, "remove it or pass --skip-bad-images"
    # Frames at the model's sampling rate (ROI cut); the model inputs are their tiles/resized views.
    loaded = read_images(train_paths, geometry.sample, skip_bad=skip, remedy=remedy)
    loaded_val = read_images(val_paths, geometry.sample, skip_bad=skip, remedy=remedy) if val_paths else None
    skipped = loaded.skipped + (loaded_val.skipped if loaded_val else [])
    for path, reason in skipped:
        log.warning("skipped %s: %s", path, reason)
    warn_mixed_aspects(loaded.sizes + (loaded_val.sizes if loaded_val else []), geometry)
    sampled = geometry.sampled()
    inputs = model_inputs(loaded.images, sampled)
    val_inputs = model_inputs(loaded_val.images, sampled) if loaded_val else None

    backbone = build_backbone(config.backbone, config.layers, config.backbone_weights, config.vgg_mode)
    extractor = FeatureExtractor(backbone.module, backbone.mean, backbone.std, (height, width))
    grid = (height // 4, width // 4)
    n_inputs = len(inputs) + (len(val_inputs) if val_inputs is not None else 0)
    cached = fits_in_cache(n_inputs, extractor.channels, grid, config.cache_max_gb)
    log.info("backbone %s, C=%d, %d training images (%d model inputs), feature cache: %s", backbone.name,
             extractor.channels, len(loaded.paths), len(inputs), "memory" if cached else "streamed")

    t0 = time.perf_counter()
    rows = FeatureRows(extractor, inputs, cached, "extract train features")
    val_rows = FeatureRows(extractor, val_inputs, cached, "extract val features") if loaded_val else None
    t_extract = time.perf_counter() - t0

    t0 = time.perf_counter()
    latent = config.latent_dim or pca_latent_dim(extractor, rows, inputs, config)
    t_pca = time.perf_counter() - t0
    log.info("latent size d=%d (%s)", latent, "fixed" if config.latent_dim else f"PCA {config.pca_explained:.0%}")

    cae = CAE(extractor.channels, latent)
    t0 = time.perf_counter()
    history = train_cae(cae, rows, val_rows, config)
    t_train = time.perf_counter() - t0

    model = DFRModel(extractor, cae.eval(), config.sigma, config.score).eval()
    threshold_images = loaded_val.images if loaded_val else loaded.images
    if not loaded_val:
        log.warning("no held-out images: thresholds come from the training images and will be optimistic")
    # Thresholds on whole frames through the same geometry as evaluation and the runtime: stitched
    # tiles, padding and pixels outside a crop left out.
    regions = predict_frames(partial(predict_torch, model), threshold_images, sampled,
                             score_of=model.head.score_rule.of)
    maps = np.concatenate([r.valid_values() for r in regions])
    scores = np.array([r.score for r in regions], np.float32)
    thresholds = thresholds_from_normal(maps, scores, config.pixel_fpr, config.image_quantile)
    return TrainResult(
        model=model,
        config=config,
        backbone=backbone,
        latent_dim=latent,
        channels=extractor.channels,
        thresholds=thresholds,
        normal_stats=normal_statistics(maps, scores),
        train_paths=loaded.paths,
        val_paths=loaded_val.paths if loaded_val else [],
        skipped=skipped,
        geometry=geometry,
        auto_size=auto_size,
        history=history,
        timings={"extract_s": t_extract, "pca_s": t_pca, "train_s": t_train,
                 "total_s": time.perf_counter() - t_start},
        feature_cache="memory" if cached else "streamed",
    )


def resolve_geometry(config: TrainConfig, paths: list[Path]) -> tuple[Geometry, dict | None]:
    """The configured geometry; with image_size auto, its size picked from the images' sizes."""
    if config.image_size != AUTO:
        return config.geometry(*config.height_width), None
    sizes = region_sizes(paths, config.roi)
    height, width = auto_image_size(sizes, config.auto_max_pixels)
    median = [int(np.median([s[i] for s in sizes])) for i in (0, 1)]
    log.info("image size auto: %dx%d (h x w) for images of median size %dx%d within %d pixels",
             height, width, *median, config.auto_max_pixels)
    return config.geometry(height, width), {"median_size": median, "max_pixels": config.auto_max_pixels,
                                            "chosen": [height, width]}


def region_sizes(paths: list[Path], roi: list[int] | None) -> list[tuple[int, int]]:
    """(h, w) of the part of each image the model sees, from file headers (no decoding)."""
    if roi:
        return [(roi[3], roi[2])]
    sizes = []
    for path in paths:
        try:
            with Image.open(path) as img:
                sizes.append((img.height, img.width))
        except (OSError, ValueError):
            continue  # the loader reports unreadable files (or skips them with skip_bad_images)
    return sizes


def warn_mixed_aspects(sizes: list[tuple[int, int]], geometry: Geometry) -> None:
    if geometry.roi is not None or not sizes:
        return
    low, high = aspect_spread(sizes)
    if high / low > ASPECT_WARN_RATIO:
        log.warning("training images differ in aspect (width/height %.2f to %.2f): with resize %s they are "
                    "seen at different scales or distortions; consider resize letterbox or crop, or one ROI",
                    low, high, geometry.resize)


def pca_latent_dim(extractor: FeatureExtractor, rows: FeatureRows, images: np.ndarray, config: TrainConfig) -> int:
    """PCA over the positions of the first `pca_images` training images (sorted by name)."""
    count = min(config.pca_images, len(images))
    positions = count * (extractor.image_size[0] // 4) * (extractor.image_size[1] // 4)
    if rows.rows is not None:
        vectors = rows.rows[:positions]
    else:
        vectors = as_rows(extract_features(extractor, images[:count]))
    return latent_dim_by_pca(vectors.numpy(), config.pca_explained)
