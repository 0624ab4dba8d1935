"""Image I/O shared by training, evaluation and the lean runtime (numpy + OpenCV only).

Every image enters the project through `read_image`, so all code downstream can rely on one format:
uint8 HxWx3 in OpenCV's BGR channel order, whatever the file held.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from dfr_edge.errors import UnusableFileError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# What every command can do about an unreadable image; a command with a skip option passes its own advice.
IMAGE_REMEDY = "replace it with a readable image or remove it"


class ImageReadError(UnusableFileError):
    """A file that should be an image or mask but cannot be used; `.path` names it for reports."""

    def __init__(self, path: Path, reason: str, remedy: str, kind: str = "image") -> None:
        super().__init__(path, f"cannot read {kind}: {reason}", remedy)
        self.reason = reason


def _decode(path: Path, kind: str, remedy: str) -> np.ndarray:
    """Decode via a byte buffer because cv2.imread cannot open non-ASCII paths on Windows."""
    try:
        raw = np.fromfile(path, np.uint8)
    except FileNotFoundError:
        raise ImageReadError(path, "file does not exist", remedy, kind) from None
    except OSError as err:
        raise ImageReadError(path, err.strerror or str(err), remedy, kind) from None
    if raw.size == 0:
        raise ImageReadError(path, "file is empty", remedy, kind)
    try:
        decoded = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        decoded = None
    if decoded is None:
        raise ImageReadError(path, "file is corrupt or not an image", remedy, kind)
    return decoded


def read_image(path: Path | str, remedy: str = IMAGE_REMEDY) -> np.ndarray:
    """Read any common image file as uint8 HxWx3 BGR (grey is replicated, alpha dropped)."""
    path = Path(path)
    img = _decode(path, "image", remedy)
    if img.dtype == np.uint16:
        img = np.rint(img / 257.0).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageReadError(path, f"unsupported pixel type {img.dtype}", "save it as 8- or 16-bit")
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
    channels = img.shape[2]
    if channels == 1:
        return np.repeat(img, 3, axis=2)
    if channels == 4:
        return np.ascontiguousarray(img[:, :, :3])
    if channels == 3:
        return img
    raise ImageReadError(path, f"unsupported channel count {channels}", remedy)


def write_png(path: Path, image: np.ndarray) -> None:
    """Encode in memory and write the bytes: unlike cv2.imwrite this works with non-ASCII paths."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"cannot encode {path} as PNG")
    encoded.tofile(path)


def read_mask(path: Path | str) -> np.ndarray:
    """Read a ground-truth mask as bool HxW; any non-zero pixel in any channel marks a defect."""
    path = Path(path)
    mask = _decode(path, "mask", "re-export it as a single-channel PNG") != 0
    return mask.any(axis=2) if mask.ndim == 3 else mask


HALVE_ABOVE = 2.5  # a side shrinking by more than this is first halved (exact 2-pixel means)


def resize_image(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize with area averaging when shrinking (no aliasing) and bilinear otherwise.

    OpenCV's exact area resize is slow at non-integer ratios (1.4 ms for a 640x480 frame to 256x256,
    8 ms for 1080p, 16 ms for 5 MP on one core), paid by a camera loop on every frame. A side shrinking
    by more than 2x is therefore averaged in steps that are all cheap: exact halvings while it shrinks
    by more than 2.5x, bilinear to twice the target (shrinking by at most 1.25x), then exact 2x2 means.
    The result differs from the one-step area resize by 0.07-0.44 grey levels on average (99% of pixels
    within 3) at 2.6-5.3x the speed on one core (benchmarks/README.md: "Input resize").
    """
    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img
    if h <= 2 * height and w <= 2 * width:
        shrinking = height < h and width < w
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        return cv2.resize(img, (width, height), interpolation=interpolation)
    while h > HALVE_ABOVE * height or w > HALVE_ABOVE * width:  # bilinear at exactly 1/2 is a 2-pixel mean
        img = cv2.resize(img, None, fx=0.5 if w > HALVE_ABOVE * width else 1.0,
                         fy=0.5 if h > HALVE_ABOVE * height else 1.0, interpolation=cv2.INTER_LINEAR)
        h, w = img.shape[:2]
    doubled = cv2.resize(img, (2 * width, 2 * height), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(doubled, (width, height), interpolation=cv2.INTER_AREA)


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize bilinearly and threshold at 0.5, as MVTec AD evaluation does."""
    resized = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return resized > 0.5


def list_images(folder: Path | str) -> list[Path]:
    """Image files directly inside `folder`, sorted so that runs see them in a stable order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist or is not a folder")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise ValueError(
            f"no images in {folder}; expected files ending in {', '.join(IMAGE_EXTENSIONS)}"
        )
    return paths


@dataclass
class LoadedImages:
    """A batch of images plus which files made it in and why the others did not."""

    images: np.ndarray | list[np.ndarray]  # (N, H, W, 3) uint8 BGR; a list when the sizes differ
    paths: list[Path]
    skipped: list[tuple[Path, str]]  # (file, reason)
    sizes: list[tuple[int, int]] = field(default_factory=list)  # each file's own (height, width)


def load_images(
    paths: Iterable[Path | str], height: int, width: int, *, skip_bad: bool = False, remedy: str = IMAGE_REMEDY
) -> LoadedImages:
    """Read and resize images into one array; with `skip_bad`, unreadable files are reported, not fatal."""
    return read_images(paths, partial(resize_image, height=height, width=width), skip_bad=skip_bad, remedy=remedy)


def read_images(
    paths: Iterable[Path | str], prepare: Callable[[np.ndarray], np.ndarray], *, skip_bad: bool = False,
    remedy: str = IMAGE_REMEDY,
) -> LoadedImages:
    """Read images and `prepare` each (e.g. resize); one array if they end up the same size, else a list."""
    images, loaded, skipped, sizes = [], [], [], []
    for path in map(Path, paths):
        try:
            img = read_image(path, remedy)
        except ImageReadError as err:
            if not skip_bad:
                raise
            skipped.append((path, err.reason))
            continue
        try:
            images.append(prepare(img))
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        loaded.append(path)
        sizes.append(img.shape[:2])
    if not images:
        reasons = "; ".join(f"{p}: {reason}" for p, reason in skipped) or "no paths were given"
        raise ValueError(f"no image could be loaded ({reasons})")
    return LoadedImages(stack_if_same_size(images), loaded, skipped, sizes)


def stack_if_same_size(arrays: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """One N x ... array when all arrays have one shape (the usual case), else the list as it is."""
    return np.stack(arrays) if len({a.shape for a in arrays}) == 1 else arrays
