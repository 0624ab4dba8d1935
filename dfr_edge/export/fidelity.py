"""How far a reduced-precision graph moves the anomaly maps of normal images: a check that needs no labels.

Measured on held-out normal images (never the test set) against the FP32 graph, in the units a user
thresholds in:
- `map_shift`: p99 of |map - map_fp32| over all pixels, divided by the distance from the normal pixel
  median to the stored pixel threshold. 0.1 means a typical large error moves a pixel a tenth of the way
  from "normal" to "flagged". Dividing by that spread makes it comparable across datasets: a dark,
  low-contrast line has a narrow spread, and the same int8 error is then a large share of it.
- the false-positive rates at the stored pixel and image thresholds, FP32 and reduced precision: a shift
  here is what the user would see on the line (more or fewer normal pixels / parts flagged).
Torch-free: ONNX Runtime and numpy only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx
import onnxruntime as ort

from dfr_edge.export.onnx_fp32 import INPUT, OUTPUTS

DEFAULT_MAP_SHIFT = 0.1
DEFAULT_PIXEL_FPR_RATIO = 1.5
FIDELITY_BATCH = 8


@dataclass(frozen=True)
class FidelityBudget:
    """What a reduced-precision graph may change on normal images before the export refuses it."""

    map_shift: float = DEFAULT_MAP_SHIFT  # p99 |map error| / (pixel threshold - pixel median)
    pixel_fpr_ratio: float = DEFAULT_PIXEL_FPR_RATIO  # FP rate at the pixel threshold: at most this x FP32's

    def __post_init__(self) -> None:
        if not (self.map_shift > 0 and np.isfinite(self.map_shift)):
            raise ValueError(f"the fidelity budget must be a positive number, got {self.map_shift}")
        if not self.pixel_fpr_ratio >= 1.0:
            raise ValueError(f"the pixel false-positive ratio must be at least 1, got {self.pixel_fpr_ratio}")


@dataclass(frozen=True)
class NormalThresholds:
    """The bundle's stored decision thresholds and the normal pixel median (dfr.json)."""

    pixel: float
    image: float
    pixel_median: float

    @classmethod
    def from_manifest(cls, manifest: dict) -> NormalThresholds:
        return cls(manifest["thresholds"]["pixel"], manifest["thresholds"]["image"],
                   manifest["normal_stats"]["pixel_median"])

    @property
    def spread(self) -> float:
        return max(self.pixel - self.pixel_median, np.finfo(np.float32).eps)


@dataclass(frozen=True)
class Fidelity:
    images: int
    map_shift: float
    pixel_fpr_fp32: float
    pixel_fpr: float
    image_fpr_fp32: float
    image_fpr: float

    def problems(self, budget: FidelityBudget) -> list[str]:
        """Why this graph is beyond the budget; empty when it is within."""
        found = []
        if not self.map_shift <= budget.map_shift:  # NaN is beyond any budget
            found.append(f"map shift {self.map_shift:.3f} > {budget.map_shift:g}")
        allowed = budget.pixel_fpr_ratio * max(self.pixel_fpr_fp32, 1.0 / 10000)
        if not self.pixel_fpr <= allowed:
            found.append(f"normal pixels flagged {self.pixel_fpr:.4f} vs FP32 {self.pixel_fpr_fp32:.4f}")
        return found

    def within(self, budget: FidelityBudget) -> bool:
        return not self.problems(budget)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Reference:
    """FP32 maps and scores of the held-out normal images, computed once and compared against many times."""

    images: np.ndarray
    maps: np.ndarray
    scores: np.ndarray
    thresholds: NormalThresholds


def run_graph(model: onnx.ModelProto | bytes, images: np.ndarray,
              batch_size: int = FIDELITY_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """Maps and scores of `images` through `model` on ONNX Runtime CPU, batch by batch."""
    data = model if isinstance(model, bytes) else model.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    maps, scores = [], []
    for start in range(0, len(images), batch_size):
        amap, score = session.run(list(OUTPUTS), {INPUT: images[start : start + batch_size]})
        maps.append(amap)
        scores.append(score)
    return np.concatenate(maps), np.concatenate(scores)


def reference(fp32: onnx.ModelProto | bytes, images: np.ndarray, thresholds: NormalThresholds) -> Reference:
    if len(images) == 0:
        raise ValueError("the fidelity check needs at least one held-out normal image")
    maps, scores = run_graph(fp32, images)
    return Reference(images, maps, scores, thresholds)


def compare_maps(ref: Reference, maps: np.ndarray, scores: np.ndarray) -> Fidelity:
    t = ref.thresholds
    error = np.abs(maps.astype(np.float64) - ref.maps)
    return Fidelity(
        images=len(ref.images),
        map_shift=float(np.percentile(error, 99) / t.spread),
        pixel_fpr_fp32=float(np.mean(ref.maps > t.pixel)),
        pixel_fpr=float(np.mean(maps > t.pixel)),
        image_fpr_fp32=float(np.mean(ref.scores > t.image)),
        image_fpr=float(np.mean(scores > t.image)),
    )


def measure(ref: Reference, model: onnx.ModelProto | bytes) -> Fidelity:
    """Fidelity of `model` against the FP32 reference on the same held-out normal images."""
    return compare_maps(ref, *run_graph(model, ref.images))
