"""How far a reduced-precision graph moves the anomaly maps of normal images: a check that needs no labels.

Measured on held-out normal images (never the test set) against the FP32 graph, in the units a user
thresholds in:
- `map_shift`: the median |map - map_fp32| over the pixels FP32 puts at or above the stored pixel
  threshold (the normal tail that defects compete with for a rank), divided by the distance from the
  normal pixel median to that threshold. Dividing by that spread makes it comparable across datasets: a
  dark, low-contrast line has a narrow spread, and the same int8 error is then a large share of it. The
  error over all pixels would not do: on MVTec bottle the CPU flavour moves the bulk of the map by a third
  of the spread (a bias AUROC does not see) and loses nothing, while on a dark texture a smaller move of
  the tail costs 0.01 pixel AUROC (benchmarks/README.md, int8_fidelity.py).
- `score_shift`: p90 of |score - score_fp32| divided by the distance from the median normal score to the
  stored image threshold: the same question for the image decision.
- the false-positive rates at the stored pixel and image thresholds, FP32 and reduced precision: what the
  user would see on the line (more or fewer normal pixels / parts flagged); recorded, not gated on, since
  a uniform offset changes them without changing the ranking the metrics measure.
Torch-free: ONNX Runtime and numpy only.

`exact=True` runs a Q/DQ graph as written, every DequantizeLinear -> float op -> QuantizeLinear computed
literally (graph optimizations off): the integer maths TensorRT does with int32 accumulation. With them on,
ONNX Runtime fuses the graph into its own uint8 x int8 kernels, which on x86 without VNNI sum pairs of
products in 16 bits and saturate (benchmarks/README.md: "What the CPU kernels do to INT8"). The CPU
flavour is judged by those kernels, since they are what runs it; the TensorRT flavour must not be.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

INPUT, OUTPUTS = "image", ("anomaly_map", "score")  # the fused graph's contract (onnx_fp32 needs torch)

# Measured on bottle and two dark sets, both flavours, 8- and 7-bit weights (benchmarks/README.md): graphs
# within the labelled targets reach a score shift of 0.785 and a map shift of 0.36; the next score shift up,
# 0.86, is a graph beyond them (the budget sits midway). Two trials beyond the targets stay below both (the
# search does not write them). The map shift is the safety net for maps that move without moving the maximum.
DEFAULT_MAP_SHIFT = 0.38
DEFAULT_SCORE_SHIFT = 0.82
FIDELITY_BATCH = 8


@dataclass(frozen=True)
class FidelityBudget:
    """What a reduced-precision graph may change on normal images before the export refuses it."""

    map_shift: float = DEFAULT_MAP_SHIFT  # tail map error / (pixel threshold - pixel median)
    score_shift: float = DEFAULT_SCORE_SHIFT  # p90 score error / (image threshold - median score)

    def __post_init__(self) -> None:
        for name in ("map_shift", "score_shift"):
            value = getattr(self, name)
            if not (value > 0 and np.isfinite(value)):
                raise ValueError(f"the fidelity budget's {name} must be a positive number, got {value}")


@dataclass(frozen=True)
class NormalThresholds:
    """Decision thresholds, the rule they were chosen by and the normal pixel median (dfr.json)."""

    pixel: float
    image: float
    pixel_median: float
    pixel_fpr: float = 0.005  # share of normal pixels above `pixel` when it was chosen
    image_quantile: float = 0.99  # quantile of normal image scores `image` is

    @classmethod
    def from_manifest(cls, manifest: dict) -> NormalThresholds:
        t = manifest["thresholds"]
        return cls(t["pixel"], t["image"], manifest["normal_stats"]["pixel_median"], t["pixel_fpr"],
                   t["image_quantile"])

    @property
    def spread(self) -> float:
        return max(self.pixel - self.pixel_median, np.finfo(np.float32).eps)

    def matched(self, ref_maps: np.ndarray, ref_scores: np.ndarray, maps: np.ndarray,
                scores: np.ndarray) -> NormalThresholds:
        """The thresholds for another graph: each moved by how far that graph moves its own quantile (the
        rule's 1 - pixel_fpr of pixels, image_quantile of scores, the median) on the same normal images.

        On the images the thresholds were chosen on this is the training rule applied to the other graph;
        on other normal images, the FP32 thresholds carried over by the shift. INT8 can move a whole map
        (grey_pits: every good part over the FP32 image threshold) and keep its ranking; thresholded by its
        own normal outputs, it flags about as many normal pixels and parts as FP32 does."""
        levels = [1.0 - self.pixel_fpr, 0.5]
        pixel, median = (np.quantile(maps.astype(np.float64), levels)
                         - np.quantile(ref_maps.astype(np.float64), levels))
        image = (np.quantile(scores.astype(np.float64), self.image_quantile)
                 - np.quantile(ref_scores.astype(np.float64), self.image_quantile))
        return dataclasses.replace(self, pixel=self.pixel + float(pixel), image=self.image + float(image),
                                   pixel_median=self.pixel_median + float(median))

    def written_into(self, manifest: dict, note: str) -> dict:
        """A copy of `manifest` (dfr.json) thresholding by these values; `note` says where they come from."""
        return {**manifest, "thresholds": {**manifest["thresholds"], "pixel": self.pixel, "image": self.image,
                                           "matched": note},
                "normal_stats": {**manifest["normal_stats"], "pixel_median": self.pixel_median}}


@dataclass(frozen=True)
class Fidelity:
    """How far a graph moves the normal maps and scores from FP32's, the false-positive rates it would give at
    FP32's thresholds, and its own thresholds (NormalThresholds.matched), which the written graph carries."""

    images: int
    map_shift: float
    score_shift: float
    thresholds: NormalThresholds
    pixel_fpr_fp32: float
    pixel_fpr: float
    image_fpr_fp32: float
    image_fpr: float

    def problems(self, budget: FidelityBudget) -> list[str]:
        """Why this graph is beyond the budget; empty when it is within."""
        found = []
        if not self.map_shift <= budget.map_shift:  # NaN is beyond any budget
            found.append(f"map shift {self.map_shift:.3f} > {budget.map_shift:g}")
        if not self.score_shift <= budget.score_shift:
            found.append(f"score shift {self.score_shift:.3f} > {budget.score_shift:g}")
        return found

    def within(self, budget: FidelityBudget) -> bool:
        return not self.problems(budget)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Reference:
    """FP32 maps and scores of the held-out normal images, computed once and compared against many times.

    `exact_maps` / `exact_scores`: the same FP32 graph with graph optimizations off, what an exact check
    compares against, so that a graph with nothing quantized measures 0 there too (fused and unfused float
    kernels differ in the last bits, and a narrow score spread would magnify that)."""

    images: np.ndarray
    maps: np.ndarray
    scores: np.ndarray
    thresholds: NormalThresholds
    exact_maps: np.ndarray | None = None
    exact_scores: np.ndarray | None = None

    def outputs(self, exact: bool) -> tuple[np.ndarray, np.ndarray]:
        if exact and self.exact_maps is not None and self.exact_scores is not None:
            return self.exact_maps, self.exact_scores
        return self.maps, self.scores


def graph_runner(model: onnx.ModelProto | bytes, exact: bool = False,
                 batch_size: int = FIDELITY_BATCH) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Images -> (maps, scores) through `model` on ONNX Runtime CPU, batch by batch, one session reused;
    `exact`: integer maths as written (see the module docstring), not ONNX Runtime's fused kernels."""
    import onnxruntime as ort  # lazily: dfr-export's argument parsing reads the defaults above

    data = model if isinstance(model, bytes) else model.SerializeToString()
    options = ort.SessionOptions()
    if exact:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        maps, scores = [], []
        for start in range(0, len(images), batch_size):
            amap, score = session.run(list(OUTPUTS), {INPUT: images[start : start + batch_size]})
            maps.append(amap)
            scores.append(score)
        return np.concatenate(maps), np.concatenate(scores)

    return run


def run_graph(model: onnx.ModelProto | bytes, images: np.ndarray, exact: bool = False,
              batch_size: int = FIDELITY_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """Maps and scores of `images` through `model` on ONNX Runtime CPU (`exact`: see graph_runner)."""
    return graph_runner(model, exact, batch_size)(images)


def reference(fp32: onnx.ModelProto | bytes, images: np.ndarray, thresholds: NormalThresholds) -> Reference:
    if len(images) == 0:
        raise ValueError("the fidelity check needs at least one held-out normal image")
    maps, scores = run_graph(fp32, images)
    return Reference(images, maps, scores, thresholds, *run_graph(fp32, images, exact=True))


def compare_maps(ref: Reference, maps: np.ndarray, scores: np.ndarray, exact: bool = False) -> Fidelity:
    t = ref.thresholds
    ref_maps, ref_scores = ref.outputs(exact)
    tail = ref_maps >= min(t.pixel, float(ref_maps.max()))  # never empty
    error = np.abs(maps[tail].astype(np.float64) - ref_maps[tail])
    score_spread = max(t.image - float(np.median(ref_scores)), np.finfo(np.float32).eps)
    return Fidelity(
        images=len(ref.images),
        map_shift=float(np.median(error) / t.spread),
        score_shift=float(np.percentile(np.abs(scores.astype(np.float64) - ref_scores), 90) / score_spread),
        thresholds=t.matched(ref_maps, ref_scores, maps, scores),
        pixel_fpr_fp32=float(np.mean(ref_maps > t.pixel)),
        pixel_fpr=float(np.mean(maps > t.pixel)),
        image_fpr_fp32=float(np.mean(ref_scores > t.image)),
        image_fpr=float(np.mean(scores > t.image)),
    )


def measure(ref: Reference, model: onnx.ModelProto | bytes, exact: bool = False) -> Fidelity:
    """Fidelity of `model` against the FP32 reference on the same held-out normal images (`exact`: the
    integer maths as written, for graphs another engine will run)."""
    return compare_maps(ref, *run_graph(model, ref.images, exact), exact)
