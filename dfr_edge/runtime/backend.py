"""The one small interface every inference engine implements, and how to pick one for a file.

A backend runs the fused graph of contract 1: uint8 N x H x W x 3 BGR in, (anomaly maps
N x H x W float32, scores N float32) out, and exposes the artefact's manifest. Engines are imported
lazily, so the runtime works on a box that has only one of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Backend(Protocol):
    name: str  # e.g. "onnxruntime:CPUExecutionProvider"
    manifest: dict  # dfr.json of the model
    export_info: dict  # how the artefact was made (variant, precision, calibration)
    height: int
    width: int

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def load_backend(path: Path | str, **options: Any) -> Backend:
    """Choose the engine from the file type; options go to that engine's loader."""
    path = Path(path)
    if path.is_dir():  # a bundle: the torch module itself (parity reference; needs torch)
        from dfr_edge.runtime.torch_backend import TorchBackend

        return TorchBackend(path, **options)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist (make one with dfr-export)")
    if path.suffix == ".onnx":
        from dfr_edge.runtime.onnxrt import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, **options)
    if path.suffix in (".engine", ".plan"):
        from dfr_edge.runtime.tensorrt.runner import TensorRTBackend

        # dfr-infer / dfr-eval pass ONNX Runtime's options; an engine has its own GPU and batch profile.
        onnx_only = ("provider", "max_batch", "threads", "cache_dir")
        return TensorRTBackend(path, **{k: v for k, v in options.items() if k not in onnx_only})
    raise ValueError(f"{path}: unsupported model file type {path.suffix!r}; expected an exported .onnx file, a "
                     f"TensorRT .engine or a bundle directory")
