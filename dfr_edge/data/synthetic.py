"""The embedded default dataset: synthetic defects drawn on textures that ship inside scikit-image.

It lets a fresh machine train and evaluate end to end without downloading MVTec AD. The textures are CC0, so
generated images may be shared freely, and generation is seeded so every machine gets the same files.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import skimage
import skimage.data

TEXTURES = ("brick", "grass", "gravel")
DEFECT_TYPES = ("scratch", "blob", "cutout", "stain")

MIN_DEFECT_FRACTION = 0.003  # of the image area: anything smaller is an ambiguous label
MIN_DEFECT_CONTRAST = 20.0  # mean absolute change inside the mask, in grey levels
SPEC_FILE = "spec.json"
_MAX_ATTEMPTS = 100


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
        for name in ("n_train", "n_test_good", "n_test_per_defect"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


def generate_dataset(root: Path | str, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Write the dataset in MVTec AD layout under `root/<texture>/` and return that folder.

    A folder already generated with the same spec is reused as is, so callers can run this unconditionally.
    """
    category = Path(root) / spec.texture
    if _already_generated(category, spec):
        return category
    texture = getattr(skimage.data, spec.texture)()
    rng = np.random.default_rng(spec.seed)
    for i in range(spec.n_train):
        _write_png(category / "train" / "good" / f"{i:03d}.png", normal_crop(texture, spec.size, rng))
    for i in range(spec.n_test_good):
        _write_png(category / "test" / "good" / f"{i:03d}.png", normal_crop(texture, spec.size, rng))
    for defect_type in DEFECT_TYPES:
        for i in range(spec.n_test_per_defect):
            image, mask = add_defect(normal_crop(texture, spec.size, rng), defect_type, rng)
            _write_png(category / "test" / defect_type / f"{i:03d}.png", image)
            mask_path = category / "ground_truth" / defect_type / f"{i:03d}_mask.png"
            _write_png(mask_path, mask.astype(np.uint8) * 255)
    (category / "README.txt").write_text(_readme(spec))
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


def _write_png(path: Path, image: np.ndarray) -> None:
    """Encode in memory and write the bytes: unlike cv2.imwrite this works with non-ASCII paths."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"cannot encode {path} as PNG")
    encoded.tofile(path)


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
    clean: np.ndarray, defect_type: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect on a copy of `clean` (uint8 HxWx3); return the image and a bool mask of the defect.

    Redraws until the defect is large and contrasted enough that a person would call it a defect, so that
    no ground-truth label is ambiguous.
    """
    if defect_type not in _DRAWERS:
        raise ValueError(f"unknown defect type {defect_type!r}; choose one of {', '.join(DEFECT_TYPES)}")
    base = clean.astype(np.float32)
    min_area = MIN_DEFECT_FRACTION * clean.shape[0] * clean.shape[1]
    for _ in range(_MAX_ATTEMPTS):
        drawn, mask = _DRAWERS[defect_type](base, rng)
        image = np.clip(np.rint(drawn), 0, 255).astype(np.uint8)
        if mask.sum() >= min_area and defect_contrast(image, clean, mask) >= MIN_DEFECT_CONTRAST:
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


_DRAWERS = {"scratch": _scratch, "blob": _blob, "cutout": _cutout, "stain": _stain}
