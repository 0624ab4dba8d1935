"""Dataset layouts: the MVTec AD folder structure, or a plain folder of good images.

Training needs only good images, so a plain folder is enough; evaluation needs the MVTec test split with
its ground-truth masks, and `require_test_set` says so clearly when it is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dfr_edge.data.images import IMAGE_EXTENSIONS, list_images, read_image, read_mask, stack_if_same_size
from dfr_edge.geometry import Geometry

GOOD = "good"

LAYOUTS_HELP = (
    "expected either the MVTec AD layout (<root>/train/good/*.png, optionally <root>/test/<type>/*.png "
    "with <root>/ground_truth/<type>/<name>_mask.png for every type except 'good') "
    "or a plain folder of good images"
)


@dataclass(frozen=True)
class TestSample:
    """One test image; `mask_path` is None for good images, which have no defect pixels."""

    __test__ = False  # the name starts with "Test"; keep pytest from collecting it

    path: Path
    defect_type: str
    mask_path: Path | None

    @property
    def is_anomalous(self) -> bool:
        return self.defect_type != GOOD


@dataclass(frozen=True)
class Dataset:
    """Image paths of one dataset; `test` is empty for a plain folder of good images."""

    root: Path
    train: list[Path]
    test: list[TestSample]


def open_dataset(root: Path | str) -> Dataset:
    """Detect the layout of `root` and list its files, failing early on anything inconsistent."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist or is not a folder")
    if (root / "train" / GOOD).is_dir():
        return Dataset(root, list_images(root / "train" / GOOD), _mvtec_test_samples(root))
    if any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in root.iterdir()):
        return Dataset(root, list_images(root), [])
    categories = sorted(d.name for d in root.iterdir() if (d / "train" / GOOD).is_dir())
    hint = f"; it holds several categories ({', '.join(categories)}), pass one of them" if categories else ""
    raise ValueError(f"{root} is not a dataset: {LAYOUTS_HELP}{hint}")


def _mvtec_test_samples(root: Path) -> list[TestSample]:
    test_dir = root / "test"
    if not test_dir.exists():
        return []
    type_dirs = sorted(d for d in test_dir.iterdir() if d.is_dir())
    if not type_dirs:
        raise ValueError(
            f"{test_dir} has no defect-type folders; expected {test_dir}/good/ and {test_dir}/<defect type>/ "
            f"with images, or remove {test_dir} to train without a test set"
        )
    samples = []
    for type_dir in type_dirs:
        for path in list_images(type_dir):
            samples.append(TestSample(path, type_dir.name, _mask_path(root, type_dir.name, path)))
    return samples


def _mask_path(root: Path, defect_type: str, image: Path) -> Path | None:
    if defect_type == GOOD:
        return None
    mask = root / "ground_truth" / defect_type / f"{image.stem}_mask.png"
    if not mask.is_file():
        raise FileNotFoundError(f"no ground-truth mask for anomalous test image {image}: expected {mask}")
    return mask


def require_test_set(dataset: Dataset) -> None:
    """Evaluation cannot run on good images alone; say what is missing instead of reporting empty metrics."""
    if not dataset.test:
        root = dataset.root
        raise ValueError(
            f"dataset {root} has no test set (expected {root}/test/<type>/ with 'good' and defect folders, "
            f"and {root}/ground_truth/<type>/<name>_mask.png for each defect image)"
        )


@dataclass
class TestArrays:
    """The whole test split in memory at the model's sampling rate, ready for image- and pixel-level metrics.

    Images and masks are the frames' ROI resampled by `Geometry.sample` (stretch: the model size);
    `geometry` turns them into model inputs and their maps back (see dfr_edge/geometry.py).
    """

    __test__ = False  # the name starts with "Test"; keep pytest from collecting it

    images: np.ndarray | list[np.ndarray]  # (N, h, w, 3) uint8 BGR; a list when sizes differ
    masks: np.ndarray | list[np.ndarray]  # (N, h, w) bool, all False for good images
    labels: np.ndarray  # (N,) bool, True = anomalous
    paths: list[Path]
    defect_types: list[str]
    geometry: Geometry  # applies to `images` (ROI already cut)


def load_test_arrays(dataset: Dataset, geometry: Geometry) -> TestArrays:
    """Load every test image and mask through `geometry.sample`; masks must match their image's size."""
    require_test_set(dataset)
    images, masks = [], []
    for sample in dataset.test:
        img = read_image(sample.path)
        images.append(geometry.sample(img))
        mask = np.zeros(img.shape[:2], bool)
        if sample.mask_path is not None:
            mask = read_mask(sample.mask_path)
            if mask.shape != img.shape[:2]:
                raise ValueError(
                    f"mask {sample.mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {sample.path} "
                    f"is {img.shape[1]}x{img.shape[0]}; a ground-truth mask must have its image's size"
                )
        masks.append(geometry.sample_mask(mask))
    return TestArrays(
        images=stack_if_same_size(images),
        masks=stack_if_same_size(masks),
        labels=np.array([s.is_anomalous for s in dataset.test], bool),
        paths=[s.path for s in dataset.test],
        defect_types=[s.defect_type for s in dataset.test],
        geometry=geometry.sampled(),
    )
