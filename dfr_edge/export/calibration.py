"""INT8 activation ranges from normal images, one batch at a time, in memory that does not grow with the count.

ONNX Runtime's own histogram calibrators keep every activation of every image until the end (several GB
on a few hundred images) and stack them with np.asarray, which fails ("inhomogeneous shape") as soon as the
last batch is smaller than the others. Here each batch is folded into a fixed-size histogram per tensor
(`RunningHistogram`: `bins` counts plus min/max, whatever the image count), and all three methods are
computed from the same pass, so a search over float layers or methods calibrates once. The ranges go to
`quantize_static` as a calibration cache (ORT's `TensorsData` JSON), which skips its own calibration.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnxruntime.quantization.calibrate import (
    CalibrationMethod,
    HistogramCollector,
    TensorsData,
    create_calibrator,
)

from dfr_edge.export.fidelity import INPUT

CALIB_METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}
NUM_BINS = 2048  # ORT's default for percentile
PERCENTILE = 99.999  # ORT's default: the share of |activation| values kept inside the range
ENTROPY_BINS, ENTROPY_QUANTIZED_BINS = 256, 128  # KL search on an 8x coarser histogram: ORT's loop is pure Python
# At most this many values per tensor and batch are counted (an even stride; min/max see every value):
# counting every activation made calibration several times slower, and 24 batches of 262,144 values still
# put ~60 values beyond the 99.999th percentile.
HISTOGRAM_SAMPLE = 1 << 18
CALIBRATION_BATCH = 8


class RunningHistogram:
    """Counts of one tensor's values over [-limit, limit] in a fixed number of bins, plus its exact min/max.

    When a batch exceeds the limit, the limit doubles and neighbouring bins merge pairwise, so memory
    stays `bins` counts and the resolution stays within 2x of what the final range would give.
    """

    def __init__(self, bins: int = NUM_BINS):
        if bins % 4:
            raise ValueError("bins must be a multiple of 4 (the histogram halves around zero)")
        self.counts = np.zeros(bins, np.int64)
        self.limit = 0.0
        self.lowest, self.highest = np.inf, -np.inf

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, np.float32).ravel()
        lo, hi = float(values.min(initial=np.inf)), float(values.max(initial=-np.inf))
        if not np.isfinite(lo + hi):
            values = values[np.isfinite(values)]
            if values.size == 0:
                return
            lo, hi = float(values.min()), float(values.max())
        self.lowest, self.highest = min(self.lowest, lo), max(self.highest, hi)
        amax = max(abs(lo), abs(hi), float(np.finfo(np.float32).tiny))
        if self.limit == 0.0:
            self.limit = amax
        while amax > self.limit:
            self._double()
        sample = values[:: -(-values.size // HISTOGRAM_SAMPLE)]  # min/max above are exact; counts from a sample
        bins = len(self.counts)  # bincount of computed bin indices: faster than np.histogram
        index = ((sample + np.float32(self.limit)) * np.float32(bins / (2.0 * self.limit))).astype(np.int32)
        np.clip(index, 0, bins - 1, out=index)
        self.counts += np.bincount(index, minlength=bins)

    def _double(self) -> None:
        bins = len(self.counts)
        merged = self.counts.reshape(-1, 2).sum(axis=1)
        self.counts = np.zeros(bins, np.int64)
        self.counts[bins // 4 : bins // 4 + bins // 2] = merged
        self.limit *= 2.0

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(-self.limit, self.limit, len(self.counts) + 1, dtype=np.float32)

    def range(self, method: str) -> tuple[float, float]:
        """(low, high) that `method` would quantize this tensor to."""
        if method == "minmax":
            return self.lowest, self.highest
        if method == "percentile":
            return self._percentile_range()
        if method == "entropy":
            return self._entropy_range()
        raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIB_METHODS)}")

    def _percentile_range(self) -> tuple[float, float]:
        """ORT's symmetric percentile: the |value| below which PERCENTILE % of the values lie, clipped to min/max."""
        half = len(self.counts) // 2
        folded = self.counts[half:] + self.counts[:half][::-1]
        cdf = np.cumsum(folded) / max(folded.sum(), 1)
        edge = float(self.edges[half:][min(np.searchsorted(cdf, PERCENTILE / 100.0) + 1, half)])
        return max(-edge, self.lowest), min(edge, self.highest)

    def _entropy_range(self) -> tuple[float, float]:
        """ORT's KL-divergence threshold search (TensorRT's entropy calibration) on this histogram."""
        bins = min(ENTROPY_BINS, len(self.counts))
        coarse = self.counts.reshape(bins, -1).sum(axis=1)
        quantized = min(ENTROPY_QUANTIZED_BINS, bins)
        edges = np.linspace(-self.limit, self.limit, bins + 1, dtype=np.float32)
        histogram = (coarse, edges, np.float32(self.lowest), np.float32(self.highest), np.float32(self.limit))
        collector = HistogramCollector("entropy", False, bins, quantized, PERCENTILE, "same")
        low, high = collector.get_entropy_threshold(histogram, quantized)
        return float(low), float(high)


@dataclass
class ActivationStats:
    """One calibration pass over normal images: a RunningHistogram per tensor ORT would quantize."""

    histograms: dict[str, RunningHistogram]
    images: int
    batch_size: int

    def ranges(self, method: str) -> TensorsData:
        if method not in CALIB_METHODS:
            raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIB_METHODS)}")
        return TensorsData(CALIB_METHODS[method], {
            name: tuple(np.array(v, np.float32) for v in h.range(method)) if method == "minmax"
            else (*(np.array(v, np.float32) for v in h.range(method)), h.counts, h.edges)
            for name, h in self.histograms.items()
        })

    def memory_bytes(self) -> int:
        return sum(h.counts.nbytes for h in self.histograms.values())


def collect_activations(model_path: Path, images: np.ndarray, op_types: list[str],
                        batch_size: int = CALIBRATION_BATCH, bins: int = NUM_BINS) -> ActivationStats:
    """Run the (shape-inferred) FP32 graph on `images` batch by batch and fold each batch into the histograms.

    Any count works: the last batch is simply smaller. ORT's calibrator is used only to pick the tensors
    (inputs and outputs of `op_types` nodes) and to build the session that exposes them.
    """
    if len(images) == 0:
        raise ValueError("INT8 calibration needs at least one image")
    if batch_size < 1:
        raise ValueError("calibration batch size must be at least 1")
    with tempfile.TemporaryDirectory(prefix="dfr-calib-") as tmp:
        calibrator = create_calibrator(model_path, op_types, str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=CalibrationMethod.Percentile)
        session = calibrator.infer_session
        names = [o.name for o in session.get_outputs()]
        wanted = [i for i, name in enumerate(names) if name in calibrator.tensors_to_calibrate]
        histograms = {names[i]: RunningHistogram(bins) for i in wanted}
        for start in range(0, len(images), batch_size):
            outputs = session.run(None, {INPUT: images[start : start + batch_size]})
            for i in wanted:
                histograms[names[i]].add(outputs[i])
            del outputs
    return ActivationStats(histograms, len(images), batch_size)
