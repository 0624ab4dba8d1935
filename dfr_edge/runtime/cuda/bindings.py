"""CudaApi over cuda-python's runtime binding (`cuda.bindings.runtime`, cuda-python >= 12.x).

Every call returns `(cudaError_t, *results)`; :func:`_ok` turns a non-success code into an error
that names the call. Signatures checked against the cuda-bindings 13.5 wheel (cudaMalloc(size),
cudaHostAlloc(size, flags), cudaMemcpyAsync(dst, src, count, kind, stream), cudaStreamBeginCapture
(stream, mode), cudaGraphInstantiate(graph, flags) — the CUDA 12+ form).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import numpy as np

from dfr_edge.runtime.cuda import CudaGraphUnsupported, DeviceInfo, HostBuffer


def _ok(result: tuple, call: str) -> Any:
    err, *values = result
    if int(err) != 0:
        raise RuntimeError(f"CUDA {call} failed: {err}")
    return values[0] if len(values) == 1 else tuple(values)


def host_array(ptr: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A numpy view of `nbytes` of host memory at `ptr` (owned by the caller)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = (ctypes.c_uint8 * nbytes).from_address(ptr)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


class BindingsCuda:
    name = "cuda-python"

    def __init__(self, device: int = 0):
        from cuda.bindings import runtime

        self.rt = runtime
        try:
            _ok(runtime.cudaSetDevice(device), f"cudaSetDevice({device})")
        except RuntimeError as exc:
            raise RuntimeError(f"no usable NVIDIA GPU through cuda-python ({exc}); check nvidia-smi, and match "
                               f"cuda-python's major version to the driver's CUDA (13 needs an R580+ driver)") from exc
        self.device = device
        self._device_ptrs: list[int] = []
        self._host_ptrs: list[int] = []
        self._streams: list[Any] = []

    def device_info(self) -> DeviceInfo:
        prop = _ok(self.rt.cudaGetDeviceProperties(self.device), "cudaGetDeviceProperties")
        name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
        return DeviceInfo(name.rstrip("\x00").strip(), (int(prop.major), int(prop.minor)), bool(prop.integrated))

    def alloc_device(self, nbytes: int) -> int:
        ptr = int(_ok(self.rt.cudaMalloc(max(int(nbytes), 1)), "cudaMalloc"))
        self._device_ptrs.append(ptr)
        return ptr

    def alloc_host(self, shape: tuple[int, ...], dtype: np.dtype, mapped: bool = False) -> HostBuffer:
        nbytes = max(int(np.prod(shape)) * np.dtype(dtype).itemsize, 1)
        flags = self.rt.cudaHostAllocMapped if mapped else self.rt.cudaHostAllocDefault
        ptr = int(_ok(self.rt.cudaHostAlloc(nbytes, flags), "cudaHostAlloc"))
        self._host_ptrs.append(ptr)
        device_ptr = int(_ok(self.rt.cudaHostGetDevicePointer(ptr, 0), "cudaHostGetDevicePointer")) if mapped else None
        return HostBuffer(host_array(ptr, shape, dtype), device_ptr)

    def create_stream(self) -> Any:
        stream = _ok(self.rt.cudaStreamCreateWithFlags(self.rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")
        self._streams.append(stream)
        return stream

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def synchronize(self, stream: Any) -> None:
        _ok(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def copy_to_device(self, dst: int, src: np.ndarray, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        _ok(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, stream), "cudaMemcpyAsync")

    def copy_to_host(self, dst: np.ndarray, src: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _ok(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, stream), "cudaMemcpyAsync")

    def create_event(self) -> Any:
        return _ok(self.rt.cudaEventCreate(), "cudaEventCreate")

    def record_event(self, event: Any, stream: Any) -> None:
        _ok(self.rt.cudaEventRecord(event, stream), "cudaEventRecord")

    def elapsed_ms(self, start: Any, end: Any) -> float:
        _ok(self.rt.cudaEventSynchronize(end), "cudaEventSynchronize")
        return float(_ok(self.rt.cudaEventElapsedTime(start, end), "cudaEventElapsedTime"))

    def capture_graph(self, stream: Any, enqueue: Callable[[], None]) -> Any:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        try:
            _ok(self.rt.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture")
        except RuntimeError as exc:
            raise CudaGraphUnsupported(str(exc)) from exc
        try:
            enqueue()
        except BaseException:
            self.rt.cudaStreamEndCapture(stream)  # leave the stream usable
            raise
        try:
            graph = _ok(self.rt.cudaStreamEndCapture(stream), "cudaStreamEndCapture")
            return _ok(self.rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        except RuntimeError as exc:
            raise CudaGraphUnsupported(str(exc)) from exc

    def launch_graph(self, graph: Any, stream: Any) -> None:
        _ok(self.rt.cudaGraphLaunch(graph, stream), "cudaGraphLaunch")

    def free(self) -> None:
        for ptr in self._device_ptrs:
            self.rt.cudaFree(ptr)
        for ptr in self._host_ptrs:
            self.rt.cudaFreeHost(ptr)
        for stream in self._streams:
            self.rt.cudaStreamDestroy(stream)
        self._device_ptrs, self._host_ptrs, self._streams = [], [], []
