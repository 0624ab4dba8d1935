"""Every TensorRT name the code uses exists in the real API of 10.3.0, 10.16.1.11 and 11.4.0.106.

Three checks: the source's direct `trt.X.Y` accesses exist in all three dumps; names reached by
string (`getattr(trt.BuilderFlag, name)`) are checked for every build mode each version allows;
and a full build + run on each version's fake records every class member touched, each of which
must exist in that version's dump. The fakes themselves are held to the dumps (test_fake_*).
"""

from __future__ import annotations

import ast
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fakes.api import API_DIR, VERSIONS, load_api
from fakes.fake_tensorrt import FakePlatform, install, make_fake_tensorrt

from dfr_edge.export import tensorrt as builder_module
from dfr_edge.export.tensorrt import EngineOptions, build_engine, build_mode
from dfr_edge.runtime.tensorrt import runner as runner_module
from dfr_edge.runtime.tensorrt.runner import NUMPY_DTYPES, TensorRTBackend

REPO = Path(__file__).resolve().parents[1]
SOURCES = [REPO / "dfr_edge/export/tensorrt.py", REPO / "dfr_edge/export/engine_cache.py",
           *sorted((REPO / "dfr_edge/runtime/tensorrt").glob("*.py"))]


def member_exists(api: dict, top: str, member: str | None) -> bool:
    if top == "__version__":
        return member is None
    entry = api.get(top)
    if entry is None:
        return False
    if member is None:
        return True
    if entry["kind"] == "enum":
        return member in entry["values"]
    nested, _, inner = member.partition(".")
    if inner:  # e.g. Logger.Severity.WARNING
        return inner in entry["nested"].get(nested, {}).get("values", {})
    return any(member in entry[k] for k in ("methods", "properties", "attributes", "nested"))


def direct_accesses() -> set[tuple[str, str | None]]:
    """(Top, member) for every `trt.Top` / `trt.Top.member` expression in the sources."""
    found = set()
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                    and isinstance(node.value.value, ast.Name) and node.value.value.id == "trt":
                found.add((node.value.attr, node.attr))
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "trt":
                found.add((node.attr, None))
    return found


def test_api_copies_match_the_shared_dumps():
    shared = REPO.parent.parent / "shared" / "api"
    if not shared.is_dir():
        pytest.skip("../shared/api is not next to this checkout")
    for version in VERSIONS:
        with gzip.open(API_DIR / f"tensorrt-{version}.json.gz", "rt") as f:
            assert json.load(f) == json.loads((shared / f"tensorrt-{version}.json").read_text())


def test_direct_tensorrt_accesses_exist_in_every_version():
    accesses = direct_accesses()
    assert ("NetworkDefinitionCreationFlag", "STRONGLY_TYPED") in accesses  # the walk sees the code
    for version in VERSIONS:
        api = load_api(version)
        missing = sorted(a for a in accesses if not member_exists(api, *a))
        assert not missing, f"TensorRT {version} lacks {missing}"


@pytest.mark.parametrize("version", VERSIONS)
def test_names_reached_by_string_exist_where_they_are_used(version):
    api = load_api(version)
    trt = make_fake_tensorrt(version, FakePlatform())
    modes = []
    for precision in ("fp32", "fp16", "int8"):
        for dla in (None, 0):
            for compatible in (False, True):
                try:
                    modes.append(build_mode(trt, precision, dla, compatible))
                except (ValueError, RuntimeError):
                    pass
    assert modes
    for mode in modes:
        assert set(mode.builder_flags) <= set(api["BuilderFlag"]["values"])
        assert set(mode.parser_flags) <= set(api["OnnxParserFlag"]["values"])
    assert set(NUMPY_DTYPES) <= set(api["DataType"]["values"])
    assert {"INPUT", "OUTPUT"} <= set(api["TensorIOMode"]["values"])


def test_dla_modes_of_11x_use_names_of_11x():
    trt = make_fake_tensorrt("11.4.0.106", FakePlatform())
    trt.__version__ = "11.4.1"
    mode = build_mode(trt, "fp16", 0, False)
    api = load_api("11.4.0.106")
    assert set(mode.builder_flags) <= set(api["BuilderFlag"]["values"])
    assert set(mode.parser_flags) <= set(api["OnnxParserFlag"]["values"])


@pytest.mark.parametrize("version", VERSIONS)
def test_every_member_touched_by_a_build_and_run_exists(version, tiny_onnx, tmp_path, monkeypatch):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_onnx.parent, bundle)
    platform = install(monkeypatch, version)
    built = build_engine(bundle, EngineOptions(precision="fp32", max_batch=2, opt_level=1, version_compatible=True),
                         cuda=platform.cuda)
    backend = TensorRTBackend(built.path, cuda=platform.cuda, cuda_graphs=True)
    backend.infer(np.zeros((3, 64, 64, 3), np.uint8))
    api = load_api(version)
    touched = {tuple(t.split(".", 1)) if "." in t else (t, None) for t in platform.touched}
    assert ("IExecutionContext", "execute_async_v3") in touched and ("Runtime", "engine_host_code_allowed") in touched
    missing = sorted(t for t in touched if not member_exists(api, *t))
    assert not missing, f"TensorRT {version} lacks {missing}"


def test_sources_import_tensorrt_only_through_the_lazy_helper():
    for module in (builder_module, runner_module):
        assert "import tensorrt" not in Path(module.__file__).read_text()


@pytest.mark.parametrize("version", VERSIONS)
def test_fake_has_the_real_enum_values_and_nothing_more(version):
    api = load_api(version)
    trt = make_fake_tensorrt(version, FakePlatform())
    for enum in ("BuilderFlag", "NetworkDefinitionCreationFlag", "DataType", "MemoryPoolType", "DeviceType"):
        for member, value in api[enum]["values"].items():
            assert int(getattr(getattr(trt, enum), member)) == value
    assert hasattr(trt.BuilderFlag, "FP16") == (version != "11.4.0.106")
    assert hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") == (version != "11.4.0.106")
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    if version == "11.4.0.106":
        with pytest.raises(AttributeError):
            builder.platform_has_fast_fp16
    config = builder.create_builder_config()
    with pytest.raises(TypeError, match="matches no real signature"):
        config.set_timing_cache(config.create_timing_cache(b""), ignore=False)  # keyword is ignore_mismatch
    with pytest.raises(AttributeError):
        config.no_such_property = 1


@pytest.mark.parametrize("version, reported", [("10.3.0", "10.3.0"), ("11.4.0.106", "11.4.1")])
def test_every_member_touched_by_a_dla_build_and_run_exists(version, reported, tiny_onnx, tmp_path, monkeypatch):
    """The DLA path (weakly typed on 10.x, strongly typed with ADJUST_FOR_DLA on 11.4.1+, whose API
    surface is 11.4.0's) touches only names of that version."""
    from fakes.fake_cuda import FakeCuda

    from dfr_edge.runtime.cuda import DeviceInfo

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_onnx.parent, bundle)
    shutil.copy(bundle / "model.onnx", bundle / "model.fp16.onnx")
    platform = install(monkeypatch, version, cuda=FakeCuda(DeviceInfo("Orin", (8, 7), True)), num_dla_cores=2)
    import sys

    sys.modules["tensorrt"].__version__ = reported
    built = build_engine(bundle, EngineOptions(precision="fp16", max_batch=2, dla_core=1), cuda=platform.cuda)
    TensorRTBackend(built.path, cuda=platform.cuda).infer(np.zeros((1, 64, 64, 3), np.uint8))
    touched = {tuple(t.split(".", 1)) if "." in t else (t, None) for t in platform.touched}
    assert {("IBuilderConfig", "DLA_core"), ("Runtime", "DLA_core"), ("DeviceType", "DLA")} <= touched
    if version.startswith("11"):
        assert ("OnnxParser", "set_flag") in touched and ("OnnxParserFlag", "ADJUST_FOR_DLA") in touched
    missing = sorted(t for t in touched if not member_exists(load_api(version), *t))
    assert not missing, f"TensorRT {version} lacks {missing}"
