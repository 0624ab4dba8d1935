"""Model selection without labelled defects: paste synthetic anomalies on held-out good images, score a grid.

Users setting up a line rarely have labelled defects. A slice of the good training images is held out; cut-paste
patches, Perlin-noise stains and scratches (the embedded generator's drawers) are pasted on them, and each grid
point (image size, layer set, CAE steps, map sigma, image-score rule) is trained on the rest and scored on them
with the usual metrics. When the dataset has a labelled test split it can be used instead (or as well, to see
how far the synthetic ranking agrees with the real one).

Cost is kept down by sharing work across the grid: images are loaded once per size, backbone features once per
(size, layers), the CAE is trained once per (size, layers, steps), and sigma and the score rule only change the
head, so they are scored on the same reconstruction; pixel metrics do not depend on the score rule at all.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from scipy.stats import spearmanr

from dfr_edge.backbones import build_backbone
from dfr_edge.cae import CAE
from dfr_edge.config import TrainConfig
from dfr_edge.data.images import read_image, read_images
from dfr_edge.data.mvtec import Dataset, TestArrays, load_test_arrays, require_test_set
from dfr_edge.data.synthetic import add_defect
from dfr_edge.geometry import Geometry, model_inputs
from dfr_edge.manifest import write_text_atomic
from dfr_edge.metrics import Metrics, image_auroc, pixel_auroc, pro_auc
from dfr_edge.model import AnomalyHead, FeatureExtractor, check_image_size
from dfr_edge.trainer import EXTRACT_BATCH, FeatureRows, extract_features, pca_latent_dim, split_train_val, train_cae

log = logging.getLogger(__name__)

ANOMALY_KINDS = ("cutpaste", "perlin_stain", "scratch")
EVAL_SETS = ("synthetic", "labelled")
OBJECTIVES = ("mean", "pixel_auroc", "pro", "image_auroc")
# Pasted anomalies at opacities from 30% to full: ranked the grid like the labelled defects on bottle (Spearman
# of pixel AUROC 1.0 against 0.6 at full opacity) and no worse elsewhere within 0.0004 (benchmarks/README.md).
PASTE_STRENGTH = (0.3, 1.0)


@dataclass(frozen=True)
class TuneGrid:
    """The values tried; every combination is one grid point. A layer set of None is the backbone's default."""

    image_sizes: tuple[tuple[int, int], ...] = ((256, 256),)
    layer_sets: tuple[tuple[str, ...] | None, ...] = (None,)
    steps: tuple[int, ...] = (1500, 6000)
    sigmas: tuple[float, ...] = (2.0, 4.0)
    scores: tuple[str, ...] = ("topk:1000", "max", "quantile:0.99")  # ties go to the first: the default

    def __post_init__(self) -> None:
        for name in ("image_sizes", "layer_sets", "steps", "sigmas", "scores"):
            if not getattr(self, name):
                raise ValueError(f"tuning grid: {name} is empty; give at least one value")
        for height, width in self.image_sizes:
            check_image_size(height, width)
            for score in self.scores:  # refuses rules the head cannot compute at this size, before any work
                AnomalyHead((height, width), 1, score=score)

    @property
    def points(self) -> int:
        return (len(self.image_sizes) * len(self.layer_sets) * len(self.steps) * len(self.sigmas)
                * len(self.scores))


@dataclass
class GridPoint:
    image_size: tuple[int, int]
    layers: tuple[str, ...] | None
    steps: int
    sigma: float
    score: str
    metrics: dict[str, Metrics]  # per evaluation set: "synthetic" and/or "labelled"
    train_s: float  # CAE training time of this (size, layers, steps)

    def config(self, base: TrainConfig) -> TrainConfig:
        return dataclasses.replace(base, image_size=list(self.image_size),
                                   layers=list(self.layers) if self.layers else None,
                                   steps=self.steps, epochs=None, sigma=self.sigma, score=self.score)


@dataclass
class Agreement:
    """How well choosing by synthetic anomalies would have done on the labelled defects."""

    spearman: float  # rank correlation of the objective over all grid points, synthetic vs labelled
    spearman_pixel_auroc: float
    regret: float  # best labelled objective minus the labelled objective of the synthetic pick
    regret_pixel_auroc: float  # best labelled pixel AUROC minus that of the synthetic pick


@dataclass
class TuneResult:
    points: list[GridPoint]
    selected_by: str
    objective: str
    best: int  # index into points
    agreement: Agreement | None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def winner(self) -> GridPoint:
        return self.points[self.best]


def objective_value(metrics: Metrics, objective: str) -> float:
    if objective == "mean":
        return (metrics.image_auroc + metrics.pixel_auroc + metrics.pro) / 3
    return getattr(metrics, objective)


def paste_anomalies(images: list[np.ndarray], per_image: int, seed: int,
                    strength: tuple[float, float] = (1.0, 1.0)) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Each good image as it is, plus `per_image` copies with one pasted anomaly each (kinds in turn).

    Each anomaly's opacity is drawn uniformly from `strength` (low, high); faint ones stand for faint defects.
    Returns images, bool masks and kinds ("good" for the originals), at the images' own resolution.
    """
    rng = np.random.default_rng(seed)
    out_images, masks, labels = [], [], []
    turn = 0
    for image in images:
        out_images.append(image)
        masks.append(np.zeros(image.shape[:2], bool))
        labels.append("good")
        for _ in range(per_image):
            kind = ANOMALY_KINDS[turn % len(ANOMALY_KINDS)]
            turn += 1
            opacity = rng.uniform(*strength) if strength[0] < strength[1] else strength[0]
            pasted, mask = add_defect(image, kind, rng, opacity)
            out_images.append(pasted)
            masks.append(mask)
            labels.append(kind)
    return out_images, masks, labels


def sampled_test_set(images: list[np.ndarray], masks: list[np.ndarray], kinds: list[str], paths: list[Path],
                     geometry: Geometry) -> TestArrays:
    """The pasted images and masks through `geometry.sample`, as load_test_arrays does for a labelled split."""
    return TestArrays(
        images=np.stack([geometry.sample(img) for img in images]),
        masks=np.stack([geometry.sample_mask(m) for m in masks]),
        labels=np.array([k != "good" for k in kinds]),
        paths=paths,
        defect_types=list(kinds),
        geometry=geometry.sampled(),
    )


def score_heads(features: torch.Tensor, cae: CAE, masks: np.ndarray, size: tuple[int, int], sigma: float,
                scores: tuple[str, ...]) -> dict[str, Metrics]:
    """Metrics of every score rule at one sigma: the map (and so the pixel metrics) is computed once."""
    head = AnomalyHead(size, features.shape[1], sigma)
    rules = {score: AnomalyHead(size, features.shape[1], sigma, score) for score in scores}
    maps, image_scores = [], {score: [] for score in scores}
    with torch.inference_mode():
        for start in range(0, len(features), EXTRACT_BATCH):
            batch = features[start : start + EXTRACT_BATCH]
            amap, _ = head(batch, cae(batch))
            maps.append(amap.numpy())
            for score, rule in rules.items():
                image_scores[score].append(rule.image_score(amap).numpy())
    maps = np.concatenate(maps)
    labels = masks.reshape(len(masks), -1).any(axis=1)
    pixel, pro = pixel_auroc(maps, masks), pro_auc(maps, masks)
    return {score: Metrics(image_auroc(np.concatenate(values), labels), pixel, pro)
            for score, values in image_scores.items()}


def tune(dataset: Dataset, grid: TuneGrid, base: TrainConfig, sets: tuple[str, ...] = ("synthetic",),
         select: str = "synthetic", objective: str = "mean", holdout: float = 0.2,
         anomalies_per_image: int = 2, paste_strength: tuple[float, float] = PASTE_STRENGTH) -> TuneResult:
    """Train and score every grid point on `sets`; pick the best by `objective` on the `select` set.

    CAEs are trained on the good images not held out, whichever set selects, so that with both sets the
    synthetic and the labelled ranking judge the same models. The CAE starts from the same seed at every
    point, so its initialisation differs from dfr-train's (which seeds once, before the backbone).
    """
    if select not in sets or not set(sets) <= set(EVAL_SETS):
        raise ValueError(f"evaluation sets {sets} must be among {EVAL_SETS} and include the selecting set {select!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if "labelled" in sets:
        require_test_set(dataset)
    if base.resize != "stretch" or base.tile or base.image_size == "auto":
        raise ValueError("dfr-tune scores stretched images at fixed sizes for now: leave resize 'stretch', tile "
                         "and image_size 'auto' out of the base configuration (an ROI is fine)")
    t_start = time.perf_counter()
    fit_paths, held_paths = split_train_val(dataset.train, holdout, base.seed)
    synthetic = None
    if "synthetic" in sets:
        if len(held_paths) < 2:
            raise ValueError(f"{dataset.root}: too few good images to hold out for synthetic anomalies "
                             f"({len(held_paths)} of {len(dataset.train)}); add good images or raise --holdout")
        pasted = paste_anomalies([read_image(p) for p in held_paths], anomalies_per_image, base.seed,
                                 strength=paste_strength)
        synthetic = (*pasted, [p for p in held_paths for _ in range(anomalies_per_image + 1)])
    log.info("tuning %d grid points: %d images to fit, %d held out for synthetic anomalies",
             grid.points, len(fit_paths), len(held_paths))

    points: list[GridPoint] = []
    seconds = {"extract_s": 0.0, "train_s": 0.0, "score_s": 0.0}
    for size in grid.image_sizes:
        geometry = base.geometry(*size)
        fit_images = model_inputs(read_images(fit_paths, geometry.sample, skip_bad=base.skip_bad_images).images,
                                  geometry.sampled())
        tests = {}
        if synthetic is not None:
            tests["synthetic"] = sampled_test_set(*synthetic, geometry)
        if "labelled" in sets:
            tests["labelled"] = load_test_arrays(dataset, geometry)
        for layers in grid.layer_sets:
            config = dataclasses.replace(base, image_size=list(size), layers=list(layers) if layers else None)
            torch.manual_seed(base.seed)
            t0 = time.perf_counter()
            backbone = build_backbone(config.backbone, config.layers, config.backbone_weights, config.vgg_mode)
            extractor = FeatureExtractor(backbone.module, backbone.mean, backbone.std, tuple(size))
            rows = FeatureRows(extractor, fit_images, cached=True, desc=f"features {size[0]}x{size[1]}")
            test_features = {name: extract_features(extractor, t.images) for name, t in tests.items()}
            latent = config.latent_dim or pca_latent_dim(extractor, rows, fit_images, config)
            seconds["extract_s"] += time.perf_counter() - t0
            for steps in grid.steps:
                torch.manual_seed(base.seed)
                cae = CAE(extractor.channels, latent)
                t0 = time.perf_counter()
                train_cae(cae, rows, None, dataclasses.replace(config, steps=steps, epochs=None))
                cae.eval()
                train_s = time.perf_counter() - t0
                seconds["train_s"] += train_s
                t0 = time.perf_counter()
                for sigma in grid.sigmas:
                    scored = {name: score_heads(test_features[name], cae, tests[name].masks, tuple(size), sigma,
                                                grid.scores) for name in tests}
                    for score in grid.scores:
                        points.append(GridPoint(tuple(size), tuple(layers) if layers else None, steps, sigma, score,
                                                {name: scored[name][score] for name in tests}, round(train_s, 1)))
                seconds["score_s"] += time.perf_counter() - t0
            del rows, test_features
    values = [objective_value(p.metrics[select], objective) for p in points]
    best = int(np.argmax(values))  # first of equals: the grid's order (smaller, cheaper first) breaks ties
    agreement = measure_agreement(points, objective) if set(EVAL_SETS) <= set(sets) else None
    seconds["total_s"] = time.perf_counter() - t_start
    return TuneResult(points, select, objective, best, agreement, {k: round(v, 1) for k, v in seconds.items()})


def measure_agreement(points: list[GridPoint], objective: str) -> Agreement:
    synthetic = np.array([objective_value(p.metrics["synthetic"], objective) for p in points])
    labelled = np.array([objective_value(p.metrics["labelled"], objective) for p in points])
    syn_px = np.array([p.metrics["synthetic"].pixel_auroc for p in points])
    lab_px = np.array([p.metrics["labelled"].pixel_auroc for p in points])
    pick = int(np.argmax(synthetic))

    def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
        return float(spearmanr(a, b).statistic) if len(a) > 1 and a.std() > 0 and b.std() > 0 else float("nan")

    return Agreement(
        spearman=rank_correlation(synthetic, labelled),
        spearman_pixel_auroc=rank_correlation(syn_px, lab_px),
        regret=float(labelled.max() - labelled[pick]),
        regret_pixel_auroc=float(lab_px.max() - lab_px[pick]),
    )


def write_config(config: TrainConfig, path: Path, force: bool = False) -> Path:
    """The winning configuration as YAML that `dfr-train --config` loads; never overwrites silently."""
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} already exists; choose another --out or pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
    return path


def result_rows(result: TuneResult) -> tuple[list[str], list[list]]:
    """Headers and rows of the grid table: one row per point, the winner marked with '*'."""
    sets = list(result.points[0].metrics)
    headers = ["", "size", "layers", "steps", "sigma", "score", "CAE s"]
    for name in sets:
        headers += [f"{name} image", f"{name} pixel", f"{name} PRO"]
    rows = []
    for i, p in enumerate(result.points):
        row = ["*" if i == result.best else "", f"{p.image_size[0]}x{p.image_size[1]}",
               ",".join(p.layers) if p.layers else "default", p.steps, p.sigma, p.score, p.train_s]
        for name in sets:
            m = p.metrics[name]
            row += [m.image_auroc, m.pixel_auroc, m.pro]
        rows.append(row)
    return headers, rows


def result_record(result: TuneResult, base: TrainConfig) -> dict:
    """Everything a run found, JSON-ready: grid points, the pick, agreement and timings."""
    return {
        "selected_by": result.selected_by,
        "objective": result.objective,
        "winner": result.winner.config(base).to_dict(),
        "agreement": dataclasses.asdict(result.agreement) if result.agreement else None,
        "seconds": result.seconds,
        "points": [{"image_size": list(p.image_size), "layers": list(p.layers) if p.layers else None,
                    "steps": p.steps, "sigma": p.sigma, "score": p.score, "cae_s": p.train_s,
                    **{name: m.to_dict() for name, m in p.metrics.items()}} for p in result.points],
    }
