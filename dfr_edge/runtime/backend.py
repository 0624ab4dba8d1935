"""The one small interface every inference engine implements, and how to pick one for a file.

A backend runs the fused graph of contract 1: uint8 N x H x W x 3 BGR in, (anomaly maps
N x H x W float32, scores N float32) out, and exposes the artefact's manifest. Engines are imported
lazily, so the runtime works on a box that has only one of them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dfr_edge.errors import UnusableFileError
from dfr_edge.manifest import MANIFEST_NAME

log = logging.getLogger(__name__)

# The exported files of a bundle (dfr-export's names) in order of preference per provider: on a CPU
# the QOperator INT8 graph is the fastest, on a GPU FP16 or the Q/DQ INT8 graph; FP32 runs anywhere.
PREFERRED_MODELS = {
    "cpu": ("model.int8-cpu.onnx", "model.onnx", "model.fp16.onnx", "model.int8.onnx"),
    "cuda": ("model.fp16.onnx", "model.onnx", "model.int8-cpu.onnx", "model.int8.onnx"),
    "tensorrt": ("model.int8.onnx", "model.fp16.onnx", "model.onnx", "model.int8-cpu.onnx"),
}


class Backend(Protocol):
    name: str  # e.g. "onnxruntime:CPUExecutionProvider"
    path: Path  # the model file it runs
    manifest: dict  # dfr.json of the model
    export_info: dict  # how the artefact was made (variant, precision, calibration)
    height: int
    width: int
    max_batch: int  # most images per `infer` call; callers chunk larger batches

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Maps and scores in arrays the caller owns: never a buffer the next call overwrites."""
        ...


def pick_model(bundle: Path, provider: str = "cpu") -> Path:
    """The best exported model of a bundle folder for this provider (see PREFERRED_MODELS): what the
    lean runtime runs when given a bundle (`load_backend(bundle)` itself runs the torch module)."""
    order = PREFERRED_MODELS.get(provider, PREFERRED_MODELS["cpu"])
    if not (bundle / MANIFEST_NAME).is_file():
        raise UnusableFileError(bundle, "is a folder, not a model file or a bundle",
                                "give an exported .onnx file or a bundle folder made by dfr-train")
    for name in order:
        if (bundle / name).is_file():
            log.info("%s: running %s, the best exported model here for provider %s", bundle, name, provider)
            return bundle / name
    raise UnusableFileError(bundle, f"is a folder without an exported model (none of {', '.join(order)})",
                            f"export one with `dfr-export {bundle}`, or give the .onnx file itself")


def check_images(images: np.ndarray, height: int, width: int) -> None:
    """What every backend takes: uint8 N x height x width x 3 BGR (the fused graph's input)."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (height, width, 3):
        raise ValueError(f"expected uint8 N x {height} x {width} x 3 BGR images, got {images.dtype} {images.shape}")


def load_backend(path: Path | str, **options: Any) -> Backend:
    """Choose the engine from the file type (or a triton:// URL); options go to that engine's loader."""
    from dfr_edge.runtime.triton.client import TritonBackend, is_triton_url

    if is_triton_url(path):  # the server chooses how the model runs: ONNX Runtime's local options do not apply
        local_only = ("provider", "threads", "cache_dir", "device_id")
        return TritonBackend(str(path), **{k: v for k, v in options.items() if k not in local_only})
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
