"""dfr-serve's set-up, without starting a server: libpython for the stub, model lookup, missing extra."""

from __future__ import annotations

import importlib.util
import sysconfig

import pytest

from dfr_edge import serve


def test_the_stub_gets_this_interpreters_libpython_first(monkeypatch):
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir or not (serve.Path(libdir) / (sysconfig.get_config_var("LDLIBRARY") or "")).is_file():
        pytest.skip("this Python has no shared libpython")
    monkeypatch.setenv("LD_LIBRARY_PATH", f"/opt/other:{libdir}")
    serve.use_python_library()
    assert serve.os.environ["LD_LIBRARY_PATH"] == f"{libdir}:/opt/other"


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
