"""The torch-eager baseline: the bundle's fused module behind the Backend interface.

dfr-bench runs it in the same process as the exported artefacts, so every speed-up is a ratio
measured side by side on the same machine at the same moment. Needs torch (the training side).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class TorchEagerBackend:
    def __init__(self, bundle_dir: Path, threads: int | None = None):
        import torch

        from dfr_edge.bundle import load_bundle

        bundle = load_bundle(bundle_dir)
        self.threads = threads
        self.torch, self.model = torch, bundle.model.eval()
        self.manifest = bundle.manifest
        self.export_info = {"variant": "torch-eager"}
        self.height, self.width = self.manifest["input"]["height"], self.manifest["input"]["width"]
        self.name = "torch:eager"

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.threads:  # torch's thread count is global: set it for this backend's call
            self.torch.set_num_threads(self.threads)
        with self.torch.inference_mode():
            amap, score = self.model(self.torch.from_numpy(np.ascontiguousarray(images)))
        return amap.numpy(), score.numpy()


def torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None
