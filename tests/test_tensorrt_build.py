"""dfr-export --engine against fake TensorRT 10.3 / 10.16 / 11.4 modules held to the real API dumps."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import onnx
import pytest
from fakes.api import VERSIONS
from fakes.fake_cuda import FakeCuda
from fakes.fake_tensorrt import FakePlatform, install, make_fake_tensorrt

from dfr_edge.export.artifacts import set_metadata
from dfr_edge.export.tensorrt import EngineOptions, build_engine, build_mode, profile_shapes
from dfr_edge.runtime.cuda import DeviceInfo

ORIN = DeviceInfo("Orin", (8, 7), True)


@pytest.fixture
def bundle(tmp_path, tiny_onnx):
    """A writable copy of the exported tiny bundle; model.fp16.onnx is a copy of model.onnx (the fake
    compiles any graph alike, and exporting FP16 for real would cost seconds per test)."""
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_onnx.parent, copy)
    shutil.copy(copy / "model.onnx", copy / "model.fp16.onnx")
    return copy


def fake_module(version, **options):
    return make_fake_tensorrt(version, FakePlatform(**options))


@pytest.mark.parametrize("version", VERSIONS)
def test_gpu_builds_are_strongly_typed_without_precision_flags(version):
    trt = fake_module(version)
    for precision in ("fp32", "fp16", "int8"):
        mode = build_mode(trt, precision, None, version_compatible=False)
        assert mode.strongly_typed and mode.builder_flags == ()
    assert build_mode(trt, "fp16", None, version_compatible=True).builder_flags == ("VERSION_COMPATIBLE",)


def test_network_flag_is_taken_from_the_module_not_hard_coded(bundle, monkeypatch):
    """STRONGLY_TYPED is bit 1 in 10.x and bit 0 in 11.x (renumbered): the build asks the module."""
    expected = {"10.3.0": 1 << 1, "10.16.1.11": 1 << 1, "11.4.0.106": 1 << 0}
    for version in VERSIONS:
        platform = install(monkeypatch, version)
        built = build_engine(bundle, EngineOptions(precision="fp32", max_batch=2, force=True), cuda=platform.cuda)
        plan = json.loads(built.path.read_bytes())
        assert plan["network_flags"] == expected[version]
        assert plan["builder_flags"] == [] and plan["device"] == "GPU"


def test_dla_on_tensorrt_10_3_is_fp16_weak_typing_with_gpu_fallback(bundle, monkeypatch):
    platform = install(monkeypatch, "10.3.0", cuda=FakeCuda(ORIN), num_dla_cores=2)
    built = build_engine(bundle, EngineOptions(precision="fp16", max_batch=4, dla_core=1), cuda=platform.cuda)
    plan = json.loads(built.path.read_bytes())
    assert plan["network_flags"] == 0  # not strongly typed: 10.x DLA takes the FP16 flag
    assert plan["builder_flags"] == ["FP16", "GPU_FALLBACK"]
    assert plan["device"] == "DLA" and plan["dla_core"] == 1
    assert plan["profile"]["image"] == [[4, 64, 64, 3]] * 3  # DLA has no dynamic dimensions
    assert ".dla1." in built.path.name
    assert "--useDLACore=1" in built.trtexec and "--fp16" in built.trtexec and "--stronglyTyped" not in built.trtexec


@pytest.mark.parametrize("version, precision, dla_cores, message", [
    ("10.3.0", "fp32", 2, "DLA runs FP16 and INT8 only"),
    ("10.3.0", "int8", 2, "INT8 on DLA"),
    ("10.16.1.11", "fp16", 2, "10.7 was the last 10.x release"),
    ("11.4.0.106", "fp16", 2, "11.4.1"),
    ("10.3.0", "fp16", 0, "has 0 DLA core"),  # Orin Nano: no DLA
])
def test_impossible_dla_builds_are_refused(bundle, monkeypatch, version, precision, dla_cores, message):
    platform = install(monkeypatch, version, cuda=FakeCuda(ORIN), num_dla_cores=dla_cores)
    shutil.copy(bundle / "model.onnx", bundle / "model.int8.onnx")
    with pytest.raises((ValueError, RuntimeError), match=message):
        build_engine(bundle, EngineOptions(precision=precision, dla_core=0), cuda=platform.cuda)
    assert ("build_serialized_network",) not in platform.calls


def test_dla_on_tensorrt_11_4_1_is_strongly_typed_with_dla_parser_flag():
    trt = fake_module("11.4.0.106")
    trt.__version__ = "11.4.1.5"  # same API surface; DLA came back on JetPack 7.2.2 in 11.4.1
    mode = build_mode(trt, "int8", 0, version_compatible=False)
    assert mode.strongly_typed and mode.builder_flags == ("GPU_FALLBACK",) and mode.parser_flags == ("ADJUST_FOR_DLA",)
    with pytest.raises(ValueError, match="version-compatible"):
        build_mode(trt, "fp16", 0, version_compatible=True)


def test_tensorrt_without_strong_typing_is_refused():
    trt = fake_module("10.3.0")
    trt.NetworkDefinitionCreationFlag = type("NetworkDefinitionCreationFlag", (), {})  # like TensorRT 8.6
    trt.__version__ = "8.6.2"
    with pytest.raises(RuntimeError, match="JetPack 6.1"):
        build_mode(trt, "fp16", None, False)


def test_profile_optimization_and_workspace(bundle, monkeypatch):
    platform = install(monkeypatch, "10.16.1.11")
    options = EngineOptions(precision="fp32", max_batch=16, opt_batch=4, workspace_mib=512, opt_level=5)
    plan = json.loads(build_engine(bundle, options, cuda=platform.cuda).path.read_bytes())
    assert plan["profile"]["image"] == [[1, 64, 64, 3], [4, 64, 64, 3], [16, 64, 64, 3]]
    assert plan["pool_limits"] == {"WORKSPACE": 512 << 20} and plan["opt_level"] == 5
    assert profile_shapes((-1, 64, 64, 3), EngineOptions(max_batch=8))[1] == (8, 64, 64, 3)


@pytest.mark.parametrize("bad, message", [
    (dict(max_batch=0), "max-batch"), (dict(max_batch=4, opt_batch=5), "opt-batch"),
    (dict(opt_level=6), "opt-level"), (dict(workspace_mib=0), "workspace"), (dict(precision="fp8"), "precision"),
])
def test_bad_options_are_refused_before_tensorrt_is_needed(bundle, bad, message):
    with pytest.raises(ValueError, match=message):
        build_engine(bundle, EngineOptions(**bad))


def test_engine_key_names_every_build_fact_and_sidecar_carries_dfr_json(bundle, monkeypatch):
    platform = install(monkeypatch, "10.3.0", cuda=FakeCuda(ORIN))
    built = build_engine(bundle, EngineOptions(precision="fp16", max_batch=8), cuda=platform.cuda)
    name = built.path.name
    for part in ("model.fp16.", "trt10.3.0", ".orin.", ".sm87.", ".b8.", built.key.onnx_sha256[:12]):
        assert part in name
    sidecar = json.loads((built.path.parent / (name + ".json")).read_text())
    assert sidecar["dfr"] == json.loads((bundle / "dfr.json").read_text())
    assert sidecar["key"]["compute_capability"] == "8.7" and sidecar["device"]["integrated"] is True
    build = sidecar["build"]
    assert build["strongly_typed"] and build["shapes"][2] == [8, 64, 64, 3] and build["build_seconds"] >= 0
    assert build["timing_cache"]["reused"] is False and build["trtexec"] == built.trtexec


def test_an_engine_carries_the_thresholds_of_the_graph_it_was_built_from(bundle, monkeypatch):
    """An INT8 graph carries thresholds matched to its own outputs (fidelity.NormalThresholds.matched), not the
    bundle's FP32 ones: the engine compiled from it must say the same."""
    model, meta = onnx.load(bundle / "model.onnx"), json.loads((bundle / "dfr.json").read_text())
    own = {**meta, "thresholds": {**meta["thresholds"], "pixel": meta["thresholds"]["pixel"] + 1.5}}
    set_metadata(model, own, {})
    onnx.save(model, bundle / "model.fp16.onnx")
    platform = install(monkeypatch, "10.16.1.11")
    built = build_engine(bundle, EngineOptions(precision="fp16"), cuda=platform.cuda)
    sidecar = json.loads((built.path.parent / (built.path.name + ".json")).read_text())
    assert sidecar["dfr"] == own != json.loads((bundle / "dfr.json").read_text())


def test_timing_cache_is_reused_and_identical_engines_are_not_rebuilt(bundle, monkeypatch):
    platform = install(monkeypatch, "11.4.0.106")
    first = build_engine(bundle, EngineOptions(precision="fp32", max_batch=2), cuda=platform.cuda)
    again = build_engine(bundle, EngineOptions(precision="fp32", max_batch=2), cuda=platform.cuda)
    assert again.cached and again.path == first.path
    assert platform.calls.count(("build_serialized_network",)) == 1
    with pytest.raises(FileExistsError, match="--force"):
        build_engine(bundle, EngineOptions(precision="fp32", max_batch=2, opt_batch=1), cuda=platform.cuda)
    second = build_engine(bundle, EngineOptions(precision="fp32", max_batch=4), cuda=platform.cuda)
    cache = json.loads((second.path.parent / (second.path.name + ".json")).read_text())["build"]["timing_cache"]
    assert cache["reused"] and cache["loaded_bytes"] > 0
    assert len(list(second.path.parent.glob("timing.*.cache"))) == 1


def test_parse_errors_name_their_nodes(bundle, monkeypatch):
    errors = [(7, "/extractor/backbone/Conv_3", "Conv", "Assertion failed: kernel weights must be constant")]
    platform = install(monkeypatch, "10.3.0", parser_errors=errors)
    with pytest.raises(ValueError, match=r"node 7 '/extractor/backbone/Conv_3' \(Conv\): Assertion failed"):
        build_engine(bundle, EngineOptions(precision="fp32"), cuda=platform.cuda)


def test_tensorrt_lint_runs_before_the_parser(bundle, monkeypatch):
    model = onnx.load(bundle / "model.onnx")
    model.opset_import[0].version = 21
    onnx.save(model, bundle / "model.onnx")
    platform = install(monkeypatch, "10.3.0")
    with pytest.raises(ValueError, match=r"\[opset\]"):
        build_engine(bundle, EngineOptions(precision="fp32"), cuda=platform.cuda)
    assert ("parse",) not in platform.calls


def test_failed_build_says_so(bundle, monkeypatch):
    platform = install(monkeypatch, "10.16.1.11", build_fails=True)
    with pytest.raises(RuntimeError, match="failed to build model.onnx"):
        build_engine(bundle, EngineOptions(precision="fp32"), cuda=platform.cuda)
    assert not list((bundle / "engines").glob("*.engine"))


def test_cli_builds_engine_and_prints_trtexec(bundle, monkeypatch, capsys):
    from dfr_edge.cli import export as cli
    from dfr_edge.runtime import cuda as cuda_module

    platform = install(monkeypatch, "10.3.0")
    monkeypatch.setattr(cuda_module, "load_cuda", lambda *a, **k: platform.cuda)
    monkeypatch.setattr("dfr_edge.export.tensorrt.load_cuda", lambda *a, **k: platform.cuda)
    assert cli.main([str(bundle), "--engine", "--precision", "best", "--max-batch", "4", "--opt-level", "2"]) == 0
    out = capsys.readouterr().out
    assert "built " in out and "model.fp16.trt10.3.0" in out  # best: fp16 when there is no model.int8.onnx
    assert "trtexec --onnx=" in out and "--builderOptimizationLevel=2" in out


def test_cli_without_tensorrt_says_what_to_install(bundle, monkeypatch, capsys):
    from dfr_edge.cli import export as cli

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert cli.main([str(bundle), "--engine"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: TensorRT's Python module is not installed") and "JetPack" in err


def test_engines_built_for_each_version_run_the_same(bundle, monkeypatch):
    """One build path for all three versions; each engine reproduces ONNX Runtime CPU."""
    from dfr_edge.runtime.onnxrt import OnnxRuntimeBackend
    from dfr_edge.runtime.tensorrt.runner import TensorRTBackend

    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    ref_map, ref_score = OnnxRuntimeBackend(bundle / "model.onnx").infer(images)
    for version in VERSIONS:
        platform = install(monkeypatch, version)
        built = build_engine(bundle, EngineOptions(precision="fp32", max_batch=2), cuda=platform.cuda)
        amap, score = TensorRTBackend(built.path, cuda=platform.cuda).infer(images)
        np.testing.assert_allclose(amap, ref_map, atol=1e-5)
        np.testing.assert_allclose(score, ref_score, atol=1e-5)


@pytest.mark.slow
def test_missing_variant_is_exported_first_without_touching_existing_files(tmp_path, tiny_onnx):
    from dfr_edge.digest import sha256_file
    from dfr_edge.export.tensorrt import ensure_variant, resolve_precision

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_onnx.parent, bundle)
    before = sha256_file(bundle / "model.onnx")
    path = ensure_variant(bundle, "fp16")
    assert path == bundle / "model.fp16.onnx" and path.is_file()
    assert sha256_file(bundle / "model.onnx") == before  # the existing FP32 file was not rewritten
    assert onnx.load(path).graph.input[0].name == "image"
    assert not [p for p in bundle.iterdir() if p.name.startswith(".")]  # no temporaries left behind
    assert resolve_precision(bundle, "best") == "fp16"
    shutil.copy(bundle / "model.onnx", bundle / "model.int8.onnx")
    assert resolve_precision(bundle, "best") == "int8"
