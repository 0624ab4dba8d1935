"""INT8 calibration in bounded memory: any image count, every method, ranges ORT's quantizer accepts."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator
from onnxruntime.quantization.shape_inference import quant_pre_process

from dfr_edge.data.images import load_images
from dfr_edge.data.mvtec import open_dataset
from dfr_edge.export.calibration import CALIB_METHODS, RunningHistogram, collect_activations
from dfr_edge.export.int8 import CPU_FLAVOUR, QUANTIZED_OPS, TENSORRT_FLAVOUR, Int8Source, quantize_int8

TINY_SIZE = 64


@pytest.fixture(scope="module")
def normal_images(tiny_data) -> np.ndarray:
    return load_images(open_dataset(tiny_data).train[:7], TINY_SIZE, TINY_SIZE).images


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_onnx):
    path = tmp_path_factory.mktemp("calib") / "fp32.onnx"
    quant_pre_process(onnx.load(tiny_onnx), path, skip_optimization=True)
    return path


def test_histogram_memory_is_fixed_and_counts_every_sample():
    rng = np.random.default_rng(0)
    h = RunningHistogram(bins=64)
    for scale in (0.01, 1.0, 100.0, 0.5, 1e4):  # growing ranges double the limit, never the bin count
        h.add(rng.normal(0, scale, 1000).astype(np.float32))
    assert h.counts.shape == (64,) and h.counts.sum() == 5000
    assert h.limit >= max(abs(h.lowest), abs(h.highest))
    assert h.range("minmax") == (h.lowest, h.highest)
    lo, hi = h.range("percentile")
    assert h.lowest <= lo < 0 < hi <= h.highest
    lo, hi = h.range("entropy")
    assert h.lowest <= lo < hi <= h.highest


def test_histogram_ignores_non_finite_values():
    h = RunningHistogram(bins=8)
    h.add(np.array([np.nan, -2.0, np.inf, 3.0], np.float32))
    assert (h.lowest, h.highest) == (-2.0, 3.0) and h.counts.sum() == 2


def test_histogram_percentile_matches_numpy():
    values = np.random.default_rng(1).exponential(1.0, 200_000).astype(np.float32)
    h = RunningHistogram()
    for part in np.array_split(values, 7):
        h.add(part)
    _, hi = h.range("percentile")
    assert hi == pytest.approx(np.percentile(values, 99.999), rel=0.02)


BINS = 160  # few bins keep ORT's pure-Python entropy search short


@pytest.fixture(scope="module")
def odd_count_stats(prepared, normal_images):
    """Statistics of 5 images in batches of 2: the last batch is partial."""
    return collect_activations(prepared, normal_images[:5], list(QUANTIZED_OPS), batch_size=2, bins=BINS)


@pytest.mark.parametrize("count", [1, 7])  # 7 is not a multiple of the batch of 2
def test_collection_takes_any_count(prepared, normal_images, count):
    stats = collect_activations(prepared, normal_images[:count], list(QUANTIZED_OPS), batch_size=2, bins=BINS)
    assert stats.images == count and stats.memory_bytes() == BINS * 8 * len(stats.histograms)
    for method in ("minmax", "percentile"):
        ranges = stats.ranges(method)
        assert set(ranges.keys()) == set(stats.histograms)
        for data in ranges.values():
            low, high = data.range_value
            assert np.isfinite(low) and np.isfinite(high) and low <= high


class OneBatch:
    """ORT's data-reader protocol: all images in one batch, then None."""

    def __init__(self, images: np.ndarray):
        self.batches = [{"image": images}]

    def get_next(self) -> dict | None:
        return self.batches.pop() if self.batches else None


def test_minmax_ranges_equal_onnxruntime(prepared, normal_images, tmp_path):
    """The batch-wise collector gives exactly ORT's own MinMax calibration."""
    ours = collect_activations(prepared, normal_images, list(QUANTIZED_OPS), batch_size=3).ranges("minmax")
    calibrator = create_calibrator(prepared, list(QUANTIZED_OPS), str(tmp_path / "aug.onnx"),
                                   calibrate_method=CalibrationMethod.MinMax)
    calibrator.collect_data(OneBatch(normal_images))
    theirs = calibrator.compute_data()
    assert set(ours.keys()) == set(theirs.keys())
    for name in ours.keys():
        np.testing.assert_allclose(np.ravel(ours[name].range_value), np.ravel(theirs[name].range_value), rtol=1e-6)


@pytest.mark.parametrize("method", list(CALIB_METHODS))
def test_every_method_quantizes_on_an_odd_count(prepared, odd_count_stats, tmp_path, method):
    source = Int8Source(prepared, odd_count_stats, tmp_path)
    for flavour, quantized_op in ((TENSORRT_FLAVOUR, "QuantizeLinear"), (CPU_FLAVOUR, "QLinearConv")):
        model = quantize_int8(source, flavour, method)
        assert any(n.op_type == quantized_op for n in model.graph.node)


def test_seven_bit_weights_are_orts_reduced_range(prepared, odd_count_stats, tmp_path):
    """The CPU flavour's 7-bit weights (ORT reduce_range) stay within [-64, 64]; 8 bits use the full int8 range;
    a flavour that does not list 7 bits refuses them."""
    source = Int8Source(prepared, odd_count_stats, tmp_path)

    def largest_conv_weight(bits: int) -> int:
        model = quantize_int8(source, CPU_FLAVOUR, "minmax", (), bits)
        inits = {i.name: i for i in model.graph.initializer}
        weights = [onnx.numpy_helper.to_array(inits[n.input[3]]) for n in model.graph.node if n.op_type == "QLinearConv"]
        return max(int(np.abs(w.astype(np.int32)).max()) for w in weights)

    assert largest_conv_weight(7) <= 64 < largest_conv_weight(8)
    with pytest.raises(ValueError, match="tensorrt flavour quantizes weights to 8 bits, not 7"):
        quantize_int8(source, TENSORRT_FLAVOUR, "minmax", (), 7)
