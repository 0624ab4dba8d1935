"""Triton model repository export: every config parsed with Triton's own protobuf schema."""

from __future__ import annotations

import json

import pytest

from dfr_edge.export.triton import RepositoryOptions, model_config, to_pbtxt, write_repository
from dfr_edge.runtime.onnxrt import OnnxRuntimeBackend
from dfr_edge.runtime.triton.model import ServedModel

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")
SIZE = 64  # tiny_onnx's frame size


def parse(path_or_text):
    text = path_or_text if isinstance(path_or_text, str) else path_or_text.read_text()
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def options(**kw) -> RepositoryOptions:
    model = {k: kw.pop(k) for k in ("name", "max_batch_size", "instances") if k in kw}
    return RepositoryOptions(ServedModel(**{"name": "dfr", "height": SIZE, "width": SIZE, **model}), **kw)


def test_config_matches_the_fused_graph_and_carries_dfr_json(tmp_path, tiny_onnx):
    done = write_repository(tiny_onnx, tmp_path / "repo", options(max_batch_size=4, instances=2, kind="cpu"))
    config = parse(done.config)
    assert (config.name, config.backend, config.max_batch_size) == ("dfr", "onnxruntime", 4)
    assert config.version_policy.latest.num_versions == 1
    (image,) = config.input
    assert (image.name, image.data_type, list(image.dims)) == ("image", model_config_pb2.TYPE_UINT8, [SIZE, SIZE, 3])
    amap, score = config.output
    assert (amap.name, amap.data_type, list(amap.dims)) == ("anomaly_map", model_config_pb2.TYPE_FP32, [SIZE, SIZE])
    assert (score.name, list(score.dims), list(score.reshape.shape)) == ("score", [1], [])
    assert score.HasField("reshape")  # the graph's N-vector is served as N x 1
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
    (group,) = config.instance_group
    assert (group.kind, group.count) == (model_config_pb2.ModelInstanceGroup.KIND_CPU, 2)
    local = OnnxRuntimeBackend(tiny_onnx)
    assert json.loads(config.parameters["dfr.json"].string_value) == local.manifest
    assert json.loads(config.parameters["dfr.export"].string_value) == local.export_info
    assert done.model_file.read_bytes() == tiny_onnx.read_bytes()
    assert "tritonserver --model-repository=/models" in (tmp_path / "repo" / "README.md").read_text()


def test_each_export_adds_a_version_and_keeps_the_old_one(tmp_path, tiny_onnx):
    repo = tmp_path / "repo"
    first = write_repository(tiny_onnx, repo, options())
    before = first.model_file.stat().st_mtime_ns
    second = write_repository(tiny_onnx, repo, options(instances=3))
    assert (first.version, second.version) == (1, 2)
    assert first.model_file.stat().st_mtime_ns == before and second.model_file.name == "model.onnx"
    assert parse(second.config).instance_group[0].count == 3


def test_a_model_with_other_inputs_is_refused_under_the_same_name(tmp_path, tiny_onnx):
    repo = tmp_path / "repo"
    write_repository(tiny_onnx, repo, options())
    config = repo / "dfr" / "config.pbtxt"
    config.write_text(config.read_text().replace(f"dims: [{SIZE}, {SIZE}, 3]", "dims: [128, 128, 3]"))
    with pytest.raises(ValueError, match="other inputs or outputs"):
        write_repository(tiny_onnx, repo, options())
    assert sorted(p.name for p in (repo / "dfr").iterdir()) == ["1", "config.pbtxt"]


def test_tensorrt_accelerator_options(tiny_onnx):
    local = OnnxRuntimeBackend(tiny_onnx)
    config = parse(model_config(options(trt_accelerator="int8", max_batch_size=8), local.manifest, {}))
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    params = dict(accelerator.parameters)
    assert accelerator.name == "tensorrt" and params["precision_mode"] == "INT8"
    assert params["trt_engine_cache_enable"] == "1" and params["trt_engine_cache_path"] == "/trt-cache/dfr"
    assert params["trt_profile_max_shapes"] == f"image:8x{SIZE}x{SIZE}x3"
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    with pytest.raises(ValueError, match="needs --kind gpu"):
        options(trt_accelerator="fp16", kind="cpu")


def write_engine(folder, onnx_file, manifest, cc: str, **key) -> None:
    """A plan file with the sidecar dfr-export --engine writes (runtime/tensorrt/engine_info.py)."""
    from dfr_edge.digest import sha256_file
    from dfr_edge.runtime.tensorrt.engine_info import SIDECAR_SCHEMA, SIDECAR_VERSION, EngineKey, sidecar_path

    fields = {"tensorrt": "10.3.0", "gpu": "NVIDIA A2", "compute_capability": cc, "precision": "fp16",
              "max_batch": 8, "dla_core": None, "onnx_sha256": sha256_file(onnx_file)}
    engine_key = EngineKey(**{**fields, **key})
    engine = folder / engine_key.filename()
    engine.write_bytes(b"plan " + engine.name.encode())
    sidecar_path(engine).write_text(json.dumps({"schema": SIDECAR_SCHEMA, "schema_version": SIDECAR_VERSION,
                                                "key": engine_key.__dict__, "dfr": manifest}))


def test_engines_built_from_the_file_become_a_tensorrt_plan_model(tmp_path, tiny_onnx):
    bundle = tmp_path / "bundle"
    engines = bundle / "engines"
    engines.mkdir(parents=True)
    onnx_file = bundle / "model.onnx"
    onnx_file.write_bytes(tiny_onnx.read_bytes())
    manifest = OnnxRuntimeBackend(tiny_onnx).manifest
    write_engine(engines, onnx_file, manifest, "8.6")
    write_engine(engines, onnx_file, manifest, "8.7")
    write_engine(engines, onnx_file, manifest, "7.5", onnx_sha256="0" * 64)  # from another ONNX file
    write_engine(engines, onnx_file, manifest, "8.9", max_batch=4)  # profile below the served batch
    write_engine(engines, onnx_file, manifest, "7.2", dla_core=0)  # a Jetson DLA engine
    done = write_repository(onnx_file, tmp_path / "repo", options(max_batch_size=8))
    config = parse(done.plan_config)
    assert (config.name, config.platform) == ("dfr_trt", "tensorrt_plan")
    assert dict(config.cc_model_filenames) == {"8.6": "model.sm86.plan", "8.7": "model.sm87.plan"}
    plan = done.plan_config.parent / "1" / "model.sm87.plan"
    assert plan.read_bytes().startswith(b"plan model.fp16.trt10.3.0.nvidia-a2.sm87.b8.")
    assert json.loads(plan.with_name(plan.name + ".json").read_text())["key"]["compute_capability"] == "8.7"
    assert config.parameters["dfr.json"].string_value == parse(done.config).parameters["dfr.json"].string_value


def test_strings_survive_protobuf_text_format():
    tricky = 'a "quoted" back\\slash\nnew line'
    config = parse(to_pbtxt({"name": "x", "parameters": [{"key": "k", "value": {"string_value": tricky}}]}))
    assert config.parameters["k"].string_value == tricky


def test_dfr_export_writes_the_repository(tmp_path, tiny_onnx, capsys):
    from dfr_edge.cli.export import main

    repo = tmp_path / "repo"
    assert main([str(tiny_onnx.parent), "--triton", str(repo), "--name", "line3", "--kind", "cpu"]) == 0
    assert parse(repo / "line3" / "config.pbtxt").name == "line3"
    assert main([str(tiny_onnx.parent), "--triton", str(repo), "--variant", "fp16"]) == 2
    assert "add --fp16" in capsys.readouterr().err
