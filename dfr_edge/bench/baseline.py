"""The torch-eager baseline: the bundle's own module (runtime.torch_backend) at a fixed thread count.

dfr-bench runs it in the same process as the exported artefacts, so every speed-up is a ratio
measured side by side on the same machine at the same moment. Torch's thread count is global to
the process, so it is set before each call of this baseline (ONNX Runtime sessions keep their own).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from dfr_edge.runtime.backend import Backend, load_backend
from dfr_edge.threads import default_threads


class TorchBaseline:
    """A Backend: TorchBackend on the CPU, its calls run at `threads` torch threads."""

    def __init__(self, bundle: Path, threads: int | None, max_batch: int):
        self.inner: Backend = load_backend(bundle, max_batch=max_batch)  # a bundle folder: the torch module
        self.threads = threads or default_threads()
        self.name, self.path, self.manifest = "torch:eager", self.inner.path, self.inner.manifest
        self.export_info = {**self.inner.export_info, "variant": "torch-eager"}
        self.height, self.width, self.max_batch = self.inner.height, self.inner.width, self.inner.max_batch

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        torch.set_num_threads(self.threads)
        return self.inner.infer(images)


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None
