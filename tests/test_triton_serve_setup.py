"""dfr-serve's set-up, without starting a server: libpython for the stub, the generated repository and
the model the stub runs, model lookup, missing extra."""

from __future__ import annotations

import importlib.util
import json
import sys
import sysconfig
import types
from pathlib import Path

import numpy as np
import pytest

from dfr_edge import serve
from dfr_edge.export.triton import RepositoryOptions, model_config, read_served_model
from dfr_edge.runtime.onnxrt import OnnxRuntimeBackend
from dfr_edge.runtime.triton.model import ServedModel
from dfr_edge.serve_model import TritonPythonModel
from dfr_edge.serve_repository import StubSettings, TritonDistribution, write_repository


def test_the_stub_gets_this_interpreters_libpython_first():
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir or not (Path(libdir) / (sysconfig.get_config_var("LDLIBRARY") or "")).is_file():
        pytest.skip("this Python has no shared libpython")
    wheel = TritonDistribution(*(Path("/wheel") / part for part in ("bin", "python", "stub", "libs", "caches")))
    env = serve.server_environment(wheel, {"LD_LIBRARY_PATH": f"/opt/other:{libdir}", "PATH": "/usr/bin"})
    assert env["LD_LIBRARY_PATH"] == f"{libdir}:/opt/other:/wheel/libs"
    assert env["PATH"] == f"{Path(sys.executable).parent}:/usr/bin"  # the stub's Python: this venv


def test_a_python_without_shared_libpython_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(serve.sysconfig, "get_config_var", {"LIBDIR": str(tmp_path), "LDLIBRARY": "libpython3.so"}.get)
    with pytest.raises(RuntimeError, match="--enable-shared"):
        serve.python_library_dir()


def test_model_lookup(tmp_path):
    with pytest.raises(FileNotFoundError, match="dfr-export"):
        serve.model_file(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"")
    assert serve.model_file(tmp_path) == tmp_path / "model.onnx"


@pytest.mark.skipif(importlib.util.find_spec("pytriton") is not None, reason="pytriton is installed here")
def test_without_the_serve_extra_the_command_says_what_to_install(tmp_path, capsys):
    from dfr_edge.cli.serve import main

    assert main([str(tmp_path)]) == 2
    assert "pip install 'dfr-edge[serve]'" in capsys.readouterr().err


def test_the_served_repository_is_the_exports_config_run_by_the_python_backend(tmp_path, tiny_onnx):
    model = ServedModel("dfr", 64, 64, max_batch_size=4, instances=2)
    manifest, export_info = read_served_model(tiny_onnx)
    repo = write_repository(tmp_path, model, manifest, export_info, StubSettings(tiny_onnx, "cpu", 1, 4))
    export = model_config(RepositoryOptions(model, kind="cpu"), manifest, export_info)
    assert (repo / "dfr" / "config.pbtxt").read_text() == export.replace('backend: "onnxruntime"', 'backend: "python"')
    settings = json.loads((repo / "dfr" / "1" / "serve.json").read_text())
    assert settings == {"model": str(tiny_onnx.resolve()), "provider": "cpu", "threads": 1, "max_batch": 4}
    assert "from dfr_edge.serve_model import TritonPythonModel" in (repo / "dfr" / "1" / "model.py").read_text()


class _FakeStubUtils(types.SimpleNamespace):
    """The few triton_python_backend_utils calls the model makes, as plain Python."""

    def __init__(self):
        super().__init__(Tensor=lambda name, array: (name, array), InferenceResponse=lambda output_tensors: dict(
            output_tensors), get_input_tensor_by_name=lambda request, name: types.SimpleNamespace(
            as_numpy=lambda: request[name]))


def test_the_stub_model_runs_one_batch_and_answers_each_request(tmp_path, tiny_onnx, monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _FakeStubUtils())
    repo = write_repository(tmp_path, ServedModel("dfr", 64, 64), *read_served_model(tiny_onnx),
                            StubSettings(tiny_onnx, "cpu", 1, 8))
    model = TritonPythonModel()
    model.initialize({"model_repository": str(repo / "dfr"), "model_version": "1", "model_config": "{}"})
    frames = np.random.default_rng(5).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    responses = model.execute([{"image": frames[:1]}, {"image": frames[1:]}])  # two requests, one batch
    amap, score = OnnxRuntimeBackend(tiny_onnx, threads=1).infer(frames)
    assert [r["anomaly_map"].shape for r in responses] == [(1, 64, 64), (2, 64, 64)]
    assert np.array_equal(np.concatenate([r["anomaly_map"] for r in responses]), amap)
    assert np.array_equal(np.concatenate([r["score"] for r in responses]), score.reshape(-1, 1))


@pytest.mark.parametrize("script,reason", [("exit 1", "exited with status 1"),
                                           ("exec sleep 30", "did not load within 1 s")])
def test_a_server_that_fails_or_hangs_while_loading_is_a_clear_error(tmp_path, tiny_onnx, monkeypatch, script, reason):
    if not (Path(sysconfig.get_config_var("LIBDIR") or "") / (sysconfig.get_config_var("LDLIBRARY") or "")).is_file():
        pytest.skip("this Python has no shared libpython")
    fake_server = tmp_path / "tritonserver"
    fake_server.write_text(f"#!/bin/sh\n{script}\n")
    fake_server.chmod(0o755)
    wheel = TritonDistribution(fake_server, tmp_path / "python", tmp_path / "stub", tmp_path / "libs", tmp_path)
    monkeypatch.setattr(serve, "triton_distribution", lambda: wheel)
    options = serve.ServeOptions(http_port=serve.free_ports(1)[0], start_timeout_s=1)
    with pytest.raises(RuntimeError, match=f"{reason}.*libpython"):
        serve.Server(tiny_onnx, options)
