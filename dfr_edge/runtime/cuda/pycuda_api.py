"""CudaApi over pycuda (the usual binding on JetPack).

pycuda drives the CUDA driver API; TensorRT uses the runtime API, which lives in the device's
*primary* context, so this retains and pushes that context instead of `pycuda.autoinit`'s own.
pycuda 2026.1 binds no stream capture (no CUDA graphs): :meth:`capture_graph` says so and the
runner carries on without graphs (install cuda-python for them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dfr_edge.runtime.cuda import CudaGraphUnsupported, DeviceInfo, HostBuffer


class PyCuda:
    name = "pycuda"

    def __init__(self, device: int = 0):
        import pycuda.driver as driver

        self.driver = driver
        driver.init()
        self._device = driver.Device(device)
        self._context = self._device.retain_primary_context()
        self._context.push()
        self._keep: list[Any] = []  # allocations live as long as this object

    def device_info(self) -> DeviceInfo:
        integrated = self._device.get_attribute(self.driver.device_attribute.INTEGRATED)
        return DeviceInfo(self._device.name(), tuple(self._device.compute_capability()), bool(integrated))

    def alloc_device(self, nbytes: int) -> int:
        allocation = self.driver.mem_alloc(max(int(nbytes), 1))
        self._keep.append(allocation)
        return int(allocation)

    def alloc_host(self, shape: tuple[int, ...], dtype: np.dtype, mapped: bool = False) -> HostBuffer:
        flags = self.driver.host_alloc_flags.DEVICEMAP if mapped else 0
        array = self.driver.pagelocked_empty(shape, dtype, mem_flags=flags)
        self._keep.append(array)
        return HostBuffer(array, int(array.base.get_device_pointer()) if mapped else None)

    def create_stream(self) -> Any:
        return self.driver.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def synchronize(self, stream: Any) -> None:
        stream.synchronize()

    def copy_to_device(self, dst: int, src: np.ndarray, stream: Any) -> None:
        self.driver.memcpy_htod_async(dst, src, stream)

    def copy_to_host(self, dst: np.ndarray, src: int, stream: Any) -> None:
        self.driver.memcpy_dtoh_async(dst, src, stream)

    def create_event(self) -> Any:
        return self.driver.Event()

    def record_event(self, event: Any, stream: Any) -> None:
        event.record(stream)

    def elapsed_ms(self, start: Any, end: Any) -> float:
        end.synchronize()
        return float(end.time_since(start))

    def capture_graph(self, stream: Any, enqueue: Callable[[], None]) -> Any:
        raise CudaGraphUnsupported("pycuda has no stream capture; install cuda-python for CUDA graphs")

    def launch_graph(self, graph: Any, stream: Any) -> None:  # pragma: no cover - never captured
        raise CudaGraphUnsupported("pycuda has no CUDA graphs")

    def free(self) -> None:
        self._keep.clear()
        self._context.pop()
