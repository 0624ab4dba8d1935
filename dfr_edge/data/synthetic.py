"""The embedded default dataset: synthetic defects drawn on textures that ship inside scikit-image.

It lets a fresh machine train and evaluate end to end without downloading MVTec AD. The textures are CC0, so
generated images may be shared freely, and generation is seeded so every machine gets the same files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import skimage
import skimage.data

from dfr_edge.data.images import write_png

TEXTURES = ("brick", "grass", "gravel")
DEFECT_TYPES = ("scratch", "blob", "cutout", "stain")

MIN_DEFECT_FRACTION = 0.003  # of the image area: anything smaller is an ambiguous label
MIN_DEFECT_CONTRAST = 20.0  # mean absolute change inside the mask, in grey levels
SPEC_FILE = "spec.json"
_MAX_ATTEMPTS = 100


def _require_counts(spec: SyntheticSpec | HardSetSpec) -> None:
    """Every split of a generated set needs at least one image."""
    for name in ("n_train", "n_test_good", "n_test_per_defect"):
        if getattr(spec, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(spec, name)}")


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines the generated files: the same spec always gives the same bytes."""

    texture: str = "brick"
    size: int = 256
    n_train: int = 60
    n_test_good: int = 12
    n_test_per_defect: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.texture not in TEXTURES:
            raise ValueError(f"unknown texture {self.texture!r}; choose one of {', '.join(TEXTURES)}")
        if not 32 <= self.size <= 512:
            raise ValueError(f"size must be between 32 and 512 (the texture's size), got {self.size}")
        _require_counts(self)


def generate_dataset(root: Path | str, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Write the dataset in MVTec AD layout under `root/<texture>/` and return that folder.

    A folder already generated with the same spec is reused as is, so callers can run this unconditionally.
    """
    texture = getattr(skimage.data, spec.texture)()
    return _write_dataset(Path(root) / spec.texture, spec, lambda rng: normal_crop(texture, spec.size, rng),
                          DEFECT_TYPES, _readme(spec))


def _write_dataset(category: Path, spec, make_normal: Callable[[np.random.Generator], np.ndarray],
                   defect_types: tuple[str, ...], readme: str, strength: float = 1.0) -> Path:
    """Train/test images and masks from one seeded generator, in MVTec AD layout; spec.json written last."""
    if _already_generated(category, spec):
        return category
    rng = np.random.default_rng(spec.seed)
    for i in range(spec.n_train):
        write_png(category / "train" / "good" / f"{i:03d}.png", make_normal(rng))
    for i in range(spec.n_test_good):
        write_png(category / "test" / "good" / f"{i:03d}.png", make_normal(rng))
    for defect_type in defect_types:
        for i in range(spec.n_test_per_defect):
            image, mask = add_defect(make_normal(rng), defect_type, rng, strength)
            write_png(category / "test" / defect_type / f"{i:03d}.png", image)
            mask_path = category / "ground_truth" / defect_type / f"{i:03d}_mask.png"
            write_png(mask_path, mask.astype(np.uint8) * 255)
    (category / "README.txt").write_text(readme)
    (category / SPEC_FILE).write_text(_spec_json(spec))  # written last: marks the folder as complete
    return category


def _already_generated(category: Path, spec: SyntheticSpec) -> bool:
    """True when `category` holds this exact dataset; refuses to write over anything else."""
    if not category.exists() or not any(category.iterdir()):
        return False
    spec_file = category / SPEC_FILE
    if spec_file.is_file() and spec_file.read_text() == _spec_json(spec):
        return True
    raise FileExistsError(
        f"{category} is not empty and was not generated with {spec} (its {SPEC_FILE} differs or is missing, "
        f"e.g. after an interrupted run); choose another output folder or delete {category}"
    )


def _spec_json(spec: SyntheticSpec) -> str:
    return json.dumps(asdict(spec), indent=2) + "\n"


def _readme(spec: SyntheticSpec) -> str:
    return f"""\
Synthetic anomaly-detection dataset made by dfr-edge (dfr_edge.data.synthetic.generate_dataset).

Source texture: skimage.data.{spec.texture}() from scikit-image {skimage.__version__}, released under the
Creative Commons CC0 license, so these images may be used and shared freely.

Normal images (train/good, test/good): random {spec.size}x{spec.size} crops of the texture with random
flips, 90-degree rotations and +-5% brightness/contrast jitter, stored as grey 3-channel PNGs.
Defects (test/<type>): {", ".join(DEFECT_TYPES)}, each drawn on a fresh normal crop; its mask
ground_truth/<type>/<name>_mask.png is 255 where the defect changed the image and 0 elsewhere.

Generated from the spec in {SPEC_FILE} (seed {spec.seed}); the same spec and library versions give
byte-identical files.
"""


def normal_crop(texture: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A defect-free sample as uint8 BGR: random crop, flip, rotation and ±5% jitter of a grey texture."""
    y, x = rng.integers(0, np.array(texture.shape) - size + 1)
    crop = np.rot90(texture[y : y + size, x : x + size], k=rng.integers(4))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    contrast, brightness = rng.uniform(0.95, 1.05, 2)
    mean = crop.mean()
    grey = np.clip(np.rint((crop - mean) * contrast + mean * brightness), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, np.newaxis], 3, axis=2)


def add_defect(
    clean: np.ndarray, defect_type: str, rng: np.random.Generator, strength: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect on a copy of `clean` (uint8 HxWx3); return the image and a bool mask of the defect.

    Redraws until the defect is large and contrasted enough that a person would call it a defect, so that
    no ground-truth label is ambiguous. `strength` < 1 blends the defect into the surface (faint defects);
    the contrast asked for shrinks with it.
    """
    if defect_type not in _DRAWERS:
        raise ValueError(f"unknown defect type {defect_type!r}; choose one of {', '.join(_DRAWERS)}")
    base = clean.astype(np.float32)
    min_area = MIN_DEFECT_FRACTION * clean.shape[0] * clean.shape[1]
    for _ in range(_MAX_ATTEMPTS):
        drawn, mask = _DRAWERS[defect_type](base, rng)
        if strength != 1.0:
            drawn = base + strength * (drawn - base)
        image = np.clip(np.rint(drawn), 0, 255).astype(np.uint8)
        if mask.sum() >= min_area and defect_contrast(image, clean, mask) >= MIN_DEFECT_CONTRAST * strength:
            return image, mask
    raise RuntimeError(f"could not draw a visible {defect_type} on a {clean.shape[1]}x{clean.shape[0]} image")


def defect_contrast(image: np.ndarray, clean: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute difference between `image` and `clean` over the pixels of `mask`, in grey levels."""
    return float(np.abs(image.astype(np.float32) - clean)[mask].mean())


def _scratch(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """1-3 thin, slightly bent lines, much darker or brighter than the texture."""
    h, w = base.shape[:2]
    canvas = np.zeros((h, w), np.uint8)
    for _ in range(rng.integers(1, 4)):
        points = [rng.uniform(0.1, 0.9, 2) * (w, h)]
        heading = rng.uniform(0, 2 * np.pi)
        for _ in range(rng.integers(1, 4)):
            heading += rng.normal(0, 0.3)
            step = rng.uniform(0.15, 0.35) * min(h, w)
            points.append(points[-1] + step * np.array([np.cos(heading), np.sin(heading)]))
        thickness = int(rng.integers(2, 5))
        cv2.polylines(canvas, [np.rint(points).astype(np.int32)], False, color=1, thickness=thickness)
    mask = canvas.astype(bool)
    level = rng.uniform(0, 40) if rng.random() < 0.5 else rng.uniform(215, 255)
    image = base.copy()
    image[mask] = level + rng.normal(0, 5, (mask.sum(), 1))
    return image, mask


def _blob(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A lump or dent: a blob whose intensity is shifted and noisier than the texture around it."""
    h, w = base.shape[:2]
    mask = _blob_mask((h, w), rng.uniform(0.2, 0.8, 2) * (w, h), rng.uniform(0.06, 0.16) * min(h, w), rng)
    shift = rng.choice([-1, 1]) * rng.uniform(50, 90)
    image = base.copy()
    image[mask] += shift + rng.normal(0, 8, (mask.sum(), 1))
    return image, mask


def _cutout(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A rotated rectangle of misplaced material (a turned patch from elsewhere) or a flat-coloured hole."""
    h, w = base.shape[:2]
    side = int(rng.uniform(0.15, 0.3) * min(h, w))
    box = cv2.boxPoints(((side / 2, side / 2), tuple(side * rng.uniform(0.5, 0.7, 2)), rng.uniform(0, 90)))
    local = np.zeros((side, side), np.uint8)
    cv2.fillPoly(local, [np.rint(box).astype(np.int32)], 1)
    local = local.astype(bool)
    top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    image = base.copy()
    region = image[top : top + side, left : left + side]
    if rng.random() < 0.5:
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        region[local] = np.rot90(base[y : y + side, x : x + side], k=rng.choice([1, 3]))[local]
    else:
        region[local] = rng.uniform(0, 30) if rng.random() < 0.5 else rng.uniform(225, 255)
    mask = np.zeros((h, w), bool)
    mask[top : top + side, left : left + side] = local
    return image, mask


def _stain(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A translucent, saturated colour blob with a soft edge; the mask is where its opacity exceeds 0.25."""
    h, w = base.shape[:2]
    radius = rng.uniform(0.06, 0.15) * min(h, w)
    shape = _blob_mask((h, w), rng.uniform(0.2, 0.8, 2) * (w, h), radius, rng)
    soft = cv2.GaussianBlur(shape.astype(np.float32), (0, 0), sigmaX=radius * 0.2)
    alpha = (soft * rng.uniform(0.5, 0.8))[:, :, np.newaxis]
    hsv = np.array([[[rng.integers(180), 255, rng.integers(200, 256)]]], np.uint8)
    colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)
    return base * (1 - alpha) + colour * alpha, alpha[:, :, 0] > 0.25


def _blob_mask(
    shape: tuple[int, int], center: np.ndarray, radius: float, rng: np.random.Generator
) -> np.ndarray:
    """A filled ellipse or irregular polygon around `center` (x, y): the outline of blobs and stains."""
    canvas = np.zeros(shape, np.uint8)
    if rng.random() < 0.5:
        axes = np.maximum(1, np.rint(radius * rng.uniform(0.5, 1.0, 2))).astype(int)
        center_px = np.rint(center).astype(int)
        cv2.ellipse(canvas, center_px.tolist(), axes.tolist(), rng.uniform(0, 180), 0, 360, 1, thickness=-1)
    else:
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(6, 12)))
        radii = radius * rng.uniform(0.5, 1.0, angles.size)
        points = center + radii[:, np.newaxis] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        cv2.fillPoly(canvas, [np.rint(points).astype(np.int32)], 1)
    return canvas.astype(bool)


def fractal_noise(shape: tuple[int, int], cell: float, rng: np.random.Generator, octaves: int = 4,
                  stretch: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Perlin-like fractal noise (octaves of bicubically upsampled random grids), zero mean, unit std.

    `cell` is the largest feature size in pixels; `stretch` (y, x) elongates features, e.g. brushed metal.
    """
    h, w = shape
    total = np.zeros(shape, np.float32)
    for octave in range(octaves):
        size = cell / 2**octave
        grid_h = max(2, int(np.ceil(h / (size * stretch[0]))) + 1)
        grid_w = max(2, int(np.ceil(w / (size * stretch[1]))) + 1)
        grid = rng.standard_normal((grid_h, grid_w)).astype(np.float32)
        total += 0.5**octave * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return (total - total.mean()) / max(float(total.std()), 1e-6)


def _crack(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A thin (1-2 px) jagged crack: a random walk along a main direction, darker than the surface."""
    h, w = base.shape[:2]
    canvas = np.zeros((h, w), np.uint8)
    point = rng.uniform(0.15, 0.85, 2) * (w, h)
    main = heading = rng.uniform(0, 2 * np.pi)
    points = [point]
    for _ in range(int(rng.uniform(0.25, 0.6) * max(h, w) / 4)):
        heading = main + 0.8 * (heading - main) + rng.normal(0, 0.3)  # wanders, but keeps its direction
        points.append(np.clip(points[-1] + 4 * np.array([np.cos(heading), np.sin(heading)]), 0, (w - 1, h - 1)))
    cv2.polylines(canvas, [np.rint(points).astype(np.int32)], False, color=1, thickness=int(rng.integers(1, 3)))
    mask = canvas.astype(bool)
    image = base.copy()
    image[mask] = base[mask] * rng.uniform(0.2, 0.5) + rng.normal(0, 3, (mask.sum(), 1))
    return image, mask


def _pit(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A small round pit: a dark disc (2-5% of the short side) with a thin bright rim on one side."""
    h, w = base.shape[:2]
    radius = max(2.0, rng.uniform(0.02, 0.05) * min(h, w))
    cy, cx = rng.uniform(0.1, 0.9, 2) * (h, w)
    yy, xx = np.mgrid[:h, :w]
    distance = np.hypot(yy - cy, xx - cx)
    mask = distance <= radius
    angle = rng.uniform(0, 2 * np.pi)
    rim = (distance > radius) & (distance <= radius + 1.5) & (np.cos(np.arctan2(yy - cy, xx - cx) - angle) > 0.3)
    image = base.copy()
    image[mask] *= rng.uniform(0.3, 0.6)
    image[rim] = np.minimum(255, image[rim] * 1.3 + 20)
    return image, mask | rim


def _perlin_stain(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An irregular stain: fractal noise thresholded inside a blob, soft-edged, lighter or darker; the mask is
    where its opacity exceeds 0.25, as for `_stain`."""
    h, w = base.shape[:2]
    radius = rng.uniform(0.1, 0.25) * min(h, w)
    region = _blob_mask((h, w), rng.uniform(0.25, 0.75, 2) * (w, h), radius, rng)
    shape = region & (fractal_noise((h, w), radius / 2, rng, octaves=3) > rng.uniform(-0.5, 0.3))
    alpha = cv2.GaussianBlur(shape.astype(np.float32), (0, 0), sigmaX=max(1.0, radius * 0.08))
    shift = rng.choice([-1, 1]) * rng.uniform(30, 60)
    return base + (shift * alpha)[:, :, np.newaxis], alpha > 0.25


def _cutpaste(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """CutPaste (Li et al. 2021): a rectangle of the image copied elsewhere with its brightness changed."""
    h, w = base.shape[:2]
    ph, pw = (rng.uniform(0.08, 0.25, 2) * (h, w)).astype(int) + 2
    sy, sx = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
    ty, tx = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
    patch = base[sy : sy + ph, sx : sx + pw] * rng.uniform(0.6, 1.4) + rng.uniform(-20, 20)
    image = base.copy()
    image[ty : ty + ph, tx : tx + pw] = patch
    mask = np.zeros((h, w), bool)
    mask[ty : ty + ph, tx : tx + pw] = True
    return image, mask


_DRAWERS = {"scratch": _scratch, "blob": _blob, "cutout": _cutout, "stain": _stain, "crack": _crack, "pit": _pit,
            "perlin_stain": _perlin_stain, "cutpaste": _cutpaste}


# ----------------------------------------------------------------------------------------------
# Hard sets: surfaces like the parts where the default model failed (issue 10), generated so they ship.


def strip_surface(rng: np.random.Generator) -> np.ndarray:
    """Brushed metal, a tall 128 x 320 (W x H) strip: vertical streaks, grain and uneven lighting."""
    h, w = 320, 128
    streaks = fractal_noise((h, w), 24, rng, stretch=(8.0, 0.25))
    light = np.linspace(rng.uniform(-15, 15), rng.uniform(-15, 15), h, dtype=np.float32)[:, np.newaxis]
    grey = rng.uniform(130, 160) + 10 * streaks + light + rng.normal(0, 3, (h, w))
    return _as_bgr(grey)


def grey_crop_surface(rng: np.random.Generator) -> np.ndarray:
    """A machined grey part cropped at 100-265 px a side (aspect up to 1.25) under varying lighting."""
    side = rng.uniform(100, 265)
    h, w = int(side), int(side * rng.uniform(0.8, 1.25))
    grey = 128 + 18 * fractal_noise((h, w), 0.4 * side, rng) + rng.normal(0, 5, (h, w))
    return _as_bgr(grey * rng.uniform(0.7, 1.3))


def rubber_surface(rng: np.random.Generator) -> np.ndarray:
    """Dark, low-contrast rubber at 256 x 192 (W x H, 4:3 like a 800 x 600 camera): fine grain and mottling."""
    h, w = 192, 256
    grey = rng.uniform(35, 50) + 4 * fractal_noise((h, w), 12, rng) + rng.normal(0, 3, (h, w))
    return _as_bgr(grey)


def _as_bgr(grey: np.ndarray) -> np.ndarray:
    grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, np.newaxis], 3, axis=2)


@dataclass(frozen=True)
class HardSet:
    surface: Callable[[np.random.Generator], np.ndarray]
    defect_types: tuple[str, ...]
    description: str
    strength: float = 1.0  # defects blended into the surface at this opacity (see add_defect)


HARD_SETS = {
    "strip_cracks": HardSet(strip_surface, ("crack", "scratch"),
                            "tall brushed-metal strips (128 x 320, W x H) with thin cracks and scratches"),
    "grey_pits": HardSet(grey_crop_surface, ("pit", "crack"),
                         "grey crops of 100-265 px a side and +-30% brightness with small pits and cracks"),
    "dark_rubber": HardSet(rubber_surface, ("perlin_stain", "crack", "cutpaste"),
                           "dark low-contrast rubber (256 x 192) with stains, cuts and misplaced material"),
    "faint_rubber": HardSet(rubber_surface, ("perlin_stain", "crack", "cutpaste"),
                            "the dark rubber with its defects at 35% opacity (7+ grey levels)", strength=0.35),
}


@dataclass(frozen=True)
class HardSetSpec:
    """A hard set's name, counts and seed: the same spec always gives the same bytes."""

    name: str = "strip_cracks"
    n_train: int = 40
    n_test_good: int = 8
    n_test_per_defect: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in HARD_SETS:
            raise ValueError(f"unknown hard set {self.name!r}; choose one of {', '.join(HARD_SETS)}")
        _require_counts(self)


def generate_hard_set(root: Path | str, spec: HardSetSpec = HardSetSpec()) -> Path:
    """Write one hard set in MVTec AD layout under `root/<name>/` (reused when already generated)."""
    hard = HARD_SETS[spec.name]
    readme = f"""\
Synthetic hard anomaly-detection set made by dfr-edge (dfr_edge.data.synthetic.generate_hard_set).

{spec.name}: {hard.description}. Surfaces are generated noise (no source images).
Defects: {", ".join(hard.defect_types)}, each drawn on a fresh normal image, masks in
ground_truth/<type>/<name>_mask.png. Seed {spec.seed}; the spec in {SPEC_FILE} and the same library
versions give byte-identical files.
"""
    return _write_dataset(Path(root) / spec.name, spec, hard.surface, hard.defect_types, readme, hard.strength)
