"""What dfr-serve hands `tritonserver`: a model repository for the Python backend, and that backend.

The repository's config.pbtxt is `dfr-export --triton`'s (same name, I/O, dynamic batching, instances,
dfr.json parameters), with `backend: "python"`; its version folder holds a small `model.py` that
runs `dfr_edge.serve_model`, and `serve.json` saying which file to load with which provider and threads.
The server binary, the Python backend and its stub come from the NVIDIA PyTriton wheel (the `serve`
extra): that wheel ships no ONNX Runtime backend, so our session runs inside the Python backend's stub.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from dfr_edge.export.triton_config import RepositoryOptions, model_config
from dfr_edge.runtime.triton.model import ServedModel
from dfr_edge.serve_model import SETTINGS_FILE

# The stub imports the dfr_edge that dfr-serve runs (not whichever one its site-packages holds).
MODEL_PY = """# written by dfr-serve: the stub runs dfr_edge.serve_model from {root}
import sys

sys.path.insert(0, {root!r})
from dfr_edge.serve_model import TritonPythonModel  # noqa: E402, F401
"""
BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
STUB = "triton_python_backend_stub"


@dataclass(frozen=True)
class TritonDistribution:
    """The parts of PyTriton's wheel that dfr-serve runs."""

    server: Path  # bin/tritonserver
    python_backend: Path  # backends/python (without a stub)
    stub: Path  # the Python backend stub built for this interpreter's version
    libraries: Path  # shared libraries tritonserver links (nvidia_pytriton.libs)
    caches: Path


def triton_distribution() -> TritonDistribution:
    """Find tritonserver in the installed PyTriton wheel; a clear ImportError when the extra is missing."""
    try:
        from pytriton.utils.distribution import get_libs_path, get_root_module_path, get_stub_path
    except ImportError as exc:
        raise ImportError(f"dfr-serve needs NVIDIA PyTriton: pip install 'dfr-edge[serve]' ({exc})") from exc
    root = get_root_module_path() / "tritonserver"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    found = TritonDistribution(server=root / "bin" / "tritonserver", python_backend=root / "backends" / "python",
                               stub=get_stub_path(version), libraries=Path(get_libs_path()), caches=root / "caches")
    if not found.server.is_file() or not found.stub.is_file():
        raise ImportError(f"the installed PyTriton has no tritonserver or no Python backend stub for Python "
                          f"{version} ({found.server}, {found.stub}); reinstall 'dfr-edge[serve]'")
    return found


def write_backends(folder: Path, distribution: TritonDistribution) -> Path:
    """A backend directory for tritonserver: the wheel's Python backend with this Python's stub linked in."""
    python = folder / "python"
    python.mkdir(parents=True)
    for name in BACKEND_FILES:
        (python / name).symlink_to(distribution.python_backend / name)
    (python / STUB).symlink_to(distribution.stub)
    return folder


@dataclass(frozen=True)
class StubSettings:
    """What each model instance loads (serve.json)."""

    model: Path
    provider: str
    threads: int | None
    max_batch: int


def write_repository(folder: Path, model: ServedModel, manifest: dict, export_info: dict,
                     settings: StubSettings) -> Path:
    """REPO/NAME/config.pbtxt + REPO/NAME/1/{model.py, serve.json}, as the repository export would name them."""
    config = model_config(RepositoryOptions(model, kind="cpu"), manifest, export_info, backend="python")
    version = folder / model.name / "1"
    version.mkdir(parents=True)
    (version.parent / "config.pbtxt").write_text(config)
    (version / "model.py").write_text(MODEL_PY.format(root=str(Path(__file__).resolve().parents[1])))
    (version / SETTINGS_FILE).write_text(json.dumps({
        "model": str(Path(settings.model).resolve()), "provider": settings.provider, "threads": settings.threads,
        "max_batch": settings.max_batch}))
    return folder
