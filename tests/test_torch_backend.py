"""The torch backend (a bundle directory behind Backend): the parity reference for every engine."""

from __future__ import annotations

import numpy as np
import pytest

from dfr_edge.runtime import load_backend, load_detector
from dfr_edge.runtime.onnxrt import OnnxRuntimeBackend
from dfr_edge.runtime.torch_backend import TorchBackend


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)


def test_bundle_directory_loads_the_torch_backend_and_matches_onnx(tiny_onnx, batch):
    backend = load_backend(tiny_onnx.parent)
    assert isinstance(backend, TorchBackend) and backend.name == "torch:cpu"
    amap, score = backend.infer(batch)
    ref_map, ref_score = OnnxRuntimeBackend(tiny_onnx).infer(batch)
    scale = ref_map.max() - ref_map.min()
    assert np.abs(amap - ref_map).max() <= 1e-4 * scale
    np.testing.assert_allclose(score, ref_score, rtol=1e-4, atol=1e-6)


def test_channels_last_and_fp16_autocast_stay_close(tiny_onnx, batch):
    ref_map, _ = TorchBackend(tiny_onnx.parent).infer(batch)
    scale = ref_map.max() - ref_map.min()
    channels_last, _ = TorchBackend(tiny_onnx.parent, channels_last=True).infer(batch)
    assert np.abs(channels_last - ref_map).max() <= 1e-4 * scale
    half = TorchBackend(tiny_onnx.parent, fp16=True)
    amap, score = half.infer(batch)
    assert amap.dtype == np.float32 and score.dtype == np.float32  # the head stays float32
    assert np.abs(amap - ref_map).max() <= 0.05 * scale
    assert not np.allclose(amap, ref_map, rtol=0, atol=1e-7 * scale)  # FP16 really ran


def test_detector_over_a_bundle(tiny_onnx, batch):
    detection = load_detector(tiny_onnx.parent).detect([batch[0]])[0]
    assert detection.anomaly_map.shape == (64, 64)


def test_gpu_options_on_cpu_are_refused(tiny_onnx):
    with pytest.raises(ValueError, match="need device='cuda'"):
        TorchBackend(tiny_onnx.parent, cuda_graphs=True)


@pytest.mark.gpu
def test_cuda_fp16_graphs_match_cpu(tiny_onnx, batch):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    ref_map, _ = TorchBackend(tiny_onnx.parent).infer(batch)
    backend = TorchBackend(tiny_onnx.parent, device="cuda", fp16=True, channels_last=True, cuda_graphs=True,
                           time_gpu=True)
    for _ in range(2):
        amap, _ = backend.infer(batch)
    assert np.abs(amap - ref_map).max() <= 0.05 * (ref_map.max() - ref_map.min())
    assert backend.last_gpu_ms is not None and backend.last_gpu_ms > 0
