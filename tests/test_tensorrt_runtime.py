"""The TensorRT backend against fake TensorRT modules and a fake CUDA layer (numpy as device memory)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from fakes.fake_cuda import FakeCuda
from fakes.fake_tensorrt import install

from dfr_edge.export.tensorrt import EngineOptions, build_engine
from dfr_edge.runtime import load_detector
from dfr_edge.runtime.cuda import DeviceInfo, load_cuda
from dfr_edge.runtime.onnxrt import OnnxRuntimeBackend
from dfr_edge.runtime.tensorrt.engine_info import EngineMismatchError, sidecar_path
from dfr_edge.runtime.tensorrt.runner import TensorRTBackend

H200 = DeviceInfo("NVIDIA H200", (9, 0), False)


@pytest.fixture
def engine(tmp_path, tiny_onnx, monkeypatch):
    """An FP32 engine (profile 1..4) built with fake TensorRT 10.3 on a fake H200."""
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_onnx.parent, bundle)
    platform = install(monkeypatch, "10.3.0")
    return build_engine(bundle, EngineOptions(precision="fp32", max_batch=4), cuda=platform.cuda).path


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def reference(engine: Path, batch: np.ndarray):
    return OnnxRuntimeBackend(engine.parent.parent / "model.onnx").infer(batch)


def fresh(monkeypatch, version="10.3.0", **options):
    return install(monkeypatch, version, **options)


def test_execute_sequence_and_outputs(engine, monkeypatch):
    platform = fresh(monkeypatch)
    backend = TensorRTBackend(engine, cuda=platform.cuda)
    platform.calls.clear()
    batch = images(3)
    amap, score = backend.infer(batch)
    ref_map, ref_score = reference(engine, batch)
    np.testing.assert_allclose(amap, ref_map, atol=1e-5)
    np.testing.assert_allclose(score, ref_score, atol=1e-5)
    names = [c[0] for c in platform.calls]
    assert names == ["copy_to_device", "set_input_shape", "set_tensor_address", "set_tensor_address",
                     "set_tensor_address", "execute_async_v3", "copy_to_host", "copy_to_host", "synchronize"]
    assert platform.calls[1] == ("set_input_shape", "image", (3, 64, 64, 3))
    assert {c[1] for c in platform.calls if c[0] == "set_tensor_address"} == {"image", "anomaly_map", "score"}
    assert platform.calls[0][2] == 3 * 64 * 64 * 3  # the uint8 frames, as they are: one byte per channel


def test_buffers_are_preallocated_for_the_profile_max_and_reused(engine, monkeypatch):
    platform = fresh(monkeypatch)
    backend = TensorRTBackend(engine, cuda=platform.cuda)
    cuda = platform.cuda
    assert sorted(cuda.host_allocations, key=str) == sorted(
        [((4, 64, 64, 3), np.dtype(np.uint8), False), ((4, 64, 64), np.dtype(np.float32), False),
         ((4,), np.dtype(np.float32), False)], key=str)
    assert sorted(cuda.device_allocations) == sorted([4 * 64 * 64 * 3, 4 * 64 * 64 * 4, 4 * 4])
    for n in (1, 4, 2, 7):  # 7 runs as 4 + 3
        amap, score = backend.infer(images(n, seed=n))
        assert amap.shape == (n, 64, 64) and amap.dtype == np.float32 and score.shape == (n,)
    assert len(cuda.device_allocations) == 3 and len(cuda.host_allocations) == 3
    addresses = {c[2] for c in platform.calls if c[0] == "set_tensor_address"}
    assert len(addresses) == 3


def test_results_are_copies_not_views_of_reused_buffers(engine, monkeypatch):
    backend = TensorRTBackend(engine, cuda=fresh(monkeypatch).cuda)
    first, _ = backend.infer(images(1, seed=1))
    kept = first.copy()
    backend.infer(images(1, seed=2))
    np.testing.assert_array_equal(first, kept)


def test_cuda_graph_captured_per_batch_size_then_launched(engine, monkeypatch):
    platform = fresh(monkeypatch)
    backend = TensorRTBackend(engine, cuda=platform.cuda, cuda_graphs=True)
    batch = images(2)
    ref_map, _ = reference(engine, batch)
    for _ in range(3):
        amap, _ = backend.infer(batch)
        np.testing.assert_allclose(amap, ref_map, atol=1e-5)
    names = [c[0] for c in platform.calls]
    assert names.count("begin_capture") == 1 and names.count("launch_graph") == 2
    assert names.count("execute_async_v3") == 2  # the warm-up run and the captured one
    backend.infer(images(3))
    assert [c[0] for c in platform.calls].count("begin_capture") == 2


@pytest.mark.parametrize("cause", ["binding", "tensorrt"])
def test_cuda_graph_capture_failure_falls_back_cleanly(engine, monkeypatch, caplog, cause):
    cuda = FakeCuda(capture_supported=cause != "binding")
    platform = fresh(monkeypatch, cuda=cuda, execute_fails_in_capture=cause == "tensorrt")
    backend = TensorRTBackend(engine, cuda=cuda, cuda_graphs=True)
    batch = images(2)
    ref_map, _ = reference(engine, batch)
    for _ in range(3):
        np.testing.assert_allclose(backend.infer(batch)[0], ref_map, atol=1e-5)
    assert "launch_graph" not in [c[0] for c in platform.calls]
    assert sum("running without a graph" in r.message for r in caplog.records) == 1


def test_mapped_memory_on_jetson_copies_nothing(engine, monkeypatch, tmp_path):
    orin = DeviceInfo("NVIDIA H200", (9, 0), True)  # an integrated GPU (same name: the engine's GPU)
    platform = fresh(monkeypatch, cuda=FakeCuda(orin))
    backend = TensorRTBackend(engine, cuda=platform.cuda)  # mapped by default on integrated GPUs
    batch = images(2)
    np.testing.assert_allclose(backend.infer(batch)[0], reference(engine, batch)[0], atol=1e-5)
    names = [c[0] for c in platform.calls]
    assert "copy_to_device" not in names and "copy_to_host" not in names
    assert platform.cuda.device_allocations == [] and all(m for *_, m in platform.cuda.host_allocations)
    assert TensorRTBackend(engine, cuda=FakeCuda(orin), mapped_memory=False).mapped is False


def test_fixed_batch_engine_pads_small_batches(tmp_path, tiny_onnx, monkeypatch):
    """A DLA engine has min = opt = max batch: fewer frames are zero-padded, extra outputs dropped."""
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_onnx.parent, bundle)
    shutil.copy(bundle / "model.onnx", bundle / "model.fp16.onnx")
    orin = DeviceInfo("Orin", (8, 7), True)
    platform = install(monkeypatch, "10.3.0", cuda=FakeCuda(orin), num_dla_cores=2)
    path = build_engine(bundle, EngineOptions(precision="fp16", max_batch=4, dla_core=0), cuda=platform.cuda).path
    backend = TensorRTBackend(path, cuda=platform.cuda)
    batch = images(3)
    amap, score = backend.infer(batch)
    assert amap.shape == (3, 64, 64)
    assert ("set_input_shape", "image", (4, 64, 64, 3)) in platform.calls
    np.testing.assert_allclose(score, reference(path, batch)[1], atol=1e-5)


def test_load_detector_picks_the_engine_by_suffix(engine, monkeypatch):
    platform = fresh(monkeypatch)
    detector = load_detector(engine, cuda=platform.cuda)
    assert detector.backend.name.startswith("tensorrt:10.3.0")
    detection = detector.detect([images(1)[0]])[0]
    assert detection.anomaly_map.shape == (64, 64)


@pytest.mark.parametrize("device, version, message", [
    (DeviceInfo("NVIDIA A100-SXM4-80GB", (8, 0), False), "10.3.0",
     "built for TensorRT 10.3.0 on NVIDIA H200 .compute capability 9.0.; this machine has TensorRT 10.3.0 on "
     "NVIDIA A100-SXM4-80GB .compute capability 8.0."),
    (DeviceInfo("NVIDIA H200", (9, 1), False), "10.3.0", "compute capability 9.1"),
    (H200, "10.16.1.11", "built with TensorRT 10.3.0 .*this machine runs TensorRT 10.16.1.11"),
])
def test_engine_from_another_gpu_or_tensorrt_is_refused(engine, monkeypatch, device, version, message):
    platform = fresh(monkeypatch, version, cuda=FakeCuda(device))
    with pytest.raises(EngineMismatchError, match=message) as info:
        TensorRTBackend(engine, cuda=platform.cuda)
    assert "dfr-export" in str(info.value) and "--engine --precision fp32 --max-batch 4" in str(info.value)


def test_version_compatible_engines_load_on_newer_tensorrt_only(tmp_path, tiny_onnx, monkeypatch):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_onnx.parent, bundle)
    platform = install(monkeypatch, "10.16.1.11")
    built = build_engine(bundle, EngineOptions(precision="fp32", max_batch=2, version_compatible=True),
                         cuda=platform.cuda)
    assert "--versionCompatible" in built.trtexec and ".vc." in built.path.name
    older = fresh(monkeypatch, "10.3.0")
    with pytest.raises(EngineMismatchError, match="load on TensorRT 10.16.1.11 or newer .*lean runtime"):
        TensorRTBackend(built.path, cuda=older.cuda)
    newer = fresh(monkeypatch, "11.4.0.106")
    # The compatibility check passes; the fake runtime, like a real one without the embedded lean
    # runtime, cannot deserialize another version's plan, and the error says so.
    with pytest.raises(RuntimeError, match="could not deserialize"):
        TensorRTBackend(built.path, cuda=newer.cuda)


@pytest.mark.parametrize("damage, error, message", [
    ("delete", FileNotFoundError, "cannot say which TensorRT"),
    ("garbage", ValueError, "not valid JSON"),
    ("foreign", ValueError, "not a dfr-edge engine sidecar"),
])
def test_engine_without_a_valid_sidecar_is_refused(engine, monkeypatch, damage, error, message):
    sidecar = sidecar_path(engine)
    if damage == "delete":
        sidecar.unlink()
    else:
        sidecar.write_text("{nope" if damage == "garbage" else json.dumps({"schema": "other"}))
    with pytest.raises(error, match=message):
        TensorRTBackend(engine, cuda=fresh(monkeypatch).cuda)


def test_wrong_images_are_refused(engine, monkeypatch):
    backend = TensorRTBackend(engine, cuda=fresh(monkeypatch).cuda)
    with pytest.raises(ValueError, match="uint8 N x 64 x 64 x 3"):
        backend.infer(np.zeros((1, 64, 64, 3), np.float32))


def test_missing_tensorrt_and_cuda_bindings_say_what_to_install(engine, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ImportError, match="TensorRT's Python module is not installed.*JetPack"):
        TensorRTBackend(engine, cuda=FakeCuda())
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install 'cuda-python>=12,<13'.* or pycuda"):
        load_cuda()
    with pytest.raises(ImportError, match="'pycuda' is not installed"):
        load_cuda("pycuda")
    with pytest.raises(ValueError, match="unknown CUDA binding"):
        load_cuda("cupy")


def test_the_tensorrt_runtime_does_not_import_torch(engine):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import numpy as np
        from fakes.fake_tensorrt import FakePlatform, make_fake_tensorrt
        from fakes.fake_cuda import FakeCuda
        platform = FakePlatform(); platform.cuda = FakeCuda(calls=platform.calls)
        sys.modules["tensorrt"] = make_fake_tensorrt("10.3.0", platform)
        from dfr_edge.runtime import load_detector
        import dfr_edge.runtime.cuda.bindings, dfr_edge.runtime.cuda.pycuda_api
        detector = load_detector({str(engine)!r}, cuda=platform.cuda, cuda_graphs=True)
        detector.detect([np.zeros((64, 64, 3), np.uint8)])
        assert "torch" not in sys.modules, "torch was imported"
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.gpu
def test_real_cuda_layer_round_trip():
    """On an NVIDIA machine: copies, events and (with cuda-python) a graph through the real binding."""
    try:
        cuda = load_cuda()
    except ImportError:
        pytest.skip("no CUDA binding installed")
    stream = cuda.create_stream()
    host = cuda.alloc_host((1024,), np.float32)
    back = cuda.alloc_host((1024,), np.float32)
    host.array[:] = np.arange(1024)
    ptr = cuda.alloc_device(host.array.nbytes)
    start, end = cuda.create_event(), cuda.create_event()
    cuda.record_event(start, stream)
    cuda.copy_to_device(ptr, host.array, stream)
    cuda.copy_to_host(back.array, ptr, stream)
    cuda.record_event(end, stream)
    cuda.synchronize(stream)
    np.testing.assert_array_equal(back.array, host.array)
    assert cuda.elapsed_ms(start, end) >= 0
    cuda.free()


def test_cuda_python_names_exist_in_the_installed_binding():
    """Every `self.rt.X` of the cuda-python implementation exists in the real cuda.bindings.runtime."""
    import ast

    runtime = pytest.importorskip("cuda.bindings.runtime")
    source = Path(__file__).resolve().parents[1] / "dfr_edge/runtime/cuda/bindings.py"
    used = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "rt":
            used.add(node.attr)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                and isinstance(node.value.value, ast.Attribute) and node.value.value.attr == "rt":
            used.add(f"{node.value.attr}.{node.attr}")
    assert "cudaGraphInstantiate" in used and "cudaMemcpyKind.cudaMemcpyHostToDevice" in used
    for name in used:
        obj = runtime
        for part in name.split("."):
            assert hasattr(obj, part), f"cuda.bindings.runtime has no {name}"
            obj = getattr(obj, part)
    prop = runtime.cudaDeviceProp()
    assert all(hasattr(prop, f) for f in ("name", "major", "minor", "integrated"))


def test_cuda_python_without_a_gpu_says_so():
    pytest.importorskip("cuda.bindings.runtime")
    try:
        cuda = load_cuda("cuda-python")
    except RuntimeError as exc:
        assert "no usable NVIDIA GPU through cuda-python" in str(exc) and "nvidia-smi" in str(exc)
    else:  # a machine with a GPU: the layer works, nothing to refuse
        assert cuda.device_info().name
        cuda.free()


def test_dfr_infer_runs_an_engine(engine, monkeypatch, tiny_data, tmp_path):
    """The CLIs pass ONNX Runtime options (provider, max_batch); an engine takes what it needs."""
    from dfr_edge.cli.infer import main

    platform = fresh(monkeypatch)
    monkeypatch.setattr("dfr_edge.runtime.tensorrt.runner.load_cuda", lambda *a, **k: platform.cuda)
    out = tmp_path / "out"
    assert main([str(engine), str(tiny_data / "test" / "good"), "--out", str(out), "--batch-size", "2"]) == 0
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(results) == 4 and all(np.isfinite(r["score"]) for r in results)


@pytest.mark.gpu
def test_real_tensorrt_engine_matches_onnx_runtime(tmp_path, tiny_onnx):
    """On a machine with TensorRT and a GPU: build the tiny FP32 engine for real and compare."""
    pytest.importorskip("tensorrt")
    try:
        cuda = load_cuda()
    except (ImportError, RuntimeError) as exc:
        pytest.skip(f"no usable CUDA binding/GPU: {exc}")
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_onnx.parent, bundle)
    path = build_engine(bundle, EngineOptions(precision="fp32", max_batch=4), cuda=cuda).path
    backend = TensorRTBackend(path, cuda=cuda, cuda_graphs=True, time_gpu=True)
    batch = images(3)
    ref_map, ref_score = reference(path, batch)
    for _ in range(2):  # the second call replays the captured graph
        amap, score = backend.infer(batch)
        assert np.abs(amap - ref_map).max() <= 1e-3 * (ref_map.max() - ref_map.min())
        np.testing.assert_allclose(score, ref_score, rtol=1e-3, atol=1e-5)
    assert backend.last_gpu_ms is not None
    backend.close()
