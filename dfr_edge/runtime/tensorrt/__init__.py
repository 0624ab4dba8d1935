"""Native TensorRT backend: a serialized engine (`*.engine`) plus its JSON sidecar, no torch.

`load_detector("bundle/engines/model.int8....engine")` picks it by suffix (runtime/backend.py).
"""

from __future__ import annotations

import importlib

MISSING_TENSORRT = (
    "TensorRT's Python module is not installed: on Jetson it comes with JetPack (apt python3-libnvinfer; make "
    "the venv with --system-site-packages), on x86 pip install 'dfr-edge[tensorrt]' (export/datacenter.md)"
)


def import_tensorrt():
    """The `tensorrt` module, imported only when an engine is built or loaded."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError as exc:
        raise ImportError(MISSING_TENSORRT) from exc


__all__ = ["MISSING_TENSORRT", "import_tensorrt"]
