"""Darkened, low-contrast copies of a dataset: the conditions under which INT8 activation ranges fail.

A dark line (weak lighting, black rubber, dark metal) puts the backbone's activations in a narrow band, and
calibrated int8 steps become coarse relative to the differences DFR must see. `write_low_contrast` writes
a copy of any MVTec-layout folder with every image mapped to `offset + gain * pixel` (ground-truth masks
copied unchanged), so benchmarks and tests can reproduce the condition on data they already have.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dfr_edge.data.images import read_image, write_png
from dfr_edge.data.mvtec import open_dataset

VARIANT_FILE = "variant.json"


@dataclass(frozen=True)
class LowContrast:
    """Grey levels are mapped to offset + gain * level: gain < 1 lowers the contrast, a small offset darkens."""

    gain: float = 0.25
    offset: float = 8.0

    def __post_init__(self) -> None:
        if not 0.0 < self.gain <= 1.0:
            raise ValueError(f"gain must be in (0, 1], got {self.gain}")
        if not 0.0 <= self.offset <= 255.0 * (1.0 - self.gain):
            raise ValueError(f"offset must keep levels within 0..255, got {self.offset} with gain {self.gain}")

    def apply(self, image: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(self.offset + self.gain * image.astype(np.float32)), 0, 255).astype(np.uint8)


def write_low_contrast(source: Path | str, out: Path | str, variant: LowContrast) -> Path:
    """Write the low-contrast copy of the MVTec-layout folder `source` to `out` and return `out`.

    A folder already written from the same source and variant is reused; anything else at `out` is refused.
    """
    source, out = Path(source), Path(out)
    dataset = open_dataset(source)
    stamp = json.dumps({"source": str(source.resolve()), **asdict(variant)}, indent=2) + "\n"
    if out.exists() and any(out.iterdir()):
        if (out / VARIANT_FILE).is_file() and (out / VARIANT_FILE).read_text() == stamp:
            return out
        raise FileExistsError(f"{out} is not empty and is not this variant of {source}; choose another folder")
    images = dataset.train + [sample.path for sample in dataset.test]
    for path in images:
        write_png(out / path.relative_to(source).with_suffix(".png"), variant.apply(read_image(path)))
    for sample in dataset.test:
        if sample.mask_path is not None:
            target = out / sample.mask_path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sample.mask_path, target)
    (out / VARIANT_FILE).write_text(stamp)  # written last: marks the copy as complete
    return out

