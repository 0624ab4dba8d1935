"""The one small CUDA interface the TensorRT runtime and builder use: memory, one stream, events, graphs.

Two implementations sit behind it, chosen by what is installed: cuda-python's `cuda.bindings`
(NVIDIA's maintained binding, pip wheels; what TensorRT's own samples use) and pycuda (the usual
choice on JetPack). Everything else in dfr-edge only sees :class:`CudaApi`, so the TensorRT
runner is tested on CPU against a fake of this interface (numpy arrays as device memory).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

MISSING_BINDING = (
    "no CUDA Python binding is installed: pip install 'cuda-python>=12,<13' (JetPack 6 / CUDA 12 drivers; "
    "cuda-python 13 needs a CUDA 13 driver) or pycuda (builds from source, needs nvcc)"
)


class CudaGraphUnsupported(RuntimeError):
    """Stream capture failed or this binding cannot capture; the caller runs without a graph."""


@dataclass(frozen=True)
class DeviceInfo:
    name: str  # e.g. "NVIDIA H200", "Orin"
    compute_capability: tuple[int, int]
    integrated: bool  # Jetson: GPU and CPU share DRAM, so mapped pinned memory avoids copies

    @property
    def sm(self) -> str:
        return f"{self.compute_capability[0]}{self.compute_capability[1]}"


@dataclass
class HostBuffer:
    """Page-locked host memory seen as a numpy array; `device_ptr` is set when it is mapped."""

    array: np.ndarray
    device_ptr: int | None = None


class CudaApi(Protocol):
    name: str  # "cuda-python" or "pycuda"

    def device_info(self) -> DeviceInfo: ...
    def alloc_device(self, nbytes: int) -> int: ...
    def alloc_host(self, shape: tuple[int, ...], dtype: np.dtype, mapped: bool = False) -> HostBuffer: ...
    def create_stream(self) -> Any: ...
    def stream_handle(self, stream: Any) -> int: ...
    def synchronize(self, stream: Any) -> None: ...
    def copy_to_device(self, dst: int, src: np.ndarray, stream: Any) -> None: ...
    def copy_to_host(self, dst: np.ndarray, src: int, stream: Any) -> None: ...
    def create_event(self) -> Any: ...
    def record_event(self, event: Any, stream: Any) -> None: ...
    def elapsed_ms(self, start: Any, end: Any) -> float: ...
    def capture_graph(self, stream: Any, enqueue: Callable[[], None]) -> Any: ...
    def launch_graph(self, graph: Any, stream: Any) -> None: ...
    def free(self) -> None: ...


IMPLEMENTATIONS = {
    "cuda-python": ("cuda.bindings.runtime", "dfr_edge.runtime.cuda.bindings", "BindingsCuda"),
    "pycuda": ("pycuda.driver", "dfr_edge.runtime.cuda.pycuda_api", "PyCuda"),
}


def load_cuda(prefer: str | None = None, device: int = 0) -> CudaApi:
    """The first installed binding (cuda-python, then pycuda), or the one asked for by name."""
    if prefer is not None and prefer not in IMPLEMENTATIONS:
        raise ValueError(f"unknown CUDA binding {prefer!r}; choose one of {', '.join(IMPLEMENTATIONS)}")
    names = [prefer] if prefer else list(IMPLEMENTATIONS)
    for name in names:
        binding, module, cls = IMPLEMENTATIONS[name]
        try:
            importlib.import_module(binding)
        except ImportError:
            continue
        return getattr(importlib.import_module(module), cls)(device)
    if prefer:
        raise ImportError(f"the CUDA binding {prefer!r} is not installed ({IMPLEMENTATIONS[prefer][0]} cannot be "
                          f"imported); {MISSING_BINDING}")
    raise ImportError(MISSING_BINDING)
