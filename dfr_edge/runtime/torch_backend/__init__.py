"""Torch backend: the bundle's own fused module behind `Backend` (CPU or CUDA).

The parity reference on any machine, and the GPU path where TensorRT is absent. Options: FP16
autocast over the backbone, regional features and CAE with the scoring head kept float32 (as in
model.fp16.onnx), channels-last weights (the NHWC uint8 input is already channels-last once
permuted), and CUDA graphs captured per batch size. Importing torch happens here, never in the
lean runtime: `load_backend(BUNDLE_DIR)` imports this module only when asked for a bundle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dfr_edge.bundle import load_bundle
from dfr_edge.runtime.backend import check_images


class TorchBackend:
    def __init__(self, path: Path, device: str = "cpu", fp16: bool = False, channels_last: bool = False,
                 cuda_graphs: bool = False, time_gpu: bool = False, max_batch: int = 8):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device='cuda' asked for, but this torch has no usable CUDA GPU "
                               f"(torch {torch.__version__}); use device='cpu' or install a CUDA build of torch")
        if (cuda_graphs or time_gpu) and self.device.type != "cuda":
            raise ValueError("cuda_graphs and time_gpu need device='cuda'")
        bundle = load_bundle(Path(path))
        self.path, self.manifest = bundle.path, bundle.manifest
        self.height, self.width = self.manifest["input"]["height"], self.manifest["input"]["width"]
        self.export_info = {"variant": "torch", "device": str(self.device), "fp16_autocast": fp16,
                            "channels_last": channels_last, "cuda_graphs": cuda_graphs}
        self.name = f"torch:{self.device}" + (":fp16" if fp16 else "")
        model = bundle.model.eval().to(self.device)
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        self.fp16, self.cuda_graphs, self.time_gpu, self.max_batch = fp16, cuda_graphs, time_gpu, max_batch
        self.last_gpu_ms: float | None = None
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]] = {}

    def _forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.fp16):
            features = self.model.extractor(images)
            reconstruction = self.model.cae(features)
        return self.model.head(features.float(), reconstruction.float())

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        check_images(images, self.height, self.width)
        batch = torch.from_numpy(np.ascontiguousarray(images)).to(self.device, non_blocking=True)
        with torch.inference_mode():
            events = [torch.cuda.Event(enable_timing=True) for _ in range(2)] if self.time_gpu else None
            if events:
                events[0].record()
            amap, score = self._graph_run(batch) if self.cuda_graphs else self._forward(batch)
            if events:
                events[1].record()
            amap, score = amap.cpu().numpy(), score.cpu().numpy()
            if events:
                self.last_gpu_ms = events[0].elapsed_time(events[1])
        return amap, score

    def _graph_run(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Replay the graph captured for this batch size (captured on first use)."""
        n = len(batch)
        if n not in self._graphs:
            static_in = batch.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm up outside the capture (cuDNN picks its kernels here)
                for _ in range(2):
                    self._forward(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._forward(static_in)
            self._graphs[n] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[n]
        static_in.copy_(batch)
        graph.replay()
        return static_out[0].clone(), static_out[1].clone()
